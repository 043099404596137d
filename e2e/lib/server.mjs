// Starts and stops a confab server process for the end-to-end tests.
//
// The binary is `target/debug/confab` at the repository root (override with CONFAB_BIN). Each server
// gets a fresh temporary SQLite database, listens on an ephemeral port on 127.0.0.1 and is found by
// parsing its `listening on http://HOST:PORT` log line.
//
// To run against Postgres instead, set CONFAB_E2E_DATABASE_URL to a URL template containing `{db}`,
// e.g. `postgres://postgres:postgres@127.0.0.1:5432/{db}`: every server then gets a fresh database of
// that name, created and dropped with `psql` through the same server's `postgres` database.
//
// With E2E_CLUSTER=1, `startServer` starts a three-node cluster instead (lib/cluster.mjs): Redis,
// one shared Postgres database, and an object the tests use like a single server, except that every
// new socket and every HTTP request (dev tokens included) goes to the next node in rotation.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(E2E_DIR, '..');

/** Whether startServer starts a cluster (E2E_CLUSTER=1). */
export const CLUSTER_MODE = process.env.E2E_CLUSTER === '1';

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

// ---- cleanup on exit -------------------------------------------------------------------------
// Processes and other resources that must not outlive the test process, even when a test fails or
// the process is interrupted: each entry is a synchronous function run once on exit.
const cleanups = new Set();
let exitHooksInstalled = false;

function runCleanups() {
  for (const fn of [...cleanups]) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      // best effort on the way out
    }
  }
}

/** Registers a synchronous cleanup run when the process exits; returns a function that unregisters it. */
export function onExit(fn) {
  if (!exitHooksInstalled) {
    exitHooksInstalled = true;
    process.on('exit', runCleanups);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
      process.once(sig, () => {
        runCleanups();
        process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig] ?? 0));
      });
    }
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

// ---- Postgres databases ----------------------------------------------------------------------

/**
 * Creates a fresh database from a URL template containing `{db}`; resolves to `{ name, url, drop() }`.
 * The database is dropped (`WITH (FORCE)`) by `drop()`, or at process exit if nobody did.
 */
export function postgresDatabase(template, prefix = 'confab_e2e') {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const url = template.replaceAll('{db}', name);
  const admin = template.replaceAll('{db}', 'postgres');
  const psql = (sql) => {
    const r = spawnSync('psql', [admin, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      const hint = r.error?.code === 'ENOENT' ? ' (psql is missing: apt-get install -y postgresql-client)' : '';
      throw new Error(`psql failed (${sql})${hint}: ${r.error?.message ?? ''}${r.stderr ?? ''}`);
    }
  };
  psql(`CREATE DATABASE "${name}"`);
  let dropped = false;
  const drop = () => {
    if (dropped) return;
    dropped = true;
    unregister();
    psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  };
  const unregister = onExit(drop);
  return { name, url, drop };
}

// ---- one confab process ----------------------------------------------------------------------

/**
 * Spawns the confab binary with exactly `env` (merged over nothing: pass `process.env` in it if
 * wanted) in `cwd`, and resolves once it logged `listening on http://HOST:PORT`. The process is
 * SIGKILLed at exit if still running. Resolves to
 * `{ url, host, port, pid, output(), alive(), exitStatus(), exited, kill(signal), stop() }`.
 */
export async function launchConfab({ env, cwd, label = 'confab', startupTimeoutMs = STARTUP_TIMEOUT_MS }) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(
      `confab binary not found at ${bin}: build it first with \`cargo build\` in ${REPO_ROOT} ` +
        '(npm test does), or point CONFAB_BIN at it',
    );
  }
  const child = spawn(bin, [], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const unregister = onExit(() => {
    if (exited === null) child.kill('SIGKILL');
  });
  let out = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      unregister();
      resolve(exited);
    });
  });
  const output = () => out.replace(ANSI, '');

  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish(new Error(`${label} did not log "listening on http://HOST:PORT" within ${startupTimeoutMs} ms. Output:\n${output()}`));
    }, startupTimeoutMs);
    const onData = (chunk) => {
      out += chunk.toString('utf8');
      const m = LISTENING.exec(output());
      if (m) finish(null, { host: m[1], port: Number(m[2]) });
    };
    const onExitDuringStartup = ({ code, signal }) =>
      finish(new Error(`${label} exited during startup (code ${code}, signal ${signal}). Output:\n${output()}`));
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
    exitPromise.then(onExitDuringStartup);
    child.on('error', onError);
  });

  // Keep collecting output for diagnostics.
  const collect = (chunk) => {
    out += chunk.toString('utf8');
    if (out.length > 4_000_000) out = out.slice(-2_000_000);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);

  let stopping = null;
  return {
    url: `http://${address.host}:${address.port}`,
    host: address.host,
    port: address.port,
    pid: child.pid,
    output,
    alive: () => exited === null,
    exitStatus: () => exited,
    /** Resolves to `{ code, signal }` once the process exited. */
    exited: exitPromise,
    /** Sends `signal` (default SIGKILL) and resolves once the process exited. */
    async kill(signal = 'SIGKILL') {
      if (exited === null) child.kill(signal);
      return exitPromise;
    },
    /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process exited. */
    stop(graceMs = STOP_GRACE_MS) {
      stopping ??= (async () => {
        if (exited === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exitPromise;
          clearTimeout(timer);
        }
        return exited;
      })();
      return stopping;
    },
  };
}

/** The environment every test node starts from: `process.env`, then our defaults, then `env`. */
export function nodeEnv(base, env) {
  const childEnv = {
    ...process.env,
    CONFAB_LISTEN: '127.0.0.1:0',
    CONFAB_LOG_FORMAT: 'pretty',
    NO_COLOR: '1',
    ...GENEROUS_LIMITS,
    ...base,
    ...env,
  };
  // A variable set to undefined in `env` is removed, so a test can unset an inherited one.
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
  return childEnv;
}

/**
 * Starts a server. `name` becomes CONFAB_NODE_ID; `env` adds or overrides variables.
 * Resolves to `{ url, host, port, nodeId, output(), stop() }`.
 *
 * With E2E_CLUSTER=1 this starts a three-node cluster instead (see `startClusterServer` in
 * lib/cluster.mjs), unless `standalone` is true.
 */
export async function startServer({ name = 'e2e', env = {}, standalone = false } = {}) {
  if (CLUSTER_MODE && !standalone) {
    const { startClusterServer } = await import('./cluster.mjs');
    return startClusterServer({ name, env });
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-e2e-'));
  let pg = null;
  let databaseUrl = `sqlite://${dir}/confab.db`;
  let proc;
  try {
    if (process.env.CONFAB_E2E_DATABASE_URL) {
      pg = postgresDatabase(process.env.CONFAB_E2E_DATABASE_URL);
      databaseUrl = pg.url;
    }
    const nodeId = `${name}-${randomBytes(3).toString('hex')}`;
    proc = await launchConfab({
      cwd: dir,
      label: `confab ${nodeId}`,
      env: nodeEnv({ CONFAB_DATABASE_URL: databaseUrl, CONFAB_NODE_ID: nodeId }, env),
    });
    proc.nodeId = nodeId;
  } catch (err) {
    pg?.drop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  let stopped = null;
  return {
    url: proc.url,
    host: proc.host,
    port: proc.port,
    nodeId: proc.nodeId,
    dir,
    output: proc.output,
    /** Whether the process is still running. */
    alive: proc.alive,
    exitStatus: proc.exitStatus,
    /** SIGTERM, then SIGKILL after 5 s. */
    stop() {
      stopped ??= (async () => {
        await proc.stop();
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
