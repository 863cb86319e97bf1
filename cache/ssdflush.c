/*
 * ssdflush.c — the ssdcache's pool side: the background flusher, intents,
 * garbage collection of old versions.  Everything here runs on the cache's
 * own thread, whose loop owns the zdb pool (zdb.h: a pool belongs to one
 * loop); reactors only post a kick (ssdflush_kick).
 *
 * One object's flush is a "job"; jobs move through the pipeline in
 * groups, so the per-object cost is the data work (read, encode, put),
 * not an fsync:
 *
 *   pick: every pool-dirty entry that is due (below, "When an object is
 *     flushed"; oldest-dirtied first), then every repair entry, that fits
 *     in the free data slots (flush_parallel, default 16) becomes a job
 *     (pinned, gen = its last write's gen, with an object buffer and k+m
 *     shard buffers); its dirty period restarts there
 *   → INTENT group: ONE meta section reserves a version for each job
 *     (meta_alloc_id) and stages intents[version] = {INTENT, obj, old
 *     version}; ONE meta commit covers them all
 *   → meanwhile, per job: read the whole object from the cache (blocks
 *     never written come from the base chain, as any read) → codec_encode
 *     on the workq (2 workers) with one of SSD_ENC_CTX (4) codec contexts,
 *     jobs waiting for one in FIFO order; the object buffer is freed
 *   → encoded AND its group committed (a job that finishes first parks:
 *     no version leaves the node before a commit covers its id, DESIGN's
 *     nonce/key uniqueness; a job never ends before its group's commit
 *     completes): zdb_pool_put_chunk, k+m shards on distinct backends (an
 *     all-zero chunk is a HOLE: no shards, straight to its record)
 *   → put done: the job's record {version, placement, packed codec meta}
 *     is computed, its shard buffers and data slot are released (the next
 *     pick starts at once: reads, encodes and puts of new jobs overlap the
 *     commits of old ones) and it joins the record queue
 *   → record group: when no group is being committed, every queued job
 *     forms one: its entries get their pool records and pool_gen = gen,
 *     and ONE internal FLUSH (one fdatasync, as every index change, with
 *     all their records forced into its snapshot) stages them in ONE
 *     section with, per job, del intents[version] and intents[old
 *     version] = {GARBAGE, placement}; ONE meta commit.  Jobs whose put
 *     finishes meanwhile form the next group when this one is committed
 *     (group commit: the busier the flusher, the larger the groups)
 *   → per job, after that commit: the old version's shards are deleted
 *     (GC), then its intent record; the entry leaves the pool-dirty list
 *     unless written since (its dirty_gen moved past gen: per-object
 *     generation, not a flag).  A failed commit flushes the group's
 *     objects again (the staged changes stay for the next commit; the
 *     old versions are collected from their GARBAGE intents at the next
 *     open).
 *
 * Memory is bounded by configuration: a job in its data phase holds at
 * most one object (slot_size, until encoded) and k+m shard buffers
 * (about (k+m)/k x slot_size, until its put is done); a job waiting for
 * its record holds a few KiB; the 4 codec contexts about 2 x slot_size +
 * (m+1) shards each.  1 MiB objects, k=16 m=4, 16 jobs: at most ~45 MiB.
 * 16 jobs keep 320 shard PUTs in flight (k+m = 20 each), the depth at
 * which `bench pool` reaches the servers' rate; 4 contexts keep both
 * workers encoding while reads complete.  Why groups: a put takes tens
 * of ms on a loaded pool and the commits a few ms each, so one INTENT
 * commit + one fdatasync + one record commit per object (the first
 * version of this file, 4 jobs) capped the drain at ~100-190 MiB/s.
 * Stats: intent_commits and record_commits (each covering one or more
 * versions) against flushed.
 *
 * When an object is flushed (the write-back delay).  Flushing re-reads,
 * re-encodes, re-encrypts and re-sends the WHOLE object, so flushing on
 * every write costs up to slot_size / 4 KiB times the bytes written (256x
 * for 4 KiB random writes into 1 MiB objects), and on a small node that
 * CPU is the writers'.  As the kernel's page cache, bcache and RBD's
 * cache do, a pool-dirty object waits, so that rewrites coalesce; it is
 * flushed when ANY of these holds (checked at each pick: a write that
 * completes an object and every forcing event kick one, the cache
 * thread's 50 ms tick does the rest; a pick walks the pool-dirty list
 * only when something can be due — wb_next_due, the earliest time a
 * waiting entry becomes due — so an idle cache costs nothing):
 *   - COMPLETE: every block of it was written in this dirty period (a
 *     sequential stream gains nothing from waiting, and the row "1 MiB
 *     sequential write to the pool" must not wait at all);
 *   - IDLE: no write touched it for flush_idle (pool.conf flush_idle_ms,
 *     default 1 s; 0 = flush at once, the behaviour before the delay), so
 *     a burst reaches the pool soon after it ends;
 *   - AGE: its dirty period started flush_max_age ago (flush_max_age_ms,
 *     default 30 s, the kernel's dirty_expire_centisecs), so an object
 *     rewritten forever still reaches the pool in bounded time;
 *   - BACKGROUND: more than flush_background objects wait (default 3/4 of
 *     dirty_max; only the oldest excess), so writers rarely reach the hard
 *     limit dirty_max.  Why 3/4 and not the kernel's 1/2
 *     (dirty_background_ratio 10 vs dirty_ratio 20): dirty_max is already
 *     a budget of SSD slots reserved for dirty objects (half the slots by
 *     default), not memory that competes with everything else; at 1/2 a
 *     random-write working set between 1/2 and 3/4 of the budget would
 *     keep the flusher at full speed rewriting objects, exactly the
 *     amplification this avoids, while 1/4 of the budget stays as headroom
 *     for the flusher to catch up before writers stall;
 *   - FORCED: a writethrough FLUSH waits (every object dirtied before it),
 *     a sync request waits (ssdcache_sync: the same, in either mode),
 *     writers wait for a dirty_max token (backpressure) or for a free slot
 *     (eviction needs clean objects) — then every pool-dirty object is
 *     due, oldest first —, the object was pool-dirty at open (written
 *     before the stop, quiet since: after an unclean stop every resident
 *     object is flushed again at once, not after a delay), or its last
 *     flush attempt failed (retried after the pool back-off, no delay).
 * Repair entries are picked as before.  The cache's close does not drain
 * by itself: pool-dirty objects stay in the index (DIRTY flag) and are
 * flushed at the next open; a daemon's clean stop drains first
 * (nbdsrv/cmd_serve.c: a sync, bounded by shutdown_flush_timeout_ms),
 * then closes with a short close wait (ssdcache_set_close_wait: flushes in
 * flight are cancelled, not waited for).  Only WHEN an entry is picked
 * changes: the job, its
 * commits and every crash-safety argument below are the same.  Status:
 * pool_dirty, wb_waiting (objects waiting for their delay; the rest are
 * being flushed or due), wb_oldest_ms, and the picks by reason
 * (wb_forced, wb_complete, wb_idle, wb_age, wb_background).
 *
 * Degraded writes and repair.  With fewer than k+m usable backends (but
 * at least min_shards) a put stores only some shards and says so
 * (zdb_pool_put_chunk returns 1).  The version is committed as usual — the
 * data is safe at min_shards — with the missing shards' placement NOWHERE,
 * and the entry is marked for repair: e->repair, on the repair list, and
 * the REPAIR flag of its index record, staged in the same section as the
 * pool record, so a restart still knows.  The flusher picks repair entries
 * after pool-dirty ones, only when the pool has k+m backends that are not
 * DOWN (checked at most once a second while it has not) and not before
 * repair_at: a repair is an ordinary flush job — a new version with new
 * keys, all k+m shards, the degraded version garbage-collected after the
 * commit exactly like an overwrite.  A put that comes back degraded again
 * (a backend up but failing) moves repair_at back, doubling from 250 ms to
 * 5 s, so a sick pool is not rewritten in a loop.  A later write of the
 * object repairs it the same way.  GC of a degraded version deletes each
 * missing shard's key on every backend (best effort: a timed-out SET may
 * still land).  Stats: degraded_writes, repairs, repair_pending.  The
 * scrub (ssdscrub.c) marks versions it finds damaged behind our back (a
 * backend emptied, shards deleted or corrupted) the same way, evicted
 * objects included: their repair job reads them through the miss path,
 * which rebuilds from any k good shards.
 *
 * Crash safety.  A group's intents land in one transaction, as do a
 * group's records with their intents' deletions and GARBAGE records: a
 * crash keeps all of a group or none.  A crash between the shard writes
 * and the commit leaves an INTENT whose version the object's committed
 * record does not name: at
 * open its k+m keys are deleted from every backend (placement is not known
 * before the put; DEL of a missing key is success), so no orphan survives.
 * GARBAGE records left by a crash are deleted the same way with their
 * recorded placement.  Shard keys are a keyed BLAKE2b of (pool id, version,
 * shard index) under shard_key_seed (derived from the pool key by the
 * caller): opaque, unique forever since versions are never reused.
 *
 * What each mode survives.
 *   writeback   a FLUSH returns when the data is durable on the local SSD
 *               (fdatasync + index commit): survives SIGKILL and power loss
 *               of the node with the SSD intact; dirty objects are flushed
 *               to the pool after restart.  Losing the SSD loses what was
 *               not yet flushed to the pool: with the write-back delay,
 *               the writes of about the last flush_idle (1 s) for objects
 *               then quiet, and of at most flush_max_age (30 s) plus the
 *               flush time for objects rewritten continuously (bounded
 *               also by dirty_max objects).  ssdcache_sync (`nbdsrv vol
 *               sync`) closes that window on demand, e.g. before
 *               publishing a snapshot or decommissioning the node, and a
 *               clean stop of the daemon does the same (its drain): after
 *               a stop whose log says "drained" the SSD may be lost.  A
 *               drain cut short (pool down past shutdown_flush_timeout_ms,
 *               or a second signal) leaves the rest dirty on the SSD, as
 *               before: flushed after the next start.
 *   writethrough a FLUSH also waits until every object written before it is
 *               committed in the pool: additionally survives the loss of the
 *               SSD (any m backends lost as well): the index is re-bound
 *               to a new cache file and every object reads back from its
 *               pool version (ssd.c, "Cache file lost").  A FLUSH still
 *               waiting when a stopping daemon gives up on the pool fails
 *               (ESHUTDOWN, ssdcache_fail_flushes): its writes are on the
 *               SSD, not promised in the pool.
 */
