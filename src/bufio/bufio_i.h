/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bufio internals, shared by the files of src/bufio/.
 *
 * Locks, in acquisition order:
 *   1. bufio_globals.lifecycle   create/destroy of clients, the cleaner thread
 *   2. bufio_globals.lock        the client list, cleaner wake-ups
 *   3. a shard's lock            (two shards only in release_move: lower
 *                                index first)
 *   4. bufio_client.lock         reserve list, free-buffer wake-ups
 *   5. bufio_client.slab_lock    block data slots (a leaf: may be taken
 *                                under a shard lock)
 *   5. bufio_client.around_lock  write-arounds in flight (a leaf: taken
 *                                under a shard lock by insertions)
 *   6. bufio_client.obj_lock     free small objects (a leaf under all)
 * A shard lock and a client lock are never held together; completions
 * (end_io) take shard locks one at a time, then the client lock.
 */
#ifndef FUSEMIRROR_BUFIO_I_H
#define FUSEMIRROR_BUFIO_I_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemirror/bufio.h"
#include "fusemirror/common.h"

#define BUFIO_CACHELINE 64
/* A shard index fits in a uint8_t (writeback groups buffers by shard). */
#define BUFIO_MAX_SHARDS 256u
#define BUFIO_HIT_SLOTS 16u
/* Blocks smaller than this come from slots of chunks this big (slab.c). */
#define BUFIO_SLAB_CHUNK (2u << 20)
/* Chunks the filler keeps prefaulted ahead of the allocations (slab.c). */
#define BUFIO_SLAB_READY 4u
/* Write-arounds in flight at once per client (around.c). */
#define BUFIO_AROUND_SLOTS 32u

/*----------------------------------------------------------------*/
/* Intrusive doubly linked list */

struct bufio_list {
	struct bufio_list *prev, *next;
};

static inline void bufio_list_init(struct bufio_list *h)
{
	h->prev = h->next = h;
}

static inline bool bufio_list_empty(const struct bufio_list *h)
{
	return h->next == h;
}

