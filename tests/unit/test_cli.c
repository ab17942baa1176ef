/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the command line's parsers: `fusemirror inject` options ->
 * struct dmio_fault and its control-socket words (src/cli/fault_opt.c), and the
 * mount options / config file keys of the resilience work (src/cli/config.c).
 * Pure functions: no daemon, no legs.  One Suite "cli", one TCase per
 * behaviour (see cli_suite() at the end).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include "cli/cli.h"
#include "fusemirror/common.h"

#include "fm_test.h"

/* fm_fault_from_args() must fail with a message containing @want. */
static void refuse_args(const struct fm_fault_args *a, const char *want)
{
	g_autoptr(GError) err = NULL;
	struct dmio_fault f = { .flags = 0xdead };

	ck_assert_msg(!fm_fault_from_args(a, &f, &err), "accepted; wanted \"%s\"", want);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err->message, want), "message \"%s\" lacks \"%s\"", err->message,
		      want);
	ck_assert_uint_eq(f.flags, 0xdead);     /* untouched on failure */
}

static struct dmio_fault accept_args(const struct fm_fault_args *a)
{
	g_autoptr(GError) err = NULL;
	struct dmio_fault f;

	ck_assert_msg(fm_fault_from_args(a, &f, &err), "refused: %s", err ? err->message : "?");
	return f;
}

/*----------------------------------------------------------------*/
/* inject: options -> struct dmio_fault */

START_TEST(fault_defaults)
{
	struct fm_fault_args a = { 0 };
	struct dmio_fault f;

	ck_assert(!fm_fault_args_given(&a));
	/* Only a range: reads and writes fail with EIO in it. */
	a.offset = "1M";
	a.length = "64k";
	ck_assert(fm_fault_args_given(&a));
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_READS | DMIO_FAULT_WRITES);
	ck_assert_int_eq(f.error, EIO);
	ck_assert_uint_eq(f.sector, 2048);
	ck_assert_uint_eq(f.count, 128);
	ck_assert_uint_eq(f.rate_ppm, 0);
	ck_assert_uint_eq(f.up_ms, 0);
	ck_assert_uint_eq(f.down_ms, 0);
	ck_assert_uint_eq(f.seed, 0);

	/* Nothing but --seed: the whole leg. */
	a = (struct fm_fault_args){ .seed = "7" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_READS | DMIO_FAULT_WRITES);
	ck_assert_uint_eq(f.count, 0);
	ck_assert_uint_eq(f.seed, 7);

	/* --length alone starts at 0; --length 0 is the whole leg. */
	a = (struct fm_fault_args){ .length = "4096" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.sector, 0);
	ck_assert_uint_eq(f.count, 8);
	a = (struct fm_fault_args){ .length = "0", .offset = "0" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.count, 0);
}
END_TEST

START_TEST(fault_flags)
{
	struct fm_fault_args a = { .read = TRUE };
	struct dmio_fault f = accept_args(&a);

	ck_assert_uint_eq(f.flags, DMIO_FAULT_READS);
	a = (struct fm_fault_args){ .write = TRUE, .flush = TRUE };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES);
	ck_assert_int_eq(f.error, EIO);
	a = (struct fm_fault_args){ .drop_writes = TRUE };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_DROP_WRITES);
	ck_assert_int_eq(f.error, 0);           /* nothing fails */
	a = (struct fm_fault_args){ .corrupt_reads = TRUE, .drop_writes = TRUE };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_CORRUPT_READS | DMIO_FAULT_DROP_WRITES);
	a = (struct fm_fault_args){ .read = TRUE, .drop_writes = TRUE };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_READS | DMIO_FAULT_DROP_WRITES);

	a = (struct fm_fault_args){ .read = TRUE, .heal_on_write = TRUE, .length = "64k" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE);
	ck_assert_uint_eq(f.count, 128);
	a = (struct fm_fault_args){ .read = TRUE, .heal_on_write = TRUE, .length = "8G" };
	ck_assert_uint_eq(accept_args(&a).count, 1u << 24);
	a = (struct fm_fault_args){ .heal_on_write = TRUE, .length = "64k" };
	refuse_args(&a, "--heal-on-write needs --read");
	a = (struct fm_fault_args){ .read = TRUE, .heal_on_write = TRUE };
	refuse_args(&a, "--heal-on-write needs a --length from 512 bytes to 8G");
	a = (struct fm_fault_args){ .read = TRUE, .heal_on_write = TRUE, .length = "9G" };
	refuse_args(&a, "--heal-on-write needs a --length");

	a = (struct fm_fault_args){ .write = TRUE, .drop_writes = TRUE };
	refuse_args(&a, "--write and --drop-writes exclude each other");
	a = (struct fm_fault_args){ .read = TRUE, .corrupt_reads = TRUE };
	refuse_args(&a, "--read and --corrupt-reads exclude each other");

	/* Silent corruption of what is stored. */
	a = (struct fm_fault_args){ .flip_writes = TRUE };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_FLIP_WRITES);
	ck_assert_int_eq(f.error, 0);
	a = (struct fm_fault_args){ .misdirect_writes = TRUE, .length = "8k" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.flags, DMIO_FAULT_MISDIRECT_WRITES);
	ck_assert_uint_eq(f.count, 16);
	a = (struct fm_fault_args){ .misdirect_writes = TRUE };
	refuse_args(&a, "--misdirect-writes needs a --length of 8k or more");
	a = (struct fm_fault_args){ .misdirect_writes = TRUE, .length = "4k" };
	refuse_args(&a, "--misdirect-writes needs a --length");
	a = (struct fm_fault_args){ .flip_writes = TRUE, .drop_writes = TRUE };
	refuse_args(&a, "exclude each other");
	a = (struct fm_fault_args){ .flip_writes = TRUE, .misdirect_writes = TRUE, .length = "1M" };
	refuse_args(&a, "exclude each other");
}
END_TEST

