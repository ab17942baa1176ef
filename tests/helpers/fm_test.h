/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared helpers for the fusemirror unit tests: a seeded PRNG, temporary
 * directories and files, byte comparison with useful messages, O_DIRECT
 * access to block devices, and loop devices that are always detached.
 *
 * Threading: the functions that assert (ck_assert*, ck_abort*) may only be
 * called from check's test thread (test bodies and fixtures), never from a
 * dmio completion callback or a helper thread: in CK_FORK=no mode a failed
 * assertion longjmps out of the test.  fm_rng_*, fm_test_first_diff() and
 * fm_test_is_zero() are pure and may be called from any thread.
 *
 * Fixtures and fork mode: in CK_FORK mode (the default) a failed assertion
 * ends the test's child process at once, so a checked teardown does not run
 * for it.  Resources that must outlive a failure (temporary directories,
 * loop devices) therefore belong in unchecked fixtures, which run in the
 * parent process; checked fixtures make fresh files inside them.
 *
 * Every function here is static inline: a test includes only this header.
 */
#ifndef FM_TEST_H
#define FM_TEST_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

/*----------------------------------------------------------------*/
/* Seeded PRNG (splitmix64): reproducible data, cheap enough for MiBs */

struct fm_rng {
	uint64_t state;
};

static inline void fm_rng_seed(struct fm_rng *rng, uint64_t seed)
{
	rng->state = seed;
}

static inline uint64_t fm_rng_next(struct fm_rng *rng)
{
	uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform-enough integer in [lo, hi] (inclusive; hi - lo < 2^64 - 1). */
static inline uint64_t fm_rng_between(struct fm_rng *rng, uint64_t lo, uint64_t hi)
{
	return lo + fm_rng_next(rng) % (hi - lo + 1);
}

static inline void fm_rng_fill(struct fm_rng *rng, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len >= 8) {
		uint64_t v = fm_rng_next(rng);

		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = fm_rng_next(rng);

		memcpy(p, &v, len);
	}
}

/* The run's base seed: $FM_TEST_SEED (any strtoull base) or a constant. */
static inline uint64_t fm_test_base_seed(void)
{
	const char *s = getenv("FM_TEST_SEED");

	if (s && *s)
		return g_ascii_strtoull(s, NULL, 0);
	return 0x5eedf00d2024ull;
}

/* A per-test seed: independent of test order, so fork and no-fork runs
 * produce the same data for the same test. */
static inline uint64_t fm_test_seed_for(const char *name, int i)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ull;
	}
	return h ^ fm_test_base_seed() ^ ((uint64_t)(unsigned)i * 0x9e3779b97f4a7c15ull);
}

/*----------------------------------------------------------------*/
/* Memory */

/* posix_memalign that asserts; free with free(). */
static inline void *fm_test_alloc_aligned(size_t align, size_t len)
{
	void *p = NULL;
	int r = posix_memalign(&p, align, len ? len : 1);

	ck_assert_msg(r == 0, "posix_memalign(%zu, %zu): %s", align, len, g_strerror(r));
	return p;
}

/* Offset of the first differing byte, or -1 when equal. */
static inline ssize_t fm_test_first_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;

	if (memcmp(x, y, len) == 0)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (x[i] != y[i])
			return (ssize_t)i;
	return -1;
}

static inline size_t fm_test_count_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += x[i] != y[i];
	return n;
}

static inline bool fm_test_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Assert that @len bytes at @got equal those at @want; the rest of the
 * arguments are a printf-style description of what is compared.  On a
 * mismatch the message names the first differing offset (and the sector it
 * lies in), the bytes there and how many bytes differ in all.
 */
#define fm_assert_bytes_eq(got, want, len, ...)                                   \
	do {                                                                      \
		const uint8_t *fm_g_ = (const void *)(got);                       \
		const uint8_t *fm_w_ = (const void *)(want);                      \
		size_t fm_l_ = (len);                                             \
		ssize_t fm_d_ = fm_test_first_diff(fm_g_, fm_w_, fm_l_);          \
		if (fm_d_ >= 0) {                                                 \
			char fm_what_[256];                                       \
			snprintf(fm_what_, sizeof(fm_what_), __VA_ARGS__);        \
			ck_abort_msg("%s: differs at +%zd (sector +%zd, byte %zd): " \
				     "got 0x%02x want 0x%02x; %zu of %zu bytes differ", \
				     fm_what_, fm_d_, fm_d_ / 512, fm_d_ % 512,   \
				     fm_g_[fm_d_], fm_w_[fm_d_],                  \
				     fm_test_count_diff(fm_g_, fm_w_, fm_l_), fm_l_); \
		}                                                                 \
	} while (0)

