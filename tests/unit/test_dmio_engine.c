/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of dmio: clients, devices, the engine's start, statistics,
 * shutdown, and the ring a thread owns (dmio_ring_init).
 * Fixtures and conventions: dmio_fx.h.
 */
#include "dmio_fx.h"

/* TCase client: dmio_client_create/destroy/resize, dmio_get/put */

START_TEST(test_client_create_destroy)
{
	static const unsigned mins[] = { 1, 4, 64, 256 };

	for (unsigned i = 0; i < G_N_ELEMENTS(mins); i++) {
		g_autoptr(dmio_client) c = dmio_client_create(mins[i]);

		ck_assert_msg(c != NULL, "dmio_client_create(%u) failed", mins[i]);
		ck_assert_int_eq(dmio_client_resize(c, 16), 0);
		ck_assert_int_eq(dmio_client_resize(c, -16), 0);
	}
	dmio_client_destroy(NULL);
}
END_TEST

/* Requests naming a client, many more in flight than its reserve. */
START_TEST(test_client_requests)
{
	enum { NREQ = 64 };
	bool async = _i % 2;
	struct dmio_client *c;
	unsigned f0, f1;

	fx_seed(__func__, _i);
	f0 = fx_add_file(NREQ * 16 * SECTOR, 0);
	f1 = fx_add_file(NREQ * 16 * SECTOR, 0);
	c = dmio_client_create(2);
	ck_assert_ptr_nonnull(c);
	for (unsigned i = 0; i < NREQ; i++) {
		uint64_t count = fm_rng_between(&fx.rng, 1, 16);
		struct dmio_region where[2] = { fx_region(f0, i * 16, count),
						fx_region(f1, i * 16, count) };
		uint8_t *data = fx_random_buf(count * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), count * SECTOR);
		struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE,
				    .mem = m, .client = c };
		unsigned long bits = 0;
		int rc;

		fx_mem_fill(m, data);
		if (async) {
			rc = fx_submit_async(&io, 2, where, NULL);
		} else {
			rc = fx_do(&io, 2, where, &bits);
			ck_assert_uint_eq(bits, 0);
		}
		ck_assert_msg(rc == 0, "request %u with a client: %d", i, rc);
		fx_model_write(&where[0], data);
		fx_model_write(&where[1], data);
	}
	/* Once every callback has run, no request of @c is in flight. */
	fx_wait_done(fx.accepted);
	dmio_client_destroy(c);
	/* The engine goes on with the default client. */
	{
		struct dmio_region r = fx_region(f0, 0, 16);
		struct fx_io io = { .api = FX_API_SEED, .async = async };

		fx_read_check(&io, fx_mem_vm(16 * SECTOR, 0), &r, fx_model_at(&r), "after destroy");
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_client_get_put)
{
	struct dmio_region r;
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	r = fx_region(fx_add_file(256 * 1024, 0), 8, 64);
	/* Before any I/O, as the seed asks ("before using any of the services"). */
	rc = dmio_get(16);
	ck_assert_msg(rc >= 0, "dmio_get(16) before the first request: %d", rc);
	data = fx_random_buf(64 * SECTOR);
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, NULL);
	ck_assert_int_eq(rc, 0);
	fx_model_write(&r, data);
	{
		struct fx_io io = { .api = FX_API_SEED, .async = true };

		fx_read_check(&io, fx_mem_pl(64 * SECTOR, 512), &r, data, "after dmio_get");
	}
	dmio_put(16);
	rc = dmio_get(4);
	ck_assert_int_ge(rc, 0);
	dmio_put(4);
	fx_finish();
	fx_verify_all();
	/* And again after a restart. */
	rc = dmio_get(8);
	ck_assert_msg(rc >= 0, "dmio_get(8) after dmio_engine_shutdown: %d", rc);
	ck_assert_int_eq(dmio_sync_vm(1, &r, DMIO_OP_READ, data, NULL), 0);
	dmio_put(8);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase dev: dmio_dev_open and the accessors */