START_TEST(fault_errno)
{
	static const struct { const char *s; int e; } ok[] = {
		{ "EIO", EIO }, { "eio", EIO }, { "ENOSPC", ENOSPC }, { "EROFS", EROFS },
		{ "ENODEV", ENODEV }, { "ETIMEDOUT", ETIMEDOUT }, { "28", 28 }, { "4095", 4095 },
	};
	static const char *const bad[] = { "", "EFOO", "0", "4096", "-5", "5x", "IO" };
	struct fm_fault_args a = { 0 };
	struct dmio_fault f;

	for (size_t i = 0; i < FM_ARRAY_SIZE(ok); i++) {
		ck_assert_int_eq(fm_errno_parse(ok[i].s), ok[i].e);
		a = (struct fm_fault_args){ .error = ok[i].s };
		f = accept_args(&a);
		ck_assert_int_eq(f.error, ok[i].e);
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(bad); i++) {
		ck_assert_int_eq(fm_errno_parse(bad[i]), -EINVAL);
		a = (struct fm_fault_args){ .error = bad[i] };
		refuse_args(&a, "not an errno name or number");
	}
	ck_assert_int_eq(fm_errno_parse(NULL), -EINVAL);
	/* An errno only where something fails. */
	a = (struct fm_fault_args){ .error = "ENOSPC", .drop_writes = TRUE };
	refuse_args(&a, "only failed I/O has an errno");
	a = (struct fm_fault_args){ .error = "ENOSPC", .drop_writes = TRUE, .flush = TRUE };
	f = accept_args(&a);
	ck_assert_int_eq(f.error, ENOSPC);
}
END_TEST

START_TEST(fault_range)
{
	struct fm_fault_args a = { .offset = "1G", .length = "1M" };
	struct dmio_fault f = accept_args(&a);

	ck_assert_uint_eq(f.sector, (1ull << 30) >> 9);
	ck_assert_uint_eq(f.count, (1ull << 20) >> 9);
	a = (struct fm_fault_args){ .offset = "512", .length = "1536" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.sector, 1);
	ck_assert_uint_eq(f.count, 3);

	a = (struct fm_fault_args){ .offset = "1M" };
	refuse_args(&a, "--offset 1M needs a --length");
	a = (struct fm_fault_args){ .offset = "100", .length = "4k" };
	refuse_args(&a, "--offset 100: not a multiple of 512 bytes");
	a = (struct fm_fault_args){ .length = "1000" };
	refuse_args(&a, "--length 1000: not a multiple of 512 bytes");
	a = (struct fm_fault_args){ .offset = "12Q", .length = "4k" };
	refuse_args(&a, "--offset 12Q: not a size");
	a = (struct fm_fault_args){ .length = "-4k" };
	refuse_args(&a, "--length -4k: not a size");
	a = (struct fm_fault_args){ .offset = "16383P", .length = "16383P" };
	refuse_args(&a, "the range ends beyond 2^64 bytes");
}
END_TEST

START_TEST(fault_rate)
{
	static const struct { const char *p; uint32_t ppm; } probs[] = {
		{ "1", 1000000 }, { "0.5", 500000 }, { "0.01", 10000 }, { "1e-6", 1 },
		{ "5%", 50000 }, { "100%", 1000000 }, { "0.1%", 1000 },
	};
	static const struct { const char *p; const char *msg; } bad_probs[] = {
		{ "0", "expected a fraction above 0" }, { "1.5", "expected a fraction" },
		{ "101%", "expected a fraction" }, { "-0.5", "not a number" },
		{ "x", "not a number" }, { "", "not a number" }, { "%", "not a number" },
		{ "0.5x", "not a number" }, { "nan", "not a number" },
		{ "1e-7", "below one in a million" },
	};
	struct fm_fault_args a = { .rate = "250" };
	struct dmio_fault f = accept_args(&a);

	ck_assert_uint_eq(f.rate_ppm, 250);
	a = (struct fm_fault_args){ .rate = "1000000" };
	ck_assert_uint_eq(accept_args(&a).rate_ppm, 1000000);
	a = (struct fm_fault_args){ .rate = "0" };
	refuse_args(&a, "--rate 0: expected a number from 1 to 1000000");
	a = (struct fm_fault_args){ .rate = "1000001" };
	refuse_args(&a, "--rate 1000001: expected a number from 1 to 1000000");
	a = (struct fm_fault_args){ .rate = "1k" };
	refuse_args(&a, "--rate 1k");
	a = (struct fm_fault_args){ .rate = "10", .probability = "0.1" };
	refuse_args(&a, "--rate and --probability exclude each other");

	for (size_t i = 0; i < FM_ARRAY_SIZE(probs); i++) {
		a = (struct fm_fault_args){ .probability = probs[i].p };
		ck_assert_uint_eq(accept_args(&a).rate_ppm, probs[i].ppm);
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(bad_probs); i++) {
		a = (struct fm_fault_args){ .probability = bad_probs[i].p };
		refuse_args(&a, bad_probs[i].msg);
	}
}
END_TEST