/*----------------------------------------------------------------*/
/* A mutex and condition variable on pthreads: unlike GMutex/GCond (futexes)
 * ThreadSanitizer sees them.  Waits use the monotonic clock, the one of
 * g_get_monotonic_time(). */

struct fm_test_sync {
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static inline void fm_test_sync_init(struct fm_test_sync *s)
{
	pthread_condattr_t attr;

	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
}

static inline void fm_test_sync_destroy(struct fm_test_sync *s)
{
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
}

static inline void fm_test_sync_lock(struct fm_test_sync *s)
{
	pthread_mutex_lock(&s->lock);
}

static inline void fm_test_sync_unlock(struct fm_test_sync *s)
{
	pthread_mutex_unlock(&s->lock);
}

static inline void fm_test_sync_signal(struct fm_test_sync *s)
{
	pthread_cond_signal(&s->cond);
}

static inline void fm_test_sync_broadcast(struct fm_test_sync *s)
{
	pthread_cond_broadcast(&s->cond);
}

/* With the lock held: wait for a signal, or until g_get_monotonic_time()
 * reaches @deadline (returns false then). */
static inline bool fm_test_sync_wait_until(struct fm_test_sync *s, gint64 deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / G_USEC_PER_SEC),
		.tv_nsec = (long)(deadline % G_USEC_PER_SEC) * 1000,
	};

	return pthread_cond_timedwait(&s->cond, &s->lock, &ts) != ETIMEDOUT;
}

/*----------------------------------------------------------------*/
/* Temporary directories and files */

/* @path is on tmpfs or ramfs: what dmio calls an in-memory leg. */
static inline bool fm_test_in_memory(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 &&
	       (sfs.f_type == 0x01021994 /* TMPFS_MAGIC */ || sfs.f_type == 0x858458f6 /* RAMFS_MAGIC */);
}

/*
 * Where test files go by default: $TMPDIR (or /tmp), unless that is held in
 * memory (tmpfs, ramfs, as /tmp is on many systems), then /var/tmp.  The
 * tests mean disk files there: legs in memory take other paths (no O_DIRECT,
 * small pieces copied by the reaper instead of going through io_uring), and
 * the tests that want those use /dev/shm explicitly.
 */
static inline const char *fm_test_tmp_dir(void)
{
	const char *dir = g_get_tmp_dir();

	if (fm_test_in_memory(dir) && access("/var/tmp", W_OK) == 0)
		return "/var/tmp";
	return dir;
}

/* Make a fresh directory @parent/fm-@tag-XXXXXX (parent NULL:
 * fm_test_tmp_dir()).  Returns its path (g_free). */
static inline char *fm_test_mkdtemp(const char *parent, const char *tag)
{
	char *tmpl = g_strdup_printf("%s/fm-%s-XXXXXX",
				     parent ? parent : fm_test_tmp_dir(), tag);

	if (!g_mkdtemp(tmpl)) {
		int e = errno;
		char msg[512];

		snprintf(msg, sizeof(msg), "mkdtemp %s: %s", tmpl, g_strerror(e));
		g_free(tmpl);
		ck_abort_msg("%s", msg);
	}
	return tmpl;
}

/* rm -rf @path (does not follow symlinks).  Accepts NULL.  Returns 0 or
 * -errno of the first failure. */
static inline int fm_test_rm_rf(const char *path)
{
	struct stat st;
	int ret = 0;

	if (!path)
		return 0;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode)) {
		GDir *dir = g_dir_open(path, 0, NULL);
		const char *name;

		if (dir) {
			while ((name = g_dir_read_name(dir))) {
				char *child = g_build_filename(path, name, NULL);
				int r = fm_test_rm_rf(child);

				if (r < 0 && ret == 0)
					ret = r;
				g_free(child);
			}
			g_dir_close(dir);
		}
		if (rmdir(path) < 0 && ret == 0)
			ret = -errno;
	} else if (unlink(path) < 0 && ret == 0) {
		ret = -errno;
	}
	return ret;
}

