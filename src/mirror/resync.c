/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The sync driver: one thread that walks the regions of the image and
 * copies (resync after an unclean stop, recovery of rebuilding legs) or
 * compares (scrub) them, chunk by chunk, through the mirror's ordered
 * copies, within the speed limits.  Like md's resync thread and
 * sync_action.
 *
 * What a pass does to region g:
 *   resync     g is marked in m->unsynced: copy it from the source leg to
 *              the other in-sync legs; then clear its mark.  With
 *              checksums also when there is no other leg (a one-leg or a
 *              degraded array): the entries of its blocks whose data fails
 *              them are recomputed from the source (region_recompute()).
 *   recover    for each rebuilding leg: every region (full rebuild) or the
 *              regions whose bitmap bit was set when the pass began
 *              (bitmap recovery: the bits cover what the leg missed, since
 *              none is cleared while the array is degraded).  Writes that
 *              arrive meanwhile reach the rebuilding legs themselves.
 *   check      compare the in-sync legs; count mismatching sectors.
 *   repair     check, and rewrite the legs that differ from the first leg
 *              that read correctly.
 * A resync and a recovery are done in one pass when both are due.
 * With a written-region map, a region never written (or wholly discarded
 * since) holds zeroes on every in-sync leg: a scrub and a resync skip it,
 * and a recovery zeroes it on the rebuilding legs (COPY_ZERO: a punched
 * hole or write-zeroes, no read) instead of copying it.
 *
 * Threading: the driver thread submits copies (asynchronous, completed on
 * reaper threads) and waits for them with sync->lock/cond; status readers
 * take sync->lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mirror_i.h"

#define SYNC_COPY_BYTES (1u << 20)      /* one copy request */
#define SYNC_SCRUB_BYTES (256u << 10)   /* one scrub request (per leg) */
#define SYNC_ZERO_BYTES (16u << 20)     /* one zeroing of an unwritten region
					   (its buffer, for the copy it becomes
					   if a write comes first, stays untouched) */
#define SYNC_WINDOW 4                   /* requests in flight */

struct mirror_sync {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running;                   /* a thread exists (join it) */
	bool active;                    /* a pass is running */
	/* Set under lock; read without it by the pass loops (atomic). */
	atomic_bool stop;
	bool cancelled;                 /* stop is a scrub cancel, not mirror_sync_stop() */
	enum mirror_sync_action action, last_action;
	unsigned inflight;
	int err;
	uint64_t done, total;           /* bytes */
	uint64_t mismatches;
	uint64_t resynced_regions;
	uint64_t sample_ns, sample_done, speed;
	uint64_t started_ns;
	bool queued;                    /* another recovery pass after this one */
	uint64_t ckpt_ns;               /* last recovery checkpoint */
	/* Progress not yet checkpointed: every region below ckpt_end is
	 * copied to the legs ckpt_legs (sync thread). */
	uint64_t ckpt_end, ckpt_legs;
	/* The mirror_leg.joined of each leg this pass recovers, as it began
	 * (sync thread; pass_legs_locked()). */
	uint64_t joined[FM_SB_MAX_LEGS];
};

static struct mirror_sync *sync_of(struct mirror *m)
{
	if (!m->sync) {
		struct mirror_sync *s = calloc(1, sizeof(*s));

		if (!s)
			return NULL;
		pthread_mutex_init(&s->lock, NULL);
		pthread_cond_init(&s->cond, NULL);
		m->sync = s;
	}
	return m->sync;
}

