/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Human-readable sizes for the command line, the config file and status:
 * the one parser of sizes (binary suffixes), and glib's formatting. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include <glib.h>

#include "fusemirror/common.h"

int fm_parse_size(const char *s, uint64_t *ret_bytes)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0': break;
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	case 'T': shift = 40; end++; break;
	case 'P': shift = 50; end++; break;
	case 'B': break;
	default: return -EINVAL;
	}
	if (*end && strcasecmp(end, "B") && strcasecmp(end, "iB"))
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret_bytes = (uint64_t)v << shift;
	return 0;
}

char *fm_format_size(uint64_t bytes, char *buf, size_t len)
{
	g_autofree char *s = NULL;

	/* glib says "512 bytes"; status and messages keep the short unit. */
	if (bytes < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
		return buf;
	}
	s = g_format_size_full(bytes, G_FORMAT_SIZE_IEC_UNITS);
	/* glib separates number and unit with a no-break space (U+00A0);
	 * terminals, logs and scripts that parse status want a plain one. */
	{
		g_autoptr(GString) plain = g_string_new(s);

		g_string_replace(plain, "\u00a0", " ", 0);
		g_strlcpy(buf, plain->str, len);
	}
	return buf;
}
