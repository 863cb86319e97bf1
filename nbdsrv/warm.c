/*
 * warm.c — `nbdsrv vol warm NAME[@SNAP]`: bring a whole volume or snapshot
 * into the SSD cache in the background, rate-limited, with progress.
 *
 *   control thread                         warm thread (own loop)
 *   warm_add(spec, rate) ──queue──►  job: vol_view_open(spec)
 *                                         ├─ vol_prefetch one chunk at a
 *                                         │  time, WARM_INFLIGHT in flight,
 *                                         │  issued bytes <= rate x elapsed
 *                                         │  (+ one chunk of burst)
 *                                         └─ vol_view_close
 *   warm_status() ◄── done/total/state under the lock
 *
 * Jobs run one after the other, in the order asked.  The job holds a view
 * of its volume while it runs, which would make `vol rm` of that volume
 * refuse; so `vol rm` first stops the volume's jobs (warm_stop: queued ones
 * at once, the running one after its chunks in flight, the caller waiting
 * for its view to close), state "stopped", reason "volume removed".  A job
 * is marked running (under the lock) before the thread opens its view, so a
 * stop never misses a view about to open.  Progress counts logical
 * bytes (holes are skipped by vol_prefetch and count as done at once).
 * The first failed chunk fails the job (its message is kept for status);
 * the daemon's shutdown stops a running job after its chunks in flight.
 * The last WARM_KEEP finished jobs stay listed in status.
 *
 * Sequential read-ahead (warm_readahead, from export_vol.c on a reactor)
 * runs on the same thread and loop: the reactor posts {spec, range}; the
 * thread opens a view of its own, vol_prefetch()es the range and closes
 * the view.  Its own view, not the session's, so a session may end while
 * its read-ahead is in flight; at most WARM_RA_MAX requests in flight, more
 * are dropped (read-ahead is advisory; export_vol.c batches a stream's
 * chunks, a quarter of its window per request, so WARM_RA_MAX requests
 * cover several streams' windows).  The thread idles in its loop
 * (polling the job queue every 100 ms) and exits only once no read-ahead
 * is in flight, before the volume pool and the cache close.
 */
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WARM_INFLIGHT 4
#define WARM_KEEP     8
#define WARM_RA_MAX   16

enum warm_state { WARM_QUEUED, WARM_RUNNING, WARM_DONE, WARM_FAILED, WARM_STOPPED };

static const char *const warm_state_names[] = {
	"queued", "running", "done", "failed", "stopped",
};

struct warm_job {
	struct warm_job *next;
	uint64_t id;
	char spec[2 * VOL_NAME_MAX + 2];
	uint64_t rate;                  /* bytes/s, 0 = unlimited */
	uint64_t total, done;
	uint64_t t0, t1;                /* ns: start, end */
	enum warm_state state;
	bool cancel;                    /* warm_stop: stop after the chunks in flight */
	char error[200];
	char reason[64];                /* why it was stopped */
};

struct warm {
	struct vol_pool *p;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool stop;
	bool ready;                     /* the thread set lr */
	int lr;                         /* its loop_init result */
	unsigned ra_inflight;           /* atomic */
	uint64_t next_id;
	struct warm_job *jobs;          /* oldest first */
	struct loop loop;
};

struct warm_io {
	struct vol_io io;
	struct warm_job *job;
	unsigned *inflight;
	int *err;
	struct warm *w;
};

static void warm_io_done(struct vol_io *io, int res)
{
	struct warm_io *wi = container_of(io, struct warm_io, io);

	pthread_mutex_lock(&wi->w->lock);
	wi->job->done += io->len;
	if (res < 0 && !*wi->err) {
		*wi->err = res;
		snprintf(wi->job->error, sizeof(wi->job->error),
			 "chunk at %llu: %s", (unsigned long long)io->off, strerror(-res));
	}
	pthread_mutex_unlock(&wi->w->lock);
	(*wi->inflight)--;
	io->len = 0;                    /* free slot */
}

