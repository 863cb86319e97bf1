#!/usr/bin/env bash
# readahead.sh — cross-object read-ahead of a cold volume (export_vol.c's
# window, warm.c's thread, ssd.c's miss path) through the daemon, with the
# cache file deleted so every chunk comes from the pool:
#  - a sequential QD1 read of the head (data, a hole in the middle, an
#    unallocated tail, chunks rewritten after a snapshot) returns the model's
#    bytes and starts at most a quarter of its pool fetches itself: the
#    others were started by read-ahead (stats.read_fetches; without
#    read-ahead every object is a fetch the read starts; up to 3 cold runs,
#    as a stalled warm thread on a loaded machine can lose one whole run);
#  - read-ahead past the end of the volume and across holes does not fail;
#  - cold again, a sequential read of the snapshot (whose chunks the head
#    still shares, and the original of those the head rewrote) returns the
#    snapshot's bytes, also mostly fetched ahead;
#  - the daemon logged no fetch error and stops cleanly.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires python3
t=$(mktempdir)
d=$t/data
MiB=$((1 << 20))
sock=$d/nbdsrv.sock
st() { "$NBDSRV" status --config "$d/pool.conf" --json >"$t/st.json"; }
stat() { st && jq_py "$t/st.json" "j['volumes']['cache']['$1']"; }
pool_clean() { [ "$(stat pool_dirty)" = 0 ]; }
# nbdpy EXPORT SCRIPT ARGS… — run SCRIPT with `c`, a connection to EXPORT
nbdpy() {
  local exp=$1 code=$2
  shift 2
  python3 - "$SRC_DIR/test/nbdsrv" "$sock" "$exp" "$@" <<PY
import sys
sys.path.insert(0, sys.argv[1])
import nbd_raw
nbd_raw.sock_path = sys.argv[2]
c = nbd_raw.Conn(timeout=60)
c.handshake()
c.go(sys.argv[3])
args = sys.argv[4:]
$code
c.close()
PY
}
start() {
  NBDSRV_LOG=$t/serve$1.log
  start_nbdsrv --config "$d/pool.conf"
  wait_for "[ -S '$sock' ]" 30 || fail "no socket"
}
cold_restart() {
  local rc=0
  stop_nbdsrv || rc=$?
  [ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
  rm "$d/cache/cache.img"
  start "$1"
}

# 16 MiB of 256 KiB chunks: 64 objects at most
"$NBDSRV" init "$d" --cache-size 32M --chunk-size 256K --volume disk=16M >/dev/null 2>&1 ||
  fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
start 1

# the model: 0-6M and 8-12M written, 6-8M and 12-16M never written (holes);
# snapshot s1; then 2-3M rewritten in the head
python3 - "$t" <<'PY'
import os, sys
t = sys.argv[1]
MiB = 1 << 20
snap = bytearray(16 * MiB)
snap[0:6 * MiB] = os.urandom(6 * MiB)
snap[8 * MiB:12 * MiB] = os.urandom(4 * MiB)
head = bytearray(snap)
head[2 * MiB:3 * MiB] = os.urandom(MiB)
open(t + "/snap.img", "wb").write(snap)
open(t + "/head.img", "wb").write(head)
PY
nbdpy disk '
img = open(args[0], "rb").read()
for lo, hi in ((0, 6 << 20), (8 << 20, 12 << 20)):
    for off in range(lo, hi, 1 << 20):
        err, _, _ = c.cmd(nbd_raw.CMD_WRITE, off, 1 << 20, payload=img[off:off + (1 << 20)])
        assert err == 0, "write at %d: error %d" % (off, err)
assert c.cmd(nbd_raw.CMD_FLUSH)[0] == 0
' "$t/snap.img" || fail "writing the snapshot's data"
"$NBDSRV" snap create disk@s1 --config "$d/pool.conf" >/dev/null || fail "snap create"
nbdpy disk '
img = open(args[0], "rb").read()
err, _, _ = c.cmd(nbd_raw.CMD_WRITE, 2 << 20, 1 << 20, payload=img[2 << 20:3 << 20])
assert err == 0 and c.cmd(nbd_raw.CMD_FLUSH)[0] == 0
' "$t/head.img" || fail "rewriting 2-3M of the head"
wait_for pool_clean 60 || fail "the pool never caught up"

# seqread EXPORT IMAGE — 64 KiB reads, QD1, start to end, each compared
seqread() {
  nbdpy "$1" '
img = open(args[0], "rb").read()
for off in range(0, len(img), 64 << 10):
    err, data, _ = c.read(off, 64 << 10)
    assert err == 0, "read at %d: error %d" % (off, err)
    assert data == img[off:off + (64 << 10)], "read at %d: wrong data" % off
' "$2"
}
# ra_ok WHAT OBJECTS — a cold sequential read of OBJECTS objects started at
# most a quarter of their fetches itself, and read-ahead prefetched
ra_ok() {
  local what=$1 objs=$2 rf fe pf
  st
  rf=$(jq_py "$t/st.json" 'j["volumes"]["cache"]["read_fetches"]')
  fe=$(jq_py "$t/st.json" 'j["volumes"]["cache"]["fetches"]')
  pf=$(jq_py "$t/st.json" 'j["volumes"]["cache"]["prefetches"]')
  info "$what: $objs objects, $fe fetches, $rf started by reads, $pf prefetches"
  [ "$fe" -ge "$objs" ] || fail "$what: only $fe fetches for $objs cold objects (not cold?)"
  [ "$pf" -gt 0 ] && [ $((rf * 4)) -le "$objs" ] && return 0
  info "$what: reads started $rf of the fetches of $objs objects ($pf prefetches): read-ahead did not run ahead"
  return 1
}
# cold_seqread EXPORT IMAGE OBJECTS LOG — restart cold, read EXPORT
# sequentially (its bytes must be IMAGE's every time) and check that
# read-ahead ran ahead.  The read-ahead runs on the warm thread: on a
# loaded machine a stalled thread can let the reader overtake it for a
# whole run, so up to 3 cold runs; without read-ahead each one fails.
cold_seqread() {
  local exp=$1 img=$2 objs=$3 log=$4 try
  for try in 1 2 3; do
    cold_restart "$log.$try"
    seqread "$exp" "$img" || fail "cold sequential read of $exp (run $try)"
    ra_ok "$exp" "$objs" && return 0
  done
  fail "$exp: read-ahead did not run ahead in 3 cold runs"
}

cold_seqread disk "$t/head.img" 40 2     # 0-6M and 8-12M: 40 chunks of 256 KiB
cold_seqread disk@s1 "$t/snap.img" 40 3
seqread disk "$t/head.img" || fail "read of the head after the snapshot's"

if grep -E "fetching object .* failed|reading object" "$t"/serve*.log; then
  fail "the daemon logged a failed fetch"
fi
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
echo "ok"
