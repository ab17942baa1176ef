/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Online administration of an assembled array (like mdadm --manage and
 * md's sync_action): fail, remove, add, replace, scrub, fault injection;
 * and the array's status.
 *
 * Invariants:
 *   - One administration call at a time (admin_lock); each one changes the
 *     leg table under state_lock and waits until the superblocks record the
 *     change before it returns.
 *   - A leg's dev and path are taken away only after its state forbids
 *     new I/O and its in-flight count has dropped to zero (leg_get), and
 *     under state_lock (status reads them there).
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mirror_i.h"

static const char *state_word(enum fm_leg_state st)
{
	switch (st) {
	case FM_LEG_IN_SYNC: return "in sync";
	case FM_LEG_FAULTY: return "faulty";
	case FM_LEG_REBUILDING: return "being rebuilt";
	case FM_LEG_REMOVED: return "removed";
	default: return "not in use";
	}
}

static int find_leg(struct mirror *m, const char *path, GError **err)
{
	int i = mirror_find_leg(m, path);

	if (i >= 0 && m->legs[i].dev)
		return i;
	g_set_error(err, FM_MIRROR_ERROR, ENODEV, "leg %s: not a leg of this array%s", path,
		    i == -ENOENT ? " (no such file)" : "");
	return -ENODEV;
}

static int check_writable(struct mirror *m, GError **err)
{
	if (m->readonly || !atomic_load(&m->in_use)) {
		g_set_error(err, FM_MIRROR_ERROR, EROFS, "the array is read-only");
		return -EROFS;
	}
	return 0;
}

/* As mirror_retire_leg(); @quiet: no Remove event (the leg is not leaving:
 * a dead remote connection closed to be replaced by a new one). */
static void retire_leg(struct mirror *m, unsigned i, bool forget, const char *why, bool quiet);

void mirror_retire_leg(struct mirror *m, unsigned i, bool forget, const char *why)
{
	retire_leg(m, i, forget, why, false);
}

static void retire_leg(struct mirror *m, unsigned i, bool forget, const char *why, bool quiet)
{
	struct mirror_leg *leg = &m->legs[i];
	struct dmio_dev *dev;
	char *path;

	pthread_mutex_lock(&m->state_lock);
	if (leg_state(leg) == FM_LEG_IN_SYNC || leg_state(leg) == FM_LEG_REBUILDING) {
		atomic_store(&leg->state, FM_LEG_FAULTY);
		if (m->bitmap)
			mbitmap_allow_clear(m->bitmap, false);
	}
	pthread_mutex_unlock(&m->state_lock);
	/* No new I/O can take the leg now; wait for what holds it. */
	while (atomic_load(&leg->inflight)) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&m->state_lock);
	dev = leg->dev;
	path = leg->path;
	/* Reported while the slot still names the leg. */
	if (!quiet)
		mirror_event_locked(m, FM_EVENT_LEG_REMOVED, (int)i, 0, 0);
	leg->dev = NULL;
	leg->path = NULL;
	if (forget) {
		/* Its bad blocks go with it (a removed leg keeps them for
		 * its re-add: its bitmap recovery would not rewrite them). */
		mirror_bad_drop_slot_locked(m, i);
		memset(&m->sb.legs[i], 0, sizeof(m->sb.legs[i]));
		m->sb.last_in_sync[i] = 0;
		memset(leg->uuid, 0, 16);
		atomic_store(&leg->state, FM_LEG_EMPTY);
	} else {
		m->sb.legs[i].state = FM_LEG_REMOVED;
		m->sb.legs[i].events = m->sb.events + 1;
		atomic_store(&leg->state, FM_LEG_REMOVED);
	}
	mirror_sb_request_locked(m);
	mirror_event_degraded_locked(m);
	pthread_mutex_unlock(&m->state_lock);
	fm_debug("leg %s: %s, closed", path, why);
	dmio_dev_close(dev);
	free(path);
	mirror_update_clearing(m);
}

