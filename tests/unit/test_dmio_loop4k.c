/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of dmio: block devices with 4096-byte logical sectors (loop
 * devices), O_DIRECT.
 * Fixtures and conventions: dmio_fx.h.
 */
#include "dmio_fx.h"

/*----------------------------------------------------------------*/
/* TCase loop4k: block devices with 4096-byte logical sectors, O_DIRECT */

static void fx_loop_setup(void)
{
	fx_setup();
	for (unsigned i = 0; i < TC_NLOOPS; i++)
		ck_assert_uint_eq(fx_add_blockdev(tc_loops[i].dev, 0), i);
}

START_TEST(test_loop_dev_open)
{
	struct dmio_dev *dev = fx_dev(0);

	ck_assert_str_eq(dmio_dev_name(dev), tc_loops[0].dev);
	ck_assert(dmio_dev_is_blockdev(dev));
	ck_assert_uint_eq(dmio_dev_size(dev), tc_loop_sizes[0]);
	ck_assert_uint_eq(dmio_dev_sectors(dev), tc_loop_sizes[0] / SECTOR);
	ck_assert_uint_eq(dmio_dev_logical_block_size(dev), 4096);
	ck_assert_msg(dmio_dev_is_direct(dev), "a loop device should be opened O_DIRECT");
	ck_assert_int_ge(dmio_dev_fd(dev), 0);
	ck_assert(fcntl(dmio_dev_fd(dev), F_GETFL) & O_DIRECT);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(1)), tc_loop_sizes[1]);
}
END_TEST

/* 512-byte I/O at sectors that are not multiples of 8: read-modify-write. */
static const struct {
	uint64_t sector, count;
} rmw_cases[] = {
	{ 1, 1 }, { 7, 2 }, { 3, 13 }, { 8, 1 }, { 9, 16 }, { 15, 1 }, { 0, 1 }, { 5, 8 },
	{ 6, 8 * 40 + 3 }, { UINT64_MAX, 1 } /* the last sector of the device */,
};

START_TEST(test_loop_rmw)
{
	unsigned c = (unsigned)_i / 2;
	bool async = _i % 2;
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	uint64_t count = rmw_cases[c].count;
	struct dmio_region where[2];
	struct dmio_stats st0;
	uint8_t *data;
	char what[128];

	fx_seed(__func__, _i);
	if (rmw_cases[c].sector == UINT64_MAX) {
		where[0] = fx_region(0, dmio_dev_sectors(fx_dev(0)) - 1, 1);
		where[1] = fx_region(1, dmio_dev_sectors(fx_dev(1)) - 1, 1);
	} else {
		where[0] = fx_region(0, rmw_cases[c].sector, count);
		where[1] = fx_region(1, rmw_cases[c].sector + 24, count);
	}
	snprintf(what, sizeof(what), "4K device, sector %" PRIu64 " + %" PRIu64 ", %s, %s",
		 where[0].sector, count, mem_names[type], async ? "async" : "sync");
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random(type, count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, true, what);
	fx_verify_all();        /* the rest of each 4 KiB block is intact */
	for (unsigned i = 0; i < 2; i++) {
		st0 = fx_stats();
		fx_read_check(&io, fx_mem_random(type, count * SECTOR), &where[i], data, what);
		fx_check_bounced(&st0, true, what);
	}
	fx_finish();
}
END_TEST

START_TEST(test_loop_aligned_not_bounced)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 8 * 9;
	struct dmio_region where[2] = { fx_region(0, 8 * 5, count), fx_region(1, 8 * 20, count) };
	struct dmio_stats st0;
	uint8_t *data;

	fx_seed(__func__, _i);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_aligned(type, count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "aligned write to 4K devices");
	fx_read_check(&io, fx_mem_aligned(type, count * SECTOR), &where[1], data,
		      "aligned read from a 4K device");
	fx_check_bounced(&st0, false, "aligned I/O on 4K devices");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* Aligned sectors, memory misaligned by 1, 7, 511 bytes. */
