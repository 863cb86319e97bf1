#!/usr/bin/env bash
# shutdown_ctl.sh — nothing that waits for a paused pool holds the daemon:
#   1. `vol sync` waits on the cache thread, not on the control thread:
#      while two syncs wait for a paused pool, `status` answers (it hung
#      behind the sync before); both succeed once the pool resumes;
#   2. a sync still waiting at SIGTERM is answered with an error and the
#      daemon exits 0 (ASan build: LSan fails the exit status on a leak);
#      a second sync pipelined behind one is refused (ESHUTDOWN), not
#      started (it held the stop for its 60 s timeout);
#   3. writethrough: a FLUSH waiting for the paused pool at SIGTERM fails
#      (NBD_ESHUTDOWN) once shutdown_flush_timeout_ms is spent, so its
#      connection ends and the daemon exits 0 (it hung, even after a
#      second SIGTERM, before); the write is on the SSD and reads back after
#      a restart with the pool resumed.
# The `timeout`s and wait_for limits are hang guards (tens of seconds, the
# operations take milliseconds), not timings.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 redis-server qemu-io
t=$(mktempdir)
e2e_pool_shutdown "$t"

# 1. status while syncs wait
e2e_start --create-volume v=4M
qemu-io -f raw -c "write -P 0x5a 4k 4k" -c "write -P 0x6b 512k 4k" -c flush "$(e2e_uri v)" \
  >/dev/null || fail "write"
backends_pause
"$NBDSRV" vol sync --timeout 60000 --config "$E2E_CONF" >"$t/sync1.out" 2>&1 &
s1=$!
"$NBDSRV" vol sync --timeout 60000 --config "$E2E_CONF" >"$t/sync2.out" 2>&1 &
s2=$!
cleanup_push "kill $s1 $s2 2>/dev/null"
sleep 1         # let both reach the daemon (not a timing: status must answer anyway)
out=$(timeout 30 "$NBDSRV" status --json --config "$E2E_CONF") ||
  fail "status did not answer while two syncs waited for the paused pool"
kill -0 "$s1" 2>/dev/null && kill -0 "$s2" 2>/dev/null ||
  fail "a sync returned with the pool paused: $(cat "$t"/sync*.out)"
d=$(e2e_stat pool_dirty)
[ "$d" = 2 ] || fail "status while syncs wait: pool_dirty $d, want 2"
backends_resume
r1=0; wait "$s1" || r1=$?
r2=0; wait "$s2" || r2=$?
[ "$r1" = 0 ] && [ "$r2" = 0 ] || fail "syncs after the pool resumed: $r1 $r2: $(cat "$t"/sync*.out)"
[ "$(e2e_stat pool_dirty)" = 0 ] || fail "pool_dirty $(e2e_stat pool_dirty) after the syncs"
info "1: status answered while two syncs waited; both succeeded once the pool resumed"

# 2. a sync waiting at SIGTERM
# The SIGTERM must come once the daemon HAS the syncs (before, they would
# not be waiting: a refused connection or no answer, not what is tested).
# A sync forces the objects dirtied before it: an object waiting for its
# write-back delay (600 s here) stops waiting (wb_waiting), nothing else
# does that — so each sync gets a fresh waiting object to force.
wb_waiting_is() { [ "$(e2e_stat wb_waiting)" = "$1" ]; }
qemu-io -f raw -c "write -P 0x7c 64k 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write 2"
backends_pause
wb_waiting_is 1 || fail "write 2: wb_waiting $(e2e_stat wb_waiting), want 1 (its delay)"
"$NBDSRV" vol sync --timeout 60000 --config "$E2E_CONF" >"$t/sync3.out" 2>&1 &
s3=$!
cleanup_push "kill $s3 2>/dev/null"
wait_for "wb_waiting_is 0" 60 || fail "the sync did not reach the daemon: $(cat "$t/sync3.out")"
kill -0 "$s3" 2>/dev/null || fail "the sync returned with the pool paused: $(cat "$t/sync3.out")"
# (a chunk never written: no fetch from the paused pool)
qemu-io -f raw -c "write -P 0x8e 1M 4k" -c flush "$(e2e_uri v)" >/dev/null || fail "write 3"
wb_waiting_is 1 || fail "write 3: wb_waiting $(e2e_stat wb_waiting), want 1 (its delay; the waiting sync forces only what was dirty before it)"
# two syncs pipelined on one control connection: the second is read only
# after the first is answered (at the stop); it must not start a new wait
# that holds the stop (up to its 60 s timeout) but be refused at once
python3 - "$E2E_CACHE/nbdsrv.ctl" >"$t/sync4.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"cmd":"vol.sync","timeout_ms":60000}\n' * 2)
print("sent", file=sys.stderr, flush=True)
b = b""
while b.count(b"\n") < 2:
    c = s.recv(4096)
    if not c:
        break
    b += c
