/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Clients: per-client free lists of io structures, pieces and bounce pages.
 *
 * Invariants:
 *   - A free list never holds fewer objects than its reserve unless those
 *     objects are in flight; it keeps at most twice the reserve, so a burst
 *     does not pin memory forever.
 *   - Allocation order: free list, then malloc, then wait on @freed for an
 *     in-flight object of this client to come back.  Waiting is therefore
 *     only possible when malloc has failed.  For a submitter it always ends:
 *     the reserve objects in flight are returned by the reaper.  A reaper
 *     itself allocates when a callback submits again (a retried read, the
 *     next step of a copy); should malloc fail there with the free list
 *     empty, it would wait for objects only it can return.  Not handled: on
 *     Linux, malloc of these small objects fails only once the OOM killer
 *     has run out of victims.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dmio_i.h"

struct dmio_client {
	pthread_mutex_t lock;           /* guards everything below */
	pthread_cond_t freed;           /* an object came back to a list */
	atomic_uint waiters;            /* written under lock; a loop's free
					 * reads it without (see dmio_io_free()) */

	struct dmio_io *free_ios;
	unsigned nr_ios, min_ios;
	struct dmio_piece *free_pieces; /* room for DMIO_PIECE_IOVS */
	unsigned nr_pieces, min_pieces;
	struct dmio_piece *free_small;  /* room for DMIO_PIECE_SMALL_IOVS */
	unsigned nr_small;
	void **pages;                   /* stack of free bounce pages */
	unsigned nr_pages, min_pages, cap_pages;
};

#define DEFAULT_MIN_IOS 64

static size_t piece_size(unsigned cap)
{
	return sizeof(struct dmio_piece) + cap * (sizeof(struct iovec) + sizeof(void *));
}

static struct dmio_piece *piece_malloc(unsigned cap)
{
	struct dmio_piece *p = malloc(piece_size(cap));

	if (p)
		p->cap = cap;
	return p;
}
/* Enough bounce pages for one maximal bounced piece and its neighbour. */
#define PAGES_PER_CLIENT (2 * DMIO_PIECE_IOVS)

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dmio_client *default_client; /* guarded by default_lock */
static unsigned default_extra_pages;       /* dmio_get() total, ditto */

static void *page_new(void)
{
	void *p = NULL;

	if (posix_memalign(&p, FM_PAGE_SIZE, FM_PAGE_SIZE))
		return NULL;
	return p;
}

static int pages_resize_locked(struct dmio_client *c, unsigned min_pages)
{
	unsigned cap = 2 * min_pages;
	void **np;

	if (cap < c->nr_pages)
		cap = c->nr_pages;
	np = realloc(c->pages, (cap ? cap : 1) * sizeof(void *));
	if (!np)
		return -ENOMEM;
	c->pages = np;
	c->cap_pages = cap;
	c->min_pages = min_pages;
	while (c->nr_pages < min_pages) {
		void *p = page_new();

		if (!p)
			return -ENOMEM;
		c->pages[c->nr_pages++] = p;
	}
	while (c->nr_pages > c->cap_pages)
		free(c->pages[--c->nr_pages]);
	return 0;
}

struct dmio_client *dmio_client_create(unsigned min_ios)
{
	struct dmio_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->freed, NULL);
	if (min_ios == 0)
		min_ios = 1;
	c->min_ios = min_ios;
	/* A multi-region write needs a piece per region: reserve two each. */
	c->min_pieces = 2 * min_ios;
	for (unsigned i = 0; i < c->min_ios; i++) {
		struct dmio_io *io = malloc(sizeof(*io));

		if (!io)
			goto fail;
		io->next_free = c->free_ios;
		c->free_ios = io;
		c->nr_ios++;
	}
	/* The reserve is of large pieces, which serve any request. */
	for (unsigned i = 0; i < c->min_pieces; i++) {
		struct dmio_piece *p = piece_malloc(DMIO_PIECE_IOVS);

		if (!p)
			goto fail;
		p->next = c->free_pieces;
		c->free_pieces = p;
		c->nr_pieces++;
	}
	if (pages_resize_locked(c, PAGES_PER_CLIENT) < 0)
		goto fail;
	return c;
