/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of dmio: concurrency (submitting threads, chained callbacks,
 * EDEADLK) and rings owned by the caller's thread.
 * Fixtures and conventions: dmio_fx.h.
 */
#include <dirent.h>

#include "dmio_fx.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

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
 * on that thread from its own ring (from registered buffers too, issued
 * FIXED); its own SQEs come back to their op;
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

	/* Registered buffers: a piece inside one is READ/WRITE_FIXED, with the
	 * same result. */
	{
		struct iovec regs[2] = { { wbuf, len }, { rbuf, len } };
		struct loop_cb fw = { 0 }, fr = { 0 };
		struct dmio_stats s0, s1;

		ck_assert_int_eq(dmio_loop_register_buffers(l, regs, 2), 0);
		ck_assert_int_eq(dmio_loop_register_buffers(l, regs, 2), -EINVAL);
		dmio_get_stats(&s0);
		for (size_t i = 0; i < len; i++)
			wbuf[i] = (uint8_t)(i * 13 + 5);
		memset(rbuf, 0, len);
		ck_assert_int_eq(dmio_async_vm(2, where, DMIO_OP_WRITE, wbuf, loop_notify, &fw), 0);
		loop_run_until(l, &fw.done);
		ck_assert_uint_eq(fw.bits, 0);
		ck_assert_int_eq(dmio_async_vm(1, &where[1], DMIO_OP_READ, rbuf, loop_notify, &fr),
				 0);
		loop_run_until(l, &fr.done);
		ck_assert_uint_eq(fr.bits, 0);
		fm_assert_bytes_eq(rbuf, wbuf, len, "read back through registered buffers");
		dmio_get_stats(&s1);
		ck_assert_uint_ge(s1.fixed_ios - s0.fixed_ios, 3);
	}

	/* A synchronous call would wait for itself. */
	ck_assert_int_eq(dmio_sync_vm(1, &where[0], DMIO_OP_READ, rbuf, NULL), -EDEADLK);

	/* A tmpfs leg: the loop reads and writes even large pieces itself,
	 * through the leg's mapping (a reaper leaves those above 64 KiB to
	 * io-wq), and both still complete on it, from its run. */
	if (fm_test_in_memory(tc_shm_dir)) {
		g_autofree char *path = g_strdup_printf("%s/loop.img", tc_shm_dir);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		struct loop_cb mw = { 0 }, mr = { 0 };
		struct dmio_stats s0, s1;
		struct dmio_region mem;
		struct dmio_dev *md;

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(ftruncate(fd, 4 << 20), 0);
		close(fd);
		ck_assert_int_eq(dmio_dev_open(path, 0, &md), 0);
		mem = (struct dmio_region){ md, 64, len / 512 };
		dmio_get_stats(&s0);
		ck_assert_int_eq(dmio_async_vm(1, &mem, DMIO_OP_WRITE, wbuf, loop_notify, &mw), 0);
		ck_assert(!mw.done);
		loop_run_until(l, &mw.done);
		memset(rbuf, 0, len);
		ck_assert_int_eq(dmio_async_vm(1, &mem, DMIO_OP_READ, rbuf, loop_notify, &mr), 0);
		loop_run_until(l, &mr.done);
		dmio_get_stats(&s1);
		ck_assert_uint_eq(mw.bits | mr.bits, 0);
		ck_assert(pthread_equal(mr.thread, pthread_self()) && mr.in_cb);
		fm_assert_bytes_eq(rbuf, wbuf, len, "read back from tmpfs on the loop");
		ck_assert_msg(s1.inline_ios - s0.inline_ios == 2 && s1.mapped_ios - s0.mapped_ios == 2,
			      "%zu KiB write + read of tmpfs on a loop: %" PRIu64 " inline, %" PRIu64
			      " mapped, want 2, 2", len >> 10, s1.inline_ios - s0.inline_ios,
			      s1.mapped_ios - s0.mapped_ios);
		ck_assert(dmio_loop_idle(l));
		dmio_dev_close(md);
	}

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

/* Count the calling thread's io-wq workers, and those whose affinity is
 * not @want. */
