/*
 * check_codec.c — unit tests for codec/ (FLECC): round trips over a grid of
 * geometries, sizes and compressions; every erasure pattern for small k+m
 * and random ones for 16+4 / 32+8 (seed printed, NBDSRV_SEED to replay);
 * every single-byte corruption of a 4+2 chunk; forged, misplaced, stale,
 * truncated shards; wrong keys; ranges; rebuilds; key files; threads.
 */
#include "codec/codec.h"
#include "codec/codec_int.h"
#include "common/common.h"
#include "test/lib/rng.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t test_key_bytes[CODEC_KEY_SIZE] = "0123456789abcdef0123456789abcde";

/* One codec + context + k+m shard buffers. */
struct fix {
	struct codec_key *key;
	struct codec *c;
	struct codec_ctx *x;
	unsigned k, m;
	uint8_t *buf[CODEC_MAX_SHARDS];
	size_t lens[CODEC_MAX_SHARDS];
	struct codec_meta meta;
	struct codec_id id;
};

static void fix_init_key(struct fix *f, unsigned k, unsigned m, uint32_t chunk,
			 enum codec_compress comp, const uint8_t *keybytes)
{
	struct codec_params p = { .k = k, .m = m, .max_chunk = chunk, .compress = comp };
	char err[256] = "";

	memset(f, 0, sizeof(*f));
	f->k = k;
	f->m = m;
	ck_assert_int_eq(codec_key_from_bytes(keybytes, &f->key), 0);
	ck_assert_msg(codec_new(&p, f->key, &f->c, err, sizeof(err)) == 0, "codec_new: %s", err);
	ck_assert_int_eq(codec_ctx_new(f->c, &f->x), 0);
	for (unsigned i = 0; i < k + m; i++) {
		f->buf[i] = malloc(codec_shard_max(f->c));
		ck_assert_ptr_nonnull(f->buf[i]);
	}
	memcpy(f->id.pool, "pool-uuid-16byte", 16);
	f->id.volume = 7;
	f->id.chunk = 42;
	f->id.version = 3;
}

static void fix_init(struct fix *f, unsigned k, unsigned m, uint32_t chunk,
		     enum codec_compress comp)
{
	fix_init_key(f, k, m, chunk, comp, test_key_bytes);
}

static void fix_fini(struct fix *f)
{
	for (unsigned i = 0; i < f->k + f->m; i++)
		free(f->buf[i]);
	codec_ctx_free(f->x);
	codec_free(f->c);
	codec_key_free(f->key);
}

static void fill(uint8_t *p, size_t len, int kind)
{
	switch (kind) {
	case 0:                         /* incompressible */
		for (size_t i = 0; i < len; i++)
			p[i] = (uint8_t)(rnd() >> 24);
		break;
	case 1:                         /* compressible text */
		for (size_t i = 0; i < len; i++)
			p[i] = "the quick brown fox jumps over the lazy dog "[i % 44] +
			       (i % 4096 == 0 ? (uint8_t)rnd() % 3 : 0);
		break;
	default:                        /* mostly zeros, a few bytes set */
		memset(p, 0, len);
		p[len / 2] = 1;
		p[len - 1] = 0xff;
		break;
	}
}

static void fix_encode(struct fix *f, const uint8_t *plain, size_t len)
{
	int r = codec_encode(f->x, &f->id, plain, len, f->buf, f->lens, &f->meta);

	ck_assert_msg(r == 0, "encode k=%u m=%u len=%zu: %s", f->k, f->m, len,
		      codec_strerror(r));
}

/* Decode with the shards in `present` (mask), with or without metadata;
 * expect success and plain back. */
static void expect_decode(struct fix *f, uint64_t present, bool with_meta,
			  const uint8_t *plain, size_t len, uint8_t *out)
{
	const uint8_t *sh[CODEC_MAX_SHARDS];
	enum codec_status st[CODEC_MAX_SHARDS];
	int r;

	for (unsigned i = 0; i < f->k + f->m; i++)
		sh[i] = present >> i & 1 ? f->buf[i] : NULL;
	memset(out, 0xa5, len);
	r = codec_decode(f->x, &f->id, with_meta ? &f->meta : NULL, sh, f->lens, out, len, st);
	ck_assert_msg(r == (int)len, "decode k=%u m=%u mask=%llx meta=%d: %d %s", f->k, f->m,
		      (unsigned long long)present, with_meta, r, codec_strerror(r));
	ck_assert_msg(!memcmp(out, plain, len), "decode k=%u m=%u mask=%llx: wrong bytes",
		      f->k, f->m, (unsigned long long)present);
}

