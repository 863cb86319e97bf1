/*
 * cmd_init.c — `nbdsrv init DIR`: the embedded default pool in one folder,
 * ready for `nbdsrv serve --config DIR/pool.conf`.
 *
 *   DIR/pool.conf      k, m, chunk_size, key_file, cache_path, cache_size,
 *                      listen 0.0.0.0:10809 and unix:DIR/nbdsrv.sock, one
 *                      [backend bNN] of kind dir per backend
 *   DIR/pool.key       a fresh 32-byte key, mode 0600 (codec_key_generate)
 *   DIR/backends/bNN/  the dir backends (local folders)
 *   DIR/cache/         metadata (meta/) and SSD cache (cache.img), created
 *                      by the first serve — or here when --volume is given
 *                      (the volume is created through the same code path as
 *                      serve's, then the stores are closed)
 *
 * Paths inside pool.conf are relative to it (the config parser resolves
 * them against the file's folder), except the unix socket (absolute), so
 * DIR can be moved while no daemon runs.  The key is the pool's identity
 * (volumes.c): keep a copy of pool.key elsewhere, without it the shards on
 * the backends cannot be read.
 *
 * An existing DIR/pool.conf is never touched (exit 1).  Every argument is
 * checked before anything is written; a failure after that point removes
 * the key and config it wrote (the backend folders stay: they are empty).
 */
#include "nbdsrv/cmd.h"
#include "nbdsrv/volumes.h"
#include "codec/codec.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void init_usage(FILE *f)
{
	fprintf(f,
"usage: nbdsrv init DIR [options]\n"
"\n"
"Create a pool in DIR: local folder backends, a generated key, an SSD cache,\n"
"and DIR/pool.conf for `nbdsrv serve --config DIR/pool.conf`.\n"
"\n"
"  --backends N        dir backends DIR/backends/bNN (default 6)\n"
"  --k K               data shards per chunk (default 4)\n"
"  --m M               parity shards per chunk (default 2); k+m <= N\n"
"  --cache-size SIZE   the cache file DIR/cache/cache.img (default 1G)\n"
"  --chunk-size SIZE   volume chunk = cache slot, power of two 64K..8M\n"
"                      (default 1M)\n"
"  --volume NAME=SIZE  create this volume now (repeatable)\n"
"  --help              this text\n"
"\n"
"Refuses a DIR that already has a pool.conf.  Back up DIR/pool.key: without\n"
"it nothing stored in the pool can be read.\n");
}

static int init_usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "nbdsrv init: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'nbdsrv init --help'.\n");
	return 2;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Volume names: [A-Za-z0-9._-], 1..VOL_NAME_MAX bytes, not leading . or -. */
static bool vol_name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > VOL_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789._-", s[i]) || !s[i])
			return false;
	return true;
}

struct init_opts {
	uint64_t backends, k, m, cache_size, chunk_size;
	const char **vols;
	size_t nvols;
};

static int write_conf(const char *path, const char *dir, const struct init_opts *o)
{
	char tmp[PATH_MAX + 32];
	FILE *f;
	uint64_t i;
	int r = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "wx");
	if (!f)
		return -errno;
	fprintf(f,
"# written by `nbdsrv init` — README.md, \"Pool configuration\".\n"
"# Relative paths are relative to this file.\n"
"[pool]\n"
"k = %llu\n"
"m = %llu\n"
"min_shards = %llu\n"
"chunk_size = %lluK\n"
"key_file = pool.key\n"
"cache_path = cache\n"
"cache_size = %lluM\n"
"cache_mode = writeback\n"
"listen = 0.0.0.0:10809\n"
"listen = unix:%s/nbdsrv.sock\n",
		(unsigned long long)o->k, (unsigned long long)o->m,
		(unsigned long long)(o->m ? o->k + 1 : o->k),
		(unsigned long long)(o->chunk_size >> 10),
		(unsigned long long)(o->cache_size >> 20), dir);
	for (i = 0; i < o->backends; i++)
		fprintf(f, "\n[backend b%02llu]\nkind = dir\naddress = backends/b%02llu\n",
			(unsigned long long)i, (unsigned long long)i);
	if (fflush(f) < 0 || fsync(fileno(f)) < 0)
		r = -errno;
	if (fclose(f) < 0 && !r)
		r = -errno;
	if (!r && link(tmp, path) < 0)  /* never replaces an existing file */
		r = -errno;
	unlink(tmp);
	return r;
}

