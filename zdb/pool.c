/*
 * pool.c — the backend pool: health, placement, chunk put with spares,
 * chunk get with hedging, and the status report.
 *
 * Health.  Every request submitted through the pool is intercepted on
 * completion: its latency feeds the backend's EWMA (α = 1/8) and a log2
 * histogram (bucket i = [2^i, 2^(i+1)) µs, halved every 4096 samples so it
 * follows the recent past) from which p50/p99 are read; errors and timeouts
 * are counted.  A backend is
 *     DOWN  when its connection is not READY (connecting, backing off,
 *           refused), i.e. the transport's own view;
 *     SLOW  when READY but its EWMA or the age of its oldest in-flight
 *           request is above slow_ns — a stopped process shows up here long
 *           before its requests time out;
 *     UP    otherwise.
 * One pool timer ticks every 10 ms and drives every backend's tick()
 * (deadlines, reconnect with backoff, idle PING).  A request the server
 * refuses while up (zdb_req.refused: -ENOSPC full, -EROFS read-only /
 * locked / WORM / replica / MISCONF, -EACCES denied, -EIO 0-db's disk
 * failing) counts as an error and is also recorded
 * per backend (struct zdb_refusal: count, time, the server's words) for the
 * status, which can merge in another pool's records over the same backends
 * (the daemon's status pool never writes; its cache's flusher pool does).
 *
 * Placement.  Rendezvous hashing: backend b's score for chunk id is
 * hash(id, seed_b) with seed_b = hash(name) — deterministic, balanced, and
 * only 1/n of chunks move when a backend is added.  Candidates are taken in
 * score order by health class (UP, then SLOW; never DOWN) with a per-zone
 * cap that rises one level at a time, so n shards cover min(n, zones)
 * distinct zones and no zone holds more than ceil(n / zones) + 0 shards when
 * enough backends exist.  The caller records the result: reads use the
 * recorded backend, never a recomputation (health changes the answer).
 *
 * Chunk put.  Shards go to the placed backends; a failed shard is retried
 * (up to 3 times) on a spare chosen by the same hashing among backends this
 * chunk has not used yet.  A shard still unwritten after slow_ns gets a
 * second copy on a spare (write hedging: a hung backend costs slow_ns, not
 * the request timeout); the first copy to land is recorded, the other one
 * is deleted if it lands too.  With fewer than k+m healthy backends but at
 * least min_shards, the trailing parity shards are dropped and the result
 * says "degraded".
 *
 * Chunk get.  The first k shards in preference order (healthy backends
 * first, then shard index) are asked for; each failure, verify rejection or
 * hedge-timer expiry asks for one more.  ready() runs as soon as k shards
 * are good (or it is certain they cannot be); the op is released by done()
 * once every request it sent has completed — a request to a stopped backend
 * is never waited for by the client, only by the op's memory.
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define POOL_TICK_NS   (10ull * 1000000)
#define POOL_HBUCKETS  25
#define POOL_PUT_TRIES 3

struct zdb_backend *zdb_fault_inner(struct zdb_backend *wrapper);

struct pool_be {
	struct zdb_backend *b;
	uint64_t seed;
	unsigned zone;                  /* index into distinct zones */
	uint64_t ewma_ns;
	uint32_t hist[POOL_HBUCKETS];
	uint32_t hist_n;
	uint64_t ok, errors, timeouts;
	unsigned consec_fail;           /* errors since the last success */
	uint64_t last_fail_ns;
	uint64_t refused_log_ns;        /* last "refuses writes" warning */
	struct zdb_refusal refusal;     /* requests it refused while up */
	bool stopped;
	bool have_info, info_busy;
	struct zdb_info info;
	struct zdb_req info_req;
};

struct zdb_pool {
	struct loop *loop;
	struct zdb_pool_cfg cfg;
	struct zdb_pool_opts opts;
	struct workq own_wq;
	bool own_wq_started;
	unsigned n;
	unsigned nzones;
	struct pool_be be[ZDB_MAX_BACKENDS];
	uint32_t hist[POOL_HBUCKETS];   /* pool-wide GET latency */
	uint32_t hist_n;
	struct loop_timer tick;
	bool closing;
	unsigned nstopped;
	unsigned info_pending;
};

uint64_t zdb_hash64(const void *data, size_t len, uint64_t seed)
{
	/* FNV-1a over the bytes, then a splitmix64 finaliser with the seed. */
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	h ^= seed * 0x9e3779b97f4a7c15ull;
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

/* ---- health ---- */

static unsigned hist_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000;
	unsigned b = 0;

	while (us > 1 && b + 1 < POOL_HBUCKETS) {
		us >>= 1;
		b++;
	}
	return b;
}

static void hist_add(uint32_t *h, uint32_t *n, uint64_t ns)
{
	unsigned i;

	h[hist_bucket(ns)]++;
	if (++*n >= 4096) {
		*n = 0;
		for (i = 0; i < POOL_HBUCKETS; i++) {
			h[i] /= 2;
			*n += h[i];
		}
	}
}

/* Upper bound of the bucket holding quantile q (per mille). */
static uint64_t hist_quantile(const uint32_t *h, unsigned q)
{
	uint64_t total = 0, acc = 0;
	unsigned i;

	for (i = 0; i < POOL_HBUCKETS; i++)
		total += h[i];
	if (!total)
		return 0;
	for (i = 0; i < POOL_HBUCKETS; i++) {
		acc += h[i];
		if (acc * 1000 >= total * q)
			return (2ull << i) * 1000;
	}
	return (2ull << (POOL_HBUCKETS - 1)) * 1000;
}

