/*
 * vol.c — thin copy-on-write volumes on the metadata store (cache/meta) and
 * an object store (cache/objstore).
 *
 * Contents
 *   1. records, keys, errors, names
 *   2. the pool: open (drop recovery), close, commit hook (deferred drops)
 *   3. map primitives: chain lookup, entry collection, refcounts
 *   4. control operations (volumes, snapshots, clones, rollback, flatten,
 *      diff, du, gc, check, dump)
 *   5. views and async I/O
 *
 * Model (docs/volumes-and-cache.md).  The map holds entries keyed
 * (volume, chunk, epoch) → object (0 = hole tombstone); an entry is visible
 * to the volume's views with epoch in [its epoch, the next entry's epoch).
 * The head reads at cur_epoch, a snapshot at its epoch; a snapshot is
 * {epoch = cur_epoch} followed by cur_epoch++.  A clone is a volume whose
 * lookups that find no entry continue in its origin at the snapshot's
 * epoch: a view resolves through a CHAIN of (volume, epoch) levels, the
 * view's own level first.  One chain level costs one merged cursor seek, so
 * a lookup's cost depends on clone depth, never on the number of snapshots.
 *
 *     lookup(view, i):  for (vol, E) in chain:  seek_le(vol, i, E)
 *                          same (vol, i)? → its object (0 = hole)
 *                       nothing → hole
 *
 * Objects.  objs[obj] = {refcount = number of map entries naming it, base}.
 * A head write to chunk i modifies the visible object in place only when it
 * is private (entry at cur_epoch, refcount 1); otherwise it creates a new
 * object whose base is the visible one (0 when the write covers the whole
 * chunk) and points a cur_epoch entry at it.  A refcount reaching 0 moves
 * the object to the gc table (state PENDING) in the same batch; after that
 * batch COMMITTED, the commit hook calls objstore drop() and marks the gc
 * entry DROPPED — so a crash can never leave a committed reference to an
 * object the store already dropped.  (The pool deletion of shards of issue
 * 6 will consume DROPPED entries.)
 *
 * Locking.  Every operation runs inside one meta section: reads and block
 * status in a shared (read) section, writes and control operations in an
 * exclusive (write) section, which therefore is the per-volume lock too
 * (all volumes share it for now: the staging overlay is shared).  Sections
 * are short and never wait for I/O: object store ops are SUBMITTED inside
 * the section (submission never blocks and fixes the op's view of the
 * object, see cache.h), and complete later on the caller's loop.  So a
 * reader that found object X has its read registered in the store before
 * any writer can drop X.  The in-memory volume states (cached records and
 * chains of open views) change only inside write sections, so a read
 * section sees them consistent with the map.
 *
 * Snapshot delete removes the record at once and flags the volume; vol_gc()
 * then walks its map with a budget, deleting entries that no live epoch
 * (head, live snapshot) can see.
 */
#include "vol/vol.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ 1 -- */

#define VOL_REC_VERSION   1u
#define VOL_F_GC_PENDING  1u
#define VOL_CHAIN_MAX     64
#define GC_PENDING        1u
#define GC_DROPPED        2u

struct vol_rec {
	uint32_t version;
	uint32_t flags;                 /* VOL_F_* */
	uint64_t size, chunk_size;
	uint64_t cur_epoch;
	uint64_t parent, parent_epoch;  /* clone origin; parent 0 = none */
	uint64_t ctime;
	uint64_t gc_cursor;             /* chunk where vol_gc resumes */
	char name[VOL_NAME_MAX + 1];
};

struct snap_rec {
	uint64_t size, ctime;
	char name[VOL_NAME_MAX + 1];
};

struct obj_rec {
	uint64_t refcount;
	uint64_t base;
	uint64_t vol;                   /* volume that created it (info) */
};

struct gc_rec {
	uint32_t state;                 /* GC_* */
	uint32_t pad;
	uint64_t vol;
};

struct lvl {
	uint64_t vol, epoch;
};

struct vol_state {
	struct vol_state *next;
	uint64_t id;
	struct vol_rec rec;
	struct lvl chain[VOL_CHAIN_MAX];  /* [0].vol = id; [j>0] = origins */
	int nchain;
	unsigned nviews;
};

struct vol_view {
	struct vol_view *next;
	struct vol_pool *p;
	struct vol_state *st;
	bool snap;
	uint64_t epoch, size;           /* snapshot views only */
};

struct drop_ent {
	uint64_t obj, gen;
};

struct vol_pool {
	struct meta *m;
	struct objstore *store;
	bool meta_borrowed;             /* opts.meta: not ours to close */
	unsigned k, mm;
	pthread_mutex_t lock;           /* states, views */
	struct vol_state *states;
	struct vol_view *views;
	pthread_mutex_t drop_lock;      /* drops */
	struct drop_ent *drops;
	size_t ndrops, cap_drops;
	int drop_err;
};

static __thread char vol_errbuf[320];

const char *vol_last_error(void)
{
	return vol_errbuf[0] ? vol_errbuf : "no error";
}

__attribute__((format(printf, 2, 3)))
static int vol_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vol_errbuf, sizeof(vol_errbuf), fmt, ap);
	va_end(ap);
	return err;
}

/* A meta failure: keep its message. */
static int vol_merr(int err)
{
	if (err == -ENOMEM)
		return vol_err(err, "out of memory");
	return vol_err(err, "metadata: %s", meta_last_error());
}

