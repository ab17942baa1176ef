/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The superblock of a leg: encoding, decoding and validation, synchronous
 * read/write through dmio, and probing a device for existing signatures.
 *
 * Invariants:
 *   - The on-disk form is produced and parsed field by field with the
 *     little-endian helpers below, at the offsets of the SB_OFF_* table;
 *     no struct is ever copied to or from disk, so the host's endianness,
 *     padding and struct layout never leak into the format.
 *   - Every superblock fm_sb_decode() accepts has passed sb_check(), and
 *     fm_sb_write() refuses to write one that would not (so a leg never
 *     receives a superblock that its own reader rejects).
 *   - Reserved bytes (the tail 1232..4091 but for the fields of known
 *     features and the recovery flags) are written as zeroes and ignored
 *     when read: a newer minor version may use them.  Feature bits this
 *     build does not know are refused (FM_SB_FEAT_ALL), and so are unknown
 *     leg flags and recovery flags.
 *   - Buffers handed to dmio are FM_SB_SIZE bytes, 4096-aligned, so that
 *     O_DIRECT legs never need a bounce buffer.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <blkid/blkid.h>
#include <glib.h>

#include "fusemirror/common.h"
#include "fusemirror/dmio.h"
#include "fusemirror/superblock.h"

/* Byte offsets of the on-disk superblock (doc: include/fusemirror/superblock.h). */
enum {
	SB_OFF_MAGIC = 0,
	SB_OFF_VERSION_MAJOR = 8,
	SB_OFF_VERSION_MINOR = 12,
	SB_OFF_ARRAY_UUID = 16,
	SB_OFF_LEG_UUID = 32,
	SB_OFF_LEG_INDEX = 48,
	SB_OFF_NR_LEGS = 52,
	SB_OFF_EVENTS = 56,
	SB_OFF_CTIME = 64,
	SB_OFF_UTIME = 72,
	SB_OFF_IMAGE_SIZE = 80,
	SB_OFF_DATA_OFFSET = 88,
	SB_OFF_REGION_SIZE = 96,
	SB_OFF_BITMAP_OFFSET = 104,
	SB_OFF_BITMAP_LENGTH = 112,
	SB_OFF_STATE_FLAGS = 120,
	SB_OFF_BLOCK_SIZE = 124,
	SB_OFF_RECOVERY_OFFSET = 128,
	SB_OFF_NAME = 136,
	SB_OFF_LEGS = 200,
	SB_LEG_SLOT = 32,               /* uuid[16] state u32 flags u32 events u64 */
	SB_LEG_OFF_UUID = 0,
	SB_LEG_OFF_STATE = 16,
	SB_LEG_OFF_FLAGS = 20,
	SB_LEG_OFF_EVENTS = 24,
	SB_OFF_FEATURES = SB_OFF_LEGS + FM_SB_MAX_LEGS * SB_LEG_SLOT, /* 1224 */
	SB_OFF_CSUM_OFFSET = 1488,      /* FM_SB_FEAT_CHECKSUMS */
	SB_OFF_CSUM_LENGTH = 1496,
	SB_OFF_CSUM_ALGO = 1504,
	SB_OFF_CSUM_BLOCK_SIZE = 1508,
	SB_OFF_LAST_IN_SYNC = 1232,     /* u64 [FM_SB_MAX_LEGS], FM_SB_FEAT_GENERATIONS */
	SB_OFF_WRITTEN_OFFSET = 1744,   /* FM_SB_FEAT_WRITTEN_MAP */
	SB_OFF_WRITTEN_LENGTH = 1752,
	SB_OFF_NR_BAD = 2000,           /* FM_SB_FEAT_BAD_BLOCKS */
	SB_OFF_BAD = 2008,              /* u64 [FM_SB_BAD_MAX] */
	SB_OFF_RECOVERY_FLAGS = 4056,   /* u32, enum fm_sb_recovery_flags */
	SB_OFF_CRC = FM_SB_SIZE - 4,    /* 4092 */
};

G_STATIC_ASSERT(SB_OFF_FEATURES == 1224);
G_STATIC_ASSERT(SB_OFF_CRC == 4092);
G_STATIC_ASSERT(SB_OFF_LAST_IN_SYNC + FM_SB_MAX_LEGS * 8 == 1488);
G_STATIC_ASSERT(SB_OFF_BAD + FM_SB_BAD_MAX * 8 == 4056);
G_STATIC_ASSERT(sizeof(FM_SB_MAGIC) - 1 == 8);
G_STATIC_ASSERT(sizeof(((struct fm_sb *)0)->name) == SB_OFF_LEGS - SB_OFF_NAME);

/* Bytes between the start of a leg and the end of its last byte must stay
 * addressable by off_t. */
#define SB_MAX_LEG_BYTES ((uint64_t)INT64_MAX)

G_DEFINE_QUARK(fm-sb-error-quark, fm_sb_error)

/*----------------------------------------------------------------*/
/* Little-endian access */

static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/*----------------------------------------------------------------*/
/* Aligned buffers for dmio */

static void *sb_buf_alloc(void)
{
	void *p = NULL;

	if (posix_memalign(&p, FM_PAGE_SIZE, FM_SB_SIZE) != 0)
		return NULL;
	memset(p, 0, FM_SB_SIZE);
	return p;
}

