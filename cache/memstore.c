/*
 * memstore.c — an object store in RAM: a hash table of objects, each a
 * zero-extended byte buffer (bytes past its length read as zeros).
 *
 * It is a real store, not a stub: an object is created by the first write
 * or zero that names it, starting as a copy of its base (copy-on-write done
 * eagerly, so a base may be dropped right after: nothing depends on it
 * later).  Every op is done at submission under one mutex and completed
 * through a NOP on the submitter's ring (objstore_complete), which is what
 * the interface promises: never inline, always on io->loop.
 *
 * With track_drops, dropped ids stay in the table as tombstones so tests can
 * tell a double drop or a use after drop from a correct run.
 */
#include "cache/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct mobj {
	uint64_t id;
	uint8_t *data;
	uint64_t len;            /* valid bytes; beyond: zeros */
	uint32_t drops;          /* > 0: dropped (tombstone) */
	struct mobj *next;
};

struct memstore {
	struct objstore base;
	pthread_mutex_t lock;
	bool track_drops;
	struct mobj **tab;
	size_t nbuckets, n;
	struct memstore_stats st;
};

static size_t mix_hash(uint64_t id, size_t nbuckets)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (size_t)(id & (nbuckets - 1));
}

static size_t memstore_hash(const struct memstore *ms, uint64_t id)
{
	return mix_hash(id, ms->nbuckets);
}

static struct mobj *memstore_find(struct memstore *ms, uint64_t id)
{
	struct mobj *o;

	for (o = ms->tab[memstore_hash(ms, id)]; o; o = o->next)
		if (o->id == id)
			return o;
	return NULL;
}

static int memstore_grow_table(struct memstore *ms)
{
	size_t nb = ms->nbuckets * 2, i;
	struct mobj **nt = calloc(nb, sizeof(*nt));

	if (!nt)
		return -ENOMEM;
	for (i = 0; i < ms->nbuckets; i++) {
		struct mobj *o = ms->tab[i], *next;

		for (; o; o = next) {
			size_t h = mix_hash(o->id, nb);

			next = o->next;
			o->next = nt[h];
			nt[h] = o;
		}
	}
	free(ms->tab);
	ms->tab = nt;
	ms->nbuckets = nb;
	return 0;
}

/* Ensure o->data holds at least len bytes (zero-filled growth). */
static int mobj_reserve(struct memstore *ms, struct mobj *o, uint64_t len)
{
	uint8_t *nd;

	if (len <= o->len)
		return 0;
	nd = realloc(o->data, len);
	if (!nd)
		return -ENOMEM;
	memset(nd + o->len, 0, len - o->len);
	ms->st.bytes += len - o->len;
	o->data = nd;
	o->len = len;
	return 0;
}

static int memstore_get(struct memstore *ms, uint64_t id, uint64_t base,
			struct mobj **out)
{
	struct mobj *o = memstore_find(ms, id), *b;
	int r;

	if (o && !o->drops) {
		*out = o;
		return 0;
	}
	if (o) {                        /* use after drop: a caller bug */
		ms->st.writes_after_drop++;
		*out = o;
		o->drops = 0;
		ms->st.objects++;
		return 0;
	}
	if (ms->n >= ms->nbuckets && memstore_grow_table(ms) < 0)
		return -ENOMEM;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->id = id;
	b = base ? memstore_find(ms, base) : NULL;
	if (b && !b->drops && b->len) {
		r = mobj_reserve(ms, o, b->len);
		if (r < 0) {
			free(o);
			return r;
		}
		memcpy(o->data, b->data, b->len);
	}
	o->next = ms->tab[memstore_hash(ms, id)];
	ms->tab[memstore_hash(ms, id)] = o;
	ms->n++;
	ms->st.objects++;
	*out = o;
	return 0;
}

static void objstore_nop_done(struct loop_op *op, int res, uint32_t flags)
{
	struct objstore_io *io = container_of(op, struct objstore_io, op);

	(void)res;
	(void)flags;
	io->cb(io, io->res);
}

void objstore_complete(struct objstore_io *io, int res)
{
	io->res = res;
	io->op.cb = objstore_nop_done;
	loop_sqe(io->loop, &io->op);
}

static void memstore_read(struct objstore *s, struct objstore_io *io)
{
	struct memstore *ms = (struct memstore *)s;
	struct mobj *o;
	uint8_t *dst = io->buf;

	pthread_mutex_lock(&ms->lock);
	o = memstore_find(ms, io->obj);
	if ((!o || o->drops) && io->base)
		o = memstore_find(ms, io->base);
	if (o && o->drops)
		o = NULL;
	if (o && io->off < o->len) {
		uint64_t n = MIN(io->len, o->len - io->off);

		memcpy(dst, o->data + io->off, n);
		memset(dst + n, 0, io->len - n);
	} else {
		memset(dst, 0, io->len);
	}
	pthread_mutex_unlock(&ms->lock);
	objstore_complete(io, 0);
}

