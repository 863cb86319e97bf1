#!/usr/bin/env bash
# scrub.sh — the pool heals itself (cache/ssdscrub.c): 6 redis backends,
# k=4 m=2 (every chunk version has one shard on each), 256 KiB chunks.
#  1. 8 MiB of known data, `vol sync`, restart with the cache file deleted
#     (the repairs must fetch, and rebuild); backend 0 loses everything
#     (FLUSHALL), backend 1 loses a few shard keys (DEL); `nbdsrv scrub
#     --wait` counts them and queues repairs; repair_pending drains to 0;
#     restart with the cache file deleted, KILL backends 2 and 3: every
#     byte reads back from the pool (old code: 3 shards left of some
#     chunks, the read fails).
#  2. backends 2 and 3 come back empty: the daemon notices (canary gone)
#     and scrubs by itself; the repairs drain.
#  2b. the pool has exactly k+m backends: backend 5 killed, a scrub cannot
#     repair anything (a new version needs k+m distinct backends), and
#     must not hang: `scrub --wait` ends with exit 3 (degraded), every
#     version counted as waiting, none queued, status says so; a deep
#     scrub with --rate shows the rate and is throttled; backend 5 comes
#     back (empty): the daemon scrubs by itself and repairs it.
#  3. one shard value on backend 4 overwritten with garbage: a shallow
#     scrub does not see it, `scrub --deep` does (bad >= 1) and it is
#     repaired: restart with the cache file deleted, KILL backends 0 and 1,
#     every byte reads back.
#  4. `scrub --wait` following a deep scrub across a daemon restart (the
#     CLI held stopped meanwhile) ends with exit 1 instead of polling the
#     new daemon forever; also when it joined the daemon's first scrub
#     (runs 0), instead of exiting 0 with the new daemon's empty figures.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires nbdcopy qemu-io python3 cmp redis-server
t=$(mktempdir)
ctl=$t/cache/nbdsrv.ctl
uri() { echo "nbd+unix:///$1?socket=$t/sock"; }
MiB=$((1 << 20))
NCHUNK=32       # 8 MiB / 256 KiB: one shard of each on every backend

