# test/e2e/lib.sh — the persistent product path for the e2e tests: a pool of
# redis-servers (0-db servers with NBDSRV_TEST_BACKEND=zdb), a pool config
# with an SSD cache, the daemon started and restarted on it (sourced after
# test/functions.sh and test/lib/backends.sh).
#
#   e2e_pool N K M DIR MODE CACHE_SIZE [CHUNK [EXTRA-POOL-LINES]]
#   e2e_start [serve args…]                      # serve --config, waits for ctl
#   e2e_kill / e2e_stop                          # SIGKILL / SIGTERM (+ exit 0,
#                                                # + every backend still alive)
#   e2e_uri VOL                                  # nbd+unix URI of an export
#   e2e_stat NAME                                # a status --json counter, summed
#   e2e_dirty                                    # pool-dirty objects (status)
#   e2e_wait_clean [SECONDS]                     # until e2e_dirty is 0
#   e2e_drop_cache                               # delete the cache (slot) file
#   e2e_rss_kib                                  # the daemon's VmRSS
#   e2e_seed                                     # $E2E_SEED or random, printed

E2E_DIR=
exec {E2E_ERR}>&2      # cleanup commands run with stderr discarded
E2E_CONF=
E2E_SOCK=
E2E_CACHE=
E2E_PID=

e2e_seed() {
  E2E_SEED=${E2E_SEED:-$(( (RANDOM << 15) | RANDOM ))}
  echo "# seed=$E2E_SEED (rerun with E2E_SEED=$E2E_SEED)" >&2
}

# e2e_pool N K M DIR MODE CACHE_SIZE [CHUNK [EXTRA]] — N servers of
# $BACKEND_TEST_KIND and a pool config $E2E_CONF (k+m, encryption key,
# cache in DIR/cache, MODE, EXTRA lines for [pool]).
e2e_pool() {
  local n=$1 k=$2 m=$3 dir=$4 mode=$5 csize=$6 chunk=${7:-1M} extra=${8:-}
  E2E_DIR=$dir
  E2E_CONF=$dir/pool.conf
  E2E_SOCK=$dir/nbd.sock
  E2E_CACHE=$dir/cache
  cleanup_push '[ "$rc" = 0 ] || e2e_show_log'
  requires_test_backend
  backends_start "$BACKEND_TEST_KIND" "$n" "$dir"
  "$NBDSRV" key generate "$dir/pool.key" >/dev/null || fail "nbdsrv key generate"
  backends_config "$E2E_CONF" "$k" "$m" 0 "chunk_size = $chunk
key_file = $dir/pool.key
cache_path = $E2E_CACHE
cache_size = $csize
cache_mode = $mode${extra:+
$extra}"
}

# e2e_pool_shutdown DIR — the shutdown tests' pool (test/nbdsrv/shutdown_*.sh):
# 6 servers, 4+2, a writeback 8M cache of 256K chunks, write-back delays no
# test waits for (600 s), a stop that gives up flushing after 2 s; at the
# end the servers are resumed, should the test leave them paused.
e2e_pool_shutdown() {
  e2e_pool 6 4 2 "$1" writeback 8M 256K "flush_idle_ms = 600000
flush_max_age_ms = 600000
shutdown_flush_timeout_ms = 2000"
  cleanup_push "for p in \${BACKEND_PID[*]}; do kill -CONT \$p; done"
}

# e2e_set_mode writeback|writethrough — change cache_mode in the config.
e2e_set_mode() { sed -i "s/^cache_mode = .*/cache_mode = $1/" "$E2E_CONF"; }

# e2e_start [ARGS…] — `nbdsrv serve --config $E2E_CONF --unix $E2E_SOCK ARGS…`,
# waits for the NBD and control sockets; E2E_PID.
e2e_start() {
  rm -f "$E2E_SOCK"
  NBDSRV_LOG=$E2E_DIR/nbdsrv.log.$(date +%s%N)
  start_nbdsrv --config "$E2E_CONF" --unix "$E2E_SOCK" "$@"
  E2E_PID=$NBDSRV_PID
  wait_for "[ -S '$E2E_CACHE/nbdsrv.ctl' ]" 60 ||
    { tail -30 "$NBDSRV_LOG" >&2; fail "no control socket $E2E_CACHE/nbdsrv.ctl"; }
}

