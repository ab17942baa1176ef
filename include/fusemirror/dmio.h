/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * dmio: a userspace dm-io.  Synchronous and asynchronous I/O to one region
 * (read) or up to DMIO_MAX_REGIONS regions at once (write, flush, discard,
 * write-zeroes), with a per-region error bitset, over io_uring.
 *
 * A region is (device, first 512-byte sector, sector count).  A write to N
 * regions sends the same bytes to every region: that is how the mirror fans
 * one write out to all of its legs.
 *
 * Threading:
 *   - Any thread may submit.  Each ring has one issuer, its reaper thread:
 *     other threads hand a request's pieces to it in one lock-free push (and
 *     wake it with an eventfd write only when it sleeps); the reaper submits
 *     whatever has arrived with one io_uring_enter, and refills the ring
 *     every few completions while it runs callbacks.  So the kernel's
 *     completion work always runs on the reaper, never on a submitter.
 *   - A thread may own a ring of its own instead (a loop, see "Loops"):
 *     its I/O then never leaves it.
 *   - Completions are reaped by the engine's own thread(s), one per ring.
 *     Asynchronous callbacks run on those threads, with no dmio lock held.
 *     A callback may submit new asynchronous I/O; it must not call a
 *     synchronous dmio function (that would wait for itself: such a call
 *     returns -EDEADLK) and should not block for long (it holds up every
 *     other completion on its ring).
 *   - A dmio_dev may be used by many threads at once.  Closing it while I/O
 *     to it is in flight is a programmer error.
 *   - dmio_engine_shutdown() waits for every in-flight request.
 *
 * Memory: the memory a request reads into or writes from (the pages of a
 * page list and the list itself, the buffers an iovec array points to, the
 * vm buffer) must stay valid and, for a write, unchanged until the request
 * completes, as a bio's pages must in the kernel.  The region array, the
 * iovec array itself and the struct dmio_request are copied at submission
 * and may be reused as soon as dmio() returns.
 *
 * Ordering: requests are not ordered against each other, as in the kernel,
 * with one exception that only dmio can provide: sub-block writes that
 * dmio turns into read-modify-write (see dmio()) are serialised per device
 * on the logical blocks they rewrite, so two writes to different sectors of
 * one logical block never undo each other.
 */
#ifndef FUSEMIRROR_DMIO_H
#define FUSEMIRROR_DMIO_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

/* At most this many regions in one request: bits of an unsigned long. */
#define DMIO_MAX_REGIONS 64

/*----------------------------------------------------------------*/
/* Devices */

struct dmio_dev;

enum dmio_dev_flags {
	DMIO_DEV_RDONLY = 1u << 0,      /* open read-only; writes fail (EBADF) */
	DMIO_DEV_NO_DIRECT = 1u << 1,   /* do not try O_DIRECT */
	DMIO_DEV_CREATE = 1u << 2,      /* create a regular file if missing */
	DMIO_DEV_EXCL = 1u << 3,        /* O_EXCL on a block device (claim it) */
};

/*
 * Open a backing regular file or block device.  O_DIRECT is used when the
 * file system or device accepts it (unless DMIO_DEV_NO_DIRECT), otherwise
 * buffered I/O; always O_CLOEXEC.  Size comes from fstat (files) or
 * BLKGETSIZE64 (block devices), the logical block size from BLKSSZGET, and
 * the O_DIRECT memory/offset alignment from statx(STATX_DIOALIGN) where the
 * kernel reports it.  Returns 0 or -errno; *ret_dev is untouched on failure.
 */
int dmio_dev_open(const char *path, unsigned flags, struct dmio_dev **ret_dev);

/*
 * @path may also be an NBD URI (see dmio_path_is_remote()): a remote
 * device, reached with libnbd.  Opening it connects (blocking, like an
 * open() of a slow disk); its I/O is then asynchronous on the engine's
 * rings like any other (see "Remote devices").  It has no fd.  CREATE,
 * NO_DIRECT and EXCL are ignored for it; opening it writable fails with
 * -EROFS when the server exports it read-only; a connection that cannot be
 * made fails with libnbd's errno (e.g. -ECONNREFUSED, -ENOENT).
 */

