/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Buffer memory: allocation within the client's limit, the reserve, and
 * eviction.
 *
 * Where a buffer comes from, in order (bufio_alloc_buffer):
 *   1. new memory while the client is below its limit;
 *   2. a clean, idle buffer evicted by CLOCK (its memory is reused as is);
 *   3. the reserve;
 *   4. otherwise dirty buffers are written back (the oldest first, see
 *      writeback.c) and the thread waits for a release, a completed I/O
 *      or a freed buffer, then starts over.  If
 *      nothing at all can change (no I/O in flight, nothing held, nothing
 *      writable: e.g. every buffer's write failed) it allocates past the
 *      limit rather than wait forever.
 *
 * CLOCK: each shard's clean list is a ring whose head is the hand.  A hit
 * sets the buffer's reference bit; the hand clears set bits and moves those
 * buffers (and held ones) to the tail; the first idle buffer with a clear
 * bit is the victim.  One reclaim turns each shard's hand at most once
 * around its ring before it goes on to the next shard, and goes over all
 * shards at most twice: together the shards behave like one clock (a hot
 * buffer alone in its shard is not evicted just because its own hand came
 * back to it).  Dirty buffers are never evicted (they are on the
 * dirty list); held buffers (ref > 1) are skipped.
 *
 * A freed buffer refills the reserve first (as dm-bufio does), so that the
 * reserve is whole again once the thread that used it released its buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bufio_i.h"

#define BUFIO_WRITEBACK_RATIO 3u
#define BUFIO_ALLOC_WAIT_MS 100

struct bufio_buffer *bufio_new_buffer_mem(struct bufio_client *c)
{
	struct bufio_buffer *b = NULL;
	void *data;

	data = bufio_data_alloc(c);
	if (!data)
		return NULL;
	pthread_mutex_lock(&c->lock);
	if (!bufio_list_empty(&c->spare)) {
		b = bufio_container_of(c->spare.next, struct bufio_buffer, lru);
		bufio_list_del(&b->lru);
	}
	pthread_mutex_unlock(&c->lock);
	if (!b) {
		b = calloc(1, sizeof(*b) + c->aux_size);
		if (!b) {
			bufio_data_free(c, data);
			return NULL;
		}
		b->c = c;
		bufio_list_init(&b->lru);
	}
	b->data = data;
	bufio_account_bytes(c, (int64_t)c->buffer_cost);
	return b;
}

void bufio_destroy_buffer(struct bufio_client *c, struct bufio_buffer *b)
{
	assert(!b->write_data || b->write_data == b->data);
	bufio_data_free(c, b->data);
	b->data = NULL;
	bufio_account_bytes(c, -(int64_t)c->buffer_cost);
	/* The header is kept: a lock-free lookup may still be reading it. */
	pthread_mutex_lock(&c->lock);
	bufio_list_add_tail(&b->lru, &c->spare);
	pthread_mutex_unlock(&c->lock);
}

void bufio_free_buffer(struct bufio_client *c, struct bufio_buffer *b)
{
	assert(!(b->state & BUFIO_B_HASHED) && b->list == BUFIO_LIST_NONE);
	pthread_mutex_lock(&c->lock);
	if (c->n_reserve < c->reserved_buffers) {
		b->state = 0;
		bufio_list_add_tail(&b->lru, &c->reserve);
		c->n_reserve++;
		c->free_gen++;
		pthread_cond_broadcast(&c->free_cond);
		pthread_mutex_unlock(&c->lock);
		return;
	}
	pthread_mutex_unlock(&c->lock);
	bufio_destroy_buffer(c, b);
	bufio_wake_free(c);
}

static struct bufio_buffer *reserve_take(struct bufio_client *c)
{
	struct bufio_buffer *b = NULL;

	pthread_mutex_lock(&c->lock);
	if (!bufio_list_empty(&c->reserve)) {
		b = bufio_container_of(c->reserve.next, struct bufio_buffer, lru);
		bufio_list_del(&b->lru);
		c->n_reserve--;
	}
	pthread_mutex_unlock(&c->lock);
	return b;
}

/* One turn of the shard's hand at most: a buffer whose bit it cleared is
 * not taken in the same call (other shards get their turn first). */
static struct bufio_buffer *clock_evict_locked(struct bufio_shard *s)
{
	unsigned budget = atomic_load_explicit(&s->n_clean, memory_order_relaxed);

	while (budget-- && !bufio_list_empty(&s->clean)) {
		struct bufio_buffer *b = bufio_container_of(s->clean.next,
							    struct bufio_buffer, lru);

		if (!atomic_load_explicit(&b->accessed, memory_order_relaxed) &&
		    bufio_claim_idle_locked(b)) {
			bufio_index_remove_locked(s, b);
			s->evictions++;
			return b;
		}
		atomic_store_explicit(&b->accessed, 0, memory_order_relaxed);
		bufio_list_del(&b->lru);
		bufio_list_add_tail(&b->lru, &s->clean);
	}
	return NULL;
}

struct bufio_buffer *bufio_reclaim_clean(struct bufio_client *c)
{
	unsigned start;

	start = atomic_fetch_add_explicit(&c->clock_hand, 1, memory_order_relaxed);
	/* Two rounds over the shards: the first may only clear bits. */
	for (unsigned i = 0; i < 2 * c->nshards; i++) {
		struct bufio_shard *s = &c->shards[(start + i) & c->shard_mask];
		struct bufio_buffer *b;

		if (!atomic_load_explicit(&s->n_clean, memory_order_relaxed)) /* a hint */
			continue;
		pthread_mutex_lock(&s->lock);
		b = clock_evict_locked(s);
		pthread_mutex_unlock(&s->lock);
		if (b)
			return b;
	}
	return NULL;
}

bool bufio_dirty_dominates(const struct bufio_client *c)
{
	unsigned dirty = bufio_count(c, BUFIO_COUNT_DIRTY);
	unsigned clean = bufio_count(c, BUFIO_COUNT_CLEAN);

	/* (and something is left to start) */
	return dirty > BUFIO_WRITEBACK_RATIO * clean &&
	       atomic_load_explicit(&c->bytes, memory_order_relaxed) > bufio_client_limit(c) / 2 &&
	       bufio_count(c, BUFIO_COUNT_CLAIMABLE);
}

/* Whether something in flight or held may free a buffer later, or some
 * clean buffer appeared since the caller looked (another thread's writes
 * may have completed in between). */
static bool may_progress(struct bufio_client *c)
{
	if (atomic_load(&c->nr_io) || bufio_count(c, BUFIO_COUNT_CLEAN))
		return true;
	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];
		bool busy = false;

		struct bufio_buffer *b, *next;

		pthread_mutex_lock(&s->lock);
		bufio_index_for_each_locked(s, b, next)
			busy |= atomic_load(&b->ref) > 1;
		pthread_mutex_unlock(&s->lock);
		if (busy)
			return true;
	}
	return false;
}

