/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * In-memory legs (tmpfs, ramfs) mapped: the reaper's inline reads and
 * writes (engine.c, piece_inline) are a memcpy from or to a MAP_SHARED
 * mapping of the leg instead of preadv2/pwritev2.  Measured on one thread,
 * 1 GiB tmpfs file, random 4 KiB: pwritev2 1.66 us, memcpy 0.59 us (1.26
 * on the first touch of a page), preadv2 1.22 us, memcpy 0.45 us; the
 * system call's page-cache lookup, folio lock and the leg inode's rwsem
 * (two loops writing one leg contend on it) are gone.
 *
 * Invariants:
 *   - dev->map covers [0, dev->map_len), map_len the file's size at open;
 *     it is set before the device is used and unmapped by dmio_dev_close,
 *     after the last I/O.  A piece that reaches past map_len (a file grown
 *     since, dmio_dev_refresh_size) uses the system call.
 *   - The mapping is only a faster way to do what the system call does.  A
 *     copy that faults (SIGBUS: tmpfs full on a hole, a memory cgroup
 *     limit, a file truncated behind us) is abandoned and the piece is
 *     redone with the system call, which returns the real result (ENOSPC,
 *     a short read, ...), exactly as without the mapping.  Redoing it is
 *     harmless: a read overwrites the bytes the copy had put in the
 *     buffer, a write writes them all again.
 *   - Holes: a read fault on a tmpfs hole allocates a page (shmem_fault,
 *     SGP_CACHE), where preadv2 returns zeroes and allocates nothing.  So a
 *     read uses the mapping only where every page is known to exist:
 *     dev->map_present has a bit per 4 KiB page, set by the lseek(SEEK_DATA)
 *     scan at open (tmpfs; ramfs has no holes for lseek: none there) and
 *     by every write piece when it is issued (a write allocates its pages,
 *     through the mapping or through io_uring), cleared by every fallocate
 *     piece (a discard punches holes) before it is issued.  The bits are a
 *     hint, never a correctness matter: a stale bit (a write that failed,
 *     a hole punched behind our back) costs at most a page of memory that
 *     a read allocated in a hole, and reads zeroes; a missing one costs a
 *     system call.
 *
 * The guard: one per thread (thread-local), armed around a copy with the
 * mapped range [lo, hi).  The SIGBUS handler, installed once (the first
 * mapped device), jumps back out of a copy when the fault's address is in
 * the faulting thread's armed range; any other SIGBUS gets the action there
 * was before ours (by default a crash with a core), so a real bug still
 * crashes.  SA_NODEFER: SIGBUS stays unblocked after the jump, whose
 * sigsetjmp does not save the mask (no system call per copy); the jump's
 * landing unblocks it anyway, for handlers wrapped by a sanitizer.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "dmio_i.h"

#define MAP_PAGE_SHIFT 12
#define MAP_WORD_BITS 64u

/* The most legs one copy writes at once (dmio_map_fan). */
#define MAP_FAN_MAX 8u

struct map_guard {
	sigjmp_buf env;
	unsigned n;             /* the armed copy's mapped ranges; 0: none */
	uintptr_t lo[MAP_FAN_MAX], hi[MAP_FAN_MAX];
};

static __thread struct map_guard map_guard;
static struct sigaction map_old_action;
static pthread_once_t map_handler_once = PTHREAD_ONCE_INIT;
static bool map_handler_ok;

