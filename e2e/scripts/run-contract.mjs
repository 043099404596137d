// Runs the contract suite (contract/*.test.mjs) once per transport: websocket, then long-polling
// without upgrade. Pass transport names as arguments to run only those. Extra node --test flags can
// be given in E2E_NODE_TEST_ARGS (e.g. "--test-name-pattern=typing").
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { E2E_DIR } from '../lib/server.mjs';

const transports = process.argv.slice(2).length ? process.argv.slice(2) : ['websocket', 'polling'];
const dir = path.join(E2E_DIR, 'contract');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.mjs'))
  .sort()
  .map((f) => path.join('contract', f));
const extra = (process.env.E2E_NODE_TEST_ARGS ?? '').split(/\s+/).filter(Boolean);
const concurrency = process.env.E2E_CONCURRENCY ?? '4';

const results = [];
for (const transport of transports) {
  console.log(`\n=== contract suite over ${transport} ===\n`);
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...extra, ...files],
    { cwd: E2E_DIR, stdio: 'inherit', env: { ...process.env, E2E_TRANSPORT: transport } },
  );
  results.push({ transport, status: r.status ?? 1, seconds: ((Date.now() - started) / 1000).toFixed(1) });
}
console.log('');
for (const { transport, status, seconds } of results) {
  console.log(`${transport}: ${status === 0 ? 'passed' : 'FAILED'} (${seconds} s)`);
}
process.exit(results.every((r) => r.status === 0) ? 0 : 1);
