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
 * (destroyed) under it.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bufio_i.h"

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

static void *cleaner_main(void *arg)
{
	struct bufio_globals *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->stop) {
		uint64_t now = bufio_now_ns();
		struct bufio_list *pos;
		struct timespec ts;
		uint64_t p;

		for (pos = g->clients.next; pos != &g->clients; pos = pos->next)
			clean_client(bufio_container_of(pos, struct bufio_client, node), now);

		p = period_ms();
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(p / 1000);
		ts.tv_nsec += (long)(p % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!g->stop)
			pthread_cond_timedwait(&g->cond, &g->lock, &ts);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int bufio_cleaner_register(struct bufio_client *c)
{
	struct bufio_globals *g = &bufio_globals;
	int r = 0;

	pthread_mutex_lock(&g->lifecycle);
	if (!g->running) {
		g->stop = false;
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
	if (last) {
		g->stop = true;
		pthread_cond_broadcast(&g->cond);
	}
	pthread_mutex_unlock(&g->lock);
	if (last && g->running) {
		pthread_join(g->cleaner, NULL);
		g->running = false;
	}
	pthread_mutex_unlock(&g->lifecycle);
}

void bufio_cleaner_kick(void)
{
	pthread_mutex_lock(&bufio_globals.lock);
	pthread_cond_broadcast(&bufio_globals.cond);
	pthread_mutex_unlock(&bufio_globals.lock);
}
