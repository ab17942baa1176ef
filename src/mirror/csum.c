/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Per-block checksums (FM_SB_FEAT_CHECKSUMS): the mirror's in-memory copy
 * of the checksum area, kept up to date by every write, and written back
 * to every leg before the write-intent bits covering it are cleared.
 *
 * The table: one atomic u32 per 4 KiB block of the image, in the stored
 * form (crc32c(block) XOR FM_SB_CSUM_ZERO_BLOCK, so 0 is a zero block),
 * host order in memory, little-endian on disk; loaded whole at assembly
 * from one in-sync leg: 1 MiB per GiB of image (FM_SB_CSUM_MAX_IMAGE caps
 * it at 4 GiB).  No lock guards an entry: a write stores its blocks'
 * entries (relaxed atomics) and then marks their pages dirty (release); a
 * page writer takes the dirty flag (acquire exchange) and then copies the
 * page, so a change made after the copy leaves the page dirty for the next
 * pass.
 *
 * Invariants (what makes an entry on disk trustworthy):
 *   - An entry changes only for a write (or discard, or a resync that
 *     recomputes it) whose bitmap bit is already durable (the mirror calls
 *     mcsum_update_*() after mbitmap_start_write() said so), before that
 *     write's data is issued.
 *   - Dirty pages are written to every writable leg by the bitmap's flush
 *     (bm_flush in assemble.c), which every clearing pass runs between its
 *     two scans: a bit is cleared only when the last write into its region
 *     ended before the first scan, so that write's entries were in the
 *     table before the page copy.  Hence outside regions whose bit is set
 *     on disk, the on-disk entries match the data on every in-sync leg.
 *   - A page write, torn or not, changes on disk only entries of regions
 *     whose bits are set (an entry of a clean region is written with the
 *     value it already has), so a crash in the middle of one cannot make a
 *     clean region's entry wrong.
 *   - mirror_stop() writes the dirty pages before it marks the array clean
 *     (a degraded array clears no bit, so nothing else would); a recovery
 *     writes the whole table to the legs it rebuilt, and flushes them,
 *     before they count as in sync.
 *
 * Threading: update/verify calls are lock-free, any thread.  Page writes
 * (mcsum_write_dirty) are serialised by write_lock, which is held across
 * the page I/O only (never across data I/O); they block, so never call
 * them from a completion.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mirror_i.h"

#define ENTRIES_PER_PAGE (FM_PAGE_SIZE / FM_SB_CSUM_ENTRY_SIZE)     /* 1024 */
#define CSUM_SECTORS (FM_SB_CSUM_BLOCK_SIZE >> FM_SECTOR_SHIFT)      /* 8 */
#define CSUM_IO_PAGES 256u                                           /* 1 MiB */

struct mcsum {
	uint64_t nr_blocks;
	uint64_t nr_pages;              /* pages of the area that hold entries */
	uint64_t area_sector;           /* csum_offset in sectors */
	_Atomic uint32_t *table;        /* nr_pages * ENTRIES_PER_PAGE entries */
	atomic_uchar *page_dirty;
	pthread_mutex_t write_lock;     /* one page writer at a time; guards wbuf */
	uint8_t *wbuf;                  /* CSUM_IO_PAGES pages, 4 KiB aligned */
	atomic_ullong page_writes;
};

static inline uint32_t stored_of(uint32_t crc)
{
	return crc ^ FM_SB_CSUM_ZERO_BLOCK;
}

uint32_t mcsum_block_crc(const void *block)
{
	return fm_crc32c(0, block, FM_SB_CSUM_BLOCK_SIZE);
}

bool mirror_has_csum(const struct mirror *m)
{
	return m->csum != NULL;
}

bool mcsum_aligned(uint64_t sector, uint64_t count)
{
	return !((sector | count) & (CSUM_SECTORS - 1));
}

