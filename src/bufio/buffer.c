/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Getting, releasing, modifying, forgetting and moving buffers.
 *
 * Invariants (besides those of index.c):
 *   - A hit takes no lock: bufio_index_get_lockless() takes a reference
 *     (inc-if-not-zero-or-frozen) and checks the buffer's identity after;
 *     if that fails for any reason the shard lock is taken and the index
 *     searched again.  A hit sets the CLOCK bit.  A buffer enters the
 *     index with the bit clear: only a second reference protects it from
 *     the hand, so one-time (scan) blocks go first.  Release is a
 *     lock-free decrement (ref never reaches 0 while the buffer is in the
 *     index, because the index owns one reference; taking a buffer out of
 *     the index needs ref 1 -> 0 under the lock).
 *   - A missing block is inserted READING by the thread that allocated its
 *     buffer, which then issues the one read; everyone else who finds it
 *     READING waits on the shard's condition variable (or, asynchronously,
 *     on the buffer's read_waiters list).  A failed read takes the buffer
 *     out of the index before READING is cleared, so a later lookup reads
 *     again; the waiters see read_error.
 *   - While BUFIO_B_WRITING, write_data is what the device receives; a
 *     holder changes data only between bufio_begin_modify() and
 *     mark-dirty (modifiers > 0), and begin_modify either makes data a
 *     private copy (sole holder) or waits for the write.  Writeback never
 *     claims a buffer with modifiers > 0.
 *   - A buffer made by bufio_new() enters the index FILLING: others wait
 *     for it as for a read, until its creator marks it dirty (its data is
 *     then valid) or releases it unfilled (it is then read from the
 *     device).  So nobody ever sees the undefined data of a new buffer.
 *   - The alloc callback runs before a buffer enters the index, so nobody
 *     sees a buffer whose aux area it has not initialised.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bufio_i.h"

#define BUFIO_PREFETCH_RUN 256u

enum acquire_mode {
	ACQ_READ, /* read from the device if missing */
	ACQ_NEW,  /* insert without reading if missing */
	ACQ_NEW_NOWAIT, /* ACQ_NEW, but -EWOULDBLOCK where it would wait */
};

static inline void mark_used(struct bufio_buffer *b)
{
	/* Read first: a hot buffer's line is not written on every hit. */
	if (!atomic_load_explicit(&b->accessed, memory_order_relaxed))
		atomic_store_explicit(&b->accessed, 1, memory_order_relaxed);
	if (!atomic_load_explicit(&b->touched, memory_order_relaxed))
		atomic_store_explicit(&b->touched, 1, memory_order_relaxed);
}

static inline void hit_locked(struct bufio_shard *s, struct bufio_buffer *b)
{
	atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
	mark_used(b);
	s->hits++;
}

static atomic_uint hit_slot_next;
static _Thread_local unsigned hit_slot = UINT32_MAX;

/* The hit path: no lock, no shared line written. */
static inline struct bufio_buffer *hit_lockless(struct bufio_client *c, struct bufio_shard *s,
						uint64_t block)
{
	struct bufio_buffer *b = bufio_index_get_lockless(s, block);

	if (fm_likely(b)) {
		mark_used(b);
		if (fm_unlikely(hit_slot == UINT32_MAX))
			hit_slot = atomic_fetch_add(&hit_slot_next, 1) % BUFIO_HIT_SLOTS;
		atomic_fetch_add_explicit(&c->hit_slots[hit_slot].hits, 1, memory_order_relaxed);
	}
	return b;
}

/* A fresh or reclaimed buffer about to represent @block. */
static void prepare(struct bufio_client *c, struct bufio_buffer *b, uint64_t block)
{
	b->block = block;
	b->state = 0;
	b->list = BUFIO_LIST_NONE;
	b->accessed = 0;
	b->touched = 0;
	b->modifiers = 0;
	b->dirty_start = b->dirty_end = 0;
	b->write_start = b->write_end = 0;
	b->read_error = 0;
	b->write_data = NULL;
	b->hnext = NULL;
	b->read_waiters = NULL;
	b->io_next = NULL;
	b->io_waiter = NULL;
	b->io_flags = 0;
	atomic_store_explicit(&b->ref, 0, memory_order_relaxed);
	if (c->alloc_callback)
		c->alloc_callback(b);
}

