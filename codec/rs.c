/*
 * rs.c — the Reed-Solomon kernel behind codec.c: ISA-L's tables and
 * ec_encode_data(), or, where the CPU has GFNI + AVX-512BW, our own loop of
 * vgf2p8affineqb.
 *
 * Why a second kernel: ISA-L 2.30 multiplies with two nibble-table
 * shuffles per source byte vector (~13 GB/s for 16+4 here), which made
 * erasure coding cost a third of the AEAD.  Multiplying by a constant c in
 * GF(2^8) is a linear map over GF(2), i.e. an 8x8 bit matrix, and GFNI
 * applies such a matrix to 64 bytes in one instruction — whatever the
 * field polynomial, so the result is bit-identical to ISA-L's (0x11D)
 * arithmetic; check_codec compares the two on random matrices.
 *
 * Tables: RS_TBL_BYTES per coefficient, row-major (output row, then source),
 * so row r of a table set starts at r * k * RS_TBL_BYTES.  ISA-L uses all
 * 32 bytes (its nibble tables); the GFNI path the first 8 (the matrix).
 */
#include "codec/codec_int.h"

#include <immintrin.h>
#include <isa-l/erasure_code.h>
#include <string.h>

static int rs_gfni = -1;                /* -1: not probed yet */

static bool rs_use_gfni(void)
{
	int v = __atomic_load_n(&rs_gfni, __ATOMIC_RELAXED);

	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512f");
		__atomic_store_n(&rs_gfni, v, __ATOMIC_RELAXED);
	}
	return v;
}

void rs_force_isal(bool on)
{
	__atomic_store_n(&rs_gfni, on ? 0 : -1, __ATOMIC_RELAXED);
}

const char *rs_kernel_name(void)
{
	return rs_use_gfni() ? "gfni-avx512" : "isa-l";
}

/* The GFNI affine matrix of "multiply by c" in ISA-L's field. */
static uint64_t rs_affine(uint8_t c)
{
	uint64_t a = 0;

	for (int i = 0; i < 8; i++) {           /* output bit i */
		uint8_t row = 0;

		for (int j = 0; j < 8; j++)     /* input bit j */
			if (gf_mul(c, 1 << j) >> i & 1)
				row |= 1 << j;
		a |= (uint64_t)row << (8 * (7 - i));
	}
	return a;
}

void rs_init_tables(unsigned k, unsigned rows, const uint8_t *coef, uint8_t *tbl)
{
	if (!rs_use_gfni()) {
		ec_init_tables(k, rows, (uint8_t *)coef, tbl);
		return;
	}
	for (unsigned i = 0; i < k * rows; i++) {
		uint64_t a = rs_affine(coef[i]);

		memcpy(tbl + (size_t)i * RS_TBL_BYTES, &a, 8);
	}
}

#define RS_TARGET __attribute__((target("gfni,avx512f,avx512bw")))

static inline __attribute__((always_inline)) RS_TARGET __m512i
rs_mat(const uint8_t *t)
{
	uint64_t a;

	memcpy(&a, t, 8);
	return _mm512_set1_epi64((long long)a);
}

#define RS_STEP(acc, t) \
	acc = _mm512_xor_si512(acc, _mm512_gf2p8affine_epi64_epi8(x, rs_mat(t), 0))

/* R (1..4) outputs, rows r0.., over bytes [off, off+64); mask for a short
 * tail.  Scalar accumulators (not an array) so they stay in registers. */
static inline __attribute__((always_inline)) RS_TARGET void
rs_block(unsigned R, size_t off, __mmask64 mask, unsigned k, const uint8_t *tbl,
	 unsigned r0, uint8_t *const *src, uint8_t *const *dst)
{
	const size_t row = (size_t)k * RS_TBL_BYTES;
	const uint8_t *t = tbl + r0 * row;
	__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;

	for (unsigned j = 0; j < k; j++, t += RS_TBL_BYTES) {
		__m512i x = mask == ~0ull ? _mm512_loadu_si512(src[j] + off)
					  : _mm512_maskz_loadu_epi8(mask, src[j] + off);

		RS_STEP(a0, t);
		if (R > 1)
			RS_STEP(a1, t + row);
		if (R > 2)
			RS_STEP(a2, t + 2 * row);
		if (R > 3)
			RS_STEP(a3, t + 3 * row);
	}
#define RS_STORE(r, acc) do {                                               \
		if (mask == ~0ull)                                          \
			_mm512_storeu_si512(dst[r0 + r] + off, acc);        \
		else                                                        \
			_mm512_mask_storeu_epi8(dst[r0 + r] + off, mask, acc); \
	} while (0)
	RS_STORE(0, a0);
	if (R > 1)
		RS_STORE(1, a1);
	if (R > 2)
		RS_STORE(2, a2);
	if (R > 3)
		RS_STORE(3, a3);
#undef RS_STORE
}

static inline __attribute__((always_inline)) RS_TARGET void
rs_rows(unsigned R, size_t len, unsigned k, const uint8_t *tbl, unsigned r0,
	uint8_t *const *src, uint8_t *const *dst)
{
	size_t off = 0;

	for (; off + 64 <= len; off += 64)
		rs_block(R, off, ~0ull, k, tbl, r0, src, dst);
	if (off < len)
		rs_block(R, off, (1ull << (len - off)) - 1, k, tbl, r0, src, dst);
}

static RS_TARGET void rs_gfni_run(size_t len, unsigned k, unsigned rows, const uint8_t *tbl,
				  uint8_t *const *src, uint8_t *const *dst)
{
	unsigned r0 = 0;

	/* Up to 4 outputs per pass keep accumulators and matrices in
	 * registers; 8 would spill with k's broadcasts. */
	while (r0 < rows) {
		switch (rows - r0) {
		case 1:  rs_rows(1, len, k, tbl, r0, src, dst); r0 += 1; break;
		case 2:  rs_rows(2, len, k, tbl, r0, src, dst); r0 += 2; break;
		case 3:  rs_rows(3, len, k, tbl, r0, src, dst); r0 += 3; break;
		default: rs_rows(4, len, k, tbl, r0, src, dst); r0 += 4; break;
		}
	}
}

void rs_run(size_t len, unsigned k, unsigned rows, const uint8_t *tbl,
	    uint8_t *const *src, uint8_t *const *dst)
{
	if (!rows)
		return;
	if (rs_use_gfni())
		rs_gfni_run(len, k, rows, tbl, src, dst);
	else
		ec_encode_data((int)len, k, rows, (uint8_t *)tbl, (uint8_t **)src,
			       (uint8_t **)dst);
}