enum zdb_health zdb_pool_health(const struct zdb_pool *p, unsigned idx)
{
	const struct pool_be *pb = &p->be[idx];
	const struct zdb_backend *b = pb->b;
	uint64_t now;

	if (b->state != ZDB_CONN_READY)
		return ZDB_HEALTH_DOWN;
	now = now_ns();
	/* failing every request (e.g. a full disk) counts as slow: used only
	 * when nothing better is left, and tried again after 5 s */
	if ((pb->consec_fail >= 3 && now - pb->last_fail_ns < 5000ull * 1000000) ||
	    pb->ewma_ns > p->cfg.slow_ns ||
	    (b->oldest_inflight_ns && now - b->oldest_inflight_ns > p->cfg.slow_ns))
		return ZDB_HEALTH_SLOW;
	return ZDB_HEALTH_UP;
}

uint64_t zdb_pool_hedge_ns(const struct zdb_pool *p)
{
	uint64_t h;

	if (p->cfg.hedge_ns)
		return p->cfg.hedge_ns;
	h = 3 * hist_quantile(p->hist, 990);
	return MAX(MIN(h, 1000ull * 1000000), 10ull * 1000000);
}

/* A request the backend refused while up (zdb.h zdb_refusal): recorded
 * with its own answer's words for the status (its NOTE column) and logged
 * at most once a minute. */
static void pool_refused(struct pool_be *pb, const struct zdb_req *r)
{
	struct zdb_refusal *rf = &pb->refusal;

	rf->count++;
	rf->last_ns = pb->last_fail_ns;
	rf->err = r->result;
	snprintf(rf->msg, sizeof(rf->msg), "%s", r->msg[0] ? r->msg : strerror(-r->result));
	if (!pb->refused_log_ns || pb->last_fail_ns - pb->refused_log_ns > 60000000000ull) {
		pb->refused_log_ns = pb->last_fail_ns;
		log_warn("backend %s: %s refused: %s", pb->b->cfg.name,
			 r->op == ZDB_OP_DEL ? "delete" : r->op == ZDB_OP_PUT ? "write"
			 : "request", rf->msg);
	}
}

static void pool_req_done(struct zdb_req *r)
{
	struct zdb_pool *p = r->pool;
	struct pool_be *pb = &p->be[r->pool_idx];
	uint64_t lat = now_ns() - r->start_ns;

	if (r->result >= 0 || r->result == -ENOENT) {
		pb->ok++;
		pb->consec_fail = 0;
		pb->ewma_ns = pb->ewma_ns ? pb->ewma_ns - pb->ewma_ns / 8 + lat / 8 : lat;
		hist_add(pb->hist, &pb->hist_n, lat);
		if (r->op == ZDB_OP_GET)
			hist_add(p->hist, &p->hist_n, lat);
	} else if (r->result == -ETIMEDOUT) {
		pb->timeouts++;
		pb->consec_fail++;
		pb->last_fail_ns = now_ns();
	} else if (r->result != -ECANCELED && r->result != -ENOTCONN &&
		   r->result != -E2BIG && r->result != -EINVAL) {
		pb->errors++;
		pb->consec_fail++;
		pb->last_fail_ns = now_ns();
		if (r->refused)
			pool_refused(pb, r);
	}
	r->done = r->user_done;
	r->done(r);
}

void zdb_pool_submit(struct zdb_pool *p, unsigned idx, struct zdb_req *req)
{
	if (idx >= p->n) {
		zdb_req_complete_later(p->loop, req, -EINVAL);
		return;
	}
	req->pool = p;
	req->pool_idx = idx;
	req->refused = false;
	req->msg[0] = 0;
	req->user_done = req->done;
	req->done = pool_req_done;
	req->start_ns = now_ns();
	if (p->closing) {
		zdb_req_complete_later(p->loop, req, -ECANCELED);
		return;
	}
	p->be[idx].b->ops->submit(p->be[idx].b, req);
}

/* ---- lifecycle ---- */

static void pool_tick(struct loop_op *op, int res, uint32_t flags)
{
	struct zdb_pool *p = container_of(op, struct zdb_pool, tick.op);
	uint64_t now = now_ns();
	unsigned i;

	(void)res; (void)flags;
	if (p->closing)
		return;
	for (i = 0; i < p->n; i++)
		if (p->be[i].b->ops->tick)
			p->be[i].b->ops->tick(p->be[i].b, now);
	loop_timer_arm(p->loop, &p->tick, POOL_TICK_NS, pool_tick);
}

static void pool_be_event(struct zdb_backend *b, int ev)
{
	struct zdb_pool *p = b->owner;
	unsigned idx;

	for (idx = 0; idx < p->n; idx++)
		if (p->be[idx].b == b)
			break;
	if (idx < p->n && p->opts.on_event)
		p->opts.on_event(p->opts.event_arg, idx, ev);
}

static void pool_be_stopped(struct zdb_backend *b)
{
	struct zdb_pool *p = b->owner;
	unsigned i;

	for (i = 0; i < p->n; i++)
		if (p->be[i].b == b && !p->be[i].stopped) {
			p->be[i].stopped = true;
			p->nstopped++;
		}
}

