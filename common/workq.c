/*
 * workq.c — a small pool of worker threads for CPU-heavy jobs (encryption,
 * erasure coding, checksums).  Reactors never block on it: workq_submit()
 * only appends to a list; a worker runs job->work(), then hands the job back
 * to the submitting loop with loop_post(), where job->done() runs.
 *
 * The queue is an intrusive list, so submitting allocates nothing; how many
 * jobs may be outstanding is bounded by the callers (each stage bounds its
 * own in-flight work, DESIGN.md "Every queue between stages is bounded").
 */
#include "common/common.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static void workq_post_done(struct loop_msg *msg)
{
	struct workq_job *job = container_of(msg, struct workq_job, msg);

	job->done(job);
}

static void *workq_thread(void *arg)
{
	struct workq *wq = arg;

	for (;;) {
		struct workq_job *job;

		pthread_mutex_lock(&wq->lock);
		while (!wq->head && !wq->stopping)
			pthread_cond_wait(&wq->cond, &wq->lock);
		job = wq->head;
		if (!job) {             /* stopping and drained */
			pthread_mutex_unlock(&wq->lock);
			return NULL;
		}
		wq->head = job->next;
		if (!wq->head)
			wq->tail = NULL;
		pthread_mutex_unlock(&wq->lock);

		job->next = NULL;
		job->work(job);
		if (job->done) {
			job->msg.fn = workq_post_done;
			loop_post(job->loop, &job->msg);
		}
	}
}

int workq_init(struct workq *wq, unsigned nthreads)
{
	unsigned i;
	int r;

	if (nthreads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = n > 0 ? (unsigned)n : 1;
	}
	pthread_mutex_init(&wq->lock, NULL);
	pthread_cond_init(&wq->cond, NULL);
	wq->head = wq->tail = NULL;
	wq->stopping = false;
	wq->threads = calloc(nthreads, sizeof(*wq->threads));
	if (!wq->threads)
		return -ENOMEM;
	for (i = 0; i < nthreads; i++) {
		r = pthread_create(&wq->threads[i], NULL, workq_thread, wq);
		if (r) {
			wq->nthreads = i;
			workq_fini(wq);
			return -r;
		}
	}
	wq->nthreads = nthreads;
	return 0;
}

void workq_fini(struct workq *wq)
{
	unsigned i;

	if (!wq->threads)
		return;
	pthread_mutex_lock(&wq->lock);
	wq->stopping = true;
	pthread_cond_broadcast(&wq->cond);
	pthread_mutex_unlock(&wq->lock);
	for (i = 0; i < wq->nthreads; i++)
		pthread_join(wq->threads[i], NULL);
	free(wq->threads);
	wq->threads = NULL;
	pthread_cond_destroy(&wq->cond);
	pthread_mutex_destroy(&wq->lock);
}

void workq_submit(struct workq *wq, struct workq_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&wq->lock);
	if (wq->tail)
		wq->tail->next = job;
	else
		wq->head = job;
	wq->tail = job;
	pthread_cond_signal(&wq->cond);
	pthread_mutex_unlock(&wq->lock);
}
