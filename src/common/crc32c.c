/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * CRC-32C.  The superblock and (later) per-block checksums use it, so it must
 * give the same answer on every machine: the table-driven path is the
 * reference, the SSE4.2 and the VPCLMULQDQ folding paths are checked against
 * it by the unit tests.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "fusemirror/common.h"

#define CRC32C_POLY_REFLECTED 0x82F63B78u

static uint32_t crc_table[8][256];
static atomic_int crc_init_state; /* 0 = not yet, 1 = tables built */

/*
 * One long buffer as three chains: the crc32 instruction has a latency of
 * 3 cycles but a throughput of one a cycle, so one chain runs at a third
 * of the speed of three.  Pieces of SPLIT_LEN bytes: 4096 = 3 * 1360 + 16,
 * one round for a 4 KiB block.  The raw (not inverted) state is linear:
 * after bytes B from state s it is shift(s) ^ crc(0, B), with shift()
 * the effect of SPLIT_LEN zero bytes, a 32x32 bit matrix kept as four
 * byte tables (shift_table[k][i] = shift(i << 8k)).
 */
#define SPLIT_LEN 1360u
static uint32_t shift_table[4][256];

static void crc32c_build_tables(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ ((c & 1) ? CRC32C_POLY_REFLECTED : 0);
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
	/* shift() of each basis vector, then of every byte value by
	 * linearity. */
	uint32_t basis[32];

	for (unsigned j = 0; j < 32; j++) {
		uint32_t c = 1u << j;

		for (unsigned n = 0; n < SPLIT_LEN; n++)
			c = crc_table[0][c & 0xff] ^ (c >> 8);
		basis[j] = c;
	}
	for (unsigned k = 0; k < 4; k++)
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t v = 0;

			for (unsigned j = 0; j < 8; j++)
				if (i & (1u << j))
					v ^= basis[8 * k + j];
			shift_table[k][i] = v;
		}
}

static inline uint32_t shift_split(uint32_t c)
{
	return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
	       shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

/* Slicing-by-8 over the raw (not inverted) state. */
static uint32_t crc32c_sw(uint32_t c, const uint8_t *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
		len--;
	}
	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		w ^= c;
		c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
		    crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
		    crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
		    crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t c, const uint8_t *p, size_t len)
{
	uint64_t c64;

	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi(c, *p++);
		len--;
	}
	c64 = c;
	/* (the caller built the tables: crc32c_init()) */
	while (len >= 3 * SPLIT_LEN) {
		uint64_t x = c64, y = 0, z = 0;

		for (size_t i = 0; i < SPLIT_LEN; i += 8) {
			uint64_t wa, wb, wc;

			memcpy(&wa, p + i, 8);
			memcpy(&wb, p + SPLIT_LEN + i, 8);
			memcpy(&wc, p + 2 * SPLIT_LEN + i, 8);
			x = __builtin_ia32_crc32di(x, wa);
			y = __builtin_ia32_crc32di(y, wb);
			z = __builtin_ia32_crc32di(z, wc);
		}
		c64 = shift_split(shift_split((uint32_t)x) ^ (uint32_t)y) ^ (uint32_t)z;
		p += 3 * SPLIT_LEN;
		len -= 3 * SPLIT_LEN;
	}
	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		c64 = __builtin_ia32_crc32di(c64, w);
		p += 8;
		len -= 8;
	}
	c = (uint32_t)c64;
	while (len--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}

/*
 * Carry-less multiplication folding (Intel's "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ", on 256-bit registers): the
 * buffer's leading bytes are kept as four 32-byte accumulators; each
 * 128-bit lane of one is moved D bytes forward by multiplying its two
 * halves by x^(8D-32) and x^(8D+32) mod P (bit-reflected, shifted left by
 * one: fold_pair()) and XORed into the data there.  Four accumulators,
 * 128 bytes a round, hide the multiplier's latency: a 4 KiB block in
 * ~88 ns against ~215 ns for crc32c_hw on the test VM.  What is left, 16
 * bytes and a tail under 32, goes through the crc32 instruction from
 * state 0: the raw state over the folded bytes is the raw state over the
 * buffer (linearity), the initial state having been XORed into its first
 * 4 bytes.  The constants are computed at init from the polynomial (for
 * CRC-32's the same formula gives zlib-ng's 0x154442bd4 / 0x1c6e41596).
 * 512-bit registers fold a 4 KiB block in ~58 ns alone, but measured no
 * faster in the daemon (heavy AVX-512 instructions may lower the core's
 * clock for everything else on it): not used.
 */
