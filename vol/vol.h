/*
 * vol.h — thin copy-on-write volumes: chunk maps with epochs, snapshots,
 * clones, diff, du, and chunk-granular async I/O through an objstore.
 * The data model is docs/volumes-and-cache.md.
 *
 * Threads.  Control operations (vol_create … vol_gc) are synchronous,
 * metadata only (no data I/O), callable from any thread; their changes are
 * staged and become durable at the next commit (vol_sync(), a vol_flush()
 * on any view, or the store's thresholds).  Each runs in one exclusive
 * metadata section, so I/O on every volume waits for it: snapshot, clone,
 * create, rename are O(1); delete, shrink, rollback and flatten are
 * O(entries involved) (run them off-peak or wait for their async
 * versions); vol_gc is bounded by its budget — the daemon must call it
 * periodically (deleted snapshots free nothing until it runs).  I/O operations
 * (vol_read … vol_flush) are asynchronous: submit on the thread that owns
 * io->loop, io->cb runs later on that loop, never inside the submit call.
 * Several threads may use views of the same volume at once.
 *
 * Errors are -errno; the failing call leaves a message for the user in
 * vol_last_error() (per thread), e.g. the names of the clones that block a
 * snapshot delete.
 *
 * Sizes.  A volume's size is a whole number of chunks; the chunk size is a
 * power of two from 64 KiB to 8 MiB.
 */
#ifndef NBDSRV_VOL_H
#define NBDSRV_VOL_H

#include "cache/cache.h"
#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define VOL_NAME_MAX      64            /* bytes, [A-Za-z0-9._-], not leading . or - */
#define VOL_CHUNK_MIN     (64u << 10)
#define VOL_CHUNK_MAX     (8u << 20)
#define VOL_SIZE_MAX      (1ull << 60)

struct vol_pool;
struct vol_view;

struct vol_pool_opts {
	const char *path;                  /* metadata directory (unless meta) */
	uint8_t pool_id[META_POOL_ID_LEN];
	bool create;                       /* initialise an empty store */
	/* An already open store (borrowed: vol neither opens nor closes it;
	 * path, pool_id, create, map_size, commit_*, nosync are then unused).
	 * Its owner must forward the store's commit hook to
	 * vol_pool_commit_hook() while the pool is open. */
	struct meta *meta;
	struct objstore *store;            /* borrowed; outlives the pool */
	unsigned k, m;                     /* erasure code, for `stored` in du */
	uint64_t commit_bytes;             /* see struct meta_opts */
	uint64_t commit_delay_ns;
	uint64_t map_size;
	bool nosync;                       /* no fsync: ephemeral pools only */
};

/* Open a pool's metadata.  Objects whose drop was committed but not yet
 * done (a crash in between) are dropped now.  *out owned by the caller. */
int vol_pool_open(const struct vol_pool_opts *o, struct vol_pool **out);
/* Commit what is staged and close (a borrowed store stays open); no view
 * may be open, no I/O in flight.  Returns the final commit's result. */
int vol_pool_close(struct vol_pool *p);
/* The commit hook vol installs on a store it opens itself: with a borrowed
 * store (opts.meta), call it from that store's hook with the pool as arg,
 * from vol_pool_open's return until vol_pool_close is called. */
void vol_pool_commit_hook(void *pool, uint64_t gen);
/* Commit every staged change now (blocking; not on a reactor). */
int vol_sync(struct vol_pool *p);
/* The message of the last failed vol_* call on this thread. */
const char *vol_last_error(void);
/* The metadata store (for stats and for the cache of issue 6). */
struct meta *vol_pool_meta(struct vol_pool *p);

/* ------------------------------------------------------------ control -- */

struct vol_info {
	uint64_t id;
	char name[VOL_NAME_MAX + 1];
	uint64_t size, chunk_size;
	uint64_t epoch;                    /* head's current epoch */
	char parent[VOL_NAME_MAX + 1];     /* clone's origin volume, or "" */
	char parent_snap[VOL_NAME_MAX + 1];
	unsigned nsnaps;
	bool gc_pending;                   /* deleted snapshots not yet GCed */
};

struct vol_snap_info {
	char name[VOL_NAME_MAX + 1];
	uint64_t epoch, size;
	uint64_t ctime;                    /* seconds since the epoch */
	unsigned nclones;
};

/* -EINVAL bad name/size/chunk size, -EEXIST name taken. */
int vol_create(struct vol_pool *p, const char *name, uint64_t size,
	       uint64_t chunk_size);
/* Array of every volume, sorted by name; *out freed by the caller (free). */
int vol_list(struct vol_pool *p, struct vol_info **out, size_t *n);
int vol_get_info(struct vol_pool *p, const char *name, struct vol_info *out);
/* Grow (new chunks read as holes) or shrink (chunks past the end become
 * holes in the head; snapshots keep them).  O(chunks cut off that hold
 * data). */
int vol_resize(struct vol_pool *p, const char *name, uint64_t new_size);
/* -EBUSY with a view open or with clones of its snapshots (named). */
int vol_delete(struct vol_pool *p, const char *name);
int vol_rename(struct vol_pool *p, const char *name, const char *new_name);

/* O(1).  Crash-consistent: contains every write completed before the call. */
int vol_snap_create(struct vol_pool *p, const char *vol, const char *snap);
/* Sorted by epoch (age); *out freed by the caller. */
int vol_snap_list(struct vol_pool *p, const char *vol,
		  struct vol_snap_info **out, size_t *n);
