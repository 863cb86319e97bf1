/*
 * check_vol_store.c — the model test of vol/ (vmodel.c) through the real
 * object store of the product: the SSD cache, local only ("ssd") and in
 * front of a pool of `dir` backends ("pool": 3 backends, k=2 m=1, 64 KiB
 * chunks; "evict": the same with a cache of fewer slots than objects, so
 * eviction and the miss path run under every op), plus the backend scan
 * and its negative test ("scan").
 *
 * Wiring, as the daemon's (nbdsrv/volumes.c): the meta store (its commit
 * hook forwarded to vol while the vol pool is open), the cache on it, vol
 * over both.  vol sees the cache through a counting proxy (struct px): a
 * drop that arrives after the cache is closed is counted as lost and fails
 * the test (a lost drop is a leaked object).  The proxy also sends every
 * data op to a memstore (the reference: eager copy of the base at
 * creation, as cache.h's contract says) and compares every read byte by
 * byte, so a divergence is caught at the object that diverges, not at the
 * volume read that happens to hit it later.
 *
 * Clean close (every reopen step, and the end):  wait until the cache is
 * quiet — flush the cache and commit, repeatedly, until nothing is
 * pool-dirty, META_T_INTENTS is empty (no flush and no shard deletion in
 * flight: each holds an intent) and the counters stop moving — then close
 * the cache and the vol pool.
 *
 * The backend scan (pool mode, after a clean close), on the committed meta
 * store and the backend folders:
 *   - every index record's committed pool version names k+m shards; each
 *     must exist, as file "k" + hex(ssdflush_key(version, i)) on backend
 *     place[i], and parse as shard i of (object, version);
 *   - no other file on any backend (the canary aside): an extra one is a
 *     leaked shard (a version nothing references);
 *   - no record left in META_T_INTENTS (no INTENT, no GARBAGE);
 *   - the records that are not dropped are exactly vol's live objects
 *     (META_T_OBJS), a dropped record is still some record's base;
 *   - every record that is not pool-dirty decodes from its shards to the
 *     bytes the cache file holds for it (its valid blocks, the rest along
 *     its base chain, zeros past the chain; blocks that resolve to a pool
 *     version — an evicted object — are not compared).
 * At the end of the model test everything is deleted, so the scan must
 * find empty backends and an index holding only its binding record.
 *
 * Crash step (pool mode): after a clean close and a scan, a forked child
 * reopens the store and does work that leaves every view of the model
 * unchanged — rewrites of model heads with their own bytes, zeroes of
 * model holes, snapshots of model volumes ("z*"), scratch volumes and
 * clones ("zv*", "zc*") written with random data — with random flushes and
 * GC, and is SIGKILLed at a random time.  The parent reopens (intent
 * recovery, re-flush after an unclean stop), deletes the scratch volumes
 * and snapshots, checks every view against the model, and scans again;
 * the reference store starts over from what the cache holds for vol's
 * objects then.
 * OFF by default (NBDSRV_VOL_CRASH=1 turns it on; ctest's check_vol_crash
 * runs so): an object or shard a crash leaks fails the test (a drop is
 * durable with vol's DROPPED mark, also for an object kept as a base).
 * NBDSRV_VOL_CRASH=2 only counts leaks as a note, to look past them for
 * other crash bugs.
 *
 * The "scan" test shows the scan fails on a broken state: a deleted shard
 * file (lost reference), a shard restored after its GC (leak: the
 * equivalent of a skipped delete), a corrupted shard (does not decode), a
 * leftover GARBAGE intent.
 *
 * "regress" holds minimal repros of what the model test found.
 *
 * Sizes.  NBDSRV_VOL_OPS=<n> sets the ops of the model runs (default 6000;
 * a sanitizer build runs a third of them).
 * NBDSRV_VOL_SLOTS=<n> sets the cache's slots (default 1024: every object
 * fits; "evict": 32, fewer than the model's objects).  NBDSRV_VOL_REF=0
 * drops the reference store.  NBDSRV_VOL_WT=0|1 forces writeback or
 * writethrough (default: a bit of the seed).  NBDSRV_VOL_TRACE=1 prints
 * every op, =2 also every object store op.  Seeds: NBDSRV_SEED=<n>
 * replays (the same ops over memstore, "ssd", "pool" and "evict"); every
 * run prints its seed.
 * Usage: check_vol_store [ssd|pool|evict|scan|regress] (no argument: all).
 */
#include "vmodel.h"

#include "cache/ssd.h"
#include "codec/codec.h"
#include "zdb/zdb.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define K       2u
#define M       1u
#define NBE     3u
#define NOWHERE 0xffffu                 /* cache/ssdflush.c's SSD_NOWHERE */

#if defined(__SANITIZE_ADDRESS__)
#define VS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VS_SANITIZED 1
#endif
#endif
#ifndef VS_SANITIZED
#define VS_SANITIZED 0
#endif

static const uint8_t POOL_ID[16] = "vol-store-test-1";
static const uint8_t SEED_BYTE = 0x5a;  /* shard_key_seed = 32 × this */

static char basedir[96];

/* ------------------------------------------------- the forwarding store -- */

struct px {
	struct objstore base;
	pthread_mutex_t lock;
	struct objstore *target;        /* the cache, or NULL */
	struct objstore *ref;           /* memstore: the reference, or NULL */
	uint64_t drops;                 /* forwarded */
	uint64_t lost;                  /* after the detach */
	uint64_t compared;              /* reads compared with ref */
};

static bool px_trace;                   /* NBDSRV_VOL_TRACE=2 */

/* One data op sent to both the cache and the reference. */
struct px_op {
	struct objstore_io a, b;        /* cache, reference */
	struct objstore_io *orig;
	struct px *x;
	const char *what;
	unsigned pending;
	int ra, rb;
};

static struct objstore *px_target(struct objstore *s, struct objstore **ref)
{
	struct px *x = (struct px *)s;
	struct objstore *t;

	pthread_mutex_lock(&x->lock);
	t = x->target;
	if (ref)
		*ref = x->ref;
	pthread_mutex_unlock(&x->lock);
	return t;
}

static void px_op_done(struct objstore_io *io, int res)
{
	struct px_op *o = io->priv;
	struct objstore_io *orig = o->orig;
	int ret;

	if (io == &o->a)
		o->ra = res;
	else
		o->rb = res;
	if (--o->pending)
		return;
	if (o->ra != o->rb)
		ck_abort_msg("%s of object %llu (base %llu) %llu+%llu: the cache "
			     "says %d, the reference %d", o->what,
			     (unsigned long long)orig->obj,
			     (unsigned long long)orig->base,
			     (unsigned long long)orig->off,
			     (unsigned long long)orig->len, o->ra, o->rb);
	if (o->b.buf != orig->buf && o->ra == 0) {
		const uint8_t *c = orig->buf, *r = o->b.buf;

		o->x->compared++;
		for (uint64_t i = 0; i < orig->len; i++)
			if (c[i] != r[i])
				ck_abort_msg("read of object %llu (base %llu) %llu+%llu: "
					     "byte %llu of the object is 0x%02x in the "
					     "cache, 0x%02x in the reference store "
					     "(memstore)", (unsigned long long)orig->obj,
					     (unsigned long long)orig->base,
					     (unsigned long long)orig->off,
					     (unsigned long long)orig->len,
					     (unsigned long long)(orig->off + i), c[i],
					     r[i]);
	}
	ret = o->ra;
	if (o->b.buf != orig->buf)
		free(o->b.buf);
	free(o);
	orig->cb(orig, ret);
}

