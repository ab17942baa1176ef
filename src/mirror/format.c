/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Formatting a new array.  Everything that can refuse a leg is checked for
 * every leg before the first byte is written to any of them; then the data
 * areas are emptied (so the legs start equal without a copy), the bitmaps
 * zeroed, and the superblocks written last, each with FUA.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mirror_i.h"

struct fleg {
	const char *path;
	bool exists;
	bool created;           /* this call created the file */
	bool blockdev;
	struct stat st;
	uint64_t size;          /* bytes available (existing legs) */
	unsigned connect_timeout_ms;    /* a remote leg's handshake deadline
					   (0: dmio's); every connection made
					   for it uses it */
	struct dmio_dev *dev;
};

static int check_new_path(const char *path, GError **err)
{
	g_autofree char *copy = g_strdup(path);
	const char *dir = dirname(copy);
	struct stat st;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		g_set_error(err, FM_MIRROR_ERROR, ENOENT,
			    "leg %s: does not exist, and its directory %s does not either",
			    path, dir);
		return -ENOENT;
	}
	return 0;
}

/* A path to create, with its directory resolved (symlinks, ".", ".."), so
 * that two spellings of one new file compare equal; NULL if unresolvable. */
static char *canonical_new_path(const char *path)
{
	g_autofree char *dir = g_path_get_dirname(path);
	g_autofree char *base = g_path_get_basename(path);
	char *real = realpath(dir, NULL);
	char *ret = real ? g_build_filename(real, base, NULL) : NULL;

	free(real);
	return ret;
}

/*
 * A remote leg (NBD URI) exists when its server answers.  libblkid cannot
 * probe it, so "empty" means: no fusemirror superblock and nothing but
 * zeroes in its first 64 KiB (where file systems and partition tables keep
 * their signatures); anything else needs --force.
 */
static int inspect_remote_leg(struct fleg *l, bool force, GError **err)
{
	g_autoptr(dmio_dev) dev = NULL;
	g_autofree uint8_t *buf = NULL;
	const char *what = NULL;
	struct dmio_region where;
	struct fm_sb sb;
	uint64_t len;
	int r = dmio_dev_open_timeout(l->path, DMIO_DEV_RDONLY, l->connect_timeout_ms, &dev);

	if (r == -ETIMEDOUT)
		return mirror_handshake_timeout(l->path, l->connect_timeout_ms, err);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot connect to it: %s",
			    l->path, g_strerror(-r));
		return r;
	}
	l->exists = true;
	len = MIN(dmio_dev_size(dev), (uint64_t)65536) & ~(uint64_t)(FM_SECTOR_SIZE - 1);
	if (fm_sb_read(dev, &sb, NULL) == 0) {
		what = "a fusemirror leg";
	} else if (len) {
		buf = g_malloc(len);
		where = (struct dmio_region){ dev, 0, len >> FM_SECTOR_SHIFT };
		r = dmio_sync_vm(1, &where, DMIO_OP_READ, buf, NULL);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot read it: %s",
				    l->path, g_strerror(-r));
			return r;
		}
		for (uint64_t i = 0; i < len && !what; i++)
			if (buf[i])
				what = "data (not zeroes) in its first 64 KiB";
	}
	if (what && !force) {
		g_set_error(err, FM_MIRROR_ERROR, EEXIST,
			    "leg %s: is not empty, it holds: %s; use --force to overwrite it",
			    l->path, what);
		return -EEXIST;
	}
	return 0;
}

