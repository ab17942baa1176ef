/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl internals, shared by server.c, client.c, path.c and sock.c: the
 * limits that are not part of the public contract, the GError domain, and
 * small socket helpers (deadlines, waiting for one fd, closing on scope exit).
 */
#ifndef CTL_I_H
#define CTL_I_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/ctl.h"

/*
 * GError domain of every message this module sets; the code is the
 * positive errno value that the function returns negated.
 * (Not in ctl.h because the contract was fixed before the module existed;
 * callers that need the domain include this header.)
 */
GQuark fm_ctl_error_quark(void);
#define FM_CTL_ERROR (fm_ctl_error_quark())

/* Largest reply body the server sends and the client accepts. */
#define CTL_MAX_REPLY (16u << 20)
/* Longest status line ("ERR <errno> <message>\n"); longer messages are cut. */
#define CTL_MAX_LINE 4096u
/* The server gives a client this long to send its whole request, and drops a
 * client that accepts no reply bytes for this long. */
#define CTL_IO_TIMEOUT_MS 10000
#define CTL_LISTEN_BACKLOG 16
/* Streaming commands a server may have. */
#define CTL_MAX_STREAM_CMDS 4

/* glib 2.74 has no g_autofd: close on scope exit, keeping errno. */
void ctl_closep(int *fd);
#define ctl_autofd __attribute__((cleanup(ctl_closep)))

/*
 * Fill @sa for @path.  Returns the address length, or -ENAMETOOLONG /
 * -EINVAL with @err set.
 */
int ctl_sockaddr(const char *path, struct sockaddr_un *sa, GError **err);

/* A deadline @timeout_ms from now on the monotonic clock; 0 when
 * @timeout_ms is 0 (none). */
uint64_t ctl_deadline(int timeout_ms);

/*
 * Wait until @fd reports one of @events, @wake_fd (if >= 0) becomes
 * readable, or @deadline_ns (0: none) passes.  Retries EINTR.
 * Returns 0 when @fd is ready, -ECANCELED when @wake_fd fired,
 * -ETIMEDOUT, or -errno from poll().
 */
int ctl_wait_fd(int fd, short events, int wake_fd, uint64_t deadline_ns);

#endif /* CTL_I_H */
