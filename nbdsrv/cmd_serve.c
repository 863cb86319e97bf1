/*
 * cmd_serve.c — `nbdsrv serve`: parse the command line and the pool config,
 * open the exports, create the listening sockets (or take them from systemd
 * socket activation), start the pool thread and the reactors, write the pid
 * file, and wait for SIGTERM or SIGINT on a signalfd read through the main
 * thread's own ring (which also runs the control socket).
 *
 *   --config FILE  is parsed strictly before anything else happens; an
 *                  error prints "FILE:LINE: reason" and exits 1 with no
 *                  socket, thread or file created.  Its `listen` addresses
 *                  are used when no --listen/--unix is given (and no socket
 *                  was inherited); the control socket defaults to
 *                  <cache_path>/nbdsrv.ctl (the directory is created, 0700).
 *                  The pool runs on its own thread (pool_thread.c).
 *   --volumes MODE serves thin volumes ("vol") and snapshots ("vol@snap")
 *                  as exports, found by name when a client asks (so
 *                  volumes created later are served at once), managed with
 *                  the vol.* / snap.* control commands (volumes.h).
 *                  "persistent" (the default when the config has cache_path
 *                  and key_file): metadata and SSD cache in cache_path, data
 *                  in the pool.  "ephemeral": RAM, lost at exit, and the
 *                  daemon says so loudly (tests, demos).
 *   --create-volume NAME=SIZE  creates the volume at start unless it exists.
 *
 * Start-up order: options → config → signals → workers → exports →
 * listeners → pool thread → reactors → control socket → pid file.
 *
 * A clean stop (SIGTERM or SIGINT), in order:
 *   1. connections: no new ones; requests in flight finish and are
 *      answered, then each connection closes;
 *   2. the pool drain (persistent volumes): every object written but not
 *      yet in the pool is flushed to it, as `nbdsrv vol sync` does, so a
 *      cache file lost after a clean stop loses nothing, in writeback mode
 *      too (librbd's write-back cache writes back at close the same way).
 *      Progress goes to the log ("draining N objects", every 5 s how many
 *      are left, then "drained" or what is left);
 *   3. the control socket closes (it answers `status` until here, with
 *      "state" "stopping" or "draining"; a `vol sync` still waiting is
 *      answered with an error);
 *   4. the pool thread stops, exports and volumes are flushed to the SSD
 *      and closed (cache marked clean, metadata committed).
 * The pool may hold steps 1-2 for shutdown_flush_timeout_ms in all,
 * counted from the signal (pool.conf [pool], default 30000: a third of
 * systemd's default TimeoutStopSec of 90 s, which leaves the rest of the
 * stop ample time before systemd's SIGKILL; 0 = no drain, the objects are
 * flushed at the next start as before): past it, writethrough FLUSHes
 * still waiting for the pool fail (ESHUTDOWN) so their connections end,
 * and the drain gives up.  A second signal drops the connections still
 * draining, fails those FLUSHes and ends a drain at once.  Whatever is not
 * in the pool then stays in the cache (durable on the SSD, marked dirty in
 * the index) and is flushed after the next start, as every such object
 * was before this drain existed: losing the cache file in that window
 * loses those writes (serve refuses to start without --discard-dirty).
 *
 * An error of the main loop itself (its io_uring failing) takes the same
 * way out, as after a second signal (serve_abort): the control socket
 * stops (a `vol sync` waiting is answered ESHUTDOWN), writethrough FLUSHes
 * waiting for the pool fail, the connections are dropped, the cache close
 * does not wait for the pool, then step 4 — and the exit status is 1.
 * Every exit path of serve_until_signal runs the steps that apply.
 *
 * The pool thread answers a `status` by posting to the main loop, which
 * lives on serve_until_signal's stack: every exit path stops the pool
 * thread (pool_thread_stop: whatever was handed to it has been answered
 * once it returns) before that loop goes away, and the loop's fini runs
 * those answers.  The clean stop has no such request left (the control
 * socket is idle first); an abort whose ring no longer runs may.
 *
 * Test knobs (inert unless set): with NBDSRV_TEST_FAIL_LOOP=PATH in the
 * environment, the serving loop fails (-EIO) on its once-a-second tick
 * after PATH appears — a real ring error cannot be provoked on demand;
 * when PATH holds "ring", the ring then also counts as dead (serve_abort
 * runs no more of it, as after a real ring failure).  Pool thread side:
 * NBDSRV_TEST_HOLD_POOL_STATUS (pool_thread.c).
 *
 * Exit status: 0 after a signal (in-flight requests finished, exports
 * flushed) — also when the drain gave up or was cut short by a second
 * signal: the stop was clean and nothing acknowledged is lost while the
 * cache is kept; the log says how many objects are not in the pool (run
 * `nbdsrv vol sync` before the stop to learn it by exit status); 1 on a
 * startup error (a message names the option and value at fault, or
 * FILE:LINE for the config), a failed main loop or a failed final flush,
 * 2 on a usage error.
 */
