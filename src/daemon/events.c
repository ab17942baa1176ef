/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mirror's events, as the daemon receives them (include/fusemirror/
 * event.h): each is counted (status, Prometheus), logged, kept in a ring of
 * the DAEMON_EVENT_RING most recent ones, and sent to every `monitor`
 * subscriber as one JSON line (doc/DESIGN.md, man/fusemirror.8 MONITORING).
 *
 * Threading: daemon_events_handler() runs on whichever mirror thread made
 * the change, with the mirror's state lock held: it copies the event into
 * the ring under ev->lock, wakes the subscribers (an eventfd each, written
 * without blocking) and returns; it never sends on a socket.  Each
 * subscriber runs on its control connection's thread: it formats and sends
 * the entries from its cursor to the newest, outside ev->lock, then waits
 * on its eventfd.  A subscriber that falls more than the ring behind gets
 * an "EventsLost" line saying how many it missed.  The floods of a failing
 * disk (ReadError, IOError, ChecksumError, ReadErrorCorrected) are held
 * back before the ring as before the log (daemon_event_limit_pass(): 10 a
 * type per 10 s), counted all the same; the next one kept says how many
 * ("suppressed").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "daemon.h"
#include "daemon_i.h"
#include "fusemirror/common.h"

struct ev_entry {
	uint64_t seq;                   /* 0: empty */
	int64_t time_us;                /* CLOCK_REALTIME */
	enum fm_event_type type;
	int leg;
	char *path;                     /* the leg's path, or NULL */
	uint8_t leg_uuid[16];
	uint64_t value;
	int err;
	uint64_t read_bytes, write_bytes;       /* of a sync pass's end */
	char *detail;                   /* struct fm_event.detail, or NULL */
	uint64_t suppressed;            /* of its type held back just before it */
};

struct daemon_events {
	pthread_mutex_t lock;           /* guards everything below */
	char *mountpoint;
	char uuid[37];                  /* "" until daemon_events_set_array() */
	char *name;
	uint64_t counts[FM_EVENT__MAX];
	struct ev_entry ring[DAEMON_EVENT_RING];
	uint64_t next_seq;              /* of the next event (the first is 1) */
	int wake_fd[DAEMON_MONITORS_MAX];       /* subscribers' eventfds, or -1 */
};

struct daemon_events *daemon_events_new(const char *mountpoint)
{
	struct daemon_events *ev = g_new0(struct daemon_events, 1);

	pthread_mutex_init(&ev->lock, NULL);
	ev->mountpoint = g_strdup(mountpoint);
	ev->name = g_strdup("");
	ev->next_seq = 1;
	for (unsigned i = 0; i < DAEMON_MONITORS_MAX; i++)
		ev->wake_fd[i] = -1;
	return ev;
}

void daemon_events_free(struct daemon_events *ev)
{
	if (!ev)
		return;
	for (unsigned i = 0; i < DAEMON_EVENT_RING; i++)
		g_free(ev->ring[i].path), g_free(ev->ring[i].detail);
	pthread_mutex_destroy(&ev->lock);
	g_free(ev->mountpoint);
	g_free(ev->name);
	g_free(ev);
}

void daemon_events_set_array(struct daemon_events *ev, const uint8_t uuid[16],
			     const char *name)
{
	pthread_mutex_lock(&ev->lock);
	fm_uuid_unparse(uuid, ev->uuid);
	g_free(ev->name);
	ev->name = g_strdup(name ? name : "");
	pthread_mutex_unlock(&ev->lock);
}

void daemon_events_counts(struct daemon_events *ev, uint64_t ret[FM_EVENT__MAX])
{
	pthread_mutex_lock(&ev->lock);
	memcpy(ret, ev->counts, sizeof(ev->counts));
	pthread_mutex_unlock(&ev->lock);
}

/*----------------------------------------------------------------*/
/* Receiving */