START_TEST(test_params)
{
	struct codec_params p = { .k = 16, .m = 4, .max_chunk = 4 << 20 };
	char err[256];

	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), 0);
	p.k = 0;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "k = 0"));
	p.k = 33;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	p.k = 32;
	p.m = 9;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "m = 9"));
	p.m = 8;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), 0);
	p.max_chunk = 3 << 20;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	p.max_chunk = 32 << 10;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	p.max_chunk = 16 << 20;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	/* 8 MiB in one data shard does not fit zdb's 8 MiB value limit. */
	p.max_chunk = 8 << 20;
	p.k = 1;
	p.m = 1;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "limit"));
	p.k = 2;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), 0);
	p.compress = 3;
	ck_assert_int_eq(codec_params_check(&p, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_roundtrip_grid)
{
	static const unsigned km[][2] = { {1, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 2}, {8, 3},
					  {16, 4}, {32, 8}, {5, 0} };
	static const uint32_t chunks[] = { 64 << 10, 256 << 10, 1 << 20 };
	uint8_t *plain = malloc(1 << 20), *out = malloc(1 << 20);

	seed_init("roundtrip_grid");
	for (unsigned g = 0; g < ARRAY_SIZE(km); g++)
		for (unsigned ci = 0; ci < ARRAY_SIZE(chunks); ci++)
			for (int comp = 0; comp <= 2; comp++) {
				struct fix f;
				uint32_t ch = chunks[ci];
				size_t lens[] = { ch, ch - 1 - rnd() % (ch / 2), 1 + rnd() % 100 };

				if ((g + ci + comp) % 2 && ch > (64 << 10))
					continue;               /* keep it quick */
				fix_init(&f, km[g][0], km[g][1], ch, comp);
				for (unsigned li = 0; li < ARRAY_SIZE(lens); li++) {
					int kind = (li + comp) % 3;
					uint64_t all = (1ull << (f.k + f.m)) - 1;

					fill(plain, lens[li], kind);
					fix_encode(&f, plain, lens[li]);
					ck_assert_uint_le(f.lens[0], codec_shard_max(f.c));
					if (comp && kind == 1 && lens[li] > 4096)
						ck_assert_int_eq(f.meta.compress, comp);
					if (kind == 0 && lens[li] > 4096)
						ck_assert_int_eq(f.meta.compress, 0);
					expect_decode(&f, all, true, plain, lens[li], out);
					expect_decode(&f, all, false, plain, lens[li], out);
					if (f.m)        /* lose the first m data shards */
						expect_decode(&f, all & ~((1ull << MIN(f.m, f.k)) - 1),
							      true, plain, lens[li], out);
				}
				fix_fini(&f);
			}
	free(plain);
	free(out);
}
END_TEST

/* Every erasure pattern of up to m shards, with and without metadata. */
START_TEST(test_all_erasures_small)
{
	static const unsigned km[][2] = { {2, 1}, {4, 2}, {3, 3}, {5, 3}, {6, 2} };
	uint8_t plain[5000], out[5000];

	seed_init("all_erasures_small");
	for (unsigned g = 0; g < ARRAY_SIZE(km); g++) {
		struct fix f;
		unsigned n = km[g][0] + km[g][1];

		fix_init(&f, km[g][0], km[g][1], 64 << 10, CODEC_COMPRESS_NONE);
		fill(plain, sizeof(plain), 0);
		fix_encode(&f, plain, sizeof(plain));
		for (uint64_t lost = 0; lost < (1ull << n); lost++) {
			int nl = __builtin_popcountll(lost);
			uint64_t present = ((1ull << n) - 1) & ~lost;
			const uint8_t *sh[CODEC_MAX_SHARDS];
			enum codec_status st[CODEC_MAX_SHARDS];

			if (nl <= (int)f.m) {
				expect_decode(&f, present, true, plain, sizeof(plain), out);
				expect_decode(&f, present, false, plain, sizeof(plain), out);
				continue;
			}
			for (unsigned i = 0; i < n; i++)
				sh[i] = present >> i & 1 ? f.buf[i] : NULL;
			ck_assert_int_eq(codec_decode(f.x, &f.id, &f.meta, sh, f.lens, out,
						      sizeof(out), st), -EBADMSG);
		}
		fix_fini(&f);
	}
}
END_TEST

static void random_erasures(unsigned k, unsigned m, uint32_t chunk, int trials)
{
	struct fix f;
	unsigned n = k + m;
	uint8_t *plain = malloc(chunk), *out = malloc(chunk);

	fix_init(&f, k, m, chunk, CODEC_COMPRESS_NONE);
	fill(plain, chunk, 0);
	fix_encode(&f, plain, chunk);
	for (int t = 0; t < trials; t++) {
		uint64_t present = (1ull << n) - 1;
		unsigned lose = rnd() % (m + 1);

		while ((unsigned)__builtin_popcountll(((1ull << n) - 1) & ~present) < lose)
			present &= ~(1ull << (rnd() % n));
		expect_decode(&f, present, t % 2 == 0, plain, chunk, out);
	}
	fix_fini(&f);
	free(plain);
	free(out);
}

START_TEST(test_random_erasures_16_4)
{
	seed_init("random_erasures_16_4");
	random_erasures(16, 4, 256 << 10, 60);
}
END_TEST

START_TEST(test_random_erasures_32_8)
{
	seed_init("random_erasures_32_8");
	random_erasures(32, 8, 256 << 10, 60);
}
END_TEST

/* The GFNI kernel and ISA-L compute the same bytes (shards written on one
 * machine decode on another), and shards cross between the two. */
START_TEST(test_rs_kernels_agree)
{
	uint8_t coef[CODEC_MAX_M * CODEC_MAX_K];
	uint8_t *tbl = malloc(RS_TBL_BYTES * CODEC_MAX_M * CODEC_MAX_K);
	uint8_t *src[CODEC_MAX_K], *d1[CODEC_MAX_M], *d2[CODEC_MAX_M];
	const size_t maxlen = 5000;

	seed_init("rs_kernels_agree");
	printf("rs kernel: %s\n", rs_kernel_name());
	for (unsigned i = 0; i < CODEC_MAX_K; i++) {
		src[i] = malloc(maxlen);
		for (size_t b = 0; b < maxlen; b++)
			src[i][b] = rnd();
	}
	for (unsigned i = 0; i < CODEC_MAX_M; i++) {
		d1[i] = malloc(maxlen);
		d2[i] = malloc(maxlen);
	}
	for (int t = 0; t < 200; t++) {
		unsigned k = 1 + rnd() % CODEC_MAX_K, rows = 1 + rnd() % CODEC_MAX_M;
		size_t len = 1 + rnd() % maxlen;

		for (unsigned i = 0; i < k * rows; i++)
			coef[i] = rnd();
		rs_force_isal(true);
		rs_init_tables(k, rows, coef, tbl);
		rs_run(len, k, rows, tbl, src, d1);
		rs_force_isal(false);
		rs_init_tables(k, rows, coef, tbl);
		for (unsigned r = 0; r < rows; r++)
			memset(d2[r], 0x5a, maxlen);
		rs_run(len, k, rows, tbl, src, d2);
		for (unsigned r = 0; r < rows; r++) {
			ck_assert_msg(!memcmp(d1[r], d2[r], len), "k=%u rows=%u len=%zu row %u",
				      k, rows, len, r);
			if (len < maxlen)
				ck_assert_uint_eq(d2[r][len], 0x5a);   /* no overrun */
		}
	}
	/* Encode with the native kernel, rebuild with ISA-L. */
	{
		struct fix f, g;
		uint8_t plain[20000], out[20000];
		const uint8_t *sh[20];
		int r;

		fix_init(&f, 16, 4, 64 << 10, CODEC_COMPRESS_NONE);
		fill(plain, sizeof(plain), 0);
		fix_encode(&f, plain, sizeof(plain));
		rs_force_isal(true);
		fix_init(&g, 16, 4, 64 << 10, CODEC_COMPRESS_NONE);
		for (unsigned i = 0; i < 20; i++)
			sh[i] = i < 4 ? NULL : f.buf[i];
		r = codec_decode(g.x, &f.id, &f.meta, sh, f.lens, out, sizeof(out), NULL);
		rs_force_isal(false);
		ck_assert_int_eq(r, (int)sizeof(plain));
		ck_assert(!memcmp(out, plain, sizeof(out)));
		fix_fini(&g);
		fix_fini(&f);
	}
	for (unsigned i = 0; i < CODEC_MAX_K; i++)
		free(src[i]);
	for (unsigned i = 0; i < CODEC_MAX_M; i++) {
		free(d1[i]);
		free(d2[i]);
	}
	free(tbl);
}
END_TEST

/* The largest chunks: 8 MiB at 2+1 (4 MiB shards, near zdb's limit) and
 * 16+4, with shards lost. */
START_TEST(test_big_chunks)
{
	static const unsigned km[][2] = { {2, 1}, {16, 4} };
	const size_t ch = 8u << 20;
	uint8_t *plain = malloc(ch), *out = malloc(ch);

	seed_init("big_chunks");
	fill(plain, ch, 0);
	for (unsigned g = 0; g < ARRAY_SIZE(km); g++) {
		struct fix f;
		uint64_t all = (1ull << (km[g][0] + km[g][1])) - 1;

		fix_init(&f, km[g][0], km[g][1], ch, CODEC_COMPRESS_NONE);
		fix_encode(&f, plain, ch);
		ck_assert_uint_le(f.lens[f.k], CODEC_MAX_RECORD);
		expect_decode(&f, all, true, plain, ch, out);
		expect_decode(&f, all & ~((1ull << f.m) - 1), true, plain, ch, out);
		expect_decode(&f, all & ~(((1ull << f.m) - 1) << 1), false, plain, ch, out);
		fix_fini(&f);
	}
	free(plain);
	free(out);
}
END_TEST

/* The parity MAC is Poly1305 (checked here with libsodium's, independent of
 * the codec's OpenSSL one) of record bytes [8, 112+S) under the one-time key
 * block j of ChaCha20(chunk key, "FLECC1/pmac\0"): the v1 format as
 * documented in codec.c, recomputed from the master key.  Also each record's
 * CRC32C, recomputed in one call: encode computes both piecewise, a stripe
 * at a time (a 256 KiB chunk at k = 1 or 4 ends on a stripe of only the
 * 16 tag bytes). */
START_TEST(test_parity_mac_poly1305)
{
	static const unsigned geo[][2] = { {4, 2}, {16, 4}, {1, 3} };
	static const uint8_t nonce[12] = "FLECC1/pmac";
	uint8_t *plain = malloc(256 << 10);

	seed_init("parity_mac_poly1305");
	ck_assert_int_eq(sodium_init() < 0, 0);
	for (unsigned g = 0; g < ARRAY_SIZE(geo); g++) {
		for (int t = 0; t < 4; t++) {
			size_t len = t == 0 ? 1 : t == 2 ? 256 << 10 : 1 + rnd() % (256 << 10);
			uint8_t vol[CODEC_KEY_SIZE], chunk[CODEC_KEY_SIZE];
			uint8_t otk[CODEC_MAX_M][CODEC_KEY_SIZE], tag[16];
			struct fix f;

			fix_init(&f, geo[g][0], geo[g][1], 256 << 10, t & 1 ? CODEC_COMPRESS_LZ4
								     : CODEC_COMPRESS_NONE);
			fill(plain, len, t & 1);
			fix_encode(&f, plain, len);
			codec_kdf_volume(f.key, f.id.pool, f.id.volume, vol);
			codec_kdf_chunk(vol, &f.id, f.meta.salt, chunk);
			crypto_stream_chacha20_ietf(&otk[0][0], sizeof(otk), nonce, chunk);
			for (unsigned j = 0; j < f.m; j++) {
				const uint8_t *rec = f.buf[f.k + j];
				size_t n = CODEC_HEADER_SIZE + f.meta.body_len + CODEC_TAG_SIZE;

				ck_assert_uint_eq(f.lens[f.k + j], n + CODEC_TAG_SIZE);
				crypto_onetimeauth_poly1305(tag, rec + 8, n - 8, otk[j]);
				ck_assert_msg(!memcmp(tag, rec + n, 16), "%u+%u len %zu parity %u",
					      f.k, f.m, len, j);
				if (j)
					ck_assert(memcmp(otk[j], otk[j - 1], CODEC_KEY_SIZE));
			}
			for (unsigned i = 0; i < f.k + f.m; i++) {
				uint32_t crc = crc32_iscsi(f.buf[i] + 8, (int)f.lens[i] - 8,
							   0xFFFFFFFFu);

				ck_assert_msg(crc == f.meta.crc[i] &&
					      !memcmp(f.buf[i] + 4, &(uint32_t){ htole32(crc) }, 4),
					      "%u+%u len %zu shard %u: CRC", f.k, f.m, len, i);
			}
			fix_fini(&f);
		}
	}
	free(plain);
}
END_TEST

START_TEST(test_hole)
{
	struct fix f;
	uint8_t *z = calloc(1, 64 << 10);

	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	ck_assert_int_eq(codec_encode(f.x, &f.id, z, 64 << 10, f.buf, f.lens, &f.meta), CODEC_HOLE);
	z[65535] = 1;
	ck_assert_int_eq(codec_encode(f.x, &f.id, z, 64 << 10, f.buf, f.lens, &f.meta), 0);
	ck_assert_int_eq(codec_encode(f.x, &f.id, z, 0, f.buf, f.lens, &f.meta), -EINVAL);
	ck_assert_int_eq(codec_encode(f.x, &f.id, z, (64 << 10) + 1, f.buf, f.lens, &f.meta),
			 -EINVAL);
	fix_fini(&f);
	free(z);
}
END_TEST

/* Every single-byte corruption of every shard of a 4+2 chunk is detected,
 * attributed to that shard, and decode still returns the right bytes. */
START_TEST(test_every_byte_corruption)
{
	struct fix f;
	uint8_t plain[700], out[700];
	size_t checked = 0;
	/* _i: 0 = plain random bytes, 1 = an lz4-compressed chunk */
	enum codec_compress comp = _i ? CODEC_COMPRESS_LZ4 : CODEC_COMPRESS_NONE;

	seed_init("every_byte_corruption");
	fix_init(&f, 4, 2, 64 << 10, comp);
	fill(plain, sizeof(plain), _i ? 1 : 0);
	fix_encode(&f, plain, sizeof(plain));
	ck_assert_int_eq(f.meta.compress, comp);
	for (unsigned s = 0; s < 6; s++)
		for (size_t b = 0; b < f.lens[s]; b++) {
			const uint8_t *sh[6];
			enum codec_status st[6];
			uint8_t flip = 1 + rnd() % 255;

			for (unsigned i = 0; i < 6; i++)
				sh[i] = f.buf[i];
			f.buf[s][b] ^= flip;
			for (int wm = 0; wm < 2; wm++) {
				int r = codec_decode(f.x, &f.id, wm ? &f.meta : NULL, sh, f.lens,
						     out, sizeof(out), st);

				ck_assert_msg(r == (int)sizeof(plain) && !memcmp(out, plain, sizeof(out)),
					      "shard %u byte %zu meta %d: decode %d", s, b, wm, r);
				/* Data shards are always read; a parity shard is
				 * examined only when needed — check it alone. */
				if (s < 4)
					ck_assert_msg(st[s] != CODEC_SHARD_OK && st[s] != CODEC_SHARD_UNUSED,
						      "shard %u byte %zu meta %d: status %s", s, b, wm,
						      codec_status_str(st[s]));
				for (unsigned i = 0; i < 4; i++)
					ck_assert(i == s || st[i] == CODEC_SHARD_OK);
				ck_assert_int_ne(codec_verify_shard(f.x, &f.id, wm ? &f.meta : NULL, s,
								    f.buf[s], f.lens[s], false),
						 CODEC_SHARD_OK);
			}
			/* A lost data shard forces the corrupt parity shard into use. */
			if (s >= 4) {
				sh[s == 4 ? 0 : 1] = NULL;
				sh[s == 4 ? 5 : 4] = NULL;
				for (int wm = 0; wm < 2; wm++)
					ck_assert_int_eq(codec_decode(f.x, &f.id, wm ? &f.meta : NULL, sh,
								      f.lens, out, sizeof(out), st),
							 -EBADMSG);
				sh[s == 4 ? 5 : 4] = f.buf[s == 4 ? 5 : 4];
				ck_assert_int_eq(codec_decode(f.x, &f.id, &f.meta, sh, f.lens, out,
							      sizeof(out), st), (int)sizeof(plain));
				ck_assert(!memcmp(out, plain, sizeof(out)));
				ck_assert_msg(st[s] != CODEC_SHARD_OK, "parity %u byte %zu", s, b);
			}
			f.buf[s][b] ^= flip;
			checked++;
		}
	ck_assert_uint_gt(checked, 6 * 96);
	fix_fini(&f);
}
END_TEST

/* Corrupting more than m shards fails cleanly, never with wrong bytes. */
START_TEST(test_too_many_corruptions)
{
	struct fix f;
	uint8_t plain[3000], out[3000];

	seed_init("too_many_corruptions");
	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	fill(plain, sizeof(plain), 0);
	fix_encode(&f, plain, sizeof(plain));
	for (int t = 0; t < 300; t++) {
		const uint8_t *sh[6];
		uint8_t *copy[6];
		unsigned bad = 0;

		for (unsigned i = 0; i < 6; i++) {
			copy[i] = malloc(f.lens[i]);
			memcpy(copy[i], f.buf[i], f.lens[i]);
			sh[i] = copy[i];
		}
		while (__builtin_popcount(bad) < 3)
			bad |= 1u << (rnd() % 6);
		for (unsigned i = 0; i < 6; i++)
			if (bad >> i & 1)
				copy[i][rnd() % f.lens[i]] ^= 1 + rnd() % 255;
		for (int wm = 0; wm < 2; wm++) {
			int r = codec_decode(f.x, &f.id, wm ? &f.meta : NULL, sh, f.lens, out,
					     sizeof(out), NULL);

			/* Success is possible only when the corrupt shards were
			 * not needed; then the bytes must be right. */
			if (r >= 0)
				ck_assert(!memcmp(out, plain, sizeof(out)));
			else
				ck_assert_int_eq(r, -EBADMSG);
		}
		for (unsigned i = 0; i < 6; i++)
			free(copy[i]);
	}
	fix_fini(&f);
}
END_TEST

static void put_crc(uint8_t *rec, size_t len);
static void put_crc(uint8_t *rec, size_t len)
{
	uint32_t c = crc32_iscsi(rec + 8, (int)(len - 8), 0xFFFFFFFFu);

	memcpy(rec + 4, &c, 4);
}

/* An attacker changes a parity shard and fixes up its CRC (and, worse, the
 * metadata's CRC too): caught by the MAC, attributed, decode survives. */
START_TEST(test_forged_parity)
{
	struct fix f;
	uint8_t plain[4000], out[4000];
	const uint8_t *sh[6];
	enum codec_status st[6];
	struct codec_meta forged_meta;
	uint32_t crc;

	seed_init("forged_parity");
	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	fill(plain, sizeof(plain), 0);
	fix_encode(&f, plain, sizeof(plain));
	f.buf[4][200] ^= 0x40;
	put_crc(f.buf[4], f.lens[4]);
	memcpy(&crc, f.buf[4] + 4, 4);

	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, NULL, 4, f.buf[4], f.lens[4], false),
			 CODEC_SHARD_BAD_AUTH);
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, &f.meta, 4, f.buf[4], f.lens[4], false),
			 CODEC_SHARD_BAD_CRC);
	forged_meta = f.meta;
	forged_meta.crc[4] = crc;
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, &forged_meta, 4, f.buf[4], f.lens[4],
					    false), CODEC_SHARD_OK);   /* CRC is no MAC */
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, &forged_meta, 4, f.buf[4], f.lens[4],
					    true), CODEC_SHARD_BAD_AUTH);
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, NULL, 5, f.buf[5], f.lens[5], true),
			 CODEC_SHARD_OK);

	for (unsigned i = 0; i < 6; i++)
		sh[i] = f.buf[i];
	sh[1] = NULL;                   /* force the parity shards into use */
	for (int wm = 0; wm < 3; wm++) {
		const struct codec_meta *mp = wm == 0 ? NULL : wm == 1 ? &f.meta : &forged_meta;

		ck_assert_int_eq(codec_decode(f.x, &f.id, mp, sh, f.lens, out, sizeof(out), st),
				 (int)sizeof(plain));
		ck_assert(!memcmp(out, plain, sizeof(out)));
		ck_assert_msg(st[4] == (wm == 1 ? CODEC_SHARD_BAD_CRC : CODEC_SHARD_BAD_AUTH),
			      "meta %d: parity status %s", wm, codec_status_str(st[4]));
		ck_assert_int_eq(st[5], CODEC_SHARD_OK);
	}
	/* A forged data shard with a fixed-up CRC is caught by its tag. */
	f.buf[4][200] ^= 0x40;
	put_crc(f.buf[4], f.lens[4]);
	f.buf[2][100] ^= 1;
	put_crc(f.buf[2], f.lens[2]);
	sh[1] = f.buf[1];
	ck_assert_int_eq(codec_decode(f.x, &f.id, NULL, sh, f.lens, out, sizeof(out), st),
			 (int)sizeof(plain));
	ck_assert(!memcmp(out, plain, sizeof(out)));
	ck_assert_int_eq(st[2], CODEC_SHARD_BAD_AUTH);
	fix_fini(&f);
}
END_TEST