static void sb_buf_freep(void *pp)
{
	free(*(void **)pp);
}

#define sb_autobuf __attribute__((cleanup(sb_buf_freep))) uint8_t *

static void sb_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

#define sb_autofd __attribute__((cleanup(sb_closep))) int

/*----------------------------------------------------------------*/
/* Geometry */

static uint64_t div_round_up(uint64_t n, uint64_t d)
{
	return n / d + (n % d != 0);
}

static uint64_t nr_regions(uint64_t image_size, uint64_t region_size)
{
	return region_size ? div_round_up(image_size, region_size) : 0;
}

/* Bytes of bitmap that @image_size / @region_size need (whole 4 KiB). */
static uint64_t bitmap_bytes_needed(uint64_t image_size, uint64_t region_size)
{
	return div_round_up(nr_regions(image_size, region_size), 8);
}

static bool region_size_ok(uint64_t region_size)
{
	return fm_is_power_of_2(region_size) && region_size >= FM_SB_MIN_REGION_SIZE &&
	       region_size <= FM_SB_MAX_REGION_SIZE;
}

uint64_t fm_sb_csum_bytes(uint64_t image_size)
{
	/* 4 bytes per 4 KiB: at most 2^54 bytes, no overflow. */
	return FM_ALIGN_UP(div_round_up(image_size, FM_SB_CSUM_BLOCK_SIZE) *
			   FM_SB_CSUM_ENTRY_SIZE, (uint64_t)FM_PAGE_SIZE);
}

int fm_sb_layout_features(struct fm_sb *sb, uint64_t image_size, uint64_t region_size,
			  uint32_t features)
{
	uint64_t bitmap_length, data_offset, csum_offset, csum_length = 0;
	uint64_t written_offset, written_length = 0;
	const uint32_t known = FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP;

	if (image_size == 0 || !FM_IS_ALIGNED(image_size, (uint64_t)FM_PAGE_SIZE))
		return -EINVAL;
	if (!region_size_ok(region_size) || (features & ~known))
		return -EINVAL;
	/* image_size < 2^64 and region_size >= 2^20: at most 2^41 bytes. */
	bitmap_length = FM_ALIGN_UP(bitmap_bytes_needed(image_size, region_size),
				    (uint64_t)FM_PAGE_SIZE);
	csum_offset = FM_SB_SIZE + bitmap_length;
	if (features & FM_SB_FEAT_CHECKSUMS)
		csum_length = fm_sb_csum_bytes(image_size);
	/* The written-region map: one bit per region, like the bitmap. */
	written_offset = csum_offset + csum_length;
	if (features & FM_SB_FEAT_WRITTEN_MAP)
		written_length = bitmap_length;
	data_offset = FM_ALIGN_UP(written_offset + written_length, (uint64_t)FM_SB_DATA_ALIGN);
	if (image_size > SB_MAX_LEG_BYTES - data_offset)
		return -EINVAL;

	sb->image_size = image_size;
	sb->region_size = region_size;
	sb->bitmap_offset = FM_SB_SIZE;
	sb->bitmap_length = bitmap_length;
	sb->data_offset = data_offset;
	sb->features &= ~known;
	sb->csum_offset = sb->csum_length = 0;
	sb->csum_algo = sb->csum_block_size = 0;
	sb->written_offset = sb->written_length = 0;
	if (features & FM_SB_FEAT_WRITTEN_MAP) {
		sb->features |= FM_SB_FEAT_WRITTEN_MAP;
		sb->written_offset = written_offset;
		sb->written_length = written_length;
	}
	if (features & FM_SB_FEAT_CHECKSUMS) {
		sb->features |= FM_SB_FEAT_CHECKSUMS;
		sb->csum_offset = csum_offset;
		sb->csum_length = csum_length;
		sb->csum_algo = FM_SB_CSUM_CRC32C;
		sb->csum_block_size = FM_SB_CSUM_BLOCK_SIZE;
	}
	return 0;
}

int fm_sb_layout(struct fm_sb *sb, uint64_t image_size, uint64_t region_size)
{
	uint32_t f = sb->features;
	int r = fm_sb_layout_features(sb, image_size, region_size, 0);

	/* Other fields untouched: the area bits are not this call's business. */
	if (r == 0)
		sb->features = f & ~(uint32_t)(FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP);
	return r;
}

uint64_t fm_sb_leg_bytes(const struct fm_sb *sb)
{
	return sb->data_offset + sb->image_size;
}

uint64_t fm_sb_nr_regions(const struct fm_sb *sb)
{
	return nr_regions(sb->image_size, sb->region_size);
}

/*----------------------------------------------------------------*/
/* Validation */

static const char *leg_state_name(uint32_t state)
{
	switch (state) {
	case FM_LEG_EMPTY: return "empty";
	case FM_LEG_IN_SYNC: return "in-sync";
	case FM_LEG_FAULTY: return "faulty";
	case FM_LEG_REBUILDING: return "rebuilding";
	case FM_LEG_REMOVED: return "removed";
	}
	return NULL;
}

