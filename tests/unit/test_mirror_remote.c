/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mirror: remote (NBD) legs that fail and come back.  Leg 0 is a file,
 * leg 1 an nbdkit export of a file in the test's directory (the file
 * plugin: what the server stored survives its restart on the same socket),
 * killed, stopped (SIGSTOP), restarted, or given filters (delay, error)
 * that make it hang or fail I/O with the connection up.  The data a
 * recovery copied is checked in that file, not through the mirror.
 */
#include <signal.h>

#include "mirror_fx.h"

#define REMOTE_BYTES (16 * MiB)

static struct fm_test_nbd rsrv;         /* the server of leg 1 */
static char *rfile;                     /* the file it serves */

static void remote_teardown(void)
{
	fm_test_nbd_stop(&rsrv);
	g_clear_pointer(&rfile, g_free);
}

/* Serve rfile (again), through the filters and with the parameters given
 * (NULL-terminated, at most four: "--filter=..." first). */
static void remote_serve(const char *a0, const char *a1, const char *a2, const char *a3)
{
	g_autofree char *farg = g_strdup_printf("file=%s", rfile);
	const char *filters[4] = { NULL }, *params[4] = { NULL };
	const char *in[4] = { a0, a1, a2, a3 };
	unsigned nf = 0, np = 0;

	for (unsigned k = 0; k < 4 && in[k]; k++) {
		if (g_str_has_prefix(in[k], "--filter="))
			filters[nf++] = in[k];
		else
			params[np++] = in[k];
	}
	if (nf == 0)
		fm_test_nbd_start(&rsrv, "file", farg, params[0], params[1], params[2],
				  params[3], NULL);
	else
		fm_test_nbd_start(&rsrv, filters[0], "file", farg, params[0], params[1],
				  params[2], params[3], NULL);
}

/* Two legs (the second remote, served with remote_serve()'s arguments),
 * 1 MiB regions, assembled with @o, the whole image written. */
static void remote_start(const struct mirror_opts *o, const char *a0, const char *a1,
			 const char *a2, const char *a3)
{
	rfile = fx_path("remote");
	fm_test_create_file(rfile, REMOTE_BYTES);
	remote_serve(a0, a1, a2, a3);
	fx_name_legs(2);
	g_free(fx.legs[1]);
	fx.legs[1] = g_strdup(rsrv.uri);
	fx_format_regions();
	fx_assemble_opts(o);
	fx_write_random(0, IMG);
}

/* Wait until leg 1 is in @state (-1: any) with reconnecting @rc (-1: any)
 * and at least @reconnects reconnections; returns its stats then. */
static void wait_remote(int state, int rc, uint64_t reconnects, struct mirror_leg_stats *ls,
			const char *what)
{
	gint64 deadline = g_get_monotonic_time() + 60 * G_TIME_SPAN_SECOND;

	for (;;) {
		leg_stats(1, ls);
		if ((state < 0 || (int)ls->state == state) && (rc < 0 || ls->reconnecting == rc) &&
		    ls->reconnects >= reconnects)
			return;
		ck_assert_msg(g_get_monotonic_time() < deadline,
			      "%s: leg 1 still in state %d, reconnecting %d, %" PRIu64
			      " reconnects after 60 s", what, (int)ls->state, ls->reconnecting,
			      ls->reconnects);
		g_usleep(10000);
	}
}

/* The remote file holds the model (the leg was recovered). */
static void check_remote_file(void)
{
	uint8_t *buf = g_malloc(IMG);

	fm_test_read_file(rfile, fx.data_offset, buf, IMG);
	ck_assert_msg(fm_test_first_diff(buf, fx.model, IMG) < 0, "remote leg: byte %zd differs",
		      fm_test_first_diff(buf, fx.model, IMG));
	g_free(buf);
}

/* The leg back in sync, its data recovered; the array stops clean. */
static void remote_back(uint64_t reconnects)
{
	struct mirror_leg_stats ls;
	struct mirror_status ms;

	wait_remote(FM_LEG_IN_SYNC, false, reconnects, &ls, "back in sync");
	wait_sync_idle(&ms);
	ck_assert(!ms.degraded);
	fx_stop(0);
	check_remote_file();
}

