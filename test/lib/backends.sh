# test/lib/backends.sh — start, break and stop storage backends for tests.
#
#   source "$SRC_DIR/test/functions.sh"
#   source "$SRC_DIR/test/lib/backends.sh"
#   backends_start redis 24 "$t"        # or: backends_start zdb 4 "$t" (needs zdb)
#   backends_config "$t/pool.conf" 16 4 [zones]   # write a pool config for them
#   backend_stop 3 / backend_cont 3     # SIGSTOP / SIGCONT backend 3
#   backend_kill 3                      # SIGKILL it (its data is lost)
#   backend_restart_empty 3             # kill, wipe its data, start again
#   backend_restart 3                   # kill and start again, data kept
#   backend_cmd 3 DBSIZE                # one command (after SELECT/AUTH)
#   backends_alive                      # fail if a server died unasked
#
# Backends are numbered 0..N-1 and named b00, b01, …; BACKEND_PORT[i],
# BACKEND_PID[i], BACKEND_DIR[i] describe each one.  Every server is killed
# at exit (cleanup_push), even when the test fails.  Servers listen on
# 127.0.0.1 ports chosen free at start.  The kind "zdb" uses $ZDB or `zdb`
# on the PATH (the test is skipped with exit 77 and a message otherwise).
#
# Extra redis-server arguments for every instance: BACKEND_REDIS_ARGS
# (e.g. "--requirepass s3cret"); extra zdb arguments: BACKEND_ZDB_ARGS
# (e.g. "--mode seq" after the default "--mode user").
#
# The kind daemon-level tests run on: $BACKEND_TEST_KIND, from the
# environment's NBDSRV_TEST_BACKEND (redis, the default, or zdb):
#   requires_test_backend; backends_start "$BACKEND_TEST_KIND" 6 "$t"
# With zdb, BACKEND_PASSWORD is a namespace password: the namespace
# ($BACKEND_NS, default "nbdsrv" with a password, else "default") is
# created private with that password at every (re)start that finds it
# missing; with redis it is the requirepass (set BACKEND_REDIS_ARGS too).

BACKEND_KIND=
BACKEND_N=0
BACKEND_PORT=()
BACKEND_PID=()
BACKEND_DIR=()
BACKEND_KILLED=()
: "${BACKEND_REDIS_ARGS:=}"
BACKEND_TEST_KIND=${NBDSRV_TEST_BACKEND:-redis}

# requires_test_backend — skip unless the servers of $BACKEND_TEST_KIND
# can be started (exit 77), fail on an unknown NBDSRV_TEST_BACKEND.
requires_test_backend() {
  case $BACKEND_TEST_KIND in
    redis) requires redis-server python3 ;;
    zdb) requires_zdb; requires python3 ;;
    *) fail "NBDSRV_TEST_BACKEND=$BACKEND_TEST_KIND: expected redis or zdb" ;;
  esac
}

# backend_ns — the zdb namespace the config names (see above).
backend_ns() {
  if [ -n "${BACKEND_NS:-}" ]; then echo "$BACKEND_NS"
  elif [ -n "${BACKEND_PASSWORD:-}" ]; then echo nbdsrv
  else echo default; fi
}

# requires_zdb — skip unless a 0-db binary is available; sets ZDB.
requires_zdb() {
  if [ -n "${ZDB:-}" ] && [ -x "$ZDB" ]; then return 0; fi
  if command -v zdb >/dev/null 2>&1; then ZDB=$(command -v zdb); return 0; fi
  echo "SKIP: $(basename "$0"): no 0-db server (set ZDB=/path/to/zdb or put zdb on the PATH)" >&2
  exit 77
}

_backend_ping() {  # _backend_ping PORT — true when the server answers PING
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"*1\r\n$4\r\nPING\r\n")
d = s.recv(64)
sys.exit(0 if d.startswith(b"+PONG") or d.startswith(b"-NOAUTH") else 1)
PY
}

