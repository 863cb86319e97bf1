/*
 * vol-bench.c — the costs vol/ promises to keep flat, measured.
 *
 *   1. snapshot and clone creation on a thin 1 GiB and a thin 1 TiB volume
 *      (same number of written chunks): the call alone, and call + commit;
 *   2. lookups (block status of one chunk) and 512-byte reads through the
 *      memstore, on a volume with 1 snapshot and on one whose every chunk
 *      was rewritten between each of 200 snapshots (200 map entries per
 *      chunk), at the head and at a snapshot in the middle.
 *
 * Usage: vol-bench [--dir DIR] [--seconds S]   (prints a markdown table)
 */
#include "vol/vol.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CS (64u << 10)
#define NCHUNK 256
#define NSNAP 200
#define BATCH 64

static struct loop bl;

struct bio {
	struct vol_io io;
	bool done;
	int res;
};

static void bio_cb(struct vol_io *io, int res)
{
	struct bio *b = container_of(io, struct bio, io);

	b->done = true;
	b->res = res;
}

static int run_batch(void (*fn)(struct vol_view *, struct vol_io *),
		     struct vol_view *v, struct bio *b, int n, uint64_t *offs,
		     uint64_t len, void *buf)
{
	int left = n;

	for (int i = 0; i < n; i++) {
		memset(&b[i], 0, sizeof(b[i]));
		b[i].io.loop = &bl;
		b[i].io.cb = bio_cb;
		b[i].io.off = offs[i];
		b[i].io.len = len;
		b[i].io.buf = (uint8_t *)buf + (size_t)i * len;
		fn(v, &b[i].io);
	}
	while (left) {
		int r = loop_run_once(&bl, 1000000000ull);

		if (r < 0)
			return r;
		left = 0;
		for (int i = 0; i < n; i++)
			left += !b[i].done;
	}
	for (int i = 0; i < n; i++)
		if (b[i].res < 0)
			return b[i].res;
	return 0;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int die(const char *what)
{
	fprintf(stderr, "vol-bench: %s: %s\n", what, vol_last_error());
	exit(1);
}

/* Mean ns of snapshot (or clone) creation on vol, n times. */
static void bench_create(struct vol_pool *p, const char *vol, bool clone, int n,
			 double *call_ns, double *commit_ns)
{
	static int nsnaps;
	uint64_t t_call = 0, t_all = 0;
	char name[64];

	for (int i = 0; i < n; i++) {
		uint64_t t0 = now_ns(), t1;
		int r;

		if (clone) {
			snprintf(name, sizeof(name), "%s-c%d", vol, i);
			r = vol_clone(p, vol, "base", name);
		} else {
			snprintf(name, sizeof(name), "b%d", nsnaps++);
			r = vol_snap_create(p, vol, name);
		}
		if (r < 0)
			die("create");
		t1 = now_ns();
		if (vol_sync(p) < 0)
			die("sync");
		t_call += t1 - t0;
		t_all += now_ns() - t0;
	}
	*call_ns = (double)t_call / n;
	*commit_ns = (double)t_all / n;
}

/* Lookups/s (block status of one random chunk) and reads/s. */
static void bench_lookup(struct vol_pool *p, const char *spec, double secs,
			 double *lookups, double *reads)
{
	static struct bio b[BATCH];
	static uint8_t buf[BATCH * 512];
	uint64_t offs[BATCH], n = 0, t0, dur = (uint64_t)(secs * 1e9);
	struct vol_extent ext[2];
	struct vol_view *v;

	if (vol_view_open(p, spec, &v) < 0)
		die(spec);
	t0 = now_ns();
	do {
		for (int i = 0; i < 1000; i++)
			if (vol_block_status(v, (rnd() % NCHUNK) * CS, CS, ext, 2) != 1)
				die("block status");
		n += 1000;
	} while (now_ns() - t0 < dur);
	*lookups = n / ((now_ns() - t0) / 1e9);
	n = 0;
	t0 = now_ns();
	do {
		for (int i = 0; i < BATCH; i++)
			offs[i] = (rnd() % NCHUNK) * CS;
		if (run_batch(vol_read, v, b, BATCH, offs, 512, buf) < 0)
			die("read");
		n += BATCH;
	} while (now_ns() - t0 < dur);
	*reads = n / ((now_ns() - t0) / 1e9);
	vol_view_close(v);
}

int main(int argc, char **argv)
{
	static struct bio b[BATCH];
	static uint8_t buf[BATCH * 512];
	const char *dir = NULL;
	char tmp[] = "/tmp/vol-bench.XXXXXX", cmd[128];
	double secs = 1.0, call[2][2], commit[2][2], lk[3], rd[3];
	struct vol_pool_opts o = { .k = 16, .m = 4, .create = true };
	struct objstore *store;
	struct vol_pool *p;
	uint64_t offs[BATCH];
	struct vol_view *v;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			dir = argv[++i];
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			secs = atof(argv[++i]);
			if (secs <= 0 || secs > 600) {
				fprintf(stderr, "vol-bench: bad --seconds\n");
				return 2;
			}
		} else {
			fprintf(stderr, "usage: vol-bench [--dir DIR] [--seconds S]\n");
			return 2;
		}
	}
	if (!dir && !(dir = mkdtemp(tmp))) {
		perror("mkdtemp");
		return 1;
	}
	if (loop_init(&bl, 256) < 0 || memstore_create(false, &store) < 0)
		return 1;
	o.path = dir;
	o.store = store;
	o.commit_delay_ns = UINT64_MAX;
	memcpy(o.pool_id, "vol-bench-pool!!", 16);
	if (vol_pool_open(&o, &p) < 0)
		die("open");

	/* 1. creation cost vs volume size (same 1024 written chunks) */
	for (int s = 0; s < 2; s++) {
		const char *name = s ? "tib" : "gib";
		uint64_t size = s ? 1ull << 40 : 1ull << 30;

		if (vol_create(p, name, size, CS) < 0 ||
		    vol_view_open(p, name, &v) < 0)
			die("create");
		for (int j = 0; j < 1024; j += BATCH) {
			for (int i = 0; i < BATCH; i++)
				offs[i] = (uint64_t)(j + i) * (size / 1024 / CS) * CS;
			if (run_batch(vol_write, v, b, BATCH, offs, 512, buf) < 0)
				die("write");
		}
		vol_view_close(v);
		if (vol_snap_create(p, name, "base") < 0 || vol_sync(p) < 0)
			die("snapshot");
		if (s == 0)     /* warm up the commit path */
			bench_create(p, name, false, 20, &call[s][0], &commit[s][0]);
		bench_create(p, name, false, 100, &call[s][0], &commit[s][0]);
		bench_create(p, name, true, 100, &call[s][1], &commit[s][1]);
	}

	/* 2. lookups with 1 vs 200 snapshots */
	if (vol_create(p, "one", NCHUNK * CS, CS) < 0 ||
	    vol_create(p, "many", NCHUNK * CS, CS) < 0)
		die("create");
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "many" : "one";
		int rounds = k ? NSNAP : 1;

		if (vol_view_open(p, name, &v) < 0)
			die("open");
		for (int s = 0; s < rounds; s++) {
			char sn[16];

			for (int j = 0; j < NCHUNK; j += BATCH) {
				for (int i = 0; i < BATCH; i++)
					offs[i] = (uint64_t)(j + i) * CS;
				if (run_batch(vol_write, v, b, BATCH, offs, 512, buf) < 0)
					die("write");
			}
			snprintf(sn, sizeof(sn), "s%d", s);
			if (vol_snap_create(p, name, sn) < 0)
				die("snapshot");
		}
		vol_view_close(v);
	}
	if (vol_sync(p) < 0)
		die("sync");
	bench_lookup(p, "one", secs / 2, &lk[0], &rd[0]);     /* warm-up */
	bench_lookup(p, "one", secs, &lk[0], &rd[0]);
	bench_lookup(p, "many", secs, &lk[1], &rd[1]);
	bench_lookup(p, "many@s100", secs, &lk[2], &rd[2]);

	printf("## vol-bench (memstore, chunk 64 KiB, metadata in %s)\n\n", dir);
	printf("| operation | 1 GiB volume | 1 TiB volume | ratio TiB/GiB |\n");
	printf("|---|---|---|---|\n");
	for (int c = 0; c < 2; c++) {
		printf("| %s create (call) | %.1f µs | %.1f µs | %.2f |\n",
		       c ? "clone" : "snapshot", call[0][c] / 1e3, call[1][c] / 1e3,
		       call[1][c] / call[0][c]);
		printf("| %s create + commit | %.1f µs | %.1f µs | %.2f |\n",
		       c ? "clone" : "snapshot", commit[0][c] / 1e3, commit[1][c] / 1e3,
		       commit[1][c] / commit[0][c]);
	}
	printf("\n| view | map entries per chunk | lookups/s | 512 B reads/s |"
	       " lookup ratio vs 1 snapshot | read ratio |\n");
	printf("|---|---|---|---|---|---|\n");
	printf("| head, 1 snapshot | 1 | %.0f | %.0f | 1.00 | 1.00 |\n", lk[0], rd[0]);
	printf("| head, 200 snapshots | 200 | %.0f | %.0f | %.2f | %.2f |\n", lk[1],
	       rd[1], lk[1] / lk[0], rd[1] / rd[0]);
	printf("| snapshot 100 of 200 | 200 | %.0f | %.0f | %.2f | %.2f |\n", lk[2],
	       rd[2], lk[2] / lk[0], rd[2] / rd[0]);

	{
		struct meta_stats ms;
		uint64_t all = 0;

		if (meta_get_stats(vol_pool_meta(p), &ms) == 0) {
			for (int i = 0; i < META_T_COUNT; i++)
				all += ms.entries[i];
			printf("\nmetadata: %llu map entries, %llu entries in all tables, "
			       "%llu bytes of LMDB pages: %.1f bytes per entry\n",
			       (unsigned long long)ms.entries[META_T_MAP],
			       (unsigned long long)all, (unsigned long long)ms.db_bytes,
			       all ? (double)ms.db_bytes / (double)all : 0.0);
		}
	}
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < 100; i++) {
			char name[64];

			snprintf(name, sizeof(name), "%s-c%d", s ? "tib" : "gib", i);
			vol_delete(p, name);
		}
	if (vol_pool_close(p) < 0)
		die("close");
	objstore_close(store);
	loop_fini(&bl);
	if (dir == tmp) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "vol-bench: cannot remove %s\n", tmp);
	}
	return 0;
}
