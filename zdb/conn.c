/*
 * conn.c — the 0-db / Redis client backend: one pipelined RESP connection
 * per backend, driven entirely by the owner's io_uring loop.
 *
 * States (b.state):
 *
 *     IDLE ─start─► CONNECTING ──connect+handshake ok──► READY
 *                      ▲   │ fail                         │ error, EOF, deadline,
 *                      │   ▼                              │ bad reply
 *                    BACKOFF ◄────── (teardown) ◄─────────┘
 *                      │  auth / namespace refused → FATAL (retried slowly)
 *
 * Handshake, as a chain of internal requests (c->hs) sent before any user
 * request: INFO (dialect from "0-db" vs "redis_version:"; a -NOAUTH reply
 * makes us send AUTH password and retry), then on 0-db AUTH SECURE
 * CHALLENGE + SELECT ns SECURE sha1("nonce:password") (or plain SELECT ns),
 * on Redis SELECT <db> when the namespace is a number, then GET of the
 * canary key (absent after we had seen it: the backend was emptied) and SET
 * of it when absent — and on 0-db always (an identical value is not
 * written again): that SET proves we may write.  A namespace we cannot use
 * is FATAL with a message saying why: it does not exist, needs a password,
 * refuses ours, is read-only to us (public but password-protected, no
 * password configured) or is in sequential mode (keys chosen by the server:
 * `zdb --mode seq`; nbdsrv needs user keys).
 *
 * Requests: submit() puts a request on `pend`; flush moves up to `depth` of
 * them to `fly` (sent or being sent, FIFO — RESP replies come in order) and
 * keeps one sendmsg in flight whose iovecs point at each request's encoded
 * head, its value (PUT: never copied) and a CRLF.  One recv is always armed
 * into `rx`; when a GET's bulk header has arrived and the payload is large,
 * the rest of the payload is received straight into the caller's buffer
 * ("direct" mode), then the trailing CRLF is checked.
 *
 * Failure: a reply that is malformed, oversized (bigger than the caller's
 * buffer), of the wrong shape for the request at the head of `fly`
 * (out-of-order or unsolicited) or a deadline passed on the oldest request
 * tears the connection down: shutdown() + cancel wake every kernel op; when
 * the last one has completed (kops == 0 — buffers of callers are referenced
 * until then), the fd is closed and every request fails with the error; we
 * then reconnect after an exponential backoff (50 ms … 5 s).  Nothing here
 * blocks: the connect is IORING_OP_CONNECT with a linked timeout, deadlines
 * are checked from the owner's tick (zdb_pool: every 10 ms).
 *
 * Error answers (conn_errmap) become an errno on the request they answer,
 * with the server's words cleaned into r->msg and r->refused set when the
 * backend says "no" while up (full, read-only, replica, failed save,
 * denied, its disk failing) — the pool records those for the status.
 * Passing states (loading, busy, frozen, too many clients) are -EAGAIN; in
 * the handshake they fail the connection for a backoff, not FATAL.
 *
 * Lingering.  0-db does not ignore SIGPIPE: a reply it sends to a socket
 * its client has closed (RST) kills the server — which is exactly what a
 * teardown with requests in flight to a stopped or slow 0-db would do.  So
 * on a 0-db, a torn-down connection that still had requests in flight is
 * only half-closed (SHUT_WR: the server reads EOF after our last request,
 * answers what it read, then closes) and kept open, drained from the tick,
 * until the server closes it or CONN_LINGER_NS passes; at most
 * CONN_LINGER_MAX such sockets per backend (the oldest is closed first).
 */
#include "zdb/zdb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CONN_RX_SIZE     (64u << 10)
#define CONN_DIRECT_MIN  (8u << 10)    /* payload left ≥ this → direct recv */
#define CONN_HEAD_PEEK   512           /* recv size before a large GET */
#define CONN_IOV_MAX     64
#define CONN_BACKOFF_MIN (50ull * 1000000)
#define CONN_BACKOFF_MAX (5000ull * 1000000)
#define CONN_PING_NS     (1000ull * 1000000)
#define CONN_LINGER_MAX  8
#define CONN_LINGER_NS   (300ull * 1000000000)

enum conn_hs {
	HS_NONE = 0,
	HS_INFO,
	HS_AUTH,
	HS_CHALLENGE,
	HS_SELECT,
	HS_CANARY_GET,
	HS_CANARY_SET,
	HS_PING,            /* idle ping while READY */
};

#define CONN_OP_INTERNAL 100   /* zdb_req.op for handshake / ping */

struct conn {
	struct zdb_backend b;           /* first: ops pointer is b.ops */
	int fd;
	struct sockaddr_storage sa;     /* resolved at create */
	socklen_t salen;

	struct loop_op connect_op, send_op, recv_op, stop_op;
	struct __kernel_timespec connect_ts;
	unsigned kops;                  /* SQEs in flight that point at us */
	bool send_busy, recv_busy;
	bool failing;                   /* teardown waiting for kops == 0 */
	int fail_err;
	bool stopping, stopped_sent;
	bool ns_gone;                   /* 0-db: our namespace was deleted */

	struct zdb_req *pend_head, *pend_tail;  /* not yet sent */
	struct zdb_req *fly_head, *fly_tail;    /* sent/being sent, FIFO */
	unsigned nfly;
	struct zdb_req *send_next;      /* first request not completely sent
	                                 * (meaningful while !send_busy) */
	size_t send_skip;               /* bytes of send_next already sent */
	struct iovec iov[CONN_IOV_MAX];
	struct msghdr msg;
	/* The requests the sendmsg in flight covers.  A reply can be parsed
	 * before that send's CQE: such a request is only marked here and
	 * completed when the send completes, so the kernel never reads a
	 * buffer its owner already got back. */
	struct conn_slot {
		struct zdb_req *r;
		size_t len;             /* bytes of r in this send */
		bool replied;
		int res;
	} sending[CONN_IOV_MAX];
	unsigned nsending;

	char *rx;                       /* CONN_RX_SIZE bytes */
	size_t rx_off, rx_len;          /* unparsed: rx[rx_off..rx_len) */
	struct zdb_req *direct;         /* GET receiving into its buffer */
	size_t direct_got, direct_len;
	bool expect_crlf;               /* after a direct payload */

	enum conn_hs hs_step;
	struct zdb_req hs[2];           /* handshake / ping requests, used
	                                 * alternately (see conn_slot) */
	unsigned hs_cur;
	bool hs_busy;
	bool auth_tried;
	bool canary_seen;               /* we saw/wrote it on this server */
	uint64_t backoff_ns;
	uint64_t next_attempt_ns;
	uint64_t attempt_start_ns;
	uint64_t last_rx_ns;
	char kind_warned;
	char worm_warned;
	char nopw_warned;
	struct conn_linger {            /* half-closed sockets being drained */
		int fd;
		uint64_t until_ns;
	} linger[CONN_LINGER_MAX];
	unsigned nlinger;
};

