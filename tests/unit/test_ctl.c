/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the control socket, written from its contract,
 * include/fusemirror/ctl.h, and the wire protocol it describes.
 *
 * One Suite "ctl", one TCase per behaviour (see ctl_suite() at the end).
 *
 * Every server listens in a fresh temporary directory (unchecked fixture:
 * removed even when a test fails).  The handler (test_handler) counts its
 * calls and the largest number of calls running at once with atomics; it
 * never asserts: handlers run on server threads, and so do the client
 * threads of the concurrency test, which only record their results for the
 * test thread to check.  Malformed requests and replies are produced with
 * raw sockets, so the client cannot tidy them up on the way.
 *
 * Works with CK_FORK=yes (default) and CK_FORK=no (the valgrind setup).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include "ctl/ctl_i.h" /* FM_CTL_ERROR, CTL_MAX_REPLY, CTL_IO_TIMEOUT_MS */
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"

#include "fm_test.h"

#define MiB (1024u * 1024u)
#define NOBODY 65534

static uint64_t ms_since(uint64_t start_ns)
{
	return (fm_now_ns() - start_ns) / 1000000u;
}

/*----------------------------------------------------------------*/
/* Unchecked fixture: the TCase's directory */

static char *tc_dir;

static void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "ctl");
}

static void tc_dir_teardown(void)
{
	int r = fm_test_rm_rf(tc_dir);

	if (r < 0)
		fprintf(stderr, "test_ctl: cannot remove %s: %s\n", tc_dir, g_strerror(-r));
	g_clear_pointer(&tc_dir, g_free);
}

/* A fresh socket path in the TCase's directory (g_free). */
static char *sock_path(const char *name)
{
	static int seq;

	return g_strdup_printf("%s/%s-%d.sock", tc_dir, name, seq++);
}

/*----------------------------------------------------------------*/
/* The handler */

struct th {
	atomic_int calls;
	atomic_int running;
	atomic_int max_running;
	atomic_uint last_uid;
};

/* Plain reads of the counters, so that failure messages stay readable. */
static int calls_of(struct th *th)
{
	return atomic_load(&th->calls);
}

static int max_running_of(struct th *th)
{
	return atomic_load(&th->max_running);
}

/* A deterministic body of @len bytes for "big". */
static void fill_body(GString *s, size_t len, uint64_t seed)
{
	struct fm_rng rng;
	size_t old = s->len;

	fm_rng_seed(&rng, seed);
	g_string_set_size(s, old + len);
	fm_rng_fill(&rng, s->str + old, len);
}

/*
 *   echo WORDS...          "argc=<n>\n" then "<bytes>:<word>\n" per word
 *   fail ERRNO [MESSAGE]   returns -ERRNO, with MESSAGE as @err if given
 *   big LEN SEED           LEN pseudo-random bytes (fill_body)
 *   sleep MS               sleeps, counting how many run at once
 */
static int test_handler(void *ctx, int argc, char **argv, uid_t peer_uid, GString *out,
			GError **err)
{
	struct th *th = ctx;

	atomic_fetch_add(&th->calls, 1);
	atomic_store(&th->last_uid, (unsigned)peer_uid);
	if (strcmp(argv[0], "echo") == 0) {
		g_string_append_printf(out, "argc=%d\n", argc);
		for (int i = 1; i < argc; i++)
			g_string_append_printf(out, "%zu:%s\n", strlen(argv[i]), argv[i]);
		return 0;
	}
	if (strcmp(argv[0], "fail") == 0 && argc >= 2) {
		int code = atoi(argv[1]);

		if (argc >= 3)
			g_set_error_literal(err, g_quark_from_static_string("test-handler"), code,
					    argv[2]);
		g_string_append(out, "must not be sent");
		return -code;
	}
	if (strcmp(argv[0], "big") == 0 && argc == 3) {
		fill_body(out, g_ascii_strtoull(argv[1], NULL, 10),
			  g_ascii_strtoull(argv[2], NULL, 10));
		return 0;
	}
	if (strcmp(argv[0], "sleep") == 0 && argc == 2) {
		int now = atomic_fetch_add(&th->running, 1) + 1;
		int max = atomic_load(&th->max_running);

		while (now > max && !atomic_compare_exchange_weak(&th->max_running, &max, now))
			;
		g_usleep((gulong)g_ascii_strtoull(argv[1], NULL, 10) * 1000);
		atomic_fetch_sub(&th->running, 1);
		return 0;
	}
	g_set_error(err, g_quark_from_static_string("test-handler"), EINVAL,
		    "unknown command %s", argv[0]);
	return -EINVAL;
}

/*----------------------------------------------------------------*/
/* Helpers (test thread only: they assert) */

static struct ctl_server *start_ok(const char *path, struct th *th)
{
	struct ctl_server *s = NULL;
	GError *e = NULL;
	int r = ctl_server_start(path, test_handler, th, &s, &e);

	ck_assert_msg(r == 0, "ctl_server_start %s: %d (%s)", path, r, e ? e->message : "-");
	ck_assert_ptr_null(e);
	ck_assert_ptr_nonnull(s);
	return s;
}

/*
 * ctl_call, checking the error contract: @err is set exactly when the call
 * fails, in the FM_CTL_ERROR domain, with the errno as its code.  Returns
 * ctl_call's result; the message goes to *ret_msg (g_free; NULL on success).
 */
