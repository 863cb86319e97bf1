/*
 * cmd.h — the subcommands of the `nbdsrv` binary.  Each is implemented in its
 * own file (cmd_<name>.c) and receives argv with argv[0] = the subcommand's
 * name.  Each returns the process exit status: 0 success, 1 failure (after
 * printing what went wrong to stderr), 2 usage error.
 */
#ifndef NBDSRV_CMD_H
#define NBDSRV_CMD_H

int cmd_serve(int argc, char **argv);   /* cmd_serve.c: run the daemon */
int cmd_bench(int argc, char **argv);   /* cmd_bench.c: nbdsrv bench codec|pool */
int cmd_pool(int argc, char **argv);    /* cmd_pool.c: nbdsrv pool init|status|check */
int cmd_key(int argc, char **argv);     /* cmd_key.c: nbdsrv key generate|check */
int cmd_init(int argc, char **argv);    /* cmd_init.c: a pool in one folder */
int cmd_status(int argc, char **argv);  /* cmd_status.c: ask a running daemon */
int cmd_vol(int argc, char **argv);     /* cmd_vol.c: nbdsrv vol <sub> */
int cmd_snap(int argc, char **argv);    /* cmd_vol.c: nbdsrv snap <sub> */
int cmd_scrub(int argc, char **argv);   /* cmd_scrub.c: nbdsrv scrub */

/* nbdsrv bench <what>: each prints a table (or JSON with --json). */
int bench_codec(int argc, char **argv); /* bench_codec.c */
int bench_pool(int argc, char **argv);  /* bench_pool.c */

#endif