#include "nbdsrv/cmd.h"
#include "nbdsrv/control.h"
#include "nbdsrv/ctl_client.h"
#include "nbdsrv/export.h"
#include "nbdsrv/pool_thread.h"
#include "nbdsrv/server.h"
#include "nbdsrv/volumes.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SERVE_MAX_THREADS 256

static void serve_usage(FILE *f)
{
	fprintf(f,
"usage: nbdsrv serve [options]\n"
"\n"
"Serve files and block devices over NBD (fixed newstyle; structured replies,\n"
"extended headers, base:allocation).\n"
"\n"
"  --config FILE           pool configuration (README: Pool configuration);\n"
"                          its backends are connected and watched by the\n"
"                          daemon, its listen addresses used when no\n"
"                          --listen/--unix is given; control socket default\n"
"                          <cache_path>/nbdsrv.ctl\n"
"  --volumes MODE          serve thin volumes and snapshots (vol, vol@snap),\n"
"                          managed with `nbdsrv vol|snap`.  persistent: in the\n"
"                          config's cache_path + pool (the default when the\n"
"                          config has cache_path and key_file); ephemeral:\n"
"                          kept in memory, everything is lost at exit\n"
"  --create-volume NAME=SIZE\n"
"                          create this volume at start unless it exists\n"
"                          (repeatable)\n"
"  --discard-dirty         writeback cache file lost: start anyway, every\n"
"                          volume from its last pool version (writes that had\n"
"                          not reached the pool are lost)\n"
"  --listen HOST:PORT      TCP listener (repeatable; IPv6 as [::1]:10809)\n"
"  --unix PATH             unix socket listener (repeatable), removed at exit\n"
"  --export NAME=PATH[,ro][,desc=TEXT]\n"
"                          file or block device export (repeatable); the\n"
"                          first one is also the default export (\"\");\n"
"                          required unless --config or --volumes is given\n"
"  --threads N             reactor threads (default: number of cores)\n"
"  --pidfile FILE          written once listening\n"
"  --log-level LEVEL       error|warn|info|debug (default: info)\n"
"  --control PATH          unix control socket, JSON lines: {\"cmd\":\"status\"}\n"
"  --help                  this text\n"
"\n"
"Without --listen/--unix (and without systemd socket activation through\n"
"LISTEN_PID/LISTEN_FDS) the server listens on 0.0.0.0:10809.\n"
"SIGTERM/SIGINT: stop accepting, finish in-flight requests, drain what\n"
"the pool does not have yet (shutdown_flush_timeout_ms), flush, exit 0;\n"
"a second signal drops connections and ends the drain.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "nbdsrv serve: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'nbdsrv serve --help'.\n");
	return 2;
}

struct serve_opts {
	const char **listen;
	size_t n_listen;
	const char **unix_paths;
	size_t n_unix;
	const char **exports;
	size_t n_exports;
	unsigned threads;
	const char *pidfile;
	const char *control;
	const char *config;
	const char *volumes;
	bool discard_dirty;
	const char **create_vols;
	size_t n_create_vols;
};

static int push(const char ***v, size_t *n, const char *s)
{
	const char **nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (!nv)
		return -ENOMEM;
	nv[(*n)++] = s;
	*v = nv;
	return 0;
}

static void listener_close_all(struct server *srv)
{
	size_t i;

	for (i = 0; i < srv->n_listeners; i++) {
		struct listener *l = &srv->listeners[i];

		if (l->fd >= 0)
			close(l->fd);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l->what);
	}
	free(srv->listeners);
	srv->listeners = NULL;
	srv->n_listeners = 0;
}

static struct listener *listener_new(struct server *srv)
{
	struct listener *v = realloc(srv->listeners,
				     (srv->n_listeners + 1) * sizeof(*v));

