/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * FUSE over io_uring (see fuse_uring.h).  The protocol is in the kernel's
 * Documentation/filesystems/fuse/fuse-io-uring.rst and fs/fuse/dev_uring.c.
 *
 * Invariants:
 *   - An entry is in one of three places: parked in the kernel (its
 *     REGISTER or COMMIT_AND_FETCH is outstanding), with a handler (from
 *     the CQE that brought a request until its reply), or on its queue's
 *     hand-off stack (replied from another thread, its COMMIT_AND_FETCH not
 *     yet written).  Only the queue thread writes SQEs on its ring.
 *   - The hand-off stack is pushed with compare-and-swap by any thread and
 *     emptied whole with one exchange by the queue thread only, so no
 *     element is ever popped while another thread looks at it (no ABA).
 *     The pusher that finds it empty writes the eventfd; the queue thread
 *     empties it after each eventfd read, so nothing pushed is left behind.
 *   - A queue thread leaves its loop only when told to (stop); it then
 *     commits what is on its stack and closes its ring, which cancels the
 *     entries parked in the kernel.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/fuse.h>

#include <fuse_lowlevel.h>

#include "fusemirror/common.h"
#include "fuse_uring.h"

#define fu_container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/*
 * The uapi of protocol 7.42 (Debian 12's <linux/fuse.h> is 7.38): own
 * names, so that a newer header cannot clash.
 */
#define FU_OVER_IO_URING_FLAGS2 (1u << 9)  /* FUSE_OVER_IO_URING >> 32 */
#define FU_CMD_REGISTER 1u
#define FU_CMD_COMMIT_AND_FETCH 2u
#define FU_MIN_READ_BUFFER 8192u

/*
 * Requests handed to libfuse (no handler of the caller's): the in-header
 * and op_in are copied into the page in front of the payload, so that
 * libfuse sees the /dev/fuse wire format with the payload in place, and
 * the in-header's unique is replaced by FU_TAG | the entry's address, by
 * which the session's writev hook tells the reply from /dev/fuse traffic
 * (kernel uniques never reach bit 63; user addresses fit in 47 bits).
 */
#define FU_PREFIX 4096u
#define FU_TAG (1ull << 63)
/* In front of the prefix: the request's scratch (front_uring_req_scratch). */
#define FU_SCRATCH FRONT_URING_SCRATCH

/*
 * Where an entry's buffers lie (fu_queue_init()).  Each entry has a slot
 * of its own in the queue's mapping (MAP_NORESERVE: only what requests
 * touch is resident): its scratch, the prefix and the payload's first
 * FU_HEAD bytes end at a 2 MiB boundary, on small pages (MADV_NOHUGEPAGE);
 * the rest of the payload, the tail, starts on that boundary.  The tails
 * of the FU_HUGE_ENTRIES entries registered last are asked to be
 * transparent huge pages (MADV_HUGEPAGE): the kernel hands a request to
 * the entry that came back to it last (its list of free entries is a
 * stack), and registration fills that stack in order, so a queue serving
 * up to FU_HUGE_ENTRIES requests at a time uses those entries only.  The
 * first request over FU_HEAD bytes on such an entry makes its tail one
 * huge page (a 2 MiB clear, on the queue's thread, where the kernel's copy
 * or the handler first writes it), which then stays; a smaller request
 * touches small pages only, 4 KiB at a time, as before.  The kernel's
 * copy of a payload pins and copies it page by page: into a huge tail it
 * takes one page-table lookup per 2 MiB instead of per 4 KiB, and the
 * legs' copies out of it miss the TLB less.  Measured (1 MiB QD8, 2 legs
 * on /dev/shm, fio io_uring, every tail huge against none, fresh mount
 * per run, ABBA, load 0.5-1.5): writes 3475, 3587, 3962, 3222 -> 3855,
 * 3580, 4191, 3386 MB/s, daemon CPU per MiB lower in 4 of 4 pairs (279 ->
 * 231, 269 -> 262, 241 -> 223, 293 -> 279 us); reads faster in 7 of 10
 * pairs (e.g. 3677 -> 4549, 3031 -> 3494 MB/s).  The price is memory: a
 * huge tail holds 2 MiB where the payload is ~1 MiB, and each entry that
 * carried a large request keeps it.  Every tail huge, a 4 KiB QD32 load
 * would still touch small pages only, but 1 MiB at a depth of 32 would
 * hold depth x 2 MiB per queue; hence FU_HUGE_ENTRIES: at most that many
 * MiB more per queue than small pages.
 */
#define FU_HEAD (128u << 10)
#define FU_HUGE_ENTRIES 8u
_Static_assert(FU_SCRATCH + FU_PREFIX + FU_HEAD <= FM_HUGE_PAGE_SIZE,
	       "an entry's small part fits in front of its tail");

struct fu_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;             /* the request's unique */
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct fu_req_header {
	char in_out[128];               /* fuse_in_header in, fuse_out_header out */
	char op_in[128];
	struct fu_ent_in_out ring_ent_in_out;
};

struct fu_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct fu_ent_in_out) == 32, "fuse_uring_ent_in_out is 32 bytes");
_Static_assert(sizeof(struct fu_req_header) == 288, "fuse_uring_req_header is 288 bytes");
_Static_assert(sizeof(struct fu_cmd_req) == 24, "fuse_uring_cmd_req is 24 bytes");
_Static_assert(sizeof(struct fuse_attr_out) == 104, "fuse_attr_out");
_Static_assert(sizeof(struct fuse_entry_out) == 128, "fuse_entry_out");
_Static_assert(sizeof(struct fuse_statfs_out) == 80, "fuse_statfs_out");

struct fu_queue;

struct front_uring_req {
	struct dmio_loop_op op;       /* user_data of its REGISTER/COMMIT */
	struct fu_queue *q;
	struct fu_req_header *hdr;
	uint8_t *payload;
	uint8_t *scratch;               /* FU_SCRATCH bytes, never the kernel's */
	struct iovec iov[2];
	uint64_t commit_id;
	bool dead;                      /* ended by the kernel */
	struct front_uring_req *next;   /* on the hand-off stack */
};

