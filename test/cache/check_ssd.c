/*
 * check_ssd.c — ssdcache in local-only mode: random ops compared with
 * memstore (COW bases, unaligned writes, zeros, drops, reopen), refusal of
 * foreign / damaged / re-created cache files, and SIGKILL recovery (a
 * forked writer killed at random; every block covered by a completed FLUSH
 * must read back, every other block must be its old or its new content);
 * the cache file's blocks are allocated at create and at open (a sparse
 * file left by an older build gets its holes filled, its data unchanged).
 *
 * Seeds: NBDSRV_SEED=<n> replays the randomized tests; they print the seed.
 */
#include "cache/cache.h"
#include "test/lib/rng.h"
#include "test/lib/check_run.h"
#include "test/cache/ssdfix.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOT   (64u << 10)
#define NSLOTS 128u

static char dir[64], cpath[96];
static const uint8_t pool_a[16] = "ssd-test-pool-A!";
static struct loop lp;


static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/check_ssd.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cpath, sizeof(cpath), "%s/cache", dir);
	ck_assert_int_eq(loop_init(&lp, 256), 0);
}

static void teardown(void)
{
	loop_fini(&lp);
	ssdfix_rmtree(dir);
}

static int meta_at(bool create, const uint8_t pool[16], struct meta **m)
{
	return ssdfix_meta_open(dir, pool, create, m);
}

static int cache_at(const char *path, struct meta *m, const uint8_t pool[16],
		    uint32_t slot, bool create, struct objstore **out)
{
	struct ssdcache_opts o = {
		.path = path, .size = 4096 + (uint64_t)NSLOTS * slot,
		.slot_size = slot, .meta = m, .create = create,
	};

	memcpy(o.pool_id, pool, 16);
	return ssdcache_open(&o, out);
}

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_FLUSH };

static int do_io(struct objstore *st, enum op op, uint64_t obj, uint64_t base,
		 uint64_t off, uint64_t len, void *buf)
{
	struct sync_io s = { .io = { .loop = &lp, .cb = sync_cb, .obj = obj,
		.base = base, .off = off, .len = len, .buf = buf } };

	switch (op) {
	case OP_READ: objstore_read(st, &s.io); break;
	case OP_WRITE: objstore_write(st, &s.io); break;
	case OP_ZERO: objstore_zero(st, &s.io); break;
	case OP_FLUSH: objstore_flush(st, &s.io); break;
	}
	ck_assert_msg(!s.done, "op completed inside its submit call");
	ssdfix_wait(&lp, &s);
	return s.io.res;
}

static void fill(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd();

		memcpy(b + i, &v, MIN((size_t)8, n - i));
	}
}

/* ------------------------------------------------------------------------ */

#define MOBJ 200

struct mo {
	uint64_t base;
	bool live, frozen, created;
};

static void model_check(struct objstore *ssd, struct objstore *mem,
			struct mo *o, uint64_t id, uint8_t *a, uint8_t *b)
{
	uint64_t off = rnd() % SLOT, len = 1 + rnd() % (SLOT - off);

	if (rnd() % 2) {
		off = 0;
		len = SLOT;
	}
	memset(a, 0xa5, len);
	memset(b, 0x5a, len);
	ck_assert_int_eq(do_io(ssd, OP_READ, id, o[id].base, off, len, a), 0);
	ck_assert_int_eq(do_io(mem, OP_READ, id, o[id].base, off, len, b), 0);
	ck_assert_msg(memcmp(a, b, len) == 0,
		      "object %llu [%llu, +%llu) differs from the model",
		      (unsigned long long)id, (unsigned long long)off,
		      (unsigned long long)len);
}

