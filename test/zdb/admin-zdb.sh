#!/usr/bin/env bash
# admin-zdb.sh — `nbdsrv pool init` against REAL 0-db servers started with
# --admin (skipped without one: set ZDB=/path/to/zdb or put zdb on the PATH).
# Without the admin password the server refuses NSNEW; with a wrong one the
# admin login (AUTH SECURE CHALLENGE + AUTH SECURE sha1) is refused and said
# so; with the right one each namespace is created private with its
# password, twice (the second says it exists).  The pool then logs in with
# SELECT ns SECURE, and a client without the password is kept out.
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires_zdb
requires python3
T=$TEST_BIN_DIR/zdb/zdb_tool
t=$(mktempdir)
APW="adm-$RANDOM$RANDOM"
BACKEND_ZDB_ARGS="--admin $APW" backends_start zdb 3 "$t"
printf '%s\n' "$APW" >"$t/admin.pw"
printf 'not-%s\n' "$APW" >"$t/bad.pw"
printf 'ns-%s\n' "$RANDOM$RANDOM" >"$t/ns.pw"
{
  printf '[pool]\nk = 2\nm = 1\n'
  for i in 0 1 2; do
    printf '[backend z%d]\nkind = zdb\naddress = 127.0.0.1:%s\nnamespace = nbd\npassword_file = ns.pw\n' \
      "$i" "${BACKEND_PORT[$i]}"
  done
} >"$t/pool.conf"
# zplain I ARGS… — one command to backend I as an anonymous client.
zplain() { _backend_py "${BACKEND_PORT[$1]}" zdb default "" cmd "${@:2}"; }

"$NBDSRV" pool status --config "$t/pool.conf" >"$t/out" 2>"$t/err" && fail "status before init succeeded"
grep -q 'backend z0 .*namespace does not exist' "$t/err" || { cat "$t/err" >&2; fail "missing-namespace error"; }

"$NBDSRV" pool init --config "$t/pool.conf" >"$t/out" 2>"$t/err" && fail "init without the admin password succeeded"
grep -q 'z0: NSNEW nbd: .*Permission denied' "$t/err" || { cat "$t/err" >&2; fail "init without admin: no 'Permission denied'"; }
"$NBDSRV" pool init --config "$t/pool.conf" --admin-password-file "$t/bad.pw" >"$t/out" 2>"$t/err" &&
  fail "init with a wrong admin password succeeded"
grep -q 'z0: admin login refused: .*Access denied' "$t/err" || { cat "$t/err" >&2; fail "wrong admin password: no 'admin login refused'"; }
! grep -q "not-$APW" "$t/err" "$t/out" || fail "the admin password was printed"

"$NBDSRV" pool init --config "$t/pool.conf" --admin-password-file "$t/admin.pw" >"$t/out" 2>&1 ||
  { cat "$t/out" >&2; fail "init"; }
grep -q 'z0 .*namespace nbd created' "$t/out" || { cat "$t/out" >&2; fail "init output"; }
"$NBDSRV" pool init --config "$t/pool.conf" --admin-password-file "$t/admin.pw" >"$t/out" 2>&1 ||
  { cat "$t/out" >&2; fail "second init"; }
grep -q 'z0 .*namespace nbd exists' "$t/out" || { cat "$t/out" >&2; fail "second init output"; }
for i in 0 1 2; do
  zplain "$i" NSINFO nbd >"$t/nsinfo" || fail "NSINFO on z$i"
  grep -q '^password: yes' "$t/nsinfo" && grep -q '^public: no' "$t/nsinfo" ||
    { cat "$t/nsinfo" >&2; fail "z$i: namespace not private with a password"; }
  [ "$(zplain "$i" SELECT nbd)" = "-Namespace protected and private" ] || fail "z$i: anonymous SELECT let in"
done

"$NBDSRV" pool check --config "$t/pool.conf" >"$t/out" 2>&1 || { cat "$t/out" >&2; fail "check"; }
grep -q '3 of 3 backends passed' "$t/out" || { cat "$t/out" >&2; fail "check output"; }
grep -q 'z1 .*ok .*zdb' "$t/out" || { cat "$t/out" >&2; fail "dialect not detected as zdb"; }
out=$("$T" put --config "$t/pool.conf" --state "$t/s" --chunks 6 --size 20K 2>>"$t/tool.log") || fail "put: $out"
grep -q 'failed=0 degraded=0' <<<"$out" || fail "put: $out"
out=$("$T" get --config "$t/pool.conf" --state "$t/s" 2>>"$t/tool.log") || fail "get: $out"
grep -q 'ok=6 failed=0' <<<"$out" || fail "get: $out"
echo "admin-zdb.sh: ok"
