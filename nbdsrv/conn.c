/*
 * conn.c — one NBD client connection on a reactor: io_uring receive and
 * send, the request table, backpressure, and teardown.
 *
 * Contents: 1. request slots  2. replies  3. sending  4. receiving and
 * parsing  5. teardown.
 *
 * Data flow
 *
 *   recv ─► rbuf ─► nbd_hs_input() (handshake) ─► s.out ─► send
 *                └► nbd_req_decode/check ─► req ─► export op ─► req_done()
 *                                                           │
 *   sendmsg ◄── siov[] (header+data of many replies) ◄── ready list
 *
 *   One recv and at most one send (sendmsg, or the splice of a large read's
 *   pipe right after its header) are in flight per connection.  A recv
 *   fills the 256 KiB receive buffer; every complete request in it is parsed
 *   at once.  A WRITE payload is copied out of the buffer when it is there
 *   already; otherwise the rest is received straight into the request's
 *   buffer (MSG_WAITALL).  Replies become ready in completion order; the
 *   reactor calls conn_flush() once per loop iteration, so every reply that
 *   completed in one batch of CQEs leaves in one sendmsg (reply headers and
 *   read data side by side in the iovec, no copy).
 *
 * Large reads (export ops->map / ops->splice_fd, the file export)
 *   A READ of CONN_MAP_MIN / CONN_SPLICE_MIN bytes or more skips the copy
 *   of the page cache into our buffer.  Measured on loopback (bench/nbd.md,
 *   2026-11-26), which of two ways pays depends on the transport:
 *   - TCP: when mincore() says every page is cached, the reply's data iovec
 *     points into the export's read-only map and the sendmsg copies the
 *     pages into the socket: half the server's CPU per GiB, and the client
 *     reads back cache-hot data.  (Splicing the pages into TCP instead left
 *     the receiver copying cold page-cache memory: the single-threaded
 *     client's CPU per GiB doubled and throughput fell.)  A page evicted
 *     between mincore() and the send is faulted in by the sendmsg.  A range
 *     no longer inside the file (shrunk by another process) takes the
 *     normal read, which answers with an error and keeps the connection
 *     (ops->map checks the size); only a truncate racing the send itself
 *     fails it (-EFAULT: the connection breaks, as the header is already
 *     out).  Uncached ranges take the normal read.
 *   - unix socket: splice(file -> a pipe of the request slot) on io-wq
 *     when the read completes, then the header by sendmsg (MSG_MORE) and
 *     splice(pipe -> socket): no copy by the server at all (5x less CPU per
 *     GiB, 2x the throughput).  A pipe must hold every page of the range
 *     (without CAP_SYS_RESOURCE pipes stop at fs.pipe-max-size, 1 MiB by
 *     default), at most CONN_MAX_PIPES per connection; a pipe is reused
 *     only when empty and closed otherwise.  A splice that fails or comes
 *     up short falls back to the normal read, which reports errors.
 *   Either way the reply is one data chunk: no zero detection (the data is
 *   not in our memory), and the bytes are those of the page cache when the
 *   send runs, not when the reply became ready — a read that overlaps a
 *   write in time may see either, as the protocol allows.  So that sparse
 *   files still read as HOLE chunks with structured replies, a range with
 *   a hole in it (ops->all_data: one lseek SEEK_HOLE) takes the normal
 *   read, whose reply is built by zero detection.
 *
 * Backpressure
 *   At most CONN_MAX_REQS requests and CONN_MAX_BYTES of request/reply data
 *   are held per connection (a request counts from parse until its reply is
 *   sent).  When full, parsing stops and no recv is armed: the client's
 *   further requests wait in the socket, then in the client.  A single
 *   request may exceed the byte budget when nothing else is in flight.
 *
 * Teardown
 *   input_done: no more requests will be parsed (EOF, DISC, shutdown) —
 *   requests in flight still complete and their replies are sent.
 *   broken: nothing more is sent (send error, protocol violation) —
 *   requests in flight still complete, their replies are dropped.
 *   Either way the socket is closed only when no export op, recv or send is
 *   in flight: a request parsed from a dead connection is never started
 *   afterwards, and none is still running when the client sees the close.
 *   The conn is freed in the close completion (or by the reactor when it is
 *   still on the dirty list).
 */
#include "nbdsrv/server.h"
#include "nbdsrv/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_RBUF        (256u * 1024)
#define CONN_MAX_REQS    128u
#define CONN_MAX_BYTES   (64ull * 1024 * 1024)
#define CONN_MAX_IOV     512u
#ifndef CONN_HS_TIMEOUT_NS
#define CONN_HS_TIMEOUT_NS (30ull * 1000 * 1000 * 1000)
#endif
#define CONN_BIG_WRITE   (64u * 1024)
#ifndef CONN_TCP_SOCKBUF
#define CONN_TCP_SOCKBUF 0
#endif
#define CONN_SOCKBUF     (4 * 1024 * 1024)
#define CONN_KEEP_BUF    (1u * 1024 * 1024)  /* reuse buffers up to this */
#define CONN_CACHE_BYTES (16ull * 1024 * 1024) /* idle buffers kept, total */
#ifndef CONN_SPLICE_MIN
#define CONN_SPLICE_MIN  (256u * 1024)  /* READs spliced from this size; 0: never */
#endif
#ifndef CONN_MAP_MIN
#define CONN_MAP_MIN     (256u * 1024)  /* READs sent from the map from this size */
#endif
#define CONN_MAP_MAX     (4u * 1024 * 1024)
#define CONN_PIPE_SZ     (4u * 1024 * 1024)
#define CONN_MAX_PIPES   16u
#define REQ_MAX_CHUNKS   16u
#define REQ_MAX_EXTENTS  1024u
#define REQ_HDR_BYTES    (REQ_MAX_CHUNKS * (NBD_HDR_MAX + 12))

