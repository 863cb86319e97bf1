#!/usr/bin/env bash
# persist.sh — persistent volumes: `serve --config` on 6 redis backends
# (zdb with NBDSRV_TEST_BACKEND=zdb) (k=4 m=2, 256 KiB chunks, a 24 MiB SSD cache, writeback) serves volumes
# whose data, snapshots and clones survive a SIGTERM + restart; the
# shutdown exits 0; a second daemon on the same cache_path is refused with a
# message; --create-volume is idempotent; vol.create with another chunk
# size is refused; `vol rm` + `snap rm` let the cache delete every shard:
# the backends' key count goes back to what it was before any write.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
requires nbdinfo nbdcopy qemu-io python3 cmp
requires_test_backend
t=$(mktempdir)
ctl=$t/cache/nbdsrv.ctl
uri() { echo "nbd+unix:///$1?socket=$t/sock"; }
vol() { "$NBDSRV" vol --control "$ctl" "$@"; }
snap() { "$NBDSRV" snap --control "$ctl" "$@"; }
MiB=$((1 << 20))
# keys — how many keys the 6 backends hold together (not counting the
# pool's canary key).
keys() {
  local i n=0
  for ((i = 0; i < BACKEND_N; i++)); do n=$((n + $(backend_keys $i))); done
  echo $n
}

backends_start "$BACKEND_TEST_KIND" 6 "$t"
"$NBDSRV" key generate "$t/pool.key" >/dev/null || fail "key generate"
backends_config "$t/pool.conf" 4 2 0 "chunk_size = 256K
key_file = $t/pool.key
cache_path = $t/cache
cache_size = 24M
cache_mode = writeback"
keys0=$(keys)

NBDSRV_LOG=$t/serve1.log
start_nbdsrv --config "$t/pool.conf" --unix "$t/sock" --create-volume v=16M
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket"
grep -q "volumes: persistent" "$NBDSRV_LOG" || fail "the daemon did not start persistent volumes"
nbdinfo --list "$(uri "")" | grep -q '^export="v":' || fail "--create-volume: no export v"

# --- a second daemon on the same cache_path is refused ----------------------
rc=0; "$NBDSRV" serve --config "$t/pool.conf" --unix "$t/sock2" >"$t/second.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "second daemon on one cache_path: exit $rc"
grep -q "in use by another process" "$t/second.out" || { cat "$t/second.out" >&2; fail "second daemon: no clear message"; }
nbdinfo --size "$(uri v)" >/dev/null || fail "the first daemon was disturbed by the second"

# --- chunk size is the pool's -------------------------------------------------
rc=0; vol create w 4M --chunk-size 1M >"$t/out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "chunk_size" "$t/out" || { cat "$t/out" >&2; fail "vol create with a foreign chunk size: exit $rc"; }

# --- data, snapshot, clone ---------------------------------------------------
head -c $((12 * MiB)) /dev/urandom >"$t/img"
nbdcopy "$t/img" "$(uri v)" || fail "nbdcopy into v"
snap create v@s1 >/dev/null || fail "snap create"
qemu-io -f raw -c "write -P 0xab 1M 512K" "$(uri v)" >/dev/null || fail "qemu-io write"
qemu-io -f raw -c "write -z 4M 1M" "$(uri v)" >/dev/null || fail "qemu-io write -z"
vol clone v@s1 c >/dev/null || fail "vol clone"
qemu-io -f raw -c "write -P 0x5c 8M 300K" "$(uri c)" >/dev/null || fail "qemu-io write into the clone"
# what each one must read
cp "$t/img" "$t/v.want"
python3 - "$t/v.want" "$t/img" "$t/c.want" <<'PY'
import sys
v = bytearray(open(sys.argv[1], "rb").read()) + bytearray(4 << 20)
v[1 << 20:(1 << 20) + (512 << 10)] = b"\xab" * (512 << 10)
v[4 << 20:5 << 20] = bytes(1 << 20)
open(sys.argv[1], "wb").write(v)
c = bytearray(open(sys.argv[2], "rb").read()) + bytearray(4 << 20)
c[8 << 20:(8 << 20) + (300 << 10)] = b"\x5c" * (300 << 10)
open(sys.argv[3], "wb").write(c)
PY
cp "$t/img" "$t/s1.want"; truncate -s 16M "$t/s1.want"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || { tail "$NBDSRV_LOG" >&2; fail "SIGTERM: exit $rc"; }

# --- restart: everything is there -----------------------------------------------
NBDSRV_LOG=$t/serve2.log
start_nbdsrv --config "$t/pool.conf" --unix "$t/sock" --create-volume v=16M
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket after restart"
vol ls >"$t/ls" || fail "vol ls after restart"
grep -q "^v " "$t/ls" && grep -q "^c " "$t/ls" || { cat "$t/ls" >&2; fail "volumes lost at restart"; }
snap ls v | grep -q s1 || fail "snapshot lost at restart"
for e in v:v v@s1:s1 c:c; do
  nbdcopy "$(uri "${e%%:*}")" "$t/got" || fail "nbdcopy from ${e%%:*} after restart"
  cmp "$t/got" "$t/${e##*:}.want" || fail "${e%%:*} reads differently after restart"
done
info "v, v@s1, c read back equal after restart"

# --- delete everything: the backends' keys go back to the start -------------
wait_for "[ \$(keys) -gt $keys0 ]" 60 || fail "nothing reached the backends"
info "keys: $keys0 before, $(keys) with data"
vol rm c >/dev/null || fail "vol rm c"
snap rm v@s1 >/dev/null || fail "snap rm v@s1"
vol rm v >/dev/null || fail "vol rm v"
wait_for "[ \$(keys) -eq $keys0 ]" 30 || fail "after vol rm + gc the backends still hold $(keys) keys (had $keys0 before any write)"
rc=0; stop_nbdsrv || rc=$?
[ "$rc" = 0 ] || fail "second SIGTERM: exit $rc"
echo "ok"