static int call(const char *path, const char *const *argv, int timeout_ms, GString *out,
		char **ret_msg)
{
	const char *name = argv[0] ? argv[0] : "(no command)";
	GError *e = NULL;
	int r = ctl_call(path, argv, timeout_ms, out, &e);

	if (r == 0) {
		ck_assert_msg(e == NULL, "%s: success with a message: %s", name, e->message);
		*ret_msg = NULL;
		return 0;
	}
	ck_assert_msg(r < 0, "%s: ctl_call returned %d", name, r);
	ck_assert_msg(e != NULL, "%s: failed with %d and no message", name, r);
	ck_assert_msg(e->domain == FM_CTL_ERROR, "%s: message in domain %s", name,
		      g_quark_to_string(e->domain));
	ck_assert_msg(e->code == -r, "%s: returned %d, message code %d (%s)", name, r,
		      e->code, e->message);
	*ret_msg = g_strdup(e->message);
	g_error_free(e);
	return r;
}

/* Calls that must succeed; returns the body (g_string_free). */
static GString *call_ok(const char *path, const char *const *argv)
{
	GString *out = g_string_new(NULL);
	char *msg = NULL;
	int r = call(path, argv, 30000, out, &msg);

	ck_assert_msg(r == 0, "%s: %d (%s)", argv[0], r, msg);
	return out;
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s",
		      path, g_strerror(errno));
	return fd;
}

/* Everything the server sends until it closes (EOF or reset), within 30 s. */
static GString *raw_read_all(int fd)
{
	GString *reply = g_string_new(NULL);
	uint64_t start = fm_now_ns();

	for (;;) {
		char buf[4096];
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		ck_assert_msg(ms_since(start) < 30000, "no end of reply within 30 s (got \"%s\")",
			      reply->str);
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			g_string_append_len(reply, buf, n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* A server that replies before reading everything resets. */
		ck_assert_msg(n == 0 || errno == ECONNRESET, "recv: %s", g_strerror(errno));
		return reply;
	}
}

/* Send raw request bytes (the server may stop reading early), shut down the
 * writing side and return the whole reply. */
static GString *raw_exchange(const char *path, const void *req, size_t len)
{
	int fd = raw_connect(path);
	const char *p = req;
	GString *reply;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ck_assert_msg(errno == EPIPE || errno == ECONNRESET, "send: %s",
				      g_strerror(errno));
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	reply = raw_read_all(fd);
	close(fd);
	return reply;
}

static const char *echo_argv[] = { "echo", "ping", NULL };

/*----------------------------------------------------------------*/
/* Round trips */

START_TEST(echo_round_trip)
{
	const char *argv[] = { "echo", "", "héllo wörld", "", "日本語 ✓", "a b\tc\nd", "", NULL };
	const char *want = "argc=7\n0:\n13:héllo wörld\n0:\n13:日本語 ✓\n7:a b\tc\nd\n0:\n";
	g_autofree char *path = sock_path("echo");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	GString *out = call_ok(path, argv);
	struct stat st;

	ck_assert_str_eq(out->str, want);
	ck_assert_uint_eq(out->len, strlen(want));
	ck_assert_int_eq(calls_of(&th), 1);
	ck_assert_uint_eq(atomic_load(&th.last_uid), geteuid());
	/* The socket is for its owner only. */
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	g_string_free(out, TRUE);

	/* A second call works too: one request per connection. */
	out = call_ok(path, echo_argv);
	ck_assert_str_eq(out->str, "argc=2\n4:ping\n");
	g_string_free(out, TRUE);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 2);
}
END_TEST

/* The largest request the contract allows reaches the handler, by word count
 * and by bytes; one more word is refused by the client itself. */
START_TEST(request_limits_from_client)
{
	g_autofree char *path = sock_path("limits");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	const char *argv[FM_CTL_MAX_ARGS + 2];
	g_autofree char *long_word = NULL;
	GString *out;
	char *msg = NULL;

	argv[0] = "echo";
	for (int i = 1; i < FM_CTL_MAX_ARGS + 1; i++)
		argv[i] = "w";
	argv[FM_CTL_MAX_ARGS] = NULL;
	out = call_ok(path, argv);
	ck_assert(g_str_has_prefix(out->str, "argc=" G_STRINGIFY(FM_CTL_MAX_ARGS) "\n"));
	g_string_free(out, TRUE);

	argv[FM_CTL_MAX_ARGS] = "w";
	argv[FM_CTL_MAX_ARGS + 1] = NULL;
	ck_assert_int_eq(call(path, argv, 5000, NULL, &msg), -E2BIG);
	g_free(msg);

	/* "echo\0" + word + "\0" == FM_CTL_MAX_REQUEST bytes exactly. */
	long_word = g_strnfill(FM_CTL_MAX_REQUEST - 6, 'x');
	out = call_ok(path, (const char *[]){ "echo", long_word, NULL });
	ck_assert_uint_eq(out->len, strlen("argc=2\n65530:\n") + FM_CTL_MAX_REQUEST - 6);
	g_string_free(out, TRUE);
	g_free(long_word);
	long_word = g_strnfill(FM_CTL_MAX_REQUEST - 5, 'x');
	ck_assert_int_eq(call(path, (const char *[]){ "echo", long_word, NULL }, 5000, NULL, &msg),
			 -E2BIG);
	g_free(msg);

	/* No command, an empty command, invalid UTF-8. */
	ck_assert_int_eq(call(path, (const char *[]){ NULL }, 5000, NULL, &msg), -EINVAL);
	g_free(msg);
	ck_assert_int_eq(call(path, (const char *[]){ "", NULL }, 5000, NULL, &msg), -EINVAL);
	g_free(msg);
	ck_assert_int_eq(call(path, (const char *[]){ "echo", "\xff", NULL }, 5000, NULL, &msg),
			 -EINVAL);
	g_free(msg);

	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 2);
}
END_TEST