int zdb_pool_open(struct loop *l, const struct zdb_pool_cfg *cfg,
		  const struct zdb_pool_opts *opts, struct zdb_pool **out)
{
	struct zdb_pool *p;
	char zones[ZDB_MAX_BACKENDS][64];
	unsigned i, z;
	int r = 0;

	if (cfg->nbackends == 0 || cfg->nbackends > ZDB_MAX_BACKENDS || cfg->k == 0 ||
	    cfg->k + cfg->m > cfg->nbackends || cfg->k + cfg->m > ZDB_MAX_SHARDS)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->loop = l;
	p->cfg = *cfg;
	if (!p->cfg.min_shards)
		p->cfg.min_shards = MIN(cfg->k + 1, cfg->k + cfg->m);
	if (!p->cfg.slow_ns)
		p->cfg.slow_ns = 200ull * 1000000;
	if (opts)
		p->opts = *opts;
	for (i = 0; i < cfg->nbackends; i++) {
		if (cfg->backends[i].kind == ZDB_KIND_DIR && !p->opts.wq) {
			r = workq_init(&p->own_wq, 2);
			if (r < 0)
				goto fail;
			p->own_wq_started = true;
			p->opts.wq = &p->own_wq;
			break;
		}
	}
	for (i = 0; i < cfg->nbackends; i++) {
		const struct zdb_backend_cfg *bc = &cfg->backends[i];
		struct zdb_backend *b;

		b = bc->kind == ZDB_KIND_DIR ? zdb_dir_create(l, bc, p->opts.wq)
					     : zdb_conn_create(l, bc);
		if (!b) {
			r = -ENOMEM;
			goto fail;
		}
		b->depth = cfg->depth ? cfg->depth : 16;
		if (cfg->timeout_ns)
			b->timeout_ns = cfg->timeout_ns;
		if (cfg->connect_timeout_ns)
			b->connect_timeout_ns = cfg->connect_timeout_ns;
		b->ping_ns = cfg->ping_ns;
		if (p->opts.fault_wrap) {
			b = zdb_fault_wrap(b);
			if (!b) {
				r = -ENOMEM;
				goto fail;
			}
		}
		b->owner = p;
		b->on_event = pool_be_event;
		b->stopped = pool_be_stopped;
		p->be[i].b = b;
		p->be[i].seed = zdb_hash64(bc->name, strlen(bc->name), 0x6e62647372762121ull);
		for (z = 0; z < p->nzones; z++)
			if (!strcmp(zones[z], bc->zone))
				break;
		if (z == p->nzones)
			snprintf(zones[p->nzones++], sizeof(zones[0]), "%s", bc->zone);
		p->be[i].zone = z;
		p->n++;
	}
	zdb_pool_cfg_wipe(&p->cfg);   /* the backends hold their own copies */
	for (i = 0; i < p->n; i++)
		(void)p->be[i].b->ops->start(p->be[i].b);
	loop_timer_arm(l, &p->tick, POOL_TICK_NS, pool_tick);
	*out = p;
	return 0;
fail:
	for (i = 0; i < p->n; i++)
		p->be[i].b->ops->destroy(p->be[i].b);
	if (p->own_wq_started)
		workq_fini(&p->own_wq);
	free(p);
	return r;
}

void zdb_pool_close(struct zdb_pool *p)
{
	unsigned i;

	if (p->closing)
		return;
	p->closing = true;
	loop_timer_cancel(p->loop, &p->tick);
	for (i = 0; i < p->n; i++)
		p->be[i].b->ops->stop(p->be[i].b);
}

bool zdb_pool_closed(const struct zdb_pool *p)
{
	return p->closing && p->nstopped == p->n && !p->tick.armed;
}

void zdb_pool_free(struct zdb_pool *p)
{
	unsigned i;

	if (!p)
		return;
	for (i = 0; i < p->n; i++)
		p->be[i].b->ops->destroy(p->be[i].b);
	if (p->own_wq_started)
		workq_fini(&p->own_wq);
	free(p);
}

int zdb_pool_run_until(struct zdb_pool *p, const bool *flag, uint64_t timeout_ns)
{
	uint64_t end = now_ns() + timeout_ns;
	int r;

	while (!*flag) {
		uint64_t now = now_ns();

		if (now >= end)
			return -ETIMEDOUT;
		r = loop_run_once(p->loop, MIN(end - now, 50ull * 1000000));
		if (r < 0)
			return r;
	}
	return 0;
}

int zdb_pool_wait_connected(struct zdb_pool *p, uint64_t timeout_ns)
{
	uint64_t end = now_ns() + timeout_ns;

	for (;;) {
		unsigned i, busy = 0;
		int r;

		for (i = 0; i < p->n; i++) {
			enum zdb_conn_state s = p->be[i].b->state;

			busy += s == ZDB_CONN_CONNECTING || s == ZDB_CONN_IDLE;
		}
		if (!busy)
			return 0;
		if (now_ns() >= end)
			return -ETIMEDOUT;
		r = loop_run_once(p->loop, 20ull * 1000000);
		if (r < 0)
			return r;
	}
}

unsigned zdb_pool_size(const struct zdb_pool *p)
{
	return p->n;
}

const struct zdb_pool_cfg *zdb_pool_cfg(const struct zdb_pool *p)
{
	return &p->cfg;
}

