/*
 * bench_pool.c — `nbdsrv bench pool`: pipelined PUT then GET throughput of
 * the zdb client over a pool of backends, for each value size.
 *
 *   nbdsrv bench pool [--json] (--config FILE | --redis-ports P1,P2,…)
 *                     [--sizes 64K,1M] [--seconds S | --bytes N] [--depth D]
 *                     [--server-pids PID,…]
 *
 * Each backend gets D requests in flight on its one connection (the pool's
 * pipelining); every completion immediately issues the next request to the
 * same backend.  Two modes:
 *
 *   steady (default, --seconds S): for S seconds per phase, PUT rewrites
 *   keys bench.<size>.<n % 64> (64 keys per backend keep the servers'
 *   memory flat), then GET reads those same keys over and over — a hot
 *   set of 64 values per server, in the servers' CPU caches.
 *
 *   --bytes N: PUT writes exactly N payload bytes (ceil(N / size) values),
 *   each under its own key bench.<size>.<run>.<j>, spread round-robin over
 *   the backends; GET then reads each of them exactly once; both phases
 *   are timed to their last reply.  This is what a client storing N new
 *   bytes pays (the servers allocate fresh memory; every read is of a
 *   value written once, long out of the CPU caches), as the cache's
 *   flusher and a cold read do.  <run> is new per invocation, so a rerun
 *   never overwrites; the keys are deleted afterwards (untimed).
 *
 * Values come from one shared source buffer (never copied); each
 * backend's replies are received straight into one buffer per backend (a
 * connection receives one reply at a time).  Reported: operations/s and
 * MiB/s of payload, and with --server-pids the CPU seconds those processes
 * (the servers, on this machine) used during each phase, from
 * /proc/<pid>/stat, plus this client's own (getrusage).
 * bench/pool-bench runs this next to redis-benchmark on the same servers.
 */
#include "nbdsrv/cmd.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define BENCH_KEYS 64
#define BENCH_MAX_PIDS 256

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
	enum zdb_op op;
	bool put;                   /* op == ZDB_OP_PUT */
	bool stopping;
	uint64_t total_vals;        /* --bytes mode: values in all; 0 = steady */
	uint64_t run;               /* --bytes mode: key namespace of this run */
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
	if (r->result < 0 || (b->op == ZDB_OP_GET && (size_t)r->result != b->size)) {
		b->errors++;
		if (!b->first_error)
			b->first_error = r->result < 0 ? r->result : -EIO;
	} else {
		b->ops++;
	}
	if ((b->total_vals || now_ns() < b->end_ns) && !b->stopping)
		bench_issue(s);
}

static void bench_issue(struct bench_slot *s)
{
	struct bench *b = s->b;
	unsigned be = s->backend;
	uint64_t k;

	if (b->total_vals) {
		/* value j lives on backend j % n: this backend's i-th is i*n+be */
		k = b->next_key[be] * b->n + be;
		if (k >= b->total_vals)
			return;
		b->next_key[be]++;
	} else if (b->put) {
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
	if (b->total_vals)
		snprintf(s->key, sizeof(s->key), "bench.%zu.%llx.%llu", b->size,
			 (unsigned long long)b->run, (unsigned long long)k);
	else
		snprintf(s->key, sizeof(s->key), "bench.%zu.%llu", b->size,
			 (unsigned long long)k);
	s->r.key = s->key;
	s->r.key_len = strlen(s->key);
	s->r.done = bench_done;
	s->r.op = b->op;
	if (b->op == ZDB_OP_PUT) {
		s->r.val = b->src;
		s->r.val_len = b->size;
	} else if (b->op == ZDB_OP_GET) {
		s->r.buf = b->dst[be];
		s->r.buf_len = b->size;
	}
	b->inflight++;
	zdb_pool_submit(b->pool, be, &s->r);
}

/* Sum of utime + stime of the listed processes, in clock ticks; a process
 * that is gone counts 0. */
static uint64_t bench_pids_ticks(const int *pids, unsigned n)
{
	uint64_t sum = 0;
	unsigned i;

	for (i = 0; i < n; i++) {
		char path[64], buf[1024], *p;
		unsigned long long ut = 0, st = 0;
		FILE *f;
		size_t len;

		snprintf(path, sizeof(path), "/proc/%d/stat", pids[i]);
		f = fopen(path, "r");
		if (!f)
			continue;
		len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = 0;
		p = strrchr(buf, ')');
		/* after ") ": state(3) ... utime is field 14, stime 15 */
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&ut, &st) == 2)
			sum += ut + st;
	}
	return sum;
}

