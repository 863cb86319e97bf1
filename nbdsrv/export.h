/*
 * export.h — what the NBD server serves: a byte range with asynchronous
 * read / write / flush / trim / zero / cache / block-status operations.
 *
 * An export is an ops table plus an instance (the instance struct holds the
 * `const struct export_ops *` as its first member, in the manner of nbdkit's
 * allocators and ublksrv's target types).  The file export (export_file.c)
 * serves regular files and block devices; thin volumes (vol/) will plug in
 * behind the same table.
 *
 * Threads.  An export is shared by every reactor thread.  Each I/O op is
 * called on a reactor thread with that reactor's loop in io->loop, and must
 * complete by calling io->done(io, res) on the same thread, later — never
 * from inside the op call itself (the caller is not re-entrant there).  The
 * op must not block the thread: use the loop (io_uring) for I/O and the
 * export's workq for anything that has to block.  Ops on one export may run
 * concurrently on several threads; FLUSH covers every write that completed
 * before it started, whichever thread or connection issued it (this is what
 * lets the server advertise NBD_FLAG_CAN_MULTI_CONN).
 *
 * Buffers.  io->buf belongs to the caller; the export reads it (WRITE) or
 * fills it (READ, exactly io->length bytes) and must not touch it after
 * done() is called.  Requests arrive already validated: offset + length
 * never exceeds size, read-only exports never see writes, and an op whose
 * capability bit is clear is never called.
 *
 * Results.  done() gets 0 on success or -errno; the server maps errno to
 * NBD errors in one place (nbd_errno_to_nbd).
 */
#ifndef NBDSRV_EXPORT_H
#define NBDSRV_EXPORT_H

#include "common/common.h"

#include <stdint.h>

struct export;
struct export_io;

/* Capability bits of struct export.flags. */
#define EXPORT_READ_ONLY   (1u << 0)  /* writes, trims, zeroes refused */
#define EXPORT_CAN_TRIM    (1u << 1)  /* ops->trim */
#define EXPORT_CAN_ZERO    (1u << 2)  /* ops->zero */
#define EXPORT_CAN_FAST_ZERO (1u << 3) /* ops->zero honours EXPORT_IO_FAST_ZERO */
#define EXPORT_CAN_CACHE   (1u << 4)  /* ops->cache */
#define EXPORT_CAN_EXTENTS (1u << 5)  /* ops->block_status */
#define EXPORT_CAN_MULTI_CONN (1u << 6) /* flush covers all connections */
#define EXPORT_ROTATIONAL  (1u << 7)

/* Flags of struct export_io.flags. */
#define EXPORT_IO_FUA       (1u << 0) /* durable before done() */
#define EXPORT_IO_NO_HOLE   (1u << 1) /* zero: must stay allocated */
#define EXPORT_IO_FAST_ZERO (1u << 2) /* zero: fail with -ENOTSUP unless fast */
#define EXPORT_IO_REQ_ONE   (1u << 3) /* block_status: one extent suffices */

/* One extent of a block-status answer (base:allocation semantics). */
struct export_extent {
	uint64_t length;
	uint32_t flags;         /* EXPORT_EXTENT_HOLE | EXPORT_EXTENT_ZERO */
};
#define EXPORT_EXTENT_HOLE (1u << 0)
#define EXPORT_EXTENT_ZERO (1u << 1)

typedef void export_done_fn(struct export_io *io, int res);

/* One I/O request.  The caller fills the public part and owns the struct
 * until done() runs; the export may use `op`, `job` and `priv` freely. */
struct export_io {
	struct loop *loop;      /* the calling reactor's loop */
	export_done_fn *done;   /* completion, called on loop's thread */
	uint64_t offset;
	uint64_t length;
	void *buf;              /* READ / WRITE data, length bytes */
	uint32_t flags;         /* EXPORT_IO_* */
	/* block_status: the caller provides room for max_extents; the export
	 * fills n_extents >= 1 extents starting at offset, covering at most
	 * length bytes in total. */
	struct export_extent *extents;
	uint32_t max_extents;
	uint32_t n_extents;
	/* private to the export while the op is in flight */
	struct loop_op op;
	struct workq_job job;
	uint64_t priv[4];
};

