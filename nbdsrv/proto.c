/*
 * proto.c — the NBD handshake and request codec, free of I/O (see proto.h).
 *
 * Handshake states
 *
 *     init ──greeting──► CFLAGS ──4 bytes──► OPTION ◄──────────────┐
 *                                              │  header+payload     │ reply
 *                                              ├─ len > 64 KiB ─► SKIP ┘
 *                                              ├─ GO / EXPORT_NAME ─► TRANSMISSION
 *                                              └─ ABORT / bad magic ─► DEAD
 *
 *   An option is handled only once its whole payload is in the input (the
 *   caller's receive buffer must hold NBD_MAX_OPTION + 16 bytes).  Every
 *   option other than EXPORT_NAME gets replies; an unknown option gets
 *   NBD_REP_ERR_UNSUP and negotiation continues.  Malformed payloads get
 *   NBD_REP_ERR_INVALID.  Only a wrong magic, unknown client flags or an
 *   EXPORT_NAME we cannot satisfy end the session (the spec leaves no other
 *   way to answer those).
 *
 *   INFO and GO share one function, so they report the same facts.  The
 *   metadata context selected by SET_META_CONTEXT is remembered with the
 *   export it was selected for; GO on another export drops it.
 *
 * Requests
 *   Validation follows the spec's error choices: unknown command or flag,
 *   a flag on a command it does not apply to, a zero-length BLOCK_STATUS →
 *   EINVAL; range past the end → ENOSPC for WRITE and WRITE_ZEROES, EINVAL
 *   otherwise (READ, TRIM, CACHE, BLOCK_STATUS: the spec's wording); READ
 *   longer than the maximum block size → EINVAL, EOVERFLOW only with DF
 *   (the one case the spec gives EOVERFLOW); writes to a read-only export
 *   → EPERM.  A payload longer than
 *   NBD_MAX_PAYLOAD cannot be received: -EPROTO (disconnect).
 */
#include "nbdsrv/proto.h"
#include "nbdsrv/export.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- byte helpers ---- */

static inline void put16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

/* ---- output buffer ---- */

static uint8_t *out_reserve(struct nbd_session *s, size_t n)
{
	uint8_t *p;

	if (s->out_oom)
		return NULL;
	if (s->out_len + n > s->out_cap) {
		size_t cap = s->out_cap ? s->out_cap : 256;

		while (cap < s->out_len + n)
			cap *= 2;
		p = realloc(s->out, cap);
		if (!p) {
			s->out_oom = true;
			return NULL;
		}
		s->out = p;
		s->out_cap = cap;
	}
	p = s->out + s->out_len;
	s->out_len += n;
	return p;
}

/* An option reply header announcing len bytes of reply data; returns where
 * the data goes (NULL on allocation failure). */
static uint8_t *opt_reply(struct nbd_session *s, uint32_t opt, uint32_t type,
			  uint32_t len)
{
	uint8_t *p = out_reserve(s, 20 + (size_t)len);

	if (!p)
		return NULL;
	put64(p, NBD_REP_MAGIC);
	put32(p + 8, opt);
	put32(p + 12, type);
	put32(p + 16, len);
	return p + 20;
}

static void opt_reply_str(struct nbd_session *s, uint32_t opt, uint32_t type,
			  const char *msg)
{
	size_t n = msg ? strlen(msg) : 0;
	uint8_t *p = opt_reply(s, opt, type, (uint32_t)n);

	if (p && n)
		memcpy(p, msg, n);
}

