/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the bad-block list (FM_SB_FEAT_BAD_BLOCKS), written from
 * its contract in src/mirror/badblocks.c and include/fusemirror/superblock.h:
 * the decisions (overlap, add with merging and splitting, clear with
 * splitting, a full list refused with the list unchanged, a slot dropped)
 * and the on-disk form (round trip, the feature bit, entries sb_check
 * refuses).  The mirror's use of it (a write error recorded, reads avoiding
 * the leg, a later write clearing it) is in test_mirror_resilience.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mirror/mirror_i.h"

#include "fm_test.h"

#define IMG (64ull << 20)
#define NB (IMG / FM_SB_BAD_BLOCK_SIZE)

/* A valid 2-leg superblock with an empty list. */
static void sb_init(struct fm_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->version_major = FM_SB_VERSION_MAJOR;
	sb->version_minor = FM_SB_VERSION_MINOR;
	sb->nr_legs = 2;
	sb->events = 1;
	ck_assert_int_eq(fm_sb_layout(sb, IMG, 1 << 20), 0);
	for (unsigned i = 0; i < 2; i++) {
		sb->legs[i].uuid[0] = (uint8_t)(i + 1);
		sb->legs[i].state = FM_LEG_IN_SYNC;
	}
	sb->array_uuid[0] = 9;
	sb->leg_uuid[0] = 1;    /* this is leg 0 */
}

/* The blocks of @slot in the list, as a bitmap over the image's blocks. */
static void blocks_of(const struct fm_sb *sb, unsigned slot, uint8_t *map)
{
	memset(map, 0, NB);
	for (unsigned k = 0; k < sb->nr_bad; k++) {
		uint64_t e = sb->bad[k];

		ck_assert_uint_le(FM_SB_BAD_LEN(e), FM_SB_BAD_MAX_LEN);
		if (FM_SB_BAD_SLOT(e) != slot)
			continue;
		for (uint64_t b = FM_SB_BAD_BLOCK(e); b < FM_SB_BAD_BLOCK(e) + FM_SB_BAD_LEN(e); b++) {
			ck_assert_msg(!map[b], "block %" PRIu64 " is in two entries", b);
			map[b] = 1;
		}
	}
}

/* Recompute the crc of an encoded superblock changed behind the encoder. */
static void put_crc(uint8_t *buf)
{
	uint32_t crc = fm_crc32c(0, buf, FM_SB_SIZE - 4);

	for (unsigned j = 0; j < 4; j++)
		buf[FM_SB_SIZE - 4 + j] = (uint8_t)(crc >> (8 * j));
}

static void check_feature(const struct fm_sb *sb)
{
	ck_assert_uint_eq(!!(sb->features & FM_SB_FEAT_BAD_BLOCKS), sb->nr_bad > 0);
}

/* One block: it overlaps every sector range touching it, on its slot only. */
START_TEST(test_bad_overlap)
{
	struct fm_sb sb;

	sb_init(&sb);
	ck_assert(!mbad_overlaps(&sb, 1, 0, 1 << 17));
	ck_assert_int_eq(mbad_add(&sb, 1, 10, 1), 0);
	check_feature(&sb);
	ck_assert_uint_eq(sb.nr_bad, 1);
	ck_assert(mbad_overlaps(&sb, 1, 80, 8));
	ck_assert(mbad_overlaps(&sb, 1, 87, 1));        /* its last sector */
	ck_assert(mbad_overlaps(&sb, 1, 70, 11));       /* ends in its first */
	ck_assert(!mbad_overlaps(&sb, 1, 72, 8));       /* the block before */
	ck_assert(!mbad_overlaps(&sb, 1, 88, 8));       /* the block after */
	ck_assert(!mbad_overlaps(&sb, 0, 80, 8));       /* the other leg */
	ck_assert_uint_eq(mbad_blocks(&sb, 1), 1);
	ck_assert_uint_eq(mbad_blocks(&sb, 0), 0);
}
END_TEST

/* Overlapping and touching runs merge into one entry; a run longer than an
 * entry holds is split; another slot's entries are left alone. */
