/*
 * pool_thread.c — the daemon's backend pool on a thread of its own.
 *
 * zdb/ runs everything on the thread that owns the pool's loop; in the
 * daemon that is this thread, not a reactor and not the main thread:
 *
 *   main thread ──pool_thread_start──► pool thread: loop_init, zdb_pool_open
 *        │                                 │ pool tick: deadlines, PINGs,
 *        │                                 │   reconnects (zdb/pool.c)
 *        │                                 │ info timer: INFO / NSINFO every
 *        │                                 │   POOL_INFO_NS (capacity)
 *   control ──pool_thread_status──(post)──►│ zdb_pool_format_status into a
 *        ◄──────────(post reply)───────────┘   memory stream
 *
 * A status request is answered from what the pool knows at that moment
 * (health, latency histograms, the last INFO); it also starts an INFO
 * refresh so the next answer is fresher.  Nothing here waits on the network:
 * zdb_pool_refresh_info() is called with a zero timeout, which only submits.
 *
 * Stopping: a posted message sets `stopping`; the thread leaves its loop,
 * cancels the info timer, closes the pool and runs the loop until every
 * backend has stopped.  The ring itself is torn down by pool_thread_stop()
 * after the join, so a late post is harmless (it is never run: callers stop
 * asking before they stop the pool thread).
 *
 * A backend seen emptied (its canary vanished: restarted blank) is logged
 * and reported to pool_thread_on_emptied's callback: the daemon starts a
 * scrub of the cache's pool versions (cache/ssdscrub.c) to repair what
 * lost a shard there.
 *
 * Test knob (inert unless set): with NBDSRV_TEST_HOLD_POOL_STATUS=PATH in
 * the environment, a status request waits on the pool thread while PATH
 * exists (logged once per request), and pool_thread_stop logs that it
 * stops the thread: a test can keep a status on the pool thread across
 * the daemon's stop (cmd_serve.c serve_abort) and release it once the
 * stop waits for the thread.
 *
 * Secrets: the configuration copy is wiped as soon as the pool has taken its
 * own; backend messages and the status output never contain a password
 * (zdb.h's promise).
 */
#include "nbdsrv/pool_thread.h"

#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_RING    1024
#define POOL_INFO_NS (2000ull * 1000 * 1000)

struct pool_thread {
	pthread_t thread;
	struct loop loop;               /* created on the thread */
	struct zdb_pool_cfg *cfg;       /* until opened; then wiped, freed */
	struct zdb_pool *pool;
	sem_t started;
	int start_err;
	bool stopping;                  /* pool thread only */
	struct loop_msg stop_msg;
	struct loop_timer info_timer;
	/* pool_thread_on_emptied's callback (atomic: set after the start) */
	void (*emptied)(void *arg, const char *backend);
	void *emptied_arg;
};

static void pool_event(void *arg, unsigned idx, int ev)
{
	struct pool_thread *pt = arg;
	struct zdb_backend *b = zdb_pool_backend(pt->pool, idx);
	const char *name = b ? b->cfg.name : "?";

	switch (ev) {
	case ZDB_EV_UP:
		log_info("backend %s: up", name);
		break;
	case ZDB_EV_DOWN:
		log_warn("backend %s: down", name);
		break;
	case ZDB_EV_EMPTIED: {
		void (*fn)(void *, const char *) =
			__atomic_load_n(&pt->emptied, __ATOMIC_ACQUIRE);

		log_warn("backend %s: emptied (canary key missing)", name);
		if (fn)
			fn(pt->emptied_arg, name);
		break;
	}
	case ZDB_EV_FATAL:
		log_error("backend %s: configuration refused by the server", name);
		break;
	}
}

static void info_timer_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct loop_timer *t = container_of(op, struct loop_timer, op);
	struct pool_thread *pt = container_of(t, struct pool_thread, info_timer);

	if (pt->stopping || res == -ECANCELED)
		return;
	(void)zdb_pool_refresh_info(pt->pool, 0);
	loop_timer_arm(&pt->loop, &pt->info_timer, POOL_INFO_NS, info_timer_cb);
}

static void stop_msg(struct loop_msg *m)
{
	struct pool_thread *pt = container_of(m, struct pool_thread, stop_msg);

	pt->stopping = true;
}

