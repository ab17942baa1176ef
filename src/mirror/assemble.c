/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Assembly: open and lock the legs, check that they belong together, load
 * the write-intent bitmap, mark the array in use and start what must be
 * resynced; and the clean stop that undoes it.
 *
 * A leg is assembled as current only when its superblock says so: same
 * array, same geometry, the highest event counter, and its slot in the
 * newest leg table in sync.  A leg of the array that is behind (stale
 * events, failed, removed, or rebuilding when the array stopped) is
 * re-added and recovered: from the bitmap when it was in the array's
 * table as failed, stale or removed (no bit is cleared while the array is
 * degraded, so the bits cover what it missed), wholly when it was being
 * rebuilt.  Everything that cannot be assembled is refused by name before
 * any byte is written, so a refused assembly leaves every leg as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mirror_i.h"

/* How long a lock held by someone else (a file's OFD lock, a block
 * device's O_EXCL claim) is retried before the mount gives up: a daemon
 * killed with -9 lets go of its legs only once the kernel has torn down
 * its io_uring instance, which happens after the process is gone (a work
 * item that waits for the I/O still in flight and then drops the ring's
 * file references), so a mount right after the kill can find the lock
 * held for a moment. */
#define LOCK_WAIT_MS 2000

/* The pause of a lock retry loop begun at @start (fm_now_ns()): false once
 * LOCK_WAIT_MS have passed, else sleep 10 ms and true. */
static bool lock_wait_more(uint64_t start)
{
	if (fm_now_ns() - start >= LOCK_WAIT_MS * 1000000ull)
		return false;
	g_usleep(10000);
	return true;
}

/* Lock a regular file leg with an OFD lock (released when the fd closes,
 * also if the daemon dies).  Block devices were opened O_EXCL instead. */
static int lock_leg(struct mirror_leg *leg, bool readonly, GError **err)
{
	struct flock fl = {
		.l_type = readonly ? F_RDLCK : F_WRLCK,
		.l_whence = SEEK_SET,
	};
	uint64_t start = fm_now_ns();
	int r;

	if (dmio_dev_is_blockdev(leg->dev) || dmio_dev_is_remote(leg->dev))
		return 0; /* a remote leg: its server decides who shares it */
	while ((r = fcntl(dmio_dev_fd(leg->dev), F_OFD_SETLK, &fl)) < 0 &&
	       (errno == EAGAIN || errno == EACCES || errno == EINTR) &&
	       lock_wait_more(start))
		;
	if (r == 0) {
		if (fm_now_ns() - start >= 10000000ull)
			fm_debug("leg %s: locked after waiting %llu ms for its last holder "
				 "to let go", leg->path,
				 (unsigned long long)((fm_now_ns() - start) / 1000000));
		return 0;
	}
	if (errno == EAGAIN || errno == EACCES) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: already in use (locked by another process, "
			    "probably another fusemirror mount; waited %d s for it)",
			    leg->path, LOCK_WAIT_MS / 1000);
		return -EBUSY;
	}
	g_set_error(err, FM_MIRROR_ERROR, errno, "leg %s: cannot lock: %s",
		    leg->path, g_strerror(errno));
	return -errno;
}

int mirror_handshake_timeout(const char *path, unsigned connect_timeout_ms, GError **err)
{
	g_set_error(err, FM_MIRROR_ERROR, ETIMEDOUT,
		    "leg %s: the server accepted the connection but finished no NBD "
		    "handshake in %u ms (remote_connect_timeout)", path,
		    connect_timeout_ms ? connect_timeout_ms : DMIO_REMOTE_CONNECT_TIMEOUT_MS);
	return -ETIMEDOUT;
}

int mirror_open_leg(struct mirror_leg *leg, bool readonly, unsigned connect_timeout_ms,
		    GError **err)
{
	unsigned flags = DMIO_DEV_EXCL | (readonly ? DMIO_DEV_RDONLY : 0);
	uint64_t start = fm_now_ns();
	int r;

	/* A block device's exclusive claim: retried like lock_leg()'s lock. */
	while ((r = dmio_dev_open_timeout(leg->path, flags, connect_timeout_ms,
					  &leg->dev)) == -EBUSY &&
	       !dmio_path_is_remote(leg->path) && lock_wait_more(start))
		;
	if (r == -EBUSY) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: already in use (the block device is open "
			    "exclusively, probably by another fusemirror mount; waited %d s "
			    "for it)", leg->path, LOCK_WAIT_MS / 1000);
		return r;
	}
	if (r == -ENOTBLK) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "leg %s: not a regular file or block device", leg->path);
		return -EINVAL;
	}
	if (r == -ETIMEDOUT && dmio_path_is_remote(leg->path))
		return mirror_handshake_timeout(leg->path, connect_timeout_ms, err);
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
	return NULL;
}

