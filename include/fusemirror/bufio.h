/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bufio: a userspace dm-bufio.  A cache of fixed-size blocks of one block
 * device: it holds recently read blocks in memory, performs delayed writes,
 * handles block sizes larger than a page (512 B .. 1 MiB) and bounds its
 * memory.  It sits on a device given as a small ops table (struct fm_bdev,
 * include/fusemirror/blockdev.h), so the same cache runs on one plain
 * device (the dmio adapter at the end of this header) and on the mirror.
 *
 * Threading:
 *   - Every function may be called from any thread, on any client, at the
 *     same time, except bufio_client_destroy() (no other call on that client
 *     may run or follow) and the setters marked "before I/O".
 *   - Functions documented "may block" wait for memory, I/O or other
 *     holders; they must not be called from a bdev completion (end_io)
 *     context: the completion they would wait for may be queued behind the
 *     caller.  bufio_get(), bufio_release(), the mark-dirty calls,
 *     bufio_prefetch(), bufio_write_dirty_buffers_async(), bufio_forget*()
 *     and the getters never wait for I/O and may be called from there.
 *   - Callbacks (alloc_callback, write_callback, bufio_read_async's @cb)
 *     run with no bufio lock held; alloc/write callbacks must not call back
 *     into bufio for the same buffer.
 *   - A cache hit takes no lock: a lock-free lookup takes a reference and
 *     checks it; only when that loses a race (the buffer is being read,
 *     evicted or moved) does it take one shard lock, never a client-wide
 *     or global one.  A release takes no lock either.
 *   - One background "cleaner" thread per process (started with the first
 *     client, joined when the last is destroyed) writes back old dirty
 *     buffers, frees old clean ones and trims clients above their limit.
 *   - One background "filler" thread per client with blocks smaller than
 *     a chunk (started at create, joined at destroy) maps and prefaults
 *     block memory ahead of the allocations once the cache grows, so that
 *     an allocation seldom waits for the kernel to clear 2 MiB
 *     (bufio_stats.data_maps_inline counts those that did).
 *
 * Memory:
 *   - All clients of the process share one byte limit (the kernel module's
 *     max_cache_size_bytes; default 2% of RAM); each client may use an equal
 *     share of it, but never less than (reserved_buffers + minimum buffers)
 *     blocks.  A block counts its data and its header, with its aux area
 *     and its share of the index (bufio_get_buffer_cost()), so the limit is
 *     the memory the cache takes (headers of evicted blocks are kept for
 *     reuse and no longer counted: never more of them than the most blocks
 *     cached at once).  A copy on write counts its data.  The limit is
 *     checked before a block is allocated, not reserved: allocations on
 *     several threads at once, and copies on write (made without a check,
 *     so that modifying a block that is being written never waits for
 *     memory), may take the count a few blocks past it while they last.
 *     Blocks smaller than 2 MiB are slots of 2 MiB chunks, so a block
 *     costs its size (malloc would take 8 KiB for a 4 KiB aligned block),
 *     and blocks allocated together are neighbours in memory.
 *   - Clean buffers are evicted with a CLOCK (second chance) policy; held
 *     buffers are never evicted; dirty buffers are written before they are
 *     dropped.  A client whose dirty buffers dominate (more than 3 dirty per
 *     clean one, with more than half of its share in use) starts
 *     writing them back in the background: the oldest first, in batches
 *     sorted into contiguous runs, with at most 1/8 of its share (and
 *     16 MiB) being written at a time.  Dirty buffers older than
 *     writeback_age are written back whatever the memory says.
 *
 * Modifying a buffer (how "a buffer being written is never modified
 * underneath the write" holds):
 *   - Data returned by bufio_get_block_data() may be read at any time while
 *     the buffer is held.  To change it, call bufio_begin_modify(): it
 *     returns the pointer to write to, and the change ends with
 *     bufio_mark_buffer_dirty() or bufio_mark_partial_buffer_dirty().
 *   - If the buffer is being written when bufio_begin_modify() is called,
 *     it copies on write when the caller is its only holder (the write goes
 *     on from the old memory, the buffer gets a fresh copy: the returned
 *     pointer then differs from the one held before), and otherwise waits
 *     for the write to complete.  Writeback never starts on a buffer between
 *     begin_modify and mark-dirty.  So every leg of the mirror receives the
 *     same bytes, and writes of one block are issued in order.
 *
 * WARNING: to avoid deadlocks, these conditions are observed:
 *
 *   - At most one thread can hold at most "reserved_buffers" buffers
 *     simultaneously.
 *   - Each other thread can hold at most one buffer.
 *   - Threads which call only bufio_get() can hold an unlimited number of
 *     buffers.
 *   - Between bufio_begin_modify() and the mark-dirty call that ends it, a
 *     thread must not call a function that waits for writeback
 *     (bufio_write_dirty_buffers(), bufio_write_dirty_range(),
 *     bufio_write_buffer(), bufio_release_move()).
 *   - A thread holding a buffer from bufio_new() that it has not marked
 *     dirty yet must not ask for the same block again (bufio_read/new:
 *     they wait until the block is filled, i.e. for itself).
 *
 *   - An event-loop thread (one that owns a dmio loop: the I/O it submits
 *     completes only when it runs again) must never call a function that
 *     "may block".  It uses bufio_get(), bufio_read_async_nowait(),
 *     bufio_new_nowait(), bufio_begin_modify_nowait(), bufio_prefetch(),
 *     bufio_read_around(), bufio_splice_around() and
 *     bufio_write_around_async(), which never wait, and parks (or hands
 *     to another thread) what they refuse.
 *
 *   The reserve (@reserved_buffers buffers allocated by
 *   bufio_client_create()) guarantees that the one thread allowed to hold
 *   several buffers makes progress when the cache is at its limit and every
 *   other buffer is held or dirty.
 */
#ifndef FUSEMIRROR_BUFIO_H
#define FUSEMIRROR_BUFIO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "fusemirror/blockdev.h"

struct bufio_client;
struct bufio_buffer;
struct dmio_dev;
struct dmio_client;

#define BUFIO_MIN_BLOCK_SIZE 512u
#define BUFIO_MAX_BLOCK_SIZE (1u << 20)

/*----------------------------------------------------------------*/
/* Clients */

typedef void (*bufio_alloc_fn)(struct bufio_buffer *b);
typedef void (*bufio_write_fn)(struct bufio_buffer *b);

/*
 * Create a buffered I/O cache on @bdev (the struct is copied; its dev must
 * outlive the client).
 *
 * @block_size: a power of two in [BUFIO_MIN_BLOCK_SIZE, BUFIO_MAX_BLOCK_SIZE].
 * @reserved_buffers: buffers allocated now and kept for the thread allowed
 *     to hold several (see WARNING above); may be 0.
 * @aux_size: bytes of per-buffer caller data (bufio_get_aux_data()), zeroed
 *     when the buffer is first allocated, then left to @alloc_callback.
 * @alloc_callback: called (may be NULL) each time a buffer is (re)assigned
 *     to a block, before its read is issued or it is returned by
 *     bufio_new(); bufio_get_block_number() is valid in it.
 * @write_callback: called (may be NULL) just before a buffer is written,
 *     after it was chosen for writing, on the thread starting the write.
 *     It may update the data or aux area (e.g. a checksum); the data is
 *     not changed by anyone else until the write completes.
 *
 * Returns 0 and sets *ret_client, or -EINVAL (bad block size, NULL ops),
 * -ENOMEM.  May block (allocates the reserve).
 */
int bufio_client_create(const struct fm_bdev *bdev, unsigned block_size,
			unsigned reserved_buffers, unsigned aux_size,
			bufio_alloc_fn alloc_callback, bufio_write_fn write_callback,
			struct bufio_client **ret_client);

/*
 * Release a buffered I/O cache.  Writes back every dirty buffer first
 * (a failure is logged at debug level and otherwise lost: call
 * bufio_write_dirty_buffers() before if it matters), waits for all I/O,
 * then frees everything.  No buffer may be held.  Accepts NULL.  May block.
 */
void bufio_client_destroy(struct bufio_client *c);

/* For g_autoptr(bufio_client) only. */
typedef struct bufio_client bufio_client;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(bufio_client, bufio_client_destroy)

/*----------------------------------------------------------------*/
/* Getting buffers */

/*
 * Read a given block from the device (or find it in the cache).  On success
 * returns 0 and *ret_b is held: its data (bufio_get_block_data()) is valid
 * until bufio_release().  Returns -errno if the read failed (the buffer is
 * not left in the cache: a later call reads again), -ENOMEM.  Two threads
 * asking for the same missing block cause one read; the second waits for it.
 * May block (for the read, and for memory when the cache is full).
 */
int bufio_read(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b);

/*
 * Like bufio_read(), but return the buffer only if it is in the cache and
 * valid; never reads, never waits (a block whose read is in flight, or a
 * bufio_new() buffer not yet filled, is "not cached").  Returns 0 (held),
 * or -ENOENT.
 */
int bufio_get(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b);

/*
 * Like bufio_read(), but don't read anything from the device: a block that
 * is not cached gets a buffer with undefined data, which the caller is
 * expected to fill entirely (bufio_begin_modify()) and mark dirty.  Until
 * it does, other threads asking for the block wait for it as for a read
 * (bufio_get() says -ENOENT), so nobody sees the undefined data; if it
 * releases the buffer without marking it dirty, the block is read from the
 * device for them.  A block already cached is returned as it is (waiting
 * for its read or filling if one is under way).
 * Returns 0 (held), -errno.  May block (for memory).
 */
int bufio_new(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b);

/*
 * The asynchronous bufio_read().  @cb(@ctx, b, 0) receives a held buffer
 * (release it when done), or @cb(@ctx, NULL, -errno) a read error.
 *
 * Returns 0 when @cb will be called exactly once: before this function
 * returns, on the calling thread, when the block is cached; otherwise from
 * the bdev's completion context once the read (its own, or one already in
 * flight for that block) completes.  Returns -errno (e.g. -ENOMEM) if the
 * request could not be queued: @cb is then never called.  A block being
 * written around (bufio_write_around_async()) is read once that write
 * ended, into a buffer taken now: its restart, from the write's
 * completion, never waits (it may still fail the read with -ENOMEM).
 * Never waits for I/O, but may block for memory like bufio_read() when the
 * cache is full of dirty or held buffers.
 */
typedef void (*bufio_read_cb)(void *ctx, struct bufio_buffer *b, int err);
int bufio_read_async(struct bufio_client *c, uint64_t block, bufio_read_cb cb, void *ctx);

/*
 * The never-blocking variants, for event-loop threads (see the WARNING
 * above): where bufio_new(), bufio_read_async() or bufio_begin_modify()
 * would wait (for cache memory, for a block being read, filled or written
 * around, for a write of a buffer others hold too), they return
 * -EWOULDBLOCK (NULL for begin_modify) having changed nothing, and the
 * caller parks the request or takes another way.  Otherwise they are the
 * same calls.  (bufio_read_async_nowait() does join a read in flight: that
 * is a callback, not a wait.)
 */
int bufio_new_nowait(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b);
int bufio_read_async_nowait(struct bufio_client *c, uint64_t block, bufio_read_cb cb,
			    void *ctx);
void *bufio_begin_modify_nowait(struct bufio_buffer *b);

/*
 * Start reading @n_blocks blocks from @block into the cache, without
 * holding them or waiting; contiguous missing blocks are read with one
 * request.  Stops early (silently) when no buffer is available without
 * waiting.  Returns the number of blocks whose read was started (>= 0).
 */
int bufio_prefetch(struct bufio_client *c, uint64_t block, unsigned n_blocks);

/*
 * Release a buffer obtained with bufio_{read,get,new} or bufio_read_async.
 * The data and buffer pointers are no longer valid after this call.
 * Never blocks (no lock is taken unless someone waits for a free buffer).
 */
void bufio_release(struct bufio_buffer *b);

/*----------------------------------------------------------------*/
/* Around the cache: large whole-block I/O that does not go through it */

/* Completion of an I/O around the cache: @err is 0 or -errno. */
typedef void (*bufio_around_cb)(void *ctx, int err);

/*
 * Write-around: write whole blocks [@block, @block + @n_blocks) from @iov
 * (exactly @n_blocks * block size bytes) straight to the device, not
 * through the cache, and wait for the write; @flags may hold FM_BDEV_FUA
 * (durable on return).  For streaming writes: no copy, no per-block work,
 * and what the cache holds stays.
 *
 * Cached clean copies of those blocks are dropped first.  If a block is
 * cached in any other way (dirty, being read, written or filled, held),
 * nothing is written and -EBUSY is returned: write through the cache
 * instead (some clean copies may have been dropped, which changes nothing
 * but the cache's contents).  -EBUSY also when too many write-arounds are
 * in flight.  While the write is in flight, the blocks do not enter the
 * cache: bufio_read() and bufio_new() of one of them wait for the write,
 * bufio_read_async() takes its buffer at the call (waiting for memory, or
 * refused by the nowait variant, then and not later) and starts its read
 * once the write ended, bufio_prefetch() skips it.  So on return every
 * later read sees the new data.
 *
 * Returns 0 (written), -EBUSY, -EINVAL (bad sizes), or the write's -errno:
 * then what the device holds for the range is undefined, as after any
 * failed write, and the cache holds none of it.  Errors are not kept for
 * bufio_write_dirty_buffers().  May block (waits for the write).
 */
int bufio_write_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		       const struct iovec *iov, unsigned iovcnt, unsigned flags);

/*
 * The asynchronous bufio_write_around(): the same checks and -EBUSY, but
 * returns 0 once the write is submitted, and @cb(@ctx, 0 or -errno) is
 * called exactly once from the bdev's completion context (possibly before
 * this returns), after the blocks may enter the cache again.  @iov's
 * memory must stay valid and unchanged until then.  Returns -EBUSY,
 * -EINVAL, -ENOMEM or the submission's -errno, and @cb is never called.
 * Never waits.
 */
int bufio_write_around_async(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
			     const struct iovec *iov, unsigned iovcnt, unsigned flags,
			     bufio_around_cb cb, void *ctx);

/*
 * Read-around: read [@block, @block + @n_blocks) into @iov (exactly
 * @n_blocks * block size bytes; the memory must stay valid until @cb)
 * without caching the blocks, and return 0: @cb(@ctx, 0 or -errno) is then
 * called exactly once, from the bdev's completion context or from this
 * function before it returns.  The blocks the cache holds with valid data
 * (clean, dirty or being written) are copied from it when the read is
 * issued, and only the rest is read from the device, in runs split at
 * dirty and being-written blocks alone (a clean block inside a run is read
 * again with it: one device read, not two around a copy), so a streaming
 * read neither evicts the cache nor pays for filling it, and cached blocks
 * in its range do not send it through the cache block by block nor cut it
 * into small device reads.  Returns -EBUSY only for a range wider than BUFIO_AROUND_MAX_BLOCKS
 * or an @iov of more than BUFIO_AROUND_MAX_IOV entries that has a cached
 * block: read through the cache then.  Returns -EINVAL (bad sizes),
 * -ENOMEM, or the first submission's -errno (@cb is then never called).
 * Never waits for I/O.
 */
#define BUFIO_AROUND_MAX_BLOCKS 4096u
#define BUFIO_AROUND_MAX_IOV 32u
int bufio_read_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		      const struct iovec *iov, unsigned iovcnt, bufio_around_cb cb, void *ctx);

