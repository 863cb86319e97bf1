/* bench_codec.c — `nbdsrv bench codec`: not built yet (its issue is open). */
#include "nbdsrv/cmd.h"

#include <stdio.h>

int bench_codec(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "nbdsrv bench codec: not implemented yet\n");
	return 1;
}
