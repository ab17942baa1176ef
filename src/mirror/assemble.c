/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Assembly: open and lock the legs, check that they belong together, mark
 * the array in use; and the clean stop that undoes it.
 *
 * A leg is assembled as current only when its superblock says so: same
 * array, same geometry, the highest event counter, and its slot in the leg
 * table in sync.  Everything else is refused by name before any byte is
 * written, so a refused assembly leaves every leg as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mirror_i.h"

/* Lock a regular file leg with an OFD lock (released when the fd closes,
 * also if the daemon dies).  Block devices were opened O_EXCL instead. */
static int lock_leg(struct mirror_leg *leg, bool readonly, GError **err)
{
	struct flock fl = {
		.l_type = readonly ? F_RDLCK : F_WRLCK,
		.l_whence = SEEK_SET,
	};

	if (dmio_dev_is_blockdev(leg->dev))
		return 0;
	if (fcntl(dmio_dev_fd(leg->dev), F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: already in use (locked by another process, "
			    "probably another fusemirror mount)", leg->path);
		return -EBUSY;
	}
	g_set_error(err, FM_MIRROR_ERROR, errno, "leg %s: cannot lock: %s",
		    leg->path, g_strerror(errno));
	return -errno;
}

static int open_leg(struct mirror_leg *leg, bool readonly, GError **err)
{
	int r = dmio_dev_open(leg->path, DMIO_DEV_EXCL | (readonly ? DMIO_DEV_RDONLY : 0),
			      &leg->dev);

	if (r == -EBUSY) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: already in use (the block device is open "
			    "exclusively, probably by another fusemirror mount)", leg->path);
		return r;
	}
	if (r == -ENOTBLK) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "leg %s: not a regular file or block device", leg->path);
		return -EINVAL;
	}
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", leg->path, g_strerror(-r));
		return r;
	}
	return lock_leg(leg, readonly, err);
}

static int read_sb(struct mirror_leg *leg, GError **err)
{
	g_autoptr(GError) e = NULL;
	int r = fm_sb_read(leg->dev, &leg->sb, &e);

	if (r == 0)
		return 0;
	switch (r) {
	case -ENODATA:
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "leg %s: not a fusemirror leg (no superblock; create "
			    "the array with 'fusemirror create')", leg->path);
		return -EINVAL;
	case -EBADMSG:
		g_set_error(err, FM_MIRROR_ERROR, EUCLEAN,
			    "leg %s: superblock is damaged (checksum mismatch)", leg->path);
		return -EUCLEAN;
	default:
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", leg->path,
			    e ? e->message : g_strerror(-r));
		return r;
	}
}

/* Do @a and @b describe the same array geometry? */
static const char *geometry_differs(const struct fm_sb *a, const struct fm_sb *b)
{
	if (a->image_size != b->image_size)
		return "image size";
	if (a->data_offset != b->data_offset)
		return "data offset";
	if (a->region_size != b->region_size)
		return "region size";
	if (a->bitmap_offset != b->bitmap_offset || a->bitmap_length != b->bitmap_length)
		return "bitmap area";
	if (a->nr_legs != b->nr_legs)
		return "number of legs";
	return NULL;
}