/*
 * A read (around the cache) of @block comes soon: passed to the device's
 * read_soon op (blockdev.h), if it has one.  A hint: nothing changes but
 * what the CPU's caches hold.  Never waits.
 */
void bufio_read_soon(struct bufio_client *c, uint64_t block);
/* The same for a write around the cache from @block: the device's
 * write_soon op, if it has one. */
void bufio_write_soon(struct bufio_client *c, uint64_t block);

/*
 * Splice-around: put [@block, @block + @n_blocks) into the pipe @pipe_fd
 * (after what it holds) with the device's splice_read op (see
 * include/fusemirror/blockdev.h), for a caller that sends the bytes on
 * from the pipe: no copy through user memory, none into the cache.  It
 * proceeds only when the cache holds no dirty or being-written block of
 * the range: then every write completed before the call is on the device
 * (a block leaves the cache only clean, and a clean one holds what the
 * device does), so the read sees it, as a read-around would.  The blocks
 * are not touched.  Synchronous; returns 0 when every byte is in the pipe.
 * Refusals, with nothing put in the pipe: -EOPNOTSUPP (the device has no
 * splice_read, or refuses it), -EAGAIN (the device refuses now), -EBUSY (a
 * block of the range is dirty or being written), -EINVAL (bad range); the
 * caller then reads another way (bufio_read_around()).  Any other -errno:
 * the device's read failed, and the pipe may hold part of the range, which
 * the caller must discard.  Never waits (nor does the device's
 * splice_read).
 */
