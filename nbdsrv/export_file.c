/*
 * export_file.c — a regular file or a block device as an export.
 *
 * Every data operation but WRITE is one io_uring SQE on the calling
 * reactor's ring:
 *
 *   read          IORING_OP_READ, resubmitted for the rest on a short read
 *   write         below FILE_ASYNC_MIN: pwritev2 (RWF_DSYNC with FUA) on the
 *                 export's own writer threads, not io_uring (see "Writes");
 *                 larger: IORING_OP_WRITE, resubmitted on a short write
 *   flush         IORING_OP_FSYNC with IORING_FSYNC_DATASYNC
 *   trim          IORING_OP_FALLOCATE PUNCH_HOLE|KEEP_SIZE (a file system or
 *                 device without it: success — trim is advisory)
 *   zero          PUNCH_HOLE|KEEP_SIZE, or ZERO_RANGE with NO_HOLE; when the
 *                 kernel cannot do either, FAST_ZERO fails with -ENOTSUP and
 *                 otherwise zeroes are written from a shared zero buffer
 *   cache         IORING_OP_FADVISE WILLNEED, in pieces of at most 1 GiB
 *   block status  lseek(SEEK_DATA/SEEK_HOLE) on the worker pool: it can
 *                 block on file system metadata, so it stays off reactors.
 *                 Block devices report everything as data.
 *
 * FUA on trim/zero is a fdatasync issued after the fallocate completes.
 * Several stages of one op (short I/O retries, fallbacks, the trailing
 * fdatasync) chain through io->op; io->priv holds the export, the bytes done
 * and the stage.
 *
 * Writes.  A buffered write cannot complete without blocking on ext4 (no
 * IOCB_NOWAIT support), so io_uring hands every IORING_OP_WRITE to an io-wq
 * worker, and io-wq hashes buffered writes by inode: all writes to the file
 * from one ring run one after the other on ONE kernel worker, which also
 * wakes the reactor for each completion.  Measured (bench/nbd.md) that worker
 * is the bottleneck of 4 KiB random writes.  A small pool of FILE_WRITERS
 * threads per writable export calling pwritev2() does better: ext4 still
 * serialises the copy into the page cache on the inode lock, but queueing,
 * wake-ups and the hand-back to the reactor (loop_post, one eventfd write per
 * batch) overlap with the next write instead of sitting in the serial path.
 * Large writes stay on io-wq: there the copy dominates, and several threads
 * waiting for the inode lock would only spin on the 2-core machines measured
 * (1 MiB writes through the pool were 25 % slower).  The pool is the
 * export's own, so a write stalled by dirty-page throttling never delays the
 * server's CPU jobs.  FLUSH stays an IORING_OP_FSYNC on the same descriptor:
 * it covers every write that completed before it, by either path.
 *
 * Large reads can bypass ops->read (conn.c, "Large reads"): ops->splice_fd
 * hands out the descriptor for splice(2), and ops->map a read-only
 * MAP_SHARED map of the whole export made at open (none when mmap fails,
 * e.g. no address space for a huge device).  The server only gives the map
 * to the kernel as sendmsg data, never touches it itself: a file shrunk
 * under the export would SIGBUS a user-space access, the kernel returns
 * -EFAULT.  So that a shrunk file's read gets an error reply (as from
 * qemu-nbd or nbdkit's file plugin) rather than a broken connection or
 * the zeros the page cache holds past the new end of its last page,
 * ops->map hands out the map only for a range inside the file's current
 * size (one fstat); the others take ops->read, whose short read is -EIO.
 * A truncate that lands between that check and the send still breaks the
 * connection (-EFAULT after the header) or sends the page's zeros past the
 * new end, as a pread racing the truncate could return them.  The mapped
 * pages are the page cache's (they show in RSS).
 * Such a reply is one data chunk, so ops->all_data (lseek SEEK_HOLE) tells
 * the server when a range has a hole: that read takes the normal path,
 * whose reply describes the hole as a HOLE chunk.
 *
 * The file is opened without O_DIRECT: the page cache is shared by every
 * connection, and FLUSH is an fdatasync of the one descriptor all
 * connections write through, so a flush covers writes acknowledged on any
 * connection (NBD_FLAG_CAN_MULTI_CONN).
 */