fail:
	dmio_client_destroy(c);
	return NULL;
}

void dmio_client_destroy(struct dmio_client *c)
{
	if (!c)
		return;
	while (c->free_ios) {
		struct dmio_io *io = c->free_ios;

		c->free_ios = io->next_free;
		free(io);
	}
	while (c->free_pieces) {
		struct dmio_piece *p = c->free_pieces;

		c->free_pieces = p->next;
		free(p);
	}
	while (c->free_small) {
		struct dmio_piece *p = c->free_small;

		c->free_small = p->next;
		free(p);
	}
	while (c->nr_pages)
		free(c->pages[--c->nr_pages]);
	free(c->pages);
	pthread_cond_destroy(&c->freed);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int dmio_client_resize(struct dmio_client *c, int pages)
{
	long want;
	int r;

	pthread_mutex_lock(&c->lock);
	want = (long)c->min_pages + pages;
	if (want < PAGES_PER_CLIENT)
		want = PAGES_PER_CLIENT;
	r = pages_resize_locked(c, (unsigned)want);
	pthread_mutex_unlock(&c->lock);
	return r;
}

struct dmio_client *dmio_default_client(void)
{
	struct dmio_client *c;

	pthread_mutex_lock(&default_lock);
	if (!default_client) {
		default_client = dmio_client_create(DEFAULT_MIN_IOS);
		if (default_client && default_extra_pages)
			dmio_client_resize(default_client, (int)default_extra_pages);
	}
	c = default_client;
	pthread_mutex_unlock(&default_lock);
	return c;
}

void dmio_default_client_free(void)
{
	pthread_mutex_lock(&default_lock);
	dmio_client_destroy(default_client);
	default_client = NULL;
	pthread_mutex_unlock(&default_lock);
}

int dmio_get(unsigned pages)
{
	struct dmio_client *c;
	int r = 0;

	pthread_mutex_lock(&default_lock);
	default_extra_pages += pages;
	c = default_client;
	pthread_mutex_unlock(&default_lock);
	if (c)
		r = dmio_client_resize(c, (int)pages);
	else if (!dmio_default_client())
		r = -ENOMEM;
	return r;
}

void dmio_put(unsigned pages)
{
	struct dmio_client *c;

	pthread_mutex_lock(&default_lock);
	pages = pages > default_extra_pages ? default_extra_pages : pages;
	default_extra_pages -= pages;
	c = default_client;
	pthread_mutex_unlock(&default_lock);
	if (c)
		dmio_client_resize(c, -(int)pages);
}

/* Wait for an object to come back; called with c->lock held. */
static void wait_freed_locked(struct dmio_client *c)
{
	c->waiters++;
	pthread_cond_wait(&c->freed, &c->lock);
	c->waiters--;
}

static void wake_locked(struct dmio_client *c)
{
	if (c->waiters)
		pthread_cond_broadcast(&c->freed);
}

/*
 * On a loop, ios and pieces come from and go to the loop's object cache
 * first (dmio_loop_cache_get/put): no lock, where the client's list takes
 * its mutex, shared by every loop, twice per object (four times per 4k
 * read: an io and a piece, each allocated and freed).  Unless a thread
 * waits for this client's objects: then they come back here.  The
 * objects a loop keeps count, for the reserve, as its own in flight: its
 * next requests take them.
 */
struct dmio_io *dmio_io_alloc(struct dmio_client *c)
{
	struct dmio_io *io = dmio_loop_cache_get(sizeof(*io));

	if (io)
		return io;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		io = c->free_ios;
		if (io) {
			c->free_ios = io->next_free;
			c->nr_ios--;
			break;
		}
		pthread_mutex_unlock(&c->lock);
		io = malloc(sizeof(*io));
		if (io)
			return io;
		pthread_mutex_lock(&c->lock);
		if (!c->free_ios)
			wait_freed_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	return io;
}

void dmio_io_free(struct dmio_client *c, struct dmio_io *io)
{
	if (!atomic_load_explicit(&c->waiters, memory_order_relaxed) &&
	    dmio_loop_cache_put(sizeof(*io), io))
		return;
	pthread_mutex_lock(&c->lock);
	if (c->nr_ios < 2 * c->min_ios || c->waiters) {
		io->next_free = c->free_ios;
		c->free_ios = io;
		c->nr_ios++;
		io = NULL;
		wake_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	free(io);
}

/*
 * Two sizes of piece, each with its free list (and loop cache).  A small
 * request whose malloc failed takes a large piece too, so the reserve
 * (large pieces) serves both; a large request waits for a large piece.
 */
struct dmio_piece *dmio_piece_alloc(struct dmio_client *c, unsigned iovs)
{
	unsigned cap = iovs <= DMIO_PIECE_SMALL_IOVS ? DMIO_PIECE_SMALL_IOVS : DMIO_PIECE_IOVS;
	bool small = cap == DMIO_PIECE_SMALL_IOVS, malloc_failed = false;
	struct dmio_piece *p = dmio_loop_cache_get(piece_size(cap));

	if (p)
		return p;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (small && c->free_small) {
			p = c->free_small;
			c->free_small = p->next;
			c->nr_small--;
			break;
		}
		if ((!small || malloc_failed) && c->free_pieces) {
			p = c->free_pieces;
			c->free_pieces = p->next;
			c->nr_pieces--;
			break;
		}
		pthread_mutex_unlock(&c->lock);
		p = piece_malloc(cap);
		if (p)
			return p;
		malloc_failed = true;
		pthread_mutex_lock(&c->lock);
		if (!c->free_pieces && !(small && c->free_small))
			wait_freed_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	return p;
}

void dmio_piece_free(struct dmio_client *c, struct dmio_piece *p)
{
	bool small = p->cap == DMIO_PIECE_SMALL_IOVS;

	if (!atomic_load_explicit(&c->waiters, memory_order_relaxed) &&
	    dmio_loop_cache_put(piece_size(p->cap), p))
		return;
	pthread_mutex_lock(&c->lock);
	if (small && (c->nr_small < 2 * c->min_pieces || c->waiters)) {
		p->next = c->free_small;
		c->free_small = p;
		c->nr_small++;
		p = NULL;
		wake_locked(c);
	} else if (!small && (c->nr_pieces < 2 * c->min_pieces || c->waiters)) {
		p->next = c->free_pieces;
		c->free_pieces = p;
		c->nr_pieces++;
		p = NULL;
		wake_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
	free(p);
}

void dmio_pages_alloc(struct dmio_client *c, void **pages, unsigned n)
{
	unsigned got = 0;

	pthread_mutex_lock(&c->lock);
	while (got < n) {
		while (got < n && c->nr_pages)
			pages[got++] = c->pages[--c->nr_pages];
		if (got == n)
			break;
		pthread_mutex_unlock(&c->lock);
		while (got < n && (pages[got] = page_new()))
			got++;
		pthread_mutex_lock(&c->lock);
		if (got < n && !c->nr_pages)
			wait_freed_locked(c);
	}
	pthread_mutex_unlock(&c->lock);
}

void dmio_pages_free(struct dmio_client *c, void **pages, unsigned n)
{
	unsigned i = 0;

	pthread_mutex_lock(&c->lock);
	while (i < n && c->nr_pages < c->cap_pages)
		c->pages[c->nr_pages++] = pages[i++];
	if (i)
		wake_locked(c);
	pthread_mutex_unlock(&c->lock);
	for (; i < n; i++)
		free(pages[i]);
}
