/*
 * check_zdb.c — unit tests for zdb/: the RESP parser and encoder, the
 * config parser's error messages (table-driven), placement, chunk put/get
 * over dir backends with injected faults, and the RESP client against fake
 * servers run in a thread of this process:
 *   - "bad" fakes answering malformed, truncated, oversized, out-of-order
 *     or unsolicited replies (the connection fails, the request gets an
 *     error, another backend is unaffected);
 *   - a zdb-DIALECT fake (SET answers the key, $-1 for an identical value,
 *     DEL of a missing key is -Key not found, SELECT ns SECURE with a SHA-1
 *     challenge, NSINFO) — it tests our dialect code paths in CI; the real
 *     0-db runs in test-pool-zdb.sh when installed.
 */
#include "zdb/zdb.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ RESP ---- */

START_TEST(test_resp_parse)
{
	static const struct {
		const char *in;
		int ret;               /* > 0: full length; 0 incomplete; < 0 error */
		enum resp_type type;
		int64_t integer;
	} cases[] = {
		{ "+OK\r\n", 5, RESP_SIMPLE, 0 },
		{ "-ERR x\r\n", 8, RESP_ERROR, 0 },
		{ ":42\r\n", 5, RESP_INT, 42 },
		{ ":-7\r\n", 5, RESP_INT, -7 },
		{ "$3\r\nabc\r\n", 9, RESP_BULK, 3 },
		{ "$0\r\n\r\n", 6, RESP_BULK, 0 },
		{ "$-1\r\n", 5, RESP_NIL, 0 },
		{ "*-1\r\n", 5, RESP_NIL, 0 },
		{ "*2\r\n$1\r\na\r\n:1\r\n", 15, RESP_ARRAY, 2 },
		{ "+OK", 0, RESP_NONE, 0 },
		{ "+OK\r", 0, RESP_NONE, 0 },
		{ "$3\r\nab", 0, RESP_BULK, 3 },
		{ "*2\r\n$1\r\na\r\n", 0, RESP_NONE, 0 },
		{ "", 0, RESP_NONE, 0 },
		{ "?x\r\n", -EPROTO, RESP_NONE, 0 },
		{ "+O\nK\r\n", -EPROTO, RESP_NONE, 0 },
		{ "+OK\rX", -EPROTO, RESP_NONE, 0 },
		{ ":12a\r\n", -EPROTO, RESP_NONE, 0 },
		{ ":\r\n", -EPROTO, RESP_NONE, 0 },
		{ ":+1\r\n", -EPROTO, RESP_NONE, 0 },
		{ "$-2\r\n", -EPROTO, RESP_NONE, 0 },
		{ "$3\r\nabcX\r\n", -EPROTO, RESP_NONE, 0 },
		{ "$99999999999999999999\r\n", -EPROTO, RESP_NONE, 0 },
		{ "$2000\r\n", -EMSGSIZE, RESP_NONE, 0 },     /* > max_bulk 1024 */
		{ "*5000\r\n", -EMSGSIZE, RESP_NONE, 0 },
		{ "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", -EMSGSIZE, RESP_NONE, 0 },
	};
	unsigned i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct resp_reply r;
		int ret = resp_parse(cases[i].in, strlen(cases[i].in), 1024, &r);

		ck_assert_msg(ret == cases[i].ret, "case %u (%s): got %d want %d", i,
			      cases[i].in, ret, cases[i].ret);
		if (ret > 0 || (ret == 0 && cases[i].type != RESP_NONE)) {
			ck_assert_msg(r.type == cases[i].type, "case %u: type %d", i, r.type);
			ck_assert_msg(r.integer == cases[i].integer, "case %u: integer", i);
		}
	}
	{
		/* a line that never ends is bounded */
		char *big = malloc(RESP_LINE_MAX + 10);
		struct resp_reply r;

		memset(big, 'a', RESP_LINE_MAX + 10);
		big[0] = '+';
		ck_assert_int_eq(resp_parse(big, RESP_LINE_MAX + 10, 1024, &r), -EMSGSIZE);
		ck_assert_int_eq(resp_parse(big, 100, 1024, &r), 0);
		free(big);
	}
}
END_TEST