#include "cache/ssd.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define SSD_TICK_NS  (50ull * 1000000)
#define SSD_BACKOFF_MAX_NS (2ull * 1000000000)
#define SSD_FAILED_MAX 4096u
#define SSD_REPAIR_BACKOFF_MIN_NS (250ull * 1000000)
#define SSD_REPAIR_BACKOFF_MAX_NS (5ull * 1000000000)
#define SSD_REPAIR_HEALTH_NS (1000ull * 1000000)

struct ssd_fj {
	struct ssd *s;
	struct ssd_ent *e;
	struct ssd_fj *next;            /* in its intent group / s->recq /
	                                 * its record group */
	uint64_t obj, base, gen, version;
	struct ssd_prec old;
	struct ssd_prec newp;           /* the record once the put is done */
	struct ssd_fj *qnext;           /* waiting for a codec context */
	unsigned ctx_i;                 /* ctxs[ctx_i] while encoding */
	bool data;                      /* holds buffers and one of
	                                 * flush_par data slots */
	bool wait_intent;               /* its INTENT group is not committed */
	bool parked;                    /* encoded (or failed): waits for it */
	int intent_res;
	bool in_rec;                    /* past its put (counted in nrec) */
	bool repair;                    /* e's version was degraded at pick */
	bool degraded;                  /* the put stored fewer than k+m */
	bool hole;
	int enc_res;
	uint8_t *plain;
	uint8_t *shard_buf;
	uint8_t *shards[CODEC_MAX_SHARDS];
	size_t lens[CODEC_MAX_SHARDS];
	uint8_t keys[CODEC_MAX_SHARDS][SSD_SKEY_LEN];
	struct zdb_shard zs[CODEC_MAX_SHARDS];
	struct codec_meta cm;
	struct workq_job job;
	struct objstore_io io;
	struct zdb_chunk_put put;
};

/* jobs whose intents (or records) share one commit */
struct ssd_fgrp {
	struct ssd *s;
	struct ssd_fj *jobs;
	unsigned n;
	struct objstore_io io;          /* record group: the staging flush */
	struct meta_flush mf;
	struct ssd_ent *ents[];         /* record group: forced records */
};

struct ssd_gc {
	struct ssd *s;
	uint64_t version;
	unsigned pending, failed, n;
	uint8_t (*keys)[SSD_SKEY_LEN];
	struct zdb_req reqs[];
};

void ssdflush_key(const struct ssd *s, uint64_t version, unsigned idx,
		  uint8_t out[SSD_SKEY_LEN])
{
	uint8_t msg[16 + META_POOL_ID_LEN + 8 + 4];

	memcpy(msg, "nbdsrv.shard.v1\0", 16);
	memcpy(msg + 16, s->pool_id, META_POOL_ID_LEN);
	ssd_be64put(msg + 16 + META_POOL_ID_LEN, version);
	msg[40] = (uint8_t)(idx >> 24);
	msg[41] = (uint8_t)(idx >> 16);
	msg[42] = (uint8_t)(idx >> 8);
	msg[43] = (uint8_t)idx;
	crypto_generichash(out, SSD_SKEY_LEN, msg, sizeof(msg), s->skey,
			   sizeof(s->skey));
}

