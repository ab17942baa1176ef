/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mirror target: N legs holding the same image.  It is the block device
 * under the cache (mirror_bdev(), the contract of blockdev.h: the mirror
 * knows nothing of the cache), and it formats and assembles legs.
 *
 * Data path:
 *   - A write goes to every in-sync leg as ONE dmio write to all of them; it
 *     completes when every leg has it.  A leg that fails it is reported in
 *     the completion (-EIO), logged, and counted in its statistics: no write
 *     error is hidden.
 *   - Overlapping writes (and discards/write-zeroes) are issued in the order
 *     they were submitted: one that overlaps an earlier one still in flight
 *     waits for it, so every leg sees them in the same order and legs never
 *     diverge.  Reads are not ordered against writes (as on a disk).
 *   - A read goes to one leg, chosen by the read policy (default: the leg
 *     that just served the preceding sectors, else the one with the fewest
 *     reads pending).  A read that fails is retried on the other legs.
 *     A write-mostly leg (FM_SB_LEG_WRITE_MOSTLY, md's --write-mostly: a
 *     slow or remote leg) is read only when no other in-sync leg can serve
 *     the read (none left, or all of them failed it), whatever the policy.
 *   - Flush: every leg is flushed in parallel.
 *
 * On disk (include/fusemirror/superblock.h): assembly refuses legs that do
 * not belong together, and marks the array dirty (events + 1, CLEAN off) on
 * every leg before the first write; mirror_stop() marks it clean again.
 *
 * Threading: mirror_submit() and the other I/O calls may be called from any
 * thread, including a dmio/bufio completion callback (they wait only for
 * memory, when malloc fails: see src/dmio/client.c); completions (@end_io)
 * run on dmio's reaper threads; also on the submitting thread when a request
 * fails before any I/O, and on the mirror's worker thread for writes it held
 * while a leg's failure was being recorded.  mirror_flush(),
 * mirror_discard(), mirror_write_zeroes() are synchronous and must not be
 * called from a completion.  mirror_assemble(), mirror_stop() and
 * mirror_format() are called once, by the daemon's main thread.
 * The statistics getters may be called from any thread at any time.
 */
#ifndef FUSEMIRROR_MIRROR_H
#define FUSEMIRROR_MIRROR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "fusemirror/blockdev.h"
#include "fusemirror/event.h"
#include "fusemirror/superblock.h"

struct mirror;

#define FM_MIRROR_ERROR (fm_mirror_error_quark())
GQuark fm_mirror_error_quark(void);

/*----------------------------------------------------------------*/
/* Formatting */

struct mirror_format_opts {
	uint64_t size;          /* image bytes; 0: the largest all legs fit */
	uint64_t region_size;   /* 0: FM_SB_DEFAULT_REGION_SIZE */
	uint32_t block_size;    /* suggested cache block size; 0: 4096 */
	const char *name;       /* array name, may be NULL */
	bool force;             /* overwrite legs that carry a signature */
	/* Per-block checksums (FM_SB_FEAT_CHECKSUMS; the command line's
	 * default): a crc32c of every 4 KiB block on every leg, verified on
	 * every read.  Needs block_size >= 4096 (or 0) and a size of at most
	 * FM_SB_CSUM_MAX_IMAGE (an automatic size is capped to it). */
	bool checksums;
	uint64_t write_mostly;  /* bit i: legs[i] is write-mostly (FM_SB_LEG_WRITE_MOSTLY) */
	/* No written-region map (FM_SB_FEAT_WRITTEN_MAP, on by default): every
	 * region counts as written, as in arrays made before the map. */
	bool no_written_map;
};

/*
 * Write a new array's superblocks on @n legs (2..FM_SB_MAX_LEGS; 1 is
 * allowed, a mirror of one).  A leg is an existing regular file (large
 * enough: it is never grown), a path to create (a sparse file of the needed
 * size; this needs opts->size), or a block device.  On failure, files this
 * call created are removed again.  Refused, with a message that
 * names the leg and the reason, before anything is written: a leg with a
 * file system, partition table, RAID or fusemirror signature (unless
 * @force), a leg too small for the requested size, the same leg twice (by
 * path or by device and inode), a path whose directory does not exist.
 * Every leg's data area is then discarded or zeroed, so all legs start
 * equal and no initial copy is needed.
 * Returns 0 and fills @ret_array_uuid (may be NULL), or -errno with @err.
 */
int mirror_format(const char *const *legs, unsigned n,
		  const struct mirror_format_opts *opts,
		  uint8_t ret_array_uuid[16], GError **err);

