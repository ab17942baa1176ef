/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `status`: ONE model of the running array (struct status, filled once
 * under d->lock by status_build()), rendered four ways:
 *   text        for people (`fusemirror status`)
 *   json        one object (`status --format=json`), built with json-glib
 *   prometheus  the text exposition format, for node_exporter's textfile
 *               collector (`status --format=prometheus`)
 *   sync        the sync action as key=value words (`scrub --wait`)
 * A field shown by one is taken from the model, never fetched again, so
 * the renderings of one call agree.  Strings that are not UTF-8 (a leg's
 * path) get U+FFFD for each invalid byte in JSON and Prometheus, which
 * must be UTF-8.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "daemon.h"
#include "fusemirror/common.h"
#include "fusemirror/dmio.h"

struct status_leg {
	unsigned slot;
	struct mirror_leg_stats ls;
};

struct status {
	/* the array */
	char uuid[37];
	char name[64];
	const char *state;              /* the daemon's view: "starting", ... */
	char *image;                    /* the image file's path */
	const char *mountpoint;
	uint64_t size;
	bool readonly;
	uint64_t sb_events;             /* the superblocks' event counter */
	int pid;
	uint64_t uptime_s;
	struct mirror_status ms;
	const char *cache_mode;
	unsigned block_size;
	const char *read_policy;
	/* its legs (slots in use) */
	unsigned nr_legs;
	struct status_leg *legs;
	/* counters */
	struct mirror_stats mst;
	struct bufio_stats bs;
	struct front_stats fs;
	struct dmio_stats ds;           /* the engine's, process-wide */
	enum front_transport transport;
	unsigned nr_queues;             /* io_uring queues (none on /dev/fuse) */
	struct front_queue_stats *queues;
	uint64_t event_counts[FM_EVENT__MAX];
	unsigned monitors;
};

/* The model, under d->lock with d->m alive. */
static void status_build_locked(struct daemon *d, struct status *s)
{
	struct fm_sb sb;
	unsigned n = mirror_nr_legs(d->m);

	memset(s, 0, sizeof(*s));
	mirror_get_sb(d->m, &sb);
	mirror_get_status(d->m, &s->ms);
	if (!s->ms.sync_speed_min)
		s->ms.sync_speed_min = d->cfg->sync_speed_min;
	if (!s->ms.sync_speed_max)
		s->ms.sync_speed_max = d->cfg->sync_speed_max;
	fm_uuid_unparse(sb.array_uuid, s->uuid);
	g_strlcpy(s->name, sb.name, sizeof(s->name));
	s->state = d->stopping ? "stopping" : !d->f ? "starting" :
		   s->ms.state ? s->ms.state : "active";
	s->image = g_strdup(d->image_path ? d->image_path : d->cfg->mountpoint);
	s->mountpoint = d->cfg->mountpoint;
	s->size = mirror_size(d->m);
	s->readonly = mirror_is_readonly(d->m);
	s->sb_events = MAX(s->ms.events, sb.events);
	s->pid = (int)getpid();
	s->uptime_s = (fm_now_ns() - d->started_ns) / 1000000000ull;
	s->cache_mode = d->cfg->cache_mode == FRONT_CACHE_WRITETHROUGH ? "writethrough"
								       : "writeback";
	s->block_size = d->c ? bufio_get_block_size(d->c) : 0;
	s->read_policy = mirror_read_policy_name(mirror_get_read_policy(d->m));
	s->legs = g_new0(struct status_leg, MAX(n, 1u));
	for (unsigned i = 0; i < n; i++) {
		struct status_leg *l = &s->legs[s->nr_legs];

		mirror_get_leg_stats(d->m, i, &l->ls);
		if (l->ls.state == FM_LEG_EMPTY)
			continue;
		l->slot = i;
		s->nr_legs++;
	}
	mirror_get_stats(d->m, &s->mst);
	dmio_get_stats(&s->ds);
	if (d->c)
		bufio_get_stats(d->c, &s->bs);
	if (d->f)
		front_get_stats(d->f, &s->fs);
	else
		s->fs = d->final_fs;
	s->transport = d->transport;
	s->nr_queues = d->f ? front_get_nr_queues(d->f) : 0;
	s->queues = g_new0(struct front_queue_stats, MAX(s->nr_queues, 1u));
	for (unsigned i = 0; i < s->nr_queues; i++)
		front_get_queue_stats(d->f, i, &s->queues[i]);
	daemon_events_counts(d->ev, s->event_counts);
	s->monitors = daemon_events_monitors(d->ev);
}

static void status_clear(struct status *s)
{
	g_free(s->image);
	g_free(s->legs);
	g_free(s->queues);
}

static unsigned legs_in_sync(const struct status *s)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->nr_legs; i++)
		n += s->legs[i].ls.state == FM_LEG_IN_SYNC;
	return n;
}

static bool is_scrub(enum mirror_sync_action a)
{
	return a == MIRROR_SYNC_CHECK || a == MIRROR_SYNC_REPAIR;
}

/*----------------------------------------------------------------*/
/* text */

