/*
 * zdb.h — the backend pool: where shards live.
 *
 * Contents
 *   1. RESP2       — encoder and bounded, incremental reply parser (resp.c)
 *   2. requests    — one key/value operation on one backend (struct zdb_req)
 *   3. backends    — the ops table every backend kind implements
 *                    (zdb/redis client: conn.c, local folder: dir.c,
 *                    fault-injecting wrapper: fault.c)
 *   4. config      — the pool's configuration file (config.c)
 *   5. pool        — backends + health + placement + chunk put/get with
 *                    spares and hedging; status formatting (pool.c)
 *
 * Threading: everything here runs on the thread that owns the `struct loop`
 * given to zdb_pool_open() (or to a backend's create function).  Completion
 * callbacks run on that thread, never from inside the call that submitted
 * the operation (a request refused at once still completes through the loop),
 * so callers may resubmit from a callback without recursion.
 *
 * Keys are opaque bytes (1..ZDB_KEY_MAX).  Values are at most ZDB_VALUE_MAX
 * bytes (0-db's hard limit); larger puts fail with -E2BIG before anything is
 * sent.  Secrets (passwords) never reach a log line, an error message or the
 * status output.
 */
#ifndef NBDSRV_ZDB_H
#define NBDSRV_ZDB_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define ZDB_KEY_MAX    255u
#define ZDB_VALUE_MAX  (8u << 20)          /* 8,388,608: 0-db's limit */
#define ZDB_MAX_BACKENDS 256u
#define ZDB_MAX_SHARDS  64u                /* k + m */
#define ZDB_MSG_MAX     100u               /* a server's error text kept, + NUL */

/* ---------------------------------------------------------------- 1 ---- */

enum resp_type {
	RESP_NONE = 0,
	RESP_SIMPLE,            /* +text */
	RESP_ERROR,             /* -text */
	RESP_INT,               /* :n */
	RESP_BULK,              /* $n payload */
	RESP_NIL,               /* $-1 or *-1 */
	RESP_ARRAY,             /* *n elements (elements validated, not returned) */
};

/* One parsed reply.  str/len point into the parser's input buffer. */
struct resp_reply {
	enum resp_type type;
	const char *str;        /* SIMPLE/ERROR text, BULK payload */
	size_t len;             /* its length */
	int64_t integer;        /* INT value; ARRAY element count; BULK length */
	size_t hdr_len;         /* bytes of the first line incl. CRLF (0 if
	                         * not yet complete) */
};

#define RESP_LINE_MAX   4096u  /* longest status/error/integer line */
#define RESP_DEPTH_MAX  4u     /* nesting of arrays */
#define RESP_ARRAY_MAX  1024u  /* elements per array */

/* Parse one reply from buf[0..len).  Returns the reply's total size (> 0)
 * when complete; 0 when more bytes are needed (for a BULK whose header is
 * complete, r->type, r->integer and r->hdr_len are already set so the caller
 * may receive the payload elsewhere); -EPROTO when malformed; -EMSGSIZE when
 * a line, bulk (> max_bulk) or array exceeds the bounds.  Never allocates. */
int resp_parse(const char *buf, size_t len, size_t max_bulk, struct resp_reply *r);

/* Encode the array header and every argument of a command into out (no
 * payload elision).  Returns the size, or -ENOBUFS if it does not fit. */
int resp_encode(char *out, size_t cap, unsigned argc, const void *const *argv,
		const size_t *lens);
/* Encode a command whose LAST argument (len last_len) is sent separately:
 * out gets everything up to and including that argument's "$n\r\n"; the
 * caller sends the payload then "\r\n".  Returns the size or -ENOBUFS. */
int resp_encode_head(char *out, size_t cap, unsigned argc,
		     const void *const *argv, const size_t *lens, size_t last_len);

/* ---------------------------------------------------------------- 2 ---- */

