//! The Lua scripts of [`RedisStore`](super::RedisStore), and the encoding
//! of their arguments.

use std::sync::LazyLock;

use redis::Cmd;

use crate::store::ChangeSet;

/// Shared Lua: metadata field names, number parsing, the state check, and
/// applying a change set. Concatenated in front of each script.
///
/// `state(key, now)` returns the metadata (`[1]` created, `[2]` expires
/// (the key's `PEXPIRETIME`, as text), `[3]` the same as a number, `[4]`
/// public id, and `links`, `idle`, `pc`, `h`: the raw link, idle-timeout,
/// cookie-persistence and horizon fields, `n`: how many metadata fields the
/// hash holds) or `nil` and a status: `0` absent or expired (an expired key
/// is deleted), `-1` corrupted (deleted). A key without a TTL, not a hash,
/// or without a readable creation time and well-formed public id (32
/// lowercase hex digits) is corrupted. A hash in the old layout
/// (`\xffcreated_at`, `\xffexpires_at`, `\xffpublic_id`) is converted
/// in place: every write script calls `state` first, so a session's next
/// write converts it.
///
/// No `TYPE`: `PEXPIRETIME` answers for a key of any type (`-2`: none),
/// and the `HMGET` runs under `pcall`, so a key of another type is an
/// error value, not a failed script.
///
/// `apply(key, meta, i)` applies the change set encoded in `ARGV` from index
/// `i` (`cleared`, the number of sets, the set pairs, then the removed
/// names) and returns how many items remain (`1` when it set any: at least
/// that one remains, and `HLEN` is spared).
///
/// `read_meta(i)` reads the meta arguments (see [`push_meta`]) from `ARGV`
/// at `i`; `plan(meta, mc, exp)` works out what a write does to the
/// session's links, lifetime and expiry, and whether the app must index
/// (or cover) first; `write_meta` and `set_expiry` store the result.
///
/// `pointer(prefix, public_id)` is the key of the session's move pointer,
/// `{prefix}moved:{<public id>}`.
macro_rules! lua_prelude {
    () => {
        r#"
local C, U = '\255c', '\255u'
local OC, OE, OP = '\255created_at', '\255expires_at', '\255public_id'
local L, I, PC, H = '\255l', '\255i', '\255p', '\255h'
local ENDED = 'ended'
local CH = 200
local function num(s)
  if type(s) == 'string' and #s > 0 and #s <= 16 and not s:find('%D') then
    return tonumber(s)
  end
  return nil
end
local function pid_ok(s)
  return type(s) == 'string' and #s == 32 and not s:find('[^0-9a-f]')
end
local function id_ok(s)
  return type(s) == 'string' and #s == 36 and not s:find('[^0-9a-f%-]')
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function state(key, now)
  local e = redis.call('PEXPIRETIME', key)
  if e == -2 then return nil, 0 end
  local m = redis.pcall('HMGET', key, C, U, L, I, PC, H)
  if e < 0 or m.err then
    redis.call('DEL', key)
    return nil, -1
  end
  if not m[1] and not m[2] then
    local o = redis.call('HMGET', key, OC, OP)
    if num(o[1]) and pid_ok(o[2]) and e > now then
      redis.call('HSET', key, C, o[1], U, o[2])
      redis.call('HDEL', key, OC, OE, OP)
    end
    m[1], m[2] = o[1], o[2]
  end
  if not num(m[1]) or not pid_ok(m[2]) then
    redis.call('DEL', key)
    return nil, -1
  end
  if e <= now then
    redis.call('DEL', key)
    return nil, 0
  end
  local n = 2
  for j = 3, 6 do if m[j] then n = n + 1 end end
  return {m[1], string.format('%d', e), e, m[2], links = m[3] or nil,
    idle = m[4] or nil, pc = m[5] or nil, h = num(m[6]) or 0, n = n}, 1
end
local function hset(key, from, to)
  for j = from, to, CH do
    redis.call('HSET', key, unpack(ARGV, j, math.min(j + CH - 1, to)))
  end
end
local function apply(key, meta, i)
  local n = meta.n
  local cleared = ARGV[i] == '1'
  if cleared then
    redis.call('DEL', key)
    redis.call('HSET', key, C, meta[1], U, meta[4])
    n = 2
  end
  local sets = tonumber(ARGV[i + 1])
  local first = i + 2
  local last = first + 2 * sets - 1
  hset(key, first, last)
  for j = last + 1, #ARGV, CH do
    redis.call('HDEL', key, unpack(ARGV, j, math.min(j + CH - 1, #ARGV)))
  end
  -- An item was just set: at least one remains, no need to count.
  if sets > 0 then return 1 end
  return redis.call('HLEN', key) - n
end
local function links_of(s)
  local t = {}
  if s then
    for n, v in string.gmatch(s, '([^\30\31]+)\31([^\30]*)') do t[n] = v end
  end
  return t
end
local function links_str(t)
  local names = {}
  for n in pairs(t) do names[#names + 1] = n end
  table.sort(names)
  local parts = {}
  for _, n in ipairs(names) do parts[#parts + 1] = n .. '\31' .. t[n] end
  return table.concat(parts, '\30')
end
local function flat(code, pid, t)
  local r = {code, pid}
  for n, v in pairs(t) do
    r[#r + 1] = n
    r[#r + 1] = v
  end
  return r
end
local function read_meta(i)
  local mc = {deadline = num(ARGV[i]), ready = num(ARGV[i + 1]),
    idle = ARGV[i + 2], pc = ARGV[i + 3], links = {}}
  local k = tonumber(ARGV[i + 4])
  for j = 0, k - 1 do
    mc.links[#mc.links + 1] = {ARGV[i + 5 + 2 * j], ARGV[i + 6 + 2 * j]}
  end
  mc.any = mc.idle ~= '' or mc.pc ~= '' or k > 0
  return mc, i + 5 + 2 * k
end
local function plan(meta, mc, exp_s)
  local cur = links_of(meta.links)
  local fin, removed, adds = {}, {}, false
  for n, v in pairs(cur) do fin[n] = v end
  for _, nv in ipairs(mc.links) do
    local n, v = nv[1], nv[2]
    local old = cur[n]
    if v == '' then
      if old then removed[n] = old end
      fin[n] = nil
    elseif old ~= v then
      adds = true
      if old then removed[n] = old end
      fin[n] = v
    end
  end
  local p = {cur = cur, fin = fin, removed = removed, adds = adds,
    linked = next(fin) ~= nil}
  local exp = tonumber(exp_s)
  if mc.idle ~= '' or exp > meta[3] then
    p.exp, p.exp_s = exp, exp_s
  else
    p.exp, p.exp_s = meta[3], meta[2]
  end
  p.h = math.max(meta.h, mc.ready or 0)
  p.need = p.linked and (adds or p.exp > p.h) and not mc.ready
  p.late = mc.deadline and now_ms() > mc.deadline
  return p
end
local function need_reply(meta, p)
  local r = flat(4, meta[4], p.cur)
  table.insert(r, 3, meta[2])
  return r
end
local function write_meta(key, meta, mc, p, cleared)
  if not (mc.any or cleared or mc.ready) then return end
  if p.linked then
    redis.call('HSET', key, L, links_str(p.fin), H, string.format('%d', p.h))
  else
    redis.call('HDEL', key, L, H)
  end
  local idle = mc.idle ~= '' and mc.idle or meta.idle
  if idle then redis.call('HSET', key, I, idle) end
  local pc = mc.pc ~= '' and mc.pc or meta.pc
  if pc then redis.call('HSET', key, PC, pc) end
end
local function set_expiry(key, meta, p, fresh)
  if fresh or p.exp ~= meta[3] then redis.call('PEXPIREAT', key, p.exp_s) end
end
local function cover(key, h)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now_ms() + ttl < tonumber(h) then
    redis.call('PEXPIREAT', key, h)
  end
end
local function pointer(prefix, pid)
  return prefix .. 'moved:{' .. pid .. '}'
end
"#
    };
}

/// `KEYS[1]` the session; `ARGV`: created_at, expires_at, public_id,
/// deadline (`''`: none), horizon (`''`: none), links (encoded, `''`:
/// none), idle timeout (`''`), cookie persistence (`''`), then item pairs.
/// Returns 1 when created, 0 when the key exists, -2 past the deadline.
const CREATE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local deadline = num(ARGV[4])
if deadline and now_ms() > deadline then return -2 end
redis.call('HSET', KEYS[1], C, ARGV[1], U, ARGV[3])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], L, ARGV[6], H, ARGV[5]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], I, ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], PC, ARGV[8]) end
hset(KEYS[1], 9, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"#
);

/// `KEYS[1]` the session; `ARGV`: now, expires_at, the meta arguments,
/// then the change set. Returns `{code, public id, name, value, …}`:
/// code 1 saved, 2 deleted (with every link it had), 0 gone, -1 corrupted
/// (deleted), -2 past the deadline, 4 index first (with the stored expiry
/// after the public id, then the current links). For 1 and 2 the links
/// listed are the index entries that are now stale.
const SAVE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local key = KEYS[1]
local meta, st = state(key, tonumber(ARGV[1]))
if not meta then return {st} end
local mc, ci = read_meta(3)
local p = plan(meta, mc, ARGV[2])
if p.need then return need_reply(meta, p) end
if p.late then return {-2} end
if apply(key, meta, ci) <= 0 then
  redis.call('DEL', key)
  for n, v in pairs(p.fin) do p.cur[n] = v end
  return flat(2, meta[4], p.cur)
end
write_meta(key, meta, mc, p, ARGV[ci] == '1')
set_expiry(key, meta, p, ARGV[ci] == '1')
return flat(1, meta[4], p.removed)
"#
);

/// The common write, alone: item sets only (no removal, no clear, no
/// link or lifetime change, at most [`FAST_SETS`] of them). `KEYS[1]` the
/// session; `ARGV`: now, expires_at, then the set pairs. Without the
/// prelude (defining its functions costs on every call) and with the
/// fewest commands: `PEXPIRETIME`, one `HMGET`, one `HSET`, and
/// `PEXPIREAT` when the expiry moves forward.
///
/// Returns 1 saved, 0 gone (no such key), or 5: "use [`SAVE_LUA`]", when
/// anything is unusual (no TTL, not a hash, the old layout, expired by the
/// app's clock, a linked session whose new expiry passes its horizon). So
/// it writes only to a key holding the current layout's metadata: an
/// unknown, ended or expired id is never written to, and what it does is
/// exactly what [`SAVE_LUA`] does for such a change set.
const SAVE_FAST_LUA: &str = r#"
local key = KEYS[1]
local e = redis.call('PEXPIRETIME', key)
if e == -2 then return 0 end
local m = redis.pcall('HMGET', key, '\255c', '\255u', '\255h')
if e < 0 or m.err or not m[1] or not m[2] or e <= tonumber(ARGV[1]) then
  return 5
end
local exp = tonumber(ARGV[2])
if m[3] and exp > (tonumber(m[3]) or 0) then return 5 end
redis.call('HSET', key, unpack(ARGV, 3))
if exp > e then redis.call('PEXPIREAT', key, ARGV[2]) end
return 1
"#;

/// The most item sets [`SAVE_FAST_LUA`] takes (its `unpack` puts them all
/// on Lua's stack at once); larger change sets go through [`SAVE_LUA`].
pub(super) const FAST_SETS: usize = 100;

/// `KEYS[1]` the session; `ARGV`: now, expires_at, the meta arguments
/// (no changes, only the readiness). Returns `{1}` alive, `{0}` gone,
/// `{-1}` corrupted (deleted), or 4 as [`SAVE_LUA`] does.
const TOUCH_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return {st} end
local mc = read_meta(3)
local p = plan(meta, mc, ARGV[2])
if p.need then return need_reply(meta, p) end
if p.exp > meta[3] then
  write_meta(KEYS[1], meta, mc, p, false)
  set_expiry(KEYS[1], meta, p, false)
end
return {1}
"#
);

/// Standalone only. `KEYS[1]` old, `KEYS[2]` new; `ARGV`: now, expires_at,
/// key prefix, the meta arguments, then the change set. Moves the session
/// and points its move pointer (named after the public id read from the
/// hash) at the new id, expiring with the moved session (or its index
/// horizon, whichever is later). Returns `{code, …}` as [`SAVE_LUA`]: 1
/// moved, 2 deleted, 0 gone, 3 collision, -1 corrupted (deleted), -2 late,
/// 4 index first.
const CYCLE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {3} end
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return {st} end
local mc, ci = read_meta(4)
local p = plan(meta, mc, ARGV[2])
if p.need then return need_reply(meta, p) end
if p.late then return {-2} end
redis.call('RENAME', KEYS[1], KEYS[2])
local ptr = pointer(ARGV[3], meta[4])
if apply(KEYS[2], meta, ci) <= 0 then
  redis.call('DEL', KEYS[2])
  redis.call('DEL', ptr)
  for n, v in pairs(p.fin) do p.cur[n] = v end
  return flat(2, meta[4], p.cur)
end
write_meta(KEYS[2], meta, mc, p, ARGV[ci] == '1')
set_expiry(KEYS[2], meta, p, ARGV[ci] == '1')
local new = string.sub(KEYS[2], #ARGV[3] + 2, -2)
local keep = p.exp
if p.linked and p.h > keep then keep = p.h end
redis.call('SET', ptr, new, 'PXAT', string.format('%d', keep))
return flat(1, meta[4], p.removed)
"#
);

/// Standalone only. `KEYS[1]` the session as loaded, `KEYS[2]` its move
/// pointer; `ARGV[1]` the key prefix. Deletes the session, the session the
/// pointer names (its latest id), and the pointer, atomically. Returns 1.
const END_LUA: &str = concat!(
    lua_prelude!(),
    r#"
redis.call('DEL', KEYS[1])
if redis.call('TYPE', KEYS[2])['ok'] == 'string' then
  local to = redis.call('GET', KEYS[2])
  if id_ok(to) then redis.call('DEL', ARGV[1] .. '{' .. to .. '}') end
end
redis.call('DEL', KEYS[2])
return 1
"#
);

/// Cluster `cycle`, step 1. `KEYS[1]` the old session, `KEYS[2]` its
/// "taken" note (same slot); `ARGV`: now, how long the note lives.
/// Returns `{expiry, the whole hash}` (the expiry from the key's TTL;
/// and deletes the key, leaving the note, the
/// public id, for [`DROP_LUA`], when the session has links: only those
/// can be ended by the registry), or 0 gone, -1 corrupted.
const TAKE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return st end
local all = redis.call('HGETALL', KEYS[1])
-- A write Redis refuses under OOM (maxmemory + noeviction) before anything
-- is deleted: on a full Redis the move fails here, with the session intact,
-- instead of after it left its old slot. (A script's first such write is
-- the one Redis checks.)
redis.call('HSET', KEYS[1], '\255taking', '1')
redis.call('DEL', KEYS[1])
if meta.links then redis.call('SET', KEYS[2], meta[4], 'PX', ARGV[2]) end
return {meta[3], all}
"#
);

/// Cluster `cycle`, step 3. `KEYS[1]` the move pointer; `ARGV`: the new
/// id, the moved session's expiry (or index horizon). Points the pointer at
/// the new id unless a logout marked it ended. Returns 1 set, 0 ended.
const POINT_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' and redis.call('GET', KEYS[1]) == ENDED then return 0 end
if t ~= 'none' and t ~= 'string' then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"#
);

