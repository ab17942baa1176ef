/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of dmio: reads and writes over every memory type and API,
 * callbacks, errors, splitting, unaligned memory, discard and flush.
 * Fixtures and conventions: dmio_fx.h.
 */
#include "dmio_fx.h"

/*----------------------------------------------------------------*/
/* TCase rw: every memory type x sync/async x API x 1, 2, 64 regions */

enum {
	LAYOUT_1,           /* one region */
	LAYOUT_2,           /* two files, the second opened DMIO_DEV_NO_DIRECT */
	LAYOUT_64_FILES,    /* 64 regions on 64 files */
	LAYOUT_64_RANGES,   /* 64 disjoint ranges of 4 files */
	LAYOUT_COUNT,
};
static const char *const layout_names[] = { "1 region", "2 regions", "64 files",
					    "64 ranges of 4 files" };

/* Create the files of @layout and fill @where with regions of @count sectors. */
static unsigned fx_layout(unsigned layout, uint64_t count, struct dmio_region *where)
{
	const uint64_t big = 1 * MiB / SECTOR, small = 64 * 1024 / SECTOR;

	switch (layout) {
	case LAYOUT_1: {
		unsigned f = fx_add_file(1 * MiB, 0);

		where[0] = fx_region(f, fm_rng_between(&fx.rng, 0, big - count), count);
		return 1;
	}
	case LAYOUT_2: {
		unsigned f0 = fx_add_file(1 * MiB, 0);
		unsigned f1 = fx_add_file(1 * MiB, DMIO_DEV_NO_DIRECT);

		ck_assert(!dmio_dev_is_direct(fx_dev(f1)));
		where[0] = fx_region(f0, fm_rng_between(&fx.rng, 0, big - count), count);
		where[1] = fx_region(f1, fm_rng_between(&fx.rng, 0, big - count), count);
		return 2;
	}
	case LAYOUT_64_FILES:
		for (unsigned i = 0; i < 64; i++) {
			unsigned f = fx_add_file(64 * 1024, 0);

			where[i] = fx_region(f, fm_rng_between(&fx.rng, 0, small - count), count);
		}
		return 64;
	case LAYOUT_64_RANGES: {
		unsigned f[4];

		for (unsigned k = 0; k < 4; k++)
			f[k] = fx_add_file(1 * MiB, 0);
		/* Region i: file i % 4, its own 64 KiB slot i / 4. */
		for (unsigned i = 0; i < 64; i++)
			where[i] = fx_region(f[i % 4],
					     (i / 4) * small + fm_rng_between(&fx.rng, 0, small - count),
					     count);
		return 64;
	}
	}
	ck_abort();
	return 0;
}

START_TEST(test_rw_matrix)
{
	unsigned layout = (unsigned)_i % LAYOUT_COUNT;
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / LAYOUT_COUNT) % 3);
	bool async = (_i / (LAYOUT_COUNT * 3)) % 2;
	enum fx_api api = (_i / (LAYOUT_COUNT * 6)) % 2 ? FX_API_DMIO : FX_API_SEED;
	struct dmio_region where[64];
	char what[160];
	uint64_t count;
	size_t len;
	uint8_t *data;
	unsigned n;

	fx_seed(__func__, _i);
	count = fm_rng_between(&fx.rng, 4, 96);
	len = count * SECTOR;
	n = fx_layout(layout, count, where);
	snprintf(what, sizeof(what), "%s, %s, %s, %s API, %" PRIu64 " sectors",
		 layout_names[layout], mem_names[type], async ? "async" : "sync",
		 api == FX_API_DMIO ? "dmio()" : "seed", count);

	data = fx_random_buf(len);
	struct fx_mem *m = fx_mem_random(type, len);
	struct fx_io io = { .api = api, .async = async, .mem = m };

	fx_mem_fill(m, data);
	fx_write_ok(&io, n, where, data, what);
	fx_verify_all();
	fx_mem_check_guards(m, what);

	/* Read every region back, with the same memory type and call. */
	for (unsigned i = 0; i < n; i++)
		fx_read_check(&io, fx_mem_random(type, len), &where[i], data, what);
	fx_finish();
}
END_TEST

/* A write to regions of different sizes sends each region the first
 * count*512 bytes of the buffer (dm-io semantics). */