enum zdb_op {
	ZDB_OP_PUT = 1,         /* set key = val; idempotent */
	ZDB_OP_GET,             /* read key into buf; result = bytes */
	ZDB_OP_DEL,             /* delete key; missing is success */
	ZDB_OP_EXISTS,          /* result 1 or 0 */
	ZDB_OP_PING,            /* result 0 */
	ZDB_OP_INFO,            /* fill *(struct zdb_info *)buf */
};

/* Capacity and identity of a backend, from NSINFO (zdb), INFO (redis) or
 * statvfs (dir).  Unknown numbers are UINT64_MAX. */
struct zdb_info {
	uint64_t used_bytes;
	uint64_t limit_bytes;   /* 0 = no limit */
	uint64_t free_bytes;    /* disk free under the backend */
	uint64_t entries;
};

struct zdb_req;
typedef void zdb_done_fn(struct zdb_req *req);

/*
 * A request: the caller fills the public part, keeps key/val/buf valid and
 * the struct itself untouched until done() runs (exactly once, on the loop
 * thread).  result: >= 0 on success (GET: payload length; EXISTS: 0/1),
 * otherwise -ENOENT (GET of a missing key), -E2BIG (value too large),
 * -EMSGSIZE (payload larger than buf_len), -ETIMEDOUT (deadline),
 * -ENOTCONN (backend down), -EACCES (auth, denied), -ENOSPC (full), -EROFS
 * (writes refused: read-only, locked, WORM, a replica, redis MISCONF or
 * NOREPLICAS), -EAGAIN (the server is busy for a while: redis LOADING,
 * BUSY, MASTERDOWN, too many clients; 0-db frozen namespace — retry, maybe
 * elsewhere), -EIO (any other error answer; with refused set: 0-db could
 * not write its data or index file), -ECANCELED.
 */
struct zdb_req {
	enum zdb_op op;
	const void *key;
	size_t key_len;
	const void *val;        /* PUT payload */
	size_t val_len;
	void *buf;              /* GET destination / INFO struct zdb_info */
	size_t buf_len;
	uint64_t timeout_ns;    /* 0 = backend default */
	zdb_done_fn *done;
	void *priv;             /* for the caller */
	int result;
	/* Set with result when it is < 0: refused = the backend refuses this
	 * while up (full, read-only, denied, its disk failing: see zdb_refusal),
	 * not a transient or transport failure; msg = the server's own words
	 * for this request's error answer (printable ASCII, at most
	 * ZDB_MSG_MAX - 1 bytes, "..." when cut), "" when it sent none. */
	bool refused;
	char msg[ZDB_MSG_MAX];

	/* internal — owned by the backend while in flight */
	struct zdb_req *next;
	struct loop_op defer_op;
	struct loop_timer timer;        /* fault wrapper delays */
	uint64_t start_ns;
	uint64_t deadline_ns;
	struct zdb_backend *be;
	struct zdb_pool *pool;          /* set by zdb_pool_submit() */
	zdb_done_fn *user_done;         /* the caller's done, while the pool
	                                 * intercepts completion for health */
	unsigned pool_idx;
	size_t hdr_len;                 /* bytes of hdr used */
	char hdr[ZDB_KEY_MAX + 64];     /* encoded command head */
};

/* ---------------------------------------------------------------- 3 ---- */

enum zdb_kind { ZDB_KIND_ZDB = 1, ZDB_KIND_REDIS, ZDB_KIND_DIR };
enum zdb_dialect { ZDB_DIALECT_UNKNOWN = 0, ZDB_DIALECT_ZDB, ZDB_DIALECT_REDIS,
		   ZDB_DIALECT_DIR };

/* Connection state, as health sees it. */
enum zdb_conn_state {
	ZDB_CONN_IDLE = 0,      /* not started */
	ZDB_CONN_CONNECTING,    /* connect or handshake in progress */
	ZDB_CONN_READY,
	ZDB_CONN_BACKOFF,       /* failed; waiting to retry */
	ZDB_CONN_FATAL,         /* configuration error (auth, namespace): retried
	                         * slowly, reported */
	ZDB_CONN_STOPPED,
};

