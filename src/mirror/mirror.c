/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mirror's data path: fan-out writes, balanced reads with fail-over,
 * ordering of overlapping writes, flush, discard.
 *
 * Invariants:
 *   - Every write, discard and write-zeroes request is on the active list
 *     (m->active_head..tail, in submission order) from mirror_submit() until
 *     its completion.  It is issued to the legs only when no request BEFORE
 *     it on the list overlaps it; so two overlapping writes reach every leg
 *     in submission order, and a later one never overtakes an earlier one
 *     that is still waiting.
 *   - `issued` and the list links change only under order_lock; the dmio
 *     submission itself happens after the lock is dropped.
 *   - A request's iovec array belongs to the request (copied at submission)
 *     and lives until its completion, as dmio needs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mirror_i.h"

G_DEFINE_QUARK(fm-mirror-error-quark, fm_mirror_error)

/* Free requests kept for reuse, so the hot path rarely mallocs. */
#define MIRROR_FREE_MAX 512

struct mirror *mirror_alloc(unsigned nr_legs)
{
	struct mirror *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->legs = calloc(nr_legs, sizeof(*m->legs));
	if (!m->legs) {
		free(m);
		return NULL;
	}
	m->nr_legs = nr_legs;
	m->wide.next = m->wide.prev = &m->wide;
	pthread_mutex_init(&m->order_lock, NULL);
	pthread_mutex_init(&m->free_lock, NULL);
	return m;
}

void mirror_free(struct mirror *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->nr_legs; i++) {
		dmio_dev_close(m->legs[i].dev);
		free(m->legs[i].path);
	}
	while (m->free_reqs) {
		struct mreq *r = m->free_reqs;

		m->free_reqs = r->next_free;
		free(r);
	}
	dmio_client_destroy(m->client);
	pthread_mutex_destroy(&m->order_lock);
	pthread_mutex_destroy(&m->free_lock);
	free(m->legs);
	free(m);
}

static struct mreq *mreq_alloc(struct mirror *m)
{
	struct mreq *r;

	pthread_mutex_lock(&m->free_lock);
	r = m->free_reqs;
	if (r) {
		m->free_reqs = r->next_free;
		m->nr_free--;
	}
	pthread_mutex_unlock(&m->free_lock);
	if (!r)
		r = malloc(sizeof(*r));
	return r;
}

static void mreq_free(struct mreq *r)
{
	struct mirror *m = r->m;

	if (r->iov != r->iov_inline)
		free(r->iov);
	pthread_mutex_lock(&m->free_lock);
	if (m->nr_free < MIRROR_FREE_MAX) {
		r->next_free = m->free_reqs;
		m->free_reqs = r;
		m->nr_free++;
		r = NULL;
	}
	pthread_mutex_unlock(&m->free_lock);
	free(r);
}

static bool leg_usable(const struct mirror_leg *leg)
{
	return leg->state == FM_LEG_IN_SYNC;
}

/*----------------------------------------------------------------*/
/* Reads */

static void read_done(unsigned long error_bits, void *context);

/* Choose the leg for a read of @r not yet tried; -1 when none is left. */
static int pick_read_leg(struct mirror *m, const struct mreq *r)
{
	int best = -1;
	unsigned best_pending = ~0u;
	unsigned start;

	switch (m->read_policy) {
	case MIRROR_READ_FIRST:
		for (unsigned i = 0; i < m->nr_legs; i++)
			if (leg_usable(&m->legs[i]) && !(r->tried & (1ull << i)))
				return (int)i;
		return -1;
	case MIRROR_READ_ROUND_ROBIN:
		start = atomic_fetch_add_explicit(&m->rr, 1, memory_order_relaxed);
		for (unsigned k = 0; k < m->nr_legs; k++) {
			unsigned i = (start + k) % m->nr_legs;

			if (leg_usable(&m->legs[i]) && !(r->tried & (1ull << i)))
				return (int)i;
		}
		return -1;
	case MIRROR_READ_BALANCE:
		break;
	}
	/* Sequential affinity: the leg whose last read ended here keeps the
	 * stream (its readahead and its head position are worth more than an
	 * even spread); otherwise the leg with the fewest reads in flight,
	 * ties broken by rotation so that idle legs share the load. */
	start = atomic_load_explicit(&m->rr, memory_order_relaxed);
	for (unsigned k = 0; k < m->nr_legs; k++) {
		unsigned i = (start + k) % m->nr_legs;
		struct mirror_leg *leg = &m->legs[i];
		unsigned pending;

		if (!leg_usable(leg) || (r->tried & (1ull << i)))
			continue;
		if (atomic_load_explicit(&leg->next_sector, memory_order_relaxed) == r->sector)
			return (int)i;
		pending = atomic_load_explicit(&leg->pending, memory_order_relaxed);
		if (pending < best_pending) {
			best = (int)i;
			best_pending = pending;
		}
	}
	if (best >= 0 && best_pending == 0)
		atomic_fetch_add_explicit(&m->rr, 1, memory_order_relaxed);
	return best;
}