START_TEST(test_rw_regions_of_different_sizes)
{
	static const uint64_t counts[] = { 8, 24, 1, 17 };
	struct dmio_region where[4];
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	size_t len = 24 * SECTOR;
	uint8_t *data;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 4; i++)
		where[i] = fx_region(fx_add_file(256 * 1024, 0), 8 * i + 3, counts[i]);
	data = fx_random_buf(len);
	struct fx_mem *m = fx_mem_random(type, len);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.api = FX_API_DMIO;
	fx_mem_fill(m, data);
	fx_write_ok(&io, 4, where, data, "regions of 8, 24, 1 and 17 sectors");
	fx_verify_all();
	fx_finish();
}
END_TEST

/* Memory of hundreds of segments (more than one SQE can carry). */
START_TEST(test_rw_many_segments)
{
	unsigned kind = (unsigned)_i / 2;      /* page list, 512-byte iovecs, odd iovecs */
	bool async = _i % 2;
	const uint64_t count = 2 * MiB / SECTOR + 24;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct fx_mem *m, *r;
	uint8_t *data;
	char what[96];

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(4 * MiB, 0), 40, count);
	where[1] = fx_region(fx_add_file(4 * MiB, 0), 1000, count);
	data = fx_random_buf(len);
	switch (kind) {
	case 0:
		m = fx_mem_pl(len, 2560);       /* 514 separate pages */
		r = fx_mem_pl(len, 512);
		break;
	case 1:
		m = fx_mem_bvec(len, 700, false, SECTOR);
		r = fx_mem_bvec(len, 300, false, SECTOR);
		break;
	default:
		m = fx_mem_bvec(len, 999, true, 1);
		r = fx_mem_bvec(len, 257, true, 1);
		break;
	}
	snprintf(what, sizeof(what), "%s of %u segments, %s",
		 kind == 0 ? "page list" : "bvec",
		 kind == 0 ? m->npages : m->iovcnt, async ? "async" : "sync");
	fx_mem_fill(m, data);

	struct fx_io io = { .api = async ? FX_API_SEED : FX_API_DMIO, .async = async, .mem = m };

	fx_write_ok(&io, 2, where, data, what);
	fx_verify_all();
	fx_read_check(&io, r, &where[1], data, what);
	fx_finish();
}
END_TEST

/*
 * Requests on either side of what dmio keeps inline (a request's regions:
 * 4; a piece's iovecs: 4, more take a larger piece): 1 to 8 regions x 1
 * to 9 iovecs or bounce pages (bvecs, page lists, odd bvecs that O_DIRECT
 * legs bounce), written and read back.
 */
START_TEST(test_rw_around_inline_limits)
{
	unsigned nreg = 1 + (unsigned)_i / 8, nseg = 1 + (unsigned)_i % 8;
	const uint64_t count = nseg * PAGE / SECTOR;
	const size_t len = count * SECTOR;
	struct dmio_region where[8];
	uint8_t *data;
	char what[96];

	fx_seed(__func__, _i);
	for (unsigned k = 0; k < nreg; k++)
		where[k] = fx_region(fx_add_file(64 * 1024, k % 2 ? DMIO_DEV_NO_DIRECT : 0),
				     8 * (k % 8), count);
	data = fx_random_buf(len);
	for (unsigned kind = 0; kind < 3; kind++) {
		/* bvec: nseg iovecs; page list: nseg pages, or nseg + 1 at an
		 * offset in the first; odd bvec: bounced, nseg bounce pages. */
		struct fx_mem *m = kind == 0 ? fx_mem_bvec(len, nseg, false, SECTOR)
				   : kind == 1 ? fx_mem_pl(len, (nseg % 2) * SECTOR)
					       : fx_mem_bvec(len, nseg, true, 1);
		struct fx_mem *r = kind == 0 ? fx_mem_bvec(len, nseg, false, SECTOR)
				   : kind == 1 ? fx_mem_pl(len, 0)
					       : fx_mem_bvec(len, nseg, true, 1);
		struct fx_io io = { .api = kind % 2 ? FX_API_SEED : FX_API_DMIO, .async = kind % 2,
				    .mem = m };
		static const char *const kinds[] = { "bvec", "page list", "odd bvec" };

		snprintf(what, sizeof(what), "%u regions, %s of %u segments", nreg, kinds[kind],
			 nseg + (kind == 1 && nseg % 2));
		fx_mem_fill(m, data);
		fx_write_ok(&io, nreg, where, data, what);
		fx_verify_all();
		for (unsigned k = 0; k < nreg; k++)
			fx_read_check(&io, r, &where[k], data, what);
	}
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase callbacks: exactly once, error bits, sync return values */

START_TEST(test_cb_async_exactly_once)
{
	enum { NREQ = 100, SLOT = 64 };         /* slot: 64 sectors */
	unsigned f0, f1;
	struct fx_cb *cbs[NREQ];

	fx_seed(__func__, _i);
	f0 = fx_add_file(NREQ * SLOT * SECTOR, 0);
	f1 = fx_add_file(NREQ * SLOT * SECTOR, 0);
	ck_assert_msg(!dmio_in_callback(), "dmio_in_callback() true on the test thread");
	for (unsigned i = 0; i < NREQ; i++) {
		uint64_t count = fm_rng_between(&fx.rng, 1, SLOT);
		unsigned n = (unsigned)fm_rng_between(&fx.rng, 1, 2);
		struct dmio_region where[2] = {
			fx_region(f0, (uint64_t)i * SLOT, count),
			fx_region(f1, (uint64_t)i * SLOT, count),
		};
		uint8_t *data = fx_random_buf(count * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), count * SECTOR);
		struct fx_io io = {
			.api = i % 2 ? FX_API_DMIO : FX_API_SEED,
			.op = DMIO_OP_WRITE,
			.mem = m,
		};
		int rc;

		fx_mem_fill(m, data);
		rc = fx_submit_async(&io, n, where, &cbs[i]);
		ck_assert_msg(rc == 0, "async write #%u: %d", i, rc);
		for (unsigned k = 0; k < n; k++)
			fx_model_write(&where[k], data);
	}
	fx_finish();    /* every callback exactly once */
	for (unsigned i = 0; i < NREQ; i++) {
		ck_assert_msg(atomic_load(&cbs[i]->bits) == 0, "request %u: error bits %#lx", i,
			      atomic_load(&cbs[i]->bits));
		ck_assert_msg(atomic_load(&cbs[i]->in_callback),
			      "request %u: dmio_in_callback() false in its callback", i);
	}
	fx_verify_all();
}
END_TEST

