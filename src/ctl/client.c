/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The client side of the control socket: one synchronous exchange per call.
 * Everything it allocates is bounded: the request by FM_CTL_MAX_REQUEST,
 * the reply by CTL_MAX_REPLY + CTL_MAX_LINE.
 *
 * The server may answer before it has read the whole request (a request
 * that is too long) and close with our bytes unread; then our send() fails
 * with EPIPE and our recv() may end in ECONNRESET instead of EOF after the
 * reply.  Both are taken as "the server is done" once a reply line has
 * arrived.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ctl_i.h"

#define CTL_READ_CHUNK 65536u

static int timed_out(const char *path, int timeout_ms, const char *what, GError **err)
{
	g_set_error(err, FM_CTL_ERROR, ETIMEDOUT,
		    "control socket %s: %s within %d ms", path, what, timeout_ms);
	return -ETIMEDOUT;
}

/* The request bytes for @argv, or -errno with @err set. */
static int build_request(const char *const *argv, GByteArray *req, GError **err)
{
	int argc = 0;

	if (!argv || !argv[0] || !argv[0][0]) {
		g_set_error(err, FM_CTL_ERROR, EINVAL, "no command given");
		return -EINVAL;
	}
	for (; argv[argc]; argc++) {
		size_t len = strlen(argv[argc]);

		if (argc == FM_CTL_MAX_ARGS) {
			g_set_error(err, FM_CTL_ERROR, E2BIG, "%s: more than %d words",
				    argv[0], FM_CTL_MAX_ARGS);
			return -E2BIG;
		}
		if (!g_utf8_validate(argv[argc], (gssize)len, NULL)) {
			g_set_error(err, FM_CTL_ERROR, EINVAL,
				    "%s: argument %d is not valid UTF-8", argv[0], argc);
			return -EINVAL;
		}
		if (req->len + len + 1 > FM_CTL_MAX_REQUEST) {
			g_set_error(err, FM_CTL_ERROR, E2BIG,
				    "%s: request longer than %d bytes", argv[0],
				    FM_CTL_MAX_REQUEST);
			return -E2BIG;
		}
		g_byte_array_append(req, (const guint8 *)argv[argc], (guint)len + 1);
	}
	return 0;
}

/* Blocking connect, bounded through SO_SNDTIMEO (a unix socket's connect
 * waits for room in the listen backlog and honours it). */
static int connect_to(int fd, const char *path, uint64_t deadline, int timeout_ms,
		      GError **err)
{
	struct sockaddr_un sa;
	int salen = ctl_sockaddr(path, &sa, err);

	if (salen < 0)
		return salen;
	for (;;) {
		if (deadline) {
			uint64_t now = fm_now_ns(), left;
			struct timeval tv;

			if (now >= deadline)
				return timed_out(path, timeout_ms, "the daemon accepted no connection", err);
			left = deadline - now;
			tv.tv_sec = (time_t)(left / 1000000000u);
			tv.tv_usec = (suseconds_t)(left % 1000000000u / 1000u);
			if (tv.tv_sec == 0 && tv.tv_usec == 0)
				tv.tv_usec = 1;
			if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
				int e = errno;

				g_set_error(err, FM_CTL_ERROR, e, "SO_SNDTIMEO: %s", g_strerror(e));
				return -e;
			}
		}
		if (connect(fd, (struct sockaddr *)&sa, (socklen_t)salen) == 0)
			return 0;
		switch (errno) {
		case EINTR:
			continue;
		case EAGAIN:
		case EINPROGRESS:
			/* Backlog still full when SO_SNDTIMEO ran out. */
			if (deadline)
				return timed_out(path, timeout_ms,
						 "the daemon accepted no connection", err);
			continue;
		case ENOENT:
		case ECONNREFUSED:
			g_set_error(err, FM_CTL_ERROR, errno, "no daemon listening on %s (%s)",
				    path, g_strerror(errno));
			return -errno;
		default:
			g_set_error(err, FM_CTL_ERROR, errno, "control socket %s: connect: %s",
				    path, g_strerror(errno));
			return -errno;
		}
	}
}

