/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of mirror: create (format), assembly and its refusals, degraded
 * start, legs that went back in time, split brain.
 * Fixtures and conventions: mirror_fx.h.
 */
#include "mirror_fx.h"

/*----------------------------------------------------------------*/
/* TCase format */

START_TEST(test_format_new_legs)
{
	unsigned n = 1 + (unsigned)_i;  /* 1 (a mirror of one), 2, 3 legs */
	struct mirror_format_opts o = { .size = IMG, .name = "new-legs" };
	uint8_t uuid[16];
	GError *err = NULL;
	struct fm_sb sb0;
	int r;

	FX_SEED();
	fx_name_legs(n);
	if (n == 3) {
		o.region_size = 1 * MiB;
		o.block_size = 65536;
	}
	memset(uuid, 0xee, sizeof(uuid));
	r = mirror_format((const char *const *)fx.legs, n, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, err ? err->message : "");
	ck_assert_ptr_null(err);
	check_formatted(fx.legs, n, uuid, IMG, o.region_size, o.block_size, "new-legs", &sb0);
	ck_assert_uint_eq(sb0.data_offset, 1 * MiB); /* 4 KiB bitmap, 1 MiB aligned */
	for (unsigned i = 0; i < n; i++) {
		/* Exactly the size needed, and sparse: the data area is a hole. */
		ck_assert_uint_eq(fm_test_file_size(fx.legs[i]), sb0.data_offset + IMG);
		ck_assert_msg(file_allocated(fx.legs[i]) < 1 * MiB,
			      "leg %s: %" PRIu64 " bytes allocated, not sparse", fx.legs[i],
			      file_allocated(fx.legs[i]));
	}

	/* The array works (a mirror of one, too). */
	fx.data_offset = sb0.data_offset;
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	fx_write_random(IMG - 64 * KiB, 64 * KiB);
	fx_check_read(0, 1 * MiB);
	fx_stop(0);
	fx_check_legs(0, IMG);

	/* A second format of the same legs (holding data now) makes a new,
	 * empty array. */
	{
		uint8_t uuid2[16];

		o = (struct mirror_format_opts){ .size = IMG, .force = true };
		r = mirror_format((const char *const *)fx.legs, n, &o, uuid2, &err);
		ck_assert_msg(r == 0, "mirror_format with force: %d %s", r,
			      err ? err->message : "");
		ck_assert_msg(memcmp(uuid, uuid2, 16) != 0, "the new array has the old uuid");
		check_formatted(fx.legs, n, uuid2, IMG, 0, 0, NULL, NULL);
		/* ... whose image reads as zeroes, old data on the legs or not. */
		memset(fx.model, 0, IMG);
		fx_assemble(MIRROR_READ_BALANCE, false);
		fx_check_read(0, IMG);
		fx_stop(0);
	}
}
END_TEST

START_TEST(test_format_existing_legs)
{
	/* Existing files of random bytes; no size given: the largest 1 MiB
	 * multiple the smallest leg can hold after the 1 MiB header. */
	static const uint64_t sizes[][3] = {
		{ 12 * MiB, 9 * MiB + 300 * KiB, 0 },
		{ 12 * MiB + 4 * KiB, 14 * MiB, 10 * MiB + 4 * KiB },
	};
	unsigned n = 2 + (unsigned)_i;
	struct mirror_format_opts o = { 0 };
	uint64_t min = UINT64_MAX, want;
	uint8_t uuid[16];
	GError *err = NULL;
	struct fm_sb sb0;
	int r;

	FX_SEED();
	fx_name_legs(n);
	for (unsigned i = 0; i < n; i++) {
		make_random_file(fx.legs[i], sizes[_i][i]);
		min = MIN(min, sizes[_i][i]);
		ck_assert_msg(!file_range_is_zero(fx.legs[i], 1 * MiB, min - 1 * MiB - 256 * KiB),
			      "test bug: no random data in the future data area");
	}
	want = (min - 1 * MiB) / MiB * MiB;
	r = mirror_format((const char *const *)fx.legs, n, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, err ? err->message : "");
	check_formatted(fx.legs, n, uuid, want, 0, 0, NULL, &sb0);
	ck_assert_uint_eq(sb0.data_offset, 1 * MiB);
	ck_assert_uint_eq(sb0.image_size % MiB, 0);
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(fm_test_file_size(fx.legs[i]), sizes[_i][i]);
}
END_TEST

enum format_refusal {
	FR_EXT4,
	FR_FUSEMIRROR,
	FR_TOO_SMALL,
	FR_SAME_PATH,
	FR_HARD_LINK,
	FR_NO_DIR,
	FR_ZERO_LEGS,
	FR_33_LEGS,
	FR_REGION_NOT_POW2,
	FR_REGION_SMALL,
	FR_REGION_BIG,
	FR_SIZE_UNALIGNED,
	FR_NO_SIZE_NO_LEG,
	FR_SAME_NEW_PATH,
	FR_IN_USE,
	FR_NAME_TOO_LONG,
	FR_BLOCK_SIZE,
	FR_COUNT
};

