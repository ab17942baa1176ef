/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reads and writes to the device, and writeback.
 *
 * A request is a run of buffers of consecutive blocks linked by io_next;
 * the head is the completion context.  Each buffer of a run holds one
 * reference for the request.  A buffer is in at most one request at a
 * time: reads only while READING (set before it enters the index), writes
 * only while WRITING (set by a claim under the shard lock; a claim never
 * takes a buffer that is already WRITING).
 *
 * Claiming a buffer for writing (claim_locked): DIRTY -> WRITING, the
 * dirty range (rounded out to sectors) becomes the write range,
 * write_data = data.  If the write fails the buffer becomes DIRTY again
 * (range widened to cover the failed one) with WRITE_ERROR: its data is
 * never silently dropped, background writeback leaves it alone (no retry
 * storm), and the next explicit writeback retries it and reports again.
 *
 * Runs: claimed buffers are sorted by block; neighbours join a run when
 * the first ends at its block's end and the next starts at 0, so a run is
 * one contiguous byte range and goes out as one vectored request (whose
 * segments are merged where the buffers are neighbours in memory too).
 *
 * Errors are recorded in c->write_error before any buffer of the run is
 * released, so a thread that waited for a buffer to stop WRITING and then
 * reads c->write_error cannot miss the error.
 *
 * Writeback under memory pressure (BUFIO_WB_PRESSURE: an allocation or the
 * cleaner found that dirty buffers dominate) claims the oldest dirty
 * buffers of the client, those whose dirty_seq is below the oldest one's
 * plus the budget, so that a stream's blocks go out together, sorted into
 * long runs, instead of whatever few blocks were dirtied since the last
 * allocation.  The writeback in flight is bounded (wb_inflight_max: a
 * flood of writes would starve reads and cost latency), and a claim waits
 * until a batch's worth (wb_batch) of buffers is claimable and fits in the
 * budget, unless an allocation is starving (BUFIO_WB_STARVED: nothing to
 * reclaim; then any claimable buffer goes, within the budget).  Only the DIRTY lists are looked at: buffers being
 * written and buffers whose write failed are on lists of their own, so a
 * claim costs what it claims, not what the cache holds.
 *
 * Neighbours (claim_neighbours): the oldest buffers of random writes are
 * rarely neighbours of each other, but often of younger dirty buffers
 * (a third of a 1 GiB image dirty: runs of 2-3 blocks).  dm-bufio writes
 * each block by itself; a pressure writeback claims the oldest for half
 * its budget and lets their dirty neighbours join their runs with the
 * rest, so that a run is one write on each leg instead of one per block.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bufio_i.h"

#define BUFIO_MAX_RUN 256u
#define BUFIO_MAX_RUN_BYTES (8u << 20)
/* Pressure writeback: at most this much in flight (and 1/8 of the limit)... */
#define BUFIO_WB_INFLIGHT_BYTES (16u << 20)
/* ... and, while some is in flight, claims of at least this much. */
#define BUFIO_WB_BATCH_BYTES (1u << 20)

struct bufio_vec {
	struct bufio_buffer **v;
	size_t n, cap;
};

static unsigned wb_inflight_max(const struct bufio_client *c);
static void wb_pump(struct bufio_client *c);

static int vec_push(struct bufio_vec *a, struct bufio_buffer *b)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		struct bufio_buffer **v = realloc(a->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = b;
	return 0;
}

static inline uint64_t block_sector(const struct bufio_client *c, uint64_t block)
{
	return atomic_load_explicit(&c->start, memory_order_relaxed) +
	       (block << c->sector_shift);
}

/* Append a segment; neighbours in memory (slab.c hands out consecutive
 * slots) become one segment.  Returns the new count. */
static unsigned iov_append(struct iovec *iov, unsigned k, void *base, size_t len)
{
	if (k && (char *)iov[k - 1].iov_base + iov[k - 1].iov_len == (char *)base) {
		iov[k - 1].iov_len += len;
		return k;
	}
	iov[k].iov_base = base;
	iov[k].iov_len = len;
	return k + 1;
}

/*----------------------------------------------------------------*/
/* Reads */

static void read_end_io(void *ctx, int err)
{
	struct bufio_buffer *b = ctx, *next;
	struct bufio_client *c = b->c;
	uint64_t now = bufio_now_ns();
	bool head = true;

	for (; b; b = next) {
		struct bufio_shard *s = bufio_shard_of(c, b->block);
		struct bufio_read_waiter *w;
		bool drop_index = false;

		next = b->io_next;
		pthread_mutex_lock(&s->lock);
		b->state &= ~BUFIO_B_READING;
		if (err) {
			b->read_error = err;
			s->read_errors++;
			bufio_index_remove_locked(s, b);
			drop_index = true;
		} else {
			b->stamp = now;
			bufio_relink_locked(s, b, BUFIO_LIST_CLEAN);
			s->reads++;
		}
		if (head)
			s->read_ios++;
		head = false;
		w = b->read_waiters;
		b->read_waiters = NULL;
		bufio_shard_wake_locked(s);
		pthread_mutex_unlock(&s->lock);

		while (w) {
			struct bufio_read_waiter *wn = w->next;

			if (err) {
				w->cb(w->ctx, NULL, err);
				bufio_buffer_put(c, b);
			} else {
				w->cb(w->ctx, b, 0);
			}
			bufio_obj_put(c, w);
			w = wn;
		}
		if (drop_index)
			bufio_buffer_put(c, b);
		bufio_buffer_put(c, b);
	}
	bufio_wake_free(c);
	bufio_io_put(c);
}

