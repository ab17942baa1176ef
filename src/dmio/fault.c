/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fault injection, after dm-flakey (up/down cycle, error/drop/corrupt) and
 * dm-dust (a bad range).  The state's lifetime, the decision and how an
 * injected result reaches completion are described in dmio_i.h.
 *
 * Invariants:
 *   - A struct dmio_fault_state never changes after it is published, but
 *     for its atomic counters and its healed flag.
 *   - Every state ever published is dev->fault, on dev->fault_retired, or
 *     freed after a moment when dev->fault_readers was zero following the
 *     swap that retired it.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "dmio_i.h"

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Free every retired state: fault_lock held (or the device is being
 * closed), and no reader can hold one. */
static void retired_free_locked(struct dmio_dev *dev)
{
	struct dmio_fault_state *s = dev->fault_retired;

	while (s) {
		struct dmio_fault_state *next = s->retired_next;

		free(s->healed);
		free(s);
		s = next;
	}
	dev->fault_retired = NULL;
	dev->nr_fault_retired = 0;
}

int dmio_dev_set_fault(struct dmio_dev *dev, const struct dmio_fault *fault)
{
	struct dmio_fault_state *s = NULL, *old;

	if (fault) {
		if ((fault->flags & ~(unsigned)DMIO_FAULT_ALL_FLAGS) || fault->error < 0 ||
		    fault->error > 4095)
			return -EINVAL;
		if ((fault->flags & DMIO_FAULT_HEAL_ON_WRITE) &&
		    (fault->count == 0 || fault->count > (1ull << 24)))
			return -EINVAL;
		/* Misdirected writes land inside the range: at least 8 KiB. */
		if ((fault->flags & DMIO_FAULT_MISDIRECT_WRITES) && fault->count < 16)
			return -EINVAL;
		if (!(fault->flags & (DMIO_FAULT_DELAY_WRITES | DMIO_FAULT_DELAY_READS)) !=
		    !fault->delay_ms ||
		    fault->delay_ms > DMIO_FAULT_DELAY_MAX_MS)
			return -EINVAL;
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->f = *fault;
		s->res = fault->error ? -fault->error : -EIO;
		s->begin = fault->sector << FM_SECTOR_SHIFT;
		if (fault->count == 0 || fault->sector + fault->count < fault->sector ||
		    fault->sector + fault->count > (UINT64_MAX >> FM_SECTOR_SHIFT))
			s->end = UINT64_MAX;
		else
			s->end = (fault->sector + fault->count) << FM_SECTOR_SHIFT;
		if (fault->count == 0)
			s->begin = 0;
		s->t0_ns = fm_now_ns();
		if (fault->flags & DMIO_FAULT_HEAL_ON_WRITE) {
			s->heal_base = s->begin & ~4095ull;
			s->heal_blocks = (s->end - s->heal_base + 4095) / 4096;
			s->healed = calloc((s->heal_blocks + 63) / 64, 8);
			if (!s->healed) {
				free(s);
				return -ENOMEM;
			}
		}
		atomic_init(&s->draws, 0);
	}

	pthread_mutex_lock(&dev->fault_lock);
	old = atomic_exchange(&dev->fault, s); /* seq_cst: see dmio_i.h */
	if (old) {
		old->retired_next = dev->fault_retired;
		dev->fault_retired = old;
		dev->nr_fault_retired++;
	}
	if (dev->fault_retired) {
		/* Bounded: past the cap, wait for the readers to leave (they
		 * hold it for a few hundred nanoseconds). */
		while (dev->nr_fault_retired >= DMIO_FAULT_RETIRED_MAX &&
		       atomic_load(&dev->fault_readers) != 0)
			sched_yield();
		if (atomic_load(&dev->fault_readers) == 0)
			retired_free_locked(dev);
	}
	pthread_mutex_unlock(&dev->fault_lock);
	fm_debug("dmio: %s: fault %s", dev->name, s ? "set" : "cleared");
	return 0;
}