static void be64put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t be64get(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void mapkey(uint8_t k[24], uint64_t vol, uint64_t chunk, uint64_t epoch)
{
	be64put(k, vol);
	be64put(k + 8, chunk);
	be64put(k + 16, epoch);
}

/* The META_T_SNAPS key of volume vol's snapshot at epoch. */
static void snapkey(uint8_t k[16], uint64_t vol, uint64_t epoch)
{
	be64put(k, vol);
	be64put(k + 8, epoch);
}

static bool name_ok(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > VOL_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int check_name(const char *what, const char *s)
{
	if (name_ok(s))
		return 0;
	return vol_err(-EINVAL, "invalid %s name '%.80s': 1-%d characters of "
		       "A-Z a-z 0-9 . _ -, not starting with . or -", what,
		       s ? s : "(null)", VOL_NAME_MAX);
}

/* Split "vol@snap" into vol and snap (snap "" when absent). */
static int split_spec(const char *spec, char vol[VOL_NAME_MAX + 1],
		      char snap[VOL_NAME_MAX + 1])
{
	const char *at;
	size_t n;
	int r;

	if (!spec)
		return vol_err(-EINVAL, "missing volume name");
	at = strchr(spec, '@');
	n = at ? (size_t)(at - spec) : strlen(spec);
	if (n > VOL_NAME_MAX)
		return vol_err(-EINVAL, "volume name too long in '%.80s'", spec);
	memcpy(vol, spec, n);
	vol[n] = 0;
	r = check_name("volume", vol);
	if (r < 0)
		return r;
	snap[0] = 0;
	if (at) {
		if (strlen(at + 1) > VOL_NAME_MAX || !name_ok(at + 1))
			return check_name("snapshot", at + 1);
		strcpy(snap, at + 1);
	}
	return 0;
}

/* ------------------------------------------------------------------ 2 -- */

static int vol_rec_get(struct meta_txn *t, uint64_t id, struct vol_rec *rec)
{
	uint8_t k[8];
	int r;

	be64put(k, id);
	r = meta_get(t, META_T_VOLS, k, 8, rec, sizeof(*rec));
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return vol_merr(r);
	if (r != sizeof(*rec) || rec->version != VOL_REC_VERSION ||
	    rec->chunk_size < VOL_CHUNK_MIN || rec->chunk_size > VOL_CHUNK_MAX ||
	    !IS_POW2(rec->chunk_size) || rec->size % rec->chunk_size ||
	    rec->size > VOL_SIZE_MAX)
		return vol_err(-EUCLEAN, "volume record %" PRIu64 " is corrupt", id);
	rec->name[VOL_NAME_MAX] = 0;
	return 0;
}

static int vol_rec_put(struct meta_txn *t, uint64_t id, const struct vol_rec *rec)
{
	uint8_t k[8];
	int r;

	be64put(k, id);
	r = meta_put(t, META_T_VOLS, k, 8, rec, sizeof(*rec));
	return r < 0 ? vol_merr(r) : 0;
}

static int vol_find(struct meta_txn *t, const char *name, uint64_t *id,
		    struct vol_rec *rec)
{
	uint8_t v[8];
	int r;

	r = meta_get(t, META_T_NAMES, name, strlen(name), v, 8);
	if (r == -ENOENT)
		return vol_err(-ENOENT, "no volume named '%s'", name);
	if (r < 0)
		return vol_merr(r);
	if (r != 8)
		return vol_err(-EUCLEAN, "name record of '%s' is corrupt", name);
	*id = be64get(v);
	r = vol_rec_get(t, *id, rec);
	if (r == -ENOENT)
		return vol_err(-EUCLEAN, "volume '%s' has a name but no record", name);
	return r;
}

/* Find snapshot `name` of vol; fills epoch and rec.  O(snapshots). */
static int snap_find(struct meta_txn *t, uint64_t vol, const char *vname,
		     const char *name, uint64_t *epoch, struct snap_rec *rec)
{
	uint8_t k[16], kout[16];
	size_t kl;
	int r;

	snapkey(k, vol, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		r = meta_seek_prefix(t, META_T_SNAPS, how, k, 16, 8, kout, 16, &kl,
				     rec, sizeof(*rec));
		if (r == -ENOENT || (r >= 0 && (kl != 16 || be64get(kout) != vol)))
			break;
		if (r < 0)
			return vol_merr(r);
		rec->name[VOL_NAME_MAX] = 0;
		if (!strcmp(rec->name, name)) {
			*epoch = be64get(kout + 8);
			return 0;
		}
		memcpy(k, kout, 16);
	}
	return vol_err(-ENOENT, "volume '%s' has no snapshot '%s'", vname, name);
}

/* Volume vol and its snapshot snap, both required (-ENOENT with a message). */
static int vol_snap_find(struct meta_txn *t, const char *vol, const char *snap,
			 uint64_t *id, struct vol_rec *rec, uint64_t *epoch,
			 struct snap_rec *s)
{
	int r = vol_find(t, vol, id, rec);

	return r == 0 ? snap_find(t, *id, vol, snap, epoch, s) : r;
}

/* Live snapshot epochs of vol, ascending.  *out freed by the caller. */
static int snap_epochs(struct meta_txn *t, uint64_t vol, uint64_t **out, size_t *n)
{
	uint8_t k[16], kout[16];
	uint64_t *a = NULL;
	size_t cnt = 0, cap = 0, kl;
	int r;

	snapkey(k, vol, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		r = meta_seek_prefix(t, META_T_SNAPS, how, k, 16, 8, kout, 16, &kl,
				     NULL, 0);
		if (r == -ENOENT || (r >= 0 && (kl != 16 || be64get(kout) != vol)))
			break;
		if (r < 0) {
			free(a);
			return vol_merr(r);
		}
		if (cnt == cap) {
			uint64_t *na = realloc(a, (cap = cap ? 2 * cap : 16) * sizeof(*a));

			if (!na) {
				free(a);
				return vol_err(-ENOMEM, "out of memory");
			}
			a = na;
		}
		a[cnt++] = be64get(kout + 8);
		memcpy(k, kout, 16);
	}
	*out = a;
	*n = cnt;
	return 0;
}

/* Is there a live epoch in [lo, hi)? */
static bool epoch_in(const uint64_t *e, size_t n, uint64_t lo, uint64_t hi)
{
	size_t a = 0, b = n;

	while (a < b) {                 /* first e >= lo */
		size_t mid = (a + b) / 2;

		if (e[mid] < lo)
			a = mid + 1;
		else
			b = mid;
	}
	return a < n && e[a] < hi;
}

static void drop_queue(struct vol_pool *p, uint64_t obj, uint64_t gen)
{
	pthread_mutex_lock(&p->drop_lock);
	if (p->ndrops == p->cap_drops) {
		size_t nc = p->cap_drops ? 2 * p->cap_drops : 64;
		struct drop_ent *nd = realloc(p->drops, nc * sizeof(*nd));

		if (!nd) {
			/* recovered at the next open from the gc table */
			p->drop_err = -ENOMEM;
			pthread_mutex_unlock(&p->drop_lock);
			return;
		}
		p->drops = nd;
		p->cap_drops = nc;
	}
	p->drops[p->ndrops++] = (struct drop_ent){ obj, gen };
	pthread_mutex_unlock(&p->drop_lock);
}

/* Commit hook (committer thread): the batches up to gen are durable, so the
 * objects they released can go. */
void vol_pool_commit_hook(void *arg, uint64_t gen)
{
	struct vol_pool *p = arg;
	struct drop_ent *done = NULL;
	size_t nd = 0, i, j;
	struct meta_txn *t;

	pthread_mutex_lock(&p->drop_lock);
	for (i = 0; i < p->ndrops; i++)
		if (p->drops[i].gen <= gen)
			nd++;
	if (nd)
		done = malloc(nd * sizeof(*done));
	if (done) {
		for (i = j = 0, nd = 0; i < p->ndrops; i++) {
			if (p->drops[i].gen <= gen)
				done[nd++] = p->drops[i];
			else
				p->drops[j++] = p->drops[i];
		}
		p->ndrops = j;
	}
	pthread_mutex_unlock(&p->drop_lock);
	if (!done)
		return;
	/* The drops happen inside the section that stages their DROPPED
	 * marks, so a store that stages its own records for a drop (the SSD
	 * cache: index deletion, garbage intent) lands them in the same
	 * commit: a crash never leaves a DROPPED object the store still
	 * holds, nor a store record vol will never drop again. */
	t = meta_wbegin(p->m);
	for (i = 0; i < nd; i++) {
		uint8_t k[8];
		struct gc_rec g;

		objstore_drop(p->store, done[i].obj);
		if (!t)
			continue;
		be64put(k, done[i].obj);
		if (meta_get(t, META_T_GC, k, 8, &g, sizeof(g)) == sizeof(g)) {
			g.state = GC_DROPPED;
			meta_put(t, META_T_GC, k, 8, &g, sizeof(g));
		}
	}
	if (t)
		meta_end(t);
	free(done);
}

/* Drop objects whose gc entry is still PENDING (crash between the commit
 * that released them and their drop). */
static int vol_recover_drops(struct vol_pool *p)
{
	struct meta_txn *t = meta_wbegin(p->m);
	uint8_t k[8], kout[8];
	struct gc_rec g;
	size_t kl;
	int r = 0, n = 0;

	if (!t)
		return vol_merr(-EIO);
	be64put(k, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		r = meta_seek(t, META_T_GC, how, k, 8, kout, 8, &kl, &g, sizeof(g));
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0) {
			r = vol_merr(r);
			break;
		}
		memcpy(k, kout, 8);
		if (r != sizeof(g) || g.state != GC_PENDING)
			continue;
		objstore_drop(p->store, be64get(kout));
		g.state = GC_DROPPED;
		r = meta_put(t, META_T_GC, kout, 8, &g, sizeof(g));
		if (r < 0) {
			r = vol_merr(r);
			break;
		}
		n++;
	}
	meta_end(t);
	if (n)
		log_info("vol: dropped %d object(s) released before a crash", n);
	return r;
}

int vol_pool_open(const struct vol_pool_opts *o, struct vol_pool **out)
{
	struct meta_opts mo;
	struct vol_pool *p;
	int r;

	*out = NULL;
	vol_errbuf[0] = 0;
	if (!o->store)
		return vol_err(-EINVAL, "no object store");
	if (o->k == 0 || o->k > 255 || o->m > 255)
		return vol_err(-EINVAL, "bad erasure code %u+%u", o->k, o->m);
	p = calloc(1, sizeof(*p));
	if (!p)
		return vol_err(-ENOMEM, "out of memory");
	p->store = o->store;
	p->k = o->k;
	p->mm = o->m;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->drop_lock, NULL);
	memset(&mo, 0, sizeof(mo));
	memcpy(mo.pool_id, o->pool_id, META_POOL_ID_LEN);
	mo.create = o->create;
	mo.map_size = o->map_size;
	mo.nosync = o->nosync;
	mo.commit_bytes = o->commit_bytes;
	mo.commit_delay_ns = o->commit_delay_ns;
	mo.hook = vol_pool_commit_hook;
	mo.hook_arg = p;
	if (o->meta) {
		p->m = o->meta;
		p->meta_borrowed = true;
	} else {
		r = meta_open(o->path, &mo, &p->m);
		if (r < 0) {
			vol_err(r, "%s", meta_last_error());
			goto fail;
		}
	}
	r = vol_recover_drops(p);
	if (r < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	if (p->m && !p->meta_borrowed)
		meta_close(p->m);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->drop_lock);
	free(p);
	return r;
}

int vol_pool_close(struct vol_pool *p)
{
	int r;

	if (!p)
		return 0;
	if (p->views)
		log_error("vol: pool closed with views open");
	r = p->meta_borrowed ? meta_sync(p->m) : meta_close(p->m);
	if (r < 0)
		vol_err(r, "%s", meta_last_error());
	while (p->states) {
		struct vol_state *s = p->states;

		p->states = s->next;
		free(s);
	}
	free(p->drops);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->drop_lock);
	free(p);
	return r;
}

int vol_sync(struct vol_pool *p)
{
	int r = meta_sync(p->m);

	return r < 0 ? vol_merr(r) : 0;
}

struct meta *vol_pool_meta(struct vol_pool *p)
{
	return p->m;
}

/* ------------------------------------------------------------------ 3 -- */

struct hit {
	uint64_t obj;
	uint64_t epoch;
	int level;                      /* -1: no entry anywhere */
};

/* Resolve chunk through chain[0..n). */
static int chain_lookup(struct meta_txn *t, const struct lvl *chain, int n,
			uint64_t chunk, struct hit *h)
{
	uint8_t k[24], kout[24];
	uint64_t obj;
	size_t kl;
	int j, r;

	for (j = 0; j < n; j++) {
		mapkey(k, chain[j].vol, chunk, chain[j].epoch);
		r = meta_seek_prefix(t, META_T_MAP, META_LE, k, 24, 16, kout, 24,
				     &kl, &obj, 8);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return vol_merr(r);
		if (kl == 24 && memcmp(kout, k, 16) == 0) {
			if (r != 8)
				return vol_err(-EUCLEAN, "corrupt map entry");
			h->obj = obj;
			h->epoch = be64get(kout + 16);
			h->level = j;
			return 0;
		}
	}
	h->obj = 0;
	h->epoch = 0;
	h->level = -1;
	return 0;
}

/* Build the chain of volume `id` (record rec) viewed at epoch. */
static int chain_build(struct meta_txn *t, uint64_t id, const struct vol_rec *rec,
		       uint64_t epoch, struct lvl *chain, int *n)
{
	struct vol_rec r2 = *rec;
	int cnt = 0, r;

	chain[cnt++] = (struct lvl){ id, epoch };
	while (r2.parent) {
		uint64_t pid = r2.parent;

		if (cnt == VOL_CHAIN_MAX)
			return vol_err(-ELOOP, "clone chain deeper than %d", VOL_CHAIN_MAX);
		chain[cnt++] = (struct lvl){ pid, r2.parent_epoch };
		r = vol_rec_get(t, pid, &r2);
		if (r == -ENOENT)
			return vol_err(-EUCLEAN, "origin volume %" PRIu64 " missing", pid);
		if (r < 0)
			return r;
	}
	*n = cnt;
	return 0;
}

static int obj_get(struct meta_txn *t, uint64_t obj, struct obj_rec *o)
{
	uint8_t k[8];
	int r;

	be64put(k, obj);
	r = meta_get(t, META_T_OBJS, k, 8, o, sizeof(*o));
	if (r == -ENOENT)
		return vol_err(-EUCLEAN, "object %" PRIu64 " is referenced but missing", obj);
	if (r < 0)
		return vol_merr(r);
	if (r != sizeof(*o))
		return vol_err(-EUCLEAN, "object record %" PRIu64 " is corrupt", obj);
	return 0;
}

