/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of mirror: I/O on every leg, read policies and write-mostly
 * legs, ordering of overlapping writes, discard, write-zeroes and flush, the
 * mirror under a bufio client.
 * Fixtures and conventions: mirror_fx.h.
 */
#include <sys/ioctl.h>

#include "mirror_fx.h"

/*----------------------------------------------------------------*/
/* TCase io */

START_TEST(test_io_writes_land_on_every_leg)
{
	unsigned n = 2 + (unsigned)_i;
	struct mirror_stats st;
	struct mirror_leg_stats ls;
	uint64_t nwrites = 0, nbytes = 0;

	FX_SEED();
	fx_name_legs(n);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);

	/* Plain writes at random places and of random sizes. */
	for (unsigned k = 0; k < 40; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 1, 256) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;

		fx_write_random(off, len);
		nwrites++;
		nbytes += len;
	}
	/* The first and the last sector. */
	fx_write_random(0, SECTOR);
	fx_write_random(IMG - SECTOR, SECTOR);
	nwrites += 2;
	nbytes += 2 * SECTOR;

	/* Several iovecs, unaligned memory, FUA. */
	for (unsigned k = 0; k < 8; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 2, 64) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;
		uint8_t *mem = fx_buf(len + 1);
		uint8_t *data = mem + (k & 1);  /* odd addresses half the time */
		struct iovec iov[5];
		unsigned cnt = 0;
		uint64_t done = 0;
		struct io *io;
		int r;

		fm_rng_fill(&fx.rng, data, len);
		/* Random cut points: pieces need not be whole sectors. */
		while (done < len && cnt < G_N_ELEMENTS(iov) - 1) {
			uint64_t piece = fm_rng_between(&fx.rng, 1, len - done);

			iov[cnt++] = (struct iovec){ data + done, piece };
			done += piece;
		}
		if (done < len)
			iov[cnt++] = (struct iovec){ data + done, len - done };
		r = fx_submit(fx.m, MIRROR_OP_WRITE, off / SECTOR, iov, cnt,
			      (k & 2) ? MIRROR_IO_FUA : 0, &io);
		/* The iovec array is the mirror's copy now. */
		memset(iov, 0, sizeof(iov));
		ck_assert_int_eq(r, 0);
		ck_assert_int_eq(io_wait(io), 0);
		memcpy(fx.model + off, data, len);
		nwrites++;
		nbytes += len;
	}
	/* More iovecs than a request carries inline, and IOV_MAX of them. */
	for (unsigned k = 0; k < 2; k++) {
		unsigned cnt = k == 0 ? 24 : IOV_MAX;
		uint64_t len = (uint64_t)cnt * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;
		uint8_t *data = fx_buf(len);
		struct iovec *iov = g_new(struct iovec, cnt);
		struct io *io;
		int r;

		fm_rng_fill(&fx.rng, data, len);
		/* Pieces of the same total, backwards in memory. */
		for (unsigned j = 0; j < cnt; j++)
			iov[j] = (struct iovec){ data + (uint64_t)(cnt - 1 - j) * SECTOR, SECTOR };
		r = fx_submit(fx.m, MIRROR_OP_WRITE, off / SECTOR, iov, cnt, 0, &io);
		memset(iov, 0, cnt * sizeof(*iov));
		g_free(iov);
		ck_assert_msg(r == 0, "write of %u iovecs: %d", cnt, r);
		ck_assert_int_eq(io_wait(io), 0);
		for (unsigned j = 0; j < cnt; j++)
			memcpy(fx.model + off + (uint64_t)j * SECTOR,
			       data + (uint64_t)(cnt - 1 - j) * SECTOR, SECTOR);
		nwrites++;
		nbytes += len;
	}
	fx_check_legs(0, IMG);

	/* Reads come back right, also into several iovecs. */
	for (unsigned k = 0; k < 20; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 1, 256) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;

		fx_check_read(off, len);
	}
	{
		uint8_t *data = fx_buf(3 * SECTOR + 1) + 1;
		struct iovec iov[3] = { { data, 100 }, { data + 100, 1000 },
					{ data + 1100, 3 * SECTOR - 1100 } };
		struct io *io;

		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, 7, iov, 3, 0, &io), 0);
		ck_assert_int_eq(io_wait(io), 0);
		fm_assert_bytes_eq(data, fx.model + 7 * SECTOR, 3 * SECTOR, "3-iovec read");
	}
	{
		const unsigned cnt = 20;
		uint8_t *data = fx_buf(cnt * 1024);
		struct iovec iov[20];
		struct io *io;

		for (unsigned j = 0; j < cnt; j++)
			iov[j] = (struct iovec){ data + j * 1024, 1024 };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, 99, iov, cnt, 0, &io), 0);
		ck_assert_int_eq(io_wait(io), 0);
		fm_assert_bytes_eq(data, fx.model + 99 * SECTOR, cnt * 1024, "20-iovec read");
	}

	stats(&st);
	ck_assert_uint_eq(st.writes, nwrites);
	ck_assert_uint_eq(st.write_bytes, nbytes);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_uint_eq(st.reads, 22);
	for (unsigned i = 0; i < n; i++) {
		leg_stats(i, &ls);
		ck_assert_uint_eq(ls.writes, nwrites);
		ck_assert_uint_eq(ls.write_bytes, nbytes);
		ck_assert_uint_eq(ls.write_errors, 0);
		ck_assert_uint_eq(ls.pending, 0);
	}
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Everything that must be refused before it starts; end_io never runs. */
START_TEST(test_io_refused)
{
	uint8_t *buf;
	struct iovec iov[2], *many;
	struct mirror_stats st;
	const enum mirror_op ops[] = { MIRROR_OP_READ, MIRROR_OP_WRITE };

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	buf = fx_buf(8192);

	for (unsigned k = 0; k < G_N_ELEMENTS(ops); k++) {
		enum mirror_op op = ops[k];

		/* Past the end. */
		iov[0] = (struct iovec){ buf, SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS, iov, 1, 0, NULL), -ENOSPC);
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS + 100, iov, 1, 0, NULL), -ENOSPC);
		ck_assert_int_eq(fx_submit(fx.m, op, UINT64_MAX, iov, 1, 0, NULL), -ENOSPC);
		iov[0] = (struct iovec){ buf, 2 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS - 1, iov, 1, 0, NULL), -ENOSPC);
		iov[0] = (struct iovec){ buf, 8192 };
		ck_assert_int_eq(fx_submit(fx.m, op, UINT64_MAX - 8, iov, 1, 0, NULL), -ENOSPC);
		/* Not whole sectors. */
		iov[0] = (struct iovec){ buf, 511 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 513 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 0 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 0, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 256 };
		iov[1] = (struct iovec){ buf + 256, 512 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 2, 0, NULL), -EINVAL);
	}
	/* Too many iovecs. */
	many = g_new(struct iovec, IOV_MAX + 1);
	for (unsigned i = 0; i < IOV_MAX + 1; i++)
		many[i] = (struct iovec){ buf, SECTOR };
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 0, many, IOV_MAX + 1, 0, NULL),
			 -EINVAL);
	g_free(many);
	ck_assert_int_eq(mirror_discard(fx.m, IMG_SECTORS - 1, 2), -ENOSPC);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, IMG_SECTORS, 1), -ENOSPC);
	ck_assert_int_eq(mirror_discard(fx.m, UINT64_MAX - 1, 4), -ENOSPC);

	/* Nothing reached the legs, and nothing was counted as done. */
	stats(&st);
	ck_assert_uint_eq(st.writes, 0);
	ck_assert_uint_eq(st.errors, 0);
	fx_check_legs(0, IMG);

	/* The largest request that fits does fit. */
	fx_write_random(IMG - 8192, 8192);
	fx_check_read(IMG - 8192, 8192);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase read-policy */


