#!/usr/bin/env bash
# wbdelay.sh — the write-back delay through the daemon (pool.conf keys,
# status, `nbdsrv vol sync`):
#  - a bad flush_idle_ms is refused with the file and line;
#  - with flush_idle_ms / flush_max_age_ms out of reach, a 4 KiB write
#    (FLUSHed: durable on the SSD) stays pool-dirty, counted in status as
#    waiting for its delay (wb_waiting), not flushed (wb_* = 0);
#  - a whole chunk written is flushed at once (wb_complete);
#  - `nbdsrv vol sync` returns with pool_dirty = 0 (wb_forced);
#  - SIGKILLed with a waiting object, the restarted daemon flushes it
#    without waiting for the delay (dirty at open: forced).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires qemu-io nbdinfo
t=$(mktempdir)
d=$t/data
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
st() { "$NBDSRV" status --config "$d/pool.conf" --json >"$t/st.json"; }
stat() { st && jq_py "$t/st.json" "j['volumes']['cache']['$1']"; }
start() {
  NBDSRV_LOG=$t/serve$1.log
  start_nbdsrv --config "$d/pool.conf"
  wait_for "nbdinfo --size '$u' >/dev/null 2>&1" 30 || { cat "$NBDSRV_LOG" >&2; fail "no service"; }
}

"$NBDSRV" init "$d" --cache-size 8M --chunk-size 256K --volume disk=4M >/dev/null 2>&1 ||
  fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
cp "$d/pool.conf" "$t/good.conf"
sed -i 's/^cache_mode = .*$/&\nflush_idle_ms = soon/' "$d/pool.conf"
rc=0; "$NBDSRV" serve --config "$d/pool.conf" >"$t/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "pool.conf:[0-9]*: .*flush_idle_ms" "$t/bad.out" ||
  { cat "$t/bad.out" >&2; fail "bad flush_idle_ms: exit $rc"; }
sed 's/^cache_mode = .*$/&\nflush_idle_ms = 3600000\nflush_max_age_ms = 3600000/' \
  "$t/good.conf" >"$d/pool.conf"
grep -q "^flush_idle_ms = 3600000" "$d/pool.conf" || fail "no cache_mode line to add the keys after"
start 1

qemu-io -f raw -c "write -P 0x11 4k 4k" -c flush "$u" >/dev/null || fail "write"
sleep 0.5
[ "$(stat pool_dirty)" = 1 ] || fail "a 4 KiB write: pool_dirty $(stat pool_dirty), want 1 (delayed)"
[ "$(stat wb_waiting)" = 1 ] || fail "wb_waiting $(stat wb_waiting), want 1"
[ "$(stat flushed)" = 0 ] || fail "flushed before its delay"

qemu-io -f raw -c "write -P 0x22 1M 256k" -c flush "$u" >/dev/null || fail "whole chunk"
wait_for "[ \"\$(stat wb_complete)\" = 1 ] && [ \"\$(stat pool_dirty)\" = 1 ]" 60 ||
  fail "a complete chunk was not flushed at once: $(cat "$t/st.json")"

"$NBDSRV" vol sync --config "$d/pool.conf" || fail "vol sync"
[ "$(stat pool_dirty)" = 0 ] || fail "pool_dirty $(stat pool_dirty) after vol sync"
[ "$(stat wb_forced)" = 1 ] || fail "wb_forced $(stat wb_forced) after vol sync, want 1"

# a waiting object across a SIGKILL: flushed at the restart, no delay
qemu-io -f raw -c "write -P 0x33 2M 4k" -c flush "$u" >/dev/null || fail "write 2"
[ "$(stat pool_dirty)" = 1 ] || fail "write 2: pool_dirty $(stat pool_dirty)"
kill -9 "$NBDSRV_PID"
wait "$NBDSRV_PID" 2>/dev/null || true
start 2
wait_for "[ \"\$(stat pool_dirty)\" = 0 ]" 60 || fail "not flushed after the restart: $(cat "$t/st.json")"
[ "$(stat wb_idle)" = 0 ] && [ "$(stat wb_age)" = 0 ] || fail "flushed by a delay, not at open"
qemu_io_ok -f raw -r -c "read -P 0x11 4k 4k" -c "read -P 0x22 1M 256k" -c "read -P 0x33 2M 4k" \
  "$u" || fail "data does not read back"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
info "delayed, complete, sync and restart flushes as expected"
