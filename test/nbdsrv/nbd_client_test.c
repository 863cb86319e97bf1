/*
 * nbd_client_test.c — drive a running `nbdsrv serve` through libnbd 1.14 and
 * check every option and command a real client uses.
 *
 * The shell wrapper (libnbd.sh) starts the servers and passes two sockets:
 *
 *   SOCK_RW  exports "disk" (64 MiB, sparse, desc "test disk", the default
 *            export) and "other" (1 MiB)
 *   SOCK_RO  exports "ro" (4 MiB, every byte 0xa5, ",ro")
 *   tcp:HOST:PORT (optional) the SOCK_RW server over TCP: half of the
 *            concurrent connections use it
 *
 * Regions of "disk" used, so the parts do not disturb each other:
 *
 *   [0, 8M)    commands with structured replies
 *   [8M, 16M)  commands without structured replies
 *   [16M, 20M) multi-conn
 *   [24M, 64M) concurrent random I/O against an in-memory model, then
 *              large reads interleaved with small ones (test_mixed)
 *
 * Every check stops the run with the file, line and what was expected.
 * NBDSRV_STANDIN=1 (nbdkit behind our CLI) relaxes the few facts where nbdkit
 * legitimately differs from our contract (descriptions, FAST_ZERO, block
 * size maximum); each such place says so.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define MiB ((uint64_t)1 << 20)
#define DISK_SIZE (64 * MiB)
#define OTHER_SIZE (1 * MiB)
#define RO_SIZE (4 * MiB)

static bool standin;
static const char *sock_rw, *sock_ro, *tcp_rw;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, \
				#cond);                                        \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, " (libnbd: %s)\n",                     \
				nbd_get_error() ? nbd_get_error() : "-");      \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define OK(call) CHECK((call) != -1, "%s failed", #call)

static int soft_failures;

/* A call that must fail with the server's error @err.  A wrong error code
 * is counted and reported, and the run goes on (the exit status is still 1)
 * so that one run lists every wrong code. */
#define FAILS_WITH(call, err)                                                  \
	do {                                                                   \
		int r_ = (call);                                               \
		int e_ = nbd_get_errno();                                      \
		if (!(r_ == -1 && e_ == (err))) {                              \
			fprintf(stderr, "FAIL %s:%d: %s: returned %d errno %d " \
				"(%s), expected %s\n", __FILE__, __LINE__,     \
				#call, r_, e_, strerror(e_), strerror(err));   \
			soft_failures++;                                       \
		}                                                              \
	} while (0)

static struct nbd_handle *open_export(const char *sock, const char *name,
				      bool sr)
{
	struct nbd_handle *h = nbd_create();

	CHECK(h, "nbd_create");
	OK(nbd_set_export_name(h, name));
	OK(nbd_set_request_structured_replies(h, sr));
	if (sr)
		OK(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION));
	if (!strncmp(sock, "tcp:", 4)) {
		char host[256], *port;

		snprintf(host, sizeof host, "%s", sock + 4);
		port = strrchr(host, ':');
		CHECK(port, "bad tcp address %s", sock);
		*port++ = '\0';
		OK(nbd_connect_tcp(h, host, port));
	} else {
		OK(nbd_connect_unix(h, sock));
	}
	CHECK(nbd_get_structured_replies_negotiated(h) == sr,
	      "structured replies negotiated != requested %d", sr);
	return h;
}

