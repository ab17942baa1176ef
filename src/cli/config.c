/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Mount options and the configuration file.  The file is read first, the
 * command line overrides it.  Every key is a row of mount_cfg_keys[]: its
 * parser, its default, its help line; mount_cfg_init() applies the
 * defaults by parsing them, `mount --help` prints the table, and test_cli
 * checks that conf/fusemirror.conf and man/fusemirror.conf.5 document every
 * key with the table's default.  An unknown key or a bad value is an error
 * (a typo must not silently fall back to a default).
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fusemirror/common.h"

G_DEFINE_QUARK(fm-cli-error-quark, fm_cli_error)

/*----------------------------------------------------------------*/
/* Value parsers: one per kind of value, shared by the keys of the table. */

static bool parse_uint(const struct mount_cfg_key *k, const char *val, uint64_t *ret,
		       GError **err)
{
	guint64 v;

	if (!g_ascii_string_to_unsigned(val, 10, k->min, k->max, &v, NULL)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "%s=%s: expected a number from %llu to %llu", k->name, val,
			    (unsigned long long)k->min, (unsigned long long)k->max);
		return false;
	}
	*ret = v;
	return true;
}

static bool parse_bool(const char *key, const char *val, bool *ret, GError **err)
{
	if (!val || !strcmp(val, "1") || !g_ascii_strcasecmp(val, "true") ||
	    !g_ascii_strcasecmp(val, "yes") || !g_ascii_strcasecmp(val, "on")) {
		*ret = true;
		return true;
	}
	if (!strcmp(val, "0") || !g_ascii_strcasecmp(val, "false") ||
	    !g_ascii_strcasecmp(val, "no") || !g_ascii_strcasecmp(val, "off")) {
		*ret = false;
		return true;
	}
	g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: expected true or false", key, val);
	return false;
}

/* Store @v in the field at k->offset, k->width bytes wide. */
static void store(struct mount_cfg *cfg, const struct mount_cfg_key *k, uint64_t v)
{
	char *field = (char *)cfg + k->offset;

	switch (k->width) {
	case sizeof(bool): {
		bool b = v != 0;

		memcpy(field, &b, sizeof(b));
		break;
	}
	case sizeof(uint32_t): {
		uint32_t u = (uint32_t)v;

		memcpy(field, &u, sizeof(u));
		break;
	}
	case sizeof(uint64_t):
		memcpy(field, &v, sizeof(v));
		break;
	default:
		g_assert_not_reached();
	}
}

bool mount_cfg_parse_bool(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err)
{
	bool on;

	if (!parse_bool(k->name, val, &on, err))
		return false;
	store(cfg, k, on);
	return true;
}

bool mount_cfg_parse_uint(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err)
{
	uint64_t v;

	if (!parse_uint(k, val, &v, err))
		return false;
	store(cfg, k, v * (k->scale ? k->scale : 1));
	return true;
}

bool mount_cfg_parse_size(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			  const char *val, GError **err)
{
	uint64_t v;

	if (fm_parse_size(val, &v) < 0 || v < k->min || v > k->max ||
	    ((k->flags & MOUNT_CFG_POW2) && !fm_is_power_of_2(v))) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: expected %s", k->name, val,
			    k->expect);
		return false;
	}
	store(cfg, k, v);
	return true;
}

static bool parse_ro(struct mount_cfg *cfg, const struct mount_cfg_key *k, const char *val,
		     GError **err)
{
	bool on;

	if (!parse_bool(k->name, val, &on, err))
		return false;
	cfg->readonly = !strcmp(k->name, "ro") ? on : !on;
	return true;
}

static bool parse_cache_mode(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			     const char *val, GError **err)
{
	if (!strcmp(val, "writeback"))
		cfg->cache_mode = FRONT_CACHE_WRITEBACK;
	else if (!strcmp(val, "writethrough"))
		cfg->cache_mode = FRONT_CACHE_WRITETHROUGH;
	else {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: expected %s", k->name, val,
			    k->expect);
		return false;
	}
	return true;
}