void daemon_events_handler(void *ctx, const struct fm_event *e)
{
	struct daemon_events *ev = ctx;
	struct ev_entry *x;
	struct timespec ts;
	uint64_t one = 1;
	g_autofree char *mountpoint = NULL;
	char uuid[37];

	uint64_t suppressed;

	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&ev->lock);
	if ((unsigned)e->type < FM_EVENT__MAX)
		ev->counts[e->type]++;
	/* A flood (a failing disk) must not push the other events out of the
	 * ring: held back here, counted above, said by the next that passes. */
	if (!daemon_event_limit_pass(e->type, &suppressed)) {
		pthread_mutex_unlock(&ev->lock);
		return;
	}
	x = &ev->ring[ev->next_seq % DAEMON_EVENT_RING];
	g_free(x->path);
	g_free(x->detail);
	*x = (struct ev_entry){
		.seq = ev->next_seq++,
		.time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
		.type = e->type,
		.leg = e->leg,
		.path = g_strdup(e->leg_path),
		.value = e->value,
		.err = e->err,
		.read_bytes = e->read_bytes,
		.write_bytes = e->write_bytes,
		.detail = g_strdup(e->detail),
		.suppressed = suppressed,
	};
	memcpy(x->leg_uuid, e->leg_uuid, 16);
	for (unsigned i = 0; i < DAEMON_MONITORS_MAX; i++)
		if (ev->wake_fd[i] >= 0 && write(ev->wake_fd[i], &one, sizeof(one)) < 0)
			fm_debug("monitor wake-up: %s", g_strerror(errno));
	mountpoint = g_strdup(ev->mountpoint);
	memcpy(uuid, ev->uuid, sizeof(uuid));
	pthread_mutex_unlock(&ev->lock);
	/* The level, the words and the journal fields: log.c. */
	daemon_log_event(e, uuid, mountpoint, suppressed);
}

/*----------------------------------------------------------------*/
/* The lines sent to `monitor` */

/* "2026-12-05T05:44:08.123456Z" */
static char *format_time(int64_t time_us)
{
	time_t s = (time_t)(time_us / 1000000);
	struct tm tm;
	char buf[64];

	gmtime_r(&s, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	return g_strdup_printf("%s.%06dZ", buf, (int)(time_us % 1000000));
}

/* One event as a JSON line (newline included).  ev->lock held (for the
 * array's identity). */
static char *event_line_locked(struct daemon_events *ev, const struct ev_entry *x,
			       const char *name_override, uint64_t value_override)
{
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autofree char *time = format_time(x->time_us), *json = NULL;
	char u[37];

	json_builder_begin_object(b);
	cli_json_str(b, "time", time);
	json_builder_set_member_name(b, "seq");
	json_builder_add_int_value(b, (gint64)x->seq);
	cli_json_str(b, "event", name_override ? name_override : fm_event_name(x->type));
	json_builder_set_member_name(b, "array");
	json_builder_begin_object(b);
	cli_json_str(b, "uuid", ev->uuid[0] ? ev->uuid : NULL);
	cli_json_str(b, "name", ev->name);
	cli_json_str(b, "mountpoint", ev->mountpoint);
	json_builder_end_object(b);
	json_builder_set_member_name(b, "leg");
	if (x->leg >= 0) {
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "slot");
		json_builder_add_int_value(b, x->leg);
		cli_json_str(b, "path", x->path);
		cli_json_str(b, "uuid", fm_uuid_unparse(x->leg_uuid, u));
		json_builder_end_object(b);
	} else {
		json_builder_add_null_value(b);
	}
	json_builder_set_member_name(b, "value");
	json_builder_add_int_value(b, (gint64)(name_override ? value_override : x->value));
	cli_json_str(b, "error", x->err ? g_strerror(x->err) : NULL);
	json_builder_set_member_name(b, "errno");
	json_builder_add_int_value(b, x->err);
	if (!name_override && (x->type == FM_EVENT_REBUILD_FINISHED ||
			       x->type == FM_EVENT_REBUILD_INTERRUPTED ||
			       x->type == FM_EVENT_SCRUB_FINISHED)) {
		json_builder_set_member_name(b, "read_bytes");
		json_builder_add_int_value(b, (gint64)x->read_bytes);
		json_builder_set_member_name(b, "write_bytes");
		json_builder_add_int_value(b, (gint64)x->write_bytes);
	}
	cli_json_str(b, "detail", x->detail);
	if (!name_override && x->suppressed) {
		json_builder_set_member_name(b, "suppressed");
		json_builder_add_int_value(b, (gint64)x->suppressed);
	}
	json_builder_end_object(b);
	json = cli_json_text(b);
	return g_strconcat(json, "\n", NULL);
}

GString *daemon_events_lines(struct daemon_events *ev, uint64_t *cursor)
{
	GString *out = g_string_new(NULL);
	uint64_t oldest;

	pthread_mutex_lock(&ev->lock);
	oldest = ev->next_seq > DAEMON_EVENT_RING ? ev->next_seq - DAEMON_EVENT_RING : 1;
	if (*cursor < oldest) {
		struct ev_entry lost = { .seq = oldest - 1, .leg = -1 };
		struct timespec ts;
		g_autofree char *line = NULL;

		clock_gettime(CLOCK_REALTIME, &ts);
		lost.time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
		line = event_line_locked(ev, &lost, "EventsLost", oldest - *cursor);
		g_string_append(out, line);
		*cursor = oldest;
	}
	for (; *cursor < ev->next_seq; (*cursor)++) {
		g_autofree char *line =
			event_line_locked(ev, &ev->ring[*cursor % DAEMON_EVENT_RING], NULL, 0);

		g_string_append(out, line);
	}
	pthread_mutex_unlock(&ev->lock);
	return out;
}

