package redisstore

import (
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The write script applies one record change and all of its index changes
// atomically, conditional on the record and its id-map entry being exactly
// what the client read (a compare-and-set on the bytes, which also guards
// against an iid being freed and reused in between). Every key it touches
// is in KEYS, and all of them share the shard's hash tag.
//
// The client computes what changes (record bytes, id and handle map
// values, tags added and removed, template references); the script only
// checks and applies, except for the tag tiers, which depend on other
// records and so are decided here: a tag's entries in this shard are in
// exactly one of a bucket field (tier 1), an intset (tier 2) or a bitmap
// (tier 3), and the script moves them between tiers as counts cross the
// thresholds.
//
// KEYS: 1 meta, 2 record bucket, 3 spill key, 4 universe, 5 id bucket,
// 6 tag directory, 7 bucket expiry, 8 template refcounts, 9 templates,
// 10 free list, 11 registration ids; then one key per handle op; then three
// keys (bucket, set, bitmap) per tag op.
//
// ARGV: 1 iid, 2 slot, 3 expected record ("" absent), 4 new record (""
// delete), 5 spill ("1" stores the record in its own key), 6 id field,
// 7 expected id value, 8 new id value ("" delete), 9 registration id (""
// none), 10 its expected marker, 11 its new marker ("" delete), 12 record
// bucket number, 13 new expiration in unix ms (0 none), 14 "1" to free the
// iid on delete, 15 handle ops, 16 template ops, 17 tag ops; then per handle
// op (field, +1|-1); per template op (hash, +1|-1, content); per tag op
// (6-byte field, 8-byte hash, +1|-1).
//
// It returns "ok", "conflict" when a precondition failed (the client reads
// again and retries), or "collision:<i>" when template op i has the hash of
// different content (the client then stores that template inline).
var applyScript = redis.NewScript(`
local T1MAX, T1MIN, T2MAX, T2MIN = ` + strconv.Itoa(tier1Max) + `, ` + strconv.Itoa(tier1Min) + `, ` + strconv.Itoa(tier2Max) + `, ` + strconv.Itoa(tier2Min) + `
local meta, rec, spill, univ, idb, dir, exq, trefs, tpl, free, rids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local iid, slot = tonumber(ARGV[1]), ARGV[2]
local nh, nt, ng = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])

local cur = redis.call('HGET', rec, slot)
local spilled = cur == '\255'
if spilled then cur = redis.call('GET', spill) end
cur = cur or ''
if cur ~= ARGV[3] then return 'conflict' end
if (redis.call('HGET', idb, ARGV[6]) or '') ~= ARGV[7] then return 'conflict' end
if ARGV[9] ~= '' and (redis.call('HGET', rids, ARGV[9]) or '') ~= ARGV[10] then return 'conflict' end
local a = 18 + 2 * nh
for i = 1, nt do
  if tonumber(ARGV[a + 1]) > 0 then
    local have = redis.call('HGET', tpl, ARGV[a])
    if have and have ~= ARGV[a + 2] then return 'collision:' .. i end
  end
  a = a + 3
end

-- the record
local new = ARGV[4]
if new == '' then
  redis.call('HDEL', rec, slot)
  if spilled then redis.call('DEL', spill) end
elseif ARGV[5] == '1' then
  redis.call('HSET', rec, slot, '\255')
  redis.call('SET', spill, new)
else
  redis.call('HSET', rec, slot, new)
  if spilled then redis.call('DEL', spill) end
end
if cur == '' and new ~= '' then
  redis.call('SETBIT', univ, iid, 1)
  redis.call('HINCRBY', meta, 'n', 1)
elseif cur ~= '' and new == '' then
  redis.call('SETBIT', univ, iid, 0)
  redis.call('HINCRBY', meta, 'n', -1)
  if ARGV[14] == '1' then redis.call('RPUSH', free, iid) end
end
if ARGV[8] == '' then redis.call('HDEL', idb, ARGV[6]) else redis.call('HSET', idb, ARGV[6], ARGV[8]) end
if ARGV[9] ~= '' then
  if ARGV[11] == '' then redis.call('HDEL', rids, ARGV[9]) else redis.call('HSET', rids, ARGV[9], ARGV[11]) end
end
local exp = tonumber(ARGV[13])
if exp > 0 then
  local c = redis.call('HGET', exq, ARGV[12])
  if not c or tonumber(c) > exp then redis.call('HSET', exq, ARGV[12], exp) end
end

-- handle map: a field holds a comma-separated iid list
local sid = tostring(iid)
a = 18
for i = 1, nh do
  local key, f, d = KEYS[11 + i], ARGV[a], tonumber(ARGV[a + 1])
  local v = redis.call('HGET', key, f)
  if d > 0 then
    if not v then
      redis.call('HSET', key, f, sid)
    else
      local found = false
      for x in string.gmatch(v, '[^,]+') do if x == sid then found = true end end
      if not found then redis.call('HSET', key, f, v .. ',' .. sid) end
    end
  elseif v then
    local out = {}
    for x in string.gmatch(v, '[^,]+') do if x ~= sid then out[#out + 1] = x end end
    if #out == 0 then redis.call('HDEL', key, f) else redis.call('HSET', key, f, table.concat(out, ',')) end
  end
  a = a + 2
end

-- templates: content-addressed and reference-counted
for i = 1, nt do
  local f, d = ARGV[a], tonumber(ARGV[a + 1])
  local n = redis.call('HINCRBY', trefs, f, d)
  if d > 0 and n == d then redis.call('HSET', tpl, f, ARGV[a + 2]) end
  if n <= 0 then
    redis.call('HDEL', trefs, f)
    redis.call('HDEL', tpl, f)
  end
  a = a + 3
end

-- tags
local packed = struct.pack('>I4', iid)
local function members_of_bitmap(k)
  local out = {}
  local len = redis.call('STRLEN', k)
  local off = 0
  while off < len do
    local chunk = redis.call('GETRANGE', k, off, off + 4095)
    for j = 1, #chunk do
      local c = string.byte(chunk, j)
      if c ~= 0 then
        for b = 0, 7 do
          if bit.band(c, bit.rshift(128, b)) ~= 0 then out[#out + 1] = (off + j - 1) * 8 + b end
        end
      end
    end
    off = off + 4096
  end
  return out
end
local kb = 11 + nh
for i = 1, ng do
  local small, set, bm = KEYS[kb + 1], KEYS[kb + 2], KEYS[kb + 3]
  local f6, f8, d = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  if redis.call('EXISTS', bm) == 1 then
    if d > 0 then
      if redis.call('SETBIT', bm, iid, 1) == 0 then redis.call('HINCRBY', dir, f8, 1) end
    elseif redis.call('SETBIT', bm, iid, 0) == 1 then
      local n = redis.call('HINCRBY', dir, f8, -1)
      if n <= 0 then
        redis.call('DEL', bm)
        redis.call('HDEL', dir, f8)
      elseif n <= T2MIN then
        for _, m in ipairs(members_of_bitmap(bm)) do redis.call('SADD', set, m) end
        redis.call('DEL', bm)
      end
    end
  elseif redis.call('EXISTS', set) == 1 then
    if d > 0 then
      if redis.call('SADD', set, iid) == 1 then
        local n = redis.call('HINCRBY', dir, f8, 1)
        if n > T2MAX then
          for _, m in ipairs(redis.call('SMEMBERS', set)) do redis.call('SETBIT', bm, tonumber(m), 1) end
          redis.call('DEL', set)
        end
      end
    elseif redis.call('SREM', set, iid) == 1 then
      local n = redis.call('HINCRBY', dir, f8, -1)
      if n <= 0 then
        redis.call('HDEL', dir, f8)
      elseif n <= T1MIN then
        local parts = {}
        for _, m in ipairs(redis.call('SMEMBERS', set)) do parts[#parts + 1] = struct.pack('>I4', tonumber(m)) end
        redis.call('HSET', small, f6, table.concat(parts))
        redis.call('DEL', set)
        redis.call('HDEL', dir, f8)
      end
    end
  else
    local v = redis.call('HGET', small, f6) or ''
    local at = 0
    for j = 1, #v, 4 do
      if string.sub(v, j, j + 3) == packed then at = j end
    end
    if d > 0 and at == 0 then
      if #v / 4 + 1 > T1MAX then
        for j = 1, #v, 4 do
          local m = struct.unpack('>I4', v, j)
          redis.call('SADD', set, m)
        end
        redis.call('SADD', set, iid)
        redis.call('HDEL', small, f6)
        redis.call('HSET', dir, f8, #v / 4 + 1)
      else
        redis.call('HSET', small, f6, v .. packed)
      end
    elseif d < 0 and at > 0 then
      v = string.sub(v, 1, at - 1) .. string.sub(v, at + 4)
      if v == '' then redis.call('HDEL', small, f6) else redis.call('HSET', small, f6, v) end
    end
  end
  kb = kb + 3
  a = a + 3
end
return 'ok'
`)

// The scan script reads one chunk of a resolution step in one shard, as a
// consistent snapshot: the driver's members (or a slice of the universe or
// driver bitmap) together with the index entries of the tags the
// expression probes, so that candidates can be pruned before their records
// are fetched.
//
// KEYS: 1 universe, 2-4 the driver's bucket, set and bitmap (ignored for
// a universe scan), then three keys per probe tag.
//
// ARGV: 1 "u" (universe) or "t" (tag driver), 2 driver field, 3 byte
// offset, 4 byte length, 5 probe count, then one field per probe.
//
// It returns {driver tier, driver data, driver bitmap length, then tier and
// data per probe}. Tier 0: no entries; 1 and 2: data is the members as
// packed big-endian uint32s; 3: data is the bitmap's bytes [offset,
// offset+length) for a universe or bitmap driver, or, for a tier 1 or 2
// driver, one '0'/'1' byte per driver member.
var scanScript = redis.NewScript(`
local mode, off, len, np = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function packset(k)
  local parts = {}
  for _, m in ipairs(redis.call('SMEMBERS', k)) do parts[#parts + 1] = struct.pack('>I4', tonumber(m)) end
  return table.concat(parts)
end
local function entries(small, set, bm, f)
  if redis.call('EXISTS', bm) == 1 then return 3, nil end
  if redis.call('EXISTS', set) == 1 then return 2, packset(set) end
  local v = redis.call('HGET', small, f)
  if v then return 1, v end
  return 0, ''
end
local out = {}
local dtier, ddata, dlen
if mode == 'u' then
  dtier, ddata, dlen = 3, redis.call('GETRANGE', KEYS[1], off, off + len - 1), redis.call('STRLEN', KEYS[1])
else
  dtier, ddata = entries(KEYS[2], KEYS[3], KEYS[4], ARGV[2])
  dlen = 0
  if dtier == 3 then
    ddata = redis.call('GETRANGE', KEYS[4], off, off + len - 1)
    dlen = redis.call('STRLEN', KEYS[4])
  end
end
out[1], out[2], out[3] = dtier, ddata, dlen
for i = 1, np do
  local small, set, bm = KEYS[4 + 3 * (i - 1) + 1], KEYS[4 + 3 * (i - 1) + 2], KEYS[4 + 3 * (i - 1) + 3]
  local t, data = entries(small, set, bm, ARGV[5 + i])
  if t == 3 then
    if dtier == 3 then
      data = redis.call('GETRANGE', bm, off, off + len - 1)
    else
      local bits = {}
      for j = 1, #ddata, 4 do
        local m = struct.unpack('>I4', ddata, j)
        bits[#bits + 1] = tostring(redis.call('GETBIT', bm, m))
      end
      data = table.concat(bits)
    end
  end
  out[#out + 1] = t
  out[#out + 1] = data
end
return out
`)