static void map_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct map_guard *g = &map_guard;
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uc;
	for (unsigned i = 0; si->si_code > 0 && i < g->n; i++) {
		if (a >= g->lo[i] && a < g->hi[i]) {
			g->n = 0;
			siglongjmp(g->env, 1);
		}
	}
	/* Not ours: the action there was before, on the fault again (it
	 * repeats when we return) or raised again for a sent signal. */
	sigaction(SIGBUS, &map_old_action, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void map_install_handler(void)
{
	struct sigaction sa = { 0 };

	sa.sa_sigaction = map_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	map_handler_ok = sigaction(SIGBUS, &sa, &map_old_action) == 0;
}

static void present_set(struct dmio_dev *dev, uint64_t off, uint64_t len, bool on)
{
	uint64_t first = off >> MAP_PAGE_SHIFT, last = (off + len - 1) >> MAP_PAGE_SHIFT;

	for (uint64_t pg = first; pg <= last; pg++) {
		_Atomic uint64_t *w = &dev->map_present[pg / MAP_WORD_BITS];
		uint64_t bit = 1ull << (pg % MAP_WORD_BITS);
		uint64_t cur = atomic_load_explicit(w, memory_order_relaxed);

		if (on && !(cur & bit))
			atomic_fetch_or_explicit(w, bit, memory_order_relaxed);
		else if (!on && (cur & bit))
			atomic_fetch_and_explicit(w, ~bit, memory_order_relaxed);
	}
}

static bool present_all(const struct dmio_dev *dev, uint64_t off, uint64_t len)
{
	uint64_t first = off >> MAP_PAGE_SHIFT, last = (off + len - 1) >> MAP_PAGE_SHIFT;

	for (uint64_t pg = first; pg <= last; pg++) {
		uint64_t w = atomic_load_explicit(&dev->map_present[pg / MAP_WORD_BITS],
						  memory_order_relaxed);

		if (!(w & (1ull << (pg % MAP_WORD_BITS))))
			return false;
	}
	return true;
}

/* The pages the file holds now: its data extents. */
static void present_scan(struct dmio_dev *dev)
{
	off_t pos = 0, end = (off_t)dev->map_len;

	while (pos < end) {
		off_t data = lseek(dev->fd, pos, SEEK_DATA), hole;

		if (data < 0 || data >= end)
			break;
		hole = lseek(dev->fd, data, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		/* Only pages wholly inside the extent. */
		{
			uint64_t a = FM_ALIGN_UP((uint64_t)data, (uint64_t)FM_PAGE_SIZE);
			uint64_t b = (uint64_t)hole & ~(uint64_t)(FM_PAGE_SIZE - 1);

			if ((off_t)hole == end)
				b = (uint64_t)hole;
			if (b > a)
				present_set(dev, a, b - a, true);
		}
		pos = hole;
	}
}

void dmio_map_open(struct dmio_dev *dev)
{
	uint64_t pages, words;
	struct statfs sfs;
	void *m;

	if (!dev->in_memory || dev->fd < 0 || dev->size == 0 || dev->size > (uint64_t)SIZE_MAX)
		return;
	pthread_once(&map_handler_once, map_install_handler);
	if (!map_handler_ok)
		return;
	pages = (dev->size + FM_PAGE_SIZE - 1) >> MAP_PAGE_SHIFT;
	words = (pages + MAP_WORD_BITS - 1) / MAP_WORD_BITS;
	dev->map_present = calloc(words, sizeof(*dev->map_present));
	if (!dev->map_present)
		return;
	m = mmap(NULL, (size_t)dev->size, PROT_READ | (dev->rdonly ? 0 : PROT_WRITE), MAP_SHARED,
		 dev->fd, 0);
	if (m == MAP_FAILED) {
		fm_debug("dmio: %s: mmap failed, system calls then: %s", dev->name, strerror(errno));
		free(dev->map_present);
		dev->map_present = NULL;
		return;
	}
	/* The leg's pages are the leg's, not ours: a daemon that called
	 * mlockall(MCL_FUTURE) would lock every one it touches, keeping up to
	 * the leg's size of tmpfs out of swap, which it was not before. */
	munlock(m, (size_t)dev->size);
	dev->map = m;
	dev->map_len = dev->size;
	/* ramfs has no holes for lseek: its whole file is "data". */
	if (fstatfs(dev->fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC)
		present_scan(dev);
}

/*
 * A write's first destination line in each mapped leg, prefetched for
 * writing as the request enters dmio() (request.c), before dmio builds
 * and queues its pieces.  A random 4 KiB write into a leg of 1 GiB of
 * tmpfs misses the TLB and the cache on its first access; in the copy that
 * is map_pretouch()'s load, which waits for it, one leg after the other
 * (fio 4k QD32 randwrite, 2 tmpfs legs, /dev/fuse: that load was 14% of
 * the daemon's samples, the most of any instruction).  The pre-touch then
 * finds the line (and the page's translation) there.  It runs little
 * ahead here: a prefetch that misses the TLB holds up retirement until
 * its page walk ends (perf: the samples moved to the instruction after
 * it), and since dmio_map_fan() serves 4 KiB writes (the legs' pre-touch
 * loads back to back) the gain is small: CPU per write lower in 8 of 10
 * pairs, 4.86 -> 4.81 us (doc/DESIGN.md).  A prefetch never faults: a
 * page not mapped yet is mapped by the pre-touch.
 */
void dmio_map_prefetch(const struct dmio_dev *dev, uint64_t off)
{
	if (dev->map && off < dev->map_len)
		__builtin_prefetch(dev->map + off, 1, 3);
}

void dmio_dev_prefetch_write(const struct dmio_dev *dev, uint64_t offset)
{
	dmio_map_prefetch(dev, offset);
}

void dmio_dev_prefetch_read(const struct dmio_dev *dev, uint64_t offset)
{
	if (dev->map && offset < dev->map_len)
		__builtin_prefetch(dev->map + offset, 0, 3);
}

int dmio_dev_map_read(struct dmio_dev *dev, uint64_t offset, size_t len, const void **ret_ptr)
{
	if (!dev->map || atomic_load_explicit(&dev->fault, memory_order_acquire))
		return -EOPNOTSUPP;
	if (len == 0 || offset > dev->size || len > dev->size - offset)
		return -EINVAL;
	if (offset >= dev->map_len || len > dev->map_len - offset || !present_all(dev, offset, len))
		return -EAGAIN;
	*ret_ptr = dev->map + offset;
	return 0;
}

void dmio_dev_map_forget(struct dmio_dev *dev)
{
	if (dev->map)
		present_set(dev, 0, dev->map_len, false);
}

void dmio_map_close(struct dmio_dev *dev)
{
	if (dev->map)
		munmap(dev->map, (size_t)dev->map_len);
	dev->map = NULL;
	free(dev->map_present);
	dev->map_present = NULL;
}

void dmio_map_note(struct dmio_dev *dev, bool written, uint64_t off, uint64_t len)
{
	if (!dev->map || len == 0 || off >= dev->map_len)
		return;
	if (len > dev->map_len - off)
		len = dev->map_len - off;
	present_set(dev, off, len, written);
}

/*
 * A write of MAP_STREAM_MIN bytes or more is copied into the leg with
 * non-temporal (streaming) stores: each destination line is written
 * without being read first (a plain store reads the line for ownership)
 * and without evicting what the caches hold (the source, which the next
 * leg's copy reads again; the next request's buffer).  glibc's memcpy
 * streams only above glibc.cpu.x86_non_temporal_threshold (99 MiB on the
 * test VM; below, rep movsb).  One thread, 1 MiB from a hot buffer to 3
 * tmpfs files of 1 GiB mapped and populated, random offsets, load ~0.5:
 * 107-122 us per leg and MiB by memcpy, 53-56 with AVX2 streaming stores,
 * 57-60 with SSE2's, 52-55 with AVX-512's; one load stored to all 3 legs
 * 48-50 (done so since for a loop's large writes: dmio_map_fan).  16 KiB:
 * 4.1 -> 1.7 us per leg copy; 4 KiB: 0.33 either way on that one thread,
 * but in the whole system streaming wins there too (fio 4k QD32 randwrite
 * on 2 tmpfs legs: the plain stores' reads for ownership and evictions
 * cost the kernel's and fio's copies as well): FUSE over io_uring, daemon
 * user CPU per write 2.20 -> 1.92 us (median, 4 of 4 pairs), /dev/fuse
 * daemon CPU per write lower in 4 of 6 pairs (5.25 -> 5.11 us).  Below
 * 4 KiB, memcpy.  Counted in streamed_ios.  The streaming stores are
 * weakly ordered: an sfence after the copy makes them visible before
 * anything the thread does next (the piece's completion), as a plain
 * store would be.
 */
#define MAP_STREAM_MIN 4096u

#if defined(__x86_64__)
/* @n bytes to @d, which is 64-byte aligned, in 128-byte strides; the rest
 * (under 128 bytes) is left to the caller. */
static void map_stream_sse2(uint8_t *d, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i + 128 <= n; i += 128) {
		const __m128i *src = (const __m128i *)(const void *)(s + i);
		__m128i *dst = (__m128i *)(void *)(d + i);
		__m128i a = _mm_loadu_si128(src), b = _mm_loadu_si128(src + 1);
		__m128i c = _mm_loadu_si128(src + 2), e = _mm_loadu_si128(src + 3);
		__m128i f = _mm_loadu_si128(src + 4), g = _mm_loadu_si128(src + 5);
		__m128i h = _mm_loadu_si128(src + 6), k = _mm_loadu_si128(src + 7);

		_mm_stream_si128(dst, a);
		_mm_stream_si128(dst + 1, b);
		_mm_stream_si128(dst + 2, c);
		_mm_stream_si128(dst + 3, e);
		_mm_stream_si128(dst + 4, f);
		_mm_stream_si128(dst + 5, g);
		_mm_stream_si128(dst + 6, h);
		_mm_stream_si128(dst + 7, k);
	}
}

/*
 * The one AVX2 streaming loop: @n bytes to each of the @nd destinations
 * d[k] (64-byte aligned), each 128 bytes of @s loaded once and stored to
 * every destination, in 128-byte strides; the rest (under 128 bytes) is
 * left to the caller.  Always inlined, so that its two instances below
 * are each specialised: with @nd the constant 1 (map_stream_avx2) the
 * loop over destinations folds away (objdump: the same loop as a copy
 * written for one destination).
 */
__attribute__((target("avx2"), always_inline)) static inline void
map_stream_avx2_to(uint8_t *const *d, unsigned nd, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i + 128 <= n; i += 128) {
		const __m256i *src = (const __m256i *)(const void *)(s + i);
		__m256i a = _mm256_loadu_si256(src), b = _mm256_loadu_si256(src + 1);
		__m256i c = _mm256_loadu_si256(src + 2), e = _mm256_loadu_si256(src + 3);

		for (unsigned k = 0; k < nd; k++) {
			__m256i *dst = (__m256i *)(void *)(d[k] + i);

			_mm256_stream_si256(dst, a);
			_mm256_stream_si256(dst + 1, b);
			_mm256_stream_si256(dst + 2, c);
			_mm256_stream_si256(dst + 3, e);
		}
	}
}

__attribute__((target("avx2"))) static void map_stream_avx2(uint8_t *d, const uint8_t *s, size_t n)
{
	map_stream_avx2_to(&d, 1, s, n);
}

__attribute__((target("avx2"))) static void map_fan_avx2(uint8_t **d, unsigned nd,
							  const uint8_t *s, size_t n)
{
	map_stream_avx2_to(d, nd, s, n);
}

/*
 * The one streamed copy of @n bytes of @s to each of the @nd destinations
 * d[k] (which share their alignment modulo 64), each then advanced by @n:
 * memcpy up to the first 64-byte boundary of the destinations, streaming
 * stores over the whole 128-byte strides after it (one pass for every
 * destination; more than one needs @avx2), memcpy for the rest.  Always
 * inlined: map_copy_iov() calls it with @nd 1, map_fan_iov() with the
 * legs of a fan copy.
 */
static inline __attribute__((always_inline)) void map_stream_to(uint8_t **d, unsigned nd,
								const uint8_t *s, size_t n,
								bool avx2)
{
	size_t head = (size_t)(-(uintptr_t)d[0] & 63), bulk;

	if (head > n)
		head = n;
	bulk = (n - head) & ~(size_t)127;
	for (unsigned k = 0; k < nd; k++) {
		memcpy(d[k], s, head);
		d[k] += head;
	}
	s += head;
	if (nd > 1)
		map_fan_avx2(d, nd, s, bulk);
	else if (avx2)
		map_stream_avx2(d[0], s, bulk);
	else
		map_stream_sse2(d[0], s, bulk);
	for (unsigned k = 0; k < nd; k++) {
		memcpy(d[k] + bulk, s + bulk, n - head - bulk);
		d[k] += n - head;
	}
}

static bool map_stream_avx2_ok(void)
{
	return __builtin_cpu_supports("avx2");
}

static void map_stream_fence(void)
{
	_mm_sfence();
}
#else
static inline void map_stream_to(uint8_t **d, unsigned nd, const uint8_t *s, size_t n, bool avx2)
{
	(void)avx2;
	for (unsigned k = 0; k < nd; k++) {
		memcpy(d[k], s, n);
		d[k] += n;
	}
}

static bool map_stream_avx2_ok(void)
{
	return false;
}

static void map_stream_fence(void)
{
}
#endif

/*
 * Before a write, read a byte of each page: a read fault maps the page and
 * its neighbours already in the page cache (the kernel's fault-around, 16
 * pages), writable (a shared tmpfs mapping has no dirty tracking), where a
 * write fault maps its one page.  Random 4 KiB writes on a fresh mapping of
 * 1 GiB of tmpfs (one thread): 1.46-1.66 -> 0.89-1.09 us each.
 */
static void map_pretouch(const uint8_t *m, uint64_t len)
{
	const uint8_t *end = m + len;

	for (const uint8_t *a = m; a < end;
	     a = (const uint8_t *)(((uintptr_t)a | (FM_PAGE_SIZE - 1)) + 1))
		(void)*(const volatile uint8_t *)a;
}

/*
 * A streamed write of @len bytes from @iov to each of the @nd mapped
 * destinations d[k] (one leg's copy, or a fan copy's legs): every
 * destination pre-touched before the first store (their misses overlap),
 * each iovec by map_stream_to(), one fence after the last store.  Always
 * inlined into its two callers, as map_stream_to().
 */
static inline __attribute__((always_inline)) void map_stream_iov(uint8_t **d, unsigned nd,
								 uint64_t len,
								 const struct iovec *iov,
								 unsigned iovcnt, bool avx2)
{
	for (unsigned k = 0; k < nd; k++)
		map_pretouch(d[k], len);
	for (unsigned i = 0; i < iovcnt; i++)
		map_stream_to(d, nd, iov[i].iov_base, iov[i].iov_len, avx2);
	map_stream_fence();
}

static __attribute__((noinline)) void map_copy_iov(uint8_t *m, uint64_t len, bool write,
						    const struct iovec *iov, unsigned iovcnt)
{
	if (write && len >= MAP_STREAM_MIN) {
		map_stream_iov(&m, 1, len, iov, iovcnt, map_stream_avx2_ok());
		return;
	}
	if (write)
		map_pretouch(m, len);
	for (unsigned i = 0; i < iovcnt; i++) {
		if (write)
			memcpy(m, iov[i].iov_base, iov[i].iov_len);
		else
			memcpy(iov[i].iov_base, m, iov[i].iov_len);
		m += iov[i].iov_len;
	}
}

/*
 * Back from map_sigbus()'s jump out of a guarded copy (map_copy,
 * map_fan_copy).  SA_NODEFER kept SIGBUS unblocked, unless a wrapper of
 * our handler blocked it (ThreadSanitizer's does): the next fault on a
 * blocked SIGBUS would kill us.  The streaming stores made before the
 * fault go out before the redo.
 */
static void map_guard_jumped(void)
{
	sigset_t bus;

	map_stream_fence();
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
}

/*
 * The copy, guarded.  Nothing changes between sigsetjmp and the copy's end
 * but the guard, and only the return value is used after the jump back.
 */
static __attribute__((noinline)) bool map_copy(uint8_t *m, uint64_t len, bool write,
					       const struct iovec *iov, unsigned iovcnt)
{
	struct map_guard *g = &map_guard;

	if (sigsetjmp(g->env, 0)) {
		map_guard_jumped();
		return false;
	}
	g->lo[0] = (uintptr_t)m;
	g->hi[0] = (uintptr_t)m + len;
	atomic_signal_fence(memory_order_seq_cst);
	g->n = 1;
	atomic_signal_fence(memory_order_seq_cst);
	map_copy_iov(m, len, write, iov, iovcnt);
	atomic_signal_fence(memory_order_seq_cst);
	g->n = 0;
	return true;
}

bool dmio_map_rw(struct dmio_piece *p, ssize_t *ret_n)
{
	struct dmio_dev *dev = p->dev;
	const struct iovec *iov = &p->iov[p->iov_first];
	bool write = p->kind == DMIO_PIECE_WRITE;

	if (!dev->map || p->len == 0 || p->off >= dev->map_len || p->len > dev->map_len - p->off)
		return false;
	if (write ? dev->rdonly || (p->rw_flags & ~RWF_DSYNC) : !present_all(dev, p->off, p->len))
		return false;
	if (!map_copy(dev->map + p->off, p->len, write, iov, p->iovcnt)) {
		DMIO_STAT_ADD(map_faults, 1);
		return false;
	}
	/* RWF_DSYNC: tmpfs and ramfs have nothing to sync (noop_fsync). */
	DMIO_STAT_ADD(mapped_ios, 1);
	if (write && p->len >= MAP_STREAM_MIN)
		DMIO_STAT_ADD(streamed_ios, 1);
	*ret_n = (ssize_t)p->len;
	return true;
}

/*
 * One source pass for the copies of one write into several mapped legs
 * (a mirror write: every leg's piece has the same iovecs), on an event
 * loop (engine.c, fan_pieces): each 128 bytes of the source are loaded
 * once and stored to every leg, where a copy per leg reads the whole
 * source again for each (from L2 at best, 1 MiB for every leg), and the
 * pre-touch of every leg is done before the first store (their misses
 * overlap) and one fence ends the streaming stores of all.  Writes of
 * MAP_STREAM_MIN (4 KiB) or more, AVX2 only, destinations that share
 * their alignment modulo 64 (any sector offsets do): map_fan_ok() decides;
 * anything else is copied leg by leg.
 * The one-thread microbenchmark said 48-50 against 53-56 us per leg and
 * MiB; in the daemon (fio 1M QD8 write, /dev/fuse, tmpfs legs) daemon CPU
 * per MiB on 3 legs 344-357 -> 323-342 us, on 2 legs 290-333 -> 273-286
 * (doc/DESIGN.md, "Engine details").
 */
#if defined(__x86_64__)
static __attribute__((noinline)) void map_fan_iov(uint8_t **d, unsigned nd, uint64_t len,
						  const struct iovec *iov, unsigned iovcnt)
{
	if (nd < 2)
		__builtin_unreachable(); /* dmio_map_fan(): two legs or more */
	map_stream_iov(d, nd, len, iov, iovcnt, true);
}

/*
 * Whether @q may be copied in one pass with @p (see dmio_map_fan): the one
 * place that decides it.  A write of MAP_STREAM_MIN or more (a fan copy
 * streams; 4 KiB writes gain too: both legs' pre-touch misses overlap,
 * and one fence and one drain of the streaming stores serve both legs:
 * fio 4k QD32 randwrite on FUSE over io_uring, 2 tmpfs legs, CPU per
 * write 4.7-5.8 -> 4.2-4.7 us, lower in 7 of 7 pairs; DESIGN.md "Engine
 * details"), that dmio_map_rw() could copy (mapped, in range, writable,
 * no flag but RWF_DSYNC), into a leg without fault injection (whose faults
 * piece_inline decides piece by piece), not copied yet, and (@q other
 * than @p) of the same request, writing the same memory, at the same
 * alignment modulo 64 (any sector offsets are).
 */
static bool map_fan_ok(const struct dmio_piece *p, const struct dmio_piece *q)
{
	const struct dmio_dev *dev = q->dev;

	if (q->kind != DMIO_PIECE_WRITE || q->len < MAP_STREAM_MIN || q->fanned || !dev->map ||
	    dev->rdonly || q->off >= dev->map_len || q->len > dev->map_len - q->off ||
	    (q->rw_flags & ~RWF_DSYNC) || atomic_load_explicit(&dev->fault, memory_order_relaxed))
		return false;
	if (q == p)
		return true;
	if (q->io != p->io || q->len != p->len || q->iovcnt != p->iovcnt ||
	    ((uintptr_t)(dev->map + q->off) & 63) != ((uintptr_t)(p->dev->map + p->off) & 63))
		return false;
	for (unsigned i = 0; i < q->iovcnt; i++) {
		const struct iovec *a = &p->iov[p->iov_first + i], *b = &q->iov[q->iov_first + i];

		if (a->iov_base != b->iov_base || a->iov_len != b->iov_len)
			return false;
	}
	return true;
}

/* The fan copy, guarded as map_copy is: a fault in any leg's range
 * abandons it all; each leg's piece is then copied alone (by map_copy,
 * which finds the fault again and leaves that one to the system call). */
static __attribute__((noinline)) bool map_fan_copy(uint8_t **d, unsigned nd, uint64_t len,
						   const struct iovec *iov, unsigned iovcnt)
{
	struct map_guard *g = &map_guard;

	if (sigsetjmp(g->env, 0)) {
		map_guard_jumped();
		return false;
	}
	for (unsigned k = 0; k < nd; k++) {
		g->lo[k] = (uintptr_t)d[k];
		g->hi[k] = (uintptr_t)d[k] + len;
	}
	atomic_signal_fence(memory_order_seq_cst);
	g->n = nd;
	atomic_signal_fence(memory_order_seq_cst);
	map_fan_iov(d, nd, len, iov, iovcnt);
	atomic_signal_fence(memory_order_seq_cst);
	g->n = 0;
	return true;
}

unsigned dmio_map_fan(struct dmio_piece *p)
{
	struct dmio_piece *ps[MAP_FAN_MAX];
	uint8_t *d[MAP_FAN_MAX];
	unsigned nd = 0;

	if (!map_fan_ok(p, p) || !__builtin_cpu_supports("avx2"))
		return 0;
	for (struct dmio_piece *q = p; q && nd < MAP_FAN_MAX; q = q->next) {
		if (q != p && !map_fan_ok(p, q))
			continue;
		ps[nd] = q;
		d[nd] = q->dev->map + q->off;
		nd++;
	}
	if (nd < 2 || !map_fan_copy(d, nd, p->len, &p->iov[p->iov_first], p->iovcnt))
		return 0;
	for (unsigned i = 0; i < nd; i++)
		ps[i]->fanned = true;
	DMIO_STAT_ADD(mapped_ios, nd);
	DMIO_STAT_ADD(streamed_ios, nd);
	DMIO_STAT_ADD(fanned_ios, nd);
	return nd;
}
#else
unsigned dmio_map_fan(struct dmio_piece *p)
{
	(void)p;
	return 0;
}
#endif
