/*
 * common.h — the bottom layer every other layer may include.
 *
 * Contents
 *   1. small helpers (container_of, MIN/MAX, alignment)
 *   2. log_*      — leveled logging to stderr; never pass secrets to it
 *   3. parse_*    — strict number and size parsing for CLI and config input
 *   4. loop_*     — one io_uring per thread, completions dispatched to callbacks
 *   5. workq_*    — worker threads for CPU-heavy jobs; a finished job is handed
 *                   back to the loop that submitted it (never polled for)
 *   6. config_*   — a strict INI-like line/section parser (config.c); each
 *                   layer interprets its own keys
 *
 * The loop
 *   Every asynchronous operation is a `struct loop_op` embedded in the caller's
 *   own object; its address is the SQE's user_data, and its callback runs on
 *   the loop's thread with the CQE's result (>= 0 or -errno) and flags.  A SQE
 *   whose user_data is 0 has no callback (fire-and-forget cancels, etc.).
 *
 *       caller object ─┬─ struct loop_op op { cb }
 *                      │        ▲
 *          loop_sqe(l, &op) ──► SQE.user_data = &op ──► kernel ──► CQE
 *                                                                  │
 *          loop_run(): for each CQE: op->cb(op, res, flags) ◄──────┘
 *
 *   Rules: a loop is used only by the thread that called loop_init() (the ring
 *   is created SINGLE_ISSUER + DEFER_TASKRUN where the kernel allows); other
 *   threads talk to it only through loop_post().  Memory an SQE refers to (the
 *   op, buffers, iovecs, timespecs) must stay valid until its CQE arrives —
 *   for a multishot op, until a CQE without IORING_CQE_F_MORE.
 *
 * Functions return >= 0 on success or -errno; none of them leaves its error
 * in the global errno.
 */
#ifndef NBDSRV_COMMON_H
#define NBDSRV_COMMON_H

#include <liburing.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- 1 ---- */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
#define ROUND_UP(x, a)   ((((x) + (a) - 1) / (a)) * (a))
#define ROUND_DOWN(x, a) (((x) / (a)) * (a))

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* ---------------------------------------------------------------- 2 ---- */

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN  = 1,
	LOG_LEVEL_INFO  = 2,
	LOG_LEVEL_DEBUG = 3,
};

/* Messages above this level are dropped.  Default: LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Thread-safe; one line per call, prefixed with a timestamp and the level. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                       \
	do {                                                 \
		if (unlikely(log_get_level() >= LOG_LEVEL_DEBUG)) \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); \
	} while (0)

/* ---------------------------------------------------------------- 3 ---- */

/* Decimal (or 0x hex) unsigned integer, the whole string, no sign, no space.
 * -EINVAL when malformed, -ERANGE when it does not fit in 64 bits. */
int parse_u64(const char *s, uint64_t *out);
/* A size: digits with an optional binary suffix K M G T P (or KiB, MiB, …),
 * e.g. "4096", "64K", "1GiB".  -EINVAL when malformed, -ERANGE on overflow. */
int parse_size(const char *s, uint64_t *out);

/* ---------------------------------------------------------------- 4 ---- */

struct loop_op;
/* Completion callback: res is the CQE's res (>= 0 or -errno). */
typedef void loop_cb(struct loop_op *op, int res, uint32_t cqe_flags);

struct loop_op {
	loop_cb *cb;            /* called on the loop thread for each CQE */
};

struct loop_msg;
typedef void loop_msg_fn(struct loop_msg *msg);

/* A message from any thread, run on the loop's thread by loop_post(). */
struct loop_msg {
	struct loop_msg *next;  /* owned by the loop while queued */
	loop_msg_fn *fn;        /* runs on the loop thread */
};

/* A one-shot timer (IORING_OP_TIMEOUT). */
struct loop_timer {
	struct loop_op op;                /* internal; passed to cb */
	loop_cb *cb;                      /* gets -ETIME on expiry,
	                                   * -ECANCELED when cancelled */
	struct __kernel_timespec ts;      /* read by the kernel at submit */
	bool armed;                       /* true from arm to completion */
};

struct loop {
	struct io_uring ring;
	bool stop;                        /* loop_run() returns when set */
	int wake_fd;                      /* eventfd for loop_post() */
	uint64_t wake_buf;                /* target of the armed eventfd read */
	struct loop_op wake_op;           /* completion of that read */
	pthread_mutex_t post_lock;        /* guards post_head / post_tail */
	struct loop_msg *post_head;       /* messages from other threads */
	struct loop_msg *post_tail;
	unsigned ring_flags;              /* IORING_SETUP_* actually in use */
};

