// Chat: VUs join a few public rooms and talk. Each VU sends `message:send` with an ack every
// SEND_INTERVAL_MS and times the ack; every VU in the room times the `message:new` it receives
// against the send time carried in the text. A session lasts SESSION_SECONDS, then the VU
// reconnects (so a long run also keeps connecting).
//
//   k6 run -e CONFAB_URL=http://localhost:8080 -e CONFAB_JWT_SECRET=... loadtest/k6/chat.js
//   VUS (50), DURATION (1m), ROOMS (5), SEND_INTERVAL_MS (1000), SESSION_SECONDS (30)
import { check } from 'k6';
import exec from 'k6/execution';
import { clearInterval, setInterval, setTimeout } from 'k6/timers';
import { envInt, RUN_ID, tokenFor, URLS, urlForVu } from './lib/config.js';
import { ackOk, ackRtt, deliveryLatency, messagesReceived } from './lib/metrics.js';
import { call, session } from './lib/session.js';

const ROOMS = envInt('ROOMS', 5);
const SEND_INTERVAL_MS = envInt('SEND_INTERVAL_MS', 1000);
const SESSION_SECONDS = envInt('SESSION_SECONDS', 30);

export const options = {
  scenarios: {
    chat: __ENV.ITERATIONS
      ? // A bounded run: every VU does ITERATIONS sessions (the test command uses 1).
        { executor: 'per-vu-iterations', vus: envInt('VUS', 50), iterations: envInt('ITERATIONS', 1), maxDuration: '2m' }
      : { executor: 'constant-vus', vus: envInt('VUS', 50), duration: __ENV.DURATION || '1m', gracefulStop: '10s' },
  },
  thresholds: {
    confab_connected: ['rate>0.99'],
    confab_connect_time: ['p(95)<1000'],
    confab_ack_ok: ['rate>0.99'],
    confab_ack_rtt: ['p(95)<250', 'p(99)<1000'],
    confab_delivery_latency: ['p(95)<500', 'p(99)<1500'],
    // A run in which nothing reached anyone fails, whatever the latencies say.
    confab_messages_received: ['count>0'],
    confab_dropped_sockets: ['count<1'],
    checks: ['rate>0.99'],
  },
};

/** Creates the public rooms the VUs talk in. */
export async function setup() {
  const rooms = [];
  const owner = `${RUN_ID}-owner`;
  const ok = await session(URLS[0], tokenFor(owner), async (io, done) => {
    for (let i = 0; i < ROOMS; i += 1) {
      const reply = await call(io, 'room:create', { name: `k6 ${RUN_ID} ${i}`, kind: 'public' });
      if (reply && reply.ok) rooms.push(reply.room.id);
    }
    done();
  });
  if (!ok.ok || rooms.length !== ROOMS) exec.test.abort(`setup: could not create ${ROOMS} rooms (${rooms.length} made)`);
  return { rooms };
}

export default async function chat(data) {
  const vu = exec.vu.idInTest;
  const roomId = data.rooms[(vu - 1) % data.rooms.length];
  const user = `${RUN_ID}-${vu}`;
  const url = urlForVu();
  await session(url, tokenFor(user, url), async (io, done) => {
    io.on('message:new', (m) => {
      const sentAt = Number(String(m.text).split(' ')[1]);
      if (m.roomId === roomId && Number.isFinite(sentAt)) {
        deliveryLatency.add(Date.now() - sentAt);
        messagesReceived.add(1);
      }
    });
    const joined = await call(io, 'room:join', { roomId });
    check(joined, { 'room:join ok': (r) => r && r.ok === true });
    let n = 0;
    const sender = setInterval(() => {
      const sentAt = Date.now();
      const clientId = `${user}-${exec.vu.iterationInScenario}-${n}`;
      n += 1;
      io.emit('message:send', { roomId, text: `k6 ${sentAt} ${clientId}`, clientId }, (reply) => {
        const good = Boolean(reply && reply.ok === true);
        ackOk.add(good);
        if (good) ackRtt.add(Date.now() - sentAt);
        else if (reply) console.warn(`message:send refused: ${JSON.stringify(reply.error)}`);
      });
    }, SEND_INTERVAL_MS);
    // Stagger session ends so the VUs do not all reconnect at once.
    setTimeout(() => {
      clearInterval(sender);
      // Let the last acks and deliveries arrive before closing.
      setTimeout(done, 1000);
    }, SESSION_SECONDS * 1000 + Math.floor(Math.random() * 2000));
  });
}