START_TEST(test_read_policy_names)
{
	enum mirror_read_policy p = MIRROR_READ_FIRST;

	for (unsigned i = 0; i < G_N_ELEMENTS(policies); i++) {
		const char *name = mirror_read_policy_name(policies[i]);

		ck_assert_int_eq(mirror_read_policy_parse(name, &p), 0);
		ck_assert_int_eq(p, policies[i]);
	}
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_BALANCE), "balance");
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_ROUND_ROBIN), "round-robin");
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_FIRST), "first");
	p = MIRROR_READ_ROUND_ROBIN;
	ck_assert_int_eq(mirror_read_policy_parse("fastest", &p), -EINVAL);
	ck_assert_int_eq(mirror_read_policy_parse("", &p), -EINVAL);
	ck_assert_int_eq(mirror_read_policy_parse("Balance", &p), -EINVAL);
	ck_assert_int_eq(p, MIRROR_READ_ROUND_ROBIN);
}
END_TEST

/* Reads issued since @base[]: per leg. */
static void read_deltas(const uint64_t *base, uint64_t *ret)
{
	struct mirror_leg_stats ls;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		ret[i] = ls.reads - base[i];
	}
}

static void read_marks(uint64_t *ret)
{
	struct mirror_leg_stats ls;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		ret[i] = ls.reads;
	}
}

START_TEST(test_read_policy_distribution)
{
	enum mirror_read_policy policy = policies[_i];
	const unsigned nr = 32;
	uint64_t base[2], d[2];
	struct io *ios[64];
	uint8_t *bufs[64];
	struct mirror_leg_stats ls0, ls1;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(policy, false);
	fx_write_random(0, 2 * MiB);

	/* One at a time, at starts that never continue an earlier read
	 * (multiples of 16 sectors, 8 long, descending). */
	read_marks(base);
	for (unsigned k = 0; k < nr; k++)
		fx_check_read((uint64_t)(nr - 1 - k) * 16 * SECTOR, 8 * SECTOR);
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], nr);
	switch (policy) {
	case MIRROR_READ_FIRST:
		ck_assert_msg(d[0] == nr && d[1] == 0, "first: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);
		break;
	case MIRROR_READ_ROUND_ROBIN:
		ck_assert_msg(d[0] == nr / 2 && d[1] == nr / 2,
			      "round-robin: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
		break;
	case MIRROR_READ_BALANCE:
		/* Idle legs share the load. */
		ck_assert_msg(d[0] > 0 && d[1] > 0, "balance: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);
		break;
	}

	/* A sequential stream, one read at a time. */
	read_marks(base);
	for (unsigned k = 0; k < nr; k++)
		fx_check_read(1 * MiB + (uint64_t)k * 4096, 4096);
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], nr);
	if (policy == MIRROR_READ_FIRST)
		ck_assert_msg(d[0] == nr, "first: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
	else if (policy == MIRROR_READ_ROUND_ROBIN)
		ck_assert_msg(d[0] == nr / 2 && d[1] == nr / 2,
			      "round-robin: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
	else    /* sequential affinity: the stream stays on one leg */
		ck_assert_msg(d[0] == nr || d[1] == nr,
			      "balance: a sequential stream was split %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);

	/* Many at once. */
	read_marks(base);
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		struct iovec iov;

		bufs[k] = fx_buf(8 * SECTOR);
		iov = (struct iovec){ bufs[k], 8 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, (uint64_t)k * 32, &iov, 1, 0,
					   &ios[k]), 0);
	}
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		ck_assert_int_eq(io_wait(ios[k]), 0);
		fm_assert_bytes_eq(bufs[k], fx.model + (uint64_t)k * 32 * SECTOR, 8 * SECTOR,
				   "concurrent read %u", k);
	}
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], G_N_ELEMENTS(ios));
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(d[1], 0);
	else if (policy == MIRROR_READ_ROUND_ROBIN)
		ck_assert_uint_eq(d[0], d[1]);
	else
		ck_assert_msg(d[0] > 0 && d[1] > 0, "balance: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	ck_assert_uint_eq(ls0.read_errors + ls1.read_errors, 0);
	ck_assert_uint_eq(ls0.pending + ls1.pending, 0);
	ck_assert_uint_eq(ls0.read_bytes + ls1.read_bytes,
			  nr * 8 * SECTOR + nr * 4096 + G_N_ELEMENTS(ios) * 8 * SECTOR);
	fx_stop(0);
}
END_TEST

