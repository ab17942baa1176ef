/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Requests: validation, cutting regions into pieces, bounce buffers,
 * read-modify-write, fallocate fallbacks and completion.
 *
 * Invariants:
 *   - io->pending is set to the number of pieces BEFORE any of them is
 *     submitted, so the last piece to complete, always on a reaper thread,
 *     is the one that finishes the request; the submitter never touches the
 *     io after handing its pieces over.  A stage that adds pieces (PREFLUSH
 *     phase, write-zeroes fallback) adds to pending while it still holds a
 *     count of its own.
 *   - A piece is in exactly one place: the builder's local list, the SQ/
 *     kernel, or the client's free list.
 *   - Fast path (DMIO_STAGE_DIRECT): the iovecs point into the caller's
 *     memory.  Bounced pieces own their pages from the client's pool and
 *     cover a device range aligned to the device's O_DIRECT alignment; the
 *     caller's bytes are [user_off, user_off + user_len) inside it.
 */
#include <errno.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmio_i.h"

static const uint8_t zero_page[FM_PAGE_SIZE] __attribute__((aligned(FM_PAGE_SIZE)));
static const struct dmio_memory zero_mem = { .type = DMIO_MEM_ZERO_ };

/*----------------------------------------------------------------*/
/* Walking the three memory types (and the internal zero memory) */

struct mem_cursor {
	const struct dmio_memory *mem;
	struct dmio_page_list *pl;      /* PAGE_LIST: current page */
	size_t in_page;                 /* PAGE_LIST: offset in it */
	unsigned idx;                   /* BVEC: current iovec */
	size_t in_iov;                  /* BVEC: offset in it */
	uint64_t pos;                   /* VM: offset from the start */
};

/* Next contiguous segment of at most @max bytes; returns 0 at the end. */
static size_t cursor_next(struct mem_cursor *c, uint64_t max, uint8_t **base)
{
	const struct dmio_memory *m = c->mem;
	size_t n;

	switch ((int)m->type) {
	case DMIO_MEM_PAGE_LIST:
		if (c->pl && c->in_page >= FM_PAGE_SIZE) {
			c->pl = c->pl->next;
			c->in_page = 0;
		}
		if (!c->pl)
			return 0;
		n = FM_PAGE_SIZE - c->in_page;
		if (n > max)
			n = (size_t)max;
		*base = (uint8_t *)c->pl->page + c->in_page;
		c->in_page += n;
		return n;
	case DMIO_MEM_BVEC:
		while (c->idx < m->ptr.bvec.iovcnt &&
		       c->in_iov >= m->ptr.bvec.iov[c->idx].iov_len) {
			c->idx++;
			c->in_iov = 0;
		}
		if (c->idx >= m->ptr.bvec.iovcnt)
			return 0;
		n = m->ptr.bvec.iov[c->idx].iov_len - c->in_iov;
		if (n > max)
			n = (size_t)max;
		*base = (uint8_t *)m->ptr.bvec.iov[c->idx].iov_base + c->in_iov;
		c->in_iov += n;
		return n;
	case DMIO_MEM_VM:
		*base = (uint8_t *)m->ptr.vma + c->pos;
		c->pos += max;
		return (size_t)max;
	default: /* zeroes */
		n = max > FM_PAGE_SIZE ? FM_PAGE_SIZE : (size_t)max;
		*base = (uint8_t *)zero_page;
		return n;
	}
}

/* At most how many segments cursor_next() cuts the next @len bytes of
 * @c into (capped at DMIO_PIECE_IOVS): the room a piece needs for them. */
static unsigned cursor_segments(const struct mem_cursor *c, uint64_t len)
{
	const struct dmio_memory *m = c->mem;
	uint64_t n;

	switch ((int)m->type) {
	case DMIO_MEM_PAGE_LIST:
		n = (c->in_page % FM_PAGE_SIZE + len + FM_PAGE_SIZE - 1) / FM_PAGE_SIZE;
		break;
	case DMIO_MEM_BVEC: {
		uint64_t have = 0;

		n = 0;
		for (unsigned i = c->idx; i < m->ptr.bvec.iovcnt && have < len &&
					  n < DMIO_PIECE_IOVS; i++) {
			uint64_t l = m->ptr.bvec.iov[i].iov_len;

			if (i == c->idx)
				l = l > c->in_iov ? l - c->in_iov : 0;
			have += l;
			n += l != 0;
		}
		break;
	}
	case DMIO_MEM_VM:
		n = 1;
		break;
	default: /* zeroes */
		n = (len + FM_PAGE_SIZE - 1) / FM_PAGE_SIZE;
		break;
	}
	return n < DMIO_PIECE_IOVS ? (unsigned)n : DMIO_PIECE_IOVS;
}

static void cursor_init(struct mem_cursor *c, const struct dmio_memory *m, uint64_t skip)
{
	memset(c, 0, sizeof(*c));
	c->mem = m;
	if (m->type == DMIO_MEM_PAGE_LIST) {
		c->pl = m->ptr.pl;
		c->in_page = m->offset;
	}
	while (skip) {
		uint8_t *b;
		size_t n = cursor_next(c, skip, &b);

		if (!n)
			break;
		skip -= n;
	}
}

