# test/functions.sh — shared harness for shell integration tests.
#
#   source "$SRC_DIR/test/functions.sh"
#   requires nbdinfo qemu-io            # exit 77 (skipped) when a tool is missing
#   t=$(mktempdir)                      # removed at exit
#   cleanup_push "kill $pid"            # run at exit, last pushed first, even on failure
#   start_nbdsrv --unix "$t/sock" --export "disk=$t/img"   # waits until it serves
#   fail "what went wrong"              # print to stderr and exit 1
#   jq_py "$t/x.json" 'j["size"]'       # a Python expression over a JSON file
#
# Environment (set by ctest): NBDSRV (the binary), SRC_DIR, BUILD_DIR, TEST_BIN_DIR,
# NBDSRV_TEST_TIMEOUT (ctest's TIMEOUT of the test: the hang guard's limit).
# Every test must clean up after itself even when it fails; this file's EXIT
# trap runs the cleanup stack.

set -euo pipefail

: "${SRC_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${BUILD_DIR:=$SRC_DIR/build}"
: "${NBDSRV:=$BUILD_DIR/nbdsrv/nbdsrv}"
: "${TEST_BIN_DIR:=$BUILD_DIR/test}"
export SRC_DIR BUILD_DIR NBDSRV TEST_BIN_DIR

