/*
 * cache.h — the layer below vol/: the metadata store (meta_*) and the object
 * store interface (objstore_*) with its in-memory implementation (memstore).
 *
 * 1. meta — one LMDB environment per pool, named tables (enum meta_table),
 *    a format record (version + pool id) checked at open, a persistent id
 *    counter reserved in blocks, and GROUP COMMIT:
 *
 *        reactor threads                       committer thread
 *        meta_wbegin ─ put/del (staged) ─┐
 *                                        ├─► open batch ──swap──► committing
 *        meta_rbegin ─ get/seek ◄────────┘   (skiplists)   one mdb txn, fsync
 *             (open batch, then committing batch, then LMDB)       │
 *        meta_flush(f) ──────────────────────────────────────► f->cb on f->loop
 *
 *    Changes are staged in memory and become durable together, in one write
 *    transaction, at the next commit (a flush request, or the size/time
 *    thresholds).  A change is visible to every reader as soon as it is
 *    staged (read-your-writes).  All changes staged inside one
 *    meta_wbegin/meta_wend section land in the same transaction, so a
 *    multi-record change is never half applied after a crash.
 *
 * 2. objstore — where chunk objects' bytes live (the SSD cache + pool of
 *    issue 6, or memstore).  An ops table; every data op is asynchronous and
 *    completes on the submitter's loop.
 *
 * Functions return >= 0 or -errno; the meta_* ones that fail leave a
 * human-readable reason in meta_last_error() (per thread).
 */
#ifndef NBDSRV_CACHE_H
#define NBDSRV_CACHE_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ===================================================== metadata store === */

#define META_FORMAT_VERSION 1u
#define META_POOL_ID_LEN    16

/* The named tables of the environment; keys compare as bytes (memcmp, then
 * the shorter first), so integers in keys are stored big-endian. */
enum meta_table {
	META_T_META = 0,        /* format record, id counter */
	META_T_VOLS,            /* vol/: volume id → record */
	META_T_NAMES,           /* vol/: volume name → id */
	META_T_SNAPS,           /* vol/: (volume, epoch) → snapshot record */
	META_T_MAP,             /* vol/: (volume, chunk, epoch) → object */
	META_T_OBJS,            /* vol/: object → refcount, base */
	META_T_GC,              /* vol/: dropped objects awaiting shard deletion */
	META_T_INTENTS,         /* issue 6: flush intents */
	META_T_CACHE_INDEX,     /* issue 6: cache slots */
	META_T_COUNT
};

struct meta;

/* Called on the committer thread after each successful commit, with the
 * generation of the newest batch it contained (see meta_wgen()); may stage
 * new changes (they go to a later commit).  Must not block for long. */
typedef void meta_commit_hook(void *arg, uint64_t gen);

struct meta_opts {
	uint8_t pool_id[META_POOL_ID_LEN]; /* must match the store's */
	bool create;              /* initialise an empty store (else -ENOENT) */
	uint64_t map_size;        /* LMDB map size; 0 = 64 GiB */
	uint64_t commit_bytes;    /* commit when this much is staged; 0 = 16 MiB */
	uint64_t commit_delay_ns; /* commit staged changes this old; 0 = 1 s,
	                           * UINT64_MAX = only on flush */
	uint64_t id_block;        /* ids reserved per counter bump; 0 = 1024 */
	bool nosync;              /* commits without fsync (ephemeral mode,
	                           * fuzzing): NOT crash-safe */
	meta_commit_hook *hook;   /* optional */
	void *hook_arg;
};

/* Open (or with opts->create, create) the store in directory `path`.  Takes
 * an exclusive lock on it: -EBUSY if another process holds it.  Refuses a
 * newer or unknown format (-EPROTONOSUPPORT) and another pool's store
 * (-EINVAL).  On success *out is owned by the caller (meta_close). */
int meta_open(const char *path, const struct meta_opts *opts, struct meta **out);
/* Commit what is staged (blocking), stop the committer, close.  Returns the
 * final commit's result; the store is closed either way. */
int meta_close(struct meta *m);

/* The reason for the last failure of a meta_* call on this thread. */
const char *meta_last_error(void);

/* A read (meta_rbegin) or write (meta_wbegin) section.  Sections are short
 * and never span an I/O wait.  A write section excludes every other section
 * and the committer's batch swap; read sections run in parallel.  Never
 * nest sections on one thread. */