# _backend_py PORT KIND NS PASSWORD MODE [ARGS…] — MODE "cmd": log in (zdb:
# SELECT NS [PASSWORD]; redis: AUTH PASSWORD) and print the reply to the
# command ARGS (an integer or a bulk as text, an error as "-text", nil as
# "(nil)"); MODE "ns": create the zdb namespace NS if missing, private with
# PASSWORD.
_backend_py() {
  python3 - "$@" <<'PY'
import socket, sys
port, kind, ns, pw, mode, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
def reply():
    line = f.readline().rstrip(b"\r\n")
    t, rest = line[:1], line[1:]
    if t in (b"+", b"-", b":"): return (t + rest if t == b"-" else rest).decode()
    if t == b"$":
        n = int(rest)
        if n < 0: return "(nil)"
        d = f.read(n + 2)[:n]
        return d.decode(errors="replace")
    if t == b"*":
        return [reply() for _ in range(max(int(rest), 0))]
    raise SystemExit("bad reply %r" % line)
def cmd(*a):
    out = b"*%d\r\n" % len(a)
    for x in a:
        x = x.encode() if isinstance(x, str) else x
        out += b"$%d\r\n%s\r\n" % (len(x), x)
    s.sendall(out)
    return reply()
if mode == "ns":
    if cmd("SELECT", ns, *([pw] if pw else [])) == "OK": sys.exit(0)
    r = cmd("NSNEW", ns)
    if r != "OK": sys.exit("NSNEW %s: %s" % (ns, r))
    if pw:
        for a in (("password", pw), ("public", "0")):
            r = cmd("NSSET", ns, *a)
            if r != "OK": sys.exit("NSSET %s %s: %s" % (ns, a[0], r))
    sys.exit(0)
if kind == "zdb":
    if ns != "default":
        r = cmd("SELECT", ns, *([pw] if pw else []))
        if r != "OK": sys.exit("SELECT %s: %s" % (ns, r))
elif pw:
    r = cmd("AUTH", pw)
    if r != "OK": sys.exit("AUTH: %s" % r)
r = cmd(*args)
print(r if not isinstance(r, list) else " ".join(map(str, r)))
PY
}

# backend_cmd I ARGS… — send one command to backend I (logged in) and print
# the reply (see _backend_py).
backend_cmd() {
  local i=$1; shift
  _backend_py "${BACKEND_PORT[$i]}" "$BACKEND_KIND" "$(backend_ns)" "${BACKEND_PASSWORD:-}" cmd "$@"
}

# backend_keys I — how many keys backend I holds, not counting the pool's
# canary key.
backend_keys() {
  local n c
  n=$(backend_cmd "$1" DBSIZE) && c=$(backend_cmd "$1" EXISTS nbdsrv.canary) ||
    fail "backend $1: cannot count keys"
  echo $((n - c))
}

# _backend_up I — true when backend I's own process listens on its port
# and answers PING (not another test's server that won the port: free_port
# closes its probe socket, so a port can be taken again before our server
# binds it, by another test's server or any outgoing connection).
_backend_up() {
  ss -Hltnp "sport = :${BACKEND_PORT[$1]}" 2>/dev/null | grep -q "pid=${BACKEND_PID[$1]}," &&
    _backend_ping "${BACKEND_PORT[$1]}"
}

# _backend_ready I [newport] — wait until backend I answers; on zdb create
# its namespace when it has none.  With "newport" (a first start), a server
# that exits at start (its port was taken meanwhile) is started again on
# another free port, up to 3 times.
_backend_ready() {
  local i=$1 try
  for ((try = 0; ; try++)); do
    wait_for "_backend_up $i || ! backend_running $i" 30 && _backend_up "$i" && break
    if [ "${2:-}" = newport ] && [ "$try" -lt 3 ] && ! backend_running "$i"; then
      info "backend $i exited at start on port ${BACKEND_PORT[$i]} (taken?): $(tail -c 300 "${BACKEND_DIR[$i]}/server.log")"
      wait "${BACKEND_PID[$i]}" 2>/dev/null || true
      BACKEND_PORT[$i]=$(free_port)
      _backend_launch "$i"
      continue
    fi
    cat "${BACKEND_DIR[$i]}/server.log" >&2
    fail "backend $i (pid ${BACKEND_PID[$i]}, port ${BACKEND_PORT[$i]}) did not answer PING"
  done
  if [ "$BACKEND_KIND" = zdb ] && [ "$(backend_ns)" != default ]; then
    _backend_py "${BACKEND_PORT[$i]}" zdb "$(backend_ns)" "${BACKEND_PASSWORD:-}" ns ||
      fail "backend $i: cannot create namespace $(backend_ns)"
  fi
}

_backend_launch() {  # _backend_launch I
  local i=$1 port=${BACKEND_PORT[$1]} dir=${BACKEND_DIR[$1]}
  mkdir -p "$dir"
  case $BACKEND_KIND in
    redis)
      # shellcheck disable=SC2086
      redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --daemonize no --protected-mode no --loglevel warning \
        $BACKEND_REDIS_ARGS >"$dir/server.log" 2>&1 &
      ;;
    zdb)
      "$ZDB" --listen 127.0.0.1 --port "$port" --data "$dir/data" --index "$dir/index" \
        --mode user ${BACKEND_ZDB_ARGS:-} >"$dir/server.log" 2>&1 &
      ;;
  esac
  BACKEND_PID[$i]=$!
  BACKEND_KILLED[$i]=
  cleanup_push "kill -CONT ${BACKEND_PID[$i]}; kill -9 ${BACKEND_PID[$i]}; wait ${BACKEND_PID[$i]}"
}

