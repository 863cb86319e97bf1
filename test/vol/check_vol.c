/*
 * check_vol.c — vol/ against a plain model, crash recovery, O(1) costs and
 * bad input.
 *
 *   model    the model test of vmodel.c (random writes/zeroes/trims/
 *            snapshots/clones/rollbacks/flattens/deletes/resizes/flushes/
 *            GC/reopens on vol and on byte arrays; every read and block
 *            status must match) over memstore; at the end, with everything
 *            deleted, no object may be left and each dropped object must be
 *            dropped exactly once and be in the gc table.  check_vol_store
 *            runs the same model over the SSD cache and a pool.
 *   crash    a child does random work on a persistent file-per-object
 *            store with periodic flushes, recording (fsynced) the dump of
 *            the metadata each commit makes durable and a hash of every
 *            view; it is SIGKILLed at a random time; the store must reopen
 *            cleanly, pass vol_check, equal the last recorded dump (or the
 *            one of the commit in progress), and every snapshot — and every
 *            head not written since — must read exactly as recorded.
 *   costs    snapshot/clone creation writes the same entries for 1 GiB and
 *            1 TiB volumes; a lookup is one LMDB seek with 1 or 200
 *            snapshots.
 *   input    names, sizes, chunk sizes, unknown names, clones blocking a
 *            snapshot delete, format version, pool id, a second opener.
 *
 * Seeds: NBDSRV_SEED=<n> replays; every randomized test prints its seed.
 */
#include "vmodel.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char basedir[64];     /* per suite run: removed even after failures */
static char tmpdir[96];      /* per test, inside basedir */

static void rm_rf(const char *d)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d);
}

/* Unchecked fixture: runs in the runner process, so its teardown runs even
 * when a test's process died on a failed assertion. */
static void base_setup(void)
{
	snprintf(basedir, sizeof(basedir), "/tmp/check_vol.XXXXXX");
	if (!mkdtemp(basedir))
		basedir[0] = 0;
}

static void base_teardown(void)
{
	if (basedir[0])
		rm_rf(basedir);
}

static void dir_setup(void)
{
	ck_assert_msg(basedir[0], "cannot create a temporary directory");
	snprintf(tmpdir, sizeof(tmpdir), "%s/t.XXXXXX", basedir);
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void dir_teardown(void)
{
	if (tmpdir[0])
		rm_rf(tmpdir);
	tmpdir[0] = 0;
}

static const uint8_t POOL_ID[16] = "test-pool-id-16b";

static int pool_open(const char *path, struct objstore *s, bool create,
		     uint64_t delay, struct vol_pool **p)
{
	struct vol_pool_opts o = {
		.path = path, .create = create, .store = s, .k = 4, .m = 2,
		.commit_delay_ns = delay,
	};

	memcpy(o.pool_id, POOL_ID, 16);
	return vol_pool_open(&o, p);
}

/* Count gc entries and check each was dropped by the store exactly once. */
static uint64_t gc_entries_checked(struct vol_pool *p, struct objstore *s)
{
	struct meta_txn *t = meta_rbegin(vol_pool_meta(p));
	uint8_t k[8] = { 0 }, kout[8];
	uint64_t n = 0;
	size_t kl;

	ck_assert_ptr_nonnull(t);
	for (enum meta_seek how = META_GE;; how = META_GT) {
		uint64_t id = 0;

		if (meta_seek(t, META_T_GC, how, k, 8, kout, 8, &kl, NULL, 0) < 0)
			break;
		memcpy(k, kout, 8);
		for (int i = 0; i < 8; i++)
			id = id << 8 | kout[i];
		ck_assert_msg(memstore_was_dropped(s, id),
			      "object %llu is in gc but was never dropped",
			      (unsigned long long)id);
		n++;
	}
	meta_end(t);
	return n;
}

static char *mem_dir;
static struct objstore *mem_store;

static void mem_reopen(struct vm_env *e, uint64_t op)
{
	ck_assert_int_eq(vol_pool_close(e->p), 0);
	ck_assert_msg(pool_open(mem_dir, mem_store, false, 0, &e->p) == 0,
		      "op %llu: reopen: %s", (unsigned long long)op, vol_last_error());
}

START_TEST(test_model)
{
	struct vm_env e = { .reopen = mem_reopen };
	struct memstore_stats ms;
	struct meta_stats st;
	uint64_t nops = getenv("NBDSRV_VOL_OPS") ? strtoull(getenv("NBDSRV_VOL_OPS"),
			NULL, 0) : 2500;

	seed_init("test_model");
	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	ck_assert_int_eq(memstore_create(true, &mem_store), 0);
	mem_dir = tmpdir;
	ck_assert_msg(pool_open(tmpdir, mem_store, true, 0, &e.p) == 0, "%s",
		      vol_last_error());
	vmodel_run(&e, nops);
	ck_assert_int_eq(meta_get_stats(vol_pool_meta(e.p), &st), 0);
	memstore_get_stats(mem_store, &ms);
	printf("test_model: %llu ops, %llu objects dropped, %llu commits\n",
	       (unsigned long long)nops, (unsigned long long)ms.drops,
	       (unsigned long long)st.commits);
	ck_assert_uint_eq(ms.objects, 0);
	ck_assert_uint_eq(ms.double_drops, 0);
	ck_assert_uint_eq(ms.writes_after_drop, 0);
	ck_assert_uint_eq(ms.drops_unknown, 0);
	ck_assert_uint_eq(gc_entries_checked(e.p, mem_store), ms.drops);
	ck_assert_uint_eq(st.entries[META_T_GC], ms.drops);
	ck_assert_int_eq(vol_pool_close(e.p), 0);
	objstore_close(mem_store);
	loop_fini(&test_loop);
}
END_TEST

/* -------------------------------------------------------------- crash -- */

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[256], tmp[272];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) ||
	    fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0)
		_exit(3);
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static char *read_file(const char *dir, const char *name)
{
	char path[256];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	fclose(f);
	return buf;
}

