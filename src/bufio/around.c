/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Write-around and read-around: large whole-block I/O that bypasses the
 * cache, as a disk's cache does for streaming I/O.  No copy into cache
 * buffers, no per-block bookkeeping, and what the cache holds is not
 * evicted for data that is read or written once.
 *
 * Invariants:
 *   - While a write-around of [block, end) is in flight (a slot of
 *     c->around[], under around_lock; nr_around counts the slots in use),
 *     no buffer of those blocks enters the index: every insertion checks
 *     bufio_around_blocks_locked() under its shard lock after finding the
 *     block missing, and the writer registers BEFORE it looks at the index
 *     (under each shard's lock), so either the writer sees a buffer that
 *     was inserted, or the inserter sees the registration.  A synchronous
 *     inserter waits for the write (around_cond); bufio_read_async() takes
 *     its buffer (waiting for memory, or refused by the nowait variant, at
 *     the call), queues itself with it on the slot, and the writer starts
 *     it again once its write ended -- in the write's completion for an
 *     asynchronous write-around, where nothing may wait: on an event
 *     loop, an allocation waiting there for writeback would wait for
 *     completions only that loop can run; bufio_prefetch() skips the
 *     block.
 *   - When the write is issued, no buffer of its range is in the index: the
 *     writer dropped the clean idle ones, and any other (dirty, being read,
 *     written or filled, held) made it give up with -EBUSY before writing.
 *     Dropping a clean copy is always safe; a dirty one is never dropped, so
 *     no completed write is lost, not even for a moment.  So once the write
 *     completed, a read of the range gets the new data from the device.
 *   - A read-around never reads a block from the device while the cache
 *     may hold a newer copy: under each shard's lock it copies every
 *     cached block whose data is valid (clean, dirty, being written) into
 *     the caller's memory, and reads from the device only blocks that
 *     were not cached, or were still being read or filled (their newest
 *     completed write is on the device: a block leaves the cache only
 *     clean, and a read or fill starts only for a block not cached), or
 *     were clean (the device holds what the cache does).  So every write
 *     completed before the read-around is in what it returns; a block
 *     written after its look was written concurrently with it.  The
 *     device reads are split only at dirty and being-written blocks: a
 *     clean block between two blocks to read is read again with them (one
 *     request, not two around a 4 KiB copy: after 4k random reads a 1 MiB
 *     read-around met ~60 clean blocks and took ~45 device reads).
 *     When no shard of its range holds a buffer (their counts, read
 *     without the locks: around_index_empty()), it looks no further and
 *     reads the whole range: a buffer entering meanwhile is of a read, or
 *     of a write concurrent with it.
 *     The blocks are never held, and the cache's order (CLOCK bits) is not
 *     touched: a streaming read does not promote what it passes.
 *   - A splice-around or a map-around goes to the device only for a range
 *     of which the cache holds no dirty or being-written block at its look
 *     (under each shard's lock, or without the locks by the shards'
 *     counters of such blocks, when they are all zero): the device then
 *     has the newest completed write of every block (not cached, being
 *     read or filled, or clean: as above), and a write that enters the
 *     cache after the look was concurrent with the read.  So it gives what
 *     a read-around would.  A map-around's bytes are read later than its
 *     look (when its caller's reply is written), so a write that completes
 *     in between may show in them, whole or in part: it too was
 *     concurrent with the read, which has not been answered yet.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bufio_i.h"

struct around_io {
	struct bufio_client *c;
	uint64_t n_blocks;
	/* read-around and asynchronous write-around: the caller's completion */
	bufio_around_cb cb;
	void *ctx;
	int slot;                       /* async write-around: its slot, else -1 */
	/* read-around: device requests in flight (+1 while issuing), and the
	 * first error of one */
	atomic_uint pending;
	atomic_int first_err;
	/* write-around: the writer waits */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};
_Static_assert(sizeof(struct around_io) <= BUFIO_OBJ_SIZE, "around_io fits");

int bufio_around_init(struct bufio_client *c)
{
	int r = pthread_mutex_init(&c->around_lock, NULL);

	if (r)
		return -r;
	r = pthread_cond_init(&c->around_cond, NULL);
	if (r) {
		pthread_mutex_destroy(&c->around_lock);
		return -r;
	}
	return 0;
}

void bufio_around_fini(struct bufio_client *c)
{
	pthread_cond_destroy(&c->around_cond);
	pthread_mutex_destroy(&c->around_lock);
}

static int find_locked(const struct bufio_client *c, uint64_t block)
{
	for (unsigned i = 0; i < BUFIO_AROUND_SLOTS; i++) {
		const struct bufio_around *a = &c->around[i];

		if (a->active && block >= a->block && block < a->end)
			return (int)i;
	}
	return -1;
}

bool bufio_around_covers(struct bufio_client *c, uint64_t block)
{
	bool r;

	pthread_mutex_lock(&c->around_lock);
	r = find_locked(c, block) >= 0;
	pthread_mutex_unlock(&c->around_lock);
	return r;
}

void bufio_around_wait(struct bufio_client *c, uint64_t block)
{
	pthread_mutex_lock(&c->around_lock);
	while (find_locked(c, block) >= 0)
		pthread_cond_wait(&c->around_cond, &c->around_lock);
	pthread_mutex_unlock(&c->around_lock);
}

bool bufio_around_defer_locked(struct bufio_client *c, struct bufio_around_waiter *w)
{
	int i;

	pthread_mutex_lock(&c->around_lock);
	i = find_locked(c, w->block);
	if (i >= 0) {
		w->next = c->around[i].waiters;
		c->around[i].waiters = w;
	}
	pthread_mutex_unlock(&c->around_lock);
	return i >= 0;
}

static int around_register(struct bufio_client *c, uint64_t block, uint64_t n)
{
	pthread_mutex_lock(&c->around_lock);
	for (unsigned i = 0; i < BUFIO_AROUND_SLOTS; i++) {
		struct bufio_around *a = &c->around[i];

		if (!a->active) {
			a->active = true;
			a->block = block;
			a->end = block + n;
			a->waiters = NULL;
			atomic_fetch_add_explicit(&c->nr_around, 1, memory_order_relaxed);
			pthread_mutex_unlock(&c->around_lock);
			return (int)i;
		}
	}
	pthread_mutex_unlock(&c->around_lock);
	return -EBUSY;
}

static void around_unregister(struct bufio_client *c, int slot)
{
	struct bufio_around_waiter *w;

	pthread_mutex_lock(&c->around_lock);
	w = c->around[slot].waiters;
	c->around[slot].waiters = NULL;
	c->around[slot].active = false;
	atomic_fetch_sub_explicit(&c->nr_around, 1, memory_order_relaxed);
	pthread_cond_broadcast(&c->around_cond);
	pthread_mutex_unlock(&c->around_lock);
	/* The reads that waited for this write, started again (maybe in
	 * the write's completion: with the buffer each took at its call,
	 * so nothing here waits for memory). */
	while (w) {
		struct bufio_around_waiter *next = w->next;
		int r = bufio_read_async_restart(c, w);

		if (r < 0)
			w->cb(w->ctx, NULL, r);
		bufio_obj_put(c, w);
		w = next;
	}
}

struct scan {
	bool drop;
	struct bufio_list victims;
};

static int scan_visit(struct bufio_shard *s, struct bufio_buffer *b, void *ctx)
{
	struct scan *sc = ctx;

	if (!sc->drop || b->modifiers ||
	    (b->state & (BUFIO_B_READING | BUFIO_B_FILLING | BUFIO_B_WRITING | BUFIO_B_DIRTY)) ||
	    !bufio_claim_idle_locked(b))
		return -EBUSY;
	bufio_index_remove_locked(s, b);
	s->evictions++;
	bufio_list_add_tail(&b->lru, &sc->victims);
	return 0;
}

static void scan_free_victims(struct bufio_client *c, void *ctx)
{
	struct scan *sc = ctx;

	bufio_free_list(c, &sc->victims);
}

/*
 * Look at the cached blocks of [@block, @block + @n): returns -EBUSY at
 * the first one found (!@drop), or at the first one that is not clean and
 * idle (@drop: clean idle ones are taken out of the index and freed),
 * otherwise 0.
 */
static int scan_range(struct bufio_client *c, uint64_t block, uint64_t n, bool drop)
{
	struct scan sc = { .drop = drop };

	bufio_list_init(&sc.victims);
	return bufio_index_walk_range(c, block, n, scan_visit, scan_free_victims, &sc);
}

static void around_end_io(void *arg, int err)
{
	struct around_io *io = arg;
	struct bufio_client *c = io->c;

	if (io->cb) {
		/* An asynchronous write-around. */
		bufio_around_cb cb = io->cb;
		void *ctx = io->ctx;

		if (!err)
			atomic_fetch_add_explicit(&c->around_writes, io->n_blocks,
						  memory_order_relaxed);
		/* Reads of the blocks may enter the cache again. */
		around_unregister(c, io->slot);
		bufio_obj_put(c, io);
		cb(ctx, err);
		bufio_io_put(c); /* last: destroy may free @c after it */
		return;
	}
	pthread_mutex_lock(&io->lock);
	io->err = err;
	io->done = true;
	pthread_cond_signal(&io->cond);
	pthread_mutex_unlock(&io->lock);
}

static int check_args(const struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		      const struct iovec *iov, unsigned iovcnt)
{
	uint64_t bytes = 0;

	for (unsigned i = 0; i < iovcnt; i++)
		bytes += iov[i].iov_len;
	if (!n_blocks || block + n_blocks < block || bytes != n_blocks << c->block_shift)
		return -EINVAL;
	return 0;
}

static uint64_t sector_of(const struct bufio_client *c, uint64_t block)
{
	return atomic_load_explicit(&c->start, memory_order_relaxed) + (block << c->sector_shift);
}

int bufio_write_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		       const struct iovec *iov, unsigned iovcnt, unsigned flags)
{
	struct around_io io = { .c = c };
	int slot, r;

	r = check_args(c, block, n_blocks, iov, iovcnt);
	if (r)
		return r;
	slot = around_register(c, block, n_blocks);
	if (slot < 0)
		return slot;
	r = scan_range(c, block, n_blocks, true);
	if (!r) {
		pthread_mutex_init(&io.lock, NULL);
		pthread_cond_init(&io.cond, NULL);
		r = c->bdev.ops->submit(c->bdev.dev, FM_BDEV_WRITE, sector_of(c, block), iov,
					iovcnt, flags & FM_BDEV_FUA, around_end_io, &io);
		if (r == 0) {
			pthread_mutex_lock(&io.lock);
			while (!io.done)
				pthread_cond_wait(&io.cond, &io.lock);
			pthread_mutex_unlock(&io.lock);
			r = io.err;
		}
		pthread_cond_destroy(&io.cond);
		pthread_mutex_destroy(&io.lock);
		if (!r)
			atomic_fetch_add_explicit(&c->around_writes, n_blocks,
						  memory_order_relaxed);
	}
	around_unregister(c, slot);
	return r;
}

int bufio_write_around_async(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
			     const struct iovec *iov, unsigned iovcnt, unsigned flags,
			     bufio_around_cb cb, void *ctx)
{
	struct around_io *io;
	int slot, r;

	r = check_args(c, block, n_blocks, iov, iovcnt);
	if (r)
		return r;
	io = bufio_obj_get(c);
	if (!io)
		return -ENOMEM;
	memset(io, 0, sizeof(*io));
	slot = around_register(c, block, n_blocks);
	if (slot < 0) {
		bufio_obj_put(c, io);
		return slot;
	}
	r = scan_range(c, block, n_blocks, true);
	if (!r) {
		io->c = c;
		io->n_blocks = n_blocks;
		io->cb = cb;
		io->ctx = ctx;
		io->slot = slot;
		bufio_io_get(c);
		r = c->bdev.ops->submit(c->bdev.dev, FM_BDEV_WRITE, sector_of(c, block), iov,
					iovcnt, flags & FM_BDEV_FUA, around_end_io, io);
		if (r == 0)
			return 0;
		bufio_io_put(c);
	}
	bufio_obj_put(c, io);
	around_unregister(c, slot);
	return r;
}

/* A read-around's look at the cache: which blocks it copied. */
struct read_scan {
	struct bufio_client *c;
	uint64_t block;                 /* the read's first block */
	const struct iovec *iov;
	unsigned iovcnt;
	uint64_t copied;
	uint64_t mask[BUFIO_AROUND_MAX_BLOCKS / 64];   /* copied */
	uint64_t newer[BUFIO_AROUND_MAX_BLOCKS / 64];  /* ... and not on the device yet */
};

static int read_scan_visit(struct bufio_shard *s, struct bufio_buffer *b, void *ctx)
{
	struct read_scan *rs = ctx;
	struct bufio_client *c = rs->c;
	uint64_t i = b->block - rs->block;

	(void)s;
	if (b->state & BUFIO_B_NOT_VALID)
		return 0;       /* the device has its newest completed write */
	/* Under the shard lock: b->data is not swapped meanwhile. */
	fm_iov_fill(rs->iov, rs->iovcnt, (size_t)i << c->block_shift, b->data, c->block_size);
	rs->mask[i / 64] |= 1ull << (i % 64);
	if (b->state & (BUFIO_B_DIRTY | BUFIO_B_WRITING))
		rs->newer[i / 64] |= 1ull << (i % 64);
	rs->copied++;
	return 0;
}

static bool read_scan_copied(const struct read_scan *rs, uint64_t i)
{
	return rs->copied && (rs->mask[i / 64] & (1ull << (i % 64)));
}

/* Block @i must come from the cache: the device may hold an older copy. */
static bool read_scan_newer(const struct read_scan *rs, uint64_t i)
{
	return rs->copied && (rs->newer[i / 64] & (1ull << (i % 64)));
}

static void around_read_end(void *arg, int err)
{
	struct around_io *io = arg;
	struct bufio_client *c = io->c;
	bufio_around_cb cb = io->cb;
	void *ctx = io->ctx;

	if (err) {
		int zero = 0;

		atomic_compare_exchange_strong(&io->first_err, &zero, err);
	}
	if (atomic_fetch_sub_explicit(&io->pending, 1, memory_order_acq_rel) != 1)
		return;
	err = atomic_load(&io->first_err);
	if (!err)
		atomic_fetch_add_explicit(&c->around_reads, io->n_blocks, memory_order_relaxed);
	bufio_obj_put(c, io);
	cb(ctx, err);
	bufio_io_put(c); /* last: destroy may free @c after it */
}

/*
 * Read the blocks of @rs that were not copied from the cache, a run per
 * device request: a run starts and ends at a block not copied and spans
 * copied clean ones (the device holds the same data), never a dirty or
 * being-written one.  Returns the first submission's -errno when nothing
 * was submitted (@cb is then not called), otherwise 0.
 */
static int read_runs(struct bufio_client *c, const struct read_scan *rs, uint64_t n_blocks,
		     bufio_around_cb cb, void *ctx)
{
	struct around_io *io = bufio_obj_get(c);
	bool submitted = false;
	int r = 0;

	if (!io)
		return -ENOMEM;
	memset(io, 0, sizeof(*io));
	io->c = c;
	io->n_blocks = 0;               /* set below, before our last reference */
	io->cb = cb;
	io->ctx = ctx;
	io->slot = -1;
	atomic_init(&io->pending, 1);   /* ours, until every run is issued */
	atomic_init(&io->first_err, 0);
	bufio_io_get(c);
	for (uint64_t i = 0; i < n_blocks;) {
		struct iovec part[BUFIO_AROUND_MAX_IOV];
		const struct iovec *run = rs->iov;
		unsigned cnt = rs->iovcnt;
		uint64_t end, next;

		if (read_scan_copied(rs, i)) {
			i++;
			continue;
		}
		for (next = i + 1; next < n_blocks && !read_scan_newer(rs, next); next++)
			;
		for (end = next; read_scan_copied(rs, end - 1); end--)
			;       /* (block i was not copied) */
		if (rs->copied) {
			/* (else one run, the caller's iovecs as they are) */
			cnt = fm_iov_slice(rs->iov, rs->iovcnt, (size_t)i << c->block_shift,
					   (size_t)(end - i) << c->block_shift, part);
			run = part;
		}
		atomic_fetch_add_explicit(&io->pending, 1, memory_order_relaxed);
		r = c->bdev.ops->submit(c->bdev.dev, FM_BDEV_READ, sector_of(c, rs->block + i),
					run, cnt, 0, around_read_end, io);
		if (r < 0) {
			atomic_fetch_sub_explicit(&io->pending, 1, memory_order_relaxed);
			break;
		}
		submitted = true;
		io->n_blocks += end - i;
		i = next;
	}
	if (r < 0 && !submitted) {
		bufio_obj_put(c, io);
		bufio_io_put(c);
		return r;
	}
	/* (the blocks answered from the cache: some copied ones were read
	 * again with a run) */
	atomic_fetch_add_explicit(&c->around_cached, n_blocks - io->n_blocks,
				  memory_order_relaxed);
	/* Our reference: the last one to drop calls @cb (maybe now). */
	around_read_end(io, r);
	return 0;
}

/*
 * Does no shard that blocks [@block, + @n) map to hold a buffer?  Then the
 * read-around's look finds nothing, and takes no shard lock (on legs in
 * memory writes go around the cache and the index stays empty: the lock,
 * the table probe and the unlock were ~1.5% of an io_uring queue thread at
 * 4k QD32 randread).  Without the lock, a buffer being inserted meanwhile
 * may be missed: its data is of a read (what the device holds) or of a
 * write not completed yet, concurrent with this read, as for
 * bufio_splice_around()'s counters; a write into the cache that completed
 * before this read was called counted its buffer (under the shard lock,
 * before completing), so this load sees it.
 */
static bool around_index_empty(struct bufio_client *c, uint64_t block, uint64_t n)
{
	if (n >= c->nshards) {
		for (unsigned i = 0; i < c->nshards; i++)
			if (atomic_load_explicit(&c->shards[i].count, memory_order_acquire))
				return false;
		return true;
	}
	for (uint64_t i = 0; i < n; i++)
		if (atomic_load_explicit(&bufio_shard_of(c, block + i)->count,
					 memory_order_acquire))
			return false;
	return true;
}

void bufio_read_soon(struct bufio_client *c, uint64_t block)
{
	if (c->bdev.ops->read_soon)
		c->bdev.ops->read_soon(c->bdev.dev, sector_of(c, block));
}

void bufio_write_soon(struct bufio_client *c, uint64_t block)
{
	if (c->bdev.ops->write_soon)
		c->bdev.ops->write_soon(c->bdev.dev, sector_of(c, block));
}

int bufio_read_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		      const struct iovec *iov, unsigned iovcnt, bufio_around_cb cb, void *ctx)
{
	struct read_scan rs = { .c = c, .block = block, .iov = iov, .iovcnt = iovcnt };
	int r;

	r = check_args(c, block, n_blocks, iov, iovcnt);
	if (r)
		return r;
	if (n_blocks > BUFIO_AROUND_MAX_BLOCKS || iovcnt > BUFIO_AROUND_MAX_IOV)
		/* Too wide to track per block: around only an uncached range. */
		r = scan_range(c, block, n_blocks, false);
	else if (around_index_empty(c, block, n_blocks))
		r = 0;  /* nothing cached: one device read of the whole range */
	else
		r = bufio_index_walk_range(c, block, n_blocks, read_scan_visit, NULL, &rs);
	if (r)
		return r;
	return read_runs(c, &rs, n_blocks, cb, ctx);
}

