/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Mirror internals shared by mirror.c (I/O), assemble.c and format.c. */
#ifndef MIRROR_I_H
#define MIRROR_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"
#include "fusemirror/mirror.h"
#include "bitmap.h"

/* Iovecs a request carries inline; more are allocated. */
#define MIRROR_INLINE_IOVS 8

struct mirror_leg {
	char *path;                     /* NULL: empty slot */
	struct dmio_dev *dev;           /* NULL: empty slot, or removed */
	struct fm_sb sb;                /* this leg's superblock, as read at assembly */
	uint8_t uuid[16];
	/* enum fm_leg_state; written under m->state_lock, read anywhere.  Data
	 * I/O goes to IN_SYNC legs (reads and writes) and REBUILDING legs
	 * (writes only). */
	atomic_int state;
	bool full_rebuild;              /* REBUILDING: every region, else bitmap regions */
	/* REBUILDING: why, in words, for status ("" otherwise); state_lock. */
	char note[320];
	/* FM_SB_LEG_WRITE_MOSTLY of its slot (the table, under state_lock, is
	 * the truth; this copy is what the read path looks at). */
	atomic_bool write_mostly;
	/* REBUILDING: bytes recovered and flushed (for the superblock), from
	 * the start of the image; a recovery resumes there.  Written under
	 * state_lock; atomic because the sync pass reads it without
	 * (region_targets()) while an add may reset the slot's. */
	_Atomic uint64_t recovery_offset;
	/* Which add put this leg in its slot (m->joins at that add; 0: the
	 * assembly): a recovery pass finishes only the legs it began with,
	 * not a leg added to the slot of one that failed meanwhile.  Written
	 * under state_lock. */
	atomic_ullong joined;
	/* I/O using dev: incremented BEFORE the state is checked, so that once
	 * the state is FAULTY and inflight drops to 0, no I/O uses dev. */
	atomic_uint inflight;
	atomic_uint pending;            /* reads in flight */
	atomic_ullong next_sector;      /* where its last read ended */
	atomic_ullong reads, writes, read_bytes, write_bytes;
	atomic_ullong read_errors, write_errors, corrected;
	/* Read-error accounting (read_error(), read_error_corrected()):
	 * decayed counts, halved every read_error_decay_ms. */
	pthread_mutex_t err_lock;       /* guards the fields below */
	uint32_t err_unverified;        /* read errors not (yet) followed by a verified rewrite */
	uint64_t err_corrected;         /* read errors whose rewrite verified */
	uint64_t err_reads_hist;        /* reads before err_reads_base, decayed */
	uint64_t err_reads_base;        /* leg->reads at the last decay */
	uint64_t err_decay_ns;          /* time of the last decay */
	atomic_ullong csum_errors;      /* blocks whose copy failed verification */
};

enum mreq_op {
	MREQ_READ = MIRROR_OP_READ,
	MREQ_WRITE = MIRROR_OP_WRITE,
	MREQ_DISCARD,
	MREQ_ZEROES,
	MREQ_COPY,              /* resync/recovery/repair: src leg -> target legs */
	MREQ_SCRUB,             /* compare the in-sync legs (and repair) */
};

enum mreq_copy_flags {
	COPY_VERIFY = 1u << 0,  /* re-read the targets and compare */
	COPY_REPAIR = 1u << 1,  /* scrub: rewrite mismatching legs */
	COPY_READ_ERROR = 1u << 2, /* the targets failed a read of it: a verified
				      rewrite is a corrected read error */
	COPY_RESYNC = 1u << 3,  /* checksums: a block no copy verifies takes the
				   source's data and its checksum is recomputed,
				   if its region is still unsynced (dirty at a
				   crash) */
	COPY_SYNC = 1u << 4,    /* from the sync thread: count bytes read/written */
	COPY_ZERO = 1u << 7,    /* the region is unwritten: zero the targets instead
				   of copying (a copy after all if, when issued,
				   a write has made it written) */
};

/* Completion of a copy or scrub: err 0 or -errno; @mismatch sectors that
 * differed (scrub). */
