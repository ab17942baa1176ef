/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the dmio engine, written from its contract,
 * include/fusemirror/dmio.h (not from its source).
 *
 * This header and dmio_fx.c are the fixtures every test_dmio_*.c shares
 * (one executable and one Suite per subject, one TCase per behaviour).
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
#ifndef DMIO_FX_H
#define DMIO_FX_H

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

extern const char *const mem_names[];

extern char *tc_dir;            /* temporary directory of the running TCase */
extern char *tc_shm_dir;        /* the same on tmpfs (/dev/shm), discard TCase */

#define TC_NLOOPS 3
extern struct fm_test_loop tc_loops[TC_NLOOPS];
extern const uint64_t tc_loop_sizes[TC_NLOOPS];

void tc_dir_setup(void);

void tc_dir_teardown(void);

void tc_shm_setup(void);

void tc_shm_teardown(void);

int tc_loops_detach(char **ret_msg);

/* Three loop devices with 4096-byte logical sectors and direct I/O, over
 * files in this TCase's directory.  Whatever happens, they are detached in
 * tc_loop_teardown() (or here, when setup fails half way). */
void tc_loop_setup(void);

void tc_loop_teardown(void);

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

struct dmio_fx_state {
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
};
extern struct dmio_fx_state fx;

/*
 * Watchdog for calls that block inside dmio (sync I/O, shutdown): a call
 * that has not returned after FX_WAIT_SECONDS aborts the test with a message
 * naming it, instead of waiting for check's timeout (which CK_FORK=no does
 * not even have).
 */
struct dmio_wd_state {
	struct fm_test_sync sync;       /* guards the fields below */
	pthread_t thread;
	bool stop;
	const char *what;               /* the call being watched, or NULL */
	gint64 deadline;
};
extern struct dmio_wd_state wd;

void *wd_main(void *arg);

void wd_start(void);

void wd_stop(void);

void wd_arm(const char *what);

void wd_disarm(void);

/* dmio_engine_shutdown() under the watchdog. */
void fx_shutdown(void);

void fx_mem_free(gpointer p);

void fx_setup(void);

void fx_teardown(void);

#define SPLIT_MAX_IO 16384u

void fx_split_setup(void);

void fx_seed(const char *name, int i);

/* A buffer freed in teardown. */
uint8_t *fx_buf(size_t len);

uint8_t *fx_random_buf(size_t len);

unsigned fx_add_file_in(const char *dir, uint64_t size, unsigned flags);

/* A fresh regular file of @size random bytes in the TCase directory. */
unsigned fx_add_file(uint64_t size, unsigned flags);

/* A loop device of the TCase, filled with fresh random bytes. */
unsigned fx_add_blockdev(const char *path, unsigned flags);

struct dmio_dev *fx_dev(unsigned idx);

struct dmio_region fx_region(unsigned idx, uint64_t sector, uint64_t count);

unsigned fx_idx_of(const struct dmio_dev *dev);

/* The model after a successful write of @data to @r (its first count*512 bytes). */
void fx_model_write(const struct dmio_region *r, const void *data);

void fx_model_zero(const struct dmio_region *r);

/* Read the file (device) through a separate fd into a fixture buffer. */
uint8_t *fx_read_back(unsigned idx);

/* Compare a whole backing file (device) with its model. */
void fx_verify(unsigned idx);

void fx_verify_all(void);

struct fx_mem *fx_mem_new(enum dmio_mem_type type, size_t len);

/* An allocation of @total bytes (aligned to @align, all guard bytes) whose
 * [data_off, data_off + data_len) is handed to dmio. */
uint8_t *fx_mem_chunk(struct fx_mem *m, size_t align, size_t total, size_t data_off,
			     size_t data_len);

/* A page list of separately allocated pages, @offset bytes into the first. */
struct fx_mem *fx_mem_pl(size_t len, unsigned offset);

/* Split @units into @n random parts of at least one unit each. */
void fx_split_units(size_t units, unsigned n, size_t *parts);

/*
 * An iovec array of @iovcnt separately allocated buffers.  Aligned (@odd
 * false): lengths are multiples of @unit and bases 4096-aligned.  Odd:
 * lengths of any size (>= 1 byte) at addresses 1..511 bytes past alignment.
 */
struct fx_mem *fx_mem_bvec(size_t len, unsigned iovcnt, bool odd, size_t unit);

/* One buffer, @misalign bytes past a 4096-byte boundary. */
struct fx_mem *fx_mem_vm(size_t len, size_t misalign);

/* Memory of @type for @len bytes, aligned for O_DIRECT with 512-byte
 * sectors, of a random shape (page offset, number of iovecs). */
struct fx_mem *fx_mem_random(enum dmio_mem_type type, size_t len);

