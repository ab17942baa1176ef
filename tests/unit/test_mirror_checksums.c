/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of mirror: per-block checksums (FM_SB_FEAT_CHECKSUMS) — the
 * entries on disk after a stop and a discard, whole-block I/O, reads that
 * heal a bad copy on either leg, EIO when no copy verifies, scrub repair
 * from the copy that verifies (not "the first leg"), and the resync of a
 * block whose checksum a crash left stale.
 * Fixtures and conventions: mirror_fx.h.
 */
#include "mirror_fx.h"

/* Flip a byte of every sector of the 4 KiB block at image byte @off of
 * leg @path, behind the mirror's back. */
static void corrupt_leg(const char *path, uint64_t off)
{
	uint8_t b[4096];

	fm_test_read_file(path, fx.data_offset + off, b, sizeof(b));
	for (unsigned k = 0; k < sizeof(b); k += 512)
		b[k] ^= 0x5a;
	fm_test_write_file(path, fx.data_offset + off, b, sizeof(b));
}

/*----------------------------------------------------------------*/
/* Checksums (FM_SB_FEAT_CHECKSUMS) */

/* Format fx.legs with checksums and 1 MiB regions. */
static void fx_format_csum(void)
{
	struct fm_sb sb;

	fx_format_opts(&(struct mirror_format_opts){ .size = IMG, .region_size = REGION,
						    .checksums = true });
	read_sb(fx.legs[0], &sb);
	ck_assert(sb.features & FM_SB_FEAT_CHECKSUMS);
}

/* The stored entry of image block @b on leg @path. */
static uint32_t leg_csum_entry(const char *path, uint64_t b)
{
	struct fm_sb sb;
	uint8_t e[4];

	read_sb(path, &sb);
	fm_test_read_file(path, sb.csum_offset + b * 4, e, 4);
	return (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 |
	       (uint32_t)e[3] << 24;
}

/* @n legs with checksums, the whole image written with random bytes of
 * the test's seed (FX_SEED() first), stopped cleanly. */
static void fx_written_stopped(unsigned n)
{
	fx_name_legs(n);
	fx_format_csum();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, IMG);
	fx_stop(0);
}

/* Offline, what a crash leaves: region @g's bit (the only one: @g < 8)
 * set in every leg's bitmap, the array unclean. */
static void mark_unsynced(unsigned g)
{
	uint8_t bit = (uint8_t)(1u << g);
	struct fm_sb sb;

	ck_assert_uint_lt(g, 8);
	for (unsigned i = 0; i < fx.nlegs; i++) {
		read_sb(fx.legs[i], &sb);
		fm_test_write_file(fx.legs[i], sb.bitmap_offset, &bit, 1);
		sb.state_flags &= ~FM_SB_CLEAN;
		write_sb(fx.legs[i], &sb);
	}
}

/* The checksum areas of every leg hold the model's checksums (stored form:
 * crc32c XOR the zero block's). */
static void fx_check_csum_areas(void)
{
	for (unsigned i = 0; i < fx.nlegs; i++)
		for (uint64_t b = 0; b < IMG / 4096; b++) {
			uint32_t want = fm_crc32c(0, fx.model + b * 4096, 4096) ^
					FM_SB_CSUM_ZERO_BLOCK;

			ck_assert_msg(leg_csum_entry(fx.legs[i], b) == want,
				      "leg %u block %" PRIu64 ": entry %08x, want %08x", i, b,
				      leg_csum_entry(fx.legs[i], b), want);
		}
}

/* Written checksums reach every leg's area by a clean stop; a discarded
 * range stores the zero entry; the array assembles and reads back clean. */
START_TEST(test_csum_kept_on_disk)
{
	struct mirror_leg_stats ls;

	FX_SEED();
	fx_name_legs(2);
	fx_format_csum();
	fx_check_csum_areas();          /* a new array: all entries 0 */
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 3 * MiB);
	fx_write_random(5 * MiB + 8 * KiB, 64 * KiB);
	ck_assert_int_eq(mirror_discard(fx.m, (1 * MiB) / SECTOR, (256 * KiB) / SECTOR), 0);
	memset(fx.model + 1 * MiB, 0, 256 * KiB);
	fx_stop(0);
	fx_check_legs(0, IMG);
	fx_check_csum_areas();
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	fx_check_read(0, IMG);
	fx_check_read(0, IMG);
	for (unsigned i = 0; i < 2; i++) {
		leg_stats(i, &ls);
		ck_assert_uint_eq(ls.checksum_errors, 0);
	}
	fx_stop(0);
}
END_TEST

