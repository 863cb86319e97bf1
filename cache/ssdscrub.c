/*
 * ssdscrub.c — the ssdcache's scrub: find pool versions that lost
 * redundancy behind the daemon's back and hand them to the repair path.
 *
 * Why.  The flusher repairs what it knows is degraded (a put that stored
 * fewer than k+m shards, ssdflush.c "Degraded writes and repair").  A
 * backend that comes back empty (restarted blank: its canary is gone,
 * ZDB_EV_EMPTIED), or that lost or corrupted some values, leaves every
 * version with a shard there one failure closer to loss, and nothing else
 * ever looks.  A scrub looks.
 *
 * What it does.  It walks META_T_CACHE_INDEX in key order, SCRUB_BATCH
 * records per read section (memory: one batch, not the whole index; the
 * cursor is the last key seen, so records added or deleted meanwhile are
 * simply met or not), and for each record with a pool version that is not
 * a hole checks its k+m shards on their recorded backends:
 *   - placement NOWHERE (a degraded write): missing;
 *   - the backend is DOWN: down (the put of a repair avoids it);
 *   - shallow: EXISTS key (redis and 0-db both answer :1 / :0);
 *     deep: GET key, then codec_verify_shard with the AEAD tag / MAC
 *     (full), so a value overwritten with anything else is bad;
 *   - no answer (timeout, error): counted as an error, not as a loss (a
 *     slow backend must not make the scrub rewrite the pool).
 * A version with a shard missing, bad or down is marked for repair exactly
 * as a degraded write is: e->repair on the repair list and the REPAIR flag
 * of its record, staged with the next index flush (ssd_mark_dirty).  Its
 * entry is loaded from the index if the object is evicted (ssd_find_load);
 * the repair job reads the object through the miss path, which rebuilds it
 * from any k good shards, then writes a new version with all k+m shards
 * and collects the old one.  A record whose version changed since the
 * batch was read (rewritten meanwhile) is left alone.  Only the versions
 * this cache's index names are scrubbed: another node's published
 * snapshots are that node's to scrub.
 *
 * Fewer than k+m backends up.  A repair writes a new version with k+m
 * shards on k+m distinct backends, so while fewer than k+m are not DOWN
 * (the mission's 20 servers with 16+4 and one of them down) no repair can
 * run, and before this file knew it the 64 repairs it queued stalled the
 * walk until the backend came back.  Now a damaged version found then is
 * not queued: it is counted as waiting (scrub_waiting; logged once per
 * scrub, with the count in the summary), and the walk goes on, so the
 * rest of the pool is still checked and the scrub ends (`nbdsrv scrub
 * --wait` exits 3: degraded).  Memory stays bounded: a count, not a list.
 * When the scrub ends with versions waiting, the cache thread's tick
 * scrubs again (same depth) as soon as k+m backends are up: the versions
 * on a backend that was only down are then found whole (nothing is
 * rewritten for a transient outage), the others are queued and repaired.
 * A restart forgets the wait: the next scrub finds them.
 *
 * Rate limit.  A deep scrub reads every shard of the pool, which competes
 * with clients for the backends' disks and the network; it reads at most
 * scrub_rate bytes per second (pool.conf, default 64 MiB/s, 0 =
 * unlimited; `nbdsrv scrub --rate` for one run), as Ceph bounds its deep
 * scrubs.  A token bucket on the cache thread: before a record's check
 * starts, tokens accrue at the rate since the last look (capped at a
 * tenth of a second's worth); a check starts only with tokens > 0 and
 * takes its k+m shards' maximum size (so any rate progresses, a record at
 * a time, the debt paid back before the next); otherwise the walk waits
 * for the tick (50 ms) and scrub_throttled counts it.  No thread sleeps.
 * A shallow scrub (EXISTS, a few bytes per shard) is bounded only by its
 * concurrency (SCRUB_PAR records): not limited.
 *
 * Bounds (client I/O keeps going).  SCRUB_PAR records in flight (k+m
 * requests each), and, while a repair can run, the walk pauses while
 * SCRUB_REPAIR_MAX objects wait for repair (their entries stay in memory
 * until rewritten), resumed by the cache thread's tick.  Deep verification (CRC, then the AEAD tag or the
 * parity MAC: a decryption's worth of CPU per shard) runs on the cache's
 * workq, never on the cache thread, one record at a time with one codec
 * context of the scrub's own, so a deep scrub takes at most one worker
 * from the flusher and the miss path; memory: SCRUB_PAR records' values
 * (k+m x codec_shard_max each).
 *
 * Threads.  Everything runs on the cache thread, which owns the pool;
 * ssdcache_scrub_start only posts.  Counters live in s->st under the lock.
 * One scrub at a time: a start while one runs is -EBUSY; an emptied
 * backend while one runs makes it run once more when it ends (the shards
 * it checked before may be gone).  At close the pool cancels the requests
 * in flight; their completions free their checks and start nothing.
 */
