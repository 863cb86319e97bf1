/*
 * check_control.c — the control socket (nbdsrv/control.c) in-process: a
 * server with one fake export and no reactors, a real unix socket, and a
 * client speaking JSON lines to it while the test drives the loop.
 */
#include "nbdsrv/control.h"
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
static struct export fake = { .ops = &fake_ops, .name = (char *)"d\"isk",
			      .size = 4096, .flags = EXPORT_READ_ONLY };

/* Send req (then half-close), run the loop until the server closes the
 * connection, return everything it answered (malloc'd). */
static char *roundtrip(struct loop *l, const char *path, const char *req,
		       size_t reqlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t cap = 1 << 16, len = 0, sent = 0;
	char *out = malloc(cap);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), i;

	strcpy(sa.sun_path, path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	for (i = 0; i < 2000; i++) {
		ssize_t n;

		if (sent < reqlen) {
			n = send(fd, req + sent, reqlen - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				sent = reqlen;  /* the server gave up on us */
			if (sent == reqlen)
				shutdown(fd, SHUT_WR);
		}
		loop_run_once(l, 5 * 1000 * 1000);
		n = recv(fd, out + len, cap - len - 1, MSG_DONTWAIT);
		if (n == 0 && sent == reqlen)
			break;
		if (n > 0)
			len += (size_t)n;
		ck_assert_uint_lt(len, cap - 1);
	}
	ck_assert_int_lt(i, 2000);
	out[len] = '\0';
	close(fd);
	return out;
}

START_TEST(test_control_status_and_errors)
{
	struct server_stats stats = { .conns = 3, .requests = 7 };
	struct export *exports[] = { &fake };
	struct server srv = { .exports = exports, .n_exports = 1, .stats = &stats };
	struct control *ctl;
	struct loop l;
	char path[] = "/tmp/check_control.XXXXXX";
	char sock[64];
	char *out, *big;
	size_t n;
	int i;

	ck_assert_ptr_nonnull(mkdtemp(path));
	snprintf(sock, sizeof(sock), "%s/ctl", path);
	ck_assert_int_eq(loop_init(&l, 64), 0);
	ck_assert_int_eq(control_open(&ctl, sock, false, &srv, &l), 0);
	/* A second daemon may not steal a live control socket. */
	{
		struct control *other;

		ck_assert_int_eq(control_open(&other, sock, false, &srv, &l), -EADDRINUSE);
	}

	{
		static const char req[] = "{\"cmd\":\"status\"}\n{ \"cmd\" : \"frobnicate\" }\n"
					  "not json\n{\"x\":1}\r\n";

		out = roundtrip(&l, sock, req, strlen(req));
	}
	ck_assert_msg(strstr(out, "{\"ok\":true,\"state\":\"serving\",\"exports\":[{\"name\":\"d\\\"isk\",\"kind\":\"fake\","
			     "\"size\":4096,\"read_only\":true,\"connections\":3,"
			     "\"requests\":7,") != NULL, "status reply: %s", out);
	ck_assert_msg(strstr(out, "\"error\":\"unknown command\",\"command\":\"frobnicate\"")
		      != NULL, "%s", out);
	ck_assert_msg(strstr(out, "expected a JSON object") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "missing \\\"cmd\\\"") != NULL, "%s", out);
	for (i = 0, n = 0; out[n]; n++)
		i += out[n] == '\n';
	ck_assert_int_eq(i, 4);         /* one reply line per request line */
	free(out);

	/* Bad arguments get a clear error, never a silent default: a
	 * non-string "format" (was answered as JSON), a scrub "rate" without
	 * "deep" (was ignored; the CLI refuses --rate without --deep). */
	{
		static const char req[] = "{\"cmd\":\"status\",\"format\":5}\n"
					  "{\"cmd\":\"status\",\"format\":\"xml\"}\n"
					  "{\"cmd\":\"scrub\",\"rate\":1000}\n"
					  "{\"cmd\":\"scrub\",\"deep\":false,\"rate\":1000}\n"
					  "{\"cmd\":\"scrub\",\"deep\":true,\"rate\":1000}\n";
		char *l2, *l3, *l4, *l5;

		out = roundtrip(&l, sock, req, strlen(req));
		ck_assert_ptr_nonnull(l2 = strchr(out, '\n'));
		ck_assert_ptr_nonnull(l3 = strchr(l2 + 1, '\n'));
		ck_assert_ptr_nonnull(l4 = strchr(l3 + 1, '\n'));
		ck_assert_ptr_nonnull(l5 = strchr(l4 + 1, '\n'));
		*l2++ = *l3++ = *l4++ = *l5++ = 0;
		ck_assert_msg(strstr(out, "\"ok\":false") && strstr(out, "format"), "%s", out);
		ck_assert_msg(strstr(l2, "\"ok\":false") && strstr(l2, "format"), "%s", l2);
		ck_assert_msg(strstr(l3, "\"ok\":false") && strstr(l3, "deep"), "%s", l3);
		ck_assert_msg(strstr(l4, "\"ok\":false") && strstr(l4, "deep"), "%s", l4);
		/* well-formed: it gets as far as "no volumes" here */
		ck_assert_msg(strstr(l5, "\"ok\":false") && strstr(l5, "serves no volumes"), "%s", l5);
		free(out);
	}

	/* A line longer than the limit: an error, then the server hangs up. */
	n = 70 * 1024;
	big = malloc(n);
	memset(big, 'x', n);
	out = roundtrip(&l, sock, big, n);
	ck_assert_msg(strstr(out, "too long") != NULL, "%s", out);
	free(out);
	free(big);

	control_stop(ctl);
	for (i = 0; i < 1000 && !control_idle(ctl); i++)
		loop_run_once(&l, 5 * 1000 * 1000);
	ck_assert(control_idle(ctl));
	loop_fini(&l);
	control_free(ctl);
	ck_assert_int_ne(access(sock, F_OK), 0);        /* unlinked */
	rmdir(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-control");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_control_status_and_errors);
	suite_add_tcase(s, tc);
	return check_run(s);
}
