/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mirror's data path: fan-out writes, balanced reads with fail-over and
 * repair, ordering of overlapping writes, copies (resync, recovery, repair)
 * and scrubs, flush, discard.
 *
 * Invariants:
 *   - Every write, discard, write-zeroes, copy and scrub is on the active
 *     list (m->active_head..tail, in submission order) from its start to
 *     its completion.  It is issued to the legs only when no request BEFORE
 *     it on the list overlaps it; so two overlapping writes reach every leg
 *     in submission order, a copy never interleaves with a write of the
 *     same sectors, and a later request never overtakes an earlier one.
 *   - `issued` and the list links change only under order_lock; the dmio
 *     submission itself happens after the lock is dropped.
 *   - No data write is issued before the bitmap bits of its regions are on
 *     disk (mbitmap_start_write), and every started write ends the bitmap
 *     accounting exactly once.
 *   - A leg's dev is used only between leg_get() and leg_put().
 *   - A write that failed on some leg is acknowledged only once the
 *     superblocks recording that leg as faulty are on disk (see state.c):
 *     after a crash, the failed leg can never be taken for current.
 *   - A request's iovec array belongs to the request (copied at submission)
 *     and lives until its completion, as dmio needs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mirror_i.h"

G_DEFINE_QUARK(fm-mirror-error-quark, fm_mirror_error)

/* Free requests kept for reuse, so the hot path rarely mallocs. */
#define MIRROR_FREE_MAX 512
/* Sectors of a checksummed block (copies are written block by block). */
#define BLK_SECTORS (FM_SB_CSUM_BLOCK_SIZE >> FM_SECTOR_SHIFT)

struct mirror *mirror_alloc(void)
{
	struct mirror *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->wide.next = m->wide.prev = &m->wide;
	pthread_mutex_init(&m->order_lock, NULL);
	pthread_mutex_init(&m->free_lock, NULL);
	pthread_mutex_init(&m->state_lock, NULL);
	pthread_mutex_init(&m->admin_lock, NULL);
	pthread_cond_init(&m->state_cond, NULL);
	pthread_mutex_init(&m->rc_lock, NULL);
	{
		pthread_condattr_t ca;  /* reconnect.c waits on CLOCK_MONOTONIC */

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->rc_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	atomic_init(&m->sync_src, -1);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		atomic_init(&m->legs[i].next_sector, UINT64_MAX);
		pthread_mutex_init(&m->legs[i].err_lock, NULL);
		mirror_leg_errors_reset(&m->legs[i]);
	}
	return m;
}

void mirror_free(struct mirror *m)
{
	if (!m)
		return;
	mirror_reconnect_stop(m);
	mirror_sync_free(m);
	mbitmap_destroy(m->bitmap);
	mcsum_free(m);
	g_free(m->ro_written);
	free(m->unsynced_retired);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		dmio_dev_close(m->legs[i].dev);
		free(m->legs[i].path);
		pthread_mutex_destroy(&m->legs[i].err_lock);
	}
	while (m->free_reqs) {
		struct mreq *r = m->free_reqs;

		m->free_reqs = r->next_free;
		free(r);
	}
	free(atomic_load(&m->unsynced));
	dmio_client_destroy(m->client);
	pthread_mutex_destroy(&m->order_lock);
	pthread_mutex_destroy(&m->free_lock);
	pthread_mutex_destroy(&m->state_lock);
	pthread_mutex_destroy(&m->admin_lock);
	pthread_cond_destroy(&m->state_cond);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		free(m->rc[i].uri);
	pthread_mutex_destroy(&m->rc_lock);
	pthread_cond_destroy(&m->rc_cond);
	free(m);
}

bool leg_get(struct mirror_leg *leg, unsigned states)
{
	atomic_fetch_add(&leg->inflight, 1);
	if ((states & (1u << leg_state(leg))) && leg->dev)
		return true;
	atomic_fetch_sub(&leg->inflight, 1);
	return false;
}

void leg_put(struct mirror_leg *leg)
{
	atomic_fetch_sub_explicit(&leg->inflight, 1, memory_order_release);
}

int mirror_pick_source(struct mirror *m)
{
	int wm = -1;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (leg_state(&m->legs[i]) != FM_LEG_IN_SYNC)
			continue;
		if (!atomic_load(&m->legs[i].write_mostly))
			return (int)i;
		if (wm < 0)
			wm = (int)i;
	}
	return wm;
}

bool mirror_region_unsynced(struct mirror *m, uint64_t sector, uint64_t count)
{
	uint64_t *bits = atomic_load_explicit(&m->unsynced, memory_order_acquire);

	if (!bits)
		return false;
	for (uint64_t g = sector >> m->region_shift; g <= (sector + count - 1) >> m->region_shift;
	     g++) {
		uint64_t w = atomic_load_explicit((_Atomic uint64_t *)&bits[g / 64],
						  memory_order_relaxed);

		if (w & (1ull << (g % 64)))
			return true;
	}
	return false;
}

/* On a loop, from and to its object cache first (no lock: free_lock is
 * shared by every loop, see dmio_loop_cache_get()). */
static struct mreq *mreq_alloc(struct mirror *m)
{
	struct mreq *r = dmio_loop_cache_get(sizeof(*r));

	if (r)
		return r;
	pthread_mutex_lock(&m->free_lock);
	r = m->free_reqs;
	if (r) {
		m->free_reqs = r->next_free;
		m->nr_free--;
	}
	pthread_mutex_unlock(&m->free_lock);
	if (!r)
		r = malloc(sizeof(*r));
	return r;
}

static void mreq_free(struct mreq *r)
{
	struct mirror *m = r->m;

	if (r->iov != r->iov_inline)
		free(r->iov);
	free(r->buf);
	r->buf = NULL;
	if (dmio_loop_cache_put(sizeof(*r), r))
		return;
	pthread_mutex_lock(&m->free_lock);
	if (m->nr_free < MIRROR_FREE_MAX) {
		r->next_free = m->free_reqs;
		m->free_reqs = r;
		m->nr_free++;
		r = NULL;
	}
	pthread_mutex_unlock(&m->free_lock);
	free(r);
}

/*----------------------------------------------------------------*/
/* Reads */

static void read_done(unsigned long error_bits, void *context);

/* What the read policy looks at: the range, and the legs tried already. */
struct read_pick {
	uint64_t sector, count, tried;
};

/* May leg @i serve read @r?  (Not tried yet, in sync; during a resync, an
 * out-of-sync region is read from the resync source only, so that two
 * reads of it cannot return different data; a write-mostly leg only when
 * @wm, the second round; never a leg whose copy is in the bad-block
 * list.) */
static bool read_candidate(struct mirror *m, const struct read_pick *r, unsigned i, int only,
			   bool wm)
{
	const struct mirror_leg *leg = &m->legs[i];

	return !(r->tried & (1ull << i)) && leg_state(leg) == FM_LEG_IN_SYNC &&
	       (only < 0 || (unsigned)only == i) &&
	       (wm || !atomic_load_explicit(&leg->write_mostly, memory_order_relaxed)) &&
	       !mirror_leg_bad(m, i, r->sector, r->count);
}

/* One round of the read policy over the candidates (see read_candidate). */
static int pick_read_leg_round(struct mirror *m, const struct read_pick *r, int only,
			       bool wm)
{
	int best = -1;
	unsigned best_pending = ~0u;
	unsigned start, n = m->nr_legs;

	switch (m->read_policy) {
	case MIRROR_READ_FIRST:
		for (unsigned i = 0; i < n; i++)
			if (read_candidate(m, r, i, only, wm))
				return (int)i;
		return -1;
	case MIRROR_READ_ROUND_ROBIN:
		start = atomic_fetch_add_explicit(&m->rr, 1, memory_order_relaxed);
		for (unsigned k = 0; k < n; k++) {
			unsigned i = (start + k) % n;

			if (read_candidate(m, r, i, only, wm))
				return (int)i;
		}
		return -1;
	case MIRROR_READ_BALANCE:
		break;
	}
	/* Sequential affinity: the leg whose last read ended here keeps the
	 * stream (its readahead and its head position are worth more than an
	 * even spread); otherwise the leg with the fewest reads in flight,
	 * ties broken by rotation so that idle legs share the load. */
	start = atomic_load_explicit(&m->rr, memory_order_relaxed);
	for (unsigned k = 0; k < n; k++) {
		unsigned i = (start + k) % n;
		struct mirror_leg *leg = &m->legs[i];
		unsigned pending;

		if (!read_candidate(m, r, i, only, wm))
			continue;
		if (atomic_load_explicit(&leg->next_sector, memory_order_relaxed) == r->sector)
			return (int)i;
		pending = atomic_load_explicit(&leg->pending, memory_order_relaxed);
		if (pending < best_pending) {
			best = (int)i;
			best_pending = pending;
		}
	}
	if (best >= 0 && best_pending == 0)
		atomic_fetch_add_explicit(&m->rr, 1, memory_order_relaxed);
	return best;
}

/* Choose the leg for a read of @r not yet tried; -1 when none is left.
 * Write-mostly legs only when no other leg can serve it. */
static int pick_read_leg(struct mirror *m, const struct read_pick *r, int only)
{
	int li = pick_read_leg_round(m, r, only, false);

	return li >= 0 ? li : pick_read_leg_round(m, r, only, true);
}

static int issue_read(struct mreq *r)
{
	struct mirror *m = r->m;
	int only = -1, li;
	struct mirror_leg *leg;
	struct dmio_region where;
	struct dmio_request dr = {
		.op = DMIO_OP_READ,
		.mem = { .type = DMIO_MEM_BVEC, .ptr.bvec = { r->iov, r->iovcnt } },
		.notify_fn = read_done,
		.notify_context = r,
		.client = m->client,
	};
	int ret;

	if (mirror_region_unsynced(m, r->sector, r->count)) {
		only = atomic_load(&m->sync_src);
		/* The source left the array: the next in-sync leg is the
		 * source now (a pass that copied from the old one goes on
		 * from the legs still in sync: the test of this). */
		if (only >= 0 && leg_state(&m->legs[only]) != FM_LEG_IN_SYNC) {
			int src = mirror_pick_source(m);

			/* (failing, `only` becomes what another thread chose) */
			if (atomic_compare_exchange_strong(&m->sync_src, &only, src))
				only = src;
		}
		/* The source failed it: any version is one the crash could
		 * have left; the copy that follows makes the legs agree. */
		if (only >= 0 && (r->tried & (1ull << only)))
			only = -1;
	}
	for (;;) {
		li = pick_read_leg(m, &(struct read_pick){ r->sector, r->count, r->tried }, only);
		if (li < 0)
			return -EIO;
		leg = &m->legs[li];
		r->tried |= 1ull << li;
		if (leg_get(leg, LEG_READABLE))
			break;
	}
	r->leg = (unsigned)li;
	where = (struct dmio_region){ leg->dev, m->data_sector + r->sector, r->count };
	atomic_fetch_add_explicit(&leg->pending, 1, memory_order_relaxed);
	atomic_store_explicit(&leg->next_sector, r->sector + r->count, memory_order_relaxed);
	ret = dmio(&dr, 1, &where, NULL);
	if (ret < 0) {
		atomic_fetch_sub_explicit(&leg->pending, 1, memory_order_relaxed);
		leg_put(leg);
	}
	return ret;
}

/*
 * Read errors: when does a leg that fails reads go out of service?
 *
 * Every read error is first "unverified": the read was served by another
 * leg and the bad copy is being rewritten.  When the rewrite reads back
 * right, the error is corrected (read_error_corrected()): the copy is good
 * again, and the error moves to the corrected count.  A leg fails when
 *   - its unverified errors reach max_read_errors (md's count: rewrites
 *     that failed, re-reads that failed again, errors that could not be
 *     repaired), or
 *   - its corrected errors reach max_read_errors AND exceed
 *     max_read_error_ppm of its reads: a disk whose every error is fixed
 *     by a rewrite stays in service unless it errs on too large a share of
 *     its reads (its error rate, not a count, says it is going).
 * Both counts (and the reads the rate is taken against) halve every
 * read_error_decay (md halves read_errors hourly), so errors spread over
 * a long time never add up to a failure.  A rewrite that reads back
 * different data fails the leg at once (copy_verify_done()).
 */
void mirror_leg_errors_reset(struct mirror_leg *leg)
{
	pthread_mutex_lock(&leg->err_lock);
	leg->err_unverified = 0;
	leg->err_corrected = 0;
	leg->err_reads_hist = 0;
	leg->err_reads_base = atomic_load(&leg->reads);
	leg->err_decay_ns = fm_now_ns();
	pthread_mutex_unlock(&leg->err_lock);
}

