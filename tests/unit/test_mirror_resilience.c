/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of mirror: read and write errors, failing, removing, adding and
 * replacing legs, repair, scrub, and the events these state changes report.
 * Fixtures and conventions: mirror_fx.h.
 */
#include "mirror_fx.h"

/*----------------------------------------------------------------*/
/* TCase read-errors */

START_TEST(test_read_failover)
{
	enum mirror_read_policy policy = policies[_i];
	const uint64_t chunk = 64 * KiB;
	const uint64_t cut = IMG / 2;   /* leg 0 keeps data below this */
	uint64_t in_cut = 0;
	struct mirror_leg_stats ls0, ls1;
	struct mirror_stats st;

	struct mirror_opts o = { .read_policy = policy, .max_read_errors = 1000 };
	/* Leg 0 cannot read the second half of its data area, until a
	 * block is rewritten (a bad sector that the disk remaps on write). */
	struct dmio_fault f = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				.sector = cut / SECTOR, .count = (IMG - cut) / SECTOR };
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble_opts(&o);
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_write_random(off, 1 * MiB);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");

	/* Straddling the cut. */
	fx_check_read(cut - 4096, 8192);
	in_cut++;
	/* Descending: no read continues the one before (see the balance
	 * policy's sequential affinity), so every policy reaches leg 0. */
	for (uint64_t k = IMG / chunk; k-- > 0;) {
		fx_check_read(k * chunk, chunk);
		if (k * chunk >= cut)
			in_cut++;
	}
	/* Every bad copy is rewritten (and verified) from leg 1. */
	{
		gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

		do {
			g_usleep(2000);
			leg_stats(0, &ls0);
		} while (ls0.corrected < ls0.read_errors && g_get_monotonic_time() < deadline);
	}

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(ls0.corrected, ls0.read_errors);
	ck_assert_uint_eq(ls0.state, FM_LEG_IN_SYNC);
	ck_assert_msg(ls0.read_errors > 0, "leg 0 never failed a read");
	ck_assert_uint_le(ls0.read_errors, in_cut);
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(ls0.read_errors, in_cut);
	ck_assert_uint_eq(ls1.read_errors, 0);
	ck_assert_uint_eq(st.read_retries, ls0.read_errors);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_uint_eq(ls0.pending + ls1.pending, 0);
	/* Healed: leg 0 reads the whole image fine now. */
	for (uint64_t k = IMG / chunk; k-- > 0;)
		fx_check_read(k * chunk, chunk);
	leg_stats(0, &ls1);
	ck_assert_uint_eq(ls1.read_errors, ls0.read_errors);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Three legs, two of them cut: a read is served by the third, and counts
 * as one read served by another leg however many legs failed it. */
START_TEST(test_read_failover_two_of_three)
{
	const uint64_t chunk = 128 * KiB;
	const uint64_t cut = IMG / 4;
	uint64_t in_cut = 0;
	struct mirror_leg_stats ls[3];
	struct mirror_stats st;

	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST, .max_read_errors = 1000 };
	struct dmio_fault f0 = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .sector = cut / SECTOR, .count = (IMG - cut) / SECTOR };
	struct dmio_fault f1 = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .sector = 2 * cut / SECTOR, .count = (IMG - 2 * cut) / SECTOR };
	const uint64_t both = (IMG - 2 * cut) / chunk;
	gint64 deadline;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(3);
	fx_format(IMG);
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f0, &err), err, "inject");
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f1, &err), err, "inject");
	for (uint64_t off = 0; off < IMG; off += chunk) {
		fx_check_read(off, chunk);
		in_cut += off >= cut;
	}
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(2000);
		for (unsigned i = 0; i < 3; i++)
			leg_stats(i, &ls[i]);
	} while ((ls[0].corrected < in_cut || ls[1].corrected < both) &&
		 g_get_monotonic_time() < deadline);
	stats(&st);
	/* leg 0 fails every read from cut on; leg 1 those from 2 * cut on;
	 * each bad copy is rewritten from the leg that served the read. */
	ck_assert_uint_eq(ls[0].read_errors, in_cut);
	ck_assert_uint_eq(ls[1].read_errors, both);
	ck_assert_uint_eq(ls[2].read_errors, 0);
	ck_assert_uint_eq(ls[0].corrected, in_cut);
	ck_assert_uint_eq(ls[1].corrected, both);
	/* leg 2 served the reads both others failed, and their repairs. */
	ck_assert_uint_eq(ls[2].reads, 2 * both);
	ck_assert_uint_eq(st.read_retries, in_cut);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
}
END_TEST

START_TEST(test_read_all_legs_fail)
{
	struct dmio_fault f = { .flags = DMIO_FAULT_READS, .sector = IMG / 2 / SECTOR,
				.count = IMG / 2 / SECTOR };
	struct mirror_leg_stats ls0, ls1;
	struct mirror_stats st;
	GError *err = NULL;
	uint8_t *buf;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(_i ? MIRROR_READ_BALANCE : MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	/* (Reads fail in the second half of each leg, as on a disk whose
	 * sectors there are unreadable: a leg file truncated behind us would
	 * fail outright, see test_read_leg_shrunk.) */
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject");

	buf = fx_buf(8192);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG / 2 + 64 * KiB, buf, 4096, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG / 2 - 4096, buf, 8192, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG - 512, buf, 512, 0), -EIO);
	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(st.errors, 3);
	ck_assert_uint_eq(ls0.read_errors, 3);
	ck_assert_uint_eq(ls1.read_errors, 3);
	/* Tried on the other leg, but served by none. */
	ck_assert_uint_eq(st.read_retries, 0);
	/* What is left still reads. */
	fx_check_read(0, IMG / 2);
	fx_stop(0);
}
END_TEST

/*
 * A leg file truncated behind the daemon: its first read error past the
 * new end fails the leg at once (it is shorter than its superblock says),
 * the read is served by the other leg, and the array goes on degraded.
 * With no other leg in sync, the shrunk leg stays (its reads fail).
 */
