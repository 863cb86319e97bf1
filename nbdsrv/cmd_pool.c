/*
 * cmd_pool.c — `nbdsrv pool init|status|check --config FILE`.
 *
 *   status  connect to every backend (through the pool, as the daemon does),
 *           ask for capacity (NSINFO / INFO), print the status table (or
 *           JSON with --json) — the same formatter the daemon's `status`
 *           uses.  Exit 0 when every backend is up, 1 otherwise; each
 *           backend that is not is also named on stderr with its error.
 *   check   status, then a write / read-back / delete of a 4 KiB probe on
 *           every backend.  Exit 0 only if every probe round-trips; a failure
 *           quotes the server's answer ("refused: " first when it is a
 *           refusal, zdb.h zdb_refusal).
 *   init    on zdb backends, create the namespace (NSNEW; an existing one
 *           is fine), set its password, make it private (public 0) and
 *           user-keyed (mode user), logged in as admin when
 *           --admin-password-file is given.  Redis backends are only checked
 *           for reachability.  This runs once, before the daemon: it uses a
 *           plain blocking socket per backend with 5 s timeouts and the same
 *           RESP encoder/parser as the pool.
 *
 * No password is ever printed: errors come from the backend's last_error,
 * which the client builds without secrets.
 */
#include "nbdsrv/cmd.h"
#include "zdb/zdb.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct pool_cli {
	const char *config;
	const char *admin_pw_file;
	bool json;
	struct zdb_pool_cfg *cfg;
	struct loop loop;
	struct zdb_pool *pool;
};

static void pool_usage(FILE *f)
{
	fprintf(f,
		"usage: nbdsrv pool status --config FILE [--json]\n"
		"       nbdsrv pool check  --config FILE\n"
		"       nbdsrv pool init   --config FILE [--admin-password-file FILE]\n");
}

static int cli_open(struct pool_cli *c)
{
	struct zdb_pool_opts o = { 0 };
	int r;

	r = loop_init(&c->loop, 1024);
	if (r < 0) {
		fprintf(stderr, "nbdsrv pool: io_uring: %s\n", strerror(-r));
		return r;
	}
	r = zdb_pool_open(&c->loop, c->cfg, &o, &c->pool);
	if (r < 0) {
		fprintf(stderr, "nbdsrv pool: cannot open the pool: %s\n", strerror(-r));
		loop_fini(&c->loop);
		return r;
	}
	zdb_pool_wait_connected(c->pool, c->cfg->connect_timeout_ns * 2 + 1000000000ull);
	return 0;
}

static void cli_close(struct pool_cli *c)
{
	if (!c->pool)
		return;
	zdb_pool_close(c->pool);
	while (!zdb_pool_closed(c->pool))
		loop_run_once(&c->loop, 50ull * 1000000);
	zdb_pool_free(c->pool);
	c->pool = NULL;
	loop_fini(&c->loop);
}

/* Name every backend that is not up on stderr; returns how many. */
static unsigned cli_report_down(struct pool_cli *c)
{
	unsigned i, bad = 0;

	for (i = 0; i < zdb_pool_size(c->pool); i++) {
		struct zdb_backend *b = zdb_pool_backend(c->pool, i);

		if (b->state == ZDB_CONN_READY)
			continue;
		bad++;
		fprintf(stderr, "nbdsrv pool: backend %s (%s): %s\n", b->cfg.name, b->cfg.address,
			b->last_error[0] ? b->last_error : zdb_conn_state_name(b->state));
	}
	return bad;
}

static int cli_status(struct pool_cli *c)
{
	unsigned bad;

	if (cli_open(c) < 0)
		return 1;
	zdb_pool_refresh_info(c->pool, 3000ull * 1000000);
	zdb_pool_format_status(c->pool, stdout, c->json);
	bad = cli_report_down(c);
	cli_close(c);
	return bad ? 1 : 0;
}

struct probe {
	struct zdb_req r;
	bool done;
};

static void probe_done(struct zdb_req *r)
{
	container_of(r, struct probe, r)->done = true;
}

/* One request to backend idx; its result, and in why (ZDB_MSG_MAX bytes)
 * "refused: " or "" and the server's words when it answered an error. */
