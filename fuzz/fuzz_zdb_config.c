/*
 * fuzz_zdb_config.c — the pool configuration parser on arbitrary text.
 * Every input either parses into a configuration that satisfies the
 * parser's promises (k+m ≤ backends, min_shards in [k, k+m], names
 * unique) or fails with a "FILE:LINE: reason" message.
 */
#include "zdb/zdb.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct zdb_pool_cfg cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	unsigned i, j;
	int r;

	err[0] = 0;
	r = zdb_pool_cfg_parse("f.conf", "/nonexistent", (const char *)data, size, &cfg, err,
			       sizeof(err));
	if (r < 0) {
		if (strncmp(err, "f.conf:", 7) != 0)
			abort();
		return 0;
	}
	if (cfg.k == 0 || cfg.k + cfg.m > cfg.nbackends || cfg.min_shards < cfg.k ||
	    cfg.min_shards > cfg.k + cfg.m)
		abort();
	for (i = 0; i < cfg.nbackends; i++)
		for (j = i + 1; j < cfg.nbackends; j++)
			if (!strcmp(cfg.backends[i].name, cfg.backends[j].name))
				abort();
	zdb_pool_cfg_wipe(&cfg);
	return 0;
}
