/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `fusemirror mount`: assemble, cache, control socket, FUSE; the daemon.
 *
 * Start-up order (each step undone in reverse on failure):
 *   fork (unless -f; the parent waits on a pipe and exits 0 only once the
 *   mount is live) -> PR_SET_IO_FLUSHER, mlockall -> dmio engine ->
 *   assemble (legs locked, superblocks marked dirty) -> cache -> control
 *   socket -> FUSE mount -> tell the parent -> serve.
 * Shut-down (unmount, SIGTERM/SIGINT, `fusemirror umount`):
 *   FUSE loop ends -> session unmounted -> every dirty block written and
 *   the legs flushed -> superblocks marked clean -> the control socket,
 *   which went on answering `status` meanwhile, answers the waiting
 *   `umount` and closes -> exit.
 * Administration (`fail`, `remove`, `add`, `replace`, `scrub`, `inject`)
 * runs on the control socket's handler threads and calls the mirror
 * without d->lock (a call may block on a superblock update, and `status`
 * must go on being answered meanwhile): it counts itself in
 * d->admin_calls under d->lock, and the teardown waits for that count to
 * drop to 0 before it takes d->m away and stops the mirror.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "fusemirror/bufio.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"
#include "fusemirror/dmio.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

struct daemon {
	struct mount_cfg *cfg;
	struct ctl_server *ctl;
	uint64_t started_ns;

	/*
	 * The control thread answers `status` from start-up to the end of the
	 * teardown, while the main thread creates and frees m, c and f: it
	 * reads them only under @lock, and the main thread publishes each one
	 * and takes it away (NULL) under @lock before freeing it.  The main
	 * thread itself uses them without the lock.
	 */
	pthread_mutex_t lock;           /* guards the fields below */
	struct mirror *m;
	struct bufio_client *c;
	struct front *f;
	char *image_path;               /* front_image_path(), kept past f */
	struct front_stats final_fs;    /* f's counters when it went away */
	pthread_cond_t stopped_cond;
	bool stopping;                  /* unmount begun */
	bool stopped;                   /* teardown finished */
	unsigned admin_calls;           /* mirror_* administration calls running
					   on d->m without d->lock */
	pthread_cond_t admin_cond;      /* signalled when admin_calls drops to 0 */
	int stop_result;                /* 0, or -errno of the teardown */
	char *stop_message;
};

/*----------------------------------------------------------------*/
/* status */

/* The counters of the parts still alive (zeroes for the others); called
 * with d->lock held. */
static void status_stats_locked(struct daemon *d, struct mirror_stats *ms,
				struct bufio_stats *bs, struct front_stats *fs)
{
	memset(bs, 0, sizeof(*bs));
	mirror_get_stats(d->m, ms);
	if (d->c)
		bufio_get_stats(d->c, bs);
	if (d->f)
		front_get_stats(d->f, fs);
	else
		*fs = d->final_fs;
}

/* mirror_get_status(), with the configured speed limits where the mirror
 * reports none. */
static void get_status(struct daemon *d, struct mirror *m, struct mirror_status *st)
{
	memset(st, 0, sizeof(*st));
	mirror_get_status(m, st);
	if (!st->sync_speed_min)
		st->sync_speed_min = d->cfg->sync_speed_min;
	if (!st->sync_speed_max)
		st->sync_speed_max = d->cfg->sync_speed_max;
}

/* The array's state: the mirror's ("active", "degraded", "resyncing", ...)
 * while the image is mounted, the daemon's ("starting", "stopping") before
 * and after.  Called with d->lock held and d->m alive. */
static const char *state_name_locked(struct daemon *d, const struct mirror_status *st)
{
	if (d->stopping)
		return "stopping";
	if (!d->f)
		return "starting";
	return st->state ? st->state : "active";
}

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
static void status_progress(const struct mirror_status *st, GString *out)
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
	if (st->action == MIRROR_SYNC_CHECK || st->action == MIRROR_SYNC_REPAIR)
		g_string_append_printf(out, ", %llu mismatched sectors so far",
				       (unsigned long long)st->mismatches);
	g_string_append_c(out, '\n');
}

