/*
 * ssdfix.h — the fixture the ssdcache Check suites share (check_ssd,
 * check_ssdpool, check_ssdscrub): a synchronous objstore request, the
 * codec with a fixed key, a pool of `dir` backends under a test directory,
 * the metadata store in <dir>/meta, and the removal of that directory.
 * Every helper asserts (Check) instead of returning an error.
 */
#ifndef NBDSRV_TEST_CACHE_SSDFIX_H
#define NBDSRV_TEST_CACHE_SSDFIX_H

#include "cache/cache.h"
#include "codec/codec.h"
#include "zdb/zdb.h"

#include <stdbool.h>
#include <stdint.h>

/* An objstore request a test waits for: done is set by sync_cb. */
struct sync_io {
	struct objstore_io io;
	bool done;
};

/* The completion of a struct sync_io: records res and sets done. */
void sync_cb(struct objstore_io *io, int res);

/* Run lp until s is done (each turn bounded to 1 s); asserts the loop runs. */
void ssdfix_wait(struct loop *lp, struct sync_io *s);

/* A new codec for k+m with max_chunk slot and a key of bytes key_byte. */
void ssdfix_codec(unsigned k, unsigned m, uint32_t slot, uint8_t key_byte,
		  struct codec **out);

/* Fill pcfg (defaults) with nbe `dir` backends d00.. in zones z0.. at
 * <dir>/be00.. (created), k+m with min_shards = k+m. */
void ssdfix_dir_pool(struct zdb_pool_cfg *pcfg, const char *dir, unsigned nbe,
		     unsigned k, unsigned m);

/* meta_open of <dir>/meta for pool_id (created, with the folder, when
 * create); commits only when asked.  Returns meta_open's result. */
int ssdfix_meta_open(const char *dir, const uint8_t pool_id[16], bool create,
		     struct meta **m);

/* Remove dir and all below it; says so on stderr if it cannot. */
void ssdfix_rmtree(const char *dir);

#endif
