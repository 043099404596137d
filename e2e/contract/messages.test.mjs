// message:send, message:new and idempotent resends.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  expectNone,
  TRANSPORT,
  uid,
  UNKNOWN_ROOM,
  waitFor,
} from '../lib/client.mjs';
import { assertMessage, createRoom, history, roomList, seqs } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`messages [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'messages' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  const user = (prefix, name) => clients.connect(uid(prefix), name);

  test('message:send replies { message } with every field; text is trimmed; seq starts at 1 without gaps', async () => {
    const ann = await user('ann', 'Ann');
    const room = await createRoom(ann);
    const before = Date.now();
    const first = assertMessage((await call(ann, 'message:send', { roomId: room.id, text: '  \u3000hello\n ' })).message);
    assert.equal(first.roomId, room.id);
    assert.equal(first.seq, 1);
    assert.equal(first.userId, ann.userId);
    assert.equal(first.name, 'Ann');
    assert.equal(first.text, 'hello');
    assert.equal(first.clientId, null);
    assert.equal(first.replyTo, null);
    const created = Date.parse(first.createdAt);
    assert.ok(created >= before - 60_000 && created <= Date.now() + 60_000, `createdAt ${first.createdAt} is about now`);

    const more = [];
    for (let i = 0; i < 4; i += 1) {
      more.push((await call(ann, 'message:send', { roomId: room.id, text: `m${i}`, clientId: null, replyTo: null })).message);
    }
    assert.deepEqual(seqs(more), [2, 3, 4, 5]);
    assert.equal(new Set([first.id, ...more.map((m) => m.id)]).size, 5, 'ids are distinct');
  });

  test('message:new reaches every socket in the room except the sending one (the sender\'s other socket included), and no one outside', async () => {
    const annId = uid('ann');
    const ann1 = await clients.connect(annId, 'Ann');
    const ann2 = await clients.connect(annId, 'Ann');
    const bob = await user('bob', 'Bob');
    const outsider = await user('out', 'Out');
    const room = await createRoom(ann1, { kind: 'public', members: [bob.userId] });

    const sent = (await call(ann1, 'message:send', { roomId: room.id, text: 'to everyone' })).message;
    assert.deepEqual(assertMessage(await waitFor(bob, 'message:new', (m) => m.roomId === room.id)), sent);
    assert.deepEqual(assertMessage(await waitFor(ann2, 'message:new', (m) => m.roomId === room.id)), sent);
    await expectNone(ann1, 'message:new', (m) => m.roomId === room.id);
    await expectNone(outsider, 'message:new', (m) => m.roomId === room.id, { windowMs: 0 });
  });

  test('concurrent senders get distinct, gap-free seqs', async () => {
    const ann = await user('ann', 'Ann');
    const bob = await user('bob', 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    const sends = [];
    for (let i = 0; i < 10; i += 1) {
      sends.push(call(i % 2 ? ann : bob, 'message:send', { roomId: room.id, text: `c${i}` }));
    }
    const got = (await Promise.all(sends)).map((r) => r.message.seq).sort((a, b) => a - b);
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test('text of 1000 scalar values (the default limit) is accepted, astral characters counting once; 1001 is bad_request', async () => {
    const ann = await user('ann', 'Ann');
    const room = await createRoom(ann);
    await call(ann, 'message:send', { roomId: room.id, text: 'a'.repeat(1000) });
    const emoji = '🙂'.repeat(1000);
    assert.equal((await call(ann, 'message:send', { roomId: room.id, text: ` ${emoji} ` })).message.text, emoji);
    await callFails(ann, 'message:send', { roomId: room.id, text: 'a'.repeat(1001) }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: '🙂'.repeat(1001) }, 'bad_request');
  });

  test('replyTo a message of the same room is kept; from another room, unknown, or not a UUID is bad_request', async () => {
    const ann = await user('ann', 'Ann');
    const room = await createRoom(ann);
    const other = await createRoom(ann);
    const original = (await call(ann, 'message:send', { roomId: room.id, text: 'question?' })).message;
    const elsewhere = (await call(ann, 'message:send', { roomId: other.id, text: 'elsewhere' })).message;
    const reply = (await call(ann, 'message:send', { roomId: room.id, text: 'answer', replyTo: original.id })).message;
    assert.equal(reply.replyTo, original.id);
    await callFails(ann, 'message:send', { roomId: room.id, text: 'x', replyTo: elsewhere.id }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'x', replyTo: UNKNOWN_ROOM }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'x', replyTo: 'not-a-uuid' }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'x', replyTo: 42 }, 'bad_request');
    const page = await history(ann, { roomId: room.id });
    assert.deepEqual(seqs(page.messages), [1, 2], 'refused sends store nothing');
  });

  test('clientId: kept when given; 64 characters accepted; empty, 65 characters or not a string is bad_request', async () => {
    const ann = await user('ann', 'Ann');
    const room = await createRoom(ann);
    const cid = `c-${'x'.repeat(62)}`;
    assert.equal(cid.length, 64);
    assert.equal((await call(ann, 'message:send', { roomId: room.id, text: 'a', clientId: cid })).message.clientId, cid);
    await callFails(ann, 'message:send', { roomId: room.id, text: 'b', clientId: 'c'.repeat(65) }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'b', clientId: '' }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'b', clientId: ' \t ' }, 'bad_request', 'clientId blank after trimming');
    await call(ann, 'message:send', { roomId: room.id, text: 'c', clientId: `  ${'d'.repeat(64)}  ` }, 'clientId of 64 characters after trimming');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'b', clientId: 42 }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: 'b', clientId: { id: 1 } }, 'bad_request');
  });

  test('resending with the same clientId returns the stored message (same id, seq, text) and broadcasts nothing new', async () => {
    const ann = await user('ann', 'Ann');
    const bob = await user('bob', 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    const clientId = uid('cid');

    const first = (await call(ann, 'message:send', { roomId: room.id, text: 'once only', clientId })).message;
    assert.deepEqual(await waitFor(bob, 'message:new', (m) => m.roomId === room.id), first);

    const again = (await call(ann, 'message:send', { roomId: room.id, text: 'once only', clientId })).message;
    assert.equal(again.id, first.id);
    assert.equal(again.seq, first.seq);
    assert.equal(again.text, first.text);
    assert.equal(again.clientId, clientId);
    const changed = (await call(ann, 'message:send', { roomId: room.id, text: 'different text', clientId })).message;
    assert.equal(changed.id, first.id, 'same clientId with other text still returns the stored message');
    assert.equal(changed.seq, first.seq);
    assert.equal(changed.text, 'once only');

    // Ordering proof: the next new message is the next thing Bob sees.
    const next = (await call(ann, 'message:send', { roomId: room.id, text: 'next', clientId: uid('cid') })).message;
    assert.equal(next.seq, first.seq + 1, 'no seq was used by the resends');
    const seen = await waitFor(bob, 'message:new', (m) => m.roomId === room.id);
    assert.equal(seen.id, next.id, `Bob's next message:new is the new message, not a resend: ${JSON.stringify(seen)}`);
    await expectNone(bob, 'message:new', (m) => m.roomId === room.id);

    const page = await history(bob, { roomId: room.id });
    assert.deepEqual(seqs(page.messages), [1, 2]);
  });

  test('the same clientId in another room, or by another user, makes a new message', async () => {
    const ann = await user('ann', 'Ann');
    const bob = await user('bob', 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    const other = await createRoom(ann);
    const clientId = 'shared-client-id';
    const a = (await call(ann, 'message:send', { roomId: room.id, text: 'a', clientId })).message;
    const b = (await call(ann, 'message:send', { roomId: other.id, text: 'b', clientId })).message;
    const c = (await call(bob, 'message:send', { roomId: room.id, text: 'c', clientId })).message;
    assert.equal(new Set([a.id, b.id, c.id]).size, 3);
    assert.equal(c.seq, 2);
    assert.equal(c.userId, bob.userId);
  });

  test('a non-member sending is forbidden (public and private rooms); an unknown room is not_found', async () => {
    const ann = await user('ann', 'Ann');
    const eve = await user('eve', 'Eve');
    const pub = await createRoom(ann, { kind: 'public' });
    const priv = await createRoom(ann, { kind: 'private' });
    await callFails(eve, 'message:send', { roomId: pub.id, text: 'hi' }, 'forbidden');
    await callFails(eve, 'message:send', { roomId: priv.id, text: 'hi' }, 'forbidden');
    await callFails(eve, 'message:send', { roomId: UNKNOWN_ROOM, text: 'hi' }, 'not_found');
    await expectNone(ann, 'message:new', (m) => m.roomId === pub.id || m.roomId === priv.id);
    const rooms = await roomList(ann);
    assert.equal(rooms.find((r) => r.id === pub.id)?.lastSeq, 0);
  });

  test('malformed message:send payloads are bad_request; shape validation comes before membership and existence', async () => {
    const ann = await user('ann', 'Ann');
    const eve = await user('eve', 'Eve');
    const room = await createRoom(ann);
    const cases = [
      {},
      { text: 'no room' },
      { roomId: 'lobby', text: 'hi' },
      { roomId: 42, text: 'hi' },
      { roomId: null, text: 'hi' },
      { roomId: room.id },
      { roomId: room.id, text: null },
      { roomId: room.id, text: 42 },
      { roomId: room.id, text: ['hi'] },
      { roomId: room.id, text: '' },
      { roomId: room.id, text: ' \t\n\u00a0\u3000 ' },
    ];
    for (const payload of cases) await callFails(ann, 'message:send', payload, 'bad_request');
    // Several errors apply: the payload's shape is checked first.
    await callFails(eve, 'message:send', { roomId: room.id, text: '' }, 'bad_request', 'non-member, empty text');
    await callFails(eve, 'message:send', { roomId: UNKNOWN_ROOM, text: '   ' }, 'bad_request', 'unknown room, blank text');
    await callFails(eve, 'message:send', { roomId: UNKNOWN_ROOM, text: 'x'.repeat(1001) }, 'bad_request', 'unknown room, long text');
    const page = await history(ann, { roomId: room.id });
    assert.equal(page.messages.length, 0, 'nothing was stored');
  });
});
