// Starts a confab cluster for the end-to-end tests: its own redis-server on a free port, one fresh
// Postgres database shared by every node, N confab nodes on ephemeral ports, and optionally nginx
// in front (cluster/nginx.conf.template rendered into the cluster's temporary directory).
//
//   const cluster = await startCluster({ nodes: 3, env: { CONFAB_NODE_TIMEOUT: '3' }, nginx: true });
//   cluster.nodes[0].url; await cluster.nodes[2].kill('SIGKILL'); await cluster.nodes[2].restart();
//   await cluster.redis.stop(); await cluster.redis.start();
//   const admin = await redisAdmin(cluster.redis.port); await admin.command('CLIENT', 'PAUSE', '3000'); admin.close();
//   await cluster.stop();
//
// `startCluster({ persistentRedis: true })` gives a Redis that keeps its state in an append-only
// file (fsync on every write), as production Redis usually does: a restart comes back with it.
//
// Postgres: CONFAB_E2E_CLUSTER_DATABASE_URL (a URL template with `{db}`), else CONFAB_E2E_DATABASE_URL
// when it names Postgres, else postgres://postgres@127.0.0.1:5432/{db}. Every process started here
// is killed and the database dropped at process exit if the test did not get to `stop()`.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { launchConfab, nodeEnv, onExit, postgresDatabase, REPO_ROOT } from './server.mjs';

const READY_TIMEOUT_MS = 20_000;
const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function databaseTemplate() {
  if (process.env.CONFAB_E2E_CLUSTER_DATABASE_URL) return process.env.CONFAB_E2E_CLUSTER_DATABASE_URL;
  const single = process.env.CONFAB_E2E_DATABASE_URL;
  if (single && single.startsWith('postgres')) return single;
  return 'postgres://postgres@127.0.0.1:5432/{db}';
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** An error that stops `until` at once. */
export function fatal(message) {
  const err = new Error(message);
  err.fatal = true;
  return err;
}

function requireCommand(cmd, args, hint) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) {
    throw new Error(`${cmd} is required for the cluster tests but could not be run (${r.error.message}): ${hint}`);
  }
}

/** One Redis PING over a fresh connection; resolves true on +PONG, false otherwise. */
export function redisPing(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (v) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/** One RESP reply from `buf` at `at`: `[value, next offset]`, or null when incomplete. */
function parseReply(buf, at = 0) {
  const end = buf.indexOf('\r\n', at);
  if (end < 0) return null;
  const kind = buf[at];
  const line = buf.slice(at + 1, end);
  if (kind === '+' || kind === ':') return [kind === ':' ? Number(line) : line, end + 2];
  if (kind === '-') return [new Error(line), end + 2];
  if (kind === '$') {
    const len = Number(line);
    if (len < 0) return [null, end + 2];
    if (buf.length < end + 2 + len + 2) return null;
    return [buf.slice(end + 2, end + 2 + len), end + 2 + len + 2];
  }
  if (kind === '*') {
    const items = [];
    let next = end + 2;
    for (let i = 0; i < Number(line); i += 1) {
      const item = parseReply(buf, next);
      if (!item) return null;
      items.push(item[0]);
      next = item[1];
    }
    return [items, next];
  }
  throw new Error(`unexpected RESP reply: ${buf.slice(at, at + 40)}`);
}

/**
 * One connection to Redis for the test itself (kept open, so it still works while Redis refuses
 * new connections): `command(...args)` resolves to the reply (rejects on an error reply).
 */
export function redisAdmin(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const waiting = [];
    sock.setEncoding('utf8');
    sock.on('data', (d) => {
      buf += d;
      for (;;) {
        const reply = waiting.length ? parseReply(buf) : null;
        if (!reply) return;
        buf = buf.slice(reply[1]);
        const { ok, fail } = waiting.shift();
        if (reply[0] instanceof Error) fail(reply[0]);
        else ok(reply[0]);
      }
    });
    sock.on('error', (err) => {
      for (const w of waiting.splice(0)) w.fail(err);
      reject(err);
    });
    sock.on('connect', () =>
      resolve({
        command: (...args) =>
          new Promise((ok, fail) => {
            waiting.push({ ok, fail });
            sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
          }),
        close: () => sock.destroy(),
      }),
    );
  });
}

/**
 * Polls `check` (async, truthy when done) every `intervalMs` until `timeoutMs`; returns its value.
 * Errors thrown by `check` count as "not yet", except those made with `fatal()`.
 */