/* Create the ring (entries SQEs) on the calling thread, which then owns it. */
int loop_init(struct loop *l, unsigned entries);
/* Tear down; no operation may be in flight.  Messages still queued by
 * loop_post() run first (until none is left; SQEs they queue are dropped).
 * Safe on a zeroed loop. */
void loop_fini(struct loop *l);
/* A zeroed SQE with user_data = op (op may be NULL: no callback).  Never
 * NULL: when the submission queue is full it is submitted first. */
struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_op *op);
/* Submit what is queued and run completions until loop_stop(). */
int loop_run(struct loop *l);
/* Submit, wait up to timeout_ns (0 = do not wait) for at least one
 * completion, run all that are ready.  Returns how many ran or -errno. */
int loop_run_once(struct loop *l, uint64_t timeout_ns);
/* Ask loop_run() to return after the current batch (loop thread only). */
void loop_stop(struct loop *l);
/* Queue msg to run on l's thread; callable from any thread. */
void loop_post(struct loop *l, struct loop_msg *msg);
/* Run the messages queued so far now (loop thread only), without waiting
 * for the eventfd wake-up; for shutdown sequences.  Returns how many ran. */
int loop_run_posts(struct loop *l);

/* Arm t to call cb(&t->op, ...) after ns nanoseconds; use container_of() to
 * get back to t.  Re-arming an armed timer is a bug. */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t ns, loop_cb *cb);
/* Cancel an armed timer: its cb still runs, with -ECANCELED (or 0/-ETIME
 * if it fired first).  No-op when not armed. */
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* ---------------------------------------------------------------- 5 ---- */

struct workq_job;
typedef void workq_fn(struct workq_job *job);

/* A unit of CPU work.  Embed it; the caller owns it until done() runs. */
struct workq_job {
	workq_fn *work;          /* runs on a worker thread */
	workq_fn *done;          /* then runs on `loop`'s thread (NULL: worker
	                          * calls nothing further; caller must sync) */
	struct loop *loop;       /* where done() runs */
	struct workq_job *next;  /* queue link, owned by the workq */
	struct loop_msg msg;     /* used to post done() back */
};

struct workq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct workq_job *head, *tail;
	bool stopping;
	unsigned nthreads;
	pthread_t *threads;
};

/* Start nthreads workers (0 = one per online core). */
int workq_init(struct workq *wq, unsigned nthreads);
/* Finish queued jobs, then join the workers. */
void workq_fini(struct workq *wq);
/* Queue job; never blocks on a full queue — the caller bounds how many jobs
 * it has outstanding. */
void workq_submit(struct workq *wq, struct workq_job *job);

/* ---------------------------------------------------------------- 6 ---- */

/*
 * Syntax: one item per line; leading/trailing blanks ignored; a line whose
 * first non-blank character is '#' or ';' is a comment; `[section]` or
 * `[section argument]` opens a section; `key = value` sets a key (key:
 * letters, digits, '_', '-', '.'; value: the rest of the line, trimmed, or
 * a "double-quoted" string with \" and \\ escapes).  No trailing comments
 * (values such as passwords may contain '#').  Lines are at most
 * CONFIG_LINE_MAX bytes; NUL bytes are refused.
 */
#define CONFIG_LINE_MAX 4096

struct config_item {
	const char *file;       /* label used in messages */
	unsigned line;          /* 1-based */
	const char *section;    /* "" before the first header */
	const char *arg;        /* section argument, "" if none */
	const char *key;        /* NULL: this item is a section header */
	const char *value;      /* NULL for a header */
	unsigned err_line;      /* a callback may set it: the line to blame
	                         * in its error (default: this item's) */
};

/* Called for every header and key.  Return 0, or -errno after writing the
 * reason (without FILE:LINE, the parser adds it) to err. */
typedef int config_fn(void *ctx, struct config_item *it, char *err, size_t errlen);

/* Parse text[0..len) labelled `file`.  Returns 0, or -EINVAL (syntax or a
 * callback error) with "FILE:LINE: reason" in err. */
int config_parse(const char *file, const char *text, size_t len, config_fn *fn,
		 void *ctx, char *err, size_t errlen);
/* Read and parse path (at most 1 MiB); -errno with "FILE: reason" when it
 * cannot be read. */
int config_parse_file(const char *path, config_fn *fn, void *ctx, char *err, size_t errlen);
/* Read a whole small file (≤ max bytes) into a NUL-terminated malloc'd
 * buffer (*out, length *len).  -EFBIG when larger. */
int config_read_file(const char *path, size_t max, char **out, size_t *len);

#endif /* NBDSRV_COMMON_H */