static inline void bufio_list_add_tail(struct bufio_list *n, struct bufio_list *h)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void bufio_list_del(struct bufio_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#define bufio_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*----------------------------------------------------------------*/
/* Buffers */

/* Bits of bufio_buffer.state (guarded by the shard lock). */
enum bufio_bstate {
	BUFIO_B_READING = 1u << 0,     /* a read is in flight: data not valid yet */
	BUFIO_B_DIRTY = 1u << 1,       /* [dirty_start, dirty_end) differs from the device */
	BUFIO_B_WRITING = 1u << 2,     /* a write of [write_start, write_end) of
					  write_data is in flight */
	BUFIO_B_WRITE_ERROR = 1u << 3, /* the last write failed; left dirty, and
					  only explicit writeback retries it */
	BUFIO_B_HASHED = 1u << 4,      /* in its shard's index (owns one ref) */
	BUFIO_B_FILLING = 1u << 5,     /* made by bufio_new, its creator has not
					  marked it dirty yet: data not valid */
};

/* Others wait (as for a read) while a buffer is in one of these states. */
#define BUFIO_B_NOT_VALID (BUFIO_B_READING | BUFIO_B_FILLING)

/* Which shard list a buffer is on (bufio_buffer.list). */
enum bufio_blist {
	BUFIO_LIST_NONE,    /* reading, being reclaimed, or out of the index */
	BUFIO_LIST_CLEAN,   /* valid, not dirty, not writing: the CLOCK ring */
	BUFIO_LIST_DIRTY,   /* dirty, not writing, last write did not fail:
			       what background writeback claims; in dirty_seq
			       order (oldest first) */
	BUFIO_LIST_WRITING, /* being written (maybe dirty again meanwhile) */
	BUFIO_LIST_FAILED,  /* dirty, not writing, its last write failed: only
			       explicit writeback retries it */
};

struct bufio_read_waiter {
	struct bufio_read_waiter *next;
	bufio_read_cb cb;
	void *ctx;
};

struct bufio_io_waiter;

/* bufio_buffer.ref: the count, plus this bit while a sole holder changes
 * the buffer's identity or memory (release_move, copy on write); lock-free
 * lookups do not take a reference while it is set. */
#define BUFIO_REF_FROZEN (1u << 31)

struct bufio_buffer {
	/*
	 * ref: one for being in the index (BUFIO_B_HASHED), one per holder,
	 * one per request in flight, one per internal pin.  Under the shard
	 * lock it is incremented freely; without it (lock-free hits) only
	 * from a value that is neither 0 nor frozen (bufio_try_get).  So a
	 * reclaimer holding the shard lock takes an idle buffer with a
	 * compare-and-swap 1 -> 0, and a sole holder freezes 2 (or 3) before
	 * it moves (or copies) the buffer.  The one who drops it to 0 frees.
	 */
	atomic_uint ref;
	/*
	 * Read by lock-free lookups, written under the shard lock (hence
	 * atomic): the buffer's identity and index chain.
	 */
	_Atomic unsigned state;         /* enum bufio_bstate */
	_Atomic uint64_t block;
	_Atomic(struct bufio_buffer *) hnext;   /* index chain */
	atomic_uchar accessed;          /* CLOCK reference bit (set by hits) */
	atomic_uchar touched;           /* hit since the cleaner last looked:
					   it then sets stamp (no clock read
					   on the hit path) */
	/* The fields below, down to lru, are guarded by the shard lock. */
	uint8_t list;                   /* enum bufio_blist */
	unsigned modifiers;             /* begin_modify calls not yet ended */
	unsigned dirty_start, dirty_end;
	unsigned write_start, write_end;
	int read_error;
	/* data: changed only under the shard lock, by the sole holder with
	 * ref frozen (copy on write); holders read it without the lock. */
	void *data;
	void *write_data;               /* memory being written (WRITING) */
	uint64_t stamp;                 /* ns: last access seen (clean; see
					   touched) or first dirtying (dirty) */
	uint64_t dirty_seq;             /* when it joined the DIRTY list, in
					   c->dirty_seq ticks */
	struct bufio_list lru;          /* on the list named by @list; in the
					   client's spare list once destroyed */
	struct bufio_read_waiter *read_waiters;  /* bufio_read_async while
						    READING or FILLING */
	struct bufio_client *c;
	/* One request (a run of buffers) in flight: set by the submitter,
	 * read by the completion; no lock (the request orders them). */
	struct bufio_buffer *io_next;
	struct bufio_io_waiter *io_waiter;      /* run head only */
	uint64_t io_block;              /* run head: block written if moved */
	unsigned io_flags;              /* run head: BUFIO_RUN_* */
	/* Caller's area (aux_size bytes). */
	unsigned char aux[] __attribute__((aligned(16)));
};

/*
 * The memory a buffer takes beside its data: its header as calloc()
 * allocates it (glibc: the size plus one size_t, in 16-byte steps), and
 * its share of the index, four slots at most (a shard's table doubles when
 * it holds as many buffers as buckets, and its older tables stay for
 * lock-free readers: they add up to the newest one's size).
 */
static inline unsigned bufio_header_cost(unsigned aux_size)
{
	size_t hdr = FM_ALIGN_UP(sizeof(struct bufio_buffer) + aux_size + sizeof(size_t), 16u);

	return (unsigned)(hdr + 4 * sizeof(struct bufio_buffer *));
}

/*----------------------------------------------------------------*/
/* Shards: one index + lists + counters each */

/* A shard's hash table.  Replaced (doubled) when it fills; the old one
 * stays allocated until the shard is freed, for lock-free readers. */
struct bufio_table {
	struct bufio_table *older;
	unsigned mask;
	_Atomic(struct bufio_buffer *) slot[];
};

struct bufio_shard {
	/* Read by every hit: apart from the lock's line, which only the
	 * slow paths write. */
	_Atomic(struct bufio_table *) table;    /* written under lock */
	pthread_mutex_t lock __attribute__((aligned(BUFIO_CACHELINE)));
					/* guards this shard and its buffers'
					   index/state fields */
	pthread_cond_t cond;            /* a READING/WRITING/modifiers change */
	unsigned nr_waiters;            /* threads waiting on cond */
	atomic_uint count;              /* buffers in the index (as n_clean) */
	struct bufio_list clean;        /* CLOCK ring, hand at the head */
	uint64_t clean_floor;           /* ns: no buffer on clean has a stamp
					   below it (bufio_evict_old skips the
					   shard while it is recent) */
	struct bufio_list dirty;        /* oldest first (dirty_seq increases) */
	struct bufio_list writing;
	struct bufio_list failed;
	/* Written under lock (plain load+store: no locked instruction); read
	 * without it as hints and summed by bufio_count() (hence atomic). */
	atomic_uint n_clean, n_dirty, n_writing, n_failed;
	/* Buffers on the DIRTY, WRITING or FAILED list: the one counter a
	 * buffer moving between those (a claim, a write ending dirty or
	 * failed) leaves alone, so a lock-free reader never sees such a
	 * buffer counted nowhere (n_dirty + n_writing read as two loads
	 * could, between a claim's two updates). */
	atomic_uint n_unclean;
	/* Statistics, under lock. */
	uint64_t hits, misses, reads, read_ios, writes, write_ios, evictions,
		 cow_copies, read_errors, write_errors;
} __attribute__((aligned(BUFIO_CACHELINE)));

/*----------------------------------------------------------------*/
/* Clients */

/* A bufio_read_async() waiting for a write-around to end (around.c). */
struct bufio_around_waiter {
	struct bufio_around_waiter *next;
	uint64_t block;
	bufio_read_cb cb;
	void *ctx;
	struct bufio_buffer *nb;        /* taken at the call, prepared for
					   @block: the restart allocates
					   nothing, so never waits */
};

/* One write-around in flight: blocks [block, end) may not enter the index. */
struct bufio_around {
	uint64_t block, end;
	bool active;
	struct bufio_around_waiter *waiters;
};

struct bufio_client {
	/* Immutable after create. */
	struct fm_bdev bdev;
	unsigned block_size;
	unsigned block_shift;           /* log2(block_size) */
	unsigned sector_shift;          /* log2(sectors per block) */
	unsigned data_align;
	unsigned write_align;           /* writeback granularity (bufio_set_write_align) */
	unsigned aux_size;
	unsigned buffer_cost;           /* what one buffer with data counts
					   against the limit: block_size +
					   bufio_header_cost(aux_size) */
	unsigned reserved_buffers;
	bufio_alloc_fn alloc_callback;
	bufio_write_fn write_callback;
	unsigned nshards;
	unsigned shard_mask;
	struct bufio_shard *shards;

	atomic_uint minimum_buffers;
	_Atomic uint64_t start;         /* sector offset */

	/* Accounting (atomics, no lock). */
	_Atomic uint64_t bytes;         /* block data allocated, reserve included */
	_Atomic uint64_t peak_bytes;
	atomic_uint n_writing;          /* buffers with a write in flight
					   (added per request, not per buffer) */
	_Atomic uint64_t dirty_seq;     /* ticks once per buffer put on a
					   DIRTY list (bufio_buffer.dirty_seq) */
	atomic_bool wb_claiming;        /* a pressure writeback is claiming */
	/* Claimed buffers waiting for room in flight (writeback.c, wb_pump):
	 * an "all" or age writeback claims every buffer it must write but
	 * submits only while n_writing < wb_inflight_max(); completions
	 * submit the rest.  Under wb_qlock; wb_queued mirrors "non-empty". */
	pthread_mutex_t wb_qlock;
	struct bufio_buffer **wb_q;
	size_t wb_qhead, wb_qn, wb_qcap;
	atomic_bool wb_queued;
	atomic_bool wb_pumping, wb_repump;
	atomic_uint nr_io;              /* requests in flight */
	atomic_int write_error;         /* first write error not yet reported */
	/* Writes of cache buffers that completed without FUA, counted
	 * before their buffers stop WRITING; and that count as it was when
	 * the last flush that succeeded began (bufio_issue_flush()).  While
	 * they differ, a block may be clean in the cache but not durable on
	 * a leg: a FUA range writeback then flushes (writeback_sync()). */
	atomic_ullong nonfua_writes, flushed_writes;
	atomic_uint clock_hand;         /* next shard for reclaim */
	/* Read by every release: on a line of its own. */
	atomic_uint nr_free_waiters __attribute__((aligned(BUFIO_CACHELINE)));
					/* threads waiting for a free buffer */

	pthread_mutex_t lock __attribute__((aligned(BUFIO_CACHELINE)));
					/* guards the fields below */
	pthread_cond_t free_cond;       /* free_gen changed, or nr_io hit 0 */
	uint64_t free_gen;              /* bumped when a buffer may have become
					   reclaimable (release, I/O done, free) */
	struct bufio_list reserve;      /* reserved buffers not in use (via lru) */
	unsigned n_reserve;
	/* Block data (slab.c). */
	bool use_slab;
	pthread_mutex_t slab_lock;      /* guards the fields below */
	GHashTable *slabs;              /* chunk address -> struct bufio_slab */
	struct bufio_list slab_partial; /* chunks with free and used slots */
	struct bufio_list slab_empty;   /* chunks with no slot in use */
	uint64_t slab_maps;             /* chunks mapped (stats.data_maps) */
	uint64_t slab_maps_inline;      /* ... by the allocating thread
					   (stats.data_maps_inline) */
	uint64_t slab_surplus;          /* chunks not needed after all
					   (chunk_surplus_locked,
					   stats.data_surplus) */
	/* The filler (slab.c, "Prefaulted ahead"): chunks mapped and
	 * prefaulted before an allocation needs them. */
	char *slab_ready[BUFIO_SLAB_READY];
	unsigned nr_slab_ready;
	unsigned slab_filling;          /* chunks the filler is mapping */
	unsigned slab_inline;           /* ... allocating threads are mapping */
	bool slab_grow;                 /* the cache grew: fill ahead */
	bool slab_filler_stop;
	bool slab_filler_on;            /* slab_filler was started */
	pthread_cond_t slab_filler_cond; /* the filler's wake-up */
	pthread_t slab_filler;

	struct bufio_list spare;        /* buffer headers without data: never
					   freed while the client lives, as a
					   lock-free lookup may still read them */

	/* Lock-free hits, counted per thread slot (no shared line written). */
	struct {
		_Atomic uint64_t hits;
	} __attribute__((aligned(BUFIO_CACHELINE))) hit_slots[BUFIO_HIT_SLOTS];

	struct bufio_list node;         /* bufio_globals.clients (globals lock) */

	/* Write-arounds (around.c).  nr_around is written under around_lock
	 * and read under a shard lock by every insertion into the index. */
	atomic_uint nr_around;
	_Atomic uint64_t around_reads, around_writes;   /* blocks */
	_Atomic uint64_t around_cached; /* blocks a read-around took from the cache */
	_Atomic uint64_t around_spliced; /* blocks a splice-around put in a pipe */
	_Atomic uint64_t around_mapped; /* blocks a map-around lent */
	pthread_mutex_t around_lock;    /* a leaf (taken under shard locks);
					   guards around[] */
	pthread_cond_t around_cond;     /* a write-around ended */
	struct bufio_around around[BUFIO_AROUND_SLOTS];

	/* Small objects of the asynchronous paths (read waiters, around I/O),
	 * kept for reuse: no allocation per request once warm (client.c). */
	pthread_mutex_t obj_lock;       /* a leaf; guards the two below */
	struct bufio_obj *free_objs;
	unsigned nr_free_objs;
};

/* Process-wide state: the kernel module's globals. */
struct bufio_globals {
	pthread_mutex_t lifecycle;      /* create/destroy; cleaner start/stop */
	pthread_mutex_t lock;           /* guards clients, nr_clients */
	pthread_mutex_t wake_lock;      /* a leaf: the cleaner's sleep */
	pthread_cond_t cond;            /* cleaner wake-up (with wake_lock) */
	bool kicked;                    /* under wake_lock: a pass now */
	atomic_bool stop;
	/* bufio_now_ns() at which the sleeping cleaner looks next; UINT64_MAX
	 * when nothing is due.  A buffer that becomes due before it lowers it
	 * and wakes the cleaner (bufio_cleaner_due). */
	_Atomic uint64_t wake_at;
	struct bufio_list clients;
	unsigned nr_clients_locked;
	bool running;                   /* under lifecycle */
	pthread_t cleaner;              /* under lifecycle */

	atomic_uint nr_clients;
	_Atomic uint64_t max_cache_size;  /* 0: default */
	_Atomic uint64_t retain_bytes;
	_Atomic uint64_t max_age_ms;
	_Atomic uint64_t writeback_age_ms;
	_Atomic uint64_t bytes;
	_Atomic uint64_t peak_bytes;
};

extern struct bufio_globals bufio_globals;

/* Run flags (bufio_buffer.io_flags on a run head). */
enum bufio_run_flags {
	BUFIO_RUN_MOVED = 1u << 0,      /* a write to io_block, not the buffer's
					   block (shared release_move) */
	BUFIO_RUN_FUA = 1u << 1,        /* written with FM_BDEV_FUA */
};

/* A synchronous caller waiting for its requests. */
struct bufio_io_waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending;               /* requests not completed */
	int error;                      /* first error */
};

