/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared by the sub-commands of the fusemirror binary (main.c, mount.c, config.c). */
#ifndef FM_CLI_H
#define FM_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

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
};

#define FM_CLI_ERROR (fm_cli_error_quark())
GQuark fm_cli_error_quark(void);

/* Everything `mount` needs, from the config file then the command line. */
struct mount_cfg {
	char **legs;                    /* NULL-terminated */
	char *mountpoint;
	char *name;                     /* image file name in a directory */
	bool foreground;
	bool readonly;
	bool allow_other;
	enum front_cache_mode cache_mode;
	uint64_t cache_size;            /* 0: bufio's default (2% of RAM) */
	unsigned block_size;            /* 0: the superblock's suggestion */
	enum mirror_read_policy read_policy;
	unsigned threads;
	unsigned max_background;
	uint64_t writeback_age_ms;      /* 0 < : set; G_MAXUINT64: default */
};

void mount_cfg_init(struct mount_cfg *cfg);
void mount_cfg_clear(struct mount_cfg *cfg);
/* Apply "ro,allow_other,cache_mode=...,..." (mount -o syntax). */
bool mount_cfg_apply_opts(struct mount_cfg *cfg, const char *opts, GError **err);
/* Read a GKeyFile (see conf/fusemirror.conf); legs only if none yet. */
bool mount_cfg_load_file(struct mount_cfg *cfg, const char *path, GError **err);

int cmd_create(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_umount(int argc, char **argv);

/* Print "fusemirror: MESSAGE" to stderr. */
void cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);


#endif /* FM_CLI_H */
