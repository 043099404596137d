// A Redis that persists its state (append-only file) is shut down for 20 s, four times the node
// timeout, and started again: no node reaps another, nobody is announced offline, every node is
// ready again, and the cluster still heals a node that really dies afterwards. The nodes run with
// the default settings.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, Clients, expectNone, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { readyz, redisAdmin, startCluster, until } from '../lib/cluster.mjs';
import { createRoom } from '../lib/contract.mjs';
import { arrival, withLogs } from './helpers.mjs';

const OUTAGE_MS = 20_000;
/** After Redis is back, watch for longer than the default node timeout (5 s) for any flap. */
const WATCH_AFTER_MS = 7_000;

const offline = (e) => e.status === 'offline';

describe(`Redis with persistence down for 20 s: no node reaped, nobody offline [${TRANSPORT}]`, () => {
  let cluster;
  const groups = [];
  before(async () => {
    cluster = await startCluster({ nodes: 2, name: 'outage', persistentRedis: true });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    await cluster?.stop();
  });

  test('20 s outage', { timeout: 120_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      groups.push(onA, onB);
      const ann = await onA.connect(uid('ann'), 'Ann');
      const bob = await onB.connect(uid('bob'), 'Bob');
      const cat = await onB.connect(uid('cat'), 'Cat'); // only on B: dies with B at the end
      const room = await createRoom(ann, { members: [bob.userId, cat.userId] });
      await waitFor(bob, 'room:added', (r) => r.id === room.id);
      await waitFor(cat, 'room:added', (r) => r.id === room.id);
      const everyone = [ann.userId, bob.userId, cat.userId];
      const allOnline = Object.fromEntries(everyone.map((u) => [u, 'online']));
      assert.deepEqual((await call(ann, 'presence:get', { userIds: everyone })).presence, allOnline);
      const since = { ann: ann.e2e.log.length, bob: bob.e2e.log.length, cat: cat.e2e.log.length };

      await cluster.redis.stop(); // SIGTERM: Redis flushes its append-only file and exits
      const tDown = Date.now();
      await until(async () => (await readyz(A.url)).body?.checks?.backplane === 'down', { timeoutMs: 10_000, what: 'A to report the backplane down' });
      // Local service goes on meanwhile: a message from Bob reaches Cat (both on B).
      const local = (await call(bob, 'message:send', { roomId: room.id, text: 'during the outage' })).message;
      await waitFor(cat, 'message:new', (m) => m.id === local.id);
      await until(() => Date.now() - tDown >= OUTAGE_MS, { timeoutMs: OUTAGE_MS + 5_000, intervalMs: 200, what: 'the outage to last 20 s' });

      await cluster.redis.start();
      const tBack = Date.now();
      await until(async () => (await readyz(A.url)).status === 200 && (await readyz(B.url)).status === 200, {
        timeoutMs: 10_000,
        what: '/readyz 200 on A and B after Redis is back',
      });
      console.log(`both nodes ready ${Date.now() - tBack} ms after Redis came back from a ${OUTAGE_MS} ms outage`);

      // Nobody, anywhere, was announced offline: not during the outage, not after it.
      await expectNone(ann, 'presence:update', offline, { windowMs: WATCH_AFTER_MS, since: since.ann });
      await expectNone(bob, 'presence:update', offline, { windowMs: 0, since: since.bob });
      await expectNone(cat, 'presence:update', offline, { windowMs: 0, since: since.cat });
      assert.deepEqual((await call(ann, 'presence:get', { userIds: everyone })).presence, allOnline, 'presence:get on A');
      assert.deepEqual((await call(bob, 'presence:get', { userIds: everyone })).presence, allOnline, 'presence:get on B');
      const admin = await redisAdmin(cluster.redis.port);
      const nodes = await admin.command('SMEMBERS', `${cluster.prefix}:nodes`);
      admin.close();
      assert.deepEqual([...nodes].sort(), [A.nodeId, B.nodeId].sort(), 'both nodes are still registered');
      assert.doesNotMatch(cluster.logs(), /reaping the sockets/, 'no node reaped another');

      // Cross-node delivery works again, and a node that really dies is still reaped.
      const across = (await call(ann, 'message:send', { roomId: room.id, text: 'after the outage' })).message;
      await waitFor(bob, 'message:new', (m) => m.id === across.id);
      const t0 = Date.now();
      await B.kill('SIGKILL');
      const at = await arrival(ann, 'presence:update', (e) => e.userId === cat.userId && e.status === 'offline', 10_000);
      console.log(`after the outage, B's kill -9 healed in ${at - t0} ms`);
      assert.ok(at - t0 <= 5_000, `healed in ${at - t0} ms (bound 5000 ms)`);
    }));
});