static const char *slot_state_name(uint32_t st)
{
	switch (st) {
	case FM_LEG_IN_SYNC: return "in sync";
	case FM_LEG_FAULTY: return "faulty";
	case FM_LEG_REBUILDING: return "rebuilding";
	case FM_LEG_REMOVED: return "removed";
	default: return "not in use";
	}
}

/* The state of @sb's own leg in its own table. */
static uint32_t own_state(const struct fm_sb *sb)
{
	return sb->legs[sb->leg_index].state;
}

/* Did @x run without @y: is @y's slot in @x's own leg table anything but
 * @y in sync?  Then @x's superblock was written while @y was out. */
static bool ran_without(const struct fm_sb *x, const struct fm_sb *y)
{
	const struct fm_sb_leg *e = &x->legs[y->leg_index];

	return y->leg_index >= x->nr_legs || memcmp(e->uuid, y->leg_uuid, 16) ||
	       e->state != FM_LEG_IN_SYNC;
}

/*
 * Are @x and @y two sides of a split brain: has each been written without
 * the other?  Either each one's table says the other is out (both were
 * started without the other, e.g. each alone with --degraded), or @x's
 * table says @y failed or is missing while @y, in sync by its own table,
 * went on past the last update at which @x saw it in sync (@y was restored
 * from an old copy, or started alone, after @x had already moved on; a leg
 * that merely failed never gets past that point).  A leg that was being
 * rebuilt is not a side: its own table says so.
 */
static bool one_sided(const struct fm_sb *x, const struct fm_sb *y)
{
	const struct fm_sb_leg *e = &x->legs[y->leg_index];

	return (x->features & FM_SB_FEAT_GENERATIONS) && y->leg_index < x->nr_legs &&
	       !memcmp(e->uuid, y->leg_uuid, 16) &&
	       (e->state == FM_LEG_FAULTY || e->state == FM_LEG_REMOVED) &&
	       own_state(y) == FM_LEG_IN_SYNC &&
	       y->events > x->last_in_sync[y->leg_index];
}

bool mirror_split_brain(const struct fm_sb *x, const struct fm_sb *y)
{
	return (ran_without(x, y) && ran_without(y, x)) || one_sided(x, y) || one_sided(y, x);
}

bool mirror_bitmap_covers(const struct fm_sb *ref, const struct fm_sb *leg)
{
	uint64_t seen = ref->last_in_sync[leg->leg_index];

	if (!(ref->features & FM_SB_FEAT_GENERATIONS))
		return true;    /* an array from before the records: as it was */
	/* A leg that left the array has, at worst, missed the superblock
	 * update that recorded its last in-sync state (seen - 1).  seen 0:
	 * never in sync since it was added, or its full rebuild stopped. */
	return seen && leg->events + 1 >= seen;
}

