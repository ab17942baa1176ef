/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of dmio: fault injection, and legs on tmpfs whose small I/O the
 * reaper does itself.
 * Fixtures and conventions: dmio_fx.h.
 */
#include <sys/mount.h>

#include "dmio_fx.h"

/*----------------------------------------------------------------*/
/* TCase fault: fault injection (dmio_dev_set_fault and friends) */

static void fx_set_fault(unsigned idx, const struct dmio_fault *f)
{
	int r = dmio_dev_set_fault(fx_dev(idx), f);

	ck_assert_msg(r == 0, "dmio_dev_set_fault(%s): %d (%s)", f ? "set" : "clear", r,
		      g_strerror(-r));
}

static void fx_check_fault_stats(unsigned idx, uint64_t failed, uint64_t dropped,
				 uint64_t corrupted, const char *what)
{
	struct dmio_fault_stats st;

	memset(&st, 0xcc, sizeof(st));
	dmio_dev_get_fault_stats(fx_dev(idx), &st);
	ck_assert_msg(st.failed == failed && st.dropped == dropped && st.corrupted == corrupted,
		      "%s: fault stats of file %u: failed %" PRIu64 " dropped %" PRIu64
		      " corrupted %" PRIu64 ", want %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      what, idx, st.failed, st.dropped, st.corrupted, failed, dropped, corrupted);
}

/* Read @r into fresh memory of @type: the rc, *ret_bits, and the bytes. */
static int fx_read_into(bool async, enum dmio_mem_type type, size_t misalign,
			const struct dmio_region *r, unsigned long *ret_bits, uint8_t **ret_data)
{
	size_t len = r->count * SECTOR;
	struct fx_mem *m = misalign ? fx_mem_vm(len, misalign) : fx_mem_random(type, len);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_READ, .mem = m };
	int rc = fx_do(&io, 1, r, ret_bits);

	fx_mem_check_guards(m, "fault read");
	if (ret_data)
		*ret_data = fx_mem_gather(m);
	return rc;
}

/* Write @data (count * 512 bytes) to @n regions; returns the rc and bits. */
static int fx_write_raw(bool async, size_t misalign, unsigned n, const struct dmio_region *where,
			const uint8_t *data, unsigned long *ret_bits)
{
	size_t len = where[0].count * SECTOR;
	struct fx_mem *m = misalign ? fx_mem_vm(len, misalign)
				    : fx_mem_random(DMIO_MEM_VM, len);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE, .mem = m };

	fx_mem_fill(m, data);
	return fx_do(&io, n, where, ret_bits);
}

/* Reads fail exactly where they overlap the faulted range, on that device. */
START_TEST(test_fault_reads_in_range)
{
	static const struct { uint64_t sector, count; bool fails; } reads[] = {
		{ 0, 8, false },   { 92, 8, false }, { 93, 8, true },  { 100, 8, true },
		{ 104, 1, true },  { 107, 4, true }, { 108, 8, false }, { 96, 64, true },
		{ 200, 16, false }, { 101, 3, true },
	};
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	unsigned f, g, nfail = 0;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	g = fx_add_file(256 * 1024, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .error = ENODATA,
					      .sector = 100, .count = 8 });
	for (unsigned i = 0; i < G_N_ELEMENTS(reads); i++) {
		struct dmio_region r = fx_region(f, reads[i].sector, reads[i].count);
		struct dmio_region rg = fx_region(g, reads[i].sector, reads[i].count);
		unsigned long bits = FX_BITS_POISON;
		uint8_t *got;
		int rc;

		rc = fx_read_into(async, type, 0, &r, &bits, &got);
		if (reads[i].fails) {
			nfail++;
			ck_assert_msg(rc == -EIO && bits == 1,
				      "read %" PRIu64 "+%" PRIu64 " in the faulted range: rc %d bits %#lx",
				      r.sector, r.count, rc, bits);
		} else {
			ck_assert_msg(rc == 0 && bits == 0,
				      "read %" PRIu64 "+%" PRIu64 " outside the range: rc %d bits %#lx",
				      r.sector, r.count, rc, bits);
			fm_assert_bytes_eq(got, fx_model_at(&r), r.count * SECTOR, "read %u", i);
		}
		/* The same sectors of another device are not affected. */
		rc = fx_read_into(async, type, 0, &rg, &bits, &got);
		ck_assert_msg(rc == 0 && bits == 0, "read of the other device: rc %d", rc);
		fm_assert_bytes_eq(got, fx_model_at(&rg), rg.count * SECTOR, "other device %u", i);
	}
	fx_check_fault_stats(f, nfail, 0, 0, "reads");
	fx_check_fault_stats(g, 0, 0, 0, "other device");

	/* DMIO_FAULT_READS leaves writes alone. */
	{
		struct dmio_region w = fx_region(f, 100, 8);
		uint8_t *data = fx_random_buf(8 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_write_raw(async, 0, 1, &w, data, &bits);

		ck_assert_msg(rc == 0 && bits == 0, "write under a read fault: rc %d", rc);
		fx_model_write(&w, data);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* A 2-region write with one faulted leg: its bit, the other leg written,
 * the faulted file untouched; write-zeroes in the range fails too. */
START_TEST(test_fault_writes_one_leg)
{
	bool unaligned = _i % 2, async = _i / 2;
	uint64_t sector = unaligned ? 13 : 64, count = unaligned ? 21 : 32;
	struct dmio_region where[2], z;
	unsigned a, b;
	uint8_t *data, *snap, *now;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	a = fx_add_file(256 * 1024, 0);
	b = fx_add_file(256 * 1024, 0);
	where[0] = fx_region(a, sector, count);
	where[1] = fx_region(b, sector, count);
	/* The range overlaps only the region's last sector. */
	fx_set_fault(b, &(struct dmio_fault){ .flags = DMIO_FAULT_WRITES,
					      .sector = sector + count - 1, .count = 100 });
	snap = g_memdup2(fx_read_back(b), fx.files[b].size);
	data = fx_random_buf(count * SECTOR);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 2, where, data, &bits);
	ck_assert_msg(rc == -EIO && bits == 0x2, "write with a faulted leg: rc %d bits %#lx", rc,
		      bits);
	fx_model_write(&where[0], data);
	fx_check_fault_stats(b, 1, 0, 0, "one failed write");
	fx_check_fault_stats(a, 0, 0, 0, "the good leg");

	/* Write-zeroes overlapping the range: nothing is zeroed. */
	z = fx_region(b, sector + count, 8);
	{
		struct fx_io zio = { .api = FX_API_DMIO, .async = async,
				     .op = DMIO_OP_WRITE_ZEROES };

		rc = fx_do(&zio, 1, &z, &bits);
		ck_assert_msg(rc == -EIO && bits == 1, "write-zeroes in the range: rc %d bits %#lx",
			      rc, bits);
	}
	fx_check_fault_stats(b, 2, 0, 0, "write-zeroes");

	/* Outside the range, writes to b still work. */
	z = fx_region(b, 400, 8);
	rc = fx_write_raw(async, 0, 1, &z, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write outside the range: rc %d bits %#lx", rc, bits);
	fx_model_write(&z, data);
	memcpy(snap + 400 * SECTOR, data, 8 * SECTOR);
	fx_finish();
	fx_verify_all();
	now = fx_read_back(b);
	fm_assert_bytes_eq(now, snap, fx.files[b].size, "faulted leg against its snapshot");
	g_free(snap);
}
END_TEST

/* DMIO_FAULT_FLUSHES fails the flush of that device only, whatever the range. */
START_TEST(test_fault_flush)
{
	bool async = _i % 2;
	struct dmio_region where[3];
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };
	unsigned long bits = FX_BITS_POISON;
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(64 * 1024, 0), 0, 8);
	fx_set_fault(1, &(struct dmio_fault){ .flags = DMIO_FAULT_FLUSHES, .error = ENOSPC,
					      .sector = 100, .count = 1 });
	rc = fx_do(&io, 3, where, &bits);
	ck_assert_msg(rc == -EIO && bits == 0x2, "flush with a faulted device: rc %d bits %#lx",
		      rc, bits);
	fx_check_fault_stats(1, 1, 0, 0, "flush");
	/* Reads and writes of that device are not affected. */
	data = fx_random_buf(8 * SECTOR);
	rc = fx_write_raw(async, 0, 1, &where[1], data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write under a flush fault: rc %d", rc);
	fx_model_write(&where[1], data);
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &where[1], &bits, NULL);
	ck_assert_msg(rc == 0 && bits == 0, "read under a flush fault: rc %d", rc);
	fx_check_fault_stats(1, 1, 0, 0, "after read and write");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_FAULT_DROP_WRITES: success reported, nothing written; until cleared. */
START_TEST(test_fault_drop_writes)
{
	bool unaligned = _i % 2, async = _i / 2;
	uint64_t sector = unaligned ? 13 : 64, count = unaligned ? 21 : 32;
	struct dmio_region r;
	unsigned f;
	uint8_t *data, *got;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	r = fx_region(f, sector, count);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_DROP_WRITES });
	data = fx_random_buf(count * SECTOR);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "dropped write: rc %d bits %#lx", rc, bits);
	fx_check_fault_stats(f, 0, 1, 0, "dropped write");
	fx_verify(f);   /* the model was not updated: the file must not change */
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "read after a dropped write: rc %d", rc);
	fm_assert_bytes_eq(got, fx_model_at(&r), count * SECTOR, "old data after a dropped write");

	fx_set_fault(f, NULL);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write after clearing: rc %d", rc);
	fx_model_write(&r, data);
	fx_check_fault_stats(f, 0, 1, 0, "after clearing");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_FAULT_CORRUPT_READS: success, one byte of every 512 differs; the
 * file itself is intact.  Direct and bounced memory, aligned or not. */
