// Soak test: a three-node cluster (its own Redis, one Postgres database) under steady load with
// churn for SOAK_SECS, then checks that resources came back flat.
//
//   npm run soak                       # 120 s
//   SOAK_SECS=600 npm run soak         # the 10-minute run
//
// Load: SOAK_USERS steady users (default 30, spread over the nodes) in SOAK_ROOMS public rooms
// (default 10) send SOAK_RATE messages a second in total (default 20) and type now and then;
// churn: SOAK_CHURN new sockets a second (default 4), each connecting to a random node, joining a
// room, sending, typing, leaving the room and disconnecting after 1-5 s.
//
// Measured per node (RSS, open file descriptors, OS threads, tokio tasks, sockets) and in Redis
// (keys, used memory): before the load (steady sockets only), after the warm-up, at the end of the
// load, and once the churn has left. Flat means: the same file descriptors, tasks and Redis keys
// after the churn as before it (within a small tolerance), and RSS at the end of the load within
// SOAK_RSS_SLACK_MIB (default 48) of its value after the warm-up. Exits 1 when something is not
// flat or a request failed.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

import { connectSocket, devToken, disconnect, emitAck, makeSocket, sleep, uid, waitFor } from '../lib/client.mjs';
import { startCluster } from '../lib/cluster.mjs';

const num = (name, dflt) => Number(process.env[name] ?? dflt);
const SECS = num('SOAK_SECS', 120);
const USERS = num('SOAK_USERS', 30);
const ROOMS = num('SOAK_ROOMS', 10);
const RATE = num('SOAK_RATE', 20);
const CHURN = num('SOAK_CHURN', 4);
const RSS_SLACK_MIB = num('SOAK_RSS_SLACK_MIB', 48);
const WARMUP_SECS = Math.min(60, Math.max(10, SECS / 5));

const failures = [];
const counts = { sent: 0, acked: 0, delivered: 0, churned: 0, joins: 0, leaves: 0, typing: 0, refused: {} };
const note = (code) => (counts.refused[code] = (counts.refused[code] ?? 0) + 1);

function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKib = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return {
    rssMib: +(rssKib / 1024).toFixed(1),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    threads: readdirSync(`/proc/${pid}/task`).length,
  };
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : NaN;
}

function redisInfo(port) {
  const cli = (...args) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
  const used = /used_memory:(\d+)/.exec(cli('info', 'memory'))?.[1];
  return { keys: Number(cli('dbsize')), usedMib: +(Number(used) / 1048576).toFixed(2) };
}

async function snapshot(cluster, label) {
  const nodes = {};
  for (const n of cluster.nodes) {
    nodes[n.letter] = {
      ...procStats(n.pid),
      tasks: await metric(n.url, 'confab_runtime_tasks'),
      sockets: await metric(n.url, 'confab_sockets'),
    };
  }
  const shot = { label, at: new Date().toISOString(), nodes, redis: redisInfo(cluster.redis.port) };
  console.log(`soak: ${label}: ${JSON.stringify(shot)}`);
  return shot;
}

async function connectUser(node, userId) {
  const socket = makeSocket(node, { token: await devToken(node, userId), label: userId, transport: 'websocket' });
  await connectSocket(socket);
  await waitFor(socket, 'session', () => true, 5000);
  socket.on('message:new', () => (counts.delivered += 1));
  return socket;
}

async function ask(socket, event, payload) {
  try {
    const reply = await emitAck(socket, event, payload, 10_000);
    if (!reply.ok) note(`${event}:${reply.error.code}`);
    return reply;
  } catch (err) {
    note(`${event}:timeout`);
    return { ok: false, error: { code: 'timeout', message: err.message } };
  }
}

/** One churned user: connect, join, send, type, leave, disconnect. */
async function churnOnce(cluster, rooms) {
  const node = cluster.nodes[Math.floor(Math.random() * cluster.nodes.length)];
  const room = rooms[Math.floor(Math.random() * rooms.length)];
  let socket;
  try {
    socket = await connectUser(node, uid('churn'));
    if ((await ask(socket, 'room:join', { roomId: room })).ok) counts.joins += 1;
    await ask(socket, 'typing:start', { roomId: room });
    counts.sent += 1;
    if ((await ask(socket, 'message:send', { roomId: room, text: 'passing by', clientId: uid('c') })).ok) counts.acked += 1;
    await sleep(1000 + Math.random() * 4000);
    if ((await ask(socket, 'room:leave', { roomId: room })).ok) counts.leaves += 1;
    counts.churned += 1;
  } catch (err) {
    failures.push(`churn: ${err.message}`);
  } finally {
    if (socket) await disconnect(socket);
  }
}

