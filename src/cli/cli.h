/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared by the sub-commands of the fusemirror binary: main.c (create,
 * status, umount, the verb table), mount.c (mount, the daemon and its
 * control commands), admin.c (fail, remove, add, replace, scrub, inject),
 * examine.c (examine), config.c (mount options and the config file) and
 * fault_opt.c (fault-injection options, shared by `inject` and the daemon).
 */
#ifndef FM_CLI_H
#define FM_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "fusemirror/dmio.h"
#include "fusemirror/front.h"
#include "fusemirror/mirror.h"

/* Exit codes (documented in man/fusemirror.8, EXIT STATUS). */
enum fm_exit {
	FM_EXIT_OK = 0,
	FM_EXIT_FAILURE = 1,    /* I/O or runtime failure */
	FM_EXIT_USAGE = 2,      /* bad command line or configuration file */
	FM_EXIT_LEG = 3,        /* a leg was refused */
	FM_EXIT_MOUNT = 4,      /* the mount itself failed */
	FM_EXIT_NO_DAEMON = 5,  /* no daemon serves that mount point */
	FM_EXIT_DEAD_MOUNT = 6, /* status: a dead mount (its daemon was killed) */
};

#define FM_CLI_ERROR (fm_cli_error_quark())
GQuark fm_cli_error_quark(void);

/* Everything `mount` needs, from the config file then the command line.
 * The fields of mount options are set by the table mount_cfg_keys[]. */
struct mount_cfg {
	char **legs;                    /* NULL-terminated */
	char *mountpoint;
	char *name;                     /* image file name in a directory */
	bool foreground;
	bool readonly;
	bool allow_other;
	enum front_cache_mode cache_mode;
	enum front_transport transport; /* FUSE transport; default auto */
	uint64_t cache_size;            /* 0: bufio's default (2% of RAM) */
	unsigned block_size;            /* 0: the superblock's suggestion */
	enum mirror_read_policy read_policy;
	unsigned threads;
	bool event_loop;                /* front_opts.event_loop */
	unsigned spin_us;               /* front_opts.spin_us */
	unsigned max_background;
	uint64_t writeback_age_ms;
	/* Resilience (see struct mirror_opts) */
	unsigned max_read_errors;       /* read errors before a leg is failed */
	unsigned max_read_error_ppm;    /* corrected read errors per million reads */
	unsigned read_error_decay_ms;   /* the read error counts halve this often */
	uint64_t sync_speed_min;        /* resync bytes/s kept under load */
	uint64_t sync_speed_max;        /* resync bytes/s when idle */
	unsigned bitmap_delay_ms;       /* idle time before a bitmap bit is cleared */
	unsigned remote_timeout_ms;     /* remote legs: a silent server is failed */
	unsigned remote_connect_timeout_ms; /* ... a handshake that takes longer fails */
	unsigned remote_retry_max_ms;   /* ... longest wait between reconnections */
	bool degraded;                  /* start without missing in-sync legs */
	char *prefer;                   /* --prefer LEG: the side kept in a split brain */
	/* Bit i: mount_cfg_keys[i] was given (file or -o), not defaulted. */
	uint64_t set;
};

/*
 * One mount option / [mount] key of the config file.  The table
 * mount_cfg_keys[] (config.c) is the one place a key, its default and its
 * help line are written; everything else is derived from it.
 *
 * To add a key: add a field to struct mount_cfg, then a row to the table:
 *   - a generic parser with FIELD(field) (mount_cfg_parse_uint: min..max,
 *     times scale; mount_cfg_parse_size: a size min..max, MOUNT_CFG_POW2;
 *     mount_cfg_parse_bool with MOUNT_CFG_FLAG), or your own parse function
 *     (it gets the key for k->name and k->expect in its messages);
 *   - def: the default written as a value ("30", "1M", "writeback"), which
 *     mount_cfg_init() parses; or def_text when the default is computed
 *     elsewhere ("2% of RAM"; the field stays 0);
 *   - help: one line for `mount --help`; expect: what a bad value is told.
 * Then document it in conf/fusemirror.conf and man/fusemirror.conf.5 with
 * the same default (test_cli's config_documented checks both).
 */
struct mount_cfg_key {
	const char *name;
	const char *metavar;            /* "N", "SIZE"; NULL for a flag */
	/* Parse @val (NULL only for a MOUNT_CFG_FLAG given bare) into @cfg;
	 * false with @err naming the key and the value. */
	bool (*parse)(struct mount_cfg *cfg, const struct mount_cfg_key *k, const char *val,
		      GError **err);
	size_t offset, width;           /* the field, for the generic parsers */
	uint64_t min, max;              /* the generic parsers' range */
	uint64_t scale;                 /* mount_cfg_parse_uint: stored value = v * scale */
	unsigned flags;                 /* MOUNT_CFG_* */
	const char *def;                /* default, as a value; NULL: none or def_text */
	const char *def_text;           /* default as prose, when not a value */
	const char *expect;             /* "a power of two from 512 to 1M" */
	const char *help;
};

