/* cmd_serve.c — `nbdsrv serve`: being written (issue 2). */
#include "nbdsrv/cmd.h"

#include <stdio.h>

int cmd_serve(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "nbdsrv serve: not implemented yet\n");
	return 1;
}
