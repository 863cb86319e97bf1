/*
 * ssd.c — ssdcache: the object store on a local SSD (issue 6).  This file is
 * the store itself (slots, validity, index, durability, bases, threads,
 * backpressure); ssdflush.c is its pool side (flusher, intents, GC, and
 * what each mode survives).
 *
 * Two modes.  Local only (no pool configured): the cache holds the only
 * copy of every object; nothing is evicted and a full cache fails writes
 * with -ENOSPC.  With a pool: every write makes its object pool-dirty and
 * the flusher (ssdflush.c) turns it into a new pool version; clean objects
 * are evicted and read back from the pool on a miss, so the cache holds
 * the working set, not the volume.
 *
 * Layout of the cache file (or block device):
 *
 *     0            4 KiB                4 KiB + slot_size          ...
 *     ┌────────────┬────────────────────┬────────────────────┬──────
 *     │ header     │ slot 0             │ slot 1             │ ...
 *     └────────────┴────────────────────┴────────────────────┴──────
 *
 *   header: magic, format version, slot size, slot count, pool id, a random
 *   instance id, FNV-1a checksum.  Anything that does not match (magic,
 *   version, checksum, pool id, slot size) is refused at open with a logged
 *   reason — a foreign or damaged cache is never used silently.
 *
 * Index.  One record per object in META_T_CACHE_INDEX (key: object id, big
 * endian): {slot (or none: evicted, or new), flags, base, validity bitmap,
 * one bit per 4 KiB block}.
 * Key 0 binds the index to one cache file (its instance id and geometry):
 * an index found with another cache file is refused (-ESTALE), since its
 * slots would point at someone else's bytes.
 *
 * Durability (the write-back contract of a FLUSH).  Writes go to the page
 * cache with io_uring WRITE (not O_DIRECT: NBD payload buffers are not
 * aligned and small writes coalesce in the page cache; fdatasync at FLUSH
 * gives the same guarantee with no bounce copy).  A block's valid bit is set
 * in memory when its write COMPLETES; a FLUSH snapshots the index records
 * changed so far, fdatasyncs the file (IORING_OP_FSYNC, DATASYNC, on the
 * caller's ring), and only then stages the snapshot into the meta store;
 * vol_flush then commits it with the maps.  So a committed valid bit always
 * names data that reached the SSD before the commit: after SIGKILL or power
 * loss, every block written and covered by a completed FLUSH reads back;
 * blocks written after the last FLUSH read back as either their old or
 * their new 4 KiB content.  Records staged by concurrent flushes carry a
 * per-object version, and a record older than the one already staged is
 * skipped, so staging order cannot go backwards.
 *
 * Bases (copy-on-write).  An object created from a base reads blocks it
 * never wrote from the base, recursively (lazy COW: no copy at creation).
 * A write that covers a block partially fills the rest of that block from
 * the base chain first (read-modify-write of one block, serialized per
 * object so two partial writes of one block cannot undo each other).  A
 * dropped object that is still the base of a live one is retained
 * ("dependents" count) and freed when its last dependent is dropped, has
 * every block of its own, or is evicted (an evicted object reads from its
 * pool version, never through its base) — in the last two cases only once
 * the dependent's record without the base is staged (obent), so a crash
 * never finds a committed record naming a base whose record is gone.  A
 * base's content is fixed for its dependents (the memstore contract: as
 * if copied at creation), but vol may write in place an object some other
 * object was created from; so before a write lands on an entry with
 * dependents, each direct dependent that still reads the written blocks
 * through it stops doing so: one with a pool version drops its base link
 * and reads those blocks from its version (which holds them as they
 * were), the others get the blocks copied into their slot (synchronously:
 * a rare path; stats.cow_blocks).  The write waits while a dependent is
 * being flushed or written, and, when a dependent changed, until an index
 * flush (fdatasync, stage) and its commit made the change durable
 * (ssd_dcommit: else a crash would show the dependent the base's new
 * bytes).  Reads already in flight are covered too (below).  An object
 * created by a write submitted inside a write section (vol's) has its
 * record {base, no slot, no valid block} staged in that section, so it
 * commits with vol's map entry that names it: after a crash the index
 * knows it and its base, and a base re-dropped by vol at reopen is kept.
 *
 * Reads in flight through a base.  A read resolves each block under the
 * mutex and preads it after (io_uring, possibly punted), so a read of a
 * dependent that resolved blocks to its base's slot could pread them after
 * a write to the base detached it and landed in place: the new bytes, in
 * a snapshot.  Each pread of a read that goes to another object's slot
 * than the read's own object is listed on that entry (vreads: entry, block
 * range) from resolution until the preads completed; a write, under the
 * mutex, after its detach and before its data phase submits anything,
 * marks the listed reads overlapping its blocks stale; a stale read, once
 * its preads completed, resolves and reads again — it then finds the
 * blocks in its own copy or pool version (the detach came first).  Why
 * retry rather than make the write wait for those readers: the volume's
 * writes are never delayed by snapshot readers, the retry is rare (a write
 * to exactly those blocks during the read) and bounded (each one detached
 * the blocks it retried for: later passes no longer read them through that
 * base).  Cost without dependents: one pointer test per run of blocks and
 * one per write.  A read served from a fetch's plaintext needs no check:
 * the plaintext is an immutable pool version and the serve decision is
 * taken under the mutex.
 *
 * Fills in flight through a base.  A write's read-modify-write of a
 * partial edge block, and a detach's copy of a block into a dependent,
 * read the block from wherever it resolves along the chain — possibly a
 * far base's slot (3 → 2 → 1: 3's rmw reads 1's slot; 1's write detaches
 * only its direct dependent 2, and a direct dependent's write in progress
 * is all it waits for).  Such a fill from another entry's slot is listed
 * on that entry's vreads too, from its resolution (under the mutex) until
 * its pread completed; a write to the entry, at the point where it would
 * mark reads stale, instead WAITS while a fill listed there overlaps its
 * blocks (stats.fill_waits; woken when the fill unlists).  Once it goes
 * on, its detach is done under the same mutex hold, so no later fill
 * resolves those blocks to it; while it waits, younger writes that could
 * list one queue behind it (below): no restart of a dependent's write.
 * Why wait here when reads retry: a fill is a write's, which the base's
 * write may delay like the direct dependents' writes it already waits for
 * (snapshot READERS never delay it), and a retried rmw would have to undo
 * its data phase; the list (not a walk of the dependents' chains) is
 * exact even when the chain changes meanwhile (2 switched to its pool
 * version after 3's rmw resolved through it).  That case remains for a
 * fill resolved after the switch: its block is then in the pool, and the
 * write lets go of its data phase and prepares again (fetch first), as a
 * detach's copy does.
 * Cost without dependents: none (the list is empty).  Tests:
 * check_ssdpool test_rmw_chain* (ssd_rmw_hook holds an rmw) and
 * test_detach_copy (ssd_copy_hook holds a detach's copy on its thread).
 *
 * Writer fairness (a base write waits a bounded time).  The waits above
 * (a direct dependent's write, flush or copy in progress; a fill listed
 * on the entry) each end, but without more a stream of dependents' writes
 * could keep one of them going at every retry: a write W to E wakes when
 * a dependent's write ends and finds the next one.  So the first time W
 * waits for E's dependents it takes E's gate (E->gates, until W's data
 * phase starts or W fails), and a write X submitted after W (ssd_req.seq)
 * queues behind it, before anything of X counts (writing, fill, copy:
 * the check is the first step of its preparation), when X's object is a
 * direct dependent of E (any blocks: W waits for their writes whatever
 * they write) or has E farther down its chain and X's blocks overlap W's
 * (its rmw fill or its detach copy could resolve to E's slot).  W then
 * waits only for what was past its preparation when W took the gate and
 * for writes older than W, both finite.  No deadlock: every wait edge
 * goes either from a write to an OLDER gate holder (gate), or to work
 * that waits for no gate — a write past its preparation (its rmw lock is
 * taken in FIFO order by writes also past it, then preads and one write;
 * one that finds its block moved to the pool leaves its data phase and
 * prepares again), a flush, a detach's synchronous copy, an index commit,
 * a fetch.  Sequence numbers only grow, so gate edges form no cycle, and
 * W holding E's gate while queued behind an older write's gate at one of
 * E's bases is the same order.  A gated write holds its pins but no
 * writing count, rmw lock, slot or token it takes later, and gives back a
 * dirty token its object holds for no write yet (the gate holder may wait
 * for one; review5); it waits on its
 * own list (s->gw_head, woken when a gate is left), not on sw_head, which
 * the evictor and the flusher read as writes waiting for slots.  What stays
 * unbounded: objects CREATED from E back to back while W waits (each new
 * dependent is detached with a copy and an index commit before W lands);
 * vol creates them at snapshots, not per write.  Cost without waiting
 * base writes: a sequence number and one counter test per write
 * (s->ngates).  Test: check_ssdpool test_base_write_fair.
 *
 * Threads.  Every op is submitted on the caller's loop and its file I/O is
 * submitted there too (reads hit the cache file directly from the caller's
 * ring).  The in-memory index (hash of entries) is guarded by one mutex held
 * only for lookups and bitmap updates, never across I/O or a meta section.
 * drop() called inside a write section (vol's, with its DROPPED mark)
 * stages the record's deletion and its pool version's GARBAGE intent right
 * there, so both commit together (for an entry still some object's base:
 * the DROPPED flag of its record; the record goes when its last dependent
 * lets go, at reopen too); called elsewhere (or for an entry still
 * pinned whose record a flush in flight restages) it queues the deletion
 * for the cache thread (own loop), since it must not open a section.  A
 * freed slot is reused only after its deletion has been staged, so two
 * committed records never claim one slot.  In-flight ops pin the entries they touch; a pinned entry is freed
 * when its last op completes.
 *
 * Index records with a pool also carry the object's committed pool version
 * (version, placement, packed codec meta), a DIRTY flag (writes newer
 * than that version) and a REPAIR flag (that version is degraded: the
 * flusher rewrites it once the pool is whole, see ssdflush.c).  Key 0's
 * `clean` flag is cleared durably at open and set by a clean close: after
 * an unclean stop a slot may hold writes newer than its last record (the
 * page cache outlives a SIGKILL), so every object is flushed again rather
 * than let the pool and the cache disagree.
 *
 * Backpressure.  With a pool, at most dirty_max objects may be pool-dirty:
 * the write that would dirty one more object waits in a FIFO (the object is
 * created and its base held at submission, as the contract wants; only its
 * data waits, with the caller's buffer, no copy) and resumes, on its own
 * loop, when a flush commits and returns a token.  Memory stays flat
 * whatever the pool's speed; nothing is dropped.
 *
 * Miss path (pool mode).  An object not in memory is looked up in the
 * index (inside the caller's meta section: meta_thread_txn; else a read
 * section of its own), never while holding the mutex.  Each block of an
 * op resolves along the object's chain to a slot (valid bit), zeros, or
 * the pool version of an entry marked from_pool (an evicted object, or a
 * resident one whose base is gone; such an entry has no base link: its
 * pool version holds every block).  Pool blocks are fetched by the cache
 * thread (which owns the pool and the workq): only the data shards that
 * cover them (codec_range_shards; all k+m with a rebuild if one is
 * missing or bad); then ONE workq job decodes them (AES-GCM per data
 * shard, with one of SSD_FETCH_PAR codec contexts: at most one busy per
 * worker) and pwrites the blocks into the entry's slot, so neither the
 * decryption nor the copy into the page cache runs on the cache thread,
 * which only moves shards; back on it the valid bits are set (after the
 * data is in the slot) and the op resolves again on its own loop, the
 * fetched entry pinned by it meanwhile.  A waiting read whose every block
 * resolves to the fetch's plaintext (not a block valid in a slot: it may
 * be newer; not a dependent's own block) is copied from it by that job,
 * after the slot write, and completes without a second pass and its read
 * back from the slot (stats.read_served): the common case of a cold
 * stream, whose chunk is still in the CPU caches then.  Up to SSD_FETCH_MAX fetches run
 * at once (FIFO queue behind them): 16 x k shard requests keep the pool's
 * backends pipelined, while deeper (32) measured slower on 2 busy cores
 * (more buffers in flight than the CPU caches hold: the shards are cold
 * when decoded).  Memory: each fetch holds one buffer, a slot's plaintext
 * then (k+m) shards, so at most SSD_FETCH_MAX x (chunk + (k+m) x shard)
 * bytes (16 x 2.3 MiB with 1 MiB chunks, k=16 m=4); the buffers are reused
 * (no allocation, zeroing or page fault per fetch in a stream of misses)
 * and freed once no fetch ran for SSD_BUF_IDLE_NS (1 s): freed as soon as
 * none ran, a QD8 cold read's buffers were re-allocated and page-faulted
 * in the decrypt and the shard receives (perf, page-faults event), since
 * such a stream often has no fetch in flight for a moment.  One fetch per
 * entry at a time; concurrent misses wait on it (entry's fwait list).  A fetch the pool
 * cannot serve (backends down, paused, timing out) is retried with backoff
 * (50 ms doubling to 2 s) for 2 minutes before its ops fail -EIO, so a
 * paused pool makes reads and writes wait, as the flusher does; a version
 * whose placement lacks k shards fails at once.  WRITES: an entry
 * whose blocks come from the pool is fetched whole before any write to it
 * (so a written object never mixes local blocks with pool-only ones, and a
 * fetch never races a write to the same slot); a partial edge block whose
 * old bytes a base has only in the pool is fetched first.  The flusher's
 * whole-object read and prefetch (NBD_CMD_CACHE, vol warm) take the same
 * path; prefetch completes when the range is in the slot.  Read-ahead: a
 * miss of a read that starts where the previous read of the object ended
 * (a sequential stream, including the first read at offset 0) fetches
 * through the end of the object, so a stream costs one fetch (all k
 * shards at once) per object instead of one per read (stats.readaheads).
 * Read-ahead ACROSS objects is the daemon's (nbdsrv/export_vol.c: a window
 * of chunks ahead of a session's sequential stream, prefetched on the warm
 * thread); stats.read_fetches counts the fetches a read had to start
 * itself, i.e. the misses no prefetch hid.
 *
 * Eviction (pool mode; local only never evicts): S3-FIFO.  A slot taken
 * enters the small FIFO (10 % of the slots), or the main FIFO when its id
 * is in the ghost filter (evicted from small recently).  Reads bump a 2-bit
 * frequency (a read continuing the previous one sequentially does not: a
 * streamed object is one access).  At small's head: read again → main,
 * else evicted (id to the ghost).  At main's head: frequency > 0 →
 * decrement and reinsert, else evicted.  Why not LRU or CLOCK: a one-pass
 * scan of a large volume touches every object exactly once and, under LRU,
 * pushes out the whole hot set (CLOCK likewise: each scanned object gets a
 * fresh reference bit); S3-FIFO lets one-hit objects leave through the
 * small queue quickly while the main queue holds what was re-used, with
 * FIFO cost (no list move per hit).  Only clean entries are victims:
 * committed pool version, not pool-dirty, not flushing or fetching, not
 * pinned, no dependents reading through them.  The cache thread keeps a
 * reserve of free slots (refills from below `low` to `high`: 1/32 and 1/16
 * of the slots), so a write normally takes a slot without waiting; when
 * none can be freed (all dirty) the write waits on a list and resumes when
 * a batch frees slots — never -ENOSPC with a pool.  Crash safety of slot
 * reuse: a batch of victims gets records without a slot staged in one
 * write section, then a meta commit, and only after THAT commit are the
 * slots free (a staged-only record could lose the race with a crash and a
 * committed record would name the new owner's bytes).  Evicted entries
 * leave memory; memory is bounded by slots + dirty objects + entries pinned
 * by ops in flight, not by volume size.
 *
 * Cache file lost.  Opening with create, a missing or empty cache file and
 * a non-empty index: local only, refused (-ESTALE: the data is gone).
 * With a pool the index is re-bound to the new file: every record loses its
 * slot (objects read from their pool version on demand).  Records marked
 * DIRTY (writes not yet in the pool) go back to their pool version, or to
 * their base if never flushed: in writethrough mode that loses only writes
 * no FLUSH covered (counted, logged, stats.rebind_reverted); in writeback
 * mode a FLUSH did cover them, so the open is refused (-ESTALE, naming how
 * many objects) unless opts.discard_dirty.
 *
 * What each mode survives: see ssdflush.c (writeback: SIGKILL and power
 * loss with the SSD intact; writethrough: also the loss of the SSD, every
 * FLUSHed byte read back from the pool).
 *
 * Not done: lock striping of the index (one mutex, short sections); a
 * read waiting for a fetch gets a copy of the plaintext, it is not
 * decrypted straight into its buffer.  O_DIRECT slot fills were measured
 * and dropped (bench/cache.md, "coldread"): they cost more CPU per GiB,
 * since the reads that find their chunk already fetched then copy from
 * pages the disk just wrote (cold in the CPU caches) instead of pages the
 * buffered fill just wrote.
 */
#include "cache/ssd.h"

#include <errno.h>
#include <sodium.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

size_t ssd_rec_len(const struct ssd *s)
{
	return sizeof(struct ssd_rec) + s->bm_bytes;
}

static uint64_t fnv1a(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	while (n--) {
		h ^= *b++;
		h *= 0x100000001b3ull;
	}
	return h;
}

void ssd_be64put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

