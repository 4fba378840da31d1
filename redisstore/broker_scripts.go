package redisstore

import "github.com/redis/go-redis/v9"

// The broker's scripts. Each touches only the keys it is given, all of one
// hash tag, so that it runs on one Cluster node. The scripts that write
// more than one thing start with the "#!lua" shebang: Redis 7 then checks
// for out-of-memory before the script runs instead of failing it half way,
// which is what keeps them all-or-nothing (Redis does not roll a script
// back).
//
// A notification's hash (KEYS "note") has the fields:
//
//	spec   the Spec as JSON
//	st     its State
//	parts  Spec.Parts
//	at     Spec.At as 20-digit zero-padded unix nanoseconds, so that
//	       scripts compare instants exactly as strings
//	dl     Spec.Deadline in unix nanoseconds (the de-duplication TTL)
//	t0 t1  Started and Ended in unix nanoseconds, once known
//	pd     parts done
//	tg ab  targets, and of them abandoned ones
//	c:<platform>|<outcome>  one count
//
// and its done parts are a bitmap (KEYS "parts") beside it.

// pushJobsLua is shared by enqueue and fire: it adds parts jobs of id to
// the stream, creating the stream and its group if they are gone (a
// FLUSHALL, or a stream deleted by hand), and trims entries older than
// minid: those of notifications whose outcome has expired.
const pushJobsLua = `
local function pushjobs(stream, group, id, parts, minid)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  end
  for p = 0, parts - 1 do
    if p == 0 then
      redis.call('XADD', stream, 'MINID', '~', minid, '*', 'n', id, 'p', p)
    else
      redis.call('XADD', stream, '*', 'n', id, 'p', p)
    end
  end
end
`

// enqueueScript stores a notification as Enqueued with its jobs.
//
// KEYS: 1 note, 2 stream. ARGV: 1 id, 2 spec, 3 parts, 4 at, 5 deadline,
// 6 ttl ms, 7 group, 8 minid.
// Returns 1, or 0 when the id exists.
var enqueueScript = redis.NewScript(`#!lua
` + pushJobsLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
pushjobs(KEYS[2], ARGV[7], ARGV[1], tonumber(ARGV[3]), ARGV[8])
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'st', 'Enqueued', 'parts', ARGV[3], 'at', ARGV[4], 'dl', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`)

// scheduleScript stores a notification as Scheduled, due at its score.
//
// KEYS: 1 note, 2 schedule zset. ARGV: 1 id, 2 spec, 3 parts, 4 at,
// 5 deadline, 6 ttl ms, 7 score (At in unix microseconds, rounded down).
// Returns 1, or 0 when the id exists.
var scheduleScript = redis.NewScript(`#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'st', 'Scheduled', 'parts', ARGV[3], 'at', ARGV[4], 'dl', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
return 1
`)

// fireScript fires the given candidates that are due: the client read
// them from the zset (by score, which is At rounded down to the
// microsecond); the script takes each one it can still remove from the
// zset, so that of concurrent callers exactly one fires it, and checks At
// to the nanosecond first.
//
// KEYS: 1 stream, 2 schedule zset, then the candidates' notes.
// ARGV: 1 group, 2 now (padded like at), 3 minid, then the candidates' ids.
// Returns the ids fired.
var fireScript = redis.NewScript(`#!lua
` + pushJobsLua + `
local fired = {}
for i = 4, #ARGV do
  local id, note = ARGV[i], KEYS[i - 1]
  local v = redis.call('HMGET', note, 'st', 'at', 'parts')
  if not v[1] then
    redis.call('ZREM', KEYS[2], id) -- expired: forget it
  elseif v[2] <= ARGV[2] and redis.call('ZREM', KEYS[2], id) == 1 and v[1] == 'Scheduled' then
    pushjobs(KEYS[1], ARGV[1], id, tonumber(v[3]), ARGV[3])
    redis.call('HSET', note, 'st', 'Enqueued')
    fired[#fired + 1] = id
  end
end
return fired
`)

// cancelScript cancels a scheduled notification.
//
// KEYS: 1 note, 2 schedule zset. ARGV: 1 id.
// Returns 1 cancelled, 0 not Scheduled, -1 unknown.
var cancelScript = redis.NewScript(`#!lua
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -1
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'st', 'Cancelled')
  return 1
end
return 0
`)

// startScript marks an Enqueued notification Processing.
//
// KEYS: 1 note. ARGV: 1 at (unix ns).
// Returns 1 started, 0 in another state, -1 unknown.
var startScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return -1 end
if st ~= 'Enqueued' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'Processing', 't0', ARGV[1])
return 1
`)