struct conn;

struct req {
	struct conn *c;
	struct req *next;       /* free list, ready list or sending list */
	struct nbd_req nr;
	uint32_t err;           /* NBD error to reply with */
	uint64_t charge;        /* bytes counted in c->bytes */
	struct export_io io;
	uint8_t *buf;           /* data / extents, owned, reused */
	size_t cap;
	unsigned niov;
	struct iovec iov[2 * REQ_MAX_CHUNKS + 1];
	int pfd[2];             /* splice pipe (read end, write end) or -1, owned */
	size_t pcap;            /* its capacity in bytes */
	bool spliced;           /* the read data is in the pipe, not in buf */
	const uint8_t *mapped;  /* the read data, in the export's map, or NULL */
	size_t pipe_len;        /* bytes in the pipe (0: reusable) */
	uint8_t hdr[REQ_HDR_BYTES];
};

struct conn {
	struct reactor *r;
	int fd;
	bool tcp;
	struct conn *prev, *next;       /* reactor's list */
	struct conn *dirty_next;
	bool dirty;

	struct nbd_session s;
	bool transmission;
	struct server_stats *stats;     /* of the chosen export */

	uint8_t *rbuf;                  /* CONN_RBUF bytes */
	size_t rstart, rend;            /* unparsed bytes: rbuf[rstart..rend) */
	struct loop_op recv_op;
	bool recv_armed;
	bool recv_cancelling;           /* a cancel for recv_op is queued */
	struct req *rx;                 /* WRITE whose payload is arriving */
	uint64_t rx_have;               /* payload bytes already in rx->buf */
	bool rx_direct;                 /* the armed recv targets rx->buf */
	bool big_write;                 /* last request: a large WRITE */

	struct loop_op send_op;
	struct loop_op splice_op;       /* sends c->sending's pipe */
	bool send_armed;                /* send_op or splice_op in flight */
	bool send_hs;                   /* the send carries handshake output */
	struct msghdr msg;
	struct iovec siov[CONN_MAX_IOV];
	unsigned siov_n, siov_pos;
	struct req *sending;            /* replies in the armed send */
	struct req *splice_next;        /* last of them: its pipe goes next */
	struct req *ready, *ready_tail; /* replies waiting for a send */

	struct req *reqs[CONN_MAX_REQS];/* slots allocated so far, owned */
	unsigned n_slots;
	struct req *free_reqs;
	unsigned n_reqs;                /* allocated slots */
	uint64_t bytes;                 /* data held by allocated slots */
	unsigned n_io;                  /* export ops in flight */
	uint64_t cached;                /* bytes of idle buffers in free slots */
	unsigned n_pipes;               /* slots with a splice pipe */

	struct loop_timer hs_timer;     /* handshake deadline */
	bool input_done;
	bool broken;
	bool closing;                   /* close submitted */
	bool closed;                    /* close completed: free when clean */
	struct loop_op close_op;
};

static void conn_process(struct conn *c);
static void conn_check_done(struct conn *c);
static void conn_mark_dirty(struct conn *c);

/* ------------------------------------------------------------- 1 ---- */

/* A free request slot; slots are allocated on first use (memory follows the
 * client's queue depth) and kept until the connection closes.  The caller
 * has checked n_reqs < CONN_MAX_REQS; NULL only when out of memory. */
static struct req *req_alloc(struct conn *c)
{
	struct req *q = c->free_reqs;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return NULL;
		q->c = c;
		q->pfd[0] = q->pfd[1] = -1;
		c->reqs[c->n_slots++] = q;
	} else {
		c->free_reqs = q->next;
	}
	q->next = NULL;
	q->err = 0;
	q->charge = 0;
	q->mapped = NULL;
	q->niov = 0;
	c->n_reqs++;
	if (q->buf)
		c->cached -= q->cap;
	return q;
}

static void req_pipe_close(struct req *q)
{
	if (q->pfd[0] < 0)
		return;
	close(q->pfd[0]);
	close(q->pfd[1]);
	q->pfd[0] = q->pfd[1] = -1;
	q->pcap = 0;
	q->spliced = false;
	q->pipe_len = 0;
	q->c->n_pipes--;
}

