#!/usr/bin/env bash
# refusals.sh — a backend that stays up but refuses the cache's writes is
# named in `nbdsrv status` (zdb/pool.c records refusals, the cache's
# flusher pool is the one that meets them, the status pool never writes).
#   1. 3 backends, k=2 m=1 (min_shards 3: every flush needs all three);
#      b01 refuses writes — redis: maxmemory 1 + noeviction ("-OOM command
#      not allowed…"); 0-db (NBDSRV_TEST_BACKEND=zdb): NSSET maxsize 1 ("-No
#      space left on this namespace").  After a write, the flusher fails on
#      it: the status table's NOTE column of b01 says "refused N× (<the
#      server's words>) S s ago", --json has refused >= 1 and refusal
#      {error ENOSPC, message, age_s} for b01 and nothing for the others;
#      the objects are still not in the pool (pool_dirty > 0).
#   2. The limit lifted: `vol sync` succeeds, b01 holds shards, and after
#      the cache file's loss a restarted daemon reads every byte back.
#   3. Another kind of refusal, on b02, with that restarted daemon: redis
#      MISCONF (its last background save failed: save on, dir /proc) —
#      error EROFS; 0-db "Cannot write data right now" (its data file cannot
#      grow: RLIMIT_FSIZE at its size, SIGXFSZ ignored, as on a full disk) —
#      error EIO.  The NOTE and --json quote it, b01 has none (a new
#      daemon), nothing is lost: once lifted, the sync empties pool_dirty
#      and the data reads back.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 qemu-io
if [ "$BACKEND_TEST_KIND" = zdb ]; then
  requires prlimit
  BACKEND_NS=${BACKEND_NS:-refusals}   # 0-db's default namespace has no NSSET
  want_msg="No space left on this namespace"
  want_msg3="Cannot write data right now" want_err3=EIO
  # past RLIMIT_FSIZE a write fails (EFBIG) instead of killing 0-db; an
  # ignored signal stays ignored across exec
  trap '' XFSZ
else
  want_msg="OOM command not allowed"
  want_msg3="MISCONF Redis is configured to save RDB snapshots" want_err3=EROFS
  # CONFIG SET dir is a protected config on redis >= 7
  if redis-server --version | grep -Eq 'v=([7-9]|[1-9][0-9])\.'; then
    BACKEND_REDIS_ARGS="--enable-protected-configs yes"
  fi
fi
t=$(mktempdir)
e2e_pool 3 2 1 "$t" writeback 8M 256K "flush_idle_ms = 0
shutdown_flush_timeout_ms = 2000"
e2e_start --create-volume v=2M

refuse() {  # refuse on|off — backend 1 refuses writes (or not)
  local r
  if [ "$BACKEND_KIND" = zdb ]; then
    r=$(backend_cmd 1 NSSET "$(backend_ns)" maxsize "$([ "$1" = on ] && echo 1 || echo 0)")
  else
    r=$(backend_cmd 1 CONFIG SET maxmemory-policy noeviction) && [ "$r" = OK ] &&
      r=$(backend_cmd 1 CONFIG SET maxmemory "$([ "$1" = on ] && echo 1 || echo 0)")
  fi
  [ "$r" = OK ] || fail "backend 1: cannot turn refusals $1: $r"
}

# 1. b01 refuses: status names it
refuse on
qemu-io -f raw -c "write -P 0x3c 0 256k" -c "write -P 0x4d 700k 300k" -c flush \
  "$(e2e_uri v)" >/dev/null || fail "write"
note_re="^b01 .*refused [0-9]+× \\($want_msg.*\\) [0-9]+ s ago"
wait_for "e2e_ctl status | grep -Eq '$note_re'" 120 ||
  { e2e_ctl status >&2; fail "status text: no 'refused N× ($want_msg…) S s ago' NOTE for b01"; }
txt=$(e2e_ctl status) || fail "status"
info "$(grep '^b01 ' <<<"$txt")"
if grep -E '^b0[02] ' <<<"$txt" | grep -q refused; then
  echo "$txt" >&2; fail "status text: a backend that refused nothing has a refusal NOTE"
fi
e2e_ctl status --json >"$t/status.json" || fail "status --json"
python3 - "$t/status.json" "$want_msg" <<'PY' || fail "status --json: refusals (above)"
import json, sys
st, want = json.load(open(sys.argv[1])), sys.argv[2]
bes = {b["name"]: b for b in st["pool"]["backends"]}
b = bes["b01"]
assert b["refused"] >= 1, "b01 refused %r" % b["refused"]
r = b["refusal"]
assert r["error"] == "ENOSPC", r
assert want in r["message"], r
assert 0 <= r["age_s"] < 600, r
for n in ("b00", "b02"):
    assert bes[n]["refused"] == 0 and bes[n]["refusal"] is None, bes[n]
