/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the mirror target, written from its contract,
 * include/fusemirror/mirror.h, and the on-disk format of superblock.h.
 *
 * One Suite "mirror", one TCase per behaviour (mirror_suite() at the end):
 * format, assemble, io, read-policy, read-errors, write-errors, ordering,
 * zeroes, bufio.
 *
 * Everything is checked from the outside: leg files are read back through
 * separate plain fds at data_offset (not through the mirror), superblocks
 * with fm_sb_read() on separately opened devices, and "refused, nothing
 * written" byte for byte (size and SHA-256 of every leg file, absent paths
 * stay absent).  Each I/O test keeps a model of the whole image and compares
 * every leg, all of it, against the model, so misplaced data and damaged
 * neighbours show.
 *
 * Failures are real, not simulated: a leg file truncated under the assembled
 * mirror fails reads (a short read at end of file); a leg on a 2 MiB tmpfs
 * that the "write-errors" TCase mounts fails writes with ENOSPC.
 *
 * Data: random, from a PRNG seeded per test (fm_test_seed_for();
 * FM_TEST_SEED=<n> changes the run's base seed).
 *
 * Fixtures: unchecked ones (check's parent process) own the TCase's
 * temporary directory and the tmpfs mount, so both go away even when a test
 * crashes.  The checked fixture gives each test a fresh directory and, in
 * teardown, drains the dmio engine, stops a mirror the test left assembled,
 * shuts the engine down and removes the files.
 *
 * Threads: completions (end_io) only record, under fx.lock (a pthread
 * mutex: ThreadSanitizer cannot see glib's futex-based GMutex); every
 * assertion runs on the test thread.  Every request is tracked: one accepted by
 * mirror_submit() must see end_io exactly once, one refused never (checked
 * after dmio_engine_shutdown() has drained everything, in fx_stop()).
 *
 * Works with CK_FORK=yes and CK_FORK=no (valgrind).  Needs root (mount) and
 * mkfs.ext4 (.ci/deps installs it): on this project's machines nothing is
 * skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include "fusemirror/bufio.h"
#include "fusemirror/common.h"
#include "fusemirror/dmio.h"
#include "fusemirror/mirror.h"
#include "fusemirror/superblock.h"

#include "fm_test.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define TiB (1024ull * 1024ull * MiB)
#define SECTOR 512u
#define IMG (8 * MiB)                   /* image size of the test arrays */
#define IMG_SECTORS (IMG / SECTOR)
#define WAIT_SECONDS 120
#define TMPFS_SIZE_ARG "size=2M"

/*----------------------------------------------------------------*/
/* Unchecked fixtures: the TCase's directory, the tmpfs mount */

static char *tc_dir;
static char *tc_tmpfs;          /* a 2 MiB tmpfs mounted in tc_dir, or NULL */

static void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "mirror");
}

static void tc_dir_teardown(void)
{
	int r = fm_test_rm_rf(tc_dir);

	if (r < 0)
		fprintf(stderr, "test_mirror: cannot remove %s: %s\n", tc_dir, g_strerror(-r));
	g_clear_pointer(&tc_dir, g_free);
	ck_assert_msg(r == 0, "cannot remove the temporary directory");
}

static void tc_tmpfs_setup(void)
{
	int e = 0;

	tc_dir_setup();
	tc_tmpfs = g_build_filename(tc_dir, "tmpfs", NULL);
	if (mkdir(tc_tmpfs, 0700) < 0 ||
	    mount("fm-test-mirror", tc_tmpfs, "tmpfs", MS_NOSUID | MS_NODEV,
		  TMPFS_SIZE_ARG ",mode=0700") < 0)
		e = errno;
	if (e) {
		char msg[512];

		snprintf(msg, sizeof(msg), "mount -t tmpfs -o %s %s: %s (needs root)",
			 TMPFS_SIZE_ARG, tc_tmpfs, g_strerror(e));
		fm_test_rm_rf(tc_dir);
		g_clear_pointer(&tc_tmpfs, g_free);
		g_clear_pointer(&tc_dir, g_free);
		ck_abort_msg("%s", msg);
	}
}

static void tc_tmpfs_teardown(void)
{
	int r = -1;

	/* The test's fds are closed by now (its process ended, or its
	 * teardown stopped the mirror); retry briefly all the same. */
	for (int i = 0; i < 100; i++) {
		r = umount2(tc_tmpfs, 0);
		if (r == 0 || errno != EBUSY)
			break;
		g_usleep(20000);
	}
	if (r < 0) {
		fprintf(stderr, "test_mirror: umount %s: %s; detaching it\n", tc_tmpfs,
			g_strerror(errno));
		umount2(tc_tmpfs, MNT_DETACH);
	}
	g_clear_pointer(&tc_tmpfs, g_free);
	tc_dir_teardown();
	ck_assert_msg(r == 0, "the tmpfs was busy at the end of the TCase");
}

/*----------------------------------------------------------------*/
/* Checked fixture */

/* One request handed to mirror_submit(). */
struct io {
	int err;
	unsigned calls;         /* end_io calls */
};

static struct {
	struct fm_rng rng;
	char *dir;                      /* this test's directory, in tc_dir */
	char *legs[FM_SB_MAX_LEGS + 2]; /* legs of the array under test */
	unsigned nlegs;
	struct mirror *m;               /* assembled, or NULL */
	uint64_t data_offset;           /* of the array under test */
	uint8_t *model;                 /* IMG bytes: what the image must hold */
	GPtrArray *bufs;                /* memory handed to the mirror (free()) */
	GPtrArray *accepted;            /* struct io *: must complete once */
	GPtrArray *refused;             /* struct io *: must never complete */
	/* pthread, not GMutex: glib's futex-based GMutex is invisible to
	 * ThreadSanitizer. */
	pthread_mutex_t lock;           /* guards every struct io, the arrays */
	pthread_cond_t cond;            /* broadcast on every completion
					   (CLOCK_MONOTONIC) */
} fx;

static void fx_lock(void)
{
	pthread_mutex_lock(&fx.lock);
}

static void fx_unlock(void)
{
	pthread_mutex_unlock(&fx.lock);
}

/* Wait for fx.cond until @deadline (g_get_monotonic_time() units); false
 * on timeout. */
static bool fx_cond_wait_until(gint64 deadline)
{
	struct timespec ts = { .tv_sec = deadline / G_USEC_PER_SEC,
			       .tv_nsec = (deadline % G_USEC_PER_SEC) * 1000 };

	return pthread_cond_timedwait(&fx.cond, &fx.lock, &ts) != ETIMEDOUT;
}

static void setup(void)
{
	pthread_condattr_t ca;

	memset(&fx, 0, sizeof(fx));
	pthread_mutex_init(&fx.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fx.cond, &ca);
	pthread_condattr_destroy(&ca);
	fx.bufs = g_ptr_array_new_with_free_func(free);
	fx.accepted = g_ptr_array_new_with_free_func(g_free);
	fx.refused = g_ptr_array_new_with_free_func(g_free);
	fx.model = g_malloc0(IMG);
	fx.dir = fm_test_mkdtemp(tc_dir, "t");
}

static void teardown(void)
{
	/* A failed test (CK_FORK=no) may have left I/O in flight. */
	dmio_engine_shutdown();
	if (fx.m) {
		GError *e = NULL;

		mirror_stop(fx.m, &e);
		g_clear_error(&e);
		fx.m = NULL;
	}
	dmio_engine_shutdown();
	for (unsigned i = 0; i < G_N_ELEMENTS(fx.legs); i++) {
		if (fx.legs[i])
			unlink(fx.legs[i]);     /* legs on the tmpfs live outside fx.dir */
		g_free(fx.legs[i]);
	}
	if (fm_test_rm_rf(fx.dir) < 0)
		fprintf(stderr, "test_mirror: cannot remove %s\n", fx.dir);
	g_free(fx.dir);
	g_free(fx.model);
	g_ptr_array_unref(fx.bufs);
	g_ptr_array_unref(fx.accepted);
	g_ptr_array_unref(fx.refused);
	pthread_cond_destroy(&fx.cond);
	pthread_mutex_destroy(&fx.lock);
	memset(&fx, 0, sizeof(fx));
}

#define FX_SEED() fm_rng_seed(&fx.rng, fm_test_seed_for(__func__, _i))

static char *G_GNUC_PRINTF(1, 2) fx_path(const char *fmt, ...)
{
	va_list ap;
	char *name, *p;

	va_start(ap, fmt);
	name = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	p = g_build_filename(fx.dir, name, NULL);
	g_free(name);
	return p;
}

/* Aligned memory that lives until teardown (after the engine drained). */
static uint8_t *fx_buf(size_t len)
{
	uint8_t *p = fm_test_alloc_aligned(4096, len);

	memset(p, 0xa5, len);
	fx_lock();
	g_ptr_array_add(fx.bufs, p);
	fx_unlock();
	return p;
}

/*----------------------------------------------------------------*/
/* Files */

/* Fill a new file of @size bytes with random bytes, but leave the first
 * and last 256 KiB zero, so that no signature turns up by chance. */
static void make_random_file(const char *path, uint64_t size)
{
	const size_t chunk = 1 * MiB;
	uint8_t *buf = g_malloc(chunk);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ck_assert_msg(fd >= 0, "create %s: %s", path, g_strerror(errno));
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t len = (size_t)MIN((uint64_t)chunk, size - off);

		fm_rng_fill(&fx.rng, buf, len);
		for (size_t i = 0; i < len; i++)
			if (off + i < 256 * KiB || off + i >= size - 256 * KiB)
				buf[i] = 0;
		fm_test_pwrite_all(fd, buf, len, off, path);
	}
	close(fd);
	g_free(buf);
	ck_assert_uint_eq(fm_test_file_size(path), size);
}

static void copy_file(const char *from, const char *to)
{
	uint64_t size = fm_test_file_size(from);
	uint8_t *buf = g_malloc(size);

	fm_test_read_file(from, 0, buf, size);
	fm_test_create_file(to, 0);
	fm_test_write_file(to, 0, buf, size);
	g_free(buf);
}

static void truncate_file(const char *path, uint64_t size)
{
	ck_assert_msg(truncate(path, (off_t)size) == 0, "truncate %s to %" PRIu64 ": %s",
		      path, size, g_strerror(errno));
}

/* A 16 MiB file holding an ext4 file system. */
static void make_ext4_file(const char *path)
{
	char *prog = fm_test_find_program("mkfs.ext4");
	char *argv[] = { prog, (char *)"-q", (char *)"-F", (char *)path, NULL };
	char *msg = NULL;
	char copy[512] = "";

	fm_test_create_file(path, 16 * MiB);
	if (fm_test_run(argv, NULL, &msg) < 0) {
		g_strlcpy(copy, msg, sizeof(copy));
		g_free(msg);
	}
	g_free(prog);
	ck_assert_msg(!copy[0], "%s", copy);
}

/* "<size> <sha256>" of @path, or "absent".  g_free. */
static char *file_digest(const char *path)
{
	const size_t chunk = 1 * MiB;
	GChecksum *sum;
	uint8_t *buf;
	uint64_t size = 0;
	char *ret;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		ck_assert_msg(errno == ENOENT, "open %s: %s", path, g_strerror(errno));
		return g_strdup("absent");
	}
	/* Under valgrind, SHA-256 in software costs minutes over these files;
	 * crc32c (one instruction per 8 bytes) is plenty to see a change. */
	if (fm_test_under_valgrind()) {
		uint32_t crc = 0;

		buf = g_malloc(chunk);
		while ((n = read(fd, buf, chunk)) > 0) {
			crc = fm_crc32c(crc, buf, (size_t)n);
			size += (uint64_t)n;
		}
		ck_assert_msg(n == 0, "read %s: %s", path, g_strerror(errno));
		close(fd);
		g_free(buf);
		return g_strdup_printf("%" PRIu64 " crc32c %08x", size, crc);
	}
	sum = g_checksum_new(G_CHECKSUM_SHA256);
	buf = g_malloc(chunk);
	while ((n = read(fd, buf, chunk)) > 0) {
		g_checksum_update(sum, buf, (gssize)n);
		size += (uint64_t)n;
	}
	ck_assert_msg(n == 0, "read %s: %s", path, g_strerror(errno));
	close(fd);
	ret = g_strdup_printf("%" PRIu64 " %s", size, g_checksum_get_string(sum));
	g_checksum_free(sum);
	g_free(buf);
	return ret;
}

/* Contents of a set of files, to show that a refused call wrote nothing. */
struct snap {
	unsigned n;
	char *path[FM_SB_MAX_LEGS + 4];
	char *digest[FM_SB_MAX_LEGS + 4];
};

static void snap_add(struct snap *s, const char *path)
{
	ck_assert_uint_lt(s->n, G_N_ELEMENTS(s->path));
	s->path[s->n] = g_strdup(path);
	s->digest[s->n] = file_digest(path);
	s->n++;
}

/* Assert that nothing changed; frees @s. */
static void snap_check(struct snap *s, const char *what)
{
	for (unsigned i = 0; i < s->n; i++) {
		char *now = file_digest(s->path[i]);
		bool same = !strcmp(now, s->digest[i]);
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s changed %s: was \"%s\", now \"%s\"", what,
			 s->path[i], s->digest[i], now);
		g_free(now);
		ck_assert_msg(same, "%s", msg);
	}
	for (unsigned i = 0; i < s->n; i++) {
		g_free(s->path[i]);
		g_free(s->digest[i]);
	}
	s->n = 0;
}

/*----------------------------------------------------------------*/
/* Superblocks */

static void read_sb(const char *path, struct fm_sb *sb)
{
	struct dmio_dev *dev = NULL;
	GError *err = NULL;
	char msg[512] = "";
	int r = dmio_dev_open(path, DMIO_DEV_RDONLY, &dev);

	ck_assert_msg(r == 0, "open %s: %s", path, g_strerror(-r));
	r = fm_sb_read(dev, sb, &err);
	dmio_dev_close(dev);
	if (err) {
		g_strlcpy(msg, err->message, sizeof(msg));
		g_error_free(err);
	}
	ck_assert_msg(r == 0, "fm_sb_read %s: %d %s", path, r, msg);
}

/* Make @sb look written at @events: its assembly records cannot be newer. */
static void sb_set_events(struct fm_sb *sb, uint64_t events)
{
	sb->events = events;
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		if (sb->last_in_sync[i] > events)
			sb->last_in_sync[i] = events;
}

/* Write @sb (hand-edited) to @path's superblock with fm_sb_write(). */
static void write_sb(const char *path, struct fm_sb *sb)
{
	struct dmio_dev *dev = NULL;
	int r = dmio_dev_open(path, 0, &dev);

	ck_assert_msg(r == 0, "open %s: %s", path, g_strerror(-r));
	r = fm_sb_write(dev, sb);
	dmio_dev_close(dev);
	ck_assert_msg(r == 0, "fm_sb_write %s: %s", path, g_strerror(-r));
}

/* Write @sb with fm_sb_encode() through a plain fd: for superblocks that
 * fm_sb_write() would refuse and for exact control of every byte. */
static void write_sb_raw(const char *path, const struct fm_sb *sb)
{
	uint8_t *buf = g_malloc0(FM_SB_SIZE);

	fm_sb_encode(sb, buf);
	fm_test_write_file(path, 0, buf, FM_SB_SIZE);
	g_free(buf);
}

static bool file_range_is_zero(const char *path, uint64_t off, uint64_t len)
{
	const size_t chunk = 1 * MiB;
	uint8_t *buf = g_malloc(chunk);
	bool zero = true;

	for (uint64_t o = 0; o < len && zero; o += chunk) {
		size_t n = (size_t)MIN((uint64_t)chunk, len - o);

		fm_test_read_file(path, off + o, buf, n);
		zero = fm_test_is_zero(buf, n);
	}
	g_free(buf);
	return zero;
}

static uint64_t file_allocated(const char *path)
{
	struct stat st;

	ck_assert_msg(stat(path, &st) == 0, "stat %s: %s", path, g_strerror(errno));
	return (uint64_t)st.st_blocks * 512;
}

/*
 * Check the superblocks of freshly formatted legs @paths[0..n): one array
 * (@uuid), distinct leg uuids, each its own slot of an identical leg table,
 * CLEAN, the given geometry, and bitmap and data area reading as zeroes.
 */
static void check_formatted(char *const *paths, unsigned n, const uint8_t uuid[16],
			    uint64_t image_size, uint64_t region_size, uint32_t block_size,
			    const char *name, struct fm_sb *ret_sb0)
{
	struct fm_sb *sb = g_new0(struct fm_sb, n);

	for (unsigned i = 0; i < n; i++)
		read_sb(paths[i], &sb[i]);
	for (unsigned i = 0; i < n; i++) {
		const struct fm_sb *s = &sb[i];

		ck_assert_uint_eq(s->version_major, FM_SB_VERSION_MAJOR);
		ck_assert_uint_eq(s->version_minor, FM_SB_VERSION_MINOR);
		ck_assert_msg(!memcmp(s->array_uuid, uuid, 16),
			      "leg %u: array uuid differs from the one returned", i);
		ck_assert_msg(memcmp(s->leg_uuid, uuid, 16) != 0, "leg %u: leg uuid == array uuid", i);
		for (unsigned j = 0; j < i; j++)
			ck_assert_msg(memcmp(s->leg_uuid, sb[j].leg_uuid, 16) != 0,
				      "legs %u and %u have the same leg uuid", j, i);
		ck_assert_uint_eq(s->leg_index, i);
		ck_assert_uint_eq(s->nr_legs, n);
		ck_assert_uint_eq(s->image_size, image_size);
		ck_assert_uint_eq(s->region_size,
				  region_size ? region_size : FM_SB_DEFAULT_REGION_SIZE);
		ck_assert_uint_eq(s->bitmap_offset, FM_SB_SIZE);
		ck_assert_uint_ge(s->bitmap_length, 4096);
		ck_assert_uint_eq(s->data_offset % FM_SB_DATA_ALIGN, 0);
		ck_assert_uint_ge(s->data_offset, s->bitmap_offset + s->bitmap_length);
		ck_assert_uint_eq(s->data_offset, sb[0].data_offset);
		ck_assert_uint_eq(s->events, sb[0].events);
		ck_assert_msg(s->state_flags & FM_SB_CLEAN, "leg %u: CLEAN not set", i);
		ck_assert_uint_eq(s->block_size, block_size ? block_size : 4096);
		ck_assert_str_eq(s->name, name ? name : "");
		ck_assert_uint_eq(s->recovery_offset, 0);
		for (unsigned k = 0; k < FM_SB_MAX_LEGS; k++) {
			if (k < n) {
				ck_assert_msg(!memcmp(s->legs[k].uuid, sb[k].leg_uuid, 16),
					      "leg %u: slot %u does not hold leg %u's uuid", i, k, k);
				ck_assert_uint_eq(s->legs[k].state, FM_LEG_IN_SYNC);
			} else {
				ck_assert_msg(s->legs[k].state == FM_LEG_EMPTY,
					      "leg %u: slot %u is not empty", i, k);
			}
		}
		ck_assert_uint_ge(fm_test_file_size(paths[i]), s->data_offset + image_size);
		ck_assert_msg(file_range_is_zero(paths[i], s->bitmap_offset, s->bitmap_length),
			      "leg %s: bitmap area is not zero", paths[i]);
		ck_assert_msg(file_range_is_zero(paths[i], s->data_offset, image_size),
			      "leg %s: data area does not read as zeroes", paths[i]);
	}
	if (ret_sb0)
		*ret_sb0 = sb[0];
	g_free(sb);
}

