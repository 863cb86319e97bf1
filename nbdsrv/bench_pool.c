/*
 * bench_pool.c — `nbdsrv bench pool`: pipelined PUT then GET throughput of
 * the zdb client over a pool of backends, for each value size.
 *
 *   nbdsrv bench pool [--json] (--config FILE | --redis-ports P1,P2,…)
 *                     [--sizes 64K,1M] [--seconds S] [--depth D]
 *
 * Each backend gets D requests in flight on its one connection (the pool's
 * pipelining); every completion immediately issues the next request to the
 * same backend until S seconds have passed, then the phase drains.  PUT
 * writes keys bench.<size>.<n % 64> (one shared source buffer: values are
 * never copied; 64 keys per backend keep the servers' memory flat), GET reads back the keys PUT wrote, each backend's replies
 * received straight into one buffer per backend (a connection receives one
 * reply at a time).  Reported: operations/s and MiB/s of payload.
 * bench/pool-bench runs this next to redis-benchmark on the same servers.
 */
#include "nbdsrv/cmd.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_KEYS 64

struct bench_slot {
	struct zdb_req r;
	struct bench *b;
	unsigned backend;
	char key[48];
};

struct bench {
	struct zdb_pool *pool;
	unsigned n, depth;
	size_t size;
	bool put;
	bool stopping;
	uint64_t end_ns;
	unsigned inflight;
	uint64_t ops, errors;
	uint64_t *next_key;         /* per backend */
	uint64_t *nkeys;            /* per backend: keys written */
	unsigned char *src;
	unsigned char **dst;        /* per backend */
	struct bench_slot *slots;
	int first_error;
};

static void bench_issue(struct bench_slot *s);

static void bench_done(struct zdb_req *r)
{
	struct bench_slot *s = container_of(r, struct bench_slot, r);
	struct bench *b = s->b;

	b->inflight--;
	if (r->result < 0 || (!b->put && (size_t)r->result != b->size)) {
		b->errors++;
		if (!b->first_error)
			b->first_error = r->result < 0 ? r->result : -EIO;
	} else {
		b->ops++;
	}
	if (now_ns() < b->end_ns && !b->stopping)
		bench_issue(s);
}

static void bench_issue(struct bench_slot *s)
{
	struct bench *b = s->b;
	unsigned be = s->backend;
	uint64_t k;

	if (b->put) {
		/* a bounded key set per backend, rewritten in turn: server memory
		 * stays flat (as with redis-benchmark's fixed key) */
		k = b->next_key[be]++ % BENCH_KEYS;
		if (k + 1 > b->nkeys[be])
			b->nkeys[be] = k + 1;
	} else {
		if (!b->nkeys[be])
			return;
		k = b->next_key[be]++ % b->nkeys[be];
	}
	memset(&s->r, 0, sizeof(s->r));
	snprintf(s->key, sizeof(s->key), "bench.%zu.%llu", b->size, (unsigned long long)k);
	s->r.key = s->key;
	s->r.key_len = strlen(s->key);
	s->r.done = bench_done;
	if (b->put) {
		s->r.op = ZDB_OP_PUT;
		s->r.val = b->src;
		s->r.val_len = b->size;
	} else {
		s->r.op = ZDB_OP_GET;
		s->r.buf = b->dst[be];
		s->r.buf_len = b->size;
	}
	b->inflight++;
	zdb_pool_submit(b->pool, be, &s->r);
}

/* One phase; returns ops/s. */
static double bench_phase(struct bench *b, struct loop *l, bool put, double seconds)
{
	unsigned i;
	uint64_t t0;

	b->put = put;
	b->ops = b->errors = 0;
	b->stopping = false;
	memset(b->next_key, 0, sizeof(*b->next_key) * b->n);
	t0 = now_ns();
	b->end_ns = t0 + (uint64_t)(seconds * 1e9);
	for (i = 0; i < b->n * b->depth; i++)
		bench_issue(&b->slots[i]);
	while (b->inflight) {
		if (loop_run_once(l, 100ull * 1000000) < 0)
			break;
	}
	return (double)b->ops / ((double)(now_ns() - t0) / 1e9);
}

static int parse_ports(const char *s, struct zdb_pool_cfg *cfg)
{
	char *dup = strdup(s), *save = NULL, *tok;
	uint64_t v;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct zdb_backend_cfg *b;

		if (parse_u64(tok, &v) < 0 || v == 0 || v > 65535 ||
		    cfg->nbackends == ZDB_MAX_BACKENDS) {
			free(dup);
			return -EINVAL;
		}
		b = &cfg->backends[cfg->nbackends++];
		memset(b, 0, sizeof(*b));
		snprintf(b->name, sizeof(b->name), "r%llu", (unsigned long long)v);
		snprintf(b->zone, sizeof(b->zone), "r%llu", (unsigned long long)v);
		snprintf(b->address, sizeof(b->address), "127.0.0.1:%llu", (unsigned long long)v);
		b->kind = ZDB_KIND_REDIS;
	}
	free(dup);
	return cfg->nbackends ? 0 : -EINVAL;
}