int nbd_session_init(struct nbd_session *s, struct export *const *exports,
		     size_t n_exports)
{
	uint8_t *p;

	memset(s, 0, sizeof(*s));
	s->exports = exports;
	s->n_exports = n_exports;
	s->phase = NBD_PHASE_CFLAGS;
	p = out_reserve(s, 18);
	if (!p)
		return -ENOMEM;
	put64(p, NBD_MAGIC);
	put64(p + 8, NBD_OPT_MAGIC);
	put16(p + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return 0;
}

void nbd_session_fini(struct nbd_session *s)
{
	if (s->export_owned && s->export && s->resolver)
		s->resolver->release(s->resolver->arg, s->export);
	s->export = NULL;
	s->export_owned = false;
	free(s->meta_name);
	s->meta_name = NULL;
	free(s->out);
	s->out = NULL;
	s->out_len = s->out_cap = 0;
}

void nbd_session_out_consume(struct nbd_session *s, size_t n)
{
	if (n >= s->out_len) {
		s->out_len = 0;
		return;
	}
	memmove(s->out, s->out + n, s->out_len - n);
	s->out_len -= n;
}

uint16_t nbd_export_tflags(const struct nbd_session *s, const struct export *e)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;

	if (e->flags & EXPORT_READ_ONLY) {
		f |= NBD_FLAG_READ_ONLY;
	} else {
		f |= NBD_FLAG_SEND_FUA;
		if (e->flags & EXPORT_CAN_TRIM)
			f |= NBD_FLAG_SEND_TRIM;
		if (e->flags & EXPORT_CAN_ZERO)
			f |= NBD_FLAG_SEND_WRITE_ZEROES;
		if ((e->flags & EXPORT_CAN_ZERO) && (e->flags & EXPORT_CAN_FAST_ZERO))
			f |= NBD_FLAG_SEND_FAST_ZERO;
	}
	if (s->structured)
		f |= NBD_FLAG_SEND_DF;
	if (e->flags & EXPORT_CAN_MULTI_CONN)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	if (e->flags & EXPORT_CAN_CACHE)
		f |= NBD_FLAG_SEND_CACHE;
	if (e->flags & EXPORT_ROTATIONAL)
		f |= NBD_FLAG_ROTATIONAL;
	return f;
}

/* Index of the export called name[0..len), the default for "", or -1. */
static long find_export(const struct nbd_session *s, const uint8_t *name,
			size_t len)
{
	size_t i;

	if (len == 0)
		return s->n_exports ? 0 : -1;
	for (i = 0; i < s->n_exports; i++) {
		const char *n = s->exports[i]->name;

		if (strlen(n) == len && memcmp(n, name, len) == 0)
			return (long)i;
	}
	return -1;
}

static bool valid_string(const uint8_t *p, size_t len)
{
	return len <= NBD_MAX_STRING && memchr(p, 0, len) == NULL;
}

/* The export called name[0..len) (a valid string): a static one (*idx its
 * index) or, failing that, one the resolver opens (*idx -1; the caller
 * releases it or keeps it as s->export).  NULL when unknown. */
static struct export *lookup_export(const struct nbd_session *s,
				    const uint8_t *name, size_t len, long *idx)
{
	char buf[NBD_MAX_STRING + 1];

	*idx = find_export(s, name, len);
	if (*idx >= 0)
		return s->exports[*idx];
	if (!s->resolver || len == 0)
		return NULL;
	memcpy(buf, name, len);
	buf[len] = '\0';
	return s->resolver->open(s->resolver->arg, buf);
}

static void release_export(const struct nbd_session *s, struct export *e)
{
	s->resolver->release(s->resolver->arg, e);
}

/* Does the meta context chosen by SET_META_CONTEXT belong to the export
 * called name[0..len) (static index idx, or -1)? */
static bool meta_matches(const struct nbd_session *s, long idx,
			 const uint8_t *name, size_t len)
{
	if (idx >= 0)
		return s->meta_export == (size_t)idx;
	return s->meta_export == SIZE_MAX && s->meta_name &&
	       strlen(s->meta_name) == len && memcmp(s->meta_name, name, len) == 0;
}

/* ---- options ---- */

static enum nbd_hs_result opt_export_name(struct nbd_session *s,
					  const uint8_t *d, uint32_t len)
{
	long i;
	uint8_t *p;
	size_t n = s->no_zeroes ? 10 : 134;

	if (!valid_string(d, len))
		return NBD_HS_FAIL;
	s->export = lookup_export(s, d, len, &i);
	if (!s->export)
		return NBD_HS_FAIL;     /* the spec leaves no way to say no */
	s->export_owned = i < 0;
	if (s->meta_alloc && !meta_matches(s, i, d, len))
		s->meta_alloc = false;
	p = out_reserve(s, n);
	if (!p)
		return NBD_HS_FAIL;
	memset(p, 0, n);
	put64(p, s->export->size);
	put16(p + 8, nbd_export_tflags(s, s->export));
	s->phase = NBD_PHASE_TRANSMISSION;
	return NBD_HS_READY;
}

