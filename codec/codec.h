/*
 * codec.h — FLECC: turns one chunk of a volume into k data + m parity shards
 * that are encrypted, authenticated, erasure-coded and self-describing, and
 * back.  The shard format is documented byte by byte in codec/codec.c.
 *
 * Objects
 *   struct codec_key   the pool's 32-byte master key, in locked, wiped memory.
 *   struct codec       one pool's geometry (k, m, largest chunk, compression)
 *                      and key.  Immutable after codec_new(): any number of
 *                      threads may use it at once.
 *   struct codec_ctx   one thread's working state (cipher contexts, scratch
 *                      sized at creation, cached Reed-Solomon decode tables).
 *                      NOT thread-safe: each worker thread owns one, and a
 *                      context is used by one call at a time.
 *   struct codec_meta  the small per-chunk record encode returns and the
 *                      caller stores in its metadata (per-shard CRC32C, salt,
 *                      lengths).  codec_meta_pack/unpack give it a stable
 *                      byte form.
 *
 * Buffers are the caller's: encode writes into shard buffers of at least
 * codec_shard_max() bytes; decode reads shards the caller fetched and writes
 * plaintext into the caller's buffer.  Nothing is allocated per chunk.
 *
 * Errors: functions return >= 0 or -errno.  Per-shard verdicts come back in
 * an enum codec_status array, one entry per shard index, so a caller knows
 * exactly which backend sent a bad shard.  codec_strerror() and
 * codec_status_str() turn both into text.
 */
#ifndef NBDSRV_CODEC_H
#define NBDSRV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CODEC_KEY_SIZE      32
#define CODEC_SALT_SIZE     24
#define CODEC_MAX_K         32
#define CODEC_MAX_M         8
#define CODEC_MAX_SHARDS    (CODEC_MAX_K + CODEC_MAX_M)
#define CODEC_MIN_CHUNK     (64u << 10)
#define CODEC_MAX_CHUNK     (8u << 20)
#define CODEC_MAX_RECORD    8388608u      /* zdb's largest value */
#define CODEC_HEADER_SIZE   96
#define CODEC_TAG_SIZE      16
#define CODEC_META_MAX      (48 + 4 * CODEC_MAX_SHARDS)

/* codec_encode() returns this (not an error) for an all-zero chunk. */
#define CODEC_HOLE          1

enum codec_compress {
	CODEC_COMPRESS_NONE = 0,
	CODEC_COMPRESS_LZ4  = 1,
	CODEC_COMPRESS_ZSTD = 2,
};

/* Which chunk version a shard belongs to: bound into every shard. */
struct codec_id {
	uint8_t pool[16];        /* pool UUID */
	uint64_t volume;         /* volume id within the pool */
	uint64_t chunk;          /* chunk index within the volume */
	uint64_t version;        /* chunk version (may repeat after a rollback) */
};

/* The verdict on one shard. */
enum codec_status {
	CODEC_SHARD_UNUSED = 0,  /* present but not needed / not examined */
	CODEC_SHARD_OK,          /* verified (CRC, or cryptographically) */
	CODEC_SHARD_MISSING,     /* not supplied */
	CODEC_SHARD_BAD_LENGTH,  /* truncated or oversized */
	CODEC_SHARD_BAD_HEADER,  /* not a FLECC v1 shard / impossible fields */
	CODEC_SHARD_WRONG_ID,    /* another pool, volume, chunk, version or position */
	CODEC_SHARD_STALE,       /* same identity, another encoding (salt differs) */
	CODEC_SHARD_BAD_CRC,     /* checksum mismatch (header or metadata) */
	CODEC_SHARD_BAD_AUTH,    /* AEAD / MAC failure: forged, or wrong key */
};

/* The per-chunk record encode fills and decode consumes (fast path). */
struct codec_meta {
	uint8_t k, m;
	uint8_t compress;                /* enum codec_compress actually used */
	uint32_t plain_len;              /* chunk bytes before compression */
	uint32_t stored_len;             /* bytes after compression */
	uint32_t body_len;               /* S: ciphertext bytes per data shard */
	uint8_t salt[CODEC_SALT_SIZE];   /* this encoding's random salt */
	uint32_t crc[CODEC_MAX_SHARDS];  /* CRC32C of each whole shard record */
};

