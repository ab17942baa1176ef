/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The write-intent bitmap (contract: bitmap.h).
 *
 * Per region, one 32-bit atomic word `state`:
 *   bit 31      DURABLE: the region's bit is set on disk (every page write
 *               that could have cleared it is older than the write that set
 *               it).  Only the bitmap thread sets it (after a page write, or
 *               mbitmap_load()) and clears it (by CAS in a clearing pass).
 *   bits 29-30  AGE: 3 after the region's last end_write; a clearing pass
 *               decrements it while the region is idle.
 *   bit 28      WRITTEN (with a written-region map, ops->write_written):
 *               the region's bit of the map is set in memory and on disk.
 *               Set only by the bitmap thread after the map page write
 *               (or by mbitmap_load_written()); cleared by
 *               mbitmap_unwrite(), whose caller guarantees that no write
 *               into the region is in flight or being started.
 *   bits 0-27   COUNT: writes in flight (start_write .. end_write).
 * Keeping the flag and the count in one word makes the md-style Dekker
 * handshake a single atomic: start_write's fetch_add returns the flag as of
 * the moment its count was taken; the clearer's CAS from "count 0, age 0"
 * to "not durable" fails once any start_write has counted.  So a region is
 * never cleared while a write into it is in flight or being started, and a
 * start_write that finds the flag clear queues (slow path) and is served by
 * the thread after any clearing write it raced with.
 *
 * Invariants:
 *   - DURABLE implies: the region's bit is set in memory and on disk.
 *   - WRITTEN implies: the region's map bit is set in memory (`wbits`)
 *     and on disk.  A map bit on disk may be set while WRITTEN is clear
 *     (an unwrite not written yet): the safe direction.  A cleared map bit
 *     is written only after ops->flush (wneed_flush), so the discard that
 *     made the region unwritten is durable on every leg first.
 *   - `bits`, `weight`, `page_dirty`, the queue and the sync fields change
 *     only under `lock`; bits and page_dirty only on the bitmap thread
 *     (and bits in mbitmap_load()).  `lock` is never held across
 *     ops->write or ops->flush: the thread copies the pages to write into
 *     `wbuf` and drops it.
 *   - page_dirty[p]: page p in memory may differ from what is on disk (a
 *     change not written yet, or a write that failed).  A region that is
 *     not DURABLE when a waiter needs it always gets its page written.
 *
 * When a bit may be cleared (clear_pass()): the region's COUNT and AGE are
 * both 0 at a first scan (AGE reached 0 there, or mbitmap_clear_all_sync /
 * delay 0 forced it), ops->flush then succeeds, and a second scan finds
 * COUNT and AGE still 0 with clearing allowed.  end_write sets AGE to 3 in
 * the same atomic step as it drops COUNT, so "AGE 0 at the second scan"
 * means the region's last write ended before the first scan, hence before
 * the flush: its data is durable on every leg when the bit goes.  With AGE
 * starting at 3 and one decrement per pass every delay/2, a region is idle
 * for at least delay_ms when cleared.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fusemirror/common.h"
#include "mirror/bitmap.h"

#define ST_DURABLE      (1u << 31)
#define ST_AGE_SHIFT    29
#define ST_AGE_ONE      (1u << ST_AGE_SHIFT)
#define ST_AGE_MASK     (3u << ST_AGE_SHIFT)
#define ST_WRITTEN      (1u << 28)
#define ST_COUNT_MASK   (ST_WRITTEN - 1)

#define REGIONS_PER_PAGE ((uint64_t)MBITMAP_PAGE_SIZE * 8)
#define MIN_REGION_SHIFT 11     /* 1 MiB */
#define MAX_REGION_SHIFT 31     /* 1 TiB */

struct mbitmap {
	uint64_t nr_regions;
	unsigned region_shift;
	size_t length;
	size_t nr_pages;
	struct mbitmap_ops ops;
	void *ctx;

	_Atomic uint32_t *state;        /* per region, see the top */
	atomic_bool allow_clear;
	atomic_ullong page_writes;

