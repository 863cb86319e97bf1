/*
 * control.c — the daemon's control socket: a unix stream socket speaking
 * JSON lines.  Each request is one line holding a JSON object with a "cmd"
 * string and the command's arguments; each reply is one line,
 * {"ok":true,...} or {"ok":false,"error":"..."}.  Commands live in one
 * dispatch table (ctl_cmds[]).
 *
 *   $ printf '{"cmd":"status"}\n' | socat - UNIX:/run/nbdsrv.ctl
 *   {"ok":true,"exports":[{"name":"disk",...,"connections":1}],...}
 *
 * It runs on the main thread's ring, next to the signal wait, so a slow or
 * hostile control client never touches a reactor.  Reactor state is read
 * through the relaxed atomic counters the reactors maintain (struct
 * server_stats); nothing here locks.  Bounds: CTL_MAX_CLIENTS clients,
 * CTL_MAX_LINE bytes per request line (longer: error reply, then close).
 *
 * Requests are decoded with jansson (Debian libjansson-dev), not by hand:
 * it is small, maintained, has no global state, rejects duplicate keys
 * (JSON_REJECT_DUPLICATES) and reports where a document is malformed;
 * json-c would do, but cannot refuse duplicate keys.  Replies are built as
 * text (strbuf_*) because most of them are fixed shapes.
 *
 * Asynchronous commands.  A handler may return CTL_PENDING after handing
 * the client to another thread (the pool's status runs on the pool thread:
 * zdb/ objects belong to the thread that owns their loop).  Until
 * ctl_finish() the client reads no further request — replies stay in
 * request order — and is not closed; control_idle() waits for it.
 * vol.sync is one (handle_sync: the cache thread answers it, a timer
 * bounds it, control_stop cancels it), so a sync waiting for a paused
 * pool never holds the thread that serves `status` and the signals.
 */
#include "nbdsrv/control.h"
#include "nbdsrv/pool_thread.h"
#include "nbdsrv/server.h"
#include "nbdsrv/volumes.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_MAX_CLIENTS 64
#define CTL_MAX_LINE    (64 * 1024)
#define CTL_PENDING     1       /* handler: the reply comes later */

struct ctl_client {
	struct control *ctl;
	struct ctl_client *next;
	int fd;
	struct loop_op recv_op;
	struct loop_op send_op;
	struct loop_op close_op;
	bool recv_armed, send_armed, closing, eof;
	bool pending;           /* a handler's reply is still to come */
	struct ctl_sync *sync;  /* its vol.sync waiting, or NULL */
	size_t mark;            /* where the current reply starts in out */
	char err[512];          /* a handler's error message, or "" */
	char in[CTL_MAX_LINE + 1];
	size_t in_len;
	struct strbuf out;      /* replies not yet sent */
	size_t out_sent;        /* bytes of out in the armed send */
};

struct control {
	struct loop *loop;
	struct server *srv;
	int fd;
	char *path;
	struct loop_op accept_op;
	bool accept_armed;
	bool stopping;
	struct ctl_client *clients;
	unsigned n_clients;
	const char *state;              /* status "state" (static string) */
	struct pool_thread *pool;       /* NULL: no pool (borrowed) */
	struct volumes *vols;           /* NULL: no volumes (borrowed) */
};

/* ---- string building ---- */

int strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->buf ? b->buf + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return 0;
		}
		{
			size_t cap = b->cap ? b->cap * 2 : 256;
			char *p;

			while (cap < b->len + (size_t)n + 1)
				cap *= 2;
			p = realloc(b->buf, cap);
			if (!p)
				return -ENOMEM;
			b->buf = p;
			b->cap = cap;
		}
	}
}

int strbuf_json_str(struct strbuf *b, const char *s)
{
	int r = strbuf_printf(b, "\"");

	for (; !r && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			r = strbuf_printf(b, "\\%c", ch);
		else if (ch < 0x20)
			r = strbuf_printf(b, "\\u%04x", ch);
		else
			r = strbuf_printf(b, "%c", ch);
	}
	return r ? r : strbuf_printf(b, "\"");
}

/* ---- commands ---- */

