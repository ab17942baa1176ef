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
	VERB_STREAM = 1u << 2,          /* a stream (daemon_ctl_streams), no fn */
};

struct daemon_verb {
	const char *name;
	const char *args;               /* the words after the name, for usage */
	int min_args, max_args;         /* how many (max -1: any) */
	unsigned flags;
	/* Decode the words after the name (@argc, @argv as received, the
	 * count already checked) into @rq: 0, or -EINVAL with @err.  It
	 * only reads the words: the fuzz target runs it on any input.  NULL:
	 * the verb takes no word but its LEG (rq->leg = argv[1], if any). */
	int (*parse)(const struct daemon_verb *v, int argc, char **argv,
		     struct daemon_request *rq, GError **err);
	/* VERB_ADMIN: @m is d->m, held; otherwise NULL.  0 with the reply
	 * in @out, or -errno with @err. */
	int (*fn)(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		  GString *out, GError **err);
	const char *help;
};

int daemon_gone_locked(struct daemon *d, GError **err)
{
	g_set_error(err, FM_CLI_ERROR, EAGAIN, "%s: the daemon is stopping (closing the legs)",
		    d->cfg->mountpoint);
	return -EAGAIN;
}

static int usage(const struct daemon_verb *v, GError **err)
{
	g_set_error(err, FM_CLI_ERROR, EINVAL, "usage: %s%s%s", v->name, *v->args ? " " : "",
		    v->args);
	return -EINVAL;
}

/*----------------------------------------------------------------*/
/* Information */

static int parse_status(const struct daemon_verb *v, int argc, char **argv,
			struct daemon_request *rq, GError **err)
{
	int format = argc == 2 ? daemon_status_format_parse(argv[1]) : DAEMON_STATUS_TEXT;

	(void)v;
	if (format < 0 || format == DAEMON_STATUS_SYNC) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "status: unknown format '%s' (text, json or prometheus)", argv[1]);
		return -EINVAL;
	}
	rq->format = (enum daemon_status_format)format;
	return 0;
}

static int parse_sync(const struct daemon_verb *v, int argc, char **argv,
		      struct daemon_request *rq, GError **err)
{
	(void)v, (void)argc, (void)argv, (void)err;
	rq->format = DAEMON_STATUS_SYNC;
	return 0;
}

