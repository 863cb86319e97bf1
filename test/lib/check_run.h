/*
 * test/lib/check_run.h — the main() end of every Check suite: run all its
 * tests (each in its own process, CK_NORMAL output) and turn the count of
 * failures into the exit status ctest reads.  Header-only.
 *
 * Hang guard: Check prints its results only when the whole suite ends, so
 * a test that hangs past ctest's TIMEOUT dies with the suite and says
 * nothing (nor which test it was).  A watchdog process forked by the
 * runner (a process, not a thread: the runner forks every test, and a
 * fork while another thread holds a lock of the allocator — ASan's — left
 * the test's exit deadlocked) waits until 30 s before that TIMEOUT
 * (NBDSRV_TEST_TIMEOUT when set; else 600, nbdsrv_unit_test's), then
 * says so on stderr with the running test's processes and SIGKILLs that
 * test (its process group): Check then reports it by name ("Received
 * signal 9") and the suite ends with its results.  The watchdog dies with
 * the runner (PR_SET_PDEATHSIG).
 */
#ifndef NBDSRV_TEST_CHECK_RUN_H
#define NBDSRV_TEST_CHECK_RUN_H

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Every child of runner but the watchdog itself (the running test) is
 * killed, with its process group when it leads one. */
static inline void check_run_kill_tests(pid_t runner)
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

		if (pid <= 0 || pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		f = fopen(path, "r");
		if (!f)
			continue;
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1 || ppid != (long)runner)
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

/* Fork the watchdog (none if the fork fails). */
static inline void check_run_guard(unsigned limit)
{
	pid_t runner = getpid();

	if (fork() != 0)
		return;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != runner)
		_exit(0);
	sleep(limit);
	if (getppid() != runner)
		_exit(0);
	fprintf(stderr, "HANG: the running test of this suite is still running "
		"after %u s (the suite's ctest TIMEOUT is near): killed (SIGKILL); "
		"its processes:\n", limit);
	check_run_kill_tests(runner);
	_exit(0);
}

/* Run every test of s (the runner frees s); EXIT_FAILURE if one failed. */
static inline int check_run(Suite *s)
{
	const char *to = getenv("NBDSRV_TEST_TIMEOUT");
	SRunner *sr = srunner_create(s);
	int failed;

	fflush(NULL);           /* nothing buffered twice */
	check_run_guard((to && atoi(to) > 60 ? (unsigned)atoi(to) : 600) - 30);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* NBDSRV_TEST_CHECK_RUN_H */