export async function until(check, { timeoutMs, intervalMs = 50, what = 'condition' }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      if (err?.fatal) throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** GET `${url}/readyz` → `{ status, body }` (body parsed when JSON). */
export async function readyz(url) {
  const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
  const text = await res.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: res.status, body };
}

/** `confab_sockets` from `${url}/metrics` (sum over label sets). */
export async function socketGauge(url) {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
  const text = await res.text();
  let total = null;
  for (const line of text.split('\n')) {
    const m = /^confab_sockets(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) total = (total ?? 0) + Number(m[2]);
  }
  if (total === null) throw new Error(`${url}/metrics has no confab_sockets line:\n${text.slice(0, 2000)}`);
  return total;
}

function startRedis({ port, dir, persistent }) {
  const persistence = persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir, '--daemonize', 'no'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let exited = null;
  const collect = (c) => {
    out += c.toString();
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const unregister = onExit(() => {
    if (exited === null) child.kill('SIGKILL');
  });
  const exitPromise = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      unregister();
      resolve(exited);
    }),
  );
  child.on('error', () => {});
  return { child, output: () => out, exited: () => exited, exitPromise };
}

/**
 * Starts a cluster. `env` is applied to every node over the cluster's defaults (a shared secret with
 * dev tokens on, the Redis URL and prefix, the database, generous rate limits, a small pool).
 * Resolves to `{ nodes, redis, nginxUrl, dir, databaseUrl, prefix, secret, stop() }` where each node is
 * `{ url, host, port, nodeId, letter, kill(signal), stop(), restart(), alive(), output() }` (`url`
 * changes on restart) and `redis` is `{ port, url, stop(signal), start(), output() }`.
 */
