/*
 * cmd_vol.c — `nbdsrv vol …` and `nbdsrv snap …`: clients of a running
 * daemon's control socket (the vol.* / snap.* commands of control_vol.c).
 *
 *   vol create NAME SIZE [--chunk-size S]   vol ls            vol info NAME
 *   vol resize NAME SIZE    vol rm NAME     vol rename OLD NEW
 *   vol rollback NAME@SNAP  vol flatten NAME                  vol du [NAME]
 *   vol clone VOL@SNAP NEW
 *   snap create VOL@SNAP    snap ls VOL     snap rm VOL@SNAP
 *   snap diff VOL@SNAP [VOL@SNAP2]          (default: against the head)
 *   vol warm NAME[@SNAP] [--rate R] [--wait|--no-wait]
 *       starts a background warm-up in the daemon (warm.c); on a terminal
 *       (or with --wait) follows its progress by polling `status` every
 *       half second until it ends (exit 1 if it failed).
 *
 * Every command takes --json (print the daemon's reply object), --control
 * PATH or --config FILE (which daemon).  Sizes accept K/M/G/T suffixes and
 * are parsed here, so a malformed one is a usage error (exit 2) before the
 * daemon is asked; everything else (names, geometry, state) is the
 * daemon's to judge, and its message — vol_last_error() — is printed as is
 * with exit 1.
 */
#include "nbdsrv/cmd.h"
#include "nbdsrv/ctl_client.h"
#include "common/common.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct vol_cli {
	const char *who;        /* "nbdsrv vol" / "nbdsrv snap" */
	const char *control, *config;
	const char *chunk_size;
	const char *rate;
	const char *timeout;    /* vol sync --timeout MS */
	int wait;               /* -1 --no-wait, 1 --wait, 0 on a terminal */
	bool json;
	char **args;            /* positional: subcommand first */
	int nargs;
};

static void vol_usage(FILE *f)
{
	fprintf(f,
"usage: nbdsrv vol create NAME SIZE [--chunk-size S]   (default chunk 1M)\n"
"       nbdsrv vol ls | info NAME | du [NAME|VOL@SNAP]\n"
"       nbdsrv vol resize NAME SIZE | rm NAME | rename OLD NEW\n"
"       nbdsrv vol rollback NAME@SNAP | flatten NAME | clone VOL@SNAP NEW\n"
"       nbdsrv snap create VOL@SNAP | ls VOL | rm VOL@SNAP\n"
"       nbdsrv snap diff VOL@SNAP [VOL@SNAP2]            (default: the head)\n"
"       nbdsrv vol warm NAME[@SNAP] [--rate BYTES/s] [--wait|--no-wait]\n"
"       nbdsrv vol sync [--timeout MS]  (returns when every write before it is in\n"
"                               the pool; fails after MS, default 60000)\n"
"options: --control PATH | --config FILE (which daemon), --json\n");
}

static int usage(const struct vol_cli *c, const char *msg, const char *arg)
{
	fprintf(stderr, "%s: ", c->who);
	fprintf(stderr, msg, arg);
	fprintf(stderr, "\n");
	vol_usage(stderr);
	return 2;
}

static json_int_t jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static const char *hb(char *buf, size_t len, json_int_t v)
{
	return ctl_human_bytes(buf, len, v, true);
}

static void print_vols(json_t *a)
{
	size_t i;
	json_t *v;
	char b1[32], b2[32];

	printf("%-24s %10s %8s %6s %s\n", "NAME", "SIZE", "CHUNK", "SNAPS", "ORIGIN");
	json_array_foreach(a, i, v)
		printf("%-24s %10s %8s %6" JSON_INTEGER_FORMAT " %s\n", jstr(v, "name"),
		       hb(b1, sizeof(b1), jint(v, "size")),
		       hb(b2, sizeof(b2), jint(v, "chunk_size")), jint(v, "snapshots"),
		       jstr(v, "origin"));
}

static void print_snaps(json_t *a)
{
	size_t i;
	json_t *v;
	char b1[32], when[32];

	printf("%-24s %8s %10s %-20s %6s\n", "SNAPSHOT", "EPOCH", "SIZE", "CREATED", "CLONES");
	json_array_foreach(a, i, v) {
		time_t t = (time_t)jint(v, "ctime");
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
		printf("%-24s %8" JSON_INTEGER_FORMAT " %10s %-20s %6" JSON_INTEGER_FORMAT "\n",
		       jstr(v, "name"), jint(v, "epoch"), hb(b1, sizeof(b1), jint(v, "size")),
		       when, jint(v, "clones"));
	}
}

