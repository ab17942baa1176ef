/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Remote legs that come back: a remote (NBD) leg failed because its
 * connection is gone (its server died, the connection dropped or hung; not
 * an error the server answered) is reconnected by a thread of its own,
 * with backoff, and re-added like `fusemirror add` does:
 * the bitmap recorded every region written while it was away, so only
 * those are copied (a bitmap-based recovery), unless it is too old for the
 * bitmap, as for any re-add.
 *
 * Invariants:
 *   - m->rc[i].uri is set from the moment slot i's remote leg failed by
 *     the loss of its connection until it is re-added (or the
 *     administrator fails, removes or adds a leg in that slot, or the array
 *     stops); an attempt is made when due_ns passed; a failed attempt
 *     doubles delay_ms (1 s, at most remote_retry_max_ms) and counts in
 *     attempts.  A failure less than RECONNECT_STABLE_MS after the last
 *     attempt started (tried_ns: that attempt re-added the leg, as only a
 *     leg in use can fail) doubles the last delay_ms instead of starting
 *     over at 1 s; the administrator's cancel forgets tried_ns.
 *   - Every schedule and cancel bumps m->rc[i].gen.  An attempt runs
 *     without rc_lock, and the leg it re-adds may fail (and be scheduled
 *     again) before it ends: at its end it clears or backs off the slot
 *     only if the generation is still the one it started from.
 *   - The thread exists from the first such failure until mirror_stop()
 *     (mirror_reconnect_stop, before the resync and the superblocks stop).
 *     It sleeps on rc_cond; it holds rc_lock only to pick an attempt: the
 *     attempt itself (connect, admin_lock, superblock writes) runs without
 *     it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mirror_i.h"

#define RECONNECT_FIRST_MS 1000u
/* A leg that fails again this soon after an attempt re-added it keeps its
 * backoff: a server that accepts connections and drops each one soon
 * after is not retried every second. */
#define RECONNECT_STABLE_MS 60000u

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *reconnect_main(void *arg)
{
	struct mirror *m = arg;

	pthread_mutex_lock(&m->rc_lock);
	while (!m->rc_stop) {
		uint64_t now = mono_ns(), next = UINT64_MAX;
		g_autoptr(GError) err = NULL;
		char *uri = NULL;
		unsigned slot = 0;
		uint64_t gen = 0;
		int r;

		for (unsigned i = 0; i < FM_SB_MAX_LEGS && !uri; i++) {
			if (!m->rc[i].uri)
				continue;
			if (m->rc[i].due_ns <= now) {
				uri = strdup(m->rc[i].uri);
				slot = i;
				gen = m->rc[i].gen;
				m->rc[i].tried_ns = now;
			} else if (m->rc[i].due_ns < next) {
				next = m->rc[i].due_ns;
			}
		}
		if (!uri) {
			if (next == UINT64_MAX) {
				pthread_cond_wait(&m->rc_cond, &m->rc_lock);
			} else {
				struct timespec ts;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				next -= now;
				ts.tv_sec += (time_t)(next / 1000000000u);
				ts.tv_nsec += (long)(next % 1000000000u);
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&m->rc_cond, &m->rc_lock, &ts);
			}
			continue;
		}
		pthread_mutex_unlock(&m->rc_lock);
		r = mirror_reconnect_leg(m, slot, uri, gen, &err);
		pthread_mutex_lock(&m->rc_lock);
		if (r >= 0) {
			m->rc[slot].count++;
			fm_debug("leg %s: reconnected and re-added", uri);
		}
		/* Unless the slot was scheduled again meanwhile (the re-added
		 * leg failed at once: its superblock write, its recovery's
		 * first write) or cancelled: that is not this attempt's. */
		if (m->rc[slot].uri && m->rc[slot].gen == gen) {
			if (r >= 0) {
				g_clear_pointer(&m->rc[slot].uri, free);
			} else {
				uint64_t b = (uint64_t)m->rc[slot].delay_ms * 2;

				if (b > m->remote_retry_max_ms)
					b = m->remote_retry_max_ms;
				m->rc[slot].delay_ms = (unsigned)b;
				m->rc[slot].attempts++;
				m->rc[slot].due_ns = mono_ns() + b * 1000000u;
				fm_debug("leg %s: reconnection failed (%s); next attempt in %llu ms",
					 uri, err ? err->message : g_strerror(-r),
					 (unsigned long long)b);
			}
		}
		free(uri);
	}
	pthread_mutex_unlock(&m->rc_lock);
	return NULL;
}

void mirror_reconnect_schedule(struct mirror *m, unsigned i, const char *uri)
{
	pthread_mutex_lock(&m->rc_lock);
	if (!m->rc_stop && uri) {
		uint64_t now = mono_ns(), d = RECONNECT_FIRST_MS;
		struct mirror_reconnect *rc = &m->rc[i];

		/* Failed again soon after an attempt re-added it (also
		 * during that attempt): twice the last wait. */
		if (rc->tried_ns && now - rc->tried_ns < RECONNECT_STABLE_MS * 1000000ull &&
		    rc->delay_ms)
			d = (uint64_t)rc->delay_ms * 2;
		if (d > m->remote_retry_max_ms)
			d = m->remote_retry_max_ms;
		free(rc->uri);
		rc->uri = strdup(uri);
		rc->gen++;
		rc->delay_ms = (unsigned)d;
		rc->attempts = 0;
		rc->due_ns = now + d * 1000000u;
		if (!m->rc_running) {
			int r = fm_thread_start(&m->rc_thread, "fm-reconnect", reconnect_main, m);

			if (r == 0)
				m->rc_running = true;
			else
				fm_debug("leg %s: cannot start the reconnection thread: %s", uri,
					 strerror(-r));
		}
		pthread_cond_signal(&m->rc_cond);
	}
	pthread_mutex_unlock(&m->rc_lock);
}

void mirror_reconnect_cancel(struct mirror *m, unsigned i)
{
	pthread_mutex_lock(&m->rc_lock);
	g_clear_pointer(&m->rc[i].uri, free);
	m->rc[i].gen++;
	m->rc[i].tried_ns = 0;  /* the administrator's: backoff starts over */
	pthread_mutex_unlock(&m->rc_lock);
}

bool mirror_reconnect_current(struct mirror *m, unsigned i, uint64_t gen)
{
	bool cur;

	pthread_mutex_lock(&m->rc_lock);
	cur = m->rc[i].uri && m->rc[i].gen == gen;
	pthread_mutex_unlock(&m->rc_lock);
	return cur;
}

void mirror_reconnect_stop(struct mirror *m)
{
	bool running;

	pthread_mutex_lock(&m->rc_lock);
	m->rc_stop = true;
	running = m->rc_running;
	m->rc_running = false;
	pthread_cond_broadcast(&m->rc_cond);
	pthread_mutex_unlock(&m->rc_lock);
	if (running)
		pthread_join(m->rc_thread, NULL);
}

void mirror_leg_dev_setup(struct mirror *m, struct dmio_dev *dev)
{
	if (dev && dmio_dev_is_remote(dev) && m->remote_timeout_ms)
		dmio_dev_set_remote_timeout(dev, m->remote_timeout_ms);
}
