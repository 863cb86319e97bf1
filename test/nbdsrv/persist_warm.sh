#!/usr/bin/env bash
# persist_warm.sh — the SSD cache seen from the daemon: a pool from `nbdsrv
# init` with a cache (4 MiB) much smaller than the data written (12 MiB), so
# chunks are evicted and read back from the pool; `status` shows the cache
# (mode, slots, hits/misses, evictions) in text and JSON; NBD_CMD_CACHE is
# advertised and answered; sequential reads make read-ahead prefetches;
# `vol warm` runs to "done" with done == total and
# counts prefetches, refuses an unknown volume; everything reads back equal;
# `vol rm` of a volume with a running and a queued warm job stops both
# (state "stopped", reason "volume removed") and removes it.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo nbdcopy python3 cmp
t=$(mktempdir)
d=$t/data
MiB=$((1 << 20))
u="nbd+unix:///disk?socket=$d/nbdsrv.sock"
st() { "$NBDSRV" status --config "$d/pool.conf" "$@"; }

"$NBDSRV" init "$d" --cache-size 4M --chunk-size 256K --volume disk=16M >/dev/null 2>&1 ||
  fail "init"
sed -i '/^listen = 0.0.0.0:10809$/d' "$d/pool.conf"
NBDSRV_LOG=$t/serve.log
start_nbdsrv --config "$d/pool.conf"
wait_for "[ -S '$d/nbdsrv.sock' ]" 30 || fail "no socket"

nbdinfo --json "$u" >"$t/info.json" || fail "nbdinfo"
[ "$(jq_py "$t/info.json" 'j["exports"][0]["can_cache"]')" = 1 ] || fail "CACHE not advertised"

head -c $((12 * MiB)) /dev/urandom >"$t/img"
nbdcopy "$t/img" "$u" || fail "nbdcopy in"
nbdcopy "$u" "$t/out" || fail "nbdcopy out"
cmp -n $((12 * MiB)) "$t/out" "$t/img" || fail "read back through a cache smaller than the data"

st --json >"$t/st.json" || fail "status --json"
[ "$(jq_py "$t/st.json" 'j["volumes"]["cache_mode"]')" = writeback ] || fail "status: cache_mode"
[ "$(jq_py "$t/st.json" 'j["volumes"]["cache"]["slots"] * j["volumes"]["cache"]["slot_size"] <= 4 << 20')" = 1 ] ||
  fail "status: cache size"
[ "$(jq_py "$t/st.json" 'j["volumes"]["cache"]["evictions"] > 0 and j["volumes"]["cache"]["misses"] > 0')" = 1 ] ||
  { cat "$t/st.json" >&2; fail "status: no evictions or misses with 12 MiB through a 4 MiB cache"; }
st >"$t/st.txt" || fail "status"
grep -q "^cache: writeback, .* slots" "$t/st.txt" && grep -q "hits .*misses .*evictions" "$t/st.txt" ||
  { cat "$t/st.txt" >&2; fail "status text: no cache lines"; }

# --- NBD_CMD_CACHE on 2 MiB, answered without error ------------------------------
python3 - "$SRC_DIR/test/nbdsrv" "$d/nbdsrv.sock" <<'PY' || fail "NBD_CMD_CACHE"
import sys
sys.path.insert(0, sys.argv[1])
import nbd_raw
c = nbd_raw.open_export(sys.argv[2], "disk")
err, _, _ = c.cmd(nbd_raw.CMD_CACHE, 1 << 20, 2 << 20)
assert err == 0, "CACHE error %d" % err
err, _, _ = c.cmd(nbd_raw.CMD_CACHE, 15 << 20, 1 << 20)   # holes only
assert err == 0, "CACHE of holes: error %d" % err
c.close()
PY

# --- sequential reads trigger read-ahead (prefetches counted) -------------------
st --json >"$t/st.json"
p0=$(jq_py "$t/st.json" 'j["volumes"]["cache"]["prefetches"]')
python3 - "$SRC_DIR/test/nbdsrv" "$d/nbdsrv.sock" "$t/img" <<'PY' || fail "sequential read"
import sys
sys.path.insert(0, sys.argv[1])
import nbd_raw
img = open(sys.argv[3], "rb").read()
c = nbd_raw.open_export(sys.argv[2], "disk")
for off in range(0, 8 << 20, 64 << 10):
    err, data, _ = c.read(off, 64 << 10)
    assert err == 0 and data == img[off:off + (64 << 10)], "read at %d" % off
