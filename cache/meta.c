/*
 * meta.c — the pool's metadata store: LMDB + an in-memory staging overlay +
 * a committer thread (group commit).
 *
 * Layers of truth, newest first:
 *
 *     open batch        skiplist per table; meta_put/meta_del land here
 *     committing batch  the batch the committer is writing (or NULL)
 *     LMDB              what is durable
 *
 * Every read (meta_get / meta_seek) merges the three: for a key present in
 * several, the newest wins; a staged delete is a tombstone that hides older
 * layers.  Seeks are merged the same way (candidate from each layer, pick
 * the nearest, skip tombstones by seeking strictly past them).
 *
 * Locking.  `rw` (a rwlock) guards the batches: read sections hold it
 * shared, write sections and the committer's swap/free hold it exclusive.
 * A read section renews its LMDB read txn AFTER taking the lock, so a batch
 * freed after its commit is always visible in LMDB to any later section.
 * `mu` guards the flush waiters and the committer's wake-up state; order is
 * mu → rw (the committer swaps under both), never the reverse (meta_end
 * releases rw before it takes mu).
 *
 * Commit: the committer takes every waiting flush, swaps the open batch to
 * committing, writes it in one LMDB write txn (one fsync), frees it, runs
 * the commit hook, then completes the flushes on their loops.  A failed
 * commit merges the open batch into the failed one, which becomes the open
 * batch again: nothing staged is lost, the next commit retries it all, and
 * the waiters get the error.
 *
 * Id counter: "next_id" in the meta table is a high-water mark.  Ids are
 * handed out below it from memory; passing it stages a new mark a block
 * further in the same batch as the change that uses the id.
 */
#include "cache/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SKL_MAX_LEVEL 20

static const char *const meta_table_names[META_T_COUNT] = {
	"meta", "vols", "names", "snaps", "map", "objs", "gc", "intents",
	"cache_index",
};

struct skl_node {
	void *key;
	void *val;
	uint32_t klen, vlen;
	bool del;
	int level;
	struct skl_node *next[];
};

struct skl {
	struct skl_node *head;
	int level;
};

struct batch {
	struct skl tab[META_T_COUNT];
	uint64_t gen;
	uint64_t nops;
	uint64_t bytes;
	uint64_t rnd;
};

struct meta_txn {
	struct meta *m;
	MDB_txn *rtxn;
	MDB_cursor *cur[META_T_COUNT];
	bool cur_fresh[META_T_COUNT];
	bool write;
	struct meta_txn *next_free;
};

struct meta {
	MDB_env *env;
	MDB_dbi dbi[META_T_COUNT];
	int lock_fd;
	struct meta_opts opts;

	pthread_rwlock_t rw;
	struct batch *open;
	struct batch *committing;
	uint64_t next_id, id_hw;

	pthread_mutex_t pool_lock;
	struct meta_txn *free_txns;

	pthread_mutex_t mu;
	pthread_cond_t cond;          /* committer wake-up */
	pthread_cond_t sync_cond;     /* meta_sync() completions */
	struct meta_flush *waiters;
	bool kick, stop;
	uint64_t open_gen;            /* == open->gen, read under mu */
	pthread_t thread;
	bool thread_started;

	_Atomic uint64_t commits, commit_errors, staged_ops, seeks, gets;
	_Atomic uint64_t staged_bytes;
};

static __thread char meta_errbuf[256];
/* the section this thread has open (sections never nest on a thread) */
static __thread struct meta_txn *meta_cur;

const char *meta_last_error(void)
{
	return meta_errbuf[0] ? meta_errbuf : "no error";
}

__attribute__((format(printf, 2, 3)))
static int meta_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(meta_errbuf, sizeof(meta_errbuf), fmt, ap);
	va_end(ap);
	return err;
}

static int mdb_errno(int rc)
{
	if (rc == 0)
		return 0;
	if (rc > 0)
		return -rc;
	switch (rc) {
	case MDB_NOTFOUND:  return -ENOENT;
	case MDB_MAP_FULL:  return -ENOSPC;
	case MDB_READERS_FULL: return -EAGAIN;
	default:            return -EIO;
	}
}

/* ------------------------------------------------------------ skiplist -- */

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int skl_init(struct skl *s)
{
	s->head = calloc(1, sizeof(*s->head) +
			 SKL_MAX_LEVEL * sizeof(struct skl_node *));
	s->level = 1;
	return s->head ? 0 : -ENOMEM;
}