/* Called with d->lock held and d->m alive. */
static void status_json_locked(struct daemon *d, GString *out)
{
	struct fm_sb sbc, *sb = &sbc;
	struct mirror_status st;
	struct mirror_stats ms;
	struct bufio_stats bs;
	struct front_stats fs;
	bool first = true;
	char u[37];

	mirror_get_sb(d->m, sb);
	get_status(d, d->m, &st);
	status_stats_locked(d, &ms, &bs, &fs);

	g_string_append(out, "{\"array\":{\"uuid\":");
	cli_json_str(out, fm_uuid_unparse(sb->array_uuid, u));
	g_string_append(out, ",\"name\":");
	cli_json_str(out, sb->name);
	g_string_append(out, ",\"state\":");
	cli_json_str(out, state_name_locked(d, &st));
	g_string_append_printf(out, ",\"size\":%llu,\"readonly\":%s,"
			       "\"events\":%llu,\"pid\":%d,\"uptime_s\":%llu,"
			       "\"degraded\":%s,\"failed\":%s,\"in_sync\":%u,\"faulty\":%u,"
			       "\"rebuilding\":%u},",
			       (unsigned long long)mirror_size(d->m),
			       mirror_is_readonly(d->m) ? "true" : "false",
			       (unsigned long long)MAX(st.events, sb->events), (int)getpid(),
			       (unsigned long long)((fm_now_ns() - d->started_ns) / 1000000000ull),
			       st.degraded ? "true" : "false", st.failed ? "true" : "false",
			       st.nr_in_sync, st.nr_faulty, st.nr_rebuilding);
	g_string_append(out, "\"image\":");
	cli_json_str(out, d->image_path ? d->image_path : d->cfg->mountpoint);
	g_string_append_printf(out, ",\"cache_mode\":\"%s\",\"block_size\":%u,"
			       "\"read_policy\":\"%s\",",
			       d->cfg->cache_mode == FRONT_CACHE_WRITETHROUGH ? "writethrough"
									: "writeback",
			       d->c ? bufio_get_block_size(d->c) : 0,
			       mirror_read_policy_name(mirror_get_read_policy(d->m)));
	g_string_append_printf(out, "\"sync\":{\"action\":\"%s\",\"done\":%llu,\"total\":%llu,"
			       "\"speed\":%llu,\"eta_s\":%llu,\"speed_min\":%llu,"
			       "\"speed_max\":%llu,\"mismatches\":%llu,\"last_action\":\"%s\","
			       "\"resynced_regions\":%llu},",
			       mirror_sync_action_name(st.action),
			       (unsigned long long)st.sync_done, (unsigned long long)st.sync_total,
			       (unsigned long long)st.sync_speed, (unsigned long long)st.sync_eta_s,
			       (unsigned long long)st.sync_speed_min,
			       (unsigned long long)st.sync_speed_max,
			       (unsigned long long)st.mismatches,
			       mirror_sync_action_name(st.last_action),
			       (unsigned long long)st.resynced_regions);
	g_string_append_printf(out, "\"bitmap\":{\"region_size\":%llu,\"regions\":%llu,"
			       "\"set\":%llu,\"page_writes\":%llu},\"legs\":[",
			       (unsigned long long)st.region_size,
			       (unsigned long long)st.nr_regions,
			       (unsigned long long)st.bitmap_set,
			       (unsigned long long)st.bitmap_writes);
	for (unsigned i = 0; i < mirror_nr_legs(d->m); i++) {
		struct mirror_leg_stats ls;

		memset(&ls, 0, sizeof(ls));
		mirror_get_leg_stats(d->m, i, &ls);
		if (ls.state == FM_LEG_EMPTY)
			continue;
		g_string_append(out, first ? "{\"path\":" : ",{\"path\":");
		first = false;
		cli_json_str(out, ls.path);
		g_string_append_printf(out, ",\"slot\":%u,\"uuid\":\"%s\",\"state\":\"%s\","
				       "\"direct\":%s,\"reads\":%llu,"
				       "\"writes\":%llu,\"read_bytes\":%llu,\"write_bytes\":%llu,"
				       "\"read_errors\":%llu,\"write_errors\":%llu,\"pending\":%u,"
				       "\"corrected\":%llu,\"write_mostly\":%s,\"fault\":",
				       i, fm_uuid_unparse(ls.uuid, u),
				       cli_leg_state_word(ls.state, ls.missing),
				       ls.direct ? "true" : "false",
				       (unsigned long long)ls.reads, (unsigned long long)ls.writes,
				       (unsigned long long)ls.read_bytes,
				       (unsigned long long)ls.write_bytes,
				       (unsigned long long)ls.read_errors,
				       (unsigned long long)ls.write_errors, ls.pending,
				       (unsigned long long)ls.corrected,
				       ls.write_mostly ? "true" : "false");
		if (ls.fault_set)
			fm_fault_json(&ls.fault, out);
		else
			g_string_append(out, "null");
		g_string_append_c(out, '}');
	}
	g_string_append_printf(out, "],\"cache\":{\"bytes\":%llu,\"peak_bytes\":%llu,"
			       "\"limit_bytes\":%llu,\"buffers\":%llu,\"dirty\":%llu,"
			       "\"hits\":%llu,\"misses\":%llu,\"reads\":%llu,\"writes\":%llu,"
			       "\"evictions\":%llu,\"write_errors\":%llu},",
			       (unsigned long long)bs.bytes, (unsigned long long)bs.peak_bytes,
			       (unsigned long long)bs.limit_bytes, (unsigned long long)bs.buffers,
			       (unsigned long long)bs.dirty, (unsigned long long)bs.hits,
			       (unsigned long long)bs.misses, (unsigned long long)bs.reads,
			       (unsigned long long)bs.writes, (unsigned long long)bs.evictions,
			       (unsigned long long)bs.write_errors);
	g_string_append_printf(out, "\"io\":{\"reads\":%llu,\"writes\":%llu,\"read_bytes\":%llu,"
			       "\"write_bytes\":%llu,\"fsyncs\":%llu,\"fallocates\":%llu,"
			       "\"errors\":%llu,\"leg_read_retries\":%llu,\"overlap_waits\":%llu}}\n",
			       (unsigned long long)fs.reads, (unsigned long long)fs.writes,
			       (unsigned long long)fs.read_bytes, (unsigned long long)fs.write_bytes,
			       (unsigned long long)fs.fsyncs, (unsigned long long)fs.fallocates,
			       (unsigned long long)fs.errors, (unsigned long long)ms.read_retries,
			       (unsigned long long)ms.overlap_waits);
}

