// Short k6 and artillery runs against a local three-node cluster behind deploy/nginx.conf (the
// compose nginx config), each passing its thresholds, and `confab healthcheck` against a live node.
//
//   K6_BIN=~/.cache/confab-deploy/venv/bin/k6 node --test e2e/deploy/loadtest.test.mjs
// (scripts/test-deploy.sh installs both tools and runs this.)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort } from '../lib/cluster.mjs';
import { binaryPath, REPO_ROOT } from '../lib/server.mjs';
import { startLoadCluster } from './loadcluster.mjs';

const K6 = process.env.K6_BIN ?? 'k6';
const ARTILLERY_DIR = path.join(REPO_ROOT, 'loadtest', 'artillery');
const ARTILLERY = path.join(ARTILLERY_DIR, 'node_modules', '.bin', 'artillery');
const RESULTS = process.env.LOADTEST_RESULTS ?? null; // a directory to keep the summaries in

/** Runs a command to its end (killed after `timeoutMs`); resolves to { code, out }. */
function runTool(cmd, args, { env = {}, cwd = REPO_ROOT, timeoutMs = 90_000 } = {}) {
  return new Promise((resolve, reject) => {
    // Not NODE_TEST_CONTEXT: a Node.js tool that inherits it (artillery) acts as a child of this
    // test runner and never exits.
    const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
    const child = spawn(cmd, args, { cwd, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, out });
    });
  });
}

const tail = (s, n = 6000) => (s.length > n ? `…${s.slice(-n)}` : s);

let cluster;
before(async () => {
  // The contract's default rate limits: the scenarios stay under them.
  cluster = await startLoadCluster({ name: 'load' });
});
after(async () => {
  await cluster?.stop();
});

test('confab healthcheck exits 0 for a ready node and 1 when nothing answers', async () => {
  const node = cluster.nodes[0];
  const ok = await runTool(binaryPath(), ['healthcheck', `${node.host}:${node.port}`], { timeoutMs: 10_000 });
  assert.equal(ok.code, 0, ok.out);
  // Without an argument it asks CONFAB_LISTEN, with 0.0.0.0 meaning this machine.
  const viaEnv = await runTool(binaryPath(), ['healthcheck'], { env: { CONFAB_LISTEN: `0.0.0.0:${node.port}` }, timeoutMs: 10_000 });
  assert.equal(viaEnv.code, 0, viaEnv.out);
  const closed = await runTool(binaryPath(), ['healthcheck', `127.0.0.1:${await freePort()}`], { timeoutMs: 10_000 });
  assert.equal(closed.code, 1, closed.out);
  assert.match(closed.out, /not ready/);
});

function k6(script, env, summaryName) {
  const summary = RESULTS ? ['--summary-export', path.join(RESULTS, `${summaryName}.json`)] : [];
  // --address: each k6 process its own REST API port (two run at once here).
  return runTool(K6, ['run', '--quiet', '--no-color', '--address', '127.0.0.1:0', ...summary, path.join('loadtest', 'k6', script)], {
    env: { CONFAB_JWT_SECRET: cluster.secret, K6_NO_USAGE_REPORT: 'true', ...env },
  });
}

/** The value of a k6 summary line such as `confab_messages_received....: 390`. */
function k6Metric(out, name) {
  const m = new RegExp(`${name}\\.*: ([0-9.]+)`).exec(out);
  return m ? Number(m[1]) : null;
}