static void chunk_done(void *ctx, int err, uint64_t mismatch)
{
	struct mirror *m = ctx;
	struct mirror_sync *s = m->sync;

	pthread_mutex_lock(&s->lock);
	s->inflight--;
	if (err && !s->err)
		s->err = err;
	/* md's mismatch_cnt: what a scrub found (a resync's are expected). */
	if (s->action == MIRROR_SYNC_CHECK || s->action == MIRROR_SYNC_REPAIR)
		s->mismatches += mismatch;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* Wait until fewer than @max requests are in flight; false when stopping. */
static bool wait_window(struct mirror_sync *s, unsigned max)
{
	pthread_mutex_lock(&s->lock);
	while (s->inflight >= max)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return !s->stop;
}

static uint64_t client_ios(struct mirror *m)
{
	return atomic_load(&m->reads) + atomic_load(&m->writes);
}

/* Sleep so that the pass keeps to the speed limit: sync_speed_max while
 * the image is idle, sync_speed_min while clients use it. */
struct throttle {
	uint64_t next_ns, last_ios, busy_until_ns;
};

static void throttle(struct mirror *m, struct mirror_sync *s, struct throttle *t,
		     uint64_t bytes)
{
	uint64_t now = fm_now_ns(), ios = client_ios(m), rate;

	if (ios != t->last_ios) {
		t->last_ios = ios;
		t->busy_until_ns = now + 500000000ull;
	}
	rate = now < t->busy_until_ns ? m->sync_speed_min : m->sync_speed_max;
	if (t->next_ns + 1000000000ull < now)
		t->next_ns = now;
	t->next_ns += bytes * 1000000000ull / (rate ? rate : 1);
	while (!s->stop && fm_now_ns() < t->next_ns) {
		uint64_t wait = t->next_ns - fm_now_ns();
		struct timespec ts = { 0, (long)(wait > 50000000ull ? 50000000ull : wait) };

		nanosleep(&ts, NULL);
		/* A client went idle: speed up at once. */
		if (client_ios(m) == t->last_ios && fm_now_ns() >= t->busy_until_ns &&
		    rate == m->sync_speed_min && rate < m->sync_speed_max)
			break;
	}
	pthread_mutex_lock(&s->lock);
	s->done += bytes;
	now = fm_now_ns();
	if (now - s->sample_ns >= 1000000000ull) {
		s->speed = (s->done - s->sample_done) * 1000000000ull / (now - s->sample_ns);
		s->sample_ns = now;
		s->sample_done = s->done;
	}
	pthread_mutex_unlock(&s->lock);
}

/* Progress of bytes that cost no copy (unwritten regions zeroed). */
static void account_done(struct mirror_sync *s, uint64_t bytes)
{
	pthread_mutex_lock(&s->lock);
	s->done += bytes;
	pthread_mutex_unlock(&s->lock);
}

static bool region_unwritten(struct mirror *m, uint64_t g)
{
	return mirror_has_written_map(m) && !mirror_region_written(m, g);
}

static uint64_t region_bytes(struct mirror *m, uint64_t g)
{
	uint64_t start = g << (m->region_shift + FM_SECTOR_SHIFT);
	uint64_t end = start + (1ull << (m->region_shift + FM_SECTOR_SHIFT));

	return (end > m->image_size ? m->image_size : end) - start;
}

static bool unsynced_test(struct mirror *m, uint64_t g)
{
	return mirror_region_unsynced(m, g << m->region_shift, 1);
}

static void unsynced_clear(struct mirror *m, uint64_t g)
{
	uint64_t *bits = atomic_load(&m->unsynced);

	if (bits)
		atomic_fetch_and((_Atomic uint64_t *)&bits[g / 64], ~(1ull << (g % 64)));
}

/* After a crash, region @g of an array with checksums is compared even
 * with no leg to copy to: a block's entry on disk may be older than its
 * data (the table page was not written back, and a degraded array writes
 * none before its stop), and once the region no longer counts as unsynced
 * such a block would read as EIO.  The compare (COPY_RESYNC) recomputes
 * those entries from the source's data; they reach the disk like any
 * write's (the bitmap's flush before the bit is cleared, the stop). */
static bool region_recompute(struct mirror *m, uint64_t g)
{
	return m->csum && unsynced_test(m, g) && !region_unwritten(m, g);
}

/* The legs region @g must be copied to in this pass.  A recovery, full
 * or from the bitmap, skips the regions below the leg's recovery_offset:
 * recovered before a stop (the checkpoint), or earlier in this pass. */
static uint64_t region_targets(struct mirror *m, unsigned nl, uint64_t g, unsigned src,
			       uint64_t full, const uint64_t *bm)
{
	uint64_t t, behind = 0, end = (g + 1) << (m->region_shift + FM_SECTOR_SHIFT);
	uint64_t pass = full | m->sync_bitmap_legs;

	/* Only this pass's legs: an add may be setting up another slot. */
	for (unsigned i = 0; i < nl; i++)
		if ((pass & (1ull << i)) && end > m->legs[i].recovery_offset)
			behind |= 1ull << i;
	t = full & behind;
	if (bm && (bm[g / 64] & (1ull << (g % 64))))
		t |= ~full & m->sync_bitmap_legs & behind;
	/* After an unclean stop: every other writable leg, a rebuilding one
	 * too (its part below the checkpoint counts as in sync). */
	if (unsynced_test(m, g))
		for (unsigned i = 0; i < nl; i++)
			if (i != src)
				t |= 1ull << i;
	/* Only legs still writable. */
	for (unsigned i = 0; i < nl; i++) {
		enum fm_leg_state st = leg_state(&m->legs[i]);

		if (st != FM_LEG_IN_SYNC && st != FM_LEG_REBUILDING)
			t &= ~(1ull << i);
	}
	return t;
}

static uint64_t in_sync_legs(struct mirror *m, unsigned nl)
{
	uint64_t mask = 0;

	for (unsigned i = 0; i < nl; i++)
		if (leg_state(&m->legs[i]) == FM_LEG_IN_SYNC)
			mask |= 1ull << i;
	return mask;
}

/* Of the legs @legs this pass began to recover, those still there and
 * rebuilding: not one that failed since, nor another added to its slot
 * after it was removed (which missed what the pass copied before it
 * came; its own pass is queued).  state_lock held, or a hint without it. */
static uint64_t pass_legs_locked(struct mirror *m, const struct mirror_sync *s, uint64_t legs)
{
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		if ((legs & (1ull << i)) &&
		    (leg_state(&m->legs[i]) != FM_LEG_REBUILDING ||
		     atomic_load(&m->legs[i].joined) != s->joined[i]))
			legs &= ~(1ull << i);
	return legs;
}

/* The rebuilding legs of @legs are in sync; a leg that replaces another
 * (FM_SB_LEG_REPLACEMENT) retires it.  Returns 0, or -errno when the legs
 * could not be flushed: then none is marked in sync. */
static int finish_recovery(struct mirror *m, struct mirror_sync *s, uint64_t legs)
{
	uint64_t retire = 0;
	int r;

	/* A rebuilt leg's checksum area is whatever it held: give it the
	 * whole table before it counts as in sync. */
	if (m->csum) {
		mcsum_mark_all_dirty(m);
		if (mcsum_write_dirty(m) < 0)
			fm_debug("checksums could not be written to the rebuilt legs");
	}
	/* Its written-region map too (pages written since it joined are
	 * current; the others are whatever the device held). */
	if (m->bitmap && mbitmap_sync_written(m->bitmap, true) < 0)
		fm_debug("the written-region map could not be written to the rebuilt legs");
	/* And the write-intent bitmap: its own lacks the bits set while it
	 * was out, and once in sync it may be the only leg a start reads
	 * them from. */
	if (m->bitmap && mbitmap_write_all_sync(m->bitmap) < 0)
		fm_debug("the write-intent bitmap could not be written to the rebuilt legs");
	/* The superblock that says in sync is written with FUA, the rest
	 * was not: the copies since the last checkpoint and the writes above
	 * must be durable first, or a power loss could revert the leg to
	 * what it held while its superblock claims it current (as for a
	 * checkpoint).  A rebuilt leg the flush fails is failed by it, and
	 * pass_legs_locked() drops it below. */
	r = mirror_flush(m);
	if (r < 0) {
		fm_debug("the legs could not be flushed: the rebuilt legs are not marked in sync");
		return r;
	}
	pthread_mutex_lock(&m->state_lock);
	legs = pass_legs_locked(m, s, legs);
	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];
		uint32_t *flags = &m->sb.legs[i].flags;

		if (!(legs & (1ull << i)))
			continue;
		atomic_store_explicit(&leg->state, FM_LEG_IN_SYNC, memory_order_release);
		m->sb.legs[i].state = FM_LEG_IN_SYNC;
		m->sb.legs[i].events = m->sb.events + 1;
		leg->recovery_offset = 0;
		leg->note[0] = '\0';
		fm_debug("leg %s: rebuilt, now in sync", leg->path);
		if (*flags & FM_SB_LEG_REPLACEMENT) {
			if (m->sb.legs[FM_SB_LEG_REPLACED_SLOT(*flags)].state != FM_LEG_EMPTY)
				retire |= 1ull << FM_SB_LEG_REPLACED_SLOT(*flags);
			*flags &= ~(uint32_t)(FM_SB_LEG_REPLACEMENT | FM_SB_LEG_REPLACED_MASK);
		}
	}
	mirror_sb_request_locked(m);
	mirror_event_sync_end_locked(m, FM_EVENT_REBUILD_FINISHED, s->done, 0);
	mirror_event_degraded_locked(m);
	pthread_mutex_unlock(&m->state_lock);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		if (retire & (1ull << i))
			mirror_retire_leg(m, i, true, "replaced");
	mirror_sb_update_sync(m);
	return 0;
}

