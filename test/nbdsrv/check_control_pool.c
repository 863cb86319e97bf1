/*
 * check_control_pool.c — the control socket's asynchronous path in-process:
 * a pool of two `dir` backends on its own thread (pool_thread.c), a control
 * socket on the test's loop, and pipelined requests.  `status` waits for the
 * pool thread's answer; the requests sent behind it in the same write must
 * be answered after it, in order, one line each; a client that hangs up
 * while its status is pending must not crash or leak; stopping waits for it.
 */
#include "nbdsrv/control.h"
#include "nbdsrv/pool_thread.h"
#include "nbdsrv/server.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const struct export_ops fake_ops = { .kind = "fake" };
static struct export fake = { .ops = &fake_ops, .name = (char *)"disk", .size = 4096 };

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Send req, half-close, run the loop until the server closes; return the
 * whole answer (malloc'd). */
static char *roundtrip(struct loop *l, const char *path, const char *req)
{
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap);
	int fd = connect_to(path), i;

	ck_assert_int_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	shutdown(fd, SHUT_WR);
	for (i = 0; i < 4000; i++) {
		ssize_t n;

		loop_run_once(l, 5 * 1000 * 1000);
		n = recv(fd, out + len, cap - len - 1, MSG_DONTWAIT);
		if (n == 0)
			break;
		if (n > 0)
			len += (size_t)n;
		ck_assert_uint_lt(len, cap - 1);
	}
	ck_assert_int_lt(i, 4000);
	out[len] = '\0';
	close(fd);
	return out;
}

START_TEST(test_status_pending_in_order)
{
	struct server_stats stats = { 0 };
	struct export *exports[] = { &fake };
	struct server srv = { .exports = exports, .n_exports = 1, .stats = &stats };
	struct zdb_pool_cfg *cfg = calloc(1, sizeof(*cfg));
	struct pool_thread *pt;
	struct control *ctl;
	struct loop l;
	char dir[] = "/tmp/check_control_pool.XXXXXX", sock[128], cmd[256];
	char *out, *p1, *p2, *p3;
	unsigned i;
	int n, fd;

	ck_assert_ptr_nonnull(cfg);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	zdb_pool_cfg_defaults(cfg);
	cfg->k = 1;
	cfg->m = 1;
	cfg->min_shards = 1;
	cfg->nbackends = 2;
	for (i = 0; i < 2; i++) {
		struct zdb_backend_cfg *b = &cfg->backends[i];

		snprintf(b->name, sizeof(b->name), "dir%u", i);
		snprintf(b->zone, sizeof(b->zone), "z%u", i);
		snprintf(b->address, sizeof(b->address), "%s/b%u", dir, i);
		b->kind = ZDB_KIND_DIR;
	}
	ck_assert_int_eq(pool_thread_start(cfg, &pt), 0);
	free(cfg);
	snprintf(sock, sizeof(sock), "%s/ctl", dir);
	ck_assert_int_eq(loop_init(&l, 64), 0);
	ck_assert_int_eq(control_open(&ctl, sock, false, &srv, &l), 0);
	control_set_pool(ctl, pt);

	out = roundtrip(&l, sock, "{\"cmd\":\"status\"}\n{\"cmd\":\"status\",\"format\":\"text\"}\n"
			"{\"cmd\":\"nope\"}\n{\"cmd\":\"status\",\"format\":\"xml\"}\n");
	for (n = 0, p1 = out; *p1; p1++)
		n += *p1 == '\n';
	ck_assert_msg(n == 4, "expected 4 reply lines: %s", out);
	p1 = strstr(out, "\"pool\":{\"k\":1,\"m\":1");
	p2 = strstr(out, "\"pool_text\":\"pool: k=1 m=1");
	p3 = strstr(out, "unknown command");
	ck_assert_msg(p1 && p2 && p3 && p1 < p2 && p2 < p3, "replies out of order: %s", out);
	ck_assert_msg(strstr(out, "\"name\":\"dir1\"") != NULL, "%s", out);
	ck_assert_msg(strstr(p3, "\"format\\\" must be") != NULL, "%s", out);
	free(out);

	/* A client that leaves while its status is pending. */
	fd = connect_to(sock);
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"status\"}\n");
	ck_assert_int_eq(send(fd, cmd, strlen(cmd), MSG_NOSIGNAL), (ssize_t)strlen(cmd));
	for (i = 0; i < 3; i++)
		loop_run_once(&l, 1000 * 1000);
	close(fd);
	for (i = 0; i < 50; i++)
		loop_run_once(&l, 2 * 1000 * 1000);

	control_stop(ctl);
	for (i = 0; i < 2000 && !control_idle(ctl); i++)
		loop_run_once(&l, 5 * 1000 * 1000);
	ck_assert(control_idle(ctl));
	pool_thread_stop(pt);
	loop_fini(&l);
	control_free(ctl);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-control-pool");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_status_pending_in_order);
	suite_add_tcase(s, tc);
	return check_run(s);
}