/// Cluster `end` of a session that was still under its loaded id.
/// `KEYS[1]` the move pointer; `ARGV[1]` that id. Deletes the pointer if
/// it names that id (it is then garbage). Returns 1 deleted, 0 kept.
const UNPOINT_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#
);

/// The index step, for one link. `KEYS[1]` the index (a sorted set);
/// `ARGV`: the public id, the score (the app's time of this write), the
/// horizon. Adds (or refreshes) the entry and makes the key live at least
/// until the horizon. Returns 1.
const INDEX_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'zset' then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
cover(KEYS[1], ARGV[3])
return 1
"#
);

/// The index step, for the move pointer. `KEYS[1]` the pointer; `ARGV`:
/// the session's id, the horizon, `1` to force (a new session). Points it at the id (when absent) and
/// makes it live at least until the horizon. Returns 1 done, 0 ended (a
/// logout marked it), 2 it names another id (a move took the session).
const PIN_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' then
  local v = redis.call('GET', KEYS[1])
  if v == ENDED then return 0 end
  if v ~= ARGV[1] and id_ok(v) and ARGV[3] ~= '1' then return 2 end
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
cover(KEYS[1], ARGV[2])
return 1
"#
);

/// Pruning. `KEYS[1]` an index; `ARGV`: the cutoff, then public ids.
/// Removes each entry whose score (its latest index write) is older than
/// the cutoff: one written later belongs to a write that may still land.
/// Returns how many were removed.
const PRUNE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local cutoff, n = tonumber(ARGV[1]), 0
for j = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[j])
  if s and tonumber(s) < cutoff then
    n = n + redis.call('ZREM', KEYS[1], ARGV[j])
  end