uint64_t ssd_be64get(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint64_t slot_off(const struct ssd *s, uint32_t slot)
{
	return SSD_HDR_SIZE + (uint64_t)slot * s->slot_size;
}

static bool bit_get(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

static void bit_set(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

/* ------------------------------------------------------ hash of entries -- */

static size_t ssd_hash(uint64_t id, size_t nb)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (size_t)(id & (nb - 1));
}

static struct ssd_ent *ssd_find(struct ssd *s, uint64_t obj)
{
	struct ssd_ent *e;

	if (!obj)
		return NULL;
	for (e = s->tab[ssd_hash(obj, s->nbuckets)]; e; e = e->hnext)
		if (e->obj == obj)
			return e;
	return NULL;
}

struct ssd_ent *ssd_find_locked(struct ssd *s, uint64_t obj)
{
	return ssd_find(s, obj);
}

static int ssd_grow(struct ssd *s)
{
	size_t nb = s->nbuckets * 2, i;
	struct ssd_ent **nt = calloc(nb, sizeof(*nt));

	if (!nt)
		return -ENOMEM;
	for (i = 0; i < s->nbuckets; i++) {
		struct ssd_ent *e = s->tab[i], *next;

		for (; e; e = next) {
			size_t h = ssd_hash(e->obj, nb);

			next = e->hnext;
			e->hnext = nt[h];
			nt[h] = e;
		}
	}
	free(s->tab);
	s->tab = nt;
	s->nbuckets = nb;
	return 0;
}

static void ssd_unlink(struct ssd *s, struct ssd_ent *e)
{
	struct ssd_ent **pp = &s->tab[ssd_hash(e->obj, s->nbuckets)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	s->nents--;
}

void ssd_mark_dirty(struct ssd *s, struct ssd_ent *e)
{
	e->ver++;
	if (!e->on_dirty) {
		e->on_dirty = true;
		e->dnext = s->dirty;
		s->dirty = e;
	}
}

static void ssd_dirty_remove(struct ssd *s, struct ssd_ent *e)
{
	struct ssd_ent **pp;

	if (!e->on_dirty)
		return;
	for (pp = &s->dirty; *pp != e; pp = &(*pp)->dnext)
		;
	*pp = e->dnext;
	e->on_dirty = false;
}

static bool ssd_all_valid(const struct ssd *s, const struct ssd_ent *e)
{
	for (uint64_t b = 0; b < s->nblk; b++)
		if (!bit_get(e->valid, b))
			return false;
	return true;
}

/* ------------------------------------------------ S3-FIFO bookkeeping -- */

static void q_push(struct ssd *s, struct ssd_ent *e, int q)
{
	e->q = (uint8_t)q;
	e->qnext = NULL;
	e->qprev = s->qt[q];
	if (s->qt[q])
		s->qt[q]->qnext = e;
	else
		s->qh[q] = e;
	s->qt[q] = e;
	s->qn[q]++;
}

static void q_remove(struct ssd *s, struct ssd_ent *e)
{
	int q = e->q;

	if (q == SSD_Q_NONE)
		return;
	if (e->qprev)
		e->qprev->qnext = e->qnext;
	else
		s->qh[q] = e->qnext;
	if (e->qnext)
		e->qnext->qprev = e->qprev;
	else
		s->qt[q] = e->qprev;
	e->qprev = e->qnext = NULL;
	e->q = SSD_Q_NONE;
	s->qn[q]--;
}

/* The ghost FIFO: ids evicted from the small queue, remembered for about
 * nslots evictions (direct-mapped: a colliding id overwrites; a hint). */
static void ghost_add(struct ssd *s, uint64_t obj)
{
	size_t h = ssd_hash(obj, s->ghost_mask + 1);

	s->ghost_id[h] = obj;
	s->ghost_seq[h] = ++s->ghost_now;
}

static bool ghost_take(struct ssd *s, uint64_t obj)
{
	size_t h = ssd_hash(obj, s->ghost_mask + 1);

	if (s->ghost_id[h] != obj || s->ghost_now - s->ghost_seq[h] > s->nslots)
		return false;
	s->ghost_id[h] = 0;
	return true;
}

void ssd_evict_kick(struct ssd *s)
{
	ssdflush_kick(s);
}

/* lock held: give e (no slot) a free slot; -ENOSPC when none is free. */
static int ssd_slot_take(struct ssd *s, struct ssd_ent *e)
{
	if (!s->nfree)
		return -ENOSPC;
	e->slot = s->free_slots[--s->nfree];
	memset(e->valid, 0, s->bm_bytes);
	if (s->pool_mode) {
		e->freq = 0;
		q_push(s, e, ghost_take(s, e->obj) ? SSD_Q_MAIN : SSD_Q_SMALL);
		if (s->nfree < s->low)
			ssd_evict_kick(s);
	}
	return 0;
}

/* New entry for obj, without a slot yet (lock held); bent: its base's
 * entry or NULL (zeros). */
static int ssd_ent_new(struct ssd *s, uint64_t obj, struct ssd_ent *bent,
		       struct ssd_ent **out)
{
	struct ssd_ent *e;

	if (s->nents >= s->nbuckets && ssd_grow(s) < 0)
		return -ENOMEM;
	e = calloc(1, sizeof(*e) + 2 * s->bm_bytes);
	if (!e)
		return -ENOMEM;
	e->obj = obj;
	e->slot = SSD_NOSLOT;
	e->bent = bent;
	e->base = bent ? bent->obj : 0;
	if (bent)
		bent->deps++;
	e->hnext = s->tab[ssd_hash(obj, s->nbuckets)];
	s->tab[ssd_hash(obj, s->nbuckets)] = e;
	s->nents++;
	*out = e;
	return 0;
}

/* An entry that may leave memory: its data is in the pool only, its
 * record says so, and nothing refers to it. */
static bool ssd_forgettable(const struct ssd *s, const struct ssd_ent *e)
{
	return s->pool_mode && !e->dropped && e->slot == SSD_NOSLOT &&
	       e->from_pool && !e->bent && e->prec.version && !e->pins &&
	       !e->deps && !e->odeps && !e->obent && !e->on_pdirty && !e->flushing && !e->on_dirty &&
	       !e->fetching && !e->fwait && !e->dirty_tok && !e->on_repair &&
	       e->staged_ver;
}

static void ssd_post_dels(struct ssd *s);
static void ssd_queue_del(struct ssd *s, struct ssd_del d);

/* Free e if nothing needs it any more (lock held); may cascade to bases.
 * A clean entry without a slot leaves memory (its record stays). */
static void ssd_maybe_free(struct ssd *s, struct ssd_ent *e)
{
	if (e && ssd_forgettable(s, e)) {
		ssd_unlink(s, e);
		free(e);
		return;
	}
	while (e && e->dropped && !e->deps && !e->odeps && !e->pins) {
		struct ssd_ent *b = e->bent, *ob = e->obent;

		ssd_unlink(s, e);
		q_remove(s, e);
		ssd_dirty_remove(s, e);
		if (e->dirty_tok)
			ssd_tok_release(s, e);
		if (e->on_pdirty) {
			struct ssd_ent **pp = &s->pdirty;

			while (*pp != e)
				pp = &(*pp)->pnext;
			*pp = e->pnext;
			e->on_pdirty = false;
			ssd_wt_wake(s);
		}
		ssd_repair_set(s, e, false);
		if (!e->staged_ver) {
			/* never staged: no record to delete */
			if (e->slot != SSD_NOSLOT)
				s->free_slots[s->nfree++] = e->slot;
		} else if (e->del_staged) {
			/* drop() staged the deletion and nothing restaged the
			 * record since: the slot is free, the pool version goes
			 * after the commit */
			if (e->slot != SSD_NOSLOT)
				s->free_slots[s->nfree++] = e->slot;
			ssd_queue_del(s, (struct ssd_del){ .obj = e->obj,
				.slot = SSD_NOSLOT, .prec = e->prec, .staged = true });
		} else if (s->ndels < s->cap_dels ||
			   (s->dels = realloc(s->dels, (s->cap_dels = s->cap_dels
			    ? 2 * s->cap_dels : 64) * sizeof(*s->dels)))) {
			s->dels[s->ndels++] = (struct ssd_del){ .obj = e->obj,
				.slot = e->slot, .prec = e->prec };
			ssd_post_dels(s);
		} else {
			log_error("ssdcache: out of memory: slot %u of object %"
				  PRIu64 " leaked until restart", e->slot, e->obj);
			s->cap_dels = 0;
			s->ndels = 0;
		}
		free(e);
		if (ob) {
			/* e's record goes (staged or queued) before ob's */
			ob->odeps--;
			ssd_maybe_free(s, ob);
		}
		if (b)
			b->deps--;
		e = b;
	}
}

/* lock held: d stops reading through its base (every block its own, or
 * detached).  The base stays held (obent) until a record of d without it
 * is staged: otherwise a dropped base's record could be deleted while d's
 * committed record still names it, and after a crash d's blocks whose
 * valid bits were not yet committed would read as zeros. */
static void ssd_base_unlink(struct ssd *s, struct ssd_ent *d)
{
	struct ssd_ent *b = d->bent;

	d->bent = NULL;
	d->base = 0;
	ssd_mark_dirty(s, d);
	if (!b)
		return;
	b->deps--;
	if (d->obent) {                 /* not expected: one base per life */
		d->obent->odeps--;
		ssd_maybe_free(s, d->obent);
	}
	d->obent = b;
	d->obent_ver = d->ver;
	b->odeps++;
}

/* lock held: a record of d at version ver (or none: evicted, base 0) is
 * staged; the former base it no longer names may go. */
static void ssd_obent_release(struct ssd *s, struct ssd_ent *d, uint64_t ver)
{
	struct ssd_ent *b = d->obent;

	if (!b || ver < d->obent_ver)
		return;
	d->obent = NULL;
	b->odeps--;
	ssd_maybe_free(s, b);
}

void ssd_unpin(struct ssd *s, struct ssd_ent *e)
{
	e->pins--;
	ssd_maybe_free(s, e);
}

void ssd_pool_dirty(struct ssd *s, struct ssd_ent *e)
{
	if (!e->dirty_tok) {
		e->dirty_tok = true;
		s->tokens++;
	}
	e->dirty_gen = ++s->wgen;
	e->wb_last_ns = now_ns();
	if (!e->wb_start_ns)
		e->wb_start_ns = e->wb_last_ns;
	if (!e->on_pdirty) {
		e->on_pdirty = true;
		e->first_dirty = e->dirty_gen;
		e->pnext = s->pdirty;
		s->pdirty = e;
		s->wb_next_due = MIN(s->wb_next_due,
				     e->wb_last_ns + MIN(s->flush_idle_ns, s->flush_age_ns));
	}
}

void ssd_wb_written(struct ssd *s, struct ssd_ent *e, uint64_t b0, uint64_t b1)
{
	uint64_t *wmap = SSD_WMAP(s, e);

	if (e->wb_nblk >= s->nblk)
		return;
	for (uint64_t b = b0; b < b1; b++)
		if (!bit_get(wmap, b)) {
			bit_set(wmap, b);
			e->wb_nblk++;
		}
	if (e->wb_nblk >= s->nblk) {
		/* complete: nothing to gain from waiting */
		s->wb_kick = true;
		ssdflush_kick(s);
	}
}

void ssd_repair_set(struct ssd *s, struct ssd_ent *e, bool on)
{
	on = on && !e->dropped;
	e->repair = on;
	if (on && !e->on_repair) {
		e->on_repair = true;
		e->rnext = s->repair;
		s->repair = e;
		s->nrepair++;
	} else if (!on && e->on_repair) {
		struct ssd_ent **pp = &s->repair;

		while (*pp != e)
			pp = &(*pp)->rnext;
		*pp = e->rnext;
		e->on_repair = false;
		s->nrepair--;
	}
}

static void ssd_pin(struct ssd_req *r, struct ssd_ent *e)
{
	if (r->npinned == r->cap_pinned) {
		unsigned nc = r->cap_pinned ? 2 * r->cap_pinned : 8;
		struct ssd_ent **np = realloc(r->pinned, nc * sizeof(*np));

		if (!np) {
			r->err = -ENOMEM;
			return;
		}
		r->pinned = np;
		r->cap_pinned = nc;
	}
	e->pins++;
	r->pinned[r->npinned++] = e;
}

static void ssd_unpin_all(struct ssd *s, struct ssd_req *r)
{
	unsigned i;

	for (i = 0; i < r->npinned; i++) {
		r->pinned[i]->pins--;
		ssd_maybe_free(s, r->pinned[i]);
	}
	r->npinned = 0;
}

/* Where block blk of the object whose first chain entry is e lives: the
 * entry holding it valid in its slot, or the entry whose pool version holds
 * it (*pool set), or NULL (zeros). */
static struct ssd_ent *ssd_source(struct ssd_ent *e, uint64_t blk, bool *pool)
{
	*pool = false;
	for (; e; e = e->bent) {
		if (e->slot != SSD_NOSLOT && bit_get(e->valid, blk))
			return e;
		if (e->from_pool) {
			if (e->hole)
				return NULL;
			*pool = true;
			return e;
		}
	}
	return NULL;
}

/*
 * lock held: obj's entry, loaded from its index record when it is not in
 * memory (an evicted object), or NULL (no record: a new object).  May drop
 * and retake the lock.  The record is read in the section the calling
 * thread has open (an op submitted from inside vol's section), else in a
 * read section of its own.
 */
struct ssd_ent *ssd_find_load(struct ssd *s, uint64_t obj)
{
	struct ssd_ent *e = ssd_find(s, obj);
	size_t rl = ssd_rec_len(s);
	struct meta_txn *t;
	struct ssd_rec rec;
	bool own = false;
	uint8_t k[8], *val;
	int vl;

	if (e || !obj || !s->pool_mode)
		return e;
	pthread_mutex_unlock(&s->lock);
	val = malloc(rl);
	t = meta_thread_txn(s->meta);
	if (!t) {
		t = meta_rbegin(s->meta);
		own = true;
	}
	ssd_be64put(k, obj);
	vl = t && val ? meta_get(t, META_T_CACHE_INDEX, k, 8, val, rl) : -EIO;
	if (own && t)
		meta_end(t);
	pthread_mutex_lock(&s->lock);
	e = ssd_find(s, obj);
	if (e || vl != (int)rl) {
		free(val);
		return e;
	}
	memcpy(&rec, val, sizeof(rec));
	free(val);
	if (rec.flags & SSD_F_DROPPED)
		return NULL;
	if (ssd_ent_new(s, obj, NULL, &e) < 0)
		return NULL;
	e->prec = rec.p;
	e->hole = rec.flags & SSD_F_HOLE;
	e->ver = e->staged_ver = 1;
	if (e->prec.version) {
		e->from_pool = true;
	} else if (rec.base) {
		/* not evicted (never is without a pool version): its base */
		e->bent = ssd_find(s, rec.base);
		if (e->bent) {
			e->bent->deps++;
			e->base = rec.base;
		}
	}
	if (rec.flags & SSD_F_REPAIR)
		ssd_repair_set(s, e, true);
	return e;
}

struct ssd_fetch {
	struct ssd *s;
	struct ssd_ent *e;              /* pinned */
	struct ssd_fetch *next;
	uint64_t obj, b0, b1;           /* block range */
	struct ssd_prec prec;
	bool hole, full;
	int res;                        /* decode result */
	int wres;                       /* slot write result */
	unsigned nsh;
	struct codec_meta cm;
	uint8_t *plain, *sbuf;
	uint8_t idx[CODEC_MAX_SHARDS];
	const uint8_t *sh[CODEC_MAX_SHARDS];
	size_t lens[CODEC_MAX_SHARDS];
	uint8_t keys[CODEC_MAX_SHARDS][SSD_SKEY_LEN];
	struct zdb_shard zs[CODEC_MAX_SHARDS];
	struct zdb_chunk_get get;
	struct workq_job job;
	uint64_t t0, backoff_ns;        /* first failure, retry delay */
	struct loop_timer retry;
};

/* A fetch the pool cannot serve (backends down or paused) is retried with
 * backoff this long before its ops fail -EIO: a paused pool makes reads
 * and writes wait, like the flusher, not fail. */
#define SSD_FETCH_GIVEUP_NS (120ull * 1000000000)
#define SSD_FETCH_BACKOFF_MAX_NS (2ull * 1000000000)

/* lock held: r waits until p's blocks [b0, b1) were fetched from the pool
 * (or a fetch of p already in flight ends); r->resume then runs on r's
 * loop with r->fetch_res.  p stays pinned by r. */
static int ssd_fetch_need(struct ssd *s, struct ssd_req *r, struct ssd_ent *p,
			  uint64_t b0, uint64_t b1)
{
	ssd_pin(r, p);
	if (r->err)
		return r->err;
	if (!p->fetching) {
		struct ssd_fetch *f = calloc(1, sizeof(*f));

		if (!f)
			return -ENOMEM;
		f->s = s;
		f->e = p;
		f->b0 = b0;
		f->b1 = b1;
		p->pins++;
		p->fetching = true;
		if (r->kind == SSD_READ)
			s->st.read_fetches++;
		if (s->fq_tail)
			s->fq_tail->next = f;
		else
			s->fq_head = f;
		s->fq_tail = f;
		if (!s->fq_posted) {
			s->fq_posted = true;
			loop_post(&s->loop, &s->fq_msg);
		}
	}
	r->wnext = p->fwait;
	p->fwait = r;
	return 0;
}

static void ssd_resume_msg(struct loop_msg *m)
{
	struct ssd_req *r = container_of(m, struct ssd_req, msg);

	r->resume(r);
}

void ssd_sw_wake(struct ssd *s)
{
	struct ssd_req *w = s->sw_head;

	s->sw_head = NULL;
	while (w) {
		struct ssd_req *next = w->wnext;

		w->fetch_res = 0;
		w->msg.fn = ssd_resume_msg;
		loop_post(w->io->loop, &w->msg);
		w = next;
	}
}

/* --------------------------------------------------------- requests ---- */

static struct ssd_req *ssd_req_new(struct ssd *s, struct objstore_io *io,
				   enum ssd_kind kind, unsigned nsubs)
{
	struct ssd_req *r = calloc(1, sizeof(*r) + nsubs * sizeof(struct ssd_sub));

	if (!r)
		return NULL;
	r->s = s;
	r->io = io;
	r->kind = kind;
	return r;
}

static void ssd_req_free(struct ssd_req *r)
{
	free(r->pinned);
	free(r->bounce);
	free(r->recs);
	free(r);
}

static void ssd_sub_done(struct loop_op *op, int res, uint32_t flags);

static void ssd_sub_submit(struct ssd_sub *u)
{
	struct loop *l = u->req->io->loop;
	struct io_uring_sqe *sqe = loop_sqe(l, &u->op);
	uint64_t left = u->len - u->done;
	unsigned cnt = (unsigned)MIN(left, (uint64_t)1 << 30);

	u->op.cb = ssd_sub_done;
	if (u->niov) {
		/* advance the iovecs past what was done */
		uint64_t skip = u->done;
		unsigned i = 0;

		while (skip && skip >= u->iov[i].iov_len) {
			skip -= u->iov[i].iov_len;
			u->iov[i].iov_len = 0;
			i++;
		}
		u->iov[i].iov_base = (uint8_t *)u->iov[i].iov_base + skip;
		u->iov[i].iov_len -= skip;
		u->done = 0;
		u->len = left;
		for (unsigned j = i; j < u->niov; j++)
			u->iov[j - i] = u->iov[j];
		u->niov -= i;
		io_uring_prep_writev(sqe, u->req->s->fd, u->iov, u->niov, u->foff);
		return;
	}
	if (u->write)
		io_uring_prep_write(sqe, u->req->s->fd, u->buf + u->done, cnt,
				    u->foff + u->done);
	else
		io_uring_prep_read(sqe, u->req->s->fd, u->buf + u->done, cnt,
				   u->foff + u->done);
}

static void ssd_req_step(struct ssd_req *r);

static void ssd_sub_done(struct loop_op *op, int res, uint32_t flags)
{
	struct ssd_sub *u = container_of(op, struct ssd_sub, op);
	struct ssd_req *r = u->req;

	(void)flags;
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN) {
			ssd_sub_submit(u);
			return;
		}
		if (!r->err)
			r->err = res;
	} else if (res == 0 && u->done < u->len) {
		if (!r->err)
			r->err = -EIO;  /* past the end of the cache file */
	} else {
		if (u->niov) {
			u->foff += (uint64_t)res;
			u->done += (uint64_t)res;
		} else {
			u->done += (uint64_t)res;
		}
		if (u->done < u->len) {
			ssd_sub_submit(u);
			return;
		}
	}
	if (--r->pending == 0)
		ssd_req_step(r);
}

static struct ssd_sub *ssd_sub_add(struct ssd_req *r, unsigned i, bool write,
				   uint64_t foff, void *buf, uint64_t len)
{
	struct ssd_sub *u = &r->subs[i];

	memset(u, 0, sizeof(*u));
	u->req = r;
	u->write = write;
	u->foff = foff;
	u->buf = buf;
	u->len = len;
	return u;
}

/* ------------------------------------------------------------- read ---- */

#define SSD_MAX_PASSES 64u

bool (*ssd_read_hook)(struct ssd_req *r);
bool (*ssd_rmw_hook)(struct ssd_req *r);
void (*ssd_copy_hook)(struct ssd_req *r, struct ssd_ent *d,
		      struct ssd_ent *src, uint64_t blk);

static void ssd_req_free(struct ssd_req *r);

/* lock held: u (a sub of r) reads blocks [b0, b1) of another object's
 * slot (via's): a write landing in place on them marks r stale. */
static void ssd_via_link(struct ssd_sub *u, struct ssd_ent *via,
			 uint64_t b0, uint64_t b1)
{
	u->via = via;
	u->vb0 = b0;
	u->vb1 = b1;
	u->vnext = via->vreads;
	if (u->vnext)
		u->vnext->vpprev = &u->vnext;
	u->vpprev = &via->vreads;
	via->vreads = u;
}

static void ssd_via_unlink(struct ssd_sub *u)
{
	*u->vpprev = u->vnext;
	if (u->vnext)
		u->vnext->vpprev = u->vpprev;
	u->via = NULL;
}

static void ssd_via_add(struct ssd_req *r, struct ssd_sub *u,
			struct ssd_ent *via, uint64_t b0, uint64_t b1)
{
	ssd_via_link(u, via, b0, b1);
	r->vread = true;
}

/* lock held: r's subs leave their vreads lists. */
static void ssd_via_drop(struct ssd_req *r)
{
	for (unsigned i = 0; i < r->nsub; i++)
		if (r->subs[i].via)
			ssd_via_unlink(&r->subs[i]);
	r->vread = false;
}

/* lock held: a write of e's blocks [b0, b1) is about to be submitted: the
 * reads in flight through e that read any of them are stale. */
static void ssd_via_stale(struct ssd_ent *e, uint64_t b0, uint64_t b1)
{
	for (struct ssd_sub *u = e->vreads; u; u = u->vnext)
		if (u->vb0 < b1 && b0 < u->vb1 && u->req->kind != SSD_WRITE &&
		    u->req->kind != SSD_ZERO)
			u->req->stale = true;
}

/* lock held: whether a fill of another write than r (its rmw, or a copy
 * into a dependent) is reading blocks [b0, b1) of e's slot: a write to
 * them waits until it did. */
static bool ssd_via_fill(const struct ssd_ent *e, uint64_t b0, uint64_t b1,
			 const struct ssd_req *r)
{
	for (const struct ssd_sub *u = e->vreads; u; u = u->vnext)
		if (u->vb0 < b1 && b0 < u->vb1 && u->req != r &&
		    (u->req->kind == SSD_WRITE || u->req->kind == SSD_ZERO))
			return true;
	return false;
}

/* lock held: r, a write to e, waits for e's dependents (their writes,
 * flushes, copies, or fills through e): younger writes that would add to
 * what it waits for queue behind it until its data phase (ssd_gated). */
static void ssd_gate_take(struct ssd *s, struct ssd_req *r, struct ssd_ent *e)
{
	if (r->gate)
		return;
	r->gate = e;
	r->gnext = e->gates;
	e->gates = r;
	s->ngates++;
}

/* lock held: r leaves its gate (its data phase starts, or it failed); the
 * writes queued behind it try again. */
static void ssd_gate_drop(struct ssd *s, struct ssd_req *r)
{
	struct ssd_req **pp;

	if (!r->gate)
		return;
	for (pp = &r->gate->gates; *pp != r; pp = &(*pp)->gnext)
		;
	*pp = r->gnext;
	r->gate = NULL;
	s->ngates--;
	for (struct ssd_req *w = s->gw_head, *next; w; w = next) {
		next = w->wnext;
		w->msg.fn = ssd_resume_msg;
		loop_post(w->io->loop, &w->msg);
	}
	s->gw_head = NULL;
}

/* lock held: whether r, a write to r->ent, queues behind an older write
 * waiting for the dependents of one of r->ent's bases: any write of a
 * direct dependent (that write waits for their writes), and a write of a
 * farther one overlapping the blocks it writes (its fill could go
 * through them). */
static bool ssd_gated(const struct ssd *s, const struct ssd_req *r)
{
	const struct ssd_ent *d = r->ent;

	if (!s->ngates)
		return false;
	for (const struct ssd_ent *a = d->bent; a; a = a->bent)
		for (const struct ssd_req *w = a->gates; w; w = w->gnext)
			if (w->seq < r->seq && (a == d->bent ||
						(w->b0 < r->b1 && r->b0 < w->b1)))
				return true;
	return false;
}

/* lock held: r (a write) no longer reads through other entries' slots;
 * a write waiting for that (ssd_via_fill) tries again. */
static void ssd_fill_done(struct ssd *s, struct ssd_req *r)
{
	bool wake = false;

	for (unsigned i = 0; i < r->nsub; i++) {
		struct ssd_ent *via = r->subs[i].via;

		if (via && via->fill_wait) {
			via->fill_wait = false;
			wake = true;
		}
	}
	ssd_via_drop(r);
	if (wake && s->sw_head)
		ssd_sw_wake(s);
}

/* End a read or prefetch that submitted no I/O (or failed to). */
static void ssd_read_end(struct ssd_req *r, int err)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;

	pthread_mutex_lock(&s->lock);
	if (r->vread)
		ssd_via_drop(r);
	ssd_unpin_all(s, r);
	pthread_mutex_unlock(&s->lock);
	ssd_req_free(r);
	objstore_complete(io, err);
}