START_TEST(test_read_leg_shrunk)
{
	struct mirror_leg_stats ls0, ls1;
	struct mirror_stats st;
	uint8_t *buf;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	truncate_file(fx.legs[0], fx.data_offset + IMG / 2);
	fx_check_read(IMG / 2 + 64 * KiB, 64 * KiB);    /* leg 0 first: it fails, leg 1 serves */
	leg_stats(0, &ls0);
	ck_assert_uint_eq(ls0.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ls0.read_errors, 1);
	fx_check_read(0, IMG);                          /* all of it from leg 1 */
	leg_stats(1, &ls1);
	ck_assert_uint_eq(ls1.state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(ls1.read_errors, 0);
	stats(&st);
	ck_assert_uint_eq(st.errors, 0);
	/* The last leg in sync shrinks too: it fails that read, and stays. */
	truncate_file(fx.legs[1], fx.data_offset + IMG / 2);
	buf = fx_buf(4096);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG / 2 + 64 * KiB, buf, 4096, 0), -EIO);
	leg_stats(1, &ls1);
	ck_assert_uint_eq(ls1.state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(ls1.read_errors, 1);
	fx_check_read(0, IMG / 2);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase write-errors: leg 1 on a 2 MiB tmpfs */

START_TEST(test_write_error_on_one_leg)
{
	const uint64_t chunk = 1 * MiB;
	const unsigned nw = 6;
	struct mirror_leg_stats ls0, ls1;
	struct mirror_status ms;
	struct mirror_stats st;
	struct fm_sb sb0, sb1, before;
	uint8_t *data;

	FX_SEED();
	fx.legs[0] = fx_path("leg0");
	fx.legs[1] = g_build_filename(tc_tmpfs, "leg1", NULL);
	fx.nlegs = 2;
	fx_format(IMG);
	read_sb(fx.legs[1], &before);
	fx_assemble(MIRROR_READ_FIRST, false);

	/* Leg 1 runs out of space: it fails, the array goes on degraded, and
	 * no write fails. */
	data = fx_buf(nw * chunk);
	fm_rng_fill(&fx.rng, data, nw * chunk);
	for (unsigned k = 0; k < nw; k++) {
		int e = fx_rw(MIRROR_OP_WRITE, k * chunk, data + k * chunk, chunk, 0);

		ck_assert_msg(e == 0, "write %u: %d (a leg failing must not fail a write)", k, e);
	}
	memcpy(fx.model, data, nw * chunk);

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(ls1.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ls0.state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(ls1.write_errors, 1);         /* then it gets no more I/O */
	ck_assert_uint_eq(ls0.write_errors, 0);
	ck_assert_uint_eq(ls0.writes, nw);
	ck_assert_uint_eq(st.errors, 0);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded && !ms.failed);
	ck_assert_uint_eq(ms.nr_in_sync, 1);
	ck_assert_uint_eq(ms.nr_faulty, 1);
	ck_assert_str_eq(ms.state, "degraded");
	/* Already recorded on the remaining leg (before the writes returned). */
	read_sb(fx.legs[0], &sb0);
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_gt(sb0.events, before.events + 1);
	for (unsigned k = 0; k < nw; k++)
		fx_check_read(k * chunk, chunk);

	/* Leg 0 has everything; leg 1's superblock is left as it was. */
	fx_stop(0);
	{
		uint8_t *buf = g_malloc(IMG);

		fm_test_read_file(fx.legs[0], fx.data_offset, buf, IMG);
		fm_assert_bytes_eq(buf, fx.model, IMG, "leg 0 after leg 1 failed writes");
		g_free(buf);
	}
	read_sb(fx.legs[0], &sb0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_msg(sb0.state_flags & FM_SB_CLEAN, "the degraded array was stopped cleanly");
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_lt(sb1.events, sb0.events);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase resilience: failing, re-adding, replacing legs; repair; scrub */

/* Fail a leg, write while degraded, stop: the mount with both legs re-adds
 * the stale one and copies only the regions written meanwhile. */
START_TEST(test_stale_leg_bitmap_recovery)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb0, sb1;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	ck_assert_int_eq(mirror_fail_leg(fx.m, fx.legs[1], &err), -EALREADY);
	g_clear_error(&err);
	ck_assert_int_eq(mirror_fail_leg(fx.m, fx.legs[0], &err), -EBUSY);
	check_error(err, -EBUSY, "fail", fx.legs[0], "last leg", NULL);
	err = NULL;
	read_sb(fx.legs[0], &sb0);
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);

	fx_write_random(3 * REGION + 4 * KiB, 64 * KiB);
	fx_write_random(6 * REGION + REGION / 2, 64 * KiB);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	fx_stop(0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_lt(sb1.events, sb0.events);

	fx_assemble(MIRROR_READ_FIRST, false);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert(!ms.degraded);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.legs[1].state, FM_LEG_IN_SYNC);
	ck_assert(sb1.state_flags & FM_SB_CLEAN);
}
END_TEST

/* Online: fail + remove, write, add back (bitmap), add a new leg (full). */
START_TEST(test_remove_and_add_online)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;
	int r;

	struct mirror_opts o = { .bitmap_delay_ms = 50 };
	gint64 deadline;

	FX_SEED();
	fx_start_written(&o);
	/* The bits of those writes are cleared once idle (not degraded). */
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(10000);
		mirror_get_status(fx.m, &ms);
	} while ((ms.bitmap_set || ms.bitmap_writes < 2) && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ms.bitmap_set, 0);
	ck_assert_uint_ge(ms.bitmap_writes, 2);
	r = mirror_remove_leg(fx.m, fx.legs[1], &err);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "remove", fx.legs[1], "fail it first", NULL);
	err = NULL;
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REMOVED);
	ck_assert_str_eq(ls.path, "");
	ck_assert_int_eq(mirror_remove_leg(fx.m, fx.legs[1], &err), -ENODEV);
	g_clear_error(&err);
	g_usleep(200000);       /* degraded: no bit is cleared now */

	fx_write_random(1 * REGION, 8 * KiB);
	fx_write_random(5 * REGION + 100 * KiB, 300 * KiB);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	g_usleep(200000);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add (re-add)");
	ck_assert_int_eq(mirror_add_leg(fx.m, fx.legs[1], false, &err), -EEXIST);
	g_clear_error(&err);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);

	/* A new leg: formatted, rebuilt wholly, under writes. */
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add (new)");
	fx_write_random(7 * REGION, 64 * KiB);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	ck_assert_uint_eq(ms.resynced_regions, 2 + IMG / REGION);
	fx.nlegs = 3;
	for (unsigned i = 0; i < 3; i++)
		fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	/* All three assemble as one array again. */
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	ck_assert_uint_eq(mirror_nr_legs(fx.m), 3);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

START_TEST(test_replace_leg)
{
	struct mirror_status ms;
	char *old[2];
	GError *err = NULL;
	struct mirror *m = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, IMG);
	fx.legs[2] = fx_path("new");
	admin_ok(mirror_replace_leg(fx.m, fx.legs[1], fx.legs[2], false, &err), err, "replace");
	fx_write_random(2 * REGION, 128 * KiB);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert_uint_eq(ms.nr_slots, 2);
	{
		struct mirror_leg_stats ls;

		ck_assert_uint_eq(mirror_nr_legs(fx.m), 3);
		leg_stats(1, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_EMPTY);
		leg_stats(2, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		ck_assert_str_eq(ls.path, fx.legs[2]);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
	/* The new leg and leg 0 are the array; the old one is out. */
	old[0] = fx.legs[0];
	old[1] = fx.legs[1];
	r = mirror_assemble((const char *const *)old, 2, NULL, &m, &err);
	ck_assert_int_eq(r, -ESTALE);
	check_error(err, r, "assemble", fx.legs[1], "no longer a leg", NULL);
	err = NULL;
	g_free(fx.legs[1]);
	fx.legs[1] = fx.legs[2];
	fx.legs[2] = NULL;
	fx_check_legs(0, IMG);
	fx.m = assemble_ok(fx.legs, 2, MIRROR_READ_BALANCE, false);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

/* Wait until the running sync action has done at least @bytes. */
static void wait_sync_done(uint64_t bytes)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_status ms;

	for (;;) {
		mirror_get_status(fx.m, &ms);
		if (ms.action != MIRROR_SYNC_IDLE && ms.sync_done >= bytes)
			return;
		ck_assert_msg(ms.action != MIRROR_SYNC_IDLE, "the sync action ended early");
		ck_assert_msg(g_get_monotonic_time() < deadline, "sync done %" PRIu64 " after %d s",
			      ms.sync_done, WAIT_SECONDS);
		g_usleep(5000);
	}
}

/* Until the bitmap is clear: the bits of writes age out once the array
 * is idle and not degraded (bitmap_delay_ms). */
static void wait_bitmap_clear(struct mirror_status *ms)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

	do {
		g_usleep(10000);
		mirror_get_status(fx.m, ms);
	} while (ms->bitmap_set && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ms->bitmap_set, 0);
}

