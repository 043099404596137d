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

// CORS: which browser origins may read the HTTP API's and Socket.IO polling's answers.
describe(`CORS [${TRANSPORT}]`, () => {
  const APP = 'https://app.example.com';
  const FOREIGN = 'https://evil.example.net';
  let listed; // CONFAB_CORS_ORIGINS set
  let dev; // the default: own origin, and loopback origins while dev tokens are on
  before(async () => {
    [listed, dev] = await Promise.all([
      startServer({ name: 'cors', env: { CONFAB_CORS_ORIGINS: `${APP}, https://other.example.com` } }),
      startServer({ name: 'cors-default' }),
    ]);
  });
  after(async () => {
    await Promise.all([listed?.stop(), dev?.stop()]);
  });

  const get = (base, path, origin) => fetch(`${base}${path}`, { headers: { origin } });
  function allowedWithCredentials(res, origin, what) {
    assert.equal(res.headers.get('access-control-allow-origin'), origin, `${what}: origin echoed`);
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true', `${what}: credentials allowed`);
    assert.match(res.headers.get('vary') ?? '', /origin/i, `${what}: answers vary by origin`);
  }
  function refused(res, what) {
    assert.equal(res.headers.get('access-control-allow-origin'), null, `${what}: no ACAO for a foreign origin`);
    assert.equal(res.headers.get('access-control-allow-credentials'), null, `${what}: no credentials for a foreign origin`);
  }

  test('a listed origin is echoed with credentials on the HTTP API; never `*`', async () => {
    const base = listed.url;
    const res = await get(base, '/livez', APP);
    assert.equal(res.status, 200);
    allowedWithCredentials(res, APP, 'GET /livez');
    const token = await fetch(`${base}/api/dev/token`, {
      method: 'POST',
      headers: { origin: APP, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: uid('cors') }),
    });
    assert.equal(token.status, 200);
    allowedWithCredentials(token, APP, 'POST /api/dev/token');
  });

  test('a foreign origin gets no CORS headers, on the API and on Socket.IO polling', async () => {
    const base = listed.url;
    refused(await get(base, '/livez', FOREIGN), 'GET /livez');
    refused(await get(base, '/socket.io/?EIO=4&transport=polling', FOREIGN), 'polling handshake');
    const preflight = await fetch(`${base}/api/dev/token`, {
      method: 'OPTIONS',
      headers: { origin: FOREIGN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    refused(preflight, 'preflight');
    refused(await get(base, '/livez', 'http://localhost:5173'), 'a loopback origin once a list is set');
  });

  test('Socket.IO polling: the preflight and the handshake of a listed origin are allowed with credentials', async () => {
    const base = listed.url;
    const preflight = await fetch(`${base}/socket.io/?EIO=4&transport=polling&t=x`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    assert.ok(preflight.status === 200 || preflight.status === 204, `preflight status ${preflight.status}`);
    allowedWithCredentials(preflight, APP, 'preflight');
    assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /POST/);
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /content-type/i);
    const handshake = await get(base, '/socket.io/?EIO=4&transport=polling', APP);
    const body = await handshake.text();
    assert.equal(handshake.status, 200, body);
    assert.match(body, /^0\{"sid":/, 'an Engine.IO open packet');
    allowedWithCredentials(handshake, APP, 'polling handshake');
  });

  test('by default the node\'s own origin is allowed, and loopback origins while dev tokens are on', async () => {
    const base = dev.url;
    allowedWithCredentials(await get(base, '/livez', base), base, 'own origin');
    allowedWithCredentials(await get(base, '/livez', 'http://localhost:5173'), 'http://localhost:5173', 'loopback origin');
    refused(await get(base, '/livez', FOREIGN), 'foreign origin');
  });
});