typedef void px_fn(struct objstore *s, struct objstore_io *io);

/* Send io to the cache, and to the reference when there is one (a read
 * there into a buffer of its own, compared at completion). */
static void px_both(struct objstore *s, struct objstore_io *io, px_fn *fn,
		    const char *what, bool read)
{
	struct objstore *ref, *t = px_target(s, &ref);
	struct px_op *o;

	if (!t) {
		objstore_complete(io, -EIO);
		return;
	}
	if (px_trace)
		printf("  store: %s object %llu base %llu %llu+%llu\n", what,
		       (unsigned long long)io->obj, (unsigned long long)io->base,
		       (unsigned long long)io->off, (unsigned long long)io->len);
	if (!ref) {
		fn(t, io);
		return;
	}
	o = calloc(1, sizeof(*o));
	ck_assert_ptr_nonnull(o);
	o->orig = io;
	o->x = (struct px *)s;
	o->what = what;
	o->pending = 2;
	o->a = (struct objstore_io){ .loop = io->loop, .cb = px_op_done,
		.obj = io->obj, .base = io->base, .off = io->off, .len = io->len,
		.buf = io->buf, .priv = o };
	o->b = o->a;
	if (read) {
		o->b.buf = malloc(io->len ? io->len : 1);
		ck_assert_ptr_nonnull(o->b.buf);
	}
	fn(t, &o->a);
	fn(ref, &o->b);
}

static void px_read(struct objstore *s, struct objstore_io *io)
{
	px_both(s, io, objstore_read, "read", true);
}

static void px_write(struct objstore *s, struct objstore_io *io)
{
	px_both(s, io, objstore_write, "write", false);
}

static void px_zero(struct objstore *s, struct objstore_io *io)
{
	px_both(s, io, objstore_zero, "zero", false);
}

static void px_flush(struct objstore *s, struct objstore_io *io)
{
	struct objstore *t = px_target(s, NULL);

	if (t)
		objstore_flush(t, io);
	else
		objstore_complete(io, -EIO);
}

static void px_prefetch(struct objstore *s, struct objstore_io *io)
{
	struct objstore *t = px_target(s, NULL);

	if (t)
		objstore_prefetch(t, io);
	else
		objstore_complete(io, -EIO);
}

static void px_drop(struct objstore *s, uint64_t obj)
{
	struct px *x = (struct px *)s;

	pthread_mutex_lock(&x->lock);
	if (px_trace)
		printf("  store: drop object %llu\n", (unsigned long long)obj);
	if (x->target) {
		objstore_drop(x->target, obj);
		if (x->ref)
			objstore_drop(x->ref, obj);
		x->drops++;
	} else {
		x->lost++;
	}
	pthread_mutex_unlock(&x->lock);
}

static const struct objstore_ops px_ops = {
	.name = "proxy", .read = px_read, .write = px_write, .zero = px_zero,
	.flush = px_flush, .drop = px_drop, .prefetch = px_prefetch,
};

static void px_attach(struct px *x, struct objstore *t)
{
	pthread_mutex_lock(&x->lock);
	x->target = t;
	pthread_mutex_unlock(&x->lock);
}

static void px_detach(struct px *x)
{
	pthread_mutex_lock(&x->lock);
	x->target = NULL;
	pthread_mutex_unlock(&x->lock);
}

/* ------------------------------------------------------ the environment -- */

struct vs {
	struct vm_env e;                /* e.p: the open vol pool */
	bool pool;                      /* a pool behind the cache */
	bool writethrough;
	uint64_t nslots;
	char dir[160], meta_dir[192], cache_path[192];
	struct px px;
	struct meta *meta;
	pthread_mutex_t hook_lock;
	struct vol_pool *hook_pool;     /* the hook's target while open */
	struct objstore *cache;
	struct codec *codec;
	struct codec_ctx *cctx;
	struct zdb_pool_cfg *pcfg;
	struct ssd *keyer;              /* pool id + shard key seed, for
	                                 * ssdflush_key() */
	unsigned scans, crashes, reopens;
	bool leaks_ok;                  /* objects leaked by a crash are not
	                                 * counted (VOLCHECK 2) */
	uint64_t max_slots_used, drops;
	uint64_t evictions, misses;     /* summed over the cache's sessions */
};

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static void vs_init(struct vs *x, bool pool, const char *name)
{
	struct codec_params cp = { .k = K, .m = M, .max_chunk = CS };
	uint8_t raw[CODEC_KEY_SIZE];
	struct codec_key *key;
	char err[160];

	memset(x, 0, sizeof(*x));
	x->pool = pool;
	x->nslots = env_u64("NBDSRV_VOL_SLOTS", 1024);
	ck_assert_msg(basedir[0], "cannot create a temporary directory");
	snprintf(x->dir, sizeof(x->dir), "%s/%s", basedir, name);
	ck_assert_int_eq(mkdir(x->dir, 0700), 0);
	snprintf(x->meta_dir, sizeof(x->meta_dir), "%s/meta", x->dir);
	snprintf(x->cache_path, sizeof(x->cache_path), "%s/cache", x->dir);
	ck_assert_int_eq(mkdir(x->meta_dir, 0700), 0);
	x->px.base.ops = &px_ops;
	pthread_mutex_init(&x->px.lock, NULL);
	px_trace = env_u64("NBDSRV_VOL_TRACE", 0) >= 2;
	if (env_u64("NBDSRV_VOL_REF", 1))
		ck_assert_int_eq(memstore_create(false, &x->px.ref), 0);
	pthread_mutex_init(&x->hook_lock, NULL);
	if (!pool)
		return;
	memset(raw, 7, sizeof(raw));
	ck_assert_int_eq(codec_key_from_bytes(raw, &key), 0);
	ck_assert_int_eq(codec_new(&cp, key, &x->codec, err, sizeof(err)), 0);
	codec_key_free(key);
	ck_assert_int_eq(codec_ctx_new(x->codec, &x->cctx), 0);
	x->pcfg = calloc(1, sizeof(*x->pcfg));
	ck_assert_ptr_nonnull(x->pcfg);
	zdb_pool_cfg_defaults(x->pcfg);
	x->pcfg->k = K;
	x->pcfg->m = M;
	x->pcfg->min_shards = K + M;
	x->pcfg->nbackends = NBE;
	for (unsigned i = 0; i < NBE; i++) {
		struct zdb_backend_cfg *b = &x->pcfg->backends[i];

		snprintf(b->name, sizeof(b->name), "d%02u", i);
		snprintf(b->zone, sizeof(b->zone), "z%u", i);
		snprintf(b->address, sizeof(b->address), "%s/be%02u", x->dir, i);
		b->kind = ZDB_KIND_DIR;
		ck_assert_int_eq(mkdir(b->address, 0700), 0);
	}
	/* ssdflush_key() reads only the pool id and the shard key (the
	 * seed as given, see ssdcache_open) */
	x->keyer = calloc(1, sizeof(*x->keyer));
	ck_assert_ptr_nonnull(x->keyer);
	memcpy(x->keyer->pool_id, POOL_ID, sizeof(POOL_ID));
	memset(x->keyer->skey, SEED_BYTE, sizeof(x->keyer->skey));
}

