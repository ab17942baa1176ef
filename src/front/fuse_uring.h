/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * FUSE over io_uring (Linux 6.14+, protocol 7.42): the transport of a FUSE
 * session's requests through io_uring queues instead of read()/write() on
 * /dev/fuse.  Used by the front (src/front/front.c) and by bench/memfuse.c.
 *
 * With libfuse 3.14 (which cannot ask for it), front_uring_start() takes
 * over a mounted session before anything has served it: it installs a
 * custom-io hook, reads and processes the kernel's INIT on the calling
 * thread, ORs FUSE_OVER_IO_URING into the INIT reply's flags2 when the
 * kernel offered it, then starts one queue thread per POSSIBLE CPU (qid =
 * CPU number; a missing queue would hang every request of the mount) and
 * REGISTERs `depth` ring entries on each, and returns only once every
 * entry is registered or something failed.  /dev/fuse must still be served
 * (fuse_session_loop_mt() as usual): FORGET, INTERRUPT and notifications
 * stay there, and so does everything if the ring could not be set up.
 *
 * A request arrives as a struct front_uring_req (one ring entry) on its
 * queue's thread, which calls the handler; the handler (or anyone later,
 * from any thread) answers it exactly once with front_uring_reply*().
 * The entry and its buffers belong to the request until then.
 *
 * Threading: front_uring_start() and front_uring_stop() from one thread,
 * never from a handler.  Handlers run on the queue threads.  The
 * front_uring_req_*() accessors are valid from the request's arrival until
 * its reply.  front_uring_reply*() may be called from any thread: on the
 * queue's own thread it writes the COMMIT_AND_FETCH SQE at once; on another
 * it hands the entry to the queue thread (a lock-free stack and an eventfd
 * — counted as `handoffs`).  front_uring_get_stats() from any thread.
 *
 * The ring of each queue thread is open to other users (one loop, one
 * ring): see front_uring_current_ring().  With opts->dmio_loop that ring
 * is the thread's dmio loop (include/fusemirror/dmio.h, "Loops"): the I/O
 * a handler submits through dmio() completes on the queue thread, so a
 * reply written from its completion is not a hand-off.  Such handlers must
 * then never block (dmio.h's WARNING): what may wait goes to another
 * thread.
 */
#ifndef FUSEMIRROR_FRONT_FUSE_URING_H
#define FUSEMIRROR_FRONT_FUSE_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <glib.h>
#include <liburing.h>

#include "fusemirror/dmio.h"

struct fuse_session;
struct fuse_in_header;
struct front_uring;
struct front_uring_req;

#define FRONT_URING_ERROR (front_uring_error_quark())
GQuark front_uring_error_quark(void);

/* The kernel parameter that switches FUSE over io_uring on. */
#define FRONT_URING_PARAM "/sys/module/fuse/parameters/enable_uring"

/* Entries per queue when the caller gives 0: a QD32 job from one CPU. */
#define FRONT_URING_DEFAULT_DEPTH 32u

/*
 * Can this kernel serve a mount through io_uring?  Returns 0 if
 * FRONT_URING_PARAM says yes, -EOPNOTSUPP if the parameter is off, -ENOENT
 * if the kernel has no such parameter (before 6.14, or without
 * CONFIG_FUSE_IO_URING), with a message in @err naming the parameter.
 */
int front_uring_probe(GError **err);

/* The number of queues the kernel expects: the highest possible CPU + 1. */
unsigned front_uring_nr_possible_cpus(void);

/*
 * The ring of the queue thread this is called on, or NULL on any other
 * thread.  Every CQE of it carries a pointer to a struct dmio_loop_op
 * (embedded in the caller's own structure) as user_data, whose done() the
 * loop calls with the CQE's res and flags; SQEs prepared on it are
 * submitted by the loop when the current callback returns.  The ring has
 * 128-byte SQEs.
 */
struct io_uring *front_uring_current_ring(void);

/* Called on a queue thread for each request; must answer it once. */
typedef void front_uring_handler_fn(void *ctx, struct front_uring_req *req);

struct front_uring_opts {
	unsigned depth;                 /* entries per queue; 0: the default */
	/*
	 * NULL: every request goes to the session's own low-level operations
	 * through fuse_session_process_buf() on the queue thread (the
	 * payload in place, no copy), and what they answer with fuse_reply_*()
	 * -- from any thread -- becomes the entry's reply (one copy into the
	 * entry's buffer; none for data built in it: front_uring_req_of(),
	 * front_uring_reply_buf()).  Opcodes other than lookup, getattr, setattr,
	 * open(dir), read(dir), write, release(dir), fsync(dir), flush,
	 * fallocate, access and statfs are answered ENOSYS.
	 */
	front_uring_handler_fn *handler;
	void *ctx;
	bool require;                   /* fail if the kernel does not offer it */
	/*
	 * Each queue thread's ring is a dmio loop it creates (dmio.h,
	 * "Loops"; starts the dmio engine): handlers run to completion on it
	 * and must not block.  false: a plain ring of the queue's own (what
	 * bench/memfuse, which does no dmio I/O, uses).
	 */
	bool dmio_loop;
	/*
	 * Optional, with dmio_loop: called on the queue thread for each
	 * request of a batch the ring delivered together, before the first of
	 * them goes to the handler (dmio_loop_set_peek()); the request may
	 * only be looked at (front_uring_req_in(), _op_in()), not answered.
	 * For what is cheaper started for the whole batch at once: the
	 * front prefetches the leg lines its reads will copy.
	 */
	front_uring_handler_fn *peek;
};

/*
 * Take over the mounted, not yet served session @se as described above.
 * Returns 0 with *@ret (io_uring in use), or -errno with @err.  In both
 * cases *@ret_init_done tells whether INIT was answered: then the session
 * goes on working on /dev/fuse alone after a failure (the kernel turns
 * io_uring off for the connection when a REGISTER fails).  Without
 * opts->require, a kernel that does not offer io_uring in INIT is not a
 * failure: 0 with *@ret NULL.  Blocks until INIT arrived and every entry
 * is registered.
 */
int front_uring_start(struct fuse_session *se, const struct front_uring_opts *opts,
		      struct front_uring **ret, bool *ret_init_done, GError **err);

/*
 * Hand no more requests to handlers (accepts NULL; from any thread, a
 * handler's included; does not wait).  Each queue thread sees it at its
 * next turn: a request that arrives later is held, never answered, and
 * fails when the session's fd is closed (the connection's abort), as a
 * request left unread on /dev/fuse does.  The queues go on committing the
 * replies of the requests already handed out and completing their I/O, so
 * the requests in flight end however busy the clients are.
 */
void front_uring_close(struct front_uring *u);

/*
 * front_uring_close(), then wait until every queue thread has seen it: no
 * handler runs any more but for those requests' replies and I/O.  From
 * the thread that calls front_uring_stop() (accepts NULL).
 */
void front_uring_quiesce(struct front_uring *u);

/*
 * Stop the queue threads and free everything (accepts NULL; quiesces
 * first).  Every request handed to a handler must have been answered, and
 * nothing may answer one any more.  Requests the kernel still queues fail
 * once the session's fd is closed.
 */
void front_uring_stop(struct front_uring *u);

/* The request: the FUSE in-header, the opcode's first argument (op_in, up
 * to 128 bytes), the rest (write data, names) and its size. */
const struct fuse_in_header *front_uring_req_in(const struct front_uring_req *req);
const void *front_uring_req_op_in(const struct front_uring_req *req);
const void *front_uring_req_payload(const struct front_uring_req *req, size_t *ret_len);

/*
 * Inside a handler, or a low-level operation that libfuse called for a
 * ring request, on the queue thread: that request's entry; NULL anywhere
 * else (a /dev/fuse request, another thread, later).
 */
struct front_uring_req *front_uring_current_req(void);

/*
 * From a handler, on its queue thread: serve @req as if there were no
 * handler (the session's low-level operations through libfuse, see
 * front_uring_opts.handler), which answers it.  For the opcodes a handler
 * does not serve itself.
 */
void front_uring_to_libfuse(struct front_uring_req *req);

/*
 * FRONT_URING_SCRATCH bytes (page aligned) that belong to @req from its
 * arrival until its reply and that the kernel never touches: the caller's
 * context for the request, so that answering it allocates nothing.  Not
 * to be touched after the reply (the next request of the entry has it).
 */
#define FRONT_URING_SCRATCH 8192u
void *front_uring_req_scratch(struct front_uring_req *req);

/*
 * The entry's payload buffer (capacity in *@ret_cap), where a reply may be
 * built in place and then sent with front_uring_reply(req, 0, buf, len):
 * the write data (front_uring_req_payload) is in the same buffer, so only
 * once it was consumed.
 */
void *front_uring_reply_buf(struct front_uring_req *req, size_t *ret_cap);

/*
 * Answer @req: @error 0 with @len bytes of @data as the reply (copied
 * unless @data is the reply buffer; @data may lie inside it; @len must be the opcode's exact reply
 * size, READ and READDIR may be shorter), or a positive errno.  @len must
 * not exceed the reply buffer.  From any thread; exactly once.
 */
void front_uring_reply(struct front_uring_req *req, int error, const void *data, size_t len);
void front_uring_reply_attr(struct front_uring_req *req, const struct stat *st, double timeout);
void front_uring_reply_entry(struct front_uring_req *req, uint64_t nodeid, const struct stat *st,
			     double entry_timeout, double attr_timeout);
void front_uring_reply_statfs(struct front_uring_req *req, const struct statvfs *st);
void front_uring_reply_write(struct front_uring_req *req, uint32_t count);
void front_uring_reply_open(struct front_uring_req *req, uint64_t fh, uint32_t open_flags);

struct front_uring_queue_stats {
	unsigned cpu;                   /* qid */
	unsigned depth;                 /* entries registered */
	uint64_t requests;              /* requests received */
	uint64_t in_flight;             /* received, not yet answered */
	uint64_t handoffs;              /* replies sent from another thread */
	uint64_t moves;                 /* times its thread left its CPU */
};
unsigned front_uring_nr_queues(const struct front_uring *u);
void front_uring_get_stats(const struct front_uring *u, unsigned qid,
			   struct front_uring_queue_stats *ret);

#endif /* FUSEMIRROR_FRONT_FUSE_URING_H */
