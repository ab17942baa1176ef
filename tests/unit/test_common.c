/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for src/common: crc32c and size parsing/formatting. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
	enum { N = 4099 };
	uint8_t *buf = malloc(N + 8);

	srandom(42);
	for (int i = 0; i < N + 8; i++)
		buf[i] = (uint8_t)random();
	/* Every alignment and length class, and chaining in two parts. */
	for (size_t off = 0; off < 8; off++) {
		for (size_t len = 0; len < 64; len++)
			ck_assert_uint_eq(fm_crc32c(0, buf + off, len),
					  fm_crc32c_sw(0, buf + off, len));
		uint32_t whole = fm_crc32c(0, buf + off, N);
		uint32_t part = fm_crc32c(fm_crc32c(0, buf + off, 1000), buf + off + 1000, N - 1000);
		ck_assert_uint_eq(whole, part);
		ck_assert_uint_eq(whole, fm_crc32c_sw(0, buf + off, N));
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

static Suite *common_suite(void)
{
	Suite *s = suite_create("common");
	TCase *tc;

	tc = tcase_create("crc32c");
	tcase_add_test(tc, crc32c_known_vectors);
	tcase_add_test(tc, crc32c_hw_matches_sw_and_chains);
	suite_add_tcase(s, tc);
	tc = tcase_create("sizes");
	tcase_add_test(tc, parse_sizes);
	tcase_add_test(tc, format_sizes);
	tcase_add_test(tc, align_macros);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fm_test_main(common_suite());
}