/* "7 s", "3 min 20 s", "2 h 5 min"; "?" when unknown. */
static char *format_eta(uint64_t s, char *buf, size_t len)
{
	if (s == 0)
		g_snprintf(buf, len, "?");
	else if (s < 60)
		g_snprintf(buf, len, "%llu s", (unsigned long long)s);
	else if (s < 3600)
		g_snprintf(buf, len, "%llu min %llu s", (unsigned long long)(s / 60),
			   (unsigned long long)(s % 60));
	else
		g_snprintf(buf, len, "%llu h %llu min", (unsigned long long)(s / 3600),
			   (unsigned long long)(s % 3600 / 60));
	return buf;
}

/* Like /proc/mdstat's progress line:
 * "  resync:  [=====>..............]  28.3% (290.0 MiB/1.0 GiB) 85.3 MiB/s, ETA 9 s" */
static void text_progress(const struct mirror_status *st, GString *out)
{
	enum { BAR = 20 };
	uint64_t done = MIN(st->sync_done, st->sync_total);
	double pct = st->sync_total ? 100.0 * (double)done / (double)st->sync_total : 0.0;
	unsigned filled = st->sync_total ? (unsigned)(done * BAR / st->sync_total) : 0;
	char label[16], s1[32], s2[32], s3[32], s4[32];

	g_snprintf(label, sizeof(label), "%s:", mirror_sync_action_name(st->action));
	g_string_append_printf(out, "  %-8s [", label);
	for (unsigned i = 0; i < BAR; i++)
		g_string_append_c(out, i + 1 < filled || (i + 1 == filled && filled == BAR) ? '=' :
				       i + 1 == filled ? '>' : '.');
	g_string_append_printf(out, "] %5.1f%% (%s/%s) %s/s, ETA %s", pct,
			       fm_format_size(done, s1, sizeof(s1)),
			       fm_format_size(st->sync_total, s2, sizeof(s2)),
			       fm_format_size(st->sync_speed, s3, sizeof(s3)),
			       format_eta(st->sync_eta_s, s4, sizeof(s4)));
	if (is_scrub(st->action))
		g_string_append_printf(out, ", %llu mismatched sectors so far",
				       (unsigned long long)st->mismatches);
	g_string_append_c(out, '\n');
}