/* Halve the counts once per period gone by.  err_lock held. */
static void leg_errors_decay_locked(struct mirror *m, struct mirror_leg *leg)
{
	uint64_t now = fm_now_ns(), reads = atomic_load(&leg->reads), k;

	if (!m->read_error_decay_ns || now - leg->err_decay_ns < m->read_error_decay_ns)
		return;
	k = (now - leg->err_decay_ns) / m->read_error_decay_ns;
	leg->err_decay_ns += k * m->read_error_decay_ns;
	if (k > 63)
		k = 63;
	leg->err_unverified >>= k < 32 ? k : 31;
	leg->err_corrected >>= k;
	leg->err_reads_hist = (leg->err_reads_hist + reads - leg->err_reads_base) >> k;
	leg->err_reads_base = reads;
}

/*
 * After a read error of leg @li: is its file now shorter than its
 * superblock says it is (truncated behind us)?  Then it fails at once,
 * while another leg is in sync: what was cut off is gone, and repairing it
 * block by block would not do (a rewrite past the new end extends the
 * file, and what lies between reads back as zeroes, with no error to
 * repair).  The last leg in sync stays: its reads keep failing (or
 * repairing nothing), as with any error on it.  A block device, or a
 * remote leg, is not checked.  True: the leg failed.
 */
static bool leg_shrunk(struct mirror *m, unsigned li)
{
	struct mirror_leg *leg = &m->legs[li];
	uint64_t need = fm_sb_leg_bytes(&leg->sb);
	struct stat st;
	int fd;

	if (!leg->dev || (fd = dmio_dev_fd(leg->dev)) < 0 || fstat(fd, &st) < 0 ||
	    !S_ISREG(st.st_mode) || (uint64_t)st.st_size >= need || mirror_in_sync_count(m) < 2)
		return false;
	g_autofree char *what = g_strdup_printf(
		"its file shrank behind the daemon: %llu bytes, of the %llu its superblock needs",
		(unsigned long long)st.st_size, (unsigned long long)need);

	mirror_leg_failed(m, li, what, -EIO);
	return true;
}

/* Count a read error of leg @li (unverified); fail the leg at
 * max_read_errors of them, or when its file shrank (leg_shrunk()). */
static void read_error(struct mirror *m, unsigned li, uint64_t sector, uint64_t count)
{
	struct mirror_leg *leg = &m->legs[li];
	unsigned n;

	MIRROR_STAT_ADD(leg->read_errors, 1);
	atomic_store_explicit(&leg->next_sector, UINT64_MAX, memory_order_relaxed);
	pthread_mutex_lock(&leg->err_lock);
	leg_errors_decay_locked(m, leg);
	n = ++leg->err_unverified;
	pthread_mutex_unlock(&leg->err_lock);
	mirror_event_detail(m, FM_EVENT_READ_ERROR, (int)li, sector << FM_SECTOR_SHIFT, EIO,
			    "read of sectors %llu+%llu failed (%u of %u uncorrected read errors "
			    "allowed)", (unsigned long long)sector, (unsigned long long)count, n,
			    m->max_read_errors);
	if (n >= m->max_read_errors)
		mirror_leg_failed(m, li, "too many read errors not corrected", -EIO);
	else
		leg_shrunk(m, li);
}

/* A read error of leg @li was corrected: its copy was rewritten and read
 * back right.  Fail the leg when its corrected errors are too many a share
 * of its reads. */
static void read_error_corrected(struct mirror *m, unsigned li)
{
	struct mirror_leg *leg = &m->legs[li];
	uint64_t corrected, reads;
	bool fail;

	pthread_mutex_lock(&leg->err_lock);
	leg_errors_decay_locked(m, leg);
	if (leg->err_unverified)
		leg->err_unverified--;
	corrected = ++leg->err_corrected;
	reads = leg->err_reads_hist + atomic_load(&leg->reads) - leg->err_reads_base;
	fail = corrected >= m->max_read_errors &&
	       corrected * 1000000 > reads * (uint64_t)m->max_read_error_ppm;
	pthread_mutex_unlock(&leg->err_lock);
	if (fail) {
		g_autofree char *what = g_strdup_printf(
			"read error rate too high: %llu corrected read errors in %llu reads, "
			"more than %g%%", (unsigned long long)corrected,
			(unsigned long long)reads, m->max_read_error_ppm / 1e4);

		mirror_leg_failed(m, li, what, -EIO);
	}
}

static void repair_done(void *ctx, int err, uint64_t mismatch)
{
	(void)ctx;
	(void)err;
	(void)mismatch;
}

static int start_copy(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count,
		      unsigned src, uint64_t targets, unsigned flags, mreq_copy_fn fn,
		      void *ctx, struct mreq *client);

/* The checked read of a client read ended: its data (when err is 0) is in
 * the client's memory. */
static void read_check_done(void *ctx, int err, uint64_t mismatch)
{
	struct mreq *r = ctx;
	struct mirror *m = r->m;
	mirror_end_io_fn end_io = r->end_io;
	void *uctx = r->ctx;

	(void)mismatch;
	if (err) {
		mirror_event_detail(m, FM_EVENT_IO_ERROR, -1, r->sector << FM_SECTOR_SHIFT, EIO,
				    "read of sectors %llu+%llu: no copy verifies against its "
				    "checksum", (unsigned long long)r->sector,
				    (unsigned long long)r->count);
		MIRROR_STAT_ADD(m->errors, 1);
		err = -EIO;
	}
	mreq_free(r);
	end_io(uctx, err);
}

/*
 * A read's data failed verification.  It may be a copy gone bad, or a
 * write to those blocks in flight (reads are not ordered against writes:
 * the data and the table may be of different writes).  Read them again as
 * a scrub, which is ordered against writes: every leg is read, each block
 * is taken from a copy that verifies, bad copies are rewritten; the client
 * gets the verified data, or EIO when no copy verifies.
 */
static void read_check(struct mreq *r)
{
	struct mirror *m = r->m;
	unsigned flags = 0;
	int ret;

	if (!m->readonly && atomic_load(&m->in_use))
		flags |= COPY_REPAIR;
	/* (only the blocks of unsynced regions: scrub_compare_csum()) */
	if (mirror_region_unsynced(m, r->sector, r->count))
		flags |= COPY_RESYNC;
	ret = start_copy(m, MREQ_SCRUB, r->sector, r->count, r->leg, 0, flags, read_check_done,
			 r, r);
	if (ret < 0)
		read_check_done(r, ret, 0);
}

static void read_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;
	struct mirror_leg *leg = &m->legs[r->leg];
	mirror_end_io_fn end_io = r->end_io;
	void *ctx = r->ctx;
	int err = 0;

	atomic_fetch_sub_explicit(&leg->pending, 1, memory_order_relaxed);
	/* Before the reference goes: read_error() looks at the leg's device
	 * (leg_shrunk()) and path, which a retire waiting for the leg's
	 * references would free. */
	if (error_bits) {
		r->bad |= 1ull << r->leg;
		read_error(m, r->leg, r->sector, r->count);
	}
	leg_put(leg);
	MIRROR_STAT_ADD(leg->reads, 1);
	if (!error_bits) {
		MIRROR_STAT_ADD(leg->read_bytes, r->count << FM_SECTOR_SHIFT);
		if (m->csum && mcsum_verify_iov(m, r->sector, r->count, r->iov, r->iovcnt) >= 0) {
			read_check(r);
			return;
		}
		if (r->bad) {
			/* Served by another leg: rewrite the bad copies from
			 * this one (ordered against writes, then verified). */
			MIRROR_STAT_ADD(m->read_retries, 1);
			if (!m->readonly && atomic_load(&m->in_use))
				mirror_start_copy(m, MREQ_COPY, r->sector, r->count, r->leg,
						  r->bad, COPY_VERIFY | COPY_READ_ERROR,
						  repair_done, NULL);
		}
	} else {
		if (issue_read(r) == 0)
			return;
		mirror_event_detail(m, FM_EVENT_IO_ERROR, -1, r->sector << FM_SECTOR_SHIFT, EIO,
				    "read of sectors %llu+%llu failed on every leg",
				    (unsigned long long)r->sector, (unsigned long long)r->count);
		MIRROR_STAT_ADD(m->errors, 1);
		err = -EIO;
	}
	mreq_free(r);
	end_io(ctx, err);
}

/*----------------------------------------------------------------*/
/* Writes, discards: ordered */

static void write_done(unsigned long error_bits, void *context);
static void copy_write_done(unsigned long error_bits, void *context);

static bool overlaps(const struct mreq *a, const struct mreq *b)
{
	return a->sector < b->sector + b->count && b->sector < a->sector + a->count;
}

/* Build the regions [sector, sector + count) of the writable legs of
 * @mask, each with a reference (leg_get); returns how many and records
 * their legs in @r.  *@ret_in_sync gets the legs that were in sync. */
static unsigned write_regions(struct mirror *m, struct mreq *r, uint64_t mask,
			      struct dmio_region *where, uint64_t sector, uint64_t count,
			      uint64_t *ret_in_sync)
{
	unsigned n = 0;
	uint64_t in_sync = 0;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];

		if (!(mask & (1ull << i)) || !leg_get(leg, LEG_WRITABLE))
			continue;
		if (leg_state(leg) == FM_LEG_IN_SYNC)
			in_sync |= 1ull << i;
		where[n] = (struct dmio_region){ leg->dev, m->data_sector + sector, count };
		r->region_leg[n++] = (uint8_t)i;
	}
	r->nr_regions = n;
	*ret_in_sync = in_sync;
	return n;
}

static void issue_write(struct mreq *r);
static void copy_step(struct mreq *r);

static void bm_ready(void *ctx, int err)
{
	struct mreq *r = ctx;

	r->bm_err = err;
	if (r->op == MREQ_COPY || r->op == MREQ_SCRUB)
		copy_step(r);
	else
		issue_write(r);
}

/* May @r write now?  The first call accounts it in the bitmap; false: the
 * bits are being written, bm_ready() calls back. */
static bool bm_gate(struct mreq *r)
{
	struct mirror *m = r->m;

	if (!m->bitmap || r->bm_started)
		return true;
	r->bm_started = true;
	r->bmw.fn = bm_ready;
	r->bmw.ctx = r;
	/* Only data makes a region written: a discard, write-zeroes or copy
	 * leaves what an unwritten region holds (zeroes; copies of them). */
	r->bmw.mark_written = r->op == MREQ_WRITE;
	return mbitmap_start_write(m->bitmap, r->sector, r->count, &r->bmw);
}

static void issue_write(struct mreq *r)
{
	struct mirror *m = r->m;
	struct dmio_region where[DMIO_MAX_REGIONS];
	struct dmio_request dr = {
		.notify_fn = write_done,
		.notify_context = r,
		.client = m->client,
	};
	unsigned n;
	int ret;

	if (r->op == MREQ_COPY || r->op == MREQ_SCRUB) {
		copy_step(r);
		return;
	}
	if (!bm_gate(r))
		return;
	if (r->bm_err) {
		r->nr_regions = 0;
		r->targets = 0;
		write_done(0, r);
		return;
	}
	if (m->csum) {
		if (r->op == MREQ_WRITE)
			mcsum_update_iov(m, r->sector, r->count, r->iov, r->iovcnt);
		else
			mcsum_set_zero(m, r->sector, r->count);
	}
	switch (r->op) {
	case MREQ_WRITE:
		dr.op = DMIO_OP_WRITE;
		dr.flags = (r->flags & MIRROR_IO_FUA) ? DMIO_REQ_FUA : 0;
		dr.mem = (struct dmio_memory){ .type = DMIO_MEM_BVEC,
					       .ptr.bvec = { r->iov, r->iovcnt } };
		break;
	case MREQ_DISCARD:
		dr.op = DMIO_OP_DISCARD;
		break;
	default:
		dr.op = DMIO_OP_WRITE_ZEROES;
		break;
	}
	n = write_regions(m, r, ~0ull, where, r->sector, r->count, &r->targets);
	if (n == 0) {
		write_done(0, r);       /* no leg left: the array failed */
		return;
	}
	ret = dmio(&dr, n, where, NULL);
	if (ret < 0) {
		mirror_event_detail(m, FM_EVENT_IO_ERROR, -1, r->sector << FM_SECTOR_SHIFT, -ret,
				    "cannot submit a write of sectors %llu+%llu",
				    (unsigned long long)r->sector, (unsigned long long)r->count);
		write_done(~0ul, r);
	}
}