/* Called with d->lock held and d->m alive. */
static void status_text_locked(struct daemon *d, GString *out)
{
	struct fm_sb sbc, *sb = &sbc;
	struct mirror_status st;
	struct mirror_stats ms;
	struct bufio_stats bs;
	struct front_stats fs;
	char u[37], s1[32], s2[32], s3[32];
	unsigned in_sync = 0, used = 0, n = mirror_nr_legs(d->m);

	mirror_get_sb(d->m, sb);
	get_status(d, d->m, &st);
	status_stats_locked(d, &ms, &bs, &fs);
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg_stats ls;

		memset(&ls, 0, sizeof(ls));
		mirror_get_leg_stats(d->m, i, &ls);
		in_sync += ls.state == FM_LEG_IN_SYNC;
		used += ls.state != FM_LEG_EMPTY;
	}
	g_string_append_printf(out, "%s: fusemirror array %s%s%s%s\n",
			       d->image_path ? d->image_path : d->cfg->mountpoint,
			       fm_uuid_unparse(sb->array_uuid, u), *sb->name ? " (" : "",
			       sb->name, *sb->name ? ")" : "");
	g_string_append_printf(out, "  state:  %s, %u of %u legs in sync%s%s\n",
			       state_name_locked(d, &st), in_sync, used,
			       mirror_is_readonly(d->m) ? ", read-only" : "",
			       st.failed ? ", FAILED: no leg left, every I/O fails" : "");
	g_string_append_printf(out, "  size:   %s (%llu bytes), block size %u, cache_mode=%s, "
			       "read_policy=%s\n",
			       fm_format_size(mirror_size(d->m), s1, sizeof(s1)),
			       (unsigned long long)mirror_size(d->m),
			       d->c ? bufio_get_block_size(d->c) : 0,
			       d->cfg->cache_mode == FRONT_CACHE_WRITETHROUGH ? "writethrough"
									: "writeback",
			       mirror_read_policy_name(mirror_get_read_policy(d->m)));
	g_string_append_printf(out, "  events: %llu; bitmap: %llu of %llu regions of %s set, "
			       "%llu page writes\n",
			       (unsigned long long)MAX(st.events, sb->events),
			       (unsigned long long)st.bitmap_set,
			       (unsigned long long)st.nr_regions,
			       fm_format_size(st.region_size, s1, sizeof(s1)),
			       (unsigned long long)st.bitmap_writes);
	if (st.action != MIRROR_SYNC_IDLE)
		status_progress(&st, out);
	g_string_append_printf(out, "  sync:   %s, speed %s/s..%s/s; last: %s",
			       mirror_sync_action_name(st.action),
			       fm_format_size(st.sync_speed_min, s1, sizeof(s1)),
			       fm_format_size(st.sync_speed_max, s2, sizeof(s2)),
			       mirror_sync_action_name(st.last_action));
	if (st.last_action == MIRROR_SYNC_CHECK || st.last_action == MIRROR_SYNC_REPAIR ||
	    st.mismatches)
		g_string_append_printf(out, ", %llu mismatched sectors",
				       (unsigned long long)st.mismatches);
	g_string_append_printf(out, "; %llu regions resynced since mount\n",
			       (unsigned long long)st.resynced_regions);
	g_string_append(out, "  legs:\n");
	for (unsigned i = 0; i < n; i++) {
		struct mirror_leg_stats ls;

		memset(&ls, 0, sizeof(ls));
		mirror_get_leg_stats(d->m, i, &ls);
		if (ls.state == FM_LEG_EMPTY)
			continue;
		g_string_append_printf(out, "    %u  %-10s %s%s%s\n       uuid %s; reads %llu (%s), "
				       "writes %llu (%s); errors: %llu read (%llu corrected), "
				       "%llu write\n",
				       i, cli_leg_state_word(ls.state, ls.missing),
				       *ls.path ? ls.path : ls.missing ? "(not present)" : "(closed)",
				       ls.write_mostly ? "  write-mostly" : "",
				       ls.direct || !*ls.path ? "" : "  (buffered, no O_DIRECT)",
				       fm_uuid_unparse(ls.uuid, u),
				       (unsigned long long)ls.reads,
				       fm_format_size(ls.read_bytes, s1, sizeof(s1)),
				       (unsigned long long)ls.writes,
				       fm_format_size(ls.write_bytes, s2, sizeof(s2)),
				       (unsigned long long)ls.read_errors,
				       (unsigned long long)ls.corrected,
				       (unsigned long long)ls.write_errors);
		if (ls.fault_set) {
			g_string_append(out, "       fault injected: ");
			fm_fault_describe(&ls.fault, out);
			g_string_append_c(out, '\n');
		}
	}
	g_string_append_printf(out, "  cache:  %s used of %s (peak %s), %llu buffers, %llu dirty\n"
			       "          hits %llu, misses %llu, evictions %llu, "
			       "write errors %llu\n",
			       fm_format_size(bs.bytes, s1, sizeof(s1)),
			       fm_format_size(bs.limit_bytes, s2, sizeof(s2)),
			       fm_format_size(bs.peak_bytes, s3, sizeof(s3)),
			       (unsigned long long)bs.buffers, (unsigned long long)bs.dirty,
			       (unsigned long long)bs.hits, (unsigned long long)bs.misses,
			       (unsigned long long)bs.evictions, (unsigned long long)bs.write_errors);
	g_string_append_printf(out, "  io:     %llu reads (%s), %llu writes (%s), %llu fsyncs, "
			       "%llu fallocates, %llu errors\n",
			       (unsigned long long)fs.reads,
			       fm_format_size(fs.read_bytes, s1, sizeof(s1)),
			       (unsigned long long)fs.writes,
			       fm_format_size(fs.write_bytes, s2, sizeof(s2)),
			       (unsigned long long)fs.fsyncs, (unsigned long long)fs.fallocates,
			       (unsigned long long)fs.errors);
}

/* `sync`: the sync action's state as key=value words on one line, for
 * `fusemirror scrub --wait` (which has no JSON parser).  Called with
 * d->lock held and d->m alive. */