static int check_legs(struct mirror *m, GError **err)
{
	const struct mirror_leg *first = &m->legs[0];
	char u1[37], u2[37];
	uint64_t max_events = 0;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		const struct mirror_leg *leg = &m->legs[i];
		uint64_t need = fm_sb_leg_bytes(&leg->sb);
		const char *what;

		if (memcmp(leg->sb.array_uuid, first->sb.array_uuid, 16)) {
			g_set_error(err, FM_MIRROR_ERROR, EINVAL,
				    "leg %s: belongs to array %s, not %s (the array of leg %s)",
				    leg->path, fm_uuid_unparse(leg->sb.array_uuid, u1),
				    fm_uuid_unparse(first->sb.array_uuid, u2), first->path);
			return -EINVAL;
		}
		what = geometry_differs(&leg->sb, &first->sb);
		if (what) {
			g_set_error(err, FM_MIRROR_ERROR, EUCLEAN,
				    "leg %s: its %s differs from leg %s's", leg->path, what,
				    first->path);
			return -EUCLEAN;
		}
		if (dmio_dev_size(leg->dev) < need) {
			g_set_error(err, FM_MIRROR_ERROR, ENOSPC,
				    "leg %s: is %llu bytes, smaller than the %llu bytes "
				    "its superblock needs", leg->path,
				    (unsigned long long)dmio_dev_size(leg->dev),
				    (unsigned long long)need);
			return -ENOSPC;
		}
		for (unsigned j = 0; j < i; j++) {
			if (!memcmp(m->legs[j].sb.leg_uuid, leg->sb.leg_uuid, 16)) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: is the same leg as %s (leg uuid %s; "
					    "a copy of a leg is not a second leg)", leg->path,
					    m->legs[j].path, fm_uuid_unparse(leg->sb.leg_uuid, u1));
				return -EINVAL;
			}
		}
		if (leg->sb.events > max_events)
			max_events = leg->sb.events;
	}
	for (unsigned i = 0; i < m->nr_legs; i++) {
		const struct mirror_leg *leg = &m->legs[i];

		if (leg->sb.events < max_events) {
			g_set_error(err, FM_MIRROR_ERROR, ESTALE,
				    "leg %s: is stale (event counter %llu, the others have "
				    "%llu): it missed writes and cannot be assembled as current",
				    leg->path, (unsigned long long)leg->sb.events,
				    (unsigned long long)max_events);
			return -ESTALE;
		}
	}
	/* Every in-sync slot of the (newest) leg table must be given. */
	for (unsigned s = 0; s < first->sb.nr_legs; s++) {
		const struct fm_sb_leg *slot = &first->sb.legs[s];
		bool found = false;

		if (slot->state != FM_LEG_IN_SYNC)
			continue;
		for (unsigned i = 0; i < m->nr_legs && !found; i++)
			found = !memcmp(m->legs[i].sb.leg_uuid, slot->uuid, 16);
		if (!found) {
			g_set_error(err, FM_MIRROR_ERROR, ENODEV,
				    "array %s has %u legs; leg %u (uuid %s) was not given",
				    fm_uuid_unparse(first->sb.array_uuid, u1),
				    first->sb.nr_legs, s, fm_uuid_unparse(slot->uuid, u2));
			return -ENODEV;
		}
	}
	for (unsigned i = 0; i < m->nr_legs; i++) {
		const struct mirror_leg *leg = &m->legs[i];
		uint32_t st = first->sb.legs[leg->sb.leg_index].state;

		if (memcmp(first->sb.legs[leg->sb.leg_index].uuid, leg->sb.leg_uuid, 16) ||
		    st != FM_LEG_IN_SYNC) {
			g_set_error(err, FM_MIRROR_ERROR, ESTALE,
				    "leg %s: the array's leg table does not list it as in sync",
				    leg->path);
			return -ESTALE;
		}
	}
	return 0;
}

int mirror_write_superblocks(struct mirror *m, bool clean)
{
	uint64_t events = m->legs[0].sb.events + 1;
	int first_err = 0;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];
		int r;

		if (leg->state != FM_LEG_IN_SYNC)
			continue;
		leg->sb.events = events;
		if (clean)
			leg->sb.state_flags |= FM_SB_CLEAN;
		else
			leg->sb.state_flags &= ~FM_SB_CLEAN;
		r = fm_sb_write(leg->dev, &leg->sb);
		if (r < 0) {
			fm_err("leg %s: cannot write the superblock: %s", leg->path,
			       strerror(-r));
			if (!first_err)
				first_err = r;
		}
	}
	return first_err;
}

