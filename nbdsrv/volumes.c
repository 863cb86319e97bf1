/*
 * volumes.c — the daemon's volume store and the NBD resolver over it.
 *
 *   volumes_open(EPHEMERAL)
 *     ├─ metadata: vol_pool_open() in a fresh mkdtemp() directory
 *     │            (nosync: nothing here survives the process anyway)
 *     └─ objects:  memstore (RAM)
 *   volumes_close(): vol_pool_close(), memstore freed, directory removed.
 *
 * Nothing is persistent in this mode, and the daemon says so at start and
 * in `status`.  Issue 6 swaps the object store for the SSD cache + pool and
 * the directory for <cache_path>; the rest of the daemon only sees a
 * struct vol_pool.
 *
 * The resolver turns an export name into a vol view export (export_vol.c)
 * when a client asks for it, so volumes and snapshots created after start
 * are served at once; LIST enumerates every volume and every `vol@snap`.
 * Its calls run on reactor threads and are metadata reads only.
 */
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define VOLUMES_GC_BUDGET 4096

/* An export name some sessions hold open (for status). */
struct vol_open {
	struct vol_open *next;
	unsigned sessions;
	char name[];
};

struct volumes {
	enum volumes_mode mode;
	char dir[4096];                 /* metadata directory (ephemeral: ours) */
	struct objstore *store;
	struct vol_pool *pool;
	struct nbd_resolver resolver;
	pthread_mutex_t lock;           /* guards open (reactors, control) */
	struct vol_open *open;
};

/* Count a session in or out of name's entry. */
static void count_session(struct volumes *v, const char *name, int delta)
{
	struct vol_open **pp, *o;

	pthread_mutex_lock(&v->lock);
	for (pp = &v->open; (o = *pp); pp = &o->next)
		if (!strcmp(o->name, name))
			break;
	if (!o && delta > 0 && (o = calloc(1, sizeof(*o) + strlen(name) + 1))) {
		strcpy(o->name, name);
		o->next = v->open;
		v->open = o;
		pp = &v->open;
	}
	if (o) {
		o->sessions += (unsigned)delta;
		if (o->sessions == 0) {
			*pp = o->next;
			free(o);
		}
	}
	pthread_mutex_unlock(&v->lock);
}

void volumes_foreach_open(struct volumes *v,
			  void (*fn)(void *arg, const char *name, unsigned sessions),
			  void *arg)
{
	struct vol_open *o;

	pthread_mutex_lock(&v->lock);
	for (o = v->open; o; o = o->next)
		fn(arg, o->name, o->sessions);
	pthread_mutex_unlock(&v->lock);
}

int volumes_parse_mode(const char *s, enum volumes_mode *out)
{
	if (!strcmp(s, "ephemeral")) {
		*out = VOLUMES_EPHEMERAL;
		return 0;
	}
	return -EINVAL;
}

static struct export *resolver_open(void *arg, const char *name)
{
	struct volumes *v = arg;
	struct export *e;

	if (export_vol_open(v->pool, name, &e) < 0)
		return NULL;
	count_session(v, e->name, 1);
	return e;
}

static void resolver_release(void *arg, struct export *e)
{
	count_session(arg, e->name, -1);
	export_close(e);
}

static void resolver_list(void *arg, void (*add)(void *ctx, const char *name),
			  void *ctx)
{
	struct volumes *v = arg;
	struct vol_info *vols = NULL;
	size_t n = 0, i, j;

	if (vol_list(v->pool, &vols, &n) < 0)
		return;
	for (i = 0; i < n; i++) {
		struct vol_snap_info *snaps = NULL;
		size_t ns = 0;
		char name[2 * VOL_NAME_MAX + 2];

		add(ctx, vols[i].name);
		if (vol_snap_list(v->pool, vols[i].name, &snaps, &ns) < 0)
			continue;
		for (j = 0; j < ns; j++) {
			snprintf(name, sizeof(name), "%s@%s", vols[i].name, snaps[j].name);
			add(ctx, name);
		}
		free(snaps);
	}
	free(vols);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

int volumes_open(enum volumes_mode mode, struct volumes **out)
{
	struct volumes *v = calloc(1, sizeof(*v));
	struct vol_pool_opts o;
	const char *tmp = getenv("TMPDIR");
	int r;

	*out = NULL;
	if (!v)
		return -ENOMEM;
	v->mode = mode;
	pthread_mutex_init(&v->lock, NULL);
	snprintf(v->dir, sizeof(v->dir), "%s/nbdsrv-volumes.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(v->dir)) {
		r = -errno;
		fprintf(stderr, "nbdsrv serve: --volumes: cannot create %s: %s\n", v->dir,
			strerror(-r));
		free(v);
		return r;
	}
	r = memstore_create(false, &v->store);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: --volumes: memstore: %s\n", strerror(-r));
		goto fail;
	}
	memset(&o, 0, sizeof(o));
	o.path = v->dir;
	if (getrandom(o.pool_id, sizeof(o.pool_id), 0) != (ssize_t)sizeof(o.pool_id))
		memcpy(o.pool_id, "nbdsrv-ephemeral", sizeof(o.pool_id));
	o.create = true;
	o.store = v->store;
	o.k = 1;                /* memstore keeps one copy */
	o.m = 0;
	o.map_size = 1ull << 30;
	o.nosync = true;
	r = vol_pool_open(&o, &v->pool);
	if (r < 0) {
		fprintf(stderr, "nbdsrv serve: --volumes: %s\n", vol_last_error());
		goto fail;
	}
	v->resolver.open = resolver_open;
	v->resolver.release = resolver_release;
	v->resolver.list = resolver_list;
	v->resolver.arg = v;
	*out = v;
	return 0;
fail:
	objstore_close(v->store);
	nftw(v->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	pthread_mutex_destroy(&v->lock);
	free(v);
	return r;
}

int volumes_close(struct volumes *v)
{
	int r;

	if (!v)
		return 0;
	r = vol_pool_close(v->pool);
	objstore_close(v->store);
	if (v->mode == VOLUMES_EPHEMERAL)
		nftw(v->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	while (v->open) {               /* none once every session ended */
		struct vol_open *o = v->open;

		v->open = o->next;
		free(o);
	}
	pthread_mutex_destroy(&v->lock);
	free(v);
	return r;
}

struct vol_pool *volumes_pool(struct volumes *v)
{
	return v->pool;
}

const char *volumes_mode_name(const struct volumes *v)
{
	return v->mode == VOLUMES_EPHEMERAL ? "ephemeral" : "?";
}

bool volumes_ephemeral(const struct volumes *v)
{
	return v->mode == VOLUMES_EPHEMERAL;
}

const struct nbd_resolver *volumes_resolver(struct volumes *v)
{
	return &v->resolver;
}

void volumes_gc(struct volumes *v)
{
	int r = vol_gc(v->pool, VOLUMES_GC_BUDGET);

	if (r < 0)
		log_warn("volume gc: %s", vol_last_error());
}