/* Send @req.  Returns 0, -EPIPE when the server stopped reading (its reply
 * tells why), -ETIMEDOUT, or -errno. */
static int send_request(int fd, const GByteArray *req, uint64_t deadline)
{
	size_t off = 0;

	while (off < req->len) {
		ssize_t n = send(fd, req->data + off, req->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EPIPE || errno == ECONNRESET)
			return -EPIPE;
		if (errno != EAGAIN)
			return -errno;
		r = ctl_wait_fd(fd, POLLOUT, -1, deadline);
		if (r < 0)
			return r;
	}
	if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN)
		return errno == EPIPE || errno == ECONNRESET ? -EPIPE : -errno;
	return 0;
}

/* Read until the server closes.  Returns 0, -EPROTO (too long), -ETIMEDOUT,
 * or -errno. */
static int read_reply(int fd, GByteArray *reply, uint64_t deadline)
{
	for (;;) {
		guint len = reply->len;
		ssize_t n;
		int r;

		if (len > CTL_MAX_REPLY + CTL_MAX_LINE)
			return -EPROTO;
		g_byte_array_set_size(reply, len + CTL_READ_CHUNK);
		n = recv(fd, reply->data + len, CTL_READ_CHUNK, MSG_DONTWAIT);
		g_byte_array_set_size(reply, len + (n > 0 ? (guint)n : 0));
		if (n > 0)
			continue;
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET && reply->len && memchr(reply->data, '\n', reply->len))
			return 0;
		if (errno != EAGAIN)
			return -errno;
		r = ctl_wait_fd(fd, POLLIN, -1, deadline);
		if (r < 0)
			return r;
	}
}

/* Parse "ERR <n> <message>"; returns n (1..4095) or 0 when malformed. */
static int parse_err_line(const char *line, const char **ret_msg)
{
	int code = 0;
	const char *p = line + 4;

	if (strncmp(line, "ERR ", 4) != 0)
		return 0;
	for (; *p >= '0' && *p <= '9' && p - line < 8; p++)
		code = code * 10 + (*p - '0');
	if (p == line + 4 || code < 1 || code > 4095 || (*p != ' ' && *p != '\0'))
		return 0;
	*ret_msg = *p ? p + 1 : "";
	return code;
}

int ctl_parse_reply(const char *data, size_t len, const char *path, const char *verb,
		    bool send_failed, GString *out, GError **err)
{
	g_autofree char *line = NULL;
	const char *msg = NULL, *nl;
	int code;

	nl = len ? memchr(data, '\n', MIN(len, CTL_MAX_LINE)) : NULL;
	if (!nl) {
		if (send_failed) {
			g_set_error(err, FM_CTL_ERROR, EPIPE,
				    "control socket %s: the daemon closed the connection", path);
			return -EPIPE;
		}
		g_set_error(err, FM_CTL_ERROR, EPROTO,
			    "control socket %s: malformed reply to %s: %s", path, verb,
			    len ? "no status line" : "nothing");
		return -EPROTO;
	}
	line = g_strndup(data, (gsize)(nl - data));
	if (nl - data == 2 && strcmp(line, "OK") == 0) {
		size_t body = (size_t)(nl + 1 - data);

		if (out)
			g_string_append_len(out, data + body, (gssize)(len - body));
		return 0;
	}
	code = parse_err_line(line, &msg);
	if (!code) {
		g_autofree char *shown = g_utf8_make_valid(line, MIN(strlen(line), 80));

		g_set_error(err, FM_CTL_ERROR, EPROTO,
			    "control socket %s: malformed reply to %s: \"%s\"", path, verb,
			    shown);
		return -EPROTO;
	}
	g_set_error_literal(err, FM_CTL_ERROR, code, *msg ? msg : g_strerror(code));
	return -code;
}

/*
 * Build @argv's request, connect to @path and send it.  Returns what
 * send_request() returned (0, or -EPIPE when the daemon closed early: its
 * reply may still be there) with the socket in *ret_fd, or another -errno
 * with @err set.
 */