	pthread_mutex_t lock;           /* guards everything down to `stop` */
	pthread_cond_t wake;            /* the thread waits here for work */
	pthread_cond_t sync_done;       /* request_locked() callers wait here */
	uint8_t *bits;                  /* the in-memory image, length bytes */
	uint64_t weight;                /* bits set in `bits` */
	uint8_t *page_dirty;            /* per page, see the top */
	struct mbitmap_waiter *queue_head, **queue_tail;
	unsigned delay_ms;
	uint64_t next_pass_ns;          /* 0: not scheduled */
	uint64_t clear_req, clear_done; /* clear_all_sync requests / served */
	int clear_err;                  /* result of the last served request */
	uint64_t all_req, all_done;     /* write_all_sync requests / served */
	int all_err;
	bool stop;

	/* The written-region map (ops.write_written set), same geometry as
	 * `bits`; under `lock` like them. */
	bool has_written;
	uint8_t *wbits;
	uint64_t wweight;               /* bits set in `wbits` */
	uint8_t *wpage_dirty;
	bool wneed_flush;               /* a cleared map bit waits for ops->flush */
	bool wwrite_req;                /* the thread should write dirty map pages */
	uint64_t wsync_req, wsync_done; /* mbitmap_sync_written() requests / served */
	int wsync_err;

	uint8_t *wbuf;                  /* bitmap thread only: pages to write */
	pthread_t thread;
};

/*----------------------------------------------------------------*/
/* Bits */

static inline uint64_t region_of(const struct mbitmap *bm, uint64_t sector)
{
	return sector >> bm->region_shift;
}

static inline size_t page_of(uint64_t region)
{
	return (size_t)(region / REGIONS_PER_PAGE);
}

static inline bool bit_test_locked(const struct mbitmap *bm, uint64_t r)
{
	return bm->bits[r >> 3] & (1u << (r & 7));
}

static void bit_set_locked(struct mbitmap *bm, uint64_t r)
{
	if (!bit_test_locked(bm, r)) {
		bm->bits[r >> 3] |= (uint8_t)(1u << (r & 7));
		bm->weight++;
	}
	bm->page_dirty[page_of(r)] = 1;
}

static void bit_clear_locked(struct mbitmap *bm, uint64_t r)
{
	assert(bit_test_locked(bm, r));
	bm->bits[r >> 3] &= (uint8_t)~(1u << (r & 7));
	bm->weight--;
	bm->page_dirty[page_of(r)] = 1;
}

static inline uint64_t word_at(const struct mbitmap *bm, uint64_t w)
{
	uint64_t v;

	memcpy(&v, bm->bits + w * 8, 8);
	return GUINT64_FROM_LE(v);
}

/* First set bit >= from, or nr_regions.  Bits beyond nr_regions are never
 * set. */
static uint64_t next_set_locked(const struct mbitmap *bm, uint64_t from)
{
	uint64_t nr_words = (bm->nr_regions + 63) / 64;
	uint64_t w, v;

	if (from >= bm->nr_regions)
		return bm->nr_regions;
	w = from / 64;
	v = word_at(bm, w) & (~0ull << (from % 64));
	while (!v) {
		if (++w >= nr_words)
			return bm->nr_regions;
		v = word_at(bm, w);
	}
	return w * 64 + (uint64_t)__builtin_ctzll(v);
}

/*----------------------------------------------------------------*/
/* The bitmap thread's I/O (lock held on entry and return, dropped inside) */

/* Write every dirty page of @bits (the bitmap, or the written map), runs of
 * contiguous pages at once.  Returns 0 or the first error; pages whose
 * write failed stay dirty. */
static int write_pages_locked(struct mbitmap *bm, const uint8_t *bits, uint8_t *dirty,
			      int (*write)(void *, const void *, uint64_t, size_t),
			      const char *what)
{
	int ret = 0;
	size_t p = 0;

	while (p < bm->nr_pages) {
		size_t q = p;
		uint64_t off = (uint64_t)p * MBITMAP_PAGE_SIZE;
		size_t len;
		int r;

		if (!dirty[p]) {
			p++;
			continue;
		}
		while (q < bm->nr_pages && dirty[q])
			dirty[q++] = 0;
		len = (q - p) * MBITMAP_PAGE_SIZE;
		memcpy(bm->wbuf + off, bits + off, len);
		pthread_mutex_unlock(&bm->lock);
		r = write(bm->ctx, bm->wbuf + off, off, len);
		pthread_mutex_lock(&bm->lock);
		if (r < 0) {
			fm_debug("bitmap: writing %s pages %zu..%zu failed: %s", what, p, q - 1,
				 strerror(-r));
			memset(dirty + p, 1, q - p);
			if (!ret)
				ret = r;
		} else {
			atomic_fetch_add_explicit(&bm->page_writes, q - p, memory_order_relaxed);
		}
		p = q;
	}
	return ret;
}

