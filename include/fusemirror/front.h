/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE front: the mirror's image as one regular file, through libfuse's
 * low-level API.
 *
 * The mount point is either a directory, in which the image appears as one
 * file (opts->name, default "image"), or an existing regular file, over
 * which the image is mounted (as qemu-storage-daemon's FUSE export does).
 *
 * Data path: reads come from the cache (bufio), which reads missing blocks
 * from the mirror and answers from the I/O completion, so no thread sleeps
 * on a read; writes are copied into the cache (read-modify-write for
 * partial blocks) and, with cache_mode=writeback, answered at once and
 * written back later; with writethrough, answered once on every leg.
 * fsync and flush write back every dirty block and flush every leg.
 * fallocate PUNCH_HOLE|KEEP_SIZE discards, ZERO_RANGE writes zeroes, both on
 * every leg and in the cache.  Reads past the end are short, writes past it
 * fail with ENOSPC, the size never changes.
 *
 * Transports: requests come through /dev/fuse (libfuse's loop) or through
 * FUSE over io_uring (src/front/fuse_uring.h: one queue thread per possible
 * CPU, each with its own ring, the handler run on that thread), chosen by
 * front_opts.transport.  FRONT_TRANSPORT_AUTO takes io_uring only on
 * machines with at least FRONT_URING_AUTO_MIN_CPUS possible CPUs and the
 * kernel parameter on: with fewer, /dev/fuse was measured faster here (4k
 * QD1 reads 0.6-0.9x and 1M sequential ~0.55x on io_uring with 2 CPUs, as
 * one submitting task keeps one queue busy while the other CPU idles), and
 * falls back to /dev/fuse when io_uring cannot be set up.  The operations
 * are the same on both: a ring request is handed to libfuse's dispatcher
 * in the /dev/fuse wire format (payload in place), and its reply, written
 * by libfuse through the session's I/O hook, is turned into the ring
 * entry's COMMIT_AND_FETCH.
 *
 * Threading: front_run() runs libfuse's multi-threaded loop on the calling
 * thread and its workers (or, with opts->event_loop, one event loop per
 * CPU, the calling thread being the first), and returns when the file
 * system is unmounted or front_exit() is called (from any thread, also a
 * signal handler's thread via the front's own handlers).  With io_uring,
 * the queue threads run from front_mount() to front_destroy().  Replies
 * may be sent from dmio reaper threads (on io_uring handed to the queue's
 * thread).  front_get_stats() and front_get_queue_stats() may be called
 * from any thread.
 *
 * WARNING: an event-loop thread never blocks: it completes its own I/O,
 * so a wait there would wait for itself.  Handlers on a loop use only
 * bufio's never-waiting calls and hand anything that may wait (a partial
 * block to read before a write, a full cache, writethrough, fsync,
 * fallocate) to a pool of threads that may.
 */
#ifndef FUSEMIRROR_FRONT_H
#define FUSEMIRROR_FRONT_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "fusemirror/bufio.h"
#include "fusemirror/mirror.h"

struct front;

enum front_cache_mode {
	FRONT_CACHE_WRITEBACK,  /* a write returns once it is in the cache */
	FRONT_CACHE_WRITETHROUGH, /* a write returns once it is on every leg */
};

enum front_transport {
	FRONT_TRANSPORT_AUTO,           /* io_uring on big machines, else /dev/fuse */
	FRONT_TRANSPORT_URING,          /* FUSE over io_uring, or refuse to mount */
	FRONT_TRANSPORT_DEV,            /* read()/write() on /dev/fuse */
};

/* AUTO picks io_uring from this many possible CPUs on (see above). */
#define FRONT_URING_AUTO_MIN_CPUS 8u

/* "auto", "uring", "dev"; front_transport_from_name() returns false for
 * anything else. */
const char *front_transport_name(enum front_transport t);
bool front_transport_from_name(const char *name, enum front_transport *ret);

struct front_opts {
	const char *mountpoint;
	const char *name;               /* image file name in a directory */
	bool readonly;
	bool allow_other;
	enum front_cache_mode cache_mode;
	unsigned max_threads;           /* FUSE worker threads; 0: 8 */
	unsigned max_background;        /* kernel async queue; 0: 256 */
	/* Event loops instead of libfuse's worker threads: one per CPU (half
	 * as many on /dev/fuse when a leg is not in memory), each
	 * reading requests and doing their I/O on its own io_uring, replies
	 * sent from the completions on the same thread (run to completion);
	 * max_threads then sizes the pool for work that may block. */
	bool event_loop;
	/* On /dev/fuse with every leg in memory, a loop that reads its
	 * requests one at a time spins (reads without sleeping) this long
	 * for the next before it sleeps; 0: never. */
	unsigned spin_us;
	const char *fsname;             /* shown in /proc/mounts */
	enum front_transport transport;
	unsigned uring_depth;           /* entries per io_uring queue; 0: 32 */
};

/*
 * Create the FUSE session and mount it.  Returns 0, or -errno with @err
 * (mount point missing or not a directory/regular file, mount refused,
 * transport uring where the kernel cannot: the message names the
 * enable_uring parameter).  With io_uring, returns only once the kernel's
 * INIT was answered and every queue registered, so success means the
 * image is being served.  @m and @c must outlive the front.
 */
int front_mount(const struct front_opts *opts, struct mirror *m, struct bufio_client *c,
		struct front **ret_front, GError **err);

/* Serve requests until unmounted or front_exit(); returns 0 or -errno. */
int front_run(struct front *f);

/*
 * Why serving stopped by itself (e.g. "reading /dev/fuse: Bad address"), or
 * NULL when it stopped because the image was unmounted or front_exit() was
 * called.  The front logs at debug level only: the caller reports this.
 * Call after front_run() returned.
 */
const char *front_stop_reason(const struct front *f);

/* Ask front_run() to return (async-signal-safe). */
void front_exit(struct front *f);

/* Unmount (if still mounted) and free.  Accepts NULL. */
void front_destroy(struct front *f);

/* The path of the image file (the mount point itself, or mountpoint/name). */
const char *front_image_path(const struct front *f);

struct front_stats {
	uint64_t reads, writes, fsyncs, fallocates;
	uint64_t flushes;               /* FUSE flushes (one per close()) */
	uint64_t read_bytes, write_bytes;
	uint64_t errors;                /* requests answered with an error */
	uint64_t handoffs;              /* event loops and io_uring queues: work
					   given to the slow pool (status: slow_jobs) */
	uint64_t spliced_reads;         /* reads answered by splice from a leg */
	uint64_t spliced_read_bytes;    /* ... their bytes (in read_bytes too) */
	uint64_t mapped_replies;        /* reads answered from a leg's mapping */
	uint64_t mapped_reply_bytes;    /* ... their bytes (in read_bytes too) */
	uint64_t ring_replies;          /* replies written on a loop's io_uring */
	uint64_t async_replies;         /* large read replies an io-wq worker wrote */
	uint64_t blocking_reads;        /* requests a loop waited for in read() */
	uint64_t spun_reads;            /* of those, read while spinning */
	uint64_t spin_misses;           /* spins that ended without a request */
	uint64_t standby_reads;         /* requests read by a standby loop */
	uint64_t ring_reads;            /* requests read by READs on a loop's ring */
};
void front_get_stats(const struct front *f, struct front_stats *ret);

/* The transport in use (never AUTO), and why it was chosen (for the log;
 * valid while @f lives). */
enum front_transport front_get_transport(const struct front *f);
const char *front_transport_reason(const struct front *f);

/* The largest read or write the kernel sends the front (its max_write;
 * reads, without max_read, are cut to the same 256 pages). */
#define FRONT_MAX_IO (1u << 20)

/*
 * Why reads of up to FRONT_MAX_IO that the /dev/fuse event loops could
 * answer by splice (one copy from the legs' page cache; DESIGN.md,
 * "Spliced replies") cannot all be: their pipe's size, known at mount.  A
 * sentence for the log, valid while @f lives, or NULL (all can, or no
 * read is spliced here: io_uring, no event loops, a leg not in memory).
 */
const char *front_splice_note(const struct front *f);

/* Per io_uring queue (none on /dev/fuse). */
struct front_queue_stats {
	unsigned cpu;                   /* the queue's CPU (its qid) */
	unsigned depth;                 /* ring entries */
	uint64_t requests;              /* requests received */
	uint64_t in_flight;             /* received, not answered yet */
	uint64_t handoffs;              /* replies sent from another thread */
	uint64_t moves;                 /* times its thread left its CPU, the
	                                   CPU being busy (DESIGN.md) */
};
unsigned front_get_nr_queues(const struct front *f);
void front_get_queue_stats(const struct front *f, unsigned i, struct front_queue_stats *ret);

#endif /* FUSEMIRROR_FRONT_H */