/* One backend's configuration (from the config file or built by a test). */
struct zdb_backend_cfg {
	char name[64];
	enum zdb_kind kind;
	char address[256];      /* host:port, [v6]:port, unix:/path; dir: folder */
	char ns[129];           /* zdb namespace; redis: numeric db or empty */
	char password[129];     /* secret: never logged */
	bool has_password;
	char zone[64];
	unsigned line;          /* where it was defined (for messages) */
};

struct zdb_backend;

/*
 * The ops every backend kind implements.  All are called on the owning loop
 * thread.  A backend struct starts with `const struct zdb_backend_ops *ops`
 * (struct zdb_backend below is that common head).
 */
struct zdb_backend_ops {
	const char *kind;
	/* Required.  Begin connecting (may be a no-op); never blocks. */
	int (*start)(struct zdb_backend *b);
	/* Required.  Queue req; req->done runs later, exactly once, on the loop
	 * thread — never inside submit. */
	void (*submit)(struct zdb_backend *b, struct zdb_req *req);
	/* Optional.  Periodic housekeeping (deadlines, reconnect, ping); now
	 * is now_ns(). */
	void (*tick)(struct zdb_backend *b, uint64_t now);
	/* Required.  Fail queued and in-flight requests with -ECANCELED, close
	 * everything, then call b->stopped(b) (later, from the loop) once no
	 * kernel operation refers to b any more. */
	void (*stop)(struct zdb_backend *b);
	/* Required.  Free b (only after stopped ran, or if never started). */
	void (*destroy)(struct zdb_backend *b);
};

/* Common head of every backend instance. */
struct zdb_backend {
	const struct zdb_backend_ops *ops;     /* first member */
	struct loop *loop;
	struct zdb_backend_cfg cfg;
	void (*stopped)(struct zdb_backend *b);  /* set by the owner */
	void (*on_event)(struct zdb_backend *b, int event);  /* optional */
	void *owner;
	/* reported by the implementation */
	enum zdb_conn_state state;
	enum zdb_dialect dialect;
	unsigned depth;         /* max requests in flight */
	uint64_t timeout_ns;    /* default request deadline */
	uint64_t connect_timeout_ns;
	uint64_t ping_ns;       /* PING after this long without traffic */
	char last_error[160];   /* human-readable, secret-free */
	uint64_t oldest_inflight_ns;   /* start time of the oldest in-flight
	                                * request, 0 if none */
	unsigned inflight;
	uint64_t connects;      /* successful handshakes */
	bool canary_missing;    /* canary absent at the last handshake */
	uint64_t emptied;       /* times the canary vanished after we saw it */
	bool ns_unprotected;    /* 0-db: pool.conf gives a password but the
	                         * namespace has none (last NSINFO): anyone
	                         * can write and delete there */
};

enum zdb_event {
	ZDB_EV_UP = 1,          /* handshake done */
	ZDB_EV_DOWN,            /* connection lost */
	ZDB_EV_EMPTIED,         /* canary missing after it had been seen */
	ZDB_EV_FATAL,           /* auth/namespace error */
};

/* Resolve "host:port", "[v6]:port", "unix:/path" or "/path" (may block on
 * DNS: call at startup, not on the loop).  0, -EINVAL or -EHOSTUNREACH. */
int zdb_address_resolve(const char *addr, struct sockaddr_storage *sa, socklen_t *len);

/* Create a zdb/redis client backend (not yet started).  NULL on ENOMEM. */
struct zdb_backend *zdb_conn_create(struct loop *l, const struct zdb_backend_cfg *cfg);
/* Create a local-folder backend whose file I/O runs on wq. */
struct zdb_backend *zdb_dir_create(struct loop *l, const struct zdb_backend_cfg *cfg,
				   struct workq *wq);

