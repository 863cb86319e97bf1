#!/usr/bin/env bash
# status.sh — the pool inside the daemon: `nbdsrv serve --config FILE` with 6
# password-protected redis backends (0-db namespaces with passwords when
# NBDSRV_TEST_BACKEND=zdb), `nbdsrv status` (table and --json) shows
# every backend's state, dialect, latency and capacity; a killed backend is
# shown down within a bound and up again after a restart; the password never
# appears in any output or in the log; a config error is reported as
# FILE:LINE: reason with exit 1 before anything starts (no socket created).
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires python3 nbdinfo
requires_test_backend
t=$(mktempdir)
PW="pw-$RANDOM-Zq9#x"
export BACKEND_REDIS_ARGS="--requirepass $PW"
BACKEND_PASSWORD=$PW

# --- a config error: FILE:LINE: reason, exit 1, nothing started ------------
mkdir -p "$t/badcache"
cat >"$t/bad.conf" <<EOF
[pool]
k = 4
m = 2
cache_path = $t/badcache
listen = unix:$t/bad.sock
colour = blue
EOF
rc=0
"$NBDSRV" serve --config "$t/bad.conf" >"$t/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$t/bad.out" >&2; fail "config error: exit $rc, expected 1"; }
grep -q "bad.conf:6: unknown key 'colour'" "$t/bad.out" ||
  { cat "$t/bad.out" >&2; fail "config error not reported as FILE:LINE: reason"; }
[ ! -e "$t/bad.sock" ] && [ ! -e "$t/badcache/nbdsrv.ctl" ] ||
  fail "a socket was created although the config does not parse"
# An unreadable config is exit 1 too; a missing --config argument is usage (2).
rc=0; "$NBDSRV" serve --config "$t/none.conf" 2>"$t/none.out" || rc=$?
[ "$rc" = 1 ] && grep -q "none.conf" "$t/none.out" || fail "missing config: exit $rc"
rc=0; "$NBDSRV" serve --config 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--config without a value: exit $rc, expected 2"
rc=0; "$NBDSRV" status 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "status without --control/--config: exit $rc, expected 2"
rc=0; "$NBDSRV" status --control "$t/nobody.ctl" 2>"$t/nobody.out" || rc=$?
[ "$rc" = 1 ] && grep -q "cannot reach" "$t/nobody.out" ||
  fail "status with no daemon: exit $rc"

# --- serve --config with 6 redis backends behind passwords ------------------
backends_start "$BACKEND_TEST_KIND" 6 "$t"
backends_config "$t/pool.conf" 4 2 0 "cache_path = $t/cache
listen = unix:$t/nbd.sock"
grep -q "password = $PW" "$t/pool.conf" || fail "test setup: no password in the config"
truncate -s 8M "$t/disk"
log=$t/serve.log
NBDSRV_LOG=$log start_nbdsrv --config "$t/pool.conf" --export "disk=$t/disk"
wait_for "[ -S '$t/nbd.sock' ] && [ -S '$t/cache/nbdsrv.ctl' ]" 30 ||
  { cat "$log" >&2; fail "serve --config: listen / default control socket missing"; }
[ "$(nbdinfo --size "nbd+unix:///disk?socket=$t/nbd.sock")" = $((8 << 20)) ] ||
  fail "the listen address from the config does not serve"

# status_json — the daemon's JSON status into $t/st.json, validated.
status_json() {
  "$NBDSRV" status --config "$t/pool.conf" --json >"$t/st.json" &&
    python3 -m json.tool "$t/st.json" >/dev/null
}
# check_json PYTHON-EXPR — evaluate an assertion over the status object `s`.
check_json() {
  python3 - "$t/st.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
b = {x["name"]: x for x in s["pool"]["backends"]}
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

wait_for "status_json && check_json 'all(x[\"health\"] == \"up\" for x in b.values())'" 30 ||
  { cat "$t/st.json" >&2; fail "not every backend came up"; }
check_json 'len(b) == 6 and s["pool"]["k"] == 4 and s["pool"]["m"] == 2' ||
  fail "status --json: pool k/m/backends wrong"
check_json 'all(x["dialect"] == "'"$BACKEND_TEST_KIND"'" and x["state"] == "ready" for x in b.values())' ||
  fail "status --json: dialect/state"
check_json 's["exports"][0]["name"] == "disk" and s["exports"][0]["size"] == 8 << 20' ||
  fail "status --json: exports"
check_json 'any(l.endswith("nbd.sock") for l in s["listeners"])' || fail "status --json: listeners"
# Latency and capacity appear once PINGs and INFO have answered.
wait_for "status_json && check_json 'all(x[\"p50_ms\"] > 0 and x[\"p99_ms\"] >= x[\"p50_ms\"] and isinstance(x[\"used_bytes\"], int) and x[\"used_bytes\"] > 0 for x in b.values())'" 30 ||
  { cat "$t/st.json" >&2; fail "status --json: no latency or capacity"; }

"$NBDSRV" status --config "$t/pool.conf" >"$t/st.txt" || fail "status (table)"
for i in 0 1 2 3 4 5; do
  # up, or slow (a PING above slow_ns = 200 ms: a loaded machine) — ready
  grep -Eq "^b0$i +.* (up|slow) +ready +$BACKEND_TEST_KIND " "$t/st.txt" ||
    { cat "$t/st.txt" >&2; fail "status table: b0$i not shown up/ready/$BACKEND_TEST_KIND"; }
done
grep -q "^disk " "$t/st.txt" || fail "status table: export missing"
"$NBDSRV" status --control "$t/cache/nbdsrv.ctl" >"$t/st2.txt" || fail "status --control"
grep -q "^b05 " "$t/st2.txt" || fail "status --control: no pool"

# --- a backend dies: shown down, restarted: shown up again (60 s guards) ------
backend_kill 3
wait_for "status_json && check_json 'b[\"b03\"][\"health\"] == \"down\"'" 60 ||
  { cat "$t/st.json" >&2; fail "killed backend b03 not shown down within 60 s"; }
# (the others "up", or "slow" when a PING met a loaded machine: not down)
check_json 'sum(x["health"] in ("up", "slow") for x in b.values()) == 5 and s["pool"]["backends_down"] == 1' ||
  fail "the other backends should stay up"
"$NBDSRV" status --config "$t/pool.conf" >"$t/st3.txt"
grep -Eq "^b03 +.* down " "$t/st3.txt" || { cat "$t/st3.txt" >&2; fail "table: b03 not down"; }
backend_restart_empty 3
wait_for "status_json && check_json 'b[\"b03\"][\"health\"] == \"up\"'" 60 ||
  { cat "$t/st.json" >&2; fail "restarted backend b03 not up again within 60 s"; }

# --- the password is nowhere ------------------------------------------------
stop_nbdsrv || fail "serve --config: exit status $? after SIGTERM"
[ ! -e "$t/cache/nbdsrv.ctl" ] || fail "control socket left behind"
[ ! -e "$t/nbd.sock" ] || fail "listener socket left behind"
grep -q "backend b03: down" "$log" || { cat "$log" >&2; fail "log: backend down not logged"; }
for f in "$t/st.json" "$t/st.txt" "$t/st2.txt" "$t/st3.txt" "$log"; do
  ! grep -qF "$PW" "$f" || fail "the password appears in $(basename "$f")"
done
echo "status.sh: ok"