/* Where a queue thread runs (fu_place()). */
struct fu_place {
	int sched_fd;                   /* /proc/thread-self/schedstat, or -1 */
	cpu_set_t home, away_cpus;      /* its qid's CPU; the process's others */
	bool away;                      /* on away_cpus since away_at */
	uint64_t away_at;               /* ns, CLOCK_MONOTONIC_COARSE */
	uint64_t stay_until;            /* home at least until then (ns) */
	uint64_t backoff;               /* after the last move that failed */
	uint64_t at, run, delay, reqs;  /* at the last look */
};

struct fu_queue {
	struct front_uring *u;
	unsigned qid;
	pthread_t thread;
	bool thread_started;
	struct io_uring *ring;          /* &own_ring, or dl's */
	struct io_uring own_ring;
	bool ring_ready;                /* own_ring is set up */
	unsigned sq_entries;            /* of dl, or of own_ring */
	struct dmio_loop *dl;           /* with u->dmio_loop: the thread's loop */
	int efd;                        /* wakes the thread: hand-offs, stop */
	uint64_t efd_val;
	struct dmio_loop_op efd_op;
	struct front_uring_req *ents;
	struct fu_req_header *hdrs;
	uint8_t *payloads;
	size_t payloads_len;
	int reg_err;                    /* first REGISTER error */
	bool reported;                  /* reg_err was read: no more writes */
	atomic_bool stop;
	atomic_bool closing;            /* front_uring_quiesce(): hold requests */
	bool quiet;                     /* the thread saw `closing` (u->lock) */
	unsigned held;                  /* requests held since (thread only) */
	_Atomic(struct front_uring_req *) handoff;
	atomic_ullong requests, in_flight, handoffs;
	atomic_ullong moves;            /* times it left its CPU (fu_place()) */
	struct fu_place place;          /* the queue thread's own */
};

struct front_uring {
	struct fuse_session *se;
	int fuse_fd;
	unsigned depth;
	size_t payload_size;
	front_uring_handler_fn *handler;
	front_uring_handler_fn *peek;
	void *ctx;
	bool dmio_loop;                 /* queue rings are dmio loops */
	unsigned nr_queues;
	struct fu_queue *queues;

	pthread_mutex_t lock;           /* guards the reports below, q->quiet */
	pthread_cond_t cond;
	unsigned reported;              /* queue threads done registering */
	bool quiesced;                  /* front_uring_quiesce() returned */
};

static __thread struct fu_queue *fu_this_queue;
/* The request whose handler (or libfuse operation) runs on this thread. */
static __thread struct front_uring_req *fu_dispatching;

static void fu_to_libfuse(struct front_uring *u, struct front_uring_req *e);
static void fu_commit(struct front_uring_req *e, int error, size_t len);

G_DEFINE_QUARK(front-uring-error-quark, front_uring_error)

/*----------------------------------------------------------------*/
/* Support */

int front_uring_probe(GError **err)
{
	char v = 0;
	int fd = open(FRONT_URING_PARAM, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		g_set_error(err, FRONT_URING_ERROR, EOPNOTSUPP,
			    "this kernel has no FUSE over io_uring (no %s; it needs Linux 6.14+ "
			    "built with CONFIG_FUSE_IO_URING)", FRONT_URING_PARAM);
		return -ENOENT;
	}
	if (read(fd, &v, 1) != 1)
		v = 0;
	close(fd);
	if (v != 'Y' && v != 'y' && v != '1') {
		g_set_error(err, FRONT_URING_ERROR, EOPNOTSUPP,
			    "the kernel's FUSE over io_uring is switched off (%s is N; as root: "
			    "echo Y > %s)", FRONT_URING_PARAM, FRONT_URING_PARAM);
		return -EOPNOTSUPP;
	}
	return 0;
}

unsigned front_uring_nr_possible_cpus(void)
{
	char buf[256];
	unsigned max = 0;
	bool any = false;
	ssize_t n;
	int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			/* "0-3,6,8-11": the highest number counts */
			buf[n] = 0;
			for (char *p = buf; *p;) {
				char *end;
				unsigned long v = strtoul(p, &end, 10);

				if (*p < '0' || *p > '9' || end == p) {
					p++;    /* '-', ',', '\n': strtoul would take "-1" */
					continue;
				}
				if (v > max)
					max = (unsigned)v;
				any = true;
				p = end;
			}
		}
	}
	if (!any) {
		long c = sysconf(_SC_NPROCESSORS_CONF);

		return c > 0 ? (unsigned)c : 1;
	}
	return max + 1;
}

struct io_uring *front_uring_current_ring(void)
{
	return fu_this_queue ? fu_this_queue->ring : NULL;
}

/*----------------------------------------------------------------*/
/* INIT: the custom-io hook that asks for io_uring */

struct fu_init {
	bool want;                      /* set the flag if offered */
	bool seen;                      /* INIT was read */
	bool offered;                   /* ... and offered FUSE_OVER_IO_URING */
	bool answered;                  /* its reply was written */
	bool granted;                   /* ... with FUSE_OVER_IO_URING */
	uint64_t unique;
	uint32_t max_write;
	uint32_t max_pages;
};

/* Only the thread inside front_uring_start() looks at INIT. */
static __thread struct fu_init *fu_init_tls;

static ssize_t fu_hook_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fu_init *in = fu_init_tls;
	ssize_t r = read(fd, buf, len);

	(void)userdata;
	if (in && r >= (ssize_t)sizeof(struct fuse_in_header)) {
		const struct fuse_in_header *h = buf;

		if (h->opcode == FUSE_INIT &&
		    (size_t)r >= sizeof(*h) + offsetof(struct fuse_init_in, unused)) {
			const struct fuse_init_in *ii = (const void *)(h + 1);

			in->seen = true;
			in->unique = h->unique;
			in->offered = (ii->flags & FUSE_INIT_EXT) &&
				      (ii->flags2 & FU_OVER_IO_URING_FLAGS2);
		}
	}
	return r;
}