static enum nbd_hs_result opt_info_go(struct nbd_session *s, uint32_t opt,
				      const uint8_t *d, uint32_t len)
{
	uint32_t namelen, i;
	uint16_t nreq;
	bool want_name = false, want_desc = false;
	const uint8_t *name;
	struct export *e;
	uint8_t *p;
	long idx;

	if (len < 6)
		goto invalid;
	namelen = get32(d);
	if (namelen > len - 6)
		goto invalid;
	name = d + 4;
	nreq = get16(d + 4 + namelen);
	if ((uint64_t)6 + namelen + 2ull * nreq != len)
		goto invalid;
	if (!valid_string(name, namelen))
		goto invalid;
	for (i = 0; i < nreq; i++) {
		uint16_t t = get16(d + 6 + namelen + 2 * i);

		if (t == NBD_INFO_NAME)
			want_name = true;
		else if (t == NBD_INFO_DESCRIPTION)
			want_desc = true;
	}
	e = lookup_export(s, name, namelen, &idx);
	if (!e) {
		opt_reply_str(s, opt, NBD_REP_ERR_UNKNOWN, "unknown export");
		return NBD_HS_MORE;
	}

	p = opt_reply(s, opt, NBD_REP_INFO, 12);
	if (!p)
		goto fail;
	put16(p, NBD_INFO_EXPORT);
	put64(p + 2, e->size);
	put16(p + 10, nbd_export_tflags(s, e));

	if (want_name) {
		size_t n = strlen(e->name);

		p = opt_reply(s, opt, NBD_REP_INFO, (uint32_t)(2 + n));
		if (!p)
			goto fail;
		put16(p, NBD_INFO_NAME);
		memcpy(p + 2, e->name, n);
	}
	if (want_desc && e->desc) {
		size_t n = strlen(e->desc);

		p = opt_reply(s, opt, NBD_REP_INFO, (uint32_t)(2 + n));
		if (!p)
			goto fail;
		put16(p, NBD_INFO_DESCRIPTION);
		memcpy(p + 2, e->desc, n);
	}
	/* Always sent: clients that did not ask may still use the hints. */
	p = opt_reply(s, opt, NBD_REP_INFO, 14);
	if (!p)
		goto fail;
	put16(p, NBD_INFO_BLOCK_SIZE);
	put32(p + 2, NBD_MIN_BLOCK);
	put32(p + 6, e->pref_block ? e->pref_block : NBD_PREF_BLOCK);
	put32(p + 10, NBD_MAX_PAYLOAD);

	if (!opt_reply(s, opt, NBD_REP_ACK, 0))
		goto fail;
	if (opt == NBD_OPT_GO) {
		s->export = e;
		s->export_owned = idx < 0;
		if (s->meta_alloc && !meta_matches(s, idx, name, namelen))
			s->meta_alloc = false;
		s->phase = NBD_PHASE_TRANSMISSION;
		return NBD_HS_READY;
	}
	if (idx < 0)
		release_export(s, e);
	return NBD_HS_MORE;
fail:
	if (idx < 0)
		release_export(s, e);
	return NBD_HS_FAIL;
invalid:
	opt_reply_str(s, opt, NBD_REP_ERR_INVALID, "malformed request");
	return NBD_HS_MORE;
}

/* One NBD_REP_SERVER reply for a resolver's export. */
static void list_add(void *ctx, const char *name)
{
	struct nbd_session *s = ctx;
	size_t nl = strlen(name);
	uint8_t *p;

	if (nl > NBD_MAX_STRING)
		return;
	p = opt_reply(s, NBD_OPT_LIST, NBD_REP_SERVER, (uint32_t)(4 + nl));
	if (!p)
		return;
	put32(p, (uint32_t)nl);
	memcpy(p + 4, name, nl);
}

static void opt_list(struct nbd_session *s, uint32_t len)
{
	size_t i;

	if (len != 0) {
		opt_reply_str(s, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "unexpected payload");
		return;
	}
	for (i = 0; i < s->n_exports; i++) {
		const struct export *e = s->exports[i];
		size_t nl = strlen(e->name), dl = e->desc ? strlen(e->desc) : 0;
		uint8_t *p = opt_reply(s, NBD_OPT_LIST, NBD_REP_SERVER,
				       (uint32_t)(4 + nl + dl));

		if (!p)
			return;
		put32(p, (uint32_t)nl);
		memcpy(p + 4, e->name, nl);
		if (dl)
			memcpy(p + 4 + nl, e->desc, dl);
	}
	if (s->resolver && s->resolver->list)
		s->resolver->list(s->resolver->arg, list_add, s);
	opt_reply(s, NBD_OPT_LIST, NBD_REP_ACK, 0);
}

