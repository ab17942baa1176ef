/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fusemirror: one binary, sub-commands (like mdadm).
 *   create   write a new array's superblocks on its legs
 *   mount    assemble and mount (src/daemon/mount.c), the daemon
 *   status   ask a running daemon (control socket)
 *   umount   ask a running daemon to unmount, flush and stop cleanly
 *   fail, remove, add, replace, scrub, inject   administration (admin.c)
 *   examine  read a leg's superblock and bitmap, offline (examine.c)
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"
#include "fusemirror/dmio.h"

/*----------------------------------------------------------------*/
/* create */

/* --OPT=yes|no of create into *@ret (untouched when @s is NULL). */
static bool parse_yes_no(const char *opt, const char *s, bool *ret)
{
	if (!s)
		return true;
	if (strcmp(s, "yes") && strcmp(s, "no")) {
		cli_error("create: --%s=%s: expected yes or no", opt, s);
		return false;
	}
	*ret = !strcmp(s, "yes");
	return true;
}

int cmd_create(int argc, char **argv)
{
	g_autofree char *size_s = NULL, *region_s = NULL, *bs_s = NULL, *name = NULL;
	g_autofree char *csum_s = NULL, *wmap_s = NULL;
	gboolean force = FALSE;
	g_auto(GStrv) legs = NULL, wm = NULL;
	GOptionEntry entries[] = {
		{ "size", 's', 0, G_OPTION_ARG_STRING, &size_s,
		  "Image size (e.g. 10G); default: what the smallest leg holds", "SIZE" },
		{ "region-size", 0, 0, G_OPTION_ARG_STRING, &region_s,
		  "Bytes per write-intent bitmap bit (default 64M)", "SIZE" },
		{ "block-size", 0, 0, G_OPTION_ARG_STRING, &bs_s,
		  "Suggested cache block size (default 4k)", "SIZE" },
		{ "name", 'n', 0, G_OPTION_ARG_STRING, &name, "Array name (up to 63 bytes)",
		  "NAME" },
		{ "force", 'f', 0, G_OPTION_ARG_NONE, &force,
		  "Overwrite legs that hold a file system, partition table or array", NULL },
		{ "checksums", 0, 0, G_OPTION_ARG_STRING, &csum_s,
		  "yes (default): a crc32c of every 4 KiB block, verified on every read "
		  "(1 MiB of memory per GiB of image; at most 4 TiB); no: none", "yes|no" },
		{ "written-map", 0, 0, G_OPTION_ARG_STRING, &wmap_s,
		  "yes (default): track the regions written since create (create writes no "
		  "data, reads of the others are zeroes from no leg); no: every region counts "
		  "as written, and create zeroes the legs' whole data areas", "yes|no" },
		{ "write-mostly", 'W', 0, G_OPTION_ARG_FILENAME_ARRAY, &wm,
		  "Flag LEG (one of the legs; repeatable) write-mostly: it is read only when "
		  "no other leg can serve (a slow or remote leg)", "LEG" },
		{ NULL },
	};
	g_autoptr(GError) err = NULL;
	struct mirror_format_opts o = { 0 };
	bool wmap = true;
	uint8_t uuid[16];
	char u[37];
	uint64_t v;
	int r, code;

	code = cli_parse_args("create", "LEG...",
		"Write a new array's superblocks on LEG... (existing regular files, paths\n"
		"to create as sparse files, or block devices).  All legs start equal, so no\n"
		"initial copy is needed: with the written-region map (the default) no region\n"
		"is written yet, and reads of them are zeroes from no leg; with\n"
		"--written-map=no the legs' data areas are discarded or zeroed.\n"
		"A leg given to --write-mostly (as written among LEG...) is read only when\n"
		"no other in-sync leg can serve the read (md's --write-mostly).\n"
		"\n"
		"Exit status: 0 created; 2 usage; 3 a leg was refused (nothing written).",
		entries, 1, G_MAXUINT, &argc, &argv, &legs);
	if (code)
		return code;
	if (size_s) {
		if (fm_parse_size(size_s, &v) < 0 || v == 0) {
			cli_error("create: --size %s: not a size (e.g. 512M, 10G)", size_s);
			return FM_EXIT_USAGE;
		}
		o.size = v;
	}
	if (region_s) {
		if (fm_parse_size(region_s, &v) < 0) {
			cli_error("create: --region-size %s: not a size", region_s);
			return FM_EXIT_USAGE;
		}
		o.region_size = v;
	}
	if (bs_s) {
		if (fm_parse_size(bs_s, &v) < 0 || v > UINT32_MAX) {
			cli_error("create: --block-size %s: not a size", bs_s);
			return FM_EXIT_USAGE;
		}
		o.block_size = (uint32_t)v;
	}
	o.checksums = true;
	if (!parse_yes_no("checksums", csum_s, &o.checksums) ||
	    !parse_yes_no("written-map", wmap_s, &wmap))
		return FM_EXIT_USAGE;
	o.no_written_map = !wmap;
	for (char **w = wm; w && *w; w++) {
		unsigned k = 0;

		while (legs[k] && strcmp(legs[k], *w))
			k++;
		if (!legs[k]) {
			cli_error("create: --write-mostly %s: not one of the legs given", *w);
			return FM_EXIT_USAGE;
		}
		o.write_mostly |= 1ull << k;
	}
	o.name = name;
	o.force = force;
	r = mirror_format((const char *const *)legs, g_strv_length(legs), &o, uuid, &err);
	dmio_engine_shutdown();
	if (r < 0) {
		cli_error("create: %s", err->message);
		return (r == -EINVAL || r == -EFBIG) && !g_str_has_prefix(err->message, "leg ") ? FM_EXIT_USAGE
									       : FM_EXIT_LEG;
	}
	printf("fusemirror: created array %s with %u legs\n", fm_uuid_unparse(uuid, u),
	       g_strv_length(legs));
	return FM_EXIT_OK;
}