/* Sync calls return 0 / -EIO and store the bitset; async report it. */
START_TEST(test_cb_error_bits_sync_and_async)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	unsigned f[3];
	struct dmio_region where[3];
	uint64_t count = 24;
	uint8_t *data;
	unsigned long bits;
	int rc;

	fx_seed(__func__, _i);
	f[0] = fx_add_file(256 * 1024, 0);
	f[1] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	f[2] = fx_add_file(256 * 1024, 0);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(f[i], 40 + 8 * i, count);
	data = fx_random_buf(count * SECTOR);
	struct fx_mem *m = fx_mem_random(type, count * SECTOR);

	fx_mem_fill(m, data);
	for (unsigned v = 0; v < 4; v++) {
		struct fx_io io = fx_io_for(v, m);

		/* All three: region 1 is read-only. */
		bits = 0;
		rc = fx_do(&io, 3, where, &bits);
		ck_assert_msg(rc == -EIO, "%s write with a read-only leg: rc %d, want -EIO",
			      io.async ? "async" : "sync", rc);
		ck_assert_msg(bits == 0x2, "%s write with a read-only leg: bits %#lx, want 0x2",
			      io.async ? "async" : "sync", bits);
		/* The good ones alone. */
		bits = 0;
		rc = fx_do(&io, 1, &where[2], &bits);
		ck_assert_msg(rc == 0 && bits == 0, "good write: rc %d bits %#lx", rc, bits);
	}
	fx_model_write(&where[0], data);
	fx_model_write(&where[2], data);

	/* error_bits may be NULL. */
	rc = dmio_sync_vm(1, &where[1], DMIO_OP_WRITE, fx_random_buf(count * SECTOR), NULL);
	ck_assert_int_eq(rc, -EIO);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_WRITE, .mem = fx_mem_dmio(m) }, 3, where,
		  NULL);
	ck_assert_int_eq(rc, -EIO);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_WRITE, .mem = fx_mem_dmio(m) }, 1, where,
		  NULL);
	ck_assert_int_eq(rc, 0);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase errors: one failing region among good ones, malformed requests */