START_TEST(handler_error)
{
	g_autofree char *path = sock_path("err");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	GString *out = g_string_new("");
	char *msg = NULL;
	int r;

	r = call(path, (const char *[]){ "fail", "28", "leg /dev/sdb: no space left", NULL },
		 5000, out, &msg);
	ck_assert_int_eq(r, -ENOSPC);
	ck_assert_str_eq(msg, "leg /dev/sdb: no space left");
	ck_assert_uint_eq(out->len, 0); /* the body of a failure is not delivered */
	g_free(msg);

	/* The status line is one line: newlines in a message become spaces. */
	r = call(path, (const char *[]){ "fail", "5", "leg a:\nread error\r\nat 0", NULL }, 5000,
		 out, &msg);
	ck_assert_int_eq(r, -EIO);
	ck_assert_str_eq(msg, "leg a: read error  at 0");
	g_free(msg);

	/* A long message is cut so that the status line stays bounded. */
	{
		g_autofree char *lng = g_strnfill(3 * CTL_MAX_LINE, 'm');

		r = call(path, (const char *[]){ "fail", "22", lng, NULL }, 5000, out, &msg);
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_uint_eq(strlen(msg), CTL_MAX_LINE - strlen("ERR 22 \n"));
		ck_assert(strncmp(msg, lng, strlen(msg)) == 0);
		g_free(msg);
	}

	/* No message from the handler: the errno's text. */
	r = call(path, (const char *[]){ "fail", "16", NULL }, 5000, out, &msg);
	ck_assert_int_eq(r, -EBUSY);
	ck_assert_str_eq(msg, g_strerror(EBUSY));
	g_free(msg);

	ck_assert_uint_eq(out->len, 0);
	g_string_free(out, TRUE);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 4);
}
END_TEST

START_TEST(big_body)
{
	g_autofree char *path = sock_path("big");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	g_autofree char *len = g_strdup_printf("%u", MiB);
	g_autofree char *over = g_strdup_printf("%u", CTL_MAX_REPLY + 1);
	GString *want = g_string_new(NULL);
	GString *out;
	char *msg = NULL;

	out = call_ok(path, (const char *[]){ "big", len, "42", NULL });
	fill_body(want, MiB, 42);
	ck_assert_uint_eq(out->len, MiB);
	fm_assert_bytes_eq(out->str, want->str, MiB, "1 MiB body");
	g_string_free(out, TRUE);
	g_string_free(want, TRUE);

	/* A body over the limit is an error, not a truncated reply. */
	ck_assert_int_eq(call(path, (const char *[]){ "big", over, "1", NULL }, 30000, NULL, &msg),
			 -EMSGSIZE);
	ck_assert_msg(strstr(msg, "big"), "message does not name the command: %s", msg);
	g_free(msg);
	ctl_server_stop(s);
}
END_TEST

/*----------------------------------------------------------------*/
/* Malformed requests never reach the handler */

START_TEST(malformed_requests)
{
	static const struct {
		const char *what;
		const char *req;
		size_t len;
		const char *want; /* prefix of the reply */
	} cases[] = {
		{ "empty", "", 0, "ERR 22 malformed request: " },
		{ "no final NUL", "echo\0abc", 8, "ERR 22 malformed request: " },
		{ "one word, no NUL", "echo", 4, "ERR 22 malformed request: " },
		{ "empty command word", "\0", 1, "ERR 22 malformed request: " },
		{ "empty command word, then words", "\0echo\0", 6, "ERR 22 malformed request: " },
		{ "invalid UTF-8", "echo\0\xff\xfe\0", 8, "ERR 22 malformed request: " },
		{ "overlong UTF-8", "echo\0\xc0\xaf\0", 8, "ERR 22 malformed request: " },
	};
	g_autofree char *path = sock_path("malformed");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	GString *req = g_string_new(NULL);
	GString *reply;

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		reply = raw_exchange(path, cases[i].req, cases[i].len);
		ck_assert_msg(g_str_has_prefix(reply->str, cases[i].want) &&
				      g_str_has_suffix(reply->str, "\n") &&
				      !strchr(reply->str, '\n')[1],
			      "%s: reply \"%s\"", cases[i].what, reply->str);
		g_string_free(reply, TRUE);
	}

	/* FM_CTL_MAX_ARGS + 1 words. */
	g_string_append_len(req, "echo", 5);
	for (int i = 1; i < FM_CTL_MAX_ARGS + 1; i++)
		g_string_append_len(req, "w", 2);
	reply = raw_exchange(path, req->str, req->len);
	ck_assert_msg(g_str_has_prefix(reply->str, "ERR 22 malformed request: "), "65 words: %s",
		      reply->str);
	g_string_free(reply, TRUE);

	/* One byte over the limit, and far over it. */
	for (size_t len = FM_CTL_MAX_REQUEST + 1; len <= 4 * FM_CTL_MAX_REQUEST;
	     len += 3 * FM_CTL_MAX_REQUEST - 1) {
		g_string_truncate(req, 0);
		g_string_append_len(req, "echo", 5);
		while (req->len < len - 1)
			g_string_append_c(req, 'x');
		g_string_append_len(req, "", 1);
		ck_assert_uint_eq(req->len, len);
		reply = raw_exchange(path, req->str, req->len);
		ck_assert_msg(strcmp(reply->str, "ERR 7 request too long (more than 65536 bytes)\n") == 0,
			      "%zu bytes: %s", len, reply->str);
		g_string_free(reply, TRUE);
	}
	ck_assert_int_eq(calls_of(&th), 0);

	/* The limits themselves are fine: 64 words, 65536 bytes. */
	g_string_truncate(req, 0);
	g_string_append_len(req, "echo", 5);
	for (int i = 1; i < FM_CTL_MAX_ARGS; i++)
		g_string_append_len(req, "w", 2);
	reply = raw_exchange(path, req->str, req->len);
	ck_assert_msg(g_str_has_prefix(reply->str, "OK\nargc=64\n"), "64 words: %.40s",
		      reply->str);
	g_string_free(reply, TRUE);
	g_string_truncate(req, 0);
	g_string_append_len(req, "echo", 5);
	while (req->len < FM_CTL_MAX_REQUEST - 1)
		g_string_append_c(req, 'x');
	g_string_append_len(req, "", 1);
	reply = raw_exchange(path, req->str, req->len);
	ck_assert_msg(g_str_has_prefix(reply->str, "OK\nargc=2\n"), "65536 bytes: %.40s",
		      reply->str);
	g_string_free(reply, TRUE);

	g_string_free(req, TRUE);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 2);
}
END_TEST

