/*
 * check_proto.c — unit tests for the sans-I/O NBD protocol (nbdsrv/proto.c):
 * option negotiation, request validation, and the reply encoders, including
 * extended headers (which no client installed here speaks yet).
 */
#include "nbdsrv/export.h"
#include "nbdsrv/proto.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct export ex_disk = {
	.name = (char *)"disk", .desc = (char *)"the disk", .size = 1 << 20,
	.flags = EXPORT_CAN_TRIM | EXPORT_CAN_ZERO | EXPORT_CAN_FAST_ZERO |
		 EXPORT_CAN_CACHE | EXPORT_CAN_EXTENTS | EXPORT_CAN_MULTI_CONN,
	.pref_block = 4096,
};
static struct export ex_ro = { .name = (char *)"ro", .size = 4096,
			       .flags = EXPORT_READ_ONLY };
static struct export *const exports[] = { &ex_disk, &ex_ro };

/* ---- helpers ---- */

static size_t put_u32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); return 4; }
static size_t put_u16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); return 2; }
static size_t put_u64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); return 8; }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

static size_t opt_hdr(uint8_t *p, uint32_t opt, uint32_t len)
{
	put_u64(p, NBD_OPT_MAGIC);
	put_u32(p + 8, opt);
	put_u32(p + 12, len);
	return 16;
}