static int write_dirty_locked(struct mbitmap *bm)
{
	return write_pages_locked(bm, bm->bits, bm->page_dirty, bm->ops.write, "bitmap");
}

/* Write the dirty pages of the written map; when a bit was cleared since
 * the last flush, ops->flush first (the discard that cleared it must be
 * durable before the map says "unwritten").  0 or -errno. */
static int write_written_locked(struct mbitmap *bm)
{
	int r;

	if (!bm->has_written)
		return 0;
	if (bm->wneed_flush) {
		bm->wneed_flush = false;
		pthread_mutex_unlock(&bm->lock);
		r = bm->ops.flush(bm->ctx);
		pthread_mutex_lock(&bm->lock);
		if (r < 0) {
			bm->wneed_flush = true;
			fm_debug("bitmap: flush before writing the written map failed: %s",
				 strerror(-r));
			return r;
		}
	}
	return write_pages_locked(bm, bm->wbits, bm->wpage_dirty, bm->ops.write_written,
				  "written-map");
}

static void wbit_set_locked(struct mbitmap *bm, uint64_t r)
{
	if (!(bm->wbits[r >> 3] & (1u << (r & 7)))) {
		bm->wbits[r >> 3] |= (uint8_t)(1u << (r & 7));
		bm->wweight++;
	}
	bm->wpage_dirty[page_of(r)] = 1;
}

/* With ops->zero_region: zero each region of @list's writes whose map bit
 * is clear in memory, and set that bit (written to disk next).  A waiter
 * whose region could not be zeroed gets the error in w->err (its regions
 * are not marked).  Drops the lock around each zeroing: only this thread
 * sets map bits, and no unwrite runs while a write into the region waits.
 * Returns whether it zeroed any region. */
static bool zero_new_regions_locked(struct mbitmap *bm, struct mbitmap_waiter *list)
{
	bool zeroed = false;

	for (struct mbitmap_waiter *w = list; w; w = w->next) {
		if (!w->mark_written)
			continue;
		for (uint64_t r = w->first; r <= w->last && !w->err; r++) {
			int ret;

			if (bm->wbits[r >> 3] & (1u << (r & 7)))
				continue;
			pthread_mutex_unlock(&bm->lock);
			ret = bm->ops.zero_region(bm->ctx, r);
			pthread_mutex_lock(&bm->lock);
			if (ret < 0) {
				fm_debug("bitmap: zeroing region %" PRIu64 " failed: %s", r,
					 strerror(-ret));
				w->err = ret;
			} else {
				wbit_set_locked(bm, r);
				zeroed = true;
			}
		}
	}
	return zeroed;
}

/* Serve a batch of waiters: set the bits of their regions that are not
 * durable, write the changed pages once, mark what got written durable and
 * call every waiter (without the lock). */
