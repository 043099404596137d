// Connecting with signed tokens (CONFAB_JWT_SECRET set, dev tokens off): which tokens are accepted,
// and every way a token is refused with `connect_error` "unauthorized".
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { Clients, expectConnectError, TRANSPORT, uid } from '../lib/client.mjs';
import { nowSeconds, rawToken, sign } from '../lib/jwt.mjs';
import { startServer } from '../lib/server.mjs';

const SECRET = `e2e-secret-${randomBytes(16).toString('hex')}`;

describe(`auth with CONFAB_JWT_SECRET [${TRANSPORT}]`, () => {
  let server;
  let clients;

  before(async () => {
    server = await startServer({
      name: 'auth',
      env: { CONFAB_JWT_SECRET: SECRET, CONFAB_DEV_TOKENS: 'false' },
    });
    clients = new Clients(server);
  });
  after(async () => {
    clients?.closeAll();
    await server?.stop();
  });

  async function acceptedSocket(token) {
    return clients.connect(undefined, undefined, { token, label: 'jwt' });
  }
  async function accepted(token) {
    return (await acceptedSocket(token)).session;
  }

  async function refused(auth, what) {
    const s = clients.socket({ auth, label: what });
    const err = await expectConnectError(s);
    assert.equal(err.message, 'unauthorized', `${what}: connect_error message`);
    assert.equal(
      s.e2e.log.filter((e) => e.event === 'session').length,
      0,
      `${what}: a refused socket must not get a session`,
    );
  }

  test('a valid HS256 token connects; session carries sub, name and this node', async () => {
    const sub = uid('ann');
    const s = await acceptedSocket(sign(SECRET, { sub, name: 'Ann' }));
    const { session } = s;
    // s.e2e.nodeId: the node this socket was sent to (the server's id; in a cluster run, its node's).
    assert.deepEqual(
      { userId: session.userId, name: session.name, nodeId: session.nodeId },
      { userId: sub, name: 'Ann', nodeId: s.e2e.nodeId },
    );
  });

  test('name defaults to sub when absent', async () => {
    const sub = uid('noname');
    const session = await accepted(sign(SECRET, { sub }));
    assert.equal(session.userId, sub);
    assert.equal(session.name, sub);
  });

  test('a name of null is the same as no name', async () => {
    const sub = uid('nullname');
    const session = await accepted(sign(SECRET, { sub, name: null }));
    assert.equal(session.name, sub);
  });

  test('sub of 64 characters from the whole alphabet [A-Za-z0-9_.:@-] is accepted', async () => {
    const base = `aZ09_.:@-${randomBytes(4).toString('hex')}`;
    const sub = base + 'x'.repeat(64 - base.length);
    assert.equal(sub.length, 64);
    const session = await accepted(sign(SECRET, { sub }));
    assert.equal(session.userId, sub);
  });

  test('a name of 64 scalar values (non-ASCII) is accepted', async () => {
    const sub = uid('longname');
    const name = 'é'.repeat(64);
    const session = await accepted(sign(SECRET, { sub, name }));
    assert.equal(session.name, name);
  });

  test('a token that expires in 60 s connects', async () => {
    const sub = uid('short');
    const session = await accepted(sign(SECRET, { sub, exp: nowSeconds() + 60 }));
    assert.equal(session.userId, sub);
  });

  const h256 = { alg: 'HS256', typ: 'JWT' };
  const cases = [
    ['no auth object field at all', () => ({})],
    ['token null', () => ({ token: null })],
    ['token a number', () => ({ token: 42 })],
    ['token an empty string', () => ({ token: '' })],
    ['token not a JWT', () => ({ token: 'not-a-jwt' })],
    ['token with two segments only', () => ({ token: sign(SECRET, { sub: uid() }).split('.').slice(0, 2).join('.') })],
    ['token expired 60 s ago (beyond 30 s leeway)', () => ({ token: sign(SECRET, { sub: uid(), exp: nowSeconds() - 60 }) })],
    ['token expired an hour ago', () => ({ token: sign(SECRET, { sub: uid(), exp: nowSeconds() - 3600 }) })],
    ['token signed with the wrong secret', () => ({ token: sign(`${SECRET}-wrong`, { sub: uid() }) })],
    ['token signed with HS512', () => ({ token: sign(SECRET, { sub: uid() }, { algorithm: 'HS512' }) })],
    ['token signed with HS384', () => ({ token: sign(SECRET, { sub: uid() }, { algorithm: 'HS384' }) })],
    [
      'token with alg none and no signature',
      () => ({ token: rawToken({ alg: 'none', typ: 'JWT' }, { sub: uid(), exp: nowSeconds() + 3600 }, SECRET, { signature: '' }) }),
    ],
    [
      'token whose header says HS512 but is signed with HS256',
      () => ({ token: rawToken({ alg: 'HS512', typ: 'JWT' }, { sub: uid(), exp: nowSeconds() + 3600 }, SECRET) }),
    ],
    [
      'token whose payload was altered after signing',
      () => {
        const [h, , s] = sign(SECRET, { sub: uid('victim') }).split('.');
        const p = Buffer.from(JSON.stringify({ sub: uid('intruder'), exp: nowSeconds() + 3600 })).toString('base64url');
        return { token: `${h}.${p}.${s}` };
      },
    ],
    ['token without exp', () => ({ token: rawToken(h256, { sub: uid(), name: 'NoExp' }, SECRET) })],
    ['token with exp a string', () => ({ token: rawToken(h256, { sub: uid(), exp: String(nowSeconds() + 3600) }, SECRET) })],
    ['token without sub', () => ({ token: sign(SECRET, { name: 'Nobody' }) })],
    ['token with sub empty', () => ({ token: sign(SECRET, { sub: '' }) })],
    ['token with sub containing a space', () => ({ token: sign(SECRET, { sub: 'has space' }) })],
    ['token with sub containing a slash', () => ({ token: sign(SECRET, { sub: 'a/b' }) })],
    ['token with sub containing non-ASCII', () => ({ token: sign(SECRET, { sub: 'émile' }) })],
    ['token with sub of 65 characters', () => ({ token: sign(SECRET, { sub: 'x'.repeat(65) }) })],
    ['token with sub a number', () => ({ token: rawToken(h256, { sub: 12345, exp: nowSeconds() + 3600 }, SECRET) })],
    ['token with name empty', () => ({ token: sign(SECRET, { sub: uid(), name: '' }) })],
    ['token with name only white space', () => ({ token: sign(SECRET, { sub: uid(), name: ' \t ' }) })],
    ['token with name of 65 characters', () => ({ token: sign(SECRET, { sub: uid(), name: 'n'.repeat(65) }) })],
    ['token with name a number', () => ({ token: sign(SECRET, { sub: uid(), name: 7 }) })],
  ];
  for (const [what, auth] of cases) {
    test(`refused with "unauthorized": ${what}`, async () => {
      await refused(auth(), what);
    });
  }

  test('a refused connection does not disturb a connected user', async () => {
    const sub = uid('steady');
    const s = await clients.connect(undefined, undefined, { token: sign(SECRET, { sub }), label: 'steady' });
    await refused({ token: 'garbage' }, 'garbage');
    assert.ok(s.connected);
    assert.equal(s.session.userId, sub);
  });

  test('POST /api/dev/token is 404 when dev tokens are off', async () => {
    const res = await fetch(`${server.url}/api/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: uid() }),
    });
    assert.equal(res.status, 404);
  });
});
