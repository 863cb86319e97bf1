#!/usr/bin/env bash
# lifecycle.sh — how the server starts and stops: systemd socket activation
# (LISTEN_PID/LISTEN_FDS, as libnbd's [ CMD ] syntax uses it), --pidfile,
# several listeners, SIGTERM with requests in flight (exit 0, data on disk),
# and startup/usage errors (exit 1 / exit 2 with a message, never a crash).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo nbdcopy python3 cmp
standin=${NBDSRV_STANDIN:-0}
t=$(mktempdir)
truncate -s 16M "$t/disk"
head -c $((4 << 20)) /dev/urandom >"$t/src"
truncate -s 16M "$t/src"

# --- socket activation ----------------------------------------------------
nbdinfo --list -- [ "$NBDSRV" serve --export "disk=$t/disk" --export "two=$t/src" ] \
  >"$t/list" 2>&1 || { cat "$t/list" >&2; fail "nbdinfo --list via socket activation"; }
grep -q '^export="disk":' "$t/list" && grep -q '^export="two":' "$t/list" ||
  { cat "$t/list" >&2; fail "socket-activated server did not list both exports"; }
# Data written through a socket-activated server is in the file when the
# client is done (libnbd stops the server with SIGTERM).
nbdcopy --flush -- "$t/src" [ "$NBDSRV" serve --export "disk=$t/disk" ] ||
  fail "nbdcopy via socket activation"
cmp "$t/src" "$t/disk" || fail "socket-activated write not in the backing file"
[ "$(nbdinfo --size -- [ "$NBDSRV" serve --export "disk=$t/disk,ro" ])" = $((16 << 20)) ] ||
  fail "nbdinfo --size via socket activation"

# Two inherited sockets (fds 3 and 4: unix and TCP), as systemd passes them.
python3 - "$NBDSRV" "$t/disk" "$t/act.sock" <<'PY' || fail "socket activation with LISTEN_FDS=2"
import os, socket, subprocess, sys, time
nbdsrv, disk, path = sys.argv[1:]
u = socket.socket(socket.AF_UNIX); u.bind(path); u.listen(16)
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen(16)
port = tcp.getsockname()[1]
import fcntl
def child():
    a = fcntl.fcntl(u.fileno(), fcntl.F_DUPFD, 10)     # out of the way first:
    b = fcntl.fcntl(tcp.fileno(), fcntl.F_DUPFD, 10)   # either may be 3 or 4
    os.dup2(a, 3); os.dup2(b, 4)
    os.close(a); os.close(b)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "2"
p = subprocess.Popen([nbdsrv, "serve", "--export", "disk=" + disk],
                     preexec_fn=child, pass_fds=(3, 4, u.fileno(), tcp.fileno()))
u.close(); tcp.close()
try:
    for uri in ("nbd+unix:///disk?socket=" + path, "nbd://127.0.0.1:%d/disk" % port):
        out = subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == str(16 << 20), \
            (uri, out.returncode, out.stdout, out.stderr)
finally:
    p.terminate()
    rc = p.wait(timeout=30)
assert rc == 0, "exit status %d after SIGTERM" % rc
PY

# --- pidfile, two listeners -----------------------------------------------
port=$(free_port)
listen=(--listen "127.0.0.1:$port")
[ "$standin" = 1 ] && listen=()
start_nbdsrv --unix "$t/sock" "${listen[@]}" --pidfile "$t/pid" \
  --export "disk=$t/disk" --threads 2 --log-level debug
