/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon side of the control socket.
 *
 * Threads: one accept thread, and one connection thread per accepted
 * connection, each owning one of FM_CTL_MAX_CLIENTS slots.  The accept
 * thread accepts only while a slot is free, so extra clients wait in the
 * listen backlog (and then in connect()); a peer that fails the credential
 * check is answered by the accept thread and never takes a slot.
 *
 * Slots: FREE -> RUNNING (accept thread, when it starts a connection
 * thread) -> DONE (the connection thread, as the last thing it does: after
 * that it touches nothing of the server) -> FREE (whoever joins the thread:
 * the accept thread when it needs a slot, or ctl_server_stop()).  So every
 * thread is joined exactly once and none outlives the server.
 *
 * Stopping: `stopping` wakes the accept thread out of a slot wait; the
 * eventfd wakes it out of poll() and wakes every connection thread that is
 * still reading its request (those answer "ERR 108" and never run the
 * handler).  The eventfd is never read, so it stays readable.  Replies are
 * still written after stop began: the handler that asked the daemon to stop
 * must be able to say OK.
 *
 * Bounds: FM_CTL_MAX_CLIENTS connection threads with a request buffer of
 * FM_CTL_MAX_REQUEST + 1 bytes each; a whole request must arrive within
 * CTL_IO_TIMEOUT_MS; a client that takes no reply bytes for that long is
 * dropped; a reply body over CTL_MAX_REPLY becomes an error.  A streaming
 * command keeps its connection thread (and request buffer) while it lasts:
 * each has its own limit, below FM_CTL_MAX_CLIENTS, so that one-shot
 * commands always find a slot.
 */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ctl_i.h"

/* State of one connection slot. */
enum ctl_slot_state {
	CTL_SLOT_FREE,    /* no thread */
	CTL_SLOT_RUNNING, /* a connection thread serves a client in this slot */
	CTL_SLOT_DONE,    /* that thread has finished; join it before reuse */
};

struct ctl_conn {
	struct ctl_server *server;
	pthread_t thread;          /* valid unless FREE */
	enum ctl_slot_state state; /* under server->lock */
	int fd;                    /* the connection; owned by the thread */
	uid_t uid;                 /* the peer's, already checked */
};

struct ctl_server {
	char *path;
	dev_t sock_dev;     /* identity of the socket file we bound, so that */
	ino_t sock_ino;     /* stop never unlinks another daemon's socket */
	int listen_fd;
	int wake_fd;        /* eventfd, written once by ctl_server_stop() */
	uid_t euid;         /* besides root, the only uid served */
	ctl_handler_fn handler;
	const struct ctl_stream_cmd *streams;   /* NULL, or a table ended by word NULL */
	void *ctx;
	pthread_t accept_thread;

	/* pthread, not GMutex: ThreadSanitizer does not see glib's futexes. */
	pthread_mutex_t lock;   /* guards stopping and slots[].state */
	pthread_cond_t slot_freed; /* a slot became DONE, or stopping was set */
	bool stopping;
	struct ctl_conn slots[FM_CTL_MAX_CLIENTS];
	unsigned streaming[CTL_MAX_STREAM_CMDS];   /* connections of each stream command */
};

struct ctl_stream {
	struct ctl_server *server;
	int fd;
	bool started;              /* "OK\n" sent */
	bool broken;               /* a send failed: the client is gone */
};

/*----------------------------------------------------------------*/
/* Writing replies */

/* Send every byte of @iov, waiting at most CTL_IO_TIMEOUT_MS for each bit
 * of progress.  Returns 0 or -errno. */