static uint64_t chunk_of(uint64_t sector)
{
	return sector >> MIRROR_CHUNK_SHIFT;
}

static struct order_node **bucket_of(struct mirror *m, uint64_t chunk)
{
	return &m->buckets[(chunk * 0x9E3779B97F4A7C15ull) >> (64 - 10)];
}

/* Is there an active request submitted before @r that overlaps it?
 * Called with order_lock held. */
static bool blocked_locked(struct mirror *m, const struct mreq *r)
{
	if (r->nr_nodes == 0) {
		/* Wide: rare (big discards); look at everything. */
		for (struct mreq *a = m->active_head; a && a != r; a = a->next)
			if (a->seq < r->seq && overlaps(a, r))
				return true;
		return false;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		uint64_t chunk = chunk_of(r->sector) + k;

		for (struct order_node *n = *bucket_of(m, chunk); n; n = n->next)
			if (n->r->seq < r->seq && overlaps(n->r, r))
				return true;
	}
	for (struct order_node *n = m->wide.next; n != &m->wide; n = n->next)
		if (n->r->seq < r->seq && overlaps(n->r, r))
			return true;
	return false;
}

static void index_add_locked(struct mirror *m, struct mreq *r)
{
	uint64_t c0 = chunk_of(r->sector), c1 = chunk_of(r->sector + r->count - 1);

	r->nr_nodes = c1 - c0 + 1 <= MIRROR_ORDER_SPAN ? (unsigned)(c1 - c0 + 1) : 0;
	if (r->nr_nodes == 0) {
		struct order_node *n = &r->node[0];

		n->r = r;
		n->next = &m->wide;
		n->prev = m->wide.prev;
		m->wide.prev->next = n;
		m->wide.prev = n;
		return;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		struct order_node **head = bucket_of(m, c0 + k), *n = &r->node[k];

		n->r = r;
		n->prev = NULL;
		n->next = *head;
		if (*head)
			(*head)->prev = n;
		*head = n;
	}
}

static void index_remove_locked(struct mirror *m, struct mreq *r)
{
	if (r->nr_nodes == 0) {
		r->node[0].prev->next = r->node[0].next;
		r->node[0].next->prev = r->node[0].prev;
		return;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		struct order_node *n = &r->node[k];

		if (n->prev)
			n->prev->next = n->next;
		else
			*bucket_of(m, chunk_of(r->sector) + k) = n->next;
		if (n->next)
			n->next->prev = n->prev;
	}
}

/*
 * Put @r on the active list and in the index; issue it now unless an
 * earlier active request overlaps it.  Called without order_lock.
 */
static void order_and_issue(struct mreq *r)
{
	struct mirror *m = r->m;
	bool blocked;

	pthread_mutex_lock(&m->order_lock);
	r->seq = ++m->order_seq;
	r->next = NULL;
	r->prev = m->active_tail;
	if (m->active_tail)
		m->active_tail->next = r;
	else
		m->active_head = r;
	m->active_tail = r;
	index_add_locked(m, r);
	blocked = blocked_locked(m, r);
	r->issued = !blocked;
	if (blocked)
		m->nr_waiting++;
	pthread_mutex_unlock(&m->order_lock);
	if (blocked)
		MIRROR_STAT_ADD(m->overlap_waits, 1);
	else
		issue_write(r);
}

/* If waiting request @w is no longer blocked, mark it issued and add it to
 * *@tail.  Called with order_lock held. */
static void try_release_locked(struct mirror *m, struct mreq *w, struct mreq ***tail)
{
	if (w->issued || blocked_locked(m, w))
		return;
	w->issued = true;
	m->nr_waiting--;
	w->next_issue = NULL;
	**tail = w;
	*tail = &w->next_issue;
}

/* Take @r off the active list and the index, and collect the waiting
 * requests that no earlier active request blocks any more.  Those @r was
 * blocking share a chunk with it (or are wide), so only they are looked at,
 * unless @r itself was wide. */
static struct mreq *order_complete(struct mreq *r)
{
	struct mirror *m = r->m;
	struct mreq *ready = NULL, **tail = &ready;

	pthread_mutex_lock(&m->order_lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		m->active_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		m->active_tail = r->prev;
	index_remove_locked(m, r);
	if (m->nr_waiting) {
		if (r->nr_nodes == 0) {
			for (struct mreq *w = m->active_head; w && m->nr_waiting; w = w->next)
				try_release_locked(m, w, &tail);
		} else {
			for (unsigned k = 0; k < r->nr_nodes && m->nr_waiting; k++) {
				uint64_t chunk = chunk_of(r->sector) + k;

				for (struct order_node *n = *bucket_of(m, chunk); n; n = n->next)
					if (overlaps(n->r, r))
						try_release_locked(m, n->r, &tail);
			}
			for (struct order_node *n = m->wide.next;
			     n != &m->wide && m->nr_waiting; n = n->next)
				if (overlaps(n->r, r))
					try_release_locked(m, n->r, &tail);
		}
	}
	pthread_mutex_unlock(&m->order_lock);
	return ready;
}

/* The end of an ordered request: bitmap accounting, the ordering list;
 * then the requests it held back are issued. */
static void order_finish(struct mreq *r)
{
	struct mirror *m = r->m;
	struct mreq *ready;

	if (r->bm_started)
		mbitmap_end_write(m->bitmap, r->sector, r->count);
	ready = order_complete(r);
	while (ready) {
		struct mreq *next = ready->next_issue;

		issue_write(ready);
		ready = next;
	}
}

static const char *op_name(enum mreq_op op)
{
	switch (op) {
	case MREQ_WRITE: return "write";
	case MREQ_DISCARD: return "discard";
	case MREQ_ZEROES: return "write-zeroes";
	case MREQ_COPY: return "copy";
	case MREQ_SCRUB: return "scrub repair";
	default: return "read";
	}
}

/* Account the completion of the regions of @r (sectors @sector + @count):
 * put the legs back, fail the legs whose bit is set in @error_bits.
 * Returns the legs that took it. */
static uint64_t regions_done(struct mreq *r, unsigned long error_bits, uint64_t sector,
			     uint64_t count)
{
	struct mirror *m = r->m;
	uint64_t ok = 0;

	for (unsigned k = 0; k < r->nr_regions; k++) {
		unsigned li = r->region_leg[k];
		struct mirror_leg *leg = &m->legs[li];

		if (error_bits & (1ul << k)) {
			g_autofree char *what = g_strdup_printf(
				"%s of sectors %llu+%llu failed", op_name(r->op),
				(unsigned long long)sector, (unsigned long long)count);

			MIRROR_STAT_ADD(leg->write_errors, 1);
			mirror_leg_failed(m, li, what, -EIO);
		} else {
			ok |= 1ull << li;
			if (r->op != MREQ_DISCARD && r->op != MREQ_ZEROES &&
			    !(r->copy_flags & COPY_ZERO)) {
				MIRROR_STAT_ADD(leg->writes, 1);
				MIRROR_STAT_ADD(leg->write_bytes, count << FM_SECTOR_SHIFT);
			}
			/* Written whole: its blocks here are good again (not a
			 * leg whose failed blocks were just recorded). */
			if (r->op != MREQ_DISCARD && !(r->nforgiven & (1ull << li)))
				mirror_bad_clear(m, li, sector, count);
		}
		leg_put(leg);
	}
	return ok;
}

bool mirror_has_written_map(const struct mirror *m)
{
	return m->bitmap && mbitmap_has_written(m->bitmap);
}

bool mirror_region_written(const struct mirror *m, uint64_t region)
{
	if (m->ro_written)
		return region < m->nr_regions && (m->ro_written[region >> 3] & (1u << (region & 7)));
	return !m->bitmap || mbitmap_written(m->bitmap, region);
}

/* Do reads know which regions were never written?  (The map, or a
 * read-only assembly's copy of it.) */
static bool reads_know_unwritten(const struct mirror *m)
{
	return m->ro_written || mirror_has_written_map(m);
}

/* How a read of [sector, sector + count) is served (read_layout()). */
enum read_layout {
	READ_WHOLE,             /* one read from one leg */
	READ_ZEROES,            /* every region it touches is unwritten */
	READ_SPLIT,             /* in pieces (read_split()) */
};

/* Does every in-sync leg have a bad block in [sector, sector + count)
 * (so that no leg can serve the whole read)? */
static bool no_leg_whole(struct mirror *m, uint64_t sector, uint64_t count)
{
	if (!atomic_load_explicit(&m->nr_bad, memory_order_acquire))
		return false;
	for (unsigned i = 0; i < m->nr_legs; i++)
		if (leg_state(&m->legs[i]) == FM_LEG_IN_SYNC &&
		    !mirror_leg_bad(m, i, sector, count))
			return false;
	return true;
}

/* Written and unwritten regions, or bad blocks on every leg, in the range
 * of a read: how to serve it; *@ret_by_bad: split at bad blocks. */
static enum read_layout read_layout(struct mirror *m, uint64_t sector, uint64_t count,
				    bool *ret_by_bad)
{
	bool written = true, unwritten = false;

	*ret_by_bad = false;
	if (reads_know_unwritten(m)) {
		written = false;
		for (uint64_t g = sector >> m->region_shift;
		     g <= (sector + count - 1) >> m->region_shift; g++) {
			if (mirror_region_written(m, g))
				written = true;
			else
				unwritten = true;
		}
		if (!written)
			return READ_ZEROES;
	}
	*ret_by_bad = no_leg_whole(m, sector, count);
	return unwritten || *ret_by_bad ? READ_SPLIT : READ_WHOLE;
}

bool mirror_whole_regions(uint64_t sector, uint64_t count, unsigned region_shift,
			  uint64_t image_sectors, uint64_t *ret_first, uint64_t *ret_end)
{
	uint64_t end = sector + count, rs = 1ull << region_shift;
	uint64_t first = sector / rs + (sector % rs != 0);
	/* The last region ends at the image's end, which may cut it short. */
	uint64_t last_end = end >= image_sectors ? (image_sectors + rs - 1) / rs : end / rs;

	if (count == 0 || first >= last_end)
		return false;
	*ret_first = first;
	*ret_end = last_end;
	return true;
}

/* The regions wholly inside [sector, sector + count) become unwritten. */
static void unwrite_whole_regions(struct mirror *m, uint64_t sector, uint64_t count)
{
	uint64_t first, end;

	if (mirror_has_written_map(m) &&
	    mirror_whole_regions(sector, count, m->region_shift,
				 m->image_size >> FM_SECTOR_SHIFT, &first, &end))
		mbitmap_unwrite(m->bitmap, first, end - 1);
}

/*
 * Bad blocks: a write or copy write that failed on some leg is retried
 * there block by block by the worker (mirror_narrow_write()) before the
 * leg is failed, when another in-sync leg took all of it (a copy's data
 * is on its source): the blocks that fail again go to the bad-block list
 * and the leg stays.  False when @r is not to be retried.
 */
static bool narrow_queue(struct mreq *r, unsigned long bits, uint64_t sector, uint64_t count)
{
	struct mirror *m = r->m;
	bool other = r->op == MREQ_COPY || r->op == MREQ_SCRUB;

	if (!bits || r->narrowed || m->readonly || !m->worker_running ||
	    (r->op != MREQ_WRITE && !other))
		return false;
	for (unsigned k = 0; k < r->nr_regions && !other; k++)
		if (!(bits & (1ul << k)) && (r->targets & (1ull << r->region_leg[k])))
			other = true;
	if (!other)
		return false;
	r->narrowed = true;
	r->nbits = bits;
	r->nsector = sector;
	r->ncount = count;
	pthread_mutex_lock(&m->state_lock);
	r->next_narrow = m->narrow_head;
	m->narrow_head = r;
	pthread_cond_broadcast(&m->state_cond);
	pthread_mutex_unlock(&m->state_lock);
	return true;
}

/* Copy bytes [sector, sector + count) of what @r writes into @buf. */
static void narrow_gather(const struct mreq *r, uint64_t sector, uint64_t count, void *buf)
{
	size_t off = (size_t)(sector - r->sector) << FM_SECTOR_SHIFT;
	size_t len = (size_t)count << FM_SECTOR_SHIFT;
	char *p = buf;

	if (r->op != MREQ_WRITE && (r->copy_flags & COPY_ZERO)) {
		memset(p, 0, len);      /* a copy of an unwritten region */
		return;
	}
	if (r->op != MREQ_WRITE) {
		memcpy(p, (const char *)r->data + off, len);
		return;
	}
	fm_iov_gather(r->iov, r->iovcnt, off, p, len);
}

void mirror_narrow_write(struct mirror *m, struct mreq *r)
{
	uint64_t lo = r->nsector, hi = lo + r->ncount;
	uint64_t b0 = lo / 8, nb = (hi + 7) / 8 - b0;
	unsigned long left = r->nbits;
	uint8_t *failed = calloc(nb, 1);
	void *buf = NULL;

	if (!failed || posix_memalign(&buf, 4096, 4096)) {
		free(failed);
		failed = NULL;
	}
	for (unsigned k = 0; k < r->nr_regions && failed; k++) {
		unsigned li = r->region_leg[k];
		struct mirror_leg *leg = &m->legs[li];
		uint64_t nfail = 0, first = 0;
		bool recorded;

		if (!(r->nbits & (1ul << k)))
			continue;
		/* A remote leg whose connection is gone: its blocks are not
		 * bad, and every retry would fail; it fails (and reconnects)
		 * in regions_done(). */
		if (mirror_leg_disconnected(leg))
			continue;
		/* Retry each 4 KiB block (the leg's reference is the
		 * request's, held until regions_done()). */
		for (uint64_t b = 0; b < nb; b++) {
			uint64_t s = (b0 + b) * 8 > lo ? (b0 + b) * 8 : lo;
			uint64_t e = (b0 + b + 1) * 8 < hi ? (b0 + b + 1) * 8 : hi;
			struct dmio_region where = { leg->dev, m->data_sector + s, e - s };

			/* FUA as the write was: a retry that went through is
			 * as durable as the other legs' copies (a FUA write
			 * in writethrough mode, or a client's). */
			struct dmio_request wr = {
				.op = DMIO_OP_WRITE,
				.flags = (r->flags & MIRROR_IO_FUA) ? DMIO_REQ_FUA : 0,
				.mem = { .type = DMIO_MEM_VM, .ptr.vma = buf },
			};

			narrow_gather(r, s, e - s, buf);
			failed[b] = dmio(&wr, 1, &where, NULL) < 0;
			if (failed[b] && !nfail++)
				first = b0 + b;
		}
		pthread_mutex_lock(&m->state_lock);
		recorded = mbad_record(&m->sb, li, failed, b0, nb) == 0;
		atomic_store_explicit(&m->nr_bad, m->sb.nr_bad, memory_order_release);
		if (recorded) {
			left &= ~(1ul << k);
			r->nforgiven |= 1ull << li;
			if (nfail)
				mirror_event_detail_locked(
					m, FM_EVENT_BAD_BLOCK, (int)li, first * FM_SB_BAD_BLOCK_SIZE,
					EIO, "%llu blocks of sectors %llu+%llu", (unsigned long long)nfail,
					(unsigned long long)lo, (unsigned long long)(hi - lo));
		}
		pthread_mutex_unlock(&m->state_lock);
		if (!nfail)
			fm_debug("leg %s: %s of sectors %llu+%llu failed, but its retry "
				 "block by block went through", leg->path, op_name(r->op),
				 (unsigned long long)lo, (unsigned long long)(hi - lo));
		else if (recorded)
			fm_debug("leg %s: %llu blocks of sectors %llu+%llu cannot be written "
				 "(the first at byte %llu); recorded in the bad-block list, "
				 "reads of them avoid this leg", leg->path,
				 (unsigned long long)nfail, (unsigned long long)lo,
				 (unsigned long long)(hi - lo),
				 (unsigned long long)(first * FM_SB_BAD_BLOCK_SIZE));
		else
			/* The leg fails in regions_done() (its Fail event). */
			fm_debug("leg %s: %llu blocks of sectors %llu+%llu cannot be written, "
				 "more than its bad-block list may hold (%d blocks a leg, %d "
				 "entries in all): the leg fails", leg->path,
				 (unsigned long long)nfail, (unsigned long long)lo,
				 (unsigned long long)(hi - lo), MIRROR_BAD_MAX_LEG, FM_SB_BAD_MAX);
	}
	free(failed);
	free(buf);
	r->nbits = left;
	/* Resumed (mirror_complete_held()) once the list is on disk. */
	pthread_mutex_lock(&m->state_lock);
	r->narrow_held = true;
	r->held_err = 0;
	r->held_gen = mirror_sb_request_locked(m);
	r->next_held = m->held;
	m->held = r;
	pthread_mutex_unlock(&m->state_lock);
}

static void write_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;
	mirror_end_io_fn end_io = r->end_io;
	void *ctx = r->ctx;
	uint64_t ok;