static int inspect_leg(struct fleg *l, bool force, GError **err)
{
	g_autofree char *what = NULL;
	int fd, r;

	if (dmio_path_is_remote(l->path))
		return inspect_remote_leg(l, force, err);
	if (stat(l->path, &l->st) < 0) {
		if (errno != ENOENT) {
			g_set_error(err, FM_MIRROR_ERROR, errno, "leg %s: %s", l->path,
				    g_strerror(errno));
			return -errno;
		}
		return check_new_path(l->path, err);
	}
	l->exists = true;
	l->blockdev = S_ISBLK(l->st.st_mode);
	if (!l->blockdev && !S_ISREG(l->st.st_mode)) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "leg %s: not a regular file or block device", l->path);
		return -EINVAL;
	}
	/* O_EXCL on a block device refuses one that is mounted or in use. */
	fd = open(l->path, O_RDONLY | O_CLOEXEC | (l->blockdev ? O_EXCL : 0));
	if (fd < 0) {
		r = -errno;
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", l->path,
			    r == -EBUSY ? "in use (mounted, or held by another program)" :
			    g_strerror(-r));
		return r;
	}
	r = fm_sb_probe_signature(fd, &what);
	close(fd);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot probe it: %s",
			    l->path, g_strerror(-r));
		return r;
	}
	if (what && !force) {
		g_set_error(err, FM_MIRROR_ERROR, EEXIST,
			    "leg %s: is not empty, it holds: %s; use --force to overwrite it",
			    l->path, what);
		return -EEXIST;
	}
	return 0;
}

static int open_leg(struct fleg *l, uint64_t need, GError **err)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int r;

	if (!l->exists) {
		int fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

		if (fd < 0) {
			r = -errno;
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot create it: %s",
				    l->path, g_strerror(-r));
			return r;
		}
		if (ftruncate(fd, (off_t)need) < 0) {
			r = -errno;
			close(fd);
			unlink(l->path);
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot size it: %s",
				    l->path, g_strerror(-r));
			return r;
		}
		close(fd);
		l->created = true;
	}
	r = dmio_dev_open_timeout(l->path, DMIO_DEV_EXCL, l->connect_timeout_ms, &l->dev);
	if (r == -ETIMEDOUT && dmio_path_is_remote(l->path))
		return mirror_handshake_timeout(l->path, l->connect_timeout_ms, err);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", l->path,
			    r == -EBUSY ? "in use" : g_strerror(-r));
		return r;
	}
	/* A remote leg has no lock of ours: its server decides who shares it. */
	if (!dmio_dev_is_blockdev(l->dev) && !dmio_dev_is_remote(l->dev) &&
	    fcntl(dmio_dev_fd(l->dev), F_OFD_SETLK, &fl) < 0) {
		g_set_error(err, FM_MIRROR_ERROR, EBUSY,
			    "leg %s: already in use (locked by another process)", l->path);
		return -EBUSY;
	}
	return 0;
}

/* The largest 1 MiB multiple whose layout fits in @avail bytes. */
static uint64_t fit_size(uint64_t avail, uint64_t region_size, uint32_t features)
{
	uint64_t size = FM_ALIGN_DOWN(avail, (uint64_t)FM_SB_DATA_ALIGN);
	struct fm_sb sb = { 0 };

	while (size > 0) {
		if (fm_sb_layout_features(&sb, size, region_size, features) < 0)
			return 0;
		if (fm_sb_leg_bytes(&sb) <= avail)
			return size;
		size -= FM_ALIGN_UP(fm_sb_leg_bytes(&sb) - avail, (uint64_t)FM_SB_DATA_ALIGN);
		if ((int64_t)size < 0)
			return 0;
	}
	return 0;
}

/* Empty the checksum area (zeroes: "every block is zeroes"), the
 * written-region map (no region written) and, without the map, the data.
 * With the map the data is left as it is (FM_SB_FEAT_ZERO_ON_WRITE: a
 * region is zeroed on every leg when it is first written), so create
 * writes no data even on a device that cannot unmap. */
