/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The array's state: legs failing, superblock updates, and the worker
 * thread that writes them.
 *
 * Invariants:
 *   - A leg's state changes only under state_lock, and every change that
 *     the superblocks must record bumps sb_gen_wanted.  Only the worker
 *     writes superblocks; when it finishes a pass it sets sb_gen_done to
 *     the generation it wrote.
 *   - A write that failed on some leg (and succeeded on another) is held
 *     until sb_gen_done reaches the generation current when it completed:
 *     then every superblock that may later be taken for current records
 *     that leg as faulty, so a crash cannot bring back its stale copy.
 *   - No bitmap bit is cleared while the array is degraded or a resync
 *     has regions left (mirror_update_clearing): the bits then remember
 *     what a stale leg missed, and what the resync has yet to copy.
 */
#include <errno.h>
#include <string.h>

#include "mirror_i.h"

bool mirror_degraded_locked(struct mirror *m)
{
	for (unsigned i = 0; i < m->nr_legs; i++) {
		uint32_t st = m->sb.legs[i].state;

		if (st != FM_LEG_EMPTY && st != FM_LEG_IN_SYNC)
			return true;
		if (st == FM_LEG_IN_SYNC && leg_state(&m->legs[i]) != FM_LEG_IN_SYNC)
			return true;
	}
	return false;
}

void mirror_update_clearing(struct mirror *m)
{
	bool allow;

	if (!m->bitmap)
		return;
	pthread_mutex_lock(&m->state_lock);
	/* Nothing is written before the array is marked in use. */
	allow = atomic_load(&m->in_use) && !mirror_degraded_locked(m) &&
		!atomic_load(&m->unsynced);
	/* Stored under the lock: a leg that fails (which turns clearing
	 * off under it) must not be overtaken by a "yes" computed before. */
	mbitmap_allow_clear(m->bitmap, allow);
	pthread_mutex_unlock(&m->state_lock);
}

uint64_t mirror_sb_request_locked(struct mirror *m)
{
	pthread_cond_broadcast(&m->state_cond);
	return ++m->sb_gen_wanted;
}

unsigned mirror_in_sync_count(struct mirror *m)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nr_legs; i++)
		n += leg_state(&m->legs[i]) == FM_LEG_IN_SYNC;
	return n;
}

static unsigned count_slots_locked(struct mirror *m)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nr_legs; i++)
		n += m->sb.legs[i].state != FM_LEG_EMPTY;
	return n;
}

bool mirror_leg_disconnected(struct mirror_leg *leg)
{
	struct dmio_remote_stats rs;

	return dmio_dev_get_remote_stats(leg->dev, &rs) == 0 && !rs.connected;
}

void mirror_leg_failed(struct mirror *m, unsigned i, const char *what, int err)
{
	struct mirror_leg *leg = &m->legs[i];
	enum fm_leg_state st;

	pthread_mutex_lock(&m->state_lock);
	st = leg_state(leg);
	if (st == FM_LEG_IN_SYNC || st == FM_LEG_REBUILDING) {
		unsigned n;

		/* Stop clearing bits first: the write that failed has not
		 * ended its bitmap accounting yet. */
		if (m->bitmap)
			mbitmap_allow_clear(m->bitmap, false);
		atomic_store_explicit(&leg->state, FM_LEG_FAULTY, memory_order_release);
		m->sb.legs[i].state = FM_LEG_FAULTY;
		/* A replacement that fails abandons the replace. */
		m->sb.legs[i].flags &= ~(uint32_t)(FM_SB_LEG_REPLACEMENT |
						   FM_SB_LEG_REPLACED_MASK);
		/* Half a full rebuild: its re-add must start over wholly. */
		if (st == FM_LEG_REBUILDING && leg->full_rebuild)
			m->sb.last_in_sync[i] = 0;
		m->sb.legs[i].events = m->sb.events + 1;
		mirror_sb_request_locked(m);
		mirror_event_detail_locked(m, FM_EVENT_LEG_FAILED, (int)i, 0, err < 0 ? -err : err,
					   "%s", what);
		/* A remote leg lost to the network comes back by itself: its
		 * connection dropped or was given up on as hung.  Not one the
		 * administrator failed (err 0), nor one whose server answered
		 * with an error (its disk failed, it is full): that one stays
		 * failed, as a local leg does. */
		if (err && leg->dev && !m->readonly && mirror_leg_disconnected(leg))
			mirror_reconnect_schedule(m, i, leg->path);
		mirror_event_degraded_locked(m);
		n = mirror_in_sync_count(m);
		if (n)
			fm_debug("leg %s: marked faulty (%s%s%s); the array goes on degraded, "
			       "%u of %u legs in sync", leg->path, what, err ? ": " : "",
			       err ? strerror(-err) : "", n, count_slots_locked(m));
		else
			fm_debug("leg %s: marked faulty (%s%s%s); no leg is left in sync: "
			       "the array has FAILED, every I/O now fails", leg->path, what,
			       err ? ": " : "", err ? strerror(-err) : "");
	}
	pthread_mutex_unlock(&m->state_lock);
}

/*
 * Write the newest superblock, with the leg's own fields, to every
 * writable leg.  Returns 0 when an in-sync leg took it.  A leg that fails
 * the write is failed (which asks for another pass).  Worker only.
 */