int bench_pool(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "redis-ports", required_argument, NULL, 'p' },
		{ "sizes", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "depth", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *ports = NULL, *sizes = "64K,1M";
	struct zdb_pool_cfg *cfg = calloc(1, sizeof(*cfg));
	struct bench b;
	struct loop l;
	double seconds = 3;
	bool json = false, loop_ok = false;
	unsigned depth = 16, i, nres = 0;
	char err[600], *sdup = NULL, *save = NULL, *tok;
	uint64_t v;
	int o, rc = 1;

	memset(&b, 0, sizeof(b));
	if (!cfg)
		return 1;
	optind = 1;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'c': config = optarg; break;
		case 'p': ports = optarg; break;
		case 's': sizes = optarg; break;
		case 't':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 3600) {
				fprintf(stderr, "nbdsrv bench pool: bad --seconds\n");
				goto exit;
			}
			seconds = (double)v;
			break;
		case 'd':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 1024) {
				fprintf(stderr, "nbdsrv bench pool: bad --depth\n");
				goto exit;
			}
			depth = (unsigned)v;
			break;
		case 'j': json = true; break;
		case 'h':
			printf("usage: nbdsrv bench pool [--json] (--config FILE | --redis-ports P1,P2,...)\n"
			       "                         [--sizes 64K,1M] [--seconds 3] [--depth 16]\n");
			rc = 0;
			goto exit;
		default: rc = 2; goto exit;
		}
	}
	if (!!config == !!ports) {
		fprintf(stderr, "nbdsrv bench pool: give --config FILE or --redis-ports LIST\n");
		rc = 2;
		goto exit;
	}
	if (config) {
		if (zdb_pool_cfg_load(config, cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			goto exit;
		}
	} else {
		zdb_pool_cfg_defaults(cfg);
		if (parse_ports(ports, cfg) < 0) {
			fprintf(stderr, "nbdsrv bench pool: bad --redis-ports '%s'\n", ports);
			goto exit;
		}
		cfg->k = 1;
		cfg->m = 0;
	}
	cfg->depth = depth;
	cfg->timeout_ns = 30ull * 1000000000;
	if (loop_init(&l, 4096) < 0)
		goto exit;
	loop_ok = true;
	if (zdb_pool_open(&l, cfg, NULL, &b.pool) < 0) {
		fprintf(stderr, "nbdsrv bench pool: cannot open the pool\n");
		goto exit;
	}
	zdb_pool_wait_connected(b.pool, 10ull * 1000000000);
	b.n = zdb_pool_size(b.pool);
	for (i = 0; i < b.n; i++)
		if (zdb_pool_backend(b.pool, i)->state != ZDB_CONN_READY) {
			fprintf(stderr, "nbdsrv bench pool: backend %s is not reachable: %s\n",
				zdb_pool_backend(b.pool, i)->cfg.name,
				zdb_pool_backend(b.pool, i)->last_error);
			goto exit;
		}
	b.depth = depth;
	b.next_key = calloc(b.n, sizeof(*b.next_key));
	b.nkeys = calloc(b.n, sizeof(*b.nkeys));
	b.dst = calloc(b.n, sizeof(*b.dst));
	b.slots = calloc((size_t)b.n * depth, sizeof(*b.slots));
	if (!b.next_key || !b.nkeys || !b.dst || !b.slots)
		goto exit;
	for (i = 0; i < b.n * depth; i++) {
		b.slots[i].b = &b;
		b.slots[i].backend = i / depth;
	}
	if (json)
		printf("{\"backends\":%u,\"depth\":%u,\"seconds\":%.0f,\"results\":[", b.n, depth,
		       seconds);
	else
		printf("%-4s %10s %12s %12s  (%u backends, %u in flight each, %.0f s per phase)\n",
		       "op", "size", "ops/s", "MiB/s", b.n, depth, seconds);
	sdup = strdup(sizes);
	for (tok = strtok_r(sdup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		double put_ops, get_ops;
		unsigned phase;

		if (parse_size(tok, &v) < 0 || v == 0 || v > ZDB_VALUE_MAX) {
			fprintf(stderr, "nbdsrv bench pool: bad size '%s' (1 to 8M)\n", tok);
			goto exit;
		}
		b.size = v;
		free(b.src);
		b.src = malloc(b.size);
		if (!b.src)
			goto exit;
		for (i = 0; i < b.size; i++)
			b.src[i] = (unsigned char)(i * 131 + 7);
		for (i = 0; i < b.n; i++) {
			free(b.dst[i]);
			b.dst[i] = malloc(b.size);
			if (!b.dst[i])
				goto exit;
		}
		memset(b.nkeys, 0, sizeof(*b.nkeys) * b.n);
		put_ops = bench_phase(&b, &l, true, seconds);
		if (b.errors)
			fprintf(stderr, "nbdsrv bench pool: %llu put errors (first: %s)\n",
				(unsigned long long)b.errors, strerror(-b.first_error));
		get_ops = bench_phase(&b, &l, false, seconds);
		if (b.errors)
			fprintf(stderr, "nbdsrv bench pool: %llu get errors (first: %s)\n",
				(unsigned long long)b.errors, strerror(-b.first_error));
		for (phase = 0; phase < 2; phase++) {
			double ops = phase ? get_ops : put_ops;
			double mib = ops * (double)b.size / 1048576.0;

			if (json)
				printf("%s{\"op\":\"%s\",\"size\":%zu,\"ops_per_s\":%.1f,\"mib_per_s\":%.1f}",
				       nres++ ? "," : "", phase ? "get" : "put", b.size, ops, mib);
			else
				printf("%-4s %10zu %12.0f %12.1f\n", phase ? "get" : "put", b.size, ops,
				       mib);
		}
	}
	if (json)
		printf("]}\n");
	rc = 0;
exit:
	if (b.pool) {
		zdb_pool_close(b.pool);
		while (!zdb_pool_closed(b.pool))
			loop_run_once(&l, 50ull * 1000000);
		zdb_pool_free(b.pool);
	}
	if (loop_ok)
		loop_fini(&l);
	for (i = 0; b.dst && i < b.n; i++)
		free(b.dst[i]);
	free(b.dst);
	free(b.src);
	free(b.slots);
	free(b.next_key);
	free(b.nkeys);
	free(sdup);
	zdb_pool_cfg_wipe(cfg);
	free(cfg);
	return rc;
}