typedef void (*mreq_copy_fn)(void *ctx, int err, uint64_t mismatch);

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
	uint64_t bad;                   /* reads: legs that failed it */
	bool bm_started;                /* mbitmap_start_write() done */
	int bm_err;
	struct mbitmap_waiter bmw;
	uint64_t held_gen;              /* write_done: superblock generation awaited */
	int held_err;
	struct mreq *next_held;
	/* copies and scrubs */
	unsigned copy_flags, stage;
	uint64_t targets;               /* legs written (mask) */
	uint64_t done_mask;             /* scrub: legs read fine */
	uint64_t mismatch;
	void *buf;                      /* count sectors per leg read (scrub: scrub_legs) */
	unsigned scrub_legs;            /* scrub: the legs buf has room for, m->nr_legs
					   when it was allocated (a leg added since is
					   not read) */
	void *data;                     /* what is written: a segment of buf */
	unsigned vleg;                  /* leg being verified */
	mreq_copy_fn copy_fn;
	atomic_uint subs;               /* scrub: reads in flight */
	struct mreq *client;            /* a read whose copy failed verification: the
					   scrub delivers the verified data to it */
	uint64_t unverified;            /* blocks no copy verifies */
	/* The write and verify stages go run by run: a run is the longest
	 * stretch of 4 KiB blocks that go to the same legs.  blk_mask (a
	 * checksummed scrub: per block, the legs to write it to; else NULL:
	 * one run, the whole request to r->targets). */
	uint64_t *blk_mask;
	uint64_t run_sector, run_count, run_mask;
	uint64_t fill;                  /* legs that get every block (a rebuild's
					   copy that fell back to a compare) */
	/* A write that failed on some leg, retried there block by block:
	 * the range and error bits of the dmio write (nbits: what is left
	 * once the bad blocks are recorded), the legs forgiven that way. */
	bool narrowed, narrow_held;
	unsigned long nbits;
	uint64_t nsector, ncount, nforgiven;
	struct mreq *next_narrow;
	/* memory */
	unsigned iovcnt;
	struct iovec *iov;              /* iov_inline or allocated */
	struct iovec iov_inline[MIRROR_INLINE_IOVS];
	struct mreq *next_free;
};

struct mirror_sync;

struct mirror {
	/* Slots in use (the table's nr_legs).  It grows under state_lock (an
	 * add) and is read without a lock, as an atomic: a reader sees it
	 * before or after.  What sizes memory or spans a job by it reads it
	 * once: a scrub's buffer (mreq.scrub_legs), a sync pass. */
	_Atomic unsigned nr_legs;
	struct mirror_leg legs[FM_SB_MAX_LEGS];
	uint64_t image_size;            /* bytes */
	uint64_t data_sector;           /* data offset in sectors */
	unsigned region_shift;          /* log2 sectors per region */
	uint64_t nr_regions;
	bool readonly;
	atomic_bool in_use;             /* superblocks marked dirty: writes allowed */
	enum mirror_read_policy read_policy;
	atomic_uint rr;                 /* round-robin cursor */
	/* bdev_read_soon()'s guess: rr when it was told of the batch's
	 * first read, and the batch's reads told of so far */
	atomic_uint soon_rr, soon;
	struct dmio_client *client;
	unsigned max_read_errors;
	uint32_t max_read_error_ppm;    /* corrected errors per million reads */
	uint64_t read_error_decay_ns;   /* the error counts halve this often */
	uint64_t sync_speed_min, sync_speed_max;
	unsigned bitmap_delay_ms;
	unsigned remote_timeout_ms;     /* remote legs' hung-server timeout; 0: none */
	unsigned remote_connect_timeout_ms; /* their handshake deadline; 0: dmio's */
	unsigned remote_retry_max_ms;   /* longest wait between reconnection attempts */
	struct mbitmap *bitmap;
	struct mcsum *csum;             /* per-block checksums (csum.c), or NULL */
	/* A read-only assembly of an array with a written-region map (no
	 * bitmap to keep it): the map as loaded, so that reads of
	 * never-written regions (whatever the legs hold there, with
	 * FM_SB_FEAT_ZERO_ON_WRITE) are zeroes, and status shows it; NULL
	 * otherwise.  ro_written_regions: its bits set.  Never change. */
	uint8_t *ro_written;
	uint64_t ro_written_regions;
	atomic_ullong sync_read_bytes, sync_write_bytes; /* of the current/last sync pass */
	atomic_ullong sync_zero_bytes;  /* of it: unwritten regions zeroed on targets */
	atomic_ullong unwritten_reads;  /* reads answered with zeroes, no leg read */
	/* sb.nr_bad, for the I/O paths' quick "no bad block" test (written
	 * under state_lock after the list changed). */
	atomic_uint nr_bad;
	/* Writes and copy writes that failed on some leg, waiting for the
	 * worker to retry them there block by block (narrow_write()); under
	 * state_lock. */
	struct mreq *narrow_head;