/* Reads of 8 sectors at descending starts (none continues another), one
 * at a time, then 32 at once; every read checked against the model. */
static void wm_reads(unsigned nr)
{
	struct io *ios[32];
	uint8_t *bufs[32];

	for (unsigned k = 0; k < nr; k++)
		fx_check_read((uint64_t)(nr - 1 - k) * 16 * SECTOR, 8 * SECTOR);
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		struct iovec iov;

		bufs[k] = fx_buf(8 * SECTOR);
		iov = (struct iovec){ bufs[k], 8 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, (uint64_t)k * 32, &iov, 1, 0,
					   &ios[k]), 0);
	}
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		ck_assert_int_eq(io_wait(ios[k]), 0);
		fm_assert_bytes_eq(bufs[k], fx.model + (uint64_t)k * 32 * SECTOR, 8 * SECTOR,
				   "concurrent read %u", k);
	}
}

/*
 * Write-mostly (md's --write-mostly), under every read policy: leg 0 (the
 * one policy "first" would read) is flagged at format and gets no reads
 * while legs 1 and 2 can serve them; it still gets every write; it serves
 * the reads the others fail, and all reads once they are gone.  Cleared
 * online, it is read again; the flag survives a stop and a re-assembly.
 */
START_TEST(test_read_write_mostly)
{
	enum mirror_read_policy policy = policies[_i];
	struct mirror_format_opts fo = { .size = IMG, .write_mostly = 1u << 0 };
	struct mirror_opts o = { .read_policy = policy, .max_read_errors = 1000 };
	/* Bad blocks that a rewrite heals: the repairs verify. */
	struct dmio_fault f = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				.sector = 0, .count = 1 * MiB / SECTOR };
	const unsigned nr = 32, total = nr + 32;
	struct mirror_leg_stats ls[3];
	uint64_t base[3], d[3], retries;
	struct mirror_stats st;
	struct fm_sb sb;
	GError *err = NULL;
	uint8_t uuid[16];

	FX_SEED();
	fx_name_legs(3);
	admin_ok(mirror_format((const char *const *)fx.legs, 3, &fo, uuid, &err), err, "format");
	read_sb(fx.legs[2], &sb);
	fx.data_offset = sb.data_offset;
	memset(fx.model, 0, IMG);
	ck_assert_uint_eq(sb.legs[0].flags, FM_SB_LEG_WRITE_MOSTLY);
	ck_assert_uint_eq(sb.legs[1].flags, 0);
	ck_assert_uint_eq(sb.legs[2].flags, 0);
	fx_assemble_opts(&o);
	leg_stats(0, &ls[0]);
	leg_stats(1, &ls[1]);
	ck_assert(ls[0].write_mostly);
	ck_assert(!ls[1].write_mostly);
	fx_write_random(0, 2 * MiB);

	/* 1. Legs 1 and 2 serve every read; leg 0 took every write. */
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[0] == 0 && d[1] + d[2] == total,
		      "%s: legs read %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      mirror_read_policy_name(policy), d[0], d[1], d[2]);
	if (policy != MIRROR_READ_FIRST)
		ck_assert_msg(d[1] > 0 && d[2] > 0, "%s: legs 1/2 read %" PRIu64 "/%" PRIu64,
			      mirror_read_policy_name(policy), d[1], d[2]);
	for (unsigned i = 0; i < 3; i++)
		leg_stats(i, &ls[i]);
	ck_assert_uint_gt(ls[0].writes, 0);
	ck_assert_uint_eq(ls[0].writes, ls[1].writes);

	/* 2. Legs 1 and 2 fail every read: leg 0 serves them (fail-over). */
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject 1");
	admin_ok(mirror_inject(fx.m, fx.legs[2], &f, &err), err, "inject 2");
	stats(&st);
	retries = st.read_retries;
	read_marks(base);
	for (unsigned k = 0; k < 8; k++)
		fx_check_read((uint64_t)(7 - k) * 16 * SECTOR, 8 * SECTOR);
	read_deltas(base, d);
	stats(&st);
	/* Each read failed on both legs and was served by leg 0 (whose
	 * count also holds the reads of the repairs that follow). */
	ck_assert_uint_eq(st.read_retries - retries, 8);
	ck_assert_uint_ge(d[0], 8);
	ck_assert_uint_eq(d[1], 8);
	ck_assert_uint_eq(d[2], 8);
	admin_ok(mirror_inject(fx.m, fx.legs[1], NULL, &err), err, "clear 1");
	admin_ok(mirror_inject(fx.m, fx.legs[2], NULL, &err), err, "clear 2");
	/* Let the repairs of those reads end before the legs go. */
	{
		gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

		do {
			g_usleep(2000);
			leg_stats(1, &ls[1]);
			leg_stats(2, &ls[2]);
		} while ((ls[1].corrected < ls[1].read_errors ||
			  ls[2].corrected < ls[2].read_errors) &&
			 g_get_monotonic_time() < deadline);
	}

	/* 3. Cleared online: leg 0 is read again (every policy but "first"
	 * spreads; "first" now reads leg 0, the first leg). */
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[0], false, &err), err, "wm off");
	leg_stats(0, &ls[0]);
	ck_assert(!ls[0].write_mostly);
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[0] > 0, "%s: leg 0 not read once write-mostly was cleared",
		      mirror_read_policy_name(policy));
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(d[0], total);

	/* 4. Set again (leg 2 this time), recorded on disk, kept over a stop. */
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[2], true, &err), err, "wm on");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[2], true, &err), err, "wm on twice");
	ck_assert_int_eq(mirror_set_write_mostly(fx.m, "/nonexistent/leg", true, &err), -ENODEV);
	g_clear_error(&err);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.legs[0].flags, 0);
	ck_assert_uint_eq(sb.legs[2].flags, FM_SB_LEG_WRITE_MOSTLY);
	fx_stop(0);
	fx_assemble_opts(&o);
	leg_stats(2, &ls[2]);
	ck_assert(ls[2].write_mostly);
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[2] == 0 && d[0] + d[1] == total,
		      "%s after re-assembly: legs read %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      mirror_read_policy_name(policy), d[0], d[1], d[2]);

	/* 5. The others gone: the write-mostly leg serves everything. */
	admin_ok(mirror_fail_leg(fx.m, fx.legs[0], &err), err, "fail 0");
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail 1");
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_uint_eq(d[2], total);
	fx_stop(0);
}
END_TEST

