/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the dmio engine, written from its contract,
 * include/fusemirror/dmio.h (not from its source).
 *
 * One Suite "dmio", one TCase per behaviour (see dmio_suite() at the end).
 *
 * Data: every byte written is random, from a PRNG seeded per test
 * (fm_test_seed_for(); FM_TEST_SEED=<n> changes the run's base seed).  Each
 * backing file or device has an in-memory model of its WHOLE content; checks
 * read the file back through a separate fd (pread; O_DIRECT for block
 * devices) and compare all of it, so wrong data, data in the wrong place,
 * damaged neighbours and writes past the end all show, and the file size is
 * checked too.  Memory handed to dmio is surrounded by guard bytes that a
 * read must not touch.
 *
 * Fixtures: unchecked fixtures (run in check's parent process) own the
 * per-TCase temporary directory and the loop devices, so those are removed
 * and detached even when a test fails or crashes (with CK_FORK=no a crash
 * ends the whole process: the loop devices still go, being autoclear, the
 * directory stays); checked fixtures create fresh backing files for every
 * test and, in teardown, shut the engine down (which drains it) before
 * closing devices and freeing buffers.
 *
 * Async completions: every callback goes through a tracker (struct fx_cb)
 * whose call count is checked after dmio_engine_shutdown() in fx_finish():
 * exactly one call per accepted request, none for a rejected one.  Nothing
 * asserts on an engine thread: callbacks record, the test thread checks.
 *
 * Works with CK_FORK=yes (default) and CK_FORK=no (the valgrind setup).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>
#include <liburing.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

#include "fm_test.h"

#define SECTOR 512u
#define PAGE 4096u
#define MiB (1024u * 1024u)

#define FX_MAX_FILES 72
#define FX_WAIT_SECONDS 60
#define FX_POISON 0xa5                    /* fresh read buffers and guard bytes */
#define FX_BITS_POISON 0x5a5a5a5a5a5a5a5aUL /* *error_bits before a sync call */

static const char *const mem_names[] = { "page-list", "bvec", "vm" };

/*----------------------------------------------------------------*/
/* Unchecked fixtures: per-TCase directories and loop devices */

static char *tc_dir;            /* temporary directory of the running TCase */
static char *tc_shm_dir;        /* the same on tmpfs (/dev/shm), discard TCase */

#define TC_NLOOPS 3
static struct fm_test_loop tc_loops[TC_NLOOPS];
static const uint64_t tc_loop_sizes[TC_NLOOPS] = { 4 * MiB, 1 * MiB, 1 * MiB };

static void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "dmio");
}

static void tc_dir_teardown(void)
{
	int r = fm_test_rm_rf(tc_dir);
	char *dir = tc_dir;

	tc_dir = NULL;
	if (r < 0) {
		fprintf(stderr, "test_dmio: cannot remove %s: %s\n", dir, g_strerror(-r));
		g_free(dir);
		ck_abort_msg("cannot remove the temporary directory");
	}
	g_free(dir);
}

static void tc_shm_setup(void)
{
	tc_dir_setup();
	if (access("/dev/shm", W_OK) != 0) {
		fm_test_rm_rf(tc_dir);
		g_clear_pointer(&tc_dir, g_free);
		ck_abort_msg("/dev/shm is not writable: %s", g_strerror(errno));
	}
	tc_shm_dir = fm_test_mkdtemp("/dev/shm", "dmio");
	if (!fm_test_in_memory(tc_shm_dir))
		fprintf(stderr, "test_dmio: note: %s is not in memory (tmpfs, ramfs)\n", tc_shm_dir);
}

static void tc_shm_teardown(void)
{
	int r = fm_test_rm_rf(tc_shm_dir);

	g_clear_pointer(&tc_shm_dir, g_free);
	tc_dir_teardown();
	ck_assert_msg(r == 0, "cannot remove the tmpfs directory: %s", g_strerror(-r));
}

static int tc_loops_detach(char **ret_msg)
{
	int ret = 0;

	for (unsigned i = 0; i < TC_NLOOPS; i++) {
		char *msg = NULL;

		if (fm_test_loop_detach(&tc_loops[i], &msg) < 0) {
			fprintf(stderr, "test_dmio: %s\n", msg);
			if (ret == 0 && ret_msg)
				*ret_msg = g_steal_pointer(&msg);
			ret = -1;
		}
		g_free(msg);
	}
	return ret;
}

/* Three loop devices with 4096-byte logical sectors and direct I/O, over
 * files in this TCase's directory.  Whatever happens, they are detached in
 * tc_loop_teardown() (or here, when setup fails half way). */
static void tc_loop_setup(void)
{
	char *msg = NULL;
	char failure[512] = "";

	tc_dir_setup();
	msg = fm_test_loop_unusable();
	if (msg)
		snprintf(failure, sizeof(failure), "%s", msg);
	g_clear_pointer(&msg, g_free);
	for (unsigned i = 0; i < TC_NLOOPS && !failure[0]; i++) {
		char *path = g_strdup_printf("%s/loop%u.img", tc_dir, i);
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd < 0 || ftruncate(fd, (off_t)tc_loop_sizes[i]) < 0)
			snprintf(failure, sizeof(failure), "create %s: %s", path,
				 g_strerror(errno));
		else if (fm_test_loop_attach(path, 4096, &tc_loops[i], &msg) < 0)
			snprintf(failure, sizeof(failure), "attach %s: %s", path, msg);
		if (fd >= 0)
			close(fd);
		g_free(msg);
		msg = NULL;
		g_free(path);
	}
	if (failure[0]) {
		tc_loops_detach(NULL);
		fm_test_rm_rf(tc_dir);
		g_clear_pointer(&tc_dir, g_free);
		ck_abort_msg("loop device setup: %s", failure);
	}
}

static void tc_loop_teardown(void)
{
	char *msg = NULL;
	int r = tc_loops_detach(&msg);
	char copy[512];

	snprintf(copy, sizeof(copy), "%s", msg ? msg : "");
	g_free(msg);
	tc_dir_teardown();
	ck_assert_msg(r == 0, "loop teardown: %s", copy);
}

/*----------------------------------------------------------------*/
/* Checked fixture: backing files with models, callback trackers */

struct fx_file {
	char *path;
	uint64_t size;
	uint8_t *model;         /* the whole expected content */
	struct dmio_dev *dev;   /* owned; closed in teardown */
	bool blockdev;          /* a TCase loop device: not unlinked */
};

/* One async request's callback record (see fx_cb_fn). */
struct fx_cb {
	atomic_uint calls;
	atomic_ulong bits;
	atomic_bool in_callback;    /* dmio_in_callback() inside the callback */
	atomic_bool accepted;       /* submission returned 0: one call expected */
};

struct fx_chunk {               /* one allocation a memory object owns */
	uint8_t *base;
	size_t total;
	size_t data_off, data_len;  /* the bytes dmio may touch; the rest are guards */
};

struct fx_mem {
	enum dmio_mem_type type;
	size_t len;
	unsigned offset;                /* page list: byte offset into the first page */
	struct dmio_page_list *nodes;   /* page list: one array, linked in order */
	unsigned npages;
	struct iovec *iov;              /* bvec */
	unsigned iovcnt;
	uint8_t *vm;                    /* vm */
	GArray *chunks;                 /* struct fx_chunk (freed with the object) */
	GPtrArray *meta;                /* node and iovec arrays */
};

static struct {
	uint64_t seed;
	struct fm_rng rng;
	struct fx_file files[FX_MAX_FILES];
	unsigned nfiles;
	GPtrArray *cbs;         /* struct fx_cb *: checked by fx_finish() */
	GPtrArray *mems;        /* struct fx_mem *: freed in teardown */
	GPtrArray *bufs;        /* plain buffers: freed in teardown */
	struct fm_test_sync sync;       /* guards done; signalled on each callback */
	unsigned done;          /* callbacks run (fx_cb_fn) */
	unsigned accepted;      /* async requests accepted from the test thread */
} fx;

/*
 * Watchdog for calls that block inside dmio (sync I/O, shutdown): a call
 * that has not returned after FX_WAIT_SECONDS aborts the test with a message
 * naming it, instead of waiting for check's timeout (which CK_FORK=no does
 * not even have).
 */
static struct {
	struct fm_test_sync sync;       /* guards the fields below */
	pthread_t thread;
	bool stop;
	const char *what;               /* the call being watched, or NULL */
	gint64 deadline;
} wd;

static void *wd_main(void *arg)
{
	(void)arg;
	fm_test_sync_lock(&wd.sync);
	while (!wd.stop) {
		gint64 now = g_get_monotonic_time();

		if (wd.what && now >= wd.deadline) {
			fprintf(stderr, "test_dmio: %s did not return within %d s: hung\n", wd.what,
				FX_WAIT_SECONDS);
			abort();
		}
		fm_test_sync_wait_until(&wd.sync, wd.what ? wd.deadline : now + G_USEC_PER_SEC);
	}
	fm_test_sync_unlock(&wd.sync);
	return NULL;
}

static void wd_start(void)
{
	memset(&wd, 0, sizeof(wd));
	fm_test_sync_init(&wd.sync);
	ck_assert_int_eq(pthread_create(&wd.thread, NULL, wd_main, NULL), 0);
}

static void wd_stop(void)
{
	fm_test_sync_lock(&wd.sync);
	wd.stop = true;
	fm_test_sync_signal(&wd.sync);
	fm_test_sync_unlock(&wd.sync);
	pthread_join(wd.thread, NULL);
	fm_test_sync_destroy(&wd.sync);
}

static void wd_arm(const char *what)
{
	fm_test_sync_lock(&wd.sync);
	wd.what = what;
	wd.deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_USEC_PER_SEC;
	fm_test_sync_signal(&wd.sync);
	fm_test_sync_unlock(&wd.sync);
}

static void wd_disarm(void)
{
	fm_test_sync_lock(&wd.sync);
	wd.what = NULL;
	fm_test_sync_unlock(&wd.sync);
}

/* dmio_engine_shutdown() under the watchdog. */
static void fx_shutdown(void)
{
	wd_arm("dmio_engine_shutdown()");
	dmio_engine_shutdown();
	wd_disarm();
}

static void fx_mem_free(gpointer p)
{
	struct fx_mem *m = p;

	for (guint i = 0; i < m->chunks->len; i++)
		free(g_array_index(m->chunks, struct fx_chunk, i).base);
	g_array_unref(m->chunks);
	g_ptr_array_unref(m->meta);
	g_free(m);
}

static void fx_setup(void)
{
	memset(&fx, 0, sizeof(fx));
	fm_test_sync_init(&fx.sync);
	fx.cbs = g_ptr_array_new_with_free_func(g_free);
	fx.mems = g_ptr_array_new_with_free_func(fx_mem_free);
	fx.bufs = g_ptr_array_new_with_free_func(free);
	fx.seed = fm_test_base_seed();
	fm_rng_seed(&fx.rng, fx.seed);
	wd_start();
}

static void fx_teardown(void)
{
	/* Drain first: nothing below may be in use by an in-flight request. */
	fx_shutdown();
	wd_stop();
	for (unsigned i = 0; i < fx.nfiles; i++) {
		struct fx_file *f = &fx.files[i];

		dmio_dev_close(f->dev);
		if (!f->blockdev && f->path)
			unlink(f->path);
		g_free(f->model);
		g_free(f->path);
	}
	g_ptr_array_unref(fx.mems);
	g_ptr_array_unref(fx.bufs);
	g_ptr_array_unref(fx.cbs);
	fm_test_sync_destroy(&fx.sync);
	memset(&fx, 0, sizeof(fx));
}

/* Split-engine fixture: a small max_io_bytes so that everything splits. */
#define SPLIT_MAX_IO 16384u

static void fx_split_setup(void)
{
	int r;

	fx_setup();
	r = dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = SPLIT_MAX_IO });
	ck_assert_msg(r == 0, "dmio_engine_init(max_io_bytes=%u): %d (%s)", SPLIT_MAX_IO, r,
		      g_strerror(-r));
}

static void fx_seed(const char *name, int i)
{
	fx.seed = fm_test_seed_for(name, i);
	fm_rng_seed(&fx.rng, fx.seed);
}

/* A buffer freed in teardown. */
static uint8_t *fx_buf(size_t len)
{
	uint8_t *p = fm_test_alloc_aligned(PAGE, len);

	g_ptr_array_add(fx.bufs, p);
	return p;
}

static uint8_t *fx_random_buf(size_t len)
{
	uint8_t *p = fx_buf(len);

	fm_rng_fill(&fx.rng, p, len);
	return p;
}

static unsigned fx_add_file_in(const char *dir, uint64_t size, unsigned flags)
{
	struct fx_file *f;
	unsigned idx;
	int r;

	ck_assert(fx.nfiles < FX_MAX_FILES);
	idx = fx.nfiles++;
	f = &fx.files[idx];
	f->path = g_strdup_printf("%s/leg%02u.img", dir, idx);
	f->size = size;
	f->model = g_malloc(size ? size : 1);
	fm_rng_fill(&fx.rng, f->model, size);
	fm_test_create_file(f->path, size);
	fm_test_write_file(f->path, 0, f->model, size);
	r = dmio_dev_open(f->path, flags, &f->dev);
	ck_assert_msg(r == 0, "dmio_dev_open(%s, %#x): %d (%s)", f->path, flags, r,
		      g_strerror(-r));
	ck_assert_ptr_nonnull(f->dev);
	return idx;
}

/* A fresh regular file of @size random bytes in the TCase directory. */
static unsigned fx_add_file(uint64_t size, unsigned flags)
{
	return fx_add_file_in(tc_dir, size, flags);
}

/* A loop device of the TCase, filled with fresh random bytes. */
static unsigned fx_add_blockdev(const char *path, unsigned flags)
{
	struct fx_file *f;
	unsigned idx;
	int r;

	ck_assert(fx.nfiles < FX_MAX_FILES);
	idx = fx.nfiles++;
	f = &fx.files[idx];
	f->blockdev = true;
	f->path = g_strdup(path);
	f->size = fm_test_blockdev_size(path);
	f->model = g_malloc(f->size);
	fm_rng_fill(&fx.rng, f->model, f->size);
	fm_test_write_direct(path, 0, f->model, f->size);
	r = dmio_dev_open(path, flags, &f->dev);
	ck_assert_msg(r == 0, "dmio_dev_open(%s, %#x): %d (%s)", path, flags, r,
		      g_strerror(-r));
	return idx;
}

static struct dmio_dev *fx_dev(unsigned idx)
{
	return fx.files[idx].dev;
}

static struct dmio_region fx_region(unsigned idx, uint64_t sector, uint64_t count)
{
	return (struct dmio_region){ .dev = fx.files[idx].dev, .sector = sector, .count = count };
}

static unsigned fx_idx_of(const struct dmio_dev *dev)
{
	for (unsigned i = 0; i < fx.nfiles; i++)
		if (fx.files[i].dev == dev)
			return i;
	ck_abort_msg("region names a device the fixture does not know");
	return 0;
}

/* The model after a successful write of @data to @r (its first count*512 bytes). */
static void fx_model_write(const struct dmio_region *r, const void *data)
{
	struct fx_file *f = &fx.files[fx_idx_of(r->dev)];

	ck_assert(r->sector * SECTOR + r->count * SECTOR <= f->size);
	memcpy(f->model + r->sector * SECTOR, data, r->count * SECTOR);
}

static void fx_model_zero(const struct dmio_region *r)
{
	struct fx_file *f = &fx.files[fx_idx_of(r->dev)];

	ck_assert(r->sector * SECTOR + r->count * SECTOR <= f->size);
	memset(f->model + r->sector * SECTOR, 0, r->count * SECTOR);
}

/* Read the file (device) through a separate fd into a fixture buffer. */
static uint8_t *fx_read_back(unsigned idx)
{
	struct fx_file *f = &fx.files[idx];
	uint8_t *buf = fx_buf(f->size);

	if (f->blockdev) {
		fm_test_read_direct(f->path, 0, buf, f->size);
	} else {
		uint64_t size = fm_test_file_size(f->path);

		ck_assert_msg(size == f->size,
			      "%s: size is %" PRIu64 ", was %" PRIu64 " (written past the end?)",
			      f->path, size, f->size);
		fm_test_read_file(f->path, 0, buf, f->size);
	}
	return buf;
}

/* Compare a whole backing file (device) with its model. */
static void fx_verify(unsigned idx)
{
	struct fx_file *f = &fx.files[idx];
	uint8_t *buf = fx_read_back(idx);

	fm_assert_bytes_eq(buf, f->model, f->size, "%s (seed %#" PRIx64 ")", f->path, fx.seed);
}

static void fx_verify_all(void)
{
	for (unsigned i = 0; i < fx.nfiles; i++)
		fx_verify(i);
}

/*----------------------------------------------------------------*/
/* Memory objects of the three types */

static struct fx_mem *fx_mem_new(enum dmio_mem_type type, size_t len)
{
	struct fx_mem *m = g_new0(struct fx_mem, 1);

	m->type = type;
	m->len = len;
	m->chunks = g_array_new(FALSE, TRUE, sizeof(struct fx_chunk));
	m->meta = g_ptr_array_new_with_free_func(g_free);
	g_ptr_array_add(fx.mems, m);
	return m;
}

/* An allocation of @total bytes (aligned to @align, all guard bytes) whose
 * [data_off, data_off + data_len) is handed to dmio. */
static uint8_t *fx_mem_chunk(struct fx_mem *m, size_t align, size_t total, size_t data_off,
			     size_t data_len)
{
	struct fx_chunk c = {
		.base = fm_test_alloc_aligned(align, total),
		.total = total,
		.data_off = data_off,
		.data_len = data_len,
	};

	ck_assert(data_off + data_len <= total);
	memset(c.base, FX_POISON, total);
	g_array_append_val(m->chunks, c);
	return c.base + data_off;
}

/* A page list of separately allocated pages, @offset bytes into the first. */
static struct fx_mem *fx_mem_pl(size_t len, unsigned offset)
{
	struct fx_mem *m = fx_mem_new(DMIO_MEM_PAGE_LIST, len);
	size_t pos = 0;

	ck_assert(offset < PAGE);
	m->offset = offset;
	m->npages = (unsigned)((offset + len + PAGE - 1) / PAGE);
	if (!m->npages)
		m->npages = 1;
	m->nodes = g_new0(struct dmio_page_list, m->npages);
	g_ptr_array_add(m->meta, m->nodes);
	for (unsigned j = 0; j < m->npages; j++) {
		size_t in = j == 0 ? offset : 0;
		size_t n = MIN(PAGE - in, len - pos);

		m->nodes[j].page = fx_mem_chunk(m, PAGE, PAGE, in, n) - in;
		m->nodes[j].next = j + 1 < m->npages ? &m->nodes[j + 1] : NULL;
		pos += n;
	}
	return m;
}