static void render_text(const struct status *s, GString *out)
{
	const struct mirror_status *st = &s->ms;
	char u[37], s1[32], s2[32], s3[32], s4[32];
	bool any = false;

	g_string_append_printf(out, "%s: fusemirror array %s%s%s%s\n", s->image, s->uuid,
			       *s->name ? " (" : "", s->name, *s->name ? ")" : "");
	g_string_append_printf(out, "  state:  %s, %u of %u legs in sync%s%s\n", s->state,
			       legs_in_sync(s), s->nr_legs, s->readonly ? ", read-only" : "",
			       st->failed ? ", FAILED: no leg left, every I/O fails" : "");
	g_string_append_printf(out, "  size:   %s (%llu bytes), block size %u, cache_mode=%s, "
			       "read_policy=%s\n",
			       fm_format_size(s->size, s1, sizeof(s1)),
			       (unsigned long long)s->size, s->block_size, s->cache_mode,
			       s->read_policy);
	g_string_append_printf(out, "  events: %llu; bitmap: %llu of %llu regions of %s set, "
			       "%llu page writes\n",
			       (unsigned long long)s->sb_events,
			       (unsigned long long)st->bitmap_set,
			       (unsigned long long)st->nr_regions,
			       fm_format_size(st->region_size, s1, sizeof(s1)),
			       (unsigned long long)st->bitmap_writes);
	if (st->action != MIRROR_SYNC_IDLE)
		text_progress(st, out);
	g_string_append_printf(out, "  sync:   %s, speed %s/s..%s/s; last: %s",
			       mirror_sync_action_name(st->action),
			       fm_format_size(st->sync_speed_min, s1, sizeof(s1)),
			       fm_format_size(st->sync_speed_max, s2, sizeof(s2)),
			       mirror_sync_action_name(st->last_action));
	if (is_scrub(st->last_action) || st->mismatches)
		g_string_append_printf(out, ", %llu mismatched sectors",
				       (unsigned long long)st->mismatches);
	g_string_append_printf(out, "; %llu regions resynced since mount",
			       (unsigned long long)st->resynced_regions);
	if (st->sync_read_bytes || st->sync_write_bytes)
		g_string_append_printf(out, "; this or last pass read %s, wrote %s",
				       fm_format_size(st->sync_read_bytes, s1, sizeof(s1)),
				       fm_format_size(st->sync_write_bytes, s2, sizeof(s2)));
	if (st->sync_zero_bytes)
		g_string_append_printf(out, ", zeroed %s of unwritten regions",
				       fm_format_size(st->sync_zero_bytes, s1, sizeof(s1)));
	if (st->written_map)
		g_string_append_printf(out, "\n  written: %llu of %llu regions (%s of %s); "
				       "%llu reads of unwritten regions answered with zeroes",
				       (unsigned long long)st->written_regions,
				       (unsigned long long)st->nr_regions,
				       fm_format_size(st->written_bytes, s1, sizeof(s1)),
				       fm_format_size(s->size, s2, sizeof(s2)),
				       (unsigned long long)st->unwritten_reads);
	else
		g_string_append(out, "\n  written: not tracked (every region counts as written)");
	g_string_append_printf(out, "\n  checksums: %s",
			       st->checksums ? "crc32c per 4 KiB block, verified on every read"
					     : "none");
	if (st->checksums)
		g_string_append_printf(out, "; %llu page writes",
				       (unsigned long long)st->checksum_page_writes);
	g_string_append(out, "\n  legs:\n");
	for (unsigned i = 0; i < s->nr_legs; i++) {
		const struct mirror_leg_stats *ls = &s->legs[i].ls;

		g_string_append_printf(out, "    %u  %-10s %s%s%s\n       uuid %s; reads %llu (%s), "
				       "writes %llu (%s); errors: %llu read (%llu corrected), "
				       "%llu write, %llu checksum\n",
				       s->legs[i].slot, cli_leg_state_word(ls->state, ls->missing),
				       *ls->path ? ls->path : ls->missing ? "(not present)" : "(closed)",
				       ls->write_mostly ? "  write-mostly" : "",
				       ls->direct || !*ls->path || ls->remote ? ""
										      : "  (buffered, no O_DIRECT)",
				       fm_uuid_unparse(ls->uuid, u),
				       (unsigned long long)ls->reads,
				       fm_format_size(ls->read_bytes, s1, sizeof(s1)),
				       (unsigned long long)ls->writes,
				       fm_format_size(ls->write_bytes, s2, sizeof(s2)),
				       (unsigned long long)ls->read_errors,
				       (unsigned long long)ls->corrected,
				       (unsigned long long)ls->write_errors,
				       (unsigned long long)ls->checksum_errors);
		if (ls->remote && ls->reconnecting && !ls->connected)
			g_string_append_printf(out, "       remote: disconnected, reconnecting (%u "
					       "failed attempts, the next %u.%03u s after the "
					       "last), round trip %llu.%03llu ms, %llu reconnects\n",
					       ls->reconnect_attempts,
					       ls->reconnect_delay_ms / 1000,
					       ls->reconnect_delay_ms % 1000,
					       (unsigned long long)(ls->rtt_us / 1000),
					       (unsigned long long)(ls->rtt_us % 1000),
					       (unsigned long long)ls->reconnects);
		else if (ls->remote)
			g_string_append_printf(out, "       remote: %s, round trip %llu.%03llu ms, "
					       "%llu reconnects\n",
					       ls->connected ? "connected" : "disconnected",
					       (unsigned long long)(ls->rtt_us / 1000),
					       (unsigned long long)(ls->rtt_us % 1000),
					       (unsigned long long)ls->reconnects);
		if (ls->bad_blocks)
			g_string_append_printf(out, "       bad blocks: %llu (it could not write "
					       "them; reads of them go to the other legs)\n",
					       (unsigned long long)ls->bad_blocks);
		if (*ls->note)
			g_string_append_printf(out, "       %s\n", ls->note);
		if (ls->fault_set) {
			g_string_append(out, "       fault injected: ");
			fm_fault_describe(&ls->fault, out);
			g_string_append_c(out, '\n');
		}
	}
	g_string_append_printf(out, "  cache:  %s used of %s (peak %s), %llu buffers, %llu dirty\n"
			       "          hits %llu, misses %llu, evictions %llu, "
			       "write errors %llu; block memory mapped %s\n",
			       fm_format_size(s->bs.bytes, s1, sizeof(s1)),
			       fm_format_size(s->bs.limit_bytes, s2, sizeof(s2)),
			       fm_format_size(s->bs.peak_bytes, s3, sizeof(s3)),
			       (unsigned long long)s->bs.buffers, (unsigned long long)s->bs.dirty,
			       (unsigned long long)s->bs.hits, (unsigned long long)s->bs.misses,
			       (unsigned long long)s->bs.evictions,
			       (unsigned long long)s->bs.write_errors,
			       fm_format_size(s->bs.data_bytes, s4, sizeof(s4)));
	g_string_append_printf(out, "          around the cache: %s read, %s written\n",
			       fm_format_size(s->bs.around_reads * s->block_size, s1, sizeof(s1)),
			       fm_format_size(s->bs.around_writes * s->block_size, s2, sizeof(s2)));
	g_string_append_printf(out, "  io:     %llu reads (%s), %llu writes (%s), %llu fsyncs, "
			       "%llu fallocates, %llu errors\n",
			       (unsigned long long)s->fs.reads,
			       fm_format_size(s->fs.read_bytes, s1, sizeof(s1)),
			       (unsigned long long)s->fs.writes,
			       fm_format_size(s->fs.write_bytes, s2, sizeof(s2)),
			       (unsigned long long)s->fs.fsyncs, (unsigned long long)s->fs.fallocates,
			       (unsigned long long)s->fs.errors);
	g_string_append_printf(out, "  fuse:   transport %s%s\n", front_transport_name(s->transport),
			       s->nr_queues ? "; per queue: requests, in flight, hand-offs, moves" : "");
	for (unsigned i = 0; i < s->nr_queues; i++)
		g_string_append_printf(out, "          queue %u (%u entries): %llu, %llu, %llu, %llu\n",
				       s->queues[i].cpu, s->queues[i].depth,
				       (unsigned long long)s->queues[i].requests,
				       (unsigned long long)s->queues[i].in_flight,
				       (unsigned long long)s->queues[i].handoffs,
				       (unsigned long long)s->queues[i].moves);
	for (int t = 0; t < FM_EVENT__MAX; t++) {
		if (!s->event_counts[t])
			continue;
		g_string_append_printf(out, "%s%s %llu", any ? ", " : "  events since start: ",
				       fm_event_name((enum fm_event_type)t),
				       (unsigned long long)s->event_counts[t]);
		any = true;
	}
	if (any)
		g_string_append_printf(out, "; %u monitor%s\n", s->monitors,
				       s->monitors == 1 ? "" : "s");
}

