/*
 * test/lib/check_run.h — the main() end of every Check suite: run all its
 * tests (each in its own process, CK_NORMAL output) and turn the count of
 * failures into the exit status ctest reads.  Header-only.
 *
 * Hang guard: Check prints its results only when the whole suite ends, so
 * a test that hangs past ctest's TIMEOUT dies with the suite and says
 * nothing (nor which test it was).  A thread of the runner waits until 30 s
 * before that TIMEOUT (NBDSRV_TEST_TIMEOUT, set by nbdsrv_unit_test; 600 by
 * default), then says so on stderr with the running test's processes and
 * SIGKILLs that test (its process group): Check then reports it by name
 * ("Received signal 9") and the suite ends with its results.
 */
#ifndef NBDSRV_TEST_CHECK_RUN_H
#define NBDSRV_TEST_CHECK_RUN_H

#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every direct child of the runner (the running test) is killed, with its
 * process group when it leads one. */
static inline void check_run_kill_tests(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	char path[64], cmd[96], buf[512];

	if (!d)
		return;
	while ((de = readdir(d))) {
		long pid = strtol(de->d_name, NULL, 10), ppid = 0;
		FILE *f;
		char *p;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		f = fopen(path, "r");
		if (!f)
			continue;
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1 || ppid != getpid())
			continue;
		snprintf(cmd, sizeof(cmd), "pstree -a -p %ld >&2", pid);
		if (system(cmd) != 0)
			fprintf(stderr, "(pstree of %ld failed)\n", pid);
		if (getpgid((pid_t)pid) == (pid_t)pid)
			kill(-(pid_t)pid, SIGKILL);
		kill((pid_t)pid, SIGKILL);
	}
	closedir(d);
}

static inline void *check_run_guard(void *arg)
{
	unsigned limit = *(unsigned *)arg;

	sleep(limit);
	fprintf(stderr, "HANG: the running test of this suite is still running "
		"after %u s (the suite's ctest TIMEOUT is near): killed (SIGKILL); "
		"its processes:\n", limit);
	check_run_kill_tests();
	return NULL;
}

/* Run every test of s (the runner frees s); EXIT_FAILURE if one failed. */
static inline int check_run(Suite *s)
{
	static unsigned limit;
	const char *to = getenv("NBDSRV_TEST_TIMEOUT");
	SRunner *sr = srunner_create(s);
	sigset_t all, old;
	pthread_t guard;
	int failed;

	limit = (to && atoi(to) > 60 ? (unsigned)atoi(to) : 600) - 30;
	/* the guard takes no signal: Check's timeout (SIGALRM) must reach
	 * the runner's own thread */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_create(&guard, NULL, check_run_guard, &limit) == 0)
		pthread_detach(guard);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* NBDSRV_TEST_CHECK_RUN_H */
