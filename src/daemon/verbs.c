/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The control verbs: ONE table (name, the words it takes, whether it
 * administers the array and needs it writable, a line of help) used to
 * check and dispatch every request of the control socket and to answer
 * `help`.  The words are documented in man/fusemirror.8's CONTROL
 * PROTOCOL, and checked here because any root process may send them.
 *
 * Administration verbs (VERB_ADMIN) run on d->m without d->lock, between
 * admin_begin() and admin_end() (see daemon.h); the others take d->lock
 * for as long as they read the array.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "fusemirror/common.h"

enum verb_flags {
	VERB_ADMIN = 1u << 0,           /* calls the mirror's administration */
	VERB_WRITABLE = 1u << 1,        /* ... and needs the array writable */
};

struct verb {
	const char *name;
	const char *args;               /* the words after the name, for usage */
	int min_args, max_args;         /* how many (max -1: any) */
	unsigned flags;
	/* VERB_ADMIN: @m is d->m, held; otherwise NULL.  @argv[0] is the
	 * verb.  0 with the reply in @out, or -errno with @err. */
	int (*fn)(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		  GError **err);
	const char *help;
};

int daemon_gone_locked(struct daemon *d, GError **err)
{
	g_set_error(err, FM_CLI_ERROR, EAGAIN, "%s: the daemon is stopping (closing the legs)",
		    d->cfg->mountpoint);
	return -EAGAIN;
}

static int usage(const struct verb *v, GError **err)
{
	g_set_error(err, FM_CLI_ERROR, EINVAL, "usage: %s%s%s", v->name, *v->args ? " " : "",
		    v->args);
	return -EINVAL;
}

/*----------------------------------------------------------------*/
/* Information */

static int verb_status(struct daemon *d, struct mirror *m, int argc, char **argv,
		       GString *out, GError **err)
{
	int format = argc == 2 ? daemon_status_format_parse(argv[1]) : DAEMON_STATUS_TEXT;
	int r = 0;

	(void)m;
	if (!strcmp(argv[0], "sync"))
		format = DAEMON_STATUS_SYNC;
	else if (format < 0 || format == DAEMON_STATUS_SYNC) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "status: unknown format '%s' (text, json or prometheus)", argv[1]);
		return -EINVAL;
	}
	pthread_mutex_lock(&d->lock);
	if (!d->m)
		r = daemon_gone_locked(d, err);
	else
		daemon_status_render_locked(d, (enum daemon_status_format)format, out);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int verb_pid(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		    GError **err)
{
	(void)d, (void)m, (void)argc, (void)argv, (void)err;
	g_string_append_printf(out, "%d\n", (int)getpid());
	return 0;
}

static int verb_help(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		     GError **err);

/*----------------------------------------------------------------*/
/* Stopping */

