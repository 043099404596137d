local p = ARGV[1]
local ops = {}

local function drop_typing(room, user)
  redis.call('ZREM', p .. 'typing:' .. room, user)
  redis.call('HDEL', p .. 'typing:' .. room .. ':names', user)
  redis.call('SREM', p .. 'typing-user:' .. user, room)
  redis.call('ZREM', p .. 'typing-expiry', room .. '\n' .. user)
  redis.call('DEL', p .. 'typing-bcast:' .. room .. ':' .. user)
end

function ops.stop_all(user)
  local rooms = redis.call('SMEMBERS', p .. 'typing-user:' .. user)
  for _, room in ipairs(rooms) do drop_typing(room, user) end
  return rooms
end

-- Redis's own clock, in milliseconds: every node's heartbeat and every judgement of one use it,
-- so the nodes' clocks never matter. (Redis 7 replicates a script's effects, so TIME is allowed.)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- How long a claim on a dead node lasts before another node may take over its reaping.
local CLAIM_MS = 30000

-- Returns {server now in ms, 1 when the node had to (re)register in `nodes`}.
function ops.heartbeat(node)
  local now = now_ms()
  redis.call('ZADD', p .. 'beats', now, node)
  redis.call('ZREM', p .. 'reaping', node)
  return {now, redis.call('SADD', p .. 'nodes', node)}
end

function ops.leave(node)
  redis.call('ZREM', p .. 'beats', node)
  redis.call('ZREM', p .. 'reaping', node)
  redis.call('DEL', p .. 'node:' .. node .. ':info')
  return redis.call('SREM', p .. 'nodes', node)
end

-- The nodes this caller claims for reaping. A node is dead when it has not beaten for `lapse` ms
-- of time in which the caller itself was beating: from its last beat, or from when the caller's
-- own beats started landing again (`since`), whichever is later. So nobody is judged over an
-- outage of Redis (or of the caller), however long, and a node never seen beating is judged from
-- `since`. The caller must have beaten within `gap` ms, or it judges nobody. Claiming removes the
-- node from `nodes` (its next beat, should it be alive after all, re-registers it and stops the
-- reaping) and records the claim in `reaping`; a claim that ran out (its reaper died midway)
-- is taken over.
function ops.claim_dead(me, since, lapse, gap)
  local now = now_ms()
  local mine = redis.call('ZSCORE', p .. 'beats', me)
  if not mine or now - tonumber(mine) > tonumber(gap) then return {} end
  since, lapse = tonumber(since), tonumber(lapse)
  local out = {}
  for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
    if node ~= me then
      local beat = tonumber(redis.call('ZSCORE', p .. 'beats', node) or 0)
      if now - math.max(beat, since) > lapse then
        redis.call('SREM', p .. 'nodes', node)
        redis.call('ZREM', p .. 'beats', node)
        redis.call('ZADD', p .. 'reaping', now + CLAIM_MS, node)
        table.insert(out, node)
      end
    end
  end
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', p .. 'reaping', '-inf', now)) do
    if node ~= me then
      redis.call('ZADD', p .. 'reaping', now + CLAIM_MS, node)
      table.insert(out, node)
    end
  end
  return out
end

function ops.connect(user, sock, node)
  local ukey = p .. 'user:' .. user
  local first = redis.call('HLEN', ukey) == 0
  redis.call('HSET', ukey, sock, node)
  redis.call('SADD', p .. 'node:' .. node .. ':sockets', user .. '\n' .. sock)
  redis.call('SADD', p .. 'online', user)
  return first and 1 or 0
end

function ops.disconnect(user, sock, node)
  local ukey = p .. 'user:' .. user
  local removed = redis.call('HDEL', ukey, sock) == 1
  redis.call('SREM', p .. 'node:' .. node .. ':sockets', user .. '\n' .. sock)
  local gone = redis.call('HLEN', ukey) == 0
  if gone then redis.call('SREM', p .. 'online', user) end
  return (removed and gone) and 1 or 0
end

