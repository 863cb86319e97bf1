#!/usr/bin/env bash
# ssdpool-redis.sh — the ssdcache pool tests (check_ssdpool: writethrough,
# SIGKILL orphan recovery, backpressure with the servers SIGSTOPped) against
# 6 real redis-servers, k=4 m=2 (every shard of a version on its own server).
set -euo pipefail
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"

# check_ssdpool empties the servers between tests (FLUSHALL) and reads them
# back whole (KEYS *): Redis only — 0-db has no such commands.
if [ "${NBDSRV_TEST_BACKEND:-redis}" != redis ]; then
  echo "SKIP: $(basename "$0"): needs FLUSHALL/KEYS (redis only)" >&2
  exit 77
fi
requires_test_backend
t=$(mktemp -d /tmp/ssdpool-redis.XXXXXX)
cleanup_push "rm -rf '$t'"
backends_start "$BACKEND_TEST_KIND" 6 "$t"
backends_config "$t/pool.conf" 4 2
NBDSRV_SSD_POOL_CONF="$t/pool.conf" NBDSRV_SSD_BACKEND_PIDS="${BACKEND_PID[*]}" \
  "$TEST_BIN_DIR/cache/check_ssdpool"