/*----------------------------------------------------------------*/
/* client.c */

uint64_t bufio_client_limit(const struct bufio_client *c);
uint64_t bufio_now_ns(void);
void bufio_account_bytes(struct bufio_client *c, int64_t delta);

/* Whether anyone waits for a free buffer; if so wake them.  Cheap. */
void bufio_wake_free(struct bufio_client *c);
/*
 * A small object (at most BUFIO_OBJ_SIZE bytes, suitably aligned for any
 * structure) from the client's free list, or malloc()ed when it is empty;
 * NULL without memory.  bufio_obj_put() keeps up to BUFIO_OBJ_KEEP of
 * them.  Any thread; obj_lock is a leaf, so both may be called under any
 * other lock.
 */
#define BUFIO_OBJ_SIZE 192u
#define BUFIO_OBJ_KEEP 1024u
void *bufio_obj_get(struct bufio_client *c);
void bufio_obj_put(struct bufio_client *c, void *p);
void bufio_io_get(struct bufio_client *c);
void bufio_io_put(struct bufio_client *c);

/*----------------------------------------------------------------*/
/* index.c */

static inline uint64_t bufio_hash(uint64_t block)
{
	/* murmur3's finaliser: contiguous blocks spread over the shards */
	block ^= block >> 33;
	block *= 0xff51afd7ed558ccdull;
	block ^= block >> 33;
	block *= 0xc4ceb9fe1a85ec53ull;
	block ^= block >> 33;
	return block;
}