void bufio_submit_read_run(struct bufio_client *c, struct bufio_buffer *head, unsigned n)
{
	struct iovec iov[BUFIO_MAX_RUN];
	struct bufio_buffer *b = head;
	int r;

	unsigned k = 0;

	assert(n >= 1 && n <= BUFIO_MAX_RUN);
	for (unsigned i = 0; i < n; i++, b = b->io_next)
		k = iov_append(iov, k, b->data, c->block_size);
	bufio_io_get(c);
	r = c->bdev.ops->submit(c->bdev.dev, FM_BDEV_READ, block_sector(c, head->block),
				iov, k, 0, read_end_io, head);
	if (r < 0)
		read_end_io(head, r);
}

/*----------------------------------------------------------------*/
/* Writes */

static void waiter_init(struct bufio_io_waiter *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->pending = 0;
	w->error = 0;
}

static int waiter_wait(struct bufio_io_waiter *w)
{
	int e;

	pthread_mutex_lock(&w->lock);
	while (w->pending)
		pthread_cond_wait(&w->cond, &w->lock);
	e = w->error;
	pthread_mutex_unlock(&w->lock);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	return e;
}

/* The part of a write completion done under @s's lock for buffer @b. */
static void *write_done_locked(struct bufio_shard *s, struct bufio_buffer *b, int err,
			       bool moved, uint64_t now)
{
	void *old = NULL;
	unsigned st = atomic_load_explicit(&b->state, memory_order_relaxed) & ~BUFIO_B_WRITING;

	if (b->write_data != b->data)
		old = b->write_data; /* copied on write: the old memory is ours */
	b->write_data = NULL;
	s->writes++;
	if (err) {
		s->write_errors++;
		if (!moved) {
			st |= BUFIO_B_WRITE_ERROR;
			if (!(st & BUFIO_B_DIRTY)) {
				st |= BUFIO_B_DIRTY;
				b->dirty_start = b->write_start;
				b->dirty_end = b->write_end;
			} else {
				if (b->write_start < b->dirty_start)
					b->dirty_start = b->write_start;
				if (b->write_end > b->dirty_end)
					b->dirty_end = b->write_end;
			}
		}
	} else if (!moved) {
		st &= ~BUFIO_B_WRITE_ERROR;
	}
	/* Release: a lock-free hit that sees the new state sees the rest. */
	atomic_store_explicit(&b->state, st, memory_order_release);
	if (st & BUFIO_B_HASHED) {
		/* Dirtied again during the write (or failed): dirty since now. */
		b->stamp = now;
		bufio_relink_locked(s, b, !(st & BUFIO_B_DIRTY) ? BUFIO_LIST_CLEAN :
					  (st & BUFIO_B_WRITE_ERROR) ? BUFIO_LIST_FAILED :
					  BUFIO_LIST_DIRTY);
	}
	return old;
}

static void write_end_io(void *ctx, int err)
{
	struct bufio_buffer *head = ctx, *b;
	struct bufio_client *c = head->c;
	struct bufio_io_waiter *w = head->io_waiter;
	bool moved = head->io_flags & BUFIO_RUN_MOVED;
	struct bufio_buffer *v[BUFIO_MAX_RUN];
	uint8_t shard[BUFIO_MAX_RUN];
	void *old[BUFIO_MAX_RUN];
	uint64_t now = bufio_now_ns();
	unsigned n = 0, done = 0;

	if (err) {
		int zero = 0;

		atomic_compare_exchange_strong(&c->write_error, &zero, err);
	}
	/* Counted before any buffer of the run is clean: a FUA range
	 * writeback that finds one clean then sees the count too. */
	if (!(head->io_flags & BUFIO_RUN_FUA))
		atomic_fetch_add(&c->nonfua_writes, 1);
	/* io_next is read before any buffer stops WRITING: after that, it
	 * may be claimed (and relinked) by another writeback at once. */
	for (b = head; b; b = b->io_next) {
		shard[n] = (uint8_t)(bufio_shard_of(c, b->block) - c->shards);
		v[n++] = b;
	}
	/* One lock round trip per shard, not per buffer. */
	while (done < n) {
		unsigned si = 256;
		struct bufio_shard *s;

		for (unsigned i = 0; i < n; i++)
			if (v[i] && (si == 256 || shard[i] == si))
				si = shard[i];
		s = &c->shards[si];
		pthread_mutex_lock(&s->lock);
		if (shard[0] == si && v[0] == head)
			s->write_ios++;
		for (unsigned i = 0; i < n; i++)
			if (v[i] && shard[i] == si)
				old[i] = write_done_locked(s, v[i], err, moved, now);
		bufio_shard_wake_locked(s);
		pthread_mutex_unlock(&s->lock);
		for (unsigned i = 0; i < n; i++) {
			if (!v[i] || shard[i] != si)
				continue;
			if (old[i]) {
				bufio_data_free(c, old[i]);
				bufio_account_bytes(c, -(int64_t)c->block_size);
			}
			bufio_buffer_put(c, v[i]);
			v[i] = NULL;
			done++;
		}
	}
	atomic_fetch_sub_explicit(&c->n_writing, n, memory_order_relaxed);
	/* Room in flight: the next claimed buffers waiting for it (before
	 * bufio_io_put, which may let the client go). */
	if (atomic_load_explicit(&c->wb_queued, memory_order_acquire))
		wb_pump(c);
	if (w) {
		pthread_mutex_lock(&w->lock);
		if (err && !w->error)
			w->error = err;
		if (!--w->pending)
			pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
	}
	bufio_wake_free(c);
	bufio_io_put(c);
}