START_TEST(test_fault_corrupt_reads)
{
	unsigned shape = (unsigned)_i % 3;      /* aligned vm, page list, misaligned vm */
	bool async = _i / 3;
	uint64_t sector = shape == 2 ? 13 : 64, count = shape == 2 ? 21 : 32;
	struct dmio_region r;
	unsigned f;
	uint8_t *got;
	const uint8_t *want;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	r = fx_region(f, sector, count);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_CORRUPT_READS, .sector = 10,
					      .count = 100 });
	rc = fx_read_into(async, shape == 1 ? DMIO_MEM_PAGE_LIST : DMIO_MEM_VM,
			  shape == 2 ? 7 : 0, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "corrupted read: rc %d bits %#lx", rc, bits);
	want = fx_model_at(&r);
	for (uint64_t s = 0; s < count; s++) {
		size_t d = fm_test_count_diff(got + s * SECTOR, want + s * SECTOR, SECTOR);

		ck_assert_msg(d == 1, "sector %" PRIu64 " of the read: %zu bytes differ, want 1",
			      sector + s, d);
	}
	fx_check_fault_stats(f, 0, 0, 1, "corrupted read");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* rate_ppm 500000: about half of 2000 single-sector reads fail. */
START_TEST(test_fault_rate)
{
	const unsigned n = 2000;
	unsigned f, failed = 0;
	struct fx_io io = { .api = FX_API_DMIO, .async = true, .op = DMIO_OP_READ };

	fx_seed(__func__, 0);
	f = fx_add_file(256 * 1024, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .rate_ppm = 500000,
					      .seed = fx.seed });
	for (unsigned i = 0; i < n; i++) {
		struct dmio_region r = fx_region(f, fm_rng_between(&fx.rng, 0, 511), 1);

		io.mem = fx_mem_vm(SECTOR, 0);
		ck_assert_int_eq(fx_submit_async(&io, 1, &r, NULL), 0);
	}
	fx_finish();
	for (guint i = 0; i < fx.cbs->len; i++)
		failed += atomic_load(&((struct fx_cb *)fx.cbs->pdata[i])->bits) != 0;
	ck_assert_msg(failed >= n * 35 / 100 && failed <= n * 65 / 100,
		      "rate 50%%: %u of %u reads failed", failed, n);
	fx_check_fault_stats(f, failed, 0, 0, "rate");
}
END_TEST

/*
 * Flakey up_ms=200 down_ms=200.  The cycle starts somewhere inside the
 * set call, and each I/O is decided somewhere inside its own call: only
 * I/Os whose whole window falls in one phase (with a margin) are judged,
 * so a loaded machine makes the test judge fewer I/Os, not fail.
 */
