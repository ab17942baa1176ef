/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Events (include/fusemirror/event.h): their stable names, and how the
 * mirror reports them.  Every report is made under state_lock, so reports
 * for one array are serialised and arrive in the order of the changes.
 */
#include <stdarg.h>
#include <string.h>

#include <glib.h>

#include "fusemirror/event.h"
#include "mirror_i.h"

static const char *const event_names[FM_EVENT__MAX] = {
	[FM_EVENT_ASSEMBLED] = "NewArray",
	[FM_EVENT_UNCLEAN_START] = "UncleanStart",
	[FM_EVENT_DEGRADED] = "DegradedArray",
	[FM_EVENT_OPTIMAL] = "ArrayOptimal",
	[FM_EVENT_LEG_FAILED] = "Fail",
	[FM_EVENT_LEG_REMOVED] = "Remove",
	[FM_EVENT_LEG_ADDED] = "Add",
	[FM_EVENT_LEG_MISSING] = "DeviceDisappeared",
	[FM_EVENT_REBUILD_STARTED] = "RebuildStarted",
	[FM_EVENT_REBUILD_FINISHED] = "RebuildFinished",
	[FM_EVENT_REBUILD_INTERRUPTED] = "RebuildInterrupted",
	[FM_EVENT_SCRUB_STARTED] = "ScrubStarted",
	[FM_EVENT_SCRUB_FINISHED] = "ScrubFinished",
	[FM_EVENT_READ_ERROR_CORRECTED] = "ReadErrorCorrected",
	[FM_EVENT_CHECKSUM_ERROR] = "ChecksumError",
	[FM_EVENT_STOPPED] = "Stopped",
	[FM_EVENT_WRITE_MOSTLY] = "WriteMostly",
	[FM_EVENT_BAD_BLOCK] = "BadBlock",
	[FM_EVENT_READ_ERROR] = "ReadError",
	[FM_EVENT_IO_ERROR] = "IOError",
	[FM_EVENT_LEG_STALE] = "LegStale",
	[FM_EVENT_LEG_RECONNECTED] = "LegReconnected",
};

const char *fm_event_name(enum fm_event_type type)
{
	if ((unsigned)type >= FM_EVENT__MAX || !event_names[type])
		return "Unknown";
	return event_names[type];
}

/*----------------------------------------------------------------*/
/* Reporting (mirror internals, src/mirror/mirror_i.h) */

static void event_report_locked(struct mirror *m, enum fm_event_type type, int leg,
				uint64_t value, int err, bool sync_bytes, const char *detail)
{
	struct fm_event ev = { .type = type, .leg = -1, .value = value, .err = err,
			       .detail = detail };

	fm_debug("event %s leg %d value %llu err %d%s%s", fm_event_name(type), leg,
		 (unsigned long long)value, err, detail ? ": " : "", detail ? detail : "");
	if (!m->event_fn)
		return;
	if (leg >= 0 && (unsigned)leg < FM_SB_MAX_LEGS) {
		ev.leg = leg;
		ev.leg_path = m->legs[leg].path;
		memcpy(ev.leg_uuid, m->legs[leg].uuid, 16);
	}
	if (sync_bytes) {
		ev.read_bytes = atomic_load(&m->sync_read_bytes);
		ev.write_bytes = atomic_load(&m->sync_write_bytes);
	}
	m->event_fn(m->event_ctx, &ev);
}

void mirror_event_locked(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
			 int err)
{
	event_report_locked(m, type, leg, value, err, false, NULL);
}

void mirror_event_sync_end_locked(struct mirror *m, enum fm_event_type type, uint64_t value,
				  int err)
{
	event_report_locked(m, type, -1, value, err, true, NULL);
}

void mirror_event_sync_end(struct mirror *m, enum fm_event_type type, uint64_t value, int err)
{
	pthread_mutex_lock(&m->state_lock);
	mirror_event_sync_end_locked(m, type, value, err);
	pthread_mutex_unlock(&m->state_lock);
}

void mirror_event_sync_end_detail(struct mirror *m, enum fm_event_type type, uint64_t value,
				  int err, const char *detail)
{
	pthread_mutex_lock(&m->state_lock);
	event_report_locked(m, type, -1, value, err, true, detail);
	pthread_mutex_unlock(&m->state_lock);
}

void mirror_event(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
		  int err)
{
	pthread_mutex_lock(&m->state_lock);
	mirror_event_locked(m, type, leg, value, err);
	pthread_mutex_unlock(&m->state_lock);
}

void mirror_event_detail_locked(struct mirror *m, enum fm_event_type type, int leg,
				uint64_t value, int err, const char *fmt, ...)
{
	g_autofree char *detail = NULL;
	va_list ap;

	va_start(ap, fmt);
	detail = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	event_report_locked(m, type, leg, value, err, false, detail);
}

void mirror_event_detail(struct mirror *m, enum fm_event_type type, int leg, uint64_t value,
			 int err, const char *fmt, ...)
{
	g_autofree char *detail = NULL;
	va_list ap;

	va_start(ap, fmt);
	detail = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&m->state_lock);
	event_report_locked(m, type, leg, value, err, false, detail);
	pthread_mutex_unlock(&m->state_lock);
}

void mirror_event_degraded_locked(struct mirror *m)
{
	bool degraded = mirror_degraded_locked(m);

	if (degraded == m->ev_degraded)
		return;
	m->ev_degraded = degraded;
	mirror_event_locked(m, degraded ? FM_EVENT_DEGRADED : FM_EVENT_OPTIMAL, -1,
			    mirror_in_sync_count(m), 0);
}