end
return n
"#
);

/// Ending a session by its key, on Cluster, after its pointer was marked
/// ended. `KEYS[1]` the session, `KEYS[2]` its "taken" note; `ARGV[1]` its
/// public id. Deletes it if it holds that public id. Returns `{1, links}`
/// (the encoded links field, `''` for none) when deleted, `{1, ''}` when a
/// `cycle` took it and has not pointed the pointer yet (it will find the
/// mark, so the session is ended), `{0}` otherwise.
const DROP_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  if redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[1] then
    return {1, ''}
  end
  return {0}
end
local m = redis.call('HMGET', KEYS[1], U, L, OP)
if (m[1] or m[3]) ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
return {1, m[2] or ''}
"#
);

/// Standalone only: ending a session by its public id. `KEYS[1]` the move
/// pointer; `ARGV`: the key prefix, the public id, and `1` to end it only
/// if it holds a link (the registry's `end`: a session that has a pointer
/// only because it was cycled is not the registry's; its pointer and the
/// session are then left alone). Deletes the pointer and the session it
/// names (when it holds that public id), atomically (so a `cycle` runs
/// wholly before or after). Returns as [`DROP_LUA`].
const END_PUBLIC_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return {0} end
local to = redis.call('GET', KEYS[1])
if not id_ok(to) then redis.call('DEL', KEYS[1]) return {0} end
local key = ARGV[1] .. '{' .. to .. '}'
if redis.call('TYPE', key)['ok'] ~= 'hash' then redis.call('DEL', KEYS[1]) return {0} end
local m = redis.call('HMGET', key, U, L, OP)
if (m[1] or m[3]) ~= ARGV[2] then redis.call('DEL', KEYS[1]) return {0} end
if ARGV[3] == '1' and (not m[2] or m[2] == '') then return {0} end
redis.call('DEL', KEYS[1])
redis.call('DEL', key)
return {1, m[2] or ''}
"#
);