int dmio_dev_get_fault(struct dmio_dev *dev, struct dmio_fault *ret_fault)
{
	struct dmio_fault_state *s;
	int r = -ENOENT;

	pthread_mutex_lock(&dev->fault_lock);
	s = atomic_load(&dev->fault);
	if (s) {
		*ret_fault = s->f;
		r = 0;
	}
	pthread_mutex_unlock(&dev->fault_lock);
	return r;
}

void dmio_dev_get_fault_stats(struct dmio_dev *dev, struct dmio_fault_stats *ret)
{
	ret->failed = atomic_load_explicit(&dev->fault_failed, memory_order_relaxed);
	ret->dropped = atomic_load_explicit(&dev->fault_dropped, memory_order_relaxed);
	ret->corrupted = atomic_load_explicit(&dev->fault_corrupted, memory_order_relaxed);
	ret->flipped = atomic_load_explicit(&dev->fault_flipped, memory_order_relaxed);
	ret->misdirected = atomic_load_explicit(&dev->fault_misdirected, memory_order_relaxed);
}

void dmio_fault_states_free(struct dmio_dev *dev)
{
	struct dmio_fault_state *s = atomic_exchange(&dev->fault, NULL);

	if (s)
		free(s->healed);
	free(s);
	retired_free_locked(dev);
}

/* Is the flakey cycle in its down phase? */
static bool fault_down(const struct dmio_fault_state *s)
{
	uint64_t period, ms;

	if (s->f.down_ms == 0)
		return true;
	period = (uint64_t)s->f.up_ms + s->f.down_ms;
	ms = (fm_now_ns() - s->t0_ns) / 1000000u;
	return ms % period >= s->f.up_ms;
}

static bool fault_draw(struct dmio_fault_state *s)
{
	uint64_t n;

	if (s->f.rate_ppm == 0 || s->f.rate_ppm >= 1000000u)
		return true;
	n = atomic_fetch_add_explicit(&s->draws, 1, memory_order_relaxed);
	return splitmix64(s->f.seed + n * 0x9e3779b97f4a7c15ULL) % 1000000u < s->f.rate_ppm;
}

/* HEAL_ON_WRITE: mark the blocks that [off, off + len) covers wholly. */
static void heal_blocks(struct dmio_fault_state *s, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (off + len <= s->heal_base)
		return;
	if (off < s->heal_base) {
		len -= s->heal_base - off;
		off = s->heal_base;
	}
	first = (off - s->heal_base + 4095) / 4096;
	last = (off + len - s->heal_base) / 4096;      /* exclusive */
	for (uint64_t b = first; b < last && b < s->heal_blocks; b++)
		atomic_fetch_or(&s->healed[b / 64], 1ull << (b % 64));
}

/* HEAL_ON_WRITE: has every block of the range that [off, off + len)
 * touches been healed? */
static bool heal_all_healed(const struct dmio_fault_state *s, uint64_t off, uint64_t len)
{
	uint64_t lo = off > s->begin ? off : s->begin;
	uint64_t hi = off + len < s->end ? off + len : s->end;

	for (uint64_t b = (lo - s->heal_base) / 4096; b <= (hi - 1 - s->heal_base) / 4096 &&
	     b < s->heal_blocks; b++)
		if (!(atomic_load(&s->healed[b / 64]) & (1ull << (b % 64))))
			return false;
	return true;
}

