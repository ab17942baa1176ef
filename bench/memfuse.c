/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * memfuse: the FUSE ceiling for bench/compare.
 *
 * A plain in-memory FUSE file system that serves ONE regular file of a
 * fixed size from RAM, set up the way fusemirror's front is
 * (src/front/front.c): libfuse3 low-level API, multi-threaded session loop
 * with clone_fd, direct_io (and parallel direct writes) on open, max_write
 * 1 MiB, max_background raised, async DIO, no splice, no writeback cache.
 * Reads are answered with fuse_reply_buf() straight from the buffer, writes
 * are one memcpy() into it and fuse_reply_write(); flush and fsync answer 0.
 * Whatever fusemirror adds on top of this (cache, mirror, io_uring to the
 * legs) is what a comparison with this file system shows.
 *
 *   memfuse --size SIZE [--threads N] [--max-background N] [--name NAME]
 *           [--no-parallel-writes] [--transport=dev|uring] [--uring-depth N]
 *           [--backing FILE] [--pidfile FILE] MOUNTPOINT
 *
 * --transport=uring serves the file through FUSE over io_uring with the
 * module fusemirror's front uses (src/front/fuse_uring.h): one queue per
 * possible CPU, the handler below run on the queue's thread, a read
 * answered with one copy into the ring entry's buffer, a write copied out
 * of it.  It needs /sys/module/fuse/parameters/enable_uring = Y.
 *
 * MOUNTPOINT is a directory (the file is MOUNTPOINT/NAME, NAME defaulting
 * to "image") or an existing regular file (mounted over, it becomes the
 * file).  memfuse stays in the foreground; SIGTERM or SIGINT unmounts it.
 * The buffer is anonymous memory, populated at start (MAP_POPULATE) so
 * that first touches do not show up as page faults in the measurements.
 * With --backing FILE it is a shared mapping of FILE instead (created if
 * missing, allocated to SIZE, populated the same way), e.g. a file on the
 * tmpfs that holds fusemirror's legs: the kernel's copies then read and
 * write the same kind of pages as fusemirror's mapped legs (on 4 KiB tmpfs
 * pages they cost more per MiB than on anonymous memory: bench/README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>

#include <fuse_lowlevel.h>

#include "fuse_uring.h"

/* struct fuse_open_out of <linux/fuse.h>: libfuse 3.14's fuse_reply_open()
 * cannot set FOPEN_PARALLEL_DIRECT_WRITES, so open is answered with it
 * directly, as fusemirror does. */
struct mf_open_out {
	uint64_t fh;
	uint32_t open_flags;
	uint32_t padding;
};
#define MF_FOPEN_DIRECT_IO              (1u << 0)
#define MF_FOPEN_PARALLEL_DIRECT_WRITES (1u << 6)

#define IMAGE_INO 2
#define ATTR_TIMEOUT 3600.0

static struct {
	uint8_t *buf;
	uint64_t size;
	const char *name;
	bool file_mount;
	bool parallel_writes;
	unsigned max_background;
	unsigned threads;
	bool uring;
	unsigned uring_depth;
	struct timespec mtime;
} mf = {
	.name = "image",
	.parallel_writes = true,
	.max_background = 256,
	.threads = 8,
};

static fuse_ino_t image_ino(void)
{
	return mf.file_mount ? FUSE_ROOT_ID : IMAGE_INO;
}

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_atim = st->st_mtim = st->st_ctim = mf.mtime;
	st->st_blksize = 4096;
	if (ino == image_ino()) {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = (off_t)mf.size;
		st->st_blocks = (blkcnt_t)(mf.size / 512);
	} else {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = 1u << 20;
	conn->max_read = 0;
	conn->max_readahead = 0;
	conn->max_background = mf.max_background;
	conn->congestion_threshold = mf.max_background * 3 / 4;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
				  FUSE_CAP_SPLICE_MOVE);
	conn->time_gran = 1;
}

