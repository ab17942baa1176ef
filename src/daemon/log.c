/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the daemon says, and to whom.  The library layers log at debug
 * level only; the mirror reports its state changes as events
 * (fusemirror/event.h) and daemon_log_event() turns each into one message
 * at the level it deserves, with journal fields a program can filter on
 * (journalctl EVENT=Fail ARRAY_UUID=...).  The events that come in floods
 * when a disk goes bad (ReadError, IOError, ChecksumError,
 * ReadErrorCorrected) pass at most DAEMON_LOG_BURST times per
 * DAEMON_LOG_WINDOW_S seconds each (daemon_event_limit_pass(), which
 * events.c asks before keeping one for `monitor` and logging it); the first
 * message after a quiet spell says how many were left out (they are all
 * counted in `status` all the same).
 *
 * Start-up forwarding: a daemonized `mount` has no terminal once it forked;
 * its parent waits on a pipe for the verdict.  Until the mount is live,
 * the child also writes every message of notice level or above on that
 * pipe, and the parent prints them, so that "was not stopped cleanly: N
 * regions will be resynced" reaches the person who typed the command.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "daemon_i.h"
#include "fusemirror/common.h"
#include "fusemirror/superblock.h"

#define DAEMON_LOG_BURST 10
#define DAEMON_LOG_WINDOW_S 10

/* The level each event is logged at. */
static enum fm_log_level event_level(const struct fm_event *ev)
{
	switch (ev->type) {
	case FM_EVENT_LEG_FAILED:
	case FM_EVENT_CHECKSUM_ERROR:
	case FM_EVENT_IO_ERROR:
		return FM_LOG_ERR;
	case FM_EVENT_BAD_BLOCK:
		return FM_LOG_WARNING;
	case FM_EVENT_UNCLEAN_START:
	case FM_EVENT_DEGRADED:
	case FM_EVENT_LEG_MISSING:
	case FM_EVENT_REBUILD_INTERRUPTED:
	case FM_EVENT_READ_ERROR:
	case FM_EVENT_LEG_STALE:
		return FM_LOG_WARNING;
	case FM_EVENT_SCRUB_FINISHED:
		return ev->value ? FM_LOG_WARNING : FM_LOG_NOTICE;
	default:
		return FM_LOG_NOTICE;
	}
}

/* The rate limit of the events that come in floods, per type. */
static struct {
	pthread_mutex_t lock;
	uint64_t window_start_ns[FM_EVENT__MAX];
	unsigned logged[FM_EVENT__MAX];         /* in the current window */
	uint64_t suppressed[FM_EVENT__MAX];     /* since the last one logged */
	uint64_t window_ns;
} limit = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.window_ns = (uint64_t)DAEMON_LOG_WINDOW_S * 1000000000ull,
};

void daemon_event_limit_set_window_ms(unsigned ms)
{
	pthread_mutex_lock(&limit.lock);
	limit.window_ns = ms ? (uint64_t)ms * 1000000ull
			     : (uint64_t)DAEMON_LOG_WINDOW_S * 1000000000ull;
	memset(limit.window_start_ns, 0, sizeof(limit.window_start_ns));
	memset(limit.logged, 0, sizeof(limit.logged));
	memset(limit.suppressed, 0, sizeof(limit.suppressed));
	pthread_mutex_unlock(&limit.lock);
}

static bool event_limited(enum fm_event_type t)
{
	return t == FM_EVENT_READ_ERROR || t == FM_EVENT_IO_ERROR ||
	       t == FM_EVENT_CHECKSUM_ERROR || t == FM_EVENT_READ_ERROR_CORRECTED;
}

bool daemon_event_limit_pass(enum fm_event_type t, uint64_t *ret_suppressed)
{
	uint64_t now = fm_now_ns();
	bool pass;

	*ret_suppressed = 0;
	if ((unsigned)t >= FM_EVENT__MAX || !event_limited(t))
		return true;
	pthread_mutex_lock(&limit.lock);
	if (!limit.window_start_ns[t] ||
	    now - limit.window_start_ns[t] >= limit.window_ns) {
		limit.window_start_ns[t] = now;
		limit.logged[t] = 0;
	}
	pass = limit.logged[t] < DAEMON_LOG_BURST;
	if (pass) {
		limit.logged[t]++;
		*ret_suppressed = limit.suppressed[t];
		limit.suppressed[t] = 0;
	} else {
		limit.suppressed[t]++;
	}
	pthread_mutex_unlock(&limit.lock);
	return pass;
}