/* Add @path while a sync action runs: it joins at once and its recovery
 * is queued (mirror_add_leg() returns 1); @what names the step. */
static void add_queued(const char *path, const char *what)
{
	GError *err = NULL;
	int r = mirror_add_leg(fx.m, path, 0, &err);

	ck_assert_msg(r == 1, "%s: %d %s", what, r, err ? err->message : "");
}

/* Until the recovery pass the assembly started has counted what it
 * copies (ms->sync_total). */
static void wait_recovery_counted(struct mirror_status *ms)
{
	do {
		g_usleep(1000);
		mirror_get_status(fx.m, ms);
	} while (ms->action == MIRROR_SYNC_RECOVER && ms->sync_total == 0);
	ck_assert_int_eq(ms->action, MIRROR_SYNC_RECOVER);
}

/*
 * Interrupted rebuilds (issue 13 item 7), at 2 MiB/s so that a stop lands
 * in the middle of one:
 *   _i == 0: a new leg's full rebuild stopped after 3 MiB resumes at its
 *            checkpoint at the next mount (recovery_offset in its
 *            superblock; the resumed pass copies only the rest), under
 *            writes below and above it; an `add` while it runs is queued
 *            (returns 1) and rebuilt when it ends; all legs end equal.
 *            Before the stop, a superblock update for another reason
 *            (write-mostly) does not carry the rebuild's progress to disk
 *            before the 5 s checkpoint has flushed it.
 *   _i == 1: a `replace` stopped half-way finishes at the next mount and
 *            retires the old leg (its slot freed; it no longer assembles).
 */
START_TEST(test_rebuild_resume)
{
	struct mirror_opts o = { .sync_speed_min = 2 * MiB, .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb;
	GError *err = NULL;
	uint64_t off;
	gint64 t0;
	int r;

	FX_SEED();
	fx_start_written(&o);
	fx.legs[2] = fx_path("new");
	t0 = g_get_monotonic_time();
	if (_i == 0)
		admin_ok(mirror_add_leg(fx.m, fx.legs[2], 0, &err), err, "add");
	else
		admin_ok(mirror_replace_leg(fx.m, fx.legs[1], fx.legs[2], 0, &err), err,
			 "replace");
	wait_sync_done(3 * MiB);
	if (_i == 0) {
		admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err,
			 "write-mostly");
		read_sb(fx.legs[2], &sb);
		ck_assert(sb.legs[1].flags & FM_SB_LEG_WRITE_MOSTLY);   /* it was written */
		if (g_get_monotonic_time() - t0 < 4500 * 1000)
			ck_assert_msg(sb.recovery_offset == 0, "recovery_offset %" PRIu64
				      " on disk before the first checkpoint's flush",
				      sb.recovery_offset);
		admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], false, &err), err,
			 "write-mostly off");
	}
	fx_stop(0);

	/* The checkpoint: a region boundary past what was waited for. */
	read_sb(fx.legs[2], &sb);
	ck_assert_uint_eq(sb.legs[2].state, FM_LEG_REBUILDING);
	off = sb.recovery_offset;
	ck_assert_msg(off >= 2 * MiB && off < IMG && off % REGION == 0,
		      "recovery_offset %" PRIu64, off);
	if (_i == 1) {
		ck_assert(sb.legs[2].flags & FM_SB_LEG_REPLACEMENT);
		ck_assert_uint_eq(FM_SB_LEG_REPLACED_SLOT(sb.legs[2].flags), 1);
	}

	fx.nlegs = 3;
	fx_assemble_opts(&o);
	wait_recovery_counted(&ms);
	ck_assert_msg(ms.sync_total == IMG - off, "resumed pass copies %" PRIu64
		      " bytes, the rest is %" PRIu64, ms.sync_total, (uint64_t)(IMG - off));
	fx_write_random(0, 64 * KiB);                   /* below the checkpoint */
	fx_write_random(IMG - 128 * KiB, 64 * KiB);     /* above it */
	if (_i == 0) {
		fx.legs[3] = fx_path("queued");
		add_queued(fx.legs[3], "add during a recovery");
		leg_stats(3, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
		fx_write_random(IMG / 2, 64 * KiB);
		fx.nlegs = 4;
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, _i == 0 ? 4 : 2);
	ck_assert_uint_eq(ms.nr_slots, _i == 0 ? 4 : 2);
	if (_i == 1) {
		leg_stats(1, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_EMPTY);
		leg_stats(2, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		read_sb(fx.legs[2], &sb);
		ck_assert_uint_eq(sb.legs[2].flags, 0);
		ck_assert_uint_eq(sb.legs[1].state, FM_LEG_EMPTY);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
	if (_i == 1) {
		char *legs[2] = { fx.legs[0], fx.legs[1] };
		struct mirror *m = NULL;

		r = mirror_assemble((const char *const *)legs, 2, NULL, &m, &err);
		ck_assert_int_eq(r, -ESTALE);
		g_clear_error(&err);
		g_free(fx.legs[1]);
		fx.legs[1] = fx.legs[2];
		fx.legs[2] = NULL;
		fx.nlegs = 2;
	}
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * The end of a rebuild flushes the legs before the rebuilt leg's
 * superblock says in sync: the copies since the last checkpoint (57c5683
 * flushes before each) and the table, map and bitmap written to it at the
 * end were written without FUA, and a power loss could revert them under
 * a superblock calling the leg current.  Here every flush of the new leg
 * fails (injected as its rebuild begins; at 8 MiB/s the pass ends before
 * its first checkpoint at 5 s): the flush at the end fails the leg, which
 * is then never recorded in sync, in its own superblock or the others'.
 * Without that flush no flush reached the leg, and it was called in sync.
 */
START_TEST(test_rebuild_end_flush)
{
	struct mirror_opts o = { .sync_speed_min = 8 * MiB, .sync_speed_max = 8 * MiB,
				 .event_fn = ev_handler };
	struct dmio_fault f = { .flags = DMIO_FAULT_FLUSHES };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	fx.legs[2] = fx_path("new");
	ev_reset();
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], 0, &err), err, "add");
	admin_ok(mirror_inject(fx.m, fx.legs[2], &f, &err), err, "inject");
	wait_sync_idle(&ms);
	/* The flush failed it (EIO), before the pass ended. */
	ev_expect((const char *[]){ "Add:2", "DegradedArray", "RebuildStarted", "Fail:2",
				    "RebuildFinished" }, 5, "add, rebuild");
	ck_assert_int_eq(ev_at(3)->err, EIO);
	leg_stats(2, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	read_sb(fx.legs[2], &sb);
	ck_assert_uint_eq(sb.legs[2].state, FM_LEG_REBUILDING);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert_uint_eq(sb.legs[2].state, FM_LEG_FAULTY);
	}
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * A re-added leg's recovery from the bitmap, stopped half-way at 2 MiB/s,
 * goes on from the bitmap at the next mount (md resumes a bitmap-based
 * recovery the same way): its superblock says how it was being recovered
 * (FM_SB_RECOVERY_BITMAP) and how far (recovery_offset); the resumed pass
 * copies only the marked regions at or past the checkpoint, not the whole
 * rest of the image, and every leg ends equal to what was written, writes
 * during the resumed pass included.  _i == 1: the resumed recovery is cut
 * by a crash right after a write into region 5 (not marked); the start
 * after it copies every marked region and region 5 to every other leg
 * (unclean), and leg 1 still ends equal.
 */
START_TEST(test_bitmap_recovery_resume)
{
	static const unsigned marked[] = { 1, 2, 4, 6, 7 };
	struct mirror_opts o = { .bitmap_delay_ms = 50, .sync_speed_min = 2 * MiB,
				 .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	uint64_t off, rest = 0;
	struct fm_sb sb;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	wait_bitmap_clear(&ms);         /* the bits of the first writes */
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	for (unsigned k = 0; k < G_N_ELEMENTS(marked); k++)
		fx_write_random(marked[k] * REGION + 8 * KiB * k, 64 * KiB);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, G_N_ELEMENTS(marked));
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], 0, &err), err, "re-add");
	wait_sync_done(2 * MiB);
	fx_stop(0);

	read_sb(fx.legs[1], &sb);
	ck_assert_uint_eq(sb.legs[1].state, FM_LEG_REBUILDING);
	ck_assert_uint_eq(sb.recovery_flags, FM_SB_RECOVERY_BITMAP);
	off = sb.recovery_offset;
	ck_assert_msg(off >= 2 * REGION && off < IMG && off % REGION == 0,
		      "recovery_offset %" PRIu64, off);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.recovery_flags, 0);        /* an in-sync leg's */
	for (unsigned k = 0; k < G_N_ELEMENTS(marked); k++)
		if ((marked[k] + 1) * REGION > off)
			rest += REGION;
	ck_assert_uint_gt(rest, 0);
	if (_i == 1) {
		uint8_t *data = fx_buf(4 * KiB);

		fm_rng_fill(&fx.rng, data, 4 * KiB);
		crash_after_write(&o, data, 5 * REGION + 4 * KiB, 4 * KiB);
		memcpy(fx.model + 5 * REGION + 4 * KiB, data, 4 * KiB);
		rest = (G_N_ELEMENTS(marked) + 1) * REGION;
	}

	fx_assemble_opts(&o);
	wait_recovery_counted(&ms);
	ck_assert_msg(ms.sync_total == rest, "resumed pass copies %" PRIu64 " bytes; the "
		      "marked regions past the checkpoint at %" PRIu64 " are %" PRIu64
		      " (the whole rest %" PRIu64 ")", ms.sync_total, off, rest,
		      (uint64_t)(IMG - off));
	fx_write_random(64 * KiB, 64 * KiB);            /* below the checkpoint */
	fx_write_random(IMG - 128 * KiB, 64 * KiB);     /* above it */
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_check_read(0, IMG);
	fx_stop(0);
	read_sb(fx.legs[1], &sb);
	ck_assert_uint_eq(sb.legs[1].state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(sb.recovery_flags, 0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * A leg rebuilt from the bitmap must hold the bitmap's bits too.  Legs a,
 * w and x; x and then w fail and leave; a write into region 5 sets its bit
 * (on a only, the one writable leg); w is re-added and recovered from the
 * bitmap, then the array stops with x still out (degraded: no bit is
 * cleared).  A start with w and x alone (a is gone, --degraded) reads the
 * bitmap of the in-sync legs given, w's: it must mark region 5, or x's
 * recovery from it skips the region and x is called in sync without the
 * write.
 */
START_TEST(test_rebuilt_leg_gets_bitmap)
{
	struct mirror_opts o = { .bitmap_delay_ms = 50 };
	struct mirror_opts deg = { .degraded = true };
	struct mirror_status ms;
	GError *err = NULL;
	char *a;

	FX_SEED();
	fx_name_legs(3);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	wait_bitmap_clear(&ms);         /* the bits of the first writes */
	admin_ok(mirror_fail_leg(fx.m, fx.legs[2], &err), err, "fail x");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[2], &err), err, "remove x");
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail w");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove w");
	fx_write_random(5 * REGION + 12 * KiB, 16 * KiB);
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], 0, &err), err, "re-add w");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, 1);      /* from the bitmap */
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	fx_stop(0);

	a = fx.legs[0];                 /* a is gone */
	fx.legs[0] = fx.legs[1];
	fx.legs[1] = fx.legs[2];
	fx.legs[2] = a;
	fx.nlegs = 2;
	fx_assemble_opts(&deg);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);            /* w and x */
	ck_assert_uint_eq(ms.resynced_regions, 1);      /* region 5 */
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * Two legs rebuilding at once, across a stop, and a slot reused during
 * their pass:
 *   - `add new` (its rebuild runs) and `add new2` (queued), stopped after
 *     1 MiB: both are rebuilding in every table.  Assembly takes them as
 *     two rebuilding legs, not as the two sides of a split brain (each
 *     one's table lists the other as not in sync; neither ever served the
 *     image), and one pass recovers both;
 *   - during that pass new2 is failed and removed, and `other` is added:
 *     it takes new2's slot, and its rebuild is queued (the pass is still
 *     running for new).  The running pass must not count it as the leg it
 *     began with: `other` missed what the pass had copied to new2, so only
 *     its own pass may call it in sync.  Every leg ends equal to what was
 *     written.
 */