START_TEST(fault_flakey)
{
	struct fm_fault_args a = { .up = "2000", .down = "500", .seed = "18446744073709551615" };
	struct dmio_fault f = accept_args(&a);

	ck_assert_uint_eq(f.up_ms, 2000);
	ck_assert_uint_eq(f.down_ms, 500);
	ck_assert_uint_eq(f.seed, UINT64_MAX);
	a = (struct fm_fault_args){ .up = "0", .down = "1" };
	f = accept_args(&a);
	ck_assert_uint_eq(f.down_ms, 1);

	a = (struct fm_fault_args){ .up = "100" };
	refuse_args(&a, "--up needs --down too");
	a = (struct fm_fault_args){ .down = "100" };
	refuse_args(&a, "--down needs --up too");
	a = (struct fm_fault_args){ .up = "100", .down = "0" };
	refuse_args(&a, "--down 0: expected a number from 1 to 4294967295");
	a = (struct fm_fault_args){ .up = "4294967296", .down = "1" };
	refuse_args(&a, "--up 4294967296: expected a number");
	a = (struct fm_fault_args){ .up = "-1", .down = "1" };
	refuse_args(&a, "--up -1: expected a number");
	a = (struct fm_fault_args){ .seed = "x" };
	refuse_args(&a, "--seed x: expected a number");
}
END_TEST

/*----------------------------------------------------------------*/
/* the control-socket words, and descriptions */

START_TEST(fault_words_round_trip)
{
	const struct dmio_fault cases[] = {
		{ .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES, .error = EIO },
		{ .flags = DMIO_FAULT_FLUSHES, .error = ENOSPC, .sector = 8, .count = 16,
		  .rate_ppm = 999999, .up_ms = 1, .down_ms = UINT32_MAX, .seed = UINT64_MAX },
		{ .flags = DMIO_FAULT_DROP_WRITES | DMIO_FAULT_CORRUPT_READS },
		{ .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE, .error = EIO,
		  .sector = 0, .count = 1u << 24 },
	};

	for (size_t i = 0; i < FM_ARRAY_SIZE(cases); i++) {
		g_auto(GStrv) w = fm_fault_to_words(&cases[i]);
		g_autoptr(GError) err = NULL;
		struct dmio_fault f;

		ck_assert(g_str_has_prefix(w[0], "flags="));
		ck_assert_msg(fm_fault_from_words((const char *const *)w, g_strv_length(w), &f, &err),
			      "%s", err ? err->message : "?");
		ck_assert_uint_eq(f.flags, cases[i].flags);
		ck_assert_int_eq(f.error, cases[i].error);
		ck_assert_uint_eq(f.sector, cases[i].sector);
		ck_assert_uint_eq(f.count, cases[i].count);
		ck_assert_uint_eq(f.rate_ppm, cases[i].rate_ppm);
		ck_assert_uint_eq(f.up_ms, cases[i].up_ms);
		ck_assert_uint_eq(f.down_ms, cases[i].down_ms);
		ck_assert_uint_eq(f.seed, cases[i].seed);
	}
}
END_TEST

START_TEST(fault_words_refused)
{
	static const struct { const char *w[3]; const char *msg; } cases[] = {
		{ { "flags=reads", "bogus=1" }, "unknown key 'bogus'" },
		{ { "flags=reads,sideways" }, "unknown flag 'sideways' (reads, writes, flushes, drop_writes, "
		  "corrupt_reads, heal_on_write, flip_writes, misdirect_writes, delay_writes, "
		  "delay_reads)" },
		{ { "flags=reads", "error" }, "'error' is not key=value" },
		{ { "error=5" }, "no flags= given" },
		{ { "flags=" }, "no flags= given" },
		{ { "flags=reads", "error=EWHAT" }, "error=EWHAT: not an errno" },
		{ { "flags=reads", "rate_ppm=1000001" }, "rate_ppm 1000001" },
		{ { "flags=reads", "up_ms=x" }, "up_ms x" },
		{ { "flags=reads", "sector=18446744073709551615", "count=2" }, "wraps around" },
		{ { "flags=writes,heal_on_write", "count=8" }, "heal_on_write needs reads" },
		{ { "flags=reads,heal_on_write" }, "heal_on_write needs reads and a count" },
		{ { "flags=misdirect_writes", "count=8" }, "misdirect_writes needs a count" },
	};

	for (size_t i = 0; i < FM_ARRAY_SIZE(cases); i++) {
		g_autoptr(GError) err = NULL;
		struct dmio_fault f;
		unsigned n = 0;

		while (n < 3 && cases[i].w[n])
			n++;
		ck_assert_msg(!fm_fault_from_words(cases[i].w, n, &f, &err), "case %zu accepted", i);
		ck_assert_msg(strstr(err->message, cases[i].msg), "case %zu: \"%s\" lacks \"%s\"",
			      i, err->message, cases[i].msg);
	}
}
END_TEST

