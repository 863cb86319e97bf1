/*
 * volumes.h — thin volumes in the daemon: the volume store (vol/ over an
 * object store), volumes and snapshots as NBD exports, and the control
 * socket's vol.* / snap.* commands.
 *
 * Two modes.  PERSISTENT (the product: `serve --config FILE` whose config
 * has cache_path and key_file): metadata in <cache_path>/meta, objects in
 * the SSD cache <cache_path>/cache.img in front of the config's erasure-
 * coded pool.  EPHEMERAL (tests, demos: `serve --volumes ephemeral`): data
 * in RAM, metadata in a private temporary directory without fsync, all
 * removed at exit.  Nothing outside volumes.c depends on the mode.
 */
#ifndef NBDSRV_VOLUMES_H
#define NBDSRV_VOLUMES_H

#include "nbdsrv/export.h"
#include "nbdsrv/proto.h"
#include "vol/vol.h"

#include <jansson.h>
#include <stdbool.h>

enum volumes_mode {
	VOLUMES_EPHEMERAL = 1,  /* memstore + metadata in a temp dir, nosync */
	VOLUMES_PERSISTENT,     /* <cache_path>/meta + ssdcache + pool */
};

struct zdb_pool_cfg;

struct volumes;

/* Parse a --volumes value ("ephemeral", "persistent").  -EINVAL when
 * unknown. */
int volumes_parse_mode(const char *s, enum volumes_mode *out);
/* Open the store in `mode` (PERSISTENT needs cfg with cache_path and
 * key_file; cfg is only read during the call).  Blocking (main thread,
 * before the reactors).  Returns 0 and *out, or -errno after printing why
 * (-EBUSY: another process uses the cache_path; -ESTALE: the cache file
 * was lost in writeback mode and flags lacks VOLUMES_DISCARD_DIRTY). */
#define VOLUMES_DISCARD_DIRTY 1u  /* cache file lost in writeback mode: open
                                   * anyway, unflushed-to-pool writes lost */
int volumes_open(enum volumes_mode mode, const struct zdb_pool_cfg *cfg,
		 unsigned flags, struct volumes **out);
/* Make everything written durable (cache flush + metadata commit), close
 * the volume pool, the object store and the metadata store (the cache is
 * marked clean), remove an ephemeral mode's directory, free v.  No export
 * of it may be open any more.  NULL is a no-op.  Returns 0 or the first
 * error of the final flush / commit. */
int volumes_close(struct volumes *v);
/* The chunk size every volume must have (the cache's slot size), or 0 when
 * any valid chunk size will do (ephemeral). */
uint64_t volumes_chunk_size(const struct volumes *v);
/* Create volume name of size bytes unless a volume of that name exists
 * (then 0, and a log line when its size differs).  -errno with a message
 * printed otherwise. */
int volumes_ensure(struct volumes *v, const char *name, uint64_t size);
/* The object store (the ssdcache in PERSISTENT mode, for its stats). */
struct objstore *volumes_store(struct volumes *v);
struct vol_pool *volumes_pool(struct volumes *v);
const char *volumes_mode_name(const struct volumes *v);
bool volumes_ephemeral(const struct volumes *v);
/* The resolver the NBD sessions use to find "vol" and "vol@snap". */
const struct nbd_resolver *volumes_resolver(struct volumes *v);
/* Call fn for every volume or snapshot export clients hold open now, with
 * how many sessions hold it (a snapshot shot as "vol@snap").  Any thread. */
void volumes_foreach_open(struct volumes *v,
			  void (*fn)(void *arg, const char *name, unsigned sessions),
			  void *arg);
/* Free entries of deleted snapshots, a bounded amount per call: call it
 * from the control thread about once a second. */
void volumes_gc(struct volumes *v);

struct ssdcache_sync;
/* Ask for every write completed before the call to reach the pool, without
 * blocking: done(arg, res) runs once on loop's thread, 0 or -EIO, or the
 * res of an earlier volumes_sync_cancel(*out, res) (ssdcache_sync_start).
 * Every sync must be answered before volumes_close.  -ENOTSUP without a
 * pool (ephemeral mode), -ENOMEM: done never runs. */
int volumes_sync_start(struct volumes *v, struct loop *loop,
		       void (*done)(void *arg, int res), void *arg,
		       struct ssdcache_sync **out);
/* Stop waiting for a sync (loop's thread, before its done ran): done
 * runs soon with res; the flush goes on (ssdcache_sync_cancel). */