/*
 * As dmio_dev_open(), with a deadline for a remote device's connection and
 * NBD handshake: @connect_timeout_ms (0: DMIO_REMOTE_CONNECT_TIMEOUT_MS,
 * what dmio_dev_open() uses).  A server that accepts the connection but
 * does not finish the handshake in time (a hung or overloaded one) fails
 * it with -ETIMEDOUT; libnbd alone would wait forever.  A local device
 * ignores @connect_timeout_ms.
 */
#define DMIO_REMOTE_CONNECT_TIMEOUT_MS 10000u
int dmio_dev_open_timeout(const char *path, unsigned flags, unsigned connect_timeout_ms,
			  struct dmio_dev **ret_dev);

/*
 * Wrap an fd the caller opened (dmio takes ownership of it, also on
 * failure).  The same probing as dmio_dev_open() is done; whether @fd uses
 * O_DIRECT is read from its file status flags.
 */
int dmio_dev_open_fd(int fd, const char *name, struct dmio_dev **ret_dev);

/* Close; accepts NULL.  No I/O to @dev may be in flight. */
void dmio_dev_close(struct dmio_dev *dev);

const char *dmio_dev_name(const struct dmio_dev *dev);
int dmio_dev_fd(const struct dmio_dev *dev);                /* -1: remote */
uint64_t dmio_dev_size(const struct dmio_dev *dev);         /* bytes */
uint64_t dmio_dev_sectors(const struct dmio_dev *dev);      /* 512 B sectors */
unsigned dmio_dev_logical_block_size(const struct dmio_dev *dev);
bool dmio_dev_is_direct(const struct dmio_dev *dev);
bool dmio_dev_is_blockdev(const struct dmio_dev *dev);
/* A regular file on tmpfs or ramfs: its reads and writes are memory copies. */
bool dmio_dev_in_memory(const struct dmio_dev *dev);
/* Re-read the size (after the file or device was grown). */
int dmio_dev_refresh_size(struct dmio_dev *dev);

/*
 * Put bytes [@offset, + @len) of @dev into the pipe @pipe_fd (after what
 * it holds) with splice(2), around the engine: from the page cache the
 * pipe gets references to the pages, not a copy.  Only a local file or
 * block device opened without O_DIRECT, with no fault set (faults act on
 * the engine's I/O: a device with one must be read through dmio()).
 * Synchronous, on the calling thread; never waits for the pipe, may wait
 * as a buffered read does (page cache misses: use it on devices in memory
 * where nothing may wait).  Returns 0 when every byte is in the pipe;
 * -EOPNOTSUPP (remote, O_DIRECT, a fault set), -EINVAL (past the end) or
 * -EAGAIN (the pipe is full) with nothing put in the pipe; otherwise
 * -errno (-ENOBUFS: the pipe filled up midway; -ENODATA: the file ended
 * early) with part of the range maybe in the pipe.
 */
int dmio_dev_splice_read(struct dmio_dev *dev, uint64_t offset, size_t len, int pipe_fd);

/*
 * Where bytes [@offset, + @len) of @dev are in the engine's mapping of it
 * (a leg in memory, see dmio_dev_in_memory()): *@ret_ptr, for a caller
 * that has them read from there, around the engine (the kernel's copy of a
 * reply into /dev/fuse).  Only where every page of the range is known to
 * exist (a read through the mapping would allocate a page in a hole), on
 * a device with no fault set (faults act on the engine's I/O).  Nothing is
 * read or copied here and nothing waits.  The pointer stays valid until
 * the device is closed: the caller keeps it open (the mirror: a leg
 * reference) until the last read through it.  What is read there is what
 * the device holds at that time.  A read through it never raises SIGBUS in
 * a kernel copy: a page gone (the file truncated behind us) fails that
 * copy with EFAULT instead.  Returns 0; -EOPNOTSUPP (not mapped: remote,
 * not in memory, mmap refused; or a fault set), -EAGAIN (a page of the
 * range not known to exist, or past the mapping: a grown file) or -EINVAL
 * (an empty range or one past the end), *@ret_ptr untouched.
 */
int dmio_dev_map_read(struct dmio_dev *dev, uint64_t offset, size_t len, const void **ret_ptr);

