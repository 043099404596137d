// A node crashes (kill -9): the other nodes reap its sockets within CONFAB_NODE_TIMEOUT (the
// default, 5 s, sweep included), so their users go offline and their typing stops everywhere; a user with tabs on surviving nodes never goes
// offline; nothing acked is lost; a crashed node restarted with the same id does not bring back stale
// presence. One kill per cluster: C in the first, B in the second.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, Clients, expectNone, sleep, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { startCluster } from '../lib/cluster.mjs';
import { createRoom, history, members } from '../lib/contract.mjs';
import { arrival, withLogs } from './helpers.mjs';

/** The default CONFAB_NODE_TIMEOUT: the nodes run with the default settings. */
const NODE_TIMEOUT_S = 5;
/** Presence and typing must heal within the node timeout, the sweep that notices included. */
const BOUND_MS = NODE_TIMEOUT_S * 1000;
/** How long to keep waiting past the bound, only to report how late an event came. */
const LATE_MS = 10_000;

const presenceOf = async (socket, ids) => (await call(socket, 'presence:get', { userIds: ids })).presence;
const offline = (userId) => (e) => e.userId === userId && e.status === 'offline';
const online = (userId) => (e) => e.userId === userId && e.status === 'online';

/** All messages of a room, by paging `message:history` with `afterSeq`. */
async function allMessages(socket, roomId) {
  const out = [];
  let afterSeq = 0;
  for (let page = 0; page < 100; page += 1) {
    const reply = await history(socket, { roomId, afterSeq, limit: 200 });
    out.push(...reply.messages);
    if (!reply.hasMore || reply.messages.length === 0) return out;
    afterSeq = reply.messages[reply.messages.length - 1].seq;
  }
  throw new Error('more than 100 pages of history');
}

/**
 * Waits for each expectation `[label, socket, event, predicate]` (all at once) and returns
 * `{ label: ms after t0 }`. Events later than BOUND_MS are still waited for (up to LATE_MS more) so
 * a failure can say how late they came.
 */
async function healing(t0, expectations) {
  const results = await Promise.all(
    expectations.map(async ([label, socket, event, predicate]) => {
      try {
        const at = await arrival(socket, event, predicate, BOUND_MS + LATE_MS - (Date.now() - t0));
        return [label, at - t0];
      } catch (err) {
        return [label, null, err];
      }
    }),
  );
  const times = Object.fromEntries(results.map(([label, ms]) => [label, ms]));
  const missing = results.filter(([, ms]) => ms === null);
  const late = results.filter(([, ms]) => ms !== null && ms > BOUND_MS);
  if (missing.length || late.length) {
    throw new Error(
      `expected every event within ${BOUND_MS} ms of the kill (CONFAB_NODE_TIMEOUT=${NODE_TIMEOUT_S} s): ` +
        `times (ms) ${JSON.stringify(times)}` +
        `${missing.length ? `; never came within ${BOUND_MS + LATE_MS} ms: ${missing.map(([l, , e]) => `${l} (${e.message.split('\n')[0]})`).join('; ')}` : ''}`,
    );
  }
  return times;
}