/*----------------------------------------------------------------*/
/* Assembly */

enum mirror_read_policy {
	MIRROR_READ_BALANCE,    /* sequential affinity, else least pending */
	MIRROR_READ_ROUND_ROBIN,/* rotate over in-sync legs */
	MIRROR_READ_FIRST,      /* the first in-sync leg, others on error */
};

/* Parse "balance" | "round-robin" | "first"; returns -EINVAL otherwise. */
int mirror_read_policy_parse(const char *s, enum mirror_read_policy *ret);
const char *mirror_read_policy_name(enum mirror_read_policy p);

struct mirror_opts {
	bool readonly;                  /* open legs read-only, no sb update */
	enum mirror_read_policy read_policy;
	/* Do not mark the array in use at assembly: the caller will call
	 * mirror_mark_in_use() once nothing else can refuse the mount, so that
	 * a refusal after assembly leaves every leg's bytes unchanged.  Until
	 * then, writes are refused with -EROFS. */
	bool defer_in_use;
	/* Resilience (0: the default in brackets) */
	/* Read errors: a leg is failed at max_read_errors errors not corrected
	 * (the rewrite of the bad copy did not read back), or at
	 * max_read_errors corrected ones when they are also more than
	 * max_read_error_ppm of its reads; both counts halve every
	 * read_error_decay_ms (md halves its count hourly). */
	unsigned max_read_errors;       /* [20] */
	uint32_t max_read_error_ppm;    /* corrected errors per million reads [50000: 5%] */
	unsigned read_error_decay_ms;   /* [3600000: an hour] */
	uint64_t sync_speed_min;        /* resync bytes/s kept under load [1 MiB/s] */
	uint64_t sync_speed_max;        /* resync bytes/s when idle [200 MiB/s] */
	unsigned bitmap_delay_ms;       /* idle time before a bit is cleared [5000] */
	/* Remote (NBD) legs: a server silent this long while I/O waits is
	 * taken as hung and its leg failed (dmio_dev_set_remote_timeout);
	 * 0: never.  A remote leg failed by the loss of its connection (it
	 * dropped, or hung) reconnects by itself, after 1 s (twice its last
	 * wait when it failed within a minute of a reconnection), then twice
	 * as long after each failed attempt (at most remote_retry_max_ms), and
	 * is re-added: only the regions its bitmap marks are copied.  A leg
	 * failed by errors its server answered stays failed. */
	unsigned remote_timeout_ms;
	/* The deadline of a remote leg's connection and NBD handshake, at
	 * assembly, re-add and reconnection [0: DMIO_REMOTE_CONNECT_TIMEOUT_MS]. */
	unsigned remote_connect_timeout_ms;
	unsigned remote_retry_max_ms;   /* [30000] (below 1000: every attempt
					   after that long) */
	/* State changes (include/fusemirror/event.h); NULL: none reported. */
	fm_event_fn event_fn;
	void *event_ctx;	/* Start even when in-sync legs of the array were not given (md's
	 * --assemble --run): they are recorded as missing (faulty), the
	 * array runs degraded, and their re-add recovers from the bitmap. */
	bool degraded;
	/* A split brain among the legs given is resolved for this leg's side
	 * (a path of one of them); the other side is rebuilt wholly.  NULL:
	 * a split brain is refused. */
	const char *prefer;
};

/*
 * Open the legs (O_DIRECT where possible; each locked: an OFD write lock on
 * a file, O_EXCL on a block device), read their superblocks and assemble.
 * Refused by name: a missing path, a leg that is not a fusemirror leg, a
 * damaged superblock (bad crc), a leg of another array, geometry that
 * differs, a leg smaller than its superblock says, a leg given twice, a
 * leg in use ("already in use"), in-sync legs of the array that were not
 * given (unless opts->degraded), a split brain (two legs each written
 * without the other; unless opts->prefer names one side), an array none of
 * whose given legs holds the current data.  A given leg that is behind is
 * assembled as rebuilding: from the bitmap when it failed or was removed
 * (and is not older than its last in-sync state), wholly when it went
 * back in time, was being rebuilt, or lost a split brain.  Unless
 * read-only, the superblocks are then marked dirty (durably) before this
 * returns.
 * Returns 0 and *ret_m, or -errno with @err.
 */
int mirror_assemble(const char *const *legs, unsigned n, const struct mirror_opts *opts,
		    struct mirror **ret_m, GError **err);