int mirror_assemble(const char *const *paths, unsigned n, const struct mirror_opts *opts,
		    struct mirror **ret_m, GError **err)
{
	struct mirror_opts o = opts ? *opts : (struct mirror_opts){ 0 };
	struct mirror *m;
	struct stat st[FM_SB_MAX_LEGS];
	char u[37];
	int r;

	if (n == 0 || n > FM_SB_MAX_LEGS) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "an array has 1 to %u legs, %u given", FM_SB_MAX_LEGS, n);
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		if (stat(paths[i], &st[i]) < 0) {
			r = -errno;
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", paths[i],
				    g_strerror(-r));
			return r;
		}
		for (unsigned j = 0; j < i; j++) {
			bool same = S_ISBLK(st[i].st_mode) ?
				(S_ISBLK(st[j].st_mode) && st[i].st_rdev == st[j].st_rdev) :
				(st[i].st_dev == st[j].st_dev && st[i].st_ino == st[j].st_ino);

			if (same) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: given twice (same file as %s)",
					    paths[i], paths[j]);
				return -EINVAL;
			}
		}
	}

	m = mirror_alloc(n);
	if (!m) {
		g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
		return -ENOMEM;
	}
	m->readonly = o.readonly;
	m->read_policy = o.read_policy;
	m->client = dmio_client_create(256);
	if (!m->client) {
		mirror_free(m);
		g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg *leg = &m->legs[i];

		leg->path = strdup(paths[i]);
		leg->state = FM_LEG_IN_SYNC;
		atomic_init(&leg->next_sector, UINT64_MAX);
		r = leg->path ? open_leg(leg, o.readonly, err) : -ENOMEM;
		if (r == 0)
			r = read_sb(leg, err);
		if (r < 0)
			goto fail;
	}
	r = check_legs(m, err);
	if (r < 0)
		goto fail;

	m->image_size = m->legs[0].sb.image_size;
	m->data_sector = m->legs[0].sb.data_offset >> FM_SECTOR_SHIFT;
	if (!(m->legs[0].sb.state_flags & FM_SB_CLEAN))
		fm_warn("array %s was not stopped cleanly; its legs may differ in the "
			"regions written last (resync arrives with the write-intent bitmap)",
			fm_uuid_unparse(m->legs[0].sb.array_uuid, u));
	if (!m->readonly && !o.defer_in_use) {
		r = mirror_mark_in_use(m, err);
		if (r < 0)
			goto fail;
	}
	fm_notice("array %s assembled: %u legs, %llu bytes%s",
		  fm_uuid_unparse(m->legs[0].sb.array_uuid, u), n,
		  (unsigned long long)m->image_size, m->readonly ? ", read-only" : "");
	*ret_m = m;
	return 0;
fail:
	mirror_free(m);
	return r;
}

int mirror_mark_in_use(struct mirror *m, GError **err)
{
	int r;

	if (m->readonly) {
		g_set_error(err, FM_MIRROR_ERROR, EROFS, "the array is assembled read-only");
		return -EROFS;
	}
	if (atomic_load(&m->in_use))
		return 0;
	r = mirror_write_superblocks(m, false);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot mark the array in use: %s",
			    g_strerror(-r));
		return r;
	}
	atomic_store(&m->in_use, true);
	return 0;
}

int mirror_stop(struct mirror *m, GError **err)
{
	int r = 0;

	if (!m->readonly && atomic_load(&m->in_use)) {
		r = mirror_flush(m);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, EIO,
				    "flushing the legs failed; the array stays marked dirty");
		} else if (atomic_load(&m->write_error_seen)) {
			r = -EIO;
			g_set_error(err, FM_MIRROR_ERROR, EIO,
				    "a write failed on some leg; the array stays marked dirty");
		} else {
			r = mirror_write_superblocks(m, true);
			if (r < 0)
				g_set_error(err, FM_MIRROR_ERROR, -r,
					    "cannot mark the array clean: %s", g_strerror(-r));
		}
	}
	mirror_free(m);
	return r;
}