static bool parse_read_policy(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			      const char *val, GError **err)
{
	if (mirror_read_policy_parse(val, &cfg->read_policy) < 0) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: expected %s", k->name, val,
			    k->expect);
		return false;
	}
	return true;
}

static bool parse_transport(struct mount_cfg *cfg, const struct mount_cfg_key *k,
			    const char *val, GError **err)
{
	if (!front_transport_from_name(val, &cfg->transport)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: expected %s", k->name, val,
			    k->expect);
		return false;
	}
	return true;
}

static bool parse_name(struct mount_cfg *cfg, const struct mount_cfg_key *k, const char *val,
		       GError **err)
{
	if (!*val || strchr(val, '/') || !strcmp(val, ".") || !strcmp(val, "..")) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "%s=%s: not a file name", k->name, val);
		return false;
	}
	g_free(cfg->name);
	cfg->name = g_strdup(val);
	return true;
}

/*----------------------------------------------------------------*/
/* The table.  How to add a key: /work/notes/house.md and the comment on
 * struct mount_cfg_key in cli.h. */

#define FIELD(f) .offset = offsetof(struct mount_cfg, f), \
		 .width = sizeof(((struct mount_cfg *)0)->f)

const struct mount_cfg_key mount_cfg_keys[] = {
	{ .name = "ro", .parse = parse_ro, .flags = MOUNT_CFG_FLAG, .def = "false",
	  .help = "read-only (legs opened read-only, no superblock update)" },
	{ .name = "rw", .parse = parse_ro, .flags = MOUNT_CFG_FLAG | MOUNT_CFG_NOFILE,
	  .help = "the opposite of ro" },
	{ .name = "allow_other", .parse = mount_cfg_parse_bool, FIELD(allow_other),
	  .flags = MOUNT_CFG_FLAG, .def = "false",
	  .help = "let users other than root open the image" },
	{ .name = "cache_mode", .metavar = "MODE", .parse = parse_cache_mode,
	  .def = "writeback", .expect = "writeback or writethrough",
	  .help = "writeback (a write returns once cached; fsync makes it durable) "
		  "or writethrough (a write returns once on every leg)" },
	{ .name = "cache_size", .metavar = "SIZE", .parse = mount_cfg_parse_size,
	  FIELD(cache_size), .min = 1u << 20, .max = UINT64_MAX,
	  .def_text = "2% of RAM; 32M when every leg is on tmpfs or ramfs",
	  .expect = "a size of at least 1M (e.g. 256M, 2G)",
	  .help = "cache memory limit (block data and headers), all of it locked in RAM" },
	{ .name = "block_size", .metavar = "SIZE", .parse = mount_cfg_parse_size,
	  FIELD(block_size), .min = 512, .max = 1u << 20, .flags = MOUNT_CFG_POW2,
	  .def_text = "the one chosen at create, 4k",
	  .expect = "a power of two from 512 to 1M",
	  .help = "cache block size, a power of two 512..1M" },
	{ .name = "read_policy", .metavar = "POLICY", .parse = parse_read_policy,
	  .def = "balance", .expect = "balance, round-robin or first",
	  .help = "which leg serves a read: balance, round-robin or first" },
	{ .name = "threads", .metavar = "N", .parse = mount_cfg_parse_uint, FIELD(threads),
	  .min = 1, .max = 256, .def = "8",
	  .help = "threads for work an event loop must not wait for (FUSE worker "
		  "threads with event_loop=0)" },
	{ .name = "event_loop", .parse = mount_cfg_parse_bool, FIELD(event_loop),
	  .flags = MOUNT_CFG_FLAG, .def = "true",
	  .help = "one event loop per CPU (the default): each reads requests and does "
		  "their I/O on its own io_uring (run to completion); event_loop=0 for "
		  "libfuse's worker threads" },
	{ .name = "spin_us", .metavar = "US", .parse = mount_cfg_parse_uint, FIELD(spin_us),
	  .min = 0, .max = 1000, .def = "30",
	  .help = "legs in memory, /dev/fuse: how long a loop that serves one request at a "
		  "time spins for the next before it sleeps (burns CPU; 0: never)" },
	{ .name = "max_background", .metavar = "N", .parse = mount_cfg_parse_uint,
	  FIELD(max_background), .min = 1, .max = 65535, .def = "256",
	  .help = "kernel queue of async requests" },
	{ .name = "writeback_age", .metavar = "SEC", .parse = mount_cfg_parse_uint,
	  FIELD(writeback_age_ms), .min = 0, .max = 86400, .scale = 1000, .def = "30",
	  .help = "write back blocks dirty this long (0: only when needed)" },
	{ .name = "name", .metavar = "NAME", .parse = parse_name, .def_text = "image",
	  .help = "image file name in a directory mount point" },
	{ .name = "max_read_errors", .metavar = "N", .parse = mount_cfg_parse_uint,
	  FIELD(max_read_errors), .min = 1, .max = 1000000, .def = "20",
	  .help = "uncorrected read errors (or corrected ones, above the rate) that fail a leg" },
	{ .name = "read_error_rate", .metavar = "PCT", .parse = mount_cfg_parse_uint,
	  FIELD(max_read_error_ppm), .min = 1, .max = 100, .scale = 10000, .def = "5",
	  .help = "corrected read errors, in % of a leg's reads, that fail it" },
	{ .name = "read_error_decay", .metavar = "SEC", .parse = mount_cfg_parse_uint,
	  FIELD(read_error_decay_ms), .min = 1, .max = 604800, .scale = 1000, .def = "3600",
	  .help = "the read error counts halve this often" },
	/* at least a page a second, so that 0 (the mirror's "default") is
	 * never what a user gets by accident */
	{ .name = "sync_speed_min", .metavar = "SIZE", .parse = mount_cfg_parse_size,
	  FIELD(sync_speed_min), .min = FM_PAGE_SIZE, .max = UINT64_MAX, .def = "1M",
	  .expect = "bytes per second, at least 4k (e.g. 1M, 200M)",
	  .help = "resync/rebuild/scrub bytes per second kept under load" },
	{ .name = "sync_speed_max", .metavar = "SIZE", .parse = mount_cfg_parse_size,
	  FIELD(sync_speed_max), .min = FM_PAGE_SIZE, .max = UINT64_MAX, .def = "200M",
	  .expect = "bytes per second, at least 4k (e.g. 1M, 200M)",
	  .help = "... and when the image is idle" },
	{ .name = "bitmap_delay", .metavar = "MS", .parse = mount_cfg_parse_uint,
	  FIELD(bitmap_delay_ms), .min = 1, .max = 3600000, .def = "5000",
	  .help = "idle time before a write-intent bit is cleared" },
	{ .name = "remote_timeout", .metavar = "MS", .parse = mount_cfg_parse_uint,
	  FIELD(remote_timeout_ms), .min = 0, .max = 3600000, .def = "30000",
	  .help = "a remote leg's server that answers nothing this long while I/O "
		  "waits is failed, then reconnected (0: wait forever)" },
	{ .name = "remote_connect_timeout", .metavar = "MS", .parse = mount_cfg_parse_uint,
	  FIELD(remote_connect_timeout_ms), .min = 100, .max = 3600000, .def = "10000",
	  .help = "a remote leg's server that does not finish the NBD handshake this "
		  "long after accepting the connection is refused" },
	{ .name = "remote_retry_max", .metavar = "MS", .parse = mount_cfg_parse_uint,
	  FIELD(remote_retry_max_ms), .min = 100, .max = 3600000, .def = "30000",
	  .help = "longest wait between reconnection attempts of a failed remote leg "
		  "(1 s after the failure, then doubling)" },
	{ .name = "degraded", .parse = mount_cfg_parse_bool, FIELD(degraded),
	  .flags = MOUNT_CFG_FLAG, .def = "false",
	  .help = "start even when in-sync legs are missing, if one in-sync leg is "
		  "given (md's --run); the missing ones are recorded" },
	{ .name = "transport", .metavar = "T", .parse = parse_transport, .def = "auto",
	  .expect = "auto, uring or dev",
	  .help = "FUSE transport: auto (io_uring from 8 CPUs when the kernel allows it, "
		  "else /dev/fuse), uring (FUSE over io_uring: needs the fuse module's "
		  "enable_uring) or dev (/dev/fuse)" },
	{ NULL },
};

