#!/usr/bin/env bash
# volumes.sh — thin volumes as NBD exports (`serve --volumes ephemeral`) and
# the vol/snap CLI, driven by real clients: nbdinfo (size, trim, all-hole
# map, LIST sees volumes created after start), qemu-img convert of a random
# 64 MiB image, snapshot, qemu-io overwrite, nbdcopy of the snapshot equal to
# the image while the head differs, clone reads as the image, snapshot delete
# refused while the clone exists (message names it), flatten, then delete
# works; du and diff numbers; bad inputs exit 1/2 with clear messages; the
# ephemeral metadata directory is gone after SIGTERM.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires nbdinfo nbdcopy qemu-img qemu-io python3 cmp
t=$(mktempdir)
mkdir "$t/tmp"
ctl=$t/ctl
uri() { echo "nbd+unix:///$1?socket=$t/sock"; }
vol() { "$NBDSRV" vol --control "$ctl" "$@"; }
snap() { "$NBDSRV" snap --control "$ctl" "$@"; }
MiB=$((1 << 20))

NBDSRV_LOG=$t/serve.log
TMPDIR=$t/tmp start_nbdsrv --volumes ephemeral --unix "$t/sock" --control "$ctl"
wait_for "[ -S '$ctl' ]" 30 || fail "no control socket"
grep -q "EPHEMERAL" "$NBDSRV_LOG" || fail "the daemon did not announce the ephemeral mode"
ls "$t/tmp" | grep -q '^nbdsrv-volumes\.' || fail "no private metadata directory under TMPDIR"
"$NBDSRV" status --control "$ctl" | grep -q "EPHEMERAL" || fail "status does not say ephemeral"

# --- create; nbdinfo sees it --------------------------------------------------
vol create v 64M >"$t/out" || fail "vol create"
grep -q "^v: 64M, chunk 1M" "$t/out" || { cat "$t/out" >&2; fail "vol create output"; }
nbdinfo --json "$(uri v)" >"$t/info.json" || fail "nbdinfo on a new volume"
[ "$(jq_py "$t/info.json" 'j["exports"][0]["export-size"]')" = $((64 * MiB)) ] ||
  fail "volume size over NBD"
[ "$(jq_py "$t/info.json" 'j["exports"][0]["can_trim"] and not j["exports"][0]["is_read_only"]')" = 1 ] ||
  fail "volume must be writable with trim"
nbdinfo --map "$(uri v)" >"$t/map" || fail "nbdinfo --map"
[ "$(cat "$t/map" | tr -s ' \t' ' ' | sed 's/^ //')" = "0 67108864 3 hole,zero" ] ||
  { cat "$t/map" >&2; fail "a new volume must be one hole"; }
nbdinfo --list "$(uri "")" >"$t/list" || fail "nbdinfo --list"
grep -q '^export="v":' "$t/list" || { cat "$t/list" >&2; fail "LIST misses a volume created after start"; }
vol du v --json >"$t/du.json" || fail "vol du"
[ "$(jq_py "$t/du.json" 'j["du"][0]["provisioned"]')" = 0 ] || fail "du of an empty volume"

# --- a random image in; snapshot; overwrite; snapshot reads as the image ----
head -c $((64 * MiB)) /dev/urandom >"$t/img"
qemu-img convert -n -f raw -O raw "$t/img" "$(uri v)" || fail "qemu-img convert into the volume"
vol du v --json >"$t/du.json"
[ "$(jq_py "$t/du.json" 'j["du"][0]["provisioned"] == 64 << 20 and j["du"][0]["used"] == 64 << 20')" = 1 ] ||
  { cat "$t/du.json" >&2; fail "du after filling the volume"; }
