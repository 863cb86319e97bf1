/*
 * ssd.h — private to cache/ssd*.c: the ssdcache's structures, shared by the
 * object store (ssd.c) and its pool flusher (ssdflush.c).
 */
#ifndef NBDSRV_CACHE_SSD_H
#define NBDSRV_CACHE_SSD_H

#include "cache/cache.h"
#include "codec/codec.h"
#include "zdb/zdb.h"

#include <sys/uio.h>

#define SSD_MAGIC        "NBDSRVC\x01"
#define SSD_FORMAT       1u
#define SSD_HDR_SIZE     4096u
#define SSD_BLK          SSDCACHE_BLOCK
#define SSD_F_DROPPED    1u
#define SSD_F_DIRTY      2u             /* not yet in the pool */
#define SSD_F_HOLE       4u             /* pool version is all zeros */
#define SSD_F_REPAIR     8u             /* pool version is degraded (fewer
                                         * than k+m shards): rewrite it */
#define SSD_INTENT       1u             /* shards being written */
#define SSD_GARBAGE      2u             /* shards to delete */
#define SSD_SKEY_LEN     32u
#define SSD_NOWHERE      0xffffu        /* placement of a shard not stored */
#define SSD_BIND_VERSION 1u
#define SSD_NOSLOT       UINT32_MAX     /* record / entry without a slot */
#define SSD_FETCH_MAX    16u            /* pool fetches in flight */
#define SSD_FETCH_PAR    4u             /* their decode contexts (>= the
                                         * workq's threads) */
#define SSD_FLUSH_PAR    16u            /* default flush_parallel: objects
                                         * between pick and put done */
#define SSD_FLUSH_IDLE_NS (1000ull * 1000000)  /* default flush_idle */
#define SSD_FLUSH_AGE_NS (30000ull * 1000000)  /* default flush_max_age */
#define SSD_BUF_IDLE_NS  (1000ull * 1000000) /* idle fetch / flush buffers
                                         * are freed after this long unused */
#define SSD_ENC_CTX      4u             /* flusher codec contexts (encodes
                                         * queued or running; 2 workers) */
enum { SSD_Q_NONE, SSD_Q_SMALL, SSD_Q_MAIN };

struct ssd_hdr {
	char magic[8];
	uint32_t format;
	uint32_t slot_size;
	uint64_t nslots;
	uint8_t pool_id[META_POOL_ID_LEN];
	uint8_t instance[16];
	uint8_t pad[SSD_HDR_SIZE - 8 - 4 - 4 - 8 - 16 - 16 - 8];
	uint64_t csum;                  /* FNV-1a of everything before */
};
_Static_assert(sizeof(struct ssd_hdr) == SSD_HDR_SIZE, "header is one block");

/* key 0 of the index: which cache file the records describe */
struct ssd_bind {
	uint32_t version;
	uint32_t slot_size;
	uint64_t nslots;
	uint8_t instance[16];
	uint32_t clean;                 /* 1: closed cleanly (not compared) */
	uint32_t pad;
};

/* an object's committed version in the pool */
struct ssd_prec {
	uint64_t version;               /* 0 = none */
	uint16_t place[CODEC_MAX_SHARDS]; /* backend of each shard */
	uint16_t meta_len;              /* packed struct codec_meta */
	uint8_t meta[CODEC_META_MAX];
};

/* index record header; the validity bitmap follows */
struct ssd_rec {
	uint32_t slot;
	uint32_t flags;                 /* SSD_F_* */
	uint64_t base;
	struct ssd_prec p;
};

/* META_T_INTENTS: version → this */
struct ssd_intent {
	uint32_t state;                 /* SSD_INTENT / SSD_GARBAGE */
	uint32_t n;                     /* shards (k + m) */
	uint64_t obj;
	uint16_t place[CODEC_MAX_SHARDS]; /* GARBAGE: where; INTENT: unknown */
	/* INTENT: the version it replaces (garbage once this one is
	 * committed, even if the crash came before that was staged) */
	uint64_t old_version;
	uint16_t old_place[CODEC_MAX_SHARDS];
};

struct ssd_req;

