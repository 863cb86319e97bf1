# test/zdb/test-pool-zdbfake.sh — the zdb dialect end to end in CI, against
# fake_zdb.py (a DIALECT FAKE, not 0-db): `nbdsrv pool init` creates and
# protects the namespaces as admin (AUTH SECURE), the pool then logs in with
# SELECT ns SECURE, writes/reads/deletes (SET echoing the key, $-1 for an
# identical value, -Key not found on DEL), reports NSINFO capacity; a wrong
# namespace password, a namespace in seq mode or read-only to us is a clear
# error naming the backend.
source "$SRC_DIR/test/functions.sh"
requires python3
T=$TEST_BIN_DIR/zdb/zdb_tool
t=$(mktempdir)
ports=() pids=()
fake_launch() {  # fake_launch I — fake I on a free port
  ports[$1]=$(free_port)
  python3 "$SRC_DIR/test/zdb/fake_zdb.py" "${ports[$1]}" --admin Adm1n >"$t/fake$1.log" 2>&1 &
  pids[$1]=$!
  cleanup_push "kill ${pids[$1]}"
}
for i in 0 1 2 3; do fake_launch "$i"; done
# each fake itself listens (not another test's server that won its port
# between free_port and its bind: then it exits and starts on another)
for i in 0 1 2 3; do
  for ((try = 0; ; try++)); do
    wait_for "port_listener ${ports[$i]} ${pids[$i]} || ! kill -0 ${pids[$i]}" 30 &&
      port_listener "${ports[$i]}" "${pids[$i]}" && break
    if [ "$try" -lt 3 ] && ! kill -0 "${pids[$i]}" 2>/dev/null &&
       grep -q "Address already in use" "$t/fake$i.log"; then
      info "fake $i: port ${ports[$i]} was taken; another"
      fake_launch "$i"
      continue
    fi
    cat "$t/fake$i.log" >&2
    fail "fake $i on ${ports[$i]} did not start"
  done
done
printf 'Adm1n\n' >"$t/admin.pw"
printf 'ns-Secret\n' >"$t/ns.pw"
{
  printf '[pool]\nk = 2\nm = 1\n'
  for i in 0 1 2 3; do
    printf '[backend z%d]\nkind = zdb\naddress = 127.0.0.1:%s\nnamespace = nbd\npassword_file = ns.pw\n' \
      "$i" "${ports[$i]}"
  done
} >"$t/pool.conf"

# before init: the namespace does not exist → a clear error
"$NBDSRV" pool status --config "$t/pool.conf" >"$t/out" 2>"$t/err" && fail "status before init succeeded"
grep -q 'backend z0 .*namespace does not exist' "$t/err" || { cat "$t/err"; fail "missing-namespace error"; }

# init without admin credentials is refused by the server; with them it works, twice
"$NBDSRV" pool init --config "$t/pool.conf" >"$t/out" 2>"$t/err" && fail "init without admin password succeeded"
"$NBDSRV" pool init --config "$t/pool.conf" --admin-password-file "$t/admin.pw" >"$t/out" 2>&1 ||
  { cat "$t/out"; fail "init"; }
grep -q 'z0 .*namespace nbd created' "$t/out" || { cat "$t/out"; fail "init output"; }
"$NBDSRV" pool init --config "$t/pool.conf" --admin-password-file "$t/admin.pw" >"$t/out" 2>&1 ||
  { cat "$t/out"; fail "second init"; }
grep -q 'z0 .*namespace nbd exists' "$t/out" || { cat "$t/out"; fail "second init output"; }

