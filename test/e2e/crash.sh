#!/usr/bin/env bash
# crash.sh — SIGKILL the daemon at random moments (issue 6 and issue 5's crash
# tests) on the persistent path: volume → SSD cache (writeback) → codec →
# pool of 6 redis-servers, k=4 m=2.
#
# Each iteration (E2E_CRASH_ITERS, default 12; the seed is printed) restarts
# the daemon on the same cache and checks, before doing anything new:
#   - volume "v": every block holds a write at least as new as the one
#     acknowledged before the last COMPLETED flush (e2e_blk verify --floor:
#     a lost flushed write, a torn, misplaced or foreign block all fail);
#   - every snapshot whose creation was acknowledged exists and reads
#     exactly as the volume was when it was taken (e2e_blk --exact), every
#     acknowledged snapshot or volume removal is gone, and an operation
#     killed before its answer either happened or did not — wholly;
#   - a scratch volume whose creation and writes were acknowledged and
#     flushed reads back exactly.
# Then one random action is killed: (half the time) the writer (QD 16, 4 KiB
# random writes, a FLUSH every 50–300 ms) at a random moment in its first
# 2 s, else a snapshot create, a snapshot rm or a volume rm, 0–60 ms after
# the command was sent.
# The last iteration switches to writethrough and kills during writes; the
# restart after its kill deletes the cache file: the volume must then open
# from the pool alone with the same guarantees (writethrough FLUSH =
# committed in the pool).
#
# fio --verify=crc32c too: in the first iteration fio fills volume "f"
# (16 MiB, 4 KiB random writes QD 16, end_fsync) just before the kill; every
# restart then runs fio --verify_only on it (the whole range: its last
# completed fsync covers every write).  But the main check is e2e_blk, not
# fio (e2e_blk.c explains why): a crc32c header only proves a block is
# internally consistent, so a block that went back to an older complete
# version (a lost flushed write) passes fio's verify; e2e_blk checks each
# block against the generation acknowledged before the last completed flush.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"
source "$SRC_DIR/test/e2e/lib.sh"
requires python3 flock fio
requires_test_backend
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio lacks the nbd engine" >&2; exit 77; }
BLK=$TEST_BIN_DIR/e2e/e2e_blk
[ -x "$BLK" ] || { echo "SKIP: $(basename "$0"): no $BLK (libnbd-dev missing?)" >&2; exit 77; }

iters=${E2E_CRASH_ITERS:-12}
blocks=8192            # 32 MiB of "v"
t=$(mktempdir)
mkdir "$t/snaps" "$t/scr"
e2e_seed
RANDOM=$E2E_SEED
e2e_pool 6 4 2 "$t" writeback 256M 256K
e2e_start --create-volume v=32M

# Expected state: $t/v.state (floor of v), $t/snaps/NAME.state (exact
# content) + $t/snaps/NAME.st ("yes" must exist, "maybe" unknown, removed
# when acknowledged gone); $t/scr/NAME.st and .state the same for scratch
# volumes.
blk() { "$BLK" "$@" --seed "$E2E_SEED"; }

snap_names() {   # the snapshots of v the daemon lists, one per line
  e2e_ctl snap ls v --json | python3 -c '
import json, sys
for s in json.load(sys.stdin)["snapshots"]: print(s["name"] if isinstance(s, dict) else s)'
}
vol_names() {
  e2e_ctl vol ls --json | python3 -c '
import json, sys
for v in json.load(sys.stdin)["volumes"]: print(v["name"])'
}

fio_f() {        # fio_f ARGS… — fio's crc32c job on volume f
  (cd "$t" && fio --name=f --ioengine=nbd "--uri=$(e2e_uri f)" --rw=randwrite --bs=4k \
    --iodepth=16 --size=16M --verify=crc32c --randrepeat=1 --output-format=terse "$@")
}