	/* Array state.  state_lock guards sb (the newest superblock: array
	 * fields and leg table), the legs' state transitions, and the
	 * superblock generations; the worker thread writes superblocks. */
	pthread_mutex_t state_lock;
	pthread_cond_t state_cond;
	struct fm_sb sb;
	uint64_t sb_gen_wanted;         /* bumped by every state change */
	uint64_t sb_gen_done;           /* written durably (or given up) */
	int sb_last_err;                /* of that pass: -EIO when no in-sync leg took it */
	struct mreq *held;              /* writes waiting for sb_gen_done */
	pthread_t worker;
	bool worker_running, worker_stop;
	pthread_mutex_t admin_lock;     /* one administration call at a time */
	/* State-change events (event.c): reported under state_lock, which
	 * serialises them and orders them like the changes. */
	fm_event_fn event_fn;
	void *event_ctx;
	bool ev_degraded;               /* last DegradedArray/ArrayOptimal reported */

	/* Out-of-sync regions after an unclean stop (reads there go to
	 * sync_src only); NULL when there are none. */
	_Atomic(uint64_t *) unsynced;
	uint64_t nr_unsynced;           /* regions set in it at assembly */
	uint64_t sync_bitmap_legs;      /* legs recovered from the bitmap (sync thread) */
	uint64_t joins;                 /* adds so far (mirror_leg.joined), state_lock */
	/* The leg resyncs and reads of unsynced regions copy from: the
	 * first in-sync leg, chosen again when it leaves the array (by
	 * issue_read(), and by a pass as it starts). */
	atomic_int sync_src;
	struct mirror_sync *sync;       /* resync/recovery/scrub driver */
	uint64_t *unsynced_retired;     /* freed with the mirror (readers may hold it) */

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

	/* Reconnection of remote legs (reconnect.c).  rc_lock is innermost:
	 * it may be taken under state_lock or admin_lock, and nothing else is
	 * taken while it is held. */
	pthread_mutex_t rc_lock;        /* guards below */
	pthread_cond_t rc_cond;
	pthread_t rc_thread;
	bool rc_running, rc_stop;
	struct mirror_reconnect {
		char *uri;              /* NULL: nothing to reconnect in this slot */
		uint64_t gen;           /* bumped by every schedule and cancel: an
					   attempt acts on the slot only if it
					   is still the one it started from */
		uint64_t due_ns;        /* next attempt (CLOCK_MONOTONIC) */
		unsigned delay_ms;      /* the wait before it (after the failure
					   or the last failed attempt) */
		unsigned attempts;      /* failed attempts since the failure */
		uint64_t tried_ns;      /* when the last attempt started; 0: none
					   since the administrator's last say */
		uint64_t count;         /* successful reconnections */
	} rc[FM_SB_MAX_LEGS];
};

#define MIRROR_STAT_ADD(var, n) atomic_fetch_add_explicit(&(var), (n), memory_order_relaxed)

static inline enum fm_leg_state leg_state(const struct mirror_leg *leg)
{
	return (enum fm_leg_state)atomic_load_explicit(&leg->state, memory_order_acquire);
}

/* mirror.c */
struct mirror *mirror_alloc(void);
void mirror_free(struct mirror *m);
/* Start an ordered copy of [sector, sector + count) from leg @src to the
 * legs of @targets (or, MREQ_SCRUB, a compare of the in-sync legs); @fn is
 * called once, on a reaper or worker thread.  0 or -errno (fn not called). */
int mirror_start_copy(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count,
		      unsigned src, uint64_t targets, unsigned flags, mreq_copy_fn fn,
		      void *ctx);
/* Synchronous @req (its op, flags, memory) on [sector, sector + count) of
 * every writable leg (device sectors); a leg that fails it is failed
 * (*ret_failed set).  0 when an in-sync leg did it, else -EIO. */
