/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the superblock module, written from its contract,
 * include/fusemirror/superblock.h, and the on-disk layout it documents.
 *
 * One Suite "superblock", one TCase per behaviour (superblock_suite() at
 * the end).  The test reads and builds the on-disk bytes with its own
 * little-endian helpers and offset table, so a field at the wrong offset, in
 * the wrong byte order or of the wrong width fails here even when encode and
 * decode agree with each other.
 *
 * Data: random fields come from a PRNG seeded per test (fm_test_seed_for();
 * FM_TEST_SEED=<n> changes the run's base seed).
 *
 * Fixtures: an unchecked fixture (check's parent process) owns the TCase's
 * temporary directory, so it is removed even when a test crashes; loop
 * devices are attached with autoclear and detached before the test ends.
 * The checked teardown shuts the dmio engine down, so that valgrind (CK_FORK
 * =no) sees no thread or ring left behind.
 *
 * External tools (mkfs.ext4, mkswap, sfdisk, losetup) are required: this
 * project's machines have them (.ci/deps), so nothing is skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"
#include "fusemirror/superblock.h"

#include "fm_test.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)
#define PiB (1024ull * TiB)

/* The on-disk layout, restated independently of src/mirror/superblock.c. */
#define OFF_MAGIC 0
#define OFF_MAJOR 8
#define OFF_MINOR 12
#define OFF_ARRAY_UUID 16
#define OFF_LEG_UUID 32
#define OFF_LEG_INDEX 48
#define OFF_NR_LEGS 52
#define OFF_EVENTS 56
#define OFF_CTIME 64
#define OFF_UTIME 72
#define OFF_IMAGE_SIZE 80
#define OFF_DATA_OFFSET 88
#define OFF_REGION_SIZE 96
#define OFF_BITMAP_OFFSET 104
#define OFF_BITMAP_LENGTH 112
#define OFF_STATE_FLAGS 120
#define OFF_BLOCK_SIZE 124
#define OFF_RECOVERY 128
#define OFF_NAME 136
#define OFF_LEGS 200
#define LEG_SLOT 32
#define OFF_FEATURES 1224
#define OFF_CSUM_OFFSET 1488
#define OFF_CSUM_LENGTH 1496
#define OFF_CSUM_ALGO 1504
#define OFF_CSUM_BLOCK 1508
#define OFF_LAST_IN_SYNC 1232
#define OFF_WRITTEN_OFFSET 1744
#define OFF_WRITTEN_LENGTH 1752
#define OFF_CHECKSUM_AREA 1488
#define OFF_RESERVED 1232
#define OFF_RECOVERY_FLAGS 4056
#define OFF_CRC 4092

static uint32_t le32_at(const uint8_t *buf, size_t off)
{
	return (uint32_t)buf[off] | (uint32_t)buf[off + 1] << 8 |
	       (uint32_t)buf[off + 2] << 16 | (uint32_t)buf[off + 3] << 24;
}

static uint64_t le64_at(const uint8_t *buf, size_t off)
{
	return (uint64_t)le32_at(buf, off) | (uint64_t)le32_at(buf, off + 4) << 32;
}

static void set_le32(uint8_t *buf, size_t off, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		buf[off + i] = (uint8_t)(v >> (8 * i));
}

/* Recompute the crc of a hand-edited buffer. */
static void fix_crc(uint8_t *buf)
{
	set_le32(buf, OFF_CRC, fm_crc32c(0, buf, OFF_CRC));
}

/*----------------------------------------------------------------*/
/* Fixtures */

static char *tc_dir;

static void tc_dir_setup(void)
{
	tc_dir = fm_test_mkdtemp(NULL, "sb");
}

static void tc_dir_teardown(void)
{
	int r = fm_test_rm_rf(tc_dir);

	if (r < 0)
		fprintf(stderr, "test_superblock: cannot remove %s: %s\n", tc_dir,
			g_strerror(-r));
	g_clear_pointer(&tc_dir, g_free);
	ck_assert_msg(r == 0, "cannot remove the temporary directory");
}

static void engine_teardown(void)
{
	dmio_engine_shutdown();
}

static char *tc_path(const char *name)
{
	return g_build_filename(tc_dir, name, NULL);
}

/*----------------------------------------------------------------*/
/* Superblocks to play with */

/* A valid superblock: 64 GiB image, 64 MiB regions, leg 1 of 3. */
static void make_basic_sb(struct fm_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->version_major = FM_SB_VERSION_MAJOR;
	sb->version_minor = FM_SB_VERSION_MINOR;
	for (unsigned i = 0; i < 16; i++) {
		sb->array_uuid[i] = (uint8_t)(0xa0 + i);
		sb->leg_uuid[i] = (uint8_t)(0x10 + i);
	}
	sb->nr_legs = 3;
	sb->leg_index = 1;
	for (unsigned i = 0; i < 3; i++) {
		memset(sb->legs[i].uuid, 0x30 + (int)i, 16);
		sb->legs[i].state = FM_LEG_IN_SYNC;
		sb->legs[i].events = 7;
	}
	memcpy(sb->legs[1].uuid, sb->leg_uuid, 16);
	sb->events = 7;
	sb->ctime = 1700000000;
	sb->utime = 1700000001;
	sb->state_flags = FM_SB_CLEAN;
	sb->block_size = 4096;
	g_strlcpy(sb->name, "basic", sizeof(sb->name));
	ck_assert_int_eq(fm_sb_layout(sb, 64 * GiB, FM_SB_DEFAULT_REGION_SIZE), 0);
}

/* Give @sb (geometry set) a checksum area after its bitmap, restated from
 * superblock.h: 4 bytes per 4 KiB block in whole pages; the data moves past
 * it (+ @spare_mib). */
static void add_checksum_area(struct fm_sb *sb, uint64_t spare_mib)
{
	uint64_t blocks = (sb->image_size + 4095) / 4096;

	sb->features |= FM_SB_FEAT_CHECKSUMS;
	sb->csum_offset = sb->bitmap_offset + sb->bitmap_length;
	sb->csum_length = (blocks * 4 + 4095) / 4096 * 4096;
	sb->csum_algo = 1;
	sb->csum_block_size = 4096;
	sb->data_offset = (sb->csum_offset + sb->csum_length + MiB - 1) / MiB * MiB +
			  spare_mib * MiB;
}

/* Give @sb (geometry and checksum area set) a written-region map after
 * the bitmap and checksum areas, restated from superblock.h: one bit per
 * region, as long as the bitmap; the data moves past it (+ @spare_mib). */
static void add_written_map(struct fm_sb *sb, uint64_t spare_mib)
{
	sb->features |= FM_SB_FEAT_WRITTEN_MAP;
	sb->written_offset = (sb->features & FM_SB_FEAT_CHECKSUMS) ?
			     sb->csum_offset + sb->csum_length :
			     sb->bitmap_offset + sb->bitmap_length;
	sb->written_length = sb->bitmap_length;
	sb->data_offset = (sb->written_offset + sb->written_length + MiB - 1) / MiB * MiB +
			  spare_mib * MiB;
}

/* A valid superblock with every field random (geometry random but
 * consistent, with room to spare in bitmap and data offset). */
static void make_random_sb(struct fm_rng *rng, struct fm_sb *sb)
{
	uint64_t region = 1ull << fm_rng_between(rng, 20, 40);
	uint64_t image = fm_rng_between(rng, 1, 1ull << 38) * 4096;
	uint64_t spare_mib = fm_rng_between(rng, 0, 3) ? 0 : fm_rng_between(rng, 1, 4096);
	size_t name_len = (size_t)fm_rng_between(rng, 0, sizeof(sb->name) - 1);

	memset(sb, 0, sizeof(*sb));
	ck_assert_int_eq(fm_sb_layout(sb, image, region), 0);
	sb->data_offset += spare_mib * MiB;
	sb->bitmap_length += fm_rng_between(rng, 0, spare_mib * MiB / 4096) * 4096;
	sb->version_major = FM_SB_VERSION_MAJOR;
	sb->version_minor = (uint32_t)fm_rng_next(rng);
	fm_rng_fill(rng, sb->array_uuid, 16);
	fm_rng_fill(rng, sb->leg_uuid, 16);
	sb->nr_legs = (uint32_t)fm_rng_between(rng, 1, FM_SB_MAX_LEGS);
	sb->leg_index = (uint32_t)fm_rng_between(rng, 0, sb->nr_legs - 1);
	sb->events = fm_rng_next(rng);
	sb->ctime = fm_rng_next(rng);
	sb->utime = fm_rng_next(rng);
	sb->state_flags = (uint32_t)fm_rng_next(rng);
	sb->block_size = (uint32_t)fm_rng_next(rng);
	sb->recovery_offset = fm_rng_next(rng);
	sb->recovery_flags = (uint32_t)fm_rng_next(rng) & FM_SB_RECOVERY_FLAGS_ALL;
	for (size_t i = 0; i < name_len; i++)
		sb->name[i] = (char)fm_rng_between(rng, 1, 255);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		fm_rng_fill(rng, sb->legs[i].uuid, 16);
		sb->legs[i].state = (uint32_t)fm_rng_between(rng, FM_LEG_EMPTY, FM_LEG_REMOVED);
		sb->legs[i].flags = (uint32_t)fm_rng_next(rng) & FM_SB_LEG_FLAGS_ALL &
				    ~(uint32_t)(FM_SB_LEG_REPLACEMENT | FM_SB_LEG_REPLACED_MASK);
		if (sb->nr_legs > 1 && fm_rng_between(rng, 0, 3) == 0)
			sb->legs[i].flags |= FM_SB_LEG_REPLACEMENT |
				((i + 1 + (uint32_t)fm_rng_between(rng, 0, sb->nr_legs - 2)) %
				 sb->nr_legs << FM_SB_LEG_REPLACED_SHIFT);
		if (sb->nr_legs > 1 && FM_SB_LEG_REPLACED_SLOT(sb->legs[i].flags) == i)
			sb->legs[i].flags &= ~(uint32_t)(FM_SB_LEG_REPLACEMENT |
							 FM_SB_LEG_REPLACED_MASK);
		sb->legs[i].events = fm_rng_next(rng);
	}
	sb->features = (uint32_t)fm_rng_next(rng) & FM_SB_FEAT_ALL;
	if (sb->features & FM_SB_FEAT_CHECKSUMS)
		add_checksum_area(sb, spare_mib);
	if (sb->features & FM_SB_FEAT_WRITTEN_MAP)
		add_written_map(sb, spare_mib);
	else
		sb->features &= ~(uint32_t)FM_SB_FEAT_ZERO_ON_WRITE;    /* map only */
	if (sb->features & FM_SB_FEAT_GENERATIONS)
		for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
			sb->last_in_sync[i] = fm_rng_between(rng, 0, sb->events);
	memcpy(sb->legs[sb->leg_index].uuid, sb->leg_uuid, 16);
	/* Bad blocks: 1..FM_SB_BAD_MAX entries of occupied slots, inside
	 * the image (none when every slot is empty: then no bit). */
	if (sb->features & FM_SB_FEAT_BAD_BLOCKS) {
		uint64_t nb = sb->image_size / FM_SB_BAD_BLOCK_SIZE;
		unsigned n = (unsigned)fm_rng_between(rng, 1, FM_SB_BAD_MAX);

		for (unsigned k = 0; k < n; k++) {
			unsigned slot = (unsigned)fm_rng_between(rng, 0, sb->nr_legs - 1);
			uint64_t len = fm_rng_between(rng, 1, nb < FM_SB_BAD_MAX_LEN ? nb :
						      FM_SB_BAD_MAX_LEN);

			if (sb->legs[slot].state == FM_LEG_EMPTY)
				continue;
			sb->bad[sb->nr_bad++] = FM_SB_BAD_MAKE(slot, fm_rng_between(rng, 0, nb - len),
							       len);
		}
		if (!sb->nr_bad)
			sb->features &= ~(uint32_t)FM_SB_FEAT_BAD_BLOCKS;
	}
}

#define ASSERT_FIELD_EQ(a, b, f)                                                  \
	ck_assert_msg((a)->f == (b)->f, "field " #f ": got %" PRIu64 " want %" PRIu64, \
		      (uint64_t)(a)->f, (uint64_t)(b)->f)

static void assert_sb_eq(const struct fm_sb *got, const struct fm_sb *want)
{
	ASSERT_FIELD_EQ(got, want, version_major);
	ASSERT_FIELD_EQ(got, want, version_minor);
	fm_assert_bytes_eq(got->array_uuid, want->array_uuid, 16, "array_uuid");
	fm_assert_bytes_eq(got->leg_uuid, want->leg_uuid, 16, "leg_uuid");
	ASSERT_FIELD_EQ(got, want, leg_index);
	ASSERT_FIELD_EQ(got, want, nr_legs);
	ASSERT_FIELD_EQ(got, want, events);
	ASSERT_FIELD_EQ(got, want, ctime);
	ASSERT_FIELD_EQ(got, want, utime);
	ASSERT_FIELD_EQ(got, want, image_size);
	ASSERT_FIELD_EQ(got, want, data_offset);
	ASSERT_FIELD_EQ(got, want, region_size);
	ASSERT_FIELD_EQ(got, want, bitmap_offset);
	ASSERT_FIELD_EQ(got, want, bitmap_length);
	ASSERT_FIELD_EQ(got, want, state_flags);
	ASSERT_FIELD_EQ(got, want, block_size);
	ASSERT_FIELD_EQ(got, want, recovery_offset);
	ASSERT_FIELD_EQ(got, want, recovery_flags);
	ASSERT_FIELD_EQ(got, want, features);
	ASSERT_FIELD_EQ(got, want, nr_bad);
	ck_assert_msg(memcmp(got->bad, want->bad, sizeof(got->bad)) == 0, "bad-block lists differ");
	ASSERT_FIELD_EQ(got, want, csum_offset);
	ASSERT_FIELD_EQ(got, want, csum_length);
	ASSERT_FIELD_EQ(got, want, csum_algo);
	ASSERT_FIELD_EQ(got, want, csum_block_size);
	ASSERT_FIELD_EQ(got, want, written_offset);
	ASSERT_FIELD_EQ(got, want, written_length);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		ck_assert_msg(got->last_in_sync[i] == want->last_in_sync[i],
			      "last_in_sync[%u]: got %" PRIu64 " want %" PRIu64, i,
			      got->last_in_sync[i], want->last_in_sync[i]);
	fm_assert_bytes_eq(got->name, want->name, sizeof(got->name), "name");
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		fm_assert_bytes_eq(got->legs[i].uuid, want->legs[i].uuid, 16, "legs[%u].uuid", i);
		ck_assert_msg(got->legs[i].state == want->legs[i].state,
			      "legs[%u].state: got %u want %u", i, got->legs[i].state,
			      want->legs[i].state);
		ck_assert_msg(got->legs[i].flags == want->legs[i].flags,
			      "legs[%u].flags: got %u want %u", i, got->legs[i].flags,
			      want->legs[i].flags);
		ck_assert_msg(got->legs[i].events == want->legs[i].events,
			      "legs[%u].events: got %" PRIu64 " want %" PRIu64, i,
			      got->legs[i].events, want->legs[i].events);
	}
}