static void client_check(struct ctl_client *cl);
static void client_process(struct ctl_client *cl);

/* Complete a CTL_PENDING reply: r = 0 closes the object, -errno replaces
 * the reply by an error (cl->err or strerror).  Then go on with the
 * client's next request. */
static void ctl_finish(struct ctl_client *cl, int r)
{
	struct strbuf *o = &cl->out;

	if (r < 0) {
		o->len = cl->mark;
		strbuf_printf(o, "{\"ok\":false,\"error\":");
		strbuf_json_str(o, cl->err[0] ? cl->err : strerror(-r));
		strbuf_printf(o, "}\n");
	} else {
		strbuf_printf(o, "}\n");
	}
	cl->err[0] = '\0';
	if (cl->pending) {
		cl->pending = false;
		client_process(cl);
		client_check(cl);
	}
}

struct ctl_pool_req {
	struct pool_status_req req;
	struct ctl_client *cl;
	struct zdb_refusal *refusals;   /* the cache pool's, for the NOTEs */
};

static void ctl_pool_status_done(struct pool_status_req *req)
{
	struct ctl_pool_req *pr = container_of(req, struct ctl_pool_req, req);
	struct ctl_client *cl = pr->cl;
	struct strbuf *o = &cl->out;
	int r = 0;

	if (!req->text) {
		snprintf(cl->err, sizeof(cl->err), "pool status: out of memory");
		r = -ENOMEM;
	} else if (req->json) {
		while (req->len && (req->text[req->len - 1] == '\n' ||
				    req->text[req->len - 1] == ' '))
			req->text[--req->len] = '\0';
		r = strbuf_printf(o, ",\"pool\":%s", req->text);
	} else {
		r = strbuf_printf(o, ",\"pool_text\":");
		r = r ? r : strbuf_json_str(o, req->text);
	}
	free(req->text);
	free(pr->refusals);
	free(pr);
	ctl_finish(cl, r);
}

struct open_list {
	struct strbuf *o;
	bool more;
	int r;
};

static void status_open_one(void *arg, const char *name, unsigned sessions)
{
	struct open_list *ol = arg;

	ol->r = ol->r ? ol->r : strbuf_printf(ol->o, "%s{\"name\":", ol->more ? "," : "");
	ol->r = ol->r ? ol->r : strbuf_json_str(ol->o, name);
	ol->r = ol->r ? ol->r : strbuf_printf(ol->o, ",\"sessions\":%u}", sessions);
	ol->more = true;
}

