/*
 * e2e_blk.c — a verifying block writer for the crash tests (test/e2e/).
 *
 * Every 4 KiB block the writer stores is self-describing: a 32-byte header
 * (magic, block number, generation, seed) and a body that is a keyed
 * pseudo-random function of (seed, block, generation).  A generation is a
 * number unique to one write of one block and increasing per block, so the
 * content of a block names exactly which write put it there, and a torn or
 * foreign block (wrong block number, mixed halves, garbage) is caught.
 *
 *   e2e_blk write URI --blocks N --seed S --gen-base G --state IN --out OUT
 *                     [--qd Q] [--flush-ms F] [--duration-ms D]
 *     Flushes once at start (IN — the generations read back by the last
 *     verify, or absent = all zero — becomes durable), then keeps Q random
 *     writes in flight (never two on one block), and every F ms sends a
 *     FLUSH.  The acknowledged generations at the moment a FLUSH is SENT
 *     are, once it completes, the durable floor: OUT is rewritten (tmp +
 *     rename) after every completed FLUSH.  After D ms it drains, flushes
 *     and exits 0, OUT then being exact.  Exit 3 when the server went away
 *     (the crash tests kill it), 1 on any other failure (a write error while
 *     connected is a failure).
 *
 *   e2e_blk verify URI --blocks N --seed S --state FILE (--exact|--floor)
 *                      [--out OUT]
 *     Reads every block.  --floor: each must hold a generation >= the state's
 *     (a flushed write is never lost; a later write may or may not have
 *     landed, but only whole, and only one the writer made); --exact: each
 *     must hold exactly the state's generation (snapshots, clean runs).
 *     Generation 0 is an all-zero block (never written).  OUT gets the
 *     generations read.  Exit 0 ok, 1 mismatch (the first ones printed).
 *
 * Why this and not only fio --verify=crc32c: fio's crc32c header checks that
 * a block is internally consistent, so a block that silently went back to
 * an OLDER complete version after a crash (a lost flushed write, the failure
 * a cache/pool commit bug produces) still verifies; here the floor per block
 * is the generation acknowledged before the last completed FLUSH, so that
 * loss is caught, and so is a block that moved (header block number).
 *
 * State file: "E2EBLK1\0", u64 blocks, then u64 generation per block.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define BS 4096u
#define MAGIC 0x4532454b4c4231ull /* "E2EKLB1" */
#define QD_MAX 64

static uint64_t nblocks, seed, gen_base;
static const char *state_in, *state_out;
static unsigned qd = 16, flush_ms = 100;
static uint64_t duration_ms = 3000;

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void block_fill(uint8_t *p, uint64_t b, uint64_t g)
{
	uint64_t h[4] = { MAGIC, b, g, seed };
	uint64_t x = seed ^ (b * 0x100000001b3ull) ^ (g * 0xc2b2ae3d27d4eb4full);
	memcpy(p, h, sizeof(h));
	for (size_t i = sizeof(h); i < BS; i += 8) {
		uint64_t v = splitmix(&x);
		memcpy(p + i, &v, 8);
	}
}

static bool is_zero(const uint8_t *p)
{
	for (size_t i = 0; i < BS; i++)
		if (p[i])
			return false;
	return true;
}

