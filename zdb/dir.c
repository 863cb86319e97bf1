/*
 * dir.c — the local-folder backend: one folder per backend, one file per
 * shard.  The embedded default when no server is configured, and a
 * dependency-free backend for tests.
 *
 * A key becomes a file name: hex of the key when short (≤ 100 bytes),
 * otherwise "h" + hex(SHA-256(key)).  A put is atomic and durable: write a
 * temporary file, fsync it, rename it over the final name, fsync the folder
 * — so a crash leaves either the old state or the complete new shard, never a
 * torn one.  The file system calls run on a worker queue (struct workq, from
 * common/), one job per request, so the loop thread never blocks on the
 * disk; the job's done() completes the request on the loop.  No deadlines:
 * a local disk does not vanish the way a network peer does.
 *
 * The canary file is checked and written by a job at start(); the backend
 * turns READY when that job is done.  The same job removes temporary files
 * left by a put that a crash cut short: they are named ".tmp.PID.SEQ.key",
 * and a file whose PID no longer runs is garbage (a live process, e.g. a
 * `pool check` beside the daemon, keeps its own).
 */
#include "zdb/zdb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct dir_be {
	struct zdb_backend b;           /* first */
	struct workq *wq;
	int dirfd;
	unsigned jobs;                  /* in flight (loop thread counter) */
	bool stopping, stopped_sent;
	struct loop_op stop_op;
	bool canary_job;
};

struct dir_job {
	struct workq_job job;
	struct dir_be *d;
	struct zdb_req *req;            /* NULL: the canary check */
	int res;
};

static atomic_uint dir_tmp_seq;

