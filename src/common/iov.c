/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Byte ranges of an iovec array (see include/fusemirror/common.h). */
#include <string.h>

#include "fusemirror/common.h"

enum iov_copy { IOV_NONE, IOV_FILL, IOV_GATHER };

/*
 * Walk bytes [@off, @off + @len) of @iov: each element of the range goes
 * into @out (unless NULL).  IOV_FILL: its memory takes @len bytes of @buf
 * in order (zeroes when @buf is NULL); IOV_GATHER: @buf takes its memory
 * in order.  Returns how many elements.
 */
static unsigned iov_walk(const struct iovec *iov, unsigned iovcnt, size_t off, size_t len,
			 struct iovec *out, enum iov_copy copy, void *buf)
{
	char *q = buf;
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
		if (copy == IOV_FILL && q)
			memcpy(p, q, l);
		else if (copy == IOV_FILL)
			memset(p, 0, l);
		else if (copy == IOV_GATHER)
			memcpy(q, p, l);
		if (q)
			q += l;
		n++;
		len -= l;
		off = 0;
	}
	return n;
}

unsigned fm_iov_slice(const struct iovec *iov, unsigned iovcnt, size_t off, size_t len,
		      struct iovec *out)
{
	return iov_walk(iov, iovcnt, off, len, out, IOV_NONE, NULL);
}

void fm_iov_fill(const struct iovec *iov, unsigned iovcnt, size_t off, const void *src,
		 size_t len)
{
	/* (Only read through: IOV_FILL copies from it.) */
	iov_walk(iov, iovcnt, off, len, NULL, IOV_FILL, (void *)src);
}

void fm_iov_gather(const struct iovec *iov, unsigned iovcnt, size_t off, void *dst, size_t len)
{
	iov_walk(iov, iovcnt, off, len, NULL, IOV_GATHER, dst);
}