static int send_all(int fd, struct iovec *iov, int iovcnt)
{
	while (iovcnt > 0) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			int r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = ctl_wait_fd(fd, POLLOUT, -1, ctl_deadline(CTL_IO_TIMEOUT_MS));
			if (r < 0)
				return r;
			continue;
		}
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* "ERR <code> <msg>\n" on one line of at most CTL_MAX_LINE bytes. */
static int send_err(int fd, int code, const char *msg)
{
	GString *line = g_string_sized_new(128);
	const char *end = NULL;
	struct iovec iov;
	int r;

	g_string_append_printf(line, "ERR %d ", code);
	/* Cut at a character boundary (when the message is UTF-8 at all). */
	if (strlen(msg) > CTL_MAX_LINE - line->len - 1) {
		g_utf8_validate(msg, (gssize)(CTL_MAX_LINE - line->len - 1), &end);
		g_string_append_len(line, msg, end - msg);
	} else {
		g_string_append(line, msg);
	}
	for (char *c = line->str; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	g_string_append_c(line, '\n');
	iov = (struct iovec){ .iov_base = line->str, .iov_len = line->len };
	r = send_all(fd, &iov, 1);
	g_string_free(line, TRUE);
	return r;
}

/*----------------------------------------------------------------*/
/* Reading requests */

/*
 * Read the request: every byte until the client shuts down its side, within
 * CTL_IO_TIMEOUT_MS.  Returns its length, -E2BIG when it is longer than
 * FM_CTL_MAX_REQUEST, -ECANCELED when the server is stopping, -ETIMEDOUT,
 * or -errno.
 */
static ssize_t read_request(int fd, int wake_fd, char *buf)
{
	uint64_t deadline = ctl_deadline(CTL_IO_TIMEOUT_MS);
	size_t len = 0;

	for (;;) {
		/* One byte more than allowed: the way to notice a long one. */
		ssize_t n = recv(fd, buf + len, FM_CTL_MAX_REQUEST + 1 - len, MSG_DONTWAIT);

		if (n == 0)
			return (ssize_t)len;
		if (n > 0) {
			len += (size_t)n;
			if (len > FM_CTL_MAX_REQUEST)
				return -E2BIG;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		n = ctl_wait_fd(fd, POLLIN, wake_fd, deadline);
		if (n < 0)
			return n;
	}
}

int ctl_parse_request(char *buf, size_t len, char **argv, const char **why)
{
	int argc = 0;

	if (len == 0) {
		*why = "empty request";
		return -EINVAL;
	}
	if (buf[len - 1] != '\0') {
		*why = "no NUL after the last word";
		return -EINVAL;
	}
	for (size_t off = 0; off < len; off += strlen(buf + off) + 1) {
		size_t wlen = strlen(buf + off);

		if (argc == FM_CTL_MAX_ARGS) {
			*why = "more than " G_STRINGIFY(FM_CTL_MAX_ARGS) " words";
			return -EINVAL;
		}
		if (!g_utf8_validate(buf + off, (gssize)wlen, NULL)) {
			*why = "a word is not valid UTF-8";
			return -EINVAL;
		}
		argv[argc++] = buf + off;
	}
	if (!argv[0][0]) {
		*why = "empty command word";
		return -EINVAL;
	}
	argv[argc] = NULL;
	return argc;
}

/*----------------------------------------------------------------*/
/* Streaming commands */

int ctl_stream_send(struct ctl_stream *st, const char *data, size_t len)
{
	struct iovec iov[2];
	int n = 0, r;

	if (st->broken)
		return -EPIPE;
	if (!st->started)
		iov[n++] = (struct iovec){ .iov_base = (char *)"OK\n", .iov_len = 3 };
	iov[n++] = (struct iovec){ .iov_base = (char *)data, .iov_len = len };
	st->started = true;
	r = send_all(st->fd, iov, n);
	if (r < 0) {
		fm_debug("ctl %s: stream: %s", st->server->path, g_strerror(-r));
		st->broken = true;
		return -EPIPE;
	}
	return 0;
}

int ctl_stream_wait(struct ctl_stream *st, int fd, int timeout_ms)
{
	/* The client shut its writing side down after the request, so the
	 * connection always reads EOF: only POLLHUP says it went away. */
	struct pollfd pfd[3] = {
		{ .fd = st->fd, .events = 0 },
		{ .fd = st->server->wake_fd, .events = POLLIN },
		{ .fd = fd, .events = POLLIN },
	};

	for (;;) {
		int n = poll(pfd, fd >= 0 ? 3 : 2, timeout_ms);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		if (pfd[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
			st->broken = true;
			return -EPIPE;
		}
		if (pfd[1].revents)
			return -ECANCELED;
		return 1;
	}
}

/* The stream command @argv[0] names, or -1. */
static int stream_index(struct ctl_server *s, const char *word)
{
	for (int i = 0; s->streams && s->streams[i].word; i++)
		if (!strcmp(s->streams[i].word, word))
			return i;
	return -1;
}

static void serve_stream(struct ctl_conn *conn, int idx, int argc, char **argv)
{
	struct ctl_server *s = conn->server;
	const struct ctl_stream_cmd *cmd = &s->streams[idx];
	struct ctl_stream st = { .server = s, .fd = conn->fd };
	g_autoptr(GError) error = NULL;
	bool full;
	int r;

	pthread_mutex_lock(&s->lock);
	full = s->streaming[idx] >= cmd->max;
	if (!full)
		s->streaming[idx]++;
	pthread_mutex_unlock(&s->lock);
	if (full) {
		g_autofree char *msg = g_strdup_printf(
			"%s: %u connections already, the most the daemon serves at once",
			cmd->word, cmd->max);

		send_err(conn->fd, EBUSY, msg);
		return;
	}
	r = cmd->fn(s->ctx, argc, argv, conn->uid, &st, &error);
	if (r < 0 && !st.started) {
		int code = r >= -4095 ? -r : EIO;

		send_err(conn->fd, code, error ? error->message : g_strerror(code));
	}
	pthread_mutex_lock(&s->lock);
	s->streaming[idx]--;
	pthread_mutex_unlock(&s->lock);
}

/*----------------------------------------------------------------*/
/* Connection threads */

static void serve(struct ctl_conn *conn, char *buf)
{
	struct ctl_server *s = conn->server;
	char *argv[FM_CTL_MAX_ARGS + 1];
	g_autoptr(GString) out = NULL;
	g_autoptr(GError) error = NULL;
	const char *why = NULL;
	ssize_t len;
	int argc, r;

	len = read_request(conn->fd, s->wake_fd, buf);
	if (len == -E2BIG) {
		send_err(conn->fd, E2BIG, "request too long (more than "
			 G_STRINGIFY(FM_CTL_MAX_REQUEST) " bytes)");
		return;
	}
	if (len == -ECANCELED) {
		send_err(conn->fd, ESHUTDOWN, "the daemon is shutting down");
		return;
	}
	if (len == -ETIMEDOUT) {
		send_err(conn->fd, ETIMEDOUT, "request not received within "
			 G_STRINGIFY(CTL_IO_TIMEOUT_MS) " ms");
		return;
	}
	if (len < 0) {
		fm_debug("ctl %s: reading a request: %s", s->path, g_strerror((int)-len));
		return;
	}
	argc = ctl_parse_request(buf, (size_t)len, argv, &why);
	if (argc < 0) {
		g_autofree char *msg = g_strdup_printf("malformed request: %s", why);

		send_err(conn->fd, EINVAL, msg);
		return;
	}

	r = stream_index(s, argv[0]);
	if (r >= 0) {
		serve_stream(conn, r, argc, argv);
		return;
	}
	out = g_string_new(NULL);
	r = s->handler(s->ctx, argc, argv, conn->uid, out, &error);
	if (r < 0) {
		/* -errno, so 1..4095; anything else is a handler bug. */
		int code = r >= -4095 ? -r : EIO;

		send_err(conn->fd, code, error ? error->message : g_strerror(code));
		return;
	}
	if (out->len > CTL_MAX_REPLY) {
		g_autofree char *msg = g_strdup_printf(
			"%s: reply of %zu bytes exceeds the limit of %u bytes", argv[0],
			out->len, CTL_MAX_REPLY);

		send_err(conn->fd, EMSGSIZE, msg);
		return;
	}
	r = send_all(conn->fd, (struct iovec[]){
				       { .iov_base = (char *)"OK\n", .iov_len = 3 },
				       { .iov_base = out->str, .iov_len = out->len },
			       }, 2);
	if (r < 0)
		fm_debug("ctl %s: %s: sending the reply: %s", s->path, argv[0], g_strerror(-r));
}

static void *conn_thread(void *arg)
{
	struct ctl_conn *conn = arg;
	struct ctl_server *s = conn->server;
	char *buf = g_malloc(FM_CTL_MAX_REQUEST + 1);

	serve(conn, buf);
	g_free(buf);
	close(conn->fd);
	conn->fd = -1;

	pthread_mutex_lock(&s->lock);
	conn->state = CTL_SLOT_DONE;
	pthread_cond_broadcast(&s->slot_freed);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/*----------------------------------------------------------------*/
/* The accept thread */

/* A free slot (DONE ones joined first), or NULL when stopping. */
static struct ctl_conn *wait_for_slot(struct ctl_server *s)
{
	struct ctl_conn *conn = NULL;
	bool stopping;

	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		for (unsigned i = 0; i < FM_CTL_MAX_CLIENTS; i++) {
			struct ctl_conn *c = &s->slots[i];

			/* A DONE thread takes no lock again: joining it
			 * under the lock cannot deadlock. */
			if (c->state == CTL_SLOT_DONE) {
				pthread_join(c->thread, NULL);
				c->state = CTL_SLOT_FREE;
			}
			if (c->state == CTL_SLOT_FREE && !conn)
				conn = c;
		}
		if (conn)
			break;
		pthread_cond_wait(&s->slot_freed, &s->lock);
	}
	stopping = s->stopping;
	pthread_mutex_unlock(&s->lock);
	return stopping ? NULL : conn;
}

/* Pause after a resource error so a pending connection that cannot be
 * accepted does not spin this thread; returns false when stopping. */
static bool back_off(struct ctl_server *s)
{
	return ctl_wait_fd(s->wake_fd, POLLIN, -1, ctl_deadline(100)) != 0;
}

static bool peer_allowed(struct ctl_server *s, int fd, uid_t *ret_uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		fm_debug("ctl %s: SO_PEERCRED: %s", s->path, g_strerror(errno));
		return false;
	}
	if (cred.uid != 0 && cred.uid != s->euid) {
		fm_debug("ctl %s: refused pid %d uid %u", s->path, (int)cred.pid,
			 (unsigned)cred.uid);
		return false;
	}
	*ret_uid = cred.uid;
	return true;
}

static void *accept_thread(void *arg)
{
	struct ctl_server *s = arg;

	for (;;) {
		struct ctl_conn *conn = wait_for_slot(s);
		uid_t uid;
		int fd, r;

		if (!conn)
			break;
		r = ctl_wait_fd(s->listen_fd, POLLIN, s->wake_fd, 0);
		if (r == -ECANCELED)
			break;
		if (r < 0) {
			fm_debug("ctl %s: poll: %s", s->path, g_strerror(-r));
			if (!back_off(s))
				break;
			continue;
		}
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;

			if (e == EAGAIN || e == EINTR || e == ECONNABORTED)
				continue;
			fm_debug("ctl %s: accept: %s", s->path, g_strerror(e));
			if (!back_off(s))
				break;
			continue;
		}
		if (!peer_allowed(s, fd, &uid)) {
			/* A fresh socket has room for one line: no waiting. */
			static const char msg[] = "ERR 1 permission denied\n";

			if (send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				fm_debug("ctl %s: refusing a peer: %s", s->path, g_strerror(errno));
			close(fd);
			continue;
		}

		conn->fd = fd;
		conn->uid = uid;
		/* Only this thread moves a slot out of FREE: no lock needed to
		 * fill it, but the state change must be seen by stop. */
		pthread_mutex_lock(&s->lock);
		r = fm_thread_start(&conn->thread, "fm-ctl-conn", conn_thread, conn);
		if (r == 0)
			conn->state = CTL_SLOT_RUNNING;
		pthread_mutex_unlock(&s->lock);
		if (r != 0) {
			g_autofree char *m = g_strdup_printf("cannot start a thread: %s",
							     g_strerror(-r));

			fm_debug("ctl %s: %s", s->path, m);
			send_err(fd, r, m);
			close(fd);
			conn->fd = -1;
		}
	}
	return NULL;
}

/*----------------------------------------------------------------*/
/* Starting and stopping */

/* Unlink @s->path if it is still the socket we bound. */
static void unlink_if_ours(struct ctl_server *s)
{
	struct stat st;

	if (lstat(s->path, &st) < 0)
		return;
	if (!S_ISSOCK(st.st_mode) || st.st_dev != s->sock_dev || st.st_ino != s->sock_ino) {
		fm_debug("ctl %s: replaced by another file; left alone", s->path);
		return;
	}
	if (unlink(s->path) < 0)
		fm_debug("ctl %s: unlink: %s", s->path, g_strerror(errno));
}

/*
 * @path exists (bind said EADDRINUSE).  Returns 0 when it was a stale socket
 * and is gone now, -EADDRINUSE when a server answers on it, -EEXIST when it
 * is not a socket, or -errno; @err set on failure.
 */
static int remove_stale(const char *path, const struct sockaddr_un *sa, int salen,
			GError **err)
{
	ctl_autofd int probe = -1;
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0; /* gone meanwhile */
		g_set_error(err, FM_CTL_ERROR, errno, "control socket %s: %s", path,
			    g_strerror(errno));
		return -errno;
	}
	if (!S_ISSOCK(st.st_mode)) {
		g_set_error(err, FM_CTL_ERROR, EEXIST,
			    "control socket %s: exists and is not a socket", path);
		return -EEXIST;
	}
	/* Non-blocking: a live server with a full backlog says EAGAIN. */
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0) {
		g_set_error(err, FM_CTL_ERROR, errno, "socket: %s", g_strerror(errno));
		return -errno;
	}
	if (connect(probe, (const struct sockaddr *)sa, (socklen_t)salen) == 0 ||
	    errno == EAGAIN || errno == EINPROGRESS) {
		g_set_error(err, FM_CTL_ERROR, EADDRINUSE,
			    "control socket %s is in use by another daemon", path);
		return -EADDRINUSE;
	}
	if (errno != ECONNREFUSED && errno != ENOENT) {
		g_set_error(err, FM_CTL_ERROR, errno, "control socket %s: connect: %s", path,
			    g_strerror(errno));
		return -errno;
	}
	fm_debug("ctl %s: replacing a stale socket", path);
	if (unlink(path) < 0 && errno != ENOENT) {
		g_set_error(err, FM_CTL_ERROR, errno,
			    "control socket %s: cannot remove the stale socket: %s", path,
			    g_strerror(errno));
		return -errno;
	}
	return 0;
}

