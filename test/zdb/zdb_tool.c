/*
 * zdb_tool.c — drives a pool from shell tests (the zdb shell tests).
 *
 *   zdb_tool put  --config F --state S [--chunks N] [--size BYTES] [--seed N]
 *   zdb_tool get  --config F --state S [--all] [--stop-pid P --stop-after N]
 *
 * put writes N chunks of k+m shards with deterministic contents (a header
 * naming chunk and shard, then a xorshift stream) and records where each
 * shard went in S ("chunk shard backend" lines, "-" for a dropped shard).
 * get reads every chunk back through zdb_pool_get_chunk() with a verify
 * callback that checks the contents, and prints one summary line:
 *   ok=N failed=N degraded=N max_ms=X hedge_ms=X hedged=N
 * plus, with --all (fetch every shard, k = n), one "missing BACKEND N" line
 * per backend that lost shards.  --stop-pid sends SIGSTOP to a backend's
 * server after N chunks, so that it hangs while connected and busy (the
 * case hedging exists for) ("unreadable BACKEND N" for other errors).
 * Exit 0 only when every chunk was read (--all: always, it is a scan) or,
 * for put, written (degraded counts as written).
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tool {
	struct loop loop;
	struct zdb_pool *pool;
	struct zdb_pool_cfg cfg;
	uint64_t seed;
	size_t size;
	unsigned chunks;
	bool all;
	const char *state;
	int stop_pid;                   /* SIGSTOP it after stop_after chunks */
	unsigned stop_after;
};

static uint64_t xs(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(uint64_t seed, unsigned c, unsigned i, unsigned char *b, size_t n)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + c * 1000003ull + i + 1;
	size_t j;

	for (j = 0; j < n; j++) {
		if (j % 8 == 0)
			xs(&s);
		b[j] = (unsigned char)(s >> (8 * (j % 8)));
	}
	if (n >= 8) {
		memcpy(b, &c, 4);
		memcpy(b + 4, &i, 4);
	}
}

struct chunk_ctx {
	struct tool *t;
	unsigned c;
	bool ready, done;
	uint64_t start, ready_ns;
	unsigned char *want;
};

static bool verify(struct zdb_chunk_get *op, unsigned i)
{
	struct chunk_ctx *x = op->priv;
	struct zdb_shard *s = &op->shards[i];

	if (s->got != x->t->size)
		return false;
	fill(x->t->seed, x->c, i, x->want, x->t->size);
	return memcmp(s->data, x->want, x->t->size) == 0;
}

static void get_ready(struct zdb_chunk_get *op)
{
	struct chunk_ctx *x = op->priv;

	x->ready = true;
	x->ready_ns = now_ns();
}

static void get_done(struct zdb_chunk_get *op)
{
	((struct chunk_ctx *)op->priv)->done = true;
}

static void put_done(struct zdb_chunk_put *op)
{
	((struct chunk_ctx *)op->priv)->done = true;
}

static int tool_put(struct tool *t)
{
	unsigned n = t->cfg.k + t->cfg.m, c, i, degraded = 0, failed = 0;
	struct zdb_shard sh[ZDB_MAX_SHARDS];
	char keys[ZDB_MAX_SHARDS][64];
	unsigned char *data = malloc((size_t)n * t->size);
	struct zdb_chunk_put *op = calloc(1, sizeof(*op));
	FILE *f = fopen(t->state, "w");
	int rc = 1;

	if (!data || !op || !f) {
		fprintf(stderr, "zdb_tool: cannot set up (%s)\n", strerror(errno));
		goto exit;
	}
	fprintf(f, "seed %llu size %zu chunks %u n %u\n", (unsigned long long)t->seed, t->size,
		t->chunks, n);
	for (c = 0; c < t->chunks; c++) {
		struct chunk_ctx x = { .t = t, .c = c };
		char id[32];

		memset(op, 0, sizeof(*op));
		for (i = 0; i < n; i++) {
			snprintf(keys[i], sizeof(keys[i]), "t%llu.c%u.s%u",
				 (unsigned long long)t->seed, c, i);
			fill(t->seed, c, i, data + (size_t)i * t->size, t->size);
			memset(&sh[i], 0, sizeof(sh[i]));
			sh[i].key = keys[i];
			sh[i].key_len = strlen(keys[i]);
			sh[i].data = data + (size_t)i * t->size;
			sh[i].len = t->size;
		}
		snprintf(id, sizeof(id), "chunk%u", c);
		op->id = id;
		op->id_len = strlen(id);
		op->n = n;
		op->shards = sh;
		op->done = put_done;
		op->priv = &x;
		if (zdb_pool_put_chunk(t->pool, op) < 0 ||
		    zdb_pool_run_until(t->pool, &x.done, 120ull * 1000000000) < 0) {
			fprintf(stderr, "zdb_tool: put of chunk %u did not complete\n", c);
			goto exit;
		}
		if (op->result < 0)
			failed++;
		else if (op->result == 1)
			degraded++;
		for (i = 0; i < n; i++)
			fprintf(f, "%u %u %s\n", c, i, sh[i].backend >= 0 && op->result >= 0
				? zdb_pool_backend(t->pool, (unsigned)sh[i].backend)->cfg.name : "-");
	}
	printf("put chunks=%u failed=%u degraded=%u\n", t->chunks, failed, degraded);
	rc = failed ? 1 : 0;
exit:
	if (f)
		fclose(f);
	free(data);
	free(op);
	return rc;
}