/* TCase ordering */

#define ORD_THREADS 4
#define ORD_WRITES 300
#define ORD_BASE (1 * MiB / SECTOR)    /* first sector of the window */
#define ORD_WINDOW 32                   /* sectors every write falls in */
#define ORD_MAX 8                       /* sectors per write, at most */

struct ord_write {
	uint64_t seq;           /* submission order, over all threads */
	uint64_t sector;        /* in the window */
	unsigned count;
	uint8_t *buf;
	struct io *io;
	int rc;
};

struct ord_thread {
	GThread *thread;
	uint64_t seed;
	struct ord_write w[ORD_WRITES];
};

static struct {
	pthread_mutex_t lock;   /* held from taking a seq number to submit's return */
	uint64_t next_seq;
} ord;

static gpointer ord_thread_fn(gpointer p)
{
	struct ord_thread *t = p;
	struct fm_rng rng;

	fm_rng_seed(&rng, t->seed);
	for (unsigned i = 0; i < ORD_WRITES; i++) {
		struct ord_write *w = &t->w[i];
		struct iovec iov[2];
		unsigned iovcnt = 1;
		size_t len;

		w->sector = fm_rng_between(&rng, 0, ORD_WINDOW - 1);
		w->count = (unsigned)fm_rng_between(&rng, 1, MIN(ORD_MAX, ORD_WINDOW - w->sector));
		len = (size_t)w->count * SECTOR;
		if (posix_memalign((void **)&w->buf, 4096, len) != 0) {
			w->rc = -ENOMEM;
			continue;
		}
		fm_rng_fill(&rng, w->buf, len);
		iov[0] = (struct iovec){ w->buf, len };
		if (len > SECTOR && (fm_rng_next(&rng) & 1)) {
			size_t cut = (size_t)fm_rng_between(&rng, 1, len - 1);

			iov[0].iov_len = cut;
			iov[1] = (struct iovec){ w->buf + cut, len - cut };
			iovcnt = 2;
		}
		w->io = g_new0(struct io, 1);
		pthread_mutex_lock(&ord.lock);
		w->seq = ord.next_seq++;
		w->rc = mirror_submit(fx.m, MIRROR_OP_WRITE, ORD_BASE + w->sector, iov, iovcnt,
				      0, io_done, w->io);
		pthread_mutex_unlock(&ord.lock);
		if (i % 32 == 0)
			g_thread_yield();
	}
	return NULL;
}