int mirror_fail_leg(struct mirror *m, const char *path, GError **err)
{
	int i, r = 0;

	pthread_mutex_lock(&m->admin_lock);
	if ((i = find_leg(m, path, err)) < 0 || (r = check_writable(m, err)) < 0)
		goto out;
	switch (leg_state(&m->legs[i])) {
	case FM_LEG_IN_SYNC:
		if (mirror_in_sync_count(m) == 1) {
			g_set_error(err, FM_MIRROR_ERROR, EBUSY,
				    "leg %s: is the last leg in sync; failing it would fail "
				    "the array", path);
			r = -EBUSY;
			goto out;
		}
		break;
	case FM_LEG_REBUILDING:
		break;
	default:
		g_set_error(err, FM_MIRROR_ERROR, EALREADY, "leg %s: is already %s", path,
			    state_word(leg_state(&m->legs[i])));
		r = -EALREADY;
		goto out;
	}
	mirror_leg_failed(m, (unsigned)i, "marked faulty by the administrator", 0);
	mirror_reconnect_cancel(m, (unsigned)i);
	r = mirror_sb_update_sync(m);
	if (r < 0)
		g_set_error(err, FM_MIRROR_ERROR, EIO, "cannot record the change: no leg "
			    "took the superblock update");
out:
	pthread_mutex_unlock(&m->admin_lock);
	return i < 0 ? i : r;
}

int mirror_remove_leg(struct mirror *m, const char *path, GError **err)
{
	int i, r = 0;

	pthread_mutex_lock(&m->admin_lock);
	if ((i = find_leg(m, path, err)) < 0 || (r = check_writable(m, err)) < 0)
		goto out;
	if (leg_state(&m->legs[i]) != FM_LEG_FAULTY) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: is %s; only a faulty leg can be removed (fail it first)",
			    path, state_word(leg_state(&m->legs[i])));
		r = -EBUSY;
		goto out;
	}
	mirror_retire_leg(m, (unsigned)i, false, "removed from the array");
	mirror_reconnect_cancel(m, (unsigned)i);
	mirror_sb_update_sync(m);
out:
	pthread_mutex_unlock(&m->admin_lock);
	return i < 0 ? i : r;
}

/* Is @path a leg of this array that may be re-added (failed, stale or
 * removed)?  Returns its slot (>= 0) with *ret_dev opened and locked, 1 in
 * *ret_full when it must be rebuilt wholly; -ENOENT when it is not such a
 * leg (then nothing is open); other -errno with @err. */
static int open_readd(struct mirror *m, const char *path, struct dmio_dev **ret_dev,
		      bool *ret_full, char *note, size_t note_size, GError **err)
{
	struct mirror_leg tmp = { .path = (char *)path };
	struct fm_sb sb;
	int r, slot;

	if (!dmio_path_is_remote(path) && access(path, F_OK) < 0)
		return -ENOENT;
	r = mirror_open_leg(&tmp, false, m->remote_connect_timeout_ms, err);
	if (r < 0)
		return r;
	if (fm_sb_read(tmp.dev, &sb, NULL) < 0 || memcmp(sb.array_uuid, m->sb.array_uuid, 16) ||
	    sb.image_size != m->sb.image_size || sb.data_offset != m->sb.data_offset ||
	    sb.region_size != m->sb.region_size || sb.leg_index >= m->nr_legs ||
	    memcmp(m->sb.legs[sb.leg_index].uuid, sb.leg_uuid, 16) ||
	    m->legs[sb.leg_index].dev) {
		dmio_dev_close(tmp.dev);
		return -ENOENT;
	}
	slot = (int)sb.leg_index;
	switch (m->sb.legs[slot].state) {
	case FM_LEG_FAULTY:
	case FM_LEG_REMOVED:
		*ret_full = !m->bitmap || !mirror_bitmap_covers(&m->sb, &sb);
		if (*ret_full && m->bitmap) {
			g_snprintf(note, note_size, "re-added: older (events %llu) than its last "
				 "in-sync state in the array (events %llu), or its rebuild had "
				 "not finished; rebuilt wholly", (unsigned long long)sb.events,
				 (unsigned long long)m->sb.last_in_sync[slot]);
			fm_debug("leg %s: %s", path, note);
		} else {
			g_snprintf(note, note_size, "re-added (events %llu, the array's %llu): "
				 "recovering the regions written meanwhile (bitmap)",
				 (unsigned long long)sb.events, (unsigned long long)m->sb.events);
		}
		break;
	default:
		*ret_full = true;
		g_snprintf(note, note_size, "re-added: was being rebuilt; rebuilt wholly");
		break;
	}
	/* It ran without this array's legs (started alone, split brain):
	 * adding it chooses this side; what it wrote alone is overwritten. */
	if (mirror_split_brain(&m->sb, &sb)) {
		*ret_full = true;
		g_snprintf(note, note_size, "re-added after a split brain: written while "
			 "apart from this array (its events %llu, the array's %llu); its "
			 "writes made apart are discarded, rebuilt wholly",
			 (unsigned long long)sb.events, (unsigned long long)m->sb.events);
		fm_debug("leg %s: %s", path, note);
	}
	*ret_dev = tmp.dev;
	return slot;
}

