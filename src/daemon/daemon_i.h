/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's contacts with the outside that do not need struct daemon
 * (daemon.h): notify.c (systemd's notification protocol and watchdog) and
 * log.c (what the daemon says about the mirror's events, and where its
 * start-up messages go).
 *
 * Threading: daemon_notify() and daemon_log_event() may be called from
 * any thread; a notifier is started and stopped by the main thread.
 */
#ifndef FM_DAEMON_I_H
#define FM_DAEMON_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemirror/event.h"

/*----------------------------------------------------------------*/
/* notify.c: sd_notify(3)'s protocol, implemented here (one datagram to
 * $NOTIFY_SOCKET, a path or an abstract name "@..."), and the watchdog. */

/* True when the service manager asked for notifications ($NOTIFY_SOCKET). */
bool daemon_notify_enabled(void);

/* Send @state ("READY=1", "STATUS=...\nWATCHDOG=1", ...; newline-separated
 * assignments).  Returns 0 (also when notifications are off) or -errno. */
int daemon_notify(const char *state);

/* Fill @buf with the daemon's one-line STATUS= text.  It takes the
 * daemon's lock and asks the mirror for its state: a notifier calls it
 * every tick, and only sends WATCHDOG=1 once it has returned, so a daemon
 * stuck on its lock misses the watchdog and is restarted. */
typedef void (*daemon_status_fn)(void *ctx, char *buf, size_t len);

struct daemon_notifier;

/*
 * Start the notification thread: it first stat()s @image_path through the
 * mount (which the FUSE loop must answer: the image is served), then sends
 * READY=1 with the first STATUS=; from then on it sends STATUS= whenever
 * @status_fn's text changes (checked every second) and WATCHDOG=1 every
 * half $WATCHDOG_USEC when the watchdog is on (and $WATCHDOG_PID, if set,
 * is ours).  Returns 0 or -errno; *ret is NULL when notifications are off.
 */
int daemon_notifier_start(const char *image_path, daemon_status_fn status_fn, void *ctx,
			  struct daemon_notifier **ret);

/* Stop and free the thread (NULL is fine).  Sends nothing. */
void daemon_notifier_stop(struct daemon_notifier *n);

/*----------------------------------------------------------------*/
/* log.c */

/*
 * Log @ev of the array mounted on @mountpoint (@array_uuid: its text form,
 * NULL or "" while not yet known, during the assembly) at the level the
 * event deserves (a failed leg is an error, a degraded array a warning, a
 * finished rebuild a notice), with the journal fields EVENT=, ARRAY_UUID=,
 * MOUNTPOINT=, LEG=, LEG_SLOT=, LEG_UUID=, and per event the figures
 * (RESYNC_REGIONS=, RESYNC_BYTES=, MISMATCHED_SECTORS=, ERRNO=).  May be
 * called from the event handler (it neither blocks nor calls the mirror).
 * @suppressed: how many events of its type daemon_event_limit_pass() held
 * back before it (the message says so; 0: none).
 */
void daemon_log_event(const struct fm_event *ev, const char *array_uuid,
		      const char *mountpoint, uint64_t suppressed);

/*
 * The rate limit of the events a failing disk sends in floods (ReadError,
 * IOError, ChecksumError, ReadErrorCorrected): at most 10 of a type per
 * 10 seconds pass (log.c: DAEMON_LOG_BURST, DAEMON_LOG_WINDOW_S), the others
 * are held back
 * (counted, neither logged nor kept for `monitor`).  Whether an event of
 * type @t passes now; when it does, *@ret_suppressed is how many of its
 * type were held back since the last one that passed.  Other types always
 * pass.  Thread-safe (one lock, never held while calling out).
 */
bool daemon_event_limit_pass(enum fm_event_type t, uint64_t *ret_suppressed);
/* The limit's window in milliseconds (0: the default, 10 s), every count
 * reset: for tests, which cannot wait 10 s. */
void daemon_event_limit_set_window_ms(unsigned ms);

/*
 * Start-up forwarding: until daemon_log_forward_end(), every message at
 * notice level or above is also written to @fd (the pipe the parent of a
 * daemonized `mount` reads) as "L<level> <message>\n"; the parent prints
 * them on its stderr before it exits.  daemon_log_forward_end() stops it
 * (no call is running on return); the caller then writes its verdict.
 */
void daemon_log_forward_begin(int fd);
void daemon_log_forward_end(void);

/* The parent's side: print a forwarded line @line ("L<level> message",
 * without the newline) on stderr; false when it is not one. */
bool daemon_log_forwarded_print(const char *line);

#endif /* FM_DAEMON_I_H */
