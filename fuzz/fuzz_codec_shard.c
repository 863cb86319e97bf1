/*
 * fuzz_codec_shard.c — libFuzzer target for codec/.
 *
 * Input, first byte = mode:
 *   0  a chunk as a backend might return it:
 *        [meta_len u8][meta bytes][6 x (len u16 LE, bytes)]
 *      for a 4+2 codec with a fixed key and identity; every shard goes
 *      through codec_shard_info and codec_verify_shard, the set through
 *      codec_decode (with the unpacked metadata when it parses, and
 *      without), codec_decode_range and codec_rebuild_shard.  The seed
 *      corpus holds valid chunks under that key, so mutations reach the
 *      authenticated paths.
 *   1  an oracle: [compress u8][drop mask u8][n u8][n x (shard u8, pos u16,
 *      xor u8)][plaintext…]: encode the plaintext, damage the shards as
 *      told, decode; a success that returns other bytes than were encoded
 *      aborts.
 */
#include "codec/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FZ_K 4
#define FZ_M 2
#define FZ_N (FZ_K + FZ_M)
#define FZ_CHUNK (64u << 10)

static struct codec *fz_codec[3];
static struct codec_ctx *fz_ctx[3];
static uint8_t *fz_buf[FZ_N], *fz_out, *fz_rebuilt;
static const struct codec_id fz_id = { .pool = "fuzz-pool-uuid!", .volume = 1,
				       .chunk = 2, .version = 3 };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t raw[CODEC_KEY_SIZE] = "fuzz key: not a secret at all!!";
	struct codec_key *key;
	char err[256];

	(void)argc; (void)argv;
	if (codec_key_from_bytes(raw, &key) < 0)
		abort();
	for (int c = 0; c < 3; c++) {
		struct codec_params p = { .k = FZ_K, .m = FZ_M, .max_chunk = FZ_CHUNK,
					  .compress = c };

		if (codec_new(&p, key, &fz_codec[c], err, sizeof(err)) < 0 ||
		    codec_ctx_new(fz_codec[c], &fz_ctx[c]) < 0) {
			fprintf(stderr, "fuzz init: %s\n", err);
			abort();
		}
	}
	codec_key_free(key);
	for (int i = 0; i < FZ_N; i++)
		fz_buf[i] = malloc(codec_shard_max(fz_codec[0]));
	fz_out = malloc(FZ_CHUNK);
	fz_rebuilt = malloc(codec_shard_max(fz_codec[0]));
	return 0;
}

static void fuzz_shards(const uint8_t *data, size_t size)
{
	struct codec_ctx *x = fz_ctx[0];
	const uint8_t *sh[FZ_N] = { NULL };
	size_t lens[FZ_N] = { 0 };
	struct codec_meta meta;
	bool have_meta = false;
	enum codec_status st[FZ_N];
	size_t pos = 0;
	int r;

	if (size < 1)
		return;
	if (data[0] && 1 + (size_t)data[0] <= size)
		have_meta = codec_meta_unpack(data + 1, data[0], &meta) == 0;
	pos = 1 + (size_t)data[0];
	for (int i = 0; i < FZ_N && pos + 2 <= size; i++) {
		size_t len = data[pos] | (size_t)data[pos + 1] << 8;

		pos += 2;
		if (len > size - pos)
			len = size - pos;
		if (len) {
			/* An exact-size heap copy, so ASan sees any overread. */
			uint8_t *copy = malloc(len);

			memcpy(copy, data + pos, len);
			sh[i] = copy;
			lens[i] = len;
		}
		pos += len;
	}
	for (int i = 0; i < FZ_N; i++) {
		struct codec_shard_info info;

		if (!sh[i])
			continue;
		(void)codec_shard_info(sh[i], lens[i], &info);
		(void)codec_verify_shard(x, &fz_id, NULL, i, sh[i], lens[i], true);
		if (have_meta)
			(void)codec_verify_shard(x, &fz_id, &meta, i, sh[i], lens[i], false);
	}
	r = codec_decode(x, &fz_id, NULL, sh, lens, fz_out, FZ_CHUNK, st);
	if (have_meta) {
		r = codec_decode(x, &fz_id, &meta, sh, lens, fz_out, FZ_CHUNK, st);
		if (meta.plain_len > 10)
			(void)codec_decode_range(x, &fz_id, &meta, sh, lens, 3,
						 meta.plain_len - 7, fz_out, st);
		(void)codec_rebuild_shard(x, &fz_id, &meta, sh, lens, data[0] % FZ_N,
					  fz_rebuilt, st);
	}
	(void)codec_rebuild_shard(x, &fz_id, NULL, sh, lens, pos % FZ_N, fz_rebuilt, st);
	(void)r;
	for (int i = 0; i < FZ_N; i++)
		free((void *)sh[i]);
}

static void fuzz_oracle(const uint8_t *data, size_t size)
{
	const uint8_t *plain;
	const uint8_t *sh[FZ_N];
	size_t lens[FZ_N], plen, n, hdr;
	struct codec_meta meta;
	struct codec_ctx *x;
	enum codec_status st[FZ_N];
	int r;

	if (size < 3)
		return;
	x = fz_ctx[data[0] % 3];
	n = data[2];
	hdr = 3 + 4 * n;
	if (hdr >= size)
		return;
	plain = data + hdr;
	plen = size - hdr;
	if (plen > FZ_CHUNK)
		plen = FZ_CHUNK;
	r = codec_encode(x, &fz_id, plain, plen, fz_buf, lens, &meta);
	if (r == CODEC_HOLE)
		return;
	if (r < 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		const uint8_t *m = data + 3 + 4 * i;
		unsigned s = m[0] % FZ_N;
		size_t p = (m[1] | (size_t)m[2] << 8) % lens[s];

		fz_buf[s][p] ^= m[3];
	}
	for (int i = 0; i < FZ_N; i++)
		sh[i] = data[1] >> i & 1 ? NULL : fz_buf[i];
	for (int wm = 0; wm < 2; wm++) {
		r = codec_decode(x, &fz_id, wm ? &meta : NULL, sh, lens, fz_out, FZ_CHUNK, st);
		if (r >= 0 && ((size_t)r != plen || memcmp(fz_out, plain, plen))) {
			fprintf(stderr, "decode returned wrong bytes (meta %d)\n", wm);
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_oracle(data + 1, size - 1);
	else
		fuzz_shards(data + 1, size - 1);
	return 0;
}