/*----------------------------------------------------------------*/
/* The array under test */

/* fx.legs[0..n) = fx.dir/leg<i>. */
static void fx_name_legs(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		g_free(fx.legs[i]);
		fx.legs[i] = fx_path("leg%u", i);
	}
	fx.nlegs = n;
}

/* Format fx.legs as a new array of @size bytes; sets fx.data_offset. */
static void fx_format(uint64_t size)
{
	struct mirror_format_opts o = { .size = size };
	uint8_t uuid[16];
	struct fm_sb sb;
	GError *err = NULL;
	char msg[512] = "";
	int r = mirror_format((const char *const *)fx.legs, fx.nlegs, &o, uuid, &err);

	if (err) {
		g_strlcpy(msg, err->message, sizeof(msg));
		g_error_free(err);
	}
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, msg);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.image_size, size);
	fx.data_offset = sb.data_offset;
	memset(fx.model, 0, IMG);
}

static struct mirror *assemble_ok(char *const *paths, unsigned n,
				  enum mirror_read_policy policy, bool readonly)
{
	struct mirror_opts o = { .readonly = readonly, .read_policy = policy };
	struct mirror *m = NULL;
	GError *err = NULL;
	char msg[512] = "";
	int r = mirror_assemble((const char *const *)paths, n, &o, &m, &err);

	if (err) {
		g_strlcpy(msg, err->message, sizeof(msg));
		g_error_free(err);
	}
	ck_assert_msg(r == 0 && m, "mirror_assemble: %d %s", r, msg);
	ck_assert_int_eq(mirror_is_readonly(m), readonly);
	ck_assert_int_eq(mirror_get_read_policy(m), policy);
	return m;
}

static void fx_assemble(enum mirror_read_policy policy, bool readonly)
{
	ck_assert_ptr_null(fx.m);
	fx.m = assemble_ok(fx.legs, fx.nlegs, policy, readonly);
	ck_assert_uint_eq(mirror_size(fx.m), IMG);
	ck_assert_uint_eq(mirror_nr_legs(fx.m), fx.nlegs);
}

/*----------------------------------------------------------------*/
/* I/O */

static void io_done(void *ctx, int err)
{
	struct io *io = ctx;

	fx_lock();
	io->err = err;
	io->calls++;
	pthread_cond_broadcast(&fx.cond);
	fx_unlock();
}

/* mirror_submit() with tracking; any thread. */
static int fx_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
		     const struct iovec *iov, unsigned iovcnt, unsigned flags, struct io **ret_io)
{
	struct io *io = g_new0(struct io, 1);
	int r = mirror_submit(m, op, sector, iov, iovcnt, flags, io_done, io);

	fx_lock();
	g_ptr_array_add(r == 0 ? fx.accepted : fx.refused, io);
	fx_unlock();
	if (ret_io)
		*ret_io = io;
	return r;
}

/* Wait for @io's completion; returns its error. */
static int io_wait(struct io *io)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	unsigned calls;
	int err;

	fx_lock();
	while (io->calls == 0)
		if (!fx_cond_wait_until(deadline))
			break;
	calls = io->calls;
	err = io->err;
	fx_unlock();
	ck_assert_msg(calls > 0, "no completion after %d s", WAIT_SECONDS);
	return err;
}

/* Wait until every accepted request completed. */
static void fx_wait_all(void)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	bool all = false;

	fx_lock();
	for (;;) {
		all = true;
		for (guint i = 0; i < fx.accepted->len && all; i++)
			all = ((struct io *)fx.accepted->pdata[i])->calls > 0;
		if (all || !fx_cond_wait_until(deadline))
			break;
	}
	fx_unlock();
	ck_assert_msg(all, "requests still incomplete after %d s", WAIT_SECONDS);
}

/*
 * Wait for everything, stop the mirror (expecting @want), drain the engine,
 * then check that every accepted request completed exactly once and no
 * refused one ever completed.
 */
static void fx_stop(int want)
{
	GError *err = NULL;
	char msg[512] = "";
	int r;

	fx_wait_all();
	r = mirror_stop(fx.m, &err);
	fx.m = NULL;
	if (err) {
		g_strlcpy(msg, err->message, sizeof(msg));
		g_error_free(err);
	}
	ck_assert_msg(r == want, "mirror_stop: %d (%s), want %d", r, msg, want);
	dmio_engine_shutdown();
	fx_lock();
	for (guint i = 0; i < fx.accepted->len; i++) {
		unsigned calls = ((struct io *)fx.accepted->pdata[i])->calls;

		if (calls != 1) {
			fx_unlock();
			ck_abort_msg("an accepted request saw end_io %u times", calls);
		}
	}
	for (guint i = 0; i < fx.refused->len; i++) {
		unsigned calls = ((struct io *)fx.refused->pdata[i])->calls;

		if (calls != 0) {
			fx_unlock();
			ck_abort_msg("a refused request saw end_io %u times", calls);
		}
	}
	fx_unlock();
}

/* One request of @len bytes at image byte @off, waited for. */
static int fx_rw(enum mirror_op op, uint64_t off, void *buf, size_t len, unsigned flags)
{
	struct iovec iov = { buf, len };
	struct io *io;
	int r = fx_submit(fx.m, op, off / SECTOR, &iov, 1, flags, &io);

	return r < 0 ? r : io_wait(io);
}

/* Write random data at @off (model updated). */
static void fx_write_random(uint64_t off, size_t len)
{
	uint8_t *buf = fx_buf(len);
	int r;

	fm_rng_fill(&fx.rng, buf, len);
	r = fx_rw(MIRROR_OP_WRITE, off, buf, len, 0);
	ck_assert_msg(r == 0, "write of %zu bytes at %" PRIu64 ": %d", len, off, r);
	memcpy(fx.model + off, buf, len);
}

/* Every leg file holds the model in [@off, @off + @len) of the image. */
static void fx_check_legs(uint64_t off, uint64_t len)
{
	uint8_t *buf = g_malloc(len);

	for (unsigned i = 0; i < fx.nlegs; i++) {
		fm_test_read_file(fx.legs[i], fx.data_offset + off, buf, len);
		fm_assert_bytes_eq(buf, fx.model + off, len, "leg %u (%s), image bytes %" PRIu64
				   "+%" PRIu64, i, fx.legs[i], off, len);
	}
	g_free(buf);
}

/* Reading [@off, @off + @len) through the mirror returns the model. */
static void fx_check_read(uint64_t off, size_t len)
{
	uint8_t *buf = fx_buf(len);
	int r = fx_rw(MIRROR_OP_READ, off, buf, len, 0);

	ck_assert_msg(r == 0, "read of %zu bytes at %" PRIu64 ": %d", len, off, r);
	fm_assert_bytes_eq(buf, fx.model + off, len, "mirror read at %" PRIu64, off);
}

static void leg_stats(unsigned leg, struct mirror_leg_stats *s)
{
	memset(s, 0, sizeof(*s));
	mirror_get_leg_stats(fx.m, leg, s);
}

static void stats(struct mirror_stats *s)
{
	memset(s, 0, sizeof(*s));
	mirror_get_stats(fx.m, s);
}

/* Assert that @err is set in FM_MIRROR_ERROR with code -@r and that its
 * message holds each of the NULL-terminated substrings; frees it. */
static void check_error(GError *err, int r, const char *what, ...)
{
	char msg[1024];
	va_list ap;
	const char *sub;

	ck_assert_msg(err, "%s: returned %d but set no error", what, r);
	g_strlcpy(msg, err->message, sizeof(msg));
	ck_assert_msg(err->domain == FM_MIRROR_ERROR, "%s: error domain %s (\"%s\")", what,
		      g_quark_to_string(err->domain), msg);
	ck_assert_msg(err->code == -r, "%s: error code %d, returned %d (\"%s\")", what,
		      err->code, r, msg);
	va_start(ap, what);
	while ((sub = va_arg(ap, const char *)))
		ck_assert_msg(strstr(msg, sub), "%s: message \"%s\" lacks \"%s\"", what, msg, sub);
	va_end(ap);
	g_error_free(err);
}

#define REGION (1 * MiB)

/* Format fx.legs with 1 MiB regions (IMG / REGION bitmap bits). */
static void fx_format_regions(void)
{
	struct mirror_format_opts o = { .size = IMG, .region_size = REGION };
	struct fm_sb sb;

	ck_assert_int_eq(mirror_format((const char *const *)fx.legs, fx.nlegs, &o, NULL, NULL),
			 0);
	read_sb(fx.legs[0], &sb);
	fx.data_offset = sb.data_offset;
	memset(fx.model, 0, IMG);
}

static void fx_assemble_opts(const struct mirror_opts *o)
{
	GError *err = NULL;
	int r = mirror_assemble((const char *const *)fx.legs, fx.nlegs, o, &fx.m, &err);

	ck_assert_msg(r == 0, "mirror_assemble: %d %s", r, err ? err->message : "");
}

/* Wait until no resync/recovery/scrub runs; returns the status then. */
static void wait_sync_idle(struct mirror_status *ms)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

	for (;;) {
		mirror_get_status(fx.m, ms);
		if (ms->action == MIRROR_SYNC_IDLE)
			return;
		ck_assert_msg(g_get_monotonic_time() < deadline, "%s still running after %d s",
			      mirror_sync_action_name(ms->action), WAIT_SECONDS);
		g_usleep(10000);
	}
}

static void admin_ok(int r, GError *err, const char *what)
{
	ck_assert_msg(r == 0, "%s: %d %s", what, r, err ? err->message : "");
}

/*----------------------------------------------------------------*/
/* TCase format */

START_TEST(test_format_new_legs)
{
	unsigned n = 1 + (unsigned)_i;  /* 1 (a mirror of one), 2, 3 legs */
	struct mirror_format_opts o = { .size = IMG, .name = "new-legs" };
	uint8_t uuid[16];
	GError *err = NULL;
	struct fm_sb sb0;
	int r;

	FX_SEED();
	fx_name_legs(n);
	if (n == 3) {
		o.region_size = 1 * MiB;
		o.block_size = 65536;
	}
	memset(uuid, 0xee, sizeof(uuid));
	r = mirror_format((const char *const *)fx.legs, n, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, err ? err->message : "");
	ck_assert_ptr_null(err);
	check_formatted(fx.legs, n, uuid, IMG, o.region_size, o.block_size, "new-legs", &sb0);
	ck_assert_uint_eq(sb0.data_offset, 1 * MiB); /* 4 KiB bitmap, 1 MiB aligned */
	for (unsigned i = 0; i < n; i++) {
		/* Exactly the size needed, and sparse: the data area is a hole. */
		ck_assert_uint_eq(fm_test_file_size(fx.legs[i]), sb0.data_offset + IMG);
		ck_assert_msg(file_allocated(fx.legs[i]) < 1 * MiB,
			      "leg %s: %" PRIu64 " bytes allocated, not sparse", fx.legs[i],
			      file_allocated(fx.legs[i]));
	}

	/* The array works (a mirror of one, too). */
	fx.data_offset = sb0.data_offset;
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	fx_write_random(IMG - 64 * KiB, 64 * KiB);
	fx_check_read(0, 1 * MiB);
	fx_stop(0);
	fx_check_legs(0, IMG);

	/* A second format of the same legs (holding data now) makes a new,
	 * empty array. */
	{
		uint8_t uuid2[16];

		o = (struct mirror_format_opts){ .size = IMG, .force = true };
		r = mirror_format((const char *const *)fx.legs, n, &o, uuid2, &err);
		ck_assert_msg(r == 0, "mirror_format with force: %d %s", r,
			      err ? err->message : "");
		ck_assert_msg(memcmp(uuid, uuid2, 16) != 0, "the new array has the old uuid");
		check_formatted(fx.legs, n, uuid2, IMG, 0, 0, NULL, NULL);
	}
}
END_TEST

START_TEST(test_format_existing_legs)
{
	/* Existing files of random bytes; no size given: the largest 1 MiB
	 * multiple the smallest leg can hold after the 1 MiB header. */
	static const uint64_t sizes[][3] = {
		{ 12 * MiB, 9 * MiB + 300 * KiB, 0 },
		{ 12 * MiB + 4 * KiB, 14 * MiB, 10 * MiB + 4 * KiB },
	};
	unsigned n = 2 + (unsigned)_i;
	struct mirror_format_opts o = { 0 };
	uint64_t min = UINT64_MAX, want;
	uint8_t uuid[16];
	GError *err = NULL;
	struct fm_sb sb0;
	int r;

	FX_SEED();
	fx_name_legs(n);
	for (unsigned i = 0; i < n; i++) {
		make_random_file(fx.legs[i], sizes[_i][i]);
		min = MIN(min, sizes[_i][i]);
		ck_assert_msg(!file_range_is_zero(fx.legs[i], 1 * MiB, min - 1 * MiB - 256 * KiB),
			      "test bug: no random data in the future data area");
	}
	want = (min - 1 * MiB) / MiB * MiB;
	r = mirror_format((const char *const *)fx.legs, n, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, err ? err->message : "");
	check_formatted(fx.legs, n, uuid, want, 0, 0, NULL, &sb0);
	ck_assert_uint_eq(sb0.data_offset, 1 * MiB);
	ck_assert_uint_eq(sb0.image_size % MiB, 0);
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(fm_test_file_size(fx.legs[i]), sizes[_i][i]);
}
END_TEST

enum format_refusal {
	FR_EXT4,
	FR_FUSEMIRROR,
	FR_TOO_SMALL,
	FR_SAME_PATH,
	FR_HARD_LINK,
	FR_NO_DIR,
	FR_ZERO_LEGS,
	FR_33_LEGS,
	FR_REGION_NOT_POW2,
	FR_REGION_SMALL,
	FR_REGION_BIG,
	FR_SIZE_UNALIGNED,
	FR_NO_SIZE_NO_LEG,
	FR_SAME_NEW_PATH,
	FR_IN_USE,
	FR_NAME_TOO_LONG,
	FR_BLOCK_SIZE,
	FR_COUNT
};