/* ------------------------------------------------------------------ GC -- */

static void ssd_gc_req_done(struct zdb_req *req)
{
	struct ssd_gc *g = req->priv;
	struct ssd *s = g->s;

	if (req->result < 0 && req->done == ssd_gc_req_done)
		g->failed++;
	if (--g->pending)
		return;
	if (!g->failed) {
		struct meta_txn *t = meta_wbegin(s->meta);
		uint8_t k[8];

		ssd_be64put(k, g->version);
		if (t) {
			meta_del(t, META_T_INTENTS, k, 8);
			meta_end(t);
		}
		pthread_mutex_lock(&s->lock);
		s->st.gc_versions++;
		pthread_mutex_unlock(&s->lock);
	} else {
		log_warn("ssdcache: %u shard deletion(s) of version %" PRIu64
			 " failed; retried at the next open", g->failed, g->version);
	}
	s->ngc--;
	free(g->keys);
	free(g);
}

/* A degraded version's missing shard: deleted everywhere in case a late
 * write landed, best effort (its backend was failing). */
static void ssd_gc_sweep_done(struct zdb_req *req)
{
	ssd_gc_req_done(req);
}

/* Delete the shards of version v: on place[i] for shard i, or (place NULL,
 * or shard i not stored) shard i's key on every backend. */
static void ssd_gc_version(struct ssd *s, uint64_t v, const uint16_t *place,
			   unsigned n)
{
	unsigned nb = zdb_pool_size(s->pool), cnt = 0, i, b;
	unsigned max = n * nb;
	struct ssd_gc *g = calloc(1, sizeof(*g) + max * sizeof(struct zdb_req));
	uint16_t *bes = calloc(max + 1, sizeof(*bes));

	if (!g || !bes || !(g->keys = calloc(n, SSD_SKEY_LEN))) {
		free(g);
		free(bes);
		log_warn("ssdcache: out of memory: version %" PRIu64
			 " deleted at the next open", v);
		return;
	}
	g->s = s;
	g->version = v;
	g->n = n;
	for (i = 0; i < n; i++) {
		ssdflush_key(s, v, i, g->keys[i]);
		for (b = 0; b < nb; b++) {
			struct zdb_req *r;

			if (place && place[i] != b && place[i] != SSD_NOWHERE)
				continue;
			r = &g->reqs[cnt];
			bes[cnt++] = (uint16_t)b;
			r->op = ZDB_OP_DEL;
			r->key = g->keys[i];
			r->key_len = SSD_SKEY_LEN;
			r->done = place && place[i] == SSD_NOWHERE ?
				  ssd_gc_sweep_done : ssd_gc_req_done;
			r->priv = g;
		}
	}
	s->ngc++;
	g->pending = cnt + 1;                   /* +1: released below */
	for (i = 0; i < cnt; i++)
		zdb_pool_submit(s->pool, bes[i], &g->reqs[i]);
	free(bes);
	{
		struct zdb_req fake = { .priv = g, .result = 0 };

		ssd_gc_req_done(&fake);
	}
}

void ssdflush_gc(struct ssd *s, const struct ssd_prec *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ssd_gc_version(s, v[i].version, v[i].place, s->k + s->m);
}

/* Delete the failed versions' keys from every backend (and their intents). */
static void ssd_sweep_failed(struct ssd *s)
{
	size_t i;

	for (i = 0; i < s->nfailed; i++)
		ssd_gc_version(s, s->failed[i], NULL, s->k + s->m);
	free(s->failed);
	s->failed = NULL;
	s->nfailed = 0;
}

/* ----------------------------------------------------------- flushing -- */

static void ssd_pick(struct ssd *s);
static void ssd_rec_run(struct ssd *s);

/* Cache thread: the flush jobs' plaintext and shard buffers are kept for
 * the next job (flush_par of each at most) instead of freed: a fresh
 * malloc of these sizes page-faulted every page again in the slot read,
 * the AES-GCM output and the RS parity (perf, page-faults event: nearly
 * all of row 3's daemon page faults).  Freed once no job ran for
 * SSD_BUF_IDLE_NS. */
static uint8_t *ssd_jbuf_get(uint8_t **pool, unsigned *n, size_t size)
{
	return pool && *n ? pool[--*n] : malloc(size);
}

static void ssd_jbuf_put(struct ssd *s, uint8_t **pool, unsigned *n, uint8_t *b)
{
	if (b && pool && *n < s->flush_par)
		pool[(*n)++] = b;
	else
		free(b);
}

static void ssd_jbuf_trim(struct ssd *s)
{
	while (s->njplain)
		free(s->jplain[--s->njplain]);
	while (s->njshard)
		free(s->jshard[--s->njshard]);
}

/* The data phase is over (put done or failed): give back the buffers, the
 * codec context and the flush_par slot. */
static void ssd_fj_release(struct ssd_fj *j)
{
	struct ssd *s = j->s;

	if (!j->data)
		return;
	j->data = false;
	if (!--s->nflushing)
		s->jidle_ns = now_ns();
	ssd_jbuf_put(s, s->jplain, &s->njplain, j->plain);
	ssd_jbuf_put(s, s->jshard, &s->njshard, j->shard_buf);
	j->plain = j->shard_buf = NULL;
}

/* The job is over; the caller runs ssd_evict_run and ssd_pick after a
 * group of them. */
static void ssd_fj_end(struct ssd_fj *j, int err)
{
	struct ssd *s = j->s;
	struct ssd_ent *e = j->e;

	pthread_mutex_lock(&s->lock);
	e->flushing = false;
	if (s->sw_head)
		ssd_sw_wake(s);                 /* a base write may wait for it */
	if (err) {
		s->st.flush_errors++;
	} else {
		s->st.flushed++;
		if (j->degraded)
			s->st.degraded_writes++;
		else if (j->repair)
			s->st.repairs++;
		if (e->dirty_gen == j->gen && e->on_pdirty) {
			struct ssd_ent **pp = &s->pdirty;

			while (*pp != e)
				pp = &(*pp)->pnext;
			*pp = e->pnext;
			e->on_pdirty = false;
			/* a write in its data phase makes it pool-dirty again
			 * with the token it counted on (else one more than
			 * dirty_max); a failed one gives it back */
			if (!e->writing)
				ssd_tok_release(s, e);
		} else {
			e->first_dirty = j->gen + 1;
		}
		ssd_wt_wake(s);
	}
	if (err && e->on_pdirty)
		e->wb_due = true;               /* retried without delay */
	s->wb_next_due = 0;                     /* e may be due: look again */
	ssd_unpin(s, e);
	pthread_mutex_unlock(&s->lock);
	if (err) {
		/* the pool is failing: retry later, not in a tight loop of
		 * intent commits */
		s->backoff_ns = MIN(MAX(s->backoff_ns * 2, SSD_TICK_NS * 2),
				    SSD_BACKOFF_MAX_NS);
		s->retry_at = now_ns() + s->backoff_ns;
		log_warn("ssdcache: flushing object %" PRIu64 " to the pool failed: "
			 "%s (retried in %" PRIu64 " ms)", j->obj, strerror(-err),
			 s->backoff_ns / 1000000);
	} else {
		s->backoff_ns = 0;
		ssd_sweep_failed(s);
		if (j->degraded) {
			/* the pool is short of backends: repairs wait */
			s->repair_backoff_ns = MIN(MAX(s->repair_backoff_ns * 2,
						       SSD_REPAIR_BACKOFF_MIN_NS),
						   SSD_REPAIR_BACKOFF_MAX_NS);
			s->repair_at = now_ns() + s->repair_backoff_ns;
		} else if (j->repair) {
			s->repair_backoff_ns = 0;
		}
	}
	ssd_fj_release(j);
	if (j->in_rec)
		s->nrec--;
	free(j);
}