struct codec_params {
	unsigned k;                      /* data shards, 1..32 */
	unsigned m;                      /* parity shards, 0..8 */
	uint32_t max_chunk;              /* largest chunk, power of two, 64 KiB..8 MiB */
	enum codec_compress compress;    /* per pool */
	int zstd_level;                  /* 0 = zstd's default */
};

struct codec_key;
struct codec;
struct codec_ctx;

/* Text for a -errno returned by this library (adds codec-specific meaning). */
const char *codec_strerror(int err);
/* Short name of a shard verdict ("ok", "bad-crc", …). */
const char *codec_status_str(enum codec_status st);

/* ---- keys ------------------------------------------------------------- */

/* Create path with a fresh random key, mode 0600; refuses to overwrite
 * (-EEXIST).  On error, err (may be NULL) gets a message. */
int codec_key_generate(const char *path, char *err, size_t errlen);
/* Load a key file: a regular file of exactly 32 bytes, not readable or
 * writable by group/others.  *out is the caller's (codec_key_free).  On
 * error -errno and a clear message in err. */
int codec_key_load(const char *path, struct codec_key **out, char *err, size_t errlen);
/* A key from 32 raw bytes (tests, tooling); caller wipes its copy. */
int codec_key_from_bytes(const uint8_t raw[CODEC_KEY_SIZE], struct codec_key **out);
/* Wipe and free; NULL is fine. */
void codec_key_free(struct codec_key *key);

/* ---- the pool codec ---------------------------------------------------- */

/* Check parameters; -EINVAL with the reason in err (may be NULL). */
int codec_params_check(const struct codec_params *p, char *err, size_t errlen);
/* A codec for p, holding its own copy of key (the caller may free key). */
int codec_new(const struct codec_params *p, const struct codec_key *key,
	      struct codec **out, char *err, size_t errlen);
void codec_free(struct codec *c);
/* Bytes a shard buffer must hold for any chunk of this codec. */
size_t codec_shard_max(const struct codec *c);
const struct codec_params *codec_get_params(const struct codec *c);

/* A per-thread context; scratch sized for c's geometry is allocated here
 * (about 2 x max_chunk + (m + 1) x one shard, plus zstd's contexts), so
 * encode/decode allocate nothing.  The last chunk's derived keys stay in
 * its locked memory until the next chunk or codec_ctx_free(), which wipes
 * them.  c must outlive it. */
int codec_ctx_new(struct codec *c, struct codec_ctx **out);
void codec_ctx_free(struct codec_ctx *x);

/* ---- encode ----------------------------------------------------------- */

/* Encode len (1..max_chunk) bytes of plain as identity id into k+m shard
 * records shards[0..k+m) (each >= codec_shard_max bytes, caller-owned),
 * their lengths in lens[], and fill *meta.  Returns 0, CODEC_HOLE when the
 * chunk is all zeros (nothing written), or -errno.  Each call uses a fresh
 * salt (never repeated), so re-encoding the same (id, data) gives
 * different shards under a different chunk key. */
int codec_encode(struct codec_ctx *x, const struct codec_id *id,
		 const void *plain, size_t len,
		 uint8_t *const *shards, size_t *lens, struct codec_meta *meta);

/* ---- decode ----------------------------------------------------------- */

/* Length of shard idx of the chunk meta describes. */
size_t codec_shard_len(const struct codec_meta *meta, unsigned idx);

/* Which data shards hold bytes [off, off+len) of the chunk: a bit mask over
 * shard indices.  All data shards when the chunk is compressed.  0 when the
 * range is empty or outside the chunk. */
uint64_t codec_range_shards(const struct codec_meta *meta, uint64_t off, uint64_t len);