/* Shards of another chunk, version, volume, pool, encoding or position. */
START_TEST(test_misplaced_shards)
{
	struct fix f;
	uint8_t plain[4000], out[4000];
	uint8_t *orig[6];
	size_t olens[6];
	struct codec_meta ometa;
	const struct codec_id base = { .pool = "pool-uuid-16byt", .volume = 7, .chunk = 42,
				       .version = 3 };
	struct codec_id others[4];

	seed_init("misplaced_shards");
	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	fill(plain, sizeof(plain), 0);
	f.id = base;
	fix_encode(&f, plain, sizeof(plain));
	for (unsigned i = 0; i < 6; i++) {
		orig[i] = malloc(f.lens[i]);
		memcpy(orig[i], f.buf[i], f.lens[i]);
		olens[i] = f.lens[i];
	}
	ometa = f.meta;
	for (int o = 0; o < 4; o++)
		others[o] = base;
	others[0].chunk++;
	others[1].version++;
	others[2].volume++;
	others[3].pool[0] ^= 1;
	/* A shard of another identity put where shard 1 belongs. */
	for (int o = 0; o < 5; o++) {
		const uint8_t *sh[6];
		enum codec_status st[6];

		f.id = o < 4 ? others[o] : base;        /* o == 4: same id, re-encoded */
		fix_encode(&f, plain, sizeof(plain));
		for (unsigned i = 0; i < 6; i++)
			sh[i] = orig[i];
		sh[1] = f.buf[1];
		for (int wm = 0; wm < 2; wm++) {
			size_t lens[6];

			memcpy(lens, olens, sizeof(lens));
			lens[1] = f.lens[1];
			ck_assert_int_eq(codec_decode(f.x, &base, wm ? &ometa : NULL, sh, lens, out,
						      sizeof(out), st), (int)sizeof(plain));
			ck_assert(!memcmp(out, plain, sizeof(out)));
			ck_assert_msg(st[1] == (o < 4 ? CODEC_SHARD_WRONG_ID : CODEC_SHARD_STALE),
				      "case %d meta %d: %s", o, wm, codec_status_str(st[1]));
			/* Alone and without metadata, a shard of another
			 * encoding of this very version is authentic. */
			if (o < 4 || wm)
				ck_assert_int_ne(codec_verify_shard(f.x, &base, wm ? &ometa : NULL,
								    1, f.buf[1], f.lens[1], true),
						 CODEC_SHARD_OK);
		}
	}
	/* Shards swapped between positions. */
	{
		const uint8_t *sh[6];
		enum codec_status st[6];

		for (unsigned i = 0; i < 6; i++)
			sh[i] = orig[i];
		sh[0] = orig[2];
		sh[2] = orig[0];
		ck_assert_int_eq(codec_decode(f.x, &base, &ometa, sh, olens, out, sizeof(out), st),
				 (int)sizeof(plain));
		ck_assert(!memcmp(out, plain, sizeof(out)));
		ck_assert_int_eq(st[0], CODEC_SHARD_WRONG_ID);
		ck_assert_int_eq(st[2], CODEC_SHARD_WRONG_ID);
		ck_assert_int_eq(codec_verify_shard(f.x, &base, NULL, 0, orig[2], olens[2], true),
				 CODEC_SHARD_WRONG_ID);
	}
	/* Forged header claiming position 0 for shard 2's payload: its
	 * AAD binds the real position, so the tag fails. */
	{
		uint8_t *fake = malloc(olens[2]);

		memcpy(fake, orig[2], olens[2]);
		fake[11] = 0;
		put_crc(fake, olens[2]);
		ck_assert_int_eq(codec_verify_shard(f.x, &base, NULL, 0, fake, olens[2], true),
				 CODEC_SHARD_BAD_AUTH);
		free(fake);
	}
	for (unsigned i = 0; i < 6; i++)
		free(orig[i]);
	fix_fini(&f);
}
END_TEST