static void submit_write_run(struct bufio_client *c, struct bufio_buffer *head, unsigned n,
			     unsigned flags)
{
	struct iovec iov[BUFIO_MAX_RUN];
	struct bufio_buffer *b = head;
	uint64_t block = (head->io_flags & BUFIO_RUN_MOVED) ? head->io_block : head->block;
	int r;

	unsigned k = 0;

	for (unsigned i = 0; i < n; i++, b = b->io_next)
		k = iov_append(iov, k, (char *)b->write_data + b->write_start,
			       b->write_end - b->write_start);
	atomic_fetch_add_explicit(&c->n_writing, n, memory_order_relaxed);
	if (flags & FM_BDEV_FUA)
		head->io_flags |= BUFIO_RUN_FUA;
	if (head->io_waiter) {
		pthread_mutex_lock(&head->io_waiter->lock);
		head->io_waiter->pending++;
		pthread_mutex_unlock(&head->io_waiter->lock);
	}
	bufio_io_get(c);
	r = c->bdev.ops->submit(c->bdev.dev, FM_BDEV_WRITE,
				block_sector(c, block) + (head->write_start >> FM_SECTOR_SHIFT),
				iov, k, flags, write_end_io, head);
	if (r < 0)
		write_end_io(head, r);
}

static bool claimable_locked(const struct bufio_buffer *b, enum bufio_wb_mode mode)
{
	if ((b->state & (BUFIO_B_DIRTY | BUFIO_B_WRITING)) != BUFIO_B_DIRTY || b->modifiers)
		return false;
	return mode != BUFIO_WB_BACKGROUND || !(b->state & BUFIO_B_WRITE_ERROR);
}

/* (c->n_writing is added by the caller, per request) */
static void claim_locked(struct bufio_client *c, struct bufio_shard *s, struct bufio_buffer *b)
{
	unsigned align = c->write_align;

	bufio_relink_locked(s, b, BUFIO_LIST_WRITING);
	atomic_store_explicit(&b->state, (atomic_load_explicit(&b->state, memory_order_relaxed) &
					  ~BUFIO_B_DIRTY) | BUFIO_B_WRITING,
			      memory_order_relaxed);
	b->write_start = FM_ALIGN_DOWN(b->dirty_start, align);
	b->write_end = FM_ALIGN_UP(b->dirty_end, align);
	b->write_data = b->data;
	atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
}

static int cmp_block(const void *x, const void *y)
{
	const struct bufio_buffer *a = *(struct bufio_buffer *const *)x;
	const struct bufio_buffer *b = *(struct bufio_buffer *const *)y;

	return a->block < b->block ? -1 : a->block > b->block;
}

/* Sort @v by block, unless it already is (a claim of one shard's dirty
 * list in order, a run of a stream: the usual case costs one pass). */
static void sort_by_block(struct bufio_buffer **v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		if (v[i - 1]->block > v[i]->block) {
			qsort(v, n, sizeof(*v), cmp_block);
			return;
		}
	}
}

/* Whether claimed @b may follow claimed @a in one write. */
static bool run_continues(const struct bufio_client *c, const struct bufio_buffer *a,
			  const struct bufio_buffer *b)
{
	return b->block == a->block + 1 && a->write_end == c->block_size && b->write_start == 0;
}

/* Write claimed buffers @v in runs; @w (may be NULL) counts the requests. */
static void submit_claimed(struct bufio_client *c, struct bufio_buffer **v, size_t n,
			   struct bufio_io_waiter *w, unsigned flags)
{
	if (!n)
		return;
	if (c->write_callback)
		for (size_t i = 0; i < n; i++)
			c->write_callback(v[i]);
	sort_by_block(v, n);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		size_t bytes = v[i]->write_end - v[i]->write_start;