static bool known_ino(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID || (!mf.file_mount && ino == IMAGE_INO);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { 0 };

	if (mf.file_mount || parent != FUSE_ROOT_ID || strcmp(name, mf.name)) {
		fuse_reply_err(req, mf.file_mount ? ENOTDIR : ENOENT);
		return;
	}
	e.ino = IMAGE_INO;
	e.attr_timeout = ATTR_TIMEOUT;
	e.entry_timeout = ATTR_TIMEOUT;
	fill_attr(IMAGE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (!known_ino(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (!known_ino(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != mf.size) {
		fuse_reply_err(req, EPERM);     /* the size is fixed */
		return;
	}
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	const char *names[3] = { ".", "..", mf.name };
	fuse_ino_t inos[3] = { FUSE_ROOT_ID, FUSE_ROOT_ID, IMAGE_INO };
	char *buf;
	size_t used = 0;

	(void)fi;
	if (mf.file_mount || ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = calloc(1, size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (off_t i = off; i < 3; i++) {
		struct stat st = { .st_ino = inos[i], .st_mode = i == 2 ? S_IFREG : S_IFDIR };
		size_t need = fuse_add_direntry(req, buf + used, size - used, names[i], &st,
						i + 1);

		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mf_open_out out = { 0 };

	(void)fi;
	if (ino != image_ino()) {
		fuse_reply_err(req, known_ino(ino) ? EISDIR : ENOENT);
		return;
	}
	out.open_flags = MF_FOPEN_DIRECT_IO;
	if (mf.parallel_writes)
		out.open_flags |= MF_FOPEN_PARALLEL_DIRECT_WRITES;
	fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (off < 0 || (uint64_t)off >= mf.size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > mf.size - (uint64_t)off)
		size = (size_t)(mf.size - (uint64_t)off);
	fuse_reply_buf(req, (const char *)mf.buf + off, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (off < 0 || (uint64_t)off >= mf.size) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (size > mf.size - (uint64_t)off)
		size = (size_t)(mf.size - (uint64_t)off);
	memcpy(mf.buf + off, buf, size);
	fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (mode == 0 && off >= 0 && len > 0 && (uint64_t)off + (uint64_t)len <= mf.size)
		fuse_reply_err(req, 0);
	else
		fuse_reply_err(req, EOPNOTSUPP);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = { 0 };

	(void)ino;
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_blocks = mf.size / 4096;
	st.f_files = mf.file_mount ? 1 : 2;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readdir = op_readdir,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.statfs = op_statfs,
};

/* The same file over FUSE over io_uring: the requests decoded by hand. */
static void ring_handle(void *ctx, struct front_uring_req *r)
{
	const struct fuse_in_header *h = front_uring_req_in(r);
	const void *arg = front_uring_req_op_in(r);
	size_t plen;
	const char *payload = front_uring_req_payload(r, &plen);
	struct stat st;

	(void)ctx;
	switch (h->opcode) {
	case FUSE_LOOKUP:
		if (mf.file_mount || h->nodeid != FUSE_ROOT_ID || plen == 0 ||
		    strnlen(payload, plen) != strlen(mf.name) || strcmp(payload, mf.name)) {
			front_uring_reply(r, mf.file_mount ? ENOTDIR : ENOENT, NULL, 0);
			break;
		}
		fill_attr(IMAGE_INO, &st);
		front_uring_reply_entry(r, IMAGE_INO, &st, ATTR_TIMEOUT, ATTR_TIMEOUT);
		break;
	case FUSE_GETATTR:
	case FUSE_SETATTR:
		if (!known_ino(h->nodeid)) {
			front_uring_reply(r, ENOENT, NULL, 0);
			break;
		}
		if (h->opcode == FUSE_SETATTR) {
			const struct fuse_setattr_in *in = arg;

			if ((in->valid & FATTR_SIZE) && in->size != mf.size) {
				front_uring_reply(r, EPERM, NULL, 0);
				break;
			}
		}
		fill_attr(h->nodeid, &st);
		front_uring_reply_attr(r, &st, ATTR_TIMEOUT);
		break;
	case FUSE_OPENDIR:
		front_uring_reply_open(r, 0, 0);
		break;
	case FUSE_READDIR: {
		const struct fuse_read_in *in = arg;
		const char *names[3] = { ".", "..", mf.name };
		fuse_ino_t inos[3] = { FUSE_ROOT_ID, FUSE_ROOT_ID, IMAGE_INO };
		size_t cap, used = 0, size;
		char *buf = front_uring_reply_buf(r, &cap);

		if (mf.file_mount || h->nodeid != FUSE_ROOT_ID) {
			front_uring_reply(r, ENOTDIR, NULL, 0);
			break;
		}
		size = in->size < cap ? in->size : cap;
		for (uint64_t i = in->offset; i < 3; i++) {
			struct stat de = { .st_ino = inos[i], .st_mode = i == 2 ? S_IFREG : S_IFDIR };
			size_t need = fuse_add_direntry(NULL, buf + used, size - used, names[i], &de,
							(off_t)i + 1);

			if (need > size - used)
				break;
			used += need;
		}
		front_uring_reply(r, 0, buf, used);
		break;
	}
	case FUSE_OPEN:
		if (h->nodeid != image_ino()) {
			front_uring_reply(r, known_ino(h->nodeid) ? EISDIR : ENOENT, NULL, 0);
			break;
		}
		front_uring_reply_open(r, 0, MF_FOPEN_DIRECT_IO |
					     (mf.parallel_writes ? MF_FOPEN_PARALLEL_DIRECT_WRITES : 0));
		break;
	case FUSE_READ: {
		const struct fuse_read_in *in = arg;
		size_t size = in->size;

		if (in->offset >= mf.size) {
			front_uring_reply(r, 0, NULL, 0);
			break;
		}
		if (size > mf.size - in->offset)
			size = (size_t)(mf.size - in->offset);
		front_uring_reply(r, 0, mf.buf + in->offset, size);
		break;
	}
	case FUSE_WRITE: {
		const struct fuse_write_in *in = arg;
		size_t size = in->size < plen ? in->size : plen;

		if (in->offset >= mf.size) {
			front_uring_reply(r, ENOSPC, NULL, 0);
			break;
		}
		if (size > mf.size - in->offset)
			size = (size_t)(mf.size - in->offset);
		memcpy(mf.buf + in->offset, payload, size);
		front_uring_reply_write(r, (uint32_t)size);
		break;
	}
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FLUSH:
	case FUSE_FSYNC:
		front_uring_reply(r, 0, NULL, 0);
		break;
	case FUSE_FALLOCATE: {
		const struct fuse_fallocate_in *in = arg;

		front_uring_reply(r, in->mode == 0 && in->length > 0 &&
				     in->offset + in->length <= mf.size ? 0 : EOPNOTSUPP, NULL, 0);
		break;
	}
	case FUSE_STATFS: {
		struct statvfs sv = { 0 };

		sv.f_bsize = 4096;
		sv.f_frsize = 4096;
		sv.f_blocks = mf.size / 4096;
		sv.f_files = mf.file_mount ? 1 : 2;
		sv.f_namemax = 255;
		front_uring_reply_statfs(r, &sv);
		break;
	}
	default:
		front_uring_reply(r, ENOSYS, NULL, 0);
		break;
	}
}

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return -1;
	*ret = (uint64_t)v << shift;
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: memfuse --size SIZE [OPTIONS] MOUNTPOINT\n"
		"Serves one file of SIZE bytes from RAM through FUSE (the ceiling of\n"
		"bench/compare). MOUNTPOINT: a directory (file MOUNTPOINT/NAME) or a\n"
		"regular file (mounted over). Stays in the foreground; SIGTERM unmounts.\n"
		"  --size SIZE             file size (e.g. 2G), a multiple of 4 KiB\n"
		"  --threads N             max FUSE worker threads (default 8, as fusemirror)\n"
		"  --max-background N      kernel max_background (default 256, as fusemirror)\n"
		"  --no-parallel-writes    do not ask for FOPEN_PARALLEL_DIRECT_WRITES\n"
		"  --transport=T           dev (/dev/fuse, default) or uring (FUSE over\n"
		"                          io_uring; needs the fuse module's enable_uring)\n"
		"  --uring-depth N         io_uring entries per queue (default 32)\n"
		"  --name NAME             file name in a directory mount (default image)\n"
		"  --backing FILE          keep the bytes in FILE (created if missing,\n"
		"                          allocated to SIZE, mapped shared) instead of\n"
		"                          anonymous memory, e.g. a file on a tmpfs\n"
		"  --pidfile FILE          write the pid to FILE once mounted\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "max-background", required_argument, NULL, 'b' },
		{ "no-parallel-writes", no_argument, NULL, 'P' },
		{ "name", required_argument, NULL, 'n' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "transport", required_argument, NULL, 'T' },
		{ "uring-depth", required_argument, NULL, 'D' },
		{ "backing", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	struct front_uring *u = NULL;
	const char *mountpoint, *pidfile = NULL, *backing = NULL;
	struct stat st;
	int c, r = 1;

	while ((c = getopt_long(argc, argv, "s:t:b:Pn:p:T:D:B:h", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &mf.size) < 0 || mf.size == 0 || mf.size % 4096) {
				fprintf(stderr, "memfuse: --size %s: not a multiple of 4 KiB\n",
					optarg);
				return 2;
			}
			break;
		case 't':
			mf.threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'b':
			mf.max_background = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'P':
			mf.parallel_writes = false;
			break;
		case 'n':
			mf.name = optarg;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'T':
			if (strcmp(optarg, "dev") && strcmp(optarg, "uring")) {
				fprintf(stderr, "memfuse: --transport=%s: expected dev or uring\n",
					optarg);
				return 2;
			}
			mf.uring = !strcmp(optarg, "uring");
			break;
		case 'D':
			mf.uring_depth = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'B':
			backing = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc || !mf.size || !mf.threads || !mf.max_background) {
		usage(stderr);
		return 2;
	}
	mountpoint = argv[optind];
	if (stat(mountpoint, &st) < 0 || (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))) {
		fprintf(stderr, "memfuse: %s: not a directory or a regular file\n", mountpoint);
		return 2;
	}
	mf.file_mount = S_ISREG(st.st_mode);
	clock_gettime(CLOCK_REALTIME, &mf.mtime);

	if (backing) {
		/* Allocated first: a read populate of a tmpfs hole would
		 * allocate it anyway, one fault at a time. */
		int bfd = open(backing, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		int e = bfd < 0 ? errno : posix_fallocate(bfd, 0, (off_t)mf.size);

		if (e) {
			fprintf(stderr, "memfuse: --backing %s: %s\n", backing, strerror(e));
			if (bfd >= 0)
				close(bfd);
			return 1;
		}
		mf.buf = mmap(NULL, mf.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			      bfd, 0);
		close(bfd);
	} else {
		mf.buf = mmap(NULL, mf.size, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	}
	if (mf.buf == MAP_FAILED) {
		fprintf(stderr, "memfuse: cannot map %llu bytes: %s\n",
			(unsigned long long)mf.size, strerror(errno));
		return 1;
	}
	if (fuse_opt_add_arg(&args, "memfuse") ||
	    fuse_opt_add_arg(&args, "-ofsname=memfuse,subtype=memfuse,default_permissions")) {
		fuse_opt_free_args(&args);
		return 1;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	fuse_opt_free_args(&args);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	if (mf.uring) {
		struct front_uring_opts uo = { .depth = mf.uring_depth, .handler = ring_handle,
					       .require = true };
		GError *err = NULL;
		bool init_done;

		if (front_uring_start(se, &uo, &u, &init_done, &err) < 0) {
			fprintf(stderr, "memfuse: %s\n", err->message);
			g_error_free(err);
			goto out_unmount;
		}
	}
	if (pidfile) {
		FILE *pf = fopen(pidfile, "w");

		if (pf) {
			fprintf(pf, "%ld\n", (long)getpid());
			fclose(pf);
		}
	}
	cfg = fuse_loop_cfg_create();
	if (cfg) {
		fuse_loop_cfg_set_max_threads(cfg, mf.threads);
		fuse_loop_cfg_set_idle_threads(cfg, mf.threads / 2 ? mf.threads / 2 : 1);
		fuse_loop_cfg_set_clone_fd(cfg, 1);
		r = fuse_session_loop_mt(se, cfg) < 0 ? 1 : 0;
		fuse_loop_cfg_destroy(cfg);
	}
	front_uring_stop(u);
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	munmap(mf.buf, mf.size);
	return r;
}