static int probe_op(struct pool_cli *c, unsigned idx, enum zdb_op op, const char *key,
		    const void *val, size_t len, void *buf, size_t cap, char *why)
{
	struct probe p;

	memset(&p, 0, sizeof(p));
	p.r.op = op;
	p.r.key = key;
	p.r.key_len = strlen(key);
	p.r.val = val;
	p.r.val_len = len;
	p.r.buf = buf;
	p.r.buf_len = cap;
	p.r.done = probe_done;
	zdb_pool_submit(c->pool, idx, &p.r);
	if (zdb_pool_run_until(c->pool, &p.done, 30ull * 1000000000) < 0)
		return -ETIMEDOUT;   /* cannot happen: requests have deadlines */
	snprintf(why, ZDB_MSG_MAX + 16, "%s%s", p.r.refused ? "refused: " : "", p.r.msg);
	return p.r.result;
}

static int cli_check(struct pool_cli *c)
{
	unsigned char val[4096], back[4096];
	unsigned i, bad = 0;
	char key[64], why[ZDB_MSG_MAX + 16] = "";

	if (cli_open(c) < 0)
		return 1;
	for (i = 0; i < sizeof(val); i++)
		val[i] = (unsigned char)(i * 7 + (unsigned)getpid());
	snprintf(key, sizeof(key), "nbdsrv.check.%d.%llu", (int)getpid(),
		 (unsigned long long)now_ns());
	for (i = 0; i < zdb_pool_size(c->pool); i++) {
		struct zdb_backend *b = zdb_pool_backend(c->pool, i);
		const char *what = "ok";
		int r;

		if (b->state != ZDB_CONN_READY) {
			printf("%-12s FAIL  %s\n", b->cfg.name,
			       b->last_error[0] ? b->last_error : zdb_conn_state_name(b->state));
			bad++;
			continue;
		}
		if ((r = probe_op(c, i, ZDB_OP_PUT, key, val, sizeof(val), NULL, 0, why)) < 0)
			what = "write failed";
		else if ((r = probe_op(c, i, ZDB_OP_GET, key, NULL, 0, back, sizeof(back), why)) !=
			 (int)sizeof(val) || memcmp(back, val, sizeof(val)))
			what = r < 0 ? "read failed" : "read back different bytes";
		else if ((r = probe_op(c, i, ZDB_OP_DEL, key, NULL, 0, NULL, 0, why)) < 0)
			what = "delete failed";
		if (strcmp(what, "ok")) {
			printf("%-12s FAIL  %s%s%s%s%s%s\n", b->cfg.name, what, r < 0 ? ": " : "",
			       r < 0 ? strerror(-r) : "", why[0] ? " (" : "", why, why[0] ? ")" : "");
			bad++;
		} else {
			printf("%-12s ok    %s %s\n", b->cfg.name, zdb_dialect_name(b->dialect),
			       b->canary_missing ? "(canary was missing: new or emptied backend)" : "");
		}
	}
	printf("%u of %u backends passed\n", zdb_pool_size(c->pool) - bad, zdb_pool_size(c->pool));
	cli_close(c);
	return bad ? 1 : 0;
}

/* ---- init: blocking admin client ---- */

struct admin {
	int fd;
	char buf[8192];
	size_t len;
	struct resp_reply rp;
	char text[256];         /* last reply as text (simple/error/bulk head) */
};

static int admin_cmd(struct admin *a, unsigned argc, const char *const *argv)
{
	char out[1024];
	size_t lens[8];
	unsigned i;
	int n;

	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	n = resp_encode(out, sizeof(out), argc, (const void *const *)argv, lens);
	if (n < 0)
		return n;
	if (send(a->fd, out, (size_t)n, MSG_NOSIGNAL) != n) {
		explicit_bzero(out, sizeof(out));
		return -EIO;
	}
	explicit_bzero(out, sizeof(out));
	a->len = 0;
	for (;;) {
		ssize_t got;

		n = resp_parse(a->buf, a->len, sizeof(a->buf) - 64, &a->rp);
		if (n > 0)
			break;
		if (n < 0)
			return n;
		if (a->len == sizeof(a->buf))
			return -EMSGSIZE;
		got = recv(a->fd, a->buf + a->len, sizeof(a->buf) - a->len, 0);
		if (got <= 0)
			return got == 0 ? -ECONNRESET : -errno;
		a->len += (size_t)got;
	}
	snprintf(a->text, sizeof(a->text), "%.*s",
		 (int)MIN(a->rp.len, sizeof(a->text) - 1), a->rp.str ? a->rp.str : "");
	for (i = 0; a->text[i]; i++)
		if ((unsigned char)a->text[i] < 32)
			a->text[i] = ' ';
	return 0;
}

