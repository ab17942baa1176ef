/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fixtures of the mirror unit tests (mirror_fx.h says what they do).
 */
#include "mirror_fx.h"

/*----------------------------------------------------------------*/
/* Unchecked fixtures: the TCase's directory, the tmpfs mount */

char *tc_dir;
char *tc_tmpfs;

void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "mirror");
}

void tc_dir_teardown(void)
{
	int r = fm_test_rm_rf(tc_dir);

	if (r < 0)
		fprintf(stderr, "test_mirror: cannot remove %s: %s\n", tc_dir, g_strerror(-r));
	g_clear_pointer(&tc_dir, g_free);
	ck_assert_msg(r == 0, "cannot remove the temporary directory");
}

void tc_tmpfs_setup(void)
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

void tc_tmpfs_teardown(void)
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

struct mirror_fx_state fx;

void fx_lock(void)
{
	pthread_mutex_lock(&fx.lock);
}

void fx_unlock(void)
{
	pthread_mutex_unlock(&fx.lock);
}

bool fx_cond_wait_until(gint64 deadline)
{
	struct timespec ts = { .tv_sec = deadline / G_USEC_PER_SEC,
			       .tv_nsec = (deadline % G_USEC_PER_SEC) * 1000 };

	return pthread_cond_timedwait(&fx.cond, &fx.lock, &ts) != ETIMEDOUT;
}

/*
 * The library layers log at debug level only (include/fusemirror/
 * event.h): every test records what they log above it, and fails in
 * teardown if anything was.  Called under the log's lock: no logging, no
 * allocation.
 */
static atomic_uint fx_loud_count;
static char fx_loud_first[256];

static void fx_log_hook(void *ctx, enum fm_log_level level, const char *msg)
{
	(void)ctx;
	if (level >= FM_LOG_DEBUG)
		return;
	if (atomic_fetch_add(&fx_loud_count, 1) == 0)
		snprintf(fx_loud_first, sizeof(fx_loud_first), "%s: %s",
			 fm_log_level_name(level), msg);
}

void setup(void)
{
	pthread_condattr_t ca;

	atomic_store(&fx_loud_count, 0);
	fx_loud_first[0] = '\0';
	if (fm_log_get_level() < FM_LOG_INFO)
		fm_log_set_level(FM_LOG_INFO);  /* the hook sees what passes */
	fm_log_set_hook(fx_log_hook, NULL);

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

void teardown(void)
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
	fm_log_set_hook(NULL, NULL);
	ck_assert_msg(atomic_load(&fx_loud_count) == 0,
		      "a library layer logged %u message(s) above debug level, the first: %s",
		      atomic_load(&fx_loud_count), fx_loud_first);
}

char *G_GNUC_PRINTF(1, 2) fx_path(const char *fmt, ...)
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

uint8_t *fx_buf(size_t len)
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

void make_random_file(const char *path, uint64_t size)
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

void copy_file(const char *from, const char *to)
{
	uint64_t size = fm_test_file_size(from);
	uint8_t *buf = g_malloc(size);

	fm_test_read_file(from, 0, buf, size);
	fm_test_create_file(to, 0);
	fm_test_write_file(to, 0, buf, size);
	g_free(buf);
}

void truncate_file(const char *path, uint64_t size)
{
	ck_assert_msg(truncate(path, (off_t)size) == 0, "truncate %s to %" PRIu64 ": %s",
		      path, size, g_strerror(errno));
}

void make_ext4_file(const char *path)
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

char *file_digest(const char *path)
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

void snap_add(struct snap *s, const char *path)
{
	ck_assert_uint_lt(s->n, G_N_ELEMENTS(s->path));
	s->path[s->n] = g_strdup(path);
	s->digest[s->n] = file_digest(path);
	s->n++;
}

void snap_check(struct snap *s, const char *what)
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

void read_sb(const char *path, struct fm_sb *sb)
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

void sb_set_events(struct fm_sb *sb, uint64_t events)
{
	sb->events = events;
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		if (sb->last_in_sync[i] > events)
			sb->last_in_sync[i] = events;
}

void write_sb(const char *path, struct fm_sb *sb)
{
	struct dmio_dev *dev = NULL;
	int r = dmio_dev_open(path, 0, &dev);

	ck_assert_msg(r == 0, "open %s: %s", path, g_strerror(-r));
	r = fm_sb_write(dev, sb);
	dmio_dev_close(dev);
	ck_assert_msg(r == 0, "fm_sb_write %s: %s", path, g_strerror(-r));
}

