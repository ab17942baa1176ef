/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The unit tests' harness library: what fm_test.h declares (that header is
 * its contract).
 */
#include <stdarg.h>

#include "fm_test.h"

/*
 * Not instrumented by ThreadSanitizer: the tests fill megabytes of fresh
 * buffers (models of legs, data to write) before any other thread sees
 * them, and a checked store every 8 bytes faulted in TSan's shadow pages at
 * a cost of minutes per test run on this machine.
 */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize_thread))
#endif
void fm_rng_fill(struct fm_rng *rng, void *buf, size_t len)
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

uint64_t fm_test_base_seed(void)
{
	const char *s = getenv("FM_TEST_SEED");

	if (s && *s)
		return g_ascii_strtoull(s, NULL, 0);
	return 0x5eedf00d2024ull;
}

uint64_t fm_test_seed_for(const char *name, int i)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ull;
	}
	return h ^ fm_test_base_seed() ^ ((uint64_t)(unsigned)i * 0x9e3779b97f4a7c15ull);
}

void *fm_test_alloc_aligned(size_t align, size_t len)
{
	void *p = NULL;
	int r = posix_memalign(&p, align, len ? len : 1);

	ck_assert_msg(r == 0, "posix_memalign(%zu, %zu): %s", align, len, g_strerror(r));
	return p;
}

ssize_t fm_test_first_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;

	if (memcmp(x, y, len) == 0)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (x[i] != y[i])
			return (ssize_t)i;
	return -1;
}

size_t fm_test_count_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += x[i] != y[i];
	return n;
}

bool fm_test_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Zero first byte, and each byte equal to the one before: one memcmp,
	 * not a check of every byte (the sanitizers and valgrind instrument
	 * each load of a loop; the tests call this on megabytes). */
	return !len || (!p[0] && memcmp(p, p + 1, len - 1) == 0);
}

void fm_test_sync_init(struct fm_test_sync *s)
{
	pthread_condattr_t attr;

	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
}

void fm_test_sync_destroy(struct fm_test_sync *s)
{
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
}

void fm_test_sync_lock(struct fm_test_sync *s)
{
	pthread_mutex_lock(&s->lock);
}

void fm_test_sync_unlock(struct fm_test_sync *s)
{
	pthread_mutex_unlock(&s->lock);
}

void fm_test_sync_signal(struct fm_test_sync *s)
{
	pthread_cond_signal(&s->cond);
}

void fm_test_sync_broadcast(struct fm_test_sync *s)
{
	pthread_cond_broadcast(&s->cond);
}

bool fm_test_sync_wait_until(struct fm_test_sync *s, gint64 deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / G_USEC_PER_SEC),
		.tv_nsec = (long)(deadline % G_USEC_PER_SEC) * 1000,
	};

	return pthread_cond_timedwait(&s->cond, &s->lock, &ts) != ETIMEDOUT;
}

bool fm_test_in_memory(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 &&
	       (sfs.f_type == 0x01021994 /* TMPFS_MAGIC */ || sfs.f_type == 0x858458f6 /* RAMFS_MAGIC */);
}

const char *fm_test_tmp_dir(void)
{
	const char *dir = g_get_tmp_dir();

	if (fm_test_in_memory(dir) && access("/var/tmp", W_OK) == 0)
		return "/var/tmp";
	return dir;
}

char *fm_test_mkdtemp(const char *parent, const char *tag)
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

int fm_test_rm_rf(const char *path)
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

void fm_test_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
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

void fm_test_pread_all(int fd, void *buf, size_t len, uint64_t off,
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

void fm_test_create_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ck_assert_msg(fd >= 0, "create %s: %s", path, g_strerror(errno));
	ck_assert_msg(ftruncate(fd, (off_t)size) == 0, "truncate %s to %" PRIu64 ": %s",
		      path, size, g_strerror(errno));
	close(fd);
}

void fm_test_write_file(const char *path, uint64_t off, const void *buf,
				      size_t len)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	fm_test_pwrite_all(fd, buf, len, off, path);
	close(fd);
}

void fm_test_read_file(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	fm_test_pread_all(fd, buf, len, off, path);
	close(fd);
}

uint64_t fm_test_file_size(const char *path)
{
	struct stat st;

	ck_assert_msg(stat(path, &st) == 0, "stat %s: %s", path, g_strerror(errno));
	return (uint64_t)st.st_size;
}

