#!/usr/bin/env bash
# syncpaused.sh — `nbdsrv vol sync` with the pool paused (every backend
# SIGSTOPped, a 4 KiB write waiting for its write-back delay): the sync
# gives up (--timeout, an error naming the pool) instead of waiting
# forever; then status answers, the daemon stops on SIGTERM with the pool
# still paused (its drain gives up after shutdown_flush_timeout_ms), and
# restarted after the backends resume, a sync succeeds.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 qemu-io
requires_test_backend
t=$(mktempdir)
e2e_pool 6 4 2 "$t" writeback 8M 256K "flush_idle_ms = 3600000
flush_max_age_ms = 3600000
shutdown_flush_timeout_ms = 2000"
e2e_start --create-volume v=4M
qemu-io -f raw -c "write -P 0x5a 4k 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write"
[ "$(e2e_stat pool_dirty)" = 1 ] || fail "pool_dirty $(e2e_stat pool_dirty), want 1 (delayed)"
for ((i = 0; i < BACKEND_N; i++)); do backend_stop "$i"; done
cleanup_push "for p in ${BACKEND_PID[*]}; do kill -CONT \$p; done"
src=0
# `timeout` only guards against the hang of the bug (the CLI's own limit is 120 s)
timeout 100 "$NBDSRV" vol sync --timeout 1500 --config "$E2E_CONF" >"$t/sync.out" 2>&1 || src=$?
cat "$t/sync.out" >&2
[ "$src" != 124 ] || fail "vol sync with the pool paused never returned"
[ "$src" != 0 ] || fail "vol sync succeeded with the pool paused"
grep -q "within 1500 ms (pool paused" "$t/sync.out" || fail "vol sync did not fail by its timeout"
[ "$(e2e_stat pool_dirty)" = 1 ] || fail "status after the failed sync: pool_dirty $(e2e_stat pool_dirty)"
src=0; "$NBDSRV" vol sync --timeout 0 --config "$E2E_CONF" >/dev/null 2>&1 || src=$?
[ "$src" != 0 ] || fail "--timeout 0 accepted"
# stopped with the pool still paused: the given-up sync ends at the close
# (ASan build: LSan fails the exit status on a leak)
e2e_stop
for ((i = 0; i < BACKEND_N; i++)); do backend_cont "$i"; done
e2e_start
e2e_ctl vol sync || fail "vol sync after the backends resumed"
[ "$(e2e_stat pool_dirty)" = 0 ] || fail "pool_dirty $(e2e_stat pool_dirty) after the sync"
qemu_io_ok -f raw -r -c "read -P 0x5a 4k 4k" "$(e2e_uri v)" || fail "read back"
e2e_stop
info "a sync with the pool paused fails after its timeout; the daemon stays responsive"
