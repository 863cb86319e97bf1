#!/usr/bin/env bash
# persist_restart.sh — a persistent daemon SIGKILLed and started again at
# once, N times (NBDSRV_RESTARTS, default 20): each restart must come up
# (its NBD unix socket and control socket are left behind by the killed
# daemon and must be taken over, not refused as "address already in use"),
# serve the volume (nbdinfo, data written before the kills reads back) and
# answer `status`.  A second daemon on the same directory is refused with a
# message naming the directory, and leaves the first one's sockets working.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo qemu-io
t=$(mktempdir)
d=$t/data
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
n=${NBDSRV_RESTARTS:-20}

"$NBDSRV" init "$d" --cache-size 4M --chunk-size 256K --volume disk=4M >/dev/null 2>&1 ||
  fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"

# up — the daemon NBDSRV_PID serves the volume and answers status (the
# sockets of a killed daemon exist already: poll the service, not the path).
up() {
  local i
  for ((i = 0; i < 600; i++)); do
    kill -0 "$NBDSRV_PID" 2>/dev/null || return 1
    nbdinfo --size "$u" >/dev/null 2>&1 &&
      "$NBDSRV" status --config "$d/pool.conf" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  return 1
}

NBDSRV_LOG=$t/serve0.log
start_nbdsrv --config "$d/pool.conf"
up || { cat "$NBDSRV_LOG" >&2; fail "first start"; }
qemu-io -f raw -c "write -P 0x5c 0 64k" -c flush "$u" >/dev/null || fail "write"

rc=0; "$NBDSRV" serve --config "$d/pool.conf" >"$t/second.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "a second daemon on the same directory started"
grep -q "in use" "$t/second.out" || { cat "$t/second.out" >&2; fail "second daemon: no clear message"; }
up || fail "the refused second daemon broke the first one's sockets"

for ((r = 1; r <= n; r++)); do
  kill -9 "$NBDSRV_PID"
  wait "$NBDSRV_PID" 2>/dev/null || true
  NBDSRV_LOG=$t/serve$r.log
  start_nbdsrv --config "$d/pool.conf"
  up || { cat "$NBDSRV_LOG" >&2; fail "restart $r after SIGKILL did not come up"; }
done
qemu_io_ok -f raw -r -c "read -P 0x5c 0 64k" "$u" ||
  fail "data written before the kills does not read back"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
[ ! -e "$d/nbdsrv.sock" ] && [ ! -e "$d/cache/nbdsrv.ctl" ] ||
  fail "a clean stop left a socket behind"
info "$n restarts right after SIGKILL: each served"