/* Decode @buf expecting failure @want_r; checks the error and that
 * ret_sb stays untouched.  Returns the message (g_free) or NULL. */
static char *decode_expect_fail(const uint8_t *buf, int want_r, const char *what)
{
	struct fm_sb out, pristine;
	GError *err = NULL;
	char *msg;
	int r;

	memset(&out, 0x5c, sizeof(out));
	memcpy(&pristine, &out, sizeof(out));
	r = fm_sb_decode(buf, &out, &err);
	ck_assert_msg(r == want_r, "%s: fm_sb_decode returned %d (%s), want %d (%s)", what,
		      r, err ? err->message : "no message", want_r, g_strerror(-want_r));
	ck_assert_msg(err != NULL, "%s: no GError", what);
	ck_assert_msg(err->domain == FM_SB_ERROR && err->code == -want_r,
		      "%s: GError domain %s code %d", what, g_quark_to_string(err->domain),
		      err->code);
	ck_assert_msg(memcmp(&out, &pristine, sizeof(out)) == 0,
		      "%s: ret_sb was written on failure", what);
	/* NULL err must be accepted too, with the same verdict. */
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), want_r);
	msg = g_strdup(err->message);
	g_error_free(err);
	return msg;
}

/*----------------------------------------------------------------*/
/* TCase encode: round trip and byte layout */

START_TEST(encode_decode_round_trip_random)
{
	struct fm_rng rng;
	uint8_t buf[FM_SB_SIZE], again[FM_SB_SIZE];
	unsigned rounds = 500;

	fm_rng_seed(&rng, fm_test_seed_for("round_trip", 0));
	for (unsigned n = 0; n < rounds; n++) {
		struct fm_sb sb, out;
		GError *err = NULL;
		int r;

		make_random_sb(&rng, &sb);
		memset(buf, 0xee, sizeof(buf));
		fm_sb_encode(&sb, buf);
		memset(&out, 0, sizeof(out));
		r = fm_sb_decode(buf, &out, &err);
		ck_assert_msg(r == 0, "round %u: decode %d: %s", n, r, err ? err->message : "");
		assert_sb_eq(&out, &sb);
		/* Encoding is a function of the fields: same bytes again. */
		fm_sb_encode(&out, again);
		fm_assert_bytes_eq(again, buf, FM_SB_SIZE, "round %u: re-encoded", n);
	}
}
END_TEST

START_TEST(encode_byte_offsets)
{
	struct fm_sb sb;
	uint8_t buf[FM_SB_SIZE];

	make_basic_sb(&sb);
	sb.version_minor = 0x0d0c0b0a;
	sb.events = 0x0102030405060708ull;
	sb.ctime = 0x1112131415161718ull;
	sb.utime = 0x2122232425262728ull;
	sb.recovery_offset = 0x3132333435363738ull;
	sb.recovery_flags = FM_SB_RECOVERY_BITMAP;
	sb.state_flags = 0x41424344;
	sb.block_size = 0x00010000;
	sb.legs[2].state = FM_LEG_REBUILDING;
	sb.legs[2].events = 0x5152535455565758ull;
	memset(buf, 0xff, sizeof(buf)); /* encode must write every byte */
	fm_sb_encode(&sb, buf);

	ck_assert(memcmp(buf + OFF_MAGIC, "FUSEMIRR", 8) == 0);
	ck_assert_uint_eq(le32_at(buf, OFF_MAJOR), FM_SB_VERSION_MAJOR);
	ck_assert_uint_eq(le32_at(buf, OFF_MINOR), 0x0d0c0b0a);
	ck_assert_uint_eq(buf[OFF_MINOR], 0x0a); /* little-endian, byte by byte */
	fm_assert_bytes_eq(buf + OFF_ARRAY_UUID, sb.array_uuid, 16, "array uuid at 16");
	fm_assert_bytes_eq(buf + OFF_LEG_UUID, sb.leg_uuid, 16, "leg uuid at 32");
	ck_assert_uint_eq(le32_at(buf, OFF_LEG_INDEX), 1);
	ck_assert_uint_eq(le32_at(buf, OFF_NR_LEGS), 3);
	{
		static const uint8_t events_le[8] = { 8, 7, 6, 5, 4, 3, 2, 1 };

		fm_assert_bytes_eq(buf + OFF_EVENTS, events_le, 8, "events at 56");
	}
	ck_assert_uint_eq(le64_at(buf, OFF_CTIME), 0x1112131415161718ull);
	ck_assert_uint_eq(le64_at(buf, OFF_UTIME), 0x2122232425262728ull);
	ck_assert_uint_eq(le64_at(buf, OFF_IMAGE_SIZE), 64 * GiB);
	ck_assert_uint_eq(le64_at(buf, OFF_DATA_OFFSET), 1 * MiB);
	ck_assert_uint_eq(le64_at(buf, OFF_REGION_SIZE), 64 * MiB);
	ck_assert_uint_eq(le64_at(buf, OFF_BITMAP_OFFSET), 4096);
	ck_assert_uint_eq(le64_at(buf, OFF_BITMAP_LENGTH), 4096);
	ck_assert_uint_eq(le32_at(buf, OFF_STATE_FLAGS), 0x41424344);
	ck_assert_uint_eq(le32_at(buf, OFF_BLOCK_SIZE), 0x00010000);
	ck_assert_uint_eq(le64_at(buf, OFF_RECOVERY), 0x3132333435363738ull);
	ck_assert(memcmp(buf + OFF_NAME, "basic", 5) == 0);
	ck_assert_msg(fm_test_is_zero(buf + OFF_NAME + 5, 64 - 5), "name is NUL padded");
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		const uint8_t *slot = buf + OFF_LEGS + i * LEG_SLOT;

		fm_assert_bytes_eq(slot, sb.legs[i].uuid, 16, "legs[%u].uuid", i);
		ck_assert_uint_eq(le32_at(slot, 16), sb.legs[i].state);
		ck_assert_uint_eq(le32_at(slot, 20), sb.legs[i].flags);
		ck_assert_uint_eq(le64_at(slot, 24), sb.legs[i].events);
	}
	ck_assert_uint_eq(le64_at(buf, OFF_LEGS + 2 * LEG_SLOT + 24), 0x5152535455565758ull);
	ck_assert_msg(fm_test_is_zero(buf + OFF_RESERVED, OFF_RECOVERY_FLAGS - OFF_RESERVED),
		      "reserved bytes 1232..4055 are zero");
	ck_assert_uint_eq(le32_at(buf, OFF_RECOVERY_FLAGS), FM_SB_RECOVERY_BITMAP);
	ck_assert_msg(fm_test_is_zero(buf + OFF_RECOVERY_FLAGS + 4,
				      OFF_CRC - OFF_RECOVERY_FLAGS - 4),
		      "reserved bytes 4060..4091 are zero");
	ck_assert_uint_eq(le32_at(buf, OFF_FEATURES), sb.features);
	ck_assert_uint_eq(le32_at(buf, OFF_CRC), fm_crc32c(0, buf, OFF_CRC));
}
END_TEST

