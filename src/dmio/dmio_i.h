/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * dmio internals, shared by dev.c, client.c, engine.c and request.c.
 *
 * Objects and their lifetime:
 *   struct dmio_io     one per accepted dmio() call; holds the callback, the
 *                      error bitset and a count of outstanding pieces (set
 *                      before any piece is submitted).
 *   struct dmio_piece  one SQE's worth of work on one region: a range of a
 *                      device plus the iovecs that cover it.  A piece may go
 *                      through several stages (read-modify-write, fallocate
 *                      fallbacks) and resubmissions; it always belongs to
 *                      exactly one io and is freed when its last stage ends.
 * Both come from the request's client (free lists, then malloc, then wait).
 *   struct dmio_fault_state  one per dmio_dev_set_fault() call (see below).
 */
#ifndef DMIO_I_H
#define DMIO_I_H

#include <pthread.h>
#include <stdatomic.h>

#include <liburing.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

/*
 * ThreadSanitizer cannot see that the kernel orders an SQE's submission
 * before its CQE: tell it, or every piece handed to the reaper is a "race".
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define DMIO_TSAN_RELEASE(p) __tsan_release(p)
#define DMIO_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define DMIO_TSAN_RELEASE(p) ((void)(p))
#define DMIO_TSAN_ACQUIRE(p) ((void)(p))
#endif

/* Iovecs one piece carries at most; longer memory is split into pieces. */
#define DMIO_PIECE_IOVS 64
/*
 * A piece is allocated with room for DMIO_PIECE_SMALL_IOVS iovecs (and
 * bounce pages) when that is all it needs (a block or two, a contiguous
 * buffer: most pieces), else for DMIO_PIECE_IOVS: ~300 bytes instead of
 * ~1.7 KiB for a single-block write.
 */
#define DMIO_PIECE_SMALL_IOVS 4
/* A bounced piece covers at most this many bytes of aligned device range. */
#define DMIO_BOUNCE_MAX (DMIO_PIECE_IOVS * FM_PAGE_SIZE)

/*
 * Fault injection (fault.c).  A device's current fault is an immutable
 * struct dmio_fault_state behind dev->fault; NULL means off, and then a
 * piece costs one relaxed load of that pointer in prep_piece().
 *
 * Lifetime: the state is only dereferenced inside dmio_fault_decide(), on a
 * reaper, while the reaper holds dev->fault_readers (incremented BEFORE the
 * pointer is loaded again, sequentially consistent).  The decision is copied
 * into the piece (dmio_piece.fault, .fault_res), so nothing refers to a state
 * after that.  A setter swaps the pointer (seq_cst) and puts the old state
 * on dev->fault_retired; when it then sees fault_readers == 0, no reader can
 * hold any retired state (a reader that loaded one had incremented the count
 * before the swap that retired it) and the whole list is freed.  If the list
 * reaches DMIO_FAULT_RETIRED_MAX, the setter waits (yielding) for that
 * moment, so the memory a user can pin is bounded; dmio_dev_close() frees
 * what is left.  Setters (and getters) are serialised by dev->fault_lock,
 * which the I/O path never takes.
 *
 * Decision: once per piece, the first time prep_piece() prepares it with a
 * fault set (resubmissions and the write stage of a read-modify-write keep
 * it).  The piece's class is read (READ pieces), write (WRITE, FALLOC and
 * the RMW_READ stage of a bounced write) or flush (FSYNC).  It is affected
 * when the class matches the flags, its byte range (the user's range for a
 * bounced piece) overlaps the fault's, the flakey cycle is down and the rate
 * draw hits.  Draws are splitmix64(seed + n * golden) for n taken with an
 * atomic fetch-add on the state, so several reapers may draw at once.
 *   DMIO_PF_FAIL:    the SQE is a NOP; completion ends the piece with
 *                    fault_res through piece_end() (error bit, bounce pages,
 *                    RMW release), never falloc-fallen-back, and retried
 *                    only when fault_res is -ECANCELED on a read or write:
 *                    that is retried like a real one (DMIO_CANCEL_RETRIES)
 *                    and the retry is judged again (a fresh draw).
 *   DMIO_PF_DROP:    a direct write/fallocate becomes a NOP that succeeds;
 *                    a read-modify-write does its read, then ends with
 *                    success instead of its write stage.
 *   DMIO_PF_FLIP:    the write is real; when it completed, one bit of the
 *                    first 4 KiB block wholly inside it is flipped on the
 *                    device (a synchronous pread/pwrite on the reaper).
 *   DMIO_PF_MISDIRECT: a direct write is a NOP that succeeds (as DROP);
 *                    at completion its first 4 KiB are written
 *                    synchronously half the fault range further on.
 *   DMIO_PF_CORRUPT: the read is real; each completed chunk has the first
 *                    byte of every 512-byte device sector inverted (in the
 *                    caller's memory, or in the bounce pages before the
 *                    copy-out).
 * Counters (dev->fault_stats) count pieces.
 */