static int send_to_daemon(const char *path, const char *const *argv, uint64_t deadline,
			  int timeout_ms, int *ret_fd, GError **err)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	ctl_autofd int fd = -1;
	int r, sent;

	r = build_request(argv, req, err);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		g_set_error(err, FM_CTL_ERROR, -r, "socket: %s", g_strerror(-r));
		return r;
	}
	r = connect_to(fd, path, deadline, timeout_ms, err);
	if (r < 0)
		return r;
	sent = send_request(fd, req, deadline);
	if (sent == -ETIMEDOUT)
		return timed_out(path, timeout_ms, "the daemon did not take the request", err);
	if (sent < 0 && sent != -EPIPE) {
		g_set_error(err, FM_CTL_ERROR, -sent, "control socket %s: sending %s: %s", path,
			    argv[0], g_strerror(-sent));
		return sent;
	}
	*ret_fd = fd;
	fd = -1;
	return sent;
}

int ctl_call(const char *path, const char *const *argv, int timeout_ms,
	     GString *out, GError **err)
{
	g_autoptr(GByteArray) reply = g_byte_array_new();
	uint64_t deadline = ctl_deadline(timeout_ms);
	ctl_autofd int fd = -1;
	int r, sent;

	sent = send_to_daemon(path, argv, deadline, timeout_ms, &fd, err);
	if (sent < 0 && sent != -EPIPE)
		return sent;
	r = read_reply(fd, reply, deadline);
	if (r == -ETIMEDOUT)
		return timed_out(path, timeout_ms, "no reply", err);
	if (r == -EPROTO) {
		g_set_error(err, FM_CTL_ERROR, EPROTO,
			    "control socket %s: reply to %s longer than %u bytes", path, argv[0],
			    CTL_MAX_REPLY);
		return -EPROTO;
	}
	if (r < 0) {
		g_set_error(err, FM_CTL_ERROR, -r, "control socket %s: reading the reply: %s",
			    path, g_strerror(-r));
		return r;
	}

	return ctl_parse_reply((const char *)reply->data, reply->len, path, argv[0],
			       sent == -EPIPE, out, err);
}

int ctl_stream_open(const char *path, const char *const *argv, int timeout_ms, GError **err)
{
	uint64_t deadline = ctl_deadline(timeout_ms);
	ctl_autofd int fd = -1;
	char line[CTL_MAX_LINE + 1];
	const char *msg = NULL;
	size_t len = 0;
	int r, sent, code, ret;

	sent = send_to_daemon(path, argv, deadline, timeout_ms, &fd, err);
	if (sent < 0 && sent != -EPIPE)
		return sent;
	/* The status line, a byte at a time: what follows is the stream's. */
	while (len < CTL_MAX_LINE) {
		ssize_t n = recv(fd, line + len, 1, MSG_DONTWAIT);

		if (n == 1) {
			if (line[len++] == '\n')
				break;
			continue;
		}
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			r = -errno;
			g_set_error(err, FM_CTL_ERROR, -r, "control socket %s: reading the reply: %s",
				    path, g_strerror(-r));
			return r;
		}
		r = ctl_wait_fd(fd, POLLIN, -1, deadline);
		if (r == -ETIMEDOUT)
			return timed_out(path, timeout_ms, "no reply", err);
		if (r < 0) {
			g_set_error(err, FM_CTL_ERROR, -r, "control socket %s: %s", path,
				    g_strerror(-r));
			return r;
		}
	}
	if (!len || line[len - 1] != '\n') {
		g_set_error(err, FM_CTL_ERROR, EPROTO, "control socket %s: %s to %s", path,
			    len ? "malformed reply" : "the daemon closed the connection without a reply",
			    argv[0]);
		return -EPROTO;
	}
	line[len - 1] = '\0';
	if (!strcmp(line, "OK")) {
		ret = fd;
		fd = -1;
		return ret;
	}
	code = parse_err_line(line, &msg);
	if (!code) {
		g_autofree char *shown = g_utf8_make_valid(line, MIN(strlen(line), 80));

		g_set_error(err, FM_CTL_ERROR, EPROTO,
			    "control socket %s: malformed reply to %s: \"%s\"", path, argv[0],
			    shown);
		return -EPROTO;
	}
	g_set_error_literal(err, FM_CTL_ERROR, code, *msg ? msg : g_strerror(code));
	return -code;
}