void daemon_log_event(const struct fm_event *ev, const char *array_uuid,
		      const char *mountpoint, uint64_t suppressed)
{
	char lu[37], s[32], rs[32], ws[32];
	const char *leg = ev->leg_path && *ev->leg_path ? ev->leg_path : NULL;
	g_autofree char *msg = NULL;
	g_autoptr(GPtrArray) f = g_ptr_array_new_with_free_func(g_free);
	unsigned long long v = (unsigned long long)ev->value;
	const char *why = ev->err ? g_strerror(ev->err) : NULL;
	const char *detail = ev->detail && *ev->detail ? ev->detail : NULL;
	const char *mp;

	g_ptr_array_add(f, g_strdup_printf("EVENT=%s", fm_event_name(ev->type)));
	if (array_uuid && *array_uuid)
		g_ptr_array_add(f, g_strdup_printf("ARRAY_UUID=%s", array_uuid));
	/* Messages name the array by its mount point, as the others of the
	 * daemon do (the UUID is in the fields, once known). */
	if (mountpoint)
		g_ptr_array_add(f, g_strdup_printf("MOUNTPOINT=%s", mountpoint));
	else
		mountpoint = "fusemirror";
	if (ev->leg >= 0) {
		g_ptr_array_add(f, g_strdup_printf("LEG_SLOT=%d", ev->leg));
		g_ptr_array_add(f, g_strdup_printf("LEG_UUID=%s", fm_uuid_unparse(ev->leg_uuid, lu)));
		if (leg)
			g_ptr_array_add(f, g_strdup_printf("LEG=%s", leg));
	}
	if (ev->err)
		g_ptr_array_add(f, g_strdup_printf("ERRNO=%d", ev->err));
	if (ev->type == FM_EVENT_REBUILD_FINISHED || ev->type == FM_EVENT_REBUILD_INTERRUPTED ||
	    ev->type == FM_EVENT_SCRUB_FINISHED) {
		g_ptr_array_add(f, g_strdup_printf("SYNC_READ_BYTES=%llu",
						   (unsigned long long)ev->read_bytes));
		g_ptr_array_add(f, g_strdup_printf("SYNC_WRITE_BYTES=%llu",
						   (unsigned long long)ev->write_bytes));
	}
	if (!leg)
		leg = ev->leg >= 0 ? "(slot)" : "";
	mp = mountpoint;

	switch (ev->type) {
	case FM_EVENT_ASSEMBLED:
		msg = g_strdup_printf("%s: array assembled: %llu legs in sync", mp, v);
		break;
	case FM_EVENT_UNCLEAN_START:
		g_ptr_array_add(f, g_strdup_printf("RESYNC_REGIONS=%llu", v));
		msg = g_strdup_printf("%s: the array was not stopped cleanly: %llu regions "
				      "will be resynced", mp, v);
		break;
	case FM_EVENT_DEGRADED:
		msg = g_strdup_printf("%s: the array is degraded: not every leg is in sync", mp);
		break;
	case FM_EVENT_OPTIMAL:
		msg = g_strdup_printf("%s: every leg is in sync again", mp);
		break;
	case FM_EVENT_LEG_FAILED:
		msg = g_strdup_printf("%s: leg %s (slot %d) failed%s%s%s", mp, leg, ev->leg,
				      why ? " (" : "", why ? why : "", why ? ")" : "");
		why = NULL;     /* said */
		break;
	case FM_EVENT_LEG_REMOVED:
		msg = g_strdup_printf("%s: leg %s (slot %d) removed", mp, leg, ev->leg);
		break;
	case FM_EVENT_LEG_ADDED:
		msg = g_strdup_printf("%s: leg %s added in slot %d; it is rebuilt", mp, leg, ev->leg);
		break;
	case FM_EVENT_LEG_MISSING:
		msg = g_strdup_printf("%s: leg %s (slot %d) is missing: the array starts "
				      "degraded", mp, leg, ev->leg);
		break;
	case FM_EVENT_REBUILD_STARTED:
		g_ptr_array_add(f, g_strdup_printf("RESYNC_BYTES=%llu", v));
		msg = g_strdup_printf("%s: resync started: %s to copy", mp,
				      fm_format_size(ev->value, s, sizeof(s)));
		break;
	case FM_EVENT_REBUILD_FINISHED:
		g_ptr_array_add(f, g_strdup_printf("RESYNC_BYTES=%llu", v));
		msg = g_strdup_printf("%s: resync finished: %s done; %s read, %s written", mp,
				      fm_format_size(ev->value, s, sizeof(s)),
				      fm_format_size(ev->read_bytes, rs, sizeof(rs)),
				      fm_format_size(ev->write_bytes, ws, sizeof(ws)));
		break;
	case FM_EVENT_REBUILD_INTERRUPTED:
		msg = g_strdup_printf("%s: resync stopped before the end (%s read, %s written); "
				      "it resumes at the next mount", mp,
				      fm_format_size(ev->read_bytes, rs, sizeof(rs)),
				      fm_format_size(ev->write_bytes, ws, sizeof(ws)));
		break;
	case FM_EVENT_READ_ERROR:
		msg = g_strdup_printf("%s: leg %s: %s", mp, leg, detail ? detail : "a read failed");
		detail = NULL;
		break;
	case FM_EVENT_IO_ERROR:
		msg = g_strdup_printf("%s: image: %s", mp, detail ? detail : "an I/O failed");
		detail = NULL;
		break;
	case FM_EVENT_LEG_RECONNECTED:
		g_ptr_array_add(f, g_strdup_printf("RESYNC_BYTES=%llu", v));
		msg = g_strdup_printf("%s: remote leg %s (slot %d) reconnected; %s to copy (%s)",
				      mp, leg, ev->leg, fm_format_size(ev->value, s, sizeof(s)),
				      detail ? detail : "the regions written while it was away");
		detail = NULL;
		break;
	case FM_EVENT_LEG_STALE:
		msg = g_strdup_printf("%s: leg %s (slot %d) is behind the array: %s", mp, leg,
				      ev->leg, detail ? detail : v ? "rebuilt wholly"
								  : "rebuilt from the bitmap");
		detail = NULL;
		break;
	case FM_EVENT_SCRUB_STARTED:
		msg = g_strdup_printf("%s: scrub (%s) started", mp, v ? "repair" : "check");
		break;
	case FM_EVENT_SCRUB_FINISHED:
		g_ptr_array_add(f, g_strdup_printf("MISMATCHED_SECTORS=%llu", v));
		msg = g_strdup_printf("%s: scrub %s: %llu mismatched sectors; %s read, "
				      "%s written", mp,
				      ev->err == ECANCELED ? "cancelled"
				      : ev->err ? "failed" : "finished", v,
				      fm_format_size(ev->read_bytes, rs, sizeof(rs)),
				      fm_format_size(ev->write_bytes, ws, sizeof(ws)));
		if (ev->err == ECANCELED)
			why = NULL;
		break;
	case FM_EVENT_READ_ERROR_CORRECTED:
		msg = g_strdup_printf("%s: leg %s: a bad copy at byte %llu was rewritten from "
				      "another leg", mp, leg, v);
		break;
	case FM_EVENT_CHECKSUM_ERROR:
		msg = g_strdup_printf("%s: leg %s: the copy at byte %llu failed its checksum", mp, leg, v);
		break;
	case FM_EVENT_BAD_BLOCK:
		msg = g_strdup_printf("%s: leg %s: blocks from byte %llu cannot be written; they "
				      "are in its bad-block list (reads avoid them there)", mp, leg, v);
		break;
	case FM_EVENT_STOPPED:
		msg = g_strdup_printf("%s: array stopped%s", mp, v ? " cleanly" : " (not clean)");
		break;
	default:
		msg = g_strdup_printf("%s: event %s", mp, fm_event_name(ev->type));
		break;
	}
	/* The mirror's words on the cause or extent, then the errno's when
	 * the message did not give it (an event that is not an error has
	 * err 0; EILSEQ is a checksum's verdict, said by the words). */
	if (ev->err == EILSEQ)
		why = NULL;
	if (detail || why) {
		char *full = g_strdup_printf("%s%s%s%s%s%s", msg, detail ? ": " : "",
					     detail ? detail : "", why ? " (" : "",
					     why ? why : "", why ? ")" : "");

		g_free(msg);
		msg = full;
	}
	if (suppressed) {
		char *full = g_strdup_printf("%s [%llu more %s events not logged]", msg,
					     (unsigned long long)suppressed,
					     fm_event_name(ev->type));

		g_free(msg);
		msg = full;
		g_ptr_array_add(f, g_strdup_printf("SUPPRESSED=%llu",
						   (unsigned long long)suppressed));
	}
	g_ptr_array_add(f, NULL);
	fm_log_fields(event_level(ev), (const char *const *)f->pdata, "%s", msg);
}

