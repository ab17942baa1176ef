/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Remote devices: a leg on another machine, reached over NBD with libnbd.
 *
 * A remote dmio_dev has no fd; it has one libnbd handle (one connection),
 * connected by dmio_dev_open() with a deadline (the aio connect, polled
 * there: blocking, never on a hot-path thread) and driven afterwards only through libnbd's aio calls.
 *
 * Sharing the connection between threads: one owner.  Every piece of a
 * remote device is queued on its owner ring, ring_of(dev): an engine reaper.
 * Other threads hand pieces over through that ring's lock-free inbox, as
 * for local devices; a loop does the same (its pieces must never wait for
 * anything it does not reap itself, and a connection cannot be polled from
 * two rings), and gets each piece back through its `returned` stack, so the
 * request still completes on the loop that submitted it
 * (dmio_ring_piece_done).  One connection per device rather than one per
 * loop: most servers (qemu-nbd) do not advertise multi-conn, without which
 * a flush on one connection says nothing about writes sent on another.
 *
 * The owner issues libnbd commands (nbd_aio_pread/pwrite/flush/zero)
 * and polls the socket on its own ring: IORING_OP_POLL_ADD for POLLIN while
 * commands are in flight, and for POLLOUT while libnbd has bytes it could
 * not send (nbd_aio_get_direction).  A poll completion calls
 * nbd_aio_notify_read/write, which runs the state machine and the
 * completion callbacks, on the owner, with the handle's lock held: so a
 * callback only records the result and lists the piece; the pieces are
 * finished after libnbd returned (n->completed).  Nothing here blocks.
 *
 * Invariants (owner thread only, except where atomic):
 *   - p->nbd_pending counts the piece's libnbd commands not yet completed;
 *     the piece is finished when it reaches zero, after the commands whose
 *     callbacks ran were retired (nbd_aio_command_completed(), which may
 *     still fail one: n->cookies finds its piece).  A command that libnbd
 *     refuses to issue (-1) without calling its callback counts as failed
 *     right away (p->nbd_calls tells whether the callback ran).
 *   - n->pin.armed: a POLLIN poll is on the ring; it is armed whenever
 *     commands are in flight, so a reply (or the end of the connection,
 *     which fails every command in flight) is always noticed.  When the
 *     ring has no room for it (its submission refused: EBUSY, EAGAIN)
 *     the device waits on its owner's `unarmed` list, holding `busy`,
 *     and the reaper arms it again on its next turn
 *     (dmio_nbd_arm_deferred()), before it sleeps.  With a
 *     timeout set, the poll carries a linked timeout: no reply for that
 *     long while commands are in flight means a hung server, and the
 *     socket is shut down, which fails them (and the connection).
 *   - A poll's struct stays valid until its CQE is reaped: close waits for
 *     `armed` to drop and `busy` (the owner still at work on the device
 *     after finishing its last piece) to be 0.  A POLLIN poll may stay
 *     armed with nothing in flight (libnbd read the last reply inside an
 *     aio call): close shuts the socket down, which ends it.
 *   - The polls and those shutdowns use n->fd, a dup of libnbd's socket:
 *     libnbd closes its own when it gives up on the connection (a
 *     protocol error) while a poll may be armed, e.g. for POLLOUT, which
 *     a server that no longer reads would never end.  check_dead() shuts
 *     n->fd down as soon as libnbd is dead or closed.
 *
 * Semantics as for a local file (see dmio.h): FUA when the server has it,
 * otherwise write then flush; flush when it has it, otherwise nothing to
 * flush.  dmio's discard promises zeroes afterwards, which NBD_CMD_TRIM does
 * not: a discard is NBD_CMD_WRITE_ZEROES that may unmap (no NO_HOLE flag),
 * a write-zeroes the same with NO_HOLE (allocation kept, as ZERO_RANGE);
 * without the server's write-zeroes both are -EOPNOTSUPP, which request.c
 * turns into its fallback (zero writes for write-zeroes; a discard fails
 * its region, as on a file system without hole punching).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "dmio_i.h"

