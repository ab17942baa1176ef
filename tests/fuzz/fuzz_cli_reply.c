/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the reply bodies the command line reads rather than
 * prints (src/cli/reply.c): the `sync` line (cli_sync_field, and the
 * progress figures scrub --wait and umount compute from it), the answer
 * to `pid` (cli_pid_parse) and an event line of the `monitor` stream
 * (cli_event_parse), each on the same bytes.  Invariants: a field found is
 * a piece of the line; a pid is positive and its decimal is the body; an
 * event decoded has a name; the event parser reads no byte past the ones
 * given (it gets them exactly, not NUL-terminated) and decodes the same
 * event from the NUL-terminated copy.  GLib criticals and warnings abort.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "cli/cli.h"

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
	return 0;
}

static const char *const sync_keys[] = {
	"action", "last_action", "done", "total", "mismatches", "",
};

static void check_sync(const char *line)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(sync_keys); i++) {
		g_autofree char *v = cli_sync_field(line, sync_keys[i]);

		if (!v)
			continue;
		FUZZ_ASSERT(strstr(line, v) != NULL);
		FUZZ_ASSERT(!strchr(v, ' ') && !strchr(v, '\n'));
		/* What scrub --wait and umount compute from done and total. */
		(void)g_ascii_strtoull(v, NULL, 10);
		(void)g_ascii_strtod(v, NULL);
	}
}

static void check_pid(const char *body)
{
	pid_t pid = -1;

	if (cli_pid_parse(body, &pid) < 0) {
		FUZZ_ASSERT(pid == -1);
		return;
	}
	g_autofree char *back = g_strdup_printf("%d", (int)pid);

	FUZZ_ASSERT(pid > 0);
	FUZZ_ASSERT(g_str_has_prefix(body, back));
}

static void same_str(const char *a, const char *b)
{
	FUZZ_ASSERT((!a && !b) || (a && b && !strcmp(a, b)));
}

static void check_event(const uint8_t *data, size_t size, const char *line)
{
	g_autoptr(GError) err = NULL, err2 = NULL;
	g_autofree char *exact = g_malloc(size ? size : 1);
	struct cli_event e, e2;
	int r, r2;

	memcpy(exact, data, size);
	r = cli_event_parse(exact, (gssize)size, &e, &err);
	if (r < 0) {
		FUZZ_ASSERT(r == -EINVAL && err && err->message[0] && !e.parser);
		return;
	}
	FUZZ_ASSERT(!err && e.parser && e.name && e.name[0]);
	FUZZ_ASSERT(e.has_leg || (!e.leg_path && !e.leg_uuid && e.leg_slot == 0));
	/* A NUL inside the bytes ends the line of the NUL-terminated copy. */
	if (strlen(line) == size) {
		r2 = cli_event_parse(line, -1, &e2, &err2);
		FUZZ_ASSERT(r2 == 0);
		same_str(e.name, e2.name);
		same_str(e.time, e2.time);
		same_str(e.error, e2.error);
		same_str(e.mountpoint, e2.mountpoint);
		same_str(e.array_uuid, e2.array_uuid);
		same_str(e.array_name, e2.array_name);
		same_str(e.leg_path, e2.leg_path);
		same_str(e.leg_uuid, e2.leg_uuid);
		FUZZ_ASSERT(e.value == e2.value && e.leg_slot == e2.leg_slot &&
			    e.has_leg == e2.has_leg);
		cli_event_clear(&e2);
	}
	cli_event_clear(&e);
	FUZZ_ASSERT(!e.parser && !e.name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autofree char *line = NULL;

	if (size > 65536)     /* monitor's MONITOR_MAX_LINE */
		return 0;
	line = g_strndup((const char *)data, size);
	check_sync(line);
	check_pid(line);
	check_event(data, size, line);
	return 0;
}