/* `sync`: the sync action's state on one line, for `scrub --wait`. */
static void render_sync(const struct status *s, GString *out)
{
	const struct mirror_status *st = &s->ms;

	g_string_append_printf(out, "action=%s done=%llu total=%llu speed=%llu eta_s=%llu "
			       "mismatches=%llu last_action=%s resynced_regions=%llu state=%s\n",
			       mirror_sync_action_name(st->action),
			       (unsigned long long)st->sync_done, (unsigned long long)st->sync_total,
			       (unsigned long long)st->sync_speed, (unsigned long long)st->sync_eta_s,
			       (unsigned long long)st->mismatches,
			       mirror_sync_action_name(st->last_action),
			       (unsigned long long)st->resynced_regions, s->state);
}

/*----------------------------------------------------------------*/
/* Field tables: the numbers of the model, each named once for JSON (its
 * member in its object) and, if it is a metric, for Prometheus (name,
 * type, help).  Offsets are into struct status, or into struct
 * mirror_leg_stats for leg_fields; the kind follows the field's type. */

enum status_kind { SK_BOOL, SK_INT, SK_UINT, SK_U64, SK_BLOCKS /* u64 x block_size */ };

struct status_field {
	const char *json;
	enum status_kind kind;
	size_t off;
	const char *metric;             /* NULL: not a metric */
	const char *type;               /* "counter" or "gauge" */
	const char *help;
	bool remote_only;               /* leg metric: remote legs only */
};

#define SK_OF(x) _Generic((x), bool: SK_BOOL, int: SK_INT, unsigned: SK_UINT, uint64_t: SK_U64)
/* A member of struct status (F) or of a leg's stats (LF); ...M: a metric. */
#define F(name, field) { name, SK_OF(((struct status *)0)->field), offsetof(struct status, field) }
#define FM(name, field, metric, type, help) \
	{ name, SK_OF(((struct status *)0)->field), offsetof(struct status, field), metric, type, help }
#define LF(name, field) \
	{ name, SK_OF(((struct mirror_leg_stats *)0)->field), \
	  offsetof(struct mirror_leg_stats, field) }
#define LFM(name, field, metric, type, help) \
	{ name, SK_OF(((struct mirror_leg_stats *)0)->field), \
	  offsetof(struct mirror_leg_stats, field), metric, type, help }
#define LFR(name, field, metric, type, help) \
	{ name, SK_OF(((struct mirror_leg_stats *)0)->field), \
	  offsetof(struct mirror_leg_stats, field), metric, type, help, true }

/* "array" (after uuid, name, state) */
static const struct status_field array_fields[] = {
	FM("size", size, "fusemirror_array_size_bytes", "gauge", "Image size in bytes."),
	F("readonly", readonly),
	FM("events", sb_events, "fusemirror_superblock_events", "gauge",
	   "The superblocks' event counter."),
	F("pid", pid),
	FM("uptime_s", uptime_s, "fusemirror_uptime_seconds", "gauge",
	   "Seconds since the daemon started."),
	FM("degraded", ms.degraded, "fusemirror_array_degraded", "gauge",
	   "1 when some slot of the leg table is not in sync."),
	FM("failed", ms.failed, "fusemirror_array_failed", "gauge",
	   "1 when no leg is left in sync (every I/O fails)."),
	F("in_sync", ms.nr_in_sync),
	F("faulty", ms.nr_faulty),
	F("rebuilding", ms.nr_rebuilding),
};

/* "sync" (after action and last_action) */
static const struct status_field sync_fields[] = {
	FM("done", ms.sync_done, "fusemirror_sync_done_bytes", "gauge",
	   "Bytes done by the running sync action."),
	FM("total", ms.sync_total, "fusemirror_sync_total_bytes", "gauge",
	   "Bytes the running sync action has to do."),
	FM("speed", ms.sync_speed, "fusemirror_sync_speed_bytes_per_second", "gauge",
	   "Recent speed of the running sync action."),
	F("eta_s", ms.sync_eta_s),
	F("speed_min", ms.sync_speed_min),
	F("speed_max", ms.sync_speed_max),
	FM("mismatches", ms.mismatches, "fusemirror_sync_mismatch_sectors", "gauge",
	   "Mismatched sectors found by the last or running scrub."),
	FM("resynced_regions", ms.resynced_regions, "fusemirror_resynced_regions_total", "counter",
	   "Regions copied by resync or recovery since the mount."),
	F("read_bytes", ms.sync_read_bytes),
	F("write_bytes", ms.sync_write_bytes),
	F("zero_bytes", ms.sync_zero_bytes),
};

static const struct status_field written_fields[] = {
	F("tracked", ms.written_map),
	FM("regions", ms.written_regions, "fusemirror_written_regions", "gauge",
	   "Regions written since create (all, without a written-region map)."),
	FM("bytes", ms.written_bytes, "fusemirror_written_region_bytes", "gauge",
	   "Bytes of the regions written since create."),
	FM("unwritten_reads", ms.unwritten_reads, "fusemirror_unwritten_reads_total", "counter",
	   "Reads of never-written regions answered with zeroes."),
};

