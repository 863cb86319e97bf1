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
 * for type here (a missing or mistyped member is a clear error); values
 * (names, sizes) are vol/'s to judge.
 */
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CHUNK_SIZE (1ull << 20)

struct vol_cmd {
	const char *name;
	int (*fn)(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen);
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

static int verr(int r, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s", vol_last_error());
	return r;
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

/* out.volume = info of name. */
static int put_info(struct vol_pool *p, const char *name, json_t *out, char *err,
		    size_t errlen)
{
	struct vol_info vi;
	int r = vol_get_info(p, name, &vi);

	if (r < 0)
		return verr(r, err, errlen);
	return json_object_set_new(out, "volume", info_json(&vi)) ? -ENOMEM : 0;
}

static int c_create(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *name;
	uint64_t size, chunk = DEFAULT_CHUNK_SIZE;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0 ||
	    (r = get_u64(req, "size", &size, err, errlen)) < 0)
		return r;
	if (json_object_get(req, "chunk_size") &&
	    (r = get_u64(req, "chunk_size", &chunk, err, errlen)) < 0)
		return r;
	r = vol_create(p, name, size, chunk);
	if (r < 0)
		return verr(r, err, errlen);
	return put_info(p, name, out, err, errlen);
}

static int c_ls(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	struct vol_info *vols;
	json_t *a = json_array();
	size_t n, i;
	int r = vol_list(p, &vols, &n);

	if (r < 0) {
		json_decref(a);
		return verr(r, err, errlen);
	}
	for (i = 0; i < n; i++)
		json_array_append_new(a, info_json(&vols[i]));
	free(vols);
	return json_object_set_new(out, "volumes", a) ? -ENOMEM : 0;
}

static int snaps_of(struct vol_pool *p, const char *vol, json_t **out, char *err,
		    size_t errlen)
{
	struct vol_snap_info *snaps;
	size_t n, i;
	int r = vol_snap_list(p, vol, &snaps, &n);

	if (r < 0)
		return verr(r, err, errlen);
	*out = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(*out, snap_json(&snaps[i]));
	free(snaps);
	return 0;
}

static int c_info(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *name;
	json_t *snaps;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0 ||
	    (r = put_info(p, name, out, err, errlen)) < 0 ||
	    (r = snaps_of(p, name, &snaps, err, errlen)) < 0)
		return r;
	return json_object_set_new(out, "snapshots", snaps) ? -ENOMEM : 0;
}

static int c_resize(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *name;
	uint64_t size;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0 ||
	    (r = get_u64(req, "size", &size, err, errlen)) < 0)
		return r;
	r = vol_resize(p, name, size);
	if (r < 0)
		return verr(r, err, errlen);
	return put_info(p, name, out, err, errlen);
}

static int c_rm(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *name;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0)
		return r;
	r = vol_delete(p, name);
	return r < 0 ? verr(r, err, errlen) : 0;
}

static int c_rename(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *name, *nn;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0 ||
	    (r = get_str(req, "new_name", &nn, err, errlen)) < 0)
		return r;
	r = vol_rename(p, name, nn);
	return r < 0 ? verr(r, err, errlen) : 0;
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

static int c_rollback(struct vol_pool *p, json_t *req, json_t *out, char *err,
		      size_t errlen)
{
	const char *spec, *snap;
	char vol[VOL_NAME_MAX + 1];
	int r;

	if ((r = get_str(req, "spec", &spec, err, errlen)) < 0 ||
	    (r = split(spec, vol, &snap, err, errlen)) < 0)
		return r;
	r = vol_rollback(p, vol, snap);
	if (r < 0)
		return verr(r, err, errlen);
	return put_info(p, vol, out, err, errlen);
}

static int c_flatten(struct vol_pool *p, json_t *req, json_t *out, char *err,
		     size_t errlen)
{
	const char *name;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0)
		return r;
	r = vol_flatten(p, name);
	if (r < 0)
		return verr(r, err, errlen);
	return put_info(p, name, out, err, errlen);
}

static json_t *du_json(const char *name, const struct vol_du *d)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "name", name,
			 "logical", (json_int_t)d->logical,
			 "provisioned", (json_int_t)d->provisioned,
			 "used", (json_int_t)d->used, "exclusive", (json_int_t)d->exclusive,
			 "stored", (json_int_t)d->stored,
			 "map_entries", (json_int_t)d->map_entries);
}

static int c_du(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	json_t *a = json_array();
	struct vol_du d;
	int r = 0;

	if (json_object_get(req, "name")) {
		const char *name;

		if ((r = get_str(req, "name", &name, err, errlen)) < 0)
			goto fail;
		if ((r = vol_du(p, name, &d)) < 0) {
			verr(r, err, errlen);
			goto fail;
		}
		json_array_append_new(a, du_json(name, &d));
	} else {
		struct vol_info *vols;
		size_t n, i;

		if ((r = vol_list(p, &vols, &n)) < 0) {
			verr(r, err, errlen);
			goto fail;
		}
		for (i = 0; i < n && r >= 0; i++) {
			r = vol_du(p, vols[i].name, &d);
			if (r < 0)
				verr(r, err, errlen);
			else
				json_array_append_new(a, du_json(vols[i].name, &d));
		}
		free(vols);
		if (r < 0)
			goto fail;
	}
	return json_object_set_new(out, "du", a) ? -ENOMEM : 0;
fail:
	json_decref(a);
	return r;
}