#include "nbdsrv/export.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define FILE_ZERO_BUF   (1024 * 1024)
#define FILE_CACHE_STEP (1ull << 30)
#ifndef FILE_ASYNC_MIN
#define FILE_ASYNC_MIN  (128u * 1024)
#endif
#ifndef FILE_WRITERS
#define FILE_WRITERS    4u
#endif

struct file_export {
	struct export base;     /* first: e->ops */
	int fd;
	bool bdev;              /* a block device, not a regular file */
	struct workq *wq;       /* runs lseek() for block status, borrowed */
	struct workq writers;   /* runs pwritev2() for WRITE (writable only) */
	bool writers_up;
	uint8_t *zeroes;        /* FILE_ZERO_BUF zero bytes, for zero fallback */
	uint8_t *map;           /* the whole export, PROT_READ, or NULL */
};

/* io->priv layout while an op is in flight. */
enum { P_EXPORT, P_DONE, P_STAGE };
enum file_stage {
	ST_IO,                  /* read / large write: the data transfer */
	ST_PUNCH,               /* zero: PUNCH_HOLE attempt */
	ST_ZERO_RANGE,          /* zero: ZERO_RANGE attempt */
	ST_ZERO_WRITE,          /* zero: writing zeroes */
	ST_TRIM,                /* trim: PUNCH_HOLE */
	ST_SYNC,                /* trailing fdatasync for FUA (or flush) */
	ST_CACHE,               /* fadvise pieces */
};

static struct file_export *io_export(struct export_io *io)
{
	return (struct file_export *)(uintptr_t)io->priv[P_EXPORT];
}

static void io_start(struct export *e, struct export_io *io, loop_cb *cb,
		     enum file_stage st)
{
	io->priv[P_EXPORT] = (uintptr_t)e;
	io->priv[P_DONE] = 0;
	io->priv[P_STAGE] = st;
	io->op.cb = cb;
}

static void submit_sync(struct export_io *io)
{
	struct file_export *f = io_export(io);
	struct io_uring_sqe *sqe = loop_sqe(io->loop, &io->op);

	io->priv[P_STAGE] = ST_SYNC;
	io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
}

/* Completion of the data stage: FUA adds an fdatasync unless RWF_DSYNC
 * already covered it. */
static void finish(struct export_io *io, int res, bool synced)
{
	if (res >= 0 && (io->flags & EXPORT_IO_FUA) && !synced) {
		submit_sync(io);
		return;
	}
	io->done(io, res < 0 ? res : 0);
}

/* ---- read ---- */

/* Submit the rest of a read or a write: at most 1 GiB per SQE. */
static void rw_submit(struct export_io *io, bool write)
{
	struct file_export *f = io_export(io);
	uint64_t done = io->priv[P_DONE];
	struct io_uring_sqe *sqe = loop_sqe(io->loop, &io->op);
	uint64_t left = io->length - done;
	unsigned n = left > (1u << 30) ? (1u << 30) : (unsigned)left;

	if (write) {
		io_uring_prep_write(sqe, f->fd, (uint8_t *)io->buf + done, n,
				    io->offset + done);
		if (io->flags & EXPORT_IO_FUA)
			sqe->rw_flags = RWF_DSYNC;
		sqe->flags |= IOSQE_ASYNC;      /* it would be punted anyway */
		return;
	}
	io_uring_prep_read(sqe, f->fd, (uint8_t *)io->buf + done, n, io->offset + done);
	/* A large copy from the page cache goes to an io-wq worker so that
	 * the reactor keeps receiving and sending meanwhile (the other cores
	 * do the memcpy); small ones complete inline, cheaper. */
	if (n >= FILE_ASYNC_MIN)
		sqe->flags |= IOSQE_ASYNC;
}

/* A read or write completed res bytes: retry, continue after a short
 * transfer, or end the op (no progress at all — the file shrank under a
 * read — is -EIO). */
