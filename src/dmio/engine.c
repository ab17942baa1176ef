/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine: io_uring rings, one reaper thread per ring, batched submission.
 *
 * Invariants:
 *   - A ring's SQ side (get_sqe, prep, submit) is used only under its
 *     sq_lock; its CQ side only by its reaper thread.  liburing keeps the two
 *     sides apart, so they need no common lock.
 *   - Every SQE carries a piece pointer as user_data, except the one NOP with
 *     user_data 0 that tells a reaper to exit; that NOP is only queued once
 *     no request is in flight, so nothing completes after it.
 *   - On a reaper thread, SQEs for its own ring are queued but submitted
 *     only after the whole batch of CQEs has been handled: a batch of
 *     completions whose callbacks resubmit costs one io_uring_enter.
 *   - `inflight` counts accepted requests whose callback has not returned;
 *     shutdown waits for it to reach zero.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmio_i.h"

struct dmio_ring {
	struct io_uring ring;
	pthread_mutex_t sq_lock;        /* guards the SQ side of @ring */
	pthread_t reaper;
	unsigned idx;
};

struct dmio_engine {
	pthread_mutex_t lock;           /* guards start/stop and below */
	pthread_cond_t idle;            /* inflight reached zero */
	atomic_bool running;
	bool draining;
	struct dmio_ring *rings;
	unsigned nr_rings;
	uint32_t max_io;
	atomic_long inflight;
};

static struct dmio_engine engine = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
	.max_io = 1u << 20,
};

struct dmio_stats_atomic dmio_stats_g;

/* Set on a reaper thread: its ring, and whether SQEs await submission. */
static __thread struct dmio_ring *tl_ring;
static __thread bool tl_deferred;

bool dmio_in_callback(void)
{
	return tl_ring != NULL;
}

uint32_t dmio_max_io_bytes(void)
{
	return engine.max_io;
}

void dmio_get_stats(struct dmio_stats *s)
{
	s->requests = atomic_load(&dmio_stats_g.requests);
	s->sqes = atomic_load(&dmio_stats_g.sqes);
	s->submits = atomic_load(&dmio_stats_g.submits);
	s->bounced = atomic_load(&dmio_stats_g.bounced);
	s->resubmits = atomic_load(&dmio_stats_g.resubmits);
	s->region_errors = atomic_load(&dmio_stats_g.region_errors);
}

void dmio_request_begin(void)
{
	atomic_fetch_add_explicit(&engine.inflight, 1, memory_order_relaxed);
}

void dmio_request_end(void)
{
	if (atomic_fetch_sub_explicit(&engine.inflight, 1, memory_order_acq_rel) == 1) {
		pthread_mutex_lock(&engine.lock);
		if (engine.draining)
			pthread_cond_broadcast(&engine.idle);
		pthread_mutex_unlock(&engine.lock);
	}
}

/* Submit what is queued on @r; called with r->sq_lock held. */
static void ring_submit_locked(struct dmio_ring *r)
{
	while (io_uring_sq_ready(&r->ring) > 0) {
		int n = io_uring_submit(&r->ring);

		if (n >= 0) {
			DMIO_STAT_ADD(submits, 1);
			continue;
		}
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == -EBUSY) {
			/* The kernel is short of memory or the CQ overflowed:
			 * let the reaper drain completions, then try again. */
			if (tl_ring == r)
				return; /* the reaper resubmits after its batch */
			pthread_mutex_unlock(&r->sq_lock);
			usleep(100);
			pthread_mutex_lock(&r->sq_lock);
			continue;
		}
		/* Anything else means the ring itself is broken. */
		fm_err("dmio: io_uring_submit failed: %s", strerror(-n));
		abort();
	}
}

static struct io_uring_sqe *get_sqe_locked(struct dmio_ring *r)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&r->ring))) {
		/* SQ full: push what is there to the kernel to make room. */
		int n = io_uring_submit(&r->ring);

		if (n >= 0)
			DMIO_STAT_ADD(submits, 1);
		else if (n != -EINTR) {
			pthread_mutex_unlock(&r->sq_lock);
			usleep(100);
			pthread_mutex_lock(&r->sq_lock);
		}
	}
	return sqe;
}