static void meta_reply(struct nbd_session *s, uint32_t opt, uint32_t id)
{
	static const char name[] = "base:allocation";
	uint8_t *p = opt_reply(s, opt, NBD_REP_META_CONTEXT,
			       (uint32_t)(4 + sizeof(name) - 1));

	if (!p)
		return;
	put32(p, id);
	memcpy(p + 4, name, sizeof(name) - 1);
}

/* LIST_META_CONTEXT and SET_META_CONTEXT: export name, then queries. */
static void opt_meta(struct nbd_session *s, uint32_t opt, const uint8_t *d,
		     uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT;
	uint32_t namelen, nq, i;
	size_t pos;
	bool match = false;
	long idx;

	/* SET replaces the selection even when it fails (spec). */
	if (!list)
		s->meta_alloc = false;
	if (!s->structured) {
		opt_reply_str(s, opt, NBD_REP_ERR_INVALID,
			      "structured replies not negotiated");
		return;
	}
	if (len < 8)
		goto invalid;
	namelen = get32(d);
	if (namelen > len - 8 || !valid_string(d + 4, namelen))
		goto invalid;
	pos = 4 + (size_t)namelen;
	nq = get32(d + pos);
	pos += 4;
	/* Validate all queries before answering any of them. */
	{
		size_t q = pos;

		for (i = 0; i < nq; i++) {
			uint32_t ql;

			if (len - q < 4)
				goto invalid;
			ql = get32(d + q);
			q += 4;
			if (ql > len - q || !valid_string(d + q, ql))
				goto invalid;
			q += ql;
		}
		if (q != len)
			goto invalid;
	}
	{
		struct export *e = lookup_export(s, d + 4, namelen, &idx);

		if (!e) {
			opt_reply_str(s, opt, NBD_REP_ERR_UNKNOWN, "unknown export");
			return;
		}
		if (idx < 0)
			release_export(s, e);
	}
	if (list && nq == 0)
		match = true;
	for (i = 0; i < nq; i++) {
		uint32_t ql = get32(d + pos);
		const char *q = (const char *)d + pos + 4;

		pos += 4 + (size_t)ql;
		if (ql == 15 && memcmp(q, "base:allocation", 15) == 0)
			match = true;
		else if (list && ql == 5 && memcmp(q, "base:", 5) == 0)
			match = true;
	}
	if (list) {
		if (match)
			meta_reply(s, opt, 0);
	} else {
		s->meta_alloc = match;
		s->meta_export = idx >= 0 ? (size_t)idx : SIZE_MAX;
		free(s->meta_name);
		s->meta_name = NULL;
		if (idx < 0) {
			s->meta_name = strndup((const char *)d + 4, namelen);
			if (!s->meta_name)
				s->meta_alloc = false;
		}
		if (match)
			meta_reply(s, opt, NBD_META_BASE_ALLOCATION_ID);
	}
	opt_reply(s, opt, NBD_REP_ACK, 0);
	return;
invalid:
	opt_reply_str(s, opt, NBD_REP_ERR_INVALID, "malformed request");
}

static enum nbd_hs_result handle_option(struct nbd_session *s, uint32_t opt,
					const uint8_t *d, uint32_t len)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(s, d, len);
	case NBD_OPT_ABORT:
		opt_reply(s, opt, NBD_REP_ACK, 0);
		s->phase = NBD_PHASE_DEAD;
		return NBD_HS_CLOSE;
	case NBD_OPT_LIST:
		opt_list(s, len);
		break;
	case NBD_OPT_STARTTLS:
		if (len)
			opt_reply_str(s, opt, NBD_REP_ERR_INVALID, "unexpected payload");
		else
			opt_reply_str(s, opt, NBD_REP_ERR_POLICY, "TLS is not configured");
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(s, opt, d, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			opt_reply_str(s, opt, NBD_REP_ERR_INVALID, "unexpected payload");
		else if (s->extended)
			opt_reply_str(s, opt, NBD_REP_ERR_EXT_HEADER_REQD,
				      "extended headers already negotiated");
		else if (s->structured)
			opt_reply_str(s, opt, NBD_REP_ERR_INVALID,
				      "structured replies already negotiated");
		else {
			s->structured = true;
			opt_reply(s, opt, NBD_REP_ACK, 0);
		}
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		opt_meta(s, opt, d, len);
		break;
	case NBD_OPT_EXTENDED_HEADERS:
		if (len)
			opt_reply_str(s, opt, NBD_REP_ERR_INVALID, "unexpected payload");
		else if (s->extended)
			opt_reply_str(s, opt, NBD_REP_ERR_INVALID,
				      "extended headers already negotiated");
		else {
			s->extended = s->structured = true;
			opt_reply(s, opt, NBD_REP_ACK, 0);
		}
		break;
	default:
		opt_reply_str(s, opt, NBD_REP_ERR_UNSUP, "unsupported option");
		break;
	}
	return NBD_HS_MORE;
}

