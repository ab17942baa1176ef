/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the written-region map through the mirror
 * (FM_SB_FEAT_WRITTEN_MAP, include/fusemirror/superblock.h; kept by the
 * bitmap, src/mirror/bitmap.h): a new array writes no data; reads of
 * regions never written are zeroes from no leg; the map is on every leg
 * before a write into a region completes; whole-region discards and
 * write-zeroes make regions unwritten again; a recovery copies only written
 * regions and zeroes the rest of the new leg; a scrub skips unwritten
 * regions; arrays without the map behave as before.
 * Fixtures and conventions: mirror_fx.h.  Arrays have 8 regions of 1 MiB
 * (fx_format_regions()).
 */
#include "mirror_fx.h"
#include "mirror/mirror_i.h"    /* mirror_whole_regions(): a pure decision */

#define NREG (IMG / REGION)

/* Region @r's bit of @path's written map on disk. */
static bool disk_written(const char *path, uint64_t r)
{
	struct fm_sb sb;
	uint8_t byte;

	read_sb(path, &sb);
	ck_assert_msg(sb.features & FM_SB_FEAT_WRITTEN_MAP, "%s: no written map", path);
	fm_test_read_file(path, sb.written_offset + r / 8, &byte, 1);
	return byte & (1u << (r % 8));
}

/* Every leg's map on disk is @want (bit r: region r written). */
static void check_disk_map(unsigned want, const char *when)
{
	for (unsigned i = 0; i < fx.nlegs; i++)
		for (uint64_t r = 0; r < NREG; r++)
			ck_assert_msg(disk_written(fx.legs[i], r) == !!(want & (1u << r)),
				      "%s: leg %u, region %" PRIu64 ": map bit %d on disk", when,
				      i, r, disk_written(fx.legs[i], r));
}

static struct mirror_status status(void)
{
	struct mirror_status ms;

	mirror_get_status(fx.m, &ms);
	return ms;
}

/*----------------------------------------------------------------*/
/* TCase written */