static inline void fm_test_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
				      const char *what)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "pwrite %s at %" PRIu64 ": %s", what, off,
			      n < 0 ? g_strerror(errno) : "wrote 0");
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
}

/* Read exactly @len bytes; a short read (end of file) fails the test. */
static inline void fm_test_pread_all(int fd, void *buf, size_t len, uint64_t off,
				     const char *what)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "pread %s at %" PRIu64 " (%zu bytes left): %s", what,
			      off, len, n < 0 ? g_strerror(errno) : "end of file");
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
}

/* Create (or truncate) a regular file of @size bytes (sparse). */
static inline void fm_test_create_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ck_assert_msg(fd >= 0, "create %s: %s", path, g_strerror(errno));
	ck_assert_msg(ftruncate(fd, (off_t)size) == 0, "truncate %s to %" PRIu64 ": %s",
		      path, size, g_strerror(errno));
	close(fd);
}

/* Write through a separate plain (buffered) fd. */
static inline void fm_test_write_file(const char *path, uint64_t off, const void *buf,
				      size_t len)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	fm_test_pwrite_all(fd, buf, len, off, path);
	close(fd);
}

/* Read through a separate plain (buffered) fd. */
static inline void fm_test_read_file(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	fm_test_pread_all(fd, buf, len, off, path);
	close(fd);
}

static inline uint64_t fm_test_file_size(const char *path)
{
	struct stat st;

	ck_assert_msg(stat(path, &st) == 0, "stat %s: %s", path, g_strerror(errno));
	return (uint64_t)st.st_size;
}

/* Whether @path (an existing file) can be opened O_DIRECT. */
static inline bool fm_test_supports_direct(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/*----------------------------------------------------------------*/
/* O_DIRECT access (block devices, bypassing their page cache) */

#define FM_TEST_DIRECT_ALIGN 4096u

/* Read any byte range through a separate O_DIRECT fd (aligned internally). */
static inline void fm_test_read_direct(const char *path, uint64_t off, void *buf, size_t len)
{
	uint64_t a_off = off & ~(uint64_t)(FM_TEST_DIRECT_ALIGN - 1);
	uint64_t a_end = (off + len + FM_TEST_DIRECT_ALIGN - 1) &
			 ~(uint64_t)(FM_TEST_DIRECT_ALIGN - 1);
	size_t a_len = (size_t)(a_end - a_off);
	uint8_t *bounce = fm_test_alloc_aligned(FM_TEST_DIRECT_ALIGN, a_len);
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;

		free(bounce);
		ck_abort_msg("open %s O_DIRECT: %s", path, g_strerror(e));
	}
	fm_test_pread_all(fd, bounce, a_len, a_off, path);
	memcpy(buf, bounce + (off - a_off), len);
	close(fd);
	free(bounce);
}

/* Write a 4096-aligned range through a separate O_DIRECT fd. */
static inline void fm_test_write_direct(const char *path, uint64_t off, const void *buf,
					size_t len)
{
	uint8_t *bounce;
	int fd;

	ck_assert(off % FM_TEST_DIRECT_ALIGN == 0 && len % FM_TEST_DIRECT_ALIGN == 0);
	bounce = fm_test_alloc_aligned(FM_TEST_DIRECT_ALIGN, len);
	memcpy(bounce, buf, len);
	fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		free(bounce);
		ck_abort_msg("open %s O_DIRECT: %s", path, g_strerror(e));
	}
	fm_test_pwrite_all(fd, bounce, len, off, path);
	ck_assert_msg(fdatasync(fd) == 0, "fdatasync %s: %s", path, g_strerror(errno));
	close(fd);
	free(bounce);
}

static inline uint64_t fm_test_blockdev_size(const char *path)
{
	uint64_t size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	ck_assert_msg(ioctl(fd, BLKGETSIZE64, &size) == 0, "BLKGETSIZE64 %s: %s", path,
		      g_strerror(errno));
	close(fd);
	return size;
}

/*
 * Field @field (0-based) of /sys/block/<name>/stat for the block device
 * @dev_path ("/dev/loop3"): 0 reads completed, 4 writes completed,
 * 11 discards completed, 15 flushes completed.  Returns UINT64_MAX when the
 * field is absent (old kernel).
 */