/* Set @err (when not NULL) to "superblock: <message>"; returns -@code. */
static int G_GNUC_PRINTF(3, 4) sb_fail(GError **err, int code, const char *fmt, ...)
{
	if (err) {
		g_autofree char *msg = NULL;
		va_list ap;

		va_start(ap, fmt);
		msg = g_strdup_vprintf(fmt, ap);
		va_end(ap);
		g_set_error(err, FM_SB_ERROR, code, "superblock: %s", msg);
	}
	return -code;
}

/*
 * Whether the fields of @sb agree with each other and with the format.
 * Version fields are not checked here (decode handles them before parsing).
 * Returns 0 or -EUCLEAN with a message in @err.
 */
/*
 * One optional metadata area of sb_check (checksum area, written-region
 * map): NAME at OFFSET for LENGTH bytes, at least NEED, on 4 KiB boundaries,
 * at or after AFTER (where WHAT_ENDS, "the bitmap (which ends" say, ends),
 * ending before the data.  0 or -EUCLEAN with *err naming the field.
 */
static int sb_check_area(const struct fm_sb *sb, const char *name, uint64_t offset,
			 uint64_t length, uint64_t need, uint64_t after, const char *what_ends,
			 GError **err)
{
	if (offset < after || !FM_IS_ALIGNED(offset, (uint64_t)FM_PAGE_SIZE))
		return sb_fail(err, EUCLEAN, "%s offset %" PRIu64 " is not a 4 KiB boundary "
			       "after %s at %" PRIu64 ")", name, offset, what_ends, after);
	if (length < need || !FM_IS_ALIGNED(length, (uint64_t)FM_PAGE_SIZE))
		return sb_fail(err, EUCLEAN, "%s length %" PRIu64 " is not a multiple of 4096 "
			       "of at least %" PRIu64 " bytes", name, length, need);
	if (length > UINT64_MAX - offset)
		return sb_fail(err, EUCLEAN, "%s length %" PRIu64 " is impossibly large", name,
			       length);
	if (sb->data_offset < offset + length)
		return sb_fail(err, EUCLEAN, "data offset %" PRIu64 " overlaps the %s (which "
			       "ends at %" PRIu64 ")", sb->data_offset, name, offset + length);
	return 0;
}