		while (j < n && j - i < BUFIO_MAX_RUN &&
		       bytes + c->block_size <= BUFIO_MAX_RUN_BYTES &&
		       run_continues(c, v[j - 1], v[j])) {
			bytes += v[j]->write_end;
			j++;
		}
		for (size_t k = i; k < j; k++)
			v[k]->io_next = k + 1 < j ? v[k + 1] : NULL;
		v[i]->io_waiter = w;
		v[i]->io_flags = 0;
		submit_write_run(c, v[i], (unsigned)(j - i),
				 flags | (w ? 0 : FM_BDEV_BACKGROUND));
		i = j;
	}
}

/* Pressure writeback's bound on buffers in flight, and its batch. */
static unsigned wb_inflight_max(const struct bufio_client *c)
{
	uint64_t bytes = bufio_client_limit(c) / 8;
	uint64_t n;

	if (bytes > BUFIO_WB_INFLIGHT_BYTES)
		bytes = BUFIO_WB_INFLIGHT_BYTES;
	n = bytes >> c->block_shift;
	return n ? (unsigned)n : 1;
}

static unsigned wb_batch(const struct bufio_client *c, unsigned max)
{
	unsigned n = BUFIO_WB_BATCH_BYTES >> c->block_shift;

	n = n ? n : 1;
	return n < max ? n : max;
}

/* The dirty_seq of the oldest claimable buffer, or UINT64_MAX. */
static uint64_t oldest_claimable(struct bufio_client *c)
{
	uint64_t first = UINT64_MAX;

	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];
		struct bufio_list *pos;

		if (!atomic_load_explicit(&s->n_dirty, memory_order_relaxed)) /* a hint */
			continue;
		pthread_mutex_lock(&s->lock);
		/* (only buffers being modified are skipped: a few at most) */
		for (pos = s->dirty.next; pos != &s->dirty; pos = pos->next) {
			struct bufio_buffer *b = bufio_container_of(pos, struct bufio_buffer, lru);

			if (b->dirty_seq >= first)
				break;
			if (claimable_locked(b, BUFIO_WB_BACKGROUND)) {
				first = b->dirty_seq;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
	}
	return first;
}

/* Whether dirty @b (not claimed; its shard locked) may follow claimed @prev
 * in a run (@up: @b is the next block; else the previous one). */
static bool joins_locked(const struct bufio_client *c, const struct bufio_buffer *prev,
			 const struct bufio_buffer *b, bool up)
{
	unsigned align = c->write_align;

	if (up)
		return prev->write_end == c->block_size &&
		       FM_ALIGN_DOWN(b->dirty_start, align) == 0;
	return prev->write_start == 0 && FM_ALIGN_UP(b->dirty_end, align) == c->block_size;
}

#define BUFIO_NEIGHBOURS_MAX 16u /* per side of a claimed run */

/*
 * Claim the dirty neighbours of the claimed buffers @v[0..@n) (sorted by
 * block) that extend their runs, up to @max buffers in all; returns the
 * new count.  One shard lock at a time.  A side where the next block is
 * claimed already (a neighbour in @v, or being written) is not probed.
 */
static size_t claim_neighbours(struct bufio_client *c, struct bufio_buffer **v, size_t n,
			       size_t max)
{
	size_t seeds = n;

	for (size_t i = 0; i < seeds && n < max; i++) {
		for (int up = 0; up <= 1 && n < max; up++) {
			struct bufio_buffer *prev = v[i];

			if (up ? i + 1 < seeds && v[i + 1]->block == prev->block + 1
			       : i > 0 && v[i - 1]->block + 1 == prev->block)
				continue;
			for (unsigned k = 0; k < BUFIO_NEIGHBOURS_MAX && n < max; k++) {
				uint64_t blk = up ? prev->block + 1 : prev->block - 1;
				struct bufio_shard *s;
				struct bufio_buffer *b;

				if (!up && prev->block == 0)
					break;
				s = bufio_shard_of(c, blk);
				pthread_mutex_lock(&s->lock);
				b = bufio_index_find_locked(s, blk);
				if (!b || !claimable_locked(b, BUFIO_WB_BACKGROUND) ||
				    !joins_locked(c, prev, b, up)) {
					pthread_mutex_unlock(&s->lock);
					break;
				}
				claim_locked(c, s, b);
				pthread_mutex_unlock(&s->lock);
				v[n++] = b;
				prev = b;
			}
		}
	}
	return n;
}

/* Claim the oldest claimable buffers, within the budget (half of it, when
 * that is a batch, and their neighbours with the rest). */