static void print_human(const char *sub, json_t *rep)
{
	json_t *v;
	size_t i;
	char b[6][32];

	if ((v = json_object_get(rep, "volumes"))) {
		print_vols(v);
	} else if ((v = json_object_get(rep, "du"))) {
		json_t *e;

		printf("%-24s %10s %12s %10s %10s %10s %8s\n", "NAME", "LOGICAL", "PROVISIONED",
		       "USED", "EXCLUSIVE", "STORED", "ENTRIES");
		json_array_foreach(v, i, e)
			printf("%-24s %10s %12s %10s %10s %10s %8" JSON_INTEGER_FORMAT "\n",
			       jstr(e, "name"), hb(b[0], 32, jint(e, "logical")),
			       hb(b[1], 32, jint(e, "provisioned")),
			       hb(b[2], 32, jint(e, "used")),
			       hb(b[3], 32, jint(e, "exclusive")),
			       hb(b[4], 32, jint(e, "stored")), jint(e, "map_entries"));
	} else if ((v = json_object_get(rep, "extents"))) {
		json_t *e;

		printf("%-20s %-20s\n", "OFFSET", "LENGTH");
		json_array_foreach(v, i, e)
			printf("%-20" JSON_INTEGER_FORMAT " %-20" JSON_INTEGER_FORMAT "\n",
			       jint(e, "offset"), jint(e, "length"));
	} else if (!strcmp(sub, "info") && (v = json_object_get(rep, "volume"))) {
		printf("name:        %s\n", jstr(v, "name"));
		printf("size:        %" JSON_INTEGER_FORMAT " (%s)\n", jint(v, "size"),
		       hb(b[0], 32, jint(v, "size")));
		printf("chunk size:  %s\n", hb(b[1], 32, jint(v, "chunk_size")));
		printf("epoch:       %" JSON_INTEGER_FORMAT "\n", jint(v, "epoch"));
		if (*jstr(v, "origin"))
			printf("origin:      %s\n", jstr(v, "origin"));
		printf("snapshots:   %" JSON_INTEGER_FORMAT "\n", jint(v, "snapshots"));
		if (json_array_size(json_object_get(rep, "snapshots")))
			print_snaps(json_object_get(rep, "snapshots"));
	} else if ((v = json_object_get(rep, "snapshots"))) {
		print_snaps(v);
	} else if ((v = json_object_get(rep, "volume"))) {
		printf("%s: %s, chunk %s%s%s\n", jstr(v, "name"),
		       hb(b[0], 32, jint(v, "size")), hb(b[1], 32, jint(v, "chunk_size")),
		       *jstr(v, "origin") ? ", origin " : "", jstr(v, "origin"));
	} else {
		printf("ok\n");
	}
}

static int need(const struct vol_cli *c, int n, const char *what)
{
	if (c->nargs - 1 == n)
		return 0;
	return usage(c, "%s", what);
}

static int size_arg(const struct vol_cli *c, const char *s, const char *what,
		    json_int_t *out)
{
	uint64_t v;

	if (parse_size(s, &v) < 0 || v > (uint64_t)INT64_MAX) {
		char msg[128];

		snprintf(msg, sizeof(msg), "%s: '%%s': expected bytes with an optional K/M/G/T suffix",
			 what);
		return usage(c, msg, s);
	}
	*out = (json_int_t)v;
	return 0;
}

/* A VOL@SNAP argument must have both parts (usage error otherwise). */
static int snap_arg(const struct vol_cli *c, const char *s)
{
	const char *at = strchr(s, '@');

	if (!at || at == s || !at[1])
		return usage(c, "'%s': expected VOL@SNAP", s);
	return 0;
}

/* Build the request for c's subcommand; 0, or the exit status of a usage
 * error. */