static int ctl_status(struct ctl_client *cl, json_t *req, struct strbuf *o)
{
	struct control *ctl = cl->ctl;
	struct server *srv = ctl->srv;
	json_t *jf = json_object_get(req, "format");
	const char *fmt = json_string_value(jf);
	size_t i;
	int r;

	if ((jf && !fmt) || (fmt && strcmp(fmt, "json") && strcmp(fmt, "text"))) {
		snprintf(cl->err, sizeof(cl->err), "\"format\" must be \"json\" or \"text\"");
		return -EINVAL;
	}
	r = strbuf_printf(o, "\"state\":\"%s\",\"exports\":[", ctl->state);
	for (i = 0; !r && i < srv->n_exports; i++) {
		const struct export *e = srv->exports[i];
		const struct server_stats *st = &srv->stats[i];

		r = strbuf_printf(o, "%s{\"name\":", i ? "," : "");
		r = r ? r : strbuf_json_str(o, e->name);
		if (!r && e->desc) {
			r = strbuf_printf(o, ",\"description\":");
			r = r ? r : strbuf_json_str(o, e->desc);
		}
		r = r ? r : strbuf_printf(o,
			",\"kind\":\"%s\",\"size\":%llu,\"read_only\":%s,"
			"\"connections\":%llu,\"requests\":%llu,"
			"\"bytes_read\":%llu,\"bytes_written\":%llu}",
			e->ops->kind, (unsigned long long)e->size,
			(e->flags & EXPORT_READ_ONLY) ? "true" : "false",
			(unsigned long long)__atomic_load_n(&st->conns, __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&st->requests, __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&st->bytes_read, __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&st->bytes_written, __ATOMIC_RELAXED));
	}
	r = r ? r : strbuf_printf(o, "],\"reactors\":[");
	for (i = 0; !r && i < srv->n_reactors; i++)
		r = strbuf_printf(o, "%s{\"id\":%zu,\"connections\":%u}", i ? "," : "",
				  i, __atomic_load_n(&srv->reactors[i].n_conns,
						     __ATOMIC_RELAXED));
	r = r ? r : strbuf_printf(o, "],\"listeners\":[");
	for (i = 0; !r && i < srv->n_listeners; i++) {
		r = strbuf_printf(o, "%s", i ? "," : "");
		r = r ? r : strbuf_json_str(o, srv->listeners[i].what);
	}
	r = r ? r : strbuf_printf(o, "]");
	if (!r && ctl->vols) {
		struct vol_info *vols = NULL;
		size_t n = 0;

		(void)vol_list(volumes_pool(ctl->vols), &vols, &n);
		free(vols);
		r = strbuf_printf(o, ",\"volumes\":{\"mode\":\"%s\",\"ephemeral\":%s,"
				  "\"count\":%zu,\"open\":[", volumes_mode_name(ctl->vols),
				  volumes_ephemeral(ctl->vols) ? "true" : "false", n);
		if (!r) {
			struct open_list ol = { .o = o };

			volumes_foreach_open(ctl->vols, status_open_one, &ol);
			r = ol.r ? ol.r : strbuf_printf(o, "]");
		}
		if (!r) {
			json_t *vs = volumes_status(ctl->vols);
			const char *key;
			json_t *val;

			json_object_foreach(vs, key, val) {
				char *txt = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);

				r = txt ? strbuf_printf(o, ",\"%s\":%s", key, txt) : -ENOMEM;
				free(txt);
				if (r)
					break;
			}
			json_decref(vs);
			r = r ? r : strbuf_printf(o, "}");
		}
	}
	if (r || !ctl->pool)
		return r;
	{
		struct ctl_pool_req *pr = calloc(1, sizeof(*pr));

		if (!pr)
			return -ENOMEM;
		pr->cl = cl;
		/* the status pool never writes: the backends' refusals are the
		 * ones the cache's flusher pool met */
		if (ctl->vols) {
			unsigned n = volumes_refusals(ctl->vols, NULL, 0);

			pr->refusals = n ? calloc(n, sizeof(*pr->refusals)) : NULL;
			if (pr->refusals)
				pr->req.nrefusals = MIN(n, volumes_refusals(ctl->vols,
							pr->refusals, n));
			pr->req.refusals = pr->refusals;
		}
		pr->req.reply_loop = ctl->loop;
		pr->req.done = ctl_pool_status_done;
		pr->req.json = !fmt || !strcmp(fmt, "json");
		pool_thread_status(ctl->pool, &pr->req);
	}
	return CTL_PENDING;
}

/* scrub [deep] [rate]: starts the cache's scrub and answers at once;
 * progress is status's volumes.scrub (the CLI's --wait polls it).  rate:
 * bytes/s a deep scrub reads (0 = unlimited; absent = pool.conf's; only
 * with deep, as the CLI's --rate needs --deep). */
static int ctl_scrub(struct ctl_client *cl, json_t *req, struct strbuf *o)
{
	json_t *d = json_object_get(req, "deep"), *rt = json_object_get(req, "rate");
	int r;

	if (d && !json_is_boolean(d)) {
		snprintf(cl->err, sizeof(cl->err), "\"deep\" must be true or false");
		return -EINVAL;
	}
	if (rt && (!json_is_integer(rt) || json_integer_value(rt) < 0)) {
		snprintf(cl->err, sizeof(cl->err), "\"rate\" must be a number of bytes "
			 "per second (0 = unlimited)");
		return -EINVAL;
	}
	/* as the CLI's --rate without --deep: a shallow scrub reads no shard,
	 * so a rate would be silently ignored */
	if (rt && !(d && json_is_true(d))) {
		snprintf(cl->err, sizeof(cl->err), "\"rate\" limits a deep scrub's reads: "
			 "give \"deep\":true with it");
		return -EINVAL;
	}
	if (!cl->ctl->vols) {
		snprintf(cl->err, sizeof(cl->err), "this daemon serves no volumes");
		return -ENOTSUP;
	}
	r = volumes_scrub(cl->ctl->vols, d && json_is_true(d),
			  rt ? (int64_t)json_integer_value(rt) : -1);
	if (r == -EBUSY)
		snprintf(cl->err, sizeof(cl->err), "a scrub is already running");
	else if (r == -ENOTSUP || r == -EINVAL)
		snprintf(cl->err, sizeof(cl->err), "scrub: the volumes have no pool "
			 "(ephemeral mode)");
	if (r < 0)
		return r;
	return strbuf_printf(o, "\"started\":true,\"deep\":%s",
			     d && json_is_true(d) ? "true" : "false");
}