/* Bytes available in @m (UINT64_MAX when unbounded). */
static uint64_t mem_length(const struct dmio_memory *m)
{
	uint64_t total = 0;

	switch ((int)m->type) {
	case DMIO_MEM_PAGE_LIST:
		for (struct dmio_page_list *pl = m->ptr.pl; pl; pl = pl->next)
			total += FM_PAGE_SIZE;
		return total > m->offset ? total - m->offset : 0;
	case DMIO_MEM_BVEC:
		for (unsigned i = 0; i < m->ptr.bvec.iovcnt; i++)
			total += m->ptr.bvec.iov[i].iov_len;
		return total;
	default:
		return UINT64_MAX;
	}
}

/* Can @len bytes of @m go to an O_DIRECT device without a copy? */
static bool mem_direct_ok(const struct dmio_memory *m, uint64_t len,
			  unsigned mem_align, unsigned off_align)
{
	struct mem_cursor c;

	if (m->type == DMIO_MEM_VM)
		return FM_IS_ALIGNED((uintptr_t)m->ptr.vma, (uintptr_t)mem_align) &&
		       FM_IS_ALIGNED(len, (uint64_t)off_align);
	cursor_init(&c, m, 0);
	while (len) {
		uint8_t *b;
		size_t n = cursor_next(&c, len, &b);

		if (!n || !FM_IS_ALIGNED((uintptr_t)b, (uintptr_t)mem_align) ||
		    !FM_IS_ALIGNED((uint64_t)n, (uint64_t)off_align))
			return false;
		len -= n;
	}
	return true;
}

/* Copy between the caller's memory at @mem_off and a piece's bounce pages
 * at byte @boff, for @len bytes. */
static void bounce_copy(struct dmio_piece *p, bool to_bounce)
{
	uint64_t boff = p->user_off - p->aligned_off, len = p->user_len;
	void **bounce = dmio_piece_bounce(p);
	struct mem_cursor c;

	cursor_init(&c, p->mem, p->mem_off);
	while (len) {
		uint8_t *u, *bp = (uint8_t *)bounce[boff / FM_PAGE_SIZE] + boff % FM_PAGE_SIZE;
		uint64_t room = FM_PAGE_SIZE - boff % FM_PAGE_SIZE;
		size_t n = cursor_next(&c, len < room ? len : room, &u);

		if (!n)
			break; /* validated at submission: cannot happen */
		if (!to_bounce)
			memcpy(u, bp, n);
		else if (p->mem->type == DMIO_MEM_ZERO_)
			memset(bp, 0, n);
		else
			memcpy(bp, u, n);
		boff += n;
		len -= n;
	}
}

static void bounce_iov_setup(struct dmio_piece *p)
{
	uint64_t left = p->aligned_len;
	void **bounce = dmio_piece_bounce(p);

	for (unsigned i = 0; i < p->nr_bounce; i++) {
		p->iov[i].iov_base = bounce[i];
		p->iov[i].iov_len = left < FM_PAGE_SIZE ? left : FM_PAGE_SIZE;
		left -= p->iov[i].iov_len;
	}
	p->iov_first = 0;
	p->iovcnt = p->nr_bounce;
	p->off = p->aligned_off;
	p->len = p->aligned_len;
}

/*----------------------------------------------------------------*/
/* Building pieces */

struct piece_list {
	struct dmio_piece *head;
	unsigned n;
};

/* A piece with room for @iovs iovecs (bounce pages), added to @list. */
static struct dmio_piece *piece_new(struct dmio_io *io, struct dmio_dev *dev,
				    unsigned region, enum dmio_piece_kind kind,
				    unsigned iovs, struct piece_list *list)
{
	struct dmio_piece *p = dmio_piece_alloc(io->client, iovs);

	p->io = io;
	p->dev = dev;
	p->mem = &io->mem;
	p->kind = (uint8_t)kind;
	p->stage = DMIO_STAGE_DIRECT;
	p->region = (uint8_t)region;
	p->falloc_mode = 0;
	p->zeroes = false;
	p->rmw = false;
	p->fault = DMIO_PF_UNDECIDED;
	p->cancels = 0;
	p->delay_ms = 0;
	p->fanned = false;
	p->rw_flags = 0;
	p->nr_bounce = 0;
	p->iov_first = 0;
	p->iovcnt = 0;
	p->off = p->len = 0;
	p->next = list->head;
	list->head = p;
	list->n++;
	return p;
}

static void set_region_error(struct dmio_io *io, unsigned region)
{
	unsigned long bit = 1UL << region;

	if (!(atomic_fetch_or(&io->error_bits, bit) & bit))
		DMIO_STAT_ADD(region_errors, 1);
}

/*
 * Cut [off, off + len) of @dev, with memory @mem from its start, into read
 * or write pieces.  @direct_ok: whether @mem is aligned for this device
 * (computed by the caller, who can reuse it across regions).
 */
