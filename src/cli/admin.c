/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Online administration, like mdadm's manage mode: clients of the control
 * socket that ask the daemon serving a mount point to
 *   fail      mark a leg faulty                    (mdadm --fail)
 *   remove    take a faulty leg out                (mdadm --remove)
 *   add       add or re-add a leg, rebuild it      (mdadm --add / --re-add)
 *   replace   rebuild a new leg, drop the old one  (mdadm --replace --with)
 *   scrub     check / repair every leg's copy      (echo check > sync_action)
 *   inject    fault injection on one leg           (dm-flakey, dm-dust)
 * Each checks its own arguments (exit 2 before the daemon is asked), sends
 * the words of man/fusemirror.8's CONTROL PROTOCOL, and prints the daemon's
 * one-line answer.  Legs are passed as given: the daemon resolves them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fusemirror/common.h"

/* The daemon refused a leg verb: exit 3 when it refused what was asked
 * (not a leg of the array, the last in-sync leg, a signature, busy with a
 * rebuild, ...), 1 when something failed while doing it. */
static int leg_verb_code(int code, int e)
{
	if (code != FM_EXIT_FAILURE || e == 0)
		return code;
	switch (e) {
	case EIO: case ENOMEM: case ENOSYS: case EAGAIN: case ETIMEDOUT: case EPROTO:
	case EPIPE: case ECONNRESET: case EINTR: case ENOTSUP: case EUCLEAN:
		return FM_EXIT_FAILURE;
	default:
		return FM_EXIT_LEG;
	}
}

/* Print the daemon's answer as "fusemirror: ..." lines. */
static void print_reply(const GString *out)
{
	g_auto(GStrv) lines = g_strsplit(out->str, "\n", -1);

	for (char **l = lines; *l; l++)
		if (**l)
			printf("fusemirror: %s\n", *l);
}

/* Parse the options of @verb; exactly @nargs positional words (*ret_rest). */
static int parse(const char *verb, const char *args, const char *summary,
		 GOptionEntry *entries, unsigned nargs, int *argc, char ***argv,
		 char ***ret_rest)
{
	return cli_parse_args(verb, args, summary, entries, nargs, nargs, argc, argv, ret_rest);
}

/*
 * A LEG word as the daemon must get it: a relative path is made absolute
 * here, against the caller's working directory (the daemon's is "/"); an
 * absolute path or a URI (nbd://...) is kept.  A new string is added to
 * @keep (it lives as long as @keep).
 */
static const char *leg_word(const char *leg, GPtrArray *keep)
{
	char *abs;

	if (g_path_is_absolute(leg) || strstr(leg, "://"))
		return leg;
	abs = g_canonicalize_filename(leg, NULL);
	g_ptr_array_add(keep, abs);
	return abs;
}

static int call_leg_verb(const char *mountpoint, const char *const *words)
{
	g_autoptr(GString) out = g_string_new(NULL);
	int e, code = cli_call_daemon(mountpoint, words, 0, out, FM_EXIT_FAILURE, &e, false);

	if (code == FM_EXIT_OK)
		print_reply(out);
	return leg_verb_code(code, e);
}

#define LEG_EXIT_STATUS                                                               \
	"Exit status: 0 done; 1 it failed on the way (an I/O error writing the\n"     \
	"superblocks, the daemon is stopping); 2 usage; 3 refused (the daemon\n"      \
	"says why: not a leg of the array, the last in-sync leg, ...), nothing\n"     \
	"changed; 5 no daemon serves MOUNTPOINT; 6 a dead mount is left there."

int cmd_fail(int argc, char **argv)
{
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	int code = parse("fail", "MOUNTPOINT LEG",
		"Mark LEG faulty, like mdadm --fail: it receives no more I/O, the array\n"
		"goes on degraded, and the leg table on the other legs records it, so the\n"
		"leg is not assembled again as if in sync.  The last in-sync leg cannot be\n"
		"failed.  Then `fusemirror remove` it, or `fusemirror add` it back (only\n"
		"the regions written meanwhile are copied).\n\n" LEG_EXIT_STATUS,
		NULL, 2, &argc, &argv, &rest);
	const char *words[] = { "fail", NULL, NULL };

	if (code)
		return code;
	words[1] = leg_word(rest[1], keep);
	return call_leg_verb(rest[0], words);
}

