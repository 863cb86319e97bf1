#!/usr/bin/env bash
# volumes_ext4.sh — ext4 on thin volumes: mkfs + files on a volume (nbdfuse →
# loop), snapshot, clone of the snapshot; the origin then changes (files
# deleted, new ones written) while the clone, mounted the same way, still
# holds exactly the snapshot's files and passes e2fsck -fn.  Cleanup unmounts
# and detaches even on failure.  Needs root (mount, losetup).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires_nbd_attach
requires mkfs.ext4 e2fsck mount umount sha256sum python3

t=$(mktempdir)
mkdir "$t/mnt1" "$t/mnt2"
ctl=$t/ctl
vol() { "$NBDSRV" vol --control "$ctl" "$@"; }
start_nbdsrv --volumes ephemeral --unix "$t/sock" --control "$ctl"
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket"

attach() { nbd_attach "$1" "nbd+unix:///$2?socket=$t/sock"; }
detach() { nbd_detach "$1"; }

vol create base 256M --chunk-size 256K >/dev/null || fail "vol create"
attach 1 base
mkfs.ext4 -q -F -E nodiscard "${LOOP[1]}" || fail "mkfs.ext4"
mount "${LOOP[1]}" "$t/mnt1" || fail "mount"
cleanup_push "umount '$t/mnt1'"
seed=${NBD_TEST_SEED:-$RANDOM}
echo "# seed=$seed"
python3 - "$t/mnt1" "$seed" <<'PY' || fail "writing files"
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
os.mkdir(os.path.join(d, "sub"))
for i in range(30):
    n = r.choice([0, 1, 4096, 65537, 1 << 20, 3 << 20])
    with open(os.path.join(d, "sub" if i % 2 else "", "f%d" % i), "wb") as f:
        f.write(r.randbytes(n))
PY
(cd "$t/mnt1" && find . -type f -exec sha256sum {} + | sort -k2 >"$t/sums")
[ "$(wc -l <"$t/sums")" -eq 30 ] || fail "expected 30 files"
umount "$t/mnt1" || fail "umount"
detach 1

"$NBDSRV" snap --control "$ctl" create base@gold >/dev/null || fail "snap create"
vol clone base@gold node1 >/dev/null || fail "vol clone"

# The origin moves on: its files change after the snapshot.
attach 1 base
mount "${LOOP[1]}" "$t/mnt1" || fail "remount origin"
rm -rf "$t/mnt1/sub"
head -c $((8 << 20)) /dev/urandom >"$t/mnt1/new"
umount "$t/mnt1" || fail "umount origin"
detach 1

# The clone sees the snapshot's files, exactly.
attach 2 node1
e2fsck -fn "${LOOP[2]}" >"$t/fsck" 2>&1 || { cat "$t/fsck" >&2; fail "e2fsck -fn on the clone"; }
mount "${LOOP[2]}" "$t/mnt2" || fail "mount clone"
cleanup_push "umount '$t/mnt2'"
(cd "$t/mnt2" && sha256sum --quiet -c "$t/sums") || fail "clone: files differ from the snapshot"
[ ! -e "$t/mnt2/new" ] || fail "clone: sees a file written to the origin after the snapshot"
[ "$(cd "$t/mnt2" && find . -type f | wc -l)" -eq 30 ] || fail "clone: file count"
# The clone is writable on its own.
echo hello >"$t/mnt2/mine" && sync || fail "write on the clone"
umount "$t/mnt2" || fail "umount clone"
detach 2

kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
echo "volumes_ext4.sh: ok"