	if (!v)
		return NULL;
	srv->listeners = v;
	v = &v[srv->n_listeners++];
	memset(v, 0, sizeof(*v));
	v->fd = -1;
	return v;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static int listen_tcp(struct server *srv, const char *spec)
{
	char host[256], port[32];
	const char *colon;
	struct addrinfo hints, *res = NULL, *ai;
	struct listener *l;
	int fd = -1, r, one = 1, err = 0;

	if (spec[0] == '[') {
		const char *close_br = strchr(spec, ']');

		if (!close_br || close_br[1] != ':')
			goto bad;
		if ((size_t)(close_br - spec - 1) >= sizeof(host))
			goto bad;
		memcpy(host, spec + 1, (size_t)(close_br - spec - 1));
		host[close_br - spec - 1] = '\0';
		colon = close_br + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon || (size_t)(colon - spec) >= sizeof(host))
			goto bad;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
	}
	if (!colon[1] || strlen(colon + 1) >= sizeof(port))
		goto bad;
	strcpy(port, colon + 1);
	{
		uint64_t p;

		if (parse_u64(port, &p) < 0 || p == 0 || p > 65535)
			goto bad;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	r = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
	if (r) {
		fprintf(stderr, "nbdsrv serve: --listen: '%s': %s\n", spec,
			gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, SOMAXCONN) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		fprintf(stderr, "nbdsrv serve: --listen: '%s': %s\n", spec,
			strerror(err ? err : EADDRNOTAVAIL));
		return -(err ? err : EADDRNOTAVAIL);
	}
	l = listener_new(srv);
	if (!l || !(l->what = strdup(spec))) {
		close(fd);
		return -ENOMEM;
	}
	l->fd = fd;
	l->tcp = true;
	return 0;
bad:
	fprintf(stderr, "nbdsrv serve: --listen: '%s': expected HOST:PORT or [IPV6]:PORT\n",
		spec);
	return -EINVAL;
}

static int listen_unix(struct server *srv, const char *path)
{
	struct listener *l;
	int fd;

	fd = server_unix_listen(path, 0777, SOMAXCONN, false);
	if (fd == -ENAMETOOLONG) {
		fprintf(stderr, "nbdsrv serve: --unix: '%s': path empty or too long\n",
			path);
		return -EINVAL;
	}
	if (fd < 0) {
		fprintf(stderr, "nbdsrv serve: --unix: '%s': %s\n", path, strerror(-fd));
		return fd;
	}
	l = listener_new(srv);
	if (!l || !(l->what = strdup(path)) || !(l->unix_path = strdup(path))) {
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	l->fd = fd;
	return 0;
}

static int listen_activated(struct server *srv)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	uint64_t p, n, i;

	if (!pid || !fds || parse_u64(pid, &p) < 0 || p != (uint64_t)getpid())
		return 0;
	if (parse_u64(fds, &n) < 0 || n == 0 || n > 64) {
		fprintf(stderr, "nbdsrv serve: LISTEN_FDS: '%s': invalid\n", fds);
		return -EBADF;
	}
	for (i = 0; i < n; i++) {
		int fd = 3 + (int)i;
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		struct listener *l;
		int type = 0;
		socklen_t tl = sizeof(type);
		char what[32];

		if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
		    type != SOCK_STREAM) {
			fprintf(stderr, "nbdsrv serve: LISTEN_FDS: fd %d is not a stream socket\n",
				fd);
			return -EBADF;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		l = listener_new(srv);
		snprintf(what, sizeof(what), "fd %d", fd);
		if (!l || !(l->what = strdup(what)))
			return -ENOMEM;
		l->fd = fd;
		l->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)n;
}

static int write_pidfile(const char *path)
{
	char tmp[4096], buf[32];
	int fd, n;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, (size_t)n) != n || close(fd) < 0) {
		int err = errno ? errno : EIO;

		unlink(tmp);
		return -err;
	}
	if (rename(tmp, path) < 0) {
		int err = errno;

		unlink(tmp);
		return -err;
	}
	return 0;
}

/* The main thread's wait for signals, through its own ring. */
struct sigwait {
	struct loop loop;
	bool ring_dead;         /* test knob: loop_run_once counts as failing */
	struct loop_op op;
	int fd;
	struct signalfd_siginfo si;
	int signo;              /* the last signal */
	unsigned count;         /* signals received */
};