static void prep_piece(struct io_uring_sqe *sqe, struct dmio_piece *p)
{
	struct iovec *iov = &p->iov[p->iov_first];

	switch (p->kind) {
	case DMIO_PIECE_READ:
		io_uring_prep_readv(sqe, p->dev->fd, iov, p->iovcnt, p->off);
		break;
	case DMIO_PIECE_WRITE:
		io_uring_prep_writev(sqe, p->dev->fd, iov, p->iovcnt, p->off);
		sqe->rw_flags = p->rw_flags;
		break;
	case DMIO_PIECE_FSYNC:
		io_uring_prep_fsync(sqe, p->dev->fd, IORING_FSYNC_DATASYNC);
		break;
	case DMIO_PIECE_FALLOC:
		io_uring_prep_fallocate(sqe, p->dev->fd, p->falloc_mode,
					(off_t)p->off, (off_t)p->len);
		break;
	case DMIO_PIECE_NOP:
		io_uring_prep_nop(sqe);
		break;
	}
	io_uring_sqe_set_data(sqe, p);
	DMIO_TSAN_RELEASE(p);
}

static struct dmio_ring *ring_of(const struct dmio_dev *dev)
{
	return &engine.rings[dev->seq % engine.nr_rings];
}

void dmio_submit_pieces(struct dmio_piece *head)
{
	while (head) {
		struct dmio_ring *r = ring_of(head->dev);
		struct dmio_piece **pp = &head;
		unsigned n = 0;

		/* Take every piece of this ring off the list, queue them all,
		 * then submit once. */
		pthread_mutex_lock(&r->sq_lock);
		while (*pp) {
			struct dmio_piece *p = *pp;

			if (ring_of(p->dev) != r) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			prep_piece(get_sqe_locked(r), p);
			n++;
		}
		DMIO_STAT_ADD(sqes, n);
		if (tl_ring == r)
			tl_deferred = true;
		else
			ring_submit_locked(r);
		pthread_mutex_unlock(&r->sq_lock);
	}
}

static void *reaper_main(void *arg)
{
	struct dmio_ring *r = arg;
	bool stop = false;

	tl_ring = r;
	while (!stop) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int ret;

		if (tl_deferred) {
			tl_deferred = false;
			pthread_mutex_lock(&r->sq_lock);
			ring_submit_locked(r);
			pthread_mutex_unlock(&r->sq_lock);
		}
		if (fm_unlikely(RUNNING_ON_VALGRIND)) {
			/* valgrind (3.19) holds its big lock across
			 * io_uring_enter, which would stop every other thread
			 * while we sleep in it; poll() it does release. */
			struct pollfd pfd = { .fd = r->ring.ring_fd, .events = POLLIN };

			if (io_uring_cq_ready(&r->ring) == 0)
				poll(&pfd, 1, -1);
		}
		ret = io_uring_wait_cqe(&r->ring, &cqe);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0) {
			fm_err("dmio: io_uring_wait_cqe failed: %s", strerror(-ret));
			abort();
		}
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			struct dmio_piece *p = io_uring_cqe_get_data(cqe);

			n++;
			if (!p) {
				stop = true;
				continue;
			}
			DMIO_TSAN_ACQUIRE(p);
			dmio_piece_complete(p, cqe->res);
		}
		io_uring_cq_advance(&r->ring, n);
	}
	tl_ring = NULL;
	return NULL;
}

static void rings_free(struct dmio_ring *rings, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		io_uring_queue_exit(&rings[i].ring);
		pthread_mutex_destroy(&rings[i].sq_lock);
	}
	free(rings);
}