# the pool logs in (SELECT nbd SECURE …) and works
"$NBDSRV" pool check --config "$t/pool.conf" >"$t/out" 2>&1 || { cat "$t/out"; fail "check"; }
grep -q '4 of 4 backends passed' "$t/out" || { cat "$t/out"; fail "check output"; }
grep -q 'z1 .*ok .*zdb' "$t/out" || { cat "$t/out"; fail "dialect not detected as zdb"; }
out=$("$T" put --config "$t/pool.conf" --state "$t/s" --chunks 10 --size 20K 2>>"$t/tool.log") || fail "put: $out"
grep -q 'failed=0 degraded=0' <<<"$out" || fail "put: $out"
out=$("$T" get --config "$t/pool.conf" --state "$t/s" 2>>"$t/tool.log") || fail "get: $out"
grep -q 'ok=10 failed=0' <<<"$out" || fail "get: $out"
"$NBDSRV" pool status --config "$t/pool.conf" --json >"$t/json" || fail "status"
python3 - "$t/json" <<'PY' || fail "status JSON: $(cat "$t/json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert all(b["dialect"] == "zdb" and b["health"] in ("up", "slow") for b in d["backends"])
assert sum(b["entries"] for b in d["backends"]) >= 30   # shards + canaries
assert all(b["used_bytes"] > 0 for b in d["backends"])
PY
grep -q 'ns-Secret\|Adm1n' "$t/json" "$t/out" && fail "a password appears in the output"

# a wrong namespace password
sed 's/password_file = ns.pw/password = nope/' "$t/pool.conf" >"$t/bad.conf"
"$NBDSRV" pool status --config "$t/bad.conf" >"$t/out" 2>"$t/err" && fail "wrong password accepted"
grep -q 'backend z0 (127.0.0.1:[0-9]*): namespace password rejected' "$t/err" || { cat "$t/err"; fail "wrong-password error"; }
# a namespace in seq mode, one public with a password we do not have
# (read-only to us): refused at connect, with the reason
python3 - "${ports[2]}" <<'PY' || fail "setting up seq / read-only namespaces"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
def cmd(*a):
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in (y.encode() for y in a)))
    r = f.readline()
    assert r == b"+OK\r\n", (a, r)
cmd("AUTH", "Adm1n")
for c in (("NSNEW", "sq"), ("NSSET", "sq", "mode", "seq"), ("NSNEW", "ro"), ("NSSET", "ro", "password", "theirs")):
    cmd(*c)
PY
printf '[pool]\nk = 1\nm = 1\n[backend s]\nkind = zdb\naddress = 127.0.0.1:%s\nnamespace = sq\n' "${ports[2]}" >"$t/seq.conf"
printf '[backend r]\nkind = zdb\naddress = 127.0.0.1:%s\nnamespace = ro\n' "${ports[2]}" >>"$t/seq.conf"
"$NBDSRV" pool check --config "$t/seq.conf" >"$t/out" 2>&1 && fail "check with a seq / read-only namespace passed"
grep -q '^s .*FAIL .*sequential mode' "$t/out" || { cat "$t/out"; fail "seq-mode namespace: no clear error"; }
grep -q '^r .*FAIL .*read-only without its password' "$t/out" || { cat "$t/out"; fail "read-only namespace: no clear error"; }
# z3's namespace loses its password (NSSET nbd password *): 0-db still lets
# SELECT nbd SECURE in, so only NSINFO shows it — status says so
python3 - "${ports[3]}" <<'PY' || fail "clearing z3's namespace password"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
for a in (("AUTH", "Adm1n"), ("NSSET", "nbd", "password", "*")):
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in (y.encode() for y in a)))
    r = f.readline()
    assert r == b"+OK\r\n", (a, r)
PY
"$NBDSRV" pool status --config "$t/pool.conf" >"$t/out" 2>"$t/err" || { cat "$t/out" "$t/err"; fail "status, z3 without password"; }
grep -q '^z3 .*NO-PASSWORD' "$t/out" || { cat "$t/out"; fail "status: z3 not shown without password"; }
! grep -q '^z[012] .*NO-PASSWORD' "$t/out" || { cat "$t/out"; fail "status: a protected namespace shown without password"; }
"$NBDSRV" pool status --config "$t/pool.conf" --json 2>/dev/null >"$t/json" || fail "status --json"
python3 - "$t/json" <<'PY' || fail "status JSON ns_unprotected: $(cat "$t/json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert [b["name"] for b in d["backends"] if b["ns_unprotected"]] == ["z3"]
PY
info ok
