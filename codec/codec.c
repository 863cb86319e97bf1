/*
 * codec.c — FLECC v1: encrypted, authenticated, Reed-Solomon coded shards.
 *
 * Contents
 *   1. the shard format (below), helpers
 *   2. codec / codec_ctx lifetime, keys in the context
 *   3. encode
 *   4. decode: quick checks, full checks, reconstruction, ranges, rebuild
 *   5. headers found in the wild, the metadata record, error strings
 *
 * Pipeline (encode)
 *
 *   plain ─► all zero? ─► hole (nothing stored)
 *     │
 *     ▼ optional lz4/zstd (kept only if it shrinks)          "stored" bytes
 *   split into k pieces of S bytes (S = ceil(stored/k) rounded up to 64,
 *     │                              the tail of the last pieces zero-padded)
 *     ▼ AES-256-GCM per piece, own nonce, AAD = that shard's header
 *   data shard i = header_i | ciphertext_i (S) | tag_i (16)
 *     │
 *     ▼ ISA-L Cauchy RS over the k sealed payloads (ciphertext|tag, S+16)
 *   parity shard j = header_j | parity_j (S+16) | MAC_j (16)
 *     │                     MAC = Poly1305 (OpenSSL) under a one-time key,
 *     ▼                     over header_j [8, 96) | parity_j
 *   CRC32C of every record → in its header and in struct codec_meta
 *
 *   Order of work: the diagram's steps run stripe by stripe (CODEC_STRIPE,
 *   32 KiB), not as passes over the whole chunk.  Each data shard is sealed
 *   a stripe at a time, each stripe CRC'd right after (the last one with
 *   the tag); then RS runs a stripe across all shards, and each new parity
 *   stripe goes straight into its shard's Poly1305 (one EVP_MAC_CTX per
 *   parity shard) and CRC.  The MAC trails RS by CODEC_MAC_LAG bytes so it
 *   is always fed whole 128-byte groups of its message: OpenSSL 3.0's
 *   vector Poly1305 measured ~20 % slower here when the 88 header bytes
 *   went in as an update of their own.  The striping itself did not
 *   measurably change speed on this machine (the work is compute-bound
 *   there); the MAC feeding and fewer small CRC calls gained ≈ 1–2 % of
 *   encode throughput at 4+2 (bench/codec.md).
 *
 * Shard record, little-endian, all lengths in bytes
 *
 *   off size field
 *     0   4  magic "FLEC"
 *     4   4  CRC32C (ISA-L crc32_iscsi, seed 0xFFFFFFFF) of bytes [8, end)
 *     8   1  format version = 1
 *     9   1  compression: 0 none, 1 lz4, 2 zstd
 *    10   1  AEAD: 1 = AES-256-GCM
 *    11   1  shard index (0..k-1 data, k..k+m-1 parity)
 *    12   1  k
 *    13   1  m
 *    14   2  header size = 96
 *    16  16  pool id
 *    32   8  volume id
 *    40   8  chunk index
 *    48   8  chunk version
 *    56  24  salt (random per encoding)
 *    80   4  plain length (chunk bytes, 1..8 MiB)
 *    84   4  stored length (after compression; = plain when not compressed)
 *    88   4  S, ciphertext bytes per data shard (= ceil(stored/k) up to 64)
 *    92   4  reserved, 0
 *    96   S  data: ciphertext of stored[i*S, i*S+S) (zero-padded plaintext)
 *            parity: the first S bytes of the parity payload
 *   96+S 16  data: GCM tag          parity: the last 16 parity bytes
 *  112+S 16  parity only: Poly1305 tag of bytes [8, 112+S), i.e. header
 *            bytes [8, 96) then the S+16 parity bytes, under the shard's
 *            one-time key (below).  No length block: every length is fixed
 *            by the header fields the tag covers (k, m, S, index).
 *
 *   Data records are 112+S bytes, parity records 128+S; neither exceeds
 *   8,388,608 (zdb's limit), which codec_params_check() enforces.
 *
 *   Version 1 has had other parity-MAC meanings during development (an
 *   interim GF(2^128) polynomial MAC); none was ever in a release, so no
 *   persisted shard carries one and the version stayed 1.  After a release,
 *   any change of these bytes' meaning takes a new version number.
 *
 * Keys and nonces
 *   chunk key = KDF(volume key, salt, chunk, version) (key.c).  The 24-byte
 *   salt is new at every encode: 16 random bytes drawn when the context is
 *   created (and every 2^40 chunks) followed by a 64-bit per-context
 *   counter, so a chunk key is never used for two encodings, even when a
 *   version number repeats after a crash or rollback or two threads encode
 *   the same chunk (a prefix collision between contexts: 2^-128 per pair).
 *   Under one chunk key the GCM nonces are fixed and distinct: 'D', index,
 *   0… per data shard.  Deterministic nonces under a fresh key avoid the
 *   limits of random 96-bit nonces and need no per-shard storage.  Parity
 *   shard k+j's one-time Poly1305 key (r | s) is keystream block j (32
 *   bytes) of ChaCha20(chunk key, nonce "FLECC1/pmac\0") — the nonce is
 *   only a domain label, kept from an earlier MAC — so a Poly1305 key is
 *   never used for two messages: distinct per shard, and new per encoding
 *   through the salt.
 *
 * What each check is for
 *   AAD (bytes [8, 96)) binds each shard to pool, volume, chunk, version,
 *   salt and position: a shard replayed from another version, moved to
 *   another chunk/volume/pool, or shuffled to another index fails its tag.
 *   The GCM tag of a data shard authenticates every byte decode returns —
 *   also after reconstruction, since the rebuilt ciphertext must carry a tag
 *   that only a key holder can make.  The parity MAC lets a key holder
 *   verify a parity shard alone (scrub, metadata-less decode) and names the
 *   culprit when a reconstruction fails.  CRC32C is the cheap fast path
 *   against accidents: compared to the metadata's copy (and the header's),
 *   it names the corrupt shard before any crypto runs.  A forger who fixes
 *   up a CRC is still caught by the tags; the decoder then re-checks each
 *   source cryptographically to attribute the failure and retries without it.
 *
 * Why AES-256-GCM: on this machine (VAES/VPCLMULQDQ) OpenSSL's AES-256-GCM
 * measured ≈ 4.5 GB/s per core at 256 KiB vs ≈ 3.7 GB/s for ChaCha20-
 * Poly1305 and ≈ 1.5–1.8 GB/s for libsodium's AEADs (`nbdsrv bench codec`).
 * Parity MAC: Poly1305 through OpenSSL's EVP_MAC (≈ 12.5 GB/s here, one
 * EVP_MAC_CTX per parity shard, cached per codec_ctx and re-keyed per
 * chunk) rather than AES-GMAC (GCM with only AAD, ≈ 8.5 GB/s); sealing
 * parity would cost a full AEAD pass.  A hand-written VPCLMULQDQ
 * polynomial MAC measured ≈ 21 GB/s and ≈ 2 % (16+4) to 6 % (4+2) more
 * encode throughput; it was dropped on purpose: the project does not
 * carry its own cryptography where a maintained library fits, and Poly1305
 * is a standard one-time MAC with reviewed, constant-time implementations.
 * Tags are compared with CRYPTO_memcmp.
 *
 * Threads: struct codec is read-only after codec_new(); everything mutable
 * (EVP contexts, scratch, cached keys, the decode-table cache) lives in a
 * struct codec_ctx owned by one thread.
 */
#include "codec/codec_int.h"
#include "common/common.h"

