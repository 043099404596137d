// typing:start, typing:stop, room:typing and the automatic stops.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  disconnect,
  emitAck,
  expectNone,
  failed,
  pick,
  sleep,
  TRANSPORT,
  uid,
  UNKNOWN_ROOM,
  waitFor,
} from '../lib/client.mjs';
import { createRoom } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`typing [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'typing' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  /** Ann (two sockets) and Bob in a room. */
  async function setup() {
    const annId = uid('ann');
    const ann1 = await clients.connect(annId, 'Ann');
    const ann2 = await clients.connect(annId, 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = await createRoom(ann1, { kind: 'public', members: [bob.userId] });
    return { annId, ann1, ann2, bob, room };
  }
  const typingUsers = async (socket, roomId) => {
    const reply = await call(socket, 'room:typing', { roomId });
    assert.ok(Array.isArray(reply.users), `room:typing users must be an array: ${JSON.stringify(reply)}`);
    return reply.users;
  };

  test('typing:start goes to the room except the typer\'s sockets; room:typing lists every typer, the caller included; typing:stop ends it', async () => {
    const { annId, ann1, ann2, bob, room } = await setup();
    await call(ann1, 'typing:start', { roomId: room.id });
    const start = await waitFor(bob, 'typing:start', (e) => e.roomId === room.id);
    assert.deepEqual(pick(start, ['roomId', 'userId', 'name']), { roomId: room.id, userId: annId, name: 'Ann' });
    await expectNone(ann1, 'typing:start', (e) => e.roomId === room.id);
    await expectNone(ann2, 'typing:start', (e) => e.roomId === room.id, { windowMs: 0 });

    assert.deepEqual(
      (await typingUsers(ann1, room.id)).map((u) => pick(u, ['userId', 'name'])),
      [{ userId: annId, name: 'Ann' }],
      'room:typing lists the caller',
    );
    assert.deepEqual((await typingUsers(bob, room.id)).map((u) => u.userId), [annId]);

    await call(bob, 'typing:start', { roomId: room.id });
    await waitFor(ann1, 'typing:start', (e) => e.roomId === room.id && e.userId === bob.userId);
    await waitFor(ann2, 'typing:start', (e) => e.roomId === room.id && e.userId === bob.userId);
    assert.deepEqual((await typingUsers(ann2, room.id)).map((u) => u.userId).sort(), [annId, bob.userId].sort());

    await call(ann1, 'typing:stop', { roomId: room.id });
    const stop = await waitFor(bob, 'typing:stop', (e) => e.roomId === room.id);
    assert.deepEqual(pick(stop, ['roomId', 'userId']), { roomId: room.id, userId: annId });
    await expectNone(ann1, 'typing:stop', (e) => e.roomId === room.id && e.userId === annId);
    await expectNone(ann2, 'typing:stop', (e) => e.roomId === room.id && e.userId === annId, { windowMs: 0 });
    assert.deepEqual((await typingUsers(ann1, room.id)).map((u) => u.userId), [bob.userId]);
    await call(bob, 'typing:stop', { roomId: room.id });
    await waitFor(ann1, 'typing:stop', (e) => e.roomId === room.id && e.userId === bob.userId);
    assert.deepEqual(await typingUsers(bob, room.id), []);
  });

  test('typing:stop without a start is ok and sends nothing', async () => {
    const { ann1, bob, room } = await setup();
    await call(ann1, 'typing:stop', { roomId: room.id });
    await expectNone(bob, 'typing:stop', (e) => e.roomId === room.id);
  });

  test('a typer\'s typing stops when its last socket goes away, not before', async () => {
    const { annId, ann1, ann2, bob, room } = await setup();
    await call(ann1, 'typing:start', { roomId: room.id });
    await waitFor(bob, 'typing:start', (e) => e.roomId === room.id);
    await disconnect(ann1);
    await expectNone(bob, 'typing:stop', (e) => e.roomId === room.id);
    assert.deepEqual((await typingUsers(bob, room.id)).map((u) => u.userId), [annId]);
    await disconnect(ann2);
    const stop = await waitFor(bob, 'typing:stop', (e) => e.roomId === room.id, 2000);
    assert.equal(stop.userId, annId);
    assert.deepEqual(await typingUsers(bob, room.id), []);
  });

  test('leaving a room stops the member\'s typing there', async () => {
    const { ann1, bob, room } = await setup();
    await call(bob, 'typing:start', { roomId: room.id });
    await waitFor(ann1, 'typing:start', (e) => e.roomId === room.id);
    await call(bob, 'room:leave', { roomId: room.id });
    await waitFor(ann1, 'room:member-left', (e) => e.roomId === room.id && e.userId === bob.userId);
    const stop = await waitFor(ann1, 'typing:stop', (e) => e.roomId === room.id);
    assert.equal(stop.userId, bob.userId);
    assert.deepEqual(await typingUsers(ann1, room.id), []);
  });

  test('typing by a non-member is forbidden; an unknown room is not_found; bad roomIds are bad_request', async () => {
    const { ann1, room } = await setup();
    const eve = await clients.connect(uid('eve'), 'Eve');
    for (const event of ['typing:start', 'typing:stop']) {
      await callFails(eve, event, { roomId: room.id }, 'forbidden');
      await callFails(eve, event, { roomId: UNKNOWN_ROOM }, 'not_found');
      for (const payload of [{}, { roomId: 'lobby' }, { roomId: 1 }]) await callFails(eve, event, payload, 'bad_request');
    }
    await expectNone(ann1, 'typing:start', (e) => e.roomId === room.id);
    for (const payload of [{}, { roomId: 'lobby' }, { roomId: 1 }]) await callFails(ann1, 'room:typing', payload, 'bad_request');
    await callFails(ann1, 'room:typing', { roomId: UNKNOWN_ROOM }, 'not_found');
  });

  describe('timers', { concurrency: true }, () => {
    test('the server sends typing:stop about 5 s after the last typing:start (between 4 and 8 s)', async () => {
      const { annId, ann2, bob, room, ann1 } = await setup();
      await call(ann1, 'typing:start', { roomId: room.id });
      const t0 = Date.now();
      await waitFor(bob, 'typing:start', (e) => e.roomId === room.id);
      const stop = await waitFor(bob, 'typing:stop', (e) => e.roomId === room.id, 9000);
      const elapsed = Date.now() - t0;
      assert.equal(stop.userId, annId);
      assert.ok(elapsed >= 4000 && elapsed <= 8000, `typing:stop came ${elapsed} ms after typing:start`);
      await expectNone(ann2, 'typing:stop', (e) => e.roomId === room.id, { windowMs: 0 });
      assert.deepEqual(await typingUsers(bob, room.id), []);
    });

    test('typing:start again refreshes the timer and is re-broadcast at most once every 2 s', async () => {
      const { annId, ann1, bob, room } = await setup();
      await call(ann1, 'typing:start', { roomId: room.id });
      const t0 = Date.now();
      await waitFor(bob, 'typing:start', (e) => e.roomId === room.id);
      for (const at of [500, 1000, 1500]) {
        await sleep(at - (Date.now() - t0));
        await call(ann1, 'typing:start', { roomId: room.id });
      }
      await sleep(1800 - (Date.now() - t0));
      const early = bob.e2e.log.filter((e) => e.event === 'typing:start' && e.payload?.roomId === room.id && e.at - t0 < 1800);
      assert.equal(early.length, 1, `one typing:start in the first 1.8 s, got ${early.length}`);

      await sleep(3000 - (Date.now() - t0));
      await call(ann1, 'typing:start', { roomId: room.id });
      const tLast = Date.now();
      const stop = await waitFor(bob, 'typing:stop', (e) => e.roomId === room.id, 10_000);
      const sinceLast = Date.now() - tLast;
      assert.equal(stop.userId, annId);
      assert.ok(sinceLast >= 4000 && sinceLast <= 8000, `typing:stop came ${sinceLast} ms after the last typing:start (${Date.now() - t0} ms after the first)`);
    });
  });
});

// The default typing limits (not the generous ones the other tests run with): keystroke cadence is
// fine, only a flood is refused.
describe(`typing with the default rate limits [${TRANSPORT}]`, { concurrency: true }, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({
      name: 'typing-defaults',
      env: { CONFAB_TYPING_RATE_PER_SEC: undefined, CONFAB_TYPING_BURST: undefined },
    });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  async function pair() {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = await createRoom(ann, { kind: 'public', members: [bob.userId] });
    return { ann, bob, room };
  }

  test('typing:start every 300 ms for 6 s is answered ok every time, and the room hears it at most every 2 s', async () => {
    const { ann, bob, room } = await pair();
    const t0 = Date.now();
    const replies = [];
    for (let i = 0; i < 20; i++) {
      await sleep(i * 300 - (Date.now() - t0));
      replies.push(await emitAck(ann, 'typing:start', { roomId: room.id }));
    }
    const refused = replies.filter((r) => r?.ok !== true);
    assert.deepEqual(refused, [], `${refused.length} of 20 keystroke-rate typing:start were refused`);
    const heard = bob.e2e.log.filter((e) => e.event === 'typing:start' && e.payload?.roomId === room.id && e.at >= t0);
    assert.ok(heard.length >= 1 && heard.length <= 4, `Bob got ${heard.length} typing:start in ${Date.now() - t0} ms`);
    await call(ann, 'typing:stop', { roomId: room.id });
  });

  test('a flood of typing:start is refused with rate_limited, and the socket keeps working', async () => {
    const { ann, room } = await pair();
    const replies = await Promise.all(
      Array.from({ length: 100 }, () => emitAck(ann, 'typing:start', { roomId: room.id }, 10_000)),
    );
    const codes = replies.map((r) => (r.ok ? 'ok' : r.error?.code));
    assert.ok(codes.includes('ok'), `the first ones are ok: ${codes.join(' ')}`);
    assert.ok(codes.filter((c) => c === 'rate_limited').length >= 50, `most of 100 back-to-back are rate_limited: ${codes.join(' ')}`);
    assert.deepEqual(codes.filter((c) => c !== 'ok' && c !== 'rate_limited'), []);
    for (const r of replies.filter((x) => !x.ok)) failed(r, 'rate_limited');
    await call(ann, 'room:list', {});
  });
});
