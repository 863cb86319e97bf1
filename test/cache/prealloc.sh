#!/usr/bin/env bash
# prealloc.sh — a cache file larger than its filesystem's free space (a
# 64 MiB ext4 on a loop device, cache_size 100M, dir backends and the
# metadata on the same filesystem): the cache is not preallocated (a failed
# fallocate kept what it allocated and left the filesystem full, so the
# metadata could not commit and `nbdsrv init` failed); init, serve, a
# write and its read back work with the file sparse, as before
# preallocation, and the filesystem is not full.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires_root
requires mkfs.ext4 qemu-io nbdinfo
t=$(mktempdir)
truncate -s 64M "$t/fs.img"
mkfs.ext4 -q -F "$t/fs.img" || fail "mkfs.ext4"
mkdir "$t/mnt"
mount -o loop "$t/fs.img" "$t/mnt" 2>"$t/mount.err" ||
  { echo "SKIP: $(basename "$0"): cannot mount a loop device: $(cat "$t/mount.err")" >&2; exit 77; }
cleanup_push "umount '$t/mnt'"
d=$t/mnt/d
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
avail() { df -k --output=avail "$t/mnt" | tail -1 | tr -d ' '; }
"$NBDSRV" init "$d" --cache-size 100M --chunk-size 256K --volume disk=8M >"$t/init.out" 2>&1 ||
  { cat "$t/init.out" >&2; fail "init with a cache larger than the free space"; }
[ "$(avail)" -gt 8192 ] || fail "the filesystem is full after init: $(avail) KiB free"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
NBDSRV_LOG=$t/serve.log
start_nbdsrv --config "$d/pool.conf"
wait_for "nbdinfo --size '$u' >/dev/null 2>&1" 30 || { cat "$NBDSRV_LOG" >&2; fail "no service"; }
[ "$(avail)" -gt 8192 ] || fail "the filesystem is full after open: $(avail) KiB free"
qemu-io -f raw -c "write -P 0x6b 0 1M" -c flush "$u" >/dev/null || fail "write"
qemu_io_ok -f raw -r -c "read -P 0x6b 0 1M" "$u" || fail "read back"
stop_nbdsrv || fail "SIGTERM: exit $?"
info "a cache larger than the free space stays sparse; the daemon works"
