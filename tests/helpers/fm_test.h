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
 * The functions are in fm_test.c, the static library fm-test that every
 * unit test links (tests/meson.build); only the PRNG's few lines stay
 * inline here.  A test's main() is fm_test_main() (skips are counted).
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

void fm_rng_fill(struct fm_rng *rng, void *buf, size_t len);

/* The run's base seed: $FM_TEST_SEED (any strtoull base) or a constant. */
uint64_t fm_test_base_seed(void);

/* A per-test seed: independent of test order, so fork and no-fork runs
 * produce the same data for the same test. */
uint64_t fm_test_seed_for(const char *name, int i);

/*----------------------------------------------------------------*/
/* Memory */

/* posix_memalign that asserts; free with free(). */
void *fm_test_alloc_aligned(size_t align, size_t len);

/* Offset of the first differing byte, or -1 when equal. */
ssize_t fm_test_first_diff(const void *a, const void *b, size_t len);

size_t fm_test_count_diff(const void *a, const void *b, size_t len);

bool fm_test_is_zero(const void *buf, size_t len);

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

void fm_test_sync_init(struct fm_test_sync *s);

void fm_test_sync_destroy(struct fm_test_sync *s);

void fm_test_sync_lock(struct fm_test_sync *s);

void fm_test_sync_unlock(struct fm_test_sync *s);

void fm_test_sync_signal(struct fm_test_sync *s);

void fm_test_sync_broadcast(struct fm_test_sync *s);

/* With the lock held: wait for a signal, or until g_get_monotonic_time()
 * reaches @deadline (returns false then). */
bool fm_test_sync_wait_until(struct fm_test_sync *s, gint64 deadline);

/*----------------------------------------------------------------*/
/* Temporary directories and files */

/* @path is on tmpfs or ramfs: what dmio calls an in-memory leg. */
bool fm_test_in_memory(const char *path);

/*
 * Where test files go by default: $TMPDIR (or /tmp), unless that is held in
 * memory (tmpfs, ramfs, as /tmp is on many systems), then /var/tmp.  The
 * tests mean disk files there: legs in memory take other paths (no O_DIRECT,
 * small pieces copied by the reaper instead of going through io_uring), and
 * the tests that want those use /dev/shm explicitly.
 */
const char *fm_test_tmp_dir(void);

/* Make a fresh directory @parent/fm-@tag-XXXXXX (parent NULL:
 * fm_test_tmp_dir()).  Returns its path (g_free). */
char *fm_test_mkdtemp(const char *parent, const char *tag);

/* rm -rf @path (does not follow symlinks).  Accepts NULL.  Returns 0 or
 * -errno of the first failure. */
int fm_test_rm_rf(const char *path);

void fm_test_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
				      const char *what);

/* Read exactly @len bytes; a short read (end of file) fails the test. */
void fm_test_pread_all(int fd, void *buf, size_t len, uint64_t off,
				     const char *what);

/* Create (or truncate) a regular file of @size bytes (sparse). */
void fm_test_create_file(const char *path, uint64_t size);

/* Write through a separate plain (buffered) fd. */
void fm_test_write_file(const char *path, uint64_t off, const void *buf,
				      size_t len);

/* Read through a separate plain (buffered) fd. */
void fm_test_read_file(const char *path, uint64_t off, void *buf, size_t len);

uint64_t fm_test_file_size(const char *path);

/* Whether @path (an existing file) can be opened O_DIRECT. */
bool fm_test_supports_direct(const char *path);

/*----------------------------------------------------------------*/
/* O_DIRECT access (block devices, bypassing their page cache) */

#define FM_TEST_DIRECT_ALIGN 4096u

/* Read any byte range through a separate O_DIRECT fd (aligned internally). */
void fm_test_read_direct(const char *path, uint64_t off, void *buf, size_t len);

/* Write a 4096-aligned range through a separate O_DIRECT fd. */
void fm_test_write_direct(const char *path, uint64_t off, const void *buf,
					size_t len);

uint64_t fm_test_blockdev_size(const char *path);

/*
 * Field @field (0-based) of /sys/block/<name>/stat for the block device
 * @dev_path ("/dev/loop3"): 0 reads completed, 4 writes completed,
 * 11 discards completed, 15 flushes completed.  Returns UINT64_MAX when the
 * field is absent (old kernel).
 */
uint64_t fm_test_blockdev_stat(const char *dev_path, unsigned field);

/* Contents of /sys/block/<name>/<attr> (stripped), or NULL.  g_free. */
char *fm_test_blockdev_attr(const char *dev_path, const char *attr);

/*----------------------------------------------------------------*/
/* Loop devices */

struct fm_test_loop {
	char *dev;      /* "/dev/loopN", NULL when not attached */
	char *backing;  /* the backing file */
	int hold_fd;    /* holds the device open: with LO_FLAGS_AUTOCLEAR the
			   kernel detaches it when this process dies, too */
};