/* add_leg_locked()'s flag beside MIRROR_ADD_*: the reconnection thread
 * re-adds a remote leg (event LegReconnected instead of Add). */
#define ADD_RECONNECT (1u << 31)

/* Add @path in a slot and make it REBUILDING; the caller starts the
 * recovery.  admin_lock held. */
static int add_leg_locked(struct mirror *m, const char *path, unsigned flags, int replaces,
			  GError **err)
{
	bool force = flags & MIRROR_ADD_FORCE;
	struct dmio_dev *dev = NULL;
	bool full = true, created = false;
	char note[320] = "added: a new leg, rebuilt wholly";
	uint8_t uuid[16];
	int slot, r;
	char u[37];

	if ((r = check_writable(m, err)) < 0)
		return r;
	r = mirror_find_leg(m, path);
	if (r >= 0 && m->legs[r].dev && dmio_dev_is_remote(m->legs[r].dev) &&
	    leg_state(&m->legs[r]) == FM_LEG_FAULTY) {
		/* A remote leg whose connection is gone: its device is dead
		 * for good; a new connection re-adds it (md's --re-add).  No
		 * Remove: the leg does not leave, only its connection. */
		retire_leg(m, (unsigned)r, false, "closed to reconnect", true);
	}
	if (r >= 0 && m->legs[r].dev) {
		g_set_error(err, FM_MIRROR_ERROR, EEXIST, "leg %s: is already a leg of the "
			    "array (%s)", path, state_word(leg_state(&m->legs[r])));
		return -EEXIST;
	}
	slot = open_readd(m, path, &dev, &full, note, sizeof(note), err);
	if (slot >= 0)
		mirror_leg_dev_setup(m, dev);
	if (slot >= 0) {
		memcpy(uuid, m->sb.legs[slot].uuid, 16);
		fm_debug("leg %s: re-added to array %s in slot %d (%s recovery)", path,
			  fm_uuid_unparse(m->sb.array_uuid, u), slot,
			  full ? "full" : "bitmap-based");
	} else if (slot != -ENOENT) {
		return slot;
	} else {
		r = mirror_open_new_leg(path, force, fm_sb_leg_bytes(&m->sb),
					m->remote_connect_timeout_ms, &dev, &created, err);
		if (r < 0)
			return r;
		mirror_leg_dev_setup(m, dev);
		full = true;
		slot = -1;
		for (unsigned s = 0; s < m->nr_legs && slot < 0; s++) {
			uint32_t st = m->sb.legs[s].state;

			if (!m->legs[s].dev && (st == FM_LEG_EMPTY || st == FM_LEG_REMOVED ||
						st == FM_LEG_FAULTY))
				slot = (int)s;
		}
		if (slot < 0 && m->nr_legs >= FM_SB_MAX_LEGS) {
			dmio_dev_close(dev);
			if (created)
				unlink(path);
			g_set_error(err, FM_MIRROR_ERROR, ENOSPC,
				    "the array already has %u legs, the most it can have",
				    FM_SB_MAX_LEGS);
			return -ENOSPC;
		}
		if (slot < 0)
			slot = (int)m->nr_legs;
		fm_uuid_generate(uuid);
		r = fm_sb_clear_bitmap(dev, &m->sb);
		if (r < 0) {
			dmio_dev_close(dev);
			if (created)
				unlink(path);
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot write it: %s",
				    path, g_strerror(-r));
			return r;
		}
		fm_debug("leg %s: added to array %s in slot %d (full recovery)", path,
			  fm_uuid_unparse(m->sb.array_uuid, u), slot);
	}
	pthread_mutex_lock(&m->state_lock);
	{
		struct mirror_leg *leg = &m->legs[slot];

		leg->path = strdup(path);
		memcpy(leg->uuid, uuid, 16);
		leg->full_rebuild = full;
		g_strlcpy(leg->note, note, sizeof(leg->note));
		leg->recovery_offset = 0;
		atomic_store(&leg->joined, ++m->joins);
		mirror_leg_errors_reset(leg);
		atomic_store(&leg->next_sector, UINT64_MAX);
		leg->dev = dev;
		atomic_store_explicit(&leg->state, FM_LEG_REBUILDING, memory_order_release);
		/* A new leg starts without flags; a re-added one keeps its own
		 * (and its bad blocks, unless it is rebuilt wholly). */
		if (memcmp(m->sb.legs[slot].uuid, uuid, 16))
			m->sb.legs[slot].flags = 0;
		if (full || memcmp(m->sb.legs[slot].uuid, uuid, 16))
			mirror_bad_drop_slot_locked(m, (unsigned)slot);
		if (flags & MIRROR_ADD_WRITE_MOSTLY)
			m->sb.legs[slot].flags |= FM_SB_LEG_WRITE_MOSTLY;
		m->sb.legs[slot].flags &= ~(uint32_t)(FM_SB_LEG_REPLACEMENT |
						      FM_SB_LEG_REPLACED_MASK);
		if (replaces >= 0)
			m->sb.legs[slot].flags |= FM_SB_LEG_REPLACEMENT |
				((uint32_t)replaces << FM_SB_LEG_REPLACED_SHIFT);
		atomic_store(&leg->write_mostly,
			     (m->sb.legs[slot].flags & FM_SB_LEG_WRITE_MOSTLY) != 0);
		memcpy(m->sb.legs[slot].uuid, uuid, 16);
		m->sb.legs[slot].state = FM_LEG_REBUILDING;
		m->sb.legs[slot].flags &= ~(uint32_t)FM_SB_LEG_MISSING;
		if (full)       /* not in sync again until the end of its rebuild */
			m->sb.last_in_sync[slot] = 0;
		m->sb.legs[slot].events = m->sb.events + 1;
		if ((unsigned)slot >= m->nr_legs) {
			m->nr_legs = (unsigned)slot + 1;
			m->sb.nr_legs = m->nr_legs;
		}
		if (flags & ADD_RECONNECT) {
			uint64_t bytes = m->image_size;

			if (!full && m->bitmap) {
				bytes = mbitmap_weight(m->bitmap) <<
					(m->region_shift + FM_SECTOR_SHIFT);
				if (bytes > m->image_size)
					bytes = m->image_size;
			}
			mirror_event_detail_locked(m, FM_EVENT_LEG_RECONNECTED, slot, bytes, 0,
						   "%s", note);
		} else {
			mirror_event_detail_locked(m, FM_EVENT_LEG_ADDED, slot, full, 0, "%s",
						   note);
		}
		mirror_event_degraded_locked(m);
	}
	pthread_mutex_unlock(&m->state_lock);
	mirror_update_clearing(m);
	r = mirror_sb_update_sync(m);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, EIO, "cannot record the new leg: no leg "
			    "took the superblock update");
		return r;
	}
	return slot;
}