struct export_ops {
	const char *kind;       /* "file", "vol", ... (for status output) */
	/* Required.  Read io->length bytes at io->offset into io->buf. */
	void (*read)(struct export *e, struct export_io *io);
	/* Required unless EXPORT_READ_ONLY.  Write io->buf; with
	 * EXPORT_IO_FUA, durable before done(). */
	void (*write)(struct export *e, struct export_io *io);
	/* Required.  Make every write completed so far durable. */
	void (*flush)(struct export *e, struct export_io *io);
	/* Optional (EXPORT_CAN_TRIM).  Discard a range: reads may then return
	 * anything (the file export returns zeroes). */
	void (*trim)(struct export *e, struct export_io *io);
	/* Optional (EXPORT_CAN_ZERO).  The range reads as zeroes afterwards;
	 * may punch holes unless EXPORT_IO_NO_HOLE. */
	void (*zero)(struct export *e, struct export_io *io);
	/* Optional (EXPORT_CAN_CACHE).  Prefetch a range; advisory. */
	void (*cache)(struct export *e, struct export_io *io);
	/* Optional (EXPORT_CAN_EXTENTS).  Describe allocation from
	 * io->offset; without it everything is reported as data. */
	void (*block_status)(struct export *e, struct export_io *io);
	/* Optional.  A descriptor whose bytes at the export's offsets are its
	 * content (a regular file or block device, open for reading), so that
	 * a server may splice(2) reads from it instead of calling read; -1
	 * when reads must go through ops->read.  Owned by the export. */
	int (*splice_fd)(struct export *e);
	/* Optional.  The export's content mapped read-only (size bytes), or
	 * NULL — also when [off, off+len) is no longer wholly inside the file
	 * (shrunk by another process: that read must take ops->read, which
	 * reports the error).  Only for handing to the kernel (e.g. as sendmsg
	 * data): a page past a shrunk file's end must not be touched in user
	 * space (SIGBUS).  A syscall; owned by the export. */
	const uint8_t *(*map)(struct export *e, uint64_t off, uint64_t len);
	/* Optional, with splice_fd or map.  True when [off, off+len) holds no
	 * hole, so a reply sent without hole detection (one data chunk) loses
	 * nothing; false when it may (or on any doubt).  Cheap, but a
	 * syscall: called on a reactor only for large reads. */
	bool (*all_data)(struct export *e, uint64_t off, uint64_t len);
	/* Required.  Called once, on the main thread, after every reactor has
	 * stopped: flush (blocking is allowed here), release everything and
	 * free e.  Returns 0 or the flush's -errno. */
	int (*close)(struct export *e);
};

struct export {
	const struct export_ops *ops;   /* first member */
	char *name;             /* export name, owned */
	char *desc;             /* description or NULL, owned */
	uint64_t size;          /* bytes; fixed for the export's lifetime */
	uint32_t flags;         /* EXPORT_* capabilities */
	uint32_t pref_block;    /* preferred I/O size (NBD_INFO_BLOCK_SIZE) */
};

/* Open a file or block device export from a CLI spec "NAME=PATH[,ro]
 * [,desc=TEXT]".  wq (borrowed, outlives the export) runs blocking
 * lookups.  Returns 0 and *out, or -errno with a message in err[errlen]:
 * -EINVAL means the spec itself is malformed (a usage error), anything
 * else that the export could not be opened. */
int export_file_open(const char *spec, struct workq *wq, struct export **out,
		     char *err, size_t errlen);

static inline int export_close(struct export *e)
{
	return e->ops->close(e);
}

#endif /* NBDSRV_EXPORT_H */
