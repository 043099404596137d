// Measures how many `message:send` per second one node acks, and the emit-to-receive latency
// seen by a listener in the same room. Bounded: CLIENTS senders each send MESSAGES messages,
// at most WINDOW unacked at a time per client.
//
//   CONFAB_BIN=../target/release/confab node bench/send-rate.mjs              # SQLite
//   CONFAB_E2E_DATABASE_URL='postgres://postgres@127.0.0.1:5432/{db}' node bench/send-rate.mjs
import { createServer } from 'node:http';
import { io } from 'socket.io-client';
import { startServer } from '../lib/server.mjs';

const CLIENTS = Number(process.env.CLIENTS ?? 20);
const MESSAGES = Number(process.env.MESSAGES ?? 250);
const WINDOW = Number(process.env.WINDOW ?? 8);

// TRACING=1 exports every span (100% sampling) to a local OTLP/HTTP sink that accepts and
// discards, to measure what tracing costs the node.
let sink = null;
let spansBytes = 0;
const tracingEnv = {};
if (process.env.TRACING === '1') {
  sink = createServer((req, res) => {
    req.on('data', (chunk) => (spansBytes += chunk.length));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end());
  });
  await new Promise((resolve) => sink.listen(0, '127.0.0.1', resolve));
  tracingEnv.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${sink.address().port}`;
  tracingEnv.OTEL_TRACES_SAMPLER = 'always_on';
}
const server = await startServer({
  name: 'bench',
  env: { CONFAB_SEND_RATE_PER_SEC: '100000', CONFAB_SEND_BURST: '100000', RUST_LOG: 'info', ...tracingEnv },
});
const token = async (userId) => {
  const res = await fetch(`${server.url}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
  return (await res.json()).token;
};
const connect = async (userId) => {
  const socket = io(server.url, { auth: { token: await token(userId) }, transports: ['websocket'] });
  await new Promise((resolve, reject) => {
    socket.once('session', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
};

try {
  const owner = await connect('bench-owner');
  const { room } = await owner.emitWithAck('room:create', { name: 'bench', kind: 'public' });
  const senders = [];
  for (let i = 0; i < CLIENTS; i++) {
    const s = await connect(`bench-${i}`);
    await s.emitWithAck('room:join', { roomId: room.id });
    senders.push(s);
  }
  const latencies = [];
  owner.on('message:new', (m) => latencies.push(Date.now() - Number(m.text.split(':')[1])));

  const started = performance.now();
  await Promise.all(
    senders.map(async (s, i) => {
      let next = 0;
      const lane = async () => {
        while (next < MESSAGES) {
          const n = next++;
          const reply = await s.emitWithAck('message:send', {
            roomId: room.id,
            text: `m${i}-${n}:${Date.now()}`,
            clientId: `c${i}-${n}`,
          });
          if (!reply.ok) throw new Error(JSON.stringify(reply));
        }
      };
      await Promise.all(Array.from({ length: WINDOW }, lane));
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const total = CLIENTS * MESSAGES;
  await new Promise((r) => setTimeout(r, 500));
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  const backend = process.env.CONFAB_E2E_DATABASE_URL ? 'postgres' : 'sqlite';
  console.log(
    JSON.stringify({
      backend,
      tracing: process.env.TRACING === '1' ? 'on (100% sampled)' : 'off',
      otlp_bytes_received: spansBytes,
      clients: CLIENTS,
      messages: total,
      seconds: Number(seconds.toFixed(2)),
      acked_per_second: Math.round(total / seconds),
      receive_latency_ms: { p50: pct(50), p99: pct(99), received: latencies.length },
    }),
  );
  for (const s of [owner, ...senders]) s.close();
} finally {
  await server.stop();
  sink?.close();
}
