/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging: one line per message, to stderr (foreground and tools) or syslog
 * (daemon).  The level is read without a lock: a stale read only changes
 * whether one debug line is printed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>

#include "fusemirror/common.h"

static atomic_int log_level = -1;
static atomic_bool log_syslog;

enum fm_log_level fm_log_get_level(void)
{
	int l = atomic_load_explicit(&log_level, memory_order_relaxed);

	if (fm_unlikely(l < 0)) {
		l = getenv("FUSEMIRROR_DEBUG") ? FM_LOG_DEBUG : FM_LOG_NOTICE;
		atomic_store(&log_level, l);
	}
	return (enum fm_log_level)l;
}

void fm_log_set_level(enum fm_log_level level)
{
	atomic_store(&log_level, (int)level);
}

void fm_log_use_syslog(bool on)
{
	if (on && !atomic_load(&log_syslog))
		openlog("fusemirror", LOG_PID | LOG_CONS, LOG_DAEMON);
	atomic_store(&log_syslog, on);
}

void fm_logv(enum fm_log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = {
		[FM_LOG_ERR] = "error", [FM_LOG_WARNING] = "warning",
		[FM_LOG_NOTICE] = "notice", [FM_LOG_INFO] = "info",
		[FM_LOG_DEBUG] = "debug",
	};
	char line[1024];

	if ((int)level > (int)fm_log_get_level())
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (atomic_load_explicit(&log_syslog, memory_order_relaxed)) {
		syslog((int)level, "%s", line);
		return;
	}
	/* One fprintf so that lines from different threads do not interleave. */
	fprintf(stderr, "fusemirror: %s: %s\n", names[level], line);
}

void fm_log(enum fm_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fm_logv(level, fmt, ap);
	va_end(ap);
}

uint64_t fm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