START_TEST(test_format_refusals)
{
	char *paths[FM_SB_MAX_LEGS + 2] = { 0 };
	char *extra[4] = { 0 };
	struct mirror_format_opts o = { .size = IMG };
	unsigned n = 0;
	uint8_t uuid[16], poison[16];
	struct snap snap = { 0 };
	GError *err = NULL;
	const char *sub1 = NULL, *sub2 = NULL;
	const char *named;      /* the leg the message must name, or NULL */
	char *a = fx_path("a"), *b = fx_path("b-new");
	int want = -EINVAL, r;

	FX_SEED();
	/* a: an existing leg-to-be with random data; b: a path to create.
	 * The offending leg comes last, so writes to earlier legs show. */
	make_random_file(a, 12 * MiB);
	paths[n++] = g_strdup(a);
	paths[n++] = g_strdup(b);
	named = NULL;
	switch ((enum format_refusal)_i) {
	case FR_EXT4:
		paths[n] = fx_path("ext4");
		make_ext4_file(paths[n]);
		named = paths[n++];
		want = -EEXIST;
		sub1 = "ext4";
		sub2 = "--force";
		break;
	case FR_FUSEMIRROR: {
		char *x[2] = { fx_path("x0"), fx_path("x1") };
		struct mirror_format_opts xo = { .size = IMG };

		r = mirror_format((const char *const *)x, 2, &xo, NULL, NULL);
		ck_assert_int_eq(r, 0);
		extra[0] = x[0];
		paths[n] = x[1];
		named = paths[n++];
		want = -EEXIST;
		sub1 = "fusemirror";
		break;
	}
	case FR_TOO_SMALL:
		paths[n] = fx_path("small");
		make_random_file(paths[n], 4 * MiB);
		named = paths[n++];
		want = -ENOSPC;
		sub1 = "4194304";
		break;
	case FR_SAME_PATH:
		paths[n] = g_strdup(a);
		named = paths[n++];
		sub1 = "twice";
		break;
	case FR_HARD_LINK:
		paths[n] = fx_path("hardlink");
		ck_assert_msg(link(a, paths[n]) == 0, "link: %s", g_strerror(errno));
		named = paths[n++];
		sub1 = "same file";
		break;
	case FR_NO_DIR:
		paths[n] = fx_path("nodir/leg");
		extra[0] = fx_path("nodir");
		named = paths[n++];
		want = -ENOENT;
		sub1 = "does not exist";
		break;
	case FR_ZERO_LEGS:
		n = 0;
		sub1 = "0 given";
		break;
	case FR_33_LEGS:
		while (n < FM_SB_MAX_LEGS + 1) {
			paths[n] = fx_path("many%u", n);
			n++;
		}
		sub1 = "33 given";
		break;
	case FR_REGION_NOT_POW2:
		o.region_size = 3 * MiB;
		sub1 = "region size";
		break;
	case FR_REGION_SMALL:
		o.region_size = 512 * KiB;
		sub1 = "region size";
		break;
	case FR_REGION_BIG:
		o.region_size = 2 * TiB;
		sub1 = "region size";
		break;
	case FR_SIZE_UNALIGNED:
		o.size = IMG + 512;
		sub1 = "multiple of 4 KiB";
		break;
	case FR_NO_SIZE_NO_LEG:
		/* Only paths to create, and no size to create them with. */
		g_free(paths[0]);
		paths[0] = fx_path("c-new");
		o.size = 0;
		sub1 = "size";
		break;
	case FR_SAME_NEW_PATH:
		/* b twice, spelled differently: the same leg by path. */
		paths[n] = g_strdup_printf("%s/./b-new", fx.dir);
		named = paths[n++];
		sub1 = "same file";
		break;
	case FR_IN_USE: {
		/* Even with force: a leg of an assembled array is locked.  It
		 * is found only after b was created: b must go again. */
		char *x[2] = { fx_path("x0"), fx_path("x1") };
		struct mirror_format_opts xo = { .size = IMG };

		ck_assert_int_eq(mirror_format((const char *const *)x, 2, &xo, NULL, NULL), 0);
		fx.m = assemble_ok(x, 2, MIRROR_READ_BALANCE, false);
		extra[0] = x[0];
		paths[n] = x[1];
		named = paths[n++];
		o.force = true;
		want = -EBUSY;
		sub1 = "in use";
		break;
	}
	case FR_NAME_TOO_LONG:
		o.name = "0123456789012345678901234567890123456789012345678901234567890123";
		sub1 = "name";
		break;
	case FR_BLOCK_SIZE:
		o.block_size = 3000;
		sub1 = "block size";
		break;
	case FR_COUNT:
		break;
	}
	for (unsigned i = 0; i < n; i++)
		snap_add(&snap, paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(extra) && extra[i]; i++)
		snap_add(&snap, extra[i]);
	snap_add(&snap, a);
	snap_add(&snap, b);

	memset(uuid, 0xee, sizeof(uuid));
	memcpy(poison, uuid, sizeof(uuid));
	r = mirror_format((const char *const *)paths, n, &o, uuid, &err);
	ck_assert_msg(r < 0, "case %d: mirror_format accepted it", _i);
	ck_assert_msg(r == want, "case %d: returned %d (%s), want %d", _i, r,
		      err ? err->message : "", want);
	check_error(err, r, "mirror_format", named ? named : "", sub1 ? sub1 : "",
		    sub2 ? sub2 : "", NULL);
	ck_assert_msg(!memcmp(uuid, poison, 16), "ret_array_uuid written on failure");
	snap_check(&snap, "a refused mirror_format");
	if (fx.m)
		fx_stop(0);

	for (unsigned i = 0; i < G_N_ELEMENTS(paths); i++)
		g_free(paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(extra); i++)
		g_free(extra[i]);
	g_free(a);
	g_free(b);
}
END_TEST

START_TEST(test_format_force_ext4)
{
	struct mirror_format_opts o = { .size = IMG, .force = true };
	uint8_t uuid[16];
	GError *err = NULL;
	char *what = NULL;
	int fd, r;

	FX_SEED();
	fx_name_legs(2);
	make_ext4_file(fx.legs[0]);
	ck_assert_msg(!file_range_is_zero(fx.legs[0], 1 * MiB, IMG),
		      "test bug: mkfs.ext4 wrote nothing into the future data area");
	r = mirror_format((const char *const *)fx.legs, 2, &o, uuid, &err);
	ck_assert_msg(r == 0, "mirror_format --force on ext4: %d %s", r,
		      err ? err->message : "");
	check_formatted(fx.legs, 2, uuid, IMG, 0, 0, NULL, NULL);
	ck_assert_uint_eq(fm_test_file_size(fx.legs[0]), 16 * MiB);

	/* What is there now is a fusemirror leg, and no ext4 any more. */
	fd = open(fx.legs[0], O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	r = fm_sb_probe_signature(fd, &what);
	close(fd);
	ck_assert_int_eq(r, 0);
	ck_assert_msg(what && strstr(what, "fusemirror") && !strstr(what, "ext4"),
		      "after format: probe says \"%s\"", what ? what : "(nothing)");
	g_free(what);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase assemble */

START_TEST(test_assemble_dirty_then_clean)
{
	unsigned n = 2 + (unsigned)_i;
	struct fm_sb before[3], now;
	struct mirror_leg_stats ls;
	struct fm_sb msbc, *msb = &msbc;

	FX_SEED();
	fx_name_legs(n);
	fx_format(IMG);
	for (unsigned i = 0; i < n; i++)
		read_sb(fx.legs[i], &before[i]);

	fx_assemble(MIRROR_READ_BALANCE, false);
	for (unsigned i = 0; i < n; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(!(now.state_flags & FM_SB_CLEAN), "leg %u still CLEAN after assembly", i);
		ck_assert_uint_eq(now.events, before[i].events + 1);
		ck_assert(!memcmp(now.array_uuid, before[i].array_uuid, 16));
		ck_assert(!memcmp(now.leg_uuid, before[i].leg_uuid, 16));
		ck_assert_uint_eq(now.leg_index, i);
		ck_assert_uint_eq(now.image_size, IMG);
		ck_assert_uint_eq(now.data_offset, before[i].data_offset);
		for (unsigned k = 0; k < n; k++)
			ck_assert(!memcmp(now.legs[k].uuid, before[i].legs[k].uuid, 16) &&
				  now.legs[k].state == FM_LEG_IN_SYNC);
		leg_stats(i, &ls);
		ck_assert_str_eq(ls.path, fx.legs[i]);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		ck_assert_int_eq(ls.direct, fm_test_supports_direct(fx.legs[i]));
		ck_assert_uint_eq(ls.reads + ls.writes + ls.read_errors + ls.write_errors, 0);
	}
	mirror_get_sb(fx.m, msb);
	ck_assert(!memcmp(msb->array_uuid, before[0].array_uuid, 16));
	ck_assert(!memcmp(msb->leg_uuid, before[0].leg_uuid, 16));
	ck_assert_uint_eq(msb->events, before[0].events + 1);
	ck_assert(!(msb->state_flags & FM_SB_CLEAN));

	fx_write_random(64 * KiB, 64 * KiB);
	fx_stop(0);
	for (unsigned i = 0; i < n; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(now.state_flags & FM_SB_CLEAN, "leg %u not CLEAN after stop", i);
		ck_assert_uint_eq(now.events, before[i].events + 2);
	}
	fx_check_legs(0, IMG);
}
END_TEST

enum assemble_refusal {
	AR_NOT_A_LEG,
	AR_BAD_CRC,
	AR_OTHER_ARRAY,
	AR_GEOM_IMAGE_SIZE,
	AR_GEOM_DATA_OFFSET,
	AR_GEOM_REGION_SIZE,
	AR_TRUNCATED,
	AR_SAME_PATH,
	AR_COPY,
	AR_STALE_SECOND,
	AR_STALE_FIRST,
	AR_LEG_NOT_GIVEN,
	AR_MISSING_FILE,
	AR_COUNT
};

START_TEST(test_assemble_refusals)
{
	char *paths[3] = { 0 };
	char *other[2] = { 0 };
	unsigned n = 2;
	struct snap snap = { 0 };
	struct mirror *sentinel = (struct mirror *)&snap, *m = sentinel;
	struct mirror_opts o = { 0 };
	struct fm_sb sb;
	GError *err = NULL;
	const char *named, *sub1 = NULL, *sub2 = NULL;
	char u1[37], u2[37];
	bool legs_intact = false;
	int want, r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	/* Assemble and stop once: events 3, some data. */
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 256 * KiB);
	fx_stop(0);

	paths[0] = g_strdup(fx.legs[0]);
	paths[1] = g_strdup(fx.legs[1]);
	named = paths[1];
	switch ((enum assemble_refusal)_i) {
	case AR_NOT_A_LEG:
		g_free(paths[1]);
		paths[1] = fx_path("plain");
		make_random_file(paths[1], 12 * MiB);
		named = paths[1];
		want = -EINVAL;
		sub1 = "not a fusemirror leg";
		legs_intact = true;
		break;
	case AR_BAD_CRC: {
		uint8_t byte;

		fm_test_read_file(paths[1], 64, &byte, 1);
		byte ^= 0x10;
		fm_test_write_file(paths[1], 64, &byte, 1);
		want = -EUCLEAN;
		sub1 = "damaged";
		break;
	}
	case AR_OTHER_ARRAY: {
		struct mirror_format_opts fo = { .size = IMG };
		uint8_t ou[16];

		other[0] = fx_path("other0");
		other[1] = fx_path("other1");
		ck_assert_int_eq(mirror_format((const char *const *)other, 2, &fo, ou, NULL), 0);
		read_sb(paths[0], &sb);
		g_free(paths[1]);
		paths[1] = g_strdup(other[1]);
		named = paths[1];
		want = -EINVAL;
		sub1 = fm_uuid_unparse(ou, u1);
		sub2 = fm_uuid_unparse(sb.array_uuid, u2);
		legs_intact = true;
		break;
	}
	case AR_GEOM_IMAGE_SIZE:
	case AR_GEOM_DATA_OFFSET:
	case AR_GEOM_REGION_SIZE:
		read_sb(paths[1], &sb);
		if (_i == AR_GEOM_IMAGE_SIZE) {
			sb.image_size -= 1 * MiB;
			sub1 = "image size";
		} else if (_i == AR_GEOM_DATA_OFFSET) {
			sb.data_offset += 1 * MiB;
			sub1 = "data offset";
		} else {
			sb.region_size *= 2;
			sub1 = "region size";
		}
		/* Hand-edited, crc recomputed by fm_sb_encode(): a valid sb. */
		write_sb_raw(paths[1], &sb);
		read_sb(paths[1], &sb);
		want = -EUCLEAN;
		sub2 = "differs";
		break;
	case AR_TRUNCATED:
		truncate_file(paths[1], fx.data_offset + IMG - 4096);
		want = -ENOSPC;
		sub1 = "smaller";
		break;
	case AR_SAME_PATH:
		g_free(paths[1]);
		paths[1] = g_strdup(paths[0]);
		named = paths[1];
		want = -EINVAL;
		sub1 = "twice";
		legs_intact = true;
		break;
	case AR_COPY:
		g_free(paths[1]);
		paths[1] = fx_path("copy-of-leg0");
		copy_file(paths[0], paths[1]);
		named = paths[1];
		want = -EINVAL;
		sub1 = "same leg";
		legs_intact = true;
		break;
	case AR_STALE_SECOND:
	case AR_STALE_FIRST: {
		unsigned stale = _i == AR_STALE_FIRST ? 0 : 1;

		/* A stale leg given alone is never taken for current: its
		 * own table names the leg that is not given. */
		read_sb(paths[stale], &sb);
		ck_assert_uint_eq(sb.events, 3);
		sb_set_events(&sb, sb.events - 1);
		write_sb(paths[stale], &sb);
		if (stale == 1) {
			char *t = paths[0];

			paths[0] = paths[1];
			paths[1] = t;
		}
		n = 1;
		named = "";
		want = -ENODEV;
		sub1 = "not given";
		break;
	}
	case AR_LEG_NOT_GIVEN:
		n = 1;
		named = "";
		want = -ENODEV;
		sub1 = "has 2 legs";
		sub2 = "not given";
		legs_intact = true;
		break;
	case AR_MISSING_FILE:
		g_free(paths[1]);
		paths[1] = fx_path("no-such-leg");
		named = paths[1];
		want = -ENOENT;
		legs_intact = true;
		break;
	default:
		ck_abort();
	}
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	for (unsigned i = 0; i < n; i++)
		snap_add(&snap, paths[i]);

	r = mirror_assemble((const char *const *)paths, n, &o, &m, &err);
	ck_assert_msg(r == want, "case %d: mirror_assemble returned %d (%s), want %d", _i, r,
		      err ? err->message : "", want);
	ck_assert_msg(m == sentinel, "*ret_m written on failure");
	check_error(err, r, "mirror_assemble", named, sub1 ? sub1 : "", sub2 ? sub2 : "",
		    NULL);
	snap_check(&snap, "a refused mirror_assemble");

	/* A refused assembly leaves nothing locked behind. */
	if (legs_intact) {
		fx_assemble(MIRROR_READ_BALANCE, false);
		fx_check_read(0, 256 * KiB);
		fx_stop(0);
	}
	for (unsigned i = 0; i < G_N_ELEMENTS(paths); i++)
		g_free(paths[i]);
	for (unsigned i = 0; i < G_N_ELEMENTS(other); i++)
		g_free(other[i]);
}
END_TEST

START_TEST(test_assemble_in_use)
{
	struct mirror_opts o = { 0 };
	struct mirror_opts ro = { .readonly = true };
	struct mirror *m2 = NULL;
	struct snap snap = { 0 };
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(1 * MiB, 128 * KiB);
	fx_wait_all();
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	/* OFD locks conflict between open file descriptions, even within
	 * one process. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "second assembly", fx.legs[0], "already in use", NULL);
	err = NULL;
	r = mirror_assemble((const char *const *)fx.legs, 2, &ro, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "read-only assembly of legs in use", "already in use", NULL);
	err = NULL;
	r = mirror_assemble((const char *const *)&fx.legs[1], 1, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "assembly of leg 1 alone", fx.legs[1], "already in use", NULL);
	snap_check(&snap, "a refused (in use) mirror_assemble");

	/* The first mirror still works. */
	fx_write_random(2 * MiB, 64 * KiB);
	fx_check_read(1 * MiB, 2 * MiB);
	fx_check_legs(0, IMG);
	fx_stop(0);

	/* Once stopped, the legs can be assembled again. */
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_check_read(1 * MiB, 2 * MiB);
	fx_stop(0);
}
END_TEST

START_TEST(test_assemble_readonly)
{
	struct snap snap = { 0 };
	struct mirror_opts o = { 0 };
	struct mirror *m2 = NULL;
	struct fm_sb sb;
	uint8_t *buf;
	struct iovec iov;
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	fx_write_random(5 * MiB, 512 * KiB);
	fx_stop(0);
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	fx_assemble(MIRROR_READ_ROUND_ROBIN, true);
	ck_assert(mirror_is_readonly(fx.m));
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_check_read(off, 1 * MiB);
	buf = fx_buf(4096);
	iov = (struct iovec){ buf, 4096 };
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 0, &iov, 1, 0, NULL), -EROFS);
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 8, &iov, 1, MIRROR_IO_FUA, NULL),
			 -EROFS);
	ck_assert_int_eq(mirror_discard(fx.m, 0, 8), -EROFS);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, 0, 8), -EROFS);
	/* The legs are in use: a read-write assembly is refused. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m2, &err);
	ck_assert_ptr_null(m2);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "read-write assembly of read-only legs", "already in use", NULL);
	fx_stop(0);
	snap_check(&snap, "a read-only assembly");
	read_sb(fx.legs[0], &sb);
	ck_assert(sb.state_flags & FM_SB_CLEAN);
}
END_TEST

/*
 * defer_in_use: nothing is written at assembly, writes are refused until
 * mirror_mark_in_use(), and a mirror stopped before that leaves every leg
 * byte for byte as it was (the daemon's late refusals rely on it).
 */
START_TEST(test_assemble_defer_in_use)
{
	struct mirror_opts o = { .defer_in_use = true };
	struct snap snap = { 0 };
	struct mirror *m = NULL;
	struct fm_sb sb0, sb;
	struct iovec iov;
	GError *err = NULL;
	uint8_t *buf;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	read_sb(fx.legs[0], &sb0);
	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);

	/* Assembled, stopped without marking: untouched. */
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m, &err);
	ck_assert_msg(r == 0, "mirror_assemble: %d %s", r, err ? err->message : "");
	buf = fx_buf(4096);
	iov = (struct iovec){ buf, 4096 };
	ck_assert_int_eq(fx_submit(m, MIRROR_OP_WRITE, 0, &iov, 1, 0, NULL), -EROFS);
	ck_assert_int_eq(mirror_discard(m, 0, 8), -EROFS);
	ck_assert_int_eq(mirror_stop(m, NULL), 0);
	snap_check(&snap, "an assembly stopped before mirror_mark_in_use");

	/* Assembled, then marked: dirty, writes work, stop marks clean. */
	m = NULL;
	r = mirror_assemble((const char *const *)fx.legs, 2, &o, &m, &err);
	ck_assert_int_eq(r, 0);
	read_sb(fx.legs[1], &sb);
	ck_assert_uint_eq(sb.events, sb0.events);
	ck_assert(sb.state_flags & FM_SB_CLEAN);
	ck_assert_int_eq(mirror_mark_in_use(m, &err), 0);
	ck_assert_int_eq(mirror_mark_in_use(m, &err), 0); /* idempotent */
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert_uint_eq(sb.events, sb0.events + 1);
		ck_assert(!(sb.state_flags & FM_SB_CLEAN));
	}
	fx.m = m;
	fx_write_random(0, 64 * KiB);
	fx_stop(0);
	fx_check_legs(0, 64 * KiB);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &sb);
		ck_assert_uint_eq(sb.events, sb0.events + 2);
		ck_assert(sb.state_flags & FM_SB_CLEAN);
	}
}
END_TEST

/* Legs are known by their uuids, not by the order they are given in. */
START_TEST(test_assemble_any_order)
{
	char *order[3];
	struct fm_sb sb2, now;

	FX_SEED();
	fx_name_legs(3);
	fx_format(IMG);
	read_sb(fx.legs[2], &sb2);
	order[0] = fx.legs[2];
	order[1] = fx.legs[0];
	order[2] = fx.legs[1];
	fx.m = assemble_ok(order, 3, MIRROR_READ_ROUND_ROBIN, false);
	{
		struct fm_sb msb;

		mirror_get_sb(fx.m, &msb);
		ck_assert(!memcmp(msb.array_uuid, sb2.array_uuid, 16));
	}
	fx_write_random(4 * KiB, 1 * MiB);
	for (unsigned k = 0; k < 6; k++)
		fx_check_read(4 * KiB, 1 * MiB);
	fx_stop(0);
	fx_check_legs(0, IMG);
	for (unsigned i = 0; i < 3; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_uint_eq(now.leg_index, i);
		ck_assert(now.state_flags & FM_SB_CLEAN);
		ck_assert_uint_eq(now.events, sb2.events + 2);
	}
}
END_TEST

