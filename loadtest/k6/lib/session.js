// One client session as a promise: connect, wait for `session`, run `body(io, done)`, and resolve
// once the socket closed. Records connect time and success, pings answered and dropped sockets.
import { clearTimeout, setTimeout } from 'k6/timers';
import { SocketIO } from './socketio.js';
import { connected, connectTime, droppedSockets, pingsAnswered } from './metrics.js';

/** Resolves to `{ ok }`: whether the session was established. */
export function session(url, token, body, { connectTimeoutMs = 10000, tags = {} } = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const io = new SocketIO(url, { auth: { token }, tags });
    let established = false;
    let closing = false;
    let failed = false;
    const done = () => {
      closing = true;
      io.close();
    };
    const refuse = (why) => {
      if (established || failed) return;
      failed = true;
      connected.add(false, tags);
      console.warn(`no session from ${url}: ${why}`);
    };
    const timer = setTimeout(() => {
      refuse(`nothing within ${connectTimeoutMs} ms`);
      done();
    }, connectTimeoutMs);
    io.on('session', () => {
      clearTimeout(timer);
      established = true;
      connectTime.add(Date.now() - started, tags);
      connected.add(true, tags);
      body(io, done);
    });
    io.onPing(() => pingsAnswered.add(1, tags));
    io.onError((reason) => refuse(reason));
    io.onClose(() => {
      clearTimeout(timer);
      refuse('socket closed');
      if (established && !closing) droppedSockets.add(1, tags);
      resolve({ ok: established });
    });
  });
}

/** Emits with an ack as a promise: resolves to the reply, or `null` when none came in time. */
export function call(io, event, payload) {
  return new Promise((resolve) => {
    if (!io.emit(event, payload, resolve)) resolve(null);
  });
}