static void build_rw(struct dmio_io *io, unsigned region, struct dmio_dev *dev,
		     uint64_t off, uint64_t len, enum dmio_piece_kind kind,
		     const struct dmio_memory *mem, bool direct_ok,
		     struct piece_list *list)
{
	uint64_t max_io = dmio_max_io_bytes();
	int rw_flags = (kind == DMIO_PIECE_WRITE && (io->flags & DMIO_REQ_FUA)) ? RWF_DSYNC : 0;

	if (!dev->direct || (direct_ok && FM_IS_ALIGNED(off, (uint64_t)dev->off_align) &&
			     FM_IS_ALIGNED(len, (uint64_t)dev->off_align))) {
		struct mem_cursor c;

		cursor_init(&c, mem, 0);
		while (len) {
			unsigned iovs = cursor_segments(&c, len < max_io ? len : max_io);
			struct dmio_piece *p = piece_new(io, dev, region, kind, iovs, list);
			uint64_t plen = 0;

			p->mem = mem;
			p->off = off;
			p->rw_flags = rw_flags;
			while (p->iovcnt < p->cap && plen < max_io && plen < len) {
				uint64_t want = len - plen < max_io - plen ? len - plen : max_io - plen;
				uint8_t *b = NULL;
				size_t n = cursor_next(&c, want, &b);

				p->iov[p->iovcnt].iov_base = b;
				p->iov[p->iovcnt].iov_len = n;
				p->iovcnt++;
				plen += n;
			}
			p->len = plen;
			off += plen;
			len -= plen;
		}
		return;
	}

	/* Bounced: pieces over aligned ranges of at most DMIO_BOUNCE_MAX. */
	uint64_t oa = dev->off_align, end = off + len;
	uint64_t a = FM_ALIGN_DOWN(off, oa), aend_all = FM_ALIGN_UP(end, oa);
	uint64_t bmax = max_io < DMIO_BOUNCE_MAX ? max_io : DMIO_BOUNCE_MAX;
	uint64_t mem_off = 0;

	while (off < end) {
		uint64_t a_end = a + bmax < aend_all ? a + bmax : aend_all;
		uint64_t u_end = end < a_end ? end : a_end;
		unsigned nr_bounce = (unsigned)((a_end - a + FM_PAGE_SIZE - 1) / FM_PAGE_SIZE);
		struct dmio_piece *p = piece_new(io, dev, region, kind, nr_bounce, list);

		p->mem = mem;
		p->rw_flags = rw_flags;
		p->user_off = off;
		p->user_len = u_end - off;
		p->mem_off = mem_off;
		p->aligned_off = a;
		p->aligned_len = a_end - a;
		p->nr_bounce = nr_bounce;
		dmio_pages_alloc(io->client, dmio_piece_bounce(p), p->nr_bounce);
		bounce_iov_setup(p);
		DMIO_STAT_ADD(bounced, 1);
		if (kind == DMIO_PIECE_READ) {
			p->stage = DMIO_STAGE_BOUNCE_READ;
		} else if (off != a || u_end != a_end) {
			/* Partial logical blocks: read them first. */
			p->kind = DMIO_PIECE_READ;
			p->stage = DMIO_STAGE_RMW_READ;
		} else {
			bounce_copy(p, true);
			p->stage = DMIO_STAGE_BOUNCE_WRITE;
		}
		mem_off += p->user_len;
		off = u_end;
		a = a_end;
	}
}

static void build_zero_writes(struct dmio_io *io, unsigned region, struct dmio_dev *dev,
			      uint64_t off, uint64_t len, struct piece_list *list)
{
	bool ok = !dev->direct || (FM_IS_ALIGNED(off, (uint64_t)dev->off_align) &&
				   FM_IS_ALIGNED(len, (uint64_t)dev->off_align));

	build_rw(io, region, dev, off, len, DMIO_PIECE_WRITE, &zero_mem, ok, list);
}

/* Does a punched hole read back as zeroes?  On a file, yes; a block
 * device's or an NBD server's discard (trim) promises nothing. */
static bool hole_reads_zeroes(const struct dmio_dev *dev)
{
	return !dev->blockdev && !dev->nbd;
}

static void build_falloc(struct dmio_io *io, unsigned region, struct dmio_dev *dev,
			 uint64_t off, uint64_t len, bool zeroes, struct piece_list *list)
{
	struct dmio_piece *p;
	int mode;

	if (!len)
		return;
	if (!zeroes) {
		if (atomic_load_explicit(&dev->no_punch_hole, memory_order_relaxed)) {
			set_region_error(io, region);
			return;
		}
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	} else if (!atomic_load_explicit(&dev->no_zero_range, memory_order_relaxed)) {
		mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	} else if (hole_reads_zeroes(dev) &&
		   !atomic_load_explicit(&dev->no_punch_hole, memory_order_relaxed)) {
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	} else {
		build_zero_writes(io, region, dev, off, len, list);
		return;
	}
	p = piece_new(io, dev, region, DMIO_PIECE_FALLOC, 0, list);
	p->falloc_mode = mode;
	p->zeroes = zeroes;
	p->off = off;
	p->len = len;
}