/* A recovery's checkpoint: every region below @end is copied to the
 * rebuilding legs @legs (a bitmap-based recovery: every marked region);
 * at most every SYNC_CHECKPOINT_NS, and when a pass stops early (@force),
 * make that durable on them, then move their recovery_offset there and
 * record it in their superblocks, so that a stop or a crash resumes from
 * there.  recovery_offset moves only after the flush: every superblock
 * update writes it (a leg failing, an add), and none may claim copies a
 * crash of the machine could still lose. */
#define SYNC_CHECKPOINT_NS (5ull * 1000000000ull)

static void checkpoint(struct mirror *m, struct mirror_sync *s, uint64_t legs, uint64_t end,
		       bool force)
{
	uint64_t now = fm_now_ns();

	s->ckpt_end = end;
	s->ckpt_legs = legs;
	if (!force && now - s->ckpt_ns < SYNC_CHECKPOINT_NS)
		return;
	s->ckpt_ns = now;
	s->ckpt_legs = 0;
	if (mirror_flush(m) < 0)
		return;
	pthread_mutex_lock(&m->state_lock);
	legs = pass_legs_locked(m, s, legs);
	for (unsigned i = 0; i < m->nr_legs; i++)
		if ((legs & (1ull << i)) && m->legs[i].recovery_offset < end)
			m->legs[i].recovery_offset = end;
	pthread_mutex_unlock(&m->state_lock);
	mirror_sb_update_sync(m);
}