int mirror_legs_sync_io(struct mirror *m, struct dmio_request *req, uint64_t sector,
			uint64_t count, const char *what, bool *ret_failed);
/* Start a leg's read-error accounting afresh (assembly, add). */
void mirror_leg_errors_reset(struct mirror_leg *leg);
/* Complete a held write (state.c, once its superblock generation is on disk). */
void mirror_complete_held(struct mreq *r);
/* Get a reference on leg @i for I/O when its state is in @states (a mask of
 * 1 << state); false otherwise.  Put it back with leg_put(). */
bool leg_get(struct mirror_leg *leg, unsigned states);
void leg_put(struct mirror_leg *leg);
#define LEG_READABLE (1u << FM_LEG_IN_SYNC)
#define LEG_WRITABLE ((1u << FM_LEG_IN_SYNC) | (1u << FM_LEG_REBUILDING))
bool mirror_region_unsynced(struct mirror *m, uint64_t sector, uint64_t count);
/* The written-region map (FM_SB_FEAT_WRITTEN_MAP, kept by the bitmap):
 * is there one; is region @region written (always true without a map, or
 * without a bitmap: a read-only array reads the legs, which hold zeroes in
 * unwritten regions)? */
bool mirror_has_written_map(const struct mirror *m);
bool mirror_region_written(const struct mirror *m, uint64_t region);
/* The regions of 2^@region_shift sectors lying wholly inside [@sector,
 * @sector + @count) of an image of @image_sectors (whose last region may
 * be short): [*ret_first, *ret_end).  false (untouched) when there is none.
 * Pure: a discard of them may mark them unwritten; of a region it covers
 * only partly, never. */
bool mirror_whole_regions(uint64_t sector, uint64_t count, unsigned region_shift,
			  uint64_t image_sectors, uint64_t *ret_first, uint64_t *ret_end);
/* The leg a resync reads from: the first in-sync leg that is not
 * write-mostly, else the first in-sync one; -1 when none is in sync. */
int mirror_pick_source(struct mirror *m);

/* reconnect.c: remote legs failed by I/O come back by themselves. */
/* Leg @i (remote, failed by an I/O error) is to be reconnected: starts
 * the reconnection thread if needed.  Any thread; takes rc_lock only. */
void mirror_reconnect_schedule(struct mirror *m, unsigned i, const char *uri);
/* Forget slot @i's pending reconnection (an administrator's fail, remove,
 * add).  Any thread. */
void mirror_reconnect_cancel(struct mirror *m, unsigned i);
/* Stop the thread (mirror_stop, before anything else). */
void mirror_reconnect_stop(struct mirror *m);
/* Is slot @i still to be reconnected, by the schedule of generation @gen
 * (not cancelled, not scheduled again)?  Any thread; takes rc_lock. */
bool mirror_reconnect_current(struct mirror *m, unsigned i, uint64_t gen);
/* ops.c: one attempt: re-add slot @i from @uri, scheduled as generation
 * @gen.  0 or -errno (@err set); -ECANCELED when that schedule was
 * cancelled (an administrator's remove, fail or add) while it connected. */
int mirror_reconnect_leg(struct mirror *m, unsigned i, const char *uri, uint64_t gen,
			 GError **err);
/* Apply the array's options to a leg device just opened (remote timeout). */
void mirror_leg_dev_setup(struct mirror *m, struct dmio_dev *dev);

/* state.c: state changes, superblock updates, the worker thread. */
/* Is @leg (dev set) remote, with its connection gone? */
bool mirror_leg_disconnected(struct mirror_leg *leg);
int mirror_state_init(struct mirror *m);
void mirror_state_exit(struct mirror *m);
/* Leg @i failed (I/O error @err on @what): mark it FAULTY unless it is
 * already; the superblocks are updated by the worker.  Any thread. */
void mirror_leg_failed(struct mirror *m, unsigned i, const char *what, int err);
/* Legs in sync now. */
unsigned mirror_in_sync_count(struct mirror *m);
/* Ask for a superblock update and return its generation. state_lock held. */
uint64_t mirror_sb_request_locked(struct mirror *m);
/* Ask for an update and wait until it is written.  0 or -EIO (no leg took it). */
int mirror_sb_update_sync(struct mirror *m);
/* Complete write @r (err) once the superblock generation it needs is on
 * disk; from write_done. */
