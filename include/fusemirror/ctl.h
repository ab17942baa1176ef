/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The control socket: how `fusemirror status|umount|...` talk to a running
 * daemon.  One AF_UNIX stream socket per mount, in FM_CTL_DIR, named after
 * the mount point, reachable by root only (the directory is 0700, and every
 * peer's credentials are checked with SO_PEERCRED).
 *
 * Wire protocol (one request per connection):
 *   request   the words of a command, each terminated by a NUL byte, then
 *             the client shuts down its writing side.  At most
 *             FM_CTL_MAX_REQUEST bytes and FM_CTL_MAX_ARGS words.
 *   reply     one line, "OK\n" or "ERR <errno> <message>\n", then the body
 *             (free text or JSON, as the command defines) until the daemon
 *             closes the connection.
 * A malformed request gets "ERR 22 ..." and never reaches the handler.
 *
 * Streaming commands (`monitor`): the reply is "OK\n" (or "ERR ...") and
 * then lines sent as things happen, until either side closes.  The daemon
 * serves at most `max` connections of each such command at a time (more
 * get "ERR 16 ..."), so that they never take every connection slot; a
 * client that takes no bytes for CTL_IO_TIMEOUT_MS is dropped.
 *
 * Threading: the server runs its own thread; it calls the handler on a
 * thread of its own for each connection (at most FM_CTL_MAX_CLIENTS at a
 * time; more wait in the listen backlog), so the handler must be
 * thread-safe and may block (a handler for "wait for the daemon to stop"
 * may take long).  ctl_call() is synchronous and may be called from any
 * thread.
 */
#ifndef FUSEMIRROR_CTL_H
#define FUSEMIRROR_CTL_H

#include <stdbool.h>
#include <sys/types.h>

#include <glib.h>

#define FM_CTL_DIR "/run/fusemirror"
#define FM_CTL_MAX_REQUEST 65536
#define FM_CTL_MAX_ARGS 64
#define FM_CTL_MAX_CLIENTS 16

/*
 * A command handler.  @argv[0] is the command word; @argc >= 1.  Append the
 * reply body to @out.  Return 0 for success, or -errno and set @err to a
 * message that names the thing and the cause (sent as "ERR <errno> <msg>").
 * @peer_uid is the caller's uid (already checked against the policy).
 */
typedef int (*ctl_handler_fn)(void *ctx, int argc, char **argv, uid_t peer_uid,
			      GString *out, GError **err);

struct ctl_server;
struct ctl_stream;

/*
 * A streaming command's handler: runs on the connection's thread for as
 * long as the stream lasts.  It sends with ctl_stream_send() (the first
 * call sends "OK\n" first) and waits with ctl_stream_wait(); it returns
 * when the client went away or the server stops (0), or -errno with @err
 * set: sent as "ERR" when nothing was sent yet.
 */
typedef int (*ctl_stream_fn)(void *ctx, int argc, char **argv, uid_t peer_uid,
			     struct ctl_stream *stream, GError **err);

struct ctl_stream_cmd {
	const char *word;               /* the command word; NULL ends a table */
	ctl_stream_fn fn;
	unsigned max;                   /* connections at once (< FM_CTL_MAX_CLIENTS) */
};

/* Send @len bytes on @stream ("OK\n" first, once).  0, or -EPIPE when the
 * client went away (or took nothing for too long): stop then. */
int ctl_stream_send(struct ctl_stream *stream, const char *data, size_t len);

/*
 * Wait until @fd (if >= 0) is readable (returns 1), the client closes the
 * connection (-EPIPE), the server stops (-ECANCELED), or @timeout_ms
 * (< 0: none) passes (0).
 */
int ctl_stream_wait(struct ctl_stream *stream, int fd, int timeout_ms);

/*
 * Listen on @path (creating FM_CTL_DIR-style parent directories 0700; a
 * stale socket nobody listens on is replaced, a live one is -EADDRINUSE).
 * Only uid 0 and the daemon's own effective uid are served; others get
 * "ERR 1 permission denied".  Returns 0 or -errno with @err set.
 */
int ctl_server_start(const char *path, ctl_handler_fn handler, void *ctx,
		     struct ctl_server **ret_server, GError **err);

/* ctl_server_start(), and the streaming commands of @streams (a table
 * ended by a NULL word, used by reference until ctl_server_stop()); their
 * words never reach @handler. */
int ctl_server_start_full(const char *path, ctl_handler_fn handler,
			  const struct ctl_stream_cmd *streams, void *ctx,
			  struct ctl_server **ret_server, GError **err);

/*
 * Stop accepting, wait for the handlers running now to finish, unlink the
 * socket and free the server.  Accepts NULL.  Must not be called from a
 * handler.
 */
void ctl_server_stop(struct ctl_server *server);

/*
 * Send @argv (NULL-terminated) to the daemon at @path and collect the
 * reply body into @out.  Returns 0 on "OK"; the daemon's -errno on "ERR",
 * with @err set to its message; -errno with @err set when the daemon cannot
 * be reached (-ENOENT / -ECONNREFUSED: no daemon) or the reply is malformed
 * (-EPROTO).  @timeout_ms bounds the whole exchange (0: no limit).
 */
int ctl_call(const char *path, const char *const *argv, int timeout_ms,
	     GString *out, GError **err);

/*
 * The socket path of the daemon serving @mountpoint: FM_CTL_DIR/<hex>.sock,
 * where <hex> is a hash of the mount point's canonical path, so any
 * spelling of the same mount point finds the same daemon.  @mountpoint
 * must exist.  Returns a newly allocated string, or NULL with @err set.
 */
char *ctl_socket_path(const char *mountpoint, GError **err);

/*
 * Send the streaming command @argv to the daemon at @path and read its
 * status line (within @timeout_ms; 0: no limit).  Returns the connected
 * fd (the caller reads the stream's lines from it until EOF, then closes
 * it); the daemon's -errno on "ERR" and -errno when it cannot be reached,
 * each with @err set, as ctl_call().
 */
int ctl_stream_open(const char *path, const char *const *argv, int timeout_ms, GError **err);

/*
 * The canonical path of @mountpoint that ctl_socket_path() hashes (the
 * one the kernel shows in /proc/self/mountinfo), found without calling
 * into a file system mounted there (safe on a dead FUSE mount).  Returns
 * a newly allocated string, or NULL with @err set.
 */
char *ctl_canonical_mountpoint(const char *mountpoint, GError **err);

#endif /* FUSEMIRROR_CTL_H */