test('k6: chat, reconnect and connect-idle pass their thresholds against three nodes', { timeout: 120_000 }, async () => {
  assert.ok(existsSync(K6) || K6 === 'k6', `k6 not found at ${K6}`);
  const nodes = cluster.nodes.map((n) => n.url).join(',');
  // Idle sockets through nginx for 28 s (a second ping at 25 s proves the first pong was taken),
  // while chat and reconnect run directly on the three nodes (every VU on nginx would hash to one).
  const idle = k6('connect-idle.js', { CONFAB_URL: cluster.nginxUrl, VUS: '30', ITERATIONS: '1', IDLE_SECONDS: '28' }, 'k6-connect-idle');
  const chat = await k6('chat.js', { CONFAB_URLS: nodes, VUS: '24', ITERATIONS: '1', SESSION_SECONDS: '15', ROOMS: '4', SEND_INTERVAL_MS: '500' }, 'k6-chat');
  assert.equal(chat.code, 0, `k6 chat failed its thresholds:\n${tail(chat.out)}`);
  assert.ok(k6Metric(chat.out, 'confab_messages_received') > 1000, tail(chat.out));
  const reconnect = await k6('reconnect.js', { CONFAB_URLS: nodes, VUS: '9', ITERATIONS: '6', PAUSE_MS: '300' }, 'k6-reconnect');
  assert.equal(reconnect.code, 0, `k6 reconnect failed its thresholds:\n${tail(reconnect.out)}`);
  const idled = await idle;
  assert.equal(idled.code, 0, `k6 connect-idle failed its thresholds:\n${tail(idled.out)}`);
  assert.ok(k6Metric(idled.out, 'confab_pings_answered') >= 60, tail(idled.out));
  console.log(['--- k6 chat ---', chat.out, '--- k6 reconnect ---', reconnect.out, '--- k6 connect-idle ---', idled.out].join('\n'));
});

test('k6 fails the run when a threshold fails', { timeout: 60_000 }, async () => {
  // A wrong secret: every connection is refused, so confab_connected < 99 % must fail the run.
  const res = await runTool(K6, ['run', '--quiet', '--no-color', path.join('loadtest', 'k6', 'connect-idle.js')], {
    env: { CONFAB_URL: cluster.nginxUrl, CONFAB_JWT_SECRET: 'not-the-cluster-secret-at-all', VUS: '2', ITERATIONS: '1', IDLE_SECONDS: '1', K6_NO_USAGE_REPORT: 'true' },
  });
  assert.notEqual(res.code, 0, res.out);
  assert.match(res.out, /confab_connected/);
});

test('artillery: socketio chat scenario passes its ensure checks through nginx', { timeout: 120_000 }, async () => {
  assert.ok(existsSync(ARTILLERY), `artillery is not installed in ${ARTILLERY_DIR} (npm ci there)`);
  const usersFile = path.join(cluster.dir, 'users.csv');
  const env = { CONFAB_URL: cluster.nginxUrl, CONFAB_JWT_SECRET: cluster.secret, USERS: '200', USERS_FILE: usersFile };
  const prep = await runTool(process.execPath, ['processor.cjs', 'prepare'], { cwd: ARTILLERY_DIR, env });
  assert.equal(prep.code, 0, prep.out);
  const report = path.join(RESULTS ?? cluster.dir, 'artillery-chat.json');
  const overrides = JSON.stringify({ config: { payload: [{ path: usersFile, fields: ['userId', 'token', 'roomId'], order: 'sequence', skipHeader: true }] } });
  const res = await runTool(ARTILLERY, ['run', '--target', cluster.nginxUrl, '--overrides', overrides, '--output', report, 'chat.yml'], {
    cwd: ARTILLERY_DIR,
    env: { ARTILLERY_DISABLE_TELEMETRY: 'true', DO_NOT_TRACK: '1' },
  });
  assert.equal(res.code, 0, `artillery failed:\n${tail(res.out)}`);
  const counters = JSON.parse(readFileSync(report, 'utf8')).aggregate.counters;
  assert.ok(counters['vusers.completed'] >= 50, JSON.stringify(counters));
  assert.equal(counters['vusers.failed'] ?? 0, 0, JSON.stringify(counters));
  assert.ok(counters['confab.messages_received'] > 500, JSON.stringify(counters));
  console.log(`--- artillery ---\n${res.out.slice(res.out.indexOf('Summary report'))}`);
});
