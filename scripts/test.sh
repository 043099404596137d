#!/usr/bin/env bash
# The one test command: Rust unit and integration tests (SQLite and Postgres), the JavaScript
# contract suite over websocket and polling, and the browser test of the demo page.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test.sh: $*" >&2; exit 1; }

PG_URL="${CONFAB_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
command -v node >/dev/null || fail "Node.js 20+ is required (apt-get install -y nodejs npm)"
if command -v pg_isready >/dev/null; then
  pg_isready -d "$PG_URL" -q || fail "Postgres is not answering at $PG_URL; start it with: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
fi
command -v redis-server >/dev/null || fail "redis-server is required (the cluster tests start their own): apt-get install -y redis-server"
export PATH="$PATH:/usr/sbin"
command -v nginx >/dev/null || fail "nginx is required for the cluster tests: apt-get install -y nginx"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$CHROMIUM_PATH" ] || fail "Chromium is required for the browser test at $CHROMIUM_PATH; install it with: apt-get update && apt-get install -y chromium"

echo "== cargo build"
cargo build --locked

echo "== Rust tests (unit, storage and Socket.IO integration on SQLite and Postgres)"
cargo test --locked --all-targets

echo "== JavaScript contract suite (socket.io-client, websocket and polling)"
cd e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm test

echo "== Cluster: three nodes, their own Redis, one Postgres database, nginx"
npm run test:cluster

echo "== Browser tests: the demo page, and the SRE dashboard on a three-node cluster (headless Chromium)"
CHROMIUM_PATH="$CHROMIUM_PATH" npm run test:browser
CHROMIUM_PATH="$CHROMIUM_PATH" npm run test:dashboard

echo "== Deploy: compose, Dockerfile, Helm chart checks; k6 and artillery runs on a three-node cluster"
bash ../scripts/test-deploy.sh # (this script is in e2e/ since the contract suite; test-deploy.sh finds the root itself)
