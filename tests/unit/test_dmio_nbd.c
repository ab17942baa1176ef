/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * dmio: remote devices over NBD, against real servers the test starts:
 * nbdkit (memory plugin, filters that take features away) on unix sockets
 * and loopback TCP, qemu-nbd on a unix socket: data round trips,
 * FUA/flush/trim/zero used or emulated, a loop's requests completing on the
 * loop, a dead server, a hung one; and a server scripted in the test for
 * replies nbdkit never sends (a short structured read, a reply of a wrong
 * magic) or for a death at a chosen moment (right after a write's reply).
 */
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fm_test.h"
#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

#define MiB (1024u * 1024u)
#define SRV_SIZE (4 * MiB)

static struct fm_test_nbd srv;

static void fx_teardown(void)
{
	dmio_engine_shutdown();
	fm_test_nbd_stop(&srv);
}

static struct dmio_dev *open_remote(void)
{
	struct dmio_dev *dev = NULL;
	int r = dmio_dev_open(srv.uri, 0, &dev);

	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", srv.uri, g_strerror(-r));
	return dev;
}

/*----------------------------------------------------------------*/

START_TEST(test_open_probe)
{
	g_autoptr(dmio_dev) dev = NULL;
	struct dmio_remote_stats st;

	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	ck_assert(dmio_path_is_remote(srv.uri));
	ck_assert(dmio_path_is_remote("nbd://host:10809/export"));
	ck_assert(dmio_path_is_remote("nbds://host/export"));
	ck_assert(!dmio_path_is_remote("/tmp/nbd://x"));
	ck_assert(!dmio_path_is_remote("nbd.img"));
	dev = open_remote();
	ck_assert(dmio_dev_is_remote(dev));
	ck_assert_int_eq(dmio_dev_fd(dev), -1);
	ck_assert_uint_eq(dmio_dev_size(dev), SRV_SIZE);
	ck_assert_uint_eq(dmio_dev_sectors(dev), SRV_SIZE / 512);
	ck_assert_str_eq(dmio_dev_name(dev), srv.uri);
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert(st.connected);
	ck_assert(st.can_flush && st.can_fua && st.can_trim && st.can_zero);
	/* Room for 1 MiB writes in one send (root may exceed wmem_max). */
	if (geteuid() == 0)
		ck_assert_uint_ge(st.sndbuf, 8u << 20);
}
END_TEST

START_TEST(test_open_refused)
{
	g_autofree char *dir = fm_test_mkdtemp(NULL, "nbd");
	g_autofree char *uri = g_strdup_printf("nbd+unix:///?socket=%s/none", dir);
	struct dmio_dev *dev = NULL;
	struct dmio_remote_stats st;
	g_autoptr(dmio_dev) local = NULL;
	g_autofree char *file = g_build_filename(dir, "f", NULL);

	ck_assert_int_lt(dmio_dev_open(uri, 0, &dev), 0);
	ck_assert_ptr_null(dev);
	fm_test_create_file(file, MiB);
	ck_assert_int_eq(dmio_dev_open(file, 0, &local), 0);
	ck_assert(!dmio_dev_is_remote(local));
	ck_assert_int_eq(dmio_dev_get_remote_stats(local, &st), -ENOTSUP);
	ck_assert_int_eq(dmio_dev_set_remote_timeout(local, 10), -ENOTSUP);
	fm_test_rm_rf(dir);
}
END_TEST

/* Data written through dmio (scattered memory, odd sector ranges, FUA or
 * not, several pieces) reads back the same; flush succeeds. */
START_TEST(test_round_trip)
{
	/* _i: 0 memory plugin (FUA, flush); 1 no FUA (emulated by flush);
	 * 2 a server that refuses I/O not aligned to 4 KiB (dmio bounces
	 * and read-modify-writes). */
	g_autoptr(dmio_dev) dev = NULL;
	struct fm_rng rng;
	uint8_t *wbuf = fm_test_alloc_aligned(4096, 3 * MiB);
	uint8_t *rbuf = fm_test_alloc_aligned(4096, 3 * MiB);
	struct dmio_remote_stats st;

	if (_i == 0)
		fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	else if (_i == 1)
		fm_test_nbd_start(&srv, "--filter=fua", "memory", "size=4M", NULL); /* fuamode=none */
	else
		fm_test_nbd_start(&srv, "--filter=blocksize-policy", "memory", "size=4M",
			  "blocksize-minimum=4096", "blocksize-preferred=4096",
			  "blocksize-error-policy=error", NULL);
	dev = open_remote();
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert(st.can_fua == (_i != 1));
	fm_rng_seed(&rng, fm_test_seed_for("nbd_round_trip", _i));
	for (int round = 0; round < 20; round++) {
		uint64_t sectors = fm_rng_between(&rng, 1, 3 * MiB / 512);
		uint64_t sector = fm_rng_between(&rng, 0, SRV_SIZE / 512 - sectors);
		uint64_t len = sectors * 512;
		struct dmio_region where = { dev, sector, sectors };
		struct iovec iov[3];
		struct dmio_request req = { .op = DMIO_OP_WRITE, .flags = round % 2 ? DMIO_REQ_FUA : 0 };
		unsigned long bits = ~0ul;

		fm_rng_fill(&rng, wbuf, len);
		/* Three pieces of memory, not contiguous with each other. */
		iov[0] = (struct iovec){ wbuf, len / 3 / 512 * 512 };
		iov[1] = (struct iovec){ wbuf + iov[0].iov_len, (len - iov[0].iov_len) / 2 };
		iov[2] = (struct iovec){ wbuf + iov[0].iov_len + iov[1].iov_len,
					 len - iov[0].iov_len - iov[1].iov_len };
		req.mem.type = DMIO_MEM_BVEC;
		req.mem.ptr.bvec.iov = iov;
		req.mem.ptr.bvec.iovcnt = 3;
		ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
		ck_assert_uint_eq(bits, 0);
		memset(rbuf, 0xa5, len);
		ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, rbuf, &bits), 0);
		ck_assert_msg(fm_test_first_diff(wbuf, rbuf, len) < 0,
			      "round %d: byte %zd differs", round,
			      fm_test_first_diff(wbuf, rbuf, len));
	}
	{
		struct dmio_region where = { dev, 0, 0 };
		struct dmio_request req = { .op = DMIO_OP_FLUSH };
		unsigned long bits = ~0ul;

		ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
		ck_assert_uint_eq(bits, 0);
	}
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert_uint_ge(st.commands, 40);
	ck_assert_uint_eq(st.errors, 0);
	free(wbuf);
	free(rbuf);
}
END_TEST