	if (narrow_queue(r, error_bits, r->sector, r->count))
		return;
	ok = regions_done(r, error_bits, r->sector, r->count);
	bool some_failed = r->nr_regions && error_bits;
	/* Done when an in-sync leg has it: a rebuilding leg alone cannot
	 * serve it back. */
	int err = (ok & r->targets) ? 0 : -EIO;

	if (err)
		MIRROR_STAT_ADD(m->errors, 1);
	/* Whole regions that now hold zeroes on every leg are unwritten
	 * again; before order_finish, while later writes into them wait. */
	if ((r->op == MREQ_DISCARD || r->op == MREQ_ZEROES) && !err && !some_failed &&
	    r->nr_regions)
		unwrite_whole_regions(m, r->sector, r->count);
	order_finish(r);
	if (some_failed && !err) {
		/* Acknowledged once the failed legs are recorded as such. */
		r->held_err = err;
		mirror_hold_write(m, r);
		return;
	}
	mreq_free(r);
	end_io(ctx, err);
}

void mirror_complete_held(struct mreq *r)
{
	mirror_end_io_fn end_io = r->end_io;
	void *ctx = r->ctx;
	int err = r->held_err;

	if (r->narrow_held) {
		/* Back from mirror_narrow_write(): finish the write with
		 * the legs that are still failing it. */
		r->narrow_held = false;
		if (r->op == MREQ_COPY || r->op == MREQ_SCRUB)
			copy_write_done(r->nbits, r);
		else
			write_done(r->nbits, r);
		return;
	}

	mreq_free(r);
	end_io(ctx, err);
}

/*----------------------------------------------------------------*/
/* Copies (resync, recovery, read repair) and scrubs: ordered like writes */

enum copy_stage { STAGE_READ, STAGE_WRITE, STAGE_VERIFY };

/* A scrub's read of one leg. */
struct scrub_sub {
	struct mreq *r;
	unsigned leg;
	bool failed;
	bool stale;             /* not read: its copy has bad blocks there */
};

static size_t copy_bytes(const struct mreq *r)
{
	return (size_t)r->count << FM_SECTOR_SHIFT;
}

static void *seg(const struct mreq *r, unsigned i)
{
	return (char *)r->buf + (size_t)i * copy_bytes(r);
}

/* A scrub's segments: one per leg it reads, and with checksums the
 * verified data. */
static unsigned scrub_nseg(const struct mreq *r)
{
	return r->scrub_legs + (r->m->csum ? 1 : 0);
}

static struct scrub_sub *scrub_subs(const struct mreq *r)
{
	return (struct scrub_sub *)seg(r, scrub_nseg(r));
}

/* Copy @r's verified data into the memory of the read it checks. */
static void deliver(struct mreq *r)
{
	struct mreq *c = r->client;
	const char *p = r->data;

	for (unsigned i = 0; i < c->iovcnt; i++) {
		memcpy(c->iov[i].iov_base, p, c->iov[i].iov_len);
		p += c->iov[i].iov_len;
	}
}

static void copy_finish(struct mreq *r, int err)
{
	mreq_copy_fn fn = r->copy_fn;
	void *ctx = r->ctx;
	uint64_t mismatch = r->mismatch;

	/* Copied from a source with bad blocks there (no other): what the
	 * targets got of them is as stale. */
	if (!err && r->op == MREQ_COPY && r->targets && !(r->copy_flags & COPY_ZERO) &&
	    mirror_leg_bad(r->m, r->leg, r->sector, r->count))
		mirror_bad_inherit(r->m, r->leg, r->targets, r->sector, r->count);

	if (r->client) {
		/* A checked read: EIO unless every block verified somewhere. */
		if (!err && (r->unverified || !r->data))
			err = -EIO;
		if (!err)
			deliver(r);
	}

	order_finish(r);
	mreq_free(r);
	fn(ctx, err, mismatch);
}

static void copy_read_done(unsigned long error_bits, void *context);
static void copy_write_done(unsigned long error_bits, void *context);
static void copy_verify_done(unsigned long error_bits, void *context);
static void scrub_read_done(unsigned long error_bits, void *context);
static void copy_fall_back_to_compare(struct mreq *r);

/* I/O of sectors @sector + @count of leg @li (a reference held). */
static int copy_io(struct mreq *r, enum dmio_op op, unsigned li, uint64_t sector,
		   uint64_t count, void *buf, dmio_notify_fn fn, void *context)
{
	struct mirror *m = r->m;
	struct mirror_leg *leg = &m->legs[li];
	struct dmio_region where = { leg->dev, m->data_sector + sector, count };
	struct dmio_request dr = {
		.op = op,
		.mem = { .type = DMIO_MEM_VM, .ptr.vma = buf },
		.notify_fn = fn,
		.notify_context = context,
		.client = m->client,
	};

	return dmio(&dr, 1, &where, NULL);
}

static int copy_buf_alloc(struct mreq *r);

/* Read the source: the leg asked for, else another in-sync leg that is not
 * a target; one without bad blocks there first (else the targets inherit
 * its bad blocks, copy_finish()). */
static void copy_read(struct mreq *r)
{
	struct mirror *m = r->m;

	if (r->copy_flags & COPY_ZERO) {
		/* Decided now that no earlier write overlaps: a write into the
		 * region marked it written before it was issued. */
		if (!mirror_region_written(m, r->sector >> m->region_shift)) {
			r->data = NULL;
			r->stage = STAGE_WRITE;
			copy_step(r);
			return;
		}
		r->copy_flags &= ~COPY_ZERO;
		if (copy_buf_alloc(r) < 0) {
			copy_finish(r, -ENOMEM);
			return;
		}
	}
	for (;;) {
		int li = -1;

		for (int pass = 0; li < 0 && pass < 2; pass++) {
			if (!(r->tried & (1ull << r->leg)) &&
			    (pass || !mirror_leg_bad(m, r->leg, r->sector, r->count)))
				li = (int)r->leg;
			for (unsigned i = 0; li < 0 && i < m->nr_legs; i++)
				if (!(r->tried & (1ull << i)) && !(r->targets & (1ull << i)) &&
				    leg_state(&m->legs[i]) == FM_LEG_IN_SYNC &&
				    (pass || !mirror_leg_bad(m, i, r->sector, r->count)))
					li = (int)i;
		}
		if (li < 0) {
			/* Reported by whoever asked for the copy (a client
			 * read's IOError, the sync action's end). */
			fm_debug("image: sectors %llu+%llu cannot be read from any leg",
				 (unsigned long long)r->sector, (unsigned long long)r->count);
			copy_finish(r, -EIO);
			return;
		}
		r->tried |= 1ull << li;
		r->leg = (unsigned)li;
		if (!leg_get(&m->legs[li], LEG_READABLE))
			continue;
		if (copy_io(r, DMIO_OP_READ, (unsigned)li, r->sector, r->count, seg(r, 0),
			    copy_read_done, r) == 0)
			return;
		leg_put(&m->legs[li]);
	}
}

static void copy_read_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;

	if (error_bits) {
		/* (with the leg's reference: see read_done()) */
		read_error(m, r->leg, r->sector, r->count);
		leg_put(&m->legs[r->leg]);
		copy_read(r);
		return;
	}
	leg_put(&m->legs[r->leg]);
	MIRROR_STAT_ADD(m->legs[r->leg].reads, 1);
	MIRROR_STAT_ADD(m->legs[r->leg].read_bytes, copy_bytes(r));
	if (r->copy_flags & COPY_SYNC)
		MIRROR_STAT_ADD(m->sync_read_bytes, copy_bytes(r));
	if (m->csum) {
		struct iovec v = { seg(r, 0), copy_bytes(r) };

		/* A copy (resync, rebuild, read repair) copies only a source
		 * that verifies; else every in-sync copy is compared block by
		 * block.  A read repair's source is the leg that served the
		 * verified read, but when its re-read fails copy_read() takes
		 * another in-sync leg, whose copy nothing verified yet. */
		if (mcsum_verify_iov(m, r->sector, r->count, &v, 1) >= 0) {
			copy_fall_back_to_compare(r);
			return;
		}
	}
	r->data = seg(r, 0);
	r->stage = STAGE_WRITE;
	copy_step(r);
}