/*
 * Discard and write-zeroes.  A block device only takes whole logical
 * blocks; the partial blocks at either end are written with zeroes, so the
 * whole range reads back as zeroes either way.
 */
static void build_zero_region(struct dmio_io *io, unsigned region, struct dmio_dev *dev,
			      uint64_t off, uint64_t len, bool zeroes, struct piece_list *list)
{
	uint64_t end = off + len, lbs = dev->lbs, a, b;

	if (!dev->blockdev) {
		build_falloc(io, region, dev, off, len, zeroes, list);
		return;
	}
	a = FM_ALIGN_UP(off, lbs);
	b = FM_ALIGN_DOWN(end, lbs);
	if (a >= b) {
		build_zero_writes(io, region, dev, off, len, list);
		return;
	}
	if (off < a)
		build_zero_writes(io, region, dev, off, a - off, list);
	build_falloc(io, region, dev, a, b - a, zeroes, list);
	if (b < end)
		build_zero_writes(io, region, dev, b, end - b, list);
}

static bool region_in_bounds(const struct dmio_region *reg)
{
	uint64_t sectors = dmio_dev_sectors(reg->dev);

	return reg->count <= sectors && reg->sector <= sectors - reg->count;
}

/* Build the pieces of @op for every region of @io. */
static void build_op(struct dmio_io *io, enum dmio_op op, struct piece_list *list)
{
	/* Alignment of the memory, remembered across regions of one device
	 * geometry (a mirror's legs usually share it). */
	unsigned memo_mem = 0, memo_off = 0;
	uint64_t memo_len = 0;
	bool memo_ok = false;

	for (unsigned r = 0; r < io->num_regions; r++) {
		const struct dmio_region *reg = &io->regions[r];
		uint64_t off = reg->sector << FM_SECTOR_SHIFT;
		uint64_t len = reg->count << FM_SECTOR_SHIFT;
		bool ok = true;

		if (op == DMIO_OP_FLUSH) {
			piece_new(io, reg->dev, r, DMIO_PIECE_FSYNC, 0, list);
			continue;
		}
		if (!region_in_bounds(reg)) {
			set_region_error(io, r);
			continue;
		}
		if (!len)
			continue;
		switch (op) {
		case DMIO_OP_READ:
		case DMIO_OP_WRITE:
			if (reg->dev->direct) {
				if (!(memo_len == len && memo_mem == reg->dev->mem_align &&
				      memo_off == reg->dev->off_align)) {
					memo_len = len;
					memo_mem = reg->dev->mem_align;
					memo_off = reg->dev->off_align;
					memo_ok = mem_direct_ok(&io->mem, len, memo_mem, memo_off);
				}
				ok = memo_ok;
			}
			build_rw(io, r, reg->dev, off, len,
				 op == DMIO_OP_READ ? DMIO_PIECE_READ : DMIO_PIECE_WRITE,
				 &io->mem, ok, list);
			break;
		case DMIO_OP_DISCARD:
		case DMIO_OP_WRITE_ZEROES:
			build_zero_region(io, r, reg->dev, off, len,
					  op == DMIO_OP_WRITE_ZEROES, list);
			break;
		case DMIO_OP_FLUSH:
			break;
		}
	}
}

/*----------------------------------------------------------------*/
/* Read-modify-write serialisation */

static bool rmw_overlaps(const struct dmio_piece *a, const struct dmio_piece *b)
{
	return a->aligned_off < b->aligned_off + b->aligned_len &&
	       b->aligned_off < a->aligned_off + a->aligned_len;
}

/* May @p (an RMW piece) start now?  Called with dev->rmw_lock held; @p
 * must not overlap an active piece nor one that waits before it. */
static bool rmw_may_start_locked(struct dmio_dev *dev, const struct dmio_piece *p)
{
	for (struct dmio_piece *a = dev->rmw_active; a; a = a->rmw_next)
		if (rmw_overlaps(a, p))
			return false;
	for (struct dmio_piece *w = dev->rmw_wait_head; w && w != p; w = w->rmw_next)
		if (rmw_overlaps(w, p))
			return false;
	return true;
}

/* Admit @p or queue it; returns true when it may be submitted now. */
static bool rmw_admit(struct dmio_piece *p)
{
	struct dmio_dev *dev = p->dev;
	bool go;

	pthread_mutex_lock(&dev->rmw_lock);
	go = rmw_may_start_locked(dev, p);
	p->rmw = true;
	if (go) {
		p->rmw_next = dev->rmw_active;
		dev->rmw_active = p;
	} else {
		p->rmw_next = NULL;
		if (dev->rmw_wait_tail)
			dev->rmw_wait_tail->rmw_next = p;
		else
			dev->rmw_wait_head = p;
		dev->rmw_wait_tail = p;
	}
	pthread_mutex_unlock(&dev->rmw_lock);
	return go;
}