/* A splice- or map-around's look at a cached block of its range: -EBUSY
 * when the device may hold an older copy. */
static int splice_scan_visit(struct bufio_shard *s, struct bufio_buffer *b, void *ctx)
{
	(void)s;
	(void)ctx;
	return b->state & (BUFIO_B_DIRTY | BUFIO_B_WRITING) ? -EBUSY : 0;
}

/*
 * A splice- or map-around's look at the cache: 0 when no block of [@block,
 * + @n_blocks) is dirty or being written, else -EBUSY (-EINVAL: bad range).
 */
static int around_device_current(struct bufio_client *c, uint64_t block, uint64_t n_blocks)
{
	if (!n_blocks || block + n_blocks < block)
		return -EINVAL;
	/* No dirty or being-written block anywhere (the common case on legs
	 * in memory, whose writes go around the cache): no look at each
	 * block.  The counters change under the shard locks before a write
	 * into the cache completes, so one completed before this call shows;
	 * and it is one counter per shard (n_unclean), which a block moving
	 * between dirty and being written leaves alone, so such a block is
	 * not missed between two loads. */
	if (!bufio_count(c, BUFIO_COUNT_DIRTY))
		return 0;
	return bufio_index_walk_range(c, block, n_blocks, splice_scan_visit, NULL, NULL);
}

