/*
 * vmodel.h — the model-based randomized test of vol/, shared by check_vol
 * (over memstore) and check_vol_store (over the SSD cache, local only and in
 * front of a pool): the random number generator and seeds, a synchronous
 * shim for vol's async I/O, the byte-array model and the random op loop.
 * The store under the pool is the caller's: it hands in hooks for the steps
 * that depend on it (reopen, crash).
 */
#ifndef NBDSRV_TEST_VMODEL_H
#define NBDSRV_TEST_VMODEL_H

#include "vol/vol.h"

#include <stdbool.h>
#include <stdint.h>

#define CS (64u << 10)          /* the model's chunk size */
#define MAXV 6                  /* volumes at once */
#define MAXS 5                  /* snapshots per volume */

/* xorshift64; tests may set rng_state directly (a forked child). */
extern uint64_t rng_state;
uint64_t rnd(void);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t rndn(uint64_t n);
/* Seed from NBDSRV_SEED or the clock, print it with the test's name. */
uint64_t seed_init(const char *test);

/* The loop run_io completes on (the caller initialises it). */
extern struct loop test_loop;

typedef void vol_op_fn(struct vol_view *v, struct vol_io *io);
/* Submit fn on test_loop and run the loop until it completes; asserts it
 * did not complete inside the submit call.  Returns the I/O's result. */
int run_io(vol_op_fn *fn, struct vol_view *v, uint64_t off, uint64_t len,
	   void *buf, uint32_t flags);

struct msnap {
	bool live;
	char name[16];
	uint64_t size;
	uint8_t *data, *alloc;
};

struct mvol {
	bool live;
	char name[16];
	uint64_t size;
	uint8_t *data, *alloc;          /* alloc: per chunk, 1 = data */
	int pv, ps;                     /* clone origin (model indices) or -1 */
	struct msnap s[MAXS];
};

struct model {
	struct mvol v[MAXV];
	unsigned names;
};

/* Where the random ops run.  p is the open pool; the hooks replace it. */
struct vm_env {
	struct vol_pool *p;
	/* Required: close the pool (and whatever the store needs closed)
	 * cleanly and open it again into p. */
	void (*reopen)(struct vm_env *e, uint64_t op);
	/* Optional: a crash step (e.g. a child killed mid-work); afterwards
	 * p is open and every view must read as m says. */
	void (*crash)(struct vm_env *e, const struct model *m, uint64_t op);
	void *priv;                     /* the caller's */
};

/* Read a random range of view (vi, si) (si -1 = the head) and its block
 * status, asserting both match m. */
void vmodel_check_view(struct vol_pool *p, const struct model *m, int vi,
		       int si, uint64_t op);
/* Every live head and snapshot, read whole, must match m. */
void vmodel_check_all(struct vol_pool *p, const struct model *m, uint64_t op);

/* Run nops random writes, zeroes, trims, reads, snapshots, clones,
 * flattens, rollbacks, resizes, deletes, flushes, GC, reopens (and crashes
 * when e->crash is set) on e->p and on a model, checking every read and
 * block status; then check every view, delete everything (flatten clones,
 * delete snapshots, GC, delete volumes) and commit twice (the drops and the
 * marks).  The maps, objects, volumes, snapshots and names tables must be
 * empty at the end.  e->p stays open. */
void vmodel_run(struct vm_env *e, uint64_t nops);

#endif /* NBDSRV_TEST_VMODEL_H */
