/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The bodies of the daemon's replies that the command line reads rather
 * than prints: the `sync` line (scrub --wait, umount), the `pid` answer
 * (dead-mount detection) and the event lines of the `monitor` stream.
 * Whatever the bytes, these return a value or an error: the fuzz target
 * fuzz_cli_reply runs them on any input.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"

char *cli_sync_field(const char *line, const char *key)
{
	g_auto(GStrv) words = g_strsplit_set(line, " \n", -1);
	size_t klen = strlen(key);

	for (char **w = words; *w; w++)
		if (!strncmp(*w, key, klen) && (*w)[klen] == '=')
			return g_strdup(*w + klen + 1);
	return NULL;
}

int cli_pid_parse(const char *body, pid_t *ret)
{
	guint64 v;
	char *end;

	if (body[0] < '1' || body[0] > '9')
		return -EINVAL;
	errno = 0;
	v = g_ascii_strtoull(body, &end, 10);
	if (errno || v == 0 || v > G_MAXINT32 || (*end && strcmp(end, "\n")))
		return -EINVAL;
	*ret = (pid_t)v;
	return 0;
}

static const char *obj_str(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
		       ? json_node_get_string(n) : NULL;
}

/* An integer member; 0 when absent or not an integer (a double such as
 * 1e300 is not converted: that would overflow). */
static gint64 obj_int(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64
		       ? json_node_get_int(n) : 0;
}

static JsonObject *obj_obj(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

int cli_event_parse(const char *line, gssize len, struct cli_event *ev, GError **err)
{
	g_autoptr(GError) e = NULL;
	JsonObject *o, *array, *leg;
	JsonNode *root;

	memset(ev, 0, sizeof(*ev));
	ev->parser = json_parser_new();
	if (!json_parser_load_from_data(ev->parser, line, len, &e) ||
	    !(root = json_parser_get_root(ev->parser)) || !JSON_NODE_HOLDS_OBJECT(root)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "a malformed event line: %s",
			    e ? e->message : "not an object");
		cli_event_clear(ev);
		return -EINVAL;
	}
	o = json_node_get_object(root);
	array = obj_obj(o, "array");
	leg = obj_obj(o, "leg");
	ev->name = obj_str(o, "event");
	if (!ev->name || !*ev->name) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "an event line without an event name");
		cli_event_clear(ev);
		return -EINVAL;
	}
	ev->time = obj_str(o, "time");
	ev->error = obj_str(o, "error");
	ev->value = obj_int(o, "value");
	ev->mountpoint = obj_str(array, "mountpoint");
	ev->array_uuid = obj_str(array, "uuid");
	ev->array_name = obj_str(array, "name");
	ev->has_leg = leg != NULL;
	ev->leg_slot = obj_int(leg, "slot");
	ev->leg_path = obj_str(leg, "path");
	ev->leg_uuid = obj_str(leg, "uuid");
	return 0;
}

void cli_event_clear(struct cli_event *ev)
{
	g_clear_object(&ev->parser);
	memset(ev, 0, sizeof(*ev));
}