/*----------------------------------------------------------------*/
/* status, umount: clients of the control socket */

int cli_call_daemon(const char *mountpoint, const char *const *words, int timeout_ms,
		    GString *out, int fail_code, int *ret_errno, bool quiet)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *sock = ctl_socket_path(mountpoint, &err);
	int r;

	if (ret_errno)
		*ret_errno = 0;
	if (!sock) {
		if (!quiet)
			cli_error("%s", err->message);
		return FM_EXIT_NO_DAEMON;
	}
	r = ctl_call(sock, words, timeout_ms, out, &err);
	/* -ENOENT is also what a daemon may answer (e.g. scrub-cancel with no
	 * scrub running): only the client's own connect message means that
	 * nobody listens. */
	if ((r == -ENOENT || r == -ECONNREFUSED) && err &&
	    g_str_has_prefix(err->message, "no daemon listening on ")) {
		if (ret_errno)
			*ret_errno = -r;
		if (!quiet) {
			g_autofree char *canon = NULL;

			/* A fusemirror mount nobody serves: its daemon was
			 * killed.  Say so, and what to run. */
			if (cli_mount_state(mountpoint, &canon, NULL) == CLI_MOUNT_DEAD) {
				cli_explain_dead_mount(canon);
				return FM_EXIT_DEAD_MOUNT;
			}
			cli_error("no fusemirror daemon serves %s", mountpoint);
		}
		return FM_EXIT_NO_DAEMON;
	}
	if (r < 0) {
		if (ret_errno)
			*ret_errno = -r;
		if (!quiet || r != -EAGAIN)
			cli_error("%s: %s", mountpoint, err ? err->message : g_strerror(-r));
		return fail_code;
	}
	return FM_EXIT_OK;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Sleep @seconds, or less when a signal arrives. */
static void nap(double seconds)
{
	struct timespec ts = { .tv_sec = (time_t)seconds,
			       .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9) };

	nanosleep(&ts, NULL);
}

/*
 * `status --watch`: a frame every @interval seconds until interrupted
 * (exit 0) or the daemon goes away (exit 0 once it was seen and its socket
 * is gone: it stopped; 1 when its socket is left behind: it died; 5 when it
 * was never reached).  A daemon that is closing its legs answers
 * "stopping" (EAGAIN): the watch goes on until it is gone.  @machine
 * (JSON, Prometheus): frames printed as they come, no screen clearing.
 */