static unsigned writeback_pressure(struct bufio_client *c, bool starved)
{
	unsigned max = wb_inflight_max(c), batch = wb_batch(c, max);
	unsigned writing = atomic_load_explicit(&c->n_writing, memory_order_relaxed);
	unsigned claimable, budget, seeds, n = 0;
	struct bufio_buffer **v;
	uint64_t cutoff;

	if (writing >= max)
		return 0;
	budget = max - writing;
	claimable = bufio_count(c, BUFIO_COUNT_CLAIMABLE);
	if (!claimable || (!starved && (budget < batch || claimable < batch)))
		return 0;
	/* One claimer at a time (others would only find the same buffers),
	 * unless an allocation is starving. */
	if (!starved && atomic_exchange_explicit(&c->wb_claiming, true, memory_order_acquire))
		return 0;
	cutoff = oldest_claimable(c);
	v = cutoff == UINT64_MAX ? NULL : malloc(budget * sizeof(*v));
	if (!v) {
		if (!starved)
			atomic_store_explicit(&c->wb_claiming, false, memory_order_release);
		return 0;
	}
	cutoff += budget;
	seeds = budget - budget / 2;
	for (unsigned i = 0; i < c->nshards && n < seeds; i++) {
		struct bufio_shard *s = &c->shards[i];
		struct bufio_list *pos, *next;

		if (!atomic_load_explicit(&s->n_dirty, memory_order_relaxed)) /* a hint */
			continue;
		pthread_mutex_lock(&s->lock);
		for (pos = s->dirty.next; pos != &s->dirty && n < seeds; pos = next) {
			struct bufio_buffer *b = bufio_container_of(pos, struct bufio_buffer, lru);

			next = pos->next;
			if (b->dirty_seq >= cutoff)
				break;
			if (!claimable_locked(b, BUFIO_WB_BACKGROUND))
				continue;
			claim_locked(c, s, b);
			v[n++] = b;
		}
		pthread_mutex_unlock(&s->lock);
	}
	sort_by_block(v, n);
	n = (unsigned)claim_neighbours(c, v, n, budget);
	/* (released once submitted: n_writing then counts these) */
	submit_claimed(c, v, n, NULL, 0);
	if (!starved)
		atomic_store_explicit(&c->wb_claiming, false, memory_order_release);
	free(v);
	return n;
}

/* Claim from one list of @s (locked) into @v. */
static void claim_list_locked(struct bufio_client *c, struct bufio_shard *s,
			      struct bufio_list *head,
			      enum bufio_wb_mode mode, uint64_t cutoff_ns, struct bufio_vec *v)
{
	struct bufio_list *pos, *next;

	for (pos = head->next; pos != head; pos = next) {
		struct bufio_buffer *b = bufio_container_of(pos, struct bufio_buffer, lru);

		next = pos->next;
		/* (the DIRTY list is in order of dirtying) */
		if (cutoff_ns && b->stamp > cutoff_ns)
			break;
		if (!claimable_locked(b, mode))
			continue;
		if (vec_push(v, b) < 0)
			break;
		claim_locked(c, s, b);
	}
}

/*
 * The claimed-buffer queue.  A writeback of every dirty buffer (an
 * fsync-less close, the age writeback after a burst) may claim the whole
 * cache: 100k+ buffers of 4 KiB.  Submitted at once, each single-block
 * write would hold a request of a few KiB below us (dmio's pieces, the
 * mirror's request) -- hundreds of MiB beyond the cache's limit.  So such
 * a writeback queues what it claimed and submits only while fewer than
 * wb_inflight_max() buffers are in flight; every write completion submits
 * more.  Queued buffers are claimed (WRITING), so nobody else writes or
 * reclaims them; they keep the claim's reference.
 */
static void wb_enqueue(struct bufio_client *c, struct bufio_buffer **v, size_t n)
{
	size_t need;

	if (!n)
		return;
	sort_by_block(v, n); /* runs stay runs across the pump's chunks */
	/* (an emptied queue is reset by wb_dequeue) */
	pthread_mutex_lock(&c->wb_qlock);
	need = c->wb_qn + n;
	if (need > c->wb_qcap) {
		size_t cap = c->wb_qcap ? c->wb_qcap : 256;
		struct bufio_buffer **q;

		while (cap < need)
			cap *= 2;
		q = realloc(c->wb_q, cap * sizeof(*q));
		if (!q) {
			/* No room to queue: submit at once, as before. */
			pthread_mutex_unlock(&c->wb_qlock);
			submit_claimed(c, v, n, NULL, 0);
			return;
		}
		c->wb_q = q;
		c->wb_qcap = cap;
	}
	memcpy(c->wb_q + c->wb_qn, v, n * sizeof(*v));
	c->wb_qn += n;
	atomic_store_explicit(&c->wb_queued, true, memory_order_release);
	pthread_mutex_unlock(&c->wb_qlock);
	wb_pump(c);
}

/*
 * Take up to @max queued buffers into @v; returns how many.  A run that
 * does not fit stays queued for a later round, unless it is the first
 * (then it is cut to @max only if @may_cut: the room is a batch, or
 * nothing is in flight, so no completion would come to take it whole).
 */