describe(`kill -9 of node C: presence and typing heal, acked messages stay, restart is clean [${TRANSPORT}]`, () => {
  let cluster;
  const groups = [];
  before(async () => {
    cluster = await startCluster({ nodes: 3, name: 'crash-c' });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    await cluster?.stop();
  });

  test('C crashes', { timeout: 120_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B, C] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      const onC = new Clients(C);
      groups.push(onA, onB, onC);

      const annId = uid('ann');
      const ann1 = await onA.connect(annId, 'Ann'); // tabs on A and B
      const ann2 = await onB.connect(annId, 'Ann');
      const dave = await onA.connect(uid('dave'), 'Dave'); // observer on A
      const erin = await onB.connect(uid('erin'), 'Erin'); // observer on B
      const carl = await onC.connect(uid('carl'), 'Carl'); // types; only on C
      const cody = await onC.connect(uid('cody'), 'Cody'); // only on C
      for (const [s, node] of [[ann1, A], [ann2, B], [dave, A], [erin, B], [carl, C], [cody, C]]) {
        assert.equal(s.session.nodeId, node.nodeId, `${s.e2e.label} is on ${node.nodeId}`);
      }

      const room = await createRoom(dave, { kind: 'public', members: [annId, erin.userId, carl.userId, cody.userId] });
      const side = await createRoom(erin, { members: [cody.userId] }); // Cody's second room
      for (const s of [ann1, ann2, erin, carl, cody]) await waitFor(s, 'room:added', (r) => r.id === room.id);
      await waitFor(cody, 'room:added', (r) => r.id === side.id);

      assert.deepEqual(await presenceOf(dave, [annId, carl.userId, cody.userId]), {
        [annId]: 'online',
        [carl.userId]: 'online',
        [cody.userId]: 'online',
      });

      // Messages from every node, acks kept.
      const acked = [];
      const senders = [dave, erin, carl, ann1, cody, ann2];
      for (let k = 0; k < 3; k += 1) {
        for (const s of senders) {
          const reply = await call(s, 'message:send', { roomId: room.id, text: `before the crash ${k} from ${s.e2e.label}`, clientId: `pre-${k}-${s.e2e.label}` });
          acked.push(reply.message);
        }
      }
      const sideAcked = [
        (await call(cody, 'message:send', { roomId: side.id, text: 'side from C' })).message,
        (await call(erin, 'message:send', { roomId: side.id, text: 'side from B' })).message,
      ];
      // The last message reached the observers on A and B (so the room works across nodes).
      const last = acked[acked.length - 1];
      await waitFor(dave, 'message:new', (m) => m.id === last.id);
      await waitFor(erin, 'message:new', (m) => m.id === last.id);

      // Carl types (on C); the observers on A and B see it.
      await call(carl, 'typing:start', { roomId: room.id });
      await waitFor(dave, 'typing:start', (e) => e.roomId === room.id && e.userId === carl.userId);
      await waitFor(erin, 'typing:start', (e) => e.roomId === room.id && e.userId === carl.userId);

      const since = { dave: dave.e2e.log.length, erin: erin.e2e.log.length, ann1: ann1.e2e.log.length };
      const t0 = Date.now();
      await C.kill('SIGKILL');

      const times = await healing(t0, [
        ['dave@A: carl offline', dave, 'presence:update', offline(carl.userId)],
        ['dave@A: cody offline', dave, 'presence:update', offline(cody.userId)],
        ['dave@A: carl typing:stop', dave, 'typing:stop', (e) => e.roomId === room.id && e.userId === carl.userId],
        ['erin@B: carl offline', erin, 'presence:update', offline(carl.userId)],
        ['erin@B: cody offline', erin, 'presence:update', offline(cody.userId)],
        ['erin@B: carl typing:stop', erin, 'typing:stop', (e) => e.roomId === room.id && e.userId === carl.userId],
        ['ann@A: carl offline', ann1, 'presence:update', offline(carl.userId)],
        ['ann@B: cody offline', ann2, 'presence:update', offline(cody.userId)],
      ]);
      const healed = Math.max(...Object.values(times));
      console.log(`presence healing after kill -9: ${healed} ms (node C, CONFAB_NODE_TIMEOUT=${NODE_TIMEOUT_S} s; per event: ${JSON.stringify(times)})`);

      assert.deepEqual(await presenceOf(dave, [annId, carl.userId, cody.userId]), {
        [annId]: 'online',
        [carl.userId]: 'offline',
        [cody.userId]: 'offline',
      });
      const roster = Object.fromEntries((await members(erin, room.id)).map((m) => [m.userId, m.online]));
      assert.deepEqual(
        { ann: roster[annId], carl: roster[carl.userId], cody: roster[cody.userId] },
        { ann: true, carl: false, cody: false },
        'room:members after the reap',
      );
      assert.deepEqual((await call(dave, 'room:typing', { roomId: room.id })).users, [], 'nobody types after the reap');
      // Ann (A and B) never went offline; nobody came back online.
      await expectNone(dave, 'presence:update', offline(annId), { windowMs: 0, since: since.dave });
      await expectNone(erin, 'presence:update', offline(annId), { windowMs: 0, since: since.erin });
      await expectNone(ann1, 'presence:update', offline(annId), { windowMs: 0, since: since.ann1 });
      assert.ok(ann1.connected && ann2.connected, "Ann's tabs on A and B are still connected");

      // Every acked message is in the history, as acked.
      const stored = await allMessages(dave, room.id);
      for (const m of acked) {
        const found = stored.find((s) => s.id === m.id);
        assert.ok(found, `acked message seq ${m.seq} (${m.text}) is missing from message:history`);
        assert.deepEqual(found, m, `message seq ${m.seq} as stored`);
      }
      assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: stored.length }, (_, i) => i + 1), 'seqs without gaps');
      const sideStored = await allMessages(erin, side.id);
      for (const m of sideAcked) assert.ok(sideStored.some((s) => s.id === m.id), `side-room message ${m.seq} is stored`);

      // The survivors still talk across nodes.
      const after1 = (await call(ann1, 'message:send', { roomId: room.id, text: 'after the crash, from A' })).message;
      await waitFor(erin, 'message:new', (m) => m.id === after1.id);
      await waitFor(ann2, 'message:new', (m) => m.id === after1.id);

      // C comes back with the same id: its old users stay offline until they reconnect.
      const sinceRestart = dave.e2e.log.length;
      await C.restart();
      for (let i = 0; i < 8; i += 1) {
        // Observe over ~2 s (two upkeep rounds of every node): never online again by itself.
        assert.deepEqual(
          await presenceOf(dave, [carl.userId, cody.userId]),
          { [carl.userId]: 'offline', [cody.userId]: 'offline' },
          `presence:get ${i * 250} ms after C restarted`,
        );
        await sleep(250);
      }
      await expectNone(dave, 'presence:update', (e) => [carl.userId, cody.userId].includes(e.userId), { windowMs: 0, since: sinceRestart });
      assert.deepEqual((await call(erin, 'room:typing', { roomId: room.id })).users, [], 'no stale typing after C restarted');

      // Carl reconnects (to the restarted C): online again, seen on A.
      const onC2 = new Clients(C);
      groups.push(onC2);
      const carlAgain = await onC2.connect(carl.userId, 'Carl');
      assert.equal(carlAgain.session.nodeId, C.nodeId);
      await waitFor(dave, 'presence:update', online(carl.userId), 3000);
      assert.deepEqual(await presenceOf(erin, [carl.userId, cody.userId]), { [carl.userId]: 'online', [cody.userId]: 'offline' });
      const fromC = (await call(carlAgain, 'message:send', { roomId: room.id, text: 'back on C' })).message;
      await waitFor(dave, 'message:new', (m) => m.id === fromC.id);
      await waitFor(ann2, 'message:new', (m) => m.id === fromC.id);
    }));
});