static void set_entry(struct mcsum *c, uint64_t block, uint32_t stored)
{
	atomic_store_explicit(&c->table[block], stored, memory_order_relaxed);
	/* The page is marked after the entry (a release store: a writer that
	 * takes the flag with acquire copies the new value, or the flag stays
	 * set for the next pass).  Not a fence: ThreadSanitizer cannot see
	 * fences, and gcc refuses them under -fsanitize=thread. */
	atomic_store_explicit(&c->page_dirty[block / ENTRIES_PER_PAGE], 1, memory_order_release);
}

uint32_t mcsum_get(struct mirror *m, uint64_t block)
{
	return stored_of(atomic_load_explicit(&m->csum->table[block], memory_order_relaxed));
}

void mcsum_set(struct mirror *m, uint64_t block, uint32_t crc)
{
	set_entry(m->csum, block, stored_of(crc));
}

/* Walk the 4 KiB blocks of an iovec (blocks may span elements). */
struct iov_walk {
	const struct iovec *iov;
	unsigned iovcnt, i;
	size_t off;
};

static uint32_t walk_block_crc(struct iov_walk *w)
{
	size_t left = FM_SB_CSUM_BLOCK_SIZE;
	uint32_t crc = 0;

	while (left && w->i < w->iovcnt) {
		size_t n = w->iov[w->i].iov_len - w->off;

		if (n > left)
			n = left;
		crc = fm_crc32c(crc, (const char *)w->iov[w->i].iov_base + w->off, n);
		left -= n;
		w->off += n;
		if (w->off == w->iov[w->i].iov_len) {
			w->i++;
			w->off = 0;
		}
	}
	return crc;
}

/* The checksums of the next @n (<= WALK_BATCH) blocks of @w: the blocks
 * wholly inside one iovec element three at a time (fm_crc32c_blocks()),
 * one straddling two elements on its own. */
#define WALK_BATCH 64

static void walk_crcs(struct iov_walk *w, uint64_t n, uint32_t *out)
{
	while (n) {
		size_t in = w->i < w->iovcnt ? w->iov[w->i].iov_len - w->off : 0;
		uint64_t k = in / FM_SB_CSUM_BLOCK_SIZE < n ? in / FM_SB_CSUM_BLOCK_SIZE : n;

		if (!k) {
			*out++ = walk_block_crc(w);
			n--;
			continue;
		}
		fm_crc32c_blocks((const char *)w->iov[w->i].iov_base + w->off,
				 FM_SB_CSUM_BLOCK_SIZE, k, out);
		out += k;
		n -= k;
		w->off += k * FM_SB_CSUM_BLOCK_SIZE;
		if (w->off == w->iov[w->i].iov_len) {
			w->i++;
			w->off = 0;
		}
	}
}

void mcsum_update_iov(struct mirror *m, uint64_t sector, uint64_t count,
		      const struct iovec *iov, unsigned iovcnt)
{
	struct iov_walk w = { iov, iovcnt, 0, 0 };
	uint64_t b0 = sector / CSUM_SECTORS, nb = count / CSUM_SECTORS;
	uint32_t crc[WALK_BATCH];

	for (uint64_t b = 0; b < nb; b += WALK_BATCH) {
		uint64_t n = nb - b < WALK_BATCH ? nb - b : WALK_BATCH;

		walk_crcs(&w, n, crc);
		for (uint64_t k = 0; k < n; k++)
			set_entry(m->csum, b0 + b + k, stored_of(crc[k]));
	}
}

void mcsum_set_zero(struct mirror *m, uint64_t sector, uint64_t count)
{
	uint64_t b0 = sector / CSUM_SECTORS, nb = count / CSUM_SECTORS;

	for (uint64_t b = b0; b < b0 + nb; b++)
		set_entry(m->csum, b, 0);
}

/*
 * The table is 1 MiB per GiB of image: a random 4 KiB read finds its entry
 * in no cache (and its page in no TLB).  Without this, mcsum_get() was
 * 2.6% of an io_uring queue thread's samples at 4k QD32 randread, nearly
 * all of it that miss, paid after the leg copy; prefetched as the read
 * enters the mirror it overlaps the copy (a prefetch never faults).  One
 * line holds 16 entries (64 KiB); a longer read's further lines are
 * sequential, which the hardware prefetcher follows.
 */