/* Make the first run at or after sector @from of @r current (see
 * struct mreq.blk_mask); false when no block from there is to be written
 * to a leg still in r->targets. */
static bool run_next(struct mreq *r, uint64_t from)
{
	uint64_t nb = r->count / BLK_SECTORS, b, e, mask;

	if (!r->blk_mask) {
		if (from != r->sector || !r->targets)
			return false;
		r->run_sector = r->sector;
		r->run_count = r->count;
		r->run_mask = r->targets;
		return true;
	}
	for (b = (from - r->sector) / BLK_SECTORS; b < nb && !(r->blk_mask[b] & r->targets); b++)
		;
	if (b >= nb)
		return false;
	mask = r->blk_mask[b] & r->targets;
	for (e = b + 1; e < nb && (r->blk_mask[e] & r->targets) == mask; e++)
		;
	r->run_sector = r->sector + b * BLK_SECTORS;
	r->run_count = (e - b) * BLK_SECTORS;
	r->run_mask = mask;
	return true;
}

/* The current run's place in a segment of @r. */
static size_t run_off(const struct mreq *r)
{
	return (size_t)(r->run_sector - r->sector) << FM_SECTOR_SHIFT;
}

static void copy_write_run(struct mreq *r)
{
	struct mirror *m = r->m;
	struct dmio_region where[DMIO_MAX_REGIONS];
	struct dmio_request dr = {
		.op = DMIO_OP_WRITE,
		.mem = { .type = DMIO_MEM_VM,
			 .ptr.vma = r->data ? (char *)r->data + run_off(r) : NULL },
		.notify_fn = copy_write_done,
		.notify_context = r,
		.client = m->client,
	};
	uint64_t in_sync;
	unsigned n = write_regions(m, r, r->run_mask, where, r->run_sector, r->run_count,
				   &in_sync);

	if (r->copy_flags & COPY_ZERO) {
		/* An unwritten region: the targets get zeroes, as the others
		 * hold; by unmapping (a file stays sparse). */
		dr.op = DMIO_OP_DISCARD;
	}
	if (n == 0 || dmio(&dr, n, where, NULL) < 0)
		copy_write_done(n ? ~0ul : 0, r);
}

/* Write r->data to r->targets, run by run: only the blocks that differ. */
static void copy_write(struct mreq *r)
{
	/* Zeroes for rebuilding legs only: nothing a crash could leave
	 * different on in-sync legs, so no bitmap bit (a rebuild that stops
	 * starts again from its checkpoint). */
	if (!(r->copy_flags & COPY_ZERO) && !bm_gate(r))
		return;
	if (r->bm_err) {
		copy_finish(r, r->bm_err);
		return;
	}
	if (!run_next(r, r->sector)) {
		copy_finish(r, 0);
		return;
	}
	copy_write_run(r);
}

static void copy_write_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	uint64_t ok;

	if (narrow_queue(r, error_bits, r->run_sector, r->run_count))
		return;
	ok = regions_done(r, error_bits, r->run_sector, r->run_count);
	/* Each run is retried on its own. */
	r->narrowed = false;
	r->nforgiven = 0;

	/* A leg that did not take a run gets no more of this request. */
	r->targets &= ~r->run_mask | ok;
	if (r->copy_flags & COPY_SYNC)
		MIRROR_STAT_ADD(*((r->copy_flags & COPY_ZERO) ? &r->m->sync_zero_bytes :
				  &r->m->sync_write_bytes), (uint64_t)__builtin_popcountll(ok) *
				(r->run_count << FM_SECTOR_SHIFT));
	if (run_next(r, r->run_sector + r->run_count)) {
		copy_write_run(r);
		return;
	}
	if ((r->copy_flags & COPY_VERIFY) && run_next(r, r->sector)) {
		r->stage = STAGE_VERIFY;
		r->done_mask = 0;
		copy_step(r);
		return;
	}
	copy_finish(r, 0);
}

static void *verify_seg(const struct mreq *r, unsigned li)
{
	return (char *)(r->op == MREQ_SCRUB ? seg(r, li) : seg(r, 1)) + run_off(r);
}

/* Re-read the rewritten runs of the legs one by one and compare. */
static void copy_verify(struct mreq *r)
{
	struct mirror *m = r->m;

	do {
		for (unsigned i = 0; i < m->nr_legs; i++) {
			uint64_t bit = 1ull << i;

			if (!(r->run_mask & r->targets & bit) || (r->done_mask & bit))
				continue;
			r->done_mask |= bit;
			/* (its blocks that would not take the data are in its
			 * bad-block list: nothing to verify) */
			if (mirror_leg_bad(m, i, r->run_sector, r->run_count))
				continue;
			if (!leg_get(&m->legs[i], LEG_WRITABLE))
				continue;
			r->vleg = i;
			if (copy_io(r, DMIO_OP_READ, i, r->run_sector, r->run_count,
				    verify_seg(r, i), copy_verify_done, r) == 0)
				return;
			leg_put(&m->legs[i]);
			mirror_leg_failed(m, i, "the verify read could not be issued", -EIO);
		}
		r->done_mask = 0;
	} while (run_next(r, r->run_sector + r->run_count));
	copy_finish(r, 0);
}

static void copy_verify_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;
	struct mirror_leg *leg = &m->legs[r->vleg];
	unsigned long long sector = r->run_sector, count = r->run_count;

	/* The leg's reference is dropped last: read_error() and
	 * mirror_leg_failed() look at its device and path (see read_done()). */
	if (error_bits) {
		/* One more read error, not corrected. */
		read_error(m, r->vleg, sector, count);
	} else if (memcmp(verify_seg(r, r->vleg), (char *)r->data + run_off(r),
			  count << FM_SECTOR_SHIFT)) {
		g_autofree char *what = g_strdup_printf(
			"rewrite did not stick: sectors %llu+%llu read back wrong",
			(unsigned long long)sector, (unsigned long long)count);

		mirror_leg_failed(m, r->vleg, what, -EIO);
	} else {
		MIRROR_STAT_ADD(leg->corrected, 1);
		/* (once per request, which may rewrite it in several runs) */
		if (r->bad & (1ull << r->vleg)) {
			r->bad &= ~(1ull << r->vleg);
			read_error_corrected(m, r->vleg);
		}
		mirror_event(m, FM_EVENT_READ_ERROR_CORRECTED, (int)r->vleg,
			     sector << FM_SECTOR_SHIFT, 0);
		fm_debug("leg %s: sectors %llu+%llu rewritten from leg %s",
			  leg->path, sector, count, m->legs[r->leg].path);
	}
	leg_put(leg);
	copy_verify(r);
}

/* Scrub: read every in-sync leg. */
static void scrub_read(struct mreq *r)
{
	struct mirror *m = r->m;
	struct scrub_sub *subs = scrub_subs(r);
	uint64_t mask = 0, stale = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < r->scrub_legs; i++) {
		if (leg_state(&m->legs[i]) != FM_LEG_IN_SYNC || !leg_get(&m->legs[i], LEG_READABLE))
			continue;
		mask |= 1ull << i;
		n++;
		if (mirror_leg_bad(m, i, r->sector, r->count))
			stale |= 1ull << i;
	}
	if (n == 0) {
		copy_finish(r, -EIO);
		return;
	}
	/* A copy with bad blocks is not compared but rewritten (unless
	 * every copy has some: then they are all read). */
	if (stale == mask)
		stale = 0;
	atomic_store(&r->subs, n);
	for (unsigned i = 0; i < r->scrub_legs; i++) {
		if (!(mask & (1ull << i)))
			continue;
		subs[i] = (struct scrub_sub){ r, i, false, (stale & (1ull << i)) != 0 };
		if (subs[i].stale ||
		    copy_io(r, DMIO_OP_READ, i, r->sector, r->count, seg(r, i), scrub_read_done,
			    &subs[i]) < 0)
			scrub_read_done(1, &subs[i]);
	}
}

static void scrub_compare(struct mreq *r);

static void scrub_read_done(unsigned long error_bits, void *context)
{
	struct scrub_sub *sub = context;
	struct mreq *r = sub->r;
	struct mirror_leg *leg = &r->m->legs[sub->leg];

	sub->failed = error_bits != 0;
	if (!sub->failed) {
		MIRROR_STAT_ADD(leg->reads, 1);
		MIRROR_STAT_ADD(leg->read_bytes, copy_bytes(r));
		if (r->copy_flags & COPY_SYNC)
			MIRROR_STAT_ADD(r->m->sync_read_bytes, copy_bytes(r));
	}
	/* Here, with the leg's reference (see read_done()), not in the
	 * compare. */
	if (sub->failed && !sub->stale)
		read_error(r->m, sub->leg, r->sector, r->count);
	leg_put(leg);
	if (atomic_fetch_sub(&r->subs, 1) == 1)
		scrub_compare(r);
}

/*
 * With checksums: per 4 KiB block, the copy that verifies (the source leg
 * r->leg first) is the right one; legs whose copy differs from it are
 * rewritten (repair), and those whose copy fails verification are counted
 * as checksum errors.  When no copy verifies: after a crash (COPY_RESYNC,
 * and the block's own region still unsynced) the source's data is taken
 * and its checksum recomputed; otherwise the block is left as it is and
 * counted unverified (a checked read fails).
 * Only the blocks to rewrite are written (r->blk_mask): a resync after a
 * crash where the legs never differed reads every copy and writes nothing.
 * A leg whose read failed gets every block, and so do r->fill.
 */
static void scrub_compare_csum(struct mreq *r)
{
	struct mirror *m = r->m;
	struct scrub_sub *subs = scrub_subs(r);
	uint64_t nb = r->count / 8, b0 = r->sector / 8, ok = 0;
	uint64_t nbad[FM_SB_MAX_LEGS] = { 0 }, first_bad[FM_SB_MAX_LEGS];
	char *good = seg(r, r->scrub_legs);
	bool may_resync = r->copy_flags & COPY_RESYNC;
	int src = -1;
	uint64_t all;
	uint32_t *crcs;

	r->targets = r->fill;
	for (unsigned i = 0; i < r->scrub_legs; i++) {
		if (subs[i].r != r)
			continue;
		if (subs[i].failed) {
			/* (read_error() was called by scrub_read_done(); a
			 * checked read of a read-only array writes nothing) */
			if (!m->readonly && atomic_load(&m->in_use)) {
				r->targets |= 1ull << i;
				if (!subs[i].stale)
					r->bad |= 1ull << i;
			}
		} else {
			ok |= 1ull << i;
			if (src < 0)
				src = (int)i;
		}
	}
	if (src < 0) {
		copy_finish(r, -EIO);
		return;
	}
	if (ok & (1ull << r->leg))
		src = (int)r->leg;
	all = r->targets;
	/* Every copy's checksums first, several blocks at a time (else one
	 * by one below). */
	crcs = malloc(nb * r->scrub_legs * sizeof(*crcs));
	for (unsigned i = 0; crcs && i < r->scrub_legs; i++)
		if (ok & (1ull << i))
			fm_crc32c_blocks(seg(r, i), FM_SB_CSUM_BLOCK_SIZE, nb, crcs + i * nb);
	for (uint64_t b = 0; b < nb; b++) {
		uint32_t want = mcsum_get(m, b0 + b), crc[FM_SB_MAX_LEGS] = { 0 };
		size_t off = b * FM_SB_CSUM_BLOCK_SIZE;
		bool verified = true;
		/* Per block: a checked read may span an unsynced region and
		 * a clean one, where a block no copy verifies is bad, not
		 * one a crash left between two writes. */
		bool resync = may_resync &&
			      mirror_region_unsynced(m, (b0 + b) * BLK_SECTORS, BLK_SECTORS);
		int g = -1;

		for (unsigned i = 0; i < r->scrub_legs; i++)
			if (ok & (1ull << i))
				crc[i] = crcs ? crcs[i * nb + b] :
					 mcsum_block_crc((char *)seg(r, i) + off);
		if (crc[src] == want)
			g = src;
		for (unsigned i = 0; g < 0 && i < r->scrub_legs; i++)
			if ((ok & (1ull << i)) && crc[i] == want)
				g = (int)i;
		if (g < 0) {
			g = src;
			verified = false;
			if (resync) {
				mcsum_set(m, b0 + b, crc[src]);
			} else {
				r->unverified++;
				mirror_event_detail(m, FM_EVENT_IO_ERROR, -1,
						    (b0 + b) * FM_SB_CSUM_BLOCK_SIZE, EILSEQ,
						    "block at byte %llu: no copy matches its "
						    "checksum", (unsigned long long)
						    ((b0 + b) * FM_SB_CSUM_BLOCK_SIZE));
			}
		}
		memcpy(good + off, (char *)seg(r, (unsigned)g) + off, FM_SB_CSUM_BLOCK_SIZE);
		for (unsigned i = 0; i < r->scrub_legs; i++) {
			if (!(ok & (1ull << i)) || i == (unsigned)g)
				continue;
			if (memcmp((char *)seg(r, i) + off, good + off, FM_SB_CSUM_BLOCK_SIZE)) {
				r->mismatch += FM_SB_CSUM_BLOCK_SIZE >> FM_SECTOR_SHIFT;
				if ((verified || resync) && (r->copy_flags & COPY_REPAIR))
					r->blk_mask[b] |= 1ull << i;
			}
			if (verified && !resync && crc[i] != want && !nbad[i]++)
				first_bad[i] = (b0 + b) * FM_SB_CSUM_BLOCK_SIZE;
		}
		r->blk_mask[b] |= all;
		r->targets |= r->blk_mask[b];
	}
	free(crcs);
	for (unsigned i = 0; i < r->scrub_legs; i++) {
		if (!nbad[i])
			continue;
		MIRROR_STAT_ADD(m->legs[i].csum_errors, nbad[i]);
		mirror_event_detail(m, FM_EVENT_CHECKSUM_ERROR, (int)i, first_bad[i], EILSEQ,
				    "%llu blocks of sectors %llu+%llu fail checksum verification%s",
				    (unsigned long long)nbad[i], (unsigned long long)r->sector,
				    (unsigned long long)r->count,
				    (r->targets & (1ull << i)) ? "; rewriting them" : "");
	}
	r->leg = (unsigned)src;
	r->data = good;
	if (!r->targets) {
		copy_finish(r, 0);
		return;
	}
	r->copy_flags |= COPY_VERIFY;
	r->stage = STAGE_WRITE;
	copy_step(r);
}