static const struct status_field checksums_fields[] = {
	F("enabled", ms.checksums),
	F("page_writes", ms.checksum_page_writes),
};

static const struct status_field bitmap_fields[] = {
	F("region_size", ms.region_size),
	FM("regions", ms.nr_regions, "fusemirror_bitmap_regions", "gauge",
	   "Regions of the write-intent bitmap."),
	FM("set", ms.bitmap_set, "fusemirror_bitmap_set_regions", "gauge",
	   "Regions whose write-intent bit is set."),
	F("page_writes", ms.bitmap_writes),
};

/* each of "legs" (after path, slot, uuid, state; then note and fault);
 * the metrics have a sample per leg, labelled leg and path */
static const struct status_field leg_fields[] = {
	LF("direct", direct),
	LFM("reads", reads, "fusemirror_leg_reads_total", "counter",
	    "Read requests a leg served."),
	LFM("writes", writes, "fusemirror_leg_writes_total", "counter",
	    "Write requests sent to a leg."),
	LFM("read_bytes", read_bytes, "fusemirror_leg_read_bytes_total", "counter",
	    "Bytes read from a leg."),
	LFM("write_bytes", write_bytes, "fusemirror_leg_written_bytes_total", "counter",
	    "Bytes written to a leg."),
	LFM("read_errors", read_errors, "fusemirror_leg_read_errors_total", "counter",
	    "Failed reads of a leg."),
	LFM("write_errors", write_errors, "fusemirror_leg_write_errors_total", "counter",
	    "Failed writes to a leg."),
	LF("pending", pending),
	LFM("corrected", corrected, "fusemirror_leg_corrected_total", "counter",
	    "Read errors of a leg repaired from another leg."),
	LFM("checksum_errors", checksum_errors, "fusemirror_leg_checksum_errors_total", "counter",
	    "4 KiB blocks of a leg that failed checksum verification."),
	LFM("bad_blocks", bad_blocks, "fusemirror_leg_bad_blocks", "gauge",
	    "4 KiB blocks in a leg's bad-block list (it could not write them)."),
	LFM("write_mostly", write_mostly, "fusemirror_leg_write_mostly", "gauge",
	    "1 when a leg is read only if no other leg can serve (write-mostly)."),
	LF("remote", remote),
	LF("connected", connected),
	LF("reconnecting", reconnecting),
	LFR("rtt_us", rtt_us, "fusemirror_leg_rtt_microseconds", "gauge",
	    "Remote (NBD) legs: mean round trip of a read or write."),
	LFM("reconnects", reconnects, "fusemirror_leg_reconnects_total", "counter",
	    "Times a remote (NBD) leg reconnected and was re-added by itself."),
	LF("reconnect_attempts", reconnect_attempts),
	LF("reconnect_delay_ms", reconnect_delay_ms),
};

static const struct status_field cache_fields[] = {
	FM("bytes", bs.bytes, "fusemirror_cache_bytes", "gauge",
	   "Cache memory in use (block data and headers)."),
	F("peak_bytes", bs.peak_bytes),
	F("limit_bytes", bs.limit_bytes),
	F("buffers", bs.buffers),
	FM("dirty", bs.dirty, "fusemirror_cache_dirty_buffers", "gauge",
	   "Cache blocks not yet on the legs."),
	FM("hits", bs.hits, "fusemirror_cache_hits_total", "counter", "Cache hits."),
	FM("misses", bs.misses, "fusemirror_cache_misses_total", "counter", "Cache misses."),
	F("reads", bs.reads),
	F("writes", bs.writes),
	F("evictions", bs.evictions),
	{ "around_read_bytes", SK_BLOCKS, offsetof(struct status, bs.around_reads) },
	{ "around_write_bytes", SK_BLOCKS, offsetof(struct status, bs.around_writes) },
	{ "around_cached_bytes", SK_BLOCKS, offsetof(struct status, bs.around_cached) },
	F("write_errors", bs.write_errors),
	FM("data_bytes", bs.data_bytes, "fusemirror_cache_data_bytes", "gauge",
	   "Memory mapped for cache blocks (in use, kept free, prefaulted ahead)."),
	F("data_maps", bs.data_maps),
	F("data_surplus", bs.data_surplus),
};

static const struct status_field io_fields[] = {
	FM("reads", fs.reads, "fusemirror_reads_total", "counter", "Reads of the image."),
	FM("writes", fs.writes, "fusemirror_writes_total", "counter", "Writes to the image."),
	FM("read_bytes", fs.read_bytes, "fusemirror_read_bytes_total", "counter",
	   "Bytes read from the image."),
	FM("write_bytes", fs.write_bytes, "fusemirror_written_bytes_total", "counter",
	   "Bytes written to the image."),
	FM("fsyncs", fs.fsyncs, "fusemirror_fsyncs_total", "counter",
	   "fsync calls on the image."),
	F("flushes", fs.flushes),
	F("fallocates", fs.fallocates),
	FM("errors", fs.errors, "fusemirror_errors_total", "counter",
	   "Image requests answered with an error."),
	F("leg_read_retries", mst.read_retries),
	F("leg_flushes", mst.flushes),
	F("overlap_waits", mst.overlap_waits),
	F("slow_jobs", fs.handoffs),
	F("spliced_reads", fs.spliced_reads),
	F("spliced_read_bytes", fs.spliced_read_bytes),
	F("mapped_replies", fs.mapped_replies),
	F("mapped_reply_bytes", fs.mapped_reply_bytes),
	F("ring_replies", fs.ring_replies),
	F("async_replies", fs.async_replies),
	F("blocking_reads", fs.blocking_reads),
	F("spun_reads", fs.spun_reads),
	F("spin_misses", fs.spin_misses),
	F("standby_reads", fs.standby_reads),
	F("ring_reads", fs.ring_reads),
};

