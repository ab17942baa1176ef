/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine: io_uring rings, one reaper thread per ring.
 *
 * Each ring has exactly one issuer, its reaper thread: it creates the ring,
 * prepares and submits every SQE, reaps every CQE and runs the callbacks.
 * Other threads hand their pieces over through the ring's inbox and wake the
 * reaper only when it sleeps.  So:
 *   - the SQ needs no lock, and the ring can be set up SINGLE_ISSUER |
 *     DEFER_TASKRUN: the kernel's completion work for every request runs on
 *     the reaper, never on a submitter (a FUSE worker asleep in read() would
 *     otherwise be woken for each completion of a request it submitted);
 *   - a submitter pays nothing while the reaper is busy, and one eventfd
 *     write when it is asleep; requests that arrive together are submitted
 *     together.
 *
 * Invariants:
 *   - Every SQE's user_data is a piece, except the eventfd read, whose
 *     user_data is &ring->efd_buf.
 *   - The reaper refills the SQ every DMIO_REAP_BATCH completions, so the
 *     device is never idle while a long batch of callbacks runs.
 *   - Lost wake-ups are impossible: a submitter pushes to the inbox and then
 *     reads `sleeping`; the reaper sets `sleeping` and then reads the inbox
 *     (both sequentially consistent), so one of them sees the other.
 *     `woken` collapses the eventfd writes of one sleep into one.
 *   - `inflight` counts accepted requests whose callback has not returned;
 *     shutdown waits for it to reach zero (under idle_lock, never under the
 *     engine lock it holds while joining the reapers) before it stops them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "dmio_i.h"

/* Completions handled between two refills of the SQ. */
#define DMIO_REAP_BATCH 8
/* Low bit of a dmio piece's user_data: a loop's ring also carries its
 * owner's SQEs, whose user_data is a struct dmio_loop_op (aligned). */
#define DMIO_PIECE_TAG 1u

struct dmio_ring {
	struct io_uring ring;           /* used by the reaper thread only */
	pthread_t reaper;
	unsigned idx;
	unsigned sq_entries;
	int efd;                        /* wakes the reaper */
	uint64_t efd_buf;               /* target of the armed eventfd read */
	_Atomic(struct dmio_piece *) inbox; /* pushed by other threads (LIFO) */
	/* A loop's remote pieces, completed by their owner ring and handed
	 * back to be completed here (LIFO; result in inline_res). */
	_Atomic(struct dmio_piece *) returned;
	/* Owners between the push to `returned` and their eventfd write:
	 * once a piece is pushed the loop may complete it, go idle and be
	 * destroyed, so destroy waits for this to be 0. */
	atomic_uint returning;
	atomic_bool sleeping;           /* the reaper is about to wait */
	atomic_bool woken;              /* an eventfd write is outstanding */
	atomic_bool stop;
	struct dmio_piece *backlog;     /* reaper only: pieces without an SQE yet */
	struct dmio_piece *done, **done_tail; /* reaper only: done inline */
	unsigned unsubmitted;           /* reaper only: piece SQEs not yet submitted */
	bool submit_with_wait;          /* loop owner: the last dmio_loop_run_once()
					   handled completions and left what they
					   queued to the next one's wait */
	unsigned long pieces;           /* owner only: pieces queued, not completed */
	unsigned setup_flags;           /* extra IORING_SETUP_* (a loop's SQE128) */
	bool is_loop;                   /* a struct dmio_loop's: its owner reaps */
	unsigned prompt;                /* loop: dmio_loop_sqe_prompt()s not submitted */
	/* A loop's look at its owner's completions of a batch before they
	 * are handled (dmio_loop_set_peek()), or NULL. */
	void (*peek)(struct dmio_loop_op *op, int res);
	bool first_ops;                 /* loop: dmio_loop_set_first() */
	/* A loop's registered buffers (dmio_loop_register_buffers), owner
	 * only: a one-iovec piece inside one is READ/WRITE_FIXED. */
	struct iovec *fixed;
	unsigned nr_fixed;
	/* A loop's io-wq CPUs (dmio_loop_set_iowq_cpus), owner only: NULL,
	 * or applied by iowq_widen() to the workers at most once a second. */
	cpu_set_t *iowq_cpus;
	pid_t owner_tid;
	struct timespec iowq_scanned;

	/* start-up handshake with dmio_engine_init() */
	pthread_mutex_t init_lock;
	pthread_cond_t init_cond;
	bool init_done;
	int init_result;
};

struct dmio_engine {
	pthread_mutex_t lock;           /* guards start/stop and below */
	/* Not the lock above: shutdown holds that one while it joins the
	 * reapers, and the last callback's dmio_request_end() takes this. */
	pthread_mutex_t idle_lock;      /* guards draining */
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
	.idle_lock = PTHREAD_MUTEX_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
	.max_io = 1u << 20,
};

struct dmio_stats_atomic dmio_stats_g;

/* Set on a reaper thread: its ring. */
static __thread struct dmio_ring *tl_ring;

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
	s->inline_ios = atomic_load(&dmio_stats_g.inline_ios);
	s->submits = atomic_load(&dmio_stats_g.submits);
	s->bounced = atomic_load(&dmio_stats_g.bounced);
	s->resubmits = atomic_load(&dmio_stats_g.resubmits);
	s->fixed_ios = atomic_load(&dmio_stats_g.fixed_ios);
	s->iowq_widened = atomic_load(&dmio_stats_g.iowq_widened);
	s->region_errors = atomic_load(&dmio_stats_g.region_errors);
	s->mapped_ios = atomic_load(&dmio_stats_g.mapped_ios);
	s->map_faults = atomic_load(&dmio_stats_g.map_faults);
	s->streamed_ios = atomic_load(&dmio_stats_g.streamed_ios);
	s->fanned_ios = atomic_load(&dmio_stats_g.fanned_ios);
	s->first_ops = atomic_load(&dmio_stats_g.first_ops);
}

