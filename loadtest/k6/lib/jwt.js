// HS256 client tokens minted from the shared secret (CONFAB_JWT_SECRET), or asked from a node's
// dev-token endpoint when the deployment has dev tokens on and no secret is given.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

const b64url = (s) => encoding.b64encode(s, 'rawurl');

/** A token for `sub` with display name `name`, valid for `ttlSeconds`. */
export function mint(secret, sub, name, ttlSeconds = 3600) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub, name, exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const signature = crypto.hmac('sha256', secret, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

/** POST /api/dev/token on `baseUrl`. */
export function devToken(baseUrl, userId, name) {
  const res = http.post(`${baseUrl}/api/dev/token`, JSON.stringify({ userId, name }), {
    headers: { 'content-type': 'application/json' },
    tags: { name: 'dev-token' },
  });
  if (res.status !== 200) throw new Error(`POST /api/dev/token → ${res.status}: ${res.body}`);
  return res.json('token');
}
