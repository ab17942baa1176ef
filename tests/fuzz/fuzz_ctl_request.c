/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: a control request as the daemon receives it.  The
 * bytes go through the server's splitter (ctl_parse_request, src/ctl/
 * server.c) exactly as read from the socket (at most FM_CTL_MAX_REQUEST);
 * the words after the command word then go through the one argument
 * parser that is the daemon's own, the fault words of `inject`
 * (fm_fault_from_words, src/cli/fault_opt.c).  Invariants: the word
 * vector is NULL-terminated, every word is UTF-8 and within the buffer; a
 * fault accepted from words survives fm_fault_to_words and back unchanged
 * and can be described and shown as JSON.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "cli/cli.h"
#include "ctl/ctl_i.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[FM_CTL_MAX_ARGS + 1];
	g_autoptr(GError) err = NULL;
	g_autofree char *buf = NULL;
	const char *why = NULL;
	struct dmio_fault f, back;
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

	if (!fm_fault_from_words((const char *const *)argv + 1, (unsigned)argc - 1, &f, &err)) {
		FUZZ_ASSERT(err && err->message[0]);
	} else {
		g_auto(GStrv) words = fm_fault_to_words(&f);
		g_autoptr(GString) text = g_string_new(NULL);
		g_autoptr(GError) err2 = NULL;
		g_autoptr(JsonBuilder) b = json_builder_new();
		g_autofree char *json = NULL;

		FUZZ_ASSERT_MSG(fm_fault_from_words((const char *const *)words,
						    g_strv_length(words), &back, &err2),
				"%s", err2 ? err2->message : "");
		FUZZ_ASSERT(memcmp(&f, &back, sizeof(f)) == 0);
		fm_fault_describe(&f, text);
		g_string_append_c(text, '\n');
		fm_fault_json(&f, b);
		json = cli_json_text(b);
		FUZZ_ASSERT(json && json[0] == '{');
		g_string_append(text, json);
		FUZZ_ASSERT(g_utf8_validate(text->str, (gssize)text->len, NULL));
	}
	return 0;
}
