/*
 * config.c — the pool configuration file: what each key means and every
 * check that must pass before anything starts.
 *
 *     # comments on their own line
 *     [pool]
 *     k = 16                      # data shards
 *     m = 4                       # parity shards
 *     min_shards = 17             # degraded writes down to this (default k+1)
 *     chunk_size = 1M
 *     key_file = /etc/nbdsrv/pool.key
 *     cache_path = /var/cache/nbdsrv
 *     cache_size = 10G
 *     cache_mode = writeback      # or writethrough
 *     cache_dirty_max = 256       # objects not yet in the pool before writers wait
 *     flush_parallel = 16         # objects in flight to the pool
 *     flush_idle_ms = 1000        # flush an object quiet this long (0 = at once)
 *     flush_max_age_ms = 30000    # ... or dirty this long
 *     flush_background = 192      # ... or the oldest above this many dirty
 *                                 # (default 3/4 of the cache's dirty_max)
 *     shutdown_flush_timeout_ms = 30000  # a clean stop waits for the pool
 *                                 # this long at most (0 = no drain)
 *     scrub_rate = 64M            # bytes/s a deep scrub reads (0 = unlimited;
 *                                 # `nbdsrv scrub --rate` overrides it)
 *     listen = 0.0.0.0:10809      # repeatable; unix:/path for a socket
 *     depth = 16                  # requests in flight per backend
 *     timeout_ms = 5000           # per-request deadline
 *     connect_timeout_ms = 2000
 *     hedge_ms = auto             # or a number
 *     slow_ms = 200
 *
 *     [backend b01]
 *     kind = zdb                  # zdb | redis | dir
 *     address = 10.0.0.1:9900     # host:port, [v6]:port, unix:/path; dir: a folder
 *     namespace = nbd             # zdb namespace; redis: a database number
 *     password_file = b01.pw      # or password = ...; relative to this file
 *     zone = rack1                # failure zone (default: the backend's name)
 *
 * Strictness: unknown sections or keys, a key given twice, a duplicate
 * backend name or address, a malformed number or address, k+m larger than
 * the number of backends, a missing or empty password file… each is an
 * error "FILE:LINE: reason", with the line of the offending item (or of the
 * section header for something missing).  Passwords are copied into the
 * configuration only; no message quotes a value of a password key.
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zdb_address_check(const char *addr);   /* conn.c */

enum {
	PK_K, PK_M, PK_MIN, PK_CHUNK, PK_KEYFILE, PK_CPATH, PK_CSIZE, PK_CMODE,
	PK_LISTEN, PK_DEPTH, PK_TIMEOUT, PK_CTIMEOUT, PK_HEDGE, PK_SLOW, PK_PING,
	PK_DIRTYMAX, PK_FLUSHPAR, PK_FIDLE, PK_FAGE, PK_FBG, PK_SHUTFLUSH, PK_SCRUBRATE,
	PK_COUNT
};
static const char *const pool_keys[PK_COUNT] = {
	"k", "m", "min_shards", "chunk_size", "key_file", "cache_path", "cache_size",
	"cache_mode", "listen", "depth", "timeout_ms", "connect_timeout_ms", "hedge_ms",
	"slow_ms", "ping_ms", "cache_dirty_max", "flush_parallel", "flush_idle_ms",
	"flush_max_age_ms", "flush_background", "shutdown_flush_timeout_ms",
	"scrub_rate",
};

enum { BK_KIND, BK_ADDR, BK_NS, BK_PW, BK_PWFILE, BK_ZONE, BK_COUNT };
static const char *const backend_keys[BK_COUNT] = {
	"kind", "address", "namespace", "password", "password_file", "zone",
};

struct cfg_ctx {
	struct zdb_pool_cfg *cfg;
	const char *dir;
	bool in_pool, in_backend;
	bool seen_pool;
	unsigned pool_line;
	unsigned pool_seen;             /* bitmap of PK_* given */
	unsigned pool_lines[PK_COUNT];
	unsigned bk_seen;
	unsigned bk_line;
	struct zdb_backend_cfg *bk;
};

void zdb_pool_cfg_defaults(struct zdb_pool_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->chunk_size = 1u << 20;
	cfg->depth = 16;
	cfg->shutdown_flush_timeout_ms = 30000;
	cfg->scrub_rate = 64ull << 20;
	cfg->timeout_ns = 5000ull * 1000000;
	cfg->connect_timeout_ns = 2000ull * 1000000;
	cfg->slow_ns = 200ull * 1000000;
	cfg->ping_ns = 1000ull * 1000000;
	cfg->cache_mode = ZDB_CACHE_WRITEBACK;
}