export async function startCluster({ nodes: count = 3, env = {}, nginx = false, name = 'cluster', persistentRedis = false } = {}) {
  requireCommand('redis-server', ['--version'], 'install it with `apt-get install -y redis-server`');
  if (nginx) requireCommand('nginx', ['-v'], 'install it with `apt-get install -y nginx`');
  if (count < 1 || count > LETTERS.length) throw new Error(`startCluster: nodes must be 1..${LETTERS.length}`);

  const dir = mkdtempSync(path.join(tmpdir(), 'confab-cluster-'));
  // nginx workers may run as an unprivileged user: let them reach the run directory.
  chmodSync(dir, 0o755);
  const tag = randomBytes(3).toString('hex');
  const cleanup = []; // run in reverse by stop()
  let stopped = null;

  const cluster = {
    dir,
    nodes: [],
    redis: null,
    nginxUrl: null,
    prefix: `e2e-${name}-${tag}`,
    secret: `e2e-cluster-secret-${randomBytes(16).toString('hex')}`,
    databaseUrl: null,
    /** Stops nginx, every node (SIGTERM, SIGKILL after 5 s), Redis; drops the database; removes the directory. */
    stop() {
      stopped ??= (async () => {
        // A node that exited without being told to is worth a report, whatever the test said.
        for (const n of cluster.nodes.filter((x) => x.exitedUnexpectedly())) {
          const out = n.output();
          console.error(
            `\n=== node ${n.nodeId} exited unexpectedly (${JSON.stringify(n.exitStatus())}); its log: ===\n` +
              `${out.length > 8000 ? `…${out.slice(-8000)}` : out}\n=== end of ${n.nodeId} ===\n`,
          );
        }
        const errors = [];
        for (const fn of cleanup.reverse()) {
          try {
            await fn();
          } catch (err) {
            errors.push(err);
          }
        }
        rmSync(dir, { recursive: true, force: true });
        if (errors.length) throw errors[0];
      })();
      return stopped;
    },
    /** Every node's output, labelled, for failure reports. */
    logs() {
      return cluster.nodes.map((n) => `----- node ${n.nodeId} -----\n${n.output()}`).join('\n');
    },
  };

  try {
    // ---- Redis ----
    const redisPort = await freePort();
    const redisDir = path.join(dir, 'redis');
    mkdirSync(redisDir);
    let redisProc = null;
    const redisOutput = [];
    const redis = {
      port: redisPort,
      url: `redis://127.0.0.1:${redisPort}`,
      /** Resolves once Redis answers PING on its port. */
      async start() {
        if (redisProc && redisProc.exited() === null) throw new Error('redis is already running');
        redisProc = startRedis({ port: redisPort, dir: redisDir, persistent: persistentRedis });
        const proc = redisProc;
        redisOutput.push(proc);
        await until(
          async () => {
            if (proc.exited() !== null) throw fatal(`redis-server exited: ${JSON.stringify(proc.exited())}\n${proc.output()}`);
            return redisPing(redisPort);
          },
          { timeoutMs: 10_000, what: `redis-server on port ${redisPort}` },
        );
      },
      /** Stops Redis (SIGTERM by default, SIGKILL to crash it) and resolves once it exited. */
      async stop(signal = 'SIGTERM') {
        const proc = redisProc;
        if (!proc || proc.exited() !== null) return;
        proc.child.kill(signal);
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), 5000);
        await proc.exitPromise;
        clearTimeout(timer);
      },
      alive: () => Boolean(redisProc && redisProc.exited() === null),
      output: () => redisOutput.map((p) => p.output()).join('\n----- restart -----\n'),
    };
    cluster.redis = redis;
    cleanup.push(() => redis.stop());
    await redis.start();

    // ---- Postgres ----
    const db = postgresDatabase(databaseTemplate(), 'confab_e2e_cluster');
    cluster.databaseUrl = db.url;
    cleanup.push(() => db.drop());

    // ---- nodes ----
    const baseEnv = {
      CONFAB_DATABASE_URL: db.url,
      CONFAB_REDIS_URL: redis.url,
      CONFAB_REDIS_PREFIX: cluster.prefix,
      CONFAB_JWT_SECRET: cluster.secret,
      CONFAB_DEV_TOKENS: 'true',
      CONFAB_DATABASE_MAX_CONNECTIONS: '4',
    };
    for (let i = 0; i < count; i += 1) {
      const node = makeNode({ cluster, letter: LETTERS[i], nodeId: `${name}-${LETTERS[i]}-${tag}`, baseEnv, env });
      cluster.nodes.push(node);
    }
    cleanup.push(() => Promise.all(cluster.nodes.map((n) => n.stop())));
    // The first node migrates the database alone; the others start together afterwards.
    await cluster.nodes[0].start();
    await Promise.all(cluster.nodes.slice(1).map((n) => n.start()));

    // ---- nginx ----
    if (nginx) {
      if (count !== 3) throw new Error('startCluster: the nginx template has exactly three upstream nodes (nodes: 3)');
      const nginxPort = await freePort();
      const template = readFileSync(path.join(REPO_ROOT, 'cluster', 'nginx.conf.template'), 'utf8');
      let conf = template.replaceAll('@NGINX_PORT@', String(nginxPort)).replaceAll('@RUN_DIR@', dir);
      cluster.nodes.forEach((n) => {
        conf = conf.replaceAll(`@NODE_${n.letter.toUpperCase()}@`, `${n.host}:${n.port}`);
      });
      const left = /@[A-Z_]+@/.exec(conf);
      if (left) throw new Error(`nginx.conf.template: placeholder ${left[0]} was not replaced`);
      const confPath = path.join(dir, 'nginx.conf');
      writeFileSync(confPath, conf);
      const child = spawn('nginx', ['-c', confPath, '-p', dir, '-e', path.join(dir, 'nginx-error.log'), '-g', 'daemon off;'], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let exited = null;
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (out += c));
      child.on('error', () => {});
      const unregister = onExit(() => {
        if (exited === null) child.kill('SIGKILL');
      });
      const exitPromise = new Promise((resolve) =>
        child.on('exit', (code, signal) => {
          exited = { code, signal };
          unregister();
          resolve(exited);
        }),
      );
      cleanup.push(async () => {
        if (exited !== null) return;
        child.kill('SIGQUIT'); // graceful, but do not wait for long-polls / websockets
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exitPromise;
        clearTimeout(timer);
      });
      cluster.nginxUrl = `http://127.0.0.1:${nginxPort}`;
      const errLog = () => {
        try {
          return readFileSync(path.join(dir, 'nginx-error.log'), 'utf8');
        } catch {
          return '';
        }
      };
      await until(
        async () => {
          if (exited !== null) throw fatal(`nginx exited (${JSON.stringify(exited)})`);
          const res = await fetch(`${cluster.nginxUrl}/livez`, { signal: AbortSignal.timeout(1000) });
          return res.status === 200;
        },
        { timeoutMs: 10_000, what: `nginx on ${cluster.nginxUrl}` },
      ).catch((err) => {
        throw new Error(`${err.message}\nnginx output: ${out}\nnginx error log: ${errLog()}`);
      });
      cluster.nginxOutput = () => `${out}\n${errLog()}`;
    }
  } catch (err) {
    await cluster.stop().catch(() => {});
    throw err;
  }
  return cluster;
}

