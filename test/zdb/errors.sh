# test/zdb/errors.sh — what a real server's error answers become
# (zdb/conn.c conn_errmap): each condition is induced on a live server and
# `nbdsrv pool check` (write, read back, delete a probe on every backend)
# must name it on b00's line: the errno class, "refused: " for a refusal
# (shown by status, zdb.h zdb_refusal) and the server's own words; a
# transient state (busy, loading, frozen) fails the connection for a
# backoff, never FATAL ("refused" state).  After each case the condition
# is lifted and the probe passes again.
#   redis: OOM (maxmemory 1, noeviction), READONLY (REPLICAOF b01), MISCONF
#          (save on, dir /proc, BGSAVE fails), NOREPLICAS
#          (min-replicas-to-write 1), NOPERM (ACL: -set), BUSY (a script
#          that loops),
#          too many clients (maxclients 1, the slot held), LOADING (DEBUG
#          RELOAD with key-load-delay).
#   0-db:  maxsize 1, lock 1 (when the server has it), worm 1 (DEL),
#          freeze 1 (when the server has it), and "Cannot write data right
#          now": the server's file size limit (RLIMIT_FSIZE, SIGXFSZ
#          ignored) set to its data file's size, i.e. a full disk.
# Sourced by errors-redis.sh / errors-zdb.sh with KIND set.
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires python3

t=$(mktempdir)
if [ "$KIND" = redis ]; then
  requires redis-server
  # CONFIG SET dir (protected) and DEBUG RELOAD need these on redis >= 7
  if redis-server --version | grep -Eq 'v=([7-9]|[1-9][0-9])\.'; then
    BACKEND_REDIS_ARGS="--enable-protected-configs yes --enable-debug-command yes"
  fi
else
  requires_zdb
  requires prlimit
  BACKEND_NS=errors      # NSSET does not apply to the default namespace
  # a write past RLIMIT_FSIZE then fails (EFBIG) instead of killing 0-db;
  # an ignored signal stays ignored across exec
  trap '' XFSZ
fi
backends_start "$KIND" 2 "$t"
backends_config "$t/pool.conf" 1 1 0 "timeout_ms = 5000"

# probe WANT-ERE WHAT — pool check; b00's line must match WANT-ERE.
probe() {
  local want=$1 what=$2 line
  "$NBDSRV" pool check --config "$t/pool.conf" >"$t/out" 2>&1 || true
  line=$(grep '^b00 ' "$t/out") || { cat "$t/out" >&2; fail "$what: no line for b00"; }
  grep -Eq -- "$want" <<<"$line" || { cat "$t/out" >&2; fail "$what: b00 says '$line', want /$want/"; }
  info "$what: $line"
}
probe_ok() {
  "$NBDSRV" pool check --config "$t/pool.conf" >"$t/out" 2>&1 ||
    { cat "$t/out" >&2; fail "after $1: the probe still fails"; }
}
# the connection of a transient failure is down (backoff), not FATAL
not_fatal() {
  "$NBDSRV" pool status --config "$t/pool.conf" --json >"$t/st.json" 2>/dev/null || true
  python3 - "$t/st.json" "$1" <<'PY' || fail "$1: status (above)"
import json, sys
b = json.load(open(sys.argv[1]))["backends"][0]
assert b["name"] == "b00" and b["state"] != "refused", b
print("# %s: status state %s, error %r" % (sys.argv[2], b["state"], b["error"]), file=sys.stderr)
PY
}
cmd_ok() { local r; r=$(backend_cmd "$@") && [ "$r" = OK ] || fail "backend $1: $*: $r"; }
info_has() { local r; r=$(backend_cmd "$1" INFO "$2") && grep -q "^$3" <<<"$r"; }