static const struct ctl_cmd {
	const char *name;
	/* Append the reply's members (after "ok":true) to o and return 0;
	 * or return -errno, with a message in cl->err (else strerror is
	 * used), and the reply becomes an error; or return CTL_PENDING and
	 * call ctl_finish() later.  req is the decoded request (borrowed for
	 * the call only). */
	int (*fn)(struct ctl_client *cl, json_t *req, struct strbuf *o);
	const char *help;
} ctl_cmds[] = {
	{ "status", ctl_status, "exports, reactors, listeners, counters, pool" },
	{ "scrub", ctl_scrub, "check every pool version's shards, queue repairs" },
};

/* vol.sync: the wait for the pool is the cache thread's; the control
 * thread goes on serving (status, other clients, the signals) and only
 * holds the client (its later requests wait, replies stay in order) until
 * the answer, the timeout (the sync is cancelled: the flush goes on) or
 * the daemon's stop (control_stop: answered with an error).  The timer and
 * the answer both end here, in either order; the last one replies. */
#define CTL_SYNC_TIMEOUT_MS 60000u      /* default and limit; the CLI
                                         * waits 120 s */

struct ctl_sync {
	struct ctl_client *cl;
	struct ssdcache_sync *h;        /* NULL once answered */
	struct loop_timer timer;
	uint64_t timeout_ms;
	int res;
};

static void ctl_sync_reply(struct ctl_sync *cs)
{
	struct ctl_client *cl = cs->cl;
	struct strbuf *o = &cl->out;
	int r = cs->res;

	if (r >= 0) {
		strbuf_printf(o, "{\"ok\":true}\n");
	} else {
		char msg[256];

		if (r == -ETIMEDOUT)
			snprintf(msg, sizeof(msg), "sync: not every write reached the pool "
				 "within %llu ms (pool paused or failing?); the flush goes "
				 "on, retry later", (unsigned long long)cs->timeout_ms);
		else if (r == -ESHUTDOWN)
			snprintf(msg, sizeof(msg), "sync: the daemon is stopping (its stop "
				 "drains the pool itself, see its log)");
		else
			snprintf(msg, sizeof(msg), "sync failed: %s", strerror(-r));
		strbuf_printf(o, "{\"ok\":false,\"error\":");
		strbuf_json_str(o, msg);
		strbuf_printf(o, ",\"errno\":%d}\n", -r);
	}
	cl->sync = NULL;
	free(cs);
	cl->pending = false;
	client_process(cl);
	client_check(cl);
}

static void ctl_sync_timer_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct loop_timer *t = container_of(op, struct loop_timer, op);
	struct ctl_sync *cs = container_of(t, struct ctl_sync, timer);

	if (cs->h)              /* the answer follows (posted) */
		volumes_sync_cancel(cs->h, -ETIMEDOUT);
	else
		ctl_sync_reply(cs);
}

static void ctl_sync_done(void *arg, int res)
{
	struct ctl_sync *cs = arg;

	cs->h = NULL;
	cs->res = res;
	if (cs->timer.armed)
		loop_timer_cancel(cs->cl->ctl->loop, &cs->timer);
	else
		ctl_sync_reply(cs);
}