void mcsum_prefetch(struct mirror *m, uint64_t sector)
{
	__builtin_prefetch(&m->csum->table[sector / CSUM_SECTORS], 0, 3);
}

int64_t mcsum_verify_iov(struct mirror *m, uint64_t sector, uint64_t count,
			 const struct iovec *iov, unsigned iovcnt)
{
	struct iov_walk w = { iov, iovcnt, 0, 0 };
	uint64_t b0 = sector / CSUM_SECTORS, nb = count / CSUM_SECTORS;
	uint32_t crc[WALK_BATCH];

	for (uint64_t b = 0; b < nb; b += WALK_BATCH) {
		uint64_t n = nb - b < WALK_BATCH ? nb - b : WALK_BATCH;

		walk_crcs(&w, n, crc);
		for (uint64_t k = 0; k < n; k++)
			if (crc[k] != mcsum_get(m, b0 + b + k))
				return (int64_t)(b0 + b + k);
	}
	return -1;
}

/*----------------------------------------------------------------*/
/* Load, write back */

int mcsum_load(struct mirror *m, GError **err)
{
	struct mcsum *c;
	uint64_t nr_blocks = m->image_size / FM_SB_CSUM_BLOCK_SIZE;
	uint64_t nr_pages = (nr_blocks + ENTRIES_PER_PAGE - 1) / ENTRIES_PER_PAGE;
	int src = atomic_load(&m->sync_src);
	uint8_t *buf = NULL;
	int r = -EIO;

	if (!(m->sb.features & FM_SB_FEAT_CHECKSUMS))
		return 0;
	if (m->image_size > FM_SB_CSUM_MAX_IMAGE) {
		g_set_error(err, FM_MIRROR_ERROR, EFBIG,
			    "the array's image (%llu bytes) is larger than the %llu bytes whose "
			    "checksums this program keeps in memory",
			    (unsigned long long)m->image_size,
			    (unsigned long long)FM_SB_CSUM_MAX_IMAGE);
		return -EFBIG;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->nr_blocks = nr_blocks;
	c->nr_pages = nr_pages;
	c->area_sector = m->sb.csum_offset >> FM_SECTOR_SHIFT;
	pthread_mutex_init(&c->write_lock, NULL);
	m->csum = c;
	c->table = calloc(nr_pages, FM_PAGE_SIZE);
	c->page_dirty = calloc(nr_pages, 1);
	if (!c->table || !c->page_dirty ||
	    posix_memalign((void **)&c->wbuf, FM_PAGE_SIZE, CSUM_IO_PAGES * FM_PAGE_SIZE)) {
		c->wbuf = NULL;
		goto nomem;
	}
	buf = c->wbuf;
	/* From the resync source first (any in-sync leg has the same entries
	 * outside dirty regions), then the others. */
	for (unsigned k = 0; k < m->nr_legs && r < 0; k++) {
		unsigned li = src >= 0 ? ((unsigned)src + k) % m->nr_legs : k;
		struct mirror_leg *leg = &m->legs[li];

		if (!leg->dev || leg_state(leg) != FM_LEG_IN_SYNC)
			continue;
		r = 0;
		for (uint64_t p = 0; p < nr_pages && r == 0; p += CSUM_IO_PAGES) {
			uint64_t n = nr_pages - p < CSUM_IO_PAGES ? nr_pages - p : CSUM_IO_PAGES;
			struct dmio_region where = { leg->dev, c->area_sector + p * 8, n * 8 };
			struct dmio_request req = {
				.op = DMIO_OP_READ,
				.mem = { .type = DMIO_MEM_VM, .ptr.vma = buf },
			};

			r = dmio(&req, 1, &where, NULL);
			for (uint64_t e = 0; r == 0 && e < n * ENTRIES_PER_PAGE; e++) {
				uint32_t v;

				memcpy(&v, buf + e * 4, 4);
				atomic_init(&c->table[p * ENTRIES_PER_PAGE + e], GUINT32_FROM_LE(v));
			}
		}
		if (r < 0)
			mirror_event_detail(m, FM_EVENT_READ_ERROR, (int)(leg - m->legs), 0, -r,
					    "cannot read the checksum area");
	}
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, EIO,
			    "no in-sync leg could be read for the checksum area");
		return -EIO;
	}
	return 0;