START_TEST(test_wrong_key_and_lengths)
{
	struct fix f, g;
	uint8_t plain[4000], out[4000];
	const uint8_t *sh[6];
	enum codec_status st[6];
	size_t lens[6];
	uint8_t other_key[CODEC_KEY_SIZE];

	seed_init("wrong_key_and_lengths");
	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	memcpy(other_key, test_key_bytes, sizeof(other_key));
	other_key[0] ^= 1;
	fix_init_key(&g, 4, 2, 64 << 10, CODEC_COMPRESS_NONE, other_key);
	fill(plain, sizeof(plain), 0);
	fix_encode(&f, plain, sizeof(plain));
	for (unsigned i = 0; i < 6; i++)
		sh[i] = f.buf[i];
	ck_assert_int_eq(codec_decode(g.x, &f.id, &f.meta, sh, f.lens, out, sizeof(out), st),
			 -EBADMSG);
	ck_assert_int_eq(codec_decode(g.x, &f.id, NULL, sh, f.lens, out, sizeof(out), st),
			 -EBADMSG);
	for (unsigned i = 0; i < 6; i++)
		ck_assert_int_eq(codec_verify_shard(g.x, &f.id, NULL, i, f.buf[i], f.lens[i], true),
				 CODEC_SHARD_BAD_AUTH);

	/* Truncated and oversized shards. */
	memcpy(lens, f.lens, sizeof(lens));
	lens[0]--;
	lens[5]++;
	ck_assert_int_eq(codec_decode(f.x, &f.id, &f.meta, sh, lens, out, sizeof(out), st),
			 (int)sizeof(plain));
	ck_assert(!memcmp(out, plain, sizeof(out)));
	ck_assert_int_eq(st[0], CODEC_SHARD_BAD_LENGTH);
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, &f.meta, 5, f.buf[5], lens[5], false),
			 CODEC_SHARD_BAD_LENGTH);
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, NULL, 5, f.buf[5], lens[5], false),
			 CODEC_SHARD_BAD_LENGTH);
	ck_assert_int_eq(codec_verify_shard(f.x, &f.id, NULL, 0, f.buf[0], 10, false),
			 CODEC_SHARD_BAD_LENGTH);
	ck_assert_int_eq(codec_decode(f.x, &f.id, &f.meta, sh, f.lens, out, sizeof(out) - 1, st),
			 -ENOSPC);
	fix_fini(&f);
	fix_fini(&g);
}
END_TEST

