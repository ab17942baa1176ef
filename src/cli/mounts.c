/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The fusemirror mounts this process sees (/proc/self/mountinfo). */
#include <string.h>

#include "cli.h"

/* Undo mountinfo's octal escapes ("\040" for a space). */
static char *unescape_mountinfo(const char *s)
{
	GString *out = g_string_new(NULL);

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			g_string_append_c(out, (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
						      (s[3] - '0')));
			s += 3;
		} else {
			g_string_append_c(out, *s);
		}
	}
	return g_string_free(out, FALSE);
}

/* The mount points of the fusemirror mounts this process sees. */
GPtrArray *cli_mounted_arrays(GError **err)
{
	g_autofree char *text = NULL;
	g_auto(GStrv) lines = NULL;
	GPtrArray *found = g_ptr_array_new_with_free_func(g_free);

	if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, err)) {
		g_ptr_array_unref(found);
		return NULL;
	}
	lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER */
		g_auto(GStrv) f = g_strsplit(*l, " ", -1);
		guint n = g_strv_length(f), dash;

		for (dash = 6; dash < n && strcmp(f[dash], "-"); dash++)
			;
		if (n < 5 || dash + 1 >= n || strcmp(f[dash + 1], "fuse.fusemirror"))
			continue;
		g_ptr_array_add(found, unescape_mountinfo(f[4]));
	}
	return found;
}
