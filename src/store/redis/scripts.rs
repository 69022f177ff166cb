//! The Lua scripts of [`RedisStore`](super::RedisStore), and the encoding
//! of their arguments.

use std::sync::LazyLock;

use redis::Cmd;

use crate::store::ChangeSet;

/// Shared Lua: metadata field names, number parsing, the state check, and
/// applying a change set. Concatenated in front of each script.
///
/// `state(key, now)` returns the metadata `{created, expires, expires_num,
/// public_id}` or `nil` and a status: `0` absent or expired (an expired key
/// is deleted), `-1` corrupted (deleted). A hash without a well-formed
/// public id (32 lowercase hex digits) is corrupted.
///
/// `apply(key, meta, i)` applies the change set encoded in `ARGV` from index
/// `i` (`cleared`, the number of sets, the set pairs, then the removed
/// names) and returns how many items remain.
///
/// `pointer(prefix, public_id)` is the key of the session's move pointer,
/// `{prefix}moved:{<public id>}`.
macro_rules! lua_prelude {
    () => {
        r#"
local C, E, P = '\255created_at', '\255expires_at', '\255public_id'
local META = 3
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
local function state(key, now)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return nil, 0 end
  if t ~= 'hash' then
    redis.call('DEL', key)
    return nil, -1
  end
  local m = redis.call('HMGET', key, C, E, P)
  local e = num(m[2])
  if not num(m[1]) or not e or not pid_ok(m[3]) then
    redis.call('DEL', key)
    return nil, -1
  end
  if e <= now then
    redis.call('DEL', key)
    return nil, 0
  end
  return {m[1], m[2], e, m[3]}, 1
end
local function hset(key, from, to)
  for j = from, to, CH do
    redis.call('HSET', key, unpack(ARGV, j, math.min(j + CH - 1, to)))
  end
end
local function apply(key, meta, i)
  if ARGV[i] == '1' then
    redis.call('DEL', key)
    redis.call('HSET', key, C, meta[1], E, meta[2], P, meta[4])
  end
  local first = i + 2
  local last = first + 2 * tonumber(ARGV[i + 1]) - 1
  hset(key, first, last)
  for j = last + 1, #ARGV, CH do
    redis.call('HDEL', key, unpack(ARGV, j, math.min(j + CH - 1, #ARGV)))
  end
  return redis.call('HLEN', key) - META
end
local function expire(key, meta, exp, exp_num)
  if exp_num > meta[3] then
    redis.call('HSET', key, E, exp)
    redis.call('PEXPIREAT', key, exp)
    return exp
  end
  redis.call('PEXPIREAT', key, meta[2])
  return meta[2]
end
local function pointer(prefix, pid)
  return prefix .. 'moved:{' .. pid .. '}'
end
"#
    };
}

/// `KEYS[1]` the session; `ARGV`: created_at, expires_at, public_id, then
/// item pairs. Returns 1 when created, 0 when the key exists.
const CREATE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], C, ARGV[1], E, ARGV[2], P, ARGV[3])
hset(KEYS[1], 4, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"#
);

/// `KEYS[1]` the session; `ARGV`: now, expires_at, then the change set.
/// Returns 1 saved, 2 deleted, 0 gone, -1 corrupted (deleted).
const SAVE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local key = KEYS[1]
local meta, st = state(key, tonumber(ARGV[1]))
if not meta then return st end
if apply(key, meta, 3) <= 0 then
  redis.call('DEL', key)
  return 2
end
expire(key, meta, ARGV[2], tonumber(ARGV[2]))
return 1
"#
);

/// `KEYS[1]` the session; `ARGV`: now, expires_at. Returns 1 alive, 0 gone,
/// -1 corrupted (deleted).
const TOUCH_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return st end
if tonumber(ARGV[2]) > meta[3] then
  redis.call('HSET', KEYS[1], E, ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
"#
);

/// Standalone only. `KEYS[1]` old, `KEYS[2]` new; `ARGV`: now, expires_at,
/// key prefix, then the change set. Moves the session and points its move
/// pointer (named after the public id read from the hash) at the new id,
/// expiring with the moved session. Returns 1 moved, 2 deleted, 0 gone,
/// 3 collision, -1 corrupted (deleted).
const CYCLE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return st end
redis.call('RENAME', KEYS[1], KEYS[2])
local ptr = pointer(ARGV[3], meta[4])
if apply(KEYS[2], meta, 4) <= 0 then
  redis.call('DEL', KEYS[2])
  redis.call('DEL', ptr)
  return 2
end
local exp = expire(KEYS[2], meta, ARGV[2], tonumber(ARGV[2]))
local new = string.sub(KEYS[2], #ARGV[3] + 2, -2)
redis.call('SET', ptr, new, 'PXAT', exp)
return 1
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

/// Cluster `cycle`, step 1. `KEYS[1]` the old session; `ARGV[1]` now.
/// Returns the whole hash (and deletes the key), or 0 gone, -1 corrupted.
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
return all
"#
);

/// Cluster `cycle`, step 3. `KEYS[1]` the move pointer; `ARGV`: the new
/// id, the moved session's expiry. Points the pointer at the new id unless
/// a logout marked it ended. Returns 1 set, 0 ended.
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
    pub(super) touch: Lua,
    pub(super) cycle: Lua,
    pub(super) end: Lua,
    pub(super) take: Lua,
    pub(super) point: Lua,
    pub(super) unpoint: Lua,
}

impl Scripts {
    /// Every script, for `SCRIPT LOAD`.
    pub(super) fn all(&self) -> [&Lua; 8] {
        [
            &self.create,
            &self.save,
            &self.touch,
            &self.cycle,
            &self.end,
            &self.take,
            &self.point,
            &self.unpoint,
        ]
    }
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: Lua::new(CREATE_LUA),
    save: Lua::new(SAVE_LUA),
    touch: Lua::new(TOUCH_LUA),
    cycle: Lua::new(CYCLE_LUA),
    end: Lua::new(END_LUA),
    take: Lua::new(TAKE_LUA),
    point: Lua::new(POINT_LUA),
    unpoint: Lua::new(UNPOINT_LUA),
});

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
