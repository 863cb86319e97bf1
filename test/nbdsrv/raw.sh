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
start_nbdsrv --unix "$t/sock" --export "disk=$t/disk" --export "big=$t/big" \
  --export "odd=$t/odd" --export "empty=$t/empty"
NBD_SERVER_PID=$NBDSRV_PID python3 "$SRC_DIR/test/nbdsrv/nbd_raw.py" "$t/sock" ||
  fail "raw protocol checks failed"
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