/* Faults the wrapper can inject (probabilities in 1/1000). */
struct zdb_fault {
	unsigned fail_permille;     /* complete with fail_err */
	int fail_err;               /* that error (-errno); 0 = -EIO */
	unsigned drop_permille;     /* never answer: -ETIMEDOUT at deadline */
	unsigned corrupt_permille;  /* flip one byte of a GET payload */
	uint64_t delay_ns;          /* added to every request */
	bool blackhole;             /* every request hangs until its deadline */
	bool down;                  /* disconnected: the pool sees it DOWN,
	                             * requests fail -ENOTCONN at once */
};
/* Wrap inner (taking ownership) in a fault injector, initially pass-through. */
struct zdb_backend *zdb_fault_wrap(struct zdb_backend *inner);
/* Change the faults of a wrapper made by zdb_fault_wrap(). */
void zdb_fault_set(struct zdb_backend *wrapper, const struct zdb_fault *f);

/* Submit through the ops table (convenience). */
static inline void zdb_backend_submit(struct zdb_backend *b, struct zdb_req *r)
{
	b->ops->submit(b, r);
}

/* Complete req with res from the loop (never inline).  For implementations. */
void zdb_req_complete_later(struct loop *l, struct zdb_req *req, int res);

const char *zdb_dialect_name(enum zdb_dialect d);
const char *zdb_conn_state_name(enum zdb_conn_state s);

/* The canary key every backend gets at handshake. */
#define ZDB_CANARY_KEY "nbdsrv.canary"

/* ---------------------------------------------------------------- 4 ---- */

enum zdb_cache_mode { ZDB_CACHE_WRITEBACK = 0, ZDB_CACHE_WRITETHROUGH };

struct zdb_pool_cfg {
	char path[512];             /* the config file */
	unsigned k, m;
	unsigned min_shards;        /* default k + 1 */
	uint64_t chunk_size;        /* default 1 MiB */
	char key_file[512];
	char cache_path[512];
	uint64_t cache_size;
	enum zdb_cache_mode cache_mode;
	uint64_t cache_dirty_max;   /* objects not yet in the pool before
	                             * writers wait; 0 = the cache's default */
	unsigned flush_parallel;    /* objects in flight to the pool; 0 = default */
	/* write-back delay (cache/cache.h ssdcache_opts), each used only
	 * when its _set is true */
	uint64_t flush_idle_ms, flush_max_age_ms, flush_background;
	bool flush_idle_set, flush_max_age_set, flush_background_set;
	uint64_t shutdown_flush_timeout_ms; /* a clean stop's pool drain
	                             * (nbdsrv serve), default 30000, 0 = none */
	uint64_t scrub_rate;        /* bytes/s a deep scrub reads, default
	                             * 64 MiB/s, 0 = unlimited */
	char listen[8][256];
	unsigned nlisten;
	unsigned depth;             /* in flight per backend, default 16 */
	uint64_t timeout_ns;        /* request deadline, default 5 s */
	uint64_t connect_timeout_ns;/* default 2 s */
	uint64_t hedge_ns;          /* 0 = auto (from p99) */
	uint64_t slow_ns;           /* slow threshold, default 200 ms */
	uint64_t ping_ns;           /* idle ping period, default 1 s */
	unsigned nbackends;
	struct zdb_backend_cfg backends[ZDB_MAX_BACKENDS];
};

/* Parse a pool configuration file strictly.  On error returns -EINVAL (or
 * -errno for an unreadable file) and writes "FILE:LINE: reason" to err.
 * The result holds passwords: wipe it (zdb_pool_cfg_wipe) after use. */
int zdb_pool_cfg_load(const char *path, struct zdb_pool_cfg *cfg, char *err, size_t errlen);
/* Same from memory; `label` names it in messages; password_file paths are
 * resolved against dir (NULL: the current directory). */
