// Malformed input: payloads of the wrong type, unknown events, ack-less failures, and a burst of garbage
// that must not disturb anyone else.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  emitAck,
  expectNone,
  failed,
  NO_PAYLOAD,
  sleep,
  TRANSPORT,
  uid,
  waitFor,
} from '../lib/client.mjs';
import { createRoom } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

const CLIENT_EVENTS = [
  'room:create',
  'room:direct',
  'room:join',
  'room:leave',
  'room:list',
  'room:members',
  'message:send',
  'message:history',
  'message:read',
  'typing:start',
  'typing:stop',
  'room:typing',
  'presence:get',
];

function nested(depth) {
  let v = { leaf: true };
  for (let i = 0; i < depth; i += 1) v = { a: v };
  return v;
}

function nestedArray(depth) {
  let v = [];
  for (let i = 0; i < depth; i += 1) v = [v];
  return v;
}

describe(`malformed input [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({ name: 'errors' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('a payload that is not an object is bad_request, for every client event', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bad = ['a string', 42, true, [], [{ roomId: 'x' }], null];
    for (const event of CLIENT_EVENTS) {
      for (const payload of bad) {
        // room:list's payload is `{}`; a null there may be read as "no payload".
        if (event === 'room:list' && payload === null) continue;
        await callFails(ann, event, payload, 'bad_request', `${event} with ${JSON.stringify(payload)}`);
      }
    }
  });

  test('an unknown event is answered with bad_request', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    await callFails(ann, 'no:such-event', {}, 'bad_request');
    await callFails(ann, 'message:delete', { roomId: 'x' }, 'bad_request');
    failed(await emitAck(ann, 'unknown-without-payload', NO_PAYLOAD), 'bad_request');
  });

  test('an ack-less event that fails makes the server emit error { event, code, message } to that socket only', async () => {
    const annId = uid('ann');
    const ann = await clients.connect(annId, 'Ann');
    const ann2 = await clients.connect(annId, 'Ann');
    const eve = await clients.connect(uid('eve'), 'Eve');
    const room = await createRoom(ann, { kind: 'private' });

    ann.emit('message:send', { roomId: room.id, text: '' });
    let err = await waitFor(ann, 'error', (e) => e.event === 'message:send');
    assert.equal(err.code, 'bad_request', JSON.stringify(err));
    assert.equal(typeof err.message, 'string');

    eve.emit('room:join', { roomId: room.id });
    err = await waitFor(eve, 'error', (e) => e.event === 'room:join');
    assert.equal(err.code, 'forbidden', JSON.stringify(err));
    assert.equal(typeof err.message, 'string');

    eve.emit('message:history', { roomId: '00000000-0000-4000-8000-000000000000' });
    err = await waitFor(eve, 'error', (e) => e.event === 'message:history');
    assert.equal(err.code, 'not_found', JSON.stringify(err));

    ann.emit('no:such-event', {});
    err = await waitFor(ann, 'error', (e) => e.event === 'no:such-event');
    assert.equal(err.code, 'bad_request', JSON.stringify(err));

    await expectNone(ann2, 'error', () => true, { windowMs: 100 });
  });

  test('an ack-less event that succeeds emits no error', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    ann.emit('message:send', { roomId: room.id, text: 'fire and forget' });
    const m = await waitFor(bob, 'message:new', (x) => x.roomId === room.id);
    assert.equal(m.text, 'fire and forget');
    await expectNone(ann, 'error');
  });

  test('a burst of malformed input from one client never disconnects another client, and the node keeps serving', async () => {
    const victimId = uid('victim');
    const victim = await clients.connect(victimId, 'Victim');
    const friend = await clients.connect(uid('friend'), 'Friend');
    const room = await createRoom(friend, { kind: 'public', members: [victimId] });
    let victimDisconnected = null;
    victim.on('disconnect', (reason) => {
      victimDisconnected = reason;
    });

    // Phase 1: many small malformed emits for every event, with and without acks.
    const attacker = await clients.connect(uid('mallory'), 'Mallory');
    const garbage = [
      'string',
      '',
      0,
      -1,
      1e308,
      Number.MAX_SAFE_INTEGER,
      null,
      true,
      [],
      [1, 2, 3],
      {},
      { roomId: room.id },
      { roomId: room.id, text: { nested: true } },
      { roomId: [room.id], text: 'x' },
      { roomId: room.id, seq: 1e300 },
      { roomId: room.id, limit: Number.MAX_SAFE_INTEGER },
      { roomId: room.id, beforeSeq: '9007199254740993' },
      { roomId: room.id, afterSeq: -1e300 },
      { name: '\u0000\uffff\ud800', kind: {}, members: {} },
      JSON.parse(`{"__proto__": {"polluted": true}, "roomId": "${room.id}"}`),
      nested(20),
      nestedArray(20),
    ];
    const events = [...CLIENT_EVENTS, 'no:such', 'error', 'session', 'message:new', '', 'x'.repeat(10_000)];
    const replies = [];
    for (const event of events) {
      for (const payload of garbage) {
        replies.push(emitAck(attacker, event, payload, 5000).catch((e) => e));
        attacker.emit(event, payload);
        attacker.emit(event, payload, payload, 'extra', 1);
      }
      attacker.emit(event);
      attacker.emit(event, Buffer.from([1, 2, 3]));
      replies.push(emitAck(attacker, event, { data: Buffer.alloc(1024, 7) }, 5000).catch((e) => e));
    }
    for (const v of await Promise.all(replies)) {
      if (v && typeof v === 'object' && !(v instanceof Error)) {
        assert.ok(v.ok === false || v.ok === true, `every reply is { ok, … }: ${JSON.stringify(v).slice(0, 200)}`);
      }
    }

    // Phase 2: huge and deeply nested payloads, each from a fresh socket (the server may drop the
    // sender for an oversized packet, but nobody else).
    const huge = [
      { roomId: room.id, text: 'x'.repeat(200_000) },
      Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i])),
      { userIds: Array.from({ length: 5000 }, (_, i) => `u${i}`) },
      { name: 'huge', members: Array.from({ length: 5000 }, (_, i) => `u${i}`) },
      nested(400),
      nestedArray(1000),
    ];
    for (const payload of huge) {
      for (const event of ['message:send', 'room:create', 'presence:get']) {
        const m = await clients.connect(uid('mallory'), 'Mallory');
        await emitAck(m, event, payload, 3000).catch((e) => e);
        m.emit(event, payload);
        m.disconnect();
      }
    }

    // The victim is still connected and both directions still work.
    await sleep(100);
    assert.equal(victimDisconnected, null, `the victim was disconnected: ${victimDisconnected}`);
    assert.ok(victim.connected, 'the victim is connected');
    const fromFriend = (await call(friend, 'message:send', { roomId: room.id, text: 'still there?' })).message;
    assert.equal((await waitFor(victim, 'message:new', (m) => m.id === fromFriend.id)).text, 'still there?');
    const fromVictim = (await call(victim, 'message:send', { roomId: room.id, text: 'yes' })).message;
    assert.equal((await waitFor(friend, 'message:new', (m) => m.id === fromVictim.id)).text, 'yes');

    // The node still serves new connections and HTTP.
    const late = await clients.connect(uid('late'), 'Late');
    await call(late, 'room:list', {});
    const live = await fetch(`${server.url}/livez`);
    assert.equal(live.status, 200);
    assert.ok(server.alive(), `the server process exited: ${JSON.stringify(server.exitStatus())}`);
  });
});