static char *dump_str(struct vol_pool *p)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (!f || vol_dump(p, f) < 0)
		return NULL;
	fclose(f);
	return buf;
}

/* A persistent object store for the crash test: one file per object,
 * created from its base's file, fsynced on flush, unlinked on drop. */
struct filestore {
	struct objstore base;
	char dir[160];
	uint64_t dirty[4096];
	size_t ndirty;
};

static void fs_path(struct filestore *fs, uint64_t id, char *out, size_t cap)
{
	snprintf(out, cap, "%s/o%llu", fs->dir, (unsigned long long)id);
}

static int fs_get(struct filestore *fs, uint64_t id, uint64_t base)
{
	char path[200], bpath[200];
	uint8_t *buf;
	int fd, bfd;
	ssize_t n;

	fs_path(fs, id, path, sizeof(path));
	fd = open(path, O_RDWR);
	if (fd >= 0)
		return fd;
	fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		return -errno;
	if (fs->ndirty < ARRAY_SIZE(fs->dirty))
		fs->dirty[fs->ndirty++] = id;
	if (!base)
		return fd;
	fs_path(fs, base, bpath, sizeof(bpath));
	bfd = open(bpath, O_RDONLY);
	if (bfd < 0)
		return fd;
	buf = malloc(VOL_CHUNK_MAX);
	n = buf ? read(bfd, buf, VOL_CHUNK_MAX) : -1;
	if (n > 0 && write(fd, buf, (size_t)n) != n)
		n = -1;
	free(buf);
	close(bfd);
	if (n < 0) {
		close(fd);
		return -EIO;
	}
	return fd;
}

static void fs_read(struct objstore *s, struct objstore_io *io)
{
	struct filestore *fs = (struct filestore *)s;
	char path[200];
	ssize_t n = 0;
	int fd;

	fs_path(fs, io->obj, path, sizeof(path));
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		n = pread(fd, io->buf, io->len, (off_t)io->off);
		close(fd);
	}
	if (n < 0)
		n = 0;
	memset((uint8_t *)io->buf + n, 0, io->len - (size_t)n);
	objstore_complete(io, fd >= 0 ? 0 : -EIO);
}

static void fs_modify(struct objstore *s, struct objstore_io *io)
{
	struct filestore *fs = (struct filestore *)s;
	int fd = fs_get(fs, io->obj, io->base), r = 0;
	uint8_t *z = NULL;
	const void *src = io->buf;

	if (fd < 0) {
		objstore_complete(io, fd);
		return;
	}
	if (!src) {
		struct stat st;

		/* zero: only what exists (beyond EOF reads as zeros) */
		if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > io->off) {
			uint64_t len = MIN(io->len, (uint64_t)st.st_size - io->off);

			z = calloc(1, len);
			if (!z || pwrite(fd, z, len, (off_t)io->off) != (ssize_t)len)
				r = -EIO;
		}
	} else if (pwrite(fd, src, io->len, (off_t)io->off) != (ssize_t)io->len) {
		r = -EIO;
	}
	free(z);
	if (r == 0 && fs->ndirty < ARRAY_SIZE(fs->dirty))
		fs->dirty[fs->ndirty++] = io->obj;
	close(fd);
	objstore_complete(io, r);
}