static size_t wb_dequeue(struct bufio_client *c, struct bufio_buffer **v, size_t max,
			 bool may_cut)
{
	struct bufio_buffer **q;
	size_t n;

	pthread_mutex_lock(&c->wb_qlock);
	q = c->wb_q + c->wb_qhead;
	n = c->wb_qn - c->wb_qhead;
	if (n > max) {
		size_t k = max;

		while (k && run_continues(c, q[k - 1], q[k]))
			k--;
		n = k ? k : may_cut ? max : 0;
	}
	memcpy(v, q, n * sizeof(*v));
	c->wb_qhead += n;
	if (c->wb_qhead == c->wb_qn) {
		c->wb_qhead = 0;
		c->wb_qn = 0;
		atomic_store_explicit(&c->wb_queued, false, memory_order_release);
	}
	pthread_mutex_unlock(&c->wb_qlock);
	return n;
}

/*
 * Submit queued buffers while there is room in flight.  One pumper at a
 * time (a completion inside our own submit, or on another thread, asks
 * for another round instead of recursing); never waits.  Runs are not
 * cut to fit the room (see wb_dequeue): the room one completion frees is
 * a block or two, and the queue's runs went out cut into writes of that
 * size (a writeback of everything after a close: 41307 blocks in 41183
 * leg writes).
 */
static void wb_pump(struct bufio_client *c)
{
	struct bufio_buffer *v[BUFIO_MAX_RUN];
	unsigned max = wb_inflight_max(c), batch = wb_batch(c, max);

	atomic_store(&c->wb_repump, true);
	while (atomic_load(&c->wb_repump) &&
	       !atomic_exchange(&c->wb_pumping, true)) {
		atomic_store_explicit(&c->wb_repump, false, memory_order_relaxed);
		for (;;) {
			unsigned writing = atomic_load_explicit(&c->n_writing,
								memory_order_relaxed);
			size_t room = writing < max ? max - writing : 0, n;

			if (!room)
				break;
			n = wb_dequeue(c, v, room < BUFIO_MAX_RUN ? room : BUFIO_MAX_RUN,
				       room >= batch || !writing);
			if (!n)
				break;
			submit_claimed(c, v, n, NULL, 0);
		}
		atomic_store(&c->wb_pumping, false); /* seq_cst: against wb_repump */
		/* A completion that came while we held the pump set wb_repump:
		 * go round again (unless it took the pump itself). */
	}
}

unsigned bufio_writeback_start(struct bufio_client *c, enum bufio_wb_mode mode,
			       uint64_t cutoff_ns)
{
	struct bufio_vec v = { 0 };
	unsigned n;

	if (mode == BUFIO_WB_PRESSURE || mode == BUFIO_WB_STARVED)
		return writeback_pressure(c, mode == BUFIO_WB_STARVED);
	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];

		if (!atomic_load_explicit(&s->n_dirty, memory_order_relaxed) &&
		    (mode != BUFIO_WB_ALL ||
		     !atomic_load_explicit(&s->n_failed, memory_order_relaxed))) /* hints */
			continue;
		pthread_mutex_lock(&s->lock);
		claim_list_locked(c, s, &s->dirty, mode, cutoff_ns, &v);
		if (mode == BUFIO_WB_ALL)
			claim_list_locked(c, s, &s->failed, mode, 0, &v);
		pthread_mutex_unlock(&s->lock);
	}
	wb_enqueue(c, v.v, v.n);
	n = (unsigned)v.n;
	free(v.v);
	return n;
}

/*
 * Sort buffer @b (dirty or being written; shard lock held) into @claimed
 * (claimed now: it is written with what it holds after the call started)
 * or @pins (busy: written by someone else, or being modified; pinned).
 */
static int collect_locked(struct bufio_client *c, struct bufio_buffer *b,
			  struct bufio_vec *claimed, struct bufio_vec *pins)
{
	int r;

	if (claimable_locked(b, BUFIO_WB_ALL)) {
		r = vec_push(claimed, b);
		if (!r)
			claim_locked(c, bufio_shard_of(c, b->block), b);
	} else {
		r = vec_push(pins, b);
		if (!r)
			atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
	}
	return r;
}

/*
 * Submit @v with a waiter and wait for it; returns the first error.  At
 * most wb_inflight_max() buffers at a time (see wb_enqueue: a whole
 * cache in flight costs far more memory than the cache).
 */
static int write_and_wait(struct bufio_client *c, struct bufio_vec *v, unsigned flags)
{
	size_t chunk = wb_inflight_max(c);
	int err = 0;

	if (v->n > chunk)
		sort_by_block(v->v, v->n); /* runs stay runs across chunks */
	for (size_t i = 0; i < v->n; i += chunk) {
		struct bufio_io_waiter w;
		size_t n = v->n - i < chunk ? v->n - i : chunk;
		int e;

		waiter_init(&w);
		submit_claimed(c, v->v + i, n, &w, flags);
		e = waiter_wait(&w);
		if (!err)
			err = e;
	}
	v->n = 0;
	return err;
}

