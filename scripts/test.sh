#!/usr/bin/env bash
# The one test command: Rust unit and integration tests (SQLite and Postgres), the bounded fuzz run
# over raw Socket.IO frames, the JavaScript contract suite over websocket and polling, the cluster
# suite, and the browser tests.
#
# On a fresh Debian machine it first gets what it needs, idempotently: the system packages that
# are missing (one `apt-get update`, then `apt-get install -y chromium nginx redis-server ...`),
# the machine's Postgres started when it is not answering, and `npm ci` when e2e/node_modules is
# missing or older than the lockfile. Set CONFAB_TEST_NO_INSTALL=1 to only check, never install.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

say() { echo "test.sh: $*" >&2; }
fail() { say "$*"; exit 1; }

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    fail "needs root to run: $*"
  fi
}

PG_URL="${CONFAB_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

echo "== system packages"
missing=()
command -v node >/dev/null || missing+=(nodejs npm)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || missing+=(nginx)
[ -x "$CHROMIUM_PATH" ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${CONFAB_TEST_NO_INSTALL:-0}" = 1 ] && fail "missing: ${missing[*]} (apt-get install -y ${missing[*]})"
  command -v apt-get >/dev/null || fail "missing: ${missing[*]}, and there is no apt-get to install them"
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js 20+ is required, found $(node --version)"
[ -x "$CHROMIUM_PATH" ] || fail "Chromium is not at $CHROMIUM_PATH (set CHROMIUM_PATH)"

echo "== Postgres at $PG_URL"
if ! pg_isready -d "$PG_URL" -q; then
  [ "${CONFAB_TEST_NO_INSTALL:-0}" = 1 ] && fail "Postgres is not answering at $PG_URL"
  version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$version" ] ||
    fail "Postgres is not answering at $PG_URL and none is installed here; point CONFAB_TEST_POSTGRES_URL at one"
  say "starting the Postgres $version cluster"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -d "$PG_URL" -q && break; sleep 1; done
  pg_isready -d "$PG_URL" -q || fail "Postgres did not come up at $PG_URL"
fi

echo "== npm packages (from the lockfile)"
if [ ! -d e2e/node_modules ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  (cd e2e && npm ci --no-audit --no-fund)
fi

echo "== cargo build"
cargo build --locked

echo "== Rust tests (unit and property tests, storage and Socket.IO integration on SQLite and Postgres, frame fuzzing)"
cargo test --locked --all-targets

echo "== JavaScript contract suite (socket.io-client, websocket and polling)"
cd e2e
npm test

echo "== Cluster: three nodes, their own Redis, one Postgres database, nginx"
npm run test:cluster

echo "== Browser tests: the demo page, and the SRE dashboard on a three-node cluster (headless Chromium)"
CHROMIUM_PATH="$CHROMIUM_PATH" npm run test:browser
CHROMIUM_PATH="$CHROMIUM_PATH" npm run test:dashboard

echo "== Deploy: compose, Dockerfile, Helm chart checks; k6 and artillery runs on a three-node cluster"
bash ../scripts/test-deploy.sh # (this script is in e2e/ since the contract suite; test-deploy.sh finds the root itself)