static void process_sets_locked(struct mbitmap *bm, struct mbitmap_waiter *list)
{
	struct mbitmap_waiter *w;
	int err, werr;

	for (w = list; w; w = w->next)
		w->err = 0;
	/* The zeroes durable before the map says the region holds them: a
	 * write-zeroes carries no FUA, and the map page's FUA makes only
	 * itself durable. */
	if (bm->has_written && bm->ops.zero_region && zero_new_regions_locked(bm, list)) {
		pthread_mutex_unlock(&bm->lock);
		err = bm->ops.flush(bm->ctx);
		pthread_mutex_lock(&bm->lock);
		if (err < 0) {
			fm_debug("bitmap: flush after zeroing regions failed: %s", strerror(-err));
			for (w = list; w; w = w->next)
				if (w->mark_written && !w->err)
					w->err = err;
		}
	}
	for (w = list; w; w = w->next) {
		if (w->err)
			continue;       /* a region could not be zeroed */
		for (uint64_t r = w->first; r <= w->last; r++) {
			uint32_t s = atomic_load(&bm->state[r]);

			if (!(s & ST_DURABLE))
				bit_set_locked(bm, r);
			if (bm->has_written && w->mark_written && !(s & ST_WRITTEN))
				wbit_set_locked(bm, r);
		}
	}
	/* The map first: a region is written on disk before its bit says
	 * "may differ" (either order is safe: both precede the data). */
	werr = write_written_locked(bm);
	if (werr >= 0)
		werr = -EIO;
	err = write_dirty_locked(bm);
	if (err >= 0)
		err = -EIO;     /* used only for a page still dirty */
	for (w = list; w; w = w->next) {
		if (w->err)
			continue;
		for (uint64_t r = w->first; r <= w->last; r++) {
			uint32_t s = atomic_load(&bm->state[r]);

			if (bm->has_written && w->mark_written && !(s & ST_WRITTEN)) {
				if (bm->wpage_dirty[page_of(r)])
					w->err = werr;
				else
					atomic_fetch_or(&bm->state[r], ST_WRITTEN);
			}
			if (s & ST_DURABLE)
				continue;
			if (bm->page_dirty[page_of(r)])
				w->err = err;
			else
				atomic_fetch_or(&bm->state[r], ST_DURABLE | ST_AGE_MASK);
		}
	}
	pthread_mutex_unlock(&bm->lock);
	while (list) {
		w = list;
		list = w->next;         /* fn may free or requeue w */
		w->fn(w->ctx, w->err);
	}
	pthread_mutex_lock(&bm->lock);
}

/*
 * One clearing pass (see "When a bit may be cleared" at the top).  @force:
 * take every idle region's AGE to 0 at once (clear_all_sync, delay 0)
 * instead of decrementing it.  Returns 0 or -errno (flush or page write).
 */
static int clear_pass_locked(struct mbitmap *bm, bool force)
{
	uint64_t candidates = 0, cleared = 0;
	uint64_t r;
	int ret;

	if (!atomic_load(&bm->allow_clear))
		return 0;
	for (r = next_set_locked(bm, 0); r < bm->nr_regions; r = next_set_locked(bm, r + 1)) {
		uint32_t s = atomic_load(&bm->state[r]);

		for (;;) {
			uint32_t n;

			if (s & ST_COUNT_MASK)
				break;
			if (!(s & ST_AGE_MASK)) {
				candidates++;
				break;
			}
			n = force ? s & ~ST_AGE_MASK : s - ST_AGE_ONE;
			if (atomic_compare_exchange_weak(&bm->state[r], &s, n)) {
				if (!(n & ST_AGE_MASK))
					candidates++;
				break;
			}
		}
	}
	if (candidates) {
		pthread_mutex_unlock(&bm->lock);
		ret = bm->ops.flush(bm->ctx);
		pthread_mutex_lock(&bm->lock);
		if (ret < 0) {
			fm_debug("bitmap: flush before clearing failed: %s", strerror(-ret));
			return ret;
		}
		/* The loads here come after the CASes above, which saw any
		 * end_write since allow_clear(false): see the WARNING in the
		 * header. */
		if (!atomic_load(&bm->allow_clear))
			return 0;
		for (r = next_set_locked(bm, 0); r < bm->nr_regions;
		     r = next_set_locked(bm, r + 1)) {
			uint32_t s = atomic_load(&bm->state[r]);

			if (s & (ST_COUNT_MASK | ST_AGE_MASK))
				continue;
			/* WRITTEN stays: only the write-intent bit goes. */
			if (atomic_compare_exchange_strong(&bm->state[r], &s, s & ST_WRITTEN)) {
				bit_clear_locked(bm, r);
				cleared++;
			}
		}
	}
	if (!cleared && !force)
		return 0;
	fm_debug("bitmap: clearing %" PRIu64 " region bits", cleared);
	return write_dirty_locked(bm);
}

static uint64_t pass_period_ns(unsigned delay_ms)
{
	uint64_t ms = ((uint64_t)delay_ms + 1) / 2;   /* 3 passes span >= delay */

	return (ms ? ms : 1) * 1000000ull;
}