START_TEST(test_fault_flakey)
{
	const gint64 up = 200000, down = 200000, period = up + down, margin = 3000;
	gint64 t_a, t_b, end;
	unsigned f, n_up = 0, n_down = 0;
	struct dmio_region r;

	fx_seed(__func__, 0);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 8, 8);
	dmio_engine_init(NULL);
	t_a = g_get_monotonic_time();
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .up_ms = 200,
					      .down_ms = 200 });
	t_b = g_get_monotonic_time();
	end = t_b + 1300000;
	while (g_get_monotonic_time() < end) {
		gint64 ib = g_get_monotonic_time(), ia, lo, hi;
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);

		ia = g_get_monotonic_time();
		lo = MAX(ib - t_b - margin, 0); /* bounds of (decision - cycle start) */
		hi = ia - t_a + margin;
		if (lo / period == hi / period) {
			if (hi % period < up) {
				ck_assert_msg(rc == 0 && bits == 0,
					      "read at %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
					      " us (up phase) failed: rc %d", lo, hi, rc);
				n_up++;
			} else if (lo % period >= up) {
				ck_assert_msg(rc == -EIO && bits == 1,
					      "read at %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
					      " us (down phase): rc %d bits %#lx", lo, hi, rc, bits);
				n_down++;
			}
		}
		g_usleep(5000);
	}
	ck_assert_msg(n_up >= 3 && n_down >= 3,
		      "too few reads clearly in one phase: %u up, %u down", n_up, n_down);
	fx_finish();
}
END_TEST

/* fault.c's rate draw number @n for @seed (the same splitmix64). */
static bool fx_draw_hits(uint64_t seed, uint64_t n, uint32_t rate_ppm)
{
	uint64_t x = seed + n * 0x9e3779b97f4a7c15ULL;

	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x % 1000000u < rate_ppm;
}

/*
 * io_uring may complete a read or write with -ECANCELED (it did nothing):
 * dmio resubmits the piece, a few times at most.  Injected here through the
 * fault injector with a seed whose first draw fails the piece and whose
 * second lets it through: the request must succeed, with the right bytes,
 * and exactly one injected failure counted.  A cancellation that persists
 * still fails, after a bounded number of tries.
 * _i: bit 0 async, bit 1 write.
 */
START_TEST(test_fault_canceled_retried)
{
	bool async = _i & 1, write = _i & 2;
	const uint32_t rate = 500000;
	uint64_t seed = 0;
	struct dmio_region r;
	struct dmio_fault_stats st;
	unsigned long bits = FX_BITS_POISON;
	uint8_t *data, *rd;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 16, 8); /* one piece */
	data = fx_random_buf(8 * SECTOR);
	while (!(fx_draw_hits(seed, 0, rate) && !fx_draw_hits(seed, 1, rate)))
		seed++;
	fx_set_fault(f, &(struct dmio_fault){
				.flags = write ? DMIO_FAULT_WRITES : DMIO_FAULT_READS,
				.error = ECANCELED, .rate_ppm = rate, .seed = seed });
	if (write) {
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "write cancelled once: rc %d bits %#lx", rc,
			      bits);
		fx_model_write(&r, data);
	} else {
		rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &rd);
		ck_assert_msg(rc == 0 && bits == 0, "read cancelled once: rc %d bits %#lx", rc,
			      bits);
		fm_assert_bytes_eq(rd, fx_model_at(&r), r.count * SECTOR, "read cancelled once");
	}
	fx_check_fault_stats(f, 1, 0, 0, "cancelled once");

	/* Cancelled every time: the error stands, after a few tries. */
	fx_set_fault(f, &(struct dmio_fault){
				.flags = write ? DMIO_FAULT_WRITES : DMIO_FAULT_READS,
				.error = ECANCELED });
	if (write)
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
	else
		rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == -EIO && bits == 1, "cancelled every time: rc %d bits %#lx", rc,
		      bits);
	dmio_dev_get_fault_stats(fx_dev(f), &st);
	ck_assert_msg(st.failed >= 1 + 2 && st.failed <= 1 + 16,
		      "cancelled every time: %" PRIu64 " tries", st.failed - 1);
	fx_set_fault(f, NULL);
	fx_finish();
	fx_verify_all();
}
END_TEST

/* Clearing a fault restores normal I/O; get_fault then says -ENOENT. */
START_TEST(test_fault_clear_restores)
{
	bool async = _i % 2;
	struct dmio_region r;
	struct dmio_fault got;
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };
	unsigned f;
	uint8_t *data, *rd;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 16, 16);
	data = fx_random_buf(16 * SECTOR);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES |
							DMIO_FAULT_FLUSHES });
	ck_assert_int_eq(fx_write_raw(async, 0, 1, &r, data, &bits), -EIO);
	ck_assert_int_eq(fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, NULL), -EIO);
	ck_assert_int_eq(fx_do(&io, 1, &r, &bits), -EIO);
	fx_check_fault_stats(f, 3, 0, 0, "while set");
	fx_verify(f);

	fx_set_fault(f, NULL);
	ck_assert_int_eq(dmio_dev_get_fault(fx_dev(f), &got), -ENOENT);
	rc = fx_write_raw(async, 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write after clearing: rc %d", rc);
	fx_model_write(&r, data);
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &rd);
	ck_assert_msg(rc == 0 && bits == 0, "read after clearing: rc %d", rc);
	fm_assert_bytes_eq(rd, data, 16 * SECTOR, "read after clearing");
	rc = fx_do(&io, 1, &r, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "flush after clearing: rc %d", rc);
	fx_check_fault_stats(f, 3, 0, 0, "after clearing");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* get_fault returns exactly what was set, the latest one, -ENOENT when none. */
START_TEST(test_fault_get_set)
{
	struct dmio_fault a = { .flags = DMIO_FAULT_READS | DMIO_FAULT_CORRUPT_READS,
				.error = 0, .sector = 12345, .count = 77, .rate_ppm = 250000,
				.up_ms = 10, .down_ms = 20, .seed = 0x1234567890abcdefULL };
	struct dmio_fault b = { .flags = DMIO_FAULT_DROP_WRITES, .error = EROFS,
				.sector = 1, .count = 0, .up_ms = 5, .seed = 9 };
	struct dmio_fault got;
	struct dmio_dev *dev;

	fx_seed(__func__, 0);
	dev = fx_dev(fx_add_file(64 * 1024, 0));
	memset(&got, 0xcc, sizeof(got));
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), -ENOENT);
	ck_assert_int_eq(dmio_dev_set_fault(dev, NULL), 0);     /* clearing nothing */
	ck_assert_int_eq(dmio_dev_set_fault(dev, &a), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == a.flags && got.error == a.error && got.sector == a.sector &&
		  got.count == a.count && got.rate_ppm == a.rate_ppm && got.up_ms == a.up_ms &&
		  got.down_ms == a.down_ms && got.seed == a.seed);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &b), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == b.flags && got.error == b.error && got.sector == b.sector &&
		  got.count == b.count && got.rate_ppm == b.rate_ppm && got.up_ms == b.up_ms &&
		  got.down_ms == b.down_ms && got.seed == b.seed);
	/* Many replacements (past any cap on retired states). */
	for (unsigned i = 0; i < 300; i++) {
		a.sector = i;
		ck_assert_int_eq(dmio_dev_set_fault(dev, i % 5 == 4 ? NULL : &a), 0);
	}
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), -ENOENT);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &a), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert_uint_eq(got.sector, 299);
	fx_finish();
}
END_TEST