#define DMIO_FAULT_RETIRED_MAX 64
/*
 * A read or write that completes with -ECANCELED (io_uring cancelled it:
 * an io-wq worker exiting with its task, a ring being torn down, ...) did
 * nothing and is resubmitted, like a short I/O, at most this many times
 * per piece before the error stands.
 */
#define DMIO_CANCEL_RETRIES 4
#define DMIO_FAULT_ALL_FLAGS (DMIO_FAULT_READS | DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES | \
			      DMIO_FAULT_DROP_WRITES | DMIO_FAULT_CORRUPT_READS | \
			      DMIO_FAULT_HEAL_ON_WRITE | DMIO_FAULT_FLIP_WRITES | \
			      DMIO_FAULT_MISDIRECT_WRITES | DMIO_FAULT_DELAY_WRITES | \
			      DMIO_FAULT_DELAY_READS)
#define DMIO_FAULT_DELAY_MAX_MS 60000

struct dmio_fault_state {
	struct dmio_fault f;            /* as set (for dmio_dev_get_fault) */
	uint64_t begin, end;            /* affected device bytes [begin, end) */
	uint64_t t0_ns;                 /* when it was set: flakey cycle start */
	int res;                        /* -errno injected */
	atomic_ullong draws;            /* rate draws taken */
	/* HEAL_ON_WRITE: one bit per 4 KiB block of [begin, end) (begin
	 * rounded down), set once a write covered the block; a read fails
	 * while it touches a block not healed. */
	uint64_t heal_base, heal_blocks;
	_Atomic uint64_t *healed;
	struct dmio_fault_state *retired_next;
};

/* What fault injection decided for a piece. */
enum dmio_piece_fault {
	DMIO_PF_UNDECIDED,      /* no fault was set when it was prepared (yet) */
	DMIO_PF_NONE,           /* decided: unaffected */
	DMIO_PF_FAIL,           /* completes with fault_res, nothing done */
	DMIO_PF_DROP,           /* write: reports success, nothing written */
	DMIO_PF_CORRUPT,        /* read: real, then data damaged */
	DMIO_PF_FLIP,           /* write: real, then a bit of it flipped on the device */
	DMIO_PF_MISDIRECT,      /* write: a NOP that succeeds; its first 4 KiB are
				   written elsewhere in the range */
	DMIO_PF_DELAY,          /* write: real, after delay_ms */
};

struct dmio_nbd;
struct dmio_ring;