/* Write-zeroes reads back zeroes whether the server can zero or not (then
 * dmio writes zeroes); a discard reads back zeroes when the server has
 * write-zeroes (NBD's trim promises none) and fails its region when it has
 * not, as on a file system without hole punching. */
START_TEST(test_zero_and_discard)
{
	g_autoptr(dmio_dev) dev = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, MiB);
	struct dmio_region where;
	struct dmio_request req = { 0 };
	unsigned long bits;
	struct dmio_remote_stats st;

	if (_i == 0)
		fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	else
		fm_test_nbd_start(&srv, "--filter=nozero", "memory", "size=4M", "zeromode=none", NULL);
	dev = open_remote();
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert(st.can_zero == (_i == 0));
	memset(buf, 0x5a, MiB);
	where = (struct dmio_region){ dev, 0, MiB / 512 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_WRITE, buf, &bits), 0);
	where = (struct dmio_region){ dev, 3, 1000 };
	req.op = DMIO_OP_WRITE_ZEROES;
	bits = ~0ul;
	ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
	where = (struct dmio_region){ dev, 0, MiB / 512 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), 0);
	ck_assert_uint_eq(buf[3 * 512 - 1], 0x5a);
	ck_assert(fm_test_is_zero(buf + 3 * 512, 1000 * 512));
	ck_assert_uint_eq(buf[1003 * 512], 0x5a);
	req.op = DMIO_OP_DISCARD;
	where = (struct dmio_region){ dev, 1100, 8 };
	bits = 0;
	if (_i == 0) {
		ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
		ck_assert_uint_eq(bits, 0);
		where = (struct dmio_region){ dev, 1096, 16 };
		ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), 0);
		ck_assert_uint_eq(buf[4 * 512 - 1], 0x5a);
		ck_assert(fm_test_is_zero(buf + 4 * 512, 8 * 512));
		ck_assert_uint_eq(buf[12 * 512], 0x5a);
	} else {
		ck_assert_int_eq(dmio(&req, 1, &where, &bits), -EIO);
		ck_assert_uint_eq(bits, 1);
	}
	free(buf);
}
END_TEST

/* A loop's requests to a remote device complete on the loop's thread,
 * inside dmio_loop_run_once(), many at once; the loop is idle after. */
#define LOOP_REQS 64

struct loop_ctx {
	pthread_t self;
	unsigned done, wrong_thread;
	unsigned long bits;
};

static void loop_notify(unsigned long error_bits, void *context)
{
	struct loop_ctx *c = context;

	if (!pthread_equal(pthread_self(), c->self))
		c->wrong_thread++;
	c->bits |= error_bits;
	c->done++;
}