#define FOLD_MIN 128u
static uint64_t fold_16[2], fold_32[2], fold_64[2], fold_96[2], fold_128[2];
static atomic_bool have_fold;    /* set by crc32c_init() */

/* x^n mod P (P = x^32 + CRC-32C's 0x1EDC6F41), bit-reflected over 32
 * bits, shifted left by one. */
static uint64_t fold_const(unsigned n)
{
	const uint64_t poly = 0x11EDC6F41ull;
	uint64_t r = 1;
	uint32_t v = 0;

	for (unsigned i = 0; i < n; i++) {
		r <<= 1;
		if (r & (1ull << 32))
			r ^= poly;
	}
	for (unsigned i = 0; i < 32; i++)
		if (r & (1ull << i))
			v |= 1u << (31 - i);
	return (uint64_t)v << 1;
}

/* The constants that move a 128-bit lane @d bytes forward. */
static void fold_pair(uint64_t k[2], unsigned d)
{
	k[0] = fold_const(8 * d - 32);  /* for the lane's high half */
	k[1] = fold_const(8 * d + 32);  /* for its low half (earlier bytes) */
}

static void fold_build(void)
{
	fold_pair(fold_16, 16);
	fold_pair(fold_32, 32);
	fold_pair(fold_64, 64);
	fold_pair(fold_96, 96);
	fold_pair(fold_128, 128);
}

__attribute__((target("pclmul,sse2")))
static inline __m128i fold128(__m128i x, const uint64_t k[2])
{
	__m128i kk = _mm_set_epi64x((long long)k[1], (long long)k[0]);

	return _mm_xor_si128(_mm_clmulepi64_si128(x, kk, 0x01),
			     _mm_clmulepi64_si128(x, kk, 0x10));
}

__attribute__((target("avx2,vpclmulqdq")))
static inline __m256i fold256(__m256i x, __m256i k)
{
	return _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x01),
				_mm256_clmulepi64_epi128(x, k, 0x10));
}

__attribute__((target("avx2")))
static inline __m256i fold_k2(const uint64_t k[2])
{
	return _mm256_broadcastsi128_si256(_mm_set_epi64x((long long)k[1], (long long)k[0]));
}

/* The raw state after @len (>= FOLD_MIN) bytes at @p from raw state @c. */
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2")))
static uint32_t crc32c_fold(uint32_t c, const uint8_t *p, size_t len)
{
	__m256i x0 = _mm256_loadu_si256((const void *)p);
	__m256i x1 = _mm256_loadu_si256((const void *)(p + 32));
	__m256i x2 = _mm256_loadu_si256((const void *)(p + 64));
	__m256i x3 = _mm256_loadu_si256((const void *)(p + 96));
	__m256i k = fold_k2(fold_128);
	__m128i v;
	uint64_t lo, hi;

	x0 = _mm256_xor_si256(x0, _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, (int)c));
	p += FOLD_MIN;
	len -= FOLD_MIN;
	for (; len >= 128; p += 128, len -= 128) {
		x0 = _mm256_xor_si256(fold256(x0, k), _mm256_loadu_si256((const void *)p));
		x1 = _mm256_xor_si256(fold256(x1, k), _mm256_loadu_si256((const void *)(p + 32)));
		x2 = _mm256_xor_si256(fold256(x2, k), _mm256_loadu_si256((const void *)(p + 64)));
		x3 = _mm256_xor_si256(fold256(x3, k), _mm256_loadu_si256((const void *)(p + 96)));
	}
	/* Four accumulators into one, at the last one's place; then 32
	 * bytes at a time; then its two lanes into the second. */
	x3 = _mm256_xor_si256(x3, fold256(x0, fold_k2(fold_96)));
	x3 = _mm256_xor_si256(x3, fold256(x1, fold_k2(fold_64)));
	x3 = _mm256_xor_si256(x3, fold256(x2, fold_k2(fold_32)));
	for (k = fold_k2(fold_32); len >= 32; p += 32, len -= 32)
		x3 = _mm256_xor_si256(fold256(x3, k), _mm256_loadu_si256((const void *)p));
	v = _mm256_extracti128_si256(x3, 1);
	v = _mm_xor_si128(v, fold128(_mm256_castsi256_si128(x3), fold_16));
	lo = (uint64_t)_mm_cvtsi128_si64(v);
	hi = (uint64_t)_mm_extract_epi64(v, 1);
	/* gcc put no vzeroupper before the tail call below, and dirty
	 * upper halves slowed the whole queue thread (+0.6 us a read). */
	_mm256_zeroupper();
	c = (uint32_t)_mm_crc32_u64(_mm_crc32_u64(0, lo), hi);
	return crc32c_hw(c, p, len);
}