static void status_sync_locked(struct daemon *d, GString *out)
{
	struct mirror_status st;

	get_status(d, d->m, &st);
	g_string_append_printf(out, "action=%s done=%llu total=%llu speed=%llu eta_s=%llu "
			       "mismatches=%llu last_action=%s resynced_regions=%llu state=%s\n",
			       mirror_sync_action_name(st.action),
			       (unsigned long long)st.sync_done, (unsigned long long)st.sync_total,
			       (unsigned long long)st.sync_speed, (unsigned long long)st.sync_eta_s,
			       (unsigned long long)st.mismatches,
			       mirror_sync_action_name(st.last_action),
			       (unsigned long long)st.resynced_regions,
			       state_name_locked(d, &st));
}

/*----------------------------------------------------------------*/
/* control socket */

static int handle_stop(struct daemon *d, GString *out, GError **err)
{
	int r;

	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_mutex_unlock(&d->lock);
	/* A plain (not lazy) unmount: refused while a loop device or a
	 * process holds the image open, exactly as umount(8) would be. */
	if (umount2(d->cfg->mountpoint, 0) < 0 && errno != EINVAL) {
		r = -errno;
		pthread_mutex_lock(&d->lock);
		d->stopping = false;
		pthread_mutex_unlock(&d->lock);
		g_set_error(err, FM_CLI_ERROR, -r, "cannot unmount %s: %s%s", d->cfg->mountpoint,
			    g_strerror(-r),
			    r == -EBUSY ? " (the image is in use: a loop device or an open file)"
					: "");
		return r;
	}
	pthread_mutex_lock(&d->lock);
	while (!d->stopped)
		pthread_cond_wait(&d->stopped_cond, &d->lock);
	r = d->stop_result;
	if (r < 0)
		g_set_error(err, FM_CLI_ERROR, -r, "%s",
			    d->stop_message ? d->stop_message : g_strerror(-r));
	pthread_mutex_unlock(&d->lock);
	if (r == 0)
		g_string_append(out, "stopped cleanly\n");
	return r;
}

/* -EAGAIN with @err when the mirror is gone (the teardown closed it). */
static int gone_locked(struct daemon *d, GError **err)
{
	g_set_error(err, FM_CLI_ERROR, EAGAIN, "%s: the daemon is stopping (closing the legs)",
		    d->cfg->mountpoint);
	return -EAGAIN;
}

/*
 * Begin an administration call: returns d->m, which stays valid until
 * admin_end() (the teardown waits for it), or NULL with @err while the
 * daemon is starting or stopping.
 */
static struct mirror *admin_begin(struct daemon *d, GError **err)
{
	struct mirror *m = NULL;

	pthread_mutex_lock(&d->lock);
	if (!d->m || d->stopping)
		gone_locked(d, err);
	else if (!d->f)
		g_set_error(err, FM_CLI_ERROR, EAGAIN, "%s: the daemon is still starting",
			    d->cfg->mountpoint);
	else {
		d->admin_calls++;
		m = d->m;
	}
	pthread_mutex_unlock(&d->lock);
	return m;
}

static void admin_end(struct daemon *d)
{
	pthread_mutex_lock(&d->lock);
	assert(d->admin_calls > 0);
	if (--d->admin_calls == 0)
		pthread_cond_broadcast(&d->admin_cond);
	pthread_mutex_unlock(&d->lock);
}

/* " (array degraded, 1 of 2 legs in sync)" */
static void append_array_state(struct mirror *m, GString *out)
{
	struct mirror_status st = { 0 };

	mirror_get_status(m, &st);
	g_string_append_printf(out, " (array %s, %u of %u legs in sync)",
			       st.state ? st.state : "active", st.nr_in_sync, st.nr_slots);
}

/* Make sure a failed mirror call left a message. */
static int admin_failed(int r, const char *what, GError **err)
{
	if (err && !*err)
		g_set_error(err, FM_CLI_ERROR, -r, "%s: %s", what, g_strerror(-r));
	return r;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return true;
	if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return false;
	if (S_ISBLK(sa.st_mode) || S_ISBLK(sb.st_mode))
		return S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode) && sa.st_rdev == sb.st_rdev;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* `inject LEG show`: the fault now set on @leg. */
static int handle_inject_show(struct daemon *d, const char *leg, GString *out, GError **err)
{
	g_autofree struct mirror_leg_stats *ls = NULL;
	unsigned n;

	pthread_mutex_lock(&d->lock);
	if (!d->m) {
		int r = gone_locked(d, err);

		pthread_mutex_unlock(&d->lock);
		return r;
	}
	n = mirror_nr_legs(d->m);
	ls = g_new0(struct mirror_leg_stats, MAX(n, 1u));
	for (unsigned i = 0; i < n; i++)
		mirror_get_leg_stats(d->m, i, &ls[i]);
	pthread_mutex_unlock(&d->lock);
	/* stat() outside d->lock: a path may sit on a slow device. */
	for (unsigned i = 0; i < n; i++) {
		if (ls[i].state == FM_LEG_EMPTY || !same_file(leg, ls[i].path))
			continue;
		g_string_append_printf(out, "leg %s (slot %u, %s): ", ls[i].path, i,
				       cli_leg_state_name(ls[i].state));
		if (ls[i].fault_set)
			fm_fault_describe(&ls[i].fault, out);
		else
			g_string_append(out, "no fault injected");
		g_string_append_c(out, '\n');
		return 0;
	}
	g_set_error(err, FM_CLI_ERROR, ENODEV, "leg %s: not a leg of the array mounted on %s",
		    leg, d->cfg->mountpoint);
	return -ENODEV;
}