/*
 * A resync after a crash without checksums, of in-sync legs only
 * (resync.c): every copy was read; the source's is the one to keep (reads
 * of an unsynced region came from it), and only the 4 KiB blocks where
 * another copy differs are written to it (legs that failed the read get
 * every block).  Like the checksummed resync, it writes what differs, not
 * the whole chunk.  @src: the copy to keep (scrub_reference()).
 */
static void scrub_compare_blocks(struct mreq *r, unsigned src)
{
	struct scrub_sub *subs = scrub_subs(r);
	uint64_t nb = r->count / BLK_SECTORS, all = r->targets;
	const char *good = seg(r, src);

	for (uint64_t b = 0; b < nb; b++) {
		size_t off = b * FM_SB_BAD_BLOCK_SIZE;

		for (unsigned i = 0; i < r->scrub_legs; i++) {
			if (subs[i].r != r || subs[i].failed || i == src)
				continue;
			if (memcmp((const char *)seg(r, i) + off, good + off, FM_SB_BAD_BLOCK_SIZE)) {
				r->mismatch += BLK_SECTORS;
				if (r->copy_flags & COPY_REPAIR)
					r->blk_mask[b] |= 1ull << i;
			}
		}
		r->blk_mask[b] |= all;
		r->targets |= r->blk_mask[b];
	}
	r->leg = src;
	r->data = seg(r, src);
	if (!r->targets) {
		copy_finish(r, 0);
		return;
	}
	r->copy_flags |= COPY_VERIFY;
	r->stage = STAGE_WRITE;
	copy_step(r);
}

/*
 * Without checksums, the copy the others are compared with (and, to
 * repair, made equal to): the source's (r->leg: the pass's source, or the
 * leg a checked read read), else the array's sync_src (the leg reads of
 * unsynced regions go to: issue_read()), else @first, the first that
 * read.  Not simply the first: after a crash any version will do, but it
 * must be the one readers were given, or a read could return other data
 * later with no write between (a write-mostly leg 0 against sync_src 1).
 */
static int scrub_reference(const struct mreq *r, int first)
{
	const struct scrub_sub *subs = scrub_subs(r);
	int src = atomic_load(&r->m->sync_src);

	if (r->leg < r->scrub_legs && subs[r->leg].r == r && !subs[r->leg].failed)
		return (int)r->leg;
	if (src >= 0 && (unsigned)src < r->scrub_legs && subs[src].r == r && !subs[src].failed)
		return src;
	return first;
}

static void scrub_compare(struct mreq *r)
{
	struct mirror *m = r->m;
	struct scrub_sub *subs = scrub_subs(r);
	size_t bytes = copy_bytes(r), blk = bytes % 4096 ? FM_SECTOR_SIZE : 4096;
	int first = -1;

	if (m->csum) {
		scrub_compare_csum(r);
		return;
	}
	r->targets = 0;
	for (unsigned i = 0; i < r->scrub_legs; i++) {
		if (subs[i].r != r)
			continue;
		if (subs[i].failed) {
			/* Read errors (and bad blocks) are repaired in check
			 * mode too (read_error() was called: scrub_read_done()). */
			if (!subs[i].stale)
				r->bad |= 1ull << i;
			r->targets |= 1ull << i;
		} else if (first < 0) {
			first = (int)i;
		}
	}
	if (first < 0) {
		copy_finish(r, -EIO);
		return;
	}
	first = scrub_reference(r, first);
	if (r->blk_mask) {
		scrub_compare_blocks(r, (unsigned)first);
		return;
	}
	for (unsigned i = 0; i < r->scrub_legs; i++) {
		bool differs = false;

		if (i == (unsigned)first || subs[i].r != r || subs[i].failed)
			continue;
		for (size_t off = 0; off < bytes; off += blk) {
			if (memcmp((char *)seg(r, (unsigned)first) + off, (char *)seg(r, i) + off,
				   blk)) {
				r->mismatch += blk >> FM_SECTOR_SHIFT;
				differs = true;
			}
		}
		if (differs && (r->copy_flags & COPY_REPAIR))
			r->targets |= 1ull << i;
	}
	if (!r->targets) {
		copy_finish(r, 0);
		return;
	}
	r->leg = (unsigned)first;
	r->data = seg(r, (unsigned)first);
	r->copy_flags |= COPY_VERIFY;
	r->stage = STAGE_WRITE;
	copy_step(r);
}

static void copy_step(struct mreq *r)
{
	switch (r->stage) {
	case STAGE_READ:
		if (r->op == MREQ_SCRUB)
			scrub_read(r);
		else
			copy_read(r);
		break;
	case STAGE_WRITE:
		copy_write(r);
		break;
	default:
		copy_verify(r);
		break;
	}
}

int mirror_start_copy(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count,
		      unsigned src, uint64_t targets, unsigned flags, mreq_copy_fn fn,
		      void *ctx)
{
	return start_copy(m, op, sector, count, src, targets, flags, fn, ctx, NULL);
}

/* (Re)allocate the memory of copy @r for its op: the segments, and for a
 * scrub its reads and (checksums) the per-block write masks, zeroed. */
static int copy_buf_alloc(struct mreq *r)
{
	struct mirror *m = r->m;
	bool scrub = r->op == MREQ_SCRUB;
	unsigned nseg;
	size_t subs = scrub ? FM_SB_MAX_LEGS * sizeof(struct scrub_sub) : 0;
	/* Per-block write masks: a checksummed scrub, and a resync without
	 * checksums (scrub_compare_blocks()). */
	bool per_block = m->csum || ((r->copy_flags & COPY_RESYNC) &&
				     !(r->sector % BLK_SECTORS) && !(r->count % BLK_SECTORS));
	size_t masks = scrub && per_block ? r->count / BLK_SECTORS * sizeof(uint64_t) : 0;

	r->scrub_legs = scrub ? m->nr_legs : 0;
	nseg = scrub ? scrub_nseg(r) : 2;
	free(r->buf);
	r->buf = NULL;
	r->blk_mask = NULL;
	if (posix_memalign(&r->buf, 4096, nseg * copy_bytes(r) + subs + masks)) {
		r->buf = NULL;
		return -ENOMEM;
	}
	memset(seg(r, nseg), 0, subs + masks);
	if (masks)
		r->blk_mask = (uint64_t *)((char *)seg(r, nseg) + subs);
	return 0;
}

/*
 * A copy's source failed verification: do the request as a
 * repairing compare instead (each block from an in-sync copy that
 * verifies; in-sync legs get the blocks where they differ from it, the
 * rebuilding targets every block).  The request keeps its place in the
 * ordering, and its bitmap accounting has not begun.
 */
static void copy_fall_back_to_compare(struct mreq *r)
{
	struct mirror *m = r->m;
	uint64_t in_sync = 0;

	for (unsigned i = 0; i < m->nr_legs; i++)
		if (leg_state(&m->legs[i]) == FM_LEG_IN_SYNC)
			in_sync |= 1ull << i;
	fm_debug("leg %s: sectors %llu+%llu fail verification: compare every copy",
		 m->legs[r->leg].path, (unsigned long long)r->sector,
		 (unsigned long long)r->count);
	r->op = MREQ_SCRUB;
	r->fill = r->targets & ~in_sync;
	r->copy_flags |= COPY_REPAIR;
	r->tried = 0;
	r->stage = STAGE_READ;
	if (copy_buf_alloc(r) < 0) {
		copy_finish(r, -ENOMEM);
		return;
	}
	copy_step(r);
}

static int start_copy(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count,
		      unsigned src, uint64_t targets, unsigned flags, mreq_copy_fn fn,
		      void *ctx, struct mreq *client)
{
	struct mreq *r;

	if (count == 0 || sector + count > (m->image_size >> FM_SECTOR_SHIFT))
		return -EINVAL;
	r = mreq_alloc(m);
	if (!r)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->m = m;
	r->op = op;
	r->sector = sector;
	r->count = count;
	r->leg = src;
	r->targets = targets;
	r->bad = (flags & COPY_READ_ERROR) ? targets : 0;
	r->copy_flags = flags;
	r->copy_fn = fn;
	r->ctx = ctx;
	r->client = client;
	r->iov = r->iov_inline;
	if (m->csum && !mcsum_aligned(sector, count)) {
		mreq_free(r);
		return -EINVAL;
	}
	/* Zeroing an unwritten region needs memory only if it turns into a
	 * copy (copy_read()). */
	if (!(flags & COPY_ZERO) && copy_buf_alloc(r) < 0) {
		mreq_free(r);
		return -ENOMEM;
	}
	order_and_issue(r);
	return 0;
}

/*----------------------------------------------------------------*/
/* Reads one leg cannot serve whole */

/*
 * A read is served in pieces (read_layout() says when):
 *   - it touches regions never written and regions written (written-region
 *     map): only the written runs are read from a leg, the rest of the
 *     memory is zero-filled (what every leg holds there);
 *   - no in-sync leg holds the whole range outside the bad-block list: it
 *     is read in runs of 4 KiB blocks whose bad legs are the same, each
 *     from a leg whose copy of the run is good (a run that every leg has
 *     bad fails with EIO, as it would whole).
 * Each piece is an ordinary read (read policy, failover, verification
 * against checksums, repair); the client's end_io runs once, after the
 * last piece, with the first error.
 */
struct read_split {
	atomic_uint pending;            /* pieces in flight, + 1 while submitting */
	atomic_int err;                 /* the first error of a piece */
	mirror_end_io_fn end_io;
	void *ctx;
};

static void split_put(struct read_split *s)
{
	if (atomic_fetch_sub_explicit(&s->pending, 1, memory_order_acq_rel) == 1) {
		mirror_end_io_fn end_io = s->end_io;
		void *ctx = s->ctx;
		int err = atomic_load(&s->err);

		free(s);
		end_io(ctx, err);
	}
}

static void split_piece_done(void *ctx, int err)
{
	struct read_split *s = ctx;
	int none = 0;

	if (err)
		atomic_compare_exchange_strong(&s->err, &none, err);
	split_put(s);
}

#define PIECE_ZERO UINT64_MAX   /* class of an unwritten stretch */
#define BAD_SECTORS (FM_SB_BAD_BLOCK_SIZE >> FM_SECTOR_SHIFT)

/* The class of the stretch at @sector: PIECE_ZERO (unwritten), else with
 * @by_bad the legs whose copy of its block is bad (0 without); and in
 * *@ret_end where the stretch of that class can end at the latest. */
