#!/usr/bin/env bash
# ssdpool-redis.sh — the ssdcache pool tests (check_ssdpool: writethrough,
# SIGKILL orphan recovery, backpressure with the servers SIGSTOPped) against
# 6 real redis-servers, k=4 m=2 (every shard of a version on its own server).
set -euo pipefail
source "$SRC_DIR/test/functions.sh"
source "$SRC_DIR/test/lib/backends.sh"

t=$(mktemp -d /tmp/ssdpool-redis.XXXXXX)
cleanup_push "rm -rf '$t'"
backends_start redis 6 "$t"
backends_config "$t/pool.conf" 4 2
NBDSRV_SSD_POOL_CONF="$t/pool.conf" NBDSRV_SSD_BACKEND_PIDS="${BACKEND_PID[*]}" \
  "$TEST_BIN_DIR/cache/check_ssdpool"