START_TEST(test_two_rebuilding_legs)
{
	struct mirror_opts o = { .sync_speed_min = 2 * MiB, .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	fx.legs[2] = fx_path("new");
	fx.legs[3] = fx_path("new2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], 0, &err), err, "add");
	add_queued(fx.legs[3], "add while a rebuild runs");
	wait_sync_done(1 * MiB);
	fx_stop(0);

	fx.nlegs = 4;
	fx_assemble_opts(&o);
	leg_stats(2, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	leg_stats(3, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	wait_sync_done(2 * MiB);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[3], &err), err, "fail new2");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[3], &err), err, "remove new2");
	fx.legs[4] = fx_path("other");
	add_queued(fx.legs[4], "add during the pass");
	leg_stats(3, &ls);
	ck_assert_str_eq(ls.path, fx.legs[4]);          /* new2's slot */
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	fx_write_random(IMG / 2, 64 * KiB);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 4);
	g_free(fx.legs[3]);
	fx.legs[3] = fx.legs[4];
	fx.legs[4] = NULL;
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* An add during a scrub is queued behind it; cancelling the scrub starts
 * the queued rebuild at once (a cancel is not a stop of the mirror). */
START_TEST(test_add_queued_behind_scrub)
{
	struct mirror_opts o = { .sync_speed_min = 2 * MiB, .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	fx.legs[2] = fx_path("new");
	add_queued(fx.legs[2], "add during a scrub");
	leg_stats(2, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	mirror_get_status(fx.m, &ms);
	ck_assert_int_eq(ms.action, MIRROR_SYNC_CHECK);
	admin_ok(mirror_scrub_cancel(fx.m, &err), err, "scrub cancel");
	fx_write_random(3 * REGION, 64 * KiB);
	wait_sync_idle(&ms);
	ck_assert_int_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	fx.nlegs = 3;
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * A leg added while a scrub's reads are in flight (leg 0's delayed): the
 * scrub compares what it read, one copy per leg it had when it began.  It
 * used to take the new leg count there, which moved its per-leg records
 * past its buffer (ASan: an overflow; otherwise garbage, every copy
 * "not read", EIO), and the pass took its leg count afresh in every loop
 * (TSan: a race with the add).
 */
START_TEST(test_add_during_scrub_read)
{
	struct mirror_opts o = { .event_fn = ev_handler };
	struct dmio_fault f = { .flags = DMIO_FAULT_DELAY_READS, .delay_ms = 1000 };
	const struct ev_rec *end = NULL;
	struct mirror_leg_stats ls;
	struct mirror_status ms;
	GError *err = NULL;
	uint64_t reads1;
	gint64 deadline;

	FX_SEED();
	fx_start_written(&o);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	ev_reset();
	leg_stats(1, &ls);
	reads1 = ls.reads;
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	/* Its first reads are in flight: leg 1's are done, leg 0's wait. */
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(5000);
		leg_stats(1, &ls);
	} while (ls.reads == reads1 && g_get_monotonic_time() < deadline);
	ck_assert_uint_gt(ls.reads, reads1);
	fx.legs[2] = fx_path("new");
	add_queued(fx.legs[2], "add during a scrub");
	admin_ok(mirror_inject(fx.m, fx.legs[0], NULL, &err), err, "clear");
	wait_sync_idle(&ms);
	ck_assert_int_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	pthread_mutex_lock(&evs.lock);
	for (unsigned i = 0; i < evs.n; i++)
		if (evs.ev[i].type == FM_EVENT_SCRUB_FINISHED)
			end = &evs.ev[i];
	pthread_mutex_unlock(&evs.lock);
	ck_assert_msg(end, "no ScrubFinished event");
	ck_assert_msg(end->err == 0 && end->value == 0,
		      "the scrub ended with error %d, %llu mismatched sectors", end->err,
		      (unsigned long long)end->value);
	fx.nlegs = 3;
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* A read error: the read is served by the other leg, the bad copy is
 * rewritten and verified; the leg stays in sync. */
START_TEST(test_read_error_repaired)
{
	struct dmio_fault f = {
		.flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
		.sector = (1 * MiB + 8 * KiB) / SECTOR,
		.count = 8,
	};
	struct mirror_leg_stats ls;
	struct mirror_stats st;
	gint64 deadline;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(1 * MiB, 64 * KiB);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	leg_stats(0, &ls);
	ck_assert(ls.fault_set);
	ck_assert_uint_eq(ls.fault.sector, f.sector);
	fx_check_read(1 * MiB, 64 * KiB);
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(5000);
		leg_stats(0, &ls);
	} while (ls.corrected == 0 && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ls.corrected, 1);
	ck_assert_uint_eq(ls.read_errors, 1);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	stats(&st);
	ck_assert_uint_eq(st.read_retries, 1);
	ck_assert_uint_eq(st.errors, 0);
	/* Healed: leg 0 serves the read itself now. */
	fx_check_read(1 * MiB, 64 * KiB);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.read_errors, 1);
	admin_ok(mirror_inject(fx.m, fx.legs[0], NULL, &err), err, "inject clear");
	leg_stats(0, &ls);
	ck_assert(!ls.fault_set);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * _i == 0: blocks that heal when rewritten: each read fails once and is
 * repaired, but every read of the leg fails (a rate far above
 * max_read_error_ppm): the leg is failed at the max_read_errors-th
 * corrected error.
 * _i == 1: blocks that stay bad: the re-reads after the rewrites fail too,
 * and count as read errors as well.
 */
START_TEST(test_read_errors_fail_leg)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST, .max_read_errors = 3 };
	struct dmio_fault f = { .flags = DMIO_FAULT_READS, .sector = 0, .count = IMG / SECTOR };

	struct mirror_leg_stats ls;
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	if (_i == 0)
		f.flags |= DMIO_FAULT_HEAL_ON_WRITE;
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	for (unsigned k = 0; k < 8; k++) {
		/* Healing blocks: the repair of one read must end before the
		 * next read, and after the max_read_errors-th correction the
		 * worker's failing of the leg too (else the next read's error
		 * is counted before the leg is failed).  Under valgrind a
		 * repair can take seconds. */
		gint64 deadline = g_get_monotonic_time() +
				  (_i == 0 ? WAIT_SECONDS * G_TIME_SPAN_SECOND : 100 * 1000);

		fx_check_read(k * REGION, 4 * KiB);
		/* let the repair of this one finish */
		do {
			leg_stats(0, &ls);
			if (ls.state != FM_LEG_IN_SYNC ||
			    (ls.corrected == ls.read_errors && ls.corrected < o.max_read_errors))
				break;
			g_usleep(1000);
		} while (g_get_monotonic_time() < deadline);
	}
	fx_wait_all();
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	if (_i == 0) {
		ck_assert_uint_eq(ls.read_errors, 3);
		ck_assert_uint_eq(ls.corrected, 3);
	} else {
		/* A read in flight when the leg failed may add one. */
		ck_assert_uint_ge(ls.read_errors, 3);
		ck_assert_uint_le(ls.read_errors, 4);
		ck_assert_uint_eq(ls.corrected, 0);
	}
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