-- Applies presence writes of `node` in order: `c`onnect or `d`isconnect, user, socket, repeated;
-- returns each one's result, as `connect` and `disconnect` do. A reconnect storm's thousands of
-- sockets cost a few scripts, not one round trip each.
function ops.presence_many(node, ...)
  local args = {...}
  local out = {}
  for i = 1, #args, 3 do
    if args[i] == 'c' then
      out[#out + 1] = ops.connect(args[i + 1], args[i + 2], node)
    else
      out[#out + 1] = ops.disconnect(args[i + 1], args[i + 2], node)
    end
  end
  return out
end

-- Returns {done, {{user, typing rooms...}...}}: one batch of `node`'s sockets. Popping makes a
-- racing second reaper see each socket at most once, and a field only goes while it still names
-- the node. `claimed`: a node this caller claimed as dead (as opposed to its own entries, left by
-- a previous process with its id); one that beat again since (it is back in `nodes`) is left
-- alone, and its own resync puts its entries right.
function ops.reap(node, batch, claimed)
  local nkey = p .. 'node:' .. node
  if claimed == '1' and redis.call('SISMEMBER', p .. 'nodes', node) == 1 then
    redis.call('ZREM', p .. 'reaping', node)
    return {1, {}}
  end
  local out = {}
  for _, m in ipairs(redis.call('SPOP', nkey .. ':sockets', tonumber(batch))) do
    local nl = string.find(m, '\n', 1, true)
    if nl then
      local user, sock = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
      local ukey = p .. 'user:' .. user
      if redis.call('HGET', ukey, sock) == node then
        redis.call('HDEL', ukey, sock)
        if redis.call('HLEN', ukey) == 0 then
          redis.call('SREM', p .. 'online', user)
          local entry = {user}
          for _, room in ipairs(ops.stop_all(user)) do table.insert(entry, room) end
          table.insert(out, entry)
        end
      end
    end
  end
  local done = redis.call('SCARD', nkey .. ':sockets') == 0
  if claimed == '1' then
    if done then
      redis.call('ZREM', p .. 'reaping', node)
      redis.call('DEL', nkey .. ':info')
    else
      redis.call('ZADD', p .. 'reaping', now_ms() + CLAIM_MS, node)
    end
  end
  return {done and 1 or 0, out}
end

function ops.typing_start(room, user, name, now, expiry, rebroadcast_ms)
  local rkey = p .. 'typing:' .. room
  local score = redis.call('ZSCORE', rkey, user)
  local active = score and tonumber(score) > tonumber(now)
  redis.call('ZADD', rkey, expiry, user)
  redis.call('HSET', rkey .. ':names', user, name)
  redis.call('SADD', p .. 'typing-user:' .. user, room)
  redis.call('ZADD', p .. 'typing-expiry', expiry, room .. '\n' .. user)
  local bkey = p .. 'typing-bcast:' .. room .. ':' .. user
  if not active then
    redis.call('SET', bkey, '1', 'PX', rebroadcast_ms)
    return 1
  end
  return redis.call('SET', bkey, '1', 'NX', 'PX', rebroadcast_ms) and 1 or 0
end

-- Reports an entry that ran out but is not claimed yet, as the local backplane does: removing
-- it takes it from the expiry sweep, so this caller owes its `typing:stop`.
function ops.typing_stop(room, user)
  local present = redis.call('ZSCORE', p .. 'typing:' .. room, user)
  drop_typing(room, user)
  return present and 1 or 0
end

-- Returns user, name, user, name...
function ops.typers(room, now)
  local rkey = p .. 'typing:' .. room
  local out = {}
  for _, u in ipairs(redis.call('ZRANGEBYSCORE', rkey, '(' .. now, '+inf')) do
    table.insert(out, u)
    table.insert(out, redis.call('HGET', rkey .. ':names', u) or u)
  end
  return out
end

-- Removing the global member is the claim, so one sweep owns each expiry; a room score past
-- now means a refresh won, and the member goes back.
function ops.take_expired(now, limit)
  local gkey = p .. 'typing-expiry'
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', gkey, '-inf', now, 'LIMIT', 0, limit)) do
    local nl = string.find(m, '\n', 1, true)
    if redis.call('ZREM', gkey, m) == 1 and nl then
      local room, user = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
      local score = redis.call('ZSCORE', p .. 'typing:' .. room, user)
      if score and tonumber(score) > tonumber(now) then
        redis.call('ZADD', gkey, score, m)
      elseif score then
        drop_typing(room, user)
        table.insert(out, m)
      end
    end
  end
  return out
end

-- The node's load for the operations API: field, value pairs, expiring with the heartbeat.
function ops.publish_stats(node, ttl_ms, ...)
  local key = p .. 'node:' .. node .. ':info'
  redis.call('HSET', key, ...)
  redis.call('PEXPIRE', key, ttl_ms)
  return 1
end

-- {{node, field, value, ...}, ...} for every registered node with a published load.
function ops.nodes_info()
  local out = {}
  for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
    local info = redis.call('HGETALL', p .. 'node:' .. node .. ':info')
    if #info > 0 then
      table.insert(info, 1, node)
      table.insert(out, info)
    end
  end
  return out
end

-- Keeps the newest security events: `json` first, the list trimmed to indexes 0..`last`.
function ops.record_security(json, last)
  redis.call('LPUSH', p .. 'security', json)
  redis.call('LTRIM', p .. 'security', 0, tonumber(last))
  return 1
end

return ops[ARGV[2]](unpack(ARGV, 3))