struct zdb_backend *zdb_pool_backend(struct zdb_pool *p, unsigned idx)
{
	return idx < p->n ? p->be[idx].b : NULL;
}

int zdb_pool_find(const struct zdb_pool *p, const char *name)
{
	unsigned i;

	for (i = 0; i < p->n; i++)
		if (!strcmp(p->be[i].b->cfg.name, name))
			return (int)i;
	return -ENOENT;
}

int zdb_pool_set_fault(struct zdb_pool *p, unsigned idx, const struct zdb_fault *f)
{
	if (idx >= p->n || !p->opts.fault_wrap)
		return -EINVAL;
	zdb_fault_set(p->be[idx].b, f);
	return 0;
}

/* ---- placement ---- */

static bool bm_test(const uint64_t *bm, unsigned i)
{
	return bm && (bm[i / 64] >> (i % 64)) & 1;
}

static void bm_set(uint64_t *bm, unsigned i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

struct place_cand {
	uint64_t score;
	uint16_t idx;
};

static int place_cmp(const void *a, const void *b)
{
	const struct place_cand *x = a, *y = b;

	return x->score < y->score ? 1 : x->score > y->score ? -1 :
	       (x->idx > y->idx) - (x->idx < y->idx);
}

unsigned zdb_pool_place(const struct zdb_pool *p, const void *id, size_t id_len,
			unsigned n, const uint64_t *exclude, uint16_t *out)
{
	struct place_cand cand[ZDB_MAX_BACKENDS];
	unsigned zcount[ZDB_MAX_BACKENDS];
	uint64_t taken[ZDB_MAX_BACKENDS / 64] = { 0 };
	unsigned chosen = 0, cls;

	memset(zcount, 0, sizeof(zcount));
	for (cls = ZDB_HEALTH_UP; cls <= ZDB_HEALTH_SLOW && chosen < n; cls++) {
		unsigned nc = 0, i, level;

		for (i = 0; i < p->n; i++) {
			if (bm_test(exclude, i) || zdb_pool_health(p, i) != cls)
				continue;
			cand[nc].score = zdb_hash64(id, id_len, p->be[i].seed);
			cand[nc].idx = (uint16_t)i;
			nc++;
		}
		qsort(cand, nc, sizeof(cand[0]), place_cmp);
		for (level = 1; chosen < n; level++) {
			unsigned before = chosen, left = 0;

			for (i = 0; i < nc && chosen < n; i++) {
				unsigned b = cand[i].idx;

				if (bm_test(taken, b))
					continue;
				left++;
				if (zcount[p->be[b].zone] < level) {
					zcount[p->be[b].zone]++;
					bm_set(taken, b);
					out[chosen++] = (uint16_t)b;
				}
			}
			if (chosen == before && left == 0)
				break;
		}
	}
	return chosen;
}

/* ---- chunk put ---- */

enum { PUT_PENDING = 0, PUT_STORED, PUT_FAILED, PUT_SKIPPED };

static void put_req_done(struct zdb_req *r);

static unsigned put_healthy(const struct zdb_pool *p)
{
	unsigned i, h = 0;

	for (i = 0; i < p->n; i++)
		h += zdb_pool_health(p, i) != ZDB_HEALTH_DOWN;
	return h;
}

/* Shard index of r, and whether it is the hedge copy. */
static unsigned put_shard_of(const struct zdb_chunk_put *op, const struct zdb_req *r,
			     bool *hedge)
{
	*hedge = r >= op->hreqs && r < op->hreqs + ZDB_MAX_SHARDS;
	return (unsigned)(*hedge ? r - op->hreqs : r - op->reqs);
}

static void put_send(struct zdb_chunk_put *op, struct zdb_req *r, unsigned i,
		     unsigned backend)
{
	memset(r, 0, sizeof(*r));
	r->op = ZDB_OP_PUT;
	r->key = op->shards[i].key;
	r->key_len = op->shards[i].key_len;
	r->val = op->shards[i].data;
	r->val_len = op->shards[i].len;
	r->done = put_req_done;
	r->priv = op;
	bm_set(op->used, backend);
	op->sinfl[i]++;
	op->pending++;
	zdb_pool_submit(op->pool, backend, r);
}

/* A spare backend for shard i (try t), or -1. */
static int put_spare(struct zdb_chunk_put *op, unsigned i, unsigned t)
{
	const struct zdb_shard *s = &op->shards[i];
	char sid[ZDB_KEY_MAX + 8];
	size_t sl = MIN(s->key_len, (size_t)ZDB_KEY_MAX);
	uint16_t spare;

	if (op->pool->closing)
		return -1;
	memcpy(sid, s->key, sl);
	sid[sl] = (char)t;
	if (zdb_pool_place(op->pool, sid, sl + 1, 1, op->used, &spare) != 1)
		return -1;
	return spare;
}

/* Report resolution once (ready), release once idle (done). */
static void put_check(struct zdb_chunk_put *op)
{
	if (!op->resolved && op->unresolved == 0) {
		op->resolved = true;
		if (op->stored == op->n)
			op->result = 0;
		else if (op->stored >= MIN(op->pool->cfg.min_shards, op->n))
			op->result = 1;
		else
			op->result = -EIO;
		loop_timer_cancel(op->pool->loop, &op->hedge);
		if (op->ready)
			op->ready(op);
	}
	if (op->resolved && op->pending == 0 && !op->hedge.armed)
		op->done(op);
}

static void put_del_done(struct zdb_req *r)
{
	struct zdb_chunk_put *op = r->priv;

	op->pending--;
	put_check(op);
}

static void put_req_done(struct zdb_req *r)
{
	struct zdb_chunk_put *op = r->priv;
	bool hedge;
	unsigned i = put_shard_of(op, r, &hedge);
	struct zdb_shard *s = &op->shards[i];
	unsigned be = r->pool_idx;
	int spare;

	op->pending--;
	op->sinfl[i]--;
	if (op->sstate[i] == PUT_STORED) {
		/* the slower copy of a hedged shard: remove it if it landed */
		if (r->result >= 0 && (int)be != s->backend) {
			memset(r, 0, sizeof(*r));
			r->op = ZDB_OP_DEL;
			r->key = s->key;
			r->key_len = s->key_len;
			r->done = put_del_done;
			r->priv = op;
			op->pending++;
			zdb_pool_submit(op->pool, be, r);
			return;
		}
	} else if (r->result >= 0) {
		op->sstate[i] = PUT_STORED;
		s->status = 0;
		s->backend = (int)be;
		op->stored++;
		op->unresolved--;
	} else {
		s->status = r->result;
		if (op->sinfl[i] == 0) {
			if (r->result != -E2BIG && r->result != -EINVAL && r->result != -ECANCELED &&
			    ++op->tries[i] < POOL_PUT_TRIES &&
			    (spare = put_spare(op, i, op->tries[i])) >= 0) {
				log_debug("pool: shard %u failed on %s (%s); retrying on %s", i,
					  op->pool->be[be].b->cfg.name, strerror(-r->result),
					  op->pool->be[spare].b->cfg.name);
				put_send(op, r, i, (unsigned)spare);
				return;
			}
			op->sstate[i] = PUT_FAILED;
			s->backend = -1;
			op->unresolved--;
		}
	}
	put_check(op);
}

/* Shards still unwritten after the write-hedge delay get a second copy on a
 * spare; the first to land wins, the other is deleted if it lands too. */
static void put_hedge_fired(struct loop_op *lop, int res, uint32_t flags)
{
	struct zdb_chunk_put *op = container_of(lop, struct zdb_chunk_put, hedge.op);
	unsigned i;

	(void)flags;
	if (res != -ECANCELED && !op->resolved) {
		for (i = 0; i < op->n; i++) {
			int spare;

			if (op->sstate[i] != PUT_PENDING || op->sinfl[i] != 1 || op->hedged[i])
				continue;
			spare = put_spare(op, i, 100 + i);
			if (spare < 0)
				continue;
			op->hedged[i] = 1;
			op->nhedged++;
			put_send(op, &op->hreqs[i], i, (unsigned)spare);
		}
	}
	put_check(op);
}

int zdb_pool_put_chunk(struct zdb_pool *p, struct zdb_chunk_put *op)
{
	uint16_t where[ZDB_MAX_SHARDS];
	unsigned i, h, target, got;

	if (op->n == 0 || op->n > ZDB_MAX_SHARDS || op->n > p->n || !op->done)
		return -EINVAL;
	for (i = 0; i < op->n; i++)
		if (op->shards[i].len > ZDB_VALUE_MAX) {
			log_error("pool: shard %u of %zu bytes exceeds the %u-byte value limit", i,
				  op->shards[i].len, ZDB_VALUE_MAX);
			return -E2BIG;
		}
	op->pool = p;
	op->pending = 0;
	op->stored = 0;
	op->nhedged = 0;
	op->resolved = false;
	memset(op->used, 0, sizeof(op->used));
	memset(op->tries, 0, sizeof(op->tries));
	memset(op->sinfl, 0, sizeof(op->sinfl));
	memset(op->hedged, 0, sizeof(op->hedged));
	memset(&op->hedge, 0, sizeof(op->hedge));
	h = put_healthy(p);
	target = MIN(op->n, h);
	got = target ? zdb_pool_place(p, op->id, op->id_len, target, NULL, where) : 0;
	for (i = 0; i < op->n; i++) {
		op->shards[i].backend = -1;
		op->shards[i].status = -EAGAIN;  /* not attempted (degraded) */
		op->sstate[i] = i < got ? PUT_PENDING : PUT_SKIPPED;
	}
	if (got < MIN(p->cfg.min_shards, op->n)) {
		log_warn("pool: only %u healthy backends, %u needed to write a chunk", got,
			 p->cfg.min_shards);
		for (i = 0; i < op->n; i++)
			op->sstate[i] = PUT_SKIPPED;
		got = 0;
	}
	op->target = got;
	op->unresolved = got;
	/* submitting never completes inline: counters are exact */
	for (i = 0; i < got; i++)
		put_send(op, &op->reqs[i], i, where[i]);
	/* the timer also reports an op with nothing to send, from the loop */
	loop_timer_arm(p->loop, &op->hedge, got ? p->cfg.slow_ns : 1, put_hedge_fired);
	return 0;
}

/* ---- chunk get ---- */

static void get_shard_done(struct zdb_req *r);
static void get_hedge_fired(struct loop_op *lop, int res, uint32_t flags);

static bool get_launch(struct zdb_chunk_get *op)
{
	while (op->next_try < op->n) {
		unsigned i = op->order[op->next_try++];
		struct zdb_shard *s = &op->shards[i];
		struct zdb_req *r = &op->reqs[i];

		if (s->backend < 0 || (unsigned)s->backend >= op->pool->n)
			continue;
		memset(r, 0, sizeof(*r));
		r->op = ZDB_OP_GET;
		r->key = s->key;
		r->key_len = s->key_len;
		r->buf = s->data;
		r->buf_len = s->len;
		r->done = get_shard_done;
		r->priv = op;
		op->asked |= 1ull << i;
		op->inflight++;
		zdb_pool_submit(op->pool, (unsigned)s->backend, r);
		return true;
	}
	return false;
}

static unsigned get_remaining(const struct zdb_chunk_get *op)
{
	unsigned j, n = 0;

	for (j = op->next_try; j < op->n; j++) {
		const struct zdb_shard *s = &op->shards[op->order[j]];

		n += s->backend >= 0 && (unsigned)s->backend < op->pool->n;
	}
	return n;
}

/* Report readiness once, release once nothing refers to op any more. */
static void get_check(struct zdb_chunk_get *op)
{
	if (!op->finished) {
		if (op->good >= op->k) {
			op->result = 0;
		} else if (op->good + op->inflight + get_remaining(op) < op->k) {
			op->result = -EIO;
		} else {
			return;
		}
		op->finished = true;
		loop_timer_cancel(op->pool->loop, &op->hedge);
		if (op->ready)
			op->ready(op);
	}
	if (op->inflight == 0 && !op->hedge.armed && op->done)
		op->done(op);
}

static void get_shard_done(struct zdb_req *r)
{
	struct zdb_chunk_get *op = r->priv;
	unsigned i = (unsigned)(r - op->reqs);
	struct zdb_shard *s = &op->shards[i];

	op->inflight--;
	s->status = r->result < 0 ? r->result : 0;
	s->got = r->result > 0 ? (size_t)r->result : 0;
	if (r->result >= 0 && !op->finished) {
		if (!op->verify || op->verify(op, i)) {
			op->have |= 1ull << i;
			op->good++;
		} else {
			s->status = -EBADMSG;
		}
	}
	if (!op->finished && (s->status < 0) && op->good + op->inflight < op->k)
		get_launch(op);
	get_check(op);
}

static void get_hedge_fired(struct loop_op *lop, int res, uint32_t flags)
{
	struct zdb_chunk_get *op = container_of(lop, struct zdb_chunk_get, hedge.op);

	(void)flags;
	if (res != -ECANCELED && !op->finished && op->inflight > 0) {
		if (get_launch(op))
			op->hedged++;
		if (get_remaining(op) > 0)
			loop_timer_arm(op->pool->loop, &op->hedge, zdb_pool_hedge_ns(op->pool),
				       get_hedge_fired);
	}
	get_check(op);
}

int zdb_pool_get_chunk(struct zdb_pool *p, struct zdb_chunk_get *op)
{
	unsigned i, j, cls, ask;

	if (op->n == 0 || op->n > ZDB_MAX_SHARDS || op->k == 0 || op->k > op->n)
		return -EINVAL;
	op->pool = p;
	op->good = op->inflight = op->next_try = 0;
	op->have = op->asked = 0;
	op->hedged = 0;
	op->finished = false;
	op->result = 0;
	memset(&op->hedge, 0, sizeof(op->hedge));
	/* preference: UP backends in shard order, then SLOW, then DOWN */
	j = 0;
	for (cls = ZDB_HEALTH_UP; cls <= ZDB_HEALTH_DOWN + 1; cls++)
		for (i = 0; i < op->n; i++) {
			int b = op->shards[i].backend;
			unsigned h;

			op->shards[i].status = -EAGAIN;   /* not asked */
			op->shards[i].got = 0;
			if (b < 0 || (unsigned)b >= p->n) {
				if (cls == ZDB_HEALTH_DOWN + 1)
					op->order[j++] = (uint8_t)i;
				continue;
			}
			h = zdb_pool_health(p, (unsigned)b);
			if (h == cls)
				op->order[j++] = (uint8_t)i;
		}
	ask = op->k;
	for (i = 0; i < ask; i++)
		if (!get_launch(op))
			break;
	if (op->inflight == 0) {
		/* nothing could be asked: report through the loop */
		loop_timer_arm(p->loop, &op->hedge, 1, get_hedge_fired);
		return 0;
	}
	loop_timer_arm(p->loop, &op->hedge, zdb_pool_hedge_ns(p), get_hedge_fired);
	return 0;
}

/* ---- status ---- */

void zdb_pool_backend_status(const struct zdb_pool *p, unsigned idx,
			     struct zdb_backend_status *st)
{
	const struct pool_be *pb = &p->be[idx];
	const struct zdb_backend *b = pb->b;

	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", b->cfg.name);
	snprintf(st->zone, sizeof(st->zone), "%s", b->cfg.zone);
	snprintf(st->address, sizeof(st->address), "%s", b->cfg.address);
	st->kind = b->cfg.kind == ZDB_KIND_ZDB ? "zdb" : b->cfg.kind == ZDB_KIND_REDIS ? "redis"
		   : "dir";
	st->health = zdb_pool_health(p, idx);
	st->state = b->state;
	st->dialect = b->dialect;
	st->ewma_ns = pb->ewma_ns;
	st->p50_ns = hist_quantile(pb->hist, 500);
	st->p99_ns = hist_quantile(pb->hist, 990);
	st->ok = pb->ok;
	st->errors = pb->errors;
	st->timeouts = pb->timeouts;
	st->canary_missing = b->canary_missing;
	st->emptied = b->emptied;
	st->ns_unprotected = b->ns_unprotected;
	st->have_info = pb->have_info;
	st->info = pb->info;
	snprintf(st->last_error, sizeof(st->last_error), "%s", b->last_error);
	zdb_pool_refusal(p, idx, &st->refusal);
}

void zdb_pool_refusal(const struct zdb_pool *p, unsigned idx, struct zdb_refusal *out)
{
	*out = p->be[idx].refusal;
	snprintf(out->backend, sizeof(out->backend), "%s", p->be[idx].b->cfg.name);
}

static void pool_info_done(struct zdb_req *r)
{
	struct zdb_pool *p = r->priv;
	struct pool_be *pb = container_of(r, struct pool_be, info_req);

	pb->info_busy = false;
	pb->have_info = r->result >= 0;
	p->info_pending--;
}

int zdb_pool_refresh_info(struct zdb_pool *p, uint64_t timeout_ns)
{
	uint64_t end = now_ns() + timeout_ns;
	unsigned i;

	for (i = 0; i < p->n; i++) {
		struct pool_be *pb = &p->be[i];

		if (pb->info_busy || pb->b->state != ZDB_CONN_READY)
			continue;
		memset(&pb->info_req, 0, sizeof(pb->info_req));
		memset(&pb->info, 0xff, sizeof(pb->info));
		pb->info_req.op = ZDB_OP_INFO;
		pb->info_req.buf = &pb->info;
		pb->info_req.buf_len = sizeof(pb->info);
		pb->info_req.done = pool_info_done;
		pb->info_req.priv = p;
		pb->info_busy = true;
		p->info_pending++;
		zdb_pool_submit(p, i, &pb->info_req);
	}
	while (p->info_pending) {
		uint64_t now = now_ns();

		if (now >= end)
			return -ETIMEDOUT;
		if (loop_run_once(p->loop, MIN(end - now, 20ull * 1000000)) < 0)
			break;
	}
	return 0;
}

static const char *health_name(enum zdb_health h)
{
	return h == ZDB_HEALTH_UP ? "up" : h == ZDB_HEALTH_SLOW ? "slow" : "down";
}

static void fmt_ms(char *out, size_t cap, uint64_t ns)
{
	if (!ns)
		snprintf(out, cap, "-");
	else
		snprintf(out, cap, "%.2f", (double)ns / 1e6);
}

static void fmt_bytes(char *out, size_t cap, uint64_t v)
{
	static const char *const u[] = { "B", "K", "M", "G", "T", "P" };
	double d = (double)v;
	unsigned i = 0;

	if (v == UINT64_MAX) {
		snprintf(out, cap, "-");
		return;
	}
	while (d >= 1024 && i + 1 < ARRAY_SIZE(u)) {
		d /= 1024;
		i++;
	}
	snprintf(out, cap, i ? "%.1f%s" : "%.0f%s", d, u[i]);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 (a bad byte:
 * stray continuation, overlong, surrogate, beyond U+10FFFF, cut short). */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0], n, i, cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* A JSON string of s: escaped, and always valid UTF-8 (each bad byte of
 * an untrusted text becomes U+FFFD). */
static void json_str(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', f);
	while (*s) {
		size_t n = utf8_len(s);

		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s < 32 || *s == 127)
			fprintf(f, "\\u%04x", *s);
		else if (n == 0)
			fputs("\\ufffd", f);
		else
			fwrite(s, 1, n, f);
		s += n ? n : 1;
	}
	fputc('"', f);
}

