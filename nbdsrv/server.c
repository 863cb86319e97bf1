/*
 * server.c — reactor threads: one io_uring loop each, multishot accept on
 * every listening socket, and the per-iteration flush of connections with
 * ready replies.
 *
 * Each reactor creates its loop on its own thread (the ring is
 * SINGLE_ISSUER) and arms one multishot accept per listener.  The kernel
 * tends to complete every accept on the same ring, so the accepting reactor
 * hands the new socket (loop_post) to the reactor with the fewest
 * connections; from then on the connection stays there.  The reactor's loop is
 *
 *     for (;;) { loop_run_once(wait);   ← submit everything queued, reap CQEs
 *                conn_flush(dirty…); }  ← one sendmsg per conn for all the
 *                                         replies those CQEs completed
 *
 * so replies are coalesced per batch of completions without any timer.
 *
 * Stopping: server_stop() posts stop_msg to each reactor; the reactor
 * cancels its accepts and calls conn_shutdown() on every connection, then
 * runs until the last connection has closed and the last accept CQE has
 * arrived.  Only then does its thread return and its ring go away.  A
 * socket handed over to a reactor that is stopping is closed, as one its
 * own accept completes then: the handover may even arrive after the
 * reactor left its loop (it read `pending` before the sender counted it),
 * and is then run by loop_fini on the main thread, where no ring serves
 * it — which is why server_stop joins every reactor before it finishes
 * any ring (a running one may still post to one that exited).
 *
 * Test hook (NULL in production): server_handoff_hook, when set, runs on
 * the accepting reactor just before a socket is handed over and may change
 * the target, so a test can hand one to a reactor that already exited.
 */
#include "nbdsrv/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REACTOR_RING    1024
#define ACCEPT_RETRY_NS (100ull * 1000 * 1000)

static void accept_arm(struct accept_op *a);

static void accept_retry_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct loop_timer *t = container_of(op, struct loop_timer, op);
	struct accept_op *a = container_of(t, struct accept_op, retry);

	if (!a->r->stopping)
		accept_arm(a);
}

/* A socket accepted on one reactor, on its way to another. */
struct handoff {
	struct loop_msg msg;
	struct reactor *to;
	int fd;
	bool tcp;
};

void (*server_handoff_hook)(struct reactor *from, struct reactor **to);

/* On h->to's thread, or on the main thread from loop_fini once h->to's
 * thread has exited (stopping is then set and stable). */
static void handoff_msg(struct loop_msg *m)
{
	struct handoff *h = container_of(m, struct handoff, msg);

	if (h->to->stopping)
		close(h->fd);
	else
		conn_accept(h->to, h->fd, h->tcp);
	__atomic_fetch_sub(&h->to->pending, 1, __ATOMIC_RELEASE);
	free(h);
}

/* The reactor with the fewest connections (counting those being handed
 * over), self on a tie: the kernel wakes the same multishot accept for
 * every connection, so without this one reactor would get them all. */
static struct reactor *pick_reactor(struct reactor *self)
{
	struct server *srv = self->srv;
	struct reactor *best = self;
	unsigned bestn = __atomic_load_n(&self->n_conns, __ATOMIC_RELAXED) +
			 __atomic_load_n(&self->pending, __ATOMIC_RELAXED);
	unsigned i;

	for (i = 1; i < srv->n_reactors; i++) {
		struct reactor *r = &srv->reactors[(self->id + i) % srv->n_reactors];
		unsigned n = __atomic_load_n(&r->n_conns, __ATOMIC_RELAXED) +
			     __atomic_load_n(&r->pending, __ATOMIC_RELAXED);

		if (n < bestn) {
			best = r;
			bestn = n;
		}
	}
	return best;
}

static void accept_one(struct reactor *r, int fd, bool tcp)
{
	struct reactor *to = pick_reactor(r);
	struct handoff *h;

	if (server_handoff_hook)
		server_handoff_hook(r, &to);
	if (to != r && (h = malloc(sizeof(*h)))) {
		h->to = to;
		h->fd = fd;
		h->tcp = tcp;
		h->msg.fn = handoff_msg;
		__atomic_fetch_add(&to->pending, 1, __ATOMIC_RELAXED);
		loop_post(&to->loop, &h->msg);
		return;
	}
	conn_accept(r, fd, tcp);
}