static void fs_flush(struct objstore *s, struct objstore_io *io)
{
	struct filestore *fs = (struct filestore *)s;
	char path[200];
	int fd, r = 0;

	for (size_t i = 0; i < fs->ndirty; i++) {
		fs_path(fs, fs->dirty[i], path, sizeof(path));
		fd = open(path, O_RDONLY);
		if (fd >= 0) {
			if (fsync(fd) < 0)
				r = -EIO;
			close(fd);
		}
	}
	fs->ndirty = 0;
	fd = open(fs->dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	objstore_complete(io, r);
}

static void fs_drop(struct objstore *s, uint64_t obj)
{
	struct filestore *fs = (struct filestore *)s;
	char path[200];

	fs_path(fs, obj, path, sizeof(path));
	unlink(path);
}

static void fs_close(struct objstore *s)
{
	free(s);
}

static const struct objstore_ops filestore_ops = {
	.name = "filestore", .read = fs_read, .write = fs_modify,
	.zero = fs_modify, .flush = fs_flush, .drop = fs_drop, .close = fs_close,
};

static struct objstore *filestore_create(const char *dir)
{
	struct filestore *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return NULL;
	fs->base.ops = &filestore_ops;
	snprintf(fs->dir, sizeof(fs->dir), "%s", dir);
	mkdir(dir, 0700);
	return &fs->base;
}

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* "spec hash" lines for every head and snapshot, in name order. */
static char *hashes_str(struct vol_pool *p)
{
	struct vol_info *vi;
	size_t nv, n = 0;
	char *out = NULL;
	FILE *f = open_memstream(&out, &n);

	if (!f || vol_list(p, &vi, &nv) < 0)
		return NULL;
	for (size_t i = 0; i < nv; i++) {
		struct vol_snap_info *si;
		size_t ns;

		if (vol_snap_list(p, vi[i].name, &si, &ns) < 0)
			return NULL;
		for (size_t j = 0; j <= ns; j++) {
			char spec[2 * VOL_NAME_MAX + 2];
			struct vol_view *v;
			uint8_t *buf;
			uint64_t sz;

			if (j < ns)
				snprintf(spec, sizeof(spec), "%s@%s", vi[i].name, si[j].name);
			else
				snprintf(spec, sizeof(spec), "%s", vi[i].name);
			if (vol_view_open(p, spec, &v) < 0)
				return NULL;
			sz = vol_view_size(v);
			buf = malloc(sz);
			if (!buf || run_io(vol_read, v, 0, sz, buf, 0) < 0)
				return NULL;
			fprintf(f, "%s %016llx\n", spec,
				(unsigned long long)fnv(buf, sz, 0xcbf29ce484222325ull));
			free(buf);
			vol_view_close(v);
		}
		free(si);
	}
	free(vi);
	fclose(f);
	return out;
}

/* Compare the store's views with a recorded hash list: snapshots always,
 * heads unless the volume was written after that commit (its name is in
 * `touched`). */
static void hashes_check(struct vol_pool *p, const char *rec_hashes,
			 const char *touched, int it)
{
	char *now = hashes_str(p), *line, *save = NULL, *copy;

	ck_assert_msg(now, "iteration %d: a view cannot be read after the crash "
		      "(object missing from the store?)", it);
	copy = strdup(rec_hashes);
	for (line = strtok_r(copy, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char spec[160], key[170];
		const char *hit;

		if (sscanf(line, "%159s", spec) != 1)
			continue;
		snprintf(key, sizeof(key), "\n%s\n", spec);
		if (!strchr(spec, '@') && touched && strstr(touched, key))
			continue;       /* written after the commit: either */
		snprintf(key, sizeof(key), "%s\n", line);
		hit = strstr(now, key);
		ck_assert_msg(hit && (hit == now || hit[-1] == '\n'),
			      "iteration %d: view content changed across the crash: "
			      "recorded '%s'\n--- now\n%s", it, line, now);
	}
	free(copy);
	free(now);
}

/* Append "\nname\n" to touched.<n> (fsynced) before the first write to a
 * volume after commit n. */
static void note_touched(const char *rec, long n, const char *name)
{
	char fn[32], *cur, key[80], *nx;

	snprintf(fn, sizeof(fn), "touched.%ld", n);
	cur = read_file(rec, fn);
	snprintf(key, sizeof(key), "\n%s\n", name);
	if (cur && strstr(cur, key)) {
		free(cur);
		return;
	}
	if (asprintf(&nx, "%s%s\n", cur ? cur : "\n", name) < 0)
		_exit(3);
	write_file(rec, fn, nx);
	free(nx);
	free(cur);
}

/* The child: random metadata work forever, recording each commit. */
static void crash_child(const char *meta, const char *rec, uint64_t seed, long first)
{
	struct objstore *store;
	struct vol_pool *p;
	struct vol_view *v;
	long n = first;
	uint8_t buf[8192];
	char name[32], nn[32];

	char objdir[160], touched[96];

	rng_state = seed;
	snprintf(objdir, sizeof(objdir), "%s/../objs", meta);
	if (loop_init(&test_loop, 256) < 0 || !(store = filestore_create(objdir)) ||
	    pool_open(meta, store, false, UINT64_MAX, &p) < 0)
		_exit(2);
	snprintf(touched, sizeof(touched), "touched.%ld", n);
	write_file(rec, touched, "\n");
	for (uint64_t op = 0;; op++) {
		struct vol_info *vi;
		struct vol_snap_info *si;
		size_t nv = 0, ns = 0;
		int k = (int)rndn(100);

		if (vol_list(p, &vi, &nv) < 0)
			_exit(4);
		if (nv == 0 || k < 5) {
			snprintf(name, sizeof(name), "v%llu", (unsigned long long)rnd() % 1000);
			vol_create(p, name, (1 + rndn(16)) * CS, CS);
		} else {
			struct vol_info *x = &vi[rndn(nv)];
			uint64_t off = rndn(x->size);
			uint64_t len = 1 + rndn(MIN(sizeof(buf), x->size - off));

			if (vol_snap_list(p, x->name, &si, &ns) < 0)
				_exit(5);
			if (k < 50) {
				memset(buf, (int)rnd(), sizeof(buf));
				note_touched(rec, n, x->name);
				if (vol_view_open(p, x->name, &v) == 0) {
					if (rndn(3) == 0) {
						off = ROUND_DOWN(off, CS);
						len = CS;
						run_io(vol_zero, v, off, len, NULL, 0);
					} else {
						run_io(vol_write, v, off, len, buf, 0);
					}
					vol_view_close(v);
				}
			} else if (k < 60) {
				snprintf(nn, sizeof(nn), "s%llu", (unsigned long long)rnd() % 1000);
				vol_snap_create(p, x->name, nn);
			} else if (k < 66 && ns) {
				vol_snap_delete(p, x->name, si[rndn(ns)].name);
			} else if (k < 70 && ns) {
				snprintf(nn, sizeof(nn), "c%llu", (unsigned long long)rnd() % 1000);
				vol_clone(p, x->name, si[rndn(ns)].name, nn);
			} else if (k < 73) {
				vol_flatten(p, x->name);
			} else if (k < 77 && ns) {
				vol_rollback(p, x->name, si[rndn(ns)].name);
			} else if (k < 81) {
				vol_resize(p, x->name, (1 + rndn(16)) * CS);
			} else if (k < 85) {
				vol_delete(p, x->name);
			} else if (k < 92) {
				vol_gc(p, 1 + rndn(10));
			} else {
				char *d = dump_str(p), *h = hashes_str(p);
				char fn[32], num[32];

				if (!d || !h)
					_exit(6);
				snprintf(fn, sizeof(fn), "hash.%ld", n + 1);
				write_file(rec, fn, h);
				free(h);
				snprintf(fn, sizeof(fn), "touched.%ld", n + 1);
				write_file(rec, fn, "\n");
				snprintf(fn, sizeof(fn), "dump.%ld", n + 1);
				write_file(rec, fn, d);
				snprintf(num, sizeof(num), "%ld", n + 1);
				write_file(rec, "pending", num);
				free(d);
				/* the NBD FLUSH path (objstore flush + group
				 * commit on the loop), or a blocking sync */
				if (rndn(2) && vol_view_open(p, x->name, &v) == 0) {
					if (run_io(vol_flush, v, 0, 0, NULL, 0) < 0)
						_exit(7);
					vol_view_close(v);
				} else if (vol_sync(p) < 0) {
					_exit(7);
				}
				n++;
				write_file(rec, "done", num);
			}
			free(si);
		}
		free(vi);
	}
}

START_TEST(test_crash)
{
	char meta[160], rec[160];
	struct objstore *store;
	struct vol_pool *p;
	int iters = getenv("NBDSRV_CRASH_ITERS") ? atoi(getenv("NBDSRV_CRASH_ITERS")) : 12;
	uint64_t seed = seed_init("test_crash");
	char objdir[160];
	long done = 0;

	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	snprintf(meta, sizeof(meta), "%s/meta", tmpdir);
	snprintf(rec, sizeof(rec), "%s/rec", tmpdir);
	ck_assert_int_eq(mkdir(rec, 0700), 0);
	snprintf(objdir, sizeof(objdir), "%s/objs", tmpdir);
	store = filestore_create(objdir);
	ck_assert_ptr_nonnull(store);
	ck_assert_int_eq(pool_open(meta, store, true, 0, &p), 0);
	ck_assert_int_eq(vol_pool_close(p), 0);
	objstore_close(store);
	write_file(rec, "dump.0", "");
	write_file(rec, "hash.0", "");
	write_file(rec, "done", "0");

	for (int it = 0; it < iters; it++) {
		char *d, *dd, *dp, *s, fn[32];
		long pend = -1;
		pid_t pid;
		int status;

		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			crash_child(meta, rec, seed + (uint64_t)it * 7919, done);
		usleep((useconds_t)(20000 + rndn(150000)));
		kill(pid, SIGKILL);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFSIGNALED(status),
			      "iteration %d: child exited early (status %d)", it,
			      WEXITSTATUS(status));

		s = read_file(rec, "done");
		ck_assert_ptr_nonnull(s);
		done = atol(s);
		free(s);
		s = read_file(rec, "pending");
		if (s) {
			pend = atol(s);
			free(s);
		}
		store = filestore_create(objdir);
		ck_assert_ptr_nonnull(store);
		ck_assert_msg(pool_open(meta, store, false, 0, &p) == 0,
			      "iteration %d: reopen: %s", it, vol_last_error());
		ck_assert_msg(vol_check(p) == 0, "iteration %d: %s", it, vol_last_error());
		d = dump_str(p);
		ck_assert_ptr_nonnull(d);
		snprintf(fn, sizeof(fn), "dump.%ld", done);
		dd = read_file(rec, fn);
		ck_assert_ptr_nonnull(dd);
		dp = NULL;
		if (pend > done) {
			snprintf(fn, sizeof(fn), "dump.%ld", pend);
			dp = read_file(rec, fn);
		}
		ck_assert_msg(!strcmp(d, dd) || (dp && !strcmp(d, dp)),
			      "iteration %d: the store after the crash is neither the "
			      "state of commit %ld nor of the commit in progress:\n"
			      "--- store\n%s--- commit %ld\n%s", it, done, d, done, dd);
		{
			bool in_flight = dp && !strcmp(d, dp) && strcmp(d, dd);
			long at = in_flight ? pend : done;
			char *h, *tch;

			snprintf(fn, sizeof(fn), "hash.%ld", at);
			h = read_file(rec, fn);
			ck_assert_ptr_nonnull(h);
			snprintf(fn, sizeof(fn), "touched.%ld", at);
			tch = read_file(rec, fn);
			hashes_check(p, h, tch, it);
			free(h);
			free(tch);
			h = hashes_str(p);
			ck_assert_ptr_nonnull(h);
			snprintf(fn, sizeof(fn), "hash.%ld", (done + 1 > pend ? done + 1 : pend + 1));
			write_file(rec, fn, h);
			free(h);
		}
		printf("test_crash: iteration %d ok (commit %ld%s, %zu bytes of dump)\n",
		       it, done, dp && !strcmp(d, dp) && strcmp(d, dd) ?
		       " + the one in flight" : "", strlen(d));
		/* this state is the base of the next iteration */
		done = done + 1 > pend ? done + 1 : pend + 1;
		snprintf(fn, sizeof(fn), "dump.%ld", done);
		write_file(rec, fn, d);
		snprintf(fn, sizeof(fn), "%ld", done);
		write_file(rec, "done", fn);
		free(d);
		free(dd);
		free(dp);
		ck_assert_int_eq(vol_pool_close(p), 0);
		objstore_close(store);
	}
	loop_fini(&test_loop);
}
END_TEST

/* -------------------------------------------------------------- costs -- */

static uint64_t total_entries(struct meta_stats *st)
{
	uint64_t n = 0;

	for (int i = META_T_VOLS; i < META_T_COUNT; i++)
		n += st->entries[i];
	return n;
}

START_TEST(test_o1)
{
	struct objstore *store;
	struct vol_pool *p;
	struct meta *m;
	struct meta_stats a, b;
	struct vol_view *v, *sv;
	struct vol_extent ext[4];
	uint64_t snap_delta[2], snap_ops[2], clone_delta[2], clone_ops[2];
	const uint64_t sizes[2] = { 1ull << 30, 1ull << 40 };
	uint8_t buf[4096];
	char name[32];

	ck_assert_int_eq(loop_init(&test_loop, 256), 0);
	ck_assert_int_eq(memstore_create(false, &store), 0);
	ck_assert_int_eq(pool_open(tmpdir, store, true, UINT64_MAX, &p), 0);
	m = vol_pool_meta(p);
	memset(buf, 0xab, sizeof(buf));
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "big%d", i);
		ck_assert_int_eq(vol_create(p, name, sizes[i], CS), 0);
		ck_assert_int_eq(vol_view_open(p, name, &v), 0);
		for (int j = 0; j < (i ? 400 : 40); j++)
			ck_assert_int_eq(run_io(vol_write, v,
				(uint64_t)j * (sizes[i] / 400 / CS) * CS, sizeof(buf), buf, 0), 0);
		vol_view_close(v);
		ck_assert_int_eq(vol_sync(p), 0);
		ck_assert_int_eq(vol_snap_create(p, name, "warm"), 0);
		ck_assert_int_eq(vol_sync(p), 0);

		meta_get_stats(m, &a);
		ck_assert_int_eq(vol_snap_create(p, name, "s"), 0);
		meta_get_stats(m, &b);
		snap_ops[i] = b.staged_ops - a.staged_ops;
		ck_assert_int_eq(vol_sync(p), 0);
		meta_get_stats(m, &b);
		snap_delta[i] = total_entries(&b) - total_entries(&a);

		meta_get_stats(m, &a);
		{
			char cname[40];

			snprintf(cname, sizeof(cname), "%sc", name);
			ck_assert_int_eq(vol_clone(p, name, "s", cname), 0);
		}
		meta_get_stats(m, &b);
		clone_ops[i] = b.staged_ops - a.staged_ops;
		ck_assert_int_eq(vol_sync(p), 0);
		meta_get_stats(m, &b);
		clone_delta[i] = total_entries(&b) - total_entries(&a);
		printf("test_o1: %s volume: snapshot %llu staged ops / %llu new entries,"
		       " clone %llu / %llu\n", i ? "1 TiB" : "1 GiB",
		       (unsigned long long)snap_ops[i], (unsigned long long)snap_delta[i],
		       (unsigned long long)clone_ops[i], (unsigned long long)clone_delta[i]);
	}
	ck_assert_uint_eq(snap_delta[0], 1);
	ck_assert_uint_eq(snap_delta[1], 1);
	ck_assert_uint_le(snap_ops[0], 3);
	ck_assert_uint_eq(snap_ops[0], snap_ops[1]);
	ck_assert_uint_eq(clone_delta[0], 2);
	ck_assert_uint_eq(clone_delta[1], 2);
	ck_assert_uint_le(clone_ops[1], 3);

	/* 200 snapshots, chunk 0 rewritten between each: 200 entries */
	ck_assert_int_eq(vol_create(p, "chain", 16 * CS, CS), 0);
	ck_assert_int_eq(vol_create(p, "single", 16 * CS, CS), 0);
	ck_assert_int_eq(vol_view_open(p, "single", &v), 0);
	ck_assert_int_eq(run_io(vol_write, v, 0, sizeof(buf), buf, 0), 0);
	vol_view_close(v);
	ck_assert_int_eq(vol_snap_create(p, "single", "s"), 0);
	ck_assert_int_eq(vol_view_open(p, "chain", &v), 0);
	for (int j = 0; j < 200; j++) {
		buf[0] = (uint8_t)j;
		ck_assert_int_eq(run_io(vol_write, v, 0, sizeof(buf), buf, 0), 0);
		snprintf(name, sizeof(name), "s%d", j);
		ck_assert_int_eq(vol_snap_create(p, "chain", name), 0);
	}
	ck_assert_int_eq(vol_sync(p), 0);
	ck_assert_int_eq(vol_view_open(p, "chain@s17", &sv), 0);
	for (int which = 0; which < 3; which++) {
		struct vol_view *x = which == 0 ? v : which == 1 ? sv : NULL;

		if (!x)
			ck_assert_int_eq(vol_view_open(p, "single", &x), 0);
		meta_get_stats(m, &a);
		ck_assert_int_eq(vol_block_status(x, 0, CS, ext, 4), 1);
		meta_get_stats(m, &b);
		ck_assert_uint_eq(b.lmdb_seeks - a.lmdb_seeks, 1);
		meta_get_stats(m, &a);
		ck_assert_int_eq(run_io(vol_read, x, 0, sizeof(buf), buf, 0), 0);
		meta_get_stats(m, &b);
		ck_assert_uint_eq(b.lmdb_seeks - a.lmdb_seeks, 1);
		ck_assert_uint_eq(b.lmdb_gets - a.lmdb_gets, 0);
		if (which == 1)
			ck_assert_uint_eq(buf[0], 17);
		if (which == 2)
			vol_view_close(x);
	}
	vol_view_close(sv);
	vol_view_close(v);
	ck_assert_int_eq(vol_pool_close(p), 0);
	objstore_close(store);
	loop_fini(&test_loop);
}
END_TEST

