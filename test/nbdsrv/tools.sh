#!/usr/bin/env bash
# tools.sh — nbdsrv through the everyday tools: nbdinfo (--list, --json,
# --map, --can, --is), nbdcopy (round trip), qemu-io (pattern writes/reads)
# and qemu-img (convert, compare, map showing holes), over a unix socket and
# over TCP.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo nbdcopy qemu-io qemu-img python3 cmp
t=$(mktempdir)
truncate -s 32M "$t/disk"
truncate -s 1M "$t/other"
python3 -c 'import sys; sys.stdout.buffer.write(b"\x5a" * (1 << 20))' >"$t/ro"
port=$(free_port)
standin=${NBDSRV_STANDIN:-0}
listen=(--listen "127.0.0.1:$port")
roexp=(--export "ro=$t/ro,ro")
# nbdkit: -U and -p exclude each other; -r applies to all exports.
[ "$standin" = 1 ] && { listen=(); roexp=(--export "ro=$t/ro"); }
start_nbdsrv --unix "$t/sock" "${listen[@]}" \
  --export "disk=$t/disk,desc=tools disk" --export "other=$t/other" "${roexp[@]}"
[ ${#listen[@]} -eq 0 ] || port=$NBDSRV_PORT   # start_nbdsrv may have moved it
U="nbd+unix:///disk?socket=$t/sock"
T="nbd://127.0.0.1:$port/disk"
[ "$standin" = 1 ] && T=$U

# --- nbdinfo ------------------------------------------------------------
nbdinfo --list "$U" >"$t/list" || fail "nbdinfo --list"
for e in disk other ro; do
  grep -q "^export=\"$e\":" "$t/list" || { cat "$t/list" >&2; fail "--list lacks export $e"; }
done
[ "$standin" = 1 ] || grep -q 'description: tools disk' "$t/list" ||
  { cat "$t/list" >&2; fail "--list lacks the description"; }

nbdinfo --json "$T" >"$t/json" || fail "nbdinfo --json over TCP"
python3 - "$t/json" "$standin" <<'PY' || fail "nbdinfo --json facts"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
assert j["protocol"] == "newstyle-fixed", j["protocol"]
assert e["export-size"] == 32 << 20, e["export-size"]
assert e["is_read_only"] is False
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn",
          "can_cache", "can_df"):
    assert e[k] is True, k
assert "base:allocation" in e["contexts"], e["contexts"]
if sys.argv[2] != "1":
    assert e["can_fast_zero"] is True
    assert e["block_size_maximum"] == 64 << 20, e.get("block_size_maximum")
    assert e["description"] == "tools disk", e.get("description")
PY

for c in trim zero fua flush multi-conn cache df structured-reply; do
  nbdinfo --can "$c" "$U" || fail "nbdinfo --can $c: exit $?"
done
rc=0; nbdinfo --is read-only "$U" || rc=$?
[ $rc -eq 2 ] || fail "disk: nbdinfo --is read-only exit $rc, want 2 (false)"
[ "$standin" = 1 ] || {   # nbdkit -r makes every export read-only
  nbdinfo --is read-only "nbd+unix:///ro?socket=$t/sock" || fail "ro export is not read-only"
  rc=0; nbdinfo --can trim "nbd+unix:///ro?socket=$t/sock" || rc=$?
  [ $rc -eq 2 ] || fail "ro export: --can trim exit $rc, want 2"
}
[ "$(nbdinfo --size "$U")" = $((32 << 20)) ] || fail "nbdinfo --size"

# --- qemu-io: patterns, FUA, zero, discard --------------------------------
qio() {   # qio URI COMMANDS… — run qemu-io, fail on any verification error
  local uri=$1 out; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  out=$(qemu-io -f raw "${args[@]}" "$uri" 2>&1) || { echo "$out" >&2; fail "qemu-io $*"; }
  if echo "$out" | grep -qiE 'verification failed|error|failed'; then
    echo "$out" >&2; fail "qemu-io: $*"
  fi
}
qio "$U" 'write -P 0xab 0 1M' 'write -P 0xcd 1M 64k' 'write -f -P 0x11 2M 4k' \
  'write -z 3M 1M' 'flush' 'aio_write -P 0x22 4M 128k' 'aio_flush'
qio "$T" 'read -P 0xab 0 1M' 'read -P 0xcd 1M 64k' 'read -P 0x11 2M 4k' \
  'read -P 0 3M 1M' 'read -P 0x22 4M 128k' 'read -P 0 8M 1M'
qio "$U" 'discard 0 512k' 'read -P 0 0 512k' 'read -P 0xab 512k 512k' \
  'write -P 0x33 5000 3000' 'read -P 0x33 5000 3000' 'read -P 0 0 4096'
# The check must be able to fail: a wrong pattern is reported.
out=$(qemu-io -f raw -c 'read -P 0x99 1M 64k' "$U" 2>&1 || true)
echo "$out" | grep -q 'verification failed' || { echo "$out" >&2; fail "qemu-io did not detect a wrong pattern"; }

# --- nbdinfo --map shows data and holes -----------------------------------
nbdinfo --map "$U" >"$t/map" || fail "nbdinfo --map"
python3 - "$t/map" <<'PY' || { cat "$t/map" >&2; fail "--map: want hole at 0 (discarded), data at 512K, hole at 16M"; }
import sys
ext = [tuple(int(x) for x in l.split()[:3]) for l in open(sys.argv[1])]
def at(off):
    return [t for o, n, t in ext if o <= off < o + n][0]
assert sum(n for _, n, _ in ext) == 32 << 20
assert at(0) == 3 and at(600 << 10) == 0 and at(16 << 20) == 3
PY

# --- nbdcopy round trip ---------------------------------------------------
python3 - "$t/src" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(32 << 20)
    for i in range(0, 32, 3):           # data every 3 MiB, holes between
        f.seek(i << 20)
        f.write(os.urandom(1 << 20))
    f.seek((32 << 20) - 777)
    f.write(os.urandom(777))
PY
nbdcopy --flush "$t/src" "$U" || fail "nbdcopy file -> export"
nbdcopy "$T" "$t/dst" || fail "nbdcopy export -> file"
cmp "$t/src" "$t/dst" || fail "nbdcopy round trip differs"
nbdcopy --connections=4 --requests=16 "$U" "$t/dst2" || fail "nbdcopy 4 connections"
cmp "$t/src" "$t/dst2" || fail "nbdcopy (4 connections) round trip differs"

# --- qemu-img convert / compare / map -------------------------------------
qemu-img compare -f raw -F raw "$t/src" "$U" || fail "qemu-img compare after nbdcopy"
truncate -s 0 "$t/src2"; truncate -s 32M "$t/src2"
printf 'nbdsrv' | dd of="$t/src2" bs=1 seek=$((20 << 20)) conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$t/src2" "$U" || fail "qemu-img convert to export"
qemu-img compare -f raw -F raw "$t/src2" "$T" || fail "qemu-img compare after convert"
rc=0; qemu-img compare -q -f raw -F raw "$t/src" "$U" || rc=$?
[ $rc -eq 1 ] || fail "qemu-img compare of different images: exit $rc, want 1"
qemu-img convert -f raw -O raw "$U" "$t/dst3" || fail "qemu-img convert from export"
cmp "$t/src2" "$t/dst3" || fail "qemu-img convert round trip differs"
qemu-img map --output=json -f raw "$U" >"$t/qmap" || fail "qemu-img map"
python3 - "$t/qmap" <<'PY' || { cat "$t/qmap" >&2; fail "qemu-img map must show one data extent and holes"; }
import json, sys
m = json.load(open(sys.argv[1]))
data = [e for e in m if e["data"]]
holes = [e for e in m if not e["data"] and e["zero"]]
assert sum(e["length"] for e in m) == 32 << 20
assert holes and sum(e["length"] for e in holes) >= 31 << 20, holes
# The 6 written bytes are data; everything far from them is a hole.
assert data and all(e["start"] <= 20 << 20 < e["start"] + e["length"] or
                    abs(e["start"] - (20 << 20)) < (1 << 20) for e in data), data
PY
kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