/// Cluster only: whether the session under `KEYS[1]` (with its "taken"
/// note `KEYS[2]`, same slot) is the linked session `ARGV[1]`, or one a
/// cycle is carrying (the note is left for linked sessions only). `1` or
/// `0`.
const IS_LINKED_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  if redis.call('TYPE', KEYS[2])['ok'] == 'string'
    and redis.call('GET', KEYS[2]) == ARGV[1] then
    return 1
  end
  return 0
end
local m = redis.call('HMGET', KEYS[1], U, L, OP)
if (m[1] or m[3]) == ARGV[1] and m[2] and m[2] ~= '' then return 1 end
return 0
"#
);

/// The value a cluster `end` leaves in a move pointer: "this session was
/// ended; a move still in flight must not point here".
pub(super) const ENDED: &str = "ended";

/// A script and its SHA-1, for `EVALSHA`.
pub(super) struct Lua {
    pub(super) code: &'static str,
    pub(super) sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

pub(super) struct Scripts {
    pub(super) create: Lua,
    pub(super) save: Lua,
    pub(super) save_fast: Lua,
    pub(super) touch: Lua,
    pub(super) cycle: Lua,
    pub(super) end: Lua,
    pub(super) take: Lua,
    pub(super) point: Lua,
    pub(super) unpoint: Lua,
    pub(super) index: Lua,
    pub(super) pin: Lua,
    pub(super) prune: Lua,
    pub(super) drop: Lua,
    pub(super) end_public: Lua,
    pub(super) is_linked: Lua,
}

impl Scripts {
    /// Every script, for `SCRIPT LOAD`.
    pub(super) fn all(&self) -> [&Lua; 15] {
        [
            &self.create,
            &self.save,
            &self.save_fast,
            &self.touch,
            &self.cycle,
            &self.end,
            &self.take,
            &self.point,
            &self.unpoint,
            &self.index,
            &self.pin,
            &self.prune,
            &self.drop,
            &self.end_public,
            &self.is_linked,
        ]
    }
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: Lua::new(CREATE_LUA),
    save: Lua::new(SAVE_LUA),
    save_fast: Lua::new(SAVE_FAST_LUA),
    touch: Lua::new(TOUCH_LUA),
    cycle: Lua::new(CYCLE_LUA),
    end: Lua::new(END_LUA),
    take: Lua::new(TAKE_LUA),
    point: Lua::new(POINT_LUA),
    unpoint: Lua::new(UNPOINT_LUA),
    index: Lua::new(INDEX_LUA),
    pin: Lua::new(PIN_LUA),
    prune: Lua::new(PRUNE_LUA),
    drop: Lua::new(DROP_LUA),
    end_public: Lua::new(END_PUBLIC_LUA),
    is_linked: Lua::new(IS_LINKED_LUA),
});

