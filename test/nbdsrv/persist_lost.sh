#!/usr/bin/env bash
# persist_lost.sh — the cache file is lost: once the pool holds everything
# (status: no object dirty for the pool), cache.img is deleted; the daemon
# starts again (writeback, with --discard-dirty accepted and nothing to
# discard) and every volume reads back from the pool.  Also: the config
# knobs cache_dirty_max / flush_parallel are accepted, and a bad value is
# refused with FILE:LINE.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdcopy python3 cmp
t=$(mktempdir)
d=$t/data
MiB=$((1 << 20))
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
jq_py() {
  python3 - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
r = eval(sys.argv[2])
print(r if not isinstance(r, bool) else int(r))
PY
}
pool_clean() {
  "$NBDSRV" status --config "$d/pool.conf" --json >"$t/st.json" &&
    [ "$(jq_py "$t/st.json" 'j["volumes"]["cache"]["pool_dirty"]')" = 0 ]
}

"$NBDSRV" init "$d" --cache-size 8M --chunk-size 256K --volume disk=8M >/dev/null 2>&1 || fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
cp "$d/pool.conf" "$t/good.conf"
sed -i 's/^cache_mode = writeback$/&\ncache_dirty_max = lots/' "$d/pool.conf"
rc=0; "$NBDSRV" serve --config "$d/pool.conf" >"$t/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "pool.conf:[0-9]*: .*cache_dirty_max" "$t/bad.out" ||
  { cat "$t/bad.out" >&2; fail "bad cache_dirty_max: exit $rc"; }
sed 's/^cache_mode = writeback$/&\ncache_dirty_max = 8\nflush_parallel = 2/' "$t/good.conf" >"$d/pool.conf"

NBDSRV_LOG=$t/serve1.log
start_nbdsrv --config "$d/pool.conf"
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket"
head -c $((6 * MiB)) /dev/urandom >"$t/img"
nbdcopy "$t/img" "$u" || fail "nbdcopy in"
wait_for pool_clean 60 || fail "the pool never caught up"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"

rm "$d/cache/cache.img"
NBDSRV_LOG=$t/serve2.log
start_nbdsrv --config "$d/pool.conf" --discard-dirty
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket after the cache file was lost"
nbdcopy "$u" "$t/out" || fail "nbdcopy out"
cmp -n $((6 * MiB)) "$t/out" "$t/img" || fail "data lost with the cache file although the pool had it"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "second SIGTERM: exit $rc"
echo "ok"