struct ssd_ent {
	struct ssd_ent *hnext;          /* hash chain */
	struct ssd_ent *dnext;          /* index-dirty list */
	struct ssd_ent *bent;           /* base entry (holds a dependent ref) */
	uint64_t obj, base;
	uint32_t slot;
	uint32_t deps;                  /* live entries whose bent is this */
	uint32_t odeps;                 /* entries whose obent is this */
	struct ssd_ent *obent;          /* former base, held until a record
	                                 * without it is staged (ver >= obent_ver) */
	uint64_t obent_ver;
	uint32_t pins;                  /* ops in flight that read/write it */
	bool dropped, on_dirty, rmw;
	bool fill_wait;                 /* a write waits for a fill through
	                                 * this entry (ssd.c, "Fills in flight
	                                 * through a base") */
	uint64_t ver, staged_ver;       /* record versions: changed / staged */
	/* pool state */
	struct ssd_prec prec;           /* committed (or being staged) version */
	uint64_t dirty_gen, pool_gen;   /* last write's gen / gen in the pool */
	uint64_t first_dirty;           /* gen when it last became pool-dirty */
	/* write-back delay (ssdflush.c, "When an object is flushed"): this
	 * dirty period = since it became pool-dirty or was last picked */
	uint64_t wb_start_ns;           /* its first write (0: none yet) */
	uint64_t wb_last_ns;            /* its last write */
	uint32_t wb_nblk;               /* blocks written (bits of wmap) */
	bool wb_due;                    /* flush without delay (restart) */
	bool flushing, on_pdirty, hole;
	bool dirty_tok;                 /* holds one of dirty_max tokens */
	bool repair, on_repair;         /* prec is degraded / on s->repair */
	struct ssd_ent *pnext;          /* pool-dirty list */
	struct ssd_ent *rnext;          /* repair list */
	struct ssd_req *wait_head, *wait_tail; /* writes waiting for rmw */
	struct ssd_sub *vreads;         /* preads of other objects' reads
	                                 * through this entry (ssd.c, "Reads in
	                                 * flight through a base") */
	struct ssd_req *gates;          /* writes to it waiting for its
	                                 * dependents (ssd.c, "Writer fairness") */
	/* miss path and eviction */
	bool from_pool;                 /* blocks not valid come from the
	                                 * pool version (no base link) */
	bool fetching;                  /* a pool fetch is in flight */
	struct ssd_req *fwait;          /* ops waiting for that fetch */
	uint8_t q, freq;                /* S3-FIFO queue, 2-bit frequency */
	struct ssd_ent *qprev, *qnext;
	uint32_t writing;               /* writes in their data phase */
	bool cowing;                    /* blocks of its base being copied in */
	bool del_staged;                /* drop() staged its deletion */
	bool dcommit;                   /* a write waits for the commit of its
	                                 * detached dependents' records */
	uint64_t last_end;              /* end of the last read (sequential
	                                 * continuations are not re-accesses) */
	uint64_t valid[];               /* one bit per block, then (pool
	                                 * mode) wmap: one bit per block
	                                 * written in this dirty period */
};

/* e's wmap (bm_words after its valid bits) */
#define SSD_WMAP(s, e) ((e)->valid + (s)->bm_words)

struct ssd_del {
	uint64_t obj;
	uint32_t slot;
	struct ssd_prec prec;           /* its pool version becomes garbage */
	bool lookup;                    /* not in memory: read its record */
	bool staged;                    /* drop() staged it already */
};

struct ssd_fj;
struct ssd_gc;
struct ssd_scrub;

struct ssd {
	struct objstore base;
	int fd;
	uint32_t slot_size, nblk, bm_words, bm_bytes;
	uint64_t nslots;
	struct meta *meta;

	pthread_mutex_t lock;           /* everything below */
	struct ssd_ent **tab;
	size_t nbuckets, nents;
	uint32_t *free_slots;           /* stack */
	uint64_t nfree;
	struct ssd_ent *dirty;          /* index records to stage */
	struct ssd_del *dels;           /* deletions to stage (cache thread) */
	size_t ndels, cap_dels;
	bool del_posted;
	struct ssdcache_stats st;

	/* the cache's own thread */
	pthread_t thread;
	bool thread_started;
	struct loop loop;
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	int start_res;
	bool started;
	struct loop_msg del_msg, stop_msg;

	struct ssd_bind bind;           /* key 0 of the index */
	bool opened;                    /* ssdcache_open succeeded */

