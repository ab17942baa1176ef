// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * fm_old_kernel: an LD_PRELOAD library that shows the daemon a kernel
 * without IORING_OP_READ_MULTISHOT (Linux before 6.7, such as Debian 12's
 * 6.1), so that an integration test runs the event loop's fallback from
 * reading /dev/fuse on its ring to polling it (src/front/front.c,
 * loop_rd_init() and loop_rd_done()) on a kernel that has the opcode.
 *
 * Environment (read once, in the process that loads it):
 *   FM_OLD_KERNEL        "probe": io_uring_get_probe_ring() answers that
 *                        the opcode is not supported (what such a kernel's
 *                        probe says);
 *                        "einval": the probe tells the truth, but every
 *                        READ_MULTISHOT submitted through io_uring_submit*()
 *                        has its opcode replaced by one past the kernel's
 *                        last, which the kernel fails with EINVAL in the
 *                        request's completion (what such a kernel does
 *                        with opcode 49).
 *   FM_OLD_KERNEL_FILE   a file it creates (16 bytes, mapped shared): two
 *                        little-endian u64, the probes answered "no" and
 *                        the READs refused so far.  Read them with
 *                        `od -An -tu8 -j0 -N8 FILE` and `-j8`.
 * A forked child keeps counting into the same file (the daemon forks from
 * the mount command).
 */

#include <dlfcn.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define OP_READ_MULTISHOT 49    /* IORING_OP_READ_MULTISHOT (uapi, 6.7) */
#define OP_REFUSED 255          /* past every kernel's IORING_OP_LAST */

enum { MODE_OFF, MODE_PROBE, MODE_EINVAL };

static int mode = -1;
static _Atomic uint64_t *counts;        /* [0] probes, [1] READs refused */
static _Atomic uint64_t no_counts[2];

static void setup(void)
{
	const char *m, *path;
	int fd;
	void *p;

	if (mode >= 0)
		return;
	counts = no_counts;
	m = getenv("FM_OLD_KERNEL");
	path = getenv("FM_OLD_KERNEL_FILE");
	if (path && (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) >= 0) {
		if (ftruncate(fd, 16) == 0 &&
		    (p = mmap(NULL, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) != MAP_FAILED)
			counts = p;
		close(fd);
	}
	if (m && strcmp(m, "probe") == 0)
		mode = MODE_PROBE;
	else if (m && strcmp(m, "einval") == 0)
		mode = MODE_EINVAL;
	else
		mode = MODE_OFF;
}

__attribute__((constructor)) static void fm_old_kernel_init(void)
{
	setup();
}

/* The library's own NAME, looked up once. */
#define REAL(name) \
	static __typeof__(name) *real_##name; \
	if (!real_##name) \
		real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

struct io_uring_probe *io_uring_get_probe_ring(struct io_uring *ring)
{
	struct io_uring_probe *p;

	REAL(io_uring_get_probe_ring);
	p = real_io_uring_get_probe_ring ? real_io_uring_get_probe_ring(ring) : NULL;
	if (p && mode == MODE_PROBE && p->last_op >= OP_READ_MULTISHOT) {
		p->ops[OP_READ_MULTISHOT].flags &= (uint16_t)~IO_URING_OP_SUPPORTED;
		atomic_fetch_add(&counts[0], 1);
	}
	return p;
}

/* The SQEs queued on the ring and not yet submitted (a ring of 64-byte
 * entries: the event loops'; the FUSE-over-io_uring queues' 128-byte
 * entries carry no READ and are left alone). */
static void refuse_reads(struct io_uring *ring)
{
	struct io_uring_sq *sq = &ring->sq;

	if (mode != MODE_EINVAL || (ring->flags & IORING_SETUP_SQE128))
		return;
	for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
		struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];

		if (sqe->opcode == OP_READ_MULTISHOT) {
			sqe->opcode = OP_REFUSED;
			atomic_fetch_add(&counts[1], 1);
		}
	}
}

int io_uring_submit(struct io_uring *ring)
{
	REAL(io_uring_submit);
	refuse_reads(ring);
	return real_io_uring_submit(ring);
}

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
	REAL(io_uring_submit_and_wait);
	refuse_reads(ring);
	return real_io_uring_submit_and_wait(ring, wait_nr);
}

int io_uring_submit_and_wait_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
				     unsigned wait_nr, struct __kernel_timespec *ts,
				     sigset_t *sigmask)
{
	REAL(io_uring_submit_and_wait_timeout);
	refuse_reads(ring);
	return real_io_uring_submit_and_wait_timeout(ring, cqe_ptr, wait_nr, ts, sigmask);
}