/*
 * The tail of add, replace and a reconnection: add_leg_locked(), then start
 * the new leg's recovery, or queue it behind the sync that runs.  An
 * administrator's add or replace also cancels a pending reconnection of
 * the slot (the slot is taken by other means).  admin_lock held.  Returns 0
 * (started) or 1 (queued), or -errno with @err.
 */
static int add_and_recover_locked(struct mirror *m, const char *path, unsigned flags,
				  int replaces, GError **err)
{
	int slot = add_leg_locked(m, path, flags, replaces, err);
	int r;

	if (slot < 0)
		return slot;
	if (!(flags & ADD_RECONNECT))
		mirror_reconnect_cancel(m, (unsigned)slot);
	r = mirror_sync_start_or_queue(m);
	if (r < 0)
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot start the recovery: %s",
			    g_strerror(-r));
	return r;
}

int mirror_add_leg(struct mirror *m, const char *path, unsigned flags, GError **err)
{
	int r;

	pthread_mutex_lock(&m->admin_lock);
	r = add_and_recover_locked(m, path, flags, -1, err);
	pthread_mutex_unlock(&m->admin_lock);
	return r;
}

int mirror_reconnect_leg(struct mirror *m, unsigned i, const char *uri, uint64_t gen,
			 GError **err)
{
	struct mirror_leg *leg = &m->legs[i];
	struct dmio_dev *probe = NULL;
	int r;

	/* Is the server back?  Asked first, so that the leg stays faulty (and
	 * named in status) while it is not. */
	r = dmio_dev_open_timeout(uri, DMIO_DEV_RDONLY, m->remote_connect_timeout_ms, &probe);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot connect: %s", uri,
			    g_strerror(-r));
		return r;
	}
	dmio_dev_close(probe);
	pthread_mutex_lock(&m->admin_lock);
	r = check_writable(m, err);
	if (r < 0)
		goto out;
	/* The connection took its time: an administrator's remove, fail or
	 * add of the slot meanwhile cancelled this attempt (a removed leg
	 * has no dev, and open_readd() takes a removed slot back).  Every
	 * cancel is made under admin_lock, so this answer holds until the
	 * re-add is done. */
	if (!mirror_reconnect_current(m, i, gen)) {
		g_set_error(err, FM_MIRROR_ERROR, ECANCELED, "leg %s: reconnection cancelled",
			    uri);
		r = -ECANCELED;
		goto out;
	}
	if (leg->dev && (leg_state(leg) != FM_LEG_FAULTY || !leg->path || strcmp(leg->path, uri))) {
		g_set_error(err, FM_MIRROR_ERROR, ESTALE, "leg %s: slot %u changed meanwhile",
			    uri, i);
		r = -ESTALE;
		goto out;
	}
	r = add_and_recover_locked(m, uri, ADD_RECONNECT, -1, err);