static uint64_t piece_class(struct mirror *m, uint64_t sector, uint64_t end, bool by_bad,
			    uint64_t *ret_end)
{
	uint64_t g = sector >> m->region_shift, next = (g + 1) << m->region_shift, cls = 0;

	if (!reads_know_unwritten(m))
		next = end;
	if (reads_know_unwritten(m) && !mirror_region_written(m, g)) {
		cls = PIECE_ZERO;
	} else if (by_bad) {
		uint64_t blk_end = (sector / BAD_SECTORS + 1) * BAD_SECTORS;

		if (blk_end < next)
			next = blk_end;
		for (unsigned i = 0; i < m->nr_legs; i++)
			if (mirror_leg_bad(m, i, sector, 1))
				cls |= 1ull << i;
	}
	*ret_end = next < end ? next : end;
	return cls;
}

static struct mreq *mreq_new(struct mirror *m, enum mreq_op op, uint64_t sector,
			     uint64_t count, unsigned iovcnt, unsigned flags,
			     mirror_end_io_fn end_io, void *ctx);
static int issue_read(struct mreq *r);

/* Serve read [@sector, + @count) into @iov in pieces (see above).  Returns
 * 0 (end_io called once, maybe already) or -errno when no piece started
 * (end_io not called). */
static int read_split(struct mirror *m, uint64_t sector, uint64_t count,
		      const struct iovec *iov, unsigned iovcnt, unsigned flags, bool by_bad,
		      mirror_end_io_fn end_io, void *ctx)
{
	struct read_split *s = malloc(sizeof(*s));
	uint64_t end = sector + count, at = sector;
	unsigned started = 0;
	int first_err = 0;

	if (!s)
		return -ENOMEM;
	atomic_init(&s->pending, 1);
	atomic_init(&s->err, 0);
	s->end_io = end_io;
	s->ctx = ctx;
	while (at < end) {
		uint64_t lim, cls = piece_class(m, at, end, by_bad, &lim), to = lim;
		size_t off = (at - sector) << FM_SECTOR_SHIFT, len;
		struct mreq *r;
		int ret;

		while (to < end) {
			uint64_t lim2;

			if (piece_class(m, to, end, by_bad, &lim2) != cls)
				break;
			to = lim2;
		}
		len = (to - at) << FM_SECTOR_SHIFT;
		if (cls == PIECE_ZERO) {
			fm_iov_fill(iov, iovcnt, off, NULL, len);
			at = to;
			continue;
		}
		r = mreq_new(m, MREQ_READ, at, to - at, fm_iov_slice(iov, iovcnt, off, len, NULL),
			     flags, split_piece_done, s);
		ret = -ENOMEM;
		if (r) {
			fm_iov_slice(iov, iovcnt, off, len, r->iov);
			atomic_fetch_add(&s->pending, 1);
			ret = issue_read(r);
			if (ret < 0) {
				atomic_fetch_sub(&s->pending, 1);
				mreq_free(r);
			}
		}
		if (ret < 0) {
			if (!first_err)
				first_err = ret;
		} else {
			started++;
		}
		at = to;
	}
	if (first_err && !started) {
		/* Nothing in flight: the caller gets the error. */
		free(s);
		return first_err;
	}
	split_piece_done(s, first_err);
	return 0;
}

/*----------------------------------------------------------------*/
/* Entry points */

/* A request with its fields reset and room for @iovcnt iovecs (not
 * filled); NULL when out of memory. */
static struct mreq *mreq_new(struct mirror *m, enum mreq_op op, uint64_t sector,
			     uint64_t count, unsigned iovcnt, unsigned flags,
			     mirror_end_io_fn end_io, void *ctx)
{
	struct mreq *r = mreq_alloc(m);

	if (!r)
		return NULL;
	r->m = m;
	r->op = op;
	r->flags = flags;
	r->sector = sector;
	r->count = count;
	r->end_io = end_io;
	r->ctx = ctx;
	r->tried = 0;
	r->bad = 0;
	r->bm_started = false;
	r->bm_err = 0;
	r->copy_flags = 0;
	r->narrowed = false;
	r->narrow_held = false;
	r->nforgiven = 0;
	r->buf = NULL;
	r->client = NULL;
	r->iovcnt = iovcnt;
	r->iov = r->iov_inline;
	if (iovcnt > MIRROR_INLINE_IOVS) {
		r->iov = malloc(iovcnt * sizeof(*r->iov));
		if (!r->iov) {
			r->iov = r->iov_inline;
			mreq_free(r);
			return NULL;
		}
	}
	return r;
}

static int start_request(struct mirror *m, enum mreq_op op, uint64_t sector,
			 uint64_t count, const struct iovec *iov, unsigned iovcnt,
			 unsigned flags, mirror_end_io_fn end_io, void *ctx)
{
	uint64_t image_sectors = m->image_size >> FM_SECTOR_SHIFT;
	struct mreq *r;

	if (count > image_sectors || sector > image_sectors - count)
		return -ENOSPC;
	if (op != MREQ_READ && (m->readonly || !atomic_load(&m->in_use)))
		return -EROFS;
	if (m->csum && !mcsum_aligned(sector, count))
		return -EINVAL;
	if (op == MREQ_READ && count) {
		bool by_bad;

		if (m->csum)
			mcsum_prefetch(m, sector);

		switch (read_layout(m, sector, count, &by_bad)) {
		case READ_ZEROES:
			/* Never written (or discarded since): zeroes, no leg
			 * touched. */
			for (unsigned i = 0; i < iovcnt; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			MIRROR_STAT_ADD(m->reads, 1);
			MIRROR_STAT_ADD(m->read_bytes, count << FM_SECTOR_SHIFT);
			MIRROR_STAT_ADD(m->unwritten_reads, 1);
			end_io(ctx, 0);
			return 0;
		case READ_SPLIT:
			MIRROR_STAT_ADD(m->reads, 1);
			MIRROR_STAT_ADD(m->read_bytes, count << FM_SECTOR_SHIFT);
			return read_split(m, sector, count, iov, iovcnt, flags, by_bad, end_io,
					  ctx);
		case READ_WHOLE:
			break;
		}
	}
	r = mreq_new(m, op, sector, count, iovcnt, flags, end_io, ctx);
	if (!r)
		return -ENOMEM;
	if (iovcnt)
		memcpy(r->iov, iov, iovcnt * sizeof(*iov));

	if (op == MREQ_READ) {
		int ret;

		MIRROR_STAT_ADD(m->reads, 1);
		MIRROR_STAT_ADD(m->read_bytes, count << FM_SECTOR_SHIFT);
		ret = issue_read(r);
		if (ret < 0)
			mreq_free(r);
		return ret;
	}
	if (op == MREQ_WRITE) {
		MIRROR_STAT_ADD(m->writes, 1);
		MIRROR_STAT_ADD(m->write_bytes, count << FM_SECTOR_SHIFT);
	} else {
		MIRROR_STAT_ADD(m->discards, 1);
	}
	order_and_issue(r);
	return 0;
}

int mirror_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
		  const struct iovec *iov, unsigned iovcnt, unsigned flags,
		  mirror_end_io_fn end_io, void *ctx)
{
	uint64_t bytes = 0;

	if ((op != MIRROR_OP_READ && op != MIRROR_OP_WRITE) || !end_io ||
	    iovcnt == 0 || iovcnt > IOV_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < iovcnt; i++)
		bytes += iov[i].iov_len;
	if (bytes == 0 || !FM_IS_ALIGNED(bytes, (uint64_t)FM_SECTOR_SIZE))
		return -EINVAL;
	return start_request(m, (enum mreq_op)op, sector, bytes >> FM_SECTOR_SHIFT,
			     iov, iovcnt, flags, end_io, ctx);
}

struct sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void sync_done(void *ctx, int err)
{
	struct sync_wait *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int sync_wait_for(struct sync_wait *w)
{
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return w->err;
}

static int zero_range(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count)
{
	struct sync_wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
	int r;

	if (count == 0)
		return 0;
	r = start_request(m, op, sector, count, NULL, 0, 0, sync_done, &w);
	if (r < 0)
		return r;
	return sync_wait_for(&w);
}

int mirror_discard(struct mirror *m, uint64_t sector, uint64_t count)
{
	return zero_range(m, MREQ_DISCARD, sector, count);
}

int mirror_write_zeroes(struct mirror *m, uint64_t sector, uint64_t count)
{
	return zero_range(m, MREQ_ZEROES, sector, count);
}

int mirror_legs_sync_io(struct mirror *m, struct dmio_request *req, uint64_t sector,
			uint64_t count, const char *what, bool *ret_failed)
{
	struct dmio_region where[DMIO_MAX_REGIONS];
	unsigned map[DMIO_MAX_REGIONS], n = 0;
	unsigned long bits = 0;
	bool ok = false;

	*ret_failed = false;
	req->client = m->client;
	req->notify_fn = NULL;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (!leg_get(&m->legs[i], LEG_WRITABLE))
			continue;
		where[n] = (struct dmio_region){ m->legs[i].dev, sector, count };
		map[n++] = i;
	}
	if (n == 0)
		return -EIO;
	if (dmio(req, n, where, &bits) < 0 && !bits)
		bits = ~0ul;
	for (unsigned k = 0; k < n; k++) {
		struct mirror_leg *leg = &m->legs[map[k]];

		if (bits & (1ul << k)) {
			g_autofree char *failed = g_strdup_printf("%s failed", what);

			MIRROR_STAT_ADD(leg->write_errors, 1);
			mirror_leg_failed(m, map[k], failed, -EIO);
			*ret_failed = true;
		} else if (leg_state(leg) == FM_LEG_IN_SYNC) {
			ok = true;
		}
		leg_put(leg);
	}
	return ok ? 0 : -EIO;
}

int mirror_flush(struct mirror *m)
{
	struct dmio_request dr = { .op = DMIO_OP_FLUSH };
	bool failed;
	int r;

	MIRROR_STAT_ADD(m->flushes, 1);
	r = mirror_legs_sync_io(m, &dr, 0, 0, "flush", &failed);
	/* As for a write: durable once the failed legs are recorded. */
	if (failed && mirror_sb_update_sync(m) < 0)
		r = -EIO;
	return r;
}

/*----------------------------------------------------------------*/
/* The block device (include/fusemirror/blockdev.h) */

static int bdev_submit(void *dev, enum fm_bdev_op op, uint64_t sector,
		       const struct iovec *iov, unsigned iovcnt, unsigned flags,
		       fm_bdev_end_io_fn end_io, void *ctx)
{
	return mirror_submit(dev, op == FM_BDEV_READ ? MIRROR_OP_READ : MIRROR_OP_WRITE,
			     sector, iov, iovcnt,
			     (flags & FM_BDEV_FUA) ? MIRROR_IO_FUA : 0, end_io, ctx);
}

static int bdev_flush(void *dev)
{
	return mirror_flush(dev);
}

static int bdev_discard(void *dev, uint64_t sector, uint64_t nr_sectors)
{
	return mirror_discard(dev, sector, nr_sectors);
}

static int bdev_write_zeroes(void *dev, uint64_t sector, uint64_t nr_sectors)
{
	return mirror_write_zeroes(dev, sector, nr_sectors);
}

static uint64_t bdev_size(void *dev)
{
	return mirror_size(dev);
}

/*
 * The leg a read around the engine (splice_read, map_read: blockdev.h)
 * takes: the leg a read would pick, for a whole read that needs nothing
 * but that leg's bytes, in memory.  Refused (the cache's caller reads
 * with submit then) when the data must be verified (checksums), a region
 * is out of sync (a read of it follows the resync), a region is unwritten
 * or no leg has the whole range without a bad block (the read is
 * assembled from pieces), no leg can serve it, or the leg is not in memory
 * (nothing here may wait for a disk).  0: *@ret_leg referenced (leg_get)
 * and counted pending, until around_leg_put().  A failed read there is not
 * counted as the leg's read error: read repair is the submitted read's,
 * which the caller falls back to.
 */
static int around_leg(struct mirror *m, uint64_t sector, uint64_t nr_sectors,
		      struct mirror_leg **ret_leg)
{
	uint64_t image_sectors = m->image_size >> FM_SECTOR_SHIFT;
	struct mirror_leg *leg;
	bool by_bad;
	int li;