enum nbd_hs_result nbd_hs_input(struct nbd_session *s, const uint8_t *in,
				size_t len, size_t *used)
{
	size_t pos = 0;
	enum nbd_hs_result r = NBD_HS_MORE;

	while (r == NBD_HS_MORE) {
		size_t avail = len - pos;

		if (s->out_oom) {
			r = NBD_HS_FAIL;
			break;
		}
		if (s->phase == NBD_PHASE_CFLAGS) {
			uint32_t cf;

			if (avail < 4)
				break;
			cf = get32(in + pos);
			pos += 4;
			if (cf & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
				r = NBD_HS_FAIL;
				break;
			}
			s->no_zeroes = cf & NBD_FLAG_C_NO_ZEROES;
			s->phase = NBD_PHASE_OPTION;
		} else if (s->phase == NBD_PHASE_OPTION) {
			uint32_t opt, olen;

			if (avail < 16)
				break;
			if (get64(in + pos) != NBD_OPT_MAGIC) {
				r = NBD_HS_FAIL;
				break;
			}
			opt = get32(in + pos + 8);
			olen = get32(in + pos + 12);
			if (olen > NBD_MAX_OPTION) {
				if (opt == NBD_OPT_EXPORT_NAME) {
					r = NBD_HS_FAIL;
					break;
				}
				pos += 16;
				s->skip_opt = opt;
				s->skip_left = olen;
				s->phase = NBD_PHASE_SKIP;
				continue;
			}
			if (avail < 16 + (size_t)olen)
				break;
			pos += 16 + (size_t)olen;
			r = handle_option(s, opt, in + pos - olen, olen);
		} else if (s->phase == NBD_PHASE_SKIP) {
			size_t n = MIN((uint64_t)avail, s->skip_left);

			pos += n;
			s->skip_left -= n;
			if (s->skip_left)
				break;
			opt_reply_str(s, s->skip_opt, NBD_REP_ERR_TOO_BIG,
				      "option payload too large");
			s->phase = NBD_PHASE_OPTION;
		} else {
			r = s->phase == NBD_PHASE_TRANSMISSION ? NBD_HS_READY
							       : NBD_HS_FAIL;
			break;
		}
	}
	if (s->out_oom)
		r = NBD_HS_FAIL;
	if (r == NBD_HS_FAIL)
		s->phase = NBD_PHASE_DEAD;
	*used = pos;
	return r;
}

/* ---- requests ---- */

size_t nbd_req_hdr_size(const struct nbd_session *s)
{
	return s->extended ? 32 : 28;
}

int nbd_req_decode(const struct nbd_session *s, const uint8_t *p,
		   struct nbd_req *r)
{
	uint32_t magic = get32(p);

	r->flags = get16(p + 4);
	r->type = get16(p + 6);
	r->cookie = get64(p + 8);
	r->offset = get64(p + 16);
	if (s->extended) {
		if (magic != NBD_EXT_REQUEST_MAGIC)
			return -EPROTO;
		r->length = get64(p + 24);
		if (r->type == NBD_CMD_WRITE ||
		    (r->flags & NBD_CMD_FLAG_PAYLOAD_LEN))
			r->payload = r->length;
		else
			r->payload = 0;
	} else {
		if (magic != NBD_REQUEST_MAGIC)
			return -EPROTO;
		r->length = get32(p + 24);
		r->payload = r->type == NBD_CMD_WRITE ? r->length : 0;
	}
	return 0;
}