function makeNode({ cluster, letter, nodeId, baseEnv, env }) {
  const nodeDir = path.join(cluster.dir, `node-${letter}`);
  mkdirSync(nodeDir);
  const outputs = [];
  let proc = null;
  let told = false; // kill() or stop() was called for the current process
  const node = {
    letter,
    nodeId,
    get url() {
      return proc?.url;
    },
    get host() {
      return proc?.host;
    },
    get port() {
      return proc?.port;
    },
    get pid() {
      return proc?.pid;
    },
    /**
     * Starts the process (port 0, so a new URL each time) and waits until /readyz is 200, or only
     * until it listens with `{ ready: false }` (to start it while Redis is away).
     */
    async start({ ready = true } = {}) {
      if (proc?.alive()) throw new Error(`node ${nodeId} is already running`);
      told = false;
      proc = await launchConfab({
        cwd: nodeDir,
        label: `confab node ${nodeId}`,
        env: nodeEnv({ ...baseEnv, CONFAB_NODE_ID: nodeId }, env),
      });
      outputs.push(proc);
      const p = proc;
      if (!ready) return node;
      await until(
        async () => {
          if (!p.alive()) throw fatal(`node ${nodeId} exited: ${JSON.stringify(p.exitStatus())}`);
          return (await readyz(p.url)).status === 200;
        },
        { timeoutMs: READY_TIMEOUT_MS, what: `GET ${p.url}/readyz = 200 on node ${nodeId}` },
      ).catch((err) => {
        p.kill('SIGKILL');
        throw new Error(`${err.message}\nOutput of ${nodeId}:\n${p.output()}`);
      });
      return node;
    },
    /** Sends `signal` (SIGKILL by default: a crash) and resolves once the process exited. */
    kill(signal = 'SIGKILL') {
      told = true;
      return proc ? proc.kill(signal) : Promise.resolve(null);
    },
    /** SIGTERM (an orderly drain), SIGKILL after 5 s. */
    stop() {
      told = true;
      return proc ? proc.stop() : Promise.resolve(null);
    },
    /** Whether the current process exited although nobody stopped or killed it. */
    exitedUnexpectedly: () => Boolean(proc && !proc.alive() && !told),
    /** Starts the node again with the same id (stopping it first if it still runs); resolves to the node. */
    async restart(options) {
      if (proc?.alive()) await proc.stop();
      return node.start(options);
    },
    alive: () => Boolean(proc?.alive()),
    exitStatus: () => proc?.exitStatus() ?? null,
    /** Everything the node printed, over all its runs. */
    output: () => outputs.map((p) => p.output()).join('\n----- restarted -----\n'),
  };
  return node;
}

/**
 * The cluster as a stand-in for `startServer`'s single server (E2E_CLUSTER=1): `url` names the next
 * node in rotation each time it is read (so every HTTP request and dev-token request goes to the next
 * node), and `socketTarget()` names the next node for each new socket (lib/client.mjs `makeSocket`
 * calls it), so consecutive sockets of one test sit on different nodes. `pinned(i)` is a
 * single-node view for tests whose meaning is per node; `nodeId` is not defined (a socket's node is
 * `socket.e2e.nodeId`).
 */
export async function startClusterServer({ name = 'e2e', env = {}, nodes = 3 } = {}) {
  const cluster = await startCluster({ nodes, env, name });
  let httpTurn = 0;
  let socketTurn = 0;
  const view = (n) => ({
    get url() {
      return n.url;
    },
    nodeId: n.nodeId,
    output: n.output,
    alive: n.alive,
  });
  return {
    cluster,
    isCluster: true,
    get url() {
      const n = cluster.nodes[httpTurn % cluster.nodes.length];
      httpTurn += 1;
      return n.url;
    },
    socketTarget() {
      const n = cluster.nodes[socketTurn % cluster.nodes.length];
      socketTurn += 1;
      return { url: n.url, nodeId: n.nodeId };
    },
    get nodeId() {
      throw new Error('server.nodeId has no single value in a cluster run: compare with socket.e2e.nodeId');
    },
    nodeIds: cluster.nodes.map((n) => n.nodeId),
    /** A single-node view: sockets and requests made through it all go to node `i`. */
    pinned: (i = 0) => view(cluster.nodes[i]),
    output: () => cluster.logs(),
    alive: () => cluster.nodes.every((n) => n.alive()),
    exitStatus: () => Object.fromEntries(cluster.nodes.map((n) => [n.nodeId, n.exitStatus()])),
    stop: () => cluster.stop(),
  };
}