/* I/O that is not whole 4 KiB blocks is refused on an array with checksums. */
START_TEST(test_csum_unaligned_refused)
{
	uint8_t *buf;

	fx_name_legs(2);
	fx_format_csum();
	fx_assemble(MIRROR_READ_BALANCE, false);
	buf = fx_buf(8 * KiB);
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 512, buf, 4096, 0), -EINVAL);
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 0, buf, 4096 + 512, 0), -EINVAL);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 0, buf, 512, 0), -EINVAL);
	ck_assert_int_eq(mirror_discard(fx.m, 1, 8), -EINVAL);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 4096, buf, 8192, 0), 0);
	fx_stop(0);
}
END_TEST

/* A copy changed behind the mirror's back (bit rot) on leg _i: the read
 * returns the good data from the other leg, counts a checksum error on
 * leg _i, rewrites and re-verifies its copy (corrected). */
START_TEST(test_csum_read_heals)
{
	static const uint64_t bad[] = { 64 * KiB, 1 * MiB + 4 * KiB };
	struct mirror_leg_stats ls;

	FX_SEED();
	fx_name_legs(2);
	fx_format_csum();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, 2 * MiB);
	fx_stop(0);
	for (unsigned k = 0; k < G_N_ELEMENTS(bad); k++)
		corrupt_leg(fx.legs[_i], bad[k]);
	/* Round robin: each block read twice is read from both legs. */
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	for (unsigned k = 0; k < G_N_ELEMENTS(bad); k++)
		for (unsigned n = 0; n < 4; n++)
			fx_check_read(bad[k], 4 * KiB);
	fx_check_read(0, 2 * MiB);
	leg_stats(_i, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 2);
	ck_assert_uint_eq(ls.corrected, 2);     /* rewritten, re-read, verified */
	ck_assert_uint_eq(ls.read_errors, 0);   /* not towards max_read_errors */
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	leg_stats(1 - _i, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 0);
	ck_assert_uint_eq(ls.corrected, 0);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* The same block bad on both legs: EIO for a read of it (never the wrong
 * data); the blocks around it still read. */
START_TEST(test_csum_no_good_copy_eio)
{
	uint8_t *buf;

	FX_SEED();
	fx_name_legs(2);
	fx_format_csum();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	fx_stop(0);
	corrupt_leg(fx.legs[0], 128 * KiB);
	corrupt_leg(fx.legs[1], 128 * KiB);
	fx_assemble(MIRROR_READ_BALANCE, false);
	buf = fx_buf(64 * KiB);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 96 * KiB, buf, 64 * KiB, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 128 * KiB, buf, 4 * KiB, 0), -EIO);
	fx_check_read(0, 128 * KiB);
	fx_check_read(132 * KiB, 256 * KiB);
	fx_stop(0);
}
END_TEST

/* scrub --repair rewrites each bad copy from the copy that verifies, on
 * whichever leg it is (a repair from "the first leg" would copy leg 0's bad
 * block over leg 1's good one), and counts the bad blocks per leg. */
START_TEST(test_csum_scrub_repair)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_csum();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	fx_stop(0);
	corrupt_leg(fx.legs[0], 12 * KiB);
	corrupt_leg(fx.legs[0], 3 * REGION + 64 * KiB);
	corrupt_leg(fx.legs[1], 5 * REGION);
	fx_assemble(MIRROR_READ_FIRST, false);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 2);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 1);
	admin_ok(mirror_scrub(fx.m, true, &err), err, "scrub --repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub after repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 0);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 4);
	ck_assert_uint_eq(ls.corrected, 2);     /* one rewrite per scrub chunk */
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 2);
	fx_stop(0);
	fx_check_legs(0, IMG);
	fx_check_csum_areas();
}
END_TEST

/*
 * What a crash leaves: a region's bit set, its data written on every leg
 * (an acknowledged, flushed write) but its checksum page not.  No copy
 * verifies; the resync takes the source's data and recomputes the checksum,
 * so the data reads back (a resync that only copied would leave every read
 * of it failing).  The resync compares per block and writes nothing where
 * the legs agree.
 */
START_TEST(test_csum_resync_after_crash)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	uint8_t *blk = g_malloc(4096);

	FX_SEED();
	fx_written_stopped(2);
	/* Offline: new data in block 2 MiB + 8 KiB on both legs, region 2's
	 * bit set, the array unclean. */
	fm_rng_fill(&fx.rng, blk, 4096);
	memcpy(fx.model + 2 * MiB + 8 * KiB, blk, 4096);
	for (unsigned i = 0; i < 2; i++)
		fm_test_write_file(fx.legs[i], fx.data_offset + 2 * MiB + 8 * KiB, blk, 4096);
	mark_unsynced(2);
	g_free(blk);
	fx_assemble(MIRROR_READ_BALANCE, false);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_uint_eq(ms.resynced_regions, 1);
	ck_assert_uint_eq(ms.sync_read_bytes, 2 * REGION);   /* both legs, one region */
	ck_assert_uint_eq(ms.sync_write_bytes, 0);           /* they agreed */
	fx_check_read(0, IMG);
	for (unsigned i = 0; i < 2; i++) {
		leg_stats(i, &ls);
		ck_assert_uint_eq(ls.checksum_errors, 0);
	}
	fx_stop(0);
	fx_check_csum_areas();
}
END_TEST