static void skl_free(struct skl *s)
{
	struct skl_node *n = s->head, *next;

	while (n) {
		next = n->next[0];
		if (n != s->head && n->val && n->val != (char *)n->key + n->klen)
			free(n->val);
		free(n);
		n = next;
	}
	s->head = NULL;
}

/* The last node whose key is < key (or <= key when `inclusive`), or the
 * head; fills update[] with the predecessor at each level when given. */
static struct skl_node *skl_pred(struct skl *s, const void *key, size_t klen,
				 bool inclusive, struct skl_node **update)
{
	struct skl_node *x = s->head;
	int lvl;

	for (lvl = s->level - 1; lvl >= 0; lvl--) {
		for (;;) {
			struct skl_node *n = x->next[lvl];
			int c;

			if (!n)
				break;
			c = key_cmp(n->key, n->klen, key, klen);
			if (c < 0 || (inclusive && c == 0))
				x = n;
			else
				break;
		}
		if (update)
			update[lvl] = x;
	}
	return x;
}

static struct skl_node *skl_seek(struct skl *s, enum meta_seek how,
				 const void *key, size_t klen)
{
	struct skl_node *x;

	switch (how) {
	case META_GE: return skl_pred(s, key, klen, false, NULL)->next[0];
	case META_GT: return skl_pred(s, key, klen, true, NULL)->next[0];
	case META_LE: x = skl_pred(s, key, klen, true, NULL); break;
	default:      x = skl_pred(s, key, klen, false, NULL); break;
	}
	return x == s->head ? NULL : x;
}

static struct skl_node *skl_find(struct skl *s, const void *key, size_t klen)
{
	struct skl_node *n = skl_pred(s, key, klen, false, NULL)->next[0];

	if (n && key_cmp(n->key, n->klen, key, klen) == 0)
		return n;
	return NULL;
}

/* Put (or tombstone when del) key; *grown = bytes added (0 when it
 * replaced an entry).  0 or -ENOMEM. */
static int skl_put(struct batch *b, struct skl *s, const void *key,
		   size_t klen, const void *val, size_t vlen, bool del,
		   uint64_t *grown)
{
	struct skl_node *update[SKL_MAX_LEVEL];
	struct skl_node *x, *n;
	int lvl, i;

	x = skl_pred(s, key, klen, false, update)->next[0];
	if (x && key_cmp(x->key, x->klen, key, klen) == 0) {
		void *nv = NULL;

		if (!del && vlen) {
			nv = malloc(vlen);
			if (!nv)
				return -ENOMEM;
			memcpy(nv, val, vlen);
		}
		*grown = 0;
		if (x->val != (char *)x->key + x->klen)
			free(x->val);
		x->val = nv;
		x->vlen = del ? 0 : (uint32_t)vlen;
		x->del = del;
		return 0;
	}
	for (lvl = 1; lvl < SKL_MAX_LEVEL; lvl++) {
		b->rnd ^= b->rnd << 13;
		b->rnd ^= b->rnd >> 7;
		b->rnd ^= b->rnd << 17;
		if (b->rnd & 3)
			break;
	}
	n = malloc(sizeof(*n) + (size_t)lvl * sizeof(n->next[0]) + klen +
		   (del ? 0 : vlen));
	if (!n)
		return -ENOMEM;
	n->level = lvl;
	n->key = (char *)&n->next[lvl];
	memcpy(n->key, key, klen);
	n->klen = (uint32_t)klen;
	n->val = (char *)n->key + klen;
	n->vlen = del ? 0 : (uint32_t)vlen;
	if (!del && vlen)
		memcpy(n->val, val, vlen);
	n->del = del;
	if (lvl > s->level) {
		for (i = s->level; i < lvl; i++)
			update[i] = s->head;
		s->level = lvl;
	}
	for (i = 0; i < lvl; i++) {
		n->next[i] = update[i]->next[i];
		update[i]->next[i] = n;
	}
	*grown = sizeof(*n) + (size_t)lvl * sizeof(void *) + klen + vlen;
	return 0;
}

static struct batch *batch_new(uint64_t gen)
{
	struct batch *b = calloc(1, sizeof(*b));
	int i;

