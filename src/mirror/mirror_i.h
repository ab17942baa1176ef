/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Mirror internals shared by mirror.c (I/O), assemble.c and format.c. */
#ifndef MIRROR_I_H
#define MIRROR_I_H

#include <pthread.h>
#include <stdatomic.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"
#include "fusemirror/mirror.h"

/* Iovecs a request carries inline; more are allocated. */
#define MIRROR_INLINE_IOVS 8

struct mirror_leg {
	char *path;
	struct dmio_dev *dev;
	struct fm_sb sb;                /* this leg's superblock, as on disk */
	enum fm_leg_state state;
	atomic_uint pending;            /* reads in flight */
	atomic_ullong next_sector;      /* where its last read ended */
	atomic_ullong reads, writes, read_bytes, write_bytes;
	atomic_ullong read_errors, write_errors;
};

enum mreq_op {
	MREQ_READ = MIRROR_OP_READ,
	MREQ_WRITE = MIRROR_OP_WRITE,
	MREQ_DISCARD,
	MREQ_ZEROES,
};

/*
 * The ordering index: every active write/discard is on the active list; a
 * "narrow" one (covering at most MIRROR_ORDER_SPAN chunks of
 * 2^MIRROR_CHUNK_SHIFT sectors) is also on the bucket of each chunk it
 * covers, a "wide" one on the wide list.  Two requests that overlap share a
 * chunk, so a narrow request finds every request it overlaps in its own
 * buckets plus the wide list.
 */
#define MIRROR_CHUNK_SHIFT 11           /* 1 MiB chunks */
#define MIRROR_ORDER_SPAN 4
#define MIRROR_ORDER_BUCKETS 1024

struct order_node {
	struct mreq *r;
	struct order_node *prev, *next;
};

/* One mirror request.  Writes (and discards) are kept on the active list,
 * in submission order, from submission to completion. */
struct mreq {
	struct mirror *m;
	enum mreq_op op;
	unsigned flags;
	uint64_t sector, count;         /* image sectors */
	mirror_end_io_fn end_io;
	void *ctx;
	/* reads */
	unsigned leg;                   /* leg being read */
	uint64_t tried;                 /* legs already tried (bit mask) */
	/* ordering (guarded by m->order_lock) */
	struct mreq *prev, *next;       /* active list */
	uint64_t seq;                   /* submission order */
	unsigned nr_nodes;              /* bucket entries; 0: on the wide list */
	struct order_node node[MIRROR_ORDER_SPAN];
	bool issued;
	struct mreq *next_issue;        /* local list of requests to issue */
	/* writes: the leg of each dmio region, fixed when issued */
	unsigned nr_regions;
	uint8_t region_leg[FM_SB_MAX_LEGS];
	/* memory */
	unsigned iovcnt;
	struct iovec *iov;              /* iov_inline or allocated */
	struct iovec iov_inline[MIRROR_INLINE_IOVS];
	struct mreq *next_free;
};

struct mirror {
	unsigned nr_legs;
	struct mirror_leg *legs;
	uint64_t image_size;            /* bytes */
	uint64_t data_sector;           /* data offset in sectors */
	bool readonly;
	atomic_bool in_use;             /* superblocks marked dirty: writes allowed */
	atomic_bool write_error_seen;   /* keeps the superblock dirty at stop */
	enum mirror_read_policy read_policy;
	atomic_uint rr;                 /* round-robin cursor */
	struct dmio_client *client;

	pthread_mutex_t order_lock;     /* guards the active list, the index */
	struct mreq *active_head, *active_tail;
	unsigned nr_waiting;            /* active but not issued */
	uint64_t order_seq;
	struct order_node *buckets[MIRROR_ORDER_BUCKETS];
	struct order_node wide;         /* sentinel of the wide list (circular) */

	pthread_mutex_t free_lock;      /* guards the free list */
	struct mreq *free_reqs;
	unsigned nr_free;

	atomic_ullong reads, writes, flushes, discards, read_bytes, write_bytes;
	atomic_ullong read_retries, overlap_waits, errors;
};

#define MIRROR_STAT_ADD(var, n) atomic_fetch_add_explicit(&(var), (n), memory_order_relaxed)

/* mirror.c */
struct mirror *mirror_alloc(unsigned nr_legs);
void mirror_free(struct mirror *m);

/* assemble.c: superblock update on every in-sync leg. */
int mirror_write_superblocks(struct mirror *m, bool clean);

#endif /* MIRROR_I_H */