static int c_clone(struct vol_pool *p, json_t *req, json_t *out, char *err, size_t errlen)
{
	const char *spec, *snap, *nn;
	char vol[VOL_NAME_MAX + 1];
	int r;

	if ((r = get_str(req, "spec", &spec, err, errlen)) < 0 ||
	    (r = get_str(req, "new_name", &nn, err, errlen)) < 0 ||
	    (r = split(spec, vol, &snap, err, errlen)) < 0)
		return r;
	r = vol_clone(p, vol, snap, nn);
	if (r < 0)
		return verr(r, err, errlen);
	return put_info(p, nn, out, err, errlen);
}

static int c_snap_create(struct vol_pool *p, json_t *req, json_t *out, char *err,
			 size_t errlen)
{
	const char *spec, *snap;
	char vol[VOL_NAME_MAX + 1];
	int r;

	if ((r = get_str(req, "spec", &spec, err, errlen)) < 0 ||
	    (r = split(spec, vol, &snap, err, errlen)) < 0)
		return r;
	r = vol_snap_create(p, vol, snap);
	if (r < 0)
		return verr(r, err, errlen);
	return json_object_set_new(out, "snapshot", json_string(spec)) ? -ENOMEM : 0;
}

static int c_snap_ls(struct vol_pool *p, json_t *req, json_t *out, char *err,
		     size_t errlen)
{
	const char *name;
	json_t *snaps;
	int r;

	if ((r = get_str(req, "name", &name, err, errlen)) < 0 ||
	    (r = snaps_of(p, name, &snaps, err, errlen)) < 0)
		return r;
	return json_object_set_new(out, "snapshots", snaps) ? -ENOMEM : 0;
}

static int c_snap_rm(struct vol_pool *p, json_t *req, json_t *out, char *err,
		     size_t errlen)
{
	const char *spec, *snap;
	char vol[VOL_NAME_MAX + 1];
	int r;

	if ((r = get_str(req, "spec", &spec, err, errlen)) < 0 ||
	    (r = split(spec, vol, &snap, err, errlen)) < 0)
		return r;
	r = vol_snap_delete(p, vol, snap);
	return r < 0 ? verr(r, err, errlen) : 0;
}

static int c_snap_diff(struct vol_pool *p, json_t *req, json_t *out, char *err,
		       size_t errlen)
{
	const char *from, *to, *snap;
	char vol[VOL_NAME_MAX + 1];
	struct vol_range *rg;
	json_t *a;
	size_t n, i;
	int r;

	if ((r = get_str(req, "from", &from, err, errlen)) < 0 ||
	    (r = split(from, vol, &snap, err, errlen)) < 0)
		return r;
	if (json_object_get(req, "to")) {
		if ((r = get_str(req, "to", &to, err, errlen)) < 0)
			return r;
	} else {
		to = vol;               /* the head */
	}
	r = vol_diff(p, from, to, &rg, &n);
	if (r < 0)
		return verr(r, err, errlen);
	a = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:I, s:I}", "offset", (json_int_t)rg[i].off,
						    "length", (json_int_t)rg[i].len));
	free(rg);
	return json_object_set_new(out, "extents", a) ? -ENOMEM : 0;
}

static const struct vol_cmd vol_cmds[] = {
	{ "vol.create", c_create, true },
	{ "vol.ls", c_ls, false },
	{ "vol.info", c_info, false },
	{ "vol.resize", c_resize, true },
	{ "vol.rm", c_rm, true },
	{ "vol.rename", c_rename, true },
	{ "vol.rollback", c_rollback, true },
	{ "vol.flatten", c_flatten, true },
	{ "vol.du", c_du, false },
	{ "vol.clone", c_clone, true },
	{ "snap.create", c_snap_create, true },
	{ "snap.ls", c_snap_ls, false },
	{ "snap.rm", c_snap_rm, true },
	{ "snap.diff", c_snap_diff, false },
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

		if ((r = get_str(req, "spec", &spec, err, errlen)) < 0)
			return r;
		if (json_object_get(req, "rate") &&
		    (r = get_u64(req, "rate", &rate, err, errlen)) < 0)
			return r;
		r = volumes_warm(v, spec, rate, &id, err, errlen);
		if (r < 0)
			return r;
		*members = json_pack("{s:I, s:s}", "warm_id", (json_int_t)id, "spec", spec);
		return *members ? 0 : -ENOMEM;
	}
	for (i = 0; i < ARRAY_SIZE(vol_cmds); i++) {
		if (strcmp(cmd, vol_cmds[i].name))
			continue;
		*members = json_object();
		if (!*members)
			return -ENOMEM;
		r = vol_cmds[i].fn(volumes_pool(v), req, *members, err, errlen);
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
