/*
 * export_vol.c — a thin volume's view behind struct export_ops.
 *
 *   export op        vol/ call
 *   read             vol_read
 *   write            vol_write   (FUA → VOL_IO_FUA)
 *   flush            vol_flush   (objstore flush + one shared metadata
 *                                 commit: covers every connection's writes,
 *                                 hence CAN_MULTI_CONN)
 *   trim, zero       vol_trim, vol_zero (whole chunks become holes; NO_HOLE
 *                                 is advisory: the range reads as zeroes
 *                                 either way)
 *   block_status     vol_block_status (synchronous, metadata only):
 *                    unallocated chunks are holes that read as zeroes
 *   cache            vol_prefetch (the chunks' objects into the SSD
 *                                 cache; holes skipped)
 *
 * Each data op allocates one struct vol_io (io->priv[0]); its completion
 * frees it and calls io->done.  When that allocation fails, or for the
 * synchronous block status, the result is delivered through a NOP on the
 * reactor's ring, since export ops must never complete inside the call.
 *
 * Sequential read-ahead: a read that starts where the session's previous
 * read ended extends a streak; from the second one on, the chunks up to a
 * window past the read's end are prefetched on the warm thread
 * (warm_readahead), each chunk asked for once per streak.  The window
 * starts at EV_RA_CHUNKS chunks and grows by one chunk per chunk the
 * stream crosses, up to EV_RA_BYTES (at least one chunk): a long stream
 * keeps about EV_RA_BYTES of fetches ahead of the client, enough to fill
 * the cache's fetch slots (SSD_FETCH_MAX) and the pool's depth, while a
 * short one does not fetch far past its end.  Requests go out in batches
 * of a quarter of the window (one view open and one message per batch,
 * not per chunk); one the warm thread drops (WARM_RA_MAX in flight) is
 * asked for again by the next read; a read that breaks the streak resets
 * the window.  The hit path pays a comparison and, once per batch, one
 * posted message.
 *
 * One export per NBD session (the resolver opens one per GO), so a view
 * lives exactly as long as the connection that uses it; `vol rm` of a
 * volume a client is connected to is refused (-EBUSY) by vol/ itself.  The
 * size is the view's size at open.  Snapshot views are read-only.
 */
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EV_RA_CHUNKS 4
#define EV_RA_STREAK 2
#define EV_RA_BYTES  (32ull << 20)

struct vol_export {
	struct export base;             /* first: e->ops */
	struct vol_view *view;
	struct warm *warm;              /* read-ahead; NULL: none */
	uint64_t chunk;
	uint64_t next_off;              /* where a sequential read starts */
	uint64_t ra_end;                /* read-ahead asked for up to here */
	uint64_t ra_win;                /* window, chunks */
	uint64_t ra_max;                /* its bound, chunks */
	unsigned streak;
};

static struct vol_view *export_view(struct export *e)
{
	return ((struct vol_export *)e)->view;
}

/* Deliver res later, from the ring. */
static void nop_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct export_io *io = container_of(op, struct export_io, op);

	io->done(io, (int)(intptr_t)io->priv[1]);
}

static void complete_later(struct export_io *io, int res)
{
	io->priv[1] = (uint64_t)(intptr_t)res;
	io->op.cb = nop_cb;
	io_uring_prep_nop(loop_sqe(io->loop, &io->op));
}

static void vio_cb(struct vol_io *vio, int res)
{
	struct export_io *io = vio->priv;

	free(vio);
	io->done(io, res);
}

static void submit(struct export *e, struct export_io *io,
		   void (*fn)(struct vol_view *, struct vol_io *), uint32_t flags)
{
	struct vol_io *vio = calloc(1, sizeof(*vio));

	if (!vio) {
		complete_later(io, -ENOMEM);
		return;
	}
	vio->loop = io->loop;
	vio->cb = vio_cb;
	vio->off = io->offset;
	vio->len = io->length;
	vio->buf = io->buf;
	vio->flags = flags;
	vio->priv = io;
	fn(export_view(e), vio);
}

static uint32_t fua(const struct export_io *io)
{
	return (io->flags & EXPORT_IO_FUA) ? VOL_IO_FUA : 0;
}