static void run_pass(struct mirror *m, struct mirror_sync *s)
{
	bool scrub = s->action == MIRROR_SYNC_CHECK || s->action == MIRROR_SYNC_REPAIR;
	uint64_t full = 0, *bm = NULL, total = 0, image_sectors = m->image_size >> FM_SECTOR_SHIFT;
	uint64_t began;
	int src = atomic_load(&m->sync_src);
	struct throttle t = { 0 };
	uint64_t csum_errors0[FM_SB_MAX_LEGS];
	/* The legs of this pass: a leg added during it is recovered by a
	 * pass of its own, queued (mirror_sync_start_or_queue()). */
	unsigned nl = m->nr_legs;
	char u[37];

	for (unsigned i = 0; i < nl; i++)
		csum_errors0[i] = atomic_load(&m->legs[i].csum_errors);
	if (src < 0 || leg_state(&m->legs[src]) != FM_LEG_IN_SYNC) {
		src = mirror_pick_source(m);
		atomic_store(&m->sync_src, src);
	}
	if (src < 0) {
		fm_debug("%s: no leg in sync to copy from", mirror_sync_action_name(s->action));
		s->err = -EIO;
		return;
	}
	/* Which legs, which regions. */
	m->sync_bitmap_legs = 0;
	pthread_mutex_lock(&m->state_lock);
	for (unsigned i = 0; i < nl && !scrub; i++) {
		if (leg_state(&m->legs[i]) != FM_LEG_REBUILDING)
			continue;
		s->joined[i] = atomic_load(&m->legs[i].joined);
		if (m->legs[i].full_rebuild || !m->bitmap)
			full |= 1ull << i;
		else
			m->sync_bitmap_legs |= 1ull << i;
	}
	pthread_mutex_unlock(&m->state_lock);
	began = full | m->sync_bitmap_legs;
	if (m->sync_bitmap_legs) {
		bm = calloc((m->nr_regions + 63) / 64, 8);
		if (!bm) {
			s->err = -ENOMEM;
			return;
		}
		for (uint64_t g = 0; g < m->nr_regions; g++)
			if (mbitmap_test(m->bitmap, g))
				bm[g / 64] |= 1ull << (g % 64);
	}
	for (uint64_t g = 0; g < m->nr_regions; g++)
		if (scrub ? !region_unwritten(m, g) :
		    region_targets(m, nl, g, (unsigned)src, full, bm) || region_recompute(m, g))
			total += region_bytes(m, g);
	atomic_store(&m->sync_read_bytes, 0);
	atomic_store(&m->sync_write_bytes, 0);
	atomic_store(&m->sync_zero_bytes, 0);
	pthread_mutex_lock(&s->lock);
	s->ckpt_ns = fm_now_ns();
	s->ckpt_legs = 0;
	s->total = total;
	s->done = 0;
	s->sample_ns = s->started_ns = fm_now_ns();
	s->sample_done = 0;
	s->speed = 0;
	pthread_mutex_unlock(&s->lock);
	if (scrub)
		mirror_event(m, FM_EVENT_SCRUB_STARTED, -1, s->action == MIRROR_SYNC_REPAIR, 0);
	else
		mirror_event(m, FM_EVENT_REBUILD_STARTED, -1, total, 0);
	fm_debug("array %s: %s started: %llu bytes to %s",
		  fm_uuid_unparse(m->sb.array_uuid, u), mirror_sync_action_name(s->action),
		  (unsigned long long)total, scrub ? "compare" : "copy");

	for (uint64_t g = 0; g < m->nr_regions && !s->stop && !s->err; g++) {
		uint64_t first = g << m->region_shift, end = first + (1ull << m->region_shift);
		uint64_t targets;

		/* A leg of the pass that failed is out of it for good, even
		 * if another takes its slot (checkpoint() and
		 * finish_recovery() check again, under state_lock). */
		full = pass_legs_locked(m, s, full);
		m->sync_bitmap_legs = pass_legs_locked(m, s, m->sync_bitmap_legs);
		targets = scrub ? 0 : region_targets(m, nl, g, (unsigned)src, full, bm);
		uint64_t step = (scrub ? SYNC_SCRUB_BYTES : SYNC_COPY_BYTES) >> FM_SECTOR_SHIFT;
		enum mreq_op op = scrub ? MREQ_SCRUB : MREQ_COPY;
		unsigned flags = COPY_SYNC | (s->action == MIRROR_SYNC_REPAIR ? COPY_REPAIR : 0);

		if (region_unwritten(m, g)) {
			/* Zeroes on every in-sync leg: nothing to compare or
			 * resync; rebuilding legs get zeroes, not a copy. */
			if (scrub)
				continue;
			if (unsynced_test(m, g))
				unsynced_clear(m, g);
			targets &= ~in_sync_legs(m, nl);
			flags |= COPY_ZERO;
			step = SYNC_ZERO_BYTES >> FM_SECTOR_SHIFT;
		}
		if (!scrub && !targets && !region_recompute(m, g))
			continue;
		if (!scrub && unsynced_test(m, g) && !(flags & COPY_ZERO)) {
			/* After a crash: the data of blocks no copy verifies
			 * (without checksums: every block) comes from the
			 * source, with its checksum. */
			flags |= COPY_RESYNC;
			/* Only in-sync legs to bring together (or none, only
			 * entries to recompute): compare per block and write
			 * only the blocks whose copies differ
			 * (scrub_compare_csum(), scrub_compare_blocks()). */
			if (!(targets & ~in_sync_legs(m, nl))) {
				op = MREQ_SCRUB;
				flags |= COPY_REPAIR;
				step = SYNC_SCRUB_BYTES >> FM_SECTOR_SHIFT;
			}
		}
		if (end > image_sectors)
			end = image_sectors;
		for (uint64_t sec = first; sec < end && !s->stop; sec += step) {
			uint64_t count = end - sec < step ? end - sec : step;
			int r;

			if (!wait_window(s, SYNC_WINDOW))
				break;
			if (flags & COPY_ZERO)
				account_done(s, count << FM_SECTOR_SHIFT);
			else
				throttle(m, s, &t, count << FM_SECTOR_SHIFT);
			pthread_mutex_lock(&s->lock);
			s->inflight++;
			pthread_mutex_unlock(&s->lock);
			r = mirror_start_copy(m, op, sec, count, (unsigned)src, targets,
					      flags, chunk_done, m);
			if (r < 0)
				chunk_done(m, r, 0);
		}
		/* The region is in sync once its copies are done. */
		wait_window(s, 1);
		if (!scrub && !s->stop && !s->err) {
			if (unsynced_test(m, g)) {
				unsynced_clear(m, g);
			}
			pthread_mutex_lock(&s->lock);
			s->resynced_regions++;
			pthread_mutex_unlock(&s->lock);
		}
		if (!scrub && !s->stop && !s->err && (full | m->sync_bitmap_legs))
			checkpoint(m, s, full | m->sync_bitmap_legs, end << FM_SECTOR_SHIFT,
				   false);
	}
	wait_window(s, 1);
	free(bm);
	/* Stopped early: keep what was copied since the last checkpoint. */
	if ((s->stop || s->err) && s->ckpt_legs)
		checkpoint(m, s, s->ckpt_legs, s->ckpt_end, true);
	if (s->stop || s->err) {
		g_autofree char *what = g_strdup_printf(
			"%s %s after %llu of %llu bytes", mirror_sync_action_name(s->action),
			s->stop ? "interrupted" : "failed", (unsigned long long)s->done,
			(unsigned long long)s->total);

		fm_debug("array %s: %s%s%s", fm_uuid_unparse(m->sb.array_uuid, u), what,
			 s->err ? ": " : "", s->err ? strerror(-s->err) : "");
		if (scrub)
			mirror_event_sync_end_detail(m, FM_EVENT_SCRUB_FINISHED, s->mismatches,
						     s->err ? -s->err : ECANCELED, what);
		else
			mirror_event_sync_end_detail(m, FM_EVENT_REBUILD_INTERRUPTED, s->done,
						     s->err ? -s->err : 0, what);
		return;
	}
	if (scrub) {
		mirror_event_sync_end(m, FM_EVENT_SCRUB_FINISHED, s->mismatches, 0);
		fm_debug("array %s: %s done: %llu mismatched sectors%s",
			  fm_uuid_unparse(m->sb.array_uuid, u), mirror_sync_action_name(s->action),
			  (unsigned long long)s->mismatches,
			  s->action == MIRROR_SYNC_REPAIR && s->mismatches ? " (rewritten)" : "");
		for (unsigned i = 0; i < nl && m->csum; i++) {
			uint64_t bad = atomic_load(&m->legs[i].csum_errors) - csum_errors0[i];

			if (m->legs[i].path && bad)
				fm_debug("leg %s: %s found %llu blocks failing their checksum%s",
					 m->legs[i].path, mirror_sync_action_name(s->action),
					 (unsigned long long)bad,
					 s->action == MIRROR_SYNC_REPAIR ?
					 " (rewritten from a copy that verifies)" : "");
		}
		return;
	}
	/* Every out-of-sync region is copied. */
	if (atomic_load(&m->unsynced)) {
		uint64_t *old = atomic_exchange(&m->unsynced, NULL);

		/* Set once, at assembly: only one is ever retired. */
		m->unsynced_retired = old;
	}
	if (began) {
		int r = finish_recovery(m, s, began);

		if (r < 0) {
			s->err = r;
			mirror_event_sync_end_detail(m, FM_EVENT_REBUILD_INTERRUPTED, s->done, -r,
						     "recover failed: the flush before marking "
						     "the rebuilt legs in sync");
			return;
		}
	} else {
		/* A resync alone: the legs were in sync all along. */
		mirror_event_sync_end(m, FM_EVENT_REBUILD_FINISHED, s->done, 0);
	}
	fm_debug("array %s: %s done: %llu regions, %llu bytes in %.1f s: %llu bytes read, "
		 "%llu bytes written, %llu bytes of unwritten regions zeroed",
		 fm_uuid_unparse(m->sb.array_uuid, u),
		 mirror_sync_action_name(s->action),
		 (unsigned long long)s->resynced_regions, (unsigned long long)s->done,
		 (double)(fm_now_ns() - s->started_ns) / 1e9,
		 (unsigned long long)atomic_load(&m->sync_read_bytes),
		 (unsigned long long)atomic_load(&m->sync_write_bytes),
		 (unsigned long long)atomic_load(&m->sync_zero_bytes));
}

