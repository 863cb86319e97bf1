/*
 * ctl_client.h — the client side of the control socket, shared by the
 * subcommands that talk to a running daemon (`status`, `vol`, `snap`), and
 * the rule that names the default control socket.
 */
#ifndef NBDSRV_CTL_CLIENT_H
#define NBDSRV_CTL_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct zdb_pool_cfg;

/* The daemon's default control socket for a pool config:
 * "<cache_path>/nbdsrv.ctl".  -ENOENT when cfg has no cache_path,
 * -ENAMETOOLONG when it does not fit in buf. */
int ctl_default_path(const struct zdb_pool_cfg *cfg, char *buf, size_t len);

/* Resolve the control socket from --control (wins) or --config (its default
 * path).  Prints what is wrong (prefixed by `who`) and returns 1 (startup
 * error) or 2 (usage error); 0 with the path in buf on success. */
int ctl_resolve(const char *who, const char *control, const char *config,
		char *buf, size_t len);

/* Send req as one JSON line to the daemon at path and read its one-line
 * reply.  Returns 0 with *reply (the caller json_decref()s it; an
 * {"ok":false} reply is still 0), or 1 after printing why the daemon could
 * not be asked (`who` prefixes the message). */
int ctl_call(const char *who, const char *path, json_t *req, json_t **reply);

/* v bytes for people, into buf: "512", "1.5M"; a whole multiple of a
 * unit prints as "4M" when trim, "4.0M" otherwise.  Returns buf. */
const char *ctl_human_bytes(char *buf, size_t len, json_int_t v, bool trim);

#endif /* NBDSRV_CTL_CLIENT_H */
