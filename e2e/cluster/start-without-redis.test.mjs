// A node starts while Redis is unreachable: it serves its own sockets (messages stored, acked and
// delivered locally), /readyz is 503 with the backplane check down, and when Redis comes up it
// joins the cluster by itself: subscribed (messages cross nodes), its sockets registered
// (presence announced and answered everywhere).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, Clients, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { readyz, startCluster, until } from '../lib/cluster.mjs';
import { createRoom, history } from '../lib/contract.mjs';
import { withLogs } from './helpers.mjs';

describe(`a node started without Redis serves locally and joins when Redis comes up [${TRANSPORT}]`, () => {
  let cluster;
  const groups = [];
  before(async () => {
    cluster = await startCluster({ nodes: 2, name: 'late' });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    await cluster?.stop();
  });

  test('B starts while Redis is down', { timeout: 90_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B] = cluster.nodes;
      const onA = new Clients(A);
      const before = new Clients(B);
      groups.push(onA, before);
      const ann = await onA.connect(uid('ann'), 'Ann');
      const [bobId, catId] = [uid('bob'), uid('cat')];
      await before.connect(bobId, 'Bob');
      await before.connect(catId, 'Cat');
      const room = await createRoom(ann, { members: [bobId, catId] });

      await B.stop();
      await cluster.redis.stop();
      await B.start({ ready: false });
      const down = await until(
        async () => {
          const r = await readyz(B.url);
          return r.status === 503 ? r : null;
        },
        { timeoutMs: 5_000, what: 'GET /readyz on B to answer 503' },
      );
      assert.deepEqual(down.body, { ready: false, checks: { storage: 'ok', backplane: 'down', draining: false } });

      // B serves its own sockets (their rooms come from storage): a message stored, acked and
      // delivered on B.
      const onB = new Clients(B);
      groups.push(onB);
      const bob = await onB.connect(bobId, 'Bob');
      const cat = await onB.connect(catId, 'Cat');
      const local = (await call(bob, 'message:send', { roomId: room.id, text: 'before Redis' })).message;
      await waitFor(cat, 'message:new', (m) => m.id === local.id);
      assert.equal((await readyz(B.url)).status, 503, 'still not ready without Redis');

      await cluster.redis.start();
      const tUp = Date.now();
      await until(async () => (await readyz(B.url)).status === 200, { timeoutMs: 10_000, what: '/readyz 200 on B once Redis is up' });
      const joinedMs = Date.now() - tUp;
      await until(async () => (await readyz(A.url)).status === 200, { timeoutMs: 10_000, what: '/readyz 200 on A' });

      // Presence resync: A's user learns that Bob and Cat are online, and presence:get agrees.
      await waitFor(ann, 'presence:update', (e) => e.userId === bob.userId && e.status === 'online', 5_000);
      await waitFor(ann, 'presence:update', (e) => e.userId === cat.userId && e.status === 'online', 5_000);
      const everyone = [ann.userId, bob.userId, cat.userId];
      let seen;
      await until(
        async () => {
          seen = (await call(ann, 'presence:get', { userIds: everyone })).presence;
          return everyone.every((u) => seen[u] === 'online');
        },
        { timeoutMs: 5_000, what: 'presence:get on A to see everyone online' },
      ).catch((err) => {
        throw new Error(`${err.message}; last answer ${JSON.stringify(seen)}`);
      });
      const presenceMs = Date.now() - tUp;

      // Subscriptions: messages cross both ways.
      const fromB = (await call(bob, 'message:send', { roomId: room.id, text: 'across, from B' })).message;
      await waitFor(ann, 'message:new', (m) => m.id === fromB.id);
      const fromA = (await call(ann, 'message:send', { roomId: room.id, text: 'across, from A' })).message;
      await waitFor(cat, 'message:new', (m) => m.id === fromA.id);
      const stored = (await history(ann, { roomId: room.id, afterSeq: 0, limit: 10 })).messages.map((m) => m.id);
      assert.deepEqual(stored, [local.id, fromB.id, fromA.id], 'every acked message is stored, in order');
      console.log(`node started without Redis: ready ${joinedMs} ms after Redis came up, presence resynchronised after ${presenceMs} ms`);
    }));
});