nomem:
	g_set_error(err, FM_MIRROR_ERROR, ENOMEM,
		    "out of memory for the checksums (%llu bytes, 1 MiB per GiB of image)",
		    (unsigned long long)(nr_pages * FM_PAGE_SIZE));
	return -ENOMEM;
}

void mcsum_free(struct mirror *m)
{
	struct mcsum *c = m->csum;

	if (!c)
		return;
	pthread_mutex_destroy(&c->write_lock);
	free(c->table);
	free(c->page_dirty);
	free(c->wbuf);
	free(c);
	m->csum = NULL;
}

void mcsum_mark_all_dirty(struct mirror *m)
{
	struct mcsum *c = m->csum;

	if (!c)
		return;
	for (uint64_t p = 0; p < c->nr_pages; p++)
		atomic_store_explicit(&c->page_dirty[p], 1, memory_order_release);
}

/* Write one run of @n pages from @p (already copied into wbuf). */
static int write_run(struct mirror *m, uint64_t p, uint64_t n)
{
	struct mcsum *c = m->csum;
	struct dmio_request req = {
		.op = DMIO_OP_WRITE,
		.mem = { .type = DMIO_MEM_VM, .ptr.vma = c->wbuf },
	};
	bool failed;
	int r = mirror_legs_sync_io(m, &req, c->area_sector + p * 8, n * 8, "checksum write",
				    &failed);

	if (r == 0)
		atomic_fetch_add_explicit(&c->page_writes, n, memory_order_relaxed);
	return r;
}

/* Flush the run in wbuf; remember the first error in *r. */
static void flush_run(struct mirror *m, uint64_t start, uint64_t *len, int *r)
{
	int r2;

	if (!*len)
		return;
	r2 = write_run(m, start, *len);
	if (r2 < 0 && !*r)
		*r = r2;
	*len = 0;
}

int mcsum_write_dirty(struct mirror *m)
{
	struct mcsum *c = m->csum;
	uint64_t run_start = 0, run_len = 0;
	int r = 0;

	if (!c)
		return 0;
	pthread_mutex_lock(&c->write_lock);
	for (uint64_t p = 0; p < c->nr_pages; p++) {
		if (!atomic_load_explicit(&c->page_dirty[p], memory_order_relaxed) ||
		    !atomic_exchange_explicit(&c->page_dirty[p], 0, memory_order_acquire)) {
			flush_run(m, run_start, &run_len, &r);
			continue;
		}
		if (run_len == CSUM_IO_PAGES)
			flush_run(m, run_start, &run_len, &r);
		if (run_len == 0)
			run_start = p;
		for (uint64_t e = 0; e < ENTRIES_PER_PAGE; e++) {
			uint32_t v = GUINT32_TO_LE(atomic_load_explicit(
				&c->table[p * ENTRIES_PER_PAGE + e], memory_order_relaxed));

			memcpy(c->wbuf + (run_len * ENTRIES_PER_PAGE + e) * 4, &v, 4);
		}
		run_len++;
	}
	flush_run(m, run_start, &run_len, &r);
	/* Not on any in-sync leg: keep every page dirty for the next try. */
	if (r < 0)
		mcsum_mark_all_dirty(m);
	pthread_mutex_unlock(&c->write_lock);
	return r;
}

uint64_t mcsum_page_writes(struct mirror *m)
{
	return m->csum ? atomic_load(&m->csum->page_writes) : 0;
}
