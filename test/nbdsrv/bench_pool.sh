#!/usr/bin/env bash
# bench_pool.sh — `nbdsrv bench pool` on 3 redis-servers: --bytes N writes
# exactly ceil(N / size) values under keys of their own and reads each back
# once with no error (a GET of a missing or short value counts as one), then
# deletes them; the steady mode keeps at most 64 keys per server; CPU of the
# listed server pids is reported; bad option combinations are refused.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires redis-server redis-cli python3
t=$(mktempdir)
backends_start redis 3 "$t"
ports=$(IFS=,; echo "${BACKEND_PORT[*]}")
pids=$(IFS=,; echo "${BACKEND_PID[*]}")

bench_keys() {  # bench_keys PORT → number of keys named bench.*
  redis-cli -p "$1" --scan --pattern 'bench.*' | wc -l
}

"$NBDSRV" bench pool --json --redis-ports "$ports" --server-pids "$pids" --sizes 4K,3000 \
  --bytes 100K >"$t/bytes.json" || fail "bench pool --bytes failed"
python3 - "$t/bytes.json" <<'PY' || fail "bench pool --bytes: wrong counts"
import json, math, sys
j = json.load(open(sys.argv[1]))
assert j["mode"] == "bytes" and j["bytes"] == 100 * 1024, j
seen = set()
for r in j["results"]:
    want = math.ceil(100 * 1024 / r["size"])
    assert r["ops"] == want, (r, want)
    assert r["errors"] == 0, r
    assert "server_cpu_s" in r and r["server_cpu_s"] >= 0, r
    seen.add((r["op"], r["size"]))
assert seen == {("put", 4096), ("get", 4096), ("put", 3000), ("get", 3000)}, seen
PY
for p in "${BACKEND_PORT[@]}"; do
  n=$(bench_keys "$p")
  [ "$n" = 0 ] || fail "bench pool --bytes left $n keys on port $p"
done

# every value under a key of its own, and a rerun's keys are new: watch the
# commands one server gets over two runs (10 values of 4 KiB over 3
# servers: 4 on the first)
redis-cli -p "${BACKEND_PORT[0]}" monitor >"$t/monitor" 2>&1 &
mon=$!
cleanup_push "kill $mon 2>/dev/null || true"
wait_for "grep -q OK '$t/monitor'" 60 || fail "redis-cli monitor did not start"
for run in 1 2; do
  "$NBDSRV" bench pool --json --redis-ports "$ports" --sizes 4K --bytes 40K >"$t/b$run.json" ||
    fail "bench pool --bytes run $run failed"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]
assert all(x["errors"] == 0 and x["ops"] == 10 for x in r), r' "$t/b$run.json" ||
    fail "--bytes run $run: errors or wrong counts"
done
# the monitor stream lags the runs: wait (hang guard) for the runs' last
# command, the 8th DEL, before stopping it (the check below asserts the rest)
wait_for "[ \"\$(grep -ci '\"DEL\" \"bench\\.' '$t/monitor')\" -ge 8 ]" 30 || true
kill "$mon" 2>/dev/null || true
python3 - "$t/monitor" <<'PY' || fail "--bytes: keys not distinct"
import re, sys
cmds = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r'\] "(SET|GET|DEL)" "(bench\.[^"]*)"', line, re.I)
    if m:
        cmds.setdefault(m.group(1).upper(), []).append(m.group(2))
sets = cmds.get("SET", [])
assert len(sets) == 8 and len(set(sets)) == 8, sets
assert sorted(cmds.get("GET", [])) == sorted(sets), cmds
assert sorted(cmds.get("DEL", [])) == sorted(sets), cmds
PY

"$NBDSRV" bench pool --json --redis-ports "$ports" --sizes 4K --seconds 1 >"$t/steady.json" ||
  fail "bench pool (steady) failed"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["mode"] == "steady"
assert all(x["errors"] == 0 and x["ops"] > 0 for x in j["results"]), j' "$t/steady.json" ||
  fail "steady mode: errors or no ops"
for p in "${BACKEND_PORT[@]}"; do
  n=$(bench_keys "$p")
  [ "$n" -ge 1 ] && [ "$n" -le 64 ] || fail "steady mode left $n keys on port $p (1..64 expected)"
done

rc=0
"$NBDSRV" bench pool --redis-ports "$ports" --seconds 1 --bytes 1M >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--seconds with --bytes: exit $rc, expected 2"
rc=0
"$NBDSRV" bench pool --redis-ports "$ports" --bytes 0 >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--bytes 0 accepted"
rc=0
"$NBDSRV" bench pool --redis-ports "$ports" --server-pids 1,x >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--server-pids 1,x accepted"
echo "bench_pool: ok"