static unsigned loop_iowq_workers(const cpu_set_t *want, unsigned *ret_narrow)
{
	g_autofree char *name = g_strdup_printf("iou-wrk-%d\n", (int)gettid());
	struct dirent *de;
	unsigned n = 0, narrow = 0;
	DIR *d = opendir("/proc/self/task");

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", de->d_name);
		g_autofree char *comm = NULL;
		cpu_set_t cur;

		if (de->d_name[0] == '.' || !g_file_get_contents(path, &comm, NULL, NULL) ||
		    strcmp(comm, name) != 0)
			continue;
		n++;
		if (sched_getaffinity(atoi(de->d_name), sizeof(cur), &cur) != 0 ||
		    !CPU_EQUAL(&cur, want))
			narrow++;
	}
	closedir(d);
	*ret_narrow = narrow;
	return n;
}

/* dmio_loop_set_iowq_cpus(): a loop owned by a pinned thread has the
 * writes it leaves to io-wq (above 64 KiB to tmpfs, past the leg's
 * mapping: here a leg that was empty, so not mapped, at open and grew
 * since) copied by workers that may run on every CPU given, not on the
 * owner's one CPU (which they would inherit: a FUSE-over-io_uring queue
 * is pinned). */
START_TEST(test_loop_iowq_cpus)
{
	g_autofree char *path = g_strdup_printf("%s/iowq.img", tc_shm_dir);
	const size_t len = 1 << 20;
	cpu_set_t wide, one;
	struct dmio_region mem;
	struct dmio_stats s0, s1;
	struct dmio_loop *l;
	struct dmio_dev *md;
	unsigned workers = 0, narrow = 0, first = 0;
	uint8_t *buf;
	int fd;

	ck_assert_int_eq(sched_getaffinity(0, sizeof(wide), &wide), 0);
	if (CPU_COUNT(&wide) < 2 || !fm_test_in_memory(tc_shm_dir)) {
		fprintf(stderr, "test_loop_iowq_cpus: skipped (needs 2 CPUs and tmpfs)\n");
		return;
	}
	while (!CPU_ISSET(first, &wide))
		first++;
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(dmio_dev_open(path, 0, &md), 0);
	ck_assert_int_eq(ftruncate(fd, 4 << 20), 0);
	close(fd);
	ck_assert_int_eq(dmio_dev_refresh_size(md), 0);
	mem = (struct dmio_region){ md, 0, len / 512 };
	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, len), 0);
	memset(buf, 0x3c, len);
	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	ck_assert_int_eq(dmio_loop_set_iowq_cpus(l, &wide), 0);
	dmio_get_stats(&s0);
	/* A worker is forked at the first such write; the loop finds it at
	 * a later one (at most one scan a second). */
	for (unsigned i = 0; i < 60; i++) {
		struct loop_cb w = { 0 };

		ck_assert_int_eq(dmio_async_vm(1, &mem, DMIO_OP_WRITE, buf, loop_notify, &w), 0);
		loop_run_until(l, &w.done);
		ck_assert_uint_eq(w.bits, 0);
		workers = loop_iowq_workers(&wide, &narrow);
		if (workers > 0 && narrow == 0)
			break;
		usleep(50000);
	}
	dmio_get_stats(&s1);
	ck_assert_uint_eq(s1.mapped_ios, s0.mapped_ios);
	ck_assert_msg(workers > 0, "no io-wq worker wrote the 1 MiB pieces to tmpfs");
	ck_assert_msg(narrow == 0, "%u of %u io-wq workers of a loop pinned to CPU %u kept its pinning",
		      narrow, workers, first);
	fprintf(stderr, "test_loop_iowq_cpus: %u worker(s), %" PRIu64 " widened by the loop\n",
		workers, s1.iowq_widened - s0.iowq_widened);
	dmio_loop_destroy(l);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(wide), &wide), 0);
	dmio_dev_close(md);
	free(buf);
}
END_TEST

struct loop_chain {
	struct dmio_loop_op op;
	struct dmio_loop *l;
	struct loop_nop *next;          /* queued from this one's done() */
};