START_TEST(test_model)
{
	struct meta *m;
	struct objstore *ssd, *mem;
	struct mo o[MOBJ + 1] = { { 0 } };
	uint8_t *a = malloc(SLOT), *b = malloc(SLOT), *w = malloc(SLOT);
	uint64_t next = 1, id;
	int i, live = 0;
	struct ssdcache_stats st;

	seed_init("test_model");
	ck_assert_int_eq(meta_at(true, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), 0);
	ck_assert_int_eq(memstore_create(false, &mem), 0);
	for (i = 0; i < 3000; i++) {
		unsigned c = (unsigned)(rnd() % 100);

		if (c < 8 && next <= MOBJ && live < (int)NSLOTS / 2) {
			/* a new object, maybe from a frozen base */
			uint64_t base = 0, cand = 1 + rnd() % (next);

			if (cand < next && o[cand].live && rnd() % 3) {
				base = cand;
				o[cand].frozen = true;
			}
			id = next++;
			o[id] = (struct mo){ .base = base, .live = true };
			live++;
			uint64_t off = rnd() % SLOT, len = 1 + rnd() % MIN(SLOT - off, 20000);

			fill(w, len);
			ck_assert_int_eq(do_io(ssd, OP_WRITE, id, base, off, len, w), 0);
			ck_assert_int_eq(do_io(mem, OP_WRITE, id, base, off, len, w), 0);
			continue;
		}
		if (next == 1)
			continue;
		id = 1 + rnd() % (next - 1);
		if (!o[id].live)
			continue;
		if (c < 40 && !o[id].frozen) {
			uint64_t off, len;

			if (rnd() % 2) {
				off = (rnd() % (SLOT / 4096)) * 4096;
				len = 4096 * (1 + rnd() % ((SLOT - off) / 4096));
			} else {
				off = rnd() % SLOT;
				len = 1 + rnd() % MIN(SLOT - off, 9000);
			}
			fill(w, len);
			bool z = rnd() % 5 == 0;

			ck_assert_int_eq(do_io(ssd, z ? OP_ZERO : OP_WRITE, id,
					       o[id].base, off, len, w), 0);
			ck_assert_int_eq(do_io(mem, z ? OP_ZERO : OP_WRITE, id,
					       o[id].base, off, len, w), 0);
		} else if (c < 80) {
			model_check(ssd, mem, o, id, a, b);
		} else if (c < 88) {
			objstore_drop(ssd, id);
			/* memstore copies eagerly: drop is immediate there */
			objstore_drop(mem, id);
			o[id].live = false;
			live--;
		} else if (c < 92) {
			ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
			ck_assert_int_eq(meta_sync(m), 0);
		} else if (c < 94) {
			/* clean reopen */
			ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
			objstore_close(ssd);
			ck_assert_int_eq(meta_close(m), 0);
			ck_assert_int_eq(meta_at(false, pool_a, &m), 0);
			ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), 0);
		}
	}
	for (id = 1; id < next; id++)
		if (o[id].live)
			model_check(ssd, mem, o, id, a, b);
	/* drop everything: every slot must come back (after the deletions
	 * are staged by the cache thread) */
	for (id = 1; id < next; id++)
		if (o[id].live)
			objstore_drop(ssd, id);
	ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
	for (i = 0; i < 30000; i++) {          /* bounded 60 s: a hang guard */
		ssdcache_get_stats(ssd, &st);
		if (!st.slots_used)
			break;
		usleep(2000);
	}
	ck_assert_uint_eq(st.objects, 0);
	ck_assert_uint_eq(st.slots_used, 0);
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	ck_assert_int_eq(meta_at(false, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), 0);
	ssdcache_get_stats(ssd, &st);
	ck_assert_uint_eq(st.objects, 0);
	objstore_close(ssd);
	objstore_close(mem);
	ck_assert_int_eq(meta_close(m), 0);
	free(a);
	free(b);
	free(w);
}
END_TEST

/* A base dropped while a dependent needs it is retained, across a reopen,
 * and freed once the dependent owns every block and a FLUSH staged its
 * record without the base (before, a crash would find the record naming
 * it). */
