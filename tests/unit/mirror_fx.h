/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the mirror target, written from its contract,
 * include/fusemirror/mirror.h, and the on-disk format of superblock.h.
 *
 * This header and mirror_fx.c are the fixtures every test_mirror_*.c
 * shares: one executable and one Suite per subject (assemble: format,
 * assemble, degraded; io: io, read-policy, ordering, zeroes, bufio;
 * resilience: read-errors, write-errors, resilience), one TCase per
 * behaviour.
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
 * shuts the engine down and removes the files.  It also records, through a
 * log hook, every message logged above debug level, and fails the test if
 * there was one: the library layers report events instead (event.h).
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
#ifndef MIRROR_FX_H
#define MIRROR_FX_H

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

extern char *tc_dir;
extern char *tc_tmpfs;          /* a 2 MiB tmpfs mounted in tc_dir, or NULL */

void tc_dir_setup(void);

void tc_dir_teardown(void);

void tc_tmpfs_setup(void);

void tc_tmpfs_teardown(void);

/* One request handed to mirror_submit(). */
struct io {
	int err;
	unsigned calls;         /* end_io calls */
};

struct mirror_fx_state {
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
};
extern struct mirror_fx_state fx;

void fx_lock(void);

void fx_unlock(void);

/* Wait for fx.cond until @deadline (g_get_monotonic_time() units); false
 * on timeout. */
bool fx_cond_wait_until(gint64 deadline);

void setup(void);

void teardown(void);

#define FX_SEED() fm_rng_seed(&fx.rng, fm_test_seed_for(__func__, _i))

char *G_GNUC_PRINTF(1, 2) fx_path(const char *fmt, ...);

/* Aligned memory that lives until teardown (after the engine drained). */
uint8_t *fx_buf(size_t len);

/* Fill a new file of @size bytes with random bytes, but leave the first
 * and last 256 KiB zero, so that no signature turns up by chance. */
void make_random_file(const char *path, uint64_t size);

void copy_file(const char *from, const char *to);

void truncate_file(const char *path, uint64_t size);

/* A 16 MiB file holding an ext4 file system. */
void make_ext4_file(const char *path);

/* "<size> <sha256>" of @path, or "absent".  g_free. */
char *file_digest(const char *path);

/* Contents of a set of files, to show that a refused call wrote nothing. */
struct snap {
	unsigned n;
	char *path[FM_SB_MAX_LEGS + 4];
	char *digest[FM_SB_MAX_LEGS + 4];
};

void snap_add(struct snap *s, const char *path);

/* Assert that nothing changed; frees @s. */
void snap_check(struct snap *s, const char *what);

void read_sb(const char *path, struct fm_sb *sb);

/* Make @sb look written at @events: its assembly records cannot be newer. */
void sb_set_events(struct fm_sb *sb, uint64_t events);

/* Write @sb (hand-edited) to @path's superblock with fm_sb_write(). */
void write_sb(const char *path, struct fm_sb *sb);

/* Write @sb with fm_sb_encode() through a plain fd: for superblocks that
 * fm_sb_write() would refuse and for exact control of every byte. */
void write_sb_raw(const char *path, const struct fm_sb *sb);

bool file_range_is_zero(const char *path, uint64_t off, uint64_t len);

uint64_t file_allocated(const char *path);

/*
 * Check the superblocks of freshly formatted legs @paths[0..n): one array
 * (@uuid), distinct leg uuids, each its own slot of an identical leg table,
 * CLEAN, the given geometry, and bitmap and data area reading as zeroes.
 */
void check_formatted(char *const *paths, unsigned n, const uint8_t uuid[16],
			    uint64_t image_size, uint64_t region_size, uint32_t block_size,
			    const char *name, struct fm_sb *ret_sb0);

/* fx.legs[0..n) = fx.dir/leg<i>. */
void fx_name_legs(unsigned n);

/* Format fx.legs as a new array with @o (o->size: its image size; the
 * model is all zeroes); sets fx.data_offset. */
void fx_format_opts(const struct mirror_format_opts *o);

/* Format fx.legs as a new array of @size bytes; sets fx.data_offset. */
void fx_format(uint64_t size);

struct mirror *assemble_ok(char *const *paths, unsigned n,
				  enum mirror_read_policy policy, bool readonly);

