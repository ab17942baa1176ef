/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fault-injection options: `fusemirror inject` options -> struct dmio_fault,
 * the struct <-> the control-socket words that carry it, and its
 * description in `status`.  The client does every check it can, so a bad
 * value is a usage error (exit 2) before the daemon is asked; the daemon
 * parses the words again (fm_fault_from_words) and refuses what a client
 * of its own making could still send.
 *
 * Ranges are image bytes on the command line and image sectors in the
 * struct and on the wire (mirror_inject() takes image sectors).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "fusemirror/common.h"

#define ALL_FLAGS (DMIO_FAULT_READS | DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES | \
		   DMIO_FAULT_DROP_WRITES | DMIO_FAULT_CORRUPT_READS | DMIO_FAULT_HEAL_ON_WRITE | \
		   DMIO_FAULT_FLIP_WRITES | DMIO_FAULT_MISDIRECT_WRITES | DMIO_FAULT_DELAY_WRITES | \
		   DMIO_FAULT_DELAY_READS)

/* DMIO_FAULT_HEAL_ON_WRITE tracks at most this many sectors (dmio.h). */
#define HEAL_MAX_SECTORS (1ull << 24)

static const struct {
	unsigned flag;
	const char *word;       /* on the wire and in JSON */
	const char *text;       /* in descriptions */
} flag_names[] = {
	{ DMIO_FAULT_READS, "reads", "reads" },
	{ DMIO_FAULT_WRITES, "writes", "writes" },
	{ DMIO_FAULT_FLUSHES, "flushes", "flushes" },
	{ DMIO_FAULT_DROP_WRITES, "drop_writes", "writes dropped" },
	{ DMIO_FAULT_CORRUPT_READS, "corrupt_reads", "reads corrupted" },
	{ DMIO_FAULT_HEAL_ON_WRITE, "heal_on_write", "healed by a write" },
	{ DMIO_FAULT_FLIP_WRITES, "flip_writes", "writes bit-flipped on disk" },
	{ DMIO_FAULT_MISDIRECT_WRITES, "misdirect_writes", "writes misdirected" },
	{ DMIO_FAULT_DELAY_WRITES, "delay_writes", "writes delayed" },
	{ DMIO_FAULT_DELAY_READS, "delay_reads", "reads delayed" },
};