static void conn_connect(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_arm_recv(struct conn *c);
static void conn_fail(struct conn *c, int err, const char *why);

static const char crlf[2] = { '\r', '\n' };

void zdb_req_complete_later(struct loop *l, struct zdb_req *req, int res);

static void req_defer_done(struct loop_op *op, int res, uint32_t flags)
{
	struct zdb_req *r = container_of(op, struct zdb_req, defer_op);

	(void)res; (void)flags;
	r->done(r);
}

void zdb_req_complete_later(struct loop *l, struct zdb_req *req, int res)
{
	struct io_uring_sqe *sqe;

	req->result = res;
	req->defer_op.cb = req_defer_done;
	sqe = loop_sqe(l, &req->defer_op);
	io_uring_prep_nop(sqe);
}

const char *zdb_dialect_name(enum zdb_dialect d)
{
	switch (d) {
	case ZDB_DIALECT_ZDB: return "zdb";
	case ZDB_DIALECT_REDIS: return "redis";
	case ZDB_DIALECT_DIR: return "dir";
	default: return "unknown";
	}
}

const char *zdb_conn_state_name(enum zdb_conn_state s)
{
	switch (s) {
	case ZDB_CONN_IDLE: return "idle";
	case ZDB_CONN_CONNECTING: return "connecting";
	case ZDB_CONN_READY: return "ready";
	case ZDB_CONN_BACKOFF: return "down";
	case ZDB_CONN_FATAL: return "refused";
	case ZDB_CONN_STOPPED: return "stopped";
	}
	return "?";
}

static void conn_event(struct conn *c, int ev)
{
	if (c->b.on_event)
		c->b.on_event(&c->b, ev);
}

void zdb_text_clean(char *dst, size_t size, const char *s, size_t n)
{
	size_t i, o = 0;

	if (!size)
		return;
	for (i = 0; i < n && o + 1 < size; i++)
		dst[o++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
	if (i < n && size > 4) {
		o = MIN(o, size - 4);
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = 0;
}

static void conn_set_error(struct conn *c, const char *fmt, const char *detail)
{
	char clean[ZDB_MSG_MAX];

	/* Server text is untrusted: keep it printable and short. */
	zdb_text_clean(clean, sizeof(clean), detail ? detail : "", detail ? strlen(detail) : 0);
	snprintf(c->b.last_error, sizeof(c->b.last_error), fmt, clean);
}

/* ---- request queues ---- */

static bool conn_is_hs(const struct conn *c, const struct zdb_req *r)
{
	return r == &c->hs[0] || r == &c->hs[1];
}

static struct conn_slot *conn_slot_of(struct conn *c, const struct zdb_req *r)
{
	unsigned i;

	if (!c->send_busy)
		return NULL;
	for (i = 0; i < c->nsending; i++)
		if (c->sending[i].r == r)
			return &c->sending[i];
	return NULL;
}

static void conn_complete(struct conn *c, struct zdb_req *r, int res)
{
	struct conn_slot *s = conn_slot_of(c, r);

	if (s) {
		s->replied = true;
		s->res = res;
		return;
	}
	if (conn_is_hs(c, r))
		return;
	zdb_req_complete_later(c->b.loop, r, res);
}

static void conn_fail_all(struct conn *c, int err)
{
	struct zdb_req *r;

	while ((r = c->fly_head)) {
		c->fly_head = r->next;
		conn_complete(c, r, err);
	}
	c->fly_tail = NULL;
	c->nfly = 0;
	c->send_next = NULL;
	c->send_skip = 0;
	while ((r = c->pend_head)) {
		c->pend_head = r->next;
		conn_complete(c, r, err == -ECANCELED ? err : -ENOTCONN);
	}
	c->pend_tail = NULL;
	c->b.inflight = 0;
	c->b.oldest_inflight_ns = 0;
	c->hs_busy = false;
}

/* Encode r's command head into r->hdr for the current dialect. */
static int conn_encode(struct conn *c, struct zdb_req *r)
{
	const void *argv[3];
	size_t lens[3];
	int n;

	switch (r->op) {
	case ZDB_OP_PUT:
		argv[0] = "SET"; lens[0] = 3;
		argv[1] = r->key; lens[1] = r->key_len;
		argv[2] = r->val; lens[2] = r->val_len;
		n = resp_encode_head(r->hdr, sizeof(r->hdr), 3, argv, lens, r->val_len);
		break;
	case ZDB_OP_GET:
	case ZDB_OP_DEL:
	case ZDB_OP_EXISTS:
		argv[0] = r->op == ZDB_OP_GET ? "GET" : r->op == ZDB_OP_DEL ? "DEL" : "EXISTS";
		lens[0] = strlen(argv[0]);
		argv[1] = r->key; lens[1] = r->key_len;
		n = resp_encode(r->hdr, sizeof(r->hdr), 2, argv, lens);
		break;
	case ZDB_OP_PING:
		argv[0] = "PING"; lens[0] = 4;
		n = resp_encode(r->hdr, sizeof(r->hdr), 1, argv, lens);
		break;
	case ZDB_OP_INFO:
		if (c->b.dialect == ZDB_DIALECT_ZDB) {
			argv[0] = "NSINFO"; lens[0] = 6;
			argv[1] = c->b.cfg.ns[0] ? c->b.cfg.ns : "default";
			lens[1] = strlen(argv[1]);
		} else {
			argv[0] = "INFO"; lens[0] = 4;
			argv[1] = "memory"; lens[1] = 6;
		}
		n = resp_encode(r->hdr, sizeof(r->hdr), 2, argv, lens);
		break;
	default:
		return (int)r->hdr_len;  /* internal: encoded by the handshake */
	}
	if (n < 0)
		return n;
	r->hdr_len = (size_t)n;
	return n;
}

static size_t req_wire_len(const struct zdb_req *r)
{
	return r->hdr_len + (r->op == ZDB_OP_PUT ? r->val_len + 2 : 0);
}

static void conn_fly_push(struct conn *c, struct zdb_req *r)
{
	r->next = NULL;
	if (c->fly_tail)
		c->fly_tail->next = r;
	else
		c->fly_head = r;
	c->fly_tail = r;
	c->nfly++;
	if (!c->send_next) {
		c->send_next = r;
		c->send_skip = 0;
	}
	if (!conn_is_hs(c, r)) {
		c->b.inflight++;
		if (!c->b.oldest_inflight_ns)
			c->b.oldest_inflight_ns = r->start_ns;
	}
}

/* ---- sending ---- */

static void conn_send_done(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, send_op);
	size_t n = res > 0 ? (size_t)res : 0;
	int partial = -1;
	size_t partial_bytes = 0;
	bool early = false;
	unsigned i, ns = c->nsending;

	(void)flags;
	c->kops--;
	for (i = 0; i < ns; i++) {
		if (partial < 0 && n >= c->sending[i].len) {
			n -= c->sending[i].len;
			continue;
		}
		if (partial < 0) {
			partial = (int)i;
			partial_bytes = n;
			n = 0;
		}
		if (c->sending[i].replied)
			early = true;   /* a reply to bytes never sent */
	}
	/* the kernel is done with every buffer of this send */
	c->send_busy = false;
	c->nsending = 0;
	if (partial >= 0) {
		struct zdb_req *r = c->sending[partial].r;

		c->send_next = r;
		c->send_skip = req_wire_len(r) - c->sending[partial].len + partial_bytes;
	} else if (ns && !c->sending[ns - 1].replied) {
		c->send_next = c->sending[ns - 1].r->next;
		c->send_skip = 0;
	} else {
		c->send_next = c->fly_head;
		c->send_skip = 0;
	}
	for (i = 0; i < ns; i++)
		if (c->sending[i].replied && !conn_is_hs(c, c->sending[i].r))
			zdb_req_complete_later(c->b.loop, c->sending[i].r, c->sending[i].res);
	if (c->failing || c->stopping) {
		conn_fail(c, c->fail_err, NULL);
		return;
	}
	if (early) {
		conn_fail(c, -EPROTO, "reply received before its request was sent");
		return;
	}
	if (res <= 0) {
		conn_fail(c, res < 0 ? res : -EPIPE, "send failed");
		return;
	}
	conn_flush(c);
}

static void conn_add_iov(struct conn *c, unsigned *ni, const void *p, size_t len,
			 size_t *skip)
{
	if (*skip >= len) {
		*skip -= len;
		return;
	}
	c->iov[*ni].iov_base = (char *)p + *skip;
	c->iov[*ni].iov_len = len - *skip;
	*skip = 0;
	(*ni)++;
}

static void conn_send(struct conn *c)
{
	struct io_uring_sqe *sqe;
	struct zdb_req *r;
	size_t skip = c->send_skip;
	unsigned ni = 0;

	if (c->send_busy || !c->send_next || c->failing || c->fd < 0)
		return;
	c->nsending = 0;
	for (r = c->send_next; r && ni + 3 <= CONN_IOV_MAX; r = r->next) {
		struct conn_slot *sl = &c->sending[c->nsending++];

		sl->r = r;
		sl->len = req_wire_len(r) - skip;
		sl->replied = false;
		sl->res = 0;
		conn_add_iov(c, &ni, r->hdr, r->hdr_len, &skip);
		if (r->op == ZDB_OP_PUT) {
			conn_add_iov(c, &ni, r->val, r->val_len, &skip);
			conn_add_iov(c, &ni, crlf, 2, &skip);
		}
	}
	if (!ni) {
		c->nsending = 0;
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = ni;
	c->send_op.cb = conn_send_done;
	sqe = loop_sqe(c->b.loop, &c->send_op);
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	c->send_busy = true;
	c->kops++;
}

static void conn_flush(struct conn *c)
{
	if (c->failing || c->stopping || c->fd < 0)
		return;
	if (c->b.state == ZDB_CONN_READY) {
		while (c->pend_head && c->nfly < c->b.depth) {
			struct zdb_req *r = c->pend_head;

			c->pend_head = r->next;
			if (!c->pend_head)
				c->pend_tail = NULL;
			if (conn_encode(c, r) < 0) {
				conn_complete(c, r, -EINVAL);
				continue;
			}
			conn_fly_push(c, r);
		}
	}
	conn_send(c);
}

/* ---- handshake ---- */

static void conn_hs_send(struct conn *c, enum conn_hs step, unsigned argc,
			 const void *const *argv, const size_t *lens)
{
	struct zdb_req *h;
	int n;

	c->hs_cur ^= 1;
	h = &c->hs[c->hs_cur];
	n = resp_encode(h->hdr, sizeof(h->hdr), argc, argv, lens);
	if (n < 0) {
		conn_fail(c, -EINVAL, "handshake command too long");
		return;
	}
	h->op = CONN_OP_INTERNAL;
	h->hdr_len = (size_t)n;
	h->start_ns = now_ns();
	h->deadline_ns = h->start_ns + (step == HS_PING ? c->b.timeout_ns
					: c->b.connect_timeout_ns);
	c->hs_step = step;
	c->hs_busy = true;
	conn_fly_push(c, h);
	conn_send(c);
}

static void conn_hs_simple(struct conn *c, enum conn_hs step, const char *a,
			   const char *b2, const char *c3)
{
	const void *argv[3] = { a, b2, c3 };
	size_t lens[3] = { strlen(a), b2 ? strlen(b2) : 0, c3 ? strlen(c3) : 0 };

	conn_hs_send(c, step, c3 ? 3 : b2 ? 2 : 1, argv, lens);
}

static void conn_fatal(struct conn *c, int err, const char *fmt, const char *detail)
{
	conn_set_error(c, fmt, detail);
	log_error("backend %s (%s): %s", c->b.cfg.name, c->b.cfg.address, c->b.last_error);
	c->b.state = ZDB_CONN_FATAL;
	conn_event(c, ZDB_EV_FATAL);
	conn_fail(c, err, NULL);
}

static void conn_ready(struct conn *c)
{
	c->hs_step = HS_NONE;
	c->b.state = ZDB_CONN_READY;
	c->b.connects++;
	c->backoff_ns = 0;
	c->b.last_error[0] = 0;
	log_debug("backend %s: ready (%s)", c->b.cfg.name, zdb_dialect_name(c->b.dialect));
	conn_event(c, ZDB_EV_UP);
	conn_flush(c);
}

static void conn_hs_canary(struct conn *c)
{
	conn_hs_simple(c, HS_CANARY_GET, "GET", ZDB_CANARY_KEY, NULL);
}

static void conn_hs_select(struct conn *c)
{
	const char *ns = c->b.cfg.ns[0] ? c->b.cfg.ns : "default";

	if (c->b.dialect == ZDB_DIALECT_REDIS) {
		if (c->b.cfg.ns[0])
			conn_hs_simple(c, HS_SELECT, "SELECT", c->b.cfg.ns, NULL);
		else
			conn_hs_canary(c);
		return;
	}
	if (c->b.cfg.has_password)
		conn_hs_simple(c, HS_CHALLENGE, "AUTH", "SECURE", "CHALLENGE");
	else
		conn_hs_simple(c, HS_SELECT, "SELECT", ns, NULL);
}

static bool text_has(const char *s, size_t n, const char *needle)
{
	return memmem(s, n, needle, strlen(needle)) != NULL;
}

static int conn_classify(const char *s, size_t n, bool *refusal);

/* A handshake step answered with a passing state (0-db frozen namespace,
 * redis LOADING / BUSY / too many clients): fail the connection, to be
 * retried after the backoff — not FATAL.  True when it was one. */
static bool conn_hs_transient(struct conn *c, const struct resp_reply *rp)
{
	char why[ZDB_MSG_MAX + 32], m[ZDB_MSG_MAX];
	bool refusal;

	if (conn_classify(rp->str, rp->len, &refusal) != -EAGAIN)
		return false;
	if (text_has(rp->str, rp->len, "frozen")) {
		/* NSSET ns freeze 1 (0-db maintenance) */
		conn_fail(c, -EAGAIN, "namespace is frozen (0-db maintenance)");
		return true;
	}
	zdb_text_clean(m, sizeof(m), rp->str, rp->len);
	snprintf(why, sizeof(why), "server busy (%s)", m);
	conn_fail(c, -EAGAIN, why);
	return true;
}

/* The reply to the handshake step in progress.  Returns 0 or -errno (the
 * connection is then failed by the caller). */
static int conn_hs_reply(struct conn *c, const struct resp_reply *rp)
{
	char detail[101];
	size_t dl = rp->len < 100 ? rp->len : 100;

	if (rp->type == RESP_ERROR || rp->type == RESP_SIMPLE) {
		memcpy(detail, rp->str, dl);
		detail[dl] = 0;
	} else {
		detail[0] = 0;
	}
	switch (c->hs_step) {
	case HS_INFO:
		if (rp->type == RESP_ERROR) {
			if (conn_hs_transient(c, rp))
				return 0;
			if (!text_has(rp->str, rp->len, "NOAUTH") &&
			    !text_has(rp->str, rp->len, "uthentication required")) {
				conn_fatal(c, -EPROTO, "INFO refused: %s", detail);
				return 0;
			}
			if (!c->b.cfg.has_password) {
				conn_fatal(c, -EACCES, "server requires a password%s", "");
				return 0;
			}
			if (c->auth_tried) {
				conn_fatal(c, -EACCES, "authentication failed: %s", detail);
				return 0;
			}
			c->auth_tried = true;
			conn_hs_simple(c, HS_AUTH, "AUTH", c->b.cfg.password, NULL);
			return 0;
		}
		if (rp->type != RESP_BULK)
			return -EPROTO;
		if (text_has(rp->str, rp->len, "0-db"))
			c->b.dialect = ZDB_DIALECT_ZDB;
		else if (text_has(rp->str, rp->len, "redis_version:"))
			c->b.dialect = ZDB_DIALECT_REDIS;
		else {
			conn_fatal(c, -EPROTO, "unknown server (INFO has neither 0-db nor redis_version)%s", "");
			return 0;
		}
		if (!c->kind_warned &&
		    ((c->b.cfg.kind == ZDB_KIND_ZDB) != (c->b.dialect == ZDB_DIALECT_ZDB))) {
			c->kind_warned = 1;
			log_warn("backend %s: configured as %s but the server is %s; using %s",
				 c->b.cfg.name, c->b.cfg.kind == ZDB_KIND_ZDB ? "zdb" : "redis",
				 zdb_dialect_name(c->b.dialect), zdb_dialect_name(c->b.dialect));
		}
		if (c->b.dialect == ZDB_DIALECT_REDIS && c->b.cfg.ns[0]) {
			uint64_t db;

			if (parse_u64(c->b.cfg.ns, &db) < 0) {
				conn_fatal(c, -EINVAL, "redis namespace must be a database number, got '%s'",
					   c->b.cfg.ns);
				return 0;
			}
		}
		conn_hs_select(c);
		return 0;
	case HS_AUTH:
		if (rp->type == RESP_SIMPLE) {
			conn_hs_simple(c, HS_INFO, "INFO", NULL, NULL);
			return 0;
		}
		if (rp->type == RESP_ERROR) {
			conn_fatal(c, -EACCES, "authentication failed (wrong password?): %s", detail);
			return 0;
		}
		return -EPROTO;
	case HS_CHALLENGE: {
		const char *ns = c->b.cfg.ns[0] ? c->b.cfg.ns : "default";
		unsigned char md[SHA_DIGEST_LENGTH];
		char buf[64 + 130], hex[SHA_DIGEST_LENGTH * 2 + 1];
		int n, i;

		if (rp->type == RESP_ERROR) {
			/* old server without SECURE: plain password */
			conn_hs_simple(c, HS_SELECT, "SELECT", ns, c->b.cfg.password);
			return 0;
		}
		if (rp->type != RESP_SIMPLE || rp->len == 0 || rp->len > 63)
			return -EPROTO;
		n = snprintf(buf, sizeof(buf), "%.*s:%s", (int)rp->len, rp->str,
			     c->b.cfg.password);
		SHA1((const unsigned char *)buf, (size_t)n, md);
		explicit_bzero(buf, sizeof(buf));
		for (i = 0; i < SHA_DIGEST_LENGTH; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		{
			const void *argv[4] = { "SELECT", ns, "SECURE", hex };
			size_t lens[4] = { 6, strlen(ns), 6, 40 };

			conn_hs_send(c, HS_SELECT, 4, argv, lens);
		}
		return 0;
	}
	case HS_SELECT:
		if (rp->type == RESP_SIMPLE) {
			conn_hs_canary(c);
			return 0;
		}
		if (rp->type != RESP_ERROR)
			return -EPROTO;
		if (text_has(rp->str, rp->len, "Access denied"))
			conn_fatal(c, -EACCES, "namespace password rejected (wrong password): %s", detail);
		else if (text_has(rp->str, rp->len, "protected"))
			conn_fatal(c, -EACCES, "namespace needs a password: %s", detail);
		else if (text_has(rp->str, rp->len, "not found"))
			conn_fatal(c, -ENOENT, "namespace does not exist (run `nbdsrv pool init`): %s", detail);
		else
			conn_fatal(c, -EIO, "SELECT refused: %s", detail);
		return 0;
	case HS_CANARY_GET:
		if (rp->type == RESP_BULK) {
			c->b.canary_missing = false;
			c->canary_seen = true;
			if (c->b.dialect == ZDB_DIALECT_ZDB)
				conn_hs_simple(c, HS_CANARY_SET, "SET", ZDB_CANARY_KEY,
					       "nbdsrv pool canary v1");
			else
				conn_ready(c);
			return 0;
		}
		if (rp->type == RESP_ERROR) {
			if (text_has(rp->str, rp->len, "NOAUTH") || text_has(rp->str, rp->len, "NOPERM")) {
				conn_fatal(c, -EACCES, "not authorized: %s", detail);
				return 0;
			}
			if (conn_hs_transient(c, rp))
				return 0;
			if (c->b.dialect == ZDB_DIALECT_ZDB && text_has(rp->str, rp->len, "Invalid key")) {
				conn_fatal(c, -EINVAL, "namespace is in sequential mode (0-db --mode seq); "
					   "nbdsrv needs user-key mode: %s", detail);
				return 0;
			}
			return -EPROTO;
		}
		if (rp->type != RESP_NIL)
			return -EPROTO;
		c->b.canary_missing = true;
		if (c->canary_seen) {
			c->b.emptied++;
			log_warn("backend %s: canary key vanished: the backend was emptied",
				 c->b.cfg.name);
			conn_event(c, ZDB_EV_EMPTIED);
		}
		conn_hs_simple(c, HS_CANARY_SET, "SET", ZDB_CANARY_KEY, "nbdsrv pool canary v1");
		return 0;
	case HS_CANARY_SET:
		if (rp->type == RESP_ERROR && c->b.dialect == ZDB_DIALECT_ZDB &&
		    (text_has(rp->str, rp->len, "only update authorized") ||
		     text_has(rp->str, rp->len, "Invalid key"))) {
			conn_fatal(c, -EINVAL, "namespace is in sequential mode (0-db --mode seq); "
				   "nbdsrv needs user-key mode: %s", detail);
			return 0;
		}
		if (rp->type == RESP_ERROR && c->b.dialect == ZDB_DIALECT_ZDB &&
		    text_has(rp->str, rp->len, "in read-only mode")) {
			conn_fatal(c, -EACCES, "namespace is read-only without its password "
				   "(public but password-protected: set password): %s", detail);
			return 0;
		}
		if (rp->type == RESP_ERROR && c->b.dialect == ZDB_DIALECT_ZDB && c->canary_seen &&
		    text_has(rp->str, rp->len, "worm")) {
			/* WORM: new keys are written, nothing is ever deleted */
			if (!c->worm_warned) {
				c->worm_warned = 1;
				log_warn("backend %s: namespace is in WORM mode: what nbdsrv deletes "
					 "there is never freed", c->b.cfg.name);
			}
			conn_ready(c);
			return 0;
		}
		if (rp->type == RESP_ERROR) {
			conn_set_error(c, "cannot write the canary: %s", detail);
			log_warn("backend %s: %s", c->b.cfg.name, c->b.last_error);
		} else {
			c->canary_seen = true;
		}
		conn_ready(c);
		return 0;
	case HS_PING:
		return rp->type == RESP_SIMPLE ? 0 : -EPROTO;
	case HS_NONE:
		break;
	}
	return -EPROTO;
}

/* ---- replies ---- */

/*
 * What an error answer means.  Redis starts its errors with an upper-case
 * code word; 0-db sends fixed sentences (zdbd/commands*.c).  Matched as
 * prefixes, first hit wins; a refusal is a "no" the backend keeps saying
 * while up and the operator must see (zdb.h zdb_refusal); EAGAIN is a
 * passing state, retried like a timeout (the pool tries a spare or another
 * shard, the flusher keeps the object dirty).
 */
static const struct conn_errmap {
	const char *prefix;
	int err;
	bool refusal;
} conn_errmap[] = {
	/* 0-db */
	{ "No space left on this namespace", -ENOSPC, true },      /* NSSET maxsize */
	{ "Namespace is in read-only mode", -EROFS, true },        /* public, no password */
	{ "Namespace is temporarily locked", -EROFS, true },       /* NSSET lock 1 */
	{ "Namespace is protected by worm mode", -EROFS, true },
	{ "Cannot delete a key when namespace is in worm mode", -EROFS, true },
	{ "Cannot write data right now", -EIO, true },    /* data file write failed: */
	{ "Cannot write index right now", -EIO, true },   /* disk full or I/O error */
	{ "Namespace is temporarily frozen", -EAGAIN, false },     /* NSSET freeze 1 */
	{ "Access denied", -EACCES, true },
	{ "Unauthorized", -EACCES, true },
	{ "Permission denied", -EACCES, true },
	{ "Payload too big", -E2BIG, false },
	{ "Key too large", -E2BIG, false },
	/* redis */
	{ "OOM ", -ENOSPC, true },          /* maxmemory with noeviction */
	{ "READONLY ", -EROFS, true },      /* a replica */
	{ "MISCONF ", -EROFS, true },       /* stop-writes-on-bgsave-error */
	{ "NOREPLICAS ", -EROFS, true },    /* min-replicas-to-write */
	{ "NOAUTH ", -EACCES, true },
	{ "NOPERM ", -EACCES, true },
	{ "WRONGPASS ", -EACCES, true },
	{ "LOADING ", -EAGAIN, false },     /* loading its dataset after a restart */
	{ "BUSY ", -EAGAIN, false },        /* a script or module command runs */
	{ "MASTERDOWN ", -EAGAIN, false },  /* replica without its master */
	{ "TRYAGAIN ", -EAGAIN, false },
	{ "ERR max number of clients reached", -EAGAIN, false },
	{ "ERR string exceeds maximum allowed size", -E2BIG, false },
};

/* Class of an error answer: -errno, *refusal set for a refusal. */
static int conn_classify(const char *s, size_t n, bool *refusal)
{
	size_t i;

	*refusal = false;
	for (i = 0; i < ARRAY_SIZE(conn_errmap); i++) {
		size_t pl = strlen(conn_errmap[i].prefix);

		if ((n >= pl && !memcmp(s, conn_errmap[i].prefix, pl)) ||
		    (n + 1 == pl && conn_errmap[i].prefix[n] == ' ' && !memcmp(s, conn_errmap[i].prefix, n))) {
			*refusal = conn_errmap[i].refusal;
			return conn_errmap[i].err;
		}
	}
	/* other servers' and versions' wordings */
	if (text_has(s, n, "No space") || text_has(s, n, "out of memory")) {
		*refusal = true;
		return -ENOSPC;
	}
	if (text_has(s, n, "read-only") || text_has(s, n, "worm")) {
		*refusal = true;
		return -EROFS;
	}
	if (text_has(s, n, "too big") || text_has(s, n, "too large"))
		return -E2BIG;
	return -EIO;
}

/* The error answer rp to request r: r->msg keeps the words (so the pool
 * records the message of the very answer it counts, whatever came after
 * on the pipeline), last_error too; returns -errno. */
static int conn_map_error(struct conn *c, struct zdb_req *r, const struct resp_reply *rp)
{
	int err = conn_classify(rp->str, rp->len, &r->refused);

	zdb_text_clean(r->msg, sizeof(r->msg), rp->str, rp->len);
	snprintf(c->b.last_error, sizeof(c->b.last_error), "server error: %s", r->msg);
	if (text_has(rp->str, rp->len, "namespace is not available anymore"))
		c->ns_gone = true;      /* NSDEL'd under us: reconnect says so */
	return err;
}

static uint64_t info_field(const char *s, size_t n, const char *name)
{
	size_t nl = strlen(name);
	const char *p = s, *end = s + n;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (ll > nl && !memcmp(p, name, nl) && p[nl] == ':') {
			char num[32];
			size_t i = nl + 1, j = 0;
			uint64_t v;

			while (i < ll && p[i] == ' ')
				i++;
			while (i < ll && j + 1 < sizeof(num) && p[i] >= '0' && p[i] <= '9')
				num[j++] = p[i++];
			num[j] = 0;
			if (j && parse_u64(num, &v) == 0)
				return v;
			return UINT64_MAX;
		}
		p += ll + 1;
	}
	return UINT64_MAX;
}

static int conn_user_reply(struct conn *c, struct zdb_req *r, const struct resp_reply *rp)
{
	bool zdb = c->b.dialect == ZDB_DIALECT_ZDB;

	switch (r->op) {
	case ZDB_OP_PUT:
		if (rp->type == RESP_SIMPLE)
			return 0;
		if (zdb && (rp->type == RESP_BULK || rp->type == RESP_NIL))
			return 0;   /* key echoed, or nil: identical payload */
		if (rp->type == RESP_ERROR)
			return conn_map_error(c, r, rp);
		return -EPROTO;
	case ZDB_OP_GET:
		if (rp->type == RESP_BULK) {
			if (r->buf != rp->str)
				memcpy(r->buf, rp->str, rp->len);
			return (int)rp->len;
		}
		if (rp->type == RESP_NIL)
			return -ENOENT;
		if (rp->type == RESP_ERROR)
			return conn_map_error(c, r, rp);
		return -EPROTO;
	case ZDB_OP_DEL:
		if (rp->type == RESP_INT || rp->type == RESP_SIMPLE)
			return 0;
		if (rp->type == RESP_ERROR) {
			if (text_has(rp->str, rp->len, "Key not found"))
				return 0;
			return conn_map_error(c, r, rp);
		}
		return -EPROTO;
	case ZDB_OP_EXISTS:
		if (rp->type == RESP_INT)
			return rp->integer > 0 ? 1 : 0;
		if (rp->type == RESP_ERROR)
			return conn_map_error(c, r, rp);
		return -EPROTO;
	case ZDB_OP_PING:
		if (rp->type == RESP_SIMPLE)
			return 0;
		if (rp->type == RESP_ERROR)
			return conn_map_error(c, r, rp);
		return -EPROTO;
	case ZDB_OP_INFO: {
		struct zdb_info *in = r->buf;

		if (rp->type == RESP_ERROR)
			return conn_map_error(c, r, rp);
		if (rp->type != RESP_BULK)
			return -EPROTO;
		/* 0-db grants SELECT ns SECURE on a namespace without a
		 * password: only NSINFO tells that it is open */
		if (zdb && c->b.cfg.has_password) {
			c->b.ns_unprotected = text_has(rp->str, rp->len, "\npassword: no");
			if (c->b.ns_unprotected && !c->nopw_warned) {
				c->nopw_warned = 1;
				log_warn("backend %s: namespace %s has no password on the server "
					 "although pool.conf gives one: anyone can write and delete "
					 "there (set it: nbdsrv pool init)", c->b.cfg.name,
					 c->b.cfg.ns[0] ? c->b.cfg.ns : "default");
			}
		}
		if (!in || r->buf_len < sizeof(*in))
			return 0;
		if (zdb) {
			in->used_bytes = info_field(rp->str, rp->len, "data_size_bytes");
			in->limit_bytes = info_field(rp->str, rp->len, "data_limits_bytes");
			in->free_bytes = info_field(rp->str, rp->len, "data_disk_freespace_bytes");
			in->entries = info_field(rp->str, rp->len, "entries");
		} else {
			in->used_bytes = info_field(rp->str, rp->len, "used_memory");
			in->limit_bytes = info_field(rp->str, rp->len, "maxmemory");
			in->free_bytes = UINT64_MAX;
			in->entries = UINT64_MAX;
		}
		return 0;
	}
	}
	return -EPROTO;
}

/* Take the head of fly (the reply belongs to it). */
static struct zdb_req *conn_fly_pop(struct conn *c)
{
	struct zdb_req *r = c->fly_head;

	c->fly_head = r->next;
	if (!c->fly_head)
		c->fly_tail = NULL;
	c->nfly--;
	if (!conn_is_hs(c, r)) {
		c->b.inflight--;
		c->b.oldest_inflight_ns = 0;
		for (struct zdb_req *q = c->fly_head; q; q = q->next)
			if (!conn_is_hs(c, q)) {
				c->b.oldest_inflight_ns = q->start_ns;
				break;
			}
	}
	return r;
}

static size_t conn_max_bulk(struct conn *c, struct zdb_req *r)
{
	if (r->op == ZDB_OP_GET)
		return r->buf_len;
	if (r->op == ZDB_OP_INFO || conn_is_hs(c, r))
		return CONN_RX_SIZE - 64;
	return ZDB_KEY_MAX + 64;     /* SET echoes the key on 0-db */
}

/* Parse and dispatch every complete reply in rx.  Returns 0, or -errno
 * after failing the connection. */
static int conn_process(struct conn *c)
{
	while (c->rx_off < c->rx_len) {
		struct resp_reply rp;
		struct zdb_req *r = c->fly_head;
		size_t avail = c->rx_len - c->rx_off;
		const char *p = c->rx + c->rx_off;
		int n, res;

		if (c->expect_crlf) {
			if (avail < 2)
				break;
			if (p[0] != '\r' || p[1] != '\n') {
				conn_fail(c, -EPROTO, "bulk payload not followed by CRLF");
				return -EPROTO;
			}
			c->rx_off += 2;
			c->expect_crlf = false;
			r = conn_fly_pop(c);
			conn_complete(c, r, (int)c->direct_len);
			continue;
		}
		if (!r || (c->send_busy ? c->sending[c->nsending - 1].replied
				       : r == c->send_next)) {
			/* a reply to nothing we have sent completely */
			conn_fail(c, -EPROTO, "unsolicited or out-of-order reply");
			return -EPROTO;
		}
		n = resp_parse(p, avail, conn_max_bulk(c, r), &rp);
		if (n < 0) {
			conn_fail(c, n, n == -EMSGSIZE ? "oversized reply" : "malformed reply");
			return n;
		}
		if (n == 0) {
			if (rp.type == RESP_BULK && r->op == ZDB_OP_GET && rp.hdr_len &&
			    ((size_t)rp.integer + 2 > avail - rp.hdr_len + CONN_DIRECT_MIN ||
			     rp.hdr_len + (size_t)rp.integer + 2 > CONN_RX_SIZE / 2)) {
				size_t have = avail - rp.hdr_len;

				c->direct = r;
				c->direct_len = (size_t)rp.integer;
				c->direct_got = MIN(have, c->direct_len);
				memcpy(r->buf, p + rp.hdr_len, c->direct_got);
				c->rx_off += rp.hdr_len + c->direct_got;
				if (c->direct_got == c->direct_len) {
					c->direct = NULL;
					c->expect_crlf = true;
					continue;
				}
			}
			break;
		}
		c->rx_off += (size_t)n;
		c->last_rx_ns = now_ns();
		r = conn_fly_pop(c);
		if (conn_is_hs(c, r)) {
			c->hs_busy = false;
			conn_complete(c, r, 0);
			res = conn_hs_reply(c, &rp);
			if (res < 0) {
				conn_fail(c, res, "unexpected handshake reply");
				return res;
			}
			if (c->failing || c->fd < 0)
				return -EIO;
			continue;
		}
		res = conn_user_reply(c, r, &rp);
		if (res == -EPROTO) {
			/* a reply of the wrong shape: we are out of step */
			conn_complete(c, r, -EIO);
			conn_fail(c, -EPROTO, "reply does not match the request (out of order?)");
			return -EPROTO;
		}
		conn_complete(c, r, res);
		if (c->ns_gone) {
			/* not -ENOENT: the requests behind it were not answered,
			 * and a GET's -ENOENT means "no such key" */
			c->ns_gone = false;
			conn_fail(c, -EIO, "the namespace was removed on the server");
			return -EIO;
		}
	}
	if (c->rx_off == c->rx_len) {
		c->rx_off = c->rx_len = 0;
	} else if (c->rx_off > 0 && (c->rx_len == CONN_RX_SIZE || c->rx_off > CONN_RX_SIZE / 2)) {
		memmove(c->rx, c->rx + c->rx_off, c->rx_len - c->rx_off);
		c->rx_len -= c->rx_off;
		c->rx_off = 0;
	}
	if (!c->direct && c->rx_len == CONN_RX_SIZE) {
		conn_fail(c, -EMSGSIZE, "reply larger than the receive buffer");
		return -EMSGSIZE;
	}
	return 0;
}

static void conn_recv_done(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, recv_op);

	(void)flags;
	c->kops--;
	c->recv_busy = false;
	if (c->failing || c->stopping) {
		conn_fail(c, c->fail_err, NULL);
		return;
	}
	if (res <= 0) {
		conn_fail(c, res < 0 ? res : -ECONNRESET,
			  res < 0 ? "receive failed" : "connection closed by the server");
		return;
	}
	c->last_rx_ns = now_ns();
	if (c->direct) {
		c->direct_got += (size_t)res;
		if (c->direct_got == c->direct_len) {
			c->direct = NULL;
			c->expect_crlf = true;
		}
	} else {
		c->rx_len += (size_t)res;
	}
	if (conn_process(c) < 0)
		return;
	conn_flush(c);
	conn_arm_recv(c);
}

static void conn_arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_busy || c->failing || c->fd < 0 || c->stopping)
		return;
	c->recv_op.cb = conn_recv_done;
	sqe = loop_sqe(c->b.loop, &c->recv_op);
	if (c->direct)
		io_uring_prep_recv(sqe, c->fd, (char *)c->direct->buf + c->direct_got,
				   c->direct_len - c->direct_got, 0);
	else {
		/* When the next reply is a large GET payload, read only its head
		 * here: the payload then goes straight into the caller's buffer
		 * (at most CONN_HEAD_PEEK bytes of it are copied). */
		struct zdb_req *next = c->fly_head;
		size_t len = CONN_RX_SIZE - c->rx_len;

		if (next && c->expect_crlf)
			next = next->next;
		if (next && next->op == ZDB_OP_GET && next->buf_len >= CONN_DIRECT_MIN &&
		    c->rx_len - c->rx_off < CONN_HEAD_PEEK)
			len = MIN(len, CONN_HEAD_PEEK);
		io_uring_prep_recv(sqe, c->fd, c->rx + c->rx_len, len, 0);
	}
	c->recv_busy = true;
	c->kops++;
}