enum {
	MOUNT_CFG_FLAG = 1u << 0,       /* may be given bare ("-o ro") */
	MOUNT_CFG_NOFILE = 1u << 1,     /* -o only, not a config file key */
	MOUNT_CFG_POW2 = 1u << 2,       /* mount_cfg_parse_size: a power of two */
};

/* The keys, ended by a row whose name is NULL. */
extern const struct mount_cfg_key mount_cfg_keys[];
const struct mount_cfg_key *mount_cfg_key_find(const char *name);
/* The generic parsers of the table. */
bool mount_cfg_parse_bool(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err);
bool mount_cfg_parse_uint(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err);
bool mount_cfg_parse_size(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err);

/* Every key at its default. */
void mount_cfg_init(struct mount_cfg *cfg);
void mount_cfg_clear(struct mount_cfg *cfg);
/* True when key @name was given rather than defaulted (@name must exist). */
bool mount_cfg_is_set(const struct mount_cfg *cfg, const char *name);
/* Apply "ro,allow_other,cache_mode=...,..." (mount -o syntax). */
bool mount_cfg_apply_opts(struct mount_cfg *cfg, const char *opts, GError **err);
/* Read a GKeyFile (see conf/fusemirror.conf); legs and mountpoint only if
 * none yet. */
bool mount_cfg_load_file(struct mount_cfg *cfg, const char *path, GError **err);
/* The same from @len bytes in memory; @path names them in messages. */
bool mount_cfg_load_data(struct mount_cfg *cfg, const char *data, size_t len,
			 const char *path, GError **err);
/* Checks across keys, once the file and -o are applied (sync_speed_min <=
 * sync_speed_max). */
bool mount_cfg_check(const struct mount_cfg *cfg, GError **err);
/* The option lines of `mount --help`, one key each with its default
 * (g_free). */
char *mount_cfg_help(void);