void dmio_request_begin(void)
{
	atomic_fetch_add_explicit(&engine.inflight, 1, memory_order_relaxed);
}

void dmio_request_end(void)
{
	if (atomic_fetch_sub_explicit(&engine.inflight, 1, memory_order_acq_rel) == 1) {
		pthread_mutex_lock(&engine.idle_lock);
		if (engine.draining)
			pthread_cond_broadcast(&engine.idle);
		pthread_mutex_unlock(&engine.idle_lock);
	}
}

/*----------------------------------------------------------------*/
/* The reaper's side: SQEs */

/* Fault injection, decided once per piece: true when a NOP stands in for
 * it.  With none set, the relaxed load is its whole cost. */
bool dmio_piece_replaced_by_fault(struct dmio_piece *p)
{
	return fm_unlikely(atomic_load_explicit(&p->dev->fault, memory_order_relaxed) != NULL) &&
	       p->fault == DMIO_PF_UNDECIDED && dmio_fault_decide(p);
}

/* user_data of the timeout SQE linked before a delayed piece: ignored. */
static const uint64_t delay_marker;

/* The registered buffer of @r holding all of @iov, or -1. */
static int fixed_index(const struct dmio_ring *r, const struct iovec *iov)
{
	const char *b = iov->iov_base;

	for (unsigned i = 0; i < r->nr_fixed; i++) {
		const char *fb = r->fixed[i].iov_base;

		if (b >= fb && iov->iov_len <= r->fixed[i].iov_len &&
		    (size_t)(b - fb) <= r->fixed[i].iov_len - iov->iov_len)
			return (int)i;
	}
	return -1;
}

/* A read or write of @p's iovec: READ/WRITE_FIXED when it is one iovec
 * inside a buffer registered with @r, vectored otherwise. */
static void prep_rw(struct dmio_ring *r, struct io_uring_sqe *sqe, struct dmio_piece *p,
		    bool write)
{
	struct iovec *iov = &p->iov[p->iov_first];
	int fx;

	if (r->nr_fixed && p->iovcnt == 1 && (fx = fixed_index(r, iov)) >= 0) {
		io_uring_prep_rw(write ? IORING_OP_WRITE_FIXED : IORING_OP_READ_FIXED, sqe,
				 p->dev->fd, iov->iov_base, (unsigned)iov->iov_len, p->off);
		sqe->buf_index = (__u16)fx;
		DMIO_STAT_ADD(fixed_ios, 1);
	} else {
		io_uring_prep_rw(write ? IORING_OP_WRITEV : IORING_OP_READV, sqe, p->dev->fd,
				 iov, (unsigned)p->iovcnt, p->off);
	}
}

/*
 * A slow disk (DMIO_FAULT_DELAY_WRITES/READS): @sqe becomes a timer linked
 * before the piece's I/O, which ETIME_SUCCESS keeps from cancelling it;
 * returns the SQE for the I/O.  Once per piece.  Without a second SQE the
 * I/O goes undelayed.
 */
static struct io_uring_sqe *prep_delay(struct dmio_ring *r, struct io_uring_sqe *sqe,
				       struct dmio_piece *p)
{
	struct io_uring_sqe *io = io_uring_get_sqe(&r->ring);

	if (io) {
		p->delay_ts.tv_sec = p->delay_ms / 1000;
		p->delay_ts.tv_nsec = (long long)(p->delay_ms % 1000) * 1000000;
		io_uring_prep_timeout(sqe, &p->delay_ts, 0, IORING_TIMEOUT_ETIME_SUCCESS);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, (uintptr_t)&delay_marker);
		sqe = io;
	}
	p->delay_ms = 0;
	return sqe;
}

static void prep_piece(struct dmio_ring *r, struct io_uring_sqe *sqe, struct dmio_piece *p)
{
	if (dmio_piece_replaced_by_fault(p)) {
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, (uintptr_t)p | DMIO_PIECE_TAG);
		DMIO_TSAN_ACQUIRE(p);
		return;
	}
	switch (p->kind) {
	case DMIO_PIECE_READ:
		if (fm_unlikely(p->delay_ms))
			sqe = prep_delay(r, sqe, p);
		prep_rw(r, sqe, p, false);
		break;
	case DMIO_PIECE_WRITE:
		if (fm_unlikely(p->delay_ms))
			sqe = prep_delay(r, sqe, p);
		prep_rw(r, sqe, p, true);
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
	io_uring_sqe_set_data64(sqe, (uintptr_t)p | DMIO_PIECE_TAG);
	DMIO_TSAN_ACQUIRE(p); /* handed over by another thread's inbox push */
}

/* Submit what is queued; @get_events: the same system call also posts
 * the completions the ring's deferred task work holds. */
static void ring_submit_how(struct dmio_ring *r, bool get_events)
{
	r->prompt = 0;  /* (none left unsubmitted, or submitted here) */
	while (io_uring_sq_ready(&r->ring) > 0) {
		int n = get_events ? io_uring_submit_and_get_events(&r->ring)
				   : io_uring_submit(&r->ring);

		if (n >= 0) {
			/* Count system calls that carried pieces (not the
			 * eventfd read alone). */
			if (r->unsubmitted)
				DMIO_STAT_ADD(submits, 1);
			r->unsubmitted = 0;
			return;
		}
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN || n == -EBUSY)
			return; /* retried after the next completions are reaped */
		fm_fatal("dmio: io_uring_submit failed: %s", strerror(-n));
	}
}

static void ring_submit(struct dmio_ring *r)
{
	ring_submit_how(r, false);
}

