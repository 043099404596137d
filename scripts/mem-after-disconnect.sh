#!/usr/bin/env bash
# RSS of a fresh confab (SQLite) before CONNS idle websockets, while they are open, and 1-60 s
# after they all close: does the node give the memory of closed connections back?
#
#   scripts/mem-after-disconnect.sh [BIN] [CONNS]     (defaults: target/release/confab, 10000)
#
# Uses the sioload that ../shared/bench/compare.sh builds under $BENCH_DIR (/tmp/confab-bench).
# EXTRA="MALLOC_ARENA_MAX=1" or PRELOAD=/path/libjemalloc.so try other allocator settings.
# GLIBC_TUNABLES defaults to what the container image sets (Dockerfile, src/memory.rs);
# GLIBC_TUNABLES= (empty) measures glibc's defaults.
set -eu
BIN=${1:-target/release/confab}; CONNS=${2:-10000}
SIOLOAD=${BENCH_DIR:-/tmp/confab-bench}/target/release/sioload
[ -x "$SIOLOAD" ] || { echo "no sioload at $SIOLOAD: run ../shared/bench/compare.sh idle once" >&2; exit 2; }
D=$(mktemp -d /tmp/mem-after.XXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SEC=mem-after-secret-$RANDOM$RANDOM
VARS=("CONFAB_LISTEN=127.0.0.1:$PORT" "CONFAB_JWT_SECRET=$SEC" "CONFAB_DATABASE_URL=sqlite://$D/confab.db"
  "CONFAB_MAX_CONNECTIONS=$((CONNS + 1000))" RUST_LOG=warn
  "GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.tcache_count=0}")
[ -n "${EXTRA:-}" ] && VARS+=("$EXTRA")
[ -n "${PRELOAD:-}" ] && VARS+=("LD_PRELOAD=$PRELOAD")
env "${VARS[@]}" "$BIN" >"$D/log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "127.0.0.1:$PORT/livez" >/dev/null 2>&1 && break; sleep 0.2; done
sleep 2
rss() { awk '/VmRSS/{print $2}' "/proc/$P/status"; }
echo "glibc_tunables ${GLIBC_TUNABLES-glibc.malloc.tcache_count=0}"
echo "before_kb $(rss)"
"$SIOLOAD" idle --conns "$CONNS" --hold 5 --urls "127.0.0.1:$PORT" --secret "$SEC" --pids "$P" 2>"$D/sioload.log" \
  | tail -1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("open_kb", r["server_rss_connected_kb"], "kb_per_conn", r["server_kb_per_conn"])'
s=0; for t in 1 5 10 20 30 45 60; do sleep $((t - s)); s=$t; echo "after_${t}s_kb $(rss)"; done
