# test/zdb/test-pool-cli.sh — `nbdsrv pool status|check|init` against redis:
# a wrong password gives a clear error naming the backend (and never shows
# the password), the right one works; a config error is FILE:LINE: reason
# before anything connects; JSON status parses; a killed backend is "down".
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires python3

t=$(mktempdir)
BACKEND_REDIS_ARGS="--requirepass Right-Pa55"
backends_start redis 3 "$t"

# right password (from a password_file for b01)
BACKEND_PASSWORD=Right-Pa55 backends_config "$t/ok.conf" 2 1
printf 'Right-Pa55\n' >"$t/b01.pw"
sed -i '/^\[backend b01\]/,/^$/ s/^password = .*/password_file = b01.pw/' "$t/ok.conf"
grep -q 'password_file = b01.pw' "$t/ok.conf" || fail "could not write password_file"
"$NBDSRV" pool status --config "$t/ok.conf" >"$t/out" 2>&1 || { cat "$t/out"; fail "status with the right password"; }
grep -Eq '^b01 .* (up|slow) +ready +redis' "$t/out" || { cat "$t/out"; fail "b01 not up"; }
"$NBDSRV" pool check --config "$t/ok.conf" >"$t/out" 2>&1 || { cat "$t/out"; fail "check"; }
grep -q '3 of 3 backends passed' "$t/out" || fail "check output: $(cat "$t/out")"
"$NBDSRV" pool init --config "$t/ok.conf" >"$t/out" 2>&1 || { cat "$t/out"; fail "init on redis"; }
"$NBDSRV" pool status --config "$t/ok.conf" --json >"$t/json" || fail "json status"
python3 - "$t/json" <<'PY' || fail "bad JSON status: $(cat "$t/json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["k"] == 2 and len(d["backends"]) == 3
# "slow" (a PING above 200 ms on a loaded machine) is connected too
assert all(b["health"] in ("up", "slow") and b["dialect"] == "redis" for b in d["backends"])
assert all(b["used_bytes"] > 0 for b in d["backends"])
PY
grep -rq 'Right-Pa55' "$t/out" "$t/json" && fail "the password appears in the output"

# wrong password on b02: a clear error naming it; the password never shown
BACKEND_PASSWORD=Right-Pa55 backends_config "$t/bad.conf" 2 1
sed -i '/^\[backend b02\]/,/^$/ s/^password = .*/password = Wrong-Pa55/' "$t/bad.conf"
if "$NBDSRV" pool status --config "$t/bad.conf" >"$t/out" 2>"$t/err"; then
  fail "status succeeded with a wrong password"
fi
grep -q 'backend b02 (127.0.0.1:[0-9]*): authentication failed' "$t/err" ||
  { cat "$t/err"; fail "no clear error naming b02"; }
grep -q 'Wrong-Pa55\|Right-Pa55' "$t/out" "$t/err" && fail "a password appears in the output"
grep -Eq '^b00 .* up ' "$t/out" || fail "b00 should still be up: $(cat "$t/out")"

# no password at all
backends_config "$t/nopw.conf" 2 1
"$NBDSRV" pool status --config "$t/nopw.conf" >"$t/out" 2>"$t/err" && fail "status without password succeeded"
grep -q 'backend b00 .*requires a password' "$t/err" || { cat "$t/err"; fail "no 'requires a password' error"; }

# config errors: FILE:LINE: reason, before anything starts
cp "$t/ok.conf" "$t/typo.conf"
echo "colour = blue" >>"$t/typo.conf"
line=$(wc -l <"$t/typo.conf")
"$NBDSRV" pool status --config "$t/typo.conf" >"$t/out" 2>"$t/err" && fail "typo accepted"
grep -q "^$t/typo.conf:$line: unknown key 'colour'" "$t/err" || { cat "$t/err"; fail "config error format"; }
sed "s/password_file = b01.pw/password_file = missing.pw/" "$t/ok.conf" >"$t/pwmiss.conf"
"$NBDSRV" pool status --config "$t/pwmiss.conf" 2>"$t/err" >/dev/null && fail "missing password file accepted"
grep -q "pwmiss.conf:[0-9]*: cannot read password_file" "$t/err" || { cat "$t/err"; fail "password_file error"; }
"$NBDSRV" pool status --config "$t/nonexistent.conf" 2>"$t/err" >/dev/null && fail "missing config accepted"
grep -q "nonexistent.conf: No such file" "$t/err" || { cat "$t/err"; fail "missing config message"; }

# a dead backend is reported down; the exit status says so
backend_kill 2
"$NBDSRV" pool status --config "$t/ok.conf" >"$t/out" 2>"$t/err" && fail "status exit 0 with a dead backend"
grep -Eq '^b02 .* down ' "$t/out" || { cat "$t/out"; fail "b02 not down"; }
grep -q 'backend b02 .*connect failed: Connection refused' "$t/err" || { cat "$t/err"; fail "no reason for b02"; }
info ok