static void loop_chain_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct loop_chain *c = (struct loop_chain *)op;
	struct io_uring_sqe *sqe = dmio_loop_get_sqe(c->l);

	(void)res;
	(void)cqe_flags;
	ck_assert_ptr_nonnull(sqe);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &c->next->op);
}

struct loop_late_waker {
	struct dmio_loop *l;
	atomic_bool woke;
};

static void *loop_late_waker(void *arg)
{
	struct loop_late_waker *w = arg;

	usleep(100000);
	atomic_store(&w->woke, true);
	dmio_loop_wake(w->l);
	return NULL;
}

/*
 * A loop's write of 4 KiB or more into several mapped tmpfs legs is copied
 * in one pass over the source (map.c, dmio_map_fan): every byte lands on
 * every leg, in order, whatever the iovecs (odd lengths: each iovec's
 * destination unaligned after the first), nothing beside it changes; a
 * write below 4 KiB (not streamed either), or into a single leg, is copied
 * leg by leg.
 */
START_TEST(test_loop_fan)
{
	enum { NLEGS = 3 };
	const size_t size = 4 << 20;
	static const size_t cases[][5] = {
		{ 1 << 20 },
		{ 64 * 1024 },
		{ 1, 63, 4097, 100000, 287 },           /* 104448 */
		{ 129, 127, 65536 - 256, 512 },         /* 65792 */
		{ 32 * 1024 },
		{ 4096 },
		{ 1, 1023, 2048, 1024 },                /* 4096 */
		{ 2048 },                               /* below the fan */
	};
	struct dmio_dev *dev[NLEGS];
	uint8_t *model[NLEGS], *got = fx_buf(size), *src = fx_random_buf((1 << 20) + 64);
	struct dmio_loop *l;
	int fd[NLEGS];

	if (!fm_test_in_memory(tc_shm_dir)) {
		fprintf(stderr, "test_loop_fan: skipped (%s is not in memory)\n", tc_shm_dir);
		return;
	}
	fx_seed(__func__, 0);
	for (unsigned k = 0; k < NLEGS; k++) {
		g_autofree char *path = g_strdup_printf("%s/fan%u.img", tc_shm_dir, k);

		model[k] = fx_random_buf(size);
		fd[k] = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		ck_assert_int_ge(fd[k], 0);
		ck_assert_int_eq(pwrite(fd[k], model[k], size, 0), (ssize_t)size);
		ck_assert_int_eq(dmio_dev_open(path, 0, &dev[k]), 0);
		unlink(path);
	}
	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	for (unsigned c = 0; c < FM_ARRAY_SIZE(cases); c++) {
		for (unsigned nlegs = 1; nlegs <= NLEGS; nlegs++) {
			const uint8_t *from = src + c % 3 * 17;
			uint64_t off = (uint64_t)c * (1 << 20) / 2 + nlegs * 4096 + 512;
			struct dmio_region where[NLEGS];
			struct iovec iov[5];
			struct loop_cb w = { 0 };
			struct dmio_stats s0, s1;
			unsigned n = 0;
			size_t len = 0;
			uint64_t want, want_streamed;

			for (; n < 5 && cases[c][n]; n++) {
				iov[n].iov_base = (void *)(from + len);
				iov[n].iov_len = cases[c][n];
				len += cases[c][n];
			}
			ck_assert_uint_eq(len % 512, 0);
			for (unsigned k = 0; k < nlegs; k++) {
				/* The legs' offsets differ by sectors. */
				where[k] = (struct dmio_region){ dev[k], off / 512 + k, len / 512 };
				memcpy(model[k] + off + k * 512, from, len);
			}
			dmio_get_stats(&s0);
			ck_assert_int_eq(dmio_async_bvec(nlegs, where, DMIO_OP_WRITE, iov, n,
							 loop_notify, &w), 0);
			loop_run_until(l, &w.done);
			dmio_get_stats(&s1);
			ck_assert_uint_eq(w.bits, 0);
			want = nlegs > 1 && len >= 4096 && __builtin_cpu_supports("avx2") ? nlegs : 0;
			want_streamed = len >= 4096 ? nlegs : 0;
			ck_assert_msg(s1.fanned_ios - s0.fanned_ios == want &&
					      s1.mapped_ios - s0.mapped_ios == nlegs &&
					      s1.streamed_ios - s0.streamed_ios == want_streamed,
				      "case %u, %u legs (%zu bytes): %" PRIu64 " fanned, %" PRIu64
				      " mapped, %" PRIu64 " streamed, want %" PRIu64 ", %u, %" PRIu64,
				      c, nlegs, len, s1.fanned_ios - s0.fanned_ios,
				      s1.mapped_ios - s0.mapped_ios, s1.streamed_ios - s0.streamed_ios,
				      want, nlegs, want_streamed);
		}
	}
	ck_assert(dmio_loop_idle(l));
	dmio_loop_destroy(l);
	for (unsigned k = 0; k < NLEGS; k++) {
		ck_assert_int_eq(pread(fd[k], got, size, 0), (ssize_t)size);
		fm_assert_bytes_eq(got, model[k], size, "a leg after the loop's writes");
		dmio_dev_close(dev[k]);
		close(fd[k]);
	}
	fx_finish();
}
END_TEST