int bufio_splice_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks, int pipe_fd);

/*
 * Map-around: the device's own memory that holds [@block, @block +
 * @n_blocks), lent by its map_read op (include/fusemirror/blockdev.h), for a
 * caller that has the bytes read from there (a reply written to /dev/fuse
 * straight from a leg's mapping: no copy through user memory, none into
 * the cache).  *@ret_ptr points at the first byte of @block; *@ret_hold
 * goes to bufio_map_put() once nothing reads there any more.  It proceeds
 * under bufio_splice_around()'s rule (no block of the range dirty or being
 * written in the cache at this call: every write completed before it is in
 * the device's memory), and the bytes are those of the device when they
 * are read, later: a write that enters the cache or the device after this
 * call was concurrent with the read.  The blocks are not touched.  Never
 * waits.  Returns 0 (lent); refusals, with nothing held: -EOPNOTSUPP (the
 * device has no map_read, or refuses it), -EAGAIN (the device refuses
 * now), -EBUSY (a block of the range is dirty or being written), -EINVAL
 * (bad range); the caller then reads another way.
 */
int bufio_map_around(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
		     const void **ret_ptr, void **ret_hold);
/* End bufio_map_around()'s loan @hold of [@block, @block + @n_blocks)
 * (as lent); @err as the device's map_put (-EFAULT: a copy from the lent
 * memory failed, the device's read error).  Any thread; never waits. */