/* A session past the greeting and the client flags. */
static void start(struct nbd_session *s, uint32_t cflags)
{
	uint8_t b[4];
	size_t used;

	ck_assert_int_eq(nbd_session_init(s, exports, 2), 0);
	ck_assert_uint_eq(s->out_len, 18);
	ck_assert_uint_eq(get_u64(s->out), NBD_MAGIC);
	ck_assert_uint_eq(get_u64(s->out + 8), NBD_OPT_MAGIC);
	ck_assert_uint_eq(get_u16(s->out + 16),
			  NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	nbd_session_out_consume(s, s->out_len);
	put_u32(b, cflags);
	ck_assert_int_eq(nbd_hs_input(s, b, 4, &used), NBD_HS_MORE);
	ck_assert_uint_eq(used, 4);
}

/* Send one option; return the result and leave the replies in s->out. */
static enum nbd_hs_result send_opt(struct nbd_session *s, uint32_t opt,
				   const uint8_t *data, uint32_t len)
{
	uint8_t *b = malloc(16 + (size_t)len);
	size_t used;
	enum nbd_hs_result r;

	nbd_session_out_consume(s, s->out_len);
	opt_hdr(b, opt, len);
	if (len)
		memcpy(b + 16, data, len);
	r = nbd_hs_input(s, b, 16 + (size_t)len, &used);
	ck_assert_uint_eq(used, 16 + (size_t)len);
	free(b);
	return r;
}

/* The i-th option reply in s->out: type, and its data/len. */
static uint32_t reply_at(struct nbd_session *s, unsigned i,
			 const uint8_t **data, uint32_t *len)
{
	size_t pos = 0;

	for (;;) {
		uint32_t l;

		ck_assert_uint_ge(s->out_len, pos + 20);
		ck_assert_uint_eq(get_u64(s->out + pos), NBD_REP_MAGIC);
		l = get_u32(s->out + pos + 16);
		if (i-- == 0) {
			if (data)
				*data = s->out + pos + 20;
			if (len)
				*len = l;
			return get_u32(s->out + pos + 12);
		}
		pos += 20 + (size_t)l;
	}
}

static unsigned reply_count(struct nbd_session *s)
{
	size_t pos = 0;
	unsigned n = 0;

	while (pos + 20 <= s->out_len) {
		pos += 20 + (size_t)get_u32(s->out + pos + 16);
		n++;
	}
	ck_assert_uint_eq(pos, s->out_len);
	return n;
}

static uint32_t info_go_payload(uint8_t *b, const char *name)
{
	uint32_t n = (uint32_t)strlen(name), p = 0;

	p += (uint32_t)put_u32(b, n);
	memcpy(b + p, name, n);
	p += n;
	p += (uint32_t)put_u16(b + p, 2);
	p += (uint32_t)put_u16(b + p, NBD_INFO_NAME);
	p += (uint32_t)put_u16(b + p, NBD_INFO_DESCRIPTION);
	return p;
}

static uint32_t meta_payload(uint8_t *b, const char *name, const char *query)
{
	uint32_t n = (uint32_t)strlen(name), p = 0;

	p += (uint32_t)put_u32(b, n);
	memcpy(b + p, name, n);
	p += n;
	if (!query)
		return p + (uint32_t)put_u32(b + p, 0);
	p += (uint32_t)put_u32(b + p, 1);
	p += (uint32_t)put_u32(b + p, (uint32_t)strlen(query));
	memcpy(b + p, query, strlen(query));
	return p + (uint32_t)strlen(query);
}

/* ---- handshake ---- */

START_TEST(test_bad_client_flags)
{
	struct nbd_session s;
	uint8_t b[4];
	size_t used;

	ck_assert_int_eq(nbd_session_init(&s, exports, 2), 0);
	put_u32(b, 0x80);
	ck_assert_int_eq(nbd_hs_input(&s, b, 4, &used), NBD_HS_FAIL);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_unknown_option_continues)
{
	struct nbd_session s;
	const uint8_t *d;
	uint32_t len;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(send_opt(&s, 4242, (const uint8_t *)"xyz", 3), NBD_HS_MORE);
	ck_assert_uint_eq(reply_count(&s), 1);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_UNSUP);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_STARTTLS, NULL, 0), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_POLICY);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_LIST, NULL, 0), NBD_HS_MORE);
	ck_assert_uint_eq(reply_count(&s), 3);
	ck_assert_uint_eq(reply_at(&s, 0, &d, &len), NBD_REP_SERVER);
	ck_assert_uint_eq(get_u32(d), 4);
	ck_assert(memcmp(d + 4, "disk", 4) == 0);
	ck_assert(len == 4 + 4 + strlen("the disk"));
	ck_assert_uint_eq(reply_at(&s, 2, NULL, NULL), NBD_REP_ACK);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_ABORT, NULL, 0), NBD_HS_CLOSE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ACK);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_option_too_big_is_skipped)
{
	struct nbd_session s;
	size_t n = 16 + 100000 + 16, used, total = 0;
	uint8_t *b = calloc(1, n);
	enum nbd_hs_result r;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	opt_hdr(b, NBD_OPT_INFO, 100000);
	opt_hdr(b + 16 + 100000, NBD_OPT_STRUCTURED_REPLY, 0);
	/* In pieces, as a socket would deliver it. */
	while (total < n) {
		size_t piece = MIN((size_t)7000, n - total);

		r = nbd_hs_input(&s, b + total, piece, &used);
		ck_assert_int_eq(r, NBD_HS_MORE);
		ck_assert_uint_eq(used, piece);  /* skipping needs no buffer */
		total += used;
	}
	ck_assert_uint_eq(reply_count(&s), 2);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_TOO_BIG);
	ck_assert_uint_eq(reply_at(&s, 1, NULL, NULL), NBD_REP_ACK);
	ck_assert(s.structured);
	free(b);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_info_and_go_agree)
{
	struct nbd_session s;
	uint8_t p[64];
	uint32_t len = info_go_payload(p, "disk"), l1, l2;
	const uint8_t *d;
	uint8_t info_export[12];
	uint16_t tflags;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_MORE);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_INFO, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_count(&s), 5);  /* export, name, desc, block size, ack */
	ck_assert_uint_eq(reply_at(&s, 0, &d, &l1), NBD_REP_INFO);
	ck_assert_uint_eq(l1, 12);
	memcpy(info_export, d, 12);
	ck_assert_uint_eq(get_u16(d), NBD_INFO_EXPORT);
	ck_assert_uint_eq(get_u64(d + 2), 1 << 20);
	tflags = get_u16(d + 10);
	ck_assert(tflags & NBD_FLAG_SEND_TRIM);
	ck_assert(tflags & NBD_FLAG_SEND_DF);
	ck_assert(tflags & NBD_FLAG_CAN_MULTI_CONN);
	ck_assert(!(tflags & NBD_FLAG_READ_ONLY));
	ck_assert_uint_eq(reply_at(&s, 3, &d, &l2), NBD_REP_INFO);
	ck_assert_uint_eq(get_u16(d), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(get_u32(d + 2), 1);
	ck_assert_uint_eq(get_u32(d + 6), 4096);
	ck_assert_uint_eq(get_u32(d + 10), NBD_MAX_PAYLOAD);
	ck_assert_uint_eq(reply_at(&s, 4, NULL, NULL), NBD_REP_ACK);

	ck_assert_int_eq(send_opt(&s, NBD_OPT_GO, p, len), NBD_HS_READY);
	ck_assert_uint_eq(reply_at(&s, 0, &d, &l1), NBD_REP_INFO);
	ck_assert(memcmp(d, info_export, 12) == 0);
	ck_assert_ptr_eq(s.export, &ex_disk);
	ck_assert_uint_eq(nbd_req_hdr_size(&s), 28);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_go_unknown_export_and_ro)
{
	struct nbd_session s;
	uint8_t p[64];
	uint32_t len;
	const uint8_t *d;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	len = info_go_payload(p, "nope");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_GO, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_UNKNOWN);
	/* Malformed: the info count does not match the length. */
	len = info_go_payload(p, "ro");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_GO, p, len - 1), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_INVALID);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_GO, p, len), NBD_HS_READY);
	ck_assert_uint_eq(reply_at(&s, 0, &d, NULL), NBD_REP_INFO);
	ck_assert(get_u16(d + 10) & NBD_FLAG_READ_ONLY);
	ck_assert(!(get_u16(d + 10) & NBD_FLAG_SEND_TRIM));
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_export_name)
{
	struct nbd_session s;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXPORT_NAME, (const uint8_t *)"x", 1),
			 NBD_HS_FAIL);
	nbd_session_fini(&s);

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXPORT_NAME, NULL, 0), NBD_HS_READY);
	ck_assert_uint_eq(s.out_len, 8 + 2 + 124);
	ck_assert_uint_eq(get_u64(s.out), 1 << 20);
	nbd_session_fini(&s);

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXPORT_NAME, (const uint8_t *)"ro", 2),
			 NBD_HS_READY);
	ck_assert_uint_eq(s.out_len, 10);
	ck_assert_ptr_eq(s.export, &ex_ro);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_meta_context)
{
	struct nbd_session s;
	uint8_t p[128];
	uint32_t len, l;
	const uint8_t *d;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	len = meta_payload(p, "disk", "base:");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_LIST_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_INVALID);

	ck_assert_int_eq(send_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_MORE);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_LIST_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_count(&s), 2);
	ck_assert_uint_eq(reply_at(&s, 0, &d, &l), NBD_REP_META_CONTEXT);
	ck_assert_uint_eq(l, 4 + 15);
	ck_assert(memcmp(d + 4, "base:allocation", 15) == 0);
	ck_assert(!s.meta_alloc);       /* LIST selects nothing */

	len = meta_payload(p, "disk", "qemu:dirty-bitmap:x");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_count(&s), 1);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ACK);
	ck_assert(!s.meta_alloc);

	len = meta_payload(p, "disk", "base:allocation");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, &d, NULL), NBD_REP_META_CONTEXT);
	ck_assert_uint_eq(get_u32(d), NBD_META_BASE_ALLOCATION_ID);
	ck_assert(s.meta_alloc);

	/* A truncated query list is malformed, and a failed SET still drops
	 * the earlier selection (spec: it replaces all previously-set
	 * contexts, including when this command fails). */
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len - 3), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_INVALID);
	ck_assert(!s.meta_alloc);
	len = meta_payload(p, "disk", "base:allocation");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert(s.meta_alloc);
	len = meta_payload(p, "nope", "base:allocation");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_UNKNOWN);
	ck_assert(!s.meta_alloc);
	len = meta_payload(p, "disk", "base:allocation");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	ck_assert(s.meta_alloc);

	/* GO on another export drops the selection. */
	len = info_go_payload(p, "ro");
	ck_assert_int_eq(send_opt(&s, NBD_OPT_GO, p, len), NBD_HS_READY);
	ck_assert(!s.meta_alloc);
	nbd_session_fini(&s);
}
END_TEST