/* The action @s takes on @p if @p is affected; DMIO_PF_NONE otherwise. */
static enum dmio_piece_fault fault_action(const struct dmio_fault_state *s,
					  const struct dmio_piece *p)
{
	unsigned fl = s->f.flags;
	uint64_t off = p->off, len = p->len;

	if (p->stage != DMIO_STAGE_DIRECT) {
		off = p->user_off;
		len = p->user_len;
	}
	switch (p->kind) {
	case DMIO_PIECE_FSYNC:
		return (fl & DMIO_FAULT_FLUSHES) ? DMIO_PF_FAIL : DMIO_PF_NONE;
	case DMIO_PIECE_NOP:
		return DMIO_PF_NONE;
	default:
		break;
	}
	if (!(off < s->end && s->begin < off + len))
		return DMIO_PF_NONE;
	if (p->kind == DMIO_PIECE_READ && p->stage != DMIO_STAGE_RMW_READ) {
		if ((fl & DMIO_FAULT_HEAL_ON_WRITE) && heal_all_healed(s, off, len))
			return DMIO_PF_NONE;
		if (fl & DMIO_FAULT_READS)
			return DMIO_PF_FAIL;
		if (fl & DMIO_FAULT_CORRUPT_READS)
			return DMIO_PF_CORRUPT;
		if (fl & DMIO_FAULT_DELAY_READS)
			return DMIO_PF_DELAY;
		return DMIO_PF_NONE;
	}
	/* WRITE, FALLOC, or the read of a read-modify-write. */
	if (fl & DMIO_FAULT_WRITES)
		return DMIO_PF_FAIL;
	if (fl & DMIO_FAULT_DROP_WRITES)
		return DMIO_PF_DROP;
	if (p->kind == DMIO_PIECE_WRITE && p->stage == DMIO_STAGE_DIRECT) {
		if (fl & DMIO_FAULT_MISDIRECT_WRITES)
			return DMIO_PF_MISDIRECT;
		if (fl & DMIO_FAULT_FLIP_WRITES)
			return DMIO_PF_FLIP;
	}
	if ((fl & DMIO_FAULT_DELAY_WRITES) && p->kind == DMIO_PIECE_WRITE &&
	    p->stage != DMIO_STAGE_RMW_READ)
		return DMIO_PF_DELAY;
	return DMIO_PF_NONE;
}

/* Where a misdirected write of device byte @off lands: half the range
 * further on, wrapping within it, 4 KiB aligned. */
static uint64_t misdirect_target(const struct dmio_fault_state *s, uint64_t off)
{
	uint64_t size = s->end - s->begin, half = FM_ALIGN_DOWN(size / 2, 4096ull);
	uint64_t t = s->begin + (off - s->begin + half) % size;

	t = FM_ALIGN_DOWN(t, 4096ull);
	if (t < s->begin || t + 4096 > s->end)
		t = FM_ALIGN_UP(s->begin, 4096ull);
	return t;
}

bool dmio_fault_decide(struct dmio_piece *p)
{
	struct dmio_dev *dev = p->dev;
	struct dmio_fault_state *s;
	enum dmio_piece_fault act = DMIO_PF_NONE;

	atomic_fetch_add(&dev->fault_readers, 1);
	s = atomic_load(&dev->fault);
	if (s) {
		act = fault_action(s, p);
		if (act != DMIO_PF_NONE && !(fault_down(s) && fault_draw(s)))
			act = DMIO_PF_NONE;
		if (act == DMIO_PF_NONE && (s->f.flags & DMIO_FAULT_HEAL_ON_WRITE) &&
		    p->kind == DMIO_PIECE_WRITE) {
			uint64_t off = p->stage != DMIO_STAGE_DIRECT ? p->user_off : p->off;
			uint64_t len = p->stage != DMIO_STAGE_DIRECT ? p->user_len : p->len;

			heal_blocks(s, off, len);
		}
		p->fault_res = s->res;
		if (act == DMIO_PF_MISDIRECT)
			p->fault_target = misdirect_target(s, p->off);
		if (act == DMIO_PF_DELAY)
			p->delay_ms = s->f.delay_ms;
	}
	atomic_fetch_sub_explicit(&dev->fault_readers, 1, memory_order_release);
	p->fault = (uint8_t)act;
	return act == DMIO_PF_FAIL || act == DMIO_PF_MISDIRECT ||
	       (act == DMIO_PF_DROP && p->stage != DMIO_STAGE_RMW_READ);
}
