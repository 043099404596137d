// Measures how regularly loaded nodes' heartbeats land in Redis (not a test: a measuring tool).
// Starts a two-node cluster with the default settings, optionally loads it with sioload's fanout,
// and samples the `beats` sorted set every 20 ms: each new score is a heartbeat in Redis's clock,
// so the gaps between consecutive scores are exactly what reaping judges (a node is reaped after
// CONFAB_NODE_TIMEOUT − 1 s, 4 s by default, without one).
//
//   node cluster/heartbeat-jitter.mjs [--seconds 30] [--sioload PATH --rate 2000 --rooms 20 --members 10]
import { redisAdmin, startCluster, sleep } from '../lib/cluster.mjs';
import { spawn } from 'node:child_process';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const seconds = Number(args.seconds ?? 30);
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

const cluster = await startCluster({ nodes: 2, name: 'jitter' });
let load = null;
try {
  if (args.sioload) {
    const urls = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    load = spawn(
      args.sioload,
      ['fanout', '--urls', urls, '--secret', cluster.secret, '--rooms', args.rooms ?? '20', '--members', args.members ?? '10',
        '--rate', args.rate ?? '2000', '--duration', String(seconds), '--warmup', '2'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    load.stdout.on('data', (d) => (out += d));
    load.stderr.on('data', () => {});
    load.done = new Promise((resolve) => load.on('exit', () => resolve(out.trim().split('\n').pop())));
  }
  const admin = await redisAdmin(cluster.redis.port);
  const last = new Map();
  const gaps = new Map();
  const until = Date.now() + seconds * 1000 + (load ? 5000 : 0);
  while (Date.now() < until) {
    const flat = await admin.command('ZRANGE', `${cluster.prefix}:beats`, '0', '-1', 'WITHSCORES');
    for (let i = 0; i < flat.length; i += 2) {
      const [node, beat] = [flat[i], Number(flat[i + 1])];
      const prev = last.get(node);
      if (prev !== undefined && beat > prev) {
        if (!gaps.has(node)) gaps.set(node, []);
        gaps.get(node).push(beat - prev);
      }
      last.set(node, beat);
    }
    await sleep(20); // sampling pace, well under the 500 ms heartbeat period
  }
  admin.close();
  for (const [node, g] of gaps) {
    const s = [...g].sort((a, b) => a - b);
    console.log(`${node}: ${s.length} beats, gap ms p50 ${pct(s, 50)} p99 ${pct(s, 99)} p99.9 ${pct(s, 99.9)} max ${s[s.length - 1]}`);
  }
  const late = cluster.logs().split('\n').filter((l) => l.includes('heartbeat late')).length;
  const reaped = cluster.logs().split('\n').filter((l) => l.includes('reaping the sockets')).length;
  console.log(`"heartbeat late" (> 1 s) log lines: ${late}; reapings: ${reaped}`);
  if (load) console.log(`sioload: ${await load.done}`);
} finally {
  load?.kill('SIGKILL');
  await cluster.stop();
}