/*
 * Fork a child that assembles fx.legs (with @o), writes @len bytes of
 * @data at image byte @off with FUA (durable on every leg), and dies once
 * the write is done, without mirror_stop(): a daemon killed with -9.
 */
static void crash_after_write(const struct mirror_opts *o, const uint8_t *data,
			      uint64_t off, size_t len)
{
	int status = 0;
	pid_t pid;

	/* No engine thread may exist at fork(): the child starts its own. */
	dmio_engine_shutdown();
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct mirror *m = NULL;
		struct iovec iov = { (void *)data, len };
		struct io cio = { 0 };
		unsigned calls = 0;

		if (mirror_assemble((const char *const *)fx.legs, fx.nlegs, o, &m, NULL) < 0)
			_exit(10);
		if (mirror_submit(m, MIRROR_OP_WRITE, off / SECTOR, &iov, 1, MIRROR_IO_FUA,
				  io_done, &cio) < 0)
			_exit(11);
		for (int i = 0; i < 60000 && !calls; i++) {
			g_usleep(1000);
			fx_lock();
			calls = cio.calls;
			fx_unlock();
		}
		_exit(!calls ? 12 : cio.err ? 13 : 0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the crashing child failed before its crash: status %#x", status);
}

/*
 * A daemon that dies without mirror_stop(): its locks go with it (OFD locks
 * belong to the open file description), the legs stay marked dirty, and
 * the array assembles again with its data.
 */
START_TEST(test_assemble_after_crash)
{
	struct fm_sb before, now;
	uint8_t *data;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	read_sb(fx.legs[0], &before);
	data = fx_buf(1 * MiB);
	fm_rng_fill(&fx.rng, data, 1 * MiB);
	memcpy(fx.model + 2 * MiB, data, 1 * MiB);

	crash_after_write(&(struct mirror_opts){ 0 }, data, 2 * MiB, 1 * MiB);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert_msg(!(now.state_flags & FM_SB_CLEAN), "leg %u CLEAN after a crash", i);
		ck_assert_uint_eq(now.events, before.events + 1);
	}
	fx_check_legs(0, IMG);

	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_check_read(2 * MiB, 1 * MiB);
	{
		struct mirror_status ms;

		wait_sync_idle(&ms);
		ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
		ck_assert_uint_eq(ms.resynced_regions, 1);
	}
	fx_stop(0);
	for (unsigned i = 0; i < 2; i++) {
		read_sb(fx.legs[i], &now);
		ck_assert(now.state_flags & FM_SB_CLEAN);
		ck_assert_uint_eq(now.events, before.events + 3);
	}
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase io */

START_TEST(test_io_writes_land_on_every_leg)
{
	unsigned n = 2 + (unsigned)_i;
	struct mirror_stats st;
	struct mirror_leg_stats ls;
	uint64_t nwrites = 0, nbytes = 0;

	FX_SEED();
	fx_name_legs(n);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);

	/* Plain writes at random places and of random sizes. */
	for (unsigned k = 0; k < 40; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 1, 256) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;

		fx_write_random(off, len);
		nwrites++;
		nbytes += len;
	}
	/* The first and the last sector. */
	fx_write_random(0, SECTOR);
	fx_write_random(IMG - SECTOR, SECTOR);
	nwrites += 2;
	nbytes += 2 * SECTOR;

	/* Several iovecs, unaligned memory, FUA. */
	for (unsigned k = 0; k < 8; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 2, 64) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;
		uint8_t *mem = fx_buf(len + 1);
		uint8_t *data = mem + (k & 1);  /* odd addresses half the time */
		struct iovec iov[5];
		unsigned cnt = 0;
		uint64_t done = 0;
		struct io *io;
		int r;

		fm_rng_fill(&fx.rng, data, len);
		/* Random cut points: pieces need not be whole sectors. */
		while (done < len && cnt < G_N_ELEMENTS(iov) - 1) {
			uint64_t piece = fm_rng_between(&fx.rng, 1, len - done);

			iov[cnt++] = (struct iovec){ data + done, piece };
			done += piece;
		}
		if (done < len)
			iov[cnt++] = (struct iovec){ data + done, len - done };
		r = fx_submit(fx.m, MIRROR_OP_WRITE, off / SECTOR, iov, cnt,
			      (k & 2) ? MIRROR_IO_FUA : 0, &io);
		/* The iovec array is the mirror's copy now. */
		memset(iov, 0, sizeof(iov));
		ck_assert_int_eq(r, 0);
		ck_assert_int_eq(io_wait(io), 0);
		memcpy(fx.model + off, data, len);
		nwrites++;
		nbytes += len;
	}
	/* More iovecs than a request carries inline, and IOV_MAX of them. */
	for (unsigned k = 0; k < 2; k++) {
		unsigned cnt = k == 0 ? 24 : IOV_MAX;
		uint64_t len = (uint64_t)cnt * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;
		uint8_t *data = fx_buf(len);
		struct iovec *iov = g_new(struct iovec, cnt);
		struct io *io;
		int r;

		fm_rng_fill(&fx.rng, data, len);
		/* Pieces of the same total, backwards in memory. */
		for (unsigned j = 0; j < cnt; j++)
			iov[j] = (struct iovec){ data + (uint64_t)(cnt - 1 - j) * SECTOR, SECTOR };
		r = fx_submit(fx.m, MIRROR_OP_WRITE, off / SECTOR, iov, cnt, 0, &io);
		memset(iov, 0, cnt * sizeof(*iov));
		g_free(iov);
		ck_assert_msg(r == 0, "write of %u iovecs: %d", cnt, r);
		ck_assert_int_eq(io_wait(io), 0);
		for (unsigned j = 0; j < cnt; j++)
			memcpy(fx.model + off + (uint64_t)j * SECTOR,
			       data + (uint64_t)(cnt - 1 - j) * SECTOR, SECTOR);
		nwrites++;
		nbytes += len;
	}
	fx_check_legs(0, IMG);

	/* Reads come back right, also into several iovecs. */
	for (unsigned k = 0; k < 20; k++) {
		uint64_t len = fm_rng_between(&fx.rng, 1, 256) * SECTOR;
		uint64_t off = fm_rng_between(&fx.rng, 0, (IMG - len) / SECTOR) * SECTOR;

		fx_check_read(off, len);
	}
	{
		uint8_t *data = fx_buf(3 * SECTOR + 1) + 1;
		struct iovec iov[3] = { { data, 100 }, { data + 100, 1000 },
					{ data + 1100, 3 * SECTOR - 1100 } };
		struct io *io;

		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, 7, iov, 3, 0, &io), 0);
		ck_assert_int_eq(io_wait(io), 0);
		fm_assert_bytes_eq(data, fx.model + 7 * SECTOR, 3 * SECTOR, "3-iovec read");
	}
	{
		const unsigned cnt = 20;
		uint8_t *data = fx_buf(cnt * 1024);
		struct iovec iov[20];
		struct io *io;

		for (unsigned j = 0; j < cnt; j++)
			iov[j] = (struct iovec){ data + j * 1024, 1024 };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, 99, iov, cnt, 0, &io), 0);
		ck_assert_int_eq(io_wait(io), 0);
		fm_assert_bytes_eq(data, fx.model + 99 * SECTOR, cnt * 1024, "20-iovec read");
	}

	stats(&st);
	ck_assert_uint_eq(st.writes, nwrites);
	ck_assert_uint_eq(st.write_bytes, nbytes);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_uint_eq(st.reads, 22);
	for (unsigned i = 0; i < n; i++) {
		leg_stats(i, &ls);
		ck_assert_uint_eq(ls.writes, nwrites);
		ck_assert_uint_eq(ls.write_bytes, nbytes);
		ck_assert_uint_eq(ls.write_errors, 0);
		ck_assert_uint_eq(ls.pending, 0);
	}
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Everything that must be refused before it starts; end_io never runs. */
START_TEST(test_io_refused)
{
	uint8_t *buf;
	struct iovec iov[2], *many;
	struct mirror_stats st;
	const enum mirror_op ops[] = { MIRROR_OP_READ, MIRROR_OP_WRITE };

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	buf = fx_buf(8192);

	for (unsigned k = 0; k < G_N_ELEMENTS(ops); k++) {
		enum mirror_op op = ops[k];

		/* Past the end. */
		iov[0] = (struct iovec){ buf, SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS, iov, 1, 0, NULL), -ENOSPC);
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS + 100, iov, 1, 0, NULL), -ENOSPC);
		ck_assert_int_eq(fx_submit(fx.m, op, UINT64_MAX, iov, 1, 0, NULL), -ENOSPC);
		iov[0] = (struct iovec){ buf, 2 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, op, IMG_SECTORS - 1, iov, 1, 0, NULL), -ENOSPC);
		iov[0] = (struct iovec){ buf, 8192 };
		ck_assert_int_eq(fx_submit(fx.m, op, UINT64_MAX - 8, iov, 1, 0, NULL), -ENOSPC);
		/* Not whole sectors. */
		iov[0] = (struct iovec){ buf, 511 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 513 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 0 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 1, 0, NULL), -EINVAL);
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 0, 0, NULL), -EINVAL);
		iov[0] = (struct iovec){ buf, 256 };
		iov[1] = (struct iovec){ buf + 256, 512 };
		ck_assert_int_eq(fx_submit(fx.m, op, 0, iov, 2, 0, NULL), -EINVAL);
	}
	/* Too many iovecs. */
	many = g_new(struct iovec, IOV_MAX + 1);
	for (unsigned i = 0; i < IOV_MAX + 1; i++)
		many[i] = (struct iovec){ buf, SECTOR };
	ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, 0, many, IOV_MAX + 1, 0, NULL),
			 -EINVAL);
	g_free(many);
	ck_assert_int_eq(mirror_discard(fx.m, IMG_SECTORS - 1, 2), -ENOSPC);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, IMG_SECTORS, 1), -ENOSPC);
	ck_assert_int_eq(mirror_discard(fx.m, UINT64_MAX - 1, 4), -ENOSPC);

	/* Nothing reached the legs, and nothing was counted as done. */
	stats(&st);
	ck_assert_uint_eq(st.writes, 0);
	ck_assert_uint_eq(st.errors, 0);
	fx_check_legs(0, IMG);

	/* The largest request that fits does fit. */
	fx_write_random(IMG - 8192, 8192);
	fx_check_read(IMG - 8192, 8192);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase read-policy */

static const enum mirror_read_policy policies[] = {
	MIRROR_READ_FIRST,
	MIRROR_READ_ROUND_ROBIN,
	MIRROR_READ_BALANCE,
};

START_TEST(test_read_policy_names)
{
	enum mirror_read_policy p = MIRROR_READ_FIRST;

	for (unsigned i = 0; i < G_N_ELEMENTS(policies); i++) {
		const char *name = mirror_read_policy_name(policies[i]);

		ck_assert_int_eq(mirror_read_policy_parse(name, &p), 0);
		ck_assert_int_eq(p, policies[i]);
	}
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_BALANCE), "balance");
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_ROUND_ROBIN), "round-robin");
	ck_assert_str_eq(mirror_read_policy_name(MIRROR_READ_FIRST), "first");
	p = MIRROR_READ_ROUND_ROBIN;
	ck_assert_int_eq(mirror_read_policy_parse("fastest", &p), -EINVAL);
	ck_assert_int_eq(mirror_read_policy_parse("", &p), -EINVAL);
	ck_assert_int_eq(mirror_read_policy_parse("Balance", &p), -EINVAL);
	ck_assert_int_eq(p, MIRROR_READ_ROUND_ROBIN);
}
END_TEST

/* Reads issued since @base[]: per leg. */
static void read_deltas(const uint64_t *base, uint64_t *ret)
{
	struct mirror_leg_stats ls;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		ret[i] = ls.reads - base[i];
	}
}

static void read_marks(uint64_t *ret)
{
	struct mirror_leg_stats ls;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		ret[i] = ls.reads;
	}
}

START_TEST(test_read_policy_distribution)
{
	enum mirror_read_policy policy = policies[_i];
	const unsigned nr = 32;
	uint64_t base[2], d[2];
	struct io *ios[64];
	uint8_t *bufs[64];
	struct mirror_leg_stats ls0, ls1;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(policy, false);
	fx_write_random(0, 2 * MiB);

	/* One at a time, at starts that never continue an earlier read
	 * (multiples of 16 sectors, 8 long, descending). */
	read_marks(base);
	for (unsigned k = 0; k < nr; k++)
		fx_check_read((uint64_t)(nr - 1 - k) * 16 * SECTOR, 8 * SECTOR);
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], nr);
	switch (policy) {
	case MIRROR_READ_FIRST:
		ck_assert_msg(d[0] == nr && d[1] == 0, "first: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);
		break;
	case MIRROR_READ_ROUND_ROBIN:
		ck_assert_msg(d[0] == nr / 2 && d[1] == nr / 2,
			      "round-robin: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
		break;
	case MIRROR_READ_BALANCE:
		/* Idle legs share the load. */
		ck_assert_msg(d[0] > 0 && d[1] > 0, "balance: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);
		break;
	}

	/* A sequential stream, one read at a time. */
	read_marks(base);
	for (unsigned k = 0; k < nr; k++)
		fx_check_read(1 * MiB + (uint64_t)k * 4096, 4096);
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], nr);
	if (policy == MIRROR_READ_FIRST)
		ck_assert_msg(d[0] == nr, "first: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
	else if (policy == MIRROR_READ_ROUND_ROBIN)
		ck_assert_msg(d[0] == nr / 2 && d[1] == nr / 2,
			      "round-robin: legs read %" PRIu64 "/%" PRIu64, d[0], d[1]);
	else    /* sequential affinity: the stream stays on one leg */
		ck_assert_msg(d[0] == nr || d[1] == nr,
			      "balance: a sequential stream was split %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);

	/* Many at once. */
	read_marks(base);
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		struct iovec iov;

		bufs[k] = fx_buf(8 * SECTOR);
		iov = (struct iovec){ bufs[k], 8 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, (uint64_t)k * 32, &iov, 1, 0,
					   &ios[k]), 0);
	}
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		ck_assert_int_eq(io_wait(ios[k]), 0);
		fm_assert_bytes_eq(bufs[k], fx.model + (uint64_t)k * 32 * SECTOR, 8 * SECTOR,
				   "concurrent read %u", k);
	}
	read_deltas(base, d);
	ck_assert_uint_eq(d[0] + d[1], G_N_ELEMENTS(ios));
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(d[1], 0);
	else if (policy == MIRROR_READ_ROUND_ROBIN)
		ck_assert_uint_eq(d[0], d[1]);
	else
		ck_assert_msg(d[0] > 0 && d[1] > 0, "balance: legs read %" PRIu64 "/%" PRIu64,
			      d[0], d[1]);

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	ck_assert_uint_eq(ls0.read_errors + ls1.read_errors, 0);
	ck_assert_uint_eq(ls0.pending + ls1.pending, 0);
	ck_assert_uint_eq(ls0.read_bytes + ls1.read_bytes,
			  nr * 8 * SECTOR + nr * 4096 + G_N_ELEMENTS(ios) * 8 * SECTOR);
	fx_stop(0);
}
END_TEST

/* Reads of 8 sectors at descending starts (none continues another), one
 * at a time, then 32 at once; every read checked against the model. */
static void wm_reads(unsigned nr)
{
	struct io *ios[32];
	uint8_t *bufs[32];

	for (unsigned k = 0; k < nr; k++)
		fx_check_read((uint64_t)(nr - 1 - k) * 16 * SECTOR, 8 * SECTOR);
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		struct iovec iov;

		bufs[k] = fx_buf(8 * SECTOR);
		iov = (struct iovec){ bufs[k], 8 * SECTOR };
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_READ, (uint64_t)k * 32, &iov, 1, 0,
					   &ios[k]), 0);
	}
	for (unsigned k = 0; k < G_N_ELEMENTS(ios); k++) {
		ck_assert_int_eq(io_wait(ios[k]), 0);
		fm_assert_bytes_eq(bufs[k], fx.model + (uint64_t)k * 32 * SECTOR, 8 * SECTOR,
				   "concurrent read %u", k);
	}
}

/*
 * Write-mostly (md's --write-mostly), under every read policy: leg 0 (the
 * one policy "first" would read) is flagged at format and gets no reads
 * while legs 1 and 2 can serve them; it still gets every write; it serves
 * the reads the others fail, and all reads once they are gone.  Cleared
 * online, it is read again; the flag survives a stop and a re-assembly.
 */
