/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * dmio internals, shared by dev.c, client.c, engine.c and request.c.
 *
 * Objects and their lifetime:
 *   struct dmio_io     one per accepted dmio() call; holds the callback, the
 *                      error bitset and a count of outstanding pieces (plus
 *                      one reference held by the submitter while it builds).
 *   struct dmio_piece  one SQE's worth of work on one region: a range of a
 *                      device plus the iovecs that cover it.  A piece may go
 *                      through several stages (read-modify-write, fallocate
 *                      fallbacks) and resubmissions; it always belongs to
 *                      exactly one io and is freed when its last stage ends.
 * Both come from the request's client (free lists, then malloc, then wait).
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

/* Iovecs one piece carries inline; longer memory is split into pieces. */
#define DMIO_PIECE_IOVS 64
/* A bounced piece covers at most this many bytes of aligned device range. */
#define DMIO_BOUNCE_MAX (DMIO_PIECE_IOVS * FM_PAGE_SIZE)

struct dmio_dev {
	int fd;
	char *name;
	uint64_t size;          /* bytes; refreshed by dmio_dev_refresh_size */
	unsigned lbs;           /* logical block size */
	unsigned mem_align;     /* O_DIRECT: buffer address alignment */
	unsigned off_align;     /* O_DIRECT: offset and length alignment */
	unsigned seq;           /* picks the ring */
	bool direct;
	bool blockdev;
	bool rdonly;
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
	struct dmio_region regions[DMIO_MAX_REGIONS];
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
	struct dmio_piece *rmw_next;    /* rmw_active / rmw_wait list */
	int rw_flags;                   /* RWF_DSYNC for FUA */
	uint64_t off;                   /* device byte offset of what is left */
	uint64_t len;                   /* bytes left in this stage */
	/* Bounce bookkeeping: the user range inside the aligned range. */
	uint64_t user_off;              /* device offset of the user's bytes */
	uint64_t user_len;
	uint64_t mem_off;               /* offset of those bytes in *mem */
	uint64_t aligned_off;           /* start of the bounced device range */
	uint64_t aligned_len;
	unsigned nr_bounce;             /* pages in bounce[] */
	unsigned iov_first;             /* first iovec not yet transferred */
	unsigned iovcnt;                /* iovecs in use (from iov_first on) */
	struct dmio_piece *next;        /* submit batch / free list */
	void *bounce[DMIO_PIECE_IOVS];
	struct iovec iov[DMIO_PIECE_IOVS];
};

/* client.c */
struct dmio_client *dmio_default_client(void);
void dmio_default_client_free(void);
struct dmio_io *dmio_io_alloc(struct dmio_client *c);
void dmio_io_free(struct dmio_client *c, struct dmio_io *io);
struct dmio_piece *dmio_piece_alloc(struct dmio_client *c);
void dmio_piece_free(struct dmio_client *c, struct dmio_piece *p);
/* Fill @pages with 4 KiB aligned pages; all or nothing (waits if needed). */
void dmio_pages_alloc(struct dmio_client *c, void **pages, unsigned n);
void dmio_pages_free(struct dmio_client *c, void **pages, unsigned n);

/* engine.c */
struct dmio_stats_atomic {
	atomic_ullong requests, sqes, submits, bounced, resubmits, region_errors;
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

/* request.c: called by the reaper for each CQE. */
void dmio_piece_complete(struct dmio_piece *p, int res);

#endif /* DMIO_I_H */
