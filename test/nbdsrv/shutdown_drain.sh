#!/usr/bin/env bash
# shutdown_drain.sh — a clean stop drains the pool (cmd_serve.c, "A clean
# stop"): writes that wait for their write-back delay are flushed to the
# pool at SIGTERM, so the cache file can be lost after a clean stop.
#   1. healthy pool: SIGTERM, the log says "drained", exit 0; the cache
#      file is deleted, the restarted daemon reads the data from the pool
#      (before the drain existed it refused to start: writes not in the pool);
#   2. pool paused (backends SIGSTOPped), shutdown_flush_timeout_ms = 2000:
#      the drain gives up (log), exit 0, and after SIGCONT the objects reach
#      the pool from the next start (sync, cache deleted, read back);
#   3. pool paused, a drain that would wait 10 minutes: `status` answers
#      during it (pool_dirty), a second SIGTERM ends it ("drain stopped").
# No timed assertion: a stop that hangs fails by the `wait_for` guards
# (minutes), far above the seconds these take.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 redis-server qemu-io
t=$(mktempdir)
e2e_pool_shutdown "$t"

# 1. healthy pool
e2e_start --create-volume v=4M
qemu-io -f raw -c "write -P 0x5a 4k 4k" -c "write -P 0x6b 1000k 8k" -c flush \
  "$(e2e_uri v)" >/dev/null || fail "write"
[ "$(e2e_stat pool_dirty)" = 2 ] || fail "pool_dirty $(e2e_stat pool_dirty), want 2 (delayed)"
e2e_stop
grep -q "stop: draining 2 objects" "$NBDSRV_LOG" || fail "no 'draining 2 objects' in the log"
grep -q "stop: drained: every object is in the pool" "$NBDSRV_LOG" || fail "no 'drained' in the log"
e2e_drop_cache
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x5a 4k 4k" -c "read -P 0x6b 1000k 8k" "$(e2e_uri v)" ||
  fail "read back after the drain and the cache file's loss"
info "1: drained at SIGTERM; the data survived the cache file's loss"

# 2. paused pool: the drain gives up at shutdown_flush_timeout_ms
qemu-io -f raw -c "write -P 0x7c 64k 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write 2"
[ "$(e2e_stat pool_dirty)" = 1 ] || fail "pool_dirty $(e2e_stat pool_dirty), want 1"
backends_pause
kill -TERM "$E2E_PID"
e2e_wait_exit "SIGTERM with the pool paused and a 2000 ms drain budget"
[ "$rc" = 0 ] || fail "exit status $rc after a drain that gave up (want 0)"
grep -q "stop: drain gave up after 2000 ms" "$NBDSRV_LOG" || fail "no 'drain gave up' in the log"
grep -q "1 objects are not in the pool yet" "$NBDSRV_LOG" || fail "the log does not say what is left"
backends_resume_after_exit
e2e_start
e2e_ctl vol sync || fail "vol sync after the backends resumed"
[ "$(e2e_stat pool_dirty)" = 0 ] || fail "pool_dirty $(e2e_stat pool_dirty) after the sync"
e2e_stop
e2e_drop_cache
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x7c 64k 4k" -c "read -P 0x5a 4k 4k" "$(e2e_uri v)" ||
  fail "read back of the write whose drain gave up"
e2e_stop
info "2: the drain gave up on a paused pool (exit 0); the object was flushed after the next start"

# 3. a second signal ends a drain; status answers during it
sed -i "s/^shutdown_flush_timeout_ms = .*/shutdown_flush_timeout_ms = 600000/" "$E2E_CONF"
e2e_start
qemu-io -f raw -c "write -P 0x3d 128k 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write 3"
backends_pause
kill -TERM "$E2E_PID"
wait_for "grep -q 'stop: draining 1 objects' '$NBDSRV_LOG'" 60 || fail "the drain did not start"
d=$(e2e_stat pool_dirty) || fail "status during the drain"
[ "$d" = 1 ] || fail "status during the drain: pool_dirty $d, want 1"
"$NBDSRV" status --config "$E2E_CONF" | grep -q "^daemon: draining" ||
  fail "status during the drain does not say it drains"
kill -TERM "$E2E_PID"
e2e_wait_exit "a second SIGTERM during the drain"
[ "$rc" = 0 ] || fail "exit status $rc after a second signal (want 0)"
grep -q "signal 15: drain stopped: 1 objects are not in the pool yet" "$NBDSRV_LOG" ||
  fail "no 'drain stopped' in the log"
backends_resume_after_exit
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x3d 128k 4k" "$(e2e_uri v)" || fail "read back after the stopped drain"
e2e_stop
info "3: status answered during the drain; a second SIGTERM ended it"
