#!/usr/bin/env bash
# Stops what cluster/up.sh started (nodes drain first: SIGTERM, then SIGKILL after 15 s).
set -uo pipefail
RUN="$(cd "$(dirname "$0")" && pwd)/run"
[ -f "$RUN/nginx.pid" ] && kill "$(cat "$RUN/nginx.pid")" 2>/dev/null
for pidfile in "$RUN"/node-*.pid; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$pidfile"
done
[ -f "$RUN/redis.pid" ] && kill "$(cat "$RUN/redis.pid")" 2>/dev/null
rm -f "$RUN"/*.pid
echo "confab cluster down"