START_TEST(fault_describe)
{
	struct dmio_fault f = { .flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES, .error = ENOSPC,
				.sector = 2048, .count = 128, .rate_ppm = 10000, .seed = 3,
				.up_ms = 1000, .down_ms = 500 };
	g_autoptr(GString) s = g_string_new(NULL);
	g_autoptr(GString) j = g_string_new(NULL);

	fm_fault_describe(&f, s);
	ck_assert_str_eq(s->str, "reads+writes fail with ENOSPC, image bytes 1048576+65536 "
				 "(64.0 KiB at 1.0 MiB), 1% of pieces (10000 ppm, seed 3), "
				 "flakey: up 1000 ms, down 500 ms");
	g_string_truncate(s, 0);
	f = (struct dmio_fault){ .flags = DMIO_FAULT_DROP_WRITES };
	fm_fault_describe(&f, s);
	ck_assert_str_eq(s->str, "writes dropped, whole leg");
	f = (struct dmio_fault){ .flags = DMIO_FAULT_FLUSHES | DMIO_FAULT_CORRUPT_READS };
	g_string_truncate(s, 0);
	fm_fault_describe(&f, s);
	ck_assert_str_eq(s->str, "flushes fail with EIO, reads corrupted, whole leg");
	f = (struct dmio_fault){ .flags = DMIO_FAULT_READS | DMIO_FAULT_HEAL_ON_WRITE,
				 .count = 8 };
	g_string_truncate(s, 0);
	fm_fault_describe(&f, s);
	ck_assert_str_eq(s->str, "reads fail with EIO, healed by a write, image bytes 0+4096 "
				 "(4.0 KiB at 0 B)");

	f = (struct dmio_fault){ .flags = DMIO_FAULT_READS, .error = EROFS, .sector = 1,
				 .count = 2 };
	{
		g_autoptr(JsonBuilder) b = json_builder_new();
		g_autofree char *text = NULL;

		fm_fault_json(&f, b);
		text = cli_json_text(b);
		g_string_append(j, text);
	}
	ck_assert_str_eq(j->str, "{\"reads\":true,\"writes\":false,\"flushes\":false,"
				 "\"drop_writes\":false,\"corrupt_reads\":false,\"heal_on_write\":false,"
				 "\"flip_writes\":false,\"misdirect_writes\":false,\"delay_writes\":false,"
				 "\"delay_reads\":false,"
				 "\"error\":\"EROFS\","
				 "\"errno\":30,\"sector\":1,\"count\":2,\"offset\":512,\"length\":1024,"
				 "\"rate_ppm\":0,\"up_ms\":0,\"down_ms\":0,\"seed\":0,\"delay_ms\":0}");
}
END_TEST

/*----------------------------------------------------------------*/
/* mount options and the config file: the resilience keys */

static void refuse_opts(const char *opts, const char *want)
{
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;

	mount_cfg_init(&cfg);
	ck_assert_msg(!mount_cfg_apply_opts(&cfg, opts, &err), "-o %s accepted", opts);
	ck_assert_msg(strstr(err->message, want), "-o %s: \"%s\" lacks \"%s\"", opts,
		      err->message, want);
	mount_cfg_clear(&cfg);
}

START_TEST(config_resilience_opts)
{
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;

	mount_cfg_init(&cfg);
	/* Defaults: the table's, which are the mirror's own. */
	ck_assert_uint_eq(cfg.max_read_errors, 20);
	ck_assert_uint_eq(cfg.sync_speed_min, 1u << 20);
	ck_assert_uint_eq(cfg.sync_speed_max, 200u << 20);
	ck_assert_uint_eq(cfg.bitmap_delay_ms, 5000);
	ck_assert(!mount_cfg_is_set(&cfg, "max_read_errors"));
	ck_assert(mount_cfg_check(&cfg, &err));
	ck_assert(mount_cfg_apply_opts(&cfg, "max_read_errors=5,sync_speed_min=4M,"
					     "sync_speed_max=1G,bitmap_delay=250", &err));
	ck_assert_uint_eq(cfg.max_read_errors, 5);
	ck_assert_uint_eq(cfg.sync_speed_min, 4u << 20);
	ck_assert_uint_eq(cfg.sync_speed_max, 1u << 30);
	ck_assert_uint_eq(cfg.bitmap_delay_ms, 250);
	ck_assert(mount_cfg_is_set(&cfg, "max_read_errors"));
	ck_assert(!mount_cfg_is_set(&cfg, "threads"));
	ck_assert(mount_cfg_check(&cfg, &err));
	/* min == max is fine; min above max is not. */
	ck_assert(mount_cfg_apply_opts(&cfg, "sync_speed_min=1G", &err));
	ck_assert(mount_cfg_check(&cfg, &err));
	ck_assert(mount_cfg_apply_opts(&cfg, "sync_speed_min=2G", &err));
	ck_assert(!mount_cfg_check(&cfg, &err));
	ck_assert_msg(strstr(err->message, "sync_speed_min (2.0 GiB/s) is above sync_speed_max "
				       "(1.0 GiB/s)"), "%s", err->message);
	g_clear_error(&err);
	mount_cfg_clear(&cfg);

	/* Against the defaults: 300M alone is above the default max of 200M. */
	mount_cfg_init(&cfg);
	ck_assert(mount_cfg_apply_opts(&cfg, "sync_speed_min=300M", &err));
	ck_assert(!mount_cfg_check(&cfg, &err));
	ck_assert_msg(strstr(err->message, "200.0 MiB/s, the default"), "%s", err->message);
	g_clear_error(&err);
	mount_cfg_clear(&cfg);
	mount_cfg_init(&cfg);
	ck_assert(mount_cfg_apply_opts(&cfg, "sync_speed_max=512k", &err));
	ck_assert(!mount_cfg_check(&cfg, &err));
	ck_assert_msg(strstr(err->message, "1.0 MiB/s, the default) is above"), "%s",
		      err->message);
	mount_cfg_clear(&cfg);

	refuse_opts("max_read_errors=0", "max_read_errors=0: expected a number from 1 to 1000000");
	refuse_opts("max_read_errors=x", "max_read_errors=x: expected a number");
	refuse_opts("max_read_errors=-1", "max_read_errors=-1: expected a number");
	refuse_opts("max_read_errors", "option max_read_errors needs a value");
	refuse_opts("sync_speed_min=fast", "sync_speed_min=fast: expected bytes per second");
	refuse_opts("sync_speed_min=0", "sync_speed_min=0: expected bytes per second, at least 4k");
	refuse_opts("sync_speed_max=1k", "sync_speed_max=1k: expected bytes per second");
	refuse_opts("sync_speed_max=", "sync_speed_max=: expected bytes per second");
	refuse_opts("bitmap_delay=0", "bitmap_delay=0: expected a number from 1 to 3600000");
	refuse_opts("bitmap_delay=5s", "bitmap_delay=5s: expected a number");
	refuse_opts("bitmap_delay=3600001", "bitmap_delay=3600001");
}
END_TEST