static void warm_run(struct warm *w, struct warm_job *j)
{
	struct warm_io wio[WARM_INFLIGHT];
	struct vol_view *v;
	uint64_t off = 0, cs, issued = 0, total;
	unsigned inflight = 0, i;
	int err = 0, r;

	r = vol_view_open(w->p, j->spec, &v);
	pthread_mutex_lock(&w->lock);
	if (r < 0) {
		j->state = WARM_FAILED;
		snprintf(j->error, sizeof(j->error), "%s", vol_last_error());
		j->t1 = now_ns();
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->lock);
		return;
	}
	j->total = total = vol_view_size(v);
	j->t0 = now_ns();
	pthread_mutex_unlock(&w->lock);
	cs = vol_view_chunk_size(v);
	memset(wio, 0, sizeof(wio));
	for (;;) {
		bool stop = __atomic_load_n(&w->stop, __ATOMIC_RELAXED) ||
			    __atomic_load_n(&j->cancel, __ATOMIC_RELAXED);
		uint64_t wait_ns = 50ull * 1000 * 1000;

		while (inflight < WARM_INFLIGHT && off < total && !stop && !err) {
			if (j->rate) {
				uint64_t el = now_ns() - j->t0;
				unsigned __int128 allowed =
					(unsigned __int128)j->rate * el / 1000000000u + cs;

				if (issued >= allowed) {
					wait_ns = MAX(1000000ull, (uint64_t)((unsigned __int128)
						(issued + cs - allowed) * 1000000000u / j->rate));
					wait_ns = MIN(wait_ns, 100ull * 1000 * 1000);
					break;
				}
			}
			for (i = 0; wio[i].io.len; i++)
				;
			memset(&wio[i], 0, sizeof(wio[i]));
			wio[i].job = j;
			wio[i].inflight = &inflight;
			wio[i].err = &err;
			wio[i].w = w;
			wio[i].io.loop = &w->loop;
			wio[i].io.cb = warm_io_done;
			wio[i].io.off = off;
			wio[i].io.len = MIN(cs - off % cs, total - off);
			off += wio[i].io.len;
			issued += wio[i].io.len;
			inflight++;
			vol_prefetch(v, &wio[i].io);
		}
		if (!inflight && (off >= total || stop || err))
			break;
		if (loop_run_once(&w->loop, wait_ns) < 0 && !inflight)
			break;
	}
	vol_view_close(v);
	pthread_mutex_lock(&w->lock);
	j->t1 = now_ns();
	j->state = err ? WARM_FAILED : off < total ? WARM_STOPPED : WARM_DONE;
	pthread_cond_broadcast(&w->cv);         /* warm_stop waits for this */
	pthread_mutex_unlock(&w->lock);
	log_info("warm %s: %s, %llu of %llu bytes", j->spec, warm_state_names[j->state],
		 (unsigned long long)j->done, (unsigned long long)total);
}

/* Drop finished jobs beyond the newest WARM_KEEP.  Lock held. */
static void warm_trim(struct warm *w)
{
	struct warm_job **pp, *j;
	unsigned fin = 0;

	for (j = w->jobs; j; j = j->next)
		fin += j->state >= WARM_DONE;
	for (pp = &w->jobs; (j = *pp) && fin > WARM_KEEP;) {
		if (j->state >= WARM_DONE) {
			*pp = j->next;
			free(j);
			fin--;
		} else {
			pp = &j->next;
		}
	}
}

static void *warm_thread(void *arg)
{
	struct warm *w = arg;
	/* the ring is single-issuer: created by the thread that uses it */
	int lr = loop_init(&w->loop, 64);

	if (lr < 0)
		log_error("warm-up thread: io_uring: %s (vol warm will fail)",
			  strerror(-lr));
	pthread_mutex_lock(&w->lock);
	w->lr = lr;
	w->ready = true;
	pthread_cond_broadcast(&w->cv);
	for (;;) {
		struct warm_job *j;

		for (j = w->jobs; j && j->state != WARM_QUEUED; j = j->next)
			;
		if (w->stop && !__atomic_load_n(&w->ra_inflight, __ATOMIC_ACQUIRE))
			break;
		if (j && lr < 0) {
			j->state = WARM_FAILED;
			snprintf(j->error, sizeof(j->error), "no io_uring: %s", strerror(-lr));
			continue;
		}
		if (j && !w->stop) {
			j->state = WARM_RUNNING;        /* its view is about to open */
			j->t0 = now_ns();
			pthread_mutex_unlock(&w->lock);
			warm_run(w, j);
			pthread_mutex_lock(&w->lock);
			warm_trim(w);
			continue;
		}
		pthread_mutex_unlock(&w->lock);
		if (lr < 0)
			usleep(100 * 1000);
		else
			loop_run_once(&w->loop, 100ull * 1000 * 1000);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	if (lr == 0)
		loop_fini(&w->loop);
	return NULL;
}

struct warm_ra {
	struct loop_msg msg;
	struct warm *w;
	struct vol_view *v;
	struct vol_io io;
	char spec[];
};

static void ra_free(struct warm_ra *r)
{
	struct warm *w = r->w;

	if (r->v)
		vol_view_close(r->v);
	free(r);
	__atomic_fetch_sub(&w->ra_inflight, 1, __ATOMIC_RELEASE);
}

static void ra_done(struct vol_io *io, int res)
{
	(void)res;              /* advisory: a failed fetch is retried by the read */
	ra_free(container_of(io, struct warm_ra, io));
}

static void ra_start(struct loop_msg *m)
{
	struct warm_ra *r = container_of(m, struct warm_ra, msg);

	if (vol_view_open(r->w->p, r->spec, &r->v) < 0) {
		r->v = NULL;
		ra_free(r);
		return;
	}
	r->io.loop = &r->w->loop;
	r->io.cb = ra_done;
	vol_prefetch(r->v, &r->io);
}

bool warm_readahead(struct warm *w, const char *spec, uint64_t off, uint64_t len)
{
	struct warm_ra *r;
	size_t n = strlen(spec) + 1;

	if (!w || w->lr < 0 || __atomic_load_n(&w->stop, __ATOMIC_RELAXED))
		return false;
	if (__atomic_fetch_add(&w->ra_inflight, 1, __ATOMIC_ACQ_REL) >= WARM_RA_MAX ||
	    !(r = calloc(1, sizeof(*r) + n))) {
		__atomic_fetch_sub(&w->ra_inflight, 1, __ATOMIC_RELEASE);
		return false;
	}
	r->w = w;
	memcpy(r->spec, spec, n);
	r->io.off = off;
	r->io.len = len;
	r->msg.fn = ra_start;
	loop_post(&w->loop, &r->msg);
	return true;
}

int warm_open(struct vol_pool *p, struct warm **out)
{
	struct warm *w = calloc(1, sizeof(*w));
	int r;

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->p = p;
	w->next_id = 1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cv, NULL);
	r = -pthread_create(&w->thread, NULL, warm_thread, w);
	if (r < 0)
		goto fail;
	pthread_mutex_lock(&w->lock);
	while (!w->ready)
		pthread_cond_wait(&w->cv, &w->lock);
	pthread_mutex_unlock(&w->lock);
	w->started = true;
	*out = w;
	return 0;
fail:
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cv);
	free(w);
	return r;
}