/*
 * A copy from a dmio_dev_map_read() pointer of @dev failed with EFAULT: a
 * page of the mapping is gone (the file shrank behind us), and what else
 * went with it is unknown.  Every page of @dev becomes "not known to
 * exist": dmio_dev_map_read() refuses until a write there is issued
 * again, and the engine's reads of those pages use the system call, whose
 * short read past the end is a read error the caller can repair.  Never
 * waits; any thread.
 */
void dmio_dev_map_forget(struct dmio_dev *dev);

/*
 * A read of @dev at byte @offset comes soon: when dmio reads it from a
 * mapping (a leg in memory), the first line there is prefetched, so that
 * its TLB and cache misses start now, overlapped with whatever the caller
 * does until the read.  Nothing otherwise.  Never faults, never waits
 * (but for the page walk of a TLB miss), any thread.
 */
void dmio_dev_prefetch_read(const struct dmio_dev *dev, uint64_t offset);
/* The same for a write at @offset: the line prefetched for writing. */
void dmio_dev_prefetch_write(const struct dmio_dev *dev, uint64_t offset);

/*----------------------------------------------------------------*/
/* Remote devices (NBD) */

/*
 * A remote device is an NBD export named by a URI: nbd://host[:port]/export,
 * nbds://... (TLS), nbd+unix:///export?socket=PATH, nbds+unix://...,
 * nbd+vsock://... (libnbd's nbd_connect_uri(3) syntax, TLS parameters
 * included).  It behaves as a local device does, with the same error
 * bitsets, splitting, FUA, flush, discard and write-zeroes semantics: what
 * the server advertises is used, the rest emulated (FUA as write + flush,
 * write-zeroes as writes of zeroes).  Discard keeps its promise of zeroes:
 * it is NBD's write-zeroes allowed to unmap (NBD's trim promises nothing),
 * so a server without write-zeroes fails a discard's region with
 * -EOPNOTSUPP, as a file system without hole punching does.
 *
 * Threading: the device's one connection is driven by one engine reaper,
 * its owner: pieces submitted by other threads, loops included, are handed
 * to it without a lock, and a loop's request still completes on the loop.
 * The socket is polled on the owner's ring; nothing blocks it.
 *
 * A dropped connection fails every command in flight and every later one
 * (-ENOTCONN or libnbd's errno): the device never reconnects by itself;
 * its user opens it again.
 */

/* True when @path is an NBD URI (a remote device), by its scheme only. */
bool dmio_path_is_remote(const char *path);
bool dmio_dev_is_remote(const struct dmio_dev *dev);

/*
 * A server that does not answer for @timeout_ms while commands wait is
 * taken as hung: the connection is shut down, which fails them (and the
 * device, as a dropped connection does).  0: wait forever (the default).
 * Returns 0, or -ENOTSUP for a local device.  Any thread.
 */
int dmio_dev_set_remote_timeout(struct dmio_dev *dev, unsigned timeout_ms);

struct dmio_remote_stats {
	bool connected;         /* false once the connection dropped (or was
				   shut down as hung): already when the
				   first command it failed completes */
	bool can_fua, can_flush, can_trim, can_zero; /* what the server offers */
	uint64_t rtt_us;        /* moving average of a read/write's round trip */
	uint64_t commands;      /* pieces completed */
	uint64_t errors;        /* pieces failed */
	uint64_t hangs;         /* connections shut down by the timeout */
	unsigned sndbuf;        /* the socket's send buffer, bytes (as the
				   kernel reports it; 0 when disconnected) */
};
/* 0 and *ret, or -ENOTSUP for a local device.  Any thread. */
int dmio_dev_get_remote_stats(struct dmio_dev *dev, struct dmio_remote_stats *ret);

/* For g_autoptr(dmio_dev): glib's cleanup macros need a type name. */
typedef struct dmio_dev dmio_dev;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(dmio_dev, dmio_dev_close)

/*----------------------------------------------------------------*/
/* Fault injection (like dm-flakey and dm-dust; off by default) */

