/*
 * check_ssdscrub.c — the ssdcache's scrub (cache/ssdscrub.c) on 6 `dir`
 * backends with k=4 m=2: exactly k+m, so every version has one shard on
 * each backend (the mission's 20 servers with 16+4 in small).
 *
 *   - a shard file deleted on a backend: a shallow scrub counts it missing,
 *     queues its version, and the flusher rewrites it; a shard file
 *     corrupted afterwards: the shallow scrub does not see it, a deep one
 *     does (bad) and it is repaired; a last deep scrub finds every shard of
 *     every version present and verified;
 *   - one backend DOWN (fault injector) with more versions than the repair
 *     backlog bound (64), one shard deleted on a healthy backend: the scrub
 *     ENDS (before, it stalled with 64 repairs that could not be placed)
 *     with every version counted as waiting and none queued; once the
 *     backend is back the cache scrubs again by itself and repairs exactly
 *     the damaged version (the others were only on a backend that was down);
 *   - the rate limit: a deep scrub at a rate below one record's shards per
 *     tenth of a second is held by the bucket at least once per record
 *     after the first (scrub_throttled; asserted for half of them), an
 *     unlimited one never; no
 *     wall-clock assertion;
 *   - a backend emptied during a scrub: the run again that follows has
 *     its own figures (before, they were added to the first run's).
 *
 * Seeds: NBDSRV_SEED=<n> replays the data; each test prints its seed.
 */
#include "cache/cache.h"
#include "codec/codec.h"
#include "zdb/zdb.h"
#include "test/lib/rng.h"
#include "test/lib/check_run.h"
#include "test/cache/ssdfix.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOT   (64u << 10)
#define NBE    6u
#define K      4u
#define M      2u

static char dir[64], cpath[96];
static const uint8_t pool_id[16] = "ssd-scrub-test-1";
static struct loop lp;
static struct codec *codec;
static struct zdb_pool_cfg *pcfg;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/check_ssdscrub.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cpath, sizeof(cpath), "%s/cache", dir);
	ck_assert_int_eq(loop_init(&lp, 256), 0);
	ssdfix_codec(K, M, SLOT, 9, &codec);
	pcfg = calloc(1, sizeof(*pcfg));
	ck_assert_ptr_nonnull(pcfg);
	ssdfix_dir_pool(pcfg, dir, NBE, K, M);
}

static void teardown(void)
{
	codec_free(codec);
	free(pcfg);
	loop_fini(&lp);
	ssdfix_rmtree(dir);
}

/* A writethrough cache of nslots slots over the pool (fault injectors
 * around the backends), with its metadata, both created. */
static void open_store(unsigned nslots, struct meta **m, struct objstore **c)
{
	struct ssdcache_opts o = {
		.path = cpath, .size = 4096 + (uint64_t)nslots * SLOT,
		.slot_size = SLOT, .create = true, .pool_cfg = pcfg,
		.codec = codec, .writethrough = true, .fault_wrap = true,
		.flush_idle_ms = 0, .flush_idle_set = true,
	};

	ck_assert_int_eq(ssdfix_meta_open(dir, pool_id, true, m), 0);
	o.meta = *m;
	memcpy(o.pool_id, pool_id, 16);
	memset(o.shard_key_seed, 0x42, sizeof(o.shard_key_seed));
	ck_assert_int_eq(ssdcache_open(&o, c), 0);
}

static void close_store(struct meta *m, struct objstore *c)
{
	objstore_close(c);
	ck_assert_int_eq(meta_close(m), 0);
}

/* Write n objects of random data and FLUSH (writethrough: in the pool). */
static void write_objects(struct objstore *c, unsigned n)
{
	uint8_t *b = malloc(SLOT);
	struct sync_io s;

	ck_assert_ptr_nonnull(b);
	for (unsigned o = 1; o <= n; o++) {
		for (size_t i = 0; i < SLOT; i += 8) {
			uint64_t v = rnd();

			memcpy(b + i, &v, 8);
		}
		s = (struct sync_io){ .io = { .loop = &lp, .cb = sync_cb, .obj = o,
			.off = 0, .len = SLOT, .buf = b } };
		objstore_write(c, &s.io);
		ssdfix_wait(&lp, &s);
		ck_assert_int_eq(s.io.res, 0);
	}
	s = (struct sync_io){ .io = { .loop = &lp, .cb = sync_cb } };
	objstore_flush(c, &s.io);
	ssdfix_wait(&lp, &s);
	ck_assert_int_eq(s.io.res, 0);
	free(b);
}

