/*
 * check_server.c — reactor lifecycle (nbdsrv/server.c) in-process: two
 * reactors on a real unix socket, driven through the test hook
 * server_handoff_hook to hit a window a stop cannot otherwise be made to
 * hit on demand.
 *
 * test_handoff_after_exit: a socket accepted on one reactor is handed over
 * to the other only once that one has stopped and left its loop (it read
 * `pending` before the sender counted the socket).  The handover is then
 * run by loop_fini on the main thread: the socket must be closed there
 * (the client reads EOF once server_stop returned), not adopted as a
 * connection nothing serves (fd and conn leaked, the client waits forever).
 * When the kernel completed the accept on a reactor after the target in
 * server_stop's order, the handover also had to land before the target's
 * ring was finished (server_stop once finished each ring right after its
 * join, while a later reactor could still post to it: the socket was
 * lost).  Which reactor accepts is the kernel's choice, so the test runs
 * a few rounds and says which orders it saw.
 */
#include "nbdsrv/server.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const struct export_ops fake_ops = { .kind = "fake" };
static struct export fake = { .ops = &fake_ops, .name = (char *)"disk",
			      .size = 4096, .flags = EXPORT_READ_ONLY };

static sem_t hook_entered;
static bool hook_saw_exit;
static unsigned hook_from;

/* On the accepting reactor: hand the socket to the other reactor, but only
 * once that one has exited (bounded: a hang guard, not a timing). */
static void handoff_to_exited(struct reactor *from, struct reactor **to)
{
	struct reactor *other = &from->srv->reactors[(from->id + 1) %
						     from->srv->n_reactors];
	int i;

	*to = other;
	hook_from = from->id;
	sem_post(&hook_entered);
	for (i = 0; i < 60000; i++) {
		if (__atomic_load_n(&other->exited, __ATOMIC_ACQUIRE)) {
			hook_saw_exit = true;
			return;
		}
		usleep(1000);
	}
}

/* One server, one connection handed to the reactor that exited; returns
 * the accepting reactor's id. */
static unsigned handoff_round(void)
{
	struct server_stats stats = { 0 };
	struct export *exports[] = { &fake };
	struct server srv = { .exports = exports, .n_exports = 1, .stats = &stats,
			      .n_reactors = 2 };
	struct listener *li;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/check_server.XXXXXX";
	struct timespec ts;
	char buf[64];
	ssize_t n;
	int fd;

	hook_saw_exit = false;
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", dir);
	li = calloc(1, sizeof(*li));
	ck_assert_ptr_nonnull(li);
	li->fd = server_unix_listen(sa.sun_path, 0600, 16, true);
	ck_assert_int_ge(li->fd, 0);
	li->what = strdup("test");
	srv.listeners = li;
	srv.n_listeners = 1;
	sem_init(&hook_entered, 0, 0);
	server_handoff_hook = handoff_to_exited;
	ck_assert_int_eq(server_start(&srv), 0);

	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 60;
	ck_assert_msg(sem_timedwait(&hook_entered, &ts) == 0,
		      "the accept never reached the handover");
	server_stop_begin(&srv);
	server_stop(&srv);      /* joins; loop_fini runs the late handover */
	ck_assert_msg(hook_saw_exit, "the target reactor did not exit first");

	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET),
		      "the socket handed to an exited reactor is still open "
		      "(recv: %zd, %s): leaked with its connection", n,
		      n < 0 ? strerror(errno) : "data");
	close(fd);
	server_handoff_hook = NULL;
	close(li->fd);
	unlink(sa.sun_path);
	free(li->what);
	free(li);
	rmdir(dir);
	sem_destroy(&hook_entered);
	return hook_from;
}

START_TEST(test_handoff_after_exit)
{
	unsigned from[2] = { 0, 0 }, i;

	for (i = 0; i < 10; i++)
		from[handoff_round()]++;
	printf("handovers from reactor 0 to 1: %u, from 1 to 0: %u\n",
	       from[0], from[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-server");
	TCase *tc = tcase_create("lifecycle");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_handoff_after_exit);
	suite_add_tcase(s, tc);
	return check_run(s);
}