static void ssd_read_go(struct ssd_req *r);

static void ssd_read_resume(struct ssd_req *r)
{
	if (r->fetch_res < 0) {
		ssd_read_end(r, r->fetch_res);
		return;
	}
	if (r->served) {
		/* the fetch's worker copied every byte from its plaintext:
		 * what the pass after a miss does, without the read back */
		struct ssd *s = r->s;
		struct ssd_ent *e;

		pthread_mutex_lock(&s->lock);
		e = ssd_find(s, r->io->obj);
		if (e && e->slot != SSD_NOSLOT)
			e->last_end = r->io->off + r->io->len;
		s->st.read_served++;
		pthread_mutex_unlock(&s->lock);
		ssd_read_end(r, 0);
		return;
	}
	ssd_read_go(r);
}

/*
 * Resolve every block of the read to a slot, zeros, or the pool.  Blocks
 * in the pool are fetched first (ssd_fetch_need) and the resolution starts
 * again; the entries fetched into stay pinned by r meanwhile, so they are
 * still there.
 */
static void ssd_read_go(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	uint64_t b0 = io->off / SSD_BLK;
	uint64_t b1 = (io->off + io->len + SSD_BLK - 1) / SSD_BLK, blk;
	struct ssd_ent *e, *src, *prev;
	uint8_t *dst = io->buf;
	unsigned n = 0;
	bool pool;

	pthread_mutex_lock(&s->lock);
	r->passes++;
	e = ssd_find_load(s, io->obj);
	if (!e)
		e = ssd_find_load(s, io->base);
	if (s->pool_mode) {
		struct ssd_ent *p = NULL;
		uint64_t lo = 0, hi = 0;

		for (blk = b0; blk < b1; blk++) {
			src = ssd_source(e, blk, &pool);
			if (!pool || (p && src != p))
				continue;
			if (!p)
				lo = blk;
			p = src;
			hi = blk + 1;
		}
		if (p) {
			int err = r->passes > SSD_MAX_PASSES ? -EIO : 0;

			if (r->passes == 1)
				s->st.misses++;
			if (p == e && e->obj == io->obj && r->kind == SSD_READ &&
			    io->off == e->last_end && hi < s->nblk) {
				/* a sequential stream: read ahead to the end of
				 * the object (one fetch instead of one per read) */
				hi = s->nblk;
				s->st.readaheads++;
			}
			if (!err) {
				r->resume = ssd_read_resume;
				err = ssd_fetch_need(s, r, p, lo, hi);
			}
			pthread_mutex_unlock(&s->lock);
			if (err) {
				log_error("ssdcache: reading object %" PRIu64 ": %s",
					  io->obj, strerror(-err));
				ssd_read_end(r, err);
			}
			return;
		}
	}
	if (r->passes == 1)
		s->st.hits++;
	if (e && e->obj == io->obj && e->slot != SSD_NOSLOT && r->kind == SSD_READ) {
		/* a sequential continuation is the same access; the pass
		 * after a miss is the access that missed */
		if (r->passes == 1 && io->off != e->last_end && e->freq < 3)
			e->freq++;
		e->last_end = io->off + io->len;
	}
	if (r->kind == SSD_PREFETCH) {
		if (e)
			ssd_maybe_free(s, e);   /* loaded for nothing (a hole) */
		pthread_mutex_unlock(&s->lock);
		ssd_read_end(r, 0);
		return;
	}
	/* runs of blocks with one source; contiguous blocks of one slot are
	 * contiguous in the file */
	uint64_t run_lo = io->off, end = io->off + io->len, rb0 = b0;
	struct ssd_ent *own = e && e->obj == io->obj ? e : NULL;

	prev = ssd_source(e, b0, &pool);
	for (blk = b0 + 1; blk <= b1; blk++) {
		src = blk < b1 ? ssd_source(e, blk, &pool) : NULL;
		if (blk < b1 && src == prev)
			continue;
		uint64_t hi = MIN(blk * SSD_BLK, end);

		if (prev) {
			struct ssd_sub *u;

			ssd_pin(r, prev);
			u = ssd_sub_add(r, n++, false, slot_off(s, prev->slot) + run_lo,
					dst + (run_lo - io->off), hi - run_lo);
			if (prev != own && own)
				ssd_via_add(r, u, prev, rb0, blk);
		} else {
			memset(dst + (run_lo - io->off), 0, hi - run_lo);
		}
		run_lo = hi;
		rb0 = blk;
		prev = src;
	}
	r->nsub = n;
	if (e)
		ssd_maybe_free(s, e);           /* loaded for nothing (a hole) */
	pthread_mutex_unlock(&s->lock);
	if (r->err) {
		ssd_read_end(r, r->err);
		return;
	}
	if (!n) {
		ssd_read_end(r, 0);
		return;
	}
	if (ssd_read_hook && ssd_read_hook(r))
		return;
	ssd_read_submit(r);
}

void ssd_read_submit(struct ssd_req *r)
{
	r->pending = r->nsub;
	r->phase = 1;
	for (unsigned i = 0; i < r->nsub; i++)
		ssd_sub_submit(&r->subs[i]);
}

