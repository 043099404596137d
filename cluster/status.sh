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
for key in $(redis-cli -p "$REDIS_PORT" --scan --pattern "${PREFIX}:node:*:alive" 2>/dev/null); do
  echo "  $key ttl=$(redis-cli -p "$REDIS_PORT" ttl "$key")s"
done
echo "  users online: $(redis-cli -p "$REDIS_PORT" --scan --pattern "${PREFIX}:user:*" 2>/dev/null | wc -l)"
