/* cmd_pool.c — `nbdsrv pool init|status|check`: being built (issue 4). */
#include "nbdsrv/cmd.h"

#include <stdio.h>

int cmd_pool(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "nbdsrv pool: not implemented yet\n");
	return 1;
}
