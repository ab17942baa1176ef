/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers shared by the server and the client: the error domain, socket
 * addresses, deadlines and waiting for an fd.  Stateless.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "ctl_i.h"

G_DEFINE_QUARK(fm-ctl-error-quark, fm_ctl_error)

void ctl_closep(int *fd)
{
	if (*fd >= 0) {
		int e = errno;

		close(*fd);
		errno = e;
		*fd = -1;
	}
}

int ctl_sockaddr(const char *path, struct sockaddr_un *sa, GError **err)
{
	size_t len;

	if (!path || !*path) {
		g_set_error(err, FM_CTL_ERROR, EINVAL, "empty control socket path");
		return -EINVAL;
	}
	len = strlen(path);
	if (len >= sizeof(sa->sun_path)) {
		g_set_error(err, FM_CTL_ERROR, ENAMETOOLONG,
			    "control socket path %s is too long (%zu bytes, at most %zu)",
			    path, len, sizeof(sa->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, len + 1);
	return (int)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

uint64_t ctl_deadline(int timeout_ms)
{
	if (timeout_ms <= 0)
		return 0;
	return fm_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

int ctl_wait_fd(int fd, short events, int wake_fd, uint64_t deadline_ns)
{
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = fd, .events = events },
			{ .fd = wake_fd, .events = POLLIN },
		};
		int timeout = -1;
		int n;

		if (deadline_ns) {
			uint64_t now = fm_now_ns();

			if (now >= deadline_ns)
				return -ETIMEDOUT;
			/* Round up: never wake just before the deadline. */
			timeout = (int)MIN((deadline_ns - now + 999999) / 1000000, (uint64_t)INT_MAX);
		}
		n = poll(pfd, wake_fd >= 0 ? 2 : 1, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (wake_fd >= 0 && pfd[1].revents)
			return -ECANCELED;
		/* Errors and hang-ups count as ready: the next call reports them. */
		if (pfd[0].revents)
			return 0;
		/* n == 0: loop to re-check the deadline (poll may return early). */
	}
}