/* Unknown flags and errors that are not errnos are refused; the fault in
 * place stays. */
START_TEST(test_fault_set_rejects)
{
	struct dmio_fault keep = { .flags = DMIO_FAULT_WRITES, .sector = 5, .count = 6 };
	struct dmio_fault bad, got;
	struct dmio_dev *dev;

	fx_seed(__func__, 0);
	dev = fx_dev(fx_add_file(64 * 1024, 0));
	ck_assert_int_eq(dmio_dev_set_fault(dev, &keep), 0);
	bad = keep;
	bad.flags = 1u << 9;            /* the first bit not in DMIO_FAULT_ALL_FLAGS */
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad.flags = DMIO_FAULT_MISDIRECT_WRITES;        /* needs a range of 8 KiB */
	bad.count = 15;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad.count = 0;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad = keep;
	bad.flags = DMIO_FAULT_READS | 0x80000000u;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad = keep;
	bad.error = -EIO;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad.error = 4096;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == keep.flags && got.sector == 5 && got.count == 6);
	bad.error = 4095;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), 0);
	bad.error = 0;
	bad.flags = 0;  /* no flags: a fault that does nothing, but valid */
	bad.up_ms = UINT32_MAX;
	bad.down_ms = UINT32_MAX;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert_uint_eq(got.up_ms, UINT32_MAX);
	fx_finish();
}
END_TEST

/* The counters count pieces exactly: a 3-piece read with one piece in the
 * range fails once; drops and corruptions add up; other devices stay 0. */
START_TEST(test_fault_stats_exact)
{
	const uint64_t piece = SPLIT_MAX_IO / SECTOR;
	unsigned f, g;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, 0);
	f = fx_add_file(1 * MiB, 0);
	g = fx_add_file(1 * MiB, 0);
	/* Pieces of SPLIT_MAX_IO bytes. */
	rc = dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = SPLIT_MAX_IO });
	ck_assert_int_eq(rc, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS,
					      .sector = piece + 3, .count = 1 });
	r = fx_region(f, 0, 3 * piece);
	rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == -EIO && bits == 1, "3-piece read: rc %d bits %#lx", rc, bits);
	fx_check_fault_stats(f, 1, 0, 0, "one piece of three");
	for (unsigned i = 0; i < 4; i++)
		ck_assert_int_eq(fx_read_into(i % 2, DMIO_MEM_VM, 0, &r, &bits, NULL), -EIO);
	fx_check_fault_stats(f, 5, 0, 0, "five reads");

	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_DROP_WRITES });
	data = fx_random_buf(3 * piece * SECTOR);
	for (unsigned i = 0; i < 2; i++) {
		rc = fx_write_raw(i % 2, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "dropped write: rc %d", rc);
	}
	fx_check_fault_stats(f, 5, 6, 0, "two dropped 3-piece writes");

	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_CORRUPT_READS,
					      .sector = 2 * piece, .count = 1 });
	rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == 0 && bits == 0, "corrupted read: rc %d", rc);
	fx_check_fault_stats(f, 5, 6, 1, "one corrupted piece");
	fx_set_fault(f, NULL);
	fx_check_fault_stats(f, 5, 6, 1, "clearing keeps the counters");
	fx_check_fault_stats(g, 0, 0, 0, "the other device");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* With no fault set (never, or set and cleared) nothing is injected. */