static void memstore_modify(struct objstore *s, struct objstore_io *io, bool zero)
{
	struct memstore *ms = (struct memstore *)s;
	struct mobj *o;
	int r;

	pthread_mutex_lock(&ms->lock);
	r = memstore_get(ms, io->obj, io->base, &o);
	if (r == 0) {
		if (zero) {
			if (io->off < o->len)
				memset(o->data + io->off, 0,
				       MIN(io->len, o->len - io->off));
		} else {
			r = mobj_reserve(ms, o, io->off + io->len);
			if (r == 0)
				memcpy(o->data + io->off, io->buf, io->len);
		}
	}
	pthread_mutex_unlock(&ms->lock);
	objstore_complete(io, r);
}

static void memstore_write(struct objstore *s, struct objstore_io *io)
{
	memstore_modify(s, io, false);
}

static void memstore_zero(struct objstore *s, struct objstore_io *io)
{
	memstore_modify(s, io, true);
}

static void memstore_flush(struct objstore *s, struct objstore_io *io)
{
	(void)s;
	objstore_complete(io, 0);
}

static void memstore_drop(struct objstore *s, uint64_t obj)
{
	struct memstore *ms = (struct memstore *)s;
	struct mobj *o, **pp;

	pthread_mutex_lock(&ms->lock);
	ms->st.drops++;
	o = memstore_find(ms, obj);
	if (!o) {
		ms->st.drops_unknown++;
		if (ms->track_drops && (ms->n < ms->nbuckets ||
		    memstore_grow_table(ms) == 0) &&
		    (o = calloc(1, sizeof(*o)))) {
			o->id = obj;
			o->drops = 1;
			o->next = ms->tab[memstore_hash(ms, obj)];
			ms->tab[memstore_hash(ms, obj)] = o;
			ms->n++;
		}
		goto out;
	}
	if (o->drops) {
		ms->st.double_drops++;
		o->drops++;
		goto out;
	}
	ms->st.objects--;
	ms->st.bytes -= o->len;
	free(o->data);
	o->data = NULL;
	o->len = 0;
	o->drops = 1;
	if (!ms->track_drops) {
		for (pp = &ms->tab[memstore_hash(ms, obj)]; *pp != o; pp = &(*pp)->next)
			;
		*pp = o->next;
		ms->n--;
		free(o);
	}
out:
	pthread_mutex_unlock(&ms->lock);
}

static void memstore_close(struct objstore *s)
{
	struct memstore *ms = (struct memstore *)s;
	size_t i;

	for (i = 0; i < ms->nbuckets; i++) {
		struct mobj *o = ms->tab[i], *next;

		for (; o; o = next) {
			next = o->next;
			free(o->data);
			free(o);
		}
	}
	free(ms->tab);
	pthread_mutex_destroy(&ms->lock);
	free(ms);
}

static const struct objstore_ops memstore_ops = {
	.name = "memstore",
	.read = memstore_read,
	.write = memstore_write,
	.zero = memstore_zero,
	.flush = memstore_flush,
	.drop = memstore_drop,
	.close = memstore_close,
};

int memstore_create(bool track_drops, struct objstore **out)
{
	struct memstore *ms = calloc(1, sizeof(*ms));

	*out = NULL;
	if (!ms)
		return -ENOMEM;
	ms->nbuckets = 1024;
	ms->tab = calloc(ms->nbuckets, sizeof(*ms->tab));
	if (!ms->tab) {
		free(ms);
		return -ENOMEM;
	}
	ms->base.ops = &memstore_ops;
	ms->track_drops = track_drops;
	pthread_mutex_init(&ms->lock, NULL);
	*out = &ms->base;
	return 0;
}

void memstore_get_stats(struct objstore *s, struct memstore_stats *st)
{
	struct memstore *ms = (struct memstore *)s;

	pthread_mutex_lock(&ms->lock);
	*st = ms->st;
	pthread_mutex_unlock(&ms->lock);
}

bool memstore_was_dropped(struct objstore *s, uint64_t obj)
{
	struct memstore *ms = (struct memstore *)s;
	struct mobj *o;
	bool r;

	pthread_mutex_lock(&ms->lock);
	o = memstore_find(ms, obj);
	r = o && o->drops;
	pthread_mutex_unlock(&ms->lock);
	return r;
}