/* One job failed outside a group. */
static void ssd_fj_fail(struct ssd_fj *j, int err)
{
	struct ssd *s = j->s;

	ssd_fj_end(j, err);
	ssd_evict_run(s);
}

/* ------------------------------------------------------ record groups -- */

static void ssd_rg_committed(struct meta_flush *f, int res)
{
	struct ssd_fgrp *g = container_of(f, struct ssd_fgrp, mf);
	struct ssd *s = g->s;
	struct ssd_fj *j, *next;

	if (res < 0)
		log_error("ssdcache: commit after flushing %u object(s) failed: %s "
			  "(retried by the next commit; the objects are flushed "
			  "again)", g->n, f->err);
	else {
		pthread_mutex_lock(&s->lock);
		s->st.record_commits++;
		pthread_mutex_unlock(&s->lock);
	}
	for (j = g->jobs; j; j = next) {
		next = j->next;
		/* not committed: the old version stays referenced by the
		 * durable record; its GARBAGE intent, staged, goes with the
		 * next commit and is collected at the next open */
		if (res == 0 && j->old.version && j->old.meta_len)
			ssd_gc_version(s, j->old.version, j->old.place, s->k + s->m);
		ssd_fj_end(j, res < 0 ? -EIO : 0);
	}
	free(g);
	s->rec_busy = false;
	ssd_evict_run(s);                       /* maybe evictable now */
	ssd_rec_run(s);
	if (res == 0)
		ssd_pick(s);
}

/* In the records' section: each version's intent goes, each replaced
 * version becomes GARBAGE. */
static void ssd_rg_extra(struct ssd *s, struct meta_txn *t, void *arg)
{
	struct ssd_fgrp *g = arg;
	struct ssd_fj *j;
	uint8_t k[8];

	for (j = g->jobs; j; j = j->next) {
		ssd_be64put(k, j->version);
		meta_del(t, META_T_INTENTS, k, 8);
		if (j->old.version && j->old.meta_len) {
			struct ssd_intent in = { .state = SSD_GARBAGE,
				.n = s->k + s->m, .obj = j->obj };

			memcpy(in.place, j->old.place, sizeof(in.place));
			ssd_be64put(k, j->old.version);
			meta_put(t, META_T_INTENTS, k, 8, &in, sizeof(in));
		}
	}
}

static void ssd_rg_staged(struct objstore_io *io, int res)
{
	struct ssd_fgrp *g = container_of(io, struct ssd_fgrp, io);
	struct ssd *s = g->s;
	struct ssd_fj *j, *next;

	if (res >= 0) {
		g->mf.loop = &s->loop;
		g->mf.cb = ssd_rg_committed;
		meta_flush(s->meta, &g->mf);
		return;
	}
	for (j = g->jobs; j; j = next) {
		next = j->next;
		ssd_fj_end(j, res);
	}
	free(g);
	s->rec_busy = false;
	ssd_evict_run(s);
	ssd_rec_run(s);
}

/* Stage the records of every job whose put is done in ONE flush (one
 * fdatasync, one section with their intents' deletions) and commit them
 * together; the next group starts when this one is committed. */
static void ssd_rec_run(struct ssd *s)
{
	struct ssd_fgrp *g;
	struct ssd_fj *j;
	unsigned n = 0;

	if (s->rec_busy || !s->recq)
		return;
	for (j = s->recq; j; j = j->next)
		n++;
	g = calloc(1, sizeof(*g) + n * sizeof(g->ents[0]));
	if (!g)
		return;                         /* the tick retries */
	g->s = s;
	g->jobs = s->recq;
	g->n = n;
	s->recq = NULL;
	s->rec_busy = true;
	n = 0;
	pthread_mutex_lock(&s->lock);
	for (j = g->jobs; j; j = j->next) {
		struct ssd_ent *e = j->e;

		e->prec = j->newp;
		e->hole = j->hole;
		e->pool_gen = j->gen;
		ssd_repair_set(s, e, j->degraded);
		ssd_mark_dirty(s, e);
		g->ents[n++] = e;
	}
	pthread_mutex_unlock(&s->lock);
	g->io.loop = &s->loop;
	g->io.cb = ssd_rg_staged;
	ssd_flush_ext_many(s, &g->io, ssd_rg_extra, g, g->ents, n);
}

/* The new version is in the pool (or is a hole): queue its record. */
static void ssd_fj_record(struct ssd_fj *j, bool hole)
{
	struct ssd *s = j->s;
	struct ssd_prec *p = &j->newp;
	unsigned i;

	memset(p, 0, sizeof(*p));
	p->version = j->version;
	for (i = 0; i < CODEC_MAX_SHARDS; i++)
		p->place[i] = SSD_NOWHERE;
	if (!hole) {
		for (i = 0; i < s->k + s->m; i++)
			p->place[i] = j->zs[i].backend >= 0 ?
				      (uint16_t)j->zs[i].backend : SSD_NOWHERE;
		p->meta_len = (uint16_t)codec_meta_pack(&j->cm, p->meta);
	}
	j->hole = hole;
	ssd_fj_release(j);
	j->in_rec = true;
	s->nrec++;
	j->next = s->recq;
	s->recq = j;
	ssd_rec_run(s);
	ssd_pick(s);                            /* a data slot is free */
}

static void ssd_fj_put_done(struct zdb_chunk_put *op)
{
	struct ssd_fj *j = op->priv;
	struct ssd *s = j->s;

	if (op->result < 0) {
		/*
		 * A shard that timed out may still land (a stopped server
		 * resumes and executes the queued SET), so deleting now is
		 * not enough: the version's intent stays, and it is swept
		 * from every backend once a flush succeeds again (or at
		 * close, or at the next open).
		 */
		if (s->nfailed < SSD_FAILED_MAX) {
			uint64_t *nf = realloc(s->failed, (s->nfailed + 1) * sizeof(*nf));

			if (nf) {
				s->failed = nf;
				s->failed[s->nfailed++] = j->version;
			}
		}
		ssd_fj_fail(j, op->result);
		return;
	}
	if (op->result == 1) {
		j->degraded = true;
		log_debug("ssdcache: object %" PRIu64 " version %" PRIu64
			  " written degraded (%u of %u shards); repair queued",
			  j->obj, j->version, op->stored, op->n);
	}
	ssd_fj_record(j, false);
}