/* Wait for the read of found buffer @b (ref taken by the caller). */
static int wait_read_locked(struct bufio_shard *s, struct bufio_buffer *b)
{
	while (b->state & BUFIO_B_NOT_VALID)
		bufio_shard_wait_locked(s);
	return b->read_error;
}

static int acquire(struct bufio_client *c, uint64_t block, enum acquire_mode mode,
		   struct bufio_buffer **ret_b)
{
	struct bufio_shard *s = bufio_shard_of(c, block);
	struct bufio_buffer *b, *nb = NULL;
	int r = 0;

	bool nowait = mode == ACQ_NEW_NOWAIT;

	b = hit_lockless(c, s, block);
	if (fm_likely(b)) {
		*ret_b = b;
		return 0;
	}
	if (nowait)
		mode = ACQ_NEW;
again:
	pthread_mutex_lock(&s->lock);
	b = bufio_index_find_locked(s, block);
	if (!b) {
		if (!nb) {
			pthread_mutex_unlock(&s->lock);
			nb = bufio_alloc_buffer(c, nowait ? BUFIO_ALLOC_NOWAIT : BUFIO_ALLOC_WAIT);
			if (!nb)
				return nowait ? -EWOULDBLOCK : -ENOMEM;
			prepare(c, nb, block);
			pthread_mutex_lock(&s->lock);
			b = bufio_index_find_locked(s, block);
		}
		if (!b && bufio_around_blocks_locked(c, block)) {
			/* A write-around of the block is in flight. */
			pthread_mutex_unlock(&s->lock);
			if (nowait) {
				bufio_free_buffer(c, nb);
				return -EWOULDBLOCK;
			}
			bufio_around_wait(c, block);
			goto again;
		}
		if (!b) {
			b = nb;
			b->stamp = bufio_now_ns();
			if (mode == ACQ_NEW) {
				/* Not valid for anyone else until filled. */
				atomic_store_explicit(&b->ref, 2, memory_order_relaxed);
				b->state = BUFIO_B_FILLING;
				bufio_index_insert_locked(s, b);
				bufio_relink_locked(s, b, BUFIO_LIST_CLEAN);
			} else {
				/* index + holder + the read */
				atomic_store_explicit(&b->ref, 3, memory_order_relaxed);
				b->state = BUFIO_B_READING;
				bufio_index_insert_locked(s, b);
			}
			s->misses++;
			pthread_mutex_unlock(&s->lock);
			if (mode == ACQ_NEW) {
				*ret_b = b;
				return 0;
			}
			bufio_submit_read_run(c, b, 1);
			pthread_mutex_lock(&s->lock);
			r = wait_read_locked(s, b);
			pthread_mutex_unlock(&s->lock);
			if (r) {
				bufio_buffer_put(c, b);
				return r;
			}
			*ret_b = b;
			return 0;
		}
	}

	if ((b->state & BUFIO_B_NOT_VALID) && nowait) {
		pthread_mutex_unlock(&s->lock);
		if (nb)
			bufio_free_buffer(c, nb);
		return -EWOULDBLOCK;
	}
	if (b->state & BUFIO_B_NOT_VALID) {
		atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
		s->hits++;
		r = wait_read_locked(s, b);
		if (!r)
			b->accessed = 1;
	} else {
		hit_locked(s, b);
	}
	pthread_mutex_unlock(&s->lock);
	if (nb)
		bufio_free_buffer(c, nb);
	if (r) {
		bufio_buffer_put(c, b);
		return r;
	}
	*ret_b = b;
	return 0;
}

int bufio_read(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b)
{
	return acquire(c, block, ACQ_READ, ret_b);
}

