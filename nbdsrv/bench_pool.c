/* bench_pool.c — `nbdsrv bench pool`: not built yet (its issue is open). */
#include "nbdsrv/cmd.h"

#include <stdio.h>

int bench_pool(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "nbdsrv bench pool: not implemented yet\n");
	return 1;
}