/* ---- connection lifecycle ---- */

static void conn_stop_done(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, stop_op);

	(void)res; (void)flags;
	c->kops--;
	if (c->kops == 0 && !c->stopped_sent) {
		c->stopped_sent = true;
		if (c->b.stopped)
			c->b.stopped(&c->b);
	}
}

/* True when the socket must not be closed while requests are unanswered
 * (see "Lingering"). */
static bool conn_must_linger(const struct conn *c)
{
	return c->fly_head && (c->b.dialect == ZDB_DIALECT_ZDB ||
			       (c->b.dialect == ZDB_DIALECT_UNKNOWN &&
				c->b.cfg.kind == ZDB_KIND_ZDB));
}

static void conn_linger_close(struct conn *c, unsigned i)
{
	close(c->linger[i].fd);
	c->linger[i] = c->linger[--c->nlinger];
}

/* Keep fd (already SHUT_WR) open until the server closes it. */
static void conn_linger_add(struct conn *c, int fd)
{
	if (c->nlinger == CONN_LINGER_MAX) {
		unsigned i, oldest = 0;

		for (i = 1; i < c->nlinger; i++)
			if (c->linger[i].until_ns < c->linger[oldest].until_ns)
				oldest = i;
		conn_linger_close(c, oldest);
	}
	c->linger[c->nlinger].fd = fd;
	c->linger[c->nlinger].until_ns = now_ns() + CONN_LINGER_NS;
	c->nlinger++;
}