START_TEST(test_base_retained)
{
	struct meta *m;
	struct objstore *ssd;
	uint8_t *x = malloc(SLOT), *y = malloc(SLOT), *r = malloc(SLOT);
	struct ssdcache_stats st;

	seed_init("test_base_retained");
	ck_assert_int_eq(meta_at(true, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), 0);
	fill(x, SLOT);
	fill(y, 100);
	ck_assert_int_eq(do_io(ssd, OP_WRITE, 1, 0, 0, SLOT, x), 0);
	ck_assert_int_eq(do_io(ssd, OP_WRITE, 2, 1, 5000, 100, y), 0);
	objstore_drop(ssd, 1);
	ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
	ck_assert_int_eq(meta_sync(m), 0);
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	ck_assert_int_eq(meta_at(false, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), 0);
	ssdcache_get_stats(ssd, &st);
	ck_assert_uint_eq(st.slots_used, 2);
	memcpy(x + 5000, y, 100);
	ck_assert_int_eq(do_io(ssd, OP_READ, 2, 1, 0, SLOT, r), 0);
	ck_assert_msg(memcmp(r, x, SLOT) == 0, "dependent lost its base's bytes");
	/* the dependent takes every block: the base goes after a FLUSH */
	ck_assert_int_eq(do_io(ssd, OP_WRITE, 2, 1, 0, SLOT, x), 0);
	ssdcache_get_stats(ssd, &st);
	ck_assert_uint_eq(st.slots_used, 2);
	ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
	for (int i = 0; i < 15000; i++) {
		ssdcache_get_stats(ssd, &st);
		if (st.slots_used == 1)
			break;
		usleep(2000);
	}
	ck_assert_uint_eq(st.slots_used, 1);
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	free(x);
	free(y);
	free(r);
}
END_TEST

static uint64_t allocated(const char *path)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return (uint64_t)sb.st_blocks * 512;
}

START_TEST(test_prealloc)
{
	const uint64_t size = 4096 + (uint64_t)NSLOTS * SLOT;
	struct meta *m;
	struct objstore *ssd;
	uint8_t *x = malloc(SLOT), *r = malloc(SLOT), *img = malloc(size), *img2 = malloc(size);
	static const uint8_t zero[4096];
	int fd;

	seed_init("test_prealloc");
	fd = open(cpath, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0 &&
	    errno == EOPNOTSUPP) {
		fprintf(stderr, "test_prealloc: %s has no fallocate: skipped\n", dir);
		close(fd);
		unlink(cpath);
		free(x);
		free(r);
		free(img);
		free(img2);
		return;
	}
	close(fd);
	unlink(cpath);
	ck_assert_int_eq(meta_at(true, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), 0);
	ck_assert_msg(allocated(cpath) >= size, "new cache file: %llu of %llu bytes allocated",
		      (unsigned long long)allocated(cpath), (unsigned long long)size);
	fill(x, SLOT);
	ck_assert_int_eq(do_io(ssd, OP_WRITE, 7, 0, 0, SLOT, x), 0);
	ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
	ck_assert_int_eq(meta_sync(m), 0);
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	/* as an older build left it: every all-zero 4 KiB block a hole */
	fd = open(cpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, img, size, 0), (ssize_t)size);
	for (uint64_t o = 0; o < size; o += 4096)
		if (!memcmp(img + o, zero, 4096))
			ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						   (off_t)o, 4096), 0);
	close(fd);
	ck_assert_uint_lt(allocated(cpath), size / 2);
	ck_assert_int_eq(meta_at(false, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), 0);
	ck_assert_msg(allocated(cpath) >= size, "reopened cache file: %llu of %llu bytes allocated",
		      (unsigned long long)allocated(cpath), (unsigned long long)size);
	ck_assert_int_eq(do_io(ssd, OP_READ, 7, 0, 0, SLOT, r), 0);
	ck_assert_msg(memcmp(r, x, SLOT) == 0, "object changed by the preallocation");
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	fd = open(cpath, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, img2, size, 0), (ssize_t)size);
	close(fd);
	ck_assert_msg(memcmp(img, img2, size) == 0, "cache file bytes changed by the preallocation");
	free(x);
	free(r);
	free(img);
	free(img2);
}
END_TEST