[ ${#listen[@]} -eq 0 ] || port=$NBDSRV_PORT   # start_nbdsrv may have moved it
wait_for "[ -s '$t/pid' ]" 60 || fail "no pidfile"
[ "$(cat "$t/pid")" = "$NBDSRV_PID" ] || fail "pidfile has $(cat "$t/pid"), pid is $NBDSRV_PID"
nbdinfo --size "nbd+unix:///disk?socket=$t/sock" >/dev/null || fail "unix listener"
[ "$standin" = 1 ] || nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null || fail "TCP listener"

# IPv6 and host names in --listen (nbdsrv only: the stand-in has one listener).
if [ "$standin" != 1 ] &&
   python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
  p6=$(free_port ::1)
  p4=$(free_port)
  saved=$NBDSRV_PID
  start_nbdsrv --listen "[::1]:$p6" --listen "localhost:$p4" --export "disk=$t/disk"
  p6=${NBDSRV_PORTS[0]} p4=${NBDSRV_PORTS[1]}   # start_nbdsrv may have moved them
  nbdinfo --size "nbd://[::1]:$p6/disk" >/dev/null || fail "IPv6 listener"
  nbdinfo --size "nbd://127.0.0.1:$p4/disk" >/dev/null || fail "listener given as localhost"
  stop_nbdsrv || fail "IPv6 server: exit status $? after SIGTERM"
  NBDSRV_PID=$saved
fi

# SIGINT stops the server like SIGTERM: exit 0, socket gone.
saved=$NBDSRV_PID
start_nbdsrv --unix "$t/int.sock" --export "disk=$t/disk"
nbdinfo --size "nbd+unix:///disk?socket=$t/int.sock" >/dev/null || fail "int.sock"
kill -INT "$NBDSRV_PID"
rc=0; wait "$NBDSRV_PID" || rc=$?
[ $rc -eq 0 ] || fail "SIGINT: exit status $rc, want 0"
[ "$standin" = 1 ] || [ ! -e "$t/int.sock" ] || fail "unix socket left behind after SIGINT"
NBDSRV_PID=$saved

# --- SIGTERM with writes in flight ----------------------------------------
# A client keeps 16 writes in flight; SIGTERM arrives mid-stream.  The server
# must finish what it started, exit 0, and every write it acknowledged must be
# in the file.  The client records what was acknowledged.
python3 - "$t/sock" "$t/acked" <<'PY' &
import socket, struct, sys, os
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def rd(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
rd(18); s.sendall(struct.pack(">I", 3))
name = b"disk"
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 4 + len(name) + 2) +
          struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
while True:
    _, _, rtype, ln = struct.unpack(">QIII", rd(20)); rd(ln)
    if rtype == 1: break
    if rtype & 0x80000000: sys.exit("GO failed")
acked = open(sys.argv[2], "w")
pending = {}
h = 0
try:
    for round in range(100000):
        while len(pending) < 16:
            h += 1
            off = (h % 4096) * 4096
            data = struct.pack(">Q", h) * 512
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, h, off, 4096) + data)
            pending[h] = off
        magic, err, hh = struct.unpack(">IIQ", rd(16))
        off = pending.pop(hh)
        if err == 0:
            acked.write("%d %d\n" % (off, hh)); acked.flush()
except (EOFError, ConnectionResetError, BrokenPipeError):
    pass
PY
client=$!
cleanup_push "kill $client"
wait_for "[ \$(wc -l <'$t/acked' 2>/dev/null || echo 0) -gt 2000 ]" 30 || fail "writer made no progress"
rc=0; stop_nbdsrv || rc=$?
[ $rc -eq 0 ] || fail "SIGTERM: exit status $rc, want 0"
wait $client || true
python3 - "$t/acked" "$t/disk" <<'PY' || fail "an acknowledged write is missing after SIGTERM"
import struct, sys
last = {}
for line in open(sys.argv[1]):
    off, h = map(int, line.split())
    last[off] = max(h, last.get(off, 0))
with open(sys.argv[2], "rb") as f:
    bad = 0
    for off, h in last.items():
        f.seek(off)
        got = struct.unpack(">Q", f.read(8))[0]
        # A later write may have been written but not acknowledged.
        if got < h: bad += 1