/*
 * Three blocks at once: the crc32 instruction has a latency of 3 cycles
 * but a throughput of one a cycle, so three independent chains run three
 * times as fast as one (the per-block checksums need no combining: each
 * block has its own).  @len is a multiple of 8.
 */
__attribute__((target("sse4.2")))
static void crc32c_hw_x3(const uint8_t *a, const uint8_t *b, const uint8_t *c, size_t len,
			 uint32_t *out)
{
	uint64_t x = 0xffffffffu, y = 0xffffffffu, z = 0xffffffffu;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t wa, wb, wc;

		memcpy(&wa, a + i, 8);
		memcpy(&wb, b + i, 8);
		memcpy(&wc, c + i, 8);
		x = __builtin_ia32_crc32di(x, wa);
		y = __builtin_ia32_crc32di(y, wb);
		z = __builtin_ia32_crc32di(z, wc);
	}
	out[0] = ~(uint32_t)x;
	out[1] = ~(uint32_t)y;
	out[2] = ~(uint32_t)z;
}
#endif

/* For the unit tests: force the portable path. */
uint32_t fm_crc32c_sw(uint32_t crc, const void *data, size_t len);

static void crc32c_init(void)
{
	if (atomic_load_explicit(&crc_init_state, memory_order_acquire))
		return;
	crc32c_build_tables(); /* idempotent: racing threads write equal values */
#if defined(__x86_64__)
	fold_build();
	atomic_store_explicit(&have_fold,
			      __builtin_cpu_supports("avx2") &&
			      __builtin_cpu_supports("vpclmulqdq") &&
			      __builtin_cpu_supports("pclmul") &&
			      __builtin_cpu_supports("sse4.2"),
			      memory_order_relaxed);
#endif
	atomic_store_explicit(&crc_init_state, 1, memory_order_release);
}

uint32_t fm_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
	crc32c_init();
	return ~crc32c_sw(~crc, data, len);
}

uint32_t fm_crc32c(uint32_t crc, const void *data, size_t len)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2")) {
		if (len >= FOLD_MIN) {
			crc32c_init();
			if (atomic_load_explicit(&have_fold, memory_order_relaxed))
				return ~crc32c_fold(~crc, data, len);
		}
		return ~crc32c_hw(~crc, data, len);
	}
#endif
	return fm_crc32c_sw(crc, data, len);
}

void fm_crc32c_blocks(const void *data, size_t block_size, size_t n, uint32_t *out)
{
	const uint8_t *p = data;
	size_t i = 0;

#if defined(__x86_64__)
	crc32c_init();
	if (block_size >= FOLD_MIN && atomic_load_explicit(&have_fold, memory_order_relaxed)) {
		for (; i < n; i++)
			out[i] = ~crc32c_fold(~0u, p + i * block_size, block_size);
		return;
	}
	if (!(block_size & 7) && __builtin_cpu_supports("sse4.2"))
		for (; i + 3 <= n; i += 3)
			crc32c_hw_x3(p + i * block_size, p + (i + 1) * block_size,
				     p + (i + 2) * block_size, block_size, out + i);
#endif
	for (; i < n; i++)
		out[i] = fm_crc32c(0, p + i * block_size, block_size);
}