/*----------------------------------------------------------------*/
/* start-up forwarding */

static int forward_fd = -1;     /* written under the log's lock (the hook) */

static void forward_hook(void *ctx, enum fm_log_level level, const char *msg)
{
	g_autofree char *line = NULL;

	(void)ctx;
	if (level > FM_LOG_NOTICE || forward_fd < 0)
		return;
	line = g_strdup_printf("L%d %s\n", (int)level, msg);
	/* A pipe write of at most PIPE_BUF bytes is atomic; the parent reads
	 * until the verdict, so this does not block for long. */
	if (write(forward_fd, line, strlen(line)) < 0)
		forward_fd = -1;        /* the parent is gone; keep quiet */
}

void daemon_log_forward_begin(int fd)
{
	forward_fd = fd;
	fm_log_set_hook(forward_hook, NULL);
}

void daemon_log_forward_end(void)
{
	fm_log_set_hook(NULL, NULL);
	forward_fd = -1;
}

bool daemon_log_forwarded_print(const char *line)
{
	char *end;
	long level;

	if (line[0] != 'L')
		return false;
	level = strtol(line + 1, &end, 10);
	if (end == line + 1 || *end != ' ' || level < FM_LOG_ERR || level > FM_LOG_DEBUG)
		return false;
	fprintf(stderr, "fusemirror: %s: %s\n", fm_log_level_name((enum fm_log_level)level),
		end + 1);
	return true;
}