static int issue_read(struct mreq *r)
{
	struct mirror *m = r->m;
	int li = pick_read_leg(m, r);
	struct mirror_leg *leg;
	struct dmio_region where;
	struct dmio_request dr = {
		.op = DMIO_OP_READ,
		.mem = { .type = DMIO_MEM_BVEC, .ptr.bvec = { r->iov, r->iovcnt } },
		.notify_fn = read_done,
		.notify_context = r,
		.client = m->client,
	};
	int ret;

	if (li < 0)
		return -EIO;
	leg = &m->legs[li];
	r->leg = (unsigned)li;
	r->tried |= 1ull << li;
	where = (struct dmio_region){ leg->dev, m->data_sector + r->sector, r->count };
	atomic_fetch_add_explicit(&leg->pending, 1, memory_order_relaxed);
	atomic_store_explicit(&leg->next_sector, r->sector + r->count, memory_order_relaxed);
	ret = dmio(&dr, 1, &where, NULL);
	if (ret < 0)
		atomic_fetch_sub_explicit(&leg->pending, 1, memory_order_relaxed);
	return ret;
}

static void read_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;
	struct mirror_leg *leg = &m->legs[r->leg];
	mirror_end_io_fn end_io = r->end_io;
	void *ctx = r->ctx;
	int err = 0;

	atomic_fetch_sub_explicit(&leg->pending, 1, memory_order_relaxed);
	MIRROR_STAT_ADD(leg->reads, 1);
	if (!error_bits) {
		MIRROR_STAT_ADD(leg->read_bytes, r->count << FM_SECTOR_SHIFT);
		/* Served by a leg other than the first one tried. */
		if (r->tried & (r->tried - 1))
			MIRROR_STAT_ADD(m->read_retries, 1);
	} else {
		MIRROR_STAT_ADD(leg->read_errors, 1);
		atomic_store_explicit(&leg->next_sector, UINT64_MAX, memory_order_relaxed);
		fm_warn("leg %s: read of sectors %llu+%llu failed; trying another leg",
			leg->path, (unsigned long long)r->sector, (unsigned long long)r->count);
		if (issue_read(r) == 0)
			return;
		fm_err("image: read of sectors %llu+%llu failed on every leg",
		       (unsigned long long)r->sector, (unsigned long long)r->count);
		MIRROR_STAT_ADD(m->errors, 1);
		err = -EIO;
	}
	mreq_free(r);
	end_io(ctx, err);
}

/*----------------------------------------------------------------*/
/* Writes, discards: ordered */

static void write_done(unsigned long error_bits, void *context);

static bool overlaps(const struct mreq *a, const struct mreq *b)
{
	return a->sector < b->sector + b->count && b->sector < a->sector + a->count;
}

/* Build the regions of every usable leg; returns how many, fills @map
 * with the leg index of each region. */
static unsigned write_regions(struct mirror *m, const struct mreq *r,
			      struct dmio_region *where, unsigned *map)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (!leg_usable(&m->legs[i]))
			continue;
		where[n] = (struct dmio_region){ m->legs[i].dev, m->data_sector + r->sector,
						 r->count };
		map[n++] = i;
	}
	return n;
}