/* Wait until leg 0's repairs are over: read_errors - corrected == @want
 * (the errors that stay uncorrected), or the leg is no longer in sync. */
static void wait_repairs(uint64_t want)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_leg_stats ls;

	do {
		leg_stats(0, &ls);
		if (ls.state != FM_LEG_IN_SYNC || ls.read_errors - ls.corrected == want)
			return;
		g_usleep(1000);
	} while (g_get_monotonic_time() < deadline);
	ck_abort_msg("leg 0: %" PRIu64 " read errors, %" PRIu64 " corrected, expected %" PRIu64
		     " uncorrected", ls.read_errors, ls.corrected, want);
}

/* Wait until leg 0's error counts have not changed for 100 ms. */
static void wait_quiet(void)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_leg_stats a, b;

	leg_stats(0, &a);
	for (;;) {
		g_usleep(100 * 1000);
		leg_stats(0, &b);
		if (a.read_errors == b.read_errors && a.corrected == b.corrected)
			return;
		ck_assert_msg(g_get_monotonic_time() < deadline, "leg 0's repairs never end");
		a = b;
	}
}

/*
 * The error rate, not a count, fails a leg whose errors are corrected
 * (issue 13 item 7: 1% transient read errors failed a leg after 21 errors,
 * every rewrite having verified).  Policy "first": leg 0 serves every read.
 *   _i == 0: 1% of leg 0's reads fail at random (transient: the rewrite
 *            and its re-read succeed, but for 1% of the re-reads): 8192
 *            reads, some 80 errors, four times max_read_errors, nearly
 *            all corrected: the leg stays in sync.
 *   _i == 1: reads over the image, but 10 blocks stay unreadable (the re-read
 *            after each rewrite fails too): the leg is failed at
 *            max_read_errors uncorrected errors, less than 1% of its reads.
 *   _i == 2: the counts decay: max_read_errors 4, halved every 1 s
 *            (3 s under valgrind); blocks that stay bad (2 uncorrected
 *            errors per read: the read and the re-read); two such reads
 *            1.25 half-lives apart never reach 4, two in a row do.
 */