/*
 * The administration verbs (the words are documented in man/fusemirror.8's
 * CONTROL PROTOCOL, and checked here because any root process may send them):
 *   fail LEG | remove LEG | add LEG [force] [write-mostly] | replace OLD NEW [force]
 *   write-mostly LEG on|off
 *   scrub [repair] | scrub-cancel
 *   inject LEG clear | inject LEG show | inject LEG key=value...
 * Returns 1 when argv[0] is none of them.
 */
static int handle_admin(struct daemon *d, int argc, char **argv, GString *out, GError **err)
{
	const char *verb = argv[0];
	unsigned add_flags = 0;
	bool force = false;
	struct mirror *m;
	int r;

	if (!strcmp(verb, "inject") && argc == 3 && !strcmp(argv[2], "show"))
		return handle_inject_show(d, argv[1], out, err);
	if (!strcmp(verb, "fail") || !strcmp(verb, "remove")) {
		if (argc != 2)
			goto usage;
	} else if (!strcmp(verb, "add")) {
		if (argc < 2 || argc > 4)
			goto usage;
		for (int k = 2; k < argc; k++) {
			if (!strcmp(argv[k], "force"))
				add_flags |= MIRROR_ADD_FORCE;
			else if (!strcmp(argv[k], "write-mostly"))
				add_flags |= MIRROR_ADD_WRITE_MOSTLY;
			else
				goto usage;
		}
	} else if (!strcmp(verb, "write-mostly")) {
		if (argc != 3 || (strcmp(argv[2], "on") && strcmp(argv[2], "off")))
			goto usage;
	} else if (!strcmp(verb, "replace")) {
		if (argc == 4 && !strcmp(argv[3], "force"))
			force = true;
		else if (argc != 3)
			goto usage;
	} else if (!strcmp(verb, "scrub")) {
		if (argc > 2 || (argc == 2 && strcmp(argv[1], "repair")))
			goto usage;
	} else if (!strcmp(verb, "scrub-cancel")) {
		if (argc != 1)
			goto usage;
	} else if (!strcmp(verb, "inject")) {
		if (argc < 3)
			goto usage;
	} else {
		return 1;
	}

	m = admin_begin(d, err);
	if (!m)
		return -EAGAIN;
	if (!strcmp(verb, "fail")) {
		r = mirror_fail_leg(m, argv[1], err);
		if (r >= 0) {
			g_string_append_printf(out, "leg %s marked faulty", argv[1]);
			append_array_state(m, out);
		}
	} else if (!strcmp(verb, "remove")) {
		r = mirror_remove_leg(m, argv[1], err);
		if (r >= 0) {
			g_string_append_printf(out, "leg %s removed", argv[1]);
			append_array_state(m, out);
		}
	} else if (!strcmp(verb, "add")) {
		r = mirror_add_leg(m, argv[1], add_flags, err);
		if (r >= 0) {
			g_string_append_printf(out, "leg %s added%s, recovery started", argv[1],
					       (add_flags & MIRROR_ADD_WRITE_MOSTLY) ?
					       " (write-mostly)" : "");
			append_array_state(m, out);
		}
	} else if (!strcmp(verb, "write-mostly")) {
		bool on = !strcmp(argv[2], "on");

		r = mirror_set_write_mostly(m, argv[1], on, err);
		if (r >= 0)
			g_string_append_printf(out, "leg %s: write-mostly %s%s", argv[1],
					       on ? "on" : "off",
					       on ? " (read only when no other leg can serve)" : "");
	} else if (!strcmp(verb, "replace")) {
		r = mirror_replace_leg(m, argv[1], argv[2], force ? MIRROR_ADD_FORCE : 0, err);
		if (r >= 0)
			g_string_append_printf(out, "leg %s added to replace %s, recovery started; "
					       "%s is removed when it completes", argv[2],
					       argv[1], argv[1]);
	} else if (!strcmp(verb, "scrub")) {
		bool repair = argc == 2;

		r = mirror_scrub(m, repair, err);
		if (r >= 0)
			g_string_append_printf(out, "scrub started (%s)", repair ? "repair" : "check");
	} else if (!strcmp(verb, "scrub-cancel")) {
		r = mirror_scrub_cancel(m, err);
		if (r >= 0)
			g_string_append(out, "scrub cancelled");
	} else if (argc == 3 && !strcmp(argv[2], "clear")) {
		r = mirror_inject(m, argv[1], NULL, err);
		if (r >= 0)
			g_string_append_printf(out, "leg %s: fault cleared", argv[1]);
	} else {
		struct dmio_fault f;

		if (!fm_fault_from_words((const char *const *)argv + 2, (unsigned)argc - 2, &f,
					 err))
			r = -EINVAL;
		else
			r = mirror_inject(m, argv[1], &f, err);
		if (r >= 0) {
			g_string_append_printf(out, "leg %s: fault set: ", argv[1]);
			fm_fault_describe(&f, out);
		}
	}
	admin_end(d);
	if (r < 0)
		return admin_failed(r, verb, err);
	fm_notice("%s: %s", d->cfg->mountpoint, out->str);
	g_string_append_c(out, '\n');
	return 0;

usage:
	g_set_error(err, FM_CLI_ERROR, EINVAL, "usage: %s",
		    !strcmp(verb, "fail") ? "fail LEG" :
		    !strcmp(verb, "remove") ? "remove LEG" :
		    !strcmp(verb, "add") ? "add LEG [force] [write-mostly]" :
		    !strcmp(verb, "write-mostly") ? "write-mostly LEG on|off" :
		    !strcmp(verb, "replace") ? "replace OLD NEW [force]" :
		    !strcmp(verb, "scrub") ? "scrub [repair]" :
		    !strcmp(verb, "scrub-cancel") ? "scrub-cancel" :
		    "inject LEG clear|show|key=value...");
	return -EINVAL;
}

