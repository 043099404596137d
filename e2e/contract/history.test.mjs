// message:history paging and recovery after a reconnect.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  disconnect,
  TRANSPORT,
  uid,
  UNKNOWN_ROOM,
  waitFor,
} from '../lib/client.mjs';
import { createRoom, history, sendAll, seqs } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe(`message:history [${TRANSPORT}]`, () => {
  let server;
  let clients;
  let ann;
  let room; // 10 messages, seq 1..10
  let sent;

  before(async () => {
    server = await startServer({ name: 'history' });
    clients = new Clients(server);
    ann = await clients.connect(uid('ann'), 'Ann');
    room = await createRoom(ann, { kind: 'public' });
    sent = await sendAll(ann, room.id, range(1, 10).map((i) => `message ${i}`));
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  const page = (payload) => history(ann, { roomId: room.id, ...payload });

  test('returns the stored messages, ascending, equal to what message:send returned', async () => {
    const p = await page({});
    assert.deepEqual(p.messages, sent);
    assert.equal(p.hasMore, false);
  });

  test('no cursor: the newest `limit` messages; hasMore when older ones exist', async () => {
    let p = await page({ limit: 3 });
    assert.deepEqual(seqs(p.messages), [8, 9, 10]);
    assert.equal(p.hasMore, true);
    p = await page({ limit: 10 });
    assert.deepEqual(seqs(p.messages), range(1, 10));
    assert.equal(p.hasMore, false);
    p = await page({ limit: 1 });
    assert.deepEqual(seqs(p.messages), [10]);
    assert.equal(p.hasMore, true);
  });

  test('beforeSeq only: the newest `limit` messages below it; hasMore when older ones exist', async () => {
    let p = await page({ beforeSeq: 5, limit: 2 });
    assert.deepEqual(seqs(p.messages), [3, 4]);
    assert.equal(p.hasMore, true);
    p = await page({ beforeSeq: 3, limit: 5 });
    assert.deepEqual(seqs(p.messages), [1, 2]);
    assert.equal(p.hasMore, false);
    p = await page({ beforeSeq: 4, limit: 3 });
    assert.deepEqual(seqs(p.messages), [1, 2, 3]);
    assert.equal(p.hasMore, false);
    p = await page({ beforeSeq: 1 });
    assert.deepEqual(seqs(p.messages), []);
    assert.equal(p.hasMore, false);
    p = await page({ beforeSeq: 100, limit: 2 });
    assert.deepEqual(seqs(p.messages), [9, 10]);
    assert.equal(p.hasMore, true);
  });

  test('afterSeq only: the oldest `limit` messages above it; hasMore when newer ones exist', async () => {
    let p = await page({ afterSeq: 7, limit: 2 });
    assert.deepEqual(seqs(p.messages), [8, 9]);
    assert.equal(p.hasMore, true);
    p = await page({ afterSeq: 8, limit: 2 });
    assert.deepEqual(seqs(p.messages), [9, 10]);
    assert.equal(p.hasMore, false);
    p = await page({ afterSeq: 10 });
    assert.deepEqual(seqs(p.messages), []);
    assert.equal(p.hasMore, false);
    p = await page({ afterSeq: 0, limit: 4 });
    assert.deepEqual(seqs(p.messages), [1, 2, 3, 4]);
    assert.equal(p.hasMore, true);
    p = await page({ afterSeq: 0 });
    assert.deepEqual(seqs(p.messages), range(1, 10));
    assert.equal(p.hasMore, false);
  });

  test('both cursors: the oldest `limit` messages strictly between; hasMore when more lie in that range', async () => {
    let p = await page({ afterSeq: 2, beforeSeq: 8, limit: 3 });
    assert.deepEqual(seqs(p.messages), [3, 4, 5]);
    assert.equal(p.hasMore, true);
    p = await page({ afterSeq: 2, beforeSeq: 8, limit: 5 });
    assert.deepEqual(seqs(p.messages), [3, 4, 5, 6, 7]);
    assert.equal(p.hasMore, false, 'seq 8 and above are outside the range');
    p = await page({ afterSeq: 2, beforeSeq: 8 });
    assert.deepEqual(seqs(p.messages), [3, 4, 5, 6, 7]);
    assert.equal(p.hasMore, false);
    p = await page({ afterSeq: 4, beforeSeq: 5 });
    assert.deepEqual(seqs(p.messages), []);
    assert.equal(p.hasMore, false);
  });

  test('limit defaults to 50 and may be up to 200', async () => {
    const bob = await clients.connect(uid('bob'), 'Bob');
    const big = await createRoom(bob);
    await sendAll(bob, big.id, range(1, 55).map((i) => `n${i}`));
    let p = await history(bob, { roomId: big.id });
    assert.deepEqual(seqs(p.messages), range(6, 55));
    assert.equal(p.hasMore, true);
    p = await history(bob, { roomId: big.id, afterSeq: 0 });
    assert.deepEqual(seqs(p.messages), range(1, 50));
    assert.equal(p.hasMore, true);
    p = await history(bob, { roomId: big.id, limit: 200 });
    assert.deepEqual(seqs(p.messages), range(1, 55));
    assert.equal(p.hasMore, false);
  });

  test('limit outside 1–200, negative or non-integer seqs, and bad roomIds are bad_request', async () => {
    const cases = [
      { limit: 0 },
      { limit: 201 },
      { limit: -1 },
      { limit: 1.5 },
      { limit: '5' },
      { beforeSeq: -1 },
      { afterSeq: -1 },
      { beforeSeq: 2.5 },
      { afterSeq: '3' },
      { afterSeq: true },
      { roomId: 'lobby' },
      { roomId: 42 },
      { roomId: undefined },
    ];
    for (const c of cases) {
      const payload = { roomId: room.id, ...c };
      if ('roomId' in c && c.roomId === undefined) delete payload.roomId;
      await callFails(ann, 'message:history', payload, 'bad_request');
    }
    const p = await page({ limit: 200 });
    assert.equal(p.messages.length, 10);
  });

  test('a non-member of a public room is forbidden; an unknown room is not_found', async () => {
    const eve = await clients.connect(uid('eve'), 'Eve');
    await callFails(eve, 'message:history', { roomId: room.id }, 'forbidden');
    await callFails(eve, 'message:history', { roomId: UNKNOWN_ROOM }, 'not_found');
    await callFails(eve, 'message:history', { roomId: room.id, limit: 0 }, 'bad_request', 'shape is checked before membership');
  });

  test('recovery: a client that reconnects gets exactly the messages it missed with afterSeq', async () => {
    const bobId = uid('bob');
    const carl = await clients.connect(uid('carl'), 'Carl');
    let bob = await clients.connect(bobId, 'Bob');
    const r = await createRoom(carl, { members: [bobId] });
    const [m1, m2] = await sendAll(carl, r.id, ['one', 'two']);
    await waitFor(bob, 'message:new', (m) => m.id === m1.id);
    const lastSeen = (await waitFor(bob, 'message:new', (m) => m.id === m2.id)).seq;
    assert.equal(lastSeen, 2);

    await disconnect(bob);
    const missed = await sendAll(carl, r.id, ['three', 'four', 'five']);

    bob = await clients.connect(bobId, 'Bob');
    const p = await history(bob, { roomId: r.id, afterSeq: lastSeen });
    assert.deepEqual(p.messages, missed);
    assert.equal(p.hasMore, false);

    // And the reconnected socket is live again.
    const live = (await call(carl, 'message:send', { roomId: r.id, text: 'six' })).message;
    assert.deepEqual(await waitFor(bob, 'message:new', (m) => m.roomId === r.id), live);
  });
});