static int sb_check(const struct fm_sb *sb, GError **err)
{
	uint64_t need, bitmap_end;
	char a[37], b[37];

	if (sb->image_size == 0)
		return sb_fail(err, EUCLEAN, "image size is 0");
	if (!FM_IS_ALIGNED(sb->image_size, (uint64_t)FM_PAGE_SIZE))
		return sb_fail(err, EUCLEAN, "image size %" PRIu64 " is not a multiple of %u",
			       sb->image_size, FM_PAGE_SIZE);
	if (!fm_is_power_of_2(sb->region_size))
		return sb_fail(err, EUCLEAN, "region size %" PRIu64 " is not a power of two",
			       sb->region_size);
	if (sb->region_size < FM_SB_MIN_REGION_SIZE || sb->region_size > FM_SB_MAX_REGION_SIZE)
		return sb_fail(err, EUCLEAN,
			       "region size %" PRIu64 " is outside [%llu, %llu]",
			       sb->region_size, FM_SB_MIN_REGION_SIZE, FM_SB_MAX_REGION_SIZE);
	if (sb->bitmap_offset != FM_SB_SIZE)
		return sb_fail(err, EUCLEAN, "bitmap offset %" PRIu64 " is not %u",
			       sb->bitmap_offset, FM_SB_SIZE);
	need = bitmap_bytes_needed(sb->image_size, sb->region_size);
	if (sb->bitmap_length < need)
		return sb_fail(err, EUCLEAN,
			       "bitmap length %" PRIu64 " is too small for %" PRIu64
			       " regions (%" PRIu64 " bytes needed)",
			       sb->bitmap_length, fm_sb_nr_regions(sb), need);
	if (!FM_IS_ALIGNED(sb->bitmap_length, (uint64_t)FM_PAGE_SIZE))
		return sb_fail(err, EUCLEAN, "bitmap length %" PRIu64 " is not a multiple of %u",
			       sb->bitmap_length, FM_PAGE_SIZE);
	/* bitmap_offset is FM_SB_SIZE: this cannot wrap unless length is huge. */
	if (sb->bitmap_length > UINT64_MAX - sb->bitmap_offset)
		return sb_fail(err, EUCLEAN, "bitmap length %" PRIu64 " is impossibly large",
			       sb->bitmap_length);
	bitmap_end = sb->bitmap_offset + sb->bitmap_length;
	if (sb->features & FM_SB_FEAT_CHECKSUMS) {
		uint64_t csum_need = fm_sb_csum_bytes(sb->image_size);

		if (sb->csum_algo != FM_SB_CSUM_CRC32C)
			return sb_fail(err, EUCLEAN, "checksum algorithm %" PRIu32 " is unknown",
				       sb->csum_algo);
		if (sb->csum_block_size != FM_SB_CSUM_BLOCK_SIZE)
			return sb_fail(err, EUCLEAN, "checksum block size %" PRIu32 " is not %u",
				       sb->csum_block_size, FM_SB_CSUM_BLOCK_SIZE);
		if (sb_check_area(sb, "checksum area", sb->csum_offset, sb->csum_length,
				  csum_need, bitmap_end, "the bitmap (which ends", err))
			return -EUCLEAN;
	}
	if (sb->features & FM_SB_FEAT_WRITTEN_MAP) {
		uint64_t after = (sb->features & FM_SB_FEAT_CHECKSUMS) ?
				 sb->csum_offset + sb->csum_length : bitmap_end;

		if (sb_check_area(sb, "written-region map", sb->written_offset,
				  sb->written_length, need, after,
				  "the bitmap and checksum areas (which end", err))
			return -EUCLEAN;
	}
	if (sb->data_offset < bitmap_end)
		return sb_fail(err, EUCLEAN,
			       "data offset %" PRIu64 " overlaps the bitmap (which ends at %"
			       PRIu64 ")", sb->data_offset, bitmap_end);
	if (!FM_IS_ALIGNED(sb->data_offset, (uint64_t)FM_SB_DATA_ALIGN))
		return sb_fail(err, EUCLEAN, "data offset %" PRIu64 " is not a multiple of %u",
			       sb->data_offset, FM_SB_DATA_ALIGN);
	/* data_offset first: past the limit, the subtraction would wrap. */
	if (sb->data_offset > SB_MAX_LEG_BYTES ||
	    sb->image_size > SB_MAX_LEG_BYTES - sb->data_offset)
		return sb_fail(err, EUCLEAN,
			       "image of %" PRIu64 " bytes at data offset %" PRIu64
			       " ends beyond the largest file offset",
			       sb->image_size, sb->data_offset);
	if (sb->nr_legs < 1 || sb->nr_legs > FM_SB_MAX_LEGS)
		return sb_fail(err, EUCLEAN, "number of legs %" PRIu32 " is outside [1, %d]",
			       sb->nr_legs, FM_SB_MAX_LEGS);
	if (sb->recovery_flags & ~(uint32_t)FM_SB_RECOVERY_FLAGS_ALL)
		return sb_fail(err, EUCLEAN, "unknown recovery flags 0x%" PRIx32,
			       sb->recovery_flags & ~(uint32_t)FM_SB_RECOVERY_FLAGS_ALL);
	if (sb->leg_index >= sb->nr_legs)
		return sb_fail(err, EUCLEAN, "leg index %" PRIu32 " is not below the number of "
			       "legs %" PRIu32, sb->leg_index, sb->nr_legs);
	if (memcmp(sb->legs[sb->leg_index].uuid, sb->leg_uuid, 16) != 0)
		return sb_fail(err, EUCLEAN, "leg UUID %s differs from %s in leg slot %" PRIu32,
			       fm_uuid_unparse(sb->leg_uuid, a),
			       fm_uuid_unparse(sb->legs[sb->leg_index].uuid, b), sb->leg_index);
	if (!memchr(sb->name, '\0', sizeof(sb->name)))
		return sb_fail(err, EUCLEAN, "array name is not NUL-terminated within %zu bytes",
			       sizeof(sb->name));
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		if (!leg_state_name(sb->legs[i].state))
			return sb_fail(err, EUCLEAN, "leg slot %u has unknown state %" PRIu32,
				       i, sb->legs[i].state);
		if (sb->legs[i].flags & ~(uint32_t)FM_SB_LEG_FLAGS_ALL)
			return sb_fail(err, EUCLEAN, "leg slot %u has unknown flags 0x%" PRIx32,
				       i, sb->legs[i].flags & ~(uint32_t)FM_SB_LEG_FLAGS_ALL);
		if ((sb->legs[i].flags & FM_SB_LEG_REPLACEMENT) ?
		    FM_SB_LEG_REPLACED_SLOT(sb->legs[i].flags) >= sb->nr_legs ||
		    FM_SB_LEG_REPLACED_SLOT(sb->legs[i].flags) == i :
		    (sb->legs[i].flags & FM_SB_LEG_REPLACED_MASK) != 0)
			return sb_fail(err, EUCLEAN, "leg slot %u: bad replaced slot in flags "
				       "0x%" PRIx32, i, sb->legs[i].flags);
	}
	if (sb->features & ~(uint32_t)FM_SB_FEAT_ALL)
		return sb_fail(err, EUCLEAN, "features 0x%" PRIx32 " are unknown to this "
			       "program (written by a newer fusemirror)",
			       sb->features & ~(uint32_t)FM_SB_FEAT_ALL);
	if ((sb->features & FM_SB_FEAT_ZERO_ON_WRITE) && !(sb->features & FM_SB_FEAT_WRITTEN_MAP))
		return sb_fail(err, EUCLEAN, "zero-on-write is set without a written-region map");
	if (!!(sb->features & FM_SB_FEAT_BAD_BLOCKS) != (sb->nr_bad > 0))
		return sb_fail(err, EUCLEAN, "the bad-block feature is %s but the list holds "
			       "%" PRIu32 " entries",
			       sb->features & FM_SB_FEAT_BAD_BLOCKS ? "set" : "clear",
			       sb->nr_bad);
	if (sb->nr_bad > FM_SB_BAD_MAX)
		return sb_fail(err, EUCLEAN, "the bad-block list holds %" PRIu32 " entries, "
			       "more than %d", sb->nr_bad, FM_SB_BAD_MAX);
	for (unsigned k = 0; k < FM_SB_BAD_MAX; k++) {
		uint64_t e = sb->bad[k];

		if (k >= sb->nr_bad) {
			if (e)
				return sb_fail(err, EUCLEAN, "bad-block entry %u is set beyond "
					       "the list's %" PRIu32 " entries", k, sb->nr_bad);
			continue;
		}
		if (FM_SB_BAD_RESERVED(e) || FM_SB_BAD_SLOT(e) >= sb->nr_legs ||
		    sb->legs[FM_SB_BAD_SLOT(e)].state == FM_LEG_EMPTY ||
		    FM_SB_BAD_BLOCK(e) + FM_SB_BAD_LEN(e) >
		    sb->image_size / FM_SB_BAD_BLOCK_SIZE)
			return sb_fail(err, EUCLEAN, "bad-block entry %u (0x%016" PRIx64 ") "
				       "is not a run of blocks of the image on an occupied "
				       "slot", k, e);
	}
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		if (!(sb->features & FM_SB_FEAT_GENERATIONS) && sb->last_in_sync[i])
			return sb_fail(err, EUCLEAN, "leg slot %u has an assembly record "
				       "without the generations feature", i);
		if (sb->last_in_sync[i] > sb->events)
			return sb_fail(err, EUCLEAN, "leg slot %u was last seen in sync at "
				       "events %" PRIu64 ", after this superblock's %" PRIu64,
				       i, sb->last_in_sync[i], sb->events);
	}
	return 0;
}

