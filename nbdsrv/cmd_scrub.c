/*
 * cmd_scrub.c — `nbdsrv scrub [--deep] [--rate R] [--wait] [--control PATH
 * | --config FILE]`: ask the running daemon to check every pool version its cache
 * index names (cache/ssdscrub.c) and queue the damaged ones for repair.
 *
 * The daemon answers at once (the scrub runs on its cache thread); its
 * progress is status's volumes.scrub.  --wait follows it: polls status
 * twice a second, shows a progress line on a terminal (stderr), and prints
 * the totals when the scrub ends.  A scrub already running is joined with
 * --wait (a note says so), refused without.  Repairs go on after the scrub
 * ends (status: repair_pending).
 *
 * --rate bounds the bytes per second a deep scrub reads (pool.conf's
 * scrub_rate when absent; 0 = unlimited); without --deep it is a usage
 * error (a shallow scrub reads no shard data).
 *
 * The daemon's scrub counters live in its process: --wait ends with an
 * error when they show a new daemon (a restart between two polls), rather
 * than waiting for a scrub that is gone.
 *
 * Exit status: 0 started (or, with --wait, finished with nothing left
 * waiting), 1 refused, the daemon could not be asked or (--wait) it
 * restarted before the end, 2 usage error,
 * 3 (--wait) finished degraded: damaged versions wait for k+m backends up
 * (the daemon scrubs again by itself when they are).
 */
#include "nbdsrv/cmd.h"
#include "nbdsrv/ctl_client.h"
#include "common/common.h"

#include <getopt.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WHO "nbdsrv scrub"

static void scrub_usage(FILE *f)
{
	fprintf(f,
"usage: nbdsrv scrub [--deep] [--rate R] [--wait] [--control PATH | --config FILE]\n"
"\n"
"Check every shard of every pool version the daemon's cache index names on\n"
"its backend, and queue the versions with a shard missing, bad or on a\n"
"backend that is down for repair (a new complete version is written).\n"
"  --deep           read each shard and verify its checksum and tag\n"
"                   (default: only ask whether the backend has it)\n"
"  --rate R         a deep scrub reads at most R bytes per second (e.g. 64M;\n"
"                   0 = unlimited; default: pool.conf scrub_rate, 64M)\n"
"  --wait           follow it until it ends (progress on a terminal); exit\n"
"                   status 3 if damaged versions wait for k+m backends up\n"
"  --control PATH   the daemon's control socket\n"
"  --config FILE    its pool config: the socket is <cache_path>/nbdsrv.ctl\n");
}

