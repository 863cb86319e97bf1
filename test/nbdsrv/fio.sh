#!/usr/bin/env bash
# fio.sh — fio's nbd engine: 4 jobs x QD16 random writes with crc32c verify
# headers, a separate verify-only pass on new connections, then a mixed
# randrw pass that verifies as it goes.  fio exits non-zero on any mismatch.
source "${SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/test/functions.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio lacks the nbd engine" >&2; exit 77; }
t=$(mktempdir)
truncate -s 64M "$t/disk"
port=$(free_port)
listen=(--listen "127.0.0.1:$port")
[ "${NBDSRV_STANDIN:-0}" = 1 ] && listen=()   # nbdkit: -U and -p exclude each other
start_nbdsrv --unix "$t/sock" "${listen[@]}" --export "disk=$t/disk"
[ ${#listen[@]} -eq 0 ] || port=$NBDSRV_PORT   # start_nbdsrv may have moved it
uri="nbd+unix:///disk?socket=$t/sock"
tcp="nbd://127.0.0.1:$port/disk"
[ "${NBDSRV_STANDIN:-0}" = 1 ] && tcp=$uri
cd "$t"     # fio writes its verify state files to the current directory
common=(--ioengine=nbd "--uri=$uri" --bs=4k --iodepth=16 --numjobs=4
        --size=16M --offset_increment=16M --verify=crc32c --randrepeat=1
        --group_reporting --output-format=terse)
fio --name=write --rw=randwrite --do_verify=0 "${common[@]}" >"$t/w.out" ||
  { cat "$t/w.out" >&2; fail "fio randwrite"; }
# Verify over TCP what was written over the unix socket.
fio --name=write --rw=randwrite --verify_only "${common[@]}" "--uri=$tcp" >"$t/v.out" ||
  { cat "$t/v.out" >&2; fail "fio verify pass"; }
# The verify pass must be able to fail: change the data under fio's feet.
if command -v qemu-io >/dev/null; then
  qemu-io -f raw -c 'write -P 0x42 0 16M' "$uri" >/dev/null || fail "qemu-io overwrite"
  if fio --name=write --rw=randwrite --verify_only "${common[@]}" --numjobs=1 \
      >"$t/bad.out" 2>&1; then
    fail "fio verify did not notice overwritten data"
  fi
fi
fio --name=rw --rw=randrw --bsrange=4k-64k --do_verify=1 --verify_backlog=64 \
  "${common[@]}" >"$t/rw.out" || { cat "$t/rw.out" >&2; fail "fio randrw verify"; }

kill -0 "$NBDSRV_PID" || fail "server died"
stop_nbdsrv || fail "server exit status $? after SIGTERM"
