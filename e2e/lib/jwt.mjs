// Client tokens for servers started with a known CONFAB_JWT_SECRET.
import { createHmac } from 'node:crypto';
import jwt from 'jsonwebtoken';

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A well-formed HS256 token: `claims` are merged over `{ exp: now + 1 h }`. */
export function sign(secret, claims, { algorithm = 'HS256' } = {}) {
  return jwt.sign({ exp: nowSeconds() + 3600, ...claims }, secret, { algorithm, noTimestamp: true });
}

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/**
 * A token assembled by hand, for claims that `jsonwebtoken` refuses to sign (an `exp` that is a
 * string, no `exp` at all with a custom header, `alg: none`, …). Signed with HMAC-SHA256 unless
 * `signature` is given.
 */
export function rawToken(header, payload, secret, { signature } = {}) {
  const input = `${b64url(header)}.${b64url(payload)}`;
  const sig = signature ?? createHmac('sha256', secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}
