// nginx in front of three nodes (cluster/nginx.conf.template: sticky by client address), over
// long-polling without upgrade and over websocket: users connected through nginx chat and type,
// and interoperate with sockets connected directly to the nodes. Clients bound to several loopback
// addresses (127.0.0.N) are spread by nginx over more than one node.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { call, Clients, expectNone, uid, waitFor } from '../lib/client.mjs';
import { socketGauge, startCluster, until } from '../lib/cluster.mjs';
import { createRoom } from '../lib/contract.mjs';
import { withLogs } from './helpers.mjs';

const TRANSPORTS = ['polling', 'websocket'];

describe('nginx with sticky sessions in front of three nodes', () => {
  let cluster;
  let groups = [];
  const agents = [];
  before(async () => {
    cluster = await startCluster({ nodes: 3, nginx: true, name: 'nginx' });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    for (const a of agents) a.destroy();
    await cluster?.stop();
  });
  const closeGroups = () => {
    for (const g of groups) g.closeAll();
    groups = [];
  };

  for (const transport of TRANSPORTS) {
    test(`two users chat through nginx over ${transport}; direct sockets on B and C interoperate`, { timeout: 60_000 }, () =>
      withLogs(cluster, async () => {
        const [, B, C] = cluster.nodes;
        const viaNginx = new Clients({ url: cluster.nginxUrl });
        const onB = new Clients(B);
        const onC = new Clients(C);
        groups.push(viaNginx, onB, onC);
        const opts = { transport };

        const ann = await viaNginx.connect(uid('ann'), 'Ann', opts);
        const bob = await viaNginx.connect(uid('bob'), 'Bob', opts);
        for (const s of [ann, bob]) {
          assert.equal(s.io.engine.transport.name, transport, `${s.e2e.label} uses ${transport}`);
          assert.ok(cluster.nodes.some((n) => n.nodeId === s.session.nodeId), `${s.e2e.label} session names a cluster node: ${s.session.nodeId}`);
        }
        const carl = await onB.connect(uid('carl'), 'Carl', opts); // directly on B
        const dave = await onC.connect(uid('dave'), 'Dave', opts); // directly on C
        assert.equal(carl.session.nodeId, B.nodeId);
        assert.equal(dave.session.nodeId, C.nodeId);
        console.log(`[${transport}] via nginx: ann on ${ann.session.nodeId}, bob on ${bob.session.nodeId}; direct: carl on B, dave on C`);

        const room = await createRoom(ann, { kind: 'public', members: [bob.userId, carl.userId, dave.userId] });
        for (const s of [bob, carl, dave]) await waitFor(s, 'room:added', (r) => r.id === room.id);

        // Ann and Bob (both through nginx) hear each other, and so do the direct sockets.
        const fromAnn = (await call(ann, 'message:send', { roomId: room.id, text: `hello from Ann over ${transport}` })).message;
        for (const s of [bob, carl, dave]) assert.deepEqual(await waitFor(s, 'message:new', (m) => m.id === fromAnn.id), fromAnn);
        const fromBob = (await call(bob, 'message:send', { roomId: room.id, text: 'hi Ann' })).message;
        for (const s of [ann, carl, dave]) assert.deepEqual(await waitFor(s, 'message:new', (m) => m.id === fromBob.id), fromBob);
        // Direct sockets reach the nginx-routed ones.
        const fromCarl = (await call(carl, 'message:send', { roomId: room.id, text: 'Carl, straight to B' })).message;
        const fromDave = (await call(dave, 'message:send', { roomId: room.id, text: 'Dave, straight to C' })).message;
        for (const s of [ann, bob]) {
          assert.deepEqual(await waitFor(s, 'message:new', (m) => m.id === fromCarl.id), fromCarl);
          assert.deepEqual(await waitFor(s, 'message:new', (m) => m.id === fromDave.id), fromDave);
        }

        // Typing both ways through nginx, and to the direct sockets.
        await call(ann, 'typing:start', { roomId: room.id });
        for (const s of [bob, carl, dave]) await waitFor(s, 'typing:start', (e) => e.roomId === room.id && e.userId === ann.userId);
        await call(bob, 'typing:start', { roomId: room.id });
        await waitFor(ann, 'typing:start', (e) => e.roomId === room.id && e.userId === bob.userId);
        await call(ann, 'typing:stop', { roomId: room.id });
        for (const s of [bob, carl, dave]) await waitFor(s, 'typing:stop', (e) => e.roomId === room.id && e.userId === ann.userId);
        await call(bob, 'typing:stop', { roomId: room.id });
        await waitFor(ann, 'typing:stop', (e) => e.roomId === room.id && e.userId === bob.userId);
        await call(dave, 'typing:start', { roomId: room.id });
        await waitFor(bob, 'typing:start', (e) => e.roomId === room.id && e.userId === dave.userId);
        await expectNone(ann, 'typing:start', (e) => e.userId === ann.userId);

        // Presence: Bob (through nginx) leaving is seen by the direct sockets and by Ann.
        bob.disconnect();
        for (const s of [ann, carl, dave]) {
          await waitFor(s, 'presence:update', (e) => e.userId === bob.userId && e.status === 'offline', 2_000);
        }
        closeGroups();
      }));
  }

  test('clients from several loopback addresses are spread over the nodes (session nodeId and /metrics confab_sockets)', { timeout: 60_000 }, () =>
    withLogs(cluster, async () => {
      closeGroups();
      // Start from no sockets anywhere, so confab_sockets counts only this test's sockets.
      await until(
        async () => {
          const counts = await Promise.all(cluster.nodes.map((n) => socketGauge(n.url)));
          return counts.every((c) => c === 0);
        },
        { timeoutMs: 5_000, what: 'confab_sockets to drop to 0 on every node' },
      );

      const viaNginx = new Clients({ url: cluster.nginxUrl });
      groups.push(viaNginx);
      const spread = [];
      const byNode = new Map();
      // At least 6 clients, one per address (alternating transports); more, up to 20, until two
      // nodes have some.
      for (let i = 0; i < 20 && (spread.length < 6 || byNode.size < 2); i += 1) {
        const localAddress = `127.0.0.${i + 2}`;
        const agent = new http.Agent({ localAddress, keepAlive: true });
        agents.push(agent);
        const transport = TRANSPORTS[i % 2];
        const s = await viaNginx.connect(uid(`far${i + 2}`), undefined, { transport, agent, localAddress, label: `${localAddress}/${transport}` });
        spread.push(s);
        byNode.set(s.session.nodeId, (byNode.get(s.session.nodeId) ?? 0) + 1);
      }
      const spreadReport = JSON.stringify(Object.fromEntries(byNode));
      console.log(`nginx spread ${spread.length} clients from 127.0.0.2..${spread.length + 1}: ${spreadReport}`);
      assert.ok(byNode.size > 1, `nginx sent every client to one node: ${spreadReport}`);

      // /metrics agrees: each node counts exactly the sockets nginx gave it, more than one node has some.
      const expected = cluster.nodes.map((n) => byNode.get(n.nodeId) ?? 0);
      let gauges;
      await until(
        async () => {
          gauges = await Promise.all(cluster.nodes.map((n) => socketGauge(n.url)));
          return gauges.every((g, i) => g === expected[i]);
        },
        { timeoutMs: 5_000, what: `confab_sockets per node to equal ${JSON.stringify(expected)} (last ${JSON.stringify(gauges)})` },
      );
      assert.ok(gauges.filter((g) => g > 0).length > 1, `confab_sockets > 0 on more than one node: ${JSON.stringify(gauges)}`);

      // And they all share one room through nginx.
      const [first, ...rest] = spread;
      const room = await createRoom(first, { kind: 'public', members: rest.map((s) => s.userId) });
      for (const s of rest) await waitFor(s, 'room:added', (r) => r.id === room.id);
      const last = spread[spread.length - 1];
      const m = (await call(last, 'message:send', { roomId: room.id, text: 'to everyone, wherever nginx put you' })).message;
      for (const s of spread.slice(0, -1)) await waitFor(s, 'message:new', (x) => x.id === m.id);
    }));
});
