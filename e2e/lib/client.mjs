// Socket.IO client helpers: tokens, connecting, acks and waiting for events.
//
// Every socket made here records every event it receives from its creation on (`onAny`), so a test
// can wait for an event that already arrived (a broadcast often reaches another socket before the
// acting socket's ack does). `waitFor` consumes the first matching recorded event; `expectNone`
// fails when a matching event that no `waitFor` consumed is recorded by the end of a short window.

import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';

/** The transport under test: E2E_TRANSPORT=websocket (default) or polling. */
export const TRANSPORT = process.env.E2E_TRANSPORT ?? 'websocket';
if (!['websocket', 'polling'].includes(TRANSPORT)) {
  throw new Error(`E2E_TRANSPORT must be "websocket" or "polling", not ${JSON.stringify(TRANSPORT)}`);
}

export function transportOptions(transport = TRANSPORT) {
  return transport === 'polling'
    ? { transports: ['polling'], upgrade: false }
    : { transports: ['websocket'] };
}

export const DEFAULT_TIMEOUT_MS = 3_000;
/** How long to listen when asserting that something is NOT received. */
export const QUIET_MS = 300;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A unique user id with a readable prefix, e.g. `ann-3f9a1c0d`. */
export function uid(prefix = 'u') {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const RFC3339_RE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
/** A well-formed UUID that names no room. */
export const UNKNOWN_ROOM = '00000000-0000-4000-8000-000000000000';

/** `POST /api/dev/token` → the token string. */
export async function devToken(server, userId, name) {
  const body = name === undefined ? { userId } : { userId, name };
  const res = await fetch(`${server.url}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`POST /api/dev/token ${JSON.stringify(body)} → ${res.status}: ${text}`);
  }
  const json = JSON.parse(text);
  if (typeof json.token !== 'string') throw new Error(`POST /api/dev/token returned no token: ${text}`);
  return json.token;
}

function summarize(value, max = 300) {
  let s;
  try {
    s = JSON.stringify(value);
  } catch {
    s = String(value);
  }
  if (s === undefined) s = 'undefined';
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** Starts recording every event the socket receives. Called by `makeSocket`. */
function record(socket, label) {
  const state = { label, log: [], waiters: new Set() };
  socket.e2e = state;
  socket.onAny((event, ...args) => {
    const entry = { event, args, payload: args[0], at: Date.now(), consumed: false };
    state.log.push(entry);
    for (const w of [...state.waiters]) w(entry);
  });
  return state;
}

function recentEvents(socket, n = 15) {
  const log = socket.e2e?.log ?? [];
  return log
    .slice(-n)
    .map((e) => `${e.consumed ? '(seen) ' : ''}${e.event} ${summarize(e.payload, 200)}`)
    .join('\n    ');
}

/**
 * Creates a socket (not connected yet) that records what it receives. When `server` is a cluster
 * (lib/cluster.mjs, E2E_CLUSTER=1) each new socket goes to the next node in rotation;
 * `socket.e2e.nodeId` names the node the socket was sent to.
 */
export function makeSocket(server, { token, auth, label = 'socket', transport = TRANSPORT, ...opts } = {}) {
  const target = typeof server.socketTarget === 'function' ? server.socketTarget() : server;
  const socket = io(target.url, {
    autoConnect: false,
    reconnection: false,
    forceNew: true,
    timeout: 10_000,
    auth: auth !== undefined ? auth : { token },
    ...transportOptions(transport),
    ...opts,
  });
  record(socket, label);
  socket.e2e.url = target.url;
  socket.e2e.nodeId = target.nodeId;
  return socket;
}

/**
 * Connects and resolves once `connect` fired; rejects with the `connect_error` (whose `message` is the
 * server's reason) or on timeout.
 */
export function connectSocket(socket, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${socket.e2e?.label}: no connect or connect_error within ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
    socket.connect();
  });
}

/**
 * Tries to connect and resolves to the `connect_error` (an Error whose `message` is the reason);
 * rejects when the connection succeeds instead.
 */
export async function expectConnectError(socket, timeoutMs = 10_000) {
  try {
    await connectSocket(socket, timeoutMs);
  } catch (err) {
    socket.disconnect();
    return err;
  }
  socket.disconnect();
  throw new Error(`${socket.e2e?.label}: expected connect_error, but the connection was accepted`);
}

/**
 * Waits for `event` whose first argument satisfies `predicate`, looking first at what the socket
 * already received and did not hand out yet. Resolves to the payload (first argument).
 */
export function waitFor(socket, event, predicate = () => true, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const state = socket.e2e;
  if (!state) throw new Error('waitFor: socket was not made with makeSocket');
  const matches = (e) => !e.consumed && e.event === event && predicate(e.payload, e.args);
  const found = state.log.find(matches);
  if (found) {
    found.consumed = true;
    return Promise.resolve(found.payload);
  }
  return new Promise((resolve, reject) => {
    const waiter = (entry) => {
      if (matches(entry)) {
        entry.consumed = true;
        cleanup();
        resolve(entry.payload);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new Error(
          `${state.label}: timed out after ${timeoutMs} ms waiting for "${event}"` +
            `${predicate.name ? ` (${predicate.name})` : ''}; last events received:\n    ${recentEvents(socket) || '(none)'}`,
        ),
      );
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      state.waiters.delete(waiter);
    }
    state.waiters.add(waiter);
  });
}

/** Index into the socket's event log, for `expectNone(..., { since })`. */
export function mark(socket) {
  return socket.e2e.log.length;
}

/** Marks everything received so far as seen. */
export function drain(socket) {
  for (const e of socket.e2e.log) e.consumed = true;
}

/** Unconsumed recorded events named `event` matching `predicate` (from index `since`). */
export function received(socket, event, predicate = () => true, since = 0) {
  return socket.e2e.log.slice(since).filter((e) => !e.consumed && e.event === event && predicate(e.payload, e.args));
}

/**
 * Listens for `windowMs` and fails if the socket received (and nobody consumed) an `event` whose
 * payload matches `predicate`, counting from index `since` of its log (default: everything).
 */
export async function expectNone(socket, event, predicate = () => true, { windowMs = QUIET_MS, since = 0 } = {}) {
  await sleep(windowMs);
  const bad = received(socket, event, predicate, since);
  if (bad.length > 0) {
    throw new Error(
      `${socket.e2e.label}: expected no "${event}" but received ${bad.length}: ${bad
        .map((e) => summarize(e.payload))
        .join(', ')}`,
    );
  }
}

export const NO_PAYLOAD = Symbol('no payload');

/**
 * Emits `event` with `payload` and an ack callback; resolves to the reply object. Fails when no reply
 * comes within `timeoutMs` or when the reply has more than one argument.
 */
export function emitAck(socket, event, payload, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const cb = (err, ...args) => {
      if (err) {
        reject(new Error(`${socket.e2e?.label ?? 'socket'}: no ack for "${event}" ${summarize(payload, 120)} within ${timeoutMs} ms`));
      } else if (args.length !== 1) {
        reject(new Error(`"${event}" ack must have exactly one argument, got ${args.length}: ${summarize(args)}`));
      } else resolve(args[0]);
    };
    const s = socket.timeout(timeoutMs);
    if (payload === NO_PAYLOAD) s.emit(event, cb);
    else s.emit(event, payload, cb);
  });
}

/** Asserts a success reply and returns it. */
export function ok(reply, what = 'reply') {
  if (!reply || typeof reply !== 'object' || reply.ok !== true) {
    throw new Error(`${what}: expected { ok: true, … } but got ${summarize(reply, 600)}`);
  }
  return reply;
}

export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'rate_limited',
  'unavailable',
  'internal',
];

/** Asserts `{ ok: false, error: { code, message } }` with the given code. */
export function failed(reply, code, what = 'reply') {
  const shapeOk =
    reply &&
    typeof reply === 'object' &&
    reply.ok === false &&
    reply.error &&
    typeof reply.error === 'object' &&
    typeof reply.error.code === 'string' &&
    typeof reply.error.message === 'string';
  if (!shapeOk || reply.error.code !== code) {
    throw new Error(`${what}: expected { ok: false, error: { code: "${code}", message } } but got ${summarize(reply, 600)}`);
  }
  if (!ERROR_CODES.includes(reply.error.code)) throw new Error(`${what}: unknown error code ${reply.error.code}`);
  return reply;
}

/** Emits and asserts success; returns the reply. */
export async function call(socket, event, payload, what) {
  return ok(await emitAck(socket, event, payload), what ?? `${event} ${summarize(payload, 160)}`);
}

/** Emits and asserts a failure with `code`; returns the reply. */
export async function callFails(socket, event, payload, code, what) {
  return failed(await emitAck(socket, event, payload), code, what ?? `${event} ${summarize(payload, 160)}`);
}

/**
 * Keeps track of the sockets of one test file so `closeAll` can disconnect them, and makes users.
 */
export class Clients {
  constructor(server) {
    this.server = server;
    this.sockets = new Set();
  }

  socket(opts) {
    const s = makeSocket(this.server, opts);
    this.sockets.add(s);
    return s;
  }

  /**
   * Connects a socket for `userId` (dev token) and waits for its `session`.
   * Resolves to the socket; `socket.session` holds the session payload.
   */
  async connect(userId, name, { label, token, ...opts } = {}) {
    const t = token ?? (await devToken(this.server, userId, name));
    const s = this.socket({ token: t, label: label ?? `${userId}#${this.countFor(userId) + 1}`, ...opts });
    s.userId = userId;
    await connectSocket(s);
    s.session = await waitFor(s, 'session', () => true, 5_000);
    return s;
  }

  countFor(userId) {
    let n = 0;
    for (const s of this.sockets) if (s.userId === userId) n += 1;
    return n;
  }

  closeAll() {
    for (const s of this.sockets) s.disconnect();
    this.sockets.clear();
  }
}

/** Disconnects and resolves once the socket's `disconnect` fired. */
export function disconnect(socket) {
  return new Promise((resolve) => {
    if (!socket.connected) return resolve();
    socket.once('disconnect', () => resolve());
    socket.disconnect();
  });
}

/** The given keys of `obj` (missing ones as undefined), to compare payloads field by field. */
export function pick(obj, keys) {
  return Object.fromEntries(keys.map((k) => [k, obj?.[k]]));
}