/* Wait (bounded, 120 s) until a scrub after runs0 ended; its figures. */
static void wait_scrub(struct objstore *c, uint64_t runs0, struct ssdcache_stats *st)
{
	uint64_t t0 = now_ns();

	do {
		ssdcache_get_stats(c, st);
		if (st->scrub_runs > runs0 && !st->scrub_running)
			return;
		usleep(10000);
	} while (now_ns() - t0 < 120ull * 1000000000);
	ck_abort_msg("the scrub did not end: %llu of %llu records checked, "
		     "%llu queued, %llu waiting, %llu repairs pending",
		     (unsigned long long)st->scrub_checked,
		     (unsigned long long)st->scrub_total,
		     (unsigned long long)st->scrub_queued,
		     (unsigned long long)st->scrub_waiting,
		     (unsigned long long)st->repair_pending);
}

/* Run one scrub to its end; its figures in st. */
static void scrub(struct objstore *c, bool deep, int64_t rate, struct ssdcache_stats *st)
{
	uint64_t runs0;

	ssdcache_get_stats(c, st);
	runs0 = st->scrub_runs;
	ck_assert_int_eq(ssdcache_scrub_start(c, deep, rate), 0);
	wait_scrub(c, runs0, st);
	printf("scrub%s: %llu records, %llu shards, %llu missing, %llu bad, "
	       "%llu down, %llu queued, %llu waiting, %llu bytes, %llu throttled\n",
	       deep ? " (deep)" : "", (unsigned long long)st->scrub_checked,
	       (unsigned long long)st->scrub_shards,
	       (unsigned long long)st->scrub_missing, (unsigned long long)st->scrub_bad,
	       (unsigned long long)st->scrub_down, (unsigned long long)st->scrub_queued,
	       (unsigned long long)st->scrub_waiting, (unsigned long long)st->scrub_bytes,
	       (unsigned long long)st->scrub_throttled);
	fflush(stdout);
}

/* Wait (bounded, 60 s) for `repairs` repairs in all, none pending, and
 * the replaced versions' shards deleted (as many, no other overwrite). */
static void wait_repaired(struct objstore *c, uint64_t repairs)
{
	struct ssdcache_stats st;
	uint64_t t0 = now_ns();

	do {
		ssdcache_get_stats(c, &st);
		if (st.repairs >= repairs && !st.repair_pending &&
		    st.gc_versions >= repairs)
			break;
		usleep(10000);
	} while (now_ns() - t0 < 60ull * 1000000000);
	ck_assert_uint_eq(st.repairs, repairs);
	ck_assert_uint_eq(st.repair_pending, 0);
	ck_assert_uint_eq(st.gc_versions, repairs);
}

/* Path of the first shard file (by name) on backend be. */
static void shard_file(unsigned be, char *path, size_t len)
{
	DIR *d = opendir(pcfg->backends[be].address);
	struct dirent *de;
	char best[300] = "";

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		struct stat sb;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, len, "%s/%s", pcfg->backends[be].address, de->d_name);
		if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size < 100)
			continue;               /* the canary */
		if (!best[0] || strcmp(de->d_name, best) < 0)
			snprintf(best, sizeof(best), "%s", de->d_name);
	}
	closedir(d);
	ck_assert_msg(best[0], "no shard file on backend %u", be);
	snprintf(path, len, "%s/%s", pcfg->backends[be].address, best);
}

#define NOBJ 8u