static void *sync_main(void *arg)
{
	struct mirror *m = arg;
	struct mirror_sync *s = m->sync;

	run_pass(m, s);
	pthread_mutex_lock(&s->lock);
	/* A leg added while this pass ran: recover it now (also after a
	 * cancelled scrub, but not when the mirror stops). */
	while (s->queued && (!s->stop || s->cancelled)) {
		s->queued = false;
		s->stop = false;
		s->cancelled = false;
		s->last_action = s->action;
		s->action = MIRROR_SYNC_RECOVER;
		s->err = 0;
		s->done = s->total = 0;
		pthread_mutex_unlock(&s->lock);
		mirror_update_clearing(m);
		run_pass(m, s);
		pthread_mutex_lock(&s->lock);
	}
	s->last_action = s->action;
	s->action = MIRROR_SYNC_IDLE;
	s->active = false;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	mirror_update_clearing(m);
	return NULL;
}

int mirror_sync_start(struct mirror *m, enum mirror_sync_action action, bool repair)
{
	struct mirror_sync *s = sync_of(m);
	int r;

	(void)repair;
	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	if (s->active) {
		pthread_mutex_unlock(&s->lock);
		return -EBUSY;
	}
	if (s->running) {
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
		pthread_mutex_lock(&s->lock);
		s->running = false;
	}
	s->active = true;
	s->stop = false;
	s->cancelled = false;
	s->err = 0;
	s->action = action;
	s->done = s->total = 0;
	if (action == MIRROR_SYNC_CHECK || action == MIRROR_SYNC_REPAIR)
		s->mismatches = 0;
	r = fm_thread_start(&s->thread, "fm-resync", sync_main, m);
	if (r < 0) {
		s->active = false;
		s->action = MIRROR_SYNC_IDLE;
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	s->running = true;
	pthread_mutex_unlock(&s->lock);
	mirror_update_clearing(m);
	return 0;
}

void mirror_sync_stop(struct mirror *m)
{
	struct mirror_sync *s = m->sync;
	bool running;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	s->cancelled = false;
	running = s->running;
	s->running = false;
	pthread_mutex_unlock(&s->lock);
	if (running)
		pthread_join(s->thread, NULL);
}

void mirror_sync_free(struct mirror *m)
{
	struct mirror_sync *s = m->sync;

	if (!s)
		return;
	mirror_sync_stop(m);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
	m->sync = NULL;
}

bool mirror_sync_running(struct mirror *m)
{
	struct mirror_sync *s = m->sync;
	bool r;

	if (!s)
		return false;
	pthread_mutex_lock(&s->lock);
	r = s->active;
	pthread_mutex_unlock(&s->lock);
	return r;
}

int mirror_sync_start_or_queue(struct mirror *m)
{
	struct mirror_sync *s = sync_of(m);

	if (!s)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	if (s->active) {
		s->queued = true;
		pthread_mutex_unlock(&s->lock);
		return 1;
	}
	pthread_mutex_unlock(&s->lock);
	/* Only admin calls start a pass (under admin_lock), and assembly
	 * before them: nothing can start one in between. */
	return mirror_sync_start(m, MIRROR_SYNC_RECOVER, false);
}

int mirror_sync_cancel_scrub(struct mirror *m)
{
	struct mirror_sync *s = m->sync;
	bool scrub;

	if (!s)
		return -ENOENT;
	pthread_mutex_lock(&s->lock);
	scrub = s->active && (s->action == MIRROR_SYNC_CHECK || s->action == MIRROR_SYNC_REPAIR);
	if (scrub) {
		s->stop = true;
		s->cancelled = true;
	}
	pthread_mutex_unlock(&s->lock);
	return scrub ? 0 : -ENOENT;
}

void mirror_sync_status(struct mirror *m, struct mirror_status *st)
{
	struct mirror_sync *s = m->sync;

	st->sync_speed_min = m->sync_speed_min;
	st->sync_speed_max = m->sync_speed_max;
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	st->action = s->active ? s->action : MIRROR_SYNC_IDLE;
	st->last_action = s->last_action;
	st->sync_done = s->done;
	st->sync_total = s->total;
	st->sync_speed = s->active ? s->speed : 0;
	if (!s->speed && s->active && s->done) {
		uint64_t dt = fm_now_ns() - s->started_ns;

		st->sync_speed = dt ? s->done * 1000000000ull / dt : 0;
	}
	st->sync_eta_s = st->sync_speed && s->total > s->done ?
			 (s->total - s->done) / st->sync_speed : 0;
	st->mismatches = s->mismatches;
	st->resynced_regions = s->resynced_regions;
	pthread_mutex_unlock(&s->lock);
}