static ssize_t fu_hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fu_init *in = fu_init_tls;
	bool init_reply = false;
	ssize_t r;

	(void)userdata;
	if (count >= 1 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    (((const struct fuse_out_header *)iov[0].iov_base)->unique & FU_TAG)) {
		/* A reply of libfuse to a ring request: into its entry. */
		const struct fuse_out_header *oh = iov[0].iov_base;
		struct front_uring_req *e = (void *)(uintptr_t)(oh->unique & ~FU_TAG);
		size_t cap = e->q->u->payload_size, len = 0, total = iov[0].iov_len;

		for (int i = 1; i < count; i++) {
			total += iov[i].iov_len;
			/* A reply built in the payload buffer is not copied
			 * (or moves down in it: memmove). */
			if (len + iov[i].iov_len <= cap && iov[i].iov_base != e->payload + len)
				memmove(e->payload + len, iov[i].iov_base, iov[i].iov_len);
			len += iov[i].iov_len;
		}
		if (len > cap)
			fu_commit(e, EIO, 0);
		else
			fu_commit(e, -oh->error, len);
		return (ssize_t)total;
	}
	if (in && in->seen && count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header)) {
		const struct fuse_out_header *oh = iov[0].iov_base;

		if (oh->unique == in->unique && oh->error == 0 &&
		    iov[1].iov_len >= offsetof(struct fuse_init_out, unused)) {
			struct fuse_init_out *io = iov[1].iov_base;

			init_reply = true;
			if (in->want && in->offered && (io->flags & FUSE_INIT_EXT))
				io->flags2 |= FU_OVER_IO_URING_FLAGS2;
			in->granted = io->flags2 & FU_OVER_IO_URING_FLAGS2;
			in->max_write = io->max_write;
			in->max_pages = (io->flags & FUSE_MAX_PAGES) ? io->max_pages : 0;
		}
	}
	r = writev(fd, iov, count);
	if (init_reply && r >= 0)
		in->answered = true;
	return r;
}

static const struct fuse_custom_io fu_io = {
	.read = fu_hook_read,
	.writev = fu_hook_writev,
};

/*----------------------------------------------------------------*/
/* Queue threads */

static struct io_uring_sqe *fu_get_sqe(struct fu_queue *q)
{
	struct io_uring_sqe *sqe;

	if (q->dl) {
		/* dmio_loop_get_sqe() submits when the ring is full. */
		while (!(sqe = dmio_loop_get_sqe(q->dl)))
			sched_yield();
	} else {
		while (!(sqe = io_uring_get_sqe(q->ring)))
			io_uring_submit(q->ring);
	}
	memset(sqe, 0, 128);            /* SQE128; the kernel checks __pad1 */
	return sqe;
}

static void fu_prep_cmd(struct fu_queue *q, struct front_uring_req *e, unsigned cmd)
{
	struct io_uring_sqe *sqe = fu_get_sqe(q);
	struct fu_cmd_req *c = (struct fu_cmd_req *)sqe->cmd;

	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->u->fuse_fd;
	sqe->cmd_op = cmd;
	if (cmd == FU_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)e->iov;
		sqe->len = 2;
	}
	c->commit_id = e->commit_id;
	c->qid = (uint16_t)q->qid;
	io_uring_sqe_set_data(sqe, &e->op);
}

static void fu_arm_efd(struct fu_queue *q)
{
	struct io_uring_sqe *sqe = fu_get_sqe(q);

	io_uring_prep_read(sqe, q->efd, &q->efd_val, sizeof(q->efd_val), 0);
	io_uring_sqe_set_data(sqe, &q->efd_op);
}

/* Commit what other threads answered (queue thread only). */
static void fu_drain_handoffs(struct fu_queue *q)
{
	struct front_uring_req *e = atomic_exchange(&q->handoff, NULL);

	while (e) {
		struct front_uring_req *next = e->next;

		fu_prep_cmd(q, e, FU_CMD_COMMIT_AND_FETCH);
		e = next;
	}
}

static void fu_efd_done(struct dmio_loop_op *op, int res, uint32_t flags)
{
	struct fu_queue *q = fu_container_of(op, struct fu_queue, efd_op);

	(void)flags;
	(void)res;
	fu_drain_handoffs(q);
	if (!atomic_load(&q->stop))
		fu_arm_efd(q);
}

static void fu_ent_done(struct dmio_loop_op *op, int res, uint32_t flags)
{
	struct front_uring_req *e = fu_container_of(op, struct front_uring_req, op);
	struct fu_queue *q = e->q;

	(void)flags;
	if (res < 0) {
		/* -ENOTCONN/-ECONNABORTED/-ECANCELED: the connection ends;
		 * anything else: the kernel refused a REGISTER or a reply. */
		if (res != -ENOTCONN && res != -ECONNABORTED && res != -ECANCELED)
			fm_debug("fuse-uring queue %u: entry ended: %s", q->qid, strerror(-res));
		if (!q->reported && !q->reg_err)
			q->reg_err = res;
		e->dead = true;
		return;
	}
	e->commit_id = e->hdr->ring_ent_in_out.commit_id;
	if (atomic_load(&q->closing)) {
		/* Never answered: the connection's abort fails it. */
		q->held++;
		return;
	}
	atomic_fetch_add_explicit(&q->requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&q->in_flight, 1, memory_order_relaxed);
	fu_dispatching = e;
	if (q->u->handler)
		q->u->handler(q->u->ctx, e);
	else
		fu_to_libfuse(q->u, e);
	fu_dispatching = NULL;
}

/* A request of a batch, before any of the batch is handled (opts.peek). */
static void fu_peek(struct dmio_loop_op *op, int res)
{
	struct front_uring_req *e;

	if (op->done != fu_ent_done || res < 0)
		return;
	e = fu_container_of(op, struct front_uring_req, op);
	if (!atomic_load(&e->q->closing))
		e->q->u->peek(e->q->u->ctx, e);
}

