/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fixtures of the dmio unit tests (dmio_fx.h says what they do).
 */
#include "dmio_fx.h"

const char *const mem_names[] = { "page-list", "bvec", "vm" };

/*----------------------------------------------------------------*/
/* Unchecked fixtures: per-TCase directories and loop devices */

char *tc_dir;
char *tc_shm_dir;

struct fm_test_loop tc_loops[TC_NLOOPS];
const uint64_t tc_loop_sizes[TC_NLOOPS] = { 4 * MiB, 1 * MiB, 1 * MiB };

void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "dmio");
}

void tc_dir_teardown(void)
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

void tc_shm_setup(void)
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

void tc_shm_teardown(void)
{
	int r = fm_test_rm_rf(tc_shm_dir);

	g_clear_pointer(&tc_shm_dir, g_free);
	tc_dir_teardown();
	ck_assert_msg(r == 0, "cannot remove the tmpfs directory: %s", g_strerror(-r));
}

int tc_loops_detach(char **ret_msg)
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

void tc_loop_setup(void)
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

void tc_loop_teardown(void)
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

struct dmio_fx_state fx;

struct dmio_wd_state wd;

void *wd_main(void *arg)
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

void wd_start(void)
{
	memset(&wd, 0, sizeof(wd));
	fm_test_sync_init(&wd.sync);
	ck_assert_int_eq(pthread_create(&wd.thread, NULL, wd_main, NULL), 0);
}

void wd_stop(void)
{
	fm_test_sync_lock(&wd.sync);
	wd.stop = true;
	fm_test_sync_signal(&wd.sync);
	fm_test_sync_unlock(&wd.sync);
	pthread_join(wd.thread, NULL);
	fm_test_sync_destroy(&wd.sync);
}

void wd_arm(const char *what)
{
	fm_test_sync_lock(&wd.sync);
	wd.what = what;
	wd.deadline = g_get_monotonic_time() + FX_WAIT_SECONDS * G_USEC_PER_SEC;
	fm_test_sync_signal(&wd.sync);
	fm_test_sync_unlock(&wd.sync);
}

void wd_disarm(void)
{
	fm_test_sync_lock(&wd.sync);
	wd.what = NULL;
	fm_test_sync_unlock(&wd.sync);
}

void fx_shutdown(void)
{
	wd_arm("dmio_engine_shutdown()");
	dmio_engine_shutdown();
	wd_disarm();
}

void fx_mem_free(gpointer p)
{
	struct fx_mem *m = p;

	for (guint i = 0; i < m->chunks->len; i++)
		free(g_array_index(m->chunks, struct fx_chunk, i).base);
	g_array_unref(m->chunks);
	g_ptr_array_unref(m->meta);
	g_free(m);
}

void fx_setup(void)
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

void fx_teardown(void)
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

void fx_split_setup(void)
{
	int r;

	fx_setup();
	r = dmio_engine_init(&(struct dmio_engine_opts){ .max_io_bytes = SPLIT_MAX_IO });
	ck_assert_msg(r == 0, "dmio_engine_init(max_io_bytes=%u): %d (%s)", SPLIT_MAX_IO, r,
		      g_strerror(-r));
}

void fx_seed(const char *name, int i)
{
	fx.seed = fm_test_seed_for(name, i);
	fm_rng_seed(&fx.rng, fx.seed);
}

uint8_t *fx_buf(size_t len)
{
	uint8_t *p = fm_test_alloc_aligned(PAGE, len);

	g_ptr_array_add(fx.bufs, p);
	return p;
}

uint8_t *fx_random_buf(size_t len)
{
	uint8_t *p = fx_buf(len);

	fm_rng_fill(&fx.rng, p, len);
	return p;
}

unsigned fx_add_file_in(const char *dir, uint64_t size, unsigned flags)
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

unsigned fx_add_file(uint64_t size, unsigned flags)
{
	return fx_add_file_in(tc_dir, size, flags);
}

unsigned fx_add_blockdev(const char *path, unsigned flags)
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

struct dmio_dev *fx_dev(unsigned idx)
{
	return fx.files[idx].dev;
}

struct dmio_region fx_region(unsigned idx, uint64_t sector, uint64_t count)
{
	return (struct dmio_region){ .dev = fx.files[idx].dev, .sector = sector, .count = count };
}

unsigned fx_idx_of(const struct dmio_dev *dev)
{
	for (unsigned i = 0; i < fx.nfiles; i++)
		if (fx.files[i].dev == dev)
			return i;
	ck_abort_msg("region names a device the fixture does not know");
	return 0;
}

void fx_model_write(const struct dmio_region *r, const void *data)
{
	struct fx_file *f = &fx.files[fx_idx_of(r->dev)];

	ck_assert(r->sector * SECTOR + r->count * SECTOR <= f->size);
	memcpy(f->model + r->sector * SECTOR, data, r->count * SECTOR);
}

void fx_model_zero(const struct dmio_region *r)
{
	struct fx_file *f = &fx.files[fx_idx_of(r->dev)];

	ck_assert(r->sector * SECTOR + r->count * SECTOR <= f->size);
	memset(f->model + r->sector * SECTOR, 0, r->count * SECTOR);
}

uint8_t *fx_read_back(unsigned idx)
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

void fx_verify(unsigned idx)
{
	struct fx_file *f = &fx.files[idx];
	uint8_t *buf = fx_read_back(idx);

	fm_assert_bytes_eq(buf, f->model, f->size, "%s (seed %#" PRIx64 ")", f->path, fx.seed);
}