static int build(const struct vol_cli *c, bool snap, json_t **req)
{
	const char *sub = c->args[0];
	char **a = c->args + 1;
	json_int_t size = 0, chunk = 0;
	int r;

	*req = NULL;
	if (snap) {
		if (!strcmp(sub, "create") || !strcmp(sub, "rm")) {
			if ((r = need(c, 1, "expected VOL@SNAP")) || (r = snap_arg(c, a[0])))
				return r;
			*req = json_pack("{s:s, s:s}", "cmd", !strcmp(sub, "rm") ? "snap.rm"
					 : "snap.create", "spec", a[0]);
		} else if (!strcmp(sub, "ls")) {
			if ((r = need(c, 1, "expected VOL")))
				return r;
			*req = json_pack("{s:s, s:s}", "cmd", "snap.ls", "name", a[0]);
		} else if (!strcmp(sub, "diff")) {
			if (c->nargs != 2 && c->nargs != 3)
				return usage(c, "%s", "expected VOL@SNAP [VOL@SNAP2]");
			if ((r = snap_arg(c, a[0])))
				return r;
			*req = json_pack("{s:s, s:s}", "cmd", "snap.diff", "from", a[0]);
			if (*req && c->nargs == 3)
				json_object_set_new(*req, "to", json_string(a[1]));
		} else {
			return usage(c, "unknown subcommand '%s'", sub);
		}
		goto done;
	}
	if (!strcmp(sub, "create")) {
		if ((r = need(c, 2, "expected NAME SIZE")) ||
		    (r = size_arg(c, a[1], "SIZE", &size)))
			return r;
		*req = json_pack("{s:s, s:s, s:I}", "cmd", "vol.create", "name", a[0],
				 "size", size);
		if (*req && c->chunk_size) {
			if ((r = size_arg(c, c->chunk_size, "--chunk-size", &chunk))) {
				json_decref(*req);
				*req = NULL;
				return r;
			}
			json_object_set_new(*req, "chunk_size", json_integer(chunk));
		}
	} else if (!strcmp(sub, "ls")) {
		if ((r = need(c, 0, "'ls' takes no argument")))
			return r;
		*req = json_pack("{s:s}", "cmd", "vol.ls");
	} else if (!strcmp(sub, "sync")) {
		if ((r = need(c, 0, "'sync' takes no argument")))
			return r;
		*req = json_pack("{s:s}", "cmd", "vol.sync");
		if (*req && c->timeout) {
			uint64_t ms;

			if (parse_u64(c->timeout, &ms) < 0 || ms > INT64_MAX) {
				json_decref(*req);
				*req = NULL;
				return usage(c, "--timeout: '%s': expected milliseconds",
					     c->timeout);
			}
			json_object_set_new(*req, "timeout_ms", json_integer((json_int_t)ms));
		}
	} else if (!strcmp(sub, "info") || !strcmp(sub, "rm") || !strcmp(sub, "flatten")) {
		char cmd[32];

		if ((r = need(c, 1, "expected NAME")))
			return r;
		snprintf(cmd, sizeof(cmd), "vol.%s", sub);
		*req = json_pack("{s:s, s:s}", "cmd", cmd, "name", a[0]);
	} else if (!strcmp(sub, "resize")) {
		if ((r = need(c, 2, "expected NAME SIZE")) ||
		    (r = size_arg(c, a[1], "SIZE", &size)))
			return r;
		*req = json_pack("{s:s, s:s, s:I}", "cmd", "vol.resize", "name", a[0],
				 "size", size);
	} else if (!strcmp(sub, "rename")) {
		if ((r = need(c, 2, "expected OLD NEW")))
			return r;
		*req = json_pack("{s:s, s:s, s:s}", "cmd", "vol.rename", "name", a[0],
				 "new_name", a[1]);
	} else if (!strcmp(sub, "rollback")) {
		if ((r = need(c, 1, "expected NAME@SNAP")) || (r = snap_arg(c, a[0])))
			return r;
		*req = json_pack("{s:s, s:s}", "cmd", "vol.rollback", "spec", a[0]);
	} else if (!strcmp(sub, "du")) {
		if (c->nargs > 2)
			return usage(c, "%s", "expected [NAME]");
		*req = json_pack("{s:s}", "cmd", "vol.du");
		if (*req && c->nargs == 2)
			json_object_set_new(*req, "name", json_string(a[0]));
	} else if (!strcmp(sub, "warm")) {
		json_int_t rate = 0;

		if ((r = need(c, 1, "expected NAME or VOL@SNAP")))
			return r;
		if (c->rate && (r = size_arg(c, c->rate, "--rate", &rate)))
			return r;
		*req = json_pack("{s:s, s:s, s:I}", "cmd", "vol.warm", "spec", a[0],
				 "rate", rate);
	} else if (!strcmp(sub, "clone")) {
		if ((r = need(c, 2, "expected VOL@SNAP NEW")) || (r = snap_arg(c, a[0])))
			return r;
		*req = json_pack("{s:s, s:s, s:s}", "cmd", "vol.clone", "spec", a[0],
				 "new_name", a[1]);
	} else {
		return usage(c, "unknown subcommand '%s'", sub);
	}
done:
	if (c->chunk_size && (snap || strcmp(sub, "create")))
		return usage(c, "%s", "--chunk-size only goes with 'vol create'");
	if (!*req) {
		fprintf(stderr, "%s: out of memory\n", c->who);
		return 1;
	}
	return 0;
}