static int ctl_handler(void *ctx, int argc, char **argv, uid_t peer_uid, GString *out,
		       GError **err)
{
	struct daemon *d = ctx;
	int r;

	(void)peer_uid;
	if (!strcmp(argv[0], "status") || !strcmp(argv[0], "sync")) {
		bool json = argc == 2 && !strcmp(argv[0], "status") && !strcmp(argv[1], "json");

		if (argc != 1 && !json)
			goto usage;
		pthread_mutex_lock(&d->lock);
		if (!d->m) {
			r = gone_locked(d, err);
			pthread_mutex_unlock(&d->lock);
			return r;
		}
		if (!strcmp(argv[0], "sync"))
			status_sync_locked(d, out);
		else if (json)
			status_json_locked(d, out);
		else
			status_text_locked(d, out);
		pthread_mutex_unlock(&d->lock);
		return 0;
	}
	if (!strcmp(argv[0], "stop") && argc == 1)
		return handle_stop(d, out, err);
	if (!strcmp(argv[0], "pid") && argc == 1) {
		g_string_append_printf(out, "%d\n", (int)getpid());
		return 0;
	}
	r = handle_admin(d, argc, argv, out, err);
	if (r <= 0)
		return r;
usage:
	g_set_error(err, FM_CLI_ERROR, EINVAL, "unknown control command '%s'", argv[0]);
	return -EINVAL;
}

/*----------------------------------------------------------------*/
/* start-up */

/* Messages for the parent: the child writes "OK\n" or the error text. */
static int notify_fd = -1;

static void notify_parent(int code, const char *msg)
{
	g_autofree char *line = NULL;

	if (notify_fd < 0)
		return;
	line = g_strdup_printf("%d %s\n", code, msg ? msg : "");
	if (write(notify_fd, line, strlen(line)) < 0)
		fm_debug("cannot notify the parent: %s", strerror(errno));
	close(notify_fd);
	notify_fd = -1;
}

/* The parent: wait for the child's verdict. */
static int wait_for_child(int fd)
{
	char buf[4096];
	size_t used = 0;
	ssize_t n;
	int code;

	while (used < sizeof(buf) - 1 && (n = read(fd, buf + used, sizeof(buf) - 1 - used)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		used += (size_t)n;
	}
	buf[used] = '\0';
	close(fd);
	if (used == 0) {
		cli_error("the daemon died while starting (see the system log)");
		return FM_EXIT_FAILURE;
	}
	code = atoi(buf);
	if (code != 0) {
		char *msg = strchr(buf, ' ');

		if (msg)
			g_strchomp(++msg);
		cli_error("%s", msg && *msg ? msg : "mount failed");
	}
	return code;
}

/* A start-up failure: to the waiting parent, or to stderr with -f. */
static void report(int code, const char *msg)
{
	if (notify_fd >= 0)
		notify_parent(code, msg);
	else
		cli_error("%s", msg);
}

static void harden_process(void)
{
	/* The daemon is in the write-back path of the loop device over its
	 * image: let its own allocations dip into reserves rather than wait on
	 * reclaim that waits for it, and keep it out of swap. */
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		fm_info("PR_SET_IO_FLUSHER not available: %s", strerror(errno));
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0)
		fm_info("mlockall failed: %s", strerror(errno));
}