int zdb_pool_cfg_parse(const char *label, const char *dir, const char *text, size_t len,
		       struct zdb_pool_cfg *cfg, char *err, size_t errlen);
/* Defaults for a programmatic configuration (k, m and backends to fill). */
void zdb_pool_cfg_defaults(struct zdb_pool_cfg *cfg);
/* Zero the secrets in cfg. */
void zdb_pool_cfg_wipe(struct zdb_pool_cfg *cfg);

/* ---------------------------------------------------------------- 5 ---- */

enum zdb_health { ZDB_HEALTH_UP = 0, ZDB_HEALTH_SLOW, ZDB_HEALTH_DOWN };

struct zdb_pool;

struct zdb_pool_opts {
	struct workq *wq;           /* for dir backends; NULL = pool makes one */
	bool fault_wrap;            /* wrap every backend in a fault injector */
	/* called on the loop thread when a backend changes (ZDB_EV_*) */
	void (*on_event)(void *arg, unsigned backend, int event);
	void *event_arg;
};

/* Build the pool's backends from cfg (copied) and start connecting.  Returns
 * 0 or -errno; *out is freed with zdb_pool_close() + zdb_pool_free(). */
int zdb_pool_open(struct loop *l, const struct zdb_pool_cfg *cfg,
		  const struct zdb_pool_opts *opts, struct zdb_pool **out);
/* Stop every backend (pending requests complete with -ECANCELED).  Returns
 * at once; zdb_pool_closed() turns true when nothing is in flight. */
void zdb_pool_close(struct zdb_pool *p);
bool zdb_pool_closed(const struct zdb_pool *p);
/* Free a closed pool. */
void zdb_pool_free(struct zdb_pool *p);

/* Run p's loop until every backend has finished its first connection attempt
 * (ready, failed or fatal) or timeout_ns passed.  For CLI tools and tests. */
int zdb_pool_wait_connected(struct zdb_pool *p, uint64_t timeout_ns);

unsigned zdb_pool_size(const struct zdb_pool *p);
const struct zdb_pool_cfg *zdb_pool_cfg(const struct zdb_pool *p);
struct zdb_backend *zdb_pool_backend(struct zdb_pool *p, unsigned idx);
/* Index of the backend called name, or -ENOENT. */
int zdb_pool_find(const struct zdb_pool *p, const char *name);
enum zdb_health zdb_pool_health(const struct zdb_pool *p, unsigned idx);
/* The hedge threshold in use now (configured, or derived from p99). */
uint64_t zdb_pool_hedge_ns(const struct zdb_pool *p);
/* Change faults of backend idx (pool opened with fault_wrap). */
int zdb_pool_set_fault(struct zdb_pool *p, unsigned idx, const struct zdb_fault *f);

/* One operation on backend idx; latency and outcome feed its health.  The
 * backend sends at most `depth` requests at a time and queues the rest
 * (unbounded: the caller bounds how many it has outstanding); a request
 * to a backend that is down fails at once (-ENOTCONN), one that cannot be
 * answered by its deadline fails with -ETIMEDOUT (deadlines are checked
 * every 10 ms by the pool's tick, one timer for all requests). */
void zdb_pool_submit(struct zdb_pool *p, unsigned idx, struct zdb_req *req);

/* Choose n distinct healthy backends for chunk `id`: as many zones as
 * possible, rendezvous-hashed (deterministic for a given health picture).
 * out[i] is shard i's backend.  exclude (may be NULL) is a bitmap of
 * backends not to use.  Returns how many were chosen (< n when fewer
 * healthy backends exist). */
unsigned zdb_pool_place(const struct zdb_pool *p, const void *id, size_t id_len,
			unsigned n, const uint64_t *exclude, uint16_t *out);

/* ---- chunk put: k+m shards on distinct backends, spares on failure ---- */