static void G_GNUC_PRINTF(3, 4) append_fmt(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

/*
 * Check the opened legs @tl[0..n) against each other and place them in
 * the slots of @m, with their state.  Nothing is written.
 */
static int check_legs(struct mirror *m, struct mirror_leg *tl, unsigned n,
		      const struct mirror_opts *o, GError **err)
{
	const struct mirror_leg *first = &tl[0], *newest = &tl[0], *ref;
	uint64_t max_events = 0;
	bool split[FM_SB_MAX_LEGS] = { false };
	unsigned nr_in_sync = 0;
	int prefer = -1;
	char u1[37], u2[37];

	for (unsigned i = 0; i < n; i++) {
		const struct mirror_leg *leg = &tl[i];
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
			if (!memcmp(tl[j].sb.leg_uuid, leg->sb.leg_uuid, 16)) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: is the same leg as %s (leg uuid %s; "
					    "a copy of a leg is not a second leg)", leg->path,
					    tl[j].path, fm_uuid_unparse(leg->sb.leg_uuid, u1));
				return -EINVAL;
			}
		}
		if (leg->sb.events > newest->sb.events)
			newest = leg;
		if (leg->sb.events > max_events)
			max_events = leg->sb.events;
	}
	if (o->prefer) {
		struct stat pst, lst;

		for (unsigned i = 0; i < n && prefer < 0; i++)
			if (dmio_dev_is_remote(tl[i].dev) && !strcmp(o->prefer, dmio_dev_name(tl[i].dev)))
				prefer = (int)i;
		if (prefer < 0 && stat(o->prefer, &pst) == 0)
			for (unsigned i = 0; i < n && prefer < 0; i++)
				if (fstat(dmio_dev_fd(tl[i].dev), &lst) == 0 &&
				    same_leg_file(&pst, &lst))
					prefer = (int)i;
		if (prefer < 0) {
			g_set_error(err, FM_MIRROR_ERROR, EINVAL,
				    "--prefer %s: not one of the legs given", o->prefer);
			return -EINVAL;
		}
	}
	/* Split brain: two legs written each without the other.  Never
	 * merged; only --prefer chooses a side.  A leg whose own table has
	 * it rebuilding is no side: it never served the image (an array
	 * needs an in-sync leg to start), so two legs stopped while both
	 * were rebuilding, each listing the other as rebuilding, are not
	 * two sides. */
	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = i + 1; j < n; j++) {
			const struct mirror_leg *a = &tl[i], *b = &tl[j];

			if (own_state(&a->sb) == FM_LEG_REBUILDING ||
			    own_state(&b->sb) == FM_LEG_REBUILDING ||
			    !mirror_split_brain(&a->sb, &b->sb))
				continue;
			if (prefer < 0) {
				g_set_error(err, FM_MIRROR_ERROR, EUCLEAN,
					    "split brain: leg %s (uuid %s, events %llu) and leg "
					    "%s (uuid %s, events %llu) were each written without "
					    "the other (%s last saw %s in sync at events %llu, "
					    "%s saw %s at %llu); nothing is merged: mount with "
					    "--prefer LEG naming the side to keep, the other "
					    "side is then rebuilt wholly from it and its "
					    "writes since are lost",
					    a->path, fm_uuid_unparse(a->sb.leg_uuid, u1),
					    (unsigned long long)a->sb.events,
					    b->path, fm_uuid_unparse(b->sb.leg_uuid, u2),
					    (unsigned long long)b->sb.events, a->path, b->path,
					    (unsigned long long)a->sb.last_in_sync[b->sb.leg_index],
					    b->path, a->path,
					    (unsigned long long)b->sb.last_in_sync[a->sb.leg_index]);
				return -EUCLEAN;
			}
			/* The side of the preferred leg wins. */
			if ((int)i == prefer)
				split[j] = true;
			else if ((int)j == prefer)
				split[i] = true;
		}
	}
	if (prefer >= 0) {
		bool any = false;

		for (unsigned i = 0; i < n; i++)
			any |= split[i];
		/* Without a split brain there is nothing to choose: the newest
		 * table decides, and --prefer may only name a current leg. */
		if (!any && tl[prefer].sb.events != newest->sb.events) {
			g_set_error(err, FM_MIRROR_ERROR, EINVAL,
				    "--prefer %s: there is no split brain among the legs "
				    "given, and this leg is behind (events %llu; leg %s has "
				    "%llu): --prefer only chooses a side of a split brain",
				    tl[prefer].path, (unsigned long long)tl[prefer].sb.events,
				    newest->path, (unsigned long long)newest->sb.events);
			return -EINVAL;
		}
		if (any)
			newest = &tl[prefer];
	}
	ref = newest;
	/* The reference table says who is who; the event counter goes past
	 * every leg given, so that the next update is newer than all. */
	m->sb = ref->sb;
	m->sb.events = max_events;
	atomic_store(&m->nr_bad, m->sb.nr_bad);         /* the bad-block list's */
	m->nr_legs = ref->sb.nr_legs;
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg *leg = &tl[i];
		unsigned slot = leg->sb.leg_index;
		const struct fm_sb_leg *e = &m->sb.legs[slot];
		const char *why = NULL;

		if (slot >= m->nr_legs || memcmp(e->uuid, leg->sb.leg_uuid, 16) ||
		    e->state == FM_LEG_EMPTY) {
			g_set_error(err, FM_MIRROR_ERROR, ESTALE,
				    "leg %s: is no longer a leg of array %s (its slot %u now "
				    "holds another leg); add it with 'fusemirror add'",
				    leg->path, fm_uuid_unparse(m->sb.array_uuid, u1), slot);
			return -ESTALE;
		}
		if (split[i]) {
			leg->full_rebuild = true;
			g_snprintf(leg->note, sizeof(leg->note), "split brain: on the other side "
				 "from the preferred leg %s (events %llu against %llu); its "
				 "writes made apart are discarded, rebuilt wholly", ref->path,
				 (unsigned long long)leg->sb.events,
				 (unsigned long long)ref->sb.events);
			fm_debug("leg %s: %s", leg->path, leg->note);
		} else if (e->state == FM_LEG_IN_SYNC && leg->sb.events == ref->sb.events) {
			atomic_store(&leg->state, FM_LEG_IN_SYNC);
			nr_in_sync++;
			continue;
		} else if (e->state == FM_LEG_IN_SYNC) {
			/* In sync by the table, yet behind it: the leg went back
			 * in time (restored from an old copy, its superblock
			 * writes lost).  Its own bitmap cannot say what it
			 * missed, nor can the array's (cleared since). */
			leg->full_rebuild = true;
			why = "went back in time: in sync in the array's table, but its "
			      "superblock is older (restored from an old copy, or its "
			      "superblock writes were lost)";
		} else if (e->state == FM_LEG_REBUILDING) {
			leg->full_rebuild = true;
			why = "was being rebuilt";
			/* Its own superblock is current: its checkpoint says
			 * how far the rebuild got (what lies below it was
			 * copied and flushed; a crash since is resynced from
			 * the bitmap). */
			if (leg->sb.events == ref->sb.events &&
			    leg->sb.recovery_offset <= ref->sb.image_size &&
			    (leg->sb.recovery_offset % ref->sb.region_size == 0 ||
			     leg->sb.recovery_offset == ref->sb.image_size)) {
				leg->recovery_offset = leg->sb.recovery_offset;
				if (leg->recovery_offset)
					why = "was being rebuilt; the rebuild resumes at its "
					      "checkpoint";
				/* A re-added leg's recovery goes on from the
				 * bitmap: no bit was cleared since it left (the
				 * array has been degraded all along), and the
				 * array's record of it says so too (a full
				 * rebuild zeroes it when the array is marked in
				 * use). */
				if ((leg->sb.recovery_flags & FM_SB_RECOVERY_BITMAP) &&
				    mirror_bitmap_covers(&ref->sb, &leg->sb) &&
				    ref->sb.last_in_sync[slot]) {
					leg->full_rebuild = false;
					why = leg->recovery_offset ?
					      "was being recovered from the write-intent "
					      "bitmap; the recovery resumes at its checkpoint" :
					      "was being recovered from the write-intent bitmap";
				}
			}
		} else {
			leg->full_rebuild = !mirror_bitmap_covers(&ref->sb, &leg->sb);
			why = leg->full_rebuild ?
			      (e->state == FM_LEG_FAULTY ? "is faulty in the array's table and "
			       "older than its last in-sync state there (restored from an old "
			       "copy?), or its rebuild had not finished" :
			       "was removed and is older than its last in-sync state") :
			      (e->state == FM_LEG_FAULTY ? "is faulty in the array's table" :
			       "was removed");
		}
		atomic_store(&leg->state, FM_LEG_REBUILDING);
		if (why) {
			g_snprintf(leg->note, sizeof(leg->note), "%s (events %llu, the array "
				 "has %llu): it %s; rebuilt %s",
				 leg->sb.events < ref->sb.events ? "stale" : "behind",
				 (unsigned long long)leg->sb.events,
				 (unsigned long long)ref->sb.events, why,
				 leg->full_rebuild ? "wholly" : "from the write-intent bitmap");
			fm_debug("leg %s: %s (the newest superblock is leg %s's)", leg->path,
				 leg->note, ref->path);
		}
	}
	/* Every in-sync slot of the reference table given, or missing. */
	for (unsigned s = 0; s < m->nr_legs; s++) {
		struct fm_sb_leg *e = &m->sb.legs[s];
		bool found = false;

		if (e->state != FM_LEG_IN_SYNC)
			continue;
		for (unsigned i = 0; i < n && !found; i++)
			found = !memcmp(tl[i].sb.leg_uuid, e->uuid, 16);
		if (found)
			continue;
		if (!o->degraded) {
			g_set_error(err, FM_MIRROR_ERROR, ENODEV,
				    "array %s has %u legs; leg %u (uuid %s) was not given, and "
				    "it holds current data (in sync in the superblock of leg %s, "
				    "events %llu): give every in-sync leg, or mount with "
				    "--degraded to start without it",
				    fm_uuid_unparse(m->sb.array_uuid, u1), m->nr_legs, s,
				    fm_uuid_unparse(e->uuid, u2), ref->path,
				    (unsigned long long)ref->sb.events);
			return -ENODEV;
		}
		e->state = FM_LEG_FAULTY;
		e->flags |= FM_SB_LEG_MISSING;
		e->events = m->sb.events + 1;
	}
	if (!nr_in_sync) {
		char legs[1024] = "";

		for (unsigned i = 0; i < n; i++)
			append_fmt(legs, sizeof(legs), "%s%s (events %llu, %s%s)",
				   i ? "; " : "", tl[i].path,
				   (unsigned long long)tl[i].sb.events,
				   slot_state_name(ref->sb.legs[tl[i].sb.leg_index].state),
				   tl[i].sb.events < ref->sb.events ? ", older" : "");
		for (unsigned s = 0; s < m->nr_legs; s++)
			if (ref->sb.legs[s].state == FM_LEG_IN_SYNC)
				append_fmt(legs, sizeof(legs), "; not given: leg %u (uuid %s, in "
					   "sync)", s, fm_uuid_unparse(ref->sb.legs[s].uuid, u1));
		g_set_error(err, FM_MIRROR_ERROR, ENODEV,
			    "array %s: none of the legs given holds the current data, so "
			    "none can be started as current; the newest superblock is leg "
			    "%s's (events %llu), whose table says: %s",
			    fm_uuid_unparse(m->sb.array_uuid, u2), ref->path,
			    (unsigned long long)ref->sb.events, legs);
		return -ENODEV;
	}
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg *dst = &m->legs[tl[i].sb.leg_index];

		dst->path = tl[i].path;
		dst->dev = tl[i].dev;
		dst->sb = tl[i].sb;
		memcpy(dst->uuid, tl[i].sb.leg_uuid, 16);
		dst->full_rebuild = tl[i].full_rebuild;
		dst->recovery_offset = tl[i].recovery_offset;
		memcpy(dst->note, tl[i].note, sizeof(dst->note));
		atomic_store(&dst->write_mostly,
			     (m->sb.legs[tl[i].sb.leg_index].flags & FM_SB_LEG_WRITE_MOSTLY) != 0);
		atomic_store(&dst->state, atomic_load(&tl[i].state));
		tl[i].path = NULL;
		tl[i].dev = NULL;
	}
	/* Slots not given keep their table state; an in-sync one is missing
	 * (above), a rebuilding one is failed, and its rebuild starts over
	 * wholly when it is re-added (whether it was from the bitmap is in
	 * its own superblock only, FM_SB_RECOVERY_BITMAP, and it is not
	 * here to say). */
	for (unsigned s = 0; s < m->nr_legs; s++) {
		if (m->legs[s].dev)
			continue;
		if (m->sb.legs[s].state == FM_LEG_REBUILDING) {
			m->sb.legs[s].state = FM_LEG_FAULTY;
			m->sb.legs[s].flags |= FM_SB_LEG_MISSING;
			m->sb.last_in_sync[s] = 0;
		}
		memcpy(m->legs[s].uuid, m->sb.legs[s].uuid, 16);
		if (m->sb.legs[s].state != FM_LEG_EMPTY)
			atomic_store(&m->legs[s].state, m->sb.legs[s].state == FM_LEG_REMOVED ?
				     FM_LEG_REMOVED : FM_LEG_FAULTY);
		if (m->sb.legs[s].flags & FM_SB_LEG_MISSING)
			fm_debug("leg %u (uuid %s): missing; the array starts without it "
				"(degraded); 'fusemirror add' brings it back and recovers what "
				"it missed", s,
				fm_uuid_unparse(m->sb.legs[s].uuid, u1));
	}
	return 0;
}