void bufio_map_put(struct bufio_client *c, void *hold, uint64_t block, uint64_t n_blocks,
		   int err);

/*----------------------------------------------------------------*/
/* Modifying buffers */

/*
 * Announce a change of the data of held buffer @b; returns the pointer to
 * change (which is also what bufio_get_block_data() returns from now on;
 * it differs from the previous one after a copy on write).  Must be ended
 * by exactly one bufio_mark_buffer_dirty()/bufio_mark_partial_buffer_dirty().
 * May block: when @b is being written and held by others too, waits for
 * the write; when copying, allocates a block (falls back to waiting).
 */
void *bufio_begin_modify(struct bufio_buffer *b);

/*
 * Mark a buffer dirty.  It should be called after the buffer is modified
 * (it ends a bufio_begin_modify()).
 *
 * In case of memory pressure or age, the buffer may be written after
 * bufio_mark_buffer_dirty() but before bufio_write_dirty_buffers(). So
 * bufio_write_dirty_buffers() guarantees that the buffer is on the device,
 * but the actual writing may occur earlier.  Never blocks.
 */
void bufio_mark_buffer_dirty(struct bufio_buffer *b);

/*
 * Mark only bytes [@start, @end) of the buffer dirty (0 <= start < end <=
 * block size); repeated calls widen the range to cover both.  Only that
 * range, rounded out to 512-byte sectors, is written.  Never blocks.
 */