int bufio_map_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		     const void **ret_ptr, void **ret_hold)
{
	int r;

	if (!c->bdev.ops->map_read)
		return -EOPNOTSUPP;
	r = around_device_current(c, block, n_blocks);
	if (r)
		return r;
	r = c->bdev.ops->map_read(c->bdev.dev, sector_of(c, block), n_blocks << c->sector_shift,
				  ret_ptr, ret_hold);
	if (!r) {
		atomic_fetch_add_explicit(&c->around_reads, n_blocks, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->around_mapped, n_blocks, memory_order_relaxed);
	}
	return r;
}

void bufio_map_put(struct bufio_client *c, void *hold, uint64_t block, uint64_t n_blocks,
		   int err)
{
	c->bdev.ops->map_put(c->bdev.dev, hold, sector_of(c, block),
			     n_blocks << c->sector_shift, err);
}

int bufio_splice_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks, int pipe_fd)
{
	int r;

	if (!c->bdev.ops->splice_read)
		return -EOPNOTSUPP;
	if (pipe_fd < 0)
		return -EINVAL;
	r = around_device_current(c, block, n_blocks);
	if (r)
		return r;
	r = c->bdev.ops->splice_read(c->bdev.dev, sector_of(c, block), n_blocks << c->sector_shift,
				     pipe_fd);
	if (!r) {
		atomic_fetch_add_explicit(&c->around_reads, n_blocks, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->around_spliced, n_blocks, memory_order_relaxed);
	}
	return r;
}
