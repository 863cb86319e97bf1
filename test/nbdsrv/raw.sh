#!/usr/bin/env bash
# raw.sh — the raw-protocol checks of nbd_raw.py (extended headers and
# malformed sessions), then a last check that the server is still alive.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires python3
t=$(mktempdir)
truncate -s 64M "$t/disk"
truncate -s 8G "$t/big"
python3 -c 'import sys; f=open(sys.argv[1],"wb"); f.truncate(1000000); f.seek(1000000); f.write(b"end")' "$t/odd"
: >"$t/empty"
port=$(free_port)
listen=(--listen "127.0.0.1:$port")
[ "${NBDSRV_STANDIN:-0}" = 1 ] && listen=()   # nbdkit: -U and -p exclude each other
start_nbdsrv --unix "$t/sock" "${listen[@]}" --export "disk=$t/disk" --export "big=$t/big" \
  --export "odd=$t/odd" --export "empty=$t/empty"
[ ${#listen[@]} -eq 0 ] || port=$NBDSRV_PORT   # start_nbdsrv may have moved it
NBD_SERVER_PID=$NBDSRV_PID python3 "$SRC_DIR/test/nbdsrv/nbd_raw.py" "$t/sock" ||
  fail "raw protocol checks failed"
# The same framing over TCP (partial reads and writes split differently).
if [ ${#listen[@]} -gt 0 ]; then
  NBD_TEST_ONLY=${NBD_TEST_ONLY:-unknown_command,structured_reads,extended,disconnect,abrupt,random,max_payload} \
    python3 "$SRC_DIR/test/nbdsrv/nbd_raw.py" "tcp:127.0.0.1:$port" ||
    fail "raw protocol checks over TCP failed"
fi
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