static void issue_write(struct mreq *r)
{
	struct mirror *m = r->m;
	struct dmio_region where[DMIO_MAX_REGIONS];
	unsigned map[DMIO_MAX_REGIONS];
	unsigned n = write_regions(m, r, where, map);
	struct dmio_request dr = {
		.notify_fn = write_done,
		.notify_context = r,
		.client = m->client,
	};
	int ret;

	switch (r->op) {
	case MREQ_WRITE:
		dr.op = DMIO_OP_WRITE;
		dr.flags = (r->flags & MIRROR_IO_FUA) ? DMIO_REQ_FUA : 0;
		dr.mem = (struct dmio_memory){ .type = DMIO_MEM_BVEC,
					       .ptr.bvec = { r->iov, r->iovcnt } };
		break;
	case MREQ_DISCARD:
		dr.op = DMIO_OP_DISCARD;
		break;
	default:
		dr.op = DMIO_OP_WRITE_ZEROES;
		break;
	}
	r->nr_regions = n;
	for (unsigned k = 0; k < n; k++)
		r->region_leg[k] = (uint8_t)map[k];
	if (n == 0) {
		/* No leg left to write to (cannot happen while assembly
		 * requires every leg; kept for the degraded mode). */
		write_done(~0ul, r);
		return;
	}
	ret = dmio(&dr, n, where, NULL);
	if (ret < 0) {
		fm_err("image: cannot submit a write: %s", strerror(-ret));
		write_done(~0ul, r);
	}
}

static uint64_t chunk_of(uint64_t sector)
{
	return sector >> MIRROR_CHUNK_SHIFT;
}

static struct order_node **bucket_of(struct mirror *m, uint64_t chunk)
{
	return &m->buckets[(chunk * 0x9E3779B97F4A7C15ull) >> (64 - 10)];
}

/* Is there an active request submitted before @r that overlaps it?
 * Called with order_lock held. */
static bool blocked_locked(struct mirror *m, const struct mreq *r)
{
	if (r->nr_nodes == 0) {
		/* Wide: rare (big discards); look at everything. */
		for (struct mreq *a = m->active_head; a && a != r; a = a->next)
			if (a->seq < r->seq && overlaps(a, r))
				return true;
		return false;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		uint64_t chunk = chunk_of(r->sector) + k;

		for (struct order_node *n = *bucket_of(m, chunk); n; n = n->next)
			if (n->r->seq < r->seq && overlaps(n->r, r))
				return true;
	}
	for (struct order_node *n = m->wide.next; n != &m->wide; n = n->next)
		if (n->r->seq < r->seq && overlaps(n->r, r))
			return true;
	return false;
}

static void index_add_locked(struct mirror *m, struct mreq *r)
{
	uint64_t c0 = chunk_of(r->sector), c1 = chunk_of(r->sector + r->count - 1);

	r->nr_nodes = c1 - c0 + 1 <= MIRROR_ORDER_SPAN ? (unsigned)(c1 - c0 + 1) : 0;
	if (r->nr_nodes == 0) {
		struct order_node *n = &r->node[0];

		n->r = r;
		n->next = &m->wide;
		n->prev = m->wide.prev;
		m->wide.prev->next = n;
		m->wide.prev = n;
		return;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		struct order_node **head = bucket_of(m, c0 + k), *n = &r->node[k];

		n->r = r;
		n->prev = NULL;
		n->next = *head;
		if (*head)
			(*head)->prev = n;
		*head = n;
	}
}

static void index_remove_locked(struct mirror *m, struct mreq *r)
{
	if (r->nr_nodes == 0) {
		r->node[0].prev->next = r->node[0].next;
		r->node[0].next->prev = r->node[0].prev;
		return;
	}
	for (unsigned k = 0; k < r->nr_nodes; k++) {
		struct order_node *n = &r->node[k];

		if (n->prev)
			n->prev->next = n->next;
		else
			*bucket_of(m, chunk_of(r->sector) + k) = n->next;
		if (n->next)
			n->next->prev = n->prev;
	}
}

/*
 * Put @r on the active list and in the index; issue it now unless an
 * earlier active request overlaps it.  Called without order_lock.
 */