/* Split @units into @n random parts of at least one unit each. */
static void fx_split_units(size_t units, unsigned n, size_t *parts)
{
	size_t extra = units - n;
	size_t *cuts = g_new(size_t, n + 1);

	cuts[0] = 0;
	cuts[n] = extra;
	for (unsigned k = 1; k < n; k++)
		cuts[k] = fm_rng_between(&fx.rng, 0, extra);
	for (unsigned k = 1; k < n; k++)       /* insertion sort: n is small */
		for (unsigned j = k; j > 1 && cuts[j - 1] > cuts[j]; j--) {
			size_t t = cuts[j];

			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	for (unsigned k = 0; k < n; k++)
		parts[k] = 1 + cuts[k + 1] - cuts[k];
	g_free(cuts);
}

/*
 * An iovec array of @iovcnt separately allocated buffers.  Aligned (@odd
 * false): lengths are multiples of @unit and bases 4096-aligned.  Odd:
 * lengths of any size (>= 1 byte) at addresses 1..511 bytes past alignment.
 */
static struct fx_mem *fx_mem_bvec(size_t len, unsigned iovcnt, bool odd, size_t unit)
{
	static const size_t misaligns[] = { 1, 7, 511, 3, 255, 100 };
	struct fx_mem *m = fx_mem_new(DMIO_MEM_BVEC, len);
	size_t *parts;

	if (odd)
		unit = 1;
	ck_assert(unit && len % unit == 0 && iovcnt >= 1 && iovcnt <= len / unit);
	parts = g_new(size_t, iovcnt);
	fx_split_units(len / unit, iovcnt, parts);
	m->iovcnt = iovcnt;
	m->iov = g_new0(struct iovec, iovcnt);
	g_ptr_array_add(m->meta, m->iov);
	for (unsigned k = 0; k < iovcnt; k++) {
		size_t n = parts[k] * unit;
		size_t mis = odd ? misaligns[fm_rng_between(&fx.rng, 0, G_N_ELEMENTS(misaligns) - 1)]
				 : 0;

		m->iov[k].iov_base = fx_mem_chunk(m, PAGE, mis + n + 64, mis, n);
		m->iov[k].iov_len = n;
	}
	g_free(parts);
	return m;
}

/* One buffer, @misalign bytes past a 4096-byte boundary. */
static struct fx_mem *fx_mem_vm(size_t len, size_t misalign)
{
	struct fx_mem *m = fx_mem_new(DMIO_MEM_VM, len);

	m->vm = fx_mem_chunk(m, PAGE, misalign + len + 64, misalign, len);
	return m;
}

/* Memory of @type for @len bytes, aligned for O_DIRECT with 512-byte
 * sectors, of a random shape (page offset, number of iovecs). */
static struct fx_mem *fx_mem_random(enum dmio_mem_type type, size_t len)
{
	switch (type) {
	case DMIO_MEM_PAGE_LIST:
		return fx_mem_pl(len, SECTOR * (unsigned)fm_rng_between(&fx.rng, 1, 7));
	case DMIO_MEM_BVEC: {
		size_t units = len / SECTOR;
		uint64_t want = fm_rng_between(&fx.rng, 2, 6); /* (MIN evaluates twice) */
		unsigned n = (unsigned)MIN(units, want);

		return fx_mem_bvec(len, n, false, SECTOR);
	}
	default:
		return fx_mem_vm(len, 0);
	}
}

/* Memory of @type with every segment 4096-aligned in address and length
 * (@len a multiple of 4096): what no device needs to bounce. */
static struct fx_mem *fx_mem_aligned(enum dmio_mem_type type, size_t len)
{
	switch (type) {
	case DMIO_MEM_PAGE_LIST:
		return fx_mem_pl(len, 0);
	case DMIO_MEM_BVEC:
		return fx_mem_bvec(len, (unsigned)MIN(len / PAGE, 3), false, PAGE);
	default:
		return fx_mem_vm(len, 0);
	}
}

/* Walk the data segments of @m in order. */
typedef void (*fx_seg_fn)(uint8_t *seg, size_t n, size_t pos, void *arg);

static void fx_mem_walk(struct fx_mem *m, fx_seg_fn fn, void *arg)
{
	size_t pos = 0;

	switch (m->type) {
	case DMIO_MEM_PAGE_LIST:
		for (unsigned j = 0; pos < m->len; j++) {
			size_t in = j == 0 ? m->offset : 0;
			size_t n = MIN(PAGE - in, m->len - pos);

			fn((uint8_t *)m->nodes[j].page + in, n, pos, arg);
			pos += n;
		}
		break;
	case DMIO_MEM_BVEC:
		for (unsigned k = 0; k < m->iovcnt; k++) {
			fn(m->iov[k].iov_base, m->iov[k].iov_len, pos, arg);
			pos += m->iov[k].iov_len;
		}
		break;
	case DMIO_MEM_VM:
		fn(m->vm, m->len, 0, arg);
		break;
	}
}

static void fx_seg_fill(uint8_t *seg, size_t n, size_t pos, void *arg)
{
	memcpy(seg, (const uint8_t *)arg + pos, n);
}

static void fx_seg_gather(uint8_t *seg, size_t n, size_t pos, void *arg)
{
	memcpy((uint8_t *)arg + pos, seg, n);
}

static void fx_mem_fill(struct fx_mem *m, const void *src)
{
	fx_mem_walk(m, fx_seg_fill, (void *)src);
}

/* The data bytes of @m, gathered into a fixture buffer. */
static uint8_t *fx_mem_gather(struct fx_mem *m)
{
	uint8_t *dst = fx_buf(m->len);

	fx_mem_walk(m, fx_seg_gather, dst);
	return dst;
}

/* Offset of the first byte in [from, to) of @p that is not @v, or -1. */
static ssize_t fx_first_not(const uint8_t *p, size_t from, size_t to, uint8_t v)
{
	for (size_t b = from; b < to; b++)
		if (p[b] != v)
			return (ssize_t)b;
	return -1;
}

/*
 * The bytes around the data of @m must still be guard bytes.  (Loops find
 * the culprit first and assert once: every passing ck_assert costs a
 * message to check's parent.)
 */
static void fx_mem_check_guards(struct fx_mem *m, const char *what)
{
	for (guint i = 0; i < m->chunks->len; i++) {
		struct fx_chunk *c = &g_array_index(m->chunks, struct fx_chunk, i);
		size_t end = c->data_off + c->data_len;
		ssize_t b = fx_first_not(c->base, 0, c->data_off, FX_POISON);

		if (b < 0)
			b = fx_first_not(c->base, end, c->total, FX_POISON);
		if (b >= 0)
			ck_abort_msg("%s: %s memory: byte %zd of chunk %u (outside the data "
				     "[%zu, %zu)) was overwritten",
				     what, mem_names[m->type], b, i, c->data_off, end);
	}
}

static struct dmio_memory fx_mem_dmio(const struct fx_mem *m)
{
	struct dmio_memory mem = { .type = m->type };

	switch (m->type) {
	case DMIO_MEM_PAGE_LIST:
		mem.offset = m->offset;
		mem.ptr.pl = m->nodes;
		break;
	case DMIO_MEM_BVEC:
		mem.ptr.bvec.iov = m->iov;
		mem.ptr.bvec.iovcnt = m->iovcnt;
		break;
	case DMIO_MEM_VM:
		mem.ptr.vma = m->vm;
		break;
	}
	return mem;
}

/*----------------------------------------------------------------*/
/* Submission */

enum fx_api {
	FX_API_SEED, /* dmio_sync/_async, _bvec, _vm */
	FX_API_DMIO, /* dmio() with struct dmio_request */
};

static struct fx_cb *fx_cb_new(void)
{
	struct fx_cb *cb = g_new0(struct fx_cb, 1);

	g_ptr_array_add(fx.cbs, cb);
	return cb;
}

static void fx_cb_signal(void)
{
	fm_test_sync_lock(&fx.sync);
	fx.done++;
	fm_test_sync_broadcast(&fx.sync);
	fm_test_sync_unlock(&fx.sync);
}

/* The completion callback of every tracked request: record, never assert. */
static void fx_cb_fn(unsigned long error_bits, void *context)
{
	struct fx_cb *cb = context;

	atomic_store(&cb->bits, error_bits);
	atomic_store(&cb->in_callback, dmio_in_callback());
	atomic_fetch_add(&cb->calls, 1);
	fx_cb_signal();
}

/*
 * Submit one request, without asserting (safe in a callback).  @where and
 * the iovec array are passed as heap copies that are scribbled over and
 * freed as soon as the call returns (the header lets the caller reuse them
 * at once: ASan sees it if the engine keeps them), and so is the request.
 * @fn NULL: synchronous.
 */
static int fx_raw_submit(enum fx_api api, enum dmio_op op, unsigned flags, struct fx_mem *m,
			 struct dmio_client *client, unsigned n, const struct dmio_region *where,
			 dmio_notify_fn fn, void *ctx, unsigned long *bits)
{
	size_t wn = n ? n : 1;
	struct dmio_region *w = g_new0(struct dmio_region, wn);
	struct iovec *iov = NULL;
	struct dmio_memory mem = { 0 };
	int rc;

	if (n)
		memcpy(w, where, n * sizeof(*w));
	if (m) {
		mem = fx_mem_dmio(m);
		if (m->type == DMIO_MEM_BVEC) {
			iov = g_memdup2(m->iov, m->iovcnt * sizeof(*iov));
			mem.ptr.bvec.iov = iov;
		}
	}
	if (api == FX_API_SEED) {
		g_assert(m && !flags && !client && (op == DMIO_OP_READ || op == DMIO_OP_WRITE));
		switch (m->type) {
		case DMIO_MEM_PAGE_LIST:
			rc = fn ? dmio_async(n, w, (int)op, mem.ptr.pl, mem.offset, fn, ctx)
				: dmio_sync(n, w, (int)op, mem.ptr.pl, mem.offset, bits);
			break;
		case DMIO_MEM_BVEC:
			rc = fn ? dmio_async_bvec(n, w, (int)op, iov, m->iovcnt, fn, ctx)
				: dmio_sync_bvec(n, w, (int)op, iov, m->iovcnt, bits);
			break;
		default:
			rc = fn ? dmio_async_vm(n, w, (int)op, m->vm, fn, ctx)
				: dmio_sync_vm(n, w, (int)op, m->vm, bits);
			break;
		}
	} else {
		struct dmio_request req = {
			.op = op,
			.flags = flags,
			.mem = mem,
			.notify_fn = fn,
			.notify_context = ctx,
			.client = client,
		};

		rc = dmio(&req, n, w, fn ? NULL : bits);
		memset(&req, 0xee, sizeof(req));
	}
	memset(w, 0xee, wn * sizeof(*w));
	g_free(w);
	if (iov) {
		memset(iov, 0xee, m->iovcnt * sizeof(*iov));
		g_free(iov);
	}
	return rc;
}

struct fx_io {
	enum fx_api api;
	bool async;
	enum dmio_op op;
	unsigned flags;
	struct fx_mem *mem;             /* READ and WRITE */
	struct dmio_client *client;
};

/* Wait (bounded) until @cb has run at least once. */
static void fx_wait_cb(struct fx_cb *cb)
{
	gint64 deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_TIME_SPAN_SECOND;
	bool timed_out = false;

	fm_test_sync_lock(&fx.sync);
	while (atomic_load(&cb->calls) == 0 && !timed_out)
		timed_out = !fm_test_sync_wait_until(&fx.sync, deadline);
	fm_test_sync_unlock(&fx.sync);
	ck_assert_msg(atomic_load(&cb->calls) > 0, "callback not called within %d s",
		      FX_WAIT_SECONDS);
}

/* Wait (bounded) until @n tracked callbacks have run in all. */
static void fx_wait_done(unsigned n)
{
	gint64 deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_TIME_SPAN_SECOND;
	bool timed_out = false;
	unsigned done;

	fm_test_sync_lock(&fx.sync);
	while (fx.done < n && !timed_out)
		timed_out = !fm_test_sync_wait_until(&fx.sync, deadline);
	done = fx.done;
	fm_test_sync_unlock(&fx.sync);
	ck_assert_msg(done >= n, "only %u of %u callbacks ran within %d s", done, n,
		      FX_WAIT_SECONDS);
}

/*
 * Issue one request from the test thread and wait for it.  Returns what a
 * synchronous call returns (0, -EIO, -errno) and the error bits in
 * *ret_bits (a sync call's *error_bits as filled in; an async call's
 * callback argument).  An async submission that fails returns its -errno
 * and leaves *ret_bits alone.
 */
static int fx_do(const struct fx_io *io, unsigned n, const struct dmio_region *where,
		 unsigned long *ret_bits)
{
	struct fx_cb *cb;
	unsigned long bits;
	int rc;

	if (!io->async) {
		bits = FX_BITS_POISON;
		wd_arm("a synchronous dmio call");
		rc = fx_raw_submit(io->api, io->op, io->flags, io->mem, io->client, n, where,
				   NULL, NULL, &bits);
		wd_disarm();
		if (ret_bits)
			*ret_bits = bits;
		return rc;
	}
	cb = fx_cb_new();
	rc = fx_raw_submit(io->api, io->op, io->flags, io->mem, io->client, n, where, fx_cb_fn,
			   cb, NULL);
	if (rc != 0)
		return rc;
	atomic_store(&cb->accepted, true);
	fx.accepted++;
	fx_wait_cb(cb);
	ck_assert_msg(atomic_load(&cb->in_callback),
		      "dmio_in_callback() was false inside a completion callback");
	bits = atomic_load(&cb->bits);
	if (ret_bits)
		*ret_bits = bits;
	return bits ? -EIO : 0;
}

/* Submit async from the test thread without waiting; returns the rc. */
static int fx_submit_async(const struct fx_io *io, unsigned n, const struct dmio_region *where,
			   struct fx_cb **ret_cb)
{
	struct fx_cb *cb = fx_cb_new();
	int rc = fx_raw_submit(io->api, io->op, io->flags, io->mem, io->client, n, where,
			       fx_cb_fn, cb, NULL);

	if (rc == 0) {
		atomic_store(&cb->accepted, true);
		fx.accepted++;
	}
	if (ret_cb)
		*ret_cb = cb;
	return rc;
}

/*
 * End of a test's I/O: wait for every accepted request, shut the engine
 * down (which waits for everything in flight), then check that each
 * tracked callback ran exactly once (never for a rejected request).
 */
static void fx_finish(void)
{
	fx_wait_done(fx.accepted);
	fx_shutdown();
	for (guint i = 0; i < fx.cbs->len; i++) {
		struct fx_cb *cb = fx.cbs->pdata[i];
		unsigned want = atomic_load(&cb->accepted) ? 1 : 0;
		unsigned calls = atomic_load(&cb->calls);

		if (calls != want)
			ck_abort_msg("tracked request #%u (%s): callback ran %u times, expected %u",
				     i, want ? "accepted" : "rejected", calls, want);
	}
}

static struct dmio_stats fx_stats(void)
{
	struct dmio_stats st;

	memset(&st, 0xcc, sizeof(st));
	dmio_get_stats(&st);
	return st;
}

static const char *op_name(enum dmio_op op)
{
	switch (op) {
	case DMIO_OP_READ: return "read";
	case DMIO_OP_WRITE: return "write";
	case DMIO_OP_FLUSH: return "flush";
	case DMIO_OP_DISCARD: return "discard";
	case DMIO_OP_WRITE_ZEROES: return "write-zeroes";
	}
	return "?";
}

/* Write @data to @n regions and check success; then update the model. */
static void fx_write_ok(const struct fx_io *io_in, unsigned n, const struct dmio_region *where,
			const void *data, const char *what)
{
	struct fx_io io = *io_in;
	unsigned long bits = 0;
	int rc;

	io.op = DMIO_OP_WRITE;
	rc = fx_do(&io, n, where, &bits);
	ck_assert_msg(rc == 0 && bits == 0,
		      "%s: %s %s write to %u regions: rc %d (%s), error bits %#lx", what,
		      io.async ? "async" : "sync", mem_names[io.mem->type], n, rc,
		      g_strerror(-rc), bits);
	for (unsigned i = 0; i < n; i++)
		fx_model_write(&where[i], data);
}

/* Read @r (one region) into fresh memory of @type and compare with @want. */
static void fx_read_check(const struct fx_io *io_in, struct fx_mem *m,
			  const struct dmio_region *r, const void *want, const char *what)
{
	struct fx_io io = *io_in;
	unsigned long bits = 0;
	uint8_t *got;
	int rc;

	io.op = DMIO_OP_READ;
	io.mem = m;
	ck_assert(m->len == r->count * SECTOR);
	rc = fx_do(&io, 1, r, &bits);
	ck_assert_msg(rc == 0 && bits == 0,
		      "%s: %s %s read of sector %" PRIu64 "+%" PRIu64 ": rc %d (%s), bits %#lx",
		      what, io.async ? "async" : "sync", mem_names[m->type], r->sector,
		      r->count, rc, g_strerror(-rc), bits);
	got = fx_mem_gather(m);
	fm_assert_bytes_eq(got, want, m->len, "%s: data read back (%s, %s)", what,
			   mem_names[m->type], io.async ? "async" : "sync");
	fx_mem_check_guards(m, what);
}

/* The model's bytes of @r. */
static const uint8_t *fx_model_at(const struct dmio_region *r)
{
	return fx.files[fx_idx_of(r->dev)].model + r->sector * SECTOR;
}

/* An fx_io for iteration @i of a loop test: sync/async and API alternate. */
static struct fx_io fx_io_for(unsigned i, struct fx_mem *m)
{
	return (struct fx_io){
		.api = (i / 2) % 2 ? FX_API_DMIO : FX_API_SEED,
		.async = i % 2,
		.op = DMIO_OP_WRITE,
		.mem = m,
	};
}

/*----------------------------------------------------------------*/
/* TCase rw: every memory type x sync/async x API x 1, 2, 64 regions */

enum {
	LAYOUT_1,           /* one region */
	LAYOUT_2,           /* two files, the second opened DMIO_DEV_NO_DIRECT */
	LAYOUT_64_FILES,    /* 64 regions on 64 files */
	LAYOUT_64_RANGES,   /* 64 disjoint ranges of 4 files */
	LAYOUT_COUNT,
};
static const char *const layout_names[] = { "1 region", "2 regions", "64 files",
					    "64 ranges of 4 files" };

/* Create the files of @layout and fill @where with regions of @count sectors. */
static unsigned fx_layout(unsigned layout, uint64_t count, struct dmio_region *where)
{
	const uint64_t big = 1 * MiB / SECTOR, small = 64 * 1024 / SECTOR;

	switch (layout) {
	case LAYOUT_1: {
		unsigned f = fx_add_file(1 * MiB, 0);

		where[0] = fx_region(f, fm_rng_between(&fx.rng, 0, big - count), count);
		return 1;
	}
	case LAYOUT_2: {
		unsigned f0 = fx_add_file(1 * MiB, 0);
		unsigned f1 = fx_add_file(1 * MiB, DMIO_DEV_NO_DIRECT);

		ck_assert(!dmio_dev_is_direct(fx_dev(f1)));
		where[0] = fx_region(f0, fm_rng_between(&fx.rng, 0, big - count), count);
		where[1] = fx_region(f1, fm_rng_between(&fx.rng, 0, big - count), count);
		return 2;
	}
	case LAYOUT_64_FILES:
		for (unsigned i = 0; i < 64; i++) {
			unsigned f = fx_add_file(64 * 1024, 0);

			where[i] = fx_region(f, fm_rng_between(&fx.rng, 0, small - count), count);
		}
		return 64;
	case LAYOUT_64_RANGES: {
		unsigned f[4];

		for (unsigned k = 0; k < 4; k++)
			f[k] = fx_add_file(1 * MiB, 0);
		/* Region i: file i % 4, its own 64 KiB slot i / 4. */
		for (unsigned i = 0; i < 64; i++)
			where[i] = fx_region(f[i % 4],
					     (i / 4) * small + fm_rng_between(&fx.rng, 0, small - count),
					     count);
		return 64;
	}
	}
	ck_abort();
	return 0;
}

START_TEST(test_rw_matrix)
{
	unsigned layout = (unsigned)_i % LAYOUT_COUNT;
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / LAYOUT_COUNT) % 3);
	bool async = (_i / (LAYOUT_COUNT * 3)) % 2;
	enum fx_api api = (_i / (LAYOUT_COUNT * 6)) % 2 ? FX_API_DMIO : FX_API_SEED;
	struct dmio_region where[64];
	char what[160];
	uint64_t count;
	size_t len;
	uint8_t *data;
	unsigned n;

	fx_seed(__func__, _i);
	count = fm_rng_between(&fx.rng, 4, 96);
	len = count * SECTOR;
	n = fx_layout(layout, count, where);
	snprintf(what, sizeof(what), "%s, %s, %s, %s API, %" PRIu64 " sectors",
		 layout_names[layout], mem_names[type], async ? "async" : "sync",
		 api == FX_API_DMIO ? "dmio()" : "seed", count);

	data = fx_random_buf(len);
	struct fx_mem *m = fx_mem_random(type, len);
	struct fx_io io = { .api = api, .async = async, .mem = m };

	fx_mem_fill(m, data);
	fx_write_ok(&io, n, where, data, what);
	fx_verify_all();
	fx_mem_check_guards(m, what);

	/* Read every region back, with the same memory type and call. */
	for (unsigned i = 0; i < n; i++)
		fx_read_check(&io, fx_mem_random(type, len), &where[i], data, what);
	fx_finish();
}
END_TEST

/* A write to regions of different sizes sends each region the first
 * count*512 bytes of the buffer (dm-io semantics). */
START_TEST(test_rw_regions_of_different_sizes)
{
	static const uint64_t counts[] = { 8, 24, 1, 17 };
	struct dmio_region where[4];
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	size_t len = 24 * SECTOR;
	uint8_t *data;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 4; i++)
		where[i] = fx_region(fx_add_file(256 * 1024, 0), 8 * i + 3, counts[i]);
	data = fx_random_buf(len);
	struct fx_mem *m = fx_mem_random(type, len);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.api = FX_API_DMIO;
	fx_mem_fill(m, data);
	fx_write_ok(&io, 4, where, data, "regions of 8, 24, 1 and 17 sectors");
	fx_verify_all();
	fx_finish();
}
END_TEST

/* Memory of hundreds of segments (more than one SQE can carry). */
START_TEST(test_rw_many_segments)
{
	unsigned kind = (unsigned)_i / 2;      /* page list, 512-byte iovecs, odd iovecs */
	bool async = _i % 2;
	const uint64_t count = 2 * MiB / SECTOR + 24;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct fx_mem *m, *r;
	uint8_t *data;
	char what[96];

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(4 * MiB, 0), 40, count);
	where[1] = fx_region(fx_add_file(4 * MiB, 0), 1000, count);
	data = fx_random_buf(len);
	switch (kind) {
	case 0:
		m = fx_mem_pl(len, 2560);       /* 514 separate pages */
		r = fx_mem_pl(len, 512);
		break;
	case 1:
		m = fx_mem_bvec(len, 700, false, SECTOR);
		r = fx_mem_bvec(len, 300, false, SECTOR);
		break;
	default:
		m = fx_mem_bvec(len, 999, true, 1);
		r = fx_mem_bvec(len, 257, true, 1);
		break;
	}
	snprintf(what, sizeof(what), "%s of %u segments, %s",
		 kind == 0 ? "page list" : "bvec",
		 kind == 0 ? m->npages : m->iovcnt, async ? "async" : "sync");
	fx_mem_fill(m, data);

	struct fx_io io = { .api = async ? FX_API_SEED : FX_API_DMIO, .async = async, .mem = m };

	fx_write_ok(&io, 2, where, data, what);
	fx_verify_all();
	fx_read_check(&io, r, &where[1], data, what);
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase callbacks: exactly once, error bits, sync return values */

START_TEST(test_cb_async_exactly_once)
{
	enum { NREQ = 100, SLOT = 64 };         /* slot: 64 sectors */
	unsigned f0, f1;
	struct fx_cb *cbs[NREQ];

	fx_seed(__func__, _i);
	f0 = fx_add_file(NREQ * SLOT * SECTOR, 0);
	f1 = fx_add_file(NREQ * SLOT * SECTOR, 0);
	ck_assert_msg(!dmio_in_callback(), "dmio_in_callback() true on the test thread");
	for (unsigned i = 0; i < NREQ; i++) {
		uint64_t count = fm_rng_between(&fx.rng, 1, SLOT);
		unsigned n = (unsigned)fm_rng_between(&fx.rng, 1, 2);
		struct dmio_region where[2] = {
			fx_region(f0, (uint64_t)i * SLOT, count),
			fx_region(f1, (uint64_t)i * SLOT, count),
		};
		uint8_t *data = fx_random_buf(count * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), count * SECTOR);
		struct fx_io io = {
			.api = i % 2 ? FX_API_DMIO : FX_API_SEED,
			.op = DMIO_OP_WRITE,
			.mem = m,
		};
		int rc;

		fx_mem_fill(m, data);
		rc = fx_submit_async(&io, n, where, &cbs[i]);
		ck_assert_msg(rc == 0, "async write #%u: %d", i, rc);
		for (unsigned k = 0; k < n; k++)
			fx_model_write(&where[k], data);
	}
	fx_finish();    /* every callback exactly once */
	for (unsigned i = 0; i < NREQ; i++) {
		ck_assert_msg(atomic_load(&cbs[i]->bits) == 0, "request %u: error bits %#lx", i,
			      atomic_load(&cbs[i]->bits));
		ck_assert_msg(atomic_load(&cbs[i]->in_callback),
			      "request %u: dmio_in_callback() false in its callback", i);
	}
	fx_verify_all();
}
END_TEST