// reclaimScript takes over the jobs idle for at least min-idle, oldest
// first, with their attempt: the delivery count, which XREADGROUP set to 1
// and XCLAIM increments. XPENDING's IDLE filter finds them in one pass
// over the pending list (as long as the jobs in flight), where XAUTOCLAIM
// would need a call per ten entries when few are idle.
//
// KEYS: 1 stream. ARGV: 1 group, 2 consumer, 3 min-idle ms, 4 max.
// Returns {ref, notification, part, attempt} per claim.
var reclaimScript = redis.NewScript(`
local s, g, c, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local pend = redis.call('XPENDING', s, g, 'IDLE', idle, '-', '+', ARGV[4])
if #pend == 0 then return {} end
local ids, count = {}, {}
for i, p in ipairs(pend) do
  ids[i] = p[1]
  count[p[1]] = p[4]
end
local out, seen = {}, {}
for _, e in ipairs(redis.call('XCLAIM', s, g, c, idle, unpack(ids))) do
  if type(e) == 'table' and type(e[2]) == 'table' then
    seen[e[1]] = true
    local n, p
    local f = e[2]
    for j = 1, #f, 2 do
      if f[j] == 'n' then n = f[j + 1] elseif f[j] == 'p' then p = f[j + 1] end
    end
    out[#out + 1] = {e[1], n or '', p or '', count[e[1]] + 1}
  end
end
-- an id XCLAIM did not return was deleted from the stream (trimmed):
-- there is nothing to hand out, only the pending entry to drop
for _, id in ipairs(ids) do
  if not seen[id] then redis.call('XACK', s, g, id) end
end
return out
`)

