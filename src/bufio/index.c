/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The block index: one chained hash table per shard, with the shard's two
 * lists.  Invariants (shard lock held):
 *   - a buffer is in the index iff BUFIO_B_HASHED is set, and then it owns
 *     one reference;
 *   - list == CLEAN iff the buffer is hashed, valid, not dirty, not being
 *     written;  WRITING iff it is hashed and being written; DIRTY or FAILED
 *     iff it is hashed, dirty and not being written (FAILED: its last write
 *     failed); NONE while reading, and once out of the index;
 *   - a buffer joining the DIRTY list takes the next c->dirty_seq under the
 *     shard lock, so each DIRTY list is in dirty_seq order, oldest first,
 *     and the oldest N dirty buffers of the client are those below one
 *     sequence number (writeback.c claims them so);
 *   - n_clean/n_dirty/n_writing/n_failed count the lists, and n_unclean
 *     the last three together (it changes only when a buffer joins or
 *     leaves them as a whole: bufio_count(BUFIO_COUNT_DIRTY) reads it
 *     without the lock).
 * The table doubles when it holds more buffers than buckets; it never
 * shrinks (its size follows the largest the cache has been).
 *
 * Lock-free hits (bufio_index_get_lockless) read bucket heads, hnext,
 * block and state without the lock: those are atomics, every pointer they
 * can meet stays a valid bufio_buffer (headers are recycled, never freed,
 * while the client lives; replaced tables are kept), and a reader that
 * loses a race (a rewired chain, a buffer being reclaimed) only misses and
 * takes the locked path.
 */
#include <errno.h>
#include <stdlib.h>

#include "bufio_i.h"

#define BUFIO_INITIAL_BUCKETS 64u
/* A lock-free lookup gives up after this many links (a chain being
 * rewired by a resize, or a long one): the locked path decides. */
#define BUFIO_LOCKLESS_STEPS 8u

static struct bufio_table *table_new(unsigned n)
{
	struct bufio_table *t = calloc(1, sizeof(*t) + n * sizeof(t->slot[0]));

	if (t)
		t->mask = n - 1;
	return t;
}

int bufio_shard_init(struct bufio_shard *s)
{
	struct bufio_table *t;
	int r;

	r = pthread_mutex_init(&s->lock, NULL);
	if (r)
		return -r;
	r = pthread_cond_init(&s->cond, NULL);
	if (r) {
		pthread_mutex_destroy(&s->lock);
		return -r;
	}
	t = table_new(BUFIO_INITIAL_BUCKETS);
	if (!t) {
		pthread_cond_destroy(&s->cond);
		pthread_mutex_destroy(&s->lock);
		return -ENOMEM;
	}
	atomic_init(&s->table, t);
	bufio_list_init(&s->clean);
	bufio_list_init(&s->dirty);
	bufio_list_init(&s->writing);
	bufio_list_init(&s->failed);
	return 0;
}

void bufio_shard_fini(struct bufio_shard *s)
{
	struct bufio_table *t = atomic_load(&s->table);

	while (t) {
		struct bufio_table *older = t->older;

		free(t);
		t = older;
	}
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
}

/* Bits above those that pick the shard pick the bucket. */
static inline unsigned bucket_of(const struct bufio_table *t, uint64_t block)
{
	return (unsigned)(bufio_hash(block) >> 20) & t->mask;
}

static inline struct bufio_table *table_locked(struct bufio_shard *s)
{
	return atomic_load_explicit(&s->table, memory_order_relaxed);
}

struct bufio_table *bufio_index_table_locked(struct bufio_shard *s)
{
	return table_locked(s);
}

struct bufio_buffer *bufio_index_find_locked(struct bufio_shard *s, uint64_t block)
{
	struct bufio_table *t = table_locked(s);
	struct bufio_buffer *b = atomic_load_explicit(&t->slot[bucket_of(t, block)],
						      memory_order_relaxed);

	while (b && atomic_load_explicit(&b->block, memory_order_relaxed) != block)
		b = atomic_load_explicit(&b->hnext, memory_order_relaxed);
	return b;
}

/*
 * Buffer headers are never freed while the client lives, so every pointer
 * read here points to a bufio_buffer, perhaps one that was evicted and
 * reused meanwhile.  Once bufio_try_get() succeeded the buffer's identity
 * cannot change (removal needs ref 1 -> 0, a move needs to freeze ref), so
 * checking it after taking the reference is enough.
 */