	if (!b)
		return NULL;
	b->gen = gen;
	b->rnd = 0x9e3779b97f4a7c15ull ^ gen;
	for (i = 0; i < META_T_COUNT; i++) {
		if (skl_init(&b->tab[i]) < 0) {
			while (--i >= 0)
				skl_free(&b->tab[i]);
			free(b);
			return NULL;
		}
	}
	return b;
}

static void batch_free(struct batch *b)
{
	int i;

	if (!b)
		return;
	for (i = 0; i < META_T_COUNT; i++)
		skl_free(&b->tab[i]);
	free(b);
}

/* Apply every entry of src on top of dst (src newer).  -ENOMEM leaves dst
 * partly updated. */
static int batch_merge(struct batch *dst, struct batch *src)
{
	int i;

	for (i = 0; i < META_T_COUNT; i++) {
		struct skl_node *n;

		for (n = src->tab[i].head->next[0]; n; n = n->next[0]) {
			uint64_t g;
			int r = skl_put(dst, &dst->tab[i], n->key, n->klen,
					n->val, n->vlen, n->del, &g);
			if (r < 0)
				return r;
			dst->bytes += g;
		}
	}
	dst->nops += src->nops;
	dst->gen = src->gen;
	return 0;
}

/* -------------------------------------------------------- read sections -- */

static struct meta_txn *meta_txn_get(struct meta *m)
{
	struct meta_txn *t;
	int rc;

	pthread_mutex_lock(&m->pool_lock);
	t = m->free_txns;
	if (t)
		m->free_txns = t->next_free;
	pthread_mutex_unlock(&m->pool_lock);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			meta_err(-ENOMEM, "out of memory");
			return NULL;
		}
		t->m = m;
		rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &t->rtxn);
	} else {
		rc = mdb_txn_renew(t->rtxn);
	}
	if (rc) {
		meta_err(mdb_errno(rc), "metadata read txn: %s", mdb_strerror(rc));
		if (t->rtxn)
			mdb_txn_abort(t->rtxn);
		for (int i = 0; i < META_T_COUNT; i++)
			if (t->cur[i])
				mdb_cursor_close(t->cur[i]);
		free(t);
		return NULL;
	}
	for (int i = 0; i < META_T_COUNT; i++)
		t->cur_fresh[i] = false;
	return t;
}

static void meta_txn_put(struct meta_txn *t)
{
	struct meta *m = t->m;

	mdb_txn_reset(t->rtxn);
	pthread_mutex_lock(&m->pool_lock);
	t->next_free = m->free_txns;
	m->free_txns = t;
	pthread_mutex_unlock(&m->pool_lock);
}

/* Take m's lock (shared, or exclusive to write) and a pooled section. */
static struct meta_txn *meta_begin(struct meta *m, bool write)
{
	struct meta_txn *t;

	if (write)
		pthread_rwlock_wrlock(&m->rw);
	else
		pthread_rwlock_rdlock(&m->rw);
	t = meta_txn_get(m);
	if (!t) {
		pthread_rwlock_unlock(&m->rw);
		return NULL;
	}
	t->write = write;
	meta_cur = t;
	return t;
}

struct meta_txn *meta_rbegin(struct meta *m)
{
	return meta_begin(m, false);
}

struct meta_txn *meta_wbegin(struct meta *m)
{
	return meta_begin(m, true);
}

struct meta_txn *meta_thread_txn(struct meta *m)
{
	return meta_cur && meta_cur->m == m ? meta_cur : NULL;
}

bool meta_txn_is_write(const struct meta_txn *t)
{
	return t->write;
}

void meta_end(struct meta_txn *t)
{
	struct meta *m = t->m;
	bool kick = false;

	if (t->write)
		kick = m->open->bytes >= m->opts.commit_bytes;
	if (meta_cur == t)
		meta_cur = NULL;
	meta_txn_put(t);
	pthread_rwlock_unlock(&m->rw);
	if (kick) {
		pthread_mutex_lock(&m->mu);
		m->kick = true;
		pthread_cond_signal(&m->cond);
		pthread_mutex_unlock(&m->mu);
	}
}

static MDB_cursor *meta_cursor(struct meta_txn *t, enum meta_table tb, int *err)
{
	int rc;

	if (!t->cur[tb]) {
		rc = mdb_cursor_open(t->rtxn, t->m->dbi[tb], &t->cur[tb]);
		t->cur_fresh[tb] = true;
	} else if (!t->cur_fresh[tb]) {
		rc = mdb_cursor_renew(t->rtxn, t->cur[tb]);
		t->cur_fresh[tb] = true;
	} else {
		rc = 0;
	}
	if (rc) {
		*err = meta_err(mdb_errno(rc), "metadata cursor: %s",
				mdb_strerror(rc));
		return NULL;
	}
	return t->cur[tb];
}