static void order_and_issue(struct mreq *r)
{
	struct mirror *m = r->m;
	bool blocked;

	pthread_mutex_lock(&m->order_lock);
	r->seq = ++m->order_seq;
	r->next = NULL;
	r->prev = m->active_tail;
	if (m->active_tail)
		m->active_tail->next = r;
	else
		m->active_head = r;
	m->active_tail = r;
	index_add_locked(m, r);
	blocked = blocked_locked(m, r);
	r->issued = !blocked;
	if (blocked)
		m->nr_waiting++;
	pthread_mutex_unlock(&m->order_lock);
	if (blocked)
		MIRROR_STAT_ADD(m->overlap_waits, 1);
	else
		issue_write(r);
}

/* If waiting request @w is no longer blocked, mark it issued and add it to
 * *@tail.  Called with order_lock held. */
static void try_release_locked(struct mirror *m, struct mreq *w, struct mreq ***tail)
{
	if (w->issued || blocked_locked(m, w))
		return;
	w->issued = true;
	m->nr_waiting--;
	w->next_issue = NULL;
	**tail = w;
	*tail = &w->next_issue;
}

/* Take @r off the active list and the index, and collect the waiting
 * requests that no earlier active request blocks any more.  Those @r was
 * blocking share a chunk with it (or are wide), so only they are looked at,
 * unless @r itself was wide. */
static struct mreq *order_complete(struct mreq *r)
{
	struct mirror *m = r->m;
	struct mreq *ready = NULL, **tail = &ready;

