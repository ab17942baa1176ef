/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The bad-block list (FM_SB_FEAT_BAD_BLOCKS; md's bad block log): 4 KiB
 * blocks of the image that one leg could not write.  The list lives in the
 * superblock (struct fm_sb.bad, under state_lock in the mirror), so every
 * leg carries every leg's entries.
 *
 * What it promises:
 *   - A write that fails on a leg is retried there block by block
 *     (mirror.c, narrow_write(), on the worker thread); the blocks that
 *     still fail are recorded, and the write is acknowledged only once the
 *     superblocks holding them are on disk (like a failed leg): after a
 *     crash the leg's stale copy of those blocks is never taken for
 *     current.  When the list has no room the leg fails, as without it.
 *   - A read of a block in the list avoids that leg; a resync or scrub
 *     rewrites that leg's copy instead of comparing it.
 *   - A later write of the whole block that succeeds on that leg (a
 *     client write, a resync, a scrub repair) removes it from the list.
 *   - A slot's entries go when its leg leaves the array (removed,
 *     replaced, or a new leg formatted into the slot).
 *
 * The functions here are pure (on a superblock); the mirror calls them
 * with state_lock held.  An operation that does not fit leaves the list
 * unchanged.
 */
#include <errno.h>
#include <string.h>

#include "mirror_i.h"

#define BLK_SECTORS (FM_SB_BAD_BLOCK_SIZE >> FM_SECTOR_SHIFT)

static void set_feature(struct fm_sb *sb)
{
	if (sb->nr_bad)
		sb->features |= FM_SB_FEAT_BAD_BLOCKS;
	else
		sb->features &= ~(uint32_t)FM_SB_FEAT_BAD_BLOCKS;
}

static void remove_at(struct fm_sb *sb, unsigned k)
{
	sb->bad[k] = sb->bad[--sb->nr_bad];
	sb->bad[sb->nr_bad] = 0;
}

/* Append [lo, hi) of @slot in entries of at most FM_SB_BAD_MAX_LEN
 * blocks; false (sb partly changed) when there is no room. */
static bool append(struct fm_sb *sb, unsigned slot, uint64_t lo, uint64_t hi)
{
	while (lo < hi) {
		uint64_t n = hi - lo < FM_SB_BAD_MAX_LEN ? hi - lo : FM_SB_BAD_MAX_LEN;

		if (sb->nr_bad >= FM_SB_BAD_MAX)
			return false;
		sb->bad[sb->nr_bad++] = FM_SB_BAD_MAKE(slot, lo, n);
		lo += n;
	}
	return true;
}

bool mbad_overlaps(const struct fm_sb *sb, unsigned slot, uint64_t sector, uint64_t count)
{
	uint64_t lo = sector / BLK_SECTORS, hi = (sector + count + BLK_SECTORS - 1) / BLK_SECTORS;

	for (unsigned k = 0; k < sb->nr_bad; k++) {
		uint64_t e = sb->bad[k];

		if (FM_SB_BAD_SLOT(e) == slot && FM_SB_BAD_BLOCK(e) < hi &&
		    lo < FM_SB_BAD_BLOCK(e) + FM_SB_BAD_LEN(e))
			return true;
	}
	return false;
}

int mbad_add(struct fm_sb *sb, unsigned slot, uint64_t block, uint64_t n)
{
	struct fm_sb t;
	uint64_t lo = block, hi = block + n;
	bool merged;

	if (!n)
		return 0;
	t.nr_bad = sb->nr_bad;
	memcpy(t.bad, sb->bad, sizeof(t.bad));
	/* Absorb every entry of the slot that overlaps or touches [lo, hi). */
	do {
		merged = false;
		for (unsigned k = 0; k < t.nr_bad; k++) {
			uint64_t e = t.bad[k], s = FM_SB_BAD_BLOCK(e), x = s + FM_SB_BAD_LEN(e);

			if (FM_SB_BAD_SLOT(e) != slot || s > hi || x < lo)
				continue;
			lo = s < lo ? s : lo;
			hi = x > hi ? x : hi;
			remove_at(&t, k);
			merged = true;
			break;
		}
	} while (merged);
	if (!append(&t, slot, lo, hi))
		return -ENOSPC;
	sb->nr_bad = t.nr_bad;
	memcpy(sb->bad, t.bad, sizeof(t.bad));
	set_feature(sb);
	return 0;
}

bool mbad_clear(struct fm_sb *sb, unsigned slot, uint64_t block, uint64_t n)
{
	struct fm_sb t;
	uint64_t lo = block, hi = block + n;
	bool changed = false, again;

	if (!n || !sb->nr_bad)
		return false;
	t.nr_bad = sb->nr_bad;
	memcpy(t.bad, sb->bad, sizeof(t.bad));
	do {
		again = false;
		for (unsigned k = 0; k < t.nr_bad; k++) {
			uint64_t e = t.bad[k], s = FM_SB_BAD_BLOCK(e), x = s + FM_SB_BAD_LEN(e);

			if (FM_SB_BAD_SLOT(e) != slot || s >= hi || x <= lo)
				continue;
			remove_at(&t, k);
			/* What is left of it on either side (at most one
			 * entry more: the removal made room for one). */
			if (!append(&t, slot, s, s < lo ? lo : s) ||
			    !append(&t, slot, x > hi ? hi : x, x))
				return false;   /* no room to split: keep it all */
			changed = again = true;
			break;
		}
	} while (again);
	if (!changed)
		return false;
	sb->nr_bad = t.nr_bad;
	memcpy(sb->bad, t.bad, sizeof(t.bad));
	set_feature(sb);
	return true;
}

