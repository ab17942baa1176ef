/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the mirror's write-intent bitmap, written from its contract,
 * src/mirror/bitmap.h.
 *
 * One Suite "bitmap", one TCase per behaviour (bitmap_suite() at the end):
 * create, set, batching, clear, errors, load, sync, edges.
 *
 * The bitmap writes through a fake ops table whose "disk" is an in-memory
 * image of the bitmap: every page write lands there (or fails, or waits at
 * a gate the test opens), every flush is counted, and a watched region's
 * bit going 1 -> 0 on the disk records how many flushes preceded it.  The
 * central property is checked from the outside, on that disk image: when
 * mbitmap_start_write() returns true, or a waiter is called with err 0, the
 * bits of the regions written are already on the disk.
 *
 * Threads: the bitmap thread calls the fake ops and the waiters; they only
 * record, under fx.f.s (a pthread mutex), and flag contract violations in
 * fx.f.bad; every assertion runs on the test thread (teardown checks bad).
 *
 * Works with CK_FORK=yes and CK_FORK=no (valgrind).  Timing-based checks
 * only ever assert "not before" (a bit is never cleared earlier than the
 * delay) or wait with a generous deadline.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <glib.h>

#include "mirror/bitmap.h"

#include "fm_test.h"

#define SHIFT 11                        /* 1 MiB regions */
#define RSECT (1ull << SHIFT)           /* sectors per region */
#define RPP (4096ull * 8)               /* regions per bitmap page */
#define WAIT_US (60 * G_USEC_PER_SEC)   /* deadline of every wait */
#define LONG_DELAY 600000u              /* ms: no periodic clearing in a test */

/*----------------------------------------------------------------*/
/* The fake legs */

struct fake {
	struct fm_test_sync s;          /* guards everything here */
	uint8_t *disk;                  /* the bitmap image on "disk" */
	size_t length;
	unsigned writes;                /* successful ops->write calls */
	unsigned pages;                 /* pages they wrote */
	unsigned flushes;
	int write_err, flush_err;       /* next writes/flushes fail with this */
	bool block;                     /* writes wait while set */
	unsigned blocked;               /* writes waiting at the gate */
	uint64_t watch;                 /* region whose clearing is recorded */
	unsigned watch_clears;          /* writes that took its bit 1 -> 0 */
	unsigned flushes_at_clear;      /* flushes before the last such write */
	bool bad;                       /* a contract violation, in bad_msg */
	char bad_msg[256];
	/* The written-region map's "disk" (make_bm_written()). */
	uint8_t *wdisk;
	unsigned wwrites;               /* successful ops->write_written calls */
	int wwrite_err;                 /* next map writes fail with this */
	bool wlie;                      /* map writes report success, write nothing */
	uint64_t wwatch;                /* region whose map bit going 1 -> 0 is recorded */
	unsigned wwatch_clears;
	unsigned wflushes_at_clear;     /* flushes before the last such write */
};

static struct {
	struct fake f;
	struct mbitmap *bm;
	uint64_t nr;
} fx;