int nbd_req_check(const struct nbd_session *s, const struct nbd_req *r)
{
	const struct export *e = s->export;
	uint16_t allowed = NBD_CMD_FLAG_FUA;
	bool writes = false;
	uint64_t end;

	if (r->payload > NBD_MAX_PAYLOAD)
		return -EPROTO;
	if (r->payload && r->type != NBD_CMD_WRITE)
		return NBD_EINVAL;      /* no command of ours takes a payload */
	if (s->extended && r->type == NBD_CMD_WRITE)
		allowed |= NBD_CMD_FLAG_PAYLOAD_LEN;

	switch (r->type) {
	case NBD_CMD_READ:
		if (s->structured)
			allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
		writes = true;
		break;
	case NBD_CMD_DISC:
	case NBD_CMD_FLUSH:
		break;
	case NBD_CMD_TRIM:
		if (!(e->flags & EXPORT_CAN_TRIM) && !(e->flags & EXPORT_READ_ONLY))
			return NBD_EINVAL;
		writes = true;
		break;
	case NBD_CMD_CACHE:
		if (!(e->flags & EXPORT_CAN_CACHE))
			return NBD_EINVAL;
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (!(e->flags & EXPORT_CAN_ZERO) && !(e->flags & EXPORT_READ_ONLY))
			return NBD_EINVAL;
		allowed |= NBD_CMD_FLAG_NO_HOLE;
		if (e->flags & EXPORT_CAN_FAST_ZERO)
			allowed |= NBD_CMD_FLAG_FAST_ZERO;
		writes = true;
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!s->structured || !s->meta_alloc)
			return NBD_EINVAL;
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		break;
	default:
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed)
		return NBD_EINVAL;
	if (r->type == NBD_CMD_DISC || r->type == NBD_CMD_FLUSH)
		return 0;
	if (writes && (e->flags & EXPORT_READ_ONLY))
		return NBD_EPERM;
	if (r->type == NBD_CMD_READ && r->length > NBD_MAX_PAYLOAD)
		return r->flags & NBD_CMD_FLAG_DF ? NBD_EOVERFLOW : NBD_EINVAL;
	if (r->type == NBD_CMD_BLOCK_STATUS && r->length == 0)
		return NBD_EINVAL;
	if (__builtin_add_overflow(r->offset, r->length, &end) || end > e->size)
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES
			? NBD_ENOSPC : NBD_EINVAL;
	return 0;
}

uint32_t nbd_errno_to_nbd(int err, uint16_t cmd_flags)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return 0;
	case EPERM:
	case EACCES:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	/* The spec keeps these two for the flags that ask for them (a DF read,
	 * a FAST_ZERO write-zeroes); anywhere else they mean "cannot do that"
	 * (nbdkit maps them the same way). */
	case EOVERFLOW:
		return cmd_flags & NBD_CMD_FLAG_DF ? NBD_EOVERFLOW : NBD_EINVAL;
	case ENOTSUP:
		return cmd_flags & NBD_CMD_FLAG_FAST_ZERO ? NBD_ENOTSUP : NBD_EINVAL;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

/* ---- replies ---- */

size_t nbd_reply_simple_hdr(uint8_t *buf, uint64_t cookie)
{
	put32(buf, NBD_SIMPLE_REPLY_MAGIC);
	put32(buf + 4, 0);
	put64(buf + 8, cookie);
	return 16;
}

size_t nbd_reply_chunk_hdr(const struct nbd_session *s, uint8_t *buf,
			   uint16_t flags, uint16_t type,
			   const struct nbd_req *r, uint64_t payload_len)
{
	if (s->extended) {
		put32(buf, NBD_EXT_REPLY_MAGIC);
		put16(buf + 4, flags);
		put16(buf + 6, type);
		put64(buf + 8, r->cookie);
		put64(buf + 16, r->offset);
		put64(buf + 24, payload_len);
		return 32;
	}
	put32(buf, NBD_STRUCT_REPLY_MAGIC);
	put16(buf + 4, flags);
	put16(buf + 6, type);
	put64(buf + 8, r->cookie);
	put32(buf + 16, (uint32_t)payload_len);
	return 20;
}

size_t nbd_reply_final(const struct nbd_session *s, uint8_t *buf,
		       const struct nbd_req *r, uint32_t nbd_err)
{
	size_t n;

	/* A simple reply is allowed for anything but a READ until extended
	 * headers forbid it. */
	if (!s->extended && (!s->structured || r->type != NBD_CMD_READ)) {
		put32(buf, NBD_SIMPLE_REPLY_MAGIC);
		put32(buf + 4, nbd_err);
		put64(buf + 8, r->cookie);
		return 16;
	}
	if (!nbd_err)
		return nbd_reply_chunk_hdr(s, buf, NBD_REPLY_FLAG_DONE,
					   NBD_REPLY_TYPE_NONE, r, 0);
	n = nbd_reply_chunk_hdr(s, buf, NBD_REPLY_FLAG_DONE,
				NBD_REPLY_TYPE_ERROR, r, 6);
	put32(buf + n, nbd_err);
	put16(buf + n + 4, 0);
	return n + 6;
}