struct dmio_dev {
	int fd;                 /* -1 for a remote (NBD) device */
	struct dmio_nbd *nbd;   /* a remote device's connection (nbd.c); NULL: local */
	char *name;
	uint64_t size;          /* bytes; refreshed by dmio_dev_refresh_size */
	unsigned lbs;           /* logical block size */
	unsigned mem_align;     /* O_DIRECT: buffer address alignment */
	unsigned off_align;     /* O_DIRECT: offset and length alignment */
	unsigned seq;           /* picks the ring */
	bool direct;
	bool blockdev;
	bool rdonly;
	/* On tmpfs or ramfs: small reads and writes are memory copies, done
	 * by the reaper itself (see engine.c, "In-memory legs"). */
	bool in_memory;
	/* In-memory legs mapped (map.c): [0, map_len) at map, and a bit per
	 * 4 KiB page known to exist (NULL, 0, NULL: not mapped). */
	uint8_t *map;
	uint64_t map_len;
	_Atomic uint64_t *map_present;
	/* Learned from -EOPNOTSUPP, so the next request skips the attempt. */
	atomic_bool no_zero_range;
	atomic_bool no_punch_hole;
	/*
	 * Read-modify-write pieces in flight (rmw_active) and those waiting
	 * for an overlapping one to finish (rmw_wait_*, in arrival order).  A
	 * read-modify-write rewrites whole logical blocks, so two of them on
	 * neighbouring sectors of one block must not overlap in time.
	 */
	pthread_mutex_t rmw_lock;       /* guards the three lists */
	struct dmio_piece *rmw_active;
	struct dmio_piece *rmw_wait_head, *rmw_wait_tail;
	/* Fault injection (see above).  Locks: fault_lock only. */
	_Atomic(struct dmio_fault_state *) fault; /* NULL: off */
	atomic_uint fault_readers;      /* reapers inside dmio_fault_decide() */
	pthread_mutex_t fault_lock;     /* serialises set/get; guards below */
	struct dmio_fault_state *fault_retired;
	unsigned nr_fault_retired;
	atomic_ullong fault_failed, fault_dropped, fault_corrupted;
	atomic_ullong fault_flipped, fault_misdirected;
};

/* Internal memory type: an endless run of zeroes (write-zeroes fallback). */
#define DMIO_MEM_ZERO_ ((enum dmio_mem_type)100)

enum dmio_piece_kind {
	DMIO_PIECE_READ,        /* readv into iov */
	DMIO_PIECE_WRITE,       /* writev from iov */
	DMIO_PIECE_FSYNC,       /* fdatasync */
	DMIO_PIECE_FALLOC,      /* fallocate(mode) on [off, off + len) */
	DMIO_PIECE_NOP,         /* carries a request that has nothing to do */
};

enum dmio_piece_stage {
	DMIO_STAGE_DIRECT,      /* the request's own memory, no copy */
	DMIO_STAGE_BOUNCE_READ, /* read into bounce pages, then copy out */
	DMIO_STAGE_RMW_READ,    /* read the aligned range before a bounced write */
	DMIO_STAGE_BOUNCE_WRITE,/* write bounce pages (user data copied in) */
};

/* Iovecs a request copies inline; more are allocated. */
#define DMIO_IO_INLINE_IOVS 8
/* Regions (legs) a request keeps inline; more are allocated. */
#define DMIO_IO_INLINE_REGIONS 4

struct dmio_io {
	atomic_uint pending;            /* pieces outstanding */
	atomic_ulong error_bits;
	enum dmio_op op;
	unsigned flags;
	struct dmio_memory mem;
	dmio_notify_fn fn;
	void *context;
	struct dmio_client *client;
	/* Kept for the PREFLUSH phase, which builds the writes after it. */
	bool preflush_phase;
	unsigned num_regions;
	/* The caller's regions, copied (for the PREFLUSH phase): regions
	 * points to regions_inline or, above DMIO_IO_INLINE_REGIONS, to an
	 * allocated copy. */
	struct dmio_region *regions;
	struct dmio_region regions_inline[DMIO_IO_INLINE_REGIONS];
	/* The caller's iovec array, copied (mem.ptr.bvec.iov points here or
	 * to an allocated copy): it is walked again by bounce copies and the
	 * PREFLUSH phase, after dmio() has returned. */
	struct iovec *iov_alloc;
	struct iovec iov_inline[DMIO_IO_INLINE_IOVS];
	struct dmio_io *next_free;
};