static void ssd_read_kind(struct ssd *s, struct objstore_io *io, enum ssd_kind kind)
{
	uint64_t b0, b1;
	struct ssd_req *r;

	if (io->off > s->slot_size || io->len > s->slot_size - io->off) {
		objstore_complete(io, -EINVAL);
		return;
	}
	if (!io->len) {
		objstore_complete(io, 0);
		return;
	}
	b0 = io->off / SSD_BLK;
	b1 = (io->off + io->len + SSD_BLK - 1) / SSD_BLK;
	r = ssd_req_new(s, io, kind, (unsigned)(b1 - b0));
	if (!r) {
		objstore_complete(io, -ENOMEM);
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (kind == SSD_PREFETCH)
		s->st.prefetches++;
	else
		s->st.read_ops++;
	pthread_mutex_unlock(&s->lock);
	ssd_read_go(r);
}

static void ssd_read(struct objstore *so, struct objstore_io *io)
{
	ssd_read_kind((struct ssd *)so, io, SSD_READ);
}

static void ssd_prefetch(struct objstore *so, struct objstore_io *io)
{
	ssd_read_kind((struct ssd *)so, io, SSD_PREFETCH);
}

/* ----------------------------------------------------- write and zero ---- */

static void ssd_req_finish(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	int err = r->err;

	pthread_mutex_lock(&s->lock);
	ssd_unpin_all(s, r);
	pthread_mutex_unlock(&s->lock);
	ssd_req_free(r);
	io->cb(io, err);
}

static void ssd_write_start(struct ssd_req *r);

static void ssd_write_resume(struct loop_msg *m)
{
	ssd_write_start(container_of(m, struct ssd_req, msg));
}

/* After a write: set valid bits, release the rmw lock, wake waiters. */
static void ssd_write_complete(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct ssd_ent *e = r->ent;
	struct ssd_req *w = NULL;
	uint64_t b;

	pthread_mutex_lock(&s->lock);
	if (r->vread)
		ssd_fill_done(s, r);
	if (!r->err) {
		bool all = true;

		for (b = r->b0; b < r->b1; b++)
			bit_set(e->valid, b);
		for (b = 0; b < s->nblk && all; b++)
			all = bit_get(e->valid, b);
		if (all && e->bent)
			/* every block is its own: the base is no longer needed */
			ssd_base_unlink(s, e);
		ssd_mark_dirty(s, e);
		if (s->pool_mode) {
			ssd_pool_dirty(s, e);
			ssd_wb_written(s, e, r->b0, r->b1);
		}
	}
	if (r->err && e->dirty_tok && !e->on_pdirty)
		ssd_tok_release(s, e);
	if (--e->writing == 0 && s->sw_head)
		ssd_sw_wake(s);
	if (r->need_rmw) {
		e->rmw = false;
		w = e->wait_head;
		e->wait_head = e->wait_tail = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	while (w) {
		struct ssd_req *next = w->wnext;

		w->msg.fn = ssd_write_resume;
		loop_post(w->io->loop, &w->msg);
		w = next;
	}
	ssd_req_finish(r);
}

static void ssd_modify_prep(struct ssd_req *r);

/* lock held: r's rmw found an edge block's old bytes in the pool (a
 * dependent of its chain was switched to its pool version since the
 * preparation looked): let go of the rmw and the data phase and prepare
 * again, which fetches it.  Returns the writes waiting for the rmw. */
static struct ssd_req *ssd_write_unstart(struct ssd *s, struct ssd_req *r)
{
	struct ssd_ent *e = r->ent;
	struct ssd_req *w = e->wait_head;

	if (r->vread)
		ssd_fill_done(s, r);
	r->nsub = 0;
	e->rmw = false;
	e->wait_head = e->wait_tail = NULL;
	if (--e->writing == 0 && s->sw_head)
		ssd_sw_wake(s);
	return w;
}

/*
 * Write phases: 0 = (if rmw) fill the partial edge blocks of the bounce
 * from the base chain; 1 = write; 2 = done.  A fill from another entry's
 * slot is listed on it (vreads, as a read's) until its pread completed: a
 * write to that entry waits for it (ssd_modify_prep).
 */
static void ssd_write_start(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	struct ssd_ent *e = r->ent;
	uint64_t edge[2] = { r->b0, r->b1 - 1 };
	struct ssd_req *w = NULL;
	bool again = false;
	unsigned n = 0, i;

	pthread_mutex_lock(&s->lock);
	if (r->need_rmw) {
		if (e->rmw) {
			r->wnext = NULL;
			if (e->wait_tail)
				e->wait_tail->wnext = r;
			else
				e->wait_head = r;
			e->wait_tail = r;
			pthread_mutex_unlock(&s->lock);
			return;
		}
		e->rmw = true;
		for (i = 0; i < 2; i++) {
			uint64_t blk = edge[i];
			uint64_t lo = blk * SSD_BLK, hi = lo + SSD_BLK;
			struct ssd_ent *src;

			if (i == 1 && edge[1] == edge[0])
				break;
			if (io->off <= lo && io->off + io->len >= hi)
				continue;       /* fully covered */
			bool pool;

			src = ssd_source(e, blk, &pool);
			s->st.rmw_blocks++;
			if (pool) {
				again = true;
				break;
			}
			if (!src)
				continue;       /* bounce is zeroed */
			ssd_pin(r, src);
			if (r->err)
				break;
			struct ssd_sub *u = ssd_sub_add(r, n++, false,
				slot_off(s, src->slot) + lo,
				r->bounce + (lo - r->b0 * SSD_BLK), SSD_BLK);

			r->nsub = n;
			if (src != e)
				ssd_via_add(r, u, src, blk, blk + 1);
		}
		if (again)
			w = ssd_write_unstart(s, r);
	}
	pthread_mutex_unlock(&s->lock);
	if (again) {
		while (w) {
			struct ssd_req *next = w->wnext;

			w->msg.fn = ssd_write_resume;
			loop_post(w->io->loop, &w->msg);
			w = next;
		}
		memset(r->bounce, 0, (r->b1 - r->b0) * SSD_BLK);
		ssd_modify_prep(r);
		return;
	}
	r->phase = 1;
	if (r->err) {
		ssd_write_complete(r);
		return;
	}
	if (!n) {
		ssd_req_step(r);
		return;
	}
	r->nsub = n;
	if (ssd_rmw_hook && ssd_rmw_hook(r))
		return;
	ssd_read_submit(r);
}

/* A read whose preads through a base are done: true when a write landed
 * in place on blocks it read there meanwhile, and the read resolves and
 * reads again (the write detached its object first, so the next pass
 * reads those blocks from the object's own copy or pool version). */
static bool ssd_read_stale(struct ssd_req *r)
{
	struct ssd *s = r->s;
	bool stale;

	pthread_mutex_lock(&s->lock);
	ssd_via_drop(r);
	stale = r->stale && !r->err;
	r->stale = false;
	if (stale) {
		s->st.read_retries++;
		ssd_unpin_all(s, r);
		if (r->passes >= SSD_MAX_PASSES) {
			log_error("ssdcache: reading object %" PRIu64 ": its base "
				  "keeps being written", r->io->obj);
			r->err = -EIO;
			stale = false;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (stale)
		ssd_read_go(r);
	return stale;
}

static void ssd_req_step(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	uint64_t lo = r->b0 * SSD_BLK;

	switch (r->kind) {
	case SSD_READ:
	case SSD_PREFETCH:
		if (r->vread && ssd_read_stale(r))
			return;
		ssd_req_finish(r);
		return;
	case SSD_WRITE:
	case SSD_ZERO:
		if (r->phase == 1 && !r->err) {
			struct ssd_sub *u;

			if (r->vread) {
				pthread_mutex_lock(&s->lock);
				ssd_fill_done(s, r);
				pthread_mutex_unlock(&s->lock);
			}
			r->phase = 2;
			if (r->bounce) {
				if (r->kind == SSD_WRITE)
					memcpy(r->bounce + (io->off - lo), io->buf, io->len);
				else
					memset(r->bounce + (io->off - lo), 0, io->len);
				u = ssd_sub_add(r, 0, true, slot_off(s, r->ent->slot) + lo,
						r->bounce, (r->b1 - r->b0) * SSD_BLK);
			} else {
				u = ssd_sub_add(r, 0, true,
						slot_off(s, r->ent->slot) + io->off,
						io->buf, io->len);
			}
			r->pending = 1;
			ssd_sub_submit(u);
			return;
		}
		ssd_write_complete(r);
		return;
	case SSD_FLUSH:
		return;
	}
}

/* The write's data phase; it never completes inline (the ring does). */
static void ssd_modify_go(struct ssd_req *r)
{
	if (!r->need_rmw) {
		r->phase = 1;
		ssd_req_step(r);
		return;
	}
	ssd_write_start(r);
}

static void ssd_bp_resume(struct loop_msg *m)
{
	ssd_modify_prep(container_of(m, struct ssd_req, msg));
}

void ssd_tok_release(struct ssd *s, struct ssd_ent *e)
{
	if (e->dirty_tok) {
		e->dirty_tok = false;
		s->tokens--;
	}
	while (s->bp_head && (s->tokens < s->dirty_max ||
			      s->bp_head->ent->dirty_tok)) {
		struct ssd_req *w = s->bp_head;

		s->bp_head = w->wnext;
		if (!s->bp_head)
			s->bp_tail = NULL;
		s->st.bp_waiting--;
		if (!w->ent->dirty_tok) {
			w->ent->dirty_tok = true;
			s->tokens++;
		}
		w->msg.fn = ssd_bp_resume;
		loop_post(w->io->loop, &w->msg);
	}
}

static void ssd_modify_fail(struct ssd_req *r, int err)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;

	pthread_mutex_lock(&s->lock);
	ssd_gate_drop(s, r);
	if (r->ent && r->ent->dirty_tok && !r->ent->on_pdirty)
		ssd_tok_release(s, r->ent);
	ssd_unpin_all(s, r);
	pthread_mutex_unlock(&s->lock);
	ssd_req_free(r);
	objstore_complete(io, err);
}

static int ssd_pread_all(int fd, void *buf, size_t len, uint64_t off);
static int ssd_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

static void ssd_modify_resume(struct ssd_req *r)
{
	if (r->fetch_res < 0) {
		ssd_modify_fail(r, r->fetch_res);
		return;
	}
	ssd_modify_prep(r);
}

/*
 * lock held; r writes blocks [b0, b1) of e, which other entries use as
 * their base (e->deps).  A base's content is fixed for its dependents
 * (the memstore contract: a copy at creation), so before the write lands
 * every direct dependent that still reads those blocks through e stops
 * doing so: one with a pool version reads its blocks not in its slot from
 * that version instead (its base link is dropped: the version holds every
 * block as it was); the others get the blocks copied into their slot.
 * Returns 0 when done and nothing changed, 2 when done and a dependent
 * changed (its record must commit before the write lands: ssd_dcommit),
 * 1 when r was queued to wait (a fetch, a free slot, a flush in progress)
 * and resumes through r->resume, or -errno.  The lock may have been
 * dropped and retaken.
 */
static int ssd_detach_deps(struct ssd *s, struct ssd_req *r, struct ssd_ent *e)
{
	struct ssd_ent **ds = NULL, *d;
	size_t nd = 0, cap = 0, i;
	uint8_t *blk = NULL;
	bool changed = false, again = false;
	int err = 0;

	for (i = 0; i < s->nbuckets && e->deps; i++)
		for (d = s->tab[i]; d; d = d->hnext) {
			if (d->bent != e)
				continue;
			if (d->flushing || d->writing || d->cowing) {
				/* its flush may be reading e, or a write of its
				 * own is landing: wait for it */
				ssd_gate_take(s, r, e);
				r->resume = ssd_modify_resume;
				r->fetch_res = 0;
				r->wnext = s->sw_head;
				s->sw_head = r;
				free(ds);
				return 1;
			}
			if (nd == cap) {
				struct ssd_ent **n2 = realloc(ds, (cap = cap ? 2 * cap : 8) *
							      sizeof(*ds));
				if (!n2) {
					free(ds);
					return -ENOMEM;
				}
				ds = n2;
			}
			ds[nd++] = d;
		}
	/* plan: release what a pool version covers; fetch or slot first */
	for (i = 0; i < nd; i++) {
		d = ds[i];
		if (s->pool_mode && d->prec.version) {
			d->from_pool = true;
			ssd_base_unlink(s, d);
			ds[i] = NULL;
			changed = true;
			continue;
		}
		for (uint64_t b = r->b0; b < r->b1; b++) {
			bool pool;
			struct ssd_ent *src;

			if (d->slot != SSD_NOSLOT && bit_get(d->valid, b))
				continue;
			src = ssd_source(e, b, &pool);
			if (pool) {
				free(ds);
				r->resume = ssd_modify_resume;
				err = ssd_fetch_need(s, r, src, b, b + 1);
				return err ? err : 1;
			}
		}
		if (d->slot == SSD_NOSLOT && ssd_slot_take(s, d) < 0) {
			free(ds);
			if (!s->pool_mode)
				return -ENOSPC;
			r->resume = ssd_modify_resume;
			r->fetch_res = 0;
			r->wnext = s->sw_head;
			s->sw_head = r;
			s->st.slot_waits++;
			ssd_evict_kick(s);
			return 1;
		}
	}
	/* copy: one block at a time, synchronously (a rare path: vol wrote
	 * an object in place that is still some object's base) */
	blk = malloc(SSD_BLK);
	for (i = 0; i < nd && !err && !again; i++) {
		if (!(d = ds[i]))
			continue;
		if (!blk) {
			err = -ENOMEM;
			break;
		}
		ssd_pin(r, d);
		d->cowing = true;               /* its writes wait (prep) */
		for (uint64_t b = r->b0; b < r->b1 && !err && !again; b++) {
			struct ssd_sub via = { .req = r };
			bool pool;
			struct ssd_ent *src;
			uint64_t from;

			if (bit_get(d->valid, b))
				continue;
			src = ssd_source(e, b, &pool);
			if (pool) {
				/* e's chain changed while the lock was dropped
				 * (e switched to its pool version): prepare
				 * again, which fetches */
				again = true;
				break;
			}
			from = src ? slot_off(s, src->slot) + b * SSD_BLK : 0;
			if (src) {
				ssd_pin(r, src);
				if (src != e)   /* a fill through e's base chain */
					ssd_via_link(&via, src, b, b + 1);
			}
			pthread_mutex_unlock(&s->lock);
			if (ssd_copy_hook)
				ssd_copy_hook(r, d, src, b);
			if (src)
				err = ssd_pread_all(s->fd, blk, SSD_BLK, from);
			else
				memset(blk, 0, SSD_BLK);
			if (!err)
				err = ssd_pwrite_all(s->fd, blk, SSD_BLK,
						     slot_off(s, d->slot) + b * SSD_BLK);
			pthread_mutex_lock(&s->lock);
			if (via.via)
				ssd_via_unlink(&via);
			if (!err) {
				bit_set(d->valid, b);
				s->st.cow_blocks++;
				changed = true;
			}
		}
		d->cowing = false;
		ssd_mark_dirty(s, d);
		if (!err && d->bent == e && ssd_all_valid(s, d)) {
			ssd_base_unlink(s, d);
			changed = true;
		}
	}
	free(blk);
	free(ds);
	ssd_sw_wake(s);
	if (!err && again && !changed) {
		r->resume = ssd_modify_resume;
		r->fetch_res = 0;
		r->msg.fn = ssd_resume_msg;
		loop_post(r->io->loop, &r->msg);
		return 1;
	}
	/* again and changed: the dependents' commit runs first, then the
	 * preparation again */
	return err ? err : changed ? 2 : 0;
}

static void ssd_flush_do(struct ssd *s, struct objstore_io *io,
			 void (*extra)(struct ssd *, struct meta_txn *, void *),
			 void *arg, bool wt, struct ssd_ent *const *force,
			 size_t nforce);

/*
 * Detached dependents commit before the write lands: their records still
 * name the base and lack the copied blocks until the next FLUSH, and the
 * base's new bytes reach the file (page cache) at once, so a crash in
 * between would show the dependents the base's new bytes.  The write
 * waits for a flush of the index (fdatasync: the copied blocks; stage) and
 * its commit; other writes to the base wait too (e->dcommit).
 */
struct ssd_dcommit {
	struct objstore_io io;
	struct meta_flush mf;
	struct ssd_req *r;
};

static void ssd_dcommit_end(struct ssd_req *r, int res)
{
	struct ssd *s = r->s;

	pthread_mutex_lock(&s->lock);
	r->ent->dcommit = false;
	ssd_sw_wake(s);
	pthread_mutex_unlock(&s->lock);
	r->fetch_res = res;
	ssd_modify_resume(r);
}

static void ssd_dcommit_committed(struct meta_flush *mf, int res)
{
	struct ssd_dcommit *dc = container_of(mf, struct ssd_dcommit, mf);
	struct ssd_req *r = dc->r;

	free(dc);
	ssd_dcommit_end(r, res < 0 ? -EIO : 0);
}

static void ssd_dcommit_flushed(struct objstore_io *io, int res)
{
	struct ssd_dcommit *dc = container_of(io, struct ssd_dcommit, io);

	if (res < 0) {
		struct ssd_req *r = dc->r;

		free(dc);
		ssd_dcommit_end(r, res);
		return;
	}
	dc->mf.loop = io->loop;
	dc->mf.cb = ssd_dcommit_committed;
	meta_flush(dc->r->s->meta, &dc->mf);
}

/* lock NOT held; r->ent->dcommit set by the caller. */
static void ssd_dcommit_start(struct ssd_req *r)
{
	struct ssd_dcommit *dc = calloc(1, sizeof(*dc));

	if (!dc) {
		ssd_dcommit_end(r, -ENOMEM);
		return;
	}
	dc->r = r;
	dc->io.loop = r->io->loop;
	dc->io.cb = ssd_dcommit_flushed;
	ssd_flush_do(r->s, &dc->io, NULL, NULL, false, NULL, 0);
}

/*
 * Before a write's data phase (io->loop; r->ent pinned): an object whose
 * blocks come from its pool version is fetched WHOLE first (so a written
 * object never mixes new blocks with blocks only the pool has, and no
 * fetch ever races a write); a partial edge block whose old content is in
 * the pool (a base's) is fetched; then a dirty token (backpressure: wait
 * for a flush), then a slot (or wait for the evictor to free one), so
 * writes waiting for the pool hold no slot.
 */
static void ssd_modify_prep(struct ssd_req *r)
{
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	struct ssd_ent *e = r->ent, *p = NULL;
	uint64_t lo = 0, hi = 0;
	int err = 0;

	pthread_mutex_lock(&s->lock);
	r->passes++;
	if (e->cowing || e->dcommit) {
		/* a write to its base is copying blocks into it, or one to it
		 * waits for its detached dependents' commit */
		r->resume = ssd_modify_resume;
		r->fetch_res = 0;
		r->wnext = s->sw_head;
		s->sw_head = r;
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (ssd_gated(s, r)) {
		/* an older write to one of its bases waits for that base's
		 * dependents: this one must not add to it (a wait, not a
		 * resolution: not counted against SSD_MAX_PASSES) */
		r->passes--;
		/* a dirty token its object holds for no write yet (taken by
		 * an earlier pass, or granted out of backpressure) goes back:
		 * the gate holder may be waiting for one, and a token of an
		 * object that is not pool-dirty is freed by nothing else
		 * (tokens of pool-dirty objects come back as they are
		 * flushed, which no gate holds up).  This pass takes one
		 * again after the gate, as any write does. */
		if (e->dirty_tok && !e->on_pdirty && !e->writing)
			ssd_tok_release(s, e);
		r->resume = ssd_modify_resume;
		r->fetch_res = 0;
		r->wnext = s->gw_head;
		s->gw_head = r;
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (s->pool_mode && e->from_pool && !ssd_all_valid(s, e)) {
		p = e;
		hi = s->nblk;
	} else if (s->pool_mode && r->need_rmw) {
		uint64_t edge[2] = { r->b0, r->b1 - 1 };

		for (unsigned i = 0; i < 2 && !p; i++) {
			uint64_t blo = edge[i] * SSD_BLK;
			bool pool;
			struct ssd_ent *src;

			if (io->off <= blo && io->off + io->len >= blo + SSD_BLK)
				continue;
			src = ssd_source(e, edge[i], &pool);
			if (pool) {
				p = src;
				lo = edge[i];
				hi = lo + 1;
			}
		}
	}
	if (p) {
		err = r->passes > SSD_MAX_PASSES ? -EIO : 0;
		if (!err) {
			r->resume = ssd_modify_resume;
			err = ssd_fetch_need(s, r, p, lo, hi);
		}
		pthread_mutex_unlock(&s->lock);
		if (err)
			ssd_modify_fail(r, err);
		return;
	}
	if (e->deps) {
		err = ssd_detach_deps(s, r, e);
		if (err == 2) {
			e->dcommit = true;
			pthread_mutex_unlock(&s->lock);
			ssd_dcommit_start(r);
			return;
		}
		if (err) {
			pthread_mutex_unlock(&s->lock);
			if (err < 0)
				ssd_modify_fail(r, err);
			return;
		}
	}
	if (s->pool_mode && !e->dirty_tok) {
		if (s->tokens < s->dirty_max && !s->bp_head) {
			e->dirty_tok = true;
			s->tokens++;
		} else {
			/* backpressure: the pool is behind; the object exists
			 * (pinned, base held) but its data waits */
			r->wnext = NULL;
			if (s->bp_tail)
				s->bp_tail->wnext = r;
			else
				s->bp_head = r;
			s->bp_tail = r;
			s->st.bp_stalls++;
			s->st.bp_waiting++;
			ssdflush_kick(s);
			pthread_mutex_unlock(&s->lock);
			return;
		}
	}
	if (e->slot == SSD_NOSLOT && ssd_slot_take(s, e) < 0) {
		if (!s->pool_mode) {
			pthread_mutex_unlock(&s->lock);
			ssd_modify_fail(r, -ENOSPC);
			return;
		}
		/* everything is dirty or in use: wait for the evictor */
		r->resume = ssd_modify_resume;
		r->fetch_res = 0;
		r->wnext = s->sw_head;
		s->sw_head = r;
		s->st.slot_waits++;
		ssd_evict_kick(s);
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (e->vreads) {
		if (ssd_via_fill(e, r->b0, r->b1, r)) {
			/* a dependent's write (maybe through a chain of
			 * bases) fills a block from these: wait for its pread */
			r->resume = ssd_modify_resume;
			r->fetch_res = 0;
			ssd_gate_take(s, r, e);
			r->wnext = s->sw_head;
			s->sw_head = r;
			e->fill_wait = true;
			s->st.fill_waits++;
			pthread_mutex_unlock(&s->lock);
			return;
		}
		ssd_via_stale(e, r->b0, r->b1);
	}
	e->writing++;
	ssd_gate_drop(s, r);
	pthread_mutex_unlock(&s->lock);
	ssd_modify_go(r);
}

/* Stage the record of a new object (no slot, no valid block: it reads as
 * its base) in the caller's write section, so that it commits with vol's
 * map change that names the object. */
static void ssd_stage_new(struct ssd *s, struct ssd_ent *e, uint64_t base)
{
	struct meta_txn *t = meta_thread_txn(s->meta);
	size_t rl = ssd_rec_len(s);
	struct ssd_rec rec = { .slot = SSD_NOSLOT, .base = base };
	uint8_t k[8], *val;

	if (!t || !meta_txn_is_write(t))
		return;
	val = calloc(1, rl);
	if (!val)
		return;
	memcpy(val, &rec, sizeof(rec));
	ssd_be64put(k, e->obj);
	if (meta_put(t, META_T_CACHE_INDEX, k, 8, val, rl) == 0) {
		pthread_mutex_lock(&s->lock);
		if (!e->staged_ver)
			e->staged_ver = 1;
		s->st.index_puts++;
		pthread_mutex_unlock(&s->lock);
	}
	free(val);
}

static void ssd_modify(struct ssd *s, struct objstore_io *io, enum ssd_kind kind)
{
	struct ssd_req *r;
	struct ssd_ent *e, *b = NULL;
	bool created = false;
	int err = 0;

	if (io->off > s->slot_size || io->len > s->slot_size - io->off) {
		objstore_complete(io, -EINVAL);
		return;
	}
	if (!io->len) {
		objstore_complete(io, 0);
		return;
	}
	r = ssd_req_new(s, io, kind, 2);
	if (!r) {
		objstore_complete(io, -ENOMEM);
		return;
	}
	r->b0 = io->off / SSD_BLK;
	r->b1 = (io->off + io->len + SSD_BLK - 1) / SSD_BLK;
	r->need_rmw = kind == SSD_ZERO || io->off % SSD_BLK || io->len % SSD_BLK;
	if (r->need_rmw) {
		r->bounce = calloc(r->b1 - r->b0, SSD_BLK);
		if (!r->bounce) {
			ssd_req_free(r);
			objstore_complete(io, -ENOMEM);
			return;
		}
	}
	pthread_mutex_lock(&s->lock);
	s->st.write_ops++;
	r->seq = ++s->wseq;
	e = ssd_find_load(s, io->obj);
	if (!e && io->base) {
		b = ssd_find_load(s, io->base);
		e = ssd_find(s, io->obj);       /* the lock was dropped */
	}
	if (e && e->dropped) {
		log_warn("ssdcache: write to dropped object %" PRIu64, io->obj);
		e = NULL;
		err = -ESTALE;
	} else if (!e) {
		err = ssd_ent_new(s, io->obj, b, &e);
		if (!err) {
			e->ver = 1;
			created = true;
		}
	}
	if (!err)
		ssd_pin(r, e);
	err = err ? err : r->err;
	r->ent = err ? NULL : e;
	pthread_mutex_unlock(&s->lock);
	if (err) {
		r->ent = NULL;
		ssd_modify_fail(r, err);
		return;
	}
	if (created)
		ssd_stage_new(s, e, e->base);
	ssd_modify_prep(r);
}

static void ssd_write(struct objstore *so, struct objstore_io *io)
{
	ssd_modify((struct ssd *)so, io, SSD_WRITE);
}

static void ssd_zero(struct objstore *so, struct objstore_io *io)
{
	ssd_modify((struct ssd *)so, io, SSD_ZERO);
}

/* ------------------------------------------------------------ flush ---- */

/* Stage the snapshot's records (outside any meta section). */
static int ssd_stage(struct ssd *s, struct ssd_req *r)
{
	size_t rl = ssd_rec_len(s), each = 16 + rl, i;
	struct meta_txn *t;
	int err = 0;

	if (!r->nrecs && !r->extra)
		return 0;
	t = meta_wbegin(s->meta);
	if (!t)
		return -EIO;
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < r->nrecs && !err; i++) {
		uint8_t *p = r->recs + i * each;
		uint64_t obj, ver;
		struct ssd_ent *e;

		memcpy(&obj, p, 8);
		memcpy(&ver, p + 8, 8);
		e = ssd_find(s, obj);
		if (!e || e->staged_ver >= ver)
			continue;       /* freed since, or a newer one is staged */
		uint8_t k[8];

		if (e->dropped) {
			/* dropped after the snapshot: keep the flag drop()
			 * staged (a drop is final) */
			struct ssd_rec rec;

			memcpy(&rec, p + 16, sizeof(rec));
			rec.flags |= SSD_F_DROPPED;
			memcpy(p + 16, &rec, sizeof(rec));
		}
		ssd_be64put(k, obj);
		err = meta_put(t, META_T_CACHE_INDEX, k, 8, p + 16, rl);
		if (!err) {
			e->staged_ver = ver;
			e->del_staged = false;  /* the record is back */
			s->st.index_puts++;
			ssd_obent_release(s, e, ver);
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (!err && r->extra)
		r->extra(s, t, r->extra_arg);
	meta_end(t);
	return err;
}

static void ssd_wt_done(struct loop_msg *m)
{
	struct ssd_req *r = container_of(m, struct ssd_req, msg);
	struct objstore_io *io = r->io;
	int err = r->err;

	ssd_req_free(r);
	io->cb(io, err);
}

static void ssd_sync_done(struct objstore_io *io, int res);

void ssd_wt_wake(struct ssd *s)
{
	uint64_t min_first = UINT64_MAX;
	struct ssd_req **pp, *r;
	struct ssd_ent *e;

	if (!s->wt_wait)
		return;
	for (e = s->pdirty; e; e = e->pnext)
		if (!e->dropped && e->first_dirty < min_first)
			min_first = e->first_dirty;
	for (pp = &s->wt_wait; (r = *pp); ) {
		bool failed = s->wt_fail && r->io->cb != ssd_sync_done;

		if (r->wt_gen <= min_first || failed) {
			*pp = r->wnext;
			r->err = r->wt_gen <= min_first ? 0 : s->wt_fail;
			r->msg.fn = ssd_wt_done;
			loop_post(r->io->loop, &r->msg);
		} else {
			pp = &r->wnext;
		}
	}
}

static void ssd_wt_fail_msg(struct loop_msg *m)
{
	struct ssd *s = container_of(m, struct ssd, wt_fail_msg);

	pthread_mutex_lock(&s->lock);
	ssd_wt_wake(s);
	pthread_mutex_unlock(&s->lock);
}

void ssdcache_fail_flushes(struct objstore *so, int err)
{
	struct ssd *s = (struct ssd *)so;

	if (!s->pool_mode || !s->thread_started || err >= 0)
		return;
	pthread_mutex_lock(&s->lock);
	if (s->wt_fail) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->wt_fail = err;
	pthread_mutex_unlock(&s->lock);
	s->wt_fail_msg.fn = ssd_wt_fail_msg;
	loop_post(&s->loop, &s->wt_fail_msg);
}

static void ssd_flush_done(struct loop_op *op, int res, uint32_t flags)
{
	struct ssd_sub *u = container_of(op, struct ssd_sub, op);
	struct ssd_req *r = u->req;
	struct ssd *s = r->s;
	struct objstore_io *io = r->io;
	int err = res < 0 ? res : 0;

	(void)flags;
	if (io->loop == &s->loop)
		s->nlocal--;
	if (!err)
		err = ssd_stage(s, r);
	if (err) {
		/* put the records back so a later flush retries them */
		size_t each = 16 + ssd_rec_len(s), i;

		log_error("ssdcache: flush failed: %s", strerror(-err));
		pthread_mutex_lock(&s->lock);
		for (i = 0; i < r->nrecs; i++) {
			uint64_t obj;
			struct ssd_ent *e;

			memcpy(&obj, r->recs + i * each, 8);
			e = ssd_find(s, obj);
			if (e && !e->on_dirty) {
				e->on_dirty = true;
				e->dnext = s->dirty;
				s->dirty = e;
			}
		}
		pthread_mutex_unlock(&s->lock);
	}
	if (!err && r->wt_gen) {
		/* writethrough: done when every write before the flush is
		 * committed in the pool (ssdflush_wake) */
		free(r->recs);
		r->recs = NULL;
		r->err = 0;
		pthread_mutex_lock(&s->lock);
		r->wnext = s->wt_wait;
		s->wt_wait = r;
		ssdflush_kick(s);
		ssd_wt_wake(s);
		pthread_mutex_unlock(&s->lock);
		return;
	}
	ssd_req_free(r);
	io->cb(io, err);
}

static void ssd_flush_do(struct ssd *s, struct objstore_io *io,
			 void (*extra)(struct ssd *, struct meta_txn *, void *),
			 void *arg, bool wt, struct ssd_ent *const *force,
			 size_t nforce);

static void ssd_flush(struct objstore *so, struct objstore_io *io)
{
	struct ssd *s = (struct ssd *)so;

	ssd_flush_do(s, io, NULL, NULL, s->writethrough, NULL, 0);
}

void ssd_flush_ext(struct ssd *s, struct objstore_io *io,
		   void (*extra)(struct ssd *, struct meta_txn *, void *), void *arg,
		   struct ssd_ent *force)
{
	ssd_flush_do(s, io, extra, arg, false, &force, force ? 1 : 0);
}

void ssd_flush_ext_many(struct ssd *s, struct objstore_io *io,
			void (*extra)(struct ssd *, struct meta_txn *, void *),
			void *arg, struct ssd_ent *const *force, size_t nforce)
{
	ssd_flush_do(s, io, extra, arg, false, force, nforce);
}

/* A sync request (ssdcache_sync, ssdcache_sync_start), shared by its
 * caller and the cache thread; freed by the last of them (the caller may
 * stop waiting while the flush goes on: it stays in s->wt_wait, its
 * objects forced, until they are in the pool or the cache closes).  An
 * asynchronous one is answered exactly once on its caller's loop, by
 * whichever comes first: the flush's end (ssd_sync_done) or the caller's
 * ssdcache_sync_cancel; `replied` says it was. */
struct ssd_sync {
	struct loop_msg msg;
	struct ssd *s;
	struct objstore_io io;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned refs;
	bool done;
	int res;
	/* asynchronous: */
	struct loop *reply_loop;        /* NULL: a blocking caller waits */
	void (*reply)(void *arg, int res);
	void *reply_arg;
	struct loop_msg reply_msg;
	bool replied;
	int reply_res;
};

static void ssd_sync_put(struct ssd_sync *y)
{
	bool last;

	pthread_mutex_lock(&y->lock);
	last = !--y->refs;
	pthread_mutex_unlock(&y->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&y->lock);
	pthread_cond_destroy(&y->cond);
	free(y);
}

/* Caller's loop: the answer, then the reply message's and the caller's
 * references. */
static void ssd_sync_reply_msg(struct loop_msg *m)
{
	struct ssd_sync *y = container_of(m, struct ssd_sync, reply_msg);

	y->reply(y->reply_arg, y->reply_res);
	ssd_sync_put(y);
	ssd_sync_put(y);
}

/* y->lock held: answer an asynchronous y with res unless it was; true
 * when the caller must post y->reply_msg (which holds one more ref). */
static bool ssd_sync_reply_locked(struct ssd_sync *y, int res)
{
	if (!y->reply_loop || y->replied)
		return false;
	y->replied = true;
	y->reply_res = res;
	y->refs++;
	return true;
}

static void ssd_sync_done(struct objstore_io *io, int res)
{
	struct ssd_sync *y = container_of(io, struct ssd_sync, io);
	bool post;

	pthread_mutex_lock(&y->lock);
	y->res = res;
	y->done = true;
	post = ssd_sync_reply_locked(y, res);
	pthread_cond_signal(&y->cond);
	pthread_mutex_unlock(&y->lock);
	if (post)
		loop_post(y->reply_loop, &y->reply_msg);
	ssd_sync_put(y);
}

static void ssd_sync_msg(struct loop_msg *m)
{
	struct ssd_sync *y = container_of(m, struct ssd_sync, msg);

	ssd_flush_do(y->s, &y->io, NULL, NULL, true, NULL, 0);
}

static struct ssd_sync *ssd_sync_new(struct ssd *s)
{
	struct ssd_sync *y = calloc(1, sizeof(*y));
	pthread_condattr_t ca;

	if (!y)
		return NULL;
	y->s = s;
	y->refs = 2;
	pthread_mutex_init(&y->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&y->cond, &ca);
	pthread_condattr_destroy(&ca);
	y->io.loop = &s->loop;
	y->io.cb = ssd_sync_done;
	y->msg.fn = ssd_sync_msg;
	y->reply_msg.fn = ssd_sync_reply_msg;
	return y;
}

int ssdcache_sync(struct objstore *so, uint64_t timeout_ms)
{
	struct ssd *s = (struct ssd *)so;
	struct ssd_sync *y;
	struct timespec dl;
	int r = 0;

	if (!s->pool_mode || !s->thread_started)
		return -EINVAL;
	y = ssd_sync_new(s);
	if (!y)
		return -ENOMEM;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += (time_t)(timeout_ms / 1000);
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	loop_post(&s->loop, &y->msg);
	pthread_mutex_lock(&y->lock);
	while (!y->done && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&y->cond, &y->lock, &dl);
	r = y->done ? y->res : -ETIMEDOUT;
	pthread_mutex_unlock(&y->lock);
	ssd_sync_put(y);
	return r;
}

int ssdcache_sync_start(struct objstore *so, struct loop *loop,
			void (*done)(void *arg, int res), void *arg,
			struct ssdcache_sync **out)
{
	struct ssd *s = (struct ssd *)so;
	struct ssd_sync *y;

	*out = NULL;
	if (!s->pool_mode || !s->thread_started)
		return -EINVAL;
	y = ssd_sync_new(s);
	if (!y)
		return -ENOMEM;
	y->reply_loop = loop;
	y->reply = done;
	y->reply_arg = arg;
	*out = (struct ssdcache_sync *)y;
	loop_post(&s->loop, &y->msg);
	return 0;
}

void ssdcache_sync_cancel(struct ssdcache_sync *h, int res)
{
	struct ssd_sync *y = (struct ssd_sync *)h;
	bool post;

	pthread_mutex_lock(&y->lock);
	post = ssd_sync_reply_locked(y, res);
	pthread_mutex_unlock(&y->lock);
	if (post)
		loop_post(y->reply_loop, &y->reply_msg);
}

void ssdcache_set_close_wait(struct objstore *so, uint64_t ms)
{
	struct ssd *s = (struct ssd *)so;

	__atomic_store_n(&s->close_wait_ns, ms ? ms * 1000000 : 1,
			 __ATOMIC_RELAXED);
}

void ssdcache_flush_local(struct objstore *so, struct objstore_io *io)
{
	ssd_flush_do((struct ssd *)so, io, NULL, NULL, false, NULL, 0);
}

void ssd_read_obj(struct ssd *s, struct objstore_io *io)
{
	ssd_read(&s->base, io);
}

/* lock held: move the changed records into r (index-dirty list emptied). */
static int ssd_snapshot_locked(struct ssd *s, struct ssd_req *r)
{
	size_t each = 16 + ssd_rec_len(s), n = 0, cap = 0;
	struct ssd_ent *e;

	for (e = s->dirty; e; e = e->dnext)
		cap++;
	if (cap && !(r->recs = malloc(cap * each)))
		return -ENOMEM;
	while ((e = s->dirty)) {
		uint8_t *p = r->recs + n++ * each;
		struct ssd_rec rec = {
			.slot = e->slot,
			.flags = (e->dropped ? SSD_F_DROPPED : 0) |
				 (e->dirty_gen > e->pool_gen ? SSD_F_DIRTY : 0) |
				 (e->hole ? SSD_F_HOLE : 0) |
				 (e->repair ? SSD_F_REPAIR : 0),
			.base = e->base,
			.p = e->prec,
		};

		s->dirty = e->dnext;
		e->on_dirty = false;
		memcpy(p, &e->obj, 8);
		memcpy(p + 8, &e->ver, 8);
		memcpy(p + 16, &rec, sizeof(rec));
		memcpy(p + 16 + sizeof(rec), e->valid, s->bm_bytes);
	}
	r->nrecs = n;
	return 0;
}

static void ssd_flush_do(struct ssd *s, struct objstore_io *io,
			 void (*extra)(struct ssd *, struct meta_txn *, void *),
			 void *arg, bool wt, struct ssd_ent *const *force,
			 size_t nforce)
{
	struct ssd_req *r = ssd_req_new(s, io, SSD_FLUSH, 1);
	struct io_uring_sqe *sqe;
	size_t i;

	if (!r) {
		objstore_complete(io, -ENOMEM);
		return;
	}
	r->extra = extra;
	r->extra_arg = arg;
	pthread_mutex_lock(&s->lock);
	s->st.flush_ops++;
	r->wt_gen = wt ? s->wgen + 1 : 0;  /* +1: nonzero even before writes */
	for (i = 0; i < nforce; i++) {
		/* extra() must land with (or after) force's current record
		 * even when another flush's snapshot took it and has not
		 * staged it yet: stage it here too (same version: whichever
		 * stages first wins, the other is skipped) */
		if (force[i]->on_dirty)
			continue;
		force[i]->on_dirty = true;
		force[i]->dnext = s->dirty;
		s->dirty = force[i];
	}
	if (ssd_snapshot_locked(s, r) < 0) {
		pthread_mutex_unlock(&s->lock);
		ssd_req_free(r);
		objstore_complete(io, -ENOMEM);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	ssd_sub_add(r, 0, false, 0, NULL, 0);
	r->subs[0].op.cb = ssd_flush_done;
	if (io->loop == &s->loop)
		s->nlocal++;            /* ssd_thread waits for it at stop */
	sqe = loop_sqe(io->loop, &r->subs[0].op);
	io_uring_prep_fsync(sqe, s->fd, IORING_FSYNC_DATASYNC);
}

/* ------------------------------------------------------------- drop ---- */

/* lock held: queue a deletion for the cache thread (lookup: read the
 * record there; staged: already staged, only the GC of its pool version
 * remains). */
static void ssd_queue_del(struct ssd *s, struct ssd_del d)
{
	if (s->ndels < s->cap_dels ||
	    (s->dels = realloc(s->dels, (s->cap_dels = s->cap_dels
	     ? 2 * s->cap_dels : 64) * sizeof(*s->dels)))) {
		s->dels[s->ndels++] = d;
		ssd_post_dels(s);
	} else {
		log_error("ssdcache: out of memory: the record of dropped object %"
			  PRIu64 " stays until restart", d.obj);
		s->cap_dels = s->ndels = 0;
	}
}

/* lock held, t a write section of this thread, e dropped and nobody's
 * base: stage its record's deletion (and its pool version's GARBAGE
 * intent) now, in the caller's section, so it commits with vol's DROPPED
 * mark (a crash cannot keep one and lose the other). */
static void ssd_drop_stage(struct ssd *s, struct meta_txn *t, struct ssd_ent *e)
{
	uint8_t k[8];

	if (!e->staged_ver)
		return;                         /* no record */
	ssd_be64put(k, e->obj);
	if (meta_del(t, META_T_CACHE_INDEX, k, 8) < 0)
		return;
	if (e->prec.version && e->prec.meta_len) {
		struct ssd_intent in = { .state = SSD_GARBAGE, .n = s->k + s->m,
			.obj = e->obj };

		memcpy(in.place, e->prec.place, sizeof(in.place));
		ssd_be64put(k, e->prec.version);
		if (meta_put(t, META_T_INTENTS, k, 8, &in, sizeof(in)) < 0)
			return;                 /* the record goes: found at open */
	}
	e->ver++;
	e->staged_ver = e->ver;
	e->del_staged = true;
	ssd_dirty_remove(s, e);
	s->st.index_dels++;
}

/* lock held, t a write section of this thread, e dropped but retained as
 * a base: set DROPPED on its record as staged so far, in the caller's
 * section, so the flag commits with vol's DROPPED mark (else a crash keeps
 * a live-looking record nobody drops again).  Only the flag changes: the
 * slot and valid bits stay those a flush staged after its fdatasync (the
 * current ones may name blocks not yet durable); the next flush stages the
 * whole record, flag included (ssd_stage). */
static void ssd_drop_stage_flag(struct ssd *s, struct meta_txn *t,
				struct ssd_ent *e)
{
	size_t rl = ssd_rec_len(s);
	struct ssd_rec rec;
	uint8_t k[8], *val;

	if (!e->staged_ver || !(val = malloc(rl)))
		return;                         /* no record (or a flush's) */
	ssd_be64put(k, e->obj);
	if (meta_get(t, META_T_CACHE_INDEX, k, 8, val, rl) == (int)rl) {
		memcpy(&rec, val, sizeof(rec));
		if (!(rec.flags & SSD_F_DROPPED)) {
			rec.flags |= SSD_F_DROPPED;
			memcpy(val, &rec, sizeof(rec));
			if (meta_put(t, META_T_CACHE_INDEX, k, 8, val, rl) == 0)
				s->st.index_puts++;
		}
	}
	free(val);
}

static void ssd_drop(struct objstore *so, uint64_t obj)
{
	struct ssd *s = (struct ssd *)so;
	struct meta_txn *t = meta_thread_txn(s->meta);
	struct ssd_ent *e;

	if (t && !meta_txn_is_write(t))
		t = NULL;
	pthread_mutex_lock(&s->lock);
	e = ssd_find(s, obj);
	if (e && !e->dropped) {
		e->dropped = true;
		if (e->on_pdirty) {
			/* never flushed now: it only serves as a base */
			struct ssd_ent **pp = &s->pdirty;

			while (*pp != e)
				pp = &(*pp)->pnext;
			*pp = e->pnext;
			e->on_pdirty = false;
			ssd_wt_wake(s);
		}
		if (e->dirty_tok)
			ssd_tok_release(s, e);
		ssd_repair_set(s, e, false);
		if (e->deps || e->odeps) {
			ssd_mark_dirty(s, e);   /* retained as a base */
			if (t)
				ssd_drop_stage_flag(s, t, e);
		} else if (t)
			ssd_drop_stage(s, t, e);
		ssd_maybe_free(s, e);
	} else if (!e && obj && s->pool_mode) {
		/* not in memory (evicted): its record and pool version go */
		struct ssd_del d = { .obj = obj, .slot = SSD_NOSLOT, .lookup = true };

		if (t) {
			size_t rl = ssd_rec_len(s);
			uint8_t k[8], *val = malloc(rl);
			struct ssd_rec rec;
			int vl;

			ssd_be64put(k, obj);
			vl = val ? meta_get(t, META_T_CACHE_INDEX, k, 8, val, rl) : -ENOMEM;
			if (vl == (int)rl)
				memcpy(&rec, val, sizeof(rec));
			free(val);
			if (vl == -ENOENT) {
				pthread_mutex_unlock(&s->lock);
				return;
			}
			if (vl == (int)rl && rec.slot == SSD_NOSLOT &&
			    !(rec.flags & SSD_F_DROPPED) &&
			    meta_del(t, META_T_CACHE_INDEX, k, 8) == 0) {
				d.prec = rec.p;
				d.lookup = false;
				d.staged = true;
				if (d.prec.version && d.prec.meta_len) {
					struct ssd_intent in = { .state = SSD_GARBAGE,
						.n = s->k + s->m, .obj = obj };

					memcpy(in.place, d.prec.place, sizeof(in.place));
					ssd_be64put(k, d.prec.version);
					if (meta_put(t, META_T_INTENTS, k, 8, &in,
						     sizeof(in)) < 0)
						d.prec.version = 0;  /* found at open */
				}
				s->st.index_dels++;
			}
		}
		ssd_queue_del(s, d);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------- the cache's own thread ---- */

/* lock held */
static void ssd_post_dels(struct ssd *s)
{
	if (!s->del_posted && s->thread_started) {
		s->del_posted = true;
		loop_post(&s->loop, &s->del_msg);
	}
}

struct ssd_gcwait {
	struct meta_flush mf;
	struct ssd *s;
	size_t n;
	struct ssd_prec v[];
};

static void ssd_gcwait_done(struct meta_flush *f, int res)
{
	struct ssd_gcwait *w = container_of(f, struct ssd_gcwait, mf);

	w->s->ngc--;
	if (res == 0)
		ssdflush_gc(w->s, w->v, w->n);
	free(w);
}

/* Stage the queued index deletions, then return their slots. */
static void ssd_stage_dels(struct ssd *s)
{
	struct ssd_del *d;
	struct meta_txn *t;
	size_t n, i;

	pthread_mutex_lock(&s->lock);
	d = s->dels;
	n = s->ndels;
	s->dels = NULL;
	s->ndels = s->cap_dels = 0;
	s->del_posted = false;
	pthread_mutex_unlock(&s->lock);
	if (!n) {
		free(d);
		return;
	}
	t = meta_wbegin(s->meta);
	for (i = 0; t && i < n; i++) {
		uint8_t k[8];

		ssd_be64put(k, d[i].obj);
		if (d[i].staged)
			continue;               /* staged by drop() */
		if (d[i].lookup) {
			size_t rl = ssd_rec_len(s);
			uint8_t *val = malloc(rl);
			struct ssd_rec rec;
			int vl = val ? meta_get(t, META_T_CACHE_INDEX, k, 8, val, rl) : -ENOMEM;

			if (vl == (int)rl)
				memcpy(&rec, val, sizeof(rec));
			free(val);
			if (vl != (int)rl)
				continue;       /* no record: nothing to delete */
			if (rec.slot != SSD_NOSLOT) {
				log_error("ssdcache: dropped object %" PRIu64 " has a "
					  "record with a slot but no entry; kept", d[i].obj);
				continue;
			}
			d[i].prec = rec.p;
		}
		if (meta_del(t, META_T_CACHE_INDEX, k, 8) < 0)
			break;
		if (d[i].prec.version && d[i].prec.meta_len) {
			struct ssd_intent in = { .state = SSD_GARBAGE,
				.n = s->k + s->m, .obj = d[i].obj };

			memcpy(in.place, d[i].prec.place, sizeof(in.place));
			ssd_be64put(k, d[i].prec.version);
			if (meta_put(t, META_T_INTENTS, k, 8, &in, sizeof(in)) < 0)
				break;
		}
	}
	if (t)
		meta_end(t);
	pthread_mutex_lock(&s->lock);
	if (i < n) {
		log_error("ssdcache: cannot stage %zu index deletion(s): %s; "
			  "their slots stay used until restart", n - i,
			  meta_last_error());
	}
	for (size_t j = 0; j < i; j++)
		if (d[j].slot != SSD_NOSLOT)
			s->free_slots[s->nfree++] = d[j].slot;
	s->st.index_dels += i;
	pthread_mutex_unlock(&s->lock);
	if (s->pool_mode && s->thread_started && !s->stopping) {
		struct ssd_gcwait *w = malloc(sizeof(*w) + i * sizeof(w->v[0]) + 1);

		/* without memory the GARBAGE intents are found at the next open */
		if (w) {
			w->s = s;
			w->n = 0;
			for (size_t j = 0; j < i; j++)
				if (d[j].prec.version && d[j].prec.meta_len)
					w->v[w->n++] = d[j].prec;
			if (!w->n) {
				free(w);
			} else {
				/* shards go only after the commit that staged
				 * their GARBAGE intents */
				memset(&w->mf, 0, sizeof(w->mf));
				w->mf.loop = &s->loop;
				w->mf.cb = ssd_gcwait_done;
				s->ngc++;
				meta_flush(s->meta, &w->mf);
			}
		}
	}
	free(d);
}

/* ------------------------------------------------ pool fetch (miss) ---- */

/* Cache thread: free the idle fetch buffers (no fetch ran for
 * SSD_BUF_IDLE_NS: a stream of misses reuses them, also across the short
 * gaps where none is in flight, and an idle cache holds none). */
static void ssd_fbuf_trim(struct ssd *s)
{
	while (s->nfbuf)
		free(s->fbuf[--s->nfbuf]);
}

static void ssd_fetch_get(struct ssd_fetch *f);

/* Cache thread: f is over; its waiters resume on their loops. */
static void ssd_fetch_end(struct ssd_fetch *f, int res)
{
	struct ssd *s = f->s;
	struct ssd_ent *e = f->e;
	struct ssd_req *w;

	pthread_mutex_lock(&s->lock);
	if (!res) {
		for (uint64_t b = f->b0; b < f->b1; b++)
			bit_set(e->valid, b);
		ssd_mark_dirty(s, e);
		s->st.fetches++;
		s->st.miss_bytes += (f->b1 - f->b0) * SSD_BLK;
	} else {
		s->st.fetch_errors++;
	}
	e->fetching = false;
	w = e->fwait;
	e->fwait = NULL;
	e->pins--;
	ssd_maybe_free(s, e);
	pthread_mutex_unlock(&s->lock);
	if (res)
		log_error("ssdcache: fetching object %" PRIu64 " from the pool "
			  "failed: %s", f->obj, strerror(-res));
	while (w) {
		struct ssd_req *next = w->wnext;

		w->fetch_res = res;
		w->msg.fn = ssd_resume_msg;
		loop_post(w->io->loop, &w->msg);
		w = next;
	}
	s->nfetching--;
	if (f->plain && s->nfbuf < SSD_FETCH_MAX)
		s->fbuf[s->nfbuf++] = f->plain;
	else
		free(f->plain);
	free(f);
	ssd_fetch_run(s);
	if (!s->nfetching)
		s->fidle_ns = now_ns();
}

/* Worker: write the fetched blocks that are not valid into the slot (a
 * valid one may be newer than the pool version: a pool-dirty object
 * reopened).  No write runs on the entry meanwhile (ssd_modify_prep) and
 * a fetching entry is never evicted, so the bitmap and the slot read here
 * stay true until ssd_fetch_end sets the bits. */
static int ssd_fetch_write(struct ssd_fetch *f)
{
	struct ssd *s = f->s;
	struct ssd_ent *e = f->e;
	uint64_t b = f->b0, run, foff;
	uint8_t *fill = calloc(f->b1 - f->b0, 1);
	int r = fill ? 0 : -ENOMEM;

	pthread_mutex_lock(&s->lock);
	for (uint64_t i = f->b0; fill && i < f->b1; i++)
		fill[i - f->b0] = !bit_get(e->valid, i);
	foff = slot_off(s, e->slot);
	pthread_mutex_unlock(&s->lock);
	while (!r && b < f->b1) {
		if (!fill[b - f->b0]) {
			b++;
			continue;
		}
		for (run = b; run < f->b1 && fill[run - f->b0]; run++)
			;
		r = ssd_pwrite_all(s->fd, f->plain + (b - f->b0) * SSD_BLK,
				   (run - b) * SSD_BLK, foff + b * SSD_BLK);
		b = run;
	}
	free(fill);
	return r;
}

/* lock held: every block of io resolves to f's plaintext: io's object is
 * in memory and each block, along its chain, is one f filled from the
 * pool (not valid in f's slot: a valid one may be newer than the pool
 * version, and f did not write it). */
static bool ssd_fetch_covers(struct ssd *s, const struct ssd_fetch *f,
			     const struct objstore_io *io)
{
	uint64_t b0 = io->off / SSD_BLK;
	uint64_t b1 = (io->off + io->len + SSD_BLK - 1) / SSD_BLK;
	struct ssd_ent *e = ssd_find(s, io->obj);
	bool pool;

	if (!e || f->hole || b0 < f->b0 || b1 > f->b1)
		return false;
	for (uint64_t b = b0; b < b1; b++)
		if (ssd_source(e, b, &pool) != f->e || !pool)
			return false;
	return true;
}

/* Worker, after the slot write: the reads waiting on f whose every block
 * resolves to its plaintext get their bytes from it (a copy of data still
 * in the CPU caches instead of a read back from the slot).  Until
 * ssd_fetch_end the bitmap does not change (no write runs on a fetching
 * entry) and the waiters found stay listed and pinned; a waiter that
 * arrives after the scan is pushed at the head and resolves again. */
static void ssd_fetch_serve(struct ssd_fetch *f)
{
	struct ssd *s = f->s;
	struct ssd_req *w, *head;

	pthread_mutex_lock(&s->lock);
	head = f->e->fwait;
	for (w = head; w; w = w->wnext)
		w->served = w->kind == SSD_READ && ssd_fetch_covers(s, f, w->io);
	pthread_mutex_unlock(&s->lock);
	for (w = head; w; w = w->wnext)
		if (w->served)
			memcpy(w->io->buf, f->plain + (w->io->off - f->b0 * SSD_BLK),
			       w->io->len);
}

/* Worker: a decode context (at most one per worker is ever busy, so the
 * array never runs out), created on first use. */
static int ssd_fctx_take(struct ssd *s, struct codec_ctx **x)
{
	unsigned c;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	for (c = 0; c < SSD_FETCH_PAR && s->fctx_busy[c]; c++)
		;
	if (c == SSD_FETCH_PAR) {
		pthread_mutex_unlock(&s->lock);
		return -EBUSY;
	}
	s->fctx_busy[c] = true;
	pthread_mutex_unlock(&s->lock);
	if (!s->fctx[c])
		r = codec_ctx_new(s->codec, &s->fctx[c]);
	if (r < 0) {
		pthread_mutex_lock(&s->lock);
		s->fctx_busy[c] = false;
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	*x = s->fctx[c];
	return (int)c;
}

/* Worker: decode the shards (not for a hole: plain is zeros) and write
 * the blocks into the slot, both off the cache thread. */
static void ssd_fetch_decode(struct workq_job *job)
{
	struct ssd_fetch *f = container_of(job, struct ssd_fetch, job);
	struct ssd *s = f->s;
	struct codec_id id = { .chunk = f->obj, .version = f->prec.version };
	struct codec_ctx *x;
	int c;

	f->res = f->wres = 0;
	if (!f->hole) {
		c = ssd_fctx_take(s, &x);
		if (c < 0) {
			f->wres = c;
			return;
		}
		memcpy(id.pool, s->pool_id, sizeof(id.pool));
		f->res = codec_decode_range(x, &id, &f->cm, f->sh, f->lens,
					    f->b0 * SSD_BLK, (f->b1 - f->b0) * SSD_BLK,
					    f->plain, NULL);
		pthread_mutex_lock(&s->lock);
		s->fctx_busy[c] = false;
		pthread_mutex_unlock(&s->lock);
		if (f->res < 0)
			return;
	}
	f->wres = ssd_fetch_write(f);
	if (!f->wres)
		ssd_fetch_serve(f);
}

static void ssd_fetch_decoded(struct workq_job *job)
{
	struct ssd_fetch *f = container_of(job, struct ssd_fetch, job);

	if (f->res < 0 && !f->full) {
		f->full = true;                 /* a data shard is bad: rebuild */
		ssd_fetch_get(f);
		return;
	}
	ssd_fetch_end(f, f->res < 0 ? f->res : f->wres);
}

static void ssd_fetch_work(struct ssd_fetch *f)
{
	f->job.work = ssd_fetch_decode;
	f->job.done = ssd_fetch_decoded;
	f->job.loop = &f->s->loop;
	workq_submit(&f->s->wq, &f->job);
}

static void ssd_fetch_retry_fired(struct loop_op *op, int res, uint32_t flags)
{
	struct ssd_fetch *f = container_of(op, struct ssd_fetch, retry.op);

	(void)res;
	(void)flags;
	ssd_fetch_get(f);
}

/* The pool could not give k shards now: retry later, or give up. */
static void ssd_fetch_retry(struct ssd_fetch *f, int res)
{
	struct ssd *s = f->s;
	uint64_t now = now_ns();

	if (!f->t0)
		f->t0 = now;
	if (s->stopping || now - f->t0 > SSD_FETCH_GIVEUP_NS) {
		ssd_fetch_end(f, res);
		return;
	}
	f->backoff_ns = MIN(MAX(f->backoff_ns * 2, 50ull * 1000000),
			    SSD_FETCH_BACKOFF_MAX_NS);
	if (f->backoff_ns == 50ull * 1000000)
		log_warn("ssdcache: fetching object %" PRIu64 " from the pool failed "
			 "(%s); retrying", f->obj, strerror(-res));
	pthread_mutex_lock(&s->lock);
	s->st.fetch_retries++;
	pthread_mutex_unlock(&s->lock);
	loop_timer_arm(&s->loop, &f->retry, f->backoff_ns, ssd_fetch_retry_fired);
}

static void ssd_fetch_got(struct zdb_chunk_get *op)
{
	struct ssd_fetch *f = op->priv;
	struct ssd *s = f->s;
	unsigned i, got = 0;

	if (op->result < 0) {
		if (!f->full) {
			f->full = true;
			ssd_fetch_get(f);
			return;
		}
		ssd_fetch_retry(f, -EIO);
		return;
	}
	memset(f->sh, 0, sizeof(f->sh));
	memset(f->lens, 0, sizeof(f->lens));
	for (i = 0; i < f->nsh; i++)
		if (op->have >> i & 1) {
			f->sh[f->idx[i]] = f->zs[i].data;
			f->lens[f->idx[i]] = f->zs[i].got;
			got++;
		}
	pthread_mutex_lock(&s->lock);
	s->st.fetch_shards += got;
	pthread_mutex_unlock(&s->lock);
	ssd_fetch_work(f);
}

/* Ask for the data shards covering the range (or, f->full, any k). */
static void ssd_fetch_get(struct ssd_fetch *f)
{
	struct ssd *s = f->s;
	size_t smax = codec_shard_max(s->codec);
	uint64_t mask = codec_range_shards(&f->cm, f->b0 * SSD_BLK,
					   (f->b1 - f->b0) * SSD_BLK);
	unsigned i, n = 0;
	int r;

	if (!s->pool) {
		ssd_fetch_end(f, -EIO);
		return;
	}
	for (i = 0; i < s->k && !f->full; i++)
		if ((mask >> i & 1) && f->prec.place[i] == 0xffffu)
			f->full = true;
	for (i = 0; i < s->k + s->m; i++) {
		if (f->full ? f->prec.place[i] == 0xffffu : !(mask >> i & 1))
			continue;
		ssdflush_key(s, f->prec.version, i, f->keys[n]);
		f->idx[n] = (uint8_t)i;
		f->zs[n] = (struct zdb_shard){ .key = f->keys[n],
			.key_len = SSD_SKEY_LEN, .data = f->sbuf + n * smax,
			.len = smax, .backend = f->prec.place[i] };
		n++;
	}
	f->nsh = n;
	if (n < (f->full ? s->k : 1)) {
		ssd_fetch_end(f, -EIO);
		return;
	}
	memset(&f->get, 0, sizeof(f->get));
	f->get.n = n;
	f->get.k = f->full ? s->k : n;
	f->get.shards = f->zs;
	f->get.done = ssd_fetch_got;
	f->get.priv = f;
	r = zdb_pool_get_chunk(s->pool, &f->get);
	if (r < 0)
		ssd_fetch_retry(f, r);
}

/* Cache thread: start f (its entry has a slot; counted in nfetching). */
static void ssd_fetch_start(struct ssd_fetch *f)
{
	struct ssd *s = f->s;

	pthread_mutex_lock(&s->lock);
	f->obj = f->e->obj;
	f->prec = f->e->prec;
	f->hole = f->e->hole;
	pthread_mutex_unlock(&s->lock);
	/* started by an eviction's commit after ssdflush_stop (a fetch waited
	 * for a slot at close): no pool and no workers left, not even for a
	 * hole's zeros */
	if (!s->wq_started) {
		ssd_fetch_end(f, -EIO);
		return;
	}
	/* one buffer: the plaintext (a slot) then k+m shards, reused */
	f->plain = s->nfbuf ? s->fbuf[--s->nfbuf]
		: malloc(s->slot_size + codec_shard_max(s->codec) * (s->k + s->m));
	if (!f->plain) {
		ssd_fetch_end(f, -ENOMEM);
		return;
	}
	f->sbuf = f->plain + s->slot_size;
	if (f->hole) {
		memset(f->plain, 0, (f->b1 - f->b0) * SSD_BLK);
		ssd_fetch_work(f);
		return;
	}
	if (!s->pool || codec_meta_unpack(f->prec.meta, f->prec.meta_len, &f->cm) < 0) {
		ssd_fetch_end(f, -EIO);
		return;
	}
	ssd_fetch_get(f);
}

void ssd_fetch_run(struct ssd *s)
{
	while (s->nfetching < SSD_FETCH_MAX) {
		struct ssd_fetch *f;

		pthread_mutex_lock(&s->lock);
		f = s->fq_head;
		if (f) {
			s->fq_head = f->next;
			if (!s->fq_head)
				s->fq_tail = NULL;
			f->next = NULL;
		}
		if (f && f->e->slot == SSD_NOSLOT && ssd_slot_take(s, f->e) < 0) {
			f->next = s->fsw_head;
			s->fsw_head = f;
			s->st.slot_waits++;
			pthread_mutex_unlock(&s->lock);
			ssd_evict_run(s);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		if (!f)
			return;
		s->nfetching++;
		ssd_fetch_start(f);
	}
}

static void ssd_fq_msg(struct loop_msg *m)
{
	struct ssd *s = container_of(m, struct ssd, fq_msg);

	pthread_mutex_lock(&s->lock);
	s->fq_posted = false;
	pthread_mutex_unlock(&s->lock);
	ssd_fetch_run(s);
}

/* ---------------------------------------------------------- eviction ---- */

static bool ssd_evictable(const struct ssd_ent *e)
{
	return e->slot != SSD_NOSLOT && !e->dropped && !e->pins && !e->deps &&
	       !e->on_pdirty && !e->flushing && !e->fetching && !e->dirty_tok &&
	       !e->rmw && e->prec.version;
}

/* lock held: the next victim by S3-FIFO (taken off its queue), or NULL. */
static struct ssd_ent *ssd_evict_pick(struct ssd *s)
{
	uint64_t budget = 4 * (s->qn[SSD_Q_SMALL] + s->qn[SSD_Q_MAIN]) + 8;
	uint64_t small_max = MAX(1, s->nslots / 10);

	while (budget--) {
		int q = s->qn[SSD_Q_SMALL] && (s->qn[SSD_Q_SMALL] >= small_max ||
					       !s->qn[SSD_Q_MAIN]) ?
			SSD_Q_SMALL : SSD_Q_MAIN;
		struct ssd_ent *e = s->qh[q];

		if (!e)
			return NULL;
		q_remove(s, e);
		if (q == SSD_Q_SMALL && e->freq) {
			e->freq = 0;                    /* re-used: promoted */
			q_push(s, e, SSD_Q_MAIN);
			continue;
		}
		if (q == SSD_Q_MAIN && e->freq) {
			e->freq--;
			q_push(s, e, SSD_Q_MAIN);
			continue;
		}
		if (!ssd_evictable(e)) {
			q_push(s, e, SSD_Q_MAIN);
			continue;
		}
		if (q == SSD_Q_SMALL)
			ghost_add(s, e->obj);
		return e;
	}
	return NULL;
}

static void ssd_evict_committed(struct meta_flush *f, int res);

/* Cache thread: evict clean objects until high free slots (or one when
 * writers wait).  Their records (no slot) are staged in one write section
 * and committed; only then are the slots free to reuse.  While the cache
 * stops, only for a writer or fetch waiting for a slot (a message or a
 * flush completion run by the stop would otherwise start one for nothing;
 * ssd_thread waits for one in flight before its loop goes away). */
void ssd_evict_run(struct ssd *s)
{
	size_t rl = ssd_rec_len(s), n = 0, want;
	struct meta_txn *t;
	uint8_t *val;

	if (!s->pool_mode || s->evicting || !s->thread_started)
		return;
	pthread_mutex_lock(&s->lock);
	want = s->nfree < s->high ? s->high - s->nfree : 0;
	if ((s->nfree >= s->low || s->stopping) && !s->sw_head && !s->fsw_head)
		want = 0;
	else if (!want)
		want = 1;
	pthread_mutex_unlock(&s->lock);
	if (!want)
		return;
	val = calloc(1, rl);
	s->ev_slots = calloc(want, sizeof(*s->ev_slots));
	if (!val || !s->ev_slots) {
		free(val);
		free(s->ev_slots);
		s->ev_slots = NULL;
		return;
	}
	t = meta_wbegin(s->meta);
	if (!t) {
		free(val);
		free(s->ev_slots);
		s->ev_slots = NULL;
		return;
	}
	pthread_mutex_lock(&s->lock);
	while (n < want) {
		struct ssd_ent *e = ssd_evict_pick(s), *b;
		struct ssd_rec rec;
		uint8_t k[8];

		if (!e)
			break;
		rec = (struct ssd_rec){ .slot = SSD_NOSLOT,
			.flags = (e->hole ? SSD_F_HOLE : 0) |
				 (e->repair ? SSD_F_REPAIR : 0),
			.p = e->prec };
		memcpy(val, &rec, sizeof(rec));
		ssd_be64put(k, e->obj);
		if (meta_put(t, META_T_CACHE_INDEX, k, 8, val, rl) < 0) {
			q_push(s, e, SSD_Q_MAIN);
			break;
		}
		s->ev_slots[n++] = e->slot;
		s->st.evictions++;
		s->st.index_puts++;
		e->slot = SSD_NOSLOT;
		memset(e->valid, 0, s->bm_bytes);
		e->from_pool = true;
		e->freq = 0;
		e->last_end = 0;
		b = e->bent;
		e->bent = NULL;
		e->base = 0;
		e->ver++;
		e->staged_ver = e->ver;
		ssd_dirty_remove(s, e);
		if (b) {
			b->deps--;
			ssd_maybe_free(s, b);
		}
		ssd_obent_release(s, e, e->ver);
		ssd_maybe_free(s, e);
	}
	pthread_mutex_unlock(&s->lock);
	meta_end(t);
	free(val);
	if (!n) {
		free(s->ev_slots);
		s->ev_slots = NULL;
		return;
	}
	pthread_mutex_lock(&s->lock);
	s->ev_n = n;
	pthread_mutex_unlock(&s->lock);
	s->evicting = true;
	memset(&s->ev_mf, 0, sizeof(s->ev_mf));
	s->ev_mf.loop = &s->loop;
	s->ev_mf.cb = ssd_evict_committed;
	meta_flush(s->meta, &s->ev_mf);
}

static void ssd_evict_committed(struct meta_flush *f, int res)
{
	struct ssd *s = container_of(f, struct ssd, ev_mf);
	struct ssd_req *w;
	struct ssd_fetch *fw;

	if (res < 0) {
		log_error("ssdcache: committing %zu eviction(s) failed: %s "
			  "(retried)", s->ev_n, f->err);
		s->ev_failed = true;            /* the tick flushes again */
		return;
	}
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->ev_n; i++)
		s->free_slots[s->nfree++] = s->ev_slots[i];
	s->ev_n = 0;
	w = s->sw_head;
	s->sw_head = NULL;
	fw = s->fsw_head;
	s->fsw_head = NULL;
	while (fw) {
		struct ssd_fetch *next = fw->next;

		fw->next = s->fq_head;
		s->fq_head = fw;
		if (!s->fq_tail)
			s->fq_tail = fw;
		fw = next;
	}
	pthread_mutex_unlock(&s->lock);
	free(s->ev_slots);
	s->ev_slots = NULL;
	s->evicting = false;
	while (w) {
		struct ssd_req *next = w->wnext;

		w->fetch_res = 0;
		w->msg.fn = ssd_resume_msg;
		loop_post(w->io->loop, &w->msg);
		w = next;
	}
	ssd_fetch_run(s);
	ssd_evict_run(s);
}

void ssd_evict_tick(struct ssd *s)
{
	if (!s->nfetching && s->nfbuf && now_ns() - s->fidle_ns >= SSD_BUF_IDLE_NS)
		ssd_fbuf_trim(s);
	if (s->evicting && s->ev_failed) {
		s->ev_failed = false;
		memset(&s->ev_mf, 0, sizeof(s->ev_mf));
		s->ev_mf.loop = &s->loop;
		s->ev_mf.cb = ssd_evict_committed;
		meta_flush(s->meta, &s->ev_mf);
		return;
	}
	ssd_evict_run(s);
	ssd_fetch_run(s);
}

static void ssd_del_msg(struct loop_msg *m)
{
	ssd_stage_dels(container_of(m, struct ssd, del_msg));
}

static void ssd_stop_msg(struct loop_msg *m)
{
	struct ssd *s = container_of(m, struct ssd, stop_msg);

	s->stopping = true;
	loop_stop(&s->loop);
}

static void *ssd_thread(void *arg)
{
	struct ssd *s = arg;
	uint64_t deadline;
	int r = loop_init(&s->loop, 256);

	if (r == 0 && s->pool_mode) {
		r = ssdflush_start(s);
		if (r < 0) {
			ssdflush_stop(s);
			loop_fini(&s->loop);
		}
	}
	pthread_mutex_lock(&s->start_lock);
	s->start_res = r;
	s->started = true;
	pthread_cond_signal(&s->start_cond);
	pthread_mutex_unlock(&s->start_lock);
	if (r < 0)
		return NULL;
	loop_run(&s->loop);
	deadline = now_ns() + 60ull * 1000000000;
	if (s->pool_mode) {
		while (s->evicting && !s->ev_failed && now_ns() < deadline)
			loop_run_once(&s->loop, 10ull * 1000000);
		ssdflush_stop(s);
		deadline = now_ns() + 60ull * 1000000000;
	}
	/* what the last completions posted here (a sync or writethrough
	 * FLUSH answered by ssd_wt_wake in ssdflush_stop's final iteration)
	 * is answered and freed now, while the thread's state still exists;
	 * an eviction started meanwhile (a flush completion in ssdflush_stop
	 * or one of these messages, for a writer waiting for a slot) commits
	 * with a reply to this loop, and a sync's local flush (fdatasync) on
	 * this ring completes here: both are waited for too */
	for (;;) {
		while (loop_run_posts(&s->loop) > 0)
			;
		if (((!s->evicting || s->ev_failed) && !s->nlocal) ||
		    now_ns() >= deadline)
			break;
		loop_run_once(&s->loop, 10ull * 1000000);
	}
	for (unsigned i = 0; i < SSD_FETCH_PAR; i++)
		codec_ctx_free(s->fctx[i]);
	ssd_fbuf_trim(s);
	loop_fini(&s->loop);
	return NULL;
}

/* ------------------------------------------------------- open / close ---- */

static void ssd_mark_clean(struct ssd *s, struct meta_txn *t, void *arg)
{
	uint8_t k[8];

	(void)arg;
	ssd_be64put(k, 0);
	s->bind.clean = 1;
	meta_put(t, META_T_CACHE_INDEX, k, 8, &s->bind, sizeof(s->bind));
}

/* Make the index describe the file exactly, then mark it closed cleanly
 * (only when no pool flush was cut short). */
static void ssd_close_sync(struct ssd *s)
{
	struct ssd_req *r = ssd_req_new(s, NULL, SSD_FLUSH, 0);
	int err;

	if (!r)
		return;
	pthread_mutex_lock(&s->lock);
	err = ssd_snapshot_locked(s, r);
	pthread_mutex_unlock(&s->lock);
	if (!err && fdatasync(s->fd) < 0)
		err = -errno;
	if (!err && !s->nflushing && !s->ngc) {
		r->extra = ssd_mark_clean;
	}
	if (!err)
		err = ssd_stage(s, r);
	if (err)
		log_error("ssdcache: closing: %s (the next open re-flushes every "
			  "object)", strerror(-err));
	ssd_req_free(r);
}

static void ssd_free(struct ssd *s)
{
	size_t i;

	if (s->thread_started) {
		s->stop_msg.fn = ssd_stop_msg;
		loop_post(&s->loop, &s->stop_msg);
		pthread_join(s->thread, NULL);
	}
	/* flushes still waiting for the pool (down or paused): syncs whose
	 * caller gave up (ssdcache_sync's timeout) and writethrough FLUSHes
	 * a caller closed the cache under (a daemon fails those first:
	 * ssdcache_fail_flushes) end here, their caller's loop may be gone */
	while (s->wt_wait) {
		struct ssd_req *r = s->wt_wait;
		struct objstore_io *io = r->io;
		bool sync = io->cb == ssd_sync_done;

		s->wt_wait = r->wnext;
		ssd_req_free(r);
		if (!sync)
			log_warn("ssdcache: closing: a writethrough FLUSH still waited "
				 "for the pool: failed (ESHUTDOWN)");
		io->cb(io, sync ? -ECANCELED : -ESHUTDOWN);
	}
	if (s->ndels)
		ssd_stage_dels(s);
	if (s->opened)
		ssd_close_sync(s);
	for (i = 0; s->tab && i < s->nbuckets; i++) {
		struct ssd_ent *e = s->tab[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	free(s->tab);
	free(s->free_slots);
	free(s->dels);
	free(s->ghost_id);
	free(s->ghost_seq);
	free(s->ev_slots);
	if (s->pool_cfg) {
		zdb_pool_cfg_wipe(s->pool_cfg);
		free(s->pool_cfg);
	}
	sodium_memzero(s->skey, sizeof(s->skey));
	if (s->fd >= 0)
		close(s->fd);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->start_lock);
	pthread_cond_destroy(&s->start_cond);
	free(s);
}

static void ssd_close(struct objstore *so)
{
	ssd_free((struct ssd *)so);
}

static int ssd_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done,
				  (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

static int ssd_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done,
				   (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

/* Regular file: allocate all its blocks now.  fallocate mode 0 never
 * changes data (blocks already allocated stay as they are, new ones read as
 * zeros, like the holes they replace), so this is safe on every open.  Why:
 * a first write into a hole of a sparse file costs ext4 a delayed
 * allocation per page (reservation, extent-status and quota updates); 1 MiB
 * pwrites into a fresh sparse file measured 0.4-1.6 CPU-s per 2 GiB (median
 * 1.2) against 0.1-0.3 (median 0.23) into preallocated blocks — the cold
 * read's slot fills and the first writes of a new cache pay it.  It also
 * keeps a filesystem that fills up later from failing cache writes.  Not
 * fatal: without support or space the file stays (partly) sparse.  Only
 * when the missing blocks fit with 1/32 of the filesystem (at least
 * SSD_PREALLOC_KEEP, at most 16 x that) still free: a failed fallocate keeps what it allocated (ext4),
 * so a cache larger than the free space filled the filesystem, and the
 * metadata next to it (<cache_path>/meta) could not commit any more — the
 * daemon did not start where a sparse cache had worked.  fresh: the file
 * has no data yet, so a failure gives the blocks back. */
#define SSD_PREALLOC_KEEP (64ull << 20)
static void ssd_prealloc(int fd, uint64_t size, const char *path, bool fresh)
{
	struct statvfs fs;
	struct stat sb;
	uint64_t have, need, avail, keep;

	if (fstat(fd, &sb) < 0 || fstatvfs(fd, &fs) < 0)
		return;
	have = (uint64_t)sb.st_blocks * 512;
	if (have >= size)
		return;
	need = size - have;
	avail = (uint64_t)fs.f_bavail * fs.f_frsize;
	keep = MIN(MAX((uint64_t)fs.f_blocks * fs.f_frsize / 32, SSD_PREALLOC_KEEP),
		   16 * SSD_PREALLOC_KEEP);
	if (avail < need || avail - need < keep) {
		log_warn("ssdcache: %s: not preallocated (%" PRIu64 " bytes missing, "
			 "%" PRIu64 " free, %" PRIu64 " kept free); the file stays "
			 "sparse", path, need, avail, keep);
		return;
	}
	if (fallocate(fd, 0, 0, (off_t)size) < 0) {
		int err = errno;

		if (fresh && (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0))
			fresh = false;
		log_warn("ssdcache: %s: cannot preallocate %" PRIu64 " bytes (%s); "
			 "the file stays sparse%s", path, size, strerror(err),
			 fresh ? "" : " (partly allocated)");
	}
}

/* Open the file, read or create the header. */
static int ssd_open_file(struct ssd *s, const struct ssdcache_opts *o,
			 struct ssd_hdr *h, bool *created)
{
	struct stat sb;
	uint64_t size;
	int r;

	*created = false;
	s->fd = open(o->path, O_RDWR | O_CLOEXEC | (o->create ? O_CREAT : 0), 0600);
	if (s->fd < 0) {
		r = -errno;
		log_error("ssdcache: %s: %s", o->path, strerror(-r));
		return r;
	}
	if (fstat(s->fd, &sb) < 0)
		return -errno;
	if (S_ISBLK(sb.st_mode)) {
		if (ioctl(s->fd, BLKGETSIZE64, &size) < 0)
			return -errno;
	} else if (S_ISREG(sb.st_mode)) {
		size = (uint64_t)sb.st_size;
	} else {
		log_error("ssdcache: %s: not a regular file or block device", o->path);
		return -EINVAL;
	}
	if (size >= SSD_HDR_SIZE) {
		r = ssd_pread_all(s->fd, h, sizeof(*h), 0);
		if (r < 0)
			return r;
	} else {
		memset(h, 0, sizeof(*h));
	}
	if (memcmp(h->magic, SSD_MAGIC, 8) != 0) {
		static const uint8_t zero[8];

		if (!o->create || (size >= SSD_HDR_SIZE && memcmp(h->magic, zero, 8)) ||
		    (size > 0 && size < SSD_HDR_SIZE)) {
			log_error("ssdcache: %s is not an nbdsrv cache (no cache header%s)",
				  o->path, o->create ? "; refusing to overwrite it" : "");
			return -EUCLEAN;
		}
		/* new cache */
		if (S_ISREG(sb.st_mode)) {
			if (o->size < SSD_HDR_SIZE + (uint64_t)o->slot_size) {
				log_error("ssdcache: size %" PRIu64 " holds no slot of %u bytes",
					  o->size, o->slot_size);
				return -EINVAL;
			}
			if (ftruncate(s->fd, (off_t)o->size) < 0)
				return -errno;
			size = o->size;
			ssd_prealloc(s->fd, size, o->path, true);
		} else if (o->size && o->size < size) {
			size = o->size;
		}
		memset(h, 0, sizeof(*h));
		memcpy(h->magic, SSD_MAGIC, 8);
		h->format = SSD_FORMAT;
		h->slot_size = o->slot_size;
		h->nslots = (size - SSD_HDR_SIZE) / o->slot_size;
		memcpy(h->pool_id, o->pool_id, META_POOL_ID_LEN);
		if (getrandom(h->instance, sizeof(h->instance), 0) != sizeof(h->instance))
			return -EIO;
		h->csum = fnv1a(h, offsetof(struct ssd_hdr, csum));
		if (h->nslots == 0 || h->nslots > UINT32_MAX) {
			log_error("ssdcache: %s: unusable slot count %" PRIu64,
				  o->path, h->nslots);
			return -EINVAL;
		}
		r = ssd_pwrite_all(s->fd, h, sizeof(*h), 0);
		if (r == 0 && fdatasync(s->fd) < 0)
			r = -errno;
		if (r < 0)
			return r;
		*created = true;
		return 0;
	}
	if (h->csum != fnv1a(h, offsetof(struct ssd_hdr, csum))) {
		log_error("ssdcache: %s: cache header is damaged (checksum mismatch)",
			  o->path);
		return -EUCLEAN;
	}
	if (h->format != SSD_FORMAT) {
		log_error("ssdcache: %s: cache format %u, this build knows %u",
			  o->path, h->format, SSD_FORMAT);
		return -EPROTONOSUPPORT;
	}
	if (memcmp(h->pool_id, o->pool_id, META_POOL_ID_LEN) != 0) {
		log_error("ssdcache: %s belongs to another pool", o->path);
		return -EINVAL;
	}
	if (h->slot_size != o->slot_size) {
		log_error("ssdcache: %s has %u-byte slots, the pool wants %u",
			  o->path, h->slot_size, o->slot_size);
		return -EINVAL;
	}
	if (h->nslots == 0 || h->nslots > UINT32_MAX ||
	    h->nslots > (size - SSD_HDR_SIZE) / h->slot_size) {
		log_error("ssdcache: %s: %" PRIu64 " slots do not fit its %" PRIu64
			  " bytes (truncated?)", o->path, h->nslots, size);
		return -EUCLEAN;
	}
	if (S_ISREG(sb.st_mode))        /* a cache made sparse by an older build */
		ssd_prealloc(s->fd, size, o->path, false);
	return 0;
}

/* Load the index; bind it to the file (new cache) or check the binding. */
static int ssd_load_index(struct ssd *s, const struct ssdcache_opts *o,
			  const struct ssd_hdr *h, bool created)
{
	size_t rl = ssd_rec_len(s), kl;
	uint8_t k[8], kout[8], *val = malloc(rl + 1), *used = NULL;
	struct ssd_bind bind, want = { .version = SSD_BIND_VERSION,
		.slot_size = h->slot_size, .nslots = h->nslots };
	struct meta_txn *t;
	struct ssd_ent *e;
	size_t i;
	int r, bl;

	memcpy(want.instance, h->instance, sizeof(want.instance));
	s->bind = want;
	used = calloc(s->nslots, 1);
	if (!val || !used) {
		r = -ENOMEM;
		goto out;
	}
	t = meta_rbegin(s->meta);
	if (!t) {
		r = -EIO;
		goto out;
	}
	ssd_be64put(k, 0);
	bl = meta_get(t, META_T_CACHE_INDEX, k, 8, &bind, sizeof(bind));
	r = 0;
	for (enum meta_seek how = META_GT;; ) {
		int vl = meta_seek(t, META_T_CACHE_INDEX, how, k, 8, kout, 8, &kl,
				   val, rl + 1);
		struct ssd_rec rec;

		if (vl == -ENOENT)
			break;
		if (vl < 0) {
			r = vl;
			break;
		}
		memcpy(k, kout, 8);
		if (kl != 8 || (size_t)vl != rl) {
			log_error("ssdcache: index record of %zu bytes (want %zu)",
				  (size_t)vl, rl);
			r = -EUCLEAN;
			break;
		}
		memcpy(&rec, val, sizeof(rec));
		if (rec.slot != SSD_NOSLOT && (rec.slot >= s->nslots || used[rec.slot])) {
			log_error("ssdcache: index record of object %" PRIu64
				  " names slot %u (%s)", ssd_be64get(kout), rec.slot,
				  rec.slot >= s->nslots ? "out of range" : "twice");
			r = -EUCLEAN;
			break;
		}
		if (s->nents >= s->nbuckets && ssd_grow(s) < 0) {
			r = -ENOMEM;
			break;
		}
		e = calloc(1, sizeof(*e) + 2 * s->bm_bytes);
		if (!e) {
			r = -ENOMEM;
			break;
		}
		if (rec.slot != SSD_NOSLOT)
			used[rec.slot] = 1;
		e->obj = ssd_be64get(kout);
		e->slot = rec.slot;
		e->base = rec.base;
		e->dropped = rec.flags & SSD_F_DROPPED;
		e->ver = e->staged_ver = 1;
		if (rec.slot != SSD_NOSLOT)
			memcpy(e->valid, val + sizeof(rec), s->bm_bytes);
		e->prec = rec.p;
		e->hole = rec.flags & SSD_F_HOLE;
		if (s->pool_mode && (rec.flags & SSD_F_DIRTY) &&
		    !(rec.flags & SSD_F_DROPPED))
			ssd_pool_dirty(s, e);
		if (s->pool_mode && (rec.flags & SSD_F_REPAIR))
			ssd_repair_set(s, e, true);
		e->hnext = s->tab[ssd_hash(e->obj, s->nbuckets)];
		s->tab[ssd_hash(e->obj, s->nbuckets)] = e;
		s->nents++;
	}
	meta_end(t);
	if (r < 0)
		goto out;
	if (bl >= 0 && !created && (bl != sizeof(bind) ||
			memcmp(&bind, &want, offsetof(struct ssd_bind, clean)))) {
		log_error("ssdcache: the cache index belongs to another cache file "
			  "than %s (replaced or re-created?); refusing it", o->path);
		r = -ESTALE;
		goto out;
	}
	if (bl < 0 && s->nents) {
		log_error("ssdcache: cache index without binding record");
		r = -EUCLEAN;
		goto out;
	}
	if (created && s->nents && !s->pool_mode) {
		log_error("ssdcache: %s is new but the index holds %zu objects "
			  "(their data would be lost); refusing", o->path, s->nents);
		r = -ESTALE;
		goto out;
	}
	if (created && s->nents) {
		/*
		 * The cache file was lost (or replaced by an empty one): every
		 * object loses its slot and reads from its pool version.
		 * Objects with writes not yet in the pool lose those:
		 * within the contract in writethrough mode (no FLUSH covered
		 * them), not in writeback mode (a FLUSH did).
		 */
		size_t ndirty = 0;

		for (i = 0; i < s->nbuckets; i++)
			for (e = s->tab[i]; e; e = e->hnext)
				ndirty += e->on_pdirty;
		if (ndirty && !s->writethrough && !s->discard_dirty) {
			log_error("ssdcache: %s is new but %zu object(s) have flushed "
				  "writes that are not in the pool yet (writeback); "
				  "refusing to lose them (set discard_dirty to open "
				  "anyway)", o->path, ndirty);
			r = -ESTALE;
			goto out;
		}
		for (i = 0; i < s->nbuckets; i++)
			for (e = s->tab[i]; e; e = e->hnext) {
				e->slot = SSD_NOSLOT;
				memset(e->valid, 0, s->bm_bytes);
				if (e->on_pdirty) {
					struct ssd_ent **pp = &s->pdirty;

					while (*pp != e)
						pp = &(*pp)->pnext;
					*pp = e->pnext;
					e->on_pdirty = false;
					ssd_tok_release(s, e);
				}
			}
		memset(used, 0, s->nslots);
		s->st.rebind_reverted = ndirty;
		log_warn("ssdcache: %s is new: the index of %zu object(s) is re-bound "
			 "to it; their data comes from the pool%s", o->path, s->nents,
			 ndirty ? "" : " (no unflushed writes lost)");
		if (ndirty)
			log_warn("ssdcache: %zu object(s) lost their writes not yet in "
				 "the pool (back to their pool version or base)", ndirty);
	}
	if (bl >= 0 && !bind.clean && s->pool_mode && !created) {
		/*
		 * Not closed cleanly: a slot may hold writes completed after
		 * its last index record (the page cache outlives a SIGKILL),
		 * which its pool version lacks.  Flush every object again so
		 * the pool and the cache cannot disagree.
		 */
		size_t nre = 0;

		for (i = 0; i < s->nbuckets; i++)
			for (e = s->tab[i]; e; e = e->hnext)
				if (!e->dropped && !e->on_pdirty &&
				    e->slot != SSD_NOSLOT) {
					ssd_pool_dirty(s, e);
					nre++;
				}
		if (nre)
			log_info("ssdcache: not closed cleanly: %zu object(s) will "
				 "be flushed to the pool again", nre);
	}
	/* pool-dirty at open: written before the stop, quiet since — no
	 * delay (ssdflush.c, "When an object is flushed") */
	for (e = s->pdirty; e; e = e->pnext)
		e->wb_due = true;
	if (bl < 0 || bind.clean || created) {
		/* mark "open" durably before any write can land (and, re-bound,
		 * every record without its slot) */
		t = meta_wbegin(s->meta);
		if (!t) {
			r = -EIO;
			goto out;
		}
		ssd_be64put(k, 0);
		want.clean = 0;
		r = meta_put(t, META_T_CACHE_INDEX, k, 8, &want, sizeof(want));
		for (i = 0; created && r == 0 && i < s->nbuckets; i++)
			for (e = s->tab[i]; e && r == 0; e = e->hnext) {
				struct ssd_rec rec = { .slot = SSD_NOSLOT,
					.flags = (e->dropped ? SSD_F_DROPPED : 0) |
						 (e->hole ? SSD_F_HOLE : 0) |
						 (e->repair ? SSD_F_REPAIR : 0),
					.base = e->base, .p = e->prec };

				memset(val, 0, rl);
				memcpy(val, &rec, sizeof(rec));
				ssd_be64put(k, e->obj);
				r = meta_put(t, META_T_CACHE_INDEX, k, 8, val, rl);
			}
		meta_end(t);
		if (r < 0)
			goto out;
		r = meta_sync(s->meta);
		if (r < 0) {
			log_error("ssdcache: cannot commit the index binding: %s",
				  meta_last_error());
			goto out;
		}
	}
	/* link bases, count dependents, free what nothing needs; an object
	 * with a pool version and no slot needs no base (the pool version
	 * holds every block) */
	for (i = 0; i < s->nbuckets; i++)
		for (e = s->tab[i]; e; e = e->hnext) {
			if (e->prec.version && e->slot == SSD_NOSLOT)
				e->base = 0;
			e->bent = e->base ? ssd_find(s, e->base) : NULL;
			if (e->bent)
				e->bent->deps++;
			else
				e->base = 0;
			e->from_pool = s->pool_mode && !e->bent && e->prec.version;
			if (s->pool_mode && e->slot != SSD_NOSLOT)
				q_push(s, e, SSD_Q_MAIN);
		}
	s->nfree = 0;
	for (uint64_t sl = s->nslots; sl-- > 0; )
		if (!used[sl])
			s->free_slots[s->nfree++] = (uint32_t)sl;
	{
		/* dropped entries no object depends on any more */
		struct ssd_ent **gone = calloc(s->nents + 1, sizeof(*gone));
		size_t ng = 0;

		if (!gone) {
			r = -ENOMEM;
			goto out;
		}
		for (i = 0; i < s->nbuckets; i++)
			for (e = s->tab[i]; e; e = e->hnext)
				if (e->dropped && !e->deps)
					gone[ng++] = e;
		for (i = 0; i < ng; i++)
			ssd_maybe_free(s, gone[i]);
		/* evicted objects leave memory (loaded again on a miss) */
		ng = 0;
		for (i = 0; i < s->nbuckets; i++)
			for (e = s->tab[i]; e; e = e->hnext)
				if (ssd_forgettable(s, e))
					gone[ng++] = e;
		for (i = 0; i < ng; i++)
			ssd_maybe_free(s, gone[i]);
		free(gone);
	}
out:
	free(val);
	free(used);
	return r;
}

static const struct objstore_ops ssd_ops = {
	.name = "ssdcache",
	.read = ssd_read,
	.write = ssd_write,
	.zero = ssd_zero,
	.flush = ssd_flush,
	.drop = ssd_drop,
	.prefetch = ssd_prefetch,
	.close = ssd_close,
};

int ssdcache_open(const struct ssdcache_opts *o, struct objstore **out)
{
	struct ssd *s;
	struct ssd_hdr h;
	bool created;
	int r;

	*out = NULL;
	if (!o->path || !o->meta || !IS_POW2(o->slot_size) ||
	    o->slot_size < 65536 || o->slot_size > 8u << 20) {
		log_error("ssdcache: bad options (slot size %u: a power of two, "
			  "64 KiB .. 8 MiB; a path; a meta store)", o->slot_size);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->start_lock, NULL);
	pthread_cond_init(&s->start_cond, NULL);
	s->base.ops = &ssd_ops;
	s->meta = o->meta;
	s->slot_size = o->slot_size;
	s->nblk = o->slot_size / SSD_BLK;
	s->bm_words = (s->nblk + 63) / 64;
	s->bm_bytes = s->bm_words * 8;
	s->del_msg.fn = ssd_del_msg;
	s->fq_msg.fn = ssd_fq_msg;
	s->discard_dirty = o->discard_dirty;
	memcpy(s->pool_id, o->pool_id, META_POOL_ID_LEN);
	if (o->pool_cfg) {
		const struct codec_params *cp;

		if (!o->codec) {
			log_error("ssdcache: a pool needs its codec");
			r = -EINVAL;
			goto fail;
		}
		cp = codec_get_params(o->codec);
		if (cp->max_chunk < o->slot_size) {
			log_error("ssdcache: the codec's chunks (%u) are smaller than "
				  "the slots (%u)", cp->max_chunk, o->slot_size);
			r = -EINVAL;
			goto fail;
		}
		s->pool_mode = true;
		s->writethrough = o->writethrough;
		s->codec = o->codec;
		s->k = cp->k;
		s->m = cp->m;
		memcpy(s->skey, o->shard_key_seed, sizeof(s->skey));
		s->flush_par = o->flush_parallel ? o->flush_parallel : SSD_FLUSH_PAR;
		s->dirty_max = o->dirty_max;
		s->flush_idle_ns = o->flush_idle_set ? o->flush_idle_ms * 1000000ull
			: SSD_FLUSH_IDLE_NS;
		s->flush_age_ns = o->flush_max_age_set ? o->flush_max_age_ms * 1000000ull
			: SSD_FLUSH_AGE_NS;
		s->fault_wrap = o->fault_wrap;
		s->pool_cfg = malloc(sizeof(*s->pool_cfg));
		if (!s->pool_cfg) {
			r = -ENOMEM;
			goto fail;
		}
		memcpy(s->pool_cfg, o->pool_cfg, sizeof(*s->pool_cfg));
	}
	r = ssd_open_file(s, o, &h, &created);
	if (r < 0)
		goto fail;
	s->nslots = h.nslots;
	if (!s->dirty_max)
		s->dirty_max = MAX(1, s->nslots / 2);
	if (s->pool_mode && s->dirty_max > s->nslots - MIN(s->nslots - 1, 2))
		/* keep slots a flush can fetch a base into */
		s->dirty_max = s->nslots - MIN(s->nslots - 1, 2);
	s->flush_bg = o->flush_background_set ? MIN(o->flush_background, s->dirty_max)
		: s->dirty_max - s->dirty_max / 4;
	/* free-slot reserve kept by the evictor (pool mode) */
	s->high = MIN(MAX(s->nslots / 16, 2), MAX(s->nslots / 2, 1));
	s->low = MAX(s->high / 2, 1);
	s->ghost_mask = 1;
	while (s->ghost_mask < 2 * s->nslots)
		s->ghost_mask <<= 1;
	s->ghost_mask--;
	s->nbuckets = 1024;
	s->tab = calloc(s->nbuckets, sizeof(*s->tab));
	s->free_slots = calloc(s->nslots, sizeof(*s->free_slots));
	s->ghost_id = calloc(s->ghost_mask + 1, sizeof(*s->ghost_id));
	s->ghost_seq = calloc(s->ghost_mask + 1, sizeof(*s->ghost_seq));
	if (!s->tab || !s->free_slots || !s->ghost_id || !s->ghost_seq) {
		r = -ENOMEM;
		goto fail;
	}
	r = ssd_load_index(s, o, &h, created);
	if (r < 0) {
		if (created) {
			/* not ours after all: the next open sees no header */
			static const uint8_t zero[SSD_HDR_SIZE];

			if (ssd_pwrite_all(s->fd, zero, sizeof(zero), 0) == 0)
				fdatasync(s->fd);
		}
		goto fail;
	}
	r = pthread_create(&s->thread, NULL, ssd_thread, s);
	if (r) {
		r = -r;
		goto fail;
	}
	pthread_mutex_lock(&s->start_lock);
	while (!s->started)
		pthread_cond_wait(&s->start_cond, &s->start_lock);
	pthread_mutex_unlock(&s->start_lock);
	if (s->start_res < 0) {
		pthread_join(s->thread, NULL);
		r = s->start_res;
		goto fail;
	}
	pthread_mutex_lock(&s->lock);
	s->thread_started = true;
	if (s->ndels)
		ssd_post_dels(s);
	pthread_mutex_unlock(&s->lock);
	s->opened = true;
	log_info("ssdcache: %s: %" PRIu64 " slots of %u KiB, %zu objects indexed",
		 o->path, s->nslots, s->slot_size >> 10, s->nents);
	*out = &s->base;
	return 0;
fail:
	ssd_free(s);
	return r;
}

void ssdcache_get_stats(struct objstore *so, struct ssdcache_stats *st)
{
	struct ssd *s = (struct ssd *)so;

	pthread_mutex_lock(&s->lock);
	*st = s->st;
	st->slots = s->nslots;
	st->slots_used = s->nslots - s->nfree - s->ev_n;
	st->objects = s->nents;
	st->pool_dirty = 0;
	for (struct ssd_ent *e = s->pdirty; e; e = e->pnext)
		st->pool_dirty++;
	st->repair_pending = s->nrepair;
	st->slots_free = s->nfree;
	st->slots_dirty = 0;
	for (struct ssd_ent *e = s->pdirty; e; e = e->pnext)
		st->slots_dirty += e->slot != SSD_NOSLOT;
	if (s->pool_mode)
		ssdflush_wb_stats(s, st);
	pthread_mutex_unlock(&s->lock);
}
