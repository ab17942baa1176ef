/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `fusemirror monitor`: mdadm --monitor's model.  It subscribes to the
 * `monitor` stream of each daemon (one JSON line per event; see
 * src/daemon/events.c) and for each event
 *   --program CMD   runs CMD EVENT MOUNTPOINT [LEG] (like mdadm's PROGRAM),
 *                   with the event's fields in FUSEMIRROR_* variables;
 *   --json          prints the event's JSON line as it came;
 *   otherwise       prints one line for people.
 * It ends when every daemon it watched has stopped, or on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "cli.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"

#define MONITOR_MAX_LINE 65536

struct watched {
	char *mountpoint;               /* as given or found */
	int fd;                         /* the stream, or -1 once ended */
	GString *buf;                   /* bytes of a line not yet ended */
};

static volatile sig_atomic_t monitor_interrupted;

static void monitor_on_signal(int sig)
{
	(void)sig;
	monitor_interrupted = 1;
}

/* Run @program EVENT MOUNTPOINT [LEG] and wait for it. */
static void run_program(const char *program, const struct cli_event *e, const char *mountpoint)
{
	g_autoptr(GError) err = NULL;
	g_auto(GStrv) env = g_get_environ();
	g_autofree char *value = g_strdup_printf("%" G_GINT64_FORMAT, e->value);
	g_autofree char *slot = e->has_leg ? g_strdup_printf("%" G_GINT64_FORMAT, e->leg_slot)
					   : NULL;
	const char *argv[5] = { program, e->name, mountpoint, NULL, NULL };
	const struct { const char *key, *val; } vars[] = {
		{ "FUSEMIRROR_EVENT", e->name },
		{ "FUSEMIRROR_TIME", e->time },
		{ "FUSEMIRROR_MOUNTPOINT", mountpoint },
		{ "FUSEMIRROR_ARRAY_UUID", e->array_uuid },
		{ "FUSEMIRROR_ARRAY_NAME", e->array_name },
		{ "FUSEMIRROR_LEG_SLOT", slot },
		{ "FUSEMIRROR_LEG_PATH", e->leg_path },
		{ "FUSEMIRROR_LEG_UUID", e->leg_uuid },
		{ "FUSEMIRROR_VALUE", value },
		{ "FUSEMIRROR_ERROR", e->error },
	};
	int status;

	if (e->has_leg)
		argv[3] = e->leg_path ? e->leg_path : slot;
	for (unsigned i = 0; i < G_N_ELEMENTS(vars); i++)
		env = vars[i].val ? g_environ_setenv(env, vars[i].key, vars[i].val, TRUE)
				  : g_environ_unsetenv(env, vars[i].key);
	fflush(NULL);
	if (!g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_SEARCH_PATH |
			  G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL, NULL, NULL, &status, &err)) {
		cli_error("monitor: cannot run %s: %s", program, err->message);
		return;
	}
	if (!g_spawn_check_wait_status(status, &err))
		cli_error("monitor: %s %s %s: %s", program, e->name, mountpoint, err->message);
}

/* One event line from the daemon of @w.  False on a malformed line. */
static bool handle_line(struct watched *w, const char *line, const char *program, bool json)
{
	g_autoptr(GError) err = NULL;
	struct cli_event e;
	const char *mountpoint;

	if (cli_event_parse(line, -1, &e, &err) < 0) {
		cli_error("monitor: %s: %s", w->mountpoint, err->message);
		return false;
	}
	mountpoint = e.mountpoint ? e.mountpoint : w->mountpoint;
	if (json)
		printf("%s\n", line);
	if (program)
		run_program(program, &e, mountpoint);
	if (!json && !program) {
		printf("%s %s %s", e.time ? e.time : "-", e.name, mountpoint);
		if (e.has_leg)
			printf(" leg %" G_GINT64_FORMAT " %s", e.leg_slot,
			       e.leg_path ? e.leg_path : "(not present)");
		printf(" value %" G_GINT64_FORMAT "%s%s\n", e.value, e.error ? ": " : "",
		       e.error ? e.error : "");
	}
	fflush(stdout);
	cli_event_clear(&e);
	return true;
}

/* Read what @w's daemon sent: 1 go on, 0 its stream ended (the daemon
 * stopped), -1 it broke. */
static int read_stream(struct watched *w, const char *program, bool json)
{
	char buf[4096];
	ssize_t n = read(w->fd, buf, sizeof(buf));
	char *nl;

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	if (n < 0)
		cli_error("monitor: %s: %s", w->mountpoint, g_strerror(errno));
	if (n <= 0)
		return n < 0 || w->buf->len ? -1 : 0;
	g_string_append_len(w->buf, buf, n);
	while ((nl = memchr(w->buf->str, '\n', w->buf->len))) {
		*nl = '\0';
		if (!handle_line(w, w->buf->str, program, json))
			return -1;
		g_string_erase(w->buf, 0, nl + 1 - w->buf->str);
	}
	if (w->buf->len > MONITOR_MAX_LINE) {
		cli_error("monitor: %s: an event line longer than %d bytes", w->mountpoint,
			  MONITOR_MAX_LINE);
		return -1;
	}
	return 1;
}