/// What the app did before a write that needs the index first: the index
/// step's deadline for the write (milliseconds, by the app's clock when
/// the step began, plus [`link_window`](super::RedisStore::link_window))
/// and the horizon the index keys and pointer now reach.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ready {
    pub(super) deadline: u64,
    pub(super) horizon: u64,
}

/// Appends the meta arguments to a script's `ARGV`: deadline and horizon
/// (`''` when not [`Ready`]), the idle timeout in milliseconds (`''`: no
/// change), the cookie persistence (`'1'`/`'0'`, `''`: no change), the
/// number of link changes, then each as name and value (`''` unlinks).
pub(super) fn push_meta(cmd: &mut Cmd, changes: Option<&ChangeSet>, ready: Option<Ready>) {
    match ready {
        Some(r) => cmd.arg(r.deadline).arg(r.horizon),
        None => cmd.arg("").arg(""),
    };
    let idle = changes.and_then(ChangeSet::idle_timeout);
    match idle {
        Some(t) => cmd.arg(super::hash::duration_millis(t)),
        None => cmd.arg(""),
    };
    match changes.and_then(ChangeSet::persistent_cookie) {
        Some(p) => cmd.arg(if p { "1" } else { "0" }),
        None => cmd.arg(""),
    };
    let links: Vec<(&str, Option<&str>)> = changes.map(|c| c.links().collect()).unwrap_or_default();
    cmd.arg(links.len());
    for (n, v) in links {
        cmd.arg(n).arg(v.unwrap_or(""));
    }
}

/// Appends a change set to a script's `ARGV`: cleared, the number of sets,
/// the set pairs, then the removed names (the layout `apply` reads).
pub(super) fn push_changes(cmd: &mut Cmd, changes: &ChangeSet) {
    cmd.arg(if changes.cleared() { "1" } else { "0" });
    cmd.arg(changes.iter().filter(|(_, v)| v.is_some()).count());
    for (k, v) in changes.iter() {
        if let Some(v) = v {
            cmd.arg(k).arg(v);
        }
    }
    for (k, v) in changes.iter() {
        if v.is_none() {
            cmd.arg(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_encoded_sets_then_removals() {
        let mut c = ChangeSet::new();
        c.set("b", "2");
        c.remove("a");
        c.set("c", "3");
        let mut cmd = Cmd::new();
        push_changes(&mut cmd, &c);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(a) => Some(a.to_vec()),
                _ => None,
            })
            .collect();
        let want: Vec<&[u8]> = vec![b"0", b"2", b"b", b"2", b"c", b"3", b"a"];
        assert_eq!(args, want);
    }

    #[test]
    fn the_ended_mark_is_not_an_id() {
        assert!(ENDED.parse::<crate::SessionId>().is_err());
    }
}
