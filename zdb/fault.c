/*
 * fault.c — a backend that wraps another and injects faults, for tests.
 *
 * Every request goes through a shadow request the wrapper allocates, so the
 * wrapper sees the inner completion before the caller does (to corrupt a GET
 * payload) and a dropped request can be answered -ETIMEDOUT at its deadline
 * even though the inner backend never saw it.  Faults (struct zdb_fault):
 *   fail      complete at once with -EIO
 *   drop      hold the request until its deadline, then -ETIMEDOUT
 *   blackhole drop every request
 *   corrupt   flip one byte of a successful GET's payload
 *   delay     submit to the inner backend only after delay_ns
 *   down      the pool sees the backend DOWN (state BACKOFF) and every
 *             request fails -ENOTCONN at once, as a lost connection
 * The state the pool reads (state, dialect, inflight, …) mirrors the inner
 * backend's at every tick, except that a blackholed backend keeps claiming
 * READY: exactly the "up but silent" failure hedging must route around.
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fault_be {
	struct zdb_backend b;           /* first */
	struct zdb_backend *inner;
	struct zdb_fault f;
	uint64_t rng;
	unsigned pending;               /* shadows not yet completed */
	struct fault_shadow *held;      /* dropped, waiting for the deadline */
	bool stopping, inner_stopped, stopped_sent;
};

struct fault_shadow {
	struct zdb_req req;             /* what the inner backend gets */
	struct zdb_req *orig;
	struct fault_be *fb;
	struct fault_shadow *next;
	bool delayed;
};

static uint32_t fault_rand(struct fault_be *fb)
{
	fb->rng ^= fb->rng << 13;
	fb->rng ^= fb->rng >> 7;
	fb->rng ^= fb->rng << 17;
	return (uint32_t)(fb->rng >> 11);
}

static bool fault_roll(struct fault_be *fb, unsigned permille)
{
	return permille && fault_rand(fb) % 1000 < permille;
}

static void fault_maybe_stopped(struct fault_be *fb)
{
	if (fb->stopping && fb->inner_stopped && !fb->pending && !fb->stopped_sent) {
		fb->stopped_sent = true;
		fb->b.state = ZDB_CONN_STOPPED;
		if (fb->b.stopped)
			fb->b.stopped(&fb->b);
	}
}

/* Hand the result to the caller (we are in a loop callback). */
static void fault_finish(struct fault_shadow *s, int res)
{
	struct fault_be *fb = s->fb;
	struct zdb_req *o = s->orig;

	if (res > 0 && o->op == ZDB_OP_GET && fault_roll(fb, fb->f.corrupt_permille))
		((unsigned char *)o->buf)[fault_rand(fb) % (unsigned)res] ^= 0x5a;
	fb->pending--;
	o->refused = s->req.refused;
	memcpy(o->msg, s->req.msg, sizeof(o->msg));
	free(s);
	o->result = res;
	o->done(o);
	fault_maybe_stopped(fb);
}

static void fault_inner_done(struct zdb_req *r)
{
	fault_finish(container_of(r, struct fault_shadow, req), r->result);
}

static void fault_defer_done(struct loop_op *op, int res, uint32_t flags)
{
	struct fault_shadow *s = container_of(op, struct fault_shadow, req.defer_op);

	(void)res; (void)flags;
	fault_finish(s, s->req.result);
}

static void fault_complete_later(struct fault_shadow *s, int res)
{
	struct io_uring_sqe *sqe;

	s->req.result = res;
	s->req.defer_op.cb = fault_defer_done;
	sqe = loop_sqe(s->fb->b.loop, &s->req.defer_op);
	io_uring_prep_nop(sqe);
}

static void fault_delay_done(struct loop_op *op, int res, uint32_t flags)
{
	struct fault_shadow *s = container_of(op, struct fault_shadow, req.timer.op);
	struct fault_be *fb = s->fb;

	(void)flags;
	if (res == -ECANCELED || fb->stopping) {
		fault_finish(s, -ECANCELED);
		return;
	}
	fb->inner->ops->submit(fb->inner, &s->req);
}

static void fault_submit(struct zdb_backend *b, struct zdb_req *r)
{
	struct fault_be *fb = (struct fault_be *)b;
	struct fault_shadow *s;

	r->be = b;
	r->refused = false;
	r->msg[0] = 0;
	r->start_ns = now_ns();
	r->deadline_ns = r->start_ns + (r->timeout_ns ? r->timeout_ns : fb->inner->timeout_ns);
	s = calloc(1, sizeof(*s));
	if (!s) {
		zdb_req_complete_later(b->loop, r, -ENOMEM);
		return;
	}
	s->req = *r;
	s->req.done = fault_inner_done;
	s->req.priv = s;
	s->orig = r;
	s->fb = fb;
	fb->pending++;
	if (fb->stopping) {
		fault_complete_later(s, -ECANCELED);
		return;
	}
	if (fb->f.down) {
		fault_complete_later(s, -ENOTCONN);
		return;
	}
	if (fault_roll(fb, fb->f.fail_permille)) {
		int e = fb->f.fail_err < 0 ? fb->f.fail_err : -EIO;

		/* like a server's "no" while up (zdb_req.refused) */
		s->req.refused = e == -ENOSPC || e == -EROFS || e == -EACCES;
		fault_complete_later(s, e);
		return;
	}
	if (fb->f.blackhole || fault_roll(fb, fb->f.drop_permille)) {
		s->next = fb->held;
		fb->held = s;
		return;
	}
	if (fb->f.delay_ns) {
		s->delayed = true;
		loop_timer_arm(b->loop, &s->req.timer, fb->f.delay_ns, fault_delay_done);
		return;
	}
	fb->inner->ops->submit(fb->inner, &s->req);
}