/* One layer's candidate for a seek. */
struct cand {
	const void *key, *val;
	size_t klen, vlen;
	bool del;
	bool valid;
};

static int lmdb_seek(struct meta_txn *t, enum meta_table tb, enum meta_seek how,
		     const void *key, size_t klen, struct cand *c)
{
	MDB_cursor *cur;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key }, v;
	int err = 0, rc;

	c->valid = false;
	cur = meta_cursor(t, tb, &err);
	if (!cur)
		return err;
	atomic_fetch_add_explicit(&t->m->seeks, 1, memory_order_relaxed);
	if (klen == 0) {                /* LMDB refuses empty keys */
		if (how == META_LE || how == META_LT)
			return 0;
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		how = META_GE;
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	}
	switch (how) {
	case META_GE:
		break;
	case META_GT:
		if (rc == 0 && key_cmp(k.mv_data, k.mv_size, key, klen) == 0)
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		break;
	case META_LE:
	case META_LT:
		if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		else if (rc == 0 && !(how == META_LE &&
			 key_cmp(k.mv_data, k.mv_size, key, klen) == 0))
			rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
		break;
	}
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return meta_err(mdb_errno(rc), "metadata seek: %s",
				mdb_strerror(rc));
	c->key = k.mv_data;
	c->klen = k.mv_size;
	c->val = v.mv_data;
	c->vlen = v.mv_size;
	c->del = false;
	c->valid = true;
	return 0;
}

static void skl_cand(struct skl *s, enum meta_seek how, const void *key,
		     size_t klen, struct cand *c)
{
	struct skl_node *n = skl_seek(s, how, key, klen);

	c->valid = n != NULL;
	if (n) {
		c->key = n->key;
		c->klen = n->klen;
		c->val = n->val;
		c->vlen = n->vlen;
		c->del = n->del;
	}
}

static size_t copy_out(void *dst, size_t cap, const void *src, size_t len)
{
	if (dst && cap && len)
		memcpy(dst, src, MIN(cap, len));
	return len;
}

int meta_seek(struct meta_txn *t, enum meta_table tb, enum meta_seek how,
	      const void *key, size_t klen, void *kout, size_t kcap,
	      size_t *klen_out, void *val, size_t vcap)
{
	return meta_seek_prefix(t, tb, how, key, klen, 0, kout, kcap, klen_out,
				val, vcap);
}

int meta_seek_prefix(struct meta_txn *t, enum meta_table tb, enum meta_seek how,
		     const void *key, size_t klen, size_t plen, void *kout,
		     size_t kcap, size_t *klen_out, void *val, size_t vcap)
{
	struct meta *m = t->m;
	uint8_t kbuf[512], prefix[512];
	bool fwd = how == META_GE || how == META_GT;
	int r;

	if (klen > sizeof(kbuf) || plen > klen)
		return meta_err(-EINVAL, "metadata key too long");
	memcpy(prefix, key, plen);
	for (;;) {
		struct cand c[3], *best = NULL;
		int i;

		skl_cand(&m->open->tab[tb], how, key, klen, &c[0]);
		if (m->committing)
			skl_cand(&m->committing->tab[tb], how, key, klen, &c[1]);
		else
			c[1].valid = false;
		r = lmdb_seek(t, tb, how, key, klen, &c[2]);
		if (r < 0)
			return r;
		for (i = 0; i < 3; i++) {       /* newest layer first */
			int cmp;

			if (!c[i].valid)
				continue;
			if (!best) {
				best = &c[i];
				continue;
			}
			cmp = key_cmp(c[i].key, c[i].klen, best->key, best->klen);
			if (fwd ? cmp < 0 : cmp > 0)
				best = &c[i];
		}
		if (!best)
			return -ENOENT;
		/* keys are ordered: once past the prefix, nothing further has it */
		if (plen && (best->klen < plen || memcmp(best->key, prefix, plen)))
			return -ENOENT;
		if (!best->del) {
			if (klen_out)
				*klen_out = best->klen;
			copy_out(kout, kcap, best->key, best->klen);
			copy_out(val, vcap, best->val, best->vlen);
			return (int)best->vlen;
		}
		/* a staged delete hides it: continue strictly past it */
		memcpy(kbuf, best->key, best->klen);
		key = kbuf;
		klen = best->klen;
		how = fwd ? META_GT : META_LT;
	}
}