# rk I OP N — on redis backend I: "del" N shard keys, or "garble" N shard
# values (SET to garbage); prints how many.  Keys are binary: raw RESP.
rk() {
  python3 - "${BACKEND_PORT[$1]}" "$2" "$3" <<'PY'
import socket, sys
port, op, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
def reply():
    line = f.readline().rstrip(b"\r\n")
    t, rest = line[:1], line[1:]
    if t in (b"+", b"-", b":"): return rest
    if t == b"$":
        k = int(rest)
        return None if k < 0 else f.read(k + 2)[:k]
    if t == b"*": return [reply() for _ in range(int(rest))]
    raise SystemExit("bad reply %r" % line)
def cmd(*a):
    out = b"*%d\r\n" % len(a)
    for x in a:
        x = x.encode() if isinstance(x, str) else x
        out += b"$%d\r\n%s\r\n" % (len(x), x)
    s.sendall(out)
    return reply()
keys = sorted(k for k in cmd("KEYS", "*") if k != b"nbdsrv.canary")[:n]
for k in keys:
    if op == "del": cmd("DEL", k)
    else: cmd("SET", k, b"garbage " * 100)
print(len(keys))
PY
}
# st EXPR — a Python expression over `status --json` (j), e.g. scrub counts.
st() {
  "$NBDSRV" status --control "$ctl" --json >"$t/st.json" || return 1
  jq_py "$t/st.json" "$1"
}
SC="j['volumes']['scrub']"
# restart_cold — stop the daemon, delete the cache file, start again.
restart_cold() {
  local rc=0
  stop_nbdsrv || rc=$?
  [ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
  rm -f "$t/cache/cache.img"
  NBDSRV_LOG=$t/serve$1.log
  start_nbdsrv --config "$t/pool.conf" --unix "$t/sock"
  wait_for "[ -S '$ctl' ]" 30 || fail "no control socket after restart"
}
readback() {
  nbdcopy "$(uri v)" "$t/got" || fail "$1: nbdcopy from v failed"
  cmp "$t/got" "$t/img" || fail "$1: v reads back differently"
  qemu_io_ok -f raw -c "read -P 0 8M 1M" "$(uri v)" || fail "$1: qemu-io read of the hole"
}

backends_start redis 6 "$t"
"$NBDSRV" key generate "$t/pool.key" >/dev/null || fail "key generate"
backends_config "$t/pool.conf" 4 2 0 "chunk_size = 256K
key_file = $t/pool.key
cache_path = $t/cache
cache_size = 24M
cache_mode = writeback"
NBDSRV_LOG=$t/serve1.log
start_nbdsrv --config "$t/pool.conf" --unix "$t/sock" --create-volume v=16M
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket"

# --- usage errors ------------------------------------------------------------
rc=0; "$NBDSRV" scrub --bogus >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "scrub --bogus: exit $rc"

# --- 1. lost and deleted shards ---------------------------------------------
head -c $((8 * MiB)) /dev/urandom >"$t/img"
nbdcopy "$t/img" "$(uri v)" || fail "nbdcopy into v"
truncate -s 16M "$t/img"
"$NBDSRV" vol --control "$ctl" sync >/dev/null || fail "vol sync"
for i in 0 1 4; do
  wait_for "[ \$(backend_keys $i) -eq $NCHUNK ]" 30 ||
    fail "backend $i holds $(backend_keys $i) shards, want $NCHUNK"
done
# cold cache: the repairs must fetch each chunk (rebuilding it when a data
# shard was on backend 0)
restart_cold 2
fetches0=$(st "j['volumes']['cache']['fetches']")
backend_cmd 0 FLUSHALL >/dev/null || fail "FLUSHALL"
[ "$(rk 1 del 5)" = 5 ] || fail "DEL on backend 1"
"$NBDSRV" scrub --control "$ctl" --wait >"$t/scrub1.out" || fail "scrub --wait: exit $?"
cat "$t/scrub1.out" >&2
grep -q "scrub: done" "$t/scrub1.out" || fail "scrub --wait printed no result"
[ "$(st "$SC['missing']")" -ge $((NCHUNK + 5)) ] || fail "scrub: $(st "$SC") (want >= $((NCHUNK + 5)) missing)"
[ "$(st "$SC['queued']")" = $NCHUNK ] || fail "scrub queued $(st "$SC['queued']"), want $NCHUNK"
[ "$(st "$SC['checked'] >= $SC['total'] and $SC['total'] >= $NCHUNK")" = 1 ] ||
  fail "scrub: checked/total wrong: $(st "$SC")"
wait_for "[ \$(st \"$SC['repair_pending']\") = 0 ]" 60 || fail "repairs did not drain: $(st "$SC")"
[ "$(st "j['volumes']['cache']['fetches'] >= $fetches0 + $NCHUNK")" = 1 ] ||
  fail "the repairs of objects not in the cache did not fetch them: $(st "j['volumes']['cache']")"
"$NBDSRV" status --control "$ctl" | grep -q "^scrub: done" || fail "status shows no scrub line"
restart_cold 3
backend_kill 2
backend_kill 3
readback "after scrub, 2 other backends killed"
info "part 1: every byte read back with backends 2 and 3 dead"

# --- 2. backends come back empty: the daemon scrubs by itself ----------------
runs0=$(st "$SC['runs']")
backend_restart_empty 2
backend_restart_empty 3
wait_for "grep -q 'emptied: scrubbing' '$NBDSRV_LOG'" 30 || fail "no automatic scrub after an emptied backend"
# (a scrub started while only one of them is back finds every version
# waiting for k+m backends up, and the daemon scrubs again once both are)
wait_for "[ \$(st \"$SC['runs'] > $runs0 and not $SC['running'] and $SC['repair_pending'] == 0 and $SC['waiting'] == 0\") = 1 ]" 60 ||
  fail "automatic scrub: $(st "$SC")"
[ "$(st "$SC['queued']")" -ge 1 ] || fail "automatic scrub queued nothing: $(st "$SC")"
for i in 2 3; do
  wait_for "[ \$(backend_keys $i) -eq $NCHUNK ]" 30 ||
    fail "backend $i holds $(backend_keys $i) shards after the repair, want $NCHUNK"
done
info "part 2: automatic scrub repaired backends 2 and 3"

# --- 2b. one backend down in a pool of exactly k+m: no stall -----------------
backend_kill 5
# exit 3 and every version waiting once the daemon's pool sees backend 5
# down (at once: its connection is refused); a scrub that raced the notice
# (shards asked of it while it still looked up) is run again
scrub_degraded() {
  local rc=0
  "$NBDSRV" scrub --control "$ctl" --wait "$@" >"$t/scrub2b.out" 2>"$t/scrub2b.err" || rc=$?
  echo "$rc" >"$t/scrub2b.rc"
  [ "$rc" = 3 ] && [ "$(st "$SC['waiting']")" = $NCHUNK ]
}
scrub_2b_failed() {
  cat "$t/scrub2b.out" "$t/scrub2b.err" >&2
  fail "$1: last exit $(cat "$t/scrub2b.rc"), $(st "$SC")"
}
wait_for scrub_degraded 30 || scrub_2b_failed "scrub with backend 5 down never said degraded"
cat "$t/scrub2b.out" "$t/scrub2b.err" >&2
grep -q "degraded: $NCHUNK damaged" "$t/scrub2b.err" || fail "scrub --wait did not say degraded"
[ "$(st "$SC['waiting'] == $NCHUNK and $SC['queued'] == 0 and $SC['down'] == $NCHUNK and $SC['checked'] >= $NCHUNK")" = 1 ] ||
  fail "scrub with backend 5 down: $(st "$SC")"
[ "$(st "$SC['repair_pending']")" = 0 ] || fail "repairs queued that cannot run: $(st "$SC")"
"$NBDSRV" status --control "$ctl" | grep -q "$NCHUNK waiting for k+m backends up" ||
  fail "status does not show the versions waiting: $("$NBDSRV" status --control "$ctl" | grep scrub)"
# a deep scrub with a rate: shown, and the walk is held by it (32 chunks of
# 6 x 64 KiB shards at 4 MiB/s: about 3 s)
rc=0; "$NBDSRV" scrub --control "$ctl" --rate 1x >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "scrub --rate 1x: exit $rc"
rc=0; "$NBDSRV" scrub --control "$ctl" --rate 4M 2>"$t/rate.err" >/dev/null || rc=$?
[ "$rc" = 2 ] && grep -q -- "--deep" "$t/rate.err" ||
  fail "scrub --rate without --deep: exit $rc, $(cat "$t/rate.err")"
wait_for "scrub_degraded --deep --rate 4M" 60 || scrub_2b_failed "deep scrub with backend 5 down"
[ "$(st "$SC['deep'] and $SC['rate'] == 4194304 and $SC['throttled'] > 0 and $SC['bytes'] > 0")" = 1 ] ||
  fail "deep scrub at 4M/s: $(st "$SC")"
"$NBDSRV" status --control "$ctl" | grep -q "at most 4.0M/s" ||
  fail "status does not show the rate: $("$NBDSRV" status --control "$ctl" | grep scrub)"
runs0=$(st "$SC['runs']")
backend_restart_empty 5
wait_for "[ \$(st \"$SC['runs'] > $runs0 and not $SC['running'] and $SC['repair_pending'] == 0 and $SC['waiting'] == 0\") = 1 ]" 90 ||
  fail "no repair after backend 5 came back: $(st "$SC")"
wait_for "[ \$(backend_keys 5) -eq $NCHUNK ]" 30 ||
  fail "backend 5 holds $(backend_keys 5) shards after the repair, want $NCHUNK"
info "part 2b: one backend down: scrub ended degraded, repaired when it came back"

# --- a second scrub while one runs: refused, or followed with --wait ---------
backend_stop 5          # its EXISTS wait: the scrub cannot end meanwhile
cleanup_push "kill -CONT ${BACKEND_PID[5]} 2>/dev/null"
"$NBDSRV" scrub --control "$ctl" >/dev/null || fail "scrub (start): exit $?"
rc=0; "$NBDSRV" scrub --control "$ctl" >"$t/busy.out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "already running" "$t/busy.out" || { cat "$t/busy.out" >&2; fail "second scrub: exit $rc"; }
"$NBDSRV" scrub --control "$ctl" --wait >"$t/join.out" 2>"$t/join.err" &
join=$!
wait_for "grep -q 'following it' '$t/join.err'" 30 || fail "scrub --wait did not join the running scrub"
backend_cont 5
wait $join || fail "scrub --wait (joined): exit $?"
grep -q "scrub: done, 32 of 32" "$t/join.out" || { cat "$t/join.out" "$t/join.err" >&2; fail "joined scrub: no result"; }
rc=0; python3 - "$ctl" >"$t/bad.out" <<'PY' || rc=$?
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"cmd":"scrub","deep":"yes"}\n')
print(s.makefile().readline())
PY
grep -q '"ok":false.*deep' "$t/bad.out" || { cat "$t/bad.out" >&2; fail "scrub with a bad \"deep\": $(cat "$t/bad.out")"; }
wait_for "[ \$(st \"$SC['repair_pending']\") = 0 ]" 60 || fail "repairs after the joined scrub: $(st "$SC")"