START_TEST(test_dev_open_regular_file)
{
	const uint64_t size = 3 * MiB + 12 * 1024;
	char *path;
	int fd, fl;

	fx_seed(__func__, _i);
	path = g_strdup_printf("%s/regular.img", tc_dir);
	/* A size that is not a whole number of sectors: bytes exact, sectors
	 * rounded down (the partial sector cannot be addressed). */
	fm_test_create_file(path, 64 * 1024 + 1000);
	{
		g_autoptr(dmio_dev) odd = NULL;

		ck_assert_int_eq(dmio_dev_open(path, 0, &odd), 0);
		ck_assert_uint_eq(dmio_dev_size(odd), 64 * 1024 + 1000);
		ck_assert_uint_eq(dmio_dev_sectors(odd), 129);
	}
	fm_test_create_file(path, size);
	for (unsigned v = 0; v < 3; v++) {
		static const unsigned flags[] = { 0, DMIO_DEV_NO_DIRECT, DMIO_DEV_RDONLY };
		g_autoptr(dmio_dev) dev = NULL;
		int rc = dmio_dev_open(path, flags[v], &dev);

		ck_assert_msg(rc == 0, "dmio_dev_open(%s, %#x): %d", path, flags[v], rc);
		ck_assert_str_eq(dmio_dev_name(dev), path);
		ck_assert_uint_eq(dmio_dev_size(dev), size);
		ck_assert_uint_eq(dmio_dev_sectors(dev), size / SECTOR);
		ck_assert(!dmio_dev_is_blockdev(dev));
		ck_assert_msg(fm_is_power_of_2(dmio_dev_logical_block_size(dev)) &&
			      dmio_dev_logical_block_size(dev) >= SECTOR,
			      "logical block size %u", dmio_dev_logical_block_size(dev));
		fd = dmio_dev_fd(dev);
		ck_assert_int_ge(fd, 0);
		ck_assert_msg(fcntl(fd, F_GETFD) & FD_CLOEXEC, "fd without O_CLOEXEC");
		fl = fcntl(fd, F_GETFL);
		if (flags[v] & DMIO_DEV_NO_DIRECT)
			ck_assert(!dmio_dev_is_direct(dev));
		else
			ck_assert_msg(dmio_dev_is_direct(dev) == fm_test_supports_direct(path),
				      "is_direct %d, but the fs %s O_DIRECT", dmio_dev_is_direct(dev),
				      fm_test_supports_direct(path) ? "takes" : "refuses");
		ck_assert_msg(!!(fl & O_DIRECT) == dmio_dev_is_direct(dev),
			      "O_DIRECT on the fd (%d) disagrees with dmio_dev_is_direct (%d)",
			      !!(fl & O_DIRECT), dmio_dev_is_direct(dev));
		if (flags[v] & DMIO_DEV_RDONLY)
			ck_assert_int_eq(fl & O_ACCMODE, O_RDONLY);
		else
			ck_assert_int_eq(fl & O_ACCMODE, O_RDWR);
	}
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_open_missing)
{
	struct dmio_dev *sentinel = (struct dmio_dev *)&sentinel;
	struct dmio_dev *dev = sentinel;
	char *path = g_strdup_printf("%s/no-such-file", tc_dir);
	char *deep = g_strdup_printf("%s/no-such-dir/file", tc_dir);
	int rc;

	rc = dmio_dev_open(path, 0, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	ck_assert_msg(dev == sentinel, "*ret_dev changed on failure");
	rc = dmio_dev_open(path, DMIO_DEV_RDONLY, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	rc = dmio_dev_open(deep, DMIO_DEV_CREATE, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	ck_assert(dev == sentinel);
	/* A directory is neither a regular file nor a block device. */
	rc = dmio_dev_open(tc_dir, 0, &dev);
	ck_assert_msg(rc < 0, "dmio_dev_open of a directory succeeded");
	ck_assert(dev == sentinel);
	g_free(path);
	g_free(deep);
}
END_TEST

START_TEST(test_dev_create)
{
	char *path = g_strdup_printf("%s/created.img", tc_dir);
	struct dmio_dev *dev = NULL;
	struct stat st;
	uint8_t data[8192], back[8192];
	int rc;

	fx_seed(__func__, _i);
	unlink(path);
	rc = dmio_dev_open(path, DMIO_DEV_CREATE, &dev);
	ck_assert_msg(rc == 0, "DMIO_DEV_CREATE of a missing file: %d", rc);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(dmio_dev_size(dev), 0);
	dmio_dev_close(dev);
	dev = NULL;

	/* On an existing file it neither truncates nor changes it. */
	fm_rng_fill(&fx.rng, data, sizeof(data));
	fm_test_write_file(path, 0, data, sizeof(data));
	rc = dmio_dev_open(path, DMIO_DEV_CREATE, &dev);
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(dmio_dev_size(dev), sizeof(data));
	dmio_dev_close(dev);
	fm_test_read_file(path, 0, back, sizeof(back));
	fm_assert_bytes_eq(back, data, sizeof(data), "existing file opened with DMIO_DEV_CREATE");
	ck_assert_uint_eq(fm_test_file_size(path), sizeof(data));
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_open_fd)
{
	char *path = g_strdup_printf("%s/byfd.img", tc_dir);
	struct dmio_dev *sentinel = (struct dmio_dev *)&sentinel;
	struct dmio_dev *dev = NULL;
	int fd, rc;

	fm_test_create_file(path, 192 * 1024);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	rc = dmio_dev_open_fd(fd, "leg-by-fd", &dev);
	ck_assert_int_eq(rc, 0);
	ck_assert_str_eq(dmio_dev_name(dev), "leg-by-fd");
	ck_assert_uint_eq(dmio_dev_size(dev), 192 * 1024);
	ck_assert(!dmio_dev_is_direct(dev));
	dmio_dev_close(dev);    /* closes fd */
	dev = NULL;

	if (fm_test_supports_direct(path)) {
		fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(dmio_dev_open_fd(fd, "direct", &dev), 0);
		ck_assert_msg(dmio_dev_is_direct(dev), "an O_DIRECT fd not seen as direct");
		dmio_dev_close(dev);
		dev = NULL;
	}

	/* Ownership also on failure: a directory fd is refused and closed. */
	fd = open(tc_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	dev = sentinel;
	rc = dmio_dev_open_fd(fd, "a directory", &dev);
	ck_assert_msg(rc < 0, "dmio_dev_open_fd of a directory succeeded");
	ck_assert(dev == sentinel);
	errno = 0;
	ck_assert_msg(fcntl(fd, F_GETFD) == -1 && errno == EBADF,
		      "dmio_dev_open_fd failed but left the fd open");
	ck_assert_int_lt(dmio_dev_open_fd(-1, "bad", &dev), 0);
	ck_assert(dev == sentinel);
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_refresh_size)
{
	unsigned f;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = 1;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	ck_assert_int_eq(truncate(fx.files[f].path, 128 * 1024), 0);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(f)), 64 * 1024);
	ck_assert_int_eq(dmio_dev_refresh_size(fx_dev(f)), 0);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(f)), 128 * 1024);
	ck_assert_uint_eq(dmio_dev_sectors(fx_dev(f)), 256);
	fx.files[f].model = g_realloc(fx.files[f].model, 128 * 1024);
	memset(fx.files[f].model + 64 * 1024, 0, 64 * 1024);
	fx.files[f].size = 128 * 1024;
	/* The new space is usable. */
	r = fx_region(f, 200, 40);
	data = fx_random_buf(40 * SECTOR);
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write into the grown part: %d %#lx", rc, bits);
	fx_model_write(&r, data);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase engine: init options, restart, stats, shutdown drains */

START_TEST(test_engine_init_and_restart)
{
	unsigned f0, f1;
	struct dmio_region where[2];
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	f0 = fx_add_file(1 * MiB, 0);
	f1 = fx_add_file(1 * MiB, 0);

	/* Shutdown of an engine that is not running is harmless. */
	fx_shutdown();
	fx_shutdown();

	ck_assert_int_eq(dmio_engine_init(NULL), 0);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	ck_assert_int_eq(dmio_engine_init(NULL), -EBUSY);
	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 8192 }),
			 -EBUSY);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	fx_shutdown();

	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 4095 }),
			 -EINVAL);
	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 512 }),
			 -EINVAL);
	/* A remote device's poll and its linked timeout need two SQEs. */
	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .sq_entries = 1 }),
			 -EINVAL);
	/* A refused init left it stopped. */
	ck_assert_int_eq(dmio_engine_init(NULL), 0);
	fx_shutdown();

	/* Tiny rings and pieces: 64 pieces per region through 8 SQ entries. */
	rc = dmio_engine_init(&(struct dmio_engine_opts){ .rings = 2, .sq_entries = 8,
							  .max_io_bytes = 4096 });
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(dmio_max_io_bytes(), 4096);
	where[0] = fx_region(f0, 0, 512);
	where[1] = fx_region(f1, 1024, 512);
	data = fx_random_buf(512 * SECTOR);
	for (unsigned a = 0; a < 2; a++) {
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)a, 512 * SECTOR);
		struct fx_io io = { .api = FX_API_DMIO, .async = a, .mem = m };

		fx_mem_fill(m, data);
		fx_write_ok(&io, 2, where, data, "engine with 8 SQ entries, 4 KiB pieces");
		fx_read_check(&io, fx_mem_random(DMIO_MEM_BVEC, 512 * SECTOR), &where[1], data,
			      "engine with 8 SQ entries, 4 KiB pieces");
	}
	fx_shutdown();
	fx_verify_all();

	/* Started again by the first request, with defaults. */
	data = fx_random_buf(64 * SECTOR);
	where[0] = fx_region(f0, 1900, 64);
	ck_assert_int_eq(dmio_sync_vm(1, where, DMIO_OP_WRITE, data, NULL), 0);
	fx_model_write(&where[0], data);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_engine_stats)
{
	/* tc_dir may be in memory, whose small pieces skip io_uring. */
	bool in_memory = fm_test_in_memory(tc_dir);
	struct dmio_region where[3];
	struct dmio_stats st;
	unsigned f[3];
	uint8_t *data;
	unsigned long bits;

	fx_seed(__func__, _i);
	f[0] = fx_add_file(256 * 1024, 0);
	f[1] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	f[2] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(f[i], 8, 8);
	data = fx_random_buf(8 * SECTOR);

	for (unsigned round = 0; round < 2; round++) {
		ck_assert_int_eq(dmio_engine_init(NULL), 0);
		st = fx_stats();
		ck_assert_msg(st.requests == 0 && st.sqes == 0 && st.submits == 0 &&
			      st.bounced == 0 && st.resubmits == 0 && st.region_errors == 0,
			      "round %u: counters not zero after dmio_engine_init", round);
		/* 3 sync + 2 async accepted, 2 rejected. */
		for (unsigned i = 0; i < 3; i++)
			ck_assert_int_eq(dmio_sync_vm(1, where, DMIO_OP_WRITE, data, NULL), 0);
		for (unsigned i = 0; i < 2; i++) {
			struct fx_io io = { .api = FX_API_SEED, .async = true, .op = DMIO_OP_READ,
					    .mem = fx_mem_vm(8 * SECTOR, 0) };

			ck_assert_int_eq(fx_do(&io, 1, where, &bits), 0);
		}
		ck_assert_int_eq(dmio_sync_vm(2, where, DMIO_OP_READ, data, NULL), -EINVAL);
		ck_assert_int_eq(dmio_sync_vm(0, where, DMIO_OP_WRITE, data, NULL), -EINVAL);
		st = fx_stats();
		ck_assert_uint_eq(st.requests, 5);
		if (in_memory) {
			/* 4 KiB pieces of tmpfs legs: the reaper's own copies. */
			ck_assert_uint_ge(st.inline_ios, 5);
			ck_assert_uint_eq(st.sqes, 0);
			ck_assert_uint_eq(st.submits, 0);
		} else {
			ck_assert_uint_ge(st.sqes, 5);
			ck_assert_uint_eq(st.inline_ios, 0);
			ck_assert_uint_ge(st.submits, 1);
			ck_assert_uint_le(st.submits, st.sqes);
		}
		ck_assert_uint_eq(st.region_errors, 0);
		/* Two failing regions out of three. */
		ck_assert_int_eq(dmio_sync_vm(3, where, DMIO_OP_WRITE, data, &bits), -EIO);
		ck_assert_uint_eq(bits, 0x6);
		st = fx_stats();
		ck_assert_uint_eq(st.requests, 6);
		ck_assert_uint_eq(st.region_errors, 2);
		fx_finish();
	}
	fx_model_write(&where[0], data);
	fx_verify_all();
}
END_TEST