static void fake_bad_locked(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void fake_bad_locked(const char *fmt, ...)
{
	va_list ap;

	if (fx.f.bad)
		return;
	fx.f.bad = true;
	va_start(ap, fmt);
	vsnprintf(fx.f.bad_msg, sizeof(fx.f.bad_msg), fmt, ap);
	va_end(ap);
}

static bool disk_bit_locked(uint64_t r)
{
	return fx.f.disk[r / 8] & (1u << (r % 8));
}

static bool disk_bit(uint64_t r)
{
	bool b;

	fm_test_sync_lock(&fx.f.s);
	b = disk_bit_locked(r);
	fm_test_sync_unlock(&fx.f.s);
	return b;
}

static int fake_write(void *ctx, const void *buf, uint64_t off, size_t len)
{
	struct fake *f = ctx;
	gint64 deadline = g_get_monotonic_time() + WAIT_US;
	bool was;
	int r;

	fm_test_sync_lock(&f->s);
	if ((uintptr_t)buf % 4096 || off % 4096 || len % 4096 || !len || off + len > f->length)
		fake_bad_locked("write of [%" PRIu64 ", +%zu) buf %p: not 4 KiB pages inside "
				"the %zu-byte image", off, len, buf, f->length);
	f->blocked++;
	fm_test_sync_broadcast(&f->s);
	while (f->block && fm_test_sync_wait_until(&f->s, deadline))
		;
	f->blocked--;
	r = f->write_err;
	if (r == 0 && !f->bad) {
		was = f->watch < f->length * 8 && disk_bit_locked(f->watch);
		memcpy(f->disk + off, buf, len);
		f->writes++;
		f->pages += (unsigned)(len / 4096);
		if (was && !disk_bit_locked(f->watch)) {
			f->watch_clears++;
			f->flushes_at_clear = f->flushes;
		}
	}
	fm_test_sync_broadcast(&f->s);
	fm_test_sync_unlock(&f->s);
	return r;
}

static int fake_flush(void *ctx)
{
	struct fake *f = ctx;
	int r;

	fm_test_sync_lock(&f->s);
	r = f->flush_err;
	if (!r)
		f->flushes++;
	fm_test_sync_broadcast(&f->s);
	fm_test_sync_unlock(&f->s);
	return r;
}

static const struct mbitmap_ops fake_ops = {
	.write = fake_write,
	.flush = fake_flush,
};

static bool wdisk_bit_locked(uint64_t r)
{
	return fx.f.wdisk[r / 8] & (1u << (r % 8));
}

static bool wdisk_bit(uint64_t r)
{
	bool b;

	fm_test_sync_lock(&fx.f.s);
	b = wdisk_bit_locked(r);
	fm_test_sync_unlock(&fx.f.s);
	return b;
}

static int fake_write_written(void *ctx, const void *buf, uint64_t off, size_t len)
{
	struct fake *f = ctx;
	bool was;
	int r;

	fm_test_sync_lock(&f->s);
	if ((uintptr_t)buf % 4096 || off % 4096 || len % 4096 || !len || off + len > f->length)
		fake_bad_locked("map write of [%" PRIu64 ", +%zu): not 4 KiB pages inside "
				"the %zu-byte image", off, len, f->length);
	r = f->wwrite_err;
	if (r == 0 && !f->wlie) {
		was = f->wwatch < f->length * 8 && wdisk_bit_locked(f->wwatch);
		memcpy(f->wdisk + off, buf, len);
		f->wwrites++;
		if (was && !wdisk_bit_locked(f->wwatch)) {
			f->wwatch_clears++;
			f->wflushes_at_clear = f->flushes;
		}
	}
	fm_test_sync_broadcast(&f->s);
	fm_test_sync_unlock(&f->s);
	return r;
}

static const struct mbitmap_ops fake_ops_written = {
	.write = fake_write,
	.flush = fake_flush,
	.write_written = fake_write_written,
};

/* Read a counter of the fake under its lock. */
#define FAKE_GET(field)                                 \
	({                                              \
		__typeof__(fx.f.field) v_;              \
		fm_test_sync_lock(&fx.f.s);             \
		v_ = fx.f.field;                        \
		fm_test_sync_unlock(&fx.f.s);           \
		v_;                                     \
	})

#define FAKE_SET(field, val)                            \
	do {                                            \
		fm_test_sync_lock(&fx.f.s);             \
		fx.f.field = (val);                     \
		fm_test_sync_broadcast(&fx.f.s);        \
		fm_test_sync_unlock(&fx.f.s);           \
	} while (0)

/* Wait until @cond (an expression evaluated with fx.f.s held) holds. */
#define WAIT_FOR(cond, ...)                                                     \
	do {                                                                    \
		gint64 dl_ = g_get_monotonic_time() + WAIT_US;                  \
		bool ok_;                                                       \
		fm_test_sync_lock(&fx.f.s);                                     \
		while (!(ok_ = (cond)) && fm_test_sync_wait_until(&fx.f.s, dl_)) \
			;                                                       \
		fm_test_sync_unlock(&fx.f.s);                                   \
		ck_assert_msg(ok_, __VA_ARGS__);                                \
	} while (0)

/* Poll (the bitmap's own clearing does not signal us) until @cond holds. */
#define POLL_FOR(cond, ...)                                                     \
	do {                                                                    \
		gint64 dl_ = g_get_monotonic_time() + WAIT_US;                  \
		while (!(cond) && g_get_monotonic_time() < dl_)                 \
			g_usleep(1000);                                         \
		ck_assert_msg((cond), __VA_ARGS__);                             \
	} while (0)

/*----------------------------------------------------------------*/
/* Waiters */

struct tw {
	struct mbitmap_waiter w;
	uint64_t first, last;           /* the regions the test expects */
	int calls;                      /* guarded by fx.f.s, like the rest */
	int err;
	bool disk_ok;                   /* err 0 and every bit on disk at the call */
	void (*hook)(struct tw *t);     /* run after recording, unlocked */
	struct tw *other;               /* for hooks */
	bool hook_done;
	bool hook_fast;                 /* hook's first start_write returned true */
	bool hook_queued;               /* hook's second start_write returned false */
};

static void tw_fn(void *ctx, int err)
{
	struct tw *t = ctx;
	void (*hook)(struct tw *t);
	bool ok = err == 0;

	fm_test_sync_lock(&fx.f.s);
	hook = t->hook;                 /* t may be reused once we unlock */
	for (uint64_t r = t->first; ok && r <= t->last; r++)
		ok = disk_bit_locked(r);
	if (err == 0 && !ok)
		fake_bad_locked("waiter of regions %" PRIu64 "..%" PRIu64 " called with 0 "
				"before its bits were on disk", t->first, t->last);
	if (t->w.first != t->first || t->w.last != t->last)
		fake_bad_locked("waiter filled with regions %" PRIu64 "..%" PRIu64
				", expected %" PRIu64 "..%" PRIu64, t->w.first, t->w.last,
				t->first, t->last);
	/* A write that puts data: its regions are written on disk first. */
	for (uint64_t r = t->first; err == 0 && fx.f.wdisk && t->w.mark_written &&
	     r <= t->last; r++)
		if (!wdisk_bit_locked(r))
			fake_bad_locked("waiter of a data write into region %" PRIu64 " called "
					"with 0 before the region was written on disk", r);
	t->calls++;
	t->err = err;
	t->disk_ok = ok;
	fm_test_sync_broadcast(&fx.f.s);
	fm_test_sync_unlock(&fx.f.s);
	if (hook)
		hook(t);
}

static int tw_calls(struct tw *t)
{
	int n;

	fm_test_sync_lock(&fx.f.s);
	n = t->calls;
	fm_test_sync_unlock(&fx.f.s);
	return n;
}

static void tw_init(struct tw *t, uint64_t sector, uint64_t count)
{
	memset(t, 0, sizeof(*t));
	t->w.fn = tw_fn;
	t->w.ctx = t;
	t->first = sector >> SHIFT;
	t->last = (sector + count - 1) >> SHIFT;
}

/* start_write of [sector, +count) with @t; returns what it returned. */
static bool tw_start(struct tw *t, uint64_t sector, uint64_t count)
{
	tw_init(t, sector, count);
	return mbitmap_start_write(fx.bm, sector, count, &t->w);
}

static void tw_wait(struct tw *t, int calls)
{
	WAIT_FOR(t->calls >= calls, "waiter of regions %" PRIu64 "..%" PRIu64
		 " not called (%d of %d calls)", t->first, t->last, t->calls, calls);
}

static void assert_called_once_ok(struct tw *t)
{
	tw_wait(t, 1);
	fm_test_sync_lock(&fx.f.s);
	ck_assert_int_eq(t->calls, 1);
	ck_assert_int_eq(t->err, 0);
	ck_assert_msg(t->disk_ok, "regions %" PRIu64 "..%" PRIu64 ": bit not on disk "
		      "when the waiter ran", t->first, t->last);
	fm_test_sync_unlock(&fx.f.s);
}

/* A write into a region whose bit is not durable: queued, then ready. */
static void write_slow(uint64_t sector, uint64_t count)
{
	struct tw t;

	ck_assert_msg(!tw_start(&t, sector, count), "start_write of a clean region "
		      "returned true");
	assert_called_once_ok(&t);
}

/*----------------------------------------------------------------*/
/* Fixture */

static void setup(void)
{
	memset(&fx, 0, sizeof(fx));
	fm_test_sync_init(&fx.f.s);
	fx.f.watch = UINT64_MAX;
}

static void teardown(void)
{
	FAKE_SET(block, false);
	mbitmap_destroy(fx.bm);
	fx.bm = NULL;
	ck_assert_msg(!fx.f.bad, "%s", fx.f.bad_msg);
	free(fx.f.disk);
	free(fx.f.wdisk);
	fm_test_sync_destroy(&fx.f.s);
}

static void make_bm(uint64_t nr, size_t length, unsigned delay_ms)
{
	fx.nr = nr;
	fx.f.length = length;
	fx.f.disk = calloc(1, length);
	ck_assert(fx.f.disk);
	fx.bm = mbitmap_create(nr, SHIFT, length, &fake_ops, &fx.f, delay_ms);
	ck_assert_msg(fx.bm, "mbitmap_create(%" PRIu64 ", %u, %zu) failed", nr, SHIFT, length);
	ck_assert_uint_eq(mbitmap_nr_regions(fx.bm), nr);
}

/* A bitmap with a written-region map (its own fake disk). */
static void make_bm_written(uint64_t nr, size_t length, unsigned delay_ms)
{
	fx.nr = nr;
	fx.f.length = length;
	fx.f.disk = calloc(1, length);
	fx.f.wdisk = calloc(1, length);
	fx.f.wwatch = UINT64_MAX;
	ck_assert(fx.f.disk && fx.f.wdisk);
	fx.bm = mbitmap_create(nr, SHIFT, length, &fake_ops_written, &fx.f, delay_ms);
	ck_assert(fx.bm);
	ck_assert(mbitmap_has_written(fx.bm));
}

/* start_write of a write that puts data (mark_written). */
static bool tw_start_data(struct tw *t, uint64_t sector, uint64_t count)
{
	tw_init(t, sector, count);
	t->w.mark_written = true;
	return mbitmap_start_write(fx.bm, sector, count, &t->w);
}

/*----------------------------------------------------------------*/
/* create */

START_TEST(test_create_bad_args)
{
	static const struct mbitmap_ops no_flush = { .write = fake_write };
	struct {
		uint64_t nr;
		unsigned shift;
		size_t length;
		const struct mbitmap_ops *ops;
		const char *what;
	} bad[] = {
		{ 0, SHIFT, 4096, &fake_ops, "no region" },
		{ 100, SHIFT, 0, &fake_ops, "length 0" },
		{ 100, SHIFT, 4095, &fake_ops, "length not a multiple of 4 KiB" },
		{ 100, SHIFT, 6144, &fake_ops, "length not a multiple of 4 KiB" },
		{ RPP + 1, SHIFT, 4096, &fake_ops, "length too small" },
		{ 100, 10, 4096, &fake_ops, "region of 512 KiB" },
		{ 100, 32, 4096, &fake_ops, "region of 2 TiB" },
		{ 100, SHIFT, 4096, NULL, "no ops" },
		{ 100, SHIFT, 4096, &no_flush, "no flush op" },
	};
	struct mbitmap *bm;

	fx.f.length = 4096;
	fx.f.disk = calloc(1, 4096);
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		bm = mbitmap_create(bad[i].nr, bad[i].shift, bad[i].length, bad[i].ops, &fx.f, 10);
		ck_assert_msg(!bm, "created with %s", bad[i].what);
	}
	bm = mbitmap_create(RPP, SHIFT, 4096, &fake_ops, &fx.f, 10);
	ck_assert_msg(bm, "exactly one page for RPP regions refused");
	ck_assert_uint_eq(mbitmap_weight(bm), 0);
	ck_assert_uint_eq(mbitmap_next_set(bm, 0), RPP);
	mbitmap_destroy(bm);
	bm = mbitmap_create(100, 31, 8192, &fake_ops, &fx.f, 10);
	ck_assert_msg(bm, "1 TiB regions, a longer area refused");
	mbitmap_destroy(bm);
	mbitmap_destroy(NULL);
	ck_assert_uint_eq(FAKE_GET(writes), 0);
}
END_TEST

