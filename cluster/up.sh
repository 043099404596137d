#!/usr/bin/env bash
# Starts a local confab cluster without Docker: Redis, three nodes sharing one Postgres
# database, and nginx with sticky sessions in front. State lives in cluster/run/.
#
#   cluster/up.sh        # then open http://127.0.0.1:8080/ (or $NGINX_PORT)
#   cluster/status.sh    # what each node and Redis say
#   cluster/down.sh      # stop everything
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
RUN="$HERE/run"
NGINX_PORT="${NGINX_PORT:-8080}"
REDIS_PORT="${REDIS_PORT:-6390}"
BASE_PORT="${BASE_PORT:-3001}"
PG_ADMIN="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB_NAME="${CLUSTER_DB:-confab_cluster}"
SECRET="${CONFAB_JWT_SECRET:-local-cluster-secret-change-me}"
BIN="${CONFAB_BIN:-$ROOT/target/release/confab}"

need() { command -v "$1" >/dev/null || { echo "up.sh: $1 is required ($2)" >&2; exit 1; }; }
need redis-server "apt-get install -y redis-server"
need nginx "apt-get install -y nginx"
need psql "apt-get install -y postgresql-client"

mkdir -p "$RUN"
if [ ! -x "$BIN" ] || [ -z "${CONFAB_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked)
fi

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" --dir "$RUN"

if ! psql "$PG_ADMIN" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  psql "$PG_ADMIN" -qc "CREATE DATABASE $DB_NAME"
fi
DB_URL="${PG_ADMIN%/*}/$DB_NAME"

i=0
for node in a b c; do
  port=$((BASE_PORT + i)); i=$((i + 1))
  CONFAB_LISTEN="127.0.0.1:$port" CONFAB_NODE_ID="node-$node" CONFAB_DATABASE_URL="$DB_URL" \
  CONFAB_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CONFAB_JWT_SECRET="$SECRET" CONFAB_DEV_TOKENS=true \
  CONFAB_LOG_FORMAT=json CONFAB_MAX_CONNECTIONS_PER_IP=0 \
    nohup "$BIN" >"$RUN/node-$node.log" 2>&1 &
  echo $! >"$RUN/node-$node.pid"
done

sed -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@RUN_DIR@|$RUN|g" \
    -e "s|@NODE_A@|127.0.0.1:$BASE_PORT|" -e "s|@NODE_B@|127.0.0.1:$((BASE_PORT + 1))|" \
    -e "s|@NODE_C@|127.0.0.1:$((BASE_PORT + 2))|" "$HERE/nginx.conf.template" >"$RUN/nginx.conf"
for _ in $(seq 1 50); do
  ready=0
  for p in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
    curl -sf "http://127.0.0.1:$p/readyz" >/dev/null && ready=$((ready + 1))
  done
  [ "$ready" = 3 ] && break
  sleep 0.2
done
nginx -c "$RUN/nginx.conf" -p "$RUN"
echo "confab cluster up: http://127.0.0.1:$NGINX_PORT/ (nodes on $BASE_PORT-$((BASE_PORT + 2)), Redis on $REDIS_PORT, database $DB_NAME)"
"$HERE/status.sh"