async function main() {
  console.log(`soak: ${SECS} s, ${USERS} users in ${ROOMS} rooms, ${RATE} msg/s, ${CHURN} churned sockets/s`);
  const cluster = await startCluster({ nodes: 3, name: 'soak' });
  try {
    const owner = await connectUser(cluster.nodes[0], uid('owner'));
    const rooms = [];
    for (let i = 0; i < ROOMS; i++) rooms.push((await ask(owner, 'room:create', { name: `soak ${i}`, kind: 'public' })).room.id);
    const steady = [];
    for (let i = 0; i < USERS; i++) {
      const socket = await connectUser(cluster.nodes[i % 3], uid('steady'));
      socket.rooms = [rooms[i % ROOMS], rooms[(i + 1) % ROOMS]];
      for (const roomId of socket.rooms) await ask(socket, 'room:join', { roomId });
      steady.push(socket);
    }
    await sleep(3000);
    const before = await snapshot(cluster, 'before load');

    let running = true;
    const sender = (async () => {
      for (let n = 0; running; n++) {
        const s = steady[n % steady.length];
        const roomId = s.rooms[n % 2];
        if (n % 7 === 0) {
          counts.typing += 1;
          ask(s, 'typing:start', { roomId });
        }
        counts.sent += 1;
        ask(s, 'message:send', { roomId, text: `steady ${n}`, clientId: uid('c') }).then((r) => r.ok && (counts.acked += 1));
        if (n % 500 === 0) for (const x of steady) x.e2e.log.length = 0;
        await sleep(1000 / RATE);
      }
    })();
    const churners = new Set();
    const churner = (async () => {
      while (running) {
        const p = churnOnce(cluster, rooms).finally(() => churners.delete(p));
        churners.add(p);
        await sleep(1000 / CHURN);
      }
    })();

    await sleep(WARMUP_SECS * 1000);
    const warm = await snapshot(cluster, 'after warm-up');
    await sleep((SECS - WARMUP_SECS) * 1000);
    const end = await snapshot(cluster, 'end of load');
    running = false;
    await Promise.all([sender, churner]);
    await Promise.all([...churners]);
    await sleep(5000);
    const after = await snapshot(cluster, 'after the churn left');

    for (const n of cluster.nodes) {
      const [b, w, e, a] = [before, warm, end, after].map((s) => s.nodes[n.letter]);
      if (a.fds > b.fds + 3) failures.push(`node ${n.letter}: file descriptors ${b.fds} → ${a.fds}`);
      if (a.tasks > b.tasks + 5) failures.push(`node ${n.letter}: tokio tasks ${b.tasks} → ${a.tasks}`);
      if (e.rssMib > w.rssMib + RSS_SLACK_MIB) failures.push(`node ${n.letter}: RSS ${w.rssMib} → ${e.rssMib} MiB under the same load`);
      if (a.sockets !== b.sockets) failures.push(`node ${n.letter}: confab_sockets ${b.sockets} → ${a.sockets}`);
    }
    if (after.redis.keys > before.redis.keys + 2) failures.push(`Redis keys ${before.redis.keys} → ${after.redis.keys}`);
    const refusedHard = Object.entries(counts.refused).filter(([k]) => !k.endsWith(':rate_limited'));
    if (refusedHard.length) failures.push(`failed requests: ${JSON.stringify(Object.fromEntries(refusedHard))}`);

    console.log(`soak: counts ${JSON.stringify(counts)}`);
    console.log('soak: node  RSS MiB (before → warm → end → after)   fds        threads   tasks');
    for (const n of cluster.nodes) {
      const v = (k) => [before, warm, end, after].map((s) => s.nodes[n.letter][k]).join(' → ');
      console.log(`soak: ${n.letter}     ${v('rssMib')}   ${v('fds')}   ${v('threads')}   ${v('tasks')}`);
    }
    console.log(`soak: Redis keys ${[before, warm, end, after].map((s) => s.redis.keys).join(' → ')}, used memory ${[before, warm, end, after].map((s) => s.redis.usedMib).join(' → ')} MiB`);
    for (const s of [owner, ...steady]) s.disconnect();
  } finally {
    await cluster.stop();
  }
  if (failures.length) {
    console.error(`soak: NOT FLAT:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.log('soak: flat');
}

await main();
