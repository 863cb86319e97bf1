/*
 * vmodel.c — the model-based randomized test of vol/ (see vmodel.h).
 *
 * The model is a byte array and a per-chunk "has data" array for every
 * volume head and snapshot, plus each clone's origin.  Every random op is
 * applied to the pool and to the model; reads compare bytes, block status
 * compares the hole/data flag of every chunk.  The op mix (per 100): create
 * 3, write 30, zero/trim 10, read 20, snapshot 7, snapshot delete 4, clone
 * 3, flatten 2, rollback 3, resize 3, volume delete 2, flush 3, GC 5,
 * reopen or crash 1, rename 1, vol_check 3.  Snapshot deletes of origins
 * with clones and deletes of volumes whose snapshots have clones must be
 * refused (-EBUSY, naming the clones).
 */
#include "vmodel.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t rng_state;
struct loop test_loop;

uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

uint64_t rndn(uint64_t n)
{
	return n ? rnd() % n : 0;
}

uint64_t seed_init(const char *test)
{
	const char *s = getenv("NBDSRV_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) :
			(uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);

	if (!seed)
		seed = 1;
	rng_state = seed;
	printf("%s: seed %llu (NBDSRV_SEED=%llu to replay)\n", test,
	       (unsigned long long)seed, (unsigned long long)seed);
	fflush(stdout);
	return seed;
}

/* ------------------------------------------------------ sync I/O shim -- */

struct sync_io {
	struct vol_io io;
	bool done;
	int res;
};

static void sync_cb(struct vol_io *io, int res)
{
	struct sync_io *s = container_of(io, struct sync_io, io);

	s->done = true;
	s->res = res;
}

int run_io(vol_op_fn *fn, struct vol_view *v, uint64_t off, uint64_t len,
	   void *buf, uint32_t flags)
{
	struct sync_io s;

	memset(&s, 0, sizeof(s));
	s.io.loop = &test_loop;
	s.io.cb = sync_cb;
	s.io.off = off;
	s.io.len = len;
	s.io.buf = buf;
	s.io.flags = flags;
	fn(v, &s.io);
	ck_assert_msg(!s.done, "vol I/O completed inside the submit call");
	while (!s.done)
		ck_assert_int_ge(loop_run_once(&test_loop, 1000000000ull), 0);
	return s.res;
}

/* -------------------------------------------------------------- model -- */

static uint8_t *dup_bytes(const uint8_t *src, uint64_t n)
{
	uint8_t *d = malloc(n ? n : 1);

	ck_assert_ptr_nonnull(d);
	memcpy(d, src, n);
	return d;
}

static int clones_of_snap(const struct model *m, int vi, int si)
{
	int n = 0;

	for (int i = 0; i < MAXV; i++)
		if (m->v[i].live && m->v[i].pv == vi && m->v[i].ps == si)
			n++;
	return n;
}

static void view_spec(const struct model *m, int vi, int si, char *buf, size_t cap)
{
	if (si < 0)
		snprintf(buf, cap, "%s", m->v[vi].name);
	else
		snprintf(buf, cap, "%s@%s", m->v[vi].name, m->v[vi].s[si].name);
}

static int pick_vol(const struct model *m)
{
	int live[MAXV], n = 0;

	for (int i = 0; i < MAXV; i++)
		if (m->v[i].live)
			live[n++] = i;
	return n ? live[rndn(n)] : -1;
}

static int pick_snap(const struct mvol *v)
{
	int live[MAXS], n = 0;

	for (int i = 0; i < MAXS; i++)
		if (v->s[i].live)
			live[n++] = i;
	return n ? live[rndn(n)] : -1;
}

static int free_vol_slot(const struct model *m)
{
	for (int i = 0; i < MAXV; i++)
		if (!m->v[i].live)
			return i;
	return -1;
}

static void check_view(struct vol_pool *p, const struct model *m, int vi, int si,
		       uint64_t op, bool whole)
{
	const struct mvol *mv = &m->v[vi];
	uint64_t size = si < 0 ? mv->size : mv->s[si].size;
	const uint8_t *data = si < 0 ? mv->data : mv->s[si].data;
	const uint8_t *alloc = si < 0 ? mv->alloc : mv->s[si].alloc;
	struct vol_extent ext[64];
	struct vol_view *v;
	char spec[40];
	uint64_t off, len, c = 0;
	uint8_t *buf;
	int n, i;

	view_spec(m, vi, si, spec, sizeof(spec));
	ck_assert_msg(vol_view_open(p, spec, &v) == 0, "op %llu: open %s: %s",
		      (unsigned long long)op, spec, vol_last_error());
	ck_assert_uint_eq(vol_view_size(v), size);
	off = rndn(size);
	len = 1 + rndn(MIN(size - off, 3 * CS));
	if (whole || rndn(4) == 0) {
		off = 0;
		len = size;
	}
	buf = malloc(len);
	i = run_io(vol_read, v, off, len, buf, 0);
	ck_assert_msg(i == 0, "op %llu: read %s %llu+%llu: %d", (unsigned long long)op,
		      spec, (unsigned long long)off, (unsigned long long)len, i);
	for (uint64_t j = 0; j < len; j++)
		if (buf[j] != data[off + j])
			ck_abort_msg(
			      "op %llu: %s byte %llu: read %u, model %u",
			      (unsigned long long)op, spec,
			      (unsigned long long)(off + j), buf[j], data[off + j]);
	free(buf);
	n = vol_block_status(v, 0, size, ext, 64);
	ck_assert_int_gt(n, 0);
	for (i = 0; i < n; i++) {
		ck_assert_uint_eq(ext[i].len % CS, 0);
		for (uint64_t k = 0; k < ext[i].len / CS; k++, c++)
			if (!!(ext[i].flags & VOL_EXT_HOLE) != !alloc[c])
				ck_abort_msg(
				      "op %llu: %s chunk %llu: block status %s, model %s",
				      (unsigned long long)op, spec, (unsigned long long)c,
				      ext[i].flags & VOL_EXT_HOLE ? "hole" : "data",
				      alloc[c] ? "data" : "hole");
	}
	ck_assert_uint_eq(c, size / CS);
	vol_view_close(v);
}

void vmodel_check_view(struct vol_pool *p, const struct model *m, int vi,
		       int si, uint64_t op)
{
	check_view(p, m, vi, si, op, false);
}

void vmodel_check_all(struct vol_pool *p, const struct model *m, uint64_t op)
{
	for (int i = 0; i < MAXV; i++) {
		if (!m->v[i].live)
			continue;
		check_view(p, m, i, -1, op, true);
		for (int j = 0; j < MAXS; j++)
			if (m->v[i].s[j].live)
				check_view(p, m, i, j, op, true);
	}
}

static void model_free(struct model *m)
{
	for (int i = 0; i < MAXV; i++) {
		free(m->v[i].data);
		free(m->v[i].alloc);
		for (int j = 0; j < MAXS; j++) {
			free(m->v[i].s[j].data);
			free(m->v[i].s[j].alloc);
		}
	}
}

static void reset_snaps(struct mvol *v)
{
	for (int j = 0; j < MAXS; j++) {
		free(v->s[j].data);
		free(v->s[j].alloc);
	}
	memset(v->s, 0, sizeof(v->s));
}

static void set_vol(struct mvol *v, uint64_t size, const uint8_t *data,
		    const uint8_t *alloc)
{
	free(v->data);
	free(v->alloc);
	v->size = size;
	v->data = data ? dup_bytes(data, size) : calloc(1, size);
	v->alloc = alloc ? dup_bytes(alloc, size / CS) : calloc(1, size / CS + 1);
}

/* NBDSRV_VOL_TRACE=1: one line per op (to shrink a failing seed's story) */
#define TRACE(...)                                                      \
	do {                                                            \
		if (trace) {                                            \
			printf("op %llu: ", (unsigned long long)op);    \
			printf(__VA_ARGS__);                            \
			printf("\n");                                   \
			fflush(stdout);                                 \
		}                                                       \
	} while (0)

void vmodel_run(struct vm_env *e, uint64_t nops)
{
	bool trace = getenv("NBDSRV_VOL_TRACE") != NULL;
	struct model m;
	struct meta_stats st;
	uint64_t op;
	int r;

	memset(&m, 0, sizeof(m));
	for (op = 0; op < nops; op++) {
		int vi = pick_vol(&m), si, k = (int)rndn(100);
		struct mvol *mv = vi >= 0 ? &m.v[vi] : NULL;
		struct vol_view *v;

		if (!mv || k < 3) {                     /* create */
			int ni = free_vol_slot(&m);
			uint64_t size = (1 + rndn(8)) * CS;

			if (ni < 0)
				continue;
			mv = &m.v[ni];
			reset_snaps(mv);
			snprintf(mv->name, sizeof(mv->name), "v%u", m.names++);
			ck_assert_msg(vol_create(e->p, mv->name, size, CS) == 0, "%s",
				      vol_last_error());
			set_vol(mv, size, NULL, NULL);
			mv->live = true;
			mv->pv = mv->ps = -1;
			TRACE("create %s %llu", mv->name, (unsigned long long)size);
		} else if (k < 33) {                    /* write */
			uint64_t off = rndn(mv->size);
			uint64_t len = 1 + rndn(MIN(mv->size - off, 3 * CS));
			uint8_t *buf;

			if (rndn(3) == 0) {             /* chunk aligned */
				uint64_t want = CS * (1 + rndn(2));

				off = ROUND_DOWN(off, CS);
				len = MIN(mv->size - off, want);
			}
			buf = malloc(len);
			for (uint64_t j = 0; j < len; j++)
				buf[j] = (uint8_t)rnd();
			if (rndn(8) == 0)
				memset(buf, 0, len);
			ck_assert_int_eq(vol_view_open(e->p, mv->name, &v), 0);
			TRACE("write %s %llu+%llu", mv->name, (unsigned long long)off,
			      (unsigned long long)len);
			r = run_io(vol_write, v, off, len, buf,
				   rndn(10) == 0 ? VOL_IO_FUA : 0);
			ck_assert_msg(r == 0, "op %llu: write %llu+%llu (size %llu): %d %s",
				      (unsigned long long)op, (unsigned long long)off,
				      (unsigned long long)len,
				      (unsigned long long)mv->size, r, vol_last_error());
			vol_view_close(v);
			memcpy(mv->data + off, buf, len);
			for (uint64_t c = off / CS; c <= (off + len - 1) / CS; c++)
				mv->alloc[c] = 1;
			free(buf);
		} else if (k < 43) {                    /* zero / trim */
			uint64_t off = rndn(mv->size);
			uint64_t len = 1 + rndn(MIN(mv->size - off, 3 * CS));

			if (rndn(2) == 0) {
				uint64_t want = CS * (1 + rndn(2));

				off = ROUND_DOWN(off, CS);
				len = MIN(mv->size - off, want);
			}
			ck_assert_int_eq(vol_view_open(e->p, mv->name, &v), 0);
			TRACE("zero %s %llu+%llu", mv->name, (unsigned long long)off,
			      (unsigned long long)len);
			r = run_io(rndn(2) ? vol_zero : vol_trim, v, off, len, NULL,
				   rndn(10) == 0 ? VOL_IO_FUA : 0);
			ck_assert_msg(r == 0, "op %llu: zero %llu+%llu: %d",
				      (unsigned long long)op, (unsigned long long)off,
				      (unsigned long long)len, r);
			vol_view_close(v);
			memset(mv->data + off, 0, len);
			for (uint64_t c = off / CS; c <= (off + len - 1) / CS; c++)
				if (off <= c * CS && off + len >= (c + 1) * CS)
					mv->alloc[c] = 0;
		} else if (k < 63) {                    /* read + block status */
			si = rndn(3) ? -1 : pick_snap(mv);
			TRACE("check %s%s%s", mv->name, si < 0 ? "" : "@",
			      si < 0 ? "" : mv->s[si].name);
			check_view(e->p, &m, vi, si, op, false);
		} else if (k < 70) {                    /* snapshot */
			struct msnap *s = NULL;

			for (int j = 0; j < MAXS; j++)
				if (!mv->s[j].live) {
					s = &mv->s[j];
					break;
				}
			if (!s)
				continue;
			snprintf(s->name, sizeof(s->name), "s%u", m.names++);
			ck_assert_msg(vol_snap_create(e->p, mv->name, s->name) == 0, "%s",
				      vol_last_error());
			ck_assert_int_eq(vol_snap_create(e->p, mv->name, s->name), -EEXIST);
			TRACE("snap %s@%s", mv->name, s->name);
			s->live = true;
			s->size = mv->size;
			free(s->data);
			free(s->alloc);
			s->data = dup_bytes(mv->data, mv->size);
			s->alloc = dup_bytes(mv->alloc, mv->size / CS);
		} else if (k < 74) {                    /* snapshot delete */
			int nc;

			si = pick_snap(mv);
			if (si < 0)
				continue;
			nc = clones_of_snap(&m, vi, si);
			TRACE("snap delete %s@%s%s", mv->name, mv->s[si].name,
			      nc ? " (refused: clones)" : "");
			r = vol_snap_delete(e->p, mv->name, mv->s[si].name);
			if (nc) {
				ck_assert_int_eq(r, -EBUSY);
				for (int j = 0; j < MAXV; j++)
					if (m.v[j].live && m.v[j].pv == vi && m.v[j].ps == si)
						ck_assert_msg(strstr(vol_last_error(), m.v[j].name),
							      "clone %s not named in '%s'",
							      m.v[j].name, vol_last_error());
			} else {
				ck_assert_msg(r == 0, "%s", vol_last_error());
				mv->s[si].live = false;
			}
		} else if (k < 77) {                    /* clone */
			int ni = free_vol_slot(&m);
			struct mvol *c;

			si = pick_snap(mv);
			if (ni < 0 || si < 0)
				continue;
			c = &m.v[ni];
			reset_snaps(c);
			snprintf(c->name, sizeof(c->name), "c%u", m.names++);
			ck_assert_msg(vol_clone(e->p, mv->name, mv->s[si].name, c->name) == 0,
				      "%s", vol_last_error());
			TRACE("clone %s@%s %s", mv->name, mv->s[si].name, c->name);
			set_vol(c, mv->s[si].size, mv->s[si].data, mv->s[si].alloc);
			c->live = true;
			c->pv = vi;
			c->ps = si;
		} else if (k < 79) {                    /* flatten */
			TRACE("flatten %s", mv->name);
			ck_assert_msg(vol_flatten(e->p, mv->name) == 0, "%s", vol_last_error());
			mv->pv = mv->ps = -1;
		} else if (k < 82) {                    /* rollback */
			si = pick_snap(mv);
			if (si < 0)
				continue;
			TRACE("rollback %s@%s", mv->name, mv->s[si].name);
			ck_assert_msg(vol_rollback(e->p, mv->name, mv->s[si].name) == 0, "%s",
				      vol_last_error());
			set_vol(mv, mv->s[si].size, mv->s[si].data, mv->s[si].alloc);
		} else if (k < 85) {                    /* resize */
			uint64_t ns = (1 + rndn(10)) * CS;
			uint8_t *nd = calloc(1, ns), *na = calloc(1, ns / CS);

			TRACE("resize %s %llu", mv->name, (unsigned long long)ns);
			ck_assert_msg(vol_resize(e->p, mv->name, ns) == 0, "%s",
				      vol_last_error());
			memcpy(nd, mv->data, MIN(ns, mv->size));
			memcpy(na, mv->alloc, MIN(ns, mv->size) / CS);
			free(mv->data);
			free(mv->alloc);
			mv->data = nd;
			mv->alloc = na;
			mv->size = ns;
		} else if (k < 87) {                    /* volume delete */
			int nc = 0;

			for (int j = 0; j < MAXS; j++)
				if (mv->s[j].live)
					nc += clones_of_snap(&m, vi, j);
			TRACE("delete %s%s", mv->name, nc ? " (refused: clones)" : "");
			r = vol_delete(e->p, mv->name);
			if (nc) {
				ck_assert_int_eq(r, -EBUSY);
				continue;
			}
			ck_assert_msg(r == 0, "%s", vol_last_error());
			mv->live = false;
			for (int j = 0; j < MAXS; j++)
				mv->s[j].live = false;
		} else if (k < 90) {                    /* flush */
			TRACE("flush");
			ck_assert_int_eq(vol_view_open(e->p, mv->name, &v), 0);
			r = run_io(vol_flush, v, 0, 0, NULL, 0);
			ck_assert_msg(r == 0, "op %llu: flush: %d", (unsigned long long)op, r);
			vol_view_close(v);
		} else if (k < 95) {                    /* gc */
			TRACE("gc");
			ck_assert_int_ge(vol_gc(e->p, 1 + rndn(20)), 0);
		} else if (k < 96) {                    /* reopen / crash */
			if (e->crash && rndn(3) == 0) {
				TRACE("crash");
				e->crash(e, &m, op);
			} else {
				TRACE("reopen");
				e->reopen(e, op);
			}
		} else if (k < 97) {                    /* rename */
			char nn[16];

			snprintf(nn, sizeof(nn), "r%u", m.names++);
			TRACE("rename %s %s", mv->name, nn);
			ck_assert_int_eq(vol_rename(e->p, mv->name, nn), 0);
			ck_assert_int_eq(vol_get_info(e->p, mv->name, &(struct vol_info){ 0 }),
					 -ENOENT);
			strcpy(mv->name, nn);
		} else {                                /* consistency */
			r = vol_check(e->p);
			ck_assert_msg(r == 0, "op %llu: %s", (unsigned long long)op,
				      vol_last_error());
		}
	}

	/* every view one last time */
	vmodel_check_all(e->p, &m, op);
	ck_assert_msg(vol_check(e->p) == 0, "%s", vol_last_error());

	/* delete everything: flatten clones, then snapshots, then volumes */
	for (int i = 0; i < MAXV; i++)
		if (m.v[i].live)
			ck_assert_int_eq(vol_flatten(e->p, m.v[i].name), 0);
	for (int i = 0; i < MAXV; i++) {
		if (!m.v[i].live)
			continue;
		for (int j = 0; j < MAXS; j++)
			if (m.v[i].s[j].live)
				ck_assert_msg(vol_snap_delete(e->p, m.v[i].name,
					      m.v[i].s[j].name) == 0, "%s", vol_last_error());
		ck_assert_msg(vol_check(e->p) == 0, "%s", vol_last_error());
		while ((r = vol_gc(e->p, 7)) == 1)
			;
		ck_assert_int_eq(r, 0);
		ck_assert_msg(vol_check(e->p) == 0, "%s", vol_last_error());
		check_view(e->p, &m, i, -1, op, false);
		ck_assert_int_eq(vol_delete(e->p, m.v[i].name), 0);
	}
	ck_assert_int_eq(vol_gc(e->p, 100), 0);
	ck_assert_int_eq(vol_sync(e->p), 0);    /* commits; drops follow */
	ck_assert_int_eq(vol_sync(e->p), 0);    /* commits the DROPPED marks */
	ck_assert_int_eq(meta_get_stats(vol_pool_meta(e->p), &st), 0);
	ck_assert_uint_eq(st.entries[META_T_MAP], 0);
	ck_assert_uint_eq(st.entries[META_T_OBJS], 0);
	ck_assert_uint_eq(st.entries[META_T_VOLS], 0);
	ck_assert_uint_eq(st.entries[META_T_SNAPS], 0);
	ck_assert_uint_eq(st.entries[META_T_NAMES], 0);
	model_free(&m);
}
