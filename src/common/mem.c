/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Memory mapped in transparent huge pages where the kernel gives them. */
#include <sys/mman.h>

#include "fusemirror/common.h"

void *fm_map_aligned(size_t len, int flags)
{
	size_t map = len + FM_HUGE_PAGE_SIZE;
	char *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)FM_ALIGN_UP((uintptr_t)p, (uintptr_t)FM_HUGE_PAGE_SIZE);
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + map)
		munmap(a + len, (size_t)(p + map - (a + len)));
	return a;
}

void *fm_map_huge(size_t len)
{
	size_t size = FM_ALIGN_UP(len, (size_t)FM_HUGE_PAGE_SIZE);
	char *a = fm_map_aligned(size, 0);

#ifdef MADV_HUGEPAGE
	if (a)
		(void)madvise(a, size, MADV_HUGEPAGE);
#endif
	return a;
}

void fm_unmap_huge(void *p, size_t len)
{
	if (p)
		munmap(p, FM_ALIGN_UP(len, (size_t)FM_HUGE_PAGE_SIZE));
}
