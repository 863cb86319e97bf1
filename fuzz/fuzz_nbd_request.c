/*
 * fuzz_nbd_request.c — the transmission phase alone: a session already in
 * transmission (byte 0 picks simple / structured / extended replies, the
 * base:allocation context and a writable or read-only export), then a
 * stream of requests, each decoded, validated and answered with the reply
 * encoders.  Checks the invariants the connection code relies on: a request
 * that passes validation lies inside the export and within the payload
 * limit; read chunks tile the request exactly; encoded replies fit the
 * buffers sized for them.
 */
#include "nbdsrv/export.h"
#include "nbdsrv/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct export ex_rw = {
	.name = (char *)"rw", .size = (1ull << 40) + 12345,
	.flags = EXPORT_CAN_TRIM | EXPORT_CAN_ZERO | EXPORT_CAN_FAST_ZERO |
		 EXPORT_CAN_CACHE | EXPORT_CAN_EXTENTS,
};
static struct export ex_ro = { .name = (char *)"ro", .size = 1 << 20,
			       .flags = EXPORT_READ_ONLY };
static struct export *const exports[] = { &ex_rw, &ex_ro };

#define MAX_EXT 8
static uint8_t hdrs[16 * (NBD_HDR_MAX + 12)];
static uint8_t bs[NBD_HDR_MAX + 8 + 16 * MAX_EXT];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_session s;
	size_t p = 1, hsz;
	uint8_t mode;

	if (size < 1)
		return 0;
	mode = data[0];
	if (nbd_session_init(&s, exports, 2) < 0)
		return 0;
	s.phase = NBD_PHASE_TRANSMISSION;
	s.structured = mode & 1;
	s.extended = mode & 2;
	if (s.extended)
		s.structured = true;
	s.export = exports[(mode >> 2) & 1];
	s.meta_alloc = mode & 8;
	hsz = nbd_req_hdr_size(&s);

	while (size - p >= hsz) {
		struct nbd_req r;
		int err;

		if (nbd_req_decode(&s, data + p, &r) < 0)
			break;
		p += hsz;
		err = nbd_req_check(&s, &r);
		if (err < 0) {
			if (r.payload <= NBD_MAX_PAYLOAD)
				abort();        /* only oversized payloads disconnect */
			break;
		}
		if (r.payload > NBD_MAX_PAYLOAD)
			abort();
		if (r.type == NBD_CMD_DISC)
			break;
		if (!err && r.type != NBD_CMD_FLUSH &&
		    (r.offset > s.export->size || r.length > s.export->size - r.offset))
			abort();
		if (!err && (r.type == NBD_CMD_WRITE || r.type == NBD_CMD_TRIM ||
			     r.type == NBD_CMD_WRITE_ZEROES) &&
		    (s.export->flags & EXPORT_READ_ONLY))
			abort();
		if (!err && r.type == NBD_CMD_READ && r.length > NBD_MAX_PAYLOAD)
			abort();
		if (!err && r.type == NBD_CMD_READ && r.length) {
			/* Pretend the data is the rest of the input (zero padded). */
			size_t have = size - p;
			uint64_t n = MIN(r.length, (uint64_t)(1 << 20));
			uint8_t *buf = calloc(1, n);
			struct nbd_read_chunk ch[16];
			unsigned k, i;
			uint64_t next = 0;
			size_t off = 0;

			memcpy(buf, data + p, MIN(have, n));
			k = nbd_read_chunks(buf, r.offset, n, r.flags & NBD_CMD_FLAG_DF,
					    ch, 16);
			if (k == 0 || k > 16)
				abort();
			for (i = 0; i < k; i++) {
				if (ch[i].offset != next || !ch[i].length)
					abort();
				next += ch[i].length;
				off += nbd_reply_read_chunk(&s, hdrs + off, &r, &ch[i],
							    i + 1 == k);
			}
			if (next != n || off > sizeof(hdrs))
				abort();
			free(buf);
		} else if (!err && r.type == NBD_CMD_BLOCK_STATUS) {
			struct export_extent ext[MAX_EXT];
			unsigned i, n = (unsigned)(r.length % MAX_EXT) + 1;

			for (i = 0; i < n; i++)
				ext[i] = (struct export_extent){ r.length / n + 1, i & 3 };
			if (nbd_reply_block_status(&s, bs, &r, ext, n) >
			    nbd_reply_block_status_size(n))
				abort();
		} else {
			nbd_reply_final(&s, hdrs, &r, (uint32_t)err);
		}
		p += MIN((uint64_t)(size - p), r.payload);
	}
	nbd_session_fini(&s);
	return 0;
}
