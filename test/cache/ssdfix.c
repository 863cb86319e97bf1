/*
 * ssdfix.c — the shared fixture of the ssdcache Check suites (ssdfix.h).
 */
#include "test/cache/ssdfix.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void sync_cb(struct objstore_io *io, int res)
{
	struct sync_io *s = container_of(io, struct sync_io, io);

	s->done = true;
	io->res = res;
}

void ssdfix_wait(struct loop *lp, struct sync_io *s)
{
	while (!s->done)
		ck_assert_int_ge(loop_run_once(lp, 1000000000ull), 0);
}

void ssdfix_codec(unsigned k, unsigned m, uint32_t slot, uint8_t key_byte,
		  struct codec **out)
{
	struct codec_params cp = { .k = k, .m = m, .max_chunk = slot };
	uint8_t raw[CODEC_KEY_SIZE];
	struct codec_key *key;
	char err[160];

	memset(raw, key_byte, sizeof(raw));
	ck_assert_int_eq(codec_key_from_bytes(raw, &key), 0);
	ck_assert_int_eq(codec_new(&cp, key, out, err, sizeof(err)), 0);
	codec_key_free(key);
}

void ssdfix_dir_pool(struct zdb_pool_cfg *pcfg, const char *dir, unsigned nbe,
		     unsigned k, unsigned m)
{
	zdb_pool_cfg_defaults(pcfg);
	pcfg->k = k;
	pcfg->m = m;
	pcfg->min_shards = k + m;
	pcfg->nbackends = nbe;
	for (unsigned i = 0; i < nbe; i++) {
		struct zdb_backend_cfg *b = &pcfg->backends[i];

		snprintf(b->name, sizeof(b->name), "d%02u", i);
		snprintf(b->zone, sizeof(b->zone), "z%u", i);
		snprintf(b->address, sizeof(b->address), "%s/be%02u", dir, i);
		b->kind = ZDB_KIND_DIR;
		mkdir(b->address, 0700);
	}
}

int ssdfix_meta_open(const char *dir, const uint8_t pool_id[16], bool create,
		     struct meta **m)
{
	struct meta_opts o = { .create = create, .commit_delay_ns = UINT64_MAX };
	char mdir[128];

	snprintf(mdir, sizeof(mdir), "%s/meta", dir);
	if (create)
		mkdir(mdir, 0700);
	memcpy(o.pool_id, pool_id, 16);
	return meta_open(mdir, &o, m);
}

void ssdfix_rmtree(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}
