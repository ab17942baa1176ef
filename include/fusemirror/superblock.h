/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The on-disk format of one leg: superblock, write-intent bitmap area, data.
 *
 *   offset 0              superblock, FM_SB_SIZE bytes, little-endian,
 *                         crc32c over its first FM_SB_SIZE - 4 bytes stored
 *                         in its last 4 bytes
 *   bitmap_offset (4 KiB) write-intent bitmap, one bit per region,
 *                         bitmap_length bytes (a multiple of 4 KiB)
 *   csum_offset           with FM_SB_FEAT_CHECKSUMS: the checksum area, one
 *                         little-endian u32 per csum_block_size (4 KiB) block
 *                         of the image, csum_length bytes (whole 4 KiB pages)
 *   written_offset        with FM_SB_FEAT_WRITTEN_MAP: the written-region
 *                         map, one bit per region (the bitmap's regions, same
 *                         bit order), written_length (= bitmap_length) bytes
 *   data_offset           the image data, image_size bytes (1 MiB aligned)
 *
 * Checksum entries (FM_SB_CSUM_CRC32C): entry b holds
 * crc32c(block b) XOR crc32c(4096 zero bytes) (FM_SB_CSUM_ZERO_BLOCK), so
 * that an area of zeroes (a hole) says "every block is zeroes": a new array
 * whose data area was emptied needs no checksum written, and a discard
 * stores 0.  Entries of regions whose write-intent bit is clear always
 * match the data on every in-sync leg; a set bit covers data and entries
 * both (src/mirror/csum.c says how they are kept).
 *
 * Versioning: a reader refuses a superblock whose major version is higher
 * than its own (FM_SB_VERSION_MAJOR); a higher minor version only adds
 * fields in space that older readers see as reserved zeroes, and those
 * readers keep working.  Reserved bytes are written as zero.
 *
 * Features (minor version 1): a feature that changes what a writer must do
 * (keep checksums, keep the written-region map) sets a bit in `features`;
 * a reader refuses a superblock with a bit it does not know (FM_SB_FEAT_ALL),
 * because writing through it would leave that metadata stale.  The space
 * after the leg table is allotted per feature, so that each grows in place:
 *   1224  u32 features (enum fm_sb_features)     1228  u32 0
 *   1232 .. 1487   assembly records (FM_SB_FEAT_GENERATIONS): 32 u64
 *                  last_in_sync[slot], the event count of the last
 *                  superblock update at which the writer of this
 *                  superblock saw that slot in sync (0: never, or
 *                  unknown); for an in-sync slot it is this superblock's
 *                  events.  Assembly compares them across legs: a leg
 *                  behind what its peers last saw of it went back in time;
 *                  two legs that each ran without the other are a split
 *                  brain (src/mirror/assemble.c, doc/DESIGN.md).
 *   1488 .. 1743   per-block checksums: 1488 u64 csum_offset, 1496 u64
 *                  csum_length, 1504 u32 csum_algo, 1508 u32 csum_block_size
 *                  (read only with FM_SB_FEAT_CHECKSUMS; zero without)
 *   1744 .. 1999   written-region map (FM_SB_FEAT_WRITTEN_MAP): 1744 u64
 *                  written_offset, 1752 u64 written_length (zero without
 *                  the bit).  The map itself lives in the metadata area
 *                  (it does not fit here: one bit per region); a clear
 *                  bit says the region was never written since create or
 *                  its last whole-region discard: it reads as zeroes and
 *                  every in-sync leg holds zeroes there.
 *   2000 .. 4055   bad-block list (FM_SB_FEAT_BAD_BLOCKS): 2000 u32
 *                  nr_bad, 2004 u32 0, 2008 u64 bad[FM_SB_BAD_MAX]
 *                  (FM_SB_BAD_MAKE()): 4 KiB blocks of the image that
 *                  one leg could not write; reads of them avoid that
 *                  leg; a later write of them that succeeds clears them
 *                  (md's bad block log, src/mirror/badblocks.c).  The bit
 *                  is set while the list holds an entry, so that an older
 *                  fusemirror, which would read those blocks, refuses it.
 *   4056 .. 4091   recovery flags (this leg's own, like recovery_offset):
 *                  4056 u32 recovery_flags (enum fm_sb_recovery_flags),
 *                  4060 .. 4091 reserved.  An older reader ignores the
 *                  word and rebuilds the leg wholly from recovery_offset,
 *                  which is what the flags only ever narrow.
 * Each leg slot's word at +20 holds that leg's flags (enum fm_sb_leg_flags).
 *
 * Threading: the functions here are pure (encode/decode/validate) or do
 * synchronous I/O on one device; call them from any thread, but never two
 * writers on one leg at once.
 */
#ifndef FUSEMIRROR_SUPERBLOCK_H
#define FUSEMIRROR_SUPERBLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "fusemirror/dmio.h"

#define FM_SB_MAGIC "FUSEMIRR"          /* 8 bytes, no NUL on disk */
#define FM_SB_VERSION_MAJOR 1
#define FM_SB_VERSION_MINOR 1
#define FM_SB_SIZE 4096u
#define FM_SB_MAX_LEGS 32               /* slots in the leg table */
#define FM_SB_DATA_ALIGN (1u << 20)     /* data_offset alignment */
#define FM_SB_DEFAULT_REGION_SIZE (64ull << 20)
#define FM_SB_MIN_REGION_SIZE (1ull << 20)
#define FM_SB_MAX_REGION_SIZE (1ull << 40)

/* Per-block checksums (FM_SB_FEAT_CHECKSUMS) */
enum fm_sb_csum_algo {
	FM_SB_CSUM_CRC32C = 1,          /* CRC-32C (Castagnoli), 4 bytes per block */
};
#define FM_SB_CSUM_BLOCK_SIZE 4096u     /* bytes of image per checksum */
#define FM_SB_CSUM_ENTRY_SIZE 4u        /* bytes per checksum entry */
/* crc32c of FM_SB_CSUM_BLOCK_SIZE zero bytes: what an entry is XORed with */
#define FM_SB_CSUM_ZERO_BLOCK 0x98f94189u
/* Largest image with checksums: the mirror keeps the whole table in memory,
 * 1 MiB per GiB of image (4 GiB for 4 TiB). */
#define FM_SB_CSUM_MAX_IMAGE (4ull << 40)

/* state_flags */
enum fm_sb_flags {
	FM_SB_CLEAN = 1u << 0,  /* array was stopped cleanly: legs are equal
				   (apart from legs marked otherwise below) */
};

/* features: what a writer of this array must keep up to date */
enum fm_sb_features {
	FM_SB_FEAT_CHECKSUMS = 1u << 0,   /* per-block checksum area (1488..) */
	FM_SB_FEAT_WRITTEN_MAP = 1u << 1, /* written-region map (1744..) */
	FM_SB_FEAT_GENERATIONS = 1u << 2, /* assembly records (1232..) */
	FM_SB_FEAT_BAD_BLOCKS = 1u << 3,  /* bad-block list (2000..), not empty */
	/* With FM_SB_FEAT_WRITTEN_MAP only: what the legs hold in a region
	 * never written is undefined (create emptied no data area); a region
	 * is zeroed on every leg before it is first marked written. */
	FM_SB_FEAT_ZERO_ON_WRITE = 1u << 4,
};
/* Every feature bit this build knows; a superblock with another is refused. */
#define FM_SB_FEAT_ALL (FM_SB_FEAT_CHECKSUMS | FM_SB_FEAT_WRITTEN_MAP | \
			FM_SB_FEAT_GENERATIONS | FM_SB_FEAT_BAD_BLOCKS | \
			FM_SB_FEAT_ZERO_ON_WRITE)

/* Bad-block list (FM_SB_FEAT_BAD_BLOCKS): one u64 per entry, a run of
 * 1..FM_SB_BAD_MAX_LEN 4 KiB blocks of the image bad on one leg slot:
 * bits 0..39 the first block, 40..47 the length - 1, 48..52 the slot;
 * the other bits 0. */
#define FM_SB_BAD_MAX 256               /* entries, all legs together */
#define FM_SB_BAD_BLOCK_SIZE 4096u
#define FM_SB_BAD_MAX_LEN 256u          /* blocks per entry */
#define FM_SB_BAD_MAKE(slot, block, len) \
	((uint64_t)(block) | ((uint64_t)(len) - 1) << 40 | (uint64_t)(slot) << 48)
#define FM_SB_BAD_BLOCK(e) ((e) & ((1ull << 40) - 1))
#define FM_SB_BAD_LEN(e) ((unsigned)(((e) >> 40) & 0xff) + 1)
#define FM_SB_BAD_SLOT(e) ((unsigned)(((e) >> 48) & 0x1f))
#define FM_SB_BAD_RESERVED(e) ((e) >> 53)

/* recovery_flags: how a REBUILDING leg is being recovered (its own
 * superblock only; 0 in every other). */
enum fm_sb_recovery_flags {
	/* From the write-intent bitmap (a re-added leg): above
	 * recovery_offset the leg is also in sync in every region whose bit
	 * is clear on the in-sync legs, so only the marked ones are copied
	 * (md resumes a bitmap-based recovery the same way). */
	FM_SB_RECOVERY_BITMAP = 1u << 0,
};
#define FM_SB_RECOVERY_FLAGS_ALL FM_SB_RECOVERY_BITMAP

/* Per-leg flags, in the leg's slot of the leg table. */
enum fm_sb_leg_flags {
	FM_SB_LEG_WRITE_MOSTLY = 1u << 0, /* read only when no other in-sync leg can */
	FM_SB_LEG_MISSING = 1u << 1,      /* FAULTY because it was not given at a
					     degraded start (not an I/O error) */
	FM_SB_LEG_REPLACEMENT = 1u << 2,  /* REBUILDING to replace the leg in slot
					     FM_SB_LEG_REPLACED_SLOT(flags): that
					     leg is retired when this one is in
					     sync (`replace`, also across a stop) */
};
/* The replaced slot of an FM_SB_LEG_REPLACEMENT leg: bits 8..15. */
#define FM_SB_LEG_REPLACED_SHIFT 8
#define FM_SB_LEG_REPLACED_MASK (0xffu << FM_SB_LEG_REPLACED_SHIFT)
#define FM_SB_LEG_REPLACED_SLOT(flags) \
	(((flags) & FM_SB_LEG_REPLACED_MASK) >> FM_SB_LEG_REPLACED_SHIFT)
#define FM_SB_LEG_FLAGS_ALL (FM_SB_LEG_WRITE_MOSTLY | FM_SB_LEG_MISSING | \
			     FM_SB_LEG_REPLACEMENT | FM_SB_LEG_REPLACED_MASK)

