// Shape checks for the objects of the wire contract, and small helpers built on the client events.

import assert from 'node:assert/strict';
import { call, RFC3339_RE, UUID_RE } from './client.mjs';

function has(obj, key, what) {
  assert.ok(Object.prototype.hasOwnProperty.call(obj, key), `${what} lacks "${key}": ${JSON.stringify(obj)}`);
}

/** Message: { id, roomId, seq, userId, name, text, clientId, replyTo, createdAt }. */
export function assertMessage(m, what = 'message') {
  assert.ok(m && typeof m === 'object', `${what} is not an object: ${JSON.stringify(m)}`);
  for (const k of ['id', 'roomId', 'seq', 'userId', 'name', 'text', 'clientId', 'replyTo', 'createdAt']) has(m, k, what);
  assert.match(m.id, UUID_RE, `${what}.id is not a UUID`);
  assert.match(m.roomId, UUID_RE, `${what}.roomId is not a UUID`);
  assert.ok(Number.isInteger(m.seq) && m.seq >= 1, `${what}.seq must be an integer >= 1: ${m.seq}`);
  assert.equal(typeof m.userId, 'string', `${what}.userId`);
  assert.equal(typeof m.name, 'string', `${what}.name`);
  assert.equal(typeof m.text, 'string', `${what}.text`);
  assert.ok(m.clientId === null || typeof m.clientId === 'string', `${what}.clientId must be a string or null`);
  assert.ok(m.replyTo === null || typeof m.replyTo === 'string', `${what}.replyTo must be a string or null`);
  assert.match(m.createdAt, RFC3339_RE, `${what}.createdAt is not RFC 3339`);
  assert.ok(!Number.isNaN(Date.parse(m.createdAt)), `${what}.createdAt does not parse`);
  return m;
}

/** Room: { id, name, kind, memberCount, lastSeq, unread, lastMessage }. */
export function assertRoom(r, what = 'room') {
  assert.ok(r && typeof r === 'object', `${what} is not an object: ${JSON.stringify(r)}`);
  for (const k of ['id', 'name', 'kind', 'memberCount', 'lastSeq', 'unread', 'lastMessage']) has(r, k, what);
  assert.match(r.id, UUID_RE, `${what}.id is not a UUID`);
  assert.equal(typeof r.name, 'string', `${what}.name`);
  assert.ok(['public', 'private', 'direct'].includes(r.kind), `${what}.kind: ${r.kind}`);
  for (const k of ['memberCount', 'lastSeq', 'unread']) {
    assert.ok(Number.isInteger(r[k]) && r[k] >= 0, `${what}.${k} must be a non-negative integer: ${r[k]}`);
  }
  if (r.lastMessage !== null) assertMessage(r.lastMessage, `${what}.lastMessage`);
  if (r.lastSeq === 0) assert.equal(r.lastMessage, null, `${what}.lastMessage must be null when lastSeq is 0`);
  else assert.equal(r.lastMessage?.seq, r.lastSeq, `${what}.lastMessage.seq must equal lastSeq`);
  return r;
}

/** Member: { userId, name, online }. */
export function assertMember(m, what = 'member') {
  for (const k of ['userId', 'name', 'online']) has(m, k, what);
  assert.equal(typeof m.userId, 'string');
  assert.equal(typeof m.name, 'string');
  assert.equal(typeof m.online, 'boolean', `${what}.online must be a boolean`);
  return m;
}

let roomCounter = 0;

/** Creates a room with `socket` and returns the Room. */
export async function createRoom(socket, { name, kind, members } = {}) {
  const payload = { name: name ?? `room ${++roomCounter}` };
  if (kind !== undefined) payload.kind = kind;
  if (members !== undefined) payload.members = members;
  const reply = await call(socket, 'room:create', payload);
  return assertRoom(reply.room, 'room:create reply room');
}

/** Sends `texts` one after another; returns the stored messages. */
export async function sendAll(socket, roomId, texts) {
  const out = [];
  for (const text of texts) {
    const reply = await call(socket, 'message:send', { roomId, text });
    out.push(assertMessage(reply.message, 'message:send reply message'));
  }
  return out;
}

export async function history(socket, payload) {
  const reply = await call(socket, 'message:history', payload);
  assert.ok(Array.isArray(reply.messages), `message:history messages must be an array: ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.hasMore, 'boolean', 'message:history hasMore must be a boolean');
  reply.messages.forEach((m, i) => assertMessage(m, `history[${i}]`));
  return reply;
}

export async function roomList(socket) {
  const reply = await call(socket, 'room:list', {});
  assert.ok(Array.isArray(reply.rooms), 'room:list rooms must be an array');
  reply.rooms.forEach((r, i) => assertRoom(r, `room:list[${i}]`));
  return reply.rooms;
}

export async function members(socket, roomId) {
  const reply = await call(socket, 'room:members', { roomId });
  assert.ok(Array.isArray(reply.members), 'room:members members must be an array');
  reply.members.forEach((m, i) => assertMember(m, `members[${i}]`));
  return reply.members;
}

export const seqs = (messages) => messages.map((m) => m.seq);