/* dmio_loop_run_once() with wait: an SQE queued by a completion is left
 * for the next call, which submits it with its wait; a wait that submits
 * a prompt SQE (dmio_loop_sqe_prompt()) does not end on its completion
 * but on the next one (here a wake-up). */
START_TEST(test_loop_submit_with_wait)
{
	struct dmio_loop *l;
	struct loop_nop a = { { loop_nop_done }, -1, 0 }, b = { { loop_nop_done }, -1, 0 };
	struct loop_chain c = { { loop_chain_done }, NULL, &b };
	struct loop_late_waker w = { 0 };
	struct io_uring_sqe *sqe;
	pthread_t waker;
	int r;

	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	c.l = w.l = l;

	sqe = dmio_loop_get_sqe(l);
	ck_assert_ptr_nonnull(sqe);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &c.op);
	ck_assert_int_eq(dmio_loop_run_once(l, true), 0);        /* submits, waits */
	ck_assert_int_eq(dmio_loop_run_once(l, true), 1);        /* c's done() queues b */
	ck_assert_uint_eq(io_uring_sq_ready(dmio_loop_ring(l)), 1); /* not submitted */
	ck_assert_uint_eq(b.calls, 0);
	while (b.calls == 0)
		ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
	ck_assert_int_eq(b.res, 0);

	sqe = dmio_loop_get_sqe(l);
	ck_assert_ptr_nonnull(sqe);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &a.op);
	dmio_loop_sqe_prompt(l);
	ck_assert_int_eq(pthread_create(&waker, NULL, loop_late_waker, &w), 0);
	r = dmio_loop_run_once(l, true);
	ck_assert_int_eq(r, 0);
	/* (Under valgrind, whose big lock a blocking io_uring_enter would
	 * keep, the wait polls instead and ends on the first completion.) */
	if (!RUNNING_ON_VALGRIND)
		ck_assert_msg(atomic_load(&w.woke), "the wait ended on the prompt SQE's completion");
	while (a.calls == 0)
		ck_assert_int_ge(dmio_loop_run_once(l, !RUNNING_ON_VALGRIND), 0);
	ck_assert_int_eq(a.res, 0);
	pthread_join(waker, NULL);
	dmio_loop_destroy(l);
}
END_TEST

/* test_loop_peek: what happened, in order ('p' a peek, 'd' a done). */
static char peek_log[64];
static unsigned peek_len;

static void peek_nop_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	loop_nop_done(op, res, cqe_flags);
	if (peek_len < sizeof(peek_log) - 1)
		peek_log[peek_len++] = 'd';
}

static void peek_fn(struct dmio_loop_op *op, int res)
{
	struct loop_nop *n = (struct loop_nop *)op;

	ck_assert_int_eq(res, 0);
	ck_assert_uint_eq(n->calls, 0);  /* before its own done() */
	if (peek_len < sizeof(peek_log) - 1)
		peek_log[peek_len++] = 'p';
}