struct meta_txn;
struct meta_txn *meta_rbegin(struct meta *m);
struct meta_txn *meta_wbegin(struct meta *m);
/* End a section; after a write section, may wake the committer when the
 * staged size passed commit_bytes. */
void meta_end(struct meta_txn *t);
/* The section the calling thread has open on m, or NULL.  Lets code that
 * is called from inside someone else's section (an objstore op submitted
 * by vol/) read (any section) or stage (a write section: check
 * meta_txn_is_write) in it instead of opening a nested one. */
struct meta_txn *meta_thread_txn(struct meta *m);
bool meta_txn_is_write(const struct meta_txn *t);

/* Look key up; copies at most vcap bytes of the value to val.  Returns the
 * value's length, or -ENOENT. */
int meta_get(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen, void *val, size_t vcap);

enum meta_seek { META_GE, META_GT, META_LE, META_LT };
/* Find the first (GE/GT) or last (LE/LT) key relative to key; copies the
 * found key (kcap bytes at most; *klen_out its length) and value.  Returns
 * the value's length or -ENOENT. */
int meta_seek(struct meta_txn *t, enum meta_table tb, enum meta_seek how,
	      const void *key, size_t klen, void *kout, size_t kcap,
	      size_t *klen_out, void *val, size_t vcap);

/* meta_seek limited to keys sharing the first plen bytes of key: -ENOENT
 * as soon as the nearest key has another prefix (so staged deletes of
 * other ranges are never walked). */
int meta_seek_prefix(struct meta_txn *t, enum meta_table tb, enum meta_seek how,
		     const void *key, size_t klen, size_t plen, void *kout,
		     size_t kcap, size_t *klen_out, void *val, size_t vcap);

/* Stage a put / delete (write sections only).  Copies key and value.
 * -ENOMEM when out of memory (nothing staged). */
int meta_put(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen, const void *val, size_t vlen);
int meta_del(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen);
/* A fresh id from the persistent counter (never 0, never handed out twice,
 * even across crashes: the counter's new high-water mark is staged in the
 * same batch as anything that uses an id of the block, and must be
 * committed before the id is used outside the store). */
uint64_t meta_alloc_id(struct meta_txn *t);
/* The generation of the batch this section stages into. */
uint64_t meta_wgen(struct meta_txn *t);

/* A flush request: completes after everything staged before the call is
 * committed (or the commit failed: then meta_last_error() in cb says why;
 * the changes stay staged and the next commit retries them). */
struct meta_flush {
	struct loop *loop;                       /* cb runs on this loop */
	void (*cb)(struct meta_flush *f, int res);
	/* private */
	struct loop_msg msg;
	struct meta_flush *next;
	uint64_t gen;
	int res;
	bool done;                               /* meta_sync() only */
	char err[160];                           /* failure message */
};
/* Queue f (any thread; f must live until its cb ran). */
void meta_flush(struct meta *m, struct meta_flush *f);
/* Blocking flush for threads that are not reactors (control, tests). */
int meta_sync(struct meta *m);

struct meta_stats {
	uint64_t commits;         /* successful write transactions */
	uint64_t commit_errors;
	uint64_t staged_ops;      /* puts + deletes staged, ever */
	uint64_t staged_bytes;    /* currently staged, approx. */
	uint64_t lmdb_seeks;      /* cursor positionings in LMDB, ever */
	uint64_t lmdb_gets;       /* point lookups in LMDB, ever */
	uint64_t entries[META_T_COUNT]; /* committed entries per table */
	uint64_t db_bytes;        /* pages in use × page size */
};
int meta_get_stats(struct meta *m, struct meta_stats *st);

/* ======================================================= object store === */

/*
 * An object is the content of one chunk of one or more views; objects are
 * identified by u64 ids (never 0) that are never reused.  Byte ranges of an
 * object never written read as the base object's bytes (base 0 = zeros).
 *
 * Thread and ownership rules, for every data op:
 *   - Submit on the loop io->loop; the op never completes inside the submit
 *     call: io->cb(io, res) runs later on io->loop, res = 0 or -errno.
 *   - Submitting never blocks.  The store takes, AT SUBMISSION, whatever it
 *     needs so that the op's view of the object is fixed: a write creates
 *     the object (from its base) before the submit call returns, a read sees
 *     the object as of the submit, and a drop() after the submit returned
 *     does not affect an op already submitted.
 *   - io and io->buf belong to the caller and must stay valid until cb ran.
 */
