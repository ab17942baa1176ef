/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the control words' decoders on both sides: the daemon's
 * request decoder (daemon_request_parse, src/daemon/verbs.c: the verb
 * table and every verb's arguments) and the command line's readers of
 * reply bodies (src/cli/reply.c: sync line, pid, monitor event lines).
 * The fuzz targets fuzz_ctl_request and fuzz_cli_reply run the same
 * functions on any bytes; these pin what they decode.  Also what the
 * daemon logs for an event (src/daemon/log.c): its words and the rate
 * limit of the floods.
 */
#include <errno.h>
#include <string.h>
#include <check.h>
#include <glib.h>
#include "daemon/daemon.h"
#include "daemon/daemon_i.h"
#include "fusemirror/common.h"
#include "fm_test.h"

/* Decode a NULL-terminated word list; @err_out gets the message. */
static int parse(const char *const *words, struct daemon_request *rq, char **err_out)
{
	g_autoptr(GError) err = NULL;
	int argc = (int)g_strv_length((char **)words);
	int r = daemon_request_parse(argc, (char **)words, rq, &err);

	if (r < 0) {
		ck_assert_ptr_nonnull(err);
		if (err_out)
			*err_out = g_strdup(err->message);
	} else {
		ck_assert_ptr_null(err);
	}
	return r;
}

#define W(...) ((const char *const[]){ __VA_ARGS__, NULL })

START_TEST(request_verbs)
{
	struct daemon_request rq;
	const char *const *w;

	ck_assert_int_eq(parse(W("status"), &rq, NULL), 0);
	ck_assert_str_eq(rq.name, "status");
	ck_assert_int_eq(rq.format, DAEMON_STATUS_TEXT);
	ck_assert_int_eq(parse(W("status", "prometheus"), &rq, NULL), 0);
	ck_assert_int_eq(rq.format, DAEMON_STATUS_PROMETHEUS);
	ck_assert_int_eq(parse(W("sync"), &rq, NULL), 0);
	ck_assert_int_eq(rq.format, DAEMON_STATUS_SYNC);

	w = W("fail", "/dev/loop1");
	ck_assert_int_eq(parse(w, &rq, NULL), 0);
	ck_assert_ptr_eq(rq.leg, w[1]);
	ck_assert_int_eq(parse(W("add", "/l", "write-mostly", "force"), &rq, NULL), 0);
	ck_assert_uint_eq(rq.add_flags, MIRROR_ADD_FORCE | MIRROR_ADD_WRITE_MOSTLY);
	ck_assert_int_eq(parse(W("add", "/l"), &rq, NULL), 0);
	ck_assert_uint_eq(rq.add_flags, 0);
	w = W("replace", "/old", "/new", "force");
	ck_assert_int_eq(parse(w, &rq, NULL), 0);
	ck_assert_ptr_eq(rq.leg, w[1]);
	ck_assert_ptr_eq(rq.leg2, w[2]);
	ck_assert_uint_eq(rq.add_flags, MIRROR_ADD_FORCE);
	ck_assert_int_eq(parse(W("write-mostly", "/l", "off"), &rq, NULL), 0);
	ck_assert(!rq.on);
	ck_assert_int_eq(parse(W("write-mostly", "/l", "on"), &rq, NULL), 0);
	ck_assert(rq.on);
	ck_assert_int_eq(parse(W("scrub"), &rq, NULL), 0);
	ck_assert(!rq.repair);
	ck_assert_int_eq(parse(W("scrub", "repair"), &rq, NULL), 0);
	ck_assert(rq.repair);
	ck_assert_int_eq(parse(W("inject", "/l", "clear"), &rq, NULL), 0);
	ck_assert_int_eq(rq.inject, DAEMON_INJECT_CLEAR);
	ck_assert_int_eq(parse(W("inject", "/l", "show"), &rq, NULL), 0);
	ck_assert_int_eq(rq.inject, DAEMON_INJECT_SHOW);
	ck_assert_int_eq(parse(W("inject", "/l", "flags=reads", "error=5", "count=8"), &rq, NULL),
			 0);
	ck_assert_int_eq(rq.inject, DAEMON_INJECT_SET);
	ck_assert_int_eq(rq.fault.error, 5);
	ck_assert_int_eq(parse(W("monitor", "oneshot"), &rq, NULL), 0);
	ck_assert(rq.oneshot && !rq.recent);
	ck_assert_int_eq(parse(W("monitor", "recent"), &rq, NULL), 0);
	ck_assert(rq.recent && !rq.oneshot);
}
END_TEST

START_TEST(request_refused)
{
	const struct { const char *const *words; const char *msg; } cases[] = {
		{ W("frobnicate"), "unknown control command 'frobnicate'" },
		{ W("status", "yaml"), "status: unknown format 'yaml'" },
		{ W("status", "sync"), "status: unknown format 'sync'" },
		{ W("status", "json", "x"), "usage: status [text|json|prometheus]" },
		{ W("sync", "x"), "usage: sync" },
		{ W("fail"), "usage: fail LEG" },
		{ W("fail", "a", "b"), "usage: fail LEG" },
		{ W("add", "/l", "quickly"), "usage: add LEG [force] [write-mostly]" },
		{ W("write-mostly", "/l", "maybe"), "usage: write-mostly LEG on|off" },
		{ W("replace", "/o", "/n", "please"), "usage: replace OLD NEW [force]" },
		{ W("scrub", "check"), "usage: scrub [repair]" },
		{ W("inject", "/l"), "usage: inject LEG" },
		{ W("inject", "/l", "bogus=1"), "bogus" },
		{ W("monitor", "forever"), "usage: monitor [recent|oneshot]" },
		{ W("monitor", "recent", "oneshot"), "usage: monitor [recent|oneshot]" },
	};

	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *msg = NULL;
		struct daemon_request rq;

		ck_assert_int_eq(parse(cases[i].words, &rq, &msg), -EINVAL);
		ck_assert_msg(strstr(msg, cases[i].msg), "%s: '%s' lacks '%s'",
			      cases[i].words[0], msg, cases[i].msg);
	}
}
END_TEST