struct dmio_piece {
	struct dmio_io *io;
	struct dmio_dev *dev;
	const struct dmio_memory *mem;  /* io->mem or the zero memory */
	uint8_t kind;                   /* enum dmio_piece_kind */
	uint8_t stage;                  /* enum dmio_piece_stage */
	uint8_t region;                 /* bit in io->error_bits */
	int falloc_mode;
	bool zeroes;                    /* FALLOC: for write-zeroes, not discard */
	bool rmw;                       /* holds a place on dev->rmw_active */
	uint8_t fault;                  /* enum dmio_piece_fault */
	uint8_t cancels;                /* -ECANCELED completions retried */
	int fault_res;                  /* DMIO_PF_FAIL: the injected -errno */
	uint64_t fault_target;          /* DMIO_PF_MISDIRECT: where it lands */
	int inline_res;                 /* done by the reaper: its result */
	uint32_t delay_ms;              /* DMIO_PF_DELAY: not yet waited */
	struct __kernel_timespec delay_ts; /* ... the timeout SQE's */
	struct dmio_piece *rmw_next;    /* rmw_active / rmw_wait list */
	/* Remote (NBD) pieces, see nbd.c.  home: the loop that submitted the
	 * piece and completes it (NULL: the owner ring completes it). */
	struct dmio_ring *home;
	unsigned nbd_pending;           /* libnbd commands not completed */
	unsigned nbd_calls;             /* completion callbacks run */
	int nbd_err;                    /* first error (positive errno) */
	bool nbd_fua_flush;             /* FUA emulated: flush after the write */
	bool fanned;                    /* copied by dmio_map_fan, to complete */
	uint64_t nbd_t0_ns;             /* when it was issued (latency) */
	int rw_flags;                   /* RWF_DSYNC for FUA */
	uint64_t off;                   /* device byte offset of what is left */
	uint64_t len;                   /* bytes left in this stage */
	/* Bounce bookkeeping: the user range inside the aligned range. */
	uint64_t user_off;              /* device offset of the user's bytes */
	uint64_t user_len;
	uint64_t mem_off;               /* offset of those bytes in *mem */
	uint64_t aligned_off;           /* start of the bounced device range */
	uint64_t aligned_len;
	unsigned nr_bounce;             /* pages in dmio_piece_bounce(p) */
	unsigned iov_first;             /* first iovec not yet transferred */
	unsigned iovcnt;                /* iovecs in use (from iov_first on) */
	unsigned cap;                   /* room in iov[] and the bounce array:
					 * DMIO_PIECE_SMALL_IOVS or _IOVS */
	struct dmio_piece *next;        /* submit batch / free list */
	/* cap iovecs, then cap bounce page pointers (dmio_piece_bounce). */
	struct iovec iov[];
};

static inline void **dmio_piece_bounce(struct dmio_piece *p)
{
	return (void **)(p->iov + p->cap);
}

/* client.c */
struct dmio_client *dmio_default_client(void);
void dmio_default_client_free(void);
struct dmio_io *dmio_io_alloc(struct dmio_client *c);
void dmio_io_free(struct dmio_client *c, struct dmio_io *io);
/* A piece with room for @iovs iovecs and bounce pages (<= DMIO_PIECE_IOVS). */
struct dmio_piece *dmio_piece_alloc(struct dmio_client *c, unsigned iovs);
void dmio_piece_free(struct dmio_client *c, struct dmio_piece *p);
/* Fill @pages with 4 KiB aligned pages; all or nothing (waits if needed). */
void dmio_pages_alloc(struct dmio_client *c, void **pages, unsigned n);
void dmio_pages_free(struct dmio_client *c, void **pages, unsigned n);