/* State of one leg, as recorded in the leg table of every superblock. */
enum fm_leg_state {
	FM_LEG_EMPTY = 0,       /* slot unused */
	FM_LEG_IN_SYNC = 1,     /* holds the current data */
	FM_LEG_FAULTY = 2,      /* failed: receives no I/O until re-added */
	FM_LEG_REBUILDING = 3,  /* being rebuilt; valid up to recovery_offset */
	FM_LEG_REMOVED = 4,     /* removed by the administrator */
};

struct fm_sb_leg {
	uint8_t uuid[16];
	uint32_t state;         /* enum fm_leg_state */
	uint32_t flags;         /* enum fm_sb_leg_flags */
	uint64_t events;        /* event counter when the state was set */
};

/* The decoded (host-endian) superblock. */
struct fm_sb {
	uint32_t version_major;
	uint32_t version_minor;
	uint8_t array_uuid[16];
	uint8_t leg_uuid[16];   /* this leg */
	uint32_t leg_index;     /* this leg's slot in legs[] */
	uint32_t nr_legs;       /* slots in use: 1..FM_SB_MAX_LEGS */
	uint64_t events;        /* bumped on every state change of the array */
	uint64_t ctime;         /* creation time, seconds since the epoch */
	uint64_t utime;         /* last superblock update */
	uint64_t image_size;    /* bytes, multiple of 4 KiB */
	uint64_t data_offset;   /* bytes, multiple of FM_SB_DATA_ALIGN */
	uint64_t region_size;   /* bytes per bitmap bit, power of two */
	uint64_t bitmap_offset; /* bytes (FM_SB_SIZE) */
	uint64_t bitmap_length; /* bytes, multiple of 4 KiB */
	uint32_t state_flags;   /* enum fm_sb_flags */
	uint32_t block_size;    /* suggested cache block size (bytes) */
	uint64_t recovery_offset; /* REBUILDING: data valid below this byte */
	uint32_t recovery_flags;  /* REBUILDING: enum fm_sb_recovery_flags */
	char name[64];          /* array name, NUL-terminated, may be empty */
	struct fm_sb_leg legs[FM_SB_MAX_LEGS];
	uint32_t features;      /* enum fm_sb_features (minor version >= 1) */
	/* FM_SB_FEAT_CHECKSUMS (all 0 without it) */
	uint64_t csum_offset;   /* bytes, 4 KiB aligned, after the bitmap */
	uint64_t csum_length;   /* bytes, a multiple of 4 KiB */
	uint32_t csum_algo;     /* enum fm_sb_csum_algo */
	uint32_t csum_block_size; /* FM_SB_CSUM_BLOCK_SIZE */
	/* FM_SB_FEAT_WRITTEN_MAP (all 0 without it) */
	uint64_t written_offset; /* bytes, 4 KiB aligned, after the checksum area */
	uint64_t written_length; /* bytes, bitmap_length */
	/* FM_SB_FEAT_GENERATIONS (else all 0): per slot, the events of the
	 * last update at which this superblock's writer saw it in sync. */
	uint64_t last_in_sync[FM_SB_MAX_LEGS];
	/* FM_SB_FEAT_BAD_BLOCKS (else 0): entries bad[0 .. nr_bad - 1]
	 * (FM_SB_BAD_MAKE), each of an occupied slot, inside the image; the
	 * bit is set exactly when nr_bad > 0. */
	uint32_t nr_bad;
	uint64_t bad[FM_SB_BAD_MAX];
};