START_TEST(test_written_new_array)
{
	struct mirror_status ms;
	uint8_t *buf = fx_buf(REGION);
	uint64_t reads, bytes;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	/* create wrote no data: the legs are holes but for the metadata. */
	for (unsigned i = 0; i < fx.nlegs; i++)
		ck_assert_msg(file_allocated(fx.legs[i]) < 1 * MiB, "leg %u: %" PRIu64
			      " bytes allocated by create", i, file_allocated(fx.legs[i]));
	check_disk_map(0, "after create");
	fx_assemble(MIRROR_READ_BALANCE, false);
	ms = status();
	ck_assert(ms.written_map);
	ck_assert_uint_eq(ms.written_regions, 0);
	ck_assert_uint_eq(ms.written_bytes, 0);

	/* An unwritten region reads as zeroes without a leg read: what the
	 * legs hold there does not matter. */
	fx_scribble_legs(5 * REGION, REGION);
	reads = fx_leg_reads();
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 5 * REGION, buf, REGION, 0), 0);
	ck_assert(fm_test_is_zero(buf, REGION));
	ck_assert_uint_eq(fx_leg_reads(), reads);
	ck_assert_uint_eq(status().unwritten_reads, 1);
	memset(buf, 0, REGION);
	fm_test_write_file(fx.legs[0], fx.data_offset + 5 * REGION, buf, REGION);
	fm_test_write_file(fx.legs[1], fx.data_offset + 5 * REGION, buf, REGION);

	/* A write: its region is written on every leg's disk when it completes. */
	fx_write_random(2 * REGION + 4096, 8192);
	check_disk_map(1u << 2, "after a write into region 2");
	ms = status();
	ck_assert_uint_eq(ms.written_regions, 1);
	ck_assert_uint_eq(ms.written_bytes, REGION);
	reads = fx_leg_reads();
	fx_check_read(2 * REGION, REGION);
	ck_assert_uint_gt(fx_leg_reads(), reads);
	/* A read across an unwritten and a written region reads only the
	 * written part from a leg: the unwritten part is zeroes although
	 * the legs hold a pattern there; and the other way round, and a
	 * written run between two unwritten ones. */
	fx_scribble_legs(REGION, REGION);
	fx_scribble_legs(3 * REGION, REGION);
	bytes = fx_leg_read_bytes();
	fx_check_read(REGION + REGION / 2, REGION);
	ck_assert_uint_eq(fx_leg_read_bytes() - bytes, REGION / 2);
	bytes = fx_leg_read_bytes();
	fx_check_read(2 * REGION + REGION / 4, REGION);
	ck_assert_uint_eq(fx_leg_read_bytes() - bytes, 3 * REGION / 4);
	bytes = fx_leg_read_bytes();
	fx_check_read(REGION + 4096, 2 * REGION);
	ck_assert_uint_eq(fx_leg_read_bytes() - bytes, REGION);
	/* The same through three iovecs whose ends are not the regions'. */
	{
		struct iovec iov[3] = { { buf, 3 * 512 },
					{ buf + 3 * 512, REGION / 2 },
					{ buf + 3 * 512 + REGION / 2, REGION / 2 - 3 * 512 } };
		struct io *io;

		memset(buf, 0x5c, REGION);
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, (REGION + REGION / 2) / SECTOR,
					   iov, 3, 0, &io), 0);
		ck_assert_int_eq(io_wait(io), 0);
		fm_assert_bytes_eq(buf, fx.model + REGION + REGION / 2, REGION, "three iovecs");
	}
	ck_assert_uint_eq(status().unwritten_reads, 1);
	memset(buf, 0, REGION);
	for (uint64_t r = 1; r <= 3; r += 2)
		for (unsigned i = 0; i < fx.nlegs; i++)
			fm_test_write_file(fx.legs[i], fx.data_offset + r * REGION, buf, REGION);
	/* More writes into it: the map is not rewritten. */
	fx_write_random(2 * REGION, REGION);
	fx_check_legs(0, IMG);
	fx_stop(0);
	check_disk_map(1u << 2, "after the stop");
}
END_TEST

/* FM_SB_FEAT_ZERO_ON_WRITE: create (here over legs full of old bytes)
 * empties no data area; reads of never-written regions are zeroes all the
 * same; the first write into a region zeroes the whole region on every leg
 * (and flushes it) before its data goes, so the rest of it reads zeroes and
 * the legs agree;
 * regions not written keep the old bytes on the legs. */
START_TEST(test_written_zero_on_write)
{
	struct mirror_stats st0, st1;
	struct fm_sb sb;
	uint8_t *buf = fx_buf(REGION), *leg = fx_buf(REGION);

	FX_SEED();
	fx_name_legs(2);
	/* Legs full of old bytes: formatted once (for the data offset),
	 * scribbled over, formatted again. */
	fx_format_regions();
	fx_scribble_legs(0, IMG);
	fx_format_opts(&(struct mirror_format_opts){ .size = IMG, .region_size = REGION,
						    .force = true });
	read_sb(fx.legs[0], &sb);
	ck_assert(sb.features & FM_SB_FEAT_WRITTEN_MAP);
	ck_assert(sb.features & FM_SB_FEAT_ZERO_ON_WRITE);
	for (unsigned i = 0; i < fx.nlegs; i++) {
		fm_test_read_file(fx.legs[i], fx.data_offset + 3 * REGION, leg, REGION);
		ck_assert_msg(leg[0] == FX_OLD_BYTE && leg[REGION - 1] == FX_OLD_BYTE,
			      "leg %u: create wrote its data area", i);
	}
	check_disk_map(0, "after create");
	fx_assemble(MIRROR_READ_BALANCE, false);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 3 * REGION, buf, REGION, 0), 0);
	ck_assert(fm_test_is_zero(buf, REGION));
	mirror_get_stats(fx.m, &st0);
	fx_write_random(3 * REGION + 8192, 4096);
	check_disk_map(1u << 3, "after the first write into region 3");
	/* The zeroing (a write-zeroes: no FUA) was flushed before the map
	 * page said the region holds zeroes. */
	mirror_get_stats(fx.m, &st1);
	ck_assert_msg(st1.flushes > st0.flushes,
		      "no flush between zeroing region 3 and marking it written");
	fx_check_read(3 * REGION, REGION);
	fx_check_read(2 * REGION + REGION / 2, 2 * REGION);
	fx_check_legs(3 * REGION, REGION);
	/* Another write into it zeroes nothing again. */
	fx_write_random(3 * REGION + 65536, 4096);
	fx_check_legs(3 * REGION, REGION);
	for (unsigned i = 0; i < fx.nlegs; i++) {
		fm_test_read_file(fx.legs[i], fx.data_offset + 4 * REGION, leg, REGION);
		ck_assert_msg(leg[0] == FX_OLD_BYTE, "leg %u: region 4, never written, was zeroed", i);
	}
	fx_stop(0);
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(3 * REGION, REGION);
}
END_TEST

