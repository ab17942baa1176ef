/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * membdev: an in-memory block device for bufio tests (struct
 * fm_bdev_ops).  It counts and logs every request, can fail reads or
 * writes that touch chosen sectors, can hold requests back (a gate) and
 * can complete them on a worker thread instead of inside submit().
 *
 * Threading: every function may be called from any thread; the device's
 * state is under its mutex.  In async mode completions run on the worker
 * thread, in submission order; in sync mode inside submit().  Gated
 * requests are held (in async mode, queued; in sync mode, submit blocks)
 * until membdev_open_gate().
 *
 * Every function here is static inline: a test includes only this header.
 */
#ifndef BUFIO_MEMBDEV_H
#define BUFIO_MEMBDEV_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fusemirror/bufio.h"

#define MEMBDEV_LOG 1024

struct membdev_io {
	enum fm_bdev_op op;
	uint64_t sector;
	uint64_t bytes;
	unsigned iovcnt;
	unsigned flags;
};

struct membdev_req {
	struct membdev_req *next;
	enum fm_bdev_op op;
	uint64_t sector;
	unsigned iovcnt;
	unsigned flags;
	fm_bdev_end_io_fn end_io;
	void *ctx;
	struct iovec iov[];
};

struct membdev {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint8_t *mem;
	uint64_t size;
	/* behaviour */
	bool async;
	bool gate_reads, gate_writes;   /* hold such requests back */
	unsigned delay_us;              /* per request, in the worker */
	uint64_t fail_read_lo, fail_read_hi;   /* sectors [lo, hi) */
	uint64_t fail_write_lo, fail_write_hi;
	int fail_errno;
	/* counters */
	unsigned reads, writes, flushes, discards, zeroes;
	uint64_t read_bytes, write_bytes;
	unsigned inflight;              /* submitted, not completed */
	unsigned writes_at_flush;       /* writes completed at the last flush */
	struct membdev_io log[MEMBDEV_LOG];
	unsigned nlog;
	/* worker */
	pthread_t worker;
	struct membdev_req *head, **tail;
	bool stop;
};

static inline bool membdev_overlaps(uint64_t s, uint64_t n, uint64_t lo, uint64_t hi)
{
	return lo < hi && s < hi && s + n > lo;
}