static void rw_complete(struct export_io *io, int res, bool write)
{
	if (res == -EINTR || res == -EAGAIN) {
		rw_submit(io, write);
		return;
	}
	if (res <= 0) {
		io->done(io, res < 0 ? res : -EIO);
		return;
	}
	io->priv[P_DONE] += (unsigned)res;
	if (io->priv[P_DONE] < io->length)
		rw_submit(io, write);
	else
		io->done(io, 0);
}

static void read_cb(struct loop_op *op, int res, uint32_t flags)
{
	rw_complete(container_of(op, struct export_io, op), res, false);
}

static void sync_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);

	io->done(io, res < 0 ? res : 0);
}

static void file_read(struct export *e, struct export_io *io)
{
	if (io->length == 0) {
		/* Keep the asynchronous contract: complete through the ring. */
		io_start(e, io, sync_cb, ST_IO);
		io_uring_prep_nop(loop_sqe(io->loop, &io->op));
		return;
	}
	io_start(e, io, read_cb, ST_IO);
	rw_submit(io, false);
}

/* ---- write ---- */

static void write_cb(struct loop_op *op, int res, uint32_t flags)
{
	rw_complete(container_of(op, struct export_io, op), res, true);
}

static int pwrite_all(struct file_export *f, struct export_io *io)
{
	uint64_t done = 0;
	int fl = (io->flags & EXPORT_IO_FUA) ? RWF_DSYNC : 0;

	while (done < io->length) {
		struct iovec v = { (uint8_t *)io->buf + done, io->length - done };
		ssize_t n = pwritev2(f->fd, &v, 1, (off_t)(io->offset + done), fl);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		done += (uint64_t)n;
	}
	return 0;
}

/* On a writer thread: the result goes back through priv[P_DONE]. */
static void write_work(struct workq_job *job)
{
	struct export_io *io = container_of(job, struct export_io, job);

	io->priv[P_DONE] = (uint64_t)(int64_t)pwrite_all(io_export(io), io);
}

static void write_done(struct workq_job *job)
{
	struct export_io *io = container_of(job, struct export_io, job);

	io->done(io, (int)(int64_t)io->priv[P_DONE]);
}

static void file_write(struct export *e, struct export_io *io)
{
	struct file_export *f = (struct file_export *)e;

	if (io->length == 0) {
		/* Nothing to write; FUA still means "durable when acked". */
		io_start(e, io, sync_cb, ST_SYNC);
		if (io->flags & EXPORT_IO_FUA)
			submit_sync(io);
		else
			io_uring_prep_nop(loop_sqe(io->loop, &io->op));
		return;
	}
	if (io->length >= FILE_ASYNC_MIN) {
		io_start(e, io, write_cb, ST_IO);
		rw_submit(io, true);
		return;
	}
	io->priv[P_EXPORT] = (uintptr_t)e;
	io->job.work = write_work;
	io->job.done = write_done;
	io->job.loop = io->loop;
	workq_submit(&f->writers, &io->job);
}

/* ---- flush ---- */

static void file_flush(struct export *e, struct export_io *io)
{
	io_start(e, io, sync_cb, ST_SYNC);
	submit_sync(io);
}

/* ---- trim / zero ---- */

static void fallocate_submit(struct export_io *io, int mode)
{
	struct file_export *f = io_export(io);
	struct io_uring_sqe *sqe = loop_sqe(io->loop, &io->op);

	io_uring_prep_fallocate(sqe, f->fd, mode, (off_t)io->offset,
				(off_t)io->length);
}

static void zero_write_submit(struct export_io *io)
{
	struct file_export *f = io_export(io);
	uint64_t done = io->priv[P_DONE];
	uint64_t left = io->length - done;
	unsigned n = left > FILE_ZERO_BUF ? FILE_ZERO_BUF : (unsigned)left;
	struct io_uring_sqe *sqe = loop_sqe(io->loop, &io->op);

	io_uring_prep_write(sqe, f->fd, f->zeroes, n, io->offset + done);
}

static bool unsupported(int res)
{
	return res == -EOPNOTSUPP || res == -ENOTTY || res == -EINVAL ||
	       res == -ENODEV;
}