/* Discard and write-zeroes of whole regions make them unwritten (in memory
 * at once, on every leg's disk by the stop); of part of a region, never. */
START_TEST(test_written_discard)
{
	struct mirror_status ms;
	uint64_t reads;
	uint8_t *buf = fx_buf(REGION);

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(1 * REGION, 4 * REGION);        /* regions 1..4 */
	fx_write_random(IMG - 4096, 4096);              /* region 7 */
	ck_assert_uint_eq(status().written_regions, 5);
	check_disk_map(0x9e, "after the writes");

	/* Region 2 whole, region 1 partly: 1 stays written. */
	ck_assert_int_eq(mirror_discard(fx.m, (REGION + 4096) / SECTOR,
					(2 * REGION - 4096) / SECTOR), 0);
	memset(fx.model + REGION + 4096, 0, 2 * REGION - 4096);
	/* Region 3 by write-zeroes; region 4 partly. */
	ck_assert_int_eq(mirror_write_zeroes(fx.m, 3 * REGION / SECTOR,
					     (REGION + 512) / SECTOR), 0);
	memset(fx.model + 3 * REGION, 0, REGION + 512);
	/* The last region, up to the image's end. */
	ck_assert_int_eq(mirror_discard(fx.m, 7 * REGION / SECTOR, REGION / SECTOR), 0);
	memset(fx.model + 7 * REGION, 0, REGION);
	ms = status();
	ck_assert_uint_eq(ms.written_regions, 2);       /* 1 and 4 */
	reads = fx_leg_reads();
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 2 * REGION, buf, REGION, 0), 0);
	ck_assert(fm_test_is_zero(buf, REGION));
	ck_assert_uint_eq(fx_leg_reads(), reads);
	fx_check_legs(0, IMG);
	for (uint64_t off = 0; off < IMG; off += REGION)
		fx_check_read(off, REGION);
	/* Written again by a write. */
	fx_write_random(3 * REGION + 512, 1024);
	ck_assert_uint_eq(status().written_regions, 3);
	fx_stop(0);
	check_disk_map(0x1a, "after the stop");
	fx_check_legs(0, IMG);

	/* The next assembly reads the map back. */
	fx_assemble(MIRROR_READ_BALANCE, false);
	ck_assert_uint_eq(status().written_regions, 3);
	reads = fx_leg_reads();
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 7 * REGION, buf, REGION, 0), 0);
	ck_assert(fm_test_is_zero(buf, REGION));
	ck_assert_uint_eq(fx_leg_reads(), reads);
	fx_stop(0);
}
END_TEST

/* A new leg (full of old data) gets copies of the written regions only; its
 * unwritten regions are zeroed, so a later partial write into one leaves
 * zeroes around it on every leg. */
