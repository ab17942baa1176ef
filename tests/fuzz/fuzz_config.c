/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the configuration file and the mount options
 * (src/cli/config.c).  The input up to its first NUL byte is a config file
 * (mount_cfg_load_data, GKeyFile syntax); what follows, a -o option string
 * (mount_cfg_apply_opts).  Then the cross-key check.  Invariants: a
 * refusal always comes with a message, and whatever is accepted lies
 * within the table's ranges.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "cli/cli.h"

#include "fuzz.h"

static void check_cfg(const struct mount_cfg *cfg)
{
	FUZZ_ASSERT(cfg->threads >= 1 && cfg->threads <= 256);
	FUZZ_ASSERT(cfg->max_background >= 1 && cfg->max_background <= 65535);
	FUZZ_ASSERT(cfg->spin_us <= 1000);
	FUZZ_ASSERT(cfg->block_size == 0 ||
		    (fm_is_power_of_2(cfg->block_size) && cfg->block_size >= 512 &&
		     cfg->block_size <= (1u << 20)));
	FUZZ_ASSERT(cfg->cache_size == 0 || cfg->cache_size >= (1u << 20));
	FUZZ_ASSERT(cfg->sync_speed_min >= FM_PAGE_SIZE && cfg->sync_speed_max >= FM_PAGE_SIZE);
	FUZZ_ASSERT(cfg->max_read_errors >= 1 && cfg->bitmap_delay_ms >= 1);
	FUZZ_ASSERT(!cfg->name || (cfg->name[0] && !strchr(cfg->name, '/')));
	for (char **l = cfg->legs; l && *l; l++)
		FUZZ_ASSERT(*l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t file_len = nul ? (size_t)(nul - data) : size;
	g_autofree char *opts = nul ? g_strndup((const char *)nul + 1, size - file_len - 1)
				    : NULL;
	g_autoptr(GError) err = NULL;
	struct mount_cfg cfg;

	mount_cfg_init(&cfg);
	check_cfg(&cfg);
	if (!mount_cfg_load_data(&cfg, (const char *)data, file_len, "fuzz.conf", &err)) {
		FUZZ_ASSERT(err && g_str_has_prefix(err->message, "config fuzz.conf: "));
		g_clear_error(&err);
	}
	check_cfg(&cfg);
	if (opts && !mount_cfg_apply_opts(&cfg, opts, &err)) {
		FUZZ_ASSERT(err && err->message[0]);
		g_clear_error(&err);
	}
	check_cfg(&cfg);
	if (!mount_cfg_check(&cfg, &err))
		FUZZ_ASSERT(err && cfg.sync_speed_min > cfg.sync_speed_max);
	mount_cfg_clear(&cfg);
	return 0;
}
