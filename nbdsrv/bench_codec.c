/*
 * bench_codec.c — `nbdsrv bench codec [--json] [--quick]`: single-core speed
 * of the FLECC codec and of its parts, measured in one run so the ratios
 * mean something on a shared, noisy machine.
 *
 *   primitives  raw AEAD candidates (OpenSSL AES-256-GCM, ChaCha20-Poly1305;
 *               libsodium AES-256-GCM and XChaCha20-Poly1305), the parity-MAC
 *               candidates (OpenSSL AES-GMAC, Poly1305 — the codec's parity
 *               MAC), CRC32C; per row, RS encode alone
 *               with ISA-L and with the codec's kernel (GFNI where present)
 *   pipeline    for 16+4 and 4+2 at 256 KiB, 1 MiB, 4 MiB: encode, decode
 *               with all data shards (fast path: metadata CRCs + tags),
 *               decode with m data shards lost (RS rebuild), and
 *               encode / raw AES-256-GCM over the same bytes (their rounds
 *               alternate, so the ratio compares like with like).
 *
 * Each figure is the best of several timed rounds (a round lasts at least
 * ~0.1 s of this thread's CPU time, so other load on the machine does not
 * count), in GB/s of chunk plaintext (1 GB = 1e9 bytes), one thread.
 * Data is random (incompressible); compression off.
 */
#include "codec/codec.h"
#include "common/common.h"
#include "nbdsrv/cmd.h"

#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bench_opts {
	bool json;
	double min_round;               /* seconds */
	int rounds;
};

typedef void bench_fn(void *arg);

/* This thread's CPU time: other processes sharing the cores do not count. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

/* One timed round of fn: GB/s. */
static double bench_round(const struct bench_opts *o, bench_fn *fn, void *arg, size_t bytes)
{
	uint64_t t0 = cpu_ns(), t, n = 0;

	do {
		fn(arg);
		n++;
		t = cpu_ns() - t0;
	} while (t < o->min_round * 1e9);
	return (double)bytes * n / t;
}

/* Best throughput of fn over bytes per call, in GB/s. */
static double bench_run(const struct bench_opts *o, bench_fn *fn, void *arg, size_t bytes)
{
	double best = 0;

	fn(arg);                        /* warm up */
	for (int r = 0; r < o->rounds; r++)
		best = MAX(best, bench_round(o, fn, arg, bytes));
	return best;
}

/* Best throughputs of fa and fb over bytes per call, their rounds
 * alternating so that a ratio of the two compares like with like on a
 * machine whose load changes by the second. */
static void bench_pair(const struct bench_opts *o, bench_fn *fa, void *aa, bench_fn *fb,
		       void *ab, size_t bytes, double *ga, double *gb)
{
	*ga = *gb = 0;
	fa(aa);
	fb(ab);
	for (int r = 0; r < o->rounds; r++) {
		*ga = MAX(*ga, bench_round(o, fa, aa, bytes));
		*gb = MAX(*gb, bench_round(o, fb, ab, bytes));
	}
}

/* ---- primitives ---- */

struct evp_arg {
	EVP_CIPHER_CTX *ctx;
	uint8_t *buf;
	size_t len;
	bool aad_only;
};

static void evp_seal(void *p)
{
	struct evp_arg *a = p;
	static const uint8_t iv[12];
	uint8_t tag[16];
	int outl;

	EVP_EncryptInit_ex(a->ctx, NULL, NULL, NULL, iv);
	if (a->aad_only) {
		EVP_EncryptUpdate(a->ctx, NULL, &outl, a->buf, (int)a->len);
		EVP_EncryptFinal_ex(a->ctx, NULL, &outl);
	} else {
		EVP_EncryptUpdate(a->ctx, a->buf, &outl, a->buf, (int)a->len);
		EVP_EncryptFinal_ex(a->ctx, a->buf + outl, &outl);
	}
	EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
}

static double bench_evp(const struct bench_opts *o, const EVP_CIPHER *ciph,
			uint8_t *buf, size_t len, bool aad_only)
{
	static const uint8_t key[32] = { 1 };
	struct evp_arg a = { EVP_CIPHER_CTX_new(), buf, len, aad_only };
	double r;

	EVP_EncryptInit_ex(a.ctx, ciph, NULL, key, NULL);
	r = bench_run(o, evp_seal, &a, len);
	EVP_CIPHER_CTX_free(a.ctx);
	return r;
}

