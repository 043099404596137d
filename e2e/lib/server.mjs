// Starts and stops a confab server process for the end-to-end tests.
//
// The binary is `target/debug/confab` at the repository root (override with CONFAB_BIN). Each server
// gets a fresh temporary SQLite database, listens on an ephemeral port on 127.0.0.1 and is found by
// parsing its `listening on http://HOST:PORT` log line.
//
// To run against Postgres instead, set CONFAB_E2E_DATABASE_URL to a URL template containing `{db}`,
// e.g. `postgres://postgres:postgres@127.0.0.1:5432/{db}`: every server then gets a fresh database of
// that name, created and dropped with `psql` through the same server's `postgres` database.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(E2E_DIR, '..');

export function binaryPath() {
  return process.env.CONFAB_BIN
    ? path.resolve(process.env.CONFAB_BIN)
    : path.join(REPO_ROOT, 'target', 'debug', 'confab');
}

const LISTENING = /listening on http:\/\/(\[[^\]]+\]|[^\s:/]+):(\d+)/;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

// The contract sets no default rate limits; tests that send quickly run with generous ones unless
// they override these (the rate-limit tests do).
export const GENEROUS_LIMITS = {
  CONFAB_SEND_RATE_PER_SEC: '1000',
  CONFAB_SEND_BURST: '1000',
  CONFAB_TYPING_RATE_PER_SEC: '1000',
  CONFAB_TYPING_BURST: '1000',
};

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;

function postgresDatabase(template) {
  const name = `confab_e2e_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const url = template.replaceAll('{db}', name);
  const admin = template.replaceAll('{db}', 'postgres');
  const psql = (sql) => {
    const r = spawnSync('psql', [admin, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      throw new Error(`psql failed (${sql}): ${r.error?.message ?? ''}${r.stderr ?? ''}`);
    }
  };
  psql(`CREATE DATABASE "${name}"`);
  return { url, drop: () => psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

/**
 * Starts a server. `name` becomes CONFAB_NODE_ID; `env` adds or overrides variables.
 * Resolves to `{ url, host, port, nodeId, output(), stop() }`.
 */
export async function startServer({ name = 'e2e', env = {} } = {}) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(
      `confab binary not found at ${bin}: build it first with \`cargo build\` in ${REPO_ROOT} ` +
        '(npm test does), or point CONFAB_BIN at it',
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-e2e-'));
  let pg = null;
  let databaseUrl = `sqlite://${dir}/confab.db`;
  if (process.env.CONFAB_E2E_DATABASE_URL) {
    pg = postgresDatabase(process.env.CONFAB_E2E_DATABASE_URL);
    databaseUrl = pg.url;
  }
  const nodeId = `${name}-${randomBytes(3).toString('hex')}`;
  const childEnv = {
    ...process.env,
    CONFAB_LISTEN: '127.0.0.1:0',
    CONFAB_DATABASE_URL: databaseUrl,
    CONFAB_NODE_ID: nodeId,
    CONFAB_LOG_FORMAT: 'pretty',
    NO_COLOR: '1',
    ...GENEROUS_LIMITS,
    ...env,
  };
  // A variable set to undefined in `env` is removed, so a test can unset an inherited one.
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];

  const child = spawn(bin, [], { cwd: dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const output = () => out.replace(ANSI, '');

  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish(new Error(`confab did not log "listening on http://HOST:PORT" within ${STARTUP_TIMEOUT_MS} ms. Output:\n${output()}`));
    }, STARTUP_TIMEOUT_MS);
    const onData = (chunk) => {
      out += chunk.toString('utf8');
      const m = LISTENING.exec(output());
      if (m) finish(null, { host: m[1], port: Number(m[2]) });
    };
    const onExit = ({ code, signal }) =>
      finish(new Error(`confab exited during startup (code ${code}, signal ${signal}). Output:\n${output()}`));
    const onError = (err) => finish(new Error(`could not start ${bin}: ${err.message}`));
    let done = false;
    function finish(err, value) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stderr.off('data', onData);
      if (err) {
        child.kill('SIGKILL');
        reject(err);
      } else resolve(value);
    }
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exitPromise.then(onExit);
    child.on('error', onError);
  }).catch((err) => {
    pg?.drop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });

  // Keep collecting output for diagnostics.
  const collect = (chunk) => {
    out += chunk.toString('utf8');
    if (out.length > 4_000_000) out = out.slice(-2_000_000);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);

  const url = `http://${address.host}:${address.port}`;
  let stopped = null;
  return {
    url,
    host: address.host,
    port: address.port,
    nodeId,
    dir,
    output,
    /** Whether the process is still running. */
    alive: () => exited === null,
    exitStatus: () => exited,
    /** SIGTERM, then SIGKILL after 5 s. */
    stop() {
      stopped ??= (async () => {
        if (exited === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
          await exitPromise;
          clearTimeout(timer);
        }
        try {
          pg?.drop();
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      })();
      return stopped;
    },
  };
}