int cmd_remove(int argc, char **argv)
{
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	int code = parse("remove", "MOUNTPOINT LEG",
		"Take a faulty (or rebuilding) LEG out of the array, like mdadm --remove:\n"
		"its slot is freed, the daemon closes and unlocks it.  An in-sync leg is\n"
		"refused: fail it first.\n\n" LEG_EXIT_STATUS,
		NULL, 2, &argc, &argv, &rest);
	const char *words[] = { "remove", NULL, NULL };

	if (code)
		return code;
	words[1] = leg_word(rest[1], keep);
	return call_leg_verb(rest[0], words);
}

int cmd_add(int argc, char **argv)
{
	gboolean force = FALSE, wm = FALSE;
	GOptionEntry entries[] = {
		{ "force", 'f', 0, G_OPTION_ARG_NONE, &force,
		  "Overwrite a new leg that holds a file system, partition table or array",
		  NULL },
		{ "write-mostly", 'W', 0, G_OPTION_ARG_NONE, &wm,
		  "Flag the leg write-mostly: read only when no other leg can serve", NULL },
		{ NULL },
	};
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	int code = parse("add", "MOUNTPOINT LEG",
		"Add LEG to the array and rebuild it online (mdadm --add / --re-add).\n"
		"A leg of this array that was failed or went stale is re-added and only\n"
		"the regions its write-intent bitmap marks are copied; anything else is\n"
		"formatted as a new leg (a path that does not exist is created as a\n"
		"sparse file) and copied wholly.  Returns once the rebuild has started;\n"
		"`fusemirror status` shows its progress.  A re-added leg keeps its\n"
		"write-mostly flag; --write-mostly sets it.\n\n" LEG_EXIT_STATUS,
		entries, 2, &argc, &argv, &rest);
	const char *words[] = { "add", NULL, NULL, NULL, NULL };
	unsigned k = 2;

	if (code)
		return code;
	words[1] = leg_word(rest[1], keep);
	if (force)
		words[k++] = "force";
	if (wm)
		words[k++] = "write-mostly";
	return call_leg_verb(rest[0], words);
}

int cmd_replace(int argc, char **argv)
{
	gboolean force = FALSE;
	GOptionEntry entries[] = {
		{ "force", 'f', 0, G_OPTION_ARG_NONE, &force,
		  "Overwrite a NEW leg that holds a file system, partition table or array",
		  NULL },
		{ NULL },
	};
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	int code = parse("replace", "MOUNTPOINT OLD NEW",
		"Add NEW and rebuild it while OLD goes on serving (mdadm --replace OLD\n"
		"--with NEW); once the rebuild completes, OLD is removed.  The array\n"
		"keeps its redundancy the whole time.  Refused while another rebuild,\n"
		"resync or scrub runs.\n\n" LEG_EXIT_STATUS,
		entries, 3, &argc, &argv, &rest);
	const char *words[] = { "replace", NULL, NULL, NULL, NULL };

	if (code)
		return code;
	words[1] = leg_word(rest[1], keep);
	words[2] = leg_word(rest[2], keep);
	words[3] = force ? "force" : NULL;
	return call_leg_verb(rest[0], words);
}

int cmd_write_mostly(int argc, char **argv)
{
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	int code = parse("write-mostly", "MOUNTPOINT LEG on|off",
		"Flag LEG write-mostly (on) or not (off), like mdadm's --write-mostly /\n"
		"--readwrite: a write-mostly leg gets every write but no reads while\n"
		"another in-sync leg can serve them (whatever the read policy); it is\n"
		"still read when the others fail a read or are gone.  For a slow or\n"
		"remote leg.  Recorded in every leg's superblock; `status` and `examine`\n"
		"show it.\n\n" LEG_EXIT_STATUS,
		NULL, 3, &argc, &argv, &rest);
	const char *words[] = { "write-mostly", NULL, NULL, NULL };

	if (code)
		return code;
	if (strcmp(rest[2], "on") && strcmp(rest[2], "off")) {
		cli_error("write-mostly: expected on or off, not '%s'", rest[2]);
		return FM_EXIT_USAGE;
	}
	words[1] = leg_word(rest[1], keep);
	words[2] = rest[2];         /* on or off, not a path */
	return call_leg_verb(rest[0], words);
}