# Cleanup commands run with their output discarded; one that reports (a
# failed test's daemon log) writes to $_test_err and reads the test's exit
# status in $rc.
_cleanup_cmds=()
exec {_test_err}>&2
cleanup_push() { _cleanup_cmds+=("$*"); }
# _our_child PID — true when PID is a child of this test's shell now.
_our_child() {
  local s
  read -r s 2>/dev/null <"/proc/$1/stat" || return 1
  s=${s##*) }
  [ "${s#* }" != "$s" ] && s=${s#* } && [ "${s%% *}" = "$$" ]
}
# Cleanup commands name processes by pid, often long after those exited and
# were reaped (a daemon stopped mid-test, a restarted backend): with
# pid_max 32768 and the suite's fork rate, such a pid can belong to ANOTHER
# test's daemon or server by then.  During the cleanup, `kill` signals only
# pids that are still children of this shell (options and process groups
# pass as given; with no pid of ours left it does nothing and fails).
_kill_ours() {
  local a args=() n=0
  for a in "$@"; do
    if [[ $a =~ ^[0-9]+$ ]]; then
      _our_child "$a" || continue
      n=$((n + 1))
    fi
    args+=("$a")
  done
  [ "$n" -gt 0 ] || return 1
  builtin kill "${args[@]}"
}
_run_cleanup() {
  local rc=$? i
  kill() { _kill_ours "$@"; }
  for ((i = ${#_cleanup_cmds[@]} - 1; i >= 0; i--)); do
    eval "${_cleanup_cmds[$i]}" >/dev/null 2>&1 || true
  done
  exit $rc
}
trap _run_cleanup EXIT
trap 'exit 130' INT TERM

# A command that ends the test through set -e says which step failed: the
# command, its status and where (file:line(function), innermost first).
# Only in the test's own shell (subshells, e.g. $(...) || true, stay
# quiet) and only while set -e is on.
set -E
_on_err() {
  local rc=$1 cmd=$2 i where=""
  [ "$BASHPID" = "$$" ] && [[ $- == *e* ]] || return 0
  for ((i = 1; i < ${#BASH_SOURCE[@]}; i++)); do
    where+=" ${BASH_SOURCE[$i]##*/}:${BASH_LINENO[$((i - 1))]}${FUNCNAME[$i]:+(${FUNCNAME[$i]})}"
  done
  echo "FAIL: $(basename "$0"): '$cmd' exited $rc at$where" >&2
}
trap '_on_err $? "$BASH_COMMAND"' ERR

fail() { echo "FAIL: $(basename "$0"): $*" >&2; exit 1; }
info() { echo "# $*" >&2; }

# requires CMD… — skip (exit 77) unless every command is on the PATH.
requires() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || { echo "SKIP: $(basename "$0"): needs $c" >&2; exit 77; }
  done
}

# requires_root — skip unless running as root (loop devices, mounts).
requires_root() { [ "$(id -u)" -eq 0 ] || { echo "SKIP: $(basename "$0"): needs root" >&2; exit 77; }; }

# Every temporary file of a test lives under one directory, removed at exit.
# (mktempdir is called as t=$(mktempdir), in a subshell, so it cannot push
# its own cleanup: the parent shell registers this one when it sources us.)
_test_tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbdsrv-test.XXXXXX")
cleanup_push "rm -rf '$_test_tmp'"

# Hang guard: a test still running 30 s before ctest's TIMEOUT
# (NBDSRV_TEST_TIMEOUT, set by nbdsrv_shell_test; default 600) says so, with
# what it was waiting for (the wait_for condition in progress, its running
# processes), and is ended (its cleanup runs, the daemon logs are printed)
# instead of being killed by ctest without a word.
_hang_step=$_test_tmp/.step
_hang_guard() {
  local limit=$1 main=$$ i c
  trap - EXIT ERR INT TERM
  for ((i = 0; i < limit; i += 2)); do
    sleep 2 >/dev/null 2>&1
    kill -0 "$main" 2>/dev/null || exit 0
  done
  {
    echo "HANG: $(basename "$0"): still running after $limit s: ended by the hang guard"
    [ -s "$_hang_step" ] && echo "HANG: waiting for: $(cat "$_hang_step")"
    echo "HANG: its processes:"
    pstree -a -p "$main" 2>&1 || ps -o pid,ppid,etimes,args --ppid "$main"
  } >&2
  kill -TERM "$main" 2>/dev/null
  for c in $(ps -o pid= --ppid "$main"); do
    [ "$c" = "$BASHPID" ] || kill -TERM "$c" 2>/dev/null
  done
  for ((i = 0; i < 10; i++)); do
    sleep 1 >/dev/null 2>&1
    kill -0 "$main" 2>/dev/null || exit 0
  done
  echo "HANG: $(basename "$0"): its cleanup did not end it in 10 s: SIGKILL" >&2
  kill -KILL "$main" 2>/dev/null
}
_hang_limit=$(( ${NBDSRV_TEST_TIMEOUT:-600} - 30 ))
[ "$_hang_limit" -ge 30 ] || _hang_limit=30
_hang_guard "$_hang_limit" </dev/null >/dev/null &
cleanup_push "kill $!"

# mktempdir — a fresh directory removed at exit.
mktempdir() {
  mktemp -d "$_test_tmp/d.XXXXXX"
}

# wait_for COND-COMMAND [TIMEOUT-SECONDS] — poll until the command succeeds.
wait_for() {
  local cond=$1 timeout=${2:-30} i
  printf 'wait_for %s (up to %s s, from %(%T)T)\n' "$cond" "$timeout" -1 >"$_hang_step"
  for ((i = 0; i < timeout * 20; i++)); do
    if eval "$cond" >/dev/null 2>&1; then
      : >"$_hang_step"
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# jq_py FILE EXPR — print a Python expression evaluated over the JSON object
# `j` read from FILE (a bool prints as 1 or 0).
jq_py() {
  python3 - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
r = eval(sys.argv[2])
print(r if not isinstance(r, bool) else int(r))
PY
}

# qemu_io_ok ARGS... — run qemu-io; fail (status 1, its output on stderr)
# when it exits non-zero OR prints "verification failed": some qemu-io
# versions exit 0 on a failed `read -P` pattern check.
qemu_io_ok() {
  local out
  out=$(qemu-io "$@" 2>&1) || { echo "$out" >&2; return 1; }
  if grep -q "verification failed" <<<"$out"; then
    echo "$out" >&2
    return 1
  fi
}

# free_port [HOST] — a TCP port on HOST (default 127.0.0.1; an IPv6 address
# such as ::1 works too) that nothing uses right now.  Taken at random
# BELOW the kernel's ephemeral range: a port from bind(0) is one that the
# next outgoing connection (the daemon's to its backends, any other test's)
# may take as its local port before our server binds it.  Even so the port
# can be taken between this probe and the server's bind (another test's
# server): a server a test starts on it must be started again on another
# port when it exits at start with "Address already in use" (start_nbdsrv
# does; port_listener tells whose the port is).
free_port() {
  python3 - "${1:-127.0.0.1}" <<'PY'
import random, socket, sys
host = sys.argv[1]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randint(10000, lo - 1) if lo > 11000 else 0
    s = socket.socket(fam)
    try:
        s.bind((host, p))
    except OSError:
        continue
    finally:
        s.close()
    if p:
        print(p)
        break
else:
    s = socket.socket(fam); s.bind((host, 0)); print(s.getsockname()[1]); s.close()
PY
}

# port_listener PORT PID — true when process PID itself listens on TCP PORT
# (a connect alone may reach another test's server that won the port).
port_listener() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2,"
}

# start_nbdsrv ARGS… — start `nbdsrv serve ARGS…` in the background, log to
# $NBDSRV_LOG (default: a temp file, printed on failure), set NBDSRV_PID, and
# wait until every --unix socket exists and the daemon itself listens on
# every --listen port.  When it exits at start because a --listen port was
# taken meanwhile (free_port's race), it is started again with new ports
# (free_port on the same host), up to 3 times: the ports finally used are in
# NBDSRV_PORTS (one per --listen, in order) and NBDSRV_PORT (the first) —
# a caller reads its port from there after the call, never from what it
# passed.
start_nbdsrv() {
  local log=${NBDSRV_LOG:-$(mktemp "$_test_tmp/nbdsrv-log.XXXXXX")}
  local args=("$@") try i a prev host port ok
  NBDSRV_LOG=$log
  cleanup_push "[ \"\$rc\" = 0 ] || { echo '--- nbdsrv log ($log, last 50 lines):'; tail -50 '$log'; } >&\$_test_err"
  for ((try = 0; ; try++)); do
    "$NBDSRV" serve "${args[@]}" >"$log" 2>&1 &
    NBDSRV_PID=$!
    cleanup_push "kill -9 $NBDSRV_PID; wait $NBDSRV_PID"
    NBDSRV_PORTS=()
    ok=1 prev=""
    for a in "${args[@]}"; do
      case $prev in
        --unix)
          wait_for "[ -S '$a' ] || ! kill -0 $NBDSRV_PID" 30 && [ -S "$a" ] ||
            { ok=0; break; } ;;
        --listen)
          port=${a##*:}
          NBDSRV_PORTS+=("$port")
          wait_for "port_listener $port $NBDSRV_PID || ! kill -0 $NBDSRV_PID" 30 &&
            port_listener "$port" "$NBDSRV_PID" || { ok=0; break; } ;;
      esac
      prev=$a
    done
    NBDSRV_PORT=${NBDSRV_PORTS[0]:-}
    [ $ok = 1 ] && kill -0 "$NBDSRV_PID" 2>/dev/null && return 0
    # exited (or never served): relaunch on new ports if a port was taken
    if kill -0 "$NBDSRV_PID" 2>/dev/null || [ "$try" -ge 3 ] ||
       ! grep -q "Address already in use" "$log" || ! [[ " ${args[*]} " == *" --listen "* ]]; then
      cat "$log" >&2
      fail "nbdsrv did not start (serve ${args[*]})"
    fi
    info "nbdsrv exited at start, a --listen port was taken: $(grep -m1 "Address already in use" "$log"); new ports"
    wait "$NBDSRV_PID" 2>/dev/null || true
    prev=""
    for i in "${!args[@]}"; do
      if [ "$prev" = --listen ]; then
        a=${args[$i]} host=127.0.0.1
        case $a in \[*\]:*) host=${a%%]*}; host=${host#\[} ;; esac   # [IPv6]:PORT
        args[$i]="${a%:*}:$(free_port "$host")"
      fi
      prev=${args[$i]}
    done
  done
}

# stop_nbdsrv — SIGTERM, wait, and return its exit status.
stop_nbdsrv() {
  kill -TERM "$NBDSRV_PID" 2>/dev/null || true
  local rc=0
  wait "$NBDSRV_PID" || rc=$?
  return $rc
}

# requires_nbd_attach — skip unless nbd_attach can work here: root, nbdfuse,
# fusermount3, losetup, /dev/fuse and loop devices.
requires_nbd_attach() {
  requires_root
  requires nbdfuse fusermount3 losetup
  [ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse" >&2; exit 77; }
  [ -e /dev/loop-control ] || { echo "SKIP: no loop devices" >&2; exit 77; }
}

# nbd_attach N URI — expose an NBD export as a block device: nbdfuse mounts
# it as a file under a fresh directory of this test, a loop device on that
# file (the kernel here has no nbd module).  Sets LOOP[N] (the device),
# FUSEDIR[N] and FUSEPID[N]; cleanup detaches both even on failure, and only
# if they are still ours (a device number or pid freed by nbd_detach may
# belong to another test by then).  nbd_detach N undoes it cleanly.
declare -A LOOP FUSEPID FUSEDIR
nbd_attach() {
  local n=$1 uri=$2 d
  d=$(mktemp -d "$_test_tmp/fuse$1.XXXXXX")
  FUSEDIR[$n]=$d
  nbdfuse -P "$d.pid" "$d/nbd" "$uri" &
  FUSEPID[$n]=$!
  cleanup_push "fusermount3 -u '$d'; grep -qs nbdfuse /proc/${FUSEPID[$n]}/cmdline && kill ${FUSEPID[$n]}"
  wait_for "[ -s '$d.pid' ] && [ -f '$d/nbd' ]" 30 || fail "nbdfuse $uri did not come up"
  LOOP[$n]=$(losetup -f --show --direct-io=off "$d/nbd") || fail "losetup $uri"
  cleanup_push "[ \"\$(losetup -nO BACK-FILE '${LOOP[$n]}')\" = '$d/nbd' ] && losetup -d '${LOOP[$n]}'"
}
nbd_detach() {
  losetup -d "${LOOP[$1]}"
  fusermount3 -u "${FUSEDIR[$1]}"
  wait "${FUSEPID[$1]}" || true
}