struct bufio_buffer *bufio_index_get_lockless(struct bufio_shard *s, uint64_t block)
{
	struct bufio_table *t = atomic_load_explicit(&s->table, memory_order_acquire);
	struct bufio_buffer *b = atomic_load_explicit(&t->slot[bucket_of(t, block)],
						      memory_order_acquire);

	for (unsigned steps = 0; b && steps < BUFIO_LOCKLESS_STEPS; steps++) {
		if (atomic_load_explicit(&b->block, memory_order_relaxed) == block) {
			unsigned st;

			if (!bufio_try_get(b))
				return NULL;
			st = atomic_load_explicit(&b->state, memory_order_acquire);
			if ((st & (BUFIO_B_HASHED | BUFIO_B_NOT_VALID)) == BUFIO_B_HASHED &&
			    atomic_load_explicit(&b->block, memory_order_relaxed) == block)
				return b;
			bufio_buffer_put(b->c, b);
			return NULL;
		}
		b = atomic_load_explicit(&b->hnext, memory_order_acquire);
	}
	return NULL;
}

static void grow_locked(struct bufio_shard *s)
{
	struct bufio_table *old = table_locked(s);
	struct bufio_table *t = table_new((old->mask + 1) * 2);

	if (!t)
		return; /* longer chains; still correct */
	for (unsigned i = 0; i <= old->mask; i++) {
		struct bufio_buffer *b = atomic_load_explicit(&old->slot[i], memory_order_relaxed);

		while (b) {
			struct bufio_buffer *next = atomic_load_explicit(&b->hnext,
									 memory_order_relaxed);
			unsigned j = bucket_of(t, atomic_load_explicit(&b->block,
								       memory_order_relaxed));

			atomic_store_explicit(&b->hnext, atomic_load_explicit(&t->slot[j],
									      memory_order_relaxed),
					      memory_order_release);
			atomic_store_explicit(&t->slot[j], b, memory_order_release);
			b = next;
		}
	}
	t->older = old;
	atomic_store_explicit(&s->table, t, memory_order_release);
}

void bufio_index_insert_locked(struct bufio_shard *s, struct bufio_buffer *b)
{
	struct bufio_table *t;
	unsigned i;

	assert(!(b->state & BUFIO_B_HASHED));
	if (atomic_load_explicit(&s->count, memory_order_relaxed) > table_locked(s)->mask)
		grow_locked(s);
	t = table_locked(s);
	i = bucket_of(t, b->block);
	atomic_store_explicit(&b->hnext, atomic_load_explicit(&t->slot[i], memory_order_relaxed),
			      memory_order_relaxed);
	bufio_counter_add_locked(&s->count, 1);
	atomic_fetch_or(&b->state, BUFIO_B_HASHED);
	/* Publish last: a lock-free reader that finds @b sees it complete. */
	atomic_store_explicit(&t->slot[i], b, memory_order_release);
}

void bufio_index_remove_locked(struct bufio_shard *s, struct bufio_buffer *b)
{
	struct bufio_table *t = table_locked(s);
	_Atomic(struct bufio_buffer *) *pp = &t->slot[bucket_of(t, b->block)];

	assert(b->state & BUFIO_B_HASHED);
	while (atomic_load_explicit(pp, memory_order_relaxed) != b)
		pp = &atomic_load_explicit(pp, memory_order_relaxed)->hnext;
	/* b->hnext stays: a reader standing on @b still reaches the rest. */
	atomic_store_explicit(pp, atomic_load_explicit(&b->hnext, memory_order_relaxed),
			      memory_order_release);
	bufio_counter_add_locked(&s->count, -1);
	atomic_fetch_and(&b->state, ~BUFIO_B_HASHED);
	bufio_relink_locked(s, b, BUFIO_LIST_NONE);
}

unsigned bufio_count(const struct bufio_client *c, enum bufio_count_what what)
{
	unsigned n = 0;

	for (unsigned i = 0; i < c->nshards; i++) {
		const struct bufio_shard *s = &c->shards[i];
		switch (what) {
		case BUFIO_COUNT_BUFFERS:
			n += atomic_load_explicit(&s->count, memory_order_relaxed);
			break;
		case BUFIO_COUNT_CLEAN:
			n += atomic_load_explicit(&s->n_clean, memory_order_relaxed);
			break;
		case BUFIO_COUNT_DIRTY:
			n += atomic_load_explicit(&s->n_unclean, memory_order_relaxed);
			break;
		case BUFIO_COUNT_CLAIMABLE:
			n += atomic_load_explicit(&s->n_dirty, memory_order_relaxed);
			break;
		}
	}
	return n;
}

