/*
 * cmd_key.c — `nbdsrv key generate [--force] FILE` and `nbdsrv key check
 * FILE`: the pool master key file that codec/ (FLECC) encrypts every chunk
 * under.
 *
 *   generate  32 random bytes into a new file of mode 0600
 *             (codec_key_generate).  An existing file is never touched:
 *             replacing a key makes every chunk written under it
 *             unreadable, so that takes --force, and even then the new key
 *             is written beside the old one and renamed over it, so FILE
 *             holds one whole key or the other at every moment.
 *   check     codec_key_load: prints "ok" (exit 0) or why the daemon would
 *             refuse the file — missing, wrong size, readable by
 *             group/others, not a regular file, a symbolic link (exit 1).
 *
 * The key itself is never printed.
 */
#include "codec/codec.h"
#include "nbdsrv/cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void key_usage(FILE *f)
{
	fprintf(f,
		"usage: nbdsrv key generate [--force] FILE   create a new pool key (mode 0600)\n"
		"       nbdsrv key check FILE                 is FILE a usable pool key?\n");
}

/* Make a rename or creation in path's directory durable.  0 or -errno. */
static int key_sync_dir(const char *path)
{
	char buf[PATH_MAX];
	int fd, r = 0;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* --force over an existing path: a new key beside it, renamed over it. */
static int key_replace(const char *path)
{
	char tmp[PATH_MAX], err[512];
	int r;

	if (snprintf(tmp, sizeof(tmp), "%s.new-%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		fprintf(stderr, "nbdsrv key: %s: path too long\n", path);
		return 1;
	}
	r = codec_key_generate(tmp, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "nbdsrv key: %s\n", err);
		return 1;
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		fprintf(stderr, "nbdsrv key: cannot replace %s: %s\n", path, strerror(-r));
		return 1;
	}
	return 0;
}

static int key_generate(const char *path, bool force)
{
	char err[512];
	int r;

	if (force && access(path, F_OK) == 0) {
		if (key_replace(path))
			return 1;
	} else {
		r = codec_key_generate(path, err, sizeof(err));
		if (r == -EEXIST) {
			fprintf(stderr, "nbdsrv key: %s already exists; not overwriting it (data "
				"encrypted under that key would become unreadable). Use --force "
				"to replace it.\n", path);
			return 1;
		}
		if (r < 0) {
			fprintf(stderr, "nbdsrv key: %s\n", err);
			return 1;
		}
	}
	r = key_sync_dir(path);
	if (r < 0) {
		fprintf(stderr, "nbdsrv key: %s written, but its directory could not be synced: "
			"%s\n", path, strerror(-r));
		return 1;
	}
	printf("wrote a new %d-byte key to %s (mode 0600)\n", CODEC_KEY_SIZE, path);
	return 0;
}

static int key_check(const char *path)
{
	struct codec_key *k = NULL;
	char err[512];
	int r;

	r = codec_key_load(path, &k, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "nbdsrv key: %s\n", err);
		return 1;
	}
	codec_key_free(k);
	printf("ok\n");
	return 0;
}

int cmd_key(int argc, char **argv)
{
	const char *path = NULL;
	bool force = false, gen;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
			  !strcmp(argv[1], "help"))) {
		key_usage(stdout);
		return 0;
	}
	if (argc < 2 || (strcmp(argv[1], "generate") && strcmp(argv[1], "check"))) {
		if (argc >= 2)
			fprintf(stderr, "nbdsrv key: unknown action '%s'\n", argv[1]);
		key_usage(stderr);
		return 2;
	}
	gen = !strcmp(argv[1], "generate");
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (gen && (!strcmp(a, "--force") || !strcmp(a, "-f"))) {
			force = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			key_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--") && i + 1 < argc) {
			a = argv[++i];
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "nbdsrv key: unknown option '%s'\n", a);
			key_usage(stderr);
			return 2;
		}
		if (path) {
			fprintf(stderr, "nbdsrv key: one FILE only ('%s' is extra)\n", a);
			key_usage(stderr);
			return 2;
		}
		path = a;
	}
	if (!path || !*path) {
		fprintf(stderr, "nbdsrv key %s: FILE is required\n", argv[1]);
		key_usage(stderr);
		return 2;
	}
	return gen ? key_generate(path, force) : key_check(path);
}