void warm_close(struct warm *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	__atomic_store_n(&w->stop, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	while (w->jobs) {
		struct warm_job *j = w->jobs;

		w->jobs = j->next;
		free(j);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cv);
	free(w);
}

int warm_add(struct warm *w, const char *spec, uint64_t rate, uint64_t *id,
	     char *err, size_t errlen)
{
	struct warm_job *j, **pp;
	struct vol_view *v;
	int r;

	if (strlen(spec) >= sizeof(j->spec)) {
		snprintf(err, errlen, "name too long");
		return -EINVAL;
	}
	r = vol_view_open(w->p, spec, &v);     /* unknown names fail here */
	if (r < 0) {
		snprintf(err, errlen, "%s", vol_last_error());
		return r;
	}
	vol_view_close(v);
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	snprintf(j->spec, sizeof(j->spec), "%s", spec);
	j->rate = rate;
	pthread_mutex_lock(&w->lock);
	j->id = *id = w->next_id++;
	for (pp = &w->jobs; *pp; pp = &(*pp)->next)
		;
	*pp = j;
	pthread_mutex_unlock(&w->lock);     /* the thread polls every 100 ms */
	return 0;
}

/* Does spec ("vol" or "vol@snap") name a view of volume vol? */
static bool warm_of(const char *spec, const char *vol)
{
	size_t n = strlen(vol);

	return !strncmp(spec, vol, n) && (!spec[n] || spec[n] == '@');
}

unsigned warm_stop(struct warm *w, const char *vol, const char *reason)
{
	struct warm_job *j;
	unsigned n = 0;
	bool running;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	for (j = w->jobs; j; j = j->next) {
		if (j->state > WARM_RUNNING || !warm_of(j->spec, vol))
			continue;
		snprintf(j->reason, sizeof(j->reason), "%s", reason);
		if (j->state == WARM_QUEUED) {
			j->state = WARM_STOPPED;
			j->t0 = j->t1 = now_ns();
		} else {
			__atomic_store_n(&j->cancel, true, __ATOMIC_RELAXED);
		}
		n++;
	}
	do {
		/* by spec, not pointer: the thread may free a finished job */
		running = false;
		for (j = w->jobs; j; j = j->next)
			running |= j->state == WARM_RUNNING && j->cancel &&
				   warm_of(j->spec, vol);
		if (running)
			pthread_cond_wait(&w->cv, &w->lock);
	} while (running);
	warm_trim(w);
	pthread_mutex_unlock(&w->lock);
	if (n)
		log_info("warm: %u job(s) of %s stopped: %s", n, vol, reason);
	return n;
}

json_t *warm_status(struct warm *w)
{
	json_t *a = json_array();
	struct warm_job *j;
	uint64_t now = now_ns();

	if (!a)
		return NULL;
	pthread_mutex_lock(&w->lock);
	for (j = w->jobs; j; j = j->next) {
		uint64_t el = j->state == WARM_QUEUED ? 0 : (j->t1 ? j->t1 : now) - j->t0;
		json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:f}",
				      "id", (json_int_t)j->id, "spec", j->spec,
				      "state", warm_state_names[j->state],
				      "done", (json_int_t)j->done, "total", (json_int_t)j->total,
				      "rate_limit", (json_int_t)j->rate,
				      "rate", (json_int_t)(el ? (uint64_t)((double)j->done * 1e9 / (double)el) : 0),
				      "seconds", (double)el / 1e9);

		if (o && j->error[0])
			json_object_set_new(o, "error", json_string(j->error));
		if (o && j->reason[0])
			json_object_set_new(o, "reason", json_string(j->reason));
		if (o)
			json_array_append_new(a, o);
	}
	pthread_mutex_unlock(&w->lock);
	return a;
}