/* @p's read-modify-write is over: let the waiters it blocked go. */
static void rmw_release(struct dmio_piece *p)
{
	struct dmio_dev *dev = p->dev;
	struct dmio_piece *ready = NULL, **pp;

	pthread_mutex_lock(&dev->rmw_lock);
	for (pp = &dev->rmw_active; *pp; pp = &(*pp)->rmw_next) {
		if (*pp == p) {
			*pp = p->rmw_next;
			break;
		}
	}
	p->rmw = false;
	for (pp = &dev->rmw_wait_head; *pp;) {
		struct dmio_piece *w = *pp;

		if (!rmw_may_start_locked(dev, w)) {
			pp = &w->rmw_next;
			continue;
		}
		*pp = w->rmw_next;      /* off the wait list... */
		if (dev->rmw_wait_tail == w) {
			dev->rmw_wait_tail = NULL;
			for (struct dmio_piece *t = dev->rmw_wait_head; t; t = t->rmw_next)
				dev->rmw_wait_tail = t;
		}
		w->rmw_next = dev->rmw_active; /* ...onto the active one */
		dev->rmw_active = w;
		w->next = ready;
		ready = w;
	}
	pthread_mutex_unlock(&dev->rmw_lock);
	if (ready)
		dmio_submit_pieces(ready);
}

/* Hand @list to the engine, with io->pending already counting it.  When a
 * request has no piece at all (every region failed validation), a NOP piece
 * still goes through the ring, so that the callback runs on an engine
 * thread as promised.  Read-modify-write pieces that overlap one in flight
 * are held back until it completes. */
static void start_pieces(struct dmio_io *io, struct piece_list *list)
{
	struct dmio_piece *go = NULL, *p, *next;

	if (!list->n)
		piece_new(io, io->regions[0].dev, 0, DMIO_PIECE_NOP, 0, list);
	atomic_store_explicit(&io->pending, list->n, memory_order_relaxed);
	for (p = list->head; p; p = next) {
		next = p->next;
		if (p->stage == DMIO_STAGE_RMW_READ && !rmw_admit(p))
			continue;
		p->next = go;
		go = p;
	}
	dmio_submit_pieces(go);
}

/*----------------------------------------------------------------*/
/* Completion */

/* Free the copies of the caller's regions and iovecs that did not fit in
 * the io (dmio()). */
static void io_free_copies(struct dmio_io *io)
{
	free(io->iov_alloc);
	if (io->regions != io->regions_inline)
		free(io->regions);
}

static void io_finish(struct dmio_io *io)
{
	struct dmio_client *client = io->client;
	unsigned long bits;
	dmio_notify_fn fn;
	void *ctx;

	if (io->preflush_phase) {
		struct piece_list list = { 0 };

		io->preflush_phase = false;
		build_op(io, DMIO_OP_WRITE, &list);
		start_pieces(io, &list);
		return;
	}
	bits = atomic_load(&io->error_bits);
	fn = io->fn;
	ctx = io->context;
	io_free_copies(io);
	/* Give the io back before the callback, which may want a new one. */
	dmio_io_free(client, io);
	fn(bits, ctx);
	dmio_request_end();
}

static void piece_end(struct dmio_piece *p, int err)
{
	struct dmio_io *io = p->io;

	if (err < 0) {
		fm_debug("dmio: %s: piece at %llu+%llu failed: %s", p->dev->name,
			 (unsigned long long)p->off, (unsigned long long)p->len,
			 strerror(-err));
		set_region_error(io, p->region);
	}
	if (p->rmw)
		rmw_release(p);
	if (p->nr_bounce)
		dmio_pages_free(io->client, dmio_piece_bounce(p), p->nr_bounce);
	dmio_piece_free(io->client, p);
	if (atomic_fetch_sub_explicit(&io->pending, 1, memory_order_acq_rel) == 1)
		io_finish(io);
}

static void resubmit(struct dmio_piece *p)
{
	p->next = NULL;
	dmio_submit_pieces(p);
}

/* Drop @done bytes from the front of a read/write piece. */
static void advance(struct dmio_piece *p, uint64_t done)
{
	p->off += done;
	p->len -= done;
	while (done) {
		struct iovec *v = &p->iov[p->iov_first];

		if (done >= v->iov_len) {
			done -= v->iov_len;
			p->iov_first++;
			p->iovcnt--;
		} else {
			v->iov_base = (uint8_t *)v->iov_base + done;
			v->iov_len -= done;
			done = 0;
		}
	}
}

/* The kernel filled these bytes behind valgrind's back. */
static void mark_read_defined(struct dmio_piece *p, uint64_t done)
{
	for (unsigned i = p->iov_first; done && i < p->iov_first + p->iovcnt; i++) {
		uint64_t n = done < p->iov[i].iov_len ? done : p->iov[i].iov_len;

		VALGRIND_MAKE_MEM_DEFINED(p->iov[i].iov_base, n);
		done -= n;
	}
}

/*
 * DMIO_FAULT_CORRUPT_READS: invert the first byte of every 512-byte device
 * sector among the @done bytes just read into the piece's iovecs (the
 * caller's memory, or bounce pages that are copied out afterwards).
 */
