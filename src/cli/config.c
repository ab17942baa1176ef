/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Mount options and the configuration file.  The file is read first, the
 * command line overrides it.  Every key is documented in
 * conf/fusemirror.conf and man/fusemirror.conf.5; an unknown key or a bad
 * value is an error (a typo must not silently fall back to a default).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fusemirror/common.h"

G_DEFINE_QUARK(fm-cli-error-quark, fm_cli_error)

void mount_cfg_init(struct mount_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cache_mode = FRONT_CACHE_WRITEBACK;
	cfg->read_policy = MIRROR_READ_BALANCE;
	cfg->writeback_age_ms = G_MAXUINT64;
}

void mount_cfg_clear(struct mount_cfg *cfg)
{
	g_strfreev(cfg->legs);
	g_free(cfg->mountpoint);
	g_free(cfg->name);
	memset(cfg, 0, sizeof(*cfg));
}

static bool parse_uint(const char *key, const char *val, uint64_t min, uint64_t max,
		       uint64_t *ret, GError **err)
{
	guint64 v;

	if (!g_ascii_string_to_unsigned(val, 10, min, max, &v, NULL)) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "%s=%s: expected a number from %llu to %llu", key, val,
			    (unsigned long long)min, (unsigned long long)max);
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

/* The options that take a value (every other one is a flag). */
static const char *const valued_keys[] = {
	"cache_mode", "cache_size", "block_size", "read_policy", "threads",
	"max_background", "writeback_age", "name", "max_read_errors", "sync_speed_min",
	"sync_speed_max", "bitmap_delay", NULL,
};

/* One key=value (val NULL for a bare flag). */
static bool apply_one(struct mount_cfg *cfg, const char *key, const char *val, GError **err)
{
	uint64_t v;

	if (!strcmp(key, "ro") || !strcmp(key, "rw")) {
		bool on = true;

		if (!parse_bool(key, val, &on, err))
			return false;
		cfg->readonly = !strcmp(key, "ro") ? on : !on;
		return true;
	}
	if (!strcmp(key, "allow_other"))
		return parse_bool(key, val, &cfg->allow_other, err);
	if (!val && !g_strv_contains(valued_keys, key))
		goto unknown;   /* "-o nosuchopt" is unknown, not short of a value */
	if (!val) {
		g_set_error(err, FM_CLI_ERROR, EINVAL, "option %s needs a value (%s=...)", key, key);
		return false;
	}
	if (!strcmp(key, "cache_mode")) {
		if (!strcmp(val, "writeback"))
			cfg->cache_mode = FRONT_CACHE_WRITEBACK;
		else if (!strcmp(val, "writethrough"))
			cfg->cache_mode = FRONT_CACHE_WRITETHROUGH;
		else {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "cache_mode=%s: expected writeback or writethrough", val);
			return false;
		}
		return true;
	}
	if (!strcmp(key, "cache_size")) {
		if (fm_parse_size(val, &v) < 0 || v < (1u << 20)) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "cache_size=%s: expected a size of at least 1M (e.g. 256M, 2G)",
				    val);
			return false;
		}
		cfg->cache_size = v;
		return true;
	}
	if (!strcmp(key, "block_size")) {
		if (fm_parse_size(val, &v) < 0 || !fm_is_power_of_2(v) || v < 512 ||
		    v > (1u << 20)) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "block_size=%s: expected a power of two from 512 to 1M", val);
			return false;
		}
		cfg->block_size = (unsigned)v;
		return true;
	}
	if (!strcmp(key, "read_policy")) {
		if (mirror_read_policy_parse(val, &cfg->read_policy) < 0) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "read_policy=%s: expected balance, round-robin or first", val);
			return false;
		}
		return true;
	}
	if (!strcmp(key, "threads")) {
		if (!parse_uint(key, val, 1, 256, &v, err))
			return false;
		cfg->threads = (unsigned)v;
		return true;
	}
	if (!strcmp(key, "max_background")) {
		if (!parse_uint(key, val, 1, 65535, &v, err))
			return false;
		cfg->max_background = (unsigned)v;
		return true;
	}
	if (!strcmp(key, "writeback_age")) {
		/* seconds; 0 = only under memory pressure and on flush */
		if (!parse_uint(key, val, 0, 86400, &v, err))
			return false;
		cfg->writeback_age_ms = v * 1000;
		return true;
	}
	if (!strcmp(key, "max_read_errors")) {
		if (!parse_uint(key, val, 1, 1000000, &v, err))
			return false;
		cfg->max_read_errors = (unsigned)v;
		return true;
	}
	if (!strcmp(key, "sync_speed_min") || !strcmp(key, "sync_speed_max")) {
		/* bytes per second; at least a page a second, so that 0 (the
		 * mirror's "default") is never what a user gets by accident */
		if (fm_parse_size(val, &v) < 0 || v < FM_PAGE_SIZE) {
			g_set_error(err, FM_CLI_ERROR, EINVAL,
				    "%s=%s: expected bytes per second, at least 4k (e.g. 1M, "
				    "200M)", key, val);
			return false;
		}
		if (!strcmp(key, "sync_speed_min"))
			cfg->sync_speed_min = v;
		else
			cfg->sync_speed_max = v;
		return true;
	}
	if (!strcmp(key, "bitmap_delay")) {
		/* milliseconds */
		if (!parse_uint(key, val, 1, 3600000, &v, err))
			return false;
		cfg->bitmap_delay_ms = (unsigned)v;
		return true;
	}
	if (!strcmp(key, "name")) {
		if (!*val || strchr(val, '/') || !strcmp(val, ".") || !strcmp(val, "..")) {
			g_set_error(err, FM_CLI_ERROR, EINVAL, "name=%s: not a file name", val);
			return false;
		}
		g_free(cfg->name);
		cfg->name = g_strdup(val);
		return true;
	}