#include "cache/ssd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define SCRUB_BATCH      64u
#define SCRUB_PAR        4u
#define SCRUB_REPAIR_MAX 64u
#define SCRUB_LOG_MAX    16u            /* versions logged one by one */

struct scrub_rec {
	uint64_t obj;
	struct ssd_prec p;
};

struct scrub_chk;

struct scrub_sreq {
	struct zdb_req req;
	struct scrub_chk *c;
	unsigned idx;
	uint8_t key[SSD_SKEY_LEN];
	uint8_t *buf;                   /* deep: the value */
	size_t len;                     /* its length, when got */
	bool got;
};

/* one record being checked */
struct scrub_chk {
	struct ssd_scrub *sc;
	struct scrub_rec r;
	struct codec_meta cm;
	unsigned pending;
	unsigned missing, bad, down, errors;
	bool verify;                    /* deep: values got, to verify */
	struct workq_job job;           /* that verification */
	struct scrub_chk *vnext;        /* queue for it */
	struct scrub_sreq q[CODEC_MAX_SHARDS];
};

struct ssd_scrub {
	struct ssd *s;
	bool deep;
	bool eof;                       /* the walk reached the last record */
	uint8_t cursor[8];              /* last key read (0: none yet) */
	struct scrub_rec batch[SCRUB_BATCH];
	unsigned nbatch, next;
	unsigned inflight;
	struct codec_ctx *ctx;          /* deep: the verifying job's */
	struct scrub_chk *vq_head, *vq_tail; /* records to verify */
	bool verifying;                 /* a verification job runs */
	uint64_t t0;
	uint64_t nlogged;               /* repairs it queued and logged */
	bool wait_logged;               /* "waiting for backends" said */
	uint64_t rate;                  /* deep: bytes/s, 0 = unlimited */
	double tokens;                  /* its bucket */
	uint64_t tok_ns;                /* last refill */
};

static void scrub_pump(struct ssd_scrub *sc);
static void scrub_msg_run(struct loop_msg *m);
static void scrub_chk_ready(struct scrub_chk *c, bool pump);