static int bind_socket(struct ctl_server *s, GError **err)
{
	struct sockaddr_un sa;
	g_autofree char *dir = NULL;
	struct stat st;
	int salen, r;

	salen = ctl_sockaddr(s->path, &sa, err);
	if (salen < 0)
		return salen;
	dir = g_path_get_dirname(s->path);
	if (g_mkdir_with_parents(dir, 0700) < 0) {
		int e = errno;

		g_set_error(err, FM_CTL_ERROR, e, "control socket directory %s: %s", dir,
			    g_strerror(e));
		return -e;
	}
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->listen_fd < 0) {
		g_set_error(err, FM_CTL_ERROR, errno, "socket: %s", g_strerror(errno));
		return -errno;
	}
	/* Twice at most: once more after removing a stale socket. */
	for (int attempt = 0;; attempt++) {
		if (bind(s->listen_fd, (struct sockaddr *)&sa, (socklen_t)salen) == 0)
			break;
		if (errno != EADDRINUSE || attempt > 0) {
			g_set_error(err, FM_CTL_ERROR, errno, "control socket %s: bind: %s",
				    s->path, g_strerror(errno));
			return -errno;
		}
		r = remove_stale(s->path, &sa, salen, err);
		if (r < 0)
			return r;
	}
	if (lstat(s->path, &st) < 0) {
		g_set_error(err, FM_CTL_ERROR, errno, "control socket %s: %s", s->path,
			    g_strerror(errno));
		return -errno;
	}
	s->sock_dev = st.st_dev;
	s->sock_ino = st.st_ino;
	/* Between bind and chmod the umask decides; SO_PEERCRED still guards. */
	if (chmod(s->path, 0600) < 0 || listen(s->listen_fd, CTL_LISTEN_BACKLOG) < 0) {
		int e = errno;

		g_set_error(err, FM_CTL_ERROR, e, "control socket %s: %s", s->path,
			    g_strerror(e));
		unlink_if_ours(s);
		return -e;
	}
	return 0;
}