/* dmio_loop_set_peek(): the owner's completions that arrive together are
 * all peeked, in order, before the first of them is handled; dmio's own
 * (a leg read's) are not; after set_peek(NULL), none is. */
START_TEST(test_loop_peek)
{
	enum { N = 4 };         /* one reap batch (8) */
	g_autofree char *path = g_strdup_printf("%s/peek.img", tc_dir);
	struct loop_nop nops[N];
	struct loop_cb rcb = { 0 };
	struct dmio_region where;
	struct dmio_loop *l;
	struct dmio_dev *dev;
	uint8_t *buf;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
	close(fd);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, 4096), 0);
	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	dmio_loop_set_peek(l, peek_fn);

	for (unsigned round = 0; round < 2; round++) {
		peek_len = 0;
		memset(peek_log, 0, sizeof(peek_log));
		for (unsigned i = 0; i < N; i++) {
			struct io_uring_sqe *sqe = dmio_loop_get_sqe(l);

			nops[i] = (struct loop_nop){ { peek_nop_done }, -1, 0 };
			ck_assert_ptr_nonnull(sqe);
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data(sqe, &nops[i].op);
		}
		/* Submitted; the NOPs complete at once, and the next call
		 * takes all four in one batch. */
		ck_assert_int_eq(dmio_loop_run_once(l, false), 0);
		while (nops[N - 1].calls == 0)
			ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
		ck_assert_str_eq(peek_log, round ? "dddd" : "ppppdddd");
		dmio_loop_set_peek(l, NULL);
	}

	/* dmio's own completions are not the owner's: never peeked. */
	dmio_loop_set_peek(l, peek_fn);
	peek_len = 0;
	memset(peek_log, 0, sizeof(peek_log));
	where = (struct dmio_region){ dev, 0, 8 };
	ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, buf, loop_notify, &rcb), 0);
	loop_run_until(l, &rcb.done);
	ck_assert_uint_eq(rcb.bits, 0);
	ck_assert_uint_eq(peek_len, 0);

	dmio_loop_destroy(l);
	dmio_dev_close(dev);
	free(buf);
}
END_TEST

/* The reads of test_loop_prompt_early: the first and the last to complete
 * queue a prompt SQE (a NOP, as a loop's reply). */
struct loop_burst {
	struct dmio_loop *l;
	unsigned done, total;
	unsigned long bits;
	struct loop_nop first, last;
};

static void loop_burst_notify(unsigned long error_bits, void *context)
{
	struct loop_burst *b = context;
	struct loop_nop *n = NULL;
	struct io_uring_sqe *sqe;

	b->bits |= error_bits;
	if (++b->done == 1)
		n = &b->first;
	else if (b->done == b->total)
		n = &b->last;
	if (!n)
		return;
	sqe = dmio_loop_get_sqe(b->l);
	ck_assert_ptr_nonnull(sqe);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &n->op);
	dmio_loop_sqe_prompt(b->l);
}

/* dmio_loop_run_once() with wait, leg I/O completing in a burst larger than
 * one reap batch: the prompt SQE queued by the first batch's callbacks is
 * submitted at once (more completions wait), the one queued by the last
 * batch's is left for the wait, as in test_loop_submit_with_wait. */