enum dmio_fault_flags {
	DMIO_FAULT_READS = 1u << 0,     /* fail reads in the range */
	DMIO_FAULT_WRITES = 1u << 1,    /* fail writes (and write-zeroes,
					   discards) in the range; nothing is
					   written */
	DMIO_FAULT_FLUSHES = 1u << 2,   /* fail flushes (any range) */
	DMIO_FAULT_DROP_WRITES = 1u << 3, /* writes in the range succeed but
					     are not written (a lying disk) */
	DMIO_FAULT_CORRUPT_READS = 1u << 4, /* reads in the range succeed,
					       with one byte of every 512
					       flipped */
	DMIO_FAULT_HEAL_ON_WRITE = 1u << 5, /* with READS: a 4 KiB block of the
					       range reads fine again once a
					       write covered it (a disk
					       remapping a bad sector when it is
					       rewritten; dm-dust forgets a bad
					       block once written).  The range
					       must be given, at most 2^24
					       sectors. */
	DMIO_FAULT_FLIP_WRITES = 1u << 6, /* silent corruption: a write in the
					     range is written, then one bit
					     of a 4 KiB block it wrote is
					     flipped on the device (bit rot) */
	DMIO_FAULT_MISDIRECT_WRITES = 1u << 7, /* a write in the range does
					     not reach its place (as
					     DROP_WRITES); its first 4 KiB land
					     half the range further on
					     (wrapping within the range) instead.
					     The range must be given. */
	DMIO_FAULT_DELAY_WRITES = 1u << 8, /* writes in the range succeed,
					      each piece after delay_ms (a slow
					      disk) */
	DMIO_FAULT_DELAY_READS = 1u << 9, /* reads in the range succeed, each
					     piece after delay_ms (also with
					     DELAY_WRITES: one delay for both) */
};

/*
 * What a device does wrong.  A piece of I/O is affected when it overlaps
 * [sector, sector + count) (count 0: the whole device), the device is
 * "down" (see below), and the rate draw hits.
 */
struct dmio_fault {
	unsigned flags;         /* enum dmio_fault_flags */
	int error;              /* errno for failed I/O; 0: EIO */
	uint64_t sector;        /* affected range, 512-byte sectors */
	uint64_t count;
	uint32_t rate_ppm;      /* chance per piece, parts per million;
				   0: every piece */
	uint32_t up_ms;         /* flakey cycle: behave for up_ms ... */
	uint32_t down_ms;       /* ... then misbehave for down_ms, repeating,
				   from the moment the fault is set;
				   down_ms 0: misbehave all the time */
	uint64_t seed;          /* for the rate draws */
	uint32_t delay_ms;      /* DELAY_WRITES/READS: 1 .. 60000 */
};

struct dmio_fault_stats {
	uint64_t failed;        /* pieces completed with the injected error */
	uint64_t dropped;       /* writes acknowledged but not written */
	uint64_t corrupted;     /* reads whose data was damaged */
	uint64_t flipped;       /* writes whose stored data got a bit flipped */
	uint64_t misdirected;   /* writes that landed elsewhere */
};

/*
 * Set (@fault not NULL) or clear (@fault NULL) the fault of @dev; applies to
 * pieces submitted from then on (a piece in flight keeps the decision made
 * when it was first submitted).  Returns 0, -EINVAL for unknown flags or an
 * error that is not a positive errno, or -ENOMEM.  Thread-safe.  When no fault is
 * set the I/O path costs one relaxed atomic load per piece.
 */
int dmio_dev_set_fault(struct dmio_dev *dev, const struct dmio_fault *fault);
/* The fault now set: 0 and *ret_fault, or -ENOENT when none. */
int dmio_dev_get_fault(struct dmio_dev *dev, struct dmio_fault *ret_fault);
/* Counters of injected faults since the device was opened. */
void dmio_dev_get_fault_stats(struct dmio_dev *dev, struct dmio_fault_stats *ret);

struct dmio_region {
	struct dmio_dev *dev;
	uint64_t sector;        /* first 512-byte sector */
	uint64_t count;         /* number of sectors */
};

/*----------------------------------------------------------------*/
/* Memory */

/* A list of 4 KiB pages (each 4096-byte aligned, FM_PAGE_SIZE long). */
struct dmio_page_list {
	struct dmio_page_list *next;
	void *page;
};

enum dmio_mem_type {
	DMIO_MEM_PAGE_LIST, /* ptr.pl: pages, starting at @offset in the first */
	DMIO_MEM_BVEC,      /* ptr.bvec: an iovec array */
	DMIO_MEM_VM,        /* ptr.vma: one contiguous buffer */
};