static int verb_stop(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		     GError **err)
{
	int r;

	(void)m, (void)argc, (void)argv;
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

/*----------------------------------------------------------------*/
/* Administration */

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
		daemon_gone_locked(d, err);
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

/* An optional last word that must be @word ("force", "repair"). */
static bool flag_word(const struct verb *v, int argc, char **argv, const char *word,
		      bool *ret, GError **err)
{
	*ret = false;
	if (argc - 1 < v->max_args)
		return true;
	if (strcmp(argv[argc - 1], word)) {
		usage(v, err);
		return false;
	}
	*ret = true;
	return true;
}

static const struct verb *find_verb(const char *name);

static int verb_fail(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		     GError **err)
{
	int r = mirror_fail_leg(m, argv[1], err);

	(void)d, (void)argc;
	if (r >= 0) {
		g_string_append_printf(out, "leg %s marked faulty", argv[1]);
		append_array_state(m, out);
	}
	return r;
}

static int verb_remove(struct daemon *d, struct mirror *m, int argc, char **argv,
		       GString *out, GError **err)
{
	int r = mirror_remove_leg(m, argv[1], err);

	(void)d, (void)argc;
	if (r >= 0) {
		g_string_append_printf(out, "leg %s removed", argv[1]);
		append_array_state(m, out);
	}
	return r;
}

static int verb_add(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		    GError **err)
{
	unsigned flags = 0;
	int r;

	(void)d;
	for (int k = 2; k < argc; k++) {
		if (!strcmp(argv[k], "force"))
			flags |= MIRROR_ADD_FORCE;
		else if (!strcmp(argv[k], "write-mostly"))
			flags |= MIRROR_ADD_WRITE_MOSTLY;
		else
			return usage(find_verb("add"), err);
	}
	r = mirror_add_leg(m, argv[1], flags, err);
	if (r >= 0) {
		g_string_append_printf(out, "leg %s added%s, recovery %s", argv[1],
				       (flags & MIRROR_ADD_WRITE_MOSTLY) ? " (write-mostly)" : "",
				       r == 1 ? "queued (it starts when the running sync action "
						"ends)" : "started");
		append_array_state(m, out);
	}
	return r;
}

static int verb_write_mostly(struct daemon *d, struct mirror *m, int argc, char **argv,
			     GString *out, GError **err)
{
	bool on = !strcmp(argv[2], "on");
	int r;

	(void)d, (void)argc;
	if (!on && strcmp(argv[2], "off"))
		return usage(find_verb("write-mostly"), err);
	r = mirror_set_write_mostly(m, argv[1], on, err);
	if (r >= 0)
		g_string_append_printf(out, "leg %s: write-mostly %s%s", argv[1], on ? "on" : "off",
				       on ? " (read only when no other leg can serve)" : "");
	return r;
}

static int verb_replace(struct daemon *d, struct mirror *m, int argc, char **argv,
			GString *out, GError **err)
{
	bool force;
	int r;

	(void)d;
	if (!flag_word(find_verb("replace"), argc, argv, "force", &force, err))
		return -EINVAL;
	r = mirror_replace_leg(m, argv[1], argv[2], force ? MIRROR_ADD_FORCE : 0, err);
	if (r >= 0)
		g_string_append_printf(out, "leg %s added to replace %s, recovery %s; "
				       "%s is removed when it completes", argv[2], argv[1],
				       r == 1 ? "queued (it starts when the running sync action "
						"ends)" : "started", argv[1]);
	return r;
}

static int verb_scrub(struct daemon *d, struct mirror *m, int argc, char **argv,
		      GString *out, GError **err)
{
	bool repair;
	int r;

	(void)d;
	if (!flag_word(find_verb("scrub"), argc, argv, "repair", &repair, err))
		return -EINVAL;
	r = mirror_scrub(m, repair, err);
	if (r >= 0)
		g_string_append_printf(out, "scrub started (%s)", repair ? "repair" : "check");
	return r;
}

static int verb_scrub_cancel(struct daemon *d, struct mirror *m, int argc, char **argv,
			     GString *out, GError **err)
{
	int r = mirror_scrub_cancel(m, err);

	(void)d, (void)argc, (void)argv;
	if (r >= 0)
		g_string_append(out, "scrub cancelled");
	return r;
}

/* `inject LEG show`: the fault now set on @leg (not an administration
 * call: it only reads). */
static int inject_show(struct daemon *d, const char *leg, GString *out, GError **err)
{
	g_autofree struct mirror_leg_stats *ls = NULL;
	unsigned n;

	pthread_mutex_lock(&d->lock);
	if (!d->m) {
		int r = daemon_gone_locked(d, err);

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

static int verb_inject(struct daemon *d, struct mirror *m, int argc, char **argv,
		       GString *out, GError **err)
{
	struct dmio_fault f;
	int r;

	(void)d;
	if (argc == 3 && !strcmp(argv[2], "clear")) {
		r = mirror_inject(m, argv[1], NULL, err);
		if (r >= 0)
			g_string_append_printf(out, "leg %s: fault cleared", argv[1]);
		return r;
	}
	if (!fm_fault_from_words((const char *const *)argv + 2, (unsigned)argc - 2, &f, err))
		return -EINVAL;
	r = mirror_inject(m, argv[1], &f, err);
	if (r >= 0) {
		g_string_append_printf(out, "leg %s: fault set: ", argv[1]);
		fm_fault_describe(&f, out);
	}
	return r;
}

/*----------------------------------------------------------------*/
/* The table */

static const struct verb verbs[] = {
	{ "status", "[text|json|prometheus]", 0, 1, 0, verb_status,
	  "the array's state, legs, sync action and counters" },
	{ "sync", "", 0, 0, 0, verb_status,
	  "the sync action as key=value words on one line" },
	{ "pid", "", 0, 0, 0, verb_pid, "the daemon's process id" },
	{ "help", "", 0, 0, 0, verb_help, "these lines" },
	{ "stop", "", 0, 0, 0, verb_stop, "unmount and stop cleanly; answers once stopped" },
	{ "fail", "LEG", 1, 1, VERB_ADMIN | VERB_WRITABLE, verb_fail, "mark LEG faulty" },
	{ "remove", "LEG", 1, 1, VERB_ADMIN | VERB_WRITABLE, verb_remove,
	  "take a faulty LEG out" },
	{ "add", "LEG [force] [write-mostly]", 1, 3, VERB_ADMIN | VERB_WRITABLE, verb_add,
	  "add or re-add LEG and rebuild it" },
	{ "write-mostly", "LEG on|off", 2, 2, VERB_ADMIN | VERB_WRITABLE, verb_write_mostly,
	  "read LEG only when no other leg can serve (md's write-mostly)" },
	{ "replace", "OLD NEW [force]", 2, 3, VERB_ADMIN | VERB_WRITABLE, verb_replace,
	  "rebuild NEW, then remove OLD" },
	{ "scrub", "[repair]", 0, 1, VERB_ADMIN | VERB_WRITABLE, verb_scrub,
	  "compare (and repair) every leg's copy" },
	{ "scrub-cancel", "", 0, 0, VERB_ADMIN, verb_scrub_cancel, "stop a running scrub" },
	{ "inject", "LEG clear|show|key=value...", 2, -1, VERB_ADMIN, verb_inject,
	  "set, clear or show the fault injected on LEG" },
};

const struct ctl_stream_cmd daemon_ctl_streams[] = {
	{ "monitor", daemon_monitor_stream, DAEMON_MONITORS_MAX },
	{ NULL },
};

static const struct verb *find_verb(const char *name)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(verbs); i++)
		if (!strcmp(verbs[i].name, name))
			return &verbs[i];
	return NULL;
}

static int verb_help(struct daemon *d, struct mirror *m, int argc, char **argv, GString *out,
		     GError **err)
{
	(void)d, (void)m, (void)argc, (void)argv, (void)err;
	for (unsigned i = 0; i < G_N_ELEMENTS(verbs); i++) {
		g_autofree char *words = g_strdup_printf("%s %s", verbs[i].name, verbs[i].args);

		g_string_append_printf(out, "%-36s %s%s\n", words, verbs[i].help,
				       verbs[i].flags & VERB_WRITABLE ? " (writable array)" : "");
	}
	g_string_append_printf(out, "%-36s %s\n", "monitor [recent|oneshot]",
			       "stream the events as JSON lines (stays open)");
	return 0;
}

int daemon_ctl_handler(void *ctx, int argc, char **argv, uid_t peer_uid, GString *out,
		       GError **err)
{
	struct daemon *d = ctx;
	const struct verb *v = find_verb(argv[0]);
	struct mirror *m;
	int r;

	(void)peer_uid;
	if (!v) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "unknown control command '%s' (send 'help' for the list)", argv[0]);
		return -EINVAL;
	}
	if (argc - 1 < v->min_args || (v->max_args >= 0 && argc - 1 > v->max_args))
		return usage(v, err);
	if (!strcmp(v->name, "inject") && argc == 3 && !strcmp(argv[2], "show"))
		return inject_show(d, argv[1], out, err);
	if (!(v->flags & VERB_ADMIN))
		return v->fn(d, NULL, argc, argv, out, err);

	m = admin_begin(d, err);
	if (!m)
		return -EAGAIN;
	if ((v->flags & VERB_WRITABLE) && mirror_is_readonly(m)) {
		g_set_error(err, FM_CLI_ERROR, EROFS, "%s: the array is mounted read-only",
			    v->name);
		r = -EROFS;
	} else {
		r = v->fn(d, m, argc, argv, out, err);
	}
	admin_end(d);
	if (r < 0) {
		/* Make sure a failed mirror call left a message. */
		if (err && !*err)
			g_set_error(err, FM_CLI_ERROR, -r, "%s: %s", v->name, g_strerror(-r));
		return r;
	}
	fm_notice("%s: %s", d->cfg->mountpoint, out->str);
	g_string_append_c(out, '\n');
	return 0;
}