PY
d=$(e2e_dirty) || fail "status: pool_dirty"
[ "$d" -gt 0 ] || fail "pool_dirty $d while b01 refuses every shard (want > 0)"
info "1: b01's refusals are in status (text NOTE and --json); $d objects wait for the pool"

# 2. the limit lifted: the data reaches the pool, nothing is lost
refuse off
e2e_ctl vol sync || fail "vol sync after the limit was lifted"
d=$(e2e_dirty) || fail "status: pool_dirty"
[ "$d" = 0 ] || fail "pool_dirty $d after the sync"
n=$(backend_keys 1)
[ "$n" -gt 0 ] || fail "b01 holds no shard after the sync"
e2e_stop
e2e_drop_cache
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x3c 0 256k" -c "read -P 0x4d 700k 300k" \
  -c "read -P 0 256k 444k" "$(e2e_uri v)" || fail "read back from the pool"
info "2: after the limit was lifted the objects reached the pool ($n keys on b01) and read back"

# 3. b02 refuses another way
refuse3() {  # refuse3 on|off
  local r pid=${BACKEND_PID[2]} df
  if [ "$BACKEND_KIND" = zdb ]; then
    if [ "$1" = on ]; then
      df=$(ls "${BACKEND_DIR[2]}/data/$(backend_ns)"/zdb-data-* | tail -1) || fail "b02: no data file"
      prlimit --pid "$pid" --fsize="$(stat -c %s "$df"):unlimited" || fail "prlimit"
      cleanup_push "prlimit --pid $pid --fsize=unlimited:unlimited 2>/dev/null || true"
    else
      prlimit --pid "$pid" --fsize=unlimited:unlimited || fail "prlimit off"
    fi
    return
  fi
  if [ "$1" = on ]; then
    r=$(backend_cmd 2 CONFIG SET save "3600 1") && [ "$r" = OK ] &&
      r=$(backend_cmd 2 CONFIG SET dir /proc) && [ "$r" = OK ] &&   # root cannot create a file there
      r=$(backend_cmd 2 BGSAVE) && grep -q started <<<"$r" || fail "b02: $r"
    wait_for "backend_cmd 2 INFO persistence | grep -q '^rdb_last_bgsave_status:err'" 60 ||
      fail "b02: BGSAVE did not fail"
  else
    r=$(backend_cmd 2 CONFIG SET dir "${BACKEND_DIR[2]}") && [ "$r" = OK ] &&
      r=$(backend_cmd 2 CONFIG SET save "") && [ "$r" = OK ] || fail "b02: $r"
  fi
}
refuse3 on
qemu-io -f raw -c "write -P 0x5e 1M 512k" -c flush "$(e2e_uri v)" >/dev/null || fail "write (3)"
note_re="^b02 .*refused [0-9]+× \\($want_msg3.*\\) [0-9]+ s ago"
wait_for "e2e_ctl status | grep -Eq '$note_re'" 120 ||
  { e2e_ctl status >&2; fail "status text: no 'refused N× ($want_msg3…) S s ago' NOTE for b02"; }
info "$(e2e_ctl status | grep '^b02 ')"
e2e_ctl status --json >"$t/status3.json" || fail "status --json"
python3 - "$t/status3.json" "$want_msg3" "$want_err3" <<'PY' || fail "status --json: b02's refusals (above)"
import json, sys
st, want, err = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
bes = {b["name"]: b for b in st["pool"]["backends"]}
r = bes["b02"]["refusal"]
assert bes["b02"]["refused"] >= 1 and r["error"] == err and r["message"].startswith(want), r
assert len(r["message"]) < 100, r
for n in ("b00", "b01"):
    assert bes[n]["refused"] == 0 and bes[n]["refusal"] is None, bes[n]
PY
d=$(e2e_dirty) || fail "status: pool_dirty"
[ "$d" -gt 0 ] || fail "pool_dirty $d while b02 refuses every shard (want > 0)"
refuse3 off
e2e_ctl vol sync || fail "vol sync after b02 was fixed"
d=$(e2e_dirty) || fail "status: pool_dirty"
[ "$d" = 0 ] || fail "pool_dirty $d after the sync"
e2e_stop
e2e_drop_cache
e2e_start
qemu_io_ok -f raw -r -c "read -P 0x3c 0 256k" -c "read -P 0x5e 1M 512k" "$(e2e_uri v)" ||
  fail "read back from the pool (3)"
e2e_stop
info "3: b02's $want_err3 refusal ($want_msg3) was shown; once lifted the data reached the pool"