static double bench_self_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One phase; returns ops/s. */
static double bench_phase(struct bench *b, struct loop *l, enum zdb_op op, double seconds)
{
	unsigned i;
	uint64_t t0;

	b->op = op;
	b->put = op == ZDB_OP_PUT;
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
		{ "bytes", required_argument, NULL, 'b' },
		{ "server-pids", required_argument, NULL, 'P' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *ports = NULL, *sizes = "64K,1M";
	struct zdb_pool_cfg *cfg = calloc(1, sizeof(*cfg));
	static int pids[BENCH_MAX_PIDS];
	unsigned npids = 0;
	uint64_t total_bytes = 0;
	bool set_seconds = false;
	long hz = sysconf(_SC_CLK_TCK);
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
			set_seconds = true;
			break;
		case 'b':
			if (parse_size(optarg, &v) < 0 || v == 0 || v > (1ull << 40)) {
				fprintf(stderr, "nbdsrv bench pool: bad --bytes (1 to 1T)\n");
				goto exit;
			}
			total_bytes = v;
			break;
		case 'P': {
			char *pd = strdup(optarg), *ps = NULL, *pt;

			if (!pd)
				goto exit;
			for (pt = strtok_r(pd, ",", &ps); pt; pt = strtok_r(NULL, ",", &ps)) {
				if (parse_u64(pt, &v) < 0 || v == 0 || v > (uint64_t)INT32_MAX ||
				    npids == BENCH_MAX_PIDS) {
					fprintf(stderr, "nbdsrv bench pool: bad --server-pids '%s'\n",
						optarg);
					free(pd);
					goto exit;
				}
				pids[npids++] = (int)v;
			}
			free(pd);
			break;
		}
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
			       "                         [--sizes 64K,1M] [--seconds 3 | --bytes N] [--depth 16]\n"
			       "                         [--server-pids PID,...]\n"
			       "  --seconds S: each phase S s over 64 keys per backend (rewritten, re-read)\n"
			       "  --bytes N: PUT N bytes under new keys, then GET each once\n"
			       "  --server-pids: also report the CPU s these processes used per phase\n");
			rc = 0;
			goto exit;
		default: rc = 2; goto exit;
		}
	}
	if (total_bytes && set_seconds) {
		fprintf(stderr, "nbdsrv bench pool: --seconds and --bytes exclude each other\n");
		rc = 2;
		goto exit;
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
	b.run = now_ns() ^ ((uint64_t)getpid() << 40);
	if (json && total_bytes)
		printf("{\"backends\":%u,\"depth\":%u,\"mode\":\"bytes\",\"bytes\":%llu,"
		       "\"results\":[", b.n, depth, (unsigned long long)total_bytes);
	else if (json)
		printf("{\"backends\":%u,\"depth\":%u,\"mode\":\"steady\",\"seconds\":%.0f,"
		       "\"results\":[", b.n, depth, seconds);
	else if (total_bytes)
		printf("%-4s %10s %12s %12s %8s %9s %9s  (%u backends, %u in flight each, "
		       "%llu bytes under new keys, each read once)\n", "op", "size", "ops/s", "MiB/s",
		       "s", "srv-CPU-s", "cli-CPU-s", b.n, depth, (unsigned long long)total_bytes);
	else
		printf("%-4s %10s %12s %12s %8s %9s %9s  (%u backends, %u in flight each, "
		       "%.0f s per phase, 64 keys per backend)\n", "op", "size", "ops/s", "MiB/s",
		       "s", "srv-CPU-s", "cli-CPU-s", b.n, depth, seconds);
	sdup = strdup(sizes);
	for (tok = strtok_r(sdup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		static const enum zdb_op ops[2] = { ZDB_OP_PUT, ZDB_OP_GET };
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
		b.total_vals = total_bytes ? (total_bytes + b.size - 1) / b.size : 0;
		for (phase = 0; phase < 2; phase++) {
			uint64_t t0 = now_ns(), tk0 = bench_pids_ticks(pids, npids), tk1;
			double c0 = bench_self_cpu_s(), c1, secs, ops_s, mib, srv;
			const char *name = phase ? "get" : "put";

			ops_s = bench_phase(&b, &l, ops[phase], seconds);
			secs = (double)(now_ns() - t0) / 1e9;
			c1 = bench_self_cpu_s();
			tk1 = bench_pids_ticks(pids, npids);
			srv = npids ? (double)(tk1 - tk0) / (double)hz : 0;
			if (b.errors)
				fprintf(stderr, "nbdsrv bench pool: %llu %s errors (first: %s)\n",
					(unsigned long long)b.errors, name,
					strerror(-b.first_error));
			mib = ops_s * (double)b.size / 1048576.0;
			if (json) {
				printf("%s{\"op\":\"%s\",\"size\":%zu,\"ops\":%llu,\"errors\":%llu,"
				       "\"seconds\":%.3f,\"ops_per_s\":%.1f,\"mib_per_s\":%.1f,"
				       "\"client_cpu_s\":%.2f",
				       nres++ ? "," : "", name, b.size, (unsigned long long)b.ops,
				       (unsigned long long)b.errors, secs, ops_s, mib, c1 - c0);
				if (npids)
					printf(",\"server_cpu_s\":%.2f", srv);
				printf("}");
			} else {
				char sv[32] = "-";

				if (npids)
					snprintf(sv, sizeof(sv), "%.2f", srv);
				printf("%-4s %10zu %12.0f %12.1f %8.2f %9s %9.2f\n", name, b.size,
				       ops_s, mib, secs, sv, c1 - c0);
			}
		}
		if (b.total_vals) {     /* untimed: give the servers their memory back */
			bench_phase(&b, &l, ZDB_OP_DEL, seconds);
			if (b.errors)
				fprintf(stderr, "nbdsrv bench pool: %llu delete errors\n",
					(unsigned long long)b.errors);
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