int meta_get(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen, void *val, size_t vcap)
{
	struct meta *m = t->m;
	struct skl_node *n;
	MDB_val k = { .mv_size = klen, .mv_data = (void *)key }, v;
	int rc;

	n = skl_find(&m->open->tab[tb], key, klen);
	if (!n && m->committing)
		n = skl_find(&m->committing->tab[tb], key, klen);
	if (n) {
		if (n->del)
			return -ENOENT;
		copy_out(val, vcap, n->val, n->vlen);
		return (int)n->vlen;
	}
	atomic_fetch_add_explicit(&m->gets, 1, memory_order_relaxed);
	rc = mdb_get(t->rtxn, m->dbi[tb], &k, &v);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return meta_err(mdb_errno(rc), "metadata get: %s", mdb_strerror(rc));
	copy_out(val, vcap, v.mv_data, v.mv_size);
	return (int)v.mv_size;
}

static int meta_stage(struct meta_txn *t, enum meta_table tb, const void *key,
		      size_t klen, const void *val, size_t vlen, bool del)
{
	struct meta *m = t->m;
	uint64_t g;
	int r;

	if (!t->write)
		return meta_err(-EINVAL, "staging outside a write section");
	if (klen == 0 || klen > 511)
		return meta_err(-EINVAL, "bad metadata key length %zu", klen);
	r = skl_put(m->open, &m->open->tab[tb], key, klen, val, vlen, del, &g);
	if (r < 0)
		return meta_err(r, "out of memory staging metadata");
	m->open->nops++;
	m->open->bytes += g;
	atomic_fetch_add_explicit(&m->staged_ops, 1, memory_order_relaxed);
	atomic_store(&m->staged_bytes, m->open->bytes);
	return 0;
}

int meta_put(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen, const void *val, size_t vlen)
{
	return meta_stage(t, tb, key, klen, val, vlen, false);
}

int meta_del(struct meta_txn *t, enum meta_table tb, const void *key,
	     size_t klen)
{
	return meta_stage(t, tb, key, klen, NULL, 0, true);
}

uint64_t meta_alloc_id(struct meta_txn *t)
{
	struct meta *m = t->m;

	if (m->next_id >= m->id_hw) {
		uint64_t hw = m->next_id + m->opts.id_block;

		if (meta_put(t, META_T_META, "next_id", 7, &hw, sizeof(hw)) < 0)
			return 0;
		m->id_hw = hw;
	}
	return m->next_id++;
}

uint64_t meta_wgen(struct meta_txn *t)
{
	return t->m->open->gen;
}

/* ------------------------------------------------------------- commit -- */

static int meta_write_batch(struct meta *m, struct batch *b)
{
	MDB_txn *w;
	int rc, i;

	if (b->nops == 0)
		return 0;
	rc = mdb_txn_begin(m->env, NULL, 0, &w);
	if (rc)
		return meta_err(mdb_errno(rc), "metadata commit: %s", mdb_strerror(rc));
	for (i = 0; i < META_T_COUNT && !rc; i++) {
		struct skl_node *n;

		for (n = b->tab[i].head->next[0]; n && !rc; n = n->next[0]) {
			MDB_val k = { .mv_size = n->klen, .mv_data = n->key };
			MDB_val v = { .mv_size = n->vlen, .mv_data = n->val };

			if (n->del) {
				rc = mdb_del(w, m->dbi[i], &k, NULL);
				if (rc == MDB_NOTFOUND)
					rc = 0;
			} else {
				rc = mdb_put(w, m->dbi[i], &k, &v, 0);
			}
		}
	}
	if (rc) {
		mdb_txn_abort(w);
		return meta_err(mdb_errno(rc), "metadata commit: %s", mdb_strerror(rc));
	}
	rc = mdb_txn_commit(w);
	if (rc)
		return meta_err(mdb_errno(rc), "metadata commit: %s", mdb_strerror(rc));
	return 0;
}

static void meta_flush_done(struct loop_msg *msg)
{
	struct meta_flush *f = container_of(msg, struct meta_flush, msg);

	if (f->res < 0)
		meta_err(f->res, "%s", f->err);
	f->cb(f, f->res);
}

