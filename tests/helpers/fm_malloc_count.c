// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * fm_malloc_count: an LD_PRELOAD library that counts the heap allocations
 * made by the daemon's hot-path threads, so that an integration test can
 * prove "no allocation per request" (issue 10) and fail if one comes back.
 *
 * Environment (read once, in the process that loads it):
 *   FM_MALLOC_COUNT_FILE     a file it creates (8 bytes, mapped shared): a
 *                            little-endian u64, the number of allocation
 *                            calls (malloc, calloc, realloc, posix_memalign,
 *                            aligned_alloc, memalign, valloc) made so far by
 *                            the threads counted.  Read it with
 *                            `od -An -tu8 -N8 FILE`.
 *   FM_MALLOC_COUNT_THREADS  comma-separated thread name prefixes to count
 *                            (/proc/self/task/TID/comm, pthread_setname_np);
 *                            the entry "main" counts the process's first
 *                            thread whatever its name.
 *   FM_MALLOC_COUNT_SKIP     optional: an allocation called directly from
 *                            a shared object whose file name contains this
 *                            string is not counted (libfuse3: libfuse 3.14
 *                            callocs a struct fuse_req per request, which
 *                            the daemon cannot avoid through its API).
 *   FM_MALLOC_COUNT_BT       1: also print a backtrace of each counted
 *                            allocation to stderr (to find it).
 * A forked child keeps counting into the same file (the daemon forks from
 * the mount command); free() is not counted.
 *
 * Each call asks the kernel for the thread's name (PR_GET_NAME): slow, but
 * names are set after the thread starts, and this only runs in tests.
 */

#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic uint64_t *counter;
static char prefixes[256];
static char skip[64];
static bool count_main, backtraces;
static __thread bool inside;

__attribute__((constructor)) static void mc_init(void)
{
	const char *path = getenv("FM_MALLOC_COUNT_FILE");
	const char *threads = getenv("FM_MALLOC_COUNT_THREADS");
	const char *bt = getenv("FM_MALLOC_COUNT_BT");
	const char *sk = getenv("FM_MALLOC_COUNT_SKIP");
	void *p;
	int fd;

	if (!path || !threads)
		return;
	backtraces = bt && !strcmp(bt, "1");
	if (sk)
		snprintf(skip, sizeof(skip), "%s", sk);
	snprintf(prefixes, sizeof(prefixes), ",%s,", threads);
	count_main = strstr(prefixes, ",main,") != NULL;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) < 0) {
		perror("fm_malloc_count: FM_MALLOC_COUNT_FILE");
		_exit(99);
	}
	p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		perror("fm_malloc_count: mmap");
		_exit(99);
	}
	counter = p;
}

static bool hot_thread(void)
{
	char name[17] = "";
	const char *s = prefixes;

	if (count_main && gettid() == getpid())
		return true;
	if (prctl(PR_GET_NAME, name) < 0)
		return false;
	while ((s = strchr(s, ','))) {
		size_t n = strcspn(++s, ",");

		if (n && strncmp(s, "main", n) && !strncmp(name, s, n))
			return true;
	}
	return false;
}

/* Was the allocation called from the object FM_MALLOC_COUNT_SKIP names? */
static bool skipped(const void *caller)
{
	Dl_info info;

	return skip[0] && dladdr(caller, &info) && info.dli_fname &&
	       strstr(info.dli_fname, skip);
}

static void count_from(const void *caller)
{
	if (!counter || inside)
		return;
	inside = true;
	if (hot_thread() && !skipped(caller)) {
		atomic_fetch_add(counter, 1);
		if (backtraces) {
			void *frames[24];

			fputs("fm_malloc_count: allocation on a counted thread\n", stderr);
			backtrace_symbols_fd(frames, backtrace(frames, 24), STDERR_FILENO);
		}
	}
	inside = false;
}

#define count() count_from(__builtin_return_address(0))

void *malloc(size_t n)
{
	count();
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	count();
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	count();
	return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
	count();
	return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	count();
	return __libc_memalign(align, n);
}

void *valloc(size_t n)
{
	count();
	return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

int posix_memalign(void **ret, size_t align, size_t n)
{
	void *p;

	if (align < sizeof(void *) || (align & (align - 1)))
		return 22; /* EINVAL */
	count();
	p = __libc_memalign(align, n);
	if (!p && n)
		return 12; /* ENOMEM */
	*ret = p;
	return 0;
}