void fx_verify_all(void)
{
	for (unsigned i = 0; i < fx.nfiles; i++)
		fx_verify(i);
}

/*----------------------------------------------------------------*/
/* Memory objects of the three types */

struct fx_mem *fx_mem_new(enum dmio_mem_type type, size_t len)
{
	struct fx_mem *m = g_new0(struct fx_mem, 1);

	m->type = type;
	m->len = len;
	m->chunks = g_array_new(FALSE, TRUE, sizeof(struct fx_chunk));
	m->meta = g_ptr_array_new_with_free_func(g_free);
	g_ptr_array_add(fx.mems, m);
	return m;
}

uint8_t *fx_mem_chunk(struct fx_mem *m, size_t align, size_t total, size_t data_off,
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

struct fx_mem *fx_mem_pl(size_t len, unsigned offset)
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

void fx_split_units(size_t units, unsigned n, size_t *parts)
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

struct fx_mem *fx_mem_bvec(size_t len, unsigned iovcnt, bool odd, size_t unit)
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

struct fx_mem *fx_mem_vm(size_t len, size_t misalign)
{
	struct fx_mem *m = fx_mem_new(DMIO_MEM_VM, len);

	m->vm = fx_mem_chunk(m, PAGE, misalign + len + 64, misalign, len);
	return m;
}

struct fx_mem *fx_mem_random(enum dmio_mem_type type, size_t len)
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

struct fx_mem *fx_mem_aligned(enum dmio_mem_type type, size_t len)
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

void fx_mem_walk(struct fx_mem *m, fx_seg_fn fn, void *arg)
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

void fx_seg_fill(uint8_t *seg, size_t n, size_t pos, void *arg)
{
	memcpy(seg, (const uint8_t *)arg + pos, n);
}

void fx_seg_gather(uint8_t *seg, size_t n, size_t pos, void *arg)
{
	memcpy((uint8_t *)arg + pos, seg, n);
}

void fx_mem_fill(struct fx_mem *m, const void *src)
{
	fx_mem_walk(m, fx_seg_fill, (void *)src);
}

uint8_t *fx_mem_gather(struct fx_mem *m)
{
	uint8_t *dst = fx_buf(m->len);

	fx_mem_walk(m, fx_seg_gather, dst);
	return dst;
}

ssize_t fx_first_not(const uint8_t *p, size_t from, size_t to, uint8_t v)
{
	for (size_t b = from; b < to; b++)
		if (p[b] != v)
			return (ssize_t)b;
	return -1;
}

void fx_mem_check_guards(struct fx_mem *m, const char *what)
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

struct dmio_memory fx_mem_dmio(const struct fx_mem *m)
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

struct fx_cb *fx_cb_new(void)
{
	struct fx_cb *cb = g_new0(struct fx_cb, 1);

	g_ptr_array_add(fx.cbs, cb);
	return cb;
}

void fx_cb_signal(void)
{
	fm_test_sync_lock(&fx.sync);
	fx.done++;
	fm_test_sync_broadcast(&fx.sync);
	fm_test_sync_unlock(&fx.sync);
}

void fx_cb_fn(unsigned long error_bits, void *context)
{
	struct fx_cb *cb = context;

	atomic_store(&cb->bits, error_bits);
	atomic_store(&cb->in_callback, dmio_in_callback());
	atomic_fetch_add(&cb->calls, 1);
	fx_cb_signal();
}

int fx_raw_submit(enum fx_api api, enum dmio_op op, unsigned flags, struct fx_mem *m,
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

void fx_wait_cb(struct fx_cb *cb)
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

void fx_wait_done(unsigned n)
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

int fx_do(const struct fx_io *io, unsigned n, const struct dmio_region *where,
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

int fx_submit_async(const struct fx_io *io, unsigned n, const struct dmio_region *where,
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

void fx_finish(void)
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

struct dmio_stats fx_stats(void)
{
	struct dmio_stats st;

	memset(&st, 0xcc, sizeof(st));
	dmio_get_stats(&st);
	return st;
}

const char *op_name(enum dmio_op op)
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

void fx_write_ok(const struct fx_io *io_in, unsigned n, const struct dmio_region *where,
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

void fx_read_check(const struct fx_io *io_in, struct fx_mem *m,
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

const uint8_t *fx_model_at(const struct dmio_region *r)
{
	return fx.files[fx_idx_of(r->dev)].model + r->sector * SECTOR;
}

struct fx_io fx_io_for(unsigned i, struct fx_mem *m)
{
	return (struct fx_io){
		.api = (i / 2) % 2 ? FX_API_DMIO : FX_API_SEED,
		.async = i % 2,
		.op = DMIO_OP_WRITE,
		.mem = m,
	};
}

TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
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

void fx_check_bounced(const struct dmio_stats *st0, bool want, const char *what)
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

void fx_zero_op(enum dmio_op op, bool async, unsigned n, const struct dmio_region *where,
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

void fx_check_zeroes_read_back(const struct dmio_region *r, bool async)
{
	size_t len = r->count * SECTOR;
	struct fx_mem *m = fx_mem_vm(len, 0);
	struct fx_io io = { .api = FX_API_SEED, .async = async, .op = DMIO_OP_READ, .mem = m };
	uint8_t *zero = fx_buf(len);

	memset(zero, 0, len);
	fx_read_check(&io, m, r, zero, "read back after zeroing");
}