static int run_daemon(struct mount_cfg *cfg)
{
	struct daemon d = { .cfg = cfg, .lock = PTHREAD_MUTEX_INITIALIZER,
			    .stopped_cond = PTHREAD_COND_INITIALIZER,
			    .admin_cond = PTHREAD_COND_INITIALIZER };
	/* Nothing is written to the legs until nothing else can refuse the
	 * mount: a refused mount leaves every leg's bytes unchanged. */
	struct mirror_opts mo = { .readonly = cfg->readonly, .read_policy = cfg->read_policy,
				  .defer_in_use = true,
				  .max_read_errors = cfg->max_read_errors,
				  .max_read_error_ppm = cfg->max_read_error_ppm,
				  .read_error_decay_ms = cfg->read_error_decay_ms,
				  .sync_speed_min = cfg->sync_speed_min,
				  .sync_speed_max = cfg->sync_speed_max,
				  .bitmap_delay_ms = cfg->bitmap_delay_ms,
				  .degraded = cfg->degraded, .prefer = cfg->prefer };
	struct front_opts fo = { 0 };
	struct fm_sb sb;
	g_autoptr(GError) err = NULL;
	g_autofree char *sock = NULL;
	g_autofree char *fsname = NULL;
	struct bufio_client *c;
	struct mirror *m;
	struct front *f;
	struct fm_bdev bdev;
	unsigned block_size;
	char u[37];
	int code = FM_EXIT_FAILURE, r;

	d.started_ns = fm_now_ns();
	harden_process();
	r = dmio_engine_init(NULL);
	if (r < 0 && r != -EBUSY) {
		report(FM_EXIT_FAILURE, "cannot start io_uring (is it disabled by sysctl?)");
		return FM_EXIT_FAILURE;
	}
	r = mirror_assemble((const char *const *)cfg->legs, g_strv_length(cfg->legs), &mo,
			    &d.m, &err);
	if (r < 0) {
		report(FM_EXIT_LEG, err->message);
		dmio_engine_shutdown();
		return FM_EXIT_LEG;
	}
	mirror_get_sb(d.m, &sb);
	block_size = cfg->block_size ? cfg->block_size : sb.block_size;
	if (!block_size)
		block_size = 4096;
	if (mirror_size(d.m) % block_size) {
		g_autofree char *msg = g_strdup_printf(
			"block_size=%u does not divide the image size %llu", block_size,
			(unsigned long long)mirror_size(d.m));
		report(FM_EXIT_USAGE, msg);
		code = FM_EXIT_USAGE;
		goto out_mirror;
	}
	if ((sb.features & FM_SB_FEAT_CHECKSUMS) && block_size < FM_SB_CSUM_BLOCK_SIZE) {
		g_autofree char *msg = g_strdup_printf(
			"block_size=%u is smaller than the %u bytes each checksum of this "
			"array covers", block_size, FM_SB_CSUM_BLOCK_SIZE);
		report(FM_EXIT_USAGE, msg);
		code = FM_EXIT_USAGE;
		goto out_mirror;
	}
	if (cfg->cache_size)
		bufio_set_max_cache_size_bytes(cfg->cache_size);
	if (cfg->writeback_age_ms != G_MAXUINT64)
		bufio_set_writeback_age_ms(cfg->writeback_age_ms);
	bdev = mirror_bdev(d.m);
	r = bufio_client_create(&bdev, block_size, 16, 0, NULL, NULL, &d.c);
	if (r < 0) {
		report(FM_EXIT_FAILURE, "cannot create the cache");
		goto out_mirror;
	}
	sock = ctl_socket_path(cfg->mountpoint, &err);
	if (!sock || ctl_server_start(sock, ctl_handler, &d, &d.ctl, &err) < 0) {
		report(FM_EXIT_MOUNT, err->message);
		code = FM_EXIT_MOUNT;
		goto out_cache;
	}
	fsname = g_strdup_printf("fusemirror:%s", fm_uuid_unparse(sb.array_uuid, u));
	fo.mountpoint = cfg->mountpoint;
	fo.name = cfg->name;
	fo.readonly = cfg->readonly;
	fo.allow_other = cfg->allow_other;
	fo.cache_mode = cfg->cache_mode;
	fo.max_threads = cfg->threads;
	fo.max_background = cfg->max_background;
	fo.fsname = fsname;
	r = front_mount(&fo, d.m, d.c, &f, &err);
	if (r < 0) {
		report(FM_EXIT_MOUNT, err->message);
		code = FM_EXIT_MOUNT;
		goto out_ctl;
	}
	if (!cfg->readonly && mirror_mark_in_use(d.m, &err) < 0) {
		report(FM_EXIT_FAILURE, err->message);
		front_destroy(f);
		goto out_ctl;
	}
	pthread_mutex_lock(&d.lock);
	d.f = f;
	d.image_path = g_strdup(front_image_path(f));
	pthread_mutex_unlock(&d.lock);
	fm_notice("%s: mounted (array %s, %u legs)", front_image_path(d.f), u,
		  mirror_nr_legs(d.m));
	if (!cfg->foreground) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		notify_parent(0, front_image_path(d.f));
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			close(null);
		}
	} else {
		printf("%s\n", front_image_path(d.f));
		fflush(stdout);
	}

	r = front_run(d.f);
	/* `status` goes on being answered: each part is taken out of its
	 * reach (under d.lock) before it is freed. */
	pthread_mutex_lock(&d.lock);
	d.stopping = true;
	front_get_stats(f, &d.final_fs);
	d.f = NULL;
	pthread_mutex_unlock(&d.lock);
	fm_notice("%s: unmounting", cfg->mountpoint);
	front_destroy(f);
	code = FM_EXIT_OK;

	/* Teardown: every dirty block to every leg, then clean superblocks. */
	r = bufio_write_dirty_buffers(d.c);
	if (r < 0) {
		g_clear_error(&err);
		g_set_error(&err, FM_CLI_ERROR, -r, "writing back the cache failed: %s",
			    g_strerror(-r));
	}
	pthread_mutex_lock(&d.lock);
	c = d.c;
	d.c = NULL;
	pthread_mutex_unlock(&d.lock);
	bufio_client_destroy(c);
	/* d.stopping keeps new administration calls out; wait for those
	 * running on d.m (a superblock update at most). */
	pthread_mutex_lock(&d.lock);
	while (d.admin_calls)
		pthread_cond_wait(&d.admin_cond, &d.lock);
	m = d.m;
	d.m = NULL;
	pthread_mutex_unlock(&d.lock);
	if (mirror_stop(m, r < 0 ? NULL : &err) < 0 || r < 0) {
		code = FM_EXIT_FAILURE;
		fm_err("%s: %s", cfg->mountpoint, err ? err->message : "stop failed");
	} else {
		fm_notice("%s: stopped cleanly", cfg->mountpoint);
	}
	pthread_mutex_lock(&d.lock);
	d.stopped = true;
	d.stop_result = code == FM_EXIT_OK ? 0 : -EIO;
	d.stop_message = err ? g_strdup(err->message) : NULL;
	pthread_cond_broadcast(&d.stopped_cond);
	pthread_mutex_unlock(&d.lock);
	ctl_server_stop(d.ctl);
	g_free(d.stop_message);
	g_free(d.image_path);
	dmio_engine_shutdown();
	return code;

out_ctl:
	ctl_server_stop(d.ctl);
out_cache:
	bufio_client_destroy(d.c);
out_mirror:
	mirror_stop(d.m, NULL);
	dmio_engine_shutdown();
	return code;
}