START_TEST(test_fault_none_zero_stats)
{
	struct dmio_region r[2];
	struct fx_io flush = { .api = FX_API_DMIO, .op = DMIO_OP_FLUSH };
	uint8_t *data;
	unsigned long bits;

	fx_seed(__func__, 0);
	r[0] = fx_region(fx_add_file(256 * 1024, 0), 13, 21);
	r[1] = fx_region(fx_add_file(256 * 1024, 0), 64, 21);
	ck_assert_int_eq(dmio_dev_set_fault(fx_dev(1), &(struct dmio_fault){
						 .flags = DMIO_FAULT_WRITES }), 0);
	ck_assert_int_eq(dmio_dev_set_fault(fx_dev(1), NULL), 0);
	data = fx_random_buf(21 * SECTOR);
	for (unsigned i = 0; i < 4; i++) {
		ck_assert_int_eq(fx_write_raw(i % 2, i / 2 ? 7 : 0, 2, r, data, &bits), 0);
		ck_assert_int_eq(fx_read_into(i % 2, DMIO_MEM_VM, i / 2 ? 3 : 0, &r[i % 2], &bits,
					      NULL), 0);
		ck_assert_int_eq(fx_do(&flush, 2, r, &bits), 0);
	}
	fx_model_write(&r[0], data);
	fx_model_write(&r[1], data);
	fx_zero_op(DMIO_OP_WRITE_ZEROES, false, 2, r, "no fault");
	fx_check_fault_stats(0, 0, 0, 0, "never set");
	fx_check_fault_stats(1, 0, 0, 0, "set and cleared");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* 4 threads do I/O while another sets and clears faults 200 times. */
#define FC_THREADS 4
#define FC_REQS 160
#define FC_WINDOW 8

struct fc_rec {
	atomic_uint calls;
	atomic_uint *done;
};

struct fc_thread {
	unsigned id;
	uint64_t seed;
	uint8_t *wbuf;          /* 4 KiB of data for the writes */
	uint8_t *rbufs;         /* FC_REQS x 4 KiB read buffers */
	struct fc_rec recs[FC_REQS];
	atomic_uint done;
	unsigned submit_errors;
	unsigned timeouts;
	pthread_t thread;
};

static atomic_uint fc_finished;        /* I/O threads that are done */

static void fc_cb(unsigned long bits, void *context)
{
	struct fc_rec *rec = context;

	(void)bits;
	atomic_fetch_add(&rec->calls, 1);
	atomic_fetch_add(rec->done, 1);
}

static void *fc_io_main(void *arg)
{
	struct fc_thread *t = arg;
	struct fm_rng rng;
	unsigned submitted = 0;

	fm_rng_seed(&rng, t->seed);
	for (unsigned i = 0; i < FC_REQS; i++) {
		struct dmio_region r = fx_region(i % 2, t->id * 64 + fm_rng_between(&rng, 0, 56),
						 fm_rng_between(&rng, 1, 8));
		struct dmio_request req = { .notify_fn = fc_cb, .notify_context = &t->recs[i] };

		t->recs[i].done = &t->done;
		switch (fm_rng_between(&rng, 0, 3)) {
		case 0:
		case 1:
			req.op = DMIO_OP_READ;
			req.mem = (struct dmio_memory){ .type = DMIO_MEM_VM,
							.ptr.vma = t->rbufs + (size_t)i * PAGE };
			break;
		case 2:
			req.op = DMIO_OP_WRITE;
			req.mem = (struct dmio_memory){ .type = DMIO_MEM_VM, .ptr.vma = t->wbuf };
			break;
		default:
			req.op = DMIO_OP_FLUSH;
			break;
		}
		if (dmio(&req, 1, &r, NULL) != 0) {
			t->submit_errors++;
			continue;
		}
		submitted++;
		if (submitted % FC_WINDOW == 0 || i == FC_REQS - 1) {
			gint64 deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_USEC_PER_SEC;

			while (atomic_load(&t->done) < submitted) {
				if (g_get_monotonic_time() > deadline) {
					t->timeouts++;
					atomic_fetch_add(&fc_finished, 1);
					return NULL;
				}
				g_usleep(100);
			}
		}
	}
	atomic_fetch_add(&fc_finished, 1);
	return NULL;
}

START_TEST(test_fault_concurrency)
{
	struct fc_thread *t = (struct fc_thread *)(void *)fx_buf(sizeof(struct fc_thread) * FC_THREADS);
	struct fm_rng rng;
	struct dmio_region r;
	struct dmio_fault_stats st[2];
	uint64_t injected = 0;
	uint8_t *data;

	fx_seed(__func__, 0);
	atomic_store(&fc_finished, 0);
	fx_add_file(256 * 1024, 0);
	fx_add_file(256 * 1024, DMIO_DEV_NO_DIRECT);
	memset(t, 0, sizeof(*t) * FC_THREADS);
	dmio_engine_init(&(struct dmio_engine_opts){ .rings = 2 });
	for (unsigned k = 0; k < FC_THREADS; k++) {
		t[k].id = k;
		t[k].seed = fx.seed + k + 1;
		t[k].wbuf = fx_random_buf(PAGE);
		t[k].rbufs = fx_buf((size_t)FC_REQS * PAGE);
		ck_assert_int_eq(pthread_create(&t[k].thread, NULL, fc_io_main, &t[k]), 0);
	}
	/* The faulting thread is this one: 200 changes at least, and on until
	 * the I/O is over, so that the two overlap. */
	fm_rng_seed(&rng, fx.seed);
	for (unsigned i = 0; i < 200 || atomic_load(&fc_finished) < FC_THREADS; i++) {
		struct dmio_fault f = {
			.flags = (unsigned)fm_rng_between(&rng, 1, 31),
			.error = fm_rng_between(&rng, 0, 1) ? ENOSPC : 0,
			.sector = fm_rng_between(&rng, 0, 300),
			.count = fm_rng_between(&rng, 0, 64),
			.rate_ppm = fm_rng_between(&rng, 0, 1) ? 300000 : 0,
			.up_ms = (uint32_t)fm_rng_between(&rng, 0, 2),
			.down_ms = (uint32_t)fm_rng_between(&rng, 0, 2),
			.seed = i,
		};

		fx_set_fault(i % 2, i % 3 == 2 ? NULL : &f);
		g_usleep((gulong)fm_rng_between(&rng, 0, 300));
	}
	fx_set_fault(0, NULL);
	fx_set_fault(1, NULL);
	for (unsigned k = 0; k < FC_THREADS; k++)
		pthread_join(t[k].thread, NULL);
	fx_finish();
	for (unsigned d = 0; d < 2; d++) {
		dmio_dev_get_fault_stats(fx_dev(d), &st[d]);
		injected += st[d].failed + st[d].dropped + st[d].corrupted;
	}
	ck_assert_msg(injected > 0, "the fault storm injected nothing: no overlap with the I/O?");
	for (unsigned k = 0; k < FC_THREADS; k++) {
		ck_assert_msg(t[k].submit_errors == 0 && t[k].timeouts == 0,
			      "thread %u: %u submissions refused, %u timeouts", k,
			      t[k].submit_errors, t[k].timeouts);
		for (unsigned i = 0; i < FC_REQS; i++)
			ck_assert_msg(atomic_load(&t[k].recs[i].calls) == 1,
				      "thread %u request %u: callback ran %u times", k, i,
				      atomic_load(&t[k].recs[i].calls));
	}
	/* Normal I/O afterwards. */
	r = fx_region(0, 400, 16);
	data = fx_random_buf(16 * SECTOR);
	{
		unsigned long bits = FX_BITS_POISON;
		uint8_t *got;

		ck_assert_int_eq(fx_write_raw(false, 0, 1, &r, data, &bits), 0);
		ck_assert_int_eq(fx_read_into(true, DMIO_MEM_BVEC, 0, &r, &bits, &got), 0);
		fm_assert_bytes_eq(got, data, 16 * SECTOR, "I/O after the storm");
	}
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase memory: legs on tmpfs, whose small I/O the reaper does itself */

/* One request of @count sectors at @sector on @idx: write then read back;
 * returns how many pieces the reaper did inline. */
static uint64_t fx_inline_round_trip(bool async, enum dmio_mem_type type, size_t misalign,
				     unsigned idx, uint64_t sector, uint64_t count)
{
	struct dmio_region r = fx_region(idx, sector, count);
	uint8_t *data = fx_random_buf(count * SECTOR), *got;
	struct dmio_stats s0, s1;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	dmio_engine_init(NULL);         /* -EBUSY is fine: stats need a running engine */
	s0 = fx_stats();
	rc = fx_write_raw(async, misalign, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write %" PRIu64 "+%" PRIu64 ": rc %d bits %#lx",
		      sector, count, rc, bits);
	fx_model_write(&r, data);
	rc = fx_read_into(async, type, misalign, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "read %" PRIu64 "+%" PRIu64 ": rc %d bits %#lx",
		      sector, count, rc, bits);
	fm_assert_bytes_eq(got, data, count * SECTOR, "read back %" PRIu64 "+%" PRIu64, sector,
			   count);
	s1 = fx_stats();
	return s1.inline_ios - s0.inline_ios;
}

/*
 * Up to 64 KiB, a read or write of a tmpfs leg is done by the reaper (one
 * piece, counted in inline_ios); above, and on a disk file, it goes through
 * io_uring.  The bytes are right either way, faults still apply, and a
 * request over a tmpfs leg and a disk leg completes once, with both written.
 */
START_TEST(test_memory_legs_inline)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	unsigned m, d;
	uint64_t n;

	fx_seed(__func__, _i);
	m = fx_add_file_in(tc_shm_dir, 1 * MiB, 0);
	d = fx_add_file_in(tc_dir, 1 * MiB, 0);
	if (!fm_test_in_memory(tc_shm_dir) || fm_test_in_memory(tc_dir)) {
		fx_finish();
		fm_test_skip("%s is %sin memory and %s is %sin memory: nothing to tell apart",
			     tc_shm_dir, fm_test_in_memory(tc_shm_dir) ? "" : "not ", tc_dir,
			     fm_test_in_memory(tc_dir) ? "" : "not ");
	}

	n = fx_inline_round_trip(async, type, 0, m, 8, 8);
	ck_assert_msg(n == 2, "4 KiB write + read on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 5, m, 13, 21);
	ck_assert_msg(n == 2, "unaligned 21 sectors on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 0, m, 256, 128);
	ck_assert_msg(n == 2, "64 KiB on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 0, m, 512, 136);
	ck_assert_msg(n == 0, "68 KiB on tmpfs: %" PRIu64 " inline, want 0", n);
	n = fx_inline_round_trip(async, type, 0, d, 8, 8);
	ck_assert_msg(n == 0, "4 KiB on a disk file: %" PRIu64 " inline, want 0", n);

	/* One write over both kinds of leg. */
	{
		struct dmio_region w[2] = { fx_region(m, 40, 16), fx_region(d, 40, 16) };
		uint8_t *data = fx_random_buf(16 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_write_raw(async, 0, 2, w, data, &bits);

		ck_assert_msg(rc == 0 && bits == 0, "write to tmpfs + disk: rc %d bits %#lx", rc,
			      bits);
		fx_model_write(&w[0], data);
		fx_model_write(&w[1], data);
	}

	/* Injected faults apply to inline pieces as to io_uring ones. */
	fx_set_fault(m, &(struct dmio_fault){ .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES,
					      .error = ENODATA, .sector = 64, .count = 8 });
	{
		struct dmio_region r = fx_region(m, 64, 8);
		uint8_t *data = fx_random_buf(8 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_read_into(async, type, 0, &r, &bits, NULL);

		ck_assert_msg(rc == -EIO && bits == 1, "faulted inline read: rc %d bits %#lx", rc,
			      bits);
		bits = FX_BITS_POISON;
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == -EIO && bits == 1, "faulted inline write: rc %d bits %#lx", rc,
			      bits);
	}
	fx_check_fault_stats(m, 2, 0, 0, "inline faults");
	fx_set_fault(m, NULL);
	fx_finish();
	fx_verify_all();
}
END_TEST

/* The engine running, so that its counters (reset when it starts) can be
 * read before the first request. */
static void map_engine_up(void)
{
	int r = dmio_engine_init(NULL);

	ck_assert_msg(r == 0 || r == -EBUSY, "dmio_engine_init: %d", r);
}

/*
 * A tmpfs leg is mapped, and its inline reads and writes are copies through
 * the mapping (counted in mapped_ios).  When the file shrank behind dmio, a
 * copy past the new end faults (SIGBUS): the piece is redone with the
 * system call, so a read across or past the end is a short read (a region
 * error, as on a disk file: test_err_short_read_at_eof) and a write past it
 * extends the file, as pwritev2 does.  Nothing crashes.
 */
START_TEST(test_map_truncated)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	struct dmio_region cross, beyond, inside, past;
	struct dmio_stats s0, s1, s2;
	struct fx_io io = fx_io_for((unsigned)_i, NULL);
	unsigned long bits;
	uint8_t *wdata;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file_in(tc_shm_dir, 64 * 1024, 0);
	if (!fm_test_in_memory(tc_shm_dir)) {
		fx_finish();
		fm_test_skip("%s is not in memory: nothing is mapped", tc_shm_dir);
	}
	io.async = async;
	io.op = DMIO_OP_READ;
	inside = fx_region(f, 8, 8);
	cross = fx_region(f, 64, 32);           /* 32 KiB .. 48 KiB, EOF at 40 KiB */
	beyond = fx_region(f, 96, 8);
	past = fx_region(f, 112, 8);            /* 56 KiB .. 60 KiB */

	map_engine_up();
	s0 = fx_stats();
	fx_read_check(&io, fx_mem_random(type, 8 * SECTOR), &inside, fx_model_at(&inside),
		      "read of the mapped file");
	s1 = fx_stats();
	ck_assert_msg(s1.mapped_ios - s0.mapped_ios == 1 && s1.map_faults == s0.map_faults,
		      "a read of a tmpfs leg: %" PRIu64 " mapped, %" PRIu64 " faults, want 1, 0",
		      s1.mapped_ios - s0.mapped_ios, s1.map_faults - s0.map_faults);

	ck_assert_int_eq(truncate(fx.files[f].path, 40 * 1024), 0);
	fx.files[f].size = 40 * 1024;
	io.mem = fx_mem_random(type, 32 * SECTOR);
	bits = 0;
	rc = fx_do(&io, 1, &cross, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read across the end of file: rc %d bits %#lx", rc,
		      bits);
	io.mem = fx_mem_random(type, 8 * SECTOR);
	bits = 0;
	rc = fx_do(&io, 1, &beyond, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read past the end of file: rc %d bits %#lx", rc,
		      bits);
	s2 = fx_stats();
	ck_assert_msg(s2.map_faults - s1.map_faults >= 2,
		      "reads past the end: %" PRIu64 " copies faulted, want >= 2",
		      s2.map_faults - s1.map_faults);

	/* A write past the end extends the file (40..56 KiB: a hole). */
	wdata = fx_random_buf(8 * SECTOR);
	io.op = DMIO_OP_WRITE;
	io.mem = fx_mem_random(type, 8 * SECTOR);
	fx_mem_fill(io.mem, wdata);
	memset(fx.files[f].model + 40 * 1024, 0, 16 * 1024);
	fx.files[f].size = 60 * 1024;
	fx_write_ok(&io, 1, &past, wdata, "write past the end of file");
	ck_assert_msg(fx_stats().map_faults > s2.map_faults, "the write past the end did not fault");

	io.op = DMIO_OP_READ;
	fx_read_check(&io, fx_mem_random(type, 8 * SECTOR), &inside, fx_model_at(&inside),
		      "read inside the shrunk file");
	fx_finish();
	fx_verify(f);
}
END_TEST

static int map_rw(struct dmio_dev *dev, int op, uint64_t off, uint64_t len, void *data,
		  unsigned long *ret_bits)
{
	struct dmio_region r = { .dev = dev, .sector = off / SECTOR, .count = len / SECTOR };

	*ret_bits = FX_BITS_POISON;
	return dmio_sync_vm(1, &r, op, data, ret_bits);
}

static uint64_t file_blocks(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks;
}

/*
 * A read through a mapping of a tmpfs hole would allocate a page there
 * (preadv2 does not): reads use the mapping only over pages known to exist
 * (present at open, or written through it since), and a discard makes its
 * pages unknown again.  The file's allocation does not grow on reads.
 */
START_TEST(test_map_holes)
{
	g_autofree char *path = g_strdup_printf("%s/sparse.img", tc_shm_dir);
	uint8_t *data = fx_random_buf(64 * 1024), *got = fx_buf(64 * 1024);
	uint8_t *zero = fx_buf(64 * 1024);
	struct dmio_region d;
	struct dmio_stats s0, s1;
	struct dmio_dev *dev = NULL;
	unsigned long bits;
	uint64_t blocks;
	int fd, rc;

	fx_seed(__func__, 0);
	if (!fm_test_in_memory(tc_shm_dir))
		fm_test_skip("%s is not in memory: nothing is mapped", tc_shm_dir);
	memset(zero, 0, 64 * 1024);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 1 * MiB), 0);
	ck_assert_int_eq(pwrite(fd, data, PAGE, 0), (ssize_t)PAGE);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	blocks = file_blocks(fd);

	/* Data there at open: mapped. */
	map_engine_up();
	s0 = fx_stats();
	rc = map_rw(dev, DMIO_OP_READ, 0, PAGE, got, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read of data: rc %d bits %#lx", rc, bits);
	fm_assert_bytes_eq(got, data, PAGE, "data written before open");
	s1 = fx_stats();
	ck_assert_uint_eq(s1.mapped_ios - s0.mapped_ios, 1);

	/* A hole: zeroes by preadv2, nothing allocated. */
	rc = map_rw(dev, DMIO_OP_READ, 256 * 1024, 64 * 1024, got, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read of a hole: rc %d bits %#lx", rc, bits);
	fm_assert_bytes_eq(got, zero, 64 * 1024, "a hole");
	ck_assert_uint_eq(fx_stats().mapped_ios, s1.mapped_ios);
	ck_assert_uint_eq(file_blocks(fd), blocks);

	/* Written through the mapping, then read through it. */
	s0 = fx_stats();
	rc = map_rw(dev, DMIO_OP_WRITE, 512 * 1024, 8 * 1024, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write: rc %d bits %#lx", rc, bits);
	rc = map_rw(dev, DMIO_OP_READ, 512 * 1024, 8 * 1024, got, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read back: rc %d bits %#lx", rc, bits);
	fm_assert_bytes_eq(got, data, 8 * 1024, "written through the mapping");
	s1 = fx_stats();
	ck_assert_uint_eq(s1.mapped_ios - s0.mapped_ios, 2);

	/* Discarded: a hole again, read by the system call. */
	d = (struct dmio_region){ .dev = dev, .sector = 512 * 1024 / SECTOR, .count = 16 };
	bits = FX_BITS_POISON;
	rc = dmio_sync_vm(1, &d, DMIO_OP_DISCARD, NULL, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "discard: rc %d bits %#lx", rc, bits);
	blocks = file_blocks(fd);
	rc = map_rw(dev, DMIO_OP_READ, 512 * 1024, 8 * 1024, got, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read of the discarded range: rc %d bits %#lx", rc,
		      bits);
	fm_assert_bytes_eq(got, zero, 8 * 1024, "a discarded range");
	ck_assert_uint_eq(fx_stats().mapped_ios, s1.mapped_ios);
	ck_assert_uint_eq(file_blocks(fd), blocks);

	fx_finish();
	dmio_dev_close(dev);
	close(fd);
	unlink(path);
}
END_TEST

/*
 * Writes of 4 KiB and more are copied into a mapped leg with streaming
 * stores (map.c, map_stream_to): an unaligned head up to the destination's
 * next 64 bytes, 128-byte strides, a tail.  Every byte lands, in order,
 * and none beside the write changes, whatever the iovecs' addresses and
 * lengths (each iovec's destination is unaligned after an odd one).
 */
START_TEST(test_map_stream)
{
	g_autofree char *path = g_strdup_printf("%s/stream.img", tc_shm_dir);
	/* Iovec lengths, each case 4..64 KiB in all (inline on a reaper) and
	 * a multiple of the sector. */
	static const size_t cases[][6] = {
		{ 4096 },
		{ 100, 4000, 3068 },                    /* 7168 */
		{ 16 * 1024 },
		{ 64 * 1024 },
		{ 1, 63, 4097, 12000, 223 },            /* 16384 */
		{ 127, 129, 32 * 1024 - 256 },          /* 32768 */
		{ 20 * 1024 + 3, 512 - 3, 7 * 1024 },   /* 28160 */
	};
	const uint64_t size = 2 * MiB;
	uint8_t *src = fx_random_buf(64 * 1024 + 64), *model = fx_random_buf(size);
	uint8_t *got = fx_buf(size);
	struct dmio_stats s0, s1;
	struct dmio_dev *dev = NULL;
	int fd;

	fx_seed(__func__, 0);
	if (!fm_test_in_memory(tc_shm_dir))
		fm_test_skip("%s is not in memory: nothing is mapped", tc_shm_dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, model, size, 0), (ssize_t)size);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	map_engine_up();
	for (unsigned c = 0; c < FM_ARRAY_SIZE(cases); c++) {
		for (unsigned shift = 0; shift < 3; shift++) {
			/* Source addresses: aligned, odd, 32 bytes in. */
			const uint8_t *from = src + (unsigned[]){ 0, 1, 32 }[shift];
			uint64_t off = (uint64_t)(c * 3 + shift) * 72 * 1024 + shift * SECTOR;
			struct iovec iov[6];
			unsigned n = 0;
			size_t len = 0;
			struct dmio_region r;
			unsigned long bits = FX_BITS_POISON;
			int rc;

			for (; n < 6 && cases[c][n]; n++) {
				iov[n].iov_base = (void *)(from + len);
				iov[n].iov_len = cases[c][n];
				len += cases[c][n];
			}
			ck_assert_uint_eq(len % SECTOR, 0);
			r = (struct dmio_region){ .dev = dev, .sector = off / SECTOR,
						  .count = len / SECTOR };
			s0 = fx_stats();
			rc = dmio_sync_bvec(1, &r, DMIO_OP_WRITE, iov, n, &bits);
			s1 = fx_stats();
			ck_assert_msg(rc == 0 && bits == 0, "case %u/%u: rc %d bits %#lx", c, shift,
				      rc, bits);
			ck_assert_msg(s1.mapped_ios - s0.mapped_ios == 1 &&
					      s1.streamed_ios - s0.streamed_ios == 1,
				      "case %u/%u (%zu bytes): %" PRIu64 " mapped copies, %" PRIu64
				      " streamed, want 1, 1", c, shift, len,
				      s1.mapped_ios - s0.mapped_ios, s1.streamed_ios - s0.streamed_ios);
			memcpy(model + off, from, len);
		}
	}
	/* Below 4 KiB: a plain memcpy. */
	for (uint64_t len = SECTOR; len < 4096; len *= 4) {
		struct dmio_region r = { .dev = dev, .sector = 1920 * 1024 / SECTOR,
					 .count = len / SECTOR };
		unsigned long bits = FX_BITS_POISON;
		int rc;

		s0 = fx_stats();
		rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, src + 3, &bits);
		s1 = fx_stats();
		ck_assert_msg(rc == 0 && bits == 0, "%" PRIu64 " bytes: rc %d bits %#lx", len, rc,
			      bits);
		ck_assert_msg(s1.mapped_ios - s0.mapped_ios == 1 &&
				      s1.streamed_ios == s0.streamed_ios,
			      "%" PRIu64 " bytes: %" PRIu64 " mapped, %" PRIu64 " streamed, want 1, 0",
			      len, s1.mapped_ios - s0.mapped_ios, s1.streamed_ios - s0.streamed_ios);
		memcpy(model + 1920 * 1024, src + 3, len);
	}
	ck_assert_int_eq(pread(fd, got, size, 0), (ssize_t)size);
	fm_assert_bytes_eq(got, model, size, "the leg after streamed writes");
	fx_finish();
	dmio_dev_close(dev);
	close(fd);
	unlink(path);
}
END_TEST

/* TCase enospc: a tmpfs of its own, 256 KiB, under the shm directory. */
static char *tc_small_dir;

static void tc_small_setup(void)
{
	tc_shm_setup();
	tc_small_dir = g_strdup_printf("%s/small", tc_shm_dir);
	if (mkdir(tc_small_dir, 0700) < 0 ||
	    mount("fm-test-dmio", tc_small_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k") < 0) {
		int e = errno;

		g_clear_pointer(&tc_small_dir, g_free);
		ck_abort_msg("mount -t tmpfs -o size=256k: %s (needs root)", g_strerror(e));
	}
}

static void tc_small_teardown(void)
{
	if (tc_small_dir) {
		umount2(tc_small_dir, MNT_DETACH);
		g_clear_pointer(&tc_small_dir, g_free);
	}
	tc_shm_teardown();
}

/*
 * A sparse tmpfs leg whose file system fills up: the copy through the
 * mapping faults on the first hole with no room (SIGBUS), the piece is
 * redone by pwritev2, which fails with ENOSPC, and the request gets its
 * region's error bit, exactly as without the mapping.  What was written
 * before reads back; later writes fail the same way.
 */
START_TEST(test_map_enospc)
{
	g_autofree char *path = g_strdup_printf("%s/leg.img", tc_small_dir);
	uint8_t *data = fx_random_buf(1 * MiB), *got = fx_buf(PAGE);
	struct dmio_stats s0, s1;
	struct dmio_dev *dev = NULL;
	unsigned long bits = 0;
	unsigned ok = 0;
	int fd, rc = 0;

	fx_seed(__func__, 0);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 1 * MiB), 0);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	map_engine_up();
	s0 = fx_stats();
	for (; ok < 256; ok++) {
		rc = map_rw(dev, DMIO_OP_WRITE, (uint64_t)ok * PAGE, PAGE, data + ok * PAGE, &bits);
		if (rc != 0)
			break;
	}
	s1 = fx_stats();
	ck_assert_msg(ok >= 16 && ok <= 64, "%u pages written on a 256 KiB tmpfs", ok);
	ck_assert_msg(rc == -EIO && bits == 1, "write %u: rc %d bits %#lx", ok, rc, bits);
	ck_assert_msg(s1.mapped_ios - s0.mapped_ios >= ok, "%" PRIu64 " mapped writes of %u",
		      s1.mapped_ios - s0.mapped_ios, ok);
	ck_assert_msg(s1.map_faults - s0.map_faults >= 1, "no copy faulted");
	/* What the system call says there. */
	errno = 0;
	ck_assert_int_lt(pwrite(fd, data, PAGE, (off_t)ok * PAGE), 0);
	ck_assert_int_eq(errno, ENOSPC);

	rc = map_rw(dev, DMIO_OP_WRITE, 512 * 1024, PAGE, data, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "a later write: rc %d bits %#lx", rc, bits);
	for (unsigned i = 0; i < ok; i++) {
		rc = map_rw(dev, DMIO_OP_READ, (uint64_t)i * PAGE, PAGE, got, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "read %u: rc %d bits %#lx", i, rc, bits);
		fm_assert_bytes_eq(got, data + i * PAGE, PAGE, "page %u", i);
	}
	fx_finish();
	dmio_dev_close(dev);
	close(fd);
	unlink(path);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *dmio_fault_suite(void)
{
	Suite *s = suite_create("dmio_fault");
	TCase *tc;

	tc = tc_add(s, "memory", tc_shm_setup, tc_shm_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_memory_legs_inline, 0, 6);
	tcase_add_loop_test(tc, test_map_truncated, 0, 6);
	tcase_add_test(tc, test_map_holes);
	tcase_add_test(tc, test_map_stream);

	tc = tc_add(s, "enospc", tc_small_setup, tc_small_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_map_enospc);

	tc = tc_add(s, "fault", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_fault_reads_in_range, 0, 6);
	tcase_add_loop_test(tc, test_fault_writes_one_leg, 0, 4);
	tcase_add_loop_test(tc, test_fault_flush, 0, 2);
	tcase_add_loop_test(tc, test_fault_drop_writes, 0, 4);
	tcase_add_loop_test(tc, test_fault_corrupt_reads, 0, 6);
	tcase_add_test(tc, test_fault_rate);
	tcase_add_test(tc, test_fault_flakey);
	tcase_add_loop_test(tc, test_fault_clear_restores, 0, 2);
	tcase_add_loop_test(tc, test_fault_canceled_retried, 0, 4);
	tcase_add_test(tc, test_fault_get_set);
	tcase_add_test(tc, test_fault_set_rejects);
	tcase_add_test(tc, test_fault_stats_exact);
	tcase_add_test(tc, test_fault_none_zero_stats);
	tcase_add_test(tc, test_fault_concurrency);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio_fault: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_fault_suite());
}