static char *write_conf(const char *dir, const char *text)
{
	char *path = g_build_filename(dir, "fm.conf", NULL);

	ck_assert(g_file_set_contents(path, text, -1, NULL));
	return path;
}

START_TEST(config_resilience_file)
{
	g_autofree char *dir = fm_test_mkdtemp(NULL, "cli");
	g_autofree char *good = NULL, *bad = NULL;
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;

	good = write_conf(dir, "[array]\nlegs=/a;/b\n[mount]\nmax_read_errors = 3\n"
			       "sync_speed_min=2M\nsync_speed_max=64M\nbitmap_delay=100\n");
	mount_cfg_init(&cfg);
	ck_assert_msg(mount_cfg_load_file(&cfg, good, &err), "%s", err ? err->message : "");
	ck_assert_uint_eq(cfg.max_read_errors, 3);
	ck_assert_uint_eq(cfg.sync_speed_min, 2u << 20);
	ck_assert_uint_eq(cfg.sync_speed_max, 64u << 20);
	ck_assert_uint_eq(cfg.bitmap_delay_ms, 100);
	/* The command line overrides the file. */
	ck_assert(mount_cfg_apply_opts(&cfg, "bitmap_delay=7", &err));
	ck_assert_uint_eq(cfg.bitmap_delay_ms, 7);
	mount_cfg_clear(&cfg);
	g_free(good);
	good = NULL;

	bad = write_conf(dir, "[mount]\nsync_speed_max=lots\n");
	mount_cfg_init(&cfg);
	ck_assert(!mount_cfg_load_file(&cfg, bad, &err));
	ck_assert_msg(strstr(err->message, "[mount] sync_speed_max=lots: expected bytes per second"),
		      "%s", err->message);
	g_clear_error(&err);
	mount_cfg_clear(&cfg);
	g_free(bad);

	bad = write_conf(dir, "[mount]\nmax_read_errors=0\n");
	mount_cfg_init(&cfg);
	ck_assert(!mount_cfg_load_file(&cfg, bad, &err));
	ck_assert_msg(strstr(err->message, "[mount] max_read_errors=0"), "%s", err->message);
	g_clear_error(&err);
	mount_cfg_clear(&cfg);
	g_free(bad);

	bad = write_conf(dir, "[mount]\nbitmap_delay_ms=5\n");
	mount_cfg_init(&cfg);
	ck_assert(!mount_cfg_load_file(&cfg, bad, &err));
	ck_assert_msg(strstr(err->message, "unknown key 'bitmap_delay_ms' in [mount]"), "%s",
		      err->message);
	mount_cfg_clear(&cfg);
	ck_assert_int_eq(fm_test_rm_rf(dir), 0);
}
END_TEST


/*----------------------------------------------------------------*/
/* The key table: defaults, flags, help, and the documentation of each key */

/* degraded: off by default, a bare -o flag, a file key, and refused with a
 * value that is not a boolean. */
START_TEST(config_degraded)
{
	g_autofree char *dir = fm_test_mkdtemp(NULL, "cli");
	g_autofree char *conf = NULL;
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;

	mount_cfg_init(&cfg);
	ck_assert(!cfg.degraded);
	ck_assert(mount_cfg_apply_opts(&cfg, "ro,degraded", &err));
	ck_assert(cfg.degraded);
	ck_assert(mount_cfg_is_set(&cfg, "degraded"));
	ck_assert(mount_cfg_apply_opts(&cfg, "degraded=no", &err));
	ck_assert(!cfg.degraded);
	mount_cfg_clear(&cfg);
	refuse_opts("degraded=maybe", "degraded=maybe");

	conf = write_conf(dir, "[array]\nlegs=/a;/b\n[mount]\ndegraded = true\n");
	mount_cfg_init(&cfg);
	ck_assert_msg(mount_cfg_load_file(&cfg, conf, &err), "%s", err ? err->message : "");
	ck_assert(cfg.degraded);
	mount_cfg_clear(&cfg);
	ck_assert_int_eq(fm_test_rm_rf(dir), 0);
}
END_TEST