/*----------------------------------------------------------------*/
/* Encoding */

void fm_sb_encode(const struct fm_sb *sb, void *buf)
{
	uint8_t *p = buf;

	memset(p, 0, FM_SB_SIZE);
	memcpy(p + SB_OFF_MAGIC, FM_SB_MAGIC, 8);
	put_le32(p + SB_OFF_VERSION_MAJOR, sb->version_major);
	put_le32(p + SB_OFF_VERSION_MINOR, sb->version_minor);
	memcpy(p + SB_OFF_ARRAY_UUID, sb->array_uuid, 16);
	memcpy(p + SB_OFF_LEG_UUID, sb->leg_uuid, 16);
	put_le32(p + SB_OFF_LEG_INDEX, sb->leg_index);
	put_le32(p + SB_OFF_NR_LEGS, sb->nr_legs);
	put_le64(p + SB_OFF_EVENTS, sb->events);
	put_le64(p + SB_OFF_CTIME, sb->ctime);
	put_le64(p + SB_OFF_UTIME, sb->utime);
	put_le64(p + SB_OFF_IMAGE_SIZE, sb->image_size);
	put_le64(p + SB_OFF_DATA_OFFSET, sb->data_offset);
	put_le64(p + SB_OFF_REGION_SIZE, sb->region_size);
	put_le64(p + SB_OFF_BITMAP_OFFSET, sb->bitmap_offset);
	put_le64(p + SB_OFF_BITMAP_LENGTH, sb->bitmap_length);
	put_le32(p + SB_OFF_STATE_FLAGS, sb->state_flags);
	put_le32(p + SB_OFF_BLOCK_SIZE, sb->block_size);
	put_le64(p + SB_OFF_RECOVERY_OFFSET, sb->recovery_offset);
	put_le32(p + SB_OFF_RECOVERY_FLAGS, sb->recovery_flags);
	/* NUL padded: whatever follows the terminator in memory stays off disk. */
	memcpy(p + SB_OFF_NAME, sb->name, strnlen(sb->name, sizeof(sb->name)));
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		uint8_t *slot = p + SB_OFF_LEGS + i * SB_LEG_SLOT;

		memcpy(slot + SB_LEG_OFF_UUID, sb->legs[i].uuid, 16);
		put_le32(slot + SB_LEG_OFF_STATE, sb->legs[i].state);
		put_le32(slot + SB_LEG_OFF_FLAGS, sb->legs[i].flags);
		put_le64(slot + SB_LEG_OFF_EVENTS, sb->legs[i].events);
	}
	put_le32(p + SB_OFF_FEATURES, sb->features);
	if (sb->features & FM_SB_FEAT_CHECKSUMS) {
		put_le64(p + SB_OFF_CSUM_OFFSET, sb->csum_offset);
		put_le64(p + SB_OFF_CSUM_LENGTH, sb->csum_length);
		put_le32(p + SB_OFF_CSUM_ALGO, sb->csum_algo);
		put_le32(p + SB_OFF_CSUM_BLOCK_SIZE, sb->csum_block_size);
	}
	if (sb->features & FM_SB_FEAT_WRITTEN_MAP) {
		put_le64(p + SB_OFF_WRITTEN_OFFSET, sb->written_offset);
		put_le64(p + SB_OFF_WRITTEN_LENGTH, sb->written_length);
	}
	if (sb->features & FM_SB_FEAT_GENERATIONS)
		for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
			put_le64(p + SB_OFF_LAST_IN_SYNC + 8 * i, sb->last_in_sync[i]);
	if (sb->features & FM_SB_FEAT_BAD_BLOCKS) {
		unsigned n = sb->nr_bad < FM_SB_BAD_MAX ? sb->nr_bad : FM_SB_BAD_MAX;

		put_le32(p + SB_OFF_NR_BAD, sb->nr_bad);
		for (unsigned k = 0; k < n; k++)
			put_le64(p + SB_OFF_BAD + 8 * k, sb->bad[k]);
	}
	put_le32(p + SB_OFF_CRC, fm_crc32c(0, p, SB_OFF_CRC));
}