/* Sync calls return 0 / -EIO and store the bitset; async report it. */
START_TEST(test_cb_error_bits_sync_and_async)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	unsigned f[3];
	struct dmio_region where[3];
	uint64_t count = 24;
	uint8_t *data;
	unsigned long bits;
	int rc;

	fx_seed(__func__, _i);
	f[0] = fx_add_file(256 * 1024, 0);
	f[1] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	f[2] = fx_add_file(256 * 1024, 0);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(f[i], 40 + 8 * i, count);
	data = fx_random_buf(count * SECTOR);
	struct fx_mem *m = fx_mem_random(type, count * SECTOR);

	fx_mem_fill(m, data);
	for (unsigned v = 0; v < 4; v++) {
		struct fx_io io = fx_io_for(v, m);

		/* All three: region 1 is read-only. */
		bits = 0;
		rc = fx_do(&io, 3, where, &bits);
		ck_assert_msg(rc == -EIO, "%s write with a read-only leg: rc %d, want -EIO",
			      io.async ? "async" : "sync", rc);
		ck_assert_msg(bits == 0x2, "%s write with a read-only leg: bits %#lx, want 0x2",
			      io.async ? "async" : "sync", bits);
		/* The good ones alone. */
		bits = 0;
		rc = fx_do(&io, 1, &where[2], &bits);
		ck_assert_msg(rc == 0 && bits == 0, "good write: rc %d bits %#lx", rc, bits);
	}
	fx_model_write(&where[0], data);
	fx_model_write(&where[2], data);

	/* error_bits may be NULL. */
	rc = dmio_sync_vm(1, &where[1], DMIO_OP_WRITE, fx_random_buf(count * SECTOR), NULL);
	ck_assert_int_eq(rc, -EIO);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_WRITE, .mem = fx_mem_dmio(m) }, 3, where,
		  NULL);
	ck_assert_int_eq(rc, -EIO);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_WRITE, .mem = fx_mem_dmio(m) }, 1, where,
		  NULL);
	ck_assert_int_eq(rc, 0);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase errors: one failing region among good ones, malformed requests */

/* A write to N regions where region @bad is on a DMIO_DEV_RDONLY file. */
START_TEST(test_err_readonly_leg)
{
	static const struct { unsigned n, bad; } cfg[] = {
		{ 2, 0 }, { 5, 3 }, { 64, 63 }, { 64, 31 }, { 64, 32 },
	};
	unsigned n = cfg[_i / 2].n, bad = cfg[_i / 2].bad;
	bool async = _i % 2;
	struct dmio_region where[64];
	uint64_t count;
	uint8_t *data;
	unsigned long bits = 0;
	struct dmio_stats st0, st1;
	int rc;

	fx_seed(__func__, _i);
	count = fm_rng_between(&fx.rng, 1, 64);
	for (unsigned i = 0; i < n; i++) {
		unsigned f = fx_add_file(64 * 1024, i == bad ? DMIO_DEV_RDONLY : 0);

		where[i] = fx_region(f, fm_rng_between(&fx.rng, 0, 128 - count), count);
	}
	data = fx_random_buf(count * SECTOR);
	struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(_i % 3), count * SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE, .mem = m };

	fx_mem_fill(m, data);
	dmio_engine_init(NULL);         /* -EBUSY is fine: stats need a running engine */
	st0 = fx_stats();
	rc = fx_do(&io, n, where, &bits);
	ck_assert_msg(rc == -EIO, "%u regions, region %u read-only: rc %d, want -EIO", n, bad, rc);
	ck_assert_msg(bits == 1UL << bad,
		      "%u regions, region %u read-only: error bits %#lx, want %#lx", n, bad, bits,
		      1UL << bad);
	if (!async) {
		st1 = fx_stats();
		ck_assert_msg(st1.region_errors - st0.region_errors == 1,
			      "stats.region_errors grew by %" PRIu64 ", want 1",
			      st1.region_errors - st0.region_errors);
	}
	for (unsigned i = 0; i < n; i++)
		if (i != bad)
			fx_model_write(&where[i], data);
	fx_finish();
	fx_verify_all();        /* the read-only file is unchanged, the others hold data */
}
END_TEST

/* I/O past the end of one device: its bit only; nothing written past the end. */
START_TEST(test_err_past_end)
{
	static const enum dmio_op ops[] = { DMIO_OP_WRITE, DMIO_OP_READ, DMIO_OP_DISCARD,
					    DMIO_OP_WRITE_ZEROES };
	static const char *const kinds[] = { "crossing the end", "at the end", "far beyond",
					     "sector + count wraps" };
	enum dmio_op op = ops[_i % 4];
	unsigned kind = (_i / 4) % 4;
	bool async = _i / 16;
	const uint64_t fsect = 128;     /* 64 KiB files */
	uint64_t count = 16, bad_sector;
	struct dmio_region where[3];
	unsigned f[3];
	unsigned long bits = 0;
	uint8_t *data, *before;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		f[i] = fx_add_file(fsect * SECTOR, 0);
	switch (kind) {
	case 0: bad_sector = fsect - 8; break;
	case 1: bad_sector = fsect; break;
	case 2: bad_sector = 1ull << 40; break;
	default: bad_sector = UINT64_MAX - 3; break;
	}
	where[0] = fx_region(f[0], 10, count);
	where[1] = fx_region(f[1], bad_sector, count);
	where[2] = fx_region(f[2], 100, count);
	data = fx_random_buf(count * SECTOR);
	before = fx_buf(fsect * SECTOR);
	memcpy(before, fx.files[f[1]].model, fsect * SECTOR);

	struct fx_mem *m = fx_mem_vm(count * SECTOR, 0);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = op };

	fx_mem_fill(m, data);
	if (op == DMIO_OP_READ || op == DMIO_OP_WRITE)
		io.mem = m;
	if (op == DMIO_OP_READ) {
		rc = fx_do(&io, 1, &where[1], &bits);
		ck_assert_msg(rc == -EIO && bits == 0x1, "read %s: rc %d bits %#lx, want -EIO 0x1",
			      kinds[kind], rc, bits);
	} else {
		rc = fx_do(&io, 3, where, &bits);
		ck_assert_msg(rc == -EIO && bits == 0x2,
			      "%s with region 1 %s: rc %d bits %#lx, want -EIO 0x2", op_name(op),
			      kinds[kind], rc, bits);
		if (op == DMIO_OP_WRITE) {
			fx_model_write(&where[0], data);
			fx_model_write(&where[2], data);
		} else {
			fx_model_zero(&where[0]);
			fx_model_zero(&where[2]);
		}
	}
	fx_finish();
	fx_verify(f[0]);
	fx_verify(f[2]);
	/* The failing file keeps its size; before its end nothing changed except,
	 * for a region crossing the end, possibly its in-range part. */
	uint8_t *now = fx_read_back(f[1]);
	size_t keep = kind == 0 ? bad_sector * SECTOR : fsect * SECTOR;

	fm_assert_bytes_eq(now, before, keep, "%s %s: the failing file", op_name(op), kinds[kind]);
}
END_TEST

/* The file shrank after open: a read crossing (or beyond) the new end of
 * file is a short read, hence a region error, not garbage and not a hang. */
START_TEST(test_err_short_read_at_eof)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	struct dmio_region cross, beyond, inside;
	unsigned long bits = 0;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	ck_assert_int_eq(truncate(fx.files[f].path, 40 * 1024), 0);
	fx.files[f].size = 40 * 1024;           /* the model's prefix still holds */
	cross = fx_region(f, 64, 32);           /* 32 KiB .. 48 KiB, EOF at 40 KiB */
	beyond = fx_region(f, 96, 8);
	inside = fx_region(f, 8, 8);

	struct fx_io io = fx_io_for((unsigned)_i, NULL);

	io.async = async;
	io.op = DMIO_OP_READ;
	io.mem = fx_mem_random(type, 32 * SECTOR);
	rc = fx_do(&io, 1, &cross, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read across the end of file: rc %d bits %#lx", rc,
		      bits);
	io.mem = fx_mem_random(type, 8 * SECTOR);
	bits = 0;
	rc = fx_do(&io, 1, &beyond, &bits);
	ck_assert_msg(rc == -EIO && bits == 1, "read past the end of file: rc %d bits %#lx", rc,
		      bits);
	fx_read_check(&io, fx_mem_random(type, 8 * SECTOR), &inside, fx_model_at(&inside),
		      "read inside the shrunk file");
	fx_finish();
	fx_verify(f);
}
END_TEST

/* Malformed requests: -EINVAL (or -errno), never a callback. */
START_TEST(test_err_malformed)
{
	bool async = _i % 2;
	struct dmio_region where[DMIO_MAX_REGIONS + 1];
	unsigned f;
	uint8_t *buf;
	unsigned long bits;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	for (unsigned i = 0; i <= DMIO_MAX_REGIONS; i++)
		where[i] = fx_region(f, i, 1);  /* overlapping is fine for a bad request */
	buf = fx_random_buf(PAGE);
	struct fx_mem *m = fx_mem_vm(SECTOR, 0);
	struct fx_mem *pl = fx_mem_pl(SECTOR, 512);
	struct fx_mem *bv = fx_mem_bvec(2 * SECTOR, 2, false, SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .mem = m };
	struct dmio_stats st0;

	dmio_engine_init(NULL);
	st0 = fx_stats();

	/* A read of two regions, through every call. */
	io.op = DMIO_OP_READ;
	bits = 0;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio() read of 2 regions: %d, want -EINVAL", rc);
	io.api = FX_API_SEED;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_*_vm read of 2 regions: %d, want -EINVAL", rc);
	io.mem = pl;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_sync/async read of 2 regions: %d, want -EINVAL", rc);
	io.mem = bv;
	rc = fx_do(&io, 2, where, &bits);
	ck_assert_msg(rc == -EINVAL, "dmio_*_bvec read of 2 regions: %d, want -EINVAL", rc);

	/* No region, and one more than the maximum. */
	for (unsigned a = 0; a < 2; a++) {
		io.api = a ? FX_API_DMIO : FX_API_SEED;
		io.mem = m;
		io.op = DMIO_OP_WRITE;
		rc = fx_do(&io, 0, where, &bits);
		ck_assert_msg(rc == -EINVAL, "write to 0 regions: %d, want -EINVAL", rc);
		rc = fx_do(&io, DMIO_MAX_REGIONS + 1, where, &bits);
		ck_assert_msg(rc == -EINVAL, "write to 65 regions: %d, want -EINVAL", rc);
		io.op = DMIO_OP_READ;
		rc = fx_do(&io, 0, where, &bits);
		ck_assert_msg(rc == -EINVAL, "read of 0 regions: %d, want -EINVAL", rc);
	}
	io.api = FX_API_DMIO;
	io.mem = NULL;
	io.op = DMIO_OP_FLUSH;
	rc = fx_do(&io, 0, where, &bits);
	ck_assert_msg(rc == -EINVAL, "flush of 0 regions: %d, want -EINVAL", rc);
	rc = fx_do(&io, DMIO_MAX_REGIONS + 1, where, &bits);
	ck_assert_msg(rc == -EINVAL, "flush of 65 regions: %d, want -EINVAL", rc);

	/* Unknown op, unknown memory type. */
	io.op = (enum dmio_op)77;
	io.mem = m;
	rc = fx_do(&io, 1, where, &bits);
	ck_assert_msg(rc < 0, "unknown op accepted (%d)", rc);
	{
		struct dmio_request req = {
			.op = DMIO_OP_WRITE,
			.mem = { .type = (enum dmio_mem_type)9, .ptr.vma = buf },
		};
		struct fx_cb *cb = fx_cb_new();

		if (async) {
			req.notify_fn = fx_cb_fn;
			req.notify_context = cb;
		}
		rc = dmio(&req, 1, where, async ? NULL : &bits);
		ck_assert_msg(rc < 0, "unknown memory type accepted (%d)", rc);
	}
	/* The seed calls take only READ and WRITE. */
	rc = dmio_sync_vm(1, where, DMIO_OP_FLUSH + 40, buf, &bits);
	ck_assert_msg(rc < 0, "dmio_sync_vm with rw=%d accepted (%d)", DMIO_OP_FLUSH + 40, rc);

	/* Nothing was accepted: no request counted, the engine still works. */
	ck_assert_msg(fx_stats().requests == st0.requests,
		      "stats.requests counted rejected requests (%" PRIu64 " -> %" PRIu64 ")",
		      st0.requests, fx_stats().requests);
	fx_finish();            /* and no callback ever ran */
	rc = dmio_sync_vm(1, where, DMIO_OP_READ, m->vm, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "read after rejected requests: %d %#lx", rc, bits);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase split: max_io_bytes = 16 KiB, multi-MiB requests */

static uint64_t pieces(uint64_t bytes)
{
	return (bytes + SPLIT_MAX_IO - 1) / SPLIT_MAX_IO;
}

START_TEST(test_split_large)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 3 * MiB / SECTOR + 7;   /* 3 MiB + 3.5 KiB */
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0, st1;
	struct fx_mem *m;
	uint8_t *data;
	unsigned f0, f1;

	fx_seed(__func__, _i);
	ck_assert_uint_eq(dmio_max_io_bytes(), SPLIT_MAX_IO);
	f0 = fx_add_file(8 * MiB, 0);
	f1 = fx_add_file(8 * MiB, 0);
	where[0] = fx_region(f0, 3, count);
	where[1] = fx_region(f1, 4096 + 5, count);
	data = fx_random_buf(len);
	switch (type) {
	case DMIO_MEM_PAGE_LIST: m = fx_mem_pl(len, 1024); break;
	case DMIO_MEM_BVEC: m = fx_mem_bvec(len, 24, false, SECTOR); break; /* some > 16 KiB */
	default: m = fx_mem_vm(len, 0); break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = { .api = async ? FX_API_DMIO : FX_API_SEED, .async = async, .mem = m };

	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "split write");
	st1 = fx_stats();
	ck_assert_msg(st1.sqes - st0.sqes >= 2 * pieces(len),
		      "write of 2 x %zu bytes with max_io_bytes %u: %" PRIu64
		      " SQEs, want >= %" PRIu64, len, SPLIT_MAX_IO, st1.sqes - st0.sqes,
		      2 * pieces(len));
	ck_assert_uint_eq(st1.requests - st0.requests, 1);
	fx_verify_all();

	for (unsigned i = 0; i < 2; i++) {
		struct fx_mem *r;

		switch (type) {
		case DMIO_MEM_PAGE_LIST: r = fx_mem_pl(len, 3584); break;
		case DMIO_MEM_BVEC: r = fx_mem_bvec(len, 7, false, SECTOR); break;
		default: r = fx_mem_vm(len, 0); break;
		}
		st0 = fx_stats();
		fx_read_check(&io, r, &where[i], data, "split read");
		st1 = fx_stats();
		ck_assert_msg(st1.sqes - st0.sqes >= pieces(len),
			      "read of %zu bytes: %" PRIu64 " SQEs, want >= %" PRIu64, len,
			      st1.sqes - st0.sqes, pieces(len));
	}
	fx_finish();
}
END_TEST

/* A request's pieces go to io_uring together: one submitting syscall. */
START_TEST(test_split_batched_submit)
{
	const uint64_t count = 1 * MiB / SECTOR;
	struct dmio_stats st0, st1;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = 1;
	int rc;

	fx_seed(__func__, _i);
	r = fx_region(fx_add_file(2 * MiB, 0), 0, count);
	data = fx_random_buf(count * SECTOR);
	st0 = fx_stats();
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, &bits);
	st1 = fx_stats();
	ck_assert_msg(rc == 0 && bits == 0, "1 MiB write: %d %#lx", rc, bits);
	fx_model_write(&r, data);
	ck_assert_uint_ge(st1.sqes - st0.sqes, count * SECTOR / SPLIT_MAX_IO);
	ck_assert_msg(st1.submits - st0.submits >= 1 &&
		      st1.submits - st0.submits <= 1 + (st1.resubmits - st0.resubmits),
		      "a 64-piece request took %" PRIu64 " submitting syscalls (%" PRIu64
		      " resubmits); the header promises one", st1.submits - st0.submits,
		      st1.resubmits - st0.resubmits);
	ck_assert_uint_le(st1.submits, st1.sqes);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase unaligned (regular files, O_DIRECT where the fs takes it) */

/* Whether the fixture's files are O_DIRECT (so unaligned memory must bounce). */
static bool fx_files_direct(unsigned idx)
{
	bool can = fm_test_supports_direct(fx.files[idx].path);

	if (can)
		ck_assert_msg(dmio_dev_is_direct(fx_dev(idx)),
			      "%s accepts O_DIRECT but dmio opened it buffered", fx.files[idx].path);
	else
		fprintf(stderr, "test_dmio: %s: no O_DIRECT here, bounce counts not checked\n",
			tc_dir);
	return can;
}

static void fx_check_bounced(const struct dmio_stats *st0, bool want, const char *what)
{
	struct dmio_stats st1 = fx_stats();

	if (want)
		ck_assert_msg(st1.bounced > st0->bounced,
			      "%s: stats.bounced did not grow (%" PRIu64 ")", what, st1.bounced);
	else
		ck_assert_msg(st1.bounced == st0->bounced,
			      "%s: aligned I/O was bounced (stats.bounced %" PRIu64 " -> %" PRIu64 ")",
			      what, st0->bounced, st1.bounced);
}

/* Unaligned memory of each type, written to 2 files and read back. */
START_TEST(test_unaligned_memory)
{
	static const size_t offs[] = { 1, 7, 511 };
	size_t off = offs[_i % 3];
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / 3) % 3);
	bool async = _i / 9;
	const uint64_t count = 21;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0;
	struct fx_mem *m, *r;
	uint8_t *data;
	bool direct;
	char what[96];

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(256 * 1024, 0), 5, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 64, count);
	direct = fx_files_direct(0);
	data = fx_random_buf(len);
	snprintf(what, sizeof(what), "%s memory misaligned by %zu, %s", mem_names[type], off,
		 async ? "async" : "sync");
	switch (type) {
	case DMIO_MEM_PAGE_LIST:        /* an offset into the first page that breaks alignment */
		m = fx_mem_pl(len, (unsigned)off);
		r = fx_mem_pl(len, (unsigned)(PAGE - off));
		break;
	case DMIO_MEM_BVEC:             /* odd lengths at odd addresses, whole sectors in sum */
		m = fx_mem_bvec(len, 5, true, 1);
		r = fx_mem_bvec(len, 3, true, 1);
		break;
	default:
		m = fx_mem_vm(len, off);
		r = fx_mem_vm(len, (off * 3) % 512 ? (off * 3) % 512 : 1);
		break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, direct, what);
	fx_verify_all();
	st0 = fx_stats();
	fx_read_check(&io, r, &where[1], data, what);
	fx_check_bounced(&st0, direct, what);
	fx_finish();
}
END_TEST

/* Aligned memory and sectors are never copied. */
START_TEST(test_unaligned_aligned_not_bounced)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 64;
	const size_t len = count * SECTOR;
	struct dmio_region where[2];
	struct dmio_stats st0;
	uint8_t *data;

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(256 * 1024, 0), 8, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 128, count);
	fx_files_direct(0);
	data = fx_random_buf(len);

	struct fx_mem *m = fx_mem_aligned(type, len);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "aligned write");
	fx_read_check(&io, fx_mem_aligned(type, len), &where[0], data, "aligned read");
	fx_check_bounced(&st0, false, mem_names[type]);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase discard: DISCARD and WRITE_ZEROES (ext4-or-whatever and tmpfs) */

static void fx_zero_op(enum dmio_op op, bool async, unsigned n, const struct dmio_region *where,
		       const char *what)
{
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = op };
	unsigned long bits = 0;
	int rc = fx_do(&io, n, where, &bits);

	ck_assert_msg(rc == 0 && bits == 0, "%s: %s of %u regions: rc %d (%s), bits %#lx", what,
		      op_name(op), n, rc, g_strerror(-rc), bits);
	for (unsigned i = 0; i < n; i++)
		fx_model_zero(&where[i]);
}

static void fx_check_zeroes_read_back(const struct dmio_region *r, bool async)
{
	size_t len = r->count * SECTOR;
	struct fx_mem *m = fx_mem_vm(len, 0);
	struct fx_io io = { .api = FX_API_SEED, .async = async, .op = DMIO_OP_READ, .mem = m };
	uint8_t *zero = fx_buf(len);

	memset(zero, 0, len);
	fx_read_check(&io, m, r, zero, "read back after zeroing");
}