	pthread_mutex_lock(&m->order_lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		m->active_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		m->active_tail = r->prev;
	index_remove_locked(m, r);
	if (m->nr_waiting) {
		if (r->nr_nodes == 0) {
			for (struct mreq *w = m->active_head; w && m->nr_waiting; w = w->next)
				try_release_locked(m, w, &tail);
		} else {
			for (unsigned k = 0; k < r->nr_nodes && m->nr_waiting; k++) {
				uint64_t chunk = chunk_of(r->sector) + k;

				for (struct order_node *n = *bucket_of(m, chunk); n; n = n->next)
					if (overlaps(n->r, r))
						try_release_locked(m, n->r, &tail);
			}
			for (struct order_node *n = m->wide.next;
			     n != &m->wide && m->nr_waiting; n = n->next)
				if (overlaps(n->r, r))
					try_release_locked(m, n->r, &tail);
		}
	}
	pthread_mutex_unlock(&m->order_lock);
	return ready;
}

static void write_done(unsigned long error_bits, void *context)
{
	struct mreq *r = context;
	struct mirror *m = r->m;
	unsigned n = r->nr_regions;
	mirror_end_io_fn end_io = r->end_io;
	void *ctx = r->ctx;
	struct mreq *ready;
	int err = 0;

	for (unsigned k = 0; k < n; k++) {
		struct mirror_leg *leg = &m->legs[r->region_leg[k]];

		if (error_bits & (1ul << k)) {
			MIRROR_STAT_ADD(leg->write_errors, 1);
			fm_err("leg %s: %s of sectors %llu+%llu failed",
			       leg->path, r->op == MREQ_WRITE ? "write" :
			       r->op == MREQ_DISCARD ? "discard" : "write-zeroes",
			       (unsigned long long)r->sector, (unsigned long long)r->count);
			err = -EIO;
		} else if (r->op == MREQ_WRITE) {
			MIRROR_STAT_ADD(leg->writes, 1);
			MIRROR_STAT_ADD(leg->write_bytes, r->count << FM_SECTOR_SHIFT);
		}
	}
	if (n == 0)
		err = -EIO;
	if (err) {
		atomic_store(&m->write_error_seen, true);
		MIRROR_STAT_ADD(m->errors, 1);
	}
	ready = order_complete(r);
	mreq_free(r);
	while (ready) {
		struct mreq *next = ready->next_issue;

		issue_write(ready);
		ready = next;
	}
	end_io(ctx, err);
}

/*----------------------------------------------------------------*/
/* Entry points */

static int start_request(struct mirror *m, enum mreq_op op, uint64_t sector,
			 uint64_t count, const struct iovec *iov, unsigned iovcnt,
			 unsigned flags, mirror_end_io_fn end_io, void *ctx)
{
	uint64_t image_sectors = m->image_size >> FM_SECTOR_SHIFT;
	struct mreq *r;

	if (count > image_sectors || sector > image_sectors - count)
		return -ENOSPC;
	if (op != MREQ_READ && (m->readonly || !atomic_load(&m->in_use)))
		return -EROFS;
	r = mreq_alloc(m);
	if (!r)
		return -ENOMEM;
	r->m = m;
	r->op = op;
	r->flags = flags;
	r->sector = sector;
	r->count = count;
	r->end_io = end_io;
	r->ctx = ctx;
	r->tried = 0;
	r->iovcnt = iovcnt;
	r->iov = r->iov_inline;
	if (iovcnt > MIRROR_INLINE_IOVS) {
		r->iov = malloc(iovcnt * sizeof(*iov));
		if (!r->iov) {
			r->iov = r->iov_inline;
			mreq_free(r);
			return -ENOMEM;
		}
	}
	if (iovcnt)
		memcpy(r->iov, iov, iovcnt * sizeof(*iov));

	if (op == MREQ_READ) {
		int ret;

		MIRROR_STAT_ADD(m->reads, 1);
		MIRROR_STAT_ADD(m->read_bytes, count << FM_SECTOR_SHIFT);
		ret = issue_read(r);
		if (ret < 0)
			mreq_free(r);
		return ret;
	}
	if (op == MREQ_WRITE) {
		MIRROR_STAT_ADD(m->writes, 1);
		MIRROR_STAT_ADD(m->write_bytes, count << FM_SECTOR_SHIFT);
	} else {
		MIRROR_STAT_ADD(m->discards, 1);
	}
	order_and_issue(r);
	return 0;
}

int mirror_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
		  const struct iovec *iov, unsigned iovcnt, unsigned flags,
		  mirror_end_io_fn end_io, void *ctx)
{
	uint64_t bytes = 0;

	if ((op != MIRROR_OP_READ && op != MIRROR_OP_WRITE) || !end_io ||
	    iovcnt == 0 || iovcnt > IOV_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < iovcnt; i++)
		bytes += iov[i].iov_len;
	if (bytes == 0 || !FM_IS_ALIGNED(bytes, (uint64_t)FM_SECTOR_SIZE))
		return -EINVAL;
	return start_request(m, (enum mreq_op)op, sector, bytes >> FM_SECTOR_SHIFT,
			     iov, iovcnt, flags, end_io, ctx);
}