probe_ok start
if [ "$KIND" = redis ]; then
  # OOM: maxmemory reached with noeviction — a refusal, ENOSPC
  cmd_ok 0 CONFIG SET maxmemory-policy noeviction
  cmd_ok 0 CONFIG SET maxmemory 1
  probe 'FAIL +write failed: No space left on device \(refused: OOM command not allowed' OOM
  cmd_ok 0 CONFIG SET maxmemory 0
  probe_ok OOM

  # READONLY: a replica refuses writes — EROFS
  cmd_ok 0 REPLICAOF 127.0.0.1 "${BACKEND_PORT[1]}"
  cleanup_push "backend_cmd 0 REPLICAOF NO ONE >/dev/null 2>&1 || true"
  wait_for "info_has 0 replication master_link_status:up" 60 || fail "b00 never synced from b01"
  probe "FAIL +write failed: Read-only file system \(refused: READONLY You can't write" READONLY
  cmd_ok 0 REPLICAOF NO ONE
  probe_ok READONLY

  # MISCONF: the last background save failed (stop-writes-on-bgsave-error)
  cmd_ok 0 CONFIG SET save "3600 1"
  cmd_ok 0 CONFIG SET dir /proc     # root may write anywhere, but not a file there
  r=$(backend_cmd 0 BGSAVE); grep -q started <<<"$r" || fail "BGSAVE: $r"
  wait_for "info_has 0 persistence rdb_last_bgsave_status:err" 60 || fail "BGSAVE did not fail"
  probe 'FAIL +write failed: Read-only file system \(refused: MISCONF Redis is configured to save RDB .*\.\.\.\)' MISCONF
  cmd_ok 0 CONFIG SET dir "${BACKEND_DIR[0]}"
  cmd_ok 0 CONFIG SET save ""
  probe_ok MISCONF

  # NOREPLICAS: min-replicas-to-write without replicas — EROFS
  cmd_ok 0 CONFIG SET min-replicas-to-write 1
  cleanup_push "backend_cmd 0 CONFIG SET min-replicas-to-write 0 >/dev/null 2>&1 || true"
  probe 'FAIL +write failed: Read-only file system \(refused: NOREPLICAS Not enough good replicas to write\.\)' NOREPLICAS
  cmd_ok 0 CONFIG SET min-replicas-to-write 0
  probe_ok NOREPLICAS

  # NOPERM: the ACL denies SET — EACCES
  cmd_ok 0 ACL SETUSER default -set
  cleanup_push "backend_cmd 0 ACL SETUSER default +set >/dev/null 2>&1 || true"
  probe 'FAIL +write failed: Permission denied \(refused: NOPERM .*set' NOPERM
  cmd_ok 0 ACL SETUSER default +set
  probe_ok NOPERM

  # BUSY: a script that never ends — transient, even in the handshake
  cmd_ok 0 CONFIG SET busy-reply-threshold 50
  python3 - "${BACKEND_PORT[0]}" >/dev/null 2>&1 <<'PY' &
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n")
s.recv(1024)    # "-ERR ... Script killed" after SCRIPT KILL
PY
  busy_pid=$!
  cleanup_push "backend_cmd 0 SCRIPT KILL >/dev/null 2>&1 || true; kill $busy_pid 2>/dev/null || true"
  wait_for '[[ "$(backend_cmd 0 PING)" == -BUSY* ]]' 60 || fail "the script did not make b00 busy"
  probe 'FAIL +server busy \(BUSY Redis is busy running a script\..*\): Resource temporarily unavailable' BUSY
  not_fatal BUSY
  r=$(backend_cmd 0 SCRIPT KILL); [ "$r" = OK ] || fail "SCRIPT KILL: $r"
  wait "$busy_pid" || true
  probe_ok BUSY

  # too many clients: redis answers the first command with an error and
  # closes — transient
  cmd_ok 0 CONFIG SET maxclients 1
  python3 - "${BACKEND_PORT[0]}" "$t/held" >/dev/null 2>&1 <<'PY' &