START_TEST(test_read_error_rate)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST };
	struct dmio_fault f = { .flags = DMIO_FAULT_READS, .sector = 0, .count = IMG_SECTORS };
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	/* Half-life of case 2: the reads "in a row" (a read and its repair)
	 * must take well under it, which under valgrind they do not at 200 ms,
	 * nor under ASan beside another test (a CI run failed so). */
	unsigned decay_ms = fm_test_under_valgrind() ? 3000 : 1000;

	if (_i == 2) {
		o.max_read_errors = 4;
		o.read_error_decay_ms = decay_ms;
	}
	fx_start_written(&o);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	if (_i == 0) {
		f.rate_ppm = 10000;
		f.seed = fm_rng_next(&fx.rng);
	} else {
		f.sector = 1 * MiB / SECTOR;
		f.count = 40 * KiB / SECTOR;
	}
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");

	if (_i == 2) {
		fx_check_read(1 * MiB, 4 * KiB);
		wait_repairs(2);
		g_usleep(decay_ms * 1250);
		fx_check_read(1 * MiB + 4 * KiB, 4 * KiB);
		wait_repairs(4);
		g_usleep(decay_ms * 1250);
		fx_check_read(1 * MiB + 8 * KiB, 4 * KiB);
		wait_repairs(6);
		leg_stats(0, &ls);
		ck_assert_msg(ls.state == FM_LEG_IN_SYNC, "decayed errors failed the leg");
		fx_check_read(1 * MiB + 12 * KiB, 4 * KiB);
		wait_repairs(8);
		leg_stats(0, &ls);
		ck_assert_msg(ls.state == FM_LEG_FAULTY, "errors in a row did not fail the leg");
		fx_stop(0);
		return;
	}
	for (unsigned k = 0; k < 8192; k++)
		fx_check_read((uint64_t)(k * 4 * KiB) % IMG, 4 * KiB);
	fx_wait_all();
	if (_i == 0) {
		/* Some re-reads failed too (1% of them): those errors stay
		 * uncorrected, a few. */
		wait_quiet();
		leg_stats(0, &ls);
		ck_assert_msg(ls.corrected > 40, "only %" PRIu64 " corrected of %" PRIu64
			      " read errors", ls.corrected, ls.read_errors);
		ck_assert_msg(ls.state == FM_LEG_IN_SYNC,
			      "leg 0 failed with %" PRIu64 " corrected errors in %" PRIu64 " reads",
			      ls.corrected, ls.reads);
		ck_assert_uint_lt(ls.read_errors - ls.corrected, 20);
	} else {
		leg_stats(0, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
		ck_assert_uint_eq(ls.corrected, 0);
		ck_assert_uint_ge(ls.read_errors, 20);
		ck_assert_uint_le(ls.read_errors, 21);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

static void corrupt_leg(const char *path, uint64_t off)
{
	uint8_t b[4096];

	fm_test_read_file(path, fx.data_offset + off, b, sizeof(b));
	for (unsigned k = 0; k < sizeof(b); k += 512)
		b[k] ^= 0x5a;
	fm_test_write_file(path, fx.data_offset + off, b, sizeof(b));
}

START_TEST(test_scrub_check_and_repair)
{
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	fx_wait_all();
	corrupt_leg(fx.legs[1], 12 * KiB);
	corrupt_leg(fx.legs[1], 5 * REGION + 64 * KiB);
	corrupt_leg(fx.legs[1], IMG - 4 * KiB);

	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	ck_assert_int_eq(mirror_scrub(fx.m, false, &err), -EBUSY);
	g_clear_error(&err);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_CHECK);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	ck_assert_uint_eq(ms.sync_done, IMG);
	/* check does not rewrite */
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub again");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);

	admin_ok(mirror_scrub(fx.m, true, &err), err, "scrub --repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_REPAIR);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub after repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 0);
	ck_assert_int_eq(mirror_scrub_cancel(fx.m, &err), -ENOENT);
	g_clear_error(&err);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Every leg failing: EIO, never stale data. */
START_TEST(test_all_legs_fail)
{
	struct dmio_fault f = { .flags = DMIO_FAULT_WRITES | DMIO_FAULT_READS };
	struct mirror_status ms;
	uint8_t *buf;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	buf = fx_buf(64 * KiB);
	for (unsigned i = 0; i < 2; i++)
		admin_ok(mirror_inject(fx.m, fx.legs[i], &f, &err), err, "inject");
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 0, buf, 64 * KiB, 0), -EIO);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.failed);
	ck_assert_str_eq(ms.state, "failed");
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 0, buf, 64 * KiB, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 2 * MiB, buf, 4 * KiB, 0), -EIO);
	ck_assert_int_eq(mirror_flush(fx.m), -EIO);
	fx_stop(-EIO);
}
END_TEST

/*
 * After a crash, only the regions marked in the bitmap are copied: a
 * difference planted in an unmarked region survives the resync, one in a
 * marked region is gone.
 */
START_TEST(test_crash_resync_bitmap_only)
{
	struct mirror_status ms;
	uint8_t *data, b0[4096], b1[4096];

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	data = fx_buf(64 * KiB);
	fm_rng_fill(&fx.rng, data, 64 * KiB);
	crash_after_write(&(struct mirror_opts){ .bitmap_delay_ms = 60000 }, data, 3 * REGION,
			  64 * KiB);
	memcpy(fx.model + 3 * REGION, data, 64 * KiB);
	/* Plant differences on leg 1: in region 3 (marked) and region 6 (not). */
	corrupt_leg(fx.legs[1], 3 * REGION + 128 * KiB);
	corrupt_leg(fx.legs[1], 6 * REGION);

	fx_assemble(MIRROR_READ_FIRST, false);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_uint_eq(ms.resynced_regions, 1);
	/* Without checksums too, the resync compares the copies block by
	 * block and writes only the block that differs (not the region). */
	ck_assert_uint_eq(ms.sync_read_bytes, 2 * REGION);
	ck_assert_uint_eq(ms.sync_write_bytes, 4096);
	fx_stop(0);
	fx_check_legs(0, 6 * REGION);
	fm_test_read_file(fx.legs[0], fx.data_offset + 6 * REGION, b0, sizeof(b0));
	fm_test_read_file(fx.legs[1], fx.data_offset + 6 * REGION, b1, sizeof(b1));
	ck_assert_msg(memcmp(b0, b1, sizeof(b0)), "region 6 was copied though not marked");
}
END_TEST

/*
 * The resync's source leg fails while a region the crash left unsynced is
 * still to do (the pass is held back by its speed limit, 1 s before its
 * first compare).  A read there goes to the next in-sync leg (it failed
 * with EIO: it was bound to the failed source), the pass finishes, and a
 * block read before it reads the same after it: the pass kept the copy
 * readers were given.  _i == 0: 3 legs, leg 2's planted difference in the
 * region is repaired from leg 1; _i == 1: 2 legs, nothing left to copy
 * to; _i == 2: 3 legs, leg 1 write-mostly, so reads go to leg 2, and leg
 * 1's planted difference is repaired from leg 2 (the pass took the first
 * leg that read, leg 1, as the copy to keep: the block read back changed).
 */
