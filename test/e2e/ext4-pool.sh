#!/usr/bin/env bash
# ext4-pool.sh — ext4 on a persistent volume backed by 20 redis-servers, k=16
# m=4, 1 MiB chunks, a cache much smaller than the data (issue 6, first test).
#
#   1. nbdfuse + loop + mkfs.ext4 + mount; write ~1 GiB of files of mixed
#      sizes (E2E_EXT4_MB), their sha256 computed while writing; sync,
#      umount, wait until `status` reports no pool-dirty object, SIGTERM.
#   2. Delete the cache file, restart: every block now comes from the pool.
#      e2fsck -fn clean, every checksum verifies, and the daemon counted
#      pool fetches (so the cache really was empty).
#   3. Again with an empty cache and 4 backends SIGKILLed — 2 before the
#      read, 2 during it (after fsck, before the files): m=4 shards may be missing, every file still reads.
# Needs root (mount, losetup) and /dev/fuse.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires_nbd_attach
requires mkfs.ext4 e2fsck mount umount sha256sum python3
requires_test_backend

mb=${E2E_EXT4_MB:-1024}
t=$(mktempdir)
mkdir "$t/mnt"
e2e_seed
e2e_pool 20 16 4 "$t" writeback 192M 1M
e2e_start --create-volume disk=2G

umount_disk() {
  umount "$t/mnt" || fail "umount"
  nbd_detach 1
}
cleanup_push "umount '$t/mnt'"

# 1. Write.
nbd_attach 1 "$(e2e_uri disk)"
mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "${LOOP[1]}" ||
  fail "mkfs.ext4"
mount -o noinit_itable "${LOOP[1]}" "$t/mnt" || fail "mount"
start=$SECONDS
python3 - "$t/mnt" "$E2E_SEED" "$mb" "$t/sums" <<'PY' || fail "writing files"
import hashlib, os, random, sys
d, seed, mb, sums = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = random.Random(seed)
total, i, lines = mb << 20, 0, []
sizes = [0, 1, 511, 4096, 4097, 65536, 300000, 1 << 20, 3 << 20, 16 << 20, 64 << 20]
while total > 0:
    n = min(r.choice(sizes), total)
    sub = "d%d" % (i % 7)
    os.makedirs(os.path.join(d, sub), exist_ok=True)
    name = os.path.join(sub, "f%04d" % i)
    h = hashlib.sha256()
    with open(os.path.join(d, name), "wb") as f:
        left = n
        while left:
            b = r.randbytes(min(left, 1 << 20))
            f.write(b)
            h.update(b)
            left -= len(b)
    lines.append("%s  ./%s\n" % (h.hexdigest(), name))
    total -= n
    i += 1
with open(sums, "w") as f:
    f.writelines(lines)
print("# %d files, %d MiB" % (i, mb), file=sys.stderr)
PY
sync
info "wrote ${mb} MiB in $((SECONDS - start)) s"
umount_disk
start=$SECONDS
e2e_wait_clean 300
info "pool caught up in $((SECONDS - start)) s after umount"
e2e_stop

# verify_all WHAT [HOOK] — attach, e2fsck -fn, run HOOK (between the metadata
# reads of fsck and the file reads), mount read-only, check every sum.
verify_all() {
  local start=$SECONDS
  nbd_attach 1 "$(e2e_uri disk)"
  e2fsck -fn "${LOOP[1]}" >"$t/fsck" 2>&1 || { cat "$t/fsck" >&2; fail "$1: e2fsck -fn"; }
  [ -z "${2:-}" ] || eval "$2"
  mount -o ro "${LOOP[1]}" "$t/mnt" || fail "$1: mount"
  (cd "$t/mnt" && sha256sum --quiet -c "$t/sums") || fail "$1: files differ from what was written"
  umount_disk
  info "$1: fsck + $(wc -l <"$t/sums") files verified in $((SECONDS - start)) s"
}

# 2. Empty cache: everything from the pool.
e2e_drop_cache
e2e_start
verify_all "empty cache"
f=$(e2e_stat miss_bytes)
info "empty cache: $((f >> 20)) MiB decoded from the pool"
[ "$f" -ge $((mb << 19)) ] || fail "only $f bytes fetched from the pool: the cache was not really empty"
e2e_stop

# 3. Empty cache and 4 of 20 backends killed (m = 4).
e2e_drop_cache
backend_kill 0
backend_kill 7
e2e_start
verify_all "4 backends killed" "backend_kill 13; backend_kill 19"
kill -0 "$E2E_PID" || fail "daemon died"
e2e_stop
echo "ext4-pool.sh: ok"