START_TEST(test_read_write_mostly)
{
	enum mirror_read_policy policy = policies[_i];
	struct mirror_format_opts fo = { .size = IMG, .write_mostly = 1u << 0 };
	struct mirror_opts o = { .read_policy = policy, .max_read_errors = 1000 };
	/* Bad blocks that a rewrite heals: the repairs verify. */
	struct dmio_fault f = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				.sector = 0, .count = 1 * MiB / SECTOR };
	const unsigned nr = 32, total = nr + 32;
	struct mirror_leg_stats ls[3];
	uint64_t base[3], d[3], retries;
	struct mirror_stats st;
	struct fm_sb sb;
	GError *err = NULL;
	uint8_t uuid[16];

	FX_SEED();
	fx_name_legs(3);
	admin_ok(mirror_format((const char *const *)fx.legs, 3, &fo, uuid, &err), err, "format");
	read_sb(fx.legs[2], &sb);
	fx.data_offset = sb.data_offset;
	memset(fx.model, 0, IMG);
	ck_assert_uint_eq(sb.legs[0].flags, FM_SB_LEG_WRITE_MOSTLY);
	ck_assert_uint_eq(sb.legs[1].flags, 0);
	ck_assert_uint_eq(sb.legs[2].flags, 0);
	fx_assemble_opts(&o);
	leg_stats(0, &ls[0]);
	leg_stats(1, &ls[1]);
	ck_assert(ls[0].write_mostly);
	ck_assert(!ls[1].write_mostly);
	fx_write_random(0, 2 * MiB);

	/* 1. Legs 1 and 2 serve every read; leg 0 took every write. */
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[0] == 0 && d[1] + d[2] == total,
		      "%s: legs read %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      mirror_read_policy_name(policy), d[0], d[1], d[2]);
	if (policy != MIRROR_READ_FIRST)
		ck_assert_msg(d[1] > 0 && d[2] > 0, "%s: legs 1/2 read %" PRIu64 "/%" PRIu64,
			      mirror_read_policy_name(policy), d[1], d[2]);
	for (unsigned i = 0; i < 3; i++)
		leg_stats(i, &ls[i]);
	ck_assert_uint_gt(ls[0].writes, 0);
	ck_assert_uint_eq(ls[0].writes, ls[1].writes);

	/* 2. Legs 1 and 2 fail every read: leg 0 serves them (fail-over). */
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f, &err), err, "inject 1");
	admin_ok(mirror_inject(fx.m, fx.legs[2], &f, &err), err, "inject 2");
	stats(&st);
	retries = st.read_retries;
	read_marks(base);
	for (unsigned k = 0; k < 8; k++)
		fx_check_read((uint64_t)(7 - k) * 16 * SECTOR, 8 * SECTOR);
	read_deltas(base, d);
	stats(&st);
	/* Each read failed on both legs and was served by leg 0 (whose
	 * count also holds the reads of the repairs that follow). */
	ck_assert_uint_eq(st.read_retries - retries, 8);
	ck_assert_uint_ge(d[0], 8);
	ck_assert_uint_eq(d[1], 8);
	ck_assert_uint_eq(d[2], 8);
	admin_ok(mirror_inject(fx.m, fx.legs[1], NULL, &err), err, "clear 1");
	admin_ok(mirror_inject(fx.m, fx.legs[2], NULL, &err), err, "clear 2");
	/* Let the repairs of those reads end before the legs go. */
	{
		gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

		do {
			g_usleep(2000);
			leg_stats(1, &ls[1]);
			leg_stats(2, &ls[2]);
		} while ((ls[1].corrected < ls[1].read_errors ||
			  ls[2].corrected < ls[2].read_errors) &&
			 g_get_monotonic_time() < deadline);
	}

	/* 3. Cleared online: leg 0 is read again (every policy but "first"
	 * spreads; "first" now reads leg 0, the first leg). */
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[0], false, &err), err, "wm off");
	leg_stats(0, &ls[0]);
	ck_assert(!ls[0].write_mostly);
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[0] > 0, "%s: leg 0 not read once write-mostly was cleared",
		      mirror_read_policy_name(policy));
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(d[0], total);

	/* 4. Set again (leg 2 this time), recorded on disk, kept over a stop. */
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[2], true, &err), err, "wm on");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[2], true, &err), err, "wm on twice");
	ck_assert_int_eq(mirror_set_write_mostly(fx.m, "/nonexistent/leg", true, &err), -ENODEV);
	g_clear_error(&err);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.legs[0].flags, 0);
	ck_assert_uint_eq(sb.legs[2].flags, FM_SB_LEG_WRITE_MOSTLY);
	fx_stop(0);
	fx_assemble_opts(&o);
	leg_stats(2, &ls[2]);
	ck_assert(ls[2].write_mostly);
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_msg(d[2] == 0 && d[0] + d[1] == total,
		      "%s after re-assembly: legs read %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      mirror_read_policy_name(policy), d[0], d[1], d[2]);

	/* 5. The others gone: the write-mostly leg serves everything. */
	admin_ok(mirror_fail_leg(fx.m, fx.legs[0], &err), err, "fail 0");
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail 1");
	read_marks(base);
	wm_reads(nr);
	read_deltas(base, d);
	ck_assert_uint_eq(d[2], total);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase read-errors */

START_TEST(test_read_failover)
{
	enum mirror_read_policy policy = policies[_i];
	const uint64_t chunk = 64 * KiB;
	const uint64_t cut = IMG / 2;   /* leg 0 keeps data below this */
	uint64_t in_cut = 0;
	struct mirror_leg_stats ls0, ls1;
	struct mirror_stats st;

	struct mirror_opts o = { .read_policy = policy, .max_read_errors = 1000 };
	/* Leg 0 cannot read the second half of its data area, until a
	 * block is rewritten (a bad sector that the disk remaps on write). */
	struct dmio_fault f = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				.sector = cut / SECTOR, .count = (IMG - cut) / SECTOR };
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble_opts(&o);
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_write_random(off, 1 * MiB);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");

	/* Straddling the cut. */
	fx_check_read(cut - 4096, 8192);
	in_cut++;
	/* Descending: no read continues the one before (see the balance
	 * policy's sequential affinity), so every policy reaches leg 0. */
	for (uint64_t k = IMG / chunk; k-- > 0;) {
		fx_check_read(k * chunk, chunk);
		if (k * chunk >= cut)
			in_cut++;
	}
	/* Every bad copy is rewritten (and verified) from leg 1. */
	{
		gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;

		do {
			g_usleep(2000);
			leg_stats(0, &ls0);
		} while (ls0.corrected < ls0.read_errors && g_get_monotonic_time() < deadline);
	}

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(ls0.corrected, ls0.read_errors);
	ck_assert_uint_eq(ls0.state, FM_LEG_IN_SYNC);
	ck_assert_msg(ls0.read_errors > 0, "leg 0 never failed a read");
	ck_assert_uint_le(ls0.read_errors, in_cut);
	if (policy == MIRROR_READ_FIRST)
		ck_assert_uint_eq(ls0.read_errors, in_cut);
	ck_assert_uint_eq(ls1.read_errors, 0);
	ck_assert_uint_eq(st.read_retries, ls0.read_errors);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_uint_eq(ls0.pending + ls1.pending, 0);
	/* Healed: leg 0 reads the whole image fine now. */
	for (uint64_t k = IMG / chunk; k-- > 0;)
		fx_check_read(k * chunk, chunk);
	leg_stats(0, &ls1);
	ck_assert_uint_eq(ls1.read_errors, ls0.read_errors);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Three legs, two of them cut: a read is served by the third, and counts
 * as one read served by another leg however many legs failed it. */
START_TEST(test_read_failover_two_of_three)
{
	const uint64_t chunk = 128 * KiB;
	const uint64_t cut = IMG / 4;
	uint64_t in_cut = 0;
	struct mirror_leg_stats ls[3];
	struct mirror_stats st;

	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST, .max_read_errors = 1000 };
	struct dmio_fault f0 = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .sector = cut / SECTOR, .count = (IMG - cut) / SECTOR };
	struct dmio_fault f1 = { .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .sector = 2 * cut / SECTOR, .count = (IMG - 2 * cut) / SECTOR };
	const uint64_t both = (IMG - 2 * cut) / chunk;
	gint64 deadline;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(3);
	fx_format(IMG);
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f0, &err), err, "inject");
	admin_ok(mirror_inject(fx.m, fx.legs[1], &f1, &err), err, "inject");
	for (uint64_t off = 0; off < IMG; off += chunk) {
		fx_check_read(off, chunk);
		in_cut += off >= cut;
	}
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(2000);
		for (unsigned i = 0; i < 3; i++)
			leg_stats(i, &ls[i]);
	} while ((ls[0].corrected < in_cut || ls[1].corrected < both) &&
		 g_get_monotonic_time() < deadline);
	stats(&st);
	/* leg 0 fails every read from cut on; leg 1 those from 2 * cut on;
	 * each bad copy is rewritten from the leg that served the read. */
	ck_assert_uint_eq(ls[0].read_errors, in_cut);
	ck_assert_uint_eq(ls[1].read_errors, both);
	ck_assert_uint_eq(ls[2].read_errors, 0);
	ck_assert_uint_eq(ls[0].corrected, in_cut);
	ck_assert_uint_eq(ls[1].corrected, both);
	/* leg 2 served the reads both others failed, and their repairs. */
	ck_assert_uint_eq(ls[2].reads, 2 * both);
	ck_assert_uint_eq(st.read_retries, in_cut);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
}
END_TEST

START_TEST(test_read_all_legs_fail)
{
	struct mirror_leg_stats ls0, ls1;
	struct mirror_stats st;
	uint8_t *buf;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(_i ? MIRROR_READ_BALANCE : MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	truncate_file(fx.legs[0], fx.data_offset + IMG / 2);
	truncate_file(fx.legs[1], fx.data_offset + IMG / 2);

	buf = fx_buf(8192);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG / 2 + 64 * KiB, buf, 4096, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG / 2 - 4096, buf, 8192, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, IMG - 512, buf, 512, 0), -EIO);
	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(st.errors, 3);
	ck_assert_uint_eq(ls0.read_errors, 3);
	ck_assert_uint_eq(ls1.read_errors, 3);
	/* Tried on the other leg, but served by none. */
	ck_assert_uint_eq(st.read_retries, 0);
	/* What is left still reads. */
	fx_check_read(0, IMG / 2);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase write-errors: leg 1 on a 2 MiB tmpfs */

START_TEST(test_write_error_on_one_leg)
{
	const uint64_t chunk = 1 * MiB;
	const unsigned nw = 6;
	struct mirror_leg_stats ls0, ls1;
	struct mirror_status ms;
	struct mirror_stats st;
	struct fm_sb sb0, sb1, before;
	uint8_t *data;

	FX_SEED();
	fx.legs[0] = fx_path("leg0");
	fx.legs[1] = g_build_filename(tc_tmpfs, "leg1", NULL);
	fx.nlegs = 2;
	fx_format(IMG);
	read_sb(fx.legs[1], &before);
	fx_assemble(MIRROR_READ_FIRST, false);

	/* Leg 1 runs out of space: it fails, the array goes on degraded, and
	 * no write fails. */
	data = fx_buf(nw * chunk);
	fm_rng_fill(&fx.rng, data, nw * chunk);
	for (unsigned k = 0; k < nw; k++) {
		int e = fx_rw(MIRROR_OP_WRITE, k * chunk, data + k * chunk, chunk, 0);

		ck_assert_msg(e == 0, "write %u: %d (a leg failing must not fail a write)", k, e);
	}
	memcpy(fx.model, data, nw * chunk);

	leg_stats(0, &ls0);
	leg_stats(1, &ls1);
	stats(&st);
	ck_assert_uint_eq(ls1.state, FM_LEG_FAULTY);
	ck_assert_uint_eq(ls0.state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(ls1.write_errors, 1);         /* then it gets no more I/O */
	ck_assert_uint_eq(ls0.write_errors, 0);
	ck_assert_uint_eq(ls0.writes, nw);
	ck_assert_uint_eq(st.errors, 0);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded && !ms.failed);
	ck_assert_uint_eq(ms.nr_in_sync, 1);
	ck_assert_uint_eq(ms.nr_faulty, 1);
	ck_assert_str_eq(ms.state, "degraded");
	/* Already recorded on the remaining leg (before the writes returned). */
	read_sb(fx.legs[0], &sb0);
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_gt(sb0.events, before.events + 1);
	for (unsigned k = 0; k < nw; k++)
		fx_check_read(k * chunk, chunk);

	/* Leg 0 has everything; leg 1's superblock is left as it was. */
	fx_stop(0);
	{
		uint8_t *buf = g_malloc(IMG);

		fm_test_read_file(fx.legs[0], fx.data_offset, buf, IMG);
		fm_assert_bytes_eq(buf, fx.model, IMG, "leg 0 after leg 1 failed writes");
		g_free(buf);
	}
	read_sb(fx.legs[0], &sb0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_msg(sb0.state_flags & FM_SB_CLEAN, "the degraded array was stopped cleanly");
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_lt(sb1.events, sb0.events);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase resilience: failing, re-adding, replacing legs; repair; scrub */

/* Fail a leg, write while degraded, stop: the mount with both legs re-adds
 * the stale one and copies only the regions written meanwhile. */
START_TEST(test_stale_leg_bitmap_recovery)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb0, sb1;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	ck_assert_int_eq(mirror_fail_leg(fx.m, fx.legs[1], &err), -EALREADY);
	g_clear_error(&err);
	ck_assert_int_eq(mirror_fail_leg(fx.m, fx.legs[0], &err), -EBUSY);
	check_error(err, -EBUSY, "fail", fx.legs[0], "last leg", NULL);
	err = NULL;
	read_sb(fx.legs[0], &sb0);
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);

	fx_write_random(3 * REGION + 4 * KiB, 64 * KiB);
	fx_write_random(6 * REGION + REGION / 2, 64 * KiB);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	fx_stop(0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_lt(sb1.events, sb0.events);

	fx_assemble(MIRROR_READ_FIRST, false);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert(!ms.degraded);
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.legs[1].state, FM_LEG_IN_SYNC);
	ck_assert(sb1.state_flags & FM_SB_CLEAN);
}
END_TEST

/* Online: fail + remove, write, add back (bitmap), add a new leg (full). */
START_TEST(test_remove_and_add_online)
{
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;
	int r;

	struct mirror_opts o = { .bitmap_delay_ms = 50 };
	gint64 deadline;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	/* The bits of those writes are cleared once idle (not degraded). */
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(10000);
		mirror_get_status(fx.m, &ms);
	} while ((ms.bitmap_set || ms.bitmap_writes < 2) && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ms.bitmap_set, 0);
	ck_assert_uint_ge(ms.bitmap_writes, 2);
	r = mirror_remove_leg(fx.m, fx.legs[1], &err);
	ck_assert_int_eq(r, -EBUSY);
	check_error(err, r, "remove", fx.legs[1], "fail it first", NULL);
	err = NULL;
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	leg_stats(1, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REMOVED);
	ck_assert_str_eq(ls.path, "");
	ck_assert_int_eq(mirror_remove_leg(fx.m, fx.legs[1], &err), -ENODEV);
	g_clear_error(&err);
	g_usleep(200000);       /* degraded: no bit is cleared now */

	fx_write_random(1 * REGION, 8 * KiB);
	fx_write_random(5 * REGION + 100 * KiB, 300 * KiB);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	g_usleep(200000);
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add (re-add)");
	ck_assert_int_eq(mirror_add_leg(fx.m, fx.legs[1], false, &err), -EEXIST);
	g_clear_error(&err);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);

	/* A new leg: formatted, rebuilt wholly, under writes. */
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add (new)");
	fx_write_random(7 * REGION, 64 * KiB);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	ck_assert_uint_eq(ms.resynced_regions, 2 + IMG / REGION);
	fx.nlegs = 3;
	for (unsigned i = 0; i < 3; i++)
		fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	/* All three assemble as one array again. */
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	ck_assert_uint_eq(mirror_nr_legs(fx.m), 3);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