/* Bytes after the name's NUL in memory never reach the disk. */
START_TEST(encode_name_nul_padded)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];

	make_basic_sb(&sb);
	memset(sb.name, 'Z', sizeof(sb.name));
	memcpy(sb.name, "mir", 4);
	fm_sb_encode(&sb, buf);
	ck_assert(memcmp(buf + OFF_NAME, "mir", 4) == 0);
	ck_assert(fm_test_is_zero(buf + OFF_NAME + 3, 64 - 3));
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	ck_assert_str_eq(out.name, "mir");
	ck_assert(fm_test_is_zero(out.name + 3, 64 - 3));
	/* The longest name: 63 bytes and the terminator. */
	memset(sb.name, 'n', 63);
	sb.name[63] = '\0';
	fm_sb_encode(&sb, buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	ck_assert_uint_eq(strlen(out.name), 63);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase integrity: magic, crc, versions, reserved bytes */

START_TEST(decode_flipped_bit_anywhere)
{
	struct fm_sb sb;
	uint8_t good[FM_SB_SIZE], buf[FM_SB_SIZE];

	make_basic_sb(&sb);
	fm_sb_encode(&sb, good);
	for (unsigned bit = 0; bit < FM_SB_SIZE * 8; bit++) {
		struct fm_sb out;
		unsigned byte = bit / 8;
		int want = byte < 8 ? -ENODATA : -EBADMSG;
		int r;

		memcpy(buf, good, sizeof(buf));
		buf[byte] ^= (uint8_t)(1u << (bit % 8));
		r = fm_sb_decode(buf, &out, NULL);
		ck_assert_msg(r == want, "bit %u (byte %u) flipped: got %d want %d", bit, byte,
			      r, want);
	}
	/* The message says what is wrong. */
	memcpy(buf, good, sizeof(buf));
	buf[OFF_EVENTS] ^= 1;
	g_autofree char *msg = decode_expect_fail(buf, -EBADMSG, "flipped events bit");
	ck_assert_msg(strstr(msg, "checksum"), "message: %s", msg);
}
END_TEST

START_TEST(decode_wrong_magic)
{
	struct fm_sb sb;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *m1 = NULL, *m2 = NULL, *m3 = NULL;

	memset(buf, 0, sizeof(buf));
	m1 = decode_expect_fail(buf, -ENODATA, "all zeroes");
	ck_assert_msg(strstr(m1, "not a fusemirror leg"), "message: %s", m1);

	/* A correct crc does not make a wrong magic acceptable. */
	make_basic_sb(&sb);
	fm_sb_encode(&sb, buf);
	memcpy(buf, "FUSEMIRX", 8);
	fix_crc(buf);
	m2 = decode_expect_fail(buf, -ENODATA, "FUSEMIRX");
	memcpy(buf, "fusemirr", 8);
	fix_crc(buf);
	m3 = decode_expect_fail(buf, -ENODATA, "lower-case magic");
}
END_TEST

START_TEST(decode_versions)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *m2 = NULL, *mmax = NULL;
	GError *err = NULL;

	make_basic_sb(&sb);
	sb.version_major = 2;
	sb.version_minor = 0;
	fm_sb_encode(&sb, buf);
	ck_assert_uint_eq(le32_at(buf, OFF_CRC), fm_crc32c(0, buf, OFF_CRC)); /* valid crc */
	m2 = decode_expect_fail(buf, -EPROTONOSUPPORT, "major 2");
	ck_assert_msg(strstr(m2, "2.0"), "message names the version: %s", m2);

	sb.version_major = UINT32_MAX;
	fm_sb_encode(&sb, buf);
	mmax = decode_expect_fail(buf, -EPROTONOSUPPORT, "major 0xffffffff");

	/* A newer minor version decodes, and says so. */
	sb.version_major = FM_SB_VERSION_MAJOR;
	sb.version_minor = 7;
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "minor 7: %s",
		      err ? err->message : "");
	ck_assert_uint_eq(out.version_major, FM_SB_VERSION_MAJOR);
	ck_assert_uint_eq(out.version_minor, 7);
	assert_sb_eq(&out, &sb);
}
END_TEST

/* What a newer minor version may put into the reserved space (the tail
 * after the features word, but for the recovery flags) is ignored by this
 * reader. */
START_TEST(decode_ignores_reserved_bytes)
{
	struct fm_rng rng;
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	fm_rng_seed(&rng, fm_test_seed_for("reserved", 0));
	make_random_sb(&rng, &sb);
	sb.version_minor = 3;
	/* Without the feature, the checksum fields are reserved space too. */
	sb.features &= ~(uint32_t)FM_SB_FEAT_CHECKSUMS;
	sb.csum_offset = sb.csum_length = 0;
	sb.csum_algo = sb.csum_block_size = 0;
	/* So are the written map's (zero-on-write goes with it). */
	sb.features &= ~(uint32_t)(FM_SB_FEAT_WRITTEN_MAP | FM_SB_FEAT_ZERO_ON_WRITE);
	sb.written_offset = sb.written_length = 0;
	/* Without the generations feature, its range is reserved too. */
	sb.features &= ~(uint32_t)FM_SB_FEAT_GENERATIONS;
	memset(sb.last_in_sync, 0, sizeof(sb.last_in_sync));
	/* And without bad blocks, the list's range. */
	sb.features &= ~(uint32_t)FM_SB_FEAT_BAD_BLOCKS;
	sb.nr_bad = 0;
	memset(sb.bad, 0, sizeof(sb.bad));
	sb.recovery_flags = FM_SB_RECOVERY_BITMAP;
	fm_sb_encode(&sb, buf);
	fm_rng_fill(&rng, buf + OFF_RESERVED, OFF_RECOVERY_FLAGS - OFF_RESERVED);
	fm_rng_fill(&rng, buf + OFF_RECOVERY_FLAGS + 4, OFF_CRC - OFF_RECOVERY_FLAGS - 4);
	fix_crc(buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "decode: %s",
		      err ? err->message : "");
	assert_sb_eq(&out, &sb);
	/* Written back, the reserved bytes are zero again. */
	fm_sb_encode(&out, buf);
	ck_assert(fm_test_is_zero(buf + OFF_RESERVED, OFF_RECOVERY_FLAGS - OFF_RESERVED));
	ck_assert(fm_test_is_zero(buf + OFF_RECOVERY_FLAGS + 4,
				  OFF_CRC - OFF_RECOVERY_FLAGS - 4));
}
END_TEST

/* A feature bit, a leg flag or a recovery flag this build does not know
 * is refused: a writer that ignored it would leave that feature's
 * metadata stale. */
START_TEST(decode_refuses_unknown_features)
{
	struct fm_rng rng;
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	fm_rng_seed(&rng, fm_test_seed_for("features", 0));
	make_random_sb(&rng, &sb);
	fm_sb_encode(&sb, buf);
	set_le32(buf, OFF_FEATURES, sb.features | 1u << 31);
	fix_crc(buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, &err), -EUCLEAN);
	ck_assert_msg(err && strstr(err->message, "features 0x80000000 are unknown"),
		      "message: %s", err ? err->message : "(none)");
	g_clear_error(&err);

	fm_sb_encode(&sb, buf);
	set_le32(buf, OFF_LEGS + 3 * LEG_SLOT + 20, 1u << 30);
	fix_crc(buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, &err), -EUCLEAN);
	ck_assert_msg(err && strstr(err->message, "leg slot 3 has unknown flags 0x40000000"),
		      "message: %s", err ? err->message : "(none)");
	g_clear_error(&err);

	fm_sb_encode(&sb, buf);
	set_le32(buf, OFF_RECOVERY_FLAGS, FM_SB_RECOVERY_BITMAP | 1u << 5);
	fix_crc(buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, &err), -EUCLEAN);
	ck_assert_msg(err && strstr(err->message, "unknown recovery flags 0x20"),
		      "message: %s", err ? err->message : "(none)");
	g_clear_error(&err);

	/* Every known bit is accepted and comes back. */
	sb.features = FM_SB_FEAT_ALL;
	if (!sb.csum_algo)
		add_checksum_area(&sb, 0);
	add_written_map(&sb, 0);
	if (!sb.nr_bad) {
		sb.nr_bad = 1;
		sb.bad[0] = FM_SB_BAD_MAKE(sb.leg_index, 0, 1);
	}
	sb.legs[3].flags = (FM_SB_LEG_FLAGS_ALL & ~(uint32_t)FM_SB_LEG_REPLACED_MASK) |
			   (0u << FM_SB_LEG_REPLACED_SHIFT);
	sb.recovery_flags = FM_SB_RECOVERY_FLAGS_ALL;
	fm_sb_encode(&sb, buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	assert_sb_eq(&out, &sb);

	/* A replacement names another slot in use; without the flag, no slot. */
	{
		static const uint32_t bad[] = {
			FM_SB_LEG_REPLACEMENT | (3u << FM_SB_LEG_REPLACED_SHIFT),  /* itself */
			FM_SB_LEG_REPLACEMENT | (31u << FM_SB_LEG_REPLACED_SHIFT), /* >= nr_legs */
			1u << FM_SB_LEG_REPLACED_SHIFT,                            /* no flag */
		};

		for (unsigned k = 0; k < G_N_ELEMENTS(bad); k++) {
			set_le32(buf, OFF_LEGS + 3 * LEG_SLOT + 20, bad[k]);
			fix_crc(buf);
			ck_assert_int_eq(fm_sb_decode(buf, &out, &err), -EUCLEAN);
			ck_assert_msg(err && strstr(err->message, "leg slot 3: bad replaced slot"),
				      "message: %s", err ? err->message : "(none)");
			g_clear_error(&err);
		}
	}
}
END_TEST

/* The assembly records (FM_SB_FEAT_GENERATIONS): 32 little-endian u64 at
 * 1232..1487, written and read only with the feature (fm_sb_write()
 * refuses a record without it: io_write_refuses_invalid). */
