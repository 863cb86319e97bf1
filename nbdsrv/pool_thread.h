/*
 * pool_thread.h — the backend pool inside the daemon: one thread with its
 * own loop owns the struct zdb_pool (health checks, PINGs, reconnects, INFO
 * refreshes all run there).  Other threads talk to it only by posting
 * requests; answers come back by loop_post() to the asker's loop.
 */
#ifndef NBDSRV_POOL_THREAD_H
#define NBDSRV_POOL_THREAD_H

#include "common/common.h"
#include "zdb/zdb.h"

#include <stdbool.h>
#include <stddef.h>

struct pool_thread;

/* Start the thread and open the pool from cfg (copied; the caller may wipe
 * its copy afterwards).  Returns once zdb_pool_open() has run there: 0 and
 * *out, or -errno (no thread left running). */
int pool_thread_start(const struct zdb_pool_cfg *cfg, struct pool_thread **out);
/* Close the pool (requests in flight complete with -ECANCELED), join the
 * thread, free pt.  NULL is a no-op.  Not from a callback of pt itself. */
void pool_thread_stop(struct pool_thread *pt);

/* Call fn(arg, backend name) on the pool thread whenever a backend is seen
 * emptied (ZDB_EV_EMPTIED); fn must not block.  Any thread, once. */
void pool_thread_on_emptied(struct pool_thread *pt,
			    void (*fn)(void *arg, const char *backend), void *arg);

/* A status request: zdb_pool_format_status() run on the pool's thread. */
struct pool_status_req {
	struct loop_msg msg;            /* internal */
	struct pool_thread *pt;         /* internal */
	struct loop *reply_loop;        /* done() runs on this loop */
	void (*done)(struct pool_status_req *req);
	bool json;                      /* JSON object, else the human table */
	const struct zdb_refusal *refusals; /* another pool's (the cache's),
	                                 * merged in (zdb_pool_format_status_ext);
	                                 * the caller's, kept until done() */
	unsigned nrefusals;
	char *text;                     /* out: malloc'd (caller frees), or NULL
	                                 * when out of memory */
	size_t len;
	void *arg;                      /* the caller's */
};

/* Queue req (req lives until done() ran).  Any thread. */
void pool_thread_status(struct pool_thread *pt, struct pool_status_req *req);

#endif /* NBDSRV_POOL_THREAD_H */
