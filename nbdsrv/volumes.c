/*
 * volumes.c — the daemon's volume store and the NBD resolver over it.
 *
 *   volumes_open(PERSISTENT, cfg)                <cache_path>/
 *     ├─ key:      codec_key_load(key_file) → codec (k, m, chunk_size)
 *     │            pool id   = KDF(key, 1)  (16 bytes)
 *     │            shard key seed = KDF(key, 2)  (the raw key never leaves)
 *     ├─ metadata: meta_open(meta/, create)     meta/  (LMDB, locked)
 *     ├─ objects:  ssdcache_open(cache.img)     cache.img
 *     │            in front of the config's pool (its own thread)
 *     └─ volumes:  vol_pool_open(over that meta, store = the cache)
 *
 *   volumes_open(EPHEMERAL)
 *     ├─ metadata: vol_pool_open() in a fresh mkdtemp() directory
 *     │            (nosync: nothing here survives the process anyway)
 *     └─ objects:  memstore (RAM)
 *
 * The pool id is derived from the key, not stored: the key file IS the
 * pool's identity.  So a cache_path opened with another pool's key is
 * refused by the metadata store and the cache header ("belongs to another
 * pool"), no id file can get out of step with the store, and the backends'
 * shard keys (a keyed hash of pool id, version, shard under the seed)
 * differ between pools.  Two pools must therefore never share a key file
 * (`nbdsrv init` generates one per pool).
 *
 * The metadata store is opened here, before the cache (which keeps its
 * index in it) and before vol (which borrows it); its commit hook is
 * forwarded to vol_pool_commit_hook() while the vol pool is open (hook_lock
 * keeps the committer thread off a pool being closed).
 *
 * Close: a flush of the cache on a private loop (its data reaches the
 * SSD; not the pool, even in writethrough mode: cmd_serve.c drains the
 * pool first, bounded by shutdown_flush_timeout_ms), vol_sync (maps + index records in one commit), vol_pool_close,
 * the cache's close (stages its clean flag), meta_close (commits it).
 *
 * The resolver turns an export name into a vol view export (export_vol.c)
 * when a client asks for it, so volumes and snapshots created after start
 * are served at once; LIST enumerates every volume and every `vol@snap`.
 * Its calls run on reactor threads and are metadata reads only.
 */
#include "nbdsrv/volumes.h"
#include "codec/codec.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define VOLUMES_GC_BUDGET 4096
#define VOLUMES_CACHE_SIZE (1ull << 30)   /* cache_size default */

/* An export name some sessions hold open (for status). */
struct vol_open {
	struct vol_open *next;
	unsigned sessions;
	char name[];
};

struct volumes {
	enum volumes_mode mode;
	char dir[4096];                 /* metadata directory (ephemeral: ours) */
	struct objstore *store;
	struct vol_pool *pool;
	struct meta *meta;              /* persistent: ours, borrowed by pool */
	struct codec *codec;            /* persistent: used by the cache */
	uint64_t chunk_size;            /* persistent: the slot size */
	pthread_mutex_t hook_lock;      /* hook_pool vs the committer thread */
	struct vol_pool *hook_pool;
	bool writethrough;
	bool discard_dirty;             /* opts: accept losing unflushed writes */
	struct warm *warm;
	struct nbd_resolver resolver;
	pthread_mutex_t lock;           /* guards open (reactors, control) */
	struct vol_open *open;
};

/* Count a session in or out of name's entry. */
static void count_session(struct volumes *v, const char *name, int delta)
{
	struct vol_open **pp, *o;

	pthread_mutex_lock(&v->lock);
	for (pp = &v->open; (o = *pp); pp = &o->next)
		if (!strcmp(o->name, name))
			break;
	if (!o && delta > 0 && (o = calloc(1, sizeof(*o) + strlen(name) + 1))) {
		strcpy(o->name, name);
		o->next = v->open;
		v->open = o;
		pp = &v->open;
	}
	if (o) {
		o->sessions += (unsigned)delta;
		if (o->sessions == 0) {
			*pp = o->next;
			free(o);
		}
	}
	pthread_mutex_unlock(&v->lock);
}