/* Largest payload of one NBD command we send (the protocol's usual cap). */
#define NBD_MAX_PAYLOAD (32u << 20)
/* Largest write-zeroes range of one command (32-bit lengths). */
#define NBD_MAX_ZERO (1u << 30)
/* Socket buffers asked for: room for a queue depth of 1 MiB writes, so
 * that libnbd sends each payload in one sendmsg.  With the default
 * 208 KiB, a 1 MiB write took 5.6 sendto per MiB (counted with strace,
 * nbdkit over a unix socket, fio 1M QD8), each short send costing a
 * POLLOUT poll and a wake-up of the owner; with this, 2 (the header,
 * then the payload), and nbdkit spends less CPU per MiB too. */
#define NBD_SOCK_BUF (8u << 20)

struct nbd_poll {
	struct dmio_loop_op op;         /* first: user_data of the poll SQE */
	struct dmio_nbd *n;
	atomic_bool armed;
};

struct dmio_nbd {
	struct nbd_handle *h;
	struct dmio_dev *dev;
	/* Our own descriptor of the connection's socket (a dup of libnbd's,
	 * which libnbd closes when it gives up on the connection, while a
	 * poll may still hold the socket): polled, and shut down when the
	 * connection ends or the device is closed. */
	int fd;
	bool can_fua, can_flush, can_trim, can_zero;
	/* Owner only. */
	struct dmio_ring *owner;
	struct nbd_poll pin, pout;
	struct __kernel_timespec tmo_ts;
	struct dmio_piece *completed;   /* callbacks done, not finished yet */
	GHashTable *cookies;            /* a command's cookie -> its piece, from
					   its issue to its retirement */
	uint64_t progress_ns;           /* last reply, or first command after idle */
	bool unarmed;                   /* on the owner's `unarmed` list */
	struct dmio_nbd *unarmed_next;
	/* Any thread. */
	atomic_uint timeout_ms;         /* hung-server timeout; 0: none */
	atomic_ullong rtt_ns;           /* moving average of command latency */
	atomic_ullong commands;         /* pieces completed */
	atomic_ullong errors;           /* pieces failed */
	atomic_ullong hangs;            /* connections shut down as hung */
	atomic_bool dead;               /* the connection is gone */
	/* The owner is inside poll_done() or dmio_nbd_queue() for this
	 * device: a piece it finished may let its user close the device
	 * before the owner is done with it (close waits for 0). */
	atomic_uint busy;
};

static const char *const nbd_schemes[] = {
	"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://",
};

bool dmio_path_is_remote(const char *path)
{
	if (!path)
		return false;
	for (unsigned i = 0; i < FM_ARRAY_SIZE(nbd_schemes); i++)
		if (!strncmp(path, nbd_schemes[i], strlen(nbd_schemes[i])))
			return true;
	return false;
}

/*----------------------------------------------------------------*/
/* Open and close (blocking; never on a hot-path thread) */

/*
 * Large socket buffers, best effort.  A unix socket has no autotuning:
 * SO_SNDBUFFORCE (CAP_NET_ADMIN), else SO_SNDBUF (capped at
 * net.core.wmem_max; its receive side is accounted to the sender).  A TCP
 * socket's autotuning grows its buffers up to tcp_wmem/tcp_rmem's maximum
 * (4/6 MiB by default) and any SO_SNDBUF/SO_RCVBUF switches it off: only
 * the forced 8 MiB (twice that, as the kernel counts) is sure to be larger,
 * so without the capability TCP keeps its autotuning.
 */
static void grow_socket_buffers(struct nbd_handle *h)
{
	int fd = nbd_aio_get_fd(h), v = NBD_SOCK_BUF, domain = -1;
	socklen_t len = sizeof(domain);

	if (fd < 0)
		return;
	(void)getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0 && domain == AF_UNIX)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	if (domain != AF_UNIX)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v));
}

