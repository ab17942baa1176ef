/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fusemirror mounts as the kernel lists them (/proc/self/mountinfo, file
 * system type "fuse.fusemirror"), and the dead ones: a daemon killed by
 * SIGKILL (or a crash) cannot unmount, so its mount stays, and every access
 * to it fails with ENOTCONN ("Transport endpoint is not connected").
 * `status` recognises one and says what to do; `mount` replaces it (lazy
 * unmount, then mount) instead of stacking a second mount on top.
 *
 * Nothing here stat()s a mount point itself: on a dead FUSE mount that
 * fails, on a hung one it blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "cli.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"

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

unsigned cli_fusemirror_mounts_at(const char *canon)
{
	g_autoptr(GPtrArray) mps = cli_mounted_arrays(NULL);
	unsigned n = 0;

	for (guint i = 0; mps && i < mps->len; i++)
		n += !strcmp(g_ptr_array_index(mps, i), canon);
	return n;
}

enum cli_mount_state cli_mount_state(const char *mountpoint, char **ret_canon,
				     pid_t *ret_pid)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *canon = ctl_canonical_mountpoint(mountpoint, &err);
	g_autofree char *sock = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[] = { "pid", NULL };
	int r;

	if (ret_pid)
		*ret_pid = 0;
	if (!canon || cli_fusemirror_mounts_at(canon) == 0) {
		if (ret_canon)
			*ret_canon = g_steal_pointer(&canon);
		return CLI_MOUNT_NONE;
	}
	if (ret_canon)
		*ret_canon = g_strdup(canon);
	sock = ctl_socket_path(canon, &err);
	if (!sock)
		return CLI_MOUNT_DEAD;
	r = ctl_call(sock, words, 10000, out, &err);
	if (r == -ENOENT || r == -ECONNREFUSED)
		return CLI_MOUNT_DEAD;
	if (r == 0 && ret_pid && cli_pid_parse(out->str, ret_pid) < 0)
		fm_debug("%s: a malformed answer to pid: %s", sock, out->str);
	/* A daemon answered (or holds its socket and is slow to): alive. */
	return CLI_MOUNT_LIVE;
}

int cli_drop_dead_mount(const char *canon, GError **err)
{
	g_autoptr(GError) e = NULL;
	g_autofree char *sock = ctl_socket_path(canon, &e);

	/* Lazy: something may still hold the dead image open (a loop device
	 * over it); it keeps the dead mount, not the mount point. */
	for (unsigned i = 0; i < 16 && cli_fusemirror_mounts_at(canon) > 0; i++) {
		if (umount2(canon, MNT_DETACH) < 0) {
			int r = -errno;

			g_set_error(err, FM_CLI_ERROR, -r,
				    "cannot unmount the dead fusemirror mount on %s: %s", canon,
				    g_strerror(-r));
			return r;
		}
	}
	/* The killed daemon's control socket: nobody listens on it. */
	if (sock && unlink(sock) < 0 && errno != ENOENT)
		fm_debug("%s: unlink: %s", sock, g_strerror(errno));
	return 0;
}

void cli_explain_dead_mount(const char *canon)
{
	cli_error("%s: dead fusemirror mount: its daemon is gone (killed or crashed), so "
		  "every access fails with \"Transport endpoint is not connected\".\n"
		  "  Run `fusemirror mount` for it again: it replaces the dead mount, and the "
		  "array resyncs what was being written.\n"
		  "  Or clear it with `umount -l %s`.", canon, canon);
}