static int status_watch(const char *mountpoint, const char *const *words, bool machine,
			double interval)
{
	struct sigaction sa = { .sa_handler = on_interrupt };
	bool tty = isatty(STDOUT_FILENO), seen = false;
	unsigned frames = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	while (!interrupted) {
		g_autoptr(GString) out = g_string_new(NULL);
		int e, code = cli_call_daemon(mountpoint, words, 10000, out, FM_EXIT_FAILURE, &e,
					      seen);

		if (code == FM_EXIT_NO_DAEMON && seen && e == ECONNREFUSED) {
			/* A socket nobody listens on: the daemon did not get to
			 * its clean end (which removes the socket). */
			cli_error("the daemon serving %s died", mountpoint);
			return FM_EXIT_FAILURE;
		}
		if (code == FM_EXIT_NO_DAEMON) {
			if (seen && !machine)
				printf("%s%s: the daemon has stopped\n", tty ? "" : "\n",
				       mountpoint);
			return seen ? FM_EXIT_OK : FM_EXIT_NO_DAEMON;
		}
		if (code != FM_EXIT_OK && e != EAGAIN)
			return code;
		seen = true;
		if (code == FM_EXIT_OK) {
			if (machine)
				fputs(out->str, stdout);
			else if (tty)
				printf("\033[H\033[2J%s", out->str);
			else
				printf("%s%s", frames ? "\n" : "", out->str);
			frames++;
		}
		if (fflush(stdout) == EOF || ferror(stdout))
			return FM_EXIT_FAILURE;
		if (!interrupted)
			nap(interval);
	}
	return FM_EXIT_OK;
}

/* One metric family of the Prometheus text: its HELP and TYPE lines once,
 * then the samples of every array. */
struct prom_family {
	char *name;
	GString *head, *samples;
	int head_from;                  /* the array whose HELP/TYPE it keeps */
};

static void prom_family_free(gpointer p)
{
	struct prom_family *f = p;

	g_free(f->name);
	g_string_free(f->head, TRUE);
	g_string_free(f->samples, TRUE);
	g_free(f);
}

/* The family a line belongs to: "# HELP name ...", "# TYPE name ...",
 * "name{...} value". */
static char *prom_line_family(const char *line)
{
	size_t n;

	if (g_str_has_prefix(line, "# HELP ") || g_str_has_prefix(line, "# TYPE "))
		line += 7;
	n = strcspn(line, "{ ");
	return n ? g_strndup(line, n) : NULL;
}

/*
 * `status --format=prometheus` of several arrays (or of every mounted
 * one): the exposition format allows each family once, so the daemons'
 * texts are merged family by family.  A daemon that does not answer is
 * reported and left out; the exit status says so.
 */
static int status_prometheus_all(GPtrArray *mps)
{
	g_autoptr(GPtrArray) families = g_ptr_array_new_with_free_func(prom_family_free);
	g_autoptr(GHashTable) by_name = g_hash_table_new(g_str_hash, g_str_equal);
	const char *words[] = { "status", "prometheus", NULL };
	int code = FM_EXIT_OK;

	for (guint i = 0; i < mps->len; i++) {
		g_autoptr(GString) out = g_string_new(NULL);
		g_auto(GStrv) lines = NULL;
		int r = cli_call_daemon(mps->pdata[i], words, 10000, out, FM_EXIT_FAILURE, NULL,
					false);

		if (r != FM_EXIT_OK) {
			if (code == FM_EXIT_OK)
				code = r;
			continue;
		}
		lines = g_strsplit(out->str, "\n", -1);
		for (char **l = lines; *l; l++) {
			g_autofree char *name = prom_line_family(*l);
			struct prom_family *f;
			bool head = g_str_has_prefix(*l, "# ");

			if (!name)
				continue;
			f = g_hash_table_lookup(by_name, name);
			if (!f) {
				f = g_new0(struct prom_family, 1);
				f->name = g_steal_pointer(&name);
				f->head = g_string_new(NULL);
				f->samples = g_string_new(NULL);
				f->head_from = (int)i;
				g_ptr_array_add(families, f);
				g_hash_table_insert(by_name, f->name, f);
			}
			if (head && f->head_from != (int)i)
				continue;               /* HELP/TYPE: once */
			g_string_append_printf(head ? f->head : f->samples, "%s\n", *l);
		}
	}
	for (guint i = 0; i < families->len; i++) {
		struct prom_family *f = families->pdata[i];

		fputs(f->head->str, stdout);
		fputs(f->samples->str, stdout);
	}
	return fflush(stdout) == EOF ? FM_EXIT_FAILURE : code;
}

