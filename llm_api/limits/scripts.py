"""The Lua scripts that count limits in Redis (see `store.RedisStore`).

Redis runs a script as one command: no other client's command runs in between, so a check and
the count that follows it can never be split by another process (no read-modify-write race).
Times are Redis's own clock (`TIME`), in milliseconds, so gateway processes whose clocks differ
still agree on every window.

A window is two keys: its log, a sorted set of entry ids scored by the time they were counted,
and its amounts, a hash of entry id -> amount with the field "~" holding their sum. In flight is
one key: a sorted set of lease ids scored by the time the lease expires.
"""

# Shared by the scripts: `now` in milliseconds.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

ADMIT = (
    _NOW
    + """
-- Count one call in every counter, or refuse it and count it in none.
-- KEYS: per window its log and its amounts, then per in-flight counter its leases.
-- ARGV: call id, window ms, lease ms, number of windows, then per window its limit and this
--   call's amount, then per in-flight counter its limit.
-- Returns per counter {used, fits (1/0), wait ms (0: fits now, -1: never), reset ms}, then
--   whether the call was counted (1/0). `used` includes this call when it was counted.
local id, period, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local windows = tonumber(ARGV[4])
local places = #KEYS - 2 * windows
local BATCH = 256  -- entries per command: unpack() has a limit on its arguments

local function expire(log, amounts)
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - period, 'LIMIT', 0, BATCH)
    if #old == 0 then break end
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', amounts, unpack(old))) do
      freed = freed + (tonumber(amount) or 0)
    end
    redis.call('ZREM', log, unpack(old))
    redis.call('HDEL', amounts, unpack(old))
    redis.call('HINCRBY', amounts, '~', -freed)
  end
  return tonumber(redis.call('HGET', amounts, '~') or 0)
end

-- Milliseconds until the oldest entries whose amounts reach `excess` have left the window.
local function wait(log, amounts, excess)
  local freed, start = 0, 0
  while true do
    local rows = redis.call('ZRANGE', log, start, start + BATCH - 1, 'WITHSCORES')
    if #rows == 0 then return period end
    local ids = {}
    for i = 1, #rows, 2 do ids[#ids + 1] = rows[i] end
    local values = redis.call('HMGET', amounts, unpack(ids))
    for i = 1, #ids do
      freed = freed + (tonumber(values[i]) or 0)
      if freed >= excess then return tonumber(rows[2 * i]) + period - now end
    end
    start = start + BATCH
  end
end

-- Milliseconds until the oldest entry leaves the window (0: the window is empty).
local function reset(log)
  local row = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if #row == 0 then return 0 end
  return tonumber(row[2]) + period - now
end

local used, fits, waits, admitted = {}, {}, {}, 1
for w = 1, windows do
  local log, amounts = KEYS[2 * w - 1], KEYS[2 * w]
  local limit, amount = tonumber(ARGV[3 + 2 * w]), tonumber(ARGV[4 + 2 * w])
  used[w], fits[w], waits[w] = expire(log, amounts), 1, 0
  if amount > limit then
    fits[w], waits[w] = 0, -1
  elseif used[w] + amount > limit then
    fits[w], waits[w] = 0, wait(log, amounts, used[w] + amount - limit)
  end
  if fits[w] == 0 then admitted = 0 end
end
for p = 1, places do
  local i = windows + p
  local leases = KEYS[2 * windows + p]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)  -- leases nobody renewed
  used[i], fits[i], waits[i] = redis.call('ZCARD', leases), 1, 0
  if used[i] >= tonumber(ARGV[4 + 2 * windows + p]) then
    fits[i], admitted = 0, 0
  end
end

if admitted == 1 then
  for w = 1, windows do
    local log, amounts, amount = KEYS[2 * w - 1], KEYS[2 * w], tonumber(ARGV[4 + 2 * w])
    redis.call('ZADD', log, now, id)
    redis.call('HSET', amounts, id, amount)
    redis.call('HINCRBY', amounts, '~', amount)
    -- Every entry is younger than the window: with no new one, the keys may go.
    redis.call('PEXPIRE', log, period)
    redis.call('PEXPIRE', amounts, period)
    used[w] = used[w] + amount
  end
  for p = 1, places do
    local leases = KEYS[2 * windows + p]
    redis.call('ZADD', leases, now + lease, id)
    redis.call('PEXPIRE', leases, lease)
    used[windows + p] = used[windows + p] + 1
  end
end

local out = {}
for i = 1, windows + places do
  local resets = 0
  if i <= windows then resets = reset(KEYS[2 * i - 1]) end
  for _, value in ipairs({used[i], fits[i], waits[i], resets}) do out[#out + 1] = value end
end
out[#out + 1] = admitted
return out
"""
)

RELEASE = """
-- Give back a call's places in flight, and correct its amount in its token windows.
-- KEYS: in-flight leases, then the amounts of each token window.
-- ARGV: call id, number of in-flight keys, the real amount ('' keeps the amount counted).
local id, places = ARGV[1], tonumber(ARGV[2])
for i = 1, places do
  redis.call('ZREM', KEYS[i], id)
end
if ARGV[3] ~= '' then
  local amount = tonumber(ARGV[3])
  for i = places + 1, #KEYS do
    local old = redis.call('HGET', KEYS[i], id)
    if old then  -- else the entry has already left the window
      redis.call('HSET', KEYS[i], id, amount)
      redis.call('HINCRBY', KEYS[i], '~', amount - tonumber(old))
    end
  end
end
return 0
"""

RENEW = (
    _NOW
    + """
-- Push leases a full lease ahead. KEYS: in-flight leases; ARGV: lease ms, then the lease id in
-- each key. Returns the (1-based) indexes of the leases that were gone: they had expired.
local lease, lapsed = tonumber(ARGV[1]), {}
for i = 1, #KEYS do
  local id = ARGV[i + 1]
  if redis.call('ZSCORE', KEYS[i], id) then
    redis.call('ZADD', KEYS[i], now + lease, id)
    redis.call('PEXPIRE', KEYS[i], lease)
  else
    lapsed[#lapsed + 1] = i
  end
end
return lapsed
"""
)