static inline struct bufio_shard *bufio_shard_of(const struct bufio_client *c, uint64_t block)
{
	return &c->shards[bufio_hash(block) & c->shard_mask];
}

int bufio_shard_init(struct bufio_shard *s);
void bufio_shard_fini(struct bufio_shard *s);
struct bufio_buffer *bufio_index_find_locked(struct bufio_shard *s, uint64_t block);
/* A held, valid buffer for @block found without the lock, or NULL (then
 * take the locked path: missing, reading, busy, or a race was lost). */
struct bufio_buffer *bufio_index_get_lockless(struct bufio_shard *s, uint64_t block);
/* The shard's current table (lock held).  Out of line: GCC 12 with ASan
 * warns (-Wstringop-overflow) about this atomic load once inlined. */
struct bufio_table *bufio_index_table_locked(struct bufio_shard *s);
/*
 * Visit the cached buffers of blocks [@block, @block + @n), in chunks of
 * BUFIO_WALK_CHUNK blocks with each shard's lock taken once per chunk:
 * @visit runs under the shard's lock, and after each shard's lock is
 * released @unlocked (if not NULL) runs.  The first non-zero return of
 * @visit ends the walk (after @unlocked) and is returned; otherwise 0.
 */
#define BUFIO_WALK_CHUNK 256u
int bufio_index_walk_range(struct bufio_client *c, uint64_t block, uint64_t n,
			   int (*visit)(struct bufio_shard *s, struct bufio_buffer *b, void *ctx),
			   void (*unlocked)(struct bufio_client *c, void *ctx), void *ctx);