static inline uint64_t fm_test_blockdev_stat(const char *dev_path, unsigned field)
{
	char *base = g_path_get_basename(dev_path);
	char *path = g_strdup_printf("/sys/block/%s/stat", base);
	char *text = NULL;
	uint64_t val = UINT64_MAX;

	if (g_file_get_contents(path, &text, NULL, NULL)) {
		char **tok = g_strsplit_set(g_strstrip(text), " \t\n", -1);
		unsigned k = 0;

		for (char **t = tok; *t; t++) {
			if (!**t)
				continue;
			if (k++ == field) {
				val = g_ascii_strtoull(*t, NULL, 10);
				break;
			}
		}
		g_strfreev(tok);
	}
	g_free(text);
	g_free(path);
	g_free(base);
	return val;
}

/* Contents of /sys/block/<name>/<attr> (stripped), or NULL.  g_free. */
static inline char *fm_test_blockdev_attr(const char *dev_path, const char *attr)
{
	char *base = g_path_get_basename(dev_path);
	char *path = g_strdup_printf("/sys/block/%s/%s", base, attr);
	char *text = NULL;

	if (!g_file_get_contents(path, &text, NULL, NULL))
		text = NULL;
	g_free(path);
	g_free(base);
	return text ? g_strstrip(text) : NULL;
}

/*----------------------------------------------------------------*/
/* Loop devices */

struct fm_test_loop {
	char *dev;      /* "/dev/loopN", NULL when not attached */
	char *backing;  /* the backing file */
	int hold_fd;    /* holds the device open: with LO_FLAGS_AUTOCLEAR the
			   kernel detaches it when this process dies, too */
};

/* Why loop devices cannot be used here (g_free), or NULL when they can. */
static inline char *fm_test_loop_unusable(void)
{
	if (geteuid() != 0)
		return g_strdup("not running as root: loop devices (losetup) need root");
	return NULL;
}

static inline char *fm_test_find_losetup(void)
{
	static const char *const fallbacks[] = { "/usr/sbin/losetup", "/sbin/losetup" };
	char *p = g_find_program_in_path("losetup");

	for (size_t i = 0; !p && i < G_N_ELEMENTS(fallbacks); i++)
		if (access(fallbacks[i], X_OK) == 0)
			p = g_strdup(fallbacks[i]);
	return p;
}

/* Run argv; returns 0 and its stdout (g_free) or -1 with a message. */
static inline int fm_test_run(char **argv, char **ret_out, char **ret_msg)
{
	char *out = NULL, *err = NULL;
	int status = 0;
	GError *error = NULL;

	if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
			  &status, &error)) {
		*ret_msg = g_strdup_printf("%s: %s", argv[0], error->message);
		g_error_free(error);
		return -1;
	}
	if (!g_spawn_check_wait_status(status, &error)) {
		*ret_msg = g_strdup_printf("%s %s: %s: %s", argv[0], argv[1], error->message,
					   err ? g_strstrip(err) : "");
		g_error_free(error);
		g_free(out);
		g_free(err);
		return -1;
	}
	g_free(err);
	if (ret_out)
		*ret_out = out;
	else
		g_free(out);
	return 0;
}

static inline bool fm_test_loop_is_attached(const char *dev)
{
	char *base = g_path_get_basename(dev);
	char *path = g_strdup_printf("/sys/block/%s/loop/backing_file", base);
	bool attached = access(path, F_OK) == 0;

	g_free(path);
	g_free(base);
	return attached;
}

/*
 * Attach @backing with `losetup --find --show --sector-size @sector_size
 * --direct-io=on`, hold it open and mark it autoclear.  Returns 0, or -1
 * and a message in *ret_msg (g_free); nothing stays attached on failure.
 * Does not assert, so a fixture can undo what it did before failing.
 */
static inline int fm_test_loop_attach(const char *backing, unsigned sector_size,
				      struct fm_test_loop *ret_loop, char **ret_msg)
{
	char *losetup = fm_test_find_losetup();
	char *ss = g_strdup_printf("%u", sector_size);
	char *argv[] = { losetup, (char *)"--find", (char *)"--show", (char *)"--sector-size",
			 ss, (char *)"--direct-io=on", (char *)backing, NULL };
	char *out = NULL, *lbs = NULL, *dio = NULL;
	struct loop_info64 info;
	struct fm_test_loop lo = { .hold_fd = -1 };
	int r;