int bufio_new(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b)
{
	return acquire(c, block, ACQ_NEW, ret_b);
}

int bufio_new_nowait(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b)
{
	return acquire(c, block, ACQ_NEW_NOWAIT, ret_b);
}

int bufio_get(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b)
{
	struct bufio_shard *s = bufio_shard_of(c, block);
	struct bufio_buffer *b;

	b = hit_lockless(c, s, block);
	if (fm_likely(b)) {
		*ret_b = b;
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	b = bufio_index_find_locked(s, block);
	if (!b || (b->state & BUFIO_B_NOT_VALID)) {
		s->misses++;
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	hit_locked(s, b);
	pthread_mutex_unlock(&s->lock);
	*ret_b = b;
	return 0;
}

int bufio_get_settled(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b)
{
	struct bufio_shard *s = bufio_shard_of(c, block);
	struct bufio_buffer *b;
	int r;

	b = bufio_index_get_lockless(s, block);
	if (b) {
		*ret_b = b;
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	b = bufio_index_find_locked(s, block);
	if (!b) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
	r = wait_read_locked(s, b);
	pthread_mutex_unlock(&s->lock);
	if (r) {
		/* The read failed: the block left the cache. */
		bufio_buffer_put(c, b);
		return -ENOENT;
	}
	*ret_b = b;
	return 0;
}

/*
 * bufio_read_async() and its nowait variant; @nb (may be NULL) is a buffer
 * prepared for @block (a deferred read's, see bufio_read_async_restart),
 * used or freed here.  The buffer is taken before a read is deferred
 * behind a write-around, so that its restart, from the write's completion,
 * never waits for memory: the caller waits (or, nowait, is refused) now.
 */
static int read_async(struct bufio_client *c, uint64_t block, bool nowait, bufio_read_cb cb,
		      void *ctx, struct bufio_buffer *nb)
{
	struct bufio_shard *s = bufio_shard_of(c, block);
	struct bufio_read_waiter *w = NULL;
	struct bufio_around_waiter *aw = NULL;
	struct bufio_buffer *b;

	b = hit_lockless(c, s, block);
	if (fm_likely(b)) {
		if (nb)
			bufio_free_buffer(c, nb);
		cb(ctx, b, 0);
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	for (;;) {
		b = bufio_index_find_locked(s, block);
		if (b && !(b->state & BUFIO_B_NOT_VALID)) {
			hit_locked(s, b);
			pthread_mutex_unlock(&s->lock);
			bufio_obj_put(c, w);
			bufio_obj_put(c, aw);
			if (nb)
				bufio_free_buffer(c, nb);
			cb(ctx, b, 0);
			return 0;
		}
		if (!w) {
			pthread_mutex_unlock(&s->lock);
			w = bufio_obj_get(c);
			if (!w) {
				if (nb)
					bufio_free_buffer(c, nb);
				return -ENOMEM;
			}
			w->cb = cb;
			w->ctx = ctx;
			pthread_mutex_lock(&s->lock);
			continue;
		}
		if (b) {
			/* Join the read in flight; the waiter owns a ref. */
			atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
			s->hits++;
			w->next = b->read_waiters;
			b->read_waiters = w;
			pthread_mutex_unlock(&s->lock);
			bufio_obj_put(c, aw);
			if (nb)
				bufio_free_buffer(c, nb);
			return 0;
		}
		if (!nb) {
			pthread_mutex_unlock(&s->lock);
			nb = bufio_alloc_buffer(c, nowait ? BUFIO_ALLOC_NOWAIT : BUFIO_ALLOC_WAIT);
			if (!nb) {
				bufio_obj_put(c, w);
				bufio_obj_put(c, aw);
				return nowait ? -EWOULDBLOCK : -ENOMEM;
			}
			prepare(c, nb, block);
			pthread_mutex_lock(&s->lock);
			continue;
		}
		if (bufio_around_blocks_locked(c, block)) {
			/* A write-around of the block is in flight: read after
			 * it, into @nb. */
			if (!aw) {
				pthread_mutex_unlock(&s->lock);
				aw = bufio_obj_get(c);
				if (!aw) {
					bufio_obj_put(c, w);
					bufio_free_buffer(c, nb);
					return -ENOMEM;
				}
				aw->block = block;
				aw->cb = cb;
				aw->ctx = ctx;
				pthread_mutex_lock(&s->lock);
				continue;
			}
			aw->nb = nb;
			if (bufio_around_defer_locked(c, aw)) {
				pthread_mutex_unlock(&s->lock);
				bufio_obj_put(c, w);
				return 0;
			}
		}
		break;
	}
	bufio_obj_put(c, aw);
	/* index + the waiter's hold + the read */
	b = nb;
	atomic_store_explicit(&b->ref, 3, memory_order_relaxed);
	b->state = BUFIO_B_READING;
	b->stamp = bufio_now_ns();
	w->next = NULL;
	b->read_waiters = w;
	bufio_index_insert_locked(s, b);
	s->misses++;
	pthread_mutex_unlock(&s->lock);
	bufio_submit_read_run(c, b, 1);
	return 0;
}

int bufio_read_async(struct bufio_client *c, uint64_t block, bufio_read_cb cb, void *ctx)
{
	return read_async(c, block, false, cb, ctx, NULL);
}

int bufio_read_async_nowait(struct bufio_client *c, uint64_t block, bufio_read_cb cb,
			    void *ctx)
{
	return read_async(c, block, true, cb, ctx, NULL);
}

int bufio_read_async_restart(struct bufio_client *c, const struct bufio_around_waiter *w)
{
	return read_async(c, w->block, true, w->cb, w->ctx, w->nb);
}

int bufio_prefetch(struct bufio_client *c, uint64_t block, unsigned n_blocks)
{
	struct bufio_buffer *head = NULL, *tail = NULL;
	unsigned run = 0;
	int started = 0;

	for (unsigned i = 0; i < n_blocks; i++) {
		uint64_t blk = block + i;
		struct bufio_shard *s = bufio_shard_of(c, blk);
		struct bufio_buffer *nb;
		bool cached;

		pthread_mutex_lock(&s->lock);
		cached = bufio_index_find_locked(s, blk) != NULL;
		pthread_mutex_unlock(&s->lock);
		if (!cached) {
			nb = bufio_alloc_buffer(c, BUFIO_ALLOC_NOWAIT);
			if (!nb)
				break;
			prepare(c, nb, blk);
			pthread_mutex_lock(&s->lock);
			/* (a block being written around is skipped as if cached) */
			cached = bufio_index_find_locked(s, blk) != NULL ||
				 bufio_around_blocks_locked(c, blk);
			if (!cached) {
				/* index + the read; nobody holds it */
				atomic_store_explicit(&nb->ref, 2, memory_order_relaxed);
				nb->state = BUFIO_B_READING;
				nb->stamp = bufio_now_ns();
				bufio_index_insert_locked(s, nb);
			}
			pthread_mutex_unlock(&s->lock);
			if (cached) {
				bufio_free_buffer(c, nb);
			} else {
				if (tail)
					tail->io_next = nb;
				else
					head = nb;
				tail = nb;
				run++;
				started++;
			}
		}
		if (head && (cached || run == BUFIO_PREFETCH_RUN)) {
			bufio_submit_read_run(c, head, run);
			head = tail = NULL;
			run = 0;
		}
	}
	if (head)
		bufio_submit_read_run(c, head, run);
	return started;
}

/*
 * The creator of a bufio_new() buffer releases it without having marked it
 * dirty: its data means nothing, so it becomes what bufio_read() would
 * have made, a read of the device (for the threads waiting for it).  The
 * creator's reference becomes the read's.
 */
static void release_unfilled(struct bufio_client *c, struct bufio_buffer *b)
{
	struct bufio_shard *s = bufio_shard_of(c, b->block);

	pthread_mutex_lock(&s->lock);
	assert(b->state & BUFIO_B_FILLING);
	b->state = (b->state & ~BUFIO_B_FILLING) | BUFIO_B_READING;
	bufio_relink_locked(s, b, BUFIO_LIST_NONE);
	pthread_mutex_unlock(&s->lock);
	b->io_next = NULL;
	bufio_submit_read_run(c, b, 1);
}

void bufio_release(struct bufio_buffer *b)
{
	struct bufio_client *c = b->c;

	/* Only the creator can hold a FILLING buffer (others wait inside
	 * acquire), and only it clears the bit: no lock needed to look. */
	if (fm_unlikely(atomic_load_explicit(&b->state, memory_order_relaxed) &
			BUFIO_B_FILLING)) {
		release_unfilled(c, b);
		return;
	}
	bufio_buffer_put(c, b);
	bufio_wake_free(c);
}

/* End FILLING (lock held); returns the async waiters to call (unlocked). */
static struct bufio_read_waiter *end_filling_locked(struct bufio_shard *s,
						    struct bufio_buffer *b)
{
	struct bufio_read_waiter *w = b->read_waiters;

	b->state &= ~BUFIO_B_FILLING;
	b->read_waiters = NULL;
	bufio_shard_wake_locked(s);
	return w;
}

/* Hand the buffer to async waiters (each owns a reference). */
static void call_waiters(struct bufio_buffer *b, struct bufio_read_waiter *w)
{
	struct bufio_client *c = b->c;

	while (w) {
		struct bufio_read_waiter *next = w->next;

		w->cb(w->ctx, b, 0);
		bufio_obj_put(c, w);
		w = next;
	}
}

/*----------------------------------------------------------------*/

static void *begin_modify(struct bufio_buffer *b, bool nowait)
{
	struct bufio_client *c = b->c;
	struct bufio_shard *s = bufio_shard_of(c, b->block);
	void *data;

	pthread_mutex_lock(&s->lock);
	while ((b->state & BUFIO_B_WRITING) && b->write_data == b->data) {
		void *copy = NULL;

		/* index + us + the write: nobody else has the pointer. */
		if (atomic_load(&b->ref) != 3) {
			if (nowait) {
				pthread_mutex_unlock(&s->lock);
				return NULL;
			}
			bufio_shard_wait_locked(s);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		copy = bufio_data_alloc(c);
		pthread_mutex_lock(&s->lock);
		if (!copy) {
			if (nowait && (b->state & BUFIO_B_WRITING)) {
				pthread_mutex_unlock(&s->lock);
				return NULL;
			}
			if (b->state & BUFIO_B_WRITING)
				bufio_shard_wait_locked(s);
			continue;
		}
		/* Frozen, no lock-free hit can take the old pointer meanwhile. */
		if ((b->state & BUFIO_B_WRITING) && b->write_data == b->data &&
		    bufio_freeze_locked(b, 3)) {
			memcpy(copy, b->data, c->block_size);
			b->data = copy;
			bufio_thaw(b);
			s->cow_copies++;
			bufio_account_bytes(c, (int64_t)c->block_size);
			break;
		}
		bufio_data_free(c, copy);
	}
	b->modifiers++;
	data = b->data;
	pthread_mutex_unlock(&s->lock);
	return data;
}

void *bufio_begin_modify(struct bufio_buffer *b)
{
	return begin_modify(b, false);
}

void *bufio_begin_modify_nowait(struct bufio_buffer *b)
{
	return begin_modify(b, true);
}

void bufio_mark_partial_buffer_dirty(struct bufio_buffer *b, unsigned start, unsigned end)
{
	struct bufio_client *c = b->c;
	struct bufio_shard *s = bufio_shard_of(c, b->block);
	struct bufio_read_waiter *w = NULL;

	assert(start < end && end <= c->block_size);
	pthread_mutex_lock(&s->lock);
	assert(!(b->state & BUFIO_B_READING));
	if (b->state & BUFIO_B_FILLING)
		w = end_filling_locked(s, b);
	if (b->modifiers)
		b->modifiers--;
	if (!(b->state & BUFIO_B_DIRTY)) {
		b->state |= BUFIO_B_DIRTY;
		b->dirty_start = start;
		b->dirty_end = end;
		b->stamp = bufio_now_ns();
		/* (one being written stays on the writing list until then) */
		if ((b->state & BUFIO_B_HASHED) && !(b->state & BUFIO_B_WRITING))
			bufio_relink_locked(s, b, BUFIO_LIST_DIRTY);
	} else {
		if (start < b->dirty_start)
			b->dirty_start = start;
		if (end > b->dirty_end)
			b->dirty_end = end;
	}
	bufio_shard_wake_locked(s);
	pthread_mutex_unlock(&s->lock);
	call_waiters(b, w);
}

void bufio_mark_buffer_dirty(struct bufio_buffer *b)
{
	bufio_mark_partial_buffer_dirty(b, 0, b->c->block_size);
}

/*----------------------------------------------------------------*/

/* Take idle clean @b (ref 1) out of the index; the caller frees it. */
static bool forget_locked(struct bufio_shard *s, struct bufio_buffer *b)
{
	if ((b->state & (BUFIO_B_READING | BUFIO_B_WRITING | BUFIO_B_DIRTY)) ||
	    !bufio_claim_idle_locked(b))
		return false;
	bufio_index_remove_locked(s, b);
	return true;
}

void bufio_forget(struct bufio_client *c, uint64_t block)
{
	struct bufio_shard *s = bufio_shard_of(c, block);
	struct bufio_buffer *b;
	bool gone = false;

	pthread_mutex_lock(&s->lock);
	b = bufio_index_find_locked(s, block);
	if (b)
		gone = forget_locked(s, b);
	pthread_mutex_unlock(&s->lock);
	if (gone)
		bufio_free_buffer(c, b);
}

void bufio_forget_buffers(struct bufio_client *c, uint64_t block, uint64_t n_blocks)
{
	if (n_blocks <= 2ull * bufio_count(c, BUFIO_COUNT_BUFFERS) + 64) {
		for (uint64_t i = 0; i < n_blocks; i++)
			bufio_forget(c, block + i);
		return;
	}
	/* A range larger than the cache: walk the index instead. */
	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];
		struct bufio_list victims;
		struct bufio_buffer *b, *next;

		bufio_list_init(&victims);
		pthread_mutex_lock(&s->lock);
		bufio_index_for_each_locked(s, b, next)
			if (b->block - block < n_blocks && forget_locked(s, b))
				bufio_list_add_tail(&b->lru, &victims);
		pthread_mutex_unlock(&s->lock);
		bufio_free_list(c, &victims);
	}
}

/*----------------------------------------------------------------*/

static void lock_two(struct bufio_shard *a, struct bufio_shard *b)
{
	if (a == b) {
		pthread_mutex_lock(&a->lock);
	} else if (a < b) {
		pthread_mutex_lock(&a->lock);
		pthread_mutex_lock(&b->lock);
	} else {
		pthread_mutex_lock(&b->lock);
		pthread_mutex_lock(&a->lock);
	}
}

static void unlock_two(struct bufio_shard *a, struct bufio_shard *b)
{
	pthread_mutex_unlock(&a->lock);
	if (a != b)
		pthread_mutex_unlock(&b->lock);
}

/* Wait until pinned @nb (ref: index + our pin) is idle or gone. */
static void wait_idle(struct bufio_client *c, struct bufio_shard *s, struct bufio_buffer *nb)
{
	for (;;) {
		uint64_t gen;
		bool busy;
		struct timespec ts;

		pthread_mutex_lock(&c->lock);
		atomic_fetch_add(&c->nr_free_waiters, 1);
		gen = c->free_gen;
		pthread_mutex_unlock(&c->lock);

		pthread_mutex_lock(&s->lock);
		busy = (nb->state & BUFIO_B_HASHED) &&
		       (atomic_load(&nb->ref) > 2 ||
			(nb->state & (BUFIO_B_READING | BUFIO_B_WRITING)));
		pthread_mutex_unlock(&s->lock);
		if (busy) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_mutex_lock(&c->lock);
			while (gen == c->free_gen)
				if (pthread_cond_timedwait(&c->free_cond, &c->lock, &ts))
					break;
			pthread_mutex_unlock(&c->lock);
		}
		atomic_fetch_sub(&c->nr_free_waiters, 1);
		if (!busy)
			return;
	}
}

void bufio_release_move(struct bufio_buffer *b, uint64_t new_block)
{
	struct bufio_client *c = b->c;
	unsigned old_writes = 0;

	if (atomic_load_explicit(&b->state, memory_order_relaxed) & BUFIO_B_FILLING) {
		/* Moved unfilled: the caller's data is what it is. */
		struct bufio_shard *s = bufio_shard_of(c, b->block);
		struct bufio_read_waiter *w;

		pthread_mutex_lock(&s->lock);
		w = end_filling_locked(s, b);
		pthread_mutex_unlock(&s->lock);
		call_waiters(b, w);
	}

	for (;;) {
		struct bufio_shard *os = bufio_shard_of(c, b->block);
		struct bufio_shard *ns = bufio_shard_of(c, new_block);
		struct bufio_buffer *nb;

		if (b->block == new_block)
			break;
		lock_two(os, ns);
		nb = bufio_index_find_locked(ns, new_block);
		if (nb) {
			if (!(nb->state & (BUFIO_B_READING | BUFIO_B_WRITING)) &&
			    bufio_claim_idle_locked(nb)) {
				/* Superseded: its dirty data too. */
				bufio_index_remove_locked(ns, nb);
				unlock_two(os, ns);
				bufio_free_buffer(c, nb);
			} else {
				atomic_fetch_add_explicit(&nb->ref, 1, memory_order_relaxed);
				unlock_two(os, ns);
				wait_idle(c, ns, nb);
				bufio_buffer_put(c, nb);
			}
			continue;
		}
		if (bufio_around_blocks_locked(c, new_block)) {
			unlock_two(os, ns);
			bufio_around_wait(c, new_block);
			continue;
		}
		if ((b->state & BUFIO_B_WRITING) || b->modifiers) {
			unlock_two(os, ns);
			pthread_mutex_lock(&os->lock);
			while ((b->state & BUFIO_B_WRITING) || b->modifiers)
				bufio_shard_wait_locked(os);
			pthread_mutex_unlock(&os->lock);
			continue;
		}
		if ((b->state & BUFIO_B_DIRTY) && old_writes < 2) {
			/* The old block's changes are committed first. */
			struct bufio_buffer *pin = b;

			atomic_fetch_add_explicit(&b->ref, 1, memory_order_relaxed);
			unlock_two(os, ns);
			bufio_writeback_pinned(c, &pin, 1, 0);
			old_writes++;
			continue;
		}
		if (bufio_freeze_locked(b, 2)) {
			/* Only we hold it (and, frozen, only we will): move it. */
			bufio_index_remove_locked(os, b);
			b->block = new_block;
			b->state &= ~BUFIO_B_WRITE_ERROR;
			b->state |= BUFIO_B_DIRTY;
			b->dirty_start = 0;
			b->dirty_end = c->block_size;
			b->stamp = bufio_now_ns();
			bufio_index_insert_locked(ns, b);
			bufio_relink_locked(ns, b, BUFIO_LIST_DIRTY);
			bufio_thaw(b);
			unlock_two(os, ns);
			break;
		}
		/* Shared: write a copy to the new block, keep the buffer. */
		unlock_two(os, ns);
		bufio_write_moved(c, b, new_block);
		/* A read of new_block that raced with the write may have cached
		 * the old contents. */
		bufio_forget(c, new_block);
		break;
	}
	bufio_release(b);
}