static void vs_fini(struct vs *x)
{
	codec_ctx_free(x->cctx);
	codec_free(x->codec);
	free(x->pcfg);
	free(x->keyer);
	objstore_close(x->px.ref);
	pthread_mutex_destroy(&x->px.lock);
	pthread_mutex_destroy(&x->hook_lock);
}

/* The meta store's commit hook: vol's while its pool is open. */
static void vs_hook(void *arg, uint64_t gen)
{
	struct vs *x = arg;

	pthread_mutex_lock(&x->hook_lock);
	if (x->hook_pool)
		vol_pool_commit_hook(x->hook_pool, gen);
	pthread_mutex_unlock(&x->hook_lock);
}

/* Open as the daemon does (nbdsrv/volumes.c): the meta store, the cache on
 * it, vol over both (through the counting proxy).  Returns 0 or -errno
 * (with a message on stderr); usable in a forked child. */
static int vs_open_r(struct vs *x, bool create)
{
	struct meta_opts mo = { .create = create, .hook = vs_hook, .hook_arg = x };
	struct ssdcache_opts co = {
		.path = x->cache_path, .size = SSD_HDR_SIZE + x->nslots * CS,
		.slot_size = CS, .create = create,
		.pool_cfg = x->pool ? x->pcfg : NULL,
		.codec = x->pool ? x->codec : NULL,
		.writethrough = x->writethrough,
		/* no write-back delay: these tests wait for pool_dirty = 0
		 * often (the delay has its own tests in check_ssdpool) */
		.flush_idle_set = true,
	};
	struct vol_pool_opts o = { .store = &x->px.base, .k = K, .m = M };
	int r;

	memcpy(mo.pool_id, POOL_ID, sizeof(POOL_ID));
	r = meta_open(x->meta_dir, &mo, &x->meta);
	if (r < 0) {
		fprintf(stderr, "meta_open: %s\n", meta_last_error());
		return r;
	}
	co.meta = x->meta;
	memcpy(co.pool_id, POOL_ID, sizeof(POOL_ID));
	memset(co.shard_key_seed, SEED_BYTE, sizeof(co.shard_key_seed));
	r = ssdcache_open(&co, &x->cache);
	if (r < 0) {
		fprintf(stderr, "ssdcache_open: %s\n", strerror(-r));
		goto fail;
	}
	px_attach(&x->px, x->cache);
	o.meta = x->meta;
	r = vol_pool_open(&o, &x->e.p);
	if (r < 0) {
		fprintf(stderr, "vol_pool_open: %s\n", vol_last_error());
		goto fail;
	}
	pthread_mutex_lock(&x->hook_lock);
	x->hook_pool = x->e.p;
	pthread_mutex_unlock(&x->hook_lock);
	return 0;
fail:
	px_detach(&x->px);
	objstore_close(x->cache);
	x->cache = NULL;
	meta_close(x->meta);
	x->meta = NULL;
	return r;
}

static void vs_open(struct vs *x, bool create)
{
	int r = vs_open_r(x, create);

	ck_assert_msg(r == 0, "opening the pool and the cache: %s", strerror(-r));
}

struct sflush {
	struct objstore_io io;
	bool done;
};

static void sflush_cb(struct objstore_io *io, int res)
{
	struct sflush *f = container_of(io, struct sflush, io);

	f->done = true;
	io->res = res;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Run one object store op (fn) on test_loop to completion. */
static int store_sync(struct objstore *st, px_fn *fn, uint64_t obj, void *buf)
{
	struct sflush f = { .io = { .loop = &test_loop, .cb = sflush_cb,
		.obj = obj, .len = buf ? CS : 0, .buf = buf } };

	fn(st, &f.io);
	while (!f.done)
		ck_assert_int_ge(loop_run_once(&test_loop, 1000000000ull), 0);
	return f.io.res;
}

static int cache_flush(struct vs *x)
{
	return store_sync(x->cache, objstore_flush, 0, NULL);
}

/* A new reference store holding what the cache holds now for each of
 * vol's objects (after a crash the old one knows nothing of the child's
 * work), so what follows is compared again. */
static void ref_rebuild(struct vs *x)
{
	struct meta_txn *t;
	uint8_t k[8] = { 0 }, kout[8];
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0, kl;
	uint8_t *buf = malloc(CS);
	struct objstore *ref;

	ck_assert_ptr_nonnull(buf);
	t = meta_rbegin(x->meta);
	ck_assert_ptr_nonnull(t);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		if (meta_seek(t, META_T_OBJS, how, k, 8, kout, 8, &kl, NULL, 0) < 0)
			break;
		memcpy(k, kout, 8);
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			ids = realloc(ids, cap * sizeof(*ids));
			ck_assert_ptr_nonnull(ids);
		}
		ids[n++] = be64(kout);
	}
	meta_end(t);
	ck_assert_int_eq(memstore_create(false, &ref), 0);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(store_sync(x->cache, objstore_read, ids[i], buf), 0);
		ck_assert_int_eq(store_sync(ref, objstore_write, ids[i], buf), 0);
	}
	pthread_mutex_lock(&x->px.lock);
	objstore_close(x->px.ref);
	x->px.ref = ref;
	pthread_mutex_unlock(&x->px.lock);
	free(ids);
	free(buf);
}

/* Flush and commit until the cache is quiet (see the top); asserts it gets
 * there within 120 s. */
static void vs_settle(struct vs *x, const char *when)
{
	struct ssdcache_stats st, prev;
	struct meta_stats ms;
	uint64_t t0 = now_ns();
	int stable = 0, r;

	memset(&prev, 0xff, sizeof(prev));
	for (;;) {
		r = cache_flush(x);
		ck_assert_msg(r == 0, "%s: cache flush: %s", when, strerror(-r));
		ck_assert_int_eq(vol_sync(x->e.p), 0);
		ssdcache_get_stats(x->cache, &st);
		ck_assert_int_eq(meta_get_stats(vol_pool_meta(x->e.p), &ms), 0);
		if (st.slots_used > x->max_slots_used)
			x->max_slots_used = st.slots_used;
		if (!st.pool_dirty && !ms.entries[META_T_INTENTS] &&
		    st.flushed == prev.flushed && st.gc_versions == prev.gc_versions &&
		    st.index_dels == prev.index_dels &&
		    st.index_puts == prev.index_puts)
			stable++;
		else
			stable = 0;
		if (stable >= 2)
			return;
		if (now_ns() - t0 > 120ull * 1000000000) {
			ck_abort_msg("%s: the cache does not settle: %llu pool-dirty, "
				     "%llu intents, %llu flush errors",
				     when, (unsigned long long)st.pool_dirty,
				     (unsigned long long)ms.entries[META_T_INTENTS],
				     (unsigned long long)st.flush_errors);
		}
		prev = st;
		usleep(stable ? 30000 : 10000);
	}
}