/* nbd_connect_uri() with a deadline: the aio connect, polled here.
 * 0, -1 (libnbd's error), or -ETIMEDOUT. */
static int connect_with_timeout(struct nbd_handle *h, const char *uri, unsigned timeout_ms)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)timeout_ms * 1000000u;

	if (nbd_aio_connect_uri(h, uri) == -1)
		return -1;
	while (nbd_aio_is_connecting(h) == 1) {
		unsigned dir = nbd_aio_get_direction(h);
		struct pollfd pfd = { .fd = nbd_aio_get_fd(h) };
		uint64_t now = fm_now_ns();
		int r;

		if (now >= deadline) {
			fm_debug("dmio: %s: no NBD handshake in %u ms", uri, timeout_ms);
			return -ETIMEDOUT;
		}
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			pfd.events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			pfd.events |= POLLOUT;
		r = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
		if (r < 0 && errno != EINTR)
			return -1;
		if (r <= 0)
			continue;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (nbd_aio_notify_read(h) == -1)
				return -1;
		} else if (pfd.revents & POLLOUT) {
			if (nbd_aio_notify_write(h) == -1)
				return -1;
		}
	}
	return nbd_aio_is_ready(h) == 1 ? 0 : -1;
}

int dmio_nbd_open(struct dmio_dev *dev, const char *uri, unsigned flags,
		  unsigned connect_timeout_ms)
{
	struct dmio_nbd *n;
	int64_t size, minbs;
	int err;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->dev = dev;
	n->h = nbd_create();
	if (!n->h) {
		err = nbd_get_errno();
		free(n);
		return -(err ? err : ENOMEM);
	}
	n->cookies = g_hash_table_new(g_direct_hash, g_direct_equal);
	/* tls-psk-file= and the like name local files: the URI is the
	 * administrator's, as a leg path is. */
	nbd_set_uri_allow_local_file(n->h, true);
	nbd_set_handle_name(n->h, "fusemirror");
	/* A server that accepts the connection but does not finish the
	 * handshake in time is refused (libnbd's own connect would wait
	 * forever). */
	err = connect_with_timeout(n->h, uri, connect_timeout_ms ? connect_timeout_ms
								 : DMIO_REMOTE_CONNECT_TIMEOUT_MS);
	if (err == -ETIMEDOUT) {
		nbd_close(n->h);
		g_hash_table_destroy(n->cookies);
		free(n);
		return -ETIMEDOUT;
	}
	if (err < 0)
		goto fail;
	size = nbd_get_size(n->h);
	if (size < 0)
		goto fail;
	if (!(flags & DMIO_DEV_RDONLY) && nbd_is_read_only(n->h) == 1) {
		fm_debug("dmio: %s: the server exports it read-only", uri);
		nbd_close(n->h);
		g_hash_table_destroy(n->cookies);
		free(n);
		return -EROFS;
	}
	n->fd = fcntl(nbd_aio_get_fd(n->h), F_DUPFD_CLOEXEC, 0);
	if (n->fd < 0) {
		err = errno;
		nbd_close(n->h);
		g_hash_table_destroy(n->cookies);
		free(n);
		return -err;
	}
	grow_socket_buffers(n->h);
	n->can_fua = nbd_can_fua(n->h) == 1;
	n->can_flush = nbd_can_flush(n->h) == 1;
	n->can_trim = nbd_can_trim(n->h) == 1;
	n->can_zero = nbd_can_zero(n->h) == 1;
	n->pin.n = n;
	n->pout.n = n;
	dev->nbd = n;
	dev->fd = -1;
	dev->size = (uint64_t)size;
	dev->rdonly = flags & DMIO_DEV_RDONLY;
	dev->blockdev = false;
	dev->in_memory = false;
	dev->lbs = FM_SECTOR_SIZE;
	dev->direct = false;
	dev->mem_align = 1;
	dev->off_align = FM_SECTOR_SIZE;
	/* A server that only takes larger blocks: unaligned I/O is bounced
	 * and read-modify-written as for an O_DIRECT file. */
	minbs = nbd_get_block_size(n->h, LIBNBD_SIZE_MINIMUM);
	if (minbs > FM_SECTOR_SIZE && minbs <= FM_PAGE_SIZE && fm_is_power_of_2((uint64_t)minbs)) {
		dev->lbs = (unsigned)minbs;
		dev->direct = true;
		dev->off_align = (unsigned)minbs;
	}
	fm_debug("dmio: %s: NBD export of %" PRId64 " bytes, min block %" PRId64
		 ", fua %d flush %d trim %d zero %d", uri, size, minbs, n->can_fua,
		 n->can_flush, n->can_trim, n->can_zero);
	return 0;

fail:
	err = nbd_get_errno();
	fm_debug("dmio: %s: %s", uri, nbd_get_error());
	nbd_close(n->h);
	g_hash_table_destroy(n->cookies);
	free(n);
	return -(err ? err : EIO);
}