/* A client that never finishes its request is dropped after the deadline,
 * and does not stop others from being served meanwhile. */
START_TEST(idle_client_dropped)
{
	g_autofree char *path = sock_path("idle");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	int fd = raw_connect(path);
	uint64_t start = fm_now_ns();
	GString *reply, *out;

	ck_assert_int_eq(send(fd, "echo", 4, MSG_NOSIGNAL), 4);
	out = call_ok(path, echo_argv);
	g_string_free(out, TRUE);
	reply = raw_read_all(fd);
	close(fd);
	ck_assert_msg(g_str_has_prefix(reply->str, "ERR 110 "), "reply \"%s\"", reply->str);
	ck_assert_uint_ge(ms_since(start), CTL_IO_TIMEOUT_MS - 500);
	g_string_free(reply, TRUE);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 1);
}
END_TEST

/*----------------------------------------------------------------*/
/* Concurrency */

struct client_job {
	const char *path;
	int r;
};

static void *client_thread(void *arg)
{
	struct client_job *job = arg;
	const char *argv[] = { "sleep", "100", NULL };
	GError *e = NULL;

	job->r = ctl_call(job->path, argv, 120000, NULL, &e);
	g_clear_error(&e);
	return NULL;
}

static void run_clients(const char *path, unsigned n)
{
	pthread_t *t = g_new(pthread_t, n);
	struct client_job *jobs = g_new0(struct client_job, n);

	for (unsigned i = 0; i < n; i++) {
		jobs[i] = (struct client_job){ .path = path, .r = 1 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, client_thread, &jobs[i]), 0);
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < n; i++)
		ck_assert_msg(jobs[i].r == 0, "client %u of %u: %d (%s)", i, n, jobs[i].r,
			      g_strerror(-jobs[i].r));
	g_free(jobs);
	g_free(t);
}

START_TEST(concurrent_clients)
{
	g_autofree char *path = sock_path("conc");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);

	run_clients(path, FM_CTL_MAX_CLIENTS);
	ck_assert_int_eq(calls_of(&th), FM_CTL_MAX_CLIENTS);
	ck_assert_int_le(max_running_of(&th), FM_CTL_MAX_CLIENTS);
	ck_assert_int_ge(max_running_of(&th), 2); /* they did overlap */

	/* Far more than the slots and the backlog: the rest wait, all finish. */
	atomic_store(&th.max_running, 0);
	run_clients(path, FM_CTL_MAX_CLIENTS + 50);
	ck_assert_int_eq(calls_of(&th), 2 * FM_CTL_MAX_CLIENTS + 50);
	ck_assert_int_le(max_running_of(&th), FM_CTL_MAX_CLIENTS);
	ck_assert_int_ge(max_running_of(&th), 2);
	ck_assert_int_eq((int)atomic_load(&th.running), 0);
	ctl_server_stop(s);
}
END_TEST

START_TEST(client_timeout)
{
	g_autofree char *path = sock_path("timeout");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	uint64_t start = fm_now_ns();
	char *msg = NULL;
	int r;

	r = call(path, (const char *[]){ "sleep", "1500", NULL }, 200, NULL, &msg);
	ck_assert_msg(r == -ETIMEDOUT, "got %d (%s)", r, msg);
	ck_assert_uint_ge(ms_since(start), 190);
	ck_assert_uint_lt(ms_since(start), 1200);
	ck_assert_msg(strstr(msg, path), "message does not name the socket: %s", msg);
	g_free(msg);
	/* Stop waits for the handler still sleeping. */
	ctl_server_stop(s);
	ck_assert_uint_ge(ms_since(start), 1400);
	ck_assert_int_eq((int)atomic_load(&th.running), 0);
	ck_assert_int_eq(calls_of(&th), 1);
}
END_TEST

/*----------------------------------------------------------------*/
/* Socket file life cycle */

START_TEST(live_socket_in_use)
{
	g_autofree char *path = sock_path("live");
	struct th th = { 0 }, th2 = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	struct ctl_server *s2 = (struct ctl_server *)&th2; /* must stay untouched */
	struct stat before, after;
	GError *e = NULL;
	GString *out;
	int r;

	ck_assert_int_eq(lstat(path, &before), 0);
	r = ctl_server_start(path, test_handler, &th2, &s2, &e);
	ck_assert_int_eq(r, -EADDRINUSE);
	ck_assert_ptr_eq(s2, (struct ctl_server *)&th2);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->code, EADDRINUSE);
	ck_assert_msg(strstr(e->message, "in use by another daemon") && strstr(e->message, path),
		      "message: %s", e->message);
	g_clear_error(&e);

	/* The first one still owns the path and serves. */
	ck_assert_int_eq(lstat(path, &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	out = call_ok(path, echo_argv);
	ck_assert_str_eq(out->str, "argc=2\n4:ping\n");
	g_string_free(out, TRUE);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 1);
	ck_assert_int_eq(calls_of(&th2), 0);
}
END_TEST