void write_sb_raw(const char *path, const struct fm_sb *sb)
{
	uint8_t *buf = g_malloc0(FM_SB_SIZE);

	fm_sb_encode(sb, buf);
	fm_test_write_file(path, 0, buf, FM_SB_SIZE);
	g_free(buf);
}

bool file_range_is_zero(const char *path, uint64_t off, uint64_t len)
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

uint64_t file_allocated(const char *path)
{
	struct stat st;

	ck_assert_msg(stat(path, &st) == 0, "stat %s: %s", path, g_strerror(errno));
	return (uint64_t)st.st_blocks * 512;
}

void check_formatted(char *const *paths, unsigned n, const uint8_t uuid[16],
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
		/* With zero-on-write the data area keeps what the leg held (a
		 * region is zeroed when first written); the map says that no
		 * region is written, so the image reads as zeroes.  Without,
		 * create emptied the data area. */
		if (s->features & FM_SB_FEAT_ZERO_ON_WRITE)
			ck_assert_msg(file_range_is_zero(paths[i], s->written_offset,
							 s->written_length),
				      "leg %s: written-region map is not empty", paths[i]);
		else
			ck_assert_msg(file_range_is_zero(paths[i], s->data_offset, image_size),
				      "leg %s: data area does not read as zeroes", paths[i]);
	}
	if (ret_sb0)
		*ret_sb0 = sb[0];
	g_free(sb);
}

/*----------------------------------------------------------------*/
/* The array under test */

void fx_name_legs(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		g_free(fx.legs[i]);
		fx.legs[i] = fx_path("leg%u", i);
	}
	fx.nlegs = n;
}

void fx_format_opts(const struct mirror_format_opts *o)
{
	uint8_t uuid[16];
	struct fm_sb sb;
	GError *err = NULL;
	char msg[512] = "";
	int r = mirror_format((const char *const *)fx.legs, fx.nlegs, o, uuid, &err);

	if (err) {
		g_strlcpy(msg, err->message, sizeof(msg));
		g_error_free(err);
	}
	ck_assert_msg(r == 0, "mirror_format: %d %s", r, msg);
	read_sb(fx.legs[0], &sb);
	ck_assert_uint_eq(sb.image_size, o->size);
	fx.data_offset = sb.data_offset;
	memset(fx.model, 0, IMG);
}

void fx_format(uint64_t size)
{
	fx_format_opts(&(struct mirror_format_opts){ .size = size });
}

struct mirror *assemble_ok(char *const *paths, unsigned n,
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

void fx_assemble(enum mirror_read_policy policy, bool readonly)
{
	ck_assert_ptr_null(fx.m);
	fx.m = assemble_ok(fx.legs, fx.nlegs, policy, readonly);
	ck_assert_uint_eq(mirror_size(fx.m), IMG);
	ck_assert_uint_eq(mirror_nr_legs(fx.m), fx.nlegs);
}

/*----------------------------------------------------------------*/
/* I/O */

void io_done(void *ctx, int err)
{
	struct io *io = ctx;

	fx_lock();
	io->err = err;
	io->calls++;
	pthread_cond_broadcast(&fx.cond);
	fx_unlock();
}

int fx_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
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

int io_wait(struct io *io)
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

void fx_wait_all(void)
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

void fx_stop(int want)
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

int fx_rw(enum mirror_op op, uint64_t off, void *buf, size_t len, unsigned flags)
{
	struct iovec iov = { buf, len };
	struct io *io;
	int r = fx_submit(fx.m, op, off / SECTOR, &iov, 1, flags, &io);

	return r < 0 ? r : io_wait(io);
}

void fx_write_random(uint64_t off, size_t len)
{
	uint8_t *buf = fx_buf(len);
	int r;

	fm_rng_fill(&fx.rng, buf, len);
	r = fx_rw(MIRROR_OP_WRITE, off, buf, len, 0);
	ck_assert_msg(r == 0, "write of %zu bytes at %" PRIu64 ": %d", len, off, r);
	memcpy(fx.model + off, buf, len);
}

void fx_check_legs(uint64_t off, uint64_t len)
{
	uint8_t *buf = g_malloc(len);

	for (unsigned i = 0; i < fx.nlegs; i++) {
		fm_test_read_file(fx.legs[i], fx.data_offset + off, buf, len);
		fm_assert_bytes_eq(buf, fx.model + off, len, "leg %u (%s), image bytes %" PRIu64
				   "+%" PRIu64, i, fx.legs[i], off, len);
	}
	g_free(buf);
}

void fx_check_read(uint64_t off, size_t len)
{
	uint8_t *buf = fx_buf(len);
	int r = fx_rw(MIRROR_OP_READ, off, buf, len, 0);

	ck_assert_msg(r == 0, "read of %zu bytes at %" PRIu64 ": %d", len, off, r);
	fm_assert_bytes_eq(buf, fx.model + off, len, "mirror read at %" PRIu64, off);
}

void leg_stats(unsigned leg, struct mirror_leg_stats *s)
{
	memset(s, 0, sizeof(*s));
	mirror_get_leg_stats(fx.m, leg, s);
}

void stats(struct mirror_stats *s)
{
	memset(s, 0, sizeof(*s));
	mirror_get_stats(fx.m, s);
}

void check_error(GError *err, int r, const char *what, ...)
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

void fx_format_regions(void)
{
	fx_format_opts(&(struct mirror_format_opts){ .size = IMG, .region_size = REGION });
}

void fx_scribble_legs(uint64_t off, size_t len)
{
	uint8_t *buf = g_malloc(len);

	memset(buf, FX_OLD_BYTE, len);
	for (unsigned i = 0; i < fx.nlegs; i++)
		fm_test_write_file(fx.legs[i], fx.data_offset + off, buf, len);
	g_free(buf);
}

uint64_t fx_leg_reads(void)
{
	struct mirror_leg_stats ls;
	uint64_t n = 0;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		n += ls.reads;
	}
	return n;
}