/* remote_start(), then the server is killed and a write fails leg 1,
 * which is to be reconnected (*ret_ls: its stats then). */
static void remote_start_killed(const struct mirror_opts *o, struct mirror_leg_stats *ret_ls)
{
	remote_start(o, NULL, NULL, NULL, NULL);
	fm_test_nbd_kill(&rsrv);
	fx_write_random(0, REGION);
	wait_remote(FM_LEG_FAULTY, true, 0, ret_ls, "server killed");
}

/* The administrator adds leg 1 back (a re-add: recovered from the
 * bitmap); then as remote_back(), not by a reconnection. */
static void remote_add_back(void)
{
	GError *err = NULL;
	int r = mirror_add_leg(fx.m, rsrv.uri, 0, &err);

	ck_assert_msg(r >= 0, "add: %d %s", r, err ? err->message : "");
	remote_back(0);
}

/*
 * A reconnection whose re-add fails at once (the new connection hangs on
 * the superblock write) is tried again: the failure scheduled a new
 * reconnection while the attempt ran, and the attempt's end must not take
 * it for its own and forget it (the leg stayed faulty for ever).
 */
START_TEST(test_reconnect_readd_fails)
{
	struct mirror_opts o = { .remote_timeout_ms = 300 };
	struct mirror_leg_stats ls;

	FX_SEED();
	remote_start_killed(&o, &ls);
	/* Back, but its writes hang past remote_timeout: the re-add writes
	 * the superblocks, the new connection is given up on, the leg fails
	 * again inside the attempt. */
	remote_serve("--filter=delay", "delay-write=20", NULL, NULL);
	wait_remote(FM_LEG_FAULTY, -1, 1, &ls, "re-added");
	ck_assert_msg(ls.reconnecting, "the leg failed during its re-add and is no longer "
		      "reconnecting");
	fm_test_nbd_kill(&rsrv);
	remote_serve(NULL, NULL, NULL, NULL);
	remote_back(2);
}
END_TEST

/*
 * An administrator's remove while a reconnection waits for the server's
 * handshake: the leg stays removed when the server answers (the attempt
 * was cancelled; it used to re-add the leg it found closed).
 */
START_TEST(test_remove_during_reconnect)
{
	struct mirror_opts o = { .remote_timeout_ms = 300, .remote_connect_timeout_ms = 20000 };
	struct mirror_leg_stats ls;
	GError *err = NULL;
	gint64 until;

	FX_SEED();
	remote_start(&o, NULL, NULL, NULL, NULL);
	fm_test_nbd_pause(&rsrv);
	fx_write_random(0, REGION);     /* hangs 300 ms: the leg fails */
	wait_remote(FM_LEG_FAULTY, true, 0, &ls, "server stopped");
	/* The first attempt is due 1 s after the failure; its handshake
	 * waits for the stopped server (up to 20 s). */
	g_usleep(2500 * 1000);
	admin_ok(mirror_remove_leg(fx.m, rsrv.uri, &err), err, "remove");
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REMOVED);
	ck_assert(!ls.reconnecting);
	ck_assert_int_eq(kill(rsrv.pid, SIGCONT), 0);
	/* The handshake ends at once now; the leg must stay removed. */
	until = g_get_monotonic_time() + 3 * G_TIME_SPAN_SECOND;
	while (g_get_monotonic_time() < until) {
		leg_stats(1, &ls);
		ck_assert_msg(ls.state == FM_LEG_REMOVED && ls.reconnects == 0,
			      "the removed leg came back: state %d, %" PRIu64 " reconnects",
			      (int)ls.state, ls.reconnects);
		g_usleep(10000);
	}
	ck_assert(!ls.reconnecting);
	fx_write_random(REGION, REGION);
	remote_add_back();
}
END_TEST