START_TEST(test_refuse)
{
	struct meta *m;
	struct objstore *ssd;
	const uint8_t pool_b[16] = "ssd-test-pool-B!";
	uint8_t buf[4096] = { 1 };
	char other[128];
	int fd;

	ck_assert_int_eq(meta_at(true, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), 0);
	ck_assert_int_eq(do_io(ssd, OP_WRITE, 7, 0, 0, 4096, buf), 0);
	ck_assert_int_eq(do_io(ssd, OP_FLUSH, 0, 0, 0, 0, NULL), 0);
	ck_assert_int_eq(meta_sync(m), 0);
	objstore_close(ssd);

	/* another pool, another slot size */
	ck_assert_int_eq(cache_at(cpath, m, pool_b, SLOT, false, &ssd), -EINVAL);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, 2 * SLOT, false, &ssd), -EINVAL);
	/* a cache file of the same pool that the index does not describe */
	snprintf(other, sizeof(other), "%s/other", dir);
	ck_assert_int_eq(cache_at(other, m, pool_a, SLOT, true, &ssd), -ESTALE);
	/* a file that is not a cache is never overwritten */
	fd = open(other, O_WRONLY | O_TRUNC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "hello, world", 12), 12);
	close(fd);
	ck_assert_int_eq(cache_at(other, m, pool_a, SLOT, true, &ssd), -EUCLEAN);
	/* damage: one flipped bit of the header */
	fd = open(cpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, 1, 100), 1);
	buf[0] ^= 4;
	ck_assert_int_eq(pwrite(fd, buf, 1, 100), 1);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), -EUCLEAN);
	buf[0] ^= 4;
	ck_assert_int_eq(pwrite(fd, buf, 1, 100), 1);
	/* truncated */
	ck_assert_int_eq(ftruncate(fd, 4096 + SLOT), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), -EUCLEAN);
	close(fd);
	/* deleted and re-created while the index holds data */
	ck_assert_int_eq(unlink(cpath), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), -ENOENT);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), -ESTALE);
	/* bad options */
	ck_assert_int_eq(cache_at(cpath, m, pool_a, 4096, true, &ssd), -EINVAL);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, 3 * SLOT, true, &ssd), -EINVAL);
	ck_assert_int_eq(meta_close(m), 0);
}
END_TEST

/* ------------------------------------------------------------- crash ---- */

#define COBJ   6
#define CBLK   (SLOT / 4096)
#define CWRITES 12

struct cw {
	uint32_t obj, blk, off, len;    /* within one block */
	bool zero;
	uint64_t pat;
};

/* The writes of round `round` of the run seeded `seed` (distinct blocks). */
static void round_plan(uint64_t seed, uint64_t round, struct cw *cw)
{
	uint64_t save = rs;

	rs = seed * 0x9e3779b97f4a7c15ull + round * 0xbf58476d1ce4e5b9ull + 1;
	for (int i = 0; i < CWRITES; i++) {
		bool dup;

		do {
			cw[i].obj = 1 + (uint32_t)(rnd() % COBJ);
			cw[i].blk = (uint32_t)(rnd() % CBLK);
			dup = false;
			for (int j = 0; j < i; j++)
				dup |= cw[j].obj == cw[i].obj && cw[j].blk == cw[i].blk;
		} while (dup);
		if (rnd() % 2) {
			cw[i].off = 0;
			cw[i].len = 4096;
		} else {
			cw[i].off = (uint32_t)(rnd() % 4096);
			cw[i].len = 1 + (uint32_t)(rnd() % (4096 - cw[i].off));
		}
		cw[i].zero = rnd() % 6 == 0;
		cw[i].pat = rnd();
	}
	rs = save;
}

static void cw_bytes(const struct cw *c, uint8_t *b)
{
	for (uint32_t i = 0; i < c->len; i++)
		b[i] = c->zero ? 0 : (uint8_t)(c->pat >> (8 * (i % 8))) ^ (uint8_t)(i / 8);
}

static void apply_round(uint64_t seed, uint64_t round, uint8_t *img)
{
	struct cw cw[CWRITES];
	uint8_t b[4096];

	round_plan(seed, round, cw);
	for (int i = 0; i < CWRITES; i++) {
		cw_bytes(&cw[i], b);
		memcpy(img + (uint64_t)(cw[i].obj - 1) * SLOT + cw[i].blk * 4096u +
		       cw[i].off, b, cw[i].len);
	}
}

