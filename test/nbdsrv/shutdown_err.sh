#!/usr/bin/env bash
# shutdown_err.sh — an error of the daemon's main loop ends it through the
# same orderly teardown as a stop (cmd_serve.c serve_abort), not by
# dropping what waits: with the pool paused, a dirty volume and a
# `vol sync` waiting, the failing loop (test knob NBDSRV_TEST_FAIL_LOOP)
# answers the sync with an error, exits 1 (not 0, not a hang, no leak in
# the ASan build: LSan reports in the log), releases its lock and sockets,
# and the written data reads back after a restart with the pool resumed.
# wait_for limits are hang guards, not timings.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 redis-server qemu-io
t=$(mktempdir)
e2e_pool_shutdown "$t"

export NBDSRV_TEST_FAIL_LOOP=$t/fail-now
e2e_start --create-volume v=4M
qemu-io -f raw -c "write -P 0x5a 4k 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write"
backends_pause
# the loop fails once the daemon HAS the sync (one read only after the stop
# began would not be waiting): the sync forces the object that waited for
# its write-back delay (600 s), nothing else does (wb_waiting 1 -> 0)
[ "$(e2e_stat wb_waiting)" = 1 ] || fail "the write: wb_waiting $(e2e_stat wb_waiting), want 1 (its delay)"
"$NBDSRV" vol sync --timeout 60000 --config "$E2E_CONF" >"$t/sync.out" 2>&1 &
s=$!
cleanup_push "kill $s 2>/dev/null"
wait_for "[ \"\$(e2e_stat wb_waiting)\" = 0 ]" 60 || fail "the sync did not reach the daemon: $(cat "$t/sync.out")"
kill -0 "$s" 2>/dev/null || fail "the sync returned with the pool paused: $(cat "$t/sync.out")"
touch "$NBDSRV_TEST_FAIL_LOOP"
e2e_wait_exit "main loop failure with a sync waiting"
[ "$rc" = 1 ] || { tail -30 "$NBDSRV_LOG" >&2; fail "exit status $rc after a main loop error (want 1)"; }
rs=0; wait "$s" || rs=$?
cat "$t/sync.out" >&2
[ "$rs" != 0 ] || fail "the sync waiting at the error succeeded"
grep -q "daemon is stopping" "$t/sync.out" || fail "the sync was not answered by the daemon: $(cat "$t/sync.out")"
grep -q "stopping after an error" "$NBDSRV_LOG" || fail "no log line for the error stop"
! grep -q "LeakSanitizer\|AddressSanitizer" "$NBDSRV_LOG" || { cat "$NBDSRV_LOG" >&2; fail "sanitizer report at the error stop"; }
[ ! -e "$E2E_CACHE/nbdsrv.ctl" ] || fail "the control socket was left behind"
flock -n "$E2E_CACHE/meta/nbdsrv.lock" true || fail "the metadata lock is still held"
backends_resume_after_exit
unset NBDSRV_TEST_FAIL_LOOP
rm -f "$t/fail-now"
e2e_start
qemu-io -f raw -c "read -P 0x5a 4k 4k" "$(e2e_uri v)" >/dev/null || fail "the write did not survive the error stop"
e2e_stop
info "a main loop error answered the waiting sync, exited 1, and kept the data"

# 2. The main ring itself dead (knob content "ring": serve_abort runs no
# more of it) while a `status` is on the pool thread (held there by the
# knob NBDSRV_TEST_HOLD_POOL_STATUS): the stop must wait for the pool
# thread's answer before the main loop (on serve_until_signal's stack) and
# the control clients go away.  So when the daemon logs that it stops the
# pool thread, its control socket must still be there (it goes after the
# answer); the answer lands in the loop's fini, no leak (ASan build), exit
# 1.  Before the fix the control socket was gone by then and the answer
# was posted to the dead stack frame (leaked, or a stack write).
export NBDSRV_TEST_FAIL_LOOP=$t/fail-ring NBDSRV_TEST_HOLD_POOL_STATUS=$t/hold-status
cleanup_push "rm -f '$t/hold-status'"
e2e_start
touch "$NBDSRV_TEST_HOLD_POOL_STATUS"
e2e_ctl status >"$t/status.out" 2>&1 &
st=$!
cleanup_push "kill $st 2>/dev/null"
wait_for "grep -q 'test knob: holding a status request' '$NBDSRV_LOG'" 60 ||
  { tail -30 "$NBDSRV_LOG" >&2; fail "the status never reached the pool thread"; }
echo ring >"$NBDSRV_TEST_FAIL_LOOP"
wait_for "grep -q 'test knob: stopping the pool thread' '$NBDSRV_LOG'" 60 ||
  { tail -30 "$NBDSRV_LOG" >&2; fail "the ring failure did not stop the pool thread"; }
ctl_left=0; [ -S "$E2E_CACHE/nbdsrv.ctl" ] && ctl_left=1
rm -f "$NBDSRV_TEST_HOLD_POOL_STATUS"
e2e_wait_exit "main ring failure with a status on the pool thread"
[ "$ctl_left" = 1 ] || fail "the control clients were gone before the pool thread stopped (its answer went to a dead loop)"
[ "$rc" = 1 ] || { tail -30 "$NBDSRV_LOG" >&2; fail "exit status $rc after a main ring error (want 1)"; }
grep -q "stopping after an error" "$NBDSRV_LOG" || fail "no log line for the error stop"
! grep -q "LeakSanitizer\|AddressSanitizer" "$NBDSRV_LOG" || { cat "$NBDSRV_LOG" >&2; fail "sanitizer report at the ring error stop"; }
wait_for "! kill -0 $st" 60 || fail "the status client was neither answered nor hung up on"
[ ! -e "$E2E_CACHE/nbdsrv.ctl" ] || fail "the control socket was left behind"
unset NBDSRV_TEST_FAIL_LOOP NBDSRV_TEST_HOLD_POOL_STATUS
info "a dead main ring with a status on the pool thread: answered before the loop went away, exited 1"