void bufio_mark_partial_buffer_dirty(struct bufio_buffer *b, unsigned start, unsigned end);

/*----------------------------------------------------------------*/
/* Writing back */

/*
 * Initiate writing of dirty buffers, without waiting for completion.
 * Contiguous dirty buffers go out as one vectored request.  Errors are kept
 * for the next bufio_write_dirty_buffers().  Every dirty buffer not busy is
 * claimed now, but at most 1/8 of the cache limit (16 MiB) is in flight at
 * a time: write completions submit the rest.
 */
void bufio_write_dirty_buffers_async(struct bufio_client *c);

/*
 * Write all dirty buffers.  On return every buffer dirtied before the call
 * is on the device (held buffers included), then a flush was issued (which
 * also makes every bufio_write_around() that returned before it durable).
 * Returns 0, or the first write error since the last call (including
 * errors of background writeback), or the flush's error.  A buffer whose
 * write failed stays dirty and is retried by the next call: as long as the
 * device keeps failing, each call keeps reporting the error.  May block.
 */
int bufio_write_dirty_buffers(struct bufio_client *c);

/*
 * Write the dirty buffers of blocks [@block, @block + @n_blocks) that are
 * cached, and wait: on return every buffer of the range dirtied before the
 * call is on the device.  @flags may hold FM_BDEV_FUA: durable on return
 * (the writes made here are FUA, and when a block of the range was being
 * written or modified by someone else at the call, a flush follows: that
 * write may not have been FUA).  Otherwise no flush is issued.  Returns 0
 * or the first error of these writes (which is also kept for
 * bufio_write_dirty_buffers()), or the flush's.  May block.
 */
