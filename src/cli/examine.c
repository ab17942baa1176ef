/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `fusemirror examine LEG...`: a leg's superblock, leg table and
 * write-intent bitmap, read offline (mdadm --examine and
 * --examine-bitmap).  Each leg is opened read-only, without O_EXCL and
 * without the OFD lock, so a leg of a mounted array can be examined too
 * (a file always; a block device too, as the daemon's O_EXCL claim
 * does not stop another process's plain read-only open).  What it shows is
 * what is on disk: a running daemon may have newer state in memory.
 *
 * Bitmap layout: bit r (region r, covering image bytes [r * region_size,
 * (r + 1) * region_size)) is bit (r % 8) of byte (r / 8) of the bitmap
 * area, least significant bit first; bits at or past the number of
 * regions are ignored.  The written-region map (FM_SB_FEAT_WRITTEN_MAP)
 * has the same layout at written_offset: a set bit is a region written
 * since create (a clear one reads as zeroes).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fusemirror/common.h"
#include "fusemirror/superblock.h"

const char *cli_leg_state_name(enum fm_leg_state s)
{
	switch (s) {
	case FM_LEG_EMPTY: return "empty";
	case FM_LEG_IN_SYNC: return "in_sync";
	case FM_LEG_FAULTY: return "faulty";
	case FM_LEG_REBUILDING: return "rebuilding";
	case FM_LEG_REMOVED: return "removed";
	default: return "unknown";
	}
}

const char *cli_leg_state_word(enum fm_leg_state s, bool missing)
{
	return s == FM_LEG_FAULTY && missing ? "missing" : cli_leg_state_name(s);
}

/* A slot's state as the table records it: "missing" for a faulty slot
 * whose leg was not given at a degraded start. */
static const char *slot_word(const struct fm_sb_leg *e)
{
	return cli_leg_state_word((enum fm_leg_state)e->state, e->flags & FM_SB_LEG_MISSING);
}

static bool bit_set(const uint8_t *bm, uint64_t r)
{
	return bm[r >> 3] & (1u << (r & 7));
}

/* "0-3,17,40-41" (empty when no bit is set); returns the bits set. */
static uint64_t append_ranges(GString *out, const uint8_t *bm, uint64_t nr)
{
	uint64_t set = 0;

	for (uint64_t r = 0; r < nr; r++) {
		uint64_t end = r;

		if (!bit_set(bm, r))
			continue;
		while (end + 1 < nr && bit_set(bm, end + 1))
			end++;
		if (set)
			g_string_append_c(out, ',');
		if (end == r)
			g_string_append_printf(out, "%llu", (unsigned long long)r);
		else
			g_string_append_printf(out, "%llu-%llu", (unsigned long long)r,
					       (unsigned long long)end);
		set += end - r + 1;
		r = end;
	}
	return set;
}

static char *format_time(uint64_t t)
{
	g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local((gint64)MIN(t, (uint64_t)G_MAXINT64));

	return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S %z") : g_strdup("?");
}

/* Read @bytes of @what at @offset of @dev into *ret (g_free). */
static int read_area(struct dmio_dev *dev, const char *path, uint64_t offset, uint64_t bytes,
		     const char *what, uint8_t **ret)
{
	struct dmio_region where;
	void *buf = NULL;
	int r;

	if (posix_memalign(&buf, FM_PAGE_SIZE, bytes ? bytes : FM_PAGE_SIZE)) {
		cli_error("leg %s: out of memory for the %s", path, what);
		return FM_EXIT_FAILURE;
	}
	memset(buf, 0, bytes ? bytes : FM_PAGE_SIZE);
	where = (struct dmio_region){ .dev = dev, .sector = offset >> FM_SECTOR_SHIFT,
				      .count = bytes >> FM_SECTOR_SHIFT };
	r = bytes ? dmio_sync_vm(1, &where, DMIO_OP_READ, buf, NULL) : 0;
	if (r < 0) {
		cli_error("leg %s: cannot read the %s (%llu bytes at %llu): %s", path, what,
			  (unsigned long long)bytes, (unsigned long long)offset, g_strerror(-r));
		free(buf);
		return FM_EXIT_FAILURE;
	}
	*ret = g_memdup2(buf, bytes ? bytes : 1);
	free(buf);
	return FM_EXIT_OK;
}

/*
 * Read @path's superblock, bitmap and written-region map.  Returns
 * FM_EXIT_OK with *ret_sb, *ret_bitmap and *ret_written (g_free; the
 * areas' first ceil(regions / 8) bytes, rounded up to 4 KiB; *ret_written
 * NULL without the map), or an exit code after the message.
 */
static int read_leg(const char *path, struct fm_sb *ret_sb, uint8_t **ret_bitmap,
		    uint8_t **ret_written)
{
	g_autoptr(dmio_dev) dev = NULL;
	g_autoptr(GError) err = NULL;
	struct fm_sb sb;
	uint64_t nr, bytes;
	int r;

	r = dmio_dev_open(path, DMIO_DEV_RDONLY, &dev);
	if (r < 0) {
		cli_error("leg %s: cannot open it: %s", path, g_strerror(-r));
		return FM_EXIT_LEG;
	}
	r = fm_sb_read(dev, &sb, &err);
	if (r < 0) {
		cli_error("%s", err->message);
		return r == -EIO ? FM_EXIT_FAILURE : FM_EXIT_LEG;
	}
	nr = fm_sb_nr_regions(&sb);
	bytes = FM_ALIGN_UP((nr + 7) / 8, (uint64_t)FM_PAGE_SIZE);
	if (bytes > sb.bitmap_length || bytes > (64ull << 20)) {
		cli_error("leg %s: a bitmap of %llu regions does not fit its %llu bytes",
			  path, (unsigned long long)nr, (unsigned long long)sb.bitmap_length);
		return FM_EXIT_LEG;
	}
	r = read_area(dev, path, sb.bitmap_offset, bytes, "bitmap", ret_bitmap);
	if (r)
		return r;
	*ret_written = NULL;
	if (sb.features & FM_SB_FEAT_WRITTEN_MAP) {
		r = read_area(dev, path, sb.written_offset, bytes, "written-region map",
			      ret_written);
		if (r) {
			g_clear_pointer(ret_bitmap, g_free);
			return r;
		}
	}
	*ret_sb = sb;
	return FM_EXIT_OK;
}

static void print_text(const char *path, const struct fm_sb *sb, const uint8_t *bm,
		       const uint8_t *wm)
{
	g_autoptr(GString) ranges = g_string_new(NULL);
	g_autofree char *ctime_s = format_time(sb->ctime), *utime_s = format_time(sb->utime);
	uint64_t nr = fm_sb_nr_regions(sb), set = append_ranges(ranges, bm, nr);
	enum fm_leg_state own = sb->leg_index < FM_SB_MAX_LEGS
					? (enum fm_leg_state)sb->legs[sb->leg_index].state
					: FM_LEG_EMPTY;
	char u[37], s1[32], s2[32];

	printf("%s:\n", path);
	printf("          version : %u.%u\n", sb->version_major, sb->version_minor);
	printf("       array uuid : %s\n", fm_uuid_unparse(sb->array_uuid, u));
	printf("             name : %s\n", sb->name);
	printf("         leg uuid : %s\n", fm_uuid_unparse(sb->leg_uuid, u));
	printf("        leg index : %u (%s in the leg table)\n", sb->leg_index,
	       cli_leg_state_name(own));
	printf("           events : %llu\n", (unsigned long long)sb->events);
	printf("            state : %s\n", sb->state_flags & FM_SB_CLEAN
					       ? "clean"
					       : "dirty (in use, or not stopped cleanly)");
	printf("    creation time : %s\n", ctime_s);
	printf("      update time : %s\n", utime_s);
	printf("       image size : %s (%llu bytes)\n", fm_format_size(sb->image_size, s1, sizeof(s1)),
	       (unsigned long long)sb->image_size);
	printf("      data offset : %llu\n", (unsigned long long)sb->data_offset);
	printf("       block size : %u\n", sb->block_size);
	if (own == FM_LEG_REBUILDING)
		printf("  recovery offset : %llu (%s)\n", (unsigned long long)sb->recovery_offset,
		       sb->recovery_flags & FM_SB_RECOVERY_BITMAP
		       ? "recovered from the write-intent bitmap" : "rebuilt wholly");
	printf("      region size : %s (%llu bytes), %llu regions\n",
	       fm_format_size(sb->region_size, s2, sizeof(s2)),
	       (unsigned long long)sb->region_size, (unsigned long long)nr);
	printf("           bitmap : %llu bytes at %llu; %llu of %llu bits set (%s dirty)%s%s\n",
	       (unsigned long long)sb->bitmap_length, (unsigned long long)sb->bitmap_offset,
	       (unsigned long long)set, (unsigned long long)nr,
	       fm_format_size(MIN(set * sb->region_size, sb->image_size), s1, sizeof(s1)),
	       set ? ": " : "", ranges->str);
	if (sb->features & FM_SB_FEAT_CHECKSUMS)
		printf("        checksums : crc32c per %u bytes, %llu bytes at %llu\n",
		       sb->csum_block_size, (unsigned long long)sb->csum_length,
		       (unsigned long long)sb->csum_offset);
	else
		printf("        checksums : none\n");
	if (wm) {
		g_autoptr(GString) wr = g_string_new(NULL);
		uint64_t w = append_ranges(wr, wm, nr);

		printf("          written : %llu of %llu regions (%s) at %llu%s%s\n",
		       (unsigned long long)w, (unsigned long long)nr,
		       fm_format_size(MIN(w * sb->region_size, sb->image_size), s1, sizeof(s1)),
		       (unsigned long long)sb->written_offset, w ? ": " : "", wr->str);
	} else {
		printf("          written : not tracked (every region counts as written)\n");
	}
	printf("        leg table :\n");
	printf("      slot  uuid                                  state       events  "
	       "last in sync\n");
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		char seen[24] = "-";

		if (sb->legs[i].state == FM_LEG_EMPTY)
			continue;
		if (sb->features & FM_SB_FEAT_GENERATIONS && sb->last_in_sync[i])
			snprintf(seen, sizeof(seen), "%llu",
				 (unsigned long long)sb->last_in_sync[i]);
		char repl[32] = "";

		if (sb->legs[i].flags & FM_SB_LEG_REPLACEMENT)
			snprintf(repl, sizeof(repl), "  replaces slot %u",
				 (unsigned)FM_SB_LEG_REPLACED_SLOT(sb->legs[i].flags));
		printf("      %-4u  %s  %-10s  %-6llu  %-12s%s%s%s\n", i,
		       fm_uuid_unparse(sb->legs[i].uuid, u), slot_word(&sb->legs[i]),
		       (unsigned long long)sb->legs[i].events, seen,
		       sb->legs[i].flags & FM_SB_LEG_WRITE_MOSTLY ? "  write-mostly" : "",
		       repl, i == sb->leg_index ? "  (this leg)" : "");
	}
	/* The bad-block list (FM_SB_FEAT_BAD_BLOCKS): blocks a leg could not
	 * write; reads of them go to the other legs. */
	if (!sb->nr_bad)
		printf("       bad blocks : none\n");
	else
		printf("       bad blocks : %u entries (of %d); blocks a leg could not write:\n",
		       sb->nr_bad, FM_SB_BAD_MAX);
	for (unsigned k = 0; k < sb->nr_bad; k++)
		printf("      slot %-2u  bytes %llu + %llu\n", FM_SB_BAD_SLOT(sb->bad[k]),
		       (unsigned long long)FM_SB_BAD_BLOCK(sb->bad[k]) * FM_SB_BAD_BLOCK_SIZE,
		       (unsigned long long)FM_SB_BAD_LEN(sb->bad[k]) * FM_SB_BAD_BLOCK_SIZE);
}