static const char mount_summary_head[] =
	"Assemble the mirror whose legs are LEG... and mount its image on\n"
	"MOUNTPOINT: a directory (the image is MOUNTPOINT/image) or an existing\n"
	"regular file (mounted over, it becomes the image).\n"
	"\n"
	"Mount options (-o, comma-separated; also [mount] in the config file):\n";
static const char mount_summary_tail[] =
	"\n"
	"A mirror whose in-sync legs are not all given is refused unless\n"
	"--degraded; two legs each written without the other (a split brain) are\n"
	"refused unless --prefer names the side to keep (fusemirror(8) RESILIENCE).\n"
	"\n"
	"Exit status: 0 mounted; 2 usage; 3 a leg was refused; 4 mount failed.";

int cmd_mount(int argc, char **argv)
{
	g_autofree char *opts = NULL, *config = NULL, *name = NULL, *prefer = NULL;
	gboolean foreground = FALSE, ro = FALSE, degraded = FALSE;
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ "foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground,
		  "Stay in the foreground (do not daemonize)", NULL },
		{ "options", 'o', 0, G_OPTION_ARG_STRING, &opts, "Mount options (see below)",
		  "OPTS" },
		{ "config", 'c', 0, G_OPTION_ARG_FILENAME, &config,
		  "Read legs and options from FILE (fusemirror.conf(5))", "FILE" },
		{ "name", 0, 0, G_OPTION_ARG_STRING, &name,
		  "Image file name in a directory mount point (default: image)", "NAME" },
		{ "read-only", 'r', 0, G_OPTION_ARG_NONE, &ro, "Same as -o ro", NULL },
		{ "degraded", 0, 0, G_OPTION_ARG_NONE, &degraded,
		  "Start even if in-sync legs are missing (same as -o degraded)", NULL },
		{ "prefer", 0, 0, G_OPTION_ARG_FILENAME, &prefer,
		  "After a split brain, keep the side of LEG (the other side is rebuilt "
		  "from it)", "LEG" },
		{ G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL,
		  "[LEG...] MOUNTPOINT" },
		{ NULL },
	};
	g_autoptr(GOptionContext) octx = g_option_context_new(NULL);
	g_autoptr(GError) err = NULL;
	g_autofree char *keys_help = mount_cfg_help();
	g_autofree char *summary = g_strconcat(mount_summary_head, keys_help,
					       mount_summary_tail, NULL);
	struct mount_cfg cfg;
	unsigned nrest;
	int pipefd[2], code;
	pid_t pid;

	g_option_context_set_summary(octx, summary);
	g_option_context_add_main_entries(octx, entries, NULL);
	if (!g_option_context_parse(octx, &argc, &argv, &err)) {
		cli_error("mount: %s (see fusemirror mount --help)", err->message);
		return FM_EXIT_USAGE;
	}
	mount_cfg_init(&cfg);
	if (config && !mount_cfg_load_file(&cfg, config, &err)) {
		cli_error("%s", err->message);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	if (opts && !mount_cfg_apply_opts(&cfg, opts, &err)) {
		cli_error("mount: %s", err->message);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	if (!mount_cfg_check(&cfg, &err)) {
		cli_error("mount: %s", err->message);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	if (ro)
		cfg.readonly = true;
	if (degraded)
		cfg.degraded = true;
	if (prefer)
		cfg.prefer = g_canonicalize_filename(prefer, NULL);
	if (name) {
		g_free(cfg.name);
		cfg.name = g_strdup(name);
	}
	cfg.foreground = foreground;
	nrest = rest ? g_strv_length(rest) : 0;
	if (nrest == 0) {
		cli_error("mount: no MOUNTPOINT given (see fusemirror mount --help)");
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	/* Absolute paths: the daemon leaves the working directory. */
	cfg.mountpoint = g_canonicalize_filename(rest[nrest - 1], NULL);
	if (nrest > 1) {
		g_strfreev(cfg.legs);
		cfg.legs = g_new0(char *, nrest);
		for (unsigned i = 0; i + 1 < nrest; i++)
			cfg.legs[i] = g_strdup(rest[i]);
	}
	for (char **l = cfg.legs; l && *l; l++) {
		char *abs = g_canonicalize_filename(*l, NULL);

		g_free(*l);
		*l = abs;
	}
	if (!cfg.legs || !cfg.legs[0]) {
		cli_error("mount: no legs given (on the command line or in [array] legs= of "
			  "the config file)");
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	{
		struct stat st;

		if (stat(cfg.mountpoint, &st) < 0 || (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))) {
			cli_error("mount point %s: %s", cfg.mountpoint,
				  errno == ENOENT ? "does not exist" :
				  "not a directory or a regular file");
			mount_cfg_clear(&cfg);
			return FM_EXIT_MOUNT;
		}
	}

	if (cfg.foreground) {
		code = run_daemon(&cfg);
		mount_cfg_clear(&cfg);
		return code;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		cli_error("pipe: %s", strerror(errno));
		return FM_EXIT_FAILURE;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return FM_EXIT_FAILURE;
	}
	if (pid > 0) {
		close(pipefd[1]);
		mount_cfg_clear(&cfg);
		return wait_for_child(pipefd[0]);
	}
	close(pipefd[0]);
	notify_fd = pipefd[1];
	/* From here on the parent reports what went wrong; the daemon's own
	 * messages go to the system log. */
	fm_log_use_syslog(true);
	setsid();
	if (chdir("/") < 0)
		fm_debug("chdir /: %s", strerror(errno));
	code = run_daemon(&cfg);
	notify_parent(code ? code : FM_EXIT_FAILURE, "the daemon stopped before mounting");
	mount_cfg_clear(&cfg);
	return code;
}