/* The magic/crc/version gate shared by decode and the signature probe. */
static int sb_check_header(const uint8_t *p, GError **err)
{
	uint32_t major;

	if (memcmp(p + SB_OFF_MAGIC, FM_SB_MAGIC, 8) != 0) {
		g_set_error(err, FM_SB_ERROR, ENODATA,
			    "superblock: no fusemirror magic (not a fusemirror leg)");
		return -ENODATA;
	}
	if (get_le32(p + SB_OFF_CRC) != fm_crc32c(0, p, SB_OFF_CRC))
		return sb_fail(err, EBADMSG, "checksum 0x%08" PRIx32 " does not match "
			       "its contents (0x%08" PRIx32 "): the superblock is damaged",
			       get_le32(p + SB_OFF_CRC), fm_crc32c(0, p, SB_OFF_CRC));
	major = get_le32(p + SB_OFF_VERSION_MAJOR);
	if (major > FM_SB_VERSION_MAJOR)
		return sb_fail(err, EPROTONOSUPPORT,
			       "format version %" PRIu32 ".%" PRIu32 " is newer than the "
			       "%d.x this program reads", major,
			       get_le32(p + SB_OFF_VERSION_MINOR), FM_SB_VERSION_MAJOR);
	if (major == 0)
		return sb_fail(err, EUCLEAN, "format version 0.%" PRIu32 " does not exist",
			       get_le32(p + SB_OFF_VERSION_MINOR));
	return 0;
}

int fm_sb_decode(const void *buf, struct fm_sb *ret_sb, GError **err)
{
	const uint8_t *p = buf;
	struct fm_sb sb = { 0 };
	int r;

	r = sb_check_header(p, err);
	if (r < 0)
		return r;

	sb.version_major = get_le32(p + SB_OFF_VERSION_MAJOR);
	sb.version_minor = get_le32(p + SB_OFF_VERSION_MINOR);
	memcpy(sb.array_uuid, p + SB_OFF_ARRAY_UUID, 16);
	memcpy(sb.leg_uuid, p + SB_OFF_LEG_UUID, 16);
	sb.leg_index = get_le32(p + SB_OFF_LEG_INDEX);
	sb.nr_legs = get_le32(p + SB_OFF_NR_LEGS);
	sb.events = get_le64(p + SB_OFF_EVENTS);
	sb.ctime = get_le64(p + SB_OFF_CTIME);
	sb.utime = get_le64(p + SB_OFF_UTIME);
	sb.image_size = get_le64(p + SB_OFF_IMAGE_SIZE);
	sb.data_offset = get_le64(p + SB_OFF_DATA_OFFSET);
	sb.region_size = get_le64(p + SB_OFF_REGION_SIZE);
	sb.bitmap_offset = get_le64(p + SB_OFF_BITMAP_OFFSET);
	sb.bitmap_length = get_le64(p + SB_OFF_BITMAP_LENGTH);
	sb.state_flags = get_le32(p + SB_OFF_STATE_FLAGS);
	sb.block_size = get_le32(p + SB_OFF_BLOCK_SIZE);
	sb.recovery_offset = get_le64(p + SB_OFF_RECOVERY_OFFSET);
	sb.recovery_flags = get_le32(p + SB_OFF_RECOVERY_FLAGS);
	memcpy(sb.name, p + SB_OFF_NAME, sizeof(sb.name));
	sb.features = get_le32(p + SB_OFF_FEATURES);
	if (sb.features & FM_SB_FEAT_CHECKSUMS) {
		sb.csum_offset = get_le64(p + SB_OFF_CSUM_OFFSET);
		sb.csum_length = get_le64(p + SB_OFF_CSUM_LENGTH);
		sb.csum_algo = get_le32(p + SB_OFF_CSUM_ALGO);
		sb.csum_block_size = get_le32(p + SB_OFF_CSUM_BLOCK_SIZE);
	}
	if (sb.features & FM_SB_FEAT_WRITTEN_MAP) {
		sb.written_offset = get_le64(p + SB_OFF_WRITTEN_OFFSET);
		sb.written_length = get_le64(p + SB_OFF_WRITTEN_LENGTH);
	}
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		const uint8_t *slot = p + SB_OFF_LEGS + i * SB_LEG_SLOT;

		memcpy(sb.legs[i].uuid, slot + SB_LEG_OFF_UUID, 16);
		sb.legs[i].state = get_le32(slot + SB_LEG_OFF_STATE);
		sb.legs[i].flags = get_le32(slot + SB_LEG_OFF_FLAGS);
		sb.legs[i].events = get_le64(slot + SB_LEG_OFF_EVENTS);
	}
	/* Without the feature the range is reserved: ignored when read. */
	if (sb.features & FM_SB_FEAT_GENERATIONS)
		for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++)
			sb.last_in_sync[i] = get_le64(p + SB_OFF_LAST_IN_SYNC + 8 * i);
	if (sb.features & FM_SB_FEAT_BAD_BLOCKS) {
		sb.nr_bad = get_le32(p + SB_OFF_NR_BAD);
		if (get_le32(p + SB_OFF_NR_BAD + 4))
			return sb_fail(err, EUCLEAN, "the word after the bad-block count is "
				       "not 0");
		for (unsigned k = 0; k < FM_SB_BAD_MAX; k++)
			sb.bad[k] = get_le64(p + SB_OFF_BAD + 8 * k);
	}

	r = sb_check(&sb, err);
	if (r < 0)
		return r;
	*ret_sb = sb;
	return 0;
}