struct mac_arg {
	EVP_MAC_CTX *ctx;
	uint8_t *buf;
	size_t len;
};

static void mac_run(void *p)
{
	struct mac_arg *a = p;
	static const uint8_t key[32] = { 1 };
	uint8_t tag[16];
	size_t outl;

	EVP_MAC_init(a->ctx, key, sizeof(key), NULL);
	EVP_MAC_update(a->ctx, a->buf, a->len);
	EVP_MAC_final(a->ctx, tag, &outl, sizeof(tag));
}

static double bench_poly1305(const struct bench_opts *o, uint8_t *buf, size_t len)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
	struct mac_arg a = { mac ? EVP_MAC_CTX_new(mac) : NULL, buf, len };
	double r = 0;

	if (a.ctx)
		r = bench_run(o, mac_run, &a, len);
	EVP_MAC_CTX_free(a.ctx);
	EVP_MAC_free(mac);
	return r;
}

struct sod_arg {
	uint8_t *buf;
	size_t len;
	bool xchacha;
	crypto_aead_aes256gcm_state *st;
};

static void sod_seal(void *p)
{
	struct sod_arg *a = p;
	static const uint8_t key[32] = { 1 }, npub[24];
	uint8_t mac[16];
	unsigned long long ml;

	if (a->xchacha)
		crypto_aead_xchacha20poly1305_ietf_encrypt_detached(a->buf, mac, &ml, a->buf,
								    a->len, NULL, 0, NULL,
								    npub, key);
	else
		crypto_aead_aes256gcm_encrypt_detached_afternm(a->buf, mac, &ml, a->buf, a->len,
							       NULL, 0, NULL, npub, a->st);
}

struct ec_arg {
	const struct codec *c;
	int k, m;
	size_t len;
	uint8_t *tables;
	uint8_t *data[CODEC_MAX_K], *par[CODEC_MAX_M];
};

static void ec_run(void *p)
{
	struct ec_arg *a = p;

	ec_encode_data((int)a->len, a->k, a->m, a->tables, a->data, a->par);
}

static void rs_codec_run(void *p)
{
	struct ec_arg *a = p;

	codec_rs_encode(a->c, a->len, a->data, a->par);
}

struct crc_arg {
	uint8_t *buf;
	size_t len;
	uint32_t sink;
};

static void crc_run(void *p)
{
	struct crc_arg *a = p;

	a->sink += crc32_iscsi(a->buf, (int)a->len, 0xFFFFFFFFu);
}

/* ---- pipeline ---- */

struct pipe_arg {
	struct codec_ctx *x;
	struct codec_id id;
	uint8_t *plain, *out;
	size_t len;
	uint8_t *shards[CODEC_MAX_SHARDS];
	const uint8_t *present[CODEC_MAX_SHARDS];
	size_t lens[CODEC_MAX_SHARDS];
	struct codec_meta meta;
	int err;
};

static void pipe_encode(void *p)
{
	struct pipe_arg *a = p;

	if (codec_encode(a->x, &a->id, a->plain, a->len, a->shards, a->lens, &a->meta) != 0)
		a->err = 1;
}

static void pipe_decode(void *p)
{
	struct pipe_arg *a = p;

	if (codec_decode(a->x, &a->id, &a->meta, a->present, a->lens, a->out, a->len,
			 NULL) != (int)a->len)
		a->err = 1;
}

struct row {
	unsigned k, m;
	size_t chunk;
	double enc, dec_fast, dec_lost, aead, ec, rs, ratio;
};

