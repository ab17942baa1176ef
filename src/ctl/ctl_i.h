/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ctl internals, shared by server.c, client.c, path.c and sock.c: the
 * limits that are not part of the public contract, the GError domain, and
 * small socket helpers (deadlines, waiting for one fd, closing on scope exit).
 */
#ifndef CTL_I_H
#define CTL_I_H

#include <stdbool.h>
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

/*
 * The two parsers of untrusted bytes, pure functions (tests/fuzz/ drives
 * them directly):
 *
 * ctl_parse_request: split the request @buf (@len bytes as received) into
 * words.  Returns the word count, with @argv (FM_CTL_MAX_ARGS + 1 slots)
 * filled and NULL-terminated (pointers into @buf), or -EINVAL with a
 * reason in *why: empty, no NUL after the last word, too many words, a
 * word that is not UTF-8, an empty command word.
 *
 * ctl_parse_reply: read the reply @data (@len bytes, not NUL-terminated)
 * to the command @verb sent to @path.  "OK\n" then the body: 0, and the body
 * appended to @out (may be NULL).  "ERR <errno> <message>\n": -errno with
 * @err set to the message.  Anything else: -EPROTO (or -EPIPE when
 * @send_failed and no status line came) with @err naming @path and @verb.
 */
int ctl_parse_request(char *buf, size_t len, char **argv, const char **why);
int ctl_parse_reply(const char *data, size_t len, const char *path, const char *verb,
		    bool send_failed, GString *out, GError **err);

#endif /* CTL_I_H */
