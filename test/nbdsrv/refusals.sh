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
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 qemu-io
if [ "$BACKEND_TEST_KIND" = zdb ]; then
  BACKEND_NS=${BACKEND_NS:-refusals}   # 0-db's default namespace has no NSSET
  want_msg="No space left on this namespace"
else
  want_msg="OOM command not allowed"
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
e2e_stop
info "2: after the limit was lifted the objects reached the pool ($n keys on b01) and read back"