static int bench_pipeline(const struct bench_opts *o, const struct codec_key *key,
			  unsigned k, unsigned m, size_t chunk, struct row *row)
{
	struct codec_params p = { .k = k, .m = m, .max_chunk = chunk };
	struct codec *c = NULL;
	struct pipe_arg a = { .len = chunk };
	struct ec_arg e = { .k = k, .m = m };

	char err[256];
	int r;

	r = codec_new(&p, key, &c, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "bench codec: %s\n", err);
		return r;
	}
	r = codec_ctx_new(c, &a.x);
	if (r < 0)
		goto exit;
	a.plain = malloc(chunk);
	a.out = malloc(chunk);
	for (unsigned i = 0; i < k + m; i++)
		a.shards[i] = malloc(codec_shard_max(c));
	randombytes_buf(a.plain, chunk);
	a.id.volume = 1;
	row->k = k;
	row->m = m;
	row->chunk = chunk;
	{
		static const uint8_t akey[32] = { 1 };
		struct evp_arg ev = { EVP_CIPHER_CTX_new(), a.out, chunk, false };

		EVP_EncryptInit_ex(ev.ctx, EVP_aes_256_gcm(), NULL, akey, NULL);
		bench_pair(o, pipe_encode, &a, evp_seal, &ev, chunk, &row->enc, &row->aead);
		EVP_CIPHER_CTX_free(ev.ctx);
	}
	for (unsigned i = 0; i < k + m; i++)
		a.present[i] = a.shards[i];
	row->dec_fast = bench_run(o, pipe_decode, &a, chunk);
	for (unsigned i = 0; i < m && i < k; i++)
		a.present[i] = NULL;
	row->dec_lost = bench_run(o, pipe_decode, &a, chunk);
	/* RS alone over the same shard payloads the codec codes. */
	e.len = a.meta.body_len + CODEC_TAG_SIZE;
	e.tables = malloc((size_t)32 * k * m);
	{
		uint8_t *mat = malloc((size_t)(k + m) * k);

		gf_gen_cauchy1_matrix(mat, k + m, k);
		ec_init_tables(k, m, mat + k * k, e.tables);
		free(mat);
	}
	for (unsigned i = 0; i < k; i++)
		e.data[i] = a.shards[i] + CODEC_HEADER_SIZE;
	for (unsigned i = 0; i < m; i++)
		e.par[i] = a.shards[k + i] + CODEC_HEADER_SIZE;
	row->ec = bench_run(o, ec_run, &e, chunk);
	e.c = c;
	row->rs = bench_run(o, rs_codec_run, &e, chunk);
	row->ratio = row->enc / row->aead;
	free(e.tables);
	r = a.err ? -EIO : 0;
	if (a.err)
		fprintf(stderr, "bench codec: encode/decode failed for %u+%u\n", k, m);
exit:
	for (unsigned i = 0; i < k + m; i++)
		free(a.shards[i]);
	free(a.plain);
	free(a.out);
	codec_ctx_free(a.x);
	codec_free(c);
	return r;
}