/* A few million regions: the hot path and the scans stay usable. */
START_TEST(test_create_large)
{
	uint64_t nr = 4ull << 20;
	struct tw t;

	make_bm(nr, nr / 8, LONG_DELAY);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, nr - 1, nr - 1), 0);
	ck_assert(disk_bit(nr - 1));
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 0), nr - 1);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 1);
	ck_assert(tw_start(&t, (nr - 1) << SHIFT, RSECT));
	mbitmap_end_write(fx.bm, (nr - 1) << SHIFT, RSECT);
	write_slow(12345ull << SHIFT, 8);
	mbitmap_end_write(fx.bm, 12345ull << SHIFT, 8);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 0), 12345);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 12346), nr - 1);
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);
	ck_assert(!disk_bit(nr - 1) && !disk_bit(12345));
}
END_TEST

/*----------------------------------------------------------------*/
/* set */

START_TEST(test_set_durable_before_waiter)
{
	struct tw t;

	make_bm(100, 4096, LONG_DELAY);
	ck_assert(!tw_start(&t, 5 * RSECT + 3, 8));
	assert_called_once_ok(&t);
	ck_assert(disk_bit(5));
	ck_assert(mbitmap_test(fx.bm, 5));
	ck_assert(!disk_bit(4) && !disk_bit(6));
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	ck_assert_uint_eq(mbitmap_page_writes(fx.bm), 1);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 1);
	g_usleep(50000);
	ck_assert_int_eq(tw_calls(&t), 1);
	mbitmap_end_write(fx.bm, 5 * RSECT + 3, 8);
}
END_TEST

START_TEST(test_hot_path_no_write)
{
	struct tw t;

	make_bm(100, 4096, LONG_DELAY);
	write_slow(5 * RSECT, 1);
	for (int i = 0; i < 1000; i++) {
		uint64_t sector = 5 * RSECT + (uint64_t)i % RSECT;

		ck_assert_msg(tw_start(&t, sector, 1), "start_write #%d into a durable "
			      "region was not ready", i);
		mbitmap_end_write(fx.bm, sector, 1);
	}
	mbitmap_end_write(fx.bm, 5 * RSECT, 1);
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	ck_assert_uint_eq(mbitmap_page_writes(fx.bm), 1);
	ck_assert_int_eq(tw_calls(&t), 0);

	/* A range over a durable and a clean region waits for the clean one. */
	ck_assert(!tw_start(&t, 6 * RSECT - 4, 8));
	assert_called_once_ok(&t);
	ck_assert(disk_bit(5) && disk_bit(6));
	ck_assert_uint_eq(FAKE_GET(writes), 2);
	mbitmap_end_write(fx.bm, 6 * RSECT - 4, 8);
}
END_TEST

/* A waiter's callback starts further writes: callbacks run without the
 * bitmap's locks (a held lock would deadlock here). */
static void reenter_hook(struct tw *t)
{
	/* Region 2 is durable: ready.  Region 7 is clean: queued. */
	bool fast = mbitmap_start_write(fx.bm, 2 * RSECT, 8, &t->other->w);
	bool fast7;

	if (fast)
		mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	fast7 = mbitmap_start_write(fx.bm, 7 * RSECT, 8, &t->other[1].w);
	fm_test_sync_lock(&fx.f.s);
	t->hook_fast = fast;
	t->hook_queued = !fast7;
	t->hook_done = true;
	fm_test_sync_broadcast(&fx.f.s);
	fm_test_sync_unlock(&fx.f.s);
}

START_TEST(test_waiter_callback_reenters)
{
	struct tw t, others[2];

	make_bm(100, 4096, LONG_DELAY);
	write_slow(2 * RSECT, 8);
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	tw_init(&others[0], 2 * RSECT, 8);
	tw_init(&others[1], 7 * RSECT, 8);
	tw_init(&t, 3 * RSECT, 8);
	t.hook = reenter_hook;
	t.other = others;
	ck_assert(!mbitmap_start_write(fx.bm, 3 * RSECT, 8, &t.w));
	WAIT_FOR(t.hook_done, "the callback's start_write did not return");
	ck_assert_msg(t.hook_fast, "start_write into a durable region from a callback "
		      "was not ready");
	ck_assert_msg(t.hook_queued, "start_write into a clean region from a callback "
		      "was ready");
	assert_called_once_ok(&t);
	assert_called_once_ok(&others[1]);
	ck_assert_int_eq(tw_calls(&others[0]), 0);
	ck_assert(disk_bit(7));
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
	mbitmap_end_write(fx.bm, 7 * RSECT, 8);
}
END_TEST

/*----------------------------------------------------------------*/
/* batching */

#define NR_THREADS 8

struct starter {
	pthread_t th;
	pthread_barrier_t *barrier;
	struct tw t;
	bool fast;
	bool fast_ok;                   /* bit on disk when start_write returned true */
};

static void *starter_main(void *arg)
{
	struct starter *s = arg;

	pthread_barrier_wait(s->barrier);
	s->fast = tw_start(&s->t, 3 * RSECT + 1, 8);
	if (s->fast)
		s->fast_ok = disk_bit(3);
	return NULL;
}

/* Threads starting writes into one clean region at once: one page write,
 * every waiter called once. */