START_TEST(test_ordering_threads)
{
	struct ord_thread *t = g_new0(struct ord_thread, ORD_THREADS);
	uint64_t last[ORD_WINDOW];
	struct mirror_stats st;
	unsigned total = 0;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	pthread_mutex_init(&ord.lock, NULL);
	ord.next_seq = 0;

	for (unsigned i = 0; i < ORD_THREADS; i++) {
		t[i].seed = fm_rng_next(&fx.rng);
		t[i].thread = g_thread_new("ord", ord_thread_fn, &t[i]);
	}
	for (unsigned i = 0; i < ORD_THREADS; i++)
		g_thread_join(t[i].thread);
	/* Hand everything to the fixture before asserting anything. */
	fx_lock();
	for (unsigned i = 0; i < ORD_THREADS; i++) {
		for (unsigned k = 0; k < ORD_WRITES; k++) {
			struct ord_write *w = &t[i].w[k];

			if (w->buf)
				g_ptr_array_add(fx.bufs, w->buf);
			if (w->io)
				g_ptr_array_add(w->rc == 0 ? fx.accepted : fx.refused, w->io);
		}
	}
	fx_unlock();
	for (unsigned i = 0; i < ORD_THREADS; i++)
		for (unsigned k = 0; k < ORD_WRITES; k++)
			ck_assert_msg(t[i].w[k].rc == 0, "thread %u write %u: %d", i, k,
				      t[i].w[k].rc);
	fx_wait_all();
	for (unsigned i = 0; i < ORD_THREADS; i++)
		for (unsigned k = 0; k < ORD_WRITES; k++)
			ck_assert_msg(t[i].w[k].io->err == 0, "thread %u write %u completed with %d",
				      i, k, t[i].w[k].io->err);

	/* Each sector holds the last write submitted to it. */
	for (unsigned s = 0; s < ORD_WINDOW; s++)
		last[s] = UINT64_MAX;
	for (unsigned i = 0; i < ORD_THREADS; i++) {
		for (unsigned k = 0; k < ORD_WRITES; k++) {
			struct ord_write *w = &t[i].w[k];

			for (unsigned s = (unsigned)w->sector; s < w->sector + w->count; s++) {
				if (last[s] != UINT64_MAX && last[s] > w->seq)
					continue;
				last[s] = w->seq;
				memcpy(fx.model + (ORD_BASE + s) * SECTOR,
				       w->buf + (s - w->sector) * SECTOR, SECTOR);
			}
			total++;
		}
	}
	fx_check_legs(0, IMG);
	fx_check_read(ORD_BASE * SECTOR, ORD_WINDOW * SECTOR);

	stats(&st);
	ck_assert_uint_eq(st.writes, total);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_msg(st.overlap_waits > 0, "no write ever waited for an overlapping one");
	fprintf(stderr, "test_mirror: ordering: %u writes, %" PRIu64 " waited\n", total,
		st.overlap_waits);
	fx_stop(0);
	pthread_mutex_destroy(&ord.lock);
	g_free(t);
}
END_TEST

/* A discard (and a write-zeroes) overlapping writes still in flight is
 * ordered after them: the range reads back as zeroes on every leg. */
START_TEST(test_ordering_discard_after_writes)
{
	const uint64_t base = 2 * MiB / SECTOR, window = 64;
	const unsigned nw = 200;
	uint64_t dz_start = base + 16, dz_count = 32;
	struct mirror_stats st;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);

	for (unsigned k = 0; k < nw; k++) {
		uint64_t s = k == 0 ? 0 : fm_rng_between(&fx.rng, 0, window - 1);
		uint64_t c = k == 0 ? window : fm_rng_between(&fx.rng, 1, MIN(16, window - s));
		size_t len = (size_t)c * SECTOR;
		uint8_t *buf = fx_buf(len);
		struct iovec iov = { buf, len };

		fm_rng_fill(&fx.rng, buf, len);
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, base + s, &iov, 1, 0, NULL), 0);
		/* Submitted in order from one thread: the last one wins. */
		memcpy(fx.model + (base + s) * SECTOR, buf, len);
	}
	if (_i == 0)
		r = mirror_discard(fx.m, dz_start, dz_count);
	else
		r = mirror_write_zeroes(fx.m, dz_start, dz_count);
	ck_assert_int_eq(r, 0);
	memset(fx.model + dz_start * SECTOR, 0, dz_count * SECTOR);
	/* Already on return, before the other writes complete. */
	for (unsigned i = 0; i < fx.nlegs; i++)
		ck_assert_msg(file_range_is_zero(fx.legs[i], fx.data_offset + dz_start * SECTOR,
						  dz_count * SECTOR),
			      "leg %u: the %s range is not zero on return", i,
			      _i ? "write-zeroes" : "discard");
	fx_wait_all();
	fx_check_legs(0, IMG);
	fx_check_read(base * SECTOR, window * SECTOR);
	stats(&st);
	ck_assert_uint_eq(st.writes, nw);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase zeroes: flush, discard, write-zeroes */