struct objstore;
struct objstore_io;
typedef void objstore_cb(struct objstore_io *io, int res);

struct objstore_io {
	struct loop *loop;        /* caller's loop: submit and cb run here */
	objstore_cb *cb;
	uint64_t obj;             /* object operated on (not for flush) */
	uint64_t base;            /* content obj starts from if the store has
	                           * never seen obj: 0 = zeros */
	uint64_t off, len;        /* byte range within the object */
	void *buf;                /* read: filled; write: source */
	void *priv;               /* caller's */
	/* private to the store */
	struct loop_op op;
	int res;
};

struct objstore_ops {
	const char *name;
	/* Required. Fill buf with [off, off+len) of obj. */
	void (*read)(struct objstore *s, struct objstore_io *io);
	/* Required. Write buf to [off, off+len) of obj, creating obj from
	 * base if it does not exist yet. */
	void (*write)(struct objstore *s, struct objstore_io *io);
	/* Required. Zero [off, off+len) of obj (also what a partial TRIM
	 * does), creating obj from base if it does not exist yet. */
	void (*zero)(struct objstore *s, struct objstore_io *io);
	/* Required. Make every op completed before this submit durable per
	 * the store's mode (memstore: nothing to do). */
	void (*flush)(struct objstore *s, struct objstore_io *io);
	/* Required. obj's last reference is gone and committed; it will never
	 * be read or written again, except that its content must still be
	 * served as the base of objects created from it.  Any thread;
	 * synchronous; never blocks for long; unknown obj: no-op. */
	void (*drop)(struct objstore *s, uint64_t obj);
	/* Optional. Bring [off, off+len) of obj into the store's fastest
	 * tier (NBD_CMD_CACHE, `vol warm`); buf is unused; cb runs when the
	 * range is there (res 0) or could not be fetched (res < 0).  NULL:
	 * everything is already fast (objstore_prefetch completes at once). */
	void (*prefetch)(struct objstore *s, struct objstore_io *io);
	/* Optional. Free the store; no op in flight. */
	void (*close)(struct objstore *s);
};

struct objstore {
	const struct objstore_ops *ops;   /* first member */
};

static inline void objstore_read(struct objstore *s, struct objstore_io *io)
{ s->ops->read(s, io); }
static inline void objstore_write(struct objstore *s, struct objstore_io *io)
{ s->ops->write(s, io); }
static inline void objstore_zero(struct objstore *s, struct objstore_io *io)
{ s->ops->zero(s, io); }
static inline void objstore_flush(struct objstore *s, struct objstore_io *io)
{ s->ops->flush(s, io); }
/* Complete io with res on io->loop (a NOP through the ring), for stores
 * that do their work at submission.  Loop thread only. */
void objstore_complete(struct objstore_io *io, int res);
static inline void objstore_prefetch(struct objstore *s, struct objstore_io *io)
{ if (s->ops->prefetch) s->ops->prefetch(s, io); else objstore_complete(io, 0); }
static inline void objstore_drop(struct objstore *s, uint64_t obj)
{ s->ops->drop(s, obj); }
static inline void objstore_close(struct objstore *s)
{ if (s && s->ops->close) s->ops->close(s); }

/* memstore: objects in RAM, eager copy of the base at creation.  For tests
 * and the ephemeral mode.  Thread-safe.  With track_drops it remembers every
 * dropped id (16 bytes each, for tests' leak / double-drop checks). */
int memstore_create(bool track_drops, struct objstore **out);

struct memstore_stats {
	uint64_t objects;         /* live objects */
	uint64_t bytes;           /* their allocated bytes */
	uint64_t drops;           /* drop() calls */
	uint64_t drops_unknown;   /* drop() of an object it did not hold */
	uint64_t double_drops;    /* drop() of an id already dropped */
	uint64_t writes_after_drop; /* data ops on an id already dropped */
};
void memstore_get_stats(struct objstore *s, struct memstore_stats *st);
/* Whether obj was dropped (exactly once or more). */
bool memstore_was_dropped(struct objstore *s, uint64_t obj);

/* ===================================================== SSD cache (issue 6) === */