/* -EBUSY when clones depend on it (named in the message) or a view of it
 * is open.  Its exclusive entries are freed later, by vol_gc(). */
int vol_snap_delete(struct vol_pool *p, const char *vol, const char *snap);
/* The head becomes the snapshot's content and size; later snapshots stay.
 * O(entries of the volume). */
int vol_rollback(struct vol_pool *p, const char *vol, const char *snap);
/* A writable volume whose base is vol@snap.  O(1). */
int vol_clone(struct vol_pool *p, const char *vol, const char *snap,
	      const char *clone);
/* Copy the origin's chunks into the clone and cut the link (then the origin
 * snapshot may be deleted).  O(chunks of the origin). */
int vol_flatten(struct vol_pool *p, const char *name);

struct vol_range {
	uint64_t off, len;                 /* bytes */
};
/* Ranges (chunk-aligned, merged, sorted) whose content differs between
 * from ("vol@snap") and to ("vol@snap" or "vol" = head) of the same volume;
 * from == NULL means "since creation".  *out freed by the caller. */
int vol_diff(struct vol_pool *p, const char *from, const char *to,
	     struct vol_range **out, size_t *n);

struct vol_du {
	uint64_t logical;       /* size */
	uint64_t provisioned;   /* chunks with data visible in the view */
	uint64_t used;          /* objects held by this volume's own entries
	                         * (head + its snapshots) / by the snapshot */
	uint64_t exclusive;     /* what deleting the volume/snapshot frees */
	uint64_t stored;        /* used × (k+m)/k */
	uint64_t map_entries;   /* the volume's map entries (metadata cost) */
};
/* spec: "vol" (the volume with its snapshots) or "vol@snap". */
int vol_du(struct vol_pool *p, const char *spec, struct vol_du *out);

/* Free map entries no live view can see any more (after snapshot deletes),
 * at most `budget` entries examined.  Returns 1 if work remains, 0 if done,
 * or -errno. */
int vol_gc(struct vol_pool *p, uint64_t budget);

/* Verify every invariant of the metadata (each refcount equals the entries
 * that reference it, no entry references a missing object, no object is
 * both live and in gc, clones' origins exist).  -EUCLEAN with the first
 * violation in the message. */
int vol_check(struct vol_pool *p);

/* Write a canonical text dump of the metadata (volumes, snapshots, map,
 * objects; no timestamps) to f — for tests and debugging. */
int vol_dump(struct vol_pool *p, FILE *f);

/* ------------------------------------------------------------- views -- */

/* spec "vol" = the head (read-write), "vol@snap" = a snapshot (read-only).
 * -ENOENT unknown.  *out owned by the caller (vol_view_close). */
int vol_view_open(struct vol_pool *p, const char *spec, struct vol_view **out);
/* No I/O may be in flight on the view. */
void vol_view_close(struct vol_view *v);
uint64_t vol_view_size(const struct vol_view *v);   /* current size */
uint64_t vol_view_chunk_size(const struct vol_view *v);
bool vol_view_readonly(const struct vol_view *v);

struct vol_io;
typedef void vol_io_cb(struct vol_io *io, int res);

#define VOL_IO_FUA 1u          /* write/zero/trim: durable when cb runs */

struct vol_io {
	struct loop *loop;             /* submitter's loop; cb runs there */
	vol_io_cb *cb;                 /* res: 0 or -errno */
	uint64_t off, len;
	void *buf;                     /* read: filled; write: source */
	uint32_t flags;                /* VOL_IO_* */
	void *priv;                    /* caller's */
	/* private */
	struct vol_view *view;
	struct loop_op op;
	struct meta_flush mf;
	struct objstore_io fio;
	void *subs;
	unsigned pending;
	int err;
	int kind;
};

/* Read [off, off+len) (holes read as zeros). */
void vol_read(struct vol_view *v, struct vol_io *io);
/* Bring [off, off+len) into the store's fastest tier (NBD_CMD_CACHE, warm
 * up): one objstore_prefetch per chunk that has data, holes skipped; buf
 * unused.  cb when every chunk is there (0) or one could not be fetched. */
void vol_prefetch(struct vol_view *v, struct vol_io *io);
/* Write buf; -EROFS on a snapshot, -EINVAL past the end. */
void vol_write(struct vol_view *v, struct vol_io *io);
/* Zero the range: whole chunks become holes, partial ones are zeroed. */
void vol_zero(struct vol_view *v, struct vol_io *io);
/* Same as vol_zero (a trimmed range reads as zeros). */
void vol_trim(struct vol_view *v, struct vol_io *io);
/* Everything completed before the call becomes durable: objstore flush,
 * then one metadata commit shared with every other flush in the batch. */
void vol_flush(struct vol_view *v, struct vol_io *io);

#define VOL_EXT_HOLE 1u
struct vol_extent {
	uint64_t len;
	uint32_t flags;                /* VOL_EXT_HOLE or 0 (data) */
};
/* Describe [off, off+len) at chunk granularity, merged; at most max
 * extents (the last one may end before off+len).  Synchronous (metadata
 * only).  Returns the number of extents or -errno. */
int vol_block_status(struct vol_view *v, uint64_t off, uint64_t len,
		     struct vol_extent *ext, size_t max);

#endif /* NBDSRV_VOL_H */