START_TEST(test_batch_one_region_threads)
{
	struct starter st[NR_THREADS];
	pthread_barrier_t barrier;

	make_bm(100, 4096, LONG_DELAY);
	pthread_barrier_init(&barrier, NULL, NR_THREADS);
	for (int i = 0; i < NR_THREADS; i++) {
		memset(&st[i], 0, sizeof(st[i]));
		st[i].barrier = &barrier;
		ck_assert_int_eq(pthread_create(&st[i].th, NULL, starter_main, &st[i]), 0);
	}
	for (int i = 0; i < NR_THREADS; i++)
		pthread_join(st[i].th, NULL);
	pthread_barrier_destroy(&barrier);
	for (int i = 0; i < NR_THREADS; i++) {
		if (st[i].fast)
			ck_assert_msg(st[i].fast_ok, "thread %d: ready before the bit was on disk", i);
		else
			assert_called_once_ok(&st[i].t);
	}
	{
		int slow = 0;

		for (int i = 0; i < NR_THREADS; i++)
			slow += !st[i].fast;
		ck_assert_msg(slow > 0, "every thread found a clean region ready");
	}
	/* Every batch after the first finds the bit durable: one write. */
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	ck_assert_uint_eq(mbitmap_page_writes(fx.bm), 1);
	g_usleep(20000);
	for (int i = 0; i < NR_THREADS; i++) {
		ck_assert_int_eq(tw_calls(&st[i].t), st[i].fast ? 0 : 1);
		mbitmap_end_write(fx.bm, 3 * RSECT + 1, 8);
	}
}
END_TEST

/* While a page write is in progress, the bitmap answers (its mutex is not
 * held across the write) and queues new requests; they are then served by
 * one write of the changed pages, not one write each. */
START_TEST(test_batch_blocked_write)
{
	enum { N = 64 };
	struct tw first, again, far, t[N];

	make_bm(RPP + 10, 8192, LONG_DELAY);
	FAKE_SET(block, true);
	ck_assert(!tw_start(&first, 0, 8));
	WAIT_FOR(fx.f.blocked == 1, "the first page write did not start");
	/* The mutex is free: these return while the write waits. */
	ck_assert(mbitmap_test(fx.bm, 0));
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 1);
	for (int i = 0; i < N; i++)
		ck_assert(!tw_start(&t[i], (uint64_t)(i + 1) * RSECT + 5, 8));
	ck_assert(!tw_start(&again, 7, 1));
	ck_assert(!tw_start(&far, RPP * RSECT, 8));
	g_usleep(20000);
	ck_assert_int_eq(tw_calls(&first), 0);
	ck_assert_int_eq(tw_calls(&t[0]), 0);
	ck_assert_uint_eq(FAKE_GET(blocked), 1);
	FAKE_SET(block, false);

	assert_called_once_ok(&first);
	assert_called_once_ok(&again);
	assert_called_once_ok(&far);
	for (int i = 0; i < N; i++)
		assert_called_once_ok(&t[i]);
	/* Page 0 for the first, then pages 0 and 1 together for the rest. */
	ck_assert_uint_eq(FAKE_GET(writes), 2);
	ck_assert_uint_eq(FAKE_GET(pages), 3);
	ck_assert_uint_eq(mbitmap_page_writes(fx.bm), 3);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), N + 2);
	mbitmap_end_write(fx.bm, 0, 8);
	mbitmap_end_write(fx.bm, 7, 1);
	mbitmap_end_write(fx.bm, RPP * RSECT, 8);
	for (int i = 0; i < N; i++)
		mbitmap_end_write(fx.bm, (uint64_t)(i + 1) * RSECT + 5, 8);
}
END_TEST

/*----------------------------------------------------------------*/
/* clear */

START_TEST(test_clear_after_delay)
{
	const unsigned delay = 300;
	unsigned flushes;
	gint64 t_end, t_clear;
	struct tw t;

	make_bm(100, 4096, delay);
	FAKE_SET(watch, 2);
	write_slow(2 * RSECT, 8);
	ck_assert(disk_bit(2));
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	/* A later write restarts the delay, even one that needs no bit. */
	g_usleep(delay * 1000 * 2 / 3);
	ck_assert_msg(tw_start(&t, 2 * RSECT + 8, 8), "region 2 no longer durable after "
		      "2/3 of the delay");
	flushes = FAKE_GET(flushes);
	mbitmap_end_write(fx.bm, 2 * RSECT + 8, 8);
	t_end = g_get_monotonic_time();
	g_usleep(delay * 1000 * 3 / 4);
	ck_assert_msg(disk_bit(2) && mbitmap_test(fx.bm, 2), "cleared before the delay");
	POLL_FOR(!disk_bit(2), "region 2 not cleared on disk");
	t_clear = g_get_monotonic_time();
	ck_assert_msg(t_clear - t_end >= (gint64)delay * 1000 - 2000,
		      "cleared %" G_GINT64_FORMAT " ms after the last write, delay %u ms",
		      (t_clear - t_end) / 1000, delay);
	ck_assert_uint_eq(FAKE_GET(watch_clears), 1);
	ck_assert_msg(FAKE_GET(flushes_at_clear) > flushes,
		      "the clearing write was not preceded by a flush");
	ck_assert(!mbitmap_test(fx.bm, 2));
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);
	/* Clean again: the next write sets it again. */
	write_slow(2 * RSECT, 8);
	ck_assert(disk_bit(2));
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
}
END_TEST

START_TEST(test_no_clear_in_flight)
{
	make_bm(100, 4096, 1);
	write_slow(4 * RSECT, 8);          /* stays in flight */
	write_slow(5 * RSECT, 8);
	mbitmap_end_write(fx.bm, 5 * RSECT, 8);
	/* The control: region 5 is cleared, so clearing does run. */
	POLL_FOR(!disk_bit(5) && !mbitmap_test(fx.bm, 5), "idle region 5 not cleared");
	g_usleep(100000);
	ck_assert_msg(disk_bit(4) && mbitmap_test(fx.bm, 4),
		      "region 4 cleared with a write in flight");
	mbitmap_end_write(fx.bm, 4 * RSECT, 8);
	POLL_FOR(!disk_bit(4), "region 4 not cleared once idle");
}
END_TEST

START_TEST(test_no_clear_disallowed)
{
	make_bm(100, 4096, 1);
	mbitmap_allow_clear(fx.bm, false);
	write_slow(1 * RSECT, 8);
	mbitmap_end_write(fx.bm, 1 * RSECT, 8);
	g_usleep(100000);
	ck_assert_msg(disk_bit(1), "cleared while clearing was not allowed");
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert_msg(disk_bit(1) && mbitmap_test(fx.bm, 1),
		      "clear_all_sync cleared while clearing was not allowed");
	ck_assert_uint_eq(FAKE_GET(flushes), 0);
	mbitmap_allow_clear(fx.bm, true);
	POLL_FOR(!disk_bit(1), "not cleared once allowed again");
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);
}
END_TEST

struct racer {
	pthread_t th;
	int idx;
	atomic_bool *stop;
	struct tw t;
	uint64_t fast, slow, violations;
	char what[160];
};

static void racer_violation(struct racer *rc, const char *what, uint64_t sector)
{
	if (!rc->violations++)
		snprintf(rc->what, sizeof(rc->what), "%s (sector %" PRIu64 ")", what, sector);
}