struct zdb_shard {
	const void *key;        /* shard key (caller-owned) */
	size_t key_len;
	void *data;             /* put: source; get: destination */
	size_t len;             /* put: size; get: capacity */
	int backend;            /* put: out, chosen backend (-1: not stored);
	                         * get: in, recorded backend (-1: unknown) */
	int status;             /* out: 0, or -errno (get: -ENOENT = missing) */
	size_t got;             /* get: bytes received */
};

struct zdb_chunk_put;
typedef void zdb_chunk_put_fn(struct zdb_chunk_put *op);

/* Write shards[0..n) (data shards first, then parity).  ready() (optional)
 * runs once every shard is stored or given up, with result 0 (all n
 * stored), 1 (degraded: only `stored` >= min_shards stored, the trailing
 * parity shards dropped — queue repair) or -errno (fewer than min_shards
 * stored; the shards that were stored are listed so the caller can delete
 * them); shards[i].backend is then final (-1: not stored).  done()
 * (required) runs after that, when no request refers to op or the shard
 * buffers any more — later than ready() only when a hedge copy or a hung
 * backend is still outstanding.  A shard unwritten after slow_ns gets a
 * copy on a spare; the first to land wins. */
struct zdb_chunk_put {
	const void *id;         /* chunk id for placement */
	size_t id_len;
	unsigned n;             /* k + m */
	struct zdb_shard *shards;
	zdb_chunk_put_fn *ready;    /* optional: outcome known */
	zdb_chunk_put_fn *done;     /* required: op and buffers released */
	void *priv;
	int result;
	unsigned stored;
	unsigned nhedged;       /* hedge copies sent */
	/* internal */
	struct zdb_pool *pool;
	unsigned pending;       /* requests in flight */
	unsigned unresolved;    /* shards neither stored nor given up */
	unsigned target;        /* shards we try to store */
	bool resolved;
	struct loop_timer hedge;
	uint64_t used[ZDB_MAX_BACKENDS / 64];
	uint8_t tries[ZDB_MAX_SHARDS];
	uint8_t sstate[ZDB_MAX_SHARDS];
	uint8_t sinfl[ZDB_MAX_SHARDS];
	uint8_t hedged[ZDB_MAX_SHARDS];
	struct zdb_req reqs[ZDB_MAX_SHARDS];
	struct zdb_req hreqs[ZDB_MAX_SHARDS];
};
int zdb_pool_put_chunk(struct zdb_pool *p, struct zdb_chunk_put *op);

/* ---- chunk get: any k of n, hedged ---- */

struct zdb_chunk_get;
typedef void zdb_chunk_get_fn(struct zdb_chunk_get *op);
/* Verify shard i's bytes; return false to treat it as an erasure. */
typedef bool zdb_verify_fn(struct zdb_chunk_get *op, unsigned i);

/* Fetch until `k` shards have arrived and verified.  The first k shards
 * with a known backend (healthy backends first, then shard order: data
 * shards first) are asked for at once; one more is asked for whenever one
 * fails or the hedge threshold passes with shards outstanding.  ready()
 * gets result 0 (`have` marks the k good shards, whose buffers are final)
 * or -EIO (fewer than k obtainable; each shard's status says why: -ENOENT =
 * missing, -EBADMSG = failed verify, -EAGAIN = not asked).  done() follows
 * when the last request has completed; until then buffers of shards not in
 * `have` may still be written. */
struct zdb_chunk_get {
	unsigned n;
	unsigned k;
	struct zdb_shard *shards;
	zdb_verify_fn *verify;  /* may be NULL */
	zdb_chunk_get_fn *ready;    /* k good shards, or certain failure */
	zdb_chunk_get_fn *done;     /* later: no request refers to op any more;
	                             * only now may op and buffers be freed */
	void *priv;
	int result;
	uint64_t have;          /* bitmap of good shards */
	unsigned hedged;        /* extra requests sent because of the timer */
	/* internal */
	struct zdb_pool *pool;
	unsigned good, inflight, next_try;
	uint64_t asked;
	bool finished;
	struct loop_timer hedge;
	uint8_t order[ZDB_MAX_SHARDS];
	struct zdb_req reqs[ZDB_MAX_SHARDS];
};
int zdb_pool_get_chunk(struct zdb_pool *p, struct zdb_chunk_get *op);

