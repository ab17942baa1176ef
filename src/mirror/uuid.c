/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Random (version 4) UUIDs for arrays and legs, and their text form.
 *
 * The bytes come from getrandom(2) without GRND_NONBLOCK: early in boot it
 * waits for the kernel's pool to be seeded, which is what an identifier that
 * must never collide with another array's needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include <glib.h>

#include "fusemirror/superblock.h"

char *fm_uuid_unparse(const uint8_t uuid[16], char *buf)
{
	static const char hex[] = "0123456789abcdef";
	char *p = buf;

	for (unsigned i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid[i] >> 4];
		*p++ = hex[uuid[i] & 0xf];
	}
	*p = '\0';
	return buf;
}

void fm_uuid_generate(uint8_t uuid[16])
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(uuid + got, 16 - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* Only ENOSYS (kernel < 3.17) is possible here; this
			 * project needs io_uring, so a far newer kernel. */
			g_error("fm_uuid_generate: getrandom: %s", g_strerror(errno));
		}
		got += (size_t)n;
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* version 4: random */
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* variant: RFC 4122 */
}