/*
 * End a connection we give up on, dropping what it still carries: a TCP
 * socket is reset (connect() with AF_UNSPEC: the kernel purges the send
 * queue and sends RST, which also discards what the server received but
 * has not read), so no command sent before a cut or a hang reaches the
 * server after a reconnection, where it would land after newer writes
 * (a stale WRITE_ZEROES of a region's first write wiped the recovered
 * data of remote_netcut).  Then shut down, which libnbd sees as the end
 * of the connection.  (A unix socket cannot be reset: what a stopped
 * server has not read yet stays in its queue.)
 */
static void abort_socket(int fd)
{
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	if (fd < 0)
		return;
	(void)connect(fd, &sa, sizeof(sa));
	shutdown(fd, SHUT_RDWR);
}

/* Has the server closed its end (idle devices learn it only here)? */
static bool peer_gone(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void dmio_nbd_close(struct dmio_dev *dev)
{
	struct dmio_nbd *n = dev->nbd;

	if (!n)
		return;
	/* Say goodbye without waiting (a hung server must not hold us); not
	 * to a server whose end of the connection is gone already: libnbd
	 * 1.14.2's disconnect, failing to send inside the call, frees its
	 * command and reads it again. */
	if (!atomic_load(&n->dead) && nbd_aio_is_ready(n->h) == 1 &&
	    nbd_aio_in_flight(n->h) == 0 && !peer_gone(n->fd))
		nbd_aio_disconnect(n->h, 0);
	/* A poll still armed (nothing in flight: see the invariants) ends
	 * when the socket does; its struct is ours until it is reaped.  Our
	 * own fd: libnbd's is gone once it gave up on the connection. */
	if (atomic_load(&n->pin.armed) || atomic_load(&n->pout.armed)) {
		if (nbd_aio_in_flight(n->h) > 0)
			abort_socket(n->fd);
		else
			shutdown(n->fd, SHUT_RDWR);
	}
	while (atomic_load(&n->pin.armed) || atomic_load(&n->pout.armed) ||
	       atomic_load(&n->busy))
		sched_yield();
	close(n->fd);
	nbd_close(n->h);
	g_hash_table_destroy(n->cookies);
	dev->nbd = NULL;
	free(n);
}

int dmio_dev_set_remote_timeout(struct dmio_dev *dev, unsigned timeout_ms)
{
	if (!dev->nbd)
		return -ENOTSUP;
	atomic_store(&dev->nbd->timeout_ms, timeout_ms);
	return 0;
}

int dmio_dev_get_remote_stats(struct dmio_dev *dev, struct dmio_remote_stats *ret)
{
	struct dmio_nbd *n = dev->nbd;
	socklen_t len = sizeof(int);
	int sndbuf = 0;

	if (!n)
		return -ENOTSUP;
	memset(ret, 0, sizeof(*ret));
	ret->connected = !atomic_load(&n->dead) && nbd_aio_is_dead(n->h) != 1 &&
			 nbd_aio_is_closed(n->h) != 1;
	ret->rtt_us = atomic_load(&n->rtt_ns) / 1000;
	ret->commands = atomic_load(&n->commands);
	ret->errors = atomic_load(&n->errors);
	ret->hangs = atomic_load(&n->hangs);
	if (!ret->connected ||
	    getsockopt(nbd_aio_get_fd(n->h), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0)
		sndbuf = 0;
	ret->sndbuf = sndbuf > 0 ? (unsigned)sndbuf : 0;
	ret->can_fua = n->can_fua;
	ret->can_flush = n->can_flush;
	ret->can_trim = n->can_trim;
	ret->can_zero = n->can_zero;
	return 0;
}

/*----------------------------------------------------------------*/
/* The owner: commands and polls */

static void arm_polls(struct dmio_nbd *n);

/* libnbd is done with the connection (dead or closed): say so, and shut
 * our fd of it down, which ends a poll still armed on it (libnbd closed
 * its own fd: nothing else would) and lets the server see the end. */
static void check_dead(struct dmio_nbd *n)
{
	if (nbd_aio_is_dead(n->h) != 1 && nbd_aio_is_closed(n->h) != 1)
		return;
	if (!atomic_exchange(&n->dead, true))
		shutdown(n->fd, SHUT_RDWR);
}

static int cmd_done(void *user_data, int *error)
{
	struct dmio_piece *p = user_data;
	struct dmio_nbd *n = p->dev->nbd;

	p->nbd_calls++;
	n->progress_ns = fm_now_ns();
	if (*error && !p->nbd_err)
		p->nbd_err = *error;
	if (--p->nbd_pending == 0) {
		p->next = n->completed;
		n->completed = p;
	}
	/* Not retired here: libnbd 1.14 reads a command it has just
	 * auto-retired when the connection dies inside the aio call that
	 * issues it.  finish_completed() retires the completed ones. */
	return 0;
}

enum nbd_cmd { CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_ZERO };

/* Issue one command of @p; a refusal counts as its completion. */
static void issue_one(struct dmio_nbd *n, struct dmio_piece *p, enum nbd_cmd kind, void *buf,
		      uint64_t len, uint64_t off, uint32_t flags)
{
	nbd_completion_callback cb = { .callback = cmd_done, .user_data = p };
	unsigned calls = p->nbd_calls;
	int64_t cookie;

	p->nbd_pending++;
	switch (kind) {
	case CMD_READ:
		cookie = nbd_aio_pread(n->h, buf, len, off, cb, 0);
		break;
	case CMD_WRITE:
		cookie = nbd_aio_pwrite(n->h, buf, len, off, cb, flags);
		break;
	case CMD_FLUSH:
		cookie = nbd_aio_flush(n->h, cb, 0);
		break;
	default: /* CMD_ZERO: NO_HOLE or not, in @flags */
		cookie = nbd_aio_zero(n->h, len, off, cb, flags);
		break;
	}
	if (cookie > 0)
		g_hash_table_insert(n->cookies, GSIZE_TO_POINTER((gsize)cookie), p);
	if (cookie == -1 && p->nbd_calls == calls) {
		int err = nbd_get_errno();

		fm_debug("dmio: %s: %s", n->dev->name, nbd_get_error());
		if (!p->nbd_err)
			p->nbd_err = err ? err : EIO;
		if (--p->nbd_pending == 0) {
			p->next = n->completed;
			n->completed = p;
		}
	}
}

/* Issue the commands of @p (one per contiguous run of its memory). */
static void issue(struct dmio_nbd *n, struct dmio_piece *p)
{
	uint32_t flags = 0;
	uint64_t off = p->off;

	p->nbd_pending = 1; /* held while issuing: nothing finishes it early */
	if (nbd_aio_in_flight(n->h) == 0)
		n->progress_ns = fm_now_ns(); /* the hang clock starts now */
	switch (p->kind) {
	case DMIO_PIECE_READ:
	case DMIO_PIECE_WRITE:
		if (p->kind == DMIO_PIECE_WRITE && (p->rw_flags & RWF_DSYNC)) {
			if (n->can_fua)
				flags = LIBNBD_CMD_FLAG_FUA;
			else
				p->nbd_fua_flush = n->can_flush;
		}
		for (unsigned i = p->iov_first; i < p->iov_first + p->iovcnt;) {
			uint8_t *base = p->iov[i].iov_base;
			uint64_t len = p->iov[i].iov_len;

			/* Merge memory that continues in the next iovec. */
			for (i++; i < p->iov_first + p->iovcnt &&
				  (uint8_t *)p->iov[i].iov_base == base + len &&
				  len + p->iov[i].iov_len <= NBD_MAX_PAYLOAD; i++)
				len += p->iov[i].iov_len;
			while (len) {
				uint64_t chunk = len < NBD_MAX_PAYLOAD ? len : NBD_MAX_PAYLOAD;

				issue_one(n, p, p->kind == DMIO_PIECE_READ ? CMD_READ : CMD_WRITE,
					  base, chunk, off, flags);
				base += chunk;
				off += chunk;
				len -= chunk;
			}
		}
		break;
	case DMIO_PIECE_FSYNC:
		if (n->can_flush)
			issue_one(n, p, CMD_FLUSH, NULL, 0, 0, 0);
		break;
	case DMIO_PIECE_FALLOC: {
		bool zero = p->falloc_mode & FALLOC_FL_ZERO_RANGE;
		uint64_t len = p->len;

		if (!n->can_zero) {
			p->nbd_err = EOPNOTSUPP;
			break;
		}
		while (len) {
			uint64_t chunk = len < NBD_MAX_ZERO ? len : NBD_MAX_ZERO;

			issue_one(n, p, CMD_ZERO, NULL, chunk, off,
				  zero ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
			off += chunk;
			len -= chunk;
		}
		break;
	}
	default: /* NOP */
		break;
	}
	if (--p->nbd_pending == 0) {
		p->next = n->completed;
		n->completed = p;
	}
}

/*
 * Retire every command libnbd has completed.  Retiring can fail one whose
 * callback saw no error: a structured read whose chunks did not cover its
 * count (libnbd 1.14 checks that only here).  Its piece fails then; what
 * the server never sent is not data.
 */
static void retire_completed(struct dmio_nbd *n)
{
	int64_t cookie;

	while ((cookie = nbd_aio_peek_command_completed(n->h)) > 0) {
		gpointer key = GSIZE_TO_POINTER((gsize)cookie);
		struct dmio_piece *p = g_hash_table_lookup(n->cookies, key);

		g_hash_table_remove(n->cookies, key);
		if (nbd_aio_command_completed(n->h, (uint64_t)cookie) == -1 && p &&
		    !p->nbd_err) {
			int err = nbd_get_errno();

			fm_debug("dmio: %s: %s", n->dev->name, nbd_get_error());
			p->nbd_err = err ? err : EIO;
		}
	}
}

/* Finish the pieces whose commands completed (outside libnbd's lock). */
static void finish_completed(struct dmio_nbd *n)
{
	for (;;) {
		struct dmio_piece *list;

		/* Each pass retires first: the emulated FUA's flush below
		 * can end the connection inside nbd_aio_flush(), which
		 * completes every command in flight and lists their pieces
		 * again; finished unretired, their cookies would stay in
		 * n->cookies and name a freed (or reused) piece. */
		retire_completed(n);
		/* Before the pieces are finished: their user, told of a
		 * failure, asks whether the connection is gone (a remote leg
		 * reconnects only then). */
		check_dead(n);
		if (!n->completed)
			break;
		list = n->completed;
		n->completed = NULL;
		while (list) {
			struct dmio_piece *p = list;
			int res;

			list = p->next;
			if (!p->nbd_err && p->nbd_fua_flush) {
				/* FUA the server lacks: a flush after the write. */
				p->nbd_fua_flush = false;
				p->nbd_pending = 1;
				issue_one(n, p, CMD_FLUSH, NULL, 0, 0, 0);
				if (--p->nbd_pending == 0) {
					p->next = n->completed;
					n->completed = p;
				}
				continue;
			}
			if (p->nbd_err)
				res = -p->nbd_err;
			else if (p->kind == DMIO_PIECE_READ || p->kind == DMIO_PIECE_WRITE)
				res = p->len > INT32_MAX ? INT32_MAX : (int)p->len;
			else
				res = 0;
			if (p->nbd_err) {
				atomic_fetch_add_explicit(&n->errors, 1, memory_order_relaxed);
			} else if (p->nbd_t0_ns) {
				/* Moving average over ~8 commands. */
				uint64_t d = fm_now_ns() - p->nbd_t0_ns;
				uint64_t old = atomic_load_explicit(&n->rtt_ns, memory_order_relaxed);

				atomic_store_explicit(&n->rtt_ns, old ? old - old / 8 + d / 8 : d,
						      memory_order_relaxed);
			}
			atomic_fetch_add_explicit(&n->commands, 1, memory_order_relaxed);
			dmio_ring_piece_done(n->owner, p, res);
		}
	}
}

static void poll_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	struct nbd_poll *pl = (struct nbd_poll *)op;
	struct dmio_nbd *n = pl->n;

	(void)cqe_flags;
	atomic_fetch_add(&n->busy, 1); /* before `armed` drops: close waits */
	if (pl == &n->pin && res == -ECANCELED && nbd_aio_in_flight(n->h) > 0 &&
	    fm_now_ns() - n->progress_ns >= (uint64_t)atomic_load(&n->timeout_ms) * 1000000u) {
		/* The linked timeout fired: no reply for timeout_ms while
		 * commands wait (the poll may be older than they are: hence
		 * progress_ns).  Shutting the socket down makes libnbd see
		 * the end of the connection and fail them all. */
		fm_debug("dmio: %s: no reply for %u ms: the server hangs; disconnecting",
			 n->dev->name, atomic_load(&n->timeout_ms));
		atomic_fetch_add(&n->hangs, 1);
		abort_socket(n->fd);
		res = POLLIN | POLLHUP;
	}
	/* Unarmed before libnbd runs: arm_polls() below may re-arm it. */
	atomic_store_explicit(&pl->armed, false, memory_order_release);
	if (res > 0) {
		unsigned dir = nbd_aio_get_direction(n->h);

		if ((res & (POLLHUP | POLLERR)) ||
		    ((res & POLLIN) && (dir & LIBNBD_AIO_DIRECTION_READ)))
			nbd_aio_notify_read(n->h);
		else if ((res & POLLOUT) && (dir & LIBNBD_AIO_DIRECTION_WRITE))
			nbd_aio_notify_write(n->h);
	}
	finish_completed(n);
	arm_polls(n);
	atomic_fetch_sub(&n->busy, 1); /* the last touch of n */
}

static void tmo_done(struct dmio_loop_op *op, int res, unsigned cqe_flags)
{
	(void)op;
	(void)res;
	(void)cqe_flags;
}

/* The linked timeouts' user_data: static, as its CQE may come after the
 * device is closed (the poll's came first). */
static struct dmio_loop_op tmo_op = { .done = tmo_done };

static bool arm_one(struct dmio_nbd *n, struct nbd_poll *pl, unsigned mask, unsigned timeout_ms)
{
	struct io_uring_sqe *sqe, *t;

	/* Both SQEs first: had the ring room for one only, getting the
	 * second would submit the poll without its link, and the timeout
	 * would fail alone (-EINVAL), leaving the poll with none. */
	if (!dmio_ring_reserve_sqes(n->owner, timeout_ms ? 2 : 1))
		return false;
	sqe = dmio_ring_get_sqe(n->owner);
	io_uring_prep_poll_add(sqe, n->fd, mask);
	io_uring_sqe_set_data(sqe, &pl->op);
	if (timeout_ms) {
		t = dmio_ring_get_sqe(n->owner);
		sqe->flags |= IOSQE_IO_LINK;
		n->tmo_ts.tv_sec = timeout_ms / 1000;
		n->tmo_ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		io_uring_prep_link_timeout(t, &n->tmo_ts, 0);
		io_uring_sqe_set_data(t, &tmo_op);
	}
	atomic_store_explicit(&pl->armed, true, memory_order_relaxed);
	return true;
}

/* The owner's devices whose polls found no room on its ring (owner
 * thread only: one list per reaper). */
static __thread struct dmio_nbd *unarmed;

/*
 * Poll for what libnbd waits for: replies while commands are in flight,
 * writability while it has bytes to send.  If the ring has no SQE left
 * and its submission is refused (EBUSY, EAGAIN: the kernel is short of
 * room for completions), the device goes on the owner's `unarmed` list:
 * the reaper arms its polls on its next turn, after it reaped what it
 * could, and does not sleep while one waits.  It holds `busy` meanwhile
 * (a device with commands in flight is not closed; one whose last piece
 * a poll finished may be, and close then waits for that turn).
 */
static void arm_polls(struct dmio_nbd *n)
{
	unsigned dir;
	bool ok = true;

	check_dead(n);
	if (atomic_load(&n->dead))
		return;
	dir = nbd_aio_get_direction(n->h);
	if (!atomic_load_explicit(&n->pin.armed, memory_order_relaxed) &&
	    ((dir & LIBNBD_AIO_DIRECTION_READ) && nbd_aio_in_flight(n->h) > 0))
		ok = arm_one(n, &n->pin, POLLIN, atomic_load(&n->timeout_ms));
	if (!atomic_load_explicit(&n->pout.armed, memory_order_relaxed) &&
	    (dir & LIBNBD_AIO_DIRECTION_WRITE))
		ok = arm_one(n, &n->pout, POLLOUT, 0) && ok;
	if (!ok && !n->unarmed) {
		n->unarmed = true;
		n->unarmed_next = unarmed;
		unarmed = n;
		atomic_fetch_add(&n->busy, 1); /* dropped once retried */
	}
}

bool dmio_nbd_arm_deferred(void)
{
	struct dmio_nbd *list = unarmed;

	if (fm_likely(!list))
		return false;
	unarmed = NULL;
	while (list) {
		struct dmio_nbd *n = list;

		list = n->unarmed_next;
		n->unarmed = false;
		arm_polls(n);   /* back on the list if the ring is still full */
		atomic_fetch_sub(&n->busy, 1);
	}
	return unarmed != NULL;
}

void dmio_nbd_queue(struct dmio_ring *r, struct dmio_piece *p)
{
	struct dmio_nbd *n = p->dev->nbd;

	if (!n->owner) {
		n->owner = r;
		n->pin.op.done = poll_done;
		n->pout.op.done = poll_done;
	}
	p->nbd_err = 0;
	p->nbd_calls = 0;
	p->nbd_pending = 0;
	p->nbd_fua_flush = false;
	p->nbd_t0_ns = 0;
	if (dmio_piece_replaced_by_fault(p)) {
		dmio_ring_piece_done(r, p, 0); /* what the NOP would return */
		return;
	}
	if (p->kind == DMIO_PIECE_READ || p->kind == DMIO_PIECE_WRITE)
		p->nbd_t0_ns = fm_now_ns();
	atomic_fetch_add(&n->busy, 1);
	issue(n, p);
	finish_completed(n);
	arm_polls(n);
	atomic_fetch_sub(&n->busy, 1);
}