static void accept_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct accept_op *a = container_of(op, struct accept_op, op);
	struct reactor *r = a->r;

	if (!(flags & IORING_CQE_F_MORE))
		a->armed = false;
	if (res >= 0) {
		if (r->stopping)
			close(res);
		else
			accept_one(r, res, a->l->tcp);
	} else if (res != -ECANCELED && !r->stopping) {
		log_warn("accept on %s: %s", a->l->what, strerror(-res));
		if (!a->armed && !a->retry.armed) {
			loop_timer_arm(&r->loop, &a->retry, ACCEPT_RETRY_NS,
				       accept_retry_cb);
			return;
		}
	}
	if (!a->armed && !r->stopping && !a->retry.armed)
		accept_arm(a);
}

static void accept_arm(struct accept_op *a)
{
	struct io_uring_sqe *sqe = loop_sqe(&a->r->loop, &a->op);

	io_uring_prep_multishot_accept(sqe, a->l->fd, NULL, NULL, SOCK_CLOEXEC);
	a->armed = true;
}

static void reactor_stop_msg(struct loop_msg *m)
{
	struct reactor *r = container_of(m, struct reactor, stop_msg);
	size_t i;

	if (r->stopping)
		return;
	r->stopping = true;
	for (i = 0; i < r->srv->n_listeners; i++) {
		struct accept_op *a = &r->accepts[i];

		if (a->armed)
			io_uring_prep_cancel(loop_sqe(&r->loop, NULL), &a->op, 0);
		loop_timer_cancel(&r->loop, &a->retry);
	}
	conn_shutdown_all(r);
}

static void reactor_force_msg(struct loop_msg *m)
{
	struct reactor *r = container_of(m, struct reactor, force_msg);

	conn_abort_all(r);
}

static bool reactor_idle(struct reactor *r)
{
	size_t i;

	if (!r->stopping || r->n_conns ||
	    __atomic_load_n(&r->pending, __ATOMIC_ACQUIRE))
		return false;
	for (i = 0; i < r->srv->n_listeners; i++)
		if (r->accepts[i].armed || r->accepts[i].retry.armed)
			return false;
	return true;
}

static void *reactor_main(void *arg)
{
	struct reactor *r = arg;
	size_t i;
	int err;

	err = loop_init(&r->loop, REACTOR_RING);
	r->init_err = err;
	if (!err) {
		r->stop_msg.fn = reactor_stop_msg;
		r->force_msg.fn = reactor_force_msg;
		for (i = 0; i < r->srv->n_listeners; i++) {
			r->accepts[i].op.cb = accept_cb;
			r->accepts[i].r = r;
			r->accepts[i].l = &r->srv->listeners[i];
			accept_arm(&r->accepts[i]);
		}
		err = io_uring_submit(&r->loop.ring);
		if (err < 0)
			r->init_err = err;
	}
	pthread_barrier_wait(&r->srv->started);
	if (r->init_err < 0)
		return NULL;

	while (!reactor_idle(r)) {
		struct conn *c;

		err = loop_run_once(&r->loop, 1000ull * 1000 * 1000);
		if (err < 0) {
			log_error("reactor %u: %s", r->id, strerror(-err));
			break;
		}
		while ((c = conn_take_dirty(r)))
			conn_flush(c);
	}
	/* The ring stays until server_stop() has joined us: the main thread
	 * may still post to it. */
	__atomic_store_n(&r->exited, true, __ATOMIC_RELEASE);
	return NULL;
}

int server_start(struct server *srv)
{
	unsigned i, started = 0;
	int r = 0;

	srv->reactors = calloc(srv->n_reactors, sizeof(*srv->reactors));
	if (!srv->reactors)
		return -ENOMEM;
	r = pthread_barrier_init(&srv->started, NULL, srv->n_reactors + 1);
	if (r) {
		free(srv->reactors);
		return -r;
	}
	for (i = 0; i < srv->n_reactors; i++) {
		struct reactor *re = &srv->reactors[i];

		re->srv = srv;
		re->id = i;
		re->accepts = calloc(srv->n_listeners ? srv->n_listeners : 1,
				     sizeof(*re->accepts));
		if (!re->accepts) {
			r = -ENOMEM;
			break;
		}
	}
	for (i = 0; !r && i < srv->n_reactors; i++) {
		r = -pthread_create(&srv->reactors[i].thread, NULL, reactor_main,
				    &srv->reactors[i]);
		if (!r)
			started++;
	}
	if (r) {
		/* Threads that started wait on the barrier: release them by
		 * failing each one's init. */
		log_error("cannot start reactor threads: %s", strerror(-r));
		return r;       /* startup failure: the process exits */
	}
	pthread_barrier_wait(&srv->started);
	for (i = 0; i < srv->n_reactors; i++)
		if (srv->reactors[i].init_err < 0) {
			r = srv->reactors[i].init_err;
			log_error("reactor %u: io_uring setup: %s", i, strerror(-r));
		}
	if (r) {
		server_stop(srv);
		return r;
	}
	return 0;
}