static void *racer_main(void *arg)
{
	struct racer *rc = arg;
	struct fm_rng rng;

	fm_rng_seed(&rng, fm_test_seed_for("clear_race", rc->idx));
	while (!atomic_load(rc->stop)) {
		uint64_t sector, count = 8;
		bool ok = true;

		if (fm_rng_between(&rng, 0, 7) == 0)
			sector = RSECT - 4;     /* regions 0 and 1 */
		else
			sector = fm_rng_between(&rng, 0, RSECT - 8);
		if (tw_start(&rc->t, sector, count)) {
			fm_test_sync_lock(&fx.f.s);
			for (uint64_t r = rc->t.first; r <= rc->t.last; r++)
				ok = ok && disk_bit_locked(r);
			fm_test_sync_unlock(&fx.f.s);
			if (!ok)
				racer_violation(rc, "start_write returned true, bit not on disk",
						sector);
			rc->fast++;
		} else {
			gint64 dl = g_get_monotonic_time() + WAIT_US;

			fm_test_sync_lock(&fx.f.s);
			while (!rc->t.calls && fm_test_sync_wait_until(&fx.f.s, dl))
				;
			ok = rc->t.calls == 1 && rc->t.err == 0 && rc->t.disk_ok;
			fm_test_sync_unlock(&fx.f.s);
			if (!ok) {
				racer_violation(rc, "waiter not called, or not with its bit on disk",
						sector);
				if (!rc->t.calls)
					return NULL;    /* cannot end a write still queued */
			}
			rc->slow++;
		}
		if (fm_rng_between(&rng, 0, 1))
			g_usleep(fm_rng_between(&rng, 0, 50));
		mbitmap_end_write(fx.bm, sector, count);
		if (fm_rng_between(&rng, 0, 7) == 0)
			g_usleep(fm_rng_between(&rng, 1000, 6000));
	}
	return NULL;
}

/* Threads hammer regions 0 and 1 while the bitmap clears them whenever they
 * go idle (delay 1 ms; _i 1: delay 0).  Whenever a write would be issued,
 * its bits must be on the disk. */
START_TEST(test_clear_race)
{
	enum { NR = 3 };
	struct racer rc[NR];
	atomic_bool stop;
	gint64 start = g_get_monotonic_time();
	uint64_t fast = 0, slow = 0;
	unsigned clears;

	make_bm(100, 4096, _i ? 0 : 1);
	FAKE_SET(watch, 0);
	atomic_init(&stop, false);
	for (int i = 0; i < NR; i++) {
		memset(&rc[i], 0, sizeof(rc[i]));
		rc[i].idx = i;
		rc[i].stop = &stop;
		ck_assert_int_eq(pthread_create(&rc[i].th, NULL, racer_main, &rc[i]), 0);
	}
	/* At least a second, and until the bit was cleared a few times. */
	do
		g_usleep(50000);
	while ((g_get_monotonic_time() - start < G_USEC_PER_SEC ||
		FAKE_GET(watch_clears) < 5) && g_get_monotonic_time() - start < 20 * G_USEC_PER_SEC);
	atomic_store(&stop, true);
	for (int i = 0; i < NR; i++)
		pthread_join(rc[i].th, NULL);
	for (int i = 0; i < NR; i++) {
		ck_assert_msg(!rc[i].violations, "thread %d: %" PRIu64 " violations, first: %s",
			      i, rc[i].violations, rc[i].what);
		fast += rc[i].fast;
		slow += rc[i].slow;
	}
	clears = FAKE_GET(watch_clears);
	fprintf(stderr, "test_clear_race(delay %d): %" PRIu64 " ready, %" PRIu64
		" queued, region 0 cleared %u times, %u flushes\n", _i ? 0 : 1, fast, slow,
		clears, FAKE_GET(flushes));
	ck_assert_msg(clears >= 5, "region 0 cleared only %u times: the race was not run",
		      clears);
	ck_assert_msg(fast > 0 && slow > 0, "only one path taken");
	POLL_FOR(!disk_bit(0) && !disk_bit(1), "regions 0/1 not cleared at the end");
}
END_TEST

/*----------------------------------------------------------------*/
/* errors */

START_TEST(test_write_error_retry)
{
	struct tw a, b, c;

	make_bm(100, 4096, LONG_DELAY);
	FAKE_SET(block, true);
	ck_assert(!tw_start(&a, 3 * RSECT, 8));
	WAIT_FOR(fx.f.blocked == 1, "the page write did not start");
	ck_assert(!tw_start(&b, 4 * RSECT, 8));
	fm_test_sync_lock(&fx.f.s);
	fx.f.write_err = -EIO;
	fx.f.block = false;
	fm_test_sync_broadcast(&fx.f.s);
	fm_test_sync_unlock(&fx.f.s);
	tw_wait(&a, 1);
	tw_wait(&b, 1);
	ck_assert_int_eq(a.err, -EIO);
	ck_assert_int_eq(b.err, -EIO);
	ck_assert(!disk_bit(3) && !disk_bit(4));
	ck_assert_uint_eq(mbitmap_page_writes(fx.bm), 0);
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
	mbitmap_end_write(fx.bm, 4 * RSECT, 8);

	/* Not durable: the next write waits again, and the bit is written. */
	FAKE_SET(write_err, 0);
	ck_assert_msg(!tw_start(&c, 3 * RSECT, 8), "ready after the bit's write failed");
	assert_called_once_ok(&c);
	ck_assert(disk_bit(3));
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
	write_slow(4 * RSECT, 8);
	mbitmap_end_write(fx.bm, 4 * RSECT, 8);
	ck_assert(tw_start(&c, 4 * RSECT, 8));
	mbitmap_end_write(fx.bm, 4 * RSECT, 8);
	ck_assert_int_eq(tw_calls(&a), 1);
	ck_assert_int_eq(tw_calls(&b), 1);
}
END_TEST

/* A failed flush clears nothing, in memory or on disk. */
START_TEST(test_flush_error_no_clear)
{
	make_bm(100, 4096, 1);
	FAKE_SET(flush_err, -EIO);
	write_slow(2 * RSECT, 8);
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	g_usleep(100000);
	ck_assert(disk_bit(2) && mbitmap_test(fx.bm, 2));
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), -EIO);
	ck_assert(disk_bit(2) && mbitmap_test(fx.bm, 2));
	/* Still durable: the hot path needs no write. */
	{
		struct tw t;

		ck_assert(tw_start(&t, 2 * RSECT, 8));
		mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	}
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	FAKE_SET(flush_err, 0);
	POLL_FOR(!disk_bit(2), "not cleared once flushes work");
}
END_TEST

/*----------------------------------------------------------------*/
/* load */

START_TEST(test_load)
{
	uint8_t bits[4096] = { 0 }, snap[4096], more[1] = { 0x08 };
	struct tw t;

	make_bm(20, 4096, LONG_DELAY);
	bits[0] = 0x05;         /* regions 0 and 2 */
	bits[1] = 0x80;         /* region 15 */
	bits[2] = 0xff;         /* regions 16..19 exist, 20..23 do not */
	bits[100] = 0xff;       /* beyond the last region */
	mbitmap_load(fx.bm, bits, sizeof(bits));
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 7);
	ck_assert(mbitmap_test(fx.bm, 0) && !mbitmap_test(fx.bm, 1) && mbitmap_test(fx.bm, 2));
	ck_assert(mbitmap_test(fx.bm, 15) && mbitmap_test(fx.bm, 19));
	ck_assert(!mbitmap_test(fx.bm, 20) && !mbitmap_test(fx.bm, 1000));
	mbitmap_snapshot(fx.bm, snap, sizeof(snap));
	ck_assert_uint_eq(snap[0], 0x05);
	ck_assert_uint_eq(snap[1], 0x80);
	ck_assert_uint_eq(snap[2], 0x0f);
	ck_assert(fm_test_is_zero(snap + 3, sizeof(snap) - 3));
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 0), 0);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 1), 2);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 3), 15);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 20), 20);

	/* Loaded bits are durable: no write needed. */
	ck_assert(tw_start(&t, 2 * RSECT, 8));
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	ck_assert(tw_start(&t, 19 * RSECT, RSECT));
	mbitmap_end_write(fx.bm, 19 * RSECT, RSECT);
	ck_assert_uint_eq(FAKE_GET(writes), 0);
	write_slow(1 * RSECT, 8);
	mbitmap_end_write(fx.bm, 1 * RSECT, 8);
	ck_assert_uint_eq(FAKE_GET(writes), 1);

	/* Load ORs: nothing is lost. */
	mbitmap_load(fx.bm, more, sizeof(more));
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 9);
	mbitmap_snapshot(fx.bm, snap, 2);
	ck_assert_uint_eq(snap[0], 0x0f);
}
END_TEST