static void ssd_fj_encode(struct workq_job *job)
{
	struct ssd_fj *j = container_of(job, struct ssd_fj, job);
	struct ssd *s = j->s;
	struct codec_id id = { .volume = 0, .chunk = j->obj, .version = j->version };

	memcpy(id.pool, s->pool_id, sizeof(id.pool));
	j->enc_res = codec_encode(s->ctxs[j->ctx_i], &id, j->plain, s->slot_size,
				  j->shards, j->lens, &j->cm);
}

/* Encoded (or failed) and its INTENT committed: put (or record a hole). */
static void ssd_fj_go(struct ssd_fj *j)
{
	struct ssd *s = j->s;
	unsigned i, n = s->k + s->m;
	int r;

	if (j->intent_res < 0) {
		ssd_fj_fail(j, -EIO);
		return;
	}
	if (j->enc_res < 0) {
		ssd_fj_fail(j, j->enc_res);
		return;
	}
	if (j->enc_res == CODEC_HOLE) {
		ssd_fj_record(j, true);
		return;
	}
	for (i = 0; i < n; i++) {
		ssdflush_key(s, j->version, i, j->keys[i]);
		j->zs[i] = (struct zdb_shard){ .key = j->keys[i],
			.key_len = SSD_SKEY_LEN, .data = j->shards[i],
			.len = j->lens[i], .backend = -1 };
	}
	memset(&j->put, 0, sizeof(j->put));
	j->put.id = &j->version;
	j->put.id_len = sizeof(j->version);
	j->put.n = n;
	j->put.shards = j->zs;
	j->put.done = ssd_fj_put_done;
	j->put.priv = j;
	r = zdb_pool_put_chunk(s->pool, &j->put);
	if (r < 0)
		ssd_fj_fail(j, r);
}

/* The encode (or read) is over: the job waits for its INTENT commit if
 * that is still running (a version never leaves the node before). */
static void ssd_fj_park(struct ssd_fj *j)
{
	j->parked = true;
	if (!j->wait_intent)
		ssd_fj_go(j);
}

static void ssd_enc_start(struct ssd_fj *j, unsigned c);

static void ssd_fj_encoded(struct workq_job *job)
{
	struct ssd_fj *j = container_of(job, struct ssd_fj, job);
	struct ssd *s = j->s;
	struct ssd_fj *w = s->encq;

	/* its context goes to the next job waiting for one */
	if (w) {
		s->encq = w->qnext;
		if (!s->encq)
			s->encq_tail = NULL;
		ssd_enc_start(w, j->ctx_i);
	} else {
		s->ctx_busy[j->ctx_i] = false;
	}
	ssd_jbuf_put(s, s->jplain, &s->njplain, j->plain);
	j->plain = NULL;
	ssd_fj_park(j);
}

static void ssd_enc_start(struct ssd_fj *j, unsigned c)
{
	struct ssd *s = j->s;

	s->ctx_busy[c] = true;
	j->ctx_i = c;
	j->job.work = ssd_fj_encode;
	j->job.done = ssd_fj_encoded;
	j->job.loop = &s->loop;
	workq_submit(&s->wq, &j->job);
}

static void ssd_fj_read_done(struct objstore_io *io, int res)
{
	struct ssd_fj *j = container_of(io, struct ssd_fj, io);
	struct ssd *s = j->s;
	unsigned c;

	if (res < 0) {
		j->enc_res = res;
		ssd_fj_park(j);
		return;
	}
	for (c = 0; c < s->nctx && s->ctx_busy[c]; c++)
		;
	if (c < s->nctx) {
		ssd_enc_start(j, c);
		return;
	}
	j->qnext = NULL;
	if (s->encq_tail)
		s->encq_tail->qnext = j;
	else
		s->encq = j;
	s->encq_tail = j;
}

static void ssd_fj_read(struct ssd_fj *j)
{
	memset(&j->io, 0, sizeof(j->io));
	j->io.loop = &j->s->loop;
	j->io.cb = ssd_fj_read_done;
	j->io.obj = j->obj;
	j->io.base = j->base;
	j->io.len = j->s->slot_size;
	j->io.buf = j->plain;
	ssd_read_obj(j->s, &j->io);
}

/* ------------------------------------------------------ intent groups -- */

static void ssd_ig_done(struct meta_flush *f, int res)
{
	struct ssd_fgrp *g = container_of(f, struct ssd_fgrp, mf);
	struct ssd *s = g->s;
	struct ssd_fj *j, *next;

	if (res == 0) {
		pthread_mutex_lock(&s->lock);
		s->st.intent_commits++;
		pthread_mutex_unlock(&s->lock);
	}
	for (j = g->jobs; j; j = next) {
		next = j->next;
		j->next = NULL;
		j->wait_intent = false;
		j->intent_res = res;
		if (j->parked)
			ssd_fj_go(j);
	}
	free(g);
}

/* Reserve a version for each job of the list and stage its INTENT, all in
 * one section, and commit them together: no version leaves the node before
 * this commit covers its id.  The jobs read and encode meanwhile. */
static void ssd_ig_start(struct ssd *s, struct ssd_fj *jobs)
{
	struct ssd_fgrp *g = calloc(1, sizeof(*g));
	struct meta_txn *t = g ? meta_wbegin(s->meta) : NULL;
	struct ssd_fj *j, *next;
	int r = t ? 0 : -EIO;

	if (!g)
		r = -ENOMEM;
	for (j = jobs; j && r == 0; j = j->next) {
		struct ssd_intent in = { .state = SSD_INTENT, .n = s->k + s->m,
			.obj = j->obj };
		uint8_t k[8];

		if (j->old.version && j->old.meta_len) {
			in.old_version = j->old.version;
			memcpy(in.old_place, j->old.place, sizeof(in.old_place));
		}
		j->version = meta_alloc_id(t);
		ssd_be64put(k, j->version);
		r = j->version ? meta_put(t, META_T_INTENTS, k, 8, &in, sizeof(in))
			       : -EIO;
	}
	if (t)
		meta_end(t);
	if (r < 0) {
		/* intents already staged name versions never written: their
		 * (absent) shards are deleted at the next open */
		for (j = jobs; j; j = next) {
			next = j->next;
			ssd_fj_end(j, r);
		}
		free(g);
		ssd_evict_run(s);
		return;
	}
	g->s = s;
	g->jobs = jobs;
	g->mf.loop = &s->loop;
	g->mf.cb = ssd_ig_done;
	for (j = jobs; j; j = j->next)
		j->wait_intent = true;
	meta_flush(s->meta, &g->mf);
	/* read and encode while the commit runs (nothing leaves the node
	 * before it: ssd_fj_park); the callback runs on this loop, later */
	for (j = jobs; j; j = j->next)
		ssd_fj_read(j);
}