/*
 * A crash between the legs' writes of one block: region 2's bit set, the
 * block new on leg 1 only (the checksum on disk is the old data's).  The
 * resync compares per block and rewrites just that block on the leg whose
 * copy fails verification: 4 KiB written, not the 256 KiB chunk or the
 * region (a copy that rewrote the chunk writes 64 times more).
 */
START_TEST(test_csum_resync_one_block)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	uint8_t *blk = g_malloc(4096);
	struct mirror_opts o = { .read_policy = MIRROR_READ_BALANCE, .event_fn = ev_handler };
	unsigned finished = 0;

	FX_SEED();
	fx_written_stopped(2);
	fm_rng_fill(&fx.rng, blk, 4096);
	fm_test_write_file(fx.legs[1], fx.data_offset + 2 * MiB + 8 * KiB, blk, 4096);
	mark_unsynced(2);
	g_free(blk);
	ev_reset();
	fx_assemble_opts(&o);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_uint_eq(ms.resynced_regions, 1);
	ck_assert_uint_eq(ms.sync_read_bytes, 2 * REGION);
	ck_assert_uint_eq(ms.sync_write_bytes, 4096);       /* one block, one leg */
	/* The pass's end reports what it read and wrote. */
	pthread_mutex_lock(&evs.lock);
	for (unsigned i = 0; i < evs.n; i++)
		if (evs.ev[i].type == FM_EVENT_REBUILD_FINISHED) {
			ck_assert_uint_eq(evs.ev[i].read_bytes, 2 * REGION);
			ck_assert_uint_eq(evs.ev[i].write_bytes, 4096);
			finished++;
		}
	pthread_mutex_unlock(&evs.lock);
	ck_assert_uint_eq(finished, 1);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.write_bytes, 0);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.write_bytes, 4096);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	fx_check_csum_areas();
}
END_TEST

/*
 * A crash with a single writable leg: a FUA write of block k (2 MiB +
 * 8 KiB, region 2) is durable, its checksum entry only in memory.  After
 * the restart the entry on disk is the old data's and there is no leg to
 * resync region 2 to; the pass still compares it and recomputes the entry
 * from the leg's data, so k reads back (before, every read of it failed
 * with EIO once the region counted as synced), and the stop writes the
 * entry.  _i == 0: a one-leg array; 1: a two-leg array started degraded
 * (leg 1 gone) before the crash; 2: both legs in sync at the crash, the
 * restart degraded without leg 1.
 */
START_TEST(test_csum_resync_single_leg)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_BALANCE, .degraded = _i == 1 };
	struct mirror_opts od = { .read_policy = MIRROR_READ_BALANCE, .degraded = _i != 0 };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	uint64_t k = 2 * MiB + 8 * KiB;
	uint8_t *blk = fx_buf(4096);

	FX_SEED();
	fx_written_stopped(_i == 0 ? 1 : 2);
	if (_i == 1)
		fx.nlegs = 1;
	fm_rng_fill(&fx.rng, blk, 4096);
	memcpy(fx.model + k, blk, 4096);
	crash_after_write(&o, blk, k, 4096);
	fx.nlegs = 1;
	ck_assert_uint_ne(leg_csum_entry(fx.legs[0], k / 4096),
			  fm_crc32c(0, blk, 4096) ^ FM_SB_CSUM_ZERO_BLOCK);
	fx_assemble_opts(&od);
	wait_sync_idle(&ms);
	fx_check_read(0, IMG);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_uint_eq(ms.resynced_regions, 1);
	ck_assert_uint_eq(ms.sync_read_bytes, REGION);      /* region 2, the one leg */
	ck_assert_uint_eq(ms.sync_write_bytes, 0);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 0);
	fx_stop(0);
	fx_check_csum_areas();
}
END_TEST

/*
 * A checked read that spans an unsynced region and a clean one decides
 * per block: region 2 is unsynced (its bit set, the array unclean; read
 * only, so no resync runs) and its last block Y new on both legs behind a
 * stale entry, a crash's leftover; block X of clean region 3 is bad on
 * both legs.  A 16 KiB read of Y, X and their neighbours fails with EIO,
 * and X's entry is left as it was (before, the whole read was taken for a
 * resync: X's bad data was returned as good and its entry rewritten to
 * match); Y alone, and Y with a good block of region 3, read back Y's new
 * data.
 */