static void fault_corrupt(struct dmio_piece *p, uint64_t done)
{
	uint64_t off = p->off;

	for (unsigned i = p->iov_first; done && i < p->iov_first + p->iovcnt; i++) {
		uint64_t n = done < p->iov[i].iov_len ? done : p->iov[i].iov_len;
		uint8_t *b = p->iov[i].iov_base;

		for (uint64_t k = FM_ALIGN_UP(off, FM_SECTOR_SIZE) - off; k < n; k += FM_SECTOR_SIZE)
			b[k] ^= 0xff;
		off += n;
		done -= n;
	}
}

/* A 4 KiB aligned buffer for the synchronous I/O of the silent-corruption
 * faults (fault injection only: an allocation per injected fault). */
static uint8_t *fault_block(void)
{
	void *blk = NULL;

	return posix_memalign(&blk, 4096, 4096) ? NULL : blk;
}

/*
 * DMIO_PF_FLIP: the write of [p->off, p->off + p->len) is on the device;
 * flip one bit of the first 4 KiB block wholly inside it (none: nothing).
 * The mirror holds the write active until this returns, so no later write
 * of the block can race with it.
 */
static void fault_flip(struct dmio_piece *p)
{
	uint64_t at = FM_ALIGN_UP(p->off, 4096ull);
	uint8_t *blk = fault_block();

	if (blk && at + 4096 <= p->off + p->len && pread(p->dev->fd, blk, 4096, (off_t)at) == 4096) {
		blk[(at >> 12) % 4096] ^= (uint8_t)(1u << ((at >> 12) % 8));
		if (pwrite(p->dev->fd, blk, 4096, (off_t)at) == 4096)
			DMIO_FAULT_COUNT(p->dev, flipped);
	}
	free(blk);
}

/* DMIO_PF_MISDIRECT: the write did not happen; its first 4 KiB (from the
 * caller's memory) land at p->fault_target instead. */
static void fault_misdirect(struct dmio_piece *p)
{
	uint8_t *blk = fault_block();
	size_t got = 0;

	for (unsigned i = p->iov_first; blk && got < 4096 && i < p->iov_first + p->iovcnt; i++) {
		size_t n = p->iov[i].iov_len < 4096 - got ? p->iov[i].iov_len : 4096 - got;

		memcpy(blk + got, p->iov[i].iov_base, n);
		got += n;
	}
	if (got == 4096 && pwrite(p->dev->fd, blk, 4096, (off_t)p->fault_target) == 4096)
		DMIO_FAULT_COUNT(p->dev, misdirected);
	free(blk);
}

/* Completion of a piece that fault injection turned into a NOP. */
static void fault_complete(struct dmio_piece *p)
{
	if (p->fault == DMIO_PF_FAIL) {
		DMIO_FAULT_COUNT(p->dev, failed);
		piece_end(p, p->fault_res);
	} else if (p->fault == DMIO_PF_MISDIRECT) {
		fault_misdirect(p);
		piece_end(p, 0);
	} else {
		DMIO_FAULT_COUNT(p->dev, dropped);
		piece_end(p, 0);
	}
}

/* fallocate said -EOPNOTSUPP: remember it and take the next way down. */
static void falloc_fallback(struct dmio_piece *p)
{
	struct dmio_io *io = p->io;
	struct piece_list list = { 0 };

	if (p->falloc_mode & FALLOC_FL_ZERO_RANGE)
		atomic_store(&p->dev->no_zero_range, true);
	else
		atomic_store(&p->dev->no_punch_hole, true);
	if (!p->zeroes) {
		piece_end(p, -EOPNOTSUPP);
		return;
	}
	if ((p->falloc_mode & FALLOC_FL_ZERO_RANGE) && hole_reads_zeroes(p->dev) &&
	    !atomic_load(&p->dev->no_punch_hole)) {
		p->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		resubmit(p);
		return;
	}
	build_zero_writes(io, p->region, p->dev, p->off, p->len, &list);
	if (list.n) {
		/* This piece still holds a count: the io cannot finish here. */
		atomic_fetch_add(&io->pending, list.n);
		dmio_submit_pieces(list.head);
	}
	piece_end(p, 0);
}

/*
 * A read or write cancelled by io_uring did nothing: resubmit it, a few
 * times at most (DMIO_CANCEL_RETRIES).  Returns whether it was.
 */
static bool retry_canceled(struct dmio_piece *p, int res)
{
	if (res != -ECANCELED || p->cancels >= DMIO_CANCEL_RETRIES ||
	    (p->kind != DMIO_PIECE_READ && p->kind != DMIO_PIECE_WRITE))
		return false;
	p->cancels++;
	DMIO_STAT_ADD(resubmits, 1);
	if (p->fault == DMIO_PF_FAIL) {
		/* Injected: counted, then judged again when prepared. */
		DMIO_FAULT_COUNT(p->dev, failed);
		p->fault = DMIO_PF_UNDECIDED;
	}
	resubmit(p);
	return true;
}

