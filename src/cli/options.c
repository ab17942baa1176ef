/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one GOption parse of every sub-command (--help from the verb's
 * summary, a usage error worded the same way for all, the positional words
 * counted and checked here rather than in each verb) and the one way the
 * command line prints an error.
 */
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("fusemirror: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_parse_args(const char *verb, const char *params, const char *summary,
		   const GOptionEntry *entries, unsigned min_args, unsigned max_args,
		   int *argc, char ***argv, char ***ret_rest)
{
	g_autoptr(GOptionContext) octx = g_option_context_new(params);
	g_autoptr(GError) err = NULL;
	g_auto(GStrv) rest = NULL;
	GOptionEntry positional[] = {
		{ G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL, NULL },
		{ NULL },
	};
	unsigned n;

	g_option_context_set_summary(octx, summary);
	if (entries)
		g_option_context_add_main_entries(octx, entries, NULL);
	g_option_context_add_main_entries(octx, positional, NULL);
	if (!g_option_context_parse(octx, argc, argv, &err)) {
		cli_error("%s: %s (see fusemirror %s --help)", verb, err->message, verb);
		return FM_EXIT_USAGE;
	}
	n = rest ? g_strv_length(rest) : 0;
	if (n < min_args || n > max_args) {
		cli_error("%s: expected %s%s (see fusemirror %s --help)", verb, params,
			  n > max_args ? ", got more" : "", verb);
		return FM_EXIT_USAGE;
	}
	for (unsigned i = 0; i < n; i++) {
		if (!rest[i][0]) {
			cli_error("%s: an empty argument (expected %s)", verb, params);
			return FM_EXIT_USAGE;
		}
	}
	*ret_rest = rest ? g_steal_pointer(&rest) : g_new0(char *, 1);
	return FM_EXIT_OK;
}
