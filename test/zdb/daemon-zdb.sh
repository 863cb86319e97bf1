#!/usr/bin/env bash
# daemon-zdb.sh — the daemon end to end on six REAL 0-db servers (skipped
# without one: set ZDB=/path/to/zdb or put zdb on the PATH).  k=4 m=2,
# 256 KiB chunks, writeback, namespace "nbd" (b00-b02 private with a
# password, b03-b05 public without one), created by `nbdsrv pool init`.
#
# A. Hostile backends, before anything works: `pool status` before init
#    says the namespace does not exist; after init, b02's password is
#    changed (wrong password), b03's namespace deleted, b04's made public
#    with a password we do not have (read-only to us) and b05 is a zdb in
#    --mode seq.  `pool check` names each cause and exits 1; `serve` starts
#    anyway, shows the same causes in `status`, accepts a write and keeps it
#    dirty in the cache (2 usable backends < min_shards).  Once the four are
#    repaired, the write reaches the pool by itself — nothing lost.
# B. Data through the daemon: nbdcopy + qemu-io writes, `vol sync`, a
#    snapshot and a clone, overwrites whose old versions GC deletes on the
#    servers (their live key count, DBSIZE, comes back), a backend SIGSTOPped
#    past the request timeout while writes go on (0-db dies of SIGPIPE if
#    the client closes a socket it still owes replies to: it must survive).
# C. Persistence: EVERY zdb server restarted under the running daemon (0-db
#    keeps its data on disk), a write synced after, the daemon stopped,
#    cache.img deleted, daemon started: every byte of every volume, snapshot
#    and clone reads back from the pool.
# D. Degraded: b01 and b04 killed, cache.img deleted again: everything still
#    reads back (4 of 6 shards).  b04 back: a write lands degraded (5
#    shards, repair pending); b01 back: repair rewrites it whole
#    (repair_pending 0).  Proof: b00 and b02 killed (the degraded version
#    held 5 shards; without the repair only 3 would be left), cache deleted:
#    every byte still reads back.
# E. b05's namespace full (NSSET maxsize), b04's WORM: writes land degraded
#    and deletes fail, each said in the log; everything reads back.
# F. (0-db v2.0.x only: skipped when NSSET lock is refused) b03 locked
#    (read-only): writes land degraded, said in the log, repaired once
#    unlocked; b02 frozen across a daemon restart: down as "namespace is
#    frozen" (retried, not refused for good), writes degraded, repaired
#    once thawed; everything reads back.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires_zdb
requires python3 qemu-io nbdcopy cmp
t=$(mktempdir)
MiB=$((1 << 20))
PW="zdb-pw-$RANDOM"
E2E_DIR=$t E2E_CONF=$t/pool.conf E2E_SOCK=$t/nbd.sock E2E_CACHE=$t/cache
cleanup_push '[ "$rc" = 0 ] || e2e_show_log'

# backend I's password in the config (b00-b02), empty for the others.
pw_of() { if [ "$1" -lt 3 ]; then echo "$PW"; fi; }
# zcmd I ARGS… — one command to backend I, logged into namespace nbd.
zcmd() { _backend_py "${BACKEND_PORT[$1]}" zdb nbd "$(pw_of "$1")" cmd "${@:2}"; }
# zadmin I ARGS… — one admin command (NSNEW/NSSET/NSDEL) to backend I.
zadmin() { _backend_py "${BACKEND_PORT[$1]}" zdb default "" cmd "${@:2}"; }
# keys — live keys (DBSIZE) in namespace nbd over all six, canaries excluded.
keys() {
  local i n=0
  for ((i = 0; i < 6; i++)); do
    n=$((n + $(zcmd "$i" DBSIZE) - $(zcmd "$i" EXISTS nbdsrv.canary)))
  done
  echo "$n"
}
zdbs_alive() {
  local i
  for i in "$@"; do backend_running "$i" || return 1; done
}
# readback NAME… — every byte of each export equals $t/exp.NAME.
readback() {
  local n
  for n in "$@"; do
    rm -f "$t/got"
    nbdcopy "$(e2e_uri "$n")" "$t/got" || fail "$STEP: nbdcopy from $n"
    cmp "$t/got" "$t/exp.$n" || fail "$STEP: $n does not read back what was written"
  done
}
# patch NAME OFFSET LEN BYTE — the expected image after `write -P BYTE OFF LEN`.
patch() {
  python3 - "$t/exp.$1" "$2" "$3" "$4" <<'PY'
import sys
def size(x):
    m = {"K": 1 << 10, "M": 1 << 20}.get(x[-1], 1)
    return int(x.rstrip("KM")) * m
f, off, n, b = sys.argv[1], size(sys.argv[2]), size(sys.argv[3]), int(sys.argv[4], 0)
with open(f, "r+b") as h:
    h.seek(off); h.write(bytes([b]) * n)
PY
}
qwrite() {  # qwrite NAME OFFSET LEN BYTE
  qemu_io_ok -f raw -c "write -P $4 $2 $3" -c flush "$(e2e_uri "$1")" || fail "$STEP: write $1"
  patch "$1" "$2" "$3" "$4"
}
vsync() { "$NBDSRV" vol --config "$E2E_CONF" sync --timeout "${1:-60000}" >/dev/null || fail "$STEP: vol sync"; }

