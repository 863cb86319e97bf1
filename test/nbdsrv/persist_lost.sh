#!/usr/bin/env bash
# persist_lost.sh — the cache file is lost.
#  1. dir backends, writeback: once the pool holds everything (status: no
#     object dirty for the pool) cache.img is deleted; the daemon starts
#     again and every volume reads back from the pool.
#  2. redis backends SIGSTOPped, writeback: data written and flushed (on the
#     SSD only), daemon SIGKILLed, cache.img deleted: the restart is refused
#     with a message naming --discard-dirty; with it the daemon starts and
#     the volume reads as its pool version (zeros here).
#  3. same with writethrough: the FLUSH waited for the pool, so after
#     SIGKILL + cache.img deleted everything flushed reads back.
# Also: cache_dirty_max / flush_parallel are accepted, a bad value is
# refused with FILE:LINE.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires nbdcopy qemu-io python3 cmp
t=$(mktempdir)
d=$t/data
MiB=$((1 << 20))
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
pool_clean() {
  "$NBDSRV" status --config "$d/pool.conf" --json >"$t/st.json" &&
    [ "$(jq_py "$t/st.json" 'j["volumes"]["cache"]["pool_dirty"]')" = 0 ]
}

"$NBDSRV" init "$d" --cache-size 8M --chunk-size 256K --volume disk=8M >/dev/null 2>&1 || fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
cp "$d/pool.conf" "$t/good.conf"
sed -i 's/^cache_mode = writeback$/&\ncache_dirty_max = lots/' "$d/pool.conf"
rc=0; "$NBDSRV" serve --config "$d/pool.conf" >"$t/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "pool.conf:[0-9]*: .*cache_dirty_max" "$t/bad.out" ||
  { cat "$t/bad.out" >&2; fail "bad cache_dirty_max: exit $rc"; }
sed 's/^cache_mode = writeback$/&\ncache_dirty_max = 8\nflush_parallel = 2/' "$t/good.conf" >"$d/pool.conf"

NBDSRV_LOG=$t/serve1.log
start_nbdsrv --config "$d/pool.conf"
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket"
head -c $((6 * MiB)) /dev/urandom >"$t/img"
nbdcopy "$t/img" "$u" || fail "nbdcopy in"
wait_for pool_clean 60 || fail "the pool never caught up"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"

rm "$d/cache/cache.img"
NBDSRV_LOG=$t/serve2.log
start_nbdsrv --config "$d/pool.conf" --discard-dirty
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket after the cache file was lost"
nbdcopy "$u" "$t/out" || fail "nbdcopy out"
cmp -n $((6 * MiB)) "$t/out" "$t/img" || fail "data lost with the cache file although the pool had it"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "second SIGTERM: exit $rc"
info "1: cache.img lost after the pool caught up: data intact"

# --- 2, 3: redis backends paused while writing ----------------------------------
requires_test_backend
backends_start "$BACKEND_TEST_KIND" 6 "$t"
"$NBDSRV" key generate "$t/r.key" >/dev/null || fail "key generate"
ru="nbd+unix:///v?socket=$t/r.sock"
for mode in writeback writethrough; do
  c=$t/cache-$mode
  backends_config "$t/r-$mode.conf" 4 2 0 "chunk_size = 256K
key_file = $t/r.key
cache_path = $c
cache_size = 8M
cache_mode = $mode
timeout_ms = 500"
  NBDSRV_LOG=$t/r-$mode-1.log
  start_nbdsrv --config "$t/r-$mode.conf" --unix "$t/r.sock" --create-volume v=4M
  if [ $mode = writeback ]; then
    for ((i = 0; i < 6; i++)); do backend_stop $i; done
    qemu-io -f raw -c "write -P 0x77 0 1M" -c flush "$ru" >/dev/null || fail "$mode: write"
  else
    qemu-io -f raw -c "write -P 0x77 0 1M" -c flush "$ru" >/dev/null || fail "$mode: write"
    for ((i = 0; i < 6; i++)); do backend_stop $i; done
  fi
  kill -9 "$NBDSRV_PID"; wait "$NBDSRV_PID" 2>/dev/null || true
  rm "$c/cache.img"
  for ((i = 0; i < 6; i++)); do backend_cont $i; done
  rm -f "$t/r.sock"
  if [ $mode = writeback ]; then
    rc=0; "$NBDSRV" serve --config "$t/r-$mode.conf" --unix "$t/r.sock" >"$t/r.out" 2>&1 || rc=$?
    [ "$rc" = 1 ] && grep -q -- "--discard-dirty" "$t/r.out" ||
      { cat "$t/r.out" >&2; fail "writeback, dirty cache.img lost: exit $rc without the message"; }
    rm -f "$t/r.sock"
    NBDSRV_LOG=$t/r-$mode-2.log
    start_nbdsrv --config "$t/r-$mode.conf" --unix "$t/r.sock" --discard-dirty
    want=0
  else
    NBDSRV_LOG=$t/r-$mode-2.log
    start_nbdsrv --config "$t/r-$mode.conf" --unix "$t/r.sock"
    want=0x77
  fi
  qemu-io -f raw -c "read -P $want 0 1M" "$ru" >"$t/qio" || fail "$mode: read after the loss"
  ! grep -q "Pattern verification failed" "$t/qio" || fail "$mode: after cache.img loss the volume does not read $want"
  rc=0; stop_nbdsrv || rc=$?
  [ "$rc" = 0 ] || fail "$mode: SIGTERM: exit $rc"
  info "$mode: cache.img lost after SIGKILL: reads $want as promised"
done
echo "ok"