int mirror_write_superblocks(struct mirror *m)
{
	struct fm_sb sbs[FM_SB_MAX_LEGS];
	bool use[FM_SB_MAX_LEGS] = { false }, in_sync[FM_SB_MAX_LEGS] = { false };
	bool ok = false;

	pthread_mutex_lock(&m->state_lock);
	m->sb.events++;
	/* Assembly records: this update sees its in-sync slots in sync.  An
	 * array from before them gets them now (slots out of sync: unknown). */
	m->sb.features |= FM_SB_FEAT_GENERATIONS;
	for (unsigned i = 0; i < m->nr_legs; i++)
		if (m->sb.legs[i].state == FM_LEG_IN_SYNC)
			m->sb.last_in_sync[i] = m->sb.events;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		struct mirror_leg *leg = &m->legs[i];

		if (!leg_get(leg, LEG_WRITABLE))
			continue;
		use[i] = true;
		in_sync[i] = leg_state(leg) == FM_LEG_IN_SYNC;
		sbs[i] = m->sb;
		memcpy(sbs[i].leg_uuid, leg->uuid, 16);
		sbs[i].leg_index = i;
		sbs[i].recovery_offset = in_sync[i] ? 0 : leg->recovery_offset;
		/* A re-added leg's recovery resumes from the bitmap, not
		 * wholly (the bitmap is never cleared while it rebuilds). */
		sbs[i].recovery_flags = !in_sync[i] && leg_state(leg) == FM_LEG_REBUILDING &&
					!leg->full_rebuild && m->bitmap ?
					FM_SB_RECOVERY_BITMAP : 0;
	}
	pthread_mutex_unlock(&m->state_lock);
	for (unsigned i = 0; i < m->nr_legs; i++) {
		int r;

		if (!use[i])
			continue;
		r = fm_sb_write(m->legs[i].dev, &sbs[i]);
		leg_put(&m->legs[i]);
		if (r < 0) {
			fm_debug("leg %s: cannot write the superblock: %s", m->legs[i].path,
				 strerror(-r));
			mirror_leg_failed(m, i, "the superblock could not be written", r);
		} else if (in_sync[i]) {
			ok = true;
		}
	}
	return ok ? 0 : -EIO;
}

static void *worker_main(void *arg)
{
	struct mirror *m = arg;

	pthread_mutex_lock(&m->state_lock);
	for (;;) {
		if (m->narrow_head) {
			struct mreq *r = m->narrow_head;

			m->narrow_head = r->next_narrow;
			pthread_mutex_unlock(&m->state_lock);
			mirror_narrow_write(m, r);
			pthread_mutex_lock(&m->state_lock);
			continue;
		}
		if (m->sb_gen_done < m->sb_gen_wanted) {
			uint64_t gen = m->sb_gen_wanted;
			struct mreq *ready = NULL, **pp;
			int r;

			pthread_mutex_unlock(&m->state_lock);
			r = mirror_write_superblocks(m);
			pthread_mutex_lock(&m->state_lock);
			m->sb_gen_done = gen;
			m->sb_last_err = r;
			for (pp = &m->held; *pp;) {
				struct mreq *h = *pp;

				if (h->held_gen <= gen) {
					*pp = h->next_held;
					if (r < 0)
						h->held_err = -EIO;
					h->next_held = ready;
					ready = h;
				} else {
					pp = &h->next_held;
				}
			}
			pthread_cond_broadcast(&m->state_cond);
			pthread_mutex_unlock(&m->state_lock);
			while (ready) {
				struct mreq *next = ready->next_held;

				mirror_complete_held(ready);
				ready = next;
			}
			pthread_mutex_lock(&m->state_lock);
			continue;
		}
		if (m->worker_stop)
			break;
		pthread_cond_wait(&m->state_cond, &m->state_lock);
	}
	pthread_mutex_unlock(&m->state_lock);
	return NULL;
}

int mirror_state_init(struct mirror *m)
{
	int r = fm_thread_start(&m->worker, "fm-state", worker_main, m);

	if (r < 0)
		return r;
	m->worker_running = true;
	return 0;
}

void mirror_state_exit(struct mirror *m)
{
	if (!m->worker_running)
		return;
	pthread_mutex_lock(&m->state_lock);
	m->worker_stop = true;
	pthread_cond_broadcast(&m->state_cond);
	pthread_mutex_unlock(&m->state_lock);
	pthread_join(m->worker, NULL);
	m->worker_running = false;
}

int mirror_sb_update_sync(struct mirror *m)
{
	uint64_t gen;
	int r;

	if (!m->worker_running)
		return -EROFS;
	pthread_mutex_lock(&m->state_lock);
	/* Stopping: the worker may have left already (worker_running turns
	 * false only after the join).  A request made before it saw
	 * worker_stop is served: it looks for work before it looks at that. */
	if (m->worker_stop) {
		pthread_mutex_unlock(&m->state_lock);
		return -EROFS;
	}
	gen = mirror_sb_request_locked(m);
	while (m->sb_gen_done < gen)
		pthread_cond_wait(&m->state_cond, &m->state_lock);
	r = m->sb_last_err;
	pthread_mutex_unlock(&m->state_lock);
	return r;
}

void mirror_hold_write(struct mirror *m, struct mreq *r)
{
	pthread_mutex_lock(&m->state_lock);
	if (m->sb_gen_done >= m->sb_gen_wanted) {
		if (m->sb_last_err < 0)
			r->held_err = -EIO;
		pthread_mutex_unlock(&m->state_lock);
		mirror_complete_held(r);
		return;
	}
	r->held_gen = m->sb_gen_wanted;
	r->next_held = m->held;
	m->held = r;
	pthread_cond_broadcast(&m->state_cond);
	pthread_mutex_unlock(&m->state_lock);
}