print("# %d acknowledged writes, %d offsets checked, %d missing" %
      (sum(1 for _ in open(sys.argv[1])), len(last), bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
# It stopped accepting: nothing listens on the socket any more.
if nbdinfo --size "nbd+unix:///disk?socket=$t/sock" >/dev/null 2>&1; then
  fail "server still accepts after exit"
fi

# --- SIGTERM in the middle of 8 busy connections (unix and TCP) -------------
# Exit 0 with every request drained or dropped cleanly (ASan checks the rest).
# (nbdkit 1.32 aborts here — connections.c assertion — so not for the stand-in.)
bin=$TEST_BIN_DIR/nbdsrv/nbd_client_test
if [ -x "$bin" ] && [ "$standin" != 1 ]; then
  truncate -s 64M "$t/busy-disk"; truncate -s 1M "$t/busy-other"
  bport=$(free_port)
  blisten=(--listen "127.0.0.1:$bport")
  saved=$NBDSRV_PID
  start_nbdsrv --unix "$t/busy.sock" "${blisten[@]}" --export "disk=$t/busy-disk" \
    --export "other=$t/busy-other"
  btcp="tcp:127.0.0.1:$NBDSRV_PORT"   # start_nbdsrv may have moved it
  NBD_TEST_ONLY=stress "$bin" "$t/busy.sock" "$t/busy.sock" 1 $btcp >"$t/busy.out" 2>&1 &
  busyc=$!
  cleanup_push "kill $busyc"
  wait_for "grep -q seed= '$t/busy.out'" 30 || fail "busy client did not start"
  sleep 0.3
  rc=0; stop_nbdsrv || rc=$?
  [ $rc -eq 0 ] || fail "SIGTERM under load: exit status $rc, want 0"
  wait $busyc || true
  NBDSRV_PID=$saved
fi

# --- SIGKILL: what a FLUSH covered is in the file ----------------------------
# Writes stream with a FLUSH every 256; the server is killed with SIGKILL.
# Every write acknowledged before a FLUSH was sent whose reply came back
# must be in the file (DESIGN.md invariant 1).
start_nbdsrv --unix "$t/kill.sock" --export "disk=$t/disk"
python3 - "$t/kill.sock" "$t/kacked" <<'PY' &
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def rd(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
rd(18); s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 10) + struct.pack(">I", 4) +
          b"disk" + struct.pack(">H", 0))
while True:
    _, _, rtype, ln = struct.unpack(">QIII", rd(20)); rd(ln)
    if rtype == 1: break
    if rtype & 0x80000000: sys.exit("GO failed")
log = open(sys.argv[2], "w")
pending, h, acked, flush_at = {}, 0, 0, {}
try:
    while True:
        while len(pending) < 16:
            h += 1
            if h % 256 == 0:
                s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 3, h, 0, 0))
                pending[h] = None
                flush_at[h] = acked
                continue
            off = (h % 4093) * 4096
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, h, off, 4096) +
                      struct.pack(">Q", h) * 512)
            pending[h] = off
        _, err, hh = struct.unpack(">IIQ", rd(16))
        off = pending.pop(hh)
        if err:
            continue
        if off is None:
            log.write("FLUSHED %d\n" % flush_at.pop(hh))
        else:
            log.write("%d %d\n" % (off, hh))
            acked += 1
        log.flush()
except (EOFError, ConnectionResetError, BrokenPipeError):
    pass
PY
kwriter=$!
cleanup_push "kill $kwriter"
wait_for "[ \$(grep -c FLUSHED '$t/kacked' 2>/dev/null || echo 0) -gt 20 ]" 60 ||
  fail "writer with flushes made no progress"
kill -KILL "$NBDSRV_PID"
wait "$NBDSRV_PID" 2>/dev/null || true
wait "$kwriter" || true
python3 - "$t/kacked" "$t/disk" <<'PY' || fail "a write covered by a completed FLUSH is missing after SIGKILL"
import struct, sys
writes, covered = [], 0
for line in open(sys.argv[1]):
    a, b = line.split()
    if a == "FLUSHED":
        covered = max(covered, int(b))
    else:
        writes.append((int(a), int(b)))
last = {}
for off, h in writes[:covered]:
    last[off] = max(h, last.get(off, 0))
bad = 0
with open(sys.argv[2], "rb") as f:
    for off, h in last.items():
        f.seek(off)
        if struct.unpack(">Q", f.read(8))[0] < h:
            bad += 1
print("# SIGKILL: %d writes acknowledged, %d covered by a FLUSH, %d missing" %
      (len(writes), covered, bad), file=sys.stderr)
sys.exit(1 if bad or covered == 0 else 0)
PY
rm -f "$t/kill.sock"