/* Why loop devices cannot be used here (g_free), or NULL when they can. */
char *fm_test_loop_unusable(void);

char *fm_test_find_losetup(void);

/* Run argv; returns 0 and its stdout (g_free) or -1 with a message. */
int fm_test_run(char **argv, char **ret_out, char **ret_msg);

bool fm_test_loop_is_attached(const char *dev);

/*
 * Attach @backing with `losetup --find --show --sector-size @sector_size
 * --direct-io=on`, hold it open and mark it autoclear.  Returns 0, or -1
 * and a message in *ret_msg (g_free); nothing stays attached on failure.
 * Does not assert, so a fixture can undo what it did before failing.
 */
int fm_test_loop_attach(const char *backing, unsigned sector_size,
				      struct fm_test_loop *ret_loop, char **ret_msg);

/*
 * Detach (losetup -d, then drop the holding fd) and wait up to 5 s for the
 * kernel to let go.  Accepts a loop that is not attached.  Returns 0, or -1
 * and a message in *ret_msg (g_free) when it stays attached (someone still
 * holds it open: a leaked dmio_dev, for instance).
 */
int fm_test_loop_detach(struct fm_test_loop *lo, char **ret_msg);

/* Register @tc's timeout unless the environment sets one (meson does). */
void fm_test_tcase_timeout(TCase *tc, double seconds);

/*----------------------------------------------------------------*/
/* NBD servers (fm_test_nbd.c): the tests of remote devices and legs */

struct fm_test_nbd {
	GPid pid;       /* > 0 while it runs */
	char *dir;      /* the socket's directory (fm_test_mkdtemp) */
	char *sock;
	char *uri;
	int port;       /* > 0: TCP on 127.0.0.1 instead of the unix socket */
};

/* Does a connection to @s's socket (or port) succeed? */
bool fm_test_nbd_listens(const struct fm_test_nbd *s);

/*
 * Start a server in the foreground and wait until it listens: nbdkit on a
 * fresh unix socket (or, s->port set, on 127.0.0.1:port) with the given
 * arguments (filters, plugin, its parameters), NULL-terminated; or, @first
 * "qemu-nbd", qemu-nbd on the unix socket serving the file given after it.
 * A server started again after fm_test_nbd_kill() listens on the same
 * socket (the same URI).  nbdkit runs with --exit-with-parent.
 */
void fm_test_nbd_start(struct fm_test_nbd *s, const char *first, ...) G_GNUC_NULL_TERMINATED;

/* SIGSTOP the server and wait until every thread of it is stopped (kill()
 * returns before they are: a thread already running could still answer). */
void fm_test_nbd_pause(struct fm_test_nbd *s);

/* The server dies (SIGKILL; a stopped one is continued first); its socket
 * and URI stay for a start again.  Accepts a server that does not run. */
void fm_test_nbd_kill(struct fm_test_nbd *s);

/* Kill it and remove its directory; @s can be started afresh. */
void fm_test_nbd_stop(struct fm_test_nbd *s);

/*----------------------------------------------------------------*/
/* Programs and the test's main() */

/* True when the test runs under valgrind (meson's --setup valgrind sets
 * FM_UNDER_VALGRIND): tests shrink their sizes and loops. */
bool fm_test_under_valgrind(void);

/* Path of the program @name (g_free): $PATH, then /usr/sbin, /sbin,
 * /usr/bin, /bin.  Asserts that it exists (.ci/deps installs it). */
char *fm_test_find_program(const char *name);

/*
 * Record that the running test could not test what it is for because the
 * machine lacks a feature (a kernel counter, a device property) — never
 * for a missing tool or missing root, which are failures.  Prints
 * "SKIP test: reason" and counts the skip across check's fork mode; the
 * caller returns from the test.  fm_test_main() then exits 77 (meson:
 * SKIP) when nothing failed, so a skipped check is never reported as a
 * pass.  Test thread only.
 */
void fm_test_note_skip(const char *test, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
#define fm_test_skip(...)                                       \
	do {                                                    \
		fm_test_note_skip(__func__, __VA_ARGS__);       \
		return;                                         \
	} while (0)

/* One test of a table given to fm_test_suite(). */
struct fm_test_case {
	const char *name;
	const TTest *test;
};

/* A suite @name of one TCase per entry of @cases (named as the entry). */
Suite *fm_test_suite(const char *name, const struct fm_test_case *cases, size_t n);

/*
 * Run @s (srunner, CK_ENV fork mode) and return main()'s exit status:
 * EXIT_FAILURE when a test failed, 77 when none failed but some were
 * skipped (fm_test_skip; each listed again at the end), else EXIT_SUCCESS.
 * Frees @s.
 */
int fm_test_main(Suite *s);

#endif /* FM_TEST_H */