out:
	pthread_mutex_unlock(&m->admin_lock);
	return r;
}

int mirror_replace_leg(struct mirror *m, const char *old, const char *new_path,
		       unsigned flags, GError **err)
{
	int i, r;

	pthread_mutex_lock(&m->admin_lock);
	i = find_leg(m, old, err);
	if (i < 0) {
		r = i;
		goto out;
	}
	if (leg_state(&m->legs[i]) != FM_LEG_IN_SYNC) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "leg %s: is %s; replace works on a leg in sync (for a faulty "
			    "leg: remove it, then add the new one)", old,
			    state_word(leg_state(&m->legs[i])));
		r = -EINVAL;
		goto out;
	}
	for (unsigned k = 0; k < m->nr_legs; k++) {
		uint32_t f = m->sb.legs[k].flags;

		if ((f & FM_SB_LEG_REPLACEMENT) && FM_SB_LEG_REPLACED_SLOT(f) == (unsigned)i &&
		    leg_state(&m->legs[k]) == FM_LEG_REBUILDING) {
			g_set_error(err, FM_MIRROR_ERROR, EBUSY,
				    "leg %s: is already being replaced by %s", old,
				    m->legs[k].path ? m->legs[k].path : "another leg");
			r = -EBUSY;
			goto out;
		}
	}
	/* Recorded in the new leg's flags: a replace interrupted by a stop
	 * finishes at the next mount and retires @old then. */
	r = add_and_recover_locked(m, new_path, flags, i, err);
out:
	pthread_mutex_unlock(&m->admin_lock);
	return r;
}

int mirror_set_write_mostly(struct mirror *m, const char *path, bool on, GError **err)
{
	bool changed;
	int i, r = 0;

	pthread_mutex_lock(&m->admin_lock);
	if ((i = find_leg(m, path, err)) < 0 || (r = check_writable(m, err)) < 0)
		goto out;
	pthread_mutex_lock(&m->state_lock);
	changed = !(m->sb.legs[i].flags & FM_SB_LEG_WRITE_MOSTLY) != !on;
	if (on)
		m->sb.legs[i].flags |= FM_SB_LEG_WRITE_MOSTLY;
	else
		m->sb.legs[i].flags &= ~(uint32_t)FM_SB_LEG_WRITE_MOSTLY;
	atomic_store(&m->legs[i].write_mostly, on);
	if (changed)
		mirror_event_locked(m, FM_EVENT_WRITE_MOSTLY, i, on, 0);
	pthread_mutex_unlock(&m->state_lock);
	if (!changed)
		goto out;
	r = mirror_sb_update_sync(m);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, EIO, "cannot record the change: no leg "
			    "took the superblock update");
		goto out;
	}
	fm_debug("leg %s: write-mostly %s", m->legs[i].path, on ? "on" : "off");
out:
	pthread_mutex_unlock(&m->admin_lock);
	return i < 0 ? i : r;
}

int mirror_scrub(struct mirror *m, bool repair, GError **err)
{
	int r;

	pthread_mutex_lock(&m->admin_lock);
	if ((r = check_writable(m, err)) < 0)
		goto out;
	if (mirror_in_sync_count(m) < 2) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "a scrub compares legs: at least two must be in sync");
		r = -EINVAL;
		goto out;
	}
	r = mirror_sync_start(m, repair ? MIRROR_SYNC_REPAIR : MIRROR_SYNC_CHECK, repair);
	if (r == -EBUSY)
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "a resync, recovery or scrub is already running");
	else if (r < 0)
		g_set_error(err, FM_MIRROR_ERROR, -r, "cannot start the scrub: %s",
			    g_strerror(-r));
