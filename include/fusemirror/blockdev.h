/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * blockdev: the contract between a block cache and the block device it
 * sits on.  The cache (bufio) calls these ops; a device implements them:
 * the mirror (mirror_bdev()), one plain dmio device (bufio_dmio_bdev_create()),
 * a test's in-memory device.  Neither side includes the other's header:
 * this one is all they share.
 *
 * Sectors are 512 bytes, relative to the start of the device.
 *
 * Threading: every op may be called from any thread at the same time,
 * including from an @end_io of an earlier request.  submit() never waits
 * for I/O; flush(), discard() and write_zeroes() are synchronous and must
 * not be called from an @end_io (the completion they wait for may be
 * queued behind the caller).
 */
#ifndef FUSEMIRROR_BLOCKDEV_H
#define FUSEMIRROR_BLOCKDEV_H

#include <stdint.h>
#include <sys/uio.h>

enum fm_bdev_op {
	FM_BDEV_READ,   /* fill the iovec from the device */
	FM_BDEV_WRITE,  /* write the iovec to the device */
};

enum fm_bdev_flags {
	FM_BDEV_FUA = 1u << 0,        /* write: durable when it completes */
	FM_BDEV_BACKGROUND = 1u << 1, /* nobody waits: writeback, prefetch */
};

/* Completion of one submitted request: @err is 0 or -errno. */
typedef void (*fm_bdev_end_io_fn)(void *ctx, int err);

struct fm_bdev_ops {
	/*
	 * Start one request on the byte range [sector * 512, + sum of iov
	 * lengths), which is a whole number of sectors.  The iovec array may
	 * be reused as soon as submit returns; the memory it points to stays
	 * valid (and unchanged, for a write) until completion.
	 * Returns 0 when the request was accepted: @end_io is then called
	 * exactly once, on any thread, possibly before submit returns.
	 * Returns -errno otherwise, and @end_io is never called.
	 * Must not block for long (it is called by cache-hit-path threads).
	 */
	int (*submit)(void *dev, enum fm_bdev_op op, uint64_t sector,
		      const struct iovec *iov, unsigned iovcnt, unsigned flags,
		      fm_bdev_end_io_fn end_io, void *ctx);
	/* Make every completed write durable.  Synchronous; 0 or -errno. */
	int (*flush)(void *dev);
	/*
	 * Unmap [sector, sector + nr_sectors): the range reads back as zeroes
	 * afterwards.  Ordered after every write to the range submitted
	 * before.  Synchronous; 0 or -errno.  May be NULL (-EOPNOTSUPP).
	 */
	int (*discard)(void *dev, uint64_t sector, uint64_t nr_sectors);
	/* Make [sector, sector + nr_sectors) read back as zeroes, as discard
	 * but keeping the space allocated.  May be NULL (-EOPNOTSUPP). */
	int (*write_zeroes)(void *dev, uint64_t sector, uint64_t nr_sectors);
	/* Current size in bytes. */
	uint64_t (*size)(void *dev);
	/*
	 * Optional (NULL: not offered).  Put the bytes of [sector * 512,
	 * + nr_sectors * 512) into the pipe @pipe_fd with splice(2), after
	 * what it holds, for a caller that sends them on from there: from a
	 * page cache the pipe gets references to the pages, not a copy.
	 * Synchronous, but never waits: not for the pipe (the caller gives it
	 * room for the range, a pipe buffer per page), not for I/O (a device
	 * whose bytes are not in memory refuses), so an event loop may call
	 * it.  It is the device's plain read and nothing more, so a device
	 * refuses whenever a read of the range needs more (its data verified,
	 * a copy chosen by a rule splice cannot follow, ...): -EAGAIN (not
	 * now) or
	 * -EOPNOTSUPP (not this device as it is), having put nothing in the
	 * pipe; the caller then reads with submit().  0: every byte of the
	 * range is in the pipe.  Any other -errno: the read failed (no repair
	 * was attempted) and the pipe may hold part of the range, which the
	 * caller must discard; a read with submit() then does the repair.
	 */
	int (*splice_read)(void *dev, uint64_t sector, uint64_t nr_sectors, int pipe_fd);
	/*
	 * Optional (NULL: not offered; with it, map_put too).  Lend the
	 * caller the device's own memory that holds [sector * 512, +
	 * nr_sectors * 512): *@ret_ptr points at those bytes (a mapping of
	 * a device in memory), for a caller that has them read from there
	 * later (the kernel, by a writev() into /dev/fuse), and *@ret_hold
	 * is what it passes to map_put() once nothing reads there any more:
	 * until then the memory stays mapped and the device open.  The
	 * bytes read are the device's when they are read, not at this call:
	 * a write submitted meanwhile may show, whole or in part, as it
	 * would to a read concurrent with it.  Never waits, so an event loop
	 * may call it.  It refuses as splice_read does, and also where a
	 * read through the memory could allocate (a hole), with nothing
	 * held: -EAGAIN (not now) or -EOPNOTSUPP (not this device as it
	 * is); the caller then reads with submit().  0: lent.  The memory
	 * is never written through the pointer.  A read there needs no
	 * repair: a kernel copy from a page gone (the file shrunk behind
	 * the device) fails with EFAULT, and is not redone.
	 */
	int (*map_read)(void *dev, uint64_t sector, uint64_t nr_sectors, const void **ret_ptr,
			void **ret_hold);
	/* End map_read()'s loan @hold of [@sector, + @nr_sectors) (as lent).
	 * @err: 0, or -EFAULT when a copy from the lent memory failed (a page
	 * gone): a read error of that range, which the device counts and
	 * reports as its own; it then lends none of that memory until it
	 * knows it again, and reads it another way (one that can fail and be
	 * repaired).  Never waits; any thread. */
	void (*map_put)(void *dev, void *hold, uint64_t sector, uint64_t nr_sectors, int err);
	/*
	 * Optional (NULL: nothing to gain).  A read at @sector comes soon
	 * (after the caller's other work): the device may start bringing its
	 * first bytes closer to the CPU (a prefetch of a mapping's line).  A
	 * hint only: never waits, never fails, changes nothing a read returns.
	 */
	void (*read_soon)(void *dev, uint64_t sector);
	/* Optional, as read_soon: a write at @sector comes soon (the device
	 * may prefetch, for writing, the lines it will store to). */
	void (*write_soon)(void *dev, uint64_t sector);
};

/* A device: its ops and the pointer passed to each op. */
struct fm_bdev {
	const struct fm_bdev_ops *ops;
	void *dev;
};

#endif /* FUSEMIRROR_BLOCKDEV_H */