static void req_free(struct req *q)
{
	struct conn *c = q->c;

	/* A pipe is reused only when empty. */
	if (q->pipe_len)
		req_pipe_close(q);
	q->spliced = false;
	c->n_reqs--;
	c->bytes -= q->charge;
	if (q->buf && (q->cap > CONN_KEEP_BUF ||
		       c->cached + q->cap > CONN_CACHE_BYTES)) {
		free(q->buf);
		q->buf = NULL;
		q->cap = 0;
	}
	if (q->buf)
		c->cached += q->cap;
	q->next = c->free_reqs;
	c->free_reqs = q;
}

static int req_reserve(struct req *q, size_t n)
{
	uint8_t *p;

	if (q->cap >= n)
		return 0;
	p = malloc(n ? n : 1);
	if (!p)
		return -ENOMEM;
	free(q->buf);
	q->buf = p;
	q->cap = n;
	return 0;
}

/* ------------------------------------------------------------- 2 ---- */

static void iov_add(struct req *q, void *base, size_t len)
{
	q->iov[q->niov].iov_base = base;
	q->iov[q->niov].iov_len = len;
	q->niov++;
}

static void build_read_reply(struct conn *c, struct req *q)
{
	struct nbd_read_chunk ch[REQ_MAX_CHUNKS];
	unsigned n, i;
	size_t h = 0;

	if (!c->s.structured) {
		h = nbd_reply_simple_hdr(q->hdr, q->nr.cookie);
		iov_add(q, q->hdr, h);
		if (q->nr.length)
			iov_add(q, q->buf, q->nr.length);
		return;
	}
	n = nbd_read_chunks(q->buf, q->nr.offset, q->nr.length,
			    q->nr.flags & NBD_CMD_FLAG_DF, ch, REQ_MAX_CHUNKS);
	if (n == 0) {
		h = nbd_reply_final(&c->s, q->hdr, &q->nr, 0);
		iov_add(q, q->hdr, h);
		return;
	}
	for (i = 0; i < n; i++) {
		size_t k = nbd_reply_read_chunk(&c->s, q->hdr + h, &q->nr, &ch[i],
						i == n - 1);

		iov_add(q, q->hdr + h, k);
		h += k;
		if (!ch[i].hole)
			iov_add(q, q->buf + ch[i].offset, ch[i].length);
	}
}

static void build_block_status_reply(struct conn *c, struct req *q)
{
	struct export_extent *ext = (struct export_extent *)q->buf;
	uint8_t *out = q->buf + REQ_MAX_EXTENTS * sizeof(*ext);
	uint64_t left = q->nr.length;
	unsigned n = MIN(q->io.n_extents, q->io.max_extents), i, k = 0;

	/* Trust nothing from the export: clamp to the request, drop empty
	 * extents, keep 32-bit lengths in compact replies. */
	for (i = 0; i < n && left; i++) {
		uint64_t len = MIN(ext[i].length, left);

		if (!c->s.extended && len > 0xfffff000u)
			len = 0xfffff000u;
		if (!len)
			continue;
		ext[k].length = len;
		ext[k].flags = ext[i].flags & (EXPORT_EXTENT_HOLE | EXPORT_EXTENT_ZERO);
		k++;
		left -= len;
		if ((q->nr.flags & NBD_CMD_FLAG_REQ_ONE) ||
		    (!c->s.extended && len == 0xfffff000u))
			break;
	}
	if (k == 0) {
		ext[0].length = MIN(q->nr.length, (uint64_t)0xfffff000u);
		ext[0].flags = 0;
		k = 1;
	}
	iov_add(q, out, nbd_reply_block_status(&c->s, out, &q->nr, ext, k));
}

/* The header of a spliced READ: one data chunk, no hole detection (the
 * data is not in our memory). */
static void build_splice_reply(struct conn *c, struct req *q)
{
	size_t h;

	if (c->s.structured) {
		struct nbd_read_chunk ch = { 0, q->nr.length, false };

		h = nbd_reply_read_chunk(&c->s, q->hdr, &q->nr, &ch, true);
	} else {
		h = nbd_reply_simple_hdr(q->hdr, q->nr.cookie);
	}
	iov_add(q, q->hdr, h);
	if (q->mapped)
		iov_add(q, (void *)q->mapped, q->nr.length);
}

/* The reply for q is complete: queue it for the next flush. */
static void req_ready(struct req *q)
{
	struct conn *c = q->c;

	if (c->broken) {
		req_free(q);
		conn_check_done(c);
		return;
	}
	q->niov = 0;
	if (q->spliced && q->err)
		req_pipe_close(q);
	if (q->spliced || q->mapped)
		build_splice_reply(c, q);
	else if (q->err == 0 && q->nr.type == NBD_CMD_READ)
		build_read_reply(c, q);
	else if (q->err == 0 && q->nr.type == NBD_CMD_BLOCK_STATUS)
		build_block_status_reply(c, q);
	else
		iov_add(q, q->hdr, nbd_reply_final(&c->s, q->hdr, &q->nr, q->err));
	q->next = NULL;
	if (c->ready_tail)
		c->ready_tail->next = q;
	else
		c->ready = q;
	c->ready_tail = q;
	conn_mark_dirty(c);
}