/*
 * A remote leg failed by errors its server answered (its disk fails
 * writes), the connection up, stays failed as a local leg would: no
 * reconnection re-adds it with a fresh error budget every second.  The
 * administrator's add brings it back.
 */
START_TEST(test_server_errors_no_reconnect)
{
	struct mirror_opts o = { .remote_timeout_ms = 5000 };
	g_autofree char *trig = fx_path("fail-writes");
	g_autofree char *trig_arg = g_strdup_printf("error-pwrite-file=%s", trig);
	struct mirror_leg_stats ls;

	FX_SEED();
	remote_start(&o, "--filter=error", "error=EIO", "error-pwrite-rate=100%", trig_arg);
	fm_test_create_file(trig, 0);
	fx_write_random(0, REGION);     /* every block fails: more than the
					   bad-block list holds */
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_msg(ls.connected, "the connection should be up");
	ck_assert_msg(!ls.reconnecting, "a leg failed by its server's errors is reconnecting");
	/* Past the first attempt's time (1 s): still failed, never re-added. */
	g_usleep(2000 * 1000);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ls.reconnects, 0);
	ck_assert(!ls.reconnecting);
	unlink(trig);
	remote_add_back();
}
END_TEST

/*
 * A server that drops the connection again soon after each reconnection:
 * the wait before the next attempt doubles, it does not start over at
 * 1 s.
 */
START_TEST(test_reconnect_backoff_kept)
{
	struct mirror_opts o = { .remote_timeout_ms = 5000 };
	struct mirror_leg_stats ls;

	FX_SEED();
	remote_start_killed(&o, &ls);
	ck_assert_uint_eq(ls.reconnect_delay_ms, 1000);
	remote_serve(NULL, NULL, NULL, NULL);
	wait_remote(FM_LEG_IN_SYNC, false, 1, &ls, "reconnected");
	fm_test_nbd_kill(&rsrv);
	fx_write_random(REGION, REGION);
	wait_remote(FM_LEG_FAULTY, true, 1, &ls, "server killed again");
	ck_assert_msg(ls.reconnect_delay_ms == 2000, "failed again soon after its "
		      "reconnection: next attempt in %u ms, want 2000", ls.reconnect_delay_ms);
	remote_serve(NULL, NULL, NULL, NULL);
	remote_back(2);
}
END_TEST

/*
 * A small write to a remote leg whose server died: the leg fails (and
 * reconnects); the blocks are not recorded as bad, which would outlive
 * the reconnection (a re-added leg keeps its bad blocks).
 */
START_TEST(test_lost_connection_no_bad_blocks)
{
	struct mirror_opts o = { .remote_timeout_ms = 5000 };
	struct mirror_leg_stats ls;

	FX_SEED();
	remote_start(&o, NULL, NULL, NULL, NULL);
	fm_test_nbd_kill(&rsrv);
	fx_write_random(64 * KiB, 4 * KiB);
	leg_stats(1, &ls);
	ck_assert_msg(ls.state == FM_LEG_FAULTY && ls.bad_blocks == 0,
		      "a 4 KiB write to a leg whose server died: state %d, %" PRIu64
		      " bad blocks", (int)ls.state, ls.bad_blocks);
	ck_assert(ls.reconnecting);
	remote_serve(NULL, NULL, NULL, NULL);
	remote_back(1);
}
END_TEST

static Suite *mirror_remote_suite(void)
{
	Suite *s = suite_create("mirror_remote");
	TCase *tc;

	tc = tc_add(s, "remote", tc_dir_setup, tc_dir_teardown);
	tcase_add_checked_fixture(tc, NULL, remote_teardown);
	tcase_add_test(tc, test_reconnect_readd_fails);
	tcase_add_test(tc, test_remove_during_reconnect);
	tcase_add_test(tc, test_server_errors_no_reconnect);
	tcase_add_test(tc, test_reconnect_backoff_kept);
	tcase_add_test(tc, test_lost_connection_no_bad_blocks);
	return s;
}

int main(void)
{
	/* A write to a socket whose server died must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	fprintf(stderr, "test_mirror_remote: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_remote_suite());
}