void dmio_piece_complete(struct dmio_piece *p, int res)
{
	/* Injected failures and dropped writes were NOPs (see dmio_i.h). */
	if (fm_unlikely(p->fault == DMIO_PF_FAIL || p->fault == DMIO_PF_MISDIRECT ||
			(p->fault == DMIO_PF_DROP && p->stage != DMIO_STAGE_RMW_READ))) {
		if (p->fault == DMIO_PF_FAIL && retry_canceled(p, p->fault_res))
			return; /* as a real cancellation would be */
		fault_complete(p);
		return;
	}
	if (fm_unlikely(res == -EAGAIN || res == -EINTR)) {
		DMIO_STAT_ADD(resubmits, 1);
		resubmit(p);
		return;
	}
	if (fm_unlikely(res == -ECANCELED) && retry_canceled(p, res))
		return;
	switch (p->kind) {
	case DMIO_PIECE_READ:
	case DMIO_PIECE_WRITE:
		if (fm_unlikely(res < 0)) {
			piece_end(p, res);
			return;
		}
		if (fm_unlikely(res == 0)) {
			/* No progress: end of file inside the device size
			 * (the file shrank) or a device that takes no more. */
			piece_end(p, -EIO);
			return;
		}
		if (p->kind == DMIO_PIECE_READ && RUNNING_ON_VALGRIND)
			mark_read_defined(p, (uint64_t)res);
		if (fm_unlikely(p->fault == DMIO_PF_CORRUPT))
			fault_corrupt(p, (uint64_t)res);
		if (fm_unlikely((uint64_t)res < p->len)) {
			DMIO_STAT_ADD(resubmits, 1);
			advance(p, (uint64_t)res);
			resubmit(p);
			return;
		}
		switch (p->stage) {
		case DMIO_STAGE_BOUNCE_READ:
			bounce_copy(p, false);
			break;
		case DMIO_STAGE_RMW_READ:
			if (fm_unlikely(p->fault == DMIO_PF_DROP)) {
				/* Only the write stage is dropped. */
				fault_complete(p);
				return;
			}
			bounce_copy(p, true);
			bounce_iov_setup(p);
			p->kind = DMIO_PIECE_WRITE;
			p->stage = DMIO_STAGE_BOUNCE_WRITE;
			resubmit(p);
			return;
		default:
			break;
		}
		if (fm_unlikely(p->fault == DMIO_PF_CORRUPT))
			DMIO_FAULT_COUNT(p->dev, corrupted);
		if (fm_unlikely(p->fault == DMIO_PF_FLIP))
			fault_flip(p);
		piece_end(p, 0);
		return;
	case DMIO_PIECE_FALLOC:
		if (res == -EOPNOTSUPP) {
			falloc_fallback(p);
			return;
		}
		piece_end(p, res < 0 ? res : 0);
		return;
	default: /* FSYNC, NOP */
		piece_end(p, res < 0 ? res : 0);
		return;
	}
}

/*----------------------------------------------------------------*/
/* Entry points */

struct sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	unsigned long bits;
};