START_TEST(encode_assembly_records)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	sb.events = 1000;
	sb.features = FM_SB_FEAT_GENERATIONS;
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		sb.last_in_sync[i] = 1000 - i * 3;
	sb.last_in_sync[31] = 0;
	sb.legs[2].flags = FM_SB_LEG_MISSING;
	fm_sb_encode(&sb, buf);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		ck_assert_uint_eq(le64_at(buf, OFF_LAST_IN_SYNC + 8 * i), sb.last_in_sync[i]);
	ck_assert_uint_eq(le32_at(buf, OFF_LEGS + 2 * LEG_SLOT + 20), FM_SB_LEG_MISSING);
	ck_assert_msg(fm_test_is_zero(buf + OFF_CHECKSUM_AREA, OFF_CRC - OFF_CHECKSUM_AREA),
		      "nothing written beyond 1488");
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "decode: %s",
		      err ? err->message : "");
	assert_sb_eq(&out, &sb);

	/* The same bytes without the feature bit: reserved, read as zero. */
	set_le32(buf, OFF_FEATURES, 0);
	fix_crc(buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		ck_assert_uint_eq(out.last_in_sync[i], 0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase consistency: each inconsistency is -EUCLEAN with a message */

static void bad_image_zero(struct fm_sb *sb) { sb->image_size = 0; }
static void bad_image_unaligned(struct fm_sb *sb) { sb->image_size += 512; }
static void bad_region_3000(struct fm_sb *sb) { sb->region_size = 3000; }
static void bad_region_zero(struct fm_sb *sb) { sb->region_size = 0; }
static void bad_region_small(struct fm_sb *sb) { sb->region_size = 512 * KiB; }
static void bad_region_large(struct fm_sb *sb) { sb->region_size = 2 * TiB; }
static void bad_bitmap_offset_8k(struct fm_sb *sb) { sb->bitmap_offset = 8192; }
static void bad_bitmap_offset_0(struct fm_sb *sb) { sb->bitmap_offset = 0; }
static void bad_bitmap_short(struct fm_sb *sb)
{
	sb->region_size = 1 * MiB;      /* 65536 regions: 8192 bytes needed */
	sb->bitmap_length = 4096;
}
static void bad_bitmap_zero(struct fm_sb *sb) { sb->bitmap_length = 0; }
static void bad_bitmap_unaligned(struct fm_sb *sb) { sb->bitmap_length = 4096 + 512; }
static void bad_data_overlap(struct fm_sb *sb) { sb->data_offset = 4096; }
static void bad_data_zero(struct fm_sb *sb) { sb->data_offset = 0; }
static void bad_data_unaligned(struct fm_sb *sb) { sb->data_offset = 1 * MiB + 4096; }
static void bad_leg_too_big(struct fm_sb *sb)
{
	/* Consistent bitmap, but data_offset + image_size passes 2^63 - 1. */
	sb->region_size = FM_SB_MAX_REGION_SIZE;
	sb->image_size = (uint64_t)INT64_MAX - 4095;
	sb->bitmap_length = 1 * MiB;
	sb->data_offset = 2 * MiB;
}
static void bad_data_past_2_63(struct fm_sb *sb)
{
	/* data_offset itself beyond 2^63 - 1: "2^63 - 1 - data_offset" wraps,
	 * and data_offset + image_size wraps to a small leg size (found by
	 * tests/fuzz/fuzz_superblock, corpus/superblock/regress-data-offset). */
	sb->data_offset = 0xfffffffffff00000ull;
}
static void bad_nr_legs_0(struct fm_sb *sb) { sb->nr_legs = 0; sb->leg_index = 0; }
static void bad_nr_legs_33(struct fm_sb *sb) { sb->nr_legs = 33; }
static void bad_leg_index(struct fm_sb *sb) { sb->leg_index = 3; }
static void bad_leg_index_huge(struct fm_sb *sb) { sb->leg_index = UINT32_MAX; }
static void bad_leg_uuid(struct fm_sb *sb) { sb->legs[1].uuid[5] ^= 1; }
static void bad_name(struct fm_sb *sb) { memset(sb->name, 'x', sizeof(sb->name)); }
static void bad_state_last(struct fm_sb *sb) { sb->legs[31].state = FM_LEG_REMOVED + 1; }
static void bad_state_huge(struct fm_sb *sb) { sb->legs[0].state = UINT32_MAX; }
static void bad_major_0(struct fm_sb *sb) { sb->version_major = 0; sb->version_minor = 0; }
static void bad_seen_after_events(struct fm_sb *sb)
{
	sb->features |= FM_SB_FEAT_GENERATIONS;
	sb->last_in_sync[4] = sb->events + 1;
}

static void bad_zero_on_write_alone(struct fm_sb *sb)
{
	sb->features &= ~(uint32_t)FM_SB_FEAT_WRITTEN_MAP;
	sb->written_offset = sb->written_length = 0;
	sb->features |= FM_SB_FEAT_ZERO_ON_WRITE;
}

static const struct bad_case {
	const char *what;
	void (*mutate)(struct fm_sb *sb);
	const char *message;    /* must appear in the error message */
} bad_cases[] = {
	{ "zero-on-write without a map", bad_zero_on_write_alone,
	  "zero-on-write is set without a written-region map" },
	{ "image size 0", bad_image_zero, "image size is 0" },
	{ "image size unaligned", bad_image_unaligned,
	  "image size 68719477248 is not a multiple of 4096" },
	{ "region 3000", bad_region_3000, "region size 3000 is not a power of two" },
	{ "region 0", bad_region_zero, "region size 0 is not a power of two" },
	{ "region 512 KiB", bad_region_small, "region size 524288 is outside" },
	{ "region 2 TiB", bad_region_large, "region size 2199023255552 is outside" },
	{ "bitmap offset 8192", bad_bitmap_offset_8k, "bitmap offset 8192 is not 4096" },
	{ "bitmap offset 0", bad_bitmap_offset_0, "bitmap offset 0 is not 4096" },
	{ "bitmap too short", bad_bitmap_short,
	  "bitmap length 4096 is too small for 65536 regions" },
	{ "bitmap length 0", bad_bitmap_zero, "bitmap length 0 is too small for 1024 regions" },
	{ "bitmap length unaligned", bad_bitmap_unaligned,
	  "bitmap length 4608 is not a multiple of 4096" },
	{ "data overlaps bitmap", bad_data_overlap,
	  "data offset 4096 overlaps the bitmap (which ends at 8192)" },
	{ "data offset 0", bad_data_zero, "data offset 0 overlaps the bitmap" },
	{ "data offset unaligned", bad_data_unaligned,
	  "data offset 1052672 is not a multiple of 1048576" },
	{ "leg beyond 2^63", bad_leg_too_big, "ends beyond the largest file offset" },
	{ "data offset beyond 2^63", bad_data_past_2_63, "ends beyond the largest file offset" },
	{ "no legs", bad_nr_legs_0, "number of legs 0 is outside [1, 32]" },
	{ "33 legs", bad_nr_legs_33, "number of legs 33 is outside [1, 32]" },
	{ "leg index = nr_legs", bad_leg_index, "leg index 3 is not below the number of legs 3" },
	{ "leg index huge", bad_leg_index_huge, "leg index 4294967295 is not below" },
	{ "leg uuid mismatch", bad_leg_uuid, "in leg slot 1" },
	{ "name unterminated", bad_name, "array name is not NUL-terminated" },
	{ "leg state 5", bad_state_last, "leg slot 31 has unknown state 5" },
	{ "leg state huge", bad_state_huge, "leg slot 0 has unknown state 4294967295" },
	{ "major 0", bad_major_0, "format version 0.0 does not exist" },
	{ "last seen in sync after events", bad_seen_after_events,
	  "leg slot 4 was last seen in sync at events 8, after this superblock's 7" },
};

START_TEST(decode_inconsistent_is_euclean)
{
	const struct bad_case *c = &bad_cases[_i];
	struct fm_sb sb;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *msg = NULL;

	make_basic_sb(&sb);
	c->mutate(&sb);
	fm_sb_encode(&sb, buf);
	msg = decode_expect_fail(buf, -EUCLEAN, c->what);
	ck_assert_msg(g_str_has_prefix(msg, "superblock: "), "%s: message '%s'", c->what, msg);
	ck_assert_msg(strstr(msg, c->message), "%s: message '%s' does not say '%s'", c->what,
		      msg, c->message);
}
END_TEST

START_TEST(decode_leg_uuid_message_names_both)
{
	struct fm_sb sb;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *msg = NULL;

	make_basic_sb(&sb);
	sb.legs[1].uuid[15] = 0x99;
	fm_sb_encode(&sb, buf);
	msg = decode_expect_fail(buf, -EUCLEAN, "uuid mismatch");
	ck_assert_msg(strstr(msg, "10111213-1415-1617-1819-1a1b1c1d1e1f"), "%s", msg);
	ck_assert_msg(strstr(msg, "10111213-1415-1617-1819-1a1b1c1d1e99"), "%s", msg);
}
END_TEST

/* The limits themselves are fine. */
START_TEST(decode_accepts_edges)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	sb.nr_legs = FM_SB_MAX_LEGS;
	sb.leg_index = FM_SB_MAX_LEGS - 1;
	memcpy(sb.legs[31].uuid, sb.leg_uuid, 16);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
		sb.legs[i].state = i % (FM_LEG_REMOVED + 1);
	memset(sb.name, 'q', 63);
	sb.name[63] = '\0';
	sb.bitmap_length = 64 * 4096;          /* more than needed */
	sb.data_offset = 7 * MiB;              /* more than needed */
	sb.region_size = FM_SB_MIN_REGION_SIZE;
	sb.image_size = 4096;
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);

	sb.region_size = FM_SB_MAX_REGION_SIZE;
	sb.nr_legs = 1;
	sb.leg_index = 0;
	memcpy(sb.legs[0].uuid, sb.leg_uuid, 16);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase layout */

static const struct layout_case {
	uint64_t image, region;
	uint64_t nr_regions, bitmap_length, data_offset;
} layout_cases[] = {
	/* The default geometry keeps the data at 1 MiB up to very large images. */
	{ 4096, 64 * MiB, 1, 4096, 1 * MiB },
	{ 64 * MiB, 64 * MiB, 1, 4096, 1 * MiB },
	{ 64 * MiB + 4096, 64 * MiB, 2, 4096, 1 * MiB },
	{ 1 * TiB, 64 * MiB, 16384, 4096, 1 * MiB },
	{ 2 * TiB, 64 * MiB, 32768, 4096, 1 * MiB },       /* 4096 bytes exactly */
	{ 2 * TiB + 4096, 64 * MiB, 32769, 8192, 1 * MiB },
	{ 256 * TiB, 64 * MiB, 4194304, 512 * KiB, 1 * MiB },
	{ 510 * TiB, 64 * MiB, 8355840, 1020 * KiB, 1 * MiB }, /* 1 MiB - 4 KiB */
	/* Past that, the bitmap pushes the data further. */
	{ 510 * TiB + 4096, 64 * MiB, 8355841, 1024 * KiB, 2 * MiB },
	{ 1 * PiB, 64 * MiB, 16777216, 2 * MiB, 3 * MiB },
	{ 1 * PiB, 1 * MiB, 1073741824, 128 * MiB, 129 * MiB },
	{ 8160 * GiB, 1 * MiB, 8355840, 1020 * KiB, 1 * MiB },
	{ 8160 * GiB + 1 * MiB, 1 * MiB, 8355841, 1024 * KiB, 2 * MiB },
	/* Extreme region sizes. */
	{ 1 * GiB, 1 * MiB, 1024, 4096, 1 * MiB },
	{ 4 * PiB, 1 * TiB, 4096, 4096, 1 * MiB },
	{ 4096 * PiB, 1 * MiB, 4398046511104ull, 512 * GiB, 512 * GiB + 1 * MiB },
};

START_TEST(layout_sizes)
{
	const struct layout_case *c = &layout_cases[_i];
	struct fm_sb sb, before;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	sb.events = 0x1234;
	memcpy(&before, &sb, sizeof(sb));
	ck_assert_int_eq(fm_sb_layout(&sb, c->image, c->region), 0);
	ck_assert_uint_eq(sb.image_size, c->image);
	ck_assert_uint_eq(sb.region_size, c->region);
	ck_assert_uint_eq(sb.bitmap_offset, 4096);
	ck_assert_msg(sb.bitmap_length == c->bitmap_length,
		      "image %" PRIu64 " region %" PRIu64 ": bitmap_length %" PRIu64
		      " want %" PRIu64, c->image, c->region, sb.bitmap_length, c->bitmap_length);
	ck_assert_msg(sb.data_offset == c->data_offset,
		      "image %" PRIu64 " region %" PRIu64 ": data_offset %" PRIu64
		      " want %" PRIu64, c->image, c->region, sb.data_offset, c->data_offset);
	ck_assert_uint_eq(fm_sb_nr_regions(&sb), c->nr_regions);
	ck_assert_uint_eq(fm_sb_leg_bytes(&sb), c->data_offset + c->image);
	/* Every other field is untouched. */
	ck_assert_uint_eq(sb.events, 0x1234);
	sb.image_size = before.image_size;
	sb.region_size = before.region_size;
	sb.bitmap_length = before.bitmap_length;
	sb.data_offset = before.data_offset;
	assert_sb_eq(&sb, &before);
	/* And what layout produces, decode accepts. */
	ck_assert_int_eq(fm_sb_layout(&sb, c->image, c->region), 0);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &before, &err) == 0, "%s", err ? err->message : "");
}
END_TEST

