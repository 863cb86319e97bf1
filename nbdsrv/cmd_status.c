/*
 * cmd_status.c — `nbdsrv status [--control PATH | --config FILE] [--json]`:
 * ask the running daemon for its state over the control socket and print
 * it: exports with their counters, reactors, listeners, the volume store
 * (when the daemon serves volumes) and the pool's backends (health, state,
 * dialect, latency p50/p99, capacity, and the requests each refused while
 * up — the cache's pool's refusals, merged in by the daemon).  The pool part
 * is produced by zdb_pool_format_status_ext() on the daemon's pool thread;
 * this command only prints it.  --json prints the daemon's reply object unchanged (one line).
 *
 * Exit status: 0 when the daemon answered, 1 when it could not be asked or
 * refused, 2 on a usage error.
 */
#include "nbdsrv/cmd.h"
#include "nbdsrv/ctl_client.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static void status_usage(FILE *f)
{
	fprintf(f,
"usage: nbdsrv status [--control PATH | --config FILE] [--json]\n"
"\n"
"Show a running daemon's exports, connections, volumes and pool backends.\n"
"  --control PATH   the daemon's control socket\n"
"  --config FILE    its pool config: the socket is <cache_path>/nbdsrv.ctl\n"
"  --json           the daemon's JSON answer, one object\n");
}

static const char *human_bytes(char *buf, size_t len, json_int_t v)
{
	return ctl_human_bytes(buf, len, v, false);
}