/* mbitmap_write_all_sync() writes every page, clean ones too: the disk
 * then holds exactly the bits in memory (loaded ones included), once. */
START_TEST(test_write_all_sync)
{
	uint8_t bits[2 * 4096] = { 0 };

	make_bm(2 * RPP, sizeof(bits), LONG_DELAY);
	bits[0] = 0x05;                 /* page 0: regions 0 and 2 */
	bits[4096 + 1] = 0x80;          /* page 1: region RPP + 15 */
	mbitmap_load(fx.bm, bits, sizeof(bits));
	ck_assert_uint_eq(FAKE_GET(writes), 0);
	ck_assert(!disk_bit(0) && !disk_bit(RPP + 15));
	ck_assert_int_eq(mbitmap_write_all_sync(fx.bm), 0);
	ck_assert_uint_eq(FAKE_GET(pages), 2);
	fm_test_sync_lock(&fx.f.s);
	ck_assert(memcmp(fx.f.disk, bits, sizeof(bits)) == 0);
	fm_test_sync_unlock(&fx.f.s);

	/* A failed write is returned. */
	fm_test_sync_lock(&fx.f.s);
	fx.f.write_err = -EIO;
	fm_test_sync_unlock(&fx.f.s);
	ck_assert_int_eq(mbitmap_write_all_sync(fx.bm), -EIO);
	fm_test_sync_lock(&fx.f.s);
	fx.f.write_err = 0;
	fm_test_sync_unlock(&fx.f.s);
}
END_TEST

START_TEST(test_next_set_weight)
{
	uint64_t nr = 3 * RPP + 77;
	const uint64_t set[] = { 0, 63, 64, RPP - 1, RPP, 2 * RPP + 5, nr - 1 };
	uint8_t *want = calloc(1, 16384), *snap = calloc(1, 16384 + 100);
	uint64_t r;
	size_t n = 0;

	make_bm(nr, 16384, LONG_DELAY);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 0), nr);
	for (size_t i = 0; i < G_N_ELEMENTS(set); i++) {
		ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, set[i], set[i]), 0);
		want[set[i] / 8] |= (uint8_t)(1u << (set[i] % 8));
	}
	ck_assert_uint_eq(mbitmap_weight(fx.bm), G_N_ELEMENTS(set));
	for (r = mbitmap_next_set(fx.bm, 0); r < nr; r = mbitmap_next_set(fx.bm, r + 1)) {
		ck_assert_uint_lt(n, G_N_ELEMENTS(set));
		ck_assert_uint_eq(r, set[n]);
		n++;
	}
	ck_assert_uint_eq(n, G_N_ELEMENTS(set));
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, 65), RPP - 1);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, nr - 1), nr - 1);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, nr), nr);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, nr + 100), nr);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, UINT64_MAX), nr);
	memset(snap, 0xaa, 16384 + 100);
	mbitmap_snapshot(fx.bm, snap, 16384 + 100);
	fm_assert_bytes_eq(snap, want, 16384, "snapshot");
	ck_assert(fm_test_is_zero(snap + 16384, 100));
	fm_test_sync_lock(&fx.f.s);
	fm_assert_bytes_eq(fx.f.disk, want, 16384, "disk");
	fm_test_sync_unlock(&fx.f.s);
	free(want);
	free(snap);
}
END_TEST

/*----------------------------------------------------------------*/
/* sync */

START_TEST(test_set_regions_sync)
{
	struct tw t;

	make_bm(100, 4096, LONG_DELAY);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 10, 20), 0);
	for (uint64_t r = 9; r <= 21; r++)
		ck_assert_msg(disk_bit(r) == (r >= 10 && r <= 20), "region %" PRIu64, r);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 11);
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	ck_assert(tw_start(&t, 15 * RSECT, 8));
	mbitmap_end_write(fx.bm, 15 * RSECT, 8);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 12, 14), 0);
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 5, 4), -EINVAL);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 0, 100), -EINVAL);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 99, 99), 0);
	ck_assert(disk_bit(99));
	FAKE_SET(write_err, -EIO);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 30, 30), -EIO);
	ck_assert(!disk_bit(30));
	FAKE_SET(write_err, 0);
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 30, 30), 0);
	ck_assert(disk_bit(30));
}
END_TEST

START_TEST(test_clear_all_sync)
{
	unsigned flushes, writes;

	make_bm(100, 4096, LONG_DELAY);
	FAKE_SET(watch, 1);
	write_slow(1 * RSECT, 8);
	write_slow(2 * RSECT, 8);
	write_slow(3 * RSECT, 8);
	mbitmap_end_write(fx.bm, 1 * RSECT, 8);
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	flushes = FAKE_GET(flushes);
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert(!disk_bit(1) && !disk_bit(2));
	ck_assert_msg(disk_bit(3) && mbitmap_test(fx.bm, 3), "cleared with a write in flight");
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 1);
	ck_assert_uint_eq(FAKE_GET(watch_clears), 1);
	ck_assert_msg(FAKE_GET(flushes_at_clear) > flushes, "cleared without a flush first");
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert(!disk_bit(3));
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);
	/* Nothing to clear: nothing written. */
	writes = FAKE_GET(writes);
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert_uint_eq(FAKE_GET(writes), writes);
	/* Regions cleared can be set again. */
	write_slow(1 * RSECT, 8);
	ck_assert(disk_bit(1));
	mbitmap_end_write(fx.bm, 1 * RSECT, 8);
}
END_TEST

/*----------------------------------------------------------------*/
/* written: the written-region map (ops->write_written) */

/* A data write into a region never written waits until its map bit is on
 * disk (tw_fn checks it at the call); later ones do not write the map. */