/* The union of the bitmaps (or written-region maps, at @offset) of the
 * in-sync legs (a bit may have reached some legs only, before a crash). */
static int read_bitmaps(struct mirror *m, uint64_t offset, const char *what,
			uint8_t **ret_bits, GError **err)
{
	size_t len = m->sb.bitmap_length;
	uint8_t *bits = NULL, *buf = NULL;

	if (posix_memalign((void **)&buf, 4096, len) || !(bits = calloc(1, len))) {
		free(buf);
		g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];
		struct dmio_region where = { leg->dev, offset >> FM_SECTOR_SHIFT,
					     len >> FM_SECTOR_SHIFT };
		struct dmio_request req = {
			.op = DMIO_OP_READ,
			.mem = { .type = DMIO_MEM_VM, .ptr.vma = buf },
		};
		int r;

		if (!leg->dev || leg_state(leg) != FM_LEG_IN_SYNC)
			continue;
		r = dmio(&req, 1, &where, NULL);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, EIO,
				    "leg %s: cannot read the %s: %s",
				    leg->path, what, g_strerror(-r));
			free(buf);
			free(bits);
			return -EIO;
		}
		for (size_t k = 0; k < len; k++)
			bits[k] |= buf[k];
	}
	free(buf);
	*ret_bits = bits;
	return 0;
}