sys.stdout.write(b.decode())
PY
s4=$!
cleanup_push "kill $s4 2>/dev/null"
wait_for "grep -q sent '$t/sync4.out'" 60 || fail "the pipelined syncs were not sent: $(cat "$t/sync4.out")"
wait_for "wb_waiting_is 0" 60 || fail "the first pipelined sync did not reach the daemon: $(cat "$t/sync4.out")"
kill -0 "$s4" 2>/dev/null || fail "the pipelined syncs returned with the pool paused: $(cat "$t/sync4.out")"
kill -TERM "$E2E_PID"
e2e_wait_exit "SIGTERM with a sync waiting"
[ "$rc" = 0 ] || fail "exit status $rc with a sync waiting at SIGTERM (want 0)"
r3=0; wait "$s3" || r3=$?
cat "$t/sync3.out" >&2
[ "$r3" != 0 ] || fail "the sync waiting at the stop succeeded"
grep -q "daemon is stopping" "$t/sync3.out" || fail "the sync's error does not say the daemon stops"
wait "$s4" || true
cat "$t/sync4.out" >&2
[ "$(grep -c '"errno":108}' "$t/sync4.out")" = 2 ] ||
  fail "two pipelined syncs at the stop: want both refused with ESHUTDOWN (108): $(cat "$t/sync4.out")"
backends_resume_after_exit
info "2: a sync waiting at SIGTERM was answered (error); exit 0"

# 3. writethrough FLUSH waiting at SIGTERM
e2e_set_mode writethrough
e2e_start
backends_pause
# a plain WRITE (acknowledged from the SSD; a chunk never written, so no
# fetch from the pool), then (once the file "go" exists) a FLUSH; prints
# the FLUSH's NBD error
python3 - "$E2E_SOCK" "$t/go" >"$t/q.out" 2>&1 <<'PY' &
import os, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("connection closed")
        b += c
    return b
recv(18)                                        # NBDMAGIC IHAVEOPT flags
s.sendall(struct.pack(">I", 3))                 # FIXED_NEWSTYLE | NO_ZEROES
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 1) + b"v")  # EXPORT_NAME
recv(10)                                        # size, flags
def cmd(typ, cookie, off, data=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, cookie, off, len(data)) + data)
    magic, err, ck = struct.unpack(">IIQ", recv(16))
    assert magic == 0x67446698 and ck == cookie
    return err
print("write", cmd(1, 1, 2 << 20, b"\x3d" * 4096), flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
print("flush", cmd(3, 2, 0), flush=True)
PY
q=$!
cleanup_push "kill $q 2>/dev/null"
# the SIGTERM must come once the daemon has the FLUSH: it forces the
# written object, which waited for its write-back delay until then
wait_for "grep -q '^write' '$t/q.out'" 60 || fail "the WRITE got no reply: $(cat "$t/q.out")"
[ "$(e2e_stat wb_waiting)" -ge 1 ] ||
  fail "writethrough WRITE: wb_waiting $(e2e_stat wb_waiting), want >= 1 (its delay)"
touch "$t/go"
wait_for "wb_waiting_is 0" 60 || fail "the FLUSH did not reach the daemon: $(cat "$t/q.out")"
kill -0 "$q" 2>/dev/null || fail "the writethrough FLUSH returned with the pool paused: $(cat "$t/q.out")"
kill -TERM "$E2E_PID"
e2e_wait_exit "SIGTERM with a writethrough FLUSH waiting for the paused pool"
[ "$rc" = 0 ] || fail "exit status $rc with a FLUSH waiting at SIGTERM (want 0)"
wait "$q" || true
cat "$t/q.out" >&2
grep -qx "write 0" "$t/q.out" || fail "the WRITE before the FLUSH failed"
grep -qx "flush 108" "$t/q.out" || fail "the FLUSH waiting at the stop did not fail with NBD_ESHUTDOWN"
grep -q "FLUSHes still waiting for the pool (writethrough) fail" "$NBDSRV_LOG" || fail "no log line for the failed FLUSHes"
backends_resume_after_exit
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x3d 2M 4k" -c "read -P 0x7c 64k 4k" -c "read -P 0x5a 4k 4k" \
  "$(e2e_uri v)" || fail "read back after the stop"
e2e_stop
info "3: a writethrough FLUSH waiting at SIGTERM failed (ESHUTDOWN); exit 0; data intact"