/* Settle, then close as the daemon does: vol, the cache, the meta store. */
static void vs_close(struct vs *x, const char *when)
{
	struct ssdcache_stats st;

	vs_settle(x, when);
	ssdcache_get_stats(x->cache, &st);
	x->evictions += st.evictions;
	x->misses += st.misses;
	pthread_mutex_lock(&x->hook_lock);
	x->hook_pool = NULL;
	pthread_mutex_unlock(&x->hook_lock);
	ck_assert_int_eq(vol_pool_close(x->e.p), 0);
	x->e.p = NULL;
	px_detach(&x->px);
	objstore_close(x->cache);
	x->cache = NULL;
	ck_assert_msg(meta_close(x->meta) == 0, "%s: meta_close: %s", when,
		      meta_last_error());
	x->meta = NULL;
	ck_assert_msg(x->px.lost == 0, "%s: %llu drop(s) reached the store after "
		      "the cache was closed (leaked objects)", when,
		      (unsigned long long)x->px.lost);
}

/* ------------------------------------------------------- the backend scan -- */

struct srec {
	uint64_t obj;
	struct ssd_rec r;
	uint64_t valid[(CS / SSD_BLK + 63) / 64];
};

struct sfile {
	char name[256];
	unsigned be;
	bool seen;
};

struct scan {
	struct srec *recs;
	size_t nrecs;
	uint64_t *objs;                 /* vol's live objects */
	size_t nobjs;
	size_t nintents;
	unsigned problems;
};

static void scan_problem(struct scan *sc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void scan_problem(struct scan *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->problems++ < 12) {
		va_start(ap, fmt);
		printf("  scan: ");
		vprintf(fmt, ap);
		printf("\n");
		va_end(ap);
	} else if (sc->problems == 13) {
		printf("  scan: (more)\n");
	}
	fflush(stdout);
}

static void hexname(const uint8_t *key, size_t len, char *out)
{
	static const char hx[] = "0123456789abcdef";

	*out++ = 'k';
	for (size_t i = 0; i < len; i++) {
		*out++ = hx[key[i] >> 4];
		*out++ = hx[key[i] & 15];
	}
	*out = 0;
}

/* Read the committed index, intents and vol's objects from the meta store
 * (closed by the caller beforehand). */
static void scan_meta(struct vs *x, struct scan *sc)
{
	struct meta_opts mo = { .create = false, .commit_delay_ns = UINT64_MAX };
	struct meta *m;
	struct meta_txn *t;
	uint8_t k[8] = { 0 }, kout[8];
	size_t kl, cap = 0, ocap = 0;
	int r;

	memcpy(mo.pool_id, POOL_ID, sizeof(POOL_ID));
	r = meta_open(x->meta_dir, &mo, &m);
	ck_assert_msg(r == 0, "scan: meta_open: %s", meta_last_error());
	t = meta_rbegin(m);
	ck_assert_ptr_nonnull(t);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct srec rec;
		int vl = meta_seek(t, META_T_CACHE_INDEX, how, k, 8, kout, 8, &kl,
				   &rec.r, sizeof(rec.r) + sizeof(rec.valid));

		if (vl == -ENOENT)
			break;
		ck_assert_int_ge(vl, 0);
		memcpy(k, kout, 8);
		rec.obj = be64(kout);
		if (!rec.obj)
			continue;               /* the binding record */
		ck_assert_uint_eq(kl, 8);
		ck_assert_int_eq(vl, (int)(sizeof(rec.r) + sizeof(rec.valid)));
		if (sc->nrecs == cap) {
			cap = cap ? 2 * cap : 64;
			sc->recs = realloc(sc->recs, cap * sizeof(*sc->recs));
			ck_assert_ptr_nonnull(sc->recs);
		}
		sc->recs[sc->nrecs++] = rec;
	}
	memset(k, 0, sizeof(k));
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct ssd_intent in;
		int vl = meta_seek(t, META_T_INTENTS, how, k, 8, kout, 8, &kl,
				   &in, sizeof(in));

		if (vl == -ENOENT)
			break;
		ck_assert_int_ge(vl, 0);
		memcpy(k, kout, 8);
		sc->nintents++;
		scan_problem(sc, "intent left: version %llu, %s, object %llu",
			     (unsigned long long)be64(kout),
			     in.state == SSD_GARBAGE ? "GARBAGE" :
			     in.state == SSD_INTENT ? "INTENT" : "state ?",
			     (unsigned long long)in.obj);
	}
	memset(k, 0, sizeof(k));
	for (enum meta_seek how = META_GE;; how = META_GT) {
		int vl = meta_seek(t, META_T_OBJS, how, k, 8, kout, 8, &kl, NULL, 0);

		if (vl == -ENOENT)
			break;
		ck_assert_int_ge(vl, 0);
		memcpy(k, kout, 8);
		if (sc->nobjs == ocap) {
			ocap = ocap ? 2 * ocap : 64;
			sc->objs = realloc(sc->objs, ocap * sizeof(*sc->objs));
			ck_assert_ptr_nonnull(sc->objs);
		}
		sc->objs[sc->nobjs++] = be64(kout);
	}
	meta_end(t);
	ck_assert_int_eq(meta_close(m), 0);
}

static const struct srec *scan_find(const struct scan *sc, uint64_t obj)
{
	for (size_t i = 0; i < sc->nrecs; i++)
		if (sc->recs[i].obj == obj)
			return &sc->recs[i];
	return NULL;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb) < 0 || !(buf = malloc((size_t)sb.st_size + 1))) {
		close(fd);
		return NULL;
	}
	if (read(fd, buf, (size_t)sb.st_size) != sb.st_size) {
		free(buf);
		buf = NULL;
	}
	close(fd);
	*len = (size_t)sb.st_size;
	return buf;
}

/* The object's bytes as the cache file holds them, block by block along
 * the chain (cache/ssd.c): a valid block of a slot; a record with a pool
 * version and no base (evicted, or its base is gone) holds every other
 * block in that version; a chain's end reads zeros.  Sets cmp[b] for the
 * blocks the cache file decides (the others come from a pool version:
 * nothing to compare). */
static void cache_content(const struct scan *sc, int fd, const struct srec *rec,
			  uint8_t *out, bool *cmp)
{
	for (unsigned b = 0; b < CS / SSD_BLK; b++) {
		const struct srec *s = rec;
		int depth = 0;

		cmp[b] = true;
		memset(out + b * SSD_BLK, 0, SSD_BLK);
		for (; s && depth < 64; depth++) {
			const struct srec *base = s->r.base ? scan_find(sc, s->r.base) : NULL;

			if (s->r.slot != SSD_NOSLOT && (s->valid[b / 64] >> (b % 64) & 1)) {
				ck_assert_int_eq(pread(fd, out + b * SSD_BLK, SSD_BLK,
						       (off_t)(SSD_HDR_SIZE +
							       (uint64_t)s->r.slot * CS +
							       b * SSD_BLK)), SSD_BLK);
				break;
			}
			if (s->r.p.version && !base) {
				cmp[b] = false;
				break;
			}
			s = base;
		}
	}
}

