/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared by the libFuzzer targets of tests/fuzz/: an invariant check that
 * aborts (libFuzzer reports it as a crash, with the input), and the
 * superblock fix-up that lets random bytes past the magic and crc gate.
 */
#ifndef FM_FUZZ_H
#define FM_FUZZ_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemirror/common.h"
#include "fusemirror/superblock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT_MSG(cond, ...)                                                  \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__,  \
				__LINE__, #cond);                                   \
			fprintf(stderr, __VA_ARGS__);                               \
			fputc('\n', stderr);                                        \
			abort();                                                    \
		}                                                                   \
	} while (0)
#define FUZZ_ASSERT(cond) FUZZ_ASSERT_MSG(cond, "%s", "")

/* Write the magic into the superblock in @buf (FM_SB_SIZE bytes) and
 * recompute its crc (the last 4 bytes, crc32c of the rest, little-endian). */
static inline void fuzz_sb_fixup(uint8_t *buf)
{
	uint32_t crc;

	memcpy(buf, FM_SB_MAGIC, 8);
	crc = fm_crc32c(0, buf, FM_SB_SIZE - 4);
	for (int i = 0; i < 4; i++)
		buf[FM_SB_SIZE - 4 + i] = (uint8_t)(crc >> (8 * i));
}

#endif /* FM_FUZZ_H */