static int tool_get(struct tool *t)
{
	unsigned n = 0, chunks = 0, c, i, ok = 0, failed = 0, degraded = 0, hedged = 0;
	unsigned missing[ZDB_MAX_BACKENDS] = { 0 }, unreach[ZDB_MAX_BACKENDS] = { 0 };
	struct zdb_shard sh[ZDB_MAX_SHARDS];
	char keys[ZDB_MAX_SHARDS][64];
	int *where = NULL;
	unsigned char *data = NULL, *want = NULL;
	struct zdb_chunk_get *op = calloc(1, sizeof(*op));
	unsigned long long seed;
	double max_ms = 0;
	FILE *f = fopen(t->state, "r");
	char name[128];
	int rc = 1;

	if (!f || !op || fscanf(f, "seed %llu size %zu chunks %u n %u\n", &seed, &t->size,
				&chunks, &n) != 4 || n > ZDB_MAX_SHARDS || n == 0) {
		fprintf(stderr, "zdb_tool: bad state file %s\n", t->state);
		goto exit;
	}
	t->seed = seed;
	where = calloc((size_t)chunks * n, sizeof(*where));
	data = malloc((size_t)n * t->size);
	want = malloc(t->size);
	if (!where || !data || !want)
		goto exit;
	for (c = 0; c < chunks; c++)
		for (i = 0; i < n; i++) {
			unsigned cc, ii;

			if (fscanf(f, "%u %u %127s\n", &cc, &ii, name) != 3 || cc != c || ii != i) {
				fprintf(stderr, "zdb_tool: bad state line\n");
				goto exit;
			}
			where[c * n + i] = strcmp(name, "-") ? zdb_pool_find(t->pool, name) : -1;
		}
	for (c = 0; c < chunks; c++) {
		struct chunk_ctx x = { .t = t, .c = c, .want = want };
		unsigned have = 0;
		double ms;

		if (t->stop_pid > 0 && c == t->stop_after) {
			kill(t->stop_pid, SIGSTOP);
			printf("# stopped pid %d before chunk %u\n", t->stop_pid, c);
		}
		memset(op, 0, sizeof(*op));
		memset(data, 0, (size_t)n * t->size);
		for (i = 0; i < n; i++) {
			snprintf(keys[i], sizeof(keys[i]), "t%llu.c%u.s%u", seed, c, i);
			memset(&sh[i], 0, sizeof(sh[i]));
			sh[i].key = keys[i];
			sh[i].key_len = strlen(keys[i]);
			sh[i].data = data + (size_t)i * t->size;
			sh[i].len = t->size;
			sh[i].backend = where[c * n + i];
			have += sh[i].backend >= 0;
		}
		if (have < n)
			degraded++;
		op->n = n;
		op->k = t->all ? have : t->cfg.k;
		op->shards = sh;
		op->verify = verify;
		op->ready = get_ready;
		op->done = get_done;
		op->priv = &x;
		x.start = now_ns();
		if (op->k == 0 || zdb_pool_get_chunk(t->pool, op) < 0 ||
		    zdb_pool_run_until(t->pool, &x.ready, 120ull * 1000000000) < 0) {
			fprintf(stderr, "zdb_tool: get of chunk %u did not complete\n", c);
			goto exit;
		}
		ms = (double)(x.ready_ns - x.start) / 1e6;
		if (ms > max_ms)
			max_ms = ms;
		hedged += op->hedged;
		if (op->result == 0)
			ok++;
		else
			failed++;
		/* the op's memory (and data) is reused: wait until released */
		if (zdb_pool_run_until(t->pool, &x.done, 120ull * 1000000000) < 0) {
			fprintf(stderr, "zdb_tool: chunk %u requests never finished\n", c);
			goto exit;
		}
		for (i = 0; t->all && i < n; i++) {
			if (sh[i].status == -ENOENT && sh[i].backend >= 0)
				missing[sh[i].backend]++;
			else if (sh[i].status < 0 && sh[i].backend >= 0)
				unreach[sh[i].backend]++;
		}
	}
	printf("get ok=%u failed=%u degraded=%u max_ms=%.1f hedge_ms=%.1f hedged=%u\n", ok,
	       failed, degraded, max_ms, (double)zdb_pool_hedge_ns(t->pool) / 1e6, hedged);
	for (i = 0; i < zdb_pool_size(t->pool); i++)
		if (missing[i])
			printf("missing %s %u\n", zdb_pool_backend(t->pool, i)->cfg.name, missing[i]);
	for (i = 0; i < zdb_pool_size(t->pool); i++)
		if (unreach[i])
			printf("unreadable %s %u\n", zdb_pool_backend(t->pool, i)->cfg.name, unreach[i]);
	rc = failed && !t->all ? 1 : 0;
exit:
	if (f)
		fclose(f);
	free(where);
	free(data);
	free(want);
	free(op);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "state", required_argument, NULL, 's' },
		{ "chunks", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 'z' },
		{ "seed", required_argument, NULL, 'S' },
		{ "all", no_argument, NULL, 'a' },
		{ "stop-pid", required_argument, NULL, 'P' },
		{ "stop-after", required_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 },
	};
	struct tool t = { .chunks = 20, .size = 4096 };
	const char *config = NULL, *cmd;
	char err[512];
	uint64_t v;
	int o, rc;
	bool closed = false;

	if (argc < 2) {
		fprintf(stderr, "usage: zdb_tool put|get --config F --state S …\n");
		return 2;
	}
	cmd = argv[1];
	t.seed = (uint64_t)now_ns();
	while ((o = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
		switch (o) {
		case 'c': config = optarg; break;
		case 's': t.state = optarg; break;
		case 'n': if (parse_u64(optarg, &v) < 0) return 2; t.chunks = (unsigned)v; break;
		case 'z': if (parse_size(optarg, &v) < 0 || v < 8) return 2; t.size = v; break;
		case 'S': if (parse_u64(optarg, &t.seed) < 0) return 2; break;
		case 'a': t.all = true; break;
		case 'P': if (parse_u64(optarg, &v) < 0) return 2; t.stop_pid = (int)v; break;
		case 'A': if (parse_u64(optarg, &v) < 0) return 2; t.stop_after = (unsigned)v; break;
		default: return 2;
		}
	}
	if (!config || !t.state)
		return 2;
	if (zdb_pool_cfg_load(config, &t.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (loop_init(&t.loop, 1024) < 0 || zdb_pool_open(&t.loop, &t.cfg, NULL, &t.pool) < 0) {
		fprintf(stderr, "zdb_tool: cannot open the pool\n");
		return 1;
	}
	zdb_pool_wait_connected(t.pool, 10ull * 1000000000);
	if (!strcmp(cmd, "put")) {
		printf("# seed %llu\n", (unsigned long long)t.seed);
		rc = tool_put(&t);
	} else if (!strcmp(cmd, "get")) {
		rc = tool_get(&t);
	} else {
		fprintf(stderr, "zdb_tool: unknown command %s\n", cmd);
		rc = 2;
	}
	zdb_pool_close(t.pool);
	(void)closed;
	while (!zdb_pool_closed(t.pool))
		loop_run_once(&t.loop, 50ull * 1000000);
	zdb_pool_free(t.pool);
	loop_fini(&t.loop);
	zdb_pool_cfg_wipe(&t.cfg);
	return rc;
}