static void req_io_done(struct export_io *io, int res)
{
	struct req *q = container_of(io, struct req, io);
	struct conn *c = q->c;

	c->n_io--;
	if (c->stats && res >= 0) {
		if (q->nr.type == NBD_CMD_READ)
			__atomic_fetch_add(&c->stats->bytes_read, q->nr.length,
					   __ATOMIC_RELAXED);
		else if (q->nr.type == NBD_CMD_WRITE)
			__atomic_fetch_add(&c->stats->bytes_written, q->nr.length,
					   __ATOMIC_RELAXED);
	}
	if (c->stats)
		__atomic_fetch_add(&c->stats->requests, 1, __ATOMIC_RELAXED);
	if (res < 0) {
		q->err = nbd_errno_to_nbd(res, q->nr.flags);
		log_debug("conn %d: cmd %u at %llu+%llu: %s", c->fd, q->nr.type,
			  (unsigned long long)q->nr.offset,
			  (unsigned long long)q->nr.length, strerror(-res));
	}
	req_ready(q);
}

/* Read into q->buf through the export. */
static void req_read(struct conn *c, struct req *q)
{
	struct export *e = c->s.export;

	if (req_reserve(q, q->nr.length) < 0) {
		q->err = NBD_ENOMEM;
		req_ready(q);
		return;
	}
	q->io.buf = q->buf;
	c->n_io++;
	e->ops->read(e, &q->io);
}

/* q's splice pipe, made on first use; false when there is none to spare or
 * it cannot hold the pages of [off, off + len) (one pipe slot per page). */
static bool req_pipe(struct conn *c, struct req *q, uint64_t off, uint64_t len)
{
	static long page;
	int fds[2], sz;

	if (!page)
		page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
	if (q->pfd[0] < 0) {
		if (c->n_pipes >= CONN_MAX_PIPES || pipe2(fds, O_CLOEXEC) < 0)
			return false;
		/* Without CAP_SYS_RESOURCE, fs.pipe-max-size (1 MiB by
		 * default) caps the size: larger reads are then copied. */
		sz = -1;
		for (unsigned n = CONN_PIPE_SZ; sz < 0 && n >= 64 * 1024; n /= 2)
			sz = fcntl(fds[1], F_SETPIPE_SZ, n);
		if (sz < 0)
			sz = fcntl(fds[1], F_GETPIPE_SZ);
		q->pfd[0] = fds[0];
		q->pfd[1] = fds[1];
		q->pcap = sz > 0 ? (size_t)sz : 0;
		c->n_pipes++;
	}
	return (off % (uint64_t)page + len + (uint64_t)page - 1) / (uint64_t)page
	       <= q->pcap / (uint64_t)page;
}

static void splice_in_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);
	struct req *q = container_of(io, struct req, io);
	struct conn *c = q->c;

	if (res >= 0 && (uint64_t)res == q->nr.length) {
		req_io_done(io, 0);
		return;
	}
	/* Short (the file shrank?) or failed, maybe after moving some bytes
	 * into the pipe: drop the pipe and let the export's read decide, so
	 * that errors are those of any read.  Still one op in flight. */
	log_debug("conn %d: splice of %llu+%llu: %d; reading instead", c->fd,
		  (unsigned long long)q->nr.offset,
		  (unsigned long long)q->nr.length, res);
	req_pipe_close(q);
	c->n_io--;
	req_read(c, q);
}

/* A large read may skip hole detection: no structured replies (no HOLE
 * chunk to send), or the export says the range has no hole. */
static bool req_holeless(struct conn *c, struct req *q)
{
	struct export *e = c->s.export;

	return !c->s.structured ||
	       (e->ops->all_data && e->ops->all_data(e, q->nr.offset, q->nr.length));
}

/* Start a READ as splice(file -> q's pipe), so that the data reaches the
 * socket without being copied by us (see "Large reads" above).  False when
 * the request does not qualify: read it instead. */
static bool req_splice(struct conn *c, struct req *q)
{
	struct export *e = c->s.export;
	struct io_uring_sqe *sqe;
	int fd;

	if (!CONN_SPLICE_MIN || q->nr.length < CONN_SPLICE_MIN ||
	    !e->ops->splice_fd)
		return false;
	fd = e->ops->splice_fd(e);
	if (fd < 0 || !req_holeless(c, q) ||
	    !req_pipe(c, q, q->nr.offset, q->nr.length))
		return false;
	/* The pipe is empty and holds every page: the splice never waits for
	 * room (a blocked io-wq worker would never be woken). */
	q->spliced = true;
	q->pipe_len = q->nr.length;
	q->io.op.cb = splice_in_cb;
	c->n_io++;
	sqe = loop_sqe(&c->r->loop, &q->io.op);
	io_uring_prep_splice(sqe, fd, (int64_t)q->nr.offset, q->pfd[1], -1,
			     (unsigned)q->nr.length, 0);
	return true;
}

/* A READ whose pages are all in the page cache is answered from the
 * export's map: the sendmsg copies them into the socket, no read copy.
 * False when it does not qualify. */