int cmd_status(int argc, char **argv)
{
	gboolean json = FALSE, watch = FALSE;
	double interval = 0;
	g_autofree char *format = NULL;
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ "format", 'F', 0, G_OPTION_ARG_STRING, &format,
		  "text (default), json (one object) or prometheus (text exposition "
		  "format, for node_exporter's textfile collector)", "FORMAT" },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Same as --format=json", NULL },
		{ "watch", 'w', 0, G_OPTION_ARG_NONE, &watch,
		  "Show it again every interval until interrupted or the daemon stops", NULL },
		{ "interval", 'n', 0, G_OPTION_ARG_DOUBLE, &interval,
		  "Seconds between two frames of --watch (default 1)", "SECONDS" },
		{ NULL },
	};
	g_autoptr(GError) err = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[3] = { "status", NULL, NULL };
	int code;

	code = cli_parse_args("status", "[MOUNTPOINT...]",
		"Show a running array: UUID, size, state (active, degraded, resyncing,\n"
		"recovering, failed), the sync action's progress, the write-intent bitmap,\n"
		"each leg (path, UUID, state, reads, writes, errors, corrected reads,\n"
		"injected fault), cache statistics and I/O totals.  Root only.\n"
		"--watch redraws it every interval (JSON: one object per line) until\n"
		"interrupted or the daemon stops.  --format=prometheus prints the states\n"
		"and counters as fusemirror_* metrics (see fusemirror(8), MONITORING);\n"
		"it takes any number of MOUNTPOINTs (none: every mounted array) and\n"
		"merges them, each metric family once, for node_exporter's textfile\n"
		"collector.\n"
		"\n"
		"Exit status: 0 shown (--watch: interrupted, or the daemon stopped);\n"
		"1 the daemon failed to answer (--watch: or died); 2 usage; 5 no daemon\n"
		"serves MOUNTPOINT; 6 a dead mount is left there (its daemon was killed:\n"
		"run mount again to replace it).",
		entries, 0, G_MAXUINT, &argc, &argv, &rest);
	if (code)
		return code;
	if (format && !strcmp(format, "prometheus") && !watch && g_strv_length(rest) != 1) {
		g_autoptr(GPtrArray) mps = NULL;

		if (rest[0]) {
			mps = g_ptr_array_new();
			for (char **r = rest; *r; r++)
				g_ptr_array_add(mps, *r);
		} else if (!(mps = cli_mounted_arrays(&err))) {
			cli_error("status: %s", err->message);
			return FM_EXIT_FAILURE;
		}
		return status_prometheus_all(mps);
	}
	if (g_strv_length(rest) != 1) {
		cli_error("status: give exactly one MOUNTPOINT (see fusemirror status --help; "
			  "--format=prometheus takes any number, none: every mounted array)");
		return FM_EXIT_USAGE;
	}
	if (interval != 0 && !watch) {
		cli_error("status: --interval needs --watch");
		return FM_EXIT_USAGE;
	}
	if (watch && interval == 0)
		interval = 1;
	if (watch && !(interval >= 0.1 && interval <= 86400)) {
		cli_error("status: --interval %g: expected 0.1 to 86400 seconds", interval);
		return FM_EXIT_USAGE;
	}
	if (format && strcmp(format, "text") && strcmp(format, "json") &&
	    strcmp(format, "prometheus")) {
		cli_error("status: --format %s: expected text, json or prometheus", format);
		return FM_EXIT_USAGE;
	}
	if (json && format && strcmp(format, "json")) {
		cli_error("status: --json and --format=%s disagree", format);
		return FM_EXIT_USAGE;
	}
	if (json)
		words[1] = "json";
	else if (format && strcmp(format, "text"))
		words[1] = format;
	if (watch)
		return status_watch(rest[0], words, words[1] != NULL, interval);
	code = cli_call_daemon(rest[0], words, 10000, out, FM_EXIT_FAILURE, NULL, false);
	if (code == FM_EXIT_OK)
		fputs(out->str, stdout);
	return code;
}

/* Before a stop: say what becomes of a resync, recovery or scrub that
 * runs (md's model: a resync or recovery stops and goes on from where it
 * was at the next assembly; a scrub is just stopped). */