START_TEST(test_loop_completes_on_loop)
{
	g_autoptr(dmio_dev) dev = NULL;
	struct dmio_loop *l = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, LOOP_REQS * 4096);
	uint8_t *rbuf = fm_test_alloc_aligned(4096, LOOP_REQS * 4096);
	struct loop_ctx c = { .self = pthread_self() };
	struct fm_rng rng;

	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	dev = open_remote();
	ck_assert_int_eq(dmio_loop_create(NULL, &l), 0);
	fm_rng_seed(&rng, fm_test_seed_for("nbd_loop", 0));
	fm_rng_fill(&rng, buf, LOOP_REQS * 4096);
	for (unsigned i = 0; i < LOOP_REQS; i++) {
		struct dmio_region where = { dev, i * 8, 8 };

		ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_WRITE, buf + i * 4096,
					       loop_notify, &c), 0);
	}
	ck_assert(!dmio_loop_idle(l));
	while (c.done < LOOP_REQS)
		ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
	/* The read back, also from the loop (a synchronous call would be
	 * -EDEADLK here). */
	c.done = 0;
	for (unsigned i = 0; i < LOOP_REQS; i++) {
		struct dmio_region where = { dev, i * 8, 8 };

		ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, rbuf + i * 4096,
					       loop_notify, &c), 0);
	}
	while (c.done < LOOP_REQS)
		ck_assert_int_ge(dmio_loop_run_once(l, true), 0);
	ck_assert(dmio_loop_idle(l));
	ck_assert_uint_eq(c.wrong_thread, 0);
	ck_assert_uint_eq(c.bits, 0);
	ck_assert(fm_test_first_diff(buf, rbuf, LOOP_REQS * 4096) < 0);
	dmio_loop_destroy(l);
	free(buf);
	free(rbuf);
}
END_TEST

/* The same data path over loopback TCP (nbdkit) and against qemu-nbd (a
 * file on a unix socket): a round trip, FUA, flush, write-zeroes. */
START_TEST(test_other_servers)
{
	g_autoptr(dmio_dev) dev = NULL;
	g_autofree char *file = NULL, *qdir = NULL;
	uint8_t *wbuf = fm_test_alloc_aligned(4096, MiB), *rbuf = fm_test_alloc_aligned(4096, MiB);
	struct dmio_region where;
	struct dmio_request req = { .op = DMIO_OP_WRITE, .flags = DMIO_REQ_FUA };
	unsigned long bits = ~0ul;
	struct fm_rng rng;

	if (_i == 0) {
		/* A port of our own, from the pid (a clash fails the test
		 * loudly: nothing else here listens in that range). */
		srv.port = 20000 + (int)(getpid() % 20000);
		fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
		ck_assert(g_str_has_prefix(srv.uri, "nbd://127.0.0.1:"));
	} else {
		qdir = fm_test_mkdtemp(NULL, "qnbd");
		file = g_build_filename(qdir, "disk", NULL);
		fm_test_create_file(file, SRV_SIZE);
		fm_test_nbd_start(&srv, "qemu-nbd", file, NULL);
	}
	dev = open_remote();
	ck_assert_uint_eq(dmio_dev_size(dev), SRV_SIZE);
	if (_i == 0 && geteuid() == 0) {
		struct dmio_remote_stats st;

		/* TCP: forced past the autotuning's maximum (root only). */
		ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
		ck_assert_uint_ge(st.sndbuf, 8u << 20);
	}
	fm_rng_seed(&rng, fm_test_seed_for("nbd_other", _i));
	fm_rng_fill(&rng, wbuf, MiB);
	where = (struct dmio_region){ dev, 1, MiB / 512 };
	req.mem.type = DMIO_MEM_VM;
	req.mem.ptr.vma = wbuf;
	ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
	ck_assert_uint_eq(bits, 0);
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, rbuf, &bits), 0);
	ck_assert(fm_test_first_diff(wbuf, rbuf, MiB) < 0);
	req = (struct dmio_request){ .op = DMIO_OP_WRITE_ZEROES };
	where = (struct dmio_region){ dev, 9, 100 };
	ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
	req = (struct dmio_request){ .op = DMIO_OP_FLUSH };
	ck_assert_int_eq(dmio(&req, 1, &where, &bits), 0);
	where = (struct dmio_region){ dev, 1, MiB / 512 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, rbuf, &bits), 0);
	ck_assert(fm_test_first_diff(wbuf, rbuf, 8 * 512) < 0);
	ck_assert(fm_test_is_zero(rbuf + 8 * 512, 100 * 512));
	ck_assert(fm_test_first_diff(wbuf + 108 * 512, rbuf + 108 * 512, MiB - 108 * 512) < 0);
	if (file) {
		/* What qemu-nbd wrote is in its file. */
		uint8_t *fbuf = g_malloc(4096);

		dmio_dev_close(g_steal_pointer(&dev));
		fm_test_read_file(file, 512, fbuf, 4096);
		ck_assert(memcmp(fbuf, wbuf, 4096) == 0);
		g_free(fbuf);
		fm_test_rm_rf(qdir);
	}
	free(wbuf);
	free(rbuf);
}
END_TEST