static int empty_data_area(struct fleg *l, const struct fm_sb *sb)
{
	uint64_t start = (sb->features & FM_SB_FEAT_CHECKSUMS) ? sb->csum_offset :
			 (sb->features & FM_SB_FEAT_WRITTEN_MAP) ? sb->written_offset :
			 sb->data_offset;
	uint64_t end = (sb->features & FM_SB_FEAT_ZERO_ON_WRITE) ? sb->data_offset :
		       sb->data_offset + sb->image_size;
	struct dmio_region where = { l->dev, start >> FM_SECTOR_SHIFT,
				     (end - start) >> FM_SECTOR_SHIFT };
	/* A file gets holes (it stays sparse); a device gets zeroes, by unmap
	 * where it can. */
	struct dmio_request req = {
		.op = l->blockdev ? DMIO_OP_WRITE_ZEROES : DMIO_OP_DISCARD,
	};
	int r = dmio(&req, 1, &where, NULL);

	if (r < 0 && !l->blockdev) {
		req.op = DMIO_OP_WRITE_ZEROES;
		r = dmio(&req, 1, &where, NULL);
	}
	return r;
}

int mirror_format(const char *const *paths, unsigned n,
		  const struct mirror_format_opts *opts, uint8_t ret_uuid[16], GError **err)
{
	struct mirror_format_opts o = opts ? *opts : (struct mirror_format_opts){ 0 };
	struct fleg legs[FM_SB_MAX_LEGS] = { 0 };
	uint64_t region = o.region_size ? o.region_size : FM_SB_DEFAULT_REGION_SIZE;
	uint32_t features = (o.checksums ? FM_SB_FEAT_CHECKSUMS : 0) |
			    (o.no_written_map ? 0 : FM_SB_FEAT_WRITTEN_MAP);
	uint64_t min_avail = UINT64_MAX, need;
	struct fm_sb sb = { 0 };
	char u[37];
	int r = 0;

	if (n == 0 || n > FM_SB_MAX_LEGS) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "an array has 1 to %u legs, %u given", FM_SB_MAX_LEGS, n);
		return -EINVAL;
	}
	if (o.name && strlen(o.name) >= sizeof(sb.name)) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL, "array name longer than %zu bytes",
			    sizeof(sb.name) - 1);
		return -EINVAL;
	}
	if (n < 64 && (o.write_mostly >> n)) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "write-mostly names leg %u, but only %u legs are given",
			    (unsigned)__builtin_ctzll(o.write_mostly >> n) + n, n);
		return -EINVAL;
	}
	if (o.block_size && (!fm_is_power_of_2(o.block_size) || o.block_size < 512 ||
			     o.block_size > (1u << 20))) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "block size %u is not a power of two from 512 to 1M", o.block_size);
		return -EINVAL;
	}
	if (o.checksums && o.block_size && o.block_size < FM_SB_CSUM_BLOCK_SIZE) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "block size %u is smaller than the %u bytes a checksum covers "
			    "(use a block size of 4k or more, or --checksums=no)",
			    o.block_size, FM_SB_CSUM_BLOCK_SIZE);
		return -EINVAL;
	}
	if (o.size && (o.size % 4096)) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "size %llu is not a multiple of 4 KiB", (unsigned long long)o.size);
		return -EINVAL;
	}
	if (!fm_is_power_of_2(region) || region < FM_SB_MIN_REGION_SIZE ||
	    region > FM_SB_MAX_REGION_SIZE) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL,
			    "region size %llu is not a power of two from 1M to 1T",
			    (unsigned long long)region);
		return -EINVAL;
	}

	/* 1. Inspect every leg; refuse before writing anything. */
	for (unsigned i = 0; i < n; i++) {
		legs[i].path = paths[i];
		for (unsigned j = 0; j < i; j++) {
			if (!strcmp(paths[i], paths[j])) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: given twice", paths[i]);
				return -EINVAL;
			}
		}
		r = inspect_leg(&legs[i], o.force, err);
		if (r < 0)
			return r;
		if (!legs[i].exists) {
			g_autofree char *ci = canonical_new_path(paths[i]);

			for (unsigned j = 0; j < i && ci; j++) {
				g_autofree char *cj = legs[j].exists ? NULL :
						      canonical_new_path(paths[j]);

				if (cj && !strcmp(ci, cj)) {
					g_set_error(err, FM_MIRROR_ERROR, EINVAL,
						    "leg %s: is the same file as %s",
						    paths[i], paths[j]);
					return -EINVAL;
				}
			}
		}
		for (unsigned j = 0; j < i && legs[i].exists; j++) {
			if (legs[j].exists && same_leg_file(&legs[i].st, &legs[j].st)) {
				g_set_error(err, FM_MIRROR_ERROR, EINVAL,
					    "leg %s: is the same file as %s", paths[i], paths[j]);
				return -EINVAL;
			}
		}
	}
	/* 2. Sizes. */
	for (unsigned i = 0; i < n; i++) {
		struct dmio_dev *d;

		if (!legs[i].exists)
			continue;
		r = dmio_dev_open(paths[i], DMIO_DEV_RDONLY | DMIO_DEV_NO_DIRECT, &d);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", paths[i],
				    g_strerror(-r));
			return r;
		}
		legs[i].size = dmio_dev_size(d);
		dmio_dev_close(d);
		if (legs[i].size < min_avail)
			min_avail = legs[i].size;
	}
	if (!o.size) {
		if (min_avail == UINT64_MAX) {
			g_set_error(err, FM_MIRROR_ERROR, EINVAL,
				    "none of the legs exists yet: give --size");
			return -EINVAL;
		}
		o.size = fit_size(min_avail, region, features);
		if (o.checksums && o.size > FM_SB_CSUM_MAX_IMAGE)
			o.size = FM_SB_CSUM_MAX_IMAGE;
		if (!o.size) {
			g_set_error(err, FM_MIRROR_ERROR, ENOSPC,
				    "the smallest leg (%llu bytes) is too small for an array",
				    (unsigned long long)min_avail);
			return -ENOSPC;
		}
	}
	if (o.checksums && o.size > FM_SB_CSUM_MAX_IMAGE) {
		g_set_error(err, FM_MIRROR_ERROR, EFBIG,
			    "size %llu is more than the %llu bytes an array with checksums "
			    "may have (its checksums are kept in memory: 1 MiB per GiB); "
			    "use --checksums=no", (unsigned long long)o.size,
			    (unsigned long long)FM_SB_CSUM_MAX_IMAGE);
		return -EFBIG;
	}
	r = fm_sb_layout_features(&sb, o.size, region, features);
	if (r < 0) {
		g_set_error(err, FM_MIRROR_ERROR, EINVAL, "size %llu cannot be laid out",
			    (unsigned long long)o.size);
		return r;
	}
	need = fm_sb_leg_bytes(&sb);
	for (unsigned i = 0; i < n; i++) {
		if (legs[i].exists && legs[i].size < need) {
			g_set_error(err, FM_MIRROR_ERROR, ENOSPC,
				    "leg %s: is %llu bytes; the array needs %llu "
				    "(%llu of data after a %llu-byte header)", paths[i],
				    (unsigned long long)legs[i].size, (unsigned long long)need,
				    (unsigned long long)o.size, (unsigned long long)sb.data_offset);
			return -ENOSPC;
		}
	}

	/* 3. Create, open and lock the legs.  On failure (a leg in use), undo
	 * the creations: a refused format leaves nothing behind. */
	for (unsigned i = 0; i < n && r == 0; i++)
		r = open_leg(&legs[i], need, err);
	if (r < 0) {
		for (unsigned i = 0; i < n; i++) {
			dmio_dev_close(legs[i].dev);
			if (legs[i].created)
				unlink(paths[i]);
		}
		return r;
	}

	/* 4. Superblock contents. */
	if (r == 0) {
		sb.version_major = FM_SB_VERSION_MAJOR;
		sb.version_minor = FM_SB_VERSION_MINOR;
		fm_uuid_generate(sb.array_uuid);
		sb.nr_legs = n;
		sb.events = 1;
		sb.ctime = (uint64_t)time(NULL);
		sb.state_flags = FM_SB_CLEAN;
		sb.features |= FM_SB_FEAT_GENERATIONS;  /* keeps the layout's checksum bit */
		if (sb.features & FM_SB_FEAT_WRITTEN_MAP)
			sb.features |= FM_SB_FEAT_ZERO_ON_WRITE;
		sb.block_size = o.block_size ? o.block_size : 4096;
		if (o.name)
			g_strlcpy(sb.name, o.name, sizeof(sb.name));
		for (unsigned i = 0; i < n; i++) {
			fm_uuid_generate(sb.legs[i].uuid);
			sb.legs[i].state = FM_LEG_IN_SYNC;
			sb.legs[i].events = 1;
			if (o.write_mostly & (1ull << i))
				sb.legs[i].flags |= FM_SB_LEG_WRITE_MOSTLY;
			sb.last_in_sync[i] = 1;
		}
	}
	/* 5. Empty the data areas and bitmaps, then the superblocks. */
	for (unsigned i = 0; i < n && r == 0; i++) {
		struct fm_sb leg_sb = sb;

		leg_sb.leg_index = i;
		memcpy(leg_sb.leg_uuid, sb.legs[i].uuid, 16);
		r = legs[i].exists ? empty_data_area(&legs[i], &sb) : 0;
		if (r == 0)
			r = fm_sb_clear_bitmap(legs[i].dev, &leg_sb);
		if (r == 0) {
			struct dmio_request fl = { .op = DMIO_OP_FLUSH };
			struct dmio_region w = { legs[i].dev, 0, 0 };

			r = dmio(&fl, 1, &w, NULL);
		}
		if (r == 0)
			r = fm_sb_write(legs[i].dev, &leg_sb);
		if (r < 0)
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: cannot write it: %s",
				    paths[i], g_strerror(-r));
	}
	for (unsigned i = 0; i < n; i++)
		dmio_dev_close(legs[i].dev);
	if (r < 0)
		return r;
	if (ret_uuid)
		memcpy(ret_uuid, sb.array_uuid, 16);
	fm_debug("array %s created: %u legs, %llu bytes", fm_uuid_unparse(sb.array_uuid, u),
		 n, (unsigned long long)o.size);
	return 0;
}