/* Cache thread: read the next batch of records with a pool version. */
static int scrub_load(struct ssd_scrub *sc)
{
	struct ssd *s = sc->s;
	size_t rl = ssd_rec_len(s), kl;
	uint8_t kout[8], *val = malloc(rl + 1);
	uint64_t walked = 0;
	struct meta_txn *t;
	int r = 0;

	sc->nbatch = sc->next = 0;
	if (!val)
		return -ENOMEM;
	t = meta_rbegin(s->meta);
	if (!t) {
		free(val);
		return -EIO;
	}
	while (sc->nbatch < SCRUB_BATCH) {
		int vl = meta_seek(t, META_T_CACHE_INDEX, META_GT, sc->cursor, 8,
				   kout, 8, &kl, val, rl + 1);
		struct ssd_rec rec;

		if (vl == -ENOENT) {
			sc->eof = true;
			break;
		}
		if (vl < 0) {
			r = vl;
			break;
		}
		memcpy(sc->cursor, kout, 8);
		walked++;
		if (kl != 8 || (size_t)vl != rl)
			continue;
		memcpy(&rec, val, sizeof(rec));
		if (!rec.p.version || (rec.flags & (SSD_F_HOLE | SSD_F_DROPPED)))
			continue;
		sc->batch[sc->nbatch].obj = ssd_be64get(kout);
		sc->batch[sc->nbatch].p = rec.p;
		sc->nbatch++;
	}
	meta_end(t);
	free(val);
	/* records without shards are checked by being walked */
	pthread_mutex_lock(&s->lock);
	s->st.scrub_checked += walked - sc->nbatch;
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* lock held: a run is posted (scrub_msg) with its mode, and its figures
 * start from zero — for every start, also the run again after a backend
 * was emptied (its figures are its own, not added to the first run's). */
static void scrub_post_run(struct ssd *s, bool deep, uint64_t rate)
{
	s->scrub_posted = true;
	s->scrub_deep = deep;
	s->scrub_rate = rate;
	s->scrub_msg.fn = scrub_msg_run;
	s->st.scrub_running = 1;
	s->st.scrub_deep = deep;
	s->st.scrub_rate = deep ? rate : 0;
	s->st.scrub_waiting = s->st.scrub_bytes = s->st.scrub_throttled = 0;
	s->st.scrub_total = s->st.scrub_checked = s->st.scrub_shards = 0;
	s->st.scrub_missing = s->st.scrub_bad = s->st.scrub_down = 0;
	s->st.scrub_errors = s->st.scrub_queued = 0;
}

static void scrub_end(struct ssd_scrub *sc, int err)
{
	struct ssd *s = sc->s;
	bool again;

	pthread_mutex_lock(&s->lock);
	s->st.scrub_running = 0;
	s->st.scrub_runs++;
	again = s->scrub_again && !err && !s->stopping;
	s->scrub_again = false;
	if (err)
		log_error("ssdcache: scrub stopped: %s", strerror(-err));
	else
		log_info("ssdcache: scrub%s done in %.1f s: %" PRIu64 " records, %"
			 PRIu64 " shards checked, %" PRIu64 " missing, %" PRIu64
			 " bad, %" PRIu64 " on backends down, %" PRIu64
			 " unanswered; %" PRIu64 " versions queued for repair, %"
			 PRIu64 " waiting for k+m backends up",
			 sc->deep ? " (deep)" : "", (now_ns() - sc->t0) / 1e9,
			 s->st.scrub_checked, s->st.scrub_shards, s->st.scrub_missing,
			 s->st.scrub_bad, s->st.scrub_down, s->st.scrub_errors,
			 s->st.scrub_queued, s->st.scrub_waiting);
	if (!err && s->st.scrub_waiting && !s->stopping)
		s->scrub_rewait = sc->deep ? 2 : 1;
	if (again)
		scrub_post_run(s, false, 0);
	pthread_mutex_unlock(&s->lock);
	codec_ctx_free(sc->ctx);
	s->scrub = NULL;
	free(sc);
	if (again) {
		log_info("ssdcache: a backend was emptied during the scrub: "
			 "scrubbing again");
		loop_post(&s->loop, &s->scrub_msg);
	}
}

/* Cache thread: the verdict on one record (c is freed). */
static void scrub_chk_verdict(struct scrub_chk *c)
{
	struct ssd_scrub *sc = c->sc;
	struct ssd *s = sc->s;
	bool lost = c->missing || c->bad || c->down;
	bool wait = lost && !s->stopping && !ssdflush_pool_whole(s);
	uint64_t bytes = 0;

	for (unsigned i = 0; i < CODEC_MAX_SHARDS; i++)
		bytes += c->q[i].got ? c->q[i].len : 0;
	if (wait && !sc->wait_logged) {
		sc->wait_logged = true;
		log_warn("ssdcache: scrub: fewer than k+m = %u backends are up: "
			 "damaged versions cannot be repaired now (counted as "
			 "waiting; scrubbed again once %u backends are up)",
			 s->k + s->m, s->k + s->m);
	}
	pthread_mutex_lock(&s->lock);
	s->st.scrub_bytes += bytes;
	s->st.scrub_waiting += wait;
	s->st.scrub_checked++;
	s->st.scrub_missing += c->missing;
	s->st.scrub_bad += c->bad;
	s->st.scrub_down += c->down;
	s->st.scrub_errors += c->errors;
	if (lost && !s->stopping && !wait) {
		struct ssd_ent *e = ssd_find_load(s, c->r.obj);

		if (e && e->prec.version == c->r.p.version && !e->dropped) {
			e->pins++;
			s->st.scrub_queued++;
			if (!e->repair) {
				ssd_repair_set(s, e, true);
				ssd_mark_dirty(s, e);
				if (sc->nlogged < SCRUB_LOG_MAX)
					log_warn("ssdcache: scrub: object %" PRIu64
						 " version %" PRIu64 ": %u shard(s) "
						 "missing, %u bad, %u on backends down; "
						 "repair queued", c->r.obj,
						 c->r.p.version, c->missing, c->bad,
						 c->down);
				else if (sc->nlogged == SCRUB_LOG_MAX)
					log_warn("ssdcache: scrub: more versions queued "
						 "for repair (not logged one by one: "
						 "see the summary)");
				sc->nlogged++;
			}
			ssd_unpin(s, e);
			ssdflush_kick(s);
		}
	}
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < CODEC_MAX_SHARDS; i++)
		free(c->q[i].buf);
	free(c);
	sc->inflight--;
}

/* Worker: verify the values a deep check got (CRC, then tag / MAC). */
static void scrub_verify_work(struct workq_job *job)
{
	struct scrub_chk *c = container_of(job, struct scrub_chk, job);
	struct ssd_scrub *sc = c->sc;
	struct codec_id id = { .chunk = c->r.obj, .version = c->r.p.version };

	memcpy(id.pool, sc->s->pool_id, sizeof(id.pool));
	for (unsigned i = 0; i < CODEC_MAX_SHARDS; i++)
		if (c->q[i].got && codec_verify_shard(sc->ctx, &id, &c->cm, i,
						      c->q[i].buf, c->q[i].len,
						      true) != CODEC_SHARD_OK)
			c->bad++;
}

static void scrub_verify_next(struct ssd_scrub *sc);

/* Cache thread: a verification ended. */
static void scrub_verify_done(struct workq_job *job)
{
	struct scrub_chk *c = container_of(job, struct scrub_chk, job);
	struct ssd_scrub *sc = c->sc;

	sc->verifying = false;
	scrub_chk_verdict(c);
	scrub_verify_next(sc);
	scrub_pump(sc);
}

/* Cache thread: one verification at a time, on a worker (its CPU is not
 * the cache thread's, and one worker at most is a scrub's). */
static void scrub_verify_next(struct ssd_scrub *sc)
{
	struct scrub_chk *c = sc->vq_head;

	if (sc->verifying || !c || sc->s->stopping)
		return;
	sc->vq_head = c->vnext;
	if (!sc->vq_head)
		sc->vq_tail = NULL;
	sc->verifying = true;
	c->job.work = scrub_verify_work;
	c->job.done = scrub_verify_done;
	c->job.loop = &sc->s->loop;
	workq_submit(&sc->s->wq, &c->job);
}

/* Cache thread: every request of c answered: verify (deep) or judge;
 * pump unless the caller's loop goes on. */
static void scrub_chk_ready(struct scrub_chk *c, bool pump)
{
	struct ssd_scrub *sc = c->sc;

	if (c->verify && !sc->s->stopping) {
		if (sc->vq_tail)
			sc->vq_tail->vnext = c;
		else
			sc->vq_head = c;
		sc->vq_tail = c;
		scrub_verify_next(sc);
		return;
	}
	scrub_chk_verdict(c);
	if (pump)
		scrub_pump(sc);
}

static void scrub_req_done(struct zdb_req *req)
{
	struct scrub_sreq *q = container_of(req, struct scrub_sreq, req);
	struct scrub_chk *c = q->c;
	int r = req->result;

	if (r == -ENOENT || (req->op == ZDB_OP_EXISTS && r == 0)) {
		c->missing++;
	} else if (r == -ENOTCONN) {
		c->down++;
	} else if (r == -EMSGSIZE) {
		c->bad++;
	} else if (r < 0) {
		c->errors++;
	} else if (req->op == ZDB_OP_GET) {
		q->len = (size_t)r;
		q->got = c->verify = true;
	}
	if (!q->got) {
		free(q->buf);
		q->buf = NULL;
	}
	if (--c->pending == 0)
		scrub_chk_ready(c, true);
}

/* Cache thread: start checking record r's shards. */
static void scrub_chk_start(struct ssd_scrub *sc, const struct scrub_rec *r)
{
	struct ssd *s = sc->s;
	struct scrub_chk *c = calloc(1, sizeof(*c));
	unsigned n, i, nb = zdb_pool_size(s->pool);
	size_t smax = codec_shard_max(s->codec);

	if (!c) {
		pthread_mutex_lock(&s->lock);
		s->st.scrub_checked++;
		s->st.scrub_errors++;
		pthread_mutex_unlock(&s->lock);
		return;
	}
	c->sc = sc;
	c->r = *r;
	n = s->k + s->m;
	if (codec_meta_unpack(r->p.meta, r->p.meta_len, &c->cm) < 0) {
		c->bad = n;             /* unreadable: let the miss path judge */
		n = 0;
	} else {
		n = MIN((unsigned)c->cm.k + c->cm.m, CODEC_MAX_SHARDS);
	}
	sc->inflight++;
	c->pending = 1;                 /* until every request is submitted */
	pthread_mutex_lock(&s->lock);
	s->st.scrub_shards += n;
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++) {
		struct scrub_sreq *q = &c->q[i];
		unsigned b = r->p.place[i];

		if (b == SSD_NOWHERE || b >= nb) {
			c->missing++;
			continue;
		}
		if (zdb_pool_health(s->pool, b) == ZDB_HEALTH_DOWN) {
			c->down++;
			continue;
		}
		q->c = c;
		q->idx = i;
		ssdflush_key(s, r->p.version, i, q->key);
		q->req.key = q->key;
		q->req.key_len = sizeof(q->key);
		q->req.done = scrub_req_done;
		if (sc->deep) {
			q->buf = malloc(smax);
			if (!q->buf) {
				c->errors++;
				continue;
			}
			q->req.op = ZDB_OP_GET;
			q->req.buf = q->buf;
			q->req.buf_len = smax;
		} else {
			q->req.op = ZDB_OP_EXISTS;
		}
		c->pending++;
		zdb_pool_submit(s->pool, b, &q->req);
	}
	if (--c->pending == 0)
		scrub_chk_ready(c, false);      /* the caller's loop goes on */
}