static bool req_map(struct conn *c, struct req *q)
{
	static long page;
	struct export *e = c->s.export;
	unsigned char vec[CONN_MAP_MAX / 4096 + 2];
	const uint8_t *m;
	uint64_t a, n, i;

	if (!CONN_MAP_MIN || q->nr.length < CONN_MAP_MIN ||
	    q->nr.length > CONN_MAP_MAX || !e->ops->map)
		return false;
	m = e->ops->map(e, q->nr.offset, q->nr.length);
	if (!m)
		return false;
	if (!page)
		page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
	a = q->nr.offset - q->nr.offset % (uint64_t)page;
	n = (q->nr.offset + q->nr.length - a + (uint64_t)page - 1) / (uint64_t)page;
	if (n > sizeof(vec) || mincore((void *)(m + a), n * (uint64_t)page, vec) < 0)
		return false;
	for (i = 0; i < n; i++)
		if (!(vec[i] & 1))
			return false;
	if (!req_holeless(c, q))
		return false;
	q->mapped = m + q->nr.offset;
	c->n_io++;
	req_io_done(&q->io, 0);
	return true;
}

/* Start the export op for a validated request. */
static void req_submit(struct conn *c, struct req *q)
{
	struct export *e = c->s.export;
	struct export_io *io = &q->io;

	if (q->err) {
		req_ready(q);
		return;
	}
	memset(io, 0, offsetof(struct export_io, op));
	io->loop = &c->r->loop;
	io->done = req_io_done;
	io->offset = q->nr.offset;
	io->length = q->nr.length;
	if (q->nr.flags & NBD_CMD_FLAG_FUA)
		io->flags |= EXPORT_IO_FUA;

	switch (q->nr.type) {
	case NBD_CMD_READ:
		/* Large reads: see "Large reads" above. */
		if (!(c->tcp ? req_map(c, q) : req_splice(c, q)))
			req_read(c, q);
		return;
	case NBD_CMD_WRITE:
		io->buf = q->buf;
		c->n_io++;
		e->ops->write(e, io);
		return;
	case NBD_CMD_FLUSH:
		io->offset = io->length = 0;
		c->n_io++;
		e->ops->flush(e, io);
		return;
	case NBD_CMD_TRIM:
		c->n_io++;
		e->ops->trim(e, io);
		return;
	case NBD_CMD_WRITE_ZEROES:
		if (q->nr.flags & NBD_CMD_FLAG_NO_HOLE)
			io->flags |= EXPORT_IO_NO_HOLE;
		if (q->nr.flags & NBD_CMD_FLAG_FAST_ZERO)
			io->flags |= EXPORT_IO_FAST_ZERO;
		c->n_io++;
		e->ops->zero(e, io);
		return;
	case NBD_CMD_CACHE:
		c->n_io++;
		e->ops->cache(e, io);
		return;
	case NBD_CMD_BLOCK_STATUS:
		if (req_reserve(q, REQ_MAX_EXTENTS * sizeof(struct export_extent) +
				nbd_reply_block_status_size(REQ_MAX_EXTENTS)) < 0) {
			q->err = NBD_ENOMEM;
			req_ready(q);
			return;
		}
		io->extents = (struct export_extent *)q->buf;
		io->max_extents = (q->nr.flags & NBD_CMD_FLAG_REQ_ONE) ? 1
								       : REQ_MAX_EXTENTS;
		io->n_extents = 0;
		if (q->nr.flags & NBD_CMD_FLAG_REQ_ONE)
			io->flags |= EXPORT_IO_REQ_ONE;
		if (!(e->flags & EXPORT_CAN_EXTENTS) || !e->ops->block_status) {
			io->extents[0] = (struct export_extent){ io->length, 0 };
			io->n_extents = 1;
			req_ready(q);
			return;
		}
		c->n_io++;
		e->ops->block_status(e, io);
		return;
	default:
		q->err = NBD_EINVAL;
		req_ready(q);
		return;
	}
}

/* ------------------------------------------------------------- 3 ---- */

static void conn_mark_dirty(struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->r->dirty;
	c->r->dirty = c;
}

struct conn *conn_take_dirty(struct reactor *r)
{
	struct conn *c = r->dirty;

	if (c) {
		r->dirty = c->dirty_next;
		c->dirty_next = NULL;
		c->dirty = false;
	}
	return c;
}

static void send_submit(struct conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->r->loop, &c->send_op);

	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->siov + c->siov_pos;
	c->msg.msg_iovlen = c->siov_n - c->siov_pos;
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg,
			      MSG_NOSIGNAL | (c->splice_next ? MSG_MORE : 0));
	c->send_armed = true;
}

static void splice_out_submit(struct conn *c)
{
	struct req *q = c->splice_next;
	struct io_uring_sqe *sqe = loop_sqe(&c->r->loop, &c->splice_op);

	io_uring_prep_splice(sqe, q->pfd[0], -1, c->fd, -1,
			     (unsigned)q->pipe_len, 0);
	c->send_armed = true;
}