/*----------------------------------------------------------------*/
/* scrub */

static bool is_scrub(const char *action)
{
	return action && (!strcmp(action, "check") || !strcmp(action, "repair"));
}

/* Poll `sync` until the scrub is over; print the mismatch count. */
static int scrub_wait(const char *mountpoint)
{
	const char *words[] = { "sync", NULL };
	bool tty = isatty(STDERR_FILENO), drew = false;

	for (;;) {
		g_autoptr(GString) out = g_string_new(NULL);
		g_autofree char *action = NULL, *last = NULL, *mism = NULL;
		g_autofree char *done = NULL, *total = NULL;
		int e, code = cli_call_daemon(mountpoint, words, 10000, out, FM_EXIT_FAILURE, &e,
					      true);

		if (code == FM_EXIT_NO_DAEMON || e == EAGAIN) {
			if (drew)
				fputc('\n', stderr);
			cli_error("scrub: the daemon serving %s stopped before the scrub "
				  "finished", mountpoint);
			return FM_EXIT_FAILURE;
		}
		if (code)
			return code;
		action = cli_sync_field(out->str, "action");
		last = cli_sync_field(out->str, "last_action");
		mism = cli_sync_field(out->str, "mismatches");
		if (!action || !mism) {
			cli_error("scrub: %s: malformed answer to sync: %s", mountpoint, out->str);
			return FM_EXIT_FAILURE;
		}
		if (!is_scrub(action)) {
			if (drew)
				fputc('\n', stderr);
			printf("fusemirror: %s finished on %s: %s mismatched sectors\n",
			       is_scrub(last) ? last : "scrub", mountpoint, mism);
			return FM_EXIT_OK;
		}
		done = cli_sync_field(out->str, "done");
		total = cli_sync_field(out->str, "total");
		if (tty && done && total) {
			uint64_t d = g_ascii_strtoull(done, NULL, 10);
			uint64_t t = g_ascii_strtoull(total, NULL, 10);

			fprintf(stderr, "\r%s: %5.1f%%, %s mismatched sectors so far ", action,
				t ? 100.0 * (double)MIN(d, t) / (double)t : 0.0, mism);
			drew = true;
		}
		g_usleep(500 * 1000);
	}
}

int cmd_scrub(int argc, char **argv)
{
	gboolean repair = FALSE, cancel = FALSE, wait = FALSE;
	GOptionEntry entries[] = {
		{ "repair", 'r', 0, G_OPTION_ARG_NONE, &repair,
		  "Rewrite mismatching sectors from the first leg that reads them", NULL },
		{ "cancel", 'c', 0, G_OPTION_ARG_NONE, &cancel, "Stop the running scrub", NULL },
		{ "wait", 'w', 0, G_OPTION_ARG_NONE, &wait,
		  "Return when the scrub has finished, and print its mismatch count", NULL },
		{ NULL },
	};
	g_auto(GStrv) rest = NULL;
	g_autoptr(GString) out = g_string_new(NULL);
	const char *words[] = { "scrub", NULL, NULL };
	int code = parse("scrub", "MOUNTPOINT",
		"Compare every region of every in-sync leg, like md's\n"
		"`echo check > sync_action`, and count the 512-byte sectors that differ\n"
		"(md's mismatch_cnt; `fusemirror status` shows it).  With --repair, the\n"
		"other legs are rewritten from the first one that reads correctly\n"
		"(`echo repair > sync_action`).  The scrub runs in the daemon, at\n"
		"sync_speed_min..sync_speed_max; this returns once it has started,\n"
		"or with --wait once it has finished.  Refused while a resync or\n"
		"rebuild runs.\n"
		"\n"
		"Exit status: 0 started (--wait: finished; --cancel: stopped); 1 refused\n"
		"or failed (another sync action runs, no scrub to cancel, the daemon\n"
		"stopped); 2 usage; 5 no daemon serves MOUNTPOINT; 6 a dead mount is\n"
		"left there.",
		entries, 1, &argc, &argv, &rest);

	if (code)
		return code;
	if (cancel && (repair || wait)) {
		cli_error("scrub: --cancel takes neither --repair nor --wait");
		return FM_EXIT_USAGE;
	}
	if (cancel)
		words[0] = "scrub-cancel";
	else if (repair)
		words[1] = "repair";
	code = cli_call_daemon(rest[0], words, 0, out, FM_EXIT_FAILURE, NULL, false);
	if (code)
		return code;
	print_reply(out);
	return wait ? scrub_wait(rest[0]) : FM_EXIT_OK;
}