int dmio_engine_init(const struct dmio_engine_opts *opts)
{
	struct dmio_engine_opts o = { 0 };
	struct dmio_ring *rings;
	unsigned started = 0;
	int r = 0;

	if (opts)
		o = *opts;
	if (!o.rings)
		o.rings = 1;
	if (!o.sq_entries)
		o.sq_entries = 256;
	if (!o.max_io_bytes)
		o.max_io_bytes = 1u << 20;
	if (o.rings > 64 || o.sq_entries > 32768 || o.max_io_bytes < FM_PAGE_SIZE ||
	    !FM_IS_ALIGNED(o.max_io_bytes, FM_PAGE_SIZE) || o.max_io_bytes > (1u << 30))
		return -EINVAL;

	pthread_mutex_lock(&engine.lock);
	if (atomic_load(&engine.running)) {
		pthread_mutex_unlock(&engine.lock);
		return -EBUSY;
	}
	rings = calloc(o.rings, sizeof(*rings));
	if (!rings) {
		pthread_mutex_unlock(&engine.lock);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < o.rings; i++) {
		struct io_uring_params p = { 0 };

		/* Room for a deep queue of completions: many pieces can be in
		 * flight per SQ slot over the life of a batch. */
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = o.sq_entries * 16;
		r = io_uring_queue_init_params(o.sq_entries, &rings[i].ring, &p);
		if (r < 0)
			break;
		pthread_mutex_init(&rings[i].sq_lock, NULL);
		rings[i].idx = i;
		started++;
	}
	if (r < 0) {
		fm_debug("dmio: io_uring_queue_init: %s", strerror(-r));
		rings_free(rings, started);
		pthread_mutex_unlock(&engine.lock);
		return r;
	}
	engine.rings = rings;
	engine.nr_rings = o.rings;
	engine.max_io = o.max_io_bytes;
	for (unsigned i = 0; i < o.rings; i++) {
		r = -pthread_create(&rings[i].reaper, NULL, reaper_main, &rings[i]);
		if (r < 0) {
			/* Stop the reapers already running. */
			for (unsigned j = 0; j < i; j++) {
				struct io_uring_sqe *sqe;

				pthread_mutex_lock(&rings[j].sq_lock);
				sqe = get_sqe_locked(&rings[j]);
				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data(sqe, NULL);
				ring_submit_locked(&rings[j]);
				pthread_mutex_unlock(&rings[j].sq_lock);
				pthread_join(rings[j].reaper, NULL);
			}
			rings_free(rings, o.rings);
			engine.rings = NULL;
			engine.nr_rings = 0;
			pthread_mutex_unlock(&engine.lock);
			return r;
		}
		pthread_setname_np(rings[i].reaper, "dmio-reaper");
	}
	memset(&dmio_stats_g, 0, sizeof(dmio_stats_g));
	atomic_store_explicit(&engine.running, true, memory_order_release);
	pthread_mutex_unlock(&engine.lock);
	fm_debug("dmio: engine up: %u ring(s), %u SQ entries, max I/O %u",
		 o.rings, o.sq_entries, o.max_io_bytes);
	return 0;
}

int dmio_engine_ensure(void)
{
	int r;

	if (fm_likely(atomic_load_explicit(&engine.running, memory_order_acquire)))
		return 0;
	r = dmio_engine_init(NULL);
	return r == -EBUSY ? 0 : r;
}

void dmio_engine_shutdown(void)
{
	if (tl_ring) {
		fm_err("dmio: dmio_engine_shutdown called from a completion callback");
		abort();
	}
	pthread_mutex_lock(&engine.lock);
	if (!atomic_load(&engine.running)) {
		pthread_mutex_unlock(&engine.lock);
		dmio_default_client_free();
		return;
	}
	engine.draining = true;
	while (atomic_load(&engine.inflight) > 0)
		pthread_cond_wait(&engine.idle, &engine.lock);
	for (unsigned i = 0; i < engine.nr_rings; i++) {
		struct dmio_ring *r = &engine.rings[i];
		struct io_uring_sqe *sqe;

		pthread_mutex_lock(&r->sq_lock);
		sqe = get_sqe_locked(r);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, NULL);
		ring_submit_locked(r);
		pthread_mutex_unlock(&r->sq_lock);
	}
	for (unsigned i = 0; i < engine.nr_rings; i++)
		pthread_join(engine.rings[i].reaper, NULL);
	rings_free(engine.rings, engine.nr_rings);
	engine.rings = NULL;
	engine.nr_rings = 0;
	engine.draining = false;
	atomic_store(&engine.running, false);
	pthread_mutex_unlock(&engine.lock);
	dmio_default_client_free();
}