/*
 * Geometry of a new array: given the image size and region size, store
 * them and the computed bitmap_offset, bitmap_length and data_offset into
 * @sb (other fields untouched).  Returns 0, or -EINVAL (and @sb untouched)
 * when image_size is 0 or not a multiple of 4 KiB, or region_size is not a
 * power of two in [FM_SB_MIN_REGION_SIZE, FM_SB_MAX_REGION_SIZE], or a leg
 * would need more than INT64_MAX bytes.  The layout has no checksum area
 * and no written map: FM_SB_FEAT_CHECKSUMS, FM_SB_FEAT_WRITTEN_MAP and
 * their fields are cleared (other features kept).
 */
int fm_sb_layout(struct fm_sb *sb, uint64_t image_size, uint64_t region_size);

/*
 * As fm_sb_layout(), for an array with @features (any of
 * FM_SB_FEAT_CHECKSUMS and FM_SB_FEAT_WRITTEN_MAP): with checksums, the
 * checksum area follows the bitmap (csum_offset, csum_length, csum_algo,
 * csum_block_size set and the bit set in sb->features); with the written
 * map, the map follows them (written_offset, written_length =
 * bitmap_length); the data offset moves past both (still 1 MiB aligned).
 * A feature not asked for has its fields and bit cleared.  -EINVAL as
 * fm_sb_layout(), and for another feature bit.
 */
