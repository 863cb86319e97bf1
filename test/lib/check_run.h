/*
 * test/lib/check_run.h — the main() end of every Check suite: run all its
 * tests (each in its own process, CK_NORMAL output) and turn the count of
 * failures into the exit status ctest reads.  Header-only.
 */
#ifndef NBDSRV_TEST_CHECK_RUN_H
#define NBDSRV_TEST_CHECK_RUN_H

#include <check.h>
#include <stdlib.h>

/* Run every test of s (the runner frees s); EXIT_FAILURE if one failed. */
static inline int check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* NBDSRV_TEST_CHECK_RUN_H */