static void fill(void *buf, size_t n, uint64_t seed)
{
	uint8_t *p = buf;
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

static bool all_bytes(const void *buf, size_t n, uint8_t v)
{
	const uint8_t *p = buf;
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* ---- options ---------------------------------------------------------- */

struct list_state {
	int n;
	bool disk, other;
	char disk_desc[256];
};

static int list_cb(void *opaque, const char *name, const char *desc)
{
	struct list_state *s = opaque;

	s->n++;
	if (!strcmp(name, "disk")) {
		s->disk = true;
		snprintf(s->disk_desc, sizeof s->disk_desc, "%s", desc);
	}
	if (!strcmp(name, "other"))
		s->other = true;
	return 0;
}

static int ctx_cb(void *opaque, const char *name)
{
	if (!strcmp(name, LIBNBD_CONTEXT_BASE_ALLOCATION))
		*(bool *)opaque = true;
	return 0;
}

struct facts {
	int64_t size, bmin, bpref, bmax;
	int ro, flush, fua, trim, zero, fast_zero, df, multi, cache, meta;
};

static void get_facts(struct nbd_handle *h, struct facts *f)
{
	f->size = nbd_get_size(h);
	f->bmin = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
	f->bpref = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
	f->bmax = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	f->ro = nbd_is_read_only(h);
	f->flush = nbd_can_flush(h);
	f->fua = nbd_can_fua(h);
	f->trim = nbd_can_trim(h);
	f->zero = nbd_can_zero(h);
	f->fast_zero = nbd_can_fast_zero(h);
	f->df = nbd_can_df(h);
	f->multi = nbd_can_multi_conn(h);
	f->cache = nbd_can_cache(h);
	f->meta = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
}

static void test_options(void)
{
	struct nbd_handle *h;
	struct list_state ls = { 0 };
	struct facts info, go;
	bool have_ba = false;
	char *desc;
	char buf[512];

	h = nbd_create();
	CHECK(h, "nbd_create");
	OK(nbd_set_opt_mode(h, true));
	OK(nbd_set_full_info(h, true));
	OK(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION));
	OK(nbd_connect_unix(h, sock_rw));
	CHECK(nbd_aio_is_negotiating(h) == 1, "not in option mode");

	CHECK(nbd_opt_list(h, (nbd_list_callback){ .callback = list_cb,
						   .user_data = &ls }) == 2,
	      "opt_list did not return 2 exports");
	CHECK(ls.n == 2 && ls.disk && ls.other, "exports listed: n=%d", ls.n);
	if (!standin)       /* nbdkit's file plugin has no descriptions */
		CHECK(!strcmp(ls.disk_desc, "test disk"),
		      "opt_list description '%s'", ls.disk_desc);

	OK(nbd_set_export_name(h, "disk"));
	CHECK(nbd_opt_list_meta_context(h, (nbd_context_callback){
			.callback = ctx_cb, .user_data = &have_ba }) >= 1,
	      "list_meta_context returned no context");
	CHECK(have_ba, "base:allocation not listed");

	/* INFO on an unknown export fails, negotiation goes on. */
	OK(nbd_set_export_name(h, "no-such-export"));
	CHECK(nbd_opt_info(h) == -1, "opt_info of unknown export succeeded");
	CHECK(nbd_aio_is_negotiating(h) == 1, "unknown INFO ended negotiation");

	/* The default export "" is the first one. */
	OK(nbd_set_export_name(h, ""));
	OK(nbd_opt_info(h));
	CHECK(nbd_get_size(h) == (int64_t)DISK_SIZE, "default export size %" PRIi64,
	      nbd_get_size(h));

	OK(nbd_set_export_name(h, "other"));
	OK(nbd_opt_info(h));
	CHECK(nbd_get_size(h) == (int64_t)OTHER_SIZE, "other size %" PRIi64,
	      nbd_get_size(h));

	OK(nbd_set_export_name(h, "disk"));
	OK(nbd_opt_info(h));
	get_facts(h, &info);
	CHECK(info.size == (int64_t)DISK_SIZE, "size %" PRIi64, info.size);
	CHECK(info.ro == 0 && info.flush == 1 && info.fua == 1 && info.trim == 1 &&
	      info.zero == 1 && info.df == 1 && info.multi == 1 && info.cache == 1,
	      "flags ro=%d flush=%d fua=%d trim=%d zero=%d df=%d multi=%d cache=%d",
	      info.ro, info.flush, info.fua, info.trim, info.zero, info.df,
	      info.multi, info.cache);
	CHECK(info.meta == 1, "base:allocation not negotiated by INFO");
	if (!standin) {     /* nbdkit file: no fast zero on files, max 32M */
		CHECK(info.fast_zero == 1, "FAST_ZERO not advertised");
		CHECK(info.bmax == (int64_t)(64 * MiB),
		      "maximum block size %" PRIi64 ", contract 64 MiB", info.bmax);
	}
	if (!standin || info.bmin > 0) {  /* nbdkit file: no NBD_INFO_BLOCK_SIZE */
		CHECK(info.bmin >= 1 && info.bmin <= 4096 &&
		      (info.bmin & (info.bmin - 1)) == 0,
		      "minimum block size %" PRIi64, info.bmin);
		CHECK(info.bpref >= info.bmin && info.bpref <= info.bmax &&
		      (info.bpref & (info.bpref - 1)) == 0,
		      "preferred block size %" PRIi64, info.bpref);
	}
	desc = nbd_get_export_description(h);
	if (!standin)
		CHECK(desc && !strcmp(desc, "test disk"), "description '%s'",
		      desc ? desc : "(none)");
	free(desc);

	/* GO reports the same facts as INFO. */
	OK(nbd_opt_go(h));
	CHECK(nbd_aio_is_ready(h) == 1, "not ready after GO");
	get_facts(h, &go);
	CHECK(!memcmp(&info, &go, sizeof info), "INFO and GO facts differ");
	OK(nbd_pread(h, buf, sizeof buf, 0, 0));
	OK(nbd_shutdown(h, 0));
	nbd_close(h);

	/* ABORT ends the session cleanly. */
	h = nbd_create();
	OK(nbd_set_opt_mode(h, true));
	OK(nbd_connect_unix(h, sock_rw));
	OK(nbd_opt_abort(h));
	CHECK(nbd_aio_is_closed(h) == 1, "not closed after ABORT");
	nbd_close(h);

	/* GO to an unknown export fails without entering transmission. */
	h = nbd_create();
	OK(nbd_set_opt_mode(h, true));
	OK(nbd_connect_unix(h, sock_rw));
	OK(nbd_set_export_name(h, "no-such-export"));
	CHECK(nbd_opt_go(h) == -1, "GO to unknown export succeeded");
	CHECK(nbd_aio_is_negotiating(h) == 1, "failed GO ended negotiation");
	OK(nbd_set_export_name(h, "other"));
	OK(nbd_opt_go(h));
	CHECK(nbd_get_size(h) == (int64_t)OTHER_SIZE, "other size after GO");
	OK(nbd_shutdown(h, 0));
	nbd_close(h);

	printf("ok options\n");
}

/* ---- block status ----------------------------------------------------- */

struct extents {
	int calls;
	size_t n;              /* entries (pairs) */
	uint64_t off;
	uint32_t len[64], flags[64];
};

static int extent_cb(void *opaque, const char *ctx, uint64_t off,
		     uint32_t *entries, size_t nr, int *error)
{
	struct extents *e = opaque;
	size_t i;

	if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION))
		return 0;
	e->calls++;
	e->off = off;
	for (i = 0; i + 1 < nr && e->n < 64; i += 2, e->n++) {
		e->len[e->n] = entries[i];
		e->flags[e->n] = entries[i + 1];
	}
	return 0;
}

/* Status flags of [off, off+len): must be one extent's worth, or -1 if the
 * range is described by extents with different flags. */
static int status_of(struct nbd_handle *h, uint64_t off, uint64_t len)
{
	struct extents e = { 0 };
	uint64_t covered = 0;
	size_t i;
	int flags = -2;

	OK(nbd_block_status(h, len, off,
			    (nbd_extent_callback){ .callback = extent_cb,
						   .user_data = &e }, 0));
	CHECK(e.calls == 1 && e.n >= 1, "block status calls=%d n=%zu", e.calls,
	      e.n);
	for (i = 0; i < e.n && covered < len; i++) {
		CHECK(e.len[i] > 0, "zero-length extent");
		if (flags == -2)
			flags = (int)e.flags[i];
		else if (flags != (int)e.flags[i])
			flags = -1;
		covered += e.len[i];
	}
	CHECK(covered >= len || i == e.n, "extents cover %" PRIu64 " of %" PRIu64,
	      covered, len);
	return flags;
}