int fm_sb_layout_features(struct fm_sb *sb, uint64_t image_size, uint64_t region_size,
			  uint32_t features);

/* Bytes of checksum area an image of @image_size needs (whole 4 KiB). */
uint64_t fm_sb_csum_bytes(uint64_t image_size);

/* Bytes a leg needs for @sb's geometry: data_offset + image_size. */
uint64_t fm_sb_leg_bytes(const struct fm_sb *sb);

/* Number of regions (bitmap bits) of @sb. */
uint64_t fm_sb_nr_regions(const struct fm_sb *sb);

/* Serialise into @buf (FM_SB_SIZE bytes), computing the crc. */
void fm_sb_encode(const struct fm_sb *sb, void *buf);

/* GError domain of the messages below; the code is the positive errno. */
#define FM_SB_ERROR (fm_sb_error_quark())
GQuark fm_sb_error_quark(void);

/*
 * Parse @buf (FM_SB_SIZE bytes).  Returns 0; -ENODATA when the magic is not
 * there (not a fusemirror leg); -EBADMSG when the crc does not match;
 * -EPROTONOSUPPORT for a newer major version; -EUCLEAN when fields are
 * inconsistent (geometry, leg_index >= nr_legs, major version 0, ...).
 * On error *ret_sb is untouched and, when @err is not NULL, it says what is
 * wrong in words.
 */
int fm_sb_decode(const void *buf, struct fm_sb *ret_sb, GError **err);

/* Read and decode the superblock of @dev (synchronous dmio). Same returns
 * as fm_sb_decode (-ENODATA also for a device smaller than FM_SB_SIZE), or
 * -EIO when the read fails; messages name the device. */
int fm_sb_read(struct dmio_dev *dev, struct fm_sb *ret_sb, GError **err);

/* Encode and write the superblock of @dev with FUA (durable on return).
 * Sets sb->utime (only on success).  Returns 0 or -errno; -EINVAL, with
 * nothing written, for an @sb that fm_sb_decode() would not accept back. */
int fm_sb_write(struct dmio_dev *dev, struct fm_sb *sb);

/* Zero the bitmap area of @dev (synchronous, durable).  Returns 0 or
 * -errno; -EINVAL for an @sb that fm_sb_decode() would not accept. */
int fm_sb_clear_bitmap(struct dmio_dev *dev, const struct fm_sb *sb);

/* Format a UUID as the usual 36-character lower-case text into @buf (>= 37
 * bytes).  Both from libuuid. */
char *fm_uuid_unparse(const uint8_t uuid[16], char *buf);
/* Fill @uuid with a random (version 4) UUID. */
void fm_uuid_generate(uint8_t uuid[16]);

/*
 * Look for an existing signature on @fd (a file system, partition table,
 * RAID member, swap, LUKS, or a fusemirror superblock) with libblkid.
 * Returns 0 and sets *ret_what to a newly allocated description (e.g.
 * "ext4 file system", "dos partition table", "fusemirror leg (array
 * 3f2a...)", "several signatures (...)") or NULL when the device holds none
 * (an empty or tiny file holds none); -EINVAL when @fd is neither a regular
 * file nor a block device, other -errno on failure.  Blocks: reads the start
 * of @fd (and, for some signatures, its end), through a private buffered
 * open file when @fd is O_DIRECT or write-only.
 */
int fm_sb_probe_signature(int fd, char **ret_what);

#endif /* FUSEMIRROR_SUPERBLOCK_H */