START_TEST(test_csum_read_across_unsynced)
{
	uint64_t x = 3 * REGION + 4 * KiB, y = 3 * REGION - 4 * KiB;
	uint8_t *blk = fx_buf(4096), *buf = fx_buf(16 * KiB);

	FX_SEED();
	fx_written_stopped(2);
	fm_rng_fill(&fx.rng, blk, 4096);
	memcpy(fx.model + y, blk, 4096);
	for (unsigned i = 0; i < 2; i++) {
		fm_test_write_file(fx.legs[i], fx.data_offset + y, blk, 4096);
		corrupt_leg(fx.legs[i], x);
	}
	mark_unsynced(2);
	fx_assemble(MIRROR_READ_BALANCE, true);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, y, buf, 16 * KiB, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, x, buf, 4 * KiB, 0), -EIO);
	fx_check_read(y, 4 * KiB);
	fx_check_read(y, 8 * KiB);
	fx_stop(0);
}
END_TEST

/*
 * A rebuild verifies its source: leg 0 (the source) holds a block that
 * fails its checksum, leg 1 a good copy.  The new leg 2 gets the good copy
 * and leg 0 is repaired (a rebuild that copied its source unverified would
 * give leg 2 the bad block).
 */
START_TEST(test_csum_rebuild_verifies_source)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_csum();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	fx_stop(0);
	corrupt_leg(fx.legs[0], 3 * REGION + 20 * KiB);
	fx_assemble(MIRROR_READ_FIRST, false);
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], 0, &err), err, "add");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	fx.nlegs = 3;
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.checksum_errors, 1);
	fx_stop(0);
	fx_check_legs(0, IMG);
	fx_check_csum_areas();
}
END_TEST

/*
 * A read repair verifies its source: block X fails reads on leg 0 and is
 * bad on disk on leg 2.  A read of X (first leg policy) fails on leg 0,
 * leg 1 serves it, verified, and a copy from leg 1 is to rewrite leg 0;
 * but leg 1's re-read for that copy fails (a flakey fault whose draws,
 * seed 1 at 50%, let the first read through, fail the second and let the
 * third through), so copy_read() reads leg 2 instead.  Its copy fails
 * verification: the copy turns into a compare, and leg 0 (and leg 2) get
 * leg 1's good block.  Before, leg 2's bad block was copied to leg 0 as
 * it was.
 */
START_TEST(test_csum_read_repair_verifies_source)
{
	uint64_t x = 5 * REGION + 12 * KiB;
	struct dmio_fault f0 = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .sector = x / SECTOR, .count = 4 * KiB / SECTOR };
	struct dmio_fault f1 = { .flags = DMIO_FAULT_READS, .sector = x / SECTOR,
				 .count = 4 * KiB / SECTOR, .rate_ppm = 500000, .seed = 1 };
	struct mirror_leg_stats ls;
	gint64 deadline;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(3);
	fx_format_csum();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	fx_stop(0);
	corrupt_leg(fx.legs[2], x);
	fx_assemble(MIRROR_READ_FIRST, false);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f0, &err), err, "inject leg 0");
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f1, &err), err, "inject leg 1");
	fx_check_read(x, 4 * KiB);
	/* The rewrite of leg 0 reads back what was written: corrected. */
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(2000);
		leg_stats(0, &ls);
	} while (!ls.corrected && g_get_monotonic_time() < deadline);
	ck_assert_uint_ge(ls.corrected, 1);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.read_errors, 1);           /* the copy's re-read */
	for (unsigned i = 0; i < 2; i++)
		admin_ok(mirror_inject(fx.m, fx.legs[i], NULL, &err), err, "clear");
	fx_stop(0);
	fx_check_legs(x, 4 * KiB);
}
END_TEST

static Suite *mirror_checksums_suite(void)
{
	Suite *s = suite_create("mirror_checksums");
	TCase *tc;

	tc = tc_add(s, "checksums", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_csum_kept_on_disk);
	tcase_add_test(tc, test_csum_unaligned_refused);
	tcase_add_loop_test(tc, test_csum_read_heals, 0, 2);
	tcase_add_test(tc, test_csum_no_good_copy_eio);
	tcase_add_test(tc, test_csum_scrub_repair);
	tcase_add_test(tc, test_csum_resync_after_crash);
	tcase_add_test(tc, test_csum_resync_one_block);
	tcase_add_loop_test(tc, test_csum_resync_single_leg, 0, 3);
	tcase_add_test(tc, test_csum_read_across_unsynced);
	tcase_add_test(tc, test_csum_rebuild_verifies_source);
	tcase_add_test(tc, test_csum_read_repair_verifies_source);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_mirror_checksums: base seed %#" PRIx64
		" (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_checksums_suite());
}