void volumes_foreach_open(struct volumes *v,
			  void (*fn)(void *arg, const char *name, unsigned sessions),
			  void *arg)
{
	struct vol_open *o;

	pthread_mutex_lock(&v->lock);
	for (o = v->open; o; o = o->next)
		fn(arg, o->name, o->sessions);
	pthread_mutex_unlock(&v->lock);
}

int volumes_parse_mode(const char *s, enum volumes_mode *out)
{
	if (!strcmp(s, "ephemeral")) {
		*out = VOLUMES_EPHEMERAL;
		return 0;
	}
	if (!strcmp(s, "persistent")) {
		*out = VOLUMES_PERSISTENT;
		return 0;
	}
	return -EINVAL;
}

static struct export *resolver_open(void *arg, const char *name)
{
	struct volumes *v = arg;
	struct export *e;

	if (export_vol_open(v->pool, v->mode == VOLUMES_PERSISTENT ? v->warm : NULL,
			    name, &e) < 0)
		return NULL;
	count_session(v, e->name, 1);
	return e;
}

static void resolver_release(void *arg, struct export *e)
{
	count_session(arg, e->name, -1);
	export_close(e);
}

static void resolver_list(void *arg, void (*add)(void *ctx, const char *name),
			  void *ctx)
{
	struct volumes *v = arg;
	struct vol_info *vols = NULL;
	size_t n = 0, i, j;

	if (vol_list(v->pool, &vols, &n) < 0)
		return;
	for (i = 0; i < n; i++) {
		struct vol_snap_info *snaps = NULL;
		size_t ns = 0;
		char name[2 * VOL_NAME_MAX + 2];

		add(ctx, vols[i].name);
		if (vol_snap_list(v->pool, vols[i].name, &snaps, &ns) < 0)
			continue;
		for (j = 0; j < ns; j++) {
			snprintf(name, sizeof(name), "%s@%s", vols[i].name, snaps[j].name);
			add(ctx, name);
		}
		free(snaps);
	}
	free(vols);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

/* Commit hook of a persistent store (committer thread). */
static void volumes_hook(void *arg, uint64_t gen)
{
	struct volumes *v = arg;

	pthread_mutex_lock(&v->hook_lock);
	if (v->hook_pool)
		vol_pool_commit_hook(v->hook_pool, gen);
	pthread_mutex_unlock(&v->hook_lock);
}

#define VOLUMES_KDF_CTX     "nbdsrvpl"
#define VOLUMES_KDF_POOL_ID 1
#define VOLUMES_KDF_SEED    2

/* The pool id and the shard key seed from the key file (validated by
 * codec_key_load first, which also says what is wrong with it). */
static int derive_ids(const char *key_file, uint8_t pool_id[META_POOL_ID_LEN],
		      uint8_t seed[32], struct codec_key **key)
{
	uint8_t raw[CODEC_KEY_SIZE];
	char err[256];
	ssize_t n;
	int fd, r;

	r = codec_key_load(key_file, key, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: key_file: %s\n", err);
		return r;
	}
	fd = open(key_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	n = read(fd, raw, sizeof(raw));
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r == 0 && n != (ssize_t)sizeof(raw))
		r = -EINVAL;
	if (r == 0 && (crypto_kdf_derive_from_key(pool_id, META_POOL_ID_LEN,
						  VOLUMES_KDF_POOL_ID, VOLUMES_KDF_CTX, raw) ||
		       crypto_kdf_derive_from_key(seed, 32, VOLUMES_KDF_SEED,
						  VOLUMES_KDF_CTX, raw)))
		r = -EIO;
	sodium_memzero(raw, sizeof(raw));
	if (r == 0)
		return 0;
fail:
	fprintf(stderr, "nbdsrv serve: key_file '%s': %s\n", key_file, strerror(-r));
	codec_key_free(*key);
	*key = NULL;
	return r;
}

static int open_persistent(struct volumes *v, const struct zdb_pool_cfg *cfg)
{
	struct codec_params cp = { .k = cfg->k, .m = cfg->m,
				   .max_chunk = (uint32_t)cfg->chunk_size };
	struct ssdcache_opts so;
	struct meta_opts mo;
	struct vol_pool_opts o;
	struct codec_key *key = NULL;
	uint8_t seed[32];
	char path[4096 + 16], err[256];
	int r;

	memset(&mo, 0, sizeof(mo));
	memset(&so, 0, sizeof(so));
	if (!cfg->cache_path[0] || !cfg->key_file[0]) {
		fprintf(stderr, "nbdsrv serve: %s: persistent volumes need cache_path and "
			"key_file in [pool]\n", cfg->path);
		return -EINVAL;
	}
	snprintf(v->dir, sizeof(v->dir), "%s", cfg->cache_path);
	if (mkdir(v->dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		fprintf(stderr, "nbdsrv serve: cache_path '%s': %s\n", v->dir, strerror(-r));
		return r;
	}
	r = derive_ids(cfg->key_file, mo.pool_id, seed, &key);
	if (r < 0)
		return r;
	r = codec_new(&cp, key, &v->codec, err, sizeof(err));
	codec_key_free(key);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: %s: codec: %s\n", cfg->path, err);
		goto exit;
	}
	v->chunk_size = cfg->chunk_size;
	v->writethrough = cfg->cache_mode == ZDB_CACHE_WRITETHROUGH;

	snprintf(path, sizeof(path), "%s/meta", v->dir);
	mo.create = true;
	mo.hook = volumes_hook;
	mo.hook_arg = v;
	r = meta_open(path, &mo, &v->meta);
	if (r == -EBUSY) {
		fprintf(stderr, "nbdsrv serve: %s is in use by another process (is another "
			"nbdsrv serving this cache_path?)\n", path);
		goto exit;
	}
	if (r == -EINVAL) {
		fprintf(stderr, "nbdsrv serve: %s: %s — it belongs to another pool (another "
			"key_file?)\n", path, meta_last_error());
		goto exit;
	}
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: %s: %s\n", path, meta_last_error());
		goto exit;
	}

	snprintf(path, sizeof(path), "%s/cache.img", v->dir);
	so.path = path;
	so.size = cfg->cache_size ? cfg->cache_size : VOLUMES_CACHE_SIZE;
	so.slot_size = (uint32_t)cfg->chunk_size;
	so.meta = v->meta;
	memcpy(so.pool_id, mo.pool_id, META_POOL_ID_LEN);
	so.create = true;
	so.pool_cfg = cfg;
	so.codec = v->codec;
	memcpy(so.shard_key_seed, seed, sizeof(seed));
	so.writethrough = cfg->cache_mode == ZDB_CACHE_WRITETHROUGH;
	so.dirty_max = cfg->cache_dirty_max;
	so.flush_parallel = cfg->flush_parallel;
	so.flush_idle_ms = cfg->flush_idle_ms;
	so.flush_idle_set = cfg->flush_idle_set;
	so.flush_max_age_ms = cfg->flush_max_age_ms;
	so.flush_max_age_set = cfg->flush_max_age_set;
	so.flush_background = cfg->flush_background;
	so.flush_background_set = cfg->flush_background_set;
	so.discard_dirty = v->discard_dirty;
	r = ssdcache_open(&so, &v->store);
	sodium_memzero(&so, sizeof(so));
	if (r == -ESTALE && !v->discard_dirty && cfg->cache_mode == ZDB_CACHE_WRITEBACK) {
		fprintf(stderr, "nbdsrv serve: the cache file %s/cache.img was lost or "
			"replaced while it held writes not yet in the pool (writeback).  "
			"Restore it, or start once with --discard-dirty to serve every "
			"volume from its last pool version (those writes are lost)\n", v->dir);
		goto exit;
	}
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: cache %s/cache.img: %s (the log says why)\n",
			v->dir, strerror(-r));
		goto exit;
	}

	memset(&o, 0, sizeof(o));
	o.meta = v->meta;
	o.store = v->store;
	o.k = cfg->k;
	o.m = cfg->m;
	r = vol_pool_open(&o, &v->pool);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: volumes: %s\n", vol_last_error());
		goto exit;
	}
	pthread_mutex_lock(&v->hook_lock);
	v->hook_pool = v->pool;
	pthread_mutex_unlock(&v->hook_lock);
	log_info("volumes: persistent in %s (cache %s, %s, chunk %llu KiB, k=%u m=%u)",
		 v->dir, path,
		 cfg->cache_mode == ZDB_CACHE_WRITETHROUGH ? "writethrough" : "writeback",
		 (unsigned long long)(cfg->chunk_size >> 10), cfg->k, cfg->m);