static int obj_put(struct meta_txn *t, uint64_t obj, const struct obj_rec *o)
{
	uint8_t k[8];
	int r;

	be64put(k, obj);
	r = meta_put(t, META_T_OBJS, k, 8, o, sizeof(*o));
	return r < 0 ? vol_merr(r) : 0;
}

static int obj_ref(struct vol_pool *p, struct meta_txn *t, uint64_t obj, int delta)
{
	struct obj_rec o;
	uint8_t k[8];
	int r;

	if (!obj)
		return 0;
	r = obj_get(t, obj, &o);
	if (r < 0)
		return r;
	if (delta < 0 && o.refcount == 0)
		return vol_err(-EUCLEAN, "object %" PRIu64 " refcount underflow", obj);
	o.refcount += (uint64_t)(int64_t)delta;
	if (o.refcount)
		return obj_put(t, obj, &o);
	be64put(k, obj);
	r = meta_del(t, META_T_OBJS, k, 8);
	if (r == 0) {
		struct gc_rec g = { .state = GC_PENDING, .vol = o.vol };

		r = meta_put(t, META_T_GC, k, 8, &g, sizeof(g));
	}
	if (r < 0)
		return vol_merr(r);
	drop_queue(p, obj, meta_wgen(t));
	return 0;
}

/* A new object with refcount 1. */
static int obj_new(struct meta_txn *t, uint64_t base, uint64_t vol, uint64_t *out)
{
	struct obj_rec o = { .refcount = 1, .base = base, .vol = vol };
	uint64_t id = meta_alloc_id(t);

	if (!id)
		return vol_merr(-ENOMEM);
	*out = id;
	return obj_put(t, id, &o);
}

/* Set the entry (vol, chunk, epoch) to obj (0 = hole), adjusting refcounts
 * of the entry it replaces and of obj. */
static int map_set(struct vol_pool *p, struct meta_txn *t, uint64_t vol,
		   uint64_t chunk, uint64_t epoch, uint64_t obj, bool take_ref)
{
	uint8_t k[24];
	uint64_t old;
	int r;

	mapkey(k, vol, chunk, epoch);
	r = meta_get(t, META_T_MAP, k, 24, &old, 8);
	if (r < 0 && r != -ENOENT)
		return vol_merr(r);
	if (r != 8)
		old = 0;
	else if (old == obj)
		return 0;
	if (take_ref && (r = obj_ref(p, t, obj, 1)) < 0)
		return r;
	if (old && (r = obj_ref(p, t, old, -1)) < 0)
		return r;
	r = meta_put(t, META_T_MAP, k, 24, &obj, 8);
	return r < 0 ? vol_merr(r) : 0;
}

static int map_del(struct vol_pool *p, struct meta_txn *t, uint64_t vol,
		   uint64_t chunk, uint64_t epoch, uint64_t obj)
{
	uint8_t k[24];
	int r;

	mapkey(k, vol, chunk, epoch);
	r = meta_del(t, META_T_MAP, k, 24);
	if (r < 0)
		return vol_merr(r);
	return obj_ref(p, t, obj, -1);
}

/* Make chunk a hole in the head (epoch E, chain[0..n) its chain, h its
 * current lookup): drop the cur_epoch entry when what lies below it already
 * reads as a hole (nothing stored at all), else write a hole entry. */
static int head_hole(struct vol_pool *p, struct meta_txn *t, const struct lvl *chain,
		     int n, uint64_t chunk, const struct hit *h)
{
	uint64_t vol = chain[0].vol, E = chain[0].epoch;

	if (h->level == 0 && h->epoch == E && E > 0) {
		struct lvl below[VOL_CHAIN_MAX];
		struct hit hb;
		int r;

		memcpy(below, chain, (size_t)n * sizeof(*below));
		below[0].epoch = E - 1;
		r = chain_lookup(t, below, n, chunk, &hb);
		if (r < 0)
			return r;
		if (!hb.obj)
			return map_del(p, t, vol, chunk, E, h->obj);
	}
	return map_set(p, t, vol, chunk, E, 0, false);
}

struct ent {
	uint64_t chunk, epoch, obj;
};

struct ents {
	struct ent *a;
	size_t n, cap;
};

static int ents_add(struct ents *e, uint64_t chunk, uint64_t epoch, uint64_t obj)
{
	if (e->n == e->cap) {
		size_t nc = e->cap ? 2 * e->cap : 256;
		struct ent *na = realloc(e->a, nc * sizeof(*na));

		if (!na)
			return vol_err(-ENOMEM, "out of memory");
		e->a = na;
		e->cap = nc;
	}
	e->a[e->n++] = (struct ent){ chunk, epoch, obj };
	return 0;
}