static atomic_uint *list_counter(struct bufio_shard *s, enum bufio_blist list)
{
	switch (list) {
	case BUFIO_LIST_CLEAN:
		return &s->n_clean;
	case BUFIO_LIST_DIRTY:
		return &s->n_dirty;
	case BUFIO_LIST_WRITING:
		return &s->n_writing;
	case BUFIO_LIST_FAILED:
		return &s->n_failed;
	default:
		return NULL;
	}
}

static struct bufio_list *list_head(struct bufio_shard *s, enum bufio_blist list)
{
	switch (list) {
	case BUFIO_LIST_CLEAN:
		return &s->clean;
	case BUFIO_LIST_DIRTY:
		return &s->dirty;
	case BUFIO_LIST_WRITING:
		return &s->writing;
	default:
		return &s->failed;
	}
}

static bool list_unclean(enum bufio_blist list)
{
	return list == BUFIO_LIST_DIRTY || list == BUFIO_LIST_WRITING ||
	       list == BUFIO_LIST_FAILED;
}

void bufio_relink_locked(struct bufio_shard *s, struct bufio_buffer *b, enum bufio_blist list)
{
	atomic_uint *n;
	bool was, is;

	if (b->list == list)
		return;
	was = list_unclean((enum bufio_blist)b->list);
	is = list_unclean(list);
	if (was != is)
		bufio_counter_add_locked(&s->n_unclean, is ? 1 : -1);
	if ((n = list_counter(s, (enum bufio_blist)b->list))) {
		bufio_counter_add_locked(n, -1);
		bufio_list_del(&b->lru);
	}
	if ((n = list_counter(s, list))) {
		bufio_counter_add_locked(n, 1);
		bufio_list_add_tail(&b->lru, list_head(s, list));
	}
	if (list == BUFIO_LIST_CLEAN && b->stamp < s->clean_floor)
		s->clean_floor = b->stamp;
	if (list == BUFIO_LIST_DIRTY)
		b->dirty_seq = atomic_fetch_add_explicit(&b->c->dirty_seq, 1,
							 memory_order_relaxed);
	b->list = (uint8_t)list;
	if (list == BUFIO_LIST_CLEAN || list == BUFIO_LIST_DIRTY)
		bufio_cleaner_due(b, list == BUFIO_LIST_DIRTY);
}

void bufio_shard_wait_locked(struct bufio_shard *s)
{
	s->nr_waiters++;
	pthread_cond_wait(&s->cond, &s->lock);
	s->nr_waiters--;
}

void bufio_shard_wake_locked(struct bufio_shard *s)
{
	if (s->nr_waiters)
		pthread_cond_broadcast(&s->cond);
}

int bufio_index_walk_range(struct bufio_client *c, uint64_t block, uint64_t n,
			   int (*visit)(struct bufio_shard *s, struct bufio_buffer *b, void *ctx),
			   void (*unlocked)(struct bufio_client *c, void *ctx), void *ctx)
{
	_Static_assert(BUFIO_MAX_SHARDS <= 256, "shard numbers are kept in a uint8_t");

	for (uint64_t first = 0; first < n; first += BUFIO_WALK_CHUNK) {
		unsigned len = (unsigned)(n - first < BUFIO_WALK_CHUNK ? n - first
								: BUFIO_WALK_CHUNK);
		uint8_t shard[BUFIO_WALK_CHUNK];
		bool todo[BUFIO_MAX_SHARDS] = { false };

		for (unsigned i = 0; i < len; i++) {
			shard[i] = (uint8_t)(bufio_shard_of(c, block + first + i) - c->shards);
			todo[shard[i]] = true;
		}
		for (unsigned si = 0; si < c->nshards; si++) {
			struct bufio_shard *s = &c->shards[si];
			int r = 0;

			if (!todo[si])
				continue;
			pthread_mutex_lock(&s->lock);
			for (unsigned i = 0; i < len && !r; i++) {
				struct bufio_buffer *b;

				if (shard[i] != si)
					continue;
				b = bufio_index_find_locked(s, block + first + i);
				if (b)
					r = visit(s, b, ctx);
			}
			pthread_mutex_unlock(&s->lock);
			if (unlocked)
				unlocked(c, ctx);
			if (r)
				return r;
		}
	}
	return 0;
}