/* Drain the lingering sockets; close those the server closed. */
static void conn_linger_tick(struct conn *c, uint64_t now)
{
	char scratch[16384];
	unsigned i = 0;

	while (i < c->nlinger) {
		ssize_t n;
		int rounds = 0;

		do
			n = recv(c->linger[i].fd, scratch, sizeof(scratch), MSG_DONTWAIT);
		while (n > 0 && ++rounds < 64);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
		    now > c->linger[i].until_ns)
			conn_linger_close(c, i);
		else
			i++;
	}
}

/* Tear down (idempotent): wake kernel ops; when none is left, close the fd,
 * fail every request, and schedule the reconnect. */
static void conn_fail(struct conn *c, int err, const char *why)
{
	if (!c->failing) {
		c->failing = true;
		c->fail_err = err;
		if (why) {
			snprintf(c->b.last_error, sizeof(c->b.last_error), "%s: %s", why,
				 strerror(-err));
			if (err != -ECANCELED)
				log_warn("backend %s (%s): %s (%s); reconnecting", c->b.cfg.name,
					 c->b.cfg.address, why, strerror(-err));
		}
		if (c->fd >= 0) {
			struct io_uring_sqe *sqe;

			shutdown(c->fd, conn_must_linger(c) ? SHUT_WR : SHUT_RDWR);
			sqe = loop_sqe(c->b.loop, NULL);
			io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		}
	}
	if (c->kops > 0)
		return;
	if (c->fd >= 0) {
		if (conn_must_linger(c))
			conn_linger_add(c, c->fd);
		else
			close(c->fd);
		c->fd = -1;
	}
	c->direct = NULL;
	c->expect_crlf = false;
	c->rx_off = c->rx_len = 0;
	c->failing = false;
	conn_fail_all(c, c->fail_err == 0 ? -EIO : c->fail_err);
	if (c->b.state == ZDB_CONN_READY)
		conn_event(c, ZDB_EV_DOWN);
	if (c->stopping) {
		c->b.state = ZDB_CONN_STOPPED;
		if (!c->stopped_sent) {
			/* report from the loop, never from inside stop() */
			struct io_uring_sqe *sqe;

			c->stop_op.cb = conn_stop_done;
			sqe = loop_sqe(c->b.loop, &c->stop_op);
			io_uring_prep_nop(sqe);
			c->kops++;
		}
		return;
	}
	if (c->b.state != ZDB_CONN_FATAL)
		c->b.state = ZDB_CONN_BACKOFF;
	if (c->b.state == ZDB_CONN_FATAL)
		c->backoff_ns = CONN_BACKOFF_MAX;
	else
		c->backoff_ns = c->backoff_ns ? MIN(c->backoff_ns * 2, CONN_BACKOFF_MAX)
					      : CONN_BACKOFF_MIN;
	c->next_attempt_ns = now_ns() + c->backoff_ns;
}

