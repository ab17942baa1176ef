/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * JSON output (status, examine, monitor lines), built with json-glib.
 * JSON strings are UTF-8: a string that is not (a path may hold any
 * bytes) gets U+FFFD for each invalid byte, so the output is always
 * valid JSON.
 */
#include "cli.h"

void cli_json_str(JsonBuilder *b, const char *member, const char *s)
{
	json_builder_set_member_name(b, member);
	if (!s) {
		json_builder_add_null_value(b);
	} else if (g_utf8_validate(s, -1, NULL)) {
		json_builder_add_string_value(b, s);
	} else {
		g_autofree char *valid = g_utf8_make_valid(s, -1);

		json_builder_add_string_value(b, valid);
	}
}

void cli_json_int(JsonBuilder *b, const char *member, uint64_t v)
{
	json_builder_set_member_name(b, member);
	json_builder_add_int_value(b, (gint64)v);
}

void cli_json_bool(JsonBuilder *b, const char *member, bool v)
{
	json_builder_set_member_name(b, member);
	json_builder_add_boolean_value(b, v);
}

char *cli_json_text(JsonBuilder *b)
{
	g_autoptr(JsonGenerator) gen = json_generator_new();
	g_autoptr(JsonNode) root = json_builder_get_root(b);

	json_generator_set_root(gen, root);
	return json_generator_to_data(gen, NULL);
}
