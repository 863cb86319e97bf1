/*
 * control.h — the daemon's unix control socket (JSON lines; see control.c
 * for the protocol and the command table).  Main thread only: it runs on the
 * ring of the thread that waits for signals.
 */
#ifndef NBDSRV_CONTROL_H
#define NBDSRV_CONTROL_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>

struct server;
struct control;
struct pool_thread;
struct volumes;

/* A growable string; buf is owned (free it), NUL-terminated when non-NULL. */
struct strbuf {
	char *buf;
	size_t len, cap;
};

/* Append printf-style text.  0 or -ENOMEM (b keeps what it had). */
int strbuf_printf(struct strbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quoted, escaped). */
int strbuf_json_str(struct strbuf *b, const char *s);

/* Listen on path (mode 0600; a stale socket is replaced, a live one is an
 * error; owned: the caller's lock makes it path's only user, see
 * server_unix_listen) and serve requests on loop.  srv is borrowed for the
 * control socket's lifetime.  Prints a message and returns -errno on
 * failure. */
int control_open(struct control **out, const char *path, bool owned,
		 struct server *srv, struct loop *loop);
/* Let `status` report the pool run by pt (borrowed; it must outlive every
 * request: stop it only once control_idle()). */
void control_set_pool(struct control *ctl, struct pool_thread *pt);
/* Serve the vol.* / snap.* commands (and the volume part of `status`)
 * from v (borrowed; it must outlive ctl). */
void control_set_volumes(struct control *ctl, struct volumes *v);
/* What `status` says the daemon is doing ("serving", "stopping",
 * "draining": a static string).  NULL ctl is a no-op. */
void control_set_state(struct control *ctl, const char *state);
/* Stop accepting and reading; replies already produced are still sent, a
 * vol.sync still waiting is answered with an error (ESHUTDOWN). */
void control_stop(struct control *ctl);
/* True once nothing of ctl is in flight on the loop (after control_stop). */
bool control_idle(const struct control *ctl);
/* Close everything, unlink the socket, free ctl.  NULL is a no-op. */
void control_free(struct control *ctl);

#endif /* NBDSRV_CONTROL_H */