static void conn_connect_done(struct loop_op *op, int res, uint32_t flags)
{
	struct conn *c = container_of(op, struct conn, connect_op);

	(void)flags;
	c->kops--;
	if (c->failing || c->stopping) {
		conn_fail(c, c->fail_err, NULL);
		return;
	}
	if (res < 0) {
		if (res == -ECANCELED)
			res = -ETIMEDOUT;
		conn_fail(c, res, res == -ETIMEDOUT ? "connect timed out" : "connect failed");
		return;
	}
	c->last_rx_ns = now_ns();
	conn_arm_recv(c);
	conn_hs_simple(c, HS_INFO, "INFO", NULL, NULL);
}

static void conn_connect(struct conn *c)
{
	struct io_uring_sqe *sqe;
	int one = 1;

	c->fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		c->fail_err = -errno;
		c->b.state = ZDB_CONN_BACKOFF;
		c->backoff_ns = CONN_BACKOFF_MAX;
		c->next_attempt_ns = now_ns() + c->backoff_ns;
		conn_set_error(c, "socket: %s", strerror(errno));
		return;
	}
	if (c->sa.ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->b.state != ZDB_CONN_FATAL)
		c->b.state = ZDB_CONN_CONNECTING;
	c->auth_tried = false;
	c->attempt_start_ns = now_ns();
	c->connect_op.cb = conn_connect_done;
	sqe = loop_sqe(c->b.loop, &c->connect_op);
	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&c->sa, c->salen);
	sqe->flags |= IOSQE_IO_LINK;
	c->kops++;
	c->connect_ts.tv_sec = c->b.connect_timeout_ns / 1000000000ull;
	c->connect_ts.tv_nsec = c->b.connect_timeout_ns % 1000000000ull;
	sqe = loop_sqe(c->b.loop, NULL);
	io_uring_prep_link_timeout(sqe, &c->connect_ts, 0);
}

