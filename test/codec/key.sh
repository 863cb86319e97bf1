# test/codec/key.sh — `nbdsrv key generate|check`: a new key is 32 bytes of
# mode 0600 (whatever the umask); an existing file is never overwritten
# without --force, and --force replaces it whole; check says "ok" for a good
# key and names the reason (permissions, size, missing, symlink) otherwise.
source "$SRC_DIR/test/functions.sh"

t=$(mktempdir)
mkdir "$t/keys"
k=$t/keys/pool.key

# run EXPECTED-RC CMD… — output in $t/out (stdout and stderr).
run() {
  local want=$1 rc=0
  shift
  "$@" >"$t/out" 2>&1 || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$t/out" >&2; fail "'$*' exited $rc, expected $want"; }
}

(umask 000 && "$NBDSRV" key generate "$k") >"$t/out" 2>&1 || { cat "$t/out"; fail "generate"; }
[ "$(stat -c %a "$k")" = 600 ] || fail "mode $(stat -c %a "$k") after generate under umask 000"
[ "$(stat -c %s "$k")" = 32 ] || fail "size $(stat -c %s "$k")"
first=$(od -An -tx1 "$k" | tr -d ' \n')
[ "$first" != "$(printf '%064d' 0)" ] || fail "key is all zeros"

run 1 "$NBDSRV" key generate "$k"
grep -q 'already exists' "$t/out" || fail "overwrite refusal unclear: $(cat "$t/out")"
grep -q -- '--force' "$t/out" || fail "refusal does not mention --force: $(cat "$t/out")"
[ "$(od -An -tx1 "$k" | tr -d ' \n')" = "$first" ] || fail "refused generate changed the key"

run 0 "$NBDSRV" key check "$k"
[ "$(cat "$t/out")" = ok ] || fail "check of a good key printed: $(cat "$t/out")"

run 0 "$NBDSRV" key generate --force "$k"
[ "$(od -An -tx1 "$k" | tr -d ' \n')" != "$first" ] || fail "--force kept the old key"
[ "$(stat -c %a:%s "$k")" = 600:32 ] || fail "after --force: $(stat -c %a:%s "$k")"
[ "$(ls "$t/keys")" = pool.key ] || fail "--force left files behind: $(ls "$t/keys")"
run 0 "$NBDSRV" key check "$k"

chmod 644 "$k"
run 1 "$NBDSRV" key check "$k"
grep -q 'group/others (mode 0644)' "$t/out" || fail "no permission reason: $(cat "$t/out")"
grep -q 'chmod 600' "$t/out" || fail "no fix suggested: $(cat "$t/out")"
grep -qx ok "$t/out" && fail "check printed ok for a 0644 key"
chmod 600 "$k"

head -c 31 /dev/urandom >"$t/short.key" && chmod 600 "$t/short.key"
run 1 "$NBDSRV" key check "$t/short.key"
grep -q '31 bytes' "$t/out" || fail "wrong size not named: $(cat "$t/out")"
head -c 33 /dev/urandom >"$t/long.key" && chmod 600 "$t/long.key"
run 1 "$NBDSRV" key check "$t/long.key"
grep -q '33 bytes' "$t/out" || fail "wrong size not named: $(cat "$t/out")"

run 1 "$NBDSRV" key check "$t/missing.key"
grep -q "$t/missing.key: No such file" "$t/out" || fail "missing file: $(cat "$t/out")"
ln -s "$k" "$t/link.key"
run 1 "$NBDSRV" key check "$t/link.key"
grep -q 'symbolic links are refused' "$t/out" || fail "symlink: $(cat "$t/out")"
run 1 "$NBDSRV" key generate "$t/nodir/x.key"
grep -q 'No such file or directory' "$t/out" || fail "bad directory: $(cat "$t/out")"

run 2 "$NBDSRV" key
run 2 "$NBDSRV" key check
run 2 "$NBDSRV" key check "$k" extra
run 2 "$NBDSRV" key generate --bogus "$k"
run 2 "$NBDSRV" key frobnicate "$k"
run 0 "$NBDSRV" key --help
echo "PASS: key.sh"