void server_stop_begin(struct server *srv)
{
	unsigned i;

	if (srv->stop_begun)
		return;
	srv->stop_begun = true;
	for (i = 0; i < srv->n_reactors; i++)
		if (srv->reactors[i].init_err == 0)
			loop_post(&srv->reactors[i].loop, &srv->reactors[i].stop_msg);
}

void server_stop_force(struct server *srv)
{
	unsigned i;

	/* Rings live until server_stop() joins, so posting is always safe; a
	 * reactor that already left its loop just never runs the message. */
	if (srv->stop_forced)
		return;
	srv->stop_forced = true;
	for (i = 0; i < srv->n_reactors; i++)
		if (srv->reactors[i].init_err == 0)
			loop_post(&srv->reactors[i].loop, &srv->reactors[i].force_msg);
}

bool server_stopped(struct server *srv)
{
	unsigned i;

	for (i = 0; i < srv->n_reactors; i++)
		if (srv->reactors[i].init_err == 0 &&
		    !__atomic_load_n(&srv->reactors[i].exited, __ATOMIC_ACQUIRE))
			return false;
	return true;
}

void server_stop(struct server *srv)
{
	unsigned i;

	server_stop_begin(srv);
	/* every thread first: a reactor still running may hand a socket to
	 * one that already exited */
	for (i = 0; i < srv->n_reactors; i++)
		pthread_join(srv->reactors[i].thread, NULL);
	for (i = 0; i < srv->n_reactors; i++)
		loop_fini(&srv->reactors[i].loop);
	for (i = 0; i < srv->n_reactors; i++)
		free(srv->reactors[i].accepts);
	free(srv->reactors);
	srv->reactors = NULL;
	pthread_barrier_destroy(&srv->started);
}

/* Who holds the unix socket at path: 1 nobody (a dead process left it:
 * connect is refused), 0 a listener accepts there, -ENOENT gone meanwhile,
 * -EEXIST not a socket, other -errno: cannot tell. */
static int server_unix_probe(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int probe, r;

	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return -errno;
	if (connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		r = 0;
	else if (errno == ECONNREFUSED)
		r = 1;
	else if (errno == EAGAIN)
		r = 0;                          /* a live listener's full backlog */
	else
		r = -errno;
	close(probe);
	return r;
}

/*
 * Taking over a socket path.  bind() fails with EADDRINUSE while the path
 * exists, even when the process that bound it is dead; so a socket nobody
 * listens on is unlinked and bound again.  "Nobody listens" is not
 * instantaneous after SIGKILL: a killed daemon's listening socket is also
 * held by the accept pending in its io_uring, and the kernel tears the
 * ring down asynchronously, a few ms (more on a loaded machine) after the
 * process is gone, accepting connections meanwhile.  So a socket that
 * accepts is probed again for about a second before it counts as live.
 * owned: the caller holds a lock that makes it the path's only user (the
 * persistent daemon's directory lock): a socket found there is stale,
 * whatever answers on it.
 */
int server_unix_listen(const char *path, unsigned mode, int backlog, bool owned)
{
	struct sockaddr_un sa;
	unsigned wait_ms = 2, tries;
	struct stat st;
	int fd, err, p;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Linux gives the socket file the inode's mode (less the umask)
	 * at bind: no window with looser permissions. */
	if (fchmod(fd, mode) < 0)
		goto fail;
	if (owned && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	for (tries = 0; bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; tries++) {
		if (errno != EADDRINUSE || tries == 16)
			goto fail;
		p = server_unix_probe(path, &sa);
		if (p == 0 && wait_ms <= 512) {
			struct timespec ts = { 0, wait_ms * 1000000L };

			nanosleep(&ts, NULL);
			wait_ms *= 2;
			continue;
		}
		if (p == 0) {
			errno = EADDRINUSE;
			goto fail;
		}
		if (p < 0 && p != -ENOENT) {
			errno = -p;
			goto fail;
		}
		if (p == 1)
			unlink(path);
	}
	if (listen(fd, backlog) < 0) {
		err = errno;
		unlink(path);
		close(fd);
		return -err;
	}
	return fd;
fail:
	err = errno;
	close(fd);
	return -err;
}
