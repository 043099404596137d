// Runs the cluster tests (cluster/*.test.mjs: crash, Redis restart, nginx, latency), one file at a
// time (E2E_CONCURRENCY overrides; they measure timings on a small machine), then the contract suite
// across a three-node cluster over both transports (scripts/run-contract.mjs --cluster).
// Needs redis-server, nginx and psql with the machine's Postgres (see e2e/README.md).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { E2E_DIR } from '../lib/server.mjs';

const files = readdirSync(path.join(E2E_DIR, 'cluster'))
  .filter((f) => f.endsWith('.test.mjs'))
  .sort()
  .map((f) => path.join('cluster', f));
const extra = (process.env.E2E_NODE_TEST_ARGS ?? '').split(/\s+/).filter(Boolean);
const concurrency = process.env.E2E_CONCURRENCY ?? '1';
const only = process.argv.slice(2); // "cluster" or "contract" to run one part

const results = [];
const run = (what, args, env = {}) => {
  console.log(`\n=== ${what} ===\n`);
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: E2E_DIR, stdio: 'inherit', env: { ...process.env, ...env } });
  results.push({ what, status: r.status ?? 1, seconds: ((Date.now() - started) / 1000).toFixed(1) });
};

if (!only.length || only.includes('cluster')) {
  run('cluster tests (crash, Redis restart, nginx, latency)', ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...extra, ...files]);
}
if (!only.length || only.includes('contract')) {
  run('contract suite across a 3-node cluster (websocket, polling)', [path.join('scripts', 'run-contract.mjs'), '--cluster']);
}
console.log('');
for (const { what, status, seconds } of results) console.log(`${what}: ${status === 0 ? 'passed' : 'FAILED'} (${seconds} s)`);
process.exit(results.every((r) => r.status === 0) ? 0 : 1);