/* The size of op_in (the first argument) of the operations handed to
 * libfuse; -1: answered ENOSYS here. */
static ssize_t fu_op_in_size(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_LOOKUP:
	case FUSE_STATFS:
		return 0;               /* names travel in the payload */
	case FUSE_GETATTR:
		return sizeof(struct fuse_getattr_in);
	case FUSE_SETATTR:
		return sizeof(struct fuse_setattr_in);
	case FUSE_OPEN:
	case FUSE_OPENDIR:
		return sizeof(struct fuse_open_in);
	case FUSE_READ:
	case FUSE_READDIR:
		return sizeof(struct fuse_read_in);
	case FUSE_WRITE:
		return sizeof(struct fuse_write_in);
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
		return sizeof(struct fuse_release_in);
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
		return sizeof(struct fuse_fsync_in);
	case FUSE_FLUSH:
		return sizeof(struct fuse_flush_in);
	case FUSE_FALLOCATE:
		return sizeof(struct fuse_fallocate_in);
	case FUSE_ACCESS:
		return sizeof(struct fuse_access_in);
	default:
		return -1;
	}
}

static void fu_to_libfuse(struct front_uring *u, struct front_uring_req *e)
{
	const struct fuse_in_header *h = (const void *)e->hdr->in_out;
	ssize_t arg = fu_op_in_size(h->opcode);
	size_t plen = e->hdr->ring_ent_in_out.payload_sz;
	struct fuse_in_header in;
	uint8_t *start;

	if (arg < 0 || plen > u->payload_size) {
		front_uring_reply(e, ENOSYS, NULL, 0);
		return;
	}
	in = *h;
	in.unique = FU_TAG | (uint64_t)(uintptr_t)e;
	in.len = (uint32_t)(sizeof(in) + (size_t)arg + plen);
	start = e->payload - sizeof(in) - (size_t)arg;
	memcpy(start, &in, sizeof(in));
	memcpy(start + sizeof(in), e->hdr->op_in, (size_t)arg);
	fuse_session_process_buf(u->se, &(struct fuse_buf){ .size = in.len, .mem = start });
}

void front_uring_to_libfuse(struct front_uring_req *req)
{
	fu_to_libfuse(req->q->u, req);
}

static void fu_reap(struct fu_queue *q)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(q->ring, &cqe) == 0) {
		struct dmio_loop_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		uint32_t flags = cqe->flags;

		if (op)
			op->done(op, res, flags);
		/* After: fu_ent_done() counts the CQE it handles in
		 * io_uring_cq_ready(), as under dmio's reap. */
		io_uring_cqe_seen(q->ring, cqe);
	}
}

static uint64_t fu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The calling thread's run time and run delay (runnable, waiting for a
 * CPU), in ns, from its schedstat. */
static int fu_sched_read(int fd, uint64_t *ret_run, uint64_t *ret_delay)
{
	char buf[96];
	unsigned long long run, delay;
	ssize_t n;

	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	if (sscanf(buf, "%llu %llu", &run, &delay) != 2)
		return -EIO;
	*ret_run = run;
	*ret_delay = delay;
	return 0;
}

/* A queue thread runs on its qid's CPU, unless that CPU is contended
 * (DESIGN.md, "FUSE transports"): looked at every FU_PLACE_WINDOW_NS, a
 * queue that ran for more than a tenth of the window, waited for its
 * CPU more than a quarter of the time it ran, and spent less than
 * FU_PLACE_SMALL_NS of CPU per request may run on any other CPU the
 * process may use; FU_PLACE_PROBE_NS later it goes home and looks again, or at
 * once if it waits as long away: then no CPU had room, and it stays home
 * 1, 2, 4, up to 8 s after each such move in a row. */
#define FU_PLACE_WINDOW_NS  (50 * 1000 * 1000ull)
#define FU_PLACE_PROBE_NS   (1000 * 1000 * 1000ull)
#define FU_PLACE_SMALL_NS   (20 * 1000ull)
#define FU_PLACE_BACKOFF_MAX_NS  (8 * FU_PLACE_PROBE_NS)

static void fu_place(struct fu_queue *q)
{
	struct fu_place *p = &q->place;
	uint64_t now, run, delay, reqs, drun, ddelay, dreqs;
	bool contended, stale;

	if (p->sched_fd < 0)
		return;
	now = fu_now_ns();
	if (now - p->at < FU_PLACE_WINDOW_NS)
		return;
	if (fu_sched_read(p->sched_fd, &run, &delay) < 0)
		return;
	reqs = atomic_load_explicit(&q->requests, memory_order_relaxed);
	drun = run - p->run;
	ddelay = delay - p->delay;
	dreqs = reqs - p->reqs;
	stale = now - p->at >= 2 * FU_PLACE_WINDOW_NS;
	p->at = now;
	p->run = run;
	p->delay = delay;
	p->reqs = reqs;
	/* A window that spans a sleep mixes what came before it with what
	 * comes now (e.g. the end of a 4k burst with a 1M writer). */
	if (stale)
		return;
	contended = drun > FU_PLACE_WINDOW_NS / 10 && ddelay > drun / 4;
	if (!p->away) {
		if (contended && now >= p->stay_until &&
		    dreqs > 0 && drun / dreqs < FU_PLACE_SMALL_NS &&
		    pthread_setaffinity_np(pthread_self(), sizeof(p->away_cpus),
					   &p->away_cpus) == 0) {
			p->away = true;
			p->away_at = now;
			atomic_fetch_add_explicit(&q->moves, 1, memory_order_relaxed);
		}
	} else if (contended || now - p->away_at >= FU_PLACE_PROBE_NS) {
		/* Waiting as long away: no CPU had room, and away it pays
		 * for a remote client (~1.3 us per 4k request here). */
		pthread_setaffinity_np(pthread_self(), sizeof(p->home), &p->home);
		p->away = false;
		if (!contended) {
			p->backoff = 0;
		} else {
			p->backoff = p->backoff ? p->backoff * 2 : FU_PLACE_PROBE_NS;
			if (p->backoff > FU_PLACE_BACKOFF_MAX_NS)
				p->backoff = FU_PLACE_BACKOFF_MAX_NS;
			p->stay_until = now + p->backoff;
		}
	}
}