static void release_list(struct req *q)
{
	while (q) {
		struct req *next = q->next;

		req_free(q);
		q = next;
	}
}

static void conn_break(struct conn *c)
{
	if (!c->broken) {
		c->broken = true;
		release_list(c->ready);
		c->ready = c->ready_tail = NULL;
	}
	c->input_done = true;
	conn_check_done(c);
}

void conn_flush(struct conn *c)
{
	struct req *tail = NULL;

	if (c->closed) {
		/* The close completed while c was on the dirty list. */
		free(c->rbuf);
		free(c);
		return;
	}
	if (c->send_armed || c->broken || c->closing)
		return;
	c->siov_n = c->siov_pos = 0;
	c->splice_next = NULL;
	if (c->s.out_len) {
		c->siov[0].iov_base = c->s.out;
		c->siov[0].iov_len = c->s.out_len;
		c->siov_n = 1;
		c->send_hs = true;
		send_submit(c);
		return;
	}
	/* Replies up to and including the next spliced one, whose data
	 * follows its header once the sendmsg is done. */
	while (c->ready && !c->splice_next &&
	       c->siov_n + c->ready->niov <= CONN_MAX_IOV) {
		struct req *q = c->ready;

		if (q->spliced)
			c->splice_next = q;
		memcpy(c->siov + c->siov_n, q->iov, q->niov * sizeof(struct iovec));
		c->siov_n += q->niov;
		c->ready = q->next;
		q->next = NULL;
		if (tail)
			tail->next = q;
		else
			c->sending = q;
		tail = q;
	}
	if (!c->ready)
		c->ready_tail = NULL;
	if (c->siov_n) {
		c->send_hs = false;
		send_submit(c);
	} else {
		conn_check_done(c);
	}
}

static void send_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, send_op);
	size_t n;

	c->send_armed = false;
	if (res == -EINTR || res == -EAGAIN) {
		send_submit(c);
		return;
	}
	if (res <= 0) {
		if (res < 0 && res != -EPIPE && res != -ECONNRESET)
			log_debug("conn %d: send: %s", c->fd, strerror(-res));
		release_list(c->sending);
		c->sending = NULL;
		c->splice_next = NULL;
		if (c->send_hs)
			c->s.out_len = 0;
		conn_break(c);
		return;
	}
	n = (size_t)res;
	while (n && c->siov_pos < c->siov_n) {
		struct iovec *v = &c->siov[c->siov_pos];

		if (n >= v->iov_len) {
			n -= v->iov_len;
			c->siov_pos++;
		} else {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			n = 0;
		}
	}
	while (c->siov_pos < c->siov_n && c->siov[c->siov_pos].iov_len == 0)
		c->siov_pos++;
	if (c->siov_pos < c->siov_n) {
		send_submit(c);
		return;
	}
	if (c->send_hs) {
		c->s.out_len = 0;
		c->send_hs = false;
	} else if (c->splice_next) {
		splice_out_submit(c);
		return;
	} else {
		release_list(c->sending);
		c->sending = NULL;
	}
	conn_process(c);
	conn_flush(c);
}

/* The splice of c->sending's pipe to the socket completed. */
static void splice_out_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, splice_op);
	struct req *q = c->splice_next;

	c->send_armed = false;
	if (res == -EINTR || res == -EAGAIN) {
		splice_out_submit(c);
		return;
	}
	if (res <= 0 || (size_t)res > q->pipe_len) {
		if (res < 0 && res != -EPIPE && res != -ECONNRESET)
			log_debug("conn %d: splice to socket: %s", c->fd,
				  strerror(-res));
		release_list(c->sending);       /* closes the non-empty pipe */
		c->sending = NULL;
		c->splice_next = NULL;
		conn_break(c);
		return;
	}
	q->pipe_len -= (size_t)res;
	if (q->pipe_len) {
		splice_out_submit(c);
		return;
	}
	q->spliced = false;
	c->splice_next = NULL;
	release_list(c->sending);
	c->sending = NULL;
	conn_process(c);
	conn_flush(c);
}

/* ------------------------------------------------------------- 4 ---- */

static void recv_arm(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->input_done)
		return;
	if (c->rx) {
		sqe = loop_sqe(&c->r->loop, &c->recv_op);
		io_uring_prep_recv(sqe, c->fd, c->rx->buf + c->rx_have,
				   c->rx->nr.payload - c->rx_have, MSG_WAITALL);
		c->rx_direct = true;
	} else {
		if (c->rstart == c->rend) {
			c->rstart = c->rend = 0;
		} else if (c->rstart && (c->rend == CONN_RBUF ||
					 c->rstart > CONN_RBUF / 2)) {
			memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
			c->rend -= c->rstart;
			c->rstart = 0;
		}
		if (c->rend == CONN_RBUF) {
			/* Cannot happen: a full buffer always holds a complete
			 * header or option.  Refuse to spin. */
			conn_break(c);
			return;
		}
		sqe = loop_sqe(&c->r->loop, &c->recv_op);
		/* After a large write, expect another: take little more than
		 * its header so that its payload lands in its own buffer
		 * instead of being copied out of rbuf. */
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rend,
				   c->big_write ? MIN(CONN_RBUF - c->rend, 4096u)
						: CONN_RBUF - c->rend, 0);
		c->rx_direct = false;
	}
	c->recv_armed = true;
}

