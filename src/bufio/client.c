/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Clients: creation, destruction, accounting, statistics, the process-wide
 * knobs.  Invariants:
 *   - c->bytes counts c->buffer_cost (data and header) for every buffer
 *     with data the client owns: in the index, in the reserve, in flight
 *     out of the index; plus the data (block_size) that a copy on write
 *     left to a write in flight;
 *   - bufio_globals.bytes is the sum over the clients;
 *   - buffer headers are recycled through c->spare and freed only with
 *     the client (lock-free lookups may read a header at any time);
 *   - c->nr_io counts requests submitted and not completed; destroy waits
 *     for it to reach 0 under c->lock, and a completion touches nothing of
 *     the client after it decremented it (bufio_io_put is its last step).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bufio_i.h"
#include "fusemirror/dmio.h"

#define BUFIO_DEFAULT_MINIMUM_BUFFERS 8u
#define BUFIO_DEFAULT_RETAIN_BYTES (256u * 1024u)
#define BUFIO_DEFAULT_MAX_AGE_MS (300u * 1000u)
#define BUFIO_DEFAULT_WRITEBACK_AGE_MS (30u * 1000u)

struct bufio_globals bufio_globals = {
	.lifecycle = PTHREAD_MUTEX_INITIALIZER,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake_lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.wake_at = UINT64_MAX,
	.clients = { &bufio_globals.clients, &bufio_globals.clients },
	.retain_bytes = BUFIO_DEFAULT_RETAIN_BYTES,
	.max_age_ms = BUFIO_DEFAULT_MAX_AGE_MS,
	.writeback_age_ms = BUFIO_DEFAULT_WRITEBACK_AGE_MS,
};

uint64_t bufio_now_ns(void)
{
	struct timespec ts;

	/* Coarse: a few ms of resolution is plenty for ages, and it is the
	 * cheap vDSO path on the hit path. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t default_cache_size(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long psize = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || psize <= 0)
		return 64ull << 20;
	return (uint64_t)pages * (uint64_t)psize / 50; /* 2%, as dm-bufio */
}

static void max_update(_Atomic uint64_t *peak, uint64_t v)
{
	uint64_t p = atomic_load_explicit(peak, memory_order_relaxed);

	while (v > p && !atomic_compare_exchange_weak_explicit(peak, &p, v,
							       memory_order_relaxed,
							       memory_order_relaxed))
		;
}

void bufio_account_bytes(struct bufio_client *c, int64_t delta)
{
	uint64_t v = atomic_fetch_add_explicit(&c->bytes, (uint64_t)delta,
					       memory_order_relaxed) + (uint64_t)delta;
	uint64_t g = atomic_fetch_add_explicit(&bufio_globals.bytes, (uint64_t)delta,
					       memory_order_relaxed) + (uint64_t)delta;

	if (delta > 0) {
		max_update(&c->peak_bytes, v);
		max_update(&bufio_globals.peak_bytes, g);
	}
}

uint64_t bufio_client_limit(const struct bufio_client *c)
{
	uint64_t max = bufio_get_max_cache_size_bytes();
	unsigned n = atomic_load_explicit(&bufio_globals.nr_clients, memory_order_relaxed);
	uint64_t share = max / (n ? n : 1);
	uint64_t floor = ((uint64_t)c->reserved_buffers +
			  atomic_load_explicit(&c->minimum_buffers, memory_order_relaxed)) *
			 c->buffer_cost;

	return share > floor ? share : floor;
}

void bufio_wake_free(struct bufio_client *c)
{
	if (!atomic_load(&c->nr_free_waiters))
		return;
	pthread_mutex_lock(&c->lock);
	c->free_gen++;
	pthread_cond_broadcast(&c->free_cond);
	pthread_mutex_unlock(&c->lock);
}

void bufio_io_get(struct bufio_client *c)
{
	atomic_fetch_add_explicit(&c->nr_io, 1, memory_order_relaxed);
}

