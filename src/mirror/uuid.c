/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Random (version 4) UUIDs for arrays and legs, and their text form, from
 * libuuid (util-linux): the same generator and the same lower-case text
 * that blkid, mdadm and mkfs print.
 *
 * uuid_generate_random() reads getrandom(2) (falling back to /dev/urandom);
 * a UUID only has to be unique among arrays, not secret.
 */
#include <uuid/uuid.h>

#include "fusemirror/superblock.h"

G_STATIC_ASSERT(sizeof(uuid_t) == 16);

char *fm_uuid_unparse(const uint8_t uuid[16], char *buf)
{
	uuid_unparse_lower(uuid, buf);
	return buf;
}

void fm_uuid_generate(uint8_t uuid[16])
{
	uuid_generate_random(uuid);
}