static int conn_start(struct zdb_backend *b)
{
	struct conn *c = (struct conn *)b;

	if (c->salen == 0)
		return -EHOSTUNREACH;   /* stays FATAL with its message */
	c->b.state = ZDB_CONN_CONNECTING;
	conn_connect(c);
	return 0;
}

static void conn_submit(struct zdb_backend *b, struct zdb_req *r)
{
	struct conn *c = (struct conn *)b;

	r->be = b;
	r->next = NULL;
	r->refused = false;
	r->msg[0] = 0;
	r->start_ns = now_ns();
	r->deadline_ns = r->start_ns + (r->timeout_ns ? r->timeout_ns : b->timeout_ns);
	if ((r->op != ZDB_OP_PING && r->op != ZDB_OP_INFO) &&
	    (r->key_len == 0 || r->key_len > ZDB_KEY_MAX)) {
		zdb_req_complete_later(b->loop, r, -EINVAL);
		return;
	}
	if (r->op == ZDB_OP_PUT && r->val_len > ZDB_VALUE_MAX) {
		log_error("backend %s: value of %zu bytes refused: larger than 0-db's limit of %u",
			  b->cfg.name, r->val_len, ZDB_VALUE_MAX);
		zdb_req_complete_later(b->loop, r, -E2BIG);
		return;
	}
	switch (b->state) {
	case ZDB_CONN_READY:
	case ZDB_CONN_CONNECTING:
	case ZDB_CONN_IDLE:
		if (c->stopping)
			break;
		if (c->pend_tail)
			c->pend_tail->next = r;
		else
			c->pend_head = r;
		c->pend_tail = r;
		conn_flush(c);
		return;
	default:
		break;
	}
	zdb_req_complete_later(b->loop, r, b->state == ZDB_CONN_FATAL ? -EACCES
				: c->stopping ? -ECANCELED : -ENOTCONN);
}

