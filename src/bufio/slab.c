/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Block data memory.  glibc's posix_memalign(4096, 4096) costs 8 KiB a
 * block (its header forces the next aligned address one page on), so
 * blocks smaller than a chunk come from chunks of BUFIO_SLAB_CHUNK bytes,
 * mmap'd and aligned to their size, cut into slots; larger blocks use
 * posix_memalign directly (the waste is then small in proportion).
 *
 * Invariants (c->slab_lock held):
 *   - every chunk in use is in c->slabs (chunk address -> struct bufio_slab);
 *   - a chunk with a free slot and some used ones is on c->slab_partial;
 *   - chunks with no slot in use are kept mapped on c->slab_empty while
 *     every mapped chunk fits in the block data the client's limit holds
 *     (the limit counts headers too: data_limit(); at least one is kept):
 *     memory the cache may fill anyway.  A cache emptied by a
 *     write or read around it (which frees the blocks in its range), or
 *     by eviction in allocation order, whole chunks at a time, fills up
 *     again from them instead of paying an munmap (a TLB shootdown on
 *     every CPU of the process) and then an mmap and a prefault (a page
 *     fault and a page clear per 4 KiB) per chunk.
 * Slots are handed out lowest first from the first partial chunk, so
 * blocks allocated one after the other are usually adjacent in memory and
 * a run of them is one iovec segment (see writeback.c).
 *
 * Freed slots are poisoned for ASan and marked inaccessible for valgrind,
 * so that use-after-free of block data stays visible to both.
 *
 * New memory is prefaulted (prefault()): a read into a page that is not
 * mapped yet cannot complete inline in io_uring (the copy would fault), so
 * it is handed to an io-wq worker, which costs a thread hand-off per read
 * until every block of the cache has been used once.
 *
 * Prefaulted ahead.  Prefaulting a chunk is a 2 MiB clear in the kernel,
 * and on the test VM the first touch of fresh guest memory made it cost
 * ~4 ms (perf of fio 4k QD32 randread on disk legs, cold cache: 39% of
 * the daemon's samples were clear_page_erms under MADV_POPULATE_WRITE,
 * half of them on each event loop, ~60 chunks a second): made by the
 * allocating thread, an event loop, it stopped reading requests, reaping
 * and submitting for those ms, every 512 reads.  So once the cache has
 * grown by a chunk (slab_grow), a thread of the client's, the filler,
 * keeps up to BUFIO_SLAB_READY chunks mapped and prefaulted ahead, as
 * long as every chunk mapped, ready or being mapped (by it or by
 * allocating threads) fits in the block data the limit holds; an
 * allocation takes one of those first, and maps one itself only when
 * none is ready (stats.data_maps_inline).  Such a thread drops the lock
 * meanwhile, so others may do the same at once: the first chunk back
 * serves them all, the rest are surplus (chunk_surplus_locked()).  The
 * filler sleeps while nothing grows; it never takes another lock than
 * slab_lock, and not across the prefault.
 *
 * Chunks are 2 MiB, aligned, and asked to be transparent huge pages
 * (MADV_HUGEPAGE; THP is "madvise" on Debian): one TLB entry and one
 * page-table mapping per 2 MiB of cache instead of 512.  Measured on a
 * VM with shadow paging (the project's test machine): the first touch
 * from user space of a 4 KiB page that MADV_POPULATE_WRITE had mapped
 * cost 7-14 us, so the first checksum verification of each block of a
 * cold cache cost that much (a 4k QD32 random read with checksums took
 * 5-9 us more daemon CPU per I/O than without), and a kernel copy into
 * such a page was slower too; on huge pages neither shows.  Where THP is
 * off the chunk is simply 512 small pages.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bufio_i.h"

_Static_assert(BUFIO_SLAB_CHUNK == FM_HUGE_PAGE_SIZE, "a chunk is one fm_map_huge() huge page");

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define slot_poison(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define slot_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define slot_poison(p, n) ((void)(p), (void)(n))
#define slot_unpoison(p, n) ((void)(p), (void)(n))
#endif

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void)(p), (void)(n))
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

struct bufio_slab {
	struct bufio_list node;         /* on c->slab_partial */
	char *mem;
	unsigned nfree;
	uint64_t map[BUFIO_SLAB_CHUNK / BUFIO_MIN_BLOCK_SIZE / 64]; /* 1: free */
};

static unsigned slots(const struct bufio_client *c)
{
	return BUFIO_SLAB_CHUNK >> c->block_shift;
}

/* Map @len bytes at @p (page aligned) now, writable; best effort. */
static void prefault(void *p, size_t len)
{
#ifdef MADV_POPULATE_WRITE
	if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
		return;
#endif
	for (size_t i = 0; i < len; i += FM_PAGE_SIZE)
		((volatile char *)p)[i] = 0;
}

static char *chunk_map(void)
{
	char *a = fm_map_huge(BUFIO_SLAB_CHUNK);

	if (a)
		prefault(a, BUFIO_SLAB_CHUNK);
	return a;
}