/* A write to N regions where region @bad is on a DMIO_DEV_RDONLY file. */
START_TEST(test_err_readonly_leg)
{
	static const struct { unsigned n, bad; } cfg[] = {
		{ 2, 0 }, { 5, 3 }, { 64, 63 }, { 64, 31 }, { 64, 32 },
	};
	unsigned n = cfg[_i / 2].n, bad = cfg[_i / 2].bad;
	bool async = _i % 2;
	struct dmio_region where[64];
	uint64_t count;
	uint8_t *data;
	unsigned long bits = 0;
	struct dmio_stats st0, st1;
	int rc;

	fx_seed(__func__, _i);
	count = fm_rng_between(&fx.rng, 1, 64);
	for (unsigned i = 0; i < n; i++) {
		unsigned f = fx_add_file(64 * 1024, i == bad ? DMIO_DEV_RDONLY : 0);

		where[i] = fx_region(f, fm_rng_between(&fx.rng, 0, 128 - count), count);
	}
	data = fx_random_buf(count * SECTOR);
	struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(_i % 3), count * SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE, .mem = m };

	fx_mem_fill(m, data);
	dmio_engine_init(NULL);         /* -EBUSY is fine: stats need a running engine */
	st0 = fx_stats();
	rc = fx_do(&io, n, where, &bits);
	ck_assert_msg(rc == -EIO, "%u regions, region %u read-only: rc %d, want -EIO", n, bad, rc);
	ck_assert_msg(bits == 1UL << bad,
		      "%u regions, region %u read-only: error bits %#lx, want %#lx", n, bad, bits,
		      1UL << bad);
	if (!async) {
		st1 = fx_stats();
		ck_assert_msg(st1.region_errors - st0.region_errors == 1,
			      "stats.region_errors grew by %" PRIu64 ", want 1",
			      st1.region_errors - st0.region_errors);
	}
	for (unsigned i = 0; i < n; i++)
		if (i != bad)
			fx_model_write(&where[i], data);
	fx_finish();
	fx_verify_all();        /* the read-only file is unchanged, the others hold data */
}
END_TEST

/* I/O past the end of one device: its bit only; nothing written past the end. */
START_TEST(test_err_past_end)
{
	static const enum dmio_op ops[] = { DMIO_OP_WRITE, DMIO_OP_READ, DMIO_OP_DISCARD,
					    DMIO_OP_WRITE_ZEROES };
	static const char *const kinds[] = { "crossing the end", "at the end", "far beyond",
					     "sector + count wraps" };
	enum dmio_op op = ops[_i % 4];
	unsigned kind = (_i / 4) % 4;
	bool async = _i / 16;
	const uint64_t fsect = 128;     /* 64 KiB files */
	uint64_t count = 16, bad_sector;
	struct dmio_region where[3];
	unsigned f[3];
	unsigned long bits = 0;
	uint8_t *data, *before;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		f[i] = fx_add_file(fsect * SECTOR, 0);
	switch (kind) {
	case 0: bad_sector = fsect - 8; break;
	case 1: bad_sector = fsect; break;
	case 2: bad_sector = 1ull << 40; break;
	default: bad_sector = UINT64_MAX - 3; break;
	}
	where[0] = fx_region(f[0], 10, count);
	where[1] = fx_region(f[1], bad_sector, count);
	where[2] = fx_region(f[2], 100, count);
	data = fx_random_buf(count * SECTOR);
	before = fx_buf(fsect * SECTOR);
	memcpy(before, fx.files[f[1]].model, fsect * SECTOR);

	struct fx_mem *m = fx_mem_vm(count * SECTOR, 0);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = op };

	fx_mem_fill(m, data);
	if (op == DMIO_OP_READ || op == DMIO_OP_WRITE)
		io.mem = m;
	if (op == DMIO_OP_READ) {
		rc = fx_do(&io, 1, &where[1], &bits);
		ck_assert_msg(rc == -EIO && bits == 0x1, "read %s: rc %d bits %#lx, want -EIO 0x1",
			      kinds[kind], rc, bits);
	} else {
		rc = fx_do(&io, 3, where, &bits);
		ck_assert_msg(rc == -EIO && bits == 0x2,
			      "%s with region 1 %s: rc %d bits %#lx, want -EIO 0x2", op_name(op),
			      kinds[kind], rc, bits);
		if (op == DMIO_OP_WRITE) {
			fx_model_write(&where[0], data);
			fx_model_write(&where[2], data);
		} else {
			fx_model_zero(&where[0]);
			fx_model_zero(&where[2]);
		}
	}
	fx_finish();
	fx_verify(f[0]);
	fx_verify(f[2]);
	/* The failing file keeps its size; before its end nothing changed except,
	 * for a region crossing the end, possibly its in-range part. */
	uint8_t *now = fx_read_back(f[1]);
	size_t keep = kind == 0 ? bad_sector * SECTOR : fsect * SECTOR;

	fm_assert_bytes_eq(now, before, keep, "%s %s: the failing file", op_name(op), kinds[kind]);
}
END_TEST

/* The file shrank after open: a read crossing (or beyond) the new end of
 * file is a short read, hence a region error, not garbage and not a hang. */