c.close()
PY
# the warm thread runs the read-ahead the reads asked for: on a loaded
# machine maybe only after the stream ended (bounded 60 s, a hang guard)
prefetches() { st --json >"$t/st.json" && jq_py "$t/st.json" 'j["volumes"]["cache"]["prefetches"]'; }
wait_for "[ \"\$(prefetches)\" -gt $p0 ]" 60 ||
  fail "a sequential read made no read-ahead prefetch ($p0 -> $(prefetches))"
p1=$(prefetches)
info "read-ahead: prefetches $p0 -> $p1"

# --- vol warm ----------------------------------------------------------------------
rc=0; "$NBDSRV" vol warm nosuch --wait --config "$d/pool.conf" >"$t/w.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$t/w.out" >&2; fail "warm of an unknown volume: exit $rc"; }
"$NBDSRV" vol warm disk --rate 64M --wait --config "$d/pool.conf" >"$t/w.out" 2>&1 ||
  { cat "$t/w.out" >&2; fail "vol warm --wait"; }
tail -1 "$t/w.out" | grep -q "warm disk: 16M / 16M, .*done$" || { cat "$t/w.out" >&2; fail "vol warm: last line"; }
st --json >"$t/st.json"
[ "$(jq_py "$t/st.json" '[w for w in j["volumes"]["warm"] if w["spec"] == "disk"][-1]["state"]')" = done ] ||
  fail "status: warm job not done"
[ "$(jq_py "$t/st.json" '[w for w in j["volumes"]["warm"] if w["spec"] == "disk"][-1]["done"]')" = $((16 * MiB)) ] ||
  fail "status: warm done != total"
[ "$(jq_py "$t/st.json" 'j["volumes"]["cache"]["prefetches"] >= 4')" = 1 ] || fail "status: no prefetches counted"
"$NBDSRV" vol warm disk --no-wait --config "$d/pool.conf" >/dev/null || fail "vol warm --no-wait"
nbdcopy "$u" "$t/out" || fail "nbdcopy out after warm"
cmp -n $((12 * MiB)) "$t/out" "$t/img" || fail "data changed by warm-up"

# --- vol rm stops the volume's warm jobs (running and queued) --------------------
# At 1 MiB/s a 16 MiB volume warms for ~16 s: rm comes while it runs.
v() { "$NBDSRV" vol "$@" --config "$d/pool.conf"; }
wjob() {  # wjob ID KEY — a field of warm job ID in status
  st --json >"$t/stw.json" &&
    jq_py "$t/stw.json" "[w for w in j['volumes']['warm'] if w['id'] == $1][0].get('$2', '')"
}
v create w2 16M >/dev/null || fail "vol create w2"
v create w3 16M >/dev/null || fail "vol create w3"
id1=$(v warm w2 --rate 1M --no-wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["warm_id"])') ||
  fail "vol warm w2"
id2=$(v warm w2 --no-wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["warm_id"])') ||
  fail "vol warm w2 (queued)"
id3=$(v warm w3 --no-wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["warm_id"])') ||
  fail "vol warm w3 (queued)"
wait_for "[ \"\$(wjob $id1 state)\" = running ]" 30 || fail "warm of w2 never ran"
v rm w2 >"$t/rm.out" 2>&1 || { cat "$t/rm.out" >&2; fail "vol rm refused while a warm job ran"; }
rc=0; v info w2 >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "w2 still there after vol rm"
for id in $id1 $id2; do
  [ "$(wjob $id state)" = stopped ] && [ "$(wjob $id reason)" = "volume removed" ] ||
    { cat "$t/stw.json" >&2; fail "warm job $id of the removed volume: not stopped/volume removed"; }
done
wait_for "[ \"\$(wjob $id3 state)\" = done ]" 60 ||
  { cat "$t/stw.json" >&2; fail "the warm job of another volume did not run to done"; }
info "vol rm of a volume being warmed: its jobs stopped (volume removed), others run"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
echo "ok"