static void sig_arm(struct sigwait *w)
{
	io_uring_prep_read(loop_sqe(&w->loop, &w->op), w->fd, &w->si,
			   sizeof(w->si), 0);
}

static void sig_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct sigwait *w = container_of(op, struct sigwait, op);

	if (res == (int)sizeof(w->si)) {
		w->signo = (int)w->si.ssi_signo;
		w->count++;
	} else if (res < 0 && res != -EINTR && res != -EAGAIN) {
		log_error("signalfd read: %s", strerror(-res));
		w->signo = SIGTERM;
		w->count++;
		return;
	}
	sig_arm(w);
}

/* The clean stop's drain of the pool (see the header). */
struct drain {
	struct ssdcache_sync *h;        /* NULL once answered */
	bool done;
	int res;
};

static void drain_done(void *arg, int res)
{
	struct drain *d = arg;

	d->h = NULL;
	d->done = true;
	d->res = res;
}

/* Flush every pool-dirty object to the pool, until deadline (ns) or a
 * second signal; status keeps being served meanwhile. */
static int drain_pool(struct sigwait *w, struct volumes *vols, uint64_t deadline,
		      uint64_t budget_ms)
{
	uint64_t n = volumes_pool_dirty(vols), t0 = now_ns(), last = t0;
	unsigned signals = w->count;
	struct drain d = { 0 };
	int r;

	if (!n)
		return 0;
	if (now_ns() >= deadline) {
		log_warn("stop: shutdown_flush_timeout_ms (%llu) spent before the drain: "
			 "%llu objects stay in the cache only, flushed to the pool at "
			 "the next start", (unsigned long long)budget_ms,
			 (unsigned long long)n);
		return 0;
	}
	log_info("stop: draining %llu objects to the pool (at most %llu ms more; "
		 "signal again to stop now, they are then flushed at the next start)",
		 (unsigned long long)n, (unsigned long long)((deadline - t0) / 1000000));
	r = volumes_sync_start(vols, &w->loop, drain_done, &d, &d.h);
	if (r < 0) {
		log_error("stop: cannot drain the pool: %s", strerror(-r));
		return r;
	}
	while (!d.done) {
		uint64_t now = now_ns();

		if (d.h && w->count > signals) {
			volumes_sync_cancel(d.h, -EINTR);
		} else if (d.h && now >= deadline) {
			volumes_sync_cancel(d.h, -ETIMEDOUT);
		} else if (now - last >= 5000ull * 1000000) {
			log_info("stop: draining: %llu objects left",
				 (unsigned long long)volumes_pool_dirty(vols));
			last = now;
		}
		r = loop_run_once(&w->loop, 50ull * 1000 * 1000);
		if (r < 0 && r != -EINTR && r != -ETIME)
			log_warn("stop: drain: %s", strerror(-r));
	}
	n = volumes_pool_dirty(vols);
	if (d.res == 0)
		log_info("stop: drained: every object is in the pool (%.1f s)",
			 (double)(now_ns() - t0) / 1e9);
	else if (d.res == -EINTR)
		log_warn("signal %d: drain stopped: %llu objects are not in the pool yet "
			 "(kept in the cache, flushed to the pool at the next start)",
			 w->signo, (unsigned long long)n);
	else if (d.res == -ETIMEDOUT)
		log_warn("stop: drain gave up after %llu ms (shutdown_flush_timeout_ms; "
			 "pool slow, paused or down?): %llu objects are not in the pool "
			 "yet (kept in the cache, flushed to the pool at the next start)",
			 (unsigned long long)budget_ms, (unsigned long long)n);
	else
		log_warn("stop: drain failed: %s: %llu objects are not in the pool yet "
			 "(kept in the cache, flushed to the pool at the next start)",
			 strerror(-d.res), (unsigned long long)n);
	return 0;
}

/* Serving failed (r: the main loop, the control socket or the pid file): stop as after a second signal (see the
 * header), running the loop while it still works, for at most 10 s. */
static void serve_abort(struct server *srv, struct sigwait *w,
			struct control *ctl, struct volumes *vols, int r)
{
	uint64_t deadline = now_ns() + 10ull * 1000000000;