START_TEST(test_loop_prompt_early)
{
	enum { N = 12 };        /* > DMIO_REAP_BATCH (8), < 2 batches */
	g_autofree char *path = g_strdup_printf("%s/burst.img", tc_dir);
	struct loop_burst b = { .total = N };
	struct dmio_region where[N];
	struct dmio_dev *dev;
	struct dmio_loop *l;
	uint8_t *buf;
	int fd, r;

	if (fm_test_in_memory(tc_dir)) {
		/* Legs in memory complete inline, not through CQEs. */
		fm_test_skip("%s is in memory", tc_dir);
		return;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4 << 20), 0);
	close(fd);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, N * 4096), 0);
	b.first = b.last = (struct loop_nop){ { loop_nop_done }, -1, 0 };
	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	b.l = l;
	for (unsigned i = 0; i < N; i++) {
		where[i] = (struct dmio_region){ dev, 8 * (i * 37 % 512), 8 };
		ck_assert_int_eq(dmio_async_vm(1, &where[i], DMIO_OP_READ, buf + i * 4096,
					       loop_burst_notify, &b), 0);
	}
	ck_assert_int_eq(dmio_loop_run_once(l, false), 0);      /* submits */
	usleep(100000);         /* all complete */
	/* With DEFER_TASKRUN their CQEs are posted by the next wait. */
	while ((r = dmio_loop_run_once(l, true)) == 0)
		;
	ck_assert_int_eq(r, 8);
	ck_assert_uint_eq(b.done, 8);
	ck_assert_msg(io_uring_sq_ready(dmio_loop_ring(l)) == 0,
		      "the first batch's prompt SQE waits for the last batch");
	/* The rest of the burst and the first NOP's completion (inline). */
	while (b.done < N)
		ck_assert_int_gt(dmio_loop_run_once(l, true), 0);
	ck_assert_uint_eq(b.first.calls, 1);
	ck_assert_uint_eq(io_uring_sq_ready(dmio_loop_ring(l)), 1);     /* with the wait */
	ck_assert_uint_eq(b.last.calls, 0);
	ck_assert_int_eq(dmio_loop_run_once(l, false), 0);      /* submits it */
	while (b.last.calls == 0)
		ck_assert_int_ge(dmio_loop_run_once(l, false), 0);
	ck_assert_int_eq(b.first.res, 0);
	ck_assert_int_eq(b.last.res, 0);
	ck_assert_uint_eq(b.bits, 0);
	ck_assert(dmio_loop_idle(l));
	dmio_loop_destroy(l);
	dmio_dev_close(dev);
	free(buf);
}
END_TEST

/* A 4 MiB device file NAME in tc_dir, opened, and two page-aligned 4 KiB
 * buffers, *buf filled with @fill (for the delay tests). */
static struct dmio_dev *delay_dev(const char *name, uint8_t **buf, uint8_t **rbuf, int fill)
{
	g_autofree char *path = g_strdup_printf("%s/%s", tc_dir, name);
	struct dmio_dev *dev;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4 << 20), 0);
	close(fd);
	ck_assert_int_eq(dmio_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(posix_memalign((void **)buf, 4096, 4096), 0);
	ck_assert_int_eq(posix_memalign((void **)rbuf, 4096, 4096), 0);
	memset(*buf, fill, 4096);
	return dev;
}

/* DMIO_FAULT_DELAY_WRITES: a write in the range completes after the delay
 * and is written; a read and a write outside the range are not delayed;
 * a delay without the flag (or beyond the limit) is refused. */
START_TEST(test_fault_delay_writes)
{
	struct dmio_fault fl = { .flags = DMIO_FAULT_DELAY_WRITES, .sector = 0, .count = 2048,
				 .delay_ms = 2000 };
	uint8_t *buf, *rbuf;
	struct dmio_dev *dev = delay_dev("delay.img", &buf, &rbuf, 0x5d);
	struct dmio_region in = { dev, 8, 8 }, out = { dev, 4096, 8 };
	uint64_t t0, dt;

	ck_assert_int_eq(dmio_dev_set_fault(dev, &(struct dmio_fault){
					    .flags = DMIO_FAULT_DELAY_WRITES }), -EINVAL);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &(struct dmio_fault){
					    .flags = DMIO_FAULT_WRITES, .delay_ms = 5 }), -EINVAL);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &(struct dmio_fault){
					    .flags = DMIO_FAULT_DELAY_WRITES,
					    .delay_ms = 60001 }), -EINVAL);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &fl), 0);

	t0 = fm_now_ns();
	ck_assert_int_eq(dmio_sync_vm(1, &in, DMIO_OP_WRITE, buf, NULL), 0);
	dt = fm_now_ns() - t0;
	ck_assert_msg(dt >= 1990 * 1000000ull, "a delayed write took %" PRIu64 " ns", dt);
	t0 = fm_now_ns();
	ck_assert_int_eq(dmio_sync_vm(1, &in, DMIO_OP_READ, rbuf, NULL), 0);
	ck_assert_int_eq(dmio_sync_vm(1, &out, DMIO_OP_WRITE, buf, NULL), 0);
	dt = fm_now_ns() - t0;
	if (!fm_test_under_valgrind())
		ck_assert_msg(dt < 1500 * 1000000ull, "undelayed I/O took %" PRIu64 " ns", dt);
	fm_assert_bytes_eq(rbuf, buf, 4096, "the delayed write was written");
	ck_assert_int_eq(dmio_dev_set_fault(dev, NULL), 0);
	dmio_dev_close(dev);
	free(buf);
	free(rbuf);
}
END_TEST