static int verb_status(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		       GString *out, GError **err)
{
	int r = 0;

	(void)m;
	pthread_mutex_lock(&d->lock);
	if (!d->m)
		r = daemon_gone_locked(d, err);
	else
		daemon_status_render_locked(d, rq->format, out);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int verb_pid(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		    GString *out, GError **err)
{
	(void)d, (void)m, (void)rq, (void)err;
	g_string_append_printf(out, "%d\n", (int)getpid());
	return 0;
}

static int verb_help(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		     GString *out, GError **err);

/*----------------------------------------------------------------*/
/* Stopping */

static int verb_stop(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		     GString *out, GError **err)
{
	int r;

	(void)m, (void)rq;
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

static int verb_fail(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		     GString *out, GError **err)
{
	int r = mirror_fail_leg(m, rq->leg, err);

	(void)d;
	if (r >= 0) {
		g_string_append_printf(out, "leg %s marked faulty", rq->leg);
		append_array_state(m, out);
	}
	return r;
}

static int verb_remove(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		       GString *out, GError **err)
{
	int r = mirror_remove_leg(m, rq->leg, err);

	(void)d;
	if (r >= 0) {
		g_string_append_printf(out, "leg %s removed", rq->leg);
		append_array_state(m, out);
	}
	return r;
}

static int parse_add(const struct daemon_verb *v, int argc, char **argv,
		     struct daemon_request *rq, GError **err)
{
	rq->leg = argv[1];
	for (int k = 2; k < argc; k++) {
		if (!strcmp(argv[k], "force"))
			rq->add_flags |= MIRROR_ADD_FORCE;
		else if (!strcmp(argv[k], "write-mostly"))
			rq->add_flags |= MIRROR_ADD_WRITE_MOSTLY;
		else
			return usage(v, err);
	}
	return 0;
}

static int verb_add(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		    GString *out, GError **err)
{
	int r;

	(void)d;
	r = mirror_add_leg(m, rq->leg, rq->add_flags, err);
	if (r >= 0) {
		g_string_append_printf(out, "leg %s added%s, recovery %s", rq->leg,
				       (rq->add_flags & MIRROR_ADD_WRITE_MOSTLY) ? " (write-mostly)"
										 : "",
				       r == 1 ? "queued (it starts when the running sync action "
						"ends)" : "started");
		append_array_state(m, out);
	}
	return r;
}

static int parse_write_mostly(const struct daemon_verb *v, int argc, char **argv,
			      struct daemon_request *rq, GError **err)
{
	(void)argc;
	rq->leg = argv[1];
	rq->on = !strcmp(argv[2], "on");
	if (!rq->on && strcmp(argv[2], "off"))
		return usage(v, err);
	return 0;
}

static int verb_write_mostly(struct daemon *d, struct mirror *m,
			     const struct daemon_request *rq, GString *out, GError **err)
{
	int r;

	(void)d;
	r = mirror_set_write_mostly(m, rq->leg, rq->on, err);
	if (r >= 0)
		g_string_append_printf(out, "leg %s: write-mostly %s%s", rq->leg,
				       rq->on ? "on" : "off",
				       rq->on ? " (read only when no other leg can serve)" : "");
	return r;
}

/* An optional last word (the verb's last, at argv[@at]) that must be
 * @word ("force", "repair"): whether it is there. */
static int flag_word(const struct daemon_verb *v, int argc, char **argv, int at,
		     const char *word, bool *ret, GError **err)
{
	*ret = false;
	if (argc <= at)
		return 0;
	if (strcmp(argv[at], word))
		return usage(v, err);
	*ret = true;
	return 0;
}

static int parse_replace(const struct daemon_verb *v, int argc, char **argv,
			 struct daemon_request *rq, GError **err)
{
	bool force;

	rq->leg = argv[1];
	rq->leg2 = argv[2];
	if (flag_word(v, argc, argv, 3, "force", &force, err) < 0)
		return -EINVAL;
	rq->add_flags = force ? MIRROR_ADD_FORCE : 0;
	return 0;
}

static int verb_replace(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
			GString *out, GError **err)
{
	int r;

	(void)d;
	r = mirror_replace_leg(m, rq->leg, rq->leg2, rq->add_flags, err);
	if (r >= 0)
		g_string_append_printf(out, "leg %s added to replace %s, recovery %s; "
				       "%s is removed when it completes", rq->leg2, rq->leg,
				       r == 1 ? "queued (it starts when the running sync action "
						"ends)" : "started", rq->leg);
	return r;
}

static int parse_scrub(const struct daemon_verb *v, int argc, char **argv,
		       struct daemon_request *rq, GError **err)
{
	return flag_word(v, argc, argv, 1, "repair", &rq->repair, err);
}

static int verb_scrub(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		      GString *out, GError **err)
{
	int r;

	(void)d;
	r = mirror_scrub(m, rq->repair, err);
	if (r >= 0)
		g_string_append_printf(out, "scrub started (%s)", rq->repair ? "repair" : "check");
	return r;
}

static int verb_scrub_cancel(struct daemon *d, struct mirror *m,
			     const struct daemon_request *rq, GString *out, GError **err)
{
	int r = mirror_scrub_cancel(m, err);

	(void)d, (void)rq;
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

static int parse_inject(const struct daemon_verb *v, int argc, char **argv,
			struct daemon_request *rq, GError **err)
{
	(void)v;
	rq->leg = argv[1];
	if (argc == 3 && !strcmp(argv[2], "clear")) {
		rq->inject = DAEMON_INJECT_CLEAR;
		return 0;
	}
	if (argc == 3 && !strcmp(argv[2], "show")) {
		rq->inject = DAEMON_INJECT_SHOW;
		return 0;
	}
	rq->inject = DAEMON_INJECT_SET;
	if (!fm_fault_from_words((const char *const *)argv + 2, (unsigned)argc - 2, &rq->fault,
				 err))
		return -EINVAL;
	return 0;
}

static int verb_inject(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		       GString *out, GError **err)
{
	int r;

	(void)d;
	if (rq->inject == DAEMON_INJECT_CLEAR) {
		r = mirror_inject(m, rq->leg, NULL, err);
		if (r >= 0)
			g_string_append_printf(out, "leg %s: fault cleared", rq->leg);
		return r;
	}
	r = mirror_inject(m, rq->leg, &rq->fault, err);
	if (r >= 0) {
		g_string_append_printf(out, "leg %s: fault set: ", rq->leg);
		fm_fault_describe(&rq->fault, out);
	}
	return r;
}

static int parse_monitor(const struct daemon_verb *v, int argc, char **argv,
			 struct daemon_request *rq, GError **err)
{
	if (argc == 2 && !strcmp(argv[1], "recent"))
		rq->recent = true;
	else if (argc == 2 && !strcmp(argv[1], "oneshot"))
		rq->oneshot = true;
	else if (argc == 2)
		return usage(v, err);
	return 0;
}

/*----------------------------------------------------------------*/
/* The table */

static const struct daemon_verb verbs[] = {
	{ "status", "[text|json|prometheus]", 0, 1, 0, parse_status, verb_status,
	  "the array's state, legs, sync action and counters" },
	{ "sync", "", 0, 0, 0, parse_sync, verb_status,
	  "the sync action as key=value words on one line" },
	{ "pid", "", 0, 0, 0, NULL, verb_pid, "the daemon's process id" },
	{ "help", "", 0, 0, 0, NULL, verb_help, "these lines" },
	{ "stop", "", 0, 0, 0, NULL, verb_stop,
	  "unmount and stop cleanly; answers once stopped" },
	{ "fail", "LEG", 1, 1, VERB_ADMIN | VERB_WRITABLE, NULL, verb_fail, "mark LEG faulty" },
	{ "remove", "LEG", 1, 1, VERB_ADMIN | VERB_WRITABLE, NULL, verb_remove,
	  "take a faulty LEG out" },
	{ "add", "LEG [force] [write-mostly]", 1, 3, VERB_ADMIN | VERB_WRITABLE, parse_add,
	  verb_add, "add or re-add LEG and rebuild it" },
	{ "write-mostly", "LEG on|off", 2, 2, VERB_ADMIN | VERB_WRITABLE, parse_write_mostly,
	  verb_write_mostly, "read LEG only when no other leg can serve (md's write-mostly)" },
	{ "replace", "OLD NEW [force]", 2, 3, VERB_ADMIN | VERB_WRITABLE, parse_replace,
	  verb_replace, "rebuild NEW, then remove OLD" },
	{ "scrub", "[repair]", 0, 1, VERB_ADMIN | VERB_WRITABLE, parse_scrub, verb_scrub,
	  "compare (and repair) every leg's copy" },
	{ "scrub-cancel", "", 0, 0, VERB_ADMIN, NULL, verb_scrub_cancel, "stop a running scrub" },
	{ "inject", "LEG clear|show|key=value...", 2, -1, VERB_ADMIN, parse_inject, verb_inject,
	  "set, clear or show the fault injected on LEG" },
	{ "monitor", "[recent|oneshot]", 0, 1, VERB_STREAM, parse_monitor, NULL,
	  "stream the events as JSON lines (stays open)" },
};

const struct ctl_stream_cmd daemon_ctl_streams[] = {
	{ "monitor", daemon_monitor_stream, DAEMON_MONITORS_MAX },
	{ NULL },
};

static const struct daemon_verb *find_verb(const char *name)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(verbs); i++)
		if (!strcmp(verbs[i].name, name))
			return &verbs[i];
	return NULL;
}

static int verb_help(struct daemon *d, struct mirror *m, const struct daemon_request *rq,
		     GString *out, GError **err)
{
	(void)d, (void)m, (void)rq, (void)err;
	for (unsigned i = 0; i < G_N_ELEMENTS(verbs); i++) {
		g_autofree char *words = g_strdup_printf("%s %s", verbs[i].name, verbs[i].args);

		g_string_append_printf(out, "%-36s %s%s\n", words, verbs[i].help,
				       verbs[i].flags & VERB_WRITABLE ? " (writable array)" : "");
	}
	return 0;
}

int daemon_request_parse(int argc, char **argv, struct daemon_request *rq, GError **err)
{
	const struct daemon_verb *v = argc >= 1 ? find_verb(argv[0]) : NULL;

	memset(rq, 0, sizeof(*rq));
	if (!v) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "unknown control command '%s' (send 'help' for the list)",
			    argc >= 1 ? argv[0] : "");
		return -EINVAL;
	}
	rq->verb = v;
	rq->name = v->name;
	if (argc - 1 < v->min_args || (v->max_args >= 0 && argc - 1 > v->max_args))
		return usage(v, err);
	if (v->parse)
		return v->parse(v, argc, argv, rq, err);
	rq->leg = argc >= 2 ? argv[1] : NULL;
	return 0;
}

int daemon_ctl_handler(void *ctx, int argc, char **argv, uid_t peer_uid, GString *out,
		       GError **err)
{
	struct daemon *d = ctx;
	struct daemon_request rq;
	const struct daemon_verb *v;
	struct mirror *m;
	int r;

	(void)peer_uid;
	r = daemon_request_parse(argc, argv, &rq, err);
	if (r < 0)
		return r;
	v = rq.verb;
	if (v->flags & VERB_STREAM) {   /* the control socket streams these */
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s: a stream, not a request", v->name);
		return -EINVAL;
	}
	if (!strcmp(v->name, "inject") && rq.inject == DAEMON_INJECT_SHOW)
		return inject_show(d, rq.leg, out, err);
	if (!(v->flags & VERB_ADMIN))
		return v->fn(d, NULL, &rq, out, err);

	m = admin_begin(d, err);
	if (!m)
		return -EAGAIN;
	if ((v->flags & VERB_WRITABLE) && mirror_is_readonly(m)) {
		g_set_error(err, FM_CLI_ERROR, EROFS, "%s: the array is mounted read-only",
			    v->name);
		r = -EROFS;
	} else {
		r = v->fn(d, m, &rq, out, err);
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
