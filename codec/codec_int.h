/*
 * codec_int.h — what codec.c and key.c share; not for other layers.
 */
#ifndef NBDSRV_CODEC_INT_H
#define NBDSRV_CODEC_INT_H

#include "codec/codec.h"

/* Lives in sodium_malloc() memory: guard pages, mlock()ed, wiped on free. */
struct codec_key {
	uint8_t raw[CODEC_KEY_SIZE];
};

/* Format a message into err (nothing when err is NULL or errlen 0). */
void codec_errmsg(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* libsodium initialised (idempotent, thread-safe); 0 or -EIO. */
int codec_sodium_init(void);

/* Volume subkey = BLAKE2b-256 keyed by the pool master key over
 * "FLECC1/volume" || pool id || volume id (LE). */
void codec_kdf_volume(const struct codec_key *master, const uint8_t pool[16],
		      uint64_t volume, uint8_t out[CODEC_KEY_SIZE]);
/* Chunk key = BLAKE2b-256 keyed by the volume subkey over
 * "FLECC1/chunk" || salt || chunk index || version (LE). */
void codec_kdf_chunk(const uint8_t volkey[CODEC_KEY_SIZE], const struct codec_id *id,
		     const uint8_t salt[CODEC_SALT_SIZE], uint8_t out[CODEC_KEY_SIZE]);

/* ---- rs.c: the Reed-Solomon kernel (GFNI+AVX-512 or ISA-L) ---- */

#define RS_TBL_BYTES 32                  /* table bytes per coefficient */

/* Tables for rows x k coefficients (row-major) into tbl
 * (rows * k * RS_TBL_BYTES bytes). */
void rs_init_tables(unsigned k, unsigned rows, const uint8_t *coef, uint8_t *tbl);
/* dst[r][0..len) = sum over j of coef[r][j] * src[j][0..len), GF(2^8). */
void rs_run(size_t len, unsigned k, unsigned rows, const uint8_t *tbl,
	    uint8_t *const *src, uint8_t *const *dst);
/* "gfni-avx512" or "isa-l". */
const char *rs_kernel_name(void);
/* Tests: use ISA-L even where GFNI exists (on), or probe again (off).
 * Tables made before a switch are invalid after it. */
void rs_force_isal(bool on);

#endif