static json_int_t ji(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* status's volumes.scrub object (a new reference) or NULL after saying
 * why. */
static json_t *scrub_status(const char *path)
{
	json_t *req = json_pack("{s:s}", "cmd", "status"), *rep = NULL, *sc;

	if (!req || ctl_call(WHO, path, req, &rep)) {
		json_decref(req);
		return NULL;
	}
	json_decref(req);
	sc = json_object_get(json_object_get(rep, "volumes"), "scrub");
	if (!json_is_true(json_object_get(rep, "ok")) || !json_is_object(sc)) {
		fprintf(stderr, WHO ": the daemon reports no scrub (does it serve "
			"volumes over a pool?)\n");
		json_decref(rep);
		return NULL;
	}
	json_incref(sc);
	json_decref(rep);
	return sc;
}

static void scrub_print(FILE *f, json_t *sc, const char *end)
{
	fprintf(f, "scrub%s: %s, %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
		" records, %" JSON_INTEGER_FORMAT " shards checked, %"
		JSON_INTEGER_FORMAT " missing, %" JSON_INTEGER_FORMAT " bad, %"
		JSON_INTEGER_FORMAT " on backends down; %" JSON_INTEGER_FORMAT
		" versions queued for repair, %" JSON_INTEGER_FORMAT " waiting, %"
		JSON_INTEGER_FORMAT " waiting for k+m backends up%s",
		json_is_true(json_object_get(sc, "deep")) ? " (deep)" : "",
		json_is_true(json_object_get(sc, "running")) ? "running" : "done",
		ji(sc, "checked"), ji(sc, "total"), ji(sc, "shards"), ji(sc, "missing"),
		ji(sc, "bad"), ji(sc, "down"), ji(sc, "queued"),
		ji(sc, "repair_pending"), ji(sc, "waiting"), end);
}

int cmd_scrub(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "config",  required_argument, NULL, 'f' },
		{ "deep",    no_argument,       NULL, 'd' },
		{ "wait",    no_argument,       NULL, 'w' },
		{ "rate",    required_argument, NULL, 'r' },
		{ "help",    no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *control = NULL, *config = NULL, *err;
	bool deep = false, wait = false, joined = false, tty = isatty(2);
	json_t *req, *rep = NULL, *sc;
	json_int_t runs0 = 0, waiting = 0;
	uint64_t rate = 0;
	bool rate_set = false;
	char path[512];
	int c, rc;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': control = optarg; break;
		case 'f': config = optarg; break;
		case 'd': deep = true; break;
		case 'w': wait = true; break;
		case 'r':
			if (parse_size(optarg, &rate) < 0 || rate > (uint64_t)INT64_MAX) {
				fprintf(stderr, WHO ": --rate: a rate in bytes per second "
					"such as 64M (0 = unlimited), got '%s'\n", optarg);
				return 2;
			}
			rate_set = true;
			break;
		case 'h': scrub_usage(stdout); return 0;
		case ':':
			fprintf(stderr, WHO ": %s: missing argument\n", argv[optind - 1]);
			scrub_usage(stderr);
			return 2;
		default:
			fprintf(stderr, WHO ": unknown option '%s'\n", argv[optind - 1]);
			scrub_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, WHO ": unexpected argument '%s'\n", argv[optind]);
		scrub_usage(stderr);
		return 2;
	}
	if (rate_set && !deep) {
		fprintf(stderr, WHO ": --rate limits a deep scrub (--deep); a shallow "
			"scrub reads no shard data\n");
		return 2;
	}
	rc = ctl_resolve(WHO, control, config, path, sizeof(path));
	if (rc)
		return rc;
	if (wait) {
		sc = scrub_status(path);
		if (!sc)
			return 1;
		runs0 = ji(sc, "runs");
		json_decref(sc);
	}
	req = json_pack("{s:s, s:b}", "cmd", "scrub", "deep", deep);
	if (req && rate_set &&
	    json_object_set_new(req, "rate", json_integer((json_int_t)rate)) < 0) {
		json_decref(req);
		req = NULL;
	}
	if (!req) {
		fprintf(stderr, WHO ": out of memory\n");
		return 1;
	}
	rc = ctl_call(WHO, path, req, &rep);
	json_decref(req);
	if (rc)
		return rc;
	err = json_string_value(json_object_get(rep, "error"));
	if (!json_is_true(json_object_get(rep, "ok"))) {
		if (!wait || !err || !strstr(err, "already running")) {
			fprintf(stderr, WHO ": %s\n", err ?: "the daemon refused");
			json_decref(rep);
			return 1;
		}
		fprintf(stderr, WHO ": a scrub is already running: following it\n");
		joined = true;
	}
	json_decref(rep);
	if (!wait) {
		printf("scrub%s started (progress: nbdsrv status)\n", deep ? " (deep)" : "");
		return fflush(stdout) == 0 ? 0 : 1;
	}
	for (json_int_t last = runs0;;) {
		json_int_t runs;
		bool running;

		sc = scrub_status(path);
		if (!sc)
			return 1;
		running = json_is_true(json_object_get(sc, "running"));
		runs = ji(sc, "runs");
		/* the daemon's counters are its process's: fewer runs than seen,
		 * or ours neither running nor ended, is a new daemon — the scrub
		 * followed is gone.  A start shows running at once, and a scrub
		 * joined was running after runs0 was read: its end counts a run
		 * (a new daemon's first runs 0 = runs0 too) */
		if (runs < last || (!running && runs <= runs0)) {
			if (tty)
				fprintf(stderr, "\r\033[K");
			fprintf(stderr, WHO ": the daemon restarted before the scrub "
				"ended (run it again)\n");
			json_decref(sc);
			return 1;
		}
		last = runs;
		if (!running && (joined || runs > runs0)) {
			if (tty)
				fprintf(stderr, "\r\033[K");
			scrub_print(stdout, sc, "\n");
			waiting = ji(sc, "waiting");
			json_decref(sc);
			break;
		}
		if (tty)
			scrub_print(stderr, sc, "\r");
		json_decref(sc);
		nanosleep(&(struct timespec){ .tv_nsec = 500 * 1000000L }, NULL);
	}
	if (fflush(stdout) != 0)
		return 1;
	if (waiting) {
		fprintf(stderr, WHO ": degraded: %" JSON_INTEGER_FORMAT " damaged "
			"version(s) wait for k+m backends up (repaired by a scrub the "
			"daemon starts when they are)\n", waiting);
		return 3;
	}
	return 0;
}