int cmd_monitor(int argc, char **argv)
{
	g_autofree char *program = NULL;
	gboolean json = FALSE, oneshot = FALSE, recent = FALSE;
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ "program", 'p', 0, G_OPTION_ARG_FILENAME, &program,
		  "Run CMD EVENT MOUNTPOINT [LEG] for each event (FUSEMIRROR_* variables "
		  "hold its fields)", "CMD" },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print each event as one JSON line",
		  NULL },
		{ "oneshot", '1', 0, G_OPTION_ARG_NONE, &oneshot,
		  "Report the arrays that are degraded now (DegradedArray), then exit", NULL },
		{ "recent", 'r', 0, G_OPTION_ARG_NONE, &recent,
		  "First the events each daemon kept (its last 256), then the new ones", NULL },
		{ NULL },
	};
	g_autoptr(GError) err = NULL;
	g_autoptr(GPtrArray) mps = NULL;
	struct sigaction sa = { .sa_handler = monitor_on_signal };
	struct watched *w;
	unsigned nw = 0, live = 0;
	bool broken = false;
	const char *words[3] = { "monitor", NULL, NULL };
	int code;

	code = cli_parse_args("monitor", "[MOUNTPOINT...]",
		"Report the state changes of mounted arrays as they happen, like\n"
		"mdadm --monitor: a leg failed (Fail), removed (Remove), added (Add),\n"
		"missing at start (DeviceDisappeared), a remote leg reconnected by\n"
		"itself (LegReconnected); DegradedArray, ArrayOptimal;\n"
		"RebuildStarted, RebuildFinished, RebuildInterrupted; ScrubStarted,\n"
		"ScrubFinished (value: mismatched sectors); ReadErrorCorrected,\n"
		"ChecksumError; WriteMostly; BadBlock; NewArray, UncleanStart, Stopped.\n"
		"Without MOUNTPOINT, every mounted fusemirror array.  It runs until every\n"
		"daemon watched has stopped, or until interrupted.  See fusemirror(8),\n"
		"MONITORING.\n"
		"\n"
		"Exit status: 0 the daemons stopped, or interrupted; 1 a daemon's\n"
		"stream broke; 2 usage; 5 no daemon serves a MOUNTPOINT (or none is\n"
		"mounted).",
		entries, 0, G_MAXUINT, &argc, &argv, &rest);
	if (code)
		return code;
	if (oneshot && recent) {
		cli_error("monitor: --oneshot and --recent exclude each other");
		return FM_EXIT_USAGE;
	}
	if (program && !*program) {
		cli_error("monitor: --program: an empty command");
		return FM_EXIT_USAGE;
	}
	if (rest[0]) {
		mps = g_ptr_array_new_with_free_func(g_free);
		for (char **r = rest; *r; r++)
			g_ptr_array_add(mps, g_strdup(*r));
	} else {
		mps = cli_mounted_arrays(&err);
		if (!mps) {
			cli_error("monitor: %s", err->message);
			return FM_EXIT_FAILURE;
		}
		if (!mps->len) {
			cli_error("monitor: no fusemirror array is mounted");
			return FM_EXIT_NO_DAEMON;
		}
	}
	words[1] = oneshot ? "oneshot" : recent ? "recent" : NULL;
	w = g_new0(struct watched, mps->len);
	for (guint i = 0; i < mps->len; i++) {
		g_autofree char *sock = NULL;
		g_autoptr(GError) e = NULL;
		int fd;

		sock = ctl_socket_path(mps->pdata[i], &e);
		fd = sock ? ctl_stream_open(sock, words, 10000, &e) : -ENOENT;
		if (fd < 0) {
			if ((fd == -ENOENT || fd == -ECONNREFUSED) && e &&
			    (!sock || g_str_has_prefix(e->message, "no daemon listening on ")))
				cli_error("monitor: no fusemirror daemon serves %s",
					  (char *)mps->pdata[i]);
			else
				cli_error("monitor: %s: %s", (char *)mps->pdata[i],
					  e ? e->message : g_strerror(-fd));
			for (unsigned k = 0; k < nw; k++)
				close(w[k].fd);
			for (unsigned k = 0; k < nw; k++)
				g_string_free(w[k].buf, TRUE);
			g_free(w);
			return (fd == -ENOENT || fd == -ECONNREFUSED) ? FM_EXIT_NO_DAEMON
								      : FM_EXIT_FAILURE;
		}
		w[nw].mountpoint = mps->pdata[i];
		w[nw].fd = fd;
		w[nw].buf = g_string_new(NULL);
		nw++;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	live = nw;
	while (live && !monitor_interrupted) {
		g_autofree struct pollfd *pfd = g_new0(struct pollfd, nw);
		int n;

		for (unsigned i = 0; i < nw; i++)
			pfd[i] = (struct pollfd){ .fd = w[i].fd, .events = POLLIN };
		n = poll(pfd, nw, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			cli_error("monitor: poll: %s", g_strerror(errno));
			break;
		}
		for (unsigned i = 0; i < nw; i++) {
			if (w[i].fd < 0 || !pfd[i].revents)
				continue;
			int r = read_stream(&w[i], program, json);

			if (r <= 0) {
				broken |= r < 0;
				close(w[i].fd);
				w[i].fd = -1;
				live--;
			}
		}
	}
	for (unsigned i = 0; i < nw; i++) {
		if (w[i].fd >= 0)
			close(w[i].fd);
		g_string_free(w[i].buf, TRUE);
	}
	g_free(w);
	return broken ? FM_EXIT_FAILURE : FM_EXIT_OK;
}