static void *bitmap_main(void *arg)
{
	struct mbitmap *bm = arg;

	pthread_mutex_lock(&bm->lock);
	for (;;) {
		uint64_t now;

		if (bm->queue_head) {
			struct mbitmap_waiter *list = bm->queue_head;

			bm->queue_head = NULL;
			bm->queue_tail = &bm->queue_head;
			process_sets_locked(bm, list);
			continue;
		}
		if (bm->clear_req != bm->clear_done) {
			uint64_t req = bm->clear_req;
			int r = clear_pass_locked(bm, true);

			bm->clear_done = req;
			bm->clear_err = r;
			pthread_cond_broadcast(&bm->sync_done);
			continue;
		}
		if (bm->all_req != bm->all_done) {
			uint64_t req = bm->all_req;

			memset(bm->page_dirty, 1, bm->nr_pages);
			bm->all_err = write_dirty_locked(bm);
			bm->all_done = req;
			pthread_cond_broadcast(&bm->sync_done);
			continue;
		}
		if (bm->wsync_req != bm->wsync_done || bm->wwrite_req) {
			uint64_t req = bm->wsync_req;
			int r;

			bm->wwrite_req = false;
			r = write_written_locked(bm);
			if (req != bm->wsync_done) {
				bm->wsync_done = req;
				bm->wsync_err = r;
				pthread_cond_broadcast(&bm->sync_done);
			}
			continue;
		}
		if (bm->stop)
			break;
		if (!bm->weight || !atomic_load(&bm->allow_clear)) {
			bm->next_pass_ns = 0;
			pthread_cond_wait(&bm->wake, &bm->lock);
			continue;
		}
		now = fm_now_ns();
		if (!bm->next_pass_ns)
			bm->next_pass_ns = now + pass_period_ns(bm->delay_ms);
		if (now >= bm->next_pass_ns) {
			clear_pass_locked(bm, bm->delay_ms == 0);
			bm->next_pass_ns = fm_now_ns() + pass_period_ns(bm->delay_ms);
			continue;
		}
		{
			struct timespec ts = {
				.tv_sec = (time_t)(bm->next_pass_ns / 1000000000ull),
				.tv_nsec = (long)(bm->next_pass_ns % 1000000000ull),
			};

			pthread_cond_timedwait(&bm->wake, &bm->lock, &ts);
		}
	}
	pthread_mutex_unlock(&bm->lock);
	return NULL;
}

/*----------------------------------------------------------------*/
/* Life cycle */

static void bitmap_free(struct mbitmap *bm)
{
	pthread_cond_destroy(&bm->sync_done);
	pthread_cond_destroy(&bm->wake);
	pthread_mutex_destroy(&bm->lock);
	free(bm->wbuf);
	free(bm->wbits);
	free(bm->wpage_dirty);
	free(bm->bits);
	free(bm->page_dirty);
	free(bm->state);
	free(bm);
}

struct mbitmap *mbitmap_create(uint64_t nr_regions, unsigned region_shift, size_t length,
			       const struct mbitmap_ops *ops, void *ctx, unsigned delay_ms)
{
	struct mbitmap *bm;
	pthread_condattr_t attr;
	int r;

	if (!nr_regions || region_shift < MIN_REGION_SHIFT || region_shift > MAX_REGION_SHIFT ||
	    nr_regions > (UINT64_MAX >> region_shift) || !length ||
	    length % MBITMAP_PAGE_SIZE || length < (nr_regions + 7) / 8 ||
	    !ops || !ops->write || !ops->flush) {
		fm_debug("bitmap: bad geometry (%" PRIu64 " regions of 2^%u sectors, %zu bytes)",
			 nr_regions, region_shift, length);
		return NULL;
	}
	if (nr_regions > SIZE_MAX / sizeof(uint32_t))
		return NULL;
	bm = calloc(1, sizeof(*bm));
	if (!bm)
		return NULL;
	bm->nr_regions = nr_regions;
	bm->region_shift = region_shift;
	bm->length = length;
	bm->nr_pages = length / MBITMAP_PAGE_SIZE;
	bm->ops = *ops;
	bm->ctx = ctx;
	bm->delay_ms = delay_ms;
	atomic_init(&bm->allow_clear, true);
	atomic_init(&bm->page_writes, 0);
	bm->queue_tail = &bm->queue_head;
	pthread_mutex_init(&bm->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&bm->wake, &attr);
	pthread_condattr_destroy(&attr);
	pthread_cond_init(&bm->sync_done, NULL);

	bm->state = calloc((size_t)nr_regions, sizeof(*bm->state));
	bm->page_dirty = calloc(bm->nr_pages, 1);
	if (posix_memalign((void **)&bm->bits, MBITMAP_PAGE_SIZE, length))
		bm->bits = NULL;
	if (posix_memalign((void **)&bm->wbuf, MBITMAP_PAGE_SIZE, length))
		bm->wbuf = NULL;
	bm->has_written = ops->write_written != NULL;
	if (bm->has_written) {
		bm->wpage_dirty = calloc(bm->nr_pages, 1);
		if (posix_memalign((void **)&bm->wbits, MBITMAP_PAGE_SIZE, length))
			bm->wbits = NULL;
		else
			memset(bm->wbits, 0, length);
	}
	if (!bm->state || !bm->page_dirty || !bm->bits || !bm->wbuf ||
	    (bm->has_written && (!bm->wbits || !bm->wpage_dirty))) {
		bitmap_free(bm);
		return NULL;
	}
	memset(bm->bits, 0, length);
	memset(bm->wbuf, 0, length);

	r = fm_thread_start(&bm->thread, "fm-bitmap", bitmap_main, bm);
	if (r < 0) {
		fm_debug("bitmap: cannot start its thread: %s", strerror(-r));
		bitmap_free(bm);
		return NULL;
	}
	return bm;
}

