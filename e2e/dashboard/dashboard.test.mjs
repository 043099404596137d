// The operations dashboard (/dashboard) in headless Chromium against a running three-node cluster:
// the key gate (a wrong key is refused, the right one kept in sessionStorage and sent in a header,
// never in a URL), the node and connection counts following the cluster live, the nodes table, the
// security events, and a screenshot in e2e/artifacts/dashboard.png.
//
// Uses Debian's Chromium (CHROMIUM_PATH, default /usr/bin/chromium), redis-server and Postgres
// (see lib/cluster.mjs).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { call, callFails, Clients, connectSocket, disconnect, emitAck, makeSocket, sleep, uid } from '../lib/client.mjs';
import { startCluster } from '../lib/cluster.mjs';
import { E2E_DIR } from '../lib/server.mjs';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(E2E_DIR, 'artifacts');
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
const API_KEY = `dash-${randomBytes(16).toString('hex')}`;
/** Sockets connected to each node, in node order. */
const PER_NODE = [4, 2, 3];
const TOTAL = PER_NODE.reduce((a, b) => a + b, 0);
const LIVE_TIMEOUT_MS = 15_000;

describe('operations dashboard on a three-node cluster', () => {
  let cluster;
  let browser;
  let page;
  const consoleLines = [];
  const requests = [];
  const clientsByNode = [];
  let chatter = null;

  before(async () => {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(`Chromium not found at ${CHROMIUM_PATH}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    cluster = await startCluster({
      nodes: 3,
      name: 'dash',
      // A small typing budget, so that a burst of typing shows up as rate-limit events.
      env: { CONFAB_API_KEY: API_KEY, CONFAB_TYPING_RATE_PER_SEC: '2', CONFAB_TYPING_BURST: '3' },
    });
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: LAUNCH_ARGS, headless: true });
  });

  after(async () => {
    if (chatter) clearInterval(chatter);
    for (const clients of clientsByNode) clients.closeAll();
    await browser?.close();
    await cluster?.stop();
  });

  /** Connects `count` sockets of fresh users to node `i`. */
  async function connectTo(i, count, prefix = 'ops') {
    const clients = (clientsByNode[i] ??= new Clients({ url: cluster.nodes[i].url }));
    const sockets = [];
    for (let k = 0; k < count; k += 1) sockets.push(await clients.connect(uid(`${prefix}${i}`)));
    return sockets;
  }

  const text = (selector) => page.locator(selector).first().textContent();

  async function waitForText(selector, expected, what) {
    await page
      .waitForFunction(
        ([sel, want]) => document.querySelector(sel)?.textContent?.trim() === want,
        [selector, String(expected)],
        { timeout: LIVE_TIMEOUT_MS },
      )
      .catch(async (err) => {
        throw new Error(`${what}: ${selector} is ${JSON.stringify(await text(selector))}, expected ${expected} (${err.message})`);
      });
  }

  test('shows the cluster live, behind the API key', async (t) => {
    try {
      // ---- sockets on every node, and some traffic ----
      const sockets = [];
      for (const [i, n] of PER_NODE.entries()) sockets.push(...(await connectTo(i, n)));
      const room = (await call(sockets[0], 'room:create', { name: 'ops dashboard', kind: 'public' })).room.id;
      for (const s of sockets.slice(1)) await call(s, 'room:join', { roomId: room });
      let turn = 0;
      chatter = setInterval(() => {
        const s = sockets[turn % sockets.length];
        turn += 1;
        s.emit('message:send', { roomId: room, text: `tick ${turn}` }, () => {});
      }, 150);

      // Security events: a refused token, a forbidden read, a burst of typing over its budget.
      const intruder = makeSocket({ url: cluster.nodes[1].url }, { token: 'not-a-token', label: 'intruder' });
      await connectSocket(intruder).then(
        () => assert.fail('a bad token was accepted'),
        (err) => assert.equal(err.message, 'unauthorized'),
      );
      const secret = (await call(sockets[1], 'room:create', { name: 'private', kind: 'private' })).room.id;
      await callFails(sockets[2], 'message:history', { roomId: secret }, 'forbidden');
      const typing = await Promise.all(Array.from({ length: 8 }, () => emitAck(sockets[3], 'typing:start', { roomId: room })));
      assert.ok(typing.some((r) => r.error?.code === 'rate_limited'), 'the typing burst hit the rate limit');

      // ---- the page ----
      const context = await browser.newContext({ viewport: { width: 1480, height: 1040 } });
      page = await context.newPage();
      page.setDefaultTimeout(10_000);
      await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/]|localhost[:/])/, (route) => route.abort());
      page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
      page.on('pageerror', (err) => consoleLines.push(`pageerror: ${err.message}`));
      page.on('request', (req) => requests.push({ url: req.url(), headers: req.headers() }));

      const res = await page.goto(`${cluster.nodes[0].url}/dashboard`);
      assert.equal(res?.status(), 200);
      assert.match(res.headers()['content-security-policy'] ?? '', /connect-src 'self'/);

      // A wrong key is refused and the gate says so.
      await page.fill('#api-key-input', 'definitely-not-the-key');
      await page.click('#api-key-save');
      await page.waitForFunction(() => /refused/.test(document.querySelector('#gate-error')?.textContent ?? ''));
      assert.equal(await page.evaluate(() => sessionStorage.getItem('confab.apiKey')), null);

      // The right key opens the live view.
      await page.fill('#api-key-input', API_KEY);
      await page.click('#api-key-save');
      await page.waitForSelector('#status[data-state="live"]', { timeout: LIVE_TIMEOUT_MS });
      await waitForText('#node-count', 3, 'node count');
      await waitForText('#connection-count', TOTAL, 'connection count');
      await waitForText('#users-online', TOTAL, 'users online');

      // A reload keeps the key for this tab: straight back to live, no gate.
      await page.reload();
      await page.waitForSelector('#status[data-state="live"]', { timeout: LIVE_TIMEOUT_MS });
      assert.equal(await page.locator('#gate').isHidden(), true);
      await waitForText('#connection-count', TOTAL, 'connection count after the reload');

      // One row per node, with its connections.
      const rows = page.locator('#nodes [data-node-id]');
      assert.equal(await rows.count(), 3);
      for (const [i, node] of cluster.nodes.entries()) {
        const row = page.locator(`#nodes [data-node-id="${node.nodeId}"]`);
        assert.equal(await row.getAttribute('data-connections'), String(PER_NODE[i]), `connections of ${node.nodeId}`);
      }

      // Security events from every node are listed: kinds, and never the token.
      await page.waitForFunction(
        () => {
          const kinds = [...document.querySelectorAll('#security-events li')].map((li) => li.dataset.kind);
          return ['auth_failure', 'forbidden', 'rate_limited'].every((k) => kinds.includes(k));
        },
        null,
        { timeout: LIVE_TIMEOUT_MS },
      );
      assert.ok(!(await text('#security-events')).includes('not-a-token'));

      // Live: two more sockets on node c show up, and go again, without a reload.
      const extra = await connectTo(2, 2, 'extra');
      await waitForText('#connection-count', TOTAL + 2, 'connection count after two more sockets');
      assert.equal(
        await page.locator(`#nodes [data-node-id="${cluster.nodes[2].nodeId}"]`).getAttribute('data-connections'),
        String(PER_NODE[2] + 2),
      );
      await Promise.all(extra.map((s) => disconnect(s)));
      await waitForText('#connection-count', TOTAL, 'connection count after they left');

      // Rates show once two publications were seen; the charts have been drawn on.
      await page.waitForFunction(() => /^\d/.test(document.querySelector('#message-rate')?.textContent ?? ''));
      const painted = await page.evaluate(() =>
        [...document.querySelectorAll('canvas.chart')].map((c) => {
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let lit = 0;
          for (let i = 3; i < data.length; i += 4) if (data[i] > 0) lit += 1;
          return lit;
        }),
      );
      assert.ok(painted.every((lit) => lit > 500), `every chart is drawn (${painted})`);

      // The key travelled in a header only.
      const stream = requests.filter((r) => r.url.includes('/api/v1/dashboard/stream'));
      assert.ok(stream.length > 0, 'the page opened the stream');
      assert.ok(stream.some((r) => r.headers.authorization === `Bearer ${API_KEY}`), 'the stream request carries the key');
      assert.ok(requests.every((r) => !r.url.includes(API_KEY)), 'the key never appears in a URL');

      // Let more history build up, so the screenshot shows a shape.
      await sleep(12_000);
      await waitForText('#connection-count', TOTAL, 'connection count before the screenshot');
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    } catch (err) {
      await page?.screenshot({ path: path.join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
      t.diagnostic(consoleLines.slice(-40).join('\n'));
      t.diagnostic(cluster?.logs().slice(-6000) ?? '');
      throw err;
    }
  });
});