void zdb_pool_cfg_wipe(struct zdb_pool_cfg *cfg)
{
	unsigned i;

	for (i = 0; i < ZDB_MAX_BACKENDS; i++)
		explicit_bzero(cfg->backends[i].password, sizeof(cfg->backends[i].password));
}

static int cfg_num(const char *v, uint64_t lo, uint64_t hi, uint64_t *out,
		   char *err, size_t errlen, const char *key)
{
	if (parse_u64(v, out) < 0 || *out < lo || *out > hi) {
		snprintf(err, errlen, "%s must be a number from %llu to %llu, got '%.40s'",
			 key, (unsigned long long)lo, (unsigned long long)hi, v);
		return -EINVAL;
	}
	return 0;
}

static int cfg_str(char *dst, size_t cap, const char *v, char *err, size_t errlen,
		   const char *key)
{
	if (!*v) {
		snprintf(err, errlen, "%s is empty", key);
		return -EINVAL;
	}
	if (strlen(v) >= cap) {
		snprintf(err, errlen, "%s is longer than %zu bytes", key, cap - 1);
		return -EINVAL;
	}
	strcpy(dst, v);
	return 0;
}

/* v resolved against the config file's folder into out; -ENAMETOOLONG (and
 * an error naming key) when the result does not fit, never a cut path. */
static int cfg_path(const struct cfg_ctx *x, const char *key, const char *v, char *out,
		    size_t cap, char *err, size_t errlen)
{
	int n;

	if (v[0] == '/' || !x->dir || !x->dir[0] || !strncmp(v, "unix:", 5))
		n = snprintf(out, cap, "%s", v);
	else
		n = snprintf(out, cap, "%s/%s", x->dir, v);
	if (n < 0 || (size_t)n >= cap) {
		snprintf(err, errlen, "%s: the path is longer than %zu bytes", key, cap - 1);
		return -ENAMETOOLONG;
	}
	return 0;
}