START_TEST(test_scrub_missing_bad)
{
	struct meta *m;
	struct objstore *c;
	struct ssdcache_stats st;
	char path[512];
	uint8_t x;
	int fd;

	seed_init("test_scrub_missing_bad");
	open_store(32, &m, &c);
	write_objects(c, NOBJ);

	/* a clean pool: nothing found */
	scrub(c, false, -1, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_shards, NOBJ * (K + M));
	ck_assert_uint_eq(st.scrub_missing + st.scrub_bad + st.scrub_down, 0);
	ck_assert_uint_eq(st.scrub_queued, 0);

	/* a shard deleted: found by a shallow scrub, repaired */
	shard_file(1, path, sizeof(path));
	ck_assert_int_eq(unlink(path), 0);
	scrub(c, false, -1, &st);
	ck_assert_uint_eq(st.scrub_missing, 1);
	ck_assert_uint_eq(st.scrub_bad, 0);
	ck_assert_uint_eq(st.scrub_queued, 1);
	ck_assert_uint_eq(st.scrub_waiting, 0);
	wait_repaired(c, 1);

	/* a shard corrupted: invisible to a shallow scrub, found by a deep */
	shard_file(4, path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &x, 1, 77), 1);
	x ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &x, 1, 77), 1);
	close(fd);
	scrub(c, false, -1, &st);
	ck_assert_uint_eq(st.scrub_missing + st.scrub_bad, 0);
	ck_assert_uint_eq(st.scrub_queued, 0);
	scrub(c, true, 0, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_missing, 0);
	ck_assert_uint_eq(st.scrub_bad, 1);
	ck_assert_uint_eq(st.scrub_queued, 1);
	ck_assert_uint_gt(st.scrub_bytes, NOBJ * (K + M) * (SLOT / K) - 1);
	wait_repaired(c, 2);

	/* every shard of every version there and verified */
	scrub(c, true, 0, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_shards, NOBJ * (K + M));
	ck_assert_uint_eq(st.scrub_missing + st.scrub_bad + st.scrub_errors, 0);
	ck_assert_uint_eq(st.scrub_queued, 0);
	close_store(m, c);
}
END_TEST

#define NDOWN 80u       /* more than the scrub's repair backlog bound (64) */
#define DOWNBE 2u

START_TEST(test_scrub_backend_down)
{
	struct zdb_fault down = { .down = true }, none = { 0 };
	struct meta *m;
	struct objstore *c;
	struct ssdcache_stats st;
	char path[512];
	uint64_t runs, t0;

	seed_init("test_scrub_backend_down");
	open_store(NDOWN + 16, &m, &c);
	write_objects(c, NDOWN);
	ck_assert_int_eq(ssdcache_set_fault(c, DOWNBE, &down), 0);
	shard_file(0, path, sizeof(path));
	ck_assert_int_eq(unlink(path), 0);

	/* k+m - 1 backends up: the scrub ends, every version waiting (each has
	 * a shard on the backend down), none queued */
	scrub(c, false, -1, &st);
	ck_assert_uint_eq(st.scrub_checked, NDOWN);
	ck_assert_uint_eq(st.scrub_down, NDOWN);
	ck_assert_uint_eq(st.scrub_missing, 1);
	ck_assert_uint_eq(st.scrub_waiting, NDOWN);
	ck_assert_uint_eq(st.scrub_queued, 0);
	ck_assert_uint_eq(st.repair_pending, 0);
	/* no scrub of its own while the backend stays down */
	runs = st.scrub_runs;
	usleep(300000);
	ssdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.scrub_runs, runs);
	ck_assert_uint_eq(st.scrub_running, 0);

	/* back: the cache scrubs again by itself; only the version with the
	 * deleted shard is damaged, and it is repaired */
	ck_assert_int_eq(ssdcache_set_fault(c, DOWNBE, &none), 0);
	t0 = now_ns();
	do {
		ssdcache_get_stats(c, &st);
		if (st.scrub_runs > runs || st.scrub_running)
			break;
		usleep(10000);
	} while (now_ns() - t0 < 30ull * 1000000000);
	ck_assert_msg(st.scrub_runs > runs || st.scrub_running,
		      "no scrub after the backend came back");
	wait_scrub(c, runs, &st);
	ck_assert_uint_eq(st.scrub_checked, NDOWN);
	ck_assert_uint_eq(st.scrub_down, 0);
	ck_assert_uint_eq(st.scrub_missing, 1);
	ck_assert_uint_eq(st.scrub_waiting, 0);
	ck_assert_uint_eq(st.scrub_queued, 1);
	wait_repaired(c, 1);
	scrub(c, false, -1, &st);
	ck_assert_uint_eq(st.scrub_missing + st.scrub_down + st.scrub_waiting, 0);
	ck_assert_uint_eq(st.scrub_queued, 0);
	close_store(m, c);
}
END_TEST

