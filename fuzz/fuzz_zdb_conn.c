/*
 * fuzz_zdb_conn.c — the RESP client's connection state machine against a
 * server that answers arbitrary bytes.  Each input: a real unix-socket
 * connection (IORING_OP_CONNECT), a valid Redis handshake (INFO, canary GET
 * nil, canary SET +OK, each answered after its request arrived), six
 * pipelined requests (GETs with small and large
 * buffers — the large one exercises the direct receive into the caller's
 * buffer — PUT, DEL, EXISTS, INFO), then the input as the reply stream and
 * EOF.  Whatever the bytes, every request completes exactly once, a GET
 * never reports more bytes than its buffer, and tear-down leaves nothing in
 * flight (ASan/UBSan watch the memory).
 */
#include "zdb/zdb.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct loop loop;
static int lfd = -1;
static char path[108];

struct fz_req {
	struct zdb_req r;
	int calls;
};

static void fz_done(struct zdb_req *r)
{
	container_of(r, struct fz_req, r)->calls++;
}

static bool fz_stopped;
static void fz_on_stopped(struct zdb_backend *b)
{
	(void)b;
	fz_stopped = true;
}

static void fz_cleanup(void)
{
	unlink(path);
}

static void fz_init(void)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	if (lfd >= 0)
		return;
	if (loop_init(&loop, 256) < 0)
		abort();
	snprintf(path, sizeof(path), "/tmp/fuzz_zdb_conn.%d.sock", (int)getpid());
	unlink(path);
	strcpy(un.sun_path, path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(lfd, 4) < 0)
		abort();
	log_set_level(LOG_LEVEL_ERROR);
	atexit(fz_cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const hs[3] = { "$15\r\nredis_version:7\r\n", "$-1\r\n", "+OK\r\n" };
	static char small[4096], big[100000], val[] = "0123456789";
	static char inbuf[65536];
	size_t inlen;
	unsigned nreq;
	bool sent;
	struct zdb_backend_cfg cfg;
	struct zdb_backend *b;
	struct fz_req q[6];
	struct zdb_info info;
	size_t small_len;
	int sfd, i, iter;
	bool all;

	fz_init();
	small_len = size ? (size_t)(data[0] % 8) * 500 + 16 : 16;
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.name, sizeof(cfg.name), "fuzz");
	snprintf(cfg.address, sizeof(cfg.address), "unix:%s", path);
	cfg.kind = ZDB_KIND_REDIS;
	b = zdb_conn_create(&loop, &cfg);
	if (!b)
		return 0;
	b->timeout_ns = 2000ull * 1000000;
	b->stopped = fz_on_stopped;
	fz_stopped = false;
	if (b->ops->start(b) < 0)
		abort();
	memset(q, 0, sizeof(q));
	for (i = 0; i < 6; i++) {
		q[i].r.key = "key";
		q[i].r.key_len = 3;
		q[i].r.done = fz_done;
	}
	q[0].r.op = ZDB_OP_GET;
	q[0].r.buf = small;
	q[0].r.buf_len = small_len;
	q[1].r.op = ZDB_OP_GET;
	q[1].r.buf = big;
	q[1].r.buf_len = sizeof(big);
	q[2].r.op = ZDB_OP_PUT;
	q[2].r.val = val;
	q[2].r.val_len = 10;
	q[3].r.op = ZDB_OP_DEL;
	q[4].r.op = ZDB_OP_EXISTS;
	q[5].r.op = ZDB_OP_INFO;
	q[5].r.buf = &info;
	q[5].r.buf_len = sizeof(info);
	for (i = 0; i < 6; i++)
		b->ops->submit(b, &q[i].r);

	loop_run_once(&loop, 0);                /* submits the connect */
	sfd = accept(lfd, NULL, NULL);
	if (sfd < 0)
		abort();
	fcntl(sfd, F_SETFL, O_NONBLOCK);
	/* The server answers in step, as a real one must: each handshake reply
	 * after its request, the input once user requests have arrived. */
	nreq = 0;
	inlen = 0;
	sent = false;
	for (iter = 0; iter < 2000; iter++) {
		ssize_t n = read(sfd, inbuf + inlen, sizeof(inbuf) - inlen);
		struct resp_reply rp;
		int used;

		if (n > 0)
			inlen += (size_t)n;
		while ((used = resp_parse(inbuf, inlen, sizeof(inbuf), &rp)) > 0) {
			memmove(inbuf, inbuf + used, inlen - (size_t)used);
			inlen -= (size_t)used;
			nreq++;
			if (nreq <= 3) {
				/* send(MSG_NOSIGNAL): a client that dropped the
				 * connection must not kill the fuzzer with SIGPIPE */
				if (send(sfd, hs[nreq - 1], strlen(hs[nreq - 1]),
					 MSG_NOSIGNAL) < 0)
					abort();
			} else if (!sent) {
				sent = true;
				if (size > 1 &&
				    send(sfd, data + 1, size - 1, MSG_NOSIGNAL) < 0) {
					/* EAGAIN: the tail is dropped, fine */
				}
				shutdown(sfd, SHUT_WR);
			}
		}
		if (used < 0 || inlen == sizeof(inbuf))
			abort();   /* our client sent something that is not RESP */
		loop_run_once(&loop, 1000000);
		b->ops->tick(b, now_ns());
		for (all = true, i = 0; i < 6; i++)
			all &= q[i].calls > 0;
		if (all)
			break;
	}
	b->ops->stop(b);
	for (iter = 0; !fz_stopped && iter < 10000; iter++)
		loop_run_once(&loop, 1000000);
	if (!fz_stopped)
		abort();
	loop_run_once(&loop, 0);
	for (i = 0; i < 6; i++) {
		if (q[i].calls != 1)
			abort();   /* exactly once, even when the bytes were garbage */
		if (q[i].r.op == ZDB_OP_GET && q[i].r.result > (int)q[i].r.buf_len)
			abort();
	}
	b->ops->destroy(b);
	close(sfd);
	return 0;
}