/* Compare the committed index with the backends (see the top); returns
 * the number of problems found (printed, the first ones). */
static unsigned vs_scan(struct vs *x, const char *when)
{
	struct scan sc = { 0 };
	struct sfile *files = NULL;
	size_t nfiles = 0, fcap = 0, expected = 0, leaked = 0;
	char canary[80];
	uint8_t *plain = malloc(CS), *want = malloc(CS);
	int cfd;

	ck_assert_ptr_nonnull(plain);
	ck_assert_ptr_nonnull(want);
	hexname((const uint8_t *)ZDB_CANARY_KEY, strlen(ZDB_CANARY_KEY), canary);
	scan_meta(x, &sc);

	/* what each backend holds */
	for (unsigned b = 0; b < NBE; b++) {
		DIR *d = opendir(x->pcfg->backends[b].address);
		struct dirent *de;

		ck_assert_ptr_nonnull(d);
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
			    !strcmp(de->d_name, canary))
				continue;
			if (nfiles == fcap) {
				fcap = fcap ? 2 * fcap : 256;
				files = realloc(files, fcap * sizeof(*files));
				ck_assert_ptr_nonnull(files);
			}
			snprintf(files[nfiles].name, sizeof(files[nfiles].name), "%s",
				 de->d_name);
			files[nfiles].be = b;
			files[nfiles].seen = false;
			nfiles++;
		}
		closedir(d);
	}

	cfd = open(x->cache_path, O_RDONLY);
	ck_assert_int_ge(cfd, 0);
	for (size_t i = 0; i < sc.nrecs; i++) {
		const struct srec *rec = &sc.recs[i];
		const struct ssd_prec *p = &rec->r.p;
		uint8_t *sh[K + M] = { 0 };
		size_t lens[K + M] = { 0 };
		unsigned have = 0;
		bool dropped = rec->r.flags & SSD_F_DROPPED, cmp[CS / SSD_BLK];

		/* vol's objects ⇔ the records not dropped */
		if (!dropped) {
			size_t j;

			for (j = 0; j < sc.nobjs && sc.objs[j] != rec->obj; j++)
				;
			if (j == sc.nobjs && x->crashes && x->leaks_ok)
				leaked++;
			else if (j == sc.nobjs)
				scan_problem(&sc, "object %llu is in the cache index "
					     "but not in vol's objects (a leaked "
					     "object)", (unsigned long long)rec->obj);
		} else {
			size_t j;

			for (j = 0; j < sc.nrecs && sc.recs[j].r.base != rec->obj; j++)
				;
			if (j == sc.nrecs)
				scan_problem(&sc, "dropped object %llu is kept but is "
					     "nobody's base", (unsigned long long)rec->obj);
		}
		if (!p->version || !p->meta_len)
			continue;               /* never flushed, or a hole */
		for (unsigned s = 0; s < K + M; s++) {
			uint8_t key[SSD_SKEY_LEN];
			char name[72], path[340];
			struct codec_shard_info in;
			size_t f;

			if (p->place[s] == NOWHERE) {
				scan_problem(&sc, "object %llu version %llu shard %u "
					     "is degraded (not stored)",
					     (unsigned long long)rec->obj,
					     (unsigned long long)p->version, s);
				continue;
			}
			expected++;
			ssdflush_key(x->keyer, p->version, s, key);
			hexname(key, sizeof(key), name);
			for (f = 0; f < nfiles; f++)
				if (files[f].be == p->place[s] &&
				    !strcmp(files[f].name, name))
					break;
			if (f == nfiles) {
				scan_problem(&sc, "missing shard: object %llu version "
					     "%llu shard %u on backend %u (%s)",
					     (unsigned long long)rec->obj,
					     (unsigned long long)p->version, s,
					     p->place[s], name);
				continue;
			}
			files[f].seen = true;
			snprintf(path, sizeof(path), "%s/%s",
				 x->pcfg->backends[p->place[s]].address, name);
			sh[s] = slurp(path, &lens[s]);
			if (!sh[s] || codec_shard_info(sh[s], lens[s], &in) < 0 ||
			    in.id.chunk != rec->obj || in.id.version != p->version ||
			    in.index != s) {
				scan_problem(&sc, "shard %s on backend %u is not shard "
					     "%u of object %llu version %llu", name,
					     p->place[s], s, (unsigned long long)rec->obj,
					     (unsigned long long)p->version);
				free(sh[s]);
				sh[s] = NULL;
				continue;
			}
			{
				struct codec_id id = { .chunk = rec->obj,
						       .version = p->version };
				struct codec_meta cm;

				memcpy(id.pool, POOL_ID, sizeof(POOL_ID));
				if (codec_meta_unpack(p->meta, p->meta_len, &cm) < 0 ||
				    codec_verify_shard(x->cctx, &id, &cm, s, sh[s],
						       lens[s], true) != CODEC_SHARD_OK) {
					scan_problem(&sc, "shard %s on backend %u "
						     "(object %llu version %llu shard "
						     "%u) does not verify", name,
						     p->place[s],
						     (unsigned long long)rec->obj,
						     (unsigned long long)p->version, s);
					continue;
				}
			}
			have++;
		}
		/* what the pool holds is what the cache holds */
		if (have == K + M && !dropped && !(rec->r.flags & SSD_F_DIRTY)) {
			struct codec_id id = { .chunk = rec->obj, .version = p->version };
			int r;

			memcpy(id.pool, POOL_ID, sizeof(POOL_ID));
			r = codec_decode(x->cctx, &id, NULL, (const uint8_t *const *)sh,
					 lens, plain, CS, NULL);
			cache_content(&sc, cfd, rec, want, cmp);
			for (unsigned b = 0; b < CS / SSD_BLK; b++)
				if (!cmp[b])
					memcpy(want + b * SSD_BLK, plain + b * SSD_BLK,
					       SSD_BLK);
			if (r != (int)CS)
				scan_problem(&sc, "object %llu version %llu does not "
					     "decode: %d", (unsigned long long)rec->obj,
					     (unsigned long long)p->version, r);
			else if (memcmp(plain, want, CS)) {
				char chain[160];
				size_t at = 0, cl = 0;
				const struct srec *q = rec;

				while (plain[at] == want[at])
					at++;
				for (int d = 0; q && d < 6; d++) {
					cl += (size_t)snprintf(chain + cl, sizeof(chain) - cl,
							       " %llu%s",
							       (unsigned long long)q->obj,
							       q->valid[at / SSD_BLK / 64] >>
							       (at / SSD_BLK % 64) & 1 ?
							       "(valid)" : "");
					if (!q->r.base)
						break;
					if (!(q = scan_find(&sc, q->r.base)))
						snprintf(chain + cl, sizeof(chain) - cl,
							 " -> base without a record");
				}
				scan_problem(&sc, "object %llu: the pool's version %llu "
					     "differs from the cache at byte %zu "
					     "(0x%02x vs 0x%02x; base chain%s)",
					     (unsigned long long)rec->obj,
					     (unsigned long long)p->version, at,
					     plain[at], want[at], chain);
			}
		}
		for (unsigned s = 0; s < K + M; s++)
			free(sh[s]);
	}
	close(cfd);
	for (size_t j = 0; j < sc.nobjs; j++)
		if (!scan_find(&sc, sc.objs[j]))
			scan_problem(&sc, "vol's object %llu has no cache index record "
				     "(a reference without its data)",
				     (unsigned long long)sc.objs[j]);
	for (size_t f = 0; f < nfiles; f++) {
		if (files[f].seen)
			continue;
		scan_problem(&sc, "leaked file on backend %u: %s (no record names "
			     "it)", files[f].be, files[f].name);
	}
	if (leaked)
		printf("scan %s: %zu object(s) leaked by crashes (VOLCHECK 2, not "
		       "counted: NBDSRV_VOL_CRASH=2)\n", when, leaked);

	x->scans++;
	if (sc.problems)
		printf("scan %s: %u problem(s): %zu index records, %zu vol objects, "
		       "%zu shards expected, %zu files, %zu intents\n", when,
		       sc.problems, sc.nrecs, sc.nobjs, expected, nfiles, sc.nintents);
	fflush(stdout);
	free(files);
	free(sc.recs);
	free(sc.objs);
	free(plain);
	free(want);
	return sc.problems;
}