/* Write @len bytes at @off of the metadata area at byte @area of every
 * leg, with FUA; @what names the write in a leg failure. */
static int area_write(struct mirror *m, uint64_t area, const void *buf, uint64_t off,
		      size_t len, const char *what)
{
	struct dmio_request req = {
		.op = DMIO_OP_WRITE,
		.flags = DMIO_REQ_FUA,
		.mem = { .type = DMIO_MEM_VM, .ptr.vma = (void *)buf },
	};
	bool failed;

	return mirror_legs_sync_io(m, &req, (area + off) >> FM_SECTOR_SHIFT,
				   len >> FM_SECTOR_SHIFT, what, &failed);
}

static int bm_write(void *ctx, const void *buf, uint64_t off, size_t len)
{
	struct mirror *m = ctx;

	return area_write(m, m->sb.bitmap_offset, buf, off, len, "bitmap write");
}

/* Before any bit is cleared: the checksums of its region on every leg,
 * then every leg's cache (csum.c has why this keeps them consistent). */
static int bm_flush(void *ctx)
{
	struct mirror *m = ctx;
	int r = mcsum_write_dirty(m);

	if (r < 0)
		return r;
	return mirror_flush(m);
}

static int bm_write_written(void *ctx, const void *buf, uint64_t off, size_t len)
{
	struct mirror *m = ctx;

	return area_write(m, m->sb.written_offset, buf, off, len, "written-region map write");
}

/* FM_SB_FEAT_ZERO_ON_WRITE: a region about to be written for the first
 * time holds whatever the legs held at create: zeroes first, by
 * write-zeroes (dmio unmaps where the leg can, else allocates without
 * writing, else writes zeroes).  0 when an in-sync leg took it. */
