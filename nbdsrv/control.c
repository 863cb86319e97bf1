/*
 * control.c — the daemon's control socket: a unix stream socket speaking
 * JSON lines.  Each request is one line holding a JSON object with a "cmd"
 * string; each reply is one line, {"ok":true,...} or
 * {"ok":false,"error":"..."}.  Commands live in one dispatch table
 * (ctl_cmds[]); later issues add volume and pool commands there.
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
 * Request parsing is deliberately small: the line must be a JSON object;
 * only the top-level "cmd" member is interpreted (string, no escapes
 * needed by any command name).  Anything else gets a clear error.
 */
#include "nbdsrv/control.h"
#include "nbdsrv/server.h"

#include <errno.h>
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

struct ctl_client {
	struct control *ctl;
	struct ctl_client *next;
	int fd;
	struct loop_op recv_op;
	struct loop_op send_op;
	struct loop_op close_op;
	bool recv_armed, send_armed, closing, eof;
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

static int ctl_status(struct control *ctl, struct strbuf *o)
{
	struct server *srv = ctl->srv;
	size_t i;
	int r;

	r = strbuf_printf(o, "\"exports\":[");
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
	return r ? r : strbuf_printf(o, "]");
}

static const struct ctl_cmd {
	const char *name;
	/* Append the reply's members (after "ok":true) to o; or return
	 * -errno with a message in o (the reply becomes an error). */
	int (*fn)(struct control *ctl, struct strbuf *o);
	const char *help;
} ctl_cmds[] = {
	{ "status", ctl_status, "exports, reactors, listeners and counters" },
};

/* The "cmd" string of a one-line JSON object, copied to name[cap]. */
static int parse_cmd(const char *line, char *name, size_t cap)
{
	const char *p = line, *key, *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '{')
		return -EINVAL;
	key = strstr(p, "\"cmd\"");
	if (!key)
		return -ENOENT;
	p = key + 5;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p++ != ':')
		return -EINVAL;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p++ != '"')
		return -EINVAL;
	end = strchr(p, '"');
	if (!end || (size_t)(end - p) >= cap || memchr(p, '\\', (size_t)(end - p)))
		return -EINVAL;
	memcpy(name, p, (size_t)(end - p));
	name[end - p] = '\0';
	if (!strrchr(end, '}'))
		return -EINVAL;
	return 0;
}

static void handle_line(struct ctl_client *cl, const char *line)
{
	struct strbuf *o = &cl->out;
	size_t mark = o->len, i;
	char name[64];
	int r;

	r = parse_cmd(line, name, sizeof(name));
	if (r == -ENOENT) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"missing \\\"cmd\\\"\"}\n");
		return;
	}
	if (r < 0) {
		strbuf_printf(o, "{\"ok\":false,\"error\":\"expected a JSON object "
			      "like {\\\"cmd\\\":\\\"status\\\"}\"}\n");
		return;
	}
	for (i = 0; i < ARRAY_SIZE(ctl_cmds); i++) {
		if (strcmp(name, ctl_cmds[i].name))
			continue;
		strbuf_printf(o, "{\"ok\":true,");
		r = ctl_cmds[i].fn(cl->ctl, o);
		if (r < 0) {
			o->len = mark;
			strbuf_printf(o, "{\"ok\":false,\"error\":\"%s\"}\n", strerror(-r));
		} else {
			strbuf_printf(o, "}\n");
		}
		return;
	}
	strbuf_printf(o, "{\"ok\":false,\"error\":\"unknown command\",\"command\":");
	strbuf_json_str(o, name);
	strbuf_printf(o, ",\"commands\":[");
	for (i = 0; i < ARRAY_SIZE(ctl_cmds); i++)
		strbuf_printf(o, "%s\"%s\"", i ? "," : "", ctl_cmds[i].name);
	strbuf_printf(o, "]}\n");
}

/* ---- client I/O ---- */

static void client_check(struct ctl_client *cl);

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
	if (cl->closing || cl->recv_armed || cl->send_armed)
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

static void client_recv_cb(struct loop_op *op, int res, uint32_t flags)
{
	struct ctl_client *cl = container_of(op, struct ctl_client, recv_op);
	char *nl;

	cl->recv_armed = false;
	if (res <= 0) {
		cl->eof = true;
		client_check(cl);
		return;
	}
	cl->in_len += (size_t)res;
	cl->in[cl->in_len] = '\0';
	while ((nl = memchr(cl->in, '\n', cl->in_len))) {
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
	if (cl->in_len == CTL_MAX_LINE || memchr(cl->in, '\0', cl->in_len)) {
		strbuf_printf(&cl->out, "{\"ok\":false,\"error\":\"request line too long "
			      "or not text\"}\n");
		cl->eof = true;
	}
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

int control_open(struct control **out, const char *path, struct server *srv,
		 struct loop *loop)
{
	struct control *ctl;
	struct sockaddr_un sa;
	int err;

	*out = NULL;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "nbdsrv serve: --control: '%s': path empty or too long\n",
			path);
		return -EINVAL;
	}
	strcpy(sa.sun_path, path);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl || !(ctl->path = strdup(path))) {
		free(ctl);
		return -ENOMEM;
	}
	ctl->loop = loop;
	ctl->srv = srv;
	ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->fd < 0)
		goto fail;
	if (bind(ctl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		struct stat st;
		int probe;
		bool stale = false;

		if (errno != EADDRINUSE)
			goto fail;
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    connect(probe, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
		    errno == ECONNREFUSED)
			stale = true;
		if (probe >= 0)
			close(probe);
		if (!stale) {
			errno = EADDRINUSE;
			goto fail;
		}
		unlink(path);
		if (bind(ctl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail;
	}
	/* Management is for the daemon's owner only. */
	chmod(path, 0600);
	if (listen(ctl->fd, 16) < 0)
		goto fail;
	ctl->accept_op.cb = ctl_accept_cb;
	ctl_accept_arm(ctl);
	*out = ctl;
	return 0;
fail:
	err = errno;
	fprintf(stderr, "nbdsrv serve: --control: '%s': %s\n", path, strerror(err));
	if (ctl->fd >= 0)
		close(ctl->fd);
	free(ctl->path);
	free(ctl);
	return -err;
}

void control_stop(struct control *ctl)
{
	struct ctl_client *cl;

	if (!ctl || ctl->stopping)
		return;
	ctl->stopping = true;
	if (ctl->accept_armed)
		io_uring_prep_cancel(loop_sqe(ctl->loop, NULL), &ctl->accept_op, 0);
	for (cl = ctl->clients; cl; cl = cl->next)
		if (cl->recv_armed)
			io_uring_prep_cancel(loop_sqe(ctl->loop, NULL), &cl->recv_op, 0);
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