	/* pool mode (all on the cache thread unless noted) */
	bool pool_mode, writethrough;
	uint8_t pool_id[META_POOL_ID_LEN];
	uint8_t skey[SSD_SKEY_LEN];     /* shard key hash key */
	struct codec *codec;
	unsigned k, m;
	struct zdb_pool_cfg *pool_cfg;  /* copy, wiped at close */
	struct zdb_pool *pool;
	struct workq wq;
	bool wq_started;
	struct codec_ctx **ctxs;        /* nctx, one per encode in flight */
	bool *ctx_busy;
	unsigned nctx;
	struct ssd_fj *encq, *encq_tail; /* read, waiting for a context */
	unsigned flush_par, nflushing;  /* nflushing: jobs before put done */
	struct ssd_fj *recq;            /* puts done, records not yet staged */
	uint64_t flush_idle_ns, flush_age_ns, flush_bg; /* write-back delay */
	bool rec_busy;                  /* a record group is being committed */
	unsigned nrec;                  /* jobs past their put, not ended */
	struct loop_timer ftimer;
	bool stopping;
	unsigned ngc;                   /* GC deletions in flight */
	uint64_t retry_at, backoff_ns;  /* after a failed flush */
	uint64_t *failed;               /* versions whose put failed: swept
	                                 * from every backend once the pool
	                                 * works again (late writes land) */
	size_t nfailed;
	uint64_t repair_at, repair_backoff_ns; /* next repair attempt */
	/* under lock */
	uint64_t wgen;                  /* write completions, ever */
	struct ssd_ent *pdirty;         /* entries not yet in the pool,
	                                 * newest first */
	uint64_t wb_next_due;           /* no delayed entry is due before */
	bool wb_kick;                   /* an entry became complete / due */
	struct ssd_ent *repair;         /* entries whose version is degraded */
	uint64_t nrepair;               /* how many (under lock) */
	/* scrub (ssdscrub.c) */
	struct ssd_scrub *scrub;        /* cache thread: the one running */
	bool scrub_posted;              /* under lock: a start is posted */
	bool scrub_deep;                /* under lock: that start's mode */
	bool scrub_again;               /* under lock: a backend was emptied
	                                 * during the scrub: run once more */
	uint64_t scrub_rate;            /* under lock: that start's rate */
	uint8_t scrub_rewait;           /* cache thread: the last scrub left
	                                 * versions waiting for k+m backends up:
	                                 * 1 shallow, 2 deep scrub when they are */
	struct loop_msg scrub_msg;
	struct zdb_refusal *refusals;   /* under lock: the pool's per-backend
	                                 * refusals as of the last tick (one
	                                 * per backend; ssdflush_refusals) */
	unsigned nrefusals;
	struct ssd_req *wt_wait;        /* writethrough flushes waiting */
	int wt_fail;                    /* -errno: fail writethrough flushes
	                                 * waiting (and new ones) at once
	                                 * (ssdcache_fail_flushes; cache
	                                 * thread, under lock) */
	struct loop_msg wt_fail_msg;
	uint64_t close_wait_ns;         /* the close waits this long for pool
	                                 * flushes in flight, then cancels
	                                 * them (0: the default, 60 s; atomic) */
	bool kick_posted;
	struct loop_msg kick_msg;
	bool fault_wrap;
	uint64_t dirty_max, tokens;     /* backpressure: dirty objects */
	struct ssd_req *bp_head, *bp_tail; /* writes waiting for a token */
	uint64_t wseq;                  /* writes submitted (ssd_req.seq) */
	uint32_t ngates;                /* writes on some entry's gates */
	struct ssd_req *gw_head;        /* writes queued behind a gate (not
	                                 * sw_head: they wait for no slot) */
	/* eviction (S3-FIFO) and the miss path; under lock unless noted */
	struct ssd_ent *qh[3], *qt[3];
	uint64_t qn[3];
	uint64_t *ghost_id, *ghost_seq; /* direct-mapped ghost filter */
	uint64_t ghost_mask, ghost_now;
	uint64_t low, high;             /* free-slot watermarks */
	struct ssd_req *sw_head;        /* writes waiting for a free slot */
	struct ssd_fetch *fsw_head;     /* fetches waiting for a slot (cache
	                                 * thread) */
	struct ssd_fetch *fq_head, *fq_tail; /* fetches posted / waiting for a
	                                 * codec context */
	bool fq_posted;
	struct loop_msg fq_msg;
	bool evicting;                  /* a batch waits for its commit */
	bool ev_failed;                 /* its commit failed: retry */
	unsigned nlocal;                /* cache thread: local flushes (a sync's
	                                 * fdatasync) in flight on s->loop */
	struct meta_flush ev_mf;        /* cache thread */
	uint32_t *ev_slots;             /* cache thread: that batch's slots */
	size_t ev_n;
	unsigned nfetching;             /* cache thread: fetches started */
	uint8_t *fbuf[SSD_FETCH_MAX];   /* cache thread: idle fetch buffers */
	unsigned nfbuf;
	uint64_t fidle_ns;              /* cache thread: when nfetching became 0 */
	uint8_t **jplain, **jshard;     /* cache thread: idle flush-job buffers
	                                 * (plaintext, shards), flush_par each */
	unsigned njplain, njshard;
	uint64_t jidle_ns;              /* cache thread: when nflushing became 0 */
	struct codec_ctx *fctx[SSD_FETCH_PAR]; /* decode contexts (workers) */
	bool fctx_busy[SSD_FETCH_PAR];  /* under lock */
	bool discard_dirty;
};