START_TEST(test_discard_zeroes)
{
	enum dmio_op op = _i % 2 ? DMIO_OP_WRITE_ZEROES : DMIO_OP_DISCARD;
	bool async = (_i / 2) % 2;
	bool shm = _i / 4;
	const char *dir = shm ? tc_shm_dir : tc_dir;
	const uint64_t fsect = 1 * MiB / SECTOR;
	unsigned f0, f1;
	char what[96];

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "%s on %s, %s", op_name(op), shm ? "tmpfs" : "the tmp dir",
		 async ? "async" : "sync");
	f0 = fx_add_file_in(dir, 1 * MiB, 0);
	f1 = fx_add_file_in(dir, 1 * MiB, 0);

	/* Over written data: write 256 KiB to both through dmio first. */
	{
		struct dmio_region w[2] = { fx_region(f0, 16, 512), fx_region(f1, 16, 512) };
		uint8_t *data = fx_random_buf(512 * SECTOR);
		struct fx_mem *m = fx_mem_random(DMIO_MEM_VM, 512 * SECTOR);
		struct fx_io io = { .api = FX_API_SEED, .async = async, .mem = m };

		fx_mem_fill(m, data);
		fx_write_ok(&io, 2, w, data, what);
	}
	/* Partial ranges on two regions at once: one not 4 KiB aligned, one aligned. */
	struct dmio_region z[2] = { fx_region(f0, 21, 100), fx_region(f1, 64, 200) };

	fx_zero_op(op, async, 2, z, what);
	fx_verify_all();
	fx_check_zeroes_read_back(&z[0], async);
	fx_check_zeroes_read_back(&z[1], async);

	/* Single sectors, and the very end of a file (its size must not change). */
	struct dmio_region e[2] = { fx_region(f0, 300, 1), fx_region(f1, fsect - 3, 3) };

	fx_zero_op(op, async, 2, e, what);
	fx_verify_all();
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase flush: FLUSH on several devices, FUA and PREFLUSH writes */

START_TEST(test_flush_three_devices)
{
	bool async = _i % 2;
	struct dmio_region where[3];
	unsigned long bits = 0;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(64 * 1024, 0), 0, 8);
	/* sector and count are ignored for a flush: even absurd ones. */
	where[1].sector = UINT64_MAX - 1;
	where[1].count = 12345;
	where[2].count = 0;

	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };

	rc = fx_do(&io, 3, where, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "flush of 3 devices: rc %d bits %#lx", rc, bits);
	/* The memory is not used: a garbage descriptor must not matter. */
	io.mem = NULL;
	{
		struct dmio_request req = {
			.op = DMIO_OP_FLUSH,
			.mem = { .type = DMIO_MEM_VM, .ptr.vma = NULL },
		};

		bits = FX_BITS_POISON;
		rc = dmio(&req, 3, where, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "flush with a NULL vm buffer: %d %#lx", rc, bits);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* A flush of a device opened read-only: fdatasync works on an O_RDONLY fd
 * on Linux, so 0 is expected; whatever happens must be consistent and must
 * not fail the other device. */
START_TEST(test_flush_readonly_device)
{
	struct dmio_region where[2];
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	where[0] = fx_region(fx_add_file(64 * 1024, 0), 0, 1);
	where[1] = fx_region(fx_add_file(64 * 1024, DMIO_DEV_RDONLY), 0, 1);
	rc = dmio(&(struct dmio_request){ .op = DMIO_OP_FLUSH }, 2, where, &bits);
	fprintf(stderr, "test_dmio: flush of a normal and a DMIO_DEV_RDONLY device: rc %d, "
		"error bits %#lx\n", rc, bits);
	ck_assert_msg((bits & ~0x2UL) == 0, "flush failed on the writable device: bits %#lx", bits);
	ck_assert_msg((rc == 0) == (bits == 0) && (rc == 0 || rc == -EIO),
		      "rc %d inconsistent with bits %#lx", rc, bits);
	ck_assert_msg(rc == 0, "flush of an O_RDONLY device failed (fdatasync allows it): bits %#lx",
		      bits);
	fx_finish();
}
END_TEST

START_TEST(test_flush_fua_preflush_writes)
{
	static const unsigned flag_sets[] = { DMIO_REQ_FUA, DMIO_REQ_PREFLUSH,
					      DMIO_REQ_FUA | DMIO_REQ_PREFLUSH };
	unsigned flags = flag_sets[_i % 3];
	bool async = _i / 3;
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	const uint64_t count = 40;
	struct dmio_region where[3];
	uint8_t *data;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(256 * 1024, 0), 16 * i + 1, count);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random(type, count * SECTOR);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .flags = flags, .mem = m };

	fx_mem_fill(m, data);
	fx_write_ok(&io, 3, where, data, flags == DMIO_REQ_FUA ? "FUA write"
					 : flags == DMIO_REQ_PREFLUSH ? "PREFLUSH write"
								      : "FUA|PREFLUSH write");
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase concurrency: 8 submitting threads, chained callbacks, EDEADLK */

enum {
	CC_THREADS = 8,
	CC_FILES = 3,
	CC_SLOTS = 16,          /* per thread: one request in flight per slot */
	CC_SLOT_SECTORS = 32,
	CC_TOTAL = 10000,
};
#define CC_SLOT_BYTES (CC_SLOT_SECTORS * SECTOR)
#define CC_BUF_BYTES (CC_SLOT_BYTES + PAGE)   /* data starts up to 3.5 KiB in */
#define CC_BUF_PAGES (CC_BUF_BYTES / PAGE)
#define CC_THREAD_SECTORS (CC_SLOTS * CC_SLOT_SECTORS)

enum cc_kind { CC_READ, CC_WRITE, CC_FLUSH };

struct cc_thread;

struct cc_req {                 /* one per request, written before it is submitted */
	atomic_uint calls;
	atomic_ulong bits;
	struct cc_thread *t;
	int slot;               /* -1: a flush */
	enum cc_kind kind;
	unsigned nreg;
	unsigned files[CC_FILES];       /* fixture file indexes of the regions */
	uint64_t sector, count;
	const uint8_t *data;
};

struct cc_slot {
	uint8_t *buf;           /* CC_BUF_BYTES, page aligned */
	struct dmio_page_list pl[CC_BUF_PAGES];
};

struct cc_thread {
	unsigned idx;
	GThread *thread;
	struct fm_rng rng;
	struct fm_test_sync sync;       /* guards free_slots, nfree */
	unsigned free_slots[CC_SLOTS];
	unsigned nfree;
	struct cc_slot slots[CC_SLOTS];
	unsigned first_req, nreq;
	int submit_rc;          /* first failed submission, 0 if none */
	bool slot_timeout;
};

static struct {
	struct cc_thread threads[CC_THREADS];
	struct cc_req *reqs;
	unsigned total;
	struct dmio_client *client;
	unsigned files[CC_FILES];
	atomic_uint accepted;
	atomic_uint bad_bits, read_mismatch, double_calls;
	atomic_int first_mismatch;      /* request id + 1 */
	struct fm_test_sync sync;       /* guards done */
	unsigned done;
} cc;

static void cc_put_slot(struct cc_thread *t, int slot)
{
	fm_test_sync_lock(&t->sync);
	t->free_slots[t->nfree++] = (unsigned)slot;
	fm_test_sync_signal(&t->sync);
	fm_test_sync_unlock(&t->sync);
}

static int cc_get_slot(struct cc_thread *t)
{
	gint64 deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_TIME_SPAN_SECOND;
	int slot = -1;

	fm_test_sync_lock(&t->sync);
	while (t->nfree == 0)
		if (!fm_test_sync_wait_until(&t->sync, deadline))
			break;
	if (t->nfree)
		slot = (int)t->free_slots[--t->nfree];
	fm_test_sync_unlock(&t->sync);
	return slot;
}

/*
 * Completion: runs on an engine thread; records, updates the model.  The
 * submitting thread prepared @rq (and wrote the data) under its lock, and
 * this takes the same lock, so the hand-over is ordered for ThreadSanitizer
 * too, whichever ring thread completes the request.
 */
static void cc_cb(unsigned long bits, void *context)
{
	struct cc_req *rq = context;
	struct cc_thread *t = &cc.threads[(unsigned)(rq - cc.reqs) / (cc.total / CC_THREADS)];

	atomic_store(&rq->bits, bits);
	if (atomic_fetch_add(&rq->calls, 1) != 0) {
		atomic_fetch_add(&cc.double_calls, 1);
	} else {
		uint8_t *model0;
		size_t off, len;

		fm_test_sync_lock(&t->sync);
		model0 = fx.files[rq->files[0]].model;
		off = rq->sector * SECTOR;
		len = rq->count * SECTOR;
		if (bits)
			atomic_fetch_add(&cc.bad_bits, 1);
		else if (rq->kind == CC_WRITE)
			for (unsigned k = 0; k < rq->nreg; k++)
				memcpy(fx.files[rq->files[k]].model + off, rq->data, len);
		else if (rq->kind == CC_READ && memcmp(rq->data, model0 + off, len) != 0) {
			int zero = 0;

			atomic_fetch_add(&cc.read_mismatch, 1);
			atomic_compare_exchange_strong(&cc.first_mismatch, &zero,
						       (int)(rq - cc.reqs) + 1);
		}
		if (rq->slot >= 0) {
			t->free_slots[t->nfree++] = (unsigned)rq->slot;
			fm_test_sync_signal(&t->sync);
		}
		fm_test_sync_unlock(&t->sync);
	}
	fm_test_sync_lock(&cc.sync);
	cc.done++;
	fm_test_sync_broadcast(&cc.sync);
	fm_test_sync_unlock(&cc.sync);
}

static gpointer cc_thread_fn(gpointer arg)
{
	struct cc_thread *t = arg;

	for (unsigned k = 0; k < t->nreq; k++) {
		struct cc_req *rq = &cc.reqs[t->first_req + k];
		uint64_t dice = fm_rng_between(&t->rng, 0, 7);
		unsigned order[CC_FILES] = { 0, 1, 2 };
		struct dmio_region where[CC_FILES];
		struct iovec iov[3];
		struct dmio_request req = { .notify_fn = cc_cb, .notify_context = rq };
		int use_seed = (int)fm_rng_between(&t->rng, 0, 2); /* 0: seed, 1: dmio(), 2: + client */
		int rc;

		for (unsigned i = CC_FILES - 1; i > 0; i--) {  /* shuffle the legs */
			unsigned j = (unsigned)fm_rng_between(&t->rng, 0, i), x = order[i];

			order[i] = order[j];
			order[j] = x;
		}
		rq->t = t;
		rq->slot = -1;
		if (dice == 0) {                                /* flush 1-3 devices */
			fm_test_sync_lock(&t->sync);
			rq->kind = CC_FLUSH;
			rq->nreg = (unsigned)fm_rng_between(&t->rng, 1, CC_FILES);
			for (unsigned i = 0; i < rq->nreg; i++) {
				rq->files[i] = cc.files[order[i]];
				where[i] = (struct dmio_region){ .dev = fx.files[rq->files[i]].dev };
			}
			fm_test_sync_unlock(&t->sync);
			req.op = DMIO_OP_FLUSH;
			req.client = use_seed == 2 ? cc.client : NULL;
			rc = dmio(&req, rq->nreg, where, NULL);
		} else {
			int slot = cc_get_slot(t);
			uint64_t first, o;
			size_t len;
			uint8_t *data;
			enum dmio_mem_type type = (enum dmio_mem_type)fm_rng_between(&t->rng, 0, 2);

			if (slot < 0) {
				t->slot_timeout = true;
				break;
			}
			fm_test_sync_lock(&t->sync);
			rq->slot = slot;
			rq->kind = dice <= 3 ? CC_READ : CC_WRITE;
			rq->nreg = rq->kind == CC_READ ? 1
						       : (unsigned)fm_rng_between(&t->rng, 1, CC_FILES);
			first = fm_rng_between(&t->rng, 0, CC_SLOT_SECTORS - 1);
			rq->count = fm_rng_between(&t->rng, 1, CC_SLOT_SECTORS - first);
			rq->sector = (uint64_t)t->idx * CC_THREAD_SECTORS +
				     (uint64_t)slot * CC_SLOT_SECTORS + first;
			len = rq->count * SECTOR;
			o = SECTOR * fm_rng_between(&t->rng, 0, 7);
			data = t->slots[slot].buf + o;
			rq->data = data;
			for (unsigned i = 0; i < rq->nreg; i++) {
				rq->files[i] = cc.files[order[i]];
				where[i] = (struct dmio_region){ .dev = fx.files[rq->files[i]].dev,
								 .sector = rq->sector,
								 .count = rq->count };
			}
			if (rq->kind == CC_WRITE)
				fm_rng_fill(&t->rng, data, len);
			else
				memset(data, FX_POISON, len);
			fm_test_sync_unlock(&t->sync);
			req.op = rq->kind == CC_READ ? DMIO_OP_READ : DMIO_OP_WRITE;
			req.mem.type = type;
			switch (type) {
			case DMIO_MEM_PAGE_LIST:
				req.mem.offset = (unsigned)o;
				req.mem.ptr.pl = t->slots[slot].pl;
				break;
			case DMIO_MEM_BVEC: {
				uint64_t want = fm_rng_between(&t->rng, 1, 3);
				unsigned n = (unsigned)MIN(rq->count, want);
				uint64_t left = rq->count;
				uint8_t *p = data;

				for (unsigned i = 0; i < n; i++) {
					uint64_t c = i + 1 == n ? left
						     : fm_rng_between(&t->rng, 1, left - (n - 1 - i));

					iov[i] = (struct iovec){ .iov_base = p, .iov_len = c * SECTOR };
					p += c * SECTOR;
					left -= c;
				}
				req.mem.ptr.bvec.iov = iov;
				req.mem.ptr.bvec.iovcnt = n;
				break;
			}
			default:
				req.mem.ptr.vma = data;
				break;
			}
			if (use_seed == 0) {
				int rw = (int)req.op;

				switch (type) {
				case DMIO_MEM_PAGE_LIST:
					rc = dmio_async(rq->nreg, where, rw, req.mem.ptr.pl,
							req.mem.offset, cc_cb, rq);
					break;
				case DMIO_MEM_BVEC:
					rc = dmio_async_bvec(rq->nreg, where, rw, iov,
							     req.mem.ptr.bvec.iovcnt, cc_cb, rq);
					break;
				default:
					rc = dmio_async_vm(rq->nreg, where, rw, data, cc_cb, rq);
					break;
				}
			} else {
				req.client = use_seed == 2 ? cc.client : NULL;
				rc = dmio(&req, rq->nreg, where, NULL);
			}
		}
		/* The header lets us reuse these at once. */
		memset(where, 0xee, sizeof(where));
		memset(iov, 0xee, sizeof(iov));
		if (rc == 0) {
			atomic_fetch_add(&cc.accepted, 1);
		} else {
			if (!t->submit_rc)
				t->submit_rc = rc;
			if (rq->slot >= 0)
				cc_put_slot(t, rq->slot);
		}
	}
	return NULL;
}

START_TEST(test_conc_mixed)
{
	const uint64_t fbytes = (uint64_t)CC_THREADS * CC_THREAD_SECTORS * SECTOR;
	gint64 deadline;
	unsigned done;

	fx_seed(__func__, _i);
	if (_i > 0) {           /* 1: two rings; 2: a ring far smaller than the load */
		unsigned rings = _i == 1 ? 2 : 1, sq = _i == 1 ? 32 : 8;
		int r = dmio_engine_init(&(struct dmio_engine_opts){ .rings = rings,
								     .sq_entries = sq });

		ck_assert_msg(r == 0, "dmio_engine_init(rings %u, sq_entries %u): %d", rings, sq, r);
	}
	memset(&cc, 0, sizeof(cc));
	fm_test_sync_init(&cc.sync);
	for (unsigned f = 0; f < CC_FILES; f++)
		cc.files[f] = fx_add_file(fbytes, 0);
	cc.total = CC_TOTAL;
	cc.reqs = (struct cc_req *)fx_buf(cc.total * sizeof(*cc.reqs));
	memset(cc.reqs, 0, cc.total * sizeof(*cc.reqs));
	cc.client = dmio_client_create(8);
	ck_assert_ptr_nonnull(cc.client);
	for (unsigned i = 0; i < CC_THREADS; i++) {
		struct cc_thread *t = &cc.threads[i];

		t->idx = i;
		fm_rng_seed(&t->rng, fx.seed + i + 1);
		fm_test_sync_init(&t->sync);
		for (unsigned s = 0; s < CC_SLOTS; s++) {
			t->slots[s].buf = fx_buf(CC_BUF_BYTES);
			for (unsigned p = 0; p < CC_BUF_PAGES; p++) {
				t->slots[s].pl[p].page = t->slots[s].buf + p * PAGE;
				t->slots[s].pl[p].next = p + 1 < CC_BUF_PAGES ? &t->slots[s].pl[p + 1]
									      : NULL;
			}
			t->free_slots[t->nfree++] = s;
		}
		t->first_req = i * (cc.total / CC_THREADS);
		t->nreq = cc.total / CC_THREADS;
	}
	for (unsigned i = 0; i < CC_THREADS; i++)
		cc.threads[i].thread = g_thread_new("dmio-submit", cc_thread_fn, &cc.threads[i]);
	for (unsigned i = 0; i < CC_THREADS; i++)
		g_thread_join(cc.threads[i].thread);

	deadline = g_get_monotonic_time() + 2 * FX_WAIT_SECONDS * G_TIME_SPAN_SECOND;
	fm_test_sync_lock(&cc.sync);
	while (cc.done < atomic_load(&cc.accepted))
		if (!fm_test_sync_wait_until(&cc.sync, deadline))
			break;
	done = cc.done;
	fm_test_sync_unlock(&cc.sync);
	fx_shutdown();
	dmio_client_destroy(cc.client);
	for (unsigned i = 0; i < CC_THREADS; i++)
		fm_test_sync_destroy(&cc.threads[i].sync);
	fm_test_sync_destroy(&cc.sync);

	for (unsigned i = 0; i < CC_THREADS; i++) {
		ck_assert_msg(!cc.threads[i].slot_timeout,
			      "thread %u: no slot came back within %d s (lost callbacks?)", i,
			      FX_WAIT_SECONDS);
		ck_assert_msg(cc.threads[i].submit_rc == 0, "thread %u: a submission failed: %d", i,
			      cc.threads[i].submit_rc);
	}
	ck_assert_uint_eq(atomic_load(&cc.accepted), cc.total);
	ck_assert_msg(done >= cc.total, "only %u of %u callbacks ran", done, cc.total);
	for (unsigned i = 0; i < cc.total; i++)
		if (atomic_load(&cc.reqs[i].calls) != 1)
			ck_abort_msg("request %u (%s): callback ran %u times", i,
				     cc.reqs[i].kind == CC_FLUSH ? "flush"
				     : cc.reqs[i].kind == CC_READ ? "read" : "write",
				     atomic_load(&cc.reqs[i].calls));
	ck_assert_uint_eq(atomic_load(&cc.double_calls), 0);
	ck_assert_msg(atomic_load(&cc.bad_bits) == 0, "%u requests reported error bits",
		      atomic_load(&cc.bad_bits));
	ck_assert_msg(atomic_load(&cc.read_mismatch) == 0,
		      "%u reads returned wrong data (first: request %d)",
		      atomic_load(&cc.read_mismatch), atomic_load(&cc.first_mismatch) - 1);
	fx_verify_all();
}
END_TEST

/* A callback that submits the next request: a chain of 100 writes. */
#define CHAIN_LEN 100

struct chain_link {
	unsigned idx;
	struct fx_cb *cb;
	struct dmio_region where[2];
	struct fx_mem *m;
	enum fx_api api;
	atomic_int next_rc;
};

static struct chain_link *chain;
static atomic_bool chain_ended;

static void chain_cb(unsigned long bits, void *context)
{
	struct chain_link *l = context;

	atomic_store(&l->cb->bits, bits);
	atomic_store(&l->cb->in_callback, dmio_in_callback());
	if (atomic_fetch_add(&l->cb->calls, 1) == 0) {
		if (l->idx + 1 < CHAIN_LEN) {
			struct chain_link *nx = &chain[l->idx + 1];
			int rc = fx_raw_submit(nx->api, DMIO_OP_WRITE, 0, nx->m, NULL, 2, nx->where,
					       chain_cb, nx, NULL);

			atomic_store(&l->next_rc, rc);
			if (rc == 0)
				atomic_store(&nx->cb->accepted, true);
			else
				atomic_store(&chain_ended, true);
		} else {
			atomic_store(&chain_ended, true);
		}
	}
	fx_cb_signal();
}

START_TEST(test_conc_chained_callbacks)
{
	unsigned f0, f1;
	gint64 deadline;
	int rc;

	fx_seed(__func__, _i);
	f0 = fx_add_file(CHAIN_LEN * 8 * SECTOR, 0);
	f1 = fx_add_file(CHAIN_LEN * 8 * SECTOR + 64 * 1024, 0);
	chain = (struct chain_link *)fx_buf(CHAIN_LEN * sizeof(*chain));
	memset(chain, 0, CHAIN_LEN * sizeof(*chain));
	atomic_store(&chain_ended, false);
	for (unsigned i = 0; i < CHAIN_LEN; i++) {
		struct chain_link *l = &chain[i];
		uint64_t count = fm_rng_between(&fx.rng, 1, 8);
		uint8_t *data = fx_random_buf(count * SECTOR);

		l->idx = i;
		l->cb = fx_cb_new();
		l->api = i % 2 ? FX_API_DMIO : FX_API_SEED;
		l->m = fx_mem_random((enum dmio_mem_type)(i % 3), count * SECTOR);
		fx_mem_fill(l->m, data);
		l->where[0] = fx_region(f0, i * 8, count);
		l->where[1] = fx_region(f1, 128 + i * 8, count);
		fx_model_write(&l->where[0], data);
		fx_model_write(&l->where[1], data);
	}
	rc = fx_raw_submit(chain[0].api, DMIO_OP_WRITE, 0, chain[0].m, NULL, 2, chain[0].where,
			   chain_cb, &chain[0], NULL);
	ck_assert_int_eq(rc, 0);
	atomic_store(&chain[0].cb->accepted, true);

	deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_TIME_SPAN_SECOND;
	fm_test_sync_lock(&fx.sync);
	while (!atomic_load(&chain_ended))
		if (!fm_test_sync_wait_until(&fx.sync, deadline))
			break;
	fm_test_sync_unlock(&fx.sync);
	ck_assert_msg(atomic_load(&chain_ended), "the chain of callbacks stalled");
	for (unsigned i = 0; i + 1 < CHAIN_LEN; i++)
		ck_assert_msg(atomic_load(&chain[i].next_rc) == 0,
			      "link %u: submitting from its callback failed: %d", i,
			      atomic_load(&chain[i].next_rc));
	fx_finish();
	for (unsigned i = 0; i < CHAIN_LEN; i++) {
		ck_assert_msg(atomic_load(&chain[i].cb->bits) == 0, "link %u: bits %#lx", i,
			      atomic_load(&chain[i].cb->bits));
		ck_assert(atomic_load(&chain[i].cb->in_callback));
	}
	fx_verify_all();
	chain = NULL;
}
END_TEST

