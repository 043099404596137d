#!/usr/bin/env bash
# Shows each node's readiness and sockets, and what Redis knows about the cluster.
set -uo pipefail
BASE_PORT="${BASE_PORT:-3001}"
REDIS_PORT="${REDIS_PORT:-6390}"
PREFIX="${CONFAB_REDIS_PREFIX:-confab}"
for p in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
  ready="$(curl -s "http://127.0.0.1:$p/readyz" || echo 'down')"
  sockets="$(curl -s "http://127.0.0.1:$p/metrics" | awk '/^confab_sockets[{ ]/ {print $2}')"
  echo "node :$p  sockets=${sockets:-?}  readyz=$ready"
done
echo "redis :$REDIS_PORT  nodes: $(redis-cli -p "$REDIS_PORT" smembers "${PREFIX}:nodes" 2>/dev/null | tr '\n' ' ')"
# Heartbeats are Redis server times in milliseconds (a sorted set): show how old each one is.
now_ms="$(redis-cli -p "$REDIS_PORT" time 2>/dev/null | awk 'NR==1 {s=$1} NR==2 {print s * 1000 + int($1 / 1000)}')"
redis-cli -p "$REDIS_PORT" zrange "${PREFIX}:beats" 0 -1 withscores 2>/dev/null | paste - - |
  while read -r node beat; do echo "  heartbeat $node: $((now_ms - ${beat%.*})) ms ago"; done
echo "  being reaped: $(redis-cli -p "$REDIS_PORT" zrange "${PREFIX}:reaping" 0 -1 2>/dev/null | tr '\n' ' ')"
echo "  users online: $(redis-cli -p "$REDIS_PORT" scard "${PREFIX}:online" 2>/dev/null)"