START_TEST(test_written_add_copies_written_only)
{
	struct fm_sb sb;
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(1 * REGION, REGION);
	fx_write_random(6 * REGION + 4096, 4096);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	read_sb(fx.legs[0], &sb);
	fx.legs[2] = fx_path("leg2");
	make_random_file(fx.legs[2], fm_sb_leg_bytes(&sb));
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add a used disk");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert_msg(ms.sync_write_bytes == 2 * REGION && ms.sync_read_bytes == 2 * REGION,
		      "recovery read %" PRIu64 " and wrote %" PRIu64 " bytes; the written "
		      "regions are %" PRIu64, ms.sync_read_bytes, ms.sync_write_bytes,
		      (uint64_t)(2 * REGION));
	ck_assert_uint_eq(ms.sync_zero_bytes, (NREG - 2) * REGION);
	/* A partial write into an unwritten region. */
	fx_write_random(4 * REGION + 8192, 4096);
	fx_stop(0);
	{
		char *old = fx.legs[1];        /* the new leg took the old one's slot */

		fx.legs[1] = fx.legs[2];
		fx.legs[2] = old;
	}
	fx_check_legs(0, IMG);
	check_disk_map((1u << 1) | (1u << 4) | (1u << 6), "after the recovery");
}
END_TEST

/* A scrub compares written regions only. */
START_TEST(test_written_scrub_skips)
{
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(3 * REGION, 4096);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 0);
	ck_assert_msg(ms.sync_read_bytes == 2 * REGION, "the scrub read %" PRIu64 " bytes, "
		      "the written region on two legs is %" PRIu64, ms.sync_read_bytes,
		      (uint64_t)(2 * REGION));
	fx_stop(0);
}
END_TEST

/* A write acknowledged before a crash: its region is written on disk and
 * its data reads back after the unclean start. */
START_TEST(test_written_crash)
{
	uint8_t *data = fx_buf(64 * KiB);

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fm_rng_fill(&fx.rng, data, 64 * KiB);
	crash_after_write(NULL, data, 5 * REGION + 4096, 64 * KiB);
	memcpy(fx.model + 5 * REGION + 4096, data, 64 * KiB);
	check_disk_map(1u << 5, "after the crash");
	fx_assemble(MIRROR_READ_BALANCE, false);
	ck_assert_uint_eq(status().written_regions, 1);
	fx_check_read(5 * REGION, REGION);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* An array without the map (as made before it): every region counts as
 * written, reads go to the legs, a discard changes nothing about it. */
START_TEST(test_written_none)
{
	struct mirror_status ms;
	struct fm_sb sb;
	uint8_t *buf = fx_buf(REGION);
	uint64_t reads;

	FX_SEED();
	fx_name_legs(2);
	fx_format_opts(&(struct mirror_format_opts){ .size = IMG, .region_size = REGION,
						    .no_written_map = true });
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.features & FM_SB_FEAT_WRITTEN_MAP, 0);
	ck_assert_uint_eq(sb.written_offset, 0);
	fx_assemble(MIRROR_READ_BALANCE, false);
	ms = status();
	ck_assert(!ms.written_map);
	ck_assert_uint_eq(ms.written_regions, NREG);
	reads = fx_leg_reads();
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 2 * REGION, buf, REGION, 0), 0);
	ck_assert_uint_gt(fx_leg_reads(), reads);
	ck_assert_int_eq(mirror_discard(fx.m, 2 * REGION / SECTOR, REGION / SECTOR), 0);
	ck_assert_uint_eq(status().written_regions, NREG);
	ck_assert_uint_eq(status().unwritten_reads, 0);
	fx_stop(0);
}
END_TEST

/* Read-only: no bitmap runs, so no map in memory; reads go to the legs,
 * which hold zeroes wherever the array was never written. */