/* A callback that submits 16 requests at once (one batch). */
#define FAN 16

static struct {
	struct fx_cb *outer, *inner[FAN];
	struct fx_mem *m[FAN];
	struct dmio_region where[FAN];
	atomic_int rc[FAN];
} fan;

static void fan_cb(unsigned long bits, void *context)
{
	if (atomic_load(&fan.outer->calls) == 0)
		for (unsigned j = 0; j < FAN; j++) {
			int rc = fx_raw_submit(j % 2 ? FX_API_DMIO : FX_API_SEED, DMIO_OP_WRITE, 0,
					       fan.m[j], NULL, 1, &fan.where[j], fx_cb_fn,
					       fan.inner[j], NULL);

			atomic_store(&fan.rc[j], rc);
			if (rc == 0)
				atomic_store(&fan.inner[j]->accepted, true);
		}
	fx_cb_fn(bits, context);
}

START_TEST(test_conc_callback_fanout)
{
	unsigned f, accepted = 1;
	struct fx_mem *om;
	struct dmio_region orr;
	int rc;

	fx_seed(__func__, _i);
	memset(&fan, 0, sizeof(fan));
	f = fx_add_file(1 * MiB, 0);
	orr = fx_region(f, 1024, 8);
	om = fx_mem_vm(8 * SECTOR, 0);
	fx_mem_fill(om, fx.files[f].model + 1024 * SECTOR);
	fan.outer = fx_cb_new();
	for (unsigned j = 0; j < FAN; j++) {
		uint64_t count = fm_rng_between(&fx.rng, 1, 32);
		uint8_t *data = fx_random_buf(count * SECTOR);

		fan.inner[j] = fx_cb_new();
		fan.m[j] = fx_mem_random((enum dmio_mem_type)(j % 3), count * SECTOR);
		fx_mem_fill(fan.m[j], data);
		fan.where[j] = fx_region(f, j * 32, count);
		fx_model_write(&fan.where[j], data);
	}
	rc = fx_raw_submit(FX_API_DMIO, DMIO_OP_READ, 0, om, NULL, 1, &orr, fan_cb, fan.outer, NULL);
	ck_assert_int_eq(rc, 0);
	atomic_store(&fan.outer->accepted, true);
	fx_wait_cb(fan.outer);
	for (unsigned j = 0; j < FAN; j++) {
		ck_assert_msg(atomic_load(&fan.rc[j]) == 0, "submission %u from a callback: %d", j,
			      atomic_load(&fan.rc[j]));
		accepted++;
	}
	fx_wait_done(accepted);
	fx_finish();
	for (unsigned j = 0; j < FAN; j++)
		ck_assert_msg(atomic_load(&fan.inner[j]->bits) == 0, "request %u: bits %#lx", j,
			      atomic_load(&fan.inner[j]->bits));
	fx_verify_all();
}
END_TEST

/* A synchronous call from a callback returns -EDEADLK; async is fine. */
static struct {
	struct dmio_region r;
	struct fx_mem *pl, *bv, *vm, *vm2;
	struct fx_cb *cb, *inner;
	int rc_sync, rc_bvec, rc_vm, rc_dmio, rc_flush, rc_async;
	bool in_cb;
} dl;

static void dl_cb(unsigned long bits, void *context)
{
	unsigned long b;

	(void)context;
	dl.rc_sync = dmio_sync(1, &dl.r, DMIO_OP_READ, dl.pl->nodes, dl.pl->offset, &b);
	dl.rc_bvec = dmio_sync_bvec(1, &dl.r, DMIO_OP_READ, dl.bv->iov, dl.bv->iovcnt, &b);
	dl.rc_vm = dmio_sync_vm(1, &dl.r, DMIO_OP_READ, dl.vm->vm, &b);
	/* (same data as on disk, in case it were wrongly written) */
	dl.rc_dmio = dmio(&(struct dmio_request){ .op = DMIO_OP_WRITE, .mem = fx_mem_dmio(dl.vm2) },
			  1, &dl.r, &b);
	dl.rc_flush = dmio(&(struct dmio_request){ .op = DMIO_OP_FLUSH }, 1, &dl.r, NULL);
	dl.in_cb = dmio_in_callback();
	dl.rc_async = fx_raw_submit(FX_API_DMIO, DMIO_OP_READ, 0, dl.vm, NULL, 1, &dl.r, fx_cb_fn,
				    dl.inner, NULL);
	if (dl.rc_async == 0)
		atomic_store(&dl.inner->accepted, true);
	fx_cb_fn(bits, dl.cb);
}

START_TEST(test_conc_sync_in_callback_edeadlk)
{
	const uint64_t count = 16;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	memset(&dl, 0, sizeof(dl));
	f = fx_add_file(256 * 1024, 0);
	dl.r = fx_region(f, 32, count);
	dl.pl = fx_mem_pl(count * SECTOR, 1024);
	dl.bv = fx_mem_bvec(count * SECTOR, 3, false, SECTOR);
	dl.vm = fx_mem_vm(count * SECTOR, 0);
	dl.vm2 = fx_mem_vm(count * SECTOR, 0);
	fx_mem_fill(dl.vm2, fx_model_at(&dl.r));
	dl.cb = fx_cb_new();
	dl.inner = fx_cb_new();
	ck_assert(!dmio_in_callback());
	rc = fx_raw_submit(FX_API_SEED, DMIO_OP_WRITE, 0, dl.vm2, NULL, 1, &dl.r, dl_cb, NULL, NULL);
	ck_assert_int_eq(rc, 0);
	atomic_store(&dl.cb->accepted, true);
	fx_wait_cb(dl.cb);
	ck_assert_msg(dl.in_cb, "dmio_in_callback() false in a callback");
	ck_assert_msg(dl.rc_sync == -EDEADLK, "dmio_sync in a callback: %d", dl.rc_sync);
	ck_assert_msg(dl.rc_bvec == -EDEADLK, "dmio_sync_bvec in a callback: %d", dl.rc_bvec);
	ck_assert_msg(dl.rc_vm == -EDEADLK, "dmio_sync_vm in a callback: %d", dl.rc_vm);
	ck_assert_msg(dl.rc_dmio == -EDEADLK, "sync dmio() write in a callback: %d", dl.rc_dmio);
	ck_assert_msg(dl.rc_flush == -EDEADLK, "sync dmio() flush in a callback: %d", dl.rc_flush);
	ck_assert_msg(dl.rc_async == 0, "async read from a callback: %d", dl.rc_async);
	fx_wait_cb(dl.inner);
	ck_assert_uint_eq(atomic_load(&dl.inner->bits), 0);
	fm_assert_bytes_eq(fx_mem_gather(dl.vm), fx_model_at(&dl.r), count * SECTOR,
			   "async read issued from a callback");
	/* The engine is not wedged: a sync call from the test thread works. */
	rc = dmio_sync(1, &dl.r, DMIO_OP_READ, dl.pl->nodes, dl.pl->offset, NULL);
	ck_assert_int_eq(rc, 0);
	fm_assert_bytes_eq(fx_mem_gather(dl.pl), fx_model_at(&dl.r), count * SECTOR,
			   "sync read after the callback");
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase loop: a ring owned by the test thread (run to completion) */

struct loop_cb {
	bool done;
	unsigned long bits;
	pthread_t thread;
	bool in_cb;
};

static void loop_notify(unsigned long error_bits, void *context)
{
	struct loop_cb *cb = context;

	cb->bits = error_bits;
	cb->thread = pthread_self();
	cb->in_cb = dmio_in_callback();
	cb->done = true;
}

struct loop_nop {
	struct dmio_loop_op op;
	int res;
	unsigned calls;
};

static void loop_nop_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct loop_nop *n = (struct loop_nop *)op;

	(void)cqe_flags;
	n->res = res;
	n->calls++;
}

static void loop_run_until(struct dmio_loop *l, const bool *flag)
{
	for (unsigned i = 0; !*flag; i++) {
		ck_assert_msg(i < 100000, "the loop never completed the request");
		ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
	}
}

static void *loop_waker(void *arg)
{
	usleep(20000);
	dmio_loop_wake(arg);
	return NULL;
}

/* Writes to two devices and a read, submitted on a loop's thread, complete
 * on that thread from its own ring; its own SQEs come back to their op;
 * sync calls are refused there; a wake-up ends a wait. */
START_TEST(test_loop_run_to_completion)
{
	const size_t len = 256 * 1024;
	struct dmio_dev *dev[2];
	struct dmio_loop *l, *l2;
	struct loop_cb wcb = { 0 }, rcb = { 0 };
	struct loop_nop nop = { { loop_nop_done }, -1, 0 };
	struct io_uring_sqe *sqe;
	struct dmio_region where[2];
	pthread_t waker;
	uint8_t *wbuf, *rbuf;
	int r;

	for (unsigned i = 0; i < 2; i++) {
		g_autofree char *path = g_strdup_printf("%s/loop%u.img", tc_dir, i);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(ftruncate(fd, 4 << 20), 0);
		close(fd);
		ck_assert_int_eq(dmio_dev_open(path, 0, &dev[i]), 0);
		where[i] = (struct dmio_region){ dev[i], 64, len / 512 };
	}
	ck_assert_int_eq(posix_memalign((void **)&wbuf, 4096, len), 0);
	ck_assert_int_eq(posix_memalign((void **)&rbuf, 4096, len), 0);
	for (size_t i = 0; i < len; i++)
		wbuf[i] = (uint8_t)(i * 7 + 3);
	memset(rbuf, 0, len);

	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	ck_assert_int_eq(dmio_loop_create(NULL, &l2), -EBUSY);
	ck_assert(dmio_loop_idle(l));

	r = dmio_async_vm(2, where, DMIO_OP_WRITE, wbuf, loop_notify, &wcb);
	ck_assert_int_eq(r, 0);
	ck_assert(!dmio_loop_idle(l));
	/* Nothing completes behind the owner's back: only its run does it. */
	usleep(10000);
	ck_assert(!wcb.done);
	loop_run_until(l, &wcb.done);
	ck_assert_uint_eq(wcb.bits, 0);
	ck_assert(pthread_equal(wcb.thread, pthread_self()));
	ck_assert(wcb.in_cb);

	r = dmio_async_vm(1, &where[1], DMIO_OP_READ, rbuf, loop_notify, &rcb);
	ck_assert_int_eq(r, 0);
	loop_run_until(l, &rcb.done);
	ck_assert_uint_eq(rcb.bits, 0);
	ck_assert(pthread_equal(rcb.thread, pthread_self()));
	fm_assert_bytes_eq(rbuf, wbuf, len, "read back on the loop");
	ck_assert(dmio_loop_idle(l));

	/* A synchronous call would wait for itself. */
	ck_assert_int_eq(dmio_sync_vm(1, &where[0], DMIO_OP_READ, rbuf, NULL), -EDEADLK);

	/* The owner's own SQE. */
	sqe = dmio_loop_get_sqe(l);
	ck_assert_ptr_nonnull(sqe);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &nop.op);
	while (nop.calls == 0)
		ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
	ck_assert_uint_eq(nop.calls, 1);
	ck_assert_int_eq(nop.res, 0);

	/* A wait with nothing in flight ends with a wake-up. */
	ck_assert_int_eq(pthread_create(&waker, NULL, loop_waker, l), 0);
	r = dmio_loop_run_once(l, true);
	while (r == 0)
		r = dmio_loop_run_once(l, false);
	ck_assert_int_ge(r, 0);
	pthread_join(waker, NULL);

	dmio_loop_destroy(l);
	ck_assert(!dmio_in_callback());
	/* The thread is an ordinary one again. */
	memset(rbuf, 0, len);
	ck_assert_int_eq(dmio_sync_vm(1, &where[0], DMIO_OP_READ, rbuf, NULL), 0);
	fm_assert_bytes_eq(rbuf, wbuf, len, "sync read after the loop");
	for (unsigned i = 0; i < 2; i++)
		dmio_dev_close(dev[i]);
	free(wbuf);
	free(rbuf);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase client: dmio_client_create/destroy/resize, dmio_get/put */

START_TEST(test_client_create_destroy)
{
	static const unsigned mins[] = { 1, 4, 64, 256 };

	for (unsigned i = 0; i < G_N_ELEMENTS(mins); i++) {
		g_autoptr(dmio_client) c = dmio_client_create(mins[i]);

		ck_assert_msg(c != NULL, "dmio_client_create(%u) failed", mins[i]);
		ck_assert_int_eq(dmio_client_resize(c, 16), 0);
		ck_assert_int_eq(dmio_client_resize(c, -16), 0);
	}
	dmio_client_destroy(NULL);
}
END_TEST

/* Requests naming a client, many more in flight than its reserve. */
START_TEST(test_client_requests)
{
	enum { NREQ = 64 };
	bool async = _i % 2;
	struct dmio_client *c;
	unsigned f0, f1;

	fx_seed(__func__, _i);
	f0 = fx_add_file(NREQ * 16 * SECTOR, 0);
	f1 = fx_add_file(NREQ * 16 * SECTOR, 0);
	c = dmio_client_create(2);
	ck_assert_ptr_nonnull(c);
	for (unsigned i = 0; i < NREQ; i++) {
		uint64_t count = fm_rng_between(&fx.rng, 1, 16);
		struct dmio_region where[2] = { fx_region(f0, i * 16, count),
						fx_region(f1, i * 16, count) };
		uint8_t *data = fx_random_buf(count * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), count * SECTOR);
		struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE,
				    .mem = m, .client = c };
		unsigned long bits = 0;
		int rc;

		fx_mem_fill(m, data);
		if (async) {
			rc = fx_submit_async(&io, 2, where, NULL);
		} else {
			rc = fx_do(&io, 2, where, &bits);
			ck_assert_uint_eq(bits, 0);
		}
		ck_assert_msg(rc == 0, "request %u with a client: %d", i, rc);
		fx_model_write(&where[0], data);
		fx_model_write(&where[1], data);
	}
	/* Once every callback has run, no request of @c is in flight. */
	fx_wait_done(fx.accepted);
	dmio_client_destroy(c);
	/* The engine goes on with the default client. */
	{
		struct dmio_region r = fx_region(f0, 0, 16);
		struct fx_io io = { .api = FX_API_SEED, .async = async };

		fx_read_check(&io, fx_mem_vm(16 * SECTOR, 0), &r, fx_model_at(&r), "after destroy");
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_client_get_put)
{
	struct dmio_region r;
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	r = fx_region(fx_add_file(256 * 1024, 0), 8, 64);
	/* Before any I/O, as the seed asks ("before using any of the services"). */
	rc = dmio_get(16);
	ck_assert_msg(rc >= 0, "dmio_get(16) before the first request: %d", rc);
	data = fx_random_buf(64 * SECTOR);
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, NULL);
	ck_assert_int_eq(rc, 0);
	fx_model_write(&r, data);
	{
		struct fx_io io = { .api = FX_API_SEED, .async = true };

		fx_read_check(&io, fx_mem_pl(64 * SECTOR, 512), &r, data, "after dmio_get");
	}
	dmio_put(16);
	rc = dmio_get(4);
	ck_assert_int_ge(rc, 0);
	dmio_put(4);
	fx_finish();
	fx_verify_all();
	/* And again after a restart. */
	rc = dmio_get(8);
	ck_assert_msg(rc >= 0, "dmio_get(8) after dmio_engine_shutdown: %d", rc);
	ck_assert_int_eq(dmio_sync_vm(1, &r, DMIO_OP_READ, data, NULL), 0);
	dmio_put(8);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase dev: dmio_dev_open and the accessors */

