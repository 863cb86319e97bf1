/*
 * proto.h — the NBD protocol as a sans-I/O state machine: bytes in, replies
 * out, no sockets.  The connection code (conn.c) feeds it what it received
 * and sends what it produced; the fuzz target feeds it arbitrary bytes.
 *
 * Two phases:
 *
 *   handshake      nbd_session_init() queues the server greeting in s->out;
 *                  nbd_hs_input() consumes client bytes (client flags, then
 *                  options) and appends option replies to s->out.  It says
 *                  when the session has entered transmission (NBD_HS_READY),
 *                  must be closed after s->out is sent (NBD_HS_CLOSE), or
 *                  must be dropped at once (NBD_HS_FAIL).
 *
 *   transmission   nbd_req_decode() parses one request header (compact 28
 *                  bytes, or 32 with extended headers); nbd_req_check()
 *                  validates it against the export and the negotiated
 *                  features and returns the NBD error to reply with (or
 *                  -EPROTO: disconnect); the nbd_reply_*() encoders write
 *                  reply headers in whichever form was negotiated (simple,
 *                  structured, extended).  Payloads (read data, write data)
 *                  never pass through here: the caller places them next to
 *                  the headers in its iovecs.
 *
 * Everything on the wire is big-endian.  Every length read from the client is
 * checked before it is used; option payloads are bounded by NBD_MAX_OPTION
 * (larger ones are skipped and answered NBD_REP_ERR_TOO_BIG).
 */
#ifndef NBDSRV_PROTO_H
#define NBDSRV_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct export;

/* ---- wire constants (NetworkBlockDevice/nbd doc/proto.md) ---- */
#define NBD_MAGIC                 0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_OPT_MAGIC             0x49484156454f5054ull   /* "IHAVEOPT" */
#define NBD_REP_MAGIC             0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC         0x25609513u
#define NBD_EXT_REQUEST_MAGIC     0x21e41c71u
#define NBD_SIMPLE_REPLY_MAGIC    0x67446698u
#define NBD_STRUCT_REPLY_MAGIC    0x668e33efu
#define NBD_EXT_REPLY_MAGIC       0x6e8a278cu

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_RESIZE      (1u << 9)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

#define NBD_REP_ACK               1u
#define NBD_REP_SERVER            2u
#define NBD_REP_INFO              3u
#define NBD_REP_META_CONTEXT      4u
#define NBD_REP_ERR(n)            (0x80000000u | (n))
#define NBD_REP_ERR_UNSUP         NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY        NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID       NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM      NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD      NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN       NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN      NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG       NBD_REP_ERR(9)
#define NBD_REP_ERR_EXT_HEADER_REQD NBD_REP_ERR(10)

#define NBD_INFO_EXPORT           0
#define NBD_INFO_NAME             1
#define NBD_INFO_DESCRIPTION      2
#define NBD_INFO_BLOCK_SIZE       3

#define NBD_CMD_READ              0
#define NBD_CMD_WRITE             1
#define NBD_CMD_DISC              2
#define NBD_CMD_FLUSH             3
#define NBD_CMD_TRIM              4
#define NBD_CMD_CACHE             5
#define NBD_CMD_WRITE_ZEROES      6
#define NBD_CMD_BLOCK_STATUS      7

#define NBD_CMD_FLAG_FUA          (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE      (1u << 1)
#define NBD_CMD_FLAG_DF           (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE      (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO    (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN  (1u << 5)

#define NBD_REPLY_FLAG_DONE       (1u << 0)
#define NBD_REPLY_TYPE_NONE       0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR      ((1u << 15) + 1)

#define NBD_STATE_HOLE            (1u << 0)
#define NBD_STATE_ZERO            (1u << 1)

/* NBD error numbers (not the host's errno values). */
#define NBD_EPERM       1
#define NBD_EIO         5
#define NBD_ENOMEM      12
#define NBD_EINVAL      22
#define NBD_ENOSPC      28
#define NBD_EOVERFLOW   75
#define NBD_ENOTSUP     95
#define NBD_ESHUTDOWN   108