void mirror_hold_write(struct mirror *m, struct mreq *r);
/* Write the superblocks of every writable leg now (state_lock NOT held;
 * caller serialises with the worker).  0 if at least one leg took it. */
int mirror_write_superblocks(struct mirror *m);
bool mirror_degraded_locked(struct mirror *m);
void mirror_update_clearing(struct mirror *m);

/* event.c: report a state change to opts->event_fn.  @leg: slot or -1;
 * @err: 0 or a positive errno.  state_lock held (mirror_event() takes it). */
void mirror_event_locked(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
			 int err);
void mirror_event(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
		  int err);
/* The end of a sync pass (RebuildFinished, RebuildInterrupted,
 * ScrubFinished), with the pass's bytes read and written. */
void mirror_event_sync_end_locked(struct mirror *m, enum fm_event_type type, uint64_t value,
				  int err);
void mirror_event_sync_end(struct mirror *m, enum fm_event_type type, uint64_t value, int err);
/* ... and words for people (struct fm_event.detail), or NULL. */
void mirror_event_sync_end_detail(struct mirror *m, enum fm_event_type type, uint64_t value,
				  int err, const char *detail);
/* The same with words for people (struct fm_event.detail).  The mirror
 * logs at debug level only: what a user must hear of goes this way. */
void mirror_event_detail_locked(struct mirror *m, enum fm_event_type type, int leg,
				uint64_t value, int err, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
void mirror_event_detail(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
			 int err, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* After leg states changed (state_lock held): DegradedArray or
 * ArrayOptimal when the array's degraded state differs from the last one
 * reported. */
void mirror_event_degraded_locked(struct mirror *m);

/* csum.c: per-block checksums (see there for the invariants).  Sectors are
 * image sectors, 4 KiB aligned (mcsum_aligned()); blocks are 4 KiB. */
bool mirror_has_csum(const struct mirror *m);
bool mcsum_aligned(uint64_t sector, uint64_t count);
uint32_t mcsum_block_crc(const void *block);
/* Load the table at assembly (no-op without FM_SB_FEAT_CHECKSUMS). */
int mcsum_load(struct mirror *m, GError **err);
void mcsum_free(struct mirror *m);
/* The expected crc32c of @block; set it. */
uint32_t mcsum_get(struct mirror *m, uint64_t block);
void mcsum_set(struct mirror *m, uint64_t block, uint32_t crc);
/* A write of @iov / a discard is about to be issued (its bitmap bits durable). */
void mcsum_update_iov(struct mirror *m, uint64_t sector, uint64_t count,
		      const struct iovec *iov, unsigned iovcnt);
void mcsum_set_zero(struct mirror *m, uint64_t sector, uint64_t count);
/* A read of [@sector, + @count) is about to be issued: fetch the cache
 * line of its first entry now, so that the miss overlaps the leg copy
 * instead of stalling mcsum_verify_iov() after it. */
void mcsum_prefetch(struct mirror *m, uint64_t sector);
/* The first block of @iov that fails verification, or -1. */
int64_t mcsum_verify_iov(struct mirror *m, uint64_t sector, uint64_t count,
			 const struct iovec *iov, unsigned iovcnt);
/* Write the dirty pages to every writable leg (blocks; not from a
 * completion).  0 when an in-sync leg took them all. */
int mcsum_write_dirty(struct mirror *m);
void mcsum_mark_all_dirty(struct mirror *m);
uint64_t mcsum_page_writes(struct mirror *m);

/* badblocks.c: the bad-block list (pure functions on a superblock; the
 * mirror calls them with state_lock held).  Blocks are 4 KiB blocks of the
 * image; mbad_add() returns -ENOSPC (list unchanged) when it is full. */
bool mbad_overlaps(const struct fm_sb *sb, unsigned slot, uint64_t sector, uint64_t count);
int mbad_add(struct fm_sb *sb, unsigned slot, uint64_t block, uint64_t n);
bool mbad_clear(struct fm_sb *sb, unsigned slot, uint64_t block, uint64_t n);
bool mbad_drop_slot(struct fm_sb *sb, unsigned slot);
uint64_t mbad_blocks(const struct fm_sb *sb, unsigned slot);
/* A leg with more bad blocks than this is failed instead (a few bad
 * blocks are a disk remapping; many, a disk going or out of space). */
#define MIRROR_BAD_MAX_LEG 128
/* Record the blocks b0 + b (b < @nb, failed[b] set) of @slot: 0, or
 * -ENOSPC (list unchanged) when the list has no room or the slot would
 * have more than MIRROR_BAD_MAX_LEG bad blocks: the leg must fail. */
int mbad_record(struct fm_sb *sb, unsigned slot, const uint8_t *failed, uint64_t b0,
		uint64_t nb);
/* Does leg @i have a bad block in image sectors @sector + @count?  Any
 * thread, state_lock NOT held. */
bool mirror_leg_bad(struct mirror *m, unsigned i, uint64_t sector, uint64_t count);
/* Leg @i took a write of @sector + @count: its whole blocks there are no
 * longer bad.  state_lock NOT held. */
void mirror_bad_clear(struct mirror *m, unsigned i, uint64_t sector, uint64_t count);
/* The legs of @to got a copy of @sector + @count from leg @from, which has
 * bad blocks there: they get them too (a leg whose list is full fails).
 * state_lock NOT held. */
void mirror_bad_inherit(struct mirror *m, unsigned from, uint64_t to, uint64_t sector,
			uint64_t count);
/* Leg @i leaves its slot: forget its entries.  state_lock held. */
void mirror_bad_drop_slot_locked(struct mirror *m, unsigned i);
/* mirror.c, on the worker thread: retry a write that failed on some leg,
 * block by block, record the blocks that fail again, and queue the
 * request (on m->held) until the superblock is written. */
void mirror_narrow_write(struct mirror *m, struct mreq *r);

/* resync.c */
int mirror_sync_start(struct mirror *m, enum mirror_sync_action action, bool repair);
void mirror_sync_stop(struct mirror *m);
bool mirror_sync_running(struct mirror *m);
void mirror_sync_status(struct mirror *m, struct mirror_status *s);
void mirror_sync_free(struct mirror *m);
/* When the running recovery ends, retire leg @old_slot (replace). */
/* Start a recovery pass, or, while a pass runs, queue one to run when it
 * ends.  0 started, 1 queued, -errno.  admin_lock held. */
int mirror_sync_start_or_queue(struct mirror *m);
int mirror_sync_cancel_scrub(struct mirror *m);
/* ops.c: fail (if needed) and remove leg @i: no more I/O, closed, unlocked;
 * its slot is marked removed (kept for a re-add), or emptied when @forget
 * (a replaced leg).  @why is logged. */
void mirror_retire_leg(struct mirror *m, unsigned i, bool forget, const char *why);

/* Do two stat results name the same leg: the same block device, or the
 * same file? */
static inline bool same_leg_file(const struct stat *a, const struct stat *b)
{
	return S_ISBLK(a->st_mode) ? S_ISBLK(b->st_mode) && a->st_rdev == b->st_rdev
				   : a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* format.c: inspect, create, open and lock a leg for a new slot;
 * @connect_timeout_ms: a remote leg's handshake deadline (0: dmio's). */
int mirror_open_new_leg(const char *path, bool force, uint64_t need,
			unsigned connect_timeout_ms, struct dmio_dev **ret_dev,
			bool *ret_created, GError **err);
/* assemble.c */
/* -ETIMEDOUT, with the message that @path's NBD handshake took longer than
 * @connect_timeout_ms (0: dmio's), naming remote_connect_timeout. */
int mirror_handshake_timeout(const char *path, unsigned connect_timeout_ms, GError **err);
/* @connect_timeout_ms: a remote leg's handshake deadline (0: dmio's). */
int mirror_open_leg(struct mirror_leg *leg, bool readonly, unsigned connect_timeout_ms,
		    GError **err);
/* Are the legs of superblocks @x and @y the two sides of a split brain
 * (each written without the other)?  Pure. */
bool mirror_split_brain(const struct fm_sb *x, const struct fm_sb *y);
/* May leg @leg (its own superblock), failed or removed in the table of
 * @ref, be recovered from the bitmap: is it no older than its last in-sync
 * state in @ref's assembly records?  Pure. */
bool mirror_bitmap_covers(const struct fm_sb *ref, const struct fm_sb *leg);
int mirror_find_leg(struct mirror *m, const char *path);

#endif /* MIRROR_I_H */