START_TEST(test_ranges)
{
	struct fix f;
	uint32_t chunk = 256 << 10;
	uint8_t *plain = malloc(chunk), *out = malloc(chunk);

	seed_init("ranges");
	for (int comp = 0; comp <= 2; comp++) {
		fix_init(&f, 16, 4, chunk, comp);
		fill(plain, chunk, comp ? 1 : 0);
		fix_encode(&f, plain, chunk - 1000);
		for (int t = 0; t < 200; t++) {
			uint64_t off = rnd() % (chunk - 1000);
			size_t len = 1 + rnd() % MIN(chunk - 1000 - off, (uint64_t)40000);
			uint64_t need = codec_range_shards(&f.meta, off, len);
			const uint8_t *sh[20];
			enum codec_status st[20];
			int r;

			ck_assert_uint_ne(need, 0);
			/* Only the covering data shards are given. */
			for (unsigned i = 0; i < 20; i++)
				sh[i] = need >> i & 1 ? f.buf[i] : NULL;
			if (comp == 0)
				ck_assert_uint_le(__builtin_popcountll(need),
						  len / f.meta.body_len + 2);
			r = codec_decode_range(f.x, &f.id, &f.meta, sh, f.lens, off, len, out, st);
			ck_assert_msg(r == 0, "range %llu+%zu: %s", (unsigned long long)off, len,
				      codec_strerror(r));
			ck_assert(!memcmp(out, plain + off, len));
			/* Losing a covering shard: the caller fetches more. */
			sh[__builtin_ctzll(need)] = NULL;
			ck_assert_int_eq(codec_decode_range(f.x, &f.id, &f.meta, sh, f.lens, off,
							    len, out, st), -EBADMSG);
			for (unsigned i = 16; i < 20; i++)
				sh[i] = f.buf[i];
			for (unsigned i = 0; i < 16; i++)
				if (!(need >> i & 1) && i != (unsigned)__builtin_ctzll(need))
					sh[i] = f.buf[i];
			ck_assert_int_eq(codec_decode_range(f.x, &f.id, &f.meta, sh, f.lens, off,
							    len, out, st), 0);
			ck_assert(!memcmp(out, plain + off, len));
		}
		ck_assert_uint_eq(codec_range_shards(&f.meta, chunk - 1000, 1), 0);
		ck_assert_int_eq(codec_decode_range(f.x, &f.id, &f.meta, (const uint8_t **)f.buf,
						    f.lens, chunk - 1000, 1, out, NULL), -ERANGE);
		fix_fini(&f);
	}
	free(plain);
	free(out);
}
END_TEST