/* Whether the pool has k+m backends a put would use (not DOWN), i.e. a
 * repair can be expected to store every shard. */
bool ssdflush_pool_whole(struct ssd *s)
{
	unsigned i, n = zdb_pool_size(s->pool), h = 0;

	for (i = 0; i < n; i++)
		h += zdb_pool_health(s->pool, i) != ZDB_HEALTH_DOWN;
	return h >= s->k + s->m;
}

/* lock held: an entry to repair, if it is time and the pool is whole.
 * Pool-dirty entries are left to the ordinary flush (it repairs too). */
static struct ssd_ent *ssd_pick_repair(struct ssd *s)
{
	struct ssd_ent *e;
	uint64_t now;

	for (e = s->repair; e && (e->flushing || e->on_pdirty); e = e->rnext)
		;
	if (!e)
		return NULL;
	now = now_ns();
	if (now < s->repair_at)
		return NULL;
	if (!ssdflush_pool_whole(s)) {
		s->repair_at = now + SSD_REPAIR_HEALTH_NS;
		return NULL;
	}
	return e;
}

enum { SSD_WB_FORCED, SSD_WB_COMPLETE, SSD_WB_IDLE, SSD_WB_AGE, SSD_WB_BG };

/* The flush-wide reasons to flush now, taken under the lock. */
struct ssd_wbnow {
	uint64_t now;
	bool all;                       /* writers wait for a token or slot */
	uint64_t force_gen;             /* entries dirtied before: a
	                                 * writethrough FLUSH / sync waits */
};

static void ssd_wb_now(struct ssd *s, struct ssd_wbnow *w, bool cache_thread)
{
	w->now = now_ns();
	w->all = s->bp_head || s->sw_head || (cache_thread && s->fsw_head);
	w->force_gen = 0;
	for (struct ssd_req *r = s->wt_wait; r; r = r->wnext)
		w->force_gen = MAX(w->force_gen, r->wt_gen);
}

/* lock held: why e (pool-dirty, not flushing, the i-th newest such) is
 * to be flushed now, or -1 with *due lowered to when it will be. */
static int ssd_wb_reason(const struct ssd *s, const struct ssd_ent *e,
			 uint64_t i, const struct ssd_wbnow *w, uint64_t *due)
{
	uint64_t idle_at = e->wb_last_ns + s->flush_idle_ns;
	uint64_t age_at = e->wb_start_ns + s->flush_age_ns;

	if (w->all || e->wb_due || e->first_dirty < w->force_gen)
		return SSD_WB_FORCED;
	if (e->wb_nblk >= s->nblk)
		return SSD_WB_COMPLETE;
	if (w->now >= idle_at)
		return SSD_WB_IDLE;
	if (w->now >= age_at)
		return SSD_WB_AGE;
	if (i >= s->flush_bg)
		return SSD_WB_BG;
	*due = MIN(*due, MIN(idle_at, age_at));
	return -1;
}

void ssdflush_wb_stats(struct ssd *s, struct ssdcache_stats *st)
{
	struct ssd_wbnow w;
	uint64_t i = 0, due = UINT64_MAX, oldest = UINT64_MAX;

	ssd_wb_now(s, &w, false);
	st->wb_waiting = 0;
	for (struct ssd_ent *e = s->pdirty; e; e = e->pnext) {
		if (e->wb_start_ns)
			oldest = MIN(oldest, e->wb_start_ns);
		if (e->flushing || e->dropped)
			continue;
		st->wb_waiting += ssd_wb_reason(s, e, i++, &w, &due) < 0;
	}
	st->wb_oldest_ms = oldest < w.now ? (w.now - oldest) / 1000000 : 0;
}

#define SSD_PICK_MAX 256u

/* lock held: up to max pool-dirty entries due now, oldest first, into
 * out (their reasons counted); how many.  Skips the walk when nothing can
 * be due (wb_next_due, no force, not above flush_background). */
static unsigned ssd_pick_due(struct ssd *s, struct ssd_ent **out, unsigned max)
{
	struct ssd_ent *ring[SSD_PICK_MAX];
	uint8_t why[SSD_PICK_MAX];
	struct ssd_wbnow w;
	uint64_t i = 0, n = 0, due = UINT64_MAX;
	unsigned k = 0;

	ssd_wb_now(s, &w, true);
	if (!w.all && !w.force_gen && !s->wb_kick && w.now < s->wb_next_due &&
	    s->tokens <= s->flush_bg)
		return 0;
	s->wb_kick = false;
	/* the list is newest first: keep the last max due ones */
	for (struct ssd_ent *e = s->pdirty; e; e = e->pnext) {
		int r;

		if (e->flushing || e->dropped)
			continue;
		r = ssd_wb_reason(s, e, i++, &w, &due);
		if (r < 0)
			continue;
		ring[n % max] = e;
		why[n % max] = (uint8_t)r;
		n++;
	}
	s->wb_next_due = n > max ? 0 : due;
	for (uint64_t t = n; t > (n > max ? n - max : 0); t--) {
		unsigned x = (unsigned)((t - 1) % max);

		out[k++] = ring[x];
		switch (why[x]) {
		case SSD_WB_FORCED: s->st.wb_forced++; break;
		case SSD_WB_COMPLETE: s->st.wb_complete++; break;
		case SSD_WB_IDLE: s->st.wb_idle++; break;
		case SSD_WB_AGE: s->st.wb_age++; break;
		default: s->st.wb_background++; break;
		}
	}
	return k;
}

/* lock held: a job for e (pinned, flushing; its dirty period restarts),
 * or NULL without memory. */
static struct ssd_fj *ssd_fj_new(struct ssd *s, struct ssd_ent *e)
{
	size_t smax = codec_shard_max(s->codec);
	struct ssd_fj *j = calloc(1, sizeof(*j));

	if (j) {
		j->plain = ssd_jbuf_get(s->jplain, &s->njplain, s->slot_size);
		j->shard_buf = ssd_jbuf_get(s->jshard, &s->njshard, smax * (s->k + s->m));
	}
	if (!j || !j->plain || !j->shard_buf) {
		if (j) {
			ssd_jbuf_put(s, s->jplain, &s->njplain, j->plain);
			ssd_jbuf_put(s, s->jshard, &s->njshard, j->shard_buf);
		}
		free(j);
		return NULL;
	}
	e->flushing = true;
	e->pins++;
	e->wb_start_ns = 0;
	e->wb_nblk = 0;
	e->wb_due = false;
	memset(SSD_WMAP(s, e), 0, s->bm_bytes);
	j->s = s;
	j->e = e;
	j->obj = e->obj;
	j->base = e->base;
	j->gen = e->dirty_gen;
	j->old = e->prec;
	j->repair = e->repair;
	j->data = true;
	for (unsigned i = 0; i < s->k + s->m; i++)
		j->shards[i] = j->shard_buf + i * smax;
	return j;
}

