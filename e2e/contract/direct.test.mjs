// room:direct: the one direct room of two users.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, callFails, Clients, expectNone, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { assertRoom, roomList } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`room:direct [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'direct' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('creates the direct room on first use and returns the same room afterwards, from either side', async () => {
    const annId = uid('ann');
    const ann1 = await clients.connect(annId, 'Ann');
    const ann2 = await clients.connect(annId, 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');

    const first = assertRoom((await call(ann1, 'room:direct', { userId: bob.userId })).room);
    assert.equal(first.kind, 'direct');
    assert.equal(first.memberCount, 2);
    assert.equal(first.lastSeq, 0);

    // room:added to every socket of the new members except the acting one.
    assert.equal(assertRoom(await waitFor(bob, 'room:added', (r) => r.id === first.id)).kind, 'direct');
    assert.equal(assertRoom(await waitFor(ann2, 'room:added', (r) => r.id === first.id)).kind, 'direct');
    await expectNone(ann1, 'room:added', (r) => r.id === first.id);

    const again = (await call(ann1, 'room:direct', { userId: bob.userId })).room;
    assert.equal(again.id, first.id, 'the same direct room when asked again');
    const fromBob = (await call(bob, 'room:direct', { userId: annId })).room;
    assert.equal(fromBob.id, first.id, 'the same direct room from the other side');

    // No one became a member again: no new room:added.
    await expectNone(bob, 'room:added', (r) => r.id === first.id);
    await expectNone(ann2, 'room:added', (r) => r.id === first.id, { windowMs: 0 });

    // Messages flow both ways.
    const sent = await call(bob, 'message:send', { roomId: first.id, text: 'psst' });
    assert.deepEqual(await waitFor(ann1, 'message:new', (m) => m.roomId === first.id), sent.message);
    assert.deepEqual(await waitFor(ann2, 'message:new', (m) => m.roomId === first.id), sent.message);
  });

  test('a user who never connected may be named, and sees the room at first connect', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const ghostId = uid('ghost');
    const room = (await call(ann, 'room:direct', { userId: ghostId })).room;
    assert.equal(room.kind, 'direct');
    assert.equal(room.memberCount, 2);
    const ghost = await clients.connect(ghostId);
    const rooms = await roomList(ghost);
    const seen = rooms.find((r) => r.id === room.id);
    assert.ok(seen, 'the direct room is in room:list');
    assert.equal(seen.kind, 'direct');
  });

  test('a third user cannot join a direct room (forbidden)', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const eve = await clients.connect(uid('eve'), 'Eve');
    const room = (await call(ann, 'room:direct', { userId: bob.userId })).room;
    await callFails(eve, 'room:join', { roomId: room.id }, 'forbidden');
    await callFails(eve, 'message:send', { roomId: room.id, text: 'let me in' }, 'forbidden');
  });

  test('a direct room cannot be left (bad_request)', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = (await call(ann, 'room:direct', { userId: bob.userId })).room;
    await callFails(ann, 'room:leave', { roomId: room.id }, 'bad_request');
    await expectNone(bob, 'room:member-left', (e) => e.roomId === room.id);
    const rooms = await roomList(ann);
    assert.ok(rooms.some((r) => r.id === room.id), 'still a member');
  });

  test('a direct room with oneself, or with an invalid user id, is bad_request', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    await callFails(ann, 'room:direct', { userId: ann.userId }, 'bad_request');
    for (const payload of [{}, { userId: '' }, { userId: 42 }, { userId: null }, { userId: 'has space' }, { userId: 'x'.repeat(65) }, { userId: ['a'] }]) {
      await callFails(ann, 'room:direct', payload, 'bad_request');
    }
  });
});