#include <endian.h>
#include <errno.h>
#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>
#include <isa-l/mem_routines.h>
#include <lz4.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define CODEC_MAGIC       "FLEC"
#define CODEC_VERSION     1
#define CODEC_AEAD_AESGCM 1
#define CODEC_ALIGN       64
#define CODEC_AAD_OFF     8
#define CODEC_AAD_LEN     (CODEC_HEADER_SIZE - CODEC_AAD_OFF)
#define CODEC_DT_CACHE    16
#define CODEC_META_VERSION 1
#define CODEC_STRIPE      (32u << 10)   /* encode's cache-sized unit of work */
#define CODEC_MAC_LAG     CODEC_AAD_LEN /* parity bytes the MAC trails RS by */
_Static_assert(CODEC_STRIPE % 128 == 0 && CODEC_AAD_LEN < 128, "MAC groups");

/* ---------------------------------------------------------------- 1 ---- */

static inline void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint16_t get16(const uint8_t *p) { return p[0] | (p[1] << 8); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

static uint32_t body_len_for(uint32_t stored, unsigned k)
{
	return ROUND_UP((stored + k - 1) / k, CODEC_ALIGN);
}

static size_t record_len(uint32_t S, unsigned k, unsigned idx)
{
	return CODEC_HEADER_SIZE + (size_t)S + CODEC_TAG_SIZE + (idx >= k ? CODEC_TAG_SIZE : 0);
}

static uint32_t record_crc(const uint8_t *rec, size_t len)
{
	return crc32_iscsi((unsigned char *)rec + 8, (int)(len - 8), 0xFFFFFFFFu);
}

/* Header of shard idx for chunk id with parameters mt (crc left 0). */
static void header_build(uint8_t *h, const struct codec_id *id,
			 const struct codec_meta *mt, unsigned idx)
{
	memcpy(h, CODEC_MAGIC, 4);
	put32(h + 4, 0);
	h[8] = CODEC_VERSION;
	h[9] = mt->compress;
	h[10] = CODEC_AEAD_AESGCM;
	h[11] = idx;
	h[12] = mt->k;
	h[13] = mt->m;
	put16(h + 14, CODEC_HEADER_SIZE);
	memcpy(h + 16, id->pool, 16);
	put64(h + 32, id->volume);
	put64(h + 40, id->chunk);
	put64(h + 48, id->version);
	memcpy(h + 56, mt->salt, CODEC_SALT_SIZE);
	put32(h + 80, mt->plain_len);
	put32(h + 84, mt->stored_len);
	put32(h + 88, mt->body_len);
	put32(h + 92, 0);
}

/* Do the length fields of mt describe a possible chunk of geometry k+m? */
static bool meta_sane(const struct codec_meta *mt)
{
	if (mt->k < 1 || mt->k > CODEC_MAX_K || mt->m > CODEC_MAX_M)
		return false;
	if (mt->compress > CODEC_COMPRESS_ZSTD)
		return false;
	if (mt->plain_len < 1 || mt->plain_len > CODEC_MAX_CHUNK)
		return false;
	if (mt->stored_len < 1 || mt->stored_len > mt->plain_len)
		return false;
	if (mt->compress == CODEC_COMPRESS_NONE && mt->stored_len != mt->plain_len)
		return false;
	if (mt->body_len != body_len_for(mt->stored_len, mt->k))
		return false;
	return record_len(mt->body_len, mt->k, mt->k + mt->m) <= CODEC_MAX_RECORD;
}

/* Structural parse of a header; no key, no CRC. */
static int header_parse(const uint8_t *h, size_t len, struct codec_shard_info *info)
{
	struct codec_meta *mt = &info->meta;

	if (len < CODEC_HEADER_SIZE || memcmp(h, CODEC_MAGIC, 4) || h[8] != CODEC_VERSION ||
	    h[10] != CODEC_AEAD_AESGCM || get16(h + 14) != CODEC_HEADER_SIZE ||
	    get32(h + 92) != 0)
		return -EBADMSG;
	memset(info, 0, sizeof(*info));
	mt->compress = h[9];
	mt->k = h[12];
	mt->m = h[13];
	memcpy(info->id.pool, h + 16, 16);
	info->id.volume = get64(h + 32);
	info->id.chunk = get64(h + 40);
	info->id.version = get64(h + 48);
	memcpy(mt->salt, h + 56, CODEC_SALT_SIZE);
	mt->plain_len = get32(h + 80);
	mt->stored_len = get32(h + 84);
	mt->body_len = get32(h + 88);
	info->index = h[11];
	if (!meta_sane(mt) || info->index >= (unsigned)mt->k + mt->m)
		return -EBADMSG;
	mt->crc[info->index] = get32(h + 4);
	return 0;
}

static bool id_equal(const struct codec_id *a, const struct codec_id *b)
{
	return !memcmp(a->pool, b->pool, 16) && a->volume == b->volume &&
	       a->chunk == b->chunk && a->version == b->version;
}

/* ---------------------------------------------------------------- 2 ---- */

struct codec {
	struct codec_params p;
	uint32_t smax;                  /* S of the largest chunk */
	struct codec_key *key;          /* own copy, locked memory */
	uint8_t *enc_matrix;            /* (k+m) x k Cauchy, identity on top */
	uint8_t *enc_tables;            /* rs_init_tables of the m parity rows */
};

struct codec_keys {                     /* in sodium_malloc() memory */
	uint8_t vol[CODEC_KEY_SIZE];
	uint8_t chunk[CODEC_KEY_SIZE];
	uint8_t mac[CODEC_MAX_M][CODEC_KEY_SIZE]; /* parity MAC keys of the chunk */
	uint8_t salt_prefix[16];        /* random per context, see ctx_salt() */
};

struct codec_dt {                       /* one cached decode table */
	uint64_t src, out;              /* shard masks; 0/0 = empty slot */
	uint64_t used;                  /* LRU clock */
	uint8_t *tbl;                   /* RS_TBL_BYTES * k * m bytes */
};

struct codec_ctx {
	struct codec *c;
	EVP_CIPHER_CTX *enc, *dec;
	EVP_MAC *mac_alg;
	EVP_MAC_CTX *mac[CODEC_MAX_M];  /* Poly1305, one per parity shard */
	struct codec_keys *keys;
	bool vol_ok;                    /* keys->vol is for vol_pool/vol_id */
	uint8_t vol_pool[16];
	uint64_t vol_id;
	bool chunk_ok;                  /* keys->chunk is for chunk_id/salt */
	struct codec_id chunk_id;
	uint8_t chunk_salt[CODEC_SALT_SIZE];
	bool enc_keyed, dec_keyed;      /* EVP contexts hold keys->chunk */
	bool mac_ok;                    /* keys->mac derived from keys->chunk */
	uint64_t salt_count;            /* salts drawn from salt_prefix */
	uint8_t *stream;                /* k*smax: compressed stream / payloads */
	uint8_t *junk;                  /* smax: decrypted bytes nobody asked for */
	uint8_t *comp;                  /* max_chunk: compression output */
	uint8_t *recon;                 /* m * (smax+16): rebuilt payloads */
	void *lz4_state;
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	struct codec_dt dt[CODEC_DT_CACHE];
	uint64_t dt_clock;
};

int codec_params_check(const struct codec_params *p, char *err, size_t errlen)
{
	uint32_t S;

	if (p->k < 1 || p->k > CODEC_MAX_K) {
		codec_errmsg(err, errlen, "k = %u: data shards must be 1..%d", p->k, CODEC_MAX_K);
		return -EINVAL;
	}
	if (p->m > CODEC_MAX_M) {
		codec_errmsg(err, errlen, "m = %u: parity shards must be 0..%d", p->m, CODEC_MAX_M);
		return -EINVAL;
	}
	if (!IS_POW2(p->max_chunk) || p->max_chunk < CODEC_MIN_CHUNK ||
	    p->max_chunk > CODEC_MAX_CHUNK) {
		codec_errmsg(err, errlen, "chunk size %u: must be a power of two from 64 KiB to 8 MiB",
		             p->max_chunk);
		return -EINVAL;
	}
	if ((unsigned)p->compress > CODEC_COMPRESS_ZSTD) {
		codec_errmsg(err, errlen, "compression %d: must be none, lz4 or zstd", p->compress);
		return -EINVAL;
	}
	if (p->zstd_level < 0 || p->zstd_level > ZSTD_maxCLevel()) {
		codec_errmsg(err, errlen, "zstd level %d: must be 0..%d", p->zstd_level,
		             ZSTD_maxCLevel());
		return -EINVAL;
	}
	S = body_len_for(p->max_chunk, p->k);
	if (record_len(S, p->k, p->k + p->m) > CODEC_MAX_RECORD) {
		codec_errmsg(err, errlen, "chunk size %u with k = %u gives shards of %zu bytes, over "
		             "zdb's limit of %u: use a larger k or a smaller chunk", p->max_chunk,
		             p->k, record_len(S, p->k, p->k + p->m), CODEC_MAX_RECORD);
		return -EINVAL;
	}
	return 0;
}

int codec_new(const struct codec_params *p, const struct codec_key *key,
	      struct codec **out, char *err, size_t errlen)
{
	struct codec *c;
	int r;

	*out = NULL;
	r = codec_params_check(p, err, errlen);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->p = *p;
	c->smax = body_len_for(p->max_chunk, p->k);
	r = codec_key_from_bytes(key->raw, &c->key);
	if (r < 0) {
		codec_errmsg(err, errlen, "cannot allocate locked memory for the key");
		goto fail;
	}
	c->enc_matrix = malloc((size_t)(p->k + p->m) * p->k);
	c->enc_tables = malloc((size_t)RS_TBL_BYTES * p->k * (p->m ? p->m : 1));
	if (!c->enc_matrix || !c->enc_tables) {
		r = -ENOMEM;
		goto fail;
	}
	gf_gen_cauchy1_matrix(c->enc_matrix, p->k + p->m, p->k);
	if (p->m)
		rs_init_tables(p->k, p->m, c->enc_matrix + p->k * p->k, c->enc_tables);
	*out = c;
	return 0;
fail:
	codec_free(c);
	return r;
}

void codec_free(struct codec *c)
{
	if (!c)
		return;
	codec_key_free(c->key);
	free(c->enc_matrix);
	free(c->enc_tables);
	free(c);
}

size_t codec_shard_max(const struct codec *c)
{
	return record_len(c->smax, c->p.k, c->p.k + c->p.m);
}

const struct codec_params *codec_get_params(const struct codec *c)
{
	return &c->p;
}

int codec_ctx_new(struct codec *c, struct codec_ctx **out)
{
	struct codec_ctx *x;
	size_t pay = (size_t)c->smax + CODEC_TAG_SIZE;
	int r = -ENOMEM;

	*out = NULL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->c = c;
	x->keys = sodium_malloc(sizeof(*x->keys));
	x->enc = EVP_CIPHER_CTX_new();
	x->dec = EVP_CIPHER_CTX_new();
	x->stream = malloc((size_t)c->p.k * c->smax);
	x->junk = malloc(c->smax);
	x->recon = malloc(pay * (c->p.m ? c->p.m : 1));
	x->mac_alg = EVP_MAC_fetch(NULL, "POLY1305", NULL);
	if (!x->keys || !x->enc || !x->dec || !x->stream || !x->junk || !x->recon || !x->mac_alg)
		goto fail;
	for (unsigned i = 0; i < (c->p.m ? c->p.m : 1u); i++) {
		x->mac[i] = EVP_MAC_CTX_new(x->mac_alg);
		if (!x->mac[i])
			goto fail;
	}
	if (c->p.compress == CODEC_COMPRESS_LZ4) {
		x->lz4_state = malloc(LZ4_sizeofState());
		if (!x->lz4_state)
			goto fail;
	}
	/* Compression output, and the plaintext of partial compressed reads. */
	x->comp = malloc(c->p.max_chunk);
	if (!x->comp)
		goto fail;
	/* Decompressors exist whatever the pool's setting: a chunk written
	 * under an older setting must stay readable. */
	x->zc = c->p.compress == CODEC_COMPRESS_ZSTD ? ZSTD_createCCtx() : NULL;
	x->zd = ZSTD_createDCtx();
	if ((c->p.compress == CODEC_COMPRESS_ZSTD && !x->zc) || !x->zd)
		goto fail;
	for (unsigned i = 0; i < CODEC_DT_CACHE && c->p.m; i++) {
		x->dt[i].tbl = malloc((size_t)RS_TBL_BYTES * c->p.k * c->p.m);
		if (!x->dt[i].tbl)
			goto fail;
	}
	if (EVP_EncryptInit_ex(x->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex(x->dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
		r = -EIO;
		goto fail;
	}
	*out = x;
	return 0;
fail:
	codec_ctx_free(x);
	return r;
}

void codec_ctx_free(struct codec_ctx *x)
{
	if (!x)
		return;
	if (x->keys)
		sodium_free(x->keys);       /* wipes */
	EVP_CIPHER_CTX_free(x->enc);        /* cleanses its key schedule */
	EVP_CIPHER_CTX_free(x->dec);
	for (unsigned i = 0; i < CODEC_MAX_M; i++)
		EVP_MAC_CTX_free(x->mac[i]); /* cleanses the last key */
	EVP_MAC_free(x->mac_alg);
	free(x->stream);
	if (x->junk)
		OPENSSL_cleanse(x->junk, x->c->smax);
	free(x->junk);
	free(x->recon);
	free(x->comp);
	free(x->lz4_state);
	ZSTD_freeCCtx(x->zc);
	ZSTD_freeDCtx(x->zd);
	for (unsigned i = 0; i < CODEC_DT_CACHE; i++)
		free(x->dt[i].tbl);
	free(x);
}

/* Make keys->chunk the key of (id, salt); the EVP contexts are re-keyed
 * lazily by ctx_enc_key() / ctx_dec_key(). */
static void ctx_chunk_key(struct codec_ctx *x, const struct codec_id *id,
			  const uint8_t salt[CODEC_SALT_SIZE])
{
	if (x->chunk_ok && id_equal(id, &x->chunk_id) &&
	    !memcmp(salt, x->chunk_salt, CODEC_SALT_SIZE))
		return;
	if (!x->vol_ok || x->vol_id != id->volume || memcmp(x->vol_pool, id->pool, 16)) {
		codec_kdf_volume(x->c->key, id->pool, id->volume, x->keys->vol);
		memcpy(x->vol_pool, id->pool, 16);
		x->vol_id = id->volume;
		x->vol_ok = true;
	}
	codec_kdf_chunk(x->keys->vol, id, salt, x->keys->chunk);
	x->chunk_id = *id;
	memcpy(x->chunk_salt, salt, CODEC_SALT_SIZE);
	x->chunk_ok = true;
	x->enc_keyed = x->dec_keyed = x->mac_ok = false;
}

/* A fresh salt: the context's random 128-bit prefix and a 64-bit counter.
 * Unique under the key as long as no two contexts draw the same prefix
 * (2^-128 per pair), with no syscall per chunk; the prefix is redrawn
 * long before the counter could wrap. */
static void ctx_salt(struct codec_ctx *x, uint8_t salt[CODEC_SALT_SIZE])
{
	if (x->salt_count == 0 || x->salt_count >= (1ull << 40)) {
		randombytes_buf(x->keys->salt_prefix, sizeof(x->keys->salt_prefix));
		x->salt_count = 1;
	}
	memcpy(salt, x->keys->salt_prefix, 16);
	put64(salt + 16, x->salt_count++);
}

static void ctx_enc_key(struct codec_ctx *x)
{
	if (!x->enc_keyed) {
		EVP_EncryptInit_ex(x->enc, NULL, NULL, x->keys->chunk, NULL);
		x->enc_keyed = true;
	}
}

static void ctx_dec_key(struct codec_ctx *x)
{
	if (!x->dec_keyed) {
		EVP_DecryptInit_ex(x->dec, NULL, NULL, x->keys->chunk, NULL);
		x->dec_keyed = true;
	}
}

/* The GCM nonce of data shard idx: 'D', idx, then zeros. */
static void nonce_for(uint8_t iv[12], unsigned idx)
{
	memset(iv, 0, 12);
	iv[0] = 'D';
	iv[1] = idx;
}

/* Key x->mac[slot] for the Poly1305 of parity shard idx, whose message is
 * header bytes [8, 96) then the S+16 parity bytes.  The one-time keys of a
 * chunk's parity shards are consecutive 32-byte blocks of ChaCha20(key =
 * chunk key, nonce = "FLECC1/pmac\0") keystream, block j for parity shard
 * k+j: distinct per shard and, through the salt, per encoding, so no
 * Poly1305 key is used twice.  0 or -EIO. */
static int parity_mac_start(struct codec_ctx *x, unsigned slot, unsigned idx)
{
	static const uint8_t nonce[12] = "FLECC1/pmac";

	if (!x->mac_ok) {
		crypto_stream_chacha20_ietf(&x->keys->mac[0][0],
					    (size_t)x->c->p.m * CODEC_KEY_SIZE, nonce,
					    x->keys->chunk);
		x->mac_ok = true;
	}
	return EVP_MAC_init(x->mac[slot], x->keys->mac[idx - x->c->p.k], CODEC_KEY_SIZE,
			    NULL) == 1 ? 0 : -EIO;
}

static int parity_mac_final(struct codec_ctx *x, unsigned slot, uint8_t tag[CODEC_TAG_SIZE])
{
	size_t outl;

	return EVP_MAC_final(x->mac[slot], tag, &outl, CODEC_TAG_SIZE) == 1 &&
	       outl == CODEC_TAG_SIZE ? 0 : -EIO;
}

/* Poly1305 of a whole parity record (header bytes [8, 96) then the S+16
 * parity bytes, contiguous in rec) into tag.  0 or -EIO. */
static int parity_mac(struct codec_ctx *x, const uint8_t *rec, uint32_t S,
		      unsigned idx, uint8_t tag[CODEC_TAG_SIZE])
{
	if (parity_mac_start(x, 0, idx) < 0 ||
	    EVP_MAC_update(x->mac[0], rec + CODEC_AAD_OFF,
			   CODEC_AAD_LEN + (size_t)S + CODEC_TAG_SIZE) != 1)
		return -EIO;
	return parity_mac_final(x, 0, tag);
}

/* GCM tag get/set through the parameter API directly (the ctrl wrapper
 * costs more than sealing a small shard). */
static int gcm_get_tag(EVP_CIPHER_CTX *ctx, uint8_t *tag)
{
	OSSL_PARAM p[2] = {
		OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, CODEC_TAG_SIZE),
		OSSL_PARAM_END,
	};

	return EVP_CIPHER_CTX_get_params(ctx, p) == 1 ? 0 : -EIO;
}

static int gcm_set_tag(EVP_CIPHER_CTX *ctx, const uint8_t *tag)
{
	OSSL_PARAM p[2] = {
		OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)tag, CODEC_TAG_SIZE),
		OSSL_PARAM_END,
	};

	return EVP_CIPHER_CTX_set_params(ctx, p) == 1 ? 0 : -EIO;
}

