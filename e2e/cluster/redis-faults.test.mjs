// Redis failure modes under traffic, each for longer than the node timeout (default settings):
// Redis restarted empty (state lost), Redis paused (CLIENT PAUSE), Redis refusing connections
// (every connection dropped and new ones refused, its data kept). For each: every send is acked,
// nothing acked is lost (the room's history holds every acked message, and the remote receiver has
// them all live or from history), local delivery never stops, nobody is announced offline, and
// the time to full recovery (both nodes ready, cross-node delivery back, presence right on both
// nodes) is measured from the end of the fault.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, Clients, emitAck, expectNone, sleep, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { readyz, redisAdmin, startCluster, until } from '../lib/cluster.mjs';
import { createRoom, history } from '../lib/contract.mjs';
import { withLogs } from './helpers.mjs';

const SEND_EVERY_MS = 50;
/** Longer than the default node timeout (5 s): no node may be reaped for it. */
const FAULT_MS = 6_000;
/** Full recovery within this of the fault's end. */
const RECOVERY_BOUND_MS = 5_000;

/** Every message of a room, paging `message:history` with `afterSeq`. */
async function allMessages(socket, roomId, afterSeq = 0) {
  const out = [];
  for (let page = 0; page < 100; page += 1) {
    const reply = await history(socket, { roomId, afterSeq, limit: 200 });
    out.push(...reply.messages);
    if (!reply.hasMore || reply.messages.length === 0) return out;
    afterSeq = reply.messages[reply.messages.length - 1].seq;
  }
  throw new Error('more than 100 pages of history');
}