START_TEST(reply_sync_pid)
{
	g_autofree char *a = cli_sync_field("action=check done=5 total=10 mismatches=0\n", "done");
	g_autofree char *b = cli_sync_field("action=check done=5\n", "total");
	g_autofree char *c = cli_sync_field("last_action=repair action=idle\n", "action");
	pid_t pid = 0;

	ck_assert_str_eq(a, "5");
	ck_assert_ptr_null(b);
	ck_assert_str_eq(c, "idle");

	ck_assert_int_eq(cli_pid_parse("4242\n", &pid), 0);
	ck_assert_int_eq(pid, 4242);
	ck_assert_int_eq(cli_pid_parse("17", &pid), 0);
	ck_assert_int_eq(pid, 17);
	pid = -1;
	ck_assert_int_eq(cli_pid_parse("", &pid), -EINVAL);
	ck_assert_int_eq(cli_pid_parse("0\n", &pid), -EINVAL);
	ck_assert_int_eq(cli_pid_parse("0242\n", &pid), -EINVAL);
	ck_assert_int_eq(cli_pid_parse("-1\n", &pid), -EINVAL);
	ck_assert_int_eq(cli_pid_parse("12x\n", &pid), -EINVAL);
	ck_assert_int_eq(cli_pid_parse("99999999999\n", &pid), -EINVAL);
	ck_assert_int_eq(pid, -1);
}
END_TEST

START_TEST(reply_event)
{
	g_autoptr(GError) err = NULL;
	struct cli_event e;
	const char *line = "{\"time\":\"T\",\"event\":\"Fail\",\"value\":5,\"error\":\"EIO\","
			   "\"array\":{\"mountpoint\":\"/m\",\"uuid\":\"U\",\"name\":\"n\"},"
			   "\"leg\":{\"slot\":1,\"path\":\"/dev/loop1\",\"uuid\":\"L\"}}";

	ck_assert_int_eq(cli_event_parse(line, -1, &e, &err), 0);
	ck_assert_str_eq(e.name, "Fail");
	ck_assert_str_eq(e.time, "T");
	ck_assert_str_eq(e.error, "EIO");
	ck_assert_int_eq(e.value, 5);
	ck_assert_str_eq(e.mountpoint, "/m");
	ck_assert_str_eq(e.array_uuid, "U");
	ck_assert_str_eq(e.array_name, "n");
	ck_assert(e.has_leg);
	ck_assert_int_eq(e.leg_slot, 1);
	ck_assert_str_eq(e.leg_path, "/dev/loop1");
	ck_assert_str_eq(e.leg_uuid, "L");
	cli_event_clear(&e);

	/* Members of the wrong type read as absent; a double is not an int. */
	ck_assert_int_eq(cli_event_parse("{\"event\":\"X\",\"value\":1e300,\"leg\":3,"
					 "\"array\":{\"mountpoint\":7}}", -1, &e, &err), 0);
	ck_assert_int_eq(e.value, 0);
	ck_assert(!e.has_leg);
	ck_assert_ptr_null(e.mountpoint);
	cli_event_clear(&e);

	ck_assert_int_eq(cli_event_parse("[1,2]", -1, &e, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err->message, "not an object"));
	g_clear_error(&err);
	ck_assert_int_eq(cli_event_parse("{\"value\":1}", -1, &e, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err->message, "without an event name"));
	g_clear_error(&err);
	ck_assert_int_eq(cli_event_parse("{\"event\":", -1, &e, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err->message, "malformed"));
	g_clear_error(&err);
	/* @len bytes only: the rest of the buffer is not read. */
	ck_assert_int_eq(cli_event_parse("{\"event\":\"A\"}garbage", 13, &e, &err), 0);
	ck_assert_str_eq(e.name, "A");
	cli_event_clear(&e);
}
END_TEST