/* ---------------------------------------------------------------- 3 ---- */

static size_t compress_chunk(struct codec_ctx *x, const void *plain, size_t len)
{
	const struct codec_params *p = &x->c->p;

	if (p->compress == CODEC_COMPRESS_LZ4) {
		int n = LZ4_compress_fast_extState(x->lz4_state, plain, (char *)x->comp,
						   (int)len, (int)len - 1, 1);
		return n > 0 ? (size_t)n : 0;
	}
	if (p->compress == CODEC_COMPRESS_ZSTD) {
		size_t n = ZSTD_compressCCtx(x->zc, x->comp, len - 1, plain, len,
					     p->zstd_level ? p->zstd_level : ZSTD_CLEVEL_DEFAULT);
		return ZSTD_isError(n) ? 0 : n;
	}
	return 0;
}

/* Seal data shard idx in its record h (header built): GCM over the first
 * `have` bytes of src then S - have zero bytes, the tag after them, and
 * the record's CRC32C into h[4..8) — each stripe checksummed right after
 * it is encrypted, while it is in cache.  0 or -EIO. */
static int data_seal(struct codec_ctx *x, uint8_t *h, unsigned idx, uint32_t S,
		     const uint8_t *src, size_t have)
{
	uint8_t *body = h + CODEC_HEADER_SIZE, *ccur = h + CODEC_AAD_OFF;
	uint32_t crc = 0xFFFFFFFFu;
	uint8_t iv[12];
	int outl;

	nonce_for(iv, idx);
	if (EVP_EncryptInit_ex(x->enc, NULL, NULL, NULL, iv) != 1 ||
	    EVP_EncryptUpdate(x->enc, NULL, &outl, h + CODEC_AAD_OFF, CODEC_AAD_LEN) != 1)
		return -EIO;
	for (size_t a = 0; a < S; a += CODEC_STRIPE) {
		size_t b = MIN(a + CODEC_STRIPE, (size_t)S);
		size_t z = MAX(a, MIN(b, have));       /* [a, z) plain, [z, b) padding */

		if (z > a && EVP_EncryptUpdate(x->enc, body + a, &outl, src + a,
					       (int)(z - a)) != 1)
			return -EIO;
		if (b > z) {
			memset(body + z, 0, b - z);
			if (EVP_EncryptUpdate(x->enc, body + z, &outl, body + z,
					      (int)(b - z)) != 1)
				return -EIO;
		}
		if (b < S) {            /* the last stripe waits for the tag */
			crc = crc32_iscsi(ccur, (int)(body + b - ccur), crc);
			ccur = body + b;
		}
	}
	if (EVP_EncryptFinal_ex(x->enc, body + S, &outl) != 1 ||
	    gcm_get_tag(x->enc, body + S) < 0)
		return -EIO;
	put32(h + 4, crc32_iscsi(ccur, (int)(body + S + CODEC_TAG_SIZE - ccur), crc));
	return 0;
}