START_TEST(test_err_short_read_at_eof)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	struct dmio_region cross, beyond, inside;
	unsigned long bits = 0;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	ck_assert_int_eq(truncate(fx.files[f].path, 40 * 1024), 0);
	fx.files[f].size = 40 * 1024;           /* the model's prefix still holds */
	cross = fx_region(f, 64, 32);           /* 32 KiB .. 48 KiB, EOF at 40 KiB */
	beyond = fx_region(f, 96, 8);
	inside = fx_region(f, 8, 8);

	struct fx_io io = fx_io_for((unsigned)_i, NULL);

	io.async = async;
	io.op = DMIO_OP_READ;
	io.mem = fx_mem_random(type, 32 * SECTOR);
	rc = fx_do(&io, 1, &cross, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read across the end of file: rc %d bits %#lx", rc,
		      bits);
	io.mem = fx_mem_random(type, 8 * SECTOR);
	bits = 0;
	rc = fx_do(&io, 1, &beyond, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read past the end of file: rc %d bits %#lx", rc,
		      bits);
	fx_read_check(&io, fx_mem_random(type, 8 * SECTOR), &inside, fx_model_at(&inside),
		      "read inside the shrunk file");
	fx_finish();
	fx_verify(f);
}
END_TEST

/* Malformed requests: -EINVAL (or -errno), never a callback. */
START_TEST(test_err_malformed)
{
	bool async = _i % 2;
	struct dmio_region where[DMIO_MAX_REGIONS + 1];
	unsigned f;
	uint8_t *buf;
	unsigned long bits;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	for (unsigned i = 0; i <= DMIO_MAX_REGIONS; i++)
		where[i] = fx_region(f, i, 1);  /* overlapping is fine for a bad request */
	buf = fx_random_buf(PAGE);
	struct fx_mem *m = fx_mem_vm(SECTOR, 0);
	struct fx_mem *pl = fx_mem_pl(SECTOR, 512);
	struct fx_mem *bv = fx_mem_bvec(2 * SECTOR, 2, false, SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .mem = m };
	struct dmio_stats st0;

	dmio_engine_init(NULL);
	st0 = fx_stats();

	/* A read of two regions, through every call. */
	io.op = DMIO_OP_READ;
	bits = 0;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio() read of 2 regions: %d, want -EINVAL", rc);
	io.api = FX_API_SEED;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_*_vm read of 2 regions: %d, want -EINVAL", rc);
	io.mem = pl;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_sync/async read of 2 regions: %d, want -EINVAL", rc);
	io.mem = bv;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_*_bvec read of 2 regions: %d, want -EINVAL", rc);

	/* No region, and one more than the maximum. */
	for (unsigned a = 0; a < 2; a++) {
		io.api = a ? FX_API_DMIO : FX_API_SEED;
		io.mem = m;
		io.op = DMIO_OP_WRITE;
		rc = fx_do(&io, 0, where, &bits);
		ck_assert_msg(rc == -EINVAL, "write to 0 regions: %d, want -EINVAL", rc);
		rc = fx_do(&io, DMIO_MAX_REGIONS + 1, where, &bits);
		ck_assert_msg(rc == -EINVAL, "write to 65 regions: %d, want -EINVAL", rc);
		io.op = DMIO_OP_READ;
		rc = fx_do(&io, 0, where, &bits);
		ck_assert_msg(rc == -EINVAL, "read of 0 regions: %d, want -EINVAL", rc);
	}
	io.api = FX_API_DMIO;
	io.mem = NULL;
	io.op = DMIO_OP_FLUSH;
	rc = fx_do(&io, 0, where, &bits);
	ck_assert_msg(rc == -EINVAL, "flush of 0 regions: %d, want -EINVAL", rc);
	rc = fx_do(&io, DMIO_MAX_REGIONS + 1, where, &bits);
	ck_assert_msg(rc == -EINVAL, "flush of 65 regions: %d, want -EINVAL", rc);

	/* Unknown op, unknown memory type. */
	io.op = (enum dmio_op)77;
	io.mem = m;
	rc = fx_do(&io, 1, where, &bits);
	ck_assert_msg(rc < 0, "unknown op accepted (%d)", rc);
	{
		struct dmio_request req = {
			.op = DMIO_OP_WRITE,
			.mem = { .type = (enum dmio_mem_type)9, .ptr.vma = buf },
		};
		struct fx_cb *cb = fx_cb_new();

		if (async) {
			req.notify_fn = fx_cb_fn;
			req.notify_context = cb;
		}
		rc = dmio(&req, 1, where, async ? NULL : &bits);
		ck_assert_msg(rc < 0, "unknown memory type accepted (%d)", rc);
	}
	/* The seed calls take only READ and WRITE. */
	rc = dmio_sync_vm(1, where, DMIO_OP_FLUSH + 40, buf, &bits);
	ck_assert_msg(rc < 0, "dmio_sync_vm with rw=%d accepted (%d)", DMIO_OP_FLUSH + 40, rc);

	/* Nothing was accepted: no request counted, the engine still works. */
	ck_assert_msg(fx_stats().requests == st0.requests,
		      "stats.requests counted rejected requests (%" PRIu64 " -> %" PRIu64 ")",
		      st0.requests, fx_stats().requests);
	fx_finish();            /* and no callback ever ran */
	rc = dmio_sync_vm(1, where, DMIO_OP_READ, m->vm, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read after rejected requests: %d %#lx", rc, bits);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase split: max_io_bytes = 16 KiB, multi-MiB requests */

static uint64_t pieces(uint64_t bytes)
{
	return (bytes + SPLIT_MAX_IO - 1) / SPLIT_MAX_IO;
}

START_TEST(test_split_large)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 3 * MiB / SECTOR + 7;   /* 3 MiB + 3.5 KiB */
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0, st1;
	struct fx_mem *m;
	uint8_t *data;
	unsigned f0, f1;

	fx_seed(__func__, _i);
	ck_assert_uint_eq(dmio_max_io_bytes(), SPLIT_MAX_IO);
	f0 = fx_add_file(8 * MiB, 0);
	f1 = fx_add_file(8 * MiB, 0);
	where[0] = fx_region(f0, 3, count);
	where[1] = fx_region(f1, 4096 + 5, count);
	data = fx_random_buf(len);
	switch (type) {
	case DMIO_MEM_PAGE_LIST: m = fx_mem_pl(len, 1024); break;
	case DMIO_MEM_BVEC: m = fx_mem_bvec(len, 24, false, SECTOR); break; /* some > 16 KiB */
	default: m = fx_mem_vm(len, 0); break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = { .api = async ? FX_API_DMIO : FX_API_SEED, .async = async, .mem = m };

	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "split write");
	st1 = fx_stats();
	ck_assert_msg(st1.sqes - st0.sqes >= 2 * pieces(len),
		      "write of 2 x %zu bytes with max_io_bytes %u: %" PRIu64
		      " SQEs, want >= %" PRIu64, len, SPLIT_MAX_IO, st1.sqes - st0.sqes,
		      2 * pieces(len));
	ck_assert_uint_eq(st1.requests - st0.requests, 1);
	fx_verify_all();

	for (unsigned i = 0; i < 2; i++) {
		struct fx_mem *r;

		switch (type) {
		case DMIO_MEM_PAGE_LIST: r = fx_mem_pl(len, 3584); break;
		case DMIO_MEM_BVEC: r = fx_mem_bvec(len, 7, false, SECTOR); break;
		default: r = fx_mem_vm(len, 0); break;
		}
		st0 = fx_stats();
		fx_read_check(&io, r, &where[i], data, "split read");
		st1 = fx_stats();
		ck_assert_msg(st1.sqes - st0.sqes >= pieces(len),
			      "read of %zu bytes: %" PRIu64 " SQEs, want >= %" PRIu64, len,
			      st1.sqes - st0.sqes, pieces(len));
	}
	fx_finish();
}
END_TEST

/* A request's pieces go to io_uring together: one submitting syscall. */
START_TEST(test_split_batched_submit)
{
	const uint64_t count = 1 * MiB / SECTOR;
	struct dmio_stats st0, st1;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = 1;
	int rc;

	fx_seed(__func__, _i);
	r = fx_region(fx_add_file(2 * MiB, 0), 0, count);
	data = fx_random_buf(count * SECTOR);
	st0 = fx_stats();
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, &bits);
	st1 = fx_stats();
	ck_assert_msg(rc == 0 && bits == 0, "1 MiB write: %d %#lx", rc, bits);
	fx_model_write(&r, data);
	ck_assert_uint_ge(st1.sqes - st0.sqes, count * SECTOR / SPLIT_MAX_IO);
	ck_assert_msg(st1.submits - st0.submits >= 1 &&
		      st1.submits - st0.submits <= 1 + (st1.resubmits - st0.resubmits),
		      "a 64-piece request took %" PRIu64 " submitting syscalls (%" PRIu64
		      " resubmits); the header promises one", st1.submits - st0.submits,
		      st1.resubmits - st0.resubmits);
	ck_assert_uint_le(st1.submits, st1.sqes);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase unaligned (regular files, O_DIRECT where the fs takes it) */

/* Whether the fixture's files are O_DIRECT (so unaligned memory must bounce). */
static bool fx_files_direct(unsigned idx)
{
	bool can = fm_test_supports_direct(fx.files[idx].path);

	if (can)
		ck_assert_msg(dmio_dev_is_direct(fx_dev(idx)),
			      "%s accepts O_DIRECT but dmio opened it buffered", fx.files[idx].path);
	else
		fprintf(stderr, "test_dmio: %s: no O_DIRECT here, bounce counts not checked\n",
			tc_dir);
	return can;
}

/* Unaligned memory of each type, written to 2 files and read back. */
START_TEST(test_unaligned_memory)
{
	static const size_t offs[] = { 1, 7, 511 };
	size_t off = offs[_i % 3];
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / 3) % 3);
	bool async = _i / 9;
	const uint64_t count = 21;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0;
	struct fx_mem *m, *r;
	uint8_t *data;
	bool direct;
	char what[96];

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(256 * 1024, 0), 5, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 64, count);
	direct = fx_files_direct(0);
	data = fx_random_buf(len);
	snprintf(what, sizeof(what), "%s memory misaligned by %zu, %s", mem_names[type], off,
		 async ? "async" : "sync");
	switch (type) {
	case DMIO_MEM_PAGE_LIST:        /* an offset into the first page that breaks alignment */
		m = fx_mem_pl(len, (unsigned)off);
		r = fx_mem_pl(len, (unsigned)(PAGE - off));
		break;
	case DMIO_MEM_BVEC:             /* odd lengths at odd addresses, whole sectors in sum */
		m = fx_mem_bvec(len, 5, true, 1);
		r = fx_mem_bvec(len, 3, true, 1);
		break;
	default:
		m = fx_mem_vm(len, off);
		r = fx_mem_vm(len, (off * 3) % 512 ? (off * 3) % 512 : 1);
		break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, direct, what);
	fx_verify_all();
	st0 = fx_stats();
	fx_read_check(&io, r, &where[1], data, what);
	fx_check_bounced(&st0, direct, what);
	fx_finish();
}
END_TEST

