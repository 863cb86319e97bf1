/*
 * cache-bench.c — ssdcache throughput: 4 KiB random writes and reads (hits)
 * at a queue depth, whole-object sequential reads, FLUSH latency (fdatasync
 * + index staging + meta commit), and with a pool of `dir` backends (k=4
 * m=2) how fast the flusher drains dirty objects into it.
 *
 *   cache-bench [DIR] [--objects N] [--slot BYTES] [--ops N] [--qd N]
 *
 * DIR (default /tmp) holds the cache file, the metadata and the backends;
 * use a directory on the SSD you want to measure.  Numbers depend on the
 * machine and its load: compare runs on one machine, in one session.
 */
#include "cache/cache.h"
#include "codec/codec.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct loop lp;
static uint64_t rs = 88172645463325252ull;

static uint64_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

struct bio {
	struct objstore_io io;
	bool busy;
};

static unsigned done_ops;
static int first_err;

static void bio_cb(struct objstore_io *io, int res)
{
	struct bio *b = container_of(io, struct bio, io);

	b->busy = false;
	done_ops++;
	if (res && !first_err)
		first_err = res;
}

enum kind { K_WRITE, K_READ, K_SEQ, K_SEQW };

/* ops operations at queue depth qd; returns seconds. */
static double run(struct objstore *c, enum kind k, unsigned nobj, uint32_t slot,
		  unsigned ops, unsigned qd, uint8_t *bufs, size_t blen)
{
	struct bio *b = calloc(qd, sizeof(*b));
	unsigned issued = 0, i;
	uint64_t t0 = now_ns();

	done_ops = 0;
	while (done_ops < ops) {
		for (i = 0; i < qd && issued < ops; i++) {
			if (b[i].busy)
				continue;
			b[i].busy = true;
			b[i].io = (struct objstore_io){ .loop = &lp, .cb = bio_cb,
				.buf = bufs + (size_t)i * blen };
			if (k == K_SEQ || k == K_SEQW) {
				b[i].io.obj = 1 + issued % nobj;
				b[i].io.len = slot;
			} else {
				b[i].io.obj = 1 + rnd() % nobj;
				b[i].io.off = (rnd() % (slot / 4096)) * 4096;
				b[i].io.len = 4096;
			}
			issued++;
			if (k == K_WRITE || k == K_SEQW)
				objstore_write(c, &b[i].io);
			else
				objstore_read(c, &b[i].io);
		}
		loop_run_once(&lp, 1000000000ull);
	}
	free(b);
	return (double)(now_ns() - t0) / 1e9;
}

static int flush_sync(struct objstore *c, struct meta *m)
{
	struct bio b = { .busy = true };

	b.io = (struct objstore_io){ .loop = &lp, .cb = bio_cb };
	objstore_flush(c, &b.io);
	while (b.busy)
		loop_run_once(&lp, 1000000000ull);
	return first_err ? first_err : meta_sync(m);
}