/* What the daemon logs for events (src/daemon/log.c), seen by a log hook. */
static GPtrArray *logged;

static void record_hook(void *ctx, enum fm_log_level level, const char *msg)
{
	(void)ctx;
	g_ptr_array_add(logged, g_strdup_printf("%s: %s", fm_log_level_name(level), msg));
}

START_TEST(event_log_words_and_limit)
{
	struct fm_event fail = { .type = FM_EVENT_LEG_FAILED, .leg = 1, .leg_path = "/l1",
				 .err = EIO, .detail = "write of sectors 0+8 failed" };
	struct fm_event rerr = { .type = FM_EVENT_READ_ERROR, .leg = 0, .leg_path = "/l0",
				 .err = EIO, .detail = "read of sectors 8+8 failed" };
	struct fm_event csum = { .type = FM_EVENT_IO_ERROR, .leg = -1, .err = EILSEQ,
				 .detail = "block at byte 4096: no copy matches its checksum" };
	struct daemon_events *ev = daemon_events_new("/mnt");
	uint64_t counts[FM_EVENT__MAX], cursor = 1;
	GString *lines;
	gchar **each;

	/* A window of 500 ms instead of 10 s: the test ends one. */
	daemon_event_limit_set_window_ms(500);
	logged = g_ptr_array_new_with_free_func(g_free);
	fm_log_set_target(FM_LOG_TARGET_NONE);
	fm_log_set_hook(record_hook, NULL);
	daemon_events_handler(ev, &fail);
	ck_assert_uint_eq(logged->len, 1);
	ck_assert_str_eq(g_ptr_array_index(logged, 0),
			 "error: /mnt: leg /l1 (slot 1) failed (Input/output error): write of "
			 "sectors 0+8 failed");
	daemon_events_handler(ev, &csum);
	ck_assert_str_eq(g_ptr_array_index(logged, 1),
			 "error: /mnt: image: block at byte 4096: no copy matches its checksum");
	/* A flood of read errors: 10 logged and kept for monitor, all counted. */
	g_ptr_array_set_size(logged, 0);
	for (int i = 0; i < 25; i++)
		daemon_events_handler(ev, &rerr);
	ck_assert_uint_eq(logged->len, 10);
	ck_assert_str_eq(g_ptr_array_index(logged, 0),
			 "warning: /mnt: leg /l0: read of sectors 8+8 failed (Input/output error)");
	daemon_events_counts(ev, counts);
	ck_assert_uint_eq(counts[FM_EVENT_READ_ERROR], 25);
	/* Other kinds are not held back by it. */
	daemon_events_handler(ev, &fail);
	ck_assert_uint_eq(logged->len, 11);
	lines = daemon_events_lines(ev, &cursor);
	each = g_strsplit(lines->str, "\n", -1);
	ck_assert_uint_eq(g_strv_length(each), 2 + 10 + 1 + 1);  /* "" after the last */
	ck_assert_msg(strstr(each[2], "\"event\":\"ReadError\"") &&
		      strstr(each[11], "\"event\":\"ReadError\"") &&
		      !strstr(each[11], "suppressed"), "%s", lines->str);
	ck_assert_msg(strstr(each[12], "\"event\":\"Fail\""), "%s", each[12]);
	g_strfreev(each);
	g_string_free(lines, TRUE);
	/* The next window: the first read error says how many were held back. */
	g_usleep(600 * 1000);
	daemon_events_handler(ev, &rerr);
	ck_assert_uint_eq(logged->len, 12);
	ck_assert_msg(strstr(g_ptr_array_index(logged, 11),
			     "[15 more ReadError events not logged]"),
		      "%s", (const char *)g_ptr_array_index(logged, 11));
	lines = daemon_events_lines(ev, &cursor);
	ck_assert_msg(strstr(lines->str, "\"event\":\"ReadError\"") &&
		      strstr(lines->str, "\"suppressed\":15}\n"), "%s", lines->str);
	g_string_free(lines, TRUE);
	daemon_event_limit_set_window_ms(0);
	fm_log_set_hook(NULL, NULL);
	g_ptr_array_unref(logged);
	daemon_events_free(ev);
}
END_TEST

static Suite *verbs_suite(void)
{
	const struct fm_test_case cases[] = {
		{ "request_verbs", request_verbs },
		{ "request_refused", request_refused },
		{ "reply_sync_pid", reply_sync_pid },
		{ "reply_event", reply_event },
		{ "event_log_words_and_limit", event_log_words_and_limit },
	};

	return fm_test_suite("verbs", cases, FM_ARRAY_SIZE(cases));
}

int main(void)
{
	return fm_test_main(verbs_suite());
}