static int cfg_pool_key(struct cfg_ctx *x, const struct config_item *it, char *err,
			size_t errlen)
{
	struct zdb_pool_cfg *c = x->cfg;
	uint64_t v;
	int i;

	for (i = 0; i < PK_COUNT; i++)
		if (!strcmp(it->key, pool_keys[i]))
			break;
	if (i == PK_COUNT) {
		snprintf(err, errlen, "unknown key '%.64s' in [pool]", it->key);
		return -EINVAL;
	}
	if ((x->pool_seen & (1u << i)) && i != PK_LISTEN) {
		snprintf(err, errlen, "'%s' given twice (first on line %u)", it->key,
			 x->pool_lines[i]);
		return -EINVAL;
	}
	x->pool_seen |= 1u << i;
	x->pool_lines[i] = it->line;
	switch (i) {
	case PK_K:
		if (cfg_num(it->value, 1, ZDB_MAX_SHARDS - 1, &v, err, errlen, "k") < 0)
			return -EINVAL;
		c->k = (unsigned)v;
		return 0;
	case PK_M:
		if (cfg_num(it->value, 0, ZDB_MAX_SHARDS - 1, &v, err, errlen, "m") < 0)
			return -EINVAL;
		c->m = (unsigned)v;
		return 0;
	case PK_MIN:
		if (cfg_num(it->value, 1, ZDB_MAX_SHARDS, &v, err, errlen, "min_shards") < 0)
			return -EINVAL;
		c->min_shards = (unsigned)v;
		return 0;
	case PK_CHUNK:
		if (parse_size(it->value, &v) < 0 || !IS_POW2(v) || v < (64u << 10) ||
		    v > (8u << 20)) {
			snprintf(err, errlen, "chunk_size must be a power of two from 64K to 8M, got '%.40s'",
				 it->value);
			return -EINVAL;
		}
		c->chunk_size = v;
		return 0;
	case PK_KEYFILE:
		if (!*it->value) {
			snprintf(err, errlen, "key_file is empty");
			return -EINVAL;
		}
		return cfg_path(x, "key_file", it->value, c->key_file, sizeof(c->key_file),
				err, errlen) < 0 ? -EINVAL : 0;
	case PK_CPATH:
		if (!*it->value) {
			snprintf(err, errlen, "cache_path is empty");
			return -EINVAL;
		}
		return cfg_path(x, "cache_path", it->value, c->cache_path, sizeof(c->cache_path),
				err, errlen) < 0 ? -EINVAL : 0;
	case PK_CSIZE:
		if (parse_size(it->value, &v) < 0 || v == 0) {
			snprintf(err, errlen, "cache_size must be a size such as 10G, got '%.40s'",
				 it->value);
			return -EINVAL;
		}
		c->cache_size = v;
		return 0;
	case PK_CMODE:
		if (!strcmp(it->value, "writeback"))
			c->cache_mode = ZDB_CACHE_WRITEBACK;
		else if (!strcmp(it->value, "writethrough"))
			c->cache_mode = ZDB_CACHE_WRITETHROUGH;
		else {
			snprintf(err, errlen, "cache_mode must be writeback or writethrough, got '%.40s'",
				 it->value);
			return -EINVAL;
		}
		return 0;
	case PK_LISTEN:
		if (c->nlisten == ARRAY_SIZE(c->listen)) {
			snprintf(err, errlen, "more than %zu listen addresses", ARRAY_SIZE(c->listen));
			return -EINVAL;
		}
		if (zdb_address_check(it->value) < 0) {
			snprintf(err, errlen, "bad listen address '%.100s' (want host:port or unix:/path)",
				 it->value);
			return -EINVAL;
		}
		return cfg_str(c->listen[c->nlisten++], sizeof(c->listen[0]), it->value, err,
			       errlen, "listen");
	case PK_DEPTH:
		if (cfg_num(it->value, 1, 1024, &v, err, errlen, "depth") < 0)
			return -EINVAL;
		c->depth = (unsigned)v;
		return 0;
	case PK_DIRTYMAX:
		if (cfg_num(it->value, 1, 1u << 30, &v, err, errlen, "cache_dirty_max") < 0)
			return -EINVAL;
		c->cache_dirty_max = v;
		return 0;
	case PK_FLUSHPAR:
		if (cfg_num(it->value, 1, 256, &v, err, errlen, "flush_parallel") < 0)
			return -EINVAL;
		c->flush_parallel = (unsigned)v;
		return 0;
	case PK_FIDLE:
		if (cfg_num(it->value, 0, 3600000, &v, err, errlen, it->key) < 0)
			return -EINVAL;
		c->flush_idle_ms = v;
		c->flush_idle_set = true;
		return 0;
	case PK_FAGE:
		if (cfg_num(it->value, 0, 86400000, &v, err, errlen, it->key) < 0)
			return -EINVAL;
		c->flush_max_age_ms = v;
		c->flush_max_age_set = true;
		return 0;
	case PK_SCRUBRATE:
		/* at most INT64_MAX, as `scrub --rate`: it is shown as a JSON
		 * integer (signed) in status */
		if (parse_size(it->value, &v) < 0 || v > (uint64_t)INT64_MAX) {
			snprintf(err, errlen, "scrub_rate must be a rate in bytes per second "
				 "such as 64M (0 = unlimited, below 8E), got '%.40s'",
				 it->value);
			return -EINVAL;
		}
		c->scrub_rate = v;
		return 0;
	case PK_SHUTFLUSH:
		if (cfg_num(it->value, 0, 3600000, &v, err, errlen, it->key) < 0)
			return -EINVAL;
		c->shutdown_flush_timeout_ms = v;
		return 0;
	case PK_FBG:
		if (cfg_num(it->value, 0, 1u << 30, &v, err, errlen, it->key) < 0)
			return -EINVAL;
		c->flush_background = v;
		c->flush_background_set = true;
		return 0;
	case PK_TIMEOUT:
	case PK_CTIMEOUT:
	case PK_SLOW:
	case PK_PING:
		if (cfg_num(it->value, 1, 3600000, &v, err, errlen, it->key) < 0)
			return -EINVAL;
		v *= 1000000ull;
		if (i == PK_TIMEOUT)
			c->timeout_ns = v;
		else if (i == PK_CTIMEOUT)
			c->connect_timeout_ns = v;
		else if (i == PK_SLOW)
			c->slow_ns = v;
		else
			c->ping_ns = v;
		return 0;
	case PK_HEDGE:
		if (!strcmp(it->value, "auto")) {
			c->hedge_ns = 0;
			return 0;
		}
		if (cfg_num(it->value, 1, 60000, &v, err, errlen, "hedge_ms (or auto)") < 0)
			return -EINVAL;
		c->hedge_ns = v * 1000000ull;
		return 0;
	}
	return -EINVAL;
}