/* DMIO_FAULT_DELAY_READS: a read in the range completes after the delay,
 * intact; a write in the range and a read outside it are not delayed; with
 * DELAY_WRITES too, one delay serves both. */
START_TEST(test_fault_delay_reads)
{
	struct dmio_fault fl = { .flags = DMIO_FAULT_DELAY_READS, .sector = 0, .count = 2048,
				 .delay_ms = 1000 };
	uint8_t *buf, *rbuf;
	struct dmio_dev *dev = delay_dev("delayr.img", &buf, &rbuf, 0xa7);
	struct dmio_region in = { dev, 8, 8 }, out = { dev, 4096, 8 };
	uint64_t t0, dt;

	ck_assert_int_eq(dmio_dev_set_fault(dev, &(struct dmio_fault){
					    .flags = DMIO_FAULT_DELAY_READS }), -EINVAL);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &(struct dmio_fault){
					    .flags = DMIO_FAULT_READS, .delay_ms = 5 }), -EINVAL);
	ck_assert_int_eq(dmio_dev_set_fault(dev, &fl), 0);

	t0 = fm_now_ns();
	ck_assert_int_eq(dmio_sync_vm(1, &in, DMIO_OP_WRITE, buf, NULL), 0);
	ck_assert_int_eq(dmio_sync_vm(1, &out, DMIO_OP_WRITE, buf, NULL), 0);
	ck_assert_int_eq(dmio_sync_vm(1, &out, DMIO_OP_READ, rbuf, NULL), 0);
	dt = fm_now_ns() - t0;
	if (!fm_test_under_valgrind())
		ck_assert_msg(dt < 700 * 1000000ull, "undelayed I/O took %" PRIu64 " ns", dt);
	memset(rbuf, 0, 4096);
	t0 = fm_now_ns();
	ck_assert_int_eq(dmio_sync_vm(1, &in, DMIO_OP_READ, rbuf, NULL), 0);
	dt = fm_now_ns() - t0;
	ck_assert_msg(dt >= 990 * 1000000ull, "a delayed read took %" PRIu64 " ns", dt);
	fm_assert_bytes_eq(rbuf, buf, 4096, "the delayed read's data");

	fl.flags |= DMIO_FAULT_DELAY_WRITES;
	ck_assert_int_eq(dmio_dev_set_fault(dev, &fl), 0);
	t0 = fm_now_ns();
	ck_assert_int_eq(dmio_sync_vm(1, &in, DMIO_OP_WRITE, buf, NULL), 0);
	dt = fm_now_ns() - t0;
	ck_assert_msg(dt >= 990 * 1000000ull, "a delayed write took %" PRIu64 " ns", dt);
	ck_assert_int_eq(dmio_dev_set_fault(dev, NULL), 0);
	dmio_dev_close(dev);
	free(buf);
	free(rbuf);
}
END_TEST

/*----------------------------------------------------------------*/
/* A loop's object cache (dmio_loop_cache_get/put) */

static void *cache_put_elsewhere(void *arg)
{
	/* Not the loop's owner: nothing is kept. */
	return (void *)(uintptr_t)dmio_loop_cache_put(64, arg);
}