START_TEST(test_format_refusals)
{
	char *paths[FM_SB_MAX_LEGS + 2] = { 0 };
	char *extra[4] = { 0 };
	struct mirror_format_opts o = { .size = IMG };
	unsigned n = 0;
	uint8_t uuid[16], poison[16];
	struct snap snap = { 0 };
	GError *err = NULL;
	const char *sub1 = NULL, *sub2 = NULL;
	const char *named;      /* the leg the message must name, or NULL */
	char *a = fx_path("a"), *b = fx_path("b-new");
	int want = -EINVAL, r;

	FX_SEED();
	/* a: an existing leg-to-be with random data; b: a path to create.
	 * The offending leg comes last, so writes to earlier legs show. */
	make_random_file(a, 12 * MiB);
	paths[n++] = g_strdup(a);
	paths[n++] = g_strdup(b);
	named = NULL;
	switch ((enum format_refusal)_i) {
	case FR_EXT4:
		paths[n] = fx_path("ext4");
		make_ext4_file(paths[n]);
		named = paths[n++];
		want = -EEXIST;
		sub1 = "ext4";
		sub2 = "--force";
		break;
	case FR_FUSEMIRROR: {
		char *x[2] = { fx_path("x0"), fx_path("x1") };
		struct mirror_format_opts xo = { .size = IMG };

		r = mirror_format((const char *const *)x, 2, &xo, NULL, NULL);
		ck_assert_int_eq(r, 0);
		extra[0] = x[0];
		paths[n] = x[1];
		named = paths[n++];
		want = -EEXIST;
		sub1 = "fusemirror";
		break;
	}
	case FR_TOO_SMALL:
		paths[n] = fx_path("small");
		make_random_file(paths[n], 4 * MiB);
		named = paths[n++];
		want = -ENOSPC;
		sub1 = "4194304";
		break;
	case FR_SAME_PATH:
		paths[n] = g_strdup(a);
		named = paths[n++];
		sub1 = "twice";
		break;
	case FR_HARD_LINK:
		paths[n] = fx_path("hardlink");
		ck_assert_msg(link(a, paths[n]) == 0, "link: %s", g_strerror(errno));
		named = paths[n++];
		sub1 = "same file";
		break;
	case FR_NO_DIR:
		paths[n] = fx_path("nodir/leg");
		extra[0] = fx_path("nodir");
		named = paths[n++];
		want = -ENOENT;
		sub1 = "does not exist";
		break;
	case FR_ZERO_LEGS:
		n = 0;
		sub1 = "0 given";
		break;
	case FR_33_LEGS:
		while (n < FM_SB_MAX_LEGS + 1) {
			paths[n] = fx_path("many%u", n);
			n++;
		}
		sub1 = "33 given";
		break;
	case FR_REGION_NOT_POW2:
		o.region_size = 3 * MiB;
		sub1 = "region size";
		break;
	case FR_REGION_SMALL:
		o.region_size = 512 * KiB;
		sub1 = "region size";
		break;
	case FR_REGION_BIG:
		o.region_size = 2 * TiB;
		sub1 = "region size";
		break;
	case FR_SIZE_UNALIGNED:
		o.size = IMG + 512;
		sub1 = "multiple of 4 KiB";
		break;
	case FR_NO_SIZE_NO_LEG:
		/* Only paths to create, and no size to create them with. */
		g_free(paths[0]);
		paths[0] = fx_path("c-new");
		o.size = 0;
		sub1 = "size";
		break;
	case FR_SAME_NEW_PATH:
		/* b twice, spelled differently: the same leg by path. */
		paths[n] = g_strdup_printf("%s/./b-new", fx.dir);
		named = paths[n++];
		sub1 = "same file";
		break;
	case FR_IN_USE: {
		/* Even with force: a leg of an assembled array is locked.  It
		 * is found only after b was created: b must go again. */
		char *x[2] = { fx_path("x0"), fx_path("x1") };
		struct mirror_format_opts xo = { .size = IMG };

		ck_assert_int_eq(mirror_format((const char *const *)x, 2, &xo, NULL, NULL), 0);
		fx.m = assemble_ok(x, 2, MIRROR_READ_BALANCE, false);
		extra[0] = x[0];
		paths[n] = x[1];
		named = paths[n++];
		o.force = true;
		want = -EBUSY;
		sub1 = "in use";
		break;
	}
	case FR_NAME_TOO_LONG:
		o.name = "0123456789012345678901234567890123456789012345678901234567890123";
		sub1 = "name";
		break;
	case FR_BLOCK_SIZE:
		o.block_size = 3000;
		sub1 = "block size";
		break;
	case FR_COUNT:
		break;
	}
	for (unsigned i = 0; i < n; i++)
		snap_add(&snap, paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(extra) && extra[i]; i++)
		snap_add(&snap, extra[i]);
	snap_add(&snap, a);
	snap_add(&snap, b);

	memset(uuid, 0xee, sizeof(uuid));
	memcpy(poison, uuid, sizeof(uuid));
	r = mirror_format((const char *const *)paths, n, &o, uuid, &err);
	ck_assert_msg(r < 0, "case %d: mirror_format accepted it", _i);
	ck_assert_msg(r == want, "case %d: returned %d (%s), want %d", _i, r,
		      err ? err->message : "", want);
	check_error(err, r, "mirror_format", named ? named : "", sub1 ? sub1 : "",
		    sub2 ? sub2 : "", NULL);
	ck_assert_msg(!memcmp(uuid, poison, 16), "ret_array_uuid written on failure");
	snap_check(&snap, "a refused mirror_format");
	if (fx.m)
		fx_stop(0);

	for (unsigned i = 0; i < G_N_ELEMENTS(paths); i++)
		g_free(paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(extra); i++)
		g_free(extra[i]);
	g_free(a);
	g_free(b);
}
END_TEST

