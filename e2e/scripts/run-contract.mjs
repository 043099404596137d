// Runs the contract suite (contract/*.test.mjs) once per transport: websocket, then long-polling
// without upgrade. Pass transport names as arguments to run only those. Extra node --test flags can
// be given in E2E_NODE_TEST_ARGS (e.g. "--test-name-pattern=typing").
//
// With --cluster, every server of the suite is a three-node cluster (E2E_CLUSTER=1, lib/cluster.mjs):
// Redis, a shared Postgres database, and sockets handed to the nodes in rotation. Test files run two
// at a time by default there (E2E_CONCURRENCY overrides).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { E2E_DIR } from '../lib/server.mjs';

const args = process.argv.slice(2);
const cluster = args.includes('--cluster');
const named = args.filter((a) => a !== '--cluster');
const transports = named.length ? named : ['websocket', 'polling'];
const dir = path.join(E2E_DIR, 'contract');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.mjs'))
  .sort()
  .map((f) => path.join('contract', f));
const extra = (process.env.E2E_NODE_TEST_ARGS ?? '').split(/\s+/).filter(Boolean);
const concurrency = process.env.E2E_CONCURRENCY ?? (cluster ? '2' : '4');
const env = { ...process.env };
if (cluster) env.E2E_CLUSTER = '1';
else delete env.E2E_CLUSTER;

const what = cluster ? 'contract suite across a 3-node cluster' : 'contract suite';
const results = [];
for (const transport of transports) {
  console.log(`\n=== ${what} over ${transport} ===\n`);
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...extra, ...files],
    { cwd: E2E_DIR, stdio: 'inherit', env: { ...env, E2E_TRANSPORT: transport } },
  );
  results.push({ transport, status: r.status ?? 1, seconds: ((Date.now() - started) / 1000).toFixed(1) });
}
console.log('');
for (const { transport, status, seconds } of results) {
  console.log(`${cluster ? 'cluster ' : ''}${transport}: ${status === 0 ? 'passed' : 'FAILED'} (${seconds} s)`);
}
process.exit(results.every((r) => r.status === 0) ? 0 : 1);
