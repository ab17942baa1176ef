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
 * The control verbs are in verbs.c, status in status.c, events in
 * events.c; daemon.h says how they share struct daemon.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
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
#include "daemon.h"
#include "daemon_i.h"
#include "fusemirror/bufio.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"
#include "fusemirror/dmio.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

/* cache_size's default when every leg is in memory (see run_daemon()). */
#define FM_MEM_LEGS_CACHE_SIZE (32ull << 20)

/*----------------------------------------------------------------*/
/* start-up */

/*
 * The pipe to the parent of a daemonized mount: until the verdict, the
 * child's messages of notice level and above ("L<level> text" lines, see
 * daemon_log_forward_begin()), then the verdict "CODE text" (0: mounted,
 * text the image path).
 */
static int notify_fd = -1;

static void notify_parent(int code, const char *msg)
{
	g_autofree char *line = NULL;

	if (notify_fd < 0)
		return;
	daemon_log_forward_end();
	line = g_strdup_printf("%d %s\n", code, msg ? msg : "");
	if (write(notify_fd, line, strlen(line)) < 0)
		fm_debug("cannot notify the parent: %s", strerror(errno));
	close(notify_fd);
	notify_fd = -1;
}

/* The parent: print the child's messages as they come, then return its
 * verdict. */
static int wait_for_child(int fd)
{
	g_autoptr(GString) buf = g_string_new(NULL);
	g_autofree char *verdict = NULL;
	char chunk[4096];
	ssize_t n;
	int code;

	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		char *nl;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		g_string_append_len(buf, chunk, n);
		while ((nl = memchr(buf->str, '\n', buf->len))) {
			*nl = '\0';
			if (!daemon_log_forwarded_print(buf->str) && !verdict)
				verdict = g_strdup(buf->str);
			g_string_erase(buf, 0, nl - buf->str + 1);
		}
	}
	close(fd);
	if (!verdict && buf->len)
		verdict = g_strdup(buf->str);
	if (!verdict) {
		cli_error("the daemon died while starting (messages before this line are its "
			  "last)");
		return FM_EXIT_FAILURE;
	}
	code = atoi(verdict);
	if (code != 0) {
		char *msg = strchr(verdict, ' ');

		if (msg)
			g_strchomp(++msg);
		cli_error("%s", msg && *msg ? msg : "mount failed");
	}
	return code;
}

/* A start-up failure: to the waiting parent, or to the log with -f (and
 * to systemd's STATUS=, which `systemctl status` shows). */
static void report(int code, const char *msg)
{
	g_autofree char *st = g_strdup_printf("STATUS=failed: %s", msg);

	daemon_notify(st);
	if (notify_fd >= 0)
		notify_parent(code, msg);
	else
		fm_err("%s", msg);
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
	/* One malloc arena (before any thread starts): the request paths
	 * allocate nothing once warm, so there is no contention to spread,
	 * and each extra arena kept the memory freed into it resident (and
	 * locked): with cache_size=64M, peak RSS was 221 MiB, 123 with one. */
	if (!mallopt(M_ARENA_MAX, 1))
		fm_info("mallopt(M_ARENA_MAX) failed");
}

/* systemd's STATUS= line (daemon_status_fn): "active, 2 of 2 legs in sync",
 * "resyncing, 2 of 2 legs in sync: resync 28.3% (290.0 MiB of 1.0 GiB),
 * ETA 9 s", "stopping: ...".  Takes d->lock and the mirror's state lock:
 * the notifier's proof of life. */
static void daemon_status_line(void *ctx, char *buf, size_t len)
{
	struct daemon *d = ctx;
	struct mirror_status st = { 0 };
	char s1[32], s2[32];
	int n;

	pthread_mutex_lock(&d->lock);
	if (!d->m) {
		pthread_mutex_unlock(&d->lock);
		g_snprintf(buf, len, "stopping: closing the legs");
		return;
	}
	if (d->stopping) {
		g_snprintf(buf, len, "stopping: %s", d->c ? "writing back the cache"
							   : "flushing the legs");
		pthread_mutex_unlock(&d->lock);
		return;
	}
	mirror_get_status(d->m, &st);
	pthread_mutex_unlock(&d->lock);
	n = g_snprintf(buf, len, "%s, %u of %u legs in sync", st.state ? st.state : "active",
		       st.nr_in_sync, st.nr_slots);
	if (st.action != MIRROR_SYNC_IDLE && n > 0 && (size_t)n < len) {
		uint64_t done = MIN(st.sync_done, st.sync_total);

		n += g_snprintf(buf + n, len - (size_t)n, ": %s %.1f%% (%s of %s)",
				mirror_sync_action_name(st.action),
				st.sync_total ? 100.0 * (double)done / (double)st.sync_total : 0.0,
				fm_format_size(done, s1, sizeof(s1)),
				fm_format_size(st.sync_total, s2, sizeof(s2)));
		if (st.sync_eta_s && n > 0 && (size_t)n < len)
			g_snprintf(buf + n, len - (size_t)n, ", ETA %llu s",
				   (unsigned long long)st.sync_eta_s);
	}
}