struct sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void sync_done(void *ctx, int err)
{
	struct sync_wait *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int sync_wait_for(struct sync_wait *w)
{
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return w->err;
}

static int zero_range(struct mirror *m, enum mreq_op op, uint64_t sector, uint64_t count)
{
	struct sync_wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
	int r;

	if (count == 0)
		return 0;
	r = start_request(m, op, sector, count, NULL, 0, 0, sync_done, &w);
	if (r < 0)
		return r;
	return sync_wait_for(&w);
}

int mirror_discard(struct mirror *m, uint64_t sector, uint64_t count)
{
	return zero_range(m, MREQ_DISCARD, sector, count);
}

int mirror_write_zeroes(struct mirror *m, uint64_t sector, uint64_t count)
{
	return zero_range(m, MREQ_ZEROES, sector, count);
}

int mirror_flush(struct mirror *m)
{
	struct dmio_region where[DMIO_MAX_REGIONS];
	unsigned map[DMIO_MAX_REGIONS], n = 0;
	struct dmio_request dr = { .op = DMIO_OP_FLUSH, .client = m->client };
	unsigned long bits = 0;
	int r;

	MIRROR_STAT_ADD(m->flushes, 1);
	for (unsigned i = 0; i < m->nr_legs; i++) {
		if (!leg_usable(&m->legs[i]))
			continue;
		where[n] = (struct dmio_region){ m->legs[i].dev, 0, 0 };
		map[n++] = i;
	}
	if (n == 0)
		return -EIO;
	r = dmio(&dr, n, where, &bits);
	for (unsigned k = 0; k < n; k++) {
		if (bits & (1ul << k)) {
			MIRROR_STAT_ADD(m->legs[map[k]].write_errors, 1);
			fm_err("leg %s: flush failed", m->legs[map[k]].path);
			atomic_store(&m->write_error_seen, true);
		}
	}
	return r < 0 ? -EIO : 0;
}

/*----------------------------------------------------------------*/
/* bufio glue */

static int bdev_submit(void *dev, enum bufio_io_op op, uint64_t sector,
		       const struct iovec *iov, unsigned iovcnt, unsigned flags,
		       bufio_end_io_fn end_io, void *ctx)
{
	return mirror_submit(dev, op == BUFIO_IO_READ ? MIRROR_OP_READ : MIRROR_OP_WRITE,
			     sector, iov, iovcnt,
			     (flags & BUFIO_IO_FUA) ? MIRROR_IO_FUA : 0, end_io, ctx);
}

static int bdev_flush(void *dev)
{
	return mirror_flush(dev);
}

static int bdev_discard(void *dev, uint64_t sector, uint64_t nr_sectors)
{
	return mirror_discard(dev, sector, nr_sectors);
}

static uint64_t bdev_size(void *dev)
{
	return mirror_size(dev);
}

static const struct bufio_bdev_ops mirror_bdev_ops = {
	.submit = bdev_submit,
	.flush = bdev_flush,
	.discard = bdev_discard,
	.size = bdev_size,
};

struct bufio_bdev mirror_bufio_bdev(struct mirror *m)
{
	return (struct bufio_bdev){ .ops = &mirror_bdev_ops, .dev = m };
}

/*----------------------------------------------------------------*/
/* Information */

uint64_t mirror_size(const struct mirror *m) { return m->image_size; }
unsigned mirror_nr_legs(const struct mirror *m) { return m->nr_legs; }
bool mirror_is_readonly(const struct mirror *m) { return m->readonly; }
enum mirror_read_policy mirror_get_read_policy(const struct mirror *m) { return m->read_policy; }

void mirror_get_leg_stats(const struct mirror *m, unsigned i, struct mirror_leg_stats *s)
{
	const struct mirror_leg *leg = &m->legs[i];

	g_strlcpy(s->path, leg->path ? leg->path : "", sizeof(s->path));
	s->state = leg->state;
	s->direct = dmio_dev_is_direct(leg->dev);
	s->reads = atomic_load(&leg->reads);
	s->writes = atomic_load(&leg->writes);
	s->read_bytes = atomic_load(&leg->read_bytes);
	s->write_bytes = atomic_load(&leg->write_bytes);
	s->read_errors = atomic_load(&leg->read_errors);
	s->write_errors = atomic_load(&leg->write_errors);
	s->pending = atomic_load(&leg->pending);
}

void mirror_get_stats(const struct mirror *m, struct mirror_stats *s)
{
	s->reads = atomic_load(&m->reads);
	s->writes = atomic_load(&m->writes);
	s->flushes = atomic_load(&m->flushes);
	s->discards = atomic_load(&m->discards);
	s->read_bytes = atomic_load(&m->read_bytes);
	s->write_bytes = atomic_load(&m->write_bytes);
	s->read_retries = atomic_load(&m->read_retries);
	s->overlap_waits = atomic_load(&m->overlap_waits);
	s->errors = atomic_load(&m->errors);
}

static const char *const policy_names[] = {
	[MIRROR_READ_BALANCE] = "balance",
	[MIRROR_READ_ROUND_ROBIN] = "round-robin",
	[MIRROR_READ_FIRST] = "first",
};

int mirror_read_policy_parse(const char *s, enum mirror_read_policy *ret)
{
	for (unsigned i = 0; i < FM_ARRAY_SIZE(policy_names); i++) {
		if (s && !strcmp(s, policy_names[i])) {
			*ret = (enum mirror_read_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *mirror_read_policy_name(enum mirror_read_policy p)
{
	return (unsigned)p < FM_ARRAY_SIZE(policy_names) ? policy_names[p] : "?";
}
