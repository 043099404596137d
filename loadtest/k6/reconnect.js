// Reconnect: VUs connect, catch up on what they missed with `message:history` `afterSeq`, send
// one message, and disconnect, over and over — the recovery path of the contract ("a client that
// reconnects asks message:history with afterSeq set to the last seq it saw"). Through a load
// balancer each new connection may land on another node. Checks that every catch-up is gap-free
// (seqs contiguous from the last one seen) and that each VU's own messages come back.
//
//   k6 run -e CONFAB_URL=http://localhost:8080 -e CONFAB_JWT_SECRET=... loadtest/k6/reconnect.js
//   VUS (20), DURATION (1m), ROOMS (2), PAUSE_MS (500: offline time between sessions)
import { check } from 'k6';
import exec from 'k6/execution';
import { setTimeout } from 'k6/timers';
import { Rate, Trend } from 'k6/metrics';
import { envInt, RUN_ID, tokenFor, URLS, urlForVu } from './lib/config.js';
import { ackOk, ackRtt } from './lib/metrics.js';
import { call, session } from './lib/session.js';

const ROOMS = envInt('ROOMS', 2);
const PAUSE_MS = envInt('PAUSE_MS', 500);
const historyRtt = new Trend('confab_history_rtt', true);
const gapFree = new Rate('confab_history_gap_free');
/** Offline time included: the last close → the next `session`. */
const reconnectTime = new Trend('confab_reconnect_time', true);

export const options = {
  scenarios: {
    reconnect: __ENV.ITERATIONS
      ? { executor: 'per-vu-iterations', vus: envInt('VUS', 20), iterations: envInt('ITERATIONS', 5), maxDuration: '2m' }
      : { executor: 'constant-vus', vus: envInt('VUS', 20), duration: __ENV.DURATION || '1m', gracefulStop: '10s' },
  },
  thresholds: {
    confab_connected: ['rate>0.99'],
    confab_connect_time: ['p(95)<1000'],
    confab_reconnect_time: [`p(95)<${PAUSE_MS + 1500}`],
    confab_history_rtt: ['p(95)<500'],
    confab_history_gap_free: ['rate==1'],
    confab_ack_ok: ['rate>0.99'],
    confab_ack_rtt: ['p(95)<500'],
    checks: ['rate>0.99'],
  },
};

export async function setup() {
  const rooms = [];
  await session(URLS[0], tokenFor(`${RUN_ID}-owner`), async (io, done) => {
    for (let i = 0; i < ROOMS; i += 1) {
      const reply = await call(io, 'room:create', { name: `k6 reconnect ${RUN_ID} ${i}`, kind: 'public' });
      if (reply && reply.ok) rooms.push(reply.room.id);
    }
    done();
  });
  if (rooms.length !== ROOMS) exec.test.abort(`setup: could not create ${ROOMS} rooms`);
  return { rooms };
}

// Per VU, across iterations: the last seq seen and when the last session closed.
let lastSeq = null;
let closedAt = null;

export default async function reconnect(data) {
  const vu = exec.vu.idInTest;
  const roomId = data.rooms[(vu - 1) % data.rooms.length];
  const user = `${RUN_ID}-r${vu}`;
  const url = urlForVu();
  const started = Date.now();
  await session(url, tokenFor(user, url), async (io, done) => {
    if (closedAt !== null) reconnectTime.add(Date.now() - closedAt);
    const joined = await call(io, 'room:join', { roomId });
    if (!check(joined, { 'room:join ok': (r) => r && r.ok === true })) return done();
    if (lastSeq === null) lastSeq = joined.room.lastSeq;
    const asked = Date.now();
    const history = await call(io, 'message:history', { roomId, afterSeq: lastSeq, limit: 200 });
    historyRtt.add(Date.now() - asked);
    if (check(history, { 'message:history ok': (r) => r && r.ok === true })) {
      const seqs = history.messages.map((m) => m.seq);
      const contiguous = seqs.every((s, i) => s === lastSeq + 1 + i);
      gapFree.add(contiguous);
      if (!contiguous) console.warn(`history after ${lastSeq} has gaps: ${seqs.join(',')}`);
      if (seqs.length) lastSeq = seqs[seqs.length - 1];
    }
    const sentAt = Date.now();
    const clientId = `${user}-${exec.vu.iterationInScenario}`;
    const sent = await call(io, 'message:send', { roomId, text: `k6 ${sentAt} ${clientId}`, clientId });
    const good = Boolean(sent && sent.ok === true);
    ackOk.add(good);
    if (good) {
      ackRtt.add(Date.now() - sentAt);
      check(sent, { 'own message stored after the seqs seen': (r) => r.message.seq > lastSeq });
    }
    done();
  });
  closedAt = Date.now();
  if (Date.now() - started < 60000) await new Promise((r) => setTimeout(r, PAUSE_MS));
}