/* ---- transmission ---- */

static void go_session(struct nbd_session *s, bool structured, bool extended,
		       bool meta, const char *name)
{
	uint8_t p[128];
	uint32_t len;

	start(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	if (extended) {
		ck_assert_int_eq(send_opt(s, NBD_OPT_EXTENDED_HEADERS, NULL, 0), NBD_HS_MORE);
		ck_assert_uint_eq(reply_at(s, 0, NULL, NULL), NBD_REP_ACK);
	} else if (structured) {
		ck_assert_int_eq(send_opt(s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_MORE);
	}
	if (meta) {
		len = meta_payload(p, name, "base:allocation");
		ck_assert_int_eq(send_opt(s, NBD_OPT_SET_META_CONTEXT, p, len), NBD_HS_MORE);
	}
	len = info_go_payload(p, name);
	ck_assert_int_eq(send_opt(s, NBD_OPT_GO, p, len), NBD_HS_READY);
}

static struct nbd_req mkreq(uint16_t type, uint16_t flags, uint64_t off,
			    uint64_t len)
{
	struct nbd_req r = { .flags = flags, .type = type, .cookie = 0x1122334455667788ull,
			     .offset = off, .length = len };

	r.payload = type == NBD_CMD_WRITE ? len : 0;
	return r;
}

START_TEST(test_request_checks)
{
	struct nbd_session s;
	struct nbd_req r;
	const uint64_t size = 1 << 20;

	go_session(&s, false, false, false, "disk");
	r = mkreq(NBD_CMD_READ, 0, size - 512, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), 0);
	r = mkreq(NBD_CMD_READ, 0, size - 512, 513);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_READ, 0, UINT64_MAX - 10, 100);   /* wraps */
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_WRITE, 0, size, 1);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_ENOSPC);
	r = mkreq(NBD_CMD_WRITE_ZEROES, 0, size, 1);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_ENOSPC);
	r = mkreq(NBD_CMD_TRIM, 0, size, 1);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512);    /* DF needs structured */
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1ull);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1ull);
	ck_assert_int_eq(nbd_req_check(&s, &r), -EPROTO);   /* cannot receive */
	r = mkreq(NBD_CMD_BLOCK_STATUS, 0, 0, 512);          /* no context */
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(99, 0, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512); /* flag misuse */
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO |
		  NBD_CMD_FLAG_FUA, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), 0);
	nbd_session_fini(&s);

	go_session(&s, true, false, true, "disk");
	r = mkreq(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1ull);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	r = mkreq(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, NBD_MAX_PAYLOAD + 1ull);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EOVERFLOW);
	r = mkreq(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), 0);
	r = mkreq(NBD_CMD_BLOCK_STATUS, 0, 0, 0);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);
	nbd_session_fini(&s);

	go_session(&s, false, false, false, "ro");
	r = mkreq(NBD_CMD_WRITE, 0, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EPERM);
	r = mkreq(NBD_CMD_TRIM, 0, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EPERM);
	r = mkreq(NBD_CMD_WRITE_ZEROES, 0, 0, 512);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EPERM);
	r = mkreq(NBD_CMD_READ, 0, 0, 4096);
	ck_assert_int_eq(nbd_req_check(&s, &r), 0);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_compact_replies)
{
	struct nbd_session s;
	struct nbd_req r = mkreq(NBD_CMD_WRITE, 0, 0, 512);
	uint8_t b[64];
	size_t n;

	go_session(&s, true, false, false, "disk");
	n = nbd_reply_final(&s, b, &r, NBD_EIO);    /* simple for non-READ */
	ck_assert_uint_eq(n, 16);
	ck_assert_uint_eq(get_u32(b), NBD_SIMPLE_REPLY_MAGIC);
	ck_assert_uint_eq(get_u32(b + 4), NBD_EIO);
	ck_assert_uint_eq(get_u64(b + 8), r.cookie);
	r = mkreq(NBD_CMD_READ, 0, 0, 512);
	n = nbd_reply_final(&s, b, &r, NBD_EINVAL); /* READ errors: a chunk */
	ck_assert_uint_eq(n, 20 + 6);
	ck_assert_uint_eq(get_u32(b), NBD_STRUCT_REPLY_MAGIC);
	ck_assert_uint_eq(get_u16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_u16(b + 6), NBD_REPLY_TYPE_ERROR);
	ck_assert_uint_eq(get_u32(b + 16), 6);
	ck_assert_uint_eq(get_u32(b + 20), NBD_EINVAL);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_extended_headers)
{
	struct nbd_session s;
	uint8_t b[256];
	struct nbd_req r;
	struct export_extent ext[2] = { { 5ull << 32, 0 }, { 4096, 3 } };
	size_t n;

	start(&s, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXTENDED_HEADERS, (const uint8_t *)"x", 1),
			 NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_INVALID);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXTENDED_HEADERS, NULL, 0), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ACK);
	ck_assert(s.extended && s.structured);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_EXT_HEADER_REQD);
	ck_assert_int_eq(send_opt(&s, NBD_OPT_EXTENDED_HEADERS, NULL, 0), NBD_HS_MORE);
	ck_assert_uint_eq(reply_at(&s, 0, NULL, NULL), NBD_REP_ERR_INVALID);
	nbd_session_fini(&s);

	go_session(&s, true, true, true, "disk");
	ck_assert_uint_eq(nbd_req_hdr_size(&s), 32);
	/* An extended request with a 64-bit length. */
	put_u32(b, NBD_EXT_REQUEST_MAGIC);
	put_u16(b + 4, NBD_CMD_FLAG_REQ_ONE);
	put_u16(b + 6, NBD_CMD_BLOCK_STATUS);
	put_u64(b + 8, 77);
	put_u64(b + 16, 0);
	put_u64(b + 24, 1ull << 40);
	ck_assert_int_eq(nbd_req_decode(&s, b, &r), 0);
	ck_assert_uint_eq(r.length, 1ull << 40);
	ck_assert_uint_eq(r.payload, 0);
	ck_assert_uint_eq(r.cookie, 77);
	ck_assert_int_eq(nbd_req_check(&s, &r), NBD_EINVAL);   /* past the end */
	/* The compact magic is a protocol violation now. */
	put_u32(b, NBD_REQUEST_MAGIC);
	ck_assert_int_eq(nbd_req_decode(&s, b, &r), -EPROTO);

	/* Success without payload: an extended NONE chunk, never simple. */
	r = mkreq(NBD_CMD_FLUSH, 0, 0, 0);
	n = nbd_reply_final(&s, b, &r, 0);
	ck_assert_uint_eq(n, 32);
	ck_assert_uint_eq(get_u32(b), NBD_EXT_REPLY_MAGIC);
	ck_assert_uint_eq(get_u16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_u16(b + 6), NBD_REPLY_TYPE_NONE);
	ck_assert_uint_eq(get_u64(b + 24), 0);
	n = nbd_reply_final(&s, b, &r, NBD_ENOSPC);
	ck_assert_uint_eq(n, 32 + 6);
	ck_assert_uint_eq(get_u16(b + 6), NBD_REPLY_TYPE_ERROR);
	ck_assert_uint_eq(get_u32(b + 32), NBD_ENOSPC);

	/* Block status: BLOCK_STATUS_EXT with 64-bit extent lengths. */
	r = mkreq(NBD_CMD_BLOCK_STATUS, 0, 0, 6ull << 32);
	n = nbd_reply_block_status(&s, b, &r, ext, 2);
	ck_assert_uint_eq(n, 32 + 8 + 2 * 16);
	ck_assert_uint_eq(get_u16(b + 6), NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
	ck_assert_uint_eq(get_u64(b + 24), 8 + 2 * 16);
	ck_assert_uint_eq(get_u32(b + 32), NBD_META_BASE_ALLOCATION_ID);
	ck_assert_uint_eq(get_u32(b + 36), 2);
	ck_assert_uint_eq(get_u64(b + 40), 5ull << 32);
	ck_assert_uint_eq(get_u64(b + 56 + 8), 3);
	nbd_session_fini(&s);
}
END_TEST