/* Decode bytes [off, off+len) of the chunk into out (len bytes).  shards[i]
 * / lens[i] for i < k+m (arrays of k+m entries): the records the caller has
 * (NULL when missing).  meta: the chunk's stored record — fast path: lengths,
 * headers and CRC fields compared to it, salt pinned — or NULL when there is
 * none (parameters are then taken from the salt most shards agree on, and
 * every record's CRC is checked against its header).  Either way every byte
 * returned is authenticated by a data shard's GCM tag; a source that passed
 * its CRC but breaks a rebuild is found by its tag/MAC, marked BAD_AUTH and
 * dropped.  Uses the data shards covering the range when they verify,
 * otherwise rebuilds from any k that do.  status (may be NULL, else k+m
 * entries) gets a verdict per shard index.  Returns 0, or -EBADMSG when too
 * few shards verify (status says which failed; fetch more and call again),
 * -EINVAL (meta not of this codec) / -ERANGE (range outside the chunk).
 * On error out's contents are unspecified.  A codec decodes only chunks of
 * its own k+m.  Not thread-safe per x; any number of contexts in parallel. */
int codec_decode_range(struct codec_ctx *x, const struct codec_id *id,
		       const struct codec_meta *meta,
		       const uint8_t *const *shards, const size_t *lens,
		       uint64_t off, size_t len, void *out,
		       enum codec_status *status);

/* Decode the whole chunk into out (out_size >= its length).  Returns the
 * chunk's length, or -errno as codec_decode_range(); -ENOSPC when out is
 * too small.  When meta is NULL, the salt shared by most shards is used
 * (status STALE for the others). */
int codec_decode(struct codec_ctx *x, const struct codec_id *id,
		 const struct codec_meta *meta,
		 const uint8_t *const *shards, const size_t *lens,
		 void *out, size_t out_size, enum codec_status *status);

/* Check one shard on its own as shard index idx of id.  With meta and
 * !full: length, header and CRC against meta (cheap; catches accidents).
 * Otherwise also the AEAD tag (data) or MAC (parity): catches forgeries and
 * wrong keys.  Returns its verdict (CODEC_SHARD_OK on success). */
enum codec_status codec_verify_shard(struct codec_ctx *x, const struct codec_id *id,
				     const struct codec_meta *meta, unsigned idx,
				     const uint8_t *shard, size_t len, bool full);

/* Rebuild shard record idx (e.g. after losing its backend) bit-identical to
 * the original, from the other shards (same conventions as decode), into
 * out (>= codec_shard_len bytes).  Returns its length or -errno. */
int codec_rebuild_shard(struct codec_ctx *x, const struct codec_id *id,
			const struct codec_meta *meta,
			const uint8_t *const *shards, const size_t *lens,
			unsigned idx, uint8_t *out, enum codec_status *status);

/* ---- shards found in the wild ----------------------------------------- */

/* What an (unauthenticated) shard header says about itself. */
struct codec_shard_info {
	struct codec_id id;
	unsigned index;
	struct codec_meta meta;          /* crc[] holds only crc[index] */
};

/* Parse a shard header without the key: structural checks only.  Pair with
 * codec_verify_shard(full) using info->id to trust it.  0 or -EBADMSG. */
int codec_shard_info(const uint8_t *shard, size_t len, struct codec_shard_info *info);

/* ---- diagnostics -------------------------------------------------------- */

/* The Reed-Solomon kernel in use: "gfni-avx512" or "isa-l". */
const char *codec_rs_kernel(void);
/* The codec's m parity rows over k caller buffers of len bytes, with the
 * codec's kernel and no crypto (benchmarks, tests).  Thread-safe. */
void codec_rs_encode(const struct codec *c, size_t len, uint8_t *const *data,
		     uint8_t *const *parity);

/* ---- the metadata record ---------------------------------------------- */

/* Serialize meta into buf (>= CODEC_META_MAX bytes); returns its length. */
size_t codec_meta_pack(const struct codec_meta *meta, uint8_t *buf);
/* Parse (untrusted) bytes; 0 or -EBADMSG. */
int codec_meta_unpack(const uint8_t *buf, size_t len, struct codec_meta *meta);

#endif /* NBDSRV_CODEC_H */