# backends_start KIND N DIR — start N servers of KIND (redis | zdb) under DIR.
backends_start() {
  local kind=$1 n=$2 top=$3 i
  case $kind in
    redis) requires redis-server python3 ;;
    zdb) requires_zdb; requires python3 ;;
    *) fail "backends_start: unknown kind $kind" ;;
  esac
  BACKEND_KIND=$kind
  BACKEND_N=$n
  for ((i = 0; i < n; i++)); do
    BACKEND_PORT[$i]=$(free_port)
    BACKEND_DIR[$i]=$top/backend$i
    _backend_launch "$i"
  done
  for ((i = 0; i < n; i++)); do _backend_ready "$i" newport; done
}

# backends_config FILE K M [ZONES [EXTRA-POOL-LINES]] — a pool config for the
# running backends; backend i is in zone z(i % ZONES) (default: one zone each).
backends_config() {
  local file=$1 k=$2 m=$3 zones=${4:-0} extra=${5:-} i
  {
    echo "# written by test/lib/backends.sh"
    echo "[pool]"
    echo "k = $k"
    echo "m = $m"
    [ -z "$extra" ] || printf '%s\n' "$extra"
    for ((i = 0; i < BACKEND_N; i++)); do
      printf '\n[backend b%02d]\nkind = %s\naddress = 127.0.0.1:%s\n' "$i" "$BACKEND_KIND" \
        "${BACKEND_PORT[$i]}"
      if [ "$BACKEND_KIND" = zdb ]; then echo "namespace = $(backend_ns)"; fi
      if [ -n "${BACKEND_PASSWORD:-}" ]; then echo "password = $BACKEND_PASSWORD"; fi
      if [ "$zones" -gt 0 ]; then echo "zone = z$((i % zones))"; fi
    done
  } >"$file"
}

backend_stop() { kill -STOP "${BACKEND_PID[$1]}"; }
backend_cont() { kill -CONT "${BACKEND_PID[$1]}"; }
backend_kill() {
  BACKEND_KILLED[$1]=1
  kill -9 "${BACKEND_PID[$1]}" 2>/dev/null || true
  wait "${BACKEND_PID[$1]}" 2>/dev/null || true
}
# backend_running I — true while backend I's process exists and is not a
# zombie.
backend_running() {
  local st
  st=$(sed 's/.*) //' "/proc/${BACKEND_PID[$1]}/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ] && [ "${st%% *}" != X ]
}

# backends_alive — fail when a server the test did not kill has exited (a
# crash, or 0-db's death by SIGPIPE when a client closes a socket with
# replies pending), showing the end of its log.
backends_alive() {
  local i
  for ((i = 0; i < BACKEND_N; i++)); do
    [ -z "${BACKEND_KILLED[$i]:-}" ] || continue
    backend_running "$i" && continue
    tail -c 2000 "${BACKEND_DIR[$i]}/server.log" >&2 || true
    fail "backend $i ($BACKEND_KIND, pid ${BACKEND_PID[$i]}) died"
  done
}

# backend_restart_empty I — the server comes back on the same port, blank.
backend_restart_empty() {
  backend_kill "$1"
  rm -rf "${BACKEND_DIR[$1]}"
  _backend_launch "$1"
  _backend_ready "$1"
}
# backend_restart I — kill backend I and start it again on the same port
# with its data (redis keeps nothing: it runs without persistence).
backend_restart() {
  backend_kill "$1"
  _backend_launch "$1"
  _backend_ready "$1"
}

# backends_pause / backends_resume — SIGSTOP / SIGCONT every server.
backends_pause() { local i; for ((i = 0; i < BACKEND_N; i++)); do backend_stop "$i"; done; }
backends_resume() { local i; for ((i = 0; i < BACKEND_N; i++)); do backend_cont "$i"; done; }
# backends_resume_after_exit — the pool back after a client exited with
# requests in flight to the paused servers: 0-db dies of SIGPIPE when it
# answers a closed client, so zdb servers are restarted with their data.
backends_resume_after_exit() {
  local i
  if [ "$BACKEND_KIND" = zdb ]; then
    for ((i = 0; i < BACKEND_N; i++)); do backend_restart "$i"; done
  else
    backends_resume
  fi
}