START_TEST(test_zeroes_and_flush)
{
	struct { bool discard; uint64_t sector, count; } cases[] = {
		{ true, 1 * MiB / SECTOR + 8, 128 },            /* 4 KiB aligned */
		{ true, 1 * MiB / SECTOR + 600 + 3, 100 },      /* odd sectors */
		{ false, 2 * MiB / SECTOR, 256 },
		{ false, 2 * MiB / SECTOR + 700 + 1, 7 },
		{ true, 0, 1 },                                 /* the first sector */
		{ false, IMG_SECTORS - 3, 3 },                  /* the last ones */
	};
	struct mirror_stats st0, st;
	unsigned ndiscards = 0;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 4 * MiB);
	fx_write_random(IMG - 1 * MiB, 1 * MiB);
	stats(&st0);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	stats(&st);
	ck_assert_uint_eq(st.flushes, st0.flushes + 1);

	for (unsigned k = 0; k < G_N_ELEMENTS(cases); k++) {
		int r = cases[k].discard ? mirror_discard(fx.m, cases[k].sector, cases[k].count)
					 : mirror_write_zeroes(fx.m, cases[k].sector,
							       cases[k].count);

		ck_assert_msg(r == 0, "case %u: %d", k, r);
		memset(fx.model + cases[k].sector * SECTOR, 0, cases[k].count * SECTOR);
		ndiscards += cases[k].discard;
		fx_check_legs(0, IMG);
	}
	/* Nothing at all. */
	ck_assert_int_eq(mirror_discard(fx.m, 100, 0), 0);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, 100, 0), 0);
	fx_check_legs(0, IMG);
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_check_read(off, 1 * MiB);
	stats(&st);
	ck_assert_uint_ge(st.discards, ndiscards);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase bufio: the mirror under a bufio client */