/*
 * ssdcache: the object store on a local SSD (cache/ssd.c has the design).
 * Objects live in fixed-size slots (slot_size = the pool's chunk size) of a
 * cache file or block device, with a per-4 KiB-block validity bitmap; the
 * slot index is the table META_T_CACHE_INDEX of the pool's meta store, so a
 * FLUSH is fdatasync of the cache file, staging of the changed index
 * records, then (by the caller) one meta commit covering index and maps.
 * Without a pool ("local only") the cache holds the only copy of every
 * object: nothing is ever evicted and a full cache fails writes -ENOSPC.
 * With a pool, clean objects are evicted (S3-FIFO) and read back from the
 * pool on a miss; a full cache makes writers wait, never fail.
 */
#define SSDCACHE_BLOCK 4096u

struct zdb_pool_cfg;
struct codec;

struct ssdcache_opts {
	const char *path;         /* cache file or block device */
	uint64_t size;            /* bytes to create a file with (create only;
	                           * 0 = a device's size) */
	uint32_t slot_size;       /* power of two, 64 KiB .. 8 MiB */
	struct meta *meta;        /* holds the index; must outlive the store */
	uint8_t pool_id[META_POOL_ID_LEN]; /* the cache file must carry it */
	bool create;              /* initialise path when it has no cache
	                           * header (refused if the index is not empty) */
	/* The pool behind the cache; NULL = local only.  The cache opens it
	 * on its own thread (which then owns it) from a copy of this. */
	const struct zdb_pool_cfg *pool_cfg;
	struct codec *codec;      /* the pool's codec (k, m); outlives the store */
	uint8_t shard_key_seed[32]; /* secret derived from the pool key (never
	                           * the raw key): shard keys are a keyed hash
	                           * of (pool id, version, shard) under it */
	bool writethrough;        /* FLUSH waits for the pool commit */
	unsigned flush_parallel;  /* objects in flight to the pool; 0 = 16 */
	uint64_t dirty_max;       /* objects not yet in the pool before new
	                           * writes wait (backpressure); 0 = half the
	                           * slots */
	/* Write-back delay (ssdflush.c, "When an object is flushed"); each
	 * field is used only when its _set is true, else its default.  A
	 * pool-dirty object is flushed once no write touched it for
	 * flush_idle_ms (default 1000; 0 = at once, no delay), once it has
	 * been dirty for flush_max_age_ms (default 30000), when it is
	 * complete, when more than flush_background objects (default 3/4 of
	 * dirty_max) are pool-dirty (the oldest excess), or when forced. */
	uint64_t flush_idle_ms, flush_max_age_ms, flush_background;
	bool flush_idle_set, flush_max_age_set, flush_background_set;
	bool fault_wrap;          /* wrap backends in fault injectors (tests) */
	/* create with a new cache file while the index is not empty
	 * (cache file lost): in writeback mode, objects whose flushed
	 * writes are not in the pool yet make the open fail -ESTALE unless
	 * this is set (their unflushed writes are then discarded) */
	bool discard_dirty;
};

/* Open (or with o->create, initialise) the cache at o->path; blocking (call
 * it from a control thread, not a reactor).  Refuses, with a logged reason,
 * a file of another pool (-EINVAL), a damaged or unknown header
 * (-EUCLEAN / -EPROTONOSUPPORT), another slot size (-EINVAL), an index that
 * belongs to another cache file (-ESTALE).  With o->create and a missing or
 * empty cache file but a non-empty index (the cache file was lost): local
 * only, -ESTALE; with a pool the index is re-bound to the new file, every
 * object reads from its pool version (writethrough: objects with writes
 * not yet in the pool go back to their pool version or base, counted in
 * the log; writeback: -ESTALE unless o->discard_dirty).  Starts the cache's own thread.
 * On success *out is the caller's (objstore_close). */
int ssdcache_open(const struct ssdcache_opts *o, struct objstore **out);