START_TEST(test_replace_leg)
{
	struct mirror_status ms;
	char *old[2];
	GError *err = NULL;
	struct mirror *m = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, IMG);
	fx.legs[2] = fx_path("new");
	admin_ok(mirror_replace_leg(fx.m, fx.legs[1], fx.legs[2], false, &err), err, "replace");
	fx_write_random(2 * REGION, 128 * KiB);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert_uint_eq(ms.nr_slots, 2);
	{
		struct mirror_leg_stats ls;

		ck_assert_uint_eq(mirror_nr_legs(fx.m), 3);
		leg_stats(1, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_EMPTY);
		leg_stats(2, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		ck_assert_str_eq(ls.path, fx.legs[2]);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
	/* The new leg and leg 0 are the array; the old one is out. */
	old[0] = fx.legs[0];
	old[1] = fx.legs[1];
	r = mirror_assemble((const char *const *)old, 2, NULL, &m, &err);
	ck_assert_int_eq(r, -ESTALE);
	check_error(err, r, "assemble", fx.legs[1], "no longer a leg", NULL);
	err = NULL;
	g_free(fx.legs[1]);
	fx.legs[1] = fx.legs[2];
	fx.legs[2] = NULL;
	fx_check_legs(0, IMG);
	fx.m = assemble_ok(fx.legs, 2, MIRROR_READ_BALANCE, false);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

/* Wait until the running sync action has done at least @bytes. */
static void wait_sync_done(uint64_t bytes)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_status ms;

	for (;;) {
		mirror_get_status(fx.m, &ms);
		if (ms.action != MIRROR_SYNC_IDLE && ms.sync_done >= bytes)
			return;
		ck_assert_msg(ms.action != MIRROR_SYNC_IDLE, "the sync action ended early");
		ck_assert_msg(g_get_monotonic_time() < deadline, "sync done %" PRIu64 " after %d s",
			      ms.sync_done, WAIT_SECONDS);
		g_usleep(5000);
	}
}

/*
 * Interrupted rebuilds (issue 13 item 7), at 2 MiB/s so that a stop lands
 * in the middle of one:
 *   _i == 0: a new leg's full rebuild stopped after 3 MiB resumes at its
 *            checkpoint at the next mount (recovery_offset in its
 *            superblock; the resumed pass copies only the rest), under
 *            writes below and above it; an `add` while it runs is queued
 *            (returns 1) and rebuilt when it ends; all legs end equal.
 *   _i == 1: a `replace` stopped half-way finishes at the next mount and
 *            retires the old leg (its slot freed; it no longer assembles).
 */
START_TEST(test_rebuild_resume)
{
	struct mirror_opts o = { .sync_speed_min = 2 * MiB, .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb;
	GError *err = NULL;
	uint64_t off;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	fx.legs[2] = fx_path("new");
	if (_i == 0)
		admin_ok(mirror_add_leg(fx.m, fx.legs[2], 0, &err), err, "add");
	else
		admin_ok(mirror_replace_leg(fx.m, fx.legs[1], fx.legs[2], 0, &err), err,
			 "replace");
	wait_sync_done(3 * MiB);
	fx_stop(0);

	/* The checkpoint: a region boundary past what was waited for. */
	read_sb(fx.legs[2], &sb);
	ck_assert_uint_eq(sb.legs[2].state, FM_LEG_REBUILDING);
	off = sb.recovery_offset;
	ck_assert_msg(off >= 2 * MiB && off < IMG && off % REGION == 0,
		      "recovery_offset %" PRIu64, off);
	if (_i == 1) {
		ck_assert(sb.legs[2].flags & FM_SB_LEG_REPLACEMENT);
		ck_assert_uint_eq(FM_SB_LEG_REPLACED_SLOT(sb.legs[2].flags), 1);
	}

	fx.nlegs = 3;
	fx_assemble_opts(&o);
	do {    /* until the pass has counted what it copies */
		g_usleep(1000);
		mirror_get_status(fx.m, &ms);
	} while (ms.action == MIRROR_SYNC_RECOVER && ms.sync_total == 0);
	ck_assert_int_eq(ms.action, MIRROR_SYNC_RECOVER);
	ck_assert_msg(ms.sync_total == IMG - off, "resumed pass copies %" PRIu64
		      " bytes, the rest is %" PRIu64, ms.sync_total, (uint64_t)(IMG - off));
	fx_write_random(0, 64 * KiB);                   /* below the checkpoint */
	fx_write_random(IMG - 128 * KiB, 64 * KiB);     /* above it */
	if (_i == 0) {
		fx.legs[3] = fx_path("queued");
		r = mirror_add_leg(fx.m, fx.legs[3], 0, &err);
		ck_assert_msg(r == 1, "add during a recovery: %d %s", r, err ? err->message : "");
		leg_stats(3, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
		fx_write_random(IMG / 2, 64 * KiB);
		fx.nlegs = 4;
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, _i == 0 ? 4 : 2);
	ck_assert_uint_eq(ms.nr_slots, _i == 0 ? 4 : 2);
	if (_i == 1) {
		leg_stats(1, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_EMPTY);
		leg_stats(2, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
		read_sb(fx.legs[2], &sb);
		ck_assert_uint_eq(sb.legs[2].flags, 0);
		ck_assert_uint_eq(sb.legs[1].state, FM_LEG_EMPTY);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
	if (_i == 1) {
		char *legs[2] = { fx.legs[0], fx.legs[1] };
		struct mirror *m = NULL;

		r = mirror_assemble((const char *const *)legs, 2, NULL, &m, &err);
		ck_assert_int_eq(r, -ESTALE);
		g_clear_error(&err);
		g_free(fx.legs[1]);
		fx.legs[1] = fx.legs[2];
		fx.legs[2] = NULL;
		fx.nlegs = 2;
	}
	fx_check_legs(0, IMG);
}
END_TEST

/* An add during a scrub is queued behind it; cancelling the scrub starts
 * the queued rebuild at once (a cancel is not a stop of the mirror). */
START_TEST(test_add_queued_behind_scrub)
{
	struct mirror_opts o = { .sync_speed_min = 2 * MiB, .sync_speed_max = 2 * MiB };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	fx.legs[2] = fx_path("new");
	r = mirror_add_leg(fx.m, fx.legs[2], 0, &err);
	ck_assert_msg(r == 1, "add during a scrub: %d %s", r, err ? err->message : "");
	leg_stats(2, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	mirror_get_status(fx.m, &ms);
	ck_assert_int_eq(ms.action, MIRROR_SYNC_CHECK);
	admin_ok(mirror_scrub_cancel(fx.m, &err), err, "scrub cancel");
	fx_write_random(3 * REGION, 64 * KiB);
	wait_sync_idle(&ms);
	ck_assert_int_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.nr_in_sync, 3);
	fx.nlegs = 3;
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* A read error: the read is served by the other leg, the bad copy is
 * rewritten and verified; the leg stays in sync. */
START_TEST(test_read_error_repaired)
{
	struct dmio_fault f = {
		.flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
		.sector = (1 * MiB + 8 * KiB) / SECTOR,
		.count = 8,
	};
	struct mirror_leg_stats ls;
	struct mirror_stats st;
	gint64 deadline;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(1 * MiB, 64 * KiB);
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	leg_stats(0, &ls);
	ck_assert(ls.fault_set);
	ck_assert_uint_eq(ls.fault.sector, f.sector);
	fx_check_read(1 * MiB, 64 * KiB);
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(5000);
		leg_stats(0, &ls);
	} while (ls.corrected == 0 && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ls.corrected, 1);
	ck_assert_uint_eq(ls.read_errors, 1);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	stats(&st);
	ck_assert_uint_eq(st.read_retries, 1);
	ck_assert_uint_eq(st.errors, 0);
	/* Healed: leg 0 serves the read itself now. */
	fx_check_read(1 * MiB, 64 * KiB);
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.read_errors, 1);
	admin_ok(mirror_inject(fx.m, fx.legs[0], NULL, &err), err, "inject clear");
	leg_stats(0, &ls);
	ck_assert(!ls.fault_set);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * _i == 0: blocks that heal when rewritten: each read fails once and is
 * repaired, but every read of the leg fails (a rate far above
 * max_read_error_ppm): the leg is failed at the max_read_errors-th
 * corrected error.
 * _i == 1: blocks that stay bad: the re-reads after the rewrites fail too,
 * and count as read errors as well.
 */
START_TEST(test_read_errors_fail_leg)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST, .max_read_errors = 3 };
	struct dmio_fault f = { .flags = DMIO_FAULT_READS, .sector = 0, .count = IMG / SECTOR };

	struct mirror_leg_stats ls;
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	if (_i == 0)
		f.flags |= DMIO_FAULT_HEAL_ON_WRITE;
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
	for (unsigned k = 0; k < 8; k++) {
		fx_check_read(k * REGION, 4 * KiB);
		/* let the repair of this one finish */
		for (unsigned w = 0; w < (_i == 0 ? 2000u : 100u); w++) {
			leg_stats(0, &ls);
			if (ls.state != FM_LEG_IN_SYNC || ls.corrected == ls.read_errors)
				break;
			g_usleep(1000);
		}
	}
	fx_wait_all();
	leg_stats(0, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	if (_i == 0) {
		ck_assert_uint_eq(ls.read_errors, 3);
		ck_assert_uint_eq(ls.corrected, 3);
	} else {
		/* A read in flight when the leg failed may add one. */
		ck_assert_uint_ge(ls.read_errors, 3);
		ck_assert_uint_le(ls.read_errors, 4);
		ck_assert_uint_eq(ls.corrected, 0);
	}
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded);
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

/* Wait until leg 0's repairs are over: read_errors - corrected == @want
 * (the errors that stay uncorrected), or the leg is no longer in sync. */
static void wait_repairs(uint64_t want)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_leg_stats ls;

	do {
		leg_stats(0, &ls);
		if (ls.state != FM_LEG_IN_SYNC || ls.read_errors - ls.corrected == want)
			return;
		g_usleep(1000);
	} while (g_get_monotonic_time() < deadline);
	ck_abort_msg("leg 0: %" PRIu64 " read errors, %" PRIu64 " corrected, expected %" PRIu64
		     " uncorrected", ls.read_errors, ls.corrected, want);
}

/* Wait until leg 0's error counts have not changed for 100 ms. */
static void wait_quiet(void)
{
	gint64 deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	struct mirror_leg_stats a, b;

	leg_stats(0, &a);
	for (;;) {
		g_usleep(100 * 1000);
		leg_stats(0, &b);
		if (a.read_errors == b.read_errors && a.corrected == b.corrected)
			return;
		ck_assert_msg(g_get_monotonic_time() < deadline, "leg 0's repairs never end");
		a = b;
	}
}

/*
 * The error rate, not a count, fails a leg whose errors are corrected
 * (issue 13 item 7: 1% transient read errors failed a leg after 21 errors,
 * every rewrite having verified).  Policy "first": leg 0 serves every read.
 *   _i == 0: 1% of leg 0's reads fail at random (transient: the rewrite
 *            and its re-read succeed, but for 1% of the re-reads): 8192
 *            reads, some 80 errors, four times max_read_errors, nearly
 *            all corrected: the leg stays in sync.
 *   _i == 1: reads over the image, but 10 blocks stay unreadable (the re-read
 *            after each rewrite fails too): the leg is failed at
 *            max_read_errors uncorrected errors, less than 1% of its reads.
 *   _i == 2: the counts decay: max_read_errors 4, halved every 200 ms;
 *            blocks that stay bad (2 uncorrected errors per read: the read
 *            and the re-read); two such reads 250 ms apart never reach 4,
 *            two in a row do.
 */
START_TEST(test_read_error_rate)
{
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST };
	struct dmio_fault f = { .flags = DMIO_FAULT_READS, .sector = 0, .count = IMG_SECTORS };
	struct mirror_leg_stats ls;
	GError *err = NULL;

	FX_SEED();
	if (_i == 2) {
		o.max_read_errors = 4;
		o.read_error_decay_ms = 200;
	}
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	if (_i == 0) {
		f.rate_ppm = 10000;
		f.seed = fm_rng_next(&fx.rng);
	} else {
		f.sector = 1 * MiB / SECTOR;
		f.count = 40 * KiB / SECTOR;
	}
	admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");

	if (_i == 2) {
		fx_check_read(1 * MiB, 4 * KiB);
		wait_repairs(2);
		g_usleep(250 * 1000);
		fx_check_read(1 * MiB + 4 * KiB, 4 * KiB);
		wait_repairs(4);
		g_usleep(250 * 1000);
		fx_check_read(1 * MiB + 8 * KiB, 4 * KiB);
		wait_repairs(6);
		leg_stats(0, &ls);
		ck_assert_msg(ls.state == FM_LEG_IN_SYNC, "decayed errors failed the leg");
		fx_check_read(1 * MiB + 12 * KiB, 4 * KiB);
		wait_repairs(8);
		leg_stats(0, &ls);
		ck_assert_msg(ls.state == FM_LEG_FAULTY, "errors in a row did not fail the leg");
		fx_stop(0);
		return;
	}
	for (unsigned k = 0; k < 8192; k++)
		fx_check_read((uint64_t)(k * 4 * KiB) % IMG, 4 * KiB);
	fx_wait_all();
	if (_i == 0) {
		/* Some re-reads failed too (1% of them): those errors stay
		 * uncorrected, a few. */
		wait_quiet();
		leg_stats(0, &ls);
		ck_assert_msg(ls.corrected > 40, "only %" PRIu64 " corrected of %" PRIu64
			      " read errors", ls.corrected, ls.read_errors);
		ck_assert_msg(ls.state == FM_LEG_IN_SYNC,
			      "leg 0 failed with %" PRIu64 " corrected errors in %" PRIu64 " reads",
			      ls.corrected, ls.reads);
		ck_assert_uint_lt(ls.read_errors - ls.corrected, 20);
	} else {
		leg_stats(0, &ls);
		ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
		ck_assert_uint_eq(ls.corrected, 0);
		ck_assert_uint_ge(ls.read_errors, 20);
		ck_assert_uint_le(ls.read_errors, 21);
	}
	fx_check_read(0, IMG);
	fx_stop(0);
}
END_TEST

static void corrupt_leg(const char *path, uint64_t off)
{
	uint8_t b[4096];

	fm_test_read_file(path, fx.data_offset + off, b, sizeof(b));
	for (unsigned k = 0; k < sizeof(b); k += 512)
		b[k] ^= 0x5a;
	fm_test_write_file(path, fx.data_offset + off, b, sizeof(b));
}

START_TEST(test_scrub_check_and_repair)
{
	struct mirror_status ms;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_FIRST, false);
	fx_write_random(0, IMG);
	fx_wait_all();
	corrupt_leg(fx.legs[1], 12 * KiB);
	corrupt_leg(fx.legs[1], 5 * REGION + 64 * KiB);
	corrupt_leg(fx.legs[1], IMG - 4 * KiB);

	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	ck_assert_int_eq(mirror_scrub(fx.m, false, &err), -EBUSY);
	g_clear_error(&err);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_CHECK);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	ck_assert_uint_eq(ms.sync_done, IMG);
	/* check does not rewrite */
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub again");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);

	admin_ok(mirror_scrub(fx.m, true, &err), err, "scrub --repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_REPAIR);
	ck_assert_uint_eq(ms.mismatches, 3 * 8);
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub after repair");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.mismatches, 0);
	ck_assert_int_eq(mirror_scrub_cancel(fx.m, &err), -ENOENT);
	g_clear_error(&err);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Every leg failing: EIO, never stale data. */
START_TEST(test_all_legs_fail)
{
	struct dmio_fault f = { .flags = DMIO_FAULT_WRITES | DMIO_FAULT_READS };
	struct mirror_status ms;
	uint8_t *buf;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 1 * MiB);
	buf = fx_buf(64 * KiB);
	for (unsigned i = 0; i < 2; i++)
		admin_ok(mirror_inject(fx.m, fx.legs[i], &f, &err), err, "inject");
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 0, buf, 64 * KiB, 0), -EIO);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.failed);
	ck_assert_str_eq(ms.state, "failed");
	ck_assert_int_eq(fx_rw(MIRROR_OP_READ, 0, buf, 64 * KiB, 0), -EIO);
	ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 2 * MiB, buf, 4 * KiB, 0), -EIO);
	ck_assert_int_eq(mirror_flush(fx.m), -EIO);
	fx_stop(-EIO);
}
END_TEST

/*
 * After a crash, only the regions marked in the bitmap are copied: a
 * difference planted in an unmarked region survives the resync, one in a
 * marked region is gone.
 */
START_TEST(test_crash_resync_bitmap_only)
{
	struct mirror_status ms;
	uint8_t *data, b0[4096], b1[4096];

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	data = fx_buf(64 * KiB);
	fm_rng_fill(&fx.rng, data, 64 * KiB);
	crash_after_write(&(struct mirror_opts){ .bitmap_delay_ms = 60000 }, data, 3 * REGION,
			  64 * KiB);
	memcpy(fx.model + 3 * REGION, data, 64 * KiB);
	/* Plant differences on leg 1: in region 3 (marked) and region 6 (not). */
	corrupt_leg(fx.legs[1], 3 * REGION + 128 * KiB);
	corrupt_leg(fx.legs[1], 6 * REGION);

	fx_assemble(MIRROR_READ_FIRST, false);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RESYNC);
	ck_assert_uint_eq(ms.resynced_regions, 1);
	fx_stop(0);
	fx_check_legs(0, 6 * REGION);
	fm_test_read_file(fx.legs[0], fx.data_offset + 6 * REGION, b0, sizeof(b0));
	fm_test_read_file(fx.legs[1], fx.data_offset + 6 * REGION, b1, sizeof(b1));
	ck_assert_msg(memcmp(b0, b1, sizeof(b0)), "region 6 was copied though not marked");
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase ordering */

#define ORD_THREADS 4
#define ORD_WRITES 300
#define ORD_BASE (1 * MiB / SECTOR)    /* first sector of the window */
#define ORD_WINDOW 32                   /* sectors every write falls in */
#define ORD_MAX 8                       /* sectors per write, at most */

struct ord_write {
	uint64_t seq;           /* submission order, over all threads */
	uint64_t sector;        /* in the window */
	unsigned count;
	uint8_t *buf;
	struct io *io;
	int rc;
};

struct ord_thread {
	GThread *thread;
	uint64_t seed;
	struct ord_write w[ORD_WRITES];
};

static struct {
	pthread_mutex_t lock;   /* held from taking a seq number to submit's return */
	uint64_t next_seq;
} ord;

static gpointer ord_thread_fn(gpointer p)
{
	struct ord_thread *t = p;
	struct fm_rng rng;

	fm_rng_seed(&rng, t->seed);
	for (unsigned i = 0; i < ORD_WRITES; i++) {
		struct ord_write *w = &t->w[i];
		struct iovec iov[2];
		unsigned iovcnt = 1;
		size_t len;

		w->sector = fm_rng_between(&rng, 0, ORD_WINDOW - 1);
		w->count = (unsigned)fm_rng_between(&rng, 1, MIN(ORD_MAX, ORD_WINDOW - w->sector));
		len = (size_t)w->count * SECTOR;
		if (posix_memalign((void **)&w->buf, 4096, len) != 0) {
			w->rc = -ENOMEM;
			continue;
		}
		fm_rng_fill(&rng, w->buf, len);
		iov[0] = (struct iovec){ w->buf, len };
		if (len > SECTOR && (fm_rng_next(&rng) & 1)) {
			size_t cut = (size_t)fm_rng_between(&rng, 1, len - 1);

			iov[0].iov_len = cut;
			iov[1] = (struct iovec){ w->buf + cut, len - cut };
			iovcnt = 2;
		}
		w->io = g_new0(struct io, 1);
		pthread_mutex_lock(&ord.lock);
		w->seq = ord.next_seq++;
		w->rc = mirror_submit(fx.m, MIRROR_OP_WRITE, ORD_BASE + w->sector, iov, iovcnt,
				      0, io_done, w->io);
		pthread_mutex_unlock(&ord.lock);
		if (i % 32 == 0)
			g_thread_yield();
	}
	return NULL;
}

