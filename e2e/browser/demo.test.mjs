// The demo page at `/`, driven in headless Chromium: two people chat through it.
//
// Uses Debian's Chromium (CHROMIUM_PATH, default /usr/bin/chromium). The page loads the Socket.IO
// client from the CDN; with no internet here, that URL is served from node_modules.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { E2E_DIR, startServer } from '../lib/server.mjs';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CDN_URL = 'https://cdn.socket.io/4.8.1/socket.io.min.js';
const ARTIFACTS = path.join(E2E_DIR, 'artifacts');
const require = createRequire(import.meta.url);
const SOCKET_IO_JS = path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');

const LAUNCH_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe('demo page in a browser', () => {
  let server;
  let browser;
  const pages = [];
  const consoleLines = [];

  before(async () => {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(
        `Chromium not found at ${CHROMIUM_PATH}: install it with: apt-get install -y chromium ` +
          '(or set CHROMIUM_PATH)',
      );
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await startServer({ name: 'browser' });
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: LAUNCH_ARGS, headless: true });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function openPage(label) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    // Nothing may leave the machine; the Socket.IO client from the CDN is served from node_modules.
    // (Playwright tries the most recently registered route first.)
    await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/]|localhost[:/])/, (route) => route.abort());
    const socketIoJs = readFileSync(SOCKET_IO_JS);
    await page.route(CDN_URL, (route) =>
      route.fulfill({ status: 200, contentType: 'application/javascript; charset=utf-8', body: socketIoJs }),
    );
    page.on('console', (msg) => consoleLines.push(`[${label}] ${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => consoleLines.push(`[${label}] pageerror: ${err.message}`));
    pages.push({ label, page });
    const res = await page.goto(`${server.url}/`);
    assert.equal(res?.status(), 200, `GET / status`);
    return page;
  }

  async function connectAs(page, name) {
    await page.fill('#name-input', name);
    await page.click('#connect-btn');
    await page.waitForSelector('#status[data-state="connected"]');
  }

  async function screenshots(suffix) {
    for (const { label, page } of pages) {
      await page.screenshot({ path: path.join(ARTIFACTS, `demo-${label}${suffix}.png`), fullPage: true }).catch(() => {});
    }
  }

  test('Ann and Bob chat through the demo page', async (t) => {
    try {
      const a = await openPage('ann');
      const b = await openPage('bob');
      await connectAs(a, 'Ann');
      await connectAs(b, 'Bob');

      // Ann creates a public room; it appears selected in her list.
      const roomName = `Lobby ${Date.now() % 100000}`;
      await a.fill('#room-name-input', roomName);
      await a.check('#room-public');
      await a.click('#create-room-btn');
      const roomEl = a.locator('#rooms [data-room-id]', { hasText: roomName }).first();
      await roomEl.waitFor();
      const roomId = await roomEl.getAttribute('data-room-id');
      assert.match(roomId ?? '', /^[0-9a-f-]{36}$/i, 'data-room-id is the room UUID');
      await roomEl.click();
      await a.waitForSelector(`#rooms [data-room-id="${roomId}"].active`);

      // Bob joins by id.
      await b.fill('#join-room-input', roomId);
      await b.click('#join-room-btn');
      await b.waitForSelector(`#rooms [data-room-id="${roomId}"]`);
      if (!(await b.locator(`#rooms [data-room-id="${roomId}"].active`).count())) {
        await b.click(`#rooms [data-room-id="${roomId}"]`);
      }
      await b.waitForSelector(`#rooms [data-room-id="${roomId}"].active`);

      // Ann sends; Bob sees it.
      await a.fill('#message-input', 'hello from A');
      await a.click('#send-btn');
      const onB = b.locator('#messages .message', { has: b.locator('.text', { hasText: 'hello from A' }) });
      await onB.first().waitFor();
      const seq = await onB.first().getAttribute('data-seq');
      assert.equal(seq, '1', 'the first message of the room has data-seq 1');
      await a.locator('#messages .message .text', { hasText: 'hello from A' }).first().waitFor();

      // Enter also sends.
      await b.fill('#message-input', 'hi Ann, Enter works');
      await b.press('#message-input', 'Enter');
      await a.locator('#messages .message .text', { hasText: 'hi Ann, Enter works' }).first().waitFor();

      // Bob types; Ann's typing indicator names him.
      await b.click('#message-input');
      await b.keyboard.type('Bob is typ', { delay: 30 });
      await a.waitForFunction(() => /Bob/.test(document.querySelector('#typing')?.textContent ?? ''));

      // Bob is shown online in Ann's member list.
      const bobMember = a.locator('#members [data-user-id][data-online="true"]', { hasText: 'Bob' });
      await bobMember.first().waitFor();

      await screenshots('');
    } catch (err) {
      await screenshots('-failure');
      t.diagnostic(consoleLines.slice(-40).join('\n'));
      throw err;
    }
  });
});
