#!/usr/bin/env bash
# nbdclient.sh — the Linux kernel's own client tool, nbd-client (Debian's
# nbd-client 3.24), against nbdsrv over TCP.
#
# Always: `nbd-client -l` lists the exports with their descriptions
# (NBD_OPT_LIST); `nbd-client -N NAME` negotiates (NBD_OPT_GO with the
# kernel's flags) up to the size line for a file export and a volume; an
# unknown export is refused with the server's message.  Without the nbd
# kernel module (as on the CI machines) nbd-client then stops at the
# netlink/ioctl step: the test checks that it got there, not further.
#
# Where the nbd module is available (root, /dev/nbdN): ext4 on /dev/nbdN
# for a file export and for a thin volume — mkfs, files with checksums,
# umount, `nbd-client -d`, attach again, e2fsck -fn and the checksums; the
# volume over 2 connections (-C 2, multi-conn) —
# i.e. what a user of the real product does.  NBDSRV_TEST_KERNEL_NBD=0
# skips that part.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbd-client python3 sha256sum

t=$(mktempdir)
truncate -s 128M "$t/disk"
port=$(free_port)
ctl=$t/ctl
start_nbdsrv --listen "127.0.0.1:$port" --volumes ephemeral --control "$ctl" \
  --export "disk=$t/disk,desc=file disk" --export "golden=$t/disk,ro,desc=published snapshot"
port=$NBDSRV_PORT   # start_nbdsrv may have moved it
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket"
"$NBDSRV" vol --control "$ctl" create vol1 256M >/dev/null || fail "vol create"

# --- NBD_OPT_LIST ---------------------------------------------------------
nbd-client -l 127.0.0.1 "$port" >"$t/list" 2>&1 || { cat "$t/list" >&2; fail "nbd-client -l: exit $?"; }
grep -qx 'disk: file disk' "$t/list" || { cat "$t/list" >&2; fail "-l lacks 'disk: file disk'"; }
grep -qx 'golden: published snapshot' "$t/list" || { cat "$t/list" >&2; fail "-l lacks golden"; }
grep -qx 'vol1' "$t/list" || grep -q '^vol1:' "$t/list" || { cat "$t/list" >&2; fail "-l lacks the volume"; }

# --- an unknown export: refused, with the server's reason ------------------
rc=0
timeout 30 nbd-client -N nosuch 127.0.0.1 "$port" /dev/nbd0 -nofork >"$t/unk" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "nbd-client attached an unknown export"
grep -q 'unknown export' "$t/unk" || { cat "$t/unk" >&2; fail "no server reason for the unknown export"; }

kernel_nbd() {
  [ "${NBDSRV_TEST_KERNEL_NBD:-1}" = 1 ] && [ "$(id -u)" -eq 0 ] || return 1
  [ -d /sys/module/nbd ] || modprobe nbd nbds_max=16 2>/dev/null || return 1
  [ -b /dev/nbd0 ]
}

if ! kernel_nbd; then
  # Negotiation only: nbd-client prints the size once NBD_OPT_GO succeeded,
  # then needs the kernel module (netlink) to go on.
  for e in disk:128MB vol1:256MB; do
    rc=0
    timeout 30 nbd-client -N "${e%%:*}" 127.0.0.1 "$port" /dev/nbd0 -b 4096 -nofork >"$t/neg" 2>&1 || rc=$?
    grep -q "size = ${e#*:}" "$t/neg" || { cat "$t/neg" >&2; fail "nbd-client did not negotiate ${e%%:*} (exit $rc)"; }
    grep -qi 'server said' "$t/neg" && { cat "$t/neg" >&2; fail "${e%%:*}: the server refused"; }
  done
  kill -0 "$NBDSRV_PID" || fail "server died"
  stop_nbdsrv || fail "server exit status $? after SIGTERM"
  echo "nbdclient.sh: ok (negotiation only: no nbd kernel module here)"
  exit 0
fi

# --- the kernel's client: ext4 on /dev/nbdN --------------------------------
requires mkfs.ext4 e2fsck mount umount blockdev
free_nbd() {
  local d
  for d in /sys/block/nbd*; do
    [ -e "$d/pid" ] && continue
    [ "$(cat "$d/size")" = 0 ] || continue
    echo "/dev/${d##*/}"; return 0
  done
  return 1
}
attach() {   # attach EXPORT → sets DEV; the volume with 2 connections (multi-conn)
  local conns=1
  [ "$1" = vol1 ] && conns=2
  DEV=$(free_nbd) || fail "no free /dev/nbdN"
  nbd-client -N "$1" 127.0.0.1 "$port" "$DEV" -b 4096 -C "$conns" >"$t/att" 2>&1 ||
    { cat "$t/att" >&2; fail "nbd-client -N $1 $DEV: exit $?"; }
  cleanup_push "nbd-client -d '$DEV' >/dev/null 2>&1"
  wait_for "[ \"\$(blockdev --getsize64 '$DEV' 2>/dev/null)\" -gt 0 ]" 30 || fail "$DEV has no size"
}
detach() { sync; nbd-client -d "$DEV" >/dev/null 2>&1 || fail "nbd-client -d $DEV"; }

mkdir "$t/mnt"
seed=${NBD_TEST_SEED:-$RANDOM}
echo "# seed=$seed"
for e in disk vol1; do
  attach "$e"
  [ "$e" = disk ] && want=$((128 << 20)) || want=$((256 << 20))
  [ "$(blockdev --getsize64 "$DEV")" = "$want" ] || fail "$e: $DEV size $(blockdev --getsize64 "$DEV"), want $want"
  mkfs.ext4 -q -F "$DEV" || fail "$e: mkfs.ext4 on $DEV"
  mount "$DEV" "$t/mnt" || fail "$e: mount $DEV"
  cleanup_push "umount '$t/mnt' 2>/dev/null"
  python3 - "$t/mnt" "$seed" <<'PY' || fail "$e: writing files"
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for i in range(20):
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(r.randbytes(r.choice([0, 1, 4096, 65537, 1 << 20, 5 << 20])))
PY
  (cd "$t/mnt" && sha256sum f* >"$t/sums.$e")
  rm -f "$t/mnt/f3"   # a discard goes out as TRIM
  fstrim "$t/mnt" 2>/dev/null || true
  sed -i '/ f3$/d' "$t/sums.$e"
  umount "$t/mnt" || fail "$e: umount"
  detach

  attach "$e"
  e2fsck -fn "$DEV" >"$t/fsck" 2>&1 || { cat "$t/fsck" >&2; fail "$e: e2fsck -fn after reattach"; }
  mount "$DEV" "$t/mnt" || fail "$e: remount"
  (cd "$t/mnt" && sha256sum --quiet -c "$t/sums.$e") || fail "$e: files differ after reattach"
  [ ! -e "$t/mnt/f3" ] || fail "$e: a deleted file came back"
  umount "$t/mnt" || fail "$e: umount"
  detach
done

kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
echo "nbdclient.sh: ok (kernel nbd: ext4 on a file export and a volume)"
