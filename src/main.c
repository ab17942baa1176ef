/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fusemirror: one binary, sub-commands (like mdadm).
 *   create   write a new array's superblocks on its legs
 *   mount    assemble and mount (src/mount.c), the daemon
 *   status   ask a running daemon (control socket)
 *   umount   ask a running daemon to unmount, flush and stop cleanly
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"
#include "fusemirror/dmio.h"

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("fusemirror: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*----------------------------------------------------------------*/
/* create */

int cmd_create(int argc, char **argv)
{
	g_autofree char *size_s = NULL, *region_s = NULL, *bs_s = NULL, *name = NULL;
	gboolean force = FALSE;
	g_auto(GStrv) legs = NULL;
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
		{ G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &legs, NULL, "LEG..." },
		{ NULL },
	};
	g_autoptr(GOptionContext) octx = g_option_context_new(NULL);
	g_autoptr(GError) err = NULL;
	struct mirror_format_opts o = { 0 };
	uint8_t uuid[16];
	char u[37];
	uint64_t v;
	int r;

	g_option_context_set_summary(octx,
		"Write a new array's superblocks on LEG... (existing regular files, paths\n"
		"to create as sparse files, or block devices).  All legs start equal: their\n"
		"data areas are discarded or zeroed, so no initial copy is needed.\n"
		"\n"
		"Exit status: 0 created; 2 usage; 3 a leg was refused (nothing written).");
	g_option_context_add_main_entries(octx, entries, NULL);
	if (!g_option_context_parse(octx, &argc, &argv, &err)) {
		cli_error("create: %s (see fusemirror create --help)", err->message);
		return FM_EXIT_USAGE;
	}
	if (!legs || !legs[0]) {
		cli_error("create: no legs given (see fusemirror create --help)");
		return FM_EXIT_USAGE;
	}
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
	o.name = name;
	o.force = force;
	r = mirror_format((const char *const *)legs, g_strv_length(legs), &o, uuid, &err);
	dmio_engine_shutdown();
	if (r < 0) {
		cli_error("create: %s", err->message);
		return r == -EINVAL && !g_str_has_prefix(err->message, "leg ") ? FM_EXIT_USAGE
									       : FM_EXIT_LEG;
	}
	printf("fusemirror: created array %s with %u legs\n", fm_uuid_unparse(uuid, u),
	       g_strv_length(legs));
	return FM_EXIT_OK;
}

/*----------------------------------------------------------------*/
/* status, umount: clients of the control socket */

static int call_daemon(const char *mountpoint, const char *const *words, int timeout_ms,
		       GString *out)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *sock = ctl_socket_path(mountpoint, &err);
	int r;

	if (!sock) {
		cli_error("%s", err->message);
		return FM_EXIT_NO_DAEMON;
	}
	r = ctl_call(sock, words, timeout_ms, out, &err);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		cli_error("no fusemirror daemon serves %s", mountpoint);
		return FM_EXIT_NO_DAEMON;
	}
	if (r < 0) {
		cli_error("%s: %s", mountpoint, err ? err->message : g_strerror(-r));
		return FM_EXIT_FAILURE;
	}
	return FM_EXIT_OK;
}

int cmd_status(int argc, char **argv)
{
	gboolean json = FALSE;
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
		{ G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL, "MOUNTPOINT" },
		{ NULL },
	};
	g_autoptr(GOptionContext) octx = g_option_context_new(NULL);
	g_autoptr(GError) err = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[3] = { "status", NULL, NULL };
	int code;

	g_option_context_set_summary(octx,
		"Show a running array: UUID, size, state, each leg (path, state, reads,\n"
		"writes, errors), cache statistics and I/O totals.  Root only.\n"
		"\n"
		"Exit status: 0 shown; 2 usage; 5 no daemon serves MOUNTPOINT.");
	g_option_context_add_main_entries(octx, entries, NULL);
	if (!g_option_context_parse(octx, &argc, &argv, &err)) {
		cli_error("status: %s", err->message);
		return FM_EXIT_USAGE;
	}
	if (!rest || g_strv_length(rest) != 1) {
		cli_error("status: give exactly one MOUNTPOINT");
		return FM_EXIT_USAGE;
	}
	if (json)
		words[1] = "json";
	code = call_daemon(rest[0], words, 10000, out);
	if (code == FM_EXIT_OK)
		fputs(out->str, stdout);
	return code;
}

int cmd_umount(int argc, char **argv)
{
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL, "MOUNTPOINT" },
		{ NULL },
	};
	g_autoptr(GOptionContext) octx = g_option_context_new(NULL);
	g_autoptr(GError) err = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[] = { "stop", NULL };

	g_option_context_set_summary(octx,
		"Unmount MOUNTPOINT, write every cached block to every leg, flush the\n"
		"legs, mark the superblocks clean and stop the daemon; returns once all\n"
		"of it is done.  (umount(8) and fusermount3 -u work too, and the daemon\n"
		"does the same, but they return before the daemon has finished.)\n"
		"\n"
		"Exit status: 0 stopped cleanly; 1 the image is busy or a write failed;\n"
		"5 no daemon serves MOUNTPOINT.");
	g_option_context_add_main_entries(octx, entries, NULL);
	if (!g_option_context_parse(octx, &argc, &argv, &err)) {
		cli_error("umount: %s", err->message);
		return FM_EXIT_USAGE;
	}
	if (!rest || g_strv_length(rest) != 1) {
		cli_error("umount: give exactly one MOUNTPOINT");
		return FM_EXIT_USAGE;
	}
	return call_daemon(rest[0], words, 0, out);
}

/*----------------------------------------------------------------*/

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} verbs[] = {
	{ "create", cmd_create, "write a new array on its legs" },
	{ "mount", cmd_mount, "assemble an array and mount its image (the daemon)" },
	{ "status", cmd_status, "show a mounted array" },
	{ "umount", cmd_umount, "unmount, flush and stop cleanly" },
};

static void usage(FILE *to)
{
	fprintf(to, "Usage: fusemirror COMMAND [OPTIONS] ARGS...\n\n"
		    "Keeps one block image mirrored on N files or block devices and shows\n"
		    "it as one regular file through FUSE.\n\nCommands:\n");
	for (unsigned i = 0; i < FM_ARRAY_SIZE(verbs); i++)
		fprintf(to, "  %-8s %s\n", verbs[i].name, verbs[i].what);
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
