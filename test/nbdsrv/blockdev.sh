#!/usr/bin/env bash
# blockdev.sh — a block device as an export (a loop device over a sparse
# file): size from the device, pattern I/O, discard and write-zeroes on the
# device, fio verify, and the data really on the device afterwards.
# Needs root (losetup).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires_root
requires losetup qemu-io nbdinfo fio cmp
[ -e /dev/loop-control ] || { echo "SKIP: no loop devices" >&2; exit 77; }
t=$(mktempdir)
truncate -s 96M "$t/backing"
loop=$(losetup -f --show "$t/backing") || { echo "SKIP: losetup failed" >&2; exit 77; }
cleanup_push "losetup -d '$loop'"

start_nbdsrv --unix "$t/sock" --export "dev=$loop"
U="nbd+unix:///dev?socket=$t/sock"
[ "$(nbdinfo --size "$U")" = $((96 << 20)) ] || fail "block device export size"
nbdinfo --can flush "$U" || fail "block device: no flush"

out=$(qemu-io -f raw -c 'write -P 0x61 0 1M' -c 'write -P 0x62 95M 1M' \
  -c 'write -P 0x63 1234567 8191' -c 'flush' "$U" 2>&1) || { echo "$out" >&2; fail "qemu-io write"; }
out=$(qemu-io -f raw -c 'read -P 0x61 0 1M' -c 'read -P 0x62 95M 1M' \
  -c 'read -P 0x63 1234567 8191' "$U" 2>&1) || { echo "$out" >&2; fail "qemu-io read"; }
! echo "$out" | grep -q 'verification failed' || { echo "$out" >&2; fail "pattern mismatch"; }

# Discard and write-zeroes on a block device read back as zeros.
if nbdinfo --can trim "$U"; then
  out=$(qemu-io -f raw -c 'discard 0 512k' -c 'read -P 0 0 512k' -c 'read -P 0x61 512k 512k' "$U" 2>&1)
  ! echo "$out" | grep -qiE 'verification failed|error' || { echo "$out" >&2; fail "discard on the device"; }
fi
out=$(qemu-io -f raw -c 'write -z 95M 512k' -c 'read -P 0 95M 512k' -c 'read -P 0x62 95.5M 512k' "$U" 2>&1)
! echo "$out" | grep -qiE 'verification failed|error' || { echo "$out" >&2; fail "write zeroes on the device"; }

cd "$t"
fio --name=dev --ioengine=nbd "--uri=$U" --rw=randwrite --bs=4k --iodepth=16 \
  --numjobs=2 --size=32M --offset=16M --offset_increment=32M --verify=crc32c \
  --do_verify=1 --output-format=terse >"$t/fio.out" || { cat "$t/fio.out" >&2; fail "fio verify on the device"; }

stop_nbdsrv || fail "server exit status $? after SIGTERM"
# What the clients saw is what the device holds.
python3 - "$loop" <<'PY' || fail "device content differs from what was written"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(512 << 10); assert f.read(512 << 10) == b"\x61" * (512 << 10)
    f.seek(1234567); assert f.read(8191) == b"\x63" * 8191
    f.seek((95 << 20) + (512 << 10)); assert f.read(512 << 10) == b"\x62" * (512 << 10)
PY