void mbitmap_destroy(struct mbitmap *bm)
{
	if (!bm)
		return;
	pthread_mutex_lock(&bm->lock);
	bm->stop = true;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
	pthread_join(bm->thread, NULL);
#ifndef NDEBUG
	for (uint64_t r = 0; r < bm->nr_regions; r++)
		assert(!(atomic_load_explicit(&bm->state[r], memory_order_relaxed) &
			 ST_COUNT_MASK));
#endif
	bitmap_free(bm);
}

void mbitmap_load(struct mbitmap *bm, const uint8_t *bits, size_t len)
{
	uint64_t limit = (bm->nr_regions + 7) / 8;

	if (len > limit)
		len = (size_t)limit;
	pthread_mutex_lock(&bm->lock);
	for (size_t i = 0; i < len; i++) {
		unsigned add = bits[i] & (uint8_t)~bm->bits[i];

		if (i == limit - 1 && bm->nr_regions % 8)
			add &= (1u << (bm->nr_regions % 8)) - 1;
		while (add) {
			unsigned b = (unsigned)__builtin_ctz(add);
			uint64_t r = (uint64_t)i * 8 + b;

			add &= add - 1;
			bm->bits[i] |= (uint8_t)(1u << b);
			bm->weight++;
			atomic_fetch_or(&bm->state[r], ST_DURABLE | ST_AGE_MASK);
		}
	}
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
}

/*----------------------------------------------------------------*/
/* The data path */

bool mbitmap_start_write(struct mbitmap *bm, uint64_t sector, uint64_t count,
			 struct mbitmap_waiter *w)
{
	uint64_t first, last, r, slow = UINT64_MAX;
	uint32_t need = ST_DURABLE;

	if (!count)
		return true;
	assert(sector + count > sector);
	if (bm->has_written && w->mark_written)
		need |= ST_WRITTEN;
	first = region_of(bm, sector);
	last = region_of(bm, sector + count - 1);
	assert(last < bm->nr_regions);
	for (r = first; r <= last; r++) {
		uint32_t old = atomic_fetch_add(&bm->state[r], 1);

		assert((old & ST_COUNT_MASK) != ST_COUNT_MASK);
		if ((old & need) != need && slow == UINT64_MAX)
			slow = r;
	}
	if (fm_likely(slow == UINT64_MAX))
		return true;

	/* Slow path: the thread may have made the bits durable meanwhile
	 * (our counts keep them so); otherwise queue. */
	pthread_mutex_lock(&bm->lock);
	for (r = slow; r <= last; r++)
		if ((atomic_load(&bm->state[r]) & need) != need)
			break;
	if (r > last) {
		pthread_mutex_unlock(&bm->lock);
		return true;
	}
	w->first = first;
	w->last = last;
	w->err = 0;
	w->next = NULL;
	*bm->queue_tail = w;
	bm->queue_tail = &w->next;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
	return false;
}