/* The generation p holds, or -1 with *why set when it is no writer's block. */
static int64_t block_gen(const uint8_t *p, uint64_t b, const char **why)
{
	static uint8_t want[BS];
	uint64_t h[4];
	if (is_zero(p))
		return 0;
	memcpy(h, p, sizeof(h));
	if (h[0] != MAGIC || h[3] != seed) {
		*why = "no writer header (garbage or foreign data)";
		return -1;
	}
	if (h[1] != b) {
		*why = "header of another block (misplaced data)";
		return -1;
	}
	block_fill(want, b, h[2]);
	if (memcmp(want, p, BS)) {
		*why = "body does not match its header (torn or corrupt block)";
		return -1;
	}
	return (int64_t)h[2];
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int state_load(const char *path, uint64_t *gens)
{
	char magic[8];
	uint64_t n;
	FILE *f = fopen(path, "rb");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "e2e_blk: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fread(magic, 8, 1, f) != 1 || memcmp(magic, "E2EBLK1", 8) ||
	    fread(&n, 8, 1, f) != 1 || n != nblocks ||
	    fread(gens, 8, nblocks, f) != nblocks) {
		fprintf(stderr, "e2e_blk: %s: not a state file of %" PRIu64 " blocks\n",
			path, nblocks);
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

static int state_save(const char *path, const uint64_t *gens)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f || fwrite("E2EBLK1", 8, 1, f) != 1 || fwrite(&nblocks, 8, 1, f) != 1 ||
	    fwrite(gens, 8, nblocks, f) != nblocks || fclose(f) != 0 ||
	    rename(tmp, path) < 0) {
		fprintf(stderr, "e2e_blk: writing %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------- writer --- */

struct slot {
	bool busy;
	uint64_t block, gen;
	uint8_t buf[BS];
};

static struct slot slots[QD_MAX];
static uint64_t *acked, *durable, *flush_snap;
static bool *inflight;
static bool flush_busy, failed, flush_done_pending;
static uint64_t flushes_done, writes_done;
static int first_err;

static int write_done(void *ud, int *error)
{
	struct slot *s = ud;
	if (*error) {
		failed = true;
		if (!first_err) {
			first_err = *error;
			fprintf(stderr, "e2e_blk write: WRITE of block %" PRIu64 " failed: %s\n",
				s->block, strerror(*error));
		}
	} else {
		if (s->gen > acked[s->block])
			acked[s->block] = s->gen;
		writes_done++;
	}
	inflight[s->block] = false;
	s->busy = false;
	return 1;
}

static int flush_done(void *ud, int *error)
{
	(void)ud;
	if (*error) {
		failed = true;
		if (!first_err) {
			first_err = *error;
			fprintf(stderr, "e2e_blk write: FLUSH failed: %s\n", strerror(*error));
		}
	} else {
		memcpy(durable, flush_snap, nblocks * 8);
		flushes_done++;
		flush_done_pending = true;
	}
	flush_busy = false;
	return 1;
}

static int send_flush(struct nbd_handle *h)
{
	memcpy(flush_snap, acked, nblocks * 8);
	flush_busy = true;
	if (nbd_aio_flush(h, (nbd_completion_callback){ .callback = flush_done }, 0) < 0) {
		flush_busy = false;
		return -1;
	}
	return 0;
}

static int lost(struct nbd_handle *h)
{
	/* The server went away (killed by the test) or a command failed. */
	if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h) || first_err == ESHUTDOWN ||
	    first_err == ECONNRESET || first_err == EPIPE || first_err == ENOTCONN) {
		fprintf(stderr, "e2e_blk write: connection lost after %" PRIu64
			" writes, %" PRIu64 " flushes\n", writes_done, flushes_done);
		return 3;
	}
	fprintf(stderr, "e2e_blk write: %s (errno %d) while connected\n",
		nbd_get_error() ? nbd_get_error() : "a command failed", first_err);
	return 1;
}

static int run_write(const char *uri)
{
	struct nbd_handle *h = nbd_create();
	uint64_t rng = seed ^ gen_base ^ 0x5151, gen = gen_base, t0, last_flush;
	int rc = 1;
	if (!h)
		return 1;
	acked = calloc(nblocks, 8);
	durable = calloc(nblocks, 8);
	flush_snap = calloc(nblocks, 8);
	inflight = calloc(nblocks, 1);
	if (!acked || !durable || !flush_snap || !inflight)
		goto exit;
	if (state_load(state_in, acked) < 0)
		goto exit;
	if (nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "e2e_blk write: %s\n", nbd_get_error());
		rc = 3;
		goto exit;
	}
	if ((uint64_t)nbd_get_size(h) < nblocks * BS) {
		fprintf(stderr, "e2e_blk write: export smaller than %" PRIu64 " blocks\n", nblocks);
		goto exit;
	}
	/* What the last verify read becomes durable before anything new. */
	if (nbd_flush(h, 0) < 0) {
		fprintf(stderr, "e2e_blk write: first flush: %s\n", nbd_get_error());
		rc = nbd_aio_is_dead(h) || nbd_aio_is_closed(h) ? 3 : 1;
		goto exit;
	}
	memcpy(durable, acked, nblocks * 8);
	if (state_save(state_out, durable) < 0)
		goto exit;
	t0 = last_flush = now_ms();
	for (;;) {
		bool ending = now_ms() - t0 >= duration_ms;
		unsigned busy = 0;
		for (unsigned i = 0; i < qd; i++) {
			struct slot *s = &slots[i];
			if (s->busy) {
				busy++;
				continue;
			}
			if (ending || failed)
				continue;
			uint64_t b;
			do
				b = splitmix(&rng) % nblocks;
			while (inflight[b]);
			s->block = b;
			s->gen = ++gen;
			block_fill(s->buf, b, s->gen);
			s->busy = true;
			inflight[b] = true;
			busy++;
			if (nbd_aio_pwrite(h, s->buf, BS, b * BS,
					   (nbd_completion_callback){ .callback = write_done,
								      .user_data = s }, 0) < 0) {
				s->busy = false;
				inflight[b] = false;
				failed = true;
				if (!first_err)
					first_err = nbd_get_errno() ? nbd_get_errno() : EIO;
			}
		}
		if (!flush_busy && !failed && !ending && now_ms() - last_flush >= flush_ms) {
			last_flush = now_ms();
			if (send_flush(h) < 0) {
				failed = true;
				if (!first_err)
					first_err = nbd_get_errno() ? nbd_get_errno() : EIO;
			}
		}
		if (flush_done_pending) {
			flush_done_pending = false;
			if (state_save(state_out, durable) < 0)
				goto exit;
		}
		if (failed && busy == 0 && !flush_busy) {
			rc = lost(h);
			goto exit;
		}
		if (ending && busy == 0 && !flush_busy)
			break;
		if (nbd_poll(h, 50) < 0) {
			failed = true;
			if (!first_err)
				first_err = nbd_get_errno() ? nbd_get_errno() : EIO;
			if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
				rc = lost(h);
				goto exit;
			}
		}
	}
	if (nbd_flush(h, 0) < 0) {
		first_err = nbd_get_errno();
		rc = lost(h);
		goto exit;
	}
	flushes_done++;
	if (state_save(state_out, acked) < 0)
		goto exit;
	printf("e2e_blk write: %" PRIu64 " writes, %" PRIu64 " flushes, all flushed\n",
	       writes_done, flushes_done);
	rc = 0;