int mirror_open_new_leg(const char *path, bool force, uint64_t need,
			unsigned connect_timeout_ms, struct dmio_dev **ret_dev,
			bool *ret_created, GError **err)
{
	struct fleg l = { .path = path, .connect_timeout_ms = connect_timeout_ms };
	int r = inspect_leg(&l, force, err);

	if (r < 0)
		return r;
	if (l.exists) {
		struct dmio_dev *d;

		r = dmio_dev_open_timeout(path, DMIO_DEV_RDONLY | DMIO_DEV_NO_DIRECT,
					  connect_timeout_ms, &d);
		if (r == -ETIMEDOUT && dmio_path_is_remote(path))
			return mirror_handshake_timeout(path, connect_timeout_ms, err);
		if (r < 0) {
			g_set_error(err, FM_MIRROR_ERROR, -r, "leg %s: %s", path, g_strerror(-r));
			return r;
		}
		l.size = dmio_dev_size(d);
		dmio_dev_close(d);
		if (l.size < need) {
			g_set_error(err, FM_MIRROR_ERROR, ENOSPC,
				    "leg %s: is %llu bytes; the array needs %llu", path,
				    (unsigned long long)l.size, (unsigned long long)need);
			return -ENOSPC;
		}
	}
	r = open_leg(&l, need, err);
	if (r < 0) {
		dmio_dev_close(l.dev);
		if (l.created)
			unlink(path);
		return r;
	}
	*ret_dev = l.dev;
	*ret_created = l.created;
	return 0;
}
