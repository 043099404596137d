// CORS as a browser enforces it: a page on a listed origin reaches confab's HTTP API and connects
// over long-polling with credentials; a page on any other origin can do neither.
//
// Two tiny pages on two loopback ports (two origins); confab lists only the first in
// CONFAB_CORS_ORIGINS. Uses Debian's Chromium (CHROMIUM_PATH, default /usr/bin/chromium).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { devToken } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const require = createRequire(import.meta.url);
const SOCKET_IO_JS = readFileSync(
  path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js'),
);
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

/** A page server on its own port: `/` is an empty page that loads the Socket.IO client. */
async function pageServer() {
  const server = createServer((req, res) => {
    if (req.url === '/socket.io.min.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' }).end(SOCKET_IO_JS);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script src="/socket.io.min.js"></script>');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** In the page: a dev-token request and a polling connection to confab, with credentials. */
async function tryFromPage(page, confabUrl, token) {
  return page.evaluate(
    async ({ confabUrl, token }) => {
      const result = {};
      try {
        const res = await fetch(`${confabUrl}/api/dev/token`, {
          method: 'POST',
          credentials: 'include',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ userId: 'page-user' }),
        });
        result.fetch = res.status;
      } catch (err) {
        result.fetch = `refused: ${err.name}`;
      }
      result.socket = await new Promise((resolve) => {
        // eslint-disable-next-line no-undef
        const socket = io(confabUrl, { transports: ['polling'], withCredentials: true, reconnection: false, auth: { token } });
        const timer = setTimeout(() => resolve('no answer'), 8000);
        socket.on('session', (s) => {
          clearTimeout(timer);
          socket.disconnect();
          resolve(`session ${s.userId}`);
        });
        socket.on('connect_error', (err) => {
          clearTimeout(timer);
          resolve(`connect_error: ${err.message}`);
        });
      });
      return result;
    },
    { confabUrl, token },
  );
}

describe('CORS in a browser', () => {
  let allowed;
  let foreign;
  let confab;
  let browser;
  before(async () => {
    if (!existsSync(CHROMIUM_PATH)) throw new Error(`Chromium not found at ${CHROMIUM_PATH} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
    [allowed, foreign] = await Promise.all([pageServer(), pageServer()]);
    confab = await startServer({ name: 'cors-browser', standalone: true, env: { CONFAB_CORS_ORIGINS: allowed.origin } });
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: LAUNCH_ARGS, headless: true });
  });
  after(async () => {
    await browser?.close();
    await confab?.stop();
    await Promise.all([allowed?.close(), foreign?.close()]);
  });

  async function open(origin) {
    const page = await (await browser.newContext()).newPage();
    await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => typeof window.io === 'function');
    return page;
  }

  test('a page on a listed origin gets its token answer and connects over polling with credentials', async () => {
    const page = await open(allowed.origin);
    const token = await devToken(confab, 'ann');
    assert.deepEqual(await tryFromPage(page, confab.url, token), { fetch: 200, socket: 'session ann' });
  });

  test('a page on another origin can neither read the API nor connect over polling', async () => {
    const page = await open(foreign.origin);
    const token = await devToken(confab, 'eve');
    const result = await tryFromPage(page, confab.url, token);
    assert.match(String(result.fetch), /^refused/, `fetch: ${result.fetch}`);
    assert.match(result.socket, /^connect_error/, `socket: ${result.socket}`);
  });
});