static void json_num(FILE *f, uint64_t v)
{
	if (v == UINT64_MAX)
		fputs("null", f);
	else
		fprintf(f, "%" PRIu64, v);
}

static const char *refusal_class(int err)
{
	return err == -ENOSPC ? "ENOSPC" : err == -EROFS ? "EROFS" : err == -EACCES ? "EACCES"
	       : err == -EAGAIN ? "EAGAIN" : "EIO";
}

/* Backend idx's own refusals plus those of extra[] under its name. */
static void refusal_merged(const struct zdb_pool *p, unsigned idx,
			   const struct zdb_refusal *extra, unsigned n, struct zdb_refusal *out)
{
	unsigned j;

	zdb_pool_refusal(p, idx, out);
	for (j = 0; j < n; j++) {
		const struct zdb_refusal *x = &extra[j];

		if (!x->count || strcmp(x->backend, out->backend))
			continue;
		out->count += x->count;
		if (x->last_ns > out->last_ns) {
			out->last_ns = x->last_ns;
			out->err = x->err;
			memcpy(out->msg, x->msg, sizeof(out->msg));
		}
	}
}

void zdb_pool_format_status(const struct zdb_pool *p, FILE *f, bool json)
{
	zdb_pool_format_status_ext(p, f, json, NULL, 0);
}