/* Fill the free data slots with jobs for the entries due (then repair
 * entries); their intents share one commit. */
static void ssd_pick(struct ssd *s)
{
	struct ssd_ent *due[SSD_PICK_MAX];
	struct ssd_fj *jobs = NULL, **tail = &jobs;
	unsigned n, i;

	if (s->retry_at && now_ns() < s->retry_at)
		return;
	s->retry_at = 0;
	if (s->stopping || s->nflushing >= s->flush_par)
		return;
	pthread_mutex_lock(&s->lock);
	n = ssd_pick_due(s, due, MIN(s->flush_par - s->nflushing, SSD_PICK_MAX));
	for (i = 0; s->nflushing < s->flush_par; i++) {
		struct ssd_ent *e = i < n ? due[i] : ssd_pick_repair(s);
		struct ssd_fj *j;

		if (!e)
			break;
		j = ssd_fj_new(s, e);
		if (!j) {
			s->wb_next_due = 0;     /* the tick retries */
			break;
		}
		s->nflushing++;
		*tail = j;
		tail = &j->next;
	}
	pthread_mutex_unlock(&s->lock);
	if (jobs)
		ssd_ig_start(s, jobs);
}

/* Copy the pool's refusal records for ssdcache_refusals (other threads
 * must not touch the pool); the lock is taken only when one changed. */
static void ssd_refusals_tick(struct ssd *s)
{
	struct zdb_refusal rf;
	unsigned i;

	for (i = 0; i < s->nrefusals; i++) {
		zdb_pool_refusal(s->pool, i, &rf);
		if (rf.count == s->refusals[i].count)
			continue;
		pthread_mutex_lock(&s->lock);
		s->refusals[i] = rf;
		pthread_mutex_unlock(&s->lock);
	}
}

unsigned ssdcache_refusals(struct objstore *so, struct zdb_refusal *out, unsigned max)
{
	struct ssd *s = (struct ssd *)so;
	unsigned i, n = 0;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nrefusals; i++) {
		if (!s->refusals[i].count)
			continue;
		if (n < max)
			out[n] = s->refusals[i];
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void ssd_tick(struct loop_op *op, int res, uint32_t flags)
{
	struct ssd *s = container_of(op, struct ssd, ftimer.op);

	(void)res;
	(void)flags;
	if (s->stopping)
		return;
	ssd_rec_run(s);
	ssd_pick(s);
	if (!s->nflushing && now_ns() - s->jidle_ns >= SSD_BUF_IDLE_NS)
		ssd_jbuf_trim(s);
	ssd_evict_tick(s);
	ssd_scrub_tick(s);
	ssd_refusals_tick(s);
	loop_timer_arm(&s->loop, &s->ftimer, SSD_TICK_NS, ssd_tick);
}

static void ssd_kick_msg(struct loop_msg *m)
{
	struct ssd *s = container_of(m, struct ssd, kick_msg);

	pthread_mutex_lock(&s->lock);
	s->kick_posted = false;
	pthread_mutex_unlock(&s->lock);
	ssd_pick(s);
	ssd_evict_run(s);
}

void ssdflush_kick(struct ssd *s)
{
	if (s->pool_mode && !s->kick_posted && s->thread_started) {
		s->kick_posted = true;
		loop_post(&s->loop, &s->kick_msg);
	}
}

/* ---------------------------------------------------- start, recovery -- */

/* Delete what unfinished flushes and unfinished GC left in the pool. */
static int ssd_recover_intents(struct ssd *s)
{
	struct meta_txn *t = meta_rbegin(s->meta);
	uint8_t k[8], kout[8];
	struct ssd_intent in;
	uint64_t *done = NULL;
	size_t nd = 0, cap = 0, kl;
	unsigned n = 0;
	int r = 0;

	if (!t)
		return -EIO;
	ssd_be64put(k, 0);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		int vl = meta_seek(t, META_T_INTENTS, how, k, 8, kout, 8, &kl,
				   &in, sizeof(in));
		uint64_t v;
		struct ssd_ent *e;

		if (vl == -ENOENT)
			break;
		if (vl < 0) {
			r = vl;
			break;
		}
		memcpy(k, kout, 8);
		v = ssd_be64get(kout);
		if (vl != sizeof(in) || in.n != s->k + s->m) {
			log_error("ssdcache: intent record of version %" PRIu64
				  " is damaged; ignored", v);
			continue;
		}
		pthread_mutex_lock(&s->lock);
		e = ssd_find_locked(s, in.obj);
		bool committed = in.state == SSD_INTENT && e && e->prec.version == v;
		pthread_mutex_unlock(&s->lock);
		if (committed && in.old_version) {
			/* the record switched, the old version's GARBAGE was
			 * maybe not staged: it is garbage now */
			struct meta_txn *w;
			struct ssd_intent g = { .state = SSD_GARBAGE, .n = in.n,
				.obj = in.obj };
			uint8_t ok[8];

			memcpy(g.place, in.old_place, sizeof(g.place));
			ssd_be64put(ok, in.old_version);
			meta_end(t);
			w = meta_wbegin(s->meta);
			if (w) {
				meta_put(w, META_T_INTENTS, ok, 8, &g, sizeof(g));
				meta_del(w, META_T_INTENTS, kout, 8);
				meta_end(w);
			}
			ssd_gc_version(s, in.old_version, g.place, in.n);
			n++;
			t = meta_rbegin(s->meta);
			if (!t)
				return -EIO;
			continue;
		}
		if (committed) {
			if (nd == cap) {
				uint64_t *nd2 = realloc(done, (cap = cap ? 2 * cap : 16) *
							sizeof(*done));
				if (!nd2) {
					r = -ENOMEM;
					break;
				}
				done = nd2;
			}
			done[nd++] = v;
			continue;
		}
		ssd_gc_version(s, v, in.state == SSD_GARBAGE ? in.place : NULL, in.n);
		n++;
	}
	meta_end(t);
	if (nd && r == 0) {
		t = meta_wbegin(s->meta);
		for (size_t i = 0; t && i < nd; i++) {
			ssd_be64put(k, done[i]);
			meta_del(t, META_T_INTENTS, k, 8);
		}
		if (t)
			meta_end(t);
	}
	free(done);
	if (n) {
		log_info("ssdcache: deleting the shards of %u unfinished version(s)", n);
		pthread_mutex_lock(&s->lock);
		s->st.intents_recovered += n;
		pthread_mutex_unlock(&s->lock);
	}
	return r;
}