static int bm_zero_region(void *ctx, uint64_t region)
{
	struct mirror *m = ctx;
	uint64_t sector = region << m->region_shift;
	uint64_t image = m->image_size >> FM_SECTOR_SHIFT;
	struct dmio_request req = { .op = DMIO_OP_WRITE_ZEROES };
	bool failed;

	return mirror_legs_sync_io(m, &req, m->data_sector + sector,
				   MIN(1ull << m->region_shift, image - sector),
				   "zeroing a region written for the first time", &failed);
}

static const struct mbitmap_ops bm_ops = { .write = bm_write, .flush = bm_flush };
static const struct mbitmap_ops bm_ops_written = {
	.write = bm_write, .flush = bm_flush, .write_written = bm_write_written,
};
static const struct mbitmap_ops bm_ops_zero_on_write = {
	.write = bm_write, .flush = bm_flush, .write_written = bm_write_written,
	.zero_region = bm_zero_region,
};

static unsigned log2u64(uint64_t x)
{
	unsigned r = 0;

	while (x > 1) {
		x >>= 1;
		r++;
	}
	return r;
}

/* The events of a start: NewArray, UncleanStart, a LegStale per leg given
 * that is behind (with its note), a DeviceDisappeared per slot of the
 * table whose leg was not given, DegradedArray. */
static void report_assembly(struct mirror *m, bool unclean, uint64_t unclean_regions)
{
	pthread_mutex_lock(&m->state_lock);
	mirror_event_locked(m, FM_EVENT_ASSEMBLED, -1, mirror_in_sync_count(m), 0);
	if (unclean)
		mirror_event_locked(m, FM_EVENT_UNCLEAN_START, -1, unclean_regions, 0);
	for (unsigned s = 0; s < m->nr_legs; s++)
		if (m->legs[s].dev && m->legs[s].note[0] &&
		    leg_state(&m->legs[s]) == FM_LEG_REBUILDING)
			mirror_event_detail_locked(m, FM_EVENT_LEG_STALE, (int)s,
						   m->legs[s].full_rebuild, 0, "%s",
						   m->legs[s].note);
	for (unsigned s = 0; s < m->nr_legs; s++)
		if (!m->legs[s].dev && leg_state(&m->legs[s]) == FM_LEG_FAULTY)
			mirror_event_locked(m, FM_EVENT_LEG_MISSING, (int)s, 0, 0);
	mirror_event_degraded_locked(m);
	pthread_mutex_unlock(&m->state_lock);
}

int mirror_assemble(const char *const *paths, unsigned n, const struct mirror_opts *opts,
		    struct mirror **ret_m, GError **err)
{
	struct mirror_opts o = opts ? *opts : (struct mirror_opts){ 0 };
	struct mirror_leg *tl = NULL;
	g_autofree uint8_t *bits = NULL;
	g_autofree uint8_t *wbits = NULL;
	struct mirror *m;
	struct stat st[FM_SB_MAX_LEGS];
	bool unclean, reported = false;
	uint64_t unclean_regions = 0;
	char u[37];
	int r;