int codec_encode(struct codec_ctx *x, const struct codec_id *id,
		 const void *plain, size_t len,
		 uint8_t *const *shards, size_t *lens, struct codec_meta *meta)
{
	const struct codec *c = x->c;
	unsigned k = c->p.k, m = c->p.m, i;
	const uint8_t *src = plain;
	uint8_t *data[CODEC_MAX_K], *par[CODEC_MAX_M];
	uint32_t pcrc[CODEC_MAX_M];     /* CRC32C of parity record i up to ccur[i] */
	uint8_t *ccur[CODEC_MAX_M];
	size_t n;
	uint32_t S;

	if (len == 0 || len > c->p.max_chunk)
		return -EINVAL;
	if (isal_zero_detect((void *)plain, len) == 0)
		return CODEC_HOLE;
	memset(meta, 0, sizeof(*meta));
	meta->k = k;
	meta->m = m;
	meta->plain_len = len;
	meta->stored_len = len;
	if (c->p.compress != CODEC_COMPRESS_NONE) {
		n = compress_chunk(x, plain, len);
		if (n > 0 && n < len) {
			src = x->comp;
			meta->stored_len = n;
			meta->compress = c->p.compress;
		}
	}
	S = meta->body_len = body_len_for(meta->stored_len, k);
	ctx_salt(x, meta->salt);
	ctx_chunk_key(x, id, meta->salt);
	ctx_enc_key(x);

	for (i = 0; i < k; i++) {
		uint8_t *h = shards[i];
		size_t off = (size_t)i * S;
		size_t have = off < meta->stored_len ? MIN(S, meta->stored_len - off) : 0;

		header_build(h, id, meta, i);
		if (data_seal(x, h, i, S, src + off, have) < 0)
			return -EIO;
		lens[i] = record_len(S, k, i);
		meta->crc[i] = get32(h + 4);
		data[i] = h + CODEC_HEADER_SIZE;
	}
	if (!m)
		return 0;
	for (i = 0; i < m; i++) {
		uint8_t *h = shards[k + i];

		header_build(h, id, meta, k + i);
		par[i] = h + CODEC_HEADER_SIZE;
		pcrc[i] = 0xFFFFFFFFu;
		ccur[i] = h + CODEC_AAD_OFF;
		if (parity_mac_start(x, i, k + i) < 0)
			return -EIO;
	}
	/* RS, MAC and CRC one stripe at a time, while the parity is in cache.
	 * The MAC lags by the header's 88 bytes: its message (header, then
	 * parity) goes in as whole 128-byte groups — header plus the first 40
	 * parity bytes, then up to each stripe's end minus the lag — which
	 * OpenSSL's vector Poly1305 takes measurably faster (see the top). */
	for (size_t a = 0, mpos = 128 - CODEC_AAD_LEN, plen = (size_t)S + CODEC_TAG_SIZE; a < plen;
	     a += CODEC_STRIPE) {
		size_t sl = MIN((size_t)CODEC_STRIPE, plen - a);
		size_t mend = a + sl == plen ? plen : a + sl - CODEC_MAC_LAG;
		uint8_t *ds[CODEC_MAX_K], *ps[CODEC_MAX_M];

		for (i = 0; i < k; i++)
			ds[i] = data[i] + a;
		for (i = 0; i < m; i++)
			ps[i] = par[i] + a;
		rs_run(sl, k, m, c->enc_tables, ds, ps);
		for (i = 0; i < m; i++) {
			uint8_t first[128];

			if (!a) {
				memcpy(first, shards[k + i] + CODEC_AAD_OFF, CODEC_AAD_LEN);
				memcpy(first + CODEC_AAD_LEN, par[i], 128 - CODEC_AAD_LEN);
				if (EVP_MAC_update(x->mac[i], first, 128) != 1)
					return -EIO;
			}
			if (EVP_MAC_update(x->mac[i], par[i] + mpos, mend - mpos) != 1)
				return -EIO;
			if (a + sl < plen) {    /* the last stripe waits for the MAC */
				pcrc[i] = crc32_iscsi(ccur[i], (int)(ps[i] + sl - ccur[i]), pcrc[i]);
				ccur[i] = ps[i] + sl;
			}
		}
		mpos = mend;
	}
	for (i = 0; i < m; i++) {
		uint8_t *h = shards[k + i], *tag = par[i] + S + CODEC_TAG_SIZE;

		if (parity_mac_final(x, i, tag) < 0)
			return -EIO;
		lens[k + i] = record_len(S, k, k + i);
		meta->crc[k + i] = crc32_iscsi(ccur[i], (int)(tag + CODEC_TAG_SIZE - ccur[i]),
					       pcrc[i]);
		put32(h + 4, meta->crc[k + i]);
	}
	return 0;
}