START_TEST(stale_socket_replaced)
{
	g_autofree char *path = sock_path("stale");
	g_autofree char *file = sock_path("file");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct th th = { 0 };
	struct ctl_server *s = NULL;
	GError *e = NULL;
	gchar *text = NULL;
	GString *out;
	int fd, r;

	/* What a crashed daemon leaves: bound, listened, closed, not unlinked. */
	g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	close(fd);
	ck_assert_int_eq(access(path, F_OK), 0);

	s = start_ok(path, &th);
	out = call_ok(path, echo_argv);
	ck_assert_str_eq(out->str, "argc=2\n4:ping\n");
	g_string_free(out, TRUE);
	ctl_server_stop(s);

	/* Something that is not a socket is not ours to remove. */
	ck_assert(g_file_set_contents(file, "precious", -1, NULL));
	s = NULL;
	r = ctl_server_start(file, test_handler, &th, &s, &e);
	ck_assert_int_eq(r, -EEXIST);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(e);
	ck_assert_msg(strstr(e->message, file), "message: %s", e->message);
	g_clear_error(&e);
	ck_assert(g_file_get_contents(file, &text, NULL, NULL));
	ck_assert_str_eq(text, "precious");
	g_free(text);
}
END_TEST

START_TEST(stop_unlinks)
{
	g_autofree char *dir = g_build_filename(tc_dir, "a", "b", "c", NULL);
	g_autofree char *path = g_build_filename(dir, "ctl.sock", NULL);
	g_autofree char *path2 = sock_path("foreign");
	struct th th = { 0 };
	struct ctl_server *s;
	struct stat st;
	char *msg = NULL;
	int r;

	/* Missing directories are made, private. */
	s = start_ok(path, &th);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	g_string_free(call_ok(path, echo_argv), TRUE);
	ctl_server_stop(s);
	ck_assert_msg(access(path, F_OK) < 0 && errno == ENOENT, "%s still exists", path);

	r = call(path, echo_argv, 5000, NULL, &msg);
	ck_assert_msg(r == -ENOENT || r == -ECONNREFUSED, "got %d (%s)", r, msg);
	ck_assert_msg(strstr(msg, "no daemon listening on") && strstr(msg, path), "message: %s",
		      msg);
	g_free(msg);

	/* A file that replaced our socket is not ours to remove. */
	s = start_ok(path2, &th);
	ck_assert_int_eq(unlink(path2), 0);
	ck_assert(g_file_set_contents(path2, "someone else's", -1, NULL));
	ctl_server_stop(s);
	ck_assert_int_eq(access(path2, F_OK), 0);

	ctl_server_stop(NULL);
	ck_assert_int_eq(calls_of(&th), 1);
}
END_TEST

/* Stop does not wait for clients still sending: they are told, and the
 * handler never runs for them. */
START_TEST(stop_wakes_readers)
{
	g_autofree char *path = sock_path("wake");
	struct th th = { 0 };
	struct ctl_server *s = start_ok(path, &th);
	int fd = raw_connect(path);
	uint64_t start;
	GString *reply;

	ck_assert_int_eq(send(fd, "ech", 3, MSG_NOSIGNAL), 3);
	g_usleep(fm_test_under_valgrind() ? 2000000 : 300000); /* let it be accepted */
	start = fm_now_ns();
	ctl_server_stop(s);
	ck_assert_uint_lt(ms_since(start), 2000);
	reply = raw_read_all(fd);
	close(fd);
	ck_assert_msg(g_str_has_prefix(reply->str, "ERR 108 "), "reply \"%s\"", reply->str);
	g_string_free(reply, TRUE);
	ck_assert_int_eq(calls_of(&th), 0);
}
END_TEST

/*----------------------------------------------------------------*/
/* Streaming commands */

static atomic_int streams_hung_up, streams_cancelled, streams_started;

/* "watch NAME": sends "hello NAME\n", then waits until the client or the
 * server ends the stream; counts how it ended. */
static int watch_stream(void *ctx, int argc, char **argv, uid_t peer_uid,
			struct ctl_stream *st, GError **err)
{
	g_autofree char *line = g_strdup_printf("hello %s\n", argc > 1 ? argv[1] : "");
	int r;

	(void)ctx;
	(void)peer_uid;
	(void)err;
	atomic_fetch_add(&streams_started, 1);
	if (ctl_stream_send(st, line, strlen(line)) < 0)
		return 0;
	while ((r = ctl_stream_wait(st, -1, -1)) >= 0)
		;
	atomic_fetch_add(r == -EPIPE ? &streams_hung_up : &streams_cancelled, 1);
	return 0;
}

/* Refuses before sending anything. */
static int refusing_stream(void *ctx, int argc, char **argv, uid_t peer_uid,
			   struct ctl_stream *st, GError **err)
{
	(void)ctx;
	(void)argc;
	(void)argv;
	(void)peer_uid;
	(void)st;
	g_set_error(err, g_quark_from_static_string("test-handler"), ENOENT, "nothing to watch");
	return -ENOENT;
}

static const struct ctl_stream_cmd test_streams[] = {
	{ "watch", watch_stream, 2 },
	{ "refuse", refusing_stream, 1 },
	{ NULL },
};

/* One line from a stream fd, within 10 s. */
static char *stream_line(int fd)
{
	GString *line = g_string_new(NULL);
	uint64_t start = fm_now_ns();

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		char c;
		ssize_t n;

		ck_assert_msg(ms_since(start) < 10000, "no line within 10 s (got \"%s\")", line->str);
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		n = recv(fd, &c, 1, 0);
		if (n <= 0)
			return g_string_free(line, n == 0 && !line->len);       /* EOF: NULL */
		if (c == '\n')
			return g_string_free(line, FALSE);
		g_string_append_c(line, c);
	}
}

