/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mirror's write-intent bitmap (a simplified md-bitmap): the image is
 * divided in regions of 2^region_shift sectors (512 bytes), one bit per
 * region.  A set bit on disk means "this region may differ between legs":
 * after a crash only those regions are resynced.
 *
 *   - A region's bit is set and DURABLE on disk before the first write into
 *     a clean region is issued (mbitmap_start_write() says when).
 *   - Writes are counted per region while in flight (start..end_write).
 *   - Bits are cleared lazily: a region with no write in flight for at least
 *     delay_ms is cleared in memory and on disk, after ops->flush made its
 *     data durable on every leg, and only while clearing is allowed.
 *
 * With a written-region map (ops->write_written set), the bitmap also keeps
 * one "written" bit per region, in memory and in a second on-disk image of
 * the same geometry:
 *   - A write that puts data (waiter.mark_written) into a region whose map
 *     bit is clear queues like a write into a clean region: the bitmap
 *     thread sets the map bit, writes the map page (ops->write_written,
 *     FUA, every leg) together with the bitmap pages, and only then lets
 *     the write go.  So a region is written on disk before any write into
 *     it can complete, let alone be acknowledged.
 *   - mbitmap_unwrite() clears map bits (the caller discarded the whole
 *     regions on every leg); the thread writes those pages soon after,
 *     behind an ops->flush that makes the discard durable first.
 *   - Without ops->write_written every region counts as written.
 *
 * The on-disk image is @length bytes (a multiple of 4 KiB): bit r is bit
 * r % 8 (LSB first) of byte r / 8.  It is written in whole 4 KiB pages, by
 * ops->write, to every leg; how is the mirror's business.
 *
 * Threading:
 *   - One thread per bitmap, "fm-bitmap", does every ops->write and
 *     ops->flush, and calls every waiter (mbitmap_ready_fn).  Setting and
 *     clearing are serialised on it, so a page write of a cleared bit can
 *     never land after a later set of the same bit.
 *   - mbitmap_start_write() and mbitmap_end_write() may be called from any
 *     thread, including I/O completion threads and waiter callbacks, and
 *     never block: while every region of the range is durable they are
 *     lock-free (atomic operations on the regions' counters only); otherwise
 *     start_write takes the bitmap mutex briefly to queue the waiter.  That
 *     mutex is never held across ops->write or ops->flush.
 *   - mbitmap_load(), the getters, mbitmap_allow_clear(), mbitmap_set_delay()
 *     and mbitmap_snapshot() take the mutex briefly; any thread.
 *   - mbitmap_set_regions_sync() and mbitmap_clear_all_sync() block until
 *     the bitmap thread has done their I/O.
 *   - mbitmap_destroy(): no other call may run or follow.
 *
 * WARNING: to avoid deadlocks and lost bits, these conditions are observed:
 *   - ops->write and ops->flush must not call into this bitmap (they run on
 *     its thread while other callers wait for it).
 *   - Waiter callbacks run on the bitmap thread with no bitmap lock held;
 *     they may call start_write/end_write, but must not block on I/O that
 *     needs the bitmap thread, and must not call the *_sync functions or
 *     mbitmap_destroy().
 *   - When a write fails on a leg (the array becomes degraded), call
 *     mbitmap_allow_clear(bm, false) BEFORE mbitmap_end_write() of that
 *     write: from then on no bit whose region was written is cleared.
 *   - Bits given to mbitmap_load() name regions that may differ between
 *     legs; they are cleared like any other once idle for delay_ms, so keep
 *     clearing disallowed until those regions are resynced.
 */
#ifndef MIRROR_BITMAP_H
#define MIRROR_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#define MBITMAP_PAGE_SIZE 4096u
#define MBITMAP_SECTOR_SHIFT 9

struct mbitmap;

struct mbitmap_ops {
	/*
	 * Write bytes [off, off + len) of the bitmap image (off 4 KiB
	 * aligned, len a multiple of 4 KiB; buf 4096-aligned) durably to
	 * every leg.  Synchronous.  Returns 0 when at least one leg took it,
	 * else -errno.  Called from the bitmap thread only.
	 */
	int (*write)(void *ctx, const void *buf, uint64_t off, size_t len);
	/* Flush every leg (make completed data writes durable).  Returns 0 or
	 * -errno.  Called from the bitmap thread only. */
	int (*flush)(void *ctx);
	/* Optional: as write, for the written-region map's image (NULL: no
	 * map, every region counts as written). */
	int (*write_written)(void *ctx, const void *buf, uint64_t off, size_t len);
	/* Optional, with write_written: zero region @region on every leg
	 * (FM_SB_FEAT_ZERO_ON_WRITE: its data is undefined until written).
	 * Called before the region is first marked written, so no data
	 * write into it has been issued.  Synchronous; 0 or -errno (the
	 * waiters for the region then fail).  Bitmap thread only. */
	int (*zero_region)(void *ctx, uint64_t region);
};

/* @err: 0, or -errno when the region bits could not be written: the write
 * must then fail (and mbitmap_end_write() still be called). */
typedef void (*mbitmap_ready_fn)(void *ctx, int err);

/*
 * Embedded in the caller's request.  The caller sets fn, ctx and
 * mark_written before mbitmap_start_write(); the other fields belong to
 * the bitmap while the waiter is queued (until fn is called).
 */
struct mbitmap_waiter {
	struct mbitmap_waiter *next;
	mbitmap_ready_fn fn;
	void *ctx;
	bool mark_written;      /* the write puts data: its regions become written */
	uint64_t first, last;   /* regions (filled by start_write) */
	int err;                /* result, handed to fn */
};

/*
 * Create the bitmap of @nr_regions regions of 2^@region_shift sectors, whose
 * on-disk image is @length bytes, all bits clear in memory; start its
 * thread.  @delay_ms: how long a region must have had no write in flight
 * before its bit is cleared (0: as soon as it is idle; values below a few
 * hundred ms cost a flush of every leg per pass and suit tests only).
 * Clearing starts allowed.
 * Returns NULL on ENOMEM, when the thread cannot start, or on bad
 * arguments: nr_regions 0, region_shift outside [11, 31] (1 MiB .. 1 TiB),
 * @length 0, not a multiple of 4 KiB or smaller than ceil(nr_regions / 8),
 * a NULL op.  @ops and @ctx must outlive the bitmap.
 */
struct mbitmap *mbitmap_create(uint64_t nr_regions, unsigned region_shift, size_t length,
			       const struct mbitmap_ops *ops, void *ctx, unsigned delay_ms);

/* Stop the thread and free.  No write may be in flight (every start_write
 * ended), no call may run.  NULL is ok.  Does not clear bits: at a clean
 * stop call mbitmap_clear_all_sync() first. */
void mbitmap_destroy(struct mbitmap *bm);

typedef struct mbitmap mbitmap;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(mbitmap, mbitmap_destroy)

/*
 * OR @len bytes of on-disk bits into the bitmap (at assembly: the union of
 * every leg's bitmap).  Those bits count as durable already.  Bits beyond
 * nr_regions and bytes beyond the bitmap's length are ignored.  Call before
 * any write.  Writes nothing.
 */
void mbitmap_load(struct mbitmap *bm, const uint8_t *bits, size_t len);

/*
 * Account a write (or discard) of [@sector, @sector + @count), which must
 * lie within nr_regions << region_shift.  Returns true when every region's
 * bit is durable: issue the write now.  Returns false when @w (fn and ctx
 * set by the caller) was queued: w->fn(w->ctx, err) is called later on the
 * bitmap thread, after the bits are durable (err 0) or could not be written
 * (err < 0: fail the write); fn may run before start_write has returned.
 * Either way mbitmap_end_write() must be called with the same range once the
 * write completed (also when fn reported an error).  @count 0 returns true
 * and counts nothing.  Never blocks; lock-free when it returns true without
 * having queued.
 */
bool mbitmap_start_write(struct mbitmap *bm, uint64_t sector, uint64_t count,
			 struct mbitmap_waiter *w);

/* The write of [@sector, @sector + @count) accounted by start_write has
 * completed (on every leg it was sent to).  Lock-free; never blocks. */
void mbitmap_end_write(struct mbitmap *bm, uint64_t sector, uint64_t count);

/* false: never clear a bit (degraded); true: clear idle regions again.
 * Once it returned false, no region written from then on (or whose write
 * ends from then on) has its bit cleared; see WARNING. */
void mbitmap_allow_clear(struct mbitmap *bm, bool allowed);

/* Change the clearing delay (see mbitmap_create()); applies to the next
 * pass. */
void mbitmap_set_delay(struct mbitmap *bm, unsigned delay_ms);

/*
 * Set the bits of regions [@first, @last] durably and wait (a resync or a
 * recovery must remember regions).  Blocks.  The bits are cleared later like
 * any other (idle for delay_ms, clearing allowed).  Returns 0, -EINVAL for a
 * bad range, or the -errno of the failed page write.
 */
int mbitmap_set_regions_sync(struct mbitmap *bm, uint64_t first, uint64_t last);

/*
 * Clear every bit whose region has no write in flight, durably: ops->flush
 * first, then the changed pages are written; pages whose earlier write
 * failed are written again.  Blocks.  Honours mbitmap_allow_clear(): returns
 * 0 without clearing when clearing is not allowed.  Used at a clean stop.
 * Returns 0 or the -errno of the flush (nothing cleared) or of a page write.
 */
int mbitmap_clear_all_sync(struct mbitmap *bm);

/*
 * Write every page of the bitmap (ops->write: to every writable leg) and
 * wait.  A leg that rejoins holds on disk only the bits set before it left
 * and after it came back; once it is in sync, a start without the leg that
 * had the rest would take its bitmap for the array's and miss them.
 * Blocks.  Returns 0 or the -errno of a page write.
 */
int mbitmap_write_all_sync(struct mbitmap *bm);

/* Bit @region set in memory (set bits include those being written). */
bool mbitmap_test(struct mbitmap *bm, uint64_t region);
/* Number of bits set in memory. */
uint64_t mbitmap_weight(struct mbitmap *bm);
/* First bit set in memory at or after @from, or nr_regions. */
uint64_t mbitmap_next_set(struct mbitmap *bm, uint64_t from);
uint64_t mbitmap_nr_regions(const struct mbitmap *bm);
/* 4 KiB page writes done successfully (statistics). */
uint64_t mbitmap_page_writes(struct mbitmap *bm);

/* Copy the in-memory bits into @buf (@len bytes; beyond the bitmap's length
 * zeroes) — for tests and `examine`. */
void mbitmap_snapshot(struct mbitmap *bm, uint8_t *buf, size_t len);

/*
 * The written-region map (see the top).  All are no-ops, or say "every
 * region is written", without ops->write_written.
 */
bool mbitmap_has_written(const struct mbitmap *bm);
/* OR @len bytes of on-disk map bits in (at assembly: the union of the
 * in-sync legs' maps); they count as on disk.  Call before any write. */
void mbitmap_load_written(struct mbitmap *bm, const uint8_t *bits, size_t len);
/* Is region @region written (its map bit set in memory, hence on disk)?
 * Lock-free, any thread.  false beyond nr_regions. */
bool mbitmap_written(const struct mbitmap *bm, uint64_t region);
/* Regions [@first, @last] were discarded wholly on every leg: mark them
 * unwritten in memory now, on disk soon (after an ops->flush).  The caller
 * guarantees that no write into them is in flight or being started (the
 * mirror's ordering: the discard is still active).  Never blocks. */
void mbitmap_unwrite(struct mbitmap *bm, uint64_t first, uint64_t last);
/* Write the dirty map pages (@all: every page, e.g. to legs that were
 * rebuilt or whose map may be stale) and wait.  0 or -errno. */
int mbitmap_sync_written(struct mbitmap *bm, bool all);
/* Regions written (nr_regions without a map). */
uint64_t mbitmap_written_weight(struct mbitmap *bm);
/* Copy the in-memory map into @buf (as mbitmap_snapshot; all ones without
 * a map). */
void mbitmap_written_snapshot(struct mbitmap *bm, uint8_t *buf, size_t len);

#endif /* MIRROR_BITMAP_H */