/* Send what is new; false when the client is gone. */
static bool send_new(struct daemon_events *ev, struct ctl_stream *st, uint64_t *cursor)
{
	g_autoptr(GString) out = daemon_events_lines(ev, cursor);

	return !out->len || ctl_stream_send(st, out->str, out->len) == 0;
}

/* `monitor oneshot`: the array's state now, as the events that report it
 * (DegradedArray, or nothing when all is well), like mdadm --oneshot. */
static int monitor_oneshot(struct daemon *d, struct ctl_stream *st, GError **err)
{
	struct mirror_status ms;
	struct ev_entry x = { .leg = -1, .type = FM_EVENT_DEGRADED };
	struct timespec ts;
	g_autofree char *line = NULL;

	pthread_mutex_lock(&d->lock);
	if (!d->m) {
		int r = daemon_gone_locked(d, err);

		pthread_mutex_unlock(&d->lock);
		return r;
	}
	mirror_get_status(d->m, &ms);
	pthread_mutex_unlock(&d->lock);
	clock_gettime(CLOCK_REALTIME, &ts);
	x.time_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	x.value = ms.nr_in_sync;
	if (ms.degraded) {
		pthread_mutex_lock(&d->ev->lock);
		line = event_line_locked(d->ev, &x, NULL, 0);
		pthread_mutex_unlock(&d->ev->lock);
	}
	ctl_stream_send(st, line ? line : "", line ? strlen(line) : 0);
	return 0;
}

int daemon_monitor_stream(void *ctx, int argc, char **argv, uid_t peer_uid,
			  struct ctl_stream *st, GError **err)
{
	struct daemon *d = ctx;
	struct daemon_events *ev = d->ev;
	struct daemon_request rq;
	bool recent;
	int slot = -1, fd, r;
	uint64_t cursor;

	(void)peer_uid;
	r = daemon_request_parse(argc, argv, &rq, err);
	if (r < 0)
		return r;
	if (rq.oneshot)
		return monitor_oneshot(d, st, err);
	recent = rq.recent;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		g_set_error(err, FM_CLI_ERROR, -r, "monitor: eventfd: %s", g_strerror(-r));
		return r;
	}
	pthread_mutex_lock(&ev->lock);
	for (unsigned i = 0; i < DAEMON_MONITORS_MAX && slot < 0; i++)
		if (ev->wake_fd[i] < 0)
			slot = (int)i;
	if (slot >= 0)
		ev->wake_fd[slot] = fd;
	cursor = recent ? 1 : ev->next_seq;
	if (recent && ev->next_seq > DAEMON_EVENT_RING)
		cursor = ev->next_seq - DAEMON_EVENT_RING;
	pthread_mutex_unlock(&ev->lock);
	if (slot < 0) {         /* the control socket's limit is the same */
		close(fd);
		g_set_error(err, FM_CLI_ERROR, EBUSY, "monitor: %u monitors already",
			    DAEMON_MONITORS_MAX);
		return -EBUSY;
	}
	/* "OK" now: the client knows it is subscribed. */
	if (ctl_stream_send(st, "", 0) == 0) {
		for (;;) {
			uint64_t n;

			if (!send_new(ev, st, &cursor))
				break;
			r = ctl_stream_wait(st, fd, -1);
			if (r == -ECANCELED) {
				/* The daemon stops: what it said last (Stopped). */
				send_new(ev, st, &cursor);
				break;
			}
			if (r < 0)
				break;
			if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
				fm_debug("monitor: eventfd: %s", g_strerror(errno));
		}
	}
	pthread_mutex_lock(&ev->lock);
	ev->wake_fd[slot] = -1;
	pthread_mutex_unlock(&ev->lock);
	close(fd);
	return 0;
}

unsigned daemon_events_monitors(struct daemon_events *ev)
{
	unsigned n = 0;

	pthread_mutex_lock(&ev->lock);
	for (unsigned i = 0; i < DAEMON_MONITORS_MAX; i++)
		n += ev->wake_fd[i] >= 0;
	pthread_mutex_unlock(&ev->lock);
	return n;
}