START_TEST(test_rebuild_and_info)
{
	struct fix f;
	uint8_t plain[9000];
	uint8_t *out;
	uint8_t packed[CODEC_META_MAX];
	struct codec_meta m2;
	struct codec_shard_info info;
	size_t pl;

	seed_init("rebuild_and_info");
	fix_init(&f, 4, 3, 64 << 10, CODEC_COMPRESS_LZ4);
	fill(plain, sizeof(plain), 1);
	fix_encode(&f, plain, sizeof(plain));
	out = malloc(codec_shard_max(f.c));
	for (unsigned idx = 0; idx < 7; idx++) {
		const uint8_t *sh[7];

		for (unsigned i = 0; i < 7; i++)
			sh[i] = f.buf[i];
		sh[(idx + 1) % 7] = NULL;       /* and another one lost */
		for (int wm = 0; wm < 2; wm++) {
			memset(out, 0, codec_shard_max(f.c));
			ck_assert_int_eq(codec_rebuild_shard(f.x, &f.id, wm ? &f.meta : NULL, sh,
							     f.lens, idx, out, NULL),
					 (int)f.lens[idx]);
			ck_assert_msg(!memcmp(out, f.buf[idx], f.lens[idx]), "rebuild %u", idx);
		}
		ck_assert_int_eq(codec_shard_info(f.buf[idx], f.lens[idx], &info), 0);
		ck_assert_uint_eq(info.index, idx);
		ck_assert_uint_eq(info.id.chunk, f.id.chunk);
		ck_assert_uint_eq(info.id.version, f.id.version);
		ck_assert_uint_eq(info.meta.plain_len, sizeof(plain));
		ck_assert_uint_eq(info.meta.crc[idx], f.meta.crc[idx]);
		ck_assert_int_eq(codec_shard_info(f.buf[idx], f.lens[idx] - 1, &info), -EBADMSG);
	}
	pl = codec_meta_pack(&f.meta, packed);
	ck_assert_int_eq(codec_meta_unpack(packed, pl, &m2), 0);
	ck_assert(!memcmp(&m2, &f.meta, sizeof(m2)));
	ck_assert_int_eq(codec_meta_unpack(packed, pl - 1, &m2), -EBADMSG);
	packed[1] = 0;
	ck_assert_int_eq(codec_meta_unpack(packed, pl, &m2), -EBADMSG);
	free(out);
	fix_fini(&f);
}
END_TEST