unknown:
	g_set_error(err, FM_CLI_ERROR, EINVAL, "unknown mount option '%s'", key);
	return false;
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

bool mount_cfg_load_file(struct mount_cfg *cfg, const char *path, GError **err)
{
	static const char *const mount_keys[] = {
		"ro", "allow_other", "cache_mode", "cache_size", "block_size",
		"read_policy", "threads", "max_background", "writeback_age", "name",
		"max_read_errors", "sync_speed_min", "sync_speed_max", "bitmap_delay", NULL,
	};
	g_autoptr(GKeyFile) kf = g_key_file_new();
	g_autoptr(GError) e = NULL;
	g_auto(GStrv) groups = NULL;

	if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &e)) {
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
			bool known = false;

			if (!strcmp(*g, "array")) {
				known = !strcmp(*k, "legs");
			} else {
				for (const char *const *mk = mount_keys; *mk && !known; mk++)
					known = !strcmp(*k, *mk);
			}
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
	for (const char *const *mk = mount_keys; *mk; mk++) {
		g_autofree char *val = g_key_file_get_string(kf, "mount", *mk, NULL);
		g_autoptr(GError) ve = NULL;

		if (!val)
			continue;
		g_strstrip(val);
		if (!apply_one(cfg, *mk, val, &ve)) {
			g_set_error(err, FM_CLI_ERROR, EINVAL, "config %s: [mount] %s", path,
				    ve->message);
			return false;
		}
	}
	return true;
}

bool mount_cfg_check(const struct mount_cfg *cfg, GError **err)
{
	uint64_t lo = cfg->sync_speed_min ? cfg->sync_speed_min : FM_DEFAULT_SYNC_SPEED_MIN;
	uint64_t hi = cfg->sync_speed_max ? cfg->sync_speed_max : FM_DEFAULT_SYNC_SPEED_MAX;
	char s1[32], s2[32];

	if (lo > hi) {
		g_set_error(err, FM_CLI_ERROR, EINVAL,
			    "sync_speed_min (%s/s%s) is above sync_speed_max (%s/s%s)",
			    fm_format_size(lo, s1, sizeof(s1)),
			    cfg->sync_speed_min ? "" : ", the default",
			    fm_format_size(hi, s2, sizeof(s2)),
			    cfg->sync_speed_max ? "" : ", the default");
		return false;
	}
	return true;
}

void cli_json_str(GString *out, const char *s)
{
	g_string_append_c(out, '"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			g_string_append_printf(out, "\\%c", ch);
		else if (ch < 0x20)
			g_string_append_printf(out, "\\u%04x", ch);
		else
			g_string_append_c(out, (char)ch);
	}
	g_string_append_c(out, '"');
}
