/*
 * check_ext_headers.c — extended headers end to end: no client installed here
 * (libnbd 1.14, qemu 7.2, nbdkit 1.32) negotiates NBD_OPT_EXTENDED_HEADERS,
 * so this test starts the real `nbdsrv serve` and speaks the protocol by
 * hand over its unix socket: negotiation, 64-bit requests, extended reply
 * chunks for writes, reads (data + hole) and errors, BLOCK_STATUS_EXT, and a
 * disconnect when the client falls back to the compact request magic.
 */
#include "nbdsrv/proto.h"
#include "test/lib/check_run.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef NBDSRV_BIN
#error "NBDSRV_BIN must name the nbdsrv binary"
#endif

static char dir[] = "/tmp/check_ext.XXXXXX";
static char img[128];

/* Unchecked fixture (runs in the parent even when the test fails): the
 * scratch directory; the server dies with the test (PDEATHSIG). */
static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(img, sizeof(img), "%s/img", dir);
}

static void teardown(void)
{
	char sock[160];

	snprintf(sock, sizeof(sock), "%s/sock", dir);
	unlink(img);
	unlink(sock);
	rmdir(dir);
}

static void put16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

static int fd = -1;

static void xsend(const void *b, size_t n)
{
	ck_assert_int_eq(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Read exactly n bytes; returns false on EOF. */
static bool xrecv(void *b, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, (uint8_t *)b + got, n - got, 0);

		if (r == 0)
			return false;
		ck_assert_msg(r > 0, "recv: %s", strerror(errno));
		got += (size_t)r;
	}
	return true;
}

static void send_opt(uint32_t opt, const uint8_t *d, uint32_t len)
{
	uint8_t h[16];

	put64(h, NBD_OPT_MAGIC);
	put32(h + 8, opt);
	put32(h + 12, len);
	xsend(h, 16);
	if (len)
		xsend(d, len);
}

/* The next option reply: its type; data (up to cap bytes) in d. */
static uint32_t opt_reply(uint8_t *d, size_t cap, uint32_t *len)
{
	uint8_t h[20];

	ck_assert(xrecv(h, 20));
	ck_assert_uint_eq(get64(h), NBD_REP_MAGIC);
	*len = get32(h + 16);
	ck_assert_uint_le(*len, cap);
	ck_assert(xrecv(d, *len));
	return get32(h + 12);
}

static void send_req(uint16_t flags, uint16_t type, uint64_t cookie,
		     uint64_t off, uint64_t len)
{
	uint8_t h[32];

	put32(h, NBD_EXT_REQUEST_MAGIC);
	put16(h + 4, flags);
	put16(h + 6, type);
	put64(h + 8, cookie);
	put64(h + 16, off);
	put64(h + 24, len);
	xsend(h, 32);
}

struct chunk {
	uint16_t flags, type;
	uint64_t cookie, offset, len;
	uint8_t data[16384];
};

static void reply(struct chunk *c)
{
	uint8_t h[32];

	ck_assert(xrecv(h, 32));
	ck_assert_uint_eq(get32(h), NBD_EXT_REPLY_MAGIC);
	c->flags = get16(h + 4);
	c->type = get16(h + 6);
	c->cookie = get64(h + 8);
	c->offset = get64(h + 16);
	c->len = get64(h + 24);
	ck_assert_uint_le(c->len, sizeof(c->data));
	ck_assert(xrecv(c->data, c->len));
}