START_TEST(test_ordering_threads)
{
	struct ord_thread *t = g_new0(struct ord_thread, ORD_THREADS);
	uint64_t last[ORD_WINDOW];
	struct mirror_stats st;
	unsigned total = 0;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_ROUND_ROBIN, false);
	pthread_mutex_init(&ord.lock, NULL);
	ord.next_seq = 0;

	for (unsigned i = 0; i < ORD_THREADS; i++) {
		t[i].seed = fm_rng_next(&fx.rng);
		t[i].thread = g_thread_new("ord", ord_thread_fn, &t[i]);
	}
	for (unsigned i = 0; i < ORD_THREADS; i++)
		g_thread_join(t[i].thread);
	/* Hand everything to the fixture before asserting anything. */
	fx_lock();
	for (unsigned i = 0; i < ORD_THREADS; i++) {
		for (unsigned k = 0; k < ORD_WRITES; k++) {
			struct ord_write *w = &t[i].w[k];

			if (w->buf)
				g_ptr_array_add(fx.bufs, w->buf);
			if (w->io)
				g_ptr_array_add(w->rc == 0 ? fx.accepted : fx.refused, w->io);
		}
	}
	fx_unlock();
	for (unsigned i = 0; i < ORD_THREADS; i++)
		for (unsigned k = 0; k < ORD_WRITES; k++)
			ck_assert_msg(t[i].w[k].rc == 0, "thread %u write %u: %d", i, k,
				      t[i].w[k].rc);
	fx_wait_all();
	for (unsigned i = 0; i < ORD_THREADS; i++)
		for (unsigned k = 0; k < ORD_WRITES; k++)
			ck_assert_msg(t[i].w[k].io->err == 0, "thread %u write %u completed with %d",
				      i, k, t[i].w[k].io->err);

	/* Each sector holds the last write submitted to it. */
	for (unsigned s = 0; s < ORD_WINDOW; s++)
		last[s] = UINT64_MAX;
	for (unsigned i = 0; i < ORD_THREADS; i++) {
		for (unsigned k = 0; k < ORD_WRITES; k++) {
			struct ord_write *w = &t[i].w[k];

			for (unsigned s = (unsigned)w->sector; s < w->sector + w->count; s++) {
				if (last[s] != UINT64_MAX && last[s] > w->seq)
					continue;
				last[s] = w->seq;
				memcpy(fx.model + (ORD_BASE + s) * SECTOR,
				       w->buf + (s - w->sector) * SECTOR, SECTOR);
			}
			total++;
		}
	}
	fx_check_legs(0, IMG);
	fx_check_read(ORD_BASE * SECTOR, ORD_WINDOW * SECTOR);

	stats(&st);
	ck_assert_uint_eq(st.writes, total);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_msg(st.overlap_waits > 0, "no write ever waited for an overlapping one");
	fprintf(stderr, "test_mirror: ordering: %u writes, %" PRIu64 " waited\n", total,
		st.overlap_waits);
	fx_stop(0);
	pthread_mutex_destroy(&ord.lock);
	g_free(t);
}
END_TEST

/* A discard (and a write-zeroes) overlapping writes still in flight is
 * ordered after them: the range reads back as zeroes on every leg. */
START_TEST(test_ordering_discard_after_writes)
{
	const uint64_t base = 2 * MiB / SECTOR, window = 64;
	const unsigned nw = 200;
	uint64_t dz_start = base + 16, dz_count = 32;
	struct mirror_stats st;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);

	for (unsigned k = 0; k < nw; k++) {
		uint64_t s = k == 0 ? 0 : fm_rng_between(&fx.rng, 0, window - 1);
		uint64_t c = k == 0 ? window : fm_rng_between(&fx.rng, 1, MIN(16, window - s));
		size_t len = (size_t)c * SECTOR;
		uint8_t *buf = fx_buf(len);
		struct iovec iov = { buf, len };

		fm_rng_fill(&fx.rng, buf, len);
		ck_assert_int_eq(fx_submit(fx.m, MIRROR_OP_WRITE, base + s, &iov, 1, 0, NULL), 0);
		/* Submitted in order from one thread: the last one wins. */
		memcpy(fx.model + (base + s) * SECTOR, buf, len);
	}
	if (_i == 0)
		r = mirror_discard(fx.m, dz_start, dz_count);
	else
		r = mirror_write_zeroes(fx.m, dz_start, dz_count);
	ck_assert_int_eq(r, 0);
	memset(fx.model + dz_start * SECTOR, 0, dz_count * SECTOR);
	/* Already on return, before the other writes complete. */
	for (unsigned i = 0; i < fx.nlegs; i++)
		ck_assert_msg(file_range_is_zero(fx.legs[i], fx.data_offset + dz_start * SECTOR,
						  dz_count * SECTOR),
			      "leg %u: the %s range is not zero on return", i,
			      _i ? "write-zeroes" : "discard");
	fx_wait_all();
	fx_check_legs(0, IMG);
	fx_check_read(base * SECTOR, window * SECTOR);
	stats(&st);
	ck_assert_uint_eq(st.writes, nw);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase zeroes: flush, discard, write-zeroes */

START_TEST(test_zeroes_and_flush)
{
	struct { bool discard; uint64_t sector, count; } cases[] = {
		{ true, 1 * MiB / SECTOR + 8, 128 },            /* 4 KiB aligned */
		{ true, 1 * MiB / SECTOR + 600 + 3, 100 },      /* odd sectors */
		{ false, 2 * MiB / SECTOR, 256 },
		{ false, 2 * MiB / SECTOR + 700 + 1, 7 },
		{ true, 0, 1 },                                 /* the first sector */
		{ false, IMG_SECTORS - 3, 3 },                  /* the last ones */
	};
	struct mirror_stats st0, st;
	unsigned ndiscards = 0;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	fx_write_random(0, 4 * MiB);
	fx_write_random(IMG - 1 * MiB, 1 * MiB);
	stats(&st0);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	stats(&st);
	ck_assert_uint_eq(st.flushes, st0.flushes + 1);

	for (unsigned k = 0; k < G_N_ELEMENTS(cases); k++) {
		int r = cases[k].discard ? mirror_discard(fx.m, cases[k].sector, cases[k].count)
					 : mirror_write_zeroes(fx.m, cases[k].sector,
							       cases[k].count);

		ck_assert_msg(r == 0, "case %u: %d", k, r);
		memset(fx.model + cases[k].sector * SECTOR, 0, cases[k].count * SECTOR);
		ndiscards += cases[k].discard;
		fx_check_legs(0, IMG);
	}
	/* Nothing at all. */
	ck_assert_int_eq(mirror_discard(fx.m, 100, 0), 0);
	ck_assert_int_eq(mirror_write_zeroes(fx.m, 100, 0), 0);
	fx_check_legs(0, IMG);
	for (uint64_t off = 0; off < IMG; off += 1 * MiB)
		fx_check_read(off, 1 * MiB);
	stats(&st);
	ck_assert_uint_ge(st.discards, ndiscards);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_int_eq(mirror_flush(fx.m), 0);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase bufio: the mirror under a bufio client */

START_TEST(test_bufio_on_mirror)
{
	static const unsigned block_sizes[] = { 512, 4096, 65536 };
	unsigned bs = block_sizes[_i];
	uint64_t nblocks = IMG / bs;
	uint64_t blocks[] = { 0, 1, 5, nblocks / 2, nblocks - 1 };
	struct bufio_client *c = NULL;
	struct fm_bdev bdev;
	struct bufio_buffer *b;
	struct mirror_stats st;

	FX_SEED();
	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble(MIRROR_READ_BALANCE, false);
	bdev = mirror_bdev(fx.m);
	ck_assert_ptr_nonnull(bdev.ops);
	ck_assert_ptr_nonnull(bdev.ops->submit);
	ck_assert_uint_eq(bdev.ops->size(bdev.dev), IMG);
	ck_assert_int_eq(bufio_client_create(&bdev, bs, 1, 0, NULL, NULL, &c), 0);

	for (unsigned k = 0; k < G_N_ELEMENTS(blocks); k++) {
		uint8_t *p;

		ck_assert_int_eq(bufio_new(c, blocks[k], &b), 0);
		p = bufio_begin_modify(b);
		fm_rng_fill(&fx.rng, p, bs);
		memcpy(fx.model + blocks[k] * bs, p, bs);
		bufio_mark_buffer_dirty(b);
		bufio_release(b);
	}
	ck_assert_int_eq(bufio_write_dirty_buffers(c), 0);
	fx_check_legs(0, IMG);

	/* Reads through the cache come from the mirror. */
	fx_write_random(3 * bs, bs);
	ck_assert_int_eq(bufio_read(c, 3, &b), 0);
	fm_assert_bytes_eq(bufio_get_block_data(b), fx.model + 3 * bs, bs, "bufio_read");
	bufio_release(b);
	ck_assert_int_eq(bufio_read(c, blocks[3], &b), 0);
	fm_assert_bytes_eq(bufio_get_block_data(b), fx.model + blocks[3] * bs, bs,
			   "bufio_read of a block written through bufio");
	bufio_release(b);
	bufio_client_destroy(c);

	stats(&st);
	ck_assert_uint_ge(st.writes, 2);
	ck_assert_uint_ge(st.flushes, 1);
	ck_assert_uint_eq(st.errors, 0);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/* Event names are user interface (monitor --program's argument): every
 * type has its own, and a type outside the enum is "Unknown". */
START_TEST(test_event_names)
{
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

	for (int t = 0; t < FM_EVENT__MAX; t++) {
		const char *n = fm_event_name((enum fm_event_type)t);

		ck_assert_msg(strcmp(n, "Unknown") != 0, "event %d has no name", t);
		ck_assert_msg(g_hash_table_add(seen, (gpointer)n), "event %d: name %s twice", t, n);
	}
	ck_assert_str_eq(fm_event_name(FM_EVENT_LEG_FAILED), "Fail");
	ck_assert_str_eq(fm_event_name(FM_EVENT__MAX), "Unknown");
	ck_assert_str_eq(fm_event_name((enum fm_event_type)-1), "Unknown");
}
END_TEST

/*----------------------------------------------------------------*/
/* Events (include/fusemirror/event.h) */

/* What the handler saw, in order. */
struct ev_rec {
	enum fm_event_type type;
	int leg;
	uint64_t value;
	int err;
	char path[256];
	bool uuid_set;
};

static struct {
	pthread_mutex_t lock;           /* guards the fields below */
	struct ev_rec ev[64];
	unsigned n, dropped;
	atomic_int inside;              /* handlers running now */
	atomic_bool overlapped;         /* two ran at once */
} evs = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void ev_handler(void *ctx, const struct fm_event *ev)
{
	static const uint8_t zero[16];

	(void)ctx;
	if (atomic_fetch_add(&evs.inside, 1) != 0)
		atomic_store(&evs.overlapped, true);
	g_usleep(2000);                 /* widen the window for an overlap */
	pthread_mutex_lock(&evs.lock);
	if (evs.n < G_N_ELEMENTS(evs.ev)) {
		struct ev_rec *r = &evs.ev[evs.n++];

		r->type = ev->type;
		r->leg = ev->leg;
		r->value = ev->value;
		r->err = ev->err;
		g_strlcpy(r->path, ev->leg_path ? ev->leg_path : "", sizeof(r->path));
		r->uuid_set = memcmp(ev->leg_uuid, zero, 16) != 0;
	} else {
		evs.dropped++;
	}
	pthread_mutex_unlock(&evs.lock);
	atomic_fetch_sub(&evs.inside, 1);
}

static void ev_reset(void)
{
	pthread_mutex_lock(&evs.lock);
	evs.n = evs.dropped = 0;
	atomic_store(&evs.overlapped, false);
	pthread_mutex_unlock(&evs.lock);
}

/* The events seen since ev_reset() are exactly @want (names, with the leg
 * slot after a colon: "Fail:1"). */
static void ev_expect(const char *const *want, unsigned nwant, const char *when)
{
	g_autoptr(GString) got = g_string_new(NULL), exp = g_string_new(NULL);

	for (unsigned i = 0; i < nwant; i++)
		g_string_append_printf(exp, "%s%s", i ? " " : "", want[i]);
	pthread_mutex_lock(&evs.lock);
	for (unsigned i = 0; i < evs.n; i++) {
		g_string_append_printf(got, "%s%s", i ? " " : "", fm_event_name(evs.ev[i].type));
		if (evs.ev[i].leg >= 0)
			g_string_append_printf(got, ":%d", evs.ev[i].leg);
	}
	ck_assert_msg(!evs.dropped && !atomic_load(&evs.overlapped), "%s: %u dropped, overlap %d",
		      when, evs.dropped, (int)atomic_load(&evs.overlapped));
	pthread_mutex_unlock(&evs.lock);
	ck_assert_msg(!strcmp(got->str, exp->str), "%s: events [%s], expected [%s]", when,
		      got->str, exp->str);
}

static const struct ev_rec *ev_at(unsigned i)
{
	ck_assert_uint_lt(i, evs.n);
	return &evs.ev[i];
}

START_TEST(test_events_fail_add_rebuild)
{
	struct mirror_opts o = { .bitmap_delay_ms = 50, .event_fn = ev_handler };
	struct mirror_status ms;
	GError *err = NULL;
	gint64 deadline;

	FX_SEED();
	ev_reset();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	ev_expect((const char *[]){ "NewArray" }, 1, "assembly");
	ck_assert_uint_eq(ev_at(0)->value, 2);          /* legs in sync */
	fx_write_random(0, IMG);
	/* Their bits are cleared once idle: the re-add below copies only what
	 * is written while the leg is out. */
	deadline = g_get_monotonic_time() + WAIT_SECONDS * G_TIME_SPAN_SECOND;
	do {
		g_usleep(10000);
		mirror_get_status(fx.m, &ms);
	} while (ms.bitmap_set && g_get_monotonic_time() < deadline);
	ck_assert_uint_eq(ms.bitmap_set, 0);

	ev_reset();
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	ev_expect((const char *[]){ "Fail:1", "DegradedArray" }, 2, "fail");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	ck_assert(ev_at(0)->uuid_set);
	ck_assert_int_eq(ev_at(0)->err, 0);             /* by the administrator */
	ck_assert_uint_eq(ev_at(1)->value, 1);

	ev_reset();
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	ev_expect((const char *[]){ "Remove:1" }, 1, "remove");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	fx_write_random(3 * REGION, 64 * KiB);

	ev_reset();
	admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "re-add");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ev_expect((const char *[]){ "Add:1", "RebuildStarted", "RebuildFinished",
				    "ArrayOptimal" }, 4, "re-add");
	ck_assert_str_eq(ev_at(0)->path, fx.legs[1]);
	ck_assert_uint_eq(ev_at(0)->value, 0);          /* from the bitmap */
	ck_assert_uint_eq(ev_at(1)->value, REGION);     /* one region written meanwhile */
	ck_assert_uint_eq(ev_at(2)->value, REGION);
	ck_assert_uint_eq(ev_at(3)->value, 2);

	/* An I/O error fails a leg with its cause. */
	ev_reset();
	{
		struct dmio_fault f = { .flags = DMIO_FAULT_WRITES };
		uint8_t *buf = fx_buf(4096);

		admin_ok(mirror_inject(fx.m, fx.legs[0], &f, &err), err, "inject");
		memset(buf, 0x5a, 4096);
		/* Held until the failure is recorded; the other leg has it. */
		ck_assert_int_eq(fx_rw(MIRROR_OP_WRITE, 0, buf, 4096, 0), 0);
		memcpy(fx.model, buf, 4096);
	}
	ev_expect((const char *[]){ "Fail:0", "DegradedArray" }, 2, "write error");
	ck_assert_int_eq(ev_at(0)->err, EIO);
	ck_assert_uint_eq(ev_at(1)->value, 1);

	/* A new leg in the failed one's place: a full rebuild. */
	ev_reset();
	admin_ok(mirror_remove_leg(fx.m, fx.legs[0], &err), err, "remove 0");
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add new");
	wait_sync_idle(&ms);
	ev_expect((const char *[]){ "Remove:0", "Add:0", "RebuildStarted", "RebuildFinished",
				    "ArrayOptimal" }, 5, "new leg");
	ck_assert_str_eq(ev_at(1)->path, fx.legs[2]);
	ck_assert_uint_eq(ev_at(1)->value, 1);          /* wholly */
	ck_assert_uint_eq(ev_at(2)->value, IMG);

	ev_reset();
	admin_ok(mirror_scrub(fx.m, false, &err), err, "scrub");
	wait_sync_idle(&ms);
	ev_expect((const char *[]){ "ScrubStarted", "ScrubFinished" }, 2, "scrub");
	ck_assert_uint_eq(ev_at(0)->value, 0);          /* check, not repair */
	ck_assert_uint_eq(ev_at(1)->value, 0);          /* no mismatch */

	ev_reset();
	fx_stop(0);
	ev_expect((const char *[]){ "Stopped" }, 1, "stop");
	ck_assert_uint_eq(ev_at(0)->value, 1);          /* clean */
}
END_TEST

/* A start after a crash with one leg left out: what the start reports. */
START_TEST(test_events_degraded_unclean_start)
{
	struct mirror_opts o = { .event_fn = ev_handler, .defer_in_use = true };
	struct mirror_status ms;
	struct fm_sb sb;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&(struct mirror_opts){ 0 });
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	fx_stop(0);
	/* Not stopped cleanly: the CLEAN flag off, one bit set. */
	read_sb(fx.legs[0], &sb);
	sb.state_flags &= ~FM_SB_CLEAN;
	write_sb(fx.legs[0], &sb);

	ev_reset();
	fx.nlegs = 1;
	fx_assemble_opts(&o);
	ev_expect((const char *[]){ "NewArray", "UncleanStart", "DeviceDisappeared:1",
				    "DegradedArray" }, 4, "degraded start");
	ck_assert_uint_eq(ev_at(0)->value, 1);
	ck_assert_str_eq(ev_at(2)->path, "");           /* not given: no path */
	ck_assert(ev_at(2)->uuid_set);
	admin_ok(mirror_mark_in_use(fx.m, &err), err, "mark in use");
	wait_sync_idle(&ms);
	fx.nlegs = 2;
	ev_reset();
	fx_stop(0);
	ev_expect((const char *[]){ "Stopped" }, 1, "stop");
}
END_TEST

/* Setting and clearing write-mostly reports WriteMostly (value 1/0) for
 * the leg; asking for what is already set reports nothing. */