struct dmio_memory {
	enum dmio_mem_type type;
	unsigned offset;    /* DMIO_MEM_PAGE_LIST: byte offset into first page */
	union {
		struct dmio_page_list *pl;
		struct {
			const struct iovec *iov;
			unsigned iovcnt;
		} bvec;
		void *vma;
	} ptr;
};

/*----------------------------------------------------------------*/
/* Clients: reservations so that the hot path never waits for malloc */

struct dmio_client;

/*
 * Create a client holding a reserve of @min_ios request structures (and
 * what they need: piece descriptors, bounce pages for unaligned I/O).  A
 * request allocates from its client's free lists first, then from malloc,
 * and only when malloc fails does it wait for an in-flight request of the
 * same client to give its structures back: so I/O makes progress even when
 * memory is exhausted, as long as the reserve covers one request.
 * Returns NULL only if the reserve cannot be allocated.
 */
struct dmio_client *dmio_client_create(unsigned min_ios);
/* Destroy; accepts NULL.  The client must have no request in flight. */
void dmio_client_destroy(struct dmio_client *client);
/* Grow (pages > 0) or shrink (pages < 0) the client's bounce-page reserve. */
int dmio_client_resize(struct dmio_client *client, int pages);

typedef struct dmio_client dmio_client;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(dmio_client, dmio_client_destroy)

/*
 * The seed API: reserve (or return) @pages pages of the default client,
 * which serves requests that name no client and the dmio_sync/async calls.
 */
int dmio_get(unsigned pages);
void dmio_put(unsigned pages);

/*----------------------------------------------------------------*/
/* Requests */

/*
 * The async completion callback.  @error_bits has bit i set iff some part of
 * region i failed.  Called exactly once per request, after every piece of
 * every region has completed, on an engine thread, with no lock held.
 */
typedef void (*dmio_notify_fn)(unsigned long error_bits, void *context);

enum dmio_op {
	DMIO_OP_READ,         /* exactly one region */
	DMIO_OP_WRITE,        /* 1..DMIO_MAX_REGIONS regions, same data to each */
	DMIO_OP_FLUSH,        /* empty flush (fdatasync) of each region's device;
				 sector/count are ignored, memory is not used */
	DMIO_OP_DISCARD,      /* unmap; reads of the range then return zeroes */
	DMIO_OP_WRITE_ZEROES, /* make the range read back as zeroes */
};

enum dmio_req_flags {
	DMIO_REQ_FUA = 1u << 0,      /* write: durable when it completes */
	DMIO_REQ_PREFLUSH = 1u << 1, /* write: flush each device first */
};

struct dmio_request {
	enum dmio_op op;
	unsigned flags;                 /* enum dmio_req_flags */
	struct dmio_memory mem;         /* READ and WRITE only */
	dmio_notify_fn notify_fn;       /* NULL: the call is synchronous */
	void *notify_context;
	struct dmio_client *client;     /* NULL: the default client */
};

/*
 * Issue @req on @num_regions regions.
 *
 * Asynchronous (req->notify_fn set): returns 0 once the request is queued
 * and notify_fn will be called exactly once; or -errno for a request that is
 * malformed (read with more than one region, no region, more than
 * DMIO_MAX_REGIONS, unknown op or memory type), in which case notify_fn is
 * never called.  Does not block, except to wait for a client's reserve when
 * malloc fails.
 *
 * Synchronous (notify_fn NULL): blocks until the request completes; stores
 * the error bitset in *error_bits (if not NULL) and returns 0 when it is
 * zero, -EIO when some region failed, -errno for a malformed request, or
 * -EDEADLK when called from a completion callback.
 *
 * Per-region failures (never a crash, never silent): I/O beyond the device
 * end; an errno from the kernel; a short read at end of file; an operation
 * the device cannot do (e.g. discard on a device without support).
 * Large regions are split into pieces of at most dmio_max_io_bytes();
 * short transfers are resubmitted for the remainder; EAGAIN and EINTR are
 * retried.  On an O_DIRECT device, memory or sectors that break its
 * alignment go through bounce buffers (a sector that is not a whole logical
 * block is read-modify-written); aligned requests are never copied.
 */
int dmio(struct dmio_request *req, unsigned num_regions,
	 const struct dmio_region *where, unsigned long *error_bits);