/* ---- status ---- */

/*
 * Requests a backend refused while up (zdb_req.refused): -ENOSPC (0-db
 * namespace full, redis OOM, a dir backend's full disk), -EROFS (0-db
 * read-only, locked or WORM namespace; redis READONLY replica, MISCONF
 * after a failed save, NOREPLICAS), -EACCES (denied: NOAUTH, NOPERM, 0-db
 * Access denied), -EIO (0-db "Cannot write data / index right now": its
 * disk is full or failing) — the connection stays READY, so health alone
 * shows nothing.  Transient answers (-EAGAIN: LOADING, BUSY, a frozen 0-db
 * namespace) are errors but no refusals.  Recorded by the pool for every
 * request submitted through it, with that request's own message.
 */
struct zdb_refusal {
	char backend[64];       /* the backend's name */
	uint64_t count;         /* requests refused since the pool opened */
	uint64_t last_ns;       /* now_ns() of the last refusal; 0 = never */
	int err;                /* the last one's class (-errno) */
	char msg[ZDB_MSG_MAX];  /* its text: the server's words or strerror */
};

/* Refusals older than this are not shown in the text NOTE column. */
#define ZDB_REFUSAL_RECENT_NS (600ull * 1000000000)

struct zdb_backend_status {
	char name[64];
	char zone[64];
	char address[256];
	const char *kind;
	enum zdb_health health;
	enum zdb_conn_state state;
	enum zdb_dialect dialect;
	uint64_t ewma_ns, p50_ns, p99_ns;
	uint64_t ok, errors, timeouts;
	bool canary_missing;
	uint64_t emptied;
	bool ns_unprotected;     /* see zdb_backend.ns_unprotected */
	bool have_info;
	struct zdb_info info;
	char last_error[160];
	struct zdb_refusal refusal;
};
void zdb_pool_backend_status(const struct zdb_pool *p, unsigned idx,
			     struct zdb_backend_status *st);
/* Ask every ready backend for INFO/NSINFO and run the loop until answered
 * (or timeout_ns); the numbers then appear in the status. */
int zdb_pool_refresh_info(struct zdb_pool *p, uint64_t timeout_ns);
/* Copy backend idx's refusal record into *out (count 0: none). */
void zdb_pool_refusal(const struct zdb_pool *p, unsigned idx, struct zdb_refusal *out);
/* Write a human table (json=false) or one JSON object to f. */
void zdb_pool_format_status(const struct zdb_pool *p, FILE *f, bool json);
/* The same, with refusals another pool over the same backends saw (the
 * cache's flusher pool) merged in by backend name: counts add up, the most
 * recent message wins.  extra (n entries) is only read. */
void zdb_pool_format_status_ext(const struct zdb_pool *p, FILE *f, bool json,
				const struct zdb_refusal *extra, unsigned n);

/* Helper for tools: run p's loop until *flag is true or timeout_ns passed;
 * returns 0 or -ETIMEDOUT. */
int zdb_pool_run_until(struct zdb_pool *p, const bool *flag, uint64_t timeout_ns);

/* Copy the untrusted text s[0..n) into dst (size bytes, NUL-terminated):
 * bytes outside printable ASCII become '?', a text that does not fit ends
 * in "...".  Never fails. */
void zdb_text_clean(char *dst, size_t size, const char *s, size_t n);

/* Hash used by placement (exposed for tests): 64-bit, seeded. */
uint64_t zdb_hash64(const void *data, size_t len, uint64_t seed);

#endif /* NBDSRV_ZDB_H */