/* Cache thread: whether the rate limit lets one more record's check
 * start now (its cost taken), else counted as throttled. */
static bool scrub_bucket_take(struct ssd_scrub *sc)
{
	struct ssd *s = sc->s;
	uint64_t now;
	double burst;

	if (!sc->deep || !sc->rate)
		return true;
	now = now_ns();
	burst = MAX((double)sc->rate / 10, 1.0);
	sc->tokens = MIN(sc->tokens + (double)(now - sc->tok_ns) * (double)sc->rate / 1e9,
			 burst);
	sc->tok_ns = now;
	if (sc->tokens > 0) {
		sc->tokens -= (double)codec_shard_max(s->codec) * (s->k + s->m);
		return true;
	}
	pthread_mutex_lock(&s->lock);
	s->st.scrub_throttled++;
	pthread_mutex_unlock(&s->lock);
	return false;
}

/* Cache thread: keep SCRUB_PAR records in flight; end at the last one. */
static void scrub_pump(struct ssd_scrub *sc)
{
	struct ssd *s = sc->s;

	while (!s->stopping && sc->inflight < SCRUB_PAR) {
		uint64_t backlog;

		pthread_mutex_lock(&s->lock);
		backlog = s->nrepair;
		pthread_mutex_unlock(&s->lock);
		/* (repairs that cannot run do not hold the walk: what it
		 * finds then waits as a count, scrub_chk_verdict) */
		if (backlog >= SCRUB_REPAIR_MAX && ssdflush_pool_whole(s))
			return;                 /* the tick resumes */
		if (sc->next == sc->nbatch) {
			int r;

			if (sc->eof) {
				if (!sc->inflight)
					scrub_end(sc, 0);
				return;
			}
			r = scrub_load(sc);
			if (r < 0) {
				if (!sc->inflight)
					scrub_end(sc, r);
				else
					sc->eof = true;
				return;
			}
			continue;
		}
		if (!scrub_bucket_take(sc))
			return;                 /* the tick resumes */
		scrub_chk_start(sc, &sc->batch[sc->next++]);
	}
}