static void ev_readahead(struct vol_export *ve, const struct export_io *io)
{
	uint64_t end = io->offset + io->length, want, cend, batch;

	if (io->offset != ve->next_off || !io->length) {
		ve->streak = 0;
		ve->ra_end = 0;
		ve->ra_win = MIN(EV_RA_CHUNKS, ve->ra_max);
		ve->next_off = end;
		return;
	}
	/* chunks crossed by this read grow the window */
	ve->ra_win = MIN(ve->ra_max, ve->ra_win + end / ve->chunk - io->offset / ve->chunk);
	ve->next_off = end;
	if (++ve->streak < EV_RA_STREAK)
		return;
	cend = (end + ve->chunk - 1) / ve->chunk * ve->chunk;
	want = MIN(ve->base.size, cend + ve->ra_win * ve->chunk);
	if (ve->ra_end < cend)
		ve->ra_end = cend;
	batch = MAX(1, ve->ra_win / 4) * ve->chunk;
	if ((want >= ve->ra_end + batch ||
	     (want == ve->base.size && want > ve->ra_end)) &&
	    warm_readahead(ve->warm, ve->base.name, ve->ra_end, want - ve->ra_end))
		ve->ra_end = want;      /* dropped (warm thread busy): next read */
}

static void ev_read(struct export *e, struct export_io *io)
{
	struct vol_export *ve = (struct vol_export *)e;

	if (ve->warm)
		ev_readahead(ve, io);
	submit(e, io, vol_read, 0);
}

static void ev_write(struct export *e, struct export_io *io)
{
	submit(e, io, vol_write, fua(io));
}

static void ev_cache(struct export *e, struct export_io *io)
{
	submit(e, io, vol_prefetch, 0);
}

static void ev_flush(struct export *e, struct export_io *io)
{
	submit(e, io, vol_flush, 0);
}

static void ev_trim(struct export *e, struct export_io *io)
{
	submit(e, io, vol_trim, fua(io));
}

static void ev_zero(struct export *e, struct export_io *io)
{
	submit(e, io, vol_zero, fua(io));
}

static void ev_block_status(struct export *e, struct export_io *io)
{
	struct vol_extent ext[64];
	size_t max = io->flags & EXPORT_IO_REQ_ONE ? 1 : MIN(io->max_extents, ARRAY_SIZE(ext));
	int n, i;

	if (max == 0)
		max = 1;
	n = vol_block_status(export_view(e), io->offset, io->length, ext, max);
	if (n > 0) {
		for (i = 0; i < n; i++) {
			io->extents[i].length = ext[i].len;
			io->extents[i].flags = (ext[i].flags & VOL_EXT_HOLE)
				? EXPORT_EXTENT_HOLE | EXPORT_EXTENT_ZERO : 0;
		}
		io->n_extents = (uint32_t)n;
	} else if (n == 0) {
		n = -EIO;
	}
	complete_later(io, n < 0 ? n : 0);
}

static int ev_close(struct export *e)
{
	struct vol_export *ve = (struct vol_export *)e;

	vol_view_close(ve->view);
	free(ve->base.name);
	free(ve);
	return 0;
}

static const struct export_ops vol_export_ops = {
	.kind = "vol",
	.read = ev_read,
	.write = ev_write,
	.flush = ev_flush,
	.trim = ev_trim,
	.zero = ev_zero,
	.block_status = ev_block_status,
	.cache = ev_cache,
	.close = ev_close,
};

int export_vol_open(struct vol_pool *p, struct warm *warm, const char *spec,
		    struct export **out)
{
	struct vol_export *ve = calloc(1, sizeof(*ve));
	int r;

	*out = NULL;
	if (!ve || !(ve->base.name = strdup(spec))) {
		free(ve);
		return -ENOMEM;
	}
	r = vol_view_open(p, spec, &ve->view);
	if (r < 0) {
		free(ve->base.name);
		free(ve);
		return r;
	}
	ve->base.ops = &vol_export_ops;
	ve->warm = warm;
	ve->chunk = vol_view_chunk_size(ve->view);
	ve->ra_max = MAX(1, EV_RA_BYTES / ve->chunk);
	ve->ra_win = MIN(EV_RA_CHUNKS, ve->ra_max);
	ve->base.size = vol_view_size(ve->view);
	ve->base.pref_block = 4096;
	ve->base.flags = EXPORT_CAN_EXTENTS | EXPORT_CAN_MULTI_CONN | EXPORT_CAN_CACHE;
	if (vol_view_readonly(ve->view))
		ve->base.flags |= EXPORT_READ_ONLY;
	else
		ve->base.flags |= EXPORT_CAN_TRIM | EXPORT_CAN_ZERO;
	*out = &ve->base;
	return 0;
}