START_TEST(test_loop_object_cache)
{
	struct dmio_loop *l;
	void *a = malloc(64), *b = malloc(64), *c, *kept[256];
	pthread_t t;
	void *res;

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	/* No loop on this thread: no cache. */
	ck_assert(!dmio_loop_cache_put(64, a));
	ck_assert_ptr_null(dmio_loop_cache_get(64));

	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	ck_assert_ptr_null(dmio_loop_cache_get(64));
	ck_assert(dmio_loop_cache_put(64, a));
	ck_assert(dmio_loop_cache_put(64, b));
	ck_assert_ptr_null(dmio_loop_cache_get(48));    /* another size */
	ck_assert_ptr_eq(dmio_loop_cache_get(64), b);   /* last in, first out */
	ck_assert_ptr_eq(dmio_loop_cache_get(64), a);
	ck_assert_ptr_null(dmio_loop_cache_get(64));
	ck_assert(!dmio_loop_cache_put(sizeof(void *) - 1, a)); /* no room for a link */

	/* Another thread's put keeps nothing on this loop. */
	ck_assert_int_eq(pthread_create(&t, NULL, cache_put_elsewhere, a), 0);
	ck_assert_int_eq(pthread_join(t, &res), 0);
	ck_assert(!(uintptr_t)res);
	ck_assert_ptr_null(dmio_loop_cache_get(64));

	/* At most 256 blocks of a size. */
	for (unsigned i = 0; i < 256; i++) {
		kept[i] = malloc(32);
		ck_assert_ptr_nonnull(kept[i]);
		ck_assert(dmio_loop_cache_put(32, kept[i]));
	}
	c = malloc(32);
	ck_assert(!dmio_loop_cache_put(32, c));
	free(c);
	/* At most 8 sizes (32 and 64 are two). */
	for (size_t size = 100; size < 106; size++) {
		c = malloc(size);
		ck_assert(dmio_loop_cache_put(size, c));
	}
	c = malloc(200);
	ck_assert(!dmio_loop_cache_put(200, c));
	free(c);
	ck_assert_ptr_eq(dmio_loop_cache_get(32), kept[255]);
	free(kept[255]);

	/* What is left (a, b, 255 + 6 blocks) is freed with the loop:
	 * valgrind and ASan would report a leak. */
	ck_assert(dmio_loop_cache_put(64, a));
	ck_assert(dmio_loop_cache_put(64, b));
	dmio_loop_destroy(l);
	/* And the thread has no cache again. */
	ck_assert_ptr_null(dmio_loop_cache_get(64));
}
END_TEST

/*----------------------------------------------------------------*/
/*----------------------------------------------------------------*/
/* The suite */

static Suite *dmio_conc_suite(void)
{
	Suite *s = suite_create("dmio_conc");
	TCase *tc;

	tc = tc_add(s, "loop", tc_shm_setup, tc_shm_teardown, fx_setup, fx_teardown);
	tcase_add_test(tc, test_loop_run_to_completion);
	tcase_add_test(tc, test_loop_fan);
	tcase_add_test(tc, test_loop_submit_with_wait);
	tcase_add_test(tc, test_loop_prompt_early);
	tcase_add_test(tc, test_loop_peek);
	tcase_add_test(tc, test_loop_iowq_cpus);
	tcase_add_test(tc, test_loop_object_cache);
	tcase_add_test(tc, test_fault_delay_writes);
	tcase_add_test(tc, test_fault_delay_reads);

	tc = tc_add(s, "concurrency", tc_dir_setup, tc_dir_teardown, fx_setup, fx_teardown);
	tcase_add_loop_test(tc, test_conc_mixed, 0, 3);
	tcase_add_test(tc, test_conc_chained_callbacks);
	tcase_add_test(tc, test_conc_callback_fanout);
	tcase_add_test(tc, test_conc_sync_in_callback_edeadlk);
	return s;
}

int main(void)
{
	fprintf(stderr, "test_dmio_conc: base seed %#" PRIx64 " (set FM_TEST_SEED to change)%s\n",
		fm_test_base_seed(), fm_test_under_valgrind() ? ", under valgrind" : "");
	return fm_test_main(dmio_conc_suite());
}