static bool below_limit(struct bufio_client *c)
{
	return atomic_load_explicit(&c->bytes, memory_order_relaxed) + c->buffer_cost <=
	       bufio_client_limit(c);
}

struct bufio_buffer *bufio_alloc_buffer(struct bufio_client *c, enum bufio_alloc_mode mode)
{
	struct bufio_buffer *b;

	/* dm-bufio's watermark check, on every allocation. */
	if (bufio_dirty_dominates(c))
		bufio_writeback_start(c, BUFIO_WB_PRESSURE, 0);
	for (;;) {
		uint64_t gen;
		struct timespec ts;

		if (below_limit(c) && (b = bufio_new_buffer_mem(c)))
			return b;
		if ((b = bufio_reclaim_clean(c)))
			return b;
		if (mode == BUFIO_ALLOC_NOWAIT)
			return NULL;
		if ((b = reserve_take(c)))
			return b;

		/* Announce ourselves before the last look, so that a release
		 * after it sees a waiter and bumps free_gen. */
		pthread_mutex_lock(&c->lock);
		atomic_fetch_add(&c->nr_free_waiters, 1);
		gen = c->free_gen;
		pthread_mutex_unlock(&c->lock);

		b = bufio_reclaim_clean(c);
		if (!b && below_limit(c))
			b = bufio_new_buffer_mem(c);
		if (!b && !bufio_writeback_start(c, BUFIO_WB_STARVED, 0) &&
		    !may_progress(c)) {
			fm_debug("bufio: nothing reclaimable, allocating past the limit");
			b = bufio_new_buffer_mem(c);
			if (!b) {
				atomic_fetch_sub(&c->nr_free_waiters, 1);
				return NULL;
			}
		}
		if (b) {
			atomic_fetch_sub(&c->nr_free_waiters, 1);
			return b;
		}

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += BUFIO_ALLOC_WAIT_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&c->lock);
		while (gen == c->free_gen)
			if (pthread_cond_timedwait(&c->free_cond, &c->lock, &ts))
				break;
		pthread_mutex_unlock(&c->lock);
		atomic_fetch_sub(&c->nr_free_waiters, 1);
	}
}

void bufio_free_list(struct bufio_client *c, struct bufio_list *list)
{
	while (!bufio_list_empty(list)) {
		struct bufio_buffer *b = bufio_container_of(list->next, struct bufio_buffer, lru);

		bufio_list_del(&b->lru);
		bufio_free_buffer(c, b);
	}
}

unsigned bufio_evict_old(struct bufio_client *c, uint64_t cutoff_ns, uint64_t keep_bytes)
{
	uint64_t now = bufio_now_ns();
	unsigned n = 0;

	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];
		struct bufio_list victims;
		struct bufio_list *pos, *next;

		uint64_t floor = UINT64_MAX;

		bufio_list_init(&victims);
		pthread_mutex_lock(&s->lock);
		/* Nothing old enough here: no walk over every clean buffer (a
		 * cache of 100k+ of them, every cleaner pass). */
		if (s->clean_floor >= cutoff_ns) {
			pthread_mutex_unlock(&s->lock);
			continue;
		}
		for (pos = s->clean.next; pos != &s->clean; pos = next) {
			struct bufio_buffer *b = bufio_container_of(pos, struct bufio_buffer, lru);

			next = pos->next;
			if (atomic_load(&c->bytes) <= keep_bytes + (uint64_t)n * c->buffer_cost)
				break;
			if (atomic_load_explicit(&b->touched, memory_order_relaxed)) {
				/* Used since the last look: now is its time. */
				atomic_store_explicit(&b->touched, 0, memory_order_relaxed);
				b->stamp = now;
			}
			if (b->stamp >= cutoff_ns || !bufio_claim_idle_locked(b)) {
				if (b->stamp < floor)
					floor = b->stamp;
				continue;
			}
			bufio_index_remove_locked(s, b);
			s->evictions++;
			bufio_list_add_tail(&b->lru, &victims);
			n++;
		}
		/* A whole walk saw every stamp left; a partial one keeps the old
		 * floor, still a lower bound (stamps only grow). */
		if (pos == &s->clean)
			s->clean_floor = floor;
		pthread_mutex_unlock(&s->lock);
		bufio_free_list(c, &victims);
	}
	return n;
}

void bufio_trim_to_limit(struct bufio_client *c)
{
	while (atomic_load(&c->bytes) > bufio_client_limit(c)) {
		struct bufio_buffer *b = bufio_reclaim_clean(c);

		if (!b)
			break;
		bufio_free_buffer(c, b);
	}
}