void fx_assemble(enum mirror_read_policy policy, bool readonly);

void io_done(void *ctx, int err);

/* mirror_submit() with tracking; any thread. */
int fx_submit(struct mirror *m, enum mirror_op op, uint64_t sector,
		     const struct iovec *iov, unsigned iovcnt, unsigned flags, struct io **ret_io);

/* Wait for @io's completion; returns its error. */
int io_wait(struct io *io);

/* Wait until every accepted request completed. */
void fx_wait_all(void);

/*
 * Wait for everything, stop the mirror (expecting @want), drain the engine,
 * then check that every accepted request completed exactly once and no
 * refused one ever completed.
 */
void fx_stop(int want);

/* One request of @len bytes at image byte @off, waited for. */
int fx_rw(enum mirror_op op, uint64_t off, void *buf, size_t len, unsigned flags);

/* Write random data at @off (model updated). */
void fx_write_random(uint64_t off, size_t len);

/* Every leg file holds the model in [@off, @off + @len) of the image. */
void fx_check_legs(uint64_t off, uint64_t len);

/* Reading [@off, @off + @len) through the mirror returns the model. */
void fx_check_read(uint64_t off, size_t len);

void leg_stats(unsigned leg, struct mirror_leg_stats *s);

void stats(struct mirror_stats *s);

/* Assert that @err is set in FM_MIRROR_ERROR with code -@r and that its
 * message holds each of the NULL-terminated substrings; frees it. */
void check_error(GError *err, int r, const char *what, ...);

#define REGION (1 * MiB)

/* Format fx.legs with 1 MiB regions (IMG / REGION bitmap bits). */
void fx_format_regions(void);

/* What fx_scribble_legs() writes. */
#define FX_OLD_BYTE 0xa5

/* Overwrite image bytes [@off, +@len) of every leg file with FX_OLD_BYTE
 * behind the mirror's back (fx.data_offset must be set): a used disk's old
 * bytes, which a read that touches a leg there cannot mistake for zeroes. */
void fx_scribble_legs(uint64_t off, size_t len);

/* Reads issued on all of fx.legs since assembly, and their bytes. */
uint64_t fx_leg_reads(void);
uint64_t fx_leg_read_bytes(void);

void fx_assemble_opts(const struct mirror_opts *o);

/* Two legs with 1 MiB regions (fx_format_regions()), assembled with @o,
 * the whole image written with random bytes of the test's seed (call
 * FX_SEED() first). */
void fx_start_written(const struct mirror_opts *o);

/* Wait until no resync/recovery/scrub runs; returns the status then. */
void wait_sync_idle(struct mirror_status *ms);

void admin_ok(int r, GError *err, const char *what);

/* Events: a handler that records what the mirror reports */

/* What the handler saw, in order. */
struct ev_rec {
	enum fm_event_type type;
	int leg;
	uint64_t value;
	int err;
	uint64_t read_bytes, write_bytes;
	char path[256];
	bool uuid_set;
};

struct mirror_evs_state {
	pthread_mutex_t lock;           /* guards the fields below */
	struct ev_rec ev[64];
	unsigned n, dropped;
	atomic_int inside;              /* handlers running now */
	atomic_bool overlapped;         /* two ran at once */
};
extern struct mirror_evs_state evs;

void ev_handler(void *ctx, const struct fm_event *ev);

void ev_reset(void);

/* The events seen since ev_reset() are exactly @want (names, with the leg
 * slot after a colon: "Fail:1"). */
void ev_expect(const char *const *want, unsigned nwant, const char *when);

const struct ev_rec *ev_at(unsigned i);

/*
 * Fork a child that assembles fx.legs (with @o), writes @len bytes of
 * @data at image byte @off with FUA (durable on every leg), and dies once
 * the write is done, without mirror_stop(): a daemon killed with -9.
 */
void crash_after_write(const struct mirror_opts *o, const uint8_t *data,
		       uint64_t off, size_t len);

/* Every read policy (loop tests over it). */
extern const enum mirror_read_policy policies[3];

/* A TCase with the unchecked (per TCase) fixtures given and the checked
 * (per test) setup/teardown, added to @s. */
TCase *tc_add(Suite *s, const char *name, void (*unchecked_setup)(void),
		     void (*unchecked_teardown)(void));

#endif /* MIRROR_FX_H */