static void wait_count(atomic_int *v, int want, const char *what)
{
	uint64_t start = fm_now_ns();

	while (atomic_load(v) != want) {
		ck_assert_msg(ms_since(start) < 10000, "%s: %d, want %d", what, atomic_load(v),
			      want);
		g_usleep(10000);
	}
}

START_TEST(streams)
{
	g_autofree char *path = sock_path("stream");
	const char *a[] = { "watch", "a", NULL }, *b[] = { "watch", "b", NULL };
	const char *c[] = { "watch", "c", NULL }, *refuse[] = { "refuse", NULL };
	struct th th = { 0 };
	struct ctl_server *s = NULL;
	GError *e = NULL;
	char *line;
	int fa, fb, fc, r;

	atomic_store(&streams_hung_up, 0);
	atomic_store(&streams_cancelled, 0);
	atomic_store(&streams_started, 0);
	r = ctl_server_start_full(path, test_handler, test_streams, &th, &s, &e);
	ck_assert_msg(r == 0, "start: %d %s", r, e ? e->message : "");
	fa = ctl_stream_open(path, a, 10000, &e);
	ck_assert_msg(fa >= 0, "open a: %d %s", fa, e ? e->message : "");
	fb = ctl_stream_open(path, b, 10000, &e);
	ck_assert_msg(fb >= 0, "open b: %d %s", fb, e ? e->message : "");
	line = stream_line(fa);
	ck_assert_str_eq(line, "hello a");
	g_free(line);
	line = stream_line(fb);
	ck_assert_str_eq(line, "hello b");
	g_free(line);
	/* The limit: a third is refused by name; one-shot commands still work. */
	fc = ctl_stream_open(path, c, 10000, &e);
	ck_assert_int_eq(fc, -EBUSY);
	ck_assert_ptr_nonnull(e);
	ck_assert_msg(strstr(e->message, "watch: 2 connections"), "message: %s", e->message);
	g_clear_error(&e);
	g_string_free(call_ok(path, echo_argv), TRUE);
	/* A refusal before any byte is an ERR. */
	r = ctl_stream_open(path, refuse, 10000, &e);
	ck_assert_int_eq(r, -ENOENT);
	ck_assert_str_eq(e->message, "nothing to watch");
	g_clear_error(&e);
	/* A client that hangs up ends its stream and frees its place. */
	close(fa);
	wait_count(&streams_hung_up, 1, "streams ended by the client");
	fc = ctl_stream_open(path, c, 10000, &e);
	ck_assert_msg(fc >= 0, "open c: %d %s", fc, e ? e->message : "");
	line = stream_line(fc);
	ck_assert_str_eq(line, "hello c");
	g_free(line);
	/* Stopping the server ends the others: their clients read EOF. */
	ctl_server_stop(s);
	ck_assert_int_eq(atomic_load(&streams_cancelled), 2);
	ck_assert_ptr_null(stream_line(fb));
	ck_assert_ptr_null(stream_line(fc));
	close(fb);
	close(fc);
	ck_assert_int_eq(atomic_load(&streams_started), 3);
	ck_assert_int_eq(calls_of(&th), 1);     /* the echo: stream words never reach it */
}
END_TEST

/*----------------------------------------------------------------*/
/* Credentials */

static char *self_exe; /* this program, for peer_credentials */

/* `test_ctl --call-as-nobody PATH`: become nobody, call "echo" on PATH.
 * Exit 0 when refused with EPERM and "permission denied"; see below. */
static int call_as_nobody(const char *path)
{
	const char *argv[] = { "echo", "ping", NULL };
	GError *e = NULL;
	int r, code;

	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0 ||
	    getuid() != NOBODY || geteuid() != NOBODY)
		return 201;
	r = ctl_call(path, argv, 10000, NULL, &e);
	code = r == -EPERM ? 0 : r < 0 ? -r : 202;
	if (code == 0 && (!e || strcmp(e->message, "permission denied") != 0))
		code = 200;
	if (code)
		fprintf(stderr, "test_ctl as nobody: %d (%s)\n", r, e ? e->message : "-");
	g_clear_error(&e);
	return code;
}

START_TEST(peer_credentials)
{
	g_autofree char *path = sock_path("perm");
	struct th th = { 0 };
	struct ctl_server *s;
	int status = 0;
	pid_t pid;

	/* Root is a prerequisite (as for every test here that needs it): a
	 * run without it fails rather than passing untested. */
	ck_assert_msg(geteuid() == 0, "peer_credentials needs root (to become nobody)");
	/* Let nobody reach the socket, so that SO_PEERCRED is what refuses. */
	ck_assert_int_eq(chmod(tc_dir, 0777), 0);
	s = start_ok(path, &th);
	ck_assert_int_eq(chmod(path, 0666), 0);

	/* A fresh image (not just fork): nothing of this process's state, so
	 * valgrind, which does not follow exec, has nothing to check in it. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execv(self_exe, (char *[]){ self_exe, (char *)"--call-as-nobody", path, NULL });
		_exit(203);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "child died, status 0x%x", status);
	ck_assert_msg(WEXITSTATUS(status) == 0,
		      "as nobody: exit %d (200: wrong message, 201: setuid failed, "
		      "202: served, 203: exec failed, else the errno returned)",
		      WEXITSTATUS(status));
	ck_assert_int_eq(calls_of(&th), 0);

	/* Root still gets through, and the handler learns the uid. */
	g_string_free(call_ok(path, echo_argv), TRUE);
	ck_assert_uint_eq(atomic_load(&th.last_uid), 0);
	ctl_server_stop(s);
	ck_assert_int_eq(calls_of(&th), 1);
}
END_TEST