static void sync_notify(unsigned long error_bits, void *context)
{
	struct sync_wait *w = context;

	pthread_mutex_lock(&w->lock);
	w->bits = error_bits;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int validate(const struct dmio_request *req, unsigned n,
		    const struct dmio_region *where)
{
	uint64_t need = 0;

	if (!req || n == 0 || n > DMIO_MAX_REGIONS || !where)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (!where[i].dev)
			return -EINVAL;
		if (where[i].count > need)
			need = where[i].count;
	}
	switch (req->op) {
	case DMIO_OP_READ:
		if (n != 1)
			return -EINVAL;
		/* fallthrough */
	case DMIO_OP_WRITE:
		break;
	case DMIO_OP_FLUSH:
	case DMIO_OP_DISCARD:
	case DMIO_OP_WRITE_ZEROES:
		return 0;
	default:
		return -EINVAL;
	}
	if (req->flags & ~(DMIO_REQ_FUA | DMIO_REQ_PREFLUSH))
		return -EINVAL;
	switch (req->mem.type) {
	case DMIO_MEM_PAGE_LIST:
		if (req->mem.offset >= FM_PAGE_SIZE)
			return -EINVAL;
		break;
	case DMIO_MEM_BVEC:
		if (req->mem.ptr.bvec.iovcnt && !req->mem.ptr.bvec.iov)
			return -EINVAL;
		break;
	case DMIO_MEM_VM:
		if (!req->mem.ptr.vma && need)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	if (need > (UINT64_MAX >> FM_SECTOR_SHIFT) ||
	    mem_length(&req->mem) < (need << FM_SECTOR_SHIFT))
		return -EINVAL;
	return 0;
}

int dmio(struct dmio_request *req, unsigned num_regions,
	 const struct dmio_region *where, unsigned long *error_bits)
{
	struct piece_list list = { 0 };
	struct dmio_client *client;
	struct dmio_io *io;
	int r;

	r = validate(req, num_regions, where);
	if (r < 0)
		return r;
	if (req->op == DMIO_OP_WRITE && req->notify_fn) {
		for (unsigned i = 0; i < num_regions; i++)
			dmio_map_prefetch(where[i].dev, where[i].sector << FM_SECTOR_SHIFT);
	}

	if (!req->notify_fn) {
		struct sync_wait w = { .lock = PTHREAD_MUTEX_INITIALIZER,
				       .cond = PTHREAD_COND_INITIALIZER };
		struct dmio_request areq = *req;

		if (dmio_in_callback())
			return -EDEADLK;
		areq.notify_fn = sync_notify;
		areq.notify_context = &w;
		r = dmio(&areq, num_regions, where, NULL);
		if (r < 0)
			return r;
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
		pthread_cond_destroy(&w.cond);
		pthread_mutex_destroy(&w.lock);
		if (error_bits)
			*error_bits = w.bits;
		return w.bits ? -EIO : 0;
	}

	r = dmio_engine_ensure();
	if (r < 0)
		return r;
	client = req->client ? req->client : dmio_default_client();
	if (!client)
		return -ENOMEM;

	io = dmio_io_alloc(client);
	atomic_init(&io->error_bits, 0);
	io->op = req->op;
	io->flags = req->op == DMIO_OP_WRITE ? req->flags : 0;
	io->mem = req->mem;
	io->iov_alloc = NULL;
	io->regions = io->regions_inline;
	if (num_regions > DMIO_IO_INLINE_REGIONS) {
		io->regions = malloc(num_regions * sizeof(*where));
		if (!io->regions) {
			dmio_io_free(client, io);
			return -ENOMEM;
		}
	}
	if (io->mem.type == DMIO_MEM_BVEC && io->mem.ptr.bvec.iovcnt) {
		unsigned cnt = io->mem.ptr.bvec.iovcnt;
		struct iovec *copy = io->iov_inline;

		if (cnt > DMIO_IO_INLINE_IOVS) {
			copy = io->iov_alloc = malloc(cnt * sizeof(*copy));
			if (!copy) {
				io_free_copies(io);
				dmio_io_free(client, io);
				return -ENOMEM;
			}
		}
		memcpy(copy, req->mem.ptr.bvec.iov, cnt * sizeof(*copy));
		io->mem.ptr.bvec.iov = copy;
	}
	io->fn = req->notify_fn;
	io->context = req->notify_context;
	io->client = client;
	io->num_regions = num_regions;
	memcpy(io->regions, where, num_regions * sizeof(*where));
	io->preflush_phase = false;
	dmio_request_begin();
	DMIO_STAT_ADD(requests, 1);

	if (io->op == DMIO_OP_WRITE && (io->flags & DMIO_REQ_PREFLUSH)) {
		io->preflush_phase = true;
		build_op(io, DMIO_OP_FLUSH, &list);
	} else {
		build_op(io, io->op, &list);
	}
	start_pieces(io, &list);
	return 0;
}

static int seed_call(unsigned n, const struct dmio_region *where, int rw,
		     struct dmio_memory mem, dmio_notify_fn fn, void *ctx,
		     unsigned long *error_bits)
{
	struct dmio_request req = {
		.op = (enum dmio_op)rw,
		.mem = mem,
		.notify_fn = fn,
		.notify_context = ctx,
	};

	if (!fn && error_bits)
		*error_bits = 0;
	return dmio(&req, n, where, error_bits);
}

#define PL_MEM(pl_, off_) \
	((struct dmio_memory){ .type = DMIO_MEM_PAGE_LIST, .offset = (off_), .ptr.pl = (pl_) })
#define BVEC_MEM(iov_, cnt_) \
	((struct dmio_memory){ .type = DMIO_MEM_BVEC, .ptr.bvec = { (iov_), (cnt_) } })
#define VM_MEM(p_) ((struct dmio_memory){ .type = DMIO_MEM_VM, .ptr.vma = (p_) })

int dmio_sync(unsigned n, const struct dmio_region *where, int rw,
	      struct dmio_page_list *pl, unsigned offset, unsigned long *error_bits)
{
	return seed_call(n, where, rw, PL_MEM(pl, offset), NULL, NULL, error_bits);
}

int dmio_async(unsigned n, const struct dmio_region *where, int rw,
	       struct dmio_page_list *pl, unsigned offset, dmio_notify_fn fn, void *context)
{
	if (!fn)
		return -EINVAL;
	return seed_call(n, where, rw, PL_MEM(pl, offset), fn, context, NULL);
}

int dmio_sync_bvec(unsigned n, const struct dmio_region *where, int rw,
		   const struct iovec *iov, unsigned iovcnt, unsigned long *error_bits)
{
	return seed_call(n, where, rw, BVEC_MEM(iov, iovcnt), NULL, NULL, error_bits);
}

int dmio_async_bvec(unsigned n, const struct dmio_region *where, int rw,
		    const struct iovec *iov, unsigned iovcnt, dmio_notify_fn fn, void *context)
{
	if (!fn)
		return -EINVAL;
	return seed_call(n, where, rw, BVEC_MEM(iov, iovcnt), fn, context, NULL);
}

int dmio_sync_vm(unsigned n, const struct dmio_region *where, int rw,
		 void *data, unsigned long *error_bits)
{
	return seed_call(n, where, rw, VM_MEM(data), NULL, NULL, error_bits);
}

int dmio_async_vm(unsigned n, const struct dmio_region *where, int rw,
		  void *data, dmio_notify_fn fn, void *context)
{
	if (!fn)
		return -EINVAL;
	return seed_call(n, where, rw, VM_MEM(data), fn, context, NULL);
}