static void meta_complete(struct meta *m, struct meta_flush *list, int res)
{
	while (list) {
		struct meta_flush *f = list;

		list = f->next;
		f->res = res;
		if (res < 0)
			snprintf(f->err, sizeof(f->err), "%.150s", meta_errbuf);
		if (f->loop) {
			f->msg.fn = meta_flush_done;
			loop_post(f->loop, &f->msg);
		} else {
			pthread_mutex_lock(&m->mu);
			f->done = true;
			pthread_cond_broadcast(&m->sync_cond);
			pthread_mutex_unlock(&m->mu);
		}
	}
}

/* One commit round; called with mu held, returns with mu held. */
static void meta_commit_round(struct meta *m)
{
	struct meta_flush *waiters = m->waiters;
	struct batch *nb, *b;
	uint64_t gen;
	int r;

	m->waiters = NULL;
	m->kick = false;
	nb = batch_new(m->open_gen + 1);
	if (!nb) {
		pthread_mutex_unlock(&m->mu);
		meta_complete(m, waiters, -ENOMEM);
		pthread_mutex_lock(&m->mu);
		return;
	}
	pthread_rwlock_wrlock(&m->rw);
	b = m->open;
	m->committing = b;
	m->open = nb;
	gen = b->gen;
	m->open_gen = nb->gen;
	atomic_store(&m->staged_bytes, 0);
	pthread_rwlock_unlock(&m->rw);
	pthread_mutex_unlock(&m->mu);

	r = meta_write_batch(m, b);

	pthread_rwlock_wrlock(&m->rw);
	if (r == 0) {
		m->committing = NULL;
		batch_free(b);
	} else {
		log_error("meta: %s", meta_errbuf);
		if (batch_merge(b, m->open) == 0) {
			batch_free(m->open);
			m->open = b;
		} else {
			/* cannot keep both: the store is broken anyway */
			batch_free(b);
		}
		m->committing = NULL;
		atomic_store(&m->staged_bytes, m->open->bytes);
	}
	pthread_rwlock_unlock(&m->rw);

	if (r == 0) {
		atomic_fetch_add(&m->commits, 1);
		if (m->opts.hook)
			m->opts.hook(m->opts.hook_arg, gen);
	} else {
		atomic_fetch_add(&m->commit_errors, 1);
	}
	meta_complete(m, waiters, r);
	pthread_mutex_lock(&m->mu);
}