/*
 * Mark the array in use (events + 1, CLEAN off, durably on every leg), which
 * a write needs.  Done by mirror_assemble() itself unless opts->defer_in_use.
 * Returns 0 (also when already in use) or -errno with @err.
 */
int mirror_mark_in_use(struct mirror *m, GError **err);

/*
 * Flush the legs, mark the superblocks clean (unless read-only, never
 * marked in use, or a write error happened since), close and unlock the
 * legs, free @m.  An array never marked in use is closed untouched.
 * No I/O may be in flight.  Returns 0 or the first error (@m is freed
 * either way).
 */
int mirror_stop(struct mirror *m, GError **err);

/*----------------------------------------------------------------*/
/* I/O (sectors are 512 bytes, relative to the start of the image) */

typedef void (*mirror_end_io_fn)(void *ctx, int err);

enum mirror_op {
	MIRROR_OP_READ,
	MIRROR_OP_WRITE,
};

enum mirror_io_flags {
	MIRROR_IO_FUA = 1u << 0,        /* write: durable on every leg */
};

/*
 * Start a read or write of the iovec (a whole number of sectors) at
 * @sector.  Returns 0 when the request started: @end_io is then called
 * exactly once, on a dmio reaper thread.  Returns -errno for a request that
 * cannot start, and @end_io is never called: -EINVAL (not whole sectors,
 * too many iovecs; on an array with checksums, not whole 4 KiB blocks at a
 * 4 KiB offset), -ENOSPC (beyond the image end), -EROFS (write on a
 * read-only array).
 * With checksums (FM_SB_FEAT_CHECKSUMS) every read is verified against the
 * block's checksum after the leg read completes; a copy that fails is
 * handled like a read error (the data comes from a leg whose copy
 * verifies, the bad copy is rewritten and re-verified), and a read that no
 * copy verifies completes with -EIO: never with wrong data.
 * With a written-region map (FM_SB_FEAT_WRITTEN_MAP), a read that lies
 * wholly in regions never written (or wholly discarded since) is filled
 * with zeroes and completes before mirror_submit() returns, on the
 * submitting thread, without touching a leg; a read across written and
 * unwritten regions reads only the written part from a leg.  A read that
 * no in-sync leg holds whole outside its bad-block list is read in runs of
 * blocks, each from a leg whose copy is good.  A read served in such
 * pieces may complete on the submitting thread (its last piece ended
 * before mirror_submit() returned).  The iovec array is copied; the memory it points to
 * must stay valid (and unchanged, for a write) until completion.
 * At completion @err is 0, or -EIO when every leg failed a read or some leg
 * failed a write.  Never blocks (a write that overlaps one in flight is
 * queued, not waited for).
 */
int mirror_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
		  const struct iovec *iov, unsigned iovcnt, unsigned flags,
		  mirror_end_io_fn end_io, void *ctx);

/* Flush every in-sync leg (in parallel) and wait.  0 or -EIO. */
int mirror_flush(struct mirror *m);
/* Discard / zero [sector, sector + count) on every leg and wait; the range
 * reads back as zeroes afterwards.  0, -ENOSPC, -EROFS or -EIO. */
int mirror_discard(struct mirror *m, uint64_t sector, uint64_t count);
int mirror_write_zeroes(struct mirror *m, uint64_t sector, uint64_t count);

/* The mirror as a block device (include/fusemirror/blockdev.h), e.g. the
 * one under the cache; valid until mirror_stop().  Its splice_read and
 * map_read serve a read that needs one leg's bytes and nothing more: they
 * refuse with checksums on, for a range out of sync, unwritten or with bad
 * blocks, on a leg not in memory and on a leg dmio_dev_splice_read() (or
 * dmio_dev_map_read(): a hole, not mapped) refuses.  A map_read loan holds
 * its leg (as a read in flight does: a removal waits for it) until
 * map_put; a map_put with -EFAULT (the leg file shrank under the loan)
 * is a read error of the leg in that range (counted, reported as the
 * ReadError event, towards max_read_errors; the leg fails if its file is
 * shorter than it must be) and stops the leg's lending
 * (dmio_dev_map_forget()), so its later reads take the engine's path and
 * their errors are repaired. */
struct fm_bdev mirror_bdev(struct mirror *m);

/*----------------------------------------------------------------*/
/* Administration (online; from any thread but a completion; they may block
 * for a superblock update).  A leg is named by the path it was assembled or
 * added with, or any other path of the same file or block device.  Every
 * refusal sets @err to a message naming the leg and the reason. */