static void conn_tick(struct zdb_backend *b, uint64_t now)
{
	struct conn *c = (struct conn *)b;
	struct zdb_req *r, **pp;

	if (c->nlinger)
		conn_linger_tick(c, now);
	if (c->stopping || c->failing)
		return;
	if (c->fly_head && now > c->fly_head->deadline_ns) {
		conn_fail(c, -ETIMEDOUT, conn_is_hs(c, c->fly_head) ? "handshake timed out"
			  : "request timed out");
		return;
	}
	/* unsent requests past their deadline */
	for (pp = &c->pend_head; (r = *pp);) {
		if (now > r->deadline_ns) {
			*pp = r->next;
			if (c->pend_tail == r)
				c->pend_tail = NULL;
			conn_complete(c, r, -ETIMEDOUT);
			continue;
		}
		c->pend_tail = r;
		pp = &r->next;
	}
	if (!c->pend_head)
		c->pend_tail = NULL;
	if ((b->state == ZDB_CONN_BACKOFF || b->state == ZDB_CONN_FATAL) &&
	    c->fd < 0 && c->salen && now >= c->next_attempt_ns) {
		conn_connect(c);
		return;
	}
	if (b->state == ZDB_CONN_READY && !c->hs_busy && !c->fly_head &&
	    now - c->last_rx_ns > (b->ping_ns ? b->ping_ns : CONN_PING_NS))
		conn_hs_simple(c, HS_PING, "PING", NULL, NULL);
}