uint64_t fx_leg_read_bytes(void)
{
	struct mirror_leg_stats ls;
	uint64_t n = 0;

	for (unsigned i = 0; i < fx.nlegs; i++) {
		leg_stats(i, &ls);
		n += ls.read_bytes;
	}
	return n;
}

void fx_assemble_opts(const struct mirror_opts *o)
{
	GError *err = NULL;
	int r = mirror_assemble((const char *const *)fx.legs, fx.nlegs, o, &fx.m, &err);

	ck_assert_msg(r == 0, "mirror_assemble: %d %s", r, err ? err->message : "");
}

void fx_start_written(const struct mirror_opts *o)
{
	fx_name_legs(2);
	fx_format_regions();
	fx_assemble_opts(o);
	fx_write_random(0, IMG);
}

void wait_sync_idle(struct mirror_status *ms)
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

void admin_ok(int r, GError *err, const char *what)
{
	ck_assert_msg(r == 0, "%s: %d %s", what, r, err ? err->message : "");
}

TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
		     void (*unchecked_teardown)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, unchecked_setup, unchecked_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	fm_test_tcase_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return tc;
}

struct mirror_evs_state evs = { .lock = PTHREAD_MUTEX_INITIALIZER };

void ev_handler(void *ctx, const struct fm_event *ev)
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
		r->read_bytes = ev->read_bytes;
		r->write_bytes = ev->write_bytes;
		g_strlcpy(r->path, ev->leg_path ? ev->leg_path : "", sizeof(r->path));
		r->uuid_set = memcmp(ev->leg_uuid, zero, 16) != 0;
	} else {
		evs.dropped++;
	}
	pthread_mutex_unlock(&evs.lock);
	atomic_fetch_sub(&evs.inside, 1);
}

void ev_reset(void)
{
	pthread_mutex_lock(&evs.lock);
	evs.n = evs.dropped = 0;
	atomic_store(&evs.overlapped, false);
	pthread_mutex_unlock(&evs.lock);
}

void ev_expect(const char *const *want, unsigned nwant, const char *when)
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

const struct ev_rec *ev_at(unsigned i)
{
	ck_assert_uint_lt(i, evs.n);
	return &evs.ev[i];
}

/*
 * Fork a child that assembles fx.legs (with @o), writes @len bytes of
 * @data at image byte @off with FUA (durable on every leg), and dies once
 * the write is done, without mirror_stop(): a daemon killed with -9.
 */
void crash_after_write(const struct mirror_opts *o, const uint8_t *data,
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

const enum mirror_read_policy policies[3] = {
	MIRROR_READ_FIRST,
	MIRROR_READ_ROUND_ROBIN,
	MIRROR_READ_BALANCE,
};