START_TEST(config_table)
{
	g_autoptr(GError) err = NULL;
	g_autofree char *help = mount_cfg_help();
	struct mount_cfg cfg;

	mount_cfg_init(&cfg);
	/* The defaults the table gives, as the daemon receives them. */
	ck_assert(!cfg.readonly);
	ck_assert(!cfg.allow_other);
	ck_assert_int_eq(cfg.cache_mode, FRONT_CACHE_WRITEBACK);
	ck_assert_int_eq(cfg.read_policy, MIRROR_READ_BALANCE);
	ck_assert_uint_eq(cfg.cache_size, 0);           /* bufio's 2% of RAM */
	ck_assert_uint_eq(cfg.block_size, 0);           /* the superblock's */
	ck_assert_uint_eq(cfg.threads, 8);
	ck_assert_uint_eq(cfg.max_background, 256);
	ck_assert_uint_eq(cfg.spin_us, 30);
	ck_assert_uint_eq(cfg.writeback_age_ms, 30000);
	ck_assert_uint_eq(cfg.set, 0);
	ck_assert_ptr_null(cfg.name);

	/* Each kind of key through -o. */
	ck_assert(mount_cfg_apply_opts(&cfg, "ro,allow_other,cache_mode=writethrough,"
					     "cache_size=64M,block_size=64k,read_policy=first,"
					     "threads=2,max_background=9,writeback_age=0,name=x.img,"
					     "spin_us=0",
				       &err));
	ck_assert(cfg.readonly);
	ck_assert(cfg.allow_other);
	ck_assert_int_eq(cfg.cache_mode, FRONT_CACHE_WRITETHROUGH);
	ck_assert_uint_eq(cfg.cache_size, 64u << 20);
	ck_assert_uint_eq(cfg.block_size, 65536);
	ck_assert_int_eq(cfg.read_policy, MIRROR_READ_FIRST);
	ck_assert_uint_eq(cfg.threads, 2);
	ck_assert_uint_eq(cfg.max_background, 9);
	ck_assert_uint_eq(cfg.spin_us, 0);
	ck_assert_uint_eq(cfg.writeback_age_ms, 0);
	ck_assert_str_eq(cfg.name, "x.img");
	ck_assert(mount_cfg_apply_opts(&cfg, "rw,allow_other=no", &err));
	ck_assert(!cfg.readonly);
	ck_assert(!cfg.allow_other);
	ck_assert(mount_cfg_apply_opts(&cfg, "ro=off", &err));
	ck_assert(!cfg.readonly);
	mount_cfg_clear(&cfg);

	refuse_opts("nosuchopt", "unknown mount option 'nosuchopt'");
	refuse_opts("nosuchopt=1", "unknown mount option 'nosuchopt'");
	refuse_opts("threads", "option threads needs a value");
	refuse_opts("threads=0", "threads=0: expected a number from 1 to 256");
	refuse_opts("block_size=3k", "block_size=3k: expected a power of two from 512 to 1M");
	refuse_opts("block_size=2M", "block_size=2M: expected a power of two");
	refuse_opts("cache_size=100k", "cache_size=100k: expected a size of at least 1M");
	refuse_opts("cache_mode=later", "cache_mode=later: expected writeback or writethrough");
	refuse_opts("read_policy=best", "read_policy=best: expected balance, round-robin or first");
	refuse_opts("ro=maybe", "ro=maybe: expected true or false");
	refuse_opts("name=a/b", "name=a/b: not a file name");
	refuse_opts("writeback_age=86401", "writeback_age=86401: expected a number from 0");

	/* Every key, with its default, in --help. */
	for (const struct mount_cfg_key *k = mount_cfg_keys; k->name; k++) {
		g_autofree char *line = g_strdup_printf("\n  %s%s%s ", k->name,
							k->metavar ? "=" : "",
							k->metavar ? k->metavar : "");
		/* (a long one has its text on the next line) */
		g_autofree char *line_nl = g_strdup_printf("\n  %s%s%s\n", k->name,
							   k->metavar ? "=" : "",
							   k->metavar ? k->metavar : "");
		g_autofree char *with_nl = g_strconcat("\n", help, NULL);

		ck_assert_msg(strstr(with_nl, line) || strstr(with_nl, line_nl),
			      "--help lacks %s", k->name);
		ck_assert_ptr_nonnull(k->help);
		ck_assert_msg(k->parse, "%s has no parser", k->name);
		ck_assert_msg(!k->def || !k->def_text, "%s: def and def_text", k->name);
	}
	ck_assert_ptr_nonnull(strstr(help, "(default: 200M)"));
	ck_assert_ptr_nonnull(strstr(help, "(default: 8)"));
	for (const char *p = help; *p;) {
		const char *nl = strchr(p, '\n');

		ck_assert_ptr_nonnull(nl);
		ck_assert_msg(nl - p <= 78, "--help line too long: %.*s", (int)(nl - p), p);
		p = nl + 1;
	}
}
END_TEST

/* The paragraph of man/fusemirror.conf.5 that documents @key, newlines
 * turned into spaces and roff's "\-" into "-" (NULL when there is none). */
static char *man_paragraph(const char *man, const char *key)
{
	g_autofree char *bi = g_strdup_printf("\n.BI %s= ", key);
	g_autofree char *br = g_strdup_printf("\n.BR %s= ", key);
	const char *p = strstr(man, bi), *end;
	g_autoptr(GString) s = NULL;

	if (!p)
		p = strstr(man, br);
	if (!p)
		return NULL;
	p++;
	end = strstr(p, "\n.TP");
	if (!end || (strstr(p, "\n.SH") && strstr(p, "\n.SH") < end))
		end = strstr(p, "\n.SH");
	s = g_string_new_len(p, end ? end - p : (gssize)strlen(p));
	g_string_replace(s, "\n", " ", 0);
	g_string_replace(s, "\\-", "-", 0);
	return g_string_free(g_steal_pointer(&s), FALSE);
}

START_TEST(config_documented)
{
	const char *src = g_getenv("FM_SOURCE_ROOT");
	g_autofree char *conf_path = NULL, *man_path = NULL, *conf = NULL, *man = NULL;

	ck_assert_msg(src, "FM_SOURCE_ROOT is not set (tests/meson.build sets it)");
	conf_path = g_build_filename(src, "conf", "fusemirror.conf", NULL);
	man_path = g_build_filename(src, "man", "fusemirror.conf.5", NULL);
	ck_assert_msg(g_file_get_contents(conf_path, &conf, NULL, NULL), "%s", conf_path);
	ck_assert_msg(g_file_get_contents(man_path, &man, NULL, NULL), "%s", man_path);
	for (const struct mount_cfg_key *k = mount_cfg_keys; k->name; k++) {
		g_autofree char *para = NULL, *in_conf = NULL;

		if (k->flags & MOUNT_CFG_NOFILE)
			continue;
		/* The example file shows each key commented out, at its
		 * default when it has one. */
		in_conf = g_strdup_printf("\n#%s=%s", k->name, k->def ? k->def : "");
		ck_assert_msg(strstr(conf, in_conf), "conf/fusemirror.conf lacks \"%s\"",
			      in_conf + 1);
		para = man_paragraph(man, k->name);
		ck_assert_msg(para, "man/fusemirror.conf.5 does not document %s", k->name);
		if (k->def && !(k->flags & MOUNT_CFG_FLAG)) {
			g_autofree char *d1 = g_strdup_printf("default %s", k->def);
			g_autofree char *d2 = g_strdup_printf("%s, the default", k->def);

			ck_assert_msg(strstr(para, d1) || strstr(para, d2),
				      "man/fusemirror.conf.5: %s does not give its default %s: %s",
				      k->name, k->def, para);
		}
	}
}
END_TEST