/* engine.c */
struct dmio_stats_atomic {
	atomic_ullong requests, sqes, inline_ios, iowq_widened, submits, bounced, resubmits, region_errors,
		      fixed_ios, mapped_ios, map_faults, streamed_ios, fanned_ios, first_ops;
};
extern struct dmio_stats_atomic dmio_stats_g;
#define DMIO_STAT_ADD(field, n) \
	atomic_fetch_add_explicit(&dmio_stats_g.field, (n), memory_order_relaxed)

int dmio_engine_ensure(void);
/* Queue the pieces of list @head (linked by ->next) and submit them. */
void dmio_submit_pieces(struct dmio_piece *head);
/* Account for requests accepted / finished (shutdown waits for zero). */
void dmio_request_begin(void);
void dmio_request_end(void);

/* engine.c, for nbd.c (owner thread of @r only). */
struct io_uring_sqe *dmio_ring_get_sqe(struct dmio_ring *r);
/* Room for @n SQEs to prepare together (a poll and its linked timeout:
 * dmio_ring_get_sqe() would submit the first alone when the queue is
 * full), submitting what is queued if need be.  False when the ring
 * cannot take them now (its submission was refused: EBUSY, EAGAIN). */
bool dmio_ring_reserve_sqes(struct dmio_ring *r, unsigned n);
/* @p (queued on @r) is done with @res: complete it on its home loop, or on
 * @r from its done list. */
void dmio_ring_piece_done(struct dmio_ring *r, struct dmio_piece *p, int res);
/* Fault injection decided that a NOP stands in for @p. */
bool dmio_piece_replaced_by_fault(struct dmio_piece *p);

/* nbd.c: remote devices.  dmio_nbd_queue runs on @r, the device's owner
 * ring (ring_of(dev), a reaper), for every piece of a remote device. */
int dmio_nbd_open(struct dmio_dev *dev, const char *uri, unsigned flags,
		  unsigned connect_timeout_ms);
void dmio_nbd_close(struct dmio_dev *dev);
void dmio_nbd_queue(struct dmio_ring *r, struct dmio_piece *p);
/* A reaper's turn: arm again the polls of its remote devices that found
 * no room on its ring (its submission refused).  True when some still
 * wait: the reaper must not sleep then. */
bool dmio_nbd_arm_deferred(void);

/* fault.c */
/* Decide @p's fault (dev->fault was seen set); true: prepare a NOP. */
bool dmio_fault_decide(struct dmio_piece *p);
void dmio_fault_states_free(struct dmio_dev *dev);
#define DMIO_FAULT_COUNT(dev, field) \
	atomic_fetch_add_explicit(&(dev)->fault_##field, 1, memory_order_relaxed)

/* map.c: in-memory legs mapped (see its header).  dmio_map_open and
 * dmio_map_close at the device's open and close; dmio_map_note when a
 * piece of [off, off + len) is issued: a write (@written: its pages exist
 * now) or a fallocate (not: they may be holes); dmio_map_rw does a READ or
 * WRITE piece by a guarded copy and returns true with its byte count, or
 * false: do it with the system call. */
void dmio_map_open(struct dmio_dev *dev);
void dmio_map_close(struct dmio_dev *dev);
void dmio_map_note(struct dmio_dev *dev, bool written, uint64_t off, uint64_t len);
bool dmio_map_rw(struct dmio_piece *p, ssize_t *ret_n);
/* The first line of a write at @off of @dev, prefetched if it is mapped. */
void dmio_map_prefetch(const struct dmio_dev *dev, uint64_t off);
/* @p, a piece a loop is about to queue, and the pieces after it of the
 * same request that write the same memory into other mapped legs, copied
 * in one pass over the source, when map.c's map_fan_ok() (the one place
 * that decides) lets them; each one copied is marked fanned (piece_inline
 * then only completes it).  Returns how many it copied (0: none, each is
 * copied alone). */
unsigned dmio_map_fan(struct dmio_piece *p);

/* request.c: called by the reaper for each CQE. */
void dmio_piece_complete(struct dmio_piece *p, int res);

#endif /* DMIO_I_H */
