/*
 * volumes.h — thin volumes in the daemon: the volume store (vol/ over an
 * object store), volumes and snapshots as NBD exports, and the control
 * socket's vol.* / snap.* commands.
 *
 * This session the only object store is memstore, in an explicitly
 * ephemeral mode (`serve --volumes ephemeral`): data in RAM, metadata in a
 * private temporary directory without fsync, all removed at exit.  The
 * persistent mode (SSD cache + pool, issue 6) only has to build another
 * struct objstore and a metadata directory in volumes_open(); nothing else
 * here depends on which store it is.
 */
#ifndef NBDSRV_VOLUMES_H
#define NBDSRV_VOLUMES_H

#include "nbdsrv/export.h"
#include "nbdsrv/proto.h"
#include "vol/vol.h"

#include <jansson.h>
#include <stdbool.h>

enum volumes_mode {
	VOLUMES_EPHEMERAL = 1,  /* memstore + metadata in a temp dir, nosync */
};

struct volumes;

/* Parse a --volumes value ("ephemeral").  -EINVAL when unknown. */
int volumes_parse_mode(const char *s, enum volumes_mode *out);
/* Open the store in `mode`.  Blocking (main thread, before the reactors).
 * Returns 0 and *out, or -errno after printing why. */
int volumes_open(enum volumes_mode mode, struct volumes **out);
/* Commit and close the volume pool, close the object store, remove an
 * ephemeral mode's directory, free v.  No export of it may be open any
 * more.  NULL is a no-op.  Returns the final commit's result. */
int volumes_close(struct volumes *v);
struct vol_pool *volumes_pool(struct volumes *v);
const char *volumes_mode_name(const struct volumes *v);
bool volumes_ephemeral(const struct volumes *v);
/* The resolver the NBD sessions use to find "vol" and "vol@snap". */
const struct nbd_resolver *volumes_resolver(struct volumes *v);
/* Call fn for every volume or snapshot export clients hold open now, with
 * how many sessions hold it (a snapshot shot as "vol@snap").  Any thread. */
void volumes_foreach_open(struct volumes *v,
			  void (*fn)(void *arg, const char *name, unsigned sessions),
			  void *arg);
/* Free entries of deleted snapshots, a bounded amount per call: call it
 * from the control thread about once a second. */
void volumes_gc(struct volumes *v);

/* export_vol.c: a view ("vol" read-write, "vol@snap" read-only) as an
 * export.  Returns 0 and *out (closed with export_close(), which does not
 * block: the caller flushes when it needs durability), or -errno with
 * vol_last_error() set. */
int export_vol_open(struct vol_pool *p, const char *spec, struct export **out);

/* control_vol.c: run the control command `cmd` ("vol.create", "snap.ls",
 * …) with the request's members on p.  Returns 0 with *members (an object
 * whose members go into the reply; the caller decrefs it), -ENOSYS for an
 * unknown command, or another -errno with a message in err. */
int ctl_vol_call(struct volumes *v, const char *cmd, json_t *req,
		 json_t **members, char *err, size_t errlen);

#endif /* NBDSRV_VOLUMES_H */