START_TEST(test_read_chunks)
{
	uint8_t *buf = calloc(1, 64 * 1024);
	struct nbd_read_chunk ch[16];
	unsigned n, i;
	uint64_t total = 0;

	/* At an unaligned export offset (blocks start at relative 100):
	 * data (100) | hole (2 blocks) | data (1 block) | hole (1 block) |
	 * data (the partial tail block). */
	memset(buf, 0xaa, 100);
	memset(buf + 2 * 4096 + 600, 0xbb, 10);
	n = nbd_read_chunks(buf, 4096 - 100, 5 * 4096, false, ch, 16);
	ck_assert_uint_eq(n, 5);
	ck_assert(!ch[0].hole && ch[0].offset == 0 && ch[0].length == 100);
	ck_assert(ch[1].hole && ch[1].offset == 100 && ch[1].length == 2 * 4096);
	ck_assert(!ch[2].hole && ch[2].length == 4096);
	ck_assert(ch[3].hole && ch[3].length == 4096);
	ck_assert(!ch[4].hole && ch[4].length == 4096 - 100);
	for (i = 0; i < n; i++)
		total += ch[i].length;
	ck_assert_uint_eq(total, 5 * 4096);

	/* DF: one data chunk whatever the content. */
	n = nbd_read_chunks(buf, 0, 5 * 4096, true, ch, 16);
	ck_assert_uint_eq(n, 1);
	ck_assert(!ch[0].hole && ch[0].length == 5 * 4096);

	/* Alternating blocks beyond the chunk budget: the rest is data. */
	memset(buf, 0, 64 * 1024);
	for (i = 0; i < 16; i += 2)
		buf[i * 4096] = 1;
	n = nbd_read_chunks(buf, 0, 64 * 1024, false, ch, 4);
	ck_assert_uint_eq(n, 4);
	ck_assert(!ch[3].hole);
	ck_assert_uint_eq(ch[3].offset + ch[3].length, 64 * 1024);
	free(buf);
}
END_TEST

