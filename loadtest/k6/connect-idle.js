// Connect and idle: ramps VUS sockets up over RAMP, holds each open for IDLE_SECONDS answering
// Engine.IO pings, then closes it and connects again. Measures connect time and checks that no
// socket is dropped while idle — the load of many mostly-quiet clients, and of the heartbeats
// and presence upkeep they cost.
//
//   k6 run -e CONFAB_URL=http://localhost:8080 -e CONFAB_JWT_SECRET=... loadtest/k6/connect-idle.js
//   VUS (200), RAMP (30s), HOLD (1m), IDLE_SECONDS (60), MIN_PINGS (pings each socket must have
//   answered; default 2 when IDLE_SECONDS >= 30, else 1). The server pings at once and then every
//   25 s (pingInterval), and drops a socket whose pong is 20 s late (pingTimeout): a second ping
//   means the first pong was taken, and no socket may drop.
import exec from 'k6/execution';
import { setTimeout } from 'k6/timers';
import { envInt, RUN_ID, tokenFor, urlForVu } from './lib/config.js';
import { session } from './lib/session.js';

const IDLE_SECONDS = envInt('IDLE_SECONDS', 60);
const VUS = envInt('VUS', 200);
const MIN_PINGS = envInt('MIN_PINGS', IDLE_SECONDS >= 30 ? 2 : 1);

export const options = {
  scenarios: {
    idle: __ENV.ITERATIONS
      ? { executor: 'per-vu-iterations', vus: VUS, iterations: envInt('ITERATIONS', 1), maxDuration: '3m' }
      : {
          executor: 'ramping-vus',
          startVUs: 0,
          stages: [
            { duration: __ENV.RAMP || '30s', target: VUS },
            { duration: __ENV.HOLD || '1m', target: VUS },
          ],
          gracefulRampDown: `${IDLE_SECONDS + 10}s`,
          gracefulStop: `${IDLE_SECONDS + 10}s`,
        },
  },
  thresholds: {
    confab_connected: ['rate>0.99'],
    confab_connect_time: ['p(95)<1000', 'p(99)<2000'],
    confab_dropped_sockets: ['count<1'],
    confab_pings_answered: [`count>=${MIN_PINGS * VUS}`],
  },
};

export default async function idle() {
  const user = `${RUN_ID}-idle-${exec.vu.idInTest}`;
  const url = urlForVu();
  await session(url, tokenFor(user, url), (io, done) => {
    setTimeout(done, IDLE_SECONDS * 1000);
  });
}