	if (!losetup) {
		*ret_msg = g_strdup("losetup not found");
		g_free(ss);
		return -1;
	}
	r = fm_test_run(argv, &out, ret_msg);
	g_free(ss);
	if (r < 0) {
		g_free(losetup);
		return -1;
	}
	lo.dev = g_strdup(g_strstrip(out));
	lo.backing = g_strdup(backing);
	g_free(out);
	lo.hold_fd = open(lo.dev, O_RDONLY | O_CLOEXEC);
	if (lo.hold_fd < 0) {
		*ret_msg = g_strdup_printf("open %s: %s", lo.dev, g_strerror(errno));
		goto fail;
	}
	/* Autoclear: should this process die (CK_FORK=no, a crash), the
	 * kernel detaches the device when the holding fd goes away. */
	if (ioctl(lo.hold_fd, LOOP_GET_STATUS64, &info) == 0) {
		info.lo_flags |= LO_FLAGS_AUTOCLEAR;
		if (ioctl(lo.hold_fd, LOOP_SET_STATUS64, &info) != 0)
			fprintf(stderr, "fm_test: %s: cannot set autoclear: %s\n", lo.dev,
				g_strerror(errno));
	}
	lbs = fm_test_blockdev_attr(lo.dev, "queue/logical_block_size");
	if (!lbs || g_ascii_strtoull(lbs, NULL, 10) != sector_size) {
		*ret_msg = g_strdup_printf("%s: logical block size %s, wanted %u", lo.dev,
					   lbs ? lbs : "?", sector_size);
		goto fail;
	}
	dio = fm_test_blockdev_attr(lo.dev, "loop/dio");
	if (!dio || strcmp(dio, "1") != 0)
		fprintf(stderr, "fm_test: %s: loop direct I/O is %s (wanted 1)\n", lo.dev,
			dio ? dio : "?");
	g_free(lbs);
	g_free(dio);
	g_free(losetup);
	*ret_loop = lo;
	return 0;

fail:
	g_free(lbs);
	g_free(dio);
	{
		char *dargv[] = { losetup, (char *)"-d", lo.dev, NULL };
		char *m = NULL;

		if (fm_test_run(dargv, NULL, &m) < 0)
			g_free(m);
	}
	if (lo.hold_fd >= 0)
		close(lo.hold_fd);
	g_free(lo.dev);
	g_free(lo.backing);
	g_free(losetup);
	return -1;
}

/*
 * Detach (losetup -d, then drop the holding fd) and wait up to 5 s for the
 * kernel to let go.  Accepts a loop that is not attached.  Returns 0, or -1
 * and a message in *ret_msg (g_free) when it stays attached (someone still
 * holds it open: a leaked dmio_dev, for instance).
 */
static inline int fm_test_loop_detach(struct fm_test_loop *lo, char **ret_msg)
{
	char *losetup;
	char *m = NULL;
	int ret = 0;

	if (!lo->dev)
		return 0;
	losetup = fm_test_find_losetup();
	if (losetup) {
		char *argv[] = { losetup, (char *)"-d", lo->dev, NULL };

		if (fm_test_run(argv, NULL, &m) < 0) {
			fprintf(stderr, "fm_test: %s\n", m);
			g_free(m);
		}
		g_free(losetup);
	}
	if (lo->hold_fd >= 0)
		close(lo->hold_fd);
	lo->hold_fd = -1;
	for (int i = 0; i < 500 && fm_test_loop_is_attached(lo->dev); i++)
		g_usleep(10000);
	if (fm_test_loop_is_attached(lo->dev)) {
		*ret_msg = g_strdup_printf("%s (%s) is still attached after detach", lo->dev,
					   lo->backing);
		ret = -1;
	}
	g_free(lo->dev);
	g_free(lo->backing);
	lo->dev = NULL;
	lo->backing = NULL;
	return ret;
}

/* Register @tc's timeout unless the environment sets one (meson does). */
static inline void fm_test_tcase_timeout(TCase *tc, double seconds)
{
	if (!getenv("CK_DEFAULT_TIMEOUT"))
		tcase_set_timeout(tc, seconds);
}

#endif /* FM_TEST_H */