/* ---- limits ---- */
#define NBD_MAX_OPTION    (64u * 1024)        /* option payload we accept */
#define NBD_MAX_STRING    4096u               /* names, queries */
#define NBD_MAX_PAYLOAD   (64u * 1024 * 1024) /* READ/WRITE length */
#define NBD_MIN_BLOCK     1u
#define NBD_PREF_BLOCK    4096u
#define NBD_META_BASE_ALLOCATION_ID 1u        /* our one metadata context */
#define NBD_HDR_MAX       32u                 /* longest reply/request header */

/* ---- handshake ---- */

enum nbd_phase {
	NBD_PHASE_CFLAGS,       /* waiting for the client's 32-bit flags */
	NBD_PHASE_OPTION,       /* waiting for an option header + payload */
	NBD_PHASE_SKIP,         /* discarding an oversized option payload */
	NBD_PHASE_TRANSMISSION, /* requests */
	NBD_PHASE_DEAD,         /* nothing more is accepted */
};

enum nbd_hs_result {
	NBD_HS_MORE,            /* send s->out (if any), then feed more input */
	NBD_HS_READY,           /* send s->out; the session is in transmission */
	NBD_HS_CLOSE,           /* send s->out, then close (soft disconnect) */
	NBD_HS_FAIL,            /* protocol violation: close at once */
};

/* Exports found by name when a client asks, besides the static list (the
 * daemon's volumes and snapshots: they come and go while it runs).  All
 * three are called on the session's thread. */
struct nbd_resolver {
	/* A new export called name (NUL-terminated), owned by the session
	 * until release(); NULL when there is none. */
	struct export *(*open)(void *arg, const char *name);
	void (*release)(void *arg, struct export *e);
	/* Call add(ctx, name) for every export open() would find. */
	void (*list)(void *arg, void (*add)(void *ctx, const char *name), void *ctx);
	void *arg;
};

struct nbd_session {
	enum nbd_phase phase;
	const struct nbd_resolver *resolver; /* optional, borrowed; set after
	                                      * nbd_session_init() */
	bool export_owned;      /* export came from the resolver: released by
	                         * nbd_session_fini() */
	char *meta_name;        /* SET_META_CONTEXT's export when it is a
	                         * resolved one (meta_export == SIZE_MAX) */
	struct export *const *exports; /* borrowed; exports[0] is the default */
	size_t n_exports;
	struct export *export;  /* chosen export (transmission), borrowed */
	bool no_zeroes;         /* client set NBD_FLAG_C_NO_ZEROES */
	bool structured;        /* structured replies negotiated */
	bool extended;          /* extended headers negotiated (implies structured) */
	bool meta_alloc;        /* base:allocation selected ... */
	size_t meta_export;     /* ... for this export index */
	uint32_t skip_opt;      /* option whose payload is being skipped */
	uint64_t skip_left;     /* bytes still to discard in NBD_PHASE_SKIP */
	uint8_t *out;           /* bytes to send, owned (malloc) */
	size_t out_len, out_cap;
	bool out_oom;           /* an append failed: the session must close */
};

/* Start a session over exports[0..n) (borrowed for the session's lifetime)
 * and queue the greeting in s->out.  Returns 0 or -ENOMEM. */
int nbd_session_init(struct nbd_session *s, struct export *const *exports,
		     size_t n_exports);
/* Free s->out and release a resolved export; the session may not be used
 * afterwards. */
void nbd_session_fini(struct nbd_session *s);
/* Drop the first n bytes of s->out (they were sent). */
void nbd_session_out_consume(struct nbd_session *s, size_t n);
/* Consume handshake bytes from in[0..len), set *used to how many were
 * consumed (the rest is an incomplete message, or transmission-phase bytes
 * once NBD_HS_READY is returned), append replies to s->out. */