/* Cache thread: the posted start. */
static void scrub_msg_run(struct loop_msg *m)
{
	struct ssd *s = container_of(m, struct ssd, scrub_msg);
	struct ssd_scrub *sc;
	struct meta_stats ms;
	uint64_t rate;
	bool deep;
	int r;

	pthread_mutex_lock(&s->lock);
	s->scrub_posted = false;
	deep = s->scrub_deep;
	rate = s->scrub_rate;
	pthread_mutex_unlock(&s->lock);
	if (s->scrub || s->stopping || !s->pool)
		goto fail;
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		goto fail;
	sc->s = s;
	sc->deep = deep;
	sc->t0 = sc->tok_ns = now_ns();
	sc->rate = rate;
	sc->tokens = MAX((double)rate / 10, 1.0);
	if (deep && (r = codec_ctx_new(s->codec, &sc->ctx)) < 0) {
		free(sc);
		goto fail;
	}
	memset(&ms, 0, sizeof(ms));
	(void)meta_get_stats(s->meta, &ms);
	pthread_mutex_lock(&s->lock);
	s->st.scrub_total = ms.entries[META_T_CACHE_INDEX] ?
		ms.entries[META_T_CACHE_INDEX] - 1 : 0;      /* key 0: binding */
	pthread_mutex_unlock(&s->lock);
	s->scrub = sc;
	s->scrub_rewait = 0;
	if (deep && rate)
		log_info("ssdcache: scrub (deep) started: %" PRIu64 " index records, "
			 "reading at most %" PRIu64 " KiB/s", s->st.scrub_total,
			 rate >> 10);
	else
		log_info("ssdcache: scrub%s started: %" PRIu64 " index records",
			 deep ? " (deep)" : "", s->st.scrub_total);
	scrub_pump(sc);
	return;
fail:
	pthread_mutex_lock(&s->lock);
	if (!s->scrub) {
		s->st.scrub_running = 0;
		s->st.scrub_runs++;
	}
	pthread_mutex_unlock(&s->lock);
}