/* The cache's pool saw a backend come back without its canary: every
 * shard it held is gone, so a scrub finds the versions to repair. */
static void ssd_pool_event(void *arg, unsigned idx, int ev)
{
	struct ssd *s = arg;
	struct zdb_backend *b = zdb_pool_backend(s->pool, idx);

	if (ev == ZDB_EV_EMPTIED && !s->stopping)
		ssd_scrub_emptied(s, b ? b->cfg.name : "?");
}

int ssdflush_start(struct ssd *s)
{
	struct zdb_pool_opts po = { 0 };
	struct zdb_refusal *rf;
	int r;
	unsigned i;

	s->kick_msg.fn = ssd_kick_msg;
	r = workq_init(&s->wq, 2);
	if (r < 0)
		return r;
	s->wq_started = true;
	po.wq = &s->wq;
	po.fault_wrap = s->fault_wrap;
	po.on_event = ssd_pool_event;
	po.event_arg = s;
	s->nctx = MIN(s->flush_par, SSD_ENC_CTX);
	s->ctxs = calloc(s->nctx, sizeof(*s->ctxs));
	s->ctx_busy = calloc(s->nctx, sizeof(*s->ctx_busy));
	s->jplain = calloc(s->flush_par, sizeof(*s->jplain));
	s->jshard = calloc(s->flush_par, sizeof(*s->jshard));
	if (!s->ctxs || !s->ctx_busy || !s->jplain || !s->jshard)
		return -ENOMEM;
	for (i = 0; i < s->nctx; i++) {
		r = codec_ctx_new(s->codec, &s->ctxs[i]);
		if (r < 0)
			return r;
	}
	r = zdb_pool_open(&s->loop, s->pool_cfg, &po, &s->pool);
	if (r < 0) {
		log_error("ssdcache: cannot open the pool: %s", strerror(-r));
		return r;
	}
	rf = calloc(zdb_pool_size(s->pool), sizeof(*rf));
	if (!rf)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	s->refusals = rf;
	s->nrefusals = zdb_pool_size(s->pool);
	pthread_mutex_unlock(&s->lock);
	zdb_pool_wait_connected(s->pool, 10ull * 1000000000);
	r = ssd_recover_intents(s);
	if (r < 0)
		return r;
	loop_timer_arm(&s->loop, &s->ftimer, SSD_TICK_NS, ssd_tick);
	return 0;
}

/* Flushes in flight finish (their commits are local), up to the close
 * wait (ssdcache_set_close_wait: a stopping daemon whose drain gave up on
 * a paused pool must not wait for the pool's request timeouts); then the
 * pool is closed under them: its requests fail (ECANCELED), the jobs end
 * as any failed flush (their objects stay pool-dirty, flushed at the next
 * open) and their local commits still complete here. */
void ssdflush_stop(struct ssd *s)
{
	uint64_t t0 = now_ns(), deadline = t0 + 60ull * 1000000000;
	uint64_t wait = __atomic_load_n(&s->close_wait_ns, __ATOMIC_RELAXED);
	uint64_t cut = wait ? t0 + wait - 1 : deadline;
	bool cut_done = false;
	unsigned i;

	s->stopping = true;
	loop_timer_cancel(&s->loop, &s->ftimer);
	while ((s->nflushing || s->nrec || s->ftimer.armed) &&
	       now_ns() < deadline) {
		if (s->pool && !cut_done && now_ns() >= cut &&
		    (s->nflushing || s->nrec)) {
			cut_done = true;
			log_info("ssdcache: closing: %u flush(es) to the pool cut short "
				 "(those objects are flushed at the next open)",
				 s->nflushing + s->nrec);
			zdb_pool_close(s->pool);
		}
		loop_run_once(&s->loop, 10ull * 1000000);
	}
	if (s->pool)
		ssd_sweep_failed(s);
	while (s->ngc && now_ns() < deadline) {
		if (s->pool && !cut_done && now_ns() >= cut) {
			cut_done = true;
			zdb_pool_close(s->pool);        /* deletions: next open */
		}
		loop_run_once(&s->loop, 10ull * 1000000);
	}
	if (s->nflushing || s->nrec || s->ngc)
		log_warn("ssdcache: closing with %u flush(es) and %u deletion(s) "
			 "unfinished (recovered at the next open)",
			 s->nflushing + s->nrec, s->ngc);
	if (s->pool) {
		zdb_pool_close(s->pool);
		while (!zdb_pool_closed(s->pool))
			loop_run_once(&s->loop, 10ull * 1000000);
		zdb_pool_free(s->pool);
		s->pool = NULL;
	}
	pthread_mutex_lock(&s->lock);
	free(s->refusals);
	s->refusals = NULL;
	s->nrefusals = 0;
	pthread_mutex_unlock(&s->lock);
	ssd_scrub_free(s);
	if (s->wq_started) {
		workq_fini(&s->wq);
		s->wq_started = false;
	}
	for (i = 0; s->ctxs && i < s->nctx; i++)
		codec_ctx_free(s->ctxs[i]);
	free(s->ctxs);
	free(s->ctx_busy);
	if (s->jplain && s->jshard)
		ssd_jbuf_trim(s);
	free(s->jplain);
	free(s->jshard);
	s->jplain = s->jshard = NULL;
	free(s->failed);
	s->failed = NULL;
	s->nfailed = 0;
	s->ctxs = NULL;
	s->ctx_busy = NULL;
}

struct ssd_faultmsg {
	struct loop_msg msg;
	struct ssd *s;
	unsigned idx;
	const struct zdb_fault *f;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int res;
};

static void ssd_fault_msg(struct loop_msg *m)
{
	struct ssd_faultmsg *fm = container_of(m, struct ssd_faultmsg, msg);

	fm->res = fm->s->pool ? zdb_pool_set_fault(fm->s->pool, fm->idx, fm->f)
			      : -EINVAL;
	pthread_mutex_lock(&fm->lock);
	fm->done = true;
	pthread_cond_signal(&fm->cond);
	pthread_mutex_unlock(&fm->lock);
}

int ssdcache_set_fault(struct objstore *so, unsigned idx, const struct zdb_fault *f)
{
	struct ssd *s = (struct ssd *)so;
	struct ssd_faultmsg fm = { .s = s, .idx = idx, .f = f };

	if (!s->pool_mode || !s->fault_wrap || !s->thread_started)
		return -EINVAL;
	pthread_mutex_init(&fm.lock, NULL);
	pthread_cond_init(&fm.cond, NULL);
	fm.msg.fn = ssd_fault_msg;
	loop_post(&s->loop, &fm.msg);
	pthread_mutex_lock(&fm.lock);
	while (!fm.done)
		pthread_cond_wait(&fm.cond, &fm.lock);
	pthread_mutex_unlock(&fm.lock);
	pthread_mutex_destroy(&fm.lock);
	pthread_cond_destroy(&fm.cond);
	return fm.res;
}