START_TEST(test_format_force_ext4)
{
	struct mirror_format_opts o = { .size = IMG, .force = true };
	uint8_t uuid[16];
	GError *err = NULL;
	char *what = NULL;
	int fd, r;

	FX_SEED();
	fx_name_legs(2);
	make_ext4_file(fx.legs[0]);
	ck_assert_msg(!file_range_is_zero(fx.legs[0], 1 * MiB, IMG),
		      "test bug: mkfs.ext4 wrote nothing into the future data area");
	r = mirror_format((const char *const *)fx.legs, 2, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format --force on ext4: %d %s", r,
		      err ? err->message : "");
	check_formatted(fx.legs, 2, uuid, IMG, 0, 0, NULL, NULL);
	ck_assert_uint_eq(fm_test_file_size(fx.legs[0]), 16 * MiB);

	/* What is there now is a fusemirror leg, and no ext4 any more. */
	fd = open(fx.legs[0], O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	r = fm_sb_probe_signature(fd, &what);
	close(fd);
	ck_assert_int_eq(r, 0);
	ck_assert_msg(what && strstr(what, "fusemirror") && !strstr(what, "ext4"),
		      "after format: probe says \"%s\"", what ? what : "(nothing)");
	g_free(what);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase assemble */

START_TEST(test_assemble_dirty_then_clean)
{
	unsigned n = 2 + (unsigned)_i;
	struct fm_sb before[3], now;
	struct mirror_leg_stats ls;
	struct fm_sb msbc, *msb = &msbc;

	FX_SEED();
	fx_name_legs(n);
	fx_format(IMG);
	for (unsigned i = 0; i < n; i++)
		read_sb(fx.legs[i], &before[i]);

	fx_assemble(MIRROR_READ_BALANCE, false);
	for (unsigned i = 0; i < n; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(!(now.state_flags & FM_SB_CLEAN), "leg %u still CLEAN after assembly", i);
		ck_assert_uint_eq(now.events, before[i].events + 1);
		ck_assert(!memcmp(now.array_uuid, before[i].array_uuid, 16));
		ck_assert(!memcmp(now.leg_uuid, before[i].leg_uuid, 16));
		ck_assert_uint_eq(now.leg_index, i);
		ck_assert_uint_eq(now.image_size, IMG);
		ck_assert_uint_eq(now.data_offset, before[i].data_offset);
		for (unsigned k = 0; k < n; k++)
			ck_assert(!memcmp(now.legs[k].uuid, before[i].legs[k].uuid, 16) &&
				  now.legs[k].state == FM_LEG_IN_SYNC);
		leg_stats(i, &ls);
		ck_assert_str_eq(ls.path, fx.legs[i]);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		ck_assert_int_eq(ls.direct, fm_test_supports_direct(fx.legs[i]));
		ck_assert_uint_eq(ls.reads + ls.writes + ls.read_errors + ls.write_errors, 0);
	}
	mirror_get_sb(fx.m, msb);
	ck_assert(!memcmp(msb->array_uuid, before[0].array_uuid, 16));
	ck_assert(!memcmp(msb->leg_uuid, before[0].leg_uuid, 16));
	ck_assert_uint_eq(msb->events, before[0].events + 1);
	ck_assert(!(msb->state_flags & FM_SB_CLEAN));

	fx_write_random(64 * KiB, 64 * KiB);
	fx_stop(0);
	for (unsigned i = 0; i < n; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(now.state_flags & FM_SB_CLEAN, "leg %u not CLEAN after stop", i);
		ck_assert_uint_eq(now.events, before[i].events + 2);
	}
	fx_check_legs(0, IMG);
}
END_TEST

enum assemble_refusal {
	AR_NOT_A_LEG,
	AR_BAD_CRC,
	AR_OTHER_ARRAY,
	AR_GEOM_IMAGE_SIZE,
	AR_GEOM_DATA_OFFSET,
	AR_GEOM_REGION_SIZE,
	AR_TRUNCATED,
	AR_SAME_PATH,
	AR_COPY,
	AR_STALE_SECOND,
	AR_STALE_FIRST,
	AR_LEG_NOT_GIVEN,
	AR_MISSING_FILE,
	AR_COUNT
};

START_TEST(test_assemble_refusals)
{
	char *paths[3] = { 0 };
	char *other[2] = { 0 };
	unsigned n = 2;
	struct snap snap = { 0 };
	struct mirror *sentinel = (struct mirror *)&snap, *m = sentinel;
	struct mirror_opts o = { 0 };
	struct fm_sb sb;
	GError *err = NULL;
	const char *named, *sub1 = NULL, *sub2 = NULL;
	char u1[37], u2[37];
	bool legs_intact = false;
	int want, r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	/* Assemble and stop once: events 3, some data. */
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 256 * KiB);
	fx_stop(0);

	paths[0] = g_strdup(fx.legs[0]);
	paths[1] = g_strdup(fx.legs[1]);
	named = paths[1];
	switch ((enum assemble_refusal)_i) {
	case AR_NOT_A_LEG:
		g_free(paths[1]);
		paths[1] = fx_path("plain");
		make_random_file(paths[1], 12 * MiB);
		named = paths[1];
		want = -EINVAL;
		sub1 = "not a fusemirror leg";
		legs_intact = true;
		break;
	case AR_BAD_CRC: {
		uint8_t byte;

		fm_test_read_file(paths[1], 64, &byte, 1);
		byte ^= 0x10;
		fm_test_write_file(paths[1], 64, &byte, 1);
		want = -EUCLEAN;
		sub1 = "damaged";
		break;
	}
	case AR_OTHER_ARRAY: {
		struct mirror_format_opts fo = { .size = IMG };
		uint8_t ou[16];

		other[0] = fx_path("other0");
		other[1] = fx_path("other1");
		ck_assert_int_eq(mirror_format((const char *const *)other, 2, &fo, ou, NULL), 0);
		read_sb(paths[0], &sb);
		g_free(paths[1]);
		paths[1] = g_strdup(other[1]);
		named = paths[1];
		want = -EINVAL;
		sub1 = fm_uuid_unparse(ou, u1);
		sub2 = fm_uuid_unparse(sb.array_uuid, u2);
		legs_intact = true;
		break;
	}
	case AR_GEOM_IMAGE_SIZE:
	case AR_GEOM_DATA_OFFSET:
	case AR_GEOM_REGION_SIZE:
		read_sb(paths[1], &sb);
		if (_i == AR_GEOM_IMAGE_SIZE) {
			sb.image_size -= 1 * MiB;
			sub1 = "image size";
		} else if (_i == AR_GEOM_DATA_OFFSET) {
			sb.data_offset += 1 * MiB;
			sub1 = "data offset";
		} else {
			sb.region_size *= 2;
			sub1 = "region size";
		}
		/* Hand-edited, crc recomputed by fm_sb_encode(): a valid sb. */
		write_sb_raw(paths[1], &sb);
		read_sb(paths[1], &sb);
		want = -EUCLEAN;
		sub2 = "differs";
		break;
	case AR_TRUNCATED:
		truncate_file(paths[1], fx.data_offset + IMG - 4096);
		want = -ENOSPC;
		sub1 = "smaller";
		break;
	case AR_SAME_PATH:
		g_free(paths[1]);
		paths[1] = g_strdup(paths[0]);
		named = paths[1];
		want = -EINVAL;
		sub1 = "twice";
		legs_intact = true;
		break;
	case AR_COPY:
		g_free(paths[1]);
		paths[1] = fx_path("copy-of-leg0");
		copy_file(paths[0], paths[1]);
		named = paths[1];
		want = -EINVAL;
		sub1 = "same leg";
		legs_intact = true;
		break;
	case AR_STALE_SECOND:
	case AR_STALE_FIRST: {
		unsigned stale = _i == AR_STALE_FIRST ? 0 : 1;

		/* A stale leg given alone is never taken for current: its
		 * own table names the leg that is not given. */
		read_sb(paths[stale], &sb);
		ck_assert_uint_eq(sb.events, 3);
		sb_set_events(&sb, sb.events - 1);
		write_sb(paths[stale], &sb);
		if (stale == 1) {
			char *t = paths[0];

			paths[0] = paths[1];
			paths[1] = t;
		}
		n = 1;
		named = "";
		want = -ENODEV;
		sub1 = "not given";
		break;
	}
	case AR_LEG_NOT_GIVEN:
		n = 1;
		named = "";
		want = -ENODEV;
		sub1 = "has 2 legs";
		sub2 = "not given";
		legs_intact = true;
		break;
	case AR_MISSING_FILE:
		g_free(paths[1]);
		paths[1] = fx_path("no-such-leg");
		named = paths[1];
		want = -ENOENT;
		legs_intact = true;
		break;
	default:
		ck_abort();
	}
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	for (unsigned i = 0; i < n; i++)
		snap_add(&snap, paths[i]);

	r = mirror_assemble((const char *const *)paths, n, &o, &m, &err);
	ck_assert_msg(r == want, "case %d: mirror_assemble returned %d (%s), want %d", _i, r,
		      err ? err->message : "", want);
	ck_assert_msg(m == sentinel, "*ret_m written on failure");
	check_error(err, r, "mirror_assemble", named, sub1 ? sub1 : "", sub2 ? sub2 : "",
		    NULL);
	snap_check(&snap, "a refused mirror_assemble");

	/* A refused assembly leaves nothing locked behind. */
	if (legs_intact) {
		fx_assemble(MIRROR_READ_BALANCE, false);
		fx_check_read(0, 256 * KiB);
		fx_stop(0);
	}
	for (unsigned i = 0; i < G_N_ELEMENTS(paths); i++)
		g_free(paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(other); i++)
		g_free(other[i]);
}
END_TEST

/* Close fd @arg after 300 ms. */
static void *close_later(void *arg)
{
	g_usleep(300 * 1000);
	close((int)(intptr_t)arg);
	return NULL;
}

/* Assemble fx.legs while @fd holds a leg's lock or claim, which it lets go
 * of after 300 ms: the assembly waits for it (at least 250 ms). */
static void assemble_once_released(int fd)
{
	pthread_t t;
	gint64 t0;

	ck_assert_int_eq(pthread_create(&t, NULL, close_later, (void *)(intptr_t)fd), 0);
	t0 = g_get_monotonic_time();
	fx_assemble(MIRROR_READ_FIRST, false);
	ck_assert_int_ge(g_get_monotonic_time() - t0, 250 * 1000);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
}

START_TEST(test_assemble_in_use)
{
	struct mirror_opts o = { 0 };
	struct mirror_opts ro = { .readonly = true };
	struct mirror *m2 = NULL;
	struct snap snap = { 0 };
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(1 * MiB, 128 * KiB);
	fx_wait_all();
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	/* OFD locks conflict between open file descriptions, even within
	 * one process. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "second assembly", fx.legs[0], "already in use", NULL);
	err = NULL;
	r = mirror_assemble((const char *const *)fx.legs, 2, &ro, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "read-only assembly of legs in use", "already in use", NULL);
	err = NULL;
	r = mirror_assemble((const char *const *)&fx.legs[1], 1, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "assembly of leg 1 alone", fx.legs[1], "already in use", NULL);
	snap_check(&snap, "a refused (in use) mirror_assemble");

	/* The first mirror still works. */
	fx_write_random(2 * MiB, 64 * KiB);
	fx_check_read(1 * MiB, 2 * MiB);
	fx_check_legs(0, IMG);
	fx_stop(0);

	/* Once stopped, the legs can be assembled again. */
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_check_read(1 * MiB, 2 * MiB);
	fx_stop(0);

	/* A lock let go of within the wait (a daemon killed with -9 whose
	 * io_uring the kernel is still tearing down): the assembly waits for
	 * it instead of failing "already in use". */
	{
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		int fd = open(fx.legs[0], O_RDWR);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
		assemble_once_released(fd);
		fx_check_read(1 * MiB, 2 * MiB);
		fx_stop(0);
	}
}
END_TEST

/* The same for legs on block devices, which are claimed with O_EXCL: a
 * claim held for a moment by someone else is waited for. */
START_TEST(test_assemble_blockdev_claim_wait)
{
	struct fm_test_loop lo[2] = { { 0 } };
	char *msg = fm_test_loop_unusable(), *files[2];
	int fd;

	ck_assert_msg(!msg, "loop devices: %s", msg ? msg : "");
	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	for (unsigned i = 0; i < 2; i++) {
		ck_assert_msg(fm_test_loop_attach(fx.legs[i], 512, &lo[i], &msg) == 0,
			      "attach %s: %s", fx.legs[i], msg ? msg : "");
		files[i] = fx.legs[i];
		fx.legs[i] = g_strdup(lo[i].dev);
	}
	fd = open(lo[0].dev, O_RDONLY | O_EXCL | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s O_EXCL: %s", lo[0].dev, g_strerror(errno));
	assemble_once_released(fd);
	fx_write_random(1 * MiB, 64 * KiB);
	fx_check_read(0, IMG);
	fx_stop(0);
	for (unsigned i = 0; i < 2; i++) {
		ck_assert_msg(fm_test_loop_detach(&lo[i], &msg) == 0, "detach: %s",
			      msg ? msg : "");
		g_free(fx.legs[i]);
		fx.legs[i] = files[i];
	}
	fx_check_legs(0, IMG);
}
END_TEST

START_TEST(test_assemble_readonly)
{
	struct snap snap = { 0 };
	struct mirror_opts o = { 0 };
	struct mirror *m2 = NULL;
	struct fm_sb sb;
	uint8_t *buf;
	struct iovec iov;
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	fx_write_random(5 * MiB, 512 * KiB);
	fx_stop(0);
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	fx_assemble(MIRROR_READ_ROUND_ROBIN, true);
	ck_assert(mirror_is_readonly(fx.m));
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_check_read(off, 1 * MiB);
	buf = fx_buf(4096);
	iov = (struct iovec){ buf, 4096 };
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 0, &iov, 1, 0, NULL), -EROFS);
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 8, &iov, 1, MIRROR_IO_FUA, NULL),
			 -EROFS);
	ck_assert_int_eq(mirror_discard(fx.m, 0, 8), -EROFS);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, 0, 8), -EROFS);
	/* The legs are in use: a read-write assembly is refused. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "read-write assembly of read-only legs", "already in use", NULL);
	fx_stop(0);
	snap_check(&snap, "a read-only assembly");
	read_sb(fx.legs[0], &sb);
	ck_assert(sb.state_flags & FM_SB_CLEAN);
}
END_TEST

/*
 * defer_in_use: nothing is written at assembly, writes are refused until
 * mirror_mark_in_use(), and a mirror stopped before that leaves every leg
 * byte for byte as it was (the daemon's late refusals rely on it).
 */