exit:
	sodium_memzero(seed, sizeof(seed));
	return r;
}

static int open_ephemeral(struct volumes *v)
{
	struct vol_pool_opts o;
	const char *tmp = getenv("TMPDIR");
	int r;

	snprintf(v->dir, sizeof(v->dir), "%s/nbdsrv-volumes.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(v->dir)) {
		r = -errno;
		fprintf(stderr, "nbdsrv serve: --volumes: cannot create %s: %s\n", v->dir,
			strerror(-r));
		v->dir[0] = 0;
		return r;
	}
	r = memstore_create(false, &v->store);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: --volumes: memstore: %s\n", strerror(-r));
		return r;
	}
	memset(&o, 0, sizeof(o));
	o.path = v->dir;
	if (getrandom(o.pool_id, sizeof(o.pool_id), 0) != (ssize_t)sizeof(o.pool_id))
		memcpy(o.pool_id, "nbdsrv-ephemeral", sizeof(o.pool_id));
	o.create = true;
	o.store = v->store;
	o.k = 1;                /* memstore keeps one copy */
	o.m = 0;
	o.map_size = 1ull << 30;
	o.nosync = true;
	r = vol_pool_open(&o, &v->pool);
	if (r < 0)
		fprintf(stderr, "nbdsrv serve: --volumes: %s\n", vol_last_error());
	return r;
}