// touchScript resets the idle time of the claims consumer still holds
// (XCLAIM with JUSTID does not count a delivery). A claim another
// consumer took over is left alone: touching it would take it back.
//
// KEYS: 1 stream. ARGV: 1 group, 2 consumer, then refs.
// Returns how many were touched.
var touchScript = redis.NewScript(`
local s, g, c = KEYS[1], ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  if #redis.call('XPENDING', s, g, ARGV[i], ARGV[i], 1, c) > 0 then
    redis.call('XCLAIM', s, g, c, 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// finishScript releases a job and, the first time its part finishes,
// records the part's counts; the last part sets the final state.
//
// KEYS: 1 stream, 2 note, 3 done-parts bitmap. ARGV: 1 group, 2 ref,
// 3 part, 4 at (unix ns), then per count: field, n, "1" if abandoned.
// Returns -1 unknown notification, -2 part out of range, 0 part already
// done, 1 recorded, 2 recorded and it was the last part.
var finishScript = redis.NewScript(`#!lua
local s, note, bits = KEYS[1], KEYS[2], KEYS[3]
redis.call('XACK', s, ARGV[1], ARGV[2])
redis.call('XDEL', s, ARGV[2])
local parts = redis.call('HGET', note, 'parts')
if not parts then return -1 end
parts = tonumber(parts)
local part = tonumber(ARGV[3])
if part < 0 or part >= parts then return -2 end
if redis.call('SETBIT', bits, part, 1) == 1 then return 0 end
local ttl = redis.call('PTTL', note)
if ttl > 0 then redis.call('PEXPIRE', bits, ttl) end
local tg, ab = 0, 0
for i = 5, #ARGV, 3 do
  local n = tonumber(ARGV[i + 1])
  redis.call('HINCRBY', note, ARGV[i], n)
  tg = tg + n
  if ARGV[i + 2] == '1' then ab = ab + n end
end
tg = redis.call('HINCRBY', note, 'tg', tg)
ab = redis.call('HINCRBY', note, 'ab', ab)
if redis.call('HINCRBY', note, 'pd', 1) < parts then return 1 end
local st = 'Completed'
if tg == 0 then st = 'NoTargetFound' elseif ab == tg then st = 'Abandoned' end
redis.call('HSET', note, 'st', st, 't1', ARGV[4])
return 2
`)

// dedupeScript decides one key's share of a Dedupe batch. The key is a
// hash of 8-byte handle hash → "part:attempt" of the attempt that last
// took it; a hash is taken (returned '1') when it is new, or when an
// earlier attempt of the same part took it. It reads and writes in chunks
// (HMGET and HSET with many arguments), far fewer calls than one per hash.
//
// KEYS: 1 dedupe hash. ARGV: 1 part, 2 attempt, 3 ttl ms, 4 the hashes
// packed. Returns one '0' or '1' per hash.
var dedupeScript = redis.NewScript(`
local key, part, att = KEYS[1], ARGV[1], tonumber(ARGV[2])
local val = part .. ':' .. ARGV[2]
local hs = ARGV[4]
local n = #hs / 8
local out, took = {}, {}
local i = 0
while i < n do
  local m = math.min(1000, n - i)
  local fs = {}
  for j = 1, m do fs[j] = string.sub(hs, (i + j - 1) * 8 + 1, (i + j) * 8) end
  local vs = redis.call('HMGET', key, unpack(fs))
  local set = {}
  for j = 1, m do
    local f, v, ok = fs[j], vs[j], false
    if not took[f] then
      if not v then
        ok = true
      else
        local p, a = string.match(v, '^(%d+):(%d+)$')
        ok = p == part and tonumber(a) < att
      end
    end
    if ok then
      took[f] = true
      set[#set + 1] = f
      set[#set + 1] = val
      out[i + j] = '1'
    else
      out[i + j] = '0'
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  i = i + m
end
redis.call('PEXPIRE', key, ARGV[3])
return table.concat(out)
`)

// feedbackScript appends events to the feedback stream and trims it to
// about keep entries and to those younger than ttl, by Redis's clock
// (stream ids are Redis times too).
//
// KEYS: 1 feedback stream. ARGV: 1 keep, 2 ttl ms, then events as JSON.
var feedbackScript = redis.NewScript(`
local s = KEYS[1]
for i = 3, #ARGV do
  redis.call('XADD', s, 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
local t = redis.call('TIME')
local minid = tonumber(t[1]) * 1000 - tonumber(ARGV[2])
if minid > 0 then
  redis.call('XTRIM', s, 'MINID', '~', string.format('%.0f', minid))
end
return #ARGV - 2
`)

// takeScript is a token bucket on Redis's clock, shared by every replica.
// Redis 7 replicates a script's effects rather than the script, so TIME
// may be followed by writes.
//
// KEYS: 1 bucket hash {tk tokens, ts last refill in unix µs}.
// ARGV: 1 rate per second, 2 burst, 3 n.
// Returns {taken, wait in µs when nothing was taken}.
var takeScript = redis.NewScript(`
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens, ts = tonumber(v[1]), tonumber(v[2])
if not tokens or not ts then tokens, ts = burst, now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000000) end
-- the epsilon forgives float rounding: a taker that slept the wait it was
-- told finds its token
local took = math.min(n, math.floor(tokens + 1e-9))
tokens = math.max(0, tokens - took)
redis.call('HSET', KEYS[1], 'tk', string.format('%.17g', tokens), 'ts', string.format('%.0f', now))
-- kept until it would be full again anyway, plus a margin
redis.call('PEXPIRE', KEYS[1], math.min(86400000, math.ceil(burst / rate * 1000) + 5000))
local wait = 0
if took == 0 then wait = math.max(1, math.ceil((1 - tokens) / rate * 1000000)) end
return {took, wait}
`)

// reapScript deletes the group's consumers that hold nothing and have
// not read for min-idle: replicas name their consumer afresh each run, and
// without this the group would keep every name it ever saw. A live
// consumer polls far more often than min-idle, and one deleted by mistake
// is recreated by its next read.
//
// KEYS: 1 stream. ARGV: 1 group, 2 min-idle ms. Returns how many it
// deleted.
var reapScript = redis.NewScript(`
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
  if f['pending'] == 0 and tonumber(f['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
`)

var brokerScripts = []*redis.Script{
	enqueueScript, scheduleScript, fireScript, cancelScript, startScript,
	reclaimScript, touchScript, finishScript, dedupeScript, feedbackScript, takeScript,
	reapScript,
}
