/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE front (see include/fusemirror/front.h).
 *
 * Invariants:
 *   - The image's size never changes; every request is clamped to it.
 *   - A read of one block holds its cache buffer from its arrival until the
 *     reply is written from it.  A read of more blocks copies each into its
 *     reply as it arrives and releases it then: a worker waiting for a
 *     buffer must hold none that only it can release (bufio's rule), or
 *     readers that each hold part of a small cache wait for one another
 *     for ever.  The reply is sent by whichever thread delivers the last
 *     block (a worker on a cache hit, a reaper on a miss).
 *   - `inflight` counts requests answered asynchronously; front_destroy()
 *     waits for it to reach zero before the session is freed, so no reply
 *     is ever written to a dead session.
 *   - A worker holds at most one cache buffer at a time while writing (the
 *     bufio deadlock rule for threads other than the reserve holder).
 *   - Reads and writes of at least FRONT_AROUND_MIN whole blocks go around
 *     the cache (bufio_read_around/bufio_write_around: streaming I/O is
 *     neither copied into nor kept in the cache); a read-around copies the
 *     blocks the cache holds, a write-around happens unless one of its
 *     blocks is dirty or busy.  A write-around is synchronous (the
 *     request's buffer is the worker's), a read-around is answered from
 *     its completion.
 *   - On a loop or io_uring queue thread every read goes around the
 *     cache: a miss through it cost a cache block (zeroed when first
 *     touched: on the test VM a 2 MiB clear took ~4 ms), a copy into it,
 *     an index entry and its eviction later, for a block the client's own
 *     page cache (or none: O_DIRECT) keeps if it wants it again; on legs in
 *     memory (tmpfs, ramfs) such a leg is a cache already.  Blocks the
 *     cache holds (dirty ones above all) are copied from it by the
 *     read-around, so reads see every write.  When every leg is in memory
 *     (decided at mount), likewise every whole block of a
 *     write there goes around the cache (unless one of them is dirty or
 *     busy), at any queue depth: two copies into the legs' page cache
 *     cost less than a cache buffer, a copy into it, an index entry and
 *     the writeback of the same two copies later, which the small cache
 *     of such legs (32 MiB by default) makes on the loop anyway, under
 *     pressure, a block or two at a time.
 *   - On a /dev/fuse loop, with every leg in memory, a read none of whose
 *     blocks is dirty or being written in the cache is answered from the
 *     leg's mapping (see "Mapped replies"): its loan is held until the
 *     reply's write returns (or, on the ring, completes), nothing else.
 *     Where the mapping refuses (a hole), a read of at least
 *     FRONT_AROUND_MIN whole blocks is answered by splice (see "Spliced
 *     replies"), synchronously inside its handler; the loop's pipe is
 *     empty between requests.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>
#include <sys/ioctl.h>

#include <fuse_lowlevel.h>
#include <liburing.h>

#include "fusemirror/dmio.h"

#include "fusemirror/common.h"
#include "fusemirror/front.h"
#include "fuse_uring.h"

/*
 * The kernel's reply to FUSE_OPEN (struct fuse_open_out in <linux/fuse.h>).
 * libfuse 3.14's fuse_reply_open() cannot set FOPEN_PARALLEL_DIRECT_WRITES
 * (kernel >= 6.2: direct writes to one file need not be serialised on the
 * inode lock), so open is answered with this structure directly.
 */
struct fm_fuse_open_out {
	uint64_t fh;
	uint32_t open_flags;
	uint32_t padding;
};
#define FM_FOPEN_DIRECT_IO              (1u << 0)
#define FM_FOPEN_PARALLEL_DIRECT_WRITES (1u << 6)

#define IMAGE_INO 2
#define ATTR_TIMEOUT 3600.0     /* the size and the file never change */
/* Reads and writes of at least this many bytes of whole blocks go around
 * the cache when none of their blocks is cached. */
#define FRONT_AROUND_MIN (128u << 10)
/* A small read-around's buffer on a /dev/fuse loop (loop_small_get()). */
#define FRONT_SMALL_BUF 8192u

struct front {
	struct fuse_session *se;
	struct mirror *m;
	struct bufio_client *c;
	char *mountpoint;
	char *name;
	char *image_path;
	bool file_mount;                /* mounted over a regular file */
	bool readonly;
	bool writethrough;
	bool legs_in_memory;            /* mirror_legs_in_memory() at mount */
	bool mounted;
	unsigned signals_set;           /* bits: front_stop_signals[] ours */
	bool sigpipe_set;               /* we ignore SIGPIPE */
	bool kick_ok;                   /* FRONT_LOOP_KICK_SIG has its handler */
	/* Loop 0's kick timer, for the stop signals' handler
	 * (front_signal_handler()), while sig_timer_set. */
	timer_t sig_timer;
	atomic_bool sig_timer_set;
	unsigned max_threads;
	unsigned max_background;
	uint64_t size;
	unsigned bs;                    /* cache block size */

	pthread_mutex_t attr_lock;      /* guards the attributes below */
	mode_t mode;                    /* permission bits of the image */
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;

	/*
	 * Changes to one cache block are serialised: a write copies into the
	 * block between bufio_begin_modify() and the mark-dirty, and two
	 * writes into one block (overlapping, or neighbouring sectors) must not
	 * interleave their copies.  Blocks hash onto a fixed set of locks; a
	 * holder may wait for I/O (a read-modify-write), never for another
	 * stripe, and completions never take one, so they cannot deadlock.
	 */
	pthread_mutex_t modify_lock[64];

	enum front_transport transport; /* DEV or URING */
	char *transport_reason;
	char *splice_note;              /* see front_splice_note() */
	struct front_uring *uring;      /* the queues, with URING */
	unsigned uring_depth;

	atomic_long inflight;
	atomic_ullong reads, writes, fsyncs, flushes, fallocates, read_bytes, write_bytes, errors;

	/* Event loops (front_opts.event_loop; see "Event loops" below). */
	bool event_loop;
	atomic_bool stopping;           /* loops: read no more requests */
	atomic_bool inited;             /* op_init() ran: loops may serve
					 * reads and writes (loop_serve()) */
	atomic_flag stop_reason_set;    /* stop_reason written (once) */
	char stop_reason[160];          /* why serving stopped by itself */
	unsigned nr_loops;
	unsigned nr_active;             /* loops 0..nr_active-1 always poll; the
					 * rest are standby loops (loop_standby()) */
	atomic_bool standby_on;         /* standby loops poll too */
	struct front_loop *loops;
	/* Guards every loop's kick_tid (a loop blocked in read() is sent
	 * its kick at once when serving stops: front_kick_loops()) and
	 * wake (front_wake_range()). */
	pthread_mutex_t kick_lock;
	GThreadPool *slow;              /* requests that may block */
	atomic_ullong handoffs;         /* requests handed to the slow pool */
	atomic_ullong spliced_reads, spliced_read_bytes; /* see read_splice() */
	atomic_ullong mapped_replies, mapped_reply_bytes; /* see read_mapped() */
	atomic_ullong ring_replies;     /* see loop_reply() */
	atomic_ullong async_replies;    /* see loop_reply_async() */
	atomic_ullong blocking_reads;   /* see loop_block() */
	atomic_ullong spun_reads;       /* read while spinning (loop_spin()) */
	atomic_ullong spin_misses;      /* windows that ended without a request */
	unsigned spin_us;               /* front_opts.spin_us */
	unsigned spin_max_ns;           /* loop_spin()'s longest window (legs in memory), 0: none */
	atomic_int spin_credit;         /* > 0: loops spin (loop_spin_adapt()) */
	atomic_uint spin_probes;        /* waits without credit (each FRONT_SPIN_PROBE-th spins) */
	atomic_uint spinner;            /* the loop spinning (idx + 1), or 0 */
	atomic_int caller;              /* the latest request's caller (loop_note_caller()) */
	atomic_ullong caller_switch_ns; /* when the caller last changed */
	atomic_ullong standby_reads;    /* read by standby loops (loop_standby()) */
	atomic_ullong ring_reads;       /* read by READs on a loop's ring */

	/* libfuse's workers: buffers of reads around the cache (a loop or a
	 * queue uses the request's own), FRONT_RBUF_SIZE bytes mapped, kept
	 * for reuse (see around_buf_get()). */
	pthread_mutex_t around_lock;    /* guards the two below */
	void *around_free[16];
	unsigned nr_around_free;
};

/* A request buffer of an event loop (see "Event loops"): max_write and
 * the request's header page. */
#define FRONT_RBUF_SIZE ((1u << 20) + 4096u)
/* The request is read this far into it, so that a WRITE's payload (behind
 * its in-header and write_in) starts on a page: an O_DIRECT leg takes a
 * write-around straight from it, with no bounce copy in dmio.  It still
 * ends inside FRONT_RBUF_SIZE: the kernel sends at most max_write (1 MiB)
 * of payload. */
#define FRONT_RBUF_REQ (FM_PAGE_SIZE - sizeof(struct fuse_in_header) - sizeof(struct fuse_write_in))
/* Behind those bytes, a page for the contexts of the request's reply
 * (read_ctx, around_read, write_ctx): a read or write on a loop allocates
 * nothing.  (On a FUSE-over-io_uring queue the entry's payload buffer and
 * scratch play these parts.) */
#define FRONT_RBUF_CTX 2048u
#define FRONT_RBUF_ALLOC (FRONT_RBUF_SIZE + 2 * FRONT_RBUF_CTX)
struct front_loop;
struct front_rbuf;
static void *front_rbuf_ctx(struct front_rbuf *b, unsigned slot);
static size_t front_rbuf_cap(const struct front_rbuf *b);
static bool front_rbuf_ends_with_reply(const struct front_rbuf *b);
static void front_req_end(struct front *f);
static bool front_on_loop(void);
static struct front_rbuf *front_hold_rbuf(void);
static void front_rbuf_unhold(struct front_rbuf *b);
static void *front_rbuf_mem(struct front_rbuf *b);
static void front_rbuf_release(struct front_rbuf *b);

/* Work an event loop must not do itself, for the slow pool's threads. */
enum front_slow_kind {
	SLOW_WRITE,             /* write_range() [off, off + size) from src, then ctx */
	SLOW_FSYNC,             /* fsync of req */
	SLOW_FALLOCATE,         /* fallocate of req: mode, [off, off + size) */
	SLOW_READ_ISSUE,        /* read ctx: issue its blocks from block off on */
};

struct front_job {
	enum front_slow_kind kind;
	fuse_req_t req;
	uint64_t off;
	size_t size;
	const uint8_t *src;
	int mode;
	void *ctx;
};
static void front_slow(struct front *f, const struct front_job *job);

#define FRONT_STAT_ADD(f, field, n) atomic_fetch_add_explicit(&(f)->field, (n), memory_order_relaxed)

static struct front *req_front(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void reply_err(struct front *f, fuse_req_t req, int err)
{
	if (err)
		FRONT_STAT_ADD(f, errors, 1);
	fuse_reply_err(req, err);
}

/*
 * Whom a read or a write answers: a libfuse request, (low bits 01) a
 * FUSE-over-io_uring entry that front_ring_handle() serves without
 * libfuse, or (low bits 10) a request an event loop read from its clone
 * of /dev/fuse and serves without libfuse (loop_serve()): its tagged
 * unique, shifted left by one.  Pointers are to aligned structures, and a
 * unique is even and below 2^63 (the kernel steps it by 2, the loop tag
 * takes bits 48-62), so the bits are free.
 */
typedef uintptr_t front_rq;
#define RQ_KIND ((uintptr_t)3)
#define RQ_RING ((uintptr_t)1)
#define RQ_LOOP ((uintptr_t)2)
_Static_assert(sizeof(front_rq) == sizeof(uint64_t), "a unique fits a front_rq");

static front_rq rq_of_req(fuse_req_t req)
{
	return (front_rq)req;
}

static front_rq rq_of_ring(struct front_uring_req *e)
{
	return (front_rq)e | RQ_RING;
}

static front_rq rq_of_loop(uint64_t tagged_unique)
{
	return (front_rq)(tagged_unique << 1) | RQ_LOOP;
}

static struct front_uring_req *rq_ring(front_rq rq)
{
	return (rq & RQ_KIND) == RQ_RING ? (struct front_uring_req *)(rq & ~RQ_KIND) : NULL;
}

static fuse_req_t rq_fuse(front_rq rq)
{
	return (rq & RQ_KIND) ? NULL : (fuse_req_t)rq;
}

static ssize_t loop_send(struct front *f, front_rq rq, int err, const void *buf, size_t len);
static bool loop_reply_async(struct front *f, front_rq rq, struct front_rbuf *hb, const void *buf,
			     size_t len);
static bool read_splice(struct front *f, front_rq req, uint64_t off, size_t size);
static bool read_mapped(struct front *f, front_rq req, uint64_t off, size_t size);

static void rq_reply_err(struct front *f, front_rq rq, int err)
{
	struct front_uring_req *e = rq_ring(rq);

	if (rq_fuse(rq)) {
		reply_err(f, rq_fuse(rq), err);
		return;
	}
	if (err)
		FRONT_STAT_ADD(f, errors, 1);
	if (e)
		front_uring_reply(e, err, NULL, 0);
	else
		loop_send(f, rq, err, NULL, 0);
}

static void rq_reply_buf(struct front *f, front_rq rq, const void *buf, size_t len)
{
	struct front_uring_req *e = rq_ring(rq);

	if (e)
		front_uring_reply(e, 0, buf, len);
	else if (rq_fuse(rq))
		fuse_reply_buf(rq_fuse(rq), buf, len);
	else
		loop_send(f, rq, 0, buf, len);
}

/* Set while a large write's reply is sent: loop_reply() leaves it to
 * writev(), at once (see "Replies on the ring"). */
static __thread bool tl_reply_now;

static void rq_reply_write(struct front *f, front_rq rq, size_t count)
{
	struct front_uring_req *e = rq_ring(rq);

	if (e) {
		front_uring_reply_write(e, (uint32_t)count);
		return;
	}
	tl_reply_now = count >= FRONT_AROUND_MIN;
	if (rq_fuse(rq)) {
		fuse_reply_write(rq_fuse(rq), count);
	} else {
		struct fuse_write_out out = { .size = (uint32_t)count };

		loop_send(f, rq, 0, &out, sizeof(out));
	}
	tl_reply_now = false;
}

static fuse_ino_t image_ino(const struct front *f)
{
	return f->file_mount ? FUSE_ROOT_ID : IMAGE_INO;
}

static void fill_attr(struct front *f, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	pthread_mutex_lock(&f->attr_lock);
	st->st_uid = f->uid;
	st->st_gid = f->gid;
	st->st_atim = f->atime;
	st->st_mtim = f->mtime;
	st->st_ctim = f->ctime;
	if (ino == image_ino(f)) {
		st->st_mode = S_IFREG | f->mode;
		st->st_nlink = 1;
		st->st_size = (off_t)f->size;
		st->st_blksize = f->bs;
		st->st_blocks = (blkcnt_t)(f->size / 512);
	} else {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_blksize = f->bs;
	}
	pthread_mutex_unlock(&f->attr_lock);
}

/*----------------------------------------------------------------*/
/* Session and metadata */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct front *f = userdata;

	conn->max_write = FRONT_MAX_IO;
	conn->max_read = 0;
	conn->max_readahead = 0;
	conn->max_background = f->max_background;
	conn->congestion_threshold = f->max_background * 3 / 4;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	/* Never the kernel's writeback cache: the daemon's cache is the only
	 * one, and a page cache under memory pressure that needs this daemon
	 * to make progress is a deadlock. */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE);
	conn->time_gran = 1;
	fm_debug("front: FUSE %u.%u, max_write %u, max_background %u",
		 conn->proto_major, conn->proto_minor, conn->max_write, conn->max_background);
	/* (Every kernel with clones speaks 7.9+: a WRITE's data follows
	 * struct fuse_write_in, as loop_serve() takes it.) */
	atomic_store_explicit(&f->inited, true, memory_order_release);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct front *f = req_front(req);
	struct fuse_entry_param e = { 0 };

	if (f->file_mount) {
		reply_err(f, req, ENOTDIR);
		return;
	}
	if (parent != FUSE_ROOT_ID || strcmp(name, f->name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	e.ino = IMAGE_INO;
	e.attr_timeout = ATTR_TIMEOUT;
	e.entry_timeout = ATTR_TIMEOUT;
	fill_attr(f, IMAGE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static bool known_ino(const struct front *f, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID || (!f->file_mount && ino == IMAGE_INO);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct front *f = req_front(req);
	struct stat st;

	(void)fi;
	if (!known_ino(f, ino)) {
		reply_err(f, req, ENOENT);
		return;
	}
	fill_attr(f, ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct front *f = req_front(req);
	struct timespec now;
	struct stat st;

	(void)fi;
	if (!known_ino(f, ino)) {
		reply_err(f, req, ENOENT);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) &&
	    (ino != image_ino(f) || (uint64_t)attr->st_size != f->size)) {
		/* The image has the size of the array: it cannot shrink or grow. */
		reply_err(f, req, EPERM);
		return;
	}
	if (f->readonly && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
				      FUSE_SET_ATTR_GID))) {
		reply_err(f, req, EROFS);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&f->attr_lock);
	if ((to_set & FUSE_SET_ATTR_MODE) && ino == image_ino(f))
		f->mode = attr->st_mode & 07777;
	if (to_set & FUSE_SET_ATTR_UID)
		f->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		f->gid = attr->st_gid;
	if (to_set & FUSE_SET_ATTR_ATIME)
		f->atime = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		f->atime = now;
	if (to_set & FUSE_SET_ATTR_MTIME)
		f->mtime = attr->st_mtim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		f->mtime = now;
	f->ctime = now;
	pthread_mutex_unlock(&f->attr_lock);
	fill_attr(f, ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct front *f = req_front(req);
	const char *names[3] = { ".", "..", f->name };
	fuse_ino_t inos[3] = { FUSE_ROOT_ID, FUSE_ROOT_ID, IMAGE_INO };
	char *buf;
	size_t used = 0;

	(void)fi;
	if (f->file_mount || ino != FUSE_ROOT_ID) {
		reply_err(f, req, ENOTDIR);
		return;
	}
	buf = calloc(1, size ? size : 1);
	if (!buf) {
		reply_err(f, req, ENOMEM);
		return;
	}
	for (off_t i = off; i < 3; i++) {
		struct stat st = { .st_ino = inos[i],
				   .st_mode = i == 2 ? S_IFREG : S_IFDIR };
		size_t need = fuse_add_direntry(req, buf + used, size - used, names[i],
						&st, i + 1);

		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct front *f = req_front(req);
	struct fm_fuse_open_out out = { 0 };

	if (ino != image_ino(f)) {
		reply_err(f, req, known_ino(f, ino) ? EISDIR : ENOENT);
		return;
	}
	if (f->readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
		reply_err(f, req, EROFS);
		return;
	}
	/* O_TRUNC is ignored, as a block device ignores it (man page,
	 * DESCRIPTION).  direct_io: the daemon's cache is the only cache. */
	out.open_flags = FM_FOPEN_DIRECT_IO | FM_FOPEN_PARALLEL_DIRECT_WRITES;
	fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct front *f = req_front(req);
	struct statvfs st = { 0 };

	(void)ino;
	/* A loop device takes its discard granularity from here. */
	st.f_bsize = f->bs;
	st.f_frsize = f->bs;
	st.f_blocks = f->size / f->bs;
	st.f_files = f->file_mount ? 1 : 2;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

/*----------------------------------------------------------------*/
/* Reads: answered when the last block arrives */

struct read_ctx {
	front_rq req;
	struct front *f;
	uint64_t off;
	size_t size;
	uint64_t b0;
	atomic_uint pending;            /* blocks outstanding + 1 while issuing */
	atomic_int err;
	struct bufio_buffer *buf;       /* n == 1: the block, held */
	uint8_t *data;                  /* n > 1: the reply, filled as blocks arrive */
	struct front_rbuf *hb;          /* on a loop: the held request buffer,
					   which holds this and data */
	struct front_loop *pool;        /* else: from this loop's rctx[] */
	struct read_ctx *next;          /* its free list / returned stack */
};

static struct read_ctx *loop_rctx_get(void);
static void read_ctx_free(struct read_ctx *rc);
static struct around_read *loop_small_get(void **ret_buf);

static void read_finish(struct read_ctx *rc)
{
	/* @rc may live in the request's buffer, which the reply may end
	 * (io_uring): nothing of it is read after the reply. */
	struct front *f = rc->f;
	struct bufio_buffer *buf = rc->buf;
	struct front_rbuf *hb = rc->hb;
	bool hb_release = hb && !front_rbuf_ends_with_reply(hb);
	uint8_t *data = rc->data;
	int err = atomic_load(&rc->err);

	if (err) {
		rq_reply_err(f, rc->req, -err);
	} else {
		const uint8_t *src = data;
		size_t size = rc->size;

		if (!src)
			src = (const uint8_t *)bufio_get_block_data(buf) + (rc->off - rc->b0 * f->bs);
		rq_reply_buf(f, rc->req, src, size);
		FRONT_STAT_ADD(f, read_bytes, size);
	}
	if (buf)
		bufio_release(buf);
	if (hb) {
		/* Last: the buffer may be reused at once. */
		if (hb_release)
			front_rbuf_release(hb);
	} else {
		read_ctx_free(rc);
	}
	front_req_end(f);
}

static void read_block_done(void *ctx, struct bufio_buffer *b, int err)
{
	struct read_ctx *rc = ctx;

	if (!b) {
		atomic_store(&rc->err, err ? err : -EIO);
	} else if (!rc->data) {
		rc->buf = b;
	} else {
		/* The part of block @blk inside [off, off + size). */
		uint64_t bs = rc->f->bs, blk = bufio_get_block_number(b);
		uint64_t start = blk * bs > rc->off ? blk * bs : rc->off;
		uint64_t end = (blk + 1) * bs < rc->off + rc->size ? (blk + 1) * bs :
								     rc->off + rc->size;

		memcpy(rc->data + (start - rc->off),
		       (const uint8_t *)bufio_get_block_data(b) + (start - blk * bs), end - start);
		bufio_release(b);
	}
	if (atomic_fetch_sub(&rc->pending, 1) == 1)
		read_finish(rc);
}

/*
 * A workers' read-around buffer of @len bytes, page aligned; NULL without
 * memory.  Mapped, not malloc()ed: freed 1 MiB blocks stayed in glibc's
 * heap (its mmap threshold rises past them once one is freed), fragmented
 * by the small allocations between them: peak RSS 570 MiB for a 482 MiB
 * cache after 1 MiB QD8 reads, 41 MiB of it such heap.  Up to
 * FM_ARRAY_SIZE(f->around_free) buffers of FRONT_RBUF_SIZE (any read up
 * to max_write) are kept for the next reads; others are unmapped.
 */
static void *around_buf_get(struct front *f, size_t len)
{
	void *p = NULL;

	if (len <= FRONT_RBUF_SIZE) {
		pthread_mutex_lock(&f->around_lock);
		if (f->nr_around_free)
			p = f->around_free[--f->nr_around_free];
		pthread_mutex_unlock(&f->around_lock);
		if (p)
			return p;
		len = FRONT_RBUF_SIZE;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void around_buf_put(struct front *f, void *p, size_t len)
{
	if (len <= FRONT_RBUF_SIZE) {
		pthread_mutex_lock(&f->around_lock);
		if (f->nr_around_free < FM_ARRAY_SIZE(f->around_free)) {
			f->around_free[f->nr_around_free++] = p;
			p = NULL;
		}
		pthread_mutex_unlock(&f->around_lock);
		if (!p)
			return;
		len = FRONT_RBUF_SIZE;
	}
	munmap(p, len);
}

/* A read answered from a read-around: its whole blocks, the reply inside. */
struct around_read {
	front_rq req;
	struct front *f;
	void *buf;                      /* around_buf_get()'s, the request's buffer
					   or a small one's (below) */
	struct front_rbuf *hb;          /* on a loop: the held request buffer */
	struct read_ctx *small;         /* or this and its small buffer (see
					   loop_small_get()) */
	bool in_hb;                     /* this structure is in hb's context page */
	size_t skip, size;
	size_t len;                     /* of buf: whole blocks */
};

static void around_read_done(void *ctx, int err)
{
	/* As read_finish(): nothing of @ar is read after the reply. */
	struct around_read *ar = ctx;
	struct front *f = ar->f;
	struct front_rbuf *hb = ar->hb;
	struct read_ctx *small = ar->small;
	bool hb_release = hb && !front_rbuf_ends_with_reply(hb), in_hb = ar->in_hb;
	void *buf = ar->buf;

	if (err) {
		rq_reply_err(f, ar->req, -err);
	} else {
		size_t size = ar->size;

		if (hb_release && size >= FRONT_AROUND_MIN && !f->legs_in_memory &&
		    loop_reply_async(f, ar->req, hb, (const char *)buf + ar->skip, size))
			hb_release = false;     /* the reply's completion releases hb */
		else
			rq_reply_buf(f, ar->req, (const char *)buf + ar->skip, size);
		FRONT_STAT_ADD(f, read_bytes, size);
	}
	if (small) {
		read_ctx_free(small);   /* ar and buf with it */
	} else if (!hb) {
		around_buf_put(f, buf, ar->len);
		free(ar);
	} else {
		if (hb_release)
			front_rbuf_release(hb);         /* ar with it if in_hb */
		if (!in_hb)
			free(ar);
	}
	front_req_end(f);
}

/*
 * Answer a read of blocks [@b0, + @n) around the cache; false if it cannot
 * (no memory, a range too wide): then read through the cache.  @own: the
 * request buffer the caller holds already (its read_ctx is in it), which
 * the read-around takes over when it returns true.
 */
static bool read_around(struct front *f, front_rq req, uint64_t off, size_t size,
			uint64_t b0, unsigned n, struct front_rbuf *own)
{
	struct front_rbuf *hb = NULL;
	struct around_read *ar;
	struct iovec iov;
	int r;

	/* On a loop the request's own buffer (page aligned, max_write plus a
	 * page) takes the blocks, and its context page this structure: no
	 * allocation, and an O_DIRECT leg reads straight into the memory the
	 * reply is written from. */
	if (!own && (size_t)n * f->bs <= FRONT_SMALL_BUF && (ar = loop_small_get(&iov.iov_base))) {
		/* A block or two on a /dev/fuse loop: a small buffer of the
		 * loop's, so that a leg read in flight does not keep the
		 * request's 1 MiB (see FRONT_LOOP_RCTX). */
		ar->hb = NULL;
		ar->in_hb = false;
		ar->buf = iov.iov_base;
		goto ready;
	}
	hb = own ? own : front_hold_rbuf();
	if (hb && (size_t)n * f->bs > front_rbuf_cap(hb)) {
		if (own)
			return false;   /* @own stays with its read_ctx */
		front_rbuf_unhold(hb);
		hb = NULL;
	}
	ar = hb ? front_rbuf_ctx(hb, 1) : malloc(sizeof(*ar));
	if (!ar) {
		if (hb && !own)
			front_rbuf_unhold(hb);
		return false;
	}
	ar->hb = hb;
	ar->in_hb = hb != NULL;
	ar->small = NULL;
	if (ar->hb) {
		ar->buf = front_rbuf_mem(ar->hb);
	} else if (!(ar->buf = around_buf_get(f, (size_t)n * f->bs))) {
		free(ar);
		return false;
	}
ready:
	ar->req = req;
	ar->f = f;
	ar->skip = off - b0 * f->bs;
	ar->size = size;
	ar->len = (size_t)n * f->bs;
	iov.iov_base = ar->buf;
	iov.iov_len = (size_t)n * f->bs;
	atomic_fetch_add(&f->inflight, 1);
	r = bufio_read_around(f->c, b0, n, &iov, 1, around_read_done, ar);
	if (r == 0)
		return true;
	atomic_fetch_sub(&f->inflight, 1);
	if (ar->small) {
		read_ctx_free(ar->small);
	} else if (!ar->hb) {
		around_buf_put(f, ar->buf, ar->len);
		free(ar);
	} else if (!own) {
		front_rbuf_unhold(ar->hb);
	}
	return false;
}

/*
 * Ask the cache for blocks [@from, last] of @rc, then drop the issuing
 * count.  On a loop nothing may wait: a block the cache cannot give
 * without waiting for memory sends the rest of the issuing to the slow
 * pool, whose thread may wait.
 */
static void read_issue(struct read_ctx *rc, uint64_t from)
{
	struct front *f = rc->f;
	uint64_t last = (rc->off + rc->size - 1) / f->bs;

	for (uint64_t blk = from; blk <= last; blk++) {
		int r;

		if (front_on_loop()) {
			r = bufio_read_async_nowait(f->c, blk, read_block_done, rc);
			if (r == -EWOULDBLOCK && blk == rc->b0 &&
			    read_around(f, rc->req, rc->off, rc->size, rc->b0,
					(unsigned)(last - rc->b0 + 1), rc->hb)) {
				/* No cache memory without a wait: straight from
				 * the legs into the request's buffer instead
				 * (which then holds rc no more). */
				if (!rc->hb)
					read_ctx_free(rc);
				atomic_fetch_sub(&f->inflight, 1);
				return;
			}
			if (r == -EWOULDBLOCK) {
				front_slow(f, &(struct front_job){ .kind = SLOW_READ_ISSUE,
								   .off = blk, .ctx = rc });
				return;
			}
		} else {
			r = bufio_read_async(f->c, blk, read_block_done, rc);
		}
		if (r < 0) {
			atomic_store(&rc->err, r);
			atomic_fetch_sub(&rc->pending, 1);
		}
	}
	if (atomic_fetch_sub(&rc->pending, 1) == 1)
		read_finish(rc);
}

/* A read of the image, from libfuse or a ring entry. */
static void front_read(struct front *f, front_rq req, fuse_ino_t ino, size_t size, off_t off)
{
	struct front_rbuf *hb;
	struct read_ctx *rc;
	uint64_t b0, b1;
	unsigned n;

	if (ino != image_ino(f)) {
		rq_reply_err(f, req, EISDIR);
		return;
	}
	FRONT_STAT_ADD(f, reads, 1);
	if (off < 0 || (uint64_t)off >= f->size || size == 0) {
		rq_reply_buf(f, req, NULL, 0);
		return;
	}
	if (size > f->size - (uint64_t)off)
		size = (size_t)(f->size - (uint64_t)off);
	b0 = (uint64_t)off / f->bs;
	b1 = ((uint64_t)off + size - 1) / f->bs;
	n = (unsigned)(b1 - b0 + 1);
	/* Around on a loop, whatever the legs (see the top).  In memory: 4k
	 * QD32 randread on 2 tmpfs legs, cold cache, daemon CPU per read
	 * (least of 4 runs) 18.9 us through the cache, 11.7 us around it;
	 * QD1 28.7 vs 19.8 us.  On disk: 4k QD32 randread on 2 O_DIRECT legs
	 * on /var/tmp, fresh mount each run, 3 alternating pairs (load ~5):
	 * 26.5/28.6/26.5k IOPS and 22.5/20.7/25.6 us per read through the
	 * cache, 35.4/42.4/41.7k and 10.5/11.0/12.1 us around it. */
	if (f->legs_in_memory && !rq_ring(req) && read_mapped(f, req, (uint64_t)off, size))
		return;
	if (f->legs_in_memory && size >= FRONT_AROUND_MIN && !rq_ring(req) &&
	    read_splice(f, req, (uint64_t)off, size))
		return;
	if ((size >= FRONT_AROUND_MIN || front_on_loop()) &&
	    read_around(f, req, (uint64_t)off, size, b0, n, NULL))
		return;
	/* A block on a /dev/fuse loop: a small context of the loop's, so that
	 * a leg read in flight does not keep the request buffer (see
	 * FRONT_LOOP_RCTX). */
	rc = n == 1 ? loop_rctx_get() : NULL;
	hb = rc ? NULL : front_hold_rbuf();
	if (hb && size > front_rbuf_cap(hb)) {
		front_rbuf_unhold(hb);
		hb = NULL;
	}
	if (hb) {
		/* On a loop: the context and the reply in the request buffer. */
		rc = front_rbuf_ctx(hb, 0);
		memset(rc, 0, sizeof(*rc));
		rc->hb = hb;
		if (n > 1)
			rc->data = front_rbuf_mem(hb);
	} else if (!rc) {
		rc = calloc(1, sizeof(*rc));
		if (rc && n > 1 && !(rc->data = malloc(size))) {
			free(rc);
			rc = NULL;
		}
	}
	if (!rc) {
		rq_reply_err(f, req, ENOMEM);
		return;
	}
	rc->req = req;
	rc->f = f;
	rc->off = (uint64_t)off;
	rc->size = size;
	rc->b0 = b0;
	atomic_init(&rc->pending, n + 1);
	atomic_fetch_add(&f->inflight, 1);
	/* Contiguous missing blocks go to the mirror as one request. */
	if (n > 1)
		bufio_prefetch(f->c, b0, n);
	read_issue(rc, b0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	front_read(req_front(req), rq_of_req(req), ino, size, off);
}

/*----------------------------------------------------------------*/
/* Writes and zeroing through the cache */

static pthread_mutex_t *modify_lock(struct front *f, uint64_t blk)
{
	return &f->modify_lock[(blk * 0x9E3779B97F4A7C15ull) >> 58];
}

/* Copy [off, off + len) of the image from @src (NULL: zeroes) into the
 * cache, marking what changed dirty.  Returns 0 or -errno. */
static int cache_write(struct front *f, uint64_t off, size_t len, const uint8_t *src)
{
	uint64_t end = off + len;

	while (off < end) {
		uint64_t blk = off / f->bs, bstart = blk * f->bs;
		unsigned s = (unsigned)(off - bstart);
		unsigned e = end - bstart < f->bs ? (unsigned)(end - bstart) : f->bs;
		bool whole = s == 0 && e == f->bs;
		struct bufio_buffer *b;
		uint8_t *p;
		int r;

		pthread_mutex_lock(modify_lock(f, blk));
		r = whole ? bufio_new(f->c, blk, &b) : bufio_read(f->c, blk, &b);
		if (r < 0) {
			pthread_mutex_unlock(modify_lock(f, blk));
			return r;
		}
		p = bufio_begin_modify(b);
		if (src)
			memcpy(p + s, src, e - s);
		else
			memset(p + s, 0, e - s);
		if (whole)
			bufio_mark_buffer_dirty(b);
		else
			bufio_mark_partial_buffer_dirty(b, s, e);
		bufio_release(b);
		pthread_mutex_unlock(modify_lock(f, blk));
		if (src)
			src += e - s;
		off = bstart + e;
	}
	return 0;
}

static int writethrough(struct front *f, uint64_t off, uint64_t len)
{
	uint64_t b0 = off / f->bs, b1 = (off + len - 1) / f->bs;

	if (!f->writethrough || len == 0)
		return 0;
	/* writethrough promises durable on every leg, not merely written */
	return bufio_write_dirty_range(f->c, b0, b1 - b0 + 1, FM_BDEV_FUA);
}

/*
 * cache_write() for an event loop: copies block by block as long as that
 * needs no wait (stripe lock free, block cached or new memory at hand, no
 * write in the way).  Returns 0, -EWOULDBLOCK with *ret_done the bytes
 * copied (the rest is for a thread that may wait), or -errno.
 */
static int cache_write_nowait(struct front *f, uint64_t off, size_t len, const uint8_t *src,
			      size_t *ret_done)
{
	uint64_t start = off, end = off + len;
	int r = 0;

	while (off < end) {
		uint64_t blk = off / f->bs, bstart = blk * f->bs;
		unsigned s = (unsigned)(off - bstart);
		unsigned e = end - bstart < f->bs ? (unsigned)(end - bstart) : f->bs;
		bool whole = s == 0 && e == f->bs;
		struct bufio_buffer *b;
		uint8_t *p;

		if (pthread_mutex_trylock(modify_lock(f, blk))) {
			r = -EWOULDBLOCK;
			break;
		}
		r = whole ? bufio_new_nowait(f->c, blk, &b) : bufio_get(f->c, blk, &b);
		if (r < 0) {
			pthread_mutex_unlock(modify_lock(f, blk));
			if (r == -ENOENT)
				r = -EWOULDBLOCK; /* a partial block to read first */
			break;
		}
		p = bufio_begin_modify_nowait(b);
		if (!p) {
			bufio_release(b);
			pthread_mutex_unlock(modify_lock(f, blk));
			r = -EWOULDBLOCK;
			break;
		}
		memcpy(p + s, src + (off - start), e - s);
		if (whole)
			bufio_mark_buffer_dirty(b);
		else
			bufio_mark_partial_buffer_dirty(b, s, e);
		bufio_release(b);
		pthread_mutex_unlock(modify_lock(f, blk));
		off = bstart + e;
	}
	*ret_done = off - start;
	return r;
}

/* A write answered once its parts (write-around, slow-pool work) end. */
struct write_ctx {
	front_rq req;
	struct front *f;
	struct front_rbuf *hb;          /* the request's buffer: the payload */
	bool in_hb;                     /* this structure is in hb's context page */
	size_t size;
	atomic_uint pending;            /* parts outstanding + 1 while issuing */
	atomic_int err;
};

static void write_part_done(struct write_ctx *wc, int err)
{
	struct front *f = wc->f;
	struct front_rbuf *hb;
	bool hb_release, in_hb;

	if (err < 0)
		atomic_store(&wc->err, err);
	if (atomic_fetch_sub(&wc->pending, 1) != 1)
		return;
	/* As read_finish(): nothing of @wc is read after the reply. */
	hb = wc->hb;
	hb_release = hb && !front_rbuf_ends_with_reply(hb);
	in_hb = wc->in_hb;
	err = atomic_load(&wc->err);
	if (err < 0) {
		fm_debug("front: write of %zu bytes failed: %s", wc->size, strerror(-err));
		rq_reply_err(f, wc->req, err == -ENOSPC ? ENOSPC : EIO);
	} else {
		size_t size = wc->size;

		FRONT_STAT_ADD(f, write_bytes, size);
		rq_reply_write(f, wc->req, size);
	}
	if (hb_release)
		front_rbuf_release(hb);         /* wc with it if in_hb */
	if (!in_hb)
		free(wc);
	front_req_end(f);
}

static void write_around_done(void *ctx, int err)
{
	write_part_done(ctx, err);
}

/* Does a loop's write at @off of @size send whole blocks around the cache
 * (write_on_loop())?  They are [*a, *e): the whole-block middle of a large
 * write, or of any write when the legs are in memory. */
static inline bool write_goes_around(const struct front *f, uint64_t off, size_t size,
				     uint64_t *a, uint64_t *e)
{
	*a = FM_ALIGN_UP(off, (uint64_t)f->bs);
	*e = FM_ALIGN_DOWN(off + size, (uint64_t)f->bs);
	return *e > *a && (*e - *a >= FRONT_AROUND_MIN || f->legs_in_memory);
}

/*
 * op_write on an event loop: nothing waits.  A write into the cache that
 * needs no wait is answered at once (no allocation); the whole-block
 * middle of a large write (of any write when the legs are in memory)
 * goes around the cache asynchronously, from the request's own
 * buffer; what would wait (a partial block to read, a full cache,
 * writethrough) goes to the slow pool with the buffer held.
 */
static void write_on_loop(struct front *f, front_rq req, uint64_t off, size_t size,
			  const uint8_t *src)
{
	uint64_t end = off + size, a, e;
	bool around = write_goes_around(f, off, size, &a, &e);
	struct { uint64_t off; size_t len; } part[2];
	unsigned nparts = 0;
	struct front_rbuf *hb;
	struct write_ctx *wc;
	size_t done = 0;
	int r;

	if (!around && !f->writethrough) {
		r = cache_write_nowait(f, off, size, src, &done);
		if (r == 0) {
			FRONT_STAT_ADD(f, write_bytes, size);
			rq_reply_write(f, req, size);
			return;
		}
		if (r != -EWOULDBLOCK) {
			rq_reply_err(f, req, r == -ENOSPC ? ENOSPC : EIO);
			return;
		}
	}
	/* The context in the request's buffer, which holds the payload. */
	hb = front_hold_rbuf();
	wc = hb ? front_rbuf_ctx(hb, 0) : malloc(sizeof(*wc));
	if (!wc) {
		rq_reply_err(f, req, ENOMEM);
		return;
	}
	wc->req = req;
	wc->f = f;
	wc->hb = hb;
	wc->in_hb = hb != NULL;
	wc->size = size;
	atomic_init(&wc->pending, 1);
	atomic_init(&wc->err, 0);
	atomic_fetch_add(&f->inflight, 1);
	if (f->writethrough) {
		part[nparts++] = (typeof(part[0])){ off, size };
	} else if (around) {
		struct iovec iov = { (void *)(src + (a - off)), (size_t)(e - a) };

		atomic_fetch_add(&wc->pending, 1);
		r = bufio_write_around_async(f->c, a / f->bs, (e - a) / f->bs, &iov, 1, 0,
					     write_around_done, wc);
		if (r == 0) {
			if (off < a)
				part[nparts++] = (typeof(part[0])){ off, (size_t)(a - off) };
			if (e < end)
				part[nparts++] = (typeof(part[0])){ e, (size_t)(end - e) };
		} else {
			atomic_fetch_sub(&wc->pending, 1);
			part[nparts++] = (typeof(part[0])){ off, size };
		}
	} else {
		part[nparts++] = (typeof(part[0])){ off + done, size - done };
	}
	for (unsigned i = 0; i < nparts; i++) {
		uint64_t o = part[i].off;
		size_t len = part[i].len;

		if (!f->writethrough) {
			r = cache_write_nowait(f, o, len, src + (o - off), &done);
			if (r != -EWOULDBLOCK) {
				if (r < 0)
					atomic_store(&wc->err, r);
				continue;
			}
			o += done;
			len -= done;
		}
		atomic_fetch_add(&wc->pending, 1);
		front_slow(f, &(struct front_job){ .kind = SLOW_WRITE, .off = o,
						   .size = len, .src = src + (o - off),
						   .ctx = wc });
	}
	write_part_done(wc, 0);
}

/*
 * Write [off, off + len) from @src: the whole blocks in the middle around
 * the cache if they are many enough and none is cached, the rest (or all)
 * through the cache.  Returns 0 or -errno.
 */
static int write_range(struct front *f, uint64_t off, size_t len, const uint8_t *src)
{
	uint64_t end = off + len, a = FM_ALIGN_UP(off, (uint64_t)f->bs);
	uint64_t e = FM_ALIGN_DOWN(end, (uint64_t)f->bs);
	int r;

	if (e > a && e - a >= FRONT_AROUND_MIN) {
		struct iovec iov = { (void *)(src + (a - off)), (size_t)(e - a) };

		r = bufio_write_around(f->c, a / f->bs, (e - a) / f->bs, &iov, 1,
				       f->writethrough ? FM_BDEV_FUA : 0);
		if (r != -EBUSY) {
			if (r == 0 && off < a && (r = cache_write(f, off, a - off, src)) == 0)
				r = writethrough(f, off, a - off);
			if (r == 0 && e < end &&
			    (r = cache_write(f, e, end - e, src + (e - off))) == 0)
				r = writethrough(f, e, end - e);
			return r;
		}
	}
	r = cache_write(f, off, len, src);
	if (r == 0)
		r = writethrough(f, off, len);
	return r;
}

/* A write of the image, from libfuse or a ring entry. */
static void front_write(struct front *f, front_rq req, fuse_ino_t ino, const char *buf,
			size_t size, off_t off)
{
	int r;

	if (ino != image_ino(f)) {
		rq_reply_err(f, req, EISDIR);
		return;
	}
	FRONT_STAT_ADD(f, writes, 1);
	if (f->readonly) {
		rq_reply_err(f, req, EROFS);
		return;
	}
	if (size == 0) {
		rq_reply_write(f, req, 0);
		return;
	}
	/* The image has a fixed size: a write that starts at or past the end
	 * gets ENOSPC, one that crosses it is short (as on a full disk). */
	if (off < 0 || (uint64_t)off >= f->size) {
		rq_reply_err(f, req, ENOSPC);
		return;
	}
	if (size > f->size - (uint64_t)off)
		size = (size_t)(f->size - (uint64_t)off);
	if (front_on_loop()) {
		write_on_loop(f, req, (uint64_t)off, size, (const uint8_t *)buf);
		return;
	}
	r = write_range(f, (uint64_t)off, size, (const uint8_t *)buf);
	if (r < 0) {
		fm_debug("front: write %zu@%lld failed: %s", size, (long long)off, strerror(-r));
		rq_reply_err(f, req, r == -ENOSPC ? ENOSPC : EIO);
		return;
	}
	FRONT_STAT_ADD(f, write_bytes, size);
	rq_reply_write(f, req, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	front_write(req_front(req), rq_of_req(req), ino, buf, size, off);
}

/* fsync: every write answered before it reaches every healthy leg's
 * stable storage.  May wait (the slow pool's work on a loop). */
static void do_fsync(fuse_req_t req)
{
	struct front *f = req_front(req);
	int r = 0;

	FRONT_STAT_ADD(f, fsyncs, 1);
	if (!f->readonly)
		r = bufio_write_dirty_buffers(f->c);
	/* The client hears EIO; the legs' failures are the mirror's events. */
	if (r < 0)
		fm_debug("front: fsync failed: %s", strerror(-r));
	reply_err(f, req, r < 0 ? EIO : 0);
}

/*
 * FLUSH, sent by the kernel on every close() of the image (a direct_io
 * file: it has no pages of its own to write first).  close() promises no
 * durability -- fsync does, and that is what a loop device sends for a
 * REQ_PREFLUSH and qemu for a guest's flush -- so a flush only starts
 * writing back what is dirty, without waiting, and is answered at once on
 * the thread that read it: nothing to do when nothing is dirty, no leg
 * flush, no hand-off from an event loop.  A write-back error is kept for
 * the next fsync, which reports it.
 */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct front *f = req_front(req);

	(void)ino;
	(void)fi;
	FRONT_STAT_ADD(f, flushes, 1);
	if (!f->readonly)
		bufio_write_dirty_buffers_async(f->c);
	reply_err(f, req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	if (front_on_loop()) {
		atomic_fetch_add(&req_front(req)->inflight, 1);
		front_slow(req_front(req), &(struct front_job){ .kind = SLOW_FSYNC, .req = req });
		return;
	}
	do_fsync(req);
}

/*
 * Discard or zero [off, off + len): the partial blocks at either end are
 * zeroed in the cache; the whole blocks between go to bufio_discard() or
 * bufio_write_zeroes(), which keep the cache coherent with the device.
 * Writethrough: durable on every leg on return, as a write is; the
 * device's discard or write-zeroes carries no FUA, so a flush follows it.
 */
static int zero_range(struct front *f, uint64_t off, uint64_t len, bool discard)
{
	uint64_t end = off + len, a = FM_ALIGN_UP(off, (uint64_t)f->bs);
	uint64_t b = FM_ALIGN_DOWN(end, (uint64_t)f->bs);
	int r;

	if (a >= b) {
		r = cache_write(f, off, len, NULL);
		return r < 0 ? r : writethrough(f, off, len);
	}
	if (off < a && (r = cache_write(f, off, a - off, NULL)) < 0)
		return r;
	if (b < end && (r = cache_write(f, b, end - b, NULL)) < 0)
		return r;
	r = discard ? bufio_discard(f->c, a / f->bs, (b - a) / f->bs)
		    : bufio_write_zeroes(f->c, a / f->bs, (b - a) / f->bs);
	if (r < 0)
		return r;
	if (f->writethrough && (r = bufio_issue_flush(f->c)) < 0)
		return r;
	return writethrough(f, off, len);
}

static void fallocate_reply(struct front *f, fuse_req_t req, int mode, uint64_t off,
			    uint64_t end);

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct front *f = req_front(req);
	uint64_t end;

	(void)fi;
	if (ino != image_ino(f)) {
		reply_err(f, req, EISDIR);
		return;
	}
	FRONT_STAT_ADD(f, fallocates, 1);
	if (f->readonly) {
		reply_err(f, req, EROFS);
		return;
	}
	if (off < 0 || len <= 0) {
		reply_err(f, req, EINVAL);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > f->size) {
		reply_err(f, req, ENOSPC); /* the size cannot grow */
		return;
	}
	if (end > f->size)
		end = f->size;
	if (front_on_loop()) {
		atomic_fetch_add(&f->inflight, 1);
		front_slow(f, &(struct front_job){ .kind = SLOW_FALLOCATE, .req = req,
						   .off = (uint64_t)off, .size = end - (uint64_t)off,
						   .mode = mode });
		return;
	}
	fallocate_reply(f, req, mode, (uint64_t)off, end);
}

/* The zeroing of a fallocate, [off, end) clamped to the image; replies. */
static void fallocate_reply(struct front *f, fuse_req_t req, int mode, uint64_t off, uint64_t end)
{
	int r;

	switch (mode & ~FALLOC_FL_KEEP_SIZE) {
	case 0: /* allocate: every byte of the image already exists */
		r = 0;
		break;
	case FALLOC_FL_PUNCH_HOLE:
		r = (mode & FALLOC_FL_KEEP_SIZE) ? 0 : -EOPNOTSUPP;
		if (r == 0 && off < end)
			r = zero_range(f, off, end - off, true);
		break;
	case FALLOC_FL_ZERO_RANGE:
		r = off < end ? zero_range(f, off, end - off, false) : 0;
		break;
	default:
		r = -EOPNOTSUPP;
		break;
	}
	if (r < 0 && r != -EOPNOTSUPP && r != -ENOSPC)
		r = -EIO;
	reply_err(f, req, -r);
}

static const struct fuse_lowlevel_ops front_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readdir = op_readdir,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.statfs = op_statfs,
};

/*----------------------------------------------------------------*/
/* Event loops (front_opts.event_loop): run to completion */

/*
 * One loop thread per CPU (on /dev/fuse with a leg not in memory, half of
 * them standby loops: loop_standby()), each the owner of a dmio loop (its
 * io_uring).
 * A loop polls the FUSE device on its ring, reads requests into its own
 * buffers (the session fd is non-blocking: loops race for requests, and
 * a read that loses the race must not sleep), serves READ and WRITE
 * itself (loop_serve()) and dispatches the rest with
 * fuse_session_process_buf() on the same thread, and the I/O a handler
 * submits goes on that ring: the reply is written from its completion on
 * the same thread.  No thread is crossed on a read hit, a read miss, a
 * write into the cache or a write around it (unless the mirror queues a
 * write behind an overlapping one or the bitmap's first write into a
 * clean region: those complete on the thread that issues them).
 *
 * Each loop waits for requests with one IORING_OP_POLL_ADD (EPOLLEXCLUSIVE)
 * on its ring, then read()s up to a batch of them (O_NONBLOCK) until the
 * queue is empty.  All readers of one connection sleep on the same kernel
 * wait queue; an exclusive waiter is the only kind a request wakes alone,
 * so one request wakes one idle loop, as a blocking read() wakes one of
 * libfuse's workers.  (IORING_OP_READs kept in flight instead are polled
 * by io_uring with NON-exclusive waits: every request woke every pending
 * read on every loop, one got it and the rest re-armed.  4k QD1 randread,
 * 2 loops: 1.4-2.0 voluntary context switches per request that way, 0.5-0.9
 * this way; the ceiling, libfuse's workers on bench/memfuse, 0.8.)
 * At QD1 a loop with nothing in flight waits in a blocking read() of a
 * second clone instead (see loop_block()).
 *
 * With /dev/fuse alone (no io_uring transport), each loop polls and reads
 * a clone of the session fd (FUSE_DEV_IOC_CLONE, O_NONBLOCK): clones share
 * the connection's input queue but each has its own list of requests being
 * processed, so the loops do not contend on one.  A request read from a
 * clone must be answered on that clone (the kernel keeps it in the clone's
 * processing list), whoever answers: the loop tags the request's unique
 * with its number (FRONT_LOOP_TAG) and the session's writev hook (libfuse
 * custom io) sends a tagged reply to that loop's clone, untagged.
 * Otherwise (the clone failed, or io_uring owns the session's custom io)
 * all loops poll and read the one session fd; replies then go to that fd.
 *
 * Nothing on a loop waits (include/fusemirror/dmio.h, "Loops"): a handler
 * that would (a partial block to read before a write, a full cache,
 * writethrough, fsync, fallocate) hands that work to the slow pool, whose
 * threads may wait, keeping the request's buffer ("held") until it ends.
 * A loop with no free buffer stops polling until one comes back.
 *
 * Request buffers (FRONT_RBUF_ALLOC, ~1 MiB each: the kernel refuses a
 * read shorter than max_write plus the headers) are most of the daemon's
 * memory beside the cache (the RSS target is cache_size + 64 MiB), and
 * registered ones are resident from the start.  On /dev/fuse, 12 per loop:
 * a request answered from the cache or an in-memory leg gives its buffer
 * back within its loop's turn; one waiting for disk I/O or the slow pool
 * holds it, and with all 12 held the loop stops polling, so requests beyond
 * wait in the kernel's queue.  Disk legs want that depth: with 8 per loop,
 * fio 4k QD32 randread on O_DIRECT legs on disk did 48.6k IOPS against
 * 58.7k with 12, 1M QD8 reads 2699 against 3021 MB/s (one run, 2 rounds),
 * for 10 MiB more peak RSS.  With the io_uring transport the loops only
 * get what the kernel still sends through /dev/fuse (INIT, FORGET,
 * INTERRUPT, notify replies): 4 each, not registered, so only the pages
 * those small requests touch are resident.
 *
 * A small read (up to FRONT_SMALL_BUF of whole blocks) that must wait
 * for a leg does not keep its buffer: a read-around takes one of the
 * loop's FRONT_LOOP_RCTX small contexts with a FRONT_SMALL_BUF buffer of
 * its own (loop_small_get(), registered with the ring like the request
 * buffers), and a one-block read through the cache (a loop's read-around
 * refused) a context alone (struct read_ctx; the reply is the cache
 * block's), so the buffers cap neither the 4k reads a loop has in flight
 * nor the depth a disk sees.  With 12 buffers per loop and the 4k reads
 * holding them, fio 4k QD32 randread on two O_DIRECT legs on disk never
 * had more than 24 leg reads in flight (max of /sys/block/vda/inflight).
 * When they are all in use, a read holds its buffer as before.
 */
#define FRONT_LOOP_BUFS 12
#define FRONT_LOOP_RCTX 128
#define FRONT_LOOP_BUFS_URING 4
#define FRONT_LOOP_BATCH 32     /* requests read per poll wake-up */
#define FRONT_LOOP_PROBE 8      /* see loop_read() */
#define FRONT_LOOP_SUBMIT 2     /* leg I/O submitted every N requests read (loop_read()) */
/* Requests read of up to this many bytes are told of before their group is
 * served, on legs in memory (loop_read_batch(), loop_hint_batch()) */
#define FRONT_LOOP_HINT_MAX (64u << 10)
/* ... in groups of this many, the loop reading on after each group */
#define FRONT_LOOP_HINT_BATCH 4

struct front_rbuf {
	struct front_loop *loop;        /* NULL: an io_uring entry's (below) */
	struct front_rbuf *next;        /* free list / returned stack */
	bool given;                     /* in its loop's provided ring (loop_rd_give()) */
	void *mem;                      /* FRONT_RBUF_ALLOC, page aligned */
	/* The request's reply area (mem, cap bytes) and its context slots
	 * (ctx, FRONT_RBUF_CTX bytes each).  A FUSE-over-io_uring request's
	 * buffer is its entry's: this structure at the start of the
	 * entry's scratch, mem its payload buffer, ctx the rest of the
	 * scratch; it needs no release (the reply ends it). */
	size_t cap;
	char *ctx;
};
#define FRONT_RBUF_URING_HDR 128u
_Static_assert(sizeof(struct front_rbuf) <= FRONT_RBUF_URING_HDR, "rbuf header fits");
_Static_assert(FRONT_RBUF_URING_HDR + 2 * FRONT_RBUF_CTX <= FRONT_URING_SCRATCH,
	       "context slots fit an io_uring entry's scratch");

/* A reply copied for the loop's ring (loop_reply()). */
#define FRONT_LOOP_REPLIES 32
#define FRONT_REPLY_MAX (sizeof(struct fuse_out_header) + 8192)
struct front_reply {
	struct dmio_loop_op op;
	struct front_loop *loop;
	struct front_reply *next;       /* free list */
	size_t len;
	struct front_rbuf *hb;          /* loop_reply_async(): the data's, or NULL */
	void *map_hold;                 /* read_mapped(): the data's loan, or NULL */
	uint64_t map_block, map_blocks; /* read_mapped(): the blocks lent */
	struct iovec iov[2];            /* loop_reply_async(), read_mapped():
					   header, data */
	char data[FRONT_REPLY_MAX];
};

struct front_loop {
	struct front *f;
	unsigned idx;
	int fd;                         /* its clone of the session fd, or -1 */
	int bfd;                        /* its blocking clone (loop_block()), or -1 */
	timer_t kick;                   /* interrupts a blocked read (with bfd),
					   and loop 0's ring wait on a signal */
	bool kick_set;
	pid_t kick_tid;                 /* its thread while kick_set; f->kick_lock */
	unsigned block_turns;           /* turns in blocking mode (probe count) */
	bool blocking;                  /* the last turn was one */
	bool bfd_nonblock;              /* bfd is O_NONBLOCK now (loop_spin()) */
	bool lone_before;               /* the batch before the last was one too */
	bool lone;                      /* the last batch was one request */
	unsigned lone_wakeups;
	unsigned busy_turns;            /* batches in a row that left no leg I/O
					 * (legs in memory: with no large request) */
	bool big;                       /* legs in memory: a request of
					 * FRONT_LOOP_BIG or more dispatched since
					 * loop_standby() */
	bool owes;                      /* its last batch after a poll wake-up did
					 * not end on an empty queue (loop_arm()) */
	/* Requests read on the ring (loop_arm_reads()), owner only. */
	bool ring_reads;                /* reads its clone so, not by polling */
	bool rd_armed;                  /* the multishot READ is in flight */
	bool rd_cancel;                 /* stopping: its cancel is queued */
	unsigned rd_turn;               /* requests it read since loop_standby() */
	unsigned rd_given;              /* buffers in the provided-buffer ring */
	struct io_uring_buf_ring *rd_br; /* that ring (FRONT_LOOP_RD_ENTRIES) */
	struct dmio_loop_op rd_op, cancel_op;
	struct dmio_loop *dl;           /* owner only */
	struct dmio_loop *wake;         /* dl while it exists; f->kick_lock */
	pthread_t thread;
	bool started;
	struct dmio_loop_op poll_op;    /* POLLIN on the session fd */
	struct dmio_loop_op tick_op;    /* loop 0 without a kick: a 1 s timeout */
	struct __kernel_timespec tick;
	bool polling, ticking;
	int pipe_rd, pipe_wr;           /* for spliced replies, or -1 (owner only) */
	size_t pipe_cap;                /* its size in bytes */
	unsigned splice_skip;           /* reads not to try splicing (owner only) */
	unsigned map_skip;              /* reads not to try mapped replies (owner only) */
	struct front_rbuf *free;        /* owner only */
	unsigned held;                  /* owner only: buffers held past their
					 * handler, returned ones not collected */
	_Atomic(struct front_rbuf *) returned; /* released on other threads */
	atomic_bool starved;            /* no buffer: wake the owner on a return */
	unsigned nr_bufs;               /* of bufs[] */
	struct front_rbuf bufs[FRONT_LOOP_BUFS];
	void *bufs_map;                 /* /dev/fuse: bufs[].mem, small_mem (fm_map_huge()) */
	/* Replies written on the ring (see loop_reply()), owner only. */
	struct front_reply *replies;    /* FRONT_LOOP_REPLIES, or NULL */
	struct front_reply *reply_free;
	unsigned replies_out;           /* queued or written, not completed */
	/* One-block reads' contexts (/dev/fuse only): as free/returned. */
	struct read_ctx *rctx_free;     /* owner only */
	_Atomic(struct read_ctx *) rctx_returned;
	struct read_ctx rctx[FRONT_LOOP_RCTX];
	/* Small read-arounds (loop_small_get()): rctx[k] taken stands for
	 * small_ar[k] and the k-th FRONT_SMALL_BUF of small_mem. */
	struct around_read small_ar[FRONT_LOOP_RCTX];
	char *small_mem;                /* in bufs_map, registered, or NULL */
};

static __thread struct front_loop *tl_loop;
static __thread struct front_rbuf *tl_rbuf;     /* the request being dispatched */
static __thread bool tl_rbuf_held;

/* On an event loop or a FUSE-over-io_uring queue thread (its ring is a
 * dmio loop too): nothing may wait here. */
static bool front_on_loop(void)
{
	return tl_loop != NULL || front_uring_current_ring() != NULL;
}

/*
 * Inside a request's handler on a loop or an io_uring queue thread: keep
 * the request's buffer after the handler returns (until
 * front_rbuf_release(), or on io_uring until the reply); NULL elsewhere.
 */
static struct front_rbuf *front_hold_rbuf(void)
{
	struct front_uring_req *e;
	struct front_rbuf *b;

	if (tl_rbuf) {
		tl_rbuf_held = true;
		return tl_rbuf;
	}
	e = front_uring_current_req();
	if (!e)
		return NULL;
	b = front_uring_req_scratch(e);
	memset(b, 0, sizeof(*b));
	b->mem = front_uring_reply_buf(e, &b->cap);
	b->ctx = (char *)b + FRONT_RBUF_URING_HDR;
	return b;
}

/* Undo front_hold_rbuf() inside the same handler. */
static void front_rbuf_unhold(struct front_rbuf *b)
{
	if (b->loop)
		tl_rbuf_held = false;
}

static void *front_rbuf_mem(struct front_rbuf *b)
{
	return b->mem;
}

/* How much of front_rbuf_mem() a reply may use. */
static size_t front_rbuf_cap(const struct front_rbuf *b)
{
	return b->cap;
}

/* The buffer is the request's until its reply, no release (io_uring). */
static bool front_rbuf_ends_with_reply(const struct front_rbuf *b)
{
	return !b->loop;
}

/* Context slot @slot (0: read_ctx or write_ctx, 1: around_read) of a held
 * buffer. */
static void *front_rbuf_ctx(struct front_rbuf *b, unsigned slot)
{
	_Static_assert(sizeof(struct read_ctx) <= FRONT_RBUF_CTX, "read_ctx fits");
	_Static_assert(sizeof(struct around_read) <= FRONT_RBUF_CTX, "around_read fits");
	_Static_assert(sizeof(struct write_ctx) <= FRONT_RBUF_CTX, "write_ctx fits");
	return b->ctx + slot * FRONT_RBUF_CTX;
}

static void front_rbuf_release(struct front_rbuf *b)
{
	struct front_loop *l;
	struct front_rbuf *old;

	if (!b || !b->loop)
		return;
	l = b->loop;
	if (tl_loop == l) {
		b->next = l->free;
		l->free = b;
		l->held--;
		return;
	}
	old = atomic_load(&l->returned);
	do {
		b->next = old;
	} while (!atomic_compare_exchange_weak(&l->returned, &old, b));
	if (atomic_exchange(&l->starved, false))
		dmio_loop_wake(l->dl);
}

/* A read context of the loop dispatching a request read into one of its
 * buffers (/dev/fuse), zeroed; NULL elsewhere or when all are in use. */
static struct read_ctx *loop_rctx_get(void)
{
	struct front_loop *l = tl_loop;
	struct read_ctx *rc;

	if (!l || !tl_rbuf)
		return NULL;
	rc = l->rctx_free;
	if (!rc)
		rc = atomic_exchange(&l->rctx_returned, NULL);
	if (!rc)
		return NULL;
	l->rctx_free = rc->next;
	memset(rc, 0, sizeof(*rc));
	rc->pool = l;
	return rc;
}

/* A small read-around's context of the loop dispatching a request read
 * into one of its buffers (/dev/fuse), and its FRONT_SMALL_BUF bytes in
 * @ret_buf (page aligned: an O_DIRECT leg reads straight into them, and
 * registered, FIXED); NULL elsewhere or when all are in use.  It holds a
 * read context, given back by read_ctx_free(ar->small). */
static struct around_read *loop_small_get(void **ret_buf)
{
	struct front_loop *l = tl_loop;
	struct read_ctx *rc;
	size_t k;

	if (!l || !l->small_mem || !(rc = loop_rctx_get()))
		return NULL;
	k = (size_t)(rc - l->rctx);
	l->small_ar[k].small = rc;
	*ret_buf = l->small_mem + k * FRONT_SMALL_BUF;
	return &l->small_ar[k];
}

/* Free a read context that is not in a request buffer (any thread). */
static void read_ctx_free(struct read_ctx *rc)
{
	struct front_loop *l = rc->pool;
	struct read_ctx *old;

	if (!l) {
		free(rc->data);
		free(rc);
		return;
	}
	if (tl_loop == l) {
		rc->next = l->rctx_free;
		l->rctx_free = rc;
		return;
	}
	old = atomic_load(&l->rctx_returned);
	do {
		rc->next = old;
	} while (!atomic_compare_exchange_weak(&l->rctx_returned, &old, rc));
}

static void loop_stop_all(struct front *f);

/* Serving must stop for a reason the front cannot mend: say why once
 * (front_stop_reason(), for the daemon to report), then stop. */
static void front_stop_failed(struct front *f, const char *what, int err)
{
	fm_debug("front: %s: %s", what, strerror(err));
	if (!atomic_flag_test_and_set(&f->stop_reason_set))
		snprintf(f->stop_reason, sizeof(f->stop_reason), "%s: %s", what, strerror(err));
	fuse_session_exit(f->se);
	loop_stop_all(f);
}

const char *front_stop_reason(const struct front *f)
{
	return f->stop_reason[0] ? f->stop_reason : NULL;
}

/* Wake loops [@from, @to) from any thread: each one's dmio loop while it
 * exists (l->wake, under kick_lock: a loop that ends destroys its dmio
 * loop, and a wake-up from another thread, e.g. the request that
 * brought `inflight` to 0, must not write to its freed eventfd). */
static void front_wake_range_locked(struct front *f, unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++)
		if (f->loops[i].wake)
			dmio_loop_wake(f->loops[i].wake);
}

static void front_wake_range(struct front *f, unsigned from, unsigned to)
{
	pthread_mutex_lock(&f->kick_lock);
	front_wake_range_locked(f, from, to);
	pthread_mutex_unlock(&f->kick_lock);
}

/* Every loop, if there still are any: the request that brings `inflight`
 * to 0 after a stop may end on a slow-pool thread after the loops ended
 * and front_run_loops() freed them (under kick_lock). */
static void front_wake_loops(struct front *f)
{
	pthread_mutex_lock(&f->kick_lock);
	front_wake_range_locked(f, 0, f->nr_loops);
	pthread_mutex_unlock(&f->kick_lock);
}

/* A request answered asynchronously is done. */
static void front_req_end(struct front *f)
{
	if (atomic_fetch_sub(&f->inflight, 1) == 1 && atomic_load(&f->stopping))
		front_wake_loops(f);
}

static void slow_run(gpointer data, gpointer user_data)
{
	struct front_job *job = data;
	struct front *f = user_data;
	struct write_ctx *wc;

	switch (job->kind) {
	case SLOW_WRITE:
		wc = job->ctx;
		write_part_done(wc, write_range(f, job->off, job->size, job->src));
		break;
	case SLOW_FSYNC:
		do_fsync(job->req);
		front_req_end(f);
		break;
	case SLOW_FALLOCATE:
		fallocate_reply(f, job->req, job->mode, job->off, job->off + job->size);
		front_req_end(f);
		break;
	case SLOW_READ_ISSUE:
		read_issue(job->ctx, job->off);
		break;
	}
	free(job);
}

static void front_slow(struct front *f, const struct front_job *tmpl)
{
	struct front_job *job = malloc(sizeof(*job));

	if (!job) {
		/* Rare enough to wait for memory here rather than fail a
		 * write the kernel already considers sent. */
		fm_debug("front: out of memory for a slow-path job; retrying");
		while (!(job = malloc(sizeof(*job))))
			usleep(1000);
	}
	*job = *tmpl;
	FRONT_STAT_ADD(f, handoffs, 1);
	g_thread_pool_push(f->slow, job, NULL);
}

static void loop_collect(struct front_loop *l)
{
	struct front_rbuf *b = atomic_exchange(&l->returned, NULL);

	while (b) {
		struct front_rbuf *next = b->next;

		b->next = l->free;
		l->free = b;
		l->held--;
		b = next;
	}
}

/*
 * Has the loop a free request buffer (owner only)?  Buffers returned by
 * other threads are collected; with none, the need is announced before
 * the last look (`starved`: front_rbuf_release() then wakes the loop), so
 * a buffer returned meanwhile is either seen here or wakes it.
 */
static bool loop_has_free(struct front_loop *l)
{
	if (!l->free)
		loop_collect(l);
	if (l->free)
		return true;
	atomic_store(&l->starved, true);
	loop_collect(l);
	if (!l->free)
		return false;
	atomic_store(&l->starved, false);
	return true;
}

/* The kick (see loop_block()). */
#define FRONT_LOOP_KICK_SIG (SIGRTMIN + 5)

/*
 * Send every loop blocked (or about to block) in a read() of its blocking
 * clone its kick now, and arm its kick timer: a kick that lands just
 * before the read() starts is followed by one every 100 ms until the loop
 * ends (and deletes its timer).  While serving the timers are off: an
 * idle loop sleeps.  Under kick_lock, which a loop takes to clear its
 * kick_tid before it ends, so no kick goes to a thread (or timer) that is
 * gone.
 */
static void front_kick_loops(struct front *f)
{
	static const struct itimerspec again = { .it_value = { .tv_nsec = 100000000 },
						 .it_interval = { .tv_nsec = 100000000 } };
	pid_t self = gettid();

	pthread_mutex_lock(&f->kick_lock);
	for (unsigned i = 0; i < f->nr_loops; i++) {
		pid_t tid = f->loops[i].kick_tid;

		if (!tid)
			continue;
		if (tid != self)
			tgkill(getpid(), tid, FRONT_LOOP_KICK_SIG);
		timer_settime(f->loops[i].kick, 0, &again, NULL);
	}
	pthread_mutex_unlock(&f->kick_lock);
}

static void loop_stop_all(struct front *f)
{
	if (!atomic_exchange(&f->stopping, true)) {
		/* The loops end when no request is in flight: the io_uring
		 * queues, which serve until the unmount, take no more. */
		front_uring_close(f->uring);
		front_wake_loops(f);
		front_kick_loops(f);
	}
}

/*
 * The unique of a request read from loop i's clone carries i + 1 here
 * (kernel uniques are a counter far from these bits; FUSE over io_uring's
 * tag is bit 63).
 */
#define FRONT_LOOP_TAG_SHIFT 48
#define FRONT_LOOP_TAG_MASK (0x7fffull << FRONT_LOOP_TAG_SHIFT)
#define FRONT_LOOP_TAG_BLOCK 0x4000u    /* read from the loop's bfd */

static void front_hint(struct front *f, const struct fuse_in_header *h, const void *op_in);

/*
 * Serve a READ or WRITE read from @l's clone without libfuse, as
 * front_ring_handle() does on io_uring: libfuse would allocate a request
 * (calloc), take its session-wide lock (shared by the loops) twice, and
 * free it again, for each.  The request (front_rq RQ_LOOP) is its tagged
 * unique; loop_send() answers it through loop_io_writev(), as libfuse's
 * reply would go.  INTERRUPTs a loop drops (loop_dispatch()), so nothing
 * in libfuse needs to know of these requests.  False: not one of them,
 * for libfuse.
 */
static bool loop_serve(struct front_loop *l, const struct fuse_in_header *h, size_t len)
{
	struct front *f = l->f;

	if (!atomic_load_explicit(&f->inited, memory_order_acquire) || h->len != len)
		return false;
	if (h->opcode == FUSE_READ && len >= sizeof(*h) + sizeof(struct fuse_read_in)) {
		const struct fuse_read_in *in = (const void *)(h + 1);

		front_read(f, rq_of_loop(h->unique), h->nodeid, in->size, (off_t)in->offset);
		return true;
	}
	if (h->opcode == FUSE_WRITE && len >= sizeof(*h) + sizeof(struct fuse_write_in)) {
		const struct fuse_write_in *in = (const void *)(h + 1);

		if (in->size > len - sizeof(*h) - sizeof(*in)) {
			rq_reply_err(f, rq_of_loop(h->unique), EINVAL);
			return true;
		}
		front_write(f, rq_of_loop(h->unique), h->nodeid, (const char *)(in + 1), in->size,
			    (off_t)in->offset);
		return true;
	}
	return false;
}

/*
 * Is the request @h (@len bytes read) a read or write of FRONT_LOOP_BIG or
 * more?  On legs in memory such requests turn the standby loop on
 * (loop_standby()): their copies (the kernel's of the payload, the legs')
 * want both CPUs.
 */
#define FRONT_LOOP_BIG (128u << 10)

static bool loop_rbuf_is_big(const struct fuse_in_header *h, size_t len)
{
	if (h->opcode == FUSE_WRITE)
		return len >= FRONT_LOOP_BIG;
	if (h->opcode == FUSE_READ && len >= sizeof(*h) + sizeof(struct fuse_read_in))
		return ((const struct fuse_read_in *)(h + 1))->size >= FRONT_LOOP_BIG;
	return false;
}

#define FRONT_SPIN_PROBE 32      /* see loop_spin_adapt() */

/*
 * The count of clients on legs in memory (of the spin, loop_spin(), and
 * of the standby loops, loop_standby_mem()): a request from another
 * caller than the one before (the header's pid, the calling thread; 0:
 * the kernel's own) stamps the time.  Two clients each change the caller
 * every few requests, one client never; while a change is more recent
 * than FRONT_SPIN_CLIENTS_NS, several clients send requests
 * (front_several_callers()).  (Any loop's requests count: one client's
 * go to whichever loop waits.)
 */
#define FRONT_SPIN_CLIENTS_NS 1000000u

static void loop_note_caller(struct front *f, const struct fuse_in_header *h)
{
	int pid = (int)h->pid;

	if (pid && atomic_load_explicit(&f->caller, memory_order_relaxed) != pid) {
		atomic_store_explicit(&f->caller, pid, memory_order_relaxed);
		atomic_store_explicit(&f->caller_switch_ns, fm_now_ns(), memory_order_relaxed);
	}
}

/* Did the caller change less than FRONT_SPIN_CLIENTS_NS before @now? */
static bool front_several_callers(struct front *f, uint64_t now)
{
	return (int64_t)(now - atomic_load_explicit(&f->caller_switch_ns, memory_order_relaxed)) <
	       (int64_t)FRONT_SPIN_CLIENTS_NS;
}

/* Hand request @b (@len bytes, read from the loop's bfd if @blocking) to
 * loop_serve() or to libfuse, on its loop; @b goes back to the free list
 * unless a handler held it. */
static void loop_dispatch(struct front_loop *l, struct front_rbuf *b, size_t len, bool blocking)
{
	struct front *f = l->f;
	struct fuse_in_header *h = (void *)((char *)b->mem + FRONT_RBUF_REQ);

	if (l->fd >= 0 && len >= sizeof(*h)) {
		if (h->opcode == FUSE_INTERRUPT) {
			/* Nothing here waits to be interrupted, and its
			 * unique would not match the tagged one: an
			 * interrupt needs no reply. */
			b->next = l->free;
			l->free = b;
			return;
		}
		h->unique |= (uint64_t)((l->idx + 1) | (blocking ? FRONT_LOOP_TAG_BLOCK : 0))
			     << FRONT_LOOP_TAG_SHIFT;
		if (f->legs_in_memory && loop_rbuf_is_big(h, len))
			l->big = true;
		if (f->legs_in_memory)
			loop_note_caller(f, h);
	}
	tl_rbuf = b;
	tl_rbuf_held = false;
	if (l->fd < 0 || !loop_serve(l, h, len))
		fuse_session_process_buf(f->se, &(struct fuse_buf){ .size = len, .mem = h });
	if (!tl_rbuf_held) {
		b->next = l->free;
		l->free = b;
	} else {
		l->held++;
	}
	tl_rbuf = NULL;
	if (fuse_session_exited(f->se))
		loop_stop_all(f);
}

/* A mapped reply's write ended with @res (< 0: -errno): its loan @hold of
 * blocks [@block, + @n) ends, with the kernel's failed copy from the leg
 * (EFAULT: the client's read failed with EIO) counted and told to the
 * device (read_mapped()). */
static void read_mapped_end(struct front *f, void *hold, uint64_t block, uint64_t n, int res)
{
	if (res == -EFAULT)
		FRONT_STAT_ADD(f, errors, 1);
	bufio_map_put(f->c, hold, block, n, res == -EFAULT ? res : 0);
}

/*
 * Replies on the ring.  A reply a loop sends for a request it read (a
 * clone's) is copied into one of the loop's reply slots and written by an
 * IORING_OP_WRITE on its ring instead of a writev(): the loop's next
 * io_uring_enter, the one that waits for the next request
 * (dmio_loop_run_once() with wait), carries it.  At QD1 that is one
 * system call of the five a request cost; in a batch (QD32), the turn's
 * replies go out together, and fio, woken by the first, preempts the loop
 * once per turn, not once per writev() (doc/DESIGN.md: 0.3 -> 0.07 context
 * switches and 5.0 -> 3.5 us of CPU per 4k read).  But for a write of
 * FRONT_AROUND_MIN or more outside QD1 (tl_reply_now): at 1M QD8 its
 * reply waiting for the enter cost throughput (1M QD8 writes lost 3 A/B
 * pairs of 3 so), and one writev() per MiB is nothing.  /dev/fuse clones are
 * O_NONBLOCK, so io_uring writes them inline at submission, in order,
 * never through an io-wq worker; the kernel has the reply before the
 * loop sleeps.  The copy is why only replies up to FRONT_REPLY_MAX go
 * this way: the memory libfuse hands us (its stack, a cache block, the
 * request's buffer) is the caller's again when the hook returns, and
 * a read's data stays only as long as its cache block is pinned.  (A
 * read answered from a leg's mapping, read_mapped(), has no copy: its
 * WRITEV reads the leg's bytes, whose loan the write's completion ends.)
 * Larger replies, replies from other threads (slow pool, notifications)
 * and replies when all slots are out still use writev().  Replies of
 * different requests need no order between them (each has its unique),
 * nor with spliced ones.  A loop does not end before its replies are
 * written (loop_done()).
 */
static void loop_reply_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct front_reply *r = (struct front_reply *)((char *)op - offsetof(struct front_reply, op));
	struct front_loop *l = r->loop;

	(void)cqe_flags;
	/* ENOENT: the request was interrupted (libfuse ignores it too). */
	if (res < 0 && res != -ENOENT)
		fm_debug("front: loop %u: reply of %zu bytes: %s", l->idx, r->len, strerror(-res));
	else if (res >= 0 && (size_t)res != r->len)
		fm_debug("front: loop %u: reply of %zu bytes written short (%d)", l->idx, r->len,
			 res);
	if (r->hb) {
		front_rbuf_release(r->hb);
		r->hb = NULL;
	}
	if (r->map_hold) {
		/* The kernel's copy from the leg's pages is done. */
		read_mapped_end(l->f, r->map_hold, r->map_block, r->map_blocks, res);
		r->map_hold = NULL;
	}
	r->next = l->reply_free;
	l->reply_free = r;
	l->replies_out--;
}

/* A free reply slot of @l and an SQE for it (*@sqe), or NULL: none.
 * Nothing is taken until loop_reply_commit(). */
static struct front_reply *loop_reply_slot(struct front_loop *l, struct io_uring_sqe **sqe)
{
	struct front_reply *r = l->reply_free;

	if (!r || !(*sqe = dmio_loop_get_sqe(l->dl)))
		return NULL;
	return r;
}

/* Slot @r, its write prepared in @sqe, is out until loop_reply_done(). */
static void loop_reply_commit(struct front_loop *l, struct front_reply *r, struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data(sqe, &r->op);
	l->reply_free = r->next;
	l->replies_out++;
}

/* Prepare in @sqe the write of reply slot @r: the header of a reply to
 * @unique (its loop tag dropped) in the slot, then @len bytes at @buf,
 * which must stay there until the write completes. */
static void loop_reply_prep_data(struct front_loop *l, struct front_reply *r,
				 struct io_uring_sqe *sqe, uint64_t unique, const void *buf,
				 size_t len)
{
	struct fuse_out_header *oh = (struct fuse_out_header *)(void *)r->data;

	*oh = (struct fuse_out_header){ .len = (uint32_t)(sizeof(*oh) + len),
					.unique = unique & ~FRONT_LOOP_TAG_MASK };
	r->iov[0] = (struct iovec){ oh, sizeof(*oh) };
	r->iov[1] = (struct iovec){ (void *)buf, len };
	r->len = sizeof(*oh) + len;
	io_uring_prep_writev(sqe, l->fd, r->iov, 2, 0);
}

/* The loop whose tag is in reply @unique's bits (*@blocking: it came
 * from that loop's blocking clone), or NULL: a request of libfuse's own
 * session fd. */
static struct front_loop *loop_of_unique(struct front *f, uint64_t unique, bool *blocking)
{
	uint64_t tag = (unique & FRONT_LOOP_TAG_MASK) >> FRONT_LOOP_TAG_SHIFT;

	*blocking = tag & FRONT_LOOP_TAG_BLOCK;
	tag &= ~(uint64_t)FRONT_LOOP_TAG_BLOCK;
	if (!tag || tag > f->nr_loops || f->loops[tag - 1].fd < 0)
		return NULL;
	return &f->loops[tag - 1];
}

/* The clone a reply to a request of @l goes to: the one it was read from
 * (@blocking: the blocking clone, answered there by writev(): the loop's
 * next system call is a read(), not an io_uring_enter to carry it). */
static int loop_clone_fd(const struct front_loop *l, bool blocking)
{
	return blocking && l->bfd >= 0 ? l->bfd : l->fd;
}

/* The fd a reply to @l's current request (tl_rbuf) goes to, with its
 * tagged *@unique and *@blocking (loop_of_unique()): its clone, or
 * libfuse's session fd for a loop without one; -1: not @l's request. */
static int loop_cur_reply_fd(struct front *f, struct front_loop *l, uint64_t *unique,
			     bool *blocking)
{
	*unique = ((const struct fuse_in_header *)(const void *)
		   ((const char *)tl_rbuf->mem + FRONT_RBUF_REQ))->unique;
	*blocking = false;
	if (l->fd < 0)
		return fuse_session_fd(f->se);
	if (loop_of_unique(f, *unique, blocking) != l)
		return -1;
	return loop_clone_fd(l, *blocking);
}

/* A read-reply path (splice, mapped) refused for lack of support is not
 * tried for the next FRONT_SPLICE_BACKOFF reads: true while *@skip counts
 * them down. */
static bool loop_skip(unsigned *skip)
{
	if (!*skip)
		return false;
	(*skip)--;
	return true;
}

/* Queue reply @iov on @l's ring (its owner); its length, or -1: not
 * queued, write it now. */
static ssize_t loop_reply(struct front_loop *l, const struct iovec *iov, int count)
{
	struct front_reply *r;
	struct io_uring_sqe *sqe;
	size_t len = 0;

	if (tl_reply_now && !l->lone)
		return -1;
	for (int i = 0; i < count; i++) {
		if (iov[i].iov_len > FRONT_REPLY_MAX - len)
			return -1;
		len += iov[i].iov_len;
	}
	if (!(r = loop_reply_slot(l, &sqe)))
		return -1;
	len = 0;
	for (int i = 0; i < count; i++) {
		memcpy(r->data + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	r->len = len;
	io_uring_prep_write(sqe, l->fd, r->data, (unsigned)len, 0);
	dmio_loop_sqe_prompt(l->dl);
	loop_reply_commit(l, r, sqe);
	FRONT_STAT_ADD(l->f, ring_replies, 1);
	return (ssize_t)len;
}

/*
 * Large read replies on legs on disk.  A loop that answered a burst of
 * 1 MiB reads by writev() copied each reply into the reader's pages
 * itself, one after the other (~0.15-0.3 ms per MiB here), and read the
 * requests those replies let the client send only after the last: the
 * disk, which completes a burst together, sat idle meanwhile (fio 1M QD8
 * read, 2 O_DIRECT legs on one virtio disk: 8 MiB read in ~2.8 ms, then
 * ~1.6 ms of copies before the next leg read went out).  So such a reply
 * is an IORING_OP_WRITEV with IOSQE_ASYNC on the loop's ring: an io-wq
 * worker makes the copy, on whichever CPU is free, and the loop goes on
 * reading and submitting the next requests.  The reply's header is in a
 * reply slot, its data stays in the request buffer @hb, which the write's
 * completion releases (loop_reply_done()).  Only for a request of this
 * loop's O_NONBLOCK clone, on the loop's thread; false: not queued (the
 * caller replies as usual).
 */
static bool loop_reply_async(struct front *f, front_rq rq, struct front_rbuf *hb, const void *buf,
			     size_t len)
{
	struct front_loop *l = tl_loop;
	struct front_reply *r;
	struct io_uring_sqe *sqe;
	uint64_t unique = (uint64_t)(rq & ~RQ_KIND) >> 1;
	bool blocking;

	if (!l || l->f != f || !hb || hb->loop != l || (rq & RQ_KIND) != RQ_LOOP ||
	    loop_of_unique(f, unique, &blocking) != l || blocking || !(r = loop_reply_slot(l, &sqe)))
		return false;
	loop_reply_prep_data(l, r, sqe, unique, buf, len);
	r->hb = hb;
	sqe->flags |= IOSQE_ASYNC;
	loop_reply_commit(l, r, sqe);
	FRONT_STAT_ADD(f, async_replies, 1);
	return true;
}

/* libfuse's writes to the session: a tagged reply goes to its loop's clone. */
static ssize_t loop_io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct front *f = userdata;

	if (count >= 1 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		struct fuse_out_header *oh = iov[0].iov_base;
		bool blocking;
		struct front_loop *l = loop_of_unique(f, oh->unique, &blocking);

		if (l) {
			ssize_t n;

			oh->unique &= ~FRONT_LOOP_TAG_MASK;
			fd = loop_clone_fd(l, blocking);
			if (fd == l->fd && l == tl_loop && (n = loop_reply(l, iov, count)) >= 0)
				return n;
		}
	}
	return writev(fd, iov, count);
}

/* Answer loop request @rq (RQ_LOOP) with @err or @len bytes of @buf, as
 * libfuse's fuse_reply_*() would (any thread). */
static ssize_t loop_send(struct front *f, front_rq rq, int err, const void *buf, size_t len)
{
	struct fuse_out_header oh = {
		.len = (uint32_t)(sizeof(oh) + len),
		.error = -err,
		.unique = (uint64_t)(rq & ~RQ_KIND) >> 1,
	};
	struct iovec iov[2] = { { &oh, sizeof(oh) }, { (void *)buf, len } };
	ssize_t n = loop_io_writev(fuse_session_fd(f->se), iov, len ? 2 : 1, f);

	/* ENOENT: the request was interrupted (libfuse ignores it too). */
	if (n < 0 && errno != ENOENT)
		fm_debug("front: reply of %zu bytes: %s", len, strerror(errno));
	return n;
}

/*
 * Spliced replies.  A large read on a loop, with every leg in memory, is
 * answered with one copy instead of two: the reply's header is written
 * into the loop's pipe, bufio_splice_around() puts the data behind it
 * (from a tmpfs leg the pipe gets references to its pages), and the pipe
 * is spliced into /dev/fuse, where the kernel copies the pages into the
 * reader's (fuse_dev_splice_write(): the whole reply must be in the pipe,
 * and it is consumed whole, even when the kernel then refuses the reply).
 * The request is then freed with fuse_reply_none(): its reply went past
 * libfuse.  The pipe never keeps a half reply: a refusal takes back the
 * header it holds alone, any other failure replaces the pipe; the read is
 * then answered the usual way (a read-around).  If the kernel took the
 * spliced reply and still failed the splice, that second reply is refused
 * (ENOENT), which libfuse ignores.
 *
 * A device that refuses with -EOPNOTSUPP (checksums on, a leg on disk, a
 * fault injected) refuses the next reads too: the loop then does not try
 * for its next FRONT_SPLICE_BACKOFF large reads, which saves each the
 * header's round trip through the pipe and bufio's look at the range.  A
 * refusal of the moment (-EAGAIN, -EBUSY: a range unwritten, out of sync,
 * with dirty blocks) says nothing of the next read.
 *
 * The pipe: a pipe buffer per page of data plus one for the header, and
 * pipe sizes are powers of two pages, so 2 MiB for replies up to 1 MiB
 * (max_read).  That is above pipe-max-size (1 MiB by default), which only
 * CAP_SYS_RESOURCE may pass (the systemd unit keeps it): without it the
 * pipe is 1 MiB, and reads of more than 1016 KiB go the usual way.
 */
#define FRONT_SPLICE_PIPE (2u << 20)
#define FRONT_SPLICE_PIPE_MIN (1u << 20)
#define FRONT_SPLICE_BACKOFF 64u

static void loop_pipe_close(struct front_loop *l)
{
	if (l->pipe_rd >= 0) {
		close(l->pipe_rd);
		close(l->pipe_wr);
	}
	l->pipe_rd = l->pipe_wr = -1;
	l->pipe_cap = 0;
}

/*
 * A pipe for spliced replies, as large as it may be made (see above):
 * returns its size in bytes and sets @p, or -errno (nothing open).
 */
static int splice_pipe_make(int p[2])
{
	int sz, err;

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	sz = fcntl(p[1], F_SETPIPE_SZ, (int)FRONT_SPLICE_PIPE);
	if (sz < 0)
		sz = fcntl(p[1], F_SETPIPE_SZ, (int)FRONT_SPLICE_PIPE_MIN);
	if (sz >= (int)FRONT_SPLICE_PIPE_MIN)
		return sz;
	err = sz < 0 ? -errno : -ENOSPC;
	close(p[0]);
	close(p[1]);
	return err;
}

/* The largest read a pipe of @cap bytes takes with its header (one page). */
static size_t splice_max_for(size_t cap)
{
	size_t pages = cap / FM_PAGE_SIZE;

	if (pages <= 2)
		return 0;
	return (pages - 2) * FM_PAGE_SIZE < FRONT_MAX_IO ? (pages - 2) * FM_PAGE_SIZE : FRONT_MAX_IO;
}

static void loop_pipe_open(struct front_loop *l)
{
	int p[2], sz;

	l->pipe_rd = l->pipe_wr = -1;
	l->pipe_cap = 0;
	sz = splice_pipe_make(p);
	if (sz < 0) {
		fm_debug("front: loop %u: no pipe of %u bytes for spliced replies: %s", l->idx,
			 FRONT_SPLICE_PIPE_MIN, strerror(-sz));
		return;
	}
	if (sz < (int)FRONT_SPLICE_PIPE)
		fm_debug("front: loop %u: pipe for spliced replies of %d bytes, not %u: reads "
			 "of 1 MiB not spliced", l->idx, sz, FRONT_SPLICE_PIPE);
	l->pipe_rd = p[0];
	l->pipe_wr = p[1];
	l->pipe_cap = (size_t)sz;
}

/*
 * At mount: which reads the loops will splice, from a pipe made as theirs
 * will be, and the note front_splice_note() gives when a large read cannot.
 */
static void front_splice_probe(struct front *f)
{
	size_t max = 0;
	int p[2], sz;

	if (f->uring || !f->event_loop || !f->legs_in_memory)
		return;
	sz = splice_pipe_make(p);
	if (sz >= 0) {
		close(p[0]);
		close(p[1]);
		max = splice_max_for((size_t)sz);
	}
	if (max >= FRONT_MAX_IO)
		return;
	if (max)
		f->splice_note = g_strdup_printf(
			"reads of more than %zu KiB take two copies, not one (splice): their "
			"pipe of %u bytes needs CAP_SYS_RESOURCE or /proc/sys/fs/pipe-max-size "
			">= %u", max >> 10, FRONT_SPLICE_PIPE, FRONT_SPLICE_PIPE);
	else
		f->splice_note = g_strdup_printf(
			"no read is spliced (one copy): a pipe of %u bytes could not be made: %s",
			FRONT_SPLICE_PIPE_MIN, g_strerror(-sz));
}

/* Answer read [@off, + @size) by splice (see above); false: it was not,
 * and nothing was sent. */
static bool read_splice(struct front *f, front_rq req, uint64_t off, size_t size)
{
	struct front_loop *l = tl_loop;
	struct fuse_out_header oh;
	uint64_t unique;
	bool blocking;
	ssize_t n;
	int r, fd;

	if (!l || !tl_rbuf || l->pipe_wr < 0 || off % f->bs || size % f->bs ||
	    size > splice_max_for(l->pipe_cap) ||
	    (fd = loop_cur_reply_fd(f, l, &unique, &blocking)) < 0 || loop_skip(&l->splice_skip))
		return false;
	oh = (struct fuse_out_header){
		.len = (uint32_t)(sizeof(oh) + size),
		.unique = unique & ~FRONT_LOOP_TAG_MASK,
	};
	if (write(l->pipe_wr, &oh, sizeof(oh)) != (ssize_t)sizeof(oh)) {
		loop_pipe_close(l);
		loop_pipe_open(l);
		return false;
	}
	r = bufio_splice_around(f->c, off / f->bs, size / f->bs, l->pipe_wr);
	if (r == 0) {
		n = splice(l->pipe_rd, NULL, fd, NULL, oh.len, 0);
		if (n == (ssize_t)oh.len) {
			if (rq_fuse(req))
				fuse_reply_none(rq_fuse(req));
			FRONT_STAT_ADD(f, read_bytes, size);
			FRONT_STAT_ADD(f, spliced_reads, 1);
			FRONT_STAT_ADD(f, spliced_read_bytes, size);
			return true;
		}
		fm_debug("front: spliced reply of %zu bytes at %llu: %s", size,
			 (unsigned long long)off, n < 0 ? strerror(errno) : "short");
	} else if (r == -EBUSY || r == -EAGAIN || r == -EOPNOTSUPP || r == -EINVAL) {
		/* Refused: the pipe holds our header alone. */
		if (r == -EOPNOTSUPP)
			l->splice_skip = FRONT_SPLICE_BACKOFF;
		if (read(l->pipe_rd, &oh, sizeof(oh)) == (ssize_t)sizeof(oh))
			return false;
	}
	loop_pipe_close(l);
	loop_pipe_open(l);
	return false;
}

/*
 * Mapped replies.  A read on a /dev/fuse loop, with every leg in memory, is
 * answered by one write into /dev/fuse of {the reply's header, the leg's
 * own bytes}: bufio_map_around() lends a pointer into the leg's mapping
 * (dmio's, "Engine details"), and the kernel's copy from there into the
 * reader's pages is the only copy (no memcpy into a reply buffer, none
 * into a reply slot, no pipe).  Only where a read-around would read that
 * leg and nothing else: the same refusals as the splice (checksums, a
 * range unwritten, out of sync or with bad blocks, a dirty or
 * being-written block in the cache, a fault injected), and a page of the
 * range not known to exist in the leg (a hole: the kernel's read fault
 * there would allocate a page); anything else falls back to the splice or
 * the read-around.
 *
 * Which write: a request of the loop's blocking clone is answered there by
 * writev() (loop_clone_fd()), a reply of FRONT_REPLY_MAX or less
 * goes on the loop's ring as the others do ("Replies on the ring": an
 * IORING_OP_WRITEV of {slot header, leg bytes}, which the loop's next
 * io_uring_enter writes inline), a larger one by writev() at once.
 *
 * What is held: the loan (the leg referenced, so not removed or closed,
 * and its mapping there) until the write returns, or for a ring reply
 * until its CQE (loop_reply_done()); a loop ends only once its ring
 * replies are done.  Nothing else: the bytes are read when the write is
 * made, not when the read was looked at, so a write that completes
 * between the two (on the other loop, or in the same turn on this one)
 * may show in them, whole or in part: it was concurrent with this read,
 * whose reply the client has not had.  Every write that completed before
 * the look is in the leg (bufio's rule, as for the splice).
 *
 * Failures: the request is the kernel's once the write starts.  A copy
 * from a leg page that cannot be faulted in (the leg file truncated behind
 * us) makes the kernel end the request with EIO (fuse_dev_do_write())
 * and the write fail with EFAULT: the client's read fails with EIO, no
 * fallback is possible (counted in `errors`).  The loan ends with the
 * error and the blocks lent (bufio_map_put()): a read error of the leg
 * there, which the mirror counts and reports; the leg's memory is not lent
 * again until it is written, so the reads that follow go through the
 * engine, whose read error the mirror repairs from another leg
 * (tests/integration/leg_shrunk.sh: one read in flight fails, not every
 * other one).  ENOENT: the request was interrupted, as for any reply.
 */
static bool read_mapped(struct front *f, front_rq req, uint64_t off, size_t size)
{
	struct front_loop *l = tl_loop;
	uint64_t b0 = off / f->bs, n = (off + size + f->bs - 1) / f->bs - b0;
	uint64_t unique;
	struct fuse_out_header hdr;
	struct io_uring_sqe *sqe;
	struct front_reply *r;
	struct iovec iov[2];
	const void *ptr;
	void *hold;
	bool blocking;
	ssize_t n_out;
	int fd, rc, err;

	if (!l || l->f != f || !tl_rbuf || (rq_fuse(req) != NULL) != (l->fd < 0) ||
	    (fd = loop_cur_reply_fd(f, l, &unique, &blocking)) < 0 || loop_skip(&l->map_skip))
		return false;
	rc = bufio_map_around(f->c, b0, n, &ptr, &hold);
	if (rc) {
		if (rc == -EOPNOTSUPP)
			l->map_skip = FRONT_SPLICE_BACKOFF;
		return false;
	}
	ptr = (const char *)ptr + (off - b0 * f->bs);
	FRONT_STAT_ADD(f, read_bytes, size);
	FRONT_STAT_ADD(f, mapped_replies, 1);
	FRONT_STAT_ADD(f, mapped_reply_bytes, size);
	if (l->fd >= 0 && !blocking && sizeof(hdr) + size <= FRONT_REPLY_MAX &&
	    (r = loop_reply_slot(l, &sqe))) {
		loop_reply_prep_data(l, r, sqe, unique, ptr, size);
		r->map_hold = hold;
		r->map_block = b0;
		r->map_blocks = n;
		dmio_loop_sqe_prompt(l->dl);
		loop_reply_commit(l, r, sqe);
		FRONT_STAT_ADD(f, ring_replies, 1);
		return true;
	}
	hdr = (struct fuse_out_header){ .len = (uint32_t)(sizeof(hdr) + size),
					.unique = unique & ~FRONT_LOOP_TAG_MASK };
	iov[0] = (struct iovec){ &hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ (void *)ptr, size };
	n_out = writev(fd, iov, 2);
	err = n_out < 0 ? errno : 0;
	if (err && err != ENOENT)
		fm_debug("front: mapped reply of %zu bytes at %llu: %s", size,
			 (unsigned long long)off, strerror(err));
	read_mapped_end(f, hold, b0, n, -err);
	if (rq_fuse(req))
		fuse_reply_none(rq_fuse(req));
	return true;
}

static ssize_t loop_io_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

static const struct fuse_custom_io loop_io = {
	.read = loop_io_read,
	.writev = loop_io_writev,
};

/*
 * A read() of the loop's clone failed with @err.  Nothing to read
 * (EAGAIN), a request the kernel took back (ENOENT) and a signal (EINTR)
 * are not failures, but the stop signals' handler only marks the session
 * exited: a stop is noticed here.  ENODEV is the unmount.
 */
static void loop_read_failed(struct front_loop *l, int err)
{
	struct front *f = l->f;

	if (err == EAGAIN || err == EINTR || err == ENOENT) {
		if (fuse_session_exited(f->se))
			loop_stop_all(f);
		return;
	}
	if (err != ENODEV) {
		front_stop_failed(f, "reading /dev/fuse", err);
		return;
	}
	fuse_session_exit(f->se);
	loop_stop_all(f);
}

/* Is @l a standby loop (polls only while f->standby_on)? */
static bool loop_is_standby(const struct front_loop *l)
{
	return l->idx >= l->f->nr_active;
}

/* Is @l a standby loop that is not to poll now? */
static bool loop_parks(const struct front_loop *l)
{
	unsigned s = atomic_load_explicit(&l->f->spinner, memory_order_relaxed);

	return (s && s != l->idx + 1) ||
	       (loop_is_standby(l) &&
		!atomic_load_explicit(&l->f->standby_on, memory_order_relaxed));
}

/*
 * A group of writes read from /dev/fuse on legs in memory (see
 * loop_read_batch()): each is told of (front_hint(): the legs' lines it
 * will store to, prefetched) before the first is served, as an io_uring
 * queue does with its ring's batch (front_ring_peek()), so that the
 * group's page walks and line misses overlap each other instead of each
 * write's waiting alone in dmio()'s prefetch (a random 4 KiB write into a
 * tmpfs leg misses the TLB and the cache in every leg).  The leg copies
 * are inline there, no leg I/O waits to be submitted between them.
 */
static void loop_hint_batch(struct front_loop *l, struct front_rbuf **b, const size_t *len,
			    unsigned n)
{
	struct front *f = l->f;

	if (n > 1 && atomic_load_explicit(&f->inited, memory_order_acquire))
		for (unsigned i = 0; i < n; i++) {
			const struct fuse_in_header *h =
				(const void *)((char *)b[i]->mem + FRONT_RBUF_REQ);

			if (len[i] >= sizeof(*h) + sizeof(struct fuse_write_in) && h->len == len[i])
				front_hint(f, h, h + 1);
		}
	for (unsigned i = 0; i < n; i++)
		loop_dispatch(l, b[i], len[i], false);
}

/* Is request @b (@len bytes read) a FUSE_WRITE? */
static bool loop_rbuf_is_write(const struct front_rbuf *b, size_t len)
{
	const struct fuse_in_header *h = (const void *)((const char *)b->mem + FRONT_RBUF_REQ);

	return len >= sizeof(*h) && h->opcode == FUSE_WRITE;
}

/*
 * Read and dispatch the requests waiting, up to a batch, until EAGAIN.
 * After a wake-up that found a lone request, read one only: the EAGAIN
 * read that ends a batch is one system call of five per request at QD1,
 * while the poll re-armed next completes at once if more are waiting.
 * Every FRONT_LOOP_PROBE-th wake-up reads a batch again, to notice a
 * deeper queue (at QD32 a request a wake-up costs an io_uring_enter each).
 *
 * The leg I/O the batch's requests queued goes to the disk every
 * FRONT_LOOP_SUBMIT requests (dmio_loop_submit(): nothing when nothing is
 * queued, as on legs in memory, whose copies are inline), not all in the
 * enter that ends the turn: a batch of 32 took ~50 us to read, and the
 * disk idled until its last request was read, then got 32 reads at once,
 * which a virtio disk completes together; the replies, fio's next 32 and
 * their reads came back as one convoy (the disk's in-flight count swung
 * 32/0).  Sooner, the disk starts on the first reads while the rest are
 * read, and the convoy breaks up (completions per burst, median, 32 ->
 * 6).  fio 4k QD32 randread on 2 O_DIRECT legs on disk, A/B same binary,
 * load 1.3-2: every 2 won its 6 rounds (+2..+17%, e.g. 57.0k -> 67.0k IOPS
 * median), 1 and 4 won less, 3, 6 and 8 not clearly; daemon CPU per read
 * unchanged (7.2-9.9 us).  (doc/DESIGN.md, "Cold 4 KiB reads on legs on
 * disk", has the timeline.)
 */
static unsigned loop_read_batch(struct front_loop *l)
{
	struct front *f = l->f;
	int fd = l->fd >= 0 ? l->fd : fuse_session_fd(f->se);
	unsigned max = FRONT_LOOP_BATCH;
	/* Legs in memory: small writes are read in groups of
	 * FRONT_LOOP_HINT_BATCH (or fewer, at EAGAIN or at another request),
	 * each group told of, then served (loop_hint_batch()), and the loop
	 * reads on.  A whole batch read before any was served left the
	 * requests that came meanwhile to the other loop, which they woke
	 * (0.066 -> 0.111 context switches per 4k write, the CPU saved in
	 * user space spent again in the kernel).  Other requests are served
	 * as they are read (after the group before them): 4k QD32 reads told
	 * of showed no gain, and 1M QD8 writes read in a batch paid ~20 us
	 * more user CPU per MiB, their payloads out of the caches by their
	 * copies (FRONT_LOOP_HINT_MAX). */
	bool hint = f->legs_in_memory;
	struct front_rbuf *got[FRONT_LOOP_BATCH];
	size_t got_len[FRONT_LOOP_BATCH];
	unsigned n, nr_got = 0;
	int err = 0;

	/* (A standby loop about to stop polling empties the queue first:
	 * see loop_arm().) */
	if (l->lone && ++l->lone_wakeups % FRONT_LOOP_PROBE && !loop_parks(l))
		max = 1;
	l->owes = true;
	for (n = 0; n < max && !atomic_load(&f->stopping); n++) {
		struct front_rbuf *b;
		ssize_t res;

		if (!l->free)
			loop_collect(l);
		b = l->free;
		if (!b)
			break;
		res = read(fd, (char *)b->mem + FRONT_RBUF_REQ, FRONT_RBUF_SIZE - FRONT_RBUF_REQ);
		if (res <= 0) {
			err = res < 0 ? errno : ENODEV;
			l->owes = false;
			/* (A wake-up that found none, the other loop having
			 * read its request, says nothing of the depth.) */
			if (err == EAGAIN && n) {
				l->lone_before = l->lone;
				l->lone = n == 1;
			}
			break;
		}
		l->free = b->next;
		if (hint && max > 1 && (size_t)res <= FRONT_LOOP_HINT_MAX &&
		    loop_rbuf_is_write(b, (size_t)res)) {
			got[nr_got] = b;
			got_len[nr_got++] = (size_t)res;
			if (nr_got == FRONT_LOOP_HINT_BATCH) {
				loop_hint_batch(l, got, got_len, nr_got);
				nr_got = 0;
			}
			continue;
		}
		if (nr_got) {
			/* (another request: the group before it first) */
			loop_hint_batch(l, got, got_len, nr_got);
			nr_got = 0;
		}
		loop_dispatch(l, b, (size_t)res, false);
		if ((n + 1) % FRONT_LOOP_SUBMIT == 0)
			dmio_loop_submit(l->dl);
	}
	if (nr_got)
		loop_hint_batch(l, got, got_len, nr_got);
	if (err)
		loop_read_failed(l, err);
	return n;
}

/*
 * Standby loops.  On /dev/fuse with a leg not in memory, loops beyond
 * the first nproc/2 (f->nr_active) poll the device only while the
 * requests keep a loop busy with no leg I/O of its own: 4 KiB writes
 * copied into the cache (and reads it answers), CPU work that two
 * loops share, where a read's leg I/O is the disk's wait, which one
 * loop serves best (doc/DESIGN.md, "Cold 4 KiB reads on legs on disk").
 * After each batch of requests read (@n; loop_block()'s one or two
 * too), a loop looks at its ring: leg I/O in flight turns the standby
 * loops off (they finish what they read and arm no poll again); an
 * active loop's FRONT_STANDBY_TURNS batches in a row of two requests or
 * more that left none turn them on (and wake them: they sleep on their
 * rings).  io.standby_reads counts what the standby loops read.
 *
 * A standby loop stops polling only after a batch that emptied the
 * queue (read until EAGAIN; `owes` until then, loop_arm()).  An io_uring
 * POLL_ADD stays on the device's wait queue from its wake-up until its
 * task work runs on the loop's thread, and io_poll_wake() tells every
 * wake-up meanwhile that it woke someone (/dev/fuse wakes with no key,
 * so the entry is not even unlinked at the first): with EPOLLEXCLUSIVE,
 * the one poll takes the wake-ups of all the requests queued in that
 * window (fio submits a burst in one system call), and the loops
 * waiting behind it hear of none.  A loop that polls again is safe (the
 * new poll finds the queue not empty), but a standby loop that read one
 * request (lone) and then did not poll again left the rest queued with
 * every loop asleep, until some other request woke one: at the end of a
 * run, or a burst the client waits for whole, none came.  Main 6916b17,
 * 2 CPUs, 2 legs on disk: fio 4k bursts of 16 waited whole
 * (iodepth_batch_submit = iodepth_batch_complete_min = 16) stuck for
 * good within seconds, the daemon holding nothing, the poll of loop 0
 * armed, the requests still in the kernel's queue (`waiting` 1-15), and
 * one more request freed them.
 */
#define FRONT_STANDBY_TURNS 4

/*
 * Legs in memory (/dev/fuse): one loop polls always, the others only
 * while large requests, requests one at a time, or several clients at a
 * depth come.  A loop at 4k
 * QD32 copies the writes to the legs itself, with no leg I/O to wait
 * for, so two loops only took turns: each emptied the queue in its turn
 * and slept, and the next request woke the other (0.03-0.09 context
 * switches per 4k write against none with one loop, whose CPU per write
 * is lower with them).  A read or write of FRONT_LOOP_BIG or more (1 MiB:
 * the kernel's copy of the payload and the legs' copies, ~100 us each)
 * wants both CPUs, and so does QD1 (the spin, loop_spin(): one loop
 * alone lost 4k QD1 reads, 51-58k against 59-70k IOPS): a batch of one
 * (@n == 1) or with such a request turns the standby loops on,
 * FRONT_STANDBY_MEM_TURNS batches in a row of two requests or more
 * without one turn them off again.
 *
 * So does a batch of FRONT_STANDBY_MEM_CALLERS_BATCH requests or more
 * while several clients send requests (front_several_callers()): one
 * loop against several clients at a depth lost on 2 CPUs, where the
 * one client at QD32 won, and on more CPUs it would be one CPU's copies
 * for all of them.  With 4 fio jobs at 4k QD8 on 2 CPUs the one loop ran
 * 0.6-0.7 of a CPU and waited runnable behind the clients for 0.3-0.6 of
 * its run time (schedstat), two loops together ~0.85 of a CPU: the IOPS
 * 0.90 (randwrite) and 0.96 (randread) of every loop polling.  Batches
 * of two are left to the rules above: two QD1 clients send no more, and
 * the rule with standby loops on and off by turns did at least as well
 * there as every loop polling (doc/DESIGN.md).
 */
#define FRONT_STANDBY_MEM_TURNS 16
#define FRONT_STANDBY_MEM_CALLERS_BATCH 3

static void loop_standby_mem(struct front_loop *l, unsigned n)
{
	struct front *f = l->f;
	bool on = atomic_load_explicit(&f->standby_on, memory_order_relaxed);

	if (l->big || n == 1 ||
	    (n >= FRONT_STANDBY_MEM_CALLERS_BATCH && front_several_callers(f, fm_now_ns()))) {
		l->big = false;
		l->busy_turns = 0;
		if (!on) {
			atomic_store_explicit(&f->standby_on, true, memory_order_relaxed);
			front_wake_range(f, f->nr_active, f->nr_loops);
		}
		return;
	}
	if (n > 1 && on && ++l->busy_turns >= FRONT_STANDBY_MEM_TURNS) {
		l->busy_turns = 0;
		atomic_store_explicit(&f->standby_on, false, memory_order_relaxed);
	}
}

static void loop_standby(struct front_loop *l, unsigned n)
{
	struct front *f = l->f;

	if (f->nr_active == f->nr_loops)
		return;
	if (loop_is_standby(l))
		FRONT_STAT_ADD(f, standby_reads, n);
	if (f->legs_in_memory) {
		loop_standby_mem(l, n);
		return;
	}
	if (!dmio_loop_idle(l->dl)) {
		l->busy_turns = 0;
		if (atomic_load_explicit(&f->standby_on, memory_order_relaxed))
			atomic_store_explicit(&f->standby_on, false, memory_order_relaxed);
		return;
	}
	if (n < 2 || loop_is_standby(l) || ++l->busy_turns < FRONT_STANDBY_TURNS ||
	    atomic_load_explicit(&f->standby_on, memory_order_relaxed))
		return;
	atomic_store_explicit(&f->standby_on, true, memory_order_relaxed);
	front_wake_range(f, f->nr_active, f->nr_loops);
}

static void loop_read(struct front_loop *l)
{
	loop_standby(l, loop_read_batch(l));
}

/*
 * Requests read on the ring.  The one loop that polls always on legs on
 * disk (f->nr_active == 1) reads its clone with one multishot
 * IORING_OP_READ (Linux 6.7) into provided buffers, instead of a POLL_ADD
 * and a read() per request: its free request buffers are in a
 * provided-buffer ring registered with its io_uring, and the READ takes
 * one per request.  It reads every request waiting when it is issued (in
 * the io_uring_enter that also submits the loop's leg I/O and replies),
 * then io_uring polls the device for it and, when requests come, reads
 * them all in the task work of the loop's next wait (DEFER_TASKRUN), one
 * CQE each.  So a request costs no system call of its own, and a burst
 * is read in the enter that the loop makes anyway.  io_uring polls
 * without EPOLLEXCLUSIVE: a request wakes every such READ, which is why
 * only the one loop that polls always does this (the standby loops, and
 * every loop on legs in memory, poll exclusively and read() as before).
 * A request's buffer goes back to the provided ring when its handler is
 * done with it (front_rbuf_release() via the free list); with none there
 * the READ ends (ENOBUFS) and is armed again once one is back.  Stopping
 * cancels the READ (IORING_OP_ASYNC_CANCEL of the clone's fd), and the
 * loop ends only once its last completion is reaped (loop_done()); an
 * unmount ends it with ENODEV.  The leg I/O the requests queue goes to
 * the disk every FRONT_LOOP_RD_SUBMIT of them (as FRONT_LOOP_SUBMIT for
 * read(): a burst read at once would otherwise reach the disk whole once
 * the loop handled every completion).  fio 4k QD32 randread, 2 O_DIRECT
 * legs on disk, 10 ABBA pairs against the read() loop (load 0.8-1.9):
 * system calls per request 1.50 -> 0.45 (io_uring_enter 0.63 -> 0.45,
 * read() 0.87 -> 0), daemon CPU per read lower in 8 of 10 (median 6.3 ->
 * 5.45 us), IOPS won 5 of 10 (the disk's own pace moved 52-73k between
 * rounds; its mean depth ~18 either way, raw's ~25).  Every request
 * (no submit before the enter that waits): 0.24 calls, CPU lower, but
 * IOPS lost 6 of 10 (the convoy again); every 2: 0.65 calls, CPU not
 * lower.  One plain READ per buffer instead (four armed): every READ
 * wakes at each request, the losers retry and re-poll, and io_uring
 * gives up polling one after 128 retries (EAGAIN, through io-wq).
 */
#define FRONT_OP_READ_MULTISHOT 49      /* IORING_OP_READ_MULTISHOT, uapi (6.7) */
#define FRONT_LOOP_RD_ENTRIES 16        /* >= FRONT_LOOP_BUFS, a power of two */
#define FRONT_LOOP_RD_GROUP 0           /* its buffer group on the loop's ring */
#define FRONT_LOOP_RD_SUBMIT 4          /* leg I/O submitted every N requests so read */

/* Set up the provided-buffer ring of a loop that reads on its ring (its
 * owner, once); false: it polls instead. */
static bool loop_rd_init(struct front_loop *l)
{
	struct io_uring_buf_reg reg = { .ring_entries = FRONT_LOOP_RD_ENTRIES,
					.bgid = FRONT_LOOP_RD_GROUP };
	/* A kernel before 6.7 (Debian 12's 6.1) lacks the opcode: ask the
	 * ring rather than arm a READ that would come back EINVAL. */
	struct io_uring_probe *probe = io_uring_get_probe_ring(dmio_loop_ring(l->dl));
	bool have = probe && io_uring_opcode_supported(probe, FRONT_OP_READ_MULTISHOT);
	int r;

	_Static_assert(FRONT_LOOP_BUFS <= FRONT_LOOP_RD_ENTRIES, "every buffer fits the ring");
	if (probe)
		io_uring_free_probe(probe);
	if (!have) {
		fm_debug("front: loop %u: no multishot READ in this kernel: polling", l->idx);
		return false;
	}
	if (posix_memalign((void **)&l->rd_br, FM_PAGE_SIZE,
			   FRONT_LOOP_RD_ENTRIES * sizeof(struct io_uring_buf))) {
		l->rd_br = NULL;
		return false;
	}
	io_uring_buf_ring_init(l->rd_br);
	reg.ring_addr = (uintptr_t)l->rd_br;
	r = io_uring_register_buf_ring(dmio_loop_ring(l->dl), &reg, 0);
	if (r < 0) {
		fm_debug("front: loop %u: no provided-buffer ring (%s): polling", l->idx,
			 strerror(-r));
		free(l->rd_br);
		l->rd_br = NULL;
		return false;
	}
	return true;
}

/* The kernel refused the READ (none in flight): take the buffers back
 * from the provided ring, and poll instead. */
static void loop_rd_off(struct front_loop *l)
{
	io_uring_unregister_buf_ring(dmio_loop_ring(l->dl), FRONT_LOOP_RD_GROUP);
	for (unsigned k = 0; k < l->nr_bufs; k++)
		if (l->bufs[k].given) {
			l->bufs[k].given = false;
			l->bufs[k].next = l->free;
			l->free = &l->bufs[k];
		}
	l->rd_given = 0;
	l->ring_reads = false;
}

/* Hand the loop's free request buffers to its provided ring. */
static void loop_rd_give(struct front_loop *l)
{
	unsigned n = 0;

	if (!l->free)
		loop_collect(l);
	while (l->free) {
		struct front_rbuf *b = l->free;

		l->free = b->next;
		b->given = true;
		io_uring_buf_ring_add(l->rd_br, (char *)b->mem + FRONT_RBUF_REQ,
				      FRONT_RBUF_SIZE - FRONT_RBUF_REQ, (unsigned short)(b - l->bufs),
				      io_uring_buf_ring_mask(FRONT_LOOP_RD_ENTRIES), (int)n);
		n++;
	}
	if (n) {
		io_uring_buf_ring_advance(l->rd_br, (int)n);
		l->rd_given += n;
	}
}

static void loop_rd_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct front_loop *l = (struct front_loop *)((char *)op - offsetof(struct front_loop, rd_op));

	if (!(cqe_flags & IORING_CQE_F_MORE))
		l->rd_armed = false;
	if (cqe_flags & IORING_CQE_F_BUFFER) {
		struct front_rbuf *b = &l->bufs[cqe_flags >> IORING_CQE_BUFFER_SHIFT];

		b->given = false;
		l->rd_given--;
		if (res > 0) {
			l->rd_turn++;
			FRONT_STAT_ADD(l->f, ring_reads, 1);
			loop_dispatch(l, b, (size_t)res, false);
			if (l->rd_turn % FRONT_LOOP_RD_SUBMIT == 0)
				dmio_loop_submit(l->dl);
			/* Its buffer, unless held, is free again. */
			loop_rd_give(l);
			return;
		}
		b->next = l->free;
		l->free = b;
	}
	if (res > 0 || res == -ECANCELED || res == -ENOBUFS)
		return;         /* (armed again by loop_arm()) */
	if (res == -EINVAL || res == -EBADFD || res == -EOPNOTSUPP) {
		fm_debug("front: loop %u: multishot READ of /dev/fuse: %s: polling", l->idx,
			 strerror(-res));
		loop_rd_off(l);
		return;
	}
	loop_read_failed(l, res < 0 ? -res : ENODEV);
}

static void loop_cancel_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	(void)op;
	(void)res;
	(void)cqe_flags;
}

/* Keep the loop's multishot READ armed (loop_arm(), ring_reads). */
static void loop_arm_reads(struct front_loop *l)
{
	struct io_uring_sqe *sqe;

	if (atomic_load(&l->f->stopping)) {
		if (l->rd_armed && !l->rd_cancel && (sqe = dmio_loop_get_sqe(l->dl))) {
			io_uring_prep_cancel_fd(sqe, l->fd, IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data(sqe, &l->cancel_op);
			l->rd_cancel = true;
		}
		return;
	}
	loop_rd_give(l);
	if (l->rd_armed || !l->ring_reads)
		return;
	if (!l->rd_given) {
		/* No buffer in the ring: wait for one (loop_has_free()). */
		if (!loop_has_free(l))
			return;
		loop_rd_give(l);
	}
	sqe = dmio_loop_get_sqe(l->dl);
	if (!sqe)
		return;
	io_uring_prep_rw(FRONT_OP_READ_MULTISHOT, sqe, l->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = FRONT_LOOP_RD_GROUP;
	io_uring_sqe_set_data(sqe, &l->rd_op);
	l->rd_armed = true;
}

static void loop_poll_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct front_loop *l = (struct front_loop *)((char *)op - offsetof(struct front_loop, poll_op));

	(void)cqe_flags;
	l->polling = false;
	if (res == -ECANCELED)
		return;
	if (res < 0)
		fm_debug("front: polling /dev/fuse: %s", strerror(-res));
	/* POLLERR (the connection is gone) shows as ENODEV from read(). */
	loop_read(l);
}

/*
 * Loop 0 without a kick timer (timer_create() failed) still wakes every
 * second, to see a stop signal handled just before its wait began (see
 * front_signal_handler()).
 */
static void loop_tick_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct front_loop *l = (struct front_loop *)((char *)op - offsetof(struct front_loop, tick_op));

	(void)res;
	(void)cqe_flags;
	l->ticking = false;
	if (fuse_session_exited(l->f->se))
		loop_stop_all(l->f);
}

static void loop_arm(struct front_loop *l, bool tick)
{
	struct front *f = l->f;
	struct io_uring_sqe *sqe;

	if (tick && !l->ticking && (sqe = dmio_loop_get_sqe(l->dl))) {
		l->tick = (struct __kernel_timespec){ .tv_sec = 1 };
		io_uring_prep_timeout(sqe, &l->tick, 0, 0);
		io_uring_sqe_set_data(sqe, &l->tick_op);
		l->ticking = true;
	}
	if (l->ring_reads || l->rd_armed) {
		loop_arm_reads(l);
		return;
	}
	if (atomic_load(&f->stopping))
		return;
	if (l->polling)
		return;
	if (loop_parks(l) && !l->owes)
		return;
	if (!loop_has_free(l))
		return;
	sqe = dmio_loop_get_sqe(l->dl);
	if (!sqe)
		return;
	/* Exclusive: a request wakes one polling loop, not all of them (the
	 * others would only find the queue empty). */
	io_uring_prep_poll_add(sqe, l->fd >= 0 ? l->fd : fuse_session_fd(f->se),
			       POLLIN | EPOLLEXCLUSIVE);
	io_uring_sqe_set_data(sqe, &l->poll_op);
	l->polling = true;
}

/*
 * Blocking mode.  At QD1 a request woke its loop through the ring: the
 * POLL_ADD's wake-up queues task work, which wakes the io_uring_enter
 * that waits, which returns a CQE, and then the loop read()s the request.
 * The ceiling (libfuse's workers on bench/memfuse) just sleeps in read().
 * So a loop that reads its requests one at a time (`lone`, its last two
 * batches one request each: at QD32 a batch of one is not rare) and has
 * nothing in flight on its ring (no leg I/O, no poll armed, no reply on
 * the ring) waits for its next request the same way: a blocking read() of
 * a second clone of the session fd (bfd, without O_NONBLOCK); the request
 * is answered on that clone (FRONT_LOOP_TAG_BLOCK) by writev().  On
 * in-memory legs a request's leg copies are made inline, so at QD1 the
 * loop is idle again once it answered: 3 system calls per 4k read (the
 * read, the leg's preadv2, the writev), the ceiling's count, and no ring
 * wait.  Leg I/O in flight sends the loop back to its ring (and its poll)
 * until it is idle again.  The first request read so after polling, and
 * every FRONT_LOOP_PROBE-th after it, before answering it, the loop reads its O_NONBLOCK clone once more: a
 * request waiting there means a deeper queue (after the reply it could
 * be the same client's next one), and the loop polls and reads batches
 * (loop_read()) until a batch is one request again.  A loop
 * blocked in read() hears of a stop through its kick, FRONT_LOOP_KICK_SIG
 * sent to its thread (its handler does nothing, installed without
 * SA_RESTART: the read() fails with EINTR) at once by the stop
 * (front_kick_loops()), and from then on every 100 ms by its timer, for
 * a kick that came just before the read() began; an unmount ends the
 * read() at once (ENODEV).  Until a stop the timer is off.
 * 4k QD1 randread on 2 tmpfs legs, same binary with and without, 6
 * alternating pairs of 2 s runs (load 1.8-2.8): mean latency 10.3 -
 * 38.5 us (median ~20) without, 8.6 - 20.9 (median ~11) with, every pair
 * won; daemon CPU per read 6.0-13.5 (median ~8) against 5.1-8.1 (~6.3);
 * the ceiling 18.5-51.9 us in the same runs.
 */

static void loop_kick_handler(int sig)
{
	(void)sig;
}

/* Set up the loop's kick (its owner, once); false: no blocking mode (and
 * loop 0 ticks). */
static bool loop_kick_init(struct front_loop *l)
{
	struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID,
				.sigev_signo = FRONT_LOOP_KICK_SIG };
	pid_t self = gettid();
	sigset_t kick;

	sev._sigev_un._tid = self;
	if (timer_create(CLOCK_MONOTONIC, &sev, &l->kick) < 0) {
		fm_debug("front: loop %u: no kick timer (%s): no blocking reads", l->idx,
			 strerror(errno));
		return false;
	}
	/* (off until a stop: front_kick_loops(), front_signal_handler()) */
	sigemptyset(&kick);
	sigaddset(&kick, FRONT_LOOP_KICK_SIG);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	l->kick_set = true;
	pthread_mutex_lock(&l->f->kick_lock);
	l->kick_tid = self;
	pthread_mutex_unlock(&l->f->kick_lock);
	return true;
}

/* May the loop wait in a blocking read() now (owner only)? */
static bool loop_may_block(struct front_loop *l)
{
	if (!l->kick_set || l->bfd < 0 || !l->lone || !l->lone_before || l->polling ||
	    l->ring_reads ||
	    l->rd_armed ||
	    atomic_load(&l->f->stopping) ||
	    loop_parks(l) ||
	    !dmio_loop_idle(l->dl))
		return false;
	if (l->replies_out) {
		/* Coming from the ring: its replies go out first (inline
		 * writes: the second call reaps them). */
		dmio_loop_run_once(l->dl, false);
		dmio_loop_run_once(l->dl, false);
		if (l->replies_out)
			return false;
	}
	if (!l->free)
		loop_collect(l);
	return l->free != NULL;
}

/* @l spins no more (if it did): the loops that parked meanwhile poll or
 * block again (owner only). */
static void loop_unspin(struct front_loop *l)
{
	unsigned me = l->idx + 1;

	if (atomic_load(&l->f->spinner) != me)
		return;
	atomic_store(&l->f->spinner, 0);
	front_wake_range(l->f, 0, l->idx);
	front_wake_range(l->f, me, l->f->nr_loops);
}

/* Make bfd blocking again, or not (owner only); false: fcntl failed. */
static bool loop_bfd_nonblock(struct front_loop *l, bool on)
{
	int fl;

	if (l->bfd_nonblock == on)
		return true;
	fl = fcntl(l->bfd, F_GETFL);
	if (fl < 0 || fcntl(l->bfd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
		return false;
	l->bfd_nonblock = on;
	return true;
}

/*
 * The spin (front_opts.spin_us; legs in memory, /dev/fuse).  A loop in
 * blocking mode that has just answered a request, before it sleeps in
 * read() of bfd, reads bfd O_NONBLOCK for up to spin_max_ns
 * (sched_yield() between tries, so that a client on its CPU runs), as
 * QEMU's iothreads poll before they block.  At QD1 on 2 CPUs with the
 * other one idle, a sleeping loop and its client woke each other's CPU at
 * every request (doc/DESIGN.md, "FUSE transports": the QD1 lottery); a
 * spinning loop needs no wake-up, and its CPU, busy, keeps the client's
 * wake-ups on it.  One loop spins at a time (f->spinner, held from its
 * first spin until its window ends without a request or it leaves
 * blocking mode), and the others park meanwhile (loop_parks(): no poll, no
 * blocking read; each request woke such an exclusive waiter for nothing,
 * 1.7 context switches per request) until loop_unspin() wakes them.  A
 * deeper queue is noticed by the probe, as in blocking mode.
 *
 * No loop spins while several clients send requests (loop_note_caller()):
 * the spinner, which nearly always found a request queued, took the CPU
 * the other clients needed (doc/DESIGN.md); nor while a client's requests
 * come further apart than spin_max_ns (loop_spin_adapt()).  @t0: when the
 * loop began to wait.
 * Returns the request read (its length), or 0: none came, bfd is blocking
 * again; < 0 (errno): the read failed.
 */
static ssize_t loop_spin(struct front_loop *l, struct front_rbuf *b, uint64_t t0)
{
	struct front *f = l->f;
	unsigned me = l->idx + 1, cur = 0;
	uint64_t t;
	ssize_t res = 0;

	if (!l->blocking || front_several_callers(f, t0) ||
	    (atomic_load_explicit(&f->spin_credit, memory_order_relaxed) <= 0 &&
	     atomic_fetch_add_explicit(&f->spin_probes, 1, memory_order_relaxed) % FRONT_SPIN_PROBE) ||
	    (atomic_load(&f->spinner) != me &&
	     !atomic_compare_exchange_strong(&f->spinner, &cur, me))) {
		loop_unspin(l);
		if (!loop_bfd_nonblock(l, false))
			return -1;
		return 0;
	}
	if (!loop_bfd_nonblock(l, true)) {
		loop_unspin(l);
		return -1;
	}
	for (;;) {
		res = read(l->bfd, (char *)b->mem + FRONT_RBUF_REQ, FRONT_RBUF_SIZE - FRONT_RBUF_REQ);
		if (res > 0) {
			FRONT_STAT_ADD(f, spun_reads, 1);
			return res;
		}
		if (res < 0 && errno != EAGAIN)
			break;
		t = fm_now_ns();
		if (t - t0 >= f->spin_max_ns || atomic_load(&f->stopping))
			break;
		sched_yield();
	}
	loop_unspin(l);
	if (res < 0 && errno != EAGAIN)
		return res;
	FRONT_STAT_ADD(f, spin_misses, 1);
	if (!loop_bfd_nonblock(l, false))
		return -1;
	return 0;
}

/*
 * Whether loops spin, after a wait of @block_ns for a request: a credit,
 * one up (to FRONT_SPIN_CREDIT) for a wait a window catches (up to
 * spin_max_ns, slept or spun), one down (to 0) for a longer one; loops
 * spin while it is above 0, and without it every FRONT_SPIN_PROBE-th wait
 * (loop_spin()).  A client with think time between its requests is not
 * spun for after a few of them.  The probe: a QD1 client whose loop
 * sleeps waits longer (the wake-ups of "the QD1 lottery", doc/DESIGN.md),
 * over 30 us each for transport.sh's python reader, and never gave
 * credit; one spin that catches its request does.  The window's length
 * does not adapt: halved after each long wait, doubled after each short
 * one (QEMU's aio poll), it stayed short for one fio client (each sleep
 * made the next wait long): 78% of its requests read spinning against
 * 99%, 46k against 57k reads a second (3 rounds).  Any loop may call it
 * (relaxed: a lost update costs a step).
 */
#define FRONT_SPIN_CREDIT 32

static void loop_spin_adapt(struct front *f, uint64_t block_ns)
{
	int c = atomic_load_explicit(&f->spin_credit, memory_order_relaxed), to;

	to = block_ns <= f->spin_max_ns ? MIN(c + 1, FRONT_SPIN_CREDIT) : MAX(c - 1, 0);
	if (to != c)
		atomic_store_explicit(&f->spin_credit, to, memory_order_relaxed);
}

/* One turn in blocking mode: wait for a request on bfd and dispatch it. */
static void loop_block(struct front_loop *l)
{
	struct front *f = l->f;
	struct front_rbuf *b;
	uint64_t t0;
	ssize_t res;

	/* What completions queued goes out before the loop sleeps (and
	 * what they did may have changed the picture). */
	dmio_loop_run_once(l->dl, false);
	if (atomic_load(&f->stopping) || l->polling || !dmio_loop_idle(l->dl) || !l->free)
		return;
	b = l->free;
	t0 = f->spin_max_ns ? fm_now_ns() : 0;
	res = f->spin_max_ns ? loop_spin(l, b, t0) : 0;
	if (res == 0)
		res = read(l->bfd, (char *)b->mem + FRONT_RBUF_REQ, FRONT_RBUF_SIZE - FRONT_RBUF_REQ);
	if (res > 0) {
		struct front_rbuf *pb = NULL;
		ssize_t pres = 0;

		if (f->spin_max_ns)
			loop_spin_adapt(f, fm_now_ns() - t0);

		l->free = b->next;
		FRONT_STAT_ADD(f, blocking_reads, 1);
		/* The probe, before this request is answered (after, the
		 * client's next one could be there already): did another
		 * wait behind it? */
		if (!l->blocking)       /* just came: probe at once */
			l->block_turns = FRONT_LOOP_PROBE - 1;
		l->blocking = true;
		if (++l->block_turns % FRONT_LOOP_PROBE == 0 && (pb = l->free)) {
			pres = read(l->fd, (char *)pb->mem + FRONT_RBUF_REQ,
				    FRONT_RBUF_SIZE - FRONT_RBUF_REQ);
			if (pres > 0) {
				l->free = pb->next;
				l->lone = false;        /* poll and read batches */
				l->lone_before = false;
			}
		}
		loop_dispatch(l, b, (size_t)res, true);
		if (pres > 0)
			loop_dispatch(l, pb, (size_t)pres, false);
		loop_standby(l, pres > 0 ? 2 : 1);
		/* Leg copies made inline complete now, and answer.  (A
		 * failed probe leaves its error to the next read.) */
		dmio_loop_run_once(l->dl, false);
		return;
	}
	loop_read_failed(l, res < 0 ? errno : ENODEV);
}

static bool loop_done(struct front_loop *l)
{
	return atomic_load(&l->f->stopping) && atomic_load(&l->f->inflight) == 0 &&
	       dmio_loop_idle(l->dl) && l->replies_out == 0 && l->rd_armed == 0;
}

static void *loop_main(void *arg)
{
	struct front_loop *l = arg;
	struct front *f = l->f;
	bool first = l == &f->loops[0], tick;
	int r;

	r = dmio_loop_create(&(struct dmio_loop_opts){ .sq_entries = 256 }, &l->dl);
	if (r < 0) {
		front_stop_failed(f, "cannot set up an event loop's io_uring", -r);
		return NULL;
	}
	pthread_mutex_lock(&f->kick_lock);
	l->wake = l->dl;
	pthread_mutex_unlock(&f->kick_lock);
	if (!f->uring) {
		/* Registered request buffers: the kernel pins them once (they
		 * are resident from here on), not at every O_DIRECT leg read
		 * or write into or out of them, which dmio then issues FIXED.
		 * 1 MiB QD8 on ext4 legs (cache_size=64M), daemon CPU per
		 * MiB, three A/B pairs: reads 519/671/824 us vs 969/1358/1192,
		 * writes 490/465/668 vs 885/728/472. */
		struct iovec iov[FRONT_LOOP_BUFS + 1];
		unsigned n = 0;

		for (unsigned k = 0; k < l->nr_bufs; k++)
			iov[n++] = (struct iovec){ l->bufs[k].mem, FRONT_RBUF_ALLOC };
		if (l->small_mem)
			iov[n++] = (struct iovec){ l->small_mem,
						   (size_t)FRONT_LOOP_RCTX * FRONT_SMALL_BUF };
		r = dmio_loop_register_buffers(l->dl, iov, n);
		if (r < 0)
			fm_debug("front: loop %u: buffers not registered: %s", l->idx, strerror(-r));
	}
	tl_loop = l;
	l->poll_op.done = loop_poll_done;
	l->tick_op.done = loop_tick_done;
	l->cancel_op.done = loop_cancel_done;
	l->rd_op.done = loop_rd_done;
	if (l->ring_reads && !loop_rd_init(l))
		l->ring_reads = false;
	if (l->ring_reads) {
		/* Requests read during a burst of leg completions go to the
		 * disk before the burst's remaining replies (see "Cold 4 KiB
		 * reads on legs on disk" in doc/DESIGN.md). */
		l->rd_op.first = true;
		dmio_loop_set_first(l->dl);
	}
	if (f->kick_ok && (l->bfd >= 0 || first))
		loop_kick_init(l);
	if (first && l->kick_set) {
		/* A stop signal from now on kicks this loop (before, it only
		 * marked the session exited: look once). */
		f->sig_timer = l->kick;
		atomic_store(&f->sig_timer_set, true);
		atomic_thread_fence(memory_order_seq_cst);
		if (fuse_session_exited(f->se))
			loop_stop_all(f);
	}
	tick = first && !l->kick_set;
	while (!loop_done(l)) {
		if (loop_may_block(l)) {
			loop_block(l);
			continue;
		}
		l->blocking = false;
		loop_unspin(l);
		loop_arm(l, tick);
		/* A wait that submits replies ends on the next request or a
		 * wake-up (dmio_loop_sqe_prompt()): with no poll armed, or
		 * when stopping, neither may come, so they go out first, and
		 * once written the loop may be done. */
		if (l->replies_out && ((!l->polling && !l->rd_armed) || atomic_load(&f->stopping))) {
			dmio_loop_run_once(l->dl, false);
			if (!l->replies_out)
				continue;
		}
		r = dmio_loop_run_once(l->dl, true);
		if (l->rd_turn) {
			loop_standby(l, l->rd_turn);
			l->rd_turn = 0;
		}
		if (r == -EINTR && fuse_session_exited(f->se))
			loop_stop_all(f);
	}
	if (l->kick_set) {
		if (first)
			atomic_store(&f->sig_timer_set, false);
		pthread_mutex_lock(&f->kick_lock);
		l->kick_tid = 0;
		pthread_mutex_unlock(&f->kick_lock);
		timer_delete(l->kick);
	}
	l->kick_set = false;
	tl_loop = NULL;
	pthread_mutex_lock(&f->kick_lock);
	l->wake = NULL;
	pthread_mutex_unlock(&f->kick_lock);
	dmio_loop_destroy(l->dl);
	l->dl = NULL;
	free(l->rd_br);         /* (the ring that read into it is gone) */
	l->rd_br = NULL;
	return NULL;
}

/* A clone of session fd @sfd opened with @flags (beside O_RDWR |
 * O_CLOEXEC), or -1 with errno set. */
static int loop_clone(uint32_t sfd, int flags)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | flags);

	if (fd >= 0 && ioctl(fd, FUSE_DEV_IOC_CLONE, &sfd) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		fd = -1;
	}
	return fd;
}

/* Close the loop's clones (those it has). */
static void loop_clones_close(struct front_loop *l)
{
	if (l->fd >= 0)
		close(l->fd);
	if (l->bfd >= 0)
		close(l->bfd);
	l->fd = l->bfd = -1;
}

/*
 * Give each loop a clone of the session fd and route the replies (see
 * above); on any failure, every loop shares the session fd instead.
 */
static void loop_clone_fds(struct front *f)
{
	uint32_t sfd = (uint32_t)fuse_session_fd(f->se);
	unsigned i;

	for (i = 0; i < f->nr_loops; i++) {
		f->loops[i].fd = loop_clone(sfd, O_NONBLOCK);
		if (f->loops[i].fd < 0)
			break;
		/* The blocking clone: without it the loop only polls. */
		f->loops[i].bfd = loop_clone(sfd, 0);
	}
	if (i == f->nr_loops && fuse_session_custom_io(f->se, &loop_io, (int)sfd) == 0) {
		fm_debug("front: %u loops on clones of /dev/fuse", f->nr_loops);
		return;
	}
	fm_debug("front: no /dev/fuse clone for loop %u (%s): loops share the session fd", i,
		 strerror(errno));
	for (i = 0; i < f->nr_loops; i++)
		loop_clones_close(&f->loops[i]);
}

/* A /dev/fuse loop's bufs_map: its request buffers, then its small ones. */
static size_t loop_bufs_map_len(const struct front_loop *l)
{
	return (size_t)l->nr_bufs * FRONT_RBUF_ALLOC + (size_t)FRONT_LOOP_RCTX * FRONT_SMALL_BUF;
}

static int front_run_loops(struct front *f)
{
	unsigned n = (unsigned)get_nprocs();
	struct front_loop *loops;
	sigset_t block, old;
	int fd = fuse_session_fd(f->se), fl;
	int r = 0;

	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	/* Published under kick_lock: front_wake_loops() and the stop signal
	 * may look at them from other threads (a queue's request ending). */
	loops = calloc(n ? n : 1, sizeof(*loops));
	if (!loops)
		return -ENOMEM;
	pthread_mutex_lock(&f->kick_lock);
	f->loops = loops;
	f->nr_loops = n ? n : 1;
	pthread_mutex_unlock(&f->kick_lock);
	f->nr_active = f->nr_loops;
	if (!f->uring && f->legs_in_memory)
		f->spin_max_ns = f->spin_us * 1000u;
	/* Legs on disk (not all in memory) on /dev/fuse: half of the loops
	 * poll always, the rest only while writes keep a loop busy without
	 * leg I/O (loop_standby(); doc/DESIGN.md, "Cold 4 KiB reads on legs
	 * on disk"): a read's work per request is small, and the loops woke
	 * each other's CPU, but copies into the cache want both. */
	if (!f->uring && !f->legs_in_memory && f->nr_loops > 1)
		f->nr_active = f->nr_loops / 2;
	/* Legs in memory: one, the rest while large requests come
	 * (loop_standby_mem()). */
	if (!f->uring && f->legs_in_memory && f->nr_loops > 1)
		f->nr_active = 1;
	for (unsigned i = 0; i < f->nr_loops; i++) {
		struct front_loop *l = &f->loops[i];

		l->f = f;
		l->idx = i;
		l->fd = -1;
		l->bfd = -1;
		l->lone = true;         /* until a batch says otherwise */
		l->lone_before = true;
		l->pipe_rd = l->pipe_wr = -1;
		if (!f->uring && f->legs_in_memory)
			loop_pipe_open(l);
		l->nr_bufs = f->uring ? FRONT_LOOP_BUFS_URING : FRONT_LOOP_BUFS;
		/* /dev/fuse: the buffers side by side in huge pages, the small
		 * buffers behind them, so that an O_DIRECT leg read of 1 MiB
		 * into one is one or two segments for the disk, not 256 (see
		 * FRONT_LOOP_BUFS).  The io_uring transport's few are small
		 * pages, unregistered: resident only where touched. */
		if (!f->uring && !(l->bufs_map = fm_map_huge(loop_bufs_map_len(l)))) {
			r = -ENOMEM;
			goto out;
		}
		for (unsigned k = 0; k < l->nr_bufs; k++) {
			struct front_rbuf *b = &l->bufs[k];

			b->loop = l;
			if (l->bufs_map)
				b->mem = (char *)l->bufs_map + (size_t)k * FRONT_RBUF_ALLOC;
			else if (posix_memalign(&b->mem, FM_PAGE_SIZE, FRONT_RBUF_ALLOC)) {
				r = -ENOMEM;
				goto out;
			}
			b->cap = FRONT_RBUF_SIZE;
			b->ctx = (char *)b->mem + FRONT_RBUF_SIZE;
			b->next = l->free;
			l->free = b;
		}
		if (!f->uring) {
			l->replies = calloc(FRONT_LOOP_REPLIES, sizeof(*l->replies));
			for (unsigned k = 0; l->replies && k < FRONT_LOOP_REPLIES; k++) {
				struct front_reply *rp = &l->replies[k];

				rp->op.done = loop_reply_done;
				rp->loop = l;
				rp->next = l->reply_free;
				l->reply_free = rp;
			}
		}
		/* rctx[0] first: the last ones border the next loop's
		 * structure, which another thread writes. */
		for (unsigned k = FRONT_LOOP_RCTX; !f->uring && k-- > 0;) {
			l->rctx[k].next = l->rctx_free;
			l->rctx_free = &l->rctx[k];
		}
		if (l->bufs_map)
			l->small_mem = (char *)l->bufs_map + (size_t)l->nr_bufs * FRONT_RBUF_ALLOC;
	}
	if (!f->uring)
		loop_clone_fds(f);
	/* The one loop that polls always on legs on disk reads on its ring
	 * (loop_arm_reads()). */
	if (!f->uring && !f->legs_in_memory && f->nr_active == 1 && f->loops[0].fd >= 0)
		f->loops[0].ring_reads = true;
	{
		/* The kick interrupts a blocked read() or ring wait: no
		 * SA_RESTART.  Without it, no blocking reads, and loop 0
		 * ticks. */
		struct sigaction sa = { .sa_handler = loop_kick_handler };

		sigemptyset(&sa.sa_mask);
		f->kick_ok = sigaction(FRONT_LOOP_KICK_SIG, &sa, NULL) == 0;
		for (unsigned i = 0; !f->kick_ok && i < f->nr_loops; i++) {
			if (f->loops[i].bfd >= 0)
				close(f->loops[i].bfd);
			f->loops[i].bfd = -1;
		}
	}
	/* Signals go to the calling thread, loop 0 (front_signal_handler()). */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned i = 1; i < f->nr_loops; i++) {
		struct front_loop *l = &f->loops[i];

		if (pthread_create(&l->thread, NULL, loop_main, l) == 0) {
			l->started = true;
			pthread_setname_np(l->thread, "fm-loop");
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	fm_debug("front: %u event loop(s)", f->nr_loops);
	loop_main(&f->loops[0]);
	for (unsigned i = 1; i < f->nr_loops; i++)
		if (f->loops[i].started)
			pthread_join(f->loops[i].thread, NULL);
out:
	for (unsigned i = 0; i < f->nr_loops; i++) {
		if (f->loops[i].bufs_map)
			fm_unmap_huge(f->loops[i].bufs_map, loop_bufs_map_len(&f->loops[i]));
		else
			for (unsigned k = 0; k < f->loops[i].nr_bufs; k++)
				free(f->loops[i].bufs[k].mem);
		loop_clones_close(&f->loops[i]);
		loop_pipe_close(&f->loops[i]);
		free(f->loops[i].replies);
	}
	pthread_mutex_lock(&f->kick_lock);
	free(f->loops);
	f->loops = NULL;
	f->nr_loops = 0;
	pthread_mutex_unlock(&f->kick_lock);
	return r;
}

/*----------------------------------------------------------------*/
/* Life cycle */

/*----------------------------------------------------------------*/
/* Stop signals */

/*
 * SIGHUP, SIGINT and SIGTERM stop serving (as libfuse's handlers, which
 * these replace: left alone when not at their default, SIGPIPE ignored).
 * The handler marks the session exited, which every loop checks when a
 * wait of its ends with EINTR; the signal lands on loop 0 (the others
 * block it), but a signal handled between that check and its next wait
 * would be missed: so the handler also arms loop 0's kick timer, whose
 * kicks (1 ms, then every 100 ms until the loop ends) interrupt that
 * wait.  Loop 0 sleeps without a tick.  Any thread: only async-signal-
 * safe calls.
 */
static const int front_stop_signals[] = { SIGHUP, SIGINT, SIGTERM };
static _Atomic(struct front *) front_sig;

static void front_signal_handler(int sig)
{
	static const struct itimerspec soon = { .it_value = { .tv_nsec = 1000000 },
						.it_interval = { .tv_nsec = 100000000 } };
	struct front *f = atomic_load(&front_sig);
	int e = errno;

	(void)sig;
	if (!f)
		return;
	fuse_session_exit(f->se);
	atomic_thread_fence(memory_order_seq_cst); /* against loop 0's start */
	if (atomic_load(&f->sig_timer_set))
		timer_settime(f->sig_timer, 0, &soon, NULL);
	errno = e;
}

static void front_signals_set(struct front *f)
{
	struct sigaction sa = { .sa_handler = front_signal_handler }, old;

	sigemptyset(&sa.sa_mask);
	atomic_store(&front_sig, f);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(front_stop_signals); i++)
		if (sigaction(front_stop_signals[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
		    sigaction(front_stop_signals[i], &sa, NULL) == 0)
			f->signals_set |= 1u << i;
	if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
	    signal(SIGPIPE, SIG_IGN) != SIG_ERR)
		f->sigpipe_set = true;
}

static void front_signals_remove(struct front *f)
{
	struct sigaction old;

	for (unsigned i = 0; i < FM_ARRAY_SIZE(front_stop_signals); i++)
		if ((f->signals_set & (1u << i)) &&
		    sigaction(front_stop_signals[i], NULL, &old) == 0 &&
		    old.sa_handler == front_signal_handler)
			signal(front_stop_signals[i], SIG_DFL);
	f->signals_set = 0;
	if (f->sigpipe_set && sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
		signal(SIGPIPE, SIG_DFL);
	f->sigpipe_set = false;
	atomic_compare_exchange_strong(&front_sig, &(struct front *){ f }, NULL);
}

/*----------------------------------------------------------------*/
/* Transports */

static const char *const transport_names[] = {
	[FRONT_TRANSPORT_AUTO] = "auto",
	[FRONT_TRANSPORT_URING] = "uring",
	[FRONT_TRANSPORT_DEV] = "dev",
};

const char *front_transport_name(enum front_transport t)
{
	return (unsigned)t < FM_ARRAY_SIZE(transport_names) ? transport_names[t] : "?";
}

bool front_transport_from_name(const char *name, enum front_transport *ret)
{
	for (unsigned i = 0; i < FM_ARRAY_SIZE(transport_names); i++) {
		if (!strcmp(name, transport_names[i])) {
			*ret = (enum front_transport)i;
			return true;
		}
	}
	return false;
}

/*
 * May this mount use io_uring?  URING: yes or fail with the kernel's
 * reason; AUTO: by the rule in front.h, with the reason for the log.
 */
static int choose_transport(struct front *f, enum front_transport want, bool *ret_try,
			    GError **err)
{
	g_autoptr(GError) why = NULL;
	unsigned cpus = front_uring_nr_possible_cpus();

	*ret_try = false;
	f->transport = FRONT_TRANSPORT_DEV;
	if (want == FRONT_TRANSPORT_DEV) {
		f->transport_reason = g_strdup("transport=dev");
		return 0;
	}
	if (front_uring_probe(&why) < 0) {
		if (want == FRONT_TRANSPORT_URING) {
			g_set_error(err, FM_MIRROR_ERROR, EOPNOTSUPP, "transport uring: %s",
				    why->message);
			return -EOPNOTSUPP;
		}
		f->transport_reason = g_strdup_printf("transport=auto: %s", why->message);
		return 0;
	}
	if (want == FRONT_TRANSPORT_AUTO && cpus < FRONT_URING_AUTO_MIN_CPUS) {
		f->transport_reason = g_strdup_printf(
			"transport=auto: %u CPUs (io_uring from %u: /dev/fuse is faster on "
			"fewer)", cpus, FRONT_URING_AUTO_MIN_CPUS);
		return 0;
	}
	*ret_try = true;
	return 0;
}

/*
 * A read or write of a batch, told of before any of the batch is handled
 * (DESIGN.md, "FUSE transports"): the leg line it will copy from, or the
 * legs' lines it will store to, are prefetched meanwhile.  @op_in: the
 * request's arguments after the header (FUSE_READ's and FUSE_WRITE's
 * are read only).
 */
static void front_hint(struct front *f, const struct fuse_in_header *h, const void *op_in)
{
	if (h->opcode == FUSE_WRITE) {
		const struct fuse_write_in *w = op_in;
		uint64_t a, end;

		/* What write_on_loop() sends around the cache at once (with
		 * writethrough it goes to the slow pool). */
		if (write_goes_around(f, w->offset, w->size, &a, &end) && end <= f->size &&
		    !f->writethrough)
			bufio_write_soon(f->c, a / f->bs);
		return;
	}
	if (h->opcode == FUSE_READ) {
		const struct fuse_read_in *in = op_in;

		if (in->offset < f->size)
			bufio_read_soon(f->c, in->offset / f->bs);
	}
}

/* A batch the queue's ring delivered (the io_uring transport). */
static void front_ring_peek(void *ctx, struct front_uring_req *e)
{
	front_hint(ctx, front_uring_req_in(e), front_uring_req_op_in(e));
}

/*
 * A request on an io_uring queue thread.  Reads and writes of the image
 * are served here without libfuse, which would allocate a request, take
 * its session-wide lock twice (shared by every queue) and free the request
 * again, for each of them: 4k QD32 randwrite on 2 tmpfs legs spent 4% of
 * its daemon CPU in libfuse's calloc() alone.  The rest goes to the
 * operations above through libfuse, so that both transports share them.
 */
static void front_ring_handle(void *ctx, struct front_uring_req *e)
{
	struct front *f = ctx;
	const struct fuse_in_header *h = front_uring_req_in(e);

	if (h->opcode == FUSE_READ) {
		const struct fuse_read_in *in = front_uring_req_op_in(e);

		front_read(f, rq_of_ring(e), h->nodeid, in->size, (off_t)in->offset);
		return;
	}
	if (h->opcode == FUSE_WRITE) {
		const struct fuse_write_in *in = front_uring_req_op_in(e);
		size_t len;
		const void *data = front_uring_req_payload(e, &len);

		if (in->size > len) {
			rq_reply_err(f, rq_of_ring(e), EINVAL);
			return;
		}
		front_write(f, rq_of_ring(e), h->nodeid, data, in->size, (off_t)in->offset);
		return;
	}
	front_uring_to_libfuse(e);
}

/*
 * On a mounted, not yet served session: set up io_uring.  The queue
 * threads serve reads and writes themselves (front_ring_handle()) and
 * hand every other request to libfuse's dispatcher.
 */
static int start_uring(struct front *f, enum front_transport want, GError **err)
{
	struct front_uring_opts uo = { .depth = f->uring_depth,
				       .handler = front_ring_handle,
				       .peek = front_ring_peek,
				       .ctx = f,
				       .require = want == FRONT_TRANSPORT_URING,
				       .dmio_loop = true };
	g_autoptr(GError) uerr = NULL;
	bool init_done;
	int r;

	r = front_uring_start(f->se, &uo, &f->uring, &init_done, &uerr);
	if (r < 0 && (want == FRONT_TRANSPORT_URING || !init_done)) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "transport %s: %s",
			    front_transport_name(want), uerr->message);
		return r;
	}
	g_free(f->transport_reason);
	if (r < 0) {
		f->transport_reason = g_strdup_printf("transport=auto: %s; /dev/fuse instead",
						      uerr->message);
	} else if (!f->uring) {
		f->transport_reason = g_strdup("transport=auto: the kernel did not offer "
					       "io_uring in INIT; /dev/fuse instead");
	} else {
		f->transport = FRONT_TRANSPORT_URING;
		f->transport_reason = g_strdup_printf(
			"transport=%s: FUSE over io_uring, %u queues of %u entries",
			front_transport_name(want), front_uring_nr_queues(f->uring),
			f->uring_depth ? f->uring_depth : FRONT_URING_DEFAULT_DEPTH);
	}
	return 0;
}

int front_mount(const struct front_opts *o, struct mirror *m, struct bufio_client *c,
		struct front **ret_front, GError **err)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	g_autofree char *mopts = NULL;
	struct front *f;
	struct stat st;
	bool try_uring;
	int r;

	if (stat(o->mountpoint, &st) < 0) {
		r = -errno;
		g_set_error(err, FM_MIRROR_ERROR, -r, "mount point %s: %s", o->mountpoint,
			    g_strerror(-r));
		return r;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "mount point %s: neither a directory nor a regular file",
			    o->mountpoint);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->attr_lock, NULL);
	pthread_mutex_init(&f->around_lock, NULL);
	pthread_mutex_init(&f->kick_lock, NULL);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(f->modify_lock); i++)
		pthread_mutex_init(&f->modify_lock[i], NULL);
	f->m = m;
	f->c = c;
	f->mountpoint = g_strdup(o->mountpoint);
	f->name = g_strdup(o->name ? o->name : "image");
	f->file_mount = S_ISREG(st.st_mode);
	f->image_path = f->file_mount ? g_strdup(o->mountpoint)
				      : g_build_filename(o->mountpoint, f->name, NULL);
	f->readonly = o->readonly || mirror_is_readonly(m);
	f->writethrough = o->cache_mode == FRONT_CACHE_WRITETHROUGH;
	f->max_threads = o->max_threads ? o->max_threads : 8;
	f->max_background = o->max_background ? o->max_background : 256;
	f->event_loop = o->event_loop;
	f->spin_us = o->spin_us;
	f->legs_in_memory = mirror_legs_in_memory(m);
	f->uring_depth = o->uring_depth;
	f->size = mirror_size(m);
	f->bs = bufio_get_block_size(c);
	/* Over a file, the image keeps that file's owner and permissions (as
	 * qemu-storage-daemon's export does); in a directory it is root's. */
	f->mode = f->file_mount ? (st.st_mode & 0777) : 0600;
	f->uid = f->file_mount ? st.st_uid : 0;
	f->gid = f->file_mount ? st.st_gid : 0;
	if (f->readonly)
		f->mode &= ~0222u;
	clock_gettime(CLOCK_REALTIME, &f->mtime);
	f->atime = f->ctime = f->mtime;

	if (strchr(f->name, '/') || !strcmp(f->name, ".") || !strcmp(f->name, "..") ||
	    !*f->name) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL, "image name '%s' is not a file name",
			    f->name);
		front_destroy(f);
		return -EINVAL;
	}
	/* A transport the kernel cannot give is refused before mounting. */
	r = choose_transport(f, o->transport, &try_uring, err);
	if (r < 0) {
		front_destroy(f);
		return r;
	}
	mopts = g_strdup_printf("-ofsname=%s,subtype=fusemirror,default_permissions%s%s",
				o->fsname ? o->fsname : "fusemirror",
				o->allow_other ? ",allow_other" : "",
				f->readonly ? ",ro" : "");
	if (fuse_opt_add_arg(&args, "fusemirror") || fuse_opt_add_arg(&args, mopts)) {
		fuse_opt_free_args(&args);
		front_destroy(f);
		return -ENOMEM;
	}
	f->se = fuse_session_new(&args, &front_ops, sizeof(front_ops), f);
	fuse_opt_free_args(&args);
	if (!f->se) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL, "cannot create the FUSE session");
		front_destroy(f);
		return -EINVAL;
	}
	front_signals_set(f);
	if (fuse_session_mount(f->se, f->mountpoint) != 0) {
		g_set_error(err, FM_MIRROR_ERROR, EIO,
			    "cannot mount on %s (is /dev/fuse there, and fuse loaded?)",
			    f->mountpoint);
		front_destroy(f);
		return -EIO;
	}
	f->mounted = true;
	/* For what an event loop or a queue thread must not wait for; its
	 * threads start with the first such job. */
	f->slow = g_thread_pool_new(slow_run, f, (gint)f->max_threads, FALSE, NULL);
	r = try_uring ? start_uring(f, o->transport, err) : 0;
	if (r < 0) {
		front_destroy(f);
		return r;
	}
	front_splice_probe(f);
	*ret_front = f;
	return 0;
}