/* ---------------------------------------------------------------- 4 ---- */

size_t codec_shard_len(const struct codec_meta *meta, unsigned idx)
{
	return record_len(meta->body_len, meta->k, idx);
}

uint64_t codec_range_shards(const struct codec_meta *meta, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!len || off >= meta->plain_len || len > meta->plain_len - off || !meta->body_len)
		return 0;
	if (meta->compress != CODEC_COMPRESS_NONE)
		return meta->k >= 64 ? ~0ull : (1ull << meta->k) - 1;
	first = off / meta->body_len;
	last = (off + len - 1) / meta->body_len;
	return ((last >= 63 ? ~0ull : (1ull << (last + 1)) - 1)) & ~((1ull << first) - 1);
}

/* Why a shard whose header is not the expected one was refused. */
static enum codec_status header_verdict(const uint8_t *rec, size_t len,
					const struct codec_id *id,
					const struct codec_meta *mt, unsigned idx)
{
	struct codec_shard_info info;

	if (header_parse(rec, len, &info) < 0)
		return CODEC_SHARD_BAD_HEADER;
	if (!id_equal(&info.id, id) || info.index != idx)
		return CODEC_SHARD_WRONG_ID;
	if (memcmp(info.meta.salt, mt->salt, CODEC_SALT_SIZE))
		return CODEC_SHARD_STALE;
	return CODEC_SHARD_BAD_HEADER;
}

/* Cheap check of shard idx: length, header, CRC.  With metadata, the
 * header's CRC field must equal the metadata's, and the CRC of the bytes is
 * computed only when with_crc (a data shard about to be opened skips it:
 * its tag covers the same bytes, and the CRC is computed only to classify
 * a failure).  Without metadata the CRC is always checked. */
static enum codec_status shard_quick(const struct codec_id *id, const struct codec_meta *mt,
				     bool have_meta, unsigned idx,
				     const uint8_t *rec, size_t len, bool with_crc)
{
	uint8_t want[CODEC_HEADER_SIZE];
	size_t expect = record_len(mt->body_len, mt->k, idx);

	if (!rec)
		return CODEC_SHARD_MISSING;
	if (len != expect) {
		enum codec_status st = header_verdict(rec, len, id, mt, idx);

		return st == CODEC_SHARD_BAD_HEADER ? CODEC_SHARD_BAD_LENGTH : st;
	}
	header_build(want, id, mt, idx);
	if (memcmp(want, rec, 4) || memcmp(want + 8, rec + 8, CODEC_AAD_LEN)) {
		if (record_crc(rec, len) != get32(rec + 4))
			return CODEC_SHARD_BAD_CRC;
		return header_verdict(rec, len, id, mt, idx);
	}
	if (have_meta && get32(rec + 4) != mt->crc[idx])
		return CODEC_SHARD_BAD_CRC;
	if ((with_crc || !have_meta) && record_crc(rec, len) != get32(rec + 4))
		return CODEC_SHARD_BAD_CRC;
	return CODEC_SHARD_OK;
}

/* Where decrypted stream bytes go: [off, off+len) of the stream to base,
 * everything else to the context's junk buffer. */
struct sink {
	uint8_t *base;
	uint64_t off, len;
};

/* Authenticated decryption of data shard idx (header hdr, ciphertext ct,
 * tag right after it) into the sink.  0 or -EBADMSG. */