snap create v@s1 >/dev/null || fail "snap create"
qemu-io -f raw -c "write -P 0xab 1M 2M" "$(uri v)" >/dev/null || fail "qemu-io overwrite"
nbdcopy "$(uri v@s1)" "$t/snap.out" || fail "nbdcopy from the snapshot"
cmp "$t/img" "$t/snap.out" || fail "the snapshot does not read as the image"
nbdcopy "$(uri v)" "$t/head.out" || fail "nbdcopy from the head"
! cmp -s "$t/img" "$t/head.out" || fail "the head should differ after the overwrite"
cmp -s <(head -c $MiB "$t/img") <(head -c $MiB "$t/head.out") || fail "head: first MiB changed"
python3 -c "
import sys; d = open('$t/head.out','rb').read()
sys.exit(0 if d[1<<20:3<<20] == b'\xab' * (2<<20) else 1)" || fail "head: overwritten range"
nbdinfo --json "$(uri v@s1)" >"$t/sinfo.json"
[ "$(jq_py "$t/sinfo.json" 'j["exports"][0]["is_read_only"]')" = 1 ] || fail "snapshot export must be read-only"
rc=0; qemu-io -f raw -c "write 0 4k" "$(uri v@s1)" >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "a write to a snapshot succeeded"

# diff lists the overwritten range (chunk aligned: 1M..3M)
snap diff v@s1 --json >"$t/diff.json" || fail "snap diff"
[ "$(jq_py "$t/diff.json" 'j["extents"] == [{"offset": 1 << 20, "length": 2 << 20}]')" = 1 ] ||
  { cat "$t/diff.json" >&2; fail "diff should list exactly 1M+2M"; }
snap diff v@s1 | grep -Eq "^1048576 +2097152" || fail "snap diff table"
vol du v --json >"$t/du.json"
[ "$(jq_py "$t/du.json" 'j["du"][0]["used"] == 66 << 20')" = 1 ] ||
  { cat "$t/du.json" >&2; fail "du: head + snapshot should hold 66 MiB"; }

# NBD_OPT_EXPORT_NAME (the old way to choose an export) finds a snapshot too.
python3 - "$t/sock" "$t/img" <<'PY' || fail "EXPORT_NAME of v@s1"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def rx(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b)); assert c, "closed"; b += c
    return b
assert rx(18)[:16] == b"NBDMAGICIHAVEOPT"
s.sendall(struct.pack(">I", 3))                      # fixed newstyle, no zeroes
name = b"v@s1"
s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)
size, flags = struct.unpack(">QH", rx(10))
assert size == 64 << 20 and flags & 2, (size, flags)  # read-only
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 5 << 20, 4096))
magic, err, cookie = struct.unpack(">IIQ", rx(16))
assert (magic, err, cookie) == (0x67446698, 0, 7), (magic, err, cookie)
want = open(sys.argv[2], "rb").read()[5 << 20:(5 << 20) + 4096]
assert rx(4096) == want, "data differs"
PY

# status names the volume exports clients hold open, and forgets them after.
qemu-io -r -f raw -c "sleep 60000" "$(uri v@s1)" >/dev/null 2>&1 &
qio=$!
cleanup_push "kill $qio"
wait_for "'$NBDSRV' status --control '$ctl' --json >'$t/st.json' && [ \"\$(jq_py '$t/st.json' '{\"name\": \"v@s1\", \"sessions\": 1} in j[\"volumes\"][\"open\"]')\" = 1 ]" 30 ||
  { cat "$t/st.json" >&2; fail "status does not show the open snapshot export"; }
"$NBDSRV" status --control "$ctl" | grep -Eq "in use: v@s1 +1 session" || fail "status table: in use"
kill $qio; wait $qio 2>/dev/null || true
wait_for "'$NBDSRV' status --control '$ctl' --json >'$t/st.json' && [ \"\$(jq_py '$t/st.json' 'j[\"volumes\"][\"open\"] == []')\" = 1 ]" 30 ||
  { cat "$t/st.json" >&2; fail "status still shows a closed export"; }

