/*
 * control_vol.c — the control socket's volume and snapshot commands.
 *
 *   request (JSON line)                          reply members (after "ok")
 *   {"cmd":"vol.create","name":N,"size":B[,"chunk_size":B]}   "volume":{info}
 *   {"cmd":"vol.warm","spec":"vol[@snap]"[,"rate":B/s]}       "warm_id":N (warm.c)
 *   {"cmd":"vol.ls"}                             "volumes":[{info}…]
 *   {"cmd":"vol.info","name":N}                  "volume":{info},"snapshots":[…]
 *   {"cmd":"vol.resize","name":N,"size":B}       "volume":{info}
 *   {"cmd":"vol.rm","name":N}                    —
 *   {"cmd":"vol.rename","name":N,"new_name":M}   —
 *   {"cmd":"vol.rollback","spec":"V@S"}          "volume":{info}
 *   {"cmd":"vol.flatten","name":N}               "volume":{info}
 *   {"cmd":"vol.du"[,"name":N or "V@S"]}         "du":[{name, logical, …}]
 *   {"cmd":"vol.clone","spec":"V@S","new_name":M} "volume":{info}
 *   {"cmd":"vol.sync"[,"timeout_ms":T]}          — (every write acknowledged
 *                                                before it is in the pool, at most
 *                                                T ms, default and limit 60000:
 *                                                -ETIMEDOUT; asynchronous, in
 *                                                control.c: handle_sync)
 *   {"cmd":"snap.create","spec":"V@S"}           "snapshot":{…}
 *   {"cmd":"snap.ls","name":V}                   "snapshots":[…]
 *   {"cmd":"snap.rm","spec":"V@S"}               —
 *   {"cmd":"snap.diff","from":"V@S"[,"to":"V@S2"|"V"]}  "extents":[{offset,length}]
 *
 * Every vol/ call is synchronous and metadata only; they run here, on the
 * control (main) thread, never on a reactor — those that take the volume
 * write lock for O(entries) (rm, rollback, flatten, shrink) stall I/O on
 * every volume while they run, as vol.h says, but never block a reactor's
 * ring.  A command that changes something is committed (vol_sync: one
 * group commit, a few ms of fsync) before its reply, so an acknowledged
 * change survives a crash.  Errors carry vol_last_error()'s message.  Arguments are checked
 * for type here (a missing or mistyped member is a clear error), the common
 * ones ("name", "spec", "new_name", "size") decoded once from each command's
 * entry in vol_cmds[] before it runs; values (names, sizes) are vol/'s to
 * judge.
 */
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CHUNK_SIZE (1ull << 20)

/* The arguments a command takes, decoded (and type-checked) from the
 * request before the command runs, in this order: the strings, then the
 * sizes, then the split of "spec". */
enum {
	ARG_NAME = 1 << 0,      /* "name": a string */
	ARG_SPEC = 1 << 1,      /* "spec": "VOLUME@SNAPSHOT" → vol, snap */
	ARG_NEW_NAME = 1 << 2,  /* "new_name": a string */
	ARG_SIZE = 1 << 3,      /* "size": a byte count */
};

struct vol_args {
	const char *name, *spec, *new_name;
	char vol[VOL_NAME_MAX + 1];     /* spec's volume part */
	const char *snap;               /* spec's snapshot part */
	uint64_t size;
	char *err;                      /* the message of a failed command */
	size_t errlen;
};

struct vol_cmd {
	const char *name;
	int (*fn)(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out);
	unsigned args;          /* ARG_* */
	bool mutates;           /* committed (vol_sync) before the reply */
};

static int arg_err(char *err, size_t errlen, const char *what, const char *want)
{
	snprintf(err, errlen, "\"%s\": %s", what, want);
	return -EINVAL;
}

static int get_str(json_t *req, const char *key, const char **out, char *err, size_t errlen)
{
	json_t *v = json_object_get(req, key);

	if (!v || !json_is_string(v))
		return arg_err(err, errlen, key, "a string is required");
	*out = json_string_value(v);
	return 0;
}