/*
 * In-memory legs (tmpfs, ramfs).  io_uring cannot read or write those
 * without blocking, so it passes each request to an io-wq worker thread: two
 * more thread switches around what is a copy of a few KiB.  The reaper makes
 * small copies itself, a memcpy through the leg's mapping (map.c; a plain
 * system call where the mapping cannot serve), and completes them from
 * its done list in its loop (never from here: callbacks call queue_piece,
 * and a callback must not run inside another).  On a reaper large ones stay
 * with io_uring, whose workers copy in parallel on other CPUs.
 *
 * A loop reads them all itself, whatever the size: there is a loop per CPU
 * already, so io-wq adds no parallelism there, only switches and a worker
 * of each loop's own io-wq (io-wq is per task).  Measured with fio 1M QD8
 * reads through the cache (bufio_prefetch: one piece of up to 1 MiB):
 * 6.4-7.1 ms of CPU per MiB through io-wq, 0.6-0.8 inline.  So does it
 * write them, whatever the size, when the leg is mapped (map.c: a memcpy,
 * half a pwritev2's time per MiB).  1M QD8 writes on 2 tmpfs legs, same
 * run against io-wq, 3 rounds, load 3-6: /dev/fuse 1190/2584/1414 against
 * 1253/1107/1448 MB/s, daemon CPU per MiB 473/439/477 against 619/681/595
 * us; FUSE over io_uring 2015/1722/2038 against 1798/1547/1886 MB/s,
 * 400/409/357 against 651/683/600 us, and with fio pinned to one CPU (so
 * one pinned queue, whose io-wq workers copied on the other CPU)
 * 1703/2208 against 1169/1429 MB/s.  Through pwritev2 inline they had
 * lost (425-687 MB/s inline vs 576-1058 through io-wq): those stay with
 * io-wq where the mapping cannot serve.  The copy is CPU work, not a
 * wait: it keeps the loop's promise not to sleep as much as a small one
 * does.
 */
#define DMIO_INLINE_MAX (64u << 10)

static bool piece_inline(struct dmio_ring *r, struct dmio_piece *p)
{
	const struct iovec *iov = &p->iov[p->iov_first];
	ssize_t n;

	if (p->dev->map && (p->kind == DMIO_PIECE_WRITE || p->kind == DMIO_PIECE_FALLOC))
		dmio_map_note(p->dev, p->kind == DMIO_PIECE_WRITE, p->off, p->len);
	if (!p->dev->in_memory ||
	    (p->len > DMIO_INLINE_MAX && !(r->is_loop && (p->kind == DMIO_PIECE_READ || p->dev->map))) ||
	    (p->kind != DMIO_PIECE_READ && p->kind != DMIO_PIECE_WRITE))
		return false;
	DMIO_TSAN_ACQUIRE(p);
	if (p->fanned) {
		p->fanned = false; /* copied already, with its siblings */
		n = (ssize_t)p->len;
	} else if (dmio_piece_replaced_by_fault(p))
		n = 0; /* what the NOP standing in for it would return */
	else if (p->delay_ms)
		return false; /* delayed: io_uring's timer first */
	else if (dmio_map_rw(p, &n))
		; /* a copy through the mapping (map.c) */
	else if (p->kind == DMIO_PIECE_READ)
		n = preadv2(p->dev->fd, iov, (int)p->iovcnt, (off_t)p->off, 0);
	else
		n = pwritev2(p->dev->fd, iov, (int)p->iovcnt, (off_t)p->off, p->rw_flags);
	p->inline_res = n < 0 ? -errno : (int)n;
	p->next = NULL;
	*r->done_tail = p;
	r->done_tail = &p->next;
	DMIO_STAT_ADD(inline_ios, 1);
	return true;
}

/* Complete what piece_inline did; returns how many there were. */
static unsigned run_done(struct dmio_ring *r)
{
	struct dmio_piece *p, *ret = NULL;
	unsigned n = 0;

	if (fm_unlikely(atomic_load_explicit(&r->returned, memory_order_relaxed) != NULL))
		ret = atomic_exchange(&r->returned, NULL);
	while (ret) {
		struct dmio_piece *next = ret->next;

		r->pieces--;
		dmio_piece_complete(ret, ret->inline_res);
		ret = next;
		n++;
	}
	p = r->done;

	r->done = NULL;
	r->done_tail = &r->done;
	while (p) {
		struct dmio_piece *next = p->next;

		r->pieces--;
		dmio_piece_complete(p, p->inline_res);
		p = next;
		n++;
	}
	return n;
}

/*
 * A pinned loop's io-wq workers.  They copy the writes piece_inline()
 * leaves to io_uring (above 64 KiB to in-memory legs it cannot copy
 * through a mapping: not mapped, or grown past it); the kernel forks
 * them from the loop's owner, and since Linux 6.2 a thread inherits the
 * affinity its parent asked for (sched_setaffinity's user mask), which
 * IORING_REGISTER_IOWQ_AFF cannot widen (the mask it sets is intersected
 * with it).  So a FUSE-over-io_uring queue, pinned to the CPU whose
 * requests it serves, had its copies made on that one CPU too, beside
 * the client that issued them, while the other CPUs idled.  The owner
 * sets the workers it finds (named iou-wrk-<owner's tid>) to the loop's
 * io-wq CPUs, when it punts such a piece, at most once a second (@force:
 * now): a scan of /proc/self/task, some 3 system calls per thread.
 */