START_TEST(test_written_before_ready)
{
	struct tw t;

	make_bm_written(100, 4096, LONG_DELAY);
	ck_assert(!mbitmap_written(fx.bm, 5));
	ck_assert_uint_eq(mbitmap_written_weight(fx.bm), 0);
	ck_assert(!tw_start_data(&t, 5 * RSECT + 3, 8));
	assert_called_once_ok(&t);
	ck_assert(wdisk_bit(5) && !wdisk_bit(4) && !wdisk_bit(6));
	ck_assert(mbitmap_written(fx.bm, 5) && !mbitmap_written(fx.bm, 6));
	ck_assert_uint_eq(mbitmap_written_weight(fx.bm), 1);
	ck_assert_uint_eq(FAKE_GET(wwrites), 1);
	/* Both bits durable: the hot path writes nothing. */
	ck_assert(tw_start_data(&t, 5 * RSECT + 64, 8));
	mbitmap_end_write(fx.bm, 5 * RSECT + 64, 8);
	mbitmap_end_write(fx.bm, 5 * RSECT + 3, 8);
	ck_assert_uint_eq(FAKE_GET(wwrites), 1);
	ck_assert_uint_eq(FAKE_GET(writes), 1);
	/* Clearing the write-intent bit keeps the region written. */
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert(!disk_bit(5));
	ck_assert(mbitmap_written(fx.bm, 5) && wdisk_bit(5));
	/* The next data write waits for the bitmap bit only. */
	ck_assert(!tw_start_data(&t, 5 * RSECT, 8));
	assert_called_once_ok(&t);
	mbitmap_end_write(fx.bm, 5 * RSECT, 8);
	ck_assert_uint_eq(FAKE_GET(wwrites), 1);
	ck_assert_uint_eq(FAKE_GET(writes), 3);
}
END_TEST

/* A write that puts no data (discard, copy) does not make a region
 * written; a data write into a region whose write-intent bit is durable but
 * which is unwritten still waits for the map (the fast path checks both). */
START_TEST(test_written_only_data)
{
	struct tw t;

	make_bm_written(100, 4096, LONG_DELAY);
	write_slow(7 * RSECT, RSECT);
	ck_assert(disk_bit(7));
	ck_assert(!mbitmap_written(fx.bm, 7) && !wdisk_bit(7));
	ck_assert_uint_eq(FAKE_GET(wwrites), 0);
	ck_assert(tw_start(&t, 7 * RSECT, 8));  /* bit durable, no data: ready */
	mbitmap_end_write(fx.bm, 7 * RSECT, 8);
	ck_assert_msg(!tw_start_data(&t, 7 * RSECT, 8), "a data write into an unwritten "
		      "region went ahead on the write-intent bit alone");
	assert_called_once_ok(&t);
	ck_assert(wdisk_bit(7) && mbitmap_written(fx.bm, 7));
	mbitmap_end_write(fx.bm, 7 * RSECT, 8);
	mbitmap_end_write(fx.bm, 7 * RSECT, RSECT);
	/* set_regions_sync (a resync's marks) writes no map bit either. */
	ck_assert_int_eq(mbitmap_set_regions_sync(fx.bm, 10, 12), 0);
	ck_assert(!mbitmap_written(fx.bm, 11) && !wdisk_bit(11));
}
END_TEST

/* unwrite: unwritten in memory at once; on disk only after a flush (the
 * discard durable first); written again by the next data write. */
START_TEST(test_written_unwrite)
{
	unsigned flushes, wwrites;
	struct tw t;

	make_bm_written(100, 4096, LONG_DELAY);
	FAKE_SET(wwatch, 9);
	ck_assert(!tw_start_data(&t, 9 * RSECT, RSECT));
	assert_called_once_ok(&t);
	mbitmap_end_write(fx.bm, 9 * RSECT, RSECT);
	ck_assert(wdisk_bit(9));
	flushes = FAKE_GET(flushes);
	mbitmap_unwrite(fx.bm, 9, 9);
	ck_assert(!mbitmap_written(fx.bm, 9));
	ck_assert_uint_eq(mbitmap_written_weight(fx.bm), 0);
	WAIT_FOR(!wdisk_bit_locked(9), "the map bit of an unwritten region stays set on disk");
	ck_assert_uint_eq(FAKE_GET(wwatch_clears), 1);
	ck_assert_msg(FAKE_GET(wflushes_at_clear) > flushes,
		      "map bit cleared on disk before the legs were flushed");
	ck_assert_int_eq(mbitmap_sync_written(fx.bm, false), 0);
	/* Written again. */
	ck_assert(!tw_start_data(&t, 9 * RSECT + 8, 8));
	assert_called_once_ok(&t);
	mbitmap_end_write(fx.bm, 9 * RSECT + 8, 8);
	ck_assert(wdisk_bit(9) && mbitmap_written(fx.bm, 9));
	/* Regions never written, or a range past the end: nothing written. */
	wwrites = FAKE_GET(wwrites);
	mbitmap_unwrite(fx.bm, 50, 60);
	mbitmap_unwrite(fx.bm, 99, 100);
	mbitmap_unwrite(fx.bm, 5, 4);
	ck_assert_int_eq(mbitmap_sync_written(fx.bm, false), 0);
	ck_assert_uint_eq(FAKE_GET(wwrites), wwrites);
	ck_assert(mbitmap_written(fx.bm, 9));
}
END_TEST

/* Loaded map bits count as on disk; sync_written(all) rewrites every page
 * from memory (bits past the last region dropped). */
START_TEST(test_written_load_sync)
{
	uint8_t bits[4096] = { 0 }, snap[4096];
	struct tw t;

	make_bm_written(20, 4096, LONG_DELAY);
	bits[0] = 0x05;         /* regions 0 and 2 */
	bits[2] = 0xff;         /* regions 16..19 exist, 20..23 do not */
	bits[100] = 0xff;       /* beyond the last region */
	fm_test_sync_lock(&fx.f.s);
	memcpy(fx.f.wdisk, bits, sizeof(bits));  /* what the legs hold */
	fm_test_sync_unlock(&fx.f.s);
	mbitmap_load_written(fx.bm, bits, sizeof(bits));
	ck_assert_uint_eq(mbitmap_written_weight(fx.bm), 6);
	ck_assert(mbitmap_written(fx.bm, 0) && !mbitmap_written(fx.bm, 1));
	ck_assert(mbitmap_written(fx.bm, 2) && mbitmap_written(fx.bm, 19));
	ck_assert(!mbitmap_written(fx.bm, 20) && !mbitmap_written(fx.bm, 1000));
	mbitmap_written_snapshot(fx.bm, snap, sizeof(snap));
	ck_assert_uint_eq(snap[0], 0x05);
	ck_assert_uint_eq(snap[2], 0x0f);
	ck_assert(fm_test_is_zero(snap + 3, sizeof(snap) - 3));
	/* A data write into a loaded region: the bitmap page only. */
	ck_assert(!tw_start_data(&t, 2 * RSECT, 8));
	assert_called_once_ok(&t);
	mbitmap_end_write(fx.bm, 2 * RSECT, 8);
	ck_assert_uint_eq(FAKE_GET(wwrites), 0);
	ck_assert_int_eq(mbitmap_sync_written(fx.bm, true), 0);
	ck_assert_uint_eq(FAKE_GET(wwrites), 1);
	fm_test_sync_lock(&fx.f.s);
	ck_assert_uint_eq(fx.f.wdisk[2], 0x0f);
	ck_assert(fm_test_is_zero(fx.f.wdisk + 3, 4096 - 3));
	fm_test_sync_unlock(&fx.f.s);
}
END_TEST

/* A map page that cannot be written fails the data write (err < 0) and
 * leaves the region unwritten; the next try writes it. */
START_TEST(test_written_write_error)
{
	struct tw t;

	make_bm_written(100, 4096, LONG_DELAY);
	FAKE_SET(wwrite_err, -EIO);
	ck_assert(!tw_start_data(&t, 3 * RSECT, 8));
	tw_wait(&t, 1);
	ck_assert_int_eq(t.err, -EIO);
	ck_assert(!mbitmap_written(fx.bm, 3) && !wdisk_bit(3));
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
	FAKE_SET(wwrite_err, 0);
	ck_assert(!tw_start_data(&t, 3 * RSECT, 8));
	assert_called_once_ok(&t);
	ck_assert(mbitmap_written(fx.bm, 3) && wdisk_bit(3));
	mbitmap_end_write(fx.bm, 3 * RSECT, 8);
}
END_TEST