/* Aligned memory and sectors are never copied. */
START_TEST(test_unaligned_aligned_not_bounced)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 64;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0;
	uint8_t *data;

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(256 * 1024, 0), 8, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 128, count);
	fx_files_direct(0);
	data = fx_random_buf(len);

	struct fx_mem *m = fx_mem_aligned(type, len);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "aligned write");
	fx_read_check(&io, fx_mem_aligned(type, len), &where[0], data, "aligned read");
	fx_check_bounced(&st0, false, mem_names[type]);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase discard: DISCARD and WRITE_ZEROES (ext4-or-whatever and tmpfs) */

START_TEST(test_discard_zeroes)
{
	enum dmio_op op = _i % 2 ? DMIO_OP_WRITE_ZEROES : DMIO_OP_DISCARD;
	bool async = (_i / 2) % 2;
	bool shm = _i / 4;
	const char *dir = shm ? tc_shm_dir : tc_dir;
	const uint64_t fsect = 1 * MiB / SECTOR;
	unsigned f0, f1;
	char what[96];

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "%s on %s, %s", op_name(op), shm ? "tmpfs" : "the tmp dir",
		 async ? "async" : "sync");
	f0 = fx_add_file_in(dir, 1 * MiB, 0);
	f1 = fx_add_file_in(dir, 1 * MiB, 0);

	/* Over written data: write 256 KiB to both through dmio first. */
	{
		struct dmio_region w[2] = { fx_region(f0, 16, 512), fx_region(f1, 16, 512) };
		uint8_t *data = fx_random_buf(512 * SECTOR);
		struct fx_mem *m = fx_mem_random(DMIO_MEM_VM, 512 * SECTOR);
		struct fx_io io = { .api = FX_API_SEED, .async = async, .mem = m };

		fx_mem_fill(m, data);
		fx_write_ok(&io, 2, w, data, what);
	}
	/* Partial ranges on two regions at once: one not 4 KiB aligned, one aligned. */
	struct dmio_region z[2] = { fx_region(f0, 21, 100), fx_region(f1, 64, 200) };

	fx_zero_op(op, async, 2, z, what);
	fx_verify_all();
	fx_check_zeroes_read_back(&z[0], async);
	fx_check_zeroes_read_back(&z[1], async);

	/* Single sectors, and the very end of a file (its size must not change). */
	struct dmio_region e[2] = { fx_region(f0, 300, 1), fx_region(f1, fsect - 3, 3) };

	fx_zero_op(op, async, 2, e, what);
	fx_verify_all();
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase flush: FLUSH on several devices, FUA and PREFLUSH writes */

