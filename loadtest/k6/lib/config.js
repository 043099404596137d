// Where and how to connect, from the environment (k6 run -e NAME=value, or the shell's env):
//
//   CONFAB_URL          one base URL (nginx, an ingress, a node); default http://localhost:8080
//   CONFAB_URLS         several base URLs, comma-separated: VU n uses URL n mod count (to spread
//                       load over nodes when every VU would otherwise hash to one node)
//   CONFAB_JWT_SECRET   the cluster's HS256 secret: tokens are minted locally. Unset: tokens come
//                       from POST /api/dev/token (the deployment needs CONFAB_DEV_TOKENS=true)
//   USER_PREFIX         prefix of the user ids this run makes (default k6-<random>)
import exec from 'k6/execution';
import { devToken, mint } from './jwt.js';

export const URLS = (__ENV.CONFAB_URLS || __ENV.CONFAB_URL || 'http://localhost:8080')
  .split(',')
  .map((u) => u.trim().replace(/\/$/, ''))
  .filter(Boolean);
const SECRET = __ENV.CONFAB_JWT_SECRET || '';
export const RUN_ID = __ENV.USER_PREFIX || `k6-${Math.random().toString(36).slice(2, 8)}`;

/** Integer from the environment, with a default. */
export function envInt(name, fallback) {
  const v = __ENV[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, not ${JSON.stringify(v)}`);
  return n;
}

/** The base URL for this VU (setup() uses the first). */
export function urlForVu() {
  const vu = exec.vu.idInTest || 1;
  return URLS[(vu - 1) % URLS.length];
}

/** A token for `userId` (minted, or from the dev-token endpoint of `url`). */
export function tokenFor(userId, url = URLS[0]) {
  return SECRET ? mint(SECRET, userId, userId) : devToken(url, userId, userId);
}