static void slow_cb(unsigned long bits, void *context)
{
	g_usleep(200);
	fx_cb_fn(bits, context);
}

/* 200 async writes, then shutdown: every callback ran before it returned. */
START_TEST(test_engine_shutdown_drains)
{
	enum { NREQ = 200, SLOT = 128 };
	unsigned f0, f1, done, after;
	struct fx_cb *cbs[NREQ];

	fx_seed(__func__, _i);
	f0 = fx_add_file((uint64_t)NREQ * SLOT * SECTOR, 0);
	f1 = fx_add_file((uint64_t)NREQ * SLOT * SECTOR, 0);
	for (unsigned i = 0; i < NREQ; i++) {
		struct dmio_region where[2] = { fx_region(f0, i * SLOT, SLOT),
						fx_region(f1, (NREQ - 1 - i) * SLOT, SLOT) };
		uint8_t *data = fx_random_buf(SLOT * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), SLOT * SECTOR);
		int rc;

		fx_mem_fill(m, data);
		cbs[i] = fx_cb_new();
		rc = fx_raw_submit(i % 2 ? FX_API_DMIO : FX_API_SEED, DMIO_OP_WRITE, 0, m, NULL, 2,
				   where, slow_cb, cbs[i], NULL);
		ck_assert_msg(rc == 0, "async write %u: %d", i, rc);
		atomic_store(&cbs[i]->accepted, true);
		fx_model_write(&where[0], data);
		fx_model_write(&where[1], data);
	}
	fm_test_sync_lock(&fx.sync);
	done = fx.done;
	fm_test_sync_unlock(&fx.sync);
	fx_shutdown();
	fm_test_sync_lock(&fx.sync);
	after = fx.done;
	fm_test_sync_unlock(&fx.sync);
	ck_assert_msg(after == NREQ,
		      "dmio_engine_shutdown returned with %u of %u callbacks run (%u before it)",
		      after, NREQ, done);
	if (done == NREQ)
		fprintf(stderr, "test_dmio: note: all callbacks had run before shutdown began\n");
	for (unsigned i = 0; i < NREQ; i++) {
		ck_assert_uint_eq(atomic_load(&cbs[i]->calls), 1);
		ck_assert_uint_eq(atomic_load(&cbs[i]->bits), 0);
	}
	fx_verify_all();
}
END_TEST