/*----------------------------------------------------------------*/
/* The client against a misbehaving server */

struct fake_server {
	int listen_fd;
	const char *reply;
	size_t len;
};

/* Accept one connection, read the request to EOF, send the canned reply. */
static void *fake_server_thread(void *arg)
{
	struct fake_server *fs = arg;
	int fd = accept4(fs->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	char buf[4096];
	size_t off = 0;

	if (fd < 0)
		return NULL;
	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	while (off < fs->len) {
		ssize_t n = send(fd, fs->reply + off, fs->len - off, MSG_NOSIGNAL);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	return NULL;
}

/* ctl_call against a server that sends @reply; returns its result. */
static int call_fake(const char *path, const char *reply, size_t len, GString *out,
		     char **ret_msg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake_server fs = { .reply = reply, .len = len };
	pthread_t t;
	int r;

	unlink(path);
	g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
	fs.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fs.listen_fd, 0);
	ck_assert_int_eq(bind(fs.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fs.listen_fd, 1), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, fake_server_thread, &fs), 0);
	r = call(path, echo_argv, 30000, out, ret_msg);
	pthread_join(t, NULL);
	close(fs.listen_fd);
	return r;
}

START_TEST(client_bad_replies)
{
	static const struct {
		const char *reply;
		int want;
		const char *msg;
	} cases[] = {
		{ "", -EPROTO, NULL },
		{ "OK", -EPROTO, NULL },
		{ "HELLO\n", -EPROTO, NULL },
		{ "ok\n", -EPROTO, NULL },
		{ "OK \n", -EPROTO, NULL },
		{ "ERR\n", -EPROTO, NULL },
		{ "ERR x y\n", -EPROTO, NULL },
		{ "ERR 0 zero\n", -EPROTO, NULL },
		{ "ERR -5 negative\n", -EPROTO, NULL },
		{ "ERR 99999 huge\n", -EPROTO, NULL },
		{ "ERR 4096 out of range\n", -EPROTO, NULL },
		{ "ERR 5x y\n", -EPROTO, NULL },
		{ "ERR 5 disk on fire\nbody ignored", -EIO, "disk on fire" },
		{ "ERR 95\n", -EOPNOTSUPP, NULL },
	};
	g_autofree char *path = sock_path("fake");
	GString *out = g_string_new(NULL);
	g_autofree char *big = NULL;
	char *msg = NULL;
	size_t big_len;
	int r;

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		r = call_fake(path, cases[i].reply, strlen(cases[i].reply), out, &msg);
		ck_assert_msg(r == cases[i].want, "reply \"%s\": got %d (%s), want %d",
			      cases[i].reply, r, msg, cases[i].want);
		if (cases[i].msg)
			ck_assert_str_eq(msg, cases[i].msg);
		ck_assert_uint_eq(out->len, 0);
		g_free(msg);
	}
	r = call_fake(path, "ERR 95\n", 7, out, &msg);
	ck_assert_str_eq(msg, g_strerror(EOPNOTSUPP));
	g_free(msg);

	r = call_fake(path, "OK\nbody\0with NUL", 17, out, &msg);
	ck_assert_int_eq(r, 0);
	ck_assert_uint_eq(out->len, 14);
	ck_assert_mem_eq(out->str, "body\0with NUL", 14);

	/* A reply larger than any server may send is refused. */
	big_len = 3 + CTL_MAX_REPLY + CTL_MAX_LINE + 1;
	big = g_malloc(big_len);
	memcpy(big, "OK\n", 3);
	memset(big + 3, 'b', big_len - 3);
	g_string_truncate(out, 0);
	r = call_fake(path, big, big_len, out, &msg);
	ck_assert_msg(r == -EPROTO, "got %d (%s)", r, msg);
	ck_assert_uint_eq(out->len, 0);
	g_free(msg);
	g_string_free(out, TRUE);
}
END_TEST

/*----------------------------------------------------------------*/
/* Socket names */

static char *sp_ok(const char *mnt)
{
	GError *e = NULL;
	char *p = ctl_socket_path(mnt, &e);

	ck_assert_msg(p != NULL, "ctl_socket_path(%s): %s", mnt, e ? e->message : "no message");
	ck_assert_ptr_null(e);
	return p;
}

static void sp_fails(const char *mnt, int code, const char *needle)
{
	GError *e = NULL;
	char *p = ctl_socket_path(mnt, &e);

	ck_assert_msg(p == NULL, "ctl_socket_path(%s) = %s, want an error", mnt, p);
	ck_assert_msg(e != NULL, "ctl_socket_path(%s): no message", mnt);
	ck_assert_msg(e->domain == FM_CTL_ERROR && e->code == code,
		      "ctl_socket_path(%s): code %d (%s), want %d", mnt, e->code, e->message,
		      code);
	if (needle)
		ck_assert_msg(strstr(e->message, needle), "ctl_socket_path(%s): message %s",
			      mnt, e->message);
	g_error_free(e);
}

