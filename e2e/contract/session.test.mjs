// Connecting with dev tokens: `session` first, the socket already in its rooms, refusals.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  call,
  Clients,
  connectSocket,
  devToken,
  emitAck,
  expectConnectError,
  TRANSPORT,
  uid,
  waitFor,
} from '../lib/client.mjs';
import { assertMessage, createRoom, roomList } from '../lib/contract.mjs';
import { startServer } from '../lib/server.mjs';

describe(`session and connecting [${TRANSPORT}]`, () => {
  let server;
  let clients;

  before(async () => {
    server = await startServer({ name: 'session' });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  test('an event emitted the moment the socket connects (before session arrives) is answered', async () => {
    // Twenty sockets at once, each emitting from its own connect callback: none may go unanswered.
    const sockets = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const userId = uid(`eager${i}`);
        const s = clients.socket({ token: await devToken(server, userId), label: `${userId}#1` });
        s.userId = userId;
        return s;
      }),
    );
    const replies = sockets.map(
      (s) =>
        new Promise((resolve, reject) => {
          s.once('connect', () => {
            s.timeout(5_000).emit('room:list', {}, (err, reply) => (err ? reject(err) : resolve(reply)));
          });
          s.once('connect_error', reject);
          s.connect();
        }),
    );
    for (const reply of await Promise.all(replies)) assert.equal(reply.ok, true, JSON.stringify(reply));
  });

  test('session { userId, name, nodeId } is the first event the socket receives', async () => {
    const userId = uid('ann');
    const s = await clients.connect(userId, 'Ann');
    assert.equal(s.e2e.log[0]?.event, 'session', `first event: ${s.e2e.log[0]?.event}`);
    assert.deepEqual(
      { userId: s.session.userId, name: s.session.name, nodeId: s.session.nodeId },
      { userId, name: 'Ann', nodeId: s.e2e.nodeId }, // the node this socket went to
    );
  });

  test('a dev token without a name gives name = userId', async () => {
    const userId = uid('plain');
    const s = await clients.connect(userId);
    assert.equal(s.session.name, userId);
  });

  test('a user listed as a member before ever connecting: session first, then already in the room', async () => {
    const ann = await clients.connect(uid('ann'), 'Ann');
    const bobId = uid('bob');
    const room = await createRoom(ann, { name: 'made before Bob came', members: [bobId] });
    assert.equal(room.memberCount, 2);

    const bob = await clients.connect(bobId, 'Bob');
    assert.equal(bob.e2e.log[0]?.event, 'session', `first event: ${bob.e2e.log[0]?.event}`);

    // Bob's socket is in the room without joining: it receives Ann's message.
    const sent = await call(ann, 'message:send', { roomId: room.id, text: 'hi Bob' });
    const got = assertMessage(await waitFor(bob, 'message:new', (m) => m.roomId === room.id));
    assert.deepEqual(got, sent.message);

    const rooms = await roomList(bob);
    assert.ok(rooms.some((r) => r.id === room.id), 'room:list of the new user includes the room');
  });

  test('the socket is in every chat room of the user at connect (a second socket of a member)', async () => {
    const annId = uid('ann');
    const ann = await clients.connect(annId, 'Ann');
    const bob = await clients.connect(uid('bob'), 'Bob');
    const room = await createRoom(ann, { members: [bob.userId] });
    const ann2 = await clients.connect(annId, 'Ann');
    const sent = await call(bob, 'message:send', { roomId: room.id, text: 'to both of Ann' });
    assert.deepEqual(await waitFor(ann2, 'message:new', (m) => m.roomId === room.id), sent.message);
    assert.deepEqual(await waitFor(ann, 'message:new', (m) => m.roomId === room.id), sent.message);
  });

  test('a connection without a token is refused with "unauthorized"', async () => {
    const err = await expectConnectError(clients.socket({ auth: {}, label: 'no-token' }));
    assert.equal(err.message, 'unauthorized');
  });

  test('a connection with a garbage token is refused with "unauthorized"', async () => {
    const err = await expectConnectError(clients.socket({ token: 'garbage.token.here', label: 'garbage' }));
    assert.equal(err.message, 'unauthorized');
  });

  test('a dev token from another server (other random secret) is refused with "unauthorized"', async () => {
    // The other server only issues a token: one node is enough, also in a cluster run.
    const other = await startServer({ name: 'session-other', standalone: true });
    try {
      const foreign = await devToken(other, uid('foreign'));
      const err = await expectConnectError(clients.socket({ token: foreign, label: 'foreign' }));
      assert.equal(err.message, 'unauthorized');
    } finally {
      await other.stop();
    }
  });

  test('long-polling with upgrade connects and upgrades to websocket', async () => {
    const token = await devToken(server, uid('upg'));
    const s = clients.socket({ token, label: 'upgrade', transports: ['polling', 'websocket'], upgrade: true });
    const upgraded = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no transport upgrade within 5 s')), 5000);
      s.io.on('open', () => {
        assert.equal(s.io.engine.transport.name, 'polling');
        s.io.engine.once('upgrade', (transport) => {
          clearTimeout(t);
          resolve(transport.name);
        });
      });
    });
    await connectSocket(s);
    await waitFor(s, 'session');
    assert.equal(await upgraded, 'websocket');
    const reply = await emitAck(s, 'room:list', {});
    assert.equal(reply.ok, true, JSON.stringify(reply));
  });
});
