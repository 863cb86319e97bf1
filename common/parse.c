/*
 * parse.c — strict parsing of numbers and sizes from untrusted text
 * (command lines, config files, control requests).
 */
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned base = 10;

	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!*s)
			return -EINVAL;
	}
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && isxdigit((unsigned char)*s))
			d = (unsigned)(tolower((unsigned char)*s) - 'a' + 10);
		else
			return -EINVAL;
		if (v > (UINT64_MAX - d) / base)
			return -ERANGE;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	static const char suffixes[] = "KMGTPE";
	char digits[32];
	const char *p;
	uint64_t v;
	size_t n;
	int shift = 0, r;

	if (!s)
		return -EINVAL;
	for (p = s; *p >= '0' && *p <= '9'; p++)
		;
	n = (size_t)(p - s);
	if (n == 0 || n >= sizeof(digits))
		return n == 0 ? -EINVAL : -ERANGE;
	memcpy(digits, s, n);
	digits[n] = '\0';
	r = parse_u64(digits, &v);
	if (r < 0)
		return r;
	if (*p) {
		const char *sfx = strchr(suffixes, toupper((unsigned char)*p));

		if (!sfx)
			return -EINVAL;
		shift = 10 * (int)(sfx - suffixes + 1);
		p++;
		if (*p && strcasecmp(p, "iB") != 0 && strcasecmp(p, "B") != 0)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}