static void recv_cancel(struct conn *c)
{
	if (c->recv_armed && !c->recv_cancelling) {
		c->recv_cancelling = true;
		struct io_uring_sqe *sqe = loop_sqe(&c->r->loop, NULL);

		io_uring_prep_cancel(sqe, &c->recv_op, 0);
	}
}

/* The payload of c->rx is complete: start it. */
static void rx_complete(struct conn *c)
{
	struct req *q = c->rx;

	c->rx = NULL;
	c->rx_have = 0;
	req_submit(c, q);
}

static void recv_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, recv_op);

	c->recv_armed = false;
	c->recv_cancelling = false;
	if (c->input_done) {
		conn_check_done(c);
		return;
	}
	if (res == -EINTR || res == -EAGAIN) {
		recv_arm(c);
		return;
	}
	if (res <= 0) {
		if (res < 0 && res != -ECONNRESET)
			log_debug("conn %d: recv: %s", c->fd, strerror(-res));
		c->input_done = true;
		if (!c->transmission)
			c->broken = true;
		conn_check_done(c);
		return;
	}
	if (c->rx_direct) {
		c->rx_have += (unsigned)res;
		if (c->rx_have == c->rx->nr.payload)
			rx_complete(c);
	} else {
		c->rend += (unsigned)res;
	}
	conn_process(c);
}

static void protocol_violation(struct conn *c, const char *why)
{
	log_warn("conn %d: protocol violation: %s; disconnecting", c->fd, why);
	recv_cancel(c);
	conn_break(c);
}

static void process_handshake(struct conn *c)
{
	size_t used = 0;
	enum nbd_hs_result r;

	r = nbd_hs_input(&c->s, c->rbuf + c->rstart, c->rend - c->rstart, &used);
	c->rstart += used;
	switch (r) {
	case NBD_HS_MORE:
		break;
	case NBD_HS_READY: {
		size_t i;

		c->transmission = true;
		loop_timer_cancel(&c->r->loop, &c->hs_timer);
		for (i = 0; i < c->r->srv->n_exports; i++)
			if (c->r->srv->exports[i] == c->s.export)
				c->stats = &c->r->srv->stats[i];
		if (c->stats)
			__atomic_fetch_add(&c->stats->conns, 1, __ATOMIC_RELAXED);
		log_debug("conn %d: serving export '%s'%s%s", c->fd,
			  c->s.export->name, c->s.structured ? " structured" : "",
			  c->s.extended ? " extended" : "");
		break;
	}
	case NBD_HS_CLOSE:
		c->input_done = true;
		break;
	case NBD_HS_FAIL:
		protocol_violation(c, "bad handshake");
		return;
	}
	if (c->s.out_len)
		conn_mark_dirty(c);
}

/* Parse every complete request in rbuf that fits the budget. */
static void process_requests(struct conn *c)
{
	size_t hsz = nbd_req_hdr_size(&c->s);

	while (!c->rx && !c->input_done) {
		struct nbd_req nr;
		struct req *q;
		uint64_t charge, have;
		int err;

		if (c->rend - c->rstart < hsz)
			break;
		if (c->n_reqs >= CONN_MAX_REQS)
			return;                 /* backpressure: no recv */
		if (nbd_req_decode(&c->s, c->rbuf + c->rstart, &nr) < 0) {
			protocol_violation(c, "bad request magic");
			return;
		}
		err = nbd_req_check(&c->s, &nr);
		if (err < 0) {
			protocol_violation(c, "request payload too large");
			return;
		}
		if (nr.type == NBD_CMD_DISC) {
			c->rstart += hsz;
			c->input_done = true;
			recv_cancel(c);
			conn_check_done(c);
			return;
		}
		charge = nr.payload;
		if (!err && nr.type == NBD_CMD_READ)
			charge = nr.length;
		if (c->n_reqs && c->bytes + charge > CONN_MAX_BYTES)
			return;                 /* backpressure: no recv */
		q = req_alloc(c);
		if (!q) {
			log_error("conn %d: out of memory for a request", c->fd);
			conn_break(c);
			return;
		}
		c->rstart += hsz;
		q->nr = nr;
		q->err = (uint32_t)err;
		q->charge = charge;
		c->bytes += charge;
		if (!nr.payload) {
			c->big_write = false;
			req_submit(c, q);
			continue;
		}
		if (req_reserve(q, nr.payload) < 0) {
			/* We cannot even skip the payload without memory. */
			req_free(q);
			log_error("conn %d: out of memory for a %llu-byte write",
				  c->fd, (unsigned long long)nr.payload);
			conn_break(c);
			return;
		}
		have = MIN(nr.payload, (uint64_t)(c->rend - c->rstart));
		c->big_write = nr.payload >= CONN_BIG_WRITE && have < nr.payload;
		memcpy(q->buf, c->rbuf + c->rstart, have);
		c->rstart += have;
		c->rx = q;
		c->rx_have = have;
		if (have == nr.payload)
			rx_complete(c);
	}
	recv_arm(c);
}