START_TEST(test_bufio_on_mirror)
{
	static const unsigned block_sizes[] = { 512, 4096, 65536 };
	unsigned bs = block_sizes[_i];
	uint64_t nblocks = IMG / bs;
	uint64_t blocks[] = { 0, 1, 5, nblocks / 2, nblocks - 1 };
	struct bufio_client *c = NULL;
	struct fm_bdev bdev;
	struct bufio_buffer *b;
	struct mirror_stats st;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	bdev = mirror_bdev(fx.m);
	ck_assert_ptr_nonnull(bdev.ops);
	ck_assert_ptr_nonnull(bdev.ops->submit);
	ck_assert_uint_eq(bdev.ops->size(bdev.dev), IMG);
	ck_assert_int_eq(bufio_client_create(&bdev, bs, 1, 0, NULL, NULL, &c), 0);

	for (unsigned k = 0; k < G_N_ELEMENTS(blocks); k++) {
		uint8_t *p;

		ck_assert_int_eq(bufio_new(c, blocks[k], &b), 0);
		p = bufio_begin_modify(b);
		fm_rng_fill(&fx.rng, p, bs);
		memcpy(fx.model + blocks[k] * bs, p, bs);
		bufio_mark_buffer_dirty(b);
		bufio_release(b);
	}
	ck_assert_int_eq(bufio_write_dirty_buffers(c), 0);
	fx_check_legs(0, IMG);

	/* Reads through the cache come from the mirror. */
	fx_write_random(3 * bs, bs);
	ck_assert_int_eq(bufio_read(c, 3, &b), 0);
	fm_assert_bytes_eq(bufio_get_block_data(b), fx.model + 3 * bs, bs, "bufio_read");
	bufio_release(b);
	ck_assert_int_eq(bufio_read(c, blocks[3], &b), 0);
	fm_assert_bytes_eq(bufio_get_block_data(b), fx.model + blocks[3] * bs, bs,
			   "bufio_read of a block written through bufio");
	bufio_release(b);
	bufio_client_destroy(c);

	stats(&st);
	ck_assert_uint_ge(st.writes, 2);
	ck_assert_uint_ge(st.flushes, 1);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Bytes in @pipe_fd now (FIONREAD). */
static int pipe_bytes(int pipe_fd)
{
	int n = -1;

	ck_assert_int_eq(ioctl(pipe_fd, FIONREAD, &n), 0);
	return n;
}

/* A fresh 2-leg mirror on legs in directory @shm (in memory), as a block
 * device: assembled with @o, or NULL for the defaults (read balance). */
static struct fm_bdev assemble_in_memory(const char *shm, const struct mirror_opts *o)
{
	for (unsigned i = 0; i < 2; i++) {
		g_free(fx.legs[i]);
		fx.legs[i] = g_strdup_printf("%s/leg%u", shm, i);
	}
	fx.nlegs = 2;
	fx_format(IMG);
	if (o)
		fx_assemble_opts(o);
	else
		fx_assemble(MIRROR_READ_BALANCE, false);
	ck_assert(mirror_legs_in_memory(fx.m));
	return mirror_bdev(fx.m);
}

/* A fresh mirror with checksums, [MiB, 2 MiB) written, as a block device. */
static struct fm_bdev assemble_checksummed(void)
{
	fx_format_opts(&(struct mirror_format_opts){ .size = IMG, .checksums = true,
						     .force = true });
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(MiB, MiB);
	return mirror_bdev(fx.m);
}

/* A fresh 2-leg mirror in the TCase's directory, [MiB, 2 MiB) written, as
 * a block device in *@ret, when its legs are not in memory (true). */
static bool assemble_on_disk(struct fm_bdev *ret)
{
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	if (mirror_legs_in_memory(fx.m))
		return false;
	fx_write_random(MiB, MiB);
	*ret = mirror_bdev(fx.m);
	return true;
}

/*
 * The mirror's splice_read (blockdev.h): on legs in memory, a written
 * range's bytes go into the pipe; refused with nothing put in it for an
 * unwritten range (its zeroes come from the written map, not a leg), past
 * the end, with checksums (the data must be verified) and on legs not in
 * memory (the splice could wait for the disk).
 */
START_TEST(test_splice_read)
{
	char *shm = fm_test_mkdtemp("/dev/shm", "mirror-splice");
	uint8_t *got = g_malloc(MiB);
	struct mirror_leg_stats ls[2];
	struct fm_bdev bdev;
	size_t done = 0;
	int p[2];

	FX_SEED();
	ck_assert_int_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	ck_assert_int_ge(fcntl(p[1], F_SETPIPE_SZ, 1 << 20), 1 << 20);
	bdev = assemble_in_memory(shm, NULL);
	ck_assert_ptr_nonnull(bdev.ops->splice_read);
	ck_assert_int_eq(bdev.ops->splice_read(bdev.dev, MiB / SECTOR, 1024, p[1]), -EAGAIN);
	ck_assert_int_eq(pipe_bytes(p[0]), 0);
	fx_write_random(MiB, MiB);
	ck_assert_int_eq(bdev.ops->splice_read(bdev.dev, MiB / SECTOR + 8, 1024, p[1]), 0);
	ck_assert_int_eq(pipe_bytes(p[0]), 512 * KiB);
	while (done < 512 * KiB) {
		ssize_t n = read(p[0], got + done, 512 * KiB - done);

		ck_assert_int_gt(n, 0);
		done += (size_t)n;
	}
	fm_assert_bytes_eq(got, fx.model + MiB + 8 * SECTOR, 512 * KiB, "spliced bytes");
	mirror_get_leg_stats(fx.m, 0, &ls[0]);
	mirror_get_leg_stats(fx.m, 1, &ls[1]);
	ck_assert_uint_eq(ls[0].read_bytes + ls[1].read_bytes, 512 * KiB);
	ck_assert_int_eq(bdev.ops->splice_read(bdev.dev, IMG_SECTORS - 8, 16, p[1]), -EINVAL);
	ck_assert_int_eq(pipe_bytes(p[0]), 0);
	fx_stop(0);

	/* Checksums: every read is verified, so none is spliced. */
	bdev = assemble_checksummed();
	ck_assert_int_eq(bdev.ops->splice_read(bdev.dev, MiB / SECTOR, 1024, p[1]), -EOPNOTSUPP);
	ck_assert_int_eq(pipe_bytes(p[0]), 0);
	fx_check_read(MiB, MiB);
	fx_stop(0);

	/* Legs on disk (the TCase's directory), when they are. */
	if (assemble_on_disk(&bdev)) {
		ck_assert_int_eq(bdev.ops->splice_read(bdev.dev, MiB / SECTOR, 1024, p[1]),
				 -EOPNOTSUPP);
		ck_assert_int_eq(pipe_bytes(p[0]), 0);
	}
	fx_stop(0);
	close(p[0]);
	close(p[1]);
	g_free(got);
	ck_assert_int_eq(fm_test_rm_rf(shm), 0);
	g_free(shm);
}
END_TEST

/*
 * The mirror's map_read (blockdev.h): on legs in memory, a written range
 * is lent where it lies in a leg's mapping (the bytes written, the leg's
 * read counted); refused, with nothing held, for an unwritten range, a
 * range a discard made a hole of (a read through the mapping would
 * allocate a page there), past the end, with checksums and on legs not in
 * memory.
 */
START_TEST(test_map_read)
{
	char *shm = fm_test_mkdtemp("/dev/shm", "mirror-map");
	struct mirror_leg_stats ls[2];
	struct fm_bdev bdev;
	const void *ptr = NULL;
	void *hold = NULL;

	FX_SEED();
	bdev = assemble_in_memory(shm, NULL);
	ck_assert_ptr_nonnull(bdev.ops->map_read);
	ck_assert_ptr_nonnull(bdev.ops->map_put);
	ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR, 1024, &ptr, &hold), -EAGAIN);
	ck_assert_ptr_null(ptr);
	fx_write_random(MiB, MiB);
	ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR + 8, 1024, &ptr, &hold), 0);
	ck_assert_ptr_nonnull(ptr);
	ck_assert_ptr_nonnull(hold);
	fm_assert_bytes_eq(ptr, fx.model + MiB + 8 * SECTOR, 512 * KiB, "lent bytes");
	bdev.ops->map_put(bdev.dev, hold, MiB / SECTOR + 8, 1024, 0);
	mirror_get_leg_stats(fx.m, 0, &ls[0]);
	mirror_get_leg_stats(fx.m, 1, &ls[1]);
	ck_assert_uint_eq(ls[0].read_bytes + ls[1].read_bytes, 512 * KiB);
	/* A loan whose copy faulted (the leg shrank behind us): that leg lends
	 * nothing more (its reads take the engine's path) until written
	 * again; the other one still does. */
	{
		uint64_t before[2], bad, lent = 0;
		int r;

		before[0] = ls[0].read_bytes;
		ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR + 8, 1024, &ptr, &hold), 0);
		mirror_get_leg_stats(fx.m, 0, &ls[0]);
		mirror_get_leg_stats(fx.m, 1, &ls[1]);
		bad = ls[0].read_bytes > before[0] ? 0 : 1;     /* the leg of this loan */
		bdev.ops->map_put(bdev.dev, hold, MiB / SECTOR + 8, 1024, -EFAULT);
		before[0] = ls[0].read_bytes;
		before[1] = ls[1].read_bytes;
		for (int i = 0; i < 8; i++) {
			r = bdev.ops->map_read(bdev.dev, MiB / SECTOR + 8, 1024, &ptr, &hold);
			ck_assert_msg(r == 0 || r == -EAGAIN, "map_read after a fault: %d", r);
			if (r == 0) {
				bdev.ops->map_put(bdev.dev, hold, MiB / SECTOR + 8, 1024, 0);
				lent++;
			}
		}
		mirror_get_leg_stats(fx.m, 0, &ls[0]);
		mirror_get_leg_stats(fx.m, 1, &ls[1]);
		ck_assert_uint_eq(ls[bad].read_bytes, before[bad]);
		ck_assert_uint_gt(lent, 0);
		ck_assert_uint_eq(ls[1 - bad].read_bytes, before[1 - bad] + lent * 512 * KiB);
		/* Written again: lent again by both. */
		fx_write_random(MiB, MiB);
		for (int i = 0; i < 8; i++) {
			ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR + 8, 1024, &ptr,
							    &hold), 0);
			bdev.ops->map_put(bdev.dev, hold, MiB / SECTOR + 8, 1024, 0);
		}
		mirror_get_leg_stats(fx.m, 0, &ls[0]);
		mirror_get_leg_stats(fx.m, 1, &ls[1]);
		ck_assert_uint_gt(ls[bad].read_bytes, before[bad]);
		fx_check_read(MiB, MiB);
	}
	/* A discard punches holes in the legs: not lent there, read as
	 * zeroes the usual way. */
	ck_assert_int_eq(mirror_discard(fx.m, MiB / SECTOR, 64), 0);
	memset(fx.model + MiB, 0, 64 * SECTOR);
	ptr = NULL;
	ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR, 1024, &ptr, &hold), -EAGAIN);
	ck_assert_ptr_null(ptr);
	fx_check_read(MiB, MiB);
	ck_assert_int_eq(bdev.ops->map_read(bdev.dev, IMG_SECTORS - 8, 16, &ptr, &hold), -EINVAL);
	ck_assert_ptr_null(ptr);
	fx_stop(0);

	/* Checksums: every read is verified, so none is lent. */
	bdev = assemble_checksummed();
	ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR, 1024, &ptr, &hold),
			 -EOPNOTSUPP);
	ck_assert_ptr_null(ptr);
	fx_stop(0);

	/* Legs on disk (the TCase's directory), when they are. */
	if (assemble_on_disk(&bdev)) {
		ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR, 1024, &ptr, &hold),
				 -EOPNOTSUPP);
		ck_assert_ptr_null(ptr);
	}
	fx_stop(0);
	ck_assert_int_eq(fm_test_rm_rf(shm), 0);
	g_free(shm);
}
END_TEST