/* Visit every buffer in the index (lock held; the body may remove @b). */
#define bufio_index_for_each_locked(s, b, next)                                         \
	for (struct bufio_table *t_ = bufio_index_table_locked(s); t_; t_ = NULL)           \
		for (unsigned j_ = 0; j_ <= t_->mask; j_++)                                 \
			for (b = atomic_load_explicit(&t_->slot[j_], memory_order_relaxed);  \
			     b && ((next = atomic_load_explicit(&b->hnext,                  \
								memory_order_relaxed)), 1); \
			     b = next)
void bufio_index_insert_locked(struct bufio_shard *s, struct bufio_buffer *b);
void bufio_index_remove_locked(struct bufio_shard *s, struct bufio_buffer *b);

/* Move @b to list @list of its shard, keeping counters right. */
void bufio_relink_locked(struct bufio_shard *s, struct bufio_buffer *b, enum bufio_blist list);
/* Wait on the shard's condition variable (drops and retakes the lock). */
void bufio_shard_wait_locked(struct bufio_shard *s);

/* Change a counter that is only written under its shard's lock. */
static inline void bufio_counter_add_locked(atomic_uint *v, int d)
{
	atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + (unsigned)d,
			      memory_order_relaxed);
}

/* Client-wide sums of the shards' counters (a racy but cheap snapshot). */
enum bufio_count_what {
	BUFIO_COUNT_BUFFERS,    /* in the index */
	BUFIO_COUNT_CLEAN,      /* on CLEAN lists */
	BUFIO_COUNT_DIRTY,      /* on DIRTY, WRITING and FAILED lists (one
				   load per shard: a buffer that stays on
				   them is counted, even while it moves) */
	BUFIO_COUNT_CLAIMABLE,  /* on DIRTY lists */
};
unsigned bufio_count(const struct bufio_client *c, enum bufio_count_what what);
void bufio_shard_wake_locked(struct bufio_shard *s);

