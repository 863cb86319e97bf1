/*
 * check_meta.c — the metadata store (staged overlay merged with LMDB, group
 * commit, flush completion on the caller's loop, id counter across a crash,
 * size threshold) and memstore (copy-on-write bases, drops).
 *
 * Seeds: NBDSRV_SEED=<n> replays the randomized test; it prints its seed.
 */
#include "cache/cache.h"
#include "test/lib/rng.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char basedir[64];     /* per run: removed even after failures */
static char dir[96];
static const struct meta_opts base_opts = {
	.pool_id = "meta-test-pool!!", .create = true,
	.commit_delay_ns = UINT64_MAX,
};

static void rm_rf(const char *d)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d);
}

/* Unchecked (runner process): its teardown runs even after a failure. */
static void base_setup(void)
{
	snprintf(basedir, sizeof(basedir), "/tmp/check_meta.XXXXXX");
	if (!mkdtemp(basedir))
		basedir[0] = 0;
}

static void base_teardown(void)
{
	if (basedir[0])
		rm_rf(basedir);
}

static void setup(void)
{
	ck_assert_msg(basedir[0], "cannot create a temporary directory");
	snprintf(dir, sizeof(dir), "%s/t.XXXXXX", basedir);
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	rm_rf(dir);
}


#define NKEYS 300

/* model: value per key, -1 = absent */
static int model[NKEYS];

static void key_of(int i, uint8_t k[2])
{
	k[0] = (uint8_t)(i >> 8);
	k[1] = (uint8_t)i;
}

static int model_seek(enum meta_seek how, int i)
{
	switch (how) {
	case META_GE: for (int j = i; j < NKEYS; j++) if (model[j] >= 0) return j; break;
	case META_GT: for (int j = i + 1; j < NKEYS; j++) if (model[j] >= 0) return j; break;
	case META_LE: for (int j = i; j >= 0; j--) if (model[j] >= 0) return j; break;
	case META_LT: for (int j = i - 1; j >= 0; j--) if (model[j] >= 0) return j; break;
	}
	return -1;
}

START_TEST(test_overlay_model)
{
	struct meta *m;

	seed_init("test_overlay_model");
	ck_assert_int_eq(meta_open(dir, &base_opts, &m), 0);
	for (int i = 0; i < NKEYS; i++)
		model[i] = -1;
	for (int op = 0; op < 20000; op++) {
		int k = (int)(rnd() % 100), i = (int)(rnd() % NKEYS);
		uint8_t key[2], kout[2];
		struct meta_txn *t;
		size_t kl;
		int v, r;

		key_of(i, key);
		if (k < 40) {
			t = meta_wbegin(m);
			ck_assert_ptr_nonnull(t);
			if (rnd() % 3) {
				v = (int)(rnd() % 1000);
				ck_assert_int_eq(meta_put(t, META_T_MAP, key, 2, &v, sizeof(v)), 0);
				model[i] = v;
			} else {
				ck_assert_int_eq(meta_del(t, META_T_MAP, key, 2), 0);
				model[i] = -1;
			}
			meta_end(t);
		} else if (k < 42) {
			ck_assert_int_eq(meta_sync(m), 0);
		} else if (k < 43) {
			ck_assert_int_eq(meta_close(m), 0);
			ck_assert_int_eq(meta_open(dir, &base_opts, &m), 0);
		} else {
			enum meta_seek how = (enum meta_seek)(rnd() % 4);
			int want = model_seek(how, i);

			t = meta_rbegin(m);
			ck_assert_ptr_nonnull(t);
			r = meta_get(t, META_T_MAP, key, 2, &v, sizeof(v));
			if (model[i] < 0)
				ck_assert_int_eq(r, -ENOENT);
			else {
				ck_assert_int_eq(r, sizeof(v));
				ck_assert_int_eq(v, model[i]);
			}
			r = meta_seek_prefix(t, META_T_MAP, how, key, 2, 1, kout, 2, &kl,
					     &v, sizeof(v));
			if (want >= 0 && (want >> 8) == (i >> 8))
				ck_assert_msg(r == sizeof(v) && (kout[0] << 8 | kout[1]) == want,
					      "op %d prefix seek %d from %d", op, how, i);
			else
				ck_assert_msg(r == -ENOENT, "op %d prefix seek %d from %d: %d",
					      op, how, i, r);
			r = meta_seek(t, META_T_MAP, how, key, 2, kout, 2, &kl, &v, sizeof(v));
			meta_end(t);
			if (want < 0) {
				ck_assert_msg(r == -ENOENT, "op %d seek %d from %d: got %d",
					      op, how, i, r);
			} else {
				ck_assert_msg(r == sizeof(v) && kl == 2 &&
					      (kout[0] << 8 | kout[1]) == want &&
					      v == model[want],
					      "op %d seek %d from %d: want key %d", op, how, i, want);
			}
		}
	}
	ck_assert_int_eq(meta_close(m), 0);
}
END_TEST

struct flush_wait {
	struct meta_flush f;
	pthread_t thread;
	int calls, res;
};

