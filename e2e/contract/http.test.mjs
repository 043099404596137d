// The HTTP surface on the Socket.IO port: health, readiness, metrics and dev tokens.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { TRANSPORT, uid } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

function decodeJwtPayload(token) {
  const parts = token.split('.');
  assert.equal(parts.length, 3, `a JWT has three segments: ${token}`);
  return { header: JSON.parse(Buffer.from(parts[0], 'base64url')), payload: JSON.parse(Buffer.from(parts[1], 'base64url')) };
}

describe(`HTTP surface [${TRANSPORT}]`, () => {
  let server;
  before(async () => {
    server = await startServer({ name: 'http' });
  });
  after(async () => {
    await server?.stop();
  });

  test('GET /livez is 200', async () => {
    const res = await fetch(`${server.url}/livez`);
    assert.equal(res.status, 200);
  });

  test('GET /readyz is 200 { ready: true, checks: { storage, backplane, draining } }', async () => {
    const res = await fetch(`${server.url}/readyz`);
    const body = await res.text();
    assert.equal(res.status, 200, body);
    const json = JSON.parse(body);
    assert.equal(json.ready, true, body);
    assert.ok(json.checks && typeof json.checks === 'object', body);
    for (const k of ['storage', 'backplane', 'draining']) {
      assert.ok(Object.prototype.hasOwnProperty.call(json.checks, k), `checks.${k} missing: ${body}`);
    }
  });

  test('GET /metrics is Prometheus text', async () => {
    const res = await fetch(`${server.url}/metrics`);
    const body = await res.text();
    assert.equal(res.status, 200, body);
    const type = res.headers.get('content-type') ?? '';
    assert.match(type, /^(text\/plain|application\/openmetrics-text)/, `content-type ${type}`);
    for (const line of body.split('\n').filter((l) => l && !l.startsWith('#'))) {
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?\s+\S+/, `not an exposition line: ${line}`);
    }
  });

  test('POST /api/dev/token { userId, name } returns { token } carrying sub, name and exp', async () => {
    const userId = uid('dev');
    const res = await fetch(`${server.url}/api/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId, name: 'Dev' }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const { token } = JSON.parse(text);
    assert.equal(typeof token, 'string');
    const { header, payload } = decodeJwtPayload(token);
    assert.equal(header.alg, 'HS256');
    assert.equal(payload.sub, userId);
    assert.equal(payload.name, 'Dev');
    assert.ok(Number.isInteger(payload.exp) && payload.exp > Date.now() / 1000, `exp ${payload.exp}`);
  });

  test('POST /api/dev/token without a name returns a token without a name or a null name', async () => {
    const userId = uid('dev');
    const res = await fetch(`${server.url}/api/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId }),
    });
    assert.equal(res.status, 200);
    const { payload } = decodeJwtPayload((await res.json()).token);
    assert.equal(payload.sub, userId);
    assert.ok(payload.name === undefined || payload.name === null || payload.name === userId, `name ${payload.name}`);
  });
});