struct returning {
	atomic_uint returning;
	unsigned spin;
};

/* Say it returns, then take a while to do so. */
static void returning_cb(unsigned long bits, void *context)
{
	struct returning *ret = context;

	(void)bits;
	atomic_store(&ret->returning, 1);
	for (volatile unsigned spin = 0; spin < ret->spin; spin++)
		;
}

/*
 * Shutdown right as the last callback returns, many times.  The reaper ends
 * the request after the callback; a shutdown that saw the count reach zero
 * and then joined the reaper while holding a lock this last
 * dmio_request_end() still wanted hung for good (found under TSan, once in
 * about 60 runs of the test above).  The test thread spins and calls
 * shutdown at once; the callback lingers a little longer each time, so
 * that the shutdown lands at every point of the reaper's way out.
 */
START_TEST(test_engine_shutdown_races_last_callback)
{
	/* valgrind runs one thread at a time: no race to look for there. */
	unsigned iter = fm_test_under_valgrind() ? 10 : 1000;
	uint8_t *buf = fx_buf(4096);
	struct dmio_region where;
	unsigned f0;

	fx_seed(__func__, _i);
	f0 = fx_add_file(64 * 1024, 0);
	where = fx_region(f0, 8, 8);
	for (unsigned i = 0; i < iter; i++) {
		struct returning ret = { .spin = i % 250 };

		ck_assert_int_eq(dmio_engine_init(NULL), 0);
		wd_arm("dmio_engine_shutdown() as the last callback returns");
		ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, buf, returning_cb, &ret),
				 0);
		while (!atomic_load(&ret.returning))
			;
		dmio_engine_shutdown();
		wd_disarm();
		ck_assert_msg(memcmp(buf, fx.files[f0].model + 8 * SECTOR, 4096) == 0,
			      "iteration %u: the read returned other bytes", i);
	}
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase ring: dmio_ring_init(), the ring of a thread's own */