/* A plain ring (bench/memfuse's queues) is made by the thread that uses
 * it, as a dmio loop's is, and with the same flags where the kernel has
 * them (dmio_ring_init()): with DEFER_TASKRUN the kernel's task work for
 * its requests waits for the thread's next wait instead of reaching it
 * one request at a time, which is what lets a queue serve a client from
 * another CPU (fu_place()). */
static int fu_own_ring_setup(struct fu_queue *q)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
	int r = dmio_ring_init(q->sq_entries, &q->own_ring, &p);

	if (r < 0)
		return r;
	q->ring = &q->own_ring;
	q->ring_ready = true;
	return 0;
}

/* On the queue thread, between two turns of its loop: from now on no
 * request reaches a handler (fu_ent_done() reads `closing` first). */
static void fu_report_quiet(struct fu_queue *q)
{
	pthread_mutex_lock(&q->u->lock);
	q->quiet = true;
	pthread_cond_broadcast(&q->u->cond);
	pthread_mutex_unlock(&q->u->lock);
}

static void *fu_queue_main(void *arg)
{
	struct fu_queue *q = arg;
	struct front_uring *u = q->u;
	sigset_t all;
	cpu_set_t cpus, wide;
	bool have_wide;
	int r;

	/* Signals are for the thread that runs the session loop (but the
	 * SIGBUS a copy into a mapped leg may raise: src/dmio/map.c). */
	fm_signals_async(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	q->place.sched_fd = -1;
	if (!u->dmio_loop) {
		r = fu_own_ring_setup(q);
		if (r < 0) {
			q->reg_err = r;
			goto report;
		}
	}
	/* The kernel queues a request on the qid of the CPU it was issued
	 * on; answering it there keeps it on that CPU's caches, unless the
	 * client keeps that CPU busy (fu_place()).  An offline CPU's queue
	 * receives nothing, so a failed pinning costs nothing. */
	have_wide = pthread_getaffinity_np(pthread_self(), sizeof(wide), &wide) == 0;
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	/* Only a queue whose ring defers its task work may leave: without
	 * DEFER_TASKRUN bench/memfuse's queues lost a quarter of their 4k
	 * QD32 IOPS away from the client's CPU (CPU per request 2.6 -> 6.0
	 * us, each request's task work reaching the thread on its own); with
	 * it they gain as fusemirror's do. */
	q->place.away_cpus = wide;
	CPU_CLR(q->qid, &q->place.away_cpus);
	if ((u->dmio_loop || (q->own_ring.flags & IORING_SETUP_DEFER_TASKRUN)) && have_wide &&
	    CPU_COUNT(&q->place.away_cpus) > 0) {
		q->place.home = cpus;
		q->place.sched_fd = open("/proc/thread-self/schedstat",
					 O_RDONLY | O_CLOEXEC);
		q->place.at = fu_now_ns();
		if (q->place.sched_fd >= 0 &&
		    fu_sched_read(q->place.sched_fd, &q->place.run,
				  &q->place.delay) < 0) {
			close(q->place.sched_fd);
			q->place.sched_fd = -1;
		}
	}
	pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	pthread_setname_np(pthread_self(), "fm-uring");
	if (u->dmio_loop) {
		/* The loop's ring must be made by the thread that owns it. */
		r = dmio_loop_create(&(struct dmio_loop_opts){
					.sq_entries = q->sq_entries,
					.setup_flags = IORING_SETUP_SQE128 }, &q->dl);
		if (r < 0) {
			q->reg_err = r;
			goto report;
		}
		q->ring = dmio_loop_ring(q->dl);
		/* Not the pinning, for the ring's io-wq workers: they copy
		 * the large writes to in-memory legs, which would otherwise
		 * share this CPU with the queue and with the client that
		 * issued them there (DESIGN.md, "FUSE transports"). */
		if (have_wide)
			dmio_loop_set_iowq_cpus(q->dl, &wide);
		if (u->peek)
			dmio_loop_set_peek(q->dl, fu_peek);
	}
	fu_this_queue = q;

	for (unsigned i = 0; i < u->depth; i++)
		fu_prep_cmd(q, &q->ents[i], FU_CMD_REGISTER);
	fu_arm_efd(q);
	/* A REGISTER that fails completes at once; one that succeeds stays
	 * parked until a request comes. */
	if (q->dl) {
		dmio_loop_run_once(q->dl, false);
		dmio_loop_run_once(q->dl, false);
	} else {
		r = io_uring_submit(q->ring);
		if (r < 0 && !q->reg_err)
			q->reg_err = r;
		fu_reap(q);
	}

report:
	pthread_mutex_lock(&u->lock);
	q->reported = true;
	u->reported++;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);

	while (!q->reg_err && !atomic_load(&q->stop)) {
		if (!q->quiet && atomic_load(&q->closing))
			fu_report_quiet(q);
		fu_place(q);
		if (q->dl) {
			dmio_loop_run_once(q->dl, true);
			continue;
		}
		r = io_uring_submit_and_wait(q->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			fm_debug("fuse-uring queue %u: %s", q->qid, strerror(-r));
			break;
		}
		fu_reap(q);
	}
	if (!q->quiet)
		fu_report_quiet(q);
	if (q->held)
		fm_debug("fuse-uring queue %u: %u request(s) left to the connection's abort",
			 q->qid, q->held);
	if (q->place.sched_fd >= 0)
		close(q->place.sched_fd);
	/* Replies owed go out before the ring closes. */
	fu_drain_handoffs(q);
	if (q->dl) {
		/* Leg I/O still in flight (a write-back the cache started
		 * here) completes on this ring: wait for it. */
		dmio_loop_run_once(q->dl, false);
		while (!dmio_loop_idle(q->dl))
			dmio_loop_run_once(q->dl, true);
		fu_drain_handoffs(q);
		dmio_loop_run_once(q->dl, false);
		/* Closing the ring cancels the entries parked in the kernel. */
		fu_this_queue = NULL;
		dmio_loop_destroy(q->dl);
		q->dl = NULL;
		q->ring = NULL;
		return NULL;
	}
	if (q->ring)
		io_uring_submit(q->ring);
	fu_this_queue = NULL;
	return NULL;
}