/* TLS (PSK) as the URI asks for it: nbds+unix://USER@/?socket=&tls-psk-file=;
 * the same export without TLS is refused by the server. */
START_TEST(test_tls_psk)
{
	g_autofree char *kdir = fm_test_mkdtemp(NULL, "psk");
	g_autofree char *keys = g_build_filename(kdir, "keys.psk", NULL);
	g_autofree char *psk_arg = g_strdup_printf("--tls-psk=%s", keys);
	g_autofree char *uri = NULL;
	g_autoptr(dmio_dev) dev = NULL;
	struct dmio_dev *plain = NULL;
	uint8_t *wbuf = fm_test_alloc_aligned(4096, 65536), *rbuf = fm_test_alloc_aligned(4096, 65536);
	struct dmio_region where;
	unsigned long bits;
	struct fm_rng rng;
	int r;

	ck_assert(g_file_set_contents(keys, "alice:0123456789abcdef0123456789abcdef\n", -1, NULL));
	fm_test_nbd_start(&srv, "--tls=require", psk_arg, "memory", "size=4M", NULL);
	ck_assert_int_lt(dmio_dev_open(srv.uri, 0, &plain), 0);
	uri = g_strdup_printf("nbds+unix://alice@/?socket=%s&tls-psk-file=%s", srv.sock, keys);
	r = dmio_dev_open(uri, 0, &dev);
	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", uri, g_strerror(-r));
	fm_rng_seed(&rng, fm_test_seed_for("nbd_tls", 0));
	fm_rng_fill(&rng, wbuf, 65536);
	where = (struct dmio_region){ dev, 8, 128 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_WRITE, wbuf, &bits), 0);
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, rbuf, &bits), 0);
	ck_assert(fm_test_first_diff(wbuf, rbuf, 65536) < 0);
	fm_test_rm_rf(kdir);
	free(wbuf);
	free(rbuf);
}
END_TEST

/* A memory server started, a device opened on it, its first @sectors
 * written from @buf (filled with 1s). */
static struct dmio_dev *open_written(uint8_t *buf, uint64_t sectors)
{
	struct dmio_dev *dev;
	struct dmio_region where;
	unsigned long bits = 0;

	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	dev = open_remote();
	memset(buf, 1, sectors * 512);
	where = (struct dmio_region){ dev, 0, sectors };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_WRITE, buf, &bits), 0);
	return dev;
}

/* A server that dies: I/O fails with the region's error bit (never a
 * hang, never a crash); the device reports itself disconnected. */
START_TEST(test_server_dies)
{
	uint8_t *buf = fm_test_alloc_aligned(4096, 65536);
	g_autoptr(dmio_dev) dev = open_written(buf, 128);
	struct dmio_region where = { dev, 0, 128 };
	struct dmio_remote_stats st;
	unsigned long bits = 0;

	fm_test_nbd_kill(&srv);
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_WRITE, buf, &bits), -EIO);
	ck_assert_uint_eq(bits, 1);
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), -EIO);
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert(!st.connected);
	ck_assert_uint_ge(st.errors, 2);
	free(buf);
}
END_TEST

/* A device closed after its server died, idle since (the end of the
 * connection not seen yet): the close says no goodbye to a socket whose
 * peer is gone (libnbd 1.14's disconnect there, failing inside the call,
 * read a command it had freed: valgrind and ASan runs see it). */
START_TEST(test_close_after_server_died)
{
	uint8_t *buf = fm_test_alloc_aligned(4096, 4096);
	struct dmio_dev *dev = open_written(buf, 8);

	fm_test_nbd_kill(&srv);
	g_usleep(100 * 1000);
	dmio_dev_close(dev);
	free(buf);
}
END_TEST

/* A server that stops answering (SIGSTOP) is given up on after the
 * timeout: the read fails, the connection is counted as hung; a new
 * connection is refused after its handshake deadline. */