START_TEST(test_assemble_defer_in_use)
{
	struct mirror_opts o = { .defer_in_use = true };
	struct snap snap = { 0 };
	struct mirror *m = NULL;
	struct fm_sb sb0, sb;
	struct iovec iov;
	GError *err = NULL;
	uint8_t *buf;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	read_sb(fx.legs[0], &sb0);
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	/* Assembled, stopped without marking: untouched. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m, &err);
	ck_assert_msg(r == 0, "mirror_assemble: %d %s", r, err ? err->message : "");
	buf = fx_buf(4096);
	iov = (struct iovec){ buf, 4096 };
	ck_assert_int_eq(fx_submit(m, MIRROR_OP_WRITE, 0, &iov, 1, 0, NULL), -EROFS);
	ck_assert_int_eq(mirror_discard(m, 0, 8), -EROFS);
	ck_assert_int_eq(mirror_stop(m, NULL), 0);
	snap_check(&snap, "an assembly stopped before mirror_mark_in_use");

	/* Assembled, then marked: dirty, writes work, stop marks clean. */
	m = NULL;
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m, &err);
	ck_assert_int_eq(r, 0);
	read_sb(fx.legs[1], &sb);
	ck_assert_uint_eq(sb.events, sb0.events);
	ck_assert(sb.state_flags & FM_SB_CLEAN);
	ck_assert_int_eq(mirror_mark_in_use(m, &err), 0);
	ck_assert_int_eq(mirror_mark_in_use(m, &err), 0); /* idempotent */
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert_uint_eq(sb.events, sb0.events + 1);
		ck_assert(!(sb.state_flags & FM_SB_CLEAN));
	}
	fx.m = m;
	fx_write_random(0, 64 * KiB);
	fx_stop(0);
	fx_check_legs(0, 64 * KiB);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert_uint_eq(sb.events, sb0.events + 2);
		ck_assert(sb.state_flags & FM_SB_CLEAN);
	}
}
END_TEST