static int get_u64(json_t *req, const char *key, uint64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(req, key);

	if (!v || !json_is_integer(v) || json_integer_value(v) < 0)
		return arg_err(err, errlen, key, "a non-negative integer (bytes) is required");
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* An optional byte count: *out keeps its default when key is absent. */
static int get_opt_u64(json_t *req, const char *key, uint64_t *out, char *err,
		       size_t errlen)
{
	return json_object_get(req, key) ? get_u64(req, key, out, err, errlen) : 0;
}

/* Split "vol@snap" (both parts required). */
static int split(const char *spec, char vol[VOL_NAME_MAX + 1], const char **snap,
		 char *err, size_t errlen)
{
	const char *at = strchr(spec, '@');

	if (!at || at == spec || !at[1] || (size_t)(at - spec) > VOL_NAME_MAX) {
		snprintf(err, errlen, "'%.140s': expected VOLUME@SNAPSHOT", spec);
		return -EINVAL;
	}
	memcpy(vol, spec, (size_t)(at - spec));
	vol[at - spec] = '\0';
	*snap = at + 1;
	return 0;
}

static int decode_args(json_t *req, unsigned want, struct vol_args *a)
{
	int r = 0;

	if (want & ARG_NAME)
		r = get_str(req, "name", &a->name, a->err, a->errlen);
	if (r >= 0 && (want & ARG_SPEC))
		r = get_str(req, "spec", &a->spec, a->err, a->errlen);
	if (r >= 0 && (want & ARG_NEW_NAME))
		r = get_str(req, "new_name", &a->new_name, a->err, a->errlen);
	if (r >= 0 && (want & ARG_SIZE))
		r = get_u64(req, "size", &a->size, a->err, a->errlen);
	if (r >= 0 && (want & ARG_SPEC))
		r = split(a->spec, a->vol, &a->snap, a->err, a->errlen);
	return r;
}

static int verr(int r, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s", vol_last_error());
	return r;
}

/* r of a vol/ call, with vol_last_error() as the message when it failed. */
static int vdone(int r, const struct vol_args *a)
{
	return r < 0 ? verr(r, a->err, a->errlen) : 0;
}

static json_t *info_json(const struct vol_info *vi)
{
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:b}",
			      "name", vi->name, "size", (json_int_t)vi->size,
			      "chunk_size", (json_int_t)vi->chunk_size,
			      "epoch", (json_int_t)vi->epoch, "snapshots", (json_int_t)vi->nsnaps,
			      "gc_pending", vi->gc_pending);

	if (o && vi->parent[0]) {
		char origin[2 * VOL_NAME_MAX + 2];

		snprintf(origin, sizeof(origin), "%s@%s", vi->parent, vi->parent_snap);
		json_object_set_new(o, "origin", json_string(origin));
	}
	return o;
}

static json_t *snap_json(const struct vol_snap_info *si)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I}", "name", si->name,
			 "epoch", (json_int_t)si->epoch, "size", (json_int_t)si->size,
			 "ctime", (json_int_t)si->ctime, "clones", (json_int_t)si->nclones);
}

/* out[key] = v (taken); -ENOMEM when it cannot be set. */
static int put(json_t *out, const char *key, json_t *v)
{
	return json_object_set_new(out, key, v) ? -ENOMEM : 0;
}

/* After the vol/ call that returned r: out.volume = info of name. */
static int put_info(struct vol_pool *p, int r, const char *name, json_t *out,
		    struct vol_args *a)
{
	struct vol_info vi;

	if (r >= 0)
		r = vol_get_info(p, name, &vi);
	if (r < 0)
		return verr(r, a->err, a->errlen);
	return put(out, "volume", info_json(&vi));
}

static int c_create(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	uint64_t chunk = DEFAULT_CHUNK_SIZE;
	int r = get_opt_u64(req, "chunk_size", &chunk, a->err, a->errlen);

	if (r < 0)
		return r;
	return put_info(p, vol_create(p, a->name, a->size, chunk), a->name, out, a);
}

