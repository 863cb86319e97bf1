#!/usr/bin/env bash
# ext4.sh — ext4 end to end: nbdfuse exposes the export as a file, a loop
# device turns it into a block device, then mkfs.ext4, mount, files with known
# checksums, fstrim, umount, e2fsck -fn, remount and verify every file.
# Cleanup unmounts, detaches the loop device and the fuse mount even on
# failure.  Needs root (mount, losetup).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires_nbd_attach
requires mkfs.ext4 e2fsck fstrim mount umount sha256sum

t=$(mktempdir)
mkdir "$t/mnt"
truncate -s 256M "$t/disk"
start_nbdsrv --unix "$t/sock" --export "disk=$t/disk"

nbd_attach 1 "nbd+unix:///disk?socket=$t/sock"
[ "$(stat -c %s "${FUSEDIR[1]}/nbd")" -eq $((256 << 20)) ] || fail "fuse file size"
loop=${LOOP[1]}
mkfs.ext4 -q -F -E nodiscard "$loop" || fail "mkfs.ext4"

mount "$loop" "$t/mnt" || fail "mount"
cleanup_push "umount '$t/mnt'"
seed=${NBD_TEST_SEED:-$RANDOM}
echo "# seed=$seed"
python3 - "$t/mnt" "$seed" <<'PY' || fail "writing files"
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
os.mkdir(os.path.join(d, "sub"))
for i in range(40):
    n = r.choice([0, 1, 511, 4096, 65537, 1 << 20, 3 << 20])
    with open(os.path.join(d, "sub" if i % 2 else "", "f%d" % i), "wb") as f:
        f.write(r.randbytes(n))
with open(os.path.join(d, "big"), "wb") as f:
    for _ in range(24):
        f.write(r.randbytes(1 << 20))
with open(os.path.join(d, "doomed"), "wb") as f:
    f.write(r.randbytes(32 << 20))
PY
(cd "$t/mnt" && find . -type f ! -name doomed -exec sha256sum {} + | sort -k2 >"$t/sums")
[ "$(wc -l <"$t/sums")" -eq 41 ] || fail "expected 41 files"
sync
before=$(stat -c %b "$t/disk")
rm "$t/mnt/doomed"
sync
fstrim -v "$t/mnt" || fail "fstrim"
umount "$t/mnt" || fail "umount"

# After the trim, the freed 32 MiB must be holes in the backing file.
after=$(stat -c %b "$t/disk")
info "backing file allocated: $((before / 2048)) MiB before fstrim, $((after / 2048)) MiB after"

e2fsck -fn "$loop" >"$t/fsck" 2>&1 || { cat "$t/fsck" >&2; fail "e2fsck -fn found errors"; }

mount "$loop" "$t/mnt" || fail "remount"
(cd "$t/mnt" && sha256sum --quiet -c "$t/sums") || fail "file contents differ after remount"
[ ! -e "$t/mnt/doomed" ] || fail "deleted file came back"
umount "$t/mnt" || fail "final umount"
nbd_detach 1
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
[ $((before - after)) -ge $((24 * 2048)) ] ||
  fail "fstrim did not punch the deleted 32 MiB: $((before / 2048)) -> $((after / 2048)) MiB"
