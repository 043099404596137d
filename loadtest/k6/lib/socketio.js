// A minimal Socket.IO v4 client over k6's websockets module (k6 has none of its own): Engine.IO v4
// framing on the websocket transport, namespace "/", JSON payloads, no binary attachments.
//
//   Engine.IO packets are one digit then data: 0 open, 2 ping, 3 pong, 4 message. A Socket.IO
//   packet rides inside a message: 40 connect (payload: the auth object), 44 connect error,
//   42 event (["name", payload]), 42<id>[...] an event that wants an ack, 43<id>[reply] the ack.
//
//   const io = new SocketIO(url, { token });
//   io.onConnect(() => io.emit('room:join', { roomId }, (reply) => ...));
//   io.on('message:new', (msg) => ...);
//   io.close();
//
// Every callback runs on the VU's event loop, so a scenario is written with callbacks and
// timers (setTimeout/setInterval from k6/timers), never with sleep().
// k6 1.1 ships the websocket API as k6/experimental/websockets (later versions also as k6/websockets).
import { WebSocket } from 'k6/experimental/websockets';
import { clearTimeout, setTimeout } from 'k6/timers';

export class SocketIO {
  /**
   * `url` is the server's base URL (http(s)://host:port); `auth` is sent with the connect packet.
   * `ackTimeoutMs` bounds every ack: a missing reply calls the callback with `null`.
   */
  constructor(url, { auth = {}, ackTimeoutMs = 5000, tags = {} } = {}) {
    this.url = `${url.replace(/^http/, 'ws').replace(/\/$/, '')}/socket.io/?EIO=4&transport=websocket`;
    this.auth = auth;
    this.ackTimeoutMs = ackTimeoutMs;
    this.handlers = {};
    this.acks = new Map();
    this.nextAckId = 0;
    this.connected = false;
    this.closed = false;
    this.openedAt = Date.now();
    this.onConnectFns = [];
    this.onErrorFns = [];
    this.onCloseFns = [];
    this.onPingFns = [];
    /** The server's Engine.IO handshake (`sid`, `pingInterval`, `pingTimeout`, `maxPayload`). */
    this.handshake = null;
    this.ws = new WebSocket(this.url, null, { tags });
    this.ws.onmessage = (e) => this.receive(e.data);
    this.ws.onerror = (e) => this.fail(`websocket error: ${e.error}`);
    this.ws.onclose = () => this.closing();
  }

  onConnect(fn) {
    this.onConnectFns.push(fn);
  }

  /** `fn(reason)` on a connect error (`unauthorized`, `server at capacity`) or a broken socket. */
  onError(fn) {
    this.onErrorFns.push(fn);
  }

  onClose(fn) {
    this.onCloseFns.push(fn);
  }

  /** `fn()` after each Engine.IO ping was answered. */
  onPing(fn) {
    this.onPingFns.push(fn);
  }

  on(event, fn) {
    (this.handlers[event] ||= []).push(fn);
  }

  /** Emits `event` with `payload`; with `ack`, the reply (or `null` on timeout) goes to it. */
  emit(event, payload, ack) {
    if (!this.connected) return false;
    const data = JSON.stringify([event, payload]);
    if (!ack) {
      this.ws.send(`42${data}`);
      return true;
    }
    const id = this.nextAckId++;
    const timer = setTimeout(() => {
      if (this.acks.delete(id)) ack(null);
    }, this.ackTimeoutMs);
    this.acks.set(id, { ack, timer, sentAt: Date.now() });
    this.ws.send(`42${id}${data}`);
    return true;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    // Socket.IO disconnect (41), then the websocket itself.
    if (this.connected) this.ws.send('41');
    this.ws.close();
  }

  receive(frame) {
    switch (frame[0]) {
      case '0': // Engine.IO open: the handshake; now connect the namespace with our auth.
        this.handshake = JSON.parse(frame.slice(1));
        this.ws.send(`40${JSON.stringify(this.auth)}`);
        return;
      case '2': // ping: answer within pingTimeout or the server drops us
        this.ws.send('3');
        this.onPingFns.forEach((fn) => fn());
        return;
      case '1': // Engine.IO close
        this.ws.close();
        return;
      case '4':
        this.packet(frame.slice(1));
        return;
      default:
    }
  }

  packet(p) {
    const type = p[0];
    if (type === '0') {
      this.connected = true;
      this.onConnectFns.forEach((fn) => fn());
    } else if (type === '4') {
      let reason = 'connect_error';
      try {
        reason = JSON.parse(p.slice(1)).message ?? reason;
      } catch (_) {
        // keep the generic reason
      }
      this.fail(reason);
    } else if (type === '1') {
      this.ws.close();
    } else if (type === '2' || type === '3') {
      const m = /^(\d*)(\[.*)$/s.exec(p.slice(1));
      if (!m) return;
      const args = JSON.parse(m[2]);
      if (type === '3') {
        const pending = this.acks.get(Number(m[1]));
        if (!pending) return;
        this.acks.delete(Number(m[1]));
        clearTimeout(pending.timer);
        pending.ack(args[0]);
      } else {
        const [event, payload] = args;
        (this.handlers[event] || []).forEach((fn) => fn(payload));
      }
    }
  }

  fail(reason) {
    const fns = this.onErrorFns;
    this.onErrorFns = [];
    fns.forEach((fn) => fn(reason));
    this.close();
  }

  closing() {
    this.connected = false;
    this.closed = true;
    for (const { ack, timer } of this.acks.values()) {
      clearTimeout(timer);
      ack(null);
    }
    this.acks.clear();
    this.onCloseFns.forEach((fn) => fn());
  }
}