/*----------------------------------------------------------------*/
/* buffer.c */

/*
 * Like bufio_get(), but a block whose read or fill is under way is waited
 * for (so may block) and then held: 0, or -ENOENT (not cached, or its
 * read failed).  Counts neither a hit nor a miss.
 */
int bufio_get_settled(struct bufio_client *c, uint64_t block, struct bufio_buffer **ret_b);
/*
 * Start again the bufio_read_async() @w that waited for a write-around
 * (its buffer w->nb is used or freed; @w itself stays the caller's): as
 * bufio_read_async(), with @w's callback, but never waits, so it may run
 * in the write's completion.  Returns 0 or -ENOMEM (the callback is then
 * not called).
 */
int bufio_read_async_restart(struct bufio_client *c, const struct bufio_around_waiter *w);

/*----------------------------------------------------------------*/
/* alloc.c */

enum bufio_alloc_mode {
	BUFIO_ALLOC_WAIT,   /* may write back and wait; never fails but -ENOMEM */
	BUFIO_ALLOC_NOWAIT, /* only what is free right now (prefetch) */
};

/* A buffer not in the index, ref 0, with data; NULL on failure. */
struct bufio_buffer *bufio_alloc_buffer(struct bufio_client *c, enum bufio_alloc_mode mode);
/* Give back a buffer that is out of the index with ref 0. */
void bufio_free_buffer(struct bufio_client *c, struct bufio_buffer *b);
/* bufio_free_buffer() every buffer on @list (linked by lru); empties it. */
void bufio_free_list(struct bufio_client *c, struct bufio_list *list);
/* Really free (memory goes back to the system). */
void bufio_destroy_buffer(struct bufio_client *c, struct bufio_buffer *b);
struct bufio_buffer *bufio_new_buffer_mem(struct bufio_client *c);
/* CLOCK: take one clean, idle buffer out of the index; NULL if none. */
struct bufio_buffer *bufio_reclaim_clean(struct bufio_client *c);
/* Evict clean idle buffers unused since @cutoff_ns while the client holds
 * more than @keep_bytes; returns how many. */
unsigned bufio_evict_old(struct bufio_client *c, uint64_t cutoff_ns, uint64_t keep_bytes);
/* Free clean idle buffers while the client is above its limit. */
void bufio_trim_to_limit(struct bufio_client *c);
/* Whether the dirty watermark says to write back in the background. */
bool bufio_dirty_dominates(const struct bufio_client *c);