/*
 * @len bytes of slots of @slot bytes each (a multiple of 2 MiB), 2 MiB
 * aligned, mapped MAP_NORESERVE, on small pages but for the tails (what
 * follows the first 2 MiB) of the last @nhuge slots, asked to be huge
 * pages (see FU_HEAD).  NULL if it cannot be mapped; the advice is only
 * advice.
 */
static uint8_t *fu_map_slots(size_t len, size_t slot, unsigned nhuge)
{
	size_t n = len / slot;
	uint8_t *a = fm_map_aligned(len, MAP_NORESERVE);

	if (!a)
		return NULL;
#ifdef MADV_HUGEPAGE
	(void)madvise(a, len, MADV_NOHUGEPAGE);
	for (size_t i = n > nhuge ? n - nhuge : 0; slot > FM_HUGE_PAGE_SIZE && i < n; i++)
		(void)madvise(a + i * slot + FM_HUGE_PAGE_SIZE, slot - FM_HUGE_PAGE_SIZE,
			      MADV_HUGEPAGE);
#endif
	return a;
}

static int fu_queue_init(struct front_uring *u, struct fu_queue *q, unsigned qid)
{
	unsigned entries = 16;
	size_t tail, slot;

	q->u = u;
	q->qid = qid;
	q->efd = -1;
	q->efd_op.done = fu_efd_done;
	atomic_init(&q->handoff, NULL);
	while (entries < 2 * u->depth + 8)
		entries <<= 1;
	if (u->dmio_loop) {
		/* Room for the leg I/O of every entry too. */
		q->sq_entries = entries < 256 ? 256 : entries * 2;
	} else {
		/* The ring is made by the queue's thread (fu_own_ring_setup()). */
		q->sq_entries = entries;
	}
	q->efd = eventfd(0, EFD_CLOEXEC);
	if (q->efd < 0)
		return -errno;
	q->ents = calloc(u->depth, sizeof(*q->ents));
	if (posix_memalign((void **)&q->hdrs, 64, u->depth * sizeof(*q->hdrs)))
		q->hdrs = NULL;
	/* The entries' slots (see FU_HEAD): small part, then the tail. */
	tail = u->payload_size > FU_HEAD ? u->payload_size - FU_HEAD : 0;
	slot = FM_HUGE_PAGE_SIZE + FM_ALIGN_UP(tail, (size_t)FM_HUGE_PAGE_SIZE);
	q->payloads_len = (size_t)u->depth * slot;
	q->payloads = fu_map_slots(q->payloads_len, slot, FU_HUGE_ENTRIES);
	if (!q->ents || !q->hdrs || !q->payloads)
		return -ENOMEM;
	memset(q->hdrs, 0, u->depth * sizeof(*q->hdrs));
	for (unsigned i = 0; i < u->depth; i++) {
		struct front_uring_req *e = &q->ents[i];

		e->op.done = fu_ent_done;
		e->q = q;
		e->hdr = &q->hdrs[i];
		e->payload = q->payloads + i * slot + FM_HUGE_PAGE_SIZE - FU_HEAD;
		e->scratch = e->payload - FU_PREFIX - FU_SCRATCH;
		e->iov[0].iov_base = e->hdr;
		e->iov[0].iov_len = sizeof(*e->hdr);
		e->iov[1].iov_base = e->payload;
		e->iov[1].iov_len = u->payload_size;
	}
	return 0;
}

static void fu_queue_wake(struct fu_queue *q)
{
	uint64_t one = 1;

	if (write(q->efd, &one, sizeof(one)) < 0)
		fm_debug("fuse-uring queue %u: eventfd: %s", q->qid, strerror(errno));
}

static void fu_queue_free(struct fu_queue *q)
{
	if (q->thread_started) {
		atomic_store(&q->stop, true);
		fu_queue_wake(q);
		pthread_join(q->thread, NULL);
	}
	/* Closing the ring cancels the entries still parked in the kernel. */
	if (q->ring_ready)
		io_uring_queue_exit(&q->own_ring);
	if (q->efd >= 0)
		close(q->efd);
	if (q->payloads)
		munmap(q->payloads, q->payloads_len);
	free(q->hdrs);
	free(q->ents);
}

/*
 * Turn io_uring off for the connection: a REGISTER the kernel refuses
 * does that, and lets requests that wait for a ready ring go to /dev/fuse.
 */
static void fu_poison(int fuse_fd)
{
	struct io_uring ring;
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
	static char hdr[sizeof(struct fu_req_header)];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { hdr, 0 } };
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;

	if (io_uring_queue_init_params(4, &ring, &p) < 0)
		return;
	sqe = io_uring_get_sqe(&ring);
	if (!sqe) {
		io_uring_queue_exit(&ring);
		return;
	}
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fuse_fd;
	sqe->cmd_op = FU_CMD_REGISTER;
	sqe->addr = (uint64_t)(uintptr_t)iov;
	sqe->len = 2;
	if (io_uring_submit(&ring) == 1 && io_uring_wait_cqe(&ring, &cqe) == 0)
		io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
}

void front_uring_close(struct front_uring *u)
{
	if (!u)
		return;
	for (unsigned i = 0; i < u->nr_queues; i++) {
		struct fu_queue *q = &u->queues[i];

		if (q->thread_started && !atomic_exchange(&q->closing, true))
			fu_queue_wake(q);
	}
}