/*
 * The caller's flags are kept and the best task-work flags added: on this
 * project's kernels (6.14+) SINGLE_ISSUER | DEFER_TASKRUN, under valgrind
 * none (it does not know their semantics).  A ring the kernel refuses
 * leaves the caller's params as they were.
 */
START_TEST(test_ring_init)
{
	const unsigned task_flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
				    IORING_SETUP_COOP_TASKRUN;
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
	struct io_uring ring;

	ck_assert_int_eq(dmio_ring_init(8, &ring, &p), 0);
	ck_assert_uint_eq(ring.flags, p.flags);
	ck_assert(p.flags & IORING_SETUP_SQE128);
	if (fm_test_under_valgrind())
		ck_assert_uint_eq(p.flags & task_flags, 0);
	else
		ck_assert_uint_eq(p.flags & task_flags,
				  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
	io_uring_queue_exit(&ring);

	/* No ring of 0 entries, whatever the flags: -EINVAL after each. */
	p = (struct io_uring_params){ .flags = IORING_SETUP_SQE128 };
	ck_assert_int_eq(dmio_ring_init(0, &ring, &p), -EINVAL);
	ck_assert_uint_eq(p.flags, IORING_SETUP_SQE128);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *dmio_engine_suite(void)
{
	Suite *s = suite_create("dmio_engine");
	TCase *tc;

	tc = tc_add(s, "client", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_client_create_destroy);
	tcase_add_loop_test(tc, test_client_requests, 0, 2);
	tcase_add_test(tc, test_client_get_put);

	tc = tc_add(s, "dev", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_dev_open_regular_file);
	tcase_add_test(tc, test_dev_open_missing);
	tcase_add_test(tc, test_dev_create);
	tcase_add_test(tc, test_dev_open_fd);
	tcase_add_test(tc, test_dev_refresh_size);

	tc = tc_add(s, "engine", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_engine_init_and_restart);
	tcase_add_test(tc, test_engine_stats);
	tcase_add_test(tc, test_engine_shutdown_drains);
	tcase_add_test(tc, test_engine_shutdown_races_last_callback);

	tc = tc_add(s, "ring", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_ring_init);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio_engine: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_engine_suite());
}