START_TEST(test_dev_open_regular_file)
{
	const uint64_t size = 3 * MiB + 12 * 1024;
	char *path;
	int fd, fl;

	fx_seed(__func__, _i);
	path = g_strdup_printf("%s/regular.img", tc_dir);
	/* A size that is not a whole number of sectors: bytes exact, sectors
	 * rounded down (the partial sector cannot be addressed). */
	fm_test_create_file(path, 64 * 1024 + 1000);
	{
		g_autoptr(dmio_dev) odd = NULL;

		ck_assert_int_eq(dmio_dev_open(path, 0, &odd), 0);
		ck_assert_uint_eq(dmio_dev_size(odd), 64 * 1024 + 1000);
		ck_assert_uint_eq(dmio_dev_sectors(odd), 129);
	}
	fm_test_create_file(path, size);
	for (unsigned v = 0; v < 3; v++) {
		static const unsigned flags[] = { 0, DMIO_DEV_NO_DIRECT, DMIO_DEV_RDONLY };
		g_autoptr(dmio_dev) dev = NULL;
		int rc = dmio_dev_open(path, flags[v], &dev);

		ck_assert_msg(rc == 0, "dmio_dev_open(%s, %#x): %d", path, flags[v], rc);
		ck_assert_str_eq(dmio_dev_name(dev), path);
		ck_assert_uint_eq(dmio_dev_size(dev), size);
		ck_assert_uint_eq(dmio_dev_sectors(dev), size / SECTOR);
		ck_assert(!dmio_dev_is_blockdev(dev));
		ck_assert_msg(fm_is_power_of_2(dmio_dev_logical_block_size(dev)) &&
			      dmio_dev_logical_block_size(dev) >= SECTOR,
			      "logical block size %u", dmio_dev_logical_block_size(dev));
		fd = dmio_dev_fd(dev);
		ck_assert_int_ge(fd, 0);
		ck_assert_msg(fcntl(fd, F_GETFD) & FD_CLOEXEC, "fd without O_CLOEXEC");
		fl = fcntl(fd, F_GETFL);
		if (flags[v] & DMIO_DEV_NO_DIRECT)
			ck_assert(!dmio_dev_is_direct(dev));
		else
			ck_assert_msg(dmio_dev_is_direct(dev) == fm_test_supports_direct(path),
				      "is_direct %d, but the fs %s O_DIRECT", dmio_dev_is_direct(dev),
				      fm_test_supports_direct(path) ? "takes" : "refuses");
		ck_assert_msg(!!(fl & O_DIRECT) == dmio_dev_is_direct(dev),
			      "O_DIRECT on the fd (%d) disagrees with dmio_dev_is_direct (%d)",
			      !!(fl & O_DIRECT), dmio_dev_is_direct(dev));
		if (flags[v] & DMIO_DEV_RDONLY)
			ck_assert_int_eq(fl & O_ACCMODE, O_RDONLY);
		else
			ck_assert_int_eq(fl & O_ACCMODE, O_RDWR);
	}
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_open_missing)
{
	struct dmio_dev *sentinel = (struct dmio_dev *)&sentinel;
	struct dmio_dev *dev = sentinel;
	char *path = g_strdup_printf("%s/no-such-file", tc_dir);
	char *deep = g_strdup_printf("%s/no-such-dir/file", tc_dir);
	int rc;

	rc = dmio_dev_open(path, 0, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	ck_assert_msg(dev == sentinel, "*ret_dev changed on failure");
	rc = dmio_dev_open(path, DMIO_DEV_RDONLY, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	rc = dmio_dev_open(deep, DMIO_DEV_CREATE, &dev);
	ck_assert_int_eq(rc, -ENOENT);
	ck_assert(dev == sentinel);
	/* A directory is neither a regular file nor a block device. */
	rc = dmio_dev_open(tc_dir, 0, &dev);
	ck_assert_msg(rc < 0, "dmio_dev_open of a directory succeeded");
	ck_assert(dev == sentinel);
	g_free(path);
	g_free(deep);
}
END_TEST

START_TEST(test_dev_create)
{
	char *path = g_strdup_printf("%s/created.img", tc_dir);
	struct dmio_dev *dev = NULL;
	struct stat st;
	uint8_t data[8192], back[8192];
	int rc;

	fx_seed(__func__, _i);
	unlink(path);
	rc = dmio_dev_open(path, DMIO_DEV_CREATE, &dev);
	ck_assert_msg(rc == 0, "DMIO_DEV_CREATE of a missing file: %d", rc);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(dmio_dev_size(dev), 0);
	dmio_dev_close(dev);
	dev = NULL;

	/* On an existing file it neither truncates nor changes it. */
	fm_rng_fill(&fx.rng, data, sizeof(data));
	fm_test_write_file(path, 0, data, sizeof(data));
	rc = dmio_dev_open(path, DMIO_DEV_CREATE, &dev);
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(dmio_dev_size(dev), sizeof(data));
	dmio_dev_close(dev);
	fm_test_read_file(path, 0, back, sizeof(back));
	fm_assert_bytes_eq(back, data, sizeof(data), "existing file opened with DMIO_DEV_CREATE");
	ck_assert_uint_eq(fm_test_file_size(path), sizeof(data));
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_open_fd)
{
	char *path = g_strdup_printf("%s/byfd.img", tc_dir);
	struct dmio_dev *sentinel = (struct dmio_dev *)&sentinel;
	struct dmio_dev *dev = NULL;
	int fd, rc;

	fm_test_create_file(path, 192 * 1024);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	rc = dmio_dev_open_fd(fd, "leg-by-fd", &dev);
	ck_assert_int_eq(rc, 0);
	ck_assert_str_eq(dmio_dev_name(dev), "leg-by-fd");
	ck_assert_uint_eq(dmio_dev_size(dev), 192 * 1024);
	ck_assert(!dmio_dev_is_direct(dev));
	dmio_dev_close(dev);    /* closes fd */
	dev = NULL;

	if (fm_test_supports_direct(path)) {
		fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(dmio_dev_open_fd(fd, "direct", &dev), 0);
		ck_assert_msg(dmio_dev_is_direct(dev), "an O_DIRECT fd not seen as direct");
		dmio_dev_close(dev);
		dev = NULL;
	}

	/* Ownership also on failure: a directory fd is refused and closed. */
	fd = open(tc_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	dev = sentinel;
	rc = dmio_dev_open_fd(fd, "a directory", &dev);
	ck_assert_msg(rc < 0, "dmio_dev_open_fd of a directory succeeded");
	ck_assert(dev == sentinel);
	errno = 0;
	ck_assert_msg(fcntl(fd, F_GETFD) == -1 && errno == EBADF,
		      "dmio_dev_open_fd failed but left the fd open");
	ck_assert_int_lt(dmio_dev_open_fd(-1, "bad", &dev), 0);
	ck_assert(dev == sentinel);
	unlink(path);
	g_free(path);
}
END_TEST

START_TEST(test_dev_refresh_size)
{
	unsigned f;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = 1;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	ck_assert_int_eq(truncate(fx.files[f].path, 128 * 1024), 0);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(f)), 64 * 1024);
	ck_assert_int_eq(dmio_dev_refresh_size(fx_dev(f)), 0);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(f)), 128 * 1024);
	ck_assert_uint_eq(dmio_dev_sectors(fx_dev(f)), 256);
	fx.files[f].model = g_realloc(fx.files[f].model, 128 * 1024);
	memset(fx.files[f].model + 64 * 1024, 0, 64 * 1024);
	fx.files[f].size = 128 * 1024;
	/* The new space is usable. */
	r = fx_region(f, 200, 40);
	data = fx_random_buf(40 * SECTOR);
	rc = dmio_sync_vm(1, &r, DMIO_OP_WRITE, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write into the grown part: %d %#lx", rc, bits);
	fx_model_write(&r, data);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase engine: init options, restart, stats, shutdown drains */

START_TEST(test_engine_init_and_restart)
{
	unsigned f0, f1;
	struct dmio_region where[2];
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	f0 = fx_add_file(1 * MiB, 0);
	f1 = fx_add_file(1 * MiB, 0);

	/* Shutdown of an engine that is not running is harmless. */
	fx_shutdown();
	fx_shutdown();

	ck_assert_int_eq(dmio_engine_init(NULL), 0);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	ck_assert_int_eq(dmio_engine_init(NULL), -EBUSY);
	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 8192 }),
			 -EBUSY);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	fx_shutdown();

	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 4095 }),
			 -EINVAL);
	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = 512 }),
			 -EINVAL);
	/* A refused init left it stopped. */
	ck_assert_int_eq(dmio_engine_init(NULL), 0);
	fx_shutdown();

	/* Tiny rings and pieces: 64 pieces per region through 8 SQ entries. */
	rc = dmio_engine_init(&(struct dmio_engine_opts){ .rings = 2, .sq_entries = 8,
							  .max_io_bytes = 4096 });
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(dmio_max_io_bytes(), 4096);
	where[0] = fx_region(f0, 0, 512);
	where[1] = fx_region(f1, 1024, 512);
	data = fx_random_buf(512 * SECTOR);
	for (unsigned a = 0; a < 2; a++) {
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)a, 512 * SECTOR);
		struct fx_io io = { .api = FX_API_DMIO, .async = a, .mem = m };

		fx_mem_fill(m, data);
		fx_write_ok(&io, 2, where, data, "engine with 8 SQ entries, 4 KiB pieces");
		fx_read_check(&io, fx_mem_random(DMIO_MEM_BVEC, 512 * SECTOR), &where[1], data,
			      "engine with 8 SQ entries, 4 KiB pieces");
	}
	fx_shutdown();
	fx_verify_all();

	/* Started again by the first request, with defaults. */
	data = fx_random_buf(64 * SECTOR);
	where[0] = fx_region(f0, 1900, 64);
	ck_assert_int_eq(dmio_sync_vm(1, where, DMIO_OP_WRITE, data, NULL), 0);
	fx_model_write(&where[0], data);
	ck_assert_uint_eq(dmio_max_io_bytes(), 1 * MiB);
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_engine_stats)
{
	/* tc_dir may be in memory, whose small pieces skip io_uring. */
	bool in_memory = fm_test_in_memory(tc_dir);
	struct dmio_region where[3];
	struct dmio_stats st;
	unsigned f[3];
	uint8_t *data;
	unsigned long bits;

	fx_seed(__func__, _i);
	f[0] = fx_add_file(256 * 1024, 0);
	f[1] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	f[2] = fx_add_file(256 * 1024, DMIO_DEV_RDONLY);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(f[i], 8, 8);
	data = fx_random_buf(8 * SECTOR);

	for (unsigned round = 0; round < 2; round++) {
		ck_assert_int_eq(dmio_engine_init(NULL), 0);
		st = fx_stats();
		ck_assert_msg(st.requests == 0 && st.sqes == 0 && st.submits == 0 &&
			      st.bounced == 0 && st.resubmits == 0 && st.region_errors == 0,
			      "round %u: counters not zero after dmio_engine_init", round);
		/* 3 sync + 2 async accepted, 2 rejected. */
		for (unsigned i = 0; i < 3; i++)
			ck_assert_int_eq(dmio_sync_vm(1, where, DMIO_OP_WRITE, data, NULL), 0);
		for (unsigned i = 0; i < 2; i++) {
			struct fx_io io = { .api = FX_API_SEED, .async = true, .op = DMIO_OP_READ,
					    .mem = fx_mem_vm(8 * SECTOR, 0) };

			ck_assert_int_eq(fx_do(&io, 1, where, &bits), 0);
		}
		ck_assert_int_eq(dmio_sync_vm(2, where, DMIO_OP_READ, data, NULL), -EINVAL);
		ck_assert_int_eq(dmio_sync_vm(0, where, DMIO_OP_WRITE, data, NULL), -EINVAL);
		st = fx_stats();
		ck_assert_uint_eq(st.requests, 5);
		if (in_memory) {
			/* 4 KiB pieces of tmpfs legs: the reaper's own copies. */
			ck_assert_uint_ge(st.inline_ios, 5);
			ck_assert_uint_eq(st.sqes, 0);
			ck_assert_uint_eq(st.submits, 0);
		} else {
			ck_assert_uint_ge(st.sqes, 5);
			ck_assert_uint_eq(st.inline_ios, 0);
			ck_assert_uint_ge(st.submits, 1);
			ck_assert_uint_le(st.submits, st.sqes);
		}
		ck_assert_uint_eq(st.region_errors, 0);
		/* Two failing regions out of three. */
		ck_assert_int_eq(dmio_sync_vm(3, where, DMIO_OP_WRITE, data, &bits), -EIO);
		ck_assert_uint_eq(bits, 0x6);
		st = fx_stats();
		ck_assert_uint_eq(st.requests, 6);
		ck_assert_uint_eq(st.region_errors, 2);
		fx_finish();
	}
	fx_model_write(&where[0], data);
	fx_verify_all();
}
END_TEST

static void slow_cb(unsigned long bits, void *context)
{
	g_usleep(200);
	fx_cb_fn(bits, context);
}

/* 200 async writes, then shutdown: every callback ran before it returned. */
START_TEST(test_engine_shutdown_drains)
{
	enum { NREQ = 200, SLOT = 128 };
	unsigned f0, f1, done, after;
	struct fx_cb *cbs[NREQ];

	fx_seed(__func__, _i);
	f0 = fx_add_file((uint64_t)NREQ * SLOT * SECTOR, 0);
	f1 = fx_add_file((uint64_t)NREQ * SLOT * SECTOR, 0);
	for (unsigned i = 0; i < NREQ; i++) {
		struct dmio_region where[2] = { fx_region(f0, i * SLOT, SLOT),
						fx_region(f1, (NREQ - 1 - i) * SLOT, SLOT) };
		uint8_t *data = fx_random_buf(SLOT * SECTOR);
		struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(i % 3), SLOT * SECTOR);
		int rc;

		fx_mem_fill(m, data);
		cbs[i] = fx_cb_new();
		rc = fx_raw_submit(i % 2 ? FX_API_DMIO : FX_API_SEED, DMIO_OP_WRITE, 0, m, NULL, 2,
				   where, slow_cb, cbs[i], NULL);
		ck_assert_msg(rc == 0, "async write %u: %d", i, rc);
		atomic_store(&cbs[i]->accepted, true);
		fx_model_write(&where[0], data);
		fx_model_write(&where[1], data);
	}
	fm_test_sync_lock(&fx.sync);
	done = fx.done;
	fm_test_sync_unlock(&fx.sync);
	fx_shutdown();
	fm_test_sync_lock(&fx.sync);
	after = fx.done;
	fm_test_sync_unlock(&fx.sync);
	ck_assert_msg(after == NREQ,
		      "dmio_engine_shutdown returned with %u of %u callbacks run (%u before it)",
		      after, NREQ, done);
	if (done == NREQ)
		fprintf(stderr, "test_dmio: note: all callbacks had run before shutdown began\n");
	for (unsigned i = 0; i < NREQ; i++) {
		ck_assert_uint_eq(atomic_load(&cbs[i]->calls), 1);
		ck_assert_uint_eq(atomic_load(&cbs[i]->bits), 0);
	}
	fx_verify_all();
}
END_TEST

struct returning {
	atomic_uint returning;
	unsigned spin;
};

/* Say it returns, then take a while to do so. */
static void returning_cb(unsigned long bits, void *context)
{
	struct returning *ret = context;

	(void)bits;
	atomic_store(&ret->returning, 1);
	for (volatile unsigned spin = 0; spin < ret->spin; spin++)
		;
}

/*
 * Shutdown right as the last callback returns, many times.  The reaper ends
 * the request after the callback; a shutdown that saw the count reach zero
 * and then joined the reaper while holding a lock this last
 * dmio_request_end() still wanted hung for good (found under TSan, once in
 * about 60 runs of the test above).  The test thread spins and calls
 * shutdown at once; the callback lingers a little longer each time, so
 * that the shutdown lands at every point of the reaper's way out.
 */
START_TEST(test_engine_shutdown_races_last_callback)
{
	/* valgrind runs one thread at a time: no race to look for there. */
	unsigned iter = fm_test_under_valgrind() ? 10 : 1000;
	uint8_t *buf = fx_buf(4096);
	struct dmio_region where;
	unsigned f0;

	fx_seed(__func__, _i);
	f0 = fx_add_file(64 * 1024, 0);
	where = fx_region(f0, 8, 8);
	for (unsigned i = 0; i < iter; i++) {
		struct returning ret = { .spin = i % 250 };

		ck_assert_int_eq(dmio_engine_init(NULL), 0);
		wd_arm("dmio_engine_shutdown() as the last callback returns");
		ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, buf, returning_cb, &ret),
				 0);
		while (!atomic_load(&ret.returning))
			;
		dmio_engine_shutdown();
		wd_disarm();
		ck_assert_msg(memcmp(buf, fx.files[f0].model + 8 * SECTOR, 4096) == 0,
			      "iteration %u: the read returned other bytes", i);
	}
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase loop4k: block devices with 4096-byte logical sectors, O_DIRECT */

static void fx_loop_setup(void)
{
	fx_setup();
	for (unsigned i = 0; i < TC_NLOOPS; i++)
		ck_assert_uint_eq(fx_add_blockdev(tc_loops[i].dev, 0), i);
}

START_TEST(test_loop_dev_open)
{
	struct dmio_dev *dev = fx_dev(0);

	ck_assert_str_eq(dmio_dev_name(dev), tc_loops[0].dev);
	ck_assert(dmio_dev_is_blockdev(dev));
	ck_assert_uint_eq(dmio_dev_size(dev), tc_loop_sizes[0]);
	ck_assert_uint_eq(dmio_dev_sectors(dev), tc_loop_sizes[0] / SECTOR);
	ck_assert_uint_eq(dmio_dev_logical_block_size(dev), 4096);
	ck_assert_msg(dmio_dev_is_direct(dev), "a loop device should be opened O_DIRECT");
	ck_assert_int_ge(dmio_dev_fd(dev), 0);
	ck_assert(fcntl(dmio_dev_fd(dev), F_GETFL) & O_DIRECT);
	ck_assert_uint_eq(dmio_dev_size(fx_dev(1)), tc_loop_sizes[1]);
}
END_TEST

/* 512-byte I/O at sectors that are not multiples of 8: read-modify-write. */
static const struct {
	uint64_t sector, count;
} rmw_cases[] = {
	{ 1, 1 }, { 7, 2 }, { 3, 13 }, { 8, 1 }, { 9, 16 }, { 15, 1 }, { 0, 1 }, { 5, 8 },
	{ 6, 8 * 40 + 3 }, { UINT64_MAX, 1 } /* the last sector of the device */,
};

START_TEST(test_loop_rmw)
{
	unsigned c = (unsigned)_i / 2;
	bool async = _i % 2;
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	uint64_t count = rmw_cases[c].count;
	struct dmio_region where[2];
	struct dmio_stats st0;
	uint8_t *data;
	char what[128];

	fx_seed(__func__, _i);
	if (rmw_cases[c].sector == UINT64_MAX) {
		where[0] = fx_region(0, dmio_dev_sectors(fx_dev(0)) - 1, 1);
		where[1] = fx_region(1, dmio_dev_sectors(fx_dev(1)) - 1, 1);
	} else {
		where[0] = fx_region(0, rmw_cases[c].sector, count);
		where[1] = fx_region(1, rmw_cases[c].sector + 24, count);
	}
	snprintf(what, sizeof(what), "4K device, sector %" PRIu64 " + %" PRIu64 ", %s, %s",
		 where[0].sector, count, mem_names[type], async ? "async" : "sync");
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random(type, count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, true, what);
	fx_verify_all();        /* the rest of each 4 KiB block is intact */
	for (unsigned i = 0; i < 2; i++) {
		st0 = fx_stats();
		fx_read_check(&io, fx_mem_random(type, count * SECTOR), &where[i], data, what);
		fx_check_bounced(&st0, true, what);
	}
	fx_finish();
}
END_TEST

START_TEST(test_loop_aligned_not_bounced)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	const uint64_t count = 8 * 9;
	struct dmio_region where[2] = { fx_region(0, 8 * 5, count), fx_region(1, 8 * 20, count) };
	struct dmio_stats st0;
	uint8_t *data;

	fx_seed(__func__, _i);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_aligned(type, count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	io.async = async;
	fx_mem_fill(m, data);
	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, "aligned write to 4K devices");
	fx_read_check(&io, fx_mem_aligned(type, count * SECTOR), &where[1], data,
		      "aligned read from a 4K device");
	fx_check_bounced(&st0, false, "aligned I/O on 4K devices");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* Aligned sectors, memory misaligned by 1, 7, 511 bytes. */
START_TEST(test_loop_unaligned_memory)
{
	static const size_t offs[] = { 1, 7, 511 };
	size_t off = offs[_i % 3];
	enum dmio_mem_type type = (enum dmio_mem_type)((_i / 3) % 3);
	const uint64_t count = 8 * 3;
	const size_t len = count * SECTOR;
	struct dmio_region where[2] = { fx_region(0, 8 * 7, count), fx_region(1, 8 * 11, count) };
	struct dmio_stats st0;
	struct fx_mem *m, *r;
	uint8_t *data;
	char what[96];

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "4K device, %s memory misaligned by %zu", mem_names[type], off);
	data = fx_random_buf(len);
	switch (type) {
	case DMIO_MEM_PAGE_LIST:
		m = fx_mem_pl(len, (unsigned)off);
		r = fx_mem_pl(len, (unsigned)(PAGE - off));
		break;
	case DMIO_MEM_BVEC:
		m = fx_mem_bvec(len, 4, true, 1);
		r = fx_mem_bvec(len, 6, true, 1);
		break;
	default:
		m = fx_mem_vm(len, off);
		r = fx_mem_vm(len, 512 - off);
		break;
	}
	fx_mem_fill(m, data);

	struct fx_io io = fx_io_for((unsigned)_i, m);

	dmio_engine_init(NULL);
	st0 = fx_stats();
	fx_write_ok(&io, 2, where, data, what);
	fx_check_bounced(&st0, true, what);
	fx_verify_all();
	st0 = fx_stats();
	fx_read_check(&io, r, &where[0], data, what);
	fx_check_bounced(&st0, true, what);
	fx_finish();
}
END_TEST

/* One write to a 4K device (RMW), a regular file and another 4K device. */
START_TEST(test_loop_mixed_regions)
{
	const uint64_t count = 13;
	struct dmio_region where[3];
	uint8_t *data;

	fx_seed(__func__, _i);
	where[0] = fx_region(0, 3, count);
	where[1] = fx_region(fx_add_file(256 * 1024, 0), 3, count);
	where[2] = fx_region(1, 8, count);
	data = fx_random_buf(count * SECTOR);

	struct fx_mem *m = fx_mem_random((enum dmio_mem_type)(_i % 3), count * SECTOR);
	struct fx_io io = fx_io_for((unsigned)_i, m);

	fx_mem_fill(m, data);
	fx_write_ok(&io, 3, where, data, "4K device + file + 4K device");
	fx_verify_all();
	for (unsigned i = 0; i < 3; i++)
		fx_read_check(&io, fx_mem_random(m->type, count * SECTOR), &where[i], data,
			      "4K device + file + 4K device");
	fx_finish();
}
END_TEST

/* Concurrent single-sector writes into the same 4 KiB blocks: every one
 * lands (the engine's read-modify-write must not lose a neighbour's). */
START_TEST(test_loop_rmw_concurrent_neighbours)
{
	enum { N = 64, ROUNDS = 4 };

	fx_seed(__func__, _i);
	for (unsigned round = 0; round < ROUNDS; round++) {
		unsigned base = fx.accepted;

		for (unsigned i = 0; i < N; i++) {
			struct dmio_region r = fx_region(0, 8 + i, 1);
			uint8_t *data = fx_random_buf(SECTOR);
			struct fx_mem *m = fx_mem_vm(SECTOR, 0);
			struct fx_io io = { .api = i % 2 ? FX_API_DMIO : FX_API_SEED, .async = true,
					    .op = DMIO_OP_WRITE, .mem = m };

			fx_mem_fill(m, data);
			ck_assert_int_eq(fx_submit_async(&io, 1, &r, NULL), 0);
			fx_model_write(&r, data);
		}
		fx_wait_done(base + N);
	}
	fx_finish();
	for (guint i = 0; i < fx.cbs->len; i++)
		ck_assert_uint_eq(atomic_load(&((struct fx_cb *)fx.cbs->pdata[i])->bits), 0);
	fx_verify(0);
}
END_TEST

static const uint64_t FLUSH_FIELD = 15; /* /sys/block/X/stat: flushes completed */