static void zero_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);
	struct file_export *f = io_export(io);

	switch (io->priv[P_STAGE]) {
	case ST_PUNCH:
		if (res >= 0 || !unsupported(res))
			break;
		if (f->bdev && (io->flags & EXPORT_IO_FAST_ZERO)) {
			io->done(io, -ENOTSUP);
			return;
		}
		io->priv[P_STAGE] = ST_ZERO_RANGE;
		fallocate_submit(io, FALLOC_FL_ZERO_RANGE |
				 (f->bdev ? 0 : FALLOC_FL_KEEP_SIZE));
		return;
	case ST_ZERO_RANGE:
		if (res >= 0 || !unsupported(res))
			break;
		if (io->flags & EXPORT_IO_FAST_ZERO) {
			io->done(io, -ENOTSUP);
			return;
		}
		io->priv[P_STAGE] = ST_ZERO_WRITE;
		io->priv[P_DONE] = 0;
		zero_write_submit(io);
		return;
	case ST_ZERO_WRITE:
		if (res == -EINTR || res == -EAGAIN) {
			zero_write_submit(io);
			return;
		}
		if (res <= 0) {
			io->done(io, res < 0 ? res : -EIO);
			return;
		}
		io->priv[P_DONE] += (unsigned)res;
		if (io->priv[P_DONE] < io->length) {
			zero_write_submit(io);
			return;
		}
		res = 0;
		break;
	case ST_TRIM:
		if (res < 0 && unsupported(res))
			res = 0;        /* advisory: nothing discarded */
		break;
	case ST_SYNC:
		io->done(io, res < 0 ? res : 0);
		return;
	}
	finish(io, res, false);
}

static void notsup_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);

	io->done(io, -ENOTSUP);
}

static void file_trim(struct export *e, struct export_io *io)
{
	io_start(e, io, zero_cb, ST_TRIM);
	if (io->length == 0) {
		io_uring_prep_nop(loop_sqe(io->loop, &io->op));
		return;
	}
	fallocate_submit(io, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}

static void file_zero(struct export *e, struct export_io *io)
{
	struct file_export *f = (struct file_export *)e;

	if (io->length == 0) {
		io_start(e, io, zero_cb, ST_TRIM);
		io_uring_prep_nop(loop_sqe(io->loop, &io->op));
		return;
	}
	if (io->flags & EXPORT_IO_NO_HOLE) {
		if (f->bdev && (io->flags & EXPORT_IO_FAST_ZERO)) {
			/* ZERO_RANGE on a device may write zeroes: not fast. */
			io_start(e, io, notsup_cb, ST_ZERO_RANGE);
			io_uring_prep_nop(loop_sqe(io->loop, &io->op));
			return;
		}
		io_start(e, io, zero_cb, ST_ZERO_RANGE);
		fallocate_submit(io, FALLOC_FL_ZERO_RANGE |
				 (f->bdev ? 0 : FALLOC_FL_KEEP_SIZE));
		return;
	}
	io_start(e, io, zero_cb, ST_PUNCH);
	fallocate_submit(io, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}

/* ---- cache ---- */

static void cache_submit(struct export_io *io)
{
	struct file_export *f = io_export(io);
	uint64_t done = io->priv[P_DONE];
	uint64_t n = MIN(io->length - done, FILE_CACHE_STEP);
	struct io_uring_sqe *sqe = loop_sqe(io->loop, &io->op);

	io_uring_prep_fadvise(sqe, f->fd, io->offset + done, (off_t)n,
			      POSIX_FADV_WILLNEED);
	io->priv[P_DONE] = done + n;
}

static void cache_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);

	if (res >= 0 && io->priv[P_DONE] < io->length) {
		cache_submit(io);
		return;
	}
	io->done(io, res < 0 ? res : 0);
}

static void file_cache(struct export *e, struct export_io *io)
{
	io_start(e, io, cache_cb, ST_CACHE);
	if (io->length == 0) {
		io_uring_prep_nop(loop_sqe(io->loop, &io->op));
		return;
	}
	cache_submit(io);
}

/* ---- block status ---- */