/* Settle, close, scan (pool mode: must be clean). */
static void vs_close_scan(struct vs *x, const char *when)
{
	vs_close(x, when);
	if (x->pool) {
		unsigned n = vs_scan(x, when);

		ck_assert_msg(n == 0, "%s: the backend scan found %u problem(s) "
			      "(listed above)", when, n);
	}
}

/* -------------------------------------------------------------- hooks ---- */

static void vs_reopen(struct vm_env *e, uint64_t op)
{
	struct vs *x = e->priv;
	char when[48];

	snprintf(when, sizeof(when), "reopen at op %llu", (unsigned long long)op);
	vs_close_scan(x, when);
	vs_open(x, false);
	x->reopens++;
}

/* The child of a crash step: model-neutral work until killed. */
static void crash_child(struct vs *x, const struct model *m, uint64_t seed)
{
	struct vol_view *v;
	uint8_t *buf = malloc(3 * CS);
	char name[40];

	rng_state = seed;
	if (!buf || loop_init(&test_loop, 256) < 0 || vs_open_r(x, false) < 0)
		_exit(2);
	for (;;) {
		int vi = (int)rndn(MAXV), k = (int)rndn(100);
		const struct mvol *mv = &m->v[vi];

		if (!mv->live)
			continue;
		if (k < 45) {                   /* rewrite own bytes */
			uint64_t c = rndn(mv->size / CS), off, len;

			if (!mv->alloc[c])
				continue;
			off = c * CS + rndn(CS);
			len = 1 + rndn((c + 1) * CS - off);
			if (vol_view_open(x->e.p, mv->name, &v) < 0)
				_exit(3);
			if (run_io(vol_write, v, off, len, mv->data + off,
				   rndn(8) ? 0 : VOL_IO_FUA) < 0)
				_exit(4);
			vol_view_close(v);
		} else if (k < 52) {            /* zero a hole */
			uint64_t c = rndn(mv->size / CS);

			if (mv->alloc[c])
				continue;
			if (vol_view_open(x->e.p, mv->name, &v) < 0)
				_exit(3);
			if (run_io(rndn(2) ? vol_zero : vol_trim, v, c * CS, CS, NULL, 0) < 0)
				_exit(5);
			vol_view_close(v);
		} else if (k < 60) {            /* snapshot of a model volume */
			snprintf(name, sizeof(name), "z%llu", (unsigned long long)rndn(1000));
			vol_snap_create(x->e.p, mv->name, name);
		} else if (k < 65) {            /* delete one of those */
			struct vol_snap_info *si;
			size_t ns;

			if (vol_snap_list(x->e.p, mv->name, &si, &ns) < 0)
				_exit(6);
			for (size_t j = 0; j < ns; j++)
				if (si[j].name[0] == 'z') {
					vol_snap_delete(x->e.p, mv->name, si[j].name);
					break;
				}
			free(si);
		} else if (k < 80) {            /* scratch volume or clone */
			int si = (int)rndn(MAXS);
			uint64_t size;

			snprintf(name, sizeof(name), "z%c%llu", si & 1 ? 'c' : 'v',
				 (unsigned long long)rndn(1000));
			if (si & 1 && mv->s[si].live) {
				if (vol_clone(x->e.p, mv->name, mv->s[si].name, name) < 0)
					continue;
				size = mv->s[si].size;
			} else {
				size = (1 + rndn(4)) * CS;
				if (vol_create(x->e.p, name, size, CS) < 0)
					continue;
			}
			if (vol_view_open(x->e.p, name, &v) < 0)
				_exit(7);
			for (uint64_t j = 0; j < MIN(size, 3 * CS); j++)
				buf[j] = (uint8_t)rnd();
			if (run_io(vol_write, v, 0, MIN(size, 3 * CS), buf, 0) < 0)
				_exit(8);
			vol_view_close(v);
			if (rndn(2))
				vol_delete(x->e.p, name);
		} else if (k < 90) {            /* flush */
			if (vol_view_open(x->e.p, mv->name, &v) < 0)
				_exit(3);
			if (run_io(vol_flush, v, 0, 0, NULL, 0) < 0)
				_exit(9);
			vol_view_close(v);
		} else {
			vol_gc(x->e.p, 1 + rndn(20));
		}
	}
}

/* Delete what a crash child left: every volume the model does not know
 * (they have no snapshots), then the model volumes' "z" snapshots. */
static void crash_cleanup(struct vs *x, const struct model *m)
{
	struct vol_info *vi;
	size_t nv;
	int r;

	ck_assert_int_eq(vol_list(x->e.p, &vi, &nv), 0);
	for (size_t i = 0; i < nv; i++) {
		bool known = false;

		for (int j = 0; j < MAXV; j++)
			known |= m->v[j].live && !strcmp(m->v[j].name, vi[i].name);
		if (!known)
			ck_assert_msg(vol_delete(x->e.p, vi[i].name) == 0, "delete %s: %s",
				      vi[i].name, vol_last_error());
	}
	for (size_t i = 0; i < nv; i++) {
		struct vol_snap_info *si;
		size_t ns;

		if (vi[i].name[0] == 'z')
			continue;
		ck_assert_int_eq(vol_snap_list(x->e.p, vi[i].name, &si, &ns), 0);
		for (size_t j = 0; j < ns; j++)
			if (si[j].name[0] == 'z')
				ck_assert_msg(vol_snap_delete(x->e.p, vi[i].name,
							      si[j].name) == 0,
					      "delete %s@%s: %s", vi[i].name,
					      si[j].name, vol_last_error());
		free(si);
	}
	free(vi);
	while ((r = vol_gc(x->e.p, 1000)) == 1)
		;
	ck_assert_int_eq(r, 0);
}