# e2e_kill — SIGKILL the daemon and wait until it is dead, also from a
# subshell (which cannot reap it): until its metadata lock is free (a
# killed process's leader is a zombie while its other threads still exit
# and hold its files).
e2e_kill() {
  kill -9 "$E2E_PID" 2>/dev/null || true
  wait "$E2E_PID" 2>/dev/null || true
  wait_for "flock -n '$E2E_CACHE/meta/nbdsrv.lock' true" 30 ||
    fail "daemon $E2E_PID killed but its lock is still held"
  # Its listening sockets can outlive it briefly (io_uring tears down its
  # pending accepts asynchronously): wait until they refuse connections.
  wait_for "! _e2e_accepts '$E2E_CACHE/nbdsrv.ctl' && ! _e2e_accepts '$E2E_SOCK'" 30 ||
    fail "daemon $E2E_PID killed but its sockets still accept"
}
_e2e_accepts() {
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
try: s.connect(sys.argv[1])
except OSError: sys.exit(1)' "$1"
}
e2e_stop() {
  stop_nbdsrv || { tail -30 "$NBDSRV_LOG" >&2; fail "nbdsrv exit status $? after SIGTERM"; }
  backends_alive
}
e2e_uri() { echo "nbd+unix:///$1?socket=$E2E_SOCK"; }
e2e_ctl() { "$NBDSRV" "$@" --config "$E2E_CONF"; }

# e2e_stat NAME — the daemon's counter NAME: the integer members called NAME
# in `status --json`, summed wherever they appear (0 when there are none).
e2e_stat() { _e2e_status_sum "$1" 0; }
# e2e_dirty — the daemon's count of objects not yet in the pool (e2e_stat
# pool_dirty, but failing when status has no such member).
e2e_dirty() { _e2e_status_sum pool_dirty 1; }
_e2e_status_sum() {
  e2e_ctl status --json | python3 -c '
import json, sys
key, required = sys.argv[1], sys.argv[2] == "1"
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == key and isinstance(v, int): yield v
            else: yield from walk(v)
    elif isinstance(o, list):
        for v in o: yield from walk(v)
n = list(walk(json.load(sys.stdin)))
if required and not n: sys.exit("status --json has no " + key)
print(sum(n))' "$1" "$2"
}
e2e_wait_clean() {
  local t=${1:-120} d
  wait_for '[ "$(e2e_dirty)" = 0 ]' "$t" ||
    { d=$(e2e_dirty || true); fail "still $d dirty objects after ${t}s"; }
}

# e2e_drop_cache — delete the cache's slot file <cache_path>/cache.img,
# keeping the metadata (<cache_path>/meta): the next start finds the cache
# file lost (ssdcache_open re-binds its index to a new, empty file).
e2e_drop_cache() {
  [ -f "$E2E_CACHE/cache.img" ] || fail "no cache file $E2E_CACHE/cache.img: $(ls "$E2E_CACHE")"
  rm -f "$E2E_CACHE/cache.img"
}

# e2e_show_log — the tail of the newest daemon log and the daemon's state
# (run at exit when the test failed).
e2e_show_log() {
  [ -n "${NBDSRV_LOG:-}" ] && [ -f "$NBDSRV_LOG" ] || return 0
  {
    echo "--- $(basename "$NBDSRV_LOG") (pid $E2E_PID: $(kill -0 "$E2E_PID" 2>/dev/null &&
      echo running || echo gone)):"
    echo "[errors]"; grep -E ' error: ' "$NBDSRV_LOG" | tail -20
    echo "[last lines]"; tail -20 "$NBDSRV_LOG"
  } >&"$E2E_ERR"
}

e2e_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$E2E_PID/status"; }

# e2e_wait_exit WHAT — wait for the daemon (signalled by the test) to exit;
# its exit status in $rc.  Fails when it does not exit: the wait is a hang
# guard, not a timing.
e2e_wait_exit() {
  wait_for "! kill -0 $E2E_PID 2>/dev/null || grep -q '^State:.*Z' /proc/$E2E_PID/status" 120 ||
    fail "daemon still running: $1"
  rc=0
  wait "$E2E_PID" || rc=$?
}