static bool block_is_zero(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;
	size_t i;

	/* Cheap early exit: most data blocks differ from zero at the start. */
	if (n >= 16) {
		uint64_t a, b;

		memcpy(&a, p, 8);
		memcpy(&b, p + n - 8, 8);
		if (a | b)
			return false;
	}
	for (i = 0; i + 8 <= n; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		acc |= v;
		if ((i & 511) == 504 && acc)
			return false;
	}
	for (; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

unsigned nbd_read_chunks(const uint8_t *buf, uint64_t off, uint64_t len,
			 bool df, struct nbd_read_chunk *out, unsigned max)
{
	const uint64_t bs = 4096;
	uint64_t pos = 0;
	unsigned n = 0;

	if (len == 0 || max == 0)
		return 0;
	if (df || max < 2 || len < bs) {
		out[0] = (struct nbd_read_chunk){ 0, len, df && block_is_zero(buf, len) };
		return 1;
	}
	while (pos < len) {
		/* The next block boundary in export terms. */
		uint64_t step = bs - ((off + pos) % bs);
		bool hole;

		if (step > len - pos)
			step = len - pos;
		hole = step == bs && block_is_zero(buf + pos, step);
		if (n && out[n - 1].hole == hole) {
			out[n - 1].length += step;
		} else if (n == max) {
			/* Out of chunk slots: the rest goes out as data. */
			if (out[n - 1].hole) {
				out[n - 1].hole = false;
			}
			out[n - 1].length = len - out[n - 1].offset;
			return n;
		} else {
			out[n++] = (struct nbd_read_chunk){ pos, step, hole };
		}
		pos += step;
	}
	return n;
}

size_t nbd_reply_read_chunk(const struct nbd_session *s, uint8_t *buf,
			    const struct nbd_req *r,
			    const struct nbd_read_chunk *c, bool done)
{
	uint16_t flags = done ? NBD_REPLY_FLAG_DONE : 0;
	size_t n;

	if (c->hole) {
		n = nbd_reply_chunk_hdr(s, buf, flags, NBD_REPLY_TYPE_OFFSET_HOLE,
					r, 12);
		put64(buf + n, r->offset + c->offset);
		put32(buf + n + 8, (uint32_t)c->length);
		return n + 12;
	}
	n = nbd_reply_chunk_hdr(s, buf, flags, NBD_REPLY_TYPE_OFFSET_DATA, r,
				8 + c->length);
	put64(buf + n, r->offset + c->offset);
	return n + 8;
}

size_t nbd_reply_block_status_size(unsigned n)
{
	return NBD_HDR_MAX + 8 + 16 * (size_t)n;
}

size_t nbd_reply_block_status(const struct nbd_session *s, uint8_t *buf,
			      const struct nbd_req *r,
			      const struct export_extent *ext, unsigned n)
{
	size_t h, i;
	uint8_t *p;

	if (s->extended) {
		h = nbd_reply_chunk_hdr(s, buf, NBD_REPLY_FLAG_DONE,
					NBD_REPLY_TYPE_BLOCK_STATUS_EXT, r,
					8 + 16 * (uint64_t)n);
		put32(buf + h, NBD_META_BASE_ALLOCATION_ID);
		put32(buf + h + 4, n);
		p = buf + h + 8;
		for (i = 0; i < n; i++, p += 16) {
			put64(p, ext[i].length);
			put64(p + 8, ext[i].flags);
		}
		return (size_t)(p - buf);
	}
	h = nbd_reply_chunk_hdr(s, buf, NBD_REPLY_FLAG_DONE,
				NBD_REPLY_TYPE_BLOCK_STATUS, r, 4 + 8 * (uint64_t)n);
	put32(buf + h, NBD_META_BASE_ALLOCATION_ID);
	p = buf + h + 4;
	for (i = 0; i < n; i++, p += 8) {
		put32(p, (uint32_t)ext[i].length);
		put32(p + 4, ext[i].flags);
	}
	return (size_t)(p - buf);
}