void front_uring_quiesce(struct front_uring *u)
{
	if (!u || u->quiesced)
		return;
	front_uring_close(u);
	pthread_mutex_lock(&u->lock);
	for (unsigned i = 0; i < u->nr_queues; i++)
		while (u->queues[i].thread_started && !u->queues[i].quiet)
			pthread_cond_wait(&u->cond, &u->lock);
	pthread_mutex_unlock(&u->lock);
	u->quiesced = true;
}

void front_uring_stop(struct front_uring *u)
{
	if (!u)
		return;
	front_uring_quiesce(u);
	for (unsigned i = 0; i < u->nr_queues; i++)
		fu_queue_free(&u->queues[i]);
	free(u->queues);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->cond);
	free(u);
}

int front_uring_start(struct fuse_session *se, const struct front_uring_opts *o,
		      struct front_uring **ret, bool *ret_init_done, GError **err)
{
	struct fu_init in = { .want = true };
	struct fuse_buf fbuf = { 0 };
	struct front_uring *u;
	long page = sysconf(_SC_PAGESIZE);
	int r, fd = fuse_session_fd(se);

	*ret = NULL;
	*ret_init_done = false;
	if (o->require && (r = front_uring_probe(err)) < 0)
		in.want = false;
	else
		r = 0;
	if (fuse_session_custom_io(se, &fu_io, fd) != 0) {
		g_set_error(err, FRONT_URING_ERROR, EIO,
			    "cannot install the FUSE INIT hook (libfuse custom io)");
		return -EINVAL;
	}
	/* INIT is the first request of every connection: the kernel holds
	 * the others back until it is answered. */
	fu_init_tls = &in;
	do {
		r = fuse_session_receive_buf(se, &fbuf);
	} while (r == -EINTR);
	if (r > 0)
		fuse_session_process_buf(se, &fbuf);
	fu_init_tls = NULL;
	free(fbuf.mem);
	if (r <= 0) {
		r = r < 0 ? r : -ENODEV;
		g_clear_error(err);
		g_set_error(err, FRONT_URING_ERROR, EIO, "reading FUSE INIT failed: %s",
			    g_strerror(-r));
		return r;
	}
	if (!in.seen || !in.answered) {
		g_clear_error(err);
		g_set_error(err, FRONT_URING_ERROR, EIO,
			    "the FUSE INIT handshake failed (first request %s, reply %s)",
			    in.seen ? "INIT" : "not INIT", in.answered ? "sent" : "not sent");
		return -EPROTO;
	}
	*ret_init_done = true;
	if (!in.want)
		return -EOPNOTSUPP;     /* front_uring_probe()'s message */
	if (!in.granted) {
		if (!o->require)
			return 0;
		g_set_error(err, FRONT_URING_ERROR, EOPNOTSUPP,
			    "the kernel did not offer FUSE over io_uring in INIT (%s: Y, "
			    "protocol 7.42+ needed)", FRONT_URING_PARAM);
		return -EOPNOTSUPP;
	}