START_TEST(layout_rejects)
{
	static const struct { uint64_t image, region; } bad[] = {
		{ 0, 64 * MiB },
		{ 4095, 64 * MiB },
		{ 4097, 64 * MiB },
		{ 1 * GiB + 512, 64 * MiB },
		{ 1 * GiB, 0 },
		{ 1 * GiB, 3000 },
		{ 1 * GiB, 64 * MiB + 4096 },
		{ 1 * GiB, 512 * KiB },             /* below FM_SB_MIN_REGION_SIZE */
		{ 1 * GiB, 2 * TiB },               /* above FM_SB_MAX_REGION_SIZE */
		{ UINT64_MAX - 4095, 1 * TiB },     /* a leg larger than off_t */
		{ (uint64_t)INT64_MAX - 4095, 1 * TiB },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		struct fm_sb sb, before;

		make_basic_sb(&sb);
		memcpy(&before, &sb, sizeof(sb));
		ck_assert_msg(fm_sb_layout(&sb, bad[i].image, bad[i].region) == -EINVAL,
			      "image %" PRIu64 " region %" PRIu64 " accepted", bad[i].image,
			      bad[i].region);
		assert_sb_eq(&sb, &before);
	}
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase checksums: the checksum area's fields and layout */

/* The fields sit at 1488..1511, little-endian, and only with the feature. */
START_TEST(csum_fields_offsets)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, 64 * GiB, 64 * MiB, FM_SB_FEAT_CHECKSUMS), 0);
	memset(buf, 0xff, sizeof(buf));
	fm_sb_encode(&sb, buf);
	ck_assert_uint_eq(le32_at(buf, OFF_FEATURES), FM_SB_FEAT_CHECKSUMS);
	ck_assert_uint_eq(le64_at(buf, OFF_CSUM_OFFSET), 8192);
	ck_assert_uint_eq(le64_at(buf, OFF_CSUM_LENGTH), 64 * MiB);
	ck_assert_uint_eq(le32_at(buf, OFF_CSUM_ALGO), 1);
	ck_assert_uint_eq(le32_at(buf, OFF_CSUM_BLOCK), 4096);
	/* 8 KiB of header and 64 MiB of checksums: data at the next MiB. */
	ck_assert_uint_eq(le64_at(buf, OFF_DATA_OFFSET), 65 * MiB);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);

	/* Without the bit the fields are neither written nor read. */
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * GiB, 64 * MiB), 0);
	ck_assert_uint_eq(sb.features & FM_SB_FEAT_CHECKSUMS, 0);
	ck_assert_uint_eq(sb.csum_offset, 0);
	ck_assert_uint_eq(sb.data_offset, 1 * MiB);
	fm_sb_encode(&sb, buf);
	ck_assert(fm_test_is_zero(buf + OFF_CSUM_OFFSET, 24));
	/* The zero-block constant is what crc32c says. */
	{
		static const uint8_t zero[4096];

		ck_assert_uint_eq(fm_crc32c(0, zero, sizeof(zero)), FM_SB_CSUM_ZERO_BLOCK);
	}
}
END_TEST

static const struct csum_layout_case {
	uint64_t image, region;
	uint64_t csum_length, data_offset;
} csum_layout_cases[] = {
	{ 4096, 64 * MiB, 4096, 1 * MiB },                  /* one entry, one page */
	{ 4 * MiB, 64 * MiB, 4096, 1 * MiB },               /* 1024 entries */
	{ 4 * MiB + 4096, 64 * MiB, 8192, 1 * MiB },
	{ 1 * GiB, 64 * MiB, 1 * MiB, 2 * MiB },            /* 8 KiB + 1 MiB */
	{ 1016 * MiB, 64 * MiB, 1 * MiB - 8 * KiB, 1 * MiB },  /* fits exactly */
	{ 1016 * MiB + 4096, 64 * MiB, 1 * MiB - 4 * KiB, 2 * MiB },
	{ 4 * TiB, 64 * MiB, 4 * GiB, 4 * GiB + 1 * MiB },
};

START_TEST(csum_layout_sizes)
{
	const struct csum_layout_case *c = &csum_layout_cases[_i];
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, c->image, c->region, FM_SB_FEAT_CHECKSUMS), 0);
	ck_assert_uint_eq(sb.csum_offset, sb.bitmap_offset + sb.bitmap_length);
	ck_assert_msg(sb.csum_length == c->csum_length, "image %" PRIu64 ": csum_length %" PRIu64
		      " want %" PRIu64, c->image, sb.csum_length, c->csum_length);
	ck_assert_uint_eq(fm_sb_csum_bytes(c->image), c->csum_length);
	ck_assert_msg(sb.data_offset == c->data_offset, "image %" PRIu64 ": data_offset %" PRIu64
		      " want %" PRIu64, c->image, sb.data_offset, c->data_offset);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);
	/* An unknown feature is not laid out. */
	ck_assert_int_eq(fm_sb_layout_features(&sb, c->image, c->region, FM_SB_FEAT_GENERATIONS),
			 -EINVAL);
	ck_assert_int_eq(fm_sb_layout_features(&sb, c->image, c->region, 1u << 3), -EINVAL);
}
END_TEST

static void csum_bad_algo(struct fm_sb *sb) { sb->csum_algo = 2; }
static void csum_bad_algo0(struct fm_sb *sb) { sb->csum_algo = 0; }
static void csum_bad_block(struct fm_sb *sb) { sb->csum_block_size = 8192; }
static void csum_bad_in_bitmap(struct fm_sb *sb) { sb->csum_offset = 4096; }
static void csum_bad_unaligned(struct fm_sb *sb) { sb->csum_offset = 8192 + 512; }
static void csum_bad_short(struct fm_sb *sb) { sb->csum_length -= 4096; }
static void csum_bad_len_unaligned(struct fm_sb *sb) { sb->csum_length += 4; }
static void csum_bad_data_overlap(struct fm_sb *sb) { sb->data_offset -= 1 * MiB; }
static void csum_bad_huge(struct fm_sb *sb) { sb->csum_length = UINT64_MAX - 4095; }

static const struct bad_case csum_bad_cases[] = {
	{ "algorithm 2", csum_bad_algo, "checksum algorithm 2 is unknown" },
	{ "algorithm 0", csum_bad_algo0, "checksum algorithm 0 is unknown" },
	{ "block 8192", csum_bad_block, "checksum block size 8192 is not 4096" },
	{ "area in the bitmap", csum_bad_in_bitmap,
	  "checksum area offset 4096 is not a 4 KiB boundary after the bitmap (which ends at 8192)" },
	{ "area unaligned", csum_bad_unaligned, "checksum area offset 8704 is not" },
	{ "area short", csum_bad_short,
	  "checksum area length 67104768 is not a multiple of 4096 of at least 67108864" },
	{ "length unaligned", csum_bad_len_unaligned, "checksum area length 67108868 is not" },
	{ "data overlaps", csum_bad_data_overlap,
	  "data offset 67108864 overlaps the checksum area (which ends at 67117056)" },
	{ "length huge", csum_bad_huge, "is impossibly large" },
};

/* Each inconsistency of the checksum fields is refused by name; the same
 * superblock without the feature is fine (the fields are not read). */
START_TEST(csum_decode_inconsistent)
{
	const struct bad_case *c = &csum_bad_cases[_i];
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *msg = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, 64 * GiB, 64 * MiB, FM_SB_FEAT_CHECKSUMS), 0);
	c->mutate(&sb);
	fm_sb_encode(&sb, buf);
	msg = decode_expect_fail(buf, -EUCLEAN, c->what);
	ck_assert_msg(strstr(msg, c->message), "%s: message '%s' does not say '%s'", c->what,
		      msg, c->message);
	sb.features &= ~(uint32_t)FM_SB_FEAT_CHECKSUMS;
	sb.data_offset = 65 * MiB;
	fm_sb_encode(&sb, buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	ck_assert_uint_eq(out.csum_offset, 0);
	ck_assert_uint_eq(out.csum_algo, 0);
}
END_TEST

/*----------------------------------------------------------------*/
/* The written-region map (FM_SB_FEAT_WRITTEN_MAP): 1744 u64 offset, 1752
 * u64 length, the map after the checksum area, as long as the bitmap. */

START_TEST(written_fields_offsets)
{
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, 64 * GiB, 64 * MiB,
					       FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP), 0);
	memset(buf, 0xff, sizeof(buf));
	fm_sb_encode(&sb, buf);
	ck_assert_uint_eq(le32_at(buf, OFF_FEATURES),
			  FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP);
	/* 4 KiB superblock, 4 KiB bitmap, 64 MiB of checksums, 4 KiB map. */
	ck_assert_uint_eq(le64_at(buf, OFF_CSUM_OFFSET), 8192);
	ck_assert_uint_eq(le64_at(buf, OFF_WRITTEN_OFFSET), 8192 + 64 * MiB);
	ck_assert_uint_eq(le64_at(buf, OFF_WRITTEN_LENGTH), 4096);
	ck_assert_uint_eq(le64_at(buf, OFF_DATA_OFFSET), 65 * MiB);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);

	/* The map alone follows the bitmap. */
	ck_assert_int_eq(fm_sb_layout_features(&sb, 64 * GiB, 64 * MiB, FM_SB_FEAT_WRITTEN_MAP),
			 0);
	ck_assert_uint_eq(sb.features & (FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP),
			  FM_SB_FEAT_WRITTEN_MAP);
	ck_assert_uint_eq(sb.csum_offset, 0);
	ck_assert_uint_eq(sb.written_offset, 8192);
	ck_assert_uint_eq(sb.written_length, sb.bitmap_length);
	ck_assert_uint_eq(sb.data_offset, 1 * MiB);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);

	/* fm_sb_layout() means no map: the bit and the fields go, and the
	 * bytes are written as zeroes (an older array: every region written). */
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * GiB, 64 * MiB), 0);
	ck_assert_uint_eq(sb.features & FM_SB_FEAT_WRITTEN_MAP, 0);
	ck_assert_uint_eq(sb.written_offset, 0);
	ck_assert_uint_eq(sb.written_length, 0);
	memset(buf, 0xff, sizeof(buf));
	fm_sb_encode(&sb, buf);
	ck_assert(fm_test_is_zero(buf + OFF_WRITTEN_OFFSET, 16));
}
END_TEST