/* lock held: claim the start (counters reset); false if one runs.  rate
 * < 0: the pool config's. */
static bool scrub_claim(struct ssd *s, bool deep, int64_t rate)
{
	if (s->st.scrub_running || s->scrub_posted)
		return false;
	scrub_post_run(s, deep, rate >= 0 ? (uint64_t)rate :
		       s->pool_cfg ? s->pool_cfg->scrub_rate : 0);
	return true;
}

int ssdcache_scrub_start(struct objstore *so, bool deep, int64_t rate)
{
	struct ssd *s = (struct ssd *)so;
	bool ok;

	if (!s->pool_mode || !s->thread_started)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	ok = !s->stopping && scrub_claim(s, deep, rate);
	pthread_mutex_unlock(&s->lock);
	if (!ok)
		return -EBUSY;
	loop_post(&s->loop, &s->scrub_msg);
	return 0;
}

void ssd_scrub_emptied(struct ssd *s, const char *backend)
{
	bool ok, again = false;

	pthread_mutex_lock(&s->lock);
	ok = !s->stopping && scrub_claim(s, false, -1);
	if (!ok && !s->stopping && s->st.scrub_checked && !s->scrub_again)
		again = s->scrub_again = true;
	pthread_mutex_unlock(&s->lock);
	if (ok) {
		log_warn("ssdcache: backend %s was emptied: scrubbing the pool "
			 "versions to repair", backend);
		loop_post(&s->loop, &s->scrub_msg);
	} else if (again) {
		log_warn("ssdcache: backend %s was emptied: the running scrub "
			 "will run once more", backend);
	}
}

void ssdcache_backend_emptied(struct objstore *so, const char *backend)
{
	struct ssd *s = (struct ssd *)so;

	if (s->pool_mode && s->thread_started)
		ssd_scrub_emptied(s, backend);
}

void ssd_scrub_tick(struct ssd *s)
{
	bool ok;

	if (s->stopping)
		return;
	if (s->scrub) {
		scrub_pump(s->scrub);
		return;
	}
	if (!s->scrub_rewait || !ssdflush_pool_whole(s))
		return;
	pthread_mutex_lock(&s->lock);
	ok = scrub_claim(s, s->scrub_rewait == 2, -1);
	pthread_mutex_unlock(&s->lock);
	if (!ok)
		return;                 /* one starts anyway */
	log_info("ssdcache: k+m backends are up again: scrubbing%s to repair "
		 "the versions left waiting", s->scrub_rewait == 2 ? " (deep)" : "");
	s->scrub_rewait = 0;
	loop_post(&s->loop, &s->scrub_msg);
}

void ssd_scrub_free(struct ssd *s)
{
	struct ssd_scrub *sc = s->scrub;

	if (!sc)
		return;
	while (sc->verifying)           /* its job uses ctx and its check */
		loop_run_once(&s->loop, 10ull * 1000000);
	while (sc->vq_head) {
		struct scrub_chk *c = sc->vq_head;

		sc->vq_head = c->vnext;
		for (unsigned i = 0; i < CODEC_MAX_SHARDS; i++)
			free(c->q[i].buf);
		free(c);
	}
	s->scrub = NULL;
	codec_ctx_free(sc->ctx);
	free(sc);
	pthread_mutex_lock(&s->lock);
	s->st.scrub_running = 0;
	pthread_mutex_unlock(&s->lock);
}