struct ssdcache_stats {
	uint64_t slots;           /* total */
	uint64_t slots_used;      /* held by objects (live or retained bases) */
	uint64_t objects;         /* index entries in memory */
	uint64_t read_ops, write_ops, flush_ops;
	uint64_t rmw_blocks;      /* partial blocks filled from a base/zeros */
	uint64_t index_puts, index_dels; /* records staged */
	uint64_t pool_dirty;      /* objects not yet in the pool */
	uint64_t flushed;         /* versions committed to the pool */
	uint64_t flush_errors;    /* failed attempts (retried) */
	uint64_t gc_versions;     /* old versions whose shards were deleted */
	uint64_t intents_recovered; /* orphan versions deleted at open */
	uint64_t bp_waiting;      /* writes waiting for the dirty limit now */
	uint64_t bp_stalls;       /* writes that ever waited */
	uint64_t degraded_writes; /* versions committed with fewer than k+m
	                           * shards (the pool was short of backends) */
	uint64_t repairs;         /* degraded versions replaced by full ones */
	uint64_t repair_pending;  /* objects whose pool version is degraded now */
	/* scrub (ssdcache_scrub_start): the last or current one's figures */
	uint64_t scrub_running;   /* 1 while one runs */
	uint64_t scrub_deep;      /* it reads and verifies every shard */
	uint64_t scrub_runs;      /* scrubs ended (or given up), ever */
	uint64_t scrub_total;     /* index records when it started */
	uint64_t scrub_checked;   /* records walked so far */
	uint64_t scrub_shards;    /* shards checked */
	uint64_t scrub_missing;   /* shards absent (or never stored) */
	uint64_t scrub_bad;       /* shards that failed verification (deep) */
	uint64_t scrub_down;      /* shards on backends that are down */
	uint64_t scrub_errors;    /* checks with no answer (timeout): not
	                           * counted as lost, not repaired */
	uint64_t scrub_queued;    /* versions it found damaged (now on the
	                           * repair list, or already were) */
	uint64_t scrub_waiting;   /* versions it found damaged while fewer
	                           * than k+m backends were up: not queued
	                           * (no repair can place k+m shards), scrubbed
	                           * again once k+m are up */
	uint64_t scrub_rate;      /* its read limit, bytes/s (deep; 0 = none) */
	uint64_t scrub_bytes;     /* shard bytes it read (deep) */
	uint64_t scrub_throttled; /* times the rate limit held the walk */
	/* miss path and eviction (pool mode) */
	uint64_t hits;            /* reads and prefetches served from slots
	                           * (or zeros) without a pool fetch */
	uint64_t misses;          /* reads and prefetches that needed one */
	uint64_t fetches;         /* pool fetches (coalesced misses count once) */
	uint64_t fetch_shards;    /* shards those fetches read */
	uint64_t miss_bytes;      /* bytes they decoded into slots */
	uint64_t fetch_errors;    /* fetches that failed (their ops got -EIO
	                           * after retrying for 2 minutes) */
	uint64_t fetch_retries;   /* fetch attempts the pool could not serve */
	uint64_t prefetches;      /* prefetch ops */
	uint64_t readaheads;      /* misses of a sequential stream that
	                           * fetched the rest of the object */
	uint64_t read_fetches;    /* fetches a read started itself (its miss
	                           * found no prefetch / read-ahead in flight) */
	uint64_t read_served;     /* reads that waited for a fetch and got
	                           * their bytes from its plaintext (no read
	                           * back from the slot) */
	uint64_t evictions;       /* objects evicted */
	uint64_t cow_blocks;      /* blocks copied into dependents before a
	                           * write to their base landed */
	uint64_t read_retries;    /* reads resolved and read again: a write
	                           * landed in place on blocks they were
	                           * reading through a base */
	uint64_t fill_waits;      /* writes that waited for a dependent's
	                           * partial-block fill reading the blocks
	                           * they write (through a chain of bases) */
	uint64_t slot_waits;      /* writes / fetches that waited for a slot */
	uint64_t slots_free;      /* free now (not counting a batch whose
	                           * eviction records are being committed) */
	uint64_t slots_dirty;     /* slots of pool-dirty objects now */
	uint64_t rebind_reverted; /* at open: objects reverted to their pool
	                           * version after the cache file was lost */
	uint64_t intent_commits;  /* flusher commits of INTENT groups */
	uint64_t record_commits;  /* flusher commits of record groups (each
	                           * covers one or more flushed versions) */
	/* write-back delay: objects picked for a flush, by the first reason
	 * that held (forced: a writethrough FLUSH, a sync, writers waiting
	 * for dirty_max or for a slot, dirty at open, a failed attempt) */
	uint64_t wb_forced, wb_complete, wb_idle, wb_age, wb_background;
	uint64_t wb_waiting;      /* pool-dirty objects waiting for their delay
	                           * now (the others are being flushed or due) */
	uint64_t wb_oldest_ms;    /* age of the oldest pool-dirty period */
};
/* Start a scrub of every pool version the index names (evicted objects
 * too): each shard is checked on its recorded backend (EXISTS; deep: GET
 * and codec_verify_shard), and a version with a shard missing, bad or on
 * a backend that is down is marked for repair (rewritten whole by the
 * flusher, as a degraded write) — or, while fewer than k+m backends are
 * up, counted as waiting and scrubbed again once they are.  A deep scrub
 * reads at most rate bytes/s (0 = unlimited; < 0 = the pool config's
 * scrub_rate).  Returns at once; progress in the stats.  Any thread.  0,
 * -EBUSY (one is running), -EINVAL (no pool). */