/* Append vol's entries with chunk in [lo, hi) and epoch <= max_epoch. */
static int map_collect(struct meta_txn *t, uint64_t vol, uint64_t lo,
		       uint64_t hi, uint64_t max_epoch, struct ents *e)
{
	uint8_t k[24], kout[24];
	uint64_t obj;
	size_t kl;
	int r;

	if (lo >= hi)
		return 0;
	mapkey(k, vol, lo, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		uint64_t chunk, epoch;

		r = meta_seek_prefix(t, META_T_MAP, how, k, 24, 8, kout, 24, &kl,
				     &obj, 8);
		if (r == -ENOENT)
			return 0;
		if (r < 0)
			return vol_merr(r);
		if (kl != 24 || r != 8)
			return vol_err(-EUCLEAN, "corrupt map entry");
		if (be64get(kout) != vol)
			return 0;
		chunk = be64get(kout + 8);
		epoch = be64get(kout + 16);
		if (chunk >= hi)
			return 0;
		if (epoch <= max_epoch && (r = ents_add(e, chunk, epoch, obj)) < 0)
			return r;
		memcpy(k, kout, 24);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorted distinct chunks that have an entry in any level of chain (each
 * level's epoch bound respected), within [lo, hi). */
static int chain_chunks(struct meta_txn *t, const struct lvl *chain, int n,
			uint64_t lo, uint64_t hi, uint64_t **out, size_t *nout)
{
	struct ents e = { 0 };
	uint64_t *c;
	size_t i, m = 0;
	int r = 0, j;

	for (j = 0; j < n && r == 0; j++)
		r = map_collect(t, chain[j].vol, lo, hi, chain[j].epoch, &e);
	if (r < 0) {
		free(e.a);
		return r;
	}
	c = malloc((e.n ? e.n : 1) * sizeof(*c));
	if (!c) {
		free(e.a);
		return vol_err(-ENOMEM, "out of memory");
	}
	for (i = 0; i < e.n; i++)
		c[i] = e.a[i].chunk;
	free(e.a);
	qsort(c, e.n, sizeof(*c), cmp_u64);
	for (i = 0; i < e.n; i++)
		if (m == 0 || c[m - 1] != c[i])
			c[m++] = c[i];
	*out = c;
	*nout = m;
	return 0;
}

/* Refresh the cached state of volume id (if loaded) from the staged
 * metadata; call inside the write section that changed it. */
static int state_refresh(struct vol_pool *p, struct meta_txn *t, uint64_t id)
{
	struct vol_state *s;
	int r = 0;

	pthread_mutex_lock(&p->lock);
	for (s = p->states; s; s = s->next) {
		if (s->id != id)
			continue;
		r = vol_rec_get(t, id, &s->rec);
		if (r == 0)
			r = chain_build(t, id, &s->rec, s->rec.cur_epoch, s->chain,
					&s->nchain);
		break;
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

static bool views_open(struct vol_pool *p, uint64_t id, bool any, uint64_t epoch)
{
	struct vol_view *v;
	bool busy = false;

	pthread_mutex_lock(&p->lock);
	for (v = p->views; v && !busy; v = v->next)
		if (v->st->id == id && (any || (v->snap && v->epoch == epoch)))
			busy = true;
	pthread_mutex_unlock(&p->lock);
	return busy;
}

/* Names of the clones of (vol, epoch) (epoch UINT64_MAX: of any snapshot
 * of vol) into buf; returns how many. */
static int clones_of(struct meta_txn *t, uint64_t vol, uint64_t epoch,
		     char *buf, size_t cap)
{
	uint8_t k[8], kout[8];
	struct vol_rec rec;
	size_t kl, len = 0;
	int r, n = 0;

	buf[0] = 0;
	be64put(k, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		r = meta_seek(t, META_T_VOLS, how, k, 8, kout, 8, &kl, &rec, sizeof(rec));
		if (r == -ENOENT)
			break;
		if (r < 0)
			return vol_merr(r);
		memcpy(k, kout, 8);
		if (r != sizeof(rec) || rec.parent != vol ||
		    (epoch != UINT64_MAX && rec.parent_epoch != epoch))
			continue;
		rec.name[VOL_NAME_MAX] = 0;
		if (len + strlen(rec.name) + 3 < cap)
			len += (size_t)snprintf(buf + len, cap - len, "%s%s",
						n ? ", " : "", rec.name);
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------ 4 -- */

static int check_geometry(uint64_t size, uint64_t chunk)
{
	if (chunk < VOL_CHUNK_MIN || chunk > VOL_CHUNK_MAX || !IS_POW2(chunk))
		return vol_err(-EINVAL, "chunk size %" PRIu64 " must be a power of two "
			       "from 64 KiB to 8 MiB", chunk);
	if (size == 0 || size > VOL_SIZE_MAX || size % chunk)
		return vol_err(-EINVAL, "size %" PRIu64 " must be a positive multiple of "
			       "the chunk size (%" PRIu64 ") up to 2^60", size, chunk);
	return 0;
}

/* Shared by create and clone: a fresh volume record under name. */
static int vol_insert(struct meta_txn *t, const char *name, struct vol_rec *rec)
{
	uint8_t v[8];
	uint64_t id;
	int r;

	r = meta_get(t, META_T_NAMES, name, strlen(name), NULL, 0);
	if (r >= 0)
		return vol_err(-EEXIST, "volume '%s' already exists", name);
	if (r != -ENOENT)
		return vol_merr(r);
	id = meta_alloc_id(t);
	if (!id)
		return vol_merr(-ENOMEM);
	rec->version = VOL_REC_VERSION;
	rec->cur_epoch = 1;
	rec->ctime = (uint64_t)time(NULL);
	snprintf(rec->name, sizeof(rec->name), "%s", name);
	be64put(v, id);
	r = meta_put(t, META_T_NAMES, name, strlen(name), v, 8);
	if (r < 0)
		return vol_merr(r);
	return vol_rec_put(t, id, rec);
}

int vol_create(struct vol_pool *p, const char *name, uint64_t size,
	       uint64_t chunk_size)
{
	struct vol_rec rec;
	struct meta_txn *t;
	int r;

	if ((r = check_name("volume", name)) < 0 ||
	    (r = check_geometry(size, chunk_size)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	memset(&rec, 0, sizeof(rec));
	rec.size = size;
	rec.chunk_size = chunk_size;
	r = vol_insert(t, name, &rec);
	meta_end(t);
	return r;
}

static void info_fill(struct meta_txn *t, uint64_t id, const struct vol_rec *rec,
		      struct vol_info *out)
{
	struct vol_rec pr;
	uint64_t *ep = NULL;
	size_t n = 0;

	memset(out, 0, sizeof(*out));
	out->id = id;
	snprintf(out->name, sizeof(out->name), "%s", rec->name);
	out->size = rec->size;
	out->chunk_size = rec->chunk_size;
	out->epoch = rec->cur_epoch;
	out->gc_pending = rec->flags & VOL_F_GC_PENDING;
	if (rec->parent && vol_rec_get(t, rec->parent, &pr) == 0) {
		uint8_t k[16];
		struct snap_rec s;

		snprintf(out->parent, sizeof(out->parent), "%s", pr.name);
		snapkey(k, rec->parent, rec->parent_epoch);
		if (meta_get(t, META_T_SNAPS, k, 16, &s, sizeof(s)) == sizeof(s)) {
			s.name[VOL_NAME_MAX] = 0;
			snprintf(out->parent_snap, sizeof(out->parent_snap), "%s", s.name);
		}
	}
	if (snap_epochs(t, id, &ep, &n) == 0)
		out->nsnaps = (unsigned)n;
	free(ep);
}

int vol_list(struct vol_pool *p, struct vol_info **out, size_t *n)
{
	struct meta_txn *t = meta_rbegin(p->m);
	struct vol_info *a = NULL;
	size_t cnt = 0, cap = 0, kl;
	char k[VOL_NAME_MAX + 1], kout[VOL_NAME_MAX + 1];
	uint8_t v[8];
	int r = 0;

	*out = NULL;
	*n = 0;
	if (!t)
		return vol_merr(-EIO);
	k[0] = 0;
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct vol_rec rec;
		size_t klen = how == META_GE ? 0 : strlen(k);

		r = meta_seek(t, META_T_NAMES, how, k, klen ? klen : 0, kout,
			      VOL_NAME_MAX, &kl, v, 8);
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0) {
			r = vol_merr(r);
			break;
		}
		if (kl > VOL_NAME_MAX || r != 8) {
			r = vol_err(-EUCLEAN, "corrupt name record");
			break;
		}
		memcpy(k, kout, kl);
		k[kl] = 0;
		r = vol_rec_get(t, be64get(v), &rec);
		if (r < 0) {
			if (r == -ENOENT)
				r = vol_err(-EUCLEAN, "volume '%s' has no record", k);
			break;
		}
		if (cnt == cap) {
			struct vol_info *na = realloc(a, (cap = cap ? 2 * cap : 16) *
						      sizeof(*a));
			if (!na) {
				r = vol_err(-ENOMEM, "out of memory");
				break;
			}
			a = na;
		}
		info_fill(t, be64get(v), &rec, &a[cnt++]);
	}
	meta_end(t);
	if (r < 0) {
		free(a);
		return r;
	}
	*out = a;
	*n = cnt;
	return 0;
}

int vol_get_info(struct vol_pool *p, const char *name, struct vol_info *out)
{
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id;
	int r;

	if ((r = check_name("volume", name)) < 0)
		return r;
	t = meta_rbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, name, &id, &rec);
	if (r == 0)
		info_fill(t, id, &rec, out);
	meta_end(t);
	return r;
}

/* Make the head's chunks in [lo, hi) holes (they become invisible by a
 * shrink or a rollback to a smaller snapshot). */
static int head_cut(struct vol_pool *p, struct meta_txn *t, uint64_t id,
		    const struct vol_rec *rec, uint64_t lo, uint64_t hi)
{
	struct lvl chain[VOL_CHAIN_MAX];
	uint64_t *c = NULL;
	size_t n = 0, i;
	int nc, r;

	r = chain_build(t, id, rec, rec->cur_epoch, chain, &nc);
	if (r == 0)
		r = chain_chunks(t, chain, nc, lo, hi, &c, &n);
	for (i = 0; r == 0 && i < n; i++) {
		struct hit h;

		r = chain_lookup(t, chain, nc, c[i], &h);
		if (r == 0 && h.obj)
			r = head_hole(p, t, chain, nc, c[i], &h);
	}
	free(c);
	return r;
}

int vol_resize(struct vol_pool *p, const char *name, uint64_t new_size)
{
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id;
	int r;

	if ((r = check_name("volume", name)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, name, &id, &rec);
	if (r == 0)
		r = check_geometry(new_size, rec.chunk_size);
	if (r == 0 && new_size < rec.size)
		r = head_cut(p, t, id, &rec, new_size / rec.chunk_size,
			     rec.size / rec.chunk_size);
	if (r == 0) {
		rec.size = new_size;
		r = vol_rec_put(t, id, &rec);
	}
	if (r == 0)
		r = state_refresh(p, t, id);
	meta_end(t);
	return r;
}

int vol_delete(struct vol_pool *p, const char *name)
{
	struct ents e = { 0 };
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id, *ep = NULL;
	size_t n = 0, i;
	char clones[256];
	uint8_t k[16];
	int r;

	if ((r = check_name("volume", name)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, name, &id, &rec);
	if (r < 0)
		goto exit;
	if (views_open(p, id, true, 0)) {
		r = vol_err(-EBUSY, "volume '%s' is in use (open views)", name);
		goto exit;
	}
	r = clones_of(t, id, UINT64_MAX, clones, sizeof(clones));
	if (r > 0) {
		r = vol_err(-EBUSY, "volume '%s' has clones of its snapshots: %s "
			    "(flatten or delete them first)", name, clones);
		goto exit;
	}
	if (r < 0)
		goto exit;
	r = map_collect(t, id, 0, UINT64_MAX, UINT64_MAX, &e);
	for (i = 0; r == 0 && i < e.n; i++)
		r = map_del(p, t, id, e.a[i].chunk, e.a[i].epoch, e.a[i].obj);
	if (r == 0)
		r = snap_epochs(t, id, &ep, &n);
	for (i = 0; r == 0 && i < n; i++) {
		snapkey(k, id, ep[i]);
		r = meta_del(t, META_T_SNAPS, k, 16);
	}
	if (r == 0)
		r = meta_del(t, META_T_NAMES, name, strlen(name));
	if (r == 0) {
		be64put(k, id);
		r = meta_del(t, META_T_VOLS, k, 8);
	}
	if (r < 0 && r != -EUCLEAN && r != -ENOMEM && r != -EBUSY)
		r = vol_merr(r);
exit:
	meta_end(t);
	free(e.a);
	free(ep);
	return r < 0 ? r : 0;
}

int vol_rename(struct vol_pool *p, const char *name, const char *new_name)
{
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id;
	uint8_t v[8];
	int r;

	if ((r = check_name("volume", name)) < 0 ||
	    (r = check_name("volume", new_name)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, name, &id, &rec);
	if (r == 0 && strcmp(name, new_name)) {
		r = meta_get(t, META_T_NAMES, new_name, strlen(new_name), NULL, 0);
		if (r >= 0)
			r = vol_err(-EEXIST, "volume '%s' already exists", new_name);
		else if (r == -ENOENT)
			r = 0;
		else
			r = vol_merr(r);
		if (r == 0) {
			be64put(v, id);
			snprintf(rec.name, sizeof(rec.name), "%s", new_name);
			if (meta_del(t, META_T_NAMES, name, strlen(name)) < 0 ||
			    meta_put(t, META_T_NAMES, new_name, strlen(new_name), v, 8) < 0)
				r = vol_merr(-ENOMEM);
			else
				r = vol_rec_put(t, id, &rec);
		}
		if (r == 0)
			r = state_refresh(p, t, id);
	}
	meta_end(t);
	return r;
}

int vol_snap_create(struct vol_pool *p, const char *vol, const char *snap)
{
	struct meta_txn *t;
	struct vol_rec rec;
	struct snap_rec s;
	uint64_t id, ep;
	uint8_t k[16];
	int r;

	if ((r = check_name("volume", vol)) < 0 ||
	    (r = check_name("snapshot", snap)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, vol, &id, &rec);
	if (r < 0)
		goto exit;
	r = snap_find(t, id, vol, snap, &ep, &s);
	if (r == 0) {
		r = vol_err(-EEXIST, "snapshot '%s@%s' already exists", vol, snap);
		goto exit;
	}
	memset(&s, 0, sizeof(s));
	s.size = rec.size;
	s.ctime = (uint64_t)time(NULL);
	snprintf(s.name, sizeof(s.name), "%s", snap);
	snapkey(k, id, rec.cur_epoch);
	r = meta_put(t, META_T_SNAPS, k, 16, &s, sizeof(s));
	if (r < 0) {
		r = vol_merr(r);
		goto exit;
	}
	rec.cur_epoch++;
	r = vol_rec_put(t, id, &rec);
	if (r == 0)
		r = state_refresh(p, t, id);
exit:
	meta_end(t);
	return r;
}

int vol_snap_list(struct vol_pool *p, const char *vol,
		  struct vol_snap_info **out, size_t *n)
{
	struct vol_snap_info *a = NULL;
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id, *ep = NULL;
	size_t cnt = 0, i;
	char clones[8];
	int r;

	*out = NULL;
	*n = 0;
	if ((r = check_name("volume", vol)) < 0)
		return r;
	t = meta_rbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, vol, &id, &rec);
	if (r == 0)
		r = snap_epochs(t, id, &ep, &cnt);
	if (r == 0 && !(a = calloc(cnt ? cnt : 1, sizeof(*a))))
		r = vol_err(-ENOMEM, "out of memory");
	for (i = 0; r == 0 && i < cnt; i++) {
		struct snap_rec s;
		uint8_t k[16];
		int nc;

		snapkey(k, id, ep[i]);
		r = meta_get(t, META_T_SNAPS, k, 16, &s, sizeof(s));
		if (r != sizeof(s)) {
			r = r < 0 ? vol_merr(r) : vol_err(-EUCLEAN, "corrupt snapshot");
			break;
		}
		r = 0;
		s.name[VOL_NAME_MAX] = 0;
		snprintf(a[i].name, sizeof(a[i].name), "%s", s.name);
		a[i].epoch = ep[i];
		a[i].size = s.size;
		a[i].ctime = s.ctime;
		nc = clones_of(t, id, ep[i], clones, sizeof(clones));
		if (nc < 0)
			r = nc;
		else
			a[i].nclones = (unsigned)nc;
	}
	meta_end(t);
	free(ep);
	if (r < 0) {
		free(a);
		return r;
	}
	*out = a;
	*n = cnt;
	return 0;
}

int vol_snap_delete(struct vol_pool *p, const char *vol, const char *snap)
{
	struct meta_txn *t;
	struct vol_rec rec;
	struct snap_rec s;
	uint64_t id, ep;
	char clones[256];
	uint8_t k[16];
	int r;

	if ((r = check_name("volume", vol)) < 0 ||
	    (r = check_name("snapshot", snap)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_snap_find(t, vol, snap, &id, &rec, &ep, &s);
	if (r < 0)
		goto exit;
	if (views_open(p, id, false, ep)) {
		r = vol_err(-EBUSY, "snapshot '%s@%s' is in use (open views)", vol, snap);
		goto exit;
	}
	r = clones_of(t, id, ep, clones, sizeof(clones));
	if (r > 0) {
		r = vol_err(-EBUSY, "snapshot '%s@%s' has clones: %s (flatten or "
			    "delete them first)", vol, snap, clones);
		goto exit;
	}
	if (r < 0)
		goto exit;
	snapkey(k, id, ep);
	r = meta_del(t, META_T_SNAPS, k, 16);
	if (r < 0) {
		r = vol_merr(r);
		goto exit;
	}
	rec.flags |= VOL_F_GC_PENDING;
	rec.gc_cursor = 0;
	r = vol_rec_put(t, id, &rec);
	if (r == 0)
		r = state_refresh(p, t, id);
exit:
	meta_end(t);
	return r;
}

int vol_rollback(struct vol_pool *p, const char *vol, const char *snap)
{
	struct lvl head[VOL_CHAIN_MAX], sv[VOL_CHAIN_MAX];
	struct ents e = { 0 };
	struct meta_txn *t;
	struct vol_rec rec;
	struct snap_rec s;
	uint64_t id, ep, sn, last = UINT64_MAX;
	size_t i;
	int nh, ns, r;

	if ((r = check_name("volume", vol)) < 0 ||
	    (r = check_name("snapshot", snap)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_snap_find(t, vol, snap, &id, &rec, &ep, &s);
	if (r == 0)
		r = chain_build(t, id, &rec, rec.cur_epoch, head, &nh);
	if (r == 0)
		r = chain_build(t, id, &rec, ep, sv, &ns);
	/* Only chunks with an entry newer than the snapshot can differ. */
	if (r == 0)
		r = map_collect(t, id, 0, UINT64_MAX, UINT64_MAX, &e);
	sn = r == 0 ? s.size / rec.chunk_size : 0;
	for (i = 0; r == 0 && i < e.n; i++) {
		struct hit hh, hs;
		uint64_t c = e.a[i].chunk;

		if (e.a[i].epoch <= ep || c == last)
			continue;
		last = c;
		r = chain_lookup(t, head, nh, c, &hh);
		if (r == 0 && c < sn)
			r = chain_lookup(t, sv, ns, c, &hs);
		else
			hs.obj = 0;
		if (r == 0 && hh.obj != hs.obj)
			r = map_set(p, t, id, c, rec.cur_epoch, hs.obj, true);
	}
	if (r == 0) {
		rec.size = s.size;
		r = vol_rec_put(t, id, &rec);
	}
	if (r == 0)
		r = state_refresh(p, t, id);
	meta_end(t);
	free(e.a);
	return r;
}

int vol_clone(struct vol_pool *p, const char *vol, const char *snap,
	      const char *clone)
{
	struct lvl chain[VOL_CHAIN_MAX];
	struct meta_txn *t;
	struct vol_rec rec, c;
	struct snap_rec s;
	uint64_t id, ep;
	int r, n;

	if ((r = check_name("volume", vol)) < 0 ||
	    (r = check_name("snapshot", snap)) < 0 ||
	    (r = check_name("volume", clone)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_snap_find(t, vol, snap, &id, &rec, &ep, &s);
	if (r == 0)
		r = chain_build(t, id, &rec, ep, chain, &n);
	if (r == 0 && n >= VOL_CHAIN_MAX)
		r = vol_err(-ELOOP, "clone chain would be deeper than %d: flatten "
			    "'%s' first", VOL_CHAIN_MAX, vol);
	if (r == 0) {
		memset(&c, 0, sizeof(c));
		c.size = s.size;
		c.chunk_size = rec.chunk_size;
		c.parent = id;
		c.parent_epoch = ep;
		r = vol_insert(t, clone, &c);
	}
	meta_end(t);
	return r;
}

int vol_flatten(struct vol_pool *p, const char *name)
{
	struct lvl chain[VOL_CHAIN_MAX];
	struct meta_txn *t;
	struct vol_rec rec;
	uint64_t id, *c = NULL;
	size_t n = 0, i;
	int nc, r;

	if ((r = check_name("volume", name)) < 0)
		return r;
	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = vol_find(t, name, &id, &rec);
	if (r < 0 || !rec.parent)
		goto exit;
	r = chain_build(t, id, &rec, rec.cur_epoch, chain, &nc);
	if (r == 0)
		r = chain_chunks(t, chain + 1, nc - 1, 0, UINT64_MAX, &c, &n);
	/* Each origin-visible chunk gets an epoch-0 entry: visible wherever
	 * the clone had no entry of its own, exactly as the origin was — in
	 * every view, including snapshots larger than the head now is. */
	for (i = 0; r == 0 && i < n; i++) {
		struct hit h;

		r = chain_lookup(t, chain + 1, nc - 1, c[i], &h);
		if (r == 0 && h.obj)
			r = map_set(p, t, id, c[i], 0, h.obj, true);
	}
	if (r == 0) {
		rec.parent = 0;
		rec.parent_epoch = 0;
		r = vol_rec_put(t, id, &rec);
	}
	if (r == 0)
		r = state_refresh(p, t, id);
exit:
	meta_end(t);
	free(c);
	return r;
}

struct spec {
	uint64_t id;
	struct vol_rec rec;
	bool snap;
	uint64_t epoch, size;
};

static int spec_resolve(struct meta_txn *t, const char *s, struct spec *out)
{
	char vol[VOL_NAME_MAX + 1], snap[VOL_NAME_MAX + 1];
	struct snap_rec sr;
	int r;

	r = split_spec(s, vol, snap);
	if (r == 0)
		r = vol_find(t, vol, &out->id, &out->rec);
	if (r < 0)
		return r;
	out->snap = snap[0] != 0;
	if (!out->snap) {
		out->epoch = out->rec.cur_epoch;
		out->size = out->rec.size;
		return 0;
	}
	r = snap_find(t, out->id, vol, snap, &out->epoch, &sr);
	out->size = sr.size;
	return r;
}

int vol_diff(struct vol_pool *p, const char *from, const char *to,
	     struct vol_range **out, size_t *nout)
{
	struct lvl cf[VOL_CHAIN_MAX], ct[VOL_CHAIN_MAX];
	struct vol_range *ranges = NULL;
	struct spec a = { 0 }, b;
	struct meta_txn *t;
	uint64_t *c = NULL, lo, hi, cs;
	size_t n = 0, i, nr = 0;
	int nf = 0, nt, r;

	*out = NULL;
	*nout = 0;
	t = meta_rbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = spec_resolve(t, to, &b);
	if (r == 0 && from) {
		r = spec_resolve(t, from, &a);
		if (r == 0 && a.id != b.id)
			r = vol_err(-EINVAL, "diff needs two views of one volume "
				    "('%s', '%s')", from, to);
	}
	if (r < 0)
		goto exit;
	cs = b.rec.chunk_size;
	r = chain_build(t, b.id, &b.rec, b.epoch, ct, &nt);
	if (r == 0 && from)
		r = chain_build(t, a.id, &a.rec, a.epoch, cf, &nf);
	if (r < 0)
		goto exit;
	if (from) {
		/* Only own entries with an epoch between the two can differ. */
		struct ents e = { 0 };

		lo = MIN(a.epoch, b.epoch);
		hi = MAX(a.epoch, b.epoch);
		r = map_collect(t, b.id, 0, b.size / cs, hi, &e);
		if (r == 0 && !(c = malloc((e.n ? e.n : 1) * sizeof(*c))))
			r = vol_err(-ENOMEM, "out of memory");
		for (i = 0; r == 0 && i < e.n; i++)
			if (e.a[i].epoch > lo && (n == 0 || c[n - 1] != e.a[i].chunk))
				c[n++] = e.a[i].chunk;
		free(e.a);
		/* a size change alone (grown view) is not a content change */
	} else {
		r = chain_chunks(t, ct, nt, 0, b.size / cs, &c, &n);
	}
	if (r == 0 && !(ranges = malloc((n ? n : 1) * sizeof(*ranges))))
		r = vol_err(-ENOMEM, "out of memory");
	for (i = 0; r == 0 && i < n; i++) {
		struct hit ha = { 0 }, hb;

		r = chain_lookup(t, ct, nt, c[i], &hb);
		if (r == 0 && from && c[i] < a.size / cs)
			r = chain_lookup(t, cf, nf, c[i], &ha);
		if (r < 0 || ha.obj == hb.obj)
			continue;
		if (nr && ranges[nr - 1].off + ranges[nr - 1].len == c[i] * cs)
			ranges[nr - 1].len += cs;
		else
			ranges[nr++] = (struct vol_range){ c[i] * cs, cs };
	}
exit:
	meta_end(t);
	free(c);
	if (r < 0) {
		free(ranges);
		return r;
	}
	*out = ranges;
	*nout = nr;
	return 0;
}

/* used / exclusive of the objects held by a volume's own entries e (all
 * its views, or only the snapshot at `epoch`). */
static int du_objects(struct meta_txn *t, const struct ents *e, bool snap,
		      uint64_t epoch, const uint64_t *ep, size_t nep,
		      uint64_t cs, struct vol_du *out)
{
	uint64_t *objs, *shared;
	size_t nobj = 0, nsh = 0, i, j;
	int r = 0;

	objs = malloc((e->n ? e->n : 1) * sizeof(*objs));
	shared = malloc((e->n ? e->n : 1) * sizeof(*shared));
	if (!objs || !shared) {
		free(objs);
		free(shared);
		return vol_err(-ENOMEM, "out of memory");
	}
	for (i = 0; i < e->n; i++) {
		const struct ent *x = &e->a[i];
		uint64_t next = (i + 1 < e->n && e->a[i + 1].chunk == x->chunk) ?
				e->a[i + 1].epoch : UINT64_MAX;
		bool other;

		if (!x->obj)
			continue;
		if (!snap) {
			objs[nobj++] = x->obj;
			continue;
		}
		if (!(x->epoch <= epoch && epoch < next))
			continue;
		objs[nobj++] = x->obj;
		/* also visible to another live epoch (snapshot or head)? */
		other = next == UINT64_MAX;
		for (j = 0; j < nep && !other; j++)
			if (ep[j] != epoch && ep[j] >= x->epoch && ep[j] < next)
				other = true;
		if (other)
			shared[nsh++] = x->obj;
	}
	qsort(objs, nobj, sizeof(*objs), cmp_u64);
	qsort(shared, nsh, sizeof(*shared), cmp_u64);
	for (i = 0; i < nobj && r == 0;) {
		struct obj_rec o;
		size_t run = 1;

		while (i + run < nobj && objs[i + run] == objs[i])
			run++;
		out->used += cs;
		r = obj_get(t, objs[i], &o);
		if (r == 0 && o.refcount == run &&
		    !bsearch(&objs[i], shared, nsh, sizeof(*shared), cmp_u64))
			out->exclusive += cs;
		i += run;
	}
	free(objs);
	free(shared);
	return r;
}

int vol_du(struct vol_pool *p, const char *spec, struct vol_du *out)
{
	struct lvl chain[VOL_CHAIN_MAX];
	struct ents e = { 0 };
	struct meta_txn *t;
	struct spec s;
	uint64_t *ep = NULL, *c = NULL, cs;
	size_t nep = 0, nc = 0, i;
	int n, r;

	memset(out, 0, sizeof(*out));
	t = meta_rbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	r = spec_resolve(t, spec, &s);
	if (r < 0)
		goto exit;
	cs = s.rec.chunk_size;
	out->logical = s.size;
	r = chain_build(t, s.id, &s.rec, s.epoch, chain, &n);
	if (r == 0)
		r = chain_chunks(t, chain, n, 0, s.size / cs, &c, &nc);
	for (i = 0; r == 0 && i < nc; i++) {
		struct hit h;

		r = chain_lookup(t, chain, n, c[i], &h);
		if (r == 0 && h.obj)
			out->provisioned += cs;
	}
	if (r == 0)
		r = map_collect(t, s.id, 0, UINT64_MAX, UINT64_MAX, &e);
	if (r == 0)
		r = snap_epochs(t, s.id, &ep, &nep);
	if (r < 0)
		goto exit;
	out->map_entries = e.n;
	r = du_objects(t, &e, s.snap, s.epoch, ep, nep, cs, out);
	out->stored = out->used / p->k * (p->k + p->mm);
exit:
	meta_end(t);
	free(e.a);
	free(ep);
	free(c);
	return r;
}

/* Examine entries of one volume from its gc cursor; deletes those no live
 * epoch sees.  *left is decremented per entry examined. */
static int gc_volume(struct vol_pool *p, struct meta_txn *t, uint64_t id,
		     struct vol_rec *rec, uint64_t *left)
{
	struct ents e = { 0 };
	uint64_t *ep = NULL, chunk = rec->gc_cursor;
	size_t nep = 0, i;
	int r;

	r = snap_epochs(t, id, &ep, &nep);
	while (r == 0 && *left) {
		uint8_t k[24], kout[24];
		size_t kl;
		uint64_t obj;

		/* next chunk with entries */
		mapkey(k, id, chunk, 0);
		r = meta_seek_prefix(t, META_T_MAP, META_GE, k, 24, 8, kout, 24, &kl,
				     &obj, 8);
		if (r == -ENOENT || (r >= 0 && be64get(kout) != id)) {
			r = 0;
			chunk = UINT64_MAX;
			break;
		}
		if (r < 0) {
			r = vol_merr(r);
			break;
		}
		chunk = be64get(kout + 8);
		e.n = 0;
		r = map_collect(t, id, chunk, chunk + 1, UINT64_MAX, &e);
		{
			bool leading = !rec->parent;    /* nothing below yet */

			for (i = 0; r == 0 && i < e.n; i++) {
				bool dead = i + 1 < e.n &&
					    !epoch_in(ep, nep, e.a[i].epoch, e.a[i + 1].epoch);

				/* a hole entry with nothing below reads the same
				 * as no entry */
				if (dead || (leading && !e.a[i].obj))
					r = map_del(p, t, id, chunk, e.a[i].epoch, e.a[i].obj);
				else
					leading = false;
			}
		}
		*left -= MIN(*left, e.n ? e.n : 1);
		if (chunk == UINT64_MAX - 1) {
			chunk = UINT64_MAX;
			break;
		}
		chunk++;
	}
	free(e.a);
	free(ep);
	if (r < 0)
		return r;
	if (chunk == UINT64_MAX) {
		rec->flags &= ~VOL_F_GC_PENDING;
		rec->gc_cursor = 0;
	} else {
		rec->gc_cursor = chunk;
	}
	r = vol_rec_put(t, id, rec);
	if (r == 0)
		r = state_refresh(p, t, id);
	return r;
}

int vol_gc(struct vol_pool *p, uint64_t budget)
{
	struct meta_txn *t;
	uint8_t k[8], kout[8];
	uint64_t left = budget ? budget : 1;
	bool more = false;
	size_t kl;
	int r;

	t = meta_wbegin(p->m);
	if (!t)
		return vol_merr(-EIO);
	be64put(k, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct vol_rec rec;

		r = meta_seek(t, META_T_VOLS, how, k, 8, kout, 8, &kl, &rec, sizeof(rec));
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0) {
			r = vol_merr(r);
			break;
		}
		memcpy(k, kout, 8);
		if (r != sizeof(rec) || !(rec.flags & VOL_F_GC_PENDING))
			continue;
		if (!left) {
			more = true;
			r = 0;
			break;
		}
		r = gc_volume(p, t, be64get(kout), &rec, &left);
		if (r < 0)
			break;
		if (rec.flags & VOL_F_GC_PENDING)
			more = true;
	}
	meta_end(t);
	return r < 0 ? r : more;
}

/* ----------------------------------------------------- check and dump -- */

int vol_check(struct vol_pool *p)
{
	struct meta_txn *t = meta_rbegin(p->m);
	uint8_t k[24], kout[24];
	uint64_t *refs = NULL, v, last_vol = 0;
	size_t nref = 0, cap = 0, kl, i = 0;
	int r;

	if (!t)
		return vol_merr(-EIO);
	/* every map entry's volume exists; collect referenced objects */
	memset(k, 0, sizeof(k));
	for (enum meta_seek how = META_GE;; how = META_GT) {
		static __thread struct vol_rec rec;

		r = meta_seek(t, META_T_MAP, how, k, 24, kout, 24, &kl, &v, 8);
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0 || kl != 24 || r != 8) {
			r = r < 0 ? vol_merr(r) : vol_err(-EUCLEAN, "corrupt map entry");
			goto exit;
		}
		memcpy(k, kout, 24);
		if (be64get(kout) != last_vol)
			r = vol_rec_get(t, be64get(kout), &rec);
		last_vol = be64get(kout);
		if (r < 0) {
			r = vol_err(-EUCLEAN, "map entry of missing volume %" PRIu64,
				    be64get(kout));
			goto exit;
		}
		if (!v)
			continue;
		if (nref == cap) {
			uint64_t *nr = realloc(refs, (cap = cap ? 2 * cap : 256) * 8);

			if (!nr) {
				r = vol_err(-ENOMEM, "out of memory");
				goto exit;
			}
			refs = nr;
		}
		refs[nref++] = v;
	}
	if (nref)
		qsort(refs, nref, 8, cmp_u64);
	/* walk objs and refs together */
	memset(k, 0, 8);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct obj_rec o;
		uint64_t id, cnt = 0;
		uint8_t gk[8];

		r = meta_seek(t, META_T_OBJS, how, k, 8, kout, 8, &kl, &o, sizeof(o));
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0 || r != sizeof(o)) {
			r = r < 0 ? vol_merr(r) : vol_err(-EUCLEAN, "corrupt object record");
			goto exit;
		}
		memcpy(k, kout, 8);
		id = be64get(kout);
		if (i < nref && refs[i] < id) {
			r = vol_err(-EUCLEAN, "map references missing object %" PRIu64,
				    refs[i]);
			goto exit;
		}
		while (i < nref && refs[i] == id) {
			cnt++;
			i++;
		}
		if (cnt != o.refcount) {
			r = vol_err(-EUCLEAN, "object %" PRIu64 " has refcount %" PRIu64
				    " but %" PRIu64 " map entries", id, o.refcount, cnt);
			goto exit;
		}
		be64put(gk, id);
		if (meta_get(t, META_T_GC, gk, 8, NULL, 0) >= 0) {
			r = vol_err(-EUCLEAN, "object %" PRIu64 " is live and in gc", id);
			goto exit;
		}
	}
	if (i < nref) {
		r = vol_err(-EUCLEAN, "map references missing object %" PRIu64, refs[i]);
		goto exit;
	}
	/* clone origins and names */
	memset(k, 0, 8);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		struct vol_rec rec, pr;
		uint8_t nv[8], sk[16];

		r = meta_seek(t, META_T_VOLS, how, k, 8, kout, 8, &kl, &rec, sizeof(rec));
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r < 0 || r != sizeof(rec)) {
			r = r < 0 ? vol_merr(r) : vol_err(-EUCLEAN, "corrupt volume record");
			goto exit;
		}
		memcpy(k, kout, 8);
		rec.name[VOL_NAME_MAX] = 0;
		if (meta_get(t, META_T_NAMES, rec.name, strlen(rec.name), nv, 8) != 8 ||
		    memcmp(nv, kout, 8)) {
			r = vol_err(-EUCLEAN, "volume '%s' has no name record", rec.name);
			goto exit;
		}
		if (!rec.parent)
			continue;
		snapkey(sk, rec.parent, rec.parent_epoch);
		if (vol_rec_get(t, rec.parent, &pr) < 0 ||
		    meta_get(t, META_T_SNAPS, sk, 16, NULL, 0) < 0) {
			r = vol_err(-EUCLEAN, "origin of clone '%s' is missing", rec.name);
			goto exit;
		}
	}
	r = 0;
exit:
	meta_end(t);
	free(refs);
	return r;
}

int vol_dump(struct vol_pool *p, FILE *f)
{
	static const enum meta_table tabs[] = {
		META_T_VOLS, META_T_NAMES, META_T_SNAPS, META_T_MAP, META_T_OBJS,
		META_T_GC,
	};
	struct meta_txn *t = meta_rbegin(p->m);
	uint8_t k[512], kout[512], v[512];
	size_t kl, ti;
	int r = 0;

	if (!t)
		return vol_merr(-EIO);
	for (ti = 0; ti < ARRAY_SIZE(tabs) && r == 0; ti++) {
		size_t klen = 0;

		for (enum meta_seek how = META_GE;; how = META_GT) {
			r = meta_seek(t, tabs[ti], how, k, klen, kout, sizeof(kout),
				      &kl, v, sizeof(v));
			if (r == -ENOENT) {
				r = 0;
				break;
			}
			if (r < 0) {
				r = vol_merr(r);
				break;
			}
			memcpy(k, kout, kl);
			klen = kl;
			switch (tabs[ti]) {
			case META_T_VOLS: {
				struct vol_rec rec;

				memcpy(&rec, v, sizeof(rec));
				rec.name[VOL_NAME_MAX] = 0;
				fprintf(f, "vol %" PRIu64 " %s size=%" PRIu64 " chunk=%" PRIu64
					" epoch=%" PRIu64 " parent=%" PRIu64 "@%" PRIu64
					" flags=%u gc=%" PRIu64 "\n", be64get(kout), rec.name,
					rec.size, rec.chunk_size, rec.cur_epoch, rec.parent,
					rec.parent_epoch, rec.flags, rec.gc_cursor);
				break;
			}
			case META_T_NAMES:
				fprintf(f, "name %.*s %" PRIu64 "\n", (int)kl, (char *)kout,
					be64get(v));
				break;
			case META_T_SNAPS: {
				struct snap_rec s;

				memcpy(&s, v, sizeof(s));
				s.name[VOL_NAME_MAX] = 0;
				fprintf(f, "snap %" PRIu64 "@%" PRIu64 " %s size=%" PRIu64 "\n",
					be64get(kout), be64get(kout + 8), s.name, s.size);
				break;
			}
			case META_T_MAP: {
				uint64_t o;

				memcpy(&o, v, 8);
				fprintf(f, "map %" PRIu64 " %" PRIu64 " %" PRIu64 " -> %" PRIu64
					"\n", be64get(kout), be64get(kout + 8),
					be64get(kout + 16), o);
				break;
			}
			case META_T_OBJS: {
				struct obj_rec o;

				memcpy(&o, v, sizeof(o));
				fprintf(f, "obj %" PRIu64 " ref=%" PRIu64 " base=%" PRIu64 "\n",
					be64get(kout), o.refcount, o.base);
				break;
			}
			default:
				fprintf(f, "gc %" PRIu64 "\n", be64get(kout));
				break;
			}
		}
	}
	meta_end(t);
	return r;
}

/* ------------------------------------------------------------------ 5 -- */

int vol_view_open(struct vol_pool *p, const char *spec, struct vol_view **out)
{
	struct vol_view *v;
	struct vol_state *st;
	struct meta_txn *t;
	struct spec s;
	int r;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return vol_err(-ENOMEM, "out of memory");
	t = meta_wbegin(p->m);
	if (!t) {
		free(v);
		return vol_merr(-EIO);
	}
	r = spec_resolve(t, spec, &s);
	if (r < 0)
		goto exit;
	pthread_mutex_lock(&p->lock);
	for (st = p->states; st; st = st->next)
		if (st->id == s.id)
			break;
	if (!st) {
		st = calloc(1, sizeof(*st));
		if (!st) {
			pthread_mutex_unlock(&p->lock);
			r = vol_err(-ENOMEM, "out of memory");
			goto exit;
		}
		st->id = s.id;
		st->rec = s.rec;
		r = chain_build(t, s.id, &s.rec, s.rec.cur_epoch, st->chain, &st->nchain);
		if (r < 0) {
			pthread_mutex_unlock(&p->lock);
			free(st);
			goto exit;
		}
		st->next = p->states;
		p->states = st;
	}
	st->nviews++;
	v->p = p;
	v->st = st;
	v->snap = s.snap;
	v->epoch = s.epoch;
	v->size = s.size;
	v->next = p->views;
	p->views = v;
	pthread_mutex_unlock(&p->lock);
exit:
	meta_end(t);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	return 0;
}

void vol_view_close(struct vol_view *v)
{
	struct vol_pool *p;
	struct vol_view **vp;
	struct vol_state **sp;

	if (!v)
		return;
	p = v->p;
	pthread_mutex_lock(&p->lock);
	for (vp = &p->views; *vp; vp = &(*vp)->next)
		if (*vp == v) {
			*vp = v->next;
			break;
		}
	if (--v->st->nviews == 0) {
		for (sp = &p->states; *sp; sp = &(*sp)->next)
			if (*sp == v->st) {
				*sp = v->st->next;
				break;
			}
		free(v->st);
	}
	pthread_mutex_unlock(&p->lock);
	free(v);
}

uint64_t vol_view_size(const struct vol_view *v)
{
	return v->snap ? v->size : v->st->rec.size;
}

uint64_t vol_view_chunk_size(const struct vol_view *v)
{
	return v->st->rec.chunk_size;
}

bool vol_view_readonly(const struct vol_view *v)
{
	return v->snap;
}

/* The view's chain at its epoch (copied: the state may change after the
 * section ends). */
static int view_chain(const struct vol_view *v, struct lvl *chain)
{
	memcpy(chain, v->st->chain, (size_t)v->st->nchain * sizeof(*chain));
	chain[0].epoch = v->snap ? v->epoch : v->st->rec.cur_epoch;
	return v->st->nchain;
}

enum { IO_READ, IO_WRITE, IO_ZERO, IO_FLUSH };

struct vol_sub {
	struct objstore_io sio;
	struct vol_io *io;
};

static void vol_io_finish(struct vol_io *io, int res)
{
	free(io->subs);
	io->subs = NULL;
	io->cb(io, res);
}

static void vol_mflush_done(struct meta_flush *f, int res)
{
	struct vol_io *io = container_of(f, struct vol_io, mf);

	vol_io_finish(io, res < 0 ? -EIO : 0);
}

static void vol_sflush_done(struct objstore_io *sio, int res)
{
	struct vol_io *io = container_of(sio, struct vol_io, fio);

	if (res < 0) {
		vol_io_finish(io, res);
		return;
	}
	io->mf.loop = io->loop;
	io->mf.cb = vol_mflush_done;
	meta_flush(io->view->p->m, &io->mf);
}

static void vol_start_flush(struct vol_io *io)
{
	memset(&io->fio, 0, sizeof(io->fio));
	io->fio.loop = io->loop;
	io->fio.cb = vol_sflush_done;
	objstore_flush(io->view->p->store, &io->fio);
}

static void vol_io_settle(struct vol_io *io)
{
	if (io->pending)
		return;
	if (io->err == 0 && io->kind != IO_READ && (io->flags & VOL_IO_FUA)) {
		free(io->subs);
		io->subs = NULL;
		vol_start_flush(io);
		return;
	}
	vol_io_finish(io, io->err);
}

static void vol_sub_done(struct objstore_io *sio, int res)
{
	struct vol_sub *s = container_of(sio, struct vol_sub, sio);
	struct vol_io *io = s->io;

	if (res < 0 && !io->err)
		io->err = res;
	io->pending--;
	vol_io_settle(io);
}

static void vol_nop_done(struct loop_op *op, int res, uint32_t flags)
{
	struct vol_io *io = container_of(op, struct vol_io, op);

	(void)res;
	(void)flags;
	io->pending--;
	vol_io_settle(io);
}

/* Complete io later on its loop (never inline). */
static void vol_io_defer(struct vol_io *io, int err)
{
	if (err && !io->err)
		io->err = err;
	io->pending++;
	io->op.cb = vol_nop_done;
	loop_sqe(io->loop, &io->op);
}

/* A data I/O's walk over the chunks of its range: one meta section over
 * the view's chain, and the sub-I/Os handed to the store so far. */
struct vol_walk {
	struct vol_view *v;
	struct vol_io *io;
	struct meta_txn *t;
	struct lvl chain[VOL_CHAIN_MAX];
	int n;                  /* levels in chain */
	unsigned used;          /* of io->subs */
};

/* One chunk's part of a walk: [in, in+len) of chunk, which is byte pos of
 * the I/O's range.  0 or -errno (ends the walk). */
typedef int vol_chunk_fn(struct vol_walk *w, uint64_t chunk, uint64_t in, uint64_t len,
			 uint64_t pos);

/* The next sub-I/O of w's I/O, for [off, off+len) of obj (over base). */
static struct objstore_io *vol_sub_add(struct vol_walk *w, uint64_t obj, uint64_t base,
				       uint64_t off, uint64_t len, void *buf)
{
	struct vol_io *io = w->io;
	struct vol_sub *s = (struct vol_sub *)io->subs + w->used++;

	memset(s, 0, sizeof(*s));
	s->io = io;
	s->sio.loop = io->loop;
	s->sio.cb = vol_sub_done;
	s->sio.obj = obj;
	s->sio.base = base;
	s->sio.off = off;
	s->sio.len = len;
	s->sio.buf = buf;
	io->pending++;
	return &s->sio;
}

/* Validate and prepare; returns the number of chunks or -errno. */
static int64_t vol_io_prep(struct vol_view *v, struct vol_io *io, int kind,
			   uint64_t size)
{
	uint64_t cs = v->st->rec.chunk_size;

	io->view = v;
	io->kind = kind;
	io->err = 0;
	io->pending = 0;
	io->subs = NULL;
	if (kind != IO_READ && v->snap)
		return vol_err(-EROFS, "snapshot views are read-only");
	if (io->off > size || io->len > size - io->off)
		return vol_err(-EINVAL, "range %" PRIu64 "+%" PRIu64 " past the end (%"
			       PRIu64 ")", io->off, io->len, size);
	if (io->len == 0)
		return 0;
	return (int64_t)((io->off + io->len - 1) / cs - io->off / cs + 1);
}

/* Open the meta section an I/O runs in (read or write, by kind), validate
 * io and allocate its per-chunk records.  NULL when io was already handed
 * to vol_io_defer() (an error, or an empty range): the caller just returns. */
static struct meta_txn *vol_io_begin(struct vol_view *v, struct vol_io *io, int kind)
{
	struct meta_txn *t;
	int64_t nch;

	t = kind == IO_READ ? meta_rbegin(v->p->m) : meta_wbegin(v->p->m);
	if (!t) {
		io->view = v;
		io->pending = 0;
		io->subs = NULL;
		io->kind = kind;
		io->err = 0;
		vol_io_defer(io, -EIO);
		return NULL;
	}
	nch = vol_io_prep(v, io, kind, vol_view_size(v));
	if (nch > 0 && !(io->subs = calloc((size_t)nch, sizeof(struct vol_sub))))
		nch = -ENOMEM;
	if (nch <= 0) {
		meta_end(t);
		vol_io_defer(io, (int)MIN(nch, 0));
		return NULL;
	}
	return t;
}

/* Run step on each chunk of io's range in one meta section (read or write
 * by kind), up to the first error.  Returns that error or 0 — io still to
 * be completed by the caller — or 1 when io was already completed (a bad
 * or empty range, no section). */
static int vol_walk(struct vol_view *v, struct vol_io *io, int kind, vol_chunk_fn *step)
{
	struct vol_walk w = { .v = v, .io = io };
	uint64_t cs, off;
	int r = 0;

	w.t = vol_io_begin(v, io, kind);
	if (!w.t)
		return 1;
	cs = v->st->rec.chunk_size;
	w.n = view_chain(v, w.chain);
	for (off = io->off; off < io->off + io->len && r == 0;) {
		uint64_t in = off % cs, len = MIN(cs - in, io->off + io->len - off);

		r = step(&w, off / cs, in, len, off - io->off);
		off += len;
	}
	meta_end(w.t);
	return r;
}

/* Read a chunk from the first level of the chain that maps it; zeroes
 * when none does. */
static int vol_chunk_read(struct vol_walk *w, uint64_t chunk, uint64_t in, uint64_t len,
			  uint64_t pos)
{
	uint8_t *dst = (uint8_t *)w->io->buf + pos;
	struct hit h;
	int r = chain_lookup(w->t, w->chain, w->n, chunk, &h);

	if (r < 0)
		return r;
	if (!h.obj)
		memset(dst, 0, len);
	else
		objstore_read(w->v->p->store, vol_sub_add(w, h.obj, 0, in, len, dst));
	return 0;
}

/* Bring a mapped chunk into the cache (no buffer). */
static int vol_chunk_prefetch(struct vol_walk *w, uint64_t chunk, uint64_t in,
			      uint64_t len, uint64_t pos)
{
	struct hit h;
	int r = chain_lookup(w->t, w->chain, w->n, chunk, &h);

	if (r == 0 && h.obj)
		objstore_prefetch(w->v->p->store, vol_sub_add(w, h.obj, 0, in, len, NULL));
	return r;
}

void vol_read(struct vol_view *v, struct vol_io *io)
{
	int r = vol_walk(v, io, IO_READ, vol_chunk_read);

	if (r <= 0)
		vol_io_defer(io, r < 0 ? -EIO : 0);
}

void vol_prefetch(struct vol_view *v, struct vol_io *io)
{
	int r = vol_walk(v, io, IO_READ, vol_chunk_prefetch);

	if (r <= 0)
		vol_io_defer(io, r < 0 ? -EIO : 0);
}

/* Head write / zero of [in, in+len) of one chunk, in a write section. */
static int vol_chunk_modify(struct vol_walk *w, uint64_t chunk, uint64_t in, uint64_t len,
			    uint64_t pos)
{
	struct vol_view *v = w->v;
	struct vol_pool *p = v->p;
	struct meta_txn *t = w->t;
	const struct lvl *chain = w->chain;
	int n = w->n;
	uint64_t cs = v->st->rec.chunk_size, E = chain[0].epoch, obj = 0, base;
	bool whole = in == 0 && len == cs;
	bool zero = w->io->kind == IO_ZERO;
	struct objstore_io *sio;
	struct obj_rec o;
	struct hit h;
	int r;

	r = chain_lookup(t, chain, n, chunk, &h);
	if (r < 0)
		return r;
	if (zero && !h.obj)
		return 0;                       /* already reads as zeros */
	if (zero && whole)
		return head_hole(p, t, chain, n, chunk, &h);
	if (h.obj && h.level == 0 && h.epoch == E) {
		r = obj_get(t, h.obj, &o);
		if (r < 0)
			return r;
		if (o.refcount == 1) {
			obj = h.obj;            /* private: in place */
			base = o.base;
			goto submit;
		}
	}
	base = whole ? 0 : h.obj;
	r = obj_new(t, base, v->st->id, &obj);
	if (r == 0)
		r = map_set(p, t, v->st->id, chunk, E, obj, false);
	if (r < 0)
		return r;
submit:
	sio = vol_sub_add(w, obj, base, in, len, zero ? NULL : (uint8_t *)w->io->buf + pos);
	if (zero)
		objstore_zero(p->store, sio);
	else
		objstore_write(p->store, sio);
	return 0;
}

static void vol_modify(struct vol_view *v, struct vol_io *io, int kind)
{
	int r = vol_walk(v, io, kind, vol_chunk_modify);

	if (r > 0)
		return;
	if (r < 0)
		log_error("vol: %s", vol_last_error());
	vol_io_defer(io, r < 0 ? (r == -ENOMEM ? -ENOMEM : -EIO) : 0);
}

void vol_write(struct vol_view *v, struct vol_io *io)
{
	vol_modify(v, io, IO_WRITE);
}

void vol_zero(struct vol_view *v, struct vol_io *io)
{
	vol_modify(v, io, IO_ZERO);
}

void vol_trim(struct vol_view *v, struct vol_io *io)
{
	vol_modify(v, io, IO_ZERO);
}

void vol_flush(struct vol_view *v, struct vol_io *io)
{
	io->view = v;
	io->kind = IO_FLUSH;
	io->err = 0;
	io->pending = 0;
	io->subs = NULL;
	vol_start_flush(io);
}

int vol_block_status(struct vol_view *v, uint64_t off, uint64_t len,
		     struct vol_extent *ext, size_t max)
{
	struct lvl chain[VOL_CHAIN_MAX];
	struct meta_txn *t;
	uint64_t cs = v->st->rec.chunk_size, end;
	size_t ne = 0;
	int n, r = 0;

	if (max == 0)
		return vol_err(-EINVAL, "no room for extents");
	t = meta_rbegin(v->p->m);
	if (!t)
		return vol_merr(-EIO);
	if (off > vol_view_size(v) || len > vol_view_size(v) - off || len == 0) {
		meta_end(t);
		return vol_err(-EINVAL, "range %" PRIu64 "+%" PRIu64 " past the end",
			       off, len);
	}
	n = view_chain(v, chain);
	end = off + len;
	while (off < end) {
		uint64_t l = MIN(cs - off % cs, end - off);
		uint32_t fl;
		struct hit h;

		r = chain_lookup(t, chain, n, off / cs, &h);
		if (r < 0)
			break;
		fl = h.obj ? 0 : VOL_EXT_HOLE;
		if (ne && ext[ne - 1].flags == fl) {
			ext[ne - 1].len += l;
		} else {
			if (ne == max)
				break;
			ext[ne++] = (struct vol_extent){ l, fl };
		}
		off += l;
	}
	meta_end(t);
	return r < 0 ? r : (int)ne;
}