/* The seed's six calls.  @rw is DMIO_OP_READ or DMIO_OP_WRITE. */
int dmio_sync(unsigned num_regions, const struct dmio_region *where, int rw,
	      struct dmio_page_list *pl, unsigned offset, unsigned long *error_bits);
int dmio_async(unsigned num_regions, const struct dmio_region *where, int rw,
	       struct dmio_page_list *pl, unsigned offset,
	       dmio_notify_fn fn, void *context);
int dmio_sync_bvec(unsigned num_regions, const struct dmio_region *where, int rw,
		   const struct iovec *iov, unsigned iovcnt, unsigned long *error_bits);
int dmio_async_bvec(unsigned num_regions, const struct dmio_region *where, int rw,
		    const struct iovec *iov, unsigned iovcnt,
		    dmio_notify_fn fn, void *context);
int dmio_sync_vm(unsigned num_regions, const struct dmio_region *where, int rw,
		 void *data, unsigned long *error_bits);
int dmio_async_vm(unsigned num_regions, const struct dmio_region *where, int rw,
		  void *data, dmio_notify_fn fn, void *context);

/*----------------------------------------------------------------*/
/* The engine */

struct dmio_engine_opts {
	unsigned rings;         /* io_uring instances (and reaper threads); 0: 1 */
	unsigned sq_entries;    /* per ring; 0: 256; at least 2 (a remote
				   device's poll and its linked timeout) */
	uint32_t max_io_bytes;  /* split larger pieces; 0: 1 MiB; >= 4096 */
};

/*
 * Start the engine with @opts (NULL: defaults).  Optional: the first request
 * starts it with defaults.  Returns -EBUSY if it is already running,
 * -EINVAL for bad options, -errno if io_uring cannot be set up.
 */
int dmio_engine_init(const struct dmio_engine_opts *opts);

/*
 * Wait for every in-flight request to complete (callbacks included), then
 * stop the reaper threads and free the rings and the default client.  The
 * engine may be started again afterwards.  Must not be called from a
 * completion callback.
 */
void dmio_engine_shutdown(void);

/* Largest piece the engine submits as one SQE. */
uint32_t dmio_max_io_bytes(void);

/* True on an engine (completion) thread. */
bool dmio_in_callback(void);

/*----------------------------------------------------------------*/
/* Loops: run to completion on a ring the caller's thread owns */

/*
 * A loop is an io_uring instance owned by one thread (an event loop: a FUSE
 * transport's thread).  While it exists, every piece of I/O that thread
 * submits through dmio() goes on the loop's ring instead of an engine
 * reaper's, whatever the device, and its completion (and so the request's
 * notify_fn) runs on that same thread, inside dmio_loop_run_once().  No
 * other thread touches the ring: there is no hand-off and no wake-up on the
 * I/O path.  I/O submitted by other threads keeps going to the reapers.
 *
 * The owner may also put SQEs of its own on the ring (reading its FUSE
 * device, FUSE-over-io_uring commands): their user_data must point to a
 * struct dmio_loop_op (at least 2-byte aligned), whose done() is called
 * from dmio_loop_run_once() with the CQE's res and flags.
 *
 * WARNING: the owner must never block while the loop has I/O in flight
 * (a synchronous dmio() call on it returns -EDEADLK, like one from a
 * callback): the completion it would wait for can only be reaped by the
 * owner itself.  Everything it calls must be non-blocking, or done on
 * another thread.
 *
 * Threading: dmio_loop_create() makes the calling thread the owner;
 * every other call but dmio_loop_wake() is for the owner only.  A loop
 * must be destroyed before dmio_engine_shutdown(), once idle.
 */
struct dmio_loop;
struct io_uring;
struct io_uring_params;
struct io_uring_sqe;

struct dmio_loop_op {
	void (*done)(struct dmio_loop_op *op, int res, unsigned cqe_flags);
	/* Handled before the completions ahead of it in the ring, on a loop
	 * set so (dmio_loop_set_first()). */
	bool first;
};

struct dmio_loop_opts {
	unsigned sq_entries;    /* 0: 256 */
	unsigned setup_flags;   /* more IORING_SETUP_* flags (e.g. SQE128) */
};

