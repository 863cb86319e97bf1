#!/usr/bin/env bash
# raw_vol.sh — nbd_raw.py's protocol checks against VOLUME exports: thin
# volumes "disk" (64 MiB) and "big" (8 GiB) of `serve --volumes ephemeral`,
# then of `serve --config` on 6 redis backends (zdb with
# NBDSRV_TEST_BACKEND=zdb; skipped without a backend).  The handshake and
# request validation are shared with file exports; what differs is
# export_vol.c: its flags (no FAST_ZERO), unaligned I/O inside chunks,
# zero-length and oversize requests, read-only snapshots, block status by
# chunk, errors mapped from the cache and the pool.  Also: every command on
# a read-only snapshot export answers EPERM (or EINVAL) and reads work.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires python3
t=$(mktempdir)
mkdir "$t/tmp"

# run_checks SOCKET CTL — create the volumes and a snapshot, run the checks.
run_checks() {
  local sock=$1 ctl=$2
  "$NBDSRV" vol --control "$ctl" create disk 64M >/dev/null || fail "vol create disk"
  "$NBDSRV" vol --control "$ctl" create big 8G >/dev/null || fail "vol create big"
  NBD_RAW_VOLUMES=1 NBD_SERVER_PID=$NBDSRV_PID python3 "$SRC_DIR/test/nbdsrv/nbd_raw.py" "$sock" ||
    fail "raw protocol checks on volumes failed"
  "$NBDSRV" snap --control "$ctl" create disk@s >/dev/null || fail "snap create"
  python3 - "$sock" "$SRC_DIR/test/nbdsrv" <<'PY' || fail "snapshot export checks failed"
import sys
sys.path.insert(0, sys.argv[2])
import nbd_raw as R
R.sock_path = sys.argv[1]
for sr in (False, True):
    c = R.Conn()
    c.handshake()
    c.go("disk@s", sr=sr, meta=sr)
    size, tflags = R.export_facts(c)
    R.check(tflags & 2, "snapshot not read-only: %#x" % tflags)
    R.check(not tflags & (0x8 | 0x20 | 0x40 | 0x800),
            "read-only export advertises FUA/TRIM/ZEROES/FAST_ZERO: %#x" % tflags)
    for cmd, ln, fl, pl in ((R.CMD_WRITE, 4096, 0, bytes(4096)),
                            (R.CMD_WRITE, 0, 0, b""),
                            (R.CMD_TRIM, 4096, 0, b""),
                            (R.CMD_ZEROES, 4096, 0, b""),
                            (R.CMD_ZEROES, 4096, R.F_NO_HOLE, b"")):
        err, _, _ = c.cmd(cmd, 8192, ln, flags=fl, payload=pl)
        R.check(err == R.EPERM, "cmd %d on a snapshot: error %d, want EPERM" % (cmd, err))
    err, data, _ = c.read(0, 65536)
    R.check(err == 0 and len(data) == 65536, "read of a snapshot: %d" % err)
    R.check(c.cmd(R.CMD_FLUSH)[0] == 0, "flush of a snapshot")
    R.check(c.cmd(R.CMD_CACHE, 0, 65536)[0] == 0, "cache of a snapshot")
    c.request(R.CMD_DISC)
    c.close()
print("ok snapshot export")
PY
}

# 1. ephemeral volumes (memory store).
NBDSRV_LOG=$t/ephemeral.log
TMPDIR=$t/tmp start_nbdsrv --volumes ephemeral --unix "$t/sock1" --control "$t/ctl1"
wait_for "[ -S '$t/ctl1' ]" 30 || fail "no control socket"
run_checks "$t/sock1" "$t/ctl1"
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM (ephemeral)"

# 2. persistent volumes: SSD cache over the pool.
if ! (requires_test_backend) >/dev/null 2>&1; then
  echo "skip serve --config part: no $BACKEND_TEST_KIND backend"
  exit 0
fi
backends_start "$BACKEND_TEST_KIND" 6 "$t"
"$NBDSRV" key generate "$t/pool.key" >/dev/null || fail "key generate"
backends_config "$t/pool.conf" 4 2 0 "chunk_size = 256K
key_file = $t/pool.key
cache_path = $t/cache
cache_size = 160M
cache_mode = writeback"
NBDSRV_LOG=$t/config.log
start_nbdsrv --config "$t/pool.conf" --unix "$t/sock2"
wait_for "[ -S '$t/cache/nbdsrv.ctl' ]" 30 || fail "no control socket"
run_checks "$t/sock2" "$t/cache/nbdsrv.ctl"
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM (config)"
