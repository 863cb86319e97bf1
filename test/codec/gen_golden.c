/*
 * gen_golden.c — rewrite the codec fuzz seeds that double as golden vectors
 * (fuzz/corpus/codec_shard/valid-*) after a deliberate change of the shard
 * format: each file's plaintext is recovered through its data shards alone
 * (the AES-GCM path, which a parity-MAC change leaves intact), encoded again
 * with the current codec under the fuzz key and identity, and written back as
 * mode 0 | meta_len | meta | 6 x (len u16 LE, shard).  Not a test; build with
 * `cmake --build DIR --target gen_golden`, run as `gen_golden FILE...`.
 * The salt is random, so every run gives new bytes.
 */
#include "codec/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GG_K 4
#define GG_M 2
#define GG_N (GG_K + GG_M)

static const uint8_t gg_key[CODEC_KEY_SIZE] = "fuzz key: not a secret at all!!";
static const struct codec_id gg_id = { .pool = "fuzz-pool-uuid!", .volume = 1, .chunk = 2,
				       .version = 3 };

static int gg_one(struct codec_key *key, const char *path)
{
	static uint8_t data[1 << 16], plain[64 << 10], *shards[GG_N];
	const uint8_t *sh[GG_N];
	size_t lens[GG_N], pos, n;
	struct codec_meta meta;
	enum codec_status st[GG_N];
	struct codec *c = NULL;
	struct codec_ctx *x = NULL;
	char err[256] = "";
	FILE *fp;
	int r, ret = -1;

	fp = fopen(path, "rb");
	if (!fp) {
		perror(path);
		return -1;
	}
	n = fread(data, 1, sizeof(data), fp);
	fclose(fp);
	if (n < 2 || data[0] != 0 || codec_meta_unpack(data + 2, data[1], &meta) < 0) {
		fprintf(stderr, "%s: not a mode-0 seed with metadata\n", path);
		return -1;
	}
	pos = 2 + (size_t)data[1];
	for (int i = 0; i < GG_N; i++) {
		if (pos + 2 > n)
			goto short_file;
		lens[i] = data[pos] | (size_t)data[pos + 1] << 8;
		sh[i] = data + pos + 2;
		pos += 2 + lens[i];
		if (pos > n)
			goto short_file;
	}
	struct codec_params p = { .k = GG_K, .m = GG_M, .max_chunk = 64 << 10,
				  .compress = meta.compress };
	if (codec_new(&p, key, &c, err, sizeof(err)) < 0 || codec_ctx_new(c, &x) < 0) {
		fprintf(stderr, "%s: codec: %s\n", path, err);
		goto exit;
	}
	sh[GG_K] = sh[GG_K + 1] = NULL;         /* parity not needed, maybe stale */
	r = codec_decode(x, &gg_id, &meta, sh, lens, plain, sizeof(plain), st);
	if (r <= 0) {
		fprintf(stderr, "%s: decode: %s\n", path, codec_strerror(r));
		goto exit;
	}
	for (int i = 0; i < GG_N; i++)
		shards[i] = malloc(codec_shard_max(c));
	if (codec_encode(x, &gg_id, plain, (size_t)r, shards, lens, &meta) != 0) {
		fprintf(stderr, "%s: encode failed\n", path);
		goto free_shards;
	}
	fp = fopen(path, "wb");
	if (!fp) {
		perror(path);
		goto free_shards;
	}
	n = codec_meta_pack(&meta, data + 2);
	data[0] = 0;
	data[1] = (uint8_t)n;
	fwrite(data, 1, 2 + n, fp);
	for (int i = 0; i < GG_N; i++) {
		uint8_t l[2] = { (uint8_t)lens[i], (uint8_t)(lens[i] >> 8) };

		fwrite(l, 1, 2, fp);
		fwrite(shards[i], 1, lens[i], fp);
	}
	ret = fclose(fp) == 0 ? 0 : -1;
	printf("%s: %d bytes of plaintext, compression %u\n", path, r, meta.compress);
free_shards:
	for (int i = 0; i < GG_N; i++)
		free(shards[i]);
exit:
	codec_ctx_free(x);
	codec_free(c);
	return ret;
short_file:
	fprintf(stderr, "%s: truncated\n", path);
	return -1;
}

int main(int argc, char **argv)
{
	struct codec_key *key;
	int ret = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: gen_golden SEED...\n");
		return 2;
	}
	if (codec_key_from_bytes(gg_key, &key) < 0)
		return 1;
	for (int i = 1; i < argc; i++)
		if (gg_one(key, argv[i]) < 0)
			ret = 1;
	codec_key_free(key);
	return ret;
}