void bufio_io_put(struct bufio_client *c)
{
	unsigned n = atomic_load_explicit(&c->nr_io, memory_order_relaxed);

	/* Not the last one: nothing waits for this decrement, and destroy
	 * cannot free @c before the last one, so no lock (at QD32 every
	 * around read and write would take the client's lock here). */
	while (n > 1) {
		if (atomic_compare_exchange_weak_explicit(&c->nr_io, &n, n - 1,
							  memory_order_acq_rel,
							  memory_order_relaxed))
			return;
	}
	/* Maybe the last one: under the lock, for destroy must not free @c
	 * between the decrement and the wake-up. */
	pthread_mutex_lock(&c->lock);
	if (atomic_fetch_sub_explicit(&c->nr_io, 1, memory_order_acq_rel) == 1) {
		c->free_gen++;
		pthread_cond_broadcast(&c->free_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

static unsigned shard_count(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = 4u * (unsigned)(cpus > 0 ? cpus : 1);
	unsigned n = 1;

	while (n < want && n < BUFIO_MAX_SHARDS)
		n <<= 1;
	return n;
}

/* A free small object; bufio_obj_get() hands out this much memory. */
struct bufio_obj {
	union {
		struct bufio_obj *next;
		max_align_t align;
		char bytes[BUFIO_OBJ_SIZE];
	};
};
_Static_assert(sizeof(struct bufio_obj) >= BUFIO_OBJ_SIZE, "room for an object");
_Static_assert(sizeof(struct bufio_read_waiter) <= BUFIO_OBJ_SIZE, "read waiter fits");
_Static_assert(sizeof(struct bufio_around_waiter) <= BUFIO_OBJ_SIZE, "around waiter fits");

/* On a loop, from and to its object cache first (no lock: obj_lock is
 * shared by every loop, see dmio_loop_cache_get()). */
void *bufio_obj_get(struct bufio_client *c)
{
	struct bufio_obj *o = dmio_loop_cache_get(sizeof(*o));

	if (o)
		return o;
	pthread_mutex_lock(&c->obj_lock);
	o = c->free_objs;
	if (o) {
		c->free_objs = o->next;
		c->nr_free_objs--;
	}
	pthread_mutex_unlock(&c->obj_lock);
	return o ? (void *)o : malloc(sizeof(*o));
}

void bufio_obj_put(struct bufio_client *c, void *p)
{
	struct bufio_obj *o = p;

	if (!o || dmio_loop_cache_put(sizeof(*o), o))
		return;
	pthread_mutex_lock(&c->obj_lock);
	if (c->nr_free_objs < BUFIO_OBJ_KEEP) {
		o->next = c->free_objs;
		c->free_objs = o;
		c->nr_free_objs++;
		o = NULL;
	}
	pthread_mutex_unlock(&c->obj_lock);
	free(o);
}

static void client_free(struct bufio_client *c)
{
	if (c->shards) {
		for (unsigned i = 0; i < c->nshards; i++) {
			struct bufio_shard *s = &c->shards[i];
			struct bufio_buffer *b, *next;

			if (!bufio_index_table_locked(s))
				continue;
			bufio_index_for_each_locked(s, b, next) {
				/* Held at destroy: a programmer error. */
				assert(atomic_load(&b->ref) == 1);
				bufio_destroy_buffer(c, b);
			}
			bufio_shard_fini(s);
		}
		free(c->shards);
	}
	while (!bufio_list_empty(&c->reserve)) {
		struct bufio_buffer *b = bufio_container_of(c->reserve.next,
							    struct bufio_buffer, lru);

		bufio_list_del(&b->lru);
		bufio_destroy_buffer(c, b);
	}
	bufio_slab_fini(c);
	while (!bufio_list_empty(&c->spare)) {
		struct bufio_buffer *b = bufio_container_of(c->spare.next,
							    struct bufio_buffer, lru);

		bufio_list_del(&b->lru);
		free(b);
	}
	bufio_around_fini(c);
	while (c->free_objs) {
		struct bufio_obj *o = c->free_objs;

		c->free_objs = o->next;
		free(o);
	}
	pthread_mutex_destroy(&c->obj_lock);
	assert(c->wb_qn == 0);
	free(c->wb_q);
	pthread_mutex_destroy(&c->wb_qlock);
	pthread_cond_destroy(&c->free_cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int bufio_client_create(const struct fm_bdev *bdev, unsigned block_size,
			unsigned reserved_buffers, unsigned aux_size,
			bufio_alloc_fn alloc_callback, bufio_write_fn write_callback,
			struct bufio_client **ret_client)
{
	struct bufio_client *c;
	int r;

	if (!bdev || !bdev->ops || !bdev->ops->submit || !bdev->ops->flush ||
	    !bdev->ops->size || !fm_is_power_of_2(block_size) ||
	    block_size < BUFIO_MIN_BLOCK_SIZE || block_size > BUFIO_MAX_BLOCK_SIZE ||
	    aux_size > (1u << 20))
		return -EINVAL;

	c = aligned_alloc(BUFIO_CACHELINE, FM_ALIGN_UP(sizeof(*c), BUFIO_CACHELINE));
	if (!c)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	c->bdev = *bdev;
	c->block_size = block_size;
	c->block_shift = (unsigned)__builtin_ctz(block_size);
	c->sector_shift = c->block_shift - FM_SECTOR_SHIFT;
	c->data_align = block_size < FM_PAGE_SIZE ? block_size : FM_PAGE_SIZE;
	c->write_align = FM_SECTOR_SIZE;
	c->aux_size = aux_size;
	c->buffer_cost = block_size + bufio_header_cost(aux_size);
	c->reserved_buffers = reserved_buffers;
	c->alloc_callback = alloc_callback;
	c->write_callback = write_callback;
	atomic_init(&c->minimum_buffers, BUFIO_DEFAULT_MINIMUM_BUFFERS);
	bufio_list_init(&c->reserve);
	bufio_list_init(&c->spare);
	bufio_list_init(&c->node);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->free_cond, NULL);
	pthread_mutex_init(&c->obj_lock, NULL);
	pthread_mutex_init(&c->wb_qlock, NULL);
	r = bufio_around_init(c);
	if (r < 0) {
		pthread_mutex_destroy(&c->wb_qlock);
		pthread_mutex_destroy(&c->obj_lock);
		pthread_cond_destroy(&c->free_cond);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return r;
	}

	r = bufio_slab_init(c);
	if (r < 0) {
		client_free(c);
		return r;
	}
	c->nshards = shard_count();
	c->shard_mask = c->nshards - 1;
	c->shards = aligned_alloc(BUFIO_CACHELINE, c->nshards * sizeof(*c->shards));
	if (!c->shards) {
		client_free(c);
		return -ENOMEM;
	}
	memset(c->shards, 0, c->nshards * sizeof(*c->shards));
	for (unsigned i = 0; i < c->nshards; i++) {
		r = bufio_shard_init(&c->shards[i]);
		if (r < 0) {
			for (unsigned j = 0; j < i; j++)
				bufio_shard_fini(&c->shards[j]);
			free(c->shards);
			c->shards = NULL;
			client_free(c);
			return r;
		}
	}

	for (unsigned i = 0; i < reserved_buffers; i++) {
		struct bufio_buffer *b = bufio_new_buffer_mem(c);

		if (!b) {
			client_free(c);
			return -ENOMEM;
		}
		bufio_list_add_tail(&b->lru, &c->reserve);
		c->n_reserve++;
	}

	r = bufio_cleaner_register(c);
	if (r < 0) {
		client_free(c);
		return r;
	}
	*ret_client = c;
	return 0;
}

void bufio_client_destroy(struct bufio_client *c)
{
	int r;

	if (!c)
		return;
	bufio_cleaner_unregister(c);

	r = bufio_write_dirty_buffers(c);
	if (r < 0)
		fm_debug("bufio: destroy: writing back dirty buffers failed: %s",
			 strerror(-r));

	pthread_mutex_lock(&c->lock);
	while (atomic_load(&c->nr_io))
		pthread_cond_wait(&c->free_cond, &c->lock);
	pthread_mutex_unlock(&c->lock);

	client_free(c);
}

/*----------------------------------------------------------------*/

void bufio_set_minimum_buffers(struct bufio_client *c, unsigned n)
{
	atomic_store(&c->minimum_buffers, n);
}

void bufio_set_sector_offset(struct bufio_client *c, uint64_t start)
{
	atomic_store(&c->start, start);
}

unsigned bufio_get_block_size(const struct bufio_client *c)
{
	return c->block_size;
}

unsigned bufio_get_buffer_cost(const struct bufio_client *c)
{
	return c->buffer_cost;
}

uint64_t bufio_get_device_size(struct bufio_client *c)
{
	uint64_t s = c->bdev.ops->size(c->bdev.dev) >> FM_SECTOR_SHIFT;
	uint64_t start = atomic_load(&c->start);

	s = s >= start ? s - start : 0;
	return s >> c->sector_shift;
}

uint64_t bufio_get_block_number(const struct bufio_buffer *b)
{
	return b->block;
}

void *bufio_get_block_data(const struct bufio_buffer *b)
{
	return b->data;
}

void *bufio_get_aux_data(const struct bufio_buffer *b)
{
	return (void *)b->aux;
}

struct bufio_client *bufio_get_client(const struct bufio_buffer *b)
{
	return b->c;
}

void bufio_get_stats(struct bufio_client *c, struct bufio_stats *ret_stats)
{
	struct bufio_stats st = { 0 };

	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];

		pthread_mutex_lock(&s->lock);
		st.hits += s->hits;
		st.misses += s->misses;
		st.reads += s->reads;
		st.read_ios += s->read_ios;
		st.writes += s->writes;
		st.write_ios += s->write_ios;
		st.evictions += s->evictions;
		st.cow_copies += s->cow_copies;
		st.read_errors += s->read_errors;
		st.write_errors += s->write_errors;
		st.buffers += atomic_load(&s->count);
		st.dirty += atomic_load(&s->n_dirty) + atomic_load(&s->n_writing) +
			    atomic_load(&s->n_failed);
		pthread_mutex_unlock(&s->lock);
	}
	for (unsigned i = 0; i < BUFIO_HIT_SLOTS; i++)
		st.hits += atomic_load_explicit(&c->hit_slots[i].hits, memory_order_relaxed);
	st.around_reads = atomic_load(&c->around_reads);
	st.around_writes = atomic_load(&c->around_writes);
	pthread_mutex_lock(&c->slab_lock);
	st.data_maps = c->slab_maps;
	st.data_maps_inline = c->slab_maps_inline;
	st.data_ready = c->nr_slab_ready;
	st.data_surplus = c->slab_surplus;
	st.data_bytes = ((uint64_t)g_hash_table_size(c->slabs) + c->nr_slab_ready) *
			BUFIO_SLAB_CHUNK;
	pthread_mutex_unlock(&c->slab_lock);
	st.around_cached = atomic_load(&c->around_cached);
	st.around_spliced = atomic_load(&c->around_spliced);
	st.around_mapped = atomic_load(&c->around_mapped);
	st.bytes = atomic_load(&c->bytes);
	st.peak_bytes = atomic_load(&c->peak_bytes);
	st.limit_bytes = bufio_client_limit(c);
	*ret_stats = st;
}

void bufio_get_global_stats(struct bufio_global_stats *ret_stats)
{
	ret_stats->bytes = atomic_load(&bufio_globals.bytes);
	ret_stats->peak_bytes = atomic_load(&bufio_globals.peak_bytes);
	ret_stats->limit_bytes = bufio_get_max_cache_size_bytes();
	ret_stats->clients = atomic_load(&bufio_globals.nr_clients);
}

void bufio_set_max_cache_size_bytes(uint64_t bytes)
{
	atomic_store(&bufio_globals.max_cache_size, bytes);
	bufio_cleaner_kick();
}

uint64_t bufio_get_max_cache_size_bytes(void)
{
	uint64_t v = atomic_load_explicit(&bufio_globals.max_cache_size, memory_order_relaxed);

	if (fm_likely(v))
		return v;
	v = default_cache_size();
	/* Every thread computes the same default, but a setter that ran since
	 * the load above must win: only replace the 0 we saw. */
	if (!atomic_compare_exchange_strong(&bufio_globals.max_cache_size, &(uint64_t){ 0 }, v))
		v = atomic_load(&bufio_globals.max_cache_size);
	return v;
}

void bufio_set_retain_bytes(uint64_t bytes)
{
	atomic_store(&bufio_globals.retain_bytes, bytes);
}

uint64_t bufio_get_retain_bytes(void)
{
	return atomic_load(&bufio_globals.retain_bytes);
}

void bufio_set_max_age_ms(uint64_t ms)
{
	atomic_store(&bufio_globals.max_age_ms, ms);
	bufio_cleaner_kick();
}

uint64_t bufio_get_max_age_ms(void)
{
	return atomic_load(&bufio_globals.max_age_ms);
}

void bufio_set_writeback_age_ms(uint64_t ms)
{
	atomic_store(&bufio_globals.writeback_age_ms, ms);
	bufio_cleaner_kick();
}

uint64_t bufio_get_writeback_age_ms(void)
{
	return atomic_load(&bufio_globals.writeback_age_ms);
}

int bufio_set_write_align(struct bufio_client *c, unsigned bytes)
{
	if (!fm_is_power_of_2(bytes) || bytes < FM_SECTOR_SIZE || bytes > c->block_size)
		return -EINVAL;
	c->write_align = bytes;
	return 0;
}