/* "engine": how dmio did the legs' I/O (one engine per daemon) */
static const struct status_field engine_fields[] = {
	F("requests", ds.requests),
	F("submits", ds.submits),
	F("sqes", ds.sqes),
	F("fixed_ios", ds.fixed_ios),
	F("bounced", ds.bounced),
	F("resubmits", ds.resubmits),
	FM("inline_ios", ds.inline_ios, "fusemirror_engine_inline_ios_total", "counter",
	   "Leg I/Os to in-memory legs made by the engine's own thread (a copy)."),
	FM("mapped_ios", ds.mapped_ios, "fusemirror_engine_mapped_ios_total", "counter",
	   "Inline leg I/Os made by a copy through the leg's mapping."),
	FM("map_faults", ds.map_faults, "fusemirror_engine_map_faults_total", "counter",
	   "Copies through a leg's mapping that faulted (SIGBUS), redone by a system call."),
	F("streamed_ios", ds.streamed_ios),
	F("iowq_widened", ds.iowq_widened),
	F("first_ops", ds.first_ops),
};

#undef F
#undef FM
#undef LF
#undef LFM
#undef LFR

static uint64_t field_value(const struct status *s, const void *base,
			    const struct status_field *f)
{
	const char *p = (const char *)base + f->off;

	switch (f->kind) {
	case SK_BOOL:
		return *(const bool *)p;
	case SK_INT:
		return (uint64_t)*(const int *)p;
	case SK_UINT:
		return *(const unsigned *)p;
	case SK_U64:
		return *(const uint64_t *)p;
	case SK_BLOCKS:
		return *(const uint64_t *)p * s->block_size;
	}
	return 0;
}

/* The members of @f (n of them) from @base, into the open JSON object. */
static void json_fields(JsonBuilder *b, const struct status *s, const void *base,
			const struct status_field *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (f[i].kind == SK_BOOL)
			cli_json_bool(b, f[i].json, *(const bool *)((const char *)base + f[i].off));
		else
			cli_json_int(b, f[i].json, field_value(s, base, &f[i]));
	}
}

/* A JSON object @name of the status's fields @f (the array @f). */
#define JSON_OBJECT(b, name, s, f)                                      \
	do {                                                            \
		json_builder_set_member_name(b, name);                  \
		json_builder_begin_object(b);                           \
		json_fields(b, s, s, f, G_N_ELEMENTS(f));               \
		json_builder_end_object(b);                             \
	} while (0)

/*----------------------------------------------------------------*/
/* JSON */

static void render_json(const struct status *s, GString *out)
{
	const struct mirror_status *st = &s->ms;
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autofree char *json = NULL;
	char u[37];

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "array");
	json_builder_begin_object(b);
	cli_json_str(b, "uuid", s->uuid);
	cli_json_str(b, "name", s->name);
	cli_json_str(b, "state", s->state);
	json_fields(b, s, s, array_fields, G_N_ELEMENTS(array_fields));
	json_builder_end_object(b);
	cli_json_str(b, "image", s->image);
	cli_json_str(b, "mountpoint", s->mountpoint);
	cli_json_str(b, "cache_mode", s->cache_mode);
	cli_json_int(b, "block_size", s->block_size);
	cli_json_str(b, "read_policy", s->read_policy);

	json_builder_set_member_name(b, "sync");
	json_builder_begin_object(b);
	cli_json_str(b, "action", mirror_sync_action_name(st->action));
	cli_json_str(b, "last_action", mirror_sync_action_name(st->last_action));
	json_fields(b, s, s, sync_fields, G_N_ELEMENTS(sync_fields));
	json_builder_end_object(b);
	JSON_OBJECT(b, "written", s, written_fields);
	JSON_OBJECT(b, "checksums", s, checksums_fields);
	JSON_OBJECT(b, "bitmap", s, bitmap_fields);

	json_builder_set_member_name(b, "legs");
	json_builder_begin_array(b);
	for (unsigned i = 0; i < s->nr_legs; i++) {
		const struct mirror_leg_stats *ls = &s->legs[i].ls;

		json_builder_begin_object(b);
		cli_json_str(b, "path", ls->path);
		cli_json_int(b, "slot", s->legs[i].slot);
		cli_json_str(b, "uuid", fm_uuid_unparse(ls->uuid, u));
		cli_json_str(b, "state", cli_leg_state_word(ls->state, ls->missing));
		json_fields(b, s, ls, leg_fields, G_N_ELEMENTS(leg_fields));
		cli_json_str(b, "note", ls->note);
		json_builder_set_member_name(b, "fault");
		if (ls->fault_set)
			fm_fault_json(&ls->fault, b);
		else
			json_builder_add_null_value(b);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);

	JSON_OBJECT(b, "cache", s, cache_fields);
	JSON_OBJECT(b, "io", s, io_fields);
	JSON_OBJECT(b, "engine", s, engine_fields);

	json_builder_set_member_name(b, "transport");
	json_builder_begin_object(b);
	cli_json_str(b, "name", front_transport_name(s->transport));
	json_builder_set_member_name(b, "queues");
	json_builder_begin_array(b);
	for (unsigned i = 0; i < s->nr_queues; i++) {
		json_builder_begin_object(b);
		cli_json_int(b, "cpu", s->queues[i].cpu);
		cli_json_int(b, "depth", s->queues[i].depth);
		cli_json_int(b, "requests", s->queues[i].requests);
		cli_json_int(b, "in_flight", s->queues[i].in_flight);
		cli_json_int(b, "handoffs", s->queues[i].handoffs);
		cli_json_int(b, "moves", s->queues[i].moves);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	json_builder_end_object(b);

	json_builder_set_member_name(b, "event_counts");
	json_builder_begin_object(b);
	for (int t = 0; t < FM_EVENT__MAX; t++)
		cli_json_int(b, fm_event_name((enum fm_event_type)t), s->event_counts[t]);
	json_builder_end_object(b);
	cli_json_int(b, "monitors", s->monitors);
	json_builder_end_object(b);

	json = cli_json_text(b);
	g_string_append(out, json);
	g_string_append_c(out, '\n');
}

