/*
 * check_common.c — unit tests for common/: parsing, the io_uring loop
 * (operations, timers, cross-thread posts) and the worker queue.
 */
#include "common/common.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_parse_u64)
{
	uint64_t v;

	ck_assert_int_eq(parse_u64("0", &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(parse_u64("18446744073709551615", &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert_int_eq(parse_u64("18446744073709551616", &v), -ERANGE);
	ck_assert_int_eq(parse_u64("0x10", &v), 0);
	ck_assert_uint_eq(v, 16);
	ck_assert_int_eq(parse_u64("", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("0x", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("-1", &v), -EINVAL);
	ck_assert_int_eq(parse_u64(" 1", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("1 ", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("12a", &v), -EINVAL);
}
END_TEST

START_TEST(test_parse_size)
{
	uint64_t v;

	ck_assert_int_eq(parse_size("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(parse_size("64K", &v), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert_int_eq(parse_size("1GiB", &v), 0);
	ck_assert_uint_eq(v, 1ull << 30);
	ck_assert_int_eq(parse_size("2t", &v), 0);
	ck_assert_uint_eq(v, 2ull << 40);
	ck_assert_int_eq(parse_size("16E", &v), -ERANGE);
	ck_assert_int_eq(parse_size("K", &v), -EINVAL);
	ck_assert_int_eq(parse_size("1X", &v), -EINVAL);
	ck_assert_int_eq(parse_size("1Kx", &v), -EINVAL);
	ck_assert_int_eq(parse_size("", &v), -EINVAL);
	ck_assert_int_eq(parse_size("99999999999999999999999999999999", &v), -ERANGE);
}
END_TEST

struct rw_op {
	struct loop_op op;
	int res;
	int calls;
};

static void rw_done(struct loop_op *op, int res, uint32_t flags)
{
	struct rw_op *o = container_of(op, struct rw_op, op);

	(void)flags;
	o->res = res;
	o->calls++;
}

START_TEST(test_loop_write_read)
{
	struct loop l;
	struct rw_op w = { .op.cb = rw_done }, r = { .op.cb = rw_done };
	char path[] = "/tmp/check_common.XXXXXX";
	char out[64];
	int fd;

	ck_assert_int_eq(loop_init(&l, 64), 0);
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);

	io_uring_prep_write(loop_sqe(&l, &w.op), fd, "hello loop", 10, 0);
	while (w.calls == 0)
		ck_assert_int_ge(loop_run_once(&l, 1000000000ull), 0);
	ck_assert_int_eq(w.res, 10);

	io_uring_prep_read(loop_sqe(&l, &r.op), fd, out, sizeof(out), 0);
	while (r.calls == 0)
		ck_assert_int_ge(loop_run_once(&l, 1000000000ull), 0);
	ck_assert_int_eq(r.res, 10);
	ck_assert_int_eq(memcmp(out, "hello loop", 10), 0);

	/* an error arrives as -errno in the callback */
	r.calls = 0;
	io_uring_prep_read(loop_sqe(&l, &r.op), -1, out, sizeof(out), 0);
	while (r.calls == 0)
		ck_assert_int_ge(loop_run_once(&l, 1000000000ull), 0);
	ck_assert_int_eq(r.res, -EBADF);
	close(fd);
	loop_fini(&l);
}
END_TEST

struct tctx {
	struct loop_timer t;
	struct loop *l;
	int res;
	int calls;
};

static void timer_fired(struct loop_op *op, int res, uint32_t flags)
{
	struct tctx *c = container_of(op, struct tctx, t.op);

	(void)flags;
	c->res = res;
	c->calls++;
	loop_stop(c->l);
}

START_TEST(test_loop_timer)
{
	struct loop l;
	struct tctx c = { .l = &l };
	uint64_t t0;

	ck_assert_int_eq(loop_init(&l, 16), 0);
	t0 = now_ns();
	loop_timer_arm(&l, &c.t, 20000000ull, timer_fired);
	ck_assert(c.t.armed);
	ck_assert_int_eq(loop_run(&l), 0);
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.res, -ETIME);
	ck_assert(!c.t.armed);
	ck_assert_uint_ge(now_ns() - t0, 19000000ull);

	/* cancelled before expiry: callback with -ECANCELED, promptly */
	c.calls = 0;
	t0 = now_ns();
	loop_timer_arm(&l, &c.t, 10ull * 1000000000ull, timer_fired);
	loop_timer_cancel(&l, &c.t);
	ck_assert_int_eq(loop_run(&l), 0);
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.res, -ECANCELED);
	ck_assert_uint_lt(now_ns() - t0, 5ull * 1000000000ull);
	loop_fini(&l);
}
END_TEST

#define NJOBS 1000

struct sumjob {
	struct workq_job job;
	unsigned in;
	unsigned long long out;
	pthread_t worker;
};

static struct loop *g_loop;
static unsigned g_done;

static void sum_work(struct workq_job *job)
{
	struct sumjob *s = container_of(job, struct sumjob, job);
	unsigned long long acc = 0;
	unsigned i;

	for (i = 0; i <= s->in; i++)
		acc += i;
	s->out = acc;
	s->worker = pthread_self();
}

static void sum_done(struct workq_job *job)
{
	(void)job;
	if (++g_done == NJOBS)
		loop_stop(g_loop);
}

START_TEST(test_workq_roundtrip)
{
	static struct sumjob jobs[NJOBS];
	struct workq wq;
	struct loop l;
	unsigned i;
	bool other_thread = false;

	ck_assert_int_eq(loop_init(&l, 16), 0);
	ck_assert_int_eq(workq_init(&wq, 2), 0);
	g_loop = &l;
	g_done = 0;
	for (i = 0; i < NJOBS; i++) {
		jobs[i].in = i;
		jobs[i].job.work = sum_work;
		jobs[i].job.done = sum_done;
		jobs[i].job.loop = &l;
		workq_submit(&wq, &jobs[i].job);
	}
	ck_assert_int_eq(loop_run(&l), 0);
	ck_assert_uint_eq(g_done, NJOBS);
	for (i = 0; i < NJOBS; i++) {
		ck_assert_uint_eq(jobs[i].out, (unsigned long long)i * (i + 1) / 2);
		if (!pthread_equal(jobs[i].worker, pthread_self()))
			other_thread = true;
	}
	ck_assert(other_thread);
	workq_fini(&wq);
	loop_fini(&l);
}
END_TEST

struct post_rec {
	struct loop_msg msg;
	struct loop_msg chained;        /* posted by msg's callback */
	struct loop *l;
	int *ran;
	char *owned;                    /* freed by the callback: LSan sees a drop */
};

static void post_chained_fn(struct loop_msg *m)
{
	struct post_rec *p = container_of(m, struct post_rec, chained);

	(*p->ran) += 10;
}

static void post_fn(struct loop_msg *m)
{
	struct post_rec *p = container_of(m, struct post_rec, msg);

	(*p->ran)++;
	free(p->owned);
	p->owned = NULL;
	p->chained.fn = post_chained_fn;
	loop_post(p->l, &p->chained);
}

static void *post_thread(void *arg)
{
	struct post_rec *p = arg;

	loop_post(p->l, &p->msg);
	return NULL;
}

/* A message posted after the owner's last loop_run_once (a shutdown's last
 * completion) is still run by loop_fini, and so is one it posts. */
START_TEST(test_loop_fini_runs_posts)
{
	struct loop l;
	struct post_rec p[2];
	int ran = 0;
	pthread_t th;

	ck_assert_int_eq(loop_init(&l, 8), 0);
	ck_assert_int_ge(loop_run_once(&l, 0), 0);
	for (int i = 0; i < 2; i++) {
		memset(&p[i], 0, sizeof(p[i]));
		p[i].l = &l;
		p[i].ran = &ran;
		p[i].msg.fn = post_fn;
		p[i].owned = malloc(64);
		ck_assert_ptr_nonnull(p[i].owned);
	}
	loop_post(&l, &p[0].msg);
	ck_assert_int_eq(pthread_create(&th, NULL, post_thread, &p[1]), 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	loop_fini(&l);
	ck_assert_int_eq(ran, 22);
	ck_assert_ptr_null(p[0].owned);
	ck_assert_ptr_null(p[1].owned);
	loop_fini(&l);                  /* idempotent */
	ck_assert_int_eq(ran, 22);
}
END_TEST

/* loop_run_posts runs what is queued now, without a wake-up completion. */
START_TEST(test_loop_run_posts)
{
	struct loop l;
	struct post_rec p;
	int ran = 0;

	ck_assert_int_eq(loop_init(&l, 8), 0);
	memset(&p, 0, sizeof(p));
	p.l = &l;
	p.ran = &ran;
	p.msg.fn = post_fn;
	loop_post(&l, &p.msg);
	ck_assert_int_eq(loop_run_posts(&l), 1);
	ck_assert_int_eq(ran, 1);
	ck_assert_int_eq(loop_run_posts(&l), 1);        /* the chained one */
	ck_assert_int_eq(ran, 11);
	ck_assert_int_eq(loop_run_posts(&l), 0);
	loop_fini(&l);
	ck_assert_int_eq(ran, 11);
}
END_TEST


int main(void)
{
	Suite *s = suite_create("common");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_u64);
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_loop_write_read);
	tcase_add_test(tc, test_loop_timer);
	tcase_add_test(tc, test_workq_roundtrip);
	tcase_add_test(tc, test_loop_fini_runs_posts);
	tcase_add_test(tc, test_loop_run_posts);
	suite_add_tcase(s, tc);
	return check_run(s);
}
