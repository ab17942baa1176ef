/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Control socket names: FM_CTL_DIR/<first 32 hex digits of the SHA-256 of
 * the mount point's canonical path>.sock.
 *
 * Canonicalising must work when the mount point is a dead or hung FUSE mount
 * (the very case where `fusemirror umount` is needed): a stat() through it
 * fails with ENOTCONN or blocks forever.  So the final component is never
 * stat()ed or opened: the parent directory goes through realpath(), and the
 * final component is only readlink()ed, which resolves it in its parent's
 * file system and, for a directory or a mount point, fails with EINVAL
 * without calling into the mounted file system.  A symlink there is
 * followed by hand (at most CTL_MAX_SYMLINKS hops), so every spelling of
 * the same mount point gives the same name.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_i.h"

#define CTL_MAX_SYMLINKS 40 /* as the kernel's MAXSYMLINKS */

static bool is_dot_or_dotdot(const char *s)
{
	return strcmp(s, ".") == 0 || strcmp(s, "..") == 0;
}

/* Drop trailing slashes and trailing "/." components, in place ("mnt/./"
 * becomes "mnt"; "/" and "/." become "/"). */
static void strip_trailing(char *p)
{
	size_t len = strlen(p);

	for (;;) {
		if (len > 1 && p[len - 1] == '/') {
			len--;
		} else if (len > 2 && p[len - 1] == '.' && p[len - 2] == '/') {
			len -= 2;
		} else if (len == 2 && p[0] == '/' && p[1] == '.') {
			len = 1;
		} else {
			break;
		}
		p[len] = '\0';
	}
}

static int realpath_err(const char *path, const char *mountpoint, const char *what,
			char **ret, GError **err)
{
	char *r = realpath(path, NULL);

	if (!r) {
		int e = errno;

		g_set_error(err, FM_CTL_ERROR, e, "mount point %s: %s %s: %s", mountpoint,
			    what, path, g_strerror(e));
		return -e;
	}
	*ret = r;
	return 0;
}

/* The canonical path of @mountpoint (g_free), or -errno with @err set. */
static int canonical_mountpoint(const char *mountpoint, char **ret_path, GError **err)
{
	g_autofree char *p = NULL;

	if (!mountpoint || !*mountpoint) {
		g_set_error(err, FM_CTL_ERROR, EINVAL, "empty mount point");
		return -EINVAL;
	}
	p = g_strdup(mountpoint);
	for (int hops = 0; hops <= CTL_MAX_SYMLINKS; hops++) {
		g_autofree char *dir = NULL, *real_dir = NULL, *cand = NULL;
		char target[PATH_MAX];
		const char *base;
		char *slash;
		ssize_t n;
		int r;

		strip_trailing(p);
		if (strcmp(p, "/") == 0)
			goto root;
		slash = strrchr(p, '/');
		base = slash ? slash + 1 : p;
		if (is_dot_or_dotdot(base)) {
			/* The mount point is an ancestor of a named directory:
			 * resolving ".." steps out of whatever is mounted. */
			r = realpath_err(p, mountpoint, "directory", &cand, err);
			if (r < 0)
				return r;
			if (strcmp(cand, "/") == 0)
				goto root;
			*ret_path = g_steal_pointer(&cand);
			return 0;
		}
		if (!slash)
			dir = g_strdup(".");
		else if (slash == p)
			dir = g_strdup("/");
		else
			dir = g_strndup(p, (gsize)(slash - p));
		r = realpath_err(dir, mountpoint, "parent directory", &real_dir, err);
		if (r < 0)
			return r;
		cand = g_build_filename(real_dir, base, NULL);

		n = readlink(cand, target, sizeof(target) - 1);
		if (n < 0) {
			int e = errno;

			if (e == ENOENT || e == ENOTDIR) {
				g_set_error(err, FM_CTL_ERROR, e, "mount point %s (%s): %s",
					    mountpoint, cand, g_strerror(e));
				return -e;
			}
			/* EINVAL: not a symlink.  Anything else (EACCES, an
			 * error from a broken mount) cannot make it one, and
			 * refusing would lock users out of a broken mount. */
			if (e != EINVAL)
				fm_debug("ctl: readlink %s: %s; taken as is", cand, g_strerror(e));
			*ret_path = g_steal_pointer(&cand);
			return 0;
		}
		target[n] = '\0';
		g_free(p);
		p = target[0] == '/' ? g_strdup(target) : g_build_filename(real_dir, target, NULL);
	}
	g_set_error(err, FM_CTL_ERROR, ELOOP, "mount point %s: %s", mountpoint,
		    g_strerror(ELOOP));
	return -ELOOP;

root:
	g_set_error(err, FM_CTL_ERROR, EINVAL, "mount point %s: / cannot be a mount point",
		    mountpoint);
	return -EINVAL;
}

char *ctl_socket_path(const char *mountpoint, GError **err)
{
	g_autofree char *canon = NULL;
	g_autofree char *sum = NULL;

	if (canonical_mountpoint(mountpoint, &canon, err) < 0)
		return NULL;
	sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, canon, -1);
	return g_strdup_printf(FM_CTL_DIR "/%.32s.sock", sum);
}

char *ctl_canonical_mountpoint(const char *mountpoint, GError **err)
{
	char *canon = NULL;

	if (canonical_mountpoint(mountpoint, &canon, err) < 0)
		return NULL;
	return canon;
}