/*
 * io_uring_queue_init_params(@entries, @ring, @params) with the best
 * task-work flags this kernel takes for a ring one thread owns (a loop's,
 * a FUSE-over-io_uring queue's own ring): SINGLE_ISSUER | DEFER_TASKRUN
 * (the kernel's task work waits for the owner's next wait instead of
 * interrupting it request by request), else COOP_TASKRUN, else none (and
 * none under valgrind, which does not know their semantics).  They are
 * ORed into the caller's @params->flags (SQE128, CQSIZE, ...); a flag set
 * is tried again without them only when the kernel says -EINVAL.  Call it
 * on the thread that will be the ring's only submitter.  Returns 0 with
 * @params as the kernel filled it in (@params->flags: the flags in use),
 * or io_uring's -errno (@params untouched).
 */
int dmio_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *params);

/*
 * Create a loop owned by the calling thread (@opts may be NULL); starts
 * the engine with defaults if needed.  Returns 0, -EBUSY (the thread is a
 * reaper or owns a loop already), -EINVAL, or io_uring's -errno.
 */
int dmio_loop_create(const struct dmio_loop_opts *opts, struct dmio_loop **ret_loop);

/* An SQE for the owner's own use (submitted by the next
 * dmio_loop_run_once()), or NULL when the ring is full even after a submit. */
struct io_uring_sqe *dmio_loop_get_sqe(struct dmio_loop *l);
struct io_uring *dmio_loop_ring(struct dmio_loop *l);

/*
 * The owner's SQE just taken completes at submission, whatever else
 * happens (a write to an O_NONBLOCK /dev/fuse, which io_uring issues
 * inline): when a dmio_loop_run_once() submits it with its wait, the
 * wait asks for one more completion, so that this one does not end it
 * (the caller would come back only to wait again).  So that wait lasts
 * until another completion: the owner must know one will come (a poll
 * armed, a wake-up), or submit first with a call without @wait.  Counted
 * until the next submission.  (Under valgrind a wait polls the ring first, and the
 * first completion ends it.)
 */
void dmio_loop_sqe_prompt(struct dmio_loop *l);

/*
 * Submit the leg I/O queued on loop @l now (its owner), rather than with
 * the next dmio_loop_run_once(): one io_uring_enter, only when pieces
 * are waiting for it; the owner's own SQEs queued before go with them.
 * Does not block.
 */
void dmio_loop_submit(struct dmio_loop *l);

/*
 * Handle the completions that arrived (dmio's: callbacks; the owner's:
 * op->done()), submit what is queued, and, when there were none and @wait,
 * wait for at least one in the same system call.  With @wait, what the
 * completions handled queued is submitted by the next call, in the system
 * call that waits (one io_uring_enter per turn of a loop that calls this
 * with @wait only), except when leg I/O completed, prompt SQEs were queued
 * (dmio_loop_sqe_prompt()) and more completions are waiting already: then
 * at once (a burst's first replies do not wait for its last completion).
 * An owner that stops calling, or is about to block
 * elsewhere, calls it once without @wait (which submits at once);
 * dmio_loop_destroy() submits what is left.  Returns the number of
 * completions handled, 0 after a wait (call again), or -EINTR when a
 * signal interrupted the wait.
 */
int dmio_loop_run_once(struct dmio_loop *l, bool wait);

/*
 * A look at the owner's completions before any is handled: each time
 * dmio_loop_run_once() takes a batch of completions from the ring (up to
 * 8), @peek is called for each of the batch's owner completions, in
 * order, with its op and res, and only then are they handled (op->done()).
 * For work that is cheaper started for a whole batch at once than for
 * each request as it is handled (the io_uring front prefetches the leg
 * lines its reads will copy: their cache and TLB misses then overlap).
 * @peek must not change what op->done() will do, nor touch the ring.
 * NULL (the default): no look.  Owner only.
 */
void dmio_loop_set_peek(struct dmio_loop *l, void (*peek)(struct dmio_loop_op *op, int res));

/*
 * A burst of completions handled, on loop @l, so that new work reaches
 * the ring while the burst is: after each batch of the burst that queued
 * prompt SQEs (replies), their submission also posts what completed
 * meanwhile (the ring's deferred task work), the thread yields its CPU
 * once (to the client those replies woke, when it shares that CPU), and
 * the completions of ops marked `first` (requests read on the ring) are
 * then handled before the rest of the burst.  Owner only, once.
 */
