// room:create, room:join, room:leave, room:members and the events they cause.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  expectNone,
  pick,
  TRANSPORT,
  uid,
  UNKNOWN_ROOM,
  waitFor,
} from '../lib/client.mjs';
import { assertRoom, createRoom, members, roomList } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`rooms [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'rooms' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  const user = (prefix, name) => clients.connect(uid(prefix), name);

  describe('room:create', () => {
    test('creates a private room by default; the creator is its only member', async () => {
      const ann = await user('ann', 'Ann');
      const reply = await call(ann, 'room:create', { name: 'Plans' });
      const room = assertRoom(reply.room);
      assert.equal(room.name, 'Plans');
      assert.equal(room.kind, 'private');
      assert.equal(room.memberCount, 1);
      assert.equal(room.lastSeq, 0);
      assert.equal(room.unread, 0);
      assert.equal(room.lastMessage, null);
      const list = await members(ann, room.id);
      assert.deepEqual(list.map((m) => m.userId), [ann.userId]);
      assert.equal(list[0].name, 'Ann');
      assert.equal(list[0].online, true);
    });

    test('kind "public" and kind "private" are honored', async () => {
      const ann = await user('ann', 'Ann');
      assert.equal((await createRoom(ann, { kind: 'public' })).kind, 'public');
      assert.equal((await createRoom(ann, { kind: 'private' })).kind, 'private');
    });

    test('the name is trimmed of Unicode white space; 100 scalar values are accepted', async () => {
      const ann = await user('ann', 'Ann');
      assert.equal((await createRoom(ann, { name: '\u3000 lobby \n\u00a0' })).name, 'lobby');
      const long = 'ü'.repeat(99) + '🙂';
      assert.equal((await createRoom(ann, { name: long })).name, long);
    });

    test('members become members; the creator and repeats are ignored', async () => {
      const ann = await user('ann', 'Ann');
      const bobId = uid('bob');
      const carlId = uid('carl');
      const room = await createRoom(ann, { members: [ann.userId, bobId, bobId, carlId, carlId] });
      assert.equal(room.memberCount, 3);
      const list = await members(ann, room.id);
      assert.deepEqual(list.map((m) => m.userId).sort(), [ann.userId, bobId, carlId].sort());
    });

    test('room:added reaches every socket of every new member and the creator\'s other sockets, not the acting socket; no room:member-joined at creation', async () => {
      const annId = uid('ann');
      const ann1 = await clients.connect(annId, 'Ann');
      const ann2 = await clients.connect(annId, 'Ann');
      const bobId = uid('bob');
      const bob1 = await clients.connect(bobId, 'Bob');
      const bob2 = await clients.connect(bobId, 'Bob');
      const stranger = await user('stranger');

      const room = await createRoom(ann1, { name: 'Together', kind: 'private', members: [bobId] });
      for (const s of [ann2, bob1, bob2]) {
        const added = assertRoom(await waitFor(s, 'room:added', (r) => r.id === room.id), `room:added on ${s.e2e.label}`);
        assert.equal(added.name, 'Together');
        assert.equal(added.kind, 'private');
        assert.equal(added.memberCount, 2);
        assert.equal(added.unread, 0);
      }
      await expectNone(ann1, 'room:added', (r) => r.id === room.id);
      for (const s of [ann1, ann2, bob1, bob2]) {
        await expectNone(s, 'room:member-joined', (e) => e.roomId === room.id, { windowMs: 0 });
      }
      await expectNone(stranger, 'room:added', (r) => r.id === room.id, { windowMs: 0 });
    });

    test('sockets of new members are in the room at once: they receive message:new', async () => {
      const ann = await user('ann', 'Ann');
      const bob = await user('bob', 'Bob');
      const room = await createRoom(ann, { members: [bob.userId] });
      const sent = await call(ann, 'message:send', { roomId: room.id, text: 'welcome' });
      assert.deepEqual(await waitFor(bob, 'message:new', (m) => m.roomId === room.id), sent.message);
    });

    test('members may list up to 1000 ids', async () => {
      const ann = await user('ann', 'Ann');
      const ids = Array.from({ length: 1000 }, (_, i) => `m${i}-${ann.userId}`);
      const room = await createRoom(ann, { members: ids });
      assert.equal(room.memberCount, 1001);
    });

    test('invalid payloads are bad_request', async () => {
      const ann = await user('ann', 'Ann');
      const cases = [
        {},
        { name: '' },
        { name: ' \t\n ' },
        { name: 'x'.repeat(101) },
        { name: 'ü'.repeat(101) },
        { name: 42 },
        { name: null },
        { name: ['a'] },
        { name: 'ok', kind: 'direct' },
        { name: 'ok', kind: 'secret' },
        { name: 'ok', kind: 1 },
        { name: 'ok', members: 'bob' },
        { name: 'ok', members: [42] },
        { name: 'ok', members: ['has space'] },
        { name: 'ok', members: ['x'.repeat(65)] },
        { name: 'ok', members: [''] },
        { name: 'ok', members: Array.from({ length: 1001 }, (_, i) => `member-${i}`) },
      ];
      for (const payload of cases) {
        await callFails(ann, 'room:create', payload, 'bad_request', `room:create ${JSON.stringify(payload).slice(0, 80)}`);
      }
    });
  });

  describe('room:join', () => {
    test('anyone joins a public room: reply { room }, room:member-joined to the room and the joiner\'s other sockets, room:added to the joiner\'s other sockets, nothing to the acting socket', async () => {
      const ann = await user('ann', 'Ann');
      const room = await createRoom(ann, { name: 'Open', kind: 'public' });
      const bobId = uid('bob');
      const bob1 = await clients.connect(bobId, 'Bob');
      const bob2 = await clients.connect(bobId, 'Bob');

      const reply = await call(bob1, 'room:join', { roomId: room.id });
      const joined = assertRoom(reply.room);
      assert.equal(joined.id, room.id);
      assert.equal(joined.kind, 'public');
      assert.equal(joined.memberCount, 2);
      assert.equal(joined.unread, 0);

      const expected = { roomId: room.id, userId: bobId, name: 'Bob', memberCount: 2 };
      const keys = Object.keys(expected);
      const onAnn = await waitFor(ann, 'room:member-joined', (e) => e.roomId === room.id);
      assert.deepEqual(pick(onAnn, keys), expected);
      const onBob2 = await waitFor(bob2, 'room:member-joined', (e) => e.roomId === room.id);
      assert.deepEqual(pick(onBob2, keys), expected);
      const added = assertRoom(await waitFor(bob2, 'room:added', (r) => r.id === room.id));
      assert.equal(added.memberCount, 2);

      await expectNone(bob1, 'room:member-joined', (e) => e.roomId === room.id);
      await expectNone(bob1, 'room:added', (r) => r.id === room.id, { windowMs: 0 });
      await expectNone(ann, 'room:added', (r) => r.id === room.id, { windowMs: 0 });

      // Both of Bob's sockets are now in the room.
      const sent = await call(ann, 'message:send', { roomId: room.id, text: 'hi Bob' });
      assert.deepEqual(await waitFor(bob1, 'message:new', (m) => m.roomId === room.id), sent.message);
      assert.deepEqual(await waitFor(bob2, 'message:new', (m) => m.roomId === room.id), sent.message);

      const list = await members(ann, room.id);
      assert.deepEqual(list.map((m) => m.userId).sort(), [ann.userId, bobId].sort());
    });

    test('joining a public room one already belongs to is ok and announces nothing', async () => {
      const ann = await user('ann', 'Ann');
      const bob = await user('bob', 'Bob');
      const room = await createRoom(ann, { kind: 'public' });
      await call(bob, 'room:join', { roomId: room.id });
      await waitFor(ann, 'room:member-joined', (e) => e.roomId === room.id);
      const again = (await call(bob, 'room:join', { roomId: room.id })).room;
      assert.equal(again.memberCount, 2);
      const creatorJoin = (await call(ann, 'room:join', { roomId: room.id })).room;
      assert.equal(creatorJoin.memberCount, 2);
      await expectNone(ann, 'room:member-joined', (e) => e.roomId === room.id);
      await expectNone(bob, 'room:member-joined', (e) => e.roomId === room.id, { windowMs: 0 });
    });

    test('a member may join a private room it belongs to', async () => {
      const ann = await user('ann', 'Ann');
      const bob = await user('bob', 'Bob');
      const room = await createRoom(ann, { kind: 'private', members: [bob.userId] });
      const reply = await call(bob, 'room:join', { roomId: room.id });
      assert.equal(reply.room.id, room.id);
      assert.equal(reply.room.memberCount, 2);
    });

    test('a non-member joining a private room is forbidden', async () => {
      const ann = await user('ann', 'Ann');
      const eve = await user('eve', 'Eve');
      const room = await createRoom(ann, { kind: 'private' });
      await callFails(eve, 'room:join', { roomId: room.id }, 'forbidden');
      await expectNone(ann, 'room:member-joined', (e) => e.roomId === room.id);
    });

    test('an unknown room is not_found; a roomId that is not a UUID, or missing, is bad_request', async () => {
      const ann = await user('ann', 'Ann');
      await callFails(ann, 'room:join', { roomId: UNKNOWN_ROOM }, 'not_found');
      for (const payload of [{}, { roomId: 'lobby' }, { roomId: 42 }, { roomId: null }, { roomId: '' }]) {
        await callFails(ann, 'room:join', payload, 'bad_request');
      }
    });
  });

  describe('room:leave', () => {
    test('leaving: { ok }, room:removed to the leaver\'s other sockets only, room:member-left to the rest of the room but not to the leaver\'s sockets, which stop receiving the room', async () => {
      const ann = await user('ann', 'Ann');
      const carl = await user('carl', 'Carl');
      const bobId = uid('bob');
      const bob1 = await clients.connect(bobId, 'Bob');
      const bob2 = await clients.connect(bobId, 'Bob');
      const room = await createRoom(ann, { kind: 'public', members: [bobId, carl.userId] });

      await call(bob1, 'room:leave', { roomId: room.id });

      await waitFor(bob2, 'room:removed', (e) => e.roomId === room.id);
      const expected = { roomId: room.id, userId: bobId, memberCount: 2 };
      const keys = Object.keys(expected);
      assert.deepEqual(pick(await waitFor(ann, 'room:member-left', (e) => e.roomId === room.id), keys), expected);
      assert.deepEqual(pick(await waitFor(carl, 'room:member-left', (e) => e.roomId === room.id), keys), expected);

      await expectNone(bob1, 'room:removed', (e) => e.roomId === room.id);
      await expectNone(bob1, 'room:member-left', (e) => e.roomId === room.id, { windowMs: 0 });
      await expectNone(bob2, 'room:member-left', (e) => e.roomId === room.id, { windowMs: 0 });

      // Bob's sockets left the Socket.IO room.
      await call(ann, 'message:send', { roomId: room.id, text: 'after Bob left' });
      await waitFor(carl, 'message:new', (m) => m.roomId === room.id);
      await expectNone(bob1, 'message:new', (m) => m.roomId === room.id);
      await expectNone(bob2, 'message:new', (m) => m.roomId === room.id, { windowMs: 0 });

      const rooms = await roomList(bob1);
      assert.ok(!rooms.some((r) => r.id === room.id), 'the room is gone from room:list');
      await callFails(bob1, 'message:send', { roomId: room.id, text: 'still here?' }, 'forbidden');
      const list = await members(ann, room.id);
      assert.deepEqual(list.map((m) => m.userId).sort(), [ann.userId, carl.userId].sort());
    });

    test('a member of a private room may leave it', async () => {
      const ann = await user('ann', 'Ann');
      const bob = await user('bob', 'Bob');
      const room = await createRoom(ann, { kind: 'private', members: [bob.userId] });
      await call(bob, 'room:leave', { roomId: room.id });
      const left = await waitFor(ann, 'room:member-left', (e) => e.roomId === room.id);
      assert.equal(left.userId, bob.userId);
      assert.equal(left.memberCount, 1);
      // Having left a private room, Bob cannot join it again.
      await callFails(bob, 'room:join', { roomId: room.id }, 'forbidden');
    });

    test('a non-member leaving is forbidden; an unknown room is not_found; a bad roomId is bad_request', async () => {
      const ann = await user('ann', 'Ann');
      const eve = await user('eve', 'Eve');
      const room = await createRoom(ann, { kind: 'public' });
      await callFails(eve, 'room:leave', { roomId: room.id }, 'forbidden');
      await callFails(eve, 'room:leave', { roomId: UNKNOWN_ROOM }, 'not_found');
      for (const payload of [{}, { roomId: 'lobby' }, { roomId: 7 }]) {
        await callFails(eve, 'room:leave', payload, 'bad_request');
      }
      await expectNone(ann, 'room:member-left', (e) => e.roomId === room.id, { windowMs: 100 });
    });
  });

  describe('room:members', () => {
    test('lists { userId, name, online } of every member', async () => {
      const ann = await user('ann', 'Ann');
      const bob = await user('bob', 'Bob');
      const ghostId = uid('ghost');
      const room = await createRoom(ann, { members: [bob.userId, ghostId] });
      const list = await members(bob, room.id);
      const byId = Object.fromEntries(list.map((m) => [m.userId, m]));
      assert.deepEqual(Object.keys(byId).sort(), [ann.userId, bob.userId, ghostId].sort());
      const keys = ['userId', 'name', 'online'];
      assert.deepEqual(pick(byId[ann.userId], keys), { userId: ann.userId, name: 'Ann', online: true });
      assert.deepEqual(pick(byId[bob.userId], keys), { userId: bob.userId, name: 'Bob', online: true });
      assert.equal(byId[ghostId].online, false);
    });

    test('a non-member is forbidden; an unknown room is not_found; a bad roomId is bad_request', async () => {
      const ann = await user('ann', 'Ann');
      const eve = await user('eve', 'Eve');
      const room = await createRoom(ann, { kind: 'public' });
      await callFails(eve, 'room:members', { roomId: room.id }, 'forbidden');
      await callFails(eve, 'room:members', { roomId: UNKNOWN_ROOM }, 'not_found');
      for (const payload of [{}, { roomId: 'lobby' }, { roomId: false }]) {
        await callFails(eve, 'room:members', payload, 'bad_request');
      }
    });
  });
});