/* Flushes reach every device (the loop devices count them). */
START_TEST(test_loop_flush_reaches_every_device)
{
	static const unsigned flag_sets[] = { 0, DMIO_REQ_PREFLUSH, DMIO_REQ_FUA };
	unsigned flags = flag_sets[_i % 3];
	bool async = _i / 3;
	struct dmio_region where[TC_NLOOPS];
	uint64_t before[TC_NLOOPS];
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .flags = flags };
	unsigned long bits = 0;
	uint8_t *data = NULL;
	int rc;

	fx_seed(__func__, _i);
	if (fm_test_blockdev_stat(tc_loops[0].dev, FLUSH_FIELD) == UINT64_MAX)
		fm_test_skip("no flush counters in /sys/block/*/stat (kernel < 5.5)");
	for (unsigned i = 0; i < TC_NLOOPS; i++) {
		char *wc = fm_test_blockdev_attr(tc_loops[i].dev, "queue/write_cache");
		char *fua = fm_test_blockdev_attr(tc_loops[i].dev, "queue/fua");
		bool counts = wc && strcmp(wc, "write back") == 0 &&
			      (flags != DMIO_REQ_FUA || (fua && strcmp(fua, "0") == 0));

		g_free(wc);
		g_free(fua);
		if (!counts)
			fm_test_skip("%s: no volatile write cache (or native FUA): the "
				     "kernel sends no flush to count", tc_loops[i].dev);
		where[i] = fx_region(i, 8 * (i + 1), 16);
		before[i] = fm_test_blockdev_stat(tc_loops[i].dev, FLUSH_FIELD);
	}
	if (flags) {            /* a FUA or PREFLUSH write */
		data = fx_random_buf(16 * SECTOR);
		io.op = DMIO_OP_WRITE;
		io.mem = fx_mem_vm(16 * SECTOR, 0);
		fx_mem_fill(io.mem, data);
	} else {
		io.op = DMIO_OP_FLUSH;
	}
	rc = fx_do(&io, TC_NLOOPS, where, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "%s to 3 devices: rc %d bits %#lx",
		      flags == DMIO_REQ_FUA ? "FUA write" : flags ? "PREFLUSH write" : "flush", rc,
		      bits);
	for (unsigned i = 0; i < TC_NLOOPS; i++) {
		uint64_t after = fm_test_blockdev_stat(tc_loops[i].dev, FLUSH_FIELD);

		ck_assert_msg(after > before[i],
			      "%s to 3 devices: %s saw no flush (counter %" PRIu64 " -> %" PRIu64 ")",
			      flags == DMIO_REQ_FUA ? "FUA write" : flags ? "PREFLUSH write" : "flush",
			      tc_loops[i].dev, before[i], after);
		if (data)
			fx_model_write(&where[i], data);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

START_TEST(test_loop_discard_zeroes)
{
	enum dmio_op op = _i % 2 ? DMIO_OP_WRITE_ZEROES : DMIO_OP_DISCARD;
	bool async = _i / 2;
	struct dmio_region z[2] = { fx_region(0, 64, 64), fx_region(1, 8, 16) };
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = op };
	unsigned long bits = 0;
	char what[64];
	int rc;

	fx_seed(__func__, _i);
	snprintf(what, sizeof(what), "%s on 4K devices (%s)", op_name(op),
		 async ? "async" : "sync");
	fx_zero_op(op, async, 2, z, what);
	fx_verify_all();
	fx_check_zeroes_read_back(&z[0], async);
	fx_check_zeroes_read_back(&z[1], async);

	/* Sub-block ranges.  Write-zeroes must zero exactly them; a discard may
	 * refuse (the device "cannot do" it), but if it says it did, the range
	 * reads as zeroes and the neighbours in the same blocks are intact. */
	struct dmio_region u[2] = { fx_region(0, 3, 10), fx_region(1, 131, 5) };

	rc = fx_do(&io, 2, u, &bits);
	if (op == DMIO_OP_WRITE_ZEROES || bits == 0) {
		ck_assert_msg(rc == 0 && bits == 0, "%s of sub-block ranges: rc %d bits %#lx",
			      op_name(op), rc, bits);
		fx_model_zero(&u[0]);
		fx_model_zero(&u[1]);
	} else {
		fprintf(stderr, "test_dmio: note: sub-block discard on a 4K device refused "
			"(rc %d, bits %#lx)\n", rc, bits);
		ck_assert_int_eq(rc, -EIO);
		for (unsigned i = 0; i < 2; i++)
			if (!(bits & (1UL << i)))
				fx_model_zero(&u[i]);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_DEV_EXCL claims a block device. */
START_TEST(test_loop_excl)
{
	struct dmio_dev *a = NULL, *b = NULL;
	int rc;

	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &a);
	ck_assert_msg(rc == 0, "first exclusive open: %d", rc);
	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &b);
	if (rc == 0)
		dmio_dev_close(b);
	ck_assert_msg(rc == -EBUSY, "second exclusive open of %s: %d, want -EBUSY",
		      tc_loops[2].dev, rc);
	dmio_dev_close(a);
	rc = dmio_dev_open(tc_loops[2].dev, DMIO_DEV_EXCL, &a);
	ck_assert_msg(rc == 0, "exclusive open after close: %d", rc);
	dmio_dev_close(a);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase fault: fault injection (dmio_dev_set_fault and friends) */

static void fx_set_fault(unsigned idx, const struct dmio_fault *f)
{
	int r = dmio_dev_set_fault(fx_dev(idx), f);

	ck_assert_msg(r == 0, "dmio_dev_set_fault(%s): %d (%s)", f ? "set" : "clear", r,
		      g_strerror(-r));
}

static void fx_check_fault_stats(unsigned idx, uint64_t failed, uint64_t dropped,
				 uint64_t corrupted, const char *what)
{
	struct dmio_fault_stats st;

	memset(&st, 0xcc, sizeof(st));
	dmio_dev_get_fault_stats(fx_dev(idx), &st);
	ck_assert_msg(st.failed == failed && st.dropped == dropped && st.corrupted == corrupted,
		      "%s: fault stats of file %u: failed %" PRIu64 " dropped %" PRIu64
		      " corrupted %" PRIu64 ", want %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      what, idx, st.failed, st.dropped, st.corrupted, failed, dropped, corrupted);
}

/* Read @r into fresh memory of @type: the rc, *ret_bits, and the bytes. */
static int fx_read_into(bool async, enum dmio_mem_type type, size_t misalign,
			const struct dmio_region *r, unsigned long *ret_bits, uint8_t **ret_data)
{
	size_t len = r->count * SECTOR;
	struct fx_mem *m = misalign ? fx_mem_vm(len, misalign) : fx_mem_random(type, len);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_READ, .mem = m };
	int rc = fx_do(&io, 1, r, ret_bits);

	fx_mem_check_guards(m, "fault read");
	if (ret_data)
		*ret_data = fx_mem_gather(m);
	return rc;
}

/* Write @data (count * 512 bytes) to @n regions; returns the rc and bits. */
static int fx_write_raw(bool async, size_t misalign, unsigned n, const struct dmio_region *where,
			const uint8_t *data, unsigned long *ret_bits)
{
	size_t len = where[0].count * SECTOR;
	struct fx_mem *m = misalign ? fx_mem_vm(len, misalign)
				    : fx_mem_random(DMIO_MEM_VM, len);
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_WRITE, .mem = m };

	fx_mem_fill(m, data);
	return fx_do(&io, n, where, ret_bits);
}

/* Reads fail exactly where they overlap the faulted range, on that device. */
START_TEST(test_fault_reads_in_range)
{
	static const struct { uint64_t sector, count; bool fails; } reads[] = {
		{ 0, 8, false },   { 92, 8, false }, { 93, 8, true },  { 100, 8, true },
		{ 104, 1, true },  { 107, 4, true }, { 108, 8, false }, { 96, 64, true },
		{ 200, 16, false }, { 101, 3, true },
	};
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	unsigned f, g, nfail = 0;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	g = fx_add_file(256 * 1024, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .error = ENODATA,
					      .sector = 100, .count = 8 });
	for (unsigned i = 0; i < G_N_ELEMENTS(reads); i++) {
		struct dmio_region r = fx_region(f, reads[i].sector, reads[i].count);
		struct dmio_region rg = fx_region(g, reads[i].sector, reads[i].count);
		unsigned long bits = FX_BITS_POISON;
		uint8_t *got;
		int rc;

		rc = fx_read_into(async, type, 0, &r, &bits, &got);
		if (reads[i].fails) {
			nfail++;
			ck_assert_msg(rc == -EIO && bits == 1,
				      "read %" PRIu64 "+%" PRIu64 " in the faulted range: rc %d bits %#lx",
				      r.sector, r.count, rc, bits);
		} else {
			ck_assert_msg(rc == 0 && bits == 0,
				      "read %" PRIu64 "+%" PRIu64 " outside the range: rc %d bits %#lx",
				      r.sector, r.count, rc, bits);
			fm_assert_bytes_eq(got, fx_model_at(&r), r.count * SECTOR, "read %u", i);
		}
		/* The same sectors of another device are not affected. */
		rc = fx_read_into(async, type, 0, &rg, &bits, &got);
		ck_assert_msg(rc == 0 && bits == 0, "read of the other device: rc %d", rc);
		fm_assert_bytes_eq(got, fx_model_at(&rg), rg.count * SECTOR, "other device %u", i);
	}
	fx_check_fault_stats(f, nfail, 0, 0, "reads");
	fx_check_fault_stats(g, 0, 0, 0, "other device");

	/* DMIO_FAULT_READS leaves writes alone. */
	{
		struct dmio_region w = fx_region(f, 100, 8);
		uint8_t *data = fx_random_buf(8 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_write_raw(async, 0, 1, &w, data, &bits);

		ck_assert_msg(rc == 0 && bits == 0, "write under a read fault: rc %d", rc);
		fx_model_write(&w, data);
	}
	fx_finish();
	fx_verify_all();
}
END_TEST

/* A 2-region write with one faulted leg: its bit, the other leg written,
 * the faulted file untouched; write-zeroes in the range fails too. */
START_TEST(test_fault_writes_one_leg)
{
	bool unaligned = _i % 2, async = _i / 2;
	uint64_t sector = unaligned ? 13 : 64, count = unaligned ? 21 : 32;
	struct dmio_region where[2], z;
	unsigned a, b;
	uint8_t *data, *snap, *now;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	a = fx_add_file(256 * 1024, 0);
	b = fx_add_file(256 * 1024, 0);
	where[0] = fx_region(a, sector, count);
	where[1] = fx_region(b, sector, count);
	/* The range overlaps only the region's last sector. */
	fx_set_fault(b, &(struct dmio_fault){ .flags = DMIO_FAULT_WRITES,
					      .sector = sector + count - 1, .count = 100 });
	snap = g_memdup2(fx_read_back(b), fx.files[b].size);
	data = fx_random_buf(count * SECTOR);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 2, where, data, &bits);
	ck_assert_msg(rc == -EIO && bits == 0x2, "write with a faulted leg: rc %d bits %#lx", rc,
		      bits);
	fx_model_write(&where[0], data);
	fx_check_fault_stats(b, 1, 0, 0, "one failed write");
	fx_check_fault_stats(a, 0, 0, 0, "the good leg");

	/* Write-zeroes overlapping the range: nothing is zeroed. */
	z = fx_region(b, sector + count, 8);
	{
		struct fx_io zio = { .api = FX_API_DMIO, .async = async,
				     .op = DMIO_OP_WRITE_ZEROES };

		rc = fx_do(&zio, 1, &z, &bits);
		ck_assert_msg(rc == -EIO && bits == 1, "write-zeroes in the range: rc %d bits %#lx",
			      rc, bits);
	}
	fx_check_fault_stats(b, 2, 0, 0, "write-zeroes");

	/* Outside the range, writes to b still work. */
	z = fx_region(b, 400, 8);
	rc = fx_write_raw(async, 0, 1, &z, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write outside the range: rc %d bits %#lx", rc, bits);
	fx_model_write(&z, data);
	memcpy(snap + 400 * SECTOR, data, 8 * SECTOR);
	fx_finish();
	fx_verify_all();
	now = fx_read_back(b);
	fm_assert_bytes_eq(now, snap, fx.files[b].size, "faulted leg against its snapshot");
	g_free(snap);
}
END_TEST

/* DMIO_FAULT_FLUSHES fails the flush of that device only, whatever the range. */
START_TEST(test_fault_flush)
{
	bool async = _i % 2;
	struct dmio_region where[3];
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };
	unsigned long bits = FX_BITS_POISON;
	uint8_t *data;
	int rc;

	fx_seed(__func__, _i);
	for (unsigned i = 0; i < 3; i++)
		where[i] = fx_region(fx_add_file(64 * 1024, 0), 0, 8);
	fx_set_fault(1, &(struct dmio_fault){ .flags = DMIO_FAULT_FLUSHES, .error = ENOSPC,
					      .sector = 100, .count = 1 });
	rc = fx_do(&io, 3, where, &bits);
	ck_assert_msg(rc == -EIO && bits == 0x2, "flush with a faulted device: rc %d bits %#lx",
		      rc, bits);
	fx_check_fault_stats(1, 1, 0, 0, "flush");
	/* Reads and writes of that device are not affected. */
	data = fx_random_buf(8 * SECTOR);
	rc = fx_write_raw(async, 0, 1, &where[1], data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write under a flush fault: rc %d", rc);
	fx_model_write(&where[1], data);
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &where[1], &bits, NULL);
	ck_assert_msg(rc == 0 && bits == 0, "read under a flush fault: rc %d", rc);
	fx_check_fault_stats(1, 1, 0, 0, "after read and write");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_FAULT_DROP_WRITES: success reported, nothing written; until cleared. */
START_TEST(test_fault_drop_writes)
{
	bool unaligned = _i % 2, async = _i / 2;
	uint64_t sector = unaligned ? 13 : 64, count = unaligned ? 21 : 32;
	struct dmio_region r;
	unsigned f;
	uint8_t *data, *got;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	r = fx_region(f, sector, count);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_DROP_WRITES });
	data = fx_random_buf(count * SECTOR);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "dropped write: rc %d bits %#lx", rc, bits);
	fx_check_fault_stats(f, 0, 1, 0, "dropped write");
	fx_verify(f);   /* the model was not updated: the file must not change */
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "read after a dropped write: rc %d", rc);
	fm_assert_bytes_eq(got, fx_model_at(&r), count * SECTOR, "old data after a dropped write");

	fx_set_fault(f, NULL);
	rc = fx_write_raw(async, unaligned ? 7 : 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write after clearing: rc %d", rc);
	fx_model_write(&r, data);
	fx_check_fault_stats(f, 0, 1, 0, "after clearing");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* DMIO_FAULT_CORRUPT_READS: success, one byte of every 512 differs; the
 * file itself is intact.  Direct and bounced memory, aligned or not. */
START_TEST(test_fault_corrupt_reads)
{
	unsigned shape = (unsigned)_i % 3;      /* aligned vm, page list, misaligned vm */
	bool async = _i / 3;
	uint64_t sector = shape == 2 ? 13 : 64, count = shape == 2 ? 21 : 32;
	struct dmio_region r;
	unsigned f;
	uint8_t *got;
	const uint8_t *want;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(256 * 1024, 0);
	r = fx_region(f, sector, count);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_CORRUPT_READS, .sector = 10,
					      .count = 100 });
	rc = fx_read_into(async, shape == 1 ? DMIO_MEM_PAGE_LIST : DMIO_MEM_VM,
			  shape == 2 ? 7 : 0, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "corrupted read: rc %d bits %#lx", rc, bits);
	want = fx_model_at(&r);
	for (uint64_t s = 0; s < count; s++) {
		size_t d = fm_test_count_diff(got + s * SECTOR, want + s * SECTOR, SECTOR);

		ck_assert_msg(d == 1, "sector %" PRIu64 " of the read: %zu bytes differ, want 1",
			      sector + s, d);
	}
	fx_check_fault_stats(f, 0, 0, 1, "corrupted read");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* rate_ppm 500000: about half of 2000 single-sector reads fail. */
START_TEST(test_fault_rate)
{
	const unsigned n = 2000;
	unsigned f, failed = 0;
	struct fx_io io = { .api = FX_API_DMIO, .async = true, .op = DMIO_OP_READ };

	fx_seed(__func__, 0);
	f = fx_add_file(256 * 1024, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .rate_ppm = 500000,
					      .seed = fx.seed });
	for (unsigned i = 0; i < n; i++) {
		struct dmio_region r = fx_region(f, fm_rng_between(&fx.rng, 0, 511), 1);

		io.mem = fx_mem_vm(SECTOR, 0);
		ck_assert_int_eq(fx_submit_async(&io, 1, &r, NULL), 0);
	}
	fx_finish();
	for (guint i = 0; i < fx.cbs->len; i++)
		failed += atomic_load(&((struct fx_cb *)fx.cbs->pdata[i])->bits) != 0;
	ck_assert_msg(failed >= n * 35 / 100 && failed <= n * 65 / 100,
		      "rate 50%%: %u of %u reads failed", failed, n);
	fx_check_fault_stats(f, failed, 0, 0, "rate");
}
END_TEST

/*
 * Flakey up_ms=200 down_ms=200.  The cycle starts somewhere inside the
 * set call, and each I/O is decided somewhere inside its own call: only
 * I/Os whose whole window falls in one phase (with a margin) are judged,
 * so a loaded machine makes the test judge fewer I/Os, not fail.
 */
START_TEST(test_fault_flakey)
{
	const gint64 up = 200000, down = 200000, period = up + down, margin = 3000;
	gint64 t_a, t_b, end;
	unsigned f, n_up = 0, n_down = 0;
	struct dmio_region r;

	fx_seed(__func__, 0);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 8, 8);
	dmio_engine_init(NULL);
	t_a = g_get_monotonic_time();
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS, .up_ms = 200,
					      .down_ms = 200 });
	t_b = g_get_monotonic_time();
	end = t_b + 1300000;
	while (g_get_monotonic_time() < end) {
		gint64 ib = g_get_monotonic_time(), ia, lo, hi;
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);

		ia = g_get_monotonic_time();
		lo = MAX(ib - t_b - margin, 0); /* bounds of (decision - cycle start) */
		hi = ia - t_a + margin;
		if (lo / period == hi / period) {
			if (hi % period < up) {
				ck_assert_msg(rc == 0 && bits == 0,
					      "read at %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
					      " us (up phase) failed: rc %d", lo, hi, rc);
				n_up++;
			} else if (lo % period >= up) {
				ck_assert_msg(rc == -EIO && bits == 1,
					      "read at %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
					      " us (down phase): rc %d bits %#lx", lo, hi, rc, bits);
				n_down++;
			}
		}
		g_usleep(5000);
	}
	ck_assert_msg(n_up >= 3 && n_down >= 3,
		      "too few reads clearly in one phase: %u up, %u down", n_up, n_down);
	fx_finish();
}
END_TEST

/* fault.c's rate draw number @n for @seed (the same splitmix64). */
static bool fx_draw_hits(uint64_t seed, uint64_t n, uint32_t rate_ppm)
{
	uint64_t x = seed + n * 0x9e3779b97f4a7c15ULL;

	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x % 1000000u < rate_ppm;
}

/*
 * io_uring may complete a read or write with -ECANCELED (it did nothing):
 * dmio resubmits the piece, a few times at most.  Injected here through the
 * fault injector with a seed whose first draw fails the piece and whose
 * second lets it through: the request must succeed, with the right bytes,
 * and exactly one injected failure counted.  A cancellation that persists
 * still fails, after a bounded number of tries.
 * _i: bit 0 async, bit 1 write.
 */
START_TEST(test_fault_canceled_retried)
{
	bool async = _i & 1, write = _i & 2;
	const uint32_t rate = 500000;
	uint64_t seed = 0;
	struct dmio_region r;
	struct dmio_fault_stats st;
	unsigned long bits = FX_BITS_POISON;
	uint8_t *data, *rd;
	unsigned f;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 16, 8); /* one piece */
	data = fx_random_buf(8 * SECTOR);
	while (!(fx_draw_hits(seed, 0, rate) && !fx_draw_hits(seed, 1, rate)))
		seed++;
	fx_set_fault(f, &(struct dmio_fault){
				.flags = write ? DMIO_FAULT_WRITES : DMIO_FAULT_READS,
				.error = ECANCELED, .rate_ppm = rate, .seed = seed });
	if (write) {
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "write cancelled once: rc %d bits %#lx", rc,
			      bits);
		fx_model_write(&r, data);
	} else {
		rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &rd);
		ck_assert_msg(rc == 0 && bits == 0, "read cancelled once: rc %d bits %#lx", rc,
			      bits);
		fm_assert_bytes_eq(rd, fx_model_at(&r), r.count * SECTOR, "read cancelled once");
	}
	fx_check_fault_stats(f, 1, 0, 0, "cancelled once");

	/* Cancelled every time: the error stands, after a few tries. */
	fx_set_fault(f, &(struct dmio_fault){
				.flags = write ? DMIO_FAULT_WRITES : DMIO_FAULT_READS,
				.error = ECANCELED });
	if (write)
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
	else
		rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == -EIO && bits == 1, "cancelled every time: rc %d bits %#lx", rc,
		      bits);
	dmio_dev_get_fault_stats(fx_dev(f), &st);
	ck_assert_msg(st.failed >= 1 + 2 && st.failed <= 1 + 16,
		      "cancelled every time: %" PRIu64 " tries", st.failed - 1);
	fx_set_fault(f, NULL);
	fx_finish();
	fx_verify_all();
}
END_TEST

/* Clearing a fault restores normal I/O; get_fault then says -ENOENT. */
START_TEST(test_fault_clear_restores)
{
	bool async = _i % 2;
	struct dmio_region r;
	struct dmio_fault got;
	struct fx_io io = { .api = FX_API_DMIO, .async = async, .op = DMIO_OP_FLUSH };
	unsigned f;
	uint8_t *data, *rd;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, _i);
	f = fx_add_file(64 * 1024, 0);
	r = fx_region(f, 16, 16);
	data = fx_random_buf(16 * SECTOR);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES |
							DMIO_FAULT_FLUSHES });
	ck_assert_int_eq(fx_write_raw(async, 0, 1, &r, data, &bits), -EIO);
	ck_assert_int_eq(fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, NULL), -EIO);
	ck_assert_int_eq(fx_do(&io, 1, &r, &bits), -EIO);
	fx_check_fault_stats(f, 3, 0, 0, "while set");
	fx_verify(f);

	fx_set_fault(f, NULL);
	ck_assert_int_eq(dmio_dev_get_fault(fx_dev(f), &got), -ENOENT);
	rc = fx_write_raw(async, 0, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write after clearing: rc %d", rc);
	fx_model_write(&r, data);
	rc = fx_read_into(async, DMIO_MEM_VM, 0, &r, &bits, &rd);
	ck_assert_msg(rc == 0 && bits == 0, "read after clearing: rc %d", rc);
	fm_assert_bytes_eq(rd, data, 16 * SECTOR, "read after clearing");
	rc = fx_do(&io, 1, &r, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "flush after clearing: rc %d", rc);
	fx_check_fault_stats(f, 3, 0, 0, "after clearing");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* get_fault returns exactly what was set, the latest one, -ENOENT when none. */
START_TEST(test_fault_get_set)
{
	struct dmio_fault a = { .flags = DMIO_FAULT_READS | DMIO_FAULT_CORRUPT_READS,
				.error = 0, .sector = 12345, .count = 77, .rate_ppm = 250000,
				.up_ms = 10, .down_ms = 20, .seed = 0x1234567890abcdefULL };
	struct dmio_fault b = { .flags = DMIO_FAULT_DROP_WRITES, .error = EROFS,
				.sector = 1, .count = 0, .up_ms = 5, .seed = 9 };
	struct dmio_fault got;
	struct dmio_dev *dev;

	fx_seed(__func__, 0);
	dev = fx_dev(fx_add_file(64 * 1024, 0));
	memset(&got, 0xcc, sizeof(got));
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), -ENOENT);
	ck_assert_int_eq(dmio_dev_set_fault(dev, NULL), 0);     /* clearing nothing */
	ck_assert_int_eq(dmio_dev_set_fault(dev, &a), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == a.flags && got.error == a.error && got.sector == a.sector &&
		  got.count == a.count && got.rate_ppm == a.rate_ppm && got.up_ms == a.up_ms &&
		  got.down_ms == a.down_ms && got.seed == a.seed);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &b), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == b.flags && got.error == b.error && got.sector == b.sector &&
		  got.count == b.count && got.rate_ppm == b.rate_ppm && got.up_ms == b.up_ms &&
		  got.down_ms == b.down_ms && got.seed == b.seed);
	/* Many replacements (past any cap on retired states). */
	for (unsigned i = 0; i < 300; i++) {
		a.sector = i;
		ck_assert_int_eq(dmio_dev_set_fault(dev, i % 5 == 4 ? NULL : &a), 0);
	}
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), -ENOENT);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &a), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert_uint_eq(got.sector, 299);
	fx_finish();
}
END_TEST

