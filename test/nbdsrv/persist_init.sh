#!/usr/bin/env bash
# persist_init.sh — `nbdsrv init DIR` (the embedded default of scripts/run):
# bad arguments are refused before anything is written (exit 2, DIR not
# created); an existing pool.conf is never touched (exit 1); a new DIR has
# pool.conf, a 0600 key, the dir backends and, with --volume, the volume;
# `serve --config DIR/pool.conf --create-volume` (scripts/run's command,
# minus the TCP port other tests may hold) serves "disk" on the config's
# unix socket, leaves an existing volume as it is, and keeps what was
# written across a restart.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo qemu-io cmp sha256sum
t=$(mktempdir)
d=$t/data
MiB=$((1 << 20))

# --- bad arguments -------------------------------------------------------------
bad() {  # bad EXIT WHAT ARGS…
  local want=$1 what=$2 rc=0
  shift 2
  "$NBDSRV" init "$@" >"$t/out" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$t/out" >&2; fail "init $*: exit $rc, want $want"; }
  grep -q -- "$what" "$t/out" || { cat "$t/out" >&2; fail "init $*: message lacks '$what'"; }
}
bad 2 "DIR is required"
bad 2 "k+m = 6 needs" "$d" --backends 5
bad 2 "expected 1..32" "$d" --k 0
bad 2 "expected 0..8" "$d" --m 9
bad 2 "power of two" "$d" --chunk-size 3M
bad 2 "expected a size" "$d" --cache-size lots
bad 2 "expected NAME=SIZE" "$d" --volume .x=1G
bad 2 "expected NAME=SIZE" "$d" --volume disk=0
bad 2 "unknown option" "$d" --colour red
[ ! -e "$d" ] || fail "a refused init created $d"

# --- a pool with a volume ---------------------------------------------------------
"$NBDSRV" init "$d" --cache-size 32M --chunk-size 256K --volume disk=8M >"$t/out" 2>&1 ||
  { cat "$t/out" >&2; fail "init"; }
grep -q "serve it: nbdsrv serve --config $d/pool.conf" "$t/out" || { cat "$t/out" >&2; fail "init output"; }
[ "$(stat -c %a "$d/pool.key")" = 600 ] || fail "pool.key mode $(stat -c %a "$d/pool.key")"
[ "$(stat -c %s "$d/pool.key")" = 32 ] || fail "pool.key size"
for i in 00 01 02 03 04 05; do [ -d "$d/backends/b$i" ] || fail "no backend folder b$i"; done
grep -q "^listen = unix:$d/nbdsrv.sock$" "$d/pool.conf" || fail "pool.conf: no unix listen"
grep -q "^listen = 0.0.0.0:10809$" "$d/pool.conf" || fail "pool.conf: no TCP listen"
sum=$(sha256sum "$d/pool.conf" "$d/pool.key")
bad 1 "already holds a pool" "$d"
[ "$(sha256sum "$d/pool.conf" "$d/pool.key")" = "$sum" ] || fail "a refused init changed the pool"

# --- serve it (scripts/run), without the TCP port ------------------------------
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
NBDSRV_LOG=$t/serve1.log
start_nbdsrv --config "$d/pool.conf" --create-volume disk=16M
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket from the config's listen"
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
nbdinfo --list "nbd+unix://?socket=$d/nbdsrv.sock" | grep -q '^export="disk":' || fail "LIST has no disk"
[ "$(nbdinfo --size "$u")" = $((8 * MiB)) ] || fail "--create-volume changed an existing volume"
grep -q "volume 'disk' exists" "$NBDSRV_LOG" || fail "no note that disk exists"
qemu-io -f raw -c "write -P 0x3c 1M 3M" -c "write -P 0xc3 7M 1M" "$u" >/dev/null || fail "qemu-io write"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"

NBDSRV_LOG=$t/serve2.log
start_nbdsrv --config "$d/pool.conf" --create-volume disk=16M --create-volume more=4M
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket after restart"
qemu-io -f raw -c "read -P 0x3c 1M 3M" -c "read -P 0xc3 7M 1M" -c "read -P 0 0 1M" \
  "$u" >"$t/qio" || fail "qemu-io read"
! grep -q "Pattern verification failed" "$t/qio" || fail "data changed across the restart"
[ "$(nbdinfo --size "nbd+unix:///more?socket=$d/nbdsrv.sock")" = $((4 * MiB)) ] ||
  fail "--create-volume of a new volume on restart"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "second SIGTERM: exit $rc"
echo "ok"