static void server_free(struct ctl_server *s)
{
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->slot_freed);
	g_free(s->path);
	g_free(s);
}

int ctl_server_start(const char *path, ctl_handler_fn handler, void *ctx,
		     struct ctl_server **ret_server, GError **err)
{
	return ctl_server_start_full(path, handler, NULL, ctx, ret_server, err);
}

int ctl_server_start_full(const char *path, ctl_handler_fn handler,
			  const struct ctl_stream_cmd *streams, void *ctx,
			  struct ctl_server **ret_server, GError **err)
{
	struct ctl_server *s;
	int r;

	assert(handler && ret_server);
	for (unsigned i = 0; streams && streams[i].word; i++)
		assert(i < CTL_MAX_STREAM_CMDS && streams[i].fn &&
		       streams[i].max < FM_CTL_MAX_CLIENTS);
	s = g_new0(struct ctl_server, 1);
	s->path = g_strdup(path);
	s->listen_fd = -1;
	s->handler = handler;
	s->streams = streams;
	s->ctx = ctx;
	s->euid = geteuid();
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->slot_freed, NULL);
	for (unsigned i = 0; i < FM_CTL_MAX_CLIENTS; i++)
		s->slots[i] = (struct ctl_conn){ .server = s, .fd = -1 };

	s->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (s->wake_fd < 0) {
		r = -errno;
		g_set_error(err, FM_CTL_ERROR, -r, "eventfd: %s", g_strerror(-r));
		goto fail;
	}
	r = bind_socket(s, err);
	if (r < 0)
		goto fail;

	r = fm_thread_start(&s->accept_thread, "fm-ctl", accept_thread, s);
	if (r < 0) {
		g_set_error(err, FM_CTL_ERROR, -r, "control socket %s: cannot start a thread: %s",
			    s->path, g_strerror(-r));
		unlink_if_ours(s);
		goto fail;
	}
	fm_debug("ctl %s: listening", s->path);
	*ret_server = s;
	return 0;

fail:
	server_free(s);
	return r;
}

void ctl_server_stop(struct ctl_server *s)
{
	uint64_t one = 1;
	bool joining[FM_CTL_MAX_CLIENTS];

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->slot_freed);
	pthread_mutex_unlock(&s->lock);
	while (write(s->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(s->accept_thread, NULL);

	/* Unlink while we still hold the listener: until then nobody can
	 * have taken the path over in good faith (they would have found us
	 * alive).  The inode check covers anyone who removed it by force. */
	unlink_if_ours(s);
	close(s->listen_fd);
	s->listen_fd = -1;

	/* No new slot can become RUNNING now: the accept thread is gone. */
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < FM_CTL_MAX_CLIENTS; i++)
		joining[i] = s->slots[i].state != CTL_SLOT_FREE;
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < FM_CTL_MAX_CLIENTS; i++)
		if (joining[i])
			pthread_join(s->slots[i].thread, NULL);
	fm_debug("ctl %s: stopped", s->path);
	server_free(s);
}