	log_error("serve: stopping after an error (%s): connections dropped, "
		  "no pool drain", strerror(-r));
	control_set_state(ctl, "stopping");
	control_stop(ctl);
	if (vols) {
		volumes_fail_flushes(vols, -ESHUTDOWN);
		volumes_set_close_wait(vols, 0);
	}
	server_stop_begin(srv);
	server_stop_force(srv);
	while ((!server_stopped(srv) || !control_idle(ctl)) && now_ns() < deadline)
		if ((w->ring_dead ? -EIO : loop_run_once(&w->loop, 50ull * 1000 * 1000)) < 0 &&
		    loop_run_posts(&w->loop) == 0)
			break;
}

/* Test knob NBDSRV_TEST_FAIL_LOOP: PATH exists (its content "ring": the
 * ring counts as dead from now on). */
static bool serve_knob_failed(struct sigwait *w, const char *path)
{
	char buf[8] = "";
	FILE *f;

	if (!path || !(f = fopen(path, "r")))
		return false;
	if (fgets(buf, sizeof(buf), f) && !strncmp(buf, "ring", 4))
		w->ring_dead = true;
	fclose(f);
	return true;
}

/* Serve until SIGTERM/SIGINT, then stop (see the header): drain the
 * connections, then the pool, then the control socket.  A second signal
 * drops the connections that are still draining (a client that stopped
 * reading its replies cannot hold the exit up forever) and ends a drain.
 * The control socket, if any, runs on the same (main thread) ring. */
static int serve_until_signal(struct server *srv, int sfd, const char *ctl_path,
			      bool ctl_owned, const char *pidfile,
			      struct pool_thread **pool, struct volumes *vols,
			      uint64_t drain_ms)
{
	struct sigwait w;
	struct control *ctl = NULL;
	uint64_t last_gc = 0, deadline = 0;
	bool failed_flushes = false;
	const char *fail_knob = getenv("NBDSRV_TEST_FAIL_LOOP");
	int r;

	memset(&w, 0, sizeof(w));
	r = loop_init(&w.loop, 64);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: io_uring: %s\n", strerror(-r));
		server_stop(srv);
		return r;
	}
	w.fd = sfd;
	w.op.cb = sig_cb;
	sig_arm(&w);
	if (ctl_path) {
		r = control_open(&ctl, ctl_path, ctl_owned, srv, &w.loop);
		if (r < 0)
			goto out;
		if (*pool)
			control_set_pool(ctl, *pool);
		if (vols)
			control_set_volumes(ctl, vols);
		log_info("control socket %s", ctl_path);
	}
	if (pidfile) {
		r = write_pidfile(pidfile);
		if (r < 0) {
			fprintf(stderr, "nbdsrv serve: --pidfile: '%s': %s\n", pidfile,
				strerror(-r));
			goto out;
		}
	}
	while (w.count == 0) {
		r = loop_run_once(&w.loop, 1000ull * 1000 * 1000);
		if (r < 0)
			goto out;
		if (now_ns() - last_gc >= 1000ull * 1000 * 1000) {
			if (vols)
				volumes_gc(vols);
			last_gc = now_ns();
			if (serve_knob_failed(&w, fail_knob)) {
				r = -EIO;
				goto out;
			}
		}
	}
	log_info("signal %d: finishing in-flight requests (again to drop them)",
		 w.signo);
	control_set_state(ctl, "stopping");
	if (!vols || volumes_ephemeral(vols))
		drain_ms = 0;
	deadline = now_ns() + drain_ms * 1000000;
	server_stop_begin(srv);
	while (!server_stopped(srv)) {
		r = loop_run_once(&w.loop, 50ull * 1000 * 1000);
		if (r < 0)
			goto out;
		if (w.count > 1 && !srv->stop_forced) {
			log_warn("signal %d: dropping connections", w.signo);
			server_stop_force(srv);
		}
		/* a FLUSH that waits for a paused pool (writethrough) would hold
		 * its connection, so the stop, forever */
		if (vols && !failed_flushes &&
		    (w.count > 1 || (drain_ms && now_ns() >= deadline))) {
			log_warn("stop: %s: FLUSHes still waiting for the pool "
				 "(writethrough) fail (ESHUTDOWN; their data is on the SSD "
				 "and reaches the pool after the next start)",
				 w.count > 1 ? "second signal"
					     : "shutdown_flush_timeout_ms spent");
			volumes_fail_flushes(vols, -ESHUTDOWN);
			failed_flushes = true;
		}
	}
	if (drain_ms && w.count == 1) {
		control_set_state(ctl, "draining");
		drain_pool(&w, vols, deadline, drain_ms);
		control_set_state(ctl, "stopping");
	}
	else if (vols && volumes_pool_dirty(vols))
		log_info("stop: %llu objects are not in the pool yet (%s; kept in the "
			 "cache, flushed to the pool at the next start)",
			 (unsigned long long)volumes_pool_dirty(vols),
			 w.count > 1 ? "second signal" : "no drain");
	/* the budget is spent (or a second signal came): the close does not
	 * wait for the pool's request timeouts either */
	if (vols && drain_ms && (w.count > 1 || now_ns() >= deadline))
		volumes_set_close_wait(vols, 0);
	control_stop(ctl);
	while (!control_idle(ctl)) {
		r = loop_run_once(&w.loop, 50ull * 1000 * 1000);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	if (r < 0)
		serve_abort(srv, &w, ctl, vols, r);
	server_stop(srv);
	/* a status still on the pool thread (an abort) is answered to w.loop
	 * before it goes away; a request read meanwhile does not ask the pool */
	if (ctl)
		control_set_pool(ctl, NULL);
	pool_thread_stop(*pool);
	*pool = NULL;
	loop_fini(&w.loop);
	control_free(ctl);
	return r;
}

int cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen",    required_argument, NULL, 'l' },
		{ "unix",      required_argument, NULL, 'u' },
		{ "export",    required_argument, NULL, 'e' },
		{ "threads",   required_argument, NULL, 't' },
		{ "pidfile",   required_argument, NULL, 'p' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "control",   required_argument, NULL, 'c' },
		{ "config",    required_argument, NULL, 'C' },
		{ "volumes",   required_argument, NULL, 'V' },
		{ "create-volume", required_argument, NULL, 'N' },
		{ "discard-dirty", no_argument,     NULL, 'D' },
		{ "help",      no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct serve_opts o;
	struct server srv;
	struct zdb_pool_cfg *cfg = NULL;
	struct pool_thread *pool = NULL;
	struct volumes *vols = NULL;
	enum volumes_mode vmode = VOLUMES_EPHEMERAL;
	char ctl_path[512];
	const char *control = NULL;
	struct workq wq;
	uint64_t drain_ms = 0;
	bool wq_up = false;
	sigset_t sigs;
	int sfd = -1, c, rc = 1, r, activated;
	size_t i;
	long ncpu;

	memset(&o, 0, sizeof(o));
	memset(&srv, 0, sizeof(srv));
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (push(&o.listen, &o.n_listen, optarg) < 0)
				goto oom;
			break;
		case 'u':
			if (push(&o.unix_paths, &o.n_unix, optarg) < 0)
				goto oom;
			break;
		case 'e':
			if (push(&o.exports, &o.n_exports, optarg) < 0)
				goto oom;
			break;
		case 't': {
			uint64_t n;

			if (parse_u64(optarg, &n) < 0 || n == 0 || n > SERVE_MAX_THREADS) {
				rc = usage_error("--threads: '%s': expected 1..256", optarg);
				goto out;
			}
			o.threads = (unsigned)n;
			break;
		}
		case 'p':
			o.pidfile = optarg;
			break;
		case 'c':
			o.control = optarg;
			break;
		case 'C':
			o.config = optarg;
			break;
		case 'V':
			if (volumes_parse_mode(optarg, &vmode) < 0) {
				rc = usage_error("--volumes: '%s': expected 'persistent' or "
						 "'ephemeral'", optarg);
				goto out;
			}
			o.volumes = optarg;
			break;
		case 'D':
			o.discard_dirty = true;
			break;
		case 'N': {
			const char *eq = strchr(optarg, '=');
			uint64_t sz;

			if (!eq || eq == optarg || parse_size(eq + 1, &sz) < 0 || sz == 0) {
				rc = usage_error("--create-volume: '%s': expected NAME=SIZE "
						 "(e.g. disk=16G)", optarg);
				goto out;
			}
			if (push(&o.create_vols, &o.n_create_vols, optarg) < 0)
				goto oom;
			break;
		}
		case 'L':
			if (!strcmp(optarg, "error"))
				log_set_level(LOG_LEVEL_ERROR);
			else if (!strcmp(optarg, "warn"))
				log_set_level(LOG_LEVEL_WARN);
			else if (!strcmp(optarg, "info"))
				log_set_level(LOG_LEVEL_INFO);
			else if (!strcmp(optarg, "debug"))
				log_set_level(LOG_LEVEL_DEBUG);
			else {
				rc = usage_error("--log-level: '%s': expected error|warn|info|debug",
						 optarg);
				goto out;
			}
			break;
		case 'h':
			serve_usage(stdout);
			rc = 0;
			goto out;
		case ':':
			rc = usage_error("%s: missing argument", argv[optind - 1]);
			goto out;
		default:
			rc = usage_error("unknown option '%s'", argv[optind - 1]);
			goto out;
		}
	}
	if (optind < argc) {
		rc = usage_error("unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (o.n_exports == 0 && !o.config && !o.volumes) {
		rc = usage_error("%s", "at least one --export NAME=PATH (or --config FILE, "
				 "or --volumes ephemeral) is required");
		goto out;
	}
	/* The config is checked whole before anything starts. */
	if (o.config) {
		char err[1024];

		cfg = calloc(1, sizeof(*cfg));
		if (!cfg)
			goto oom;
		r = zdb_pool_cfg_load(o.config, cfg, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "nbdsrv serve: %s\n", err);
			goto out;
		}
	}
	if (o.threads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		o.threads = ncpu > 0 ? (unsigned)MIN(ncpu, SERVE_MAX_THREADS) : 1;
	}

	/* Signals are taken through a signalfd; block them before any thread
	 * exists so every thread inherits the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		fprintf(stderr, "nbdsrv serve: signalfd: %s\n", strerror(errno));
		goto out;
	}

	r = workq_init(&wq, 0);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: worker threads: %s\n", strerror(-r));
		goto out;
	}
	wq_up = true;
	srv.wq = &wq;

	srv.exports = calloc(o.n_exports, sizeof(*srv.exports));
	srv.stats = calloc(o.n_exports, sizeof(*srv.stats));
	if (!srv.exports || !srv.stats)
		goto oom;
	for (i = 0; i < o.n_exports; i++) {
		char err[512];
		size_t j;

		r = export_file_open(o.exports[i], &wq, &srv.exports[i], err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "nbdsrv serve: --export: %s\n", err);
			if (r == -EINVAL)
				rc = 2;
			goto out;
		}
		srv.n_exports++;
		for (j = 0; j < i; j++)
			if (!strcmp(srv.exports[j]->name, srv.exports[i]->name)) {
				fprintf(stderr, "nbdsrv serve: --export: '%s': duplicate export name\n",
					srv.exports[i]->name);
				rc = 2;
				goto out;
			}
	}

	if (!o.volumes && cfg && cfg->cache_path[0] && cfg->key_file[0]) {
		vmode = VOLUMES_PERSISTENT;
		o.volumes = "persistent";
	}
	if (o.n_create_vols && !o.volumes) {
		rc = usage_error("%s", "--create-volume needs volumes (a --config with "
				 "cache_path and key_file, or --volumes)");
		goto out;
	}
	if (o.volumes) {
		r = volumes_open(vmode, cfg, o.discard_dirty ? VOLUMES_DISCARD_DIRTY : 0,
				 &vols);
		if (r < 0)
			goto out;
		srv.resolver = volumes_resolver(vols);
		if (volumes_ephemeral(vols))
			log_warn("volumes: EPHEMERAL mode — volumes and snapshots live in "
				 "memory only; everything is lost when the daemon exits");
		for (i = 0; i < o.n_create_vols; i++) {
			const char *spec = o.create_vols[i], *eq = strchr(spec, '=');
			char name[VOL_NAME_MAX + 1];
			uint64_t sz;

			if ((size_t)(eq - spec) > VOL_NAME_MAX) {
				fprintf(stderr, "nbdsrv serve: --create-volume: '%s': name too "
					"long\n", spec);
				goto out;
			}
			memcpy(name, spec, (size_t)(eq - spec));
			name[eq - spec] = 0;
			parse_size(eq + 1, &sz);
			if (volumes_ensure(vols, name, sz) < 0)
				goto out;
		}
	}

	activated = listen_activated(&srv);
	if (activated < 0)
		goto out;
	/* -EINVAL from these: the value does not parse (usage error). */
	for (i = 0; i < o.n_listen; i++)
		if ((r = listen_tcp(&srv, o.listen[i])) < 0) {
			rc = r == -EINVAL ? 2 : 1;
			goto out;
		}
	for (i = 0; i < o.n_unix; i++)
		if ((r = listen_unix(&srv, o.unix_paths[i])) < 0) {
			rc = r == -EINVAL ? 2 : 1;
			goto out;
		}
	if (srv.n_listeners == 0 && cfg) {
		for (i = 0; i < cfg->nlisten; i++) {
			const char *a = cfg->listen[i];

			r = strncmp(a, "unix:", 5) ? listen_tcp(&srv, a)
						   : listen_unix(&srv, a + 5);
			if (r < 0) {
				fprintf(stderr, "nbdsrv serve: (listen address from %s)\n",
					o.config);
				goto out;
			}
		}
	}
	if (srv.n_listeners == 0 && listen_tcp(&srv, "0.0.0.0:10809") < 0)
		goto out;

	control = o.control;
	if (!control && cfg) {
		r = ctl_default_path(cfg, ctl_path, sizeof(ctl_path));
		if (r == 0) {
			if (mkdir(cfg->cache_path, 0700) < 0 && errno != EEXIST) {
				fprintf(stderr, "nbdsrv serve: cache_path '%s': %s\n",
					cfg->cache_path, strerror(errno));
				goto out;
			}
			control = ctl_path;
		} else {
			log_warn("no control socket: %s has no cache_path and --control "
				 "was not given", o.config);
		}
	}
	if (vols && !control)
		log_warn("volumes: no control socket (--control PATH or --config FILE), so "
			 "no volume can be created");
	if (cfg) {
		drain_ms = cfg->shutdown_flush_timeout_ms;
		r = pool_thread_start(cfg, &pool);
		zdb_pool_cfg_wipe(cfg);
		if (r < 0) {
			fprintf(stderr, "nbdsrv serve: %s: cannot open the pool: %s\n",
				o.config, strerror(-r));
			goto out;
		}
		log_info("pool: k=%u m=%u, %u backends (%s)", cfg->k, cfg->m,
			 cfg->nbackends, o.config);
		if (vols)
			pool_thread_on_emptied(pool, volumes_backend_emptied, vols);
	}

	srv.n_reactors = o.threads;
	r = server_start(&srv);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: cannot start: %s\n", strerror(-r));
		goto out;
	}
	for (i = 0; i < srv.n_listeners; i++)
		log_info("listening on %s", srv.listeners[i].what);
	for (i = 0; i < srv.n_exports; i++)
		log_info("export '%s': %llu bytes%s", srv.exports[i]->name,
			 (unsigned long long)srv.exports[i]->size,
			 (srv.exports[i]->flags & EXPORT_READ_ONLY) ? ", read-only" : "");

	/* The persistent volumes hold <cache_path>/meta's lock: a control
	 * socket at the default path in <cache_path> is ours (stale if found). */
	r = serve_until_signal(&srv, sfd, control,
			       control == ctl_path && vmode == VOLUMES_PERSISTENT,
			       o.pidfile, &pool, vols, drain_ms);
	if (r == -EINVAL)
		rc = 2;                 /* --control value does not parse */
	else
		rc = r < 0 ? 1 : 0;
	goto out;
oom:
	fprintf(stderr, "nbdsrv serve: out of memory\n");
	rc = 1;
out:
	pool_thread_stop(pool);
	if (cfg) {
		zdb_pool_cfg_wipe(cfg);
		free(cfg);
	}
	for (i = 0; i < srv.n_exports; i++) {
		const char *name = srv.exports[i]->name;
		char namebuf[256];

		snprintf(namebuf, sizeof(namebuf), "%s", name);
		r = export_close(srv.exports[i]);
		if (r < 0) {
			log_error("export '%s': final flush: %s", namebuf, strerror(-r));
			rc = 1;
		}
	}
	free(srv.exports);
	free(srv.stats);
	if (vols && volumes_close(vols) < 0) {
		log_error("volumes: final flush or commit failed");
		rc = 1;
	}
	listener_close_all(&srv);
	if (wq_up)
		workq_fini(&wq);
	if (sfd >= 0)
		close(sfd);
	free(o.listen);
	free(o.unix_paths);
	free(o.exports);
	free(o.create_vols);
	return rc;
}