static void flush_cb(struct meta_flush *f, int res)
{
	struct flush_wait *w = container_of(f, struct flush_wait, f);

	w->thread = pthread_self();
	w->calls++;
	w->res = res;
}

START_TEST(test_group_commit)
{
	struct flush_wait w[8];
	struct meta_stats st0, st;
	struct meta_txn *t;
	struct loop l;
	struct meta *m;
	int left;

	ck_assert_int_eq(loop_init(&l, 64), 0);
	ck_assert_int_eq(meta_open(dir, &base_opts, &m), 0);
	meta_get_stats(m, &st0);
	t = meta_wbegin(m);
	for (int i = 0; i < 100; i++) {
		uint8_t k[2];

		key_of(i, k);
		ck_assert_int_eq(meta_put(t, META_T_OBJS, k, 2, &i, sizeof(i)), 0);
	}
	meta_end(t);
	memset(w, 0, sizeof(w));
	for (int i = 0; i < 8; i++) {
		w[i].f.loop = &l;
		w[i].f.cb = flush_cb;
		meta_flush(m, &w[i].f);
	}
	do {
		ck_assert_int_ge(loop_run_once(&l, 1000000000ull), 0);
		left = 0;
		for (int i = 0; i < 8; i++)
			left += w[i].calls == 0;
	} while (left);
	meta_get_stats(m, &st);
	for (int i = 0; i < 8; i++) {
		ck_assert_int_eq(w[i].calls, 1);
		ck_assert_int_eq(w[i].res, 0);
		ck_assert(pthread_equal(w[i].thread, pthread_self()));
	}
	/* 8 flushes of one batch: at most 2 transactions (a flush may arrive
	 * while the first commit runs), never 8 */
	ck_assert_uint_ge(st.commits - st0.commits, 1);
	ck_assert_uint_le(st.commits - st0.commits, 2);
	ck_assert_uint_eq(st.entries[META_T_OBJS], 100);
	ck_assert_int_eq(meta_close(m), 0);
	loop_fini(&l);
}
END_TEST

START_TEST(test_size_threshold)
{
	struct meta_opts o = base_opts;
	struct meta_stats st;
	struct meta *m;
	uint8_t val[1024] = { 0 };

	o.commit_bytes = 64 << 10;
	ck_assert_int_eq(meta_open(dir, &o, &m), 0);
	for (int i = 0; i < 200; i++) {
		struct meta_txn *t = meta_wbegin(m);
		uint8_t k[2];

		key_of(i, k);
		ck_assert_int_eq(meta_put(t, META_T_MAP, k, 2, val, sizeof(val)), 0);
		meta_end(t);
	}
	/* no flush was asked: the committer must commit on its own (poll,
	 * bounded 60 s, no timing assertion) */
	for (int i = 0; i < 6000; i++) {
		meta_get_stats(m, &st);
		if (st.commits)
			break;
		usleep(10000);
	}
	ck_assert_uint_ge(st.commits, 1);
	ck_assert_uint_lt(st.staged_bytes, 200 * sizeof(val));
	ck_assert_int_eq(meta_close(m), 0);
}
END_TEST