static void crash_child(uint64_t seed, int pfd)
{
	struct meta *m;
	struct objstore *ssd;
	struct cw cw[CWRITES];
	struct sync_io s[CWRITES];
	uint8_t bufs[CWRITES][4096];

	if (loop_init(&lp, 256) < 0 || meta_at(false, pool_a, &m) < 0 ||
	    cache_at(cpath, m, pool_a, SLOT, false, &ssd) < 0)
		_exit(3);
	for (uint64_t round = 1;; round++) {
		int left = CWRITES;

		round_plan(seed, round, cw);
		for (int i = 0; i < CWRITES; i++) {
			cw_bytes(&cw[i], bufs[i]);
			s[i] = (struct sync_io){ .io = { .loop = &lp, .cb = sync_cb,
				.obj = cw[i].obj, .off = cw[i].blk * 4096u + cw[i].off,
				.len = cw[i].len, .buf = bufs[i] } };
			if (cw[i].zero)
				objstore_zero(ssd, &s[i].io);
			else
				objstore_write(ssd, &s[i].io);
		}
		while (left) {
			if (loop_run_once(&lp, 1000000000ull) < 0)
				_exit(4);
			left = 0;
			for (int i = 0; i < CWRITES; i++) {
				left += !s[i].done;
				if (s[i].done && s[i].io.res)
					_exit(5);
			}
		}
		struct sync_io f = { .io = { .loop = &lp, .cb = sync_cb } };

		objstore_flush(ssd, &f.io);
		while (!f.done)
			if (loop_run_once(&lp, 1000000000ull) < 0)
				_exit(4);
		if (f.io.res || meta_sync(m) < 0)
			_exit(6);
		if (write(pfd, &round, sizeof(round)) != sizeof(round))
			_exit(7);
	}
}

START_TEST(test_crash)
{
	uint64_t seed0 = seed_init("test_crash");
	uint8_t *img = calloc(COBJ, SLOT), *next = malloc((size_t)COBJ * SLOT);
	uint8_t *got = malloc(SLOT);
	struct meta *m;
	struct objstore *ssd;
	int iters = 12, total_rounds = 0;

	ck_assert_int_eq(meta_at(true, pool_a, &m), 0);
	ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, true, &ssd), 0);
	objstore_close(ssd);
	ck_assert_int_eq(meta_close(m), 0);
	for (int it = 0; it < iters; it++) {
		uint64_t seed = seed0 + (uint64_t)it * 7919, round, last = 0;
		int pfd[2], status;
		pid_t pid;

		ck_assert_int_eq(pipe(pfd), 0);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			close(pfd[0]);
			crash_child(seed, pfd[1]);
			_exit(0);
		}
		close(pfd[1]);
		usleep((useconds_t)(20000 + rnd() % 150000));
		kill(pid, SIGKILL);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFSIGNALED(status), "child exited early (status %d)",
			      WEXITSTATUS(status));
		while (read(pfd[0], &round, sizeof(round)) == sizeof(round))
			last = round;
		close(pfd[0]);
		total_rounds += (int)last;

		/* durable: rounds 1..last; maybe round last+1 in part */
		for (round = 1; round <= last; round++)
			apply_round(seed, round, img);
		memcpy(next, img, (size_t)COBJ * SLOT);
		apply_round(seed, last + 1, next);

		ck_assert_int_eq(meta_at(false, pool_a, &m), 0);
		ck_assert_int_eq(cache_at(cpath, m, pool_a, SLOT, false, &ssd), 0);
		for (uint32_t o = 1; o <= COBJ; o++) {
			ck_assert_int_eq(do_io(ssd, OP_READ, o, 0, 0, SLOT, got), 0);
			for (uint32_t b = 0; b < CBLK; b++) {
				uint64_t at = (uint64_t)(o - 1) * SLOT + b * 4096u;
				bool old_ok = !memcmp(got + b * 4096u, img + at, 4096);
				bool new_ok = !memcmp(got + b * 4096u, next + at, 4096);

				ck_assert_msg(old_ok || new_ok,
					      "iteration %d (seed %llu): object %u block %u "
					      "is neither round %llu's nor the next's",
					      it, (unsigned long long)seed, o, b,
					      (unsigned long long)last);
				/* what is there now is what the next run sees */
				memcpy(img + at, got + b * 4096u, 4096);
			}
		}
		objstore_close(ssd);
		ck_assert_int_eq(meta_close(m), 0);
	}
	printf("test_crash: %d iterations, %d flushed rounds checked\n", iters,
	       total_rounds);
	ck_assert_int_gt(total_rounds, 0);
	free(img);
	free(next);
	free(got);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ssdcache");
	TCase *tc = tcase_create("local");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_model);
	tcase_add_test(tc, test_base_retained);
	tcase_add_test(tc, test_prealloc);
	tcase_add_test(tc, test_refuse);
	tcase_add_test(tc, test_crash);
	suite_add_tcase(s, tc);
	return check_run(s);
}