/*
 * The events of the assembly itself (an unclean start, a missing leg)
 * come before mirror_assemble() returns the superblock: name the array in
 * them from the first leg whose superblock decodes.  Only the UUID and the
 * name are taken, which never change; the assembly checks everything.
 */
static void peek_array_identity(struct mount_cfg *cfg, struct daemon_events *ev)
{
	g_autofree void *buf = g_malloc(FM_SB_SIZE);

	for (char **l = cfg->legs; l && *l; l++) {
		struct fm_sb sb;
		int fd = open(*l, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		ssize_t n;

		if (fd < 0)
			continue;
		n = pread(fd, buf, FM_SB_SIZE, 0);
		close(fd);
		if (n == (ssize_t)FM_SB_SIZE && fm_sb_decode(buf, &sb, NULL) == 0) {
			daemon_events_set_array(ev, sb.array_uuid, sb.name);
			return;
		}
	}
}

static int run_daemon(struct mount_cfg *cfg)
{
	struct daemon d = { .cfg = cfg, .lock = PTHREAD_MUTEX_INITIALIZER,
			    .stopped_cond = PTHREAD_COND_INITIALIZER,
			    .admin_cond = PTHREAD_COND_INITIALIZER,
			    .ev = daemon_events_new(cfg->mountpoint) };
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
				  .remote_timeout_ms = cfg->remote_timeout_ms,
				  .remote_connect_timeout_ms = cfg->remote_connect_timeout_ms,
				  .remote_retry_max_ms = cfg->remote_retry_max_ms,
				  .degraded = cfg->degraded, .prefer = cfg->prefer,
				  .event_fn = daemon_events_handler, .event_ctx = d.ev };
	struct front_opts fo = { 0 };
	struct fm_sb sb;
	g_autoptr(GError) err = NULL;
	g_autofree char *sock = NULL;
	g_autofree char *fsname = NULL;
	struct bufio_client *c;
	struct mirror *m;
	struct front *f;
	struct fm_bdev bdev;
	struct daemon_notifier *notifier = NULL;
	unsigned block_size;
	char u[37];
	int code = FM_EXIT_FAILURE, r;

	d.started_ns = fm_now_ns();
	harden_process();
	r = dmio_engine_init(NULL);
	if (r < 0 && r != -EBUSY) {
		report(FM_EXIT_FAILURE, "cannot start io_uring (is it disabled by sysctl?)");
		daemon_events_free(d.ev);
		return FM_EXIT_FAILURE;
	}
	peek_array_identity(cfg, d.ev);
	r = mirror_assemble((const char *const *)cfg->legs, g_strv_length(cfg->legs), &mo,
			    &d.m, &err);
	if (r < 0) {
		report(FM_EXIT_LEG, err->message);
		dmio_engine_shutdown();
		daemon_events_free(d.ev);
		return FM_EXIT_LEG;
	}
	mirror_get_sb(d.m, &sb);
	daemon_events_set_array(d.ev, sb.array_uuid, sb.name);
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
	/*
	 * With every leg in memory (tmpfs, ramfs) the cache holds only the
	 * partial blocks written: reads and whole-block writes go around it,
	 * and what it writes back is no faster to read from it than from
	 * the legs.  2% of RAM there was ~480 MiB of memory zeroed when first touched
	 * (30% of the daemon's samples at 4k QD32 randwrite on a fresh
	 * mount), for nothing the legs could not do.
	 */
	if (cfg->cache_size)
		bufio_set_max_cache_size_bytes(cfg->cache_size);
	else if (mirror_legs_in_memory(d.m))
		bufio_set_max_cache_size_bytes(FM_MEM_LEGS_CACHE_SIZE);
	if (cfg->writeback_age_ms != G_MAXUINT64)
		bufio_set_writeback_age_ms(cfg->writeback_age_ms);
	bdev = mirror_bdev(d.m);
	r = bufio_client_create(&bdev, block_size, 16, 0, NULL, NULL, &d.c);
	if (r < 0) {
		report(FM_EXIT_FAILURE, "cannot create the cache");
		goto out_mirror;
	}
	/* Checksums cover whole 4 KiB blocks: so does every write. */
	if (sb.features & FM_SB_FEAT_CHECKSUMS)
		bufio_set_write_align(d.c, FM_SB_CSUM_BLOCK_SIZE);
	sock = ctl_socket_path(cfg->mountpoint, &err);
	if (!sock || ctl_server_start_full(sock, daemon_ctl_handler, daemon_ctl_streams, &d,
						     &d.ctl, &err) < 0) {
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
	fo.event_loop = cfg->event_loop;
	fo.spin_us = cfg->spin_us;
	fo.max_background = cfg->max_background;
	fo.fsname = fsname;
	fo.transport = cfg->transport;
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
	d.transport = front_get_transport(f);
	d.image_path = g_strdup(front_image_path(f));
	pthread_mutex_unlock(&d.lock);
	fm_notice("%s: mounted (array %s, %u legs)", front_image_path(d.f), u,
		  mirror_nr_legs(d.m));
	fm_notice("%s: %s", front_image_path(d.f), front_transport_reason(d.f));
	if (front_splice_note(d.f))
		fm_notice("%s: %s", front_image_path(d.f), front_splice_note(d.f));
	/* READY=1 once the image answers through the mount (notify.c). */
	r = daemon_notifier_start(front_image_path(d.f), daemon_status_line, &d, &notifier);
	if (r < 0)
		fm_warn("cannot start the systemd notifier: %s", g_strerror(-r));
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
	if (front_stop_reason(d.f))
		fm_err("%s: serving stopped: %s", cfg->mountpoint, front_stop_reason(d.f));
	else if (r < 0)
		fm_err("%s: serving stopped: %s", cfg->mountpoint, g_strerror(-r));
	/* `status` goes on being answered: each part is taken out of its
	 * reach (under d.lock) before it is freed. */
	pthread_mutex_lock(&d.lock);
	d.stopping = true;
	front_get_stats(f, &d.final_fs);
	d.f = NULL;
	pthread_mutex_unlock(&d.lock);
	daemon_notify("STOPPING=1\nSTATUS=stopping: writing back the cache");
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
	/* The watchdog is kept until here: the write-back above may be long. */
	daemon_notifier_stop(notifier);
	ctl_server_stop(d.ctl);
	g_free(d.stop_message);
	g_free(d.image_path);
	dmio_engine_shutdown();
	daemon_events_free(d.ev);
	return code;

out_ctl:
	ctl_server_stop(d.ctl);
out_cache:
	bufio_client_destroy(d.c);
out_mirror:
	mirror_stop(d.m, NULL);
	dmio_engine_shutdown();
	daemon_events_free(d.ev);
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
	"Logging: messages go to stderr (\"fusemirror: LEVEL: text\") in the\n"
	"foreground, to the journal when systemd started the daemon (or when it\n"
	"daemonizes and journald runs; otherwise syslog).  Until the mount is\n"
	"live a daemonizing mount prints the daemon's notices (unclean stop,\n"
	"resync, degraded) on its own stderr.  With $NOTIFY_SOCKET set (systemd,\n"
	"Type=notify) mount stays in the foreground and sends READY=1, STATUS=,\n"
	"STOPPING=1 and the watchdog's keep-alives.\n"
	"\n"
	"A dead fusemirror mount on MOUNTPOINT (its daemon was killed) is\n"
	"unmounted (lazily) and replaced; a live one is refused.\n"
	"\n"
	"Exit status: 0 mounted; 2 usage; 3 a leg was refused; 4 mount failed.";

int cmd_mount(int argc, char **argv)
{
	g_auto(GStrv) opts = NULL;
	g_autofree char *config = NULL, *name = NULL, *prefer = NULL;
	g_autofree char *transport = NULL;
	g_autofree char *log_level = NULL, *log_target = NULL, *log_file = NULL;
	gboolean foreground = FALSE, ro = FALSE, degraded = FALSE;
	g_auto(GStrv) rest = NULL;
	GOptionEntry entries[] = {
		{ "foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground,
		  "Stay in the foreground (do not daemonize)", NULL },
		{ "options", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &opts,
		  "Mount options (see below); -o may be repeated", "OPTS" },
		{ "config", 'c', 0, G_OPTION_ARG_FILENAME, &config,
		  "Read legs, the mount point and options from FILE (fusemirror.conf(5))",
		  "FILE" },
		{ "name", 0, 0, G_OPTION_ARG_STRING, &name,
		  "Image file name in a directory mount point (default: image)", "NAME" },
		{ "read-only", 'r', 0, G_OPTION_ARG_NONE, &ro, "Same as -o ro", NULL },
		{ "degraded", 0, 0, G_OPTION_ARG_NONE, &degraded,
		  "Start even if in-sync legs are missing (same as -o degraded)", NULL },
		{ "prefer", 0, 0, G_OPTION_ARG_FILENAME, &prefer,
		  "After a split brain, keep the side of LEG (the other side is rebuilt "
		  "from it)", "LEG" },
		{ "transport", 0, 0, G_OPTION_ARG_STRING, &transport,
		  "FUSE transport: auto, uring or dev (same as -o transport=T)", "T" },
		{ "log-level", 0, 0, G_OPTION_ARG_STRING, &log_level,
		  "error, warning, notice (default), info or debug", "LEVEL" },
		{ "log-target", 0, 0, G_OPTION_ARG_STRING, &log_target,
		  "auto (default), stderr, journal or syslog", "TARGET" },
		{ "log-file", 0, 0, G_OPTION_ARG_FILENAME, &log_file,
		  "Also append every message to FILE", "FILE" },
		{ NULL },
	};
	g_autoptr(GError) err = NULL;
	g_autofree char *keys_help = mount_cfg_help();
	g_autofree char *summary = g_strconcat(mount_summary_head, keys_help,
					       mount_summary_tail, NULL);
	struct mount_cfg cfg;
	enum fm_log_target target = FM_LOG_TARGET_STDERR;
	bool target_auto = true;
	unsigned nrest;
	int pipefd[2], code;
	pid_t pid;

	code = cli_parse_args("mount", "[LEG...] [MOUNTPOINT]", summary, entries, 0, G_MAXUINT,
			      &argc, &argv, &rest);
	if (code)
		return code;
	if (log_level) {
		int l = fm_log_level_parse(log_level);

		if (l < 0) {
			cli_error("mount: --log-level %s: expected error, warning, notice, info or "
				  "debug", log_level);
			return FM_EXIT_USAGE;
		}
		fm_log_set_level((enum fm_log_level)l);
	}
	/* Tests point the journal elsewhere (fusemirror(8), ENVIRONMENT). */
	if (getenv("FUSEMIRROR_JOURNAL_SOCKET"))
		fm_log_set_journal_socket(getenv("FUSEMIRROR_JOURNAL_SOCKET"));
	if (log_target && strcmp(log_target, "auto")) {
		target_auto = false;
		if (!strcmp(log_target, "stderr")) {
			target = FM_LOG_TARGET_STDERR;
		} else if (!strcmp(log_target, "journal")) {
			target = FM_LOG_TARGET_JOURNAL;
			if (!fm_log_journal_available()) {
				cli_error("mount: --log-target journal: the journal's socket "
					  "(/run/systemd/journal/socket) does not exist: "
					  "systemd-journald does not run here");
				return FM_EXIT_USAGE;
			}
		} else if (!strcmp(log_target, "syslog")) {
			target = FM_LOG_TARGET_SYSLOG;
		} else {
			cli_error("mount: --log-target %s: expected auto, stderr, journal or syslog",
				  log_target);
			return FM_EXIT_USAGE;
		}
	}
	if (log_file) {
		int r = fm_log_set_file(log_file);

		if (r < 0) {
			cli_error("mount: --log-file %s: %s", log_file, g_strerror(-r));
			return FM_EXIT_USAGE;
		}
	}
	mount_cfg_init(&cfg);
	if (config && !mount_cfg_load_file(&cfg, config, &err)) {
		cli_error("%s", err->message);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	/* Each -o in turn, as mount(8) does: a later one adds to the earlier
	 * ones (and wins for a key both give). */
	for (char **o = opts; o && *o; o++) {
		if (!mount_cfg_apply_opts(&cfg, *o, &err)) {
			cli_error("mount: %s", err->message);
			mount_cfg_clear(&cfg);
			return FM_EXIT_USAGE;
		}
	}
	if (!mount_cfg_check(&cfg, &err)) {
		cli_error("mount: %s", err->message);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	if (transport && !front_transport_from_name(transport, &cfg.transport)) {
		cli_error("mount: --transport %s: expected auto, uring or dev", transport);
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	if (ro)
		cfg.readonly = true;
	if (degraded)
		cfg.degraded = true;
	if (prefer)
		cfg.prefer = dmio_path_is_remote(prefer) ? g_strdup(prefer) :
			     g_canonicalize_filename(prefer, NULL);
	if (name) {
		g_free(cfg.name);
		cfg.name = g_strdup(name);
	}
	/* Under systemd (Type=notify) the service's main process must be the
	 * daemon: no fork. */
	cfg.foreground = foreground || daemon_notify_enabled();
	nrest = g_strv_length(rest);
	if (nrest == 0 && !cfg.mountpoint) {
		cli_error("mount: no MOUNTPOINT given (on the command line or in [array] "
			  "mountpoint= of the config file; see fusemirror mount --help)");
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	/* Absolute paths: the daemon leaves the working directory. */
	if (nrest > 0) {
		g_free(cfg.mountpoint);
		cfg.mountpoint = g_canonicalize_filename(rest[nrest - 1], NULL);
	} else {
		char *abs = g_canonicalize_filename(cfg.mountpoint, NULL);

		g_free(cfg.mountpoint);
		cfg.mountpoint = abs;
	}
	if (nrest > 1) {
		g_strfreev(cfg.legs);
		cfg.legs = g_new0(char *, nrest);
		for (unsigned i = 0; i + 1 < nrest; i++)
			cfg.legs[i] = g_strdup(rest[i]);
	}
	for (char **l = cfg.legs; l && *l; l++) {
		char *abs;

		if (dmio_path_is_remote(*l))
			continue; /* a URI, not a file name */
		abs = g_canonicalize_filename(*l, NULL);

		g_free(*l);
		*l = abs;
	}
	if (!cfg.legs || !cfg.legs[0]) {
		cli_error("mount: no legs given (on the command line or in [array] legs= of "
			  "the config file)");
		mount_cfg_clear(&cfg);
		return FM_EXIT_USAGE;
	}
	/* Never stack a mount on a fusemirror mount: replace a dead one (its
	 * daemon was killed: every access fails with ENOTCONN), refuse a live
	 * one.  Checked before the stat() below, which a dead mount fails. */
	{
		g_autofree char *canon = NULL;
		pid_t owner = 0;

		switch (cli_mount_state(cfg.mountpoint, &canon, &owner)) {
		case CLI_MOUNT_NONE:
			break;
		case CLI_MOUNT_LIVE:
			if (owner)
				cli_error("mount point %s: already mounted by fusemirror (daemon pid "
					  "%d); run `fusemirror umount %s` first", cfg.mountpoint,
					  (int)owner, cfg.mountpoint);
			else
				cli_error("mount point %s: already mounted by fusemirror, and its "
					  "daemon is busy; run `fusemirror umount %s` first",
					  cfg.mountpoint, cfg.mountpoint);
			mount_cfg_clear(&cfg);
			return FM_EXIT_MOUNT;
		case CLI_MOUNT_DEAD:
			if (cli_drop_dead_mount(canon, &err) < 0) {
				cli_error("mount point %s: %s; clear it with `umount -l %s`",
					  cfg.mountpoint, err->message, canon);
				mount_cfg_clear(&cfg);
				return FM_EXIT_MOUNT;
			}
			fprintf(stderr, "fusemirror: %s: replaced the dead mount a killed daemon "
				"left there\n", canon);
			break;
		}
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
		/* systemd connects stderr to the journal (JOURNAL_STREAM):
		 * write to the journal itself, with fields and levels. */
		if (target_auto && fm_log_stderr_is_journal() && fm_log_journal_available())
			target = FM_LOG_TARGET_JOURNAL;
		fm_log_set_target(target);
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
	/* From here on the parent reports what went wrong and prints our
	 * notices until the mount is live; the daemon's own messages go to
	 * the journal (or syslog), and the log file if one was given. */
	if (target_auto)
		target = fm_log_journal_available() ? FM_LOG_TARGET_JOURNAL : FM_LOG_TARGET_SYSLOG;
	fm_log_set_target(target);
	/* A parent interrupted while it waits must not kill us with SIGPIPE
	 * on the next forwarded line (libfuse ignores SIGPIPE too, but only
	 * from the mount on). */
	signal(SIGPIPE, SIG_IGN);
	if (target != FM_LOG_TARGET_STDERR)     /* else they reach the terminal anyway */
		daemon_log_forward_begin(notify_fd);
	setsid();
	if (chdir("/") < 0)
		fm_debug("chdir /: %s", strerror(errno));
	code = run_daemon(&cfg);
	notify_parent(code ? code : FM_EXIT_FAILURE, "the daemon stopped before mounting");
	mount_cfg_clear(&cfg);
	return code;
}
