/*
 * resp.c — RESP2 encoding and a bounded, incremental reply parser.
 *
 * Why not hiredis: hiredis's reader allocates a tree of reply objects per
 * reply and copies every bulk payload into a fresh buffer (redisReader grows
 * its own buffer to hold the whole reply).  Our shards are up to 8 MiB and
 * must land in the caller's buffer with no copy and no allocation decided by
 * the network; a reply larger than expected must be an error, not a malloc.
 * We need five reply shapes and no pub/sub, so a 150-line parser that only
 * ever looks at bytes already received is simpler to bound and to fuzz.
 *
 * Contract of resp_parse(): it is pure and restartable — it looks at
 * buf[0..len), and either reports a complete reply with its size, or 0 when
 * more bytes are needed (the caller calls again later with a longer buffer
 * from the same start), or an error.  For a bulk string whose header line is
 * complete it reports the header before the payload has arrived, which is
 * what lets conn.c receive the payload straight into the caller's buffer.
 *
 * Bounds: a status/error/integer line longer than RESP_LINE_MAX, a bulk
 * longer than max_bulk, an array of more than RESP_ARRAY_MAX elements or
 * nested deeper than RESP_DEPTH_MAX is -EMSGSIZE; any byte that does not fit
 * the grammar (missing CRLF, sign or digit errors, negative lengths other
 * than -1, unknown type byte) is -EPROTO.
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <string.h>

/* Find the CRLF ending the line that starts at p.  Returns the line length
 * (without CRLF), -1 if incomplete, -EMSGSIZE if too long, -EPROTO if a bare
 * CR or LF appears. */
static long resp_line(const char *p, size_t avail)
{
	size_t lim = MIN(avail, (size_t)RESP_LINE_MAX + 2);
	const char *cr = memchr(p, '\r', lim);
	const char *lf;

	lf = memchr(p, '\n', cr ? (size_t)(cr - p) : lim);
	if (lf)
		return -EPROTO;
	if (!cr)
		return avail > RESP_LINE_MAX + 1 ? -EMSGSIZE : -1;
	if ((size_t)(cr - p) + 1 >= avail)
		return -1;
	if (cr[1] != '\n')
		return -EPROTO;
	return cr - p;
}

/* Strict signed decimal: optional '-', 1..19 digits, no leading '+'. */
static int resp_int(const char *s, size_t n, int64_t *out)
{
	bool neg = false;
	uint64_t v = 0;
	size_t i = 0;

	if (n && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (i == n || n - i > 18)
		return -EPROTO;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EPROTO;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int resp_parse_at(const char *buf, size_t len, size_t max_bulk,
			 struct resp_reply *r, unsigned depth)
{
	long ll;
	size_t hdr;
	int64_t v;
	int e;

	memset(r, 0, sizeof(*r));
	if (len == 0)
		return 0;
	ll = resp_line(buf + 1, len - 1);
	if (ll == -1)
		return 0;
	if (ll < 0)
		return (int)ll;
	hdr = (size_t)ll + 3;
	r->hdr_len = hdr;

	switch (buf[0]) {
	case '+':
	case '-':
		r->type = buf[0] == '+' ? RESP_SIMPLE : RESP_ERROR;
		r->str = buf + 1;
		r->len = (size_t)ll;
		return (int)hdr;
	case ':':
		if ((e = resp_int(buf + 1, (size_t)ll, &v)) < 0)
			return e;
		r->type = RESP_INT;
		r->integer = v;
		return (int)hdr;
	case '$':
		if ((e = resp_int(buf + 1, (size_t)ll, &v)) < 0)
			return e;
		if (v == -1) {
			r->type = RESP_NIL;
			return (int)hdr;
		}
		if (v < 0)
			return -EPROTO;
		if ((uint64_t)v > max_bulk)
			return -EMSGSIZE;
		r->type = RESP_BULK;
		r->integer = v;
		if (len < hdr + (size_t)v + 2)
			return 0;
		if (buf[hdr + v] != '\r' || buf[hdr + v + 1] != '\n')
			return -EPROTO;
		r->str = buf + hdr;
		r->len = (size_t)v;
		return (int)(hdr + (size_t)v + 2);
	case '*': {
		size_t off = hdr;
		int64_t i;

		if ((e = resp_int(buf + 1, (size_t)ll, &v)) < 0)
			return e;
		if (v == -1) {
			r->type = RESP_NIL;
			return (int)hdr;
		}
		if (v < 0)
			return -EPROTO;
		if (v > RESP_ARRAY_MAX || depth >= RESP_DEPTH_MAX)
			return -EMSGSIZE;
		for (i = 0; i < v; i++) {
			struct resp_reply sub;
			int n = resp_parse_at(buf + off, len - off, max_bulk, &sub,
					      depth + 1);

			if (n <= 0)
				return n;
			off += (size_t)n;
			if (off > (size_t)INT32_MAX)
				return -EMSGSIZE;
		}
		memset(r, 0, sizeof(*r));
		r->type = RESP_ARRAY;
		r->integer = v;
		r->hdr_len = hdr;
		return (int)off;
	}
	default:
		return -EPROTO;
	}
}

int resp_parse(const char *buf, size_t len, size_t max_bulk, struct resp_reply *r)
{
	if (max_bulk > (size_t)INT32_MAX - 64)
		max_bulk = (size_t)INT32_MAX - 64;
	return resp_parse_at(buf, len, max_bulk, r, 0);
}

/* Append "$<n>\r\n" (or "*<n>\r\n") to out at *off. */
static int resp_put_len(char *out, size_t cap, size_t *off, char type, size_t n)
{
	char tmp[24];
	int l = 0;
	size_t v = n;

	do {
		tmp[l++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (*off + (size_t)l + 3 > cap)
		return -ENOBUFS;
	out[(*off)++] = type;
	while (l)
		out[(*off)++] = tmp[--l];
	out[(*off)++] = '\r';
	out[(*off)++] = '\n';
	return 0;
}

int resp_encode_head(char *out, size_t cap, unsigned argc,
		     const void *const *argv, const size_t *lens, size_t last_len)
{
	size_t off = 0;
	unsigned i;

	if (argc == 0 || resp_put_len(out, cap, &off, '*', argc) < 0)
		return -ENOBUFS;
	for (i = 0; i + 1 < argc; i++) {
		if (resp_put_len(out, cap, &off, '$', lens[i]) < 0 ||
		    off + lens[i] + 2 > cap)
			return -ENOBUFS;
		memcpy(out + off, argv[i], lens[i]);
		off += lens[i];
		out[off++] = '\r';
		out[off++] = '\n';
	}
	if (resp_put_len(out, cap, &off, '$', last_len) < 0)
		return -ENOBUFS;
	return (int)off;
}

int resp_encode(char *out, size_t cap, unsigned argc, const void *const *argv,
		const size_t *lens)
{
	int n;
	size_t off, last;

	if (argc == 0)
		return -ENOBUFS;
	last = lens[argc - 1];
	n = resp_encode_head(out, cap, argc, argv, lens, last);
	if (n < 0)
		return n;
	off = (size_t)n;
	if (off + last + 2 > cap)
		return -ENOBUFS;
	memcpy(out + off, argv[argc - 1], last);
	off += last;
	out[off++] = '\r';
	out[off++] = '\n';
	return (int)off;
}