START_TEST(test_extended_session)
{
	char sock[160], exp[160];
	char *argv[] = { (char *)NBDSRV_BIN, (char *)"serve", (char *)"--unix", sock,
			 (char *)"--export", exp, (char *)"--log-level", (char *)"warn",
			 NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static struct chunk c;
	uint8_t d[512], buf[64];
	uint32_t len, n;
	pid_t pid;
	int i, st, imgfd;

	snprintf(sock, sizeof(sock), "%s/sock", dir);
	snprintf(exp, sizeof(exp), "disk=%s", img);
	imgfd = open(img, O_CREAT | O_RDWR, 0644);
	ck_assert_int_ge(imgfd, 0);
	ck_assert_int_eq(ftruncate(imgfd, 16 << 20), 0);
	close(imgfd);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(NBDSRV_BIN, argv);
		_exit(127);
	}

	strcpy(sa.sun_path, sock);
	for (i = 0; i < 400; i++) {         /* wait until it listens */
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(fd);
		fd = -1;
		usleep(25000);
	}
	ck_assert_msg(fd >= 0, "server did not start listening");

	ck_assert(xrecv(buf, 18));
	ck_assert_uint_eq(get64(buf), NBD_MAGIC);
	put32(buf, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	xsend(buf, 4);

	send_opt(NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	ck_assert_uint_eq(opt_reply(d, sizeof(d), &len), NBD_REP_ACK);
	/* SET_META_CONTEXT "disk" ["base:allocation"] */
	put32(d, 4);
	memcpy(d + 4, "disk", 4);
	put32(d + 8, 1);
	put32(d + 12, 15);
	memcpy(d + 16, "base:allocation", 15);
	send_opt(NBD_OPT_SET_META_CONTEXT, d, 31);
	ck_assert_uint_eq(opt_reply(d, sizeof(d), &len), NBD_REP_META_CONTEXT);
	ck_assert_uint_eq(get32(d), NBD_META_BASE_ALLOCATION_ID);
	ck_assert_uint_eq(opt_reply(d, sizeof(d), &len), NBD_REP_ACK);
	/* GO "disk", no info requests */
	put32(d, 4);
	memcpy(d + 4, "disk", 4);
	put16(d + 8, 0);
	send_opt(NBD_OPT_GO, d, 10);
	while ((n = opt_reply(d, sizeof(d), &len)) == NBD_REP_INFO)
		if (get16(d) == NBD_INFO_EXPORT)
			ck_assert_uint_eq(get64(d + 2), 16 << 20);
	ck_assert_uint_eq(n, NBD_REP_ACK);

	/* WRITE (FUA) 8 bytes at 0: one extended NONE chunk. */
	send_req(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 11, 0, 8);
	xsend("ABCDEFGH", 8);
	reply(&c);
	ck_assert_uint_eq(c.cookie, 11);
	ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_NONE);
	ck_assert_uint_eq(c.flags, NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(c.len, 0);

	/* READ 8 KiB at 0: data for the first block, a hole for the second. */
	send_req(0, NBD_CMD_READ, 12, 0, 8192);
	reply(&c);
	ck_assert_uint_eq(c.cookie, 12);
	ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_OFFSET_DATA);
	ck_assert_uint_eq(c.flags, 0);
	ck_assert_uint_eq(c.len, 8 + 4096);
	ck_assert_uint_eq(get64(c.data), 0);
	ck_assert(memcmp(c.data + 8, "ABCDEFGH", 8) == 0);
	reply(&c);
	ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_OFFSET_HOLE);
	ck_assert_uint_eq(c.flags, NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(c.len, 12);
	ck_assert_uint_eq(get64(c.data), 4096);
	ck_assert_uint_eq(get32(c.data + 8), 4096);

	/* BLOCK_STATUS over the whole export: BLOCK_STATUS_EXT. */
	send_req(0, NBD_CMD_BLOCK_STATUS, 13, 0, 16 << 20);
	reply(&c);
	ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
	ck_assert_uint_eq(c.flags, NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get32(c.data), NBD_META_BASE_ALLOCATION_ID);
	n = get32(c.data + 4);
	ck_assert_uint_eq(c.len, 8 + 16ull * n);
	ck_assert_uint_ge(n, 2);
	ck_assert_uint_eq(get64(c.data + 16), 0);             /* data first */
	ck_assert_uint_eq(get64(c.data + 24 + 8), NBD_STATE_HOLE | NBD_STATE_ZERO);

	/* A 64-bit READ past the end: an ERROR chunk with EINVAL. */
	send_req(0, NBD_CMD_READ, 14, 1ull << 40, 512);
	reply(&c);
	ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_ERROR);
	ck_assert_uint_eq(c.flags, NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get32(c.data), NBD_EINVAL);

	/* The compact magic is a protocol violation now: disconnect (the
	 * server reads 32-byte headers, so send a full one). */
	memset(buf, 0, 32);
	put32(buf, NBD_REQUEST_MAGIC);
	xsend(buf, 32);
	ck_assert(!xrecv(buf, 1));
	close(fd);

	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-ext-headers");
	TCase *tc = tcase_create("core");

	signal(SIGPIPE, SIG_IGN);
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_extended_session);
	suite_add_tcase(s, tc);
	return check_run(s);
}
