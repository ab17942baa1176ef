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
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc32c_hw(~crc, data, len);
#endif
	return fm_crc32c_sw(crc, data, len);
}
