// The custom metrics every scenario reports (k6 prints them in its summary; thresholds fail the
// run on them). Times are milliseconds.
import { Counter, Rate, Trend } from 'k6/metrics';

/** Websocket open → `session` event: the time a client waits before it can chat. */
export const connectTime = new Trend('confab_connect_time', true);
/** Share of connection attempts that reached `session` (connect_error or a broken socket: no). */
export const connected = new Rate('confab_connected');
/** `message:send` emit → its ack. */
export const ackRtt = new Trend('confab_ack_rtt', true);
/** Share of acks with `ok: true` (a timeout, `rate_limited` or any error: no). */
export const ackOk = new Rate('confab_ack_ok');
/** Sender's clock at send → a receiver's `message:new` (same machine, so one clock). */
export const deliveryLatency = new Trend('confab_delivery_latency', true);
export const messagesReceived = new Counter('confab_messages_received');
/** Engine.IO pings answered with a pong. */
export const pingsAnswered = new Counter('confab_pings_answered');
/** Sockets that closed before the scenario closed them. */
export const droppedSockets = new Counter('confab_dropped_sockets');
