/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the on-disk write-intent bitmap area as assembly reads
 * it.  Input: a superblock (first FM_SB_SIZE bytes, fixed up so that its
 * magic and crc pass — see fuzz.h) whose geometry sizes the bitmap, then
 * the bitmap area's bytes.  When the decoder accepts the superblock, the
 * bitmap is built as mirror assembly builds it (mbitmap_create from the
 * superblock's nr_regions, region size and bitmap length) and loaded with
 * the bytes (mbitmap_load).  Invariants: bits beyond nr_regions and bytes
 * beyond the length are ignored, the weight, next_set walk and snapshot
 * agree with the input, and clearing/setting writes only pages inside the
 * bitmap area.  Bitmaps above FUZZ_MAX_BITMAP bytes are skipped (memory
 * and time per input; the code paths are the same).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/superblock.h"
#include "mirror/bitmap.h"

#include "fuzz.h"

#define FUZZ_MAX_BITMAP (256u << 10)
/* Long enough that the bitmap thread clears nothing by itself while an
 * input runs (the weight checks would race with it); clear_all_sync
 * clears regardless. */
#define FUZZ_CLEAR_DELAY_MS 3600000u

struct area {
	uint64_t length;
	uint64_t writes;
};

static int area_write(void *ctx, const void *buf, uint64_t off, size_t len)
{
	struct area *a = ctx;

	FUZZ_ASSERT(((uintptr_t)buf & (MBITMAP_PAGE_SIZE - 1)) == 0);
	FUZZ_ASSERT(off % MBITMAP_PAGE_SIZE == 0 && len % MBITMAP_PAGE_SIZE == 0 && len > 0);
	FUZZ_ASSERT_MSG(off + len <= a->length, "write [%llu, +%zu) beyond the %llu-byte area",
			(unsigned long long)off, len, (unsigned long long)a->length);
	a->writes++;
	return 0;
}

static int area_flush(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct mbitmap_ops ops = { .write = area_write, .flush = area_flush };

static unsigned log2u64(uint64_t v)
{
	return 63u - (unsigned)__builtin_clzll(v);
}

static bool bit(const uint8_t *bits, size_t len, uint64_t i)
{
	return i / 8 < len && (bits[i / 8] >> (i % 8)) & 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) err = NULL;
	g_autofree uint8_t *snap = NULL;
	g_autoptr(mbitmap) bm = NULL;
	const uint8_t *bits;
	uint64_t nr, weight = 0, walked = 0, first, last;
	size_t len;
	struct area area;
	uint8_t *sbbuf;
	struct fm_sb sb;
	int r;

	if (size < FM_SB_SIZE)
		return 0;
	sbbuf = aligned_alloc(FM_PAGE_SIZE, FM_SB_SIZE);
	FUZZ_ASSERT(sbbuf);
	memcpy(sbbuf, data, FM_SB_SIZE);
	fuzz_sb_fixup(sbbuf);
	r = fm_sb_decode(sbbuf, &sb, &err);
	free(sbbuf);
	if (r < 0 || sb.bitmap_length > FUZZ_MAX_BITMAP)
		return 0;
	bits = data + FM_SB_SIZE;
	len = size - FM_SB_SIZE;
	nr = fm_sb_nr_regions(&sb);
	area = (struct area){ .length = sb.bitmap_length };
	bm = mbitmap_create(nr, log2u64(sb.region_size >> MBITMAP_SECTOR_SHIFT),
			    sb.bitmap_length, &ops, &area, FUZZ_CLEAR_DELAY_MS);
	FUZZ_ASSERT_MSG(bm, "decoded geometry refused: %llu regions of %llu bytes, %llu-byte "
			"bitmap", (unsigned long long)nr, (unsigned long long)sb.region_size,
			(unsigned long long)sb.bitmap_length);
	FUZZ_ASSERT(mbitmap_nr_regions(bm) == nr);
	mbitmap_load(bm, bits, len);

	for (uint64_t i = 0; i < nr; i++) {
		bool want = bit(bits, MIN(len, sb.bitmap_length), i);

		FUZZ_ASSERT_MSG(mbitmap_test(bm, i) == want, "region %llu",
				(unsigned long long)i);
		weight += want;
	}
	FUZZ_ASSERT(mbitmap_weight(bm) == weight);
	for (uint64_t i = mbitmap_next_set(bm, 0); i < nr; i = mbitmap_next_set(bm, i + 1)) {
		FUZZ_ASSERT(mbitmap_test(bm, i));
		walked++;
	}
	FUZZ_ASSERT(walked == weight);
	snap = g_malloc(sb.bitmap_length + 64);
	mbitmap_snapshot(bm, snap, sb.bitmap_length + 64);
	for (uint64_t i = 0; i < (sb.bitmap_length + 64) * 8; i++)
		FUZZ_ASSERT(bit(snap, sb.bitmap_length + 64, i) == (i < nr && mbitmap_test(bm, i)));

	/* Clear (a clean stop), then set a range the input picks, durably. */
	FUZZ_ASSERT(mbitmap_clear_all_sync(bm) == 0);
	FUZZ_ASSERT(mbitmap_weight(bm) == 0);
	FUZZ_ASSERT(weight == 0 || area.writes > 0);
	first = len >= 8 ? (bits[0] | (uint64_t)bits[1] << 8 | (uint64_t)bits[2] << 16) % nr : 0;
	last = len >= 8 ? first + (bits[3] | (uint64_t)bits[4] << 8) : first;
	r = mbitmap_set_regions_sync(bm, first, last);
	if (last < nr) {
		FUZZ_ASSERT(r == 0);
		FUZZ_ASSERT(mbitmap_weight(bm) == last - first + 1);
	} else {
		FUZZ_ASSERT(r == -EINVAL);
	}
	return 0;
}