static void *meta_committer(void *arg)
{
	struct meta *m = arg;

	pthread_mutex_lock(&m->mu);
	for (;;) {
		bool timed_out = false;

		while (!m->stop && !m->waiters && !m->kick && !timed_out) {
			if (m->opts.commit_delay_ns == UINT64_MAX) {
				pthread_cond_wait(&m->cond, &m->mu);
			} else {
				struct timespec ts;
				uint64_t ns;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				ns = (uint64_t)ts.tv_nsec + m->opts.commit_delay_ns;
				ts.tv_sec += (time_t)(ns / 1000000000ull);
				ts.tv_nsec = (long)(ns % 1000000000ull);
				if (pthread_cond_timedwait(&m->cond, &m->mu, &ts) ==
				    ETIMEDOUT)
					timed_out = true;
			}
		}
		if (m->stop) {
			meta_commit_round(m);
			break;
		}
		if (timed_out && !m->waiters && !m->kick &&
		    atomic_load(&m->staged_bytes) == 0)
			continue;
		meta_commit_round(m);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

void meta_flush(struct meta *m, struct meta_flush *f)
{
	pthread_mutex_lock(&m->mu);
	f->done = false;
	f->gen = m->open_gen;
	f->next = m->waiters;
	m->waiters = f;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->mu);
}

int meta_sync(struct meta *m)
{
	struct meta_flush f = { .loop = NULL };

	meta_flush(m, &f);
	pthread_mutex_lock(&m->mu);
	while (!f.done)
		pthread_cond_wait(&m->sync_cond, &m->mu);
	pthread_mutex_unlock(&m->mu);
	if (f.res < 0)
		meta_err(f.res, "%s", f.err);
	return f.res;
}

/* --------------------------------------------------------- open/close -- */

struct meta_format_rec {
	uint32_t version;
	uint32_t flags;
	uint8_t pool_id[META_POOL_ID_LEN];
};

static int meta_init_tables(struct meta *m, const char *path)
{
	struct meta_format_rec fr;
	MDB_txn *w;
	MDB_val k, v;
	int rc, i, r = 0;

	rc = mdb_txn_begin(m->env, NULL, 0, &w);
	if (rc)
		return meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
	rc = mdb_dbi_open(w, meta_table_names[META_T_META], MDB_CREATE,
			  &m->dbi[META_T_META]);
	if (rc) {
		r = meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
		goto exit;
	}
	k.mv_data = "format";
	k.mv_size = 6;
	rc = mdb_get(w, m->dbi[META_T_META], &k, &v);
	if (rc == MDB_NOTFOUND) {
		uint64_t hw = 1;

		if (!m->opts.create) {
			r = meta_err(-ENOENT, "%s: no metadata store (not initialised)",
				     path);
			goto exit;
		}
		memset(&fr, 0, sizeof(fr));
		fr.version = META_FORMAT_VERSION;
		memcpy(fr.pool_id, m->opts.pool_id, META_POOL_ID_LEN);
		v.mv_data = &fr;
		v.mv_size = sizeof(fr);
		rc = mdb_put(w, m->dbi[META_T_META], &k, &v, 0);
		k.mv_data = "next_id";
		k.mv_size = 7;
		v.mv_data = &hw;
		v.mv_size = sizeof(hw);
		if (!rc)
			rc = mdb_put(w, m->dbi[META_T_META], &k, &v, 0);
		if (rc) {
			r = meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
			goto exit;
		}
	} else if (rc) {
		r = meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
		goto exit;
	} else {
		if (v.mv_size < 8) {
			r = meta_err(-EPROTONOSUPPORT,
				     "%s: metadata format record is corrupt", path);
			goto exit;
		}
		memcpy(&fr, v.mv_data, MIN(sizeof(fr), v.mv_size));
		if (fr.version != META_FORMAT_VERSION) {
			r = meta_err(-EPROTONOSUPPORT,
				     "%s: metadata format version %u is not supported "
				     "(this nbdsrv reads version %u)%s", path,
				     fr.version, META_FORMAT_VERSION,
				     fr.version > META_FORMAT_VERSION ?
				     "; it was written by a newer nbdsrv" : "");
			goto exit;
		}
		if (v.mv_size != sizeof(fr) ||
		    memcmp(fr.pool_id, m->opts.pool_id, META_POOL_ID_LEN)) {
			r = meta_err(-EINVAL, "%s: metadata store belongs to another pool",
				     path);
			goto exit;
		}
	}
	for (i = 1; i < META_T_COUNT; i++) {
		rc = mdb_dbi_open(w, meta_table_names[i], MDB_CREATE, &m->dbi[i]);
		if (rc) {
			r = meta_err(mdb_errno(rc), "%s: table %s: %s", path,
				     meta_table_names[i], mdb_strerror(rc));
			goto exit;
		}
	}
	k.mv_data = "next_id";
	k.mv_size = 7;
	rc = mdb_get(w, m->dbi[META_T_META], &k, &v);
	if (rc || v.mv_size != sizeof(uint64_t)) {
		r = meta_err(-EPROTONOSUPPORT, "%s: id counter missing or corrupt", path);
		goto exit;
	}
	memcpy(&m->id_hw, v.mv_data, sizeof(uint64_t));
	m->next_id = m->id_hw;
	rc = mdb_txn_commit(w);
	w = NULL;
	if (rc)
		r = meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
exit:
	if (w)
		mdb_txn_abort(w);
	return r;
}

int meta_open(const char *path, const struct meta_opts *opts, struct meta **out)
{
	struct meta *m;
	char lockpath[4096];
	int rc, r;

	*out = NULL;
	meta_errbuf[0] = 0;
	if (!path || !*path || strlen(path) > 4000)
		return meta_err(-EINVAL, "bad metadata path");
	if (opts->create && mkdir(path, 0700) < 0 && errno != EEXIST)
		return meta_err(-errno, "%s: %s", path, strerror(errno));
	m = calloc(1, sizeof(*m));
	if (!m)
		return meta_err(-ENOMEM, "out of memory");
	m->opts = *opts;
	if (!m->opts.map_size)
		m->opts.map_size = 64ull << 30;
	if (!m->opts.commit_bytes)
		m->opts.commit_bytes = 16ull << 20;
	if (!m->opts.commit_delay_ns)
		m->opts.commit_delay_ns = 1000000000ull;
	if (!m->opts.id_block)
		m->opts.id_block = 1024;
	m->lock_fd = -1;
	pthread_rwlock_init(&m->rw, NULL);
	pthread_mutex_init(&m->pool_lock, NULL);
	pthread_mutex_init(&m->mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_cond_init(&m->sync_cond, NULL);

	snprintf(lockpath, sizeof(lockpath), "%s/nbdsrv.lock", path);
	m->lock_fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (m->lock_fd < 0) {
		r = meta_err(-errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (flock(m->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ?
		    meta_err(-EBUSY, "%s: metadata store is in use by another process",
			     path) :
		    meta_err(-errno, "%s: lock: %s", path, strerror(errno));
		goto fail;
	}
	rc = mdb_env_create(&m->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(m->env, META_T_COUNT + 4);
	if (!rc)
		rc = mdb_env_set_mapsize(m->env, m->opts.map_size);
	if (!rc)
		rc = mdb_env_open(m->env, path, MDB_NOTLS |
				  (m->opts.nosync ? MDB_NOSYNC | MDB_NOMETASYNC : 0),
				  0600);
	if (rc) {
		r = meta_err(mdb_errno(rc), "%s: %s", path, mdb_strerror(rc));
		goto fail;
	}
	r = meta_init_tables(m, path);
	if (r < 0)
		goto fail;
	m->open = batch_new(1);
	if (!m->open) {
		r = meta_err(-ENOMEM, "out of memory");
		goto fail;
	}
	m->open_gen = 1;
	rc = pthread_create(&m->thread, NULL, meta_committer, m);
	if (rc) {
		r = meta_err(-rc, "cannot start the metadata committer");
		goto fail;
	}
	m->thread_started = true;
	*out = m;
	return 0;
fail:
	batch_free(m->open);
	if (m->env)
		mdb_env_close(m->env);
	if (m->lock_fd >= 0)
		close(m->lock_fd);
	pthread_rwlock_destroy(&m->rw);
	pthread_mutex_destroy(&m->pool_lock);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cond);
	pthread_cond_destroy(&m->sync_cond);
	free(m);
	return r;
}

int meta_close(struct meta *m)
{
	int r;

	if (!m)
		return 0;
	r = meta_sync(m);
	pthread_mutex_lock(&m->mu);
	m->stop = true;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->mu);
	pthread_join(m->thread, NULL);
	while (m->free_txns) {
		struct meta_txn *t = m->free_txns;

		m->free_txns = t->next_free;
		for (int i = 0; i < META_T_COUNT; i++)
			if (t->cur[i])
				mdb_cursor_close(t->cur[i]);
		mdb_txn_abort(t->rtxn);
		free(t);
	}
	batch_free(m->open);
	batch_free(m->committing);
	mdb_env_close(m->env);
	close(m->lock_fd);
	pthread_rwlock_destroy(&m->rw);
	pthread_mutex_destroy(&m->pool_lock);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cond);
	pthread_cond_destroy(&m->sync_cond);
	free(m);
	return r;
}

int meta_get_stats(struct meta *m, struct meta_stats *st)
{
	MDB_txn *t;
	MDB_envinfo ei;
	MDB_stat ms;
	int rc, i;

	memset(st, 0, sizeof(*st));
	st->commits = atomic_load(&m->commits);
	st->commit_errors = atomic_load(&m->commit_errors);
	st->staged_ops = atomic_load(&m->staged_ops);
	st->staged_bytes = atomic_load(&m->staged_bytes);
	st->lmdb_seeks = atomic_load(&m->seeks);
	st->lmdb_gets = atomic_load(&m->gets);
	rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &t);
	if (rc)
		return meta_err(mdb_errno(rc), "metadata stats: %s", mdb_strerror(rc));
	for (i = 0; i < META_T_COUNT; i++) {
		if (mdb_stat(t, m->dbi[i], &ms) == 0)
			st->entries[i] = ms.ms_entries;
	}
	mdb_txn_abort(t);
	if (mdb_env_info(m->env, &ei) == 0 && mdb_env_stat(m->env, &ms) == 0)
		st->db_bytes = ((uint64_t)ei.me_last_pgno + 1) * ms.ms_psize;
	return 0;
}
