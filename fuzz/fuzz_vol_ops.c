/*
 * fuzz_vol_ops.c — vol/ driven by arbitrary operation sequences.
 *
 * Each input is a program: one byte picks the operation, the next bytes its
 * arguments (volume/snapshot names from a small set, or raw bytes from the
 * input to exercise name validation; offsets, lengths, sizes).  Whatever the
 * input, nothing may crash, every error must be a clean -errno, vol_check()
 * must pass after the program, and after deleting everything (flatten, then
 * snapshots, then volumes, then GC and a commit) no object may remain in
 * the memstore and none may have been dropped twice.
 *
 * One pool (memstore, LMDB without fsync) is shared by all inputs.
 */
#include "vol/vol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CS (64u << 10)

static struct vol_pool *pool;
static struct objstore *store;
static struct loop fl;
static uint8_t iobuf[3 * CS];

struct fio {
	struct vol_io io;
	bool done;
	int res;
};

static void fio_cb(struct vol_io *io, int res)
{
	struct fio *f = container_of(io, struct fio, io);

	f->done = true;
	f->res = res;
}

static int run(void (*fn)(struct vol_view *, struct vol_io *), struct vol_view *v,
	       uint64_t off, uint64_t len, uint32_t flags)
{
	struct fio f = { .io = { .loop = &fl, .cb = fio_cb, .off = off, .len = len,
				 .buf = iobuf, .flags = flags } };

	fn(v, &f.io);
	if (f.done)
		abort();                /* completed inside the submit call */
	while (!f.done)
		if (loop_run_once(&fl, 1000000000ull) < 0)
			abort();
	return f.res;
}

static char dir[] = "/tmp/fuzz_vol.XXXXXX";

static void remove_dir(void)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static void setup(void)
{
	struct vol_pool_opts o = { .k = 4, .m = 2, .create = true, .nosync = true,
				   .commit_delay_ns = UINT64_MAX };

	if (!mkdtemp(dir) || loop_init(&fl, 256) < 0 ||
	    memstore_create(true, &store) < 0)
		abort();
	atexit(remove_dir);
	o.path = dir;
	o.store = store;
	memcpy(o.pool_id, "fuzz-vol-pool-id", 16);
	if (vol_pool_open(&o, &pool) < 0)
		abort();
	log_set_level(LOG_LEVEL_ERROR);
}

struct in {
	const uint8_t *p;
	size_t n;
};

static uint8_t byte(struct in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint64_t u16(struct in *in)
{
	return (uint64_t)byte(in) << 8 | byte(in);
}

/* A name: mostly one of a few valid ones, sometimes raw input bytes. */
static void name(struct in *in, char prefix, char *out)
{
	uint8_t b = byte(in);

	if (b < 240) {
		snprintf(out, 8, "%c%u", prefix, b % 4);
		return;
	}
	{
		size_t n = byte(in) % 80, i;

		for (i = 0; i < n && in->n; i++)
			out[i] = (char)(byte(in) | 1);  /* no NUL inside */
		out[i] = 0;
	}
}

static void cleanup(void)
{
	struct vol_info *vi;
	size_t nv, ns;

	if (vol_list(pool, &vi, &nv) < 0)
		abort();
	for (size_t i = 0; i < nv; i++)
		if (vol_flatten(pool, vi[i].name) < 0)
			abort();
	for (size_t i = 0; i < nv; i++) {
		struct vol_snap_info *si;

		if (vol_snap_list(pool, vi[i].name, &si, &ns) < 0)
			abort();
		for (size_t j = 0; j < ns; j++)
			if (vol_snap_delete(pool, vi[i].name, si[j].name) < 0)
				abort();
		free(si);
	}
	for (size_t i = 0; i < nv; i++)
		if (vol_delete(pool, vi[i].name) < 0)
			abort();
	free(vi);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	struct memstore_stats ms;
	int steps = 0;

	if (!pool)
		setup();
	while (in.n && steps++ < 64) {
		char v[96], s[96], c[96];
		struct vol_view *view;
		uint8_t op = byte(&in);
		uint64_t a = u16(&in), b = u16(&in);
		struct vol_range *rg;
		struct vol_du du;
		size_t n;

		name(&in, 'v', v);
		switch (op % 16) {
		case 0:
			vol_create(pool, v, (a % 9) * CS, CS << (b % 2));
			break;
		case 1: case 2: case 3: case 4: {
			static void (*const fns[])(struct vol_view *, struct vol_io *) = {
				vol_write, vol_zero, vol_trim, vol_read,
			};
			if (vol_view_open(pool, v, &view) < 0)
				break;
			memset(iobuf, (int)a, sizeof(iobuf));
			run(fns[op % 4], view, a * 4099 % (10 * CS), b % sizeof(iobuf),
			    b & 1 ? VOL_IO_FUA : 0);
			vol_view_close(view);
			break;
		}
		case 5:
			name(&in, 's', s);
			vol_snap_create(pool, v, s);
			break;
		case 6:
			name(&in, 's', s);
			vol_snap_delete(pool, v, s);
			break;
		case 7:
			name(&in, 's', s);
			name(&in, 'v', c);
			vol_clone(pool, v, s, c);
			break;
		case 8:
			vol_flatten(pool, v);
			break;
		case 9:
			name(&in, 's', s);
			vol_rollback(pool, v, s);
			break;
		case 10:
			vol_resize(pool, v, (a % 12) * CS);
			break;
		case 11:
			vol_delete(pool, v);
			break;
		case 12:
			name(&in, 'v', c);
			vol_rename(pool, v, c);
			break;
		case 13:
			vol_gc(pool, a % 16);
			break;
		case 14:
			name(&in, 's', s);
			snprintf(c, sizeof(c), "%s@%s", v, s);
			if (vol_diff(pool, b & 1 ? c : NULL, v, &rg, &n) == 0)
				free(rg);
			if (vol_du(pool, a & 1 ? c : v, &du) == 0 && du.exclusive > du.used)
				abort();
			break;
		default: {
			struct vol_extent ext[8];

			name(&in, 's', s);
			snprintf(c, sizeof(c), "%s%s%s", v, a & 1 ? "@" : "", a & 1 ? s : "");
			if (vol_view_open(pool, c, &view) < 0)
				break;
			if (vol_view_size(view))
				vol_block_status(view, a % vol_view_size(view),
						 1 + b % vol_view_size(view), ext, 8);
			vol_view_close(view);
		}
		}
	}
	if (vol_check(pool) < 0) {
		fprintf(stderr, "vol_check: %s\n", vol_last_error());
		abort();
	}
	cleanup();
	while (vol_gc(pool, 1000) == 1)
		;
	if (vol_sync(pool) < 0)
		abort();
	memstore_get_stats(store, &ms);
	if (ms.objects || ms.double_drops || ms.writes_after_drop) {
		fprintf(stderr, "memstore: %llu objects left, %llu double drops\n",
			(unsigned long long)ms.objects,
			(unsigned long long)ms.double_drops);
		abort();
	}
	return 0;
}