START_TEST(socket_path_names)
{
	g_autofree char *base = realpath(tc_dir, NULL);
	g_autofree char *cwd = g_get_current_dir();
	g_autofree char *mnt = g_build_filename(base, "mnt", NULL);
	g_autofree char *canon_sum = NULL, *want = NULL, *ref = NULL;
	const char *same[] = { "x/../mnt", "./mnt", "mnt", "mnt/", "mnt//", "mnt/.", "mnt/./",
			       "lnk", "lnk/", "lnk2", "x/../lnk", "x/up/mnt" };
	const char *same_abs[] = { "/mnt/", "/./mnt", "/x/../mnt", "//mnt", "/lnk" };

	ck_assert_ptr_nonnull(base);
	ck_assert_int_eq(mkdir(mnt, 0755), 0);
	ck_assert_int_eq(chdir(base), 0);
	ck_assert_int_eq(mkdir("x", 0755), 0);
	ck_assert_int_eq(mkdir("other", 0755), 0);
	ck_assert_int_eq(symlink("mnt", "lnk"), 0);
	ck_assert_int_eq(symlink("lnk", "lnk2"), 0);
	ck_assert_int_eq(symlink("..", "x/up"), 0);
	ck_assert_int_eq(symlink("loop2", "loop1"), 0);
	ck_assert_int_eq(symlink("loop1", "loop2"), 0);

	/* FM_CTL_DIR/<32 hex digits of SHA-256(canonical path)>.sock */
	ref = sp_ok(mnt);
	canon_sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, mnt, -1);
	want = g_strdup_printf("%s/%.32s.sock", FM_CTL_DIR, canon_sum);
	ck_assert_str_eq(ref, want);

	for (size_t i = 0; i < G_N_ELEMENTS(same); i++) {
		g_autofree char *p = sp_ok(same[i]);

		ck_assert_msg(strcmp(p, ref) == 0, "%s: %s, want %s", same[i], p, ref);
	}
	for (size_t i = 0; i < G_N_ELEMENTS(same_abs); i++) {
		g_autofree char *abs = g_strconcat(base, same_abs[i], NULL);
		g_autofree char *p = sp_ok(abs);

		ck_assert_msg(strcmp(p, ref) == 0, "%s: %s, want %s", abs, p, ref);
	}
	/* From inside the mount point. */
	ck_assert_int_eq(chdir("mnt"), 0);
	{
		g_autofree char *dot = sp_ok(".");
		g_autofree char *up = sp_ok("../mnt");

		ck_assert_str_eq(dot, ref);
		ck_assert_str_eq(up, ref);
	}
	ck_assert_int_eq(chdir(base), 0);
	{
		/* "x/.." names base itself. */
		g_autofree char *dotdot = sp_ok("x/..");
		g_autofree char *b = sp_ok(base);
		g_autofree char *x = sp_ok("x");
		g_autofree char *other = sp_ok("other");

		ck_assert_str_eq(dotdot, b);
		ck_assert_str_ne(b, ref);
		ck_assert_str_ne(x, ref);
		ck_assert_str_ne(other, ref);
		ck_assert_str_ne(other, x);
	}

	sp_fails("", EINVAL, NULL);
	sp_fails(NULL, EINVAL, NULL);
	sp_fails("/", EINVAL, NULL);
	sp_fails("//.", EINVAL, NULL);
	sp_fails("nonexistent/mnt", ENOENT, "nonexistent");
	sp_fails("missing", ENOENT, "missing");
	sp_fails("loop1", ELOOP, "loop1");

	ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

/*----------------------------------------------------------------*/

/* A TCase with its own temporary directory. */
static TCase *tcase(Suite *s, const char *name, double seconds)
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, tc_dir_setup, tc_dir_teardown);
	fm_test_tcase_timeout(tc, seconds);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *ctl_suite(void)
{
	Suite *s = suite_create("ctl");

	tcase_add_test(tcase(s, "round_trip", 30), echo_round_trip);
	tcase_add_test(tcase(s, "client_limits", 30), request_limits_from_client);
	tcase_add_test(tcase(s, "handler_error", 30), handler_error);
	tcase_add_test(tcase(s, "big_body", 60), big_body);
	tcase_add_test(tcase(s, "malformed", 60), malformed_requests);
	tcase_add_test(tcase(s, "idle_client", 60), idle_client_dropped);
	tcase_add_test(tcase(s, "concurrency", 120), concurrent_clients);
	tcase_add_test(tcase(s, "client_timeout", 30), client_timeout);
	tcase_add_test(tcase(s, "address_in_use", 30), live_socket_in_use);
	tcase_add_test(tcase(s, "stale_socket", 30), stale_socket_replaced);
	tcase_add_test(tcase(s, "stop_unlinks", 30), stop_unlinks);
	tcase_add_test(tcase(s, "stop_wakes_readers", 30), stop_wakes_readers);
	tcase_add_test(tcase(s, "streams", 60), streams);
	tcase_add_test(tcase(s, "peer_credentials", 30), peer_credentials);
	tcase_add_test(tcase(s, "client_bad_replies", 60), client_bad_replies);
	tcase_add_test(tcase(s, "socket_path", 30), socket_path_names);
	return s;
}

int main(int argc, char **argv)
{
	int code;

	if (argc == 3 && strcmp(argv[1], "--call-as-nobody") == 0)
		return call_as_nobody(argv[2]);
	self_exe = g_file_read_link("/proc/self/exe", NULL);
	if (!self_exe)
		self_exe = g_strdup(argv[0]);
#if defined(__SANITIZE_THREAD__)
	/*
	 * glib 2.74's GSlice (behind GString, GByteArray, GError) hands blocks
	 * between threads under its own futex locks, which ThreadSanitizer
	 * cannot see: every cross-thread reuse is a false "race".  G_SLICE is
	 * read when libglib is loaded, so setting it takes a fresh exec.
	 */
	if (!getenv("G_SLICE")) {
		setenv("G_SLICE", "always-malloc", 1);
		execv(self_exe, argv);
		fprintf(stderr, "test_ctl: re-exec %s: %s\n", self_exe, g_strerror(errno));
		return EXIT_FAILURE;
	}
#endif
	code = fm_test_main(ctl_suite());
	g_free(self_exe);
	return code;
}