/*----------------------------------------------------------------*/
/* Prometheus text exposition format */

/* A label value: UTF-8, with \, " and newline escaped. */
static void prom_label(GString *out, const char *name, const char *value, bool first)
{
	g_autofree char *valid = g_utf8_make_valid(value, -1);

	g_string_append_printf(out, "%s%s=\"", first ? "" : ",", name);
	for (const char *c = valid; *c; c++) {
		if (*c == '\\')
			g_string_append(out, "\\\\");
		else if (*c == '"')
			g_string_append(out, "\\\"");
		else if (*c == '\n')
			g_string_append(out, "\\n");
		else
			g_string_append_c(out, *c);
	}
	g_string_append_c(out, '"');
}

static void prom_head(GString *out, const char *metric, const char *type, const char *help)
{
	g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
}

/* metric{array="UUID"[,k="v"]...} value */
static void prom_sample(GString *out, const struct status *s, const char *metric,
			uint64_t value, const char *const *labels)
{
	g_string_append_printf(out, "%s{", metric);
	prom_label(out, "array", s->uuid, true);
	for (; labels && labels[0]; labels += 2)
		prom_label(out, labels[0], labels[1], false);
	g_string_append_printf(out, "} %" PRIu64 "\n", value);
}

/* One metric of the array: HELP, TYPE and its sample. */
static void prom_array(GString *out, const struct status *s, const char *metric,
		       const char *type, const char *help, uint64_t value)
{
	prom_head(out, metric, type, help);
	prom_sample(out, s, metric, value, NULL);
}

/* The metrics of @f (n of them) from the status. */
static void prom_fields(GString *out, const struct status *s, const struct status_field *f,
			size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].metric)
			prom_array(out, s, f[i].metric, f[i].type, f[i].help,
				   field_value(s, s, &f[i]));
}

/* One metric with a sample per leg (labels leg, path). */
static void prom_leg_metric(GString *out, const struct status *s, const struct status_field *f)
{
	prom_head(out, f->metric, f->type, f->help);
	for (unsigned i = 0; i < s->nr_legs; i++) {
		const struct mirror_leg_stats *ls = &s->legs[i].ls;
		char slot[16];

		if (f->remote_only && !ls->remote)
			continue;
		g_snprintf(slot, sizeof(slot), "%u", s->legs[i].slot);
		prom_sample(out, s, f->metric, field_value(s, ls, f),
			    (const char *[]){ "leg", slot, "path", ls->path, NULL });
	}
}

