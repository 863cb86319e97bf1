#!/usr/bin/env bash
# backpressure.sh — the dirty limit end to end (issue 6): with every backend
# SIGSTOPped while a writer runs, writes wait instead of piling up in memory
# or failing; when the backends resume, everything is flushed and reads back.
#
# 6 redis-servers, k=4 m=2, writeback, a 32 MiB cache of 256 KiB slots (128
# slots), cache_dirty_max = 16 objects, a 128 MiB volume: e2e_blk keeps 64
# random 4 KiB writes in flight over the whole volume, so it dirties far
# more chunks than the limit within a second.
#
# Asserted while the backends are stopped (~8 s, sampled every 0.25 s):
#   - the daemon's VmRSS never exceeds the first sample by more than 48 MiB.
#     Justification: what may legitimately be in memory is the client's
#     64 × 4 KiB requests, the flusher's few objects in flight (4 × 256 KiB
#     × (k+m)/k plus encode buffers, ~2 MiB) and per-backend request queues
#     (depth 16 × 64 KiB shards × 6, ~6 MiB).  A daemon that buffered the
#     writes it cannot flush in RAM would grow by the writer's ~100+ MiB/s.
#   - the daemon counts writes that waited for the dirty limit (bp_stalls
#     or bp_waiting > 0): the writer really was held back, and its count of
#     objects not in the pool (pool_dirty, sampled) never exceeds the limit;
#   - the writer does not fail (no error reaches the client).
# After SIGCONT: the writer finishes (exit 0, final FLUSH), `status` reaches
# 0 pool-dirty objects, every block reads back exactly what was written,
# and again after a restart on a deleted cache file (so from the pool).
# No timing is asserted: the stall is observed through the daemon's counters.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 flock
requires_test_backend
BLK=$TEST_BIN_DIR/e2e/e2e_blk
[ -x "$BLK" ] || { echo "SKIP: $(basename "$0"): no $BLK (libnbd-dev missing?)" >&2; exit 77; }

blocks=32768          # 128 MiB
t=$(mktempdir)
e2e_seed
dirty_max=16
e2e_pool 6 4 2 "$t" writeback 32M 256K "cache_dirty_max = $dirty_max"
e2e_start --create-volume v=128M

"$BLK" write "$(e2e_uri v)" --blocks $blocks --seed "$E2E_SEED" --state "$t/none" \
  --out "$t/v.state" --qd 64 --flush-ms 200 --duration-ms 4000 >"$t/writer.out" 2>&1 &
wpid=$!
cleanup_push "kill $wpid"
sleep 1
for ((i = 0; i < BACKEND_N; i++)); do backend_stop "$i"; done
cleanup_push "for p in ${BACKEND_PID[*]}; do kill -CONT \$p; done"
info "backends stopped"
rss0=$(e2e_rss_kib)
max=$rss0
dmax=0
for ((s = 0; s < 32; s++)); do
  sleep 0.25
  kill -0 "$wpid" 2>/dev/null || { cat "$t/writer.out" >&2; fail "the writer ended while the backends were stopped"; }
  r=$(e2e_rss_kib)
  [ "$r" -gt "$max" ] && max=$r
  d=$(e2e_stat pool_dirty)
  [ "$d" -gt "$dmax" ] && dmax=$d
done
# The control thread answers status without the pool (stopped backends).
w=$(e2e_stat bp_waiting)
st=$(e2e_stat bp_stalls)
info "RSS first ${rss0} KiB, max ${max} KiB over 8 s; pool_dirty max $dmax (limit $dirty_max), bp_waiting $w, bp_stalls $st"
[ "$dmax" -le "$dirty_max" ] || fail "pool_dirty reached $dmax, above cache_dirty_max = $dirty_max"
[ "$dmax" -gt 0 ] || fail "pool_dirty stayed 0 with the backends stopped"
[ $((max - rss0)) -le $((48 * 1024)) ] || fail "RSS grew by $((max - rss0)) KiB with the backends stopped"
[ "$w" -gt 0 ] || [ "$st" -gt 0 ] || fail "no write ever waited for the dirty limit"
kill -0 "$wpid" || fail "writer gone"

for ((i = 0; i < BACKEND_N; i++)); do backend_cont "$i"; done
info "backends resumed"
rc=0
wait "$wpid" || rc=$?
cat "$t/writer.out" >&2
[ $rc = 0 ] || fail "writer exit $rc after the backends resumed"
e2e_wait_clean 180
"$BLK" verify "$(e2e_uri v)" --blocks $blocks --seed "$E2E_SEED" --state "$t/v.state" --exact ||
  fail "volume content after the flush"
kill -0 "$E2E_PID" || fail "daemon died"
e2e_stop
e2e_drop_cache
e2e_start
"$BLK" verify "$(e2e_uri v)" --blocks $blocks --seed "$E2E_SEED" --state "$t/v.state" --exact ||
  fail "volume content read from the pool (cache file deleted)"
e2e_stop
echo "backpressure.sh: ok"