/* The block data the client's limit holds: each block counts its header
 * too (c->buffer_cost), and headers stay resident beside the chunks. */
static uint64_t data_limit(const struct bufio_client *c)
{
	return bufio_client_limit(c) / c->buffer_cost * c->block_size;
}

/* Room for one more chunk beside those mapped, ready and being mapped
 * (by the filler or by allocating threads). */
static bool filler_room_locked(const struct bufio_client *c)
{
	uint64_t n = (uint64_t)g_hash_table_size(c->slabs) + c->nr_slab_ready + c->slab_filling +
		     c->slab_inline;

	return (n + 1) * BUFIO_SLAB_CHUNK <= data_limit(c);
}

/* May one more chunk join the ready ones (mapped by the filler or left
 * over by a race, see chunk_surplus_locked())? */
static bool ready_room_locked(const struct bufio_client *c)
{
	return c->nr_slab_ready + c->slab_filling < BUFIO_SLAB_READY && filler_room_locked(c);
}

static bool filler_wanted_locked(const struct bufio_client *c)
{
	return c->slab_grow && !c->slab_filler_stop && ready_room_locked(c);
}

static void *filler_main(void *arg)
{
	struct bufio_client *c = arg;

	pthread_mutex_lock(&c->slab_lock);
	while (!c->slab_filler_stop) {
		char *mem;

		if (!filler_wanted_locked(c)) {
			pthread_cond_wait(&c->slab_filler_cond, &c->slab_lock);
			continue;
		}
		c->slab_filling++;
		pthread_mutex_unlock(&c->slab_lock);
		mem = chunk_map();
		pthread_mutex_lock(&c->slab_lock);
		c->slab_filling--;
		if (!mem) {
			c->slab_grow = false;   /* until the next growth */
			continue;
		}
		c->slab_ready[c->nr_slab_ready++] = mem;
	}
	pthread_mutex_unlock(&c->slab_lock);
	return NULL;
}

/* The cache grows: have the filler map what it may (slab_lock held). */
static void filler_poke_locked(struct bufio_client *c)
{
	c->slab_grow = true;
	if (c->slab_filler_on && filler_wanted_locked(c))
		pthread_cond_signal(&c->slab_filler_cond);
}

static void slab_reset(const struct bufio_client *c, struct bufio_slab *s)
{
	unsigned n = slots(c);

	memset(s->map, 0, sizeof(s->map));
	for (unsigned i = 0; i < n; i++)
		s->map[i / 64] |= 1ull << (i % 64);
	s->nfree = n;
}

static void slab_destroy(struct bufio_slab *s)
{
	munmap(s->mem, BUFIO_SLAB_CHUNK);
	free(s);
}

int bufio_slab_init(struct bufio_client *c)
{
	int r;

	c->use_slab = c->block_size < BUFIO_SLAB_CHUNK;
	bufio_list_init(&c->slab_partial);
	bufio_list_init(&c->slab_empty);
	r = pthread_mutex_init(&c->slab_lock, NULL);
	if (r)
		return -r;
	r = pthread_cond_init(&c->slab_filler_cond, NULL);
	if (r) {
		pthread_mutex_destroy(&c->slab_lock);
		return -r;
	}
	c->slabs = g_hash_table_new(g_direct_hash, g_direct_equal);
	/* Without the thread every chunk is mapped inline, as before. */
	if (c->use_slab)
		c->slab_filler_on = fm_thread_start(&c->slab_filler, "bufio-filler",
						    filler_main, c) == 0;
	return 0;
}

void bufio_slab_fini(struct bufio_client *c)
{
	GHashTableIter it;
	gpointer key, value;

	if (!c->slabs)
		return;
	if (c->slab_filler_on) {
		pthread_mutex_lock(&c->slab_lock);
		c->slab_filler_stop = true;
		pthread_cond_signal(&c->slab_filler_cond);
		pthread_mutex_unlock(&c->slab_lock);
		pthread_join(c->slab_filler, NULL);
		c->slab_filler_on = false;
	}
	while (c->nr_slab_ready)
		munmap(c->slab_ready[--c->nr_slab_ready], BUFIO_SLAB_CHUNK);
	pthread_cond_destroy(&c->slab_filler_cond);
	g_hash_table_iter_init(&it, c->slabs);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		struct bufio_slab *s = value;

		assert(s->nfree == slots(c)); /* every block was freed */
		slab_destroy(s);
	}
	g_hash_table_destroy(c->slabs);
	c->slabs = NULL;
	pthread_mutex_destroy(&c->slab_lock);
}

/*
 * A chunk @s that a thread mapped (or took ready) with slab_lock dropped,
 * and that is not needed any more: another thread's chunk has free slots
 * now.  Without this, every thread that found no free slot at the same
 * moment added a chunk of its own, and at the top of the cache (the last
 * chunk is never prepared by the filler: it does not fit whole under the
 * limit) they stayed mapped, never filled: rss.sh's load (2k writes at
 * QD32 filling a 128 MiB cache, 2 CPUs) ended with 61 to 68 chunks for
 * data that needs 61, up to 14 MiB of prefaulted memory beyond the limit,
 * more with more threads.  Kept ready if the filler could have mapped it
 * (slab_lock held), else returned for the caller to unmap once unlocked.
 */
