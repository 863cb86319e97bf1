/*
 * server.h — the NBD server's runtime: reactor threads (server.c) and the
 * connections they own (conn.c).  Internal to nbdsrv/; cmd_serve.c builds a
 * struct server from the command line and runs it.
 *
 *   main thread ── signalfd ──► server_run() posts "stop" to every reactor
 *        │
 *        ├─ reactor 0: loop, multishot accept on every listener, conns…
 *        ├─ reactor 1: …
 *        └─ workq: blocking helpers (lseek for block status)
 *
 * A connection lives and dies on the reactor that accepted it; nothing in it
 * is touched by another thread.  Exports are shared by all reactors (their
 * ops are thread-safe by contract, see export.h).
 */
#ifndef NBDSRV_SERVER_H
#define NBDSRV_SERVER_H

#include "common/common.h"
#include "nbdsrv/export.h"

#include <stdbool.h>

struct conn;
struct reactor;
struct nbd_resolver;

struct listener {
	int fd;
	bool tcp;               /* set TCP_NODELAY on accepted sockets */
	char *unix_path;        /* unlinked at exit when we created it, owned */
	char *what;             /* for messages: "127.0.0.1:10809", owned */
};

/* One multishot accept per listener per reactor. */
struct accept_op {
	struct loop_op op;
	struct reactor *r;
	struct listener *l;
	bool armed;             /* a CQE without F_MORE is still to come */
	struct loop_timer retry;/* re-arm after an accept error */
};

struct reactor {
	struct server *srv;
	unsigned id;
	pthread_t thread;
	struct loop loop;
	struct accept_op *accepts;      /* srv->n_listeners of them */
	struct conn *conns;             /* doubly linked, all live conns */
	unsigned n_conns;               /* written atomically (status reads) */
	unsigned pending;               /* sockets handed to us, not adopted */
	struct conn *dirty;             /* conns with replies to send */
	bool stopping;                  /* stop accepting, drain conns */
	bool done;                      /* thread may exit */
	int init_err;                   /* loop_init result, for the starter */
	bool exited;                    /* thread is done (atomic access) */
	struct loop_msg stop_msg;
	struct loop_msg force_msg;
};

/* Counters of one export, updated by reactors with relaxed atomics and
 * read by the control socket. */
struct server_stats {
	uint64_t conns;                 /* connections using it now */
	uint64_t requests;              /* requests completed */
	uint64_t bytes_read;
	uint64_t bytes_written;
};

struct server {
	struct export **exports;        /* exports[0] is the default */
	size_t n_exports;
	struct server_stats *stats;     /* one per export */
	const struct nbd_resolver *resolver; /* exports found by name (volumes),
	                                 * or NULL; borrowed */
	struct listener *listeners;
	size_t n_listeners;
	unsigned n_reactors;
	struct reactor *reactors;
	struct workq *wq;
	pthread_barrier_t started;
	bool stop_begun;                /* main thread only */
	bool stop_forced;
};

/* Start the reactor threads; returns 0 once all of them are accepting, or
 * -errno (no thread left running). */
int server_start(struct server *srv);
/* Ask every reactor to stop accepting, finish in-flight requests and close
 * its connections.  Main thread only; returns at once. */
void server_stop_begin(struct server *srv);
/* Make stopping reactors drop their connections now: nothing more is sent
 * or received; export ops in flight still complete. */
void server_stop_force(struct server *srv);
/* True once every reactor thread has finished. */
bool server_stopped(struct server *srv);
/* server_stop_begin(), then wait for the reactors and free them. */
void server_stop(struct server *srv);

/* Test hook, NULL in production: called on the accepting reactor before a
 * socket is handed to *to (another reactor); it may change *to. */
extern void (*server_handoff_hook)(struct reactor *from, struct reactor **to);

/* A listening unix stream socket at path with file mode `mode` (set before
 * bind, so it is never reachable with looser permissions).  A stale socket
 * left by a dead process is replaced (also one a SIGKILLed process's
 * io_uring still holds for a moment: a listener must stay for ~1 s to count
 * as live); a live one is not (-EADDRINUSE), nor a file that is no socket
 * (-EEXIST).  owned: the caller's lock makes it the path's only user, so any
 * socket there is replaced at once.  Returns the fd (close-on-exec) or
 * -errno; -ENAMETOOLONG when the path is empty or does not fit in
 * sockaddr_un. */
int server_unix_listen(const char *path, unsigned mode, int backlog, bool owned);

/* conn.c — called on the owning reactor's thread only. */

/* Take ownership of an accepted socket and start the handshake.  On
 * allocation failure the socket is closed. */
void conn_accept(struct reactor *r, int fd, bool tcp);
/* For every connection of r: stop reading requests; finish those in
 * flight, send their replies, close.  Connections still in the handshake
 * are closed at once.  Nothing is freed synchronously. */
void conn_shutdown_all(struct reactor *r);
/* For every connection of r: stop sending and receiving at once (the
 * socket is shut down); the conn closes when its export ops are done. */
void conn_abort_all(struct reactor *r);
/* Send what is ready (called by the reactor once per loop iteration for
 * each dirty conn); may free c if it was waiting for that. */
void conn_flush(struct conn *c);
/* The next conn in the reactor's dirty list (NULL at the end), and clear c's
 * membership.  Used by the reactor to walk the list. */
struct conn *conn_take_dirty(struct reactor *r);

#endif /* NBDSRV_SERVER_H */