/*
 * The synchronous writeback: write @claimed and wait; then wait for each of
 * the @pins to stop being written or modified, and write those that are
 * dirty (again: they may hold changes from before the call, or their
 * write by someone else failed), and wait.  Drops the pins.
 *
 * It never waits holding claims it has not submitted: a pin claimed here
 * is WRITING, and whoever waits for it (another writeback_sync whose pin
 * it is, begin_modify) must see that write end.  Two of these with
 * crossing pins, each waiting for a pin the other claimed and held back,
 * waited for ever (test_bufio's stress case, now and then).  So the claims
 * are written (and waited for) before waiting for the next pin.
 *
 * With FM_BDEV_FUA, a flush follows when any write of a cache buffer
 * ended without FUA since the last flush began (c->nonfua_writes and
 * flushed_writes): a block of the range may have gone out in someone
 * else's write, which need not have been FUA -- a pin's (in flight when
 * collected, or claimed once its modification ended), or one that ended
 * before the collection, which then found the block clean and did not
 * even pin it.  Which blocks those writes held cannot be told afterwards;
 * the count is client-wide, and in writethrough mode, where these ranges
 * are written, writes without FUA are rare (a close's writeback, memory
 * pressure), so the flushes are too.
 */
static int writeback_sync(struct bufio_client *c, struct bufio_vec *claimed,
			  struct bufio_buffer **pins, size_t n, unsigned flags)
{
	int err, e = 0;

	err = write_and_wait(c, claimed, flags);
	for (size_t i = 0; i < n; i++) {
		struct bufio_buffer *b = pins[i];
		struct bufio_shard *s = bufio_shard_of(c, b->block);

		pthread_mutex_lock(&s->lock);
		while ((b->state & BUFIO_B_WRITING) ||
		       ((b->state & BUFIO_B_DIRTY) && b->modifiers)) {
			if (claimed->n) {
				int ew;

				pthread_mutex_unlock(&s->lock);
				ew = write_and_wait(c, claimed, flags);
				if (!err)
					err = ew;
				pthread_mutex_lock(&s->lock);
				continue;
			}
			bufio_shard_wait_locked(s);
		}
		if ((b->state & BUFIO_B_DIRTY) && !e) {
			e = vec_push(claimed, b);
			if (!e)
				claim_locked(c, s, b);
		}
		pthread_mutex_unlock(&s->lock);
		bufio_buffer_put(c, b);
	}
	e = e ? e : write_and_wait(c, claimed, flags);
	if (!err)
		err = e;
	/* Writes of these blocks by others may not have been FUA: the pins',
	 * and those that ended before this looked (the block was clean). */
	if ((flags & FM_BDEV_FUA) && !err &&
	    atomic_load(&c->nonfua_writes) != atomic_load(&c->flushed_writes))
		err = bufio_issue_flush(c);
	return err;
}

int bufio_writeback_pinned(struct bufio_client *c, struct bufio_buffer **pins, size_t n,
			   unsigned flags)
{
	struct bufio_vec claimed = { 0 };
	int r = writeback_sync(c, &claimed, pins, n, flags);

	free(claimed.v);
	return r;
}

int bufio_write_moved(struct bufio_client *c, struct bufio_buffer *b, uint64_t block)
{
	struct bufio_shard *s = bufio_shard_of(c, b->block);
	struct bufio_io_waiter w;

	pthread_mutex_lock(&s->lock);
	while ((b->state & BUFIO_B_WRITING) || b->modifiers)
		bufio_shard_wait_locked(s);
	b->state |= BUFIO_B_WRITING;
	b->write_start = 0;
	b->write_end = c->block_size;
	b->write_data = b->data;
	atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
	bufio_relink_locked(s, b, BUFIO_LIST_WRITING);
	pthread_mutex_unlock(&s->lock);

	if (c->write_callback)
		c->write_callback(b);
	waiter_init(&w);
	b->io_next = NULL;
	b->io_waiter = &w;
	b->io_flags = BUFIO_RUN_MOVED;
	b->io_block = block;
	submit_write_run(c, b, 1, 0);
	return waiter_wait(&w);
}

/*----------------------------------------------------------------*/
/* The API */

void bufio_write_dirty_buffers_async(struct bufio_client *c)
{
	bufio_writeback_start(c, BUFIO_WB_ALL, 0);
}

/* Collect the buffers of the dirty, writing and failed lists in
 * [@block, @block + @n). */
static int collect_dirty(struct bufio_client *c, uint64_t block, uint64_t n,
			 struct bufio_vec *claimed, struct bufio_vec *pins)
{
	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];
		/* The writing list first: a claim moves a buffer onto it. */
		struct bufio_list *lists[] = { &s->writing, &s->dirty, &s->failed };
		int r = 0;

		pthread_mutex_lock(&s->lock);
		for (unsigned l = 0; l < FM_ARRAY_SIZE(lists) && !r; l++) {
			struct bufio_list *pos, *next;

			for (pos = lists[l]->next; pos != lists[l] && !r; pos = next) {
				struct bufio_buffer *b = bufio_container_of(pos, struct bufio_buffer,
									    lru);

				next = pos->next;
				if (b->block - block < n)
					r = collect_locked(c, b, claimed, pins);
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (r)
			return r;
	}
	return 0;
}