static char *chunk_surplus_locked(struct bufio_client *c, struct bufio_slab *s)
{
	char *mem = s->mem;

	free(s);
	c->slab_surplus++;
	if (ready_room_locked(c)) {
		c->slab_ready[c->nr_slab_ready++] = mem;
		return NULL;
	}
	return mem;
}

void *bufio_data_alloc(struct bufio_client *c)
{
	struct bufio_slab *s;
	char *surplus = NULL;
	unsigned i;
	void *p;

	if (!c->use_slab) {
		if (posix_memalign(&p, c->data_align, c->block_size))
			return NULL;
		prefault(p, c->block_size); /* (>= 256 KiB: page aligned) */
		return p;
	}
	pthread_mutex_lock(&c->slab_lock);
	if (bufio_list_empty(&c->slab_partial)) {
		s = NULL;
		if (!bufio_list_empty(&c->slab_empty)) {
			s = bufio_container_of(c->slab_empty.next, struct bufio_slab, node);
			bufio_list_del(&s->node);
		}
		if (!s) {
			char *mem = NULL;
			bool mapped_here = false;

			if (c->nr_slab_ready) {
				mem = c->slab_ready[--c->nr_slab_ready];
			} else {
				c->slab_inline++;
				mapped_here = true;
			}
			filler_poke_locked(c);
			pthread_mutex_unlock(&c->slab_lock);
			if (mapped_here)
				mem = chunk_map();
			s = mem ? calloc(1, sizeof(*s)) : NULL;
			pthread_mutex_lock(&c->slab_lock);
			c->slab_inline -= mapped_here;
			if (!s) {
				pthread_mutex_unlock(&c->slab_lock);
				if (mem)
					munmap(mem, BUFIO_SLAB_CHUNK);
				return NULL;
			}
			s->mem = mem;
			if (!bufio_list_empty(&c->slab_partial)) {
				/* Another thread's chunk came meanwhile. */
				surplus = chunk_surplus_locked(c, s);
				goto take;
			}
			slot_poison(mem, BUFIO_SLAB_CHUNK);
			VALGRIND_MAKE_MEM_NOACCESS(mem, BUFIO_SLAB_CHUNK);
			g_hash_table_insert(c->slabs, mem, s);
			c->slab_maps++;
			c->slab_maps_inline += mapped_here;
		}
		slab_reset(c, s);
		bufio_list_add_tail(&s->node, &c->slab_partial);
	}
take:
	s = bufio_container_of(c->slab_partial.next, struct bufio_slab, node);
	for (i = 0; !s->map[i / 64]; i += 64)
		;
	i += (unsigned)__builtin_ctzll(s->map[i / 64]);
	s->map[i / 64] &= ~(1ull << (i % 64));
	if (!--s->nfree)
		bufio_list_del(&s->node);
	pthread_mutex_unlock(&c->slab_lock);
	if (surplus)
		munmap(surplus, BUFIO_SLAB_CHUNK);
	p = s->mem + ((size_t)i << c->block_shift);
	slot_unpoison(p, c->block_size);
	VALGRIND_MAKE_MEM_UNDEFINED(p, c->block_size);
	return p;
}

void bufio_data_free(struct bufio_client *c, void *p)
{
	char *base;
	struct bufio_slab *s, *unmap = NULL;
	unsigned i;

	if (!p)
		return;
	if (!c->use_slab) {
		free(p);
		return;
	}
	slot_poison(p, c->block_size);
	VALGRIND_MAKE_MEM_NOACCESS(p, c->block_size);
	base = (char *)FM_ALIGN_DOWN((uintptr_t)p, (uintptr_t)BUFIO_SLAB_CHUNK);
	i = (unsigned)(((char *)p - base) >> c->block_shift);
	pthread_mutex_lock(&c->slab_lock);
	s = g_hash_table_lookup(c->slabs, base);
	assert(s && !(s->map[i / 64] & (1ull << (i % 64))));
	s->map[i / 64] |= 1ull << (i % 64);
	if (s->nfree++ == 0)
		bufio_list_add_tail(&s->node, &c->slab_partial);
	if (s->nfree == slots(c)) {
		bufio_list_del(&s->node);
		if (bufio_list_empty(&c->slab_empty) ||
		    (uint64_t)g_hash_table_size(c->slabs) * BUFIO_SLAB_CHUNK <= data_limit(c)) {
			bufio_list_add_tail(&s->node, &c->slab_empty);
		} else {
			g_hash_table_remove(c->slabs, base);
			unmap = s;
		}
	}
	pthread_mutex_unlock(&c->slab_lock);
	if (unmap)
		slab_destroy(unmap);
}
