# test/lib/backends.sh — start, break and stop storage backends for tests.
#
#   source "$SRC_DIR/test/functions.sh"
#   source "$SRC_DIR/test/lib/backends.sh"
#   backends_start redis 24 "$t"        # or: backends_start zdb 4 "$t" (needs zdb)
#   backends_config "$t/pool.conf" 16 4 [zones]   # write a pool config for them
#   backend_stop 3 / backend_cont 3     # SIGSTOP / SIGCONT backend 3
#   backend_kill 3                      # SIGKILL it (its data is lost)
#   backend_restart_empty 3             # kill, wipe its data, start again
#
# Backends are numbered 0..N-1 and named b00, b01, …; BACKEND_PORT[i],
# BACKEND_PID[i], BACKEND_DIR[i] describe each one.  Every server is killed
# at exit (cleanup_push), even when the test fails.  Servers listen on
# 127.0.0.1 ports chosen free at start.  The kind "zdb" uses $ZDB or `zdb`
# on the PATH (the test is skipped with exit 77 and a message otherwise).
#
# Extra redis-server arguments for every instance: BACKEND_REDIS_ARGS
# (e.g. "--requirepass s3cret").

BACKEND_KIND=
BACKEND_N=0
BACKEND_PORT=()
BACKEND_PID=()
BACKEND_DIR=()
: "${BACKEND_REDIS_ARGS:=}"

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
  for ((i = 0; i < n; i++)); do
    wait_for "_backend_ping ${BACKEND_PORT[$i]}" 30 ||
      { cat "${BACKEND_DIR[$i]}/server.log" >&2; fail "backend $i did not answer PING"; }
  done
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
      if [ "$BACKEND_KIND" = zdb ]; then echo "namespace = ${BACKEND_NS:-default}"; fi
      if [ -n "${BACKEND_PASSWORD:-}" ]; then echo "password = $BACKEND_PASSWORD"; fi
      if [ "$zones" -gt 0 ]; then echo "zone = z$((i % zones))"; fi
    done
  } >"$file"
}

backend_stop() { kill -STOP "${BACKEND_PID[$1]}"; }
backend_cont() { kill -CONT "${BACKEND_PID[$1]}"; }
backend_kill() {
  kill -9 "${BACKEND_PID[$1]}" 2>/dev/null || true
  wait "${BACKEND_PID[$1]}" 2>/dev/null || true
}
# backend_restart_empty I — the server comes back on the same port, blank.
backend_restart_empty() {
  backend_kill "$1"
  rm -rf "${BACKEND_DIR[$1]}"
  _backend_launch "$1"
  wait_for "_backend_ping ${BACKEND_PORT[$1]}" 30 || fail "backend $1 did not restart"
}