static void handle_sync(struct ctl_client *cl, json_t *req)
{
	struct strbuf *o = &cl->out;
	json_t *t = json_object_get(req, "timeout_ms");
	uint64_t tmo = CTL_SYNC_TIMEOUT_MS;
	struct ctl_sync *cs;
	int r;

	if (t && (!json_is_integer(t) || json_integer_value(t) < 1 ||
		  json_integer_value(t) > CTL_SYNC_TIMEOUT_MS)) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"timeout_ms: 1 to %u\","
			      "\"errno\":%d}\n", CTL_SYNC_TIMEOUT_MS, EINVAL);
		return;
	}
	if (t)
		tmo = (uint64_t)json_integer_value(t);
	if (cl->ctl->stopping) {
		/* read after control_stop (pipelined behind a pending reply):
		 * a new wait would hold the stop for its whole timeout */
		strbuf_printf(o, "{\"ok\":false,\"error\":\"sync: the daemon is stopping "
			      "(its stop drains the pool itself, see its log)\","
			      "\"errno\":%d}\n", ESHUTDOWN);
		return;
	}
	cs = calloc(1, sizeof(*cs));
	if (!cs) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"out of memory\"}\n");
		return;
	}
	cs->cl = cl;
	cs->timeout_ms = tmo;
	r = volumes_sync_start(cl->ctl->vols, cl->ctl->loop, ctl_sync_done, cs, &cs->h);
	if (r < 0) {
		free(cs);
		strbuf_printf(o, "{\"ok\":false,\"error\":");
		strbuf_json_str(o, r == -ENOTSUP ? "no pool: volumes are in memory"
						 : strerror(-r));
		strbuf_printf(o, ",\"errno\":%d}\n", -r);
		return;
	}
	cl->sync = cs;
	cl->pending = true;
	loop_timer_arm(cl->ctl->loop, &cs->timer, tmo * 1000000ull, ctl_sync_timer_cb);
}

/* vol.* and snap.*: synchronous, here on the control thread. */
static void handle_vol(struct ctl_client *cl, const char *name, json_t *req)
{
	struct strbuf *o = &cl->out;
	json_t *members = NULL;
	char *text;
	int r;

	if (!cl->ctl->vols) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"this daemon serves no "
			      "volumes (start it with --volumes ephemeral)\"}\n");
		return;
	}
	r = ctl_vol_call(cl->ctl->vols, name, req, &members, cl->err, sizeof(cl->err));
	if (r == -ENOSYS) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"unknown command\",\"command\":");
		strbuf_json_str(o, name);
		strbuf_printf(o, "}\n");
		return;
	}
	if (r < 0) {
		strbuf_printf(o, "{\"ok\":false,\"error\":");
		strbuf_json_str(o, cl->err[0] ? cl->err : strerror(-r));
		strbuf_printf(o, ",\"errno\":%d}\n", -r);
		cl->err[0] = '\0';
		return;
	}
	text = json_dumps(members, JSON_COMPACT);
	json_decref(members);
	if (!text) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"out of memory\"}\n");
		return;
	}
	/* text is "{...}": splice its members after "ok". */
	strbuf_printf(o, "{\"ok\":true%s%s\n", strlen(text) > 2 ? "," : "}",
		      strlen(text) > 2 ? text + 1 : "");
	free(text);
}

static void handle_line(struct ctl_client *cl, const char *line)
{
	struct strbuf *o = &cl->out;
	const char *name;
	json_error_t jerr;
	json_t *req, *cmd;
	size_t i;
	int r;

	req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	if (!req || !json_is_object(req)) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"expected a JSON object "
			      "like {\\\"cmd\\\":\\\"status\\\"}\"}\n");
		json_decref(req);
		return;
	}
	cmd = json_object_get(req, "cmd");
	if (!cmd) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"missing \\\"cmd\\\"\"}\n");
		json_decref(req);
		return;
	}
	name = json_string_value(cmd);
	if (!name) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"\\\"cmd\\\" must be a string\"}\n");
		json_decref(req);
		return;
	}
	if (!strcmp(name, "vol.sync") && cl->ctl->vols) {
		handle_sync(cl, req);
		json_decref(req);
		return;
	}
	if (!strncmp(name, "vol.", 4) || !strncmp(name, "snap.", 5)) {
		handle_vol(cl, name, req);
		json_decref(req);
		return;
	}
	for (i = 0; i < ARRAY_SIZE(ctl_cmds); i++) {
		if (strcmp(name, ctl_cmds[i].name))
			continue;
		cl->mark = o->len;
		cl->err[0] = '\0';
		strbuf_printf(o, "{\"ok\":true,");
		r = ctl_cmds[i].fn(cl, req, o);
		if (r == CTL_PENDING)
			cl->pending = true;
		else
			ctl_finish(cl, r);
		json_decref(req);
		return;
	}
	strbuf_printf(o, "{\"ok\":false,\"error\":\"unknown command\",\"command\":");
	strbuf_json_str(o, name);
	strbuf_printf(o, ",\"commands\":[");
	for (i = 0; i < ARRAY_SIZE(ctl_cmds); i++)
		strbuf_printf(o, "%s\"%s\"", i ? "," : "", ctl_cmds[i].name);
	strbuf_printf(o, ",\"vol.*\",\"snap.*\"]}\n");
	json_decref(req);
}