# --- the servers: b05 in sequential mode -------------------------------------
BACKEND_ZDB_ARGS="" backends_start zdb 5 "$t"
BACKEND_N=6 BACKEND_PORT[5]=$(free_port) BACKEND_DIR[5]=$t/backend5
BACKEND_ZDB_ARGS="--mode seq" _backend_launch 5
BACKEND_ZDB_ARGS="--mode seq" _backend_ready 5 newport   # relaunched in seq mode if its port was taken
"$NBDSRV" key generate "$t/pool.key" >/dev/null || fail "key generate"
{
  printf '[pool]\nk = 4\nm = 2\nchunk_size = 256K\nkey_file = %s\n' "$t/pool.key"
  printf 'cache_path = %s\ncache_size = 16M\ncache_mode = writeback\ntimeout_ms = 1500\n' "$E2E_CACHE"
  for ((i = 0; i < 6; i++)); do
    printf '\n[backend b%02d]\nkind = zdb\naddress = 127.0.0.1:%s\nnamespace = nbd\n' "$i" "${BACKEND_PORT[$i]}"
    [ -z "$(pw_of "$i")" ] || printf 'password = %s\n' "$PW"
  done
} >"$E2E_CONF"

# --- A. hostile backends -----------------------------------------------------
STEP=A
rc=0; "$NBDSRV" pool status --config "$E2E_CONF" >"$t/out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "backend b00 .*namespace does not exist" "$t/out" ||
  { cat "$t/out" >&2; fail "A: pool status before init: exit $rc, no 'namespace does not exist'"; }
"$NBDSRV" pool init --config "$E2E_CONF" >"$t/out" 2>&1 || { cat "$t/out" >&2; fail "A: pool init"; }
[ "$(zcmd 0 NSINFO nbd | grep -c '^password: yes')" = 1 ] || fail "A: pool init set no password on b00"
zadmin 2 NSSET nbd password wrong-one >/dev/null
zadmin 3 NSDEL nbd >/dev/null
zadmin 4 NSSET nbd password not-ours >/dev/null
zadmin 4 NSSET nbd public 1 >/dev/null
rc=0; "$NBDSRV" pool check --config "$E2E_CONF" >"$t/check" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$t/check" >&2; fail "A: pool check with 4 broken backends: exit $rc"; }
for want in "b00 +ok" "b01 +ok" "b02 +FAIL .*password rejected" "b03 +FAIL .*namespace does not exist" \
    "b04 +FAIL .*read-only without its password" "b05 +FAIL .*sequential mode"; do
  grep -Eq "^$want" "$t/check" || { cat "$t/check" >&2; fail "A: pool check: no line '$want'"; }
done
e2e_start --create-volume a=4M
"$NBDSRV" status --config "$E2E_CONF" >"$t/st" || fail "A: status"
for want in "b02 .*down .*password rejected" "b03 .*down .*namespace does not exist" \
    "b04 .*down .*read-only without its password" "b05 .*down .*sequential mode"; do
  grep -Eq "^$want" "$t/st" || { cat "$t/st" >&2; fail "A: status: no line '$want'"; }
