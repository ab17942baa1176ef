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
#include "fusemirror/bufio.h"
#include "fusemirror/common.h"
#include "fusemirror/ctl.h"
#include "fusemirror/dmio.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

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