/* The deliberately wrong variant: map writes that report success but never
 * reach the disk (a bitmap that let data writes go before the map bit is
 * durable looks the same from outside).  The check every test above relies
 * on must catch it. */
START_TEST(test_written_lying_map_caught)
{
	struct tw t;
	bool caught;

	make_bm_written(100, 4096, LONG_DELAY);
	FAKE_SET(wlie, true);
	ck_assert(!tw_start_data(&t, 4 * RSECT, 8));
	tw_wait(&t, 1);
	mbitmap_end_write(fx.bm, 4 * RSECT, 8);
	fm_test_sync_lock(&fx.f.s);
	caught = fx.f.bad && strstr(fx.f.bad_msg, "before the region was written on disk");
	fx.f.bad = false;       /* expected: teardown must not fail on it */
	fm_test_sync_unlock(&fx.f.s);
	ck_assert_msg(caught, "a data write went ahead without its map bit on disk, unnoticed");
}
END_TEST

/* Without ops->write_written (an array from before the map) every region
 * counts as written and nothing about the map is ever written. */
START_TEST(test_written_none_without_map)
{
	uint8_t snap[16];
	struct tw t;

	make_bm(100, 4096, LONG_DELAY);
	ck_assert(!mbitmap_has_written(fx.bm));
	ck_assert(mbitmap_written(fx.bm, 0) && mbitmap_written(fx.bm, 99));
	ck_assert_uint_eq(mbitmap_written_weight(fx.bm), 100);
	write_slow(7 * RSECT, 8);
	ck_assert(tw_start_data(&t, 7 * RSECT, 8));
	mbitmap_end_write(fx.bm, 7 * RSECT, 8);
	mbitmap_end_write(fx.bm, 7 * RSECT, 8);
	mbitmap_unwrite(fx.bm, 7, 7);
	ck_assert(mbitmap_written(fx.bm, 7));
	ck_assert_int_eq(mbitmap_sync_written(fx.bm, true), 0);
	mbitmap_written_snapshot(fx.bm, snap, sizeof(snap));
	ck_assert_uint_eq(snap[0], 0xff);
}
END_TEST

/*----------------------------------------------------------------*/
/* edges */

START_TEST(test_edges)
{
	uint64_t nr = RPP + 3, last = nr - 1;
	struct tw t;
	unsigned writes;

	make_bm(nr, 8192, LONG_DELAY);
	/* count 0: nothing counted, nothing written */
	ck_assert(tw_start(&t, 0, 0));
	mbitmap_end_write(fx.bm, 0, 0);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);

	/* The last region, the range reaching the end of the bitmap's span. */
	write_slow(last * RSECT, RSECT);
	ck_assert(disk_bit(last) && !disk_bit(last - 1));
	mbitmap_end_write(fx.bm, last * RSECT, RSECT);
	ck_assert(tw_start(&t, nr * RSECT - 1, 1));
	mbitmap_end_write(fx.bm, nr * RSECT - 1, 1);

	/* A range ending exactly at a region boundary does not touch the next
	 * region; one whose last sector is the first of a region does. */
	write_slow(10 * RSECT, RSECT);
	ck_assert(disk_bit(10) && !disk_bit(11) && !disk_bit(9));
	mbitmap_end_write(fx.bm, 10 * RSECT, RSECT);
	write_slow(12 * RSECT - 1, 2);
	ck_assert(disk_bit(11) && disk_bit(12) && !disk_bit(13));
	mbitmap_end_write(fx.bm, 12 * RSECT - 1, 2);

	/* Across the page boundary: both pages, written in one call. */
	writes = FAKE_GET(writes);
	write_slow(RPP * RSECT - 8, 16);
	ck_assert(disk_bit(RPP - 1) && disk_bit(RPP));
	ck_assert_uint_eq(FAKE_GET(writes), writes + 1);
	mbitmap_end_write(fx.bm, RPP * RSECT - 8, 16);

	/* The whole span. */
	write_slow(0, nr * RSECT);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), nr);
	fm_test_sync_lock(&fx.f.s);
	for (uint64_t r = 0; r < nr; r++)
		ck_assert_msg(disk_bit_locked(r), "region %" PRIu64 " not on disk", r);
	for (uint64_t r = nr; r < 8192 * 8; r++)
		ck_assert_msg(!disk_bit_locked(r), "bit %" PRIu64 " past the end set", r);
	fm_test_sync_unlock(&fx.f.s);
	mbitmap_end_write(fx.bm, 0, nr * RSECT);
	ck_assert_uint_eq(mbitmap_next_set(fx.bm, last), last);
	ck_assert_int_eq(mbitmap_clear_all_sync(fx.bm), 0);
	ck_assert_uint_eq(mbitmap_weight(fx.bm), 0);
	fm_test_sync_lock(&fx.f.s);
	ck_assert(fm_test_is_zero(fx.f.disk, 8192));
	fm_test_sync_unlock(&fx.f.s);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static TCase *add_tcase(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, teardown);
	fm_test_tcase_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *bitmap_suite(void)
{
	Suite *s = suite_create("bitmap");
	TCase *tc;

	tc = add_tcase(s, "create");
	tcase_add_test(tc, test_create_bad_args);
	tcase_add_test(tc, test_create_large);

	tc = add_tcase(s, "set");
	tcase_add_test(tc, test_set_durable_before_waiter);
	tcase_add_test(tc, test_hot_path_no_write);
	tcase_add_test(tc, test_waiter_callback_reenters);

	tc = add_tcase(s, "batching");
	tcase_add_test(tc, test_batch_one_region_threads);
	tcase_add_test(tc, test_batch_blocked_write);

	tc = add_tcase(s, "clear");
	tcase_add_test(tc, test_clear_after_delay);
	tcase_add_test(tc, test_no_clear_in_flight);
	tcase_add_test(tc, test_no_clear_disallowed);
	tcase_add_loop_test(tc, test_clear_race, 0, 2);

	tc = add_tcase(s, "errors");
	tcase_add_test(tc, test_write_error_retry);
	tcase_add_test(tc, test_flush_error_no_clear);

	tc = add_tcase(s, "load");
	tcase_add_test(tc, test_load);
	tcase_add_test(tc, test_write_all_sync);
	tcase_add_test(tc, test_next_set_weight);

	tc = add_tcase(s, "sync");
	tcase_add_test(tc, test_set_regions_sync);
	tcase_add_test(tc, test_clear_all_sync);

	tc = add_tcase(s, "written");
	tcase_add_test(tc, test_written_before_ready);
	tcase_add_test(tc, test_written_only_data);
	tcase_add_test(tc, test_written_unwrite);
	tcase_add_test(tc, test_written_load_sync);
	tcase_add_test(tc, test_written_write_error);
	tcase_add_test(tc, test_written_lying_map_caught);
	tcase_add_test(tc, test_written_none_without_map);

	tc = add_tcase(s, "edges");
	tcase_add_test(tc, test_edges);
	return s;
}

int main(void)
{
	return fm_test_main(bitmap_suite());
}