/*
 * The metric names in TEXT (from FROM on, up to UNTIL when not NULL): every
 * fusemirror_[a-z_]+ word, each once.
 */
static GHashTable *metric_names(const char *text, const char *from, const char *until,
				const char *what)
{
	GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_autoptr(GRegex) re = g_regex_new("fusemirror_[a-z_]+[a-z]", 0, 0, NULL);
	g_autoptr(GMatchInfo) mi = NULL;
	g_autofree char *part = NULL;
	const char *start = strstr(text, from), *end;

	ck_assert_msg(start, "%s: \"%s\" not found", what, from);
	end = until ? strstr(start, until) : NULL;
	ck_assert_msg(!until || end, "%s: \"%s\" not found after \"%s\"", what, until, from);
	part = end ? g_strndup(start, (size_t)(end - start)) : g_strdup(start);
	g_regex_match(re, part, 0, &mi);
	while (g_match_info_matches(mi)) {
		g_hash_table_add(names, g_match_info_fetch(mi, 0));
		g_match_info_next(mi, NULL);
	}
	return names;
}

/*
 * fusemirror(8)'s list of the metrics of `status --format=prometheus` is the
 * list src/daemon/status.c prints: each name it can print (some only for a
 * remote leg or on FUSE over io_uring) is in the man page, and the man page
 * names no metric it does not print.
 */
START_TEST(prometheus_documented)
{
	const char *src = g_getenv("FM_SOURCE_ROOT");
	g_autofree char *status_path = NULL, *man_path = NULL, *status = NULL, *man = NULL;
	g_autoptr(GHashTable) printed = NULL, listed = NULL;
	GHashTableIter it;
	gpointer name;

	ck_assert_msg(src, "FM_SOURCE_ROOT is not set (tests/meson.build sets it)");
	status_path = g_build_filename(src, "src", "daemon", "status.c", NULL);
	man_path = g_build_filename(src, "man", "fusemirror.8", NULL);
	ck_assert_msg(g_file_get_contents(status_path, &status, NULL, NULL), "%s", status_path);
	ck_assert_msg(g_file_get_contents(man_path, &man, NULL, NULL), "%s", man_path);
	printed = metric_names(status, "", NULL, "src/daemon/status.c");
	listed = metric_names(man, "Metrics (each with HELP and TYPE):", "\n.SH ",
			      "man/fusemirror.8");
	ck_assert_uint_ge(g_hash_table_size(printed), 40);
	g_hash_table_iter_init(&it, printed);
	while (g_hash_table_iter_next(&it, &name, NULL))
		ck_assert_msg(g_hash_table_contains(listed, name),
			      "man/fusemirror.8 does not list the metric %s that "
			      "src/daemon/status.c prints", (const char *)name);
	g_hash_table_iter_init(&it, listed);
	while (g_hash_table_iter_next(&it, &name, NULL))
		ck_assert_msg(g_hash_table_contains(printed, name),
			      "man/fusemirror.8 lists the metric %s that src/daemon/status.c "
			      "does not print", (const char *)name);
}
END_TEST

/*----------------------------------------------------------------*/
/* JSON output: always valid, also for bytes that are not UTF-8 */

START_TEST(json_not_utf8)
{
	/* A path with a quote, a backslash, a control character and a byte
	 * that is not UTF-8: the hand-written writer let the byte through. */
	const char *path = "/var/lib/a \"b\"\\c\x01\xff.img";
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autoptr(JsonParser) p = json_parser_new();
	g_autoptr(GError) err = NULL;
	g_autofree char *text = NULL;
	JsonObject *o;

	json_builder_begin_object(b);
	cli_json_str(b, "path", path);
	cli_json_str(b, "none", NULL);
	cli_json_int(b, "big", UINT64_C(1) << 62);
	cli_json_bool(b, "yes", true);
	json_builder_end_object(b);
	text = cli_json_text(b);
	ck_assert_msg(g_utf8_validate(text, -1, NULL), "not UTF-8: %s", text);
	ck_assert_msg(json_parser_load_from_data(p, text, -1, &err), "%s: %s", text,
		      err ? err->message : "");
	o = json_node_get_object(json_parser_get_root(p));
	ck_assert_str_eq(json_object_get_string_member(o, "path"),
			 "/var/lib/a \"b\"\\c\x01\xef\xbf\xbd.img");     /* U+FFFD */
	ck_assert(json_node_is_null(json_object_get_member(o, "none")));
	ck_assert_int_eq(json_object_get_int_member(o, "big"), INT64_C(1) << 62);
	ck_assert(json_object_get_boolean_member(o, "yes"));
}
END_TEST