exit:
	nbd_close(h);
	return rc;
}

/* ------------------------------------------------------------- verify --- */

static int run_verify(const char *uri, bool exact)
{
	struct nbd_handle *h = nbd_create();
	uint64_t *want = calloc(nblocks, 8), *got = calloc(nblocks, 8);
	const size_t span = 256;   /* blocks per read */
	uint8_t *buf = malloc(span * BS);
	uint64_t bad = 0, newer = 0, zero = 0;
	int rc = 1;
	if (!h || !want || !got || !buf)
		goto exit;
	if (state_load(state_in, want) < 0)
		goto exit;
	if (nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "e2e_blk verify: %s\n", nbd_get_error());
		goto exit;
	}
	for (uint64_t b0 = 0; b0 < nblocks; b0 += span) {
		uint64_t n = nblocks - b0 < span ? nblocks - b0 : span;
		if (nbd_pread(h, buf, n * BS, b0 * BS, 0) < 0) {
			fprintf(stderr, "e2e_blk verify: read at block %" PRIu64 ": %s\n", b0,
				nbd_get_error());
			goto exit;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t b = b0 + i;
			const char *why = NULL;
			int64_t g = block_gen(buf + i * BS, b, &why);
			if (g >= 0)
				got[b] = (uint64_t)g;
			if (g >= 0 && exact && (uint64_t)g != want[b]) {
				why = "generation differs from the expected one";
			} else if (g >= 0 && !exact && (uint64_t)g < want[b]) {
				why = g == 0 ? "flushed write lost: block reads as never written"
					     : "flushed write lost: block went back to an older write";
			}
			if (why) {
				if (bad < 10)
					fprintf(stderr, "e2e_blk verify: block %" PRIu64 " (offset %"
						PRIu64 "): %s (read generation %" PRId64
						", expected %s%" PRIu64 ")\n", b, b * BS, why, g,
						exact ? "" : ">= ", want[b]);
				bad++;
			}
			if (g > 0 && (uint64_t)g > want[b])
				newer++;
			if (g == 0)
				zero++;
		}
	}
	if (state_out && state_save(state_out, got) < 0)
		goto exit;
	printf("e2e_blk verify: %" PRIu64 " blocks, %" PRIu64 " bad, %" PRIu64
	       " newer than the floor, %" PRIu64 " never written\n", nblocks, bad, newer, zero);
	rc = bad ? 1 : 0;
exit:
	if (h)
		nbd_close(h);
	free(want);
	free(got);
	free(buf);
	return rc;
}

static int usage(void)
{
	fprintf(stderr, "usage: e2e_blk write|verify URI --blocks N --seed S --state FILE "
			"[--out FILE] [--gen-base G] [--qd Q] [--flush-ms F] [--duration-ms D] "
			"[--exact|--floor]\n");
	return 2;
}

int main(int argc, char **argv)
{
	bool exact = false, floor_mode = false;
	if (argc < 3)
		return usage();
	const char *cmd = argv[1], *uri = argv[2];
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--exact")) {
			exact = true;
			continue;
		}
		if (!strcmp(a, "--floor")) {
			floor_mode = true;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (!strcmp(a, "--blocks"))
			nblocks = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--seed"))
			seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--gen-base"))
			gen_base = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--state"))
			state_in = v;
		else if (!strcmp(a, "--out"))
			state_out = v;
		else if (!strcmp(a, "--qd"))
			qd = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--flush-ms"))
			flush_ms = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--duration-ms"))
			duration_ms = strtoull(v, NULL, 0);
		else
			return usage();
	}
	if (!nblocks || !state_in || qd == 0 || qd > QD_MAX)
		return usage();
	if (!strcmp(cmd, "write")) {
		if (!state_out)
			return usage();
		return run_write(uri);
	}
	if (!strcmp(cmd, "verify")) {
		if (exact == floor_mode)
			return usage();
		return run_verify(uri, exact);
	}
	return usage();
}