static void sync_cb(struct objstore_io *io, int res)
{
	io->res = res;
	*(bool *)io->priv = true;
}

/* Flush the object store from this (non-reactor) thread. */
static int flush_store(struct objstore *s)
{
	struct loop l;
	struct objstore_io io;
	bool done = false;
	int r;

	r = loop_init(&l, 8);
	if (r < 0)
		return r;
	memset(&io, 0, sizeof(io));
	io.loop = &l;
	io.cb = sync_cb;
	io.priv = &done;
	ssdcache_flush_local(s, &io);   /* the pool part is serve's drain */
	while (!done && (r = loop_run_once(&l, 1000ull * 1000 * 1000)) >= 0)
		;
	loop_fini(&l);
	return done ? io.res : r;
}

static int volumes_free(struct volumes *v)
{
	int r = 0, r2;

	warm_close(v->warm);
	if (v->pool && v->mode == VOLUMES_PERSISTENT) {
		r = flush_store(v->store);
		if (r < 0)
			log_error("volumes: final cache flush: %s", strerror(-r));
		r2 = vol_sync(v->pool);
		if (r2 < 0) {
			log_error("volumes: final commit: %s", vol_last_error());
			r = r < 0 ? r : r2;
		}
	}
	pthread_mutex_lock(&v->hook_lock);
	v->hook_pool = NULL;
	pthread_mutex_unlock(&v->hook_lock);
	r2 = vol_pool_close(v->pool);
	r = r < 0 ? r : r2;
	objstore_close(v->store);
	if (v->meta) {
		r2 = meta_close(v->meta);
		if (r2 < 0)
			log_error("volumes: closing the metadata: %s", meta_last_error());
		r = r < 0 ? r : r2;
	}
	codec_free(v->codec);
	if (v->mode == VOLUMES_EPHEMERAL && v->dir[0])
		nftw(v->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	while (v->open) {               /* none once every session ended */
		struct vol_open *o = v->open;

		v->open = o->next;
		free(o);
	}
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->hook_lock);
	free(v);
	return r;
}