int ssdcache_scrub_start(struct objstore *s, bool deep, int64_t rate);
/* A backend of the pool was seen emptied (by another pool of the daemon
 * than the cache's own, which reports it by itself): start a shallow
 * scrub, or make the running one (if it checked anything yet) run once
 * more.  Any thread, never blocks; no-op without a pool. */
void ssdcache_backend_emptied(struct objstore *s, const char *backend);

struct zdb_refusal;
/* Copy into out (room for max) the refusals of the cache's own pool —
 * requests a backend answered with -ENOSPC/-EROFS/-EACCES while up, e.g. a
 * full 0-db namespace — one per backend that refused any since the open,
 * as of the cache thread's last tick (at most 50 ms old).  Returns how many
 * backends have refused (may exceed max); 0 without a pool.  Any thread. */
unsigned ssdcache_refusals(struct objstore *s, struct zdb_refusal *out, unsigned max);

/* A consistent snapshot of s's counters (s must be an ssdcache). */
void ssdcache_get_stats(struct objstore *s, struct ssdcache_stats *st);

/* Wait until every write completed before the call is committed in the
 * pool, as a writethrough FLUSH does (in either mode; the write-back delay
 * does not apply to them).  Blocking: call it from a control thread, not
 * a reactor.  0, -EIO (the index could not be made durable), -EINVAL
 * without a pool, -ETIMEDOUT when that took more than timeout_ms (a paused
 * or failing pool: the objects stay forced until flushed). */
int ssdcache_sync(struct objstore *s, uint64_t timeout_ms);

struct ssdcache_sync;
/* ssdcache_sync without blocking: done(arg, res) runs exactly once, on
 * loop's thread (posted), with what ssdcache_sync would return (0, -EIO)
 * or with the res of an earlier ssdcache_sync_cancel.  *out is the handle
 * until done runs (not after).  Every handle must be answered before the
 * cache closes (cancel the ones that wait: the pool may never come back).
 * -EINVAL without a pool, -ENOMEM (then done never runs). */
int ssdcache_sync_start(struct objstore *s, struct loop *loop,
			void (*done)(void *arg, int res), void *arg,
			struct ssdcache_sync **out);
/* Stop waiting for y (loop's thread, before its done ran): done runs soon
 * with res (e.g. -ETIMEDOUT) unless its answer is already on the way.  The
 * flush goes on; the objects stay forced until flushed or the close. */
void ssdcache_sync_cancel(struct ssdcache_sync *y, int res);
/* Fail every writethrough FLUSH that waits for the pool, and every later
 * one, with err (-ESHUTDOWN: a stopping daemon whose pool is down or
 * paused; their data is durable on the SSD and reaches the pool after the
 * next start).  Syncs are not affected.  Any thread; no-op without a
 * pool. */
void ssdcache_fail_flushes(struct objstore *s, int err);
/* How long s's close waits for flushes to the pool in flight (default 60
 * s; 0: not at all) before it cancels them: those objects stay pool-dirty
 * and are flushed at the next open.  Any thread, before the close. */
void ssdcache_set_close_wait(struct objstore *s, uint64_t ms);
/* objstore_flush without the writethrough wait: the data and index are
 * durable on the SSD when io completes, whether or not the pool has them
 * (a close: the pool part is a drain's, bounded by its caller). */
void ssdcache_flush_local(struct objstore *s, struct objstore_io *io);

struct zdb_fault;
/* Tests: set the faults of backend idx of the cache's pool (opened with
 * fault_wrap); blocks until the cache thread applied them.  -EINVAL
 * without a pool or a fault wrapper. */
int ssdcache_set_fault(struct objstore *s, unsigned idx, const struct zdb_fault *f);

#endif /* NBDSRV_CACHE_H */