static int c_ls(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	struct vol_info *vols;
	json_t *arr;
	size_t n, i;
	int r = vol_list(p, &vols, &n);

	if (r < 0)
		return verr(r, a->err, a->errlen);
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, info_json(&vols[i]));
	free(vols);
	return put(out, "volumes", arr);
}

/* out.snapshots = the snapshots of vol. */
static int put_snaps(struct vol_pool *p, const char *vol, json_t *out, struct vol_args *a)
{
	struct vol_snap_info *snaps;
	json_t *arr;
	size_t n, i;
	int r = vol_snap_list(p, vol, &snaps, &n);

	if (r < 0)
		return verr(r, a->err, a->errlen);
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, snap_json(&snaps[i]));
	free(snaps);
	return put(out, "snapshots", arr);
}

static int c_info(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	int r = put_info(p, 0, a->name, out, a);

	return r < 0 ? r : put_snaps(p, a->name, out, a);
}

static int c_resize(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return put_info(p, vol_resize(p, a->name, a->size), a->name, out, a);
}

static int c_rm(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return vdone(vol_delete(p, a->name), a);
}

static int c_rename(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return vdone(vol_rename(p, a->name, a->new_name), a);
}

static int c_rollback(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return put_info(p, vol_rollback(p, a->vol, a->snap), a->vol, out, a);
}

static int c_flatten(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return put_info(p, vol_flatten(p, a->name), a->name, out, a);
}

/* Append the du of volume name (or "V@S") to arr. */
static int du_one(struct vol_pool *p, const char *name, json_t *arr, struct vol_args *a)
{
	struct vol_du d;
	int r = vol_du(p, name, &d);

	if (r < 0)
		return verr(r, a->err, a->errlen);
	json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
		"name", name, "logical", (json_int_t)d.logical,
		"provisioned", (json_int_t)d.provisioned, "used", (json_int_t)d.used,
		"exclusive", (json_int_t)d.exclusive, "stored", (json_int_t)d.stored,
		"map_entries", (json_int_t)d.map_entries));
	return 0;
}

static int c_du(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	json_t *arr = json_array();
	int r = 0;

	if (json_object_get(req, "name")) {
		const char *name;

		if ((r = get_str(req, "name", &name, a->err, a->errlen)) >= 0)
			r = du_one(p, name, arr, a);
	} else {
		struct vol_info *vols;
		size_t n, i;

		if ((r = vol_list(p, &vols, &n)) < 0) {
			verr(r, a->err, a->errlen);
		} else {
			for (i = 0; i < n && r >= 0; i++)
				r = du_one(p, vols[i].name, arr, a);
			free(vols);
		}
	}
	if (r < 0) {
		json_decref(arr);
		return r;
	}
	return put(out, "du", arr);
}

static int c_clone(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return put_info(p, vol_clone(p, a->vol, a->snap, a->new_name), a->new_name, out, a);
}

static int c_snap_create(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	int r = vdone(vol_snap_create(p, a->vol, a->snap), a);

	return r < 0 ? r : put(out, "snapshot", json_string(a->spec));
}

static int c_snap_ls(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return put_snaps(p, a->name, out, a);
}

static int c_snap_rm(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	return vdone(vol_snap_delete(p, a->vol, a->snap), a);
}

static int c_snap_diff(struct vol_pool *p, struct vol_args *a, json_t *req, json_t *out)
{
	const char *from, *to, *snap;
	char vol[VOL_NAME_MAX + 1];
	struct vol_range *rg;
	json_t *arr;
	size_t n, i;
	int r;

	if ((r = get_str(req, "from", &from, a->err, a->errlen)) < 0 ||
	    (r = split(from, vol, &snap, a->err, a->errlen)) < 0)
		return r;
	to = vol;               /* the head, unless "to" names another */
	if (json_object_get(req, "to") &&
	    (r = get_str(req, "to", &to, a->err, a->errlen)) < 0)
		return r;
	r = vol_diff(p, from, to, &rg, &n);
	if (r < 0)
		return verr(r, a->err, a->errlen);
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("{s:I, s:I}", "offset",
			(json_int_t)rg[i].off, "length", (json_int_t)rg[i].len));
	free(rg);
	return put(out, "extents", arr);
}