START_TEST(test_sync_src_fails_during_resync)
{
	unsigned nl = _i == 1 ? 2 : 3, planted = _i == 2 ? 1 : 2;
	const uint64_t x = 3 * REGION + 512 * KiB;
	struct mirror_status ms;
	GError *err = NULL;
	uint8_t *data, *buf, *before, b1[4096], b2[4096];
	int r;

	FX_SEED();
	fx_name_legs(nl);
	fx_format_regions();
	data = fx_buf(64 * KiB);
	fm_rng_fill(&fx.rng, data, 64 * KiB);
	crash_after_write(&(struct mirror_opts){ .bitmap_delay_ms = 60000 }, data, 3 * REGION,
			  64 * KiB);
	if (nl == 3)
		corrupt_leg(fx.legs[planted], x);
	fx_assemble_opts(&(struct mirror_opts){ .read_policy = MIRROR_READ_FIRST,
						.sync_speed_min = 256 * KiB,
						.sync_speed_max = 256 * KiB });
	if (_i == 2)
		admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err,
			 "write-mostly");
	admin_ok(mirror_fail_leg(fx.m, fx.legs[0], &err), err, "fail leg 0");
	buf = fx_buf(4096);
	r = fx_rw(MIRROR_OP_READ, 3 * REGION, buf, 4096, 0);
	ck_assert_msg(r == 0, "a read of the unsynced region after its source failed: %d", r);
	ck_assert_msg(memcmp(buf, data, 4096) == 0, "that read returned other data");
	before = fx_buf(4096);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, x, before, 4096, 0), 0);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, x, buf, 4096, 0), 0);
	ck_assert_msg(memcmp(buf, before, 4096) == 0,
		      "a block of the unsynced region read other data after the resync");
	fx_stop(0);
	if (nl == 2)
		return;
	fm_test_read_file(fx.legs[1], fx.data_offset + x, b1, sizeof(b1));
	fm_test_read_file(fx.legs[2], fx.data_offset + x, b2, sizeof(b2));
	ck_assert_msg(memcmp(b1, b2, sizeof(b1)) == 0,
		      "legs 1 and 2 still differ where the crash left them unsynced");
}
END_TEST

/*----------------------------------------------------------------*/
/* Event names are user interface (monitor --program's argument): every
 * type has its own, and a type outside the enum is "Unknown". */
START_TEST(test_event_names)
{
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

	for (int t = 0; t < FM_EVENT__MAX; t++) {
		const char *n = fm_event_name((enum fm_event_type)t);

		ck_assert_msg(strcmp(n, "Unknown") != 0, "event %d has no name", t);
		ck_assert_msg(g_hash_table_add(seen, (gpointer)n), "event %d: name %s twice", t, n);
	}
	ck_assert_str_eq(fm_event_name(FM_EVENT_LEG_FAILED), "Fail");
	ck_assert_str_eq(fm_event_name(FM_EVENT_LEG_RECONNECTED), "LegReconnected");
	ck_assert_str_eq(fm_event_name(FM_EVENT__MAX), "Unknown");
	ck_assert_str_eq(fm_event_name((enum fm_event_type)-1), "Unknown");
}
END_TEST

START_TEST(test_events_fail_add_rebuild)
{
	struct mirror_opts o = { .bitmap_delay_ms = 50, .event_fn = ev_handler };
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	ev_reset();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	ev_expect((const char *[]){ "NewArray" }, 1, "assembly");
	ck_assert_uint_eq(ev_at(0)->value, 2);          /* legs in sync */
	fx_write_random(0, IMG);
	/* Their bits are cleared once idle: the re-add below copies only what
	 * is written while the leg is out. */
	wait_bitmap_clear(&ms);

	ev_reset();
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	ev_expect((const char *[]){ "Fail:1", "DegradedArray" }, 2, "fail");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	ck_assert(ev_at(0)->uuid_set);
	ck_assert_int_eq(ev_at(0)->err, 0);             /* by the administrator */
	ck_assert_uint_eq(ev_at(1)->value, 1);

	ev_reset();
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	ev_expect((const char *[]){ "Remove:1" }, 1, "remove");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	fx_write_random(3 * REGION, 64 * KiB);

	ev_reset();
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "re-add");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ev_expect((const char *[]){ "Add:1", "RebuildStarted", "RebuildFinished",
				    "ArrayOptimal" }, 4, "re-add");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	ck_assert_uint_eq(ev_at(0)->value, 0);          /* from the bitmap */
	ck_assert_uint_eq(ev_at(1)->value, REGION);     /* one region written meanwhile */
	ck_assert_uint_eq(ev_at(2)->value, REGION);
	ck_assert_uint_eq(ev_at(3)->value, 2);

	/* An I/O error fails a leg with its cause. */
	ev_reset();
	{
		struct dmio_fault f = { .flags = DMIO_FAULT_WRITES };
		uint8_t *buf = fx_buf(4096);

		admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
		memset(buf, 0x5a, 4096);
		/* Held until the failure is recorded; the other leg has it. */
		ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 0, buf, 4096, 0), 0);
		memcpy(fx.model, buf, 4096);
	}
	ev_expect((const char *[]){ "Fail:0", "DegradedArray" }, 2, "write error");
	ck_assert_int_eq(ev_at(0)->err, EIO);
	ck_assert_uint_eq(ev_at(1)->value, 1);

	/* A new leg in the failed one's place: a full rebuild. */
	ev_reset();
	admin_ok(mirror_remove_leg(fx.m, fx.legs[0], &err), err, "remove 0");
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add new");
	wait_sync_idle(&ms);
	ev_expect((const char *[]){ "Remove:0", "Add:0", "RebuildStarted", "RebuildFinished",
				    "ArrayOptimal" }, 5, "new leg");
	ck_assert_str_eq(ev_at(1)->path, fx.legs[2]);
	ck_assert_uint_eq(ev_at(1)->value, 1);          /* wholly */
	ck_assert_uint_eq(ev_at(2)->value, IMG);

	ev_reset();
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	wait_sync_idle(&ms);
	ev_expect((const char *[]){ "ScrubStarted", "ScrubFinished" }, 2, "scrub");
	ck_assert_uint_eq(ev_at(0)->value, 0);          /* check, not repair */
	ck_assert_uint_eq(ev_at(1)->value, 0);          /* no mismatch */

	ev_reset();
	fx_stop(0);
	ev_expect((const char *[]){ "Stopped" }, 1, "stop");
	ck_assert_uint_eq(ev_at(0)->value, 1);          /* clean */
}
END_TEST

/* A start after a crash with one leg left out: what the start reports. */
START_TEST(test_events_degraded_unclean_start)
{
	struct mirror_opts o = { .event_fn = ev_handler, .defer_in_use = true };
	struct mirror_status ms;
	struct fm_sb sb;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&(struct mirror_opts){ 0 });
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	fx_stop(0);
	/* Not stopped cleanly: the CLEAN flag off, one bit set. */
	read_sb(fx.legs[0], &sb);
	sb.state_flags &= ~FM_SB_CLEAN;
	write_sb(fx.legs[0], &sb);

	ev_reset();
	fx.nlegs = 1;
	fx_assemble_opts(&o);
	ev_expect((const char *[]){ "NewArray", "UncleanStart", "DeviceDisappeared:1",
				    "DegradedArray" }, 4, "degraded start");
	ck_assert_uint_eq(ev_at(0)->value, 1);
	ck_assert_str_eq(ev_at(2)->path, "");           /* not given: no path */
	ck_assert(ev_at(2)->uuid_set);
	admin_ok(mirror_mark_in_use(fx.m, &err), err, "mark in use");
	wait_sync_idle(&ms);
	fx.nlegs = 2;
	ev_reset();
	fx_stop(0);
	ev_expect((const char *[]){ "Stopped" }, 1, "stop");
}
END_TEST

/* Setting and clearing write-mostly reports WriteMostly (value 1/0) for
 * the leg; asking for what is already set reports nothing. */
START_TEST(test_events_write_mostly)
{
	struct mirror_opts o = { .event_fn = ev_handler };
	static const char *const want[] = { "WriteMostly:1", "WriteMostly:1" };
	GError *err = NULL;

	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble_opts(&o);
	ev_reset();
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err, "on");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err, "on again");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], false, &err), err, "off");
	ev_expect(want, G_N_ELEMENTS(want), "write-mostly on, on, off");
	ck_assert_uint_eq(ev_at(0)->value, 1);
	ck_assert_uint_eq(ev_at(1)->value, 0);
	ck_assert(ev_at(0)->uuid_set);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