/*----------------------------------------------------------------*/
/* inject */

int cmd_inject(int argc, char **argv)
{
	gboolean clear = FALSE, show = FALSE;
	struct fm_fault_args a = { 0 };
	g_autofree char *offset = NULL, *length = NULL, *rate = NULL, *prob = NULL;
	g_autofree char *delay = NULL;
	g_autofree char *delay_reads = NULL;
	g_autofree char *error = NULL, *up = NULL, *down = NULL, *seed = NULL;
	GOptionEntry entries[] = {
		{ "read", 0, 0, G_OPTION_ARG_NONE, &a.read, "Fail reads", NULL },
		{ "write", 0, 0, G_OPTION_ARG_NONE, &a.write,
		  "Fail writes (and discards, write-zeroes): nothing is written", NULL },
		{ "flush", 0, 0, G_OPTION_ARG_NONE, &a.flush, "Fail flushes (any range)", NULL },
		{ "drop-writes", 0, 0, G_OPTION_ARG_NONE, &a.drop_writes,
		  "Writes succeed but are not written (a lying disk)", NULL },
		{ "corrupt-reads", 0, 0, G_OPTION_ARG_NONE, &a.corrupt_reads,
		  "Reads succeed with one byte in every 512 flipped", NULL },
		{ "flip-writes", 0, 0, G_OPTION_ARG_NONE, &a.flip_writes,
		  "Writes land, then one bit of a 4 KiB block of each is flipped on the "
		  "leg (silent corruption)", NULL },
		{ "misdirect-writes", 0, 0, G_OPTION_ARG_NONE, &a.misdirect_writes,
		  "With a range: writes do not reach their place; their first 4 KiB land "
		  "half the range further on (silent corruption)", NULL },
		{ "delay-writes", 0, 0, G_OPTION_ARG_STRING, &delay,
		  "Writes succeed, each piece MS milliseconds late (a slow disk)", "MS" },
		{ "delay-reads", 0, 0, G_OPTION_ARG_STRING, &delay_reads,
		  "Reads succeed, each piece MS milliseconds late (a slow disk)", "MS" },
		{ "heal-on-write", 0, 0, G_OPTION_ARG_NONE, &a.heal_on_write,
		  "With --read and a range: a 4 KiB block reads fine again once written "
		  "(a bad sector that a rewrite remaps)", NULL },
		{ "offset", 'o', 0, G_OPTION_ARG_STRING, &offset,
		  "Start of the affected image byte range (e.g. 1M)", "BYTES" },
		{ "length", 'l', 0, G_OPTION_ARG_STRING, &length,
		  "Length of the range (default: the whole leg, superblock included)", "BYTES" },
		{ "rate", 0, 0, G_OPTION_ARG_STRING, &rate,
		  "Hit this many pieces of I/O in a million (default: all)", "PPM" },
		{ "probability", 'p', 0, G_OPTION_ARG_STRING, &prob,
		  "Or as a fraction: 0.01, 1%", "FRACTION" },
		{ "error", 'e', 0, G_OPTION_ARG_STRING, &error,
		  "Errno of failed I/O (default EIO; e.g. ENOSPC, EROFS, 28)", "ERRNO" },
		{ "up", 0, 0, G_OPTION_ARG_STRING, &up,
		  "Flakey: behave for MS milliseconds ...", "MS" },
		{ "down", 0, 0, G_OPTION_ARG_STRING, &down,
		  "... then misbehave for MS, repeating", "MS" },
		{ "seed", 0, 0, G_OPTION_ARG_STRING, &seed, "Seed of the --rate draws", "N" },
		{ "clear", 0, 0, G_OPTION_ARG_NONE, &clear, "Remove the leg's fault", NULL },
		{ "show", 0, 0, G_OPTION_ARG_NONE, &show,
		  "Print the leg's fault (also without any option)", NULL },
		{ NULL },
	};
	g_auto(GStrv) rest = NULL;
	g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
	g_auto(GStrv) fwords = NULL;
	g_autoptr(GPtrArray) words = g_ptr_array_new();
	g_autoptr(GString) out = g_string_new(NULL);
	g_autoptr(GError) err = NULL;
	struct dmio_fault f;
	int e, code = parse("inject", "MOUNTPOINT LEG",
		"Make LEG misbehave, for testing (like dm-flakey and dm-dust): fail reads,\n"
		"writes or flushes with an errno, drop writes, corrupt reads, or corrupt\n"
		"the stored data silently (flip a bit of what was written, misdirect\n"
		"writes); in an image byte range or on the whole leg; always, at a rate,\n"
		"or in the down phase of an up/down cycle.  Without --read/--write/--flush/\n"
		"--drop-writes/--corrupt-reads/--flip-writes/--misdirect-writes, reads and\n"
		"writes fail.  The fault lasts until --clear\n"
		"or the daemon stops; it is never written to disk.  Without options (or\n"
		"with --show), print the leg's fault.\n"
		"\n"
		"Examples:\n"
		"  fusemirror inject /mnt/fm /var/lib/fm/b.img --read --offset 1M --length 64k\n"
		"  fusemirror inject /mnt/fm /dev/vdc --write --error ENOSPC --probability 1%\n"
		"  fusemirror inject /mnt/fm /dev/vdc --up 2000 --down 500\n"
		"  fusemirror inject /mnt/fm /dev/vdc --read --heal-on-write -o 1M -l 64k\n"
		"  fusemirror inject /mnt/fm /dev/vdc --clear\n"
		"\n"
		"Exit status: 0 done (or shown); 1 it failed on the way; 2 usage; 3 refused\n"
		"(not a leg of the array); 5 no daemon serves MOUNTPOINT; 6 a dead mount\n"
		"is left there.",
		entries, 2, &argc, &argv, &rest);

	if (code)
		return code;
	a.offset = offset;
	a.length = length;
	a.rate = rate;
	a.probability = prob;
	a.error = error;
	a.up = up;
	a.down = down;
	a.seed = seed;
	a.delay_writes = delay;
	a.delay_reads = delay_reads;
	if (clear + show > 1 || ((clear || show) && fm_fault_args_given(&a))) {
		cli_error("inject: --clear and --show take no other option");
		return FM_EXIT_USAGE;
	}
	g_ptr_array_add(words, (char *)"inject");
	g_ptr_array_add(words, (char *)leg_word(rest[1], keep));
	if (clear) {
		g_ptr_array_add(words, (char *)"clear");
	} else if (!fm_fault_args_given(&a)) {
		g_ptr_array_add(words, (char *)"show");
	} else {
		if (!fm_fault_from_args(&a, &f, &err)) {
			cli_error("inject: %s", err->message);
			return FM_EXIT_USAGE;
		}
		fwords = fm_fault_to_words(&f);
		for (char **w = fwords; *w; w++)
			g_ptr_array_add(words, *w);
	}
	g_ptr_array_add(words, NULL);
	code = cli_call_daemon(rest[0], (const char *const *)words->pdata, 0, out,
			       FM_EXIT_FAILURE, &e, false);
	if (code != FM_EXIT_OK)
		return leg_verb_code(code, e);
	if (!clear && !fm_fault_args_given(&a))
		fputs(out->str, stdout);
	else
		print_reply(out);
	return FM_EXIT_OK;
}