# --- 3. a garbage shard: only --deep sees it ---------------------------------
wait_for "[ \$(backend_keys 4) -eq $NCHUNK ]" 30 || fail "backend 4 holds $(backend_keys 4) shards"
[ "$(rk 4 garble 1)" = 1 ] || fail "SET garbage on backend 4"
"$NBDSRV" scrub --control "$ctl" --wait >"$t/scrub3.out" || fail "shallow scrub: exit $?"
[ "$(st "$SC['bad'] == 0 and $SC['queued'] == 0")" = 1 ] || fail "shallow scrub: $(st "$SC")"
"$NBDSRV" scrub --control "$ctl" --deep --wait >"$t/scrub4.out" || fail "scrub --deep: exit $?"
cat "$t/scrub4.out" >&2
[ "$(st "$SC['deep'] and $SC['bad'] == 1 and $SC['queued'] == 1")" = 1 ] || fail "deep scrub: $(st "$SC")"
wait_for "[ \$(st \"$SC['repair_pending']\") = 0 ]" 60 || fail "deep repair did not drain: $(st "$SC")"
restart_cold 4
backend_kill 0
backend_kill 1
readback "after the deep scrub, backends 0 and 1 killed"
info "part 3: the garbage shard was replaced"
# `scrub --wait` across a daemon restart: the scrub it follows is gone
# with the old process; the new daemon's figures (runs from 0, none
# running) must end the wait with an error, not poll forever (a quick
# restart, e.g. systemd's after a crash, can fall between two polls: the
# CLI is held stopped meanwhile).  Rate 1 B/s: the deep scrub never ends.
"$NBDSRV" scrub --control "$ctl" --deep --rate 1 --wait >"$t/rs.out" 2>"$t/rs.err" &
rs=$!
cleanup_push "kill -CONT $rs 2>/dev/null; kill $rs 2>/dev/null"
wait_for "[ \$(st \"$SC['running'] and $SC['deep'] and $SC['rate'] == 1\") = 1 ]" 30 ||
  fail "the deep scrub at 1 B/s did not start: $(st "$SC")"
