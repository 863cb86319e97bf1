/*
 * fuzz_nbd_handshake.c — the whole NBD session state machine from arbitrary
 * client bytes: the handshake (options, in arbitrary pieces), then the
 * requests that follow it, each decoded, validated and answered with the
 * reply encoders (read chunks over the request's own bytes, block status
 * from fabricated extents), exactly as conn.c drives them.
 *
 * Input: byte 0 picks how the stream is split into pieces (exercising
 * incomplete messages); the rest is the client's byte stream.
 */
#include "nbdsrv/export.h"
#include "nbdsrv/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct export ex_default = {
	.name = (char *)"disk", .desc = (char *)"a disk", .size = 1ull << 30,
	.flags = EXPORT_CAN_TRIM | EXPORT_CAN_ZERO | EXPORT_CAN_FAST_ZERO |
		 EXPORT_CAN_CACHE | EXPORT_CAN_EXTENTS | EXPORT_CAN_MULTI_CONN,
	.pref_block = 4096,
};
static struct export ex_ro = {
	.name = (char *)"ro", .size = 12345, .flags = EXPORT_READ_ONLY,
};
static struct export *const exports[] = { &ex_default, &ex_ro };

static uint8_t scratch[NBD_HDR_MAX * 64 + 16 * 64 + 64];

static void answer(struct nbd_session *s, const struct nbd_req *r, int err,
		   const uint8_t *payload, size_t plen)
{
	struct nbd_read_chunk ch[16];
	struct export_extent ext[8];
	unsigned n, i;
	size_t off = 0;

	if (err || (r->type != NBD_CMD_READ && r->type != NBD_CMD_BLOCK_STATUS)) {
		nbd_reply_final(s, scratch, r, (uint32_t)err);
		return;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		for (i = 0; i < 8; i++)
			ext[i] = (struct export_extent){ 4096u << i, i & 1 ? 3 : 0 };
		nbd_reply_block_status(s, scratch, r, ext, 8);
		return;
	}
	/* Use the client's own bytes as "read data" for the chunk splitter. */
	n = nbd_read_chunks(payload, r->offset, MIN(r->length, (uint64_t)plen),
			    r->flags & NBD_CMD_FLAG_DF, ch, 16);
	for (i = 0; i < n; i++) {
		if (ch[i].offset + ch[i].length > plen)
			abort();
		if (i && ch[i].offset != ch[i - 1].offset + ch[i - 1].length)
			abort();
		off += nbd_reply_read_chunk(s, scratch + off % (NBD_HDR_MAX * 32),
					    r, &ch[i], i == n - 1);
	}
	if (!s->structured)
		nbd_reply_simple_hdr(scratch, r->cookie);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_session s;
	size_t pos = 1, piece;
	enum nbd_hs_result r = NBD_HS_MORE;
	uint8_t *buf;
	size_t have = 0;

	if (size < 1)
		return 0;
	piece = (data[0] & 31) + 1;
	if (nbd_session_init(&s, exports, 2) < 0)
		return 0;
	/* Feed the handshake in pieces, keeping unconsumed bytes like the
	 * connection's receive buffer does. */
	buf = malloc(size);
	while (r == NBD_HS_MORE && pos < size) {
		size_t n = MIN(piece, size - pos), used = 0;

		memcpy(buf + have, data + pos, n);
		have += n;
		pos += n;
		r = nbd_hs_input(&s, buf, have, &used);
		if (used > have)
			abort();
		memmove(buf, buf + used, have - used);
		have -= used;
		nbd_session_out_consume(&s, s.out_len);
	}
	if (r == NBD_HS_READY) {
		size_t hsz = nbd_req_hdr_size(&s), p = 0;

		memcpy(buf + have, data + pos, size - pos);
		have += size - pos;
		while (have - p >= hsz) {
			struct nbd_req req;
			int err;
			size_t plen;

			if (nbd_req_decode(&s, buf + p, &req) < 0)
				break;
			p += hsz;
			err = nbd_req_check(&s, &req);
			if (err < 0)
				break;
			if (req.type == NBD_CMD_DISC)
				break;
			plen = have - p;
			if (req.payload) {
				if (req.payload > plen)
					break;
				plen = req.payload;
			}
			if (!err && req.type != NBD_CMD_FLUSH &&
			    req.offset + req.length > s.export->size)
				abort();        /* check let a bad range through */
			answer(&s, &req, err, buf + p, plen);
			p += req.payload;
		}
	}
	free(buf);
	nbd_session_fini(&s);
	return 0;
}
