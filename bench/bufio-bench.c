/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bufio-bench: the block cache against the alternatives measured in the
 * same run (see bench/README.md).
 *
 *   hits       bufio_read + bufio_release of cached 4 KiB blocks, 1 and 2
 *              threads (each thread on its own blocks)
 *   misses     bufio_read of uncached blocks (one synchronous read each)
 *              versus dmio_sync_vm reads of the same blocks
 *   writeback  1 MiB of contiguous dirty 4 KiB buffers written by
 *              bufio_write_dirty_range (one vectored request) versus one
 *              dmio write of 1 MiB from one buffer; and with a flush:
 *              bufio_write_dirty_buffers versus dmio write + flush
 *
 * Usage: bufio-bench [-f FILE] [-t SECONDS]
 *   FILE (default: a temporary file in $TMPDIR or /tmp) is overwritten.
 *
 * Threading: the main thread drives everything; hit threads only call
 * bufio_read/bufio_release on a client nobody destroys while they run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusemirror/bufio.h"
#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

#define BS 4096u
#define FILE_BYTES (64ull << 20)
#define HOT_BLOCKS 1024u
#define MISS_BLOCKS 4096u
#define WB_BLOCKS 256u
#define WB_REPS 41

static double seconds = 1.0;
static struct bufio_client *cl;
static atomic_bool go, stop;

