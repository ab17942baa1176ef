/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: a control request as the daemon receives it.  The
 * bytes go through the server's splitter (ctl_parse_request, src/ctl/
 * server.c) exactly as read from the socket (at most FM_CTL_MAX_REQUEST);
 * the words then go through the daemon's request decoder
 * (daemon_request_parse, src/daemon/verbs.c: the verb table and every
 * verb's argument decoder, `monitor` included), and the words after the
 * command word also through the fault words of `inject` alone
 * (fm_fault_from_words, src/cli/fault_opt.c), whatever the verb.
 * Invariants: the word vector is NULL-terminated, every word is UTF-8 and
 * within the buffer; a decoded request names its verb and takes its LEG
 * words from the request; a refused one says why; a fault accepted from
 * words survives fm_fault_to_words and back unchanged and can be described
 * and shown as JSON.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "cli/cli.h"
#include "ctl/ctl_i.h"
#include "daemon/daemon.h"

#include "fuzz.h"

static void check_fault(const struct dmio_fault *f)
{
	g_auto(GStrv) words = fm_fault_to_words(f);
	g_autoptr(GString) text = g_string_new(NULL);
	g_autoptr(GError) err = NULL;
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autofree char *json = NULL;
	struct dmio_fault back;

	FUZZ_ASSERT_MSG(fm_fault_from_words((const char *const *)words, g_strv_length(words),
					    &back, &err),
			"%s", err ? err->message : "");
	FUZZ_ASSERT(memcmp(f, &back, sizeof(*f)) == 0);
	fm_fault_describe(f, text);
	g_string_append_c(text, '\n');
	fm_fault_json(f, b);
	json = cli_json_text(b);
	FUZZ_ASSERT(json && json[0] == '{');
	g_string_append(text, json);
	FUZZ_ASSERT(g_utf8_validate(text->str, (gssize)text->len, NULL));
}

/* @p is NULL or one of the words of @argv. */
static bool is_word(const char *p, char **argv, int argc)
{
	if (!p)
		return true;
	for (int i = 1; i < argc; i++)
		if (p == argv[i])
			return true;
	return false;
}

static void check_request(int argc, char **argv)
{
	g_autoptr(GError) err = NULL;
	struct daemon_request rq;
	int r = daemon_request_parse(argc, argv, &rq, &err);

	if (r < 0) {
		FUZZ_ASSERT(r == -EINVAL && err && err->message[0]);
		FUZZ_ASSERT(g_str_has_prefix(err->message, "usage: ") ||
			    g_str_has_prefix(err->message, "unknown control command") ||
			    !strcmp(argv[0], "status") || !strcmp(argv[0], "inject"));
		return;
	}
	FUZZ_ASSERT(!err && rq.verb && rq.name && !strcmp(rq.name, argv[0]));
	FUZZ_ASSERT(is_word(rq.leg, argv, argc) && is_word(rq.leg2, argv, argc));
	FUZZ_ASSERT(!rq.leg2 || rq.leg);
	FUZZ_ASSERT(!(rq.recent && rq.oneshot));
	FUZZ_ASSERT(!(rq.add_flags & ~(unsigned)(MIRROR_ADD_FORCE | MIRROR_ADD_WRITE_MOSTLY)));
	FUZZ_ASSERT((unsigned)rq.format <= DAEMON_STATUS_SYNC);
	if (!strcmp(rq.name, "sync"))
		FUZZ_ASSERT(rq.format == DAEMON_STATUS_SYNC);
	else
		FUZZ_ASSERT(rq.format != DAEMON_STATUS_SYNC);
	if (!strcmp(rq.name, "inject") && rq.inject == DAEMON_INJECT_SET)
		check_fault(&rq.fault);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[FM_CTL_MAX_ARGS + 1];
	g_autoptr(GError) err = NULL;
	g_autofree char *buf = NULL;
	const char *why = NULL;
	struct dmio_fault f;
	int argc;

	if (size > FM_CTL_MAX_REQUEST)
		return 0;
	/* Exactly @size bytes, so that ASan sees any read past the request. */
	buf = g_malloc(size ? size : 1);
	memcpy(buf, data, size);
	argc = ctl_parse_request(buf, size, argv, &why);
	if (argc < 0) {
		FUZZ_ASSERT(argc == -EINVAL && why && *why);
		return 0;
	}
	FUZZ_ASSERT(argc >= 1 && argc <= FM_CTL_MAX_ARGS && argv[argc] == NULL);
	FUZZ_ASSERT(argv[0][0]);
	for (int i = 0; i < argc; i++) {
		FUZZ_ASSERT(argv[i] >= buf && argv[i] + strlen(argv[i]) < buf + size);
		FUZZ_ASSERT(g_utf8_validate(argv[i], -1, NULL));
	}

	check_request(argc, argv);
	if (!fm_fault_from_words((const char *const *)argv + 1, (unsigned)argc - 1, &f, &err))
		FUZZ_ASSERT(err && err->message[0]);
	else
		check_fault(&f);
	return 0;
}