/* Take a reference without the shard lock: fails on 0 or frozen. */
static inline bool bufio_try_get(struct bufio_buffer *b)
{
	unsigned r = atomic_load_explicit(&b->ref, memory_order_relaxed);

	do {
		if (r == 0 || (r & BUFIO_REF_FROZEN))
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&b->ref, &r, r + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return true;
}

/* Shard lock held: take idle @b (only the index refers to it) out of
 * reach of everyone: ref 1 -> 0.  False if someone got it first. */
static inline bool bufio_claim_idle_locked(struct bufio_buffer *b)
{
	unsigned one = 1;

	return atomic_compare_exchange_strong(&b->ref, &one, 0);
}

/* Shard lock held: freeze @b if its count is exactly @n. */
static inline bool bufio_freeze_locked(struct bufio_buffer *b, unsigned n)
{
	return atomic_compare_exchange_strong(&b->ref, &n, n | BUFIO_REF_FROZEN);
}

static inline void bufio_thaw(struct bufio_buffer *b)
{
	atomic_fetch_and_explicit(&b->ref, ~BUFIO_REF_FROZEN, memory_order_release);
}

/* Drop a reference; frees the buffer when it was the last. */
static inline void bufio_buffer_put(struct bufio_client *c, struct bufio_buffer *b)
{
	if (atomic_fetch_sub_explicit(&b->ref, 1, memory_order_acq_rel) == 1)
		bufio_free_buffer(c, b);
}

/*----------------------------------------------------------------*/
/* writeback.c */

enum bufio_wb_mode {
	BUFIO_WB_ALL,       /* every dirty buffer not busy (async user call) */
	BUFIO_WB_BACKGROUND,/* same, but not those whose last write failed */
	BUFIO_WB_PRESSURE,  /* background, the oldest first, in batches, with
			       the writeback in flight bounded (writeback.c) */
	BUFIO_WB_STARVED,   /* the same, but less than a batch will do: an
			       allocation found nothing to reclaim */
};

/* Start writing dirty buffers (background: dirtied before @cutoff_ns, 0 for
 * all; pressure: see writeback.c).  Returns the number of buffers whose
 * write was started. */
unsigned bufio_writeback_start(struct bufio_client *c, enum bufio_wb_mode mode,
			       uint64_t cutoff_ns);
/* Synchronously write the pinned buffers @pins (each holds one ref, which
 * is dropped).  Returns the first error of the writes made. */
int bufio_writeback_pinned(struct bufio_client *c, struct bufio_buffer **pins, size_t n,
			   unsigned flags);
/* Write held @b's full data to @block (not its own), synchronously. */
int bufio_write_moved(struct bufio_client *c, struct bufio_buffer *b, uint64_t block);

/* Submit reads of the run @head (linked by io_next, @n buffers). */
void bufio_submit_read_run(struct bufio_client *c, struct bufio_buffer *head, unsigned n);

/*----------------------------------------------------------------*/
/* around.c */

int bufio_around_init(struct bufio_client *c);
void bufio_around_fini(struct bufio_client *c);
bool bufio_around_covers(struct bufio_client *c, uint64_t block);
/*
 * Shard lock held, @block not in the index: whether a write-around covers
 * it, so that it must not be inserted now.  One relaxed load when no
 * write-around is in flight.
 */
static inline bool bufio_around_blocks_locked(struct bufio_client *c, uint64_t block)
{
	if (fm_likely(!atomic_load_explicit(&c->nr_around, memory_order_relaxed)))
		return false;
	return bufio_around_covers(c, block);
}
/* Wait until no write-around covers @block (no lock held). */
void bufio_around_wait(struct bufio_client *c, uint64_t block);
/* Shard lock held, bufio_around_blocks_locked() said yes: queue a
 * bufio_read_async() of @block for when the write-around ends.  Returns
 * false if it ended meanwhile (then insert: nothing blocks it any more). */
bool bufio_around_defer_locked(struct bufio_client *c, struct bufio_around_waiter *w);

/*----------------------------------------------------------------*/
/* slab.c */

int bufio_slab_init(struct bufio_client *c);
void bufio_slab_fini(struct bufio_client *c);
/* One block of data, aligned to min(block size, 4096); NULL if no memory. */
void *bufio_data_alloc(struct bufio_client *c);
void bufio_data_free(struct bufio_client *c, void *p);

/*----------------------------------------------------------------*/
/* cleaner.c */

int bufio_cleaner_register(struct bufio_client *c);
void bufio_cleaner_unregister(struct bufio_client *c);
void bufio_cleaner_kick(void);
void bufio_cleaner_advance(uint64_t at_ns);

/*
 * Buffer @b (shard lock held) just joined the dirty or the clean list: if
 * its age deadline comes before the cleaner's next look, bring that look
 * forward (a wake-up, at most one per cleaner pass).  Otherwise two loads.
 */
static inline void bufio_cleaner_due(const struct bufio_buffer *b, bool dirty)
{
	uint64_t age = dirty ? atomic_load_explicit(&bufio_globals.writeback_age_ms,
						    memory_order_relaxed)
			     : atomic_load_explicit(&bufio_globals.max_age_ms,
						    memory_order_relaxed);
	uint64_t at;

	if (!age)
		return;
	at = b->stamp + age * 1000000ull;
	if (at < atomic_load_explicit(&bufio_globals.wake_at, memory_order_relaxed))
		bufio_cleaner_advance(at);
}

#endif /* FUSEMIRROR_BUFIO_I_H */