/*----------------------------------------------------------------*/
/* I/O */

int fm_sb_read(struct dmio_dev *dev, struct fm_sb *ret_sb, GError **err)
{
	struct dmio_region where = { .dev = dev, .sector = 0,
				     .count = FM_SB_SIZE >> FM_SECTOR_SHIFT };
	sb_autobuf buf = NULL;
	int r;

	if (dmio_dev_size(dev) < FM_SB_SIZE) {
		g_set_error(err, FM_SB_ERROR, ENODATA,
			    "leg %s: %" PRIu64 " bytes are too few to hold a superblock "
			    "(not a fusemirror leg)", dmio_dev_name(dev), dmio_dev_size(dev));
		return -ENODATA;
	}
	buf = sb_buf_alloc();
	if (!buf) {
		g_set_error(err, FM_SB_ERROR, ENOMEM, "leg %s: out of memory",
			    dmio_dev_name(dev));
		return -ENOMEM;
	}
	r = dmio_sync_vm(1, &where, DMIO_OP_READ, buf, NULL);
	if (r < 0) {
		g_set_error(err, FM_SB_ERROR, -r, "leg %s: cannot read the superblock: %s",
			    dmio_dev_name(dev), g_strerror(-r));
		return r;
	}
	r = fm_sb_decode(buf, ret_sb, err);
	if (r < 0)
		g_prefix_error(err, "leg %s: ", dmio_dev_name(dev));
	return r;
}

int fm_sb_write(struct dmio_dev *dev, struct fm_sb *sb)
{
	struct dmio_region where = { .dev = dev, .sector = 0,
				     .count = FM_SB_SIZE >> FM_SECTOR_SHIFT };
	struct dmio_request req = {
		.op = DMIO_OP_WRITE,
		.flags = DMIO_REQ_FUA,
		.mem = { .type = DMIO_MEM_VM },
	};
	struct fm_sb copy = *sb;
	sb_autobuf buf = NULL;
	g_autoptr(GError) err = NULL;
	int r;

	if (sb->version_major != FM_SB_VERSION_MAJOR || sb_check(sb, &err) < 0) {
		fm_debug("leg %s: refusing to write a superblock that does not validate: %s",
			 dmio_dev_name(dev), err ? err->message : "wrong major version");
		return -EINVAL;
	}
	buf = sb_buf_alloc();
	if (!buf)
		return -ENOMEM;
	copy.utime = (uint64_t)(g_get_real_time() / G_USEC_PER_SEC);
	fm_sb_encode(&copy, buf);
	req.mem.ptr.vma = buf;
	r = dmio(&req, 1, &where, NULL);
	if (r < 0) {
		fm_debug("leg %s: superblock write failed: %s", dmio_dev_name(dev),
			 g_strerror(-r));
		return r;
	}
	sb->utime = copy.utime;
	return 0;
}

int fm_sb_clear_bitmap(struct dmio_dev *dev, const struct fm_sb *sb)
{
	struct dmio_region where = {
		.dev = dev,
		.sector = sb->bitmap_offset >> FM_SECTOR_SHIFT,
		.count = sb->bitmap_length >> FM_SECTOR_SHIFT,
	};
	struct dmio_request zero = { .op = DMIO_OP_WRITE_ZEROES };
	struct dmio_request flush = { .op = DMIO_OP_FLUSH };
	int r;

	if (sb_check(sb, NULL) < 0)
		return -EINVAL;
	r = dmio(&zero, 1, &where, NULL);
	if (r < 0) {
		fm_debug("leg %s: zeroing the bitmap failed: %s", dmio_dev_name(dev),
			 g_strerror(-r));
		return r;
	}
	/* WRITE_ZEROES has no FUA: make it durable with a flush of its own. */
	r = dmio(&flush, 1, &where, NULL);
	if (r < 0)
		fm_debug("leg %s: flush after zeroing the bitmap failed: %s",
			 dmio_dev_name(dev), g_strerror(-r));
	return r;
}

/*----------------------------------------------------------------*/
/* Signature probing */

/* Read up to @len bytes at @off; returns the count (short at end of file). */
static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* A fusemirror superblock at offset 0: returns 0 and a description (or
 * NULL when there is no magic), or -errno when the device cannot be read. */