check_all() {   # check_all ITER — the guarantees after a restart
  local it=$1 f name st have
  fio_f --verify_only >"$t/fio.out" 2>&1 ||
    { cat "$t/fio.out" >&2; fail "iteration $it: fio --verify_only on f"; }
  blk verify "$(e2e_uri v)" --blocks $blocks --state "$t/v.state" --floor --out "$t/v.read" \
    >"$t/verify.out" 2>&1 || { cat "$t/verify.out" >&2; fail "iteration $it: volume v"; }
  cat "$t/verify.out" >&2
  snap_names >"$t/snap.ls" || fail "iteration $it: snap ls v"
  for f in "$t"/snaps/*.st; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .st)
    st=$(cat "$f")
    have=0
    grep -qx "$name" "$t/snap.ls" && have=1
    if [ $have = 0 ]; then
      [ "$st" != yes ] || fail "iteration $it: acknowledged snapshot v@$name is missing"
      rm -f "$f" "$t/snaps/$name.state"
      continue
    fi
    [ "$st" = gone ] && fail "iteration $it: snapshot v@$name is listed after its rm was acknowledged"
    blk verify "$(e2e_uri "v@$name")" --blocks $blocks --state "$t/snaps/$name.state" --exact \
      >"$t/verify.out" 2>&1 || { cat "$t/verify.out" >&2; fail "iteration $it: snapshot v@$name"; }
    echo yes >"$f"
  done
  while read -r name; do
    [ -e "$t/snaps/$name.st" ] || fail "iteration $it: snapshot v@$name exists but was never created"
  done <"$t/snap.ls"
  vol_names >"$t/vol.ls" || fail "iteration $it: vol ls"
  grep -qx v "$t/vol.ls" || fail "iteration $it: volume v is gone"
  grep -qx f "$t/vol.ls" || fail "iteration $it: volume f is gone"
  for f in "$t"/scr/*.st; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .st)
    st=$(cat "$f")
    if ! grep -qx "$name" "$t/vol.ls"; then
      [ "$st" != yes ] || fail "iteration $it: acknowledged volume $name is missing"
      rm -f "$t/scr/$name".*
      continue
    fi
    [ "$st" != gone ] || fail "iteration $it: volume $name is listed after its rm was acknowledged"
    blk verify "$(e2e_uri "$name")" --blocks 256 --state "$t/scr/$name.state" --exact \
      >"$t/verify.out" 2>&1 || { cat "$t/verify.out" >&2; fail "iteration $it: volume $name"; }
    echo yes >"$f"
  done
  while read -r name; do
    [ "$name" = v ] || [ "$name" = f ] || [ -e "$t/scr/$name.st" ] ||
      fail "iteration $it: volume $name exists but was never created"
  done <"$t/vol.ls"
}

# write_v RUN DURATION-MS — the verifying writer on v (generations of run R
# start at R << 32, above every earlier run's), to completion (0) or
# until the daemon dies (3); v.state follows its completed flushes.
write_v() {
  local rc=0
  blk write "$(e2e_uri v)" --blocks $blocks --state "$t/v.read" --out "$t/v.state" \
    --gen-base $(($1 << 32)) --qd 16 --flush-ms $((50 + RANDOM % 250)) --duration-ms "$2" \
    >>"$t/writer.out" 2>&1 || rc=$?
  return $rc
}

# kill_during DELAY-MS CMD… — run an nbdsrv control command in the
# background, SIGKILL the daemon DELAY ms later; prints the command's exit
# status (0 = it was acknowledged before the kill).
kill_during() {
  local delay=$1 pid rc=0
  shift
  "$@" >/dev/null 2>&1 &
  pid=$!
  sleep "$(printf '0.%03d' "$delay")"
  e2e_kill
  wait "$pid" || rc=$?
  echo $rc
}

total=$SECONDS
for ((it = 1; it <= iters; it++)); do
  if [ "$it" -gt 1 ]; then
    e2e_start
    check_all "$it"
  else
    e2e_ctl vol create f 16M >/dev/null || fail "vol create f"
    fio_f --do_verify=0 --end_fsync=1 >"$t/fio.out" 2>&1 ||
      { cat "$t/fio.out" >&2; fail "fio write on f"; }
  fi
  if [ "$it" -eq "$iters" ]; then
    # Writethrough from here on; the cache file is deleted after this
    # iteration's kill, so everything earlier must be in the pool by then
    # (the writer's first FLUSH in writethrough mode returns only when
    # every object dirtied before it is committed in the pool)
    e2e_stop
    e2e_set_mode writethrough
    e2e_start
    info "writethrough from here"
  fi
  # Every iteration writes first, cleanly: snapshots and removals then
  # work on a known, fully flushed state.
  write_v $((2 * it)) $((300 + RANDOM % 700)) || fail "iteration $it: writer failed ($(tail -1 "$t/writer.out"))"
  cp "$t/v.state" "$t/v.read"
  op=$((RANDOM % 6))
  op=$((op < 3 ? 0 : op - 2))      # half the kills during writes
  [ "$it" -eq 1 ] && op=1           # the first iteration makes a snapshot to work on
  [ "$it" -eq "$iters" ] && op=0     # writethrough: flushed = in the pool, under writes
  [ $op = 2 ] && ! grep -qlx yes "$t"/snaps/*.st 2>/dev/null && op=1
  delay=$((RANDOM % 60))
  case $op in
    0)
      write_v $((2 * it + 1)) 60000 &
      wpid=$!
      sleep "$(printf '%d.%03d' $((RANDOM % 2)) $((RANDOM % 1000)))"
      e2e_kill
      rc=0; wait "$wpid" || rc=$?
      [ "$rc" = 3 ] || fail "iteration $it: writer exit $rc, expected 3 (server gone): $(tail -2 "$t/writer.out")"
      what="kill during writes"
      ;;
    1)
      name=s$it
      cp "$t/v.state" "$t/snaps/$name.state"
      echo maybe >"$t/snaps/$name.st"
      rc=$(kill_during "$delay" e2e_ctl snap create "v@$name")
      [ "$rc" = 0 ] && echo yes >"$t/snaps/$name.st"
      what="kill ${delay} ms into snap create v@$name (acked: $([ "$rc" = 0 ] && echo yes || echo no))"
      ;;
    2)
      name=$(grep -lx yes "$t"/snaps/*.st 2>/dev/null | head -1 | xargs -r basename -s .st || true)
      if [ -z "$name" ]; then
        e2e_kill
        what="kill (no snapshot to remove)"
      else
        echo maybe >"$t/snaps/$name.st"
        rc=$(kill_during "$delay" e2e_ctl snap rm "v@$name")
        [ "$rc" = 0 ] && echo gone >"$t/snaps/$name.st"
        what="kill ${delay} ms into snap rm v@$name (acked: $([ "$rc" = 0 ] && echo yes || echo no))"
      fi
      ;;
    3)
      name=scr$it
      echo maybe >"$t/scr/$name.st"
      e2e_ctl vol create "$name" 1M >/dev/null || fail "iteration $it: vol create $name"
      blk write "$(e2e_uri "$name")" --blocks 256 --state "$t/scr/$name.none" \
        --out "$t/scr/$name.state" --duration-ms 200 >>"$t/writer.out" 2>&1 ||
        fail "iteration $it: writing $name"
      rc=$(kill_during "$delay" e2e_ctl vol rm "$name")
      [ "$rc" = 0 ] && echo gone >"$t/scr/$name.st"
      what="kill ${delay} ms into vol rm $name (acked: $([ "$rc" = 0 ] && echo yes || echo no))"
      ;;
  esac
  info "iteration $it/$iters: $what"
done
# After the writethrough iteration's kill: restart without the cache file.
e2e_drop_cache
e2e_start
check_all "final (writethrough, cache file deleted)"
blk verify "$(e2e_uri v)" --blocks $blocks --state "$t/v.read" --exact >/dev/null ||
  fail "v changed between two reads"
# The check can fail: a floor one generation above what block 77 holds (a
# flushed write that was lost) must be reported.
python3 - "$t/v.read" "$t/v.lost" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
off = 16 + 77 * 8
struct.pack_into("<Q", b, off, struct.unpack_from("<Q", b, off)[0] + 1)
open(sys.argv[2], "wb").write(b)
PY
! blk verify "$(e2e_uri v)" --blocks $blocks --state "$t/v.lost" --floor >"$t/neg.out" 2>&1 ||
  fail "e2e_blk verify did not notice a lost write"
grep -q "block 77 .*flushed write lost" "$t/neg.out" || { cat "$t/neg.out" >&2; fail "negative check: wrong report"; }
e2e_stop
info "$iters iterations in $((SECONDS - total)) s"
echo "crash.sh: ok"