START_TEST(test_flush_three_devices)
{
	bool async = _i % 2;
	struct dmio_region where[3];
	unsigned long bits = 0;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(64 * 1024, 0), 0, 8);
	/* sector and count are ignored for a flush: even absurd ones. */
	where[1].sector = UINT64_MAX - 1;
	where[1].count = 12345;
	where[2].count = 0;

	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };

	rc = fx_do(&io, 3, where, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "flush of 3 devices: rc %d bits %#lx", rc, bits);
	/* The memory is not used: a garbage descriptor must not matter. */
	io.mem = NULL;
	{
		struct dmio_request req = {
			.op = DMIO_OP_FLUSH,
			.mem = { .type = DMIO_MEM_VM, .ptr.vma = NULL },
		};

		bits = FX_BITS_POISON;
		rc = dmio(&req, 3, where, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "flush with a NULL vm buffer: %d %#lx", rc, bits);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* A flush of a device opened read-only: fdatasync works on an O_RDONLY fd
 * on Linux, so 0 is expected; whatever happens must be consistent and must
 * not fail the other device. */
START_TEST(test_flush_readonly_device)
{
	struct dmio_region where[2];
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(64 * 1024, 0), 0, 1);
	where[1] = fx_region(fx_add_file(64 * 1024, DMIO_DEV_RDONLY), 0, 1);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_FLUSH }, 2, where, &bits);
	fprintf(stderr, "test_dmio: flush of a normal and a DMIO_DEV_RDONLY device: rc %d, "
		"error bits %#lx\n", rc, bits);
	ck_assert_msg((bits & ~0x2UL) == 0, "flush failed on the writable device: bits %#lx", bits);
	ck_assert_msg((rc == 0) == (bits == 0) && (rc == 0 || rc == -EIO),
		      "rc %d inconsistent with bits %#lx", rc, bits);
	ck_assert_msg(rc == 0, "flush of an O_RDONLY device failed (fdatasync allows it): bits %#lx",
		      bits);
	fx_finish();
}
END_TEST