static int probe_fusemirror(int fd, char **ret_what)
{
	sb_autobuf buf = sb_buf_alloc();
	g_autoptr(GError) err = NULL;
	struct fm_sb sb;
	char uuid[37];
	ssize_t n;
	int r;

	if (!buf)
		return -ENOMEM;
	n = pread_full(fd, buf, FM_SB_SIZE, 0);
	if (n < 0)
		return (int)n;
	if (n < 8 || memcmp(buf, FM_SB_MAGIC, 8) != 0) {
		*ret_what = NULL;
		return 0;
	}
	if (n < FM_SB_SIZE) {
		*ret_what = g_strdup("damaged fusemirror superblock (truncated)");
		return 0;
	}
	r = fm_sb_decode(buf, &sb, &err);
	fm_uuid_unparse(buf + SB_OFF_ARRAY_UUID, uuid);
	switch (r) {
	case 0:
		*ret_what = g_strdup_printf("fusemirror leg (array %s)", uuid);
		break;
	case -EBADMSG:
		*ret_what = g_strdup("damaged fusemirror superblock");
		break;
	case -EPROTONOSUPPORT:
		*ret_what = g_strdup_printf("fusemirror leg (array %s, format version %"
					    PRIu32 ")", uuid,
					    get_le32(buf + SB_OFF_VERSION_MAJOR));
		break;
	default:
		*ret_what = g_strdup_printf("fusemirror leg with an inconsistent superblock "
					    "(array %s: %s)", uuid,
					    err ? err->message : g_strerror(-r));
		break;
	}
	return 0;
}

static char *describe_superblock(const char *type, const char *usage)
{
	if (strcmp(type, "swap") == 0)
		return g_strdup("swap space");
	if (!usage)
		return g_strdup_printf("%s signature", type);
	if (strcmp(usage, "filesystem") == 0)
		return g_strdup_printf("%s file system", type);
	if (strcmp(usage, "raid") == 0)
		return g_strdup_printf("%s (raid/volume member)", type);
	if (strcmp(usage, "crypto") == 0)
		return g_strdup_printf("%s (encrypted volume)", type);
	return g_strdup_printf("%s signature", type);
}

static int blkid_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static void blkid_probep(blkid_probe *pr)
{
	if (*pr)
		blkid_free_probe(*pr);
}

/* With the probe's position reset, list every signature libblkid finds one
 * by one (as wipefs does): names for the "several signatures" message. */
static char *list_ambivalent(blkid_probe pr)
{
	g_autoptr(GString) s = g_string_new(NULL);
	g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
	unsigned guard = 0;

	blkid_reset_probe(pr);
	while (guard++ < 64 && blkid_do_probe(pr) == 0) {
		const char *v = NULL;

		if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) != 0 &&
		    blkid_probe_lookup_value(pr, "PTTYPE", &v, NULL) != 0)
			continue;
		if (g_ptr_array_find_with_equal_func(seen, v, g_str_equal, NULL))
			continue;
		g_ptr_array_add(seen, g_strdup(v));
		g_string_append_printf(s, "%s%s", s->len ? ", " : "", v);
	}
	if (!s->len)
		return g_strdup("several signatures");
	return g_strdup_printf("several signatures (%s)", s->str);
}

static int probe_blkid(int fd, char **ret_what)
{
	__attribute__((cleanup(blkid_probep))) blkid_probe pr = NULL;
	const char *type = NULL, *usage = NULL, *pttype = NULL;
	g_autofree char *fs = NULL, *pt = NULL;
	int r;

	errno = 0;
	pr = blkid_new_probe();
	if (!pr)
		return -ENOMEM;
	if (blkid_probe_set_device(pr, fd, 0, 0) != 0)
		return blkid_errno();
	if (blkid_probe_enable_superblocks(pr, 1) != 0 ||
	    blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE) != 0 ||
	    blkid_probe_enable_partitions(pr, 1) != 0)
		return -EINVAL;

	errno = 0;
	r = blkid_do_safeprobe(pr);
	switch (r) {
	case 1:         /* nothing */
		*ret_what = NULL;
		return 0;
	case -2:        /* ambivalent: more than one signature */
		*ret_what = list_ambivalent(pr);
		return 0;
	case 0:
		break;
	default:
		return blkid_errno();
	}

	if (blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0 && type) {
		if (blkid_probe_lookup_value(pr, "USAGE", &usage, NULL) != 0)
			usage = NULL;
		fs = describe_superblock(type, usage);
	}
	if (blkid_probe_lookup_value(pr, "PTTYPE", &pttype, NULL) == 0 && pttype)
		pt = g_strdup_printf("%s partition table", pttype);

	if (fs && pt)
		*ret_what = g_strdup_printf("%s and %s", fs, pt);
	else if (fs)
		*ret_what = g_steal_pointer(&fs);
	else if (pt)
		*ret_what = g_steal_pointer(&pt);
	else
		*ret_what = g_strdup("unidentified signature");
	return 0;
}

int fm_sb_probe_signature(int fd, char **ret_what)
{
	sb_autofd own = -1;
	char *what = NULL;
	struct stat st;
	int flags, r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -EINVAL;
	if (S_ISREG(st.st_mode) && st.st_size == 0) {
		*ret_what = NULL;
		return 0;
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -errno;
	/* libblkid reads into unaligned buffers of its own, which an O_DIRECT
	 * fd refuses: read through a second, buffered, open file instead. */
	if ((flags & O_DIRECT) || (flags & O_ACCMODE) == O_WRONLY) {
		g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);

		own = open(path, O_RDONLY | O_CLOEXEC);
		if (own < 0)
			return -errno;
		fd = own;
	}

	r = probe_fusemirror(fd, &what);
	if (r < 0)
		return r;
	if (!what) {
		r = probe_blkid(fd, &what);
		if (r < 0)
			return r;
	}
	*ret_what = what;
	return 0;
}