START_TEST(test_fresh_salt)
{
	struct fix f;
	uint8_t plain[3000];
	uint8_t first[200];
	uint8_t salt[CODEC_SALT_SIZE];

	seed_init("fresh_salt");
	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE);
	fill(plain, sizeof(plain), 0);
	fix_encode(&f, plain, sizeof(plain));
	memcpy(first, f.buf[0] + 96, sizeof(first));
	memcpy(salt, f.meta.salt, sizeof(salt));
	fix_encode(&f, plain, sizeof(plain));   /* same id, same version */
	ck_assert(memcmp(salt, f.meta.salt, sizeof(salt)));
	ck_assert(memcmp(first, f.buf[0] + 96, sizeof(first)));
	/* No plaintext in the shards. */
	ck_assert(!memmem(f.buf[0], f.lens[0], plain, 16));
	fix_fini(&f);
}
END_TEST

START_TEST(test_key_files)
{
	char dir[] = "/tmp/check_codec.XXXXXX", path[128], err[512];
	struct codec_key *k = NULL;
	struct stat st;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/pool.key", dir);
	ck_assert_int_eq(codec_key_generate(path, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(st.st_size, CODEC_KEY_SIZE);
	ck_assert_int_eq(codec_key_generate(path, err, sizeof(err)), -EEXIST);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(k);
	codec_key_free(k);

	chmod(path, 0640);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -EPERM);
	ck_assert_ptr_nonnull(strstr(err, "chmod 600"));
	ck_assert_ptr_null(k);
	chmod(path, 0604);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -EPERM);
	chmod(path, 0600);
	ck_assert_int_eq(truncate(path, 31), 0);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "31 bytes"));
	ck_assert_int_eq(truncate(path, 33), 0);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -EINVAL);
	unlink(path);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_int_eq(codec_key_load(dir, &k, err, sizeof(err)), -EINVAL);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(codec_key_load(path, &k, err, sizeof(err)), -EINVAL);
	unlink(path);
	snprintf(err, sizeof(err), "%s/link", dir);
	ck_assert_int_eq(codec_key_generate(path, NULL, 0), 0);
	ck_assert_int_eq(symlink(path, err), 0);
	{
		char lerr[256];

		ck_assert_int_eq(codec_key_load(err, &k, lerr, sizeof(lerr)), -ELOOP);
		unlink(err);
	}
	unlink(path);
	rmdir(dir);
}
END_TEST