static int admin_connect(struct admin *a, const char *addr)
{
	struct sockaddr_storage sa;
	struct timeval tv = { .tv_sec = 5 };
	socklen_t len;
	int r = zdb_address_resolve(addr, &sa, &len);

	if (r < 0)
		return r;
	a->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (a->fd < 0)
		return -errno;
	setsockopt(a->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(a->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(a->fd, (struct sockaddr *)&sa, len) < 0) {
		r = -errno;
		close(a->fd);
		a->fd = -1;
		return r;
	}
	return 0;
}

static bool admin_err(struct admin *a)
{
	return a->rp.type == RESP_ERROR;
}

static int init_zdb(const struct zdb_backend_cfg *b, const char *admin_pw)
{
	struct admin a = { .fd = -1 };
	const char *ns = b->ns[0] ? b->ns : "default";
	int r;

	r = admin_connect(&a, b->address);
	if (r < 0) {
		fprintf(stderr, "nbdsrv pool init: %s (%s): cannot connect: %s\n", b->name,
			b->address, strerror(-r));
		return -1;
	}
#define CMD(...) do { \
		const char *const argv_[] = { __VA_ARGS__ }; \
		r = admin_cmd(&a, ARRAY_SIZE(argv_), argv_); \
		if (r < 0) { \
			fprintf(stderr, "nbdsrv pool init: %s: %s: %s\n", b->name, argv_[0], \
				strerror(-r)); \
			goto exit; \
		} \
	} while (0)
	CMD("INFO");
	if (a.rp.type != RESP_BULK || !memmem(a.rp.str, a.rp.len, "0-db", 4)) {
		fprintf(stderr, "nbdsrv pool init: %s: not a 0-db server (configured as zdb)\n",
			b->name);
		r = -1;
		goto exit;
	}
	if (admin_pw) {
		CMD("AUTH", "SECURE", "CHALLENGE");
		if (!admin_err(&a) && a.rp.type == RESP_SIMPLE) {
			char buf[512], hex[41];
			unsigned char md[SHA_DIGEST_LENGTH];
			int i, n = snprintf(buf, sizeof(buf), "%s:%s", a.text, admin_pw);

			SHA1((unsigned char *)buf, (size_t)n, md);
			explicit_bzero(buf, sizeof(buf));
			for (i = 0; i < SHA_DIGEST_LENGTH; i++)
				snprintf(hex + 2 * i, 3, "%02x", md[i]);
			CMD("AUTH", "SECURE", hex);
		} else {
			CMD("AUTH", admin_pw);
		}
		if (admin_err(&a) && !strstr(a.text, "disabled")) {
			fprintf(stderr, "nbdsrv pool init: %s: admin login refused: %s\n", b->name,
				a.text);
			r = -1;
			goto exit;
		}
	}
	if (!strcmp(ns, "default")) {
		printf("%-12s default namespace: nothing to create (it cannot be protected)\n",
		       b->name);
		r = 0;
		goto exit;
	}
	CMD("NSNEW", ns);
	if (admin_err(&a) && !strstr(a.text, "not available")) {
		fprintf(stderr, "nbdsrv pool init: %s: NSNEW %s: %s\n", b->name, ns, a.text);
		r = -1;
		goto exit;
	}
	printf("%-12s namespace %s %s\n", b->name, ns, admin_err(&a) ? "exists" : "created");
	if (b->has_password) {
		CMD("NSSET", ns, "password", b->password);
		if (admin_err(&a)) {
			fprintf(stderr, "nbdsrv pool init: %s: setting the namespace password: %s\n",
				b->name, a.text);
			r = -1;
			goto exit;
		}
	}
	CMD("NSSET", ns, "public", "0");
	if (admin_err(&a)) {
		fprintf(stderr, "nbdsrv pool init: %s: NSSET public 0: %s\n", b->name, a.text);
		r = -1;
		goto exit;
	}
	CMD("NSSET", ns, "mode", "user");
	if (admin_err(&a))
		fprintf(stderr, "nbdsrv pool init: %s: warning: NSSET mode user: %s (the server's mode applies)\n",
			b->name, a.text);
	r = 0;
#undef CMD
exit:
	close(a.fd);
	return r;
}