static const struct vol_cmd vol_cmds[] = {
	{ "vol.create", c_create, ARG_NAME | ARG_SIZE, true },
	{ "vol.ls", c_ls, 0, false },
	{ "vol.info", c_info, ARG_NAME, false },
	{ "vol.resize", c_resize, ARG_NAME | ARG_SIZE, true },
	{ "vol.rm", c_rm, ARG_NAME, true },
	{ "vol.rename", c_rename, ARG_NAME | ARG_NEW_NAME, true },
	{ "vol.rollback", c_rollback, ARG_SPEC, true },
	{ "vol.flatten", c_flatten, ARG_NAME, true },
	{ "vol.du", c_du, 0, false },
	{ "vol.clone", c_clone, ARG_SPEC | ARG_NEW_NAME, true },
	{ "snap.create", c_snap_create, ARG_SPEC, true },
	{ "snap.ls", c_snap_ls, ARG_NAME, false },
	{ "snap.rm", c_snap_rm, ARG_SPEC, true },
	{ "snap.diff", c_snap_diff, 0, false },
};

int ctl_vol_call(struct volumes *v, const char *cmd, json_t *req, json_t **members,
		 char *err, size_t errlen)
{
	size_t i;
	int r;

	*members = NULL;
	err[0] = '\0';
	if (volumes_chunk_size(v) && !strcmp(cmd, "vol.create")) {
		json_int_t fixed = (json_int_t)volumes_chunk_size(v);
		json_t *c = json_object_get(req, "chunk_size");

		if (!c) {
			if (json_object_set_new(req, "chunk_size", json_integer(fixed)))
				return -ENOMEM;
		} else if (!json_is_integer(c) || json_integer_value(c) != fixed) {
			snprintf(err, errlen, "chunk size: this pool's volumes all have the "
				 "pool's chunk_size (%lld bytes)", (long long)fixed);
			return -EINVAL;
		}
	}
	if (!strcmp(cmd, "vol.warm")) {
		const char *spec;
		uint64_t rate = 0, id;

		if ((r = get_str(req, "spec", &spec, err, errlen)) < 0 ||
		    (r = get_opt_u64(req, "rate", &rate, err, errlen)) < 0)
			return r;
		r = volumes_warm(v, spec, rate, &id, err, errlen);
		if (r < 0)
			return r;
		*members = json_pack("{s:I, s:s}", "warm_id", (json_int_t)id, "spec", spec);
		return *members ? 0 : -ENOMEM;
	}
	for (i = 0; i < ARRAY_SIZE(vol_cmds); i++) {
		struct vol_args a = { .err = err, .errlen = errlen };

		if (strcmp(cmd, vol_cmds[i].name))
			continue;
		if ((r = decode_args(req, vol_cmds[i].args, &a)) < 0)
			return r;
		if (!strcmp(cmd, "vol.rm"))     /* their views would hold it */
			volumes_warm_stop(v, a.name, "volume removed");
		*members = json_object();
		if (!*members)
			return -ENOMEM;
		r = vol_cmds[i].fn(volumes_pool(v), &a, req, *members);
		/* an acknowledged change survives a crash: commit before the
		 * reply (one group commit, a few ms) */
		if (r >= 0 && vol_cmds[i].mutates && (r = vol_sync(volumes_pool(v))) < 0)
			snprintf(err, errlen, "the change could not be committed: %s",
				 vol_last_error());
		if (r < 0) {
			json_decref(*members);
			*members = NULL;
		}
		return r;
	}
	return -ENOSYS;
}