START_TEST(test_loop_unaligned_memory)
{
	static const size_t offs[] = { 1, 7, 511 };
	size_t off = offs[_i % 3];
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / 3) % 3);
	const uint64_t count = 8 * 3;
	const size_t len = count * SECTOR;
	struct dmio_region where[2] = { fx_region(0, 8 * 7, count), fx_region(1, 8 * 11, count) };
	struct dmio_stats st0;
	struct fx_mem *m, *r;
	uint8_t *data;
	char what[96];

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "4K device, %s memory misaligned by %zu", mem_names[type], off);
	data = fx_random_buf(len);
	switch (type) {
	case DMIO_MEM_PAGE_LIST:
		m = fx_mem_pl(len, (unsigned)off);
		r = fx_mem_pl(len, (unsigned)(PAGE - off));
		break;
	case DMIO_MEM_BVEC:
		m = fx_mem_bvec(len, 4, true, 1);
		r = fx_mem_bvec(len, 6, true, 1);
		break;
	default:
		m = fx_mem_vm(len, off);
		r = fx_mem_vm(len, 512 - off);
		break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = fx_io_for((unsigned)_i, m);

	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, true, what);
	fx_verify_all();
	st0 = fx_stats();
	fx_read_check(&io, r, &where[0], data, what);
	fx_check_bounced(&st0, true, what);
	fx_finish();
}
END_TEST

/* One write to a 4K device (RMW), a regular file and another 4K device. */
START_TEST(test_loop_mixed_regions)
{
	const uint64_t count = 13;
	struct dmio_region where[3];
	uint8_t *data;

	fx_seed(__func__, _i);
	where[0] = fx_region(0, 3, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 3, count);
	where[2] = fx_region(1, 8, count);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(_i % 3), count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	fx_mem_fill(m, data);
	fx_write_ok(&io, 3, where, data, "4K device + file + 4K device");
	fx_verify_all();
	for (unsigned i = 0; i < 3; i++)
		fx_read_check(&io, fx_mem_random(m->type, count * SECTOR), &where[i], data,
			      "4K device + file + 4K device");
	fx_finish();
}
END_TEST

/* Concurrent single-sector writes into the same 4 KiB blocks: every one
 * lands (the engine's read-modify-write must not lose a neighbour's). */
START_TEST(test_loop_rmw_concurrent_neighbours)
{
	enum { N = 64, ROUNDS = 4 };

	fx_seed(__func__, _i);
	for (unsigned round = 0; round < ROUNDS; round++) {
		unsigned base = fx.accepted;

		for (unsigned i = 0; i < N; i++) {
			struct dmio_region r = fx_region(0, 8 + i, 1);
			uint8_t *data = fx_random_buf(SECTOR);
			struct fx_mem *m = fx_mem_vm(SECTOR, 0);
			struct fx_io io = { .api = i % 2 ? FX_API_DMIO : FX_API_SEED, .async = true,
					    .op = DMIO_OP_WRITE, .mem = m };

			fx_mem_fill(m, data);
			ck_assert_int_eq(fx_submit_async(&io, 1, &r, NULL), 0);
			fx_model_write(&r, data);
		}
		fx_wait_done(base + N);
	}
	fx_finish();
	for (guint i = 0; i < fx.cbs->len; i++)
		ck_assert_uint_eq(atomic_load(&((struct fx_cb *)fx.cbs->pdata[i])->bits), 0);
	fx_verify(0);
}
END_TEST

static const uint64_t FLUSH_FIELD = 15; /* /sys/block/X/stat: flushes completed */