static int cfg_password_file(struct cfg_ctx *x, const char *v, char *err, size_t errlen)
{
	char path[1024];
	char *text = NULL;
	size_t len;
	int r;

	if (!*v) {
		snprintf(err, errlen, "password_file is empty");
		return -EINVAL;
	}
	if (cfg_path(x, "password_file", v, path, sizeof(path), err, errlen) < 0)
		return -EINVAL;
	r = config_read_file(path, 4096, &text, &len);
	if (r < 0) {
		snprintf(err, errlen, "cannot read password_file '%.200s': %s", path,
			 r == -EFBIG ? "larger than 4 KiB" : strerror(-r));
		return -EINVAL;
	}
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = 0;
	if (len == 0 || len >= sizeof(x->bk->password) || strlen(text) != len ||
	    memchr(text, '\n', len)) {
		snprintf(err, errlen, "password_file '%.200s' must hold one line of 1 to %zu bytes",
			 path, sizeof(x->bk->password) - 1);
		explicit_bzero(text, len);
		free(text);
		return -EINVAL;
	}
	memcpy(x->bk->password, text, len + 1);
	x->bk->has_password = true;
	explicit_bzero(text, len);
	free(text);
	return 0;
}

static int cfg_backend_key(struct cfg_ctx *x, const struct config_item *it, char *err,
			   size_t errlen)
{
	struct zdb_backend_cfg *b = x->bk;
	int i;

	for (i = 0; i < BK_COUNT; i++)
		if (!strcmp(it->key, backend_keys[i]))
			break;
	if (i == BK_COUNT) {
		snprintf(err, errlen, "unknown key '%.64s' in [backend %s]", it->key, b->name);
		return -EINVAL;
	}
	if (x->bk_seen & (1u << i)) {
		snprintf(err, errlen, "'%s' given twice in [backend %s]", it->key, b->name);
		return -EINVAL;
	}
	x->bk_seen |= 1u << i;
	switch (i) {
	case BK_KIND:
		if (!strcmp(it->value, "zdb"))
			b->kind = ZDB_KIND_ZDB;
		else if (!strcmp(it->value, "redis"))
			b->kind = ZDB_KIND_REDIS;
		else if (!strcmp(it->value, "dir"))
			b->kind = ZDB_KIND_DIR;
		else {
			snprintf(err, errlen, "kind must be zdb, redis or dir, got '%.40s'", it->value);
			return -EINVAL;
		}
		return 0;
	case BK_ADDR:
		if (!*it->value) {
			snprintf(err, errlen, "address is empty");
			return -EINVAL;
		}
		return cfg_str(b->address, sizeof(b->address), it->value, err, errlen, "address");
	case BK_NS:
		if (cfg_str(b->ns, sizeof(b->ns), it->value, err, errlen, "namespace") < 0)
			return -EINVAL;
		for (const char *p = b->ns; *p; p++)
			if ((unsigned char)*p <= 32 || *p == '/' || (unsigned char)*p >= 127) {
				snprintf(err, errlen, "namespace may not contain blanks, '/' or control characters");
				return -EINVAL;
			}
		return 0;
	case BK_PW:
		if (x->bk_seen & (1u << BK_PWFILE)) {
			snprintf(err, errlen, "give password or password_file, not both");
			return -EINVAL;
		}
		if (!*it->value || strlen(it->value) >= sizeof(b->password)) {
			snprintf(err, errlen, "password must be 1 to %zu bytes", sizeof(b->password) - 1);
			return -EINVAL;
		}
		strcpy(b->password, it->value);
		b->has_password = true;
		return 0;
	case BK_PWFILE:
		if (x->bk_seen & (1u << BK_PW)) {
			snprintf(err, errlen, "give password or password_file, not both");
			return -EINVAL;
		}
		return cfg_password_file(x, it->value, err, errlen);
	case BK_ZONE:
		return cfg_str(b->zone, sizeof(b->zone), it->value, err, errlen, "zone");
	}
	return -EINVAL;
}

#define CFG_ZDB_NS_PASSWORD_MAX 63

