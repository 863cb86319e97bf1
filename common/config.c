/*
 * config.c — a strict, INI-like line/section parser shared by the layers
 * that read configuration files.  It knows nothing about keys: it hands
 * every section header and `key = value` to a callback with the file and
 * line, and turns any error (its own or the callback's) into one message
 * "FILE:LINE: reason".  Input is untrusted: over-long lines, NUL bytes,
 * unterminated quotes and malformed headers are errors, never truncation.
 */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool config_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static bool config_keych(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* Trim in place; returns the new start. */
static char *config_trim(char *s)
{
	size_t n;

	while (config_blank(*s))
		s++;
	n = strlen(s);
	while (n && config_blank(s[n - 1]))
		s[--n] = 0;
	return s;
}

/* Unquote "..." in place.  Returns 0 or a reason. */
static const char *config_unquote(char *v)
{
	char *r = v + 1, *w = v;

	for (; *r && *r != '"'; r++) {
		if (*r == '\\') {
			r++;
			if (*r != '"' && *r != '\\')
				return "bad escape in quoted value (only \\\" and \\\\)";
		}
		*w++ = *r;
	}
	if (*r != '"')
		return "unterminated quoted value";
	if (r[1])
		return "text after the closing quote";
	*w = 0;
	return NULL;
}

int config_parse(const char *file, const char *text, size_t len, config_fn *fn,
		 void *ctx, char *err, size_t errlen)
{
	char line[CONFIG_LINE_MAX + 1];
	char section[128] = "", arg[256] = "";
	char reason[256];
	unsigned lineno = 0;
	size_t pos = 0;
	int r = 0;

	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
		struct config_item it;
		char *s;

		lineno++;
		reason[0] = 0;
		if (ll > CONFIG_LINE_MAX) {
			snprintf(reason, sizeof(reason), "line longer than %u bytes", CONFIG_LINE_MAX);
			r = -EINVAL;
			goto fail;
		}
		memcpy(line, text + pos, ll);
		line[ll] = 0;
		pos += ll + (nl ? 1 : 0);
		if (strlen(line) != ll) {
			snprintf(reason, sizeof(reason), "NUL byte in the line");
			r = -EINVAL;
			goto fail;
		}
		s = config_trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		memset(&it, 0, sizeof(it));
		it.file = file;
		it.line = lineno;
		if (*s == '[') {
			char *e = strchr(s, ']'), *sp;

			if (!e || e[1]) {
				snprintf(reason, sizeof(reason), "malformed section header (want [name] or [name argument])");
				r = -EINVAL;
				goto fail;
			}
			*e = 0;
			s = config_trim(s + 1);
			sp = s;
			while (config_keych(*sp))
				sp++;
			if (sp == s || (*sp && !config_blank(*sp))) {
				snprintf(reason, sizeof(reason), "malformed section name");
				r = -EINVAL;
				goto fail;
			}
			if (*sp) {
				*sp++ = 0;
				sp = config_trim(sp);
			}
			if (strlen(s) >= sizeof(section) || strlen(sp) >= sizeof(arg)) {
				snprintf(reason, sizeof(reason), "section name or argument too long");
				r = -EINVAL;
				goto fail;
			}
			strcpy(section, s);
			strcpy(arg, sp);
			for (sp = arg; *sp; sp++)
				if ((unsigned char)*sp < 32 || *sp == '"') {
					snprintf(reason, sizeof(reason), "bad character in section argument");
					r = -EINVAL;
					goto fail;
				}
			it.section = section;
			it.arg = arg;
		} else {
			char *k = s, *eq, *v;
			const char *why;

			while (config_keych(*s))
				s++;
			if (s == k) {
				snprintf(reason, sizeof(reason), "expected `key = value`, `[section]` or a # comment");
				r = -EINVAL;
				goto fail;
			}
			eq = s;
			while (config_blank(*eq))
				eq++;
			if (*eq != '=') {
				snprintf(reason, sizeof(reason), "expected '=' after the key");
				r = -EINVAL;
				goto fail;
			}
			*s = 0;
			v = config_trim(eq + 1);
			if (*v == '"' && (why = config_unquote(v))) {
				snprintf(reason, sizeof(reason), "%s", why);
				r = -EINVAL;
				goto fail;
			}
			it.section = section;
			it.arg = arg;
			it.key = k;
			it.value = v;
		}
		r = fn(ctx, &it, reason, sizeof(reason));
		if (r < 0) {
			if (it.err_line)
				lineno = it.err_line;
			goto fail;
		}
	}
	return 0;
fail:
	explicit_bzero(line, sizeof(line));
	snprintf(err, errlen, "%s:%u: %s", file, lineno, reason[0] ? reason : strerror(-r));
	return r < 0 ? r : -EINVAL;
}

int config_read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto exit;
	}
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		goto exit;
	}
	buf = malloc(max + 1);
	if (!buf) {
		r = -ENOMEM;
		goto exit;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, max + 1 - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto exit;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > max) {
			r = -EFBIG;
			goto exit;
		}
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	buf = NULL;
exit:
	if (buf) {
		explicit_bzero(buf, got);
		free(buf);
	}
	close(fd);
	return r;
}

int config_parse_file(const char *path, config_fn *fn, void *ctx, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int r = config_read_file(path, 1u << 20, &text, &len);

	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, r == -EFBIG ? "file larger than 1 MiB"
			 : strerror(-r));
		return r;
	}
	r = config_parse(path, text, len, fn, ctx, err, errlen);
	explicit_bzero(text, len);
	free(text);
	return r;
}