static void fault_mirror(struct fault_be *fb)
{
	struct zdb_backend *in = fb->inner;

	if (!fb->stopping && fb->f.down)
		fb->b.state = ZDB_CONN_BACKOFF;
	else if (!fb->stopping)
		fb->b.state = fb->f.blackhole && in->state != ZDB_CONN_IDLE ? ZDB_CONN_READY
			      : in->state;
	fb->b.dialect = in->dialect;
	fb->b.connects = in->connects;
	fb->b.canary_missing = in->canary_missing;
	fb->b.emptied = in->emptied;
	fb->b.inflight = in->inflight;
	fb->b.oldest_inflight_ns = in->oldest_inflight_ns;
	memcpy(fb->b.last_error, in->last_error, sizeof(fb->b.last_error));
	if (fb->held) {
		struct fault_shadow *s;
		uint64_t oldest = UINT64_MAX;

		for (s = fb->held; s; s = s->next)
			oldest = MIN(oldest, s->orig->start_ns);
		fb->b.oldest_inflight_ns = in->oldest_inflight_ns ?
			MIN(in->oldest_inflight_ns, oldest) : oldest;
	}
}

static void fault_tick(struct zdb_backend *b, uint64_t now)
{
	struct fault_be *fb = (struct fault_be *)b;
	struct fault_shadow **pp, *s;

	if (fb->inner->ops->tick)
		fb->inner->ops->tick(fb->inner, now);
	for (pp = &fb->held; (s = *pp);) {
		if (now > s->orig->deadline_ns) {
			*pp = s->next;
			fault_complete_later(s, -ETIMEDOUT);
			continue;
		}
		pp = &s->next;
	}
	fault_mirror(fb);
}

static void fault_inner_event(struct zdb_backend *inner, int ev)
{
	struct fault_be *fb = inner->owner;

	fault_mirror(fb);
	if (fb->b.on_event)
		fb->b.on_event(&fb->b, ev);
}

static void fault_inner_stopped(struct zdb_backend *inner)
{
	struct fault_be *fb = inner->owner;

	fb->inner_stopped = true;
	fault_maybe_stopped(fb);
}

static int fault_start(struct zdb_backend *b)
{
	struct fault_be *fb = (struct fault_be *)b;
	int r = fb->inner->ops->start(fb->inner);

	fault_mirror(fb);
	return r;
}

static void fault_stop(struct zdb_backend *b)
{
	struct fault_be *fb = (struct fault_be *)b;
	struct fault_shadow *s;

	if (fb->stopping)
		return;
	fb->stopping = true;
	while ((s = fb->held)) {
		fb->held = s->next;
		fault_complete_later(s, -ECANCELED);
	}
	fb->inner->ops->stop(fb->inner);
}

static void fault_destroy(struct zdb_backend *b)
{
	struct fault_be *fb = (struct fault_be *)b;

	fb->inner->ops->destroy(fb->inner);
	free(fb);
}

static const struct zdb_backend_ops fault_ops = {
	.kind = "fault",
	.start = fault_start,
	.submit = fault_submit,
	.tick = fault_tick,
	.stop = fault_stop,
	.destroy = fault_destroy,
};

struct zdb_backend *zdb_fault_wrap(struct zdb_backend *inner)
{
	struct fault_be *fb;

	if (!inner)
		return NULL;
	fb = calloc(1, sizeof(*fb));
	if (!fb) {
		inner->ops->destroy(inner);
		return NULL;
	}
	fb->b.ops = &fault_ops;
	fb->b.loop = inner->loop;
	fb->b.cfg = inner->cfg;
	fb->b.depth = inner->depth;
	fb->b.timeout_ns = inner->timeout_ns;
	fb->b.connect_timeout_ns = inner->connect_timeout_ns;
	fb->inner = inner;
	fb->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)fb;
	inner->owner = fb;
	inner->on_event = fault_inner_event;
	inner->stopped = fault_inner_stopped;
	fault_mirror(fb);
	return &fb->b;
}

void zdb_fault_set(struct zdb_backend *wrapper, const struct zdb_fault *f)
{
	struct fault_be *fb = (struct fault_be *)wrapper;

	if (wrapper->ops != &fault_ops)
		return;
	fb->f = *f;
	fault_mirror(fb);
}

/* The wrapped backend (for pool settings that must reach it). */
struct zdb_backend *zdb_fault_inner(struct zdb_backend *wrapper);
struct zdb_backend *zdb_fault_inner(struct zdb_backend *wrapper)
{
	return wrapper->ops == &fault_ops ? ((struct fault_be *)wrapper)->inner : wrapper;
}