/* ---- client I/O ---- */

static void client_close_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct ctl_client *cl = container_of(op, struct ctl_client, close_op);
	struct control *ctl = cl->ctl;
	struct ctl_client **pp;

	for (pp = &ctl->clients; *pp; pp = &(*pp)->next)
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	ctl->n_clients--;
	free(cl->out.buf);
	free(cl);
}

static void client_recv_arm(struct ctl_client *cl)
{
	struct io_uring_sqe *sqe = loop_sqe(cl->ctl->loop, &cl->recv_op);

	io_uring_prep_recv(sqe, cl->fd, cl->in + cl->in_len,
			   CTL_MAX_LINE - cl->in_len, 0);
	cl->recv_armed = true;
}

static void client_send_arm(struct ctl_client *cl)
{
	struct io_uring_sqe *sqe = loop_sqe(cl->ctl->loop, &cl->send_op);

	io_uring_prep_send(sqe, cl->fd, cl->out.buf, cl->out.len, MSG_NOSIGNAL);
	cl->send_armed = true;
}

static void client_check(struct ctl_client *cl)
{
	if (cl->closing || cl->recv_armed || cl->send_armed || cl->pending)
		return;
	if (cl->out.len) {
		client_send_arm(cl);
		return;
	}
	if (!cl->eof && !cl->ctl->stopping) {
		client_recv_arm(cl);
		return;
	}
	cl->closing = true;
	io_uring_prep_close(loop_sqe(cl->ctl->loop, &cl->close_op), cl->fd);
}

/* Answer every complete request line buffered in cl->in, in order, until
 * one of them is pending. */
static void client_process(struct ctl_client *cl)
{
	char *nl;

	while (!cl->pending && (nl = memchr(cl->in, '\n', cl->in_len))) {
		size_t n = (size_t)(nl - cl->in) + 1;

		*nl = '\0';
		if (nl > cl->in && nl[-1] == '\r')
			nl[-1] = '\0';
		if (cl->in[0])
			handle_line(cl, cl->in);
		memmove(cl->in, cl->in + n, cl->in_len - n);
		cl->in_len -= n;
		cl->in[cl->in_len] = '\0';
	}
	if (!cl->pending && !cl->eof &&
	    (cl->in_len == CTL_MAX_LINE || memchr(cl->in, '\0', cl->in_len))) {
		strbuf_printf(&cl->out, "{\"ok\":false,\"error\":\"request line too long "
			      "or not text\"}\n");
		cl->eof = true;
	}
}

static void client_recv_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct ctl_client *cl = container_of(op, struct ctl_client, recv_op);

	cl->recv_armed = false;
	if (res <= 0) {
		cl->eof = true;
		client_check(cl);
		return;
	}
	cl->in_len += (size_t)res;
	cl->in[cl->in_len] = '\0';
	client_process(cl);
	client_check(cl);
}

static void client_send_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct ctl_client *cl = container_of(op, struct ctl_client, send_op);

	cl->send_armed = false;
	if (res <= 0) {
		cl->out.len = 0;
		cl->eof = true;
	} else {
		memmove(cl->out.buf, cl->out.buf + res, cl->out.len - (size_t)res);
		cl->out.len -= (size_t)res;
	}
	client_check(cl);
}

