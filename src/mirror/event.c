/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Stable event names (include/fusemirror/event.h). */
#include "fusemirror/event.h"

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
};

const char *fm_event_name(enum fm_event_type type)
{
	if ((unsigned)type >= FM_EVENT__MAX || !event_names[type])
		return "Unknown";
	return event_names[type];
}