/* Execute one request (lock held); returns its status. */
static inline int membdev_exec_locked(struct membdev *m, enum fm_bdev_op op, uint64_t sector,
				      const struct iovec *iov, unsigned iovcnt, unsigned flags)
{
	uint64_t bytes = 0, off = sector * 512;
	struct membdev_io *l;

	for (unsigned i = 0; i < iovcnt; i++)
		bytes += iov[i].iov_len;
	l = &m->log[m->nlog++ % MEMBDEV_LOG];
	*l = (struct membdev_io){ op, sector, bytes, iovcnt, flags };
	if (op == FM_BDEV_READ) {
		m->reads++;
		m->read_bytes += bytes;
		if (membdev_overlaps(sector, bytes / 512, m->fail_read_lo, m->fail_read_hi))
			return -m->fail_errno;
	} else {
		m->writes++;
		m->write_bytes += bytes;
		if (membdev_overlaps(sector, bytes / 512, m->fail_write_lo, m->fail_write_hi))
			return -m->fail_errno;
	}
	if (off + bytes > m->size)
		return -EIO;
	for (unsigned i = 0; i < iovcnt; i++) {
		if (op == FM_BDEV_READ)
			memcpy(iov[i].iov_base, m->mem + off, iov[i].iov_len);
		else
			memcpy(m->mem + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	return 0;
}

static inline bool membdev_gated_locked(struct membdev *m, enum fm_bdev_op op)
{
	return op == FM_BDEV_READ ? m->gate_reads : m->gate_writes;
}

static inline void *membdev_worker(void *arg)
{
	struct membdev *m = arg;

	pthread_mutex_lock(&m->lock);
	for (;;) {
		struct membdev_req *rq = m->head;
		int r;

		if (!rq) {
			if (m->stop)
				break;
			pthread_cond_wait(&m->cond, &m->lock);
			continue;
		}
		if (membdev_gated_locked(m, rq->op)) {
			pthread_cond_wait(&m->cond, &m->lock);
			continue;
		}
		m->head = rq->next;
		if (!m->head)
			m->tail = &m->head;
		if (m->delay_us) {
			pthread_mutex_unlock(&m->lock);
			usleep(m->delay_us);
			pthread_mutex_lock(&m->lock);
		}
		r = membdev_exec_locked(m, rq->op, rq->sector, rq->iov, rq->iovcnt, rq->flags);
		pthread_mutex_unlock(&m->lock);
		rq->end_io(rq->ctx, r);
		free(rq);
		pthread_mutex_lock(&m->lock);
		m->inflight--;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static inline int membdev_submit(void *dev, enum fm_bdev_op op, uint64_t sector,
				 const struct iovec *iov, unsigned iovcnt, unsigned flags,
				 fm_bdev_end_io_fn end_io, void *ctx)
{
	struct membdev *m = dev;
	int r;

	if (m->async) {
		struct membdev_req *rq = malloc(sizeof(*rq) + iovcnt * sizeof(*iov));

		if (!rq)
			return -ENOMEM;
		*rq = (struct membdev_req){ NULL, op, sector, iovcnt, flags, end_io, ctx };
		memcpy(rq->iov, iov, iovcnt * sizeof(*iov));
		pthread_mutex_lock(&m->lock);
		*m->tail = rq;
		m->tail = &rq->next;
		m->inflight++;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	pthread_mutex_lock(&m->lock);
	m->inflight++;
	while (membdev_gated_locked(m, op))
		pthread_cond_wait(&m->cond, &m->lock);
	r = membdev_exec_locked(m, op, sector, iov, iovcnt, flags);
	pthread_mutex_unlock(&m->lock);
	end_io(ctx, r);
	pthread_mutex_lock(&m->lock);
	m->inflight--;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static inline int membdev_flush(void *dev)
{
	struct membdev *m = dev;

	pthread_mutex_lock(&m->lock);
	m->flushes++;
	m->writes_at_flush = m->writes;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/* Discard (@tag 0xd15c) or write-zeroes (0x2e50) of [sector, + nr): logged
 * as a write with that tag as its flags. */
static inline int membdev_zero(struct membdev *m, uint64_t sector, uint64_t nr, unsigned tag)
{
	pthread_mutex_lock(&m->lock);
	if (tag == 0xd15c)
		m->discards++;
	else
		m->zeroes++;
	if ((sector + nr) * 512 <= m->size)
		memset(m->mem + sector * 512, 0, nr * 512);
	m->log[m->nlog++ % MEMBDEV_LOG] = (struct membdev_io){ FM_BDEV_WRITE, sector,
							       nr * 512, 0, tag };
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static inline int membdev_discard(void *dev, uint64_t sector, uint64_t nr)
{
	return membdev_zero(dev, sector, nr, 0xd15c);
}

static inline int membdev_write_zeroes(void *dev, uint64_t sector, uint64_t nr)
{
	return membdev_zero(dev, sector, nr, 0x2e50);
}

static inline uint64_t membdev_size(void *dev)
{
	return ((struct membdev *)dev)->size;
}

static const struct fm_bdev_ops membdev_ops = {
	.submit = membdev_submit,
	.flush = membdev_flush,
	.discard = membdev_discard,
	.write_zeroes = membdev_write_zeroes,
	.size = membdev_size,
};

/*
 * The pattern of @seed in @n bytes at @p (which no other thread can see yet).
 * Not instrumented by ThreadSanitizer: one checked store a byte of a new
 * device made each test of test_bufio spend seconds faulting in TSan's
 * shadow pages, and there is no access to race with before the worker
 * thread starts.
 */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize_thread))
#endif
static inline void membdev_fill(uint8_t *p, uint64_t n, uint64_t seed)
{
	for (uint64_t i = 0; i < n; i++)
		p[i] = seed ? (uint8_t)((i * 131 + seed * 7 + (i >> 9)) & 0xff) : 0;
}

/* A device of @size bytes filled with a pattern of @seed (0: zeroes). */
static inline struct membdev *membdev_create(uint64_t size, bool async, uint64_t seed)
{
	struct membdev *m = calloc(1, sizeof(*m));

	if (!m)
		abort();
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->mem = malloc(size ? size : 1);
	if (!m->mem)
		abort();
	m->size = size;
	m->fail_errno = EIO;
	membdev_fill(m->mem, size, seed);
	m->async = async;
	m->tail = &m->head;
	if (async && pthread_create(&m->worker, NULL, membdev_worker, m))
		abort();
	return m;
}

static inline struct fm_bdev membdev_bdev(struct membdev *m)
{
	return (struct fm_bdev){ &membdev_ops, m };
}

/* Wait until no request is in flight. */
static inline void membdev_drain(struct membdev *m)
{
	pthread_mutex_lock(&m->lock);
	while (m->inflight)
		pthread_cond_wait(&m->cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
}

static inline void membdev_destroy(struct membdev *m)
{
	if (!m)
		return;
	if (m->async) {
		pthread_mutex_lock(&m->lock);
		m->gate_reads = m->gate_writes = false;
		m->stop = true;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->worker, NULL);
	}
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m->mem);
	free(m);
}

static inline void membdev_set_gate(struct membdev *m, bool reads, bool writes)
{
	pthread_mutex_lock(&m->lock);
	m->gate_reads = reads;
	m->gate_writes = writes;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

/* Fail reads (writes) touching sectors [lo, hi); hi == lo: no failure. */
static inline void membdev_fail_reads(struct membdev *m, uint64_t lo, uint64_t hi)
{
	pthread_mutex_lock(&m->lock);
	m->fail_read_lo = lo;
	m->fail_read_hi = hi;
	pthread_mutex_unlock(&m->lock);
}

static inline void membdev_fail_writes(struct membdev *m, uint64_t lo, uint64_t hi)
{
	pthread_mutex_lock(&m->lock);
	m->fail_write_lo = lo;
	m->fail_write_hi = hi;
	pthread_mutex_unlock(&m->lock);
}

struct membdev_counts {
	unsigned reads, writes, flushes, discards, zeroes, inflight, nlog;
	uint64_t read_bytes, write_bytes;
};

static inline struct membdev_counts membdev_counts(struct membdev *m)
{
	struct membdev_counts k;

	pthread_mutex_lock(&m->lock);
	k = (struct membdev_counts){ m->reads, m->writes, m->flushes, m->discards,
				     m->zeroes, m->inflight, m->nlog, m->read_bytes, m->write_bytes };
	pthread_mutex_unlock(&m->lock);
	return k;
}

/* The @i-th request ever logged (must be among the last MEMBDEV_LOG). */
static inline struct membdev_io membdev_log(struct membdev *m, unsigned i)
{
	struct membdev_io io;

	pthread_mutex_lock(&m->lock);
	io = m->log[i % MEMBDEV_LOG];
	pthread_mutex_unlock(&m->lock);
	return io;
}

/* Copy device bytes out (under the lock). */
static inline void membdev_peek(struct membdev *m, uint64_t off, void *buf, size_t len)
{
	pthread_mutex_lock(&m->lock);
	memcpy(buf, m->mem + off, len);
	pthread_mutex_unlock(&m->lock);
}

static inline void membdev_poke(struct membdev *m, uint64_t off, const void *buf, size_t len)
{
	pthread_mutex_lock(&m->lock);
	memcpy(m->mem + off, buf, len);
	pthread_mutex_unlock(&m->lock);
}

#endif /* BUFIO_MEMBDEV_H */