# --- clone; snapshot delete refused while it exists; flatten; delete ---------
vol clone v@s1 c1 >"$t/out" || fail "vol clone"
grep -q "origin v@s1" "$t/out" || { cat "$t/out" >&2; fail "clone output"; }
nbdcopy "$(uri c1)" "$t/clone.out" || fail "nbdcopy from the clone"
cmp "$t/img" "$t/clone.out" || fail "the clone does not read as the snapshot"
rc=0; snap rm v@s1 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "c1" "$t/err" ||
  { cat "$t/err" >&2; fail "snap rm with a clone: exit $rc, message must name the clone"; }
vol flatten c1 >/dev/null || fail "vol flatten"
vol info c1 --json >"$t/ci.json"
[ "$(jq_py "$t/ci.json" '"origin" not in j["volume"]')" = 1 ] || fail "flatten kept the origin"
snap rm v@s1 || fail "snap rm after flatten"
cmp "$t/img" <(nbdcopy "$(uri c1)" -) || fail "the flattened clone changed"
wait_for "vol du v --json >'$t/du.json' && [ \"\$(jq_py '$t/du.json' 'j[\"du\"][0][\"used\"] == 64 << 20')\" = 1 ]" 60 ||
  { cat "$t/du.json" >&2; fail "du: the deleted snapshot's 2 MiB not freed"; }
vol du >"$t/du.txt" || fail "vol du (all)"
grep -q "^c1 " "$t/du.txt" && grep -q "^v " "$t/du.txt" || fail "vol du lists every volume"

# --- the rest of the CLI -------------------------------------------------------
vol ls --json >"$t/ls.json"
[ "$(jq_py "$t/ls.json" 'sorted(v["name"] for v in j["volumes"]) == ["c1", "v"]')" = 1 ] ||
  fail "vol ls"
vol ls | grep -Eq "^v +64M +1M" || fail "vol ls table"
vol resize c1 128M >/dev/null || fail "vol resize"
[ "$(nbdinfo --size "$(uri c1)")" = $((128 * MiB)) ] || fail "resized size over NBD"
vol rename c1 c2 >/dev/null || fail "vol rename"
snap create c2@a >/dev/null && snap ls c2 | grep -q "^a " || fail "snap ls"
qemu-io -f raw -c "write -P 0x11 0 1M" "$(uri c2)" >/dev/null || fail "write c2"
vol rollback c2@a >/dev/null || fail "vol rollback"
cmp <(head -c $MiB "$t/img") <(nbdcopy "$(uri c2)" - | head -c $MiB) || fail "rollback content"
snap rm c2@a && vol rm c2 || fail "snap rm / vol rm"
vol info c2 2>/dev/null && fail "a removed volume still has info"

# --- bad inputs ---------------------------------------------------------------
expect() {  # expect STATUS PATTERN CMD...
  local want=$1 pat=$2 rc=0; shift 2
  "$@" >"$t/o" 2>"$t/e" || rc=$?
  [ "$rc" = "$want" ] && grep -qi -- "$pat" "$t/e" ||
    { cat "$t/e" >&2; fail "'$*': exit $rc (want $want), message must match '$pat'"; }
}
expect 1 "nosuch" vol info nosuch
expect 1 "invalid volume name" vol create 'a@b' 64M
expect 2 "SIZE" vol create x 12Q
expect 2 "chunk-size" vol create x 64M --chunk-size lots
expect 1 "chunk" vol create x 64M --chunk-size 3K
expect 2 "VOL@SNAP" snap create nosnap
expect 1 "nosuch" snap create nosuch@s
expect 2 "unknown subcommand" vol frob
expect 2 "control" "$NBDSRV" vol ls
expect 1 "nosuch" nbdinfo "$(uri nosuch)"

stop_nbdsrv || fail "exit status $? after SIGTERM"
[ -z "$(ls "$t/tmp")" ] || { ls -la "$t/tmp" >&2; fail "ephemeral metadata left behind"; }
echo "volumes.sh: ok"