/* Legs are known by their uuids, not by the order they are given in. */
START_TEST(test_assemble_any_order)
{
	char *order[3];
	struct fm_sb sb2, now;

	FX_SEED();
	fx_name_legs(3);
	fx_format(IMG);
	read_sb(fx.legs[2], &sb2);
	order[0] = fx.legs[2];
	order[1] = fx.legs[0];
	order[2] = fx.legs[1];
	fx.m = assemble_ok(order, 3, MIRROR_READ_ROUND_ROBIN, false);
	{
		struct fm_sb msb;

		mirror_get_sb(fx.m, &msb);
		ck_assert(!memcmp(msb.array_uuid, sb2.array_uuid, 16));
	}
	fx_write_random(4 * KiB, 1 * MiB);
	for (unsigned k = 0; k < 6; k++)
		fx_check_read(4 * KiB, 1 * MiB);
	fx_stop(0);
	fx_check_legs(0, IMG);
	for (unsigned i = 0; i < 3; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_uint_eq(now.leg_index, i);
		ck_assert(now.state_flags & FM_SB_CLEAN);
		ck_assert_uint_eq(now.events, sb2.events + 2);
	}
}
END_TEST

/*
 * A daemon that dies without mirror_stop(): its locks go with it (OFD locks
 * belong to the open file description), the legs stay marked dirty, and
 * the array assembles again with its data.
 */
