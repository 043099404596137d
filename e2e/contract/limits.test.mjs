// Servers with special limits: connection capacity, send rate, message length.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  callFails,
  Clients,
  connectSocket,
  devToken,
  disconnect,
  emitAck,
  expectConnectError,
  sleep,
  TRANSPORT,
  uid,
  waitFor,
} from '../lib/client.mjs';
import { createRoom, history, seqs } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`CONFAB_MAX_CONNECTIONS=2 [${TRANSPORT}]`, () => {
  let server;
  let node; // the node under test; in a cluster run every socket is pinned to the first node
  let clients;
  before(async () => {
    server = await startServer({ name: 'capacity', env: { CONFAB_MAX_CONNECTIONS: '2' } });
    node = server.pinned ? server.pinned(0) : server;
    clients = new Clients(node);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('the third socket is refused with "server at capacity", before the token is looked at', async () => {
    const userId = uid('cap');
    const first = await clients.connect(userId);
    await clients.connect(uid('cap2'));

    const token = await devToken(node, uid('cap3'));
    const third = await expectConnectError(clients.socket({ token, label: 'third' }));
    assert.equal(third.message, 'server at capacity');

    if (server.pinned) {
      // Cluster run: the limit counts the sockets of one node; another node still accepts.
      const elsewhere = new Clients(server.pinned(1));
      try {
        const s = await elsewhere.connect(uid('cap-other-node'));
        assert.notEqual(s.session.nodeId, first.session.nodeId, 'the extra socket is on another node');
      } finally {
        elsewhere.closeAll();
      }
    }

    const bad = await expectConnectError(clients.socket({ token: 'not-a-token', label: 'third-bad-token' }));
    assert.equal(bad.message, 'server at capacity', 'capacity is checked before the token');

    const none = await expectConnectError(clients.socket({ auth: {}, label: 'third-no-token' }));
    assert.equal(none.message, 'server at capacity', 'capacity is checked before the token');

    // The connected sockets still work.
    await call(first, 'room:list', {});

    // Once a socket goes away, a new one is accepted again (allow a moment for the count to drop).
    await disconnect(first);
    const deadline = Date.now() + 3000;
    for (;;) {
      const s = clients.socket({ token, label: 'after-free' });
      try {
        await connectSocket(s);
        await waitFor(s, 'session');
        break;
      } catch (err) {
        s.disconnect();
        if (Date.now() > deadline) throw new Error(`no connection accepted after a socket left: ${err.message}`);
        await sleep(100);
      }
    }
  });
});

describe(`CONFAB_SEND_RATE_PER_SEC=2, CONFAB_SEND_BURST=2 [${TRANSPORT}]`, () => {
  let server;
  let clients;
  before(async () => {
    server = await startServer({
      name: 'rate',
      env: { CONFAB_SEND_RATE_PER_SEC: '2', CONFAB_SEND_BURST: '2' },
    });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('sending faster than the rate is rate_limited; nothing limited is stored; the rate recovers', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const room = await createRoom(ann);
    const replies = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((i) => emitAck(ann, 'message:send', { roomId: room.id, text: `burst ${i}` })),
    );
    const okCount = replies.filter((r) => r.ok === true).length;
    const limited = replies.filter((r) => r.ok === false);
    assert.ok(okCount >= 2 && okCount <= 3, `between 2 and 3 of 6 quick sends succeed, got ${okCount}: ${JSON.stringify(replies)}`);
    assert.ok(limited.length >= 3, `${limited.length} of 6 quick sends were refused`);
    for (const r of limited) {
      assert.equal(r.error?.code, 'rate_limited', JSON.stringify(r));
      assert.equal(typeof r.error?.message, 'string');
    }

    const page = await history(ann, { roomId: room.id });
    assert.deepEqual(seqs(page.messages), Array.from({ length: okCount }, (_, i) => i + 1), 'only accepted messages are stored, without gaps');

    await sleep(1200); // the token bucket refills at 2 per second
    await call(ann, 'message:send', { roomId: room.id, text: 'after waiting' });
  });

  test('an ack-less rate-limited send makes the server emit error { event, code: rate_limited }', async () => {
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = await createRoom(bob);
    for (let i = 0; i < 6; i += 1) bob.emit('message:send', { roomId: room.id, text: `no ack ${i}` });
    const err = await waitFor(bob, 'error', (e) => e.event === 'message:send');
    assert.equal(err.code, 'rate_limited', JSON.stringify(err));
    assert.equal(typeof err.message, 'string');
  });
});

describe(`CONFAB_MAX_MESSAGE_CHARS=20 [${TRANSPORT}]`, () => {
  let server;
  let clients;
  let ann;
  let room;
  before(async () => {
    server = await startServer({ name: 'maxchars', env: { CONFAB_MAX_MESSAGE_CHARS: '20' } });
    clients = new Clients(server);
    ann = await clients.connect(uid('ann'), 'Ann');
    room = await createRoom(ann);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('20 characters are accepted, counted after trimming', async () => {
    const text = 'x'.repeat(20);
    const r = await call(ann, 'message:send', { roomId: room.id, text: `  \n${text}\t  ` });
    assert.equal(r.message.text, text);
  });

  test('20 astral characters (two UTF-16 units each) are accepted: length counts Unicode scalar values', async () => {
    const text = '🙂'.repeat(20);
    const r = await call(ann, 'message:send', { roomId: room.id, text });
    assert.equal(r.message.text, text);
  });

  test('21 characters are bad_request', async () => {
    await callFails(ann, 'message:send', { roomId: room.id, text: 'x'.repeat(21) }, 'bad_request');
    await callFails(ann, 'message:send', { roomId: room.id, text: '🙂'.repeat(21) }, 'bad_request');
  });
});
