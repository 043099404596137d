// Emit-to-receive latency of message:new, same node vs across nodes: a receiver on A, one sender on
// A and one on B, 200 messages each at 50 per second (one sender after the other). Prints p50/p99;
// asserts only that every message arrived, once.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';

import { Clients, emitAck, sleep, TRANSPORT, uid, waitFor } from '../lib/client.mjs';
import { startCluster, until } from '../lib/cluster.mjs';
import { createRoom } from '../lib/contract.mjs';
import { percentile, withLogs } from './helpers.mjs';

const COUNT = 200;
const INTERVAL_MS = 20; // 50 messages per second

describe(`latency: same node vs across nodes [${TRANSPORT}]`, () => {
  let cluster;
  let clients = [];
  before(async () => {
    cluster = await startCluster({ nodes: 2, name: 'latency' });
  });
  after(async () => {
    for (const c of clients) c.closeAll();
    await cluster?.stop();
  });

  test(`${COUNT} messages from A and from B to a receiver on A`, { timeout: 120_000 }, () =>
    withLogs(cluster, async () => {
      const [A, B] = cluster.nodes;
      const onA = new Clients(A);
      const onB = new Clients(B);
      clients = [onA, onB];
      const receiver = await onA.connect(uid('rx'), 'Receiver');
      const senders = { 'same node (A→A)': await onA.connect(uid('txa'), 'SenderA'), 'across nodes (B→A)': await onB.connect(uid('txb'), 'SenderB') };
      const room = await createRoom(receiver, { members: Object.values(senders).map((s) => s.userId) });
      for (const s of Object.values(senders)) await waitFor(s, 'room:added', (r) => r.id === room.id);

      // Receive times, keyed by the text: `lat <tag> <i> <performance.now() at emit>`.
      const received = new Map();
      let duplicates = 0;
      receiver.on('message:new', (m) => {
        const at = performance.now();
        if (m.roomId !== room.id) return;
        if (received.has(m.text)) duplicates += 1;
        else received.set(m.text, at);
      });

      const results = {};
      for (const [label, sender] of Object.entries(senders)) {
        const tag = label.startsWith('same') ? 'same' : 'cross';
        const texts = [];
        const acks = [];
        for (let i = 0; i < COUNT; i += 1) {
          const text = `lat ${tag} ${i} ${performance.now().toFixed(3)}`;
          texts.push(text);
          acks.push(emitAck(sender, 'message:send', { roomId: room.id, text }, 10_000));
          await sleep(INTERVAL_MS); // the sending rate, not a wait for the server
        }
        const replies = await Promise.all(acks);
        const notOk = replies.filter((r) => r.ok !== true);
        assert.deepEqual(notOk, [], `${label}: every send is acked ok`);
        await until(() => texts.every((t) => received.has(t)), {
          timeoutMs: 10_000,
          what: `${label}: all ${COUNT} messages at the receiver (has ${texts.filter((t) => received.has(t)).length})`,
        });
        const latencies = texts.map((t) => received.get(t) - Number(t.split(' ')[3]));
        results[label] = {
          p50: percentile(latencies, 50),
          p99: percentile(latencies, 99),
          max: Math.max(...latencies),
        };
      }
      assert.equal(duplicates, 0, 'no message:new was received twice');
      for (const [label, r] of Object.entries(results)) {
        console.log(`latency ${label} [${TRANSPORT}]: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(2)} ms (${COUNT} messages at ${1000 / INTERVAL_MS}/s)`);
      }
    }));
});
