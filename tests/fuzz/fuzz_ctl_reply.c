/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: a control reply as the client receives it
 * (ctl_parse_reply, src/ctl/client.c: the "OK" / "ERR <errno> <message>"
 * status line, then the body).  The first input byte picks whether the
 * request could not be sent completely (the EPIPE case); the rest is the
 * reply.  Invariants: success only for "OK\n", with the body passed through
 * byte for byte; a failure is a -errno in 1..4095 with a message whose code
 * matches.
 */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "ctl/ctl_i.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GString) out = g_string_new("x");
	g_autoptr(GError) err = NULL;
	g_autofree char *reply = NULL;
	bool send_failed;
	int r;

	if (size < 1)
		return 0;
	send_failed = data[0] & 1;
	size--;
	/* Exactly the reply's bytes (not NUL-terminated, as read). */
	reply = g_malloc(size ? size : 1);
	memcpy(reply, data + 1, size);
	r = ctl_parse_reply(reply, size, "/run/fusemirror/fuzz.sock", "status", send_failed, out,
			    &err);
	if (r == 0) {
		FUZZ_ASSERT(!err);
		FUZZ_ASSERT(size >= 3 && memcmp(reply, "OK\n", 3) == 0);
		FUZZ_ASSERT(out->len == 1 + size - 3 && memcmp(out->str + 1, reply + 3, size - 3) == 0);
	} else {
		FUZZ_ASSERT(r < 0 && r >= -4095);
		FUZZ_ASSERT(err && err->code == -r);
		FUZZ_ASSERT(out->len == 1);
	}
	return 0;
}