/* one file I/O of a request (resubmitted on short transfers) */
struct ssd_sub {
	struct loop_op op;
	struct ssd_req *req;
	bool write;
	uint64_t foff;
	uint8_t *buf;
	struct iovec iov[3];
	unsigned niov;
	uint64_t done, len;
	/* a read of another object through this slot (via), blocks
	 * [vb0, vb1): on via->vreads until the read's preads are done */
	struct ssd_ent *via;
	uint64_t vb0, vb1;
	struct ssd_sub *vnext, **vpprev;
};

enum ssd_kind { SSD_READ, SSD_WRITE, SSD_ZERO, SSD_FLUSH, SSD_PREFETCH };

struct ssd_req {
	struct ssd *s;
	struct objstore_io *io;
	enum ssd_kind kind;
	int err;
	unsigned pending;
	struct ssd_req *wnext;          /* waiting for an rmw */
	struct loop_msg msg;            /* resubmit on io->loop */
	/* write / zero */
	struct ssd_ent *ent;
	uint64_t b0, b1;                /* block range [b0, b1) */
	uint8_t *bounce;                /* aligned image of [b0, b1) or NULL */
	bool need_rmw;
	int phase;
	/* pins taken (read sources, write's ent and its fill sources) */
	struct ssd_ent **pinned;
	unsigned npinned, cap_pinned;
	/* flush: snapshot of records */
	uint8_t *recs;                  /* n × (8 + 8 + rec_len) */
	size_t nrecs;
	/* extra changes staged in the same section as the records */
	void (*extra)(struct ssd *s, struct meta_txn *t, void *arg);
	void *extra_arg;
	uint64_t wt_gen;                /* writethrough: wait for this gen */
	/* miss path */
	unsigned passes;                /* resolutions done (1 = first) */
	int fetch_res;                  /* result of the fetch waited for */
	bool served;                    /* a read the fetch's worker copied
	                                 * from the plaintext (ssd_fetch_serve) */
	unsigned nsub;                  /* read: subs in use */
	bool vread;                     /* read: some subs are on vreads */
	bool stale;                     /* read: a write landed in place on
	                                 * blocks it reads through a base */
	void (*resume)(struct ssd_req *r); /* after a fetch / a free slot */
	/* write: submission order; the entry whose gates list holds it */
	uint64_t seq;
	struct ssd_ent *gate;
	struct ssd_req *gnext;
	struct ssd_sub subs[];
};

/* Test hook, NULL in production: called on the reader's loop after a read
 * resolved its blocks and before it submits its preads; returning true
 * holds the read, which the hook's owner submits later (on that loop) with
 * ssd_read_submit.  Global: set it only while one cache is open. */
extern bool (*ssd_read_hook)(struct ssd_req *r);
/* Test hook, NULL in production: as ssd_read_hook, for a write's
 * read-modify-write: called after the write resolved its partial edge
 * blocks and before it preads them; a held write is submitted later with
 * ssd_read_submit (its loop). */
extern bool (*ssd_rmw_hook)(struct ssd_req *r);
/* Test hook, NULL in production: called on the writer's thread, the
 * mutex NOT held, before a base write's detach copies block blk of a
 * dependent d from src's slot (src NULL: zeros); it may block, and other
 * ops may run meanwhile (the copy is synchronous). */
extern void (*ssd_copy_hook)(struct ssd_req *r, struct ssd_ent *d,
			     struct ssd_ent *src, uint64_t blk);
/* Submit the preads of a read (or an rmw) a hook held (r's loop). */
void ssd_read_submit(struct ssd_req *r);

/* ssd.c, for the flusher */
/* lock held: obj's entry or NULL */
struct ssd_ent *ssd_find_locked(struct ssd *s, uint64_t obj);
size_t ssd_rec_len(const struct ssd *s);
void ssd_be64put(uint8_t *p, uint64_t v);
uint64_t ssd_be64get(const uint8_t *p);
/* Flush as objstore flush, staging extra(t, arg) in the records' section,
 * which always includes force's current record (or it was staged before);
 * io->loop must be the calling thread's. */