static void vs_crash(struct vm_env *e, const struct model *m, uint64_t op)
{
	struct vs *x = e->priv;
	char when[64];
	pid_t pid;
	int status, r;

	snprintf(when, sizeof(when), "before the crash at op %llu",
		 (unsigned long long)op);
	vs_close_scan(x, when);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		crash_child(x, m, rnd());
	usleep((useconds_t)(30000 + rndn(300000)));
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status), "op %llu: the crash child exited (status "
		      "%d) before it was killed", (unsigned long long)op,
		      WEXITSTATUS(status));
	x->crashes++;
	/* the child's objects are not in the reference store: a new one
	 * after the cleanup */
	objstore_close(x->px.ref);
	x->px.ref = NULL;
	vs_open(x, false);
	r = vol_check(x->e.p);
	ck_assert_msg(r == 0, "op %llu: after the crash: %s", (unsigned long long)op,
		      vol_last_error());
	crash_cleanup(x, m);
	vmodel_check_all(x->e.p, m, op);
	if (env_u64("NBDSRV_VOL_REF", 1))
		ref_rebuild(x);
	snprintf(when, sizeof(when), "after the crash at op %llu",
		 (unsigned long long)op);
	vs_close_scan(x, when);
	vs_open(x, false);
}

/* ------------------------------------------------------------- tests ---- */

static void base_setup(void)
{
	/* tmpfs when there is one: the dir backend and the meta store fsync
	 * every write, which costs seconds on a shared disk and proves
	 * nothing here */
	const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	snprintf(basedir, sizeof(basedir), "%s/check_vol_store.XXXXXX", root);
	if (!mkdtemp(basedir))
		basedir[0] = 0;
}

static void base_teardown(void)
{
	char cmd[160];

	if (!basedir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", basedir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", basedir);
}

static uint64_t model_ops(uint64_t dflt)
{
	return env_u64("NBDSRV_VOL_OPS", VS_SANITIZED ? dflt / 3 : dflt);
}

static void run_model(bool pool, uint64_t slots)
{
	const char *name = !pool ? "test_model_ssd" :
			   slots ? "test_model_evict" : "test_model_pool";
	struct vs x;
	struct ssdcache_stats st;
	uint64_t nops = model_ops(6000), t0 = now_ns();
	/* (the mode from the seed, not from the generator: one seed runs the
	 * same ops over memstore, "ssd" and "pool") */
	uint64_t seed = seed_init(name);

	vs_init(&x, pool, name + 11);
	if (slots)
		x.nslots = env_u64("NBDSRV_VOL_SLOTS", slots);
	x.writethrough = pool && env_u64("NBDSRV_VOL_WT", seed >> 1 & 1);
	x.e.priv = &x;
	x.e.reopen = vs_reopen;
	x.e.crash = pool && env_u64("NBDSRV_VOL_CRASH", 0) ? vs_crash : NULL;
	x.leaks_ok = env_u64("NBDSRV_VOL_CRASH", 0) == 2;
	printf("%s: %llu ops, %llu slots of %u KiB%s%s\n", name,
	       (unsigned long long)nops, (unsigned long long)x.nslots, CS >> 10,
	       pool ? ", 3 dir backends, k=2 m=1" : ", local only",
	       pool ? (x.writethrough ? ", writethrough" : ", writeback") : "");
	fflush(stdout);
	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	vs_open(&x, true);
	vmodel_run(&x.e, nops);
	vs_settle(&x, "at the end");
	ssdcache_get_stats(x.cache, &st);
	if (!x.leaks_ok || !x.crashes) {
		ck_assert_uint_eq(st.objects, 0);
		ck_assert_uint_eq(st.slots_used, 0);
	}
	x.drops = x.px.drops;
	vs_close_scan(&x, "at the end");
	printf("%s: %llu ops in %.1f s: %u reopens, %u crashes, %u scans, "
	       "%llu drops, %llu object reads compared with memstore, at most "
	       "%llu slots used, %llu evictions, %llu misses\n", name,
	       (unsigned long long)nops, (double)(now_ns() - t0) / 1e9, x.reopens,
	       x.crashes, x.scans, (unsigned long long)x.drops,
	       (unsigned long long)x.px.compared,
	       (unsigned long long)x.max_slots_used,
	       (unsigned long long)x.evictions, (unsigned long long)x.misses);
	loop_fini(&test_loop);
	vs_fini(&x);
}

START_TEST(test_model_ssd)
{
	run_model(false, 0);
}
END_TEST

START_TEST(test_model_pool)
{
	run_model(true, 0);
}
END_TEST

/* A cache with fewer slots than the model's objects: eviction and the
 * miss path under every op. */
START_TEST(test_model_evict)
{
	run_model(true, 32);
}
END_TEST

static void write_chunks(struct vs *x, const char *vol, uint64_t n, uint8_t fillb)
{
	struct vol_view *v;
	uint8_t *buf = malloc(n * CS);

	ck_assert_ptr_nonnull(buf);
	for (uint64_t i = 0; i < n * CS; i++)
		buf[i] = (uint8_t)(fillb + i * 7 + i / CS);
	ck_assert_int_eq(vol_view_open(x->e.p, vol, &v), 0);
	ck_assert_int_eq(run_io(vol_write, v, 0, n * CS, buf, 0), 0);
	ck_assert_int_eq(run_io(vol_flush, v, 0, 0, NULL, 0), 0);
	vol_view_close(v);
	free(buf);
}

static void rw(struct vs *x, vol_op_fn *fn, const char *spec, uint64_t off,
	       uint64_t len, void *buf)
{
	struct vol_view *v;
	int r;

	ck_assert_msg(vol_view_open(x->e.p, spec, &v) == 0, "open %s: %s", spec,
		      vol_last_error());
	r = run_io(fn, v, off, len, buf, 0);
	ck_assert_msg(r == 0, "%s %llu+%llu: %d", spec, (unsigned long long)off,
		      (unsigned long long)len, r);
	vol_view_close(v);
}

/* Regression (VOLCHECK 4, found by the model test, seed 10510353233 over
 * "ssd", fixed in 84f84d9): vol writes in place to an object that became
 * private again after a rollback and a snapshot delete, while an object
 * created from it as its base still lives in another snapshot; the cache's
 * copy-on-write is lazy, so that snapshot must not see the write. */
START_TEST(test_base_rewritten)
{
	struct vs x;
	uint8_t *a = malloc(CS), b[100], c[100], got[100];
	int r;

	seed_init("test_base_rewritten");
	vs_init(&x, false, "base");
	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	vs_open(&x, true);
	memset(a, 0xaa, CS);
	memset(b, 0xbb, sizeof(b));
	memset(c, 0xcc, sizeof(c));
	ck_assert_int_eq(vol_create(x.e.p, "v", CS, CS), 0);
	rw(&x, vol_write, "v", 0, CS, a);               /* X */
	ck_assert_int_eq(vol_snap_create(x.e.p, "v", "s1"), 0);
	rw(&x, vol_write, "v", 0, 100, b);              /* Y, base X */
	ck_assert_int_eq(vol_snap_create(x.e.p, "v", "s2"), 0);
	ck_assert_int_eq(vol_rollback(x.e.p, "v", "s1"), 0);
	ck_assert_int_eq(vol_snap_delete(x.e.p, "v", "s1"), 0);
	while ((r = vol_gc(x.e.p, 100)) == 1)
		;
	ck_assert_int_eq(r, 0);
	/* X is private now: written in place, in a block Y never wrote */
	rw(&x, vol_write, "v", 8192, 100, c);
	rw(&x, vol_read, "v@s2", 8192, 100, got);
	ck_assert_msg(!memcmp(got, a + 8192, 100), "v@s2 reads the head's later "
		      "write to its base object (byte 0x%02x, want 0xaa)", got[0]);
	rw(&x, vol_read, "v", 8192, 100, got);
	ck_assert(!memcmp(got, c, 100));
	vs_close(&x, "end");
	free(a);
	loop_fini(&test_loop);
	vs_fini(&x);
}
END_TEST

