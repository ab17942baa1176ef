/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The cleaner: one background thread per process, alive while at least one
 * client exists (dm-bufio's periodic work).  Each pass, for every client:
 *   - frees clean buffers while the client is above its limit (the global
 *     limit was lowered, or a client was added and the shares shrank);
 *   - starts background writeback when the client is above its limit or
 *     its dirty buffers dominate;
 *   - starts writeback of buffers dirty for longer than writeback_age;
 *   - frees clean, idle buffers unused for longer than max_age, keeping
 *     retain_bytes.
 * It only starts I/O, never waits for it, so a pass is short; it runs with
 * bufio_globals.lock held, which keeps clients from being unregistered
 * (destroyed) under it.  Between passes it sleeps until the next buffer
 * is due (cleaner_main), not on a fixed tick.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bufio_i.h"

/* Never more often than this between passes (as the fixed tick was). */
static uint64_t period_ms(void)
{
	uint64_t p = 1000;
	uint64_t a = bufio_get_max_age_ms();
	uint64_t w = bufio_get_writeback_age_ms();

	if (a && a / 4 < p)
		p = a / 4;
	if (w && w / 4 < p)
		p = w / 4;
	return p < 10 ? 10 : p;
}

/* A deadline is met this much late: bufio_now_ns() is the coarse clock,
 * a few ms behind the one the cleaner sleeps on. */
#define CLEANER_SLACK_NS (20ull * 1000000ull)

static void clean_client(struct bufio_client *c, uint64_t now)
{
	uint64_t age;

	bufio_trim_to_limit(c);
	/* Above the limit (it was lowered), even less than a batch goes. */
	if (atomic_load(&c->bytes) > bufio_client_limit(c))
		bufio_writeback_start(c, BUFIO_WB_STARVED, 0);
	else if (bufio_dirty_dominates(c))
		bufio_writeback_start(c, BUFIO_WB_PRESSURE, 0);
	age = bufio_get_writeback_age_ms() * 1000000ull;
	if (age && now > age)
		bufio_writeback_start(c, BUFIO_WB_BACKGROUND, now - age);
	age = bufio_get_max_age_ms() * 1000000ull;
	if (age && now > age)
		bufio_evict_old(c, now - age, bufio_get_retain_bytes());
}

/*
 * When the cleaner must look at @c again (bufio_now_ns() time), after a
 * pass at @now: the oldest dirty buffer's writeback age, the oldest clean
 * stamp's max_age (a lower bound: the pass after it refreshes the stamps
 * of buffers used since), @now while it is above its limit or its dirty
 * buffers dominate.  At or below retain_bytes nothing is evicted until
 * more buffers come, and those come with their own stamps: one look every
 * max_age then.  UINT64_MAX: nothing due.
 */
static uint64_t client_due(struct bufio_client *c, uint64_t now)
{
	uint64_t wb = bufio_get_writeback_age_ms() * 1000000ull;
	uint64_t ma = bufio_get_max_age_ms() * 1000000ull;
	bool keep = atomic_load(&c->bytes) <= bufio_get_retain_bytes();
	uint64_t due = UINT64_MAX;

	if (atomic_load(&c->bytes) > bufio_client_limit(c) || bufio_dirty_dominates(c))
		return now;
	for (unsigned i = 0; i < c->nshards; i++) {
		struct bufio_shard *s = &c->shards[i];

		/* Under the lock, not by the counters (hints): a buffer that
		 * joined before the pass set wake_at to "never" is seen here,
		 * one that joins after lowers it itself. */
		pthread_mutex_lock(&s->lock);
		if (wb && !bufio_list_empty(&s->dirty)) {
			/* (the DIRTY list is in order of dirtying) */
			const struct bufio_buffer *b =
				bufio_container_of(s->dirty.next, struct bufio_buffer, lru);

			if (b->stamp + wb < due)
				due = b->stamp + wb;
		}
		if (ma && !bufio_list_empty(&s->clean)) {
			uint64_t at = (keep ? now : s->clean_floor) + ma;

			if (at < due)
				due = at;
		}
		pthread_mutex_unlock(&s->lock);
	}
	return due;
}

/* Lower wake_at to @at if it is later; whether it was. */
static bool lower_wake_at(struct bufio_globals *g, uint64_t at)
{
	uint64_t cur = atomic_load(&g->wake_at);

	while (at < cur)
		if (atomic_compare_exchange_weak(&g->wake_at, &cur, at))
			return true;
	return false;
}

void bufio_cleaner_advance(uint64_t at_ns)
{
	struct bufio_globals *g = &bufio_globals;

	/* wake_lock is a leaf: we may hold a shard lock. */
	if (lower_wake_at(g, at_ns)) {
		pthread_mutex_lock(&g->wake_lock);
		pthread_cond_broadcast(&g->cond);
		pthread_mutex_unlock(&g->wake_lock);
	}
}

/*
 * Sleep until wake_at (re-read at every wake-up: arrivals lower it), but
 * not before @last + the period; a kick or stop ends it at once.
 */
static void cleaner_sleep(struct bufio_globals *g, uint64_t last)
{
	/* bufio_now_ns() (coarse) and CLOCK_MONOTONIC share their origin. */
	uint64_t floor = last + period_ms() * 1000000ull;

	pthread_mutex_lock(&g->wake_lock);
	while (!g->kicked && !atomic_load(&g->stop)) {
		uint64_t until = atomic_load(&g->wake_at);
		struct timespec ts;

		if (until != UINT64_MAX)
			until += CLEANER_SLACK_NS;
		if (until < floor)
			until = floor;
		if (fm_now_ns() >= until)
			break;
		if (until == UINT64_MAX) {
			pthread_cond_wait(&g->cond, &g->wake_lock);
			continue;
		}
		ts.tv_sec = (time_t)(until / 1000000000ull);
		ts.tv_nsec = (long)(until % 1000000000ull);
		pthread_cond_clockwait(&g->cond, &g->wake_lock, CLOCK_MONOTONIC, &ts);
	}
	g->kicked = false;
	pthread_mutex_unlock(&g->wake_lock);
}

/*
 * A pass, then sleep until something is due.  Before a pass the cleaner
 * sets wake_at to "never"; a buffer that joins a list during the pass,
 * after its shard was looked at, lowers it itself (bufio_cleaner_due, under
 * the shard lock the pass takes too), so the sleep after sees it.  An idle
 * cache with nothing dirty and nothing to evict sleeps until a write
 * dirties a buffer, a read adds one, a setting changes or the last client
 * goes.
 */
static void *cleaner_main(void *arg)
{
	struct bufio_globals *g = arg;

	while (!atomic_load(&g->stop)) {
		uint64_t last = fm_now_ns();
		uint64_t now = bufio_now_ns();
		uint64_t due = UINT64_MAX;
		struct bufio_list *pos;

		atomic_store(&g->wake_at, UINT64_MAX);
		pthread_mutex_lock(&g->lock);
		for (pos = g->clients.next; pos != &g->clients; pos = pos->next) {
			struct bufio_client *c = bufio_container_of(pos, struct bufio_client, node);
			uint64_t d;

			clean_client(c, now);
			d = client_due(c, now);
			if (d < due)
				due = d;
		}
		pthread_mutex_unlock(&g->lock);
		lower_wake_at(g, due);
		cleaner_sleep(g, last);
	}
	return NULL;
}

int bufio_cleaner_register(struct bufio_client *c)
{
	struct bufio_globals *g = &bufio_globals;
	int r = 0;

	pthread_mutex_lock(&g->lifecycle);
	if (!g->running) {
		atomic_store(&g->stop, false);
		r = fm_thread_start(&g->cleaner, "bufio-cleaner", cleaner_main, g);
		if (r == 0)
			g->running = true;
	}
	if (r == 0) {
		pthread_mutex_lock(&g->lock);
		bufio_list_add_tail(&c->node, &g->clients);
		g->nr_clients_locked++;
		atomic_fetch_add(&g->nr_clients, 1);
		pthread_mutex_unlock(&g->lock);
	}
	pthread_mutex_unlock(&g->lifecycle);
	return r;
}

void bufio_cleaner_unregister(struct bufio_client *c)
{
	struct bufio_globals *g = &bufio_globals;
	bool last;

	pthread_mutex_lock(&g->lifecycle);
	pthread_mutex_lock(&g->lock);
	bufio_list_del(&c->node);
	g->nr_clients_locked--;
	atomic_fetch_sub(&g->nr_clients, 1);
	last = g->nr_clients_locked == 0;
	pthread_mutex_unlock(&g->lock);
	if (last) {
		atomic_store(&g->stop, true);
		bufio_cleaner_kick();
	}
	if (last && g->running) {
		pthread_join(g->cleaner, NULL);
		g->running = false;
	}
	pthread_mutex_unlock(&g->lifecycle);
}

/* A pass now (a setting changed, or stop). */
void bufio_cleaner_kick(void)
{
	pthread_mutex_lock(&bufio_globals.wake_lock);
	bufio_globals.kicked = true;
	pthread_cond_broadcast(&bufio_globals.cond);
	pthread_mutex_unlock(&bufio_globals.wake_lock);
}