START_TEST(test_ids_after_crash)
{
	struct meta_opts o = base_opts;
	struct meta *m;
	pid_t pid;
	int status;
	uint64_t maxc = 0;

	o.id_block = 8;
	ck_assert_int_eq(meta_open(dir, &o, &m), 0);
	ck_assert_int_eq(meta_close(m), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		o.create = false;
		if (meta_open(dir, &o, &m) < 0)
			_exit(2);
		for (int round = 0; round < 2; round++) {
			struct meta_txn *t = meta_wbegin(m);

			for (int i = 0; i < 13; i++) {
				uint64_t id = meta_alloc_id(t);
				uint8_t k[8];

				for (int j = 0; j < 8; j++)
					k[j] = (uint8_t)(id >> (56 - 8 * j));
				meta_put(t, META_T_GC, k, 8, &id, 8);
			}
			meta_end(t);
			if (round == 0 && meta_sync(m) < 0)
				_exit(3);
		}
		_exit(0);       /* "crash": the second round is never committed */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	o.create = false;
	ck_assert_int_eq(meta_open(dir, &o, &m), 0);
	{
		struct meta_txn *t = meta_wbegin(m);
		uint8_t k[8] = { 0 }, kout[8];
		size_t kl;
		uint64_t id, n = 0;

		for (enum meta_seek how = META_GE;
		     meta_seek(t, META_T_GC, how, k, 8, kout, 8, &kl, &id, 8) == 8;
		     how = META_GT) {
			memcpy(k, kout, 8);
			maxc = MAX(maxc, id);
			n++;
		}
		ck_assert_uint_eq(n, 13);
		id = meta_alloc_id(t);
		ck_assert_uint_gt(id, maxc);
		meta_end(t);
	}
	ck_assert_int_eq(meta_close(m), 0);
}
END_TEST

struct mio {
	struct objstore_io io;
	int done, res;
};

static void mio_cb(struct objstore_io *io, int res)
{
	struct mio *x = container_of(io, struct mio, io);

	x->done++;
	x->res = res;
}

static int mio_run(struct loop *l, void (*fn)(struct objstore *, struct objstore_io *),
		   struct objstore *s, uint64_t obj, uint64_t base, uint64_t off,
		   uint64_t len, void *buf)
{
	struct mio x = { .io = { .loop = l, .cb = mio_cb, .obj = obj, .base = base,
				 .off = off, .len = len, .buf = buf } };

	fn(s, &x.io);
	ck_assert_int_eq(x.done, 0);            /* never inline */
	while (!x.done)
		ck_assert_int_ge(loop_run_once(l, 1000000000ull), 0);
	return x.res;
}

START_TEST(test_memstore)
{
	struct memstore_stats st;
	struct objstore *s;
	struct loop l;
	uint8_t a[100], b[100];

	ck_assert_int_eq(loop_init(&l, 64), 0);
	ck_assert_int_eq(memstore_create(true, &s), 0);
	memset(a, 'A', sizeof(a));
	ck_assert_int_eq(mio_run(&l, s->ops->write, s, 1, 0, 0, 100, a), 0);
	memset(b, 'B', 10);
	ck_assert_int_eq(mio_run(&l, s->ops->write, s, 2, 1, 50, 10, b), 0);
	/* unknown object with a base reads the base */
	ck_assert_int_eq(mio_run(&l, s->ops->read, s, 3, 1, 0, 100, b), 0);
	ck_assert_int_eq(memcmp(a, b, 100), 0);
	objstore_drop(s, 1);
	ck_assert_int_eq(mio_run(&l, s->ops->read, s, 2, 1, 0, 100, b), 0);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(b[i], i >= 50 && i < 60 ? 'B' : 'A');
	ck_assert_int_eq(mio_run(&l, s->ops->zero, s, 2, 0, 0, 55, NULL), 0);
	ck_assert_int_eq(mio_run(&l, s->ops->read, s, 2, 0, 0, 100, b), 0);
	ck_assert_int_eq(b[54], 0);
	ck_assert_int_eq(b[55], 'B');
	ck_assert_int_eq(b[99], 'A');
	/* beyond what was written: zeros */
	ck_assert_int_eq(mio_run(&l, s->ops->read, s, 2, 0, 1000, 10, b), 0);
	ck_assert_int_eq(b[0] | b[9], 0);
	objstore_drop(s, 1);
	objstore_drop(s, 2);
	memstore_get_stats(s, &st);
	ck_assert_uint_eq(st.objects, 0);
	ck_assert_uint_eq(st.double_drops, 1);
	ck_assert(memstore_was_dropped(s, 2));
	ck_assert(!memstore_was_dropped(s, 3));
	objstore_close(s);
	loop_fini(&l);
}
END_TEST

/* A commit that fails (map full) keeps every staged change visible and
 * reports the error to the flush; nothing is half applied. */
START_TEST(test_commit_failure)
{
	struct meta_opts o = base_opts;
	struct meta_stats st;
	struct meta *m;
	uint8_t val[2048];
	int r, n = 0;

	o.map_size = 512 << 10;
	ck_assert_int_eq(meta_open(dir, &o, &m), 0);
	for (int i = 0; i < 400; i++) {
		struct meta_txn *t = meta_wbegin(m);
		uint8_t k[2];

		key_of(i, k);
		memset(val, i & 0xff, sizeof(val));
		ck_assert_int_eq(meta_put(t, META_T_MAP, k, 2, val, sizeof(val)), 0);
		meta_end(t);
	}
	r = meta_sync(m);
	ck_assert_int_eq(r, -ENOSPC);
	ck_assert_ptr_nonnull(strstr(meta_last_error(), "MDB_MAP_FULL") ?
			      "" : NULL);
	meta_get_stats(m, &st);
	ck_assert_uint_eq(st.commit_errors, 1);
	ck_assert_uint_eq(st.entries[META_T_MAP], 0);       /* nothing applied */
	{
		struct meta_txn *t = meta_rbegin(m);

		for (int i = 0; i < 400; i++) {
			uint8_t k[2];

			key_of(i, k);
			if (meta_get(t, META_T_MAP, k, 2, val, sizeof(val)) ==
			    sizeof(val) && val[100] == (i & 0xff))
				n++;
		}
		meta_end(t);
	}
	ck_assert_int_eq(n, 400);
	/* delete most: the retry fits and applies the net result */
	for (int i = 20; i < 400; i++) {
		struct meta_txn *t = meta_wbegin(m);
		uint8_t k[2];

		key_of(i, k);
		ck_assert_int_eq(meta_del(t, META_T_MAP, k, 2), 0);
		meta_end(t);
	}
	ck_assert_int_eq(meta_sync(m), 0);
	meta_get_stats(m, &st);
	ck_assert_uint_eq(st.entries[META_T_MAP], 20);
	ck_assert_int_eq(meta_close(m), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta");
	TCase *tc = tcase_create("meta");

	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_overlay_model);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_size_threshold);
	tcase_add_test(tc, test_ids_after_crash);
	tcase_add_test(tc, test_memstore);
	tcase_add_test(tc, test_commit_failure);
	suite_add_tcase(s, tc);
	return check_run(s);
}
