// Read marks (message:read, room:read, unread) and room:list.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  expectNone,
  sleep,
  TRANSPORT,
  uid,
  UNKNOWN_ROOM,
  waitFor,
} from '../lib/client.mjs';
import { createRoom, roomList, sendAll } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`read marks and room:list [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'read' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  const user = (prefix, name) => clients.connect(uid(prefix), name);
  const find = async (socket, roomId) => {
    const r = (await roomList(socket)).find((x) => x.id === roomId);
    assert.ok(r, `room ${roomId} is in room:list of ${socket.userId}`);
    return r;
  };

  test('message:read replies the effective mark: it never moves backwards and is clamped to lastSeq; room:read goes to the user\'s other sockets only when the mark moved', async () => {
    const ann = await user('ann', 'Ann');
    const bobId = uid('bob');
    const bob1 = await clients.connect(bobId, 'Bob');
    const bob2 = await clients.connect(bobId, 'Bob');
    const room = await createRoom(ann, { members: [bobId] });
    await sendAll(ann, room.id, ['1', '2', '3', '4']);

    assert.equal((await find(bob1, room.id)).unread, 4);

    assert.equal((await call(bob1, 'message:read', { roomId: room.id, seq: 2 })).seq, 2);
    const moved = await waitFor(bob2, 'room:read', (e) => e.roomId === room.id);
    assert.equal(moved.seq, 2);
    assert.equal((await find(bob1, room.id)).unread, 2);

    // Backwards: the mark stays, nothing is sent.
    assert.equal((await call(bob1, 'message:read', { roomId: room.id, seq: 1 })).seq, 2);
    // Same: nothing is sent.
    assert.equal((await call(bob1, 'message:read', { roomId: room.id, seq: 2 })).seq, 2);
    assert.equal((await call(bob1, 'message:read', { roomId: room.id, seq: 0 })).seq, 2);

    // Beyond lastSeq: clamped.
    assert.equal((await call(bob1, 'message:read', { roomId: room.id, seq: 999 })).seq, 4);
    const clamped = await waitFor(bob2, 'room:read', (e) => e.roomId === room.id);
    assert.equal(clamped.seq, 4, 'the next room:read after the backwards and repeated marks is the clamped one');
    await expectNone(bob2, 'room:read', (e) => e.roomId === room.id);
    await expectNone(bob1, 'room:read', (e) => e.roomId === room.id, { windowMs: 0 });
    await expectNone(ann, 'room:read', (e) => e.roomId === room.id, { windowMs: 0 });
    assert.equal((await find(bob2, room.id)).unread, 0);

    // Reading again at the top sends nothing.
    assert.equal((await call(bob2, 'message:read', { roomId: room.id, seq: 4 })).seq, 4);
    await expectNone(bob1, 'room:read', (e) => e.roomId === room.id);
  });

  test('unread counts messages after the read mark; the sender\'s mark moves to its own message', async () => {
    const ann = await user('ann', 'Ann');
    const bob = await user('bob', 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    await sendAll(ann, room.id, ['a', 'b', 'c']);
    let a = await find(ann, room.id);
    let b = await find(bob, room.id);
    assert.equal(a.lastSeq, 3);
    assert.equal(a.unread, 0, 'the sender has read its own messages');
    assert.equal(b.unread, 3);
    assert.equal(b.lastMessage.text, 'c');
    assert.equal(b.lastMessage.seq, 3);

    await sendAll(bob, room.id, ['d', 'e']);
    a = await find(ann, room.id);
    b = await find(bob, room.id);
    assert.equal(a.unread, 2);
    assert.equal(b.unread, 0, 'sending moves the sender\'s mark to its message');
    assert.equal(b.lastSeq, 5);

    // message:read below the sender's own mark does not move it back.
    assert.equal((await call(bob, 'message:read', { roomId: room.id, seq: 1 })).seq, 5);
  });

  test('a new member\'s read mark starts at the room\'s lastSeq (older history is not unread)', async () => {
    const ann = await user('ann', 'Ann');
    const room = await createRoom(ann, { kind: 'public' });
    await sendAll(ann, room.id, ['x', 'y', 'z']);
    const carl = await user('carl', 'Carl');
    const joined = (await call(carl, 'room:join', { roomId: room.id })).room;
    assert.equal(joined.lastSeq, 3);
    assert.equal(joined.unread, 0);
    assert.equal((await find(carl, room.id)).unread, 0);
    assert.equal((await call(carl, 'message:read', { roomId: room.id, seq: 1 })).seq, 3);
    await sendAll(ann, room.id, ['new']);
    assert.equal((await find(carl, room.id)).unread, 1);
  });

  test('room:list: the user\'s rooms, newest activity first (newest message, else when the user became a member)', async () => {
    const ann = await user('ann', 'Ann');
    const bob = await user('bob', 'Bob');
    const r1 = await createRoom(ann, { name: 'r1' });
    await sleep(20); // distinct membership times, so the order does not fall to the tie-break
    const r2 = await createRoom(ann, { name: 'r2', members: [bob.userId] });
    await sleep(20);
    const r3 = await createRoom(ann, { name: 'r3' });
    const ids = (rooms) => rooms.map((r) => r.id);

    assert.deepEqual(ids(await roomList(ann)), [r3.id, r2.id, r1.id]);
    await sleep(20);
    await call(ann, 'message:send', { roomId: r1.id, text: 'bump r1' });
    assert.deepEqual(ids(await roomList(ann)), [r1.id, r3.id, r2.id]);
    await sleep(20);
    await call(bob, 'message:send', { roomId: r2.id, text: 'bump r2' });
    assert.deepEqual(ids(await roomList(ann)), [r2.id, r1.id, r3.id]);
    assert.deepEqual(ids(await roomList(bob)), [r2.id], 'only the user\'s own rooms');

    const listed = (await roomList(ann)).find((r) => r.id === r2.id);
    assert.equal(listed.name, 'r2');
    assert.equal(listed.memberCount, 2);
    assert.equal(listed.lastSeq, 1);
    assert.equal(listed.unread, 1);
    assert.equal(listed.lastMessage.text, 'bump r2');
    assert.equal(listed.lastMessage.userId, bob.userId);
  });

  test('room:list is empty for a new user', async () => {
    const nobody = await user('nobody');
    assert.deepEqual(await roomList(nobody), []);
  });

  test('message:read by a non-member is forbidden; unknown room not_found; bad payloads bad_request', async () => {
    const ann = await user('ann', 'Ann');
    const eve = await user('eve', 'Eve');
    const room = await createRoom(ann, { kind: 'public' });
    await sendAll(ann, room.id, ['m']);
    await callFails(eve, 'message:read', { roomId: room.id, seq: 1 }, 'forbidden');
    await callFails(eve, 'message:read', { roomId: UNKNOWN_ROOM, seq: 1 }, 'not_found');
    const cases = [
      { roomId: room.id },
      { roomId: room.id, seq: -1 },
      { roomId: room.id, seq: 1.5 },
      { roomId: room.id, seq: '1' },
      { roomId: room.id, seq: null },
      { seq: 1 },
      { roomId: 'lobby', seq: 1 },
    ];
    for (const payload of cases) await callFails(ann, 'message:read', payload, 'bad_request');
    await callFails(eve, 'message:read', { roomId: room.id, seq: -1 }, 'bad_request', 'shape before membership');
  });
});