# --- SIGTERM while a client never reads its replies --------------------------
# A client that stopped reading must not make the shutdown impossible.
# (nbdkit 1.32 never exits here, even on a second SIGTERM: skipped for it.)
if [ "$standin" != 1 ]; then
start_nbdsrv --unix "$t/stuck.sock" --export "disk=$t/disk"
python3 - "$SRC_DIR/test/nbdsrv" "$t/stuck.sock" <<'PY' &
import sys, time
sys.path.insert(0, sys.argv[1])
import nbd_raw as n
n.sock_path = sys.argv[2]
c = n.Conn(); c.handshake(); c.go("disk"); c.s.settimeout(2)
try:
    for j in range(512):
        c.request(n.CMD_READ, (j % 16) * n.MiB, n.MiB)
except Exception:
    pass
open(sys.argv[2] + ".ready", "w").close()
time.sleep(120)
PY
stuck=$!
cleanup_push "kill $stuck"
wait_for "[ -e '$t/stuck.sock.ready' ]" 30 || fail "stuck client did not start"
kill -TERM "$NBDSRV_PID"
# The first SIGTERM may wait for the stuck client; a second one drops it.
# (A hang check, not a timing assertion: 60 s is far beyond any drain.)
if ! wait_for "! kill -0 $NBDSRV_PID" 3; then
  kill -TERM "$NBDSRV_PID"
  wait_for "! kill -0 $NBDSRV_PID" 60 ||
    fail "a second SIGTERM did not stop the server with a stuck client in 60 s"
fi
rc=0; wait "$NBDSRV_PID" || rc=$?
[ $rc -eq 0 ] || fail "SIGTERM with a stuck client: exit status $rc, want 0"
kill "$stuck" 2>/dev/null || true
fi

# --- startup and usage errors ---------------------------------------------
[ "$standin" = 1 ] && exit 0     # nbdkit's messages and codes differ
bad=0
expect_exit() {   # expect_exit CODE WHAT ARGS… — serve must exit CODE with a message
  local want=$1 what=$2 rc=0; shift 2
  timeout 20 "$NBDSRV" serve "$@" >"$t/err" 2>&1 </dev/null || rc=$?
  ! grep -qiE 'sanitizer|segmentation|core dumped' "$t/err" || { cat "$t/err" >&2; fail "$what: crashed"; }
  [ -s "$t/err" ] || fail "$what: no message"
  [ $rc -eq "$want" ] || { echo "FAIL: $what: exit $rc, want $want: $(head -1 "$t/err")" >&2; bad=1; }
}
expect_exit 2 "unknown option" --bogus --export "d=$t/disk" --unix "$t/s1"
expect_exit 2 "export without =" --export "$t/disk" --unix "$t/s1"
expect_exit 2 "bad --threads" --threads abc --export "d=$t/disk" --unix "$t/s1"
expect_exit 2 "bad --log-level" --log-level loud --export "d=$t/disk" --unix "$t/s1"
expect_exit 2 "bad --listen" --listen "127.0.0.1:99999" --export "d=$t/disk"
expect_exit 2 "unknown export flag" --export "d=$t/disk,bogus" --unix "$t/s1"
# NBD strings (names, descriptions) MUST be no longer than 4096 bytes.
long=$(printf 'x%.0s' $(seq 5000))
expect_exit 2 "export name over 4096 bytes" --export "$long=$t/disk" --unix "$t/s1"
expect_exit 2 "export description over 4096 bytes" --export "d=$t/disk,desc=$long" --unix "$t/s1"
expect_exit 1 "missing export file" --export "d=$t/nonexistent" --unix "$t/s1"
expect_exit 1 "unix socket in a missing directory" --export "d=$t/disk" --unix "$t/no/dir/s"
python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)' >"$t/busy" &
busy=$!
cleanup_push "kill $busy"
wait_for "[ -s '$t/busy' ]" 60 || fail "the process holding a port did not start"
expect_exit 1 "port in use" --listen "127.0.0.1:$(cat "$t/busy")" --export "d=$t/disk"
[ $bad -eq 0 ] || fail "wrong exit status for a startup or usage error"