bool fm_test_supports_direct(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

void fm_test_read_direct(const char *path, uint64_t off, void *buf, size_t len)
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

void fm_test_write_direct(const char *path, uint64_t off, const void *buf,
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

uint64_t fm_test_blockdev_size(const char *path)
{
	uint64_t size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	ck_assert_msg(ioctl(fd, BLKGETSIZE64, &size) == 0, "BLKGETSIZE64 %s: %s", path,
		      g_strerror(errno));
	close(fd);
	return size;
}

uint64_t fm_test_blockdev_stat(const char *dev_path, unsigned field)
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

char *fm_test_blockdev_attr(const char *dev_path, const char *attr)
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

char *fm_test_loop_unusable(void)
{
	if (geteuid() != 0)
		return g_strdup("not running as root: loop devices (losetup) need root");
	return NULL;
}

char *fm_test_find_losetup(void)
{
	static const char *const fallbacks[] = { "/usr/sbin/losetup", "/sbin/losetup" };
	char *p = g_find_program_in_path("losetup");

	for (size_t i = 0; !p && i < G_N_ELEMENTS(fallbacks); i++)
		if (access(fallbacks[i], X_OK) == 0)
			p = g_strdup(fallbacks[i]);
	return p;
}

int fm_test_run(char **argv, char **ret_out, char **ret_msg)
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

bool fm_test_loop_is_attached(const char *dev)
{
	char *base = g_path_get_basename(dev);
	char *path = g_strdup_printf("/sys/block/%s/loop/backing_file", base);
	bool attached = access(path, F_OK) == 0;

	g_free(path);
	g_free(base);
	return attached;
}

static int loop_attach_once(const char *backing, unsigned sector_size,
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

int fm_test_loop_detach(struct fm_test_loop *lo, char **ret_msg)
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

/* @dev's discard limits are the ones its queue allows (see below). */
static bool loop_limits_ok(const char *dev)
{
	static const char *const limits[][2] = {
		{ "queue/discard_max_bytes", "queue/discard_max_hw_bytes" },
		{ "queue/write_zeroes_unmap_max_bytes", "queue/write_zeroes_unmap_max_hw_bytes" },
	};
	bool ok = true;

	for (size_t i = 0; i < G_N_ELEMENTS(limits) && ok; i++) {
		char *cur = fm_test_blockdev_attr(dev, limits[i][0]);
		char *hw = fm_test_blockdev_attr(dev, limits[i][1]);

		ok = !cur || !hw || strcmp(cur, hw) == 0;
		g_free(cur);
		g_free(hw);
	}
	return ok;
}

/*
 * A discard limit lowered through sysfs (a test of a device that cannot
 * discard) outlives the loop device's detach and cannot be raised again:
 * a device left so by a killed test is detached, deleted (LOOP_CTL_REMOVE)
 * and another one attached.
 */
int fm_test_loop_attach(const char *backing, unsigned sector_size,
			struct fm_test_loop *ret_loop, char **ret_msg)
{
	for (int tries = 0;; tries++) {
		struct fm_test_loop lo;
		unsigned n;
		int ctl;

		if (loop_attach_once(backing, sector_size, &lo, ret_msg) < 0)
			return -1;
		if (loop_limits_ok(lo.dev) || tries == 16) {
			*ret_loop = lo;
			return 0;
		}
		fprintf(stderr, "fm_test: %s has lowered discard limits: taking another device\n",
			lo.dev);
		if (sscanf(lo.dev, "/dev/loop%u", &n) != 1 || fm_test_loop_detach(&lo, ret_msg) < 0)
			return -1;
		ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		if (ctl >= 0) {
			for (int i = 0; i < 50 && ioctl(ctl, LOOP_CTL_REMOVE, n) < 0; i++)
				g_usleep(100000);
			close(ctl);
		}
	}
}

void fm_test_tcase_timeout(TCase *tc, double seconds)
{
	if (!getenv("CK_DEFAULT_TIMEOUT"))
		tcase_set_timeout(tc, seconds);
}
/*----------------------------------------------------------------*/
/* Programs and the test's main() */

bool fm_test_under_valgrind(void)
{
	return getenv("FM_UNDER_VALGRIND") != NULL;
}

char *fm_test_find_program(const char *name)
{
	static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };
	char *p = g_find_program_in_path(name);

	for (size_t i = 0; !p && i < G_N_ELEMENTS(dirs); i++) {
		char *c = g_build_filename(dirs[i], name, NULL);

		if (access(c, X_OK) == 0)
			p = c;
		else
			g_free(c);
	}
	ck_assert_msg(p, "%s is not installed (bash .ci/deps installs it)", name);
	return p;
}

/* The skips are appended to a file (named in the environment, so that the
 * test processes check forks inherit it) and read back by fm_test_main(). */
#define FM_TEST_SKIP_ENV "FM_TEST_SKIP_LOG"

void fm_test_note_skip(const char *test, const char *fmt, ...)
{
	const char *log = getenv(FM_TEST_SKIP_ENV);
	g_autofree char *why = NULL, *line = NULL;
	va_list ap;
	int fd;

	va_start(ap, fmt);
	why = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	line = g_strdup_printf("SKIP %s: %s\n", test, why);
	fputs(line, stderr);
	ck_assert_msg(log, "fm_test_skip outside fm_test_main()");
	fd = open(log, O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "%s: %s", log, g_strerror(errno));
	ck_assert_int_eq(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
}

Suite *fm_test_suite(const char *name, const struct fm_test_case *cases, size_t n)
{
	Suite *s = suite_create(name);

	for (size_t i = 0; i < n; i++) {
		TCase *tc = tcase_create(cases[i].name);

		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	return s;
}

int fm_test_main(Suite *s)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *log = NULL, *skips = NULL;
	SRunner *sr;
	int fd, failed;

	fd = g_file_open_tmp("fm-test-skips-XXXXXX", &log, &err);
	if (fd < 0) {
		fprintf(stderr, "fm_test_main: %s\n", err->message);
		return EXIT_FAILURE;
	}
	close(fd);
	setenv(FM_TEST_SKIP_ENV, log, 1);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (!g_file_get_contents(log, &skips, NULL, &err)) {
		fprintf(stderr, "fm_test_main: %s\n", err->message);
		failed++;
	}
	unlink(log);
	if (failed)
		return EXIT_FAILURE;
	if (skips && *skips) {
		fprintf(stderr, "Skipped (the machine lacks what they test):\n%s", skips);
		return 77;
	}
	return EXIT_SUCCESS;
}