START_TEST(test_server_hangs)
{
	g_autoptr(dmio_dev) dev = NULL;
	struct dmio_dev *dev2 = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, 65536);
	struct dmio_region where;
	struct dmio_remote_stats st;
	unsigned long bits = 0;
	gint64 t0;

	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	dev = open_remote();
	ck_assert_int_eq(dmio_dev_set_remote_timeout(dev, 300), 0);
	where = (struct dmio_region){ dev, 0, 128 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), 0);
	fm_test_nbd_pause(&srv);
	t0 = g_get_monotonic_time();
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), -EIO);
	ck_assert_uint_eq(bits, 1);
	/* Not before the timeout; well before forever. */
	ck_assert_int_ge(g_get_monotonic_time() - t0, 250 * 1000);
	ck_assert_int_lt(g_get_monotonic_time() - t0, 30 * G_USEC_PER_SEC);
	ck_assert_int_eq(dmio_dev_get_remote_stats(dev, &st), 0);
	ck_assert_uint_eq(st.hangs, 1);
	ck_assert(!st.connected);
	/* A new connection to it is accepted (by the kernel) but never
	 * handshaken: refused once the deadline passed, not waited on. */
	t0 = g_get_monotonic_time();
	ck_assert_int_eq(dmio_dev_open_timeout(srv.uri, 0, 200, &dev2), -ETIMEDOUT);
	ck_assert_ptr_null(dev2);
	ck_assert_int_ge(g_get_monotonic_time() - t0, 150 * 1000);
	ck_assert_int_lt(g_get_monotonic_time() - t0, DMIO_REMOTE_CONNECT_TIMEOUT_MS * 1000 / 2);
	free(buf);
}
END_TEST

struct async_wait {
	pthread_mutex_t lock;
	unsigned long bits;
	bool done;
};

static void async_notify(unsigned long error_bits, void *context)
{
	struct async_wait *w = context;

	pthread_mutex_lock(&w->lock);
	w->bits = error_bits;
	w->done = true;
	pthread_mutex_unlock(&w->lock);
}

/* The hang timeout holds on a ring short of SQEs: a poll and its linked
 * timeout are prepared only when both fit (the second SQE used to submit
 * the poll alone, and the timeout then failed on its own).  One ring of 2
 * SQEs; a write to two remote devices at once: the first one's poll (no
 * timeout) takes one SQE, the second one's pair finds one left.  The
 * second server is stopped: its region must fail after the timeout. */
START_TEST(test_hang_timeout_few_sqes)
{
	struct fm_test_nbd other = { 0 };
	g_autoptr(dmio_dev) a = NULL, b = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, 8192);
	struct async_wait w = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct dmio_region where[2];
	gint64 deadline;
	bool done;
	int r;

	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .rings = 1,
								      .sq_entries = 2 }), 0);
	fm_test_nbd_start(&other, "memory", "size=4M", NULL);
	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	r = dmio_dev_open(other.uri, 0, &a);
	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", other.uri, g_strerror(-r));
	b = open_remote();
	ck_assert_int_eq(dmio_dev_set_remote_timeout(b, 300), 0);
	fm_test_nbd_pause(&srv);
	where[0] = (struct dmio_region){ a, 0, 8 };
	where[1] = (struct dmio_region){ b, 0, 8 };
	memset(buf, 0x44, 4096);
	ck_assert_int_eq(dmio_async_vm(2, where, DMIO_OP_WRITE, buf, async_notify, &w), 0);
	deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
	do {
		g_usleep(10000);
		pthread_mutex_lock(&w.lock);
		done = w.done;
		pthread_mutex_unlock(&w.lock);
	} while (!done && g_get_monotonic_time() < deadline);
	ck_assert_msg(done, "the write to a stopped server still waits after 10 s (timeout "
		      "300 ms)");
	ck_assert_uint_eq(w.bits, 2);
	/* Closed while its server runs: libnbd 1.14's disconnect from a
	 * server that died unnoticed reads a command it freed (valgrind). */
	dmio_dev_close(g_steal_pointer(&a));
	fm_test_nbd_stop(&other);
	free(buf);
}
END_TEST

/*----------------------------------------------------------------*/
/* A scripted server: what nbdkit never sends */

enum fake_mode {
	FAKE_SHORT_READ,        /* a read's one chunk covers half its count */
	FAKE_BAD_REPLY,         /* a write is answered, before its payload was
				   read, with a reply of a wrong magic; then
				   the server reads nothing more until the
				   client is gone */
	FAKE_DIE_AFTER_WRITE,   /* reads are never answered; a write is,
				   once a read is in, and then the server
				   closes the connection */
};

