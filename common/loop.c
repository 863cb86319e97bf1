/*
 * loop.c — one io_uring per thread, completions dispatched to callbacks.
 *
 * The ring is set up SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN when the
 * kernel accepts it (task work then runs only when this thread waits, which
 * is exactly when we are ready to process completions), falling back to a
 * plain ring otherwise.  Submission is lazy: loop_sqe() only fills SQEs; they
 * go to the kernel in one io_uring_submit_and_wait() per loop iteration, so a
 * batch of completions that queue new work costs one system call.
 *
 * Cross-thread messages: other threads append to a mutex-protected list and
 * write the eventfd only when the list was empty; the loop keeps one read of
 * the eventfd armed and drains the whole list when it completes.
 *
 * Nothing posted is dropped: a message is a hand-off of ownership (a
 * request to answer, memory to free), so loop_fini() first runs every
 * message still queued — also those posted by the last completions of a
 * shutdown sequence after its final loop_run_once() — and the messages
 * they post in turn.  SQEs those callbacks queue are never submitted: at
 * fini a message may end or free its work, not start new I/O.
 */
#include "common/common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void loop_arm_wake(struct loop *l);

static void loop_wake_done(struct loop_op *op, int res, uint32_t flags)
{
	struct loop *l = container_of(op, struct loop, wake_op);

	(void)flags;
	if (res < 0 && res != -EINTR && res != -ECANCELED)
		log_error("loop: eventfd read failed: %s", strerror(-res));
	if (res == -ECANCELED)
		return;                 /* loop_fini() is tearing down */

	loop_arm_wake(l);
	loop_run_posts(l);
}

static struct loop_msg *loop_take_posts(struct loop *l)
{
	struct loop_msg *m;

	pthread_mutex_lock(&l->post_lock);
	m = l->post_head;
	l->post_head = l->post_tail = NULL;
	pthread_mutex_unlock(&l->post_lock);
	return m;
}

int loop_run_posts(struct loop *l)
{
	struct loop_msg *m = loop_take_posts(l);
	int n = 0;

	while (m) {
		struct loop_msg *next = m->next;

		m->next = NULL;
		m->fn(m);
		m = next;
		n++;
	}
	return n;
}

static void loop_arm_wake(struct loop *l)
{
	struct io_uring_sqe *sqe = loop_sqe(l, &l->wake_op);

	io_uring_prep_read(sqe, l->wake_fd, &l->wake_buf, sizeof(l->wake_buf), 0);
}

int loop_init(struct loop *l, unsigned entries)
{
	struct io_uring_params p;
	int r;

	memset(l, 0, sizeof(*l));
	l->wake_fd = -1;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
	p.flags |= IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	r = io_uring_queue_init_params(entries, &l->ring, &p);
	if (r == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4;
		r = io_uring_queue_init_params(entries, &l->ring, &p);
	}
	if (r < 0)
		return r;
	l->ring_flags = p.flags;
	(void)io_uring_register_ring_fd(&l->ring);   /* optional speed-up */

	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wake_fd < 0) {
		r = -errno;
		io_uring_queue_exit(&l->ring);
		return r;
	}
	pthread_mutex_init(&l->post_lock, NULL);
	l->wake_op.cb = loop_wake_done;
	loop_arm_wake(l);
	return 0;
}

void loop_fini(struct loop *l)
{
	if (l->wake_fd >= 0) {
		while (loop_run_posts(l) > 0)
			;
		io_uring_queue_exit(&l->ring);
		close(l->wake_fd);
		pthread_mutex_destroy(&l->post_lock);
		l->wake_fd = -1;
	}
}

struct io_uring_sqe *loop_sqe(struct loop *l, struct loop_op *op)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&l->ring)))
		io_uring_submit(&l->ring);
	io_uring_prep_nop(sqe);         /* zero the fields users rely on */
	io_uring_sqe_set_data(sqe, op);
	return sqe;
}

static int loop_reap(struct loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int total = 0;

	/* Callbacks may queue SQEs, never consume CQEs, so iterating in place
	 * and advancing once is safe. */
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		struct loop_op *op = io_uring_cqe_get_data(cqe);

		if (op)
			op->cb(op, cqe->res, cqe->flags);
		n++;
		if (n == 64) {          /* let the kernel reuse CQ space */
			io_uring_cq_advance(&l->ring, n);
			total += n;
			n = 0;
		}
	}
	io_uring_cq_advance(&l->ring, n);
	return total + (int)n;
}

int loop_run_once(struct loop *l, uint64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	int r;

	if (timeout_ns == 0) {
		r = io_uring_submit(&l->ring);
		if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
			return r;
		if (l->ring_flags & IORING_SETUP_DEFER_TASKRUN)
			(void)io_uring_get_events(&l->ring);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ns / 1000000000ull,
			.tv_nsec = timeout_ns % 1000000000ull,
		};
		r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY &&
		    r != -EAGAIN)
			return r;
	}
	return loop_reap(l);
}

int loop_run(struct loop *l)
{
	l->stop = false;
	while (!l->stop) {
		int r = io_uring_submit_and_wait(&l->ring, 1);

		if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
			log_error("loop: io_uring_submit_and_wait: %s", strerror(-r));
			return r;
		}
		loop_reap(l);
	}
	return 0;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

void loop_post(struct loop *l, struct loop_msg *msg)
{
	bool was_empty;

	msg->next = NULL;
	pthread_mutex_lock(&l->post_lock);
	was_empty = l->post_head == NULL;
	if (l->post_tail)
		l->post_tail->next = msg;
	else
		l->post_head = msg;
	l->post_tail = msg;
	pthread_mutex_unlock(&l->post_lock);

	if (was_empty) {
		uint64_t one = 1;
		ssize_t w;

		do {
			w = write(l->wake_fd, &one, sizeof(one));
		} while (w < 0 && errno == EINTR);
		/* EAGAIN means the counter is saturated: a wake-up is pending
		 * anyway. */
	}
}

static void loop_timer_done(struct loop_op *op, int res, uint32_t flags)
{
	struct loop_timer *t = container_of(op, struct loop_timer, op);

	t->armed = false;
	t->cb(op, res, flags);
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t ns, loop_cb *cb)
{
	struct io_uring_sqe *sqe;

	t->op.cb = loop_timer_done;
	t->cb = cb;
	t->ts.tv_sec = ns / 1000000000ull;
	t->ts.tv_nsec = ns % 1000000000ull;
	t->armed = true;
	sqe = loop_sqe(l, &t->op);
	io_uring_prep_timeout(sqe, &t->ts, 0, 0);
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	struct io_uring_sqe *sqe;

	if (!t->armed)
		return;
	sqe = loop_sqe(l, NULL);
	io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&t->op, 0);
}