int cmd_create(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_fail(int argc, char **argv);
int cmd_remove(int argc, char **argv);
int cmd_add(int argc, char **argv);
int cmd_write_mostly(int argc, char **argv);
int cmd_replace(int argc, char **argv);
int cmd_scrub(int argc, char **argv);
int cmd_inject(int argc, char **argv);
int cmd_examine(int argc, char **argv);
int cmd_monitor(int argc, char **argv);

/*
 * Reading the daemon's reply bodies (reply.c; fuzzed by fuzz_cli_reply).
 */
/* The value of @key in a `sync` reply ("action=resync done=... total=..."),
 * newly allocated, or NULL when absent. */
char *cli_sync_field(const char *line, const char *key);
/* The answer to `pid` ("1234\n", decimal without a leading 0): 0 with
 * *@ret > 0, or -EINVAL. */
int cli_pid_parse(const char *body, pid_t *ret);

/* One line of a daemon's `monitor` stream (a JSON object; see
 * src/daemon/events.c).  The strings belong to @parser: NULL when the
 * member is absent or not a string; the integers are 0 when absent or
 * not integers. */
struct cli_event {
	JsonParser *parser;
	const char *name;               /* "event", never NULL or empty */
	const char *time, *error;
	gint64 value;
	const char *mountpoint, *array_uuid, *array_name;       /* "array" */
	bool has_leg;                   /* a "leg" object is there */
	gint64 leg_slot;
	const char *leg_path, *leg_uuid;
};
/* Decode @line (@len bytes, or -1: NUL-terminated): 0, or -EINVAL with
 * @err (not JSON, not an object, no event name).  cli_event_clear()
 * after 0. */
int cli_event_parse(const char *line, gssize len, struct cli_event *ev, GError **err);
void cli_event_clear(struct cli_event *ev);

/* "in_sync", "faulty", "rebuilding", "removed", "empty" (examine.c). */
const char *cli_leg_state_name(enum fm_leg_state s);
/* The same, but "missing" for a faulty leg that is not present (not given
 * at a degraded start). */
const char *cli_leg_state_word(enum fm_leg_state s, bool missing);

/* JSON members (json.c): a string (NULL: null; not UTF-8: U+FFFD for each
 * invalid byte), an integer, a boolean; and the builder's document as text
 * (g_free). */
void cli_json_str(JsonBuilder *b, const char *member, const char *s);
void cli_json_int(JsonBuilder *b, const char *member, uint64_t v);
void cli_json_bool(JsonBuilder *b, const char *member, bool v);
char *cli_json_text(JsonBuilder *b);

/* The mount points of the fusemirror mounts this process sees (fstype
 * fuse.fusemirror in /proc/self/mountinfo), in its order; NULL with @err
 * when it cannot be read. */
GPtrArray *cli_mounted_arrays(GError **err);

/*
 * Parse the command line of `fusemirror @verb` (options.c): @entries (may be
 * NULL; without a G_OPTION_REMAINING entry — the positional words go to
 * *ret_rest), `--help` showing @params ("MOUNTPOINT LEG", "LEG...") and
 * @summary.  There must be @min_args to @max_args positional words
 * (G_MAXUINT: no limit), none empty.  Returns FM_EXIT_OK with *ret_rest
 * (NULL-terminated, never NULL; g_strfreev), or FM_EXIT_USAGE after
 * printing "fusemirror: VERB: MESSAGE (see fusemirror VERB --help)".
 */
int cli_parse_args(const char *verb, const char *params, const char *summary,
		   const GOptionEntry *entries, unsigned min_args, unsigned max_args,
		   int *argc, char ***argv, char ***ret_rest);

/* Print "fusemirror: MESSAGE" to stderr. */
void cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/*
 * One exchange with the daemon serving @mountpoint (ctl_call()); prints
 * "fusemirror: ..." on failure.  Returns FM_EXIT_OK with the reply body in
 * @out; FM_EXIT_NO_DAEMON when none serves it (without @quiet:
 * FM_EXIT_DEAD_MOUNT, explained, when a dead fusemirror mount is left
 * there); otherwise @fail_code, and
 * *ret_errno (may be NULL) is the daemon's errno (0 when it was not reached;
 * with FM_EXIT_NO_DAEMON, ENOENT or ECONNREFUSED from connect, else 0).
 * With @quiet (for a caller that polls), neither "no daemon" nor the
 * daemon's EAGAIN ("stopping") is printed.
 */
int cli_call_daemon(const char *mountpoint, const char *const *words, int timeout_ms,
		    GString *out, int fail_code, int *ret_errno, bool quiet);

/*----------------------------------------------------------------*/
/* fusemirror mounts and dead ones (mounts.c) */

/* How many fusemirror mounts the kernel lists at the canonical path @canon. */
unsigned cli_fusemirror_mounts_at(const char *canon);

enum cli_mount_state {
	CLI_MOUNT_NONE,         /* no fusemirror mount there */
	CLI_MOUNT_LIVE,         /* mounted, and its daemon answers (or is busy) */
	CLI_MOUNT_DEAD,         /* mounted, but no daemon listens: it was killed */
};
/*
 * The state of @mountpoint (asks the daemon over its socket, up to 10 s);
 * *ret_canon (may be NULL; g_free) is its canonical path, NULL when it
 * cannot be found; *ret_pid (may be NULL) the daemon's pid when LIVE and it
 * answered, else 0.  Never stat()s the mount point.
 */
enum cli_mount_state cli_mount_state(const char *mountpoint, char **ret_canon,
				     pid_t *ret_pid);
/* Lazily unmount every dead fusemirror mount at @canon and remove the
 * killed daemon's socket.  Returns 0 or -errno with @err set. */
int cli_drop_dead_mount(const char *canon, GError **err);
/* Print what a dead mount is and what to run (stderr). */
void cli_explain_dead_mount(const char *canon);

/*----------------------------------------------------------------*/
/* Fault injection options (fault_opt.c): what `fusemirror inject` takes,
 * the words that carry a fault over the control socket, and how status
 * describes one.  Pure functions, any thread. */

/* `fusemirror inject` options as given; NULL / FALSE: absent. */
struct fm_fault_args {
	gboolean read, write, flush, drop_writes, corrupt_reads;
	gboolean heal_on_write;         /* with read and a range: dm-dust style */
	gboolean flip_writes, misdirect_writes; /* silent corruption of stored data */
	const char *offset, *length;    /* image bytes, fm_parse_size() syntax */
	const char *rate;               /* parts per million, 1..1000000 */
	const char *probability;        /* fraction in (0, 1], or a percentage "5%" */
	const char *error;              /* errno number or name ("EIO", "enospc") */
	const char *up, *down;          /* ms, flakey cycle */
	const char *seed;
	const char *delay_writes;       /* ms: writes succeed that much later */
	const char *delay_reads;        /* ms: reads succeed that much later */
};

/* True when @a describes a fault (some option other than none was given). */
bool fm_fault_args_given(const struct fm_fault_args *a);

/*
 * Build the fault @a describes: which I/O misbehaves (reads and writes fail
 * when none of read/write/flush/drop_writes/corrupt_reads is given), the
 * image byte range turned into image sectors (whole 512-byte sectors; no
 * length or length 0: the whole leg), the errno (EIO by default).  Returns
 * false with @err naming the option and the cause for a bad value or a
 * combination that makes no sense; *ret is untouched then.
 */
bool fm_fault_from_args(const struct fm_fault_args *a, struct dmio_fault *ret, GError **err);

/* Positive errno for "EIO", "eio" or "5" (1..4095), or -EINVAL. */
int fm_errno_parse(const char *s);

/* The control-socket words ("flags=reads,writes", "error=5", ...) that carry
 * @f; a newly allocated NULL-terminated vector (g_strfreev). */
char **fm_fault_to_words(const struct dmio_fault *f);
/* Parse @n such words back; false with @err for an unknown key or a bad
 * value (missing keys are 0). */
bool fm_fault_from_words(const char *const *words, unsigned n, struct dmio_fault *ret,
			 GError **err);

/* Append a one-line description ("reads+writes fail with EIO, whole leg"). */
void fm_fault_describe(const struct dmio_fault *f, GString *out);
/* Append @f as a JSON object. */
void fm_fault_json(const struct dmio_fault *f, JsonBuilder *b);


#endif /* FM_CLI_H */