int main(int argc, char **argv)
{
	const char *top = "/tmp";
	unsigned nobj = 64, ops = 20000, qd = 32;
	uint32_t slot = 1u << 20;
	char dir[200], path[300], err[200];
	struct meta_opts mo = { .pool_id = "cache-bench-pool", .create = true,
		.commit_delay_ns = UINT64_MAX };
	struct meta *m;
	struct objstore *c;
	uint8_t *bufs;
	double t;
	int r, i;

	for (i = 1; i < argc; i++) {
		uint64_t v;

		if (i + 1 < argc && !strcmp(argv[i], "--objects") && !parse_u64(argv[i + 1], &v))
			nobj = (unsigned)v, i++;
		else if (i + 1 < argc && !strcmp(argv[i], "--slot") && !parse_size(argv[i + 1], &v))
			slot = (uint32_t)v, i++;
		else if (i + 1 < argc && !strcmp(argv[i], "--ops") && !parse_u64(argv[i + 1], &v))
			ops = (unsigned)v, i++;
		else if (i + 1 < argc && !strcmp(argv[i], "--qd") && !parse_u64(argv[i + 1], &v))
			qd = (unsigned)v, i++;
		else if (argv[i][0] != '-')
			top = argv[i];
		else {
			fprintf(stderr, "usage: %s [DIR] [--objects N] [--slot BYTES] "
				"[--ops N] [--qd N]\n", argv[0]);
			return 2;
		}
	}
	if (!nobj || !qd || !ops || !IS_POW2(slot) || slot < (64u << 10) ||
	    slot > (8u << 20)) {
		fprintf(stderr, "cache-bench: bad arguments\n");
		return 2;
	}
	log_set_level(LOG_LEVEL_WARN);
	if (strlen(top) > 150) {
		fprintf(stderr, "cache-bench: directory name too long\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/cache-bench.XXXXXX", top);
	if (!mkdtemp(dir)) {
		perror(dir);
		return 1;
	}
	loop_init(&lp, 256);
	bufs = malloc((size_t)qd * slot);
	for (size_t j = 0; j < (size_t)qd * slot; j++)
		bufs[j] = (uint8_t)rnd();

	for (int pass = 0; pass < 2; pass++) {
		struct codec *codec = NULL;
		struct zdb_pool_cfg *pcfg = NULL;
		struct ssdcache_opts o = { .slot_size = slot, .create = true,
			.size = 4096 + (uint64_t)(nobj + 8) * slot };

		snprintf(path, sizeof(path), "%s/meta%d", dir, pass);
		mkdir(path, 0700);
		if ((r = meta_open(path, &mo, &m)) < 0) {
			fprintf(stderr, "meta: %s\n", meta_last_error());
			return 1;
		}
		snprintf(path, sizeof(path), "%s/cache%d", dir, pass);
		o.path = path;
		o.meta = m;
		memcpy(o.pool_id, mo.pool_id, 16);
		if (pass == 1) {
			struct codec_params cp = { .k = 4, .m = 2, .max_chunk = slot };
			uint8_t raw[CODEC_KEY_SIZE] = { 1 };
			struct codec_key *key;

			codec_key_from_bytes(raw, &key);
			if (codec_new(&cp, key, &codec, err, sizeof(err)) < 0) {
				fprintf(stderr, "codec: %s\n", err);
				return 1;
			}
			codec_key_free(key);
			pcfg = calloc(1, sizeof(*pcfg));
			zdb_pool_cfg_defaults(pcfg);
			pcfg->k = 4;
			pcfg->m = 2;
			pcfg->nbackends = 6;
			for (unsigned b = 0; b < 6; b++) {
				struct zdb_backend_cfg *bc = &pcfg->backends[b];

				snprintf(bc->name, sizeof(bc->name), "d%u", b);
				snprintf(bc->address, sizeof(bc->address), "%.200s/be%u", dir, b);
				bc->kind = ZDB_KIND_DIR;
				mkdir(bc->address, 0700);
			}
			o.pool_cfg = pcfg;
			o.codec = codec;
			o.dirty_max = nobj;
		}
		if ((r = ssdcache_open(&o, &c)) < 0) {
			fprintf(stderr, "ssdcache_open: %s\n", strerror(-r));
			return 1;
		}
		if (pass == 0) {
			struct ssdcache_stats st;
			uint64_t t0;

			printf("ssdcache, %u objects of %u KiB, qd %u, %s\n", nobj,
			       slot >> 10, qd, dir);
			/* fill every object so reads are hits of written data */
			t = run(c, K_SEQW, nobj, slot, nobj, MIN(qd, 8u), bufs, slot);
			printf("  %u KiB object write %8.0f MB/s\n", slot >> 10,
			       nobj * (double)slot / t / 1e6);
			t = run(c, K_WRITE, nobj, slot, ops, qd, bufs, 4096);
			printf("  4 KiB random write   %8.0f IOPS  %7.1f MB/s\n",
			       ops / t, ops * 4096.0 / t / 1e6);
			t0 = now_ns();
			flush_sync(c, m);
			printf("  flush after them     %8.2f ms (fdatasync + index + commit)\n",
			       (double)(now_ns() - t0) / 1e6);
			t = run(c, K_READ, nobj, slot, ops, qd, bufs, 4096);
			printf("  4 KiB random read    %8.0f IOPS  %7.1f MB/s (hits)\n",
			       ops / t, ops * 4096.0 / t / 1e6);
			t = run(c, K_SEQ, nobj, slot, nobj * 4, MIN(qd, 8u), bufs, slot);
			printf("  %u KiB object read  %8.0f MB/s\n", slot >> 10,
			       nobj * 4.0 * slot / t / 1e6);
			t0 = now_ns();
			for (int f = 0; f < 20; f++) {
				run(c, K_WRITE, nobj, slot, 1, 1, bufs, 4096);
				flush_sync(c, m);
			}
			printf("  write + flush        %8.2f ms each (20 rounds)\n",
			       (double)(now_ns() - t0) / 1e6 / 20);
			ssdcache_get_stats(c, &st);
			if (first_err)
				printf("  ERROR: %s\n", strerror(-first_err));
		} else {
			struct ssdcache_stats st;
			uint64_t t0 = now_ns();

			run(c, K_SEQW, nobj, slot, nobj, MIN(qd, 8u), bufs, slot);
			flush_sync(c, m);
			do {
				usleep(2000);
				ssdcache_get_stats(c, &st);
			} while (st.pool_dirty);
			t = (double)(now_ns() - t0) / 1e9;
			printf("  write %u objects + flush to 6 dir backends (k=4 m=2, "
			       "writeback): %.0f MB/s of objects (%.2f s)\n", nobj,
			       nobj * (double)slot / t / 1e6, t);
		}
		objstore_close(c);
		meta_close(m);
		codec_free(codec);
		free(pcfg);
	}
	free(bufs);
	loop_fini(&lp);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	if (system(path) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return first_err ? 1 : 0;
}