static int parse_opt_size(const char *name, const char *arg, uint64_t *out)
{
	if (parse_size(arg, out) < 0) {
		init_usage_error("%s: expected a size such as 1G", name);
		return -EINVAL;
	}
	return 0;
}

int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "backends",   required_argument, NULL, 'b' },
		{ "k",          required_argument, NULL, 'k' },
		{ "m",          required_argument, NULL, 'm' },
		{ "cache-size", required_argument, NULL, 'c' },
		{ "chunk-size", required_argument, NULL, 's' },
		{ "volume",     required_argument, NULL, 'v' },
		{ "help",       no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct init_opts o = { .backends = 6, .k = 4, .m = 2, .cache_size = 1ull << 30,
			       .chunk_size = 1u << 20 };
	char dir[PATH_MAX], conf[PATH_MAX + 16], key[PATH_MAX + 16], be[PATH_MAX + 32];
	char err[1024];
	const char *chunk_arg = "1M";
	struct zdb_pool_cfg *cfg = NULL;
	struct volumes *vols = NULL;
	bool wrote_key = false, wrote_conf = false, stores = false;
	struct stat st;
	int c, rc = 1, r;
	uint64_t i;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (parse_u64(optarg, &o.backends) < 0 || o.backends == 0 ||
			    o.backends > 99) {
				rc = init_usage_error("--backends: '%s': expected 1..99", optarg);
				goto out;
			}
			break;
		case 'k':
			if (parse_u64(optarg, &o.k) < 0 || o.k == 0 || o.k > 32) {
				rc = init_usage_error("--k: '%s': expected 1..32", optarg);
				goto out;
			}
			break;
		case 'm':
			if (parse_u64(optarg, &o.m) < 0 || o.m > 8) {
				rc = init_usage_error("--m: '%s': expected 0..8", optarg);
				goto out;
			}
			break;
		case 'c':
			if (parse_opt_size("--cache-size", optarg, &o.cache_size) < 0) {
				rc = 2;
				goto out;
			}
			break;
		case 's':
			chunk_arg = optarg;
			if (parse_opt_size("--chunk-size", optarg, &o.chunk_size) < 0) {
				rc = 2;
				goto out;
			}
			break;
		case 'v': {
			const char *eq = strchr(optarg, '=');
			const char **nv;
			uint64_t sz;

			if (!eq || !vol_name_ok(optarg, (size_t)(eq - optarg)) ||
			    parse_size(eq + 1, &sz) < 0 || sz == 0) {
				rc = init_usage_error("--volume: '%s': expected NAME=SIZE "
						      "(e.g. disk=16G)", optarg);
				goto out;
			}
			nv = realloc(o.vols, (o.nvols + 1) * sizeof(*nv));
			if (!nv) {
				fprintf(stderr, "nbdsrv init: out of memory\n");
				goto out;
			}
			o.vols = nv;
			o.vols[o.nvols++] = optarg;
			break;
		}
		case 'h':
			init_usage(stdout);
			rc = 0;
			goto out;
		case ':':
			rc = init_usage_error("%s: missing argument", argv[optind - 1]);
			goto out;
		default:
			rc = init_usage_error("unknown option '%s'", argv[optind - 1]);
			goto out;
		}
	}
	if (optind != argc - 1) {
		rc = init_usage_error("%s", optind >= argc ? "DIR is required"
				      : "exactly one DIR, please");
		goto out;
	}
	if (o.chunk_size < VOL_CHUNK_MIN || o.chunk_size > VOL_CHUNK_MAX ||
	    (o.chunk_size & (o.chunk_size - 1))) {
		rc = init_usage_error("--chunk-size: '%s': a power of two from 64K to 8M",
				      chunk_arg);
		goto out;
	}
	if (o.k + o.m > o.backends) {
		fprintf(stderr, "nbdsrv init: k+m = %llu needs at least that many backends, "
			"--backends is %llu\n", (unsigned long long)(o.k + o.m),
			(unsigned long long)o.backends);
		rc = 2;
		goto out;
	}
	if (o.cache_size < (1ull << 20) || o.cache_size < 4 * o.chunk_size ||
	    o.cache_size % (1ull << 20)) {
		fprintf(stderr, "nbdsrv init: --cache-size: at least 1M and 4 chunks, a whole "
			"number of MiB\n");
		rc = 2;
		goto out;
	}
	r = mkdir_p(argv[optind], 0700);
	if (r < 0 || !realpath(argv[optind], dir)) {
		fprintf(stderr, "nbdsrv init: %s: %s\n", argv[optind],
			strerror(r < 0 ? -r : errno));
		goto out;
	}
	if (strlen(dir) > 512 - 32) {
		fprintf(stderr, "nbdsrv init: %s: path too long\n", dir);
		goto out;
	}
	snprintf(conf, sizeof(conf), "%s/pool.conf", dir);
	snprintf(key, sizeof(key), "%s/pool.key", dir);
	if (lstat(conf, &st) == 0) {
		fprintf(stderr, "nbdsrv init: %s exists: %s already holds a pool (serve it "
			"with `nbdsrv serve --config %s`); nothing changed\n", conf, dir, conf);
		goto out;
	}
	if (lstat(key, &st) == 0) {
		fprintf(stderr, "nbdsrv init: %s exists without a pool.conf; refusing to "
			"replace a key (move it away first)\n", key);
		goto out;
	}
	for (i = 0; i < o.backends; i++) {
		snprintf(be, sizeof(be), "%s/backends/b%02llu", dir, (unsigned long long)i);
		r = mkdir_p(be, 0700);
		if (r < 0) {
			fprintf(stderr, "nbdsrv init: %s: %s\n", be, strerror(-r));
			goto out;
		}
	}
	r = codec_key_generate(key, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "nbdsrv init: %s\n", err);
		goto out;
	}
	wrote_key = true;
	r = write_conf(conf, dir, &o);
	if (r < 0) {
		fprintf(stderr, "nbdsrv init: %s: %s\n", conf, strerror(-r));
		goto out;
	}
	wrote_conf = true;
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || zdb_pool_cfg_load(conf, cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "nbdsrv init: the written config does not load: %s\n",
			cfg ? err : "out of memory");
		goto out;
	}
	if (o.nvols) {
		r = volumes_open(VOLUMES_PERSISTENT, cfg, 0, &vols);
		if (r < 0)
			goto out;
		stores = true;          /* the pool exists now: keep key + conf */
		for (i = 0; i < o.nvols; i++) {
			const char *eq = strchr(o.vols[i], '=');
			char name[VOL_NAME_MAX + 1];
			uint64_t sz;

			memcpy(name, o.vols[i], (size_t)(eq - o.vols[i]));
			name[eq - o.vols[i]] = 0;
			parse_size(eq + 1, &sz);
			if (volumes_ensure(vols, name, sz) < 0)
				goto out;
		}
		r = volumes_close(vols);
		vols = NULL;
		if (r < 0) {
			fprintf(stderr, "nbdsrv init: closing the new stores failed\n");
			goto out;
		}
	}
	printf("pool in %s: %llu dir backends, k=%llu m=%llu, chunk %llu KiB, cache %llu MiB\n"
	       "key: %s (back it up: nothing in the pool can be read without it)\n"
	       "serve it: nbdsrv serve --config %s\n",
	       dir, (unsigned long long)o.backends, (unsigned long long)o.k,
	       (unsigned long long)o.m, (unsigned long long)(o.chunk_size >> 10),
	       (unsigned long long)(o.cache_size >> 20), key, conf);
	rc = 0;
out:
	if (vols)
		volumes_close(vols);
	if (rc != 0 && wrote_conf && !stores)
		unlink(conf);
	if (rc != 0 && wrote_key && !stores)
		unlink(key);
	if (cfg) {
		zdb_pool_cfg_wipe(cfg);
		free(cfg);
	}
	free(o.vols);
	return rc;
}