static void umount_tell_sync(const char *mountpoint)
{
	const char *words[] = { "sync", NULL };
	g_autoptr(GString) out = g_string_new(NULL);
	g_autofree char *action = NULL, *done = NULL, *total = NULL;
	double pct = 0;

	if (cli_call_daemon(mountpoint, words, 10000, out, FM_EXIT_FAILURE, NULL, true))
		return;
	action = cli_sync_field(out->str, "action");
	done = cli_sync_field(out->str, "done");
	total = cli_sync_field(out->str, "total");
	if (!action || !strcmp(action, "idle"))
		return;
	if (done && total && g_ascii_strtod(total, NULL) > 0)
		pct = 100.0 * g_ascii_strtod(done, NULL) / g_ascii_strtod(total, NULL);
	if (!strcmp(action, "resync") || !strcmp(action, "recover"))
		fprintf(stderr, "fusemirror: %s: the %s is %.1f%% done: it stops now and resumes "
			"where it stopped at the next mount (the array stays marked dirty until "
			"then)\n", mountpoint, !strcmp(action, "resync") ? "resync" : "recovery",
			pct);
	else
		fprintf(stderr, "fusemirror: %s: the scrub (%s) is %.1f%% done: it stops now and "
			"does not resume (run fusemirror scrub again)\n", mountpoint, action, pct);
}

int cmd_umount(int argc, char **argv)
{
	g_auto(GStrv) rest = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[] = { "stop", NULL };
	int code;

	code = cli_parse_args("umount", "MOUNTPOINT",
		"Unmount MOUNTPOINT, write every cached block to every leg, flush the\n"
		"legs, mark the superblocks clean and stop the daemon; returns once all\n"
		"of it is done.  (umount(8) and fusermount3 -u work too, and the daemon\n"
		"does the same, but they return before the daemon has finished.)\n"
		"\n"
		"Exit status: 0 stopped cleanly; 1 the image is busy or a write failed;\n"
		"5 no daemon serves MOUNTPOINT; 6 a dead mount is left there.",
		NULL, 1, 1, &argc, &argv, &rest);
	if (code)
		return code;
	umount_tell_sync(rest[0]);
	return cli_call_daemon(rest[0], words, 0, out, FM_EXIT_FAILURE, NULL, false);
}

/*----------------------------------------------------------------*/

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} verbs[] = {
	{ "create", cmd_create, "write a new array on its legs" },
	{ "mount", cmd_mount, "assemble an array and mount its image (the daemon)" },
	{ "status", cmd_status, "show a mounted array (--watch: keep showing it)" },
	{ "umount", cmd_umount, "unmount, flush and stop cleanly" },
	{ "fail", cmd_fail, "mark a leg faulty (it gets no more I/O)" },
	{ "remove", cmd_remove, "take a faulty leg out of the array" },
	{ "add", cmd_add, "add a leg (or re-add a failed one) and rebuild it" },
	{ "replace", cmd_replace, "rebuild a new leg, then remove the old one" },
	{ "write-mostly", cmd_write_mostly, "read a leg only when no other can serve" },
	{ "scrub", cmd_scrub, "compare (and --repair) every leg's copy" },
	{ "inject", cmd_inject, "make a leg fail or lie, for testing" },
	{ "examine", cmd_examine, "print a leg's superblock and bitmap (offline)" },
	{ "monitor", cmd_monitor, "report state changes as they happen (--program CMD)" },
};

static void usage(FILE *to)
{
	fprintf(to, "Usage: fusemirror COMMAND [OPTIONS] ARGS...\n\n"
		    "Keeps one block image mirrored on N files or block devices and shows\n"
		    "it as one regular file through FUSE.\n\nCommands:\n");
	for (unsigned i = 0; i < FM_ARRAY_SIZE(verbs); i++)
		fprintf(to, "  %-12s %s\n", verbs[i].name, verbs[i].what);
	fprintf(to, "\n'fusemirror COMMAND --help' describes each; see also fusemirror(8).\n"
		    "Options: --help, --version\n");
}

int main(int argc, char **argv)
{
	g_autofree char *prgname = NULL;

	if (argc < 2) {
		usage(stderr);
		return FM_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return FM_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("fusemirror %s\n", FM_VERSION);
		return FM_EXIT_OK;
	}
	for (unsigned i = 0; i < FM_ARRAY_SIZE(verbs); i++) {
		if (strcmp(argv[1], verbs[i].name))
			continue;
		prgname = g_strdup_printf("fusemirror %s", verbs[i].name);
		g_set_prgname(prgname);
		return verbs[i].fn(argc - 1, argv + 1);
	}
	cli_error("unknown command '%s' (see fusemirror --help)", argv[1]);
	return FM_EXIT_USAGE;
}