START_TEST(test_bad_add_merge)
{
	struct fm_sb sb;
	uint8_t *map = malloc(NB);

	sb_init(&sb);
	ck_assert_int_eq(mbad_add(&sb, 0, 100, 5), 0);
	ck_assert_int_eq(mbad_add(&sb, 1, 100, 5), 0);
	ck_assert_int_eq(mbad_add(&sb, 0, 105, 3), 0);  /* touches */
	ck_assert_int_eq(mbad_add(&sb, 0, 98, 4), 0);   /* overlaps */
	ck_assert_int_eq(mbad_add(&sb, 0, 100, 2), 0);  /* inside */
	ck_assert_uint_eq(sb.nr_bad, 2);
	blocks_of(&sb, 0, map);
	for (uint64_t b = 0; b < NB; b++)
		ck_assert_uint_eq(map[b], b >= 98 && b < 108);
	blocks_of(&sb, 1, map);
	for (uint64_t b = 0; b < NB; b++)
		ck_assert_uint_eq(map[b], b >= 100 && b < 105);
	/* 600 blocks: 3 entries of at most 256, merged with 98..108. */
	ck_assert_int_eq(mbad_add(&sb, 0, 108, 600), 0);
	ck_assert_uint_eq(mbad_blocks(&sb, 0), 610);
	ck_assert_uint_eq(sb.nr_bad, 1 + 3);
	blocks_of(&sb, 0, map);
	for (uint64_t b = 0; b < NB; b++)
		ck_assert_uint_eq(map[b], b >= 98 && b < 708);
	check_feature(&sb);
	free(map);
}
END_TEST

/* A write that covers part of a run clears that part: what is left of the
 * run on either side stays. */
START_TEST(test_bad_clear)
{
	struct fm_sb sb;
	uint8_t *map = malloc(NB);

	sb_init(&sb);
	ck_assert_int_eq(mbad_add(&sb, 1, 200, 10), 0);
	ck_assert(!mbad_clear(&sb, 0, 200, 10));        /* another slot */
	ck_assert(!mbad_clear(&sb, 1, 190, 10));        /* before it */
	ck_assert(mbad_clear(&sb, 1, 203, 2));          /* the middle */
	ck_assert_uint_eq(sb.nr_bad, 2);
	blocks_of(&sb, 1, map);
	for (uint64_t b = 0; b < NB; b++)
		ck_assert_uint_eq(map[b], (b >= 200 && b < 203) || (b >= 205 && b < 210));
	ck_assert(mbad_clear(&sb, 1, 195, 100));        /* all of it */
	ck_assert_uint_eq(sb.nr_bad, 0);
	check_feature(&sb);
	ck_assert_uint_eq(sb.features & FM_SB_FEAT_BAD_BLOCKS, 0);
	free(map);
}
END_TEST

/* A full list takes nothing more and stays as it was (the leg then fails);
 * a clear that would need one entry more keeps the run whole. */
START_TEST(test_bad_full)
{
	struct fm_sb sb, before;

	sb_init(&sb);
	for (unsigned k = 0; k < FM_SB_BAD_MAX; k++)
		ck_assert_int_eq(mbad_add(&sb, k % 2, 4 * k, 2), 0);
	ck_assert_uint_eq(sb.nr_bad, FM_SB_BAD_MAX);
	before = sb;
	ck_assert_int_eq(mbad_add(&sb, 0, 10000, 1), -ENOSPC);
	ck_assert_int_eq(memcmp(&sb, &before, sizeof(sb)), 0);
	/* Merging into an existing run needs no room. */
	ck_assert_int_eq(mbad_add(&sb, 0, 2, 1), 0);
	ck_assert_uint_eq(sb.nr_bad, FM_SB_BAD_MAX);
	ck_assert_uint_eq(mbad_blocks(&sb, 0), FM_SB_BAD_MAX + 1);
	/* Splitting 0..3 in two needs a free entry: kept whole. */
	before = sb;
	ck_assert(!mbad_clear(&sb, 0, 1, 1));
	ck_assert_int_eq(memcmp(&sb, &before, sizeof(sb)), 0);
	/* A clear of a whole run frees an entry. */
	ck_assert(mbad_clear(&sb, 1, 4, 2));
	ck_assert_uint_eq(sb.nr_bad, FM_SB_BAD_MAX - 1);
	ck_assert_int_eq(mbad_add(&sb, 0, 10000, 1), 0);
	/* A leg leaving its slot takes its entries along. */
	ck_assert(mbad_drop_slot(&sb, 0));
	ck_assert_uint_eq(mbad_blocks(&sb, 0), 0);
	ck_assert_uint_eq(sb.nr_bad, FM_SB_BAD_MAX / 2 - 1);
	check_feature(&sb);
	for (unsigned k = sb.nr_bad; k < FM_SB_BAD_MAX; k++)
		ck_assert_uint_eq(sb.bad[k], 0);
}
END_TEST

/* What a failed write records: its failed blocks as runs; a leg that would
 * have more than MIRROR_BAD_MAX_LEG bad blocks, or a list without room,
 * records nothing (the leg fails instead). */