static bool bad(GError **err, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool bad(GError **err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_propagate_error(err, g_error_new_valist(FM_CLI_ERROR, EINVAL, fmt, ap));
	va_end(ap);
	return false;
}

int fm_errno_parse(const char *s)
{
	guint64 v;

	if (!s || !*s)
		return -EINVAL;
	if (g_ascii_isdigit(*s))
		return g_ascii_string_to_unsigned(s, 10, 1, 4095, &v, NULL) ? (int)v : -EINVAL;
	for (int e = 1; e < 4096; e++) {
		const char *name = strerrorname_np(e);

		if (name && !strcasecmp(name, s))
			return e;
	}
	return -EINVAL;
}

/* "EIO", or the number when the C library has no name for it. */
static const char *errno_name(int e, char buf[16])
{
	const char *name = e > 0 ? strerrorname_np(e) : NULL;

	if (name)
		return name;
	g_snprintf(buf, 16, "%d", e);
	return buf;
}

static bool parse_u64(const char *opt, const char *val, uint64_t min, uint64_t max,
		      uint64_t *ret, GError **err)
{
	guint64 v;

	if (!g_ascii_string_to_unsigned(val, 10, min, max, &v, NULL))
		return bad(err, "%s %s: expected a number from %llu to %llu", opt, val,
			   (unsigned long long)min, (unsigned long long)max);
	*ret = v;
	return true;
}

/* A byte count that is whole sectors, as sectors. */
static bool parse_sectors(const char *opt, const char *val, uint64_t *ret, GError **err)
{
	uint64_t v = 0;

	if (fm_parse_size(val, &v) < 0)
		return bad(err, "%s %s: not a size (e.g. 4096, 4k, 1M)", opt, val);
	if (v % FM_SECTOR_SIZE)
		return bad(err, "%s %s: not a multiple of %u bytes (a sector)", opt, val,
			   FM_SECTOR_SIZE);
	*ret = v >> FM_SECTOR_SHIFT;
	return true;
}

bool fm_fault_args_given(const struct fm_fault_args *a)
{
	return a->read || a->write || a->flush || a->drop_writes || a->corrupt_reads ||
	       a->flip_writes || a->misdirect_writes || a->heal_on_write || a->delay_writes ||
	       a->delay_reads || a->offset || a->length || a->rate || a->probability || a->error || a->up ||
	       a->down || a->seed;
}

bool fm_fault_from_args(const struct fm_fault_args *a, struct dmio_fault *ret, GError **err)
{
	struct dmio_fault f = { 0 };
	uint64_t v = 0;

	if (a->read)
		f.flags |= DMIO_FAULT_READS;
	if (a->write)
		f.flags |= DMIO_FAULT_WRITES;
	if (a->flush)
		f.flags |= DMIO_FAULT_FLUSHES;
	if (a->drop_writes)
		f.flags |= DMIO_FAULT_DROP_WRITES;
	if (a->corrupt_reads)
		f.flags |= DMIO_FAULT_CORRUPT_READS;
	if (a->flip_writes)
		f.flags |= DMIO_FAULT_FLIP_WRITES;
	if (a->misdirect_writes)
		f.flags |= DMIO_FAULT_MISDIRECT_WRITES;
	if (a->delay_writes) {
		uint64_t ms = 0;

		if (!parse_u64("--delay-writes", a->delay_writes, 1, 60000, &ms, err))
			return false;
		if (a->write || a->drop_writes)
			return bad(err, "--delay-writes and --write/--drop-writes exclude each "
				   "other (a delayed write is written)");
		f.flags |= DMIO_FAULT_DELAY_WRITES;
		f.delay_ms = (uint32_t)ms;
	}
	if (a->delay_reads) {
		uint64_t ms = 0;

		if (!parse_u64("--delay-reads", a->delay_reads, 1, 60000, &ms, err))
			return false;
		if (a->read || a->corrupt_reads)
			return bad(err, "--delay-reads and --read/--corrupt-reads exclude each "
				   "other (a delayed read is read, intact)");
		if (f.delay_ms && f.delay_ms != ms)
			return bad(err, "--delay-reads %s and --delay-writes %s: a fault has one "
				   "delay; give both the same", a->delay_reads, a->delay_writes);
		f.flags |= DMIO_FAULT_DELAY_READS;
		f.delay_ms = (uint32_t)ms;
	}
	if (!f.flags)
		f.flags = DMIO_FAULT_READS | DMIO_FAULT_WRITES;
	if (a->heal_on_write) {
		if (!a->read)
			return bad(err, "--heal-on-write needs --read (a bad block that reads "
				   "fine once rewritten)");
		f.flags |= DMIO_FAULT_HEAL_ON_WRITE;
	}
	if (a->write && a->drop_writes)
		return bad(err, "--write and --drop-writes exclude each other (a write either "
			   "fails or is dropped)");
	if ((a->write || a->drop_writes) + a->flip_writes + a->misdirect_writes > 1)
		return bad(err, "--write/--drop-writes, --flip-writes and --misdirect-writes "
			   "exclude each other (a write fails, is dropped, is flipped or lands "
			   "elsewhere)");
	if (a->read && a->corrupt_reads)
		return bad(err, "--read and --corrupt-reads exclude each other (a read either "
			   "fails or returns damaged data)");

	if (a->error) {
		int e = fm_errno_parse(a->error);

		if (e < 0)
			return bad(err, "--error %s: not an errno name or number (e.g. EIO, "
				   "ENOSPC, EROFS, 5)", a->error);
		if (!(f.flags & (DMIO_FAULT_READS | DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES)))
			return bad(err, "--error %s: only failed I/O has an errno; give --read, "
				   "--write or --flush", a->error);
		f.error = e;
	} else if (f.flags & (DMIO_FAULT_READS | DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES)) {
		f.error = EIO;
	}

	if (a->offset && !parse_sectors("--offset", a->offset, &f.sector, err))
		return false;
	if (a->length && !parse_sectors("--length", a->length, &f.count, err))
		return false;
	if ((f.flags & DMIO_FAULT_MISDIRECT_WRITES) && f.count < 16)
		return bad(err, "--misdirect-writes needs a --length of 8k or more (the "
			   "writes land elsewhere in that range)");
	if (f.sector && !f.count)
		return bad(err, "--offset %s needs a --length (without both, the whole leg "
			   "is affected)", a->offset);
	if ((f.flags & DMIO_FAULT_HEAL_ON_WRITE) && (!f.count || f.count > HEAL_MAX_SECTORS))
		return bad(err, "--heal-on-write needs a --length from 512 bytes to 8G (the "
			   "blocks healed are remembered)");
	if (f.sector + f.count > (UINT64_MAX >> FM_SECTOR_SHIFT))
		return bad(err, "--offset %s --length %s: the range ends beyond 2^64 bytes",
			   a->offset ? a->offset : "0", a->length);

	if (a->rate && a->probability)
		return bad(err, "--rate and --probability exclude each other (both give the "
			   "chance that a piece of I/O is hit)");
	if (a->rate) {
		if (!parse_u64("--rate", a->rate, 1, 1000000, &v, err))
			return false;
		f.rate_ppm = (uint32_t)v;
	}
	if (a->probability) {
		const char *s = a->probability;
		size_t len = strlen(s);
		bool percent = len && s[len - 1] == '%';
		g_autofree char *num = g_strndup(s, percent ? len - 1 : len);
		char *end = NULL;
		double p = *num ? g_ascii_strtod(num, &end) : NAN;

		if (num[0] == '-' || num[0] == '+' || !end || *end || !isfinite(p))
			return bad(err, "--probability %s: not a number (e.g. 0.01 or 1%%)", s);
		if (percent)
			p /= 100.0;
		if (p <= 0.0 || p > 1.0)
			return bad(err, "--probability %s: expected a fraction above 0 and at "
				   "most 1 (or a percentage up to 100%%)", s);
		v = (uint64_t)llround(p * 1e6);
		if (v == 0)
			return bad(err, "--probability %s: below one in a million (the "
				   "finest rate)", s);
		f.rate_ppm = (uint32_t)v;
	}

	if (a->up || a->down) {
		if (!a->up || !a->down)
			return bad(err, "--%s needs --%s too (a flakey cycle is up for --up "
				   "ms, then down for --down ms)", a->up ? "up" : "down",
				   a->up ? "down" : "up");
		if (!parse_u64("--up", a->up, 0, UINT32_MAX, &v, err))
			return false;
		f.up_ms = (uint32_t)v;
		if (!parse_u64("--down", a->down, 1, UINT32_MAX, &v, err))
			return false;
		f.down_ms = (uint32_t)v;
	}
	if (a->seed && !parse_u64("--seed", a->seed, 0, UINT64_MAX, &f.seed, err))
		return false;
	*ret = f;
	return true;
}

/*----------------------------------------------------------------*/
/* On the wire: "flags=reads,writes" "error=5" "sector=N" "count=N"
 * "rate_ppm=N" "up_ms=N" "down_ms=N" "seed=N"; flags and error first. */

char **fm_fault_to_words(const struct dmio_fault *f)
{
	g_autoptr(GPtrArray) w = g_ptr_array_new();
	g_autoptr(GString) flags = g_string_new("flags=");

	for (unsigned i = 0; i < FM_ARRAY_SIZE(flag_names); i++) {
		if (!(f->flags & flag_names[i].flag))
			continue;
		if (flags->len > strlen("flags="))
			g_string_append_c(flags, ',');
		g_string_append(flags, flag_names[i].word);
	}
	g_ptr_array_add(w, g_string_free(g_steal_pointer(&flags), FALSE));
	g_ptr_array_add(w, g_strdup_printf("error=%d", f->error));
	g_ptr_array_add(w, g_strdup_printf("sector=%llu", (unsigned long long)f->sector));
	g_ptr_array_add(w, g_strdup_printf("count=%llu", (unsigned long long)f->count));
	g_ptr_array_add(w, g_strdup_printf("rate_ppm=%u", f->rate_ppm));
	g_ptr_array_add(w, g_strdup_printf("up_ms=%u", f->up_ms));
	g_ptr_array_add(w, g_strdup_printf("down_ms=%u", f->down_ms));
	g_ptr_array_add(w, g_strdup_printf("seed=%llu", (unsigned long long)f->seed));
	if (f->delay_ms)
		g_ptr_array_add(w, g_strdup_printf("delay_ms=%u", f->delay_ms));
	g_ptr_array_add(w, NULL);
	return (char **)g_ptr_array_free(g_steal_pointer(&w), FALSE);
}

bool fm_fault_from_words(const char *const *words, unsigned n, struct dmio_fault *ret,
			 GError **err)
{
	struct dmio_fault f = { 0 };

	for (unsigned i = 0; i < n; i++) {
		const char *eq = strchr(words[i], '=');
		g_autofree char *key = eq ? g_strndup(words[i], (gsize)(eq - words[i])) : NULL;
		const char *val = eq ? eq + 1 : NULL;
		uint64_t v = 0;

		if (!key)
			return bad(err, "inject: '%s' is not key=value", words[i]);
		if (!strcmp(key, "flags")) {
			g_auto(GStrv) names = g_strsplit(val, ",", -1);

			f.flags = 0;
			for (char **nm = names; *nm; nm++) {
				unsigned j;

				for (j = 0; j < FM_ARRAY_SIZE(flag_names); j++)
					if (!strcmp(*nm, flag_names[j].word))
						break;
				if (j == FM_ARRAY_SIZE(flag_names)) {
					g_autoptr(GString) known = g_string_new(NULL);

					for (j = 0; j < FM_ARRAY_SIZE(flag_names); j++)
						g_string_append_printf(known, "%s%s", j ? ", " : "",
								       flag_names[j].word);
					return bad(err, "inject: flags=%s: unknown flag '%s' (%s)",
						   val, *nm, known->str);
				}
				f.flags |= flag_names[j].flag;
			}
		} else if (!strcmp(key, "error")) {
			int e = strcmp(val, "0") ? fm_errno_parse(val) : 0;

			if (e < 0)
				return bad(err, "inject: error=%s: not an errno", val);
			f.error = e;
		} else if (!strcmp(key, "sector")) {
			if (!parse_u64("inject: sector", val, 0, UINT64_MAX, &f.sector, err))
				return false;
		} else if (!strcmp(key, "count")) {
			if (!parse_u64("inject: count", val, 0, UINT64_MAX, &f.count, err))
				return false;
		} else if (!strcmp(key, "rate_ppm")) {
			if (!parse_u64("inject: rate_ppm", val, 0, 1000000, &v, err))
				return false;
			f.rate_ppm = (uint32_t)v;
		} else if (!strcmp(key, "up_ms")) {
			if (!parse_u64("inject: up_ms", val, 0, UINT32_MAX, &v, err))
				return false;
			f.up_ms = (uint32_t)v;
		} else if (!strcmp(key, "down_ms")) {
			if (!parse_u64("inject: down_ms", val, 0, UINT32_MAX, &v, err))
				return false;
			f.down_ms = (uint32_t)v;
		} else if (!strcmp(key, "seed")) {
			if (!parse_u64("inject: seed", val, 0, UINT64_MAX, &f.seed, err))
				return false;
		} else if (!strcmp(key, "delay_ms")) {
			if (!parse_u64("inject: delay_ms", val, 1, 60000, &v, err))
				return false;
			f.delay_ms = (uint32_t)v;
		} else {
			return bad(err, "inject: unknown key '%s' (flags, error, sector, count, "
				   "rate_ppm, up_ms, down_ms, seed, delay_ms)", key);
		}
	}
	if (!f.flags || (f.flags & ~ALL_FLAGS))
		return bad(err, "inject: no flags= given (what should fail?)");
	if (!(f.flags & (DMIO_FAULT_DELAY_WRITES | DMIO_FAULT_DELAY_READS)) != !f.delay_ms)
		return bad(err, "inject: delay_writes or delay_reads and delay_ms= go together");
	if ((f.flags & DMIO_FAULT_HEAL_ON_WRITE) &&
	    (!(f.flags & DMIO_FAULT_READS) || !f.count || f.count > HEAL_MAX_SECTORS))
		return bad(err, "inject: heal_on_write needs reads and a count of 1 to %llu "
			   "sectors", HEAL_MAX_SECTORS);
	if ((f.flags & DMIO_FAULT_MISDIRECT_WRITES) && f.count < 16)
		return bad(err, "inject: misdirect_writes needs a count of 16 sectors or more");
	if (f.count && f.sector > UINT64_MAX - f.count)
		return bad(err, "inject: sector=%llu count=%llu wraps around",
			   (unsigned long long)f.sector, (unsigned long long)f.count);
	*ret = f;
	return true;
}

/*----------------------------------------------------------------*/
/* Descriptions */

void fm_fault_describe(const struct dmio_fault *f, GString *out)
{
	unsigned fails = f->flags & (DMIO_FAULT_READS | DMIO_FAULT_WRITES | DMIO_FAULT_FLUSHES);
	bool first = true;
	char eb[16], s1[32], s2[32];

	if (fails) {
		for (unsigned i = 0; i < 3; i++) {
			if (!(fails & flag_names[i].flag))
				continue;
			g_string_append_printf(out, "%s%s", first ? "" : "+", flag_names[i].text);
			first = false;
		}
		g_string_append_printf(out, " fail with %s", errno_name(f->error ? f->error : EIO, eb));
	}
	for (unsigned i = 3; i < FM_ARRAY_SIZE(flag_names); i++) {
		if (!(f->flags & flag_names[i].flag))
			continue;
		g_string_append_printf(out, "%s%s", first ? "" : ", ", flag_names[i].text);
		first = false;
	}
	if (f->count)
		g_string_append_printf(out, ", image bytes %llu+%llu (%s at %s)",
				       (unsigned long long)(f->sector << FM_SECTOR_SHIFT),
				       (unsigned long long)(f->count << FM_SECTOR_SHIFT),
				       fm_format_size(f->count << FM_SECTOR_SHIFT, s1, sizeof(s1)),
				       fm_format_size(f->sector << FM_SECTOR_SHIFT, s2, sizeof(s2)));
	else
		g_string_append(out, ", whole leg");
	if (f->rate_ppm && f->rate_ppm < 1000000)
		g_string_append_printf(out, ", %g%% of pieces (%u ppm, seed %llu)",
				       f->rate_ppm / 1e4, f->rate_ppm,
				       (unsigned long long)f->seed);
	if (f->down_ms)
		g_string_append_printf(out, ", flakey: up %u ms, down %u ms", f->up_ms,
				       f->down_ms);
	if (f->delay_ms)
		g_string_append_printf(out, ", by %u ms", f->delay_ms);
}

void fm_fault_json(const struct dmio_fault *f, JsonBuilder *b)
{
	const struct { const char *name; uint64_t v; } nums[] = {
		{ "sector", f->sector }, { "count", f->count },
		{ "offset", f->sector << FM_SECTOR_SHIFT },
		{ "length", f->count << FM_SECTOR_SHIFT }, { "rate_ppm", f->rate_ppm },
		{ "up_ms", f->up_ms }, { "down_ms", f->down_ms }, { "seed", f->seed },
		{ "delay_ms", f->delay_ms },
	};
	char eb[16];
	int e = f->error ? f->error : EIO;

	json_builder_begin_object(b);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(flag_names); i++) {
		json_builder_set_member_name(b, flag_names[i].word);
		json_builder_add_boolean_value(b, (f->flags & flag_names[i].flag) != 0);
	}
	json_builder_set_member_name(b, "error");
	json_builder_add_string_value(b, errno_name(e, eb));
	json_builder_set_member_name(b, "errno");
	json_builder_add_int_value(b, e);
	for (unsigned i = 0; i < FM_ARRAY_SIZE(nums); i++) {
		json_builder_set_member_name(b, nums[i].name);
		json_builder_add_int_value(b, (gint64)nums[i].v);
	}
	json_builder_end_object(b);
}