/* Checks on the backend section just closed. */
static int cfg_backend_end(struct cfg_ctx *x, char *err, size_t errlen, unsigned *line)
{
	struct zdb_backend_cfg *b = x->bk;
	unsigned i;

	if (!b)
		return 0;
	*line = b->line;
	if (!(x->bk_seen & (1u << BK_KIND))) {
		snprintf(err, errlen, "[backend %s] has no kind (zdb, redis or dir)", b->name);
		return -EINVAL;
	}
	if (!(x->bk_seen & (1u << BK_ADDR))) {
		snprintf(err, errlen, "[backend %s] has no address", b->name);
		return -EINVAL;
	}
	if (b->kind != ZDB_KIND_DIR && zdb_address_check(b->address) < 0) {
		snprintf(err, errlen, "[backend %s]: bad address '%.100s' (want host:port, [v6]:port or unix:/path)",
			 b->name, b->address);
		return -EINVAL;
	}
	if (b->kind == ZDB_KIND_DIR && b->address[0] != '/') {
		char tmp[sizeof(b->address)], what[96];

		snprintf(what, sizeof(what), "[backend %.64s] address", b->name);
		if (cfg_path(x, what, b->address, tmp, sizeof(tmp), err, errlen) < 0)
			return -EINVAL;
		memcpy(b->address, tmp, sizeof(tmp));
	}
	if (b->kind == ZDB_KIND_DIR && (b->has_password || b->ns[0])) {
		snprintf(err, errlen, "[backend %s]: a dir backend takes no namespace or password",
			 b->name);
		return -EINVAL;
	}
	/* 0-db stores at most 63 bytes of a namespace password (NSSET answers
	 * "-Invalid value" beyond, so no SELECT could ever match) and
	 * `NSSET ns password *` CLEARS the password: pool init would leave
	 * the namespace open to anyone. */
	if (b->kind == ZDB_KIND_ZDB && b->has_password &&
	    (strlen(b->password) > CFG_ZDB_NS_PASSWORD_MAX || !strcmp(b->password, "*"))) {
		snprintf(err, errlen, "[backend %s]: a 0-db namespace password must be 1 to %d bytes "
			 "and not \"*\" (0-db's NSSET limit; \"*\" clears the password)", b->name,
			 CFG_ZDB_NS_PASSWORD_MAX);
		return -EINVAL;
	}
	if (!b->zone[0])
		snprintf(b->zone, sizeof(b->zone), "%s", b->name);
	for (i = 0; i + 1 < x->cfg->nbackends; i++) {
		const struct zdb_backend_cfg *o = &x->cfg->backends[i];

		if (!strcmp(o->address, b->address) && !strcmp(o->ns, b->ns) && o->kind == b->kind) {
			snprintf(err, errlen, "[backend %s] has the same address and namespace as [backend %s] (line %u)",
				 b->name, o->name, o->line);
			return -EINVAL;
		}
	}
	x->bk = NULL;
	return 0;
}

static int cfg_item(void *ctx, struct config_item *it, char *err, size_t errlen)
{
	struct cfg_ctx *x = ctx;
	struct zdb_pool_cfg *c = x->cfg;
	unsigned line, i;

	if (it->key) {
		if (x->in_pool)
			return cfg_pool_key(x, it, err, errlen);
		if (x->in_backend)
			return cfg_backend_key(x, it, err, errlen);
		snprintf(err, errlen, "'%.64s' outside of a section ([pool] or [backend NAME])",
			 it->key);
		return -EINVAL;
	}
	if (cfg_backend_end(x, err, errlen, &line) < 0) {
		it->err_line = line;
		return -EINVAL;
	}
	x->in_pool = x->in_backend = false;
	if (!strcmp(it->section, "pool")) {
		if (it->arg[0]) {
			snprintf(err, errlen, "[pool] takes no argument");
			return -EINVAL;
		}
		if (x->seen_pool) {
			snprintf(err, errlen, "second [pool] section (first on line %u)", x->pool_line);
			return -EINVAL;
		}
		x->seen_pool = true;
		x->pool_line = it->line;
		x->in_pool = true;
		return 0;
	}
	if (!strcmp(it->section, "backend")) {
		const char *p;

		if (!it->arg[0]) {
			snprintf(err, errlen, "[backend] needs a name: [backend NAME]");
			return -EINVAL;
		}
		for (p = it->arg; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.')) {
				snprintf(err, errlen, "backend name may hold letters, digits, '_', '-', '.'");
				return -EINVAL;
			}
		if (strlen(it->arg) >= sizeof(c->backends[0].name)) {
			snprintf(err, errlen, "backend name longer than %zu bytes",
				 sizeof(c->backends[0].name) - 1);
			return -EINVAL;
		}
		for (i = 0; i < c->nbackends; i++)
			if (!strcmp(c->backends[i].name, it->arg)) {
				snprintf(err, errlen, "duplicate backend '%s' (first on line %u)",
					 it->arg, c->backends[i].line);
				return -EINVAL;
			}
		if (c->nbackends == ZDB_MAX_BACKENDS) {
			snprintf(err, errlen, "more than %u backends", ZDB_MAX_BACKENDS);
			return -EINVAL;
		}
		x->bk = &c->backends[c->nbackends++];
		memset(x->bk, 0, sizeof(*x->bk));
		strcpy(x->bk->name, it->arg);
		x->bk->line = it->line;
		x->bk_seen = 0;
		x->in_backend = true;
		return 0;
	}
	snprintf(err, errlen, "unknown section [%.64s] (want [pool] or [backend NAME])",
		 it->section);
	return -EINVAL;
}