int bufio_write_dirty_range(struct bufio_client *c, uint64_t block, uint64_t n_blocks,
			    unsigned flags);

/* bufio_write_dirty_range() of the one block of held buffer @b. */
int bufio_write_buffer(struct bufio_buffer *b, unsigned flags);

/* Send a flush to the device: every completed write becomes durable. */
int bufio_issue_flush(struct bufio_client *c);

/*
 * Send a discard of @count blocks from @block to the device.  Cached
 * buffers are not changed: call bufio_forget_buffers() first.  May block.
 */
int bufio_issue_discard(struct bufio_client *c, uint64_t block, uint64_t count);

/*
 * Discard (bufio_discard()) or zero (bufio_write_zeroes()) whole blocks
 * [@block, @block + @n_blocks) on the device, keeping the cache coherent:
 * dirty buffers of the range are written first (nothing older lands after
 * the zeroes), cached copies are dropped, the device's discard or
 * write_zeroes op runs, and a block that stayed cached (held by someone,
 * or read meanwhile) is zeroed in the cache and marked dirty; a read (or
 * a bufio_new() fill) of the range still in flight then is waited for
 * first, as it may bring the old data in after the op.  On return,
 * every read of the range sees zeroes; nothing is durable before the next
 * flush (bufio_write_dirty_buffers()).  Partial blocks are the caller's:
 * zero them through the cache.
 * Returns 0, -EOPNOTSUPP (the device has no such op), -EINVAL, or the
 * device's or a writeback's -errno (then the range's contents are
 * undefined, as after a failed write).  May block.
 */
int bufio_discard(struct bufio_client *c, uint64_t block, uint64_t n_blocks);
int bufio_write_zeroes(struct bufio_client *c, uint64_t block, uint64_t n_blocks);

/*
 * Like bufio_release() but also move the buffer to block @new_block.
 * bufio_write_dirty_buffers() is needed to commit the new block.
 * If @b was dirty it is first written to its old block.  A buffer cached
 * for @new_block is dropped (its dirty data too), waiting for its holders
 * to release it.  If others also hold @b, its data is written to
 * @new_block now and @b stays at its old block.  Errors are kept for
 * bufio_write_dirty_buffers().  May block.
 */
void bufio_release_move(struct bufio_buffer *b, uint64_t new_block);

/*
 * Free the given buffer.  This is just a hint: if the buffer is held,
 * dirty or under I/O, this function does nothing.
 */
void bufio_forget(struct bufio_client *c, uint64_t block);

/* bufio_forget() of every cached block in [@block, @block + @n_blocks). */
void bufio_forget_buffers(struct bufio_client *c, uint64_t block, uint64_t n_blocks);

/* Keep at least @n buffers (default 8) whatever the global limit says. */
void bufio_set_minimum_buffers(struct bufio_client *c, unsigned n);

/* Write back the dirty part of a buffer in units of @bytes (default 512,
 * a power of two up to the block size), aligned to them: for a device that
 * takes only whole 4 KiB blocks (a mirror with checksums).  Before I/O.
 * 0 or -EINVAL. */
int bufio_set_write_align(struct bufio_client *c, unsigned bytes);

/* Block 0 is at sector @start of the device.  Before I/O. */
void bufio_set_sector_offset(struct bufio_client *c, uint64_t start);

/*----------------------------------------------------------------*/
/* Getters; valid while the buffer is held */

unsigned bufio_get_block_size(const struct bufio_client *c);
/* The bytes one cached block counts against the limit: its data and its
 * header (with its aux area and its share of the index); 4 KiB blocks
 * with no aux: 4096 + 208 on x86_64. */
unsigned bufio_get_buffer_cost(const struct bufio_client *c);
/* Device size in whole blocks, after the sector offset. */
uint64_t bufio_get_device_size(struct bufio_client *c);
uint64_t bufio_get_block_number(const struct bufio_buffer *b);
void *bufio_get_block_data(const struct bufio_buffer *b);
void *bufio_get_aux_data(const struct bufio_buffer *b);
struct bufio_client *bufio_get_client(const struct bufio_buffer *b);

/*----------------------------------------------------------------*/
/* Statistics and knobs */