const FAULTS = {
  'restarted empty': async (cluster) => {
    await cluster.redis.stop('SIGKILL');
    await sleep(FAULT_MS); // the length of the fault, not a wait for an outcome
    await cluster.redis.start();
    return Date.now();
  },
  'paused (CLIENT PAUSE ALL)': async (cluster) => {
    const admin = await redisAdmin(cluster.redis.port);
    await admin.command('CLIENT', 'PAUSE', String(FAULT_MS), 'ALL');
    const ends = Date.now() + FAULT_MS;
    admin.close();
    await until(() => Date.now() >= ends, { timeoutMs: FAULT_MS + 1_000, what: 'the pause to end' });
    return ends;
  },
  'refusing connections': async (cluster) => {
    // This connection stays; every other one is dropped and no new one is accepted.
    const admin = await redisAdmin(cluster.redis.port);
    await admin.command('CONFIG', 'SET', 'maxclients', '1');
    await admin.command('CLIENT', 'KILL', 'TYPE', 'normal');
    await admin.command('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await sleep(FAULT_MS); // the length of the fault
    await admin.command('CONFIG', 'SET', 'maxclients', '10000');
    admin.close();
    return Date.now();
  },
};

describe(`Redis failure modes under traffic [${TRANSPORT}]`, () => {
  let cluster;
  const groups = [];
  const figures = [];
  before(async () => {
    cluster = await startCluster({ nodes: 2, name: 'faults' });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    for (const f of figures) console.log(f);
    await cluster?.stop();
  });

  for (const [mode, inject] of Object.entries(FAULTS)) {
    test(`Redis ${mode}`, { timeout: 90_000 }, () =>
      withLogs(cluster, async () => {
        const [A, B] = cluster.nodes;
        const onA = new Clients(A);
        const onB = new Clients(B);
        groups.push(onA, onB);
        const sender = await onA.connect(uid('sender'), 'Sender');
        const local = await onA.connect(uid('local'), 'Local');
        const remote = await onB.connect(uid('remote'), 'Remote');
        const room = await createRoom(sender, { members: [local.userId, remote.userId] });
        await waitFor(local, 'room:added', (r) => r.id === room.id);
        await waitFor(remote, 'room:added', (r) => r.id === room.id);
        const everyone = [sender.userId, local.userId, remote.userId];
        const allOnline = (presence) => everyone.every((u) => presence[u] === 'online');
        const since = [sender, local, remote].map((s) => [s, s.e2e.log.length]);

        const gotLocal = new Map();
        const gotRemote = new Map();
        local.on('message:new', (m) => m.roomId === room.id && gotLocal.set(m.seq, m));
        remote.on('message:new', (m) => m.roomId === room.id && gotRemote.set(m.seq, { at: Date.now(), m }));
        const sends = [];
        let sending = true;
        const loop = (async () => {
          for (let i = 1; sending; i += 1) {
            const entry = { sentAt: Date.now() };
            entry.done = emitAck(sender, 'message:send', { roomId: room.id, text: `${mode} ${i}` }, 15_000).then(
              (reply) => (entry.reply = reply),
              (err) => (entry.error = err),
            );
            sends.push(entry);
            await sleep(SEND_EVERY_MS); // the sender's pace
          }
        })();

        let recovery;
        try {
          await until(() => gotRemote.size >= 5, { timeoutMs: 5_000, what: 'B receiving before the fault' });
          // Both nodes must notice the fault (else it was not one): /readyz 503 at some point.
          const noticed = new Set();
          let watching = true;
          const watch = (async () => {
            while (watching) {
              for (const n of [A, B]) if ((await readyz(n.url).catch(() => ({}))).status === 503) noticed.add(n.nodeId);
              await sleep(100); // polling pace
            }
          })();
          const tEnd = await inject(cluster);
          watching = false;
          await watch;
          assert.deepEqual([...noticed].sort(), [A.nodeId, B.nodeId].sort(), 'both nodes reported the backplane down during the fault');
          const times = {};
          const mark = (what) => (times[what] ??= Date.now() - tEnd);
          await until(
            async () => {
              if ((await readyz(A.url)).status === 200 && (await readyz(B.url)).status === 200) mark('ready');
              for (const s of sends) {
                if (s.sentAt >= tEnd && s.reply?.ok && gotRemote.has(s.reply.message.seq)) mark('delivery');
              }
              const views = [await call(sender, 'presence:get', { userIds: everyone }), await call(remote, 'presence:get', { userIds: everyone })];
              if (views.every((v) => allOnline(v.presence))) mark('presence');
              return times.ready !== undefined && times.delivery !== undefined && times.presence !== undefined;
            },
            { timeoutMs: 20_000, intervalMs: 50, what: `full recovery after Redis ${mode}` },
          );
          recovery = { full: Math.max(...Object.values(times)), ...times };
        } finally {
          sending = false;
          await loop;
          await Promise.all(sends.map((s) => s.done));
        }
        figures.push(`Redis ${mode} for ${FAULT_MS} ms: full recovery ${recovery.full} ms after the fault ended (ready ${recovery.ready}, cross-node delivery ${recovery.delivery}, presence ${recovery.presence}); ${sends.length} sends, all acked`);
        assert.ok(recovery.full <= RECOVERY_BOUND_MS, `recovered in ${JSON.stringify(recovery)} ms (bound ${RECOVERY_BOUND_MS} ms)`);

        // Every send acked; every acked message stored as acked; nothing lost anywhere.
        const failed = sends.filter((s) => s.error || s.reply?.ok !== true);
        assert.deepEqual(failed.map((s) => s.error?.message ?? s.reply), [], 'every send is acked ok');
        const acked = sends.map((s) => s.reply.message).sort((a, b) => a.seq - b.seq);
        const stored = await allMessages(remote, room.id);
        assert.deepEqual(stored, acked, 'the history holds every acked message, as acked');
        await until(() => gotLocal.size >= acked.length, { timeoutMs: 5_000, what: "A's local receiver to have every message" });
        const lastSeq = acked[acked.length - 1].seq;
        await until(() => gotRemote.has(lastSeq), { timeoutMs: 5_000, what: 'B to receive the last message live' });
        const union = new Set([...gotRemote.keys(), ...stored.map((m) => m.seq)]);
        assert.equal(union.size, acked.length, 'B has every acked message, live or from history');
        // Nobody was announced offline, on either node.
        for (const [s, from] of since) await expectNone(s, 'presence:update', (e) => e.status === 'offline', { windowMs: 0, since: from });
        assert.doesNotMatch(cluster.logs(), /reaping the sockets/, 'no node reaped another');
      }));
  }
});