void zdb_pool_format_status_ext(const struct zdb_pool *p, FILE *f, bool json,
				const struct zdb_refusal *extra, unsigned n)
{
	unsigned i, up = 0, slow = 0, down = 0;
	struct zdb_backend_status st;
	struct zdb_refusal rf;
	uint64_t now = now_ns();

	for (i = 0; i < p->n; i++) {
		enum zdb_health h = zdb_pool_health(p, i);

		up += h == ZDB_HEALTH_UP;
		slow += h == ZDB_HEALTH_SLOW;
		down += h == ZDB_HEALTH_DOWN;
	}
	if (json) {
		fprintf(f, "{\"k\":%u,\"m\":%u,\"min_shards\":%u,\"backends_up\":%u,"
			"\"backends_slow\":%u,\"backends_down\":%u,\"hedge_ms\":%.3f,\"backends\":[",
			p->cfg.k, p->cfg.m, p->cfg.min_shards, up, slow, down,
			(double)zdb_pool_hedge_ns(p) / 1e6);
		for (i = 0; i < p->n; i++) {
			zdb_pool_backend_status(p, i, &st);
			fprintf(f, "%s{\"name\":", i ? "," : "");
			json_str(f, st.name);
			fputs(",\"zone\":", f);
			json_str(f, st.zone);
			fputs(",\"kind\":", f);
			json_str(f, st.kind);
			fputs(",\"address\":", f);
			json_str(f, st.address);
			fprintf(f, ",\"health\":\"%s\",\"state\":\"%s\",\"dialect\":\"%s\","
				"\"ewma_ms\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"ok\":%" PRIu64
				",\"errors\":%" PRIu64 ",\"timeouts\":%" PRIu64
				",\"canary_missing\":%s,\"emptied\":%" PRIu64 ",\"ns_unprotected\":%s",
				health_name(st.health), zdb_conn_state_name(st.state),
				zdb_dialect_name(st.dialect), (double)st.ewma_ns / 1e6,
				(double)st.p50_ns / 1e6, (double)st.p99_ns / 1e6, st.ok, st.errors,
				st.timeouts, st.canary_missing ? "true" : "false", st.emptied,
				st.ns_unprotected ? "true" : "false");
			fputs(",\"used_bytes\":", f);
			json_num(f, st.have_info ? st.info.used_bytes : UINT64_MAX);
			fputs(",\"limit_bytes\":", f);
			json_num(f, st.have_info ? st.info.limit_bytes : UINT64_MAX);
			fputs(",\"entries\":", f);
			json_num(f, st.have_info ? st.info.entries : UINT64_MAX);
			fputs(",\"error\":", f);
			json_str(f, st.last_error);
			refusal_merged(p, i, extra, n, &rf);
			fprintf(f, ",\"refused\":%" PRIu64 ",\"refusal\":", rf.count);
			if (rf.count) {
				fprintf(f, "{\"error\":\"%s\",\"message\":", refusal_class(rf.err));
				json_str(f, rf.msg);
				fprintf(f, ",\"age_s\":%.1f}", (double)(now - rf.last_ns) / 1e9);
			} else {
				fputs("null", f);
			}
			fputc('}', f);
		}
		fputs("]}\n", f);
		return;
	}
	fprintf(f, "pool: k=%u m=%u min_shards=%u, %u backends: %u up, %u slow, %u down; hedge %.1f ms\n",
		p->cfg.k, p->cfg.m, p->cfg.min_shards, p->n, up, slow, down,
		(double)zdb_pool_hedge_ns(p) / 1e6);
	fprintf(f, "%-12s %-10s %-5s %-24s %-5s %-10s %-7s %8s %8s %8s %8s %8s %s\n", "BACKEND",
		"ZONE", "KIND", "ADDRESS", "HEALTH", "STATE", "DIALECT", "EWMA_MS", "P50_MS",
		"P99_MS", "USED", "LIMIT", "NOTE");
	for (i = 0; i < p->n; i++) {
		char e[16], p50[16], p99[16], used[16], lim[16], note[160] = "";

		zdb_pool_backend_status(p, i, &st);
		refusal_merged(p, i, extra, n, &rf);
		if (rf.count && now - rf.last_ns < ZDB_REFUSAL_RECENT_NS)
			snprintf(note, sizeof(note), "refused %" PRIu64 "\u00d7 (%s) %" PRIu64
				 " s ago ", rf.count, rf.msg, (now - rf.last_ns) / 1000000000);
		fmt_ms(e, sizeof(e), st.ewma_ns);
		fmt_ms(p50, sizeof(p50), st.p50_ns);
		fmt_ms(p99, sizeof(p99), st.p99_ns);
		fmt_bytes(used, sizeof(used), st.have_info ? st.info.used_bytes : UINT64_MAX);
		fmt_bytes(lim, sizeof(lim), st.have_info && st.info.limit_bytes
			  ? st.info.limit_bytes : UINT64_MAX);
		fprintf(f, "%-12s %-10s %-5s %-24s %-6s %-10s %-7s %8s %8s %8s %8s %8s %s%s%s%s%s\n",
			st.name, st.zone, st.kind, st.address, health_name(st.health),
			zdb_conn_state_name(st.state), zdb_dialect_name(st.dialect), e, p50, p99,
			used, lim, note, st.ns_unprotected ? "NO-PASSWORD " : "",
			st.emptied ? "EMPTIED " : st.canary_missing ? "no-canary " : "",
			st.last_error[0] ? "error: " : "", st.last_error);
	}
}