out:
	pthread_mutex_unlock(&m->admin_lock);
	return r;
}

int mirror_scrub_cancel(struct mirror *m, GError **err)
{
	int r = mirror_sync_cancel_scrub(m);

	if (r < 0)
		g_set_error(err, FM_MIRROR_ERROR, ENOENT, "no scrub is running");
	return r;
}

int mirror_inject(struct mirror *m, const char *path, const struct dmio_fault *fault,
		  GError **err)
{
	struct dmio_fault f;
	int i, r;

	pthread_mutex_lock(&m->admin_lock);
	i = find_leg(m, path, err);
	if (i < 0) {
		pthread_mutex_unlock(&m->admin_lock);
		return i;
	}
	if (fault) {
		f = *fault;
		if (f.count)
			f.sector += m->data_sector;
	}
	r = dmio_dev_set_fault(m->legs[i].dev, fault ? &f : NULL);
	if (r < 0)
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot set the fault: %s", path,
			    r == -EINVAL ? "invalid fault description" : g_strerror(-r));
	else if (fault)
		fm_debug("leg %s: fault injected (flags %#x)", path, f.flags);
	else
		fm_debug("leg %s: fault cleared", path);
	pthread_mutex_unlock(&m->admin_lock);
	return r;
}

void mirror_get_sb(struct mirror *m, struct fm_sb *ret)
{
	pthread_mutex_lock(&m->state_lock);
	*ret = m->sb;
	pthread_mutex_unlock(&m->state_lock);
}

static const char *const action_names[] = {
	[MIRROR_SYNC_IDLE] = "idle",
	[MIRROR_SYNC_RESYNC] = "resync",
	[MIRROR_SYNC_RECOVER] = "recover",
	[MIRROR_SYNC_CHECK] = "check",
	[MIRROR_SYNC_REPAIR] = "repair",
};

const char *mirror_sync_action_name(enum mirror_sync_action a)
{
	return (unsigned)a < FM_ARRAY_SIZE(action_names) ? action_names[a] : "?";
}

void mirror_get_status(struct mirror *m, struct mirror_status *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&m->state_lock);
	s->events = m->sb.events;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		enum fm_leg_state st = leg_state(&m->legs[i]);

		if (m->sb.legs[i].state == FM_LEG_EMPTY)
			continue;
		s->nr_slots++;
		s->nr_in_sync += st == FM_LEG_IN_SYNC;
		s->nr_faulty += st == FM_LEG_FAULTY || st == FM_LEG_REMOVED;
		s->nr_rebuilding += st == FM_LEG_REBUILDING;
	}
	s->degraded = mirror_degraded_locked(m);
	s->region_size = m->sb.region_size;
	s->nr_regions = m->nr_regions;
	pthread_mutex_unlock(&m->state_lock);
	s->failed = s->nr_in_sync == 0;
	mirror_sync_status(m, s);
	if (m->bitmap) {
		s->bitmap_set = mbitmap_weight(m->bitmap);
		s->bitmap_writes = mbitmap_page_writes(m->bitmap);
	}
	s->checksums = m->csum != NULL;
	s->checksum_page_writes = mcsum_page_writes(m);
	s->sync_read_bytes = atomic_load(&m->sync_read_bytes);
	s->sync_write_bytes = atomic_load(&m->sync_write_bytes);
	s->sync_zero_bytes = atomic_load(&m->sync_zero_bytes);
	s->written_map = mirror_has_written_map(m) || m->ro_written;
	s->written_regions = m->ro_written ? m->ro_written_regions :
			     s->written_map ? mbitmap_written_weight(m->bitmap) : m->nr_regions;
	s->written_bytes = s->written_regions * m->sb.region_size;
	if (s->written_regions && m->nr_regions &&
	    (!s->written_map || mirror_region_written(m, m->nr_regions - 1)))
		s->written_bytes -= m->nr_regions * m->sb.region_size - m->image_size;
	s->unwritten_reads = atomic_load(&m->unwritten_reads);
	s->state = s->failed ? "failed" :
		   s->action == MIRROR_SYNC_RESYNC ? "resyncing" :
		   s->action == MIRROR_SYNC_RECOVER ? "recovering" :
		   s->degraded ? "degraded" : m->readonly ? "read-only" :
		   atomic_load(&m->in_use) ? "active" : "clean";
}