/* -------------------------------------------------------------- input -- */

START_TEST(test_bad_input)
{
	struct objstore *store;
	struct vol_pool *p, *p2;
	struct vol_view *v;
	struct vol_range *rg;
	size_t n;
	uint8_t buf[16];
	char longname[80];

	ck_assert_int_eq(loop_init(&test_loop, 64), 0);
	ck_assert_int_eq(memstore_create(false, &store), 0);
	ck_assert_int_eq(pool_open(tmpdir, store, false, 0, &p), -ENOENT);
	ck_assert_int_eq(pool_open(tmpdir, store, true, 0, &p), 0);
	memset(longname, 'a', 65);
	longname[65] = 0;

	ck_assert_int_eq(vol_create(p, "", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "a@b", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "a b", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "-a", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, ".a", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "a/b", CS, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, longname, CS, CS), -EINVAL);
	longname[64] = 0;
	ck_assert_int_eq(vol_create(p, longname, CS, CS), 0);
	ck_assert_int_eq(vol_create(p, "x", 0, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "x", CS + 512, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "x", 1ull << 61, CS), -EINVAL);
	ck_assert_int_eq(vol_create(p, "x", 1 << 20, 32 << 10), -EINVAL);
	ck_assert_int_eq(vol_create(p, "x", 16 << 20, 16 << 20), -EINVAL);
	ck_assert_int_eq(vol_create(p, "x", 100000 * 4, 100000), -EINVAL);
	ck_assert_ptr_nonnull(strstr(vol_last_error(), "power of two"));
	ck_assert_int_eq(vol_create(p, "x", 8 << 20, 8 << 20), 0);
	ck_assert_int_eq(vol_create(p, "x", 4 * CS, CS), -EEXIST);
	ck_assert_int_eq(vol_resize(p, "x", 12345), -EINVAL);
	ck_assert_int_eq(vol_resize(p, "nope", CS), -ENOENT);
	ck_assert_ptr_nonnull(strstr(vol_last_error(), "nope"));
	ck_assert_int_eq(vol_delete(p, "nope"), -ENOENT);
	ck_assert_int_eq(vol_rename(p, "nope", "y"), -ENOENT);
	ck_assert_int_eq(vol_rename(p, "x", longname), -EEXIST);
	ck_assert_int_eq(vol_rename(p, "x", "y@z"), -EINVAL);
	ck_assert_int_eq(vol_snap_create(p, "nope", "s"), -ENOENT);
	ck_assert_int_eq(vol_snap_create(p, "x", "s@"), -EINVAL);
	ck_assert_int_eq(vol_snap_delete(p, "x", "nope"), -ENOENT);
	ck_assert_int_eq(vol_rollback(p, "x", "nope"), -ENOENT);
	ck_assert_int_eq(vol_clone(p, "x", "nope", "c"), -ENOENT);
	ck_assert_int_eq(vol_view_open(p, "x@nope", &v), -ENOENT);
	ck_assert_int_eq(vol_view_open(p, "x@", &v), -EINVAL);
	ck_assert_int_eq(vol_view_open(p, "@s", &v), -EINVAL);
	ck_assert_int_eq(vol_diff(p, "x@nope", "x", &rg, &n), -ENOENT);

	/* clones block a snapshot delete and are named */
	ck_assert_int_eq(vol_snap_create(p, "x", "s"), 0);
	ck_assert_int_eq(vol_clone(p, "x", "s", "clone-one"), 0);
	ck_assert_int_eq(vol_clone(p, "x", "s", "clone-two"), 0);
	ck_assert_int_eq(vol_clone(p, "x", "s", "clone-two"), -EEXIST);
	ck_assert_int_eq(vol_snap_delete(p, "x", "s"), -EBUSY);
	ck_assert_ptr_nonnull(strstr(vol_last_error(), "clone-one"));
	ck_assert_ptr_nonnull(strstr(vol_last_error(), "clone-two"));
	ck_assert_int_eq(vol_delete(p, "x"), -EBUSY);
	ck_assert_int_eq(vol_diff(p, "x@s", "clone-one", &rg, &n), -EINVAL);
	ck_assert_int_eq(vol_flatten(p, "clone-one"), 0);
	ck_assert_int_eq(vol_delete(p, "clone-two"), 0);
	ck_assert_int_eq(vol_view_open(p, "x@s", &v), 0);
	ck_assert_int_eq(vol_snap_delete(p, "x", "s"), -EBUSY);      /* open view */
	ck_assert_int_eq(run_io(vol_write, v, 0, 16, buf, 0), -EROFS);
	ck_assert_int_eq(run_io(vol_read, v, 8 << 20, 1, buf, 0), -EINVAL);
	ck_assert_int_eq(run_io(vol_read, v, UINT64_MAX - 2, 16, buf, 0), -EINVAL);
	vol_view_close(v);
	ck_assert_int_eq(vol_snap_delete(p, "x", "s"), 0);

	/* a second opener is refused while the first holds the store */
	ck_assert_int_eq(pool_open(tmpdir, store, false, 0, &p2), -EBUSY);
	ck_assert_int_eq(vol_pool_close(p), 0);

	/* another pool's store */
	{
		struct vol_pool_opts o = { .path = tmpdir, .store = store, .k = 4, .m = 2 };

		memcpy(o.pool_id, "another-pool-id!", 16);
		ck_assert_int_eq(vol_pool_open(&o, &p2), -EINVAL);
		ck_assert_ptr_nonnull(strstr(vol_last_error(), "another pool"));
	}
	/* a newer format */
	{
		MDB_env *env;
		MDB_txn *t;
		MDB_dbi dbi;
		MDB_val k = { 6, "format" }, val;
		uint8_t rec[64];

		ck_assert_int_eq(mdb_env_create(&env), 0);
		mdb_env_set_maxdbs(env, 16);
		ck_assert_int_eq(mdb_env_open(env, tmpdir, 0, 0600), 0);
		ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &t), 0);
		ck_assert_int_eq(mdb_dbi_open(t, "meta", 0, &dbi), 0);
		ck_assert_int_eq(mdb_get(t, dbi, &k, &val), 0);
		memcpy(rec, val.mv_data, val.mv_size);
		rec[0] = 99;
		val.mv_data = rec;
		ck_assert_int_eq(mdb_put(t, dbi, &k, &val, 0), 0);
		ck_assert_int_eq(mdb_txn_commit(t), 0);
		mdb_env_close(env);
		ck_assert_int_eq(pool_open(tmpdir, store, false, 0, &p2), -EPROTONOSUPPORT);
		ck_assert_ptr_nonnull(strstr(vol_last_error(), "newer"));
	}
	objstore_close(store);
	loop_fini(&test_loop);
}
END_TEST

