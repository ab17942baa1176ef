/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Events: every state change of an array, as the mirror reports it to the
 * daemon.  The mirror (a library layer) logs at debug level only; the daemon
 * receives these and decides what to say: the journal or stderr, `fusemirror
 * monitor` (mdadm --monitor's model), systemd's STATUS=, Prometheus counters.
 *
 * The library layers (dmio, bufio, mirror, ctl) never log above debug
 * level: what a user must hear of is an event (or an error returned).
 *
 * The names (fm_event_name()) are part of the user interface: `monitor
 * --program` passes them as its first argument and `--json` prints them,
 * so a name never changes once released.  They follow mdadm --monitor's
 * where one exists (Fail, RebuildStarted, RebuildFinished, DegradedArray).
 *
 * Threading: the handler (struct mirror_opts.event_fn) is called on
 * whichever thread made the change: the mirror's worker, its sync thread,
 * an admin call's thread, or the thread that calls mirror_assemble() /
 * mirror_stop().  Calls for one array are serialised (never two at once)
 * and arrive in the order the changes were made.
 * WARNING: the handler must not block for long and must not call back into
 * the mirror (no mirror_* call on that array): it may run with the
 * mirror's state lock held.  Copy what it needs and return.
 */
#ifndef FUSEMIRROR_EVENT_H
#define FUSEMIRROR_EVENT_H

#include <stdint.h>

/* What happened.  `leg` is the slot in the leg table, or -1 if none. */
enum fm_event_type {
	FM_EVENT_ASSEMBLED = 0,         /* the array runs; value: legs in sync */
	FM_EVENT_UNCLEAN_START,         /* not stopped cleanly; value: regions to resync */
	FM_EVENT_DEGRADED,              /* fewer in-sync legs than slots in use */
	FM_EVENT_OPTIMAL,               /* every leg in sync again */
	FM_EVENT_LEG_FAILED,            /* leg: failed (I/O error or `fail`); err: cause */
	FM_EVENT_LEG_REMOVED,           /* leg: removed by the administrator */
	FM_EVENT_LEG_ADDED,             /* leg: added (rebuilding until in sync);
					   value: 1 rebuilt wholly, 0 from the bitmap */
	FM_EVENT_LEG_MISSING,           /* leg: not present at a degraded start */
	FM_EVENT_REBUILD_STARTED,       /* resync/recovery started; value: bytes to copy */
	FM_EVENT_REBUILD_FINISHED,      /* ended; value: bytes copied */
	FM_EVENT_REBUILD_INTERRUPTED,   /* stopped before the end (resumes at next mount);
					   value: bytes copied; err: 0 (stopped) or why */
	FM_EVENT_SCRUB_STARTED,         /* value: 1 repair, 0 check */
	FM_EVENT_SCRUB_FINISHED,        /* value: mismatched sectors; err: ECANCELED
					   when cancelled, or the error that ended it */
	FM_EVENT_READ_ERROR_CORRECTED,  /* leg: a bad copy rewritten; value: byte offset */
	FM_EVENT_CHECKSUM_ERROR,        /* leg: a copy failed verification; value: byte offset */
	FM_EVENT_STOPPED,               /* the array was stopped; value: 1 clean, 0 not */
	FM_EVENT_WRITE_MOSTLY,          /* leg: write-mostly flag set (value 1) or cleared (0) */
	FM_EVENT_BAD_BLOCK,             /* leg: blocks it cannot write were recorded in
					   the bad-block list (the leg stays); value:
					   byte offset of the first; err: EIO */
	FM_EVENT_READ_ERROR,            /* leg: a read failed (retried on another leg);
					   value: byte offset; err: why */
	FM_EVENT_IO_ERROR,              /* the image failed an I/O (the client gets
					   err); value: byte offset */
	FM_EVENT_LEG_STALE,             /* leg: behind the array at assembly or re-add;
					   value: 1 rebuilt wholly, 0 from the bitmap */
	FM_EVENT_LEG_RECONNECTED,       /* leg: a remote leg failed by an I/O error
					   (its server died, hung, or the network
					   cut) reconnected by itself and re-added
					   (no Remove, no Add); value: bytes its
					   recovery copies (the regions written
					   while it was away, or the whole image
					   when rebuilt wholly); detail: which */
	FM_EVENT__MAX
};

struct fm_event {
	enum fm_event_type type;
	int leg;                        /* leg table slot, or -1 */
	const char *leg_path;           /* that leg's path (valid during the call), or NULL */
	uint8_t leg_uuid[16];           /* zero when leg < 0 */
	uint64_t value;                 /* per type, above */
	int err;                        /* 0 or a positive errno, per type */
	/* RebuildFinished, RebuildInterrupted, ScrubFinished: bytes the pass
	 * read from and wrote to the legs, all legs together (a resync after a
	 * crash where the legs never differed writes 0); 0 otherwise. */
	uint64_t read_bytes, write_bytes;
	/* Words on the cause or the extent for people ("write of sectors 8+8
	 * failed", "12 corrected read errors in 300 reads, more than 1%"),
	 * valid during the call, or NULL.  Not a stable interface. */
	const char *detail;
};

/* Called for each event; @ev and what it points to are valid only during
 * the call.  See the WARNING above. */
typedef void (*fm_event_fn)(void *ctx, const struct fm_event *ev);

/* The event's stable name ("Fail", "RebuildStarted", ...); "Unknown" for a
 * type outside the enum. */
const char *fm_event_name(enum fm_event_type type);

#endif /* FUSEMIRROR_EVENT_H */
