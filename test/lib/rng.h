/*
 * test/lib/rng.h — the random numbers of the randomized C tests: one
 * xorshift64 state per test program (rs: a test may save and set it to
 * replay a stream), seeded by seed_init() from NBDSRV_SEED (to replay a
 * run) or else from the clock and pid, the seed printed either way.
 * Header-only: every test program includes its own copy.
 */
#ifndef NBDSRV_TEST_RNG_H
#define NBDSRV_TEST_RNG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t rs;

static inline uint64_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return rs;
}

/* Seed rs for the test named what (never 0: xorshift would stay 0) and
 * print the seed; returns it. */
static inline uint64_t seed_init(const char *what)
{
	const char *e = getenv("NBDSRV_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) :
			(uint64_t)time(NULL) ^ (uint64_t)getpid() << 20;

	if (!seed)
		seed = 1;
	printf("%s: seed %llu (NBDSRV_SEED=%llu to replay)\n", what,
	       (unsigned long long)seed, (unsigned long long)seed);
	fflush(stdout);
	rs = seed;
	return seed;
}

#endif /* NBDSRV_TEST_RNG_H */