/*----------------------------------------------------------------*/
/* Bad blocks (FM_SB_FEAT_BAD_BLOCKS) */

/*
 * A leg that cannot write one block stays in service: the block goes to
 * its bad-block list (event BadBlock, on disk before the write returns),
 * reads of it come from the other leg (round robin would give leg 1's
 * stale copy every other read), a write that fails there again changes
 * nothing, the list survives a restart, and a write that succeeds clears
 * it.  A leg that fails more blocks than MIRROR_BAD_MAX_LEG fails.
 */
START_TEST(test_bad_block_keeps_leg)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_ROUND_ROBIN, .event_fn = ev_handler };
	const uint64_t off = REGION + 8 * KiB;
	struct dmio_fault f = { .flags = DMIO_FAULT_WRITES, .sector = off / SECTOR, .count = 8 };
	struct mirror_leg_stats ls;
	struct mirror_status ms;
	struct fm_sb sb;
	uint64_t reads1, reads_of[2];
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble_opts(&o);
	fx_write_random(0, 4 * REGION);
	ev_reset();
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject");
	fx_write_random(REGION, 64 * KiB);      /* 16 blocks; one fails on leg 1 */
	ev_expect((const char *[]){ "BadBlock:1" }, 1, "one block unwritable");
	ck_assert_uint_eq(ev_at(0)->value, off);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(ls.bad_blocks, 1);
	ck_assert_uint_eq(ls.write_errors, 0);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert(sb.features & FM_SB_FEAT_BAD_BLOCKS);
		ck_assert_uint_eq(sb.nr_bad, 1);
		ck_assert_uint_eq(sb.bad[0], FM_SB_BAD_MAKE(1, off / 4096, 1));
	}
	leg_stats(1, &ls);
	reads1 = ls.reads;
	for (unsigned k = 0; k < 8; k++)
		fx_check_read(off, 4096);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.reads, reads1);
	fx_check_read(0, 4 * REGION);
	/* Failing again: still one bad block, still in sync. */
	ev_reset();
	fx_write_random(off - 4096, 3 * 4096);
	ev_expect((const char *[]){ "BadBlock:1" }, 1, "the same block again");
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.bad_blocks, 1);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	/* A scrub does not compare the stale copy: no mismatch counted. */
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 0);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.read_errors, 0);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_stop(0);

	/* After a restart (the fault is gone with the open leg). */
	read_sb(fx.legs[1], &sb);
	ck_assert_uint_eq(sb.nr_bad, 1);
	ev_reset();
	fx_assemble_opts(&o);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.bad_blocks, 1);
	for (unsigned k = 0; k < 4; k++)
		fx_check_read(off, 4096);
	fx_write_random(off, 4096);             /* goes through now: cleared */
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.bad_blocks, 0);
	fx_check_read(0, 4 * REGION);

	/* A bad block on each leg, 16 KiB apart: no leg can serve a read
	 * across both whole, yet every block has a good copy; it is read in
	 * pieces, each from a leg whose copy is good (not EIO). */
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject leg 1");
	fx_write_random(off, 4096);
	f.sector = (off + 16 * KiB) / SECTOR;
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject leg 0");
	fx_write_random(off + 16 * KiB, 4096);
	for (unsigned i = 0; i < 2; i++) {
		leg_stats(i, &ls);
		ck_assert_msg(ls.bad_blocks == 1 && ls.state == FM_LEG_IN_SYNC,
			      "leg %u: %" PRIu64 " bad blocks, state %u", i, ls.bad_blocks,
			      ls.state);
		reads_of[i] = ls.reads;
	}
	fx_check_read(off - 8 * KiB, 64 * KiB);
	for (unsigned i = 0; i < 2; i++) {
		leg_stats(i, &ls);
		ck_assert_msg(ls.reads > reads_of[i], "leg %u served no piece", i);
		ck_assert_uint_eq(ls.read_errors, 0);
	}
	fx_check_read(off, 20 * KiB);
	admin_ok(mirror_inject(fx.m, fx.legs[0], NULL, &err), err, "clear leg 0");
	admin_ok(mirror_inject(fx.m, fx.legs[1], NULL, &err), err, "clear leg 1");
	fx_write_random(off, 20 * KiB);
	for (unsigned i = 0; i < 2; i++) {
		leg_stats(i, &ls);
		ck_assert_uint_eq(ls.bad_blocks, 0);
	}

	/* More bad blocks than a leg may have: it fails; the write does not. */
	f.sector = 2 * REGION / SECTOR;
	f.count = REGION / SECTOR;
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject 1 MiB");
	fx_write_random(2 * REGION, REGION);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ls.bad_blocks, 0);
	fx_check_read(0, 4 * REGION);
	fx_stop(0);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.nr_bad, 0);
	ck_assert_uint_eq(sb.features & FM_SB_FEAT_BAD_BLOCKS, 0);
	ck_assert_uint_eq(sb.legs[1].state, FM_LEG_FAULTY);
	fx_check_legs(0, REGION * 2);
}
END_TEST

static Suite *mirror_resilience_suite(void)
{
	Suite *s = suite_create("mirror_resilience");
	TCase *tc;

	tc = tc_add(s, "read-errors", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_read_failover, 0, G_N_ELEMENTS(policies));
	tcase_add_test(tc, test_read_failover_two_of_three);
	tcase_add_loop_test(tc, test_read_all_legs_fail, 0, 2);
	tcase_add_test(tc, test_read_leg_shrunk);

	tc = tc_add(s, "write-errors", tc_tmpfs_setup, tc_tmpfs_teardown);
	tcase_add_test(tc, test_write_error_on_one_leg);

	tc = tc_add(s, "resilience", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_stale_leg_bitmap_recovery);
	tcase_add_test(tc, test_remove_and_add_online);
	tcase_add_test(tc, test_replace_leg);
	tcase_add_loop_test(tc, test_rebuild_resume, 0, 2);
	tcase_add_test(tc, test_rebuild_end_flush);
	tcase_add_loop_test(tc, test_bitmap_recovery_resume, 0, 2);
	tcase_add_test(tc, test_two_rebuilding_legs);
	tcase_add_test(tc, test_rebuilt_leg_gets_bitmap);
	tcase_add_test(tc, test_add_queued_behind_scrub);
	tcase_add_test(tc, test_add_during_scrub_read);
	tcase_add_test(tc, test_events_fail_add_rebuild);
	tcase_add_test(tc, test_events_degraded_unclean_start);
	tcase_add_test(tc, test_events_write_mostly);
	tcase_add_test(tc, test_event_names);
	tcase_add_test(tc, test_read_error_repaired);
	tcase_add_loop_test(tc, test_read_errors_fail_leg, 0, 2);
	tcase_add_loop_test(tc, test_read_error_rate, 0, 3);
	tcase_add_test(tc, test_scrub_check_and_repair);
	tcase_add_test(tc, test_all_legs_fail);
	tcase_add_test(tc, test_crash_resync_bitmap_only);
	tcase_add_loop_test(tc, test_sync_src_fails_during_resync, 0, 3);
	tcase_add_test(tc, test_bad_block_keeps_leg);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_mirror_resilience: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_resilience_suite());
}