static int data_open(struct codec_ctx *x, const struct codec_meta *mt, unsigned idx,
		     const uint8_t *hdr, const uint8_t *ct, const struct sink *sk)
{
	uint32_t S = mt->body_len;
	uint64_t s0 = (uint64_t)idx * S;
	uint64_t a = 0, b = 0;
	uint8_t iv[12];
	int outl;

	if (sk && sk->off + sk->len > s0 && sk->off < s0 + S) {
		a = sk->off > s0 ? sk->off - s0 : 0;
		b = MIN((uint64_t)S, sk->off + sk->len - s0);
	}
	ctx_dec_key(x);
	nonce_for(iv, idx);
	if (EVP_DecryptInit_ex(x->dec, NULL, NULL, NULL, iv) != 1 ||
	    gcm_set_tag(x->dec, ct + S) < 0 ||
	    EVP_DecryptUpdate(x->dec, NULL, &outl, hdr + CODEC_AAD_OFF, CODEC_AAD_LEN) != 1)
		return -EIO;
	if (a && EVP_DecryptUpdate(x->dec, x->junk, &outl, ct, (int)a) != 1)
		return -EIO;
	if (b > a && EVP_DecryptUpdate(x->dec, sk->base + (s0 + a - sk->off), &outl,
				       ct + a, (int)(b - a)) != 1)
		return -EIO;
	if (b < S && EVP_DecryptUpdate(x->dec, x->junk + b, &outl, ct + b,
				       (int)(S - b)) != 1)
		return -EIO;
	return EVP_DecryptFinal_ex(x->dec, x->junk, &outl) == 1 ? 0 : -EBADMSG;
}

/* Full check of a record that passed shard_quick(): its tag or MAC. */
static enum codec_status shard_auth(struct codec_ctx *x, const struct codec_meta *mt,
				    unsigned idx, const uint8_t *rec)
{
	uint8_t tag[CODEC_TAG_SIZE];

	if (idx < mt->k)
		return data_open(x, mt, idx, rec, rec + CODEC_HEADER_SIZE, NULL) == 0
		       ? CODEC_SHARD_OK : CODEC_SHARD_BAD_AUTH;
	if (parity_mac(x, rec, mt->body_len, idx, tag) < 0)
		return CODEC_SHARD_BAD_AUTH;
	return CRYPTO_memcmp(tag, rec + CODEC_HEADER_SIZE + mt->body_len + CODEC_TAG_SIZE,
			     CODEC_TAG_SIZE) == 0 ? CODEC_SHARD_OK : CODEC_SHARD_BAD_AUTH;
}

/* Decode tables that compute shards `outs` from shards `srcs` (k each). */
static const uint8_t *dt_get(struct codec_ctx *x, const unsigned *srcs,
			     const unsigned *outs, unsigned nout)
{
	const struct codec *c = x->c;
	unsigned k = c->p.k;
	uint8_t b[CODEC_MAX_K * CODEC_MAX_K], inv[CODEC_MAX_K * CODEC_MAX_K];
	uint8_t rows[CODEC_MAX_M * CODEC_MAX_K];
	uint64_t sm = 0, om = 0;
	struct codec_dt *slot = &x->dt[0];

	for (unsigned i = 0; i < k; i++)
		sm |= 1ull << srcs[i];
	for (unsigned i = 0; i < nout; i++)
		om |= 1ull << outs[i];
	for (unsigned i = 0; i < CODEC_DT_CACHE; i++) {
		if (x->dt[i].src == sm && x->dt[i].out == om) {
			x->dt[i].used = ++x->dt_clock;
			return x->dt[i].tbl;
		}
		if (x->dt[i].used < slot->used)
			slot = &x->dt[i];
	}
	for (unsigned i = 0; i < k; i++)
		memcpy(b + i * k, c->enc_matrix + srcs[i] * k, k);
	if (gf_invert_matrix(b, inv, k) < 0)
		return NULL;            /* cannot happen with a Cauchy matrix */
	/* row(out) = A[out] x B^-1 over GF(2^8) */
	for (unsigned o = 0; o < nout; o++) {
		const uint8_t *a = c->enc_matrix + outs[o] * k;

		for (unsigned j = 0; j < k; j++) {
			uint8_t s = 0;

			for (unsigned t = 0; t < k; t++)
				s ^= gf_mul(a[t], inv[t * k + j]);
			rows[o * k + j] = s;
		}
	}
	rs_init_tables(k, nout, rows, slot->tbl);
	slot->src = sm;
	slot->out = om;
	slot->used = ++x->dt_clock;
	return slot->tbl;
}

/* Resolve the chunk's parameters when no metadata is given: the (salt,
 * lengths) shared by most shards that claim to be this chunk. */
static int meta_from_shards(const struct codec *c, const struct codec_id *id,
			    const uint8_t *const *shards, const size_t *lens,
			    struct codec_meta *mt)
{
	struct codec_shard_info cand[CODEC_MAX_SHARDS];
	unsigned n = c->p.k + c->p.m, best = 0, best_votes = 0;
	bool ok[CODEC_MAX_SHARDS] = { false };

	for (unsigned i = 0; i < n; i++)
		ok[i] = shards[i] && header_parse(shards[i], lens[i], &cand[i]) == 0 &&
			cand[i].index == i && id_equal(&cand[i].id, id) &&
			cand[i].meta.k == c->p.k && cand[i].meta.m == c->p.m;
	for (unsigned i = 0; i < n; i++) {
		unsigned votes = 0;

		if (!ok[i])
			continue;
		for (unsigned j = 0; j < n; j++)
			votes += ok[j] && !memcmp(cand[j].meta.salt, cand[i].meta.salt,
						  CODEC_SALT_SIZE) &&
				 cand[j].meta.plain_len == cand[i].meta.plain_len &&
				 cand[j].meta.stored_len == cand[i].meta.stored_len &&
				 cand[j].meta.compress == cand[i].meta.compress;
		if (votes > best_votes) {
			best_votes = votes;
			best = i;
		}
	}
	if (!best_votes)
		return -EBADMSG;
	*mt = cand[best].meta;
	return 0;
}

/*
 * The core of every read: authenticate and decrypt the data shards in
 * `need` into the sink, rebuilding those that are missing or bad from any k
 * good shards.  pay[i] (may be NULL) receives, for each needed data shard,
 * a pointer to its verified payload (ciphertext|tag, S+16 bytes).
 */