void mbitmap_end_write(struct mbitmap *bm, uint64_t sector, uint64_t count)
{
	uint64_t first, last;

	if (!count)
		return;
	first = region_of(bm, sector);
	last = region_of(bm, sector + count - 1);
	assert(last < bm->nr_regions);
	for (uint64_t r = first; r <= last; r++) {
		uint32_t s = atomic_load_explicit(&bm->state[r], memory_order_relaxed);

		/* COUNT down and AGE up in one step: see the top. */
		do {
			assert(s & ST_COUNT_MASK);
		} while (!atomic_compare_exchange_weak(&bm->state[r], &s, (s - 1) | ST_AGE_MASK));
	}
}

/*----------------------------------------------------------------*/
/* Control */

void mbitmap_allow_clear(struct mbitmap *bm, bool allowed)
{
	atomic_store(&bm->allow_clear, allowed);
	if (allowed) {
		pthread_mutex_lock(&bm->lock);
		pthread_cond_signal(&bm->wake);
		pthread_mutex_unlock(&bm->lock);
	}
}

void mbitmap_set_delay(struct mbitmap *bm, unsigned delay_ms)
{
	pthread_mutex_lock(&bm->lock);
	bm->delay_ms = delay_ms;
	bm->next_pass_ns = 0;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
}

struct sync_waiter {
	struct mbitmap_waiter w;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void sync_waiter_done(void *ctx, int err)
{
	struct sync_waiter *sw = ctx;

	pthread_mutex_lock(&sw->lock);
	sw->err = err;
	sw->done = true;
	pthread_cond_signal(&sw->cond);
	pthread_mutex_unlock(&sw->lock);
}

int mbitmap_set_regions_sync(struct mbitmap *bm, uint64_t first, uint64_t last)
{
	struct sync_waiter sw = { .w = { .fn = sync_waiter_done, .ctx = &sw,
					 .mark_written = false } };

	if (first > last || last >= bm->nr_regions)
		return -EINVAL;
	pthread_mutex_init(&sw.lock, NULL);
	pthread_cond_init(&sw.cond, NULL);
	sw.w.first = first;
	sw.w.last = last;
	pthread_mutex_lock(&bm->lock);
	*bm->queue_tail = &sw.w;
	bm->queue_tail = &sw.w.next;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);

	pthread_mutex_lock(&sw.lock);
	while (!sw.done)
		pthread_cond_wait(&sw.cond, &sw.lock);
	pthread_mutex_unlock(&sw.lock);
	pthread_cond_destroy(&sw.cond);
	pthread_mutex_destroy(&sw.lock);
	return sw.err;
}

/* Ask the bitmap thread for the service whose requests @req counts, wait
 * until it has served this one (@done) and return its result (@err).
 * bm->lock held. */
static int request_locked(struct mbitmap *bm, uint64_t *req, const uint64_t *done,
			  const int *err)
{
	uint64_t want = ++*req;

	pthread_cond_signal(&bm->wake);
	while (*done < want)
		pthread_cond_wait(&bm->sync_done, &bm->lock);
	return *err;
}

int mbitmap_clear_all_sync(struct mbitmap *bm)
{
	int r;

	if (!atomic_load(&bm->allow_clear))
		return 0;
	pthread_mutex_lock(&bm->lock);
	r = request_locked(bm, &bm->clear_req, &bm->clear_done, &bm->clear_err);
	pthread_mutex_unlock(&bm->lock);
	return r;
}

/*----------------------------------------------------------------*/
/* Getters */

bool mbitmap_test(struct mbitmap *bm, uint64_t region)
{
	bool set;

	if (region >= bm->nr_regions)
		return false;
	pthread_mutex_lock(&bm->lock);
	set = bit_test_locked(bm, region);
	pthread_mutex_unlock(&bm->lock);
	return set;
}

uint64_t mbitmap_weight(struct mbitmap *bm)
{
	uint64_t n;

	pthread_mutex_lock(&bm->lock);
	n = bm->weight;
	pthread_mutex_unlock(&bm->lock);
	return n;
}

uint64_t mbitmap_next_set(struct mbitmap *bm, uint64_t from)
{
	uint64_t r;

	pthread_mutex_lock(&bm->lock);
	r = next_set_locked(bm, from);
	pthread_mutex_unlock(&bm->lock);
	return r;
}

uint64_t mbitmap_nr_regions(const struct mbitmap *bm)
{
	return bm->nr_regions;
}