done
truncate -s 4M "$t/exp.a"
qwrite a 256K 1M 0x5a
wait_for '[ "$(e2e_dirty)" -gt 0 ]' 60 || fail "A: the write is not shown dirty"
sleep 2
[ "$(e2e_dirty)" -gt 0 ] || fail "A: a write reached a pool of 2 usable backends"
kill -0 "$E2E_PID" || fail "A: daemon died"
zdbs_alive 0 1 2 3 4 5 || fail "A: a zdb server died"
# repair the four: the daemon reconnects by itself and flushes
zadmin 2 NSSET nbd password "$PW" >/dev/null
zadmin 3 NSNEW nbd >/dev/null
zadmin 4 NSSET nbd password '*' >/dev/null
backend_restart_empty 5
zadmin 5 NSNEW nbd >/dev/null
e2e_wait_clean 120
info "A: hostile backends reported (pool check, status), write kept then flushed"

# --- B. volumes, snapshot, clone, GC deletes on zdb, a stopped server -------
STEP=B
"$NBDSRV" vol --config "$E2E_CONF" create v 16M >/dev/null || fail "B: vol create"
head -c $((10 * MiB)) /dev/urandom >"$t/exp.v"
truncate -s 16M "$t/exp.v"
nbdcopy "$t/exp.v" "$(e2e_uri v)" || fail "B: nbdcopy into v"
vsync
"$NBDSRV" snap --config "$E2E_CONF" create v@s1 >/dev/null || fail "B: snap create"
"$NBDSRV" vol --config "$E2E_CONF" clone v@s1 c >/dev/null || fail "B: vol clone"
cp "$t/exp.v" "$t/exp.v@s1"; cp "$t/exp.v" "$t/exp.c"
qwrite v 1M 512K 0xab
qwrite c 3M 256K 0xcd
vsync
# earlier versions may still be on their way out: wait for a stable count
k1=$(keys) k=
for ((i = 0; i < 30 && k != k1; i++)); do sleep 2; k=$k1; k1=$(keys); done
[ "$k" = "$k1" ] || fail "B: the key count does not settle"
gc0=$(e2e_stat gc_versions)
qwrite v 1M 512K 0xac        # the 0xab versions are referenced by nothing now
vsync
wait_for '[ "$(keys)" = "$k1" ]' 60 ||
  fail "B: GC did not delete the overwritten versions on the zdb servers: $(keys) keys, expected $k1"
[ "$(e2e_stat gc_versions)" -gt "$gc0" ] || fail "B: gc_versions did not move"
readback v v@s1 c a
# b03 stopped past the 1.5 s request timeout while writes go to it
backend_stop 3
cleanup_push "kill -CONT ${BACKEND_PID[3]}"
qwrite v 6M 2M 0x3c
vsync
wait_for "grep -q 'backend b03 .*timed out' '$NBDSRV_LOG'" 30 || fail "B: no request to the stopped b03 timed out"
backend_cont 3
sleep 2
zdbs_alive 3 || fail "B: zdb b03 died after SIGCONT (SIGPIPE: the client closed a socket with replies pending)"
wait_for "e2e_ctl status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(b[\"health\"] == \"up\" for b in s[\"pool\"][\"backends\"]) else 1)'" 30 ||
  fail "B: b03 not up again after SIGCONT"
info "B: written, snapshot, clone, GC deletes reach zdb ($k1 live keys), stopped server survived"

# --- C. every zdb server restarted, cache file deleted -----------------------
STEP=C
for ((i = 0; i < 6; i++)); do backend_restart "$i"; done     # under the running daemon
qwrite v 15M 512K 0x42
vsync
e2e_stop
e2e_drop_cache
e2e_start
readback v v@s1 c a
[ "$(e2e_stat fetches)" -gt 0 ] || fail "C: nothing was fetched from the pool"
info "C: all six zdb servers restarted live, cache deleted: every byte read back from the pool"

# --- D. two down: degraded reads; a degraded write repaired -----------------
STEP=D
e2e_stop
backend_kill 1; backend_kill 4
e2e_drop_cache
e2e_start
readback v v@s1 c a
backend_restart 4
wait_for "e2e_ctl status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(b[\"health\"] == \"up\" for b in s[\"pool\"][\"backends\"]) == 5 else 1)'" 30 ||
  fail "D: b04 not up again"