static const struct written_layout_case {
	uint64_t image, region;
	uint32_t features;
	uint64_t written_offset, written_length, data_offset;
} written_layout_cases[] = {
	{ 4096, 64 * MiB, FM_SB_FEAT_WRITTEN_MAP, 8192, 4096, 1 * MiB },
	{ 1 * GiB, 1 * MiB, FM_SB_FEAT_WRITTEN_MAP, 8192, 4096, 1 * MiB },
	/* 2^20 regions: 128 KiB of bitmap, 128 KiB of map. */
	{ 1 * TiB, 1 * MiB, FM_SB_FEAT_WRITTEN_MAP, 4096 + 128 * KiB, 128 * KiB, 1 * MiB },
	/* Checksums that fit exactly in 1 MiB: the map moves the data. */
	{ 1016 * MiB, 64 * MiB, FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP, 1 * MiB, 4096,
	  2 * MiB },
	{ 1 * GiB, 64 * MiB, FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP,
	  8192 + 1 * MiB, 4096, 2 * MiB },
};

START_TEST(written_layout_sizes)
{
	const struct written_layout_case *c = &written_layout_cases[_i];
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	GError *err = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, c->image, c->region, c->features), 0);
	ck_assert_msg(sb.written_offset == c->written_offset && sb.written_length ==
		      c->written_length && sb.data_offset == c->data_offset,
		      "image %" PRIu64 ": map %" PRIu64 "+%" PRIu64 ", data %" PRIu64
		      "; want %" PRIu64 "+%" PRIu64 ", %" PRIu64, c->image, sb.written_offset,
		      sb.written_length, sb.data_offset, c->written_offset, c->written_length,
		      c->data_offset);
	/* One bit per region fits; nothing overlaps. */
	ck_assert_uint_ge(sb.written_length * 8, fm_sb_nr_regions(&sb));
	ck_assert_uint_ge(sb.written_offset, sb.bitmap_offset + sb.bitmap_length);
	if (sb.features & FM_SB_FEAT_CHECKSUMS)
		ck_assert_uint_ge(sb.written_offset, sb.csum_offset + sb.csum_length);
	ck_assert_uint_ge(sb.data_offset, sb.written_offset + sb.written_length);
	fm_sb_encode(&sb, buf);
	ck_assert_msg(fm_sb_decode(buf, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);
}
END_TEST

static void written_bad_in_bitmap(struct fm_sb *sb) { sb->written_offset = 4096; }
static void written_bad_in_csum(struct fm_sb *sb) { sb->written_offset -= 4096; }
static void written_bad_unaligned(struct fm_sb *sb) { sb->written_offset += 512; }
static void written_bad_short(struct fm_sb *sb) { sb->written_length = 0; }
static void written_bad_len_unaligned(struct fm_sb *sb) { sb->written_length += 8; }
/* Past the checksums, inside the map (the alignment is checked later). */
static void written_bad_data_overlap(struct fm_sb *sb) { sb->data_offset = sb->written_offset; }
static void written_bad_huge(struct fm_sb *sb) { sb->written_length = UINT64_MAX - 4095; }

static const struct bad_case written_bad_cases[] = {
	{ "map in the bitmap", written_bad_in_bitmap,
	  "written-region map offset 4096 is not a 4 KiB boundary after the bitmap and "
	  "checksum areas (which end at 67117056)" },
	{ "map in the checksums", written_bad_in_csum, "written-region map offset 67112960" },
	{ "map unaligned", written_bad_unaligned, "written-region map offset 67117568 is not" },
	{ "map empty", written_bad_short,
	  "written-region map length 0 is not a multiple of 4096 of at least 128 bytes" },
	{ "length unaligned", written_bad_len_unaligned, "written-region map length 4104" },
	{ "data overlaps", written_bad_data_overlap,
	  "data offset 67117056 overlaps the written-region map (which ends at 67121152)" },
	{ "length huge", written_bad_huge, "is impossibly large" },
};

/* Each inconsistency of the map's fields is refused by name (a map laid
 * over the checksums or the data would be damaged by their writes); the
 * same superblock without the feature is fine (the fields are not read). */
START_TEST(written_decode_inconsistent)
{
	const struct bad_case *c = &written_bad_cases[_i];
	struct fm_sb sb, out;
	uint8_t buf[FM_SB_SIZE];
	g_autofree char *msg = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout_features(&sb, 64 * GiB, 64 * MiB,
					       FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP), 0);
	c->mutate(&sb);
	fm_sb_encode(&sb, buf);
	msg = decode_expect_fail(buf, -EUCLEAN, c->what);
	ck_assert_msg(strstr(msg, c->message), "%s: message '%s' does not say '%s'", c->what,
		      msg, c->message);
	sb.features &= ~(uint32_t)FM_SB_FEAT_WRITTEN_MAP;
	sb.data_offset = 65 * MiB;
	fm_sb_encode(&sb, buf);
	ck_assert_int_eq(fm_sb_decode(buf, &out, NULL), 0);
	ck_assert_uint_eq(out.written_offset, 0);
	ck_assert_uint_eq(out.written_length, 0);
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase io: fm_sb_read/write/clear_bitmap through dmio */

/* A leg file for @sb's geometry with random contents everywhere. */
static char *make_leg_file(const char *name, const struct fm_sb *sb, uint8_t **ret_head,
			   size_t head_len, uint64_t seed)
{
	char *path = tc_path(name);
	uint8_t *head = g_malloc(head_len);
	struct fm_rng rng;

	fm_rng_seed(&rng, seed);
	fm_rng_fill(&rng, head, head_len);
	fm_test_create_file(path, fm_sb_leg_bytes(sb));
	fm_test_write_file(path, 0, head, head_len);
	*ret_head = head;
	return path;
}

static struct dmio_dev *open_dev(const char *path, bool direct)
{
	struct dmio_dev *dev = NULL;
	int r = dmio_dev_open(path, direct ? 0 : DMIO_DEV_NO_DIRECT, &dev);

	ck_assert_msg(r == 0, "dmio_dev_open %s: %s", path, g_strerror(-r));
	ck_assert_msg(dmio_dev_is_direct(dev) == direct, "%s: O_DIRECT is %d, wanted %d",
		      path, dmio_dev_is_direct(dev), direct);
	return dev;
}

/* _i: 0 O_DIRECT, 1 buffered. */
START_TEST(io_write_read_round_trip)
{
	bool direct = _i == 0;
	struct fm_sb sb, out;
	g_autofree uint8_t *head = NULL;
	g_autofree char *path = NULL;
	uint8_t want[FM_SB_SIZE], disk[FM_SB_SIZE];
	size_t head_len = 2 * MiB + 8192;
	g_autofree uint8_t *after = g_malloc(head_len);
	g_autoptr(dmio_dev) dev = NULL;
	GError *err = NULL;
	uint64_t t0, t1;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * MiB, 1 * MiB), 0);
	sb.utime = 5;
	path = make_leg_file("leg", &sb, &head, head_len, fm_test_seed_for("io_rt", _i));
	dev = open_dev(path, direct);

	/* The clock fm_sb_write() reads: time() is the kernel's coarse clock,
	 * up to a tick behind it, so it can still show the previous second. */
	t0 = (uint64_t)(g_get_real_time() / G_USEC_PER_SEC);
	ck_assert_int_eq(fm_sb_write(dev, &sb), 0);
	t1 = (uint64_t)(g_get_real_time() / G_USEC_PER_SEC);
	ck_assert_msg(sb.utime >= t0 && sb.utime <= t1, "utime %" PRIu64 " not in [%" PRIu64
		      ", %" PRIu64 "]", sb.utime, t0, t1);

	/* On disk: exactly the encoding, at offset 0, nothing else touched. */
	fm_sb_encode(&sb, want);
	fm_test_read_file(path, 0, after, head_len);
	memcpy(disk, after, FM_SB_SIZE);
	fm_assert_bytes_eq(disk, want, FM_SB_SIZE, "superblock on disk");
	fm_assert_bytes_eq(after + FM_SB_SIZE, head + FM_SB_SIZE, head_len - FM_SB_SIZE,
			   "bytes after the superblock");
	ck_assert_uint_eq(fm_test_file_size(path), fm_sb_leg_bytes(&sb));

	memset(&out, 0, sizeof(out));
	ck_assert_msg(fm_sb_read(dev, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);

	/* An update replaces it. */
	sb.events++;
	sb.legs[0].state = FM_LEG_FAULTY;
	sb.state_flags = 0;
	ck_assert_int_eq(fm_sb_write(dev, &sb), 0);
	ck_assert_msg(fm_sb_read(dev, &out, &err) == 0, "%s", err ? err->message : "");
	assert_sb_eq(&out, &sb);
	ck_assert_uint_eq(out.events, 8);
	ck_assert_uint_eq(out.legs[0].state, FM_LEG_FAULTY);

	/* A second device on the same file sees it too. */
	{
		g_autoptr(dmio_dev) dev2 = open_dev(path, direct);

		ck_assert_int_eq(fm_sb_read(dev2, &out, NULL), 0);
		assert_sb_eq(&out, &sb);
	}
}
END_TEST

START_TEST(io_write_refuses_invalid)
{
	struct fm_sb sb, before;
	g_autofree uint8_t *head = NULL;
	g_autofree char *path = NULL;
	uint8_t disk[FM_SB_SIZE];
	g_autoptr(dmio_dev) dev = NULL;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * MiB, 1 * MiB), 0);
	path = make_leg_file("leg", &sb, &head, FM_SB_SIZE, fm_test_seed_for("io_inv", 0));
	dev = open_dev(path, true);

	sb.nr_legs = 0;
	memcpy(&before, &sb, sizeof(sb));
	ck_assert_int_eq(fm_sb_write(dev, &sb), -EINVAL);
	assert_sb_eq(&sb, &before); /* utime untouched */
	sb.nr_legs = 3;
	/* An assembly record without its feature would be lost on disk. */
	sb.features = 0;
	sb.last_in_sync[1] = 1;
	ck_assert_int_eq(fm_sb_write(dev, &sb), -EINVAL);
	sb.last_in_sync[1] = 0;
	sb.version_major = 2;
	ck_assert_int_eq(fm_sb_write(dev, &sb), -EINVAL);
	fm_test_read_file(path, 0, disk, FM_SB_SIZE);
	fm_assert_bytes_eq(disk, head, FM_SB_SIZE, "nothing written");
}
END_TEST