/* Memory of @type with every segment 4096-aligned in address and length
 * (@len a multiple of 4096): what no device needs to bounce. */
struct fx_mem *fx_mem_aligned(enum dmio_mem_type type, size_t len);

/* Walk the data segments of @m in order. */
typedef void (*fx_seg_fn)(uint8_t *seg, size_t n, size_t pos, void *arg);

void fx_mem_walk(struct fx_mem *m, fx_seg_fn fn, void *arg);

void fx_seg_fill(uint8_t *seg, size_t n, size_t pos, void *arg);

void fx_seg_gather(uint8_t *seg, size_t n, size_t pos, void *arg);

void fx_mem_fill(struct fx_mem *m, const void *src);

/* The data bytes of @m, gathered into a fixture buffer. */
uint8_t *fx_mem_gather(struct fx_mem *m);

/* Offset of the first byte in [from, to) of @p that is not @v, or -1. */
ssize_t fx_first_not(const uint8_t *p, size_t from, size_t to, uint8_t v);

/*
 * The bytes around the data of @m must still be guard bytes.  (Loops find
 * the culprit first and assert once: every passing ck_assert costs a
 * message to check's parent.)
 */
void fx_mem_check_guards(struct fx_mem *m, const char *what);

struct dmio_memory fx_mem_dmio(const struct fx_mem *m);

enum fx_api {
	FX_API_SEED, /* dmio_sync/_async, _bvec, _vm */
	FX_API_DMIO, /* dmio() with struct dmio_request */
};

struct fx_cb *fx_cb_new(void);

void fx_cb_signal(void);

/* The completion callback of every tracked request: record, never assert. */
void fx_cb_fn(unsigned long error_bits, void *context);

/*
 * Submit one request, without asserting (safe in a callback).  @where and
 * the iovec array are passed as heap copies that are scribbled over and
 * freed as soon as the call returns (the header lets the caller reuse them
 * at once: ASan sees it if the engine keeps them), and so is the request.
 * @fn NULL: synchronous.
 */
int fx_raw_submit(enum fx_api api, enum dmio_op op, unsigned flags, struct fx_mem *m,
			 struct dmio_client *client, unsigned n, const struct dmio_region *where,
			 dmio_notify_fn fn, void *ctx, unsigned long *bits);

struct fx_io {
	enum fx_api api;
	bool async;
	enum dmio_op op;
	unsigned flags;
	struct fx_mem *mem;             /* READ and WRITE */
	struct dmio_client *client;
};

/* Wait (bounded) until @cb has run at least once. */
void fx_wait_cb(struct fx_cb *cb);

/* Wait (bounded) until @n tracked callbacks have run in all. */
void fx_wait_done(unsigned n);

/*
 * Issue one request from the test thread and wait for it.  Returns what a
 * synchronous call returns (0, -EIO, -errno) and the error bits in
 * *ret_bits (a sync call's *error_bits as filled in; an async call's
 * callback argument).  An async submission that fails returns its -errno
 * and leaves *ret_bits alone.
 */
int fx_do(const struct fx_io *io, unsigned n, const struct dmio_region *where,
		 unsigned long *ret_bits);

/* Submit async from the test thread without waiting; returns the rc. */
int fx_submit_async(const struct fx_io *io, unsigned n, const struct dmio_region *where,
			   struct fx_cb **ret_cb);

/*
 * End of a test's I/O: wait for every accepted request, shut the engine
 * down (which waits for everything in flight), then check that each
 * tracked callback ran exactly once (never for a rejected request).
 */
void fx_finish(void);

struct dmio_stats fx_stats(void);

const char *op_name(enum dmio_op op);

/* Write @data to @n regions and check success; then update the model. */
void fx_write_ok(const struct fx_io *io_in, unsigned n, const struct dmio_region *where,
			const void *data, const char *what);

/* Read @r (one region) into fresh memory of @type and compare with @want. */
void fx_read_check(const struct fx_io *io_in, struct fx_mem *m,
			  const struct dmio_region *r, const void *want, const char *what);

/* The model's bytes of @r. */
const uint8_t *fx_model_at(const struct dmio_region *r);

/* An fx_io for iteration @i of a loop test: sync/async and API alternate. */
struct fx_io fx_io_for(unsigned i, struct fx_mem *m);

void fx_check_bounced(const struct dmio_stats *st0, bool want, const char *what);

void fx_zero_op(enum dmio_op op, bool async, unsigned n, const struct dmio_region *where,
		       const char *what);

void fx_check_zeroes_read_back(const struct dmio_region *r, bool async);

/* A TCase with its unchecked (per TCase) and checked (per test) fixtures,
 * added to @s. */
TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
		     void (*unchecked_teardown)(void), void (*setup)(void),
		     void (*teardown)(void));

#endif /* DMIO_FX_H */