/* Mark @leg faulty (it receives no more I/O), like `mdadm --fail`.
 * -EBUSY for the last in-sync leg, -EALREADY when already faulty. */
int mirror_fail_leg(struct mirror *m, const char *leg, GError **err);

/* Take a faulty (or rebuilding) leg out of the array: its slot is freed,
 * the leg closed and unlocked.  -EBUSY for an in-sync leg (fail it first). */
int mirror_remove_leg(struct mirror *m, const char *leg, GError **err);

/* Flags of mirror_add_leg() and mirror_replace_leg(). */
enum mirror_add_flags {
	MIRROR_ADD_FORCE = 1u << 0,        /* overwrite a signature on a new leg */
	MIRROR_ADD_WRITE_MOSTLY = 1u << 1, /* flag the leg write-mostly */
};

/* Add @path to the array and rebuild it online.  A leg of this array that
 * was failed or went stale is re-added with bitmap-based recovery (only the
 * regions written since); anything else is formatted as a new leg (a path
 * that does not exist is created sparse; a signature is refused unless
 * MIRROR_ADD_FORCE) and rebuilt wholly.  A re-added leg keeps its
 * write-mostly flag; MIRROR_ADD_WRITE_MOSTLY sets it.  The leg is in the
 * array (rebuilding: it takes writes) on return.  Returns 0 once the
 * rebuild has started, or 1 when a resync, recovery or scrub runs: the
 * rebuild is queued and starts when that one ends (also after a stop: a
 * rebuilding leg is rebuilt at the next mount). */
int mirror_add_leg(struct mirror *m, const char *path, unsigned flags, GError **err);

/* Add @new_path (as mirror_add_leg; 1 when queued) and rebuild it while
 * @old still serves; when the rebuild completes, @old is removed.  The
 * pairing is recorded in the superblocks (FM_SB_LEG_REPLACEMENT): a stop
 * before the end resumes the rebuild at the next mount, and @old is
 * removed when it completes then.  -EBUSY when @old is already being
 * replaced. */
int mirror_replace_leg(struct mirror *m, const char *old, const char *new_path,
		       unsigned flags, GError **err);

/* Flag @leg write-mostly (@on) or not: recorded in the leg table of every
 * leg (durably, on return), and it takes effect for the next read.
 * Emits FM_EVENT_WRITE_MOSTLY when it changes.  0 (also when nothing
 * changes) or -errno with @err: -ENODEV not a leg, -EROFS read-only. */
int mirror_set_write_mostly(struct mirror *m, const char *leg, bool on, GError **err);

/* Start a scrub: compare every region of every in-sync leg; count the
 * mismatching sectors; with @repair, rewrite the other legs from the first
 * one that read correctly.  -EBUSY while a resync/rebuild/scrub runs. */
int mirror_scrub(struct mirror *m, bool repair, GError **err);

/* Stop a running scrub (a resync or rebuild cannot be stopped).  -ENOENT
 * when no scrub runs. */
int mirror_scrub_cancel(struct mirror *m, GError **err);

/* Set (@fault not NULL) or clear the fault injected on @leg.  The fault's
 * sector/count are image sectors (count 0: the whole leg, superblock and
 * bitmap included). */
int mirror_inject(struct mirror *m, const char *leg, const struct dmio_fault *fault,
		  GError **err);

/*----------------------------------------------------------------*/
/* Information */

uint64_t mirror_size(const struct mirror *m);          /* image bytes */
/* A copy of the newest superblock (of an in-sync leg). */
void mirror_get_sb(struct mirror *m, struct fm_sb *ret);
/* Leg slots: 0 .. mirror_nr_legs() - 1; an unused slot has state
 * FM_LEG_EMPTY (and path NULL) in mirror_get_leg_stats(). */
unsigned mirror_nr_legs(const struct mirror *m);
bool mirror_is_readonly(const struct mirror *m);
/* Every leg present is in memory (dmio_dev_in_memory()): a read of the
 * image is a memory copy already, as of this call. */
bool mirror_legs_in_memory(struct mirror *m);
enum mirror_read_policy mirror_get_read_policy(const struct mirror *m);

