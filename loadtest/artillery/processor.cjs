// Artillery processor for chat.yml, and the preparation step that mints its tokens.
//
//   node processor.cjs prepare    # writes users.csv: userId, token, roomId (one line per VU)
//
// Preparation mints HS256 tokens ({ sub, name, exp }) from CONFAB_JWT_SECRET and creates ROOMS
// public rooms on CONFAB_URL (default http://localhost:8080) with socket.io-client; USERS lines
// (default 1000) are written, each user in one of the rooms. Artillery's socketio engine connects
// before the first step of a scenario runs, so the token has to be in a variable by then: the
// payload file gives each new VU its own line.
//
// During the run, `listen` times every `message:new` against the send time in its text
// (confab.delivery_latency) and `stamp` puts that time into the next message's text.
const { createHmac, randomBytes } = require('node:crypto');
const { writeFileSync } = require('node:fs');
const path = require('node:path');

function mint(secret, sub, ttlSeconds = 6 * 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, name: sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** Before each `message:send`: a text carrying the send time. */
function stamp(context, _events, done) {
  context.vars.sentAt = Date.now();
  context.vars.text = `art ${context.vars.sentAt} ${context.vars.userId}`;
  done();
}

/**
 * Once per VU, first: wait for `session` (the contract's first event: from then on the node has
 * its handlers in place; an event emitted between `connect` and `session` can go unanswered),
 * then time every message from the others as it arrives.
 */
function listen(context, events, done) {
  const socket = context.sockets[''];
  let ready = false;
  const go = (err) => {
    if (ready) return;
    ready = true;
    clearTimeout(timer);
    done(err);
  };
  const timer = setTimeout(() => go(new Error('no session event within 5 s')), 5000);
  // The engine counts every event it received; `session` is always the first.
  if (context.__receivedMessageCount > 0) go();
  else socket.once('session', () => go());
  socket.on('message:new', (m) => {
    const sentAt = Number(String(m.text).split(' ')[1]);
    if (m.roomId === context.vars.roomId && Number.isFinite(sentAt)) {
      events.emit('histogram', 'confab.delivery_latency', Date.now() - sentAt);
      events.emit('counter', 'confab.messages_received', 1);
    }
  });
  socket.on('disconnect', (reason) => {
    if (reason !== 'io client disconnect') events.emit('counter', 'confab.dropped_sockets', 1);
  });
}

async function prepare() {
  const { io } = require('socket.io-client');
  const secret = process.env.CONFAB_JWT_SECRET;
  if (!secret) throw new Error('set CONFAB_JWT_SECRET (the cluster secret) to mint tokens');
  const url = (process.env.CONFAB_URL || 'http://localhost:8080').replace(/\/$/, '');
  const users = Number(process.env.USERS || 1000);
  const roomCount = Number(process.env.ROOMS || 5);
  const run = process.env.USER_PREFIX || `art-${randomBytes(3).toString('hex')}`;
  const owner = io(url, { transports: ['websocket'], auth: { token: mint(secret, `${run}-owner`) }, reconnection: false });
  await new Promise((resolve, reject) => {
    owner.once('session', resolve);
    owner.once('connect_error', (e) => reject(new Error(`connect to ${url}: ${e.message}`)));
  });
  const rooms = [];
  for (let i = 0; i < roomCount; i += 1) {
    const reply = await owner.timeout(5000).emitWithAck('room:create', { name: `artillery ${run} ${i}`, kind: 'public' });
    if (!reply.ok) throw new Error(`room:create: ${JSON.stringify(reply)}`);
    rooms.push(reply.room.id);
  }
  owner.disconnect();
  const lines = ['userId,token,roomId'];
  for (let i = 0; i < users; i += 1) lines.push(`${run}-${i},${mint(secret, `${run}-${i}`)},${rooms[i % rooms.length]}`);
  const out = process.env.USERS_FILE || path.join(__dirname, 'users.csv');
  writeFileSync(out, `${lines.join('\n')}\n`);
  console.log(`wrote ${users} users in ${rooms.length} rooms to ${out}`);
}

module.exports = { listen, stamp, mint };

if (require.main === module && process.argv[2] === 'prepare') {
  prepare().catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