START_TEST(test_written_readonly)
{
	struct mirror_status ms;
	uint8_t *buf = fx_buf(REGION);
	uint64_t reads;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(1 * REGION, 4096);
	fx_stop(0);
	/* What create left on the legs of a never-written region
	 * (FM_SB_FEAT_ZERO_ON_WRITE: create empties no data area). */
	fx_scribble_legs(5 * REGION, REGION);
	fx_assemble(MIRROR_READ_BALANCE, true);
	ms = status();
	/* No bitmap keeps the map, but the assembly read it: status shows it
	 * as it was, and reads know it: zeroes, no leg. */
	ck_assert(ms.written_map);
	ck_assert_uint_eq(ms.written_regions, 1);
	ck_assert_uint_eq(ms.written_bytes, REGION);
	reads = fx_leg_reads();
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 5 * REGION, buf, REGION, 0), 0);
	ck_assert(fm_test_is_zero(buf, REGION));
	ck_assert_uint_eq(fx_leg_reads(), reads);
	fx_check_read(1 * REGION, REGION);
	ck_assert_uint_gt(fx_leg_reads(), reads);
	fx_stop(0);
	check_disk_map(1u << 1, "after a read-only mount");
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase decisions: which regions a discard unwrites */

typedef bool (*whole_fn)(uint64_t sector, uint64_t count, unsigned shift,
			 uint64_t image_sectors, uint64_t *first, uint64_t *end);

/* The deliberately wrong variant: rounds outwards, so a discard of part of
 * a region would unwrite (and later read as zeroes) the rest of its data. */
static bool whole_regions_wrong(uint64_t sector, uint64_t count, unsigned shift,
				uint64_t image_sectors, uint64_t *first, uint64_t *end)
{
	(void)image_sectors;
	if (!count)
		return false;
	*first = sector >> shift;
	*end = ((sector + count - 1) >> shift) + 1;
	return true;
}

/* Check @fn against the definition on every range of a small image of
 * 4.5 regions of 8 sectors: region g is returned iff [g * 8, min((g + 1)
 * * 8, image end)) lies inside the range.  Returns a description of the
 * first disagreement, or NULL. */
static char *whole_regions_disagreement(whole_fn fn)
{
	const unsigned shift = 3;
	const uint64_t image = 36, nreg = 5;

	for (uint64_t s = 0; s < image; s++) {
		for (uint64_t c = 0; s + c <= image; c++) {
			uint64_t first = UINT64_MAX, end = UINT64_MAX;
			bool any = fn(s, c, shift, image, &first, &end);

			for (uint64_t g = 0; g < nreg; g++) {
				uint64_t gs = g << shift, ge = MIN((g + 1) << shift, image);
				bool want = c && s <= gs && ge <= s + c;
				bool got = any && first <= g && g < end;

				if (want != got)
					return g_strdup_printf("range %" PRIu64 "+%" PRIu64
							       ": region %" PRIu64 " %s",
							       s, c, g, got ? "unwritten but not "
							       "wholly discarded" : "wholly "
							       "discarded but kept");
			}
		}
	}
	return NULL;
}

START_TEST(test_whole_regions)
{
	g_autofree char *real = whole_regions_disagreement(mirror_whole_regions);
	g_autofree char *wrong = whole_regions_disagreement(whole_regions_wrong);
	uint64_t first, end;

	ck_assert_msg(!real, "mirror_whole_regions: %s", real);
	ck_assert_msg(wrong, "the check cannot tell a wrong variant");
	/* Large values do not wrap. */
	ck_assert(mirror_whole_regions(1ull << 40, 1ull << 30, 21, 1ull << 50, &first, &end));
	ck_assert_uint_eq(first, 1ull << 19);
	ck_assert_uint_eq(end, (1ull << 19) + (1ull << 9));
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *mirror_written_suite(void)
{
	Suite *s = suite_create("mirror_written");
	TCase *tc;

	tc = tc_add(s, "written", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_written_new_array);
	tcase_add_test(tc, test_written_discard);
	tcase_add_test(tc, test_written_add_copies_written_only);
	tcase_add_test(tc, test_written_scrub_skips);
	tcase_add_test(tc, test_written_crash);
	tcase_add_test(tc, test_written_none);
	tcase_add_test(tc, test_written_readonly);
	tcase_add_test(tc, test_written_zero_on_write);

	tc = tc_add(s, "decisions", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_whole_regions);
	return s;
}

int main(void)
{
	return fm_test_main(mirror_written_suite());
}
