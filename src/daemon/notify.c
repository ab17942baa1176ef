/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * systemd's notification protocol (sd_notify(3)), without libsystemd: one
 * datagram of newline-separated assignments to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for an abstract socket).  The
 * service manager authenticates the sender by its credentials, which the
 * kernel attaches; nothing else is needed.
 *
 * The notifier thread is what systemd's watchdog watches: each tick it asks
 * the daemon for its status (which takes the daemon's lock and the
 * mirror's state lock), and sends WATCHDOG=1 only after that returned.  A
 * daemon deadlocked on either lock therefore misses its keep-alive, and
 * systemd kills and restarts it (WatchdogSec= in the unit).
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "daemon_i.h"
#include "fusemirror/common.h"

bool daemon_notify_enabled(void)
{
	const char *e = getenv("NOTIFY_SOCKET");

	return e && *e;
}

int daemon_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t salen;
	size_t n;
	int fd, r = 0;

	if (!path || !*path)
		return 0;
	n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n >= sizeof(sa.sun_path))
		return -EAFNOSUPPORT;   /* vsock: and the like are not supported */
	memcpy(sa.sun_path, path, n);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';  /* abstract: no terminating NUL counted */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		fm_debug("notify %s: %s", path, strerror(-r));
	return r;
}

struct daemon_notifier {
	pthread_t thread;
	char *image_path;
	daemon_status_fn status_fn;
	void *ctx;
	uint64_t watchdog_ns;           /* 0: no watchdog */
	pthread_mutex_t lock;           /* guards stop */
	pthread_cond_t cond;
	bool stop;
};

/* $WATCHDOG_USEC, when it applies to this process; 0 otherwise. */
static uint64_t watchdog_usec(void)
{
	const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	guint64 v, p;

	if (!us || !g_ascii_string_to_unsigned(us, 10, 1, G_MAXUINT64 / 1000, &v, NULL))
		return 0;
	if (pid && (!g_ascii_string_to_unsigned(pid, 10, 1, G_MAXINT, &p, NULL) ||
		    (pid_t)p != getpid()))
		return 0;
	return v;
}

/* Wait until @deadline_ns (CLOCK_MONOTONIC) or a stop; true when stopping. */
static bool notifier_wait(struct daemon_notifier *n, uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
			       .tv_nsec = (long)(deadline_ns % 1000000000ull) };
	bool stop;

	pthread_mutex_lock(&n->lock);
	while (!n->stop && fm_now_ns() < deadline_ns)
		if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT)
			break;
	stop = n->stop;
	pthread_mutex_unlock(&n->lock);
	return stop;
}

static void *notifier_thread(void *arg)
{
	struct daemon_notifier *n = arg;
	char status[512], last[512] = "";
	uint64_t tick = 1000000000ull, next_wd = 0, now;
	struct stat st;

	/* Served: this stat goes through the kernel to our FUSE loop. */
	while (stat(n->image_path, &st) < 0) {
		fm_warn("%s: not reachable through the mount yet (%s); READY=1 waits",
			n->image_path, strerror(errno));
		if (notifier_wait(n, fm_now_ns() + tick))
			return NULL;
	}
	n->status_fn(n->ctx, status, sizeof(status));
	{
		g_autofree char *msg = g_strdup_printf("READY=1\nSTATUS=%s", status);

		daemon_notify(msg);
	}
	memcpy(last, status, sizeof(last));
	if (n->watchdog_ns) {
		tick = MIN(tick, n->watchdog_ns / 2);
		next_wd = fm_now_ns();
	}
	for (;;) {
		g_autoptr(GString) msg = g_string_new(NULL);

		/* The proof of life: this takes the daemon's locks. */
		n->status_fn(n->ctx, status, sizeof(status));
		if (strcmp(status, last)) {
			g_string_append_printf(msg, "STATUS=%s", status);
			memcpy(last, status, sizeof(last));
		}
		now = fm_now_ns();
		if (n->watchdog_ns && now >= next_wd) {
			g_string_append_printf(msg, "%sWATCHDOG=1", msg->len ? "\n" : "");
			next_wd = now + n->watchdog_ns / 2;
		}
		if (msg->len)
			daemon_notify(msg->str);
		if (notifier_wait(n, now + tick))
			break;
	}
	return NULL;
}

int daemon_notifier_start(const char *image_path, daemon_status_fn status_fn, void *ctx,
			  struct daemon_notifier **ret)
{
	struct daemon_notifier *n;
	pthread_condattr_t ca;
	int r;

	*ret = NULL;
	if (!daemon_notify_enabled())
		return 0;
	n = g_new0(struct daemon_notifier, 1);
	n->image_path = g_strdup(image_path);
	n->status_fn = status_fn;
	n->ctx = ctx;
	n->watchdog_ns = watchdog_usec() * 1000ull;
	pthread_mutex_init(&n->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = fm_thread_start(&n->thread, "fm-notify", notifier_thread, n);
	if (r < 0) {
		pthread_cond_destroy(&n->cond);
		pthread_mutex_destroy(&n->lock);
		g_free(n->image_path);
		g_free(n);
		return r;
	}
	if (n->watchdog_ns)
		fm_info("systemd watchdog: a keep-alive every %llu ms",
			(unsigned long long)(n->watchdog_ns / 2000000ull));
	*ret = n;
	return 0;
}

void daemon_notifier_stop(struct daemon_notifier *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	n->stop = true;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
	pthread_join(n->thread, NULL);
	pthread_cond_destroy(&n->cond);
	pthread_mutex_destroy(&n->lock);
	g_free(n->image_path);
	g_free(n);
}