static json_int_t ji(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* The volume store's cache and warm-up jobs (persistent mode). */
static void print_cache(json_t *v)
{
	json_t *c = json_object_get(v, "cache"), *e;
	char b[4][32];
	size_t i;

	if (json_is_object(c)) {
		json_int_t ss = ji(c, "slot_size");

		printf("cache: %s, %s of %s used (%" JSON_INTEGER_FORMAT " of %"
		       JSON_INTEGER_FORMAT " slots), %" JSON_INTEGER_FORMAT " dirty, %"
		       JSON_INTEGER_FORMAT " objects not yet in the pool\n",
		       json_string_value(json_object_get(v, "cache_mode")) ?: "?",
		       human_bytes(b[0], sizeof(b[0]), ji(c, "slots_used") * ss),
		       human_bytes(b[1], sizeof(b[1]), ji(c, "slots") * ss),
		       ji(c, "slots_used"), ji(c, "slots"), ji(c, "slots_dirty"),
		       ji(c, "pool_dirty"));
		printf("  hits %" JSON_INTEGER_FORMAT ", misses %" JSON_INTEGER_FORMAT
		       " (%s fetched), prefetches %" JSON_INTEGER_FORMAT ", evictions %"
		       JSON_INTEGER_FORMAT ", flushed %" JSON_INTEGER_FORMAT
		       " versions (%" JSON_INTEGER_FORMAT " errors), writers waiting %"
		       JSON_INTEGER_FORMAT " (stalled ever %" JSON_INTEGER_FORMAT ")\n",
		       ji(c, "hits"), ji(c, "misses"),
		       human_bytes(b[2], sizeof(b[2]), ji(c, "miss_bytes")),
		       ji(c, "prefetches"), ji(c, "evictions"), ji(c, "flushed"),
		       ji(c, "flush_errors"), ji(c, "bp_waiting"), ji(c, "bp_stalls"));
		printf("  write-back delay: %" JSON_INTEGER_FORMAT " objects waiting, "
		       "oldest dirty %" JSON_INTEGER_FORMAT " ms; flushed as complete %"
		       JSON_INTEGER_FORMAT ", idle %" JSON_INTEGER_FORMAT ", aged %"
		       JSON_INTEGER_FORMAT ", background %" JSON_INTEGER_FORMAT
		       ", forced %" JSON_INTEGER_FORMAT "\n",
		       ji(c, "wb_waiting"), ji(c, "wb_oldest_ms"), ji(c, "wb_complete"),
		       ji(c, "wb_idle"), ji(c, "wb_age"), ji(c, "wb_background"),
		       ji(c, "wb_forced"));
	}
	c = json_object_get(v, "scrub");
	if (json_is_object(c) && (json_is_true(json_object_get(c, "running")) ||
				  ji(c, "runs") || ji(c, "repair_pending")))
		printf("scrub: %s%s, %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
		       " records checked, %" JSON_INTEGER_FORMAT " shards missing, %"
		       JSON_INTEGER_FORMAT " bad, %" JSON_INTEGER_FORMAT " on backends down; %"
		       JSON_INTEGER_FORMAT " versions queued for repair, %"
		       JSON_INTEGER_FORMAT " waiting now, %" JSON_INTEGER_FORMAT
		       " waiting for k+m backends up%s%s%s\n",
		       json_is_true(json_object_get(c, "running")) ? "running" : "done",
		       json_is_true(json_object_get(c, "deep")) ? " (deep)" : "",
		       ji(c, "checked"), ji(c, "total"), ji(c, "missing"), ji(c, "bad"),
		       ji(c, "down"), ji(c, "queued"), ji(c, "repair_pending"),
		       ji(c, "waiting"), ji(c, "rate") ? "; at most " : "",
		       ji(c, "rate") ? human_bytes(b[0], sizeof(b[0]), ji(c, "rate")) : "",
		       ji(c, "rate") ? "/s" : "");
	json_array_foreach(json_object_get(v, "warm"), i, e)
		printf("  warm %-20s %-8s %s / %s, %s/s%s%s\n",
		       json_string_value(json_object_get(e, "spec")) ?: "?",
		       json_string_value(json_object_get(e, "state")) ?: "?",
		       human_bytes(b[0], sizeof(b[0]), ji(e, "done")),
		       human_bytes(b[1], sizeof(b[1]), ji(e, "total")),
		       human_bytes(b[2], sizeof(b[2]), ji(e, "rate")),
		       json_object_get(e, "error") ? ": " : "",
		       json_string_value(json_object_get(e, "error")) ?: "");
}

static void print_human(json_t *rep)
{
	json_t *a, *e, *v;
	size_t i;
	char b1[32], b2[32], b3[32];
	const char *state = json_string_value(json_object_get(rep, "state"));

	if (state && strcmp(state, "serving"))
		printf("daemon: %s (a clean stop is in progress)\n", state);
	a = json_object_get(rep, "exports");
	printf("exports: %zu\n", json_array_size(a));
	if (json_array_size(a))
		printf("%-24s %-5s %10s %-3s %6s %10s %10s %10s\n", "NAME", "KIND", "SIZE",
		       "RO", "CONNS", "REQUESTS", "READ", "WRITTEN");
	json_array_foreach(a, i, e) {
		printf("%-24s %-5s %10s %-3s %6" JSON_INTEGER_FORMAT " %10" JSON_INTEGER_FORMAT
		       " %10s %10s\n",
		       json_string_value(json_object_get(e, "name")) ?: "?",
		       json_string_value(json_object_get(e, "kind")) ?: "?",
		       human_bytes(b1, sizeof(b1), json_integer_value(json_object_get(e, "size"))),
		       json_is_true(json_object_get(e, "read_only")) ? "yes" : "no",
		       json_integer_value(json_object_get(e, "connections")),
		       json_integer_value(json_object_get(e, "requests")),
		       human_bytes(b2, sizeof(b2), json_integer_value(json_object_get(e, "bytes_read"))),
		       human_bytes(b3, sizeof(b3),
				   json_integer_value(json_object_get(e, "bytes_written"))));
	}
	a = json_object_get(rep, "reactors");
	{
		json_int_t conns = 0;

		json_array_foreach(a, i, e)
			conns += json_integer_value(json_object_get(e, "connections"));
		printf("connections: %" JSON_INTEGER_FORMAT " on %zu reactors\n", conns,
		       json_array_size(a));
	}
	a = json_object_get(rep, "listeners");
	printf("listening on:");
	json_array_foreach(a, i, e)
		printf(" %s", json_string_value(e) ?: "?");
	printf("\n");
	v = json_object_get(rep, "volumes");
	if (json_is_object(v)) {
		printf("volumes: %s, %" JSON_INTEGER_FORMAT " volume(s)%s\n",
		       json_string_value(json_object_get(v, "mode")) ?: "?",
		       json_integer_value(json_object_get(v, "count")),
		       json_is_true(json_object_get(v, "ephemeral"))
		       ? " — EPHEMERAL: in memory, everything is lost when the daemon exits" : "");
		json_array_foreach(json_object_get(v, "open"), i, e)
			printf("  in use: %-24s %" JSON_INTEGER_FORMAT " session(s)\n",
			       json_string_value(json_object_get(e, "name")) ?: "?",
			       json_integer_value(json_object_get(e, "sessions")));
		print_cache(v);
	}
	v = json_object_get(rep, "pool_text");
	if (json_is_string(v))
		printf("%s", json_string_value(v));
	else
		printf("pool: none (the daemon was started without --config)\n");
}

int cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "config",  required_argument, NULL, 'f' },
		{ "json",    no_argument,       NULL, 'j' },
		{ "help",    no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *control = NULL, *config = NULL;
	bool json = false;
	char path[512];
	json_t *req, *rep = NULL;
	int c, rc;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': control = optarg; break;
		case 'f': config = optarg; break;
		case 'j': json = true; break;
		case 'h': status_usage(stdout); return 0;
		case ':':
			fprintf(stderr, "nbdsrv status: %s: missing argument\n", argv[optind - 1]);
			status_usage(stderr);
			return 2;
		default:
			fprintf(stderr, "nbdsrv status: unknown option '%s'\n", argv[optind - 1]);
			status_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "nbdsrv status: unexpected argument '%s'\n", argv[optind]);
		status_usage(stderr);
		return 2;
	}
	rc = ctl_resolve("nbdsrv status", control, config, path, sizeof(path));
	if (rc)
		return rc;
	req = json_pack("{s:s, s:s}", "cmd", "status", "format", json ? "json" : "text");
	if (!req) {
		fprintf(stderr, "nbdsrv status: out of memory\n");
		return 1;
	}
	rc = ctl_call("nbdsrv status", path, req, &rep);
	json_decref(req);
	if (rc)
		return rc;
	if (!json_is_true(json_object_get(rep, "ok"))) {
		fprintf(stderr, "nbdsrv status: %s\n",
			json_string_value(json_object_get(rep, "error")) ?: "the daemon refused");
		json_decref(rep);
		return 1;
	}
	if (json) {
		char *s = json_dumps(rep, JSON_COMPACT);

		if (!s) {
			json_decref(rep);
			fprintf(stderr, "nbdsrv status: out of memory\n");
			return 1;
		}
		printf("%s\n", s);
		free(s);
	} else {
		print_human(rep);
	}
	json_decref(rep);
	return fflush(stdout) == 0 ? 0 : 1;
}
