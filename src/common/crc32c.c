/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * CRC-32C.  The superblock and (later) per-block checksums use it, so it must
 * give the same answer on every machine: the table-driven path is the
 * reference, the SSE4.2 path is checked against it by the unit tests.
 */
#include <stdatomic.h>
#include <string.h>

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
		if (len >= 3 * SPLIT_LEN)
			crc32c_init();
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
	if (!(block_size & 7) && __builtin_cpu_supports("sse4.2"))
		for (; i + 3 <= n; i += 3)
			crc32c_hw_x3(p + i * block_size, p + (i + 1) * block_size,
				     p + (i + 2) * block_size, block_size, out + i);
#endif
	for (; i < n; i++)
		out[i] = fm_crc32c(0, p + i * block_size, block_size);
}
