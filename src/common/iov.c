/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Byte ranges of an iovec array (see include/fusemirror/common.h). */
#include <string.h>

#include "fusemirror/common.h"

/*
 * Walk bytes [@off, @off + @len) of @iov: each element of the range goes
 * into @out (unless NULL); with @fill its memory takes @len bytes of @src
 * in order (zeroes when @src is NULL).  Returns how many elements.
 */
static unsigned iov_walk(const struct iovec *iov, unsigned iovcnt, size_t off, size_t len,
			 struct iovec *out, bool fill, const void *src)
{
	unsigned n = 0;

	for (unsigned i = 0; i < iovcnt && len; i++) {
		size_t l = iov[i].iov_len;
		char *p;

		if (off >= l) {
			off -= l;
			continue;
		}
		l -= off;
		if (l > len)
			l = len;
		p = (char *)iov[i].iov_base + off;
		if (out)
			out[n] = (struct iovec){ p, l };
		if (fill && src) {
			memcpy(p, src, l);
			src = (const char *)src + l;
		} else if (fill) {
			memset(p, 0, l);
		}
		n++;
		len -= l;
		off = 0;
	}
	return n;
}

unsigned fm_iov_slice(const struct iovec *iov, unsigned iovcnt, size_t off, size_t len,
		      struct iovec *out)
{
	return iov_walk(iov, iovcnt, off, len, out, false, NULL);
}

void fm_iov_fill(const struct iovec *iov, unsigned iovcnt, size_t off, const void *src,
		 size_t len)
{
	iov_walk(iov, iovcnt, off, len, NULL, true, src);
}