static void conn_stop(struct zdb_backend *b)
{
	struct conn *c = (struct conn *)b;

	if (c->stopping)
		return;
	c->stopping = true;
	conn_fail(c, -ECANCELED, NULL);
	if (c->fd >= 0 || c->kops)
		return;
}

static void conn_destroy(struct zdb_backend *b)
{
	struct conn *c = (struct conn *)b;

	if (c->fd >= 0)
		close(c->fd);
	while (c->nlinger)
		conn_linger_close(c, 0);
	explicit_bzero(c->b.cfg.password, sizeof(c->b.cfg.password));
	free(c->rx);
	free(c);
}

static const struct zdb_backend_ops conn_ops = {
	.kind = "zdb",
	.start = conn_start,
	.submit = conn_submit,
	.tick = conn_tick,
	.stop = conn_stop,
	.destroy = conn_destroy,
};

static const struct zdb_backend_ops conn_redis_ops = {
	.kind = "redis",
	.start = conn_start,
	.submit = conn_submit,
	.tick = conn_tick,
	.stop = conn_stop,
	.destroy = conn_destroy,
};

/* Resolve cfg->address: "unix:/path", "/path", "[v6]:port", "host:port". */
static int conn_resolve(struct conn *c, const char *addr)
{
	char host[256];
	const char *port;
	struct addrinfo hints, *res = NULL;
	int r;

	if (!strncmp(addr, "unix:", 5) || addr[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&c->sa;
		const char *path = addr[0] == '/' ? addr : addr + 5;

		if (strlen(path) == 0 || strlen(path) >= sizeof(un->sun_path))
			return -EINVAL;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, path);
		c->salen = sizeof(*un);
		return 0;
	}
	if (addr[0] == '[') {
		const char *e = strchr(addr, ']');

		if (!e || e[1] != ':' || (size_t)(e - addr - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr + 1, (size_t)(e - addr - 1));
		host[e - addr - 1] = 0;
		port = e + 2;
	} else {
		const char *e = strrchr(addr, ':');

		if (!e || (size_t)(e - addr) >= sizeof(host) || e == addr)
			return -EINVAL;
		memcpy(host, addr, (size_t)(e - addr));
		host[e - addr] = 0;
		port = e + 1;
	}
	{
		uint64_t pv;

		if (parse_u64(port, &pv) < 0 || pv == 0 || pv > 65535)
			return -EINVAL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0 || !res)
		return -EHOSTUNREACH;
	memcpy(&c->sa, res->ai_addr, res->ai_addrlen);
	c->salen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Exposed for the config parser: validate an address without connecting. */
int zdb_address_check(const char *addr);
int zdb_address_check(const char *addr)
{
	struct sockaddr_storage sa;
	socklen_t len;

	return zdb_address_resolve(addr, &sa, &len);
}

int zdb_address_resolve(const char *addr, struct sockaddr_storage *sa, socklen_t *len)
{
	struct conn *tmp = calloc(1, sizeof(*tmp));
	int r;

	if (!tmp)
		return -ENOMEM;
	r = conn_resolve(tmp, addr);
	if (r == 0) {
		*sa = tmp->sa;
		*len = tmp->salen;
	}
	free(tmp);
	return r;
}

struct zdb_backend *zdb_conn_create(struct loop *l, const struct zdb_backend_cfg *cfg)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->rx = malloc(CONN_RX_SIZE);
	if (!c->rx) {
		free(c);
		return NULL;
	}
	c->b.ops = cfg->kind == ZDB_KIND_REDIS ? &conn_redis_ops : &conn_ops;
	c->b.loop = l;
	c->b.cfg = *cfg;
	c->b.depth = 16;
	c->b.timeout_ns = 5000ull * 1000000;
	c->b.connect_timeout_ns = 2000ull * 1000000;
	c->fd = -1;
	if (conn_resolve(c, cfg->address) < 0) {
		c->b.state = ZDB_CONN_FATAL;
		snprintf(c->b.last_error, sizeof(c->b.last_error), "cannot resolve address");
	}
	return &c->b;
}