static void test_block_status(struct nbd_handle *h, uint64_t base)
{
	struct extents e = { 0 };
	char *buf = malloc(1 * MiB);
	int st;

	CHECK(buf, "malloc");
	/* A never-written range is a hole that reads as zeros. */
	st = status_of(h, base + 4 * MiB, 1 * MiB);
	CHECK(st == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO),
	      "unwritten range status %d, expected hole|zero", st);

	/* Written data is data. */
	fill(buf, 1 * MiB, 7);
	OK(nbd_pwrite(h, buf, 1 * MiB, base + 4 * MiB, 0));
	st = status_of(h, base + 4 * MiB, 1 * MiB);
	CHECK(st == 0, "written range status %d, expected data (0)", st);

	/* Trim punches a hole. */
	OK(nbd_trim(h, 512 * 1024, base + 4 * MiB, 0));
	st = status_of(h, base + 4 * MiB, 512 * 1024);
	CHECK(st == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO),
	      "trimmed range status %d, expected hole|zero", st);

	/* Mixed range: hole then data, REQ_ONE gives exactly one extent. */
	OK(nbd_block_status(h, 1 * MiB, base + 4 * MiB,
			    (nbd_extent_callback){ .callback = extent_cb,
						   .user_data = &e },
			    LIBNBD_CMD_FLAG_REQ_ONE));
	CHECK(e.n == 1, "REQ_ONE returned %zu extents", e.n);
	CHECK(e.len[0] > 0 && e.len[0] <= 512 * 1024 &&
	      (e.flags[0] & LIBNBD_STATE_HOLE),
	      "REQ_ONE extent len %u flags %u", e.len[0], e.flags[0]);
	memset(&e, 0, sizeof e);
	OK(nbd_block_status(h, 1 * MiB, base + 4 * MiB,
			    (nbd_extent_callback){ .callback = extent_cb,
						   .user_data = &e }, 0));
	CHECK(e.n >= 2 && (e.flags[0] & LIBNBD_STATE_HOLE) && e.len[0] == 512 * 1024 &&
	      e.flags[1] == 0,
	      "hole+data range: n=%zu first %u/%u", e.n, e.len[0], e.flags[0]);

	/* WRITE_ZEROES without NO_HOLE may punch; reads are zeros either way. */
	OK(nbd_zero(h, 256 * 1024, base + 4 * MiB + 512 * 1024, 0));
	st = status_of(h, base + 4 * MiB + 512 * 1024, 256 * 1024);
	CHECK(st >= 0 && (st & LIBNBD_STATE_ZERO),
	      "zeroed range status %d, expected zero bit", st);
	/* NO_HOLE: zeros.  (It may still report HOLE: ext4 reports the
	 * unwritten extents of FALLOC_FL_ZERO_RANGE as holes to SEEK_HOLE.) */
	OK(nbd_zero(h, 256 * 1024, base + 4 * MiB + 768 * 1024,
		    LIBNBD_CMD_FLAG_NO_HOLE));
	st = status_of(h, base + 4 * MiB + 768 * 1024, 256 * 1024);
	CHECK(st >= 0 && (st & LIBNBD_STATE_ZERO) ? true : st == 0,
	      "NO_HOLE zeroed range status %d", st);
	OK(nbd_pread(h, buf, 1 * MiB, base + 4 * MiB, 0));
	CHECK(all_bytes(buf, 1 * MiB, 0), "trimmed/zeroed range not zero");

	/* Out of range. */
	FAILS_WITH(nbd_block_status(h, 4096, DISK_SIZE,
				    (nbd_extent_callback){ .callback = extent_cb,
							   .user_data = &e }, 0),
		   EINVAL);
	free(buf);
}

/* ---- commands ---------------------------------------------------------- */

struct chunks {
	int n;
	uint64_t bytes;
	unsigned status;
};

static int chunk_cb(void *opaque, const void *sub, size_t count, uint64_t off,
		    unsigned status, int *error)
{
	struct chunks *c = opaque;

	c->n++;
	c->bytes += count;
	c->status = status;
	return 0;
}