/* Flushes reach every device (the loop devices count them). */
START_TEST(test_loop_flush_reaches_every_device)
{
	static const unsigned flag_sets[] = { 0, DMIO_REQ_PREFLUSH, DMIO_REQ_FUA };
	unsigned flags = flag_sets[_i % 3];
	bool async = _i / 3;
	struct dmio_region where[TC_NLOOPS];
	uint64_t before[TC_NLOOPS];
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .flags = flags };
	unsigned long bits = 0;
	uint8_t *data = NULL;
	int rc;

	fx_seed(__func__, _i);
	if (fm_test_blockdev_stat(tc_loops[0].dev, FLUSH_FIELD) == UINT64_MAX)
		fm_test_skip("no flush counters in /sys/block/*/stat (kernel < 5.5)");
	for (unsigned i = 0; i < TC_NLOOPS; i++) {
		char *wc = fm_test_blockdev_attr(tc_loops[i].dev, "queue/write_cache");
		char *fua = fm_test_blockdev_attr(tc_loops[i].dev, "queue/fua");
		bool counts = wc && strcmp(wc, "write back") == 0 &&
			      (flags != DMIO_REQ_FUA || (fua && strcmp(fua, "0") == 0));

		g_free(wc);
		g_free(fua);
		if (!counts)
			fm_test_skip("%s: no volatile write cache (or native FUA): the "
				     "kernel sends no flush to count", tc_loops[i].dev);
		where[i] = fx_region(i, 8 * (i + 1), 16);
		before[i] = fm_test_blockdev_stat(tc_loops[i].dev, FLUSH_FIELD);
	}
	if (flags) {            /* a FUA or PREFLUSH write */
		data = fx_random_buf(16 * SECTOR);
		io.op = DMIO_OP_WRITE;
		io.mem = fx_mem_vm(16 * SECTOR, 0);
		fx_mem_fill(io.mem, data);
	} else {
		io.op = DMIO_OP_FLUSH;
	}
	rc = fx_do(&io, TC_NLOOPS, where, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "%s to 3 devices: rc %d bits %#lx",
		      flags == DMIO_REQ_FUA ? "FUA write" : flags ? "PREFLUSH write" : "flush", rc,
		      bits);
	for (unsigned i = 0; i < TC_NLOOPS; i++) {
		uint64_t after = fm_test_blockdev_stat(tc_loops[i].dev, FLUSH_FIELD);

		ck_assert_msg(after > before[i],
			      "%s to 3 devices: %s saw no flush (counter %" PRIu64 " -> %" PRIu64 ")",
			      flags == DMIO_REQ_FUA ? "FUA write" : flags ? "PREFLUSH write" : "flush",
			      tc_loops[i].dev, before[i], after);
		if (data)
			fx_model_write(&where[i], data);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_loop_discard_zeroes)
{
	enum dmio_op op = _i % 2 ? DMIO_OP_WRITE_ZEROES : DMIO_OP_DISCARD;
	bool async = _i / 2;
	struct dmio_region z[2] = { fx_region(0, 64, 64), fx_region(1, 8, 16) };
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = op };
	unsigned long bits = 0;
	char what[64];
	int rc;

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "%s on 4K devices (%s)", op_name(op),
		 async ? "async" : "sync");
	fx_zero_op(op, async, 2, z, what);
	fx_verify_all();
	fx_check_zeroes_read_back(&z[0], async);
	fx_check_zeroes_read_back(&z[1], async);

	/* Sub-block ranges.  Write-zeroes must zero exactly them; a discard may
	 * refuse (the device "cannot do" it), but if it says it did, the range
	 * reads as zeroes and the neighbours in the same blocks are intact. */
	struct dmio_region u[2] = { fx_region(0, 3, 10), fx_region(1, 131, 5) };

	rc = fx_do(&io, 2, u, &bits);
	if (op == DMIO_OP_WRITE_ZEROES || bits == 0) {
		ck_assert_msg(rc == 0 && bits == 0, "%s of sub-block ranges: rc %d bits %#lx",
			      op_name(op), rc, bits);
		fx_model_zero(&u[0]);
		fx_model_zero(&u[1]);
	} else {
		fprintf(stderr, "test_dmio: note: sub-block discard on a 4K device refused "
			"(rc %d, bits %#lx)\n", rc, bits);
		ck_assert_int_eq(rc, -EIO);
		for (unsigned i = 0; i < 2; i++)
			if (!(bits & (1UL << i)))
				fx_model_zero(&u[i]);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_DEV_EXCL claims a block device. */
START_TEST(test_loop_excl)
{
	struct dmio_dev *a = NULL, *b = NULL;
	int rc;

	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &a);
	ck_assert_msg(rc == 0, "first exclusive open: %d", rc);
	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &b);
	if (rc == 0)
		dmio_dev_close(b);
	ck_assert_msg(rc == -EBUSY, "second exclusive open of %s: %d, want -EBUSY",
		      tc_loops[2].dev, rc);
	dmio_dev_close(a);
	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &a);
	ck_assert_msg(rc == 0, "exclusive open after close: %d", rc);
	dmio_dev_close(a);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *dmio_loop4k_suite(void)
{
	Suite *s = suite_create("dmio_loop4k");
	TCase *tc;

	/* Loop devices need root: without it tc_loop_setup fails every test
	 * of this TCase (a failure, not a silent skip). */
	tc = tc_add(s, "loop4k", tc_loop_setup, tc_loop_teardown, fx_loop_setup, fx_teardown);
	tcase_add_test(tc, test_loop_dev_open);
	tcase_add_loop_test(tc, test_loop_rmw, 0, 2 * G_N_ELEMENTS(rmw_cases));
	tcase_add_loop_test(tc, test_loop_aligned_not_bounced, 0, 6);
	tcase_add_loop_test(tc, test_loop_unaligned_memory, 0, 9);
	tcase_add_loop_test(tc, test_loop_mixed_regions, 0, 3);
	tcase_add_test(tc, test_loop_rmw_concurrent_neighbours);
	tcase_add_loop_test(tc, test_loop_flush_reaches_every_device, 0, 6);
	tcase_add_loop_test(tc, test_loop_discard_zeroes, 0, 4);
	tcase_add_test(tc, test_loop_excl);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio_loop4k: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_loop4k_suite());
}