START_TEST(test_flush_fua_preflush_writes)
{
	static const unsigned flag_sets[] = { DMIO_REQ_FUA, DMIO_REQ_PREFLUSH,
					      DMIO_REQ_FUA | DMIO_REQ_PREFLUSH };
	unsigned flags = flag_sets[_i % 3];
	bool async = _i / 3;
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	const uint64_t count = 40;
	struct dmio_region where[3];
	uint8_t *data;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(256 * 1024, 0), 16 * i + 1, count);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random(type, count * SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .flags = flags, .mem = m };

	fx_mem_fill(m, data);
	fx_write_ok(&io, 3, where, data, flags == DMIO_REQ_FUA ? "FUA write"
					 : flags == DMIO_REQ_PREFLUSH ? "PREFLUSH write"
								      : "FUA|PREFLUSH write");
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *dmio_io_suite(void)
{
	Suite *s = suite_create("dmio_io");
	TCase *tc;

	tc = tc_add(s, "rw", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_rw_matrix, 0, LAYOUT_COUNT * 3 * 2 * 2);
	tcase_add_loop_test(tc, test_rw_regions_of_different_sizes, 0, 6);
	tcase_add_loop_test(tc, test_rw_many_segments, 0, 6);
	tcase_add_loop_test(tc, test_rw_around_inline_limits, 0, 64);

	tc = tc_add(s, "callbacks", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_cb_async_exactly_once);
	tcase_add_loop_test(tc, test_cb_error_bits_sync_and_async, 0, 3);

	tc = tc_add(s, "errors", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_err_readonly_leg, 0, 10);
	tcase_add_loop_test(tc, test_err_past_end, 0, 32);
	tcase_add_loop_test(tc, test_err_short_read_at_eof, 0, 6);
	tcase_add_loop_test(tc, test_err_malformed, 0, 2);

	tc = tc_add(s, "split", tc_dir_setup, tc_dir_teardown, fx_split_setup, fx_teardown);
	tcase_add_loop_test(tc, test_split_large, 0, 6);
	tcase_add_test(tc, test_split_batched_submit);

	tc = tc_add(s, "unaligned", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_unaligned_memory, 0, 18);
	tcase_add_loop_test(tc, test_unaligned_aligned_not_bounced, 0, 6);

	tc = tc_add(s, "discard", tc_shm_setup, tc_shm_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_discard_zeroes, 0, 8);

	tc = tc_add(s, "flush", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_flush_three_devices, 0, 2);
	tcase_add_test(tc, test_flush_readonly_device);
	tcase_add_loop_test(tc, test_flush_fua_preflush_writes, 0, 6);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio_io: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_io_suite());
}