START_TEST(test_assemble_after_crash)
{
	struct fm_sb before, now;
	uint8_t *data;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	read_sb(fx.legs[0], &before);
	data = fx_buf(1 * MiB);
	fm_rng_fill(&fx.rng, data, 1 * MiB);
	memcpy(fx.model + 2 * MiB, data, 1 * MiB);

	crash_after_write(&(struct mirror_opts){ 0 }, data, 2 * MiB, 1 * MiB);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(!(now.state_flags & FM_SB_CLEAN), "leg %u CLEAN after a crash", i);
		ck_assert_uint_eq(now.events, before.events + 1);
	}
	fx_check_legs(0, IMG);

	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_check_read(2 * MiB, 1 * MiB);
	{
		struct mirror_status ms;

		wait_sync_idle(&ms);
		ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
		ck_assert_uint_eq(ms.resynced_regions, 1);
	}
	fx_stop(0);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert(now.state_flags & FM_SB_CLEAN);
		ck_assert_uint_eq(now.events, before.events + 3);
	}
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase degraded: degraded start, legs that went back in time, split brain */

/* mirror_assemble() of @n of @paths: 0 with fx.m set, or -errno with @err
 * set and nothing returned. */
static int try_assemble(char *const *paths, unsigned n, const struct mirror_opts *o,
			GError **err)
{
	struct mirror *m = NULL;
	int r = mirror_assemble((const char *const *)paths, n, o, &m, err);

	if (r == 0) {
		ck_assert_ptr_nonnull(m);
		ck_assert_ptr_null(fx.m);
		fx.m = m;
	} else {
		ck_assert_ptr_null(m);
	}
	return r;
}

/*
 * A leg missing at start: refused without opts.degraded (the message names
 * the flag and the leg), started with it: the leg is recorded as missing,
 * the bitmap keeps every region written meanwhile, and the leg's return
 * (_i 0: `add` online; 1: given again at assembly) recovers just those.
 */