static void iowq_widen(struct dmio_ring *r, bool force)
{
	char want[32], comm[32];
	struct timespec now;
	struct dirent *de;
	DIR *d;
	int dfd;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (!force && now.tv_sec == r->iowq_scanned.tv_sec)
		return;
	r->iowq_scanned = now;
	d = opendir("/proc/self/task");
	if (!d)
		return;
	dfd = dirfd(d);
	snprintf(want, sizeof(want), "iou-wrk-%d\n", (int)r->owner_tid);
	while ((de = readdir(d))) {
		char path[64];
		cpu_set_t cur;
		ssize_t n;
		pid_t tid;
		int fd;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		tid = (pid_t)atoi(de->d_name);
		snprintf(path, sizeof(path), "%d/comm", (int)tid);
		fd = openat(dfd, path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, comm, sizeof(comm) - 1);
		close(fd);
		if (n <= 0)
			continue;
		comm[n] = 0;
		if (strcmp(comm, want) != 0)
			continue;
		if (sched_getaffinity(tid, sizeof(cur), &cur) == 0 && CPU_EQUAL(&cur, r->iowq_cpus))
			continue;
		if (sched_setaffinity(tid, sizeof(*r->iowq_cpus), r->iowq_cpus) == 0)
			DMIO_STAT_ADD(iowq_widened, 1);
	}
	closedir(d);
}

/* Queue @p on the SQ, or on the backlog when the SQ stays full. */
static void queue_piece(struct dmio_ring *r, struct dmio_piece *p)
{
	struct io_uring_sqe *sqe;

	r->pieces++;
	if (p->dev->nbd) {
		dmio_nbd_queue(r, p);
		return;
	}
	if (piece_inline(r, p))
		return;
	if (fm_unlikely(r->iowq_cpus != NULL) && p->dev->in_memory)
		iowq_widen(r, false);
	if (r->backlog) {
		struct dmio_piece **pp = &r->backlog;

		while (*pp)
			pp = &(*pp)->next;
		p->next = NULL;
		*pp = p;
		return;
	}
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		ring_submit(r);
		sqe = io_uring_get_sqe(&r->ring);
	}
	if (!sqe) {
		p->next = NULL;
		r->backlog = p;
		return;
	}
	prep_piece(r, sqe, p);
	r->unsubmitted++;
	DMIO_STAT_ADD(sqes, 1);
}

static void drain_backlog(struct dmio_ring *r)
{
	while (r->backlog) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
		struct dmio_piece *p;

		if (!sqe) {
			ring_submit(r);
			sqe = io_uring_get_sqe(&r->ring);
			if (!sqe)
				return;
		}
		p = r->backlog;
		r->backlog = p->next;
		prep_piece(r, sqe, p);
		r->unsubmitted++;
		DMIO_STAT_ADD(sqes, 1);
	}
}

/* Take everything other threads handed over, oldest first. */
static void drain_inbox(struct dmio_ring *r)
{
	struct dmio_piece *p = atomic_exchange(&r->inbox, NULL), *fifo = NULL;

	while (p) {
		struct dmio_piece *next = p->next;

		p->next = fifo;
		fifo = p;
		p = next;
	}
	while (fifo) {
		struct dmio_piece *next = fifo->next;

		queue_piece(r, fifo);
		fifo = next;
	}
}

static void arm_eventfd(struct dmio_ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	if (!sqe) {
		ring_submit(r);
		sqe = io_uring_get_sqe(&r->ring);
	}
	if (!sqe) {
		fm_fatal("dmio: no SQE for the wake-up read");
	}
	io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof(r->efd_buf), 0);
	io_uring_sqe_set_data64(sqe, (uintptr_t)&r->efd_buf);
}

/*----------------------------------------------------------------*/
/* Other threads' side */

static struct dmio_ring *ring_of(const struct dmio_dev *dev)
{
	return &engine.rings[dev->seq % engine.nr_rings];
}