void volumes_sync_cancel(struct ssdcache_sync *y, int res);
struct zdb_refusal;
/* The cache's pool's per-backend refusals (ssdcache_refusals: 0-db full,
 * read-only...) into out (room for max); returns how many backends have
 * refused (may exceed max), 0 in memory mode.  Any thread. */
unsigned volumes_refusals(struct volumes *v, struct zdb_refusal *out, unsigned max);
/* Objects written but not yet in the pool now (0 without a pool). */
uint64_t volumes_pool_dirty(struct volumes *v);
/* Start a scrub of the cache's pool versions (ssdcache_scrub_start; rate
 * < 0: pool.conf's scrub_rate; its progress is the "scrub" object of
 * volumes_status).  Any thread.  0, -EBUSY (one runs), -ENOTSUP (memory
 * volumes). */
int volumes_scrub(struct volumes *v, bool deep, int64_t rate);
/* A backend was emptied (pool_thread_on_emptied's callback, arg = the
 * volumes): start a shallow scrub (ssdcache_backend_emptied).  Any
 * thread, never blocks. */
void volumes_backend_emptied(void *arg, const char *backend);
/* A stopping daemon whose pool does not answer: fail the writethrough
 * FLUSHes waiting for it, and later ones, with err (ssdcache_fail_flushes)
 * so that their connections can end.  Any thread. */
void volumes_fail_flushes(struct volumes *v, int err);
/* How long volumes_close waits for flushes to the pool in flight before
 * it cancels them (ssdcache_set_close_wait; default 60 s).  Any thread. */
void volumes_set_close_wait(struct volumes *v, uint64_t ms);

/* Status of the volume store: {"cache_mode", "cache": ssdcache counters
 * (persistent mode), "warm": [jobs]}.  The caller decrefs it; NULL without
 * memory. */
json_t *volumes_status(struct volumes *v);
/* Start warming spec ("vol" or "vol@snap") into the cache at rate bytes/s
 * (0 = unlimited) in the background; *id names the job in status.
 * -ENOENT (message in err) for an unknown spec. */
int volumes_warm(struct volumes *v, const char *spec, uint64_t rate, uint64_t *id,
		 char *err, size_t errlen);
/* Stop the warm jobs of volume vol (before `vol rm`): see warm_stop. */
void volumes_warm_stop(struct volumes *v, const char *vol, const char *reason);

/* warm.c: the background warm-up thread of a volume pool (volumes.c owns
 * one).  warm_close stops a running job after its chunks in flight. */
struct warm;
int warm_open(struct vol_pool *p, struct warm **out);
void warm_close(struct warm *w);
int warm_add(struct warm *w, const char *spec, uint64_t rate, uint64_t *id,
	     char *err, size_t errlen);
/* Array of the queued, running and last finished jobs (new reference). */
json_t *warm_status(struct warm *w);
/* Stop every queued or running job of volume vol (its head or snapshots),
 * state "stopped" with reason; returns once the running one has closed its
 * view (after its chunks in flight).  The number stopped; NULL w: 0. */
unsigned warm_stop(struct warm *w, const char *vol, const char *reason);
/* Sequential read-ahead: prefetch [off, off+len) of spec on the warm
 * thread, with a view of its own; dropped when WARM_RA_MAX are in flight.
 * Any thread; never blocks; NULL w is a no-op.  Returns whether it was
 * queued (false: dropped, ask again later). */
bool warm_readahead(struct warm *w, const char *spec, uint64_t off, uint64_t len);

/* export_vol.c: a view ("vol" read-write, "vol@snap" read-only) as an
 * export; sequential reads trigger read-ahead on warm (may be NULL).  Returns 0 and *out (closed with export_close(), which does not
 * block: the caller flushes when it needs durability), or -errno with
 * vol_last_error() set. */
int export_vol_open(struct vol_pool *p, struct warm *warm, const char *spec,
		    struct export **out);

/* control_vol.c: run the control command `cmd` ("vol.create", "snap.ls",
 * …) with the request's members on p.  Returns 0 with *members (an object
 * whose members go into the reply; the caller decrefs it), -ENOSYS for an
 * unknown command, or another -errno with a message in err. */
int ctl_vol_call(struct volumes *v, const char *cmd, json_t *req,
		 json_t **members, char *err, size_t errlen);

#endif /* NBDSRV_VOLUMES_H */