int front_run(struct front *f)
{
	struct fuse_loop_config *cfg;
	int r;

	if (f->event_loop)
		return front_run_loops(f);
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, f->max_threads);
	fuse_loop_cfg_set_idle_threads(cfg, f->max_threads / 2 ? f->max_threads / 2 : 1);
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	r = fuse_session_loop_mt(f->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* libfuse returns the signal number when a signal ended the loop. */
	return r < 0 ? r : 0;
}

void front_exit(struct front *f)
{
	fuse_session_exit(f->se);
	/* (a loop blocked in read() needs its kick: nothing ticks) */
	if (f->event_loop && f->loops)
		loop_stop_all(f);
}

void front_destroy(struct front *f)
{
	if (!f)
		return;
	/* The io_uring queues serve until the session is unmounted: they
	 * take no more requests since the stop (loop_stop_all()); wait until
	 * none is being handed out, or one taken after the wait below could
	 * outlive them. */
	front_uring_quiesce(f->uring);
	/* Replies still owed by I/O completions go out before the session
	 * goes away. */
	while (atomic_load(&f->inflight) > 0)
		usleep(1000);
	/* Every request was answered: the pool has nothing left to run but
	 * the ends of its jobs, which may still use the queues' hand-off. */
	if (f->slow)
		g_thread_pool_free(f->slow, FALSE, TRUE);
	f->slow = NULL;
	/* The queues commit what was handed to them and close their rings,
	 * which cancels the entries parked in the kernel. */
	front_uring_stop(f->uring);
	f->uring = NULL;
	if (f->se) {
		front_signals_remove(f);
		if (f->mounted)
			fuse_session_unmount(f->se);
		fuse_session_destroy(f->se);
	}
	pthread_mutex_destroy(&f->attr_lock);
	pthread_mutex_destroy(&f->kick_lock);
	while (f->nr_around_free)
		munmap(f->around_free[--f->nr_around_free], FRONT_RBUF_SIZE);
	pthread_mutex_destroy(&f->around_lock);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(f->modify_lock); i++)
		pthread_mutex_destroy(&f->modify_lock[i]);
	g_free(f->mountpoint);
	g_free(f->name);
	g_free(f->image_path);
	g_free(f->transport_reason);
	g_free(f->splice_note);
	free(f);
}