struct mirror_leg_stats {
	char path[4096];                /* "" for an empty slot */
	enum fm_leg_state state;
	uint8_t uuid[16];
	bool write_mostly;              /* FM_SB_LEG_WRITE_MOSTLY */
	uint64_t corrected;             /* read errors repaired from another leg */
	uint64_t checksum_errors;       /* 4 KiB blocks whose copy here failed
					   checksum verification (reads, scrubs) */
	uint64_t bad_blocks;            /* 4 KiB blocks in its bad-block list:
					   it could not write them; reads of
					   them go to the other legs */
	bool fault_set;                 /* a fault is injected */
	struct dmio_fault fault;        /* ... this one (image sectors) */
	bool direct;                    /* opened O_DIRECT */
	uint64_t reads, writes;         /* requests */
	uint64_t read_bytes, write_bytes;
	uint64_t read_errors, write_errors;
	unsigned pending;               /* reads in flight on this leg */
	bool missing;                   /* FAULTY because it is not present (not
					   given at assembly); path "" */
	bool remote;                    /* an NBD leg (path is its URI) */
	bool connected;                 /* remote: its connection is up */
	bool reconnecting;              /* remote: failed, reconnection attempts go on */
	uint64_t rtt_us;                /* remote: mean round trip of its I/O */
	uint64_t reconnects;            /* remote: re-added after a reconnection */
	unsigned reconnect_attempts;    /* reconnecting: failed attempts so far */
	unsigned reconnect_delay_ms;    /* reconnecting: the wait before the next */
	char note[320];                 /* rebuilding: why, and whether wholly or
					   from the bitmap ("stale (events 9, the
					   array's 14): it went back in time ...");
					   "" otherwise */
};
void mirror_get_leg_stats(const struct mirror *m, unsigned leg,
			  struct mirror_leg_stats *ret);

struct mirror_stats {
	uint64_t reads, writes, flushes, discards;  /* requests */
	uint64_t read_bytes, write_bytes;
	uint64_t read_retries;          /* reads served by another leg */
	uint64_t overlap_waits;         /* writes that waited for an earlier one */
	uint64_t errors;                /* requests completed with an error */
};
void mirror_get_stats(const struct mirror *m, struct mirror_stats *ret);

enum mirror_sync_action {
	MIRROR_SYNC_IDLE,
	MIRROR_SYNC_RESYNC,     /* after an unclean stop: bitmap regions */
	MIRROR_SYNC_RECOVER,    /* rebuilding added/re-added/replacing legs */
	MIRROR_SYNC_CHECK,      /* scrub */
	MIRROR_SYNC_REPAIR,     /* scrub --repair */
};
const char *mirror_sync_action_name(enum mirror_sync_action a); /* "idle", ... */

struct mirror_status {
	const char *state;              /* "clean", "active", "degraded", "resyncing",
					   "recovering", "failed", "read-only" (static) */
	uint64_t events;
	unsigned nr_slots, nr_in_sync, nr_faulty, nr_rebuilding;
	bool degraded;                  /* some slot of the leg table not in sync */
	bool failed;                    /* no leg left: every I/O fails */
	enum mirror_sync_action action;
	uint64_t sync_done, sync_total; /* bytes of this action */
	uint64_t sync_speed;            /* bytes/s, recent */
	uint64_t sync_eta_s;            /* 0 when idle or unknown */
	uint64_t sync_speed_min, sync_speed_max;
	uint64_t mismatches;            /* sectors, last or running scrub (md's mismatch_cnt) */
	enum mirror_sync_action last_action;  /* the last one that finished */
	uint64_t region_size, nr_regions;
	uint64_t bitmap_set;            /* regions whose bit is set now */
	uint64_t resynced_regions;      /* regions copied by resync/recovery since assembly */
	uint64_t bitmap_writes;         /* bitmap page writes since assembly */
	bool checksums;                 /* per-block checksums kept and verified */
	uint64_t checksum_page_writes;  /* checksum area pages written since assembly */
	uint64_t sync_read_bytes;       /* bytes read / written by the running (or */
	uint64_t sync_write_bytes;      /* last) resync, recovery or scrub, all legs */
	uint64_t sync_zero_bytes;       /* of it, unwritten regions zeroed on rebuilding
					   legs instead of copied (no read) */
	/* The written-region map (FM_SB_FEAT_WRITTEN_MAP; read-only: as it
	 * was at the mount); without one every region counts as written. */
	bool written_map;
	uint64_t written_regions;       /* regions written since create (and not
					   wholly discarded since) */
	uint64_t written_bytes;         /* their bytes (the last region may be short) */
	uint64_t unwritten_reads;       /* reads answered with zeroes, no leg read */
};
void mirror_get_status(struct mirror *m, struct mirror_status *ret);

#endif /* FUSEMIRROR_MIRROR_H */