/* Write and wait what was collected; on a collection error only release. */
static int finish(struct bufio_client *c, int r, struct bufio_vec *claimed,
		  struct bufio_vec *pins, unsigned flags)
{
	int e = writeback_sync(c, claimed, pins->v, pins->n, flags);

	free(claimed->v);
	free(pins->v);
	return r ? r : e;
}

int bufio_write_dirty_buffers(struct bufio_client *c)
{
	struct bufio_vec claimed = { 0 }, pins = { 0 };
	int r, a, f;

	r = collect_dirty(c, 0, UINT64_MAX, &claimed, &pins);
	r = finish(c, r, &claimed, &pins, 0);
	a = atomic_exchange(&c->write_error, 0);
	f = bufio_issue_flush(c);
	if (a)
		return a;
	if (r)
		return r;
	return f;
}

struct dirty_range {
	struct bufio_client *c;
	struct bufio_vec claimed, pins;
};

static int dirty_range_visit(struct bufio_shard *s, struct bufio_buffer *b, void *ctx)
{
	struct dirty_range *d = ctx;

	(void)s;
	if (!(b->state & (BUFIO_B_DIRTY | BUFIO_B_WRITING)))
		return 0;
	return collect_locked(d->c, b, &d->claimed, &d->pins);
}

int bufio_write_dirty_range(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
			    unsigned flags)
{
	struct dirty_range d = { .c = c };
	int r;

	if (n_blocks > 2ull * bufio_count(c, BUFIO_COUNT_BUFFERS) + 64)
		r = collect_dirty(c, block, n_blocks, &d.claimed, &d.pins);
	else
		r = bufio_index_walk_range(c, block, n_blocks, dirty_range_visit, NULL, &d);
	return finish(c, r, &d.claimed, &d.pins, flags);
}

int bufio_write_buffer(struct bufio_buffer *b, unsigned flags)
{
	/* (collected as by a range: claimed at once if it may be, so that
	 * only a busy one is a pin, which costs a flush under FUA) */
	return bufio_write_dirty_range(b->c, b->block, 1, flags);
}

int bufio_issue_flush(struct bufio_client *c)
{
	unsigned long long seen = atomic_load(&c->nonfua_writes), was;
	int r = c->bdev.ops->flush(c->bdev.dev);

	/* Every write counted before the flush began is durable now
	 * (flushed_writes only grows: flushes may end out of order). */
	was = atomic_load(&c->flushed_writes);
	while (r == 0 && was < seen && !atomic_compare_exchange_weak(&c->flushed_writes, &was, seen))
		;
	return r;
}

int bufio_issue_discard(struct bufio_client *c, uint64_t block, uint64_t count)
{
	if (!c->bdev.ops->discard)
		return -EOPNOTSUPP;
	if (!count)
		return 0;
	return c->bdev.ops->discard(c->bdev.dev, block_sector(c, block),
				    count << c->sector_shift);
}

/* bufio_discard() and bufio_write_zeroes(): @op is the device's discard or
 * write_zeroes. */
static int zero_blocks(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		       int (*op)(void *dev, uint64_t sector, uint64_t nr_sectors))
{
	int r;

	if (!op)
		return -EOPNOTSUPP;
	if (!n_blocks)
		return 0;
	if (block + n_blocks < block || n_blocks > (UINT64_MAX >> FM_SECTOR_SHIFT) >> c->sector_shift)
		return -EINVAL;
	/* Nothing older may land on the device after the zeroes. */
	r = bufio_write_dirty_range(c, block, n_blocks, 0);
	if (r < 0)
		return r;
	bufio_forget_buffers(c, block, n_blocks);
	r = op(c->bdev.dev, block_sector(c, block), n_blocks << c->sector_shift);
	if (r < 0)
		return r;
	/* A block that stayed cached (someone held it, or read it meanwhile)
	 * would show its old data: zero it in the cache as well.  A read in
	 * flight (a read, an async read or a prefetch that forget_buffers had
	 * to leave) may have been served before the op and complete after
	 * it, caching the old data: wait for it (and for a fill, which may
	 * turn into such a read), then zero that too. */
	for (uint64_t blk = block; blk < block + n_blocks; blk++) {
		struct bufio_buffer *b;

		if (bufio_get_settled(c, blk, &b) < 0)
			continue;
		memset(bufio_begin_modify(b), 0, c->block_size);
		bufio_mark_buffer_dirty(b);
		bufio_release(b);
	}
	return 0;
}

int bufio_discard(struct bufio_client *c, uint64_t block, uint64_t n_blocks)
{
	return zero_blocks(c, block, n_blocks, c->bdev.ops->discard);
}

int bufio_write_zeroes(struct bufio_client *c, uint64_t block, uint64_t n_blocks)
{
	return zero_blocks(c, block, n_blocks, c->bdev.ops->write_zeroes);
}