static void test_commands(bool sr)
{
	uint64_t base = sr ? 0 : 8 * MiB;
	struct nbd_handle *h = open_export(sock_rw, "disk", sr);
	size_t n = 256 * 1024;
	char *a = malloc(1 * MiB), *b = malloc(1 * MiB);
	struct chunks c = { 0 };
	int r, e;

	CHECK(a && b, "malloc");
	CHECK(nbd_get_size(h) == (int64_t)DISK_SIZE, "size");

	/* WRITE then READ, unaligned too. */
	fill(a, n, base + 1);
	OK(nbd_pwrite(h, a, n, base, 0));
	OK(nbd_pread(h, b, n, base, 0));
	CHECK(!memcmp(a, b, n), "read back differs");
	fill(a, 1000, base + 2);
	OK(nbd_pwrite(h, a, 1000, base + 4097, 0));
	OK(nbd_pread(h, b, 1000, base + 4097, 0));
	CHECK(!memcmp(a, b, 1000), "unaligned read back differs");

	/* FUA write, FLUSH, CACHE. */
	fill(a, n, base + 3);
	OK(nbd_pwrite(h, a, n, base + 1 * MiB, LIBNBD_CMD_FLAG_FUA));
	OK(nbd_flush(h, 0));
	OK(nbd_cache(h, n, base + 1 * MiB, 0));
	OK(nbd_pread(h, b, n, base + 1 * MiB, 0));
	CHECK(!memcmp(a, b, n), "FUA write read back differs");

	/* TRIM and WRITE_ZEROES read back as zeros; FUA on both. */
	OK(nbd_trim(h, 64 * 1024, base + 1 * MiB, 0));
	OK(nbd_zero(h, 64 * 1024, base + 1 * MiB + 64 * 1024, 0));
	OK(nbd_zero(h, 64 * 1024, base + 1 * MiB + 128 * 1024,
		    LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA));
	OK(nbd_trim(h, 4096, base + 1 * MiB + 192 * 1024, LIBNBD_CMD_FLAG_FUA));
	OK(nbd_pread(h, b, n, base + 1 * MiB, 0));
	CHECK(all_bytes(b, 192 * 1024 + 4096, 0), "trim/zero did not read zero");
	CHECK(!memcmp(a + 196 * 1024, b + 196 * 1024, n - 196 * 1024),
	      "trim/zero touched bytes beyond its range");

	/* FAST_ZERO: success (then zeros) or ENOTSUP, never slow success. */
	if (nbd_can_fast_zero(h) == 1) {
		OK(nbd_pwrite(h, a, 64 * 1024, base + 2 * MiB, 0));
		r = nbd_zero(h, 64 * 1024, base + 2 * MiB, LIBNBD_CMD_FLAG_FAST_ZERO);
		e = nbd_get_errno();
		CHECK(r == 0 || e == ENOTSUP, "FAST_ZERO failed with %s",
		      strerror(e));
		if (r == 0) {
			OK(nbd_pread(h, b, 64 * 1024, base + 2 * MiB, 0));
			CHECK(all_bytes(b, 64 * 1024, 0), "FAST_ZERO not zero");
		}
	} else {
		CHECK(standin, "FAST_ZERO not advertised");
	}

	if (sr) {
		CHECK(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1,
		      "base:allocation not negotiated with structured replies");
		/* DF: one chunk for the whole read. */
		OK(nbd_pwrite(h, a, 64 * 1024, base + 3 * MiB, 0));
		OK(nbd_pread_structured(h, b, 128 * 1024, base + 3 * MiB,
					(nbd_chunk_callback){ .callback = chunk_cb,
							      .user_data = &c },
					LIBNBD_CMD_FLAG_DF));
		CHECK(c.n == 1 && c.bytes == 128 * 1024,
		      "DF read came in %d chunks, %" PRIu64 " bytes", c.n, c.bytes);
		CHECK(!memcmp(a, b, 64 * 1024) && all_bytes(b + 64 * 1024, 64 * 1024, 0),
		      "DF read content");
		/* A read over a hole: chunks must cover it exactly. */
		memset(&c, 0, sizeof c);
		OK(nbd_pread_structured(h, b, 1 * MiB, base + 5 * MiB,
					(nbd_chunk_callback){ .callback = chunk_cb,
							      .user_data = &c }, 0));
		CHECK(c.n >= 1 && c.bytes == 1 * MiB, "hole read chunks cover %" PRIu64,
		      c.bytes);
		test_block_status(h, base);
	} else {
		CHECK(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1,
		      "base:allocation without structured replies");
		CHECK(nbd_can_df(h) != 1, "DF advertised without structured replies");
	}

	/* Bad requests that libnbd only sends outside strict mode. */
	OK(nbd_set_strict_mode(h, 0));
	FAILS_WITH(nbd_pread(h, b, 4096, DISK_SIZE, 0), EINVAL);
	FAILS_WITH(nbd_pread(h, b, 8192, DISK_SIZE - 4096, 0), EINVAL);
	FAILS_WITH(nbd_pwrite(h, a, 4096, DISK_SIZE, 0), ENOSPC);
	FAILS_WITH(nbd_pwrite(h, a, 8192, DISK_SIZE - 4096, 0), ENOSPC);
	FAILS_WITH(nbd_trim(h, 8192, DISK_SIZE - 4096, 0), EINVAL);
	FAILS_WITH(nbd_zero(h, 8192, DISK_SIZE - 4096, 0), ENOSPC);
	FAILS_WITH(nbd_cache(h, 8192, DISK_SIZE - 4096, 0), EINVAL);
	FAILS_WITH(nbd_pread(h, b, 4096, 0, 0x40), EINVAL);
	FAILS_WITH(nbd_pwrite(h, a, 4096, base, 0x80), EINVAL);
	FAILS_WITH(nbd_flush(h, 0x40), EINVAL);
	if (!sr)    /* DF needs structured replies: spec says EINVAL */
		FAILS_WITH(nbd_pread(h, b, 4096, 0, LIBNBD_CMD_FLAG_DF), EINVAL);
	/* The connection is still good after all that. */
	OK(nbd_pread(h, b, 4096, base, 0));
	OK(nbd_shutdown(h, 0));
	nbd_close(h);
	free(a);
	free(b);
	printf("ok commands (structured replies %s)\n", sr ? "on" : "off");
}

/* ---- large reads of a sparse range ------------------------------------ */

struct holes {
	uint64_t hole, data;
};

static int hole_cb(void *opaque, const void *sub, size_t count, uint64_t off,
		   unsigned status, int *error)
{
	struct holes *c = opaque;

	if (status == LIBNBD_READ_HOLE)
		c->hole += count;
	else if (status == LIBNBD_READ_DATA)
		c->data += count;
	return 0;
}

/* A 1 MiB structured READ of 512 KiB data + a punched 512 KiB: the hole
 * comes back as a HOLE chunk, also on the second read, when every page is
 * cached (the large-read paths that send without zero detection, over
 * TCP and unix sockets, must leave such a range to the normal read). */