/*
 * A loan whose copy faulted is a read error of its leg in the range lent,
 * like one of the engine's that was not corrected: counted, reported (the
 * ReadError event, with the range's offset), and at max_read_errors of
 * them the leg fails, though its file did not shrink.
 */
START_TEST(test_map_put_fault)
{
	char *shm = fm_test_mkdtemp("/dev/shm", "mirror-mapf");
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST, .max_read_errors = 2,
				 .event_fn = ev_handler };
	struct mirror_leg_stats ls;
	struct fm_bdev bdev;
	const void *ptr;
	void *hold;

	FX_SEED();
	bdev = assemble_in_memory(shm, &o);
	fx_write_random(MiB, MiB);
	for (unsigned round = 1; round <= 2; round++) {
		ev_reset();
		ck_assert_int_eq(bdev.ops->map_read(bdev.dev, MiB / SECTOR + 8, 1024, &ptr, &hold),
				 0);
		bdev.ops->map_put(bdev.dev, hold, MiB / SECTOR + 8, 1024, -EFAULT);
		mirror_get_leg_stats(fx.m, 0, &ls);
		ck_assert_uint_eq(ls.read_errors, round);
		if (round == 1) {
			ev_expect((const char *[]){ "ReadError:0" }, 1, "first fault");
			ck_assert_uint_eq(ev_at(0)->value, MiB + 8 * SECTOR);
			ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
			fx_write_random(MiB, MiB);      /* lent again once written */
		} else {
			ev_expect((const char *[]){ "ReadError:0", "Fail:0", "DegradedArray" }, 3,
				  "second fault");
			ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
		}
	}
	fx_check_read(MiB, MiB);                        /* from leg 1 */
	fx_stop(0);
	ck_assert_int_eq(fm_test_rm_rf(shm), 0);
	g_free(shm);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static Suite *mirror_io_suite(void)
{
	Suite *s = suite_create("mirror_io");
	TCase *tc;

	tc = tc_add(s, "io", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_io_writes_land_on_every_leg, 0, 2);
	tcase_add_test(tc, test_io_refused);

	tc = tc_add(s, "read-policy", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_read_policy_names);
	tcase_add_loop_test(tc, test_read_policy_distribution, 0, G_N_ELEMENTS(policies));
	tcase_add_loop_test(tc, test_read_write_mostly, 0, G_N_ELEMENTS(policies));

	tc = tc_add(s, "ordering", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_ordering_threads);
	tcase_add_loop_test(tc, test_ordering_discard_after_writes, 0, 2);

	tc = tc_add(s, "zeroes", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_zeroes_and_flush);

	tc = tc_add(s, "bufio", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_bufio_on_mirror, 0, 3);
	tcase_add_test(tc, test_splice_read);
	tcase_add_test(tc, test_map_read);
	tcase_add_test(tc, test_map_put_fault);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_mirror_io: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_io_suite());
}