/* Unknown flags and errors that are not errnos are refused; the fault in
 * place stays. */
START_TEST(test_fault_set_rejects)
{
	struct dmio_fault keep = { .flags = DMIO_FAULT_WRITES, .sector = 5, .count = 6 };
	struct dmio_fault bad, got;
	struct dmio_dev *dev;

	fx_seed(__func__, 0);
	dev = fx_dev(fx_add_file(64 * 1024, 0));
	ck_assert_int_eq(dmio_dev_set_fault(dev, &keep), 0);
	bad = keep;
	bad.flags = 1u << 6;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad.flags = DMIO_FAULT_READS | 0x80000000u;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad = keep;
	bad.error = -EIO;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	bad.error = 4096;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), -EINVAL);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert(got.flags == keep.flags && got.sector == 5 && got.count == 6);
	bad.error = 4095;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), 0);
	bad.error = 0;
	bad.flags = 0;  /* no flags: a fault that does nothing, but valid */
	bad.up_ms = UINT32_MAX;
	bad.down_ms = UINT32_MAX;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &bad), 0);
	ck_assert_int_eq(dmio_dev_get_fault(dev, &got), 0);
	ck_assert_uint_eq(got.up_ms, UINT32_MAX);
	fx_finish();
}
END_TEST

/* The counters count pieces exactly: a 3-piece read with one piece in the
 * range fails once; drops and corruptions add up; other devices stay 0. */
START_TEST(test_fault_stats_exact)
{
	const uint64_t piece = SPLIT_MAX_IO / SECTOR;
	unsigned f, g;
	struct dmio_region r;
	uint8_t *data;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	fx_seed(__func__, 0);
	f = fx_add_file(1 * MiB, 0);
	g = fx_add_file(1 * MiB, 0);
	/* Pieces of SPLIT_MAX_IO bytes. */
	rc = dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = SPLIT_MAX_IO });
	ck_assert_int_eq(rc, 0);
	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_READS,
					      .sector = piece + 3, .count = 1 });
	r = fx_region(f, 0, 3 * piece);
	rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == -EIO && bits == 1, "3-piece read: rc %d bits %#lx", rc, bits);
	fx_check_fault_stats(f, 1, 0, 0, "one piece of three");
	for (unsigned i = 0; i < 4; i++)
		ck_assert_int_eq(fx_read_into(i % 2, DMIO_MEM_VM, 0, &r, &bits, NULL), -EIO);
	fx_check_fault_stats(f, 5, 0, 0, "five reads");

	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_DROP_WRITES });
	data = fx_random_buf(3 * piece * SECTOR);
	for (unsigned i = 0; i < 2; i++) {
		rc = fx_write_raw(i % 2, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == 0 && bits == 0, "dropped write: rc %d", rc);
	}
	fx_check_fault_stats(f, 5, 6, 0, "two dropped 3-piece writes");

	fx_set_fault(f, &(struct dmio_fault){ .flags = DMIO_FAULT_CORRUPT_READS,
					      .sector = 2 * piece, .count = 1 });
	rc = fx_read_into(false, DMIO_MEM_VM, 0, &r, &bits, NULL);
	ck_assert_msg(rc == 0 && bits == 0, "corrupted read: rc %d", rc);
	fx_check_fault_stats(f, 5, 6, 1, "one corrupted piece");
	fx_set_fault(f, NULL);
	fx_check_fault_stats(f, 5, 6, 1, "clearing keeps the counters");
	fx_check_fault_stats(g, 0, 0, 0, "the other device");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* With no fault set (never, or set and cleared) nothing is injected. */
START_TEST(test_fault_none_zero_stats)
{
	struct dmio_region r[2];
	struct fx_io flush = { .api = FX_API_DMIO, .op = DMIO_OP_FLUSH };
	uint8_t *data;
	unsigned long bits;

	fx_seed(__func__, 0);
	r[0] = fx_region(fx_add_file(256 * 1024, 0), 13, 21);
	r[1] = fx_region(fx_add_file(256 * 1024, 0), 64, 21);
	ck_assert_int_eq(dmio_dev_set_fault(fx_dev(1), &(struct dmio_fault){
						 .flags = DMIO_FAULT_WRITES }), 0);
	ck_assert_int_eq(dmio_dev_set_fault(fx_dev(1), NULL), 0);
	data = fx_random_buf(21 * SECTOR);
	for (unsigned i = 0; i < 4; i++) {
		ck_assert_int_eq(fx_write_raw(i % 2, i / 2 ? 7 : 0, 2, r, data, &bits), 0);
		ck_assert_int_eq(fx_read_into(i % 2, DMIO_MEM_VM, i / 2 ? 3 : 0, &r[i % 2], &bits,
					      NULL), 0);
		ck_assert_int_eq(fx_do(&flush, 2, r, &bits), 0);
	}
	fx_model_write(&r[0], data);
	fx_model_write(&r[1], data);
	fx_zero_op(DMIO_OP_WRITE_ZEROES, false, 2, r, "no fault");
	fx_check_fault_stats(0, 0, 0, 0, "never set");
	fx_check_fault_stats(1, 0, 0, 0, "set and cleared");
	fx_finish();
	fx_verify_all();
}
END_TEST

/* 4 threads do I/O while another sets and clears faults 200 times. */
#define FC_THREADS 4
#define FC_REQS 160
#define FC_WINDOW 8

struct fc_rec {
	atomic_uint calls;
	atomic_uint *done;
};

struct fc_thread {
	unsigned id;
	uint64_t seed;
	uint8_t *wbuf;          /* 4 KiB of data for the writes */
	uint8_t *rbufs;         /* FC_REQS x 4 KiB read buffers */
	struct fc_rec recs[FC_REQS];
	atomic_uint done;
	unsigned submit_errors;
	unsigned timeouts;
	pthread_t thread;
};

static atomic_uint fc_finished;        /* I/O threads that are done */

static void fc_cb(unsigned long bits, void *context)
{
	struct fc_rec *rec = context;

	(void)bits;
	atomic_fetch_add(&rec->calls, 1);
	atomic_fetch_add(rec->done, 1);
}

static void *fc_io_main(void *arg)
{
	struct fc_thread *t = arg;
	struct fm_rng rng;
	unsigned submitted = 0;

	fm_rng_seed(&rng, t->seed);
	for (unsigned i = 0; i < FC_REQS; i++) {
		struct dmio_region r = fx_region(i % 2, t->id * 64 + fm_rng_between(&rng, 0, 56),
						 fm_rng_between(&rng, 1, 8));
		struct dmio_request req = { .notify_fn = fc_cb, .notify_context = &t->recs[i] };

		t->recs[i].done = &t->done;
		switch (fm_rng_between(&rng, 0, 3)) {
		case 0:
		case 1:
			req.op = DMIO_OP_READ;
			req.mem = (struct dmio_memory){ .type = DMIO_MEM_VM,
							.ptr.vma = t->rbufs + (size_t)i * PAGE };
			break;
		case 2:
			req.op = DMIO_OP_WRITE;
			req.mem = (struct dmio_memory){ .type = DMIO_MEM_VM, .ptr.vma = t->wbuf };
			break;
		default:
			req.op = DMIO_OP_FLUSH;
			break;
		}
		if (dmio(&req, 1, &r, NULL) != 0) {
			t->submit_errors++;
			continue;
		}
		submitted++;
		if (submitted % FC_WINDOW == 0 || i == FC_REQS - 1) {
			gint64 deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_USEC_PER_SEC;

			while (atomic_load(&t->done) < submitted) {
				if (g_get_monotonic_time() > deadline) {
					t->timeouts++;
					atomic_fetch_add(&fc_finished, 1);
					return NULL;
				}
				g_usleep(100);
			}
		}
	}
	atomic_fetch_add(&fc_finished, 1);
	return NULL;
}

START_TEST(test_fault_concurrency)
{
	struct fc_thread *t = (struct fc_thread *)(void *)fx_buf(sizeof(struct fc_thread) * FC_THREADS);
	struct fm_rng rng;
	struct dmio_region r;
	struct dmio_fault_stats st[2];
	uint64_t injected = 0;
	uint8_t *data;

	fx_seed(__func__, 0);
	atomic_store(&fc_finished, 0);
	fx_add_file(256 * 1024, 0);
	fx_add_file(256 * 1024, DMIO_DEV_NO_DIRECT);
	memset(t, 0, sizeof(*t) * FC_THREADS);
	dmio_engine_init(&(struct dmio_engine_opts){ .rings = 2 });
	for (unsigned k = 0; k < FC_THREADS; k++) {
		t[k].id = k;
		t[k].seed = fx.seed + k + 1;
		t[k].wbuf = fx_random_buf(PAGE);
		t[k].rbufs = fx_buf((size_t)FC_REQS * PAGE);
		ck_assert_int_eq(pthread_create(&t[k].thread, NULL, fc_io_main, &t[k]), 0);
	}
	/* The faulting thread is this one: 200 changes at least, and on until
	 * the I/O is over, so that the two overlap. */
	fm_rng_seed(&rng, fx.seed);
	for (unsigned i = 0; i < 200 || atomic_load(&fc_finished) < FC_THREADS; i++) {
		struct dmio_fault f = {
			.flags = (unsigned)fm_rng_between(&rng, 1, 31),
			.error = fm_rng_between(&rng, 0, 1) ? ENOSPC : 0,
			.sector = fm_rng_between(&rng, 0, 300),
			.count = fm_rng_between(&rng, 0, 64),
			.rate_ppm = fm_rng_between(&rng, 0, 1) ? 300000 : 0,
			.up_ms = (uint32_t)fm_rng_between(&rng, 0, 2),
			.down_ms = (uint32_t)fm_rng_between(&rng, 0, 2),
			.seed = i,
		};

		fx_set_fault(i % 2, i % 3 == 2 ? NULL : &f);
		g_usleep((gulong)fm_rng_between(&rng, 0, 300));
	}
	fx_set_fault(0, NULL);
	fx_set_fault(1, NULL);
	for (unsigned k = 0; k < FC_THREADS; k++)
		pthread_join(t[k].thread, NULL);
	fx_finish();
	for (unsigned d = 0; d < 2; d++) {
		dmio_dev_get_fault_stats(fx_dev(d), &st[d]);
		injected += st[d].failed + st[d].dropped + st[d].corrupted;
	}
	ck_assert_msg(injected > 0, "the fault storm injected nothing: no overlap with the I/O?");
	for (unsigned k = 0; k < FC_THREADS; k++) {
		ck_assert_msg(t[k].submit_errors == 0 && t[k].timeouts == 0,
			      "thread %u: %u submissions refused, %u timeouts", k,
			      t[k].submit_errors, t[k].timeouts);
		for (unsigned i = 0; i < FC_REQS; i++)
			ck_assert_msg(atomic_load(&t[k].recs[i].calls) == 1,
				      "thread %u request %u: callback ran %u times", k, i,
				      atomic_load(&t[k].recs[i].calls));
	}
	/* Normal I/O afterwards. */
	r = fx_region(0, 400, 16);
	data = fx_random_buf(16 * SECTOR);
	{
		unsigned long bits = FX_BITS_POISON;
		uint8_t *got;

		ck_assert_int_eq(fx_write_raw(false, 0, 1, &r, data, &bits), 0);
		ck_assert_int_eq(fx_read_into(true, DMIO_MEM_BVEC, 0, &r, &bits, &got), 0);
		fm_assert_bytes_eq(got, data, 16 * SECTOR, "I/O after the storm");
	}
	fx_finish();
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase memory: legs on tmpfs, whose small I/O the reaper does itself */

/* One request of @count sectors at @sector on @idx: write then read back;
 * returns how many pieces the reaper did inline. */
static uint64_t fx_inline_round_trip(bool async, enum dmio_mem_type type, size_t misalign,
				     unsigned idx, uint64_t sector, uint64_t count)
{
	struct dmio_region r = fx_region(idx, sector, count);
	uint8_t *data = fx_random_buf(count * SECTOR), *got;
	struct dmio_stats s0, s1;
	unsigned long bits = FX_BITS_POISON;
	int rc;

	dmio_engine_init(NULL);         /* -EBUSY is fine: stats need a running engine */
	s0 = fx_stats();
	rc = fx_write_raw(async, misalign, 1, &r, data, &bits);
	ck_assert_msg(rc == 0 && bits == 0, "write %" PRIu64 "+%" PRIu64 ": rc %d bits %#lx",
		      sector, count, rc, bits);
	fx_model_write(&r, data);
	rc = fx_read_into(async, type, misalign, &r, &bits, &got);
	ck_assert_msg(rc == 0 && bits == 0, "read %" PRIu64 "+%" PRIu64 ": rc %d bits %#lx",
		      sector, count, rc, bits);
	fm_assert_bytes_eq(got, data, count * SECTOR, "read back %" PRIu64 "+%" PRIu64, sector,
			   count);
	s1 = fx_stats();
	return s1.inline_ios - s0.inline_ios;
}

/*
 * Up to 64 KiB, a read or write of a tmpfs leg is done by the reaper (one
 * piece, counted in inline_ios); above, and on a disk file, it goes through
 * io_uring.  The bytes are right either way, faults still apply, and a
 * request over a tmpfs leg and a disk leg completes once, with both written.
 */
START_TEST(test_memory_legs_inline)
{
	enum dmio_mem_type type = (enum dmio_mem_type)(_i % 3);
	bool async = _i / 3;
	unsigned m, d;
	uint64_t n;

	fx_seed(__func__, _i);
	m = fx_add_file_in(tc_shm_dir, 1 * MiB, 0);
	d = fx_add_file_in(tc_dir, 1 * MiB, 0);
	if (!fm_test_in_memory(tc_shm_dir) || fm_test_in_memory(tc_dir)) {
		fx_finish();
		fm_test_skip("%s is %sin memory and %s is %sin memory: nothing to tell apart",
			     tc_shm_dir, fm_test_in_memory(tc_shm_dir) ? "" : "not ", tc_dir,
			     fm_test_in_memory(tc_dir) ? "" : "not ");
	}

	n = fx_inline_round_trip(async, type, 0, m, 8, 8);
	ck_assert_msg(n == 2, "4 KiB write + read on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 5, m, 13, 21);
	ck_assert_msg(n == 2, "unaligned 21 sectors on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 0, m, 256, 128);
	ck_assert_msg(n == 2, "64 KiB on tmpfs: %" PRIu64 " inline, want 2", n);
	n = fx_inline_round_trip(async, type, 0, m, 512, 136);
	ck_assert_msg(n == 0, "68 KiB on tmpfs: %" PRIu64 " inline, want 0", n);
	n = fx_inline_round_trip(async, type, 0, d, 8, 8);
	ck_assert_msg(n == 0, "4 KiB on a disk file: %" PRIu64 " inline, want 0", n);

	/* One write over both kinds of leg. */
	{
		struct dmio_region w[2] = { fx_region(m, 40, 16), fx_region(d, 40, 16) };
		uint8_t *data = fx_random_buf(16 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_write_raw(async, 0, 2, w, data, &bits);

		ck_assert_msg(rc == 0 && bits == 0, "write to tmpfs + disk: rc %d bits %#lx", rc,
			      bits);
		fx_model_write(&w[0], data);
		fx_model_write(&w[1], data);
	}

	/* Injected faults apply to inline pieces as to io_uring ones. */
	fx_set_fault(m, &(struct dmio_fault){ .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES,
					      .error = ENODATA, .sector = 64, .count = 8 });
	{
		struct dmio_region r = fx_region(m, 64, 8);
		uint8_t *data = fx_random_buf(8 * SECTOR);
		unsigned long bits = FX_BITS_POISON;
		int rc = fx_read_into(async, type, 0, &r, &bits, NULL);

		ck_assert_msg(rc == -EIO && bits == 1, "faulted inline read: rc %d bits %#lx", rc,
			      bits);
		bits = FX_BITS_POISON;
		rc = fx_write_raw(async, 0, 1, &r, data, &bits);
		ck_assert_msg(rc == -EIO && bits == 1, "faulted inline write: rc %d bits %#lx", rc,
			      bits);
	}
	fx_check_fault_stats(m, 2, 0, 0, "inline faults");
	fx_set_fault(m, NULL);
	fx_finish();
	fx_verify_all();
}
END_TEST

/*----------------------------------------------------------------*/
/* The suite */

static TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
		     void (*unchecked_teardown)(void), void (*setup)(void),
		     void (*teardown)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, unchecked_setup, unchecked_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	fm_test_tcase_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *dmio_suite(void)
{
	Suite *s = suite_create("dmio");
	TCase *tc;

	tc = tc_add(s, "rw", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_rw_matrix, 0, LAYOUT_COUNT * 3 * 2 * 2);
	tcase_add_loop_test(tc, test_rw_regions_of_different_sizes, 0, 6);
	tcase_add_loop_test(tc, test_rw_many_segments, 0, 6);

	tc = tc_add(s, "loop", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_loop_run_to_completion);

	tc = tc_add(s, "callbacks", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_cb_async_exactly_once);
	tcase_add_loop_test(tc, test_cb_error_bits_sync_and_async, 0, 3);

	tc = tc_add(s, "errors", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_err_readonly_leg, 0, 10);
	tcase_add_loop_test(tc, test_err_past_end, 0, 32);
	tcase_add_loop_test(tc, test_err_short_read_at_eof, 0, 6);
	tcase_add_loop_test(tc, test_err_malformed, 0, 2);

	tc = tc_add(s, "split", tc_dir_setup, tc_dir_teardown, fx_split_setup, fx_teardown);
	tcase_add_loop_test(tc, test_split_large, 0, 6);
	tcase_add_test(tc, test_split_batched_submit);

	tc = tc_add(s, "unaligned", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_unaligned_memory, 0, 18);
	tcase_add_loop_test(tc, test_unaligned_aligned_not_bounced, 0, 6);

	tc = tc_add(s, "discard", tc_shm_setup, tc_shm_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_discard_zeroes, 0, 8);

	tc = tc_add(s, "memory", tc_shm_setup, tc_shm_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_memory_legs_inline, 0, 6);

	tc = tc_add(s, "flush", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_flush_three_devices, 0, 2);
	tcase_add_test(tc, test_flush_readonly_device);
	tcase_add_loop_test(tc, test_flush_fua_preflush_writes, 0, 6);

	tc = tc_add(s, "concurrency", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_conc_mixed, 0, 3);
	tcase_add_test(tc, test_conc_chained_callbacks);
	tcase_add_test(tc, test_conc_callback_fanout);
	tcase_add_test(tc, test_conc_sync_in_callback_edeadlk);

	tc = tc_add(s, "client", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_client_create_destroy);
	tcase_add_loop_test(tc, test_client_requests, 0, 2);
	tcase_add_test(tc, test_client_get_put);

	tc = tc_add(s, "dev", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_dev_open_regular_file);
	tcase_add_test(tc, test_dev_open_missing);
	tcase_add_test(tc, test_dev_create);
	tcase_add_test(tc, test_dev_open_fd);
	tcase_add_test(tc, test_dev_refresh_size);

	tc = tc_add(s, "fault", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_fault_reads_in_range, 0, 6);
	tcase_add_loop_test(tc, test_fault_writes_one_leg, 0, 4);
	tcase_add_loop_test(tc, test_fault_flush, 0, 2);
	tcase_add_loop_test(tc, test_fault_drop_writes, 0, 4);
	tcase_add_loop_test(tc, test_fault_corrupt_reads, 0, 6);
	tcase_add_test(tc, test_fault_rate);
	tcase_add_test(tc, test_fault_flakey);
	tcase_add_loop_test(tc, test_fault_clear_restores, 0, 2);
	tcase_add_loop_test(tc, test_fault_canceled_retried, 0, 4);
	tcase_add_test(tc, test_fault_get_set);
	tcase_add_test(tc, test_fault_set_rejects);
	tcase_add_test(tc, test_fault_stats_exact);
	tcase_add_test(tc, test_fault_none_zero_stats);
	tcase_add_test(tc, test_fault_concurrency);

	tc = tc_add(s, "engine", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_engine_init_and_restart);
	tcase_add_test(tc, test_engine_stats);
	tcase_add_test(tc, test_engine_shutdown_drains);
	tcase_add_test(tc, test_engine_shutdown_races_last_callback);

	/* Loop devices need root: without it tc_loop_setup fails every test
	 * of this TCase (a failure, not a silent skip). */
	tc = tc_add(s, "loop4k", tc_loop_setup, tc_loop_teardown, fx_loop_setup, fx_teardown);
	tcase_add_test(tc, test_loop_dev_open);
	tcase_add_loop_test(tc, test_loop_rmw, 0, 2 * G_N_ELEMENTS(rmw_cases));
	tcase_add_loop_test(tc, test_loop_aligned_not_bounced, 0, 6);
	tcase_add_loop_test(tc, test_loop_unaligned_memory, 0, 9);
	tcase_add_loop_test(tc, test_loop_mixed_regions, 0, 3);
	tcase_add_test(tc, test_loop_rmw_concurrent_neighbours);
	tcase_add_loop_test(tc, test_loop_flush_reaches_every_device, 0, 6);
	tcase_add_loop_test(tc, test_loop_discard_zeroes, 0, 4);
	tcase_add_test(tc, test_loop_excl);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_suite());
}