START_TEST(test_degraded_start)
{
	struct mirror_opts plain = { .bitmap_delay_ms = 20 };
	struct mirror_opts deg = { .degraded = true, .bitmap_delay_ms = 20,
				   .event_fn = ev_handler };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb0, sb1, before;
	struct snap snap = { 0 };
	GError *err = NULL;
	char u[37];
	int r;

	FX_SEED();
	fx_start_written(&plain);
	fx_stop(0);
	read_sb(fx.legs[1], &before);

	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	r = try_assemble(fx.legs, 1, &plain, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "leg 1 not given", "was not given", "--degraded",
		    fm_uuid_unparse(before.leg_uuid, u), NULL);
	err = NULL;
	snap_check(&snap, "a refused start without leg 1");

	ev_reset();
	admin_ok(try_assemble(fx.legs, 1, &deg, &err), err, "degraded start");
	ev_expect((const char *[]){ "NewArray", "DeviceDisappeared:1", "DegradedArray" }, 3,
		  "degraded start");
	ck_assert(ev_at(1)->uuid_set);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded);
	ck_assert_str_eq(ms.state, "degraded");
	ck_assert_uint_eq(ms.nr_in_sync, 1);
	ck_assert_uint_eq(ms.nr_faulty, 1);
	leg_stats(1, &ls);
	ck_assert(ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_str_eq(ls.path, "");
	fm_assert_bytes_eq(ls.uuid, before.leg_uuid, 16, "missing leg's uuid");
	leg_stats(0, &ls);
	ck_assert(!ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_write_random(2 * REGION + 512, 8 * KiB);
	fx_write_random(5 * REGION, 64 * KiB);
	g_usleep(300000);       /* 15 times bitmap_delay: no bit is cleared */
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	fx_stop(0);

	read_sb(fx.legs[0], &sb0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.events, before.events);   /* not touched */
	ck_assert_uint_gt(sb0.events, sb1.events);      /* stale when it returns */
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_eq(sb0.legs[1].flags, FM_SB_LEG_MISSING);
	ck_assert(sb0.features & FM_SB_FEAT_GENERATIONS);
	ck_assert_uint_eq(sb0.last_in_sync[0], sb0.events);
	ck_assert_uint_eq(sb0.last_in_sync[1], sb1.events);
	ck_assert(sb0.state_flags & FM_SB_CLEAN);

	if (_i == 0) {
		/* Recorded as missing: leg 0 alone needs no flag any more. */
		admin_ok(try_assemble(fx.legs, 1, &plain, &err), err, "leg 0 alone");
		leg_stats(1, &ls);
		ck_assert(ls.missing);
		admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add");
	} else {
		admin_ok(try_assemble(fx.legs, 2, &plain, &err), err, "both legs");
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert(!ms.degraded);
	leg_stats(1, &ls);
	ck_assert(!ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.legs[1].state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(sb1.legs[1].flags, 0);
}
END_TEST

/*
 * A leg restored from an old copy (_i: which one), given with its
 * up-to-date peer: assembled (not refused as "not given"), rebuilt wholly,
 * because its own bitmap and the array's (cleared since) cannot say what
 * it missed.  A bitmap recovery would copy nothing and leave it stale.
 */
START_TEST(test_leg_back_in_time)
{
	unsigned old = (unsigned)_i;
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST };
	g_autofree char *copy = NULL;
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb_old, sb_new;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&o);
	fx_stop(0);
	copy = fx_path("old-copy");
	copy_file(fx.legs[old], copy);
	fx_assemble_opts(&o);
	fx_write_random(3 * REGION, 64 * KiB);
	fx_write_random(6 * REGION + 4 * KiB, 4 * KiB);
	fx_stop(0);
	copy_file(copy, fx.legs[old]);
	read_sb(fx.legs[old], &sb_old);
	read_sb(fx.legs[!old], &sb_new);
	ck_assert_uint_lt(sb_old.events, sb_new.events);
	ck_assert_uint_eq(sb_new.legs[old].state, FM_LEG_IN_SYNC);

	/* Deferred: the rebuild waits, so that what status says can be seen. */
	o.defer_in_use = true;
	admin_ok(try_assemble(fx.legs, 2, &o, &err), err, "assemble with the old copy");
	leg_stats(old, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	ck_assert_msg(strstr(ls.note, "went back in time") && strstr(ls.note, "wholly"),
		      "note: %s", ls.note);
	{
		char want[64];

		snprintf(want, sizeof(want), "stale (events %llu, the array has %llu)",
			 (unsigned long long)sb_old.events, (unsigned long long)sb_new.events);
		ck_assert_msg(strstr(ls.note, want), "note: %s, want %s", ls.note, want);
	}
	leg_stats(!old, &ls);
	ck_assert_str_eq(ls.note, "");
	admin_ok(mirror_mark_in_use(fx.m, &err), err, "mark in use");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	leg_stats(old, &ls);
	ck_assert_str_eq(ls.note, "");
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * Split brain: each leg started alone (degraded) and written.  Assembling
 * both is refused, naming both sides and --prefer, with nothing written;
 * opts.prefer (_i: which leg) keeps that side's data and rebuilds the
 * other wholly.  A merge (the newer side's bitmap only) would leave the
 * other side's regions differing between the legs.
 */
START_TEST(test_split_brain)
{
	unsigned keep = (unsigned)_i;
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_opts pref = { 0 };
	g_autofree uint8_t *base = NULL;
	uint8_t *side[2] = { NULL, NULL };
	g_autofree char *stranger = NULL;
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct snap snap = { 0 };
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_start_written(&plain);
	fx_stop(0);
	base = g_memdup2(fx.model, IMG);
	for (unsigned k = 0; k < 2; k++) {
		memcpy(fx.model, base, IMG);
		admin_ok(try_assemble(&fx.legs[k], 1, &deg, &err), err, "one leg alone");
		fx_write_random(1 * REGION + 4 * KiB, 16 * KiB);   /* both sides */
		fx_write_random((4 + k) * REGION, 8 * KiB);        /* this side only */
		fx_stop(0);
		side[k] = g_memdup2(fx.model, IMG);
	}

	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	for (unsigned v = 0; v < 2; v++) {
		r = try_assemble(fx.legs, 2, v ? &deg : &plain, &err);
		ck_assert_int_eq(r, -EUCLEAN);
		check_error(err, r, "split brain", "split brain", fx.legs[0], fx.legs[1],
			    "--prefer", NULL);
		err = NULL;
	}
	stranger = fx_path("stranger");
	make_random_file(stranger, 1 * MiB);
	pref.prefer = stranger;
	r = try_assemble(fx.legs, 2, &pref, &err);
	ck_assert_int_eq(r, -EINVAL);
	check_error(err, r, "prefer a stranger", stranger, "not one of the legs given", NULL);
	err = NULL;
	snap_check(&snap, "a refused split brain");

	pref.prefer = fx.legs[keep];
	admin_ok(try_assemble(fx.legs, 2, &pref, &err), err, "--prefer");
	leg_stats(keep, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	memcpy(fx.model, side[keep], IMG);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	/* One array again. */
	admin_ok(try_assemble(fx.legs, 2, &plain, &err), err, "after --prefer");
	mirror_get_status(fx.m, &ms);
	ck_assert(!ms.degraded);
	fx_stop(0);
	g_free(side[0]);
	g_free(side[1]);
}
END_TEST

/*
 * `add` of a leg that ran apart (started alone and written while this side
 * also ran): adding it chooses this side, so it is rebuilt wholly.  From the
 * bitmap, its own write (in a region this side never wrote) would survive
 * and the legs would differ.  A new leg added instead takes the missing
 * leg's slot.
 */
START_TEST(test_add_leg_that_ran_apart)
{
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	g_autofree uint8_t *mine = NULL;
	GError *err = NULL;

	FX_SEED();
	fx_start_written(&plain);
	fx_stop(0);
	mine = g_memdup2(fx.model, IMG);
	admin_ok(try_assemble(&fx.legs[1], 1, &deg, &err), err, "leg 1 alone");
	fx_write_random(5 * REGION, 8 * KiB);
	fx_stop(0);
	memcpy(fx.model, mine, IMG);
	admin_ok(try_assemble(&fx.legs[0], 1, &deg, &err), err, "leg 0 alone");
	fx_write_random(2 * REGION, 8 * KiB);
	if (_i == 0) {
		admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add leg 1");
	} else {
		fx.legs[2] = fx_path("leg2");
		admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add a new leg");
		leg_stats(1, &ls);
		ck_assert_str_eq(ls.path, fx.legs[2]);  /* the missing leg's slot */
		ck_assert(!ls.missing);
		g_free(fx.legs[1]);
		fx.legs[1] = fx.legs[2];
		fx.legs[2] = NULL;
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * A stale leg that is started alone with --degraded cannot know it is
 * stale (nothing on it says so); meeting its peer again is a split brain,
 * refused: _i 0: it was failed while the peer went on; 1: it was restored
 * from an old copy (its table says both in sync, the peer's records say
 * when it last saw it).
 */
START_TEST(test_stale_start_is_split_brain)
{
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	g_autofree char *copy = NULL;
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_start_written(&plain);
	if (_i == 0) {
		admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
		fx_write_random(2 * REGION, 4 * KiB);
		fx_stop(0);
	} else {
		fx_stop(0);
		copy = fx_path("old-copy");
		copy_file(fx.legs[1], copy);
		fx_assemble_opts(&plain);
		fx_write_random(2 * REGION, 4 * KiB);
		fx_stop(0);
		copy_file(copy, fx.legs[1]);
	}
	admin_ok(try_assemble(&fx.legs[1], 1, &deg, &err), err, "stale leg alone");
	fx_write_random(3 * REGION, 4 * KiB);
	fx_stop(0);
	r = try_assemble(fx.legs, 2, &plain, &err);
	ck_assert_int_eq(r, -EUCLEAN);
	check_error(err, r, "reunion", "split brain", fx.legs[0], fx.legs[1], NULL);
}
END_TEST

/*
 * None of the legs given holds the current data: the only in-sync leg is
 * missing and the one given was being rebuilt.  Refused even with
 * --degraded, naming the leg given, its state and the in-sync leg.
 */
START_TEST(test_degraded_needs_current_leg)
{
	struct mirror_opts slow = { .sync_speed_min = 4096, .sync_speed_max = 4096 };
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_status ms;
	struct fm_sb sb0;
	char *two[2];
	GError *err = NULL;
	char u[37];
	int r;

	FX_SEED();
	fx_start_written(&slow);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add new leg");
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.action, MIRROR_SYNC_RECOVER);
	fx_stop(0);     /* the rebuild is interrupted */
	read_sb(fx.legs[0], &sb0);

	r = try_assemble(&fx.legs[2], 1, &deg, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "rebuilding leg alone", "none of the legs given holds the current",
		    fx.legs[2], "rebuilding", "not given: leg 0",
		    fm_uuid_unparse(sb0.leg_uuid, u), NULL);
	err = NULL;
	r = try_assemble(&fx.legs[2], 1, &plain, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "without --degraded", "was not given", "--degraded", NULL);
	err = NULL;
	/* With the in-sync leg, the rebuild starts over and completes. */
	two[0] = fx.legs[0];
	two[1] = fx.legs[2];
	admin_ok(try_assemble(two, 2, &plain, &err), err, "leg 0 and leg 2");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	fx_stop(0);
	/* Leg 2 (in leg 1's old slot) holds the image now. */
	two[1] = fx.legs[1];
	fx.legs[1] = fx.legs[2];
	fx.legs[2] = two[1];
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *mirror_assemble_suite(void)
{
	Suite *s = suite_create("mirror_assemble");
	TCase *tc;

	tc = tc_add(s, "format", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_format_new_legs, 0, 3);
	tcase_add_loop_test(tc, test_format_existing_legs, 0, 2);
	tcase_add_loop_test(tc, test_format_refusals, 0, FR_COUNT);
	tcase_add_test(tc, test_format_force_ext4);

	tc = tc_add(s, "assemble", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_assemble_dirty_then_clean, 0, 2);
	tcase_add_loop_test(tc, test_assemble_refusals, 0, AR_COUNT);
	tcase_add_test(tc, test_assemble_in_use);
	tcase_add_test(tc, test_assemble_blockdev_claim_wait);
	tcase_add_test(tc, test_assemble_readonly);
	tcase_add_test(tc, test_assemble_defer_in_use);
	tcase_add_test(tc, test_assemble_any_order);
	tcase_add_test(tc, test_assemble_after_crash);

	tc = tc_add(s, "degraded", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_degraded_start, 0, 2);
	tcase_add_loop_test(tc, test_leg_back_in_time, 0, 2);
	tcase_add_loop_test(tc, test_split_brain, 0, 2);
	tcase_add_loop_test(tc, test_stale_start_is_split_brain, 0, 2);
	tcase_add_loop_test(tc, test_add_leg_that_ran_apart, 0, 2);
	tcase_add_test(tc, test_degraded_needs_current_leg);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_mirror_assemble: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_assemble_suite());
}