static void render_prometheus(const struct status *s, GString *out)
{
	static const char *const array_states[] = {
		"starting", "active", "clean", "read-only", "degraded", "resyncing",
		"recovering", "failed", "stopping",
	};
	static const char *const leg_states[] = {       /* cli_leg_state_word()'s */
		"in_sync", "rebuilding", "faulty", "removed", "missing",
	};
	static const enum mirror_sync_action actions[] = {
		MIRROR_SYNC_IDLE, MIRROR_SYNC_RESYNC, MIRROR_SYNC_RECOVER, MIRROR_SYNC_CHECK,
		MIRROR_SYNC_REPAIR,
	};
	const struct mirror_status *st = &s->ms;

	prom_head(out, "fusemirror_array_info", "gauge",
		  "The array: its name, mount point and image (always 1).");
	prom_sample(out, s, "fusemirror_array_info", 1,
		    (const char *[]){ "name", s->name, "mountpoint", s->mountpoint,
				      "image", s->image, NULL });
	prom_head(out, "fusemirror_array_state", "gauge",
		  "1 for the state the array is in, 0 for the others.");
	for (unsigned i = 0; i < G_N_ELEMENTS(array_states); i++)
		prom_sample(out, s, "fusemirror_array_state", !strcmp(s->state, array_states[i]),
			    (const char *[]){ "state", array_states[i], NULL });
	prom_fields(out, s, array_fields, G_N_ELEMENTS(array_fields));
	prom_array(out, s, "fusemirror_array_legs", "gauge", "Slots of the leg table in use.",
		   s->nr_legs);
	prom_array(out, s, "fusemirror_array_legs_in_sync", "gauge", "Legs in sync.",
		   legs_in_sync(s));

	prom_head(out, "fusemirror_leg_state", "gauge",
		  "1 for the state each leg is in (in_sync, rebuilding, faulty, removed, "
		  "missing: faulty because not present), 0 for the others.");
	for (unsigned i = 0; i < s->nr_legs; i++) {
		const struct mirror_leg_stats *ls = &s->legs[i].ls;
		const char *now = cli_leg_state_word(ls->state, ls->missing);
		char slot[16];

		g_snprintf(slot, sizeof(slot), "%u", s->legs[i].slot);
		for (unsigned k = 0; k < G_N_ELEMENTS(leg_states); k++)
			prom_sample(out, s, "fusemirror_leg_state", !strcmp(now, leg_states[k]),
				    (const char *[]){ "leg", slot, "path", ls->path, "state",
						      leg_states[k], NULL });
	}
	for (size_t k = 0; k < G_N_ELEMENTS(leg_fields); k++)
		if (leg_fields[k].metric)
			prom_leg_metric(out, s, &leg_fields[k]);

	prom_head(out, "fusemirror_sync_action", "gauge",
		  "1 for the sync action running (idle when none), 0 for the others.");
	for (unsigned i = 0; i < G_N_ELEMENTS(actions); i++)
		prom_sample(out, s, "fusemirror_sync_action", st->action == actions[i],
			    (const char *[]){ "action", mirror_sync_action_name(actions[i]),
					      NULL });
	prom_fields(out, s, sync_fields, G_N_ELEMENTS(sync_fields));
	prom_fields(out, s, bitmap_fields, G_N_ELEMENTS(bitmap_fields));
	prom_fields(out, s, written_fields, G_N_ELEMENTS(written_fields));
	prom_fields(out, s, io_fields, G_N_ELEMENTS(io_fields));
	if (s->nr_queues) {
		static const struct {
			const char *metric, *type, *help;
		} q[] = {
			{ "fusemirror_fuse_queue_requests_total", "counter",
			  "Requests received by a FUSE-over-io_uring queue, by CPU." },
			{ "fusemirror_fuse_queue_in_flight", "gauge",
			  "Requests of a FUSE-over-io_uring queue not answered yet, by CPU." },
			{ "fusemirror_fuse_queue_handoffs_total", "counter",
			  "Replies of a FUSE-over-io_uring queue sent from another thread, by CPU." },
			{ "fusemirror_fuse_queue_moves_total", "counter",
			  "Times a FUSE-over-io_uring queue's thread left its busy CPU, by CPU." },
		};

		for (unsigned m = 0; m < FM_ARRAY_SIZE(q); m++) {
			prom_head(out, q[m].metric, q[m].type, q[m].help);
			for (unsigned i = 0; i < s->nr_queues; i++) {
				const struct front_queue_stats *qs = &s->queues[i];
				char cpu[16];

				g_snprintf(cpu, sizeof(cpu), "%u", qs->cpu);
				prom_sample(out, s, q[m].metric,
					    m == 0 ? qs->requests : m == 1 ? qs->in_flight :
					    m == 2 ? qs->handoffs : qs->moves,
					    (const char *[]){ "cpu", cpu, NULL });
			}
		}
	}
	prom_fields(out, s, cache_fields, G_N_ELEMENTS(cache_fields));
	prom_fields(out, s, engine_fields, G_N_ELEMENTS(engine_fields));

	prom_head(out, "fusemirror_events_total", "counter",
		  "State-change events since the daemon started, by name (see fusemirror "
		  "monitor).");
	for (int t = 0; t < FM_EVENT__MAX; t++)
		prom_sample(out, s, "fusemirror_events_total", s->event_counts[t],
			    (const char *[]){ "event", fm_event_name((enum fm_event_type)t),
					      NULL });
	prom_array(out, s, "fusemirror_monitors", "gauge", "`fusemirror monitor` connections.",
		   s->monitors);
}

/*----------------------------------------------------------------*/

static const char *const format_names[] = {
	[DAEMON_STATUS_TEXT] = "text",
	[DAEMON_STATUS_JSON] = "json",
	[DAEMON_STATUS_PROMETHEUS] = "prometheus",
	[DAEMON_STATUS_SYNC] = "sync",
};

const char *daemon_status_format_name(enum daemon_status_format f)
{
	return (unsigned)f < G_N_ELEMENTS(format_names) ? format_names[f] : "?";
}

int daemon_status_format_parse(const char *word)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(format_names); i++)
		if (!strcmp(word, format_names[i]))
			return (int)i;
	return -1;
}

void daemon_status_render_locked(struct daemon *d, enum daemon_status_format format,
				 GString *out)
{
	struct status s;

	status_build_locked(d, &s);
	switch (format) {
	case DAEMON_STATUS_TEXT:
		render_text(&s, out);
		break;
	case DAEMON_STATUS_JSON:
		render_json(&s, out);
		break;
	case DAEMON_STATUS_PROMETHEUS:
		render_prometheus(&s, out);
		break;
	case DAEMON_STATUS_SYNC:
		render_sync(&s, out);
		break;
	}
	status_clear(&s);
}