static void extents_work(struct workq_job *job)
{
	struct export_io *io = container_of(job, struct export_io, job);
	struct file_export *f = io_export(io);
	uint64_t pos = io->offset, end = io->offset + io->length;
	uint32_t n = 0;
	int err = f->bdev ? -ENOTSUP : 0;

	while (!err && pos < end && n < io->max_extents) {
		off_t d, h;
		uint64_t stop;
		uint32_t fl;

		d = lseek(f->fd, (off_t)pos, SEEK_DATA);
		if (d < 0 && errno == ENXIO) {
			d = (off_t)end;         /* only a hole up to EOF */
		} else if (d < 0) {
			err = -errno;
			break;
		}
		if ((uint64_t)d > pos) {
			stop = MIN((uint64_t)d, end);
			fl = EXPORT_EXTENT_HOLE | EXPORT_EXTENT_ZERO;
		} else {
			h = lseek(f->fd, (off_t)pos, SEEK_HOLE);
			if (h < 0) {
				err = -errno;
				break;
			}
			stop = MIN((uint64_t)h, end);
			if (stop <= pos)        /* raced with a truncate */
				stop = end;
			fl = 0;
		}
		if (n && io->extents[n - 1].flags == fl)
			io->extents[n - 1].length += stop - pos;
		else
			io->extents[n++] = (struct export_extent){ stop - pos, fl };
		pos = stop;
	}
	if (err && n == 0) {
		/* No SEEK_DATA here: everything is data. */
		io->extents[0] = (struct export_extent){ io->length, 0 };
		n = 1;
	}
	io->n_extents = n;
	io->priv[P_DONE] = 0;
}

static void extents_done(struct workq_job *job)
{
	struct export_io *io = container_of(job, struct export_io, job);

	io->done(io, 0);
}

static void file_block_status(struct export *e, struct export_io *io)
{
	struct file_export *f = (struct file_export *)e;

	io->priv[P_EXPORT] = (uintptr_t)e;
	io->job.work = extents_work;
	io->job.done = extents_done;
	io->job.loop = io->loop;
	workq_submit(f->wq, &io->job);
}

/* ---- lifetime ---- */

static int file_close(struct export *e)
{
	struct file_export *f = (struct file_export *)e;
	int r = 0;

	if (f->writers_up)
		workq_fini(&f->writers);        /* idle: no op is in flight */
	if (!(e->flags & EXPORT_READ_ONLY) && fdatasync(f->fd) < 0)
		r = -errno;
	if (f->map)
		munmap(f->map, e->size);
	close(f->fd);
	free(f->zeroes);
	free(e->name);
	free(e->desc);
	free(f);
	return r;
}

static int file_splice_fd(struct export *e)
{
	return ((struct file_export *)e)->fd;
}

static const uint8_t *file_map(struct export *e, uint64_t off, uint64_t len)
{
	struct file_export *f = (struct file_export *)e;
	struct stat st;

	if (!f->map)
		return NULL;
	if (!f->bdev && (fstat(f->fd, &st) < 0 || st.st_size < 0 ||
			 (uint64_t)st.st_size < off + len))
		return NULL;
	return f->map;
}

/* One lseek(SEEK_HOLE): the next hole at or past the range's end (a block
 * device has none).  The extents of a range whose pages were just found
 * cached, or that is about to be read, are in the file system's extent
 * cache, so this does not wait for the disk in practice. */
static bool file_all_data(struct export *e, uint64_t off, uint64_t len)
{
	struct file_export *f = (struct file_export *)e;
	off_t h;

	if (f->bdev)
		return true;
	h = lseek(f->fd, (off_t)off, SEEK_HOLE);
	return h >= 0 && (uint64_t)h >= off + len;
}

static const struct export_ops file_ops = {
	.kind = "file",
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.trim = file_trim,
	.zero = file_zero,
	.cache = file_cache,
	.block_status = file_block_status,
	.splice_fd = file_splice_fd,
	.map = file_map,
	.all_data = file_all_data,
	.close = file_close,
};

