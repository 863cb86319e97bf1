# test/zdb/test-pool.sh — the pool against 24 real servers, k=16 m=4, six
# zones: placement spreads zones, gets survive 4 dead backends and a
# SIGSTOPped one (bounded by the hedge threshold, not the socket timeout),
# writes continue (spares) with 4 down and turn degraded below k+m, a
# backend restarted empty has its missing shards reported.
# Sourced by test-pool-redis.sh / test-pool-zdb.sh with KIND set.
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"

T=$TEST_BIN_DIR/zdb/zdb_tool
[ -x "$T" ] || fail "missing $T"
t=$(mktempdir)
backends_start "$KIND" 24 "$t"
backends_config "$t/pool.conf" 16 4 6 "timeout_ms = 5000"
seed=$RANDOM$RANDOM
info "seed $seed, $KIND backends on ports ${BACKEND_PORT[*]}"

tool() { "$T" "$@" --config "$t/pool.conf" 2>>"$t/tool.log"; }
tfail() { echo "--- zdb_tool log:" >&2; tail -30 "$t/tool.log" >&2 || true; fail "$@"; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# 1. write 40 chunks, all shards placed
out=$(tool put --state "$t/s1" --chunks 40 --size 16K --seed "$seed") || tfail "put: $out"
grep -q 'put chunks=40 failed=0 degraded=0' <<<"$out" || tfail "put: $out"

# large shards (1 MiB: payloads received straight into the caller's buffer)
out=$(tool put --state "$t/s0" --chunks 2 --size 1M --seed "1$seed") || tfail "put 1M: $out"
grep -q 'failed=0 degraded=0' <<<"$out" || tfail "put 1M: $out"
out=$(tool get --state "$t/s0") || tfail "get 1M: $out"
grep -q 'ok=2 failed=0' <<<"$out" || tfail "get 1M: $out"

# 2. zone spreading: every chunk covers all 6 zones, per-zone counts differ by <= 1
python3 - "$t/s1" <<'PY' || tfail "zone spreading"
import sys, collections
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
per = collections.defaultdict(list)
for c, i, b in rows:
    per[c].append(b)
for c, bs in per.items():
    assert len(set(bs)) == 20, f"chunk {c}: shards on {len(set(bs))} distinct backends"
    z = collections.Counter(int(b[1:]) % 6 for b in bs)
    assert len(z) == 6, f"chunk {c}: only {len(z)} zones"
    assert max(z.values()) - min(z.values()) <= 1, f"chunk {c}: unbalanced zones {dict(z)}"
load = collections.Counter(b for _, _, b in rows)
assert len(load) == 24 and max(load.values()) <= 3 * min(load.values()), f"unbalanced load {load}"
PY

out=$(tool get --state "$t/s1") || tfail "get: $out"
grep -q 'ok=40 failed=0' <<<"$out" || tfail "get: $out"

# 3. SIGSTOP a live backend holding shards: gets are bounded by the hedge
#    threshold, not by the 5 s request timeout
cleanup_push "kill -CONT ${BACKEND_PID[0]}"
out=$(tool get --state "$t/s1" --stop-pid "${BACKEND_PID[0]}" --stop-after 5) ||
  { backend_cont 0; tfail "get with b00 stopped: $out"; }
backend_cont 0
grep -q 'ok=40 failed=0' <<<"$out" || tfail "get with b00 stopped: $out"
max=$(field max_ms "$out"); hedge=$(field hedge_ms "$out")
info "b00 stopped: $out"
python3 -c "import sys; m,h=$max,$hedge; sys.exit(0 if m <= 10*h + 500 and m < 2500 else 1)" ||
  tfail "a get took ${max} ms with hedge ${hedge} ms (bound: 10x hedge + 500 ms)"
[ "$(field hedged "$out")" -ge 1 ] || tfail "no hedged request although b00 was stopped: $out"

# 4. kill 4 backends: every get still succeeds
for i in 1 6 11 16; do backend_kill $i; done
out=$(tool get --state "$t/s1") || tfail "get with 4 killed: $out"
grep -q 'ok=40 failed=0' <<<"$out" || tfail "get with 4 killed: $out"
info "4 killed: $out"

# 5. writes with 4 down: full width on spares, nothing on a dead backend
out=$(tool put --state "$t/s2" --chunks 20 --size 16K --seed "$seed") || tfail "put with 4 down: $out"
grep -q 'failed=0 degraded=0' <<<"$out" || tfail "put with 4 down: $out"
! grep -Eq ' (b01|b06|b11|b16)$' "$t/s2" || tfail "a shard was placed on a dead backend"

# 6. two more down (18 healthy < k+m, >= k+1): degraded writes that read back
backend_kill 21; backend_kill 22
out=$(tool put --state "$t/s3" --chunks 10 --size 16K --seed "$seed") || tfail "degraded put: $out"
grep -q 'failed=0 degraded=10' <<<"$out" || tfail "degraded put: $out"
out=$(tool get --state "$t/s3") || tfail "get degraded: $out"
grep -q 'ok=10 failed=0' <<<"$out" || tfail "get degraded: $out"

# 7. a backend restarted empty: its missing shards are reported
want=$(grep -c ' b03$' "$t/s2")
backend_restart_empty 3
out=$(tool get --state "$t/s2" --all)
grep -q "^missing b03 $want\$" <<<"$out" || tfail "expected 'missing b03 $want', got: $out"
[ "$(grep -c '^missing' <<<"$out")" -eq 1 ] || tfail "other backends reported missing: $out"
out=$(tool get --state "$t/s2") || tfail "get after b03 emptied: $out"
grep -q 'ok=20 failed=0' <<<"$out" || tfail "get after b03 emptied: $out"
info "ok"