# restart_under_wait PID OUT LOG WHAT: the `scrub --wait` PID (its output
# in OUT.out/.err) is held stopped while the daemon restarts (log LOG);
# resumed, it must exit 1 saying the daemon restarted
restart_under_wait() {
  local pid=$1 out=$2 what=$4 rc=0
  kill -STOP "$pid"
  stop_nbdsrv || rc=$?
  [ "$rc" = 0 ] || fail "SIGTERM during a $what: exit $rc"
  NBDSRV_LOG=$3
  start_nbdsrv --config "$t/pool.conf" --unix "$t/sock"
  wait_for "[ -S '$ctl' ]" 30 || fail "no control socket after the restart ($what)"
  kill -CONT "$pid"
  wait_for "! kill -0 $pid 2>/dev/null" 30 || fail "scrub --wait ($what) still polls after the daemon restarted"
  rc=0; wait "$pid" || rc=$?
  cat "$out.out" "$out.err" >&2
  [ "$rc" = 1 ] || fail "scrub --wait ($what) across a restart: exit $rc (want 1)"
  grep -q "restarted" "$out.err" || fail "scrub --wait ($what) did not say the daemon restarted"
}
restart_under_wait "$rs" "$t/rs" "$t/serve5.log" "deep scrub"
# the same when it JOINED the scrub (started by someone else) of a daemon
# whose first scrub that is (runs 0): the new daemon's 0 runs, none
# running, is no end of that scrub either (it exited 0 with an empty result)
"$NBDSRV" scrub --control "$ctl" --deep --rate 1 >/dev/null || fail "scrub --deep --rate 1: exit $?"
[ "$(st "$SC['running'] and $SC['runs'] == 0")" = 1 ] || fail "the first deep scrub at 1 B/s: $(st "$SC")"
"$NBDSRV" scrub --control "$ctl" --wait >"$t/rj.out" 2>"$t/rj.err" &
rj=$!
cleanup_push "kill -CONT $rj 2>/dev/null; kill $rj 2>/dev/null"
wait_for "grep -q 'following it' '$t/rj.err'" 30 || fail "scrub --wait did not join the deep scrub"
restart_under_wait "$rj" "$t/rj" "$t/serve6.log" "joined deep scrub"
# a stop while a deep scrub waits for a backend (values of the other
# shards held): a clean exit, nothing leaked
backend_stop 5
"$NBDSRV" scrub --control "$ctl" --deep >/dev/null || fail "scrub --deep before the stop: exit $?"
[ "$(st "$SC['running']")" = 1 ] || fail "the scrub did not wait for the stopped backend: $(st "$SC")"
rc=0; stop_nbdsrv || rc=$?
backend_cont 5
[ "$rc" = 0 ] || fail "SIGTERM during a scrub: exit $rc"
echo "ok"