qwrite v 12M 1M 0x77
vsync
[ "$(e2e_stat degraded_writes)" -gt 0 ] || fail "D: no degraded write with 5 of 6 backends"
[ "$(e2e_stat repair_pending)" -gt 0 ] || fail "D: no repair pending after degraded writes"
backend_restart 1
wait_for '[ "$(e2e_stat repair_pending)" = 0 ]' 120 || fail "D: repair did not finish"
vsync
e2e_stop
backend_kill 0; backend_kill 2
e2e_drop_cache
e2e_start
readback v v@s1 c a
e2e_stop
zdbs_alive 1 3 4 5 || fail "D: a zdb server died"
info "D: degraded reads with 2 down; degraded write repaired (readable with 2 others down)"

# --- E. a full namespace (maxsize) and a WORM one -----------------------------
STEP=E
backend_restart 0; backend_restart 2
zadmin 5 NSSET nbd maxsize 1 >/dev/null
zadmin 4 NSSET nbd worm 1 >/dev/null
e2e_start
qwrite v 14M 1M 0x99
vsync
qwrite v 14M 1M 0x9a         # the 0x99 versions are garbage: WORM b04 keeps them
vsync
wait_for "grep -q 'backend b05: write refused: .*No space left' '$NBDSRV_LOG'" 30 ||
  fail "E: no warning that b05 refuses writes (namespace full)"
wait_for "grep -q 'backend b04: delete refused: .*worm' '$NBDSRV_LOG'" 30 ||
  fail "E: no warning that b04 refuses deletes (WORM)"
grep -q "backend b04: namespace is in WORM mode" "$NBDSRV_LOG" || fail "E: WORM not reported at connect"
! grep -q "backend b04: cannot write the canary" "$NBDSRV_LOG" || fail "E: WORM namespace: canary write reported as an error"
e2e_stop
e2e_drop_cache
e2e_start
readback v v@s1 c a
e2e_stop
info "E: full and WORM namespaces reported, data intact"

# --- F. a locked namespace and a frozen one (0-db v2.0.x) --------------------
STEP=F
zadmin 5 NSSET nbd maxsize 0 >/dev/null
zadmin 4 NSSET nbd worm 0 >/dev/null
if [ "$(zadmin 3 NSSET nbd lock 1)" != OK ]; then
  info "F: skipped: this 0-db has no NSSET lock/freeze"
else
  e2e_start
  dw0=$(e2e_stat degraded_writes)
  qwrite v 13M 512K 0x61
  vsync
  [ "$(e2e_stat degraded_writes)" -gt "$dw0" ] || fail "F: no degraded write with b03 locked"
  # one warning a minute per backend: GC's deletes may be refused first
  wait_for "grep -Eq 'backend b03: (write|delete) refused: .*locked' '$NBDSRV_LOG'" 30 ||
    fail "F: no warning that the locked b03 refuses writes"
  zadmin 3 NSSET nbd lock 0 >/dev/null
  wait_for '[ "$(e2e_stat repair_pending)" = 0 ]' 120 || fail "F: writes refused by the locked b03 not repaired"
  e2e_stop
  [ "$(zadmin 2 NSSET nbd freeze 1)" = OK ] || fail "F: NSSET lock known but not freeze"
  e2e_start
  wait_for "grep -q 'backend b02 .*namespace is frozen' '$NBDSRV_LOG'" 30 ||
    fail "F: the frozen b02 is not reported as such"
  "$NBDSRV" status --config "$E2E_CONF" >"$t/st" || fail "F: status"
  grep -Eq "^b02 .*down .*namespace is frozen" "$t/st" || { cat "$t/st" >&2; fail "F: status: b02 not down as frozen"; }
  qwrite v 13M 512K 0x62
  vsync
  [ "$(e2e_stat repair_pending)" -gt 0 ] || fail "F: no repair pending with b02 frozen"
  zadmin 2 NSSET nbd freeze 0 >/dev/null
  wait_for '[ "$(e2e_stat repair_pending)" = 0 ]' 120 || fail "F: writes missed by the frozen b02 not repaired"
  e2e_stop
  e2e_drop_cache
  e2e_start
  readback v v@s1 c a
  e2e_stop
  zdbs_alive 0 1 2 3 4 5 || fail "F: a zdb server died"
  info "F: locked and frozen namespaces reported, writes repaired, data intact"
fi
echo "daemon-zdb.sh: ok"