void ssd_flush_ext(struct ssd *s, struct objstore_io *io,
		   void (*extra)(struct ssd *, struct meta_txn *, void *), void *arg,
		   struct ssd_ent *force);
/* ssd_flush_ext forcing each of force[0..nforce) (the array must live
 * until io completes). */
void ssd_flush_ext_many(struct ssd *s, struct objstore_io *io,
			void (*extra)(struct ssd *, struct meta_txn *, void *),
			void *arg, struct ssd_ent *const *force, size_t nforce);
/* Read as objstore read (any loop). */
void ssd_read_obj(struct ssd *s, struct objstore_io *io);
/* lock held: unpin e, free it if nothing needs it */
void ssd_unpin(struct ssd *s, struct ssd_ent *e);
/* lock held: writethrough waiters whose writes are all in the pool
 * complete (on their loops) */
void ssd_wt_wake(struct ssd *s);
/* lock held: e's index record changed (staged at the next flush) */
void ssd_mark_dirty(struct ssd *s, struct ssd_ent *e);
/* lock held: e no longer needs its dirty token; grant waiting writes */
void ssd_tok_release(struct ssd *s, struct ssd_ent *e);
/* lock held: e got a write completion (pool-dirty bookkeeping) */
void ssd_pool_dirty(struct ssd *s, struct ssd_ent *e);
/* lock held: e got a write of blocks [b0, b1) (write-back delay
 * bookkeeping, after ssd_pool_dirty) */
void ssd_wb_written(struct ssd *s, struct ssd_ent *e, uint64_t b0, uint64_t b1);
/* lock held: the pick's view of the delay for status */
void ssdflush_wb_stats(struct ssd *s, struct ssdcache_stats *st);
/* lock held: set e->repair to on and put e on / take it off the repair
 * list (a dropped entry is never on it) */
void ssd_repair_set(struct ssd *s, struct ssd_ent *e, bool on);

/* lock held: the cache thread should evict (below the low watermark) */
void ssd_evict_kick(struct ssd *s);
/* cache thread: evict toward the high watermark, run queued fetches */
void ssd_evict_run(struct ssd *s);
/* lock held: the writes waiting for a slot / a flush / a copy retry */
void ssd_sw_wake(struct ssd *s);
/* cache thread tick: retry a failed eviction commit, evict, fetch */
void ssd_evict_tick(struct ssd *s);
/* cache thread: start the fetches queued by reactors */
void ssd_fetch_run(struct ssd *s);

/* lock held: obj's entry, loaded from its index record if evicted, or
 * NULL (none, or dropped); may drop and retake the lock; outside any meta
 * section of the calling thread or inside one. */
struct ssd_ent *ssd_find_load(struct ssd *s, uint64_t obj);

/* ssdscrub.c */
/* Cache thread: a backend of the cache's pool was emptied (its canary
 * vanished): start a shallow scrub, or run one more after the current. */
void ssd_scrub_emptied(struct ssd *s, const char *backend);
/* Cache thread tick: resume a scrub paused for the repair backlog or the
 * rate limit; scrub again once versions left waiting can be repaired. */
void ssd_scrub_tick(struct ssd *s);
/* Cache thread, pool closed: free what a stopped scrub holds. */
void ssd_scrub_free(struct ssd *s);

/* ssdflush.c */
/* Cache thread: whether k+m backends of the pool are not DOWN (a repair
 * can place every shard). */
bool ssdflush_pool_whole(struct ssd *s);
/* Start the pool side on the cache thread: open the pool, recover intents,
 * arm the flusher.  Returns 0 or -errno. */
int ssdflush_start(struct ssd *s);
/* Stop flushing, wait for flushes and GC in flight, close the pool
 * (cache thread). */
void ssdflush_stop(struct ssd *s);
/* Any thread, lock held: ask the cache thread to look for work. */
void ssdflush_kick(struct ssd *s);
/* Cache thread: entries' pool versions to delete once the commit that
 * staged their GARBAGE intents is durable. */
void ssdflush_gc(struct ssd *s, const struct ssd_prec *v, size_t n);
/* The shard key of (version, idx). */
void ssdflush_key(const struct ssd *s, uint64_t version, unsigned idx,
		  uint8_t out[SSD_SKEY_LEN]);

#endif /* NBDSRV_CACHE_SSD_H */
