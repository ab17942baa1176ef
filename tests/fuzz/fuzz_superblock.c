/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the superblock and leg-table decoder, fm_sb_decode().
 *
 * Each input is decoded twice: as it is (the magic and the crc gate, which
 * random bytes rarely pass), and "fixed up" — the magic written in and the
 * crc recomputed — so that every field check behind the gate is reached.
 * What the decoder accepts must survive a round trip: encode it, decode it
 * again, and the second encoding is byte-identical to the first.  A failed
 * invariant aborts (a crash for libFuzzer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/superblock.h"

#include "fuzz.h"

static void check_accepted(const struct fm_sb *sb)
{
	uint8_t a[FM_SB_SIZE], b[FM_SB_SIZE];
	g_autoptr(GError) err = NULL;
	struct fm_sb again;

	/* The geometry helpers must hold for anything decode accepts. */
	FUZZ_ASSERT(fm_sb_nr_regions(sb) > 0);
	FUZZ_ASSERT(fm_sb_leg_bytes(sb) >= sb->image_size);
	FUZZ_ASSERT(sb->leg_index < sb->nr_legs && sb->nr_legs <= FM_SB_MAX_LEGS);
	FUZZ_ASSERT(memchr(sb->name, '\0', sizeof(sb->name)));
	fm_sb_encode(sb, a);
	FUZZ_ASSERT_MSG(fm_sb_decode(a, &again, &err) == 0, "%s", err->message);
	fm_sb_encode(&again, b);
	FUZZ_ASSERT(memcmp(a, b, sizeof(a)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = aligned_alloc(FM_PAGE_SIZE, FM_SB_SIZE);
	struct fm_sb sb;

	FUZZ_ASSERT(buf);
	memset(buf, 0, FM_SB_SIZE);
	memcpy(buf, data, MIN(size, FM_SB_SIZE));
	for (int pass = 0; pass < 2; pass++) {
		g_autoptr(GError) err = NULL;
		int r;

		if (pass == 1)
			fuzz_sb_fixup(buf);
		memset(&sb, 0xa5, sizeof(sb));
		r = fm_sb_decode(buf, &sb, &err);
		if (r == 0) {
			FUZZ_ASSERT(!err);
			check_accepted(&sb);
		} else {
			/* A refusal says why, with one of the documented codes. */
			FUZZ_ASSERT(err && err->message[0]);
			FUZZ_ASSERT(r == -ENODATA || r == -EBADMSG || r == -EPROTONOSUPPORT ||
				    r == -EUCLEAN);
			FUZZ_ASSERT(err->code == -r);
		}
	}
	free(buf);
	return 0;
}