START_TEST(io_read_errors)
{
	struct fm_sb sb, out;
	g_autofree char *empty = tc_path("zero"), *tiny = tc_path("tiny");
	g_autofree char *bad = tc_path("bad"), *shrunk = tc_path("shrunk");
	g_autoptr(dmio_dev) d_empty = NULL, d_tiny = NULL, d_bad = NULL, d_shrunk = NULL;
	GError *err = NULL;
	uint8_t byte;

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * MiB, 1 * MiB), 0);

	/* Zeroes: not a leg. */
	fm_test_create_file(empty, 2 * MiB);
	d_empty = open_dev(empty, true);
	ck_assert_int_eq(fm_sb_read(d_empty, &out, &err), -ENODATA);
	ck_assert(err && err->domain == FM_SB_ERROR && err->code == ENODATA);
	ck_assert_msg(strstr(err->message, empty) && strstr(err->message, "not a fusemirror leg"),
		      "%s", err->message);
	g_clear_error(&err);

	/* Smaller than a superblock. */
	fm_test_create_file(tiny, 512);
	d_tiny = open_dev(tiny, false);
	ck_assert_int_eq(fm_sb_read(d_tiny, &out, &err), -ENODATA);
	ck_assert_msg(strstr(err->message, tiny), "%s", err->message);
	g_clear_error(&err);

	/* Damaged: one byte changed behind the writer's back. */
	fm_test_create_file(bad, fm_sb_leg_bytes(&sb));
	d_bad = open_dev(bad, true);
	ck_assert_int_eq(fm_sb_write(d_bad, &sb), 0);
	fm_test_read_file(bad, 1000, &byte, 1);
	byte ^= 0x40;
	fm_test_write_file(bad, 1000, &byte, 1);
	ck_assert_int_eq(fm_sb_read(d_bad, &out, &err), -EBADMSG);
	ck_assert(err->code == EBADMSG);
	ck_assert_msg(strstr(err->message, bad) && strstr(err->message, "checksum"), "%s",
		      err->message);
	g_clear_error(&err);

	/* The read itself fails: the file shrank under an open device, so the
	 * read ends early (a per-region failure in dmio). */
	fm_test_create_file(shrunk, 1 * MiB);
	d_shrunk = open_dev(shrunk, false);
	ck_assert_int_eq(truncate(shrunk, 0), 0);
	ck_assert_int_eq(fm_sb_read(d_shrunk, &out, &err), -EIO);
	ck_assert_msg(err && err->code == EIO && strstr(err->message, "cannot read") &&
		      strstr(err->message, shrunk), "%s", err ? err->message : "no message");
	g_clear_error(&err);
}
END_TEST

START_TEST(io_clear_bitmap)
{
	bool direct = _i == 0;
	struct fm_sb sb;
	g_autofree uint8_t *head = NULL;
	g_autofree char *path = NULL;
	g_autoptr(dmio_dev) dev = NULL;
	size_t head_len;
	g_autofree uint8_t *after = NULL;
	uint8_t want[FM_SB_SIZE];

	make_basic_sb(&sb);
	/* 65536 regions: an 8 KiB bitmap, then a gap, data at 1 MiB. */
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * GiB, 1 * MiB), 0);
	ck_assert_uint_eq(sb.bitmap_length, 8192);
	head_len = (size_t)(sb.data_offset + 64 * KiB);
	after = g_malloc(head_len);
	path = make_leg_file("leg", &sb, &head, head_len, fm_test_seed_for("clear", _i));
	dev = open_dev(path, direct);
	ck_assert_int_eq(fm_sb_write(dev, &sb), 0);
	fm_sb_encode(&sb, want);

	ck_assert_int_eq(fm_sb_clear_bitmap(dev, &sb), 0);
	fm_test_read_file(path, 0, after, head_len);
	fm_assert_bytes_eq(after, want, FM_SB_SIZE, "superblock");
	ck_assert_msg(fm_test_is_zero(after + sb.bitmap_offset, sb.bitmap_length),
		      "bitmap area is zero");
	fm_assert_bytes_eq(after + FM_SB_SIZE + sb.bitmap_length,
			   head + FM_SB_SIZE + sb.bitmap_length,
			   head_len - FM_SB_SIZE - sb.bitmap_length,
			   "bytes after the bitmap (gap and data)");
	ck_assert_uint_eq(fm_test_file_size(path), fm_sb_leg_bytes(&sb));

	/* An inconsistent superblock zeroes nothing. */
	{
		uint8_t b[16];

		sb.bitmap_offset = 0;
		ck_assert_int_eq(fm_sb_clear_bitmap(dev, &sb), -EINVAL);
		fm_test_read_file(path, 0, b, sizeof(b));
		fm_assert_bytes_eq(b, want, sizeof(b), "superblock after the refusal");
	}
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase uuid */

START_TEST(uuid_generate_bits_and_uniqueness)
{
	enum { N = 2000 };
	g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	uint8_t any[16] = { 0 }, all[16];

	memset(all, 0xff, sizeof(all));
	for (unsigned n = 0; n < N; n++) {
		uint8_t u[16];
		char text[37];

		memset(u, 0, sizeof(u));
		fm_uuid_generate(u);
		ck_assert_msg((u[6] >> 4) == 4, "version nibble %x", u[6] >> 4);
		ck_assert_msg((u[8] & 0xc0) == 0x80, "variant bits %02x", u[8] & 0xc0);
		for (unsigned i = 0; i < 16; i++) {
			any[i] |= u[i];
			all[i] &= u[i];
		}
		fm_uuid_unparse(u, text);
		ck_assert_msg(g_uuid_string_is_valid(text), "%s", text);
		ck_assert_msg(g_hash_table_add(seen, g_strdup(text)), "duplicate %s", text);
	}
	/* Every bit that is not fixed by version and variant came out both
	 * ways: all 16 bytes are random, not just some of them. */
	for (unsigned i = 0; i < 16; i++) {
		uint8_t fixed = i == 6 ? 0xf0 : i == 8 ? 0xc0 : 0;

		ck_assert_msg((any[i] | fixed) == 0xff, "byte %u: bits never set: %02x", i,
			      (uint8_t)~(any[i] | fixed));
		ck_assert_msg((all[i] & ~fixed) == 0, "byte %u: bits always set: %02x", i,
			      all[i] & ~fixed);
	}
}
END_TEST

START_TEST(uuid_unparse_format)
{
	static const uint8_t u[16] = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
				       0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
	static const uint8_t z[16] = { 0 };
	char buf[40];

	memset(buf, 'X', sizeof(buf));
	ck_assert_ptr_eq(fm_uuid_unparse(u, buf), buf);
	ck_assert_str_eq(buf, "00112233-4455-6677-8899-aabbccddeeff");
	ck_assert_uint_eq(strlen(buf), 36);
	ck_assert_int_eq(buf[37], 'X'); /* 37 bytes written, no more */
	ck_assert_str_eq(fm_uuid_unparse(z, buf), "00000000-0000-0000-0000-000000000000");
}
END_TEST

/*----------------------------------------------------------------*/
/* TCase probe: fm_sb_probe_signature */

/* Run a tool with up to 4 arguments; fail the test if it fails. */
static void run_tool(const char *tool, const char *a1, const char *a2, const char *a3,
		     const char *a4)
{
	g_autofree char *prog = fm_test_find_program(tool);
	char *argv[] = { prog, (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL };
	char *msg = NULL;

	if (fm_test_run(argv, NULL, &msg) < 0) {
		char copy[512];

		g_strlcpy(copy, msg, sizeof(copy));
		g_free(msg);
		ck_abort_msg("%s", copy);
	}
}

/* Write a partition table with sfdisk from a script on its stdin. */
static void run_sfdisk(const char *path, const char *script)
{
	g_autofree char *sfdisk = fm_test_find_program("sfdisk");
	g_autofree char *cmd = g_strdup_printf("printf '%s' | \"$0\" -q --no-reread \"$1\"",
					       script);

	run_tool("sh", "-c", cmd, sfdisk, path);
}

/* Probe @path through a fresh fd opened with @flags; returns what was found
 * (g_free; NULL for nothing).  Fails the test on an error. */
static char *probe_path(const char *path, int flags)
{
	char sentinel = 0;
	char *what = &sentinel;
	int fd = open(path, flags | O_CLOEXEC);
	int r;

	ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
	r = fm_sb_probe_signature(fd, &what);
	close(fd);
	ck_assert_msg(r == 0, "probe %s: %d (%s)", path, r, g_strerror(-r));
	ck_assert_msg(what != &sentinel, "probe %s: *ret_what not set", path);
	return what;
}

#define ASSERT_PROBE(path, flags, want)                                           \
	do {                                                                      \
		g_autofree char *got_ = probe_path((path), (flags));              \
		const char *want_ = (want);                                       \
		ck_assert_msg(g_strcmp0(got_, want_) == 0, "%s: found '%s', want '%s'", \
			      (path), got_ ? got_ : "(nothing)",                  \
			      want_ ? want_ : "(nothing)");                       \
	} while (0)

START_TEST(probe_nothing)
{
	g_autofree char *empty = tc_path("empty"), *tiny = tc_path("tiny");
	g_autofree char *small = tc_path("small"), *zeroes = tc_path("zeroes");
	g_autofree char *junk = tc_path("junk");
	static const char hello[] = "hello";
	uint8_t buf[4096];
	struct fm_rng rng;

	fm_test_create_file(empty, 0);
	ASSERT_PROBE(empty, O_RDONLY, NULL);
	fm_test_create_file(tiny, 0);
	fm_test_write_file(tiny, 0, hello, 5);
	ASSERT_PROBE(tiny, O_RDONLY, NULL);
	fm_test_create_file(small, 4095);
	ASSERT_PROBE(small, O_RDONLY, NULL);
	fm_test_create_file(zeroes, 8 * MiB);
	ASSERT_PROBE(zeroes, O_RDONLY, NULL);
	/* Random bytes (minus anything at the first 8 bytes that could look
	 * like a magic of ours) are no signature either. */
	fm_rng_seed(&rng, 42);
	fm_rng_fill(&rng, buf, sizeof(buf));
	fm_test_create_file(junk, 1 * MiB);
	fm_test_write_file(junk, 0, buf, sizeof(buf));
	ASSERT_PROBE(junk, O_RDONLY, NULL);
}
END_TEST

START_TEST(probe_ext4)
{
	g_autofree char *path = tc_path("ext4");

	fm_test_create_file(path, 16 * MiB);
	run_tool("mkfs.ext4", "-q", "-F", path, NULL);
	ASSERT_PROBE(path, O_RDONLY, "ext4 file system");
	/* An O_DIRECT or write-only fd works as well. */
	ASSERT_PROBE(path, O_RDONLY | O_DIRECT, "ext4 file system");
	ASSERT_PROBE(path, O_WRONLY, "ext4 file system");
}
END_TEST

START_TEST(probe_partition_tables)
{
	g_autofree char *dos = tc_path("dos"), *gpt = tc_path("gpt");

	fm_test_create_file(dos, 8 * MiB);
	run_sfdisk(dos, "label: dos\\nstart=2048, type=83\\n");
	ASSERT_PROBE(dos, O_RDONLY, "dos partition table");
	fm_test_create_file(gpt, 8 * MiB);
	run_sfdisk(gpt, "label: gpt\\nstart=2048, size=4096\\n");
	ASSERT_PROBE(gpt, O_RDONLY, "gpt partition table");
}
END_TEST

START_TEST(probe_swap)
{
	g_autofree char *path = tc_path("swap");

	fm_test_create_file(path, 4 * MiB);
	run_tool("mkswap", "-q", path, NULL, NULL);
	ASSERT_PROBE(path, O_RDONLY, "swap space");
}
END_TEST

/* LVM2's own label checksum (lib/misc/crc.c): a nibble-wise CRC-32. */
static uint32_t lvm_crc(const uint8_t *p, size_t len)
{
	static const uint32_t tab[16] = {
		0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
		0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
		0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
	};
	uint32_t crc = 0xf597a6cf;

	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		crc = (crc >> 4) ^ tab[crc & 0xf];
		crc = (crc >> 4) ^ tab[crc & 0xf];
	}
	return crc;
}

