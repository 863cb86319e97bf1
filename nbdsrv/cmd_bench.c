/*
 * cmd_bench.c — `nbdsrv bench <what> [options]`: dispatch to one benchmark.
 */
#include "nbdsrv/cmd.h"

#include <stdio.h>
#include <string.h>

int cmd_bench(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help")) {
		fprintf(argc < 2 ? stderr : stdout,
			"usage: nbdsrv bench codec [--json]\n"
			"       nbdsrv bench pool [--json] [options]\n");
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "codec"))
		return bench_codec(argc - 1, argv + 1);
	if (!strcmp(argv[1], "pool"))
		return bench_pool(argc - 1, argv + 1);
	fprintf(stderr, "nbdsrv bench: unknown benchmark '%s'\n", argv[1]);
	return 2;
}