static void ctl_accept_arm(struct control *ctl);

static void ctl_accept_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct control *ctl = container_of(op, struct control, accept_op);
	struct ctl_client *cl;

	if (!(flags & IORING_CQE_F_MORE))
		ctl->accept_armed = false;
	if (res >= 0) {
		if (ctl->stopping || ctl->n_clients >= CTL_MAX_CLIENTS ||
		    !(cl = calloc(1, sizeof(*cl)))) {
			close(res);
		} else {
			cl->ctl = ctl;
			cl->fd = res;
			cl->recv_op.cb = client_recv_cb;
			cl->send_op.cb = client_send_cb;
			cl->close_op.cb = client_close_cb;
			cl->next = ctl->clients;
			ctl->clients = cl;
			ctl->n_clients++;
			client_check(cl);
		}
	} else if (res != -ECANCELED) {
		log_warn("control socket accept: %s", strerror(-res));
	}
	if (!ctl->accept_armed && !ctl->stopping && res != -ECANCELED)
		ctl_accept_arm(ctl);
}

static void ctl_accept_arm(struct control *ctl)
{
	io_uring_prep_multishot_accept(loop_sqe(ctl->loop, &ctl->accept_op),
				       ctl->fd, NULL, NULL, SOCK_CLOEXEC);
	ctl->accept_armed = true;
}

int control_open(struct control **out, const char *path, bool owned,
		 struct server *srv, struct loop *loop)
{
	struct control *ctl;

	*out = NULL;
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl || !(ctl->path = strdup(path))) {
		free(ctl);
		return -ENOMEM;
	}
	ctl->loop = loop;
	ctl->srv = srv;
	ctl->state = "serving";
	/* Management is for the daemon's owner only. */
	ctl->fd = server_unix_listen(path, 0600, 16, owned);
	if (ctl->fd < 0) {
		int err = ctl->fd;

		if (err == -ENAMETOOLONG)
			fprintf(stderr, "nbdsrv serve: --control: '%s': path empty or too long\n",
				path);
		else if (err == -EADDRINUSE)
			fprintf(stderr, "nbdsrv serve: control socket '%s' is in use: "
				"another daemon listens on it\n", path);
		else
			fprintf(stderr, "nbdsrv serve: control socket '%s': %s\n", path,
				strerror(-err));
		free(ctl->path);
		free(ctl);
		return err == -ENAMETOOLONG ? -EINVAL : err;
	}
	ctl->accept_op.cb = ctl_accept_cb;
	ctl_accept_arm(ctl);
	*out = ctl;
	return 0;
}

void control_set_pool(struct control *ctl, struct pool_thread *pt)
{
	ctl->pool = pt;
}

void control_set_volumes(struct control *ctl, struct volumes *v)
{
	ctl->vols = v;
}

void control_set_state(struct control *ctl, const char *state)
{
	if (ctl)
		ctl->state = state;
}

void control_stop(struct control *ctl)
{
	struct ctl_client *cl;

	if (!ctl || ctl->stopping)
		return;
	ctl->stopping = true;
	if (ctl->accept_armed)
		io_uring_prep_cancel(loop_sqe(ctl->loop, NULL), &ctl->accept_op, 0);
	for (cl = ctl->clients; cl; cl = cl->next) {
		if (cl->recv_armed)
			io_uring_prep_cancel(loop_sqe(ctl->loop, NULL), &cl->recv_op, 0);
		if (cl->sync && cl->sync->h)
			volumes_sync_cancel(cl->sync->h, -ESHUTDOWN);
	}
}

bool control_idle(const struct control *ctl)
{
	return !ctl || (!ctl->accept_armed && ctl->n_clients == 0);
}

void control_free(struct control *ctl)
{
	struct ctl_client *cl, *next;

	if (!ctl)
		return;
	for (cl = ctl->clients; cl; cl = next) {
		next = cl->next;
		if (!cl->closing)
			close(cl->fd);
		free(cl->out.buf);
		free(cl);
	}
	close(ctl->fd);
	unlink(ctl->path);
	free(ctl->path);
	free(ctl);
}
