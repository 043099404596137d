// The HTTP API's OpenAPI 3.1 document (`GET /api/v1/openapi.json`, api.md): served without a key,
// valid against the OpenAPI 3.1 schema (@seriousme/openapi-schema-validator), and listing every
// route of the contract.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Validator } from '@seriousme/openapi-schema-validator';

import { TRANSPORT } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

const KEY = 'e2e-openapi-key-0123456789abcdef';

// Every route of api.md up to forwarded calls.
const ROUTES = [
  ['post', '/api/v1/users/{userId}/notifications'],
  ['post', '/api/v1/notifications'],
  ['post', '/api/v1/rooms/{roomId}/notifications'],
  ['post', '/api/v1/rooms'],
  ['get', '/api/v1/rooms/{roomId}'],
  ['get', '/api/v1/rooms/{roomId}/members'],
  ['put', '/api/v1/rooms/{roomId}/members/{userId}'],
  ['delete', '/api/v1/rooms/{roomId}/members/{userId}'],
  ['post', '/api/v1/rooms/{roomId}/messages'],
  ['get', '/api/v1/rooms/{roomId}/messages'],
  ['get', '/api/v1/users/{userId}/rooms'],
  ['get', '/api/v1/users/{userId}/presence'],
  ['post', '/api/v1/users/{userId}/disconnect'],
  ['get', '/api/v1/stats'],
  ['get', '/api/v1/nodes'],
  ['get', '/api/v1/security-events'],
  ['get', '/api/v1/openapi.json'],
];

describe(`OpenAPI document [${TRANSPORT}]`, () => {
  let server;
  before(async () => {
    server = await startServer({ name: 'openapi', env: { CONFAB_API_KEY: KEY }, standalone: true });
  });
  after(async () => {
    await server?.stop();
  });

  test('GET /api/v1/openapi.json is a valid OpenAPI 3.1 document, served without a key', async () => {
    const res = await fetch(`${server.url}/api/v1/openapi.json`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const doc = JSON.parse(text);
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(doc);
    assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
    assert.equal(validator.version, '3.1');
  });

  test('it lists every route of the contract, each with responses', async () => {
    const doc = await (await fetch(`${server.url}/api/v1/openapi.json`)).json();
    for (const [method, path] of ROUTES) {
      const operation = doc.paths?.[path]?.[method];
      assert.ok(operation, `${method.toUpperCase()} ${path} is not in the document`);
      assert.ok(Object.keys(operation.responses ?? {}).length > 0, `${method} ${path} has no responses`);
    }
    // Each changing route documents its error answer.
    for (const [method, path] of ROUTES.filter(([m]) => m !== 'get')) {
      const responses = doc.paths[path][method].responses;
      assert.ok(responses['400'], `${method.toUpperCase()} ${path} documents no 400`);
    }
  });

  test('without a configured key the document is not there either', async () => {
    const off = await startServer({ name: 'openapi-off', standalone: true });
    try {
      const res = await fetch(`${off.url}/api/v1/openapi.json`);
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, 'not_found');
    } finally {
      await off.stop();
    }
  });
});