uint64_t mbitmap_page_writes(struct mbitmap *bm)
{
	return atomic_load_explicit(&bm->page_writes, memory_order_relaxed);
}

void mbitmap_snapshot(struct mbitmap *bm, uint8_t *buf, size_t len)
{
	size_t n = len < bm->length ? len : bm->length;

	pthread_mutex_lock(&bm->lock);
	memcpy(buf, bm->bits, n);
	pthread_mutex_unlock(&bm->lock);
	if (len > n)
		memset(buf + n, 0, len - n);
}

/*----------------------------------------------------------------*/
/* The written-region map */

bool mbitmap_has_written(const struct mbitmap *bm)
{
	return bm->has_written;
}

void mbitmap_load_written(struct mbitmap *bm, const uint8_t *bits, size_t len)
{
	uint64_t limit = (bm->nr_regions + 7) / 8;

	if (!bm->has_written)
		return;
	if (len > limit)
		len = (size_t)limit;
	pthread_mutex_lock(&bm->lock);
	for (size_t i = 0; i < len; i++) {
		unsigned add = bits[i] & (uint8_t)~bm->wbits[i];

		if (i == limit - 1 && bm->nr_regions % 8)
			add &= (1u << (bm->nr_regions % 8)) - 1;
		while (add) {
			unsigned b = (unsigned)__builtin_ctz(add);

			add &= add - 1;
			bm->wbits[i] |= (uint8_t)(1u << b);
			bm->wweight++;
			atomic_fetch_or(&bm->state[(uint64_t)i * 8 + b], ST_WRITTEN);
		}
	}
	pthread_mutex_unlock(&bm->lock);
}

bool mbitmap_written(const struct mbitmap *bm, uint64_t region)
{
	if (!bm->has_written)
		return true;
	if (region >= bm->nr_regions)
		return false;
	return atomic_load_explicit(&bm->state[region], memory_order_acquire) & ST_WRITTEN;
}

void mbitmap_unwrite(struct mbitmap *bm, uint64_t first, uint64_t last)
{
	bool changed = false;

	if (!bm->has_written || first > last || last >= bm->nr_regions)
		return;
	pthread_mutex_lock(&bm->lock);
	for (uint64_t r = first; r <= last; r++) {
		atomic_fetch_and(&bm->state[r], ~ST_WRITTEN);
		if (bm->wbits[r >> 3] & (1u << (r & 7))) {
			bm->wbits[r >> 3] &= (uint8_t)~(1u << (r & 7));
			bm->wweight--;
			bm->wpage_dirty[page_of(r)] = 1;
			changed = true;
		}
	}
	if (changed) {
		bm->wneed_flush = true;
		bm->wwrite_req = true;
		pthread_cond_signal(&bm->wake);
	}
	pthread_mutex_unlock(&bm->lock);
}

int mbitmap_write_all_sync(struct mbitmap *bm)
{
	int r;

	pthread_mutex_lock(&bm->lock);
	r = request_locked(bm, &bm->all_req, &bm->all_done, &bm->all_err);
	pthread_mutex_unlock(&bm->lock);
	return r;
}

int mbitmap_sync_written(struct mbitmap *bm, bool all)
{
	int r;

	if (!bm->has_written)
		return 0;
	pthread_mutex_lock(&bm->lock);
	if (all)
		memset(bm->wpage_dirty, 1, bm->nr_pages);
	r = request_locked(bm, &bm->wsync_req, &bm->wsync_done, &bm->wsync_err);
	pthread_mutex_unlock(&bm->lock);
	return r;
}

uint64_t mbitmap_written_weight(struct mbitmap *bm)
{
	uint64_t n;

	if (!bm->has_written)
		return bm->nr_regions;
	pthread_mutex_lock(&bm->lock);
	n = bm->wweight;
	pthread_mutex_unlock(&bm->lock);
	return n;
}

void mbitmap_written_snapshot(struct mbitmap *bm, uint8_t *buf, size_t len)
{
	size_t n = len < bm->length ? len : bm->length;

	if (!bm->has_written) {
		memset(buf, 0xff, len);
		return;
	}
	pthread_mutex_lock(&bm->lock);
	memcpy(buf, bm->wbits, n);
	pthread_mutex_unlock(&bm->lock);
	if (len > n)
		memset(buf + n, 0, len - n);
}