struct fake {
	enum fake_mode mode;
	char *dir, *sock, *uri;
	int lfd;
	pthread_t thread;
};

#define FAKE_SIZE (64 * MiB)

static bool fake_read(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
	}
	return true;
}

static bool fake_write(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r = send(fd, p, len, MSG_NOSIGNAL);

		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
	}
	return true;
}

static void put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static void put_be32(uint8_t *p, uint32_t v) { put_be16(p, v >> 16); put_be16(p + 2, (uint16_t)v); }
static void put_be64(uint8_t *p, uint64_t v) { put_be32(p, v >> 32); put_be32(p + 4, (uint32_t)v); }
static uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get_be32(const uint8_t *p) { return (uint32_t)get_be16(p) << 16 | get_be16(p + 2); }
static uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }

/* An option reply: magic, option, type, length, then @len bytes. */
static bool fake_opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	uint8_t h[20];

	put_be64(h, 0x3e889045565a9ull);
	put_be32(h + 8, opt);
	put_be32(h + 12, type);
	put_be32(h + 16, len);
	return fake_write(fd, h, sizeof(h)) && (!len || fake_write(fd, data, len));
}

/* Fixed newstyle handshake: structured replies accepted, the export (4 MiB,
 * flush) given by NBD_OPT_GO; false when the client went away. */
static bool fake_handshake(int fd)
{
	uint8_t h[18], cf[4];

	put_be64(h, 0x4e42444d41474943ull);     /* NBDMAGIC */
	put_be64(h + 8, 0x49484156454f5054ull); /* IHAVEOPT */
	put_be16(h + 16, 3);                    /* FIXED_NEWSTYLE | NO_ZEROES */
	if (!fake_write(fd, h, sizeof(h)) || !fake_read(fd, cf, sizeof(cf)))
		return false;
	for (;;) {
		uint8_t o[16], info[12];
		uint32_t opt, len;
		g_autofree uint8_t *data = NULL;

		if (!fake_read(fd, o, sizeof(o)))
			return false;
		opt = get_be32(o + 8);
		len = get_be32(o + 12);
		data = g_malloc(len + 1);
		if (len && !fake_read(fd, data, len))
			return false;
		switch (opt) {
		case 8: /* STRUCTURED_REPLY */
			if (!fake_opt_reply(fd, opt, 1, NULL, 0))
				return false;
			break;
		case 6: /* INFO */
		case 7: /* GO */
			put_be16(info, 0);              /* NBD_INFO_EXPORT */
			put_be64(info + 2, FAKE_SIZE);
			put_be16(info + 10, 1 | 4);     /* HAS_FLAGS | SEND_FLUSH */
			if (!fake_opt_reply(fd, opt, 3, info, sizeof(info)) ||
			    !fake_opt_reply(fd, opt, 1, NULL, 0))
				return false;
			if (opt == 7)
				return true;
			break;
		default:
			if (!fake_opt_reply(fd, opt, 0x80000001u, NULL, 0)) /* ERR_UNSUP */
				return false;
			break;
		}
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return NULL;
	bool read_in = false;           /* FAKE_DIE_AFTER_WRITE */
	uint64_t write_cookie = 0;

	if (!fake_handshake(fd))
		goto out;
	for (;;) {
		uint8_t q[28], r[20];
		uint16_t type;
		uint32_t len;
		uint64_t cookie, off;

		if (!fake_read(fd, q, sizeof(q)) || get_be32(q) != 0x25609513u)
			break;
		type = get_be16(q + 6);
		cookie = get_be64(q + 8);
		off = get_be64(q + 16);
		len = get_be32(q + 24);
		if (type == 2) /* DISC */
			break;
		if (type == 1 && f->mode == FAKE_BAD_REPLY) {
			memset(r, 0xde, 16);
			if (!fake_write(fd, r, 16))
				break;
			/* Silent, the connection open, until the client
			 * shuts its end. */
			{
				struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };

				while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
					;
			}
			break;
		}
		if (type == 1) { /* WRITE: its payload */
			g_autofree uint8_t *skip = g_malloc(len ? len : 1);

			if (!fake_read(fd, skip, len))
				break;
		}
		if (f->mode == FAKE_DIE_AFTER_WRITE) {
			if (type == 0)
				read_in = true;
			else if (type == 1)
				write_cookie = cookie;
			if (!read_in || !write_cookie)
				continue;
			/* The write's reply, then the end: the client's next
			 * send fails (EPIPE). */
			put_be32(r, 0x67446698u);
			put_be32(r + 4, 0);
			put_be64(r + 8, write_cookie);
			fake_write(fd, r, 16);
			break;
		}
		if (type == 0 && f->mode == FAKE_SHORT_READ) {
			/* One OFFSET_DATA chunk, flagged DONE, of half the
			 * count: the rest is never sent. */
			uint32_t half = len / 2;
			g_autofree uint8_t *data = g_malloc(8 + half);

			put_be32(r, 0x668e33efu);
			put_be16(r + 4, 1);     /* DONE */
			put_be16(r + 6, 1);     /* OFFSET_DATA */
			put_be64(r + 8, cookie);
			put_be32(r + 16, 8 + half);
			put_be64(data, off);
			memset(data + 8, 0x5a, half);
			if (!fake_write(fd, r, 20) || !fake_write(fd, data, 8 + half))
				break;
			continue;
		}
		put_be32(r, 0x67446698u);       /* a simple reply: done */
		put_be32(r + 4, 0);
		put_be64(r + 8, cookie);
		if (!fake_write(fd, r, 16))
			break;
		if (type == 0) {
			g_autofree uint8_t *zero = g_malloc0(len ? len : 1);

			if (!fake_write(fd, zero, len))
				break;
		}
	}
out:
	close(fd);
	return NULL;
}