import os, socket, sys, time
while True:     # until the slot is ours (the last client may not be gone yet)
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    if s.recv(64).startswith(b"+PONG"):
        break
    s.close()
    time.sleep(0.05)
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.05)
PY
  held_pid=$!
  cleanup_push "rm -f $t/held; kill $held_pid 2>/dev/null || true"
  wait_for "[ -e $t/held ]" 60 || fail "could not hold b00's only client slot"
  probe 'FAIL +server busy \(ERR max number of clients reached\): Resource temporarily unavailable' maxclients
  not_fatal maxclients
  rm -f "$t/held"
  wait "$held_pid" || true
  wait_for '[ "$(backend_cmd 0 CONFIG SET maxclients 10000 2>/dev/null)" = OK ]' 60 ||
    fail "b00: cannot lift maxclients"
  probe_ok maxclients

  # LOADING: while a dataset loads — transient
  r=$(backend_cmd 0 DEBUG POPULATE 3000 errs 64); [ "$r" = OK ] || fail "DEBUG POPULATE: $r"
  cmd_ok 0 CONFIG SET loading-process-events-interval-bytes 1024
  cmd_ok 0 CONFIG SET key-load-delay 5000      # µs per key: 15 s
  (backend_cmd 0 DEBUG RELOAD >/dev/null 2>&1 || true) &
  reload_pid=$!
  cleanup_push "kill $reload_pid 2>/dev/null || true"
  wait_for "info_has 0 persistence loading:1" 60 || fail "b00 never started loading"
  "$NBDSRV" pool check --config "$t/pool.conf" >"$t/out" 2>&1 || true
  line=$(grep '^b00 ' "$t/out") || fail "LOADING: no b00 line: $(cat "$t/out")"
  if info_has 0 persistence loading:1; then    # the probe ran while it loaded
    grep -Eq 'FAIL +server busy \(LOADING Redis is loading the dataset in memory\): Resource temporarily unavailable' <<<"$line" ||
      fail "LOADING: b00 says '$line'"
    info "LOADING: $line"
  else
    info "LOADING: the load ended before the probe was done (loaded machine): not judged ($line)"
  fi
  cmd_ok 0 CONFIG SET key-load-delay 0
  wait_for "info_has 0 persistence loading:0" 120 || fail "b00 still loading"
  wait "$reload_pid" || true
  probe_ok LOADING
else
  ns=$(backend_ns)
  # maxsize: the namespace is full — ENOSPC
  cmd_ok 0 NSSET "$ns" maxsize 1
  probe 'FAIL +write failed: No space left on device \(refused: No space left on this namespace\)' maxsize
  cmd_ok 0 NSSET "$ns" maxsize 0
  probe_ok maxsize

  # lock: temporarily read-only (0-db v2.0.x) — EROFS
  if [ "$(backend_cmd 0 NSSET "$ns" lock 1)" = OK ]; then
    cleanup_push "backend_cmd 0 NSSET $ns lock 0 >/dev/null 2>&1 || true"
    probe 'FAIL +write failed: Read-only file system \(refused: Namespace is temporarily locked \(read-only\)\)' lock
    cmd_ok 0 NSSET "$ns" lock 0
    probe_ok lock
  else
    info "lock: this 0-db has no NSSET lock"
  fi

  # worm: a delete is refused — EROFS
  cmd_ok 0 NSSET "$ns" worm 1
  probe 'FAIL +delete failed: Read-only file system \(refused: Cannot delete a key when namespace is in worm mode\)' worm
  cmd_ok 0 NSSET "$ns" worm 0
  probe_ok worm

  # freeze (0-db v2.0.x): every data command refused for a while — transient
  if [ "$(backend_cmd 0 NSSET "$ns" freeze 1)" = OK ]; then
    cleanup_push "backend_cmd 0 NSSET $ns freeze 0 >/dev/null 2>&1 || true"
    probe 'FAIL +namespace is frozen \(0-db maintenance\): Resource temporarily unavailable' freeze
    not_fatal freeze
    cmd_ok 0 NSSET "$ns" freeze 0
    probe_ok freeze
  else
    info "freeze: this 0-db has no NSSET freeze"
  fi

  # its disk is full: the data file cannot grow — EIO, a refusal
  pid=${BACKEND_PID[0]}
  grep -q '^SigIgn:.*' "/proc/$pid/status" || fail "no /proc/$pid/status"
  df=$(ls "${BACKEND_DIR[0]}/data/$ns"/zdb-data-* | tail -1)
  prlimit --pid "$pid" --fsize="$(stat -c %s "$df"):unlimited" || fail "prlimit"
  cleanup_push "prlimit --pid $pid --fsize=unlimited:unlimited 2>/dev/null || true"
  probe 'FAIL +write failed: Input/output error \(refused: Cannot write data right now\)' "disk full"
  prlimit --pid "$pid" --fsize=unlimited:unlimited || fail "prlimit off"
  probe_ok "disk full"
fi
backends_alive
info "every error answer was classified and quoted"