START_TEST(test_resp_encode)
{
	char out[64];
	const void *argv[3] = { "SET", "k", "val" };
	size_t lens[3] = { 3, 1, 3 };
	int n;

	n = resp_encode(out, sizeof(out), 3, argv, lens);
	ck_assert_int_eq(n, 29);
	ck_assert(!memcmp(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nval\r\n", 29));
	n = resp_encode_head(out, sizeof(out), 3, argv, lens, 3);
	ck_assert_int_eq(n, 24);
	ck_assert(!memcmp(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n", 24));
	ck_assert_int_eq(resp_encode(out, 10, 3, argv, lens), -ENOBUFS);
}
END_TEST

/* ---------------------------------------------------------- config ---- */

static char tmpdir[64];

static void mk_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_zdb.XXXXXX");
	ck_assert(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

#define B3 "[backend a]\nkind = redis\naddress = 127.0.0.1:1\n" \
	   "[backend b]\nkind = redis\naddress = 127.0.0.1:2\n" \
	   "[backend c]\nkind = redis\naddress = 127.0.0.1:3\n"

START_TEST(test_config_errors)
{
	static const struct {
		const char *text;
		const char *want;   /* expected "FILE:LINE: ..." prefix + words */
	} cases[] = {
		{ "[pool]\nk = 2\nm = 1\nbogus = 1\n" B3, "t.conf:4: unknown key 'bogus'" },
		{ "[pool]\nk = 2\nk = 2\nm = 1\n" B3, "t.conf:3: 'k' given twice" },
		{ "[pool]\nk = x\n", "t.conf:2: k must be a number" },
		{ "[pool]\nk = 2\nm = 2\n" B3, "t.conf:3: k+m = 4 needs at least that many backends, 3" },
		{ "[pool]\nk = 2\nm = 1\n" B3 "[backend a]\n", "t.conf:13: duplicate backend 'a' (first on line 4)" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = redis\naddress = nowhere\n",
		  "t.conf:4: [backend a]: bad address 'nowhere'" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = redis\naddress = 1.2.3.4:99999\n",
		  "t.conf:4: [backend a]: bad address" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = zdb\naddress = 1.2.3.4:1\npassword_file = /nonexistent/pw\n",
		  "t.conf:7: cannot read password_file '/nonexistent/pw'" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = zdb\naddress = 1.2.3.4:1\npassword = x\npassword_file = y\n",
		  "t.conf:8: give password or password_file, not both" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\naddress = 1.2.3.4:1\n[backend b]\n",
		  "t.conf:4: [backend a] has no kind" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = ftp\n", "t.conf:5: kind must be zdb, redis or dir" },
		{ "[pools]\n", "t.conf:1: unknown section [pools]" },
		{ "k = 1\n", "t.conf:1: 'k' outside of a section" },
		{ "[pool\n", "t.conf:1: malformed section header" },
		{ "[pool]\njunk\n", "t.conf:2: expected '=' after the key" },
		{ "[pool]\n= 3\n", "t.conf:2: expected `key = value`" },
		{ "[pool]\nkey_file = \"abc\n", "t.conf:2: unterminated quoted value" },
		{ "[pool]\nchunk_size = 3M\n", "t.conf:2: chunk_size must be a power of two" },
		{ "[pool]\nm = 1\n" B3, "t.conf:1: [pool] needs k and m" },
		{ "# nothing\n", "t.conf:1: no [pool] section" },
		{ "[pool]\nk = 2\nm = 1\nmin_shards = 9\n" B3, "t.conf:4: min_shards must be from k (2) to k+m (3)" },
		{ "[pool]\n[pool]\n", "t.conf:2: second [pool] section (first on line 1)" },
		{ "[pool]\nk = 2\nm = 1\n" B3 "[backend d]\nkind = redis\naddress = 127.0.0.1:3\n",
		  "t.conf:13: [backend d] has the same address and namespace as [backend c]" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = dir\naddress = /x\npassword = p\n",
		  "t.conf:4: [backend a]: a dir backend takes no namespace or password" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = zdb\naddress = 1.2.3.4:1\npassword = *\n",
		  "t.conf:4: [backend a]: a 0-db namespace password must be 1 to 63 bytes and not \"*\"" },
		{ "[pool]\nk = 2\nm = 1\n[backend a]\nkind = zdb\naddress = 1.2.3.4:1\npassword = "
		  "0123456789012345678901234567890123456789012345678901234567890123\n",
		  "t.conf:4: [backend a]: a 0-db namespace password must be 1 to 63 bytes" },
		{ "[pool]\nhedge_ms = soon\n", "t.conf:2: hedge_ms (or auto) must be a number" },
		{ "[pool]\ncache_mode = lazy\n", "t.conf:2: cache_mode must be writeback or writethrough" },
		{ "[pool]\nscrub_rate = fast\n", "t.conf:2: scrub_rate must be a rate in bytes per second" },
		/* above INT64_MAX: status would show a negative rate (JSON
		 * integers are signed), and `scrub --rate` refuses it too */
		{ "[pool]\nscrub_rate = 8E\n", "t.conf:2: scrub_rate must be a rate in bytes per second" },
		{ "[pool]\nscrub_rate = 15E\n", "t.conf:2: scrub_rate must be a rate in bytes per second" },
		{ "[backend]\n", "t.conf:1: [backend] needs a name" },
	};
	struct zdb_pool_cfg *cfg = malloc(sizeof(*cfg));
	char err[512];
	unsigned i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		int r = zdb_pool_cfg_parse("t.conf", "/tmp", cases[i].text, strlen(cases[i].text),
					   cfg, err, sizeof(err));

		ck_assert_msg(r < 0, "case %u parsed although it should fail", i);
		ck_assert_msg(!strncmp(err, cases[i].want, strlen(cases[i].want)),
			      "case %u: got '%s', want '%s'", i, err, cases[i].want);
	}
	/* 0-db's namespace password bound is inclusive: 63 bytes (and a
	 * redis password has no such bound) */
	{
		static const char ok63[] = "[pool]\nk = 2\nm = 1\n" B3 "[backend z]\nkind = zdb\n"
			"address = 127.0.0.1:4\nnamespace = nbd\npassword = "
			"012345678901234567890123456789012345678901234567890123456789012\n"
			"[backend r]\nkind = redis\naddress = 127.0.0.1:5\npassword = "
			"0123456789012345678901234567890123456789012345678901234567890123456789\n";

		ck_assert_msg(zdb_pool_cfg_parse("t.conf", "/tmp", ok63, strlen(ok63), cfg, err,
						 sizeof(err)) == 0, "63-byte 0-db password refused: %s", err);
		ck_assert_uint_eq(strlen(cfg->backends[3].password), 63);
		zdb_pool_cfg_wipe(cfg);
	}
	/* a NUL byte in the middle */
	ck_assert_int_lt(zdb_pool_cfg_parse("t.conf", NULL, "[pool]\nk\0=1\n", 12, cfg, err,
					     sizeof(err)), 0);
	ck_assert_str_eq(err, "t.conf:2: NUL byte in the line");
	/* relative paths resolved against a long folder: refused, never cut */
	{
		char dir[5000];
		static const char *const rel[] = {
			"[pool]\nk = 2\nm = 1\nkey_file = pool.key\n" B3,
			"[pool]\nk = 2\nm = 1\ncache_path = cache\n" B3,
			("[pool]\nk = 1\nm = 1\n[backend a]\nkind = dir\naddress = b0\n"
			 "[backend b]\nkind = dir\naddress = /b1\n"),
		};
		static const char *const want[] = {
			"t.conf:4: key_file: the path is longer than",
			"t.conf:4: cache_path: the path is longer than",
			"t.conf:4: [backend a] address: the path is longer than",
		};

		memset(dir, 'd', sizeof(dir) - 1);
		dir[0] = '/';
		dir[sizeof(dir) - 1] = 0;
		for (i = 0; i < ARRAY_SIZE(rel); i++) {
			int r = zdb_pool_cfg_parse("t.conf", dir, rel[i], strlen(rel[i]), cfg, err,
						   sizeof(err));

			ck_assert_msg(r < 0, "long path %u parsed", i);
			ck_assert_msg(!strncmp(err, want[i], strlen(want[i])),
				      "long path %u: got '%s', want '%s'", i, err, want[i]);
		}
	}
	free(cfg);
}
END_TEST

START_TEST(test_config_ok)
{
	const char *text =
		"# a pool\n[pool]\nk = 2\nm = 1\nchunk_size = 4M\nhedge_ms = 25\n"
		"listen = unix:/run/x.sock\nlisten = 127.0.0.1:10809\n"
		"cache_mode = writethrough\nscrub_rate = 8M\n"
		"[backend a]\nkind = zdb\naddress = [::1]:9900\nnamespace = nbd\n"
		"password_file = pw\nzone = r1\n"
		"[backend b]\nkind = redis\naddress = unix:/tmp/r.sock\npassword = \"a # b\"\n"
		"[backend c]\nkind = dir\naddress = shards/c\n";
	struct zdb_pool_cfg *cfg = malloc(sizeof(*cfg));
	char err[512], pw[300];
	FILE *f;

	mk_tmpdir();
	snprintf(pw, sizeof(pw), "%s/pw", tmpdir);
	f = fopen(pw, "w");
	ck_assert(f);
	fputs("s3cret\n", f);
	fclose(f);
	ck_assert_msg(zdb_pool_cfg_parse("t.conf", tmpdir, text, strlen(text), cfg, err,
					 sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(cfg->k, 2);
	ck_assert_uint_eq(cfg->min_shards, 3);
	ck_assert_uint_eq(cfg->chunk_size, 4u << 20);
	ck_assert_uint_eq(cfg->hedge_ns, 25ull * 1000000);
	ck_assert_uint_eq(cfg->nlisten, 2);
	ck_assert_int_eq(cfg->cache_mode, ZDB_CACHE_WRITETHROUGH);
	ck_assert_uint_eq(cfg->scrub_rate, 8u << 20);
	ck_assert_uint_eq(cfg->nbackends, 3);
	ck_assert_str_eq(cfg->backends[0].password, "s3cret");
	ck_assert_str_eq(cfg->backends[0].zone, "r1");
	ck_assert_str_eq(cfg->backends[1].password, "a # b");
	ck_assert_str_eq(cfg->backends[1].zone, "b");
	ck_assert(strstr(cfg->backends[2].address, "/shards/c"));
	ck_assert(cfg->backends[2].address[0] == '/');
	zdb_pool_cfg_wipe(cfg);
	ck_assert_str_eq(cfg->backends[0].password, "");
	zdb_pool_cfg_defaults(cfg);
	ck_assert_uint_eq(cfg->scrub_rate, 64u << 20);
	free(cfg);
	rm_tmpdir();
}
END_TEST

/* ------------------------------------------------ pool over dirs ---- */

struct fixture {
	struct loop loop;
	struct zdb_pool *pool;
	struct zdb_pool_cfg *cfg;
};

static void fx_open(struct fixture *fx, unsigned n, unsigned zones, unsigned k, unsigned m)
{
	unsigned i;

	mk_tmpdir();
	fx->cfg = calloc(1, sizeof(*fx->cfg));
	zdb_pool_cfg_defaults(fx->cfg);
	fx->cfg->k = k;
	fx->cfg->m = m;
	fx->cfg->hedge_ns = 20ull * 1000000;
	fx->cfg->timeout_ns = 2000ull * 1000000;   /* held (blackholed) requests */
	fx->cfg->nbackends = n;
	for (i = 0; i < n; i++) {
		struct zdb_backend_cfg *b = &fx->cfg->backends[i];

		snprintf(b->name, sizeof(b->name), "d%02u", i);
		snprintf(b->zone, sizeof(b->zone), "z%u", zones ? i % zones : i);
		snprintf(b->address, sizeof(b->address), "%s/d%02u", tmpdir, i);
		b->kind = ZDB_KIND_DIR;
	}
	ck_assert_int_eq(loop_init(&fx->loop, 256), 0);
	{
		struct zdb_pool_opts o = { .fault_wrap = true };

		ck_assert_int_eq(zdb_pool_open(&fx->loop, fx->cfg, &o, &fx->pool), 0);
	}
	ck_assert_int_eq(zdb_pool_wait_connected(fx->pool, 10ull * 1000000000), 0);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(zdb_pool_health(fx->pool, i), ZDB_HEALTH_UP);
}

static void fx_close(struct fixture *fx)
{
	zdb_pool_close(fx->pool);
	while (!zdb_pool_closed(fx->pool))
		loop_run_once(&fx->loop, 20ull * 1000000);
	zdb_pool_free(fx->pool);
	loop_fini(&fx->loop);
	free(fx->cfg);
	rm_tmpdir();
}

/* A put cut by a crash leaves ".tmp.PID.SEQ.key"; the next start removes it
 * when PID is gone, and leaves a running process's own temporary files. */
START_TEST(test_dir_tmp_sweep)
{
	struct fixture fx;
	char dead[512], live[512];
	struct zdb_pool_opts o = { 0 };
	pid_t pid;
	int fd;

	fx_open(&fx, 3, 0, 2, 1);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	snprintf(dead, sizeof(dead), "%s/d00/.tmp.%ld.7.abcd", tmpdir, (long)pid);
	snprintf(live, sizeof(live), "%s/d00/.tmp.%ld.8.abcd", tmpdir, (long)getpid());
	ck_assert_int_ge(fd = open(dead, O_CREAT | O_WRONLY, 0600), 0);
	close(fd);
	ck_assert_int_ge(fd = open(live, O_CREAT | O_WRONLY, 0600), 0);
	close(fd);
	zdb_pool_close(fx.pool);
	while (!zdb_pool_closed(fx.pool))
		loop_run_once(&fx.loop, 20ull * 1000000);
	zdb_pool_free(fx.pool);
	ck_assert_int_eq(zdb_pool_open(&fx.loop, fx.cfg, &o, &fx.pool), 0);
	ck_assert_int_eq(zdb_pool_wait_connected(fx.pool, 10ull * 1000000000), 0);
	ck_assert_msg(access(dead, F_OK) < 0, "a dead writer's temporary file was kept");
	ck_assert_msg(access(live, F_OK) == 0, "a live writer's temporary file was removed");
	fx_close(&fx);
}
END_TEST

START_TEST(test_place)
{
	struct fixture fx;
	unsigned load[24] = { 0 };
	unsigned c, i;

	fx_open(&fx, 24, 6, 16, 4);
	for (c = 0; c < 600; c++) {
		uint16_t a[20], b[20];
		unsigned zc[6] = { 0 }, zmin = 99, zmax = 0;
		uint64_t seen[4] = { 0 };

		ck_assert_uint_eq(zdb_pool_place(fx.pool, &c, sizeof(c), 20, NULL, a), 20);
		ck_assert_uint_eq(zdb_pool_place(fx.pool, &c, sizeof(c), 20, NULL, b), 20);
		ck_assert(!memcmp(a, b, sizeof(a)));   /* deterministic */
		for (i = 0; i < 20; i++) {
			ck_assert(!(seen[a[i] / 64] >> (a[i] % 64) & 1));   /* distinct */
			seen[a[i] / 64] |= 1ull << (a[i] % 64);
			zc[a[i] % 6]++;
			load[a[i]]++;
		}
		for (i = 0; i < 6; i++) {
			zmin = MIN(zmin, zc[i]);
			zmax = MAX(zmax, zc[i]);
		}
		ck_assert_msg(zmin >= 3 && zmax <= 4, "chunk %u zones %u..%u", c, zmin, zmax);
	}
	/* balance: each backend gets 500 ± 25 % of the 12000 shards */
	for (i = 0; i < 24; i++)
		ck_assert_msg(load[i] > 375 && load[i] < 625, "backend %u has %u", i, load[i]);
	/* exclusion */
	{
		uint64_t ex[4] = { 0xffff };   /* d00..d15 */
		uint16_t o[8];

		ck_assert_uint_eq(zdb_pool_place(fx.pool, "x", 1, 8, ex, o), 8);
		for (i = 0; i < 8; i++)
			ck_assert_uint_ge(o[i], 16);
		ck_assert_uint_eq(zdb_pool_place(fx.pool, "x", 1, 10, ex, o), 8);
	}
	fx_close(&fx);
}
END_TEST

struct chunk_io {
	struct zdb_shard sh[ZDB_MAX_SHARDS];
	char keys[ZDB_MAX_SHARDS][32];
	unsigned char data[ZDB_MAX_SHARDS][4096];
	bool ready, done;
	unsigned tag;
	uint64_t t0, t_ready;
	unsigned busy_at_ready;        /* requests of the op in flight at ready() */
};

static void cio_fill(struct chunk_io *x, unsigned n, unsigned tag)
{
	unsigned i;

	memset(x, 0, sizeof(*x));
	x->tag = tag;
	for (i = 0; i < n; i++) {
		snprintf(x->keys[i], sizeof(x->keys[i]), "c%u.s%u", tag, i);
		x->sh[i].key = x->keys[i];
		x->sh[i].key_len = strlen(x->keys[i]);
		memset(x->data[i], (int)(tag * 31 + i), sizeof(x->data[i]));
		x->sh[i].data = x->data[i];
		x->sh[i].len = sizeof(x->data[i]);
	}
}

static void put_done_cb(struct zdb_chunk_put *op)
{
	((struct chunk_io *)op->priv)->done = true;
}

static void ex_done_cb(struct zdb_req *r)
{
	*(bool *)r->priv = true;
}

static void put_ready_cb(struct zdb_chunk_put *op)
{
	struct chunk_io *x = op->priv;

	x->ready = true;
	x->busy_at_ready = op->pending;
}

static bool verify_cb(struct zdb_chunk_get *op, unsigned i)
{
	const unsigned char *d = op->shards[i].data;
	unsigned tag = ((struct chunk_io *)op->priv)->tag;
	size_t j;

	if (op->shards[i].got != 4096)
		return false;
	for (j = 0; j < 4096; j++)
		if (d[j] != (unsigned char)(tag * 31 + i))
			return false;
	return true;
}

static void get_ready_cb(struct zdb_chunk_get *op)
{
	struct chunk_io *x = op->priv;

	x->ready = true;
	x->t_ready = now_ns();
	x->busy_at_ready = op->inflight;
}

static void get_done_cb(struct zdb_chunk_get *op)
{
	((struct chunk_io *)op->priv)->done = true;
}

static int do_put(struct fixture *fx, struct chunk_io *x, unsigned n, unsigned tag,
		  struct zdb_chunk_put *op)
{
	cio_fill(x, n, tag);
	memset(op, 0, sizeof(*op));
	op->id = &tag;
	op->id_len = sizeof(tag);
	op->n = n;
	op->shards = x->sh;
	op->done = put_done_cb;
	op->priv = x;
	ck_assert_int_eq(zdb_pool_put_chunk(fx->pool, op), 0);
	ck_assert_int_eq(zdb_pool_run_until(fx->pool, &x->done, 30ull * 1000000000), 0);
	return op->result;
}

static int do_get(struct fixture *fx, struct chunk_io *x, unsigned n, unsigned k,
		  struct zdb_chunk_get *op)
{
	unsigned i;

	x->ready = x->done = false;
	for (i = 0; i < n; i++)
		memset(x->data[i], 0, sizeof(x->data[i]));
	memset(op, 0, sizeof(*op));
	op->n = n;
	op->k = k;
	op->shards = x->sh;
	op->verify = verify_cb;
	op->ready = get_ready_cb;
	op->done = get_done_cb;
	op->priv = x;
	x->t0 = now_ns();
	ck_assert_int_eq(zdb_pool_get_chunk(fx->pool, op), 0);
	ck_assert_int_eq(zdb_pool_run_until(fx->pool, &x->ready, 30ull * 1000000000), 0);
	return op->result;
}

static void wait_done(struct fixture *fx, struct chunk_io *x)
{
	ck_assert_int_eq(zdb_pool_run_until(fx->pool, &x->done, 60ull * 1000000000), 0);
}

struct put_one {
	struct zdb_req req;
	bool done;
};

static void put_one_done(struct zdb_req *r)
{
	container_of(r, struct put_one, req)->done = true;
}

/* PUT one key on backend idx through the pool; returns its result. */
static int put_one(struct fixture *fx, unsigned idx)
{
	struct put_one p = { .req = { .op = ZDB_OP_PUT, .key = "k", .key_len = 1,
				      .val = "v", .val_len = 1, .done = put_one_done } };

	zdb_pool_submit(fx->pool, idx, &p.req);
	ck_assert_int_eq(zdb_pool_run_until(fx->pool, &p.done, 30ull * 1000000000), 0);
	return p.req.result;
}

static char *pool_status_text(struct fixture *fx, bool json, const struct zdb_refusal *x,
			      unsigned n)
{
	char *txt = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&txt, &len);

	ck_assert_ptr_nonnull(f);
	zdb_pool_format_status_ext(fx->pool, f, json, x, n);
	ck_assert_int_eq(fclose(f), 0);
	return txt;
}

/* The line of the status table that starts with name (a copy). */
static char *status_line(const char *txt, const char *name)
{
	size_t nl = strlen(name);
	const char *p;

	for (p = txt; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, name, nl) && p[nl] == ' ')
			return strndup(p, strcspn(p, "\n"));
	ck_abort_msg("no status line for %s in:\n%s", name, txt);
	return NULL;
}

/* A backend that answers while up with ENOSPC / EROFS (0-db namespace
 * full, read-only) has its refusals recorded (count, class, time, words);
 * other errors are not refusals; the status merges another pool's records
 * by name (counts add, the newer message wins) and shows only recent ones
 * in the text NOTE column. */
START_TEST(test_pool_refusal)
{
	struct fixture fx;
	struct zdb_fault f = { .fail_permille = 1000, .fail_err = -ENOSPC };
	struct zdb_refusal rf, x[2];
	char *txt, *line;
	uint64_t t0 = now_ns();

	fx_open(&fx, 3, 0, 2, 1);
	zdb_pool_refusal(fx.pool, 1, &rf);
	ck_assert_uint_eq(rf.count, 0);
	ck_assert_str_eq(rf.backend, "d01");

	zdb_pool_set_fault(fx.pool, 1, &f);
	ck_assert_int_eq(put_one(&fx, 1), -ENOSPC);
	zdb_pool_refusal(fx.pool, 1, &rf);
	ck_assert_uint_eq(rf.count, 1);
	ck_assert_int_eq(rf.err, -ENOSPC);
	ck_assert_str_eq(rf.msg, strerror(ENOSPC));
	ck_assert_uint_ge(rf.last_ns, t0);
	f.fail_err = -EROFS;
	zdb_pool_set_fault(fx.pool, 1, &f);
	ck_assert_int_eq(put_one(&fx, 1), -EROFS);
	f.fail_err = 0;                 /* -EIO: an error, not a refusal */
	zdb_pool_set_fault(fx.pool, 1, &f);
	ck_assert_int_eq(put_one(&fx, 1), -EIO);
	zdb_pool_refusal(fx.pool, 1, &rf);
	ck_assert_uint_eq(rf.count, 2);
	ck_assert_int_eq(rf.err, -EROFS);
	ck_assert_str_eq(rf.msg, strerror(EROFS));
	zdb_pool_set_fault(fx.pool, 1, &(struct zdb_fault){ 0 });
	ck_assert_int_eq(put_one(&fx, 0), 0);
	zdb_pool_refusal(fx.pool, 0, &rf);
	ck_assert_uint_eq(rf.count, 0);

	/* merged: d01 gets 5 newer refusals of another pool; d02 4 old ones */
	memset(x, 0, sizeof(x));
	snprintf(x[0].backend, sizeof(x[0].backend), "d01");
	x[0].count = 5;
	x[0].last_ns = now_ns();
	x[0].err = -ENOSPC;
	snprintf(x[0].msg, sizeof(x[0].msg), "No space left on this namespace");
	snprintf(x[1].backend, sizeof(x[1].backend), "d02");
	x[1].count = 4;
	x[1].last_ns = x[0].last_ns - ZDB_REFUSAL_RECENT_NS - 60ull * 1000000000;
	x[1].err = -EROFS;
	snprintf(x[1].msg, sizeof(x[1].msg), "Namespace is in read-only mode");
	txt = pool_status_text(&fx, false, x, 2);
	line = status_line(txt, "d01");
	ck_assert_msg(strstr(line, "refused 7\u00d7 (No space left on this namespace) "),
		      "d01: %s", line);
	ck_assert_msg(strstr(line, " s ago"), "d01: %s", line);
	free(line);
	line = status_line(txt, "d00");
	ck_assert_msg(!strstr(line, "refused"), "d00: %s", line);
	free(line);
	line = status_line(txt, "d02");        /* older than 10 minutes */
	ck_assert_msg(!strstr(line, "refused"), "d02: %s", line);
	free(line);
	free(txt);
	txt = pool_status_text(&fx, true, x, 2);
	ck_assert_msg(strstr(txt, "\"refused\":7,\"refusal\":{\"error\":\"ENOSPC\","
			      "\"message\":\"No space left on this namespace\",\"age_s\":"),
		      "%s", txt);
	ck_assert_msg(strstr(txt, "\"refused\":4,\"refusal\":{\"error\":\"EROFS\","
			      "\"message\":\"Namespace is in read-only mode\",\"age_s\":66"),
		      "%s", txt);
	ck_assert_msg(strstr(txt, "\"refused\":0,\"refusal\":null"), "%s", txt);
	free(txt);
	/* without extra records: the pool's own */
	txt = pool_status_text(&fx, false, NULL, 0);
	line = status_line(txt, "d01");
	ck_assert_msg(strstr(line, "refused 2\u00d7 (Read-only file system) "), "d01: %s", line);
	free(line);
	free(txt);
	fx_close(&fx);
}
END_TEST

START_TEST(test_chunk_faults)
{
	struct fixture fx;
	struct chunk_io *x = calloc(1, sizeof(*x));
	struct zdb_chunk_put *pop = calloc(1, sizeof(*pop));
	struct zdb_chunk_get *gop = calloc(1, sizeof(*gop));
	struct zdb_fault f;
	unsigned i, b0;

	fx_open(&fx, 8, 0, 4, 2);

	/* plain put + get */
	ck_assert_int_eq(do_put(&fx, x, 6, 1, pop), 0);
	ck_assert_uint_eq(pop->stored, 6);
	ck_assert_int_eq(do_get(&fx, x, 6, 4, gop), 0);
	ck_assert_uint_eq(__builtin_popcountll(gop->have), 4);
	wait_done(&fx, x);

	/* a corrupting backend: its shard fails verify, another one is fetched */
	b0 = (unsigned)x->sh[0].backend;
	memset(&f, 0, sizeof(f));
	f.corrupt_permille = 1000;
	zdb_pool_set_fault(fx.pool, b0, &f);
	ck_assert_int_eq(do_get(&fx, x, 6, 4, gop), 0);
	ck_assert_int_eq(x->sh[0].status, -EBADMSG);
	ck_assert(!(gop->have & 1));
	wait_done(&fx, x);

	/* a blackholed backend: ready within the hedge bound, not the 30 s timeout */
	f.corrupt_permille = 0;
	f.blackhole = true;
	zdb_pool_set_fault(fx.pool, b0, &f);
	ck_assert_int_eq(do_get(&fx, x, 6, 4, gop), 0);
	/* ready while the blackholed request is still in flight: a get that
	 * waited for its timeout has nothing in flight at ready().  Not a
	 * wall-clock bound: a loaded CI machine stalls this process for
	 * hundreds of ms at times. */
	printf("test_chunk_faults: hedged get ready after %llu ms\n",
	       (unsigned long long)((x->t_ready - x->t0) / 1000000));
	ck_assert_msg(x->busy_at_ready >= 1, "hedged get: ready only after the blackholed request ended");
	ck_assert_uint_ge(gop->hedged, 1);
	ck_assert(!(gop->have & 1));
	/* done() waits for the blackholed request's 2 s deadline */
	memset(&f, 0, sizeof(f));
	zdb_pool_set_fault(fx.pool, b0, &f);
	wait_done(&fx, x);

	/* a hung backend on put: its shard is hedged to a spare after slow_ns,
	 * the outcome is known long before the 2 s request deadline */
	{
		unsigned tag = 7;
		uint16_t where[6];
		uint64_t t0;

		ck_assert_uint_eq(zdb_pool_place(fx.pool, &tag, sizeof(tag), 6, NULL, where), 6);
		memset(&f, 0, sizeof(f));
		f.blackhole = true;
		zdb_pool_set_fault(fx.pool, where[0], &f);
		cio_fill(x, 6, tag);
		memset(pop, 0, sizeof(*pop));
		pop->id = &tag;
		pop->id_len = sizeof(tag);
		pop->n = 6;
		pop->shards = x->sh;
		pop->ready = put_ready_cb;
		pop->done = put_done_cb;
		pop->priv = x;
		x->ready = false;
		t0 = now_ns();
		ck_assert_int_eq(zdb_pool_put_chunk(fx.pool, pop), 0);
		ck_assert_int_eq(zdb_pool_run_until(fx.pool, &x->ready, 30ull * 1000000000), 0);
		printf("test_chunk_faults: hedged put ready after %llu ms\n",
		       (unsigned long long)((now_ns() - t0) / 1000000));
		ck_assert_int_eq(pop->result, 0);
		ck_assert_uint_ge(pop->nhedged, 1);
		for (i = 0; i < 6; i++)
			ck_assert_int_ne(x->sh[i].backend, where[0]);
		/* ready while the hung request is still in flight (not after its
		 * timeout), and it still holds the op */
		ck_assert_uint_ge(x->busy_at_ready, 1);
		ck_assert(!x->done);
		wait_done(&fx, x);
		memset(&f, 0, sizeof(f));
		zdb_pool_set_fault(fx.pool, where[0], &f);
		ck_assert_int_eq(do_get(&fx, x, 6, 6, gop), 0);  /* every shard readable */
		wait_done(&fx, x);
	}

	/* a slow (not hung) backend: both copies land, the loser is deleted */
	{
		unsigned tag = 8;
		uint16_t where[6];
		struct one_req {
			struct zdb_req r;
			bool done;
		} ex;

		ck_assert_uint_eq(zdb_pool_place(fx.pool, &tag, sizeof(tag), 6, NULL, where), 6);
		memset(&f, 0, sizeof(f));
		f.delay_ns = 500ull * 1000000;
		zdb_pool_set_fault(fx.pool, where[0], &f);
		ck_assert_int_eq(do_put(&fx, x, 6, tag, pop), 0);
		ck_assert_uint_ge(pop->nhedged, 1);
		ck_assert_int_ne(x->sh[0].backend, where[0]);
		memset(&f, 0, sizeof(f));
		zdb_pool_set_fault(fx.pool, where[0], &f);
		memset(&ex, 0, sizeof(ex));
		ex.r.op = ZDB_OP_EXISTS;
		ex.r.key = x->sh[0].key;
		ex.r.key_len = x->sh[0].key_len;
		ex.r.done = ex_done_cb;
		ex.r.priv = &ex.done;
		zdb_pool_submit(fx.pool, where[0], &ex.r);
		ck_assert_int_eq(zdb_pool_run_until(fx.pool, &ex.done, 10ull * 1000000000), 0);
		ck_assert_int_eq(ex.r.result, 0);   /* the late copy was removed */
	}

	/* failing backend on put: shard retried on a spare, all stored */
	f.fail_permille = 1000;
	for (i = 0; i < 8; i++)
		zdb_pool_set_fault(fx.pool, i, &(struct zdb_fault){ 0 });
	zdb_pool_set_fault(fx.pool, 3, &f);
	for (i = 10; i < 20; i++) {
		ck_assert_int_eq(do_put(&fx, x, 6, i, pop), 0);
		for (unsigned s = 0; s < 6; s++)
			ck_assert_int_ne(x->sh[s].backend, 3);
	}

	/* every backend failing except 5: degraded (k+1 = 5 stored) */
	zdb_pool_set_fault(fx.pool, 4, &f);
	zdb_pool_set_fault(fx.pool, 5, &f);
	ck_assert_int_eq(do_put(&fx, x, 6, 30, pop), 1);
	ck_assert_uint_eq(pop->stored, 5);
	ck_assert_int_eq(do_get(&fx, x, 6, 4, gop), 0);
	wait_done(&fx, x);
	/* one more failing: below min_shards → error */
	zdb_pool_set_fault(fx.pool, 6, &f);
	ck_assert_int_lt(do_put(&fx, x, 6, 31, pop), 0);

	/* values above 8 MiB are refused before anything is sent */
	{
		struct zdb_chunk_put big;

		cio_fill(x, 6, 40);
		memset(&big, 0, sizeof(big));
		x->sh[2].len = ZDB_VALUE_MAX + 1;
		big.id = "b";
		big.id_len = 1;
		big.n = 6;
		big.shards = x->sh;
		big.done = put_done_cb;
		big.priv = x;
		ck_assert_int_eq(zdb_pool_put_chunk(fx.pool, &big), -E2BIG);
	}
	fx_close(&fx);
	free(x);
	free(pop);
	free(gop);
}
END_TEST

/* ------------------------------------------------ fake servers ---- */

enum fake_mode {
	FAKE_REDIS,
	FAKE_MALFORMED,     /* GET → garbage type byte */
	FAKE_TRUNCATED,     /* GET → half a bulk, then close */
	FAKE_OVERSIZED,     /* GET → a bulk larger than the caller's buffer */
	FAKE_WRONG_SHAPE,   /* GET → an integer (out of step) */
	FAKE_UNSOLICITED,   /* an extra reply nobody asked for */
	FAKE_ZDB,           /* the zdb dialect */
};

struct fake {
	enum fake_mode mode;
	char path[108];
	int lfd;
	pthread_t th;
	char keys[16][64];
	char vals[16][64];
	size_t vlen[16];
	unsigned nkeys;
	char nonce[16];
	unsigned conns;
	int cur_fd;                 /* the connection being served */
	unsigned send_errors;       /* replies to a client that had closed */
	bool stall_done;
	bool frozen;                /* 0-db NSSET ns freeze 1: every data command refused */
	bool nopw;                  /* NSINFO: the namespace has no password */
	char held[8192];            /* error answers held until "err.go" */
	size_t nheld;
};

/* send(MSG_NOSIGNAL), not write(): a client that gives up on a bad reply
 * closes while the fake may still be writing, and SIGPIPE would kill the
 * test process (it did, once in CI) */
static void wr(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void wrs(int fd, const char *s)
{
	wr(fd, s, strlen(s));
}

static void wr_bulk(int fd, const char *s, size_t n)
{
	char h[32];

	snprintf(h, sizeof(h), "$%zu\r\n", n);
	wrs(fd, h);
	wr(fd, s, n);
	wrs(fd, "\r\n");
}

/* Parse one request array from buf; returns bytes used, 0 if incomplete. */
static size_t parse_req(const char *buf, size_t len, char argv[8][256], size_t *lens,
			unsigned *argc)
{
	size_t off = 0;
	unsigned i, n;
	char *e;

	if (len < 4 || buf[0] != '*')
		return 0;
	n = (unsigned)strtoul(buf + 1, &e, 10);
	if (!(e = memmem(buf, len, "\r\n", 2)))
		return 0;
	off = (size_t)(e - buf) + 2;
	for (i = 0; i < n && i < 8; i++) {
		size_t l;
		char *p;

		if (off >= len || buf[off] != '$')
			return 0;
		l = strtoul(buf + off + 1, &p, 10);
		if (!(p = memmem(buf + off, len - off, "\r\n", 2)))
			return 0;
		off = (size_t)(p - buf) + 2;
		if (off + l + 2 > len)
			return 0;
		memcpy(argv[i], buf + off, MIN(l, 255));
		argv[i][MIN(l, 255)] = 0;
		lens[i] = MIN(l, 255);
		off += l + 2;
	}
	*argc = n;
	return off;
}

static int fake_find(struct fake *f, const char *k)
{
	unsigned i;

	for (i = 0; i < f->nkeys; i++)
		if (!strcmp(f->keys[i], k))
			return (int)i;
	return -1;
}

/* Answer one request; returns false to close the connection. */
static bool fake_answer(struct fake *f, int fd, char argv[8][256], size_t *lens, unsigned argc)
{
	bool user_key = argc >= 2 && strcmp(argv[1], ZDB_CANARY_KEY);
	bool zdb = f->mode == FAKE_ZDB;
	int i;

	if (!strcmp(argv[0], "INFO")) {
		wr_bulk(fd, zdb ? "# server\nserver_name: 0-db (zdb)\nversion: 2.0.7\n"
			: "# Server\r\nredis_version:7.0.0\r\n",
			strlen(zdb ? "# server\nserver_name: 0-db (zdb)\nversion: 2.0.7\n"
			       : "# Server\r\nredis_version:7.0.0\r\n"));
		return true;
	}
	if (zdb && !strcmp(argv[0], "AUTH") && argc == 3 && !strcmp(argv[2], "CHALLENGE")) {
		snprintf(f->nonce, sizeof(f->nonce), "n%08x", (unsigned)rand());
		wrs(fd, "+");
		wrs(fd, f->nonce);
		wrs(fd, "\r\n");
		return true;
	}
	if (zdb && !strcmp(argv[0], "SELECT")) {
		char buf[128], hex[41];
		unsigned char md[20];

		snprintf(buf, sizeof(buf), "%s:%s", f->nonce, "zpass");
		SHA1((unsigned char *)buf, strlen(buf), md);
		for (i = 0; i < 20; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		if (argc == 4 && !strcmp(argv[2], "SECURE") && !strcmp(argv[3], hex))
			wrs(fd, "+OK\r\n");
		else if (argc == 2)
			wrs(fd, "-Namespace protected and private\r\n");
		else
			wrs(fd, "-Access denied\r\n");
		return true;
	}
	if (!strcmp(argv[0], "NSINFO")) {
		/* v2.0.x's field order (zdbd/commands_namespace.c command_nsinfo) */
		char t[512];

		snprintf(t, sizeof(t), "# namespace\nname: nbd\nentries: 7\npublic: no\nworm: no\n"
			 "locked: no\npassword: %s\ndata_size_bytes: 12345\ndata_size_mb: 0.01\n"
			 "data_limits_bytes: 1000000\nindex_size_bytes: 58\nmode: userkey\n",
			 __atomic_load_n(&f->nopw, __ATOMIC_SEQ_CST) ? "no" : "yes");
		wr_bulk(fd, t, strlen(t));
		return true;
	}
	if (!strcmp(argv[0], "PING")) {
		wrs(fd, "+PONG\r\n");
		return true;
	}
	if (zdb && __atomic_load_n(&f->frozen, __ATOMIC_SEQ_CST) &&
	    (!strcmp(argv[0], "GET") || !strcmp(argv[0], "SET") || !strcmp(argv[0], "DEL"))) {
		/* 0-db v2.0.x's exact bytes (zdbd/commands.c command_error_frozen) */
		wrs(fd, "-Namespace is temporarily frozen (read-write disabled)\r\n");
		return true;
	}
	if (!strcmp(argv[0], "SET") && argc == 3 && !strncmp(argv[1], "err.", 4)) {
		/* SET err.X TEXT answers "-TEXT"; the answers are held and all
		 * sent in one write at "err.go", so the client parses them in
		 * one receive, before any request completes */
		if (f->nheld + lens[2] + 3 <= sizeof(f->held)) {
			f->held[f->nheld++] = '-';
			memcpy(f->held + f->nheld, argv[2], lens[2]);
			f->nheld += lens[2];
			memcpy(f->held + f->nheld, "\r\n", 2);
			f->nheld += 2;
		}
		if (!strcmp(argv[1], "err.go")) {
			wr(fd, f->held, f->nheld);
			f->nheld = 0;
		}
		return true;
	}
	if (zdb && !strcmp(argv[0], "GET") && argc == 2 && !strncmp(argv[1], "stall", 5)) {
		char c;

		/* Like a stopped 0-db resumed after the client timed out: it
		 * answers what it had read.  A real 0-db dies of SIGPIPE when
		 * the client has closed the socket meanwhile; the client must
		 * only half-close it, so these sends succeed. */
		while (read(fd, &c, 1) > 0)
			;
		usleep(200 * 1000);
		for (i = 0; i < 2; i++)
			if (send(fd, "$-1\r\n", 5, MSG_NOSIGNAL) < 0)
				__atomic_add_fetch(&f->send_errors, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&f->stall_done, true, __ATOMIC_SEQ_CST);
		return false;
	}
	if (user_key && !strcmp(argv[0], "GET")) {
		switch (f->mode) {
		case FAKE_MALFORMED: wrs(fd, "!garbage\r\n"); return true;
		case FAKE_TRUNCATED: wrs(fd, "$100\r\nabc"); return false;
		case FAKE_OVERSIZED: wrs(fd, "$100000\r\n"); wr(fd, "xxxxxxxx", 8); return true;
		case FAKE_WRONG_SHAPE: wrs(fd, ":1\r\n"); return true;
		default: break;
		}
	}
	if (!strcmp(argv[0], "SET") && argc == 3) {
		i = fake_find(f, argv[1]);
		if (zdb && i >= 0 && f->vlen[i] == lens[2] && !memcmp(f->vals[i], argv[2], lens[2])) {
			wrs(fd, "$-1\r\n");     /* identical: nothing written */
			return true;
		}
		if (i < 0 && f->nkeys < 16)
			i = (int)f->nkeys++;
		if (i >= 0) {
			snprintf(f->keys[i], sizeof(f->keys[i]), "%s", argv[1]);
			memcpy(f->vals[i], argv[2], MIN(lens[2], 64));
			f->vlen[i] = MIN(lens[2], 64);
		}
		if (zdb)
			wr_bulk(fd, argv[1], lens[1]);
		else
			wrs(fd, "+OK\r\n");
		if (f->mode == FAKE_UNSOLICITED && user_key)
			wrs(fd, "+OK\r\n");
		return true;
	}
	if (!strcmp(argv[0], "GET") && argc == 2) {
		i = fake_find(f, argv[1]);
		if (i < 0)
			wrs(fd, "$-1\r\n");
		else
			wr_bulk(fd, f->vals[i], f->vlen[i]);
		return true;
	}
	if (!strcmp(argv[0], "DEL") && argc == 2) {
		i = fake_find(f, argv[1]);
		if (i < 0) {
			wrs(fd, zdb ? "-Key not found\r\n" : ":0\r\n");
		} else {
			f->keys[i][0] = 0;
			wrs(fd, zdb ? "+OK\r\n" : ":1\r\n");
		}
		return true;
	}
	if (!strcmp(argv[0], "EXISTS") && argc == 2) {
		wrs(fd, fake_find(f, argv[1]) >= 0 ? ":1\r\n" : ":0\r\n");
		return true;
	}
	wrs(fd, "-Command not supported\r\n");
	return true;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	static __thread char buf[1 << 16];

	for (;;) {
		int fd = accept(f->lfd, NULL, NULL);
		size_t len = 0;

		if (fd < 0)
			return NULL;
		__atomic_add_fetch(&f->conns, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&f->cur_fd, fd, __ATOMIC_SEQ_CST);
		for (;;) {
			char argv[8][256];
			size_t lens[8], used;
			unsigned argc;
			ssize_t n = read(fd, buf + len, sizeof(buf) - len);

			if (n <= 0)
				break;
			len += (size_t)n;
			while ((used = parse_req(buf, len, argv, lens, &argc)) > 0) {
				bool keep = fake_answer(f, fd, argv, lens, argc);

				memmove(buf, buf + used, len - used);
				len -= used;
				if (!keep)
					goto close_it;
			}
		}
close_it:
		__atomic_store_n(&f->cur_fd, -1, __ATOMIC_SEQ_CST);
		close(fd);
	}
}

/* "Restart the server blank": forget every key, drop the connection. */
static void fake_wipe(struct fake *f)
{
	int fd = __atomic_load_n(&f->cur_fd, __ATOMIC_SEQ_CST);

	__atomic_store_n(&f->nkeys, 0, __ATOMIC_SEQ_CST);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

static struct fake *fake_start(enum fake_mode mode, unsigned n)
{
	struct fake *f = calloc(1, sizeof(*f));

	f->cur_fd = -1;
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	f->mode = mode;
	snprintf(f->path, sizeof(f->path), "%s/fake%u.sock", tmpdir, n);
	strcpy(un.sun_path, f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(f->lfd, 0);
	ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&un, sizeof(un)), 0);
	ck_assert_int_eq(listen(f->lfd, 8), 0);
	ck_assert_int_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
	return f;
}

/* a pool of one redis-kind backend, the fake f (k=1 m=0, 64 in flight),
 * connected */
static struct zdb_pool *fake_pool_open(struct loop *l, struct zdb_pool_cfg *cfg,
				       const struct fake *f)
{
	struct zdb_pool *pool;

	zdb_pool_cfg_defaults(cfg);
	cfg->k = 1;
	cfg->m = 0;
	cfg->min_shards = 1;
	cfg->depth = 64;
	cfg->nbackends = 1;
	snprintf(cfg->backends[0].name, sizeof(cfg->backends[0].name), "r00");
	snprintf(cfg->backends[0].address, sizeof(cfg->backends[0].address), "unix:%s", f->path);
	cfg->backends[0].kind = ZDB_KIND_REDIS;
	ck_assert_int_eq(zdb_pool_open(l, cfg, NULL, &pool), 0);
	ck_assert_int_eq(zdb_pool_wait_connected(pool, 30ull * 1000000000), 0);
	return pool;
}

static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	close(f->lfd);
	pthread_join(f->th, NULL);
	free(f);
}

struct one {
	struct zdb_req r;
	bool done;
};

static void one_done(struct zdb_req *r)
{
	container_of(r, struct one, r)->done = true;
}

static void run_flag(struct loop *l, struct zdb_backend *b, bool *flag)
{
	uint64_t end = now_ns() + 30ull * 1000000000;   /* generous: ASan on a loaded box */

	while (!*flag) {
		ck_assert_msg(now_ns() < end, "timed out");
		loop_run_once(l, 10ull * 1000000);
		if (b->ops->tick)
			b->ops->tick(b, now_ns());
	}
}

static int one_op(struct loop *l, struct zdb_backend *b, enum zdb_op op, const char *key,
		  const char *val, void *buf, size_t buf_len)
{
	struct one o;

	memset(&o, 0, sizeof(o));
	o.r.op = op;
	o.r.key = key;
	o.r.key_len = key ? strlen(key) : 0;
	o.r.val = val;
	o.r.val_len = val ? strlen(val) : 0;
	o.r.buf = buf;
	o.r.buf_len = buf_len;
	o.r.done = one_done;
	b->ops->submit(b, &o.r);
	run_flag(l, b, &o.done);
	return o.r.result;
}

static struct zdb_backend *conn_to(struct loop *l, struct fake *f, const char *pw)
{
	struct zdb_backend_cfg c;
	struct zdb_backend *b;

	memset(&c, 0, sizeof(c));
	snprintf(c.name, sizeof(c.name), "fake-%d", f->mode);
	snprintf(c.address, sizeof(c.address), "unix:%s", f->path);
	c.kind = f->mode == FAKE_ZDB ? ZDB_KIND_ZDB : ZDB_KIND_REDIS;
	if (f->mode == FAKE_ZDB)
		snprintf(c.ns, sizeof(c.ns), "nbd");
	if (pw) {
		snprintf(c.password, sizeof(c.password), "%s", pw);
		c.has_password = true;
	}
	b = zdb_conn_create(l, &c);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(b->ops->start(b), 0);
	return b;
}

static bool stopped_flag;
static void on_stopped(struct zdb_backend *b)
{
	(void)b;
	stopped_flag = true;
}

static void conn_close(struct loop *l, struct zdb_backend *b)
{
	stopped_flag = false;
	b->stopped = on_stopped;
	b->ops->stop(b);
	run_flag(l, b, &stopped_flag);
	b->ops->destroy(b);
}

START_TEST(test_bad_servers)
{
	static const enum fake_mode modes[] = {
		FAKE_MALFORMED, FAKE_TRUNCATED, FAKE_OVERSIZED, FAKE_WRONG_SHAPE,
	};
	struct loop l;
	struct fake *good;
	struct zdb_backend *gb;
	char buf[4096];
	unsigned i;

	mk_tmpdir();
	ck_assert_int_eq(loop_init(&l, 256), 0);
	good = fake_start(FAKE_REDIS, 99);
	gb = conn_to(&l, good, NULL);
	ck_assert_int_eq(one_op(&l, gb, ZDB_OP_PUT, "k1", "hello", NULL, 0), 0);

	for (i = 0; i < ARRAY_SIZE(modes); i++) {
		struct fake *bad = fake_start(modes[i], i);
		struct zdb_backend *bb = conn_to(&l, bad, NULL);
		struct one ob, og;
		bool both = false;

		ck_assert_int_eq(one_op(&l, bb, ZDB_OP_PUT, "k1", "hello", NULL, 0), 0);
		ck_assert_int_eq(bb->state, ZDB_CONN_READY);
		/* a GET on each backend, concurrently */
		memset(&ob, 0, sizeof(ob));
		memset(&og, 0, sizeof(og));
		ob.r.op = og.r.op = ZDB_OP_GET;
		ob.r.key = og.r.key = "k1";
		ob.r.key_len = og.r.key_len = 2;
		ob.r.buf = buf;
		ob.r.buf_len = sizeof(buf);
		og.r.buf = buf + 2048;
		og.r.buf_len = 2048;
		ob.r.done = og.r.done = one_done;
		bb->ops->submit(bb, &ob.r);
		gb->ops->submit(gb, &og.r);
		while (!both) {
			run_flag(&l, gb, &og.done);
			run_flag(&l, bb, &ob.done);
			both = true;
		}
		ck_assert_msg(ob.r.result < 0, "mode %d: bad reply accepted (%d)", modes[i],
			      ob.r.result);
		ck_assert_int_eq(og.r.result, 5);
		ck_assert(!memcmp(buf + 2048, "hello", 5));
		ck_assert_msg(bb->state != ZDB_CONN_READY, "mode %d: connection kept", modes[i]);
		ck_assert_msg(bb->last_error[0], "mode %d: no error recorded", modes[i]);
		ck_assert_int_eq(gb->state, ZDB_CONN_READY);
		/* the good one keeps working */
		ck_assert_int_eq(one_op(&l, gb, ZDB_OP_EXISTS, "k1", NULL, NULL, 0), 1);
		conn_close(&l, bb);
		fake_stop(bad);
	}
	/* unsolicited reply after a SET: the connection is failed */
	{
		struct fake *bad = fake_start(FAKE_UNSOLICITED, 50);
		struct zdb_backend *bb = conn_to(&l, bad, NULL);
		uint64_t end;

		(void)one_op(&l, bb, ZDB_OP_PUT, "k2", "v", NULL, 0);
		end = now_ns() + 30000000000ull;
		while (bb->state == ZDB_CONN_READY && now_ns() < end)
			loop_run_once(&l, 10ull * 1000000);
		ck_assert_int_ne(bb->state, ZDB_CONN_READY);
		ck_assert(strstr(bb->last_error, "unsolicited"));
		conn_close(&l, bb);
		fake_stop(bad);
	}
	conn_close(&l, gb);
	fake_stop(good);
	loop_fini(&l);
	rm_tmpdir();
}
END_TEST

/* Each error answer a server really sends gets its class (errno, refusal
 * or not) and its own words, cleaned and bounded — also when many answers
 * arrive in one receive: the pool's refusal record, read in each request's
 * done(), quotes that request's answer (the connection kept one string per
 * backend, so it quoted the last answer parsed).  The JSON status stays
 * valid UTF-8 whatever bytes a record holds. */
static const struct errcase {
	const char *answer;
	int err;
	bool refused;
	const char *msg;        /* NULL: the answer itself */
} errcases[] = {
	{ "No space left on this namespace", -ENOSPC, true, NULL },
	{ "OOM command not allowed when used memory > 'maxmemory'.", -ENOSPC, true, NULL },
	{ "READONLY You can't write against a read only replica.", -EROFS, true, NULL },
	{ "Namespace is temporarily frozen (read-write disabled)", -EAGAIN, false, NULL },
	{ "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
	  "persist to disk. Commands that may modify the data set are disabled, because this "
	  "instance is configured to report errors during writes if RDB snapshotting fails "
	  "(stop-writes-on-bgsave-error option). Please check the Redis logs for details about "
	  "the RDB error.", -EROFS, true,
	  "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
	  "persist to disk...." },
	{ "Cannot write data right now", -EIO, true, NULL },
	{ "LOADING Redis is loading the dataset in memory", -EAGAIN, false, NULL },
	{ "Cannot write index right now", -EIO, true, NULL },
	{ "Namespace is temporarily locked (read-only)", -EROFS, true, NULL },
	{ "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN "
	  "NOSCRIPT.", -EAGAIN, false, NULL },
	{ "Namespace is protected by worm mode", -EROFS, true, NULL },
	{ "NOREPLICAS Not enough good replicas to write.", -EROFS, true, NULL },
	{ "NOPERM User default has no permissions to run the 'set' command", -EACCES, true,
	  NULL },
	{ "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
	  -EAGAIN, false, NULL },
	{ "ERR max number of clients reached", -EAGAIN, false, NULL },
	{ "WRONGTYPE Operation against a key holding the wrong kind of value", -EIO, false,
	  NULL },
	{ "No space\x01\x1b[2J\x7f\xff\xc3\xa9 left", -ENOSPC, true, "No space??[2J???? left" },
	{ "Payload too big", -E2BIG, false, NULL },
	{ "Access denied", -EACCES, true, NULL },
};

struct errreq {
	struct zdb_req r;
	struct zdb_pool *pool;
	unsigned i;
	char key[16];
	bool done;
	struct zdb_refusal rf;  /* the pool's record as this one completed */
};

static void errreq_done(struct zdb_req *r)
{
	struct errreq *e = container_of(r, struct errreq, r);

	zdb_pool_refusal(e->pool, 0, &e->rf);
	e->done = true;
}

START_TEST(test_error_answers)
{
	const unsigned n = ARRAY_SIZE(errcases);
	struct errreq *e = calloc(n, sizeof(*e));
	struct zdb_pool_cfg *cfg = calloc(1, sizeof(*cfg));
	struct zdb_pool *pool;
	struct zdb_refusal rf, x;
	struct fake *f;
	struct loop l;
	uint64_t refusals = 0;
	char *txt = NULL;
	size_t len = 0;
	FILE *out;
	unsigned i, last = 0;
	bool all;

	mk_tmpdir();
	ck_assert_int_eq(loop_init(&l, 256), 0);
	f = fake_start(FAKE_REDIS, 7);
	pool = fake_pool_open(&l, cfg, f);

	for (i = 0; i < n; i++) {
		e[i].pool = pool;
		e[i].i = i;
		snprintf(e[i].key, sizeof(e[i].key), i + 1 < n ? "err.%u" : "err.go", i);
		e[i].r.op = ZDB_OP_PUT;
		e[i].r.key = e[i].key;
		e[i].r.key_len = strlen(e[i].key);
		e[i].r.val = errcases[i].answer;
		e[i].r.val_len = strlen(errcases[i].answer);
		e[i].r.done = errreq_done;
		zdb_pool_submit(pool, 0, &e[i].r);
	}
	do {
		loop_run_once(&l, 10ull * 1000000);
		for (all = true, i = 0; i < n; i++)
			all &= e[i].done;
	} while (!all);
	for (i = 0; i < n; i++) {
		const struct errcase *c = &errcases[i];
		const char *want = c->msg ? c->msg : c->answer;

		ck_assert_msg(e[i].r.result == c->err, "'%s': %d, want %d", c->answer,
			      e[i].r.result, c->err);
		ck_assert_msg(e[i].r.refused == c->refused, "'%s': refused %d", c->answer,
			      e[i].r.refused);
		ck_assert_msg(!strcmp(e[i].r.msg, want), "'%s': msg '%s'", c->answer, e[i].r.msg);
		ck_assert_uint_lt(strlen(e[i].r.msg), ZDB_MSG_MAX);
		if (c->refused) {
			refusals++;
			last = i;
			ck_assert_msg(!strcmp(e[i].rf.msg, want), "record at '%s' quotes '%s'",
				      c->answer, e[i].rf.msg);
			ck_assert_int_eq(e[i].rf.err, c->err);
		}
	}
	zdb_pool_refusal(pool, 0, &rf);
	ck_assert_uint_eq(rf.count, refusals);
	ck_assert_str_eq(rf.msg, errcases[last].msg ? errcases[last].msg : errcases[last].answer);
	ck_assert_int_eq(zdb_pool_backend(pool, 0)->state, ZDB_CONN_READY);

	/* JSON: raw bytes of a record come out escaped and valid UTF-8 */
	memset(&x, 0, sizeof(x));
	snprintf(x.backend, sizeof(x.backend), "r00");
	x.count = 1;
	x.last_ns = now_ns();
	x.err = -EIO;
	snprintf(x.msg, sizeof(x.msg), "a\x01\"\\\x7f\xff\xc3\xa9\xe2\x82\xac\xed\xa0\x80\xc3");
	out = open_memstream(&txt, &len);
	ck_assert_ptr_nonnull(out);
	zdb_pool_format_status_ext(pool, out, true, &x, 1);
	ck_assert_int_eq(fclose(out), 0);
	ck_assert_msg(strstr(txt, "\"message\":\"a\\u0001\\\"\\\\\\u007f\\ufffd\xc3\xa9\xe2\x82\xac"
			      "\\ufffd\\ufffd\\ufffd\\ufffd\","), "%s", txt);
	free(txt);

	zdb_pool_close(pool);
	while (!zdb_pool_closed(pool))
		loop_run_once(&l, 20ull * 1000000);
	zdb_pool_free(pool);
	fake_stop(f);
	loop_fini(&l);
	free(cfg);
	free(e);
	rm_tmpdir();
}
END_TEST

/* 0-db answers "namespace is not available anymore" when its namespace
 * was deleted under the connection, which then fails and reconnects: the
 * requests pipelined behind that answer were never answered, so they must
 * not come back -ENOENT (a GET's "no such key": a scrub counts the shard
 * missing and rewrites it, the pool counts the answer as a success). */
START_TEST(test_ns_gone_pipelined)
{
	static const char *answers[3] = {
		"Your active namespace is not available anymore (probably removed).",
		"x", "y" };
	static const char *keys[3] = { "err.0", "err.1", "err.go" };
	struct errreq e[3];
	struct zdb_pool_cfg *cfg = calloc(1, sizeof(*cfg));
	struct zdb_pool *pool;
	struct fake *f;
	struct loop l;
	unsigned i;

	memset(e, 0, sizeof(e));
	mk_tmpdir();
	ck_assert_int_eq(loop_init(&l, 256), 0);
	f = fake_start(FAKE_REDIS, 8);
	pool = fake_pool_open(&l, cfg, f);
	for (i = 0; i < 3; i++) {
		e[i].pool = pool;
		snprintf(e[i].key, sizeof(e[i].key), "%s", keys[i]);
		e[i].r.op = ZDB_OP_PUT;
		e[i].r.key = e[i].key;
		e[i].r.key_len = strlen(e[i].key);
		e[i].r.val = answers[i];
		e[i].r.val_len = strlen(answers[i]);
		e[i].r.done = errreq_done;
		zdb_pool_submit(pool, 0, &e[i].r);
	}
	while (!e[0].done || !e[1].done || !e[2].done)
		loop_run_once(&l, 10ull * 1000000);
	ck_assert_int_lt(e[0].r.result, 0);
	for (i = 1; i < 3; i++)
		ck_assert_msg(e[i].r.result < 0 && e[i].r.result != -ENOENT,
			      "request %u behind the answer: %d", i, e[i].r.result);

	zdb_pool_close(pool);
	while (!zdb_pool_closed(pool))
		loop_run_once(&l, 20ull * 1000000);
	zdb_pool_free(pool);
	fake_stop(f);
	loop_fini(&l);
	free(cfg);
	rm_tmpdir();
}
END_TEST

static int last_event;
static unsigned saw_emptied;

static void on_event_cb(struct zdb_backend *b, int ev)
{
	(void)b;
	last_event = ev;
	saw_emptied += ev == ZDB_EV_EMPTIED;
}

START_TEST(test_zdb_dialect_fake)
{
	struct loop l;
	struct fake *f;
	struct zdb_backend *b;
	struct zdb_info info;
	char buf[64];

	mk_tmpdir();
	ck_assert_int_eq(loop_init(&l, 256), 0);
	f = fake_start(FAKE_ZDB, 1);

	/* wrong password: a clear, secret-free error naming the cause */
	b = conn_to(&l, f, "wrong-pass");
	{
		uint64_t end = now_ns() + 30000000000ull;

		while (b->state != ZDB_CONN_FATAL && now_ns() < end)
			loop_run_once(&l, 10ull * 1000000);
	}
	ck_assert_int_eq(b->state, ZDB_CONN_FATAL);
	ck_assert_msg(strstr(b->last_error, "wrong password"), "%s", b->last_error);
	ck_assert(!strstr(b->last_error, "wrong-pass"));
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, "x", NULL, buf, sizeof(buf)), -EACCES);
	{
		/* a FATAL backend is down, not refusing while up: the pool must
		 * not record this -EACCES as a refusal (zdb_req.refused) */
		struct one o = { .r = { .op = ZDB_OP_DEL, .key = "x", .key_len = 1,
					.done = one_done, .refused = true } };

		b->ops->submit(b, &o.r);
		run_flag(&l, b, &o.done);
		ck_assert_int_eq(o.r.result, -EACCES);
		ck_assert(!o.r.refused);
	}
	conn_close(&l, b);

	b = conn_to(&l, f, "zpass");
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_PING, NULL, NULL, NULL, 0), 0);
	ck_assert_int_eq(b->dialect, ZDB_DIALECT_ZDB);
	ck_assert(b->canary_missing);   /* fresh fake: canary written now */
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_PUT, "key", "value", NULL, 0), 0);   /* key echoed */
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_PUT, "key", "value", NULL, 0), 0);   /* $-1 */
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, "key", NULL, buf, sizeof(buf)), 5);
	ck_assert(!memcmp(buf, "value", 5));
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_EXISTS, "key", NULL, NULL, 0), 1);
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_DEL, "key", NULL, NULL, 0), 0);
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_DEL, "key", NULL, NULL, 0), 0);      /* -Key not found */
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, "nokey", NULL, buf, sizeof(buf)), -ENOENT);
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_INFO, NULL, NULL, &info, sizeof(info)), 0);
	ck_assert_uint_eq(info.used_bytes, 12345);
	ck_assert_uint_eq(info.limit_bytes, 1000000);
	ck_assert_uint_eq(info.entries, 7);
	ck_assert(!b->ns_unprotected);
	/* the namespace lost its password (NSSET nbd password *): 0-db still
	 * grants SELECT nbd SECURE, only NSINFO says it is open */
	__atomic_store_n(&f->nopw, true, __ATOMIC_SEQ_CST);
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_INFO, NULL, NULL, &info, sizeof(info)), 0);
	ck_assert(b->ns_unprotected);
	__atomic_store_n(&f->nopw, false, __ATOMIC_SEQ_CST);
	ck_assert_int_eq(one_op(&l, b, ZDB_OP_INFO, NULL, NULL, &info, sizeof(info)), 0);
	ck_assert(!b->ns_unprotected);
	/* key and value limits are enforced before sending */
	{
		char longkey[300];
		char *big = malloc(ZDB_VALUE_MAX + 2);

		memset(longkey, 'k', sizeof(longkey));
		longkey[299] = 0;
		memset(big, 'v', ZDB_VALUE_MAX + 1);
		big[ZDB_VALUE_MAX + 1] = 0;
		ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, longkey, NULL, buf, sizeof(buf)), -EINVAL);
		ck_assert_int_eq(one_op(&l, b, ZDB_OP_PUT, "k", big, NULL, 0), -E2BIG);
		free(big);
	}
	ck_assert_int_eq(b->state, ZDB_CONN_READY);

	/* the server comes back empty: noticed through the canary */
	{
		uint64_t end = now_ns() + 30000000000ull;
		uint64_t connects = b->connects;

		ck_assert_uint_eq(b->emptied, 0);
		b->on_event = on_event_cb;
		last_event = 0;
		fake_wipe(f);
		while ((b->connects == connects || b->state != ZDB_CONN_READY) && now_ns() < end) {
			loop_run_once(&l, 10ull * 1000000);
			b->ops->tick(b, now_ns());
		}
		ck_assert_int_eq(b->state, ZDB_CONN_READY);
		ck_assert_uint_eq(b->emptied, 1);
		ck_assert(b->canary_missing);
		ck_assert_int_eq(last_event, ZDB_EV_UP);
		ck_assert_uint_eq(saw_emptied, 1);
		/* and a plain reconnect (same data) is not "emptied" */
		connects = b->connects;
		shutdown(__atomic_load_n(&f->cur_fd, __ATOMIC_SEQ_CST), SHUT_RDWR);
		while ((b->connects == connects || b->state != ZDB_CONN_READY) && now_ns() < end) {
			loop_run_once(&l, 10ull * 1000000);
			b->ops->tick(b, now_ns());
		}
		ck_assert_int_eq(b->state, ZDB_CONN_READY);
		ck_assert_uint_eq(b->emptied, 1);
		ck_assert(!b->canary_missing);
	}
	/* a frozen namespace (0-db maintenance) fails requests with an error,
	 * never "missing"; at reconnect it is a transient, named failure (was
	 * "unexpected handshake reply"), and the backend comes back once thawed */
	{
		uint64_t end = now_ns() + 30000000000ull;
		uint64_t connects = b->connects;

		ck_assert_int_eq(one_op(&l, b, ZDB_OP_PUT, "fz", "v", NULL, 0), 0);
		__atomic_store_n(&f->frozen, true, __ATOMIC_SEQ_CST);
		ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, "fz", NULL, buf, sizeof(buf)), -EAGAIN);
		ck_assert_msg(strstr(b->last_error, "frozen"), "%s", b->last_error);
		shutdown(__atomic_load_n(&f->cur_fd, __ATOMIC_SEQ_CST), SHUT_RDWR);
		while (!(b->state != ZDB_CONN_READY && strstr(b->last_error, "namespace is frozen")) &&
		       now_ns() < end) {
			loop_run_once(&l, 10ull * 1000000);
			b->ops->tick(b, now_ns());
		}
		ck_assert_msg(strstr(b->last_error, "namespace is frozen"), "%s", b->last_error);
		ck_assert(!strstr(b->last_error, "unexpected"));
		ck_assert_int_ne(b->state, ZDB_CONN_FATAL);
		__atomic_store_n(&f->frozen, false, __ATOMIC_SEQ_CST);
		while ((b->connects == connects || b->state != ZDB_CONN_READY) && now_ns() < end) {
			loop_run_once(&l, 10ull * 1000000);
			b->ops->tick(b, now_ns());
		}
		ck_assert_int_eq(b->state, ZDB_CONN_READY);
		ck_assert_int_eq(one_op(&l, b, ZDB_OP_GET, "fz", NULL, buf, sizeof(buf)), 1);
	}
	/* requests time out on a server that does not answer: the teardown
	 * must not close the socket before the server answered (0-db would
	 * die of SIGPIPE) — the late replies are sent without error */
	{
		struct one s1, s2;
		uint64_t end = now_ns() + 30000000000ull;

		memset(&s1, 0, sizeof(s1));
		memset(&s2, 0, sizeof(s2));
		s1.r.op = s2.r.op = ZDB_OP_GET;
		s1.r.key = "stall1";
		s2.r.key = "stall2";
		s1.r.key_len = s2.r.key_len = 6;
		s1.r.buf = s2.r.buf = buf;
		s1.r.buf_len = s2.r.buf_len = sizeof(buf);
		s1.r.timeout_ns = s2.r.timeout_ns = 300ull * 1000000;
		s1.r.done = s2.r.done = one_done;
		b->ops->submit(b, &s1.r);
		b->ops->submit(b, &s2.r);
		run_flag(&l, b, &s1.done);
		run_flag(&l, b, &s2.done);
		ck_assert_int_eq(s1.r.result, -ETIMEDOUT);
		while (!__atomic_load_n(&f->stall_done, __ATOMIC_SEQ_CST) && now_ns() < end) {
			loop_run_once(&l, 10ull * 1000000);
			b->ops->tick(b, now_ns());
		}
		ck_assert(f->stall_done);
		ck_assert_uint_eq(f->send_errors, 0);
	}
	conn_close(&l, b);
	fake_stop(f);
	loop_fini(&l);
	rm_tmpdir();
}
END_TEST

static Suite *zdb_suite(void)
{
	Suite *s = suite_create("zdb");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_resp_parse);
	tcase_add_test(tc, test_resp_encode);
	tcase_add_test(tc, test_config_errors);
	tcase_add_test(tc, test_config_ok);
	tcase_add_test(tc, test_place);
	tcase_add_test(tc, test_dir_tmp_sweep);
	tcase_add_test(tc, test_chunk_faults);
	tcase_add_test(tc, test_pool_refusal);
	tcase_add_test(tc, test_bad_servers);
	tcase_add_test(tc, test_zdb_dialect_fake);
	tcase_add_test(tc, test_error_answers);
	tcase_add_test(tc, test_ns_gone_pipelined);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(zdb_suite());
}