/* Poll the daemon's status until warm job id ends; progress on stdout. */
static int warm_follow(const struct vol_cli *c, const char *path, json_int_t id)
{
	bool tty = isatty(STDOUT_FILENO);

	for (;;) {
		json_t *req = json_pack("{s:s, s:s}", "cmd", "status", "format", "json");
		json_t *rep = NULL, *jobs, *j, *found = NULL;
		const char *state;
		char b[3][32];
		size_t i;
		int rc;

		if (!req)
			return 1;
		rc = ctl_call(c->who, path, req, &rep);
		json_decref(req);
		if (rc)
			return rc;
		jobs = json_object_get(json_object_get(rep, "volumes"), "warm");
		json_array_foreach(jobs, i, j)
			if (jint(j, "id") == id)
				found = j;
		if (!found) {
			fprintf(stderr, "%s warm: job %lld is no longer listed\n", c->who,
				(long long)id);
			json_decref(rep);
			return 1;
		}
		state = json_string_value(json_object_get(found, "state")) ?: "?";
		printf("%swarm %s: %s / %s, %s/s, %s%s", tty ? "\r" : "",
		       json_string_value(json_object_get(found, "spec")) ?: "?",
		       hb(b[0], 32, jint(found, "done")), hb(b[1], 32, jint(found, "total")),
		       hb(b[2], 32, jint(found, "rate")), state, tty ? "   " : "\n");
		fflush(stdout);
		if (strcmp(state, "queued") && strcmp(state, "running")) {
			if (tty)
				printf("\n");
			rc = strcmp(state, "done") ? 1 : 0;
			if (rc)
				fprintf(stderr, "%s warm: %s\n", c->who,
					json_string_value(json_object_get(found, "error")) ?: state);
			json_decref(rep);
			return rc;
		}
		json_decref(rep);
		usleep(500 * 1000);
	}
}

static int vol_main(int argc, char **argv, bool snap)
{
	static const struct option longopts[] = {
		{ "control",    required_argument, NULL, 'c' },
		{ "config",     required_argument, NULL, 'f' },
		{ "json",       no_argument,       NULL, 'j' },
		{ "chunk-size", required_argument, NULL, 's' },
		{ "rate",       required_argument, NULL, 'r' },
		{ "timeout",    required_argument, NULL, 'T' },
		{ "wait",       no_argument,       NULL, 'w' },
		{ "no-wait",    no_argument,       NULL, 'W' },
		{ "help",       no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vol_cli c = { .who = snap ? "nbdsrv snap" : "nbdsrv vol" };
	json_t *req = NULL, *rep = NULL;
	char path[512];
	int o, rc;

	opterr = 0;
	optind = 1;
	while ((o = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (o) {
		case 'c': c.control = optarg; break;
		case 'f': c.config = optarg; break;
		case 'j': c.json = true; break;
		case 's': c.chunk_size = optarg; break;
		case 'r': c.rate = optarg; break;
		case 'T': c.timeout = optarg; break;
		case 'w': c.wait = 1; break;
		case 'W': c.wait = -1; break;
		case 'h': vol_usage(stdout); return 0;
		case ':': return usage(&c, "%s: missing argument", argv[optind - 1]);
		default: return usage(&c, "unknown option '%s'", argv[optind - 1]);
		}
	}
	c.args = argv + optind;
	c.nargs = argc - optind;
	if (c.nargs < 1)
		return usage(&c, "%s", "a subcommand is required");
	if ((c.rate || c.wait) && (snap || strcmp(c.args[0], "warm")))
		return usage(&c, "%s", "--rate, --wait, --no-wait only go with 'vol warm'");
	if (c.timeout && (snap || strcmp(c.args[0], "sync")))
		return usage(&c, "%s", "--timeout only goes with 'vol sync'");
	rc = build(&c, snap, &req);
	if (rc)
		return rc;
	rc = ctl_resolve(c.who, c.control, c.config, path, sizeof(path));
	if (rc == 0)
		rc = ctl_call(c.who, path, req, &rep);
	json_decref(req);
	if (rc)
		return rc;
	if (!json_is_true(json_object_get(rep, "ok"))) {
		fprintf(stderr, "%s %s: %s\n", c.who, c.args[0],
			json_string_value(json_object_get(rep, "error")) ?: "refused");
		json_decref(rep);
		return 1;
	}
	if (!snap && !strcmp(c.args[0], "warm") &&
	    (c.wait > 0 || (c.wait == 0 && isatty(STDOUT_FILENO)))) {
		rc = warm_follow(&c, path, jint(rep, "warm_id"));
		json_decref(rep);
		return rc;
	}
	if (c.json) {
		char *s = json_dumps(rep, JSON_COMPACT);

		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		print_human(c.args[0], rep);
	}
	json_decref(rep);
	return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_vol(int argc, char **argv)
{
	return vol_main(argc, argv, false);
}

int cmd_snap(int argc, char **argv)
{
	return vol_main(argc, argv, true);
}