/* Every shard file on the backends: names (backend b, file) into out. */
static size_t list_shards(struct vs *x, char (*out)[600], size_t max)
{
	char canary[80];
	size_t n = 0;

	hexname((const uint8_t *)ZDB_CANARY_KEY, strlen(ZDB_CANARY_KEY), canary);
	for (unsigned b = 0; b < NBE; b++) {
		DIR *d = opendir(x->pcfg->backends[b].address);
		struct dirent *de;

		ck_assert_ptr_nonnull(d);
		while ((de = readdir(d)))
			if (de->d_name[0] == 'k' && strcmp(de->d_name, canary) && n < max)
				snprintf(out[n++], 600, "%s/%s",
					 x->pcfg->backends[b].address, de->d_name);
		closedir(d);
	}
	return n;
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	uint8_t *b = slurp(from, &len);
	int fd;

	ck_assert_ptr_nonnull(b);
	fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
	close(fd);
	free(b);
}

/* The scan fails on broken states, and passes again once repaired. */
START_TEST(test_scan_detects)
{
	static char files[64][600], saved[64][300];
	struct vs x;
	size_t n, nsaved;
	struct stat sb;
	char aside[200];
	unsigned p;

	seed_init("test_scan_detects");
	vs_init(&x, true, "scan");
	x.e.priv = &x;
	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	vs_open(&x, true);
	ck_assert_int_eq(vol_create(x.e.p, "a", 4 * CS, CS), 0);
	write_chunks(&x, "a", 4, 1);
	vs_close_scan(&x, "baseline");
	n = list_shards(&x, files, 64);
	ck_assert_uint_eq(n, 4 * (K + M));

	/* a lost reference: one shard file gone */
	snprintf(aside, sizeof(aside), "%s/aside", x.dir);
	ck_assert_int_eq(rename(files[0], aside), 0);
	p = vs_scan(&x, "with a shard deleted");
	ck_assert_msg(p == 1, "the scan found %u problems with one shard deleted", p);
	ck_assert_int_eq(rename(aside, files[0]), 0);
	ck_assert_uint_eq(vs_scan(&x, "shard back"), 0);

	/* a corrupted shard: does not decode */
	{
		size_t len;
		uint8_t *b = slurp(files[1], &len);
		int fd;

		ck_assert_ptr_nonnull(b);
		copy_file(files[1], aside);
		b[len - 1] ^= 0x40;
		fd = open(files[1], O_WRONLY | O_TRUNC);
		ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
		close(fd);
		free(b);
		p = vs_scan(&x, "with a corrupted shard");
		ck_assert_msg(p == 1, "the scan found %u problems with one shard "
			      "corrupted", p);
		ck_assert_int_eq(rename(aside, files[1]), 0);
		ck_assert_uint_eq(vs_scan(&x, "shard repaired"), 0);
	}

	/* a skipped delete: the old version's shards restored after GC */
	nsaved = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(saved[i], sizeof(saved[i]), "%s/saved%zu", x.dir, i);
		copy_file(files[i], saved[i]);
	}
	vs_open(&x, false);
	write_chunks(&x, "a", 1, 99);           /* chunk 0: a new version */
	vs_close_scan(&x, "after the overwrite");
	ck_assert_uint_eq(list_shards(&x, files + n, 64 - n), 4 * (K + M));
	p = 0;
	for (size_t i = 0; i < nsaved; i++)
		if (stat(files[i], &sb) < 0) {
			copy_file(saved[i], files[i]);
			p++;
		}
	ck_assert_uint_eq(p, K + M);            /* the GC deleted them */
	p = vs_scan(&x, "with the old version's shards restored");
	ck_assert_msg(p == K + M, "the scan found %u problems with %u leaked shards",
		      p, K + M);
	for (size_t i = 0; i < nsaved; i++)
		if (stat(files[i], &sb) == 0) {
			bool live = false;

			for (size_t j = n; j < n + 4 * (K + M); j++)
				live |= !strcmp(files[i], files[j]);
			if (!live)
				ck_assert_int_eq(unlink(files[i]), 0);
		}
	ck_assert_uint_eq(vs_scan(&x, "leak removed"), 0);

	/* a GARBAGE intent left behind */
	{
		struct meta_opts mo = { .commit_delay_ns = UINT64_MAX };
		struct ssd_intent in = { .state = SSD_GARBAGE, .n = K + M, .obj = 1 };
		uint8_t k[8] = { 0, 0, 0, 0, 0, 0, 0x7f, 0xff };
		struct meta *m;
		struct meta_txn *t;

		memcpy(mo.pool_id, POOL_ID, sizeof(POOL_ID));
		ck_assert_int_eq(meta_open(x.meta_dir, &mo, &m), 0);
		t = meta_wbegin(m);
		ck_assert_int_eq(meta_put(t, META_T_INTENTS, k, 8, &in, sizeof(in)), 0);
		meta_end(t);
		ck_assert_int_eq(meta_close(m), 0);
		p = vs_scan(&x, "with a GARBAGE intent left");
		ck_assert_msg(p == 1, "the scan found %u problems with one intent "
			      "left", p);
		ck_assert_int_eq(meta_open(x.meta_dir, &mo, &m), 0);
		t = meta_wbegin(m);
		ck_assert_int_eq(meta_del(t, META_T_INTENTS, k, 8), 0);
		meta_end(t);
		ck_assert_int_eq(meta_close(m), 0);
		ck_assert_uint_eq(vs_scan(&x, "intent removed"), 0);
	}

	/* the end: the volume deleted, the backends empty */
	vs_open(&x, false);
	ck_assert_int_eq(vol_delete(x.e.p, "a"), 0);
	while (vol_gc(x.e.p, 100) == 1)
		;
	vs_close_scan(&x, "after the delete");
	ck_assert_uint_eq(list_shards(&x, files, 64), 0);
	loop_fini(&test_loop);
	vs_fini(&x);
}
END_TEST

int main(int argc, char **argv)
{
	const struct {
		const char *name;
		const TTest *test;
	} cases[] = {
		{ "ssd", test_model_ssd },
		{ "pool", test_model_pool },
		{ "evict", test_model_evict },
		{ "scan", test_scan_detects },
		{ "regress", test_base_rewritten },
	};
	const char *only = argc > 1 ? argv[1] : NULL;
	Suite *s = suite_create("vol-store");
	int n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		TCase *tc;

		if (only && strcmp(only, cases[i].name))
			continue;
		tc = tcase_create(cases[i].name);
		tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
		tcase_set_timeout(tc, 600);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
		n++;
	}
	if (!n) {
		fprintf(stderr, "usage: %s [ssd|pool|evict|scan|regress]\n", argv[0]);
		return 2;
	}
	return check_run(s);
}
