/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for src/common: crc32c, size parsing/formatting, logging. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>

#include "fusemirror/common.h"

#include "fm_test.h"

uint32_t fm_crc32c_sw(uint32_t crc, const void *data, size_t len);

START_TEST(crc32c_known_vectors)
{
	static const uint8_t zeros[32], ones[32] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t inc[32];

	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	/* The check value of CRC-32C and the iSCSI (RFC 3720, B.4) vectors. */
	ck_assert_uint_eq(fm_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(fm_crc32c(0, zeros, 32), 0x8A9136AAu);
	ck_assert_uint_eq(fm_crc32c(0, ones, 32), 0x62A8AB43u);
	ck_assert_uint_eq(fm_crc32c(0, inc, 32), 0x46DD794Eu);
	ck_assert_uint_eq(fm_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(fm_crc32c(0, "", 0), 0);
}
END_TEST

START_TEST(crc32c_hw_matches_sw_and_chains)
{
	/* Lengths on both sides of the three-chain rounds (3 * 1360 bytes
	 * each): none, one, two, three rounds, with and without a tail. */
	static const size_t split_lens[] = { 4079, 4080, 4081, 4096, 4097, 8159, 8160, 8167,
					     12240, 12247 };
	enum { N = 12300 };
	uint8_t *buf = malloc(N + 8);

	srandom(42);
	for (int i = 0; i < N + 8; i++)
		buf[i] = (uint8_t)random();
	/* Every alignment and length class, and chaining in two parts. */
	for (size_t off = 0; off < 8; off++) {
		for (size_t len = 0; len < 64; len++)
			ck_assert_uint_eq(fm_crc32c(0, buf + off, len),
					  fm_crc32c_sw(0, buf + off, len));
		/* The folding path (128 bytes and more, where the CPU has
		 * VPCLMULQDQ): every count of 128-byte rounds up to 8, of
		 * 32-byte steps and of tail bytes, with a seed. */
		for (size_t len = 100; len < 1100; len++)
			ck_assert_uint_eq(fm_crc32c(0x9abcdef0u, buf + off, len),
					  fm_crc32c_sw(0x9abcdef0u, buf + off, len));
		for (size_t k = 0; k < G_N_ELEMENTS(split_lens); k++) {
			ck_assert_uint_eq(fm_crc32c(0, buf + off, split_lens[k]),
					  fm_crc32c_sw(0, buf + off, split_lens[k]));
			/* a seed that is not 0 goes through the first chain */
			ck_assert_uint_eq(fm_crc32c(0x12345678u, buf + off, split_lens[k]),
					  fm_crc32c_sw(0x12345678u, buf + off, split_lens[k]));
		}
		uint32_t whole = fm_crc32c(0, buf + off, N);
		uint32_t part = fm_crc32c(fm_crc32c(0, buf + off, 1000), buf + off + 1000, N - 1000);
		ck_assert_uint_eq(whole, part);
		ck_assert_uint_eq(whole, fm_crc32c_sw(0, buf + off, N));
	}
	free(buf);
}
END_TEST

/* The checksums of consecutive blocks (three at a time with SSE4.2) are
 * each block's own crc32c, whatever the count (the three-way path and its
 * remainder) and block size (a size that is not a multiple of 8 takes the
 * plain path); an unaligned start too. */
START_TEST(crc32c_blocks_match_one_by_one)
{
	static const size_t sizes[] = { 4096, 512, 8, 12 };
	enum { MAXN = 8 };
	uint8_t *buf = malloc(MAXN * 4096 + 8);
	uint32_t out[MAXN + 1];

	srandom(7);
	for (size_t i = 0; i < MAXN * 4096 + 8; i++)
		buf[i] = (uint8_t)random();
	for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
		for (size_t off = 0; off < 8; off += 3)
			for (size_t n = 0; n <= MAXN; n++) {
				out[n] = 0x5a5a5a5a;    /* must stay: n written, no more */
				fm_crc32c_blocks(buf + off, sizes[s], n, out);
				for (size_t i = 0; i < n; i++)
					ck_assert_msg(out[i] == fm_crc32c_sw(0, buf + off + i * sizes[s],
									       sizes[s]),
						      "size %zu off %zu n %zu: block %zu", sizes[s],
						      off, n, i);
				ck_assert_uint_eq(out[n], 0x5a5a5a5a);
			}
	free(buf);
}
END_TEST

START_TEST(parse_sizes)
{
	static const struct { const char *s; int r; uint64_t v; } cases[] = {
		{ "0", 0, 0 }, { "512", 0, 512 }, { "4k", 0, 4096 }, { "4K", 0, 4096 },
		{ "64M", 0, 64ull << 20 }, { "1G", 0, 1ull << 30 }, { "2T", 0, 2ull << 40 },
		{ "1GiB", 0, 1ull << 30 }, { "1GB", 0, 1ull << 30 }, { "10B", 0, 10 },
		{ "", -EINVAL, 0 }, { "x", -EINVAL, 0 }, { "-1", -EINVAL, 0 },
		{ "4q", -EINVAL, 0 }, { "4kk", -EINVAL, 0 }, { "1 G", -EINVAL, 0 },
		{ "16385P", -ERANGE, 0 }, { "99999999999999999999", -ERANGE, 0 },
	};

	for (size_t i = 0; i < FM_ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;
		int r = fm_parse_size(cases[i].s, &v);

		ck_assert_msg(r == cases[i].r, "%s: got %d want %d", cases[i].s, r, cases[i].r);
		ck_assert_uint_eq(v, r == 0 ? cases[i].v : 12345);
	}
	ck_assert_int_eq(fm_parse_size(NULL, &(uint64_t){ 0 }), -EINVAL);
}
END_TEST

START_TEST(format_sizes)
{
	char b[32];

	ck_assert_str_eq(fm_format_size(0, b, sizeof(b)), "0 B");
	ck_assert_str_eq(fm_format_size(1023, b, sizeof(b)), "1023 B");
	ck_assert_str_eq(fm_format_size(1536, b, sizeof(b)), "1.5 KiB");
	ck_assert_str_eq(fm_format_size(64ull << 20, b, sizeof(b)), "64.0 MiB");
	ck_assert_str_eq(fm_format_size(3ull << 40, b, sizeof(b)), "3.0 TiB");
}
END_TEST

START_TEST(align_macros)
{
	ck_assert_uint_eq(FM_ALIGN_UP(4097ull, 4096), 8192);
	ck_assert_uint_eq(FM_ALIGN_DOWN(4097ull, 4096), 4096);
	ck_assert(FM_IS_ALIGNED(8192ull, 4096));
	ck_assert(!FM_IS_ALIGNED(8193ull, 512));
	ck_assert(fm_is_power_of_2(1 << 20));
	ck_assert(!fm_is_power_of_2(0));
	ck_assert(!fm_is_power_of_2(12));
}
END_TEST

START_TEST(iov_ranges)
{
	char a[5], b[3], c[8];
	const struct iovec iov[] = { { a, sizeof(a) }, { b, sizeof(b) }, { c, sizeof(c) } };
	struct iovec out[3];

	/* Bytes 3..10: the end of a, all of b, the start of c. */
	ck_assert_uint_eq(fm_iov_slice(iov, 3, 3, 8, NULL), 3);
	ck_assert_uint_eq(fm_iov_slice(iov, 3, 3, 8, out), 3);
	ck_assert_ptr_eq(out[0].iov_base, a + 3);
	ck_assert_uint_eq(out[0].iov_len, 2);
	ck_assert_ptr_eq(out[1].iov_base, b);
	ck_assert_uint_eq(out[1].iov_len, 3);
	ck_assert_ptr_eq(out[2].iov_base, c);
	ck_assert_uint_eq(out[2].iov_len, 3);
	/* Inside one element; past the end: cut short. */
	ck_assert_uint_eq(fm_iov_slice(iov, 3, 9, 2, out), 1);
	ck_assert_ptr_eq(out[0].iov_base, c + 1);
	ck_assert_uint_eq(out[0].iov_len, 2);
	ck_assert_uint_eq(fm_iov_slice(iov, 3, 14, 10, out), 1);
	ck_assert_uint_eq(out[0].iov_len, 2);
	ck_assert_uint_eq(fm_iov_slice(iov, 3, 16, 1, out), 0);

	memset(a, 'x', sizeof(a));
	memset(b, 'x', sizeof(b));
	memset(c, 'x', sizeof(c));
	fm_iov_fill(iov, 3, 4, "0123456", 7);
	ck_assert(memcmp(a, "xxxx0", 5) == 0);
	ck_assert(memcmp(b, "123", 3) == 0);
	ck_assert(memcmp(c, "456xxxxx", 8) == 0);
	fm_iov_fill(iov, 3, 6, NULL, 4);
	ck_assert(memcmp(b, "1\0\0", 3) == 0);
	ck_assert(memcmp(c, "\0\0""6xxxxx", 8) == 0);

	/* Gather: bytes 3..10 in order; a range past the end copies what
	 * there is and leaves the rest of @dst alone. */
	{
		char dst[10];

		memset(dst, '-', sizeof(dst));
		fm_iov_gather(iov, 3, 3, dst, 8);
		ck_assert(memcmp(dst, "x01\0\0\0\0""6--", 10) == 0);
		memset(dst, '-', sizeof(dst));
		fm_iov_gather(iov, 3, 14, dst, 5);
		ck_assert(memcmp(dst, "xx--------", 10) == 0);
	}
}
END_TEST

/*----------------------------------------------------------------*/
/* logging */

START_TEST(log_level_names)
{
	ck_assert_int_eq(fm_log_level_parse("error"), FM_LOG_ERR);
	ck_assert_int_eq(fm_log_level_parse("warning"), FM_LOG_WARNING);
	ck_assert_int_eq(fm_log_level_parse("notice"), FM_LOG_NOTICE);
	ck_assert_int_eq(fm_log_level_parse("info"), FM_LOG_INFO);
	ck_assert_int_eq(fm_log_level_parse("debug"), FM_LOG_DEBUG);
	ck_assert_int_eq(fm_log_level_parse("loud"), -EINVAL);
	ck_assert_int_eq(fm_log_level_parse(""), -EINVAL);
	ck_assert_str_eq(fm_log_level_name(FM_LOG_WARNING), "warning");
}
END_TEST

/* A private directory for sockets and files of one test. */
static char *log_tmpdir(void)
{
	char *d = strdup("/var/tmp/fm-test-log.XXXXXX");

	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

/* Does @buf (@len bytes) hold @field ("KEY=value\n" or a binary field)? */
static bool has_bytes(const char *buf, size_t len, const void *field, size_t flen)
{
	return memmem(buf, len, field, flen) != NULL;
}

/* The journal's native protocol, against a datagram socket of our own:
 * priority, identifier, the caller's fields (invalid names dropped), and
 * a message with a newline in the binary form (KEY\n, le64 length, data). */
START_TEST(log_journal_fields)
{
	char *dir = log_tmpdir(), path[sizeof(((struct sockaddr_un *)0)->sun_path)], buf[8192];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *fields[] = { "EVENT=Fail", "LEG=/dev/sdb", "ARRAY_UUID=3f2a",
				 "bad key=1", "_PRIVATE=1", "lower=1", NULL };
	static const char bin[] = "MESSAGE\n\x0c\0\0\0\0\0\0\0leg failed\nX\n";
	ssize_t n;
	int fd;

	ck_assert_int_lt(snprintf(path, sizeof(path), "%s/journal.sock", dir), (int)sizeof(path));
	memcpy(sa.sun_path, path, sizeof(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	fm_log_set_journal_socket(path);
	ck_assert(fm_log_journal_available());
	fm_log_set_target(FM_LOG_TARGET_JOURNAL);
	fm_log_fields(FM_LOG_WARNING, fields, "leg %s\nX", "failed");
	/* Below the level: nothing is sent. */
	fm_log(FM_LOG_DEBUG, "not sent");
	fm_log(FM_LOG_ERR, "plain %d", 42);
	fm_log_set_target(FM_LOG_TARGET_STDERR);
	fm_log_set_journal_socket(NULL);

	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	ck_assert_int_gt(n, 0);
	ck_assert(has_bytes(buf, (size_t)n, "PRIORITY=4\n", 11));
	ck_assert(has_bytes(buf, (size_t)n, "SYSLOG_IDENTIFIER=fusemirror\n", 29));
	ck_assert(has_bytes(buf, (size_t)n, "EVENT=Fail\n", 11));
	ck_assert(has_bytes(buf, (size_t)n, "LEG=/dev/sdb\n", 13));
	ck_assert(has_bytes(buf, (size_t)n, "ARRAY_UUID=3f2a\n", 16));
	ck_assert(!has_bytes(buf, (size_t)n, "bad key", 7));
	ck_assert(!has_bytes(buf, (size_t)n, "_PRIVATE", 8));
	ck_assert(!has_bytes(buf, (size_t)n, "lower", 5));
	ck_assert(has_bytes(buf, (size_t)n, bin, sizeof(bin) - 1));

	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	ck_assert_int_gt(n, 0);
	ck_assert(has_bytes(buf, (size_t)n, "PRIORITY=3\n", 11));
	ck_assert(has_bytes(buf, (size_t)n, "MESSAGE=plain 42\n", 17));
	ck_assert_int_lt(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), 0);

	close(fd);
	unlink(path);
	rmdir(dir);
	free(dir);
}
END_TEST

struct hook_seen {
	int calls;
	enum fm_log_level level;
	char msg[128];
};

static void test_hook(void *ctx, enum fm_log_level level, const char *msg)
{
	struct hook_seen *h = ctx;

	h->calls++;
	h->level = level;
	snprintf(h->msg, sizeof(h->msg), "%s", msg);
}

/* The log file gets a time-stamped line per message; the hook sees the
 * messages that pass the level, and none once removed. */
START_TEST(log_file_and_hook)
{
	char *dir = log_tmpdir(), path[256], buf[4096];
	struct hook_seen h = { 0 };
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/fm.log", dir);
	ck_assert_int_eq(fm_log_set_file(path), 0);
	ck_assert_int_eq(fm_log_set_file("/nonexistent/dir/fm.log"), -ENOENT);
	fm_log_set_target(FM_LOG_TARGET_NONE);
	fm_log_set_hook(test_hook, &h);
	fm_log(FM_LOG_WARNING, "array %s degraded", "A");
	fm_log(FM_LOG_DEBUG, "hidden");
	fm_log_set_hook(NULL, NULL);
	fm_log(FM_LOG_ERR, "after the hook");
	ck_assert_int_eq(fm_log_set_file(NULL), 0);
	fm_log(FM_LOG_ERR, "after the file");
	fm_log_set_target(FM_LOG_TARGET_STDERR);

	ck_assert_int_eq(h.calls, 1);
	ck_assert_int_eq(h.level, FM_LOG_WARNING);
	ck_assert_str_eq(h.msg, "array A degraded");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	close(fd);
	ck_assert_ptr_nonnull(strstr(buf, "]: warning: array A degraded\n"));
	ck_assert_ptr_nonnull(strstr(buf, "]: error: after the hook\n"));
	ck_assert_ptr_null(strstr(buf, "hidden"));
	ck_assert_ptr_null(strstr(buf, "after the file"));
	ck_assert(buf[4] == '-' && strstr(buf, "Z fusemirror["));
	unlink(path);
	rmdir(dir);
	free(dir);
}
END_TEST

/*
 * The library layers (src/dmio, src/bufio, src/mirror, src/ctl) log at
 * debug level only (include/fusemirror/event.h): no call of fm_err,
 * fm_warn, fm_notice, fm_info, nor fm_log / fm_log_fields at a level above
 * debug, in their sources.  (fm_fatal, a log before abort(), is allowed.)
 * The mirror's unit tests also check it at run time (mirror_fx.c).
 */
START_TEST(library_layers_log_debug_only)
{
	static const char *const dirs[] = { "src/dmio", "src/bufio", "src/mirror", "src/ctl",
					      "src/front" };
	static const char *const loud[] = {
		"fm_err(", "fm_warn(", "fm_notice(", "fm_info(", "FM_LOG_ERR", "FM_LOG_WARNING",
		"FM_LOG_NOTICE", "FM_LOG_INFO",
	};
	const char *root = getenv("FM_SOURCE_ROOT");
	unsigned files = 0;

	ck_assert_msg(root, "FM_SOURCE_ROOT is not set (tests/meson.build sets it)");
	for (unsigned d = 0; d < G_N_ELEMENTS(dirs); d++) {
		g_autofree char *dir = g_build_filename(root, dirs[d], NULL);
		g_autoptr(GDir) gd = g_dir_open(dir, 0, NULL);
		const char *name;

		ck_assert_msg(gd, "cannot open %s", dir);
		while ((name = g_dir_read_name(gd))) {
			g_autofree char *path = g_build_filename(dir, name, NULL);
			g_autofree char *text = NULL;
			g_auto(GStrv) lines = NULL;

			if (!g_str_has_suffix(name, ".c") && !g_str_has_suffix(name, ".h"))
				continue;
			ck_assert_msg(g_file_get_contents(path, &text, NULL, NULL), "cannot read %s",
				      path);
			files++;
			lines = g_strsplit(text, "\n", -1);
			for (unsigned l = 0; lines[l]; l++)
				for (unsigned k = 0; k < G_N_ELEMENTS(loud); k++)
					ck_assert_msg(!strstr(lines[l], loud[k]),
						      "%s/%s:%u: a library layer logs above debug "
						      "level (%s): report an event or return an "
						      "error instead: %s", dirs[d], name, l + 1,
						      loud[k], lines[l]);
		}
	}
	ck_assert_uint_gt(files, 10);
}
END_TEST

/* fm_thread_start(): the thread runs with every signal but the fault ones
 * blocked from its start and carries its name; the caller's mask is left
 * as it was. */
struct thread_probe {
	sem_t go;
	sigset_t first, mask;
	char name[16];
};

static void *thread_probe_main(void *arg)
{
	struct thread_probe *p = arg;

	pthread_sigmask(SIG_BLOCK, NULL, &p->first);
	/* The starter names the thread after pthread_create(): wait for it. */
	sem_wait(&p->go);
	pthread_sigmask(SIG_BLOCK, NULL, &p->mask);
	pthread_getname_np(pthread_self(), p->name, sizeof(p->name));
	return NULL;
}

START_TEST(thread_start_blocks_signals)
{
	struct thread_probe p = { 0 };
	sigset_t before, after;
	pthread_t t;

	ck_assert_int_eq(sem_init(&p.go, 0, 0), 0);
	pthread_sigmask(SIG_SETMASK, NULL, &before);
	ck_assert(!sigismember(&before, SIGTERM));
	ck_assert_int_eq(fm_thread_start(&t, "fm-probe", thread_probe_main, &p), 0);
	sem_post(&p.go);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	pthread_sigmask(SIG_SETMASK, NULL, &after);
	ck_assert(!sigismember(&after, SIGTERM));
	ck_assert(!sigismember(&after, SIGINT));
	/* (glibc keeps 32 and 33, below SIGRTMIN, for itself.) */
	for (int sig = 1; sig < 32; sig++) {
		bool fault = sig == SIGBUS || sig == SIGSEGV || sig == SIGFPE || sig == SIGILL ||
			     sig == SIGTRAP || sig == SIGSYS;

		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (fault) {
			/* Blocked, a fault would kill instead of run its handler. */
			ck_assert_msg(!sigismember(&p.first, sig), "fault signal %d blocked", sig);
			continue;
		}
		ck_assert_msg(sigismember(&p.first, sig), "signal %d open at the start", sig);
		ck_assert_msg(sigismember(&p.mask, sig), "signal %d not blocked", sig);
	}
	ck_assert(sigismember(&p.first, SIGRTMIN));
	ck_assert(sigismember(&p.first, SIGRTMAX));
	ck_assert_str_eq(p.name, "fm-probe");
	sem_destroy(&p.go);
}
END_TEST

static Suite *common_suite(void)
{
	Suite *s = suite_create("common");
	TCase *tc;

	tc = tcase_create("crc32c");
	tcase_add_test(tc, crc32c_known_vectors);
	tcase_add_test(tc, crc32c_hw_matches_sw_and_chains);
	tcase_add_test(tc, crc32c_blocks_match_one_by_one);
	suite_add_tcase(s, tc);
	tc = tcase_create("sizes");
	tcase_add_test(tc, parse_sizes);
	tcase_add_test(tc, format_sizes);
	tcase_add_test(tc, align_macros);
	tcase_add_test(tc, iov_ranges);
	suite_add_tcase(s, tc);
	tc = tcase_create("log");
	tcase_add_test(tc, log_level_names);
	tcase_add_test(tc, log_journal_fields);
	tcase_add_test(tc, log_file_and_hook);
	tcase_add_test(tc, library_layers_log_debug_only);
	suite_add_tcase(s, tc);
	tc = tcase_create("threads");
	tcase_add_test(tc, thread_start_blocks_signals);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fm_test_main(common_suite());
}