static int cli_init(struct pool_cli *c)
{
	char *pw = NULL;
	size_t pwlen = 0;
	unsigned i, bad = 0, nredis = 0;
	int r;

	if (c->admin_pw_file) {
		r = config_read_file(c->admin_pw_file, 4096, &pw, &pwlen);
		if (r < 0) {
			fprintf(stderr, "nbdsrv pool init: %s: %s\n", c->admin_pw_file, strerror(-r));
			return 1;
		}
		while (pwlen && (pw[pwlen - 1] == '\n' || pw[pwlen - 1] == '\r'))
			pw[--pwlen] = 0;
		if (!pwlen || pwlen > 128) {
			fprintf(stderr, "nbdsrv pool init: %s: want one line of 1 to 128 bytes\n",
				c->admin_pw_file);
			free(pw);
			return 1;
		}
	}
	for (i = 0; i < c->cfg->nbackends; i++) {
		const struct zdb_backend_cfg *b = &c->cfg->backends[i];

		if (b->kind == ZDB_KIND_ZDB)
			bad += init_zdb(b, pw) < 0;
		else
			nredis++;
	}
	if (pw) {
		explicit_bzero(pw, pwlen);
		free(pw);
	}
	if (nredis) {
		/* redis and dir: nothing to create; they must be reachable */
		if (cli_open(c) < 0)
			return 1;
		for (i = 0; i < zdb_pool_size(c->pool); i++) {
			struct zdb_backend *b = zdb_pool_backend(c->pool, i);

			if (b->cfg.kind == ZDB_KIND_ZDB)
				continue;
			if (b->state == ZDB_CONN_READY) {
				printf("%-12s reachable (%s)\n", b->cfg.name, zdb_dialect_name(b->dialect));
			} else {
				fprintf(stderr, "nbdsrv pool init: %s (%s): %s\n", b->cfg.name,
					b->cfg.address, b->last_error[0] ? b->last_error : "unreachable");
				bad++;
			}
		}
		cli_close(c);
	}
	return bad ? 1 : 0;
}

int cmd_pool(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "admin-password-file", required_argument, NULL, 'a' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct pool_cli c = { 0 };
	const char *sub;
	char err[600];
	int o, rc;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		pool_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	sub = argv[1];
	optind = 1;
	while ((o = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
		switch (o) {
		case 'c': c.config = optarg; break;
		case 'j': c.json = true; break;
		case 'a': c.admin_pw_file = optarg; break;
		case 'v': log_set_level(LOG_LEVEL_DEBUG); break;
		case 'h': pool_usage(stdout); return 0;
		default: pool_usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "nbdsrv pool: unexpected argument '%s'\n", argv[optind + 1]);
		return 2;
	}
	if (!c.config) {
		fprintf(stderr, "nbdsrv pool %s: --config FILE is required\n", sub);
		return 2;
	}
	if (strcmp(sub, "status") && strcmp(sub, "check") && strcmp(sub, "init")) {
		fprintf(stderr, "nbdsrv pool: unknown subcommand '%s'\n", sub);
		pool_usage(stderr);
		return 2;
	}
	c.cfg = malloc(sizeof(*c.cfg));
	if (!c.cfg)
		return 1;
	if (zdb_pool_cfg_load(c.config, c.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		free(c.cfg);
		return 1;
	}
	if (!strcmp(sub, "status")) {
		/* the table is the report: keep transport warnings off stderr */
		if (log_get_level() < LOG_LEVEL_DEBUG)
			log_set_level(LOG_LEVEL_ERROR);
		rc = cli_status(&c);
	} else if (!strcmp(sub, "check")) {
		rc = cli_check(&c);
	} else {
		rc = cli_init(&c);
	}
	zdb_pool_cfg_wipe(c.cfg);
	free(c.cfg);
	return rc;
}
