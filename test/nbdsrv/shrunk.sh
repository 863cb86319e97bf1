#!/usr/bin/env bash
# shrunk.sh — a file export shrunk under the server (another process
# truncates the exported file): a large READ over TCP (>= 256 KiB, the map
# path of conn.c when the pages are cached) of the part now beyond EOF gets
# an error reply and the connection keeps working, as with qemu-nbd and
# nbdkit's file plugin; a range whose last page only partly survives must
# not be answered with the page cache's zeros as if they were data.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires python3
t=$(mktempdir)
python3 -c 'import os,sys; open(sys.argv[1],"wb").write(os.urandom(8 << 20))' "$t/disk"
port=$(free_port)
start_nbdsrv --unix "$t/sock" --listen "127.0.0.1:$port" --export "disk=$t/disk"
port=$NBDSRV_PORT   # start_nbdsrv may have moved it
# TCP (the map path) and the unix socket (the splice path) alike
for addr in "tcp:127.0.0.1:$port" "$t/sock"; do
PYTHONPATH="$SRC_DIR/test/nbdsrv" python3 - "$addr" "$t/disk" <<'PY' ||
import os, sys
import nbd_raw as R

R.sock_path = sys.argv[1]
path = sys.argv[2]
MiB = 1 << 20
orig = open(path, "rb").read()
for sr in (True, False):
    c = R.Conn()
    c.handshake()
    c.go("disk", sr=sr)
    # pages cached and read once from the map path
    err, data, _ = c.read(6 * MiB, MiB)
    R.check(err == 0 and data == orig[6 * MiB:7 * MiB], "read before the truncate")
    err, data, _ = c.read(4 * MiB, MiB)
    R.check(err == 0 and data == orig[4 * MiB:5 * MiB], "read before the truncate")
    # (1) the whole range is beyond the new EOF
    os.truncate(path, 2 * MiB)
    err, data, _ = c.read(6 * MiB, MiB)
    R.check(err != 0, "sr=%s: READ beyond the shrunk file's end succeeded" % sr)
    err, data, _ = c.read(0, 4096)
    R.check(err == 0 and data == orig[:4096],
            "sr=%s: small READ after the failed one" % sr)
    # (2) the new EOF falls inside the range's last page: the page stays
    # cached, but the bytes past EOF are not the file's data any more
    with open(path, "r+b") as f:
        f.seek(0, 2)
        f.write(orig[2 * MiB:5 * MiB])          # back to 5 MiB, same bytes
    err, data, _ = c.read(4 * MiB, MiB)
    R.check(err == 0 and data == orig[4 * MiB:5 * MiB], "sr=%s: re-grown file" % sr)
    os.truncate(path, 5 * MiB - 100)
    err, data, _ = c.read(4 * MiB, MiB)
    R.check(err != 0, "sr=%s: READ across the shrunk file's end succeeded "
            "(the bytes past EOF were sent as data)" % sr)
    err, data, _ = c.read(4 * MiB, 4096)
    R.check(err == 0 and data == orig[4 * MiB:4 * MiB + 4096],
            "sr=%s: small READ after the failed one" % sr)
    c.request(R.CMD_DISC)
    c.close()
    with open(path, "r+b") as f:                # restore for the next round
        f.truncate(0)
        f.write(orig)
print("ok", sys.argv[1])
PY
  fail "shrunk file export checks failed ($addr)"
done
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