START_TEST(test_errno_map)
{
	ck_assert_uint_eq(nbd_errno_to_nbd(0, 0), 0);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EROFS, 0), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EDQUOT, 0), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EFBIG, 0), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENXIO, 0), NBD_EIO);
	ck_assert_uint_eq(nbd_errno_to_nbd(EINVAL, 0), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ESHUTDOWN, 0), NBD_ESHUTDOWN);
	/* Spec: "The server SHOULD NOT return NBD_ENOTSUP except as documented
	 * in response to NBD_CMD_WRITE_ZEROES when NBD_CMD_FLAG_FAST_ZERO is
	 * supported" (and MUST NOT without the flag when it advertised
	 * FAST_ZERO); likewise NBD_EOVERFLOW only for DF reads. */
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOTSUP, NBD_CMD_FLAG_FAST_ZERO |
					   NBD_CMD_FLAG_NO_HOLE), NBD_ENOTSUP);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOTSUP, 0), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EOPNOTSUPP, NBD_CMD_FLAG_NO_HOLE), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EOVERFLOW, NBD_CMD_FLAG_DF), NBD_EOVERFLOW);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EOVERFLOW, NBD_CMD_FLAG_FUA), NBD_EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-proto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_bad_client_flags);
	tcase_add_test(tc, test_unknown_option_continues);
	tcase_add_test(tc, test_option_too_big_is_skipped);
	tcase_add_test(tc, test_info_and_go_agree);
	tcase_add_test(tc, test_go_unknown_export_and_ro);
	tcase_add_test(tc, test_export_name);
	tcase_add_test(tc, test_meta_context);
	tcase_add_test(tc, test_request_checks);
	tcase_add_test(tc, test_compact_replies);
	tcase_add_test(tc, test_extended_headers);
	tcase_add_test(tc, test_read_chunks);
	tcase_add_test(tc, test_errno_map);
	suite_add_tcase(s, tc);
	return check_run(s);
}