struct bufio_stats {
	uint64_t hits;          /* read/get/new/read_async found the block */
	uint64_t misses;        /* ... did not */
	uint64_t reads;         /* blocks read from the device */
	uint64_t read_ios;      /* read requests (a prefetch run is one) */
	uint64_t writes;        /* blocks written */
	uint64_t write_ios;     /* write requests (a contiguous run is one) */
	uint64_t evictions;     /* clean buffers evicted (CLOCK, age, limit) */
	uint64_t cow_copies;    /* copies made by bufio_begin_modify() */
	uint64_t read_errors;
	uint64_t write_errors;  /* failed block writes */
	uint64_t bytes;         /* memory held now: bufio_get_buffer_cost() per
				   block (reserve included), plus copies on
				   write still being written */
	uint64_t peak_bytes;
	uint64_t limit_bytes;   /* this client's current share of the limit */
	uint64_t buffers;       /* buffers in the cache */
	uint64_t dirty;         /* of which dirty (or being written) */
	uint64_t around_reads;  /* blocks bufio_read_around() read from the device */
	uint64_t around_cached; /* ... and copied from the cache instead */
	uint64_t around_spliced; /* blocks bufio_splice_around() put in a pipe
				    (in around_reads too) */
	uint64_t around_mapped; /* blocks bufio_map_around() lent (in
				   around_reads too) */
	uint64_t around_writes; /* blocks written by bufio_write_around() */
	uint64_t data_maps;     /* chunks of block memory mapped (blocks smaller
				   than a chunk, 2 MiB): growth of the cache,
				   not its refill after frees */
	uint64_t data_maps_inline; /* ... of which the allocating thread mapped
				   and prefaulted itself (a wait of a few ms),
				   the rest being the filler thread's */
	uint64_t data_ready;    /* chunks the filler holds prefaulted, ahead
				   of the allocations (not in data_maps yet) */
	uint64_t data_surplus;  /* chunks a thread mapped or took ready while
				   another thread's chunk came to have free
				   slots: kept ready, or unmapped where the
				   limit has no room (not in data_maps) */
	uint64_t data_bytes;    /* block memory mapped now: chunks in use,
				   kept empty and ready; within the limit's
				   block data but for one chunk (at the top,
				   a thread maps the last one itself) */
};

/* A consistent-enough snapshot (counters are read shard by shard). */
void bufio_get_stats(struct bufio_client *c, struct bufio_stats *ret_stats);

struct bufio_global_stats {
	uint64_t bytes;         /* all clients */
	uint64_t peak_bytes;
	uint64_t limit_bytes;   /* max_cache_size_bytes in force */
	unsigned clients;
};
void bufio_get_global_stats(struct bufio_global_stats *ret_stats);

/*
 * The kernel module's parameters, process-wide, settable at any time (the
 * cleaner applies a lower limit within its period).
 *   max_cache_size_bytes: 0 restores the default (2% of RAM).
 *   retain_bytes: age-based eviction keeps at least this much per client
 *       (default 256 KiB).
 *   max_age_ms: clean buffers unused this long are freed (default 300 s;
 *       0: never).
 *   writeback_age_ms: dirty buffers dirty this long are written back in the
 *       background (default 30 s; 0: never).
 */
void bufio_set_max_cache_size_bytes(uint64_t bytes);
uint64_t bufio_get_max_cache_size_bytes(void);
void bufio_set_retain_bytes(uint64_t bytes);
uint64_t bufio_get_retain_bytes(void);
void bufio_set_max_age_ms(uint64_t ms);
uint64_t bufio_get_max_age_ms(void);
void bufio_set_writeback_age_ms(uint64_t ms);
uint64_t bufio_get_writeback_age_ms(void);

/*----------------------------------------------------------------*/
/* A bdev on one dmio device */

/*
 * Fill *ret_bdev with ops that send I/O to @dev through the asynchronous
 * dmio() API (requests of @client; NULL: dmio's default client).  Reads
 * and writes complete on dmio's engine threads; flush and discard are
 * synchronous dmio calls.  A failed region is reported as -EIO.
 * Returns 0 or -ENOMEM.  @dev must outlive the bdev.
 */
int bufio_dmio_bdev_create(struct dmio_dev *dev, struct dmio_client *client,
			   struct fm_bdev *ret_bdev);
/* Free what bufio_dmio_bdev_create() allocated; accepts a zeroed bdev. */
void bufio_dmio_bdev_destroy(struct fm_bdev *bdev);

#endif /* FUSEMIRROR_BUFIO_H */