	u = calloc(1, sizeof(*u));
	if (!u) {
		fu_poison(fd);
		g_set_error(err, FRONT_URING_ERROR, EIO, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	u->se = se;
	u->fuse_fd = fd;
	u->depth = o->depth ? o->depth : FRONT_URING_DEFAULT_DEPTH;
	u->handler = o->handler;
	u->peek = o->dmio_loop ? o->peek : NULL;
	u->ctx = o->ctx;
	u->dmio_loop = o->dmio_loop;
	/* The kernel wants room for the largest request it may send. */
	u->payload_size = FU_MIN_READ_BUFFER;
	if (in.max_write > u->payload_size)
		u->payload_size = in.max_write;
	if ((size_t)in.max_pages * (size_t)page > u->payload_size)
		u->payload_size = (size_t)in.max_pages * (size_t)page;
	u->payload_size = FM_ALIGN_UP(u->payload_size, (size_t)page);
	u->nr_queues = front_uring_nr_possible_cpus();
	u->queues = calloc(u->nr_queues, sizeof(*u->queues));
	r = u->queues ? 0 : -ENOMEM;
	for (unsigned i = 0; r == 0 && i < u->nr_queues; i++) {
		struct fu_queue *q = &u->queues[i];

		r = fu_queue_init(u, q, i);
		if (r == 0) {
			r = -pthread_create(&q->thread, NULL, fu_queue_main, q);
			q->thread_started = r == 0;
		}
		if (r < 0) {
			g_set_error(err, FRONT_URING_ERROR, EIO,
				    "FUSE over io_uring: cannot set up queue %u: %s", i,
				    g_strerror(-r));
		}
	}
	/* Wait for every started thread's REGISTERs. */
	pthread_mutex_lock(&u->lock);
	for (;;) {
		unsigned started = 0;

		for (unsigned i = 0; u->queues && i < u->nr_queues; i++)
			started += u->queues[i].thread_started;
		if (u->reported >= started)
			break;
		pthread_cond_wait(&u->cond, &u->lock);
	}
	pthread_mutex_unlock(&u->lock);
	for (unsigned i = 0; r == 0 && i < u->nr_queues; i++) {
		if (u->queues[i].reg_err) {
			r = u->queues[i].reg_err;
			g_set_error(err, FRONT_URING_ERROR, EIO,
				    "FUSE over io_uring: REGISTER of queue %u failed: %s%s", i,
				    g_strerror(-r),
				    r == -EOPNOTSUPP ? " (is " FRONT_URING_PARAM " Y?)" : "");
		}
	}
	if (r < 0) {
		/* Requests would wait for the missing queues for ever. */
		fu_poison(fd);
		front_uring_stop(u);
		return r;
	}
	fm_debug("fuse-uring: %u queues of %u entries, %zu-byte payloads", u->nr_queues,
		 u->depth, u->payload_size);
	*ret = u;
	return 0;
}

/*----------------------------------------------------------------*/
/* Requests and replies */

const struct fuse_in_header *front_uring_req_in(const struct front_uring_req *req)
{
	return (const struct fuse_in_header *)req->hdr->in_out;
}

const void *front_uring_req_op_in(const struct front_uring_req *req)
{
	return req->hdr->op_in;
}

const void *front_uring_req_payload(const struct front_uring_req *req, size_t *ret_len)
{
	*ret_len = req->hdr->ring_ent_in_out.payload_sz;
	return req->payload;
}

struct front_uring_req *front_uring_current_req(void)
{
	return fu_dispatching;
}

void *front_uring_req_scratch(struct front_uring_req *req)
{
	return req->scratch;
}

void *front_uring_reply_buf(struct front_uring_req *req, size_t *ret_cap)
{
	*ret_cap = req->q->u->payload_size;
	return req->payload;
}

void front_uring_reply(struct front_uring_req *e, int error, const void *data, size_t len)
{
	if (len > e->q->u->payload_size) {
		fm_debug("fuse-uring: a %zu-byte reply does not fit", len);
		error = EIO;
	}
	if (error)
		len = 0;
	if (len && data != e->payload)
		memmove(e->payload, data, len);
	fu_commit(e, error, len);
}

/* Answer @e with @len bytes already in its payload, or positive @error. */
static void fu_commit(struct front_uring_req *e, int error, size_t len)
{
	struct fu_queue *q = e->q;
	struct fuse_out_header oh;
	struct front_uring_req *old;

	if (error)
		len = 0;
	oh.unique = e->commit_id;
	oh.error = -error;
	oh.len = (uint32_t)(sizeof(oh) + len);
	memcpy(e->hdr->in_out, &oh, sizeof(oh));
	e->hdr->ring_ent_in_out.payload_sz = (uint32_t)len;
	atomic_fetch_sub_explicit(&q->in_flight, 1, memory_order_relaxed);
	if (fu_this_queue == q) {
		fu_prep_cmd(q, e, FU_CMD_COMMIT_AND_FETCH);
		return;
	}
	atomic_fetch_add_explicit(&q->handoffs, 1, memory_order_relaxed);
	old = atomic_load(&q->handoff);

	do {
		e->next = old;
	} while (!atomic_compare_exchange_weak(&q->handoff, &old, e));
	if (!old)
		fu_queue_wake(q);
}

static void fu_timeout(double t, uint64_t *ret_sec, uint32_t *ret_nsec)
{
	if (t <= 0) {
		*ret_sec = 0;
		*ret_nsec = 0;
		return;
	}
	*ret_sec = (uint64_t)t;
	*ret_nsec = (uint32_t)((t - (double)*ret_sec) * 1e9);
}

static void fu_convert_stat(const struct stat *st, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = st->st_ino;
	a->mode = st->st_mode;
	a->nlink = (uint32_t)st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = (uint32_t)st->st_rdev;
	a->size = (uint64_t)st->st_size;
	a->blocks = (uint64_t)st->st_blocks;
	a->blksize = (uint32_t)st->st_blksize;
	a->atime = (uint64_t)st->st_atim.tv_sec;
	a->atimensec = (uint32_t)st->st_atim.tv_nsec;
	a->mtime = (uint64_t)st->st_mtim.tv_sec;
	a->mtimensec = (uint32_t)st->st_mtim.tv_nsec;
	a->ctime = (uint64_t)st->st_ctim.tv_sec;
	a->ctimensec = (uint32_t)st->st_ctim.tv_nsec;
}

void front_uring_reply_attr(struct front_uring_req *req, const struct stat *st, double timeout)
{
	struct fuse_attr_out out;

	memset(&out, 0, sizeof(out));
	fu_timeout(timeout, &out.attr_valid, &out.attr_valid_nsec);
	fu_convert_stat(st, &out.attr);
	front_uring_reply(req, 0, &out, sizeof(out));
}

void front_uring_reply_entry(struct front_uring_req *req, uint64_t nodeid, const struct stat *st,
			     double entry_timeout, double attr_timeout)
{
	struct fuse_entry_out out;

	memset(&out, 0, sizeof(out));
	out.nodeid = nodeid;
	fu_timeout(entry_timeout, &out.entry_valid, &out.entry_valid_nsec);
	fu_timeout(attr_timeout, &out.attr_valid, &out.attr_valid_nsec);
	fu_convert_stat(st, &out.attr);
	front_uring_reply(req, 0, &out, sizeof(out));
}

void front_uring_reply_statfs(struct front_uring_req *req, const struct statvfs *st)
{
	struct fuse_statfs_out out;

	memset(&out, 0, sizeof(out));
	out.st.blocks = st->f_blocks;
	out.st.bfree = st->f_bfree;
	out.st.bavail = st->f_bavail;
	out.st.files = st->f_files;
	out.st.ffree = st->f_ffree;
	out.st.bsize = (uint32_t)st->f_bsize;
	out.st.namelen = (uint32_t)st->f_namemax;
	out.st.frsize = (uint32_t)st->f_frsize;
	front_uring_reply(req, 0, &out, sizeof(out));
}

void front_uring_reply_write(struct front_uring_req *req, uint32_t count)
{
	struct fuse_write_out out = { .size = count };

	front_uring_reply(req, 0, &out, sizeof(out));
}

void front_uring_reply_open(struct front_uring_req *req, uint64_t fh, uint32_t open_flags)
{
	struct fuse_open_out out = { .fh = fh, .open_flags = open_flags };

	front_uring_reply(req, 0, &out, sizeof(out));
}

unsigned front_uring_nr_queues(const struct front_uring *u)
{
	return u ? u->nr_queues : 0;
}

void front_uring_get_stats(const struct front_uring *u, unsigned qid,
			   struct front_uring_queue_stats *s)
{
	struct fu_queue *q = &u->queues[qid];

	s->cpu = q->qid;
	s->depth = u->depth;
	s->requests = atomic_load(&q->requests);
	s->in_flight = atomic_load(&q->in_flight);
	s->handoffs = atomic_load(&q->handoffs);
	s->moves = atomic_load(&q->moves);
}