void dmio_loop_set_first(struct dmio_loop *l);

/* Make a dmio_loop_run_once() that waits return (any thread;
 * async-signal-safe: one eventfd write). */
void dmio_loop_wake(struct dmio_loop *l);

/*
 * Register @n buffers with the loop's ring (io_uring_register_buffers: the
 * kernel pins their pages once, instead of at every I/O).  From then on a
 * read or write piece of the loop whose memory is one iovec inside one of
 * them is issued as READ_FIXED/WRITE_FIXED (dmio_stats.fixed_ios), and
 * the owner may use their indexes in SQEs of its own.  The buffers must
 * stay allocated until dmio_loop_destroy().  Once per loop; returns 0,
 * -EINVAL, -ENOMEM or io_uring's -errno (then nothing is registered).
 */
struct iovec;
int dmio_loop_register_buffers(struct dmio_loop *l, const struct iovec *iov, unsigned n);

/* True when no dmio I/O of the loop is in flight (its own SQEs aside). */
bool dmio_loop_idle(const struct dmio_loop *l);

/*
 * The CPUs the loop's io-wq workers may run on (io_uring's, for what it
 * cannot do without blocking: writes of more than 64 KiB to in-memory
 * legs that dmio could not map, or that grew past their mapping).  For an owner pinned to fewer CPUs, which its workers would
 * otherwise inherit: the loop applies @cpus to the workers it finds,
 * when it passes such a piece to io_uring, at most once a second
 * (a scan of /proc/self/task; counted in dmio_stats.iowq_widened).
 * Returns 0 or -EINVAL (no CPU), -ENOMEM.
 */
int dmio_loop_set_iowq_cpus(struct dmio_loop *l, const cpu_set_t *cpus);

/*
 * The calling thread's loop's object cache, for the free lists of the
 * layers above (and dmio's own), which take a lock every loop shares:
 * dmio_loop_cache_put() keeps a malloc()ed block of @size bytes (at least
 * a pointer's) that its caller would otherwise free or return to such a
 * list, and dmio_loop_cache_get() hands one of @size bytes back, its
 * contents undefined (as malloc()'s).  Blocks of the same size are
 * interchangeable: whoever frees one need not be whoever allocated it,
 * only both must treat it as a plain malloc() block.  Up to 256 blocks of
 * each of up to 8 sizes; dmio_loop_destroy() free()s them.  Off a loop's
 * owner thread, or when full, put returns false (the caller keeps the
 * block) and get NULL.  Never blocks, takes no lock.
 */
void *dmio_loop_cache_get(size_t size);
bool dmio_loop_cache_put(size_t size, void *p);

/* Free an idle loop (the owner's SQEs still in flight are cancelled with
 * the ring; their done() is not called).  Accepts NULL. */
void dmio_loop_destroy(struct dmio_loop *l);

/* Counters since the engine started (for benchmarks and status). */
struct dmio_stats {
	uint64_t requests;      /* dmio() calls accepted */
	uint64_t sqes;          /* SQEs submitted (pieces, retries, RMW steps) */
	uint64_t inline_ios;    /* small I/Os to in-memory legs, done by a reaper */
	uint64_t submits;       /* io_uring_enter calls that submitted */
	uint64_t bounced;       /* pieces that went through a bounce buffer */
	uint64_t resubmits;     /* short transfers and EAGAIN/EINTR retries */
	uint64_t region_errors; /* error bits set */
	uint64_t fixed_ios;     /* pieces issued READ/WRITE_FIXED (registered) */
	uint64_t iowq_widened;  /* io-wq workers given a loop's io-wq CPUs */
	uint64_t mapped_ios;    /* inline I/Os done by a copy through the leg's mapping */
	uint64_t map_faults;    /* ... whose copy faulted (SIGBUS): redone by a system call */
	uint64_t streamed_ios;  /* mapped writes copied with streaming stores (>= 4 KiB) */
	uint64_t fanned_ios;    /* mapped writes copied with other legs' in one pass */
	uint64_t first_ops;     /* loop ops handled ahead of earlier completions (dmio_loop_set_first()) */
};
void dmio_get_stats(struct dmio_stats *ret_stats);

#endif /* FUSEMIRROR_DMIO_H */