/* Chunks encoded by an earlier build (the fuzz seeds) still decode: the
 * v1 format and key derivation have not drifted. */
START_TEST(test_golden_vectors)
{
	static const struct { const char *name; size_t len; bool text; } files[] = {
		{ "valid-none-700", 700, false }, { "valid-lz4-3000", 3000, true },
		{ "valid-zstd-2000", 2000, true }, { "valid-none-65", 65, false },
	};
	static const uint8_t key[CODEC_KEY_SIZE] = "fuzz key: not a secret at all!!";
	const struct codec_id id = { .pool = "fuzz-pool-uuid!", .volume = 1, .chunk = 2,
				     .version = 3 };

	for (unsigned fi = 0; fi < ARRAY_SIZE(files); fi++) {
		char path[512];
		uint8_t data[8192], out[4096];
		const uint8_t *sh[6];
		size_t lens[6], pos, n;
		struct codec_meta meta;
		enum codec_status st[6];
		struct fix f;
		FILE *fp;

		snprintf(path, sizeof(path), "%s/%s", CODEC_GOLDEN_DIR, files[fi].name);
		fp = fopen(path, "rb");
		ck_assert_msg(fp != NULL, "%s missing", path);
		n = fread(data, 1, sizeof(data), fp);
		fclose(fp);
		ck_assert_uint_gt(n, 2);
		ck_assert_int_eq(codec_meta_unpack(data + 2, data[1], &meta), 0);
		pos = 2 + data[1];
		for (int i = 0; i < 6; i++) {
			lens[i] = data[pos] | (size_t)data[pos + 1] << 8;
			sh[i] = data + pos + 2;
			pos += 2 + lens[i];
			ck_assert_uint_le(pos, n);
		}
		fix_init_key(&f, 4, 2, 64 << 10, CODEC_COMPRESS_NONE, key);
		for (int wm = 0; wm < 2; wm++) {
			ck_assert_int_eq(codec_decode(f.x, &id, wm ? &meta : NULL, sh, lens, out,
						      sizeof(out), st), (int)files[fi].len);
			for (int i = 0; i < 4; i++)
				ck_assert(st[i] == CODEC_SHARD_OK || st[i] == CODEC_SHARD_UNUSED);
			if (files[fi].text)
				for (size_t b = 0; b < files[fi].len; b++)
					ck_assert(out[b] == (uint8_t)"abcabcabd"[b % 9]);
		}
		for (int i = 0; i < 6; i++)
			ck_assert_int_eq(codec_verify_shard(f.x, &id, &meta, i, sh[i], lens[i], true),
					 CODEC_SHARD_OK);
		fix_fini(&f);
	}
}
END_TEST

struct thr {
	struct codec *c;
	int rounds;
	int failures;
	uint64_t seed;
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	struct codec_ctx *x;
	uint8_t *buf[6], *plain = malloc(64 << 10), *out = malloc(64 << 10);
	size_t lens[6];
	struct codec_meta meta;
	struct codec_id id = { .volume = t->seed, .chunk = 1, .version = 1 };

	if (codec_ctx_new(t->c, &x) < 0) {
		t->failures++;
		return NULL;
	}
	for (int i = 0; i < 6; i++)
		buf[i] = malloc(codec_shard_max(t->c));
	for (int r = 0; r < t->rounds; r++) {
		const uint8_t *sh[6];

		for (size_t i = 0; i < (64 << 10); i++)
			plain[i] = (uint8_t)(i * 7 + r + t->seed);
		id.chunk = r;
		if (codec_encode(x, &id, plain, 64 << 10, buf, lens, &meta) != 0) {
			t->failures++;
			continue;
		}
		for (int i = 0; i < 6; i++)
			sh[i] = i == r % 6 ? NULL : buf[i];
		if (codec_decode(x, &id, r % 2 ? &meta : NULL, sh, lens, out, 64 << 10, NULL) !=
		    (64 << 10) || memcmp(out, plain, 64 << 10))
			t->failures++;
	}
	for (int i = 0; i < 6; i++)
		free(buf[i]);
	codec_ctx_free(x);
	free(plain);
	free(out);
	return NULL;
}

START_TEST(test_threads)
{
	struct fix f;
	pthread_t th[4];
	struct thr t[4];

	fix_init(&f, 4, 2, 64 << 10, CODEC_COMPRESS_ZSTD);
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){ .c = f.c, .rounds = 40, .seed = i + 1 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(t[i].failures, 0);
	}
	fix_fini(&f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("codec");
	TCase *tc = tcase_create("codec");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_params);
	tcase_add_test(tc, test_roundtrip_grid);
	tcase_add_test(tc, test_all_erasures_small);
	tcase_add_test(tc, test_random_erasures_16_4);
	tcase_add_test(tc, test_random_erasures_32_8);
	tcase_add_test(tc, test_rs_kernels_agree);
	tcase_add_test(tc, test_big_chunks);
	tcase_add_test(tc, test_parity_mac_poly1305);
	tcase_add_test(tc, test_hole);
	tcase_add_loop_test(tc, test_every_byte_corruption, 0, 2);
	tcase_add_test(tc, test_too_many_corruptions);
	tcase_add_test(tc, test_forged_parity);
	tcase_add_test(tc, test_misplaced_shards);
	tcase_add_test(tc, test_wrong_key_and_lengths);
	tcase_add_test(tc, test_ranges);
	tcase_add_test(tc, test_rebuild_and_info);
	tcase_add_test(tc, test_fresh_salt);
	tcase_add_test(tc, test_key_files);
	tcase_add_test(tc, test_golden_vectors);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return check_run(s);
}