static void inbox_push(struct dmio_ring *r, struct dmio_piece *first, struct dmio_piece *last)
{
	struct dmio_piece *old = atomic_load(&r->inbox);

	for (struct dmio_piece *p = first; p; p = p->next) {
		DMIO_TSAN_RELEASE(p);
		if (p == last)
			break;
	}
	do {
		last->next = old;
	} while (!atomic_compare_exchange_weak(&r->inbox, &old, first));
	if (atomic_load(&r->sleeping) && !atomic_exchange(&r->woken, true)) {
		uint64_t one = 1;

		while (write(r->efd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
	}
}

struct io_uring_sqe *dmio_ring_get_sqe(struct dmio_ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	if (!sqe) {
		ring_submit(r);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

bool dmio_ring_reserve_sqes(struct dmio_ring *r, unsigned n)
{
	if (io_uring_sq_space_left(&r->ring) >= n)
		return true;
	ring_submit(r);
	return io_uring_sq_space_left(&r->ring) >= n;
}

void dmio_ring_piece_done(struct dmio_ring *r, struct dmio_piece *p, int res)
{
	struct dmio_ring *home = p->home;

	p->inline_res = res;
	if (!home || home == r) {
		p->next = NULL;
		*r->done_tail = p;
		r->done_tail = &p->next;
		return;
	}
	/* Back to the loop that submitted it: one push, and an eventfd
	 * write unless one is outstanding (its owner clears `woken` when it
	 * reaps the eventfd read, before it drains `returned`). */
	r->pieces--;
	atomic_fetch_add(&home->returning, 1);
	struct dmio_piece *old = atomic_load(&home->returned);

	do {
		p->next = old;
	} while (!atomic_compare_exchange_weak(&home->returned, &old, p));
	if (!atomic_exchange(&home->woken, true)) {
		uint64_t one = 1;

		while (write(home->efd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
	}
	atomic_fetch_sub_explicit(&home->returning, 1, memory_order_release); /* last touch */
}

/*
 * A loop's pieces of one write into several mapped legs: copied together,
 * one pass over the source (map.c, dmio_map_fan, which decides which
 * pieces may be: writes of 4 KiB or more into mapped legs without fault
 * injection, the same memory into each), before queue_piece, whose
 * piece_inline then only completes them.
 */
static void fan_pieces(struct dmio_piece *head)
{
	for (struct dmio_piece *p = head; p; p = p->next)
		dmio_map_fan(p);
}

void dmio_submit_pieces(struct dmio_piece *head)
{
	if (tl_ring && tl_ring->is_loop) {
		fan_pieces(head);
		/* Run to completion: a loop's owner keeps its I/O on its own
		 * ring, whatever the device, and completes it itself. */
		for (struct dmio_piece *p = head, *next; p; p = next) {
			next = p->next;
			if (fm_unlikely(p->dev->nbd != NULL)) {
				/* A remote device's connection is driven by
				 * its owner ring; the piece comes back here
				 * to complete (dmio_ring_piece_done). */
				p->home = tl_ring;
				tl_ring->pieces++;
				p->next = NULL;
				inbox_push(ring_of(p->dev), p, p);
				continue;
			}
			p->home = NULL;
			queue_piece(tl_ring, p);
		}
		return;
	}
	while (head) {
		struct dmio_ring *r = ring_of(head->dev);
		struct dmio_piece *mine = NULL, *mine_last = NULL, *rest = NULL, **rest_tail = &rest;

		/* Split off this ring's pieces, keeping their order. */
		for (struct dmio_piece *p = head, *next; p; p = next) {
			next = p->next;
			p->next = NULL;
			p->home = NULL;
			if (ring_of(p->dev) == r) {
				if (mine_last)
					mine_last->next = p;
				else
					mine = p;
				mine_last = p;
			} else {
				*rest_tail = p;
				rest_tail = &p->next;
			}
		}
		if (tl_ring == r) {
			/* On its own reaper: straight onto the SQ; submitted
			 * with the next refill. */
			for (struct dmio_piece *p = mine, *next; p; p = next) {
				next = p->next;
				queue_piece(r, p);
			}
		} else {
			/* The inbox is a LIFO stack: push in reverse so that
			 * drain_inbox's reversal restores the order. */
			struct dmio_piece *rev = NULL, *rev_last = mine;

			while (mine) {
				struct dmio_piece *next = mine->next;

				mine->next = rev;
				rev = mine;
				mine = next;
			}
			inbox_push(r, rev, rev_last);
		}
		head = rest;
	}
}

/*----------------------------------------------------------------*/
/* The reaper */

/* The loop op a completion's user data names, or NULL: a piece, the
 * eventfd's read, a delay marker (or one handled by reap_first()). */
static struct dmio_loop_op *cqe_loop_op(const struct dmio_ring *r, uintptr_t data)
{
	if (!data || (data & DMIO_PIECE_TAG) || data == (uintptr_t)&r->efd_buf ||
	    data == (uintptr_t)&delay_marker)
		return NULL;
	return (struct dmio_loop_op *)data;
}

/*
 * A loop's ops marked first (dmio_loop_set_first()): handled wherever they
 * are in the CQ (the first DMIO_FIRST_SCAN entries), each then marked
 * handled in place (delay_marker: skipped, advanced over as usual).
 */
#define DMIO_FIRST_SCAN 64
static void reap_first(struct dmio_ring *r)
{
	unsigned head = *r->ring.cq.khead;
	unsigned tail = io_uring_smp_load_acquire(r->ring.cq.ktail);
	unsigned mask = r->ring.cq.ring_mask;
	bool ahead = false;     /* other completions precede it */

	for (unsigned i = head; i != tail && i - head < DMIO_FIRST_SCAN; i++) {
		struct io_uring_cqe *c = &r->ring.cq.cqes[i & mask];
		uintptr_t data = (uintptr_t)io_uring_cqe_get_data64(c);
		struct dmio_loop_op *op = cqe_loop_op(r, data);

		if (data == (uintptr_t)&delay_marker)
			continue;
		if (!op || !op->first) {
			ahead = true;
			continue;
		}
		c->user_data = (uintptr_t)&delay_marker;
		if (ahead)
			DMIO_STAT_ADD(first_ops, 1);
		op->done(op, c->res, c->flags);
	}
}

/* Handle up to DMIO_REAP_BATCH completions; returns how many there were. */
static unsigned reap(struct dmio_ring *r)
{
	struct io_uring_cqe *cqes[DMIO_REAP_BATCH];
	unsigned n = io_uring_peek_batch_cqe(&r->ring, cqes, DMIO_REAP_BATCH);
	bool rearm = false;

	if (r->first_ops && n)
		reap_first(r);
	if (r->peek) {
		for (unsigned i = 0; i < n; i++) {
			struct dmio_loop_op *op =
				cqe_loop_op(r, (uintptr_t)io_uring_cqe_get_data64(cqes[i]));

			if (op)
				r->peek(op, cqes[i]->res);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		uintptr_t data = (uintptr_t)io_uring_cqe_get_data64(cqes[i]);
		int res = cqes[i]->res;

		if (data == (uintptr_t)&r->efd_buf) {
			atomic_store(&r->woken, false);
			rearm = true;
		} else if (data == (uintptr_t)&delay_marker) {
			continue;
		} else if (data & DMIO_PIECE_TAG) {
			r->pieces--;
			dmio_piece_complete((struct dmio_piece *)(data & ~(uintptr_t)DMIO_PIECE_TAG), res);
		} else {
			struct dmio_loop_op *op = (struct dmio_loop_op *)data;

			op->done(op, res, cqes[i]->flags);
		}
	}
	io_uring_cq_advance(&r->ring, n);
	if (rearm)
		arm_eventfd(r);
	return n;
}

int dmio_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *params)
{
	/* Most capable first; older kernels (or valgrind, which does not
	 * know these flags' semantics) get the plain ring. */
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int ret = -EINVAL;

	for (unsigned i = RUNNING_ON_VALGRIND ? 2 : 0; i < FM_ARRAY_SIZE(flag_sets); i++) {
		struct io_uring_params p = *params;

		p.flags |= flag_sets[i];
		ret = io_uring_queue_init_params(entries, ring, &p);
		if (ret == 0) {
			*params = p;
			return 0;
		}
		if (ret != -EINVAL)
			break;
	}
	return ret;
}

static int ring_setup(struct dmio_ring *r)
{
	struct io_uring_params p = {
		.flags = IORING_SETUP_CQSIZE | r->setup_flags,
		.cq_entries = r->sq_entries * 16,
	};
	int ret = dmio_ring_init(r->sq_entries, &r->ring, &p);

	if (ret == 0)
		fm_debug("dmio: ring %u: flags 0x%x", r->idx, p.flags);
	return ret;
}

static void *reaper_main(void *arg)
{
	struct dmio_ring *r = arg;
	int ret;

	tl_ring = r;
	r->done_tail = &r->done;
	ret = ring_setup(r);
	if (ret == 0)
		arm_eventfd(r);
	pthread_mutex_lock(&r->init_lock);
	r->init_result = ret;
	r->init_done = true;
	pthread_cond_signal(&r->init_cond);
	pthread_mutex_unlock(&r->init_lock);
	if (ret < 0)
		return NULL;

	for (;;) {
		drain_backlog(r);
		dmio_nbd_arm_deferred();
		drain_inbox(r);
		if (reap(r) + run_done(r) > 0) {
			/* Refill the device before handling the next batch. */
			ring_submit(r);
			continue;
		}
		if (atomic_load(&r->stop) && !r->backlog && !atomic_load(&r->inbox))
			break;
		if (dmio_nbd_arm_deferred()) {
			/* A remote device's poll still waits for room: not
			 * asleep (no completion of it would wake us). */
			ring_submit(r);
			continue;
		}
		atomic_store(&r->sleeping, true);
		if (atomic_load(&r->inbox) || atomic_load(&r->stop)) {
			atomic_store(&r->sleeping, false);
			continue;
		}
		if (fm_unlikely(RUNNING_ON_VALGRIND)) {
			/* valgrind (3.19) holds its big lock across
			 * io_uring_enter, which would stop every other thread
			 * while we sleep in it; poll() it does release. */
			struct pollfd pfd = { .fd = r->ring.ring_fd, .events = POLLIN };

			ring_submit(r);
			if (io_uring_cq_ready(&r->ring) == 0)
				poll(&pfd, 1, -1);
		}
		/* Submit what is queued and wait, in one system call. */
		ret = io_uring_submit_and_wait(&r->ring, 1);
		if (ret > 0 && r->unsubmitted)
			DMIO_STAT_ADD(submits, 1);
		if (ret >= 0)
			r->unsubmitted = 0;
		else if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY &&
			 ret != -ETIME) {
			fm_fatal("dmio: io_uring_submit_and_wait failed: %s", strerror(-ret));
		}
		atomic_store(&r->sleeping, false);
	}
	io_uring_queue_exit(&r->ring);
	tl_ring = NULL;
	return NULL;
}

static void ring_destroy(struct dmio_ring *r)
{
	if (r->efd >= 0)
		close(r->efd);
	pthread_mutex_destroy(&r->init_lock);
	pthread_cond_destroy(&r->init_cond);
}

/* Tell the reaper to leave once its queues are empty, and join it. */
static void ring_stop(struct dmio_ring *r)
{
	uint64_t one = 1;

	atomic_store(&r->stop, true);
	while (write(r->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(r->reaper, NULL);
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
	if (o.rings > 64 || o.sq_entries < 2 || o.sq_entries > 32768 ||
	    o.max_io_bytes < FM_PAGE_SIZE ||
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
	engine.rings = rings;
	engine.nr_rings = o.rings;
	engine.max_io = o.max_io_bytes;
	for (unsigned i = 0; i < o.rings && r == 0; i++) {
		struct dmio_ring *ring = &rings[i];

		ring->idx = i;
		ring->sq_entries = o.sq_entries;
		pthread_mutex_init(&ring->init_lock, NULL);
		pthread_cond_init(&ring->init_cond, NULL);
		ring->efd = eventfd(0, EFD_CLOEXEC);
		if (ring->efd < 0) {
			r = -errno;
			ring_destroy(ring);
			break;
		}
		r = fm_thread_start(&ring->reaper, "dmio-reaper", reaper_main, ring);
		if (r < 0) {
			ring_destroy(ring);
			break;
		}
		pthread_mutex_lock(&ring->init_lock);
		while (!ring->init_done)
			pthread_cond_wait(&ring->init_cond, &ring->init_lock);
		r = ring->init_result;
		pthread_mutex_unlock(&ring->init_lock);
		if (r < 0) {
			pthread_join(ring->reaper, NULL);
			ring_destroy(ring);
			break;
		}
		started++;
	}
	if (r < 0) {
		fm_debug("dmio: cannot start the engine: %s", strerror(-r));
		for (unsigned i = 0; i < started; i++) {
			ring_stop(&rings[i]);
			ring_destroy(&rings[i]);
		}
		free(rings);
		engine.rings = NULL;
		engine.nr_rings = 0;
		pthread_mutex_unlock(&engine.lock);
		return r;
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
		fm_fatal("dmio: dmio_engine_shutdown called from a completion callback");
	}
	pthread_mutex_lock(&engine.lock);
	if (!atomic_load(&engine.running)) {
		pthread_mutex_unlock(&engine.lock);
		dmio_default_client_free();
		return;
	}
	pthread_mutex_lock(&engine.idle_lock);
	engine.draining = true;
	while (atomic_load(&engine.inflight) > 0)
		pthread_cond_wait(&engine.idle, &engine.idle_lock);
	engine.draining = false;
	pthread_mutex_unlock(&engine.idle_lock);
	/* The last callback may still be on its way out of
	 * dmio_request_end(): joining the reapers waits for it. */
	for (unsigned i = 0; i < engine.nr_rings; i++)
		ring_stop(&engine.rings[i]);
	for (unsigned i = 0; i < engine.nr_rings; i++)
		ring_destroy(&engine.rings[i]);
	free(engine.rings);
	engine.rings = NULL;
	engine.nr_rings = 0;
	atomic_store(&engine.running, false);
	pthread_mutex_unlock(&engine.lock);
	dmio_default_client_free();
}

/*----------------------------------------------------------------*/
/* Loops: a ring owned by the caller's thread */

/*
 * A loop's object cache (dmio_loop_cache_get/put): freed malloc() blocks
 * of a few sizes, kept by the owner for its next allocations of the same
 * size, on stacks linked through each block's first word.  Owner only,
 * so no lock: the free lists behind (dmio clients', the mirror's,
 * bufio's) each take a mutex both loops share, twice per object.
 */
#define LOOP_CACHE_SIZES 8
#define LOOP_CACHE_MAX 256      /* blocks per size */
struct loop_cache {
	size_t size;                    /* 0: unused */
	unsigned nr;
	void *head;
};

struct dmio_loop {
	struct dmio_ring r;
	struct loop_cache cache[LOOP_CACHE_SIZES];
};

static struct dmio_loop *this_loop(void)
{
	struct dmio_ring *r = tl_ring;

	return r && r->is_loop ? (struct dmio_loop *)((char *)r - offsetof(struct dmio_loop, r)) :
				 NULL;
}

void *dmio_loop_cache_get(size_t size)
{
	struct dmio_loop *l = this_loop();

	if (!l)
		return NULL;
	for (unsigned i = 0; i < LOOP_CACHE_SIZES && l->cache[i].size; i++) {
		struct loop_cache *c = &l->cache[i];
		void *p;

		if (c->size != size)
			continue;
		p = c->head;
		if (p) {
			memcpy(&c->head, p, sizeof(void *));
			c->nr--;
		}
		return p;
	}
	return NULL;
}

bool dmio_loop_cache_put(size_t size, void *p)
{
	struct dmio_loop *l = this_loop();

	if (!l || size < sizeof(void *))
		return false;
	for (unsigned i = 0; i < LOOP_CACHE_SIZES; i++) {
		struct loop_cache *c = &l->cache[i];

		if (!c->size)
			c->size = size;
		if (c->size != size)
			continue;
		if (c->nr >= LOOP_CACHE_MAX)
			return false;
		memcpy(p, &c->head, sizeof(void *));
		c->head = p;
		c->nr++;
		return true;
	}
	return false;
}

static void loop_cache_free(struct dmio_loop *l)
{
	for (unsigned i = 0; i < LOOP_CACHE_SIZES; i++) {
		struct loop_cache *c = &l->cache[i];

		while (c->head) {
			void *p = c->head;

			memcpy(&c->head, p, sizeof(void *));
			free(p);
		}
		c->nr = 0;
	}
}

int dmio_loop_create(const struct dmio_loop_opts *opts, struct dmio_loop **ret_loop)
{
	struct dmio_loop *l;
	int ret;

	if (tl_ring)
		return -EBUSY;
	if (opts && opts->sq_entries > 32768)
		return -EINVAL;
	ret = dmio_engine_ensure();
	if (ret < 0)
		return ret;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->r.is_loop = true;
	l->r.idx = UINT32_MAX;
	l->r.sq_entries = opts && opts->sq_entries ? opts->sq_entries : 256;
	l->r.setup_flags = opts ? opts->setup_flags : 0;
	l->r.done_tail = &l->r.done;
	pthread_mutex_init(&l->r.init_lock, NULL);
	pthread_cond_init(&l->r.init_cond, NULL);
	l->r.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->r.efd < 0) {
		ret = -errno;
		ring_destroy(&l->r);
		free(l);
		return ret;
	}
	ret = ring_setup(&l->r);
	if (ret < 0) {
		ring_destroy(&l->r);
		free(l);
		return ret;
	}
	arm_eventfd(&l->r);
	tl_ring = &l->r;
	*ret_loop = l;
	return 0;
}

struct io_uring_sqe *dmio_loop_get_sqe(struct dmio_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->r.ring);

	if (!sqe) {
		ring_submit(&l->r);
		sqe = io_uring_get_sqe(&l->r.ring);
	}
	return sqe;
}

struct io_uring *dmio_loop_ring(struct dmio_loop *l)
{
	return &l->r.ring;
}

int dmio_loop_set_iowq_cpus(struct dmio_loop *l, const cpu_set_t *cpus)
{
	struct dmio_ring *r = &l->r;
	int ret;

	if (CPU_COUNT(cpus) == 0)
		return -EINVAL;
	if (!r->iowq_cpus) {
		r->iowq_cpus = malloc(sizeof(*r->iowq_cpus));
		if (!r->iowq_cpus)
			return -ENOMEM;
	}
	*r->iowq_cpus = *cpus;
	r->owner_tid = gettid();
	/* Workers forked from now on, where the owner's own pinning allows
	 * it (see iowq_widen()); a kernel without it: iowq_widen() alone. */
	ret = io_uring_register_iowq_aff(&r->ring, sizeof(*cpus), cpus);
	if (ret < 0)
		fm_debug("dmio: loop io-wq affinity: %s", strerror(-ret));
	iowq_widen(r, true);
	return 0;
}

int dmio_loop_run_once(struct dmio_loop *l, bool wait)
{
	struct dmio_ring *r = &l->r;
	unsigned long pieces;
	unsigned n;
	bool legs;
	int ret;

	drain_backlog(r);
	if (wait && r->submit_with_wait) {
		/* The last call handled completions and submitted nothing:
		 * when nothing has arrived since, what they queued goes in the
		 * system call that waits.  With DEFER_TASKRUN nothing arrives
		 * in the CQ without a system call anyway. */
		r->submit_with_wait = false;
		if (!r->done && !atomic_load_explicit(&r->returned, memory_order_relaxed) &&
		    io_uring_cq_ready(&r->ring) == 0)
			goto wait;
	}
	pieces = r->pieces;
	n = reap(r);
	legs = r->pieces < pieces;      /* (not the inline ones, below) */
	n += run_done(r);
	if (n > 0 && wait && r->prompt && legs && io_uring_cq_ready(&r->ring) > 0) {
		/* Leg I/O completed and more completions wait: the prompt
		 * SQEs (replies) their callbacks queued go now, not after the
		 * last of them is handled.  4k QD32 randread on disk legs:
		 * a burst of ~32 leg completions, handled 8 a call
		 * (DMIO_REAP_BATCH), answered its first request only once
		 * all 32 were (doc/DESIGN.md, "Cold 4 KiB reads on legs on
		 * disk").  The last batch's go with the wait, as before: one
		 * enter a turn when completions come one or a few at a time. */
		if (r->first_ops) {
			/* dmio_loop_set_first(): the submission also posts the
			 * requests read meanwhile, then the client that the
			 * replies woke may run (on this CPU, where it usually
			 * is: it sends its next requests now, not after the
			 * burst), and what it sent is posted too; reap_first()
			 * handles them ahead of the burst's rest. */
			ring_submit_how(r, true);
			sched_yield();
			io_uring_get_events(&r->ring);
		} else {
			ring_submit(r);
		}
		return (int)n;
	}
	if (n > 0 && wait) {
		/* Submitted by the next call, in the system call that waits:
		 * one io_uring_enter per turn of the owner's loop instead of
		 * a submit here and a wait after (4k QD1 on an io_uring queue:
		 * 2.00 enters per request, the ceiling 1.00). */
		r->submit_with_wait = true;
		return (int)n;
	}
	if (n > 0 || !wait) {
		ring_submit(r);
		return (int)n;
	}
wait:
	if (fm_unlikely(RUNNING_ON_VALGRIND)) {
		/* See reaper_main(): poll() releases valgrind's lock. */
		struct pollfd pfd = { .fd = r->ring.ring_fd, .events = POLLIN };

		ring_submit(r);
		if (io_uring_cq_ready(&r->ring) == 0 && poll(&pfd, 1, -1) < 0 && errno == EINTR)
			return -EINTR;
	}
	/* (A submission that stops short does not wait: the kernel returns
	 * at once.  So the count never waits for completions not coming.) */
	ret = io_uring_submit_and_wait(&r->ring, 1 + r->prompt);
	r->prompt = 0;
	if (ret > 0 && r->unsubmitted)
		DMIO_STAT_ADD(submits, 1);
	if (ret >= 0)
		r->unsubmitted = 0;
	else if (ret == -EINTR)
		return -EINTR;
	else if (ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
		fm_fatal("dmio: io_uring_submit_and_wait failed: %s", strerror(-ret));
	}
	return 0;
}

void dmio_loop_set_peek(struct dmio_loop *l, void (*peek)(struct dmio_loop_op *op, int res))
{
	l->r.peek = peek;
}

void dmio_loop_set_first(struct dmio_loop *l)
{
	l->r.first_ops = true;
}

void dmio_loop_sqe_prompt(struct dmio_loop *l)
{
	l->r.prompt++;
}

void dmio_loop_submit(struct dmio_loop *l)
{
	struct dmio_ring *r = &l->r;

	if (r->unsubmitted)
		ring_submit(r);
}

void dmio_loop_wake(struct dmio_loop *l)
{
	uint64_t one = 1;

	while (write(l->r.efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

bool dmio_loop_idle(const struct dmio_loop *l)
{
	return l->r.pieces == 0 && !l->r.backlog && !l->r.done;
}

int dmio_loop_register_buffers(struct dmio_loop *l, const struct iovec *iov, unsigned n)
{
	struct iovec *copy;
	int r;

	if (l->r.nr_fixed || !n)
		return -EINVAL;
	copy = malloc(n * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, iov, n * sizeof(*copy));
	r = io_uring_register_buffers(&l->r.ring, iov, n);
	if (r < 0) {
		free(copy);
		return r;
	}
	l->r.fixed = copy;
	l->r.nr_fixed = n;
	return 0;
}

void dmio_loop_destroy(struct dmio_loop *l)
{
	if (!l)
		return;
	if (!dmio_loop_idle(l)) {
		fm_fatal("dmio: a loop was destroyed with %lu piece(s) in flight", l->r.pieces);
	}
	/* What the last dmio_loop_run_once(l, true) left for its next wait
	 * (the owner's own SQEs) is not dropped. */
	ring_submit(&l->r);
	/* An owner that handed back our last piece may still be about to
	 * write our eventfd (dmio_ring_piece_done). */
	while (atomic_load_explicit(&l->r.returning, memory_order_acquire))
		sched_yield();
	io_uring_queue_exit(&l->r.ring);
	loop_cache_free(l);
	free(l->r.fixed);
	free(l->r.iowq_cpus);
	if (tl_ring == &l->r)
		tl_ring = NULL;
	ring_destroy(&l->r);
	free(l);
}