const char *front_image_path(const struct front *f)
{
	return f->image_path;
}

void front_get_stats(const struct front *f, struct front_stats *s)
{
	s->reads = atomic_load(&f->reads);
	s->writes = atomic_load(&f->writes);
	s->fsyncs = atomic_load(&f->fsyncs);
	s->flushes = atomic_load(&f->flushes);
	s->fallocates = atomic_load(&f->fallocates);
	s->read_bytes = atomic_load(&f->read_bytes);
	s->write_bytes = atomic_load(&f->write_bytes);
	s->errors = atomic_load(&f->errors);
	s->handoffs = atomic_load(&f->handoffs);
	s->spliced_reads = atomic_load(&f->spliced_reads);
	s->mapped_replies = atomic_load(&f->mapped_replies);
	s->mapped_reply_bytes = atomic_load(&f->mapped_reply_bytes);
	s->spliced_read_bytes = atomic_load(&f->spliced_read_bytes);
	s->ring_replies = atomic_load(&f->ring_replies);
	s->async_replies = atomic_load(&f->async_replies);
	s->blocking_reads = atomic_load(&f->blocking_reads);
	s->spun_reads = atomic_load(&f->spun_reads);
	s->spin_misses = atomic_load(&f->spin_misses);
	s->standby_reads = atomic_load(&f->standby_reads);
	s->ring_reads = atomic_load(&f->ring_reads);
}

enum front_transport front_get_transport(const struct front *f)
{
	return f->transport;
}

const char *front_transport_reason(const struct front *f)
{
	return f->transport_reason ? f->transport_reason : "";
}

const char *front_splice_note(const struct front *f)
{
	return f->splice_note;
}

unsigned front_get_nr_queues(const struct front *f)
{
	return front_uring_nr_queues(f->uring);
}

void front_get_queue_stats(const struct front *f, unsigned i, struct front_queue_stats *s)
{
	struct front_uring_queue_stats us;

	front_uring_get_stats(f->uring, i, &us);
	s->cpu = us.cpu;
	s->depth = us.depth;
	s->requests = us.requests;
	s->in_flight = us.in_flight;
	s->handoffs = us.handoffs;
	s->moves = us.moves;
}
