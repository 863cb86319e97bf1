#!/usr/bin/env bash
# libnbd.sh — every NBD option and command through libnbd (nbd_client_test.c):
# listing, INFO/GO, structured and simple replies, block status, errors,
# read-only export, multi-conn, 8 connections x 64 requests against a model,
# large (spliced) reads mixed with small ones, abandoned connections, a file
# that shrinks under its export; no descriptor kept after the clients leave.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
bin=$TEST_BIN_DIR/nbdsrv/nbd_client_test
[ -x "$bin" ] || fail "missing $bin"

t=$(mktempdir)
truncate -s 64M "$t/disk"
truncate -s 1M "$t/other"
python3 -c 'import sys; sys.stdout.buffer.write(b"\xa5" * (4 << 20))' >"$t/ro"

port=$(free_port)
listen=(--listen "127.0.0.1:$port")
# nbdkit: -U and -p exclude each other
[ "${NBDSRV_STANDIN:-0}" = 1 ] && listen=()
start_nbdsrv --unix "$t/rw.sock" "${listen[@]}" \
  --export "disk=$t/disk,desc=test disk" --export "other=$t/other"
tcp=""
[ ${#listen[@]} -eq 0 ] || tcp="tcp:127.0.0.1:$NBDSRV_PORT"   # start_nbdsrv may have moved it
rw_pid=$NBDSRV_PID
start_nbdsrv --unix "$t/ro.sock" --export "ro=$t/ro,ro"

nfds() { ls "/proc/$rw_pid/fd" | wc -l; }
fds0=$(nfds)

NBD_TEST_OTHER_FILE=$t/other \
  "$bin" "$t/rw.sock" "$t/ro.sock" "${NBD_TEST_SEED:-}" $tcp || fail "nbd_client_test failed"
# Every connection is closed now (some with replies in flight): the server
# keeps none of their descriptors (sockets, splice pipes).
if [ "${NBDSRV_STANDIN:-0}" != 1 ]; then
  wait_for '[ "$(nfds)" -le "$fds0" ]' 60 ||
    { ls -l "/proc/$rw_pid/fd" >&2; fail "descriptors: $fds0 before the clients, $(nfds) after"; }
fi
stop_nbdsrv || fail "ro server: exit status $? after SIGTERM"
NBDSRV_PID=$rw_pid
stop_nbdsrv || fail "rw server: exit status $? after SIGTERM"