#undef FIELD

static_assert(FM_ARRAY_SIZE(mount_cfg_keys) - 1 <= 8 * sizeof(((struct mount_cfg *)0)->set),
	      "struct mount_cfg's set mask is too narrow for the key table");

const struct mount_cfg_key *mount_cfg_key_find(const char *name)
{
	for (const struct mount_cfg_key *k = mount_cfg_keys; k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

bool mount_cfg_is_set(const struct mount_cfg *cfg, const char *name)
{
	const struct mount_cfg_key *k = mount_cfg_key_find(name);

	g_assert(k);
	return cfg->set & (1ull << (k - mount_cfg_keys));
}

void mount_cfg_init(struct mount_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (const struct mount_cfg_key *k = mount_cfg_keys; k->name; k++) {
		g_autoptr(GError) err = NULL;

		/* A default that does not parse is a bug of the table, which
		 * test_cli's config_table test catches. */
		if (k->def && !k->parse(cfg, k, k->def, &err))
			g_error("mount option %s: default %s: %s", k->name, k->def, err->message);
	}
}

void mount_cfg_clear(struct mount_cfg *cfg)
{
	g_strfreev(cfg->legs);
	g_free(cfg->prefer);
	g_free(cfg->mountpoint);
	g_free(cfg->name);
	memset(cfg, 0, sizeof(*cfg));
}

char *mount_cfg_help(void)
{
	GString *s = g_string_new(NULL);

	for (const struct mount_cfg_key *k = mount_cfg_keys; k->name; k++) {
		g_autofree char *left = k->metavar ? g_strdup_printf("%s=%s", k->name, k->metavar)
						   : g_strdup(k->name);
		g_autofree char *text = NULL;
		const char *d = k->def_text ? k->def_text : k->def;

		if (d && !(k->flags & MOUNT_CFG_FLAG))
			text = g_strdup_printf("%s (default: %s)", k->help, d);
		else
			text = g_strdup(k->help);
		/* Wrap the description at 78 columns, indented under itself. */
		g_string_append_printf(s, "  %-20s", left);
		if (strlen(left) > 20)
			g_string_append_printf(s, "\n  %-20s", "");
		for (const char *p = text; *p;) {
			size_t room = 78 - 23, n = strlen(p);

			if (n > room) {
				n = room;
				while (n > 0 && p[n] != ' ')
					n--;
				if (n == 0)
					n = room;
			}
			g_string_append_printf(s, " %.*s\n", (int)n, p);
			p += n;
			while (*p == ' ')
				p++;
			if (*p)
				g_string_append_printf(s, "  %-20s", "");
		}
	}
	return g_string_free(s, FALSE);
}

/* One key=value (val NULL for a bare flag). */
static bool apply_one(struct mount_cfg *cfg, const char *key, const char *val, GError **err)
{
	const struct mount_cfg_key *k = mount_cfg_key_find(key);

	if (!k) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "unknown mount option '%s'", key);
		return false;
	}
	if (!val && !(k->flags & MOUNT_CFG_FLAG)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "option %s needs a value (%s=...)", key, key);
		return false;
	}
	if (!k->parse(cfg, k, val, err))
		return false;
	cfg->set |= 1ull << (k - mount_cfg_keys);
	return true;
}