static void conn_process(struct conn *c)
{
	if (c->input_done || c->broken || c->closing) {
		conn_check_done(c);
		return;
	}
	if (!c->transmission) {
		/* Replies go out before the next option is read. */
		if (c->send_armed || c->s.out_len)
			return;
		process_handshake(c);
		if (c->broken || c->input_done || c->s.out_len)
			return;
		if (!c->transmission) {
			recv_arm(c);
			return;
		}
	}
	process_requests(c);
}

/* ------------------------------------------------------------- 5 ---- */

static void close_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, close_op);
	struct reactor *r = c->r;
	unsigned i;

	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	__atomic_fetch_sub(&r->n_conns, 1, __ATOMIC_RELAXED);
	if (c->stats)
		__atomic_fetch_sub(&c->stats->conns, 1, __ATOMIC_RELAXED);
	for (i = 0; i < c->n_slots; i++) {
		req_pipe_close(c->reqs[i]);
		free(c->reqs[i]->buf);
		free(c->reqs[i]);
	}
	nbd_session_fini(&c->s);
	log_debug("conn %d: closed", c->fd);
	c->closed = true;
	if (!c->dirty) {
		free(c->rbuf);
		free(c);
	}
}

static void conn_check_done(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->closing || !(c->input_done || c->broken))
		return;
	if (c->recv_armed) {
		recv_cancel(c);
		return;
	}
	if (c->hs_timer.armed) {
		loop_timer_cancel(&c->r->loop, &c->hs_timer);
		return;
	}
	if (c->n_io || c->send_armed)
		return;
	if (!c->broken && (c->ready || c->s.out_len)) {
		conn_mark_dirty(c);
		return;
	}
	if (c->rx) {
		req_free(c->rx);
		c->rx = NULL;
	}
	release_list(c->ready);
	c->ready = c->ready_tail = NULL;
	c->closing = true;
	c->close_op.cb = close_cb;
	sqe = loop_sqe(&c->r->loop, &c->close_op);
	io_uring_prep_close(sqe, c->fd);
}

static void hs_timeout_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct loop_timer *t = container_of(op, struct loop_timer, op);
	struct conn *c = container_of(t, struct conn, hs_timer);

	if (res == -ETIME && !c->transmission && !c->closing) {
		log_warn("conn %d: no export chosen within %llu s; disconnecting",
			 c->fd, CONN_HS_TIMEOUT_NS / 1000000000ull);
		recv_cancel(c);
		conn_break(c);
		return;
	}
	conn_check_done(c);
}

static void conn_shutdown(struct conn *c)
{
	if (c->closing)
		return;
	if (!c->transmission)
		c->broken = true;
	c->input_done = true;
	/* A half-received write (c->rx) is not in flight yet: it is dropped
	 * once the cancelled recv has completed. */
	recv_cancel(c);
	conn_check_done(c);
}

void conn_shutdown_all(struct reactor *r)
{
	struct conn *c;

	/* conn_shutdown() never frees c (the close goes through the ring). */
	for (c = r->conns; c; c = c->next)
		conn_shutdown(c);
}

void conn_abort_all(struct reactor *r)
{
	struct conn *c;

	for (c = r->conns; c; c = c->next) {
		if (c->closing)
			continue;
		/* Fail a send stuck on a client that stopped reading. */
		io_uring_prep_shutdown(loop_sqe(&r->loop, NULL), c->fd, SHUT_RDWR);
		recv_cancel(c);
		conn_break(c);
	}
}

void conn_accept(struct reactor *r, int fd, bool tcp)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c)
		c->rbuf = malloc(CONN_RBUF);
	if (!c || !c->rbuf ||
	    nbd_session_init(&c->s, r->srv->exports, r->srv->n_exports) < 0) {
		log_error("conn: out of memory; dropping a connection");
		if (c)
			free(c->rbuf);
		free(c);
		close(fd);
		return;
	}
	{
		int one = 1, sz = CONN_SOCKBUF;

		if (tcp)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* Room for a few 1 MiB replies per send, fewer partial sends.
		 * TCP sizes its buffers itself (setting them disables that). */
		if (!tcp || CONN_TCP_SOCKBUF) {
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
			(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		}
	}
	c->s.resolver = r->srv->resolver;
	c->r = r;
	c->fd = fd;
	c->tcp = tcp;
	c->recv_op.cb = recv_cb;
	c->send_op.cb = send_cb;
	c->splice_op.cb = splice_out_cb;
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	__atomic_fetch_add(&r->n_conns, 1, __ATOMIC_RELAXED);
	log_debug("conn %d: accepted on reactor %u", fd, r->id);
	conn_mark_dirty(c);             /* the greeting */
	loop_timer_arm(&r->loop, &c->hs_timer, CONN_HS_TIMEOUT_NS, hs_timeout_cb);
	recv_arm(c);
	if (r->stopping)
		conn_shutdown(c);
}