START_TEST(config_transport)
{
	g_autofree char *dir = fm_test_mkdtemp(NULL, "cli");
	g_autofree char *conf = NULL;
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;
	enum front_transport t;

	mount_cfg_init(&cfg);
	ck_assert_int_eq(cfg.transport, FRONT_TRANSPORT_AUTO);
	ck_assert(mount_cfg_apply_opts(&cfg, "transport=uring", &err));
	ck_assert_int_eq(cfg.transport, FRONT_TRANSPORT_URING);
	ck_assert(mount_cfg_apply_opts(&cfg, "transport=dev", &err));
	ck_assert_int_eq(cfg.transport, FRONT_TRANSPORT_DEV);
	mount_cfg_clear(&cfg);
	refuse_opts("transport=fuse", "transport=fuse: expected auto, uring or dev");
	refuse_opts("transport", "option transport needs a value");

	conf = write_conf(dir, "[array]\nlegs=/a;/b\n[mount]\ntransport=uring\n");
	mount_cfg_init(&cfg);
	ck_assert_msg(mount_cfg_load_file(&cfg, conf, &err), "%s", err ? err->message : "");
	ck_assert_int_eq(cfg.transport, FRONT_TRANSPORT_URING);
	mount_cfg_clear(&cfg);

	/* The names round-trip; they are the ones of the man page. */
	for (t = FRONT_TRANSPORT_AUTO; t <= FRONT_TRANSPORT_DEV; t++) {
		enum front_transport back;

		ck_assert(front_transport_from_name(front_transport_name(t), &back));
		ck_assert_int_eq(back, t);
	}
	ck_assert_str_eq(front_transport_name(FRONT_TRANSPORT_URING), "uring");
	ck_assert(!front_transport_from_name("URING", &t));
	ck_assert_int_eq(fm_test_rm_rf(dir), 0);
}
END_TEST

/*----------------------------------------------------------------*/
/* cli_parse_args: the GOption parse every sub-command shares */

static int parse_words(const char *const *words, unsigned min, unsigned max, gboolean *flag,
		       char ***ret_rest)
{
	GOptionEntry entries[] = {
		{ "flag", 'f', 0, G_OPTION_ARG_NONE, flag, "A flag", NULL },
		{ NULL },
	};
	g_auto(GStrv) argv = g_strdupv((char **)words);
	char **args = argv;
	int argc = (int)g_strv_length(argv);

	/* GOption rearranges args; argv keeps every string to free. */
	args = g_memdup2(argv, sizeof(char *) * ((size_t)argc + 1));
	{
		int code = cli_parse_args("verb", "A B", "Summary.", entries, min, max, &argc,
					  &args, ret_rest);

		g_free(args);
		return code;
	}
}

START_TEST(options_parse_args)
{
	g_auto(GStrv) rest = NULL;
	gboolean flag = FALSE;

	ck_assert_int_eq(parse_words((const char *[]){ "verb", "-f", "a", "b", NULL }, 2, 2, &flag,
				     &rest), FM_EXIT_OK);
	ck_assert(flag);
	ck_assert_uint_eq(g_strv_length(rest), 2);
	ck_assert_str_eq(rest[0], "a");
	ck_assert_str_eq(rest[1], "b");
	g_clear_pointer(&rest, g_strfreev);

	/* No positional word at all, when none is needed: an empty vector. */
	ck_assert_int_eq(parse_words((const char *[]){ "verb", NULL }, 0, 3, &flag, &rest),
			 FM_EXIT_OK);
	ck_assert_ptr_nonnull(rest);
	ck_assert_ptr_null(rest[0]);
	g_clear_pointer(&rest, g_strfreev);

	/* Too few, too many, an empty word, an unknown option: usage, and
	 * *ret_rest untouched. */
	ck_assert_int_eq(parse_words((const char *[]){ "verb", "a", NULL }, 2, 2, &flag, &rest),
			 FM_EXIT_USAGE);
	ck_assert_int_eq(parse_words((const char *[]){ "verb", "a", "b", "c", NULL }, 2, 2, &flag,
				     &rest), FM_EXIT_USAGE);
	ck_assert_int_eq(parse_words((const char *[]){ "verb", "a", "", NULL }, 2, 2, &flag, &rest),
			 FM_EXIT_USAGE);
	ck_assert_int_eq(parse_words((const char *[]){ "verb", "--nope", "a", "b", NULL }, 2, 2,
				     &flag, &rest), FM_EXIT_USAGE);
	ck_assert_ptr_null(rest);
	/* Any number. */
	ck_assert_int_eq(parse_words((const char *[]){ "verb", "a", "b", "c", "d", NULL }, 1,
				     G_MAXUINT, &flag, &rest), FM_EXIT_OK);
	ck_assert_uint_eq(g_strv_length(rest), 4);
}
END_TEST

static Suite *cli_suite(void)
{
	const struct fm_test_case cases[] = {
		{ "fault_defaults", fault_defaults },
		{ "fault_flags", fault_flags },
		{ "fault_errno", fault_errno },
		{ "fault_range", fault_range },
		{ "fault_rate", fault_rate },
		{ "fault_flakey", fault_flakey },
		{ "fault_words_round_trip", fault_words_round_trip },
		{ "fault_words_refused", fault_words_refused },
		{ "fault_describe", fault_describe },
		{ "config_resilience_opts", config_resilience_opts },
		{ "config_resilience_file", config_resilience_file },
		{ "config_degraded", config_degraded },
		{ "config_table", config_table },
		{ "config_documented", config_documented },
		{ "prometheus_documented", prometheus_documented },
		{ "json_not_utf8", json_not_utf8 },
		{ "config_transport", config_transport },
		{ "options_parse_args", options_parse_args },
	};

	return fm_test_suite("cli", cases, FM_ARRAY_SIZE(cases));
}

int main(void)
{
	return fm_test_main(cli_suite());
}
