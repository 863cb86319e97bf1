/*
 * main.c — `nbdsrv <subcommand> [options]`, in the manner of rbd / zfs /
 * qemu-img: one binary, one subcommand per task.
 */
#include "nbdsrv/cmd.h"
#include "common/common.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} cmds[] = {
	{ "init",  cmd_init,  "create a pool in a folder (dir backends, key, cache)" },
	{ "serve", cmd_serve, "serve exports over NBD" },
	{ "bench", cmd_bench, "measure a component (codec, pool)" },
	{ "pool",  cmd_pool,  "backend pool: init, status, check" },
	{ "key",   cmd_key,   "pool key file: generate, check" },
	{ "status", cmd_status, "ask a running daemon: exports, volumes, pool" },
	{ "vol",   cmd_vol,   "volumes of a running daemon: create, ls, clone, ..." },
	{ "snap",  cmd_snap,  "snapshots of a running daemon: create, ls, rm, diff" },
	{ "scrub", cmd_scrub, "check a running daemon's pool versions, queue repairs" },
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: nbdsrv <command> [options]\n\ncommands:\n");
	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\n`nbdsrv <command> --help` describes each command.\n");
}

int main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("nbdsrv 0.1.0\n");
		return 0;
	}
	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "nbdsrv: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