static int decode_core(struct codec_ctx *x, const struct codec_id *id,
		       const struct codec_meta *mt, bool have_meta,
		       const uint8_t *const *shards, const size_t *lens,
		       uint64_t need, const struct sink *sk,
		       const uint8_t **pay, enum codec_status *st)
{
	unsigned k = mt->k, n = mt->k + mt->m;
	uint32_t S = mt->body_len;
	uint64_t todo = 0, authed = 0;

	ctx_chunk_key(x, id, mt->salt);
	for (unsigned i = 0; i < n; i++)
		st[i] = shards[i] ? CODEC_SHARD_UNUSED : CODEC_SHARD_MISSING;

	for (unsigned i = 0; i < k; i++) {
		if (!(need >> i & 1))
			continue;
		if (shards[i]) {
			st[i] = shard_quick(id, mt, have_meta, i, shards[i], lens[i], false);
			if (st[i] == CODEC_SHARD_OK &&
			    data_open(x, mt, i, shards[i], shards[i] + CODEC_HEADER_SIZE, sk) < 0)
				st[i] = record_crc(shards[i], lens[i]) != get32(shards[i] + 4)
					? CODEC_SHARD_BAD_CRC : CODEC_SHARD_BAD_AUTH;
		}
		if (st[i] == CODEC_SHARD_OK) {
			authed |= 1ull << i;
			if (pay)
				pay[i] = shards[i] + CODEC_HEADER_SIZE;
		} else {
			todo |= 1ull << i;
		}
	}

	while (todo) {
		unsigned srcs[CODEC_MAX_K], outs[CODEC_MAX_M], ns = 0, no = 0;
		const uint8_t *sp[CODEC_MAX_K];
		uint8_t *op[CODEC_MAX_M];
		const uint8_t *tbl;
		bool failed = false;

		/* Sources: good data shards first (cheapest to trust), then
		 * parity.  Each gets the quick check once. */
		for (unsigned i = 0; i < n && ns < k; i++) {
			if (todo >> i & 1 || !shards[i])
				continue;
			if (st[i] == CODEC_SHARD_UNUSED)
				st[i] = shard_quick(id, mt, have_meta, i, shards[i], lens[i],
						    true);
			if (st[i] == CODEC_SHARD_OK)
				srcs[ns++] = i;
		}
		if (ns < k)
			return -EBADMSG;
		for (unsigned i = 0; i < k; i++)
			if (todo >> i & 1)
				outs[no++] = i;
		tbl = dt_get(x, srcs, outs, no);
		if (!tbl)
			return -EIO;
		for (unsigned i = 0; i < k; i++)
			sp[i] = shards[srcs[i]] + CODEC_HEADER_SIZE;
		for (unsigned o = 0; o < no; o++)
			op[o] = x->recon + (size_t)o * (S + CODEC_TAG_SIZE);
		rs_run(S + CODEC_TAG_SIZE, k, no, tbl, (uint8_t *const *)sp, op);
		for (unsigned o = 0; o < no; o++) {
			uint8_t h[CODEC_HEADER_SIZE];

			header_build(h, id, mt, outs[o]);
			if (data_open(x, mt, outs[o], h, op[o], sk) < 0) {
				failed = true;
				break;
			}
		}
		if (!failed) {
			for (unsigned o = 0; o < no && pay; o++)
				pay[outs[o]] = op[o];
			return 0;
		}
		/* A source passed its CRC but is not what we wrote: find it
		 * with the tags, drop it, and try again with the others. */
		{
			bool found = false;

			for (unsigned i = 0; i < k; i++) {
				unsigned s = srcs[i];

				if (authed >> s & 1)
					continue;
				if (shard_auth(x, mt, s, shards[s]) == CODEC_SHARD_OK) {
					authed |= 1ull << s;
				} else {
					st[s] = CODEC_SHARD_BAD_AUTH;
					found = true;
				}
			}
			if (!found)
				return -EBADMSG;
		}
	}
	return 0;
}

/* Does mt fit this codec's geometry and scratch? */
static bool mt_fits(const struct codec *c, const struct codec_meta *mt)
{
	return meta_sane(mt) && mt->k == c->p.k && mt->m == c->p.m &&
	       mt->plain_len <= c->p.max_chunk && mt->body_len <= c->smax;
}

/* The decode of a range once the chunk's parameters mt are known. */
static int decode_range_mt(struct codec_ctx *x, const struct codec_id *id,
			   const struct codec_meta *mt, bool have_meta,
			   const uint8_t *const *shards, const size_t *lens,
			   uint64_t off, size_t len, void *out, enum codec_status *st)
{
	uint64_t all = mt->k >= 64 ? ~0ull : (1ull << mt->k) - 1;
	struct sink sk;
	int r;

	if (off > mt->plain_len || len > mt->plain_len - off)
		return -ERANGE;
	if (!len)
		return 0;
	if (mt->compress == CODEC_COMPRESS_NONE) {
		sk = (struct sink){ .base = out, .off = off, .len = len };
		return decode_core(x, id, mt, have_meta, shards, lens,
				   codec_range_shards(mt, off, len), &sk, NULL, st);
	}
	sk = (struct sink){ .base = x->stream, .off = 0, .len = (uint64_t)mt->k * mt->body_len };
	r = decode_core(x, id, mt, have_meta, shards, lens, all, &sk, NULL, st);
	if (r < 0)
		return r;
	/* The stream is authenticated: a decompressor error now means a bug
	 * or a key holder's forgery; report it as corruption all the same. */
	if (off == 0 && len == mt->plain_len) {
		if (mt->compress == CODEC_COMPRESS_LZ4)
			return LZ4_decompress_safe((char *)x->stream, out, (int)mt->stored_len,
						   (int)len) == (int)len ? 0 : -EBADMSG;
		size_t d = ZSTD_decompressDCtx(x->zd, out, len, x->stream, mt->stored_len);
		return !ZSTD_isError(d) && d == len ? 0 : -EBADMSG;
	}
	if (mt->compress == CODEC_COMPRESS_LZ4) {
		int d = LZ4_decompress_safe_partial((char *)x->stream, (char *)x->comp,
						    (int)mt->stored_len, (int)(off + len),
						    (int)x->c->p.max_chunk);
		if (d < (int)(off + len))
			return -EBADMSG;
	} else {
		size_t d = ZSTD_decompressDCtx(x->zd, x->comp, x->c->p.max_chunk,
					       x->stream, mt->stored_len);
		if (ZSTD_isError(d) || d != mt->plain_len)
			return -EBADMSG;
	}
	memcpy(out, x->comp + off, len);
	return 0;
}

/* Parameters for a read: the caller's metadata (checked against this codec)
 * or what most shards say.  On failure every status is set. */
static int resolve(struct codec_ctx *x, const struct codec_id *id,
		   const struct codec_meta *meta, const uint8_t *const *shards,
		   const size_t *lens, struct codec_meta *mt, enum codec_status *st)
{
	const struct codec *c = x->c;
	int r = 0;

	if (meta) {
		if (!mt_fits(c, meta))
			return -EINVAL;
		*mt = *meta;
		return 0;
	}
	if (meta_from_shards(c, id, shards, lens, mt) < 0 || !mt_fits(c, mt))
		r = -EBADMSG;
	for (unsigned i = 0; r < 0 && i < c->p.k + c->p.m; i++) {
		struct codec_shard_info info;

		if (!shards[i])
			st[i] = CODEC_SHARD_MISSING;
		else if (header_parse(shards[i], lens[i], &info) < 0)
			st[i] = CODEC_SHARD_BAD_HEADER;
		else
			st[i] = CODEC_SHARD_WRONG_ID;
	}
	return r;
}

int codec_decode_range(struct codec_ctx *x, const struct codec_id *id,
		       const struct codec_meta *meta,
		       const uint8_t *const *shards, const size_t *lens,
		       uint64_t off, size_t len, void *out,
		       enum codec_status *status)
{
	enum codec_status stbuf[CODEC_MAX_SHARDS];
	enum codec_status *st = status ? status : stbuf;
	struct codec_meta mt;
	int r;

	r = resolve(x, id, meta, shards, lens, &mt, st);
	if (r < 0)
		return r;
	return decode_range_mt(x, id, &mt, meta != NULL, shards, lens, off, len, out, st);
}

/* Without metadata, name the shards of another encoding as stale. */
static void mark_stale(const struct codec_id *id, const struct codec_meta *mt,
		       const uint8_t *const *shards, const size_t *lens,
		       enum codec_status *st)
{
	for (unsigned i = 0; i < (unsigned)mt->k + mt->m; i++) {
		struct codec_shard_info info;

		if (st[i] == CODEC_SHARD_OK || st[i] == CODEC_SHARD_MISSING || !shards[i])
			continue;
		if (header_parse(shards[i], lens[i], &info) == 0 && id_equal(&info.id, id) &&
		    info.index == i && memcmp(info.meta.salt, mt->salt, CODEC_SALT_SIZE))
			st[i] = CODEC_SHARD_STALE;
	}
}

int codec_decode(struct codec_ctx *x, const struct codec_id *id,
		 const struct codec_meta *meta,
		 const uint8_t *const *shards, const size_t *lens,
		 void *out, size_t out_size, enum codec_status *status)
{
	enum codec_status stbuf[CODEC_MAX_SHARDS];
	enum codec_status *st = status ? status : stbuf;
	struct codec_meta mt;
	int r;

	r = resolve(x, id, meta, shards, lens, &mt, st);
	if (r < 0)
		return r;
	if (out_size < mt.plain_len)
		return -ENOSPC;
	r = decode_range_mt(x, id, &mt, meta != NULL, shards, lens, 0, mt.plain_len, out, st);
	if (!meta)
		mark_stale(id, &mt, shards, lens, st);
	return r < 0 ? r : (int)mt.plain_len;
}