int volumes_open(enum volumes_mode mode, const struct zdb_pool_cfg *cfg,
		 unsigned flags, struct volumes **out)
{
	struct volumes *v = calloc(1, sizeof(*v));
	int r;

	*out = NULL;
	if (!v)
		return -ENOMEM;
	v->mode = mode;
	v->discard_dirty = flags & VOLUMES_DISCARD_DIRTY;
	pthread_mutex_init(&v->lock, NULL);
	pthread_mutex_init(&v->hook_lock, NULL);
	if (mode == VOLUMES_PERSISTENT) {
		if (!cfg) {
			fprintf(stderr, "nbdsrv serve: persistent volumes need --config\n");
			r = -EINVAL;
		} else {
			r = open_persistent(v, cfg);
		}
	} else {
		r = open_ephemeral(v);
	}
	if (r == 0 && (r = warm_open(v->pool, &v->warm)) < 0)
		fprintf(stderr, "nbdsrv serve: volumes: warm-up thread: %s\n", strerror(-r));
	if (r < 0) {
		volumes_free(v);
		return r;
	}
	v->resolver.open = resolver_open;
	v->resolver.release = resolver_release;
	v->resolver.list = resolver_list;
	v->resolver.arg = v;
	*out = v;
	return 0;
}

int volumes_close(struct volumes *v)
{
	return v ? volumes_free(v) : 0;
}

uint64_t volumes_chunk_size(const struct volumes *v)
{
	return v->chunk_size;
}

struct objstore *volumes_store(struct volumes *v)
{
	return v->store;
}

int volumes_warm(struct volumes *v, const char *spec, uint64_t rate, uint64_t *id,
		 char *err, size_t errlen)
{
	return warm_add(v->warm, spec, rate, id, err, errlen);
}

void volumes_warm_stop(struct volumes *v, const char *vol, const char *reason)
{
	warm_stop(v->warm, vol, reason);
}

int volumes_sync_start(struct volumes *v, struct loop *loop,
		       void (*done)(void *arg, int res), void *arg,
		       struct ssdcache_sync **out)
{
	*out = NULL;
	if (v->mode != VOLUMES_PERSISTENT)
		return -ENOTSUP;
	return ssdcache_sync_start(v->store, loop, done, arg, out);
}

int volumes_scrub(struct volumes *v, bool deep, int64_t rate)
{
	if (v->mode != VOLUMES_PERSISTENT)
		return -ENOTSUP;
	return ssdcache_scrub_start(v->store, deep, rate);
}

void volumes_backend_emptied(void *arg, const char *backend)
{
	struct volumes *v = arg;

	if (v->mode == VOLUMES_PERSISTENT)
		ssdcache_backend_emptied(v->store, backend);
}

void volumes_sync_cancel(struct ssdcache_sync *y, int res)
{
	ssdcache_sync_cancel(y, res);
}

unsigned volumes_refusals(struct volumes *v, struct zdb_refusal *out, unsigned max)
{
	if (v->mode != VOLUMES_PERSISTENT)
		return 0;
	return ssdcache_refusals(v->store, out, max);
}

uint64_t volumes_pool_dirty(struct volumes *v)
{
	struct ssdcache_stats st;

	if (v->mode != VOLUMES_PERSISTENT)
		return 0;
	ssdcache_get_stats(v->store, &st);
	return st.pool_dirty;
}

void volumes_set_close_wait(struct volumes *v, uint64_t ms)
{
	if (v->mode == VOLUMES_PERSISTENT)
		ssdcache_set_close_wait(v->store, ms);
}

void volumes_fail_flushes(struct volumes *v, int err)
{
	if (v->mode == VOLUMES_PERSISTENT)
		ssdcache_fail_flushes(v->store, err);
}