bool mbad_drop_slot(struct fm_sb *sb, unsigned slot)
{
	bool changed = false;

	for (unsigned k = 0; k < sb->nr_bad;) {
		if (FM_SB_BAD_SLOT(sb->bad[k]) == slot) {
			remove_at(sb, k);
			changed = true;
		} else {
			k++;
		}
	}
	set_feature(sb);
	return changed;
}

int mbad_record(struct fm_sb *sb, unsigned slot, const uint8_t *failed, uint64_t b0,
		uint64_t nb)
{
	struct fm_sb t;
	uint64_t n = 0;

	for (uint64_t b = 0; b < nb; b++)
		n += failed[b] != 0;
	if (!n)
		return 0;
	/* A leg with more than a few bad blocks is going: fail it. */
	if (mbad_blocks(sb, slot) + n > MIRROR_BAD_MAX_LEG)
		return -ENOSPC;
	t.nr_bad = sb->nr_bad;
	t.features = sb->features;
	memcpy(t.bad, sb->bad, sizeof(t.bad));
	for (uint64_t b = 0; b < nb; b++) {
		uint64_t e = b;

		if (!failed[b])
			continue;
		while (e < nb && failed[e])
			e++;
		if (mbad_add(&t, slot, b0 + b, e - b) < 0)
			return -ENOSPC;
		b = e;
	}
	sb->nr_bad = t.nr_bad;
	memcpy(sb->bad, t.bad, sizeof(t.bad));
	set_feature(sb);
	return 0;
}

uint64_t mbad_blocks(const struct fm_sb *sb, unsigned slot)
{
	uint64_t n = 0;

	for (unsigned k = 0; k < sb->nr_bad; k++)
		if (FM_SB_BAD_SLOT(sb->bad[k]) == slot)
			n += FM_SB_BAD_LEN(sb->bad[k]);
	return n;
}

/*----------------------------------------------------------------*/
/* The mirror's use of the list */

bool mirror_leg_bad(struct mirror *m, unsigned i, uint64_t sector, uint64_t count)
{
	bool bad;

	if (!atomic_load_explicit(&m->nr_bad, memory_order_acquire))
		return false;
	pthread_mutex_lock(&m->state_lock);
	bad = mbad_overlaps(&m->sb, i, sector, count);
	pthread_mutex_unlock(&m->state_lock);
	return bad;
}

void mirror_bad_clear(struct mirror *m, unsigned i, uint64_t sector, uint64_t count)
{
	uint64_t lo = (sector + BLK_SECTORS - 1) / BLK_SECTORS, hi = (sector + count) / BLK_SECTORS;

	if (!atomic_load_explicit(&m->nr_bad, memory_order_acquire) || hi <= lo)
		return;
	pthread_mutex_lock(&m->state_lock);
	if (mbad_clear(&m->sb, i, lo, hi - lo)) {
		atomic_store_explicit(&m->nr_bad, m->sb.nr_bad, memory_order_release);
		fm_debug("leg %s: blocks %llu+%llu written fine: no longer bad", m->legs[i].path,
			 (unsigned long long)lo, (unsigned long long)(hi - lo));
		mirror_sb_request_locked(m);
	}
	pthread_mutex_unlock(&m->state_lock);
}

void mirror_bad_drop_slot_locked(struct mirror *m, unsigned i)
{
	if (mbad_drop_slot(&m->sb, i))
		atomic_store_explicit(&m->nr_bad, m->sb.nr_bad, memory_order_release);
}

void mirror_bad_inherit(struct mirror *m, unsigned from, uint64_t to, uint64_t sector,
			uint64_t count)
{
	uint64_t lo = sector / BLK_SECTORS, hi = (sector + count + BLK_SECTORS - 1) / BLK_SECTORS;
	uint64_t full = 0;

	pthread_mutex_lock(&m->state_lock);
	for (unsigned k = 0; k < m->sb.nr_bad; k++) {
		uint64_t e = m->sb.bad[k], s = FM_SB_BAD_BLOCK(e), x = s + FM_SB_BAD_LEN(e);

		if (FM_SB_BAD_SLOT(e) != from || s >= hi || x <= lo)
			continue;
		s = s < lo ? lo : s;
		x = x > hi ? hi : x;
		for (unsigned i = 0; i < m->nr_legs; i++)
			if ((to & (1ull << i)) && i != from && mbad_add(&m->sb, i, s, x - s) < 0)
				full |= 1ull << i;
	}
	atomic_store_explicit(&m->nr_bad, m->sb.nr_bad, memory_order_release);
	mirror_sb_request_locked(m);
	pthread_mutex_unlock(&m->state_lock);
	for (unsigned i = 0; i < m->nr_legs; i++)
		if (full & (1ull << i))
			mirror_leg_failed(m, i, "bad-block list full", -ENOSPC);
}
