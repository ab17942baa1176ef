/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The running daemon's parts, shared by its files:
 *   mount.c    start-up (fork, assemble, cache, control socket, FUSE) and
 *              teardown
 *   verbs.c    the control-verb table: dispatch, usage, the administration
 *   status.c   one status model, rendered as text, JSON and Prometheus
 *   events.c   the mirror's events: counters, log, a ring of recent ones,
 *              `monitor` subscribers
 *
 * Threading: the control socket's threads answer `status` and run the
 * verbs from start-up to the end of the teardown, while the main thread
 * creates and frees m, c and f: they read them only under d->lock, and
 * the main thread publishes each one and takes it away (NULL) under
 * d->lock before freeing it.  The main thread itself uses them without
 * the lock.  Administration calls run on d->m without d->lock (a call may
 * block on a superblock update, and `status` must go on being answered
 * meanwhile): they count themselves in d->admin_calls, and the teardown
 * waits for that count to drop to 0 before it stops the mirror.
 */
#ifndef FM_DAEMON_H
#define FM_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "cli/cli.h"
#include "fusemirror/bufio.h"
#include "fusemirror/ctl.h"
#include "fusemirror/event.h"
#include "fusemirror/front.h"
#include "fusemirror/mirror.h"

struct daemon_events;

struct daemon {
	struct mount_cfg *cfg;
	struct ctl_server *ctl;
	uint64_t started_ns;
	struct daemon_events *ev;       /* from before assembly to the end */

	pthread_mutex_t lock;           /* guards the fields below */
	struct mirror *m;
	struct bufio_client *c;
	struct front *f;
	char *image_path;               /* front_image_path(), kept past f */
	struct front_stats final_fs;    /* f's counters when it went away */
	enum front_transport transport; /* f's FUSE transport, kept past f */
	pthread_cond_t stopped_cond;
	bool stopping;                  /* unmount begun */
	bool stopped;                   /* teardown finished */
	unsigned admin_calls;           /* mirror_* administration calls running
					   on d->m without d->lock */
	pthread_cond_t admin_cond;      /* signalled when admin_calls drops to 0 */
	int stop_result;                /* 0, or -errno of the teardown */
	char *stop_message;
};

/*----------------------------------------------------------------*/
/* verbs.c */

/* The control socket's handler (ctl_handler_fn) and its streaming
 * commands (`monitor`); ctx is the struct daemon. */
int daemon_ctl_handler(void *ctx, int argc, char **argv, uid_t peer_uid, GString *out,
		       GError **err);
extern const struct ctl_stream_cmd daemon_ctl_streams[];
/* -EAGAIN with @err: the mirror is gone (the teardown closed it). */
int daemon_gone_locked(struct daemon *d, GError **err);

/*----------------------------------------------------------------*/
/* status.c */

enum daemon_status_format {
	DAEMON_STATUS_TEXT,
	DAEMON_STATUS_JSON,
	DAEMON_STATUS_PROMETHEUS,
	DAEMON_STATUS_SYNC,             /* one line of key=value (scrub --wait) */
};

/* The wire word of each format ("text", "json", "prometheus", "sync"), and
 * back: -1 for an unknown word. */
const char *daemon_status_format_name(enum daemon_status_format f);
int daemon_status_format_parse(const char *word);

/* verbs.c: the request decoder. */
struct daemon_verb;

enum daemon_inject_op {
	DAEMON_INJECT_SET,
	DAEMON_INJECT_CLEAR,
	DAEMON_INJECT_SHOW,
};

/*
 * One control request, its words decoded and checked against the verb
 * table before anything runs.  The strings point into the request's
 * words.  Which fields a verb fills is said by its table row (verbs.c).
 */
struct daemon_request {
	const struct daemon_verb *verb;
	const char *name;               /* the verb */
	const char *leg;                /* LEG (replace: OLD), or NULL */
	const char *leg2;               /* replace: NEW */
	enum daemon_status_format format;       /* status, sync */
	unsigned add_flags;             /* add, replace: MIRROR_ADD_* */
	bool on;                        /* write-mostly on|off */
	bool repair;                    /* scrub repair */
	enum daemon_inject_op inject;   /* inject */
	struct dmio_fault fault;        /* inject LEG key=value... */
	bool recent, oneshot;           /* monitor */
};

/* Decode the words of a request (@argv[0] the verb, as split by the
 * control socket) into @rq: 0, or -EINVAL with a usage message in @err.
 * Reads nothing but the words (the fuzz target fuzz_ctl_request runs it). */
int daemon_request_parse(int argc, char **argv, struct daemon_request *rq, GError **err);

/* Render the status of @d in @format onto @out.  Called with d->lock held
 * and d->m alive. */
void daemon_status_render_locked(struct daemon *d, enum daemon_status_format format,
				 GString *out);

/*----------------------------------------------------------------*/
/* events.c */

/* Ring of the most recent events kept for `monitor` subscribers. */
#define DAEMON_EVENT_RING 256
/* `monitor` connections at once (below FM_CTL_MAX_CLIENTS). */
#define DAEMON_MONITORS_MAX 8

struct daemon_events *daemon_events_new(const char *mountpoint);
void daemon_events_free(struct daemon_events *ev);
/* The array's identity, for the events' lines (known after assembly;
 * events before it carry the mount point only). */
void daemon_events_set_array(struct daemon_events *ev, const uint8_t uuid[16],
			     const char *name);
/* The mirror's event handler (struct mirror_opts.event_fn); ctx: the
 * struct daemon_events.  Counts, logs, keeps and wakes the monitors. */
void daemon_events_handler(void *ctx, const struct fm_event *event);
/* How many events of each type were seen since start-up. */
void daemon_events_counts(struct daemon_events *ev, uint64_t ret[FM_EVENT__MAX]);
/* The monitor lines (JSON, one an event, newline-ended) of the events kept
 * from seq *cursor on, an EventsLost line first when some of them are no
 * longer in the ring; *cursor is advanced past them. */
GString *daemon_events_lines(struct daemon_events *ev, uint64_t *cursor);
/* `monitor` connections subscribed now. */
unsigned daemon_events_monitors(struct daemon_events *ev);
/* The `monitor` stream (ctl_stream_fn); ctx: the struct daemon. */
int daemon_monitor_stream(void *ctx, int argc, char **argv, uid_t peer_uid,
			  struct ctl_stream *stream, GError **err);

#endif /* FM_DAEMON_H */