int bench_codec(int argc, char **argv)
{
	struct bench_opts o = { .json = false, .min_round = 0.1, .rounds = 5 };
	static const unsigned km[][2] = { {16, 4}, {4, 2} };
	static const size_t chunks[] = { 256 << 10, 1 << 20, 4 << 20 };
	const size_t plen = 1 << 20;
	struct row rows[ARRAY_SIZE(km) * ARRAY_SIZE(chunks)];
	struct codec_key *key = NULL;
	uint8_t raw[CODEC_KEY_SIZE];
	uint8_t *buf;
	double aes, chacha, gmac, poly, s_aes = 0, s_xchacha, crc;
	int nrows = 0, ret = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			o.json = true;
		} else if (!strcmp(argv[i], "--quick")) {
			o.min_round = 0.02;
			o.rounds = 2;
		} else {
			fprintf(stderr, "usage: nbdsrv bench codec [--json] [--quick]\n");
			return 2;
		}
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "bench codec: libsodium failed to initialise\n");
		return 1;
	}
	buf = malloc(plen + 64);
	randombytes_buf(buf, plen);
	randombytes_buf(raw, sizeof(raw));
	if (codec_key_from_bytes(raw, &key) < 0)
		goto exit;
	sodium_memzero(raw, sizeof(raw));

	aes = bench_evp(&o, EVP_aes_256_gcm(), buf, plen, false);
	chacha = bench_evp(&o, EVP_chacha20_poly1305(), buf, plen, false);
	gmac = bench_evp(&o, EVP_aes_256_gcm(), buf, plen, true);
	poly = bench_poly1305(&o, buf, plen);
	{
		struct sod_arg s = { buf, plen, true, NULL };
		static const uint8_t skey[32] = { 1 };

		s_xchacha = bench_run(&o, sod_seal, &s, plen);
		if (crypto_aead_aes256gcm_is_available()) {
			s.xchacha = false;
			s.st = sodium_malloc(sizeof(*s.st));
			crypto_aead_aes256gcm_beforenm(s.st, skey);
			s_aes = bench_run(&o, sod_seal, &s, plen);
			sodium_free(s.st);
		}
	}
	{
		struct crc_arg c = { buf, plen, 0 };

		crc = bench_run(&o, crc_run, &c, plen);
	}
	for (unsigned g = 0; g < ARRAY_SIZE(km); g++)
		for (unsigned ci = 0; ci < ARRAY_SIZE(chunks); ci++) {
			if (bench_pipeline(&o, key, km[g][0], km[g][1], chunks[ci],
					   &rows[nrows]) < 0)
				goto exit;
			nrows++;
		}

	if (o.json) {
		printf("{\"unit\":\"GB/s per core\",\"primitives_1MiB\":{"
		       "\"openssl_aes256gcm\":%.3f,\"openssl_chacha20poly1305\":%.3f,"
		       "\"openssl_aes256gmac_aad_only\":%.3f,\"openssl_poly1305\":%.3f,"
		       "\"sodium_aes256gcm\":%.3f,"
		       "\"sodium_xchacha20poly1305\":%.3f,\"isal_crc32c\":%.3f},\"rows\":[",
		       aes, chacha, gmac, poly, s_aes, s_xchacha, crc);
		for (int i = 0; i < nrows; i++)
			printf("%s{\"k\":%u,\"m\":%u,\"chunk\":%zu,\"encode\":%.3f,"
			       "\"decode_all_data\":%.3f,\"decode_m_lost\":%.3f,"
			       "\"aead_alone\":%.3f,\"isal_encode_alone\":%.3f,"
			       "\"codec_rs_alone\":%.3f,\"encode_over_aead\":%.3f}",
			       i ? "," : "", rows[i].k, rows[i].m,
			       rows[i].chunk, rows[i].enc, rows[i].dec_fast, rows[i].dec_lost,
			       rows[i].aead, rows[i].ec, rows[i].rs, rows[i].ratio);
		printf("],\"rs_kernel\":\"%s\"}\n", codec_rs_kernel());
	} else {
		printf("Primitives, one core, 1 MiB buffers (GB/s):\n");
		printf("  OpenSSL AES-256-GCM          %6.2f   (chosen)\n", aes);
		printf("  OpenSSL ChaCha20-Poly1305    %6.2f\n", chacha);
		printf("  OpenSSL AES-256-GMAC (AAD)   %6.2f\n", gmac);
		printf("  OpenSSL Poly1305 (MAC only)  %6.2f   (parity MAC)\n", poly);
		if (s_aes > 0)
			printf("  libsodium AES-256-GCM        %6.2f\n", s_aes);
		else
			printf("  libsodium AES-256-GCM           n/a\n");
		printf("  libsodium XChaCha20-Poly1305 %6.2f\n", s_xchacha);
		printf("  ISA-L CRC32C                 %6.2f\n", crc);
		printf("\nFLECC pipeline, one core, random data, no compression (GB/s of chunk);\n"
		       "RS kernel in the codec: %s\n", codec_rs_kernel());
		printf("  k+m   chunk  encode  dec(all data)  dec(m lost)  AEAD alone  ISA-L alone"
		       "  codec RS alone  encode/AEAD\n");
		for (int i = 0; i < nrows; i++)
			printf("  %2u+%u  %4zu%s  %6.2f  %13.2f  %11.2f  %10.2f  %11.2f  %14.2f  %10.0f%%\n",
			       rows[i].k, rows[i].m,
			       rows[i].chunk >= (1 << 20) ? rows[i].chunk >> 20 : rows[i].chunk >> 10,
			       rows[i].chunk >= (1 << 20) ? "M" : "K", rows[i].enc, rows[i].dec_fast,
			       rows[i].dec_lost, rows[i].aead, rows[i].ec, rows[i].rs,
			       100 * rows[i].ratio);
	}
	ret = 0;
exit:
	codec_key_free(key);
	free(buf);
	return ret;
}