static struct fake fake;

static void fake_start(enum fake_mode mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	fake.mode = mode;
	fake.dir = fm_test_mkdtemp(NULL, "fake");
	fake.sock = g_build_filename(fake.dir, "sock", NULL);
	fake.uri = g_strdup_printf("nbd+unix:///?socket=%s", fake.sock);
	g_strlcpy(sa.sun_path, fake.sock, sizeof(sa.sun_path));
	fake.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fake.lfd, 0);
	ck_assert_int_eq(bind(fake.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fake.lfd, 4), 0);
	ck_assert_int_eq(pthread_create(&fake.thread, NULL, fake_main, &fake), 0);
}

/* After the client closed its connection. */
static void fake_stop(void)
{
	pthread_join(fake.thread, NULL);
	close(fake.lfd);
	fm_test_rm_rf(fake.dir);
	g_clear_pointer(&fake.dir, g_free);
	g_clear_pointer(&fake.sock, g_free);
	g_clear_pointer(&fake.uri, g_free);
}

/* A structured read reply whose chunks do not cover the count (the server
 * said DONE after half of it): the read fails; the part never sent is
 * not taken for data. */
START_TEST(test_short_structured_read)
{
	struct dmio_dev *dev = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, 8192);
	struct dmio_region where;
	unsigned long bits = 0;
	int r;

	fake_start(FAKE_SHORT_READ);
	r = dmio_dev_open(fake.uri, 0, &dev);
	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", fake.uri, g_strerror(-r));
	memset(buf, 0xee, 8192);
	where = (struct dmio_region){ dev, 0, 16 };
	r = dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits);
	ck_assert_msg(r == -EIO && bits == 1, "a read the server answered only half of: %d "
		      "(bits %#lx), its second half reads %#x", r, bits, buf[4096]);
	dmio_dev_close(dev);
	fake_stop();
	free(buf);
}
END_TEST

static void *close_main(void *arg)
{
	dmio_dev_close(arg);
	return NULL;
}

/* libnbd gives up on a connection by itself (a reply of a wrong magic,
 * while a write too large for the socket's buffers is half sent): the
 * write fails, and closing the device returns, though the server
 * neither reads nor closes (the poll for room to send used to wait for
 * ever, and close with it). */
START_TEST(test_bad_reply_close)
{
	struct dmio_dev *dev = NULL;
	size_t len = 32 * MiB;
	uint8_t *buf = fm_test_alloc_aligned(4096, len);
	struct dmio_region where;
	unsigned long bits = 0;
	pthread_t t;
	gint64 deadline;
	int r;

	fake_start(FAKE_BAD_REPLY);
	r = dmio_dev_open(fake.uri, 0, &dev);
	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", fake.uri, g_strerror(-r));
	memset(buf, 0x33, len);
	where = (struct dmio_region){ dev, 0, len / 512 };
	r = dmio_sync_vm(1, &where, DMIO_OP_WRITE, buf, &bits);
	ck_assert_int_eq(r, -EIO);
	ck_assert_uint_eq(bits, 1);
	ck_assert_int_eq(pthread_create(&t, NULL, close_main, dev), 0);
	deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
	while (pthread_tryjoin_np(t, NULL) == EBUSY) {
		ck_assert_msg(g_get_monotonic_time() < deadline,
			      "dmio_dev_close() still waits after 10 s");
		g_usleep(10000);
	}
	fake_stop();
	free(buf);
}
END_TEST