	if (n == 0 || n > FM_SB_MAX_LEGS) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "an array has 1 to %u legs, %u given", FM_SB_MAX_LEGS, n);
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		if (dmio_path_is_remote(paths[i])) {
			/* No inode to compare: the URI is the leg's identity. */
			memset(&st[i], 0, sizeof(st[i]));
			for (unsigned j = 0; j < i; j++) {
				if (!strcmp(paths[i], paths[j])) {
					g_set_error(err, FM_MIRROR_ERROR, EINVAL,
						    "leg %s: given twice", paths[i]);
					return -EINVAL;
				}
			}
			continue;
		}
		if (stat(paths[i], &st[i]) < 0) {
			r = -errno;
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", paths[i],
				    g_strerror(-r));
			return r;
		}
		for (unsigned j = 0; j < i; j++) {
			if (same_leg_file(&st[i], &st[j])) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: given twice (same file as %s)",
					    paths[i], paths[j]);
				return -EINVAL;
			}
		}
	}

	m = mirror_alloc();
	tl = calloc(n, sizeof(*tl));
	if (!m || !tl) {
		free(tl);
		mirror_free(m);
		g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
		return -ENOMEM;
	}
	m->readonly = o.readonly;
	m->read_policy = o.read_policy;
	m->max_read_errors = o.max_read_errors ? o.max_read_errors : 20;
	m->max_read_error_ppm = o.max_read_error_ppm ? o.max_read_error_ppm : 50000;
	m->read_error_decay_ns = (o.read_error_decay_ms ? o.read_error_decay_ms : 3600000ull) *
				 1000000ull;
	m->sync_speed_min = o.sync_speed_min ? o.sync_speed_min : 1ull << 20;
	m->sync_speed_max = o.sync_speed_max ? o.sync_speed_max : 200ull << 20;
	if (m->sync_speed_max < m->sync_speed_min)
		m->sync_speed_max = m->sync_speed_min;
	m->bitmap_delay_ms = o.bitmap_delay_ms ? o.bitmap_delay_ms : 5000;
	m->remote_timeout_ms = o.remote_timeout_ms;
	m->remote_connect_timeout_ms = o.remote_connect_timeout_ms;
	m->remote_retry_max_ms = o.remote_retry_max_ms ? o.remote_retry_max_ms : 30000;
	m->event_fn = o.event_fn;
	m->event_ctx = o.event_ctx;
	m->client = dmio_client_create(256);
	if (!m->client) {
		r = -ENOMEM;
		g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg *leg = &tl[i];

		leg->path = strdup(paths[i]);
		r = leg->path ? mirror_open_leg(leg, o.readonly, m->remote_connect_timeout_ms, err) : -ENOMEM;
		if (r == 0)
			mirror_leg_dev_setup(m, leg->dev);
		if (r == 0)
			r = read_sb(leg, err);
		if (r < 0)
			goto fail;
	}
	r = check_legs(m, tl, n, &o, err);
	if (r < 0)
		goto fail;

	m->image_size = m->sb.image_size;
	m->data_sector = m->sb.data_offset >> FM_SECTOR_SHIFT;
	m->region_shift = log2u64(m->sb.region_size >> FM_SECTOR_SHIFT);
	m->nr_regions = fm_sb_nr_regions(&m->sb);
	r = read_bitmaps(m, m->sb.bitmap_offset, "write-intent bitmap", &bits, err);
	if (r < 0)
		goto fail;
	if (m->sb.features & FM_SB_FEAT_WRITTEN_MAP) {
		r = read_bitmaps(m, m->sb.written_offset, "written-region map", &wbits, err);
		if (r < 0)
			goto fail;
	}
	unclean = !(m->sb.state_flags & FM_SB_CLEAN);
	atomic_store(&m->sync_src, mirror_pick_source(m));
	r = mcsum_load(m, err);
	if (r < 0)
		goto fail;
	if (unclean) {
		uint64_t words = (m->nr_regions + 63) / 64, *un = calloc(words, 8), set = 0;

		if (!un) {
			r = -ENOMEM;
			g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory");
			goto fail;
		}
		for (uint64_t g = 0; g < m->nr_regions; g++) {
			if (bits[g / 8] & (1u << (g % 8))) {
				un[g / 64] |= 1ull << (g % 64);
				set++;
			}
		}
		if (set) {
			atomic_store(&m->unsynced, un);
			m->nr_unsynced = set;
		} else {
			free(un);
		}
		unclean_regions = set;
		fm_debug("array %s was not stopped cleanly: %llu of %llu regions are marked "
			"in the write-intent bitmap and will be resynced",
			fm_uuid_unparse(m->sb.array_uuid, u), (unsigned long long)set,
			(unsigned long long)m->nr_regions);
	}
	if (!m->readonly) {
		m->bitmap = mbitmap_create(m->nr_regions, m->region_shift, m->sb.bitmap_length,
					   !wbits ? &bm_ops :
					   (m->sb.features & FM_SB_FEAT_ZERO_ON_WRITE) ?
					   &bm_ops_zero_on_write : &bm_ops_written, m,
					   m->bitmap_delay_ms);
		if (!m->bitmap) {
			r = -ENOMEM;
			g_set_error(err, FM_MIRROR_ERROR, ENOMEM, "out of memory (bitmap)");
			goto fail;
		}
		mbitmap_allow_clear(m->bitmap, false);  /* until in use */
		mbitmap_load(m->bitmap, bits, m->sb.bitmap_length);
		if (wbits)
			mbitmap_load_written(m->bitmap, wbits, m->sb.bitmap_length);
		r = mirror_state_init(m);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, -r, "cannot start a thread: %s",
				    g_strerror(-r));
			goto fail;
		}
		mirror_update_clearing(m);
	} else if (wbits) {
		m->ro_written = g_steal_pointer(&wbits);
		for (uint64_t g = 0; g < m->nr_regions; g++)
			m->ro_written_regions += !!(m->ro_written[g >> 3] & (1u << (g & 7)));
	}
	/* Reported before marking in use, which may start a resync. */
	report_assembly(m, unclean, unclean_regions);
	reported = true;
	if (!m->readonly && !o.defer_in_use) {
		r = mirror_mark_in_use(m, err);
		if (r < 0)
			goto fail;
	}
	fm_debug("array %s assembled: %u legs, %llu bytes%s",
		  fm_uuid_unparse(m->sb.array_uuid, u), n,
		  (unsigned long long)m->image_size, m->readonly ? ", read-only" : "");
	for (unsigned i = 0; i < n; i++)
		free(tl[i].path);
	free(tl);
	*ret_m = m;
	return 0;