static void test_sparse_large(void)
{
	const char *where[2] = { sock_rw, tcp_rw };
	char *a = malloc(1 * MiB), *b = malloc(1 * MiB);

	CHECK(a && b, "malloc");
	for (unsigned w = 0; w < 2 && where[w]; w++) {
		struct nbd_handle *h = open_export(where[w], "disk", true);
		uint64_t off = 32 * MiB + w * 4 * MiB;

		fill(a, 1 * MiB, off);
		OK(nbd_pwrite(h, a, 1 * MiB, off, 0));
		OK(nbd_trim(h, 512 * 1024, off + 512 * 1024, 0));
		if (status_of(h, off + 512 * 1024, 512 * 1024) !=
		    (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) {
			printf("skip sparse large reads on %s: trim punched no hole\n",
			       where[w]);
			nbd_close(h);
			continue;
		}
		for (int round = 0; round < 2; round++) {
			struct holes c = { 0 };

			memset(b, 0xa5, 1 * MiB);
			OK(nbd_pread_structured(h, b, 1 * MiB, off,
						(nbd_chunk_callback){ .callback = hole_cb,
								      .user_data = &c }, 0));
			CHECK(!memcmp(a, b, 512 * 1024) && all_bytes(b + 512 * 1024, 512 * 1024, 0),
			      "sparse large read content on %s, round %d", where[w], round);
			CHECK(c.hole == 512 * 1024 && c.data == 512 * 1024,
			      "sparse large read on %s, round %d: %" PRIu64 " hole bytes, %"
			      PRIu64 " data bytes (want 512 KiB each)", where[w], round,
			      c.hole, c.data);
		}
		OK(nbd_shutdown(h, 0));
		nbd_close(h);
	}
	free(a);
	free(b);
	printf("ok sparse large reads\n");
}

/* ---- read-only export ------------------------------------------------- */

static void test_read_only(void)
{
	struct nbd_handle *h = open_export(sock_ro, "ro", true);
	char buf[4096];

	CHECK(nbd_get_size(h) == (int64_t)RO_SIZE, "ro size");
	CHECK(nbd_is_read_only(h) == 1, "ro export not read-only");
	OK(nbd_pread(h, buf, sizeof buf, RO_SIZE - sizeof buf, 0));
	CHECK(all_bytes(buf, sizeof buf, 0xa5), "ro export content");
	OK(nbd_set_strict_mode(h, 0));   /* let the server refuse */
	FAILS_WITH(nbd_pwrite(h, buf, sizeof buf, 0, 0), EPERM);
	FAILS_WITH(nbd_trim(h, 4096, 0, 0), EPERM);
	FAILS_WITH(nbd_zero(h, 4096, 0, 0), EPERM);
	OK(nbd_pread(h, buf, sizeof buf, 0, 0));
	CHECK(all_bytes(buf, sizeof buf, 0xa5), "ro export changed");
	OK(nbd_shutdown(h, 0));
	nbd_close(h);
	printf("ok read-only\n");
}

/* ---- multi-conn ------------------------------------------------------- */

static void test_multi_conn(void)
{
	struct nbd_handle *a = open_export(sock_rw, "disk", true);
	struct nbd_handle *b = open_export(sock_rw, "disk", false);
	struct nbd_handle *c = open_export(sock_rw, "disk", true);
	size_t n = 1 * MiB;
	char *w = malloc(n), *r = malloc(n);
	int i;

	CHECK(w && r, "malloc");
	CHECK(nbd_can_multi_conn(a) == 1, "CAN_MULTI_CONN not advertised");
	for (i = 0; i < 4; i++) {
		fill(w, n, 1000 + i);
		OK(nbd_pwrite(a, w, n, 16 * MiB + i * n, 0));
		OK(nbd_flush(b, 0));
		OK(nbd_pread(c, r, n, 16 * MiB + i * n, 0));
		CHECK(!memcmp(w, r, n), "write on A, flush on B not visible on C");
	}
	nbd_shutdown(a, 0);
	nbd_shutdown(b, 0);
	nbd_shutdown(c, 0);
	nbd_close(a);
	nbd_close(b);
	nbd_close(c);
	free(w);
	free(r);
	printf("ok multi-conn\n");
}

/* ---- concurrent random I/O against a model ---------------------------- */

#define ST_CONNS 8
#define ST_DEPTH 64
#define ST_OPS 3000
#define ST_BASE (24 * MiB)
#define ST_SIZE (40 * MiB)
#define ST_BLK 4096u
#define ST_NBLK (ST_SIZE / ST_BLK)

static uint8_t *model;
static uint8_t *busy;
static uint64_t rng;
static long st_done, st_reads, st_writes, st_zeros;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct op {
	int *inflight;
	int kind;           /* 0 read, 1 write, 2 zero */
	uint64_t blk, nblk;
	uint8_t *buf;
};

static int op_done(void *opaque, int *error)
{
	struct op *op = opaque;
	uint64_t off = op->blk * ST_BLK, len = op->nblk * ST_BLK;
	uint64_t i;

	CHECK(*error == 0, "stress op kind %d at %" PRIu64 "+%" PRIu64 ": %s",
	      op->kind, off, len, strerror(*error));
	if (op->kind == 0 && memcmp(op->buf, model + off, len)) {
		for (i = 0; i < len && op->buf[i] == model[off + i]; i++)
			;
		CHECK(0, "stress read at %" PRIu64 "+%" PRIu64
		      " differs from model at byte %" PRIu64,
		      ST_BASE + off, len, ST_BASE + off + i);
	}
	for (i = 0; i < op->nblk; i++)
		busy[op->blk + i] = 0;
	(*op->inflight)--;
	st_done++;
	free(op->buf);
	free(op);
	return 1;
}

static bool submit_one(struct nbd_handle *h, int *inflight)
{
	struct op *op;
	uint64_t blk = 0, nblk = 0, i;
	int tries;
	int64_t r;
	bool ok = false;

	for (tries = 0; tries < 16 && !ok; tries++) {
		nblk = 1 + rnd() % 32;
		blk = rnd() % (ST_NBLK - nblk + 1);
		ok = true;
		for (i = 0; i < nblk && ok; i++)
			ok = !busy[blk + i];
	}
	if (!ok)
		return false;
	op = calloc(1, sizeof *op);
	CHECK(op, "calloc");
	op->inflight = inflight;
	op->blk = blk;
	op->nblk = nblk;
	op->kind = rnd() % 16 == 0 ? 2 : (int)(rnd() % 2);
	op->buf = malloc(nblk * ST_BLK);
	CHECK(op->buf, "malloc");
	for (i = 0; i < nblk; i++)
		busy[blk + i] = 1;
	if (op->kind == 1) {
		fill(op->buf, nblk * ST_BLK, rnd());
		memcpy(model + blk * ST_BLK, op->buf, nblk * ST_BLK);
	} else if (op->kind == 2) {
		memset(model + blk * ST_BLK, 0, nblk * ST_BLK);
	}
	nbd_completion_callback cb = { .callback = op_done, .user_data = op };
	if (op->kind == 0) {
		r = nbd_aio_pread(h, op->buf, nblk * ST_BLK, ST_BASE + blk * ST_BLK,
				  cb, 0);
		st_reads++;
	} else if (op->kind == 1) {
		r = nbd_aio_pwrite(h, op->buf, nblk * ST_BLK, ST_BASE + blk * ST_BLK,
				   cb, rnd() % 8 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
		st_writes++;
	} else {
		r = nbd_aio_zero(h, nblk * ST_BLK, ST_BASE + blk * ST_BLK, cb, 0);
		st_zeros++;
	}
	CHECK(r != -1, "aio submit");
	(*inflight)++;
	return true;
}

static void test_stress(uint64_t seed)
{
	struct nbd_handle *h[ST_CONNS];
	int inflight[ST_CONNS] = { 0 }, left[ST_CONNS];
	struct pollfd pfd[ST_CONNS];
	uint8_t *buf;
	int i, active;
	uint64_t off;

	rng = seed ? seed : 1;
	model = calloc(1, ST_SIZE);
	busy = calloc(1, ST_NBLK);
	buf = malloc(4 * MiB);
	CHECK(model && busy && buf, "calloc");
	for (i = 0; i < ST_CONNS; i++) {
		h[i] = open_export(tcp_rw && i % 4 >= 2 ? tcp_rw : sock_rw, "disk",
				   i % 2 == 0);
		left[i] = ST_OPS;
	}
	/* Start from a known state: the region is zero. */
	OK(nbd_zero(h[0], ST_SIZE, ST_BASE, 0));

	for (;;) {
		active = 0;
		for (i = 0; i < ST_CONNS; i++) {
			while (left[i] > 0 && inflight[i] < ST_DEPTH &&
			       submit_one(h[i], &inflight[i]))
				left[i]--;
			if (left[i] > 0 || inflight[i] > 0)
				active++;
		}
		if (!active)
			break;
		for (i = 0; i < ST_CONNS; i++) {
			unsigned dir = nbd_aio_get_direction(h[i]);

			pfd[i].fd = nbd_aio_get_fd(h[i]);
			pfd[i].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
					((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
			pfd[i].revents = 0;
		}
		CHECK(poll(pfd, ST_CONNS, 60000) > 0, "poll timed out/failed: %s",
		      strerror(errno));
		for (i = 0; i < ST_CONNS; i++) {
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				OK(nbd_aio_notify_read(h[i]));
			else if (pfd[i].revents & POLLOUT)
				OK(nbd_aio_notify_write(h[i]));
		}
	}
	/* Everything acknowledged: flush on one connection, verify on another. */
	OK(nbd_flush(h[1], 0));
	for (off = 0; off < ST_SIZE; off += 4 * MiB) {
		OK(nbd_pread(h[ST_CONNS - 1], buf, 4 * MiB, ST_BASE + off, 0));
		CHECK(!memcmp(buf, model + off, 4 * MiB),
		      "final content differs from model in [%" PRIu64 ", +4M)",
		      ST_BASE + off);
	}
	for (i = 0; i < ST_CONNS; i++) {
		nbd_shutdown(h[i], 0);
		nbd_close(h[i]);
	}
	free(model);
	free(busy);
	free(buf);
	printf("ok stress: %d conns x %d in flight, %ld ops (%ld reads, %ld writes,"
	       " %ld zeroes)\n", ST_CONNS, ST_DEPTH, st_done, st_reads, st_writes,
	       st_zeros);
}

/* ---- large requests in parallel ------------------------------------------ */

static int large_done(void *opaque, int *error)
{
	CHECK(*error == 0, "large request failed: %s", strerror(*error));
	(*(int *)opaque)--;
	return 1;
}

static void run_all(struct nbd_handle **h, int n, int *left)
{
	while (*left > 0) {
		int i;

		for (i = 0; i < n; i++)
			if (nbd_aio_in_flight(h[i]) > 0)
				OK(nbd_poll(h[i], 10));
	}
}

/* 16 MiB writes and reads, several at once on unix and TCP connections:
 * replies far larger than any socket buffer (short sends and receives). */
static void test_large(void)
{
	struct nbd_handle *h[4];
	uint8_t *w[4], *r[4];
	size_t n = 16 * MiB;
	int i, left;

	for (i = 0; i < 4; i++) {
		h[i] = open_export(tcp_rw && i % 2 ? tcp_rw : sock_rw, "disk", i < 2);
		w[i] = malloc(n);
		r[i] = malloc(n);
		CHECK(w[i] && r[i], "malloc");
		fill(w[i], n, 5000 + i);
	}
	/* Two rounds over [24M, 56M): each connection writes its half twice
	 * (the second write wins), then every connection reads the other's. */
	left = 4;
	for (i = 0; i < 4; i++)
		CHECK(nbd_aio_pwrite(h[i], w[i], n, 24 * MiB + (i % 2) * n,
				     (nbd_completion_callback){ .callback = large_done,
								.user_data = &left },
				     i >= 2 ? LIBNBD_CMD_FLAG_FUA : 0) != -1, "aio_pwrite");
	run_all(h, 4, &left);
	/* Both halves were written twice (i and i+2) with no order between
	 * them: write once more from one connection to have a known state. */
	left = 2;
	for (i = 0; i < 2; i++)
		CHECK(nbd_aio_pwrite(h[i], w[i], n, 24 * MiB + i * n,
				     (nbd_completion_callback){ .callback = large_done,
								.user_data = &left }, 0) != -1,
		      "aio_pwrite");
	run_all(h, 4, &left);
	left = 4;
	for (i = 0; i < 4; i++)
		CHECK(nbd_aio_pread(h[i], r[i], n, 24 * MiB + ((i + 1) % 2) * n,
				    (nbd_completion_callback){ .callback = large_done,
							       .user_data = &left }, 0) != -1,
		      "aio_pread");
	run_all(h, 4, &left);
	for (i = 0; i < 4; i++)
		CHECK(!memcmp(r[i], w[(i + 1) % 2], n),
		      "16 MiB read on connection %d differs", i);
	for (i = 0; i < 4; i++) {
		nbd_shutdown(h[i], 0);
		nbd_close(h[i]);
		free(w[i]);
		free(r[i]);
	}
	printf("ok large requests (4 connections x 16 MiB)\n");
}

/* ---- large reads mixed with small ones ---------------------------------- */

/* Many reads of 256 KiB - 3 MiB (the server splices those that fit its
 * pipes straight from the file), aligned or not, some with DF, interleaved
 * with small reads and writes on the same sockets: every reply must carry
 * its own bytes, in whatever order they complete.  Then connections closed
 * with 1 MiB replies in flight, and a file that shrank under its export. */

#define MX_BASE (24 * MiB)
#define MX_RO   (32 * MiB)      /* [MX_BASE, +MX_RO) is only read */
#define MX_CONN 4
#define MX_WSLICE (2 * MiB)     /* each connection writes its own slice */

static uint8_t *mx_model;

struct mx_op {
	int *inflight;
	bool *writing;          /* the connection's: one write at a time */
	bool write, df;
	uint64_t off, len;
	uint64_t seen;          /* bytes covered by chunks */
	int chunks;
	uint8_t *buf;
};

static int mx_chunk(void *opaque, const void *sub, size_t count, uint64_t off,
		    unsigned status, int *error)
{
	struct mx_op *op = opaque;

	CHECK(*error == 0, "chunk error %s", strerror(*error));
	CHECK(off >= op->off && off + count <= op->off + op->len,
	      "chunk %" PRIu64 "+%zu outside the read %" PRIu64 "+%" PRIu64,
	      off, count, op->off, op->len);
	if (status == LIBNBD_READ_DATA)
		CHECK(!memcmp(sub, mx_model + off - MX_BASE, count),
		      "data chunk %" PRIu64 "+%zu of read %" PRIu64 "+%" PRIu64
		      " differs", off, count, op->off, op->len);
	else
		CHECK(all_bytes(mx_model + off - MX_BASE, count, 0),
		      "hole chunk %" PRIu64 "+%zu over data", off, count);
	op->seen += count;
	op->chunks++;
	return 0;
}

static int mx_done(void *opaque, int *error)
{
	struct mx_op *op = opaque;

	CHECK(*error == 0, "%s at %" PRIu64 "+%" PRIu64 ": %s",
	      op->write ? "write" : "read", op->off, op->len, strerror(*error));
	if (!op->write) {
		CHECK(!memcmp(op->buf, mx_model + op->off - MX_BASE, op->len),
		      "read at %" PRIu64 "+%" PRIu64 " differs", op->off, op->len);
		CHECK(op->chunks == 0 || op->seen == op->len,
		      "chunks cover %" PRIu64 " of %" PRIu64, op->seen, op->len);
		CHECK(!op->df || op->chunks == 1, "DF read in %d chunks", op->chunks);
	}
	if (op->write)
		*op->writing = false;
	(*op->inflight)--;
	free(op->buf);
	free(op);
	return 1;
}

static uint64_t mx_len(void)
{
	switch (rnd() % 8) {
	case 0: case 1: case 2:
		return 4096 * (1 + rnd() % 32);                 /* small */
	case 3:
		return 1 * MiB;
	case 4:
		return 256 * 1024 + rnd() % (768 * 1024);       /* odd size */
	case 5:
		return 1 * MiB + 4096 * (1 + rnd() % 512);      /* over 1 MiB */
	default:
		return 4096 * (64 + rnd() % 193);               /* 256K - 1M */
	}
}

static void mx_submit(struct nbd_handle *h, int conn, bool sr, int *inflight,
		      bool *writing)
{
	struct mx_op *op = calloc(1, sizeof(*op));
	int64_t r;

	CHECK(op, "calloc");
	op->inflight = inflight;
	op->write = !*writing && rnd() % 6 == 0;
	if (op->write) {
		/* One write per connection at a time, in its own slice: the
		 * model is exact. */
		op->len = rnd() % 2 ? 4096 * (1 + rnd() % 16) : 1 * MiB;
		op->off = MX_BASE + MX_RO + conn * MX_WSLICE +
			  4096 * (rnd() % ((MX_WSLICE - op->len) / 4096 + 1));
		op->buf = malloc(op->len);
		CHECK(op->buf, "malloc");
		fill(op->buf, op->len, rnd());
		memcpy(mx_model + op->off - MX_BASE, op->buf, op->len);
		*writing = true;
		op->writing = writing;
		r = nbd_aio_pwrite(h, op->buf, op->len, op->off,
				   (nbd_completion_callback){ .callback = mx_done,
							      .user_data = op }, 0);
		CHECK(r != -1, "aio_pwrite");
		(*inflight)++;
		return;
	}
	op->len = mx_len();
	/* Half the reads start off any page boundary (byte granular). */
	op->off = MX_BASE + (rnd() % 2 ? rnd() % (MX_RO - op->len)
				       : 4096 * (rnd() % ((MX_RO - op->len) / 4096)));
	op->buf = malloc(op->len);
	CHECK(op->buf, "malloc");
	op->df = sr && rnd() % 4 == 0;
	if (sr)
		r = nbd_aio_pread_structured(
			h, op->buf, op->len, op->off,
			(nbd_chunk_callback){ .callback = mx_chunk, .user_data = op },
			(nbd_completion_callback){ .callback = mx_done, .user_data = op },
			op->df ? LIBNBD_CMD_FLAG_DF : 0);
	else
		r = nbd_aio_pread(h, op->buf, op->len, op->off,
				  (nbd_completion_callback){ .callback = mx_done,
							     .user_data = op }, 0);
	CHECK(r != -1, "aio_pread");
	(*inflight)++;
}

static void test_mixed(uint64_t seed)
{
	struct nbd_handle *h[MX_CONN];
	int inflight[MX_CONN] = { 0 };
	bool writing[MX_CONN] = { false }, sr[MX_CONN];
	uint64_t total = MX_RO + MX_CONN * MX_WSLICE, off;  /* 4 MiB multiple */
	int i, submitted = 0, per_conn = 300;
	uint8_t *b;

	rng = seed ^ 0x6d69786564ull;
	if (!rng)
		rng = 1;
	mx_model = malloc(total);
	CHECK(mx_model, "malloc");
	fill(mx_model, total, seed);
	/* Some zero blocks, so that a copied read may reply with holes. */
	for (off = 0; off < MX_RO; off += 1 * MiB)
		memset(mx_model + off + 64 * 1024, 0, 64 * 1024);
	h[0] = open_export(sock_rw, "disk", true);
	for (off = 0; off < total; off += 4 * MiB)
		OK(nbd_pwrite(h[0], mx_model + off, 4 * MiB,
			      MX_BASE + off, 0));
	nbd_shutdown(h[0], 0);
	nbd_close(h[0]);

	for (i = 0; i < MX_CONN; i++) {
		sr[i] = i % 2 == 0;
		h[i] = open_export(tcp_rw && i >= 2 ? tcp_rw : sock_rw, "disk", sr[i]);
	}
	while (submitted < MX_CONN * per_conn) {
		for (i = 0; i < MX_CONN; i++) {
			while (inflight[i] < 24 && submitted < MX_CONN * per_conn) {
				mx_submit(h[i], i, sr[i], &inflight[i], &writing[i]);
				submitted++;
			}
			if (nbd_aio_in_flight(h[i]) > 0)
				OK(nbd_poll(h[i], 0));
		}
	}
	for (i = 0; i < MX_CONN; i++)
		while (inflight[i] > 0)
			OK(nbd_poll(h[i], -1));
	/* The written slices, read back whole. */
	b = malloc(MX_CONN * MX_WSLICE);
	CHECK(b, "malloc");
	OK(nbd_pread(h[1], b, MX_CONN * MX_WSLICE, MX_BASE + MX_RO, 0));
	CHECK(!memcmp(b, mx_model + MX_RO, MX_CONN * MX_WSLICE),
	      "written slices differ");
	free(b);
	for (i = 0; i < MX_CONN; i++) {
		nbd_shutdown(h[i], 0);
		nbd_close(h[i]);
	}
	printf("ok mixed large and small reads (%d requests, %d connections)\n",
	       submitted, MX_CONN);
}

/* Clients that go away with 1 MiB replies in flight: the server carries on
 * (and, checked by libnbd.sh, keeps no descriptor of theirs). */
static void test_abandon(void)
{
	int round, i;

	for (round = 0; round < 8; round++) {
		const char *where = tcp_rw && round % 2 ? tcp_rw : sock_rw;
		struct nbd_handle *h = open_export(where, "disk", round % 4 < 2);
		uint8_t *buf = malloc(32 * MiB);

		CHECK(buf, "malloc");
		for (i = 0; i < 32; i++)
			CHECK(nbd_aio_pread(h, buf + i * MiB, 1 * MiB,
					    MX_BASE + i * MiB + round * 512,
					    NBD_NULL_COMPLETION, 0) != -1,
			      "aio_pread");
		/* Let some requests go out and some replies start. */
		for (i = 0; i < round; i++)
			OK(nbd_poll(h, 1));
		nbd_close(h);
		free(buf);
	}
	/* Still serving, large reads included. */
	{
		struct nbd_handle *h = open_export(tcp_rw ? tcp_rw : sock_rw,
						   "disk", true);
		uint8_t *b = malloc(1 * MiB);

		CHECK(b, "malloc");
		OK(nbd_pread(h, b, 1 * MiB, MX_BASE + 3 * MiB, 0));
		CHECK(!memcmp(b, mx_model + 3 * MiB, 1 * MiB),
		      "read after abandoned connections differs");
		free(b);
		nbd_shutdown(h, 0);
		nbd_close(h);
	}
	printf("ok connections closed with large replies in flight\n");
}

/* The file of export "other" (1 MiB) shrinks to 512 KiB under the server:
 * a 1 MiB read now fails with EIO (over a unix socket a splice comes up
 * short and the server must fall back to a plain read, which reports the
 * error; over TCP the pages past the end are no longer cached, so it must
 * not send from its map) and the connection stays usable; grown back, the
 * read succeeds again (zeroes past 512K). */
static void test_shrunk(const char *path)
{
	struct nbd_handle *h;
	uint8_t *b = malloc(1 * MiB);
	int i;

	CHECK(b, "malloc");
	for (i = 0; i < 4; i++) {
		h = open_export(tcp_rw && i % 2 ? tcp_rw : sock_rw, "other", i < 2);
		/* Cached first: over TCP the server would send from its map. */
		OK(nbd_pread(h, b, 1 * MiB, 0, 0));
		CHECK(truncate(path, 512 * 1024) == 0, "truncate: %s", strerror(errno));
		FAILS_WITH(nbd_pread(h, b, 1 * MiB, 0, 0), EIO);
		CHECK(truncate(path, 1 * MiB) == 0, "truncate: %s", strerror(errno));
		OK(nbd_pread(h, b, 1 * MiB, 0, 0));
		CHECK(all_bytes(b + 512 * 1024, 512 * 1024, 0), "grown part not zero");
		OK(nbd_pread(h, b, 4096, 0, 0));
		nbd_shutdown(h, 0);
		nbd_close(h);
	}
	free(b);
	printf("ok read of a shrunk file fails with EIO\n");
}

int main(int argc, char **argv)
{
	uint64_t seed;
	const char *only;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SOCK_RW SOCK_RO [SEED [tcp:HOST:PORT]]\n",
			argv[0]);
		return 2;
	}
	sock_rw = argv[1];
	sock_ro = argv[2];
	tcp_rw = argc > 4 ? argv[4] : NULL;
	seed = argc > 3 && *argv[3] ? strtoull(argv[3], NULL, 0)
			: (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	standin = getenv("NBDSRV_STANDIN") && !strcmp(getenv("NBDSRV_STANDIN"), "1");
	only = getenv("NBD_TEST_ONLY");
	printf("seed=%" PRIu64 " (rerun: %s %s %s %" PRIu64 " %s)\n", seed,
	       argv[0], sock_rw, sock_ro, seed, tcp_rw ? tcp_rw : "");
	fflush(stdout);

	if (!only || strstr(only, "options"))
		test_options();
	if (!only || strstr(only, "commands")) {
		test_commands(true);
		test_commands(false);
		if (!standin)
			test_sparse_large();
	}
	if (!only || strstr(only, "ro"))
		test_read_only();
	if (!only || strstr(only, "multi"))
		test_multi_conn();
	if (!only || strstr(only, "stress"))
		test_stress(seed);
	if (!only || strstr(only, "large"))
		test_large();
	if (!only || strstr(only, "mixed")) {
		test_mixed(seed);
		test_abandon();
	}
	if ((!only || strstr(only, "shrunk")) && getenv("NBD_TEST_OTHER_FILE") &&
	    !standin)
		test_shrunk(getenv("NBD_TEST_OTHER_FILE"));
	if (soft_failures) {
		printf("%d wrong error codes (see FAIL lines)\n", soft_failures);
		return 1;
	}
	printf("all passed\n");
	return 0;
}