static void die(const char *what, int r)
{
	fprintf(stderr, "bufio-bench: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

struct hit_arg {
	uint64_t first;
	uint64_t ops;
	uint64_t cpu_ns;        /* the thread's own CPU time */
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *hit_thread(void *arg)
{
	struct hit_arg *a = arg;
	uint64_t seed = a->first * 2654435761u + 1, ops = 0;
	struct bufio_buffer *b;

	uint64_t cpu0;

	while (!atomic_load_explicit(&go, memory_order_acquire))
		;
	cpu0 = thread_cpu_ns();
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		for (int i = 0; i < 256; i++) {
			uint64_t blk = a->first + (xorshift(&seed) & (HOT_BLOCKS - 1));

			if (bufio_read(cl, blk, &b))
				die("bufio_read (hit)", EIO);
			bufio_release(b);
		}
		ops += 256;
	}
	a->ops = ops;
	a->cpu_ns = thread_cpu_ns() - cpu0;
	return NULL;
}

/* Million hits per second with @n threads; *ret_per_cpu: per CPU-second
 * of the threads (what the threads cost each other, whatever the load). */
static double run_hits(unsigned n, double *ret_per_cpu)
{
	pthread_t t[2];
	struct hit_arg a[2];
	uint64_t t0, t1, total = 0, cpu = 0;

	atomic_store(&go, false);
	atomic_store(&stop, false);
	for (unsigned i = 0; i < n; i++) {
		a[i] = (struct hit_arg){ .first = (uint64_t)i * HOT_BLOCKS };
		pthread_create(&t[i], NULL, hit_thread, &a[i]);
	}
	t0 = fm_now_ns();
	atomic_store_explicit(&go, true, memory_order_release);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&stop, true);
	for (unsigned i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		total += a[i].ops;
		cpu += a[i].cpu_ns;
	}
	t1 = fm_now_ns();
	*ret_per_cpu = (double)total / ((double)cpu / 1e9) / 1e6;
	return (double)total / ((double)(t1 - t0) / 1e9) / 1e6;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static uint64_t median(uint64_t *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	char tmpl[4096];
	struct dmio_dev *dev;
	struct fm_bdev bdev;
	struct bufio_buffer *b;
	uint64_t *perm, seed = 42, t0, us_bufio, us_dmio;
	uint64_t wb_b[WB_REPS], wb_d[WB_REPS], wf_b[WB_REPS], wf_d[WB_REPS], wb_v[WB_REPS];
	struct iovec *vec = calloc(WB_BLOCKS, sizeof(*vec));
	double hit1, hit2, cpu1, cpu2, miss_b, miss_d;
	void *buf;
	int opt, r, fd;

	while ((opt = getopt(argc, argv, "f:t:")) != -1) {
		if (opt == 'f')
			path = optarg;
		else if (opt == 't')
			seconds = atof(optarg);
		else {
			fprintf(stderr, "usage: bufio-bench [-f FILE] [-t SECONDS]\n");
			return 2;
		}
	}
	if (!path) {
		const char *dir = getenv("TMPDIR");

		snprintf(tmpl, sizeof(tmpl), "%s/bufio-bench-XXXXXX", dir ? dir : "/tmp");
		fd = mkstemp(tmpl);
		if (fd < 0)
			die("mkstemp", errno);
		close(fd);
		path = tmpl;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path, errno);
	/* Written once: reads of holes or of fallocated (unwritten) extents
	 * never reach the device, and a first write into one converts it. */
	{
		char *chunk = malloc(1u << 20);

		memset(chunk, 0xa5, 1u << 20);
		for (uint64_t off = 0; off < FILE_BYTES; off += 1u << 20)
			if (pwrite(fd, chunk, 1u << 20, (off_t)off) != (ssize_t)(1u << 20))
				die("pwrite", errno);
		if (fsync(fd))
			die("fsync", errno);
		free(chunk);
	}
	close(fd);

	r = dmio_dev_open(path, 0, &dev);
	if (r < 0)
		die("dmio_dev_open", r);
	r = bufio_dmio_bdev_create(dev, NULL, &bdev);
	if (r < 0)
		die("bdev", r);
	r = bufio_client_create(&bdev, BS, 1, 0, NULL, NULL, &cl);
	if (r < 0)
		die("bufio_client_create", r);
	if (posix_memalign(&buf, 4096, 1u << 20))
		die("posix_memalign", ENOMEM);
	memset(buf, 0x5a, 1u << 20);

	/* Hits */
	for (uint64_t i = 0; i < 2 * HOT_BLOCKS; i++) {
		if ((r = bufio_read(cl, i, &b)))
			die("bufio_read", r);
		bufio_release(b);
	}
	hit1 = run_hits(1, &cpu1);
	hit2 = run_hits(2, &cpu2);

	/* Misses: the same random blocks, once through bufio, once raw. */
	perm = malloc(MISS_BLOCKS * sizeof(*perm));
	for (unsigned i = 0; i < MISS_BLOCKS; i++)
		perm[i] = 4 * HOT_BLOCKS + (xorshift(&seed) % (FILE_BYTES / BS - 4 * HOT_BLOCKS));
	t0 = fm_now_ns();
	for (unsigned i = 0; i < MISS_BLOCKS; i++) {
		if ((r = bufio_read(cl, perm[i], &b)))
			die("bufio_read (miss)", r);
		bufio_release(b);
		bufio_forget(cl, perm[i]); /* a repeat in perm is a miss too */
	}
	us_bufio = (fm_now_ns() - t0) / 1000;
	t0 = fm_now_ns();
	for (unsigned i = 0; i < MISS_BLOCKS; i++) {
		struct dmio_region where = { dev, perm[i] * (BS / 512), BS / 512 };

		if ((r = dmio_sync_vm(1, &where, DMIO_OP_READ, buf, NULL)))
			die("dmio read", r);
	}
	us_dmio = (fm_now_ns() - t0) / 1000;
	miss_b = MISS_BLOCKS / (us_bufio / 1e6) / 1e3;
	miss_d = MISS_BLOCKS / (us_dmio / 1e6) / 1e3;

	/* Writeback of 1 MiB of contiguous dirty buffers. */
	for (unsigned rep = 0; rep < WB_REPS; rep++) {
		uint64_t base = 8 * HOT_BLOCKS;
		struct dmio_region where = { dev, (base + WB_BLOCKS) * (BS / 512),
					     (WB_BLOCKS * BS) / 512 };
		struct dmio_request flush = { .op = DMIO_OP_FLUSH };

		for (int with_flush = 0; with_flush < 2; with_flush++) {
			for (unsigned i = 0; i < WB_BLOCKS; i++) {
				if ((r = bufio_new(cl, base + i, &b)))
					die("bufio_new", r);
				memset(bufio_begin_modify(b), (int)(rep + i), BS);
				bufio_mark_buffer_dirty(b);
				bufio_release(b);
			}
			t0 = fm_now_ns();
			if (with_flush)
				r = bufio_write_dirty_buffers(cl);
			else
				r = bufio_write_dirty_range(cl, base, WB_BLOCKS, 0);
			if (r)
				die("bufio writeback", r);
			(with_flush ? wf_b : wb_b)[rep] = fm_now_ns() - t0;

			if (!with_flush) {
				/* The same 256 buffers, raw: the cost of the
				 * 256-segment request itself. */
				for (unsigned i = 0; i < WB_BLOCKS; i++) {
					if ((r = bufio_get(cl, base + i, &b)))
						die("bufio_get", r);
					vec[i] = (struct iovec){ bufio_get_block_data(b), BS };
					bufio_release(b); /* clean and cached: stays */
				}
				t0 = fm_now_ns();
				if ((r = dmio_sync_bvec(1, &where, DMIO_OP_WRITE, vec, WB_BLOCKS,
							NULL)))
					die("dmio bvec write", r);
				wb_v[rep] = fm_now_ns() - t0;
			}
			t0 = fm_now_ns();
			if ((r = dmio_sync_vm(1, &where, DMIO_OP_WRITE, buf, NULL)))
				die("dmio write", r);
			if (with_flush && (r = dmio(&flush, 1, &where, NULL)))
				die("dmio flush", r);
			(with_flush ? wf_d : wb_d)[rep] = fm_now_ns() - t0;
		}
	}

	printf("bufio-bench: %s (%s), block %u B, %.1f s per hit run\n", path,
	       dmio_dev_is_direct(dev) ? "O_DIRECT" : "buffered", BS, seconds);
	printf("%-44s %14s %14s %8s\n", "test", "bufio", "reference", "ratio");
	printf("%-44s %11.2f M/s %14s %8s\n", "hits, 1 thread (read+release)", hit1, "-", "-");
	printf("%-44s %11.2f M/s %11.2f M/s %7.2fx\n", "hits, 2 threads vs 1 thread", hit2, hit1,
	       hit2 / hit1);
	printf("%-44s %11.2f M/s %11.2f M/s %7.2fx\n", "  per thread-CPU-second: 2 threads vs 1",
	       cpu2, cpu1, cpu2 / cpu1);
	printf("%-44s %14s %14s %7.2fx\n", "  => 2-core scaling if both cores are free", "-", "-",
	       2 * cpu2 / cpu1);
	printf("%-44s %11.1f k/s %11.1f k/s %7.2fx\n", "misses 4 KiB QD1 vs dmio_sync_vm reads",
	       miss_b, miss_d, miss_b / miss_d);
	us_bufio = median(wb_b, WB_REPS) / 1000;
	us_dmio = median(wb_d, WB_REPS) / 1000;
	printf("%-44s %12lu us %12lu us %7.2fx\n", "writeback 256x4 KiB vs one 1 MiB dmio write",
	       (unsigned long)us_bufio, (unsigned long)us_dmio,
	       (double)us_dmio / (double)(us_bufio ? us_bufio : 1));
	us_dmio = median(wb_v, WB_REPS) / 1000;
	printf("%-44s %12s %12lu us %7.2fx\n", "  (raw dmio bvec write of the same 256 bufs)",
	       "-", (unsigned long)us_dmio, (double)median(wb_d, WB_REPS) / 1000 /
	       (double)(us_dmio ? us_dmio : 1));
	us_bufio = median(wf_b, WB_REPS) / 1000;
	us_dmio = median(wf_d, WB_REPS) / 1000;
	printf("%-44s %12lu us %12lu us %7.2fx\n", "  ... + flush (write_dirty_buffers)",
	       (unsigned long)us_bufio, (unsigned long)us_dmio,
	       (double)us_dmio / (double)(us_bufio ? us_bufio : 1));
	printf("(writeback ratio = reference time / bufio time: >= 1 means bufio is as fast)\n");

	bufio_client_destroy(cl);
	bufio_dmio_bdev_destroy(&bdev);
	dmio_dev_close(dev);
	dmio_engine_shutdown();
	free(buf);
	free(perm);
	free(vec);
	if (path == tmpl)
		unlink(tmpl);
	return 0;
}
