/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Backing devices: a regular file or a block device, opened O_DIRECT when the
 * kernel lets us and the alignment it asks for is one we can bounce to
 * (at most a page), buffered otherwise.  The probe results never change
 * after open, except the size (dmio_dev_refresh_size).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "dmio_i.h"

static atomic_uint dev_seq;

static int set_direct(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? (fl | O_DIRECT) : (fl & ~O_DIRECT);
	if (fcntl(fd, F_SETFL, fl) < 0)
		return -errno;
	return 0;
}

static int probe_size(struct dmio_dev *dev)
{
	struct stat st;

	if (fstat(dev->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(dev->fd, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		dev->size = bytes;
	} else if (S_ISREG(st.st_mode)) {
		dev->size = (uint64_t)st.st_size;
	} else {
		return -ENOTBLK;
	}
	return 0;
}

/*
 * Decide O_DIRECT and its alignment.  statx(STATX_DIOALIGN) is the kernel's
 * own answer; without it we assume a page for files (always enough) and the
 * logical block size for block devices.  tmpfs gains nothing from O_DIRECT
 * and does not report an alignment, so it stays buffered.
 */
static int probe(struct dmio_dev *dev)
{
	struct statx sx = { 0 };
	struct stat st;
	bool want_direct;
	int fl, r;

	if (fstat(dev->fd, &st) < 0)
		return -errno;
	dev->blockdev = S_ISBLK(st.st_mode);
	r = probe_size(dev);
	if (r < 0)
		return r;

	fl = fcntl(dev->fd, F_GETFL);
	if (fl < 0)
		return -errno;
	want_direct = fl & O_DIRECT;
	dev->rdonly = (fl & O_ACCMODE) == O_RDONLY;
	dev->lbs = FM_SECTOR_SIZE;
	if (!dev->blockdev) {
		struct statfs sfs;

		dev->in_memory = fstatfs(dev->fd, &sfs) == 0 &&
				 (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
	}

	if (dev->blockdev) {
		int ssz = 0;

		if (ioctl(dev->fd, BLKSSZGET, &ssz) < 0)
			return -errno;
		dev->lbs = (unsigned)ssz;
		dev->mem_align = FM_SECTOR_SIZE;
		dev->off_align = dev->lbs;
	} else {
		dev->mem_align = FM_PAGE_SIZE;
		dev->off_align = FM_PAGE_SIZE;
	}
	if (statx(dev->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN)) {
		if (sx.stx_dio_offset_align == 0) {
			want_direct = false; /* file system cannot do it */
		} else {
			dev->mem_align = sx.stx_dio_mem_align;
			dev->off_align = sx.stx_dio_offset_align;
		}
	} else if (dev->in_memory) {
		want_direct = false;
	}
	if (dev->off_align < FM_SECTOR_SIZE)
		dev->off_align = FM_SECTOR_SIZE;
	if (dev->mem_align == 0)
		dev->mem_align = 1;
	/* Bounce pages are 4 KiB: larger alignment cannot be honoured. */
	if (dev->off_align > FM_PAGE_SIZE || dev->mem_align > FM_PAGE_SIZE ||
	    !fm_is_power_of_2(dev->off_align) || !fm_is_power_of_2(dev->mem_align))
		want_direct = false;
	/* A file whose size is not aligned could not be written at its tail. */
	if (!dev->blockdev && !FM_IS_ALIGNED(dev->size, (uint64_t)dev->off_align))
		want_direct = false;

	if (!want_direct && (fl & O_DIRECT)) {
		r = set_direct(dev->fd, false);
		if (r < 0)
			return r;
	}
	dev->direct = want_direct;
	if (!dev->direct) {
		dev->mem_align = 1;
		dev->off_align = FM_SECTOR_SIZE;
	}
	return 0;
}

int dmio_dev_open_fd(int fd, const char *name, struct dmio_dev **ret_dev)
{
	struct dmio_dev *dev;
	int r;

	if (fd < 0)
		return -EBADF;
	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		close(fd);
		return -ENOMEM;
	}
	dev->fd = fd;
	pthread_mutex_init(&dev->rmw_lock, NULL);
	pthread_mutex_init(&dev->fault_lock, NULL);
	dev->name = strdup(name ? name : "(fd)");
	dev->seq = atomic_fetch_add(&dev_seq, 1);
	if (!dev->name) {
		dmio_dev_close(dev);
		return -ENOMEM;
	}
	r = probe(dev);
	if (r < 0) {
		fm_debug("dmio: %s: probe failed: %s", dev->name, strerror(-r));
		dmio_dev_close(dev);
		return r;
	}
	dmio_map_open(dev);
	fm_debug("dmio: %s: %llu bytes, lbs %u, %s (mem %u, off %u)%s", dev->name,
		 (unsigned long long)dev->size, dev->lbs,
		 dev->direct ? "O_DIRECT" : "buffered", dev->mem_align, dev->off_align,
		 dev->map ? ", mapped" : "");
	*ret_dev = dev;
	return 0;
}

/* A leg on another machine (nbd.c); CREATE and EXCL mean nothing there. */
static int open_remote(const char *uri, unsigned flags, unsigned connect_timeout_ms,
		       struct dmio_dev **ret_dev)
{
	struct dmio_dev *dev = calloc(1, sizeof(*dev));
	int r;

	if (!dev)
		return -ENOMEM;
	dev->fd = -1;
	pthread_mutex_init(&dev->rmw_lock, NULL);
	pthread_mutex_init(&dev->fault_lock, NULL);
	dev->seq = atomic_fetch_add(&dev_seq, 1);
	dev->name = strdup(uri);
	if (!dev->name) {
		dmio_dev_close(dev);
		return -ENOMEM;
	}
	r = dmio_nbd_open(dev, uri, flags, connect_timeout_ms);
	if (r < 0) {
		dmio_dev_close(dev);
		return r;
	}
	*ret_dev = dev;
	return 0;
}

int dmio_dev_open(const char *path, unsigned flags, struct dmio_dev **ret_dev)
{
	return dmio_dev_open_timeout(path, flags, 0, ret_dev);
}

int dmio_dev_open_timeout(const char *path, unsigned flags, unsigned connect_timeout_ms,
			  struct dmio_dev **ret_dev)
{
	int oflags = O_CLOEXEC | ((flags & DMIO_DEV_RDONLY) ? O_RDONLY : O_RDWR);
	struct stat st;
	int fd;

	if (!path || !*path)
		return -EINVAL;
	if (flags & ~(DMIO_DEV_RDONLY | DMIO_DEV_NO_DIRECT | DMIO_DEV_CREATE | DMIO_DEV_EXCL))
		return -EINVAL;
	if (dmio_path_is_remote(path))
		return open_remote(path, flags, connect_timeout_ms, ret_dev);
	if (flags & DMIO_DEV_CREATE)
		oflags |= O_CREAT;
	/* O_EXCL without O_CREAT claims a block device exclusively; on a
	 * regular file it would mean nothing, so only pass it for devices. */
	if ((flags & DMIO_DEV_EXCL) && stat(path, &st) == 0 && S_ISBLK(st.st_mode))
		oflags |= O_EXCL;
	fd = -1;
	if (!(flags & DMIO_DEV_NO_DIRECT)) {
		fd = open(path, oflags | O_DIRECT, 0600);
		if (fd < 0 && errno != EINVAL)
			return -errno;
	}
	if (fd < 0) {
		fd = open(path, oflags, 0600);
		if (fd < 0)
			return -errno;
	}
	return dmio_dev_open_fd(fd, path, ret_dev);
}

void dmio_dev_close(struct dmio_dev *dev)
{
	if (!dev)
		return;
	dmio_nbd_close(dev);
	dmio_map_close(dev);
	if (dev->fd >= 0)
		close(dev->fd);
	pthread_mutex_destroy(&dev->rmw_lock);
	dmio_fault_states_free(dev);
	pthread_mutex_destroy(&dev->fault_lock);
	free(dev->name);
	free(dev);
}

int dmio_dev_refresh_size(struct dmio_dev *dev)
{
	if (dev->nbd)
		return 0; /* an export's size is fixed while connected */
	return probe_size(dev);
}

const char *dmio_dev_name(const struct dmio_dev *dev) { return dev->name; }
int dmio_dev_fd(const struct dmio_dev *dev) { return dev->fd; }
uint64_t dmio_dev_size(const struct dmio_dev *dev) { return dev->size; }
uint64_t dmio_dev_sectors(const struct dmio_dev *dev) { return dev->size >> FM_SECTOR_SHIFT; }
unsigned dmio_dev_logical_block_size(const struct dmio_dev *dev) { return dev->lbs; }
bool dmio_dev_is_direct(const struct dmio_dev *dev) { return dev->direct; }
bool dmio_dev_in_memory(const struct dmio_dev *dev) { return dev->in_memory; }
bool dmio_dev_is_blockdev(const struct dmio_dev *dev) { return dev->blockdev; }
bool dmio_dev_is_remote(const struct dmio_dev *dev) { return dev->nbd != NULL; }

int dmio_dev_splice_read(struct dmio_dev *dev, uint64_t offset, size_t len, int pipe_fd)
{
	loff_t off = (loff_t)offset;
	size_t done = 0;

	if (dev->nbd || dev->fd < 0 || dev->direct ||
	    atomic_load_explicit(&dev->fault, memory_order_acquire))
		return -EOPNOTSUPP;
	if (offset > dev->size || len > dev->size - offset)
		return -EINVAL;
	while (done < len) {
		ssize_t n = splice(dev->fd, &off, pipe_fd, NULL, len - done, SPLICE_F_NONBLOCK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return done ? -ENOBUFS : -EAGAIN;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}