/* diff, du and rollback on a small known history */
START_TEST(test_diff_du)
{
	struct objstore *store;
	struct vol_pool *p;
	struct vol_view *v;
	struct vol_range *rg;
	struct vol_du du;
	size_t n;
	uint8_t buf[CS];

	ck_assert_int_eq(loop_init(&test_loop, 64), 0);
	ck_assert_int_eq(memstore_create(false, &store), 0);
	ck_assert_int_eq(pool_open(tmpdir, store, true, 0, &p), 0);
	ck_assert_int_eq(vol_create(p, "d", 8 * CS, CS), 0);
	ck_assert_int_eq(vol_view_open(p, "d", &v), 0);
	memset(buf, 1, sizeof(buf));
	ck_assert_int_eq(run_io(vol_write, v, 0, CS, buf, 0), 0);
	ck_assert_int_eq(run_io(vol_write, v, 1 * CS, 10, buf, 0), 0);
	ck_assert_int_eq(vol_snap_create(p, "d", "a"), 0);
	ck_assert_int_eq(run_io(vol_write, v, 3 * CS, 10, buf, 0), 0);
	ck_assert_int_eq(run_io(vol_write, v, 4 * CS, 10, buf, 0), 0);
	ck_assert_int_eq(run_io(vol_trim, v, 0, CS, NULL, 0), 0);
	ck_assert_int_eq(vol_snap_create(p, "d", "b"), 0);
	ck_assert_int_eq(run_io(vol_write, v, 7 * CS, 10, buf, 0), 0);

	ck_assert_int_eq(vol_diff(p, "d@a", "d@b", &rg, &n), 0);
	ck_assert_uint_eq(n, 2);              /* chunk 0, chunks 3-4 */
	ck_assert_uint_eq(rg[0].off, 0);
	ck_assert_uint_eq(rg[0].len, CS);
	ck_assert_uint_eq(rg[1].off, 3 * CS);
	ck_assert_uint_eq(rg[1].len, 2 * CS);
	free(rg);
	ck_assert_int_eq(vol_diff(p, "d@b", "d", &rg, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(rg[0].off, 7 * CS);
	free(rg);
	ck_assert_int_eq(vol_diff(p, NULL, "d@a", &rg, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(rg[0].len, 2 * CS);
	free(rg);

	ck_assert_int_eq(vol_du(p, "d", &du), 0);
	ck_assert_uint_eq(du.logical, 8 * CS);
	ck_assert_uint_eq(du.provisioned, 4 * CS);     /* 1, 3, 4, 7 */
	ck_assert_uint_eq(du.used, 5 * CS);            /* + chunk 0 in a */
	ck_assert_uint_eq(du.exclusive, 5 * CS);
	ck_assert_uint_eq(du.stored, du.used / 4 * 6);
	ck_assert_int_eq(vol_du(p, "d@a", &du), 0);
	ck_assert_uint_eq(du.provisioned, 2 * CS);
	ck_assert_uint_eq(du.exclusive, 1 * CS);       /* chunk 0 only in a */
	ck_assert_int_eq(vol_du(p, "d@b", &du), 0);
	ck_assert_uint_eq(du.exclusive, 0);            /* all shared with head */

	/* trimming a chunk written only in the head stores nothing at all */
	{
		struct vol_du d0;

		ck_assert_int_eq(vol_du(p, "d", &d0), 0);
		ck_assert_int_eq(run_io(vol_trim, v, 7 * CS, CS, NULL, 0), 0);
		ck_assert_int_eq(vol_du(p, "d", &du), 0);
		ck_assert_uint_eq(du.map_entries, d0.map_entries - 1);
		ck_assert_uint_eq(du.provisioned, d0.provisioned - CS);
		/* a chunk a snapshot still sees needs a hole entry */
		ck_assert_int_eq(run_io(vol_trim, v, 1 * CS, CS, NULL, 0), 0);
		ck_assert_int_eq(vol_du(p, "d", &d0), 0);
		ck_assert_uint_eq(d0.map_entries, du.map_entries + 1);
		ck_assert_uint_eq(d0.provisioned, du.provisioned - CS);
	}

	/* rollback to a: head = a; b still as it was */
	ck_assert_int_eq(vol_rollback(p, "d", "a"), 0);
	ck_assert_int_eq(vol_diff(p, "d@a", "d", &rg, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(rg);
	ck_assert_int_eq(run_io(vol_read, v, 0, 16, buf, 0), 0);
	ck_assert_uint_eq(buf[0], 1);
	ck_assert_int_eq(vol_check(p), 0);
	vol_view_close(v);
	ck_assert_int_eq(vol_pool_close(p), 0);
	objstore_close(store);
	loop_fini(&test_loop);
}
END_TEST

/* ------------------------------------------------------------ threads -- */

struct worker {
	struct vol_pool *p;
	int idx;
	uint64_t seed;
	int fails;
	char msg[200];
};

struct wio {
	struct vol_io io;
	bool done;
	int res;
};

static void wio_cb(struct vol_io *io, int res)
{
	struct wio *w = container_of(io, struct wio, io);

	w->done = true;
	w->res = res;
}

static int wrun(struct loop *l, vol_op_fn *fn, struct vol_view *v, uint64_t off,
		uint64_t len, void *buf, uint32_t flags)
{
	struct wio w = { .io = { .loop = l, .cb = wio_cb, .off = off, .len = len,
				 .buf = buf, .flags = flags } };

	fn(v, &w.io);
	while (!w.done)
		if (loop_run_once(l, 1000000000ull) < 0)
			return -EIO;
	return w.res;
}

/* Each worker owns 8 chunks of the shared volume "t" and checks them. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop l;
	struct vol_view *v;
	uint64_t st = w->seed, base = (uint64_t)w->idx * 8 * CS;
	uint8_t *model = calloc(1, 8 * CS), *buf = malloc(2 * CS);

	if (loop_init(&l, 64) < 0 || vol_view_open(w->p, "t", &v) < 0) {
		snprintf(w->msg, sizeof(w->msg), "setup failed");
		w->fails++;
		return NULL;
	}
	for (int op = 0; op < 600 && !w->fails; op++) {
		uint64_t off, len;
		int r;

		st ^= st << 13; st ^= st >> 7; st ^= st << 17;
		off = st % (8 * CS);
		len = 1 + (st >> 20) % MIN(8 * CS - off, 2 * CS);
		switch (st % 3) {
		case 0:
			memset(buf, (int)(st >> 40), len);
			r = wrun(&l, vol_write, v, base + off, len, buf,
				 st % 17 ? 0 : VOL_IO_FUA);
			memcpy(model + off, buf, len);
			break;
		case 1:
			r = wrun(&l, vol_zero, v, base + off, len, NULL, 0);
			memset(model + off, 0, len);
			break;
		default:
			r = wrun(&l, vol_read, v, base + off, len, buf, 0);
			if (r == 0 && memcmp(buf, model + off, len)) {
				snprintf(w->msg, sizeof(w->msg), "worker %d op %d: read "
					 "differs from what it wrote", w->idx, op);
				w->fails++;
			}
		}
		if (r < 0) {
			snprintf(w->msg, sizeof(w->msg), "worker %d op %d: %d", w->idx, op, r);
			w->fails++;
		}
	}
	vol_view_close(v);
	loop_fini(&l);
	free(model);
	free(buf);
	return NULL;
}

START_TEST(test_threads)
{
	struct objstore *store;
	struct vol_pool *p;
	struct worker w[2];
	pthread_t th[2];
	uint64_t seed = seed_init("test_threads");
	char name[16];

	ck_assert_int_eq(memstore_create(true, &store), 0);
	ck_assert_int_eq(pool_open(tmpdir, store, true, 2000000, &p), 0);
	ck_assert_int_eq(vol_create(p, "t", 16 * CS, CS), 0);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct worker){ .p = p, .idx = i, .seed = seed + (uint64_t)i * 77 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	/* control traffic on the same volume meanwhile */
	for (int i = 0; i < 60; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		ck_assert_int_eq(vol_snap_create(p, "t", name), 0);
		if (i >= 3) {
			snprintf(name, sizeof(name), "s%d", i - 3);
			ck_assert_int_eq(vol_snap_delete(p, "t", name), 0);
		}
		ck_assert_int_ge(vol_gc(p, 50), 0);
		if (i % 10 == 0)
			ck_assert_int_eq(vol_sync(p), 0);
		usleep(2000);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(w[i].fails == 0, "%s", w[i].msg);
	}
	while (vol_gc(p, 1000) == 1)
		;
	ck_assert_msg(vol_check(p) == 0, "%s", vol_last_error());
	ck_assert_int_eq(vol_pool_close(p), 0);
	objstore_close(store);
}
END_TEST

static Suite *vol_suite(void)
{
	Suite *s = suite_create("vol");
	TCase *tc;

	tc = tcase_create("model");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_model);
	tcase_add_test(tc, test_diff_du);
	tcase_add_test(tc, test_o1);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_crash);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(vol_suite());
}