fail:
	for (unsigned i = 0; i < n; i++) {
		dmio_dev_close(tl[i].dev);
		free(tl[i].path);
	}
	free(tl);
	if (reported)
		mirror_event(m, FM_EVENT_STOPPED, -1, 0, 0);
	mirror_state_exit(m);
	mirror_free(m);
	return r;
}

int mirror_mark_in_use(struct mirror *m, GError **err)
{
	bool recover = false;
	int r;

	if (m->readonly) {
		g_set_error(err, FM_MIRROR_ERROR, EROFS, "the array is assembled read-only");
		return -EROFS;
	}
	if (atomic_load(&m->in_use))
		return 0;
	pthread_mutex_lock(&m->state_lock);
	m->sb.state_flags &= ~FM_SB_CLEAN;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (m->legs[i].dev && leg_state(&m->legs[i]) == FM_LEG_REBUILDING) {
			m->sb.legs[i].state = FM_LEG_REBUILDING;
			m->sb.legs[i].flags &= ~(uint32_t)FM_SB_LEG_MISSING;
			if (m->legs[i].full_rebuild)
				m->sb.last_in_sync[i] = 0;
			recover = true;
		}
	}
	pthread_mutex_unlock(&m->state_lock);
	r = mirror_sb_update_sync(m);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot mark the array in use: %s",
			    g_strerror(-r));
		return r;
	}
	/* The written map in memory is the union of the legs' (a bit may
	 * have reached some legs only): give it to every leg before a write
	 * relies on it, so that no leg's own map ever lacks a written region
	 * (a leg assembled alone later reads its own). */
	r = mbitmap_sync_written(m->bitmap, true);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot write the written-region map: %s",
			    g_strerror(-r));
		return r;
	}
	/* The write-intent bitmap too: a leg rebuilt from it lacks the bits
	 * set while it was out, and may be the only in-sync leg a later
	 * start reads (arrays from before finish_recovery() wrote them). */
	r = mbitmap_write_all_sync(m->bitmap);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot write the write-intent bitmap: %s",
			    g_strerror(-r));
		return r;
	}
	atomic_store(&m->in_use, true);
	mirror_update_clearing(m);
	if (recover || atomic_load(&m->unsynced))
		mirror_sync_start(m, recover ? MIRROR_SYNC_RECOVER : MIRROR_SYNC_RESYNC, false);
	return 0;
}

int mirror_stop(struct mirror *m, GError **err)
{
	bool clean = false;
	int r = 0;

	mirror_reconnect_stop(m);
	mirror_sync_stop(m);
	if (m->readonly || !atomic_load(&m->in_use))
		clean = m->sb.state_flags & FM_SB_CLEAN;        /* left as it was */
	if (!m->readonly && atomic_load(&m->in_use)) {
		bool degraded;

		/* The checksums before CLEAN: a degraded array clears no bit,
		 * so nothing else writes them. */
		r = mcsum_write_dirty(m);
		/* Unwritten regions (discards) not yet on disk, flush first. */
		if (r == 0)
			r = mbitmap_sync_written(m->bitmap, false);
		if (r == 0)
			r = mirror_flush(m);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, EIO,
				    "flushing the legs failed; the array stays marked dirty");
		} else if (atomic_load(&m->unsynced)) {
			/* Not an error (md stops a resync the same way): the
			 * bits of the regions left are still set. */
			fm_debug("array stopped before its resync finished: it stays "
				  "marked dirty and resyncs the rest at the next mount");
		} else {
			pthread_mutex_lock(&m->state_lock);
			degraded = mirror_degraded_locked(m);
			pthread_mutex_unlock(&m->state_lock);
			/* Legs equal: no region needs a resync any more. */
			if (!degraded)
				mbitmap_clear_all_sync(m->bitmap);
			pthread_mutex_lock(&m->state_lock);
			m->sb.state_flags |= FM_SB_CLEAN;
			pthread_mutex_unlock(&m->state_lock);
			r = mirror_sb_update_sync(m);
			if (r < 0)
				g_set_error(err, FM_MIRROR_ERROR, -r,
					    "cannot mark the array clean: %s", g_strerror(-r));
			clean = r == 0;
		}
	}
	mirror_event(m, FM_EVENT_STOPPED, -1, clean, r < 0 ? -r : 0);
	mirror_state_exit(m);
	mirror_free(m);
	return r;
}

int mirror_find_leg(struct mirror *m, const char *path)
{
	struct stat st, lst;

	for (unsigned i = 0; i < m->nr_legs; i++)
		if (m->legs[i].path && !strcmp(m->legs[i].path, path))
			return (int)i;
	if (stat(path, &st) < 0)
		return -errno;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (!m->legs[i].dev || fstat(dmio_dev_fd(m->legs[i].dev), &lst) < 0)
			continue;
		if (same_leg_file(&st, &lst))
			return (int)i;
	}
	return -ENODEV;
}