enum codec_status codec_verify_shard(struct codec_ctx *x, const struct codec_id *id,
				     const struct codec_meta *meta, unsigned idx,
				     const uint8_t *shard, size_t len, bool full)
{
	struct codec_shard_info info;
	struct codec_meta mt;
	enum codec_status st;

	if (!shard)
		return CODEC_SHARD_MISSING;
	if (meta) {
		if (!mt_fits(x->c, meta))
			return CODEC_SHARD_BAD_HEADER;
		mt = *meta;
	} else {
		if (len < CODEC_HEADER_SIZE)
			return CODEC_SHARD_BAD_LENGTH;
		if (header_parse(shard, len, &info) < 0 || !mt_fits(x->c, &info.meta))
			return CODEC_SHARD_BAD_HEADER;
		if (!id_equal(&info.id, id) || info.index != idx)
			return CODEC_SHARD_WRONG_ID;
		mt = info.meta;
	}
	if (idx >= (unsigned)mt.k + mt.m)
		return CODEC_SHARD_WRONG_ID;
	st = shard_quick(id, &mt, meta != NULL, idx, shard, len, true);
	if (st != CODEC_SHARD_OK || (meta && !full))
		return st;
	ctx_chunk_key(x, id, mt.salt);
	return shard_auth(x, &mt, idx, shard);
}

int codec_rebuild_shard(struct codec_ctx *x, const struct codec_id *id,
			const struct codec_meta *meta,
			const uint8_t *const *shards, const size_t *lens,
			unsigned idx, uint8_t *out, enum codec_status *status)
{
	const struct codec *c = x->c;
	enum codec_status stbuf[CODEC_MAX_SHARDS];
	enum codec_status *st = status ? status : stbuf;
	const uint8_t *others[CODEC_MAX_SHARDS], *pay[CODEC_MAX_K];
	unsigned k = c->p.k, n = c->p.k + c->p.m;
	struct codec_meta mt;
	size_t rl;
	uint32_t S;
	int r;

	if (idx >= n)
		return -EINVAL;
	r = resolve(x, id, meta, shards, lens, &mt, st);
	if (r < 0)
		return r;
	S = mt.body_len;
	memcpy(others, shards, n * sizeof(*others));
	others[idx] = NULL;
	/* Every data payload, each authenticated by its tag, so the rebuilt
	 * shard cannot inherit a forger's bytes. */
	r = decode_core(x, id, &mt, meta != NULL, others, lens,
			k >= 64 ? ~0ull : (1ull << k) - 1, NULL, pay, st);
	if (!meta)
		mark_stale(id, &mt, shards, lens, st);
	if (r < 0)
		return r;
	header_build(out, id, &mt, idx);
	if (idx < k) {
		memcpy(out + CODEC_HEADER_SIZE, pay[idx], S + CODEC_TAG_SIZE);
	} else {
		uint8_t *dst = out + CODEC_HEADER_SIZE;

		rs_run(S + CODEC_TAG_SIZE, k, 1,
		       c->enc_tables + (size_t)RS_TBL_BYTES * k * (idx - k),
		       (uint8_t *const *)pay, &dst);
		if (parity_mac(x, out, S, idx, out + CODEC_HEADER_SIZE + S + CODEC_TAG_SIZE) < 0)
			return -EIO;
	}
	rl = record_len(S, k, idx);
	put32(out + 4, record_crc(out, rl));
	if (meta && get32(out + 4) != meta->crc[idx])
		return -EIO;
	return (int)rl;
}

/* ---------------------------------------------------------------- 5 ---- */

const char *codec_rs_kernel(void)
{
	return rs_kernel_name();
}

void codec_rs_encode(const struct codec *c, size_t len, uint8_t *const *data,
		     uint8_t *const *parity)
{
	rs_run(len, c->p.k, c->p.m, c->enc_tables, data, parity);
}

int codec_shard_info(const uint8_t *shard, size_t len, struct codec_shard_info *info)
{
	if (header_parse(shard, len, info) < 0 ||
	    len != record_len(info->meta.body_len, info->meta.k, info->index))
		return -EBADMSG;
	return 0;
}

/*
 * Metadata record v1 (little-endian):
 *   0 1 version = 1 | 1 1 k | 2 1 m | 3 1 compression
 *   4 4 plain length | 8 4 stored length | 12 4 S | 16 24 salt
 *   40 4*(k+m) CRC32C of each shard record
 */
size_t codec_meta_pack(const struct codec_meta *meta, uint8_t *buf)
{
	unsigned n = meta->k + meta->m;

	buf[0] = CODEC_META_VERSION;
	buf[1] = meta->k;
	buf[2] = meta->m;
	buf[3] = meta->compress;
	put32(buf + 4, meta->plain_len);
	put32(buf + 8, meta->stored_len);
	put32(buf + 12, meta->body_len);
	memcpy(buf + 16, meta->salt, CODEC_SALT_SIZE);
	for (unsigned i = 0; i < n && i < CODEC_MAX_SHARDS; i++)
		put32(buf + 40 + 4 * i, meta->crc[i]);
	return 40 + 4 * (size_t)n;
}

int codec_meta_unpack(const uint8_t *buf, size_t len, struct codec_meta *meta)
{
	if (len < 40 || buf[0] != CODEC_META_VERSION)
		return -EBADMSG;
	memset(meta, 0, sizeof(*meta));
	meta->k = buf[1];
	meta->m = buf[2];
	meta->compress = buf[3];
	meta->plain_len = get32(buf + 4);
	meta->stored_len = get32(buf + 8);
	meta->body_len = get32(buf + 12);
	memcpy(meta->salt, buf + 16, CODEC_SALT_SIZE);
	if (!meta_sane(meta) || len != 40 + 4 * (size_t)(meta->k + meta->m))
		return -EBADMSG;
	for (unsigned i = 0; i < (unsigned)meta->k + meta->m; i++)
		meta->crc[i] = get32(buf + 40 + 4 * i);
	return 0;
}

const char *codec_strerror(int err)
{
	switch (err) {
	case 0:          return "success";
	case -EBADMSG:   return "too few shards verify to rebuild the chunk "
	                        "(the per-shard status names the bad ones)";
	case -EINVAL:    return "invalid argument or codec parameters";
	case -ENOSPC:    return "output buffer too small for the chunk";
	case -ERANGE:    return "byte range outside the chunk";
	case -EIO:       return "internal cryptographic or coding failure";
	case -ENOMEM:    return "out of memory";
	case -EPERM:     return "key file accessible by group/others";
	default:         return strerror(-err);
	}
}

const char *codec_status_str(enum codec_status st)
{
	switch (st) {
	case CODEC_SHARD_UNUSED:     return "unused";
	case CODEC_SHARD_OK:         return "ok";
	case CODEC_SHARD_MISSING:    return "missing";
	case CODEC_SHARD_BAD_LENGTH: return "bad-length";
	case CODEC_SHARD_BAD_HEADER: return "bad-header";
	case CODEC_SHARD_WRONG_ID:   return "wrong-identity";
	case CODEC_SHARD_STALE:      return "stale-encoding";
	case CODEC_SHARD_BAD_CRC:    return "bad-crc";
	case CODEC_SHARD_BAD_AUTH:   return "bad-auth";
	}
	return "?";
}