enum nbd_hs_result nbd_hs_input(struct nbd_session *s, const uint8_t *in,
				size_t len, size_t *used);
/* Transmission flags (NBD_FLAG_*) of export e as this session sees it. */
uint16_t nbd_export_tflags(const struct nbd_session *s, const struct export *e);

/* ---- transmission ---- */

struct nbd_req {
	uint16_t flags;         /* NBD_CMD_FLAG_* */
	uint16_t type;          /* NBD_CMD_* */
	uint64_t cookie;
	uint64_t offset;
	uint64_t length;        /* effect length */
	uint64_t payload;       /* bytes of payload that follow the header */
};

/* Size of a request header in this session (28 or 32). */
size_t nbd_req_hdr_size(const struct nbd_session *s);
/* Decode one request header from p (nbd_req_hdr_size() bytes).  Returns 0,
 * or -EPROTO when the magic is wrong (the stream is out of sync). */
int nbd_req_decode(const struct nbd_session *s, const uint8_t *p,
		   struct nbd_req *r);
/* Validate r against the session and its export.  Returns 0 (go ahead), an
 * NBD error number (reply with it; the payload must still be consumed), or
 * -EPROTO when the request cannot be received at all (disconnect). */
int nbd_req_check(const struct nbd_session *s, const struct nbd_req *r);
/* Map a -errno (or errno) from an export, for a request with cmd_flags, to
 * the NBD error number.  The one place where host errors become protocol
 * errors: ENOTSUP only for FAST_ZERO, EOVERFLOW only for DF (else EINVAL). */
uint32_t nbd_errno_to_nbd(int err, uint16_t cmd_flags);

/* Final reply to a request without reply payload: success (nbd_err == 0)
 * or an error.  Writes at most NBD_HDR_MAX + 6 bytes to buf, returns the
 * count. */
size_t nbd_reply_final(const struct nbd_session *s, uint8_t *buf,
		       const struct nbd_req *r, uint32_t nbd_err);
/* A successful simple reply header that precedes READ data (16 bytes). */
size_t nbd_reply_simple_hdr(uint8_t *buf, uint64_t cookie);
/* A structured/extended chunk header announcing payload_len bytes. */
size_t nbd_reply_chunk_hdr(const struct nbd_session *s, uint8_t *buf,
			   uint16_t flags, uint16_t type,
			   const struct nbd_req *r, uint64_t payload_len);

/* A piece of a READ reply: data to send from the buffer, or a hole. */
struct nbd_read_chunk {
	uint64_t offset;        /* relative to the request's offset */
	uint64_t length;
	bool hole;
};
/* Split a READ of len bytes at export offset off, read into buf, into at
 * most max chunks: runs of zeroes that cover whole 4 KiB-aligned blocks
 * become holes, unless df (one chunk only).  Returns the chunk count
 * (>= 1 when len > 0). */
unsigned nbd_read_chunks(const uint8_t *buf, uint64_t off, uint64_t len,
			 bool df, struct nbd_read_chunk *out, unsigned max);
/* Encode the header + payload prefix of one READ chunk into buf (at most
 * NBD_HDR_MAX + 12 bytes): OFFSET_DATA (the data itself follows, sent by the
 * caller) or OFFSET_HOLE.  done sets NBD_REPLY_FLAG_DONE. */
size_t nbd_reply_read_chunk(const struct nbd_session *s, uint8_t *buf,
			    const struct nbd_req *r,
			    const struct nbd_read_chunk *c, bool done);

struct export_extent;
/* Encode a complete BLOCK_STATUS reply (base:allocation) for n extents into
 * buf, which must hold nbd_reply_block_status_size(n) bytes.  Returns the
 * byte count. */
size_t nbd_reply_block_status(const struct nbd_session *s, uint8_t *buf,
			      const struct nbd_req *r,
			      const struct export_extent *ext, unsigned n);
size_t nbd_reply_block_status_size(unsigned n);

#endif /* NBDSRV_PROTO_H */