int export_file_open(const char *spec, struct workq *wq, struct export **out,
		     char *err, size_t errlen)
{
	struct file_export *f = NULL;
	const char *eq = strchr(spec, '=');
	char *path = NULL, *opts, *tok;
	bool ro = false;
	char *desc = NULL;
	struct stat st;
	int r;

	*out = NULL;
	if (!eq) {
		snprintf(err, errlen, "'%s': expected NAME=PATH[,ro][,desc=TEXT]", spec);
		return -EINVAL;
	}
	if ((size_t)(eq - spec) > 4096) {
		snprintf(err, errlen, "export name longer than 4096 bytes");
		return -EINVAL;
	}
	path = strdup(eq + 1);
	f = calloc(1, sizeof(*f));
	if (!path || !f) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	f->fd = -1;
	/* PATH[,ro][,desc=TEXT]: desc runs to the end (it may hold commas). */
	opts = strchr(path, ',');
	if (opts)
		*opts++ = '\0';
	while (opts && *opts) {
		if (!strncmp(opts, "desc=", 5)) {
			desc = opts + 5;
			break;
		}
		tok = opts;
		opts = strchr(opts, ',');
		if (opts)
			*opts++ = '\0';
		if (!strcmp(tok, "ro")) {
			ro = true;
		} else if (!strcmp(tok, "rw")) {
			ro = false;
		} else {
			snprintf(err, errlen, "'%s': unknown option '%s'", spec, tok);
			r = -EINVAL;
			goto fail;
		}
	}
	if (desc && strlen(desc) > 4096) {
		snprintf(err, errlen, "export description longer than 4096 bytes");
		r = -EINVAL;
		goto fail;
	}
	if (!*path) {
		snprintf(err, errlen, "'%s': empty path", spec);
		r = -EINVAL;
		goto fail;
	}
	f->base.ops = &file_ops;
	f->base.name = strndup(spec, (size_t)(eq - spec));
	f->base.desc = desc ? strdup(desc) : NULL;
	f->zeroes = ro ? NULL : calloc(1, FILE_ZERO_BUF);
	if (!f->base.name || (desc && !f->base.desc) || (!ro && !f->zeroes)) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	f->fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (f->fd < 0) {
		r = -errno;
		if (r == -ENOENT)
			snprintf(err, errlen, "'%s': no such file", path);
		else
			snprintf(err, errlen, "'%s': %s", path, strerror(-r));
		goto fail;
	}
	if (fstat(f->fd, &st) < 0) {
		r = -errno;
		snprintf(err, errlen, "'%s': %s", path, strerror(-r));
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		f->base.size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		uint64_t sz;

		if (ioctl(f->fd, BLKGETSIZE64, &sz) < 0) {
			r = -errno;
			snprintf(err, errlen, "'%s': BLKGETSIZE64: %s", path,
				 strerror(-r));
			goto fail;
		}
		f->base.size = sz;
		f->bdev = true;
	} else {
		snprintf(err, errlen, "'%s': not a regular file or block device", path);
		r = -ENODEV;
		goto fail;
	}
	f->wq = wq;
	if (!ro) {
		r = workq_init(&f->writers, FILE_WRITERS);
		if (r < 0) {
			snprintf(err, errlen, "cannot start writer threads: %s",
				 strerror(-r));
			goto fail;
		}
		f->writers_up = true;
	}
	f->base.flags = EXPORT_CAN_MULTI_CONN | EXPORT_CAN_CACHE |
			EXPORT_CAN_EXTENTS;
	if (ro)
		f->base.flags |= EXPORT_READ_ONLY;
	else
		f->base.flags |= EXPORT_CAN_TRIM | EXPORT_CAN_ZERO |
				 EXPORT_CAN_FAST_ZERO;
	f->base.pref_block = 4096;
	if (f->base.size && f->base.size <= SIZE_MAX) {
		void *m = mmap(NULL, (size_t)f->base.size, PROT_READ, MAP_SHARED,
			       f->fd, 0);

		f->map = m == MAP_FAILED ? NULL : m;
	}
	free(path);
	*out = &f->base;
	return 0;
fail:
	if (f) {
		if (f->writers_up)
			workq_fini(&f->writers);
		if (f->fd >= 0)
			close(f->fd);
		free(f->zeroes);
		free(f->base.name);
		free(f->base.desc);
		free(f);
	}
	free(path);
	return r;
}