bool mount_cfg_apply_opts(struct mount_cfg *cfg, const char *opts, GError **err)
{
	g_auto(GStrv) parts = g_strsplit(opts, ",", -1);

	for (char **p = parts; *p; p++) {
		char *eq;

		if (!**p)
			continue;
		eq = strchr(*p, '=');
		if (eq)
			*eq++ = '\0';
		if (!apply_one(cfg, *p, eq, err))
			return false;
	}
	return true;
}

bool mount_cfg_load_data(struct mount_cfg *cfg, const char *data, size_t len,
			 const char *path, GError **err)
{
	g_autoptr(GKeyFile) kf = g_key_file_new();
	g_autoptr(GError) e = NULL;
	g_auto(GStrv) groups = NULL;

	if (!g_key_file_load_from_data(kf, data, len, G_KEY_FILE_NONE, &e)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "config %s: %s", path, e->message);
		return false;
	}
	groups = g_key_file_get_groups(kf, NULL);
	for (char **g = groups; *g; g++) {
		g_auto(GStrv) keys = g_key_file_get_keys(kf, *g, NULL, NULL);

		if (strcmp(*g, "array") && strcmp(*g, "mount")) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "config %s: unknown group [%s] (expected [array] or [mount])",
				    path, *g);
			return false;
		}
		for (char **k = keys; k && *k; k++) {
			const struct mount_cfg_key *mk = mount_cfg_key_find(*k);
			bool known;

			if (!strcmp(*g, "array"))
				known = !strcmp(*k, "legs") || !strcmp(*k, "mountpoint");
			else
				known = mk && !(mk->flags & MOUNT_CFG_NOFILE);
			if (!known) {
				g_set_error(err, FM_CLI_ERROR, EINVAL,
					    "config %s: unknown key '%s' in [%s]", path, *k, *g);
				return false;
			}
		}
	}
	if (g_key_file_has_key(kf, "array", "legs", NULL)) {
		g_auto(GStrv) legs = g_key_file_get_string_list(kf, "array", "legs", NULL, &e);

		if (!legs || !legs[0]) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "config %s: [array] legs is empty", path);
			return false;
		}
		if (!cfg->legs)
			cfg->legs = g_steal_pointer(&legs);
	}
	if (g_key_file_has_key(kf, "array", "mountpoint", NULL)) {
		g_autofree char *mp = g_key_file_get_string(kf, "array", "mountpoint", NULL);

		if (!mp || !*g_strstrip(mp)) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "config %s: [array] mountpoint is empty", path);
			return false;
		}
		if (!cfg->mountpoint)
			cfg->mountpoint = g_steal_pointer(&mp);
	}
	for (const struct mount_cfg_key *mk = mount_cfg_keys; mk->name; mk++) {
		g_autofree char *val = NULL;
		g_autoptr(GError) ve = NULL;

		if (mk->flags & MOUNT_CFG_NOFILE)
			continue;
		val = g_key_file_get_string(kf, "mount", mk->name, NULL);
		if (!val)
			continue;
		g_strstrip(val);
		if (!apply_one(cfg, mk->name, val, &ve)) {
			g_set_error(err, FM_CLI_ERROR, EINVAL, "config %s: [mount] %s", path,
				    ve->message);
			return false;
		}
	}
	return true;
}

bool mount_cfg_load_file(struct mount_cfg *cfg, const char *path, GError **err)
{
	g_autofree char *data = NULL;
	g_autoptr(GError) e = NULL;
	gsize len;

	if (!g_file_get_contents(path, &data, &len, &e)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "config %s: %s", path, e->message);
		return false;
	}
	return mount_cfg_load_data(cfg, data, len, path, err);
}

bool mount_cfg_check(const struct mount_cfg *cfg, GError **err)
{
	uint64_t lo = cfg->sync_speed_min, hi = cfg->sync_speed_max;
	char s1[32], s2[32];

	if (lo > hi) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "sync_speed_min (%s/s%s) is above sync_speed_max (%s/s%s)",
			    fm_format_size(lo, s1, sizeof(s1)),
			    mount_cfg_is_set(cfg, "sync_speed_min") ? "" : ", the default",
			    fm_format_size(hi, s2, sizeof(s2)),
			    mount_cfg_is_set(cfg, "sync_speed_max") ? "" : ", the default");
		return false;
	}
	return true;
}
