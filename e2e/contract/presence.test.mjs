// presence:update and presence:get.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  disconnect,
  expectNone,
  pick,
  TRANSPORT,
  uid,
  waitFor,
} from '../lib/client.mjs';
import { createRoom, members } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`presence [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'presence' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  const presenceOf = async (socket, ids) => (await call(socket, 'presence:get', { userIds: ids })).presence;

  test('online when the first socket connects, offline only when the last of two sockets goes away; sent to the user\'s rooms only', async () => {
    const bob = await clients.connect(uid('bob'), 'Bob');
    const stranger = await clients.connect(uid('stranger'));
    const annId = uid('ann');
    const room = await createRoom(bob, { members: [annId] });
    const about = (status) => (e) => e.userId === annId && e.status === status;

    const t1 = Date.now();
    const ann1 = await clients.connect(annId, 'Ann');
    const online = await waitFor(bob, 'presence:update', (e) => e.userId === annId, 1500);
    assert.deepEqual(pick(online, ['userId', 'status']), { userId: annId, status: 'online' });
    assert.ok(Date.now() - t1 < 1500, 'within about 1 s of the connect');
    await waitFor(ann1, 'presence:update', about('online'), 1500).catch((err) => {
      throw new Error(`the user's own socket is in its rooms and gets its own presence:update: ${err.message}`);
    });
    assert.deepEqual(await presenceOf(bob, [annId]), { [annId]: 'online' });

    // A second socket: no new presence:update.
    const ann2 = await clients.connect(annId, 'Ann');
    await call(ann2, 'message:send', { roomId: room.id, text: 'second socket here' });
    await waitFor(bob, 'message:new', (m) => m.roomId === room.id);
    await expectNone(bob, 'presence:update', (e) => e.userId === annId, { windowMs: 500 });

    // First socket goes: still online.
    await disconnect(ann1);
    await expectNone(bob, 'presence:update', (e) => e.userId === annId, { windowMs: 500 });
    assert.deepEqual(await presenceOf(bob, [annId]), { [annId]: 'online' });
    assert.equal((await members(bob, room.id)).find((m) => m.userId === annId)?.online, true);

    // Last socket goes: offline within 1 s.
    const t2 = Date.now();
    await disconnect(ann2);
    const offline = await waitFor(bob, 'presence:update', (e) => e.userId === annId, 1500);
    assert.deepEqual(pick(offline, ['userId', 'status']), { userId: annId, status: 'offline' });
    assert.ok(Date.now() - t2 < 1500, 'within about 1 s of the disconnect');
    assert.deepEqual(await presenceOf(bob, [annId]), { [annId]: 'offline' });
    assert.equal((await members(bob, room.id)).find((m) => m.userId === annId)?.online, false);

    await expectNone(stranger, 'presence:update', (e) => e.userId === annId, { windowMs: 0 });
  });

  test('presence:get answers about any user, connected or not', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const ghost = uid('ghost');
    assert.deepEqual(await presenceOf(ann, [bob.userId, ghost, ann.userId]), {
      [bob.userId]: 'online',
      [ghost]: 'offline',
      [ann.userId]: 'online',
    });
  });

  test('a user is online for everyone from the moment its session arrives (on a cluster: whichever nodes they are on)', async () => {
    const asker = await clients.connect(uid('asker'), 'Asker');
    for (let i = 0; i < 12; i += 1) {
      const user = await clients.connect(uid(`new${i}`));
      assert.deepEqual(await presenceOf(asker, [user.userId]), { [user.userId]: 'online' }, `user ${i}`);
    }
  });

  test('presence:get takes 1 to 200 ids', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const ids = Array.from({ length: 200 }, (_, i) => `p${i}-${ann.userId}`.slice(0, 64));
    const presence = await presenceOf(ann, ids);
    assert.equal(Object.keys(presence).length, 200);
    assert.ok(Object.values(presence).every((s) => s === 'offline'));
    await callFails(ann, 'presence:get', { userIds: [] }, 'bad_request');
    await callFails(ann, 'presence:get', { userIds: [...ids, 'one-more'] }, 'bad_request');
  });

  test('presence:get with an invalid user id or a bad payload is bad_request', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    for (const payload of [
      {},
      { userIds: 'ann' },
      { userIds: null },
      { userIds: [ann.userId, 'has space'] },
      { userIds: [''] },
      { userIds: ['x'.repeat(65)] },
      { userIds: [42] },
      { userIds: [null] },
    ]) {
      await callFails(ann, 'presence:get', payload, 'bad_request');
    }
  });
});
