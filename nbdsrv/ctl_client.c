/*
 * ctl_client.c — ask a running daemon one question over its control socket:
 * connect, send one JSON line, read one JSON line back (bounded by
 * CTL_REPLY_MAX), decode it with jansson.  Blocking on purpose: this is the
 * CLI side, one request per process.  A daemon that does not answer within
 * CTL_TIMEOUT_S is reported, not waited for forever.
 */
#include "nbdsrv/ctl_client.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_REPLY_MAX (64u << 20)
#define CTL_TIMEOUT_S 120

int ctl_default_path(const struct zdb_pool_cfg *cfg, char *buf, size_t len)
{
	if (!cfg->cache_path[0])
		return -ENOENT;
	if ((size_t)snprintf(buf, len, "%s/nbdsrv.ctl", cfg->cache_path) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int ctl_resolve(const char *who, const char *control, const char *config,
		char *buf, size_t len)
{
	struct zdb_pool_cfg *cfg;
	char err[512];
	int r;

	if (control) {
		if (!*control || (size_t)snprintf(buf, len, "%s", control) >= len) {
			fprintf(stderr, "%s: --control: '%s': path empty or too long\n", who,
				control);
			return 2;
		}
		return 0;
	}
	if (!config) {
		fprintf(stderr, "%s: --control PATH or --config FILE is required\n", who);
		return 2;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		fprintf(stderr, "%s: out of memory\n", who);
		return 1;
	}
	r = zdb_pool_cfg_load(config, cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", who, err);
		goto out;
	}
	r = ctl_default_path(cfg, buf, len);
	if (r == -ENOENT)
		fprintf(stderr, "%s: %s: no cache_path, so no default control socket; "
			"use --control PATH\n", who, config);
	else if (r < 0)
		fprintf(stderr, "%s: %s: cache_path too long for a socket path\n", who,
			config);
out:
	zdb_pool_cfg_wipe(cfg);
	free(cfg);
	return r < 0 ? 1 : 0;
}

int ctl_call(const char *who, const char *path, json_t *req, json_t **reply)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
	char *line = NULL, *in = NULL;
	size_t len = 0, cap = 0, off = 0;
	json_error_t jerr;
	int fd = -1, rc = 1;

	*reply = NULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "%s: control socket '%s': path too long\n", who, path);
		return 1;
	}
	strcpy(sa.sun_path, path);
	line = json_dumps(req, JSON_COMPACT);
	if (!line) {
		fprintf(stderr, "%s: out of memory\n", who);
		return 1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "%s: cannot reach the daemon at '%s': %s\n", who, path,
			strerror(errno));
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	len = strlen(line);
	line[len] = '\n';               /* its NUL becomes the line end */
	while (off < len + 1) {
		ssize_t n = send(fd, line + off, len + 1 - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "%s: sending to '%s': %s\n", who, path,
				strerror(n < 0 ? errno : EPIPE));
			goto out;
		}
		off += (size_t)n;
	}
	len = 0;
	for (;;) {
		ssize_t n;
		char *nl;

		if (cap - len < 65536) {
			char *p;

			cap = cap ? cap * 2 : 65536 * 2;
			if (cap > CTL_REPLY_MAX + 65536 || !(p = realloc(in, cap))) {
				fprintf(stderr, "%s: reply from the daemon too large\n", who);
				goto out;
			}
			in = p;
		}
		n = recv(fd, in + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "%s: the daemon at '%s' did not answer: %s\n", who,
				path, n < 0 ? strerror(errno) : "connection closed");
			goto out;
		}
		len += (size_t)n;
		in[len] = '\0';
		nl = memchr(in, '\n', len);
		if (nl) {
			*nl = '\0';
			break;
		}
	}
	*reply = json_loads(in, JSON_REJECT_DUPLICATES, &jerr);
	if (!*reply || !json_is_object(*reply)) {
		fprintf(stderr, "%s: malformed reply from the daemon: %s\n", who,
			*reply ? "not an object" : jerr.text);
		json_decref(*reply);
		*reply = NULL;
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(line);
	free(in);
	return rc;
}

const char *ctl_human_bytes(char *buf, size_t len, json_int_t v, bool trim)
{
	static const char unit[] = "BKMGTPE";
	double d = (double)v;
	int i = 0;

	while (d >= 1024 && i < 6) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, v);
	else if (trim && d == (double)(json_int_t)d)
		snprintf(buf, len, "%.0f%c", d, unit[i]);
	else
		snprintf(buf, len, "%.1f%c", d, unit[i]);
	return buf;
}
