// Redis goes away under traffic and comes back on the same port: node A keeps storing, acking and
// delivering locally while /readyz says the backplane is down; cross-node delivery resumes by itself
// after the restart; B recovers what it missed with message:history afterSeq, without gaps; and the
// presence of users connected all along is rebuilt in the (empty) restarted Redis.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { call, Clients, emitAck, sleep, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { readyz, startCluster, until } from '../lib/cluster.mjs';
import { createRoom, history } from '../lib/contract.mjs';
import { withLogs } from './helpers.mjs';

const SEND_EVERY_MS = 50;
const SEND_FOR_AT_MOST_MS = 15_000;
const OUTAGE_MS = 2_000; // how long Redis stays down once A says so
const RESUME_BOUND_MS = 5_000;

describe(`Redis restart under traffic [${TRANSPORT}]`, () => {
  let cluster;
  const clients = [];
  before(async () => {
    cluster = await startCluster({ nodes: 2, name: 'redis' });
  });
  after(async () => {
    for (const c of clients) c.closeAll();
    await cluster?.stop();
  });

  test('local delivery never stops, cross-node delivery resumes, history fills the gap', { timeout: 120_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      clients.push(onA, onB);
      const sender = await onA.connect(uid('sender'), 'Sender');
      const local = await onA.connect(uid('local'), 'Local'); // second socket on A
      const remote = await onB.connect(uid('remote'), 'Remote'); // on B
      const room = await createRoom(sender, { members: [local.userId, remote.userId] });
      await waitFor(local, 'room:added', (r) => r.id === room.id);
      await waitFor(remote, 'room:added', (r) => r.id === room.id);

      // What each receiver got: seq → { at, message }.
      const gotLocal = new Map();
      const gotRemote = new Map();
      local.on('message:new', (m) => m.roomId === room.id && gotLocal.set(m.seq, { at: Date.now(), m }));
      remote.on('message:new', (m) => m.roomId === room.id && gotRemote.set(m.seq, { at: Date.now(), m }));

      // The sender: one message every 50 ms for at most 15 s, each with its own ack.
      const sends = [];
      let stopSending = false;
      const loopStart = Date.now();
      const loop = (async () => {
        for (let i = 1; !stopSending && Date.now() - loopStart < SEND_FOR_AT_MOST_MS; i += 1) {
          const entry = { i, sentAt: Date.now() };
          entry.done = emitAck(sender, 'message:send', { roomId: room.id, text: `tick ${i}`, clientId: `tick-${i}` }, 10_000).then(
            (reply) => {
              entry.reply = reply;
              entry.ackAt = Date.now();
            },
            (err) => {
              entry.error = err;
            },
          );
          sends.push(entry);
          await sleep(SEND_EVERY_MS); // pacing of the sender, not a wait for the server
        }
      })();
      const ackedOk = (pred = () => true) => sends.filter((s) => s.reply?.ok === true && pred(s));
      const failedSends = () => sends.filter((s) => s.error || (s.reply && s.reply.ok !== true));

      try {
        // Cross-node delivery works before the outage.
        await until(() => gotRemote.size >= 5, { timeoutMs: 5_000, what: 'B receiving 5 messages before the outage' });

        // Redis goes away.
        const tStop = Date.now();
        await cluster.redis.stop();
        const down = await until(
          async () => {
            const r = await readyz(A.url);
            return r.body?.checks?.backplane === 'down' ? r : null;
          },
          { timeoutMs: 10_000, what: 'GET /readyz on A to report checks.backplane "down"' },
        );
        console.log(`A reported backplane down ${Date.now() - tStop} ms after Redis stopped: ${down.status} ${JSON.stringify(down.body)}`);
        assert.equal(down.status, 503, `/readyz is 503 while the backplane is down: ${JSON.stringify(down.body)}`);

        // Acks keep coming and A's second socket keeps receiving, during the outage.
        const tDown = Date.now();
        const duringOutage = (s) => s.sentAt >= tDown;
        await until(() => ackedOk(duringOutage).length >= Math.floor(OUTAGE_MS / SEND_EVERY_MS / 2), {
          timeoutMs: OUTAGE_MS + 8_000,
          what: `acks of at least ${Math.floor(OUTAGE_MS / SEND_EVERY_MS / 2)} sends made while Redis is down (acked so far: ${ackedOk(duringOutage).length}, failed: ${JSON.stringify(failedSends().map((s) => s.error?.message ?? s.reply))})`,
        });
        await until(() => Date.now() - tDown >= OUTAGE_MS && ackedOk(duringOutage).every((s) => gotLocal.has(s.reply.message.seq)), {
          timeoutMs: OUTAGE_MS + 5_000,
          what: 'A\'s second socket to receive every message acked during the outage',
        });
        const outageAcks = ackedOk(duringOutage).length;
        assert.deepEqual(failedSends().map((s) => s.error?.message ?? s.reply), [], 'no send failed during the outage');

        // Redis comes back on the same port.
        await cluster.redis.start();
        const tRestart = Date.now();
        const firstAfter = await until(
          () => {
            for (const s of ackedOk((x) => x.sentAt >= tRestart)) {
              const got = gotRemote.get(s.reply.message.seq);
              if (got) return { ...got, sentAt: s.sentAt };
            }
            return null;
          },
          { timeoutMs: 15_000, intervalMs: 10, what: 'B to receive a message sent after Redis restarted' },
        );
        const resumeMs = firstAfter.at - tRestart;
        console.log(`cross-node delivery resumed after Redis restart: ${resumeMs} ms (${outageAcks} sends acked while Redis was down)`);
        assert.ok(resumeMs < RESUME_BOUND_MS, `cross-node delivery resumed ${resumeMs} ms after the restart (bound ${RESUME_BOUND_MS} ms)`);

        const ready = await until(
          async () => {
            const r = await readyz(A.url);
            return r.status === 200 && r.body?.checks?.backplane === 'ok' ? r : null;
          },
          { timeoutMs: 10_000, what: 'GET /readyz on A to be 200 with backplane "ok" again' },
        );
        assert.equal(ready.body.ready, true);

        // A little more traffic after the resume, then stop.
        const tResumed = Date.now();
        await until(() => ackedOk((s) => s.sentAt >= tResumed).length >= 10, { timeoutMs: 5_000, what: '10 more acks after the resume' });
      } finally {
        stopSending = true;
        await loop;
        await Promise.all(sends.map((s) => s.done));
      }

      // Every send was acked; seqs 1..n without gaps.
      assert.deepEqual(failedSends().map((s) => ({ i: s.i, why: s.error?.message ?? s.reply })), [], 'every send is acked ok');
      const ackedSeqs = sends.map((s) => s.reply.message.seq).sort((a, b) => a - b);
      assert.deepEqual(ackedSeqs, Array.from({ length: ackedSeqs.length }, (_, i) => i + 1), 'acked seqs are 1..n without gaps');
      const lastSeq = ackedSeqs[ackedSeqs.length - 1];

      // Local delivery never stopped: A's second socket got every message.
      await until(() => gotLocal.size >= ackedSeqs.length, { timeoutMs: 5_000, what: `A's second socket to hold all ${ackedSeqs.length} messages (has ${gotLocal.size})` });
      assert.deepEqual([...gotLocal.keys()].sort((a, b) => a - b), ackedSeqs, "A's second socket got every acked message");

      // B: wait for the last message live, then recover the gap from its last contiguous seq.
      await until(() => gotRemote.has(lastSeq), { timeoutMs: 5_000, what: `B to receive the last message (seq ${lastSeq}) live` });
      let lastSeen = 0;
      while (gotRemote.has(lastSeen + 1)) lastSeen += 1;
      const missed = ackedSeqs.filter((s) => !gotRemote.has(s));
      console.log(`B received ${gotRemote.size} of ${ackedSeqs.length} live; contiguous up to seq ${lastSeen}; missed ${missed.length} (recovered from history)`);
      const recovered = [];
      let afterSeq = lastSeen;
      for (let page = 0; page < 50; page += 1) {
        const reply = await history(remote, { roomId: room.id, afterSeq, limit: 200 });
        recovered.push(...reply.messages);
        if (!reply.hasMore || reply.messages.length === 0) break;
        afterSeq = reply.messages[reply.messages.length - 1].seq;
      }
      assert.deepEqual(
        recovered.map((m) => m.seq),
        Array.from({ length: lastSeq - lastSeen }, (_, i) => lastSeen + 1 + i),
        `message:history afterSeq ${lastSeen} returns every later seq in order`,
      );
      const bySeq = new Map(sends.map((s) => [s.reply.message.seq, s.reply.message]));
      for (const m of recovered) assert.deepEqual(m, bySeq.get(m.seq), `recovered seq ${m.seq} equals the acked message`);
      const union = new Set([...gotRemote.keys(), ...recovered.map((m) => m.seq)]);
      assert.deepEqual([...union].sort((a, b) => a - b), ackedSeqs, 'B has every acked seq, no gaps');
    }));

  test('presence of users connected all along survives a Redis restart (Redis comes back empty)', { timeout: 60_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      clients.push(onA, onB);
      const xena = await onA.connect(uid('xena'), 'Xena');
      const yuri = await onB.connect(uid('yuri'), 'Yuri');
      const room = await createRoom(xena, { members: [yuri.userId] });
      await waitFor(yuri, 'room:added', (r) => r.id === room.id);
      const presenceOf = async (s, ids) => (await call(s, 'presence:get', { userIds: ids })).presence;
      const bothOnline = { [xena.userId]: 'online', [yuri.userId]: 'online' };
      assert.deepEqual(await presenceOf(yuri, [xena.userId, yuri.userId]), bothOnline);

      await cluster.redis.stop();
      await until(async () => (await readyz(A.url)).body?.checks?.backplane === 'down', { timeoutMs: 10_000, what: 'A to notice' });
      await cluster.redis.start();
      const tRestart = Date.now();
      await until(async () => (await readyz(A.url)).status === 200 && (await readyz(B.url)).status === 200, {
        timeoutMs: 10_000,
        what: '/readyz 200 on A and B after the restart',
      });
      // Redis kept nothing (no persistence): the nodes must register their sockets again.
      let last;
      await until(
        async () => {
          last = [await presenceOf(yuri, [xena.userId, yuri.userId]), await presenceOf(xena, [xena.userId, yuri.userId])];
          return last.every((p) => JSON.stringify(p) === JSON.stringify(bothOnline));
        },
        { timeoutMs: 5_000, intervalMs: 100, what: 'presence:get on A and B to say both users are online again' },
      ).catch((err) => {
        throw new Error(`${err.message}; last answers (B, A): ${JSON.stringify(last)}`);
      });
      console.log(`presence of connected users back ${Date.now() - tRestart} ms after Redis restarted`);

      // And it is live state: Xena leaving is announced across nodes.
      xena.disconnect();
      await waitFor(yuri, 'presence:update', (e) => e.userId === xena.userId && e.status === 'offline', 2_000);
      assert.deepEqual(await presenceOf(yuri, [xena.userId]), { [xena.userId]: 'offline' });
    }));
});