int zdb_pool_cfg_parse(const char *label, const char *dir, const char *text, size_t len,
		       struct zdb_pool_cfg *cfg, char *err, size_t errlen)
{
	struct cfg_ctx x;
	char why[256];
	unsigned line = 0;
	int r;

	zdb_pool_cfg_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s", label);
	memset(&x, 0, sizeof(x));
	x.cfg = cfg;
	x.dir = dir;
	r = config_parse(label, text, len, cfg_item, &x, err, errlen);
	if (r < 0)
		goto fail;
	why[0] = 0;
	if (cfg_backend_end(&x, why, sizeof(why), &line) < 0)
		goto semantic;
	if (!x.seen_pool) {
		line = 1;
		snprintf(why, sizeof(why), "no [pool] section");
		goto semantic;
	}
	line = x.pool_line;
	if (!(x.pool_seen & (1u << PK_K)) || !(x.pool_seen & (1u << PK_M))) {
		snprintf(why, sizeof(why), "[pool] needs k and m");
		goto semantic;
	}
	line = x.pool_lines[PK_M] > x.pool_lines[PK_K] ? x.pool_lines[PK_M] : x.pool_lines[PK_K];
	if (cfg->k + cfg->m > ZDB_MAX_SHARDS) {
		snprintf(why, sizeof(why), "k+m = %u is more than %u", cfg->k + cfg->m, ZDB_MAX_SHARDS);
		goto semantic;
	}
	if (cfg->k + cfg->m > cfg->nbackends) {
		snprintf(why, sizeof(why), "k+m = %u needs at least that many backends, %u configured",
			 cfg->k + cfg->m, cfg->nbackends);
		goto semantic;
	}
	if (cfg->chunk_size / cfg->k > ZDB_VALUE_MAX) {
		snprintf(why, sizeof(why), "chunk_size / k exceeds the 8 MiB value limit");
		goto semantic;
	}
	if (x.pool_seen & (1u << PK_MIN)) {
		line = x.pool_lines[PK_MIN];
		if (cfg->min_shards < cfg->k || cfg->min_shards > cfg->k + cfg->m) {
			snprintf(why, sizeof(why), "min_shards must be from k (%u) to k+m (%u)",
				 cfg->k, cfg->k + cfg->m);
			goto semantic;
		}
	} else {
		cfg->min_shards = MIN(cfg->k + 1, cfg->k + cfg->m);
	}
	return 0;
semantic:
	snprintf(err, errlen, "%s:%u: %s", label, line, why);
	r = -EINVAL;
fail:
	zdb_pool_cfg_wipe(cfg);
	return r;
}

int zdb_pool_cfg_load(const char *path, struct zdb_pool_cfg *cfg, char *err, size_t errlen)
{
	char dir[512];
	const char *slash = strrchr(path, '/');
	char *text;
	size_t len;
	int r;

	if (slash)
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	else
		snprintf(dir, sizeof(dir), ".");
	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	r = config_read_file(path, 1u << 20, &text, &len);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, r == -EFBIG ? "file larger than 1 MiB"
			 : strerror(-r));
		return r;
	}
	r = zdb_pool_cfg_parse(path, dir, text, len, cfg, err, errlen);
	explicit_bzero(text, len);
	free(text);
	return r;
}