json_t *volumes_status(struct volumes *v)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "cache_mode", json_string(v->mode == VOLUMES_EPHEMERAL
		? "memory" : v->writethrough ? "writethrough" : "writeback"));
	if (v->mode == VOLUMES_PERSISTENT) {
		struct ssdcache_stats st;
		json_t *c = json_object(), *sc = json_object();

		ssdcache_get_stats(v->store, &st);
		/* one call per member: no format string to keep in step */
#define CST(obj, name) json_object_set_new(obj, #name, json_integer((json_int_t)st.name))
		json_object_set_new(c, "slot_size", json_integer((json_int_t)v->chunk_size));
		CST(c, slots);
		CST(c, slots_used);
		CST(c, slots_dirty);
		CST(c, slots_free);
		CST(c, objects);
		CST(c, hits);
		CST(c, misses);
		CST(c, fetches);
		CST(c, miss_bytes);
		CST(c, fetch_errors);
		CST(c, prefetches);
		CST(c, evictions);
		CST(c, pool_dirty);
		CST(c, flushed);
		CST(c, flush_errors);
		CST(c, gc_versions);
		CST(c, bp_waiting);
		CST(c, bp_stalls);
		CST(c, degraded_writes);
		CST(c, repair_pending);
		CST(c, fetch_shards);
		CST(c, readaheads);
		CST(c, read_fetches);
		CST(c, read_served);
		CST(c, slot_waits);
		CST(c, cow_blocks);
		CST(c, read_retries);
		CST(c, fill_waits);
		CST(c, intent_commits);
		CST(c, record_commits);
		CST(c, wb_waiting);
		CST(c, wb_oldest_ms);
		CST(c, wb_forced);
		CST(c, wb_complete);
		CST(c, wb_idle);
		CST(c, wb_age);
		CST(c, wb_background);
		json_object_set_new(o, "cache", c);
		json_object_set_new(sc, "running", json_boolean(st.scrub_running));
		json_object_set_new(sc, "deep", json_boolean(st.scrub_deep));
#define SST(name) json_object_set_new(sc, #name, json_integer((json_int_t)st.scrub_##name))
		SST(runs);
		SST(total);
		SST(checked);
		SST(shards);
		SST(missing);
		SST(bad);
		SST(down);
		SST(errors);
		SST(queued);
		SST(waiting);
		SST(rate);
		SST(bytes);
		SST(throttled);
#undef SST
		CST(sc, repair_pending);
		CST(sc, repairs);
#undef CST
		json_object_set_new(o, "scrub", sc);
	}
	json_object_set_new(o, "warm", warm_status(v->warm));
	return o;
}

int volumes_ensure(struct volumes *v, const char *name, uint64_t size)
{
	struct vol_info vi;
	int r = vol_get_info(v->pool, name, &vi);

	if (r == 0) {
		if (vi.size != size)
			log_info("volume '%s' exists (%llu bytes; --create-volume asked for "
				 "%llu: left as it is)", name, (unsigned long long)vi.size,
				 (unsigned long long)size);
		return 0;
	}
	if (r != -ENOENT) {
		fprintf(stderr, "nbdsrv serve: volume '%s': %s\n", name, vol_last_error());
		return r;
	}
	r = vol_create(v->pool, name, size, v->chunk_size ? v->chunk_size : 1u << 20);
	if (r == 0)
		r = vol_sync(v->pool);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: --create-volume %s: %s\n", name,
			vol_last_error());
		return r;
	}
	log_info("volume '%s' created (%llu bytes)", name, (unsigned long long)size);
	return 0;
}

struct vol_pool *volumes_pool(struct volumes *v)
{
	return v->pool;
}

const char *volumes_mode_name(const struct volumes *v)
{
	return v->mode == VOLUMES_EPHEMERAL ? "ephemeral" : "persistent";
}

bool volumes_ephemeral(const struct volumes *v)
{
	return v->mode == VOLUMES_EPHEMERAL;
}

const struct nbd_resolver *volumes_resolver(struct volumes *v)
{
	return &v->resolver;
}

void volumes_gc(struct volumes *v)
{
	int r = vol_gc(v->pool, VOLUMES_GC_BUDGET);

	if (r < 0)
		log_warn("volume gc: %s", vol_last_error());
}