START_TEST(test_scrub_rate)
{
	struct meta *m;
	struct objstore *c;
	struct ssdcache_stats st;
	/* a tenth of a second's tokens is less than one record's shards
	 * (k+m x about SLOT/k): the bucket holds every record but the first */
	int64_t rate = 4 * (int64_t)SLOT;

	seed_init("test_scrub_rate");
	open_store(32, &m, &c);
	write_objects(c, NOBJ);
	scrub(c, true, 0, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_rate, 0);
	ck_assert_uint_eq(st.scrub_throttled, 0);
	scrub(c, true, rate, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_bad + st.scrub_missing, 0);
	ck_assert_uint_eq(st.scrub_rate, (uint64_t)rate);
	/* (every record but the first finds the bucket empty right after the
	 * previous one's start; half of them, in case the thread was
	 * preempted that long in between) */
	ck_assert_uint_ge(st.scrub_throttled, (NOBJ - 1) / 2);
	/* a shallow scrub is not limited */
	scrub(c, false, rate, &st);
	ck_assert_uint_eq(st.scrub_rate, 0);
	ck_assert_uint_eq(st.scrub_throttled, 0);
	close_store(m, c);
}
END_TEST

/* A backend emptied while a scrub runs makes it run once more (shallow):
 * that run's figures are its own, as for any start — not added to the
 * first run's (checked 2N of N, every version counted waiting twice, and
 * "deep" with the first run's rate for a shallow run; `scrub --wait` then
 * exits 3 for versions that no longer wait).  The backend stays down for
 * both runs, so both count every version waiting. */
START_TEST(test_scrub_again_counts)
{
	struct zdb_fault down = { .down = true }, none = { 0 };
	struct meta *m;
	struct objstore *c;
	struct ssdcache_stats st;
	/* about 0.8 s per record after the first: the first run is still
	 * walking when the backend is reported emptied */
	int64_t rate = 2 * (int64_t)SLOT;
	uint64_t runs0, t0;

	seed_init("test_scrub_again_counts");
	open_store(32, &m, &c);
	write_objects(c, NOBJ);
	ck_assert_int_eq(ssdcache_set_fault(c, DOWNBE, &down), 0);
	ssdcache_get_stats(c, &st);
	runs0 = st.scrub_runs;
	ck_assert_int_eq(ssdcache_scrub_start(c, true, rate), 0);
	t0 = now_ns();
	do {
		ssdcache_get_stats(c, &st);
		if (st.scrub_checked >= 1)
			break;
		usleep(10000);
	} while (now_ns() - t0 < 30ull * 1000000000);
	ck_assert_uint_ge(st.scrub_checked, 1);
	/* (if the first run already ended, this starts a shallow scrub:
	 * the same figures are expected) */
	ssdcache_backend_emptied(c, "d03");
	wait_scrub(c, runs0, &st);
	printf("after the run again: %llu runs, %llu of %llu records checked, "
	       "%llu down, %llu waiting, deep %d, rate %llu\n",
	       (unsigned long long)(st.scrub_runs - runs0),
	       (unsigned long long)st.scrub_checked, (unsigned long long)st.scrub_total,
	       (unsigned long long)st.scrub_down, (unsigned long long)st.scrub_waiting,
	       (int)st.scrub_deep, (unsigned long long)st.scrub_rate);
	fflush(stdout);
	ck_assert_uint_eq(st.scrub_runs, runs0 + 2);
	ck_assert_uint_eq(st.scrub_total, NOBJ);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_shards, NOBJ * (K + M));
	ck_assert_uint_eq(st.scrub_down, NOBJ);
	ck_assert_uint_eq(st.scrub_waiting, NOBJ);
	ck_assert_uint_eq(st.scrub_queued, 0);
	ck_assert_uint_eq(st.scrub_deep, 0);
	ck_assert_uint_eq(st.scrub_rate, 0);
	ck_assert_uint_eq(st.scrub_bytes, 0);
	ck_assert_uint_eq(st.scrub_throttled, 0);
	/* back: the scrub for the versions left waiting finds them whole */
	ck_assert_int_eq(ssdcache_set_fault(c, DOWNBE, &none), 0);
	wait_scrub(c, runs0 + 2, &st);
	ck_assert_uint_eq(st.scrub_checked, NOBJ);
	ck_assert_uint_eq(st.scrub_down + st.scrub_missing + st.scrub_waiting, 0);
	ck_assert_uint_eq(st.scrub_queued, 0);
	close_store(m, c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ssdcache-scrub");
	TCase *tc = tcase_create("dir");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_scrub_missing_bad);
	tcase_add_test(tc, test_scrub_backend_down);
	tcase_add_test(tc, test_scrub_rate);
	tcase_add_test(tc, test_scrub_again_counts);
	suite_add_tcase(s, tc);
	return check_run(s);
}
