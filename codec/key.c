/*
 * key.c — the pool master key and the key hierarchy.
 *
 *   key file (32 random bytes, mode 0600)
 *        │  codec_key_load()          → struct codec_key in sodium_malloc()
 *        │                              memory (mlock()ed, guard pages,
 *        ▼                              wiped by sodium_free())
 *   master key ── BLAKE2b(master; "FLECC1/volume", pool, volume) ─► volume key
 *   volume key ── BLAKE2b(volkey; "FLECC1/chunk", salt, chunk, version) ─► chunk key
 *
 * BLAKE2b in keyed mode is a PRF, so subkeys are independent: a leaked chunk
 * key says nothing about its neighbours or the volume key.  The chunk key
 * depends on a 192-bit random salt drawn for every encoding, which is what
 * makes nonce reuse impossible even when a chunk version number repeats after
 * a crash or rollback (see codec.c).
 *
 * The key file is refused, with a message saying why, when it is not a
 * regular file, is reachable by group/others (any of mode 077), or is not
 * exactly 32 bytes.  Key bytes are never logged.
 */
#include "codec/codec_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void codec_errmsg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int codec_sodium_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

static int key_alloc(struct codec_key **out)
{
	struct codec_key *k;

	if (codec_sodium_init() < 0)
		return -EIO;
	k = sodium_malloc(sizeof(*k));
	if (!k)
		return -ENOMEM;
	*out = k;
	return 0;
}

int codec_key_from_bytes(const uint8_t raw[CODEC_KEY_SIZE], struct codec_key **out)
{
	int r = key_alloc(out);

	if (r < 0)
		return r;
	memcpy((*out)->raw, raw, CODEC_KEY_SIZE);
	return 0;
}

void codec_key_free(struct codec_key *key)
{
	if (key)
		sodium_free(key);
}

int codec_key_generate(const char *path, char *err, size_t errlen)
{
	uint8_t raw[CODEC_KEY_SIZE];
	size_t done = 0;
	int fd, r = 0;

	if (codec_sodium_init() < 0) {
		codec_errmsg(err, errlen, "libsodium failed to initialise");
		return -EIO;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		codec_errmsg(err, errlen, "cannot create key file %s: %s", path, strerror(-r));
		return r;
	}
	/* The umask may only remove bits; make sure of 0600 anyway. */
	if (fchmod(fd, 0600) < 0) {
		r = -errno;
		goto exit;
	}
	randombytes_buf(raw, sizeof(raw));
	while (done < sizeof(raw)) {
		ssize_t n = write(fd, raw + done, sizeof(raw) - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			goto exit;
		}
		done += n;
	}
	if (fsync(fd) < 0)
		r = -errno;
exit:
	sodium_memzero(raw, sizeof(raw));
	close(fd);
	if (r < 0) {
		codec_errmsg(err, errlen, "cannot write key file %s: %s", path, strerror(-r));
		unlink(path);
	}
	return r;
}

int codec_key_load(const char *path, struct codec_key **out, char *err, size_t errlen)
{
	struct codec_key *k = NULL;
	struct stat st;
	uint8_t extra;
	size_t done = 0;
	int fd, r;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		codec_errmsg(err, errlen, "cannot open key file %s: %s%s", path, strerror(-r),
			r == -ELOOP ? " (symbolic links are refused)" : "");
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		codec_errmsg(err, errlen, "cannot stat key file %s: %s", path, strerror(-r));
		goto exit;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		codec_errmsg(err, errlen, "key file %s is not a regular file", path);
		goto exit;
	}
	if (st.st_mode & 077) {
		r = -EPERM;
		codec_errmsg(err, errlen, "key file %s is accessible by group/others (mode %04o); "
			"run: chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
		goto exit;
	}
	if (st.st_size != CODEC_KEY_SIZE) {
		r = -EINVAL;
		codec_errmsg(err, errlen, "key file %s has %lld bytes; a pool key is exactly %d "
			"random bytes (create one with the key generator)", path,
			(long long)st.st_size, CODEC_KEY_SIZE);
		goto exit;
	}
	r = key_alloc(&k);
	if (r < 0) {
		codec_errmsg(err, errlen, "cannot allocate locked memory for the key");
		goto exit;
	}
	while (done < CODEC_KEY_SIZE) {
		ssize_t n = read(fd, k->raw + done, CODEC_KEY_SIZE - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EINVAL;
			codec_errmsg(err, errlen, "cannot read key file %s: %s", path,
				n < 0 ? strerror(-r) : "file shrank while reading");
			goto exit;
		}
		done += n;
	}
	/* The file may have grown between fstat and read. */
	if (read(fd, &extra, 1) != 0) {
		r = -EINVAL;
		codec_errmsg(err, errlen, "key file %s changed while reading", path);
		goto exit;
	}
	*out = k;
	k = NULL;
	r = 0;
exit:
	codec_key_free(k);
	close(fd);
	return r;
}

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void codec_kdf_volume(const struct codec_key *master, const uint8_t pool[16],
		      uint64_t volume, uint8_t out[CODEC_KEY_SIZE])
{
	uint8_t msg[13 + 16 + 8];

	memcpy(msg, "FLECC1/volume", 13);
	memcpy(msg + 13, pool, 16);
	le64(msg + 29, volume);
	crypto_generichash(out, CODEC_KEY_SIZE, msg, sizeof(msg),
			   master->raw, CODEC_KEY_SIZE);
}

void codec_kdf_chunk(const uint8_t volkey[CODEC_KEY_SIZE], const struct codec_id *id,
		     const uint8_t salt[CODEC_SALT_SIZE], uint8_t out[CODEC_KEY_SIZE])
{
	uint8_t msg[12 + CODEC_SALT_SIZE + 16];

	memcpy(msg, "FLECC1/chunk", 12);
	memcpy(msg + 12, salt, CODEC_SALT_SIZE);
	le64(msg + 12 + CODEC_SALT_SIZE, id->chunk);
	le64(msg + 20 + CODEC_SALT_SIZE, id->version);
	crypto_generichash(out, CODEC_KEY_SIZE, msg, sizeof(msg), volkey, CODEC_KEY_SIZE);
}