START_TEST(test_bad_record)
{
	struct fm_sb sb, before;
	uint8_t failed[300] = { 0 };
	uint8_t *map = malloc(NB);

	sb_init(&sb);
	ck_assert_int_eq(mbad_record(&sb, 1, failed, 1000, 300), 0);   /* none failed */
	ck_assert_uint_eq(sb.nr_bad, 0);
	failed[3] = failed[4] = failed[10] = 1;
	ck_assert_int_eq(mbad_record(&sb, 1, failed, 1000, 300), 0);
	ck_assert_uint_eq(sb.nr_bad, 2);
	blocks_of(&sb, 1, map);
	for (uint64_t b = 0; b < NB; b++)
		ck_assert_uint_eq(map[b], b == 1003 || b == 1004 || b == 1010);
	check_feature(&sb);
	/* 126 more would make 129 > MIRROR_BAD_MAX_LEG: nothing recorded. */
	G_STATIC_ASSERT(MIRROR_BAD_MAX_LEG == 128);
	memset(failed, 0, sizeof(failed));
	memset(failed, 1, 126);
	before = sb;
	ck_assert_int_eq(mbad_record(&sb, 1, failed, 2000, 300), -ENOSPC);
	ck_assert_int_eq(memcmp(&sb, &before, sizeof(sb)), 0);
	/* 125 fit exactly; the other leg has its own allowance. */
	failed[125] = 0;
	ck_assert_int_eq(mbad_record(&sb, 1, failed, 2000, 300), 0);
	ck_assert_uint_eq(mbad_blocks(&sb, 1), MIRROR_BAD_MAX_LEG);
	ck_assert_int_eq(mbad_record(&sb, 0, failed, 2000, 300), 0);
	free(map);
}
END_TEST

/* On disk: the list survives an encode/decode; the feature bit goes with a
 * non-empty list; entries sb_check refuses. */
START_TEST(test_bad_on_disk)
{
	static uint8_t buf[FM_SB_SIZE];
	struct fm_sb sb, back, bad;
	GError *err = NULL;

	sb_init(&sb);
	ck_assert_int_eq(mbad_add(&sb, 1, NB - 3, 3), 0);
	ck_assert_int_eq(mbad_add(&sb, 0, 7, 300), 0);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &back, &err) == 0, "decode: %s", err ? err->message : "");
	ck_assert_uint_eq(back.nr_bad, sb.nr_bad);
	ck_assert(back.features & FM_SB_FEAT_BAD_BLOCKS);
	ck_assert_int_eq(memcmp(back.bad, sb.bad, sizeof(sb.bad)), 0);
	/* An empty list: no bit, nothing decoded from the range. */
	sb_init(&back);
	fm_sb_encode(&back, buf);
	ck_assert_int_eq(fm_sb_decode(buf, &back, &err), 0);
	ck_assert_uint_eq(back.features & FM_SB_FEAT_BAD_BLOCKS, 0);
	ck_assert_uint_eq(back.nr_bad, 0);

	/* What a decoder must refuse (EUCLEAN, with words). */
	static const char *const cases[] = {
		"the bit without entries", "an entry past the image",
		"an entry of an empty slot", "an entry past the count",
	};
	for (unsigned k = 0; k < G_N_ELEMENTS(cases); k++) {
		bad = sb;
		switch (k) {
		case 0:
			bad.nr_bad = 0;
			memset(bad.bad, 0, sizeof(bad.bad));
			break;
		case 1:
			bad.bad[0] = FM_SB_BAD_MAKE(1, NB - 1, 2);
			break;
		case 2:
			bad.legs[1].state = FM_LEG_EMPTY;
			memset(bad.legs[1].uuid, 0, 16);
			break;
		default:
			bad.bad[bad.nr_bad] = FM_SB_BAD_MAKE(0, 1, 1);
			break;
		}
		/* fm_sb_encode() writes what it is given; decode checks. */
		fm_sb_encode(&bad, buf);
		if (k == 3) {
			/* (encode writes only nr_bad entries: put it there) */
			uint64_t e = bad.bad[bad.nr_bad];

			for (unsigned j = 0; j < 8; j++)
				buf[2008 + 8 * bad.nr_bad + j] = (uint8_t)(e >> (8 * j));
			put_crc(buf);
		}
		ck_assert_msg(fm_sb_decode(buf, &back, &err) == -EUCLEAN, "%s: accepted", cases[k]);
		ck_assert_ptr_nonnull(err);
		g_clear_error(&err);
	}
}
END_TEST

static Suite *badblocks_suite(void)
{
	Suite *s = suite_create("badblocks");
	TCase *tc = tcase_create("list");

	tcase_add_test(tc, test_bad_overlap);
	tcase_add_test(tc, test_bad_add_merge);
	tcase_add_test(tc, test_bad_clear);
	tcase_add_test(tc, test_bad_full);
	tcase_add_test(tc, test_bad_record);
	tcase_add_test(tc, test_bad_on_disk);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fm_test_main(badblocks_suite());
}