static void dir_name(const void *key, size_t len, char *out)
{
	static const char hx[] = "0123456789abcdef";
	const unsigned char *k = key;
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t i, o = 0;

	if (len > 100) {
		SHA256(k, len, md);
		out[o++] = 'h';
		k = md;
		len = sizeof(md);
	} else {
		out[o++] = 'k';
	}
	for (i = 0; i < len; i++) {
		out[o++] = hx[k[i] >> 4];
		out[o++] = hx[k[i] & 15];
	}
	out[o] = 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int dir_put(int dirfd, const char *name, const void *val, size_t len)
{
	char tmp[256];
	int fd, r;

	snprintf(tmp, sizeof(tmp), ".tmp.%ld.%u.%.200s", (long)getpid(),
		 atomic_fetch_add(&dir_tmp_seq, 1), name);
	fd = openat(dirfd, tmp, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = write_all(fd, val, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	if (fsync(dirfd) < 0)
		return -errno;
	return 0;
}

static int dir_get(int dirfd, const char *name, void *buf, size_t cap)
{
	struct stat st;
	size_t got = 0;
	int fd, r = 0;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto exit;
	}
	if ((uint64_t)st.st_size > cap || (uint64_t)st.st_size > ZDB_VALUE_MAX) {
		r = -EMSGSIZE;
		goto exit;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, (char *)buf + got, (size_t)st.st_size - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto exit;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	r = (int)got;
exit:
	close(fd);
	return r;
}

/* Remove ".tmp.PID.…" files of processes that are gone (a cut put). */
static void dir_sweep_tmp(int dirfd)
{
	struct dirent *de;
	DIR *dp;
	int fd;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(dp = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(dp))) {
		char *end;
		long pid;

		if (strncmp(de->d_name, ".tmp.", 5))
			continue;
		pid = strtol(de->d_name + 5, &end, 10);
		if (end == de->d_name + 5 || *end != '.' || pid <= 0 ||
		    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		unlinkat(dirfd, de->d_name, 0);
	}
	closedir(dp);
}

static void dir_work(struct workq_job *job)
{
	struct dir_job *j = container_of(job, struct dir_job, job);
	struct zdb_req *r = j->req;
	char name[2 * SHA256_DIGEST_LENGTH + 210];
	struct stat st;

	if (!r) {           /* canary */
		dir_sweep_tmp(j->d->dirfd);
		dir_name(ZDB_CANARY_KEY, strlen(ZDB_CANARY_KEY), name);
		if (fstatat(j->d->dirfd, name, &st, 0) == 0) {
			j->res = 1;
			return;
		}
		j->res = dir_put(j->d->dirfd, name, "nbdsrv pool canary v1", 21);
		return;
	}
	if (r->op != ZDB_OP_PING && r->op != ZDB_OP_INFO)
		dir_name(r->key, r->key_len, name);
	switch (r->op) {
	case ZDB_OP_PUT:
		j->res = dir_put(j->d->dirfd, name, r->val, r->val_len);
		break;
	case ZDB_OP_GET:
		j->res = dir_get(j->d->dirfd, name, r->buf, r->buf_len);
		break;
	case ZDB_OP_DEL:
		j->res = unlinkat(j->d->dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
		break;
	case ZDB_OP_EXISTS:
		j->res = fstatat(j->d->dirfd, name, &st, 0) == 0 ? 1
			 : errno == ENOENT ? 0 : -errno;
		break;
	case ZDB_OP_PING:
		j->res = fstat(j->d->dirfd, &st) < 0 ? -errno : 0;
		break;
	case ZDB_OP_INFO: {
		struct zdb_info *in = r->buf;
		struct statvfs vf;

		if (fstatvfs(j->d->dirfd, &vf) < 0) {
			j->res = -errno;
			break;
		}
		if (in && r->buf_len >= sizeof(*in)) {
			in->used_bytes = (uint64_t)(vf.f_blocks - vf.f_bfree) * vf.f_frsize;
			in->limit_bytes = (uint64_t)vf.f_blocks * vf.f_frsize;
			in->free_bytes = (uint64_t)vf.f_bavail * vf.f_frsize;
			in->entries = UINT64_MAX;
		}
		j->res = 0;
		break;
	}
	default:
		j->res = -EINVAL;
	}
}

static void dir_maybe_stopped(struct dir_be *d);

static void dir_job_done(struct workq_job *job)
{
	struct dir_job *j = container_of(job, struct dir_job, job);
	struct dir_be *d = j->d;
	struct zdb_req *r = j->req;

	d->jobs--;
	if (!r) {
		if (j->res < 0) {
			snprintf(d->b.last_error, sizeof(d->b.last_error),
				 "cannot write the canary: %s", strerror(-j->res));
			d->b.state = ZDB_CONN_FATAL;
		} else {
			d->b.canary_missing = j->res == 0;
			if (!d->stopping)
				d->b.state = ZDB_CONN_READY;
			d->b.connects++;
			if (d->b.on_event && !d->stopping)
				d->b.on_event(&d->b, ZDB_EV_UP);
		}
	} else {
		d->b.inflight--;
		r->result = j->res;
		/* its disk is full or read-only, or the folder denies us */
		r->refused = j->res == -ENOSPC || j->res == -EROFS || j->res == -EACCES;
		r->done(r);
	}
	free(j);
	dir_maybe_stopped(d);
}

static int dir_queue(struct dir_be *d, struct zdb_req *r)
{
	struct dir_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->d = d;
	j->req = r;
	j->job.work = dir_work;
	j->job.done = dir_job_done;
	j->job.loop = d->b.loop;
	d->jobs++;
	if (r)
		d->b.inflight++;
	workq_submit(d->wq, &j->job);
	return 0;
}

static int dir_start(struct zdb_backend *b)
{
	struct dir_be *d = (struct dir_be *)b;

	if (d->dirfd < 0)
		return -ENOENT;
	d->b.state = ZDB_CONN_CONNECTING;
	return dir_queue(d, NULL);
}

static void dir_submit(struct zdb_backend *b, struct zdb_req *r)
{
	struct dir_be *d = (struct dir_be *)b;
	int e;

	r->be = b;
	r->refused = false;
	r->msg[0] = 0;
	r->start_ns = now_ns();
	if (d->stopping || d->dirfd < 0 || b->state == ZDB_CONN_FATAL) {
		zdb_req_complete_later(b->loop, r, d->stopping ? -ECANCELED : -ENOTCONN);
		return;
	}
	if (r->op != ZDB_OP_PING && r->op != ZDB_OP_INFO &&
	    (r->key_len == 0 || r->key_len > ZDB_KEY_MAX)) {
		zdb_req_complete_later(b->loop, r, -EINVAL);
		return;
	}
	if (r->op == ZDB_OP_PUT && r->val_len > ZDB_VALUE_MAX) {
		log_error("backend %s: value of %zu bytes refused: larger than %u",
			  b->cfg.name, r->val_len, ZDB_VALUE_MAX);
		zdb_req_complete_later(b->loop, r, -E2BIG);
		return;
	}
	if ((e = dir_queue(d, r)) < 0)
		zdb_req_complete_later(b->loop, r, e);
}

static void dir_stop_done(struct loop_op *op, int res, uint32_t flags)
{
	struct dir_be *d = container_of(op, struct dir_be, stop_op);

	(void)res; (void)flags;
	d->stopped_sent = true;
	if (d->b.stopped)
		d->b.stopped(&d->b);
}

static void dir_maybe_stopped(struct dir_be *d)
{
	struct io_uring_sqe *sqe;

	if (!d->stopping || d->jobs || d->stopped_sent || d->stop_op.cb)
		return;
	d->b.state = ZDB_CONN_STOPPED;
	d->stop_op.cb = dir_stop_done;
	sqe = loop_sqe(d->b.loop, &d->stop_op);
	io_uring_prep_nop(sqe);
}

static void dir_stop(struct zdb_backend *b)
{
	struct dir_be *d = (struct dir_be *)b;

	d->stopping = true;
	dir_maybe_stopped(d);
}

static void dir_destroy(struct zdb_backend *b)
{
	struct dir_be *d = (struct dir_be *)b;

	if (d->dirfd >= 0)
		close(d->dirfd);
	free(d);
}

static const struct zdb_backend_ops dir_ops = {
	.kind = "dir",
	.start = dir_start,
	.submit = dir_submit,
	.tick = NULL,
	.stop = dir_stop,
	.destroy = dir_destroy,
};

struct zdb_backend *zdb_dir_create(struct loop *l, const struct zdb_backend_cfg *cfg,
				   struct workq *wq)
{
	struct dir_be *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->b.ops = &dir_ops;
	d->b.loop = l;
	d->b.cfg = *cfg;
	d->b.dialect = ZDB_DIALECT_DIR;
	d->b.depth = 64;
	d->wq = wq;
	(void)mkdir(cfg->address, 0700);
	d->dirfd = open(cfg->address, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->dirfd < 0) {
		d->b.state = ZDB_CONN_FATAL;
		snprintf(d->b.last_error, sizeof(d->b.last_error), "cannot open folder: %s",
			 strerror(errno));
	}
	return &d->b;
}