/* A write with FUA to a server without it (write, then flush) while a read
 * waits: the server answers the write and closes, so the flush's send
 * ends the connection inside nbd_aio_flush(), which fails the read there.
 * Its command must be retired before its piece is finished: its cookie
 * used to stay in the device's table and name the piece after its reuse,
 * and the next call for the dead device failed the reuser, here a read of
 * another, healthy remote device on the same ring. */
START_TEST(test_fua_flush_dies_retires)
{
	g_autoptr(dmio_dev) a = NULL, b = NULL;
	uint8_t *buf = fm_test_alloc_aligned(4096, 3 * 4096);
	struct async_wait wa = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct async_wait wb = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct dmio_region where;
	struct dmio_request req = { .op = DMIO_OP_WRITE, .flags = DMIO_REQ_FUA };
	unsigned long bits = 0;
	gint64 deadline;
	bool done;
	int r;

	ck_assert_int_eq(dmio_engine_init(&(struct dmio_engine_opts){ .rings = 1 }), 0);
	memset(buf, 0x44, 3 * 4096);
	fm_test_nbd_start(&srv, "memory", "size=4M", NULL);
	b = open_remote();
	fake_start(FAKE_DIE_AFTER_WRITE);
	r = dmio_dev_open(fake.uri, 0, &a);
	ck_assert_msg(r == 0, "dmio_dev_open(%s): %s", fake.uri, g_strerror(-r));
	/* The read, unanswered, then the write. */
	where = (struct dmio_region){ a, 0, 8 };
	ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, buf, async_notify, &wa), 0);
	where = (struct dmio_region){ a, 8, 8 };
	req.mem.type = DMIO_MEM_VM;
	req.mem.ptr.vma = buf + 4096;
	ck_assert_int_eq(dmio(&req, 1, &where, &bits), -EIO);
	deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
	do {
		pthread_mutex_lock(&wa.lock);
		done = wa.done;
		pthread_mutex_unlock(&wa.lock);
		if (!done)
			g_usleep(10000);
	} while (!done && g_get_monotonic_time() < deadline);
	ck_assert_msg(done && wa.bits == 1, "the read the server never answered: done %d, bits "
		      "%#lx", done, wa.bits);
	/* A read of the healthy device, held in flight (its server stopped),
	 * on the pieces just freed; meanwhile the dead device is called
	 * again (a read, failed at once). */
	fm_test_nbd_pause(&srv);
	where = (struct dmio_region){ b, 0, 8 };
	ck_assert_int_eq(dmio_async_vm(1, &where, DMIO_OP_READ, buf + 8192, async_notify, &wb), 0);
	g_usleep(50 * 1000);
	where = (struct dmio_region){ a, 0, 8 };
	ck_assert_int_eq(dmio_sync_vm(1, &where, DMIO_OP_READ, buf, &bits), -EIO);
	ck_assert_int_eq(kill(srv.pid, SIGCONT), 0);
	deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
	do {
		pthread_mutex_lock(&wb.lock);
		done = wb.done;
		pthread_mutex_unlock(&wb.lock);
		if (!done)
			g_usleep(10000);
	} while (!done && g_get_monotonic_time() < deadline);
	ck_assert_msg(done && wb.bits == 0, "the healthy device's read: done %d, bits %#lx",
		      done, wb.bits);
	dmio_dev_close(g_steal_pointer(&a));
	fake_stop();
	free(buf);
}
END_TEST

static Suite *dmio_nbd_suite(void)
{
	Suite *s = suite_create("dmio_nbd");
	TCase *tc = tcase_create("nbd");

	tcase_add_checked_fixture(tc, NULL, fx_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_open_probe);
	tcase_add_test(tc, test_open_refused);
	tcase_add_loop_test(tc, test_round_trip, 0, 3);
	tcase_add_loop_test(tc, test_zero_and_discard, 0, 2);
	tcase_add_test(tc, test_loop_completes_on_loop);
	tcase_add_loop_test(tc, test_other_servers, 0, 2);
	tcase_add_test(tc, test_tls_psk);
	tcase_add_test(tc, test_server_dies);
	tcase_add_test(tc, test_close_after_server_died);
	tcase_add_test(tc, test_server_hangs);
	tcase_add_test(tc, test_short_structured_read);
	tcase_add_test(tc, test_bad_reply_close);
	tcase_add_test(tc, test_hang_timeout_few_sqes);
	tcase_add_test(tc, test_fua_flush_dies_retires);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	/* A write to a socket whose server died must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	return fm_test_main(dmio_nbd_suite());
}