static void print_json(JsonBuilder *b, const char *path, const struct fm_sb *sb,
		       const uint8_t *bm, const uint8_t *wm)
{
	g_autoptr(GString) ranges = g_string_new(NULL);
	uint64_t nr = fm_sb_nr_regions(sb), set = append_ranges(ranges, bm, nr);
	g_autofree char *version = g_strdup_printf("%u.%u", sb->version_major,
						   sb->version_minor);
	char u[37];

	json_builder_begin_object(b);
	cli_json_str(b, "path", path);
	cli_json_str(b, "array_uuid", fm_uuid_unparse(sb->array_uuid, u));
	cli_json_str(b, "name", sb->name);
	cli_json_str(b, "leg_uuid", fm_uuid_unparse(sb->leg_uuid, u));
	cli_json_int(b, "leg_index", sb->leg_index);
	cli_json_str(b, "version", version);
	cli_json_int(b, "events", sb->events);
	cli_json_bool(b, "clean", sb->state_flags & FM_SB_CLEAN);
	cli_json_int(b, "ctime", sb->ctime);
	cli_json_int(b, "utime", sb->utime);
	cli_json_int(b, "image_size", sb->image_size);
	cli_json_int(b, "data_offset", sb->data_offset);
	cli_json_int(b, "block_size", sb->block_size);
	cli_json_int(b, "recovery_offset", sb->recovery_offset);
	cli_json_bool(b, "recovery_from_bitmap", sb->recovery_flags & FM_SB_RECOVERY_BITMAP);
	cli_json_int(b, "region_size", sb->region_size);
	cli_json_int(b, "nr_regions", nr);
	cli_json_int(b, "bitmap_offset", sb->bitmap_offset);
	cli_json_int(b, "bitmap_length", sb->bitmap_length);
	cli_json_int(b, "bitmap_set", set);
	cli_json_str(b, "bitmap_ranges", ranges->str);
	json_builder_set_member_name(b, "bitmap_regions");
	json_builder_begin_array(b);
	for (uint64_t r = 0; r < nr; r++)
		if (bit_set(bm, r))
			json_builder_add_int_value(b, (gint64)r);
	json_builder_end_array(b);
	cli_json_bool(b, "checksums", sb->features & FM_SB_FEAT_CHECKSUMS);
	if (sb->features & FM_SB_FEAT_CHECKSUMS) {
		cli_json_str(b, "csum_algo", "crc32c");
		cli_json_int(b, "csum_block_size", sb->csum_block_size);
		cli_json_int(b, "csum_offset", sb->csum_offset);
		cli_json_int(b, "csum_length", sb->csum_length);
	}
	/* written_regions: null without a written-region map (all written) */
	cli_json_bool(b, "written_map", wm != NULL);
	json_builder_set_member_name(b, "written_regions");
	if (wm) {
		g_autoptr(GString) wr = g_string_new(NULL);

		json_builder_add_int_value(b, (gint64)append_ranges(wr, wm, nr));
		cli_json_str(b, "written_ranges", wr->str);
		cli_json_int(b, "written_offset", sb->written_offset);
	} else {
		json_builder_add_null_value(b);
	}
	json_builder_set_member_name(b, "table");
	json_builder_begin_array(b);
	for (unsigned i = 0; i < FM_SB_MAX_LEGS; i++) {
		if (sb->legs[i].state == FM_LEG_EMPTY)
			continue;
		json_builder_begin_object(b);
		cli_json_int(b, "slot", i);
		cli_json_str(b, "uuid", fm_uuid_unparse(sb->legs[i].uuid, u));
		cli_json_str(b, "state", slot_word(&sb->legs[i]));
		cli_json_int(b, "events", sb->legs[i].events);
		cli_json_bool(b, "write_mostly", sb->legs[i].flags & FM_SB_LEG_WRITE_MOSTLY);
		cli_json_bool(b, "missing", sb->legs[i].flags & FM_SB_LEG_MISSING);
		/* the slot this leg replaces (`replace`), null for none */
		if (sb->legs[i].flags & FM_SB_LEG_REPLACEMENT) {
			cli_json_int(b, "replaces", FM_SB_LEG_REPLACED_SLOT(sb->legs[i].flags));
		} else {
			json_builder_set_member_name(b, "replaces");
			json_builder_add_null_value(b);
		}
		cli_json_int(b, "last_in_sync", sb->last_in_sync[i]);
		/* its bad-block list: [{offset, length}] in bytes of the image */
		json_builder_set_member_name(b, "bad_blocks");
		json_builder_begin_array(b);
		for (unsigned k = 0; k < sb->nr_bad; k++) {
			if (FM_SB_BAD_SLOT(sb->bad[k]) != i)
				continue;
			json_builder_begin_object(b);
			cli_json_int(b, "offset", FM_SB_BAD_BLOCK(sb->bad[k]) * FM_SB_BAD_BLOCK_SIZE);
			cli_json_int(b, "length", (uint64_t)FM_SB_BAD_LEN(sb->bad[k]) *
					  FM_SB_BAD_BLOCK_SIZE);
			json_builder_end_object(b);
		}
		json_builder_end_array(b);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	json_builder_end_object(b);
}

int cmd_examine(int argc, char **argv)
{
	gboolean json = FALSE;
	g_auto(GStrv) legs = NULL;
	GOptionEntry entries[] = {
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
		{ NULL },
	};
	g_autoptr(JsonBuilder) b = json_builder_new();
	int code = FM_EXIT_OK;
	unsigned shown = 0;

	code = cli_parse_args("examine", "LEG...",
		"Print what each LEG holds on disk, like mdadm --examine and\n"
		"--examine-bitmap: array and leg UUIDs, name, leg index, event counter,\n"
		"clean or dirty, geometry, the write-intent bitmap (bits set, as region\n"
		"ranges such as 0-3,17), the written-region map (regions written since\n"
		"create) and the leg table (slot, UUID, state, events).\n"
		"Offline: the legs are opened read-only and not locked, so the legs of a\n"
		"mounted array can be examined too (the daemon may hold newer state).\n"
		"\n"
		"Exit status: 0 every leg shown; 1 a read failed; 2 usage; 3 some LEG\n"
		"holds no valid superblock (the others are still shown).",
		entries, 1, G_MAXUINT, &argc, &argv, &legs);
	if (code)
		return code;
	json_builder_begin_object(b);
	json_builder_set_member_name(b, "legs");
	json_builder_begin_array(b);
	for (char **l = legs; *l; l++) {
		g_autofree uint8_t *bm = NULL, *wm = NULL;
		struct fm_sb sb;
		int r = read_leg(*l, &sb, &bm, &wm);

		if (r) {
			/* 3 (a refused leg) wins over 1 (an I/O error). */
			if (code != FM_EXIT_LEG)
				code = r;
			continue;
		}
		if (json) {
			print_json(b, *l, &sb, bm, wm);
		} else {
			if (shown)
				putchar('\n');
			print_text(*l, &sb, bm, wm);
		}
		shown++;
	}
	dmio_engine_shutdown();
	if (json) {
		g_autofree char *text = NULL;

		json_builder_end_array(b);
		json_builder_end_object(b);
		text = cli_json_text(b);
		printf("%s\n", text);
	}
	return code;
}