/* A RAID/volume member wins over the file system it covers: here an LVM2
 * physical-volume label (sector 1) on top of an ext4 file system. */
START_TEST(probe_lvm_member)
{
	g_autofree char *path = tc_path("lvm");
	uint8_t sec[512] = { 0 };

	fm_test_create_file(path, 16 * MiB);
	run_tool("mkfs.ext4", "-q", "-F", path, NULL);
	memcpy(sec, "LABELONE", 8);
	sec[8] = 1;                     /* sector number of the label */
	set_le32(sec, 20, 32);          /* offset of the PV header */
	memcpy(sec + 24, "LVM2 001", 8);
	set_le32(sec, 16, lvm_crc(sec + 20, sizeof(sec) - 20));
	fm_test_write_file(path, 512, sec, sizeof(sec));
	ASSERT_PROBE(path, O_RDONLY, "LVM2_member (raid/volume member)");
}
END_TEST

/* Two file systems claim the device: libblkid's "ambivalent" result. */
START_TEST(probe_several_signatures)
{
	g_autofree char *path = tc_path("two");
	g_autofree char *what = NULL;
	static const uint8_t bfs_magic[4] = { 0xce, 0xfa, 0xad, 0x1b };

	fm_test_create_file(path, 16 * MiB);
	run_tool("mkfs.ext4", "-q", "-F", path, NULL);
	fm_test_write_file(path, 0, bfs_magic, sizeof(bfs_magic));
	what = probe_path(path, O_RDONLY);
	ck_assert_msg(what && g_str_has_prefix(what, "several signatures"), "found '%s'",
		      what ? what : "(nothing)");
	ck_assert_msg(strstr(what, "ext4") && strstr(what, "bfs"), "found '%s'", what);
}
END_TEST

/* Write @sb to @path with fm_sb_write (creating the file when @create). */
static void write_leg(const char *path, struct fm_sb *sb, bool direct, bool create)
{
	g_autoptr(dmio_dev) dev = NULL;

	if (create)
		fm_test_create_file(path, fm_sb_leg_bytes(sb));
	dev = open_dev(path, direct);
	ck_assert_int_eq(fm_sb_write(dev, sb), 0);
}

START_TEST(probe_fusemirror_leg)
{
	g_autofree char *path = tc_path("leg"), *ext = tc_path("leg-on-ext4");
	g_autofree char *want = NULL;
	struct fm_sb sb;
	char uuid[37];

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * MiB, 1 * MiB), 0);
	fm_uuid_generate(sb.array_uuid);
	want = g_strdup_printf("fusemirror leg (array %s)", fm_uuid_unparse(sb.array_uuid, uuid));
	write_leg(path, &sb, true, true);
	ASSERT_PROBE(path, O_RDONLY, want);
	ASSERT_PROBE(path, O_RDONLY | O_DIRECT, want);

	/* A leg is a leg, whatever file system its image holds. */
	fm_test_create_file(ext, fm_sb_leg_bytes(&sb));
	run_tool("mkfs.ext4", "-q", "-F", "-Eoffset=1048576", ext);
	write_leg(ext, &sb, false, false);
	ASSERT_PROBE(ext, O_RDONLY, want);
}
END_TEST

START_TEST(probe_damaged_fusemirror)
{
	g_autofree char *path = tc_path("leg"), *newer = tc_path("newer");
	g_autofree char *odd = tc_path("odd"), *trunc = tc_path("trunc");
	g_autofree char *want_newer = NULL, *got = NULL;
	uint8_t buf[FM_SB_SIZE];
	struct fm_sb sb;
	char uuid[37];

	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 64 * MiB, 1 * MiB), 0);
	write_leg(path, &sb, true, true);
	fm_test_read_file(path, 0, buf, sizeof(buf));
	buf[2000] ^= 0x01;              /* in the reserved area: only the crc sees it */
	fm_test_write_file(path, 0, buf, sizeof(buf));
	ASSERT_PROBE(path, O_RDONLY, "damaged fusemirror superblock");

	/* A valid superblock of a newer major version is still a leg. */
	sb.version_major = 2;
	fm_sb_encode(&sb, buf);
	fm_test_create_file(newer, 2 * MiB);
	fm_test_write_file(newer, 0, buf, sizeof(buf));
	want_newer = g_strdup_printf("fusemirror leg (array %s, format version 2)",
				     fm_uuid_unparse(sb.array_uuid, uuid));
	ASSERT_PROBE(newer, O_RDONLY, want_newer);

	/* Valid crc, inconsistent fields. */
	sb.version_major = FM_SB_VERSION_MAJOR;
	sb.nr_legs = 0;
	fm_sb_encode(&sb, buf);
	fm_test_create_file(odd, 2 * MiB);
	fm_test_write_file(odd, 0, buf, sizeof(buf));
	got = probe_path(odd, O_RDONLY);
	ck_assert_msg(got && g_str_has_prefix(got, "fusemirror leg with an inconsistent "
						   "superblock (array a0a1a2a3-") &&
		      strstr(got, "number of legs 0"), "found '%s'", got ? got : "(nothing)");

	/* The magic, and the file ends. */
	fm_test_create_file(trunc, 0);
	fm_test_write_file(trunc, 0, buf, 100);
	ASSERT_PROBE(trunc, O_RDONLY, "damaged fusemirror superblock (truncated)");
}
END_TEST

START_TEST(probe_not_a_device)
{
	char *what = NULL;
	int fd = open(tc_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fm_sb_probe_signature(fd, &what), -EINVAL);
	close(fd);
	ck_assert_int_eq(fm_sb_probe_signature(-1, &what), -EBADF);
	ck_assert_ptr_null(what);
}
END_TEST

/* Through a block device (a loop device over each file): libblkid sizes
 * it with an ioctl, and we read it through its page cache. */
START_TEST(probe_block_device)
{
	g_autofree char *leg = tc_path("leg"), *ext = tc_path("ext4");
	g_autofree char *want = NULL, *msg = NULL;
	struct fm_test_loop lo_leg = { .hold_fd = -1 }, lo_ext = { .hold_fd = -1 };
	struct fm_sb sb;
	char uuid[37];
	char *m = NULL;
	int r1, r2;

	ck_assert_msg(geteuid() == 0, "this test needs root (loop devices)");
	make_basic_sb(&sb);
	ck_assert_int_eq(fm_sb_layout(&sb, 4 * MiB, 1 * MiB), 0);
	write_leg(leg, &sb, true, true);
	want = g_strdup_printf("fusemirror leg (array %s)", fm_uuid_unparse(sb.array_uuid, uuid));
	fm_test_create_file(ext, 16 * MiB);
	run_tool("mkfs.ext4", "-q", "-F", ext, NULL);

	ck_assert_msg(fm_test_loop_attach(leg, 512, &lo_leg, &m) == 0, "%s", m);
	if (fm_test_loop_attach(ext, 4096, &lo_ext, &m) < 0) {
		msg = m;
		fm_test_loop_detach(&lo_leg, &m);
		ck_abort_msg("%s", msg);
	}
	{
		g_autofree char *got_leg = probe_path(lo_leg.dev, O_RDONLY);
		g_autofree char *got_ext = probe_path(lo_ext.dev, O_RDONLY | O_DIRECT);

		r1 = fm_test_loop_detach(&lo_leg, &m);
		g_free(m);
		m = NULL;
		r2 = fm_test_loop_detach(&lo_ext, &m);
		g_free(m);
		ck_assert_msg(g_strcmp0(got_leg, want) == 0, "leg: '%s'", got_leg);
		ck_assert_msg(g_strcmp0(got_ext, "ext4 file system") == 0, "ext4: '%s'", got_ext);
		ck_assert_int_eq(r1, 0);
		ck_assert_int_eq(r2, 0);
	}
}
END_TEST

/*----------------------------------------------------------------*/

static TCase *tcase_new(Suite *s, const char *name, bool with_dir)
{
	TCase *tc = tcase_create(name);

	if (with_dir)
		tcase_add_unchecked_fixture(tc, tc_dir_setup, tc_dir_teardown);
	tcase_add_checked_fixture(tc, NULL, engine_teardown);
	fm_test_tcase_timeout(tc, 300);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *superblock_suite(void)
{
	Suite *s = suite_create("superblock");
	TCase *tc;

	tc = tcase_new(s, "encode", false);
	tcase_add_test(tc, encode_decode_round_trip_random);
	tcase_add_test(tc, encode_byte_offsets);
	tcase_add_test(tc, encode_name_nul_padded);
	tcase_add_test(tc, encode_assembly_records);

	tc = tcase_new(s, "integrity", false);
	tcase_add_test(tc, decode_flipped_bit_anywhere);
	tcase_add_test(tc, decode_wrong_magic);
	tcase_add_test(tc, decode_versions);
	tcase_add_test(tc, decode_ignores_reserved_bytes);
	tcase_add_test(tc, decode_refuses_unknown_features);

	tc = tcase_new(s, "consistency", false);
	tcase_add_loop_test(tc, decode_inconsistent_is_euclean, 0, (int)G_N_ELEMENTS(bad_cases));
	tcase_add_test(tc, decode_leg_uuid_message_names_both);
	tcase_add_test(tc, decode_accepts_edges);

	tc = tcase_new(s, "layout", false);
	tcase_add_loop_test(tc, layout_sizes, 0, (int)G_N_ELEMENTS(layout_cases));
	tcase_add_test(tc, csum_fields_offsets);
	tcase_add_loop_test(tc, csum_layout_sizes, 0, (int)G_N_ELEMENTS(csum_layout_cases));
	tcase_add_loop_test(tc, csum_decode_inconsistent, 0, (int)G_N_ELEMENTS(csum_bad_cases));
	tcase_add_test(tc, written_fields_offsets);
	tcase_add_loop_test(tc, written_layout_sizes, 0, (int)G_N_ELEMENTS(written_layout_cases));
	tcase_add_loop_test(tc, written_decode_inconsistent, 0,
			    (int)G_N_ELEMENTS(written_bad_cases));
	tcase_add_test(tc, layout_rejects);

	tc = tcase_new(s, "io", true);
	tcase_add_loop_test(tc, io_write_read_round_trip, 0, 2);
	tcase_add_test(tc, io_write_refuses_invalid);
	tcase_add_test(tc, io_read_errors);
	tcase_add_loop_test(tc, io_clear_bitmap, 0, 2);

	tc = tcase_new(s, "uuid", false);
	tcase_add_test(tc, uuid_generate_bits_and_uniqueness);
	tcase_add_test(tc, uuid_unparse_format);

	tc = tcase_new(s, "probe", true);
	tcase_add_test(tc, probe_nothing);
	tcase_add_test(tc, probe_ext4);
	tcase_add_test(tc, probe_partition_tables);
	tcase_add_test(tc, probe_swap);
	tcase_add_test(tc, probe_lvm_member);
	tcase_add_test(tc, probe_several_signatures);
	tcase_add_test(tc, probe_fusemirror_leg);
	tcase_add_test(tc, probe_damaged_fusemirror);
	tcase_add_test(tc, probe_not_a_device);

	tc = tcase_new(s, "probe-blockdev", true);
	tcase_add_test(tc, probe_block_device);
	return s;
}

int main(void)
{
	return fm_test_main(superblock_suite());
}