START_TEST(test_events_write_mostly)
{
	struct mirror_opts o = { .event_fn = ev_handler };
	static const char *const want[] = { "WriteMostly:1", "WriteMostly:1" };
	GError *err = NULL;

	fx_name_legs(2);
	fx_format(IMG);
	fx_assemble_opts(&o);
	ev_reset();
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err, "on");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], true, &err), err, "on again");
	admin_ok(mirror_set_write_mostly(fx.m, fx.legs[1], false, &err), err, "off");
	ev_expect(want, G_N_ELEMENTS(want), "write-mostly on, on, off");
	ck_assert_uint_eq(ev_at(0)->value, 1);
	ck_assert_uint_eq(ev_at(1)->value, 0);
	ck_assert(ev_at(0)->uuid_set);
	fx_stop(0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase degraded: degraded start, legs that went back in time, split brain */

/* mirror_assemble() of @n of @paths: 0 with fx.m set, or -errno with @err
 * set and nothing returned. */
static int try_assemble(char *const *paths, unsigned n, const struct mirror_opts *o,
			GError **err)
{
	struct mirror *m = NULL;
	int r = mirror_assemble((const char *const *)paths, n, o, &m, err);

	if (r == 0) {
		ck_assert_ptr_nonnull(m);
		ck_assert_ptr_null(fx.m);
		fx.m = m;
	} else {
		ck_assert_ptr_null(m);
	}
	return r;
}

/*
 * A leg missing at start: refused without opts.degraded (the message names
 * the flag and the leg), started with it: the leg is recorded as missing,
 * the bitmap keeps every region written meanwhile, and the leg's return
 * (_i 0: `add` online; 1: given again at assembly) recovers just those.
 */
START_TEST(test_degraded_start)
{
	struct mirror_opts plain = { .bitmap_delay_ms = 20 };
	struct mirror_opts deg = { .degraded = true, .bitmap_delay_ms = 20,
				   .event_fn = ev_handler };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb0, sb1, before;
	struct snap snap = { 0 };
	GError *err = NULL;
	char u[37];
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&plain);
	fx_write_random(0, IMG);
	fx_stop(0);
	read_sb(fx.legs[1], &before);

	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	r = try_assemble(fx.legs, 1, &plain, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "leg 1 not given", "was not given", "--degraded",
		    fm_uuid_unparse(before.leg_uuid, u), NULL);
	err = NULL;
	snap_check(&snap, "a refused start without leg 1");

	ev_reset();
	admin_ok(try_assemble(fx.legs, 1, &deg, &err), err, "degraded start");
	ev_expect((const char *[]){ "NewArray", "DeviceDisappeared:1", "DegradedArray" }, 3,
		  "degraded start");
	ck_assert(ev_at(1)->uuid_set);
	mirror_get_status(fx.m, &ms);
	ck_assert(ms.degraded);
	ck_assert_str_eq(ms.state, "degraded");
	ck_assert_uint_eq(ms.nr_in_sync, 1);
	ck_assert_uint_eq(ms.nr_faulty, 1);
	leg_stats(1, &ls);
	ck_assert(ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_FAULTY);
	ck_assert_str_eq(ls.path, "");
	fm_assert_bytes_eq(ls.uuid, before.leg_uuid, 16, "missing leg's uuid");
	leg_stats(0, &ls);
	ck_assert(!ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_write_random(2 * REGION + 512, 8 * KiB);
	fx_write_random(5 * REGION, 64 * KiB);
	g_usleep(300000);       /* 15 times bitmap_delay: no bit is cleared */
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.bitmap_set, 2);
	fx_stop(0);

	read_sb(fx.legs[0], &sb0);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.events, before.events);   /* not touched */
	ck_assert_uint_gt(sb0.events, sb1.events);      /* stale when it returns */
	ck_assert_uint_eq(sb0.legs[1].state, FM_LEG_FAULTY);
	ck_assert_uint_eq(sb0.legs[1].flags, FM_SB_LEG_MISSING);
	ck_assert(sb0.features & FM_SB_FEAT_GENERATIONS);
	ck_assert_uint_eq(sb0.last_in_sync[0], sb0.events);
	ck_assert_uint_eq(sb0.last_in_sync[1], sb1.events);
	ck_assert(sb0.state_flags & FM_SB_CLEAN);

	if (_i == 0) {
		/* Recorded as missing: leg 0 alone needs no flag any more. */
		admin_ok(try_assemble(fx.legs, 1, &plain, &err), err, "leg 0 alone");
		leg_stats(1, &ls);
		ck_assert(ls.missing);
		admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add");
	} else {
		admin_ok(try_assemble(fx.legs, 2, &plain, &err), err, "both legs");
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, 2);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	ck_assert(!ms.degraded);
	leg_stats(1, &ls);
	ck_assert(!ls.missing);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	read_sb(fx.legs[1], &sb1);
	ck_assert_uint_eq(sb1.legs[1].state, FM_LEG_IN_SYNC);
	ck_assert_uint_eq(sb1.legs[1].flags, 0);
}
END_TEST

/*
 * A leg restored from an old copy (_i: which one), given with its
 * up-to-date peer: assembled (not refused as "not given"), rebuilt wholly,
 * because its own bitmap and the array's (cleared since) cannot say what
 * it missed.  A bitmap recovery would copy nothing and leave it stale.
 */
START_TEST(test_leg_back_in_time)
{
	unsigned old = (unsigned)_i;
	struct mirror_opts o = { .read_policy = MIRROR_READ_FIRST };
	g_autofree char *copy = NULL;
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct fm_sb sb_old, sb_new;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&o);
	fx_write_random(0, IMG);
	fx_stop(0);
	copy = fx_path("old-copy");
	copy_file(fx.legs[old], copy);
	fx_assemble_opts(&o);
	fx_write_random(3 * REGION, 64 * KiB);
	fx_write_random(6 * REGION + 4 * KiB, 4 * KiB);
	fx_stop(0);
	copy_file(copy, fx.legs[old]);
	read_sb(fx.legs[old], &sb_old);
	read_sb(fx.legs[!old], &sb_new);
	ck_assert_uint_lt(sb_old.events, sb_new.events);
	ck_assert_uint_eq(sb_new.legs[old].state, FM_LEG_IN_SYNC);

	/* Deferred: the rebuild waits, so that what status says can be seen. */
	o.defer_in_use = true;
	admin_ok(try_assemble(fx.legs, 2, &o, &err), err, "assemble with the old copy");
	leg_stats(old, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_REBUILDING);
	ck_assert_msg(strstr(ls.note, "went back in time") && strstr(ls.note, "wholly"),
		      "note: %s", ls.note);
	{
		char want[64];

		snprintf(want, sizeof(want), "stale (events %llu, the array has %llu)",
			 (unsigned long long)sb_old.events, (unsigned long long)sb_new.events);
		ck_assert_msg(strstr(ls.note, want), "note: %s, want %s", ls.note, want);
	}
	leg_stats(!old, &ls);
	ck_assert_str_eq(ls.note, "");
	admin_ok(mirror_mark_in_use(fx.m, &err), err, "mark in use");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.last_action, MIRROR_SYNC_RECOVER);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	leg_stats(old, &ls);
	ck_assert_str_eq(ls.note, "");
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * Split brain: each leg started alone (degraded) and written.  Assembling
 * both is refused, naming both sides and --prefer, with nothing written;
 * opts.prefer (_i: which leg) keeps that side's data and rebuilds the
 * other wholly.  A merge (the newer side's bitmap only) would leave the
 * other side's regions differing between the legs.
 */
START_TEST(test_split_brain)
{
	unsigned keep = (unsigned)_i;
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_opts pref = { 0 };
	g_autofree uint8_t *base = NULL;
	uint8_t *side[2] = { NULL, NULL };
	g_autofree char *stranger = NULL;
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	struct snap snap = { 0 };
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&plain);
	fx_write_random(0, IMG);
	fx_stop(0);
	base = g_memdup2(fx.model, IMG);
	for (unsigned k = 0; k < 2; k++) {
		memcpy(fx.model, base, IMG);
		admin_ok(try_assemble(&fx.legs[k], 1, &deg, &err), err, "one leg alone");
		fx_write_random(1 * REGION + 4 * KiB, 16 * KiB);   /* both sides */
		fx_write_random((4 + k) * REGION, 8 * KiB);        /* this side only */
		fx_stop(0);
		side[k] = g_memdup2(fx.model, IMG);
	}

	snap_add(&snap, fx.legs[0]);
	snap_add(&snap, fx.legs[1]);
	for (unsigned v = 0; v < 2; v++) {
		r = try_assemble(fx.legs, 2, v ? &deg : &plain, &err);
		ck_assert_int_eq(r, -EUCLEAN);
		check_error(err, r, "split brain", "split brain", fx.legs[0], fx.legs[1],
			    "--prefer", NULL);
		err = NULL;
	}
	stranger = fx_path("stranger");
	make_random_file(stranger, 1 * MiB);
	pref.prefer = stranger;
	r = try_assemble(fx.legs, 2, &pref, &err);
	ck_assert_int_eq(r, -EINVAL);
	check_error(err, r, "prefer a stranger", stranger, "not one of the legs given", NULL);
	err = NULL;
	snap_check(&snap, "a refused split brain");

	pref.prefer = fx.legs[keep];
	admin_ok(try_assemble(fx.legs, 2, &pref, &err), err, "--prefer");
	leg_stats(keep, &ls);
	ck_assert_uint_eq(ls.state, FM_LEG_IN_SYNC);
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	memcpy(fx.model, side[keep], IMG);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
	/* One array again. */
	admin_ok(try_assemble(fx.legs, 2, &plain, &err), err, "after --prefer");
	mirror_get_status(fx.m, &ms);
	ck_assert(!ms.degraded);
	fx_stop(0);
	g_free(side[0]);
	g_free(side[1]);
}
END_TEST

/*
 * `add` of a leg that ran apart (started alone and written while this side
 * also ran): adding it chooses this side, so it is rebuilt wholly.  From the
 * bitmap, its own write (in a region this side never wrote) would survive
 * and the legs would differ.  A new leg added instead takes the missing
 * leg's slot.
 */
START_TEST(test_add_leg_that_ran_apart)
{
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_status ms;
	struct mirror_leg_stats ls;
	g_autofree uint8_t *mine = NULL;
	GError *err = NULL;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&plain);
	fx_write_random(0, IMG);
	fx_stop(0);
	mine = g_memdup2(fx.model, IMG);
	admin_ok(try_assemble(&fx.legs[1], 1, &deg, &err), err, "leg 1 alone");
	fx_write_random(5 * REGION, 8 * KiB);
	fx_stop(0);
	memcpy(fx.model, mine, IMG);
	admin_ok(try_assemble(&fx.legs[0], 1, &deg, &err), err, "leg 0 alone");
	fx_write_random(2 * REGION, 8 * KiB);
	if (_i == 0) {
		admin_ok(mirror_add_leg(fx.m, fx.legs[1], false, &err), err, "add leg 1");
	} else {
		fx.legs[2] = fx_path("leg2");
		admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add a new leg");
		leg_stats(1, &ls);
		ck_assert_str_eq(ls.path, fx.legs[2]);  /* the missing leg's slot */
		ck_assert(!ls.missing);
		g_free(fx.legs[1]);
		fx.legs[1] = fx.legs[2];
		fx.legs[2] = NULL;
	}
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	fx_check_read(0, IMG);
	fx_stop(0);
	fx_check_legs(0, IMG);
}
END_TEST

/*
 * A stale leg that is started alone with --degraded cannot know it is
 * stale (nothing on it says so); meeting its peer again is a split brain,
 * refused: _i 0: it was failed while the peer went on; 1: it was restored
 * from an old copy (its table says both in sync, the peer's records say
 * when it last saw it).
 */
START_TEST(test_stale_start_is_split_brain)
{
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	g_autofree char *copy = NULL;
	GError *err = NULL;
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&plain);
	fx_write_random(0, IMG);
	if (_i == 0) {
		admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
		fx_write_random(2 * REGION, 4 * KiB);
		fx_stop(0);
	} else {
		fx_stop(0);
		copy = fx_path("old-copy");
		copy_file(fx.legs[1], copy);
		fx_assemble_opts(&plain);
		fx_write_random(2 * REGION, 4 * KiB);
		fx_stop(0);
		copy_file(copy, fx.legs[1]);
	}
	admin_ok(try_assemble(&fx.legs[1], 1, &deg, &err), err, "stale leg alone");
	fx_write_random(3 * REGION, 4 * KiB);
	fx_stop(0);
	r = try_assemble(fx.legs, 2, &plain, &err);
	ck_assert_int_eq(r, -EUCLEAN);
	check_error(err, r, "reunion", "split brain", fx.legs[0], fx.legs[1], NULL);
}
END_TEST

/*
 * None of the legs given holds the current data: the only in-sync leg is
 * missing and the one given was being rebuilt.  Refused even with
 * --degraded, naming the leg given, its state and the in-sync leg.
 */
START_TEST(test_degraded_needs_current_leg)
{
	struct mirror_opts slow = { .sync_speed_min = 4096, .sync_speed_max = 4096 };
	struct mirror_opts plain = { 0 }, deg = { .degraded = true };
	struct mirror_status ms;
	struct fm_sb sb0;
	char *two[2];
	GError *err = NULL;
	char u[37];
	int r;

	FX_SEED();
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(&slow);
	fx_write_random(0, IMG);
	admin_ok(mirror_fail_leg(fx.m, fx.legs[1], &err), err, "fail");
	admin_ok(mirror_remove_leg(fx.m, fx.legs[1], &err), err, "remove");
	fx.legs[2] = fx_path("leg2");
	admin_ok(mirror_add_leg(fx.m, fx.legs[2], false, &err), err, "add new leg");
	mirror_get_status(fx.m, &ms);
	ck_assert_uint_eq(ms.action, MIRROR_SYNC_RECOVER);
	fx_stop(0);     /* the rebuild is interrupted */
	read_sb(fx.legs[0], &sb0);

	r = try_assemble(&fx.legs[2], 1, &deg, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "rebuilding leg alone", "none of the legs given holds the current",
		    fx.legs[2], "rebuilding", "not given: leg 0",
		    fm_uuid_unparse(sb0.leg_uuid, u), NULL);
	err = NULL;
	r = try_assemble(&fx.legs[2], 1, &plain, &err);
	ck_assert_int_eq(r, -ENODEV);
	check_error(err, r, "without --degraded", "was not given", "--degraded", NULL);
	err = NULL;
	/* With the in-sync leg, the rebuild starts over and completes. */
	two[0] = fx.legs[0];
	two[1] = fx.legs[2];
	admin_ok(try_assemble(two, 2, &plain, &err), err, "leg 0 and leg 2");
	wait_sync_idle(&ms);
	ck_assert_uint_eq(ms.resynced_regions, IMG / REGION);
	ck_assert_uint_eq(ms.nr_in_sync, 2);
	fx_stop(0);
	/* Leg 2 (in leg 1's old slot) holds the image now. */
	two[1] = fx.legs[1];
	fx.legs[1] = fx.legs[2];
	fx.legs[2] = two[1];
	fx_check_legs(0, IMG);
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
		     void (*unchecked_teardown)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, unchecked_setup, unchecked_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	fm_test_tcase_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *mirror_suite(void)
{
	Suite *s = suite_create("mirror");
	TCase *tc;

	tc = tc_add(s, "format", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_format_new_legs, 0, 3);
	tcase_add_loop_test(tc, test_format_existing_legs, 0, 2);
	tcase_add_loop_test(tc, test_format_refusals, 0, FR_COUNT);
	tcase_add_test(tc, test_format_force_ext4);

	tc = tc_add(s, "assemble", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_assemble_dirty_then_clean, 0, 2);
	tcase_add_loop_test(tc, test_assemble_refusals, 0, AR_COUNT);
	tcase_add_test(tc, test_assemble_in_use);
	tcase_add_test(tc, test_assemble_readonly);
	tcase_add_test(tc, test_assemble_defer_in_use);
	tcase_add_test(tc, test_assemble_any_order);
	tcase_add_test(tc, test_assemble_after_crash);

	tc = tc_add(s, "io", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_io_writes_land_on_every_leg, 0, 2);
	tcase_add_test(tc, test_io_refused);

	tc = tc_add(s, "read-policy", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_read_policy_names);
	tcase_add_test(tc, test_event_names);
	tcase_add_loop_test(tc, test_read_policy_distribution, 0, G_N_ELEMENTS(policies));
	tcase_add_loop_test(tc, test_read_write_mostly, 0, G_N_ELEMENTS(policies));

	tc = tc_add(s, "read-errors", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_read_failover, 0, G_N_ELEMENTS(policies));
	tcase_add_test(tc, test_read_failover_two_of_three);
	tcase_add_loop_test(tc, test_read_all_legs_fail, 0, 2);

	tc = tc_add(s, "write-errors", tc_tmpfs_setup, tc_tmpfs_teardown);
	tcase_add_test(tc, test_write_error_on_one_leg);

	tc = tc_add(s, "resilience", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_stale_leg_bitmap_recovery);
	tcase_add_test(tc, test_remove_and_add_online);
	tcase_add_test(tc, test_replace_leg);
	tcase_add_loop_test(tc, test_rebuild_resume, 0, 2);
	tcase_add_test(tc, test_add_queued_behind_scrub);
	tcase_add_test(tc, test_events_fail_add_rebuild);
	tcase_add_test(tc, test_events_degraded_unclean_start);
	tcase_add_test(tc, test_events_write_mostly);
	tcase_add_test(tc, test_read_error_repaired);
	tcase_add_loop_test(tc, test_read_errors_fail_leg, 0, 2);
	tcase_add_loop_test(tc, test_read_error_rate, 0, 3);
	tcase_add_test(tc, test_scrub_check_and_repair);
	tcase_add_test(tc, test_all_legs_fail);
	tcase_add_test(tc, test_crash_resync_bitmap_only);

	tc = tc_add(s, "degraded", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_degraded_start, 0, 2);
	tcase_add_loop_test(tc, test_leg_back_in_time, 0, 2);
	tcase_add_loop_test(tc, test_split_brain, 0, 2);
	tcase_add_loop_test(tc, test_stale_start_is_split_brain, 0, 2);
	tcase_add_loop_test(tc, test_add_leg_that_ran_apart, 0, 2);
	tcase_add_test(tc, test_degraded_needs_current_leg);

	tc = tc_add(s, "ordering", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_ordering_threads);
	tcase_add_loop_test(tc, test_ordering_discard_after_writes, 0, 2);

	tc = tc_add(s, "zeroes", tc_dir_setup, tc_dir_teardown);
	tcase_add_test(tc, test_zeroes_and_flush);

	tc = tc_add(s, "bufio", tc_dir_setup, tc_dir_teardown);
	tcase_add_loop_test(tc, test_bufio_on_mirror, 0, 3);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_mirror: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(mirror_suite());
}
