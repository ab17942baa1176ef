/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A bufio bdev on one dmio device: reads and writes through the
 * asynchronous dmio() API with a bvec (the iovec bufio hands over, which
 * dmio copies at submission), flush, discard and write-zeroes as
 * synchronous dmio calls, splice_read dmio_dev_splice_read() on the caller's
 * thread.
 * The per-request context is a small malloc: dmio's notify function gets
 * one pointer, and bufio's end_io needs two.
 */
#include <errno.h>
#include <stdlib.h>

#include "bufio_i.h"
#include "fusemirror/dmio.h"

struct dmio_bdev {
	struct dmio_dev *dev;
	struct dmio_client *client;
};

struct dmio_bdev_req {
	fm_bdev_end_io_fn end_io;
	void *ctx;
};

static void dmio_bdev_notify(unsigned long error_bits, void *context)
{
	struct dmio_bdev_req *rq = context;
	fm_bdev_end_io_fn end_io = rq->end_io;
	void *ctx = rq->ctx;

	free(rq);
	end_io(ctx, error_bits ? -EIO : 0);
}

static int dmio_bdev_submit(void *dev, enum fm_bdev_op op, uint64_t sector,
			    const struct iovec *iov, unsigned iovcnt, unsigned flags,
			    fm_bdev_end_io_fn end_io, void *ctx)
{
	struct dmio_bdev *d = dev;
	struct dmio_bdev_req *rq;
	struct dmio_region where;
	uint64_t bytes = 0;
	int r;

	for (unsigned i = 0; i < iovcnt; i++)
		bytes += iov[i].iov_len;
	rq = malloc(sizeof(*rq));
	if (!rq)
		return -ENOMEM;
	rq->end_io = end_io;
	rq->ctx = ctx;
	where = (struct dmio_region){ .dev = d->dev, .sector = sector,
				      .count = bytes >> FM_SECTOR_SHIFT };
	struct dmio_request req = {
		.op = op == FM_BDEV_READ ? DMIO_OP_READ : DMIO_OP_WRITE,
		.flags = (op == FM_BDEV_WRITE && (flags & FM_BDEV_FUA)) ? DMIO_REQ_FUA : 0,
		.mem = { .type = DMIO_MEM_BVEC, .ptr.bvec = { iov, iovcnt } },
		.notify_fn = dmio_bdev_notify,
		.notify_context = rq,
		.client = d->client,
	};
	r = dmio(&req, 1, &where, NULL);
	if (r < 0)
		free(rq);
	return r;
}

static int dmio_bdev_flush(void *dev)
{
	struct dmio_bdev *d = dev;
	struct dmio_region where = { .dev = d->dev };
	struct dmio_request req = { .op = DMIO_OP_FLUSH, .client = d->client };

	return dmio(&req, 1, &where, NULL);
}

static int dmio_bdev_zero(struct dmio_bdev *d, enum dmio_op op, uint64_t sector,
			  uint64_t nr_sectors)
{
	struct dmio_region where = { .dev = d->dev, .sector = sector, .count = nr_sectors };
	struct dmio_request req = { .op = op, .client = d->client };

	return dmio(&req, 1, &where, NULL);
}

static int dmio_bdev_discard(void *dev, uint64_t sector, uint64_t nr_sectors)
{
	return dmio_bdev_zero(dev, DMIO_OP_DISCARD, sector, nr_sectors);
}

static int dmio_bdev_write_zeroes(void *dev, uint64_t sector, uint64_t nr_sectors)
{
	return dmio_bdev_zero(dev, DMIO_OP_WRITE_ZEROES, sector, nr_sectors);
}

static uint64_t dmio_bdev_size(void *dev)
{
	struct dmio_bdev *d = dev;

	return dmio_dev_size(d->dev);
}

static int dmio_bdev_splice_read(void *dev, uint64_t sector, uint64_t nr_sectors, int pipe_fd)
{
	struct dmio_bdev *d = dev;

	if (!dmio_dev_in_memory(d->dev))
		return -EOPNOTSUPP;     /* it could wait for the disk */
	return dmio_dev_splice_read(d->dev, sector << FM_SECTOR_SHIFT,
				    (size_t)nr_sectors << FM_SECTOR_SHIFT, pipe_fd);
}

static const struct fm_bdev_ops dmio_bdev_ops = {
	.submit = dmio_bdev_submit,
	.flush = dmio_bdev_flush,
	.discard = dmio_bdev_discard,
	.write_zeroes = dmio_bdev_write_zeroes,
	.size = dmio_bdev_size,
	.splice_read = dmio_bdev_splice_read,
};

int bufio_dmio_bdev_create(struct dmio_dev *dev, struct dmio_client *client,
			   struct fm_bdev *ret_bdev)
{
	struct dmio_bdev *d = malloc(sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->dev = dev;
	d->client = client;
	ret_bdev->ops = &dmio_bdev_ops;
	ret_bdev->dev = d;
	return 0;
}

void bufio_dmio_bdev_destroy(struct fm_bdev *bdev)
{
	if (!bdev)
		return;
	free(bdev->dev);
	bdev->dev = NULL;
	bdev->ops = NULL;
}