	if (m->csum)
		return -EOPNOTSUPP;
	if (!nr_sectors || nr_sectors > image_sectors || sector > image_sectors - nr_sectors)
		return -EINVAL;
	if (mirror_region_unsynced(m, sector, nr_sectors) ||
	    read_layout(m, sector, nr_sectors, &by_bad) != READ_WHOLE)
		return -EAGAIN;
	li = pick_read_leg(m, &(struct read_pick){ sector, nr_sectors, 0 }, -1);
	if (li < 0)
		return -EAGAIN;
	leg = &m->legs[li];
	if (!leg_get(leg, LEG_READABLE))
		return -EAGAIN;
	if (!dmio_dev_in_memory(leg->dev)) {
		leg_put(leg);
		return -EOPNOTSUPP;     /* it could wait for the disk */
	}
	atomic_fetch_add_explicit(&leg->pending, 1, memory_order_relaxed);
	atomic_store_explicit(&leg->next_sector, sector + nr_sectors, memory_order_relaxed);
	*ret_leg = leg;
	return 0;
}

/* A read of @sectors from @leg around the engine, in the statistics. */
static void around_leg_count(struct mirror *m, struct mirror_leg *leg, uint64_t sectors)
{
	MIRROR_STAT_ADD(m->reads, 1);
	MIRROR_STAT_ADD(m->read_bytes, sectors << FM_SECTOR_SHIFT);
	MIRROR_STAT_ADD(leg->reads, 1);
	MIRROR_STAT_ADD(leg->read_bytes, sectors << FM_SECTOR_SHIFT);
}

/* End around_leg()'s hold of @leg. */
static void around_leg_put(struct mirror_leg *leg)
{
	atomic_fetch_sub_explicit(&leg->pending, 1, memory_order_relaxed);
	leg_put(leg);
}

/*
 * A read around the engine from around_leg()'s leg: by splice into
 * @pipe_fd (@ret_ptr NULL; the leg must splice: dmio_dev_splice_read(), not
 * remote, not O_DIRECT, no fault set), or a loan of its mapped memory at
 * *@ret_ptr (dmio_dev_map_read(): every page of the range there, no fault
 * set).  0: done (counted as a read: for a loan, nothing tells the mirror
 * whether the kernel's copy from there then worked) and *@ret_leg still
 * held, until around_leg_put().
 */
static int around_read(struct mirror *m, uint64_t sector, uint64_t nr_sectors, int pipe_fd,
		       const void **ret_ptr, struct mirror_leg **ret_leg)
{
	uint64_t off = (m->data_sector + sector) << FM_SECTOR_SHIFT;
	size_t len = (size_t)nr_sectors << FM_SECTOR_SHIFT;
	struct mirror_leg *leg;
	int r;

	r = around_leg(m, sector, nr_sectors, &leg);
	if (r)
		return r;
	r = ret_ptr ? dmio_dev_map_read(leg->dev, off, len, ret_ptr) :
		      dmio_dev_splice_read(leg->dev, off, len, pipe_fd);
	if (r) {
		around_leg_put(leg);
		return r;
	}
	around_leg_count(m, leg, nr_sectors);
	*ret_leg = leg;
	return 0;
}

/* A read by splice (blockdev.h). */
static int bdev_splice_read(void *dev, uint64_t sector, uint64_t nr_sectors, int pipe_fd)
{
	struct mirror_leg *leg;
	int r = around_read(dev, sector, nr_sectors, pipe_fd, NULL, &leg);

	if (!r)
		around_leg_put(leg);
	return r;
}

/* A loan of a leg's mapped memory (blockdev.h's map_read).  The hold is
 * the leg: referenced, so neither removed nor closed (nor its mapping
 * gone) until bdev_map_put(), and pending, as a read in flight is. */
static int bdev_map_read(void *dev, uint64_t sector, uint64_t nr_sectors, const void **ret_ptr,
			 void **ret_hold)
{
	struct mirror_leg *leg;
	int r = around_read(dev, sector, nr_sectors, -1, ret_ptr, &leg);

	if (!r)
		*ret_hold = leg;
	return r;
}

static void bdev_map_put(void *dev, void *hold, uint64_t sector, uint64_t nr_sectors, int err)
{
	struct mirror *m = dev;
	struct mirror_leg *leg = hold;

	/* The kernel's copy from the leg's mapping faulted: a page gone, the
	 * leg file shrank behind us.  The client's read failed with EIO: a
	 * read error of this leg, not corrected, counted and reported as any
	 * (read_error(): the event, max_read_errors, and the leg failed if
	 * its file is now shorter than it must be).  Its pages are no longer
	 * lent: its reads go through the engine, where an error is repaired. */
	if (err == -EFAULT) {
		fm_debug("leg %s: a reply from its mapping faulted: its memory is not lent again "
			 "until written", leg->path);
		dmio_dev_map_forget(leg->dev);
		read_error(m, (unsigned)(leg - m->legs), sector, nr_sectors);
	}
	around_leg_put(leg);
}

/*
 * The leg a read of @sector will likely go to, told that it comes soon:
 * the io_uring front tells of a batch of reads (up to 8), then issues
 * them, and their legs' pending counts drop only after the batch, when
 * their copies complete.  So with the first policy the first leg, with
 * the others the batch's j-th read goes to leg (rr + j) % nr_legs, rr as
 * it was when the batch began (balance: the first nr_legs reads find a
 * leg idle and move rr, the later ones tie and start from the moved rr).
 * A batch begins when rr moved since the last guess (every batch's first
 * read moves it).  A wrong guess costs a prefetch, nothing else.
 */
static void bdev_read_soon(void *dev, uint64_t sector)
{
	struct mirror *m = dev;
	struct mirror_leg *leg;
	unsigned li = 0;

	if (m->read_policy != MIRROR_READ_FIRST) {
		unsigned rr = atomic_load_explicit(&m->rr, memory_order_relaxed);
		unsigned j = atomic_load_explicit(&m->soon, memory_order_relaxed);

		if (rr != atomic_load_explicit(&m->soon_rr, memory_order_relaxed)) {
			atomic_store_explicit(&m->soon_rr, rr, memory_order_relaxed);
			j = 0;
		}
		atomic_store_explicit(&m->soon, j + 1, memory_order_relaxed);
		li = (rr + j) % m->nr_legs;
	}
	leg = &m->legs[li];
	if (!leg_get(leg, LEG_READABLE))
		return;
	dmio_dev_prefetch_read(leg->dev, (m->data_sector + sector) << FM_SECTOR_SHIFT);
	leg_put(leg);
}

/*
 * Every writable leg's line a write of @sector will store to, told that
 * it comes soon: the io_uring front tells of a batch of writes (up to 8)
 * before it handles the first, so the batch's page walks and line misses
 * overlap, where each write's came alone as dmio() built its pieces
 * (dmio_map_prefetch, which then finds the line there).
 */
static void bdev_write_soon(void *dev, uint64_t sector)
{
	struct mirror *m = dev;
	uint64_t off = (m->data_sector + sector) << FM_SECTOR_SHIFT;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];

		if (!leg_get(leg, LEG_WRITABLE))
			continue;
		dmio_dev_prefetch_write(leg->dev, off);
		leg_put(leg);
	}
}

static const struct fm_bdev_ops mirror_bdev_ops = {
	.submit = bdev_submit,
	.flush = bdev_flush,
	.discard = bdev_discard,
	.write_zeroes = bdev_write_zeroes,
	.size = bdev_size,
	.splice_read = bdev_splice_read,
	.map_read = bdev_map_read,
	.map_put = bdev_map_put,
	.read_soon = bdev_read_soon,
	.write_soon = bdev_write_soon,
};

struct fm_bdev mirror_bdev(struct mirror *m)
{
	return (struct fm_bdev){ .ops = &mirror_bdev_ops, .dev = m };
}

/*----------------------------------------------------------------*/
/* Information */

uint64_t mirror_size(const struct mirror *m) { return m->image_size; }
unsigned mirror_nr_legs(const struct mirror *m) { return m->nr_legs; }
bool mirror_is_readonly(const struct mirror *m) { return m->readonly; }

bool mirror_legs_in_memory(struct mirror *m)
{
	bool any = false, all = true;

	pthread_mutex_lock(&m->state_lock);
	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (!m->legs[i].dev)
			continue;
		any = true;
		all = all && dmio_dev_in_memory(m->legs[i].dev);
	}
	pthread_mutex_unlock(&m->state_lock);
	return any && all;
}
enum mirror_read_policy mirror_get_read_policy(const struct mirror *m) { return m->read_policy; }

void mirror_get_leg_stats(const struct mirror *m, unsigned i, struct mirror_leg_stats *s)
{
	struct mirror *mm = (struct mirror *)m;
	const struct mirror_leg *leg = &m->legs[i];
	struct dmio_fault f;

	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&mm->state_lock);
	g_strlcpy(s->path, leg->path ? leg->path : "", sizeof(s->path));
	s->state = leg_state(leg);
	s->write_mostly = m->sb.legs[i].flags & FM_SB_LEG_WRITE_MOSTLY;
	if (!leg->path && s->state != FM_LEG_EMPTY) {
		/* Not present: faulty in the table (not given at assembly) is
		 * missing, anything else removed. */
		s->missing = m->sb.legs[i].state == FM_LEG_FAULTY;
		s->state = s->missing ? FM_LEG_FAULTY : FM_LEG_REMOVED;
	}
	memcpy(s->uuid, leg->uuid, 16);
	s->bad_blocks = mbad_blocks(&m->sb, i);
	if (s->state == FM_LEG_REBUILDING)
		g_strlcpy(s->note, leg->note, sizeof(s->note));
	s->remote = dmio_path_is_remote(s->path);
	if (leg->dev && dmio_dev_is_remote(leg->dev)) {
		struct dmio_remote_stats rs;

		if (dmio_dev_get_remote_stats(leg->dev, &rs) == 0) {
			s->connected = rs.connected;
			s->rtt_us = rs.rtt_us;
		}
	}
	if (leg->dev) {
		s->direct = dmio_dev_is_direct(leg->dev);
		if (dmio_dev_get_fault(leg->dev, &f) == 0) {
			s->fault_set = true;
			s->fault = f;
			if (f.count) {
				s->fault.sector = f.sector >= m->data_sector ?
						  f.sector - m->data_sector : 0;
			}
		}
	}
	pthread_mutex_unlock(&mm->state_lock);
	s->reads = atomic_load(&leg->reads);
	s->writes = atomic_load(&leg->writes);
	s->read_bytes = atomic_load(&leg->read_bytes);
	s->write_bytes = atomic_load(&leg->write_bytes);
	s->read_errors = atomic_load(&leg->read_errors);
	s->write_errors = atomic_load(&leg->write_errors);
	s->corrected = atomic_load(&leg->corrected);
	s->checksum_errors = atomic_load(&leg->csum_errors);
	s->pending = atomic_load(&leg->pending);
	pthread_mutex_lock(&mm->rc_lock);
	s->reconnects = m->rc[i].count;
	s->reconnecting = m->rc[i].uri != NULL;
	if (s->reconnecting) {
		s->reconnect_attempts = m->rc[i].attempts;
		s->reconnect_delay_ms = m->rc[i].delay_ms;
	}
	if (s->reconnecting && !*s->path) {
		/* Closed between two attempts: still the leg it was. */
		g_strlcpy(s->path, m->rc[i].uri, sizeof(s->path));
		s->remote = true;
	}
	pthread_mutex_unlock(&mm->rc_lock);
}

void mirror_get_stats(const struct mirror *m, struct mirror_stats *s)
{
	s->reads = atomic_load(&m->reads);
	s->writes = atomic_load(&m->writes);
	s->flushes = atomic_load(&m->flushes);
	s->discards = atomic_load(&m->discards);
	s->read_bytes = atomic_load(&m->read_bytes);
	s->write_bytes = atomic_load(&m->write_bytes);
	s->read_retries = atomic_load(&m->read_retries);
	s->overlap_waits = atomic_load(&m->overlap_waits);
	s->errors = atomic_load(&m->errors);
}

static const char *const policy_names[] = {
	[MIRROR_READ_BALANCE] = "balance",
	[MIRROR_READ_ROUND_ROBIN] = "round-robin",
	[MIRROR_READ_FIRST] = "first",
};

int mirror_read_policy_parse(const char *s, enum mirror_read_policy *ret)
{
	for (unsigned i = 0; i < FM_ARRAY_SIZE(policy_names); i++) {
		if (s && !strcmp(s, policy_names[i])) {
			*ret = (enum mirror_read_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *mirror_read_policy_name(enum mirror_read_policy p)
{
	return (unsigned)p < FM_ARRAY_SIZE(policy_names) ? policy_names[p] : "?";
}