static void *pool_thread_main(void *arg)
{
	struct pool_thread *pt = arg;
	struct zdb_pool_opts o = { 0 };
	int r;

	r = loop_init(&pt->loop, POOL_RING);
	if (r == 0) {
		o.on_event = pool_event;
		o.event_arg = pt;
		r = zdb_pool_open(&pt->loop, pt->cfg, &o, &pt->pool);
		if (r < 0)
			loop_fini(&pt->loop);
	}
	zdb_pool_cfg_wipe(pt->cfg);
	free(pt->cfg);
	pt->cfg = NULL;
	pt->start_err = r;
	sem_post(&pt->started);
	if (r < 0)
		return NULL;

	loop_timer_arm(&pt->loop, &pt->info_timer, POOL_INFO_NS / 4, info_timer_cb);
	while (!pt->stopping)
		if (loop_run_once(&pt->loop, 1000ull * 1000 * 1000) < 0)
			break;
	pt->stopping = true;
	loop_timer_cancel(&pt->loop, &pt->info_timer);
	zdb_pool_close(pt->pool);
	while (!zdb_pool_closed(pt->pool) || pt->info_timer.armed)
		if (loop_run_once(&pt->loop, 50ull * 1000 * 1000) < 0)
			break;
	zdb_pool_free(pt->pool);
	pt->pool = NULL;
	return NULL;
}

int pool_thread_start(const struct zdb_pool_cfg *cfg, struct pool_thread **out)
{
	struct pool_thread *pt = calloc(1, sizeof(*pt));
	int r;

	*out = NULL;
	if (!pt || !(pt->cfg = malloc(sizeof(*cfg)))) {
		free(pt);
		return -ENOMEM;
	}
	memcpy(pt->cfg, cfg, sizeof(*cfg));
	pt->stop_msg.fn = stop_msg;
	sem_init(&pt->started, 0, 0);
	r = -pthread_create(&pt->thread, NULL, pool_thread_main, pt);
	if (r < 0) {
		zdb_pool_cfg_wipe(pt->cfg);
		free(pt->cfg);
		sem_destroy(&pt->started);
		free(pt);
		return r;
	}
	while (sem_wait(&pt->started) < 0)
		;
	if (pt->start_err < 0) {
		r = pt->start_err;
		pthread_join(pt->thread, NULL);
		sem_destroy(&pt->started);
		free(pt);
		return r;
	}
	*out = pt;
	return 0;
}

void pool_thread_on_emptied(struct pool_thread *pt,
			    void (*fn)(void *arg, const char *backend), void *arg)
{
	pt->emptied_arg = arg;
	__atomic_store_n(&pt->emptied, fn, __ATOMIC_RELEASE);
}

void pool_thread_stop(struct pool_thread *pt)
{
	if (!pt)
		return;
	if (getenv("NBDSRV_TEST_HOLD_POOL_STATUS"))
		log_info("test knob: stopping the pool thread");
	loop_post(&pt->loop, &pt->stop_msg);
	pthread_join(pt->thread, NULL);
	loop_fini(&pt->loop);
	sem_destroy(&pt->started);
	free(pt);
}

static void status_reply_msg(struct loop_msg *m)
{
	struct pool_status_req *req = container_of(m, struct pool_status_req, msg);

	req->done(req);
}

static void status_msg(struct loop_msg *m)
{
	struct pool_status_req *req = container_of(m, struct pool_status_req, msg);
	struct pool_thread *pt = req->pt;
	const char *hold = getenv("NBDSRV_TEST_HOLD_POOL_STATUS");
	FILE *f;

	if (hold && access(hold, F_OK) == 0) {
		log_info("test knob: holding a status request");
		while (access(hold, F_OK) == 0)
			usleep(10 * 1000);
	}
	req->text = NULL;
	req->len = 0;
	/* run by loop_fini after the pool was freed: answered empty */
	f = pt->pool ? open_memstream(&req->text, &req->len) : NULL;
	if (f) {
		zdb_pool_format_status_ext(pt->pool, f, req->json, req->refusals,
					   req->nrefusals);
		if (fclose(f) != 0) {
			free(req->text);
			req->text = NULL;
			req->len = 0;
		}
	}
	if (!pt->stopping && pt->pool)
		(void)zdb_pool_refresh_info(pt->pool, 0);
	req->msg.fn = status_reply_msg;
	loop_post(req->reply_loop, &req->msg);
}

void pool_thread_status(struct pool_thread *pt, struct pool_status_req *req)
{
	req->pt = pt;
	req->msg.fn = status_msg;
	loop_post(&pt->loop, &req->msg);
}