describe(`kill -9 of node B: a user with tabs on A and B stays online [${TRANSPORT}]`, () => {
  let cluster;
  const groups = [];
  before(async () => {
    cluster = await startCluster({ nodes: 3, name: 'crash-b' });
  });
  after(async () => {
    for (const g of groups) g.closeAll();
    await cluster?.stop();
  });

  test('B crashes', { timeout: 120_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B, C] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      const onC = new Clients(C);
      groups.push(onA, onB, onC);

      const annId = uid('ann');
      const ann1 = await onA.connect(annId, 'Ann');
      const ann2 = await onB.connect(annId, 'Ann');
      const bea = await onB.connect(uid('bea'), 'Bea'); // only on B: proves the reap happened
      const dave = await onA.connect(uid('dave'), 'Dave');
      const fay = await onC.connect(uid('fay'), 'Fay');
      const room = await createRoom(fay, { members: [annId, bea.userId, dave.userId] });
      for (const s of [ann1, ann2, bea, dave]) await waitFor(s, 'room:added', (r) => r.id === room.id);

      // Bea types (on B).
      await call(bea, 'typing:start', { roomId: room.id });
      await waitFor(fay, 'typing:start', (e) => e.roomId === room.id && e.userId === bea.userId);

      const since = { dave: dave.e2e.log.length, fay: fay.e2e.log.length, ann1: ann1.e2e.log.length };
      const t0 = Date.now();
      await B.kill('SIGKILL');

      const times = await healing(t0, [
        ['dave@A: bea offline', dave, 'presence:update', offline(bea.userId)],
        ['fay@C: bea offline', fay, 'presence:update', offline(bea.userId)],
        ['ann@A: bea offline', ann1, 'presence:update', offline(bea.userId)],
        ['fay@C: bea typing:stop', fay, 'typing:stop', (e) => e.roomId === room.id && e.userId === bea.userId],
      ]);
      const healed = Math.max(...Object.values(times));
      console.log(`presence healing after kill -9: ${healed} ms (node B, CONFAB_NODE_TIMEOUT=${NODE_TIMEOUT_S} s; per event: ${JSON.stringify(times)})`);

      // Ann still has her tab on A: never offline, anywhere, and still online two upkeep rounds later.
      for (const [s, from] of [[dave, since.dave], [fay, since.fay], [ann1, since.ann1]]) {
        await expectNone(s, 'presence:update', offline(annId), { windowMs: 0, since: from });
      }
      await expectNone(fay, 'presence:update', offline(annId), { windowMs: 2000, since: since.fay });
      assert.deepEqual(await presenceOf(fay, [annId, bea.userId]), { [annId]: 'online', [bea.userId]: 'offline' });
      assert.equal((await members(dave, room.id)).find((m) => m.userId === annId)?.online, true, 'Ann is online in room:members');
      assert.ok(ann1.connected, "Ann's tab on A is still connected");

      // Ann's tab on A still gets messages from C, and sends to C.
      const fromC = (await call(fay, 'message:send', { roomId: room.id, text: 'still there, Ann?' })).message;
      await waitFor(ann1, 'message:new', (m) => m.id === fromC.id);
      const fromA = (await call(ann1, 'message:send', { roomId: room.id, text: 'yes, on A' })).message;
      await waitFor(fay, 'message:new', (m) => m.id === fromA.id);
    }));
});
