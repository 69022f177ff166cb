//! [`RedisStore`]: sessions in Redis or Redis Cluster, shared by every app
//! instance that talks to the same server (feature `redis`).
//!
//! # Data model
//!
//! - **One hash per session**, under the key `{prefix}{<id>}`, e.g.
//!   `session:{0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1}`. The id sits inside a
//!   hash tag (`{…}`), so on Redis Cluster the whole session lives in one
//!   slot and every script below touches one slot only.
//! - **One field per item**, name and value stored verbatim: a 6 KB JWT goes
//!   in and comes back byte for byte, and `HGET session:{<id>} user_id` works
//!   from `redis-cli`.
//! - **Metadata in fields no item can have.** The session's creation time
//!   (the absolute timeout counts from it) and its expiry are kept in the
//!   fields `"\xffcreated_at"` and `"\xffexpires_at"` (decimal milliseconds
//!   since the Unix epoch). Their names start with the byte `0xFF`, which
//!   never occurs in UTF-8, and item names are Rust `&str`s: so no item name
//!   can ever collide with them, whatever the application stores.
//! - **The key's TTL carries the expiry**: `PEXPIREAT` to the session's
//!   `expires_at`, moved forward only. Redis forgets a session when it
//!   expires; no sweeper is needed.
//!
//! # Operations, and what each costs
//!
//! | Operation | Round trips | How |
//! |---|---|---|
//! | load | 1 | `HGETALL` |
//! | save (apply a change set) | 1 | a Lua script (`EVALSHA`) |
//! | create (insert-if-absent) | 1 | a Lua script: `EXISTS`, then `HSET` + `PEXPIREAT` |
//! | touch (idle refresh) | 1 | a Lua script: `PEXPIREAT` only if it moves forward |
//! | delete | 1 | `DEL` |
//! | cycle, standalone | 1 | a Lua script: check, `RENAME`, apply, expire |
//! | cycle, Cluster | 2 | take the old session (script), create the new one (script) |
//!
//! So a request that only reads costs one round trip, and a request that
//! writes costs two (load, then save). Scripts are sent as `EVALSHA`; when
//! the server does not know the script (first use, or after a restart), the
//! store falls back to `EVAL` with the script's text, which also caches it.
//! [`connect`](RedisStore::connect) preloads the scripts with `SCRIPT LOAD`.
//!
//! Every script that writes checks first that the session still exists (and
//! has not expired), so a change set arriving after a logout or after
//! `cycle_id` is dropped ([`SaveOutcome::Gone`]) and never re-creates the
//! session. A change set that leaves no items deletes the key.
//!
//! # `cycle_id` on Redis Cluster: what is atomic
//!
//! On a standalone server, moving a session to a new id is one script: the
//! new key is checked to be free, the old key is renamed, the change set is
//! applied, and the expiry is set, all atomically.
//!
//! On Cluster the old and the new key live in different slots (usually on
//! different nodes), and no script can touch both. The move is done in two
//! steps, each atomic on its own:
//!
//! 1. **take**: one script on the old key checks the session, reads all of
//!    it and deletes it. From this moment the old id is dead: a request on
//!    it loads nothing, and a change set for it is dropped.
//! 2. **put**: the change set is applied in the app, and the session is
//!    created under the new id with insert-if-absent. If the new id is taken
//!    (a UUID v4 collision, which does not happen in practice), the session
//!    is put back under the old id and the layer retries with another id.
//!
//! The old id stops working before the layer sends the new cookie, and the
//! session is never readable under both ids. Between the two steps (one
//! round trip) the session is readable under neither id. If Redis fails
//! between the two steps (the second command errs or times out), the request
//! gets a `503` and the session is lost: the user has to sign in again. It
//! is never duplicated.
//!
//! # Failures
//!
//! Every command is bounded by a timeout ([`DEFAULT_COMMAND_TIMEOUT`],
//! [`RedisStore::with_command_timeout`]), so a Redis that hangs cannot hang
//! requests. A refused, dropped or timed-out connection, a cluster that is
//! down or being reconfigured, and a server still loading its data are
//! [`StoreErrorKind::Unavailable`] (the layer answers `503`, never an empty
//! session); other Redis errors are [`StoreErrorKind::Other`] (`500`).
//!
//! The standalone connection is a `redis::aio::ConnectionManager`: one
//! multiplexed connection that reconnects by itself. [`RedisStore::connect`]
//! tunes its reconnection so that, while Redis is down, requests fail fast
//! (in about half a second when the server refuses connections) instead of
//! waiting out a long backoff, and the first request after Redis is back
//! succeeds, without an app restart.
//! The Cluster connection (`redis::cluster_async::ClusterConnection`)
//! refreshes its view of the cluster and reconnects to nodes by itself.
//!
//! A timed-out write may still be applied by Redis later (the command was
//! sent). Every write is a change set or an expiry moved forward, so applying
//! it late does no harm beyond what it says.
//!
//! Corrupted data (a key of another type under a session's name, a hash
//! without readable metadata, an item that is not UTF-8) is treated as
//! absent: the key is deleted, a `tracing` warning is logged, and the
//! request starts with a fresh session.
//!
//! # Clocks
//!
//! Expiry times are computed by the app (milliseconds since the Unix epoch)
//! and compared by the app and by the scripts with the app's clock; only the
//! key's TTL (`PEXPIREAT`) is enforced by Redis's clock. Keep the clocks of
//! the app servers and of Redis in sync (NTP): a skew of a few seconds only
//! shifts when Redis reclaims the memory of an expired session.
//!
//! # Why redis-rs
//!
//! This store is built on [redis-rs](https://docs.rs/redis) (`redis` 1.x)
//! rather than fred. redis-rs is the most widely used Redis client for
//! Rust, so apps that already talk to Redis can hand their existing
//! connection to [`RedisStore::from_connection_manager`] or
//! [`RedisStore::from_cluster_connection`]. It has exactly the pieces this
//! store needs and nothing more: a multiplexed connection that reconnects by
//! itself (`ConnectionManager`), an async Cluster connection that takes the
//! same commands and replies (one code path for both), and script hashing
//! for `EVALSHA`; with its default features off it stays a small dependency.
//! fred is a fine client too, with connection pools, reconnect policies and
//! many more features, but it is a larger dependency and API than a session
//! store needs, and fewer apps already hold a fred client to share.
//!
//! [`SaveOutcome::Gone`]: crate::store::SaveOutcome::Gone
//! [`StoreErrorKind::Unavailable`]: crate::StoreErrorKind::Unavailable
//! [`StoreErrorKind::Other`]: crate::StoreErrorKind::Other

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::{now_millis, ChangeSet, CycleOutcome, Record, SaveOutcome, SessionStore};
use crate::error::StoreError;
use crate::id::SessionId;

/// The default bound on every Redis command: 2 seconds.
///
/// A command that gets no answer in time fails with
/// [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable), and
/// the layer answers `503`.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::redis::DEFAULT_COMMAND_TIMEOUT;
///
/// assert_eq!(DEFAULT_COMMAND_TIMEOUT.as_secs(), 2);
/// ```
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The default key prefix: `session:`. A session's key is
/// `session:{<id>}`.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::redis::DEFAULT_KEY_PREFIX;
///
/// assert_eq!(DEFAULT_KEY_PREFIX, "session:");
/// ```
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// The field holding the creation time. Starts with `0xFF`, which no UTF-8
/// string (so no item name) contains.
const CREATED_FIELD: &[u8] = b"\xffcreated_at";
/// The field holding the expiry time; see [`CREATED_FIELD`].
const EXPIRES_FIELD: &[u8] = b"\xffexpires_at";

/// Times are clamped to 2^53 - 1 ms (the year 285,000) so the scripts' Lua
/// numbers (doubles) hold them exactly.
const MAX_MILLIS: u64 = (1 << 53) - 1;

/// Reconnection of the standalone `ConnectionManager`: while Redis is down a
/// reconnection attempt gives up after a few hundred milliseconds (so
/// requests fail fast), and the next command starts a new one (so the first
/// requests after Redis is back succeed).
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_RETRIES: usize = 2;
/// How long one attempt to open a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared Lua: metadata field names, number parsing, the state check, and
/// applying a change set. Concatenated in front of each script.
///
/// `state(key, now)` returns the metadata `{created, expires, expires_num}`
/// or `nil` and a status: `0` absent or expired (an expired key is
/// deleted), `-1` corrupted (deleted).
///
/// `apply(key, meta, i)` applies the change set encoded in `ARGV` from index
/// `i` (`cleared`, the number of sets, the set pairs, then the removed
/// names) and returns how many items remain.
macro_rules! lua_prelude {
    () => {
        r#"
local C, E = '\255created_at', '\255expires_at'
local CH = 200
local function num(s)
  if type(s) == 'string' and #s > 0 and #s <= 16 and not s:find('%D') then
    return tonumber(s)
  end
  return nil
end
local function state(key, now)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return nil, 0 end
  if t ~= 'hash' then
    redis.call('DEL', key)
    return nil, -1
  end
  local m = redis.call('HMGET', key, C, E)
  local e = num(m[2])
  if not num(m[1]) or not e then
    redis.call('DEL', key)
    return nil, -1
  end
  if e <= now then
    redis.call('DEL', key)
    return nil, 0
  end
  return {m[1], m[2], e}, 1
end
local function hset(key, from, to)
  for j = from, to, CH do
    redis.call('HSET', key, unpack(ARGV, j, math.min(j + CH - 1, to)))
  end
end
local function apply(key, meta, i)
  if ARGV[i] == '1' then
    redis.call('DEL', key)
    redis.call('HSET', key, C, meta[1], E, meta[2])
  end
  local first = i + 2
  local last = first + 2 * tonumber(ARGV[i + 1]) - 1
  hset(key, first, last)
  for j = last + 1, #ARGV, CH do
    redis.call('HDEL', key, unpack(ARGV, j, math.min(j + CH - 1, #ARGV)))
  end
  return redis.call('HLEN', key) - 2
end
local function expire(key, meta, exp, exp_num)
  if exp_num > meta[3] then
    redis.call('HSET', key, E, exp)
    redis.call('PEXPIREAT', key, exp)
  else
    redis.call('PEXPIREAT', key, meta[2])
  end
end
"#
    };
}

/// `KEYS[1]` the session; `ARGV`: created_at, expires_at, then item pairs.
/// Returns 1 when created, 0 when the key exists.
const CREATE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], C, ARGV[1], E, ARGV[2])
hset(KEYS[1], 3, #ARGV)
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
/// then the change set. Returns 1 moved, 2 deleted, 0 gone, 3 collision,
/// -1 corrupted (deleted).
const CYCLE_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
local meta, st = state(KEYS[1], tonumber(ARGV[1]))
if not meta then return st end
redis.call('RENAME', KEYS[1], KEYS[2])
if apply(KEYS[2], meta, 3) <= 0 then
  redis.call('DEL', KEYS[2])
  return 2
end
expire(KEYS[2], meta, ARGV[2], tonumber(ARGV[2]))
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
redis.call('DEL', KEYS[1])
return all
"#
);

/// A script and its SHA-1, for `EVALSHA`.
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

struct Scripts {
    create: Lua,
    save: Lua,
    touch: Lua,
    cycle: Lua,
    take: Lua,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: Lua::new(CREATE_LUA),
    save: Lua::new(SAVE_LUA),
    touch: Lua::new(TOUCH_LUA),
    cycle: Lua::new(CYCLE_LUA),
    take: Lua::new(TAKE_LUA),
});

/// Sessions in Redis or Redis Cluster: one hash per session, change sets
/// applied by server-side scripts, expiry carried by the key's TTL.
///
/// Several app instances using the same Redis (and the same
/// [key prefix](Self::with_key_prefix)) share their sessions: a cookie made
/// by one works on every other. The semantics are those of the
/// [`MemoryStore`](crate::MemoryStore), so switching stores changes one
/// line. The [module docs](self) describe the data model, the scripts, the
/// failure behaviour, and what is atomic on Redis Cluster.
///
/// A cheap `Clone`: clones share the connection.
///
/// # Example
///
/// ```no_run
/// use tower_session_storage::{RedisStore, SessionLayer};
///
/// # async fn run() -> Result<(), tower_session_storage::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = SessionLayer::new(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    timeout: Duration,
}

#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.conn {
            Conn::Standalone(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("mode", &mode)
            .field("key_prefix", &&*self.prefix)
            .field("command_timeout", &self.timeout)
            .finish()
    }
}

impl RedisStore {
    /// Connects to a standalone Redis server (or a primary behind a proxy
    /// such as Sentinel-aware DNS).
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS when redis-rs is built with a TLS feature, or
    /// `redis+unix:///path`. Fails with
    /// [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable) when
    /// the server cannot be reached, and with `Other` for a malformed URL.
    ///
    /// The connection is a `redis::aio::ConnectionManager` that reconnects by
    /// itself; its reconnection is tuned to fail fast while Redis is down
    /// (2 retries, 50 to 500 ms apart, 1 s per connection attempt).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    /// let store = RedisStore::connect(&url).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::other(format!("invalid Redis URL for RedisStore::connect: {e}"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Every command is bounded by the store's own command timeout.
            .set_response_timeout(None);
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(map_err)?;
        let store = Self::from_connection_manager(manager);
        store.preload_scripts().await;
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes.
    ///
    /// The client discovers the other nodes and the slot map by itself, and
    /// follows resharding and failover. Each session's key carries a hash
    /// tag, so every operation but `cycle` touches one slot; see the
    /// [module docs](self#cycle_id-on-redis-cluster-what-is-atomic) for what
    /// `cycle` does on a cluster.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect_cluster(&[
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ])
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S]) -> Result<Self, StoreError> {
        let client = ClusterClientBuilder::new(urls.iter().map(AsRef::as_ref))
            .connection_timeout(CONNECT_TIMEOUT)
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(500)
            .build()
            .map_err(|e| {
                StoreError::other(format!(
                    "invalid Redis Cluster URLs for RedisStore::connect_cluster: {e}"
                ))
            })?;
        let conn = client.get_async_connection().await.map_err(map_err)?;
        let store = Self::from_cluster_connection(conn);
        store.preload_scripts().await;
        Ok(store)
    }

    /// A store on an existing standalone connection, for apps that already
    /// hold a `redis::aio::ConnectionManager` (from `redis` 1.x).
    ///
    /// The manager's own reconnection and timeout settings apply; the
    /// store's command timeout bounds every command in addition. Scripts
    /// are loaded on first use.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use redis::aio::ConnectionManager;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> redis::RedisResult<()> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let manager = ConnectionManager::new(client).await?;
    /// let store = RedisStore::from_connection_manager(manager.clone());
    /// // `manager` stays usable for the app's own commands.
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self {
            conn: Conn::Standalone(manager),
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// A store on an existing Redis Cluster connection
    /// (`redis::cluster_async::ClusterConnection` from `redis` 1.x).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use redis::cluster::ClusterClient;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> redis::RedisResult<()> {
    /// let client = ClusterClient::new(vec!["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])?;
    /// let conn = client.get_async_connection().await?;
    /// let store = RedisStore::from_cluster_connection(conn);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_cluster_connection(conn: ClusterConnection) -> Self {
        Self {
            conn: Conn::Cluster(conn),
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The prefix of every session key: a session's key is
    /// `{prefix}{<id>}`. Apps that share sessions must use the same prefix;
    /// apps that must not, different ones. The default is
    /// [`DEFAULT_KEY_PREFIX`] (`session:`).
    ///
    /// # Panics
    ///
    /// When the prefix contains `{` or `}`: Redis Cluster would hash the
    /// prefix's braces instead of the session id's, putting every session in
    /// one slot.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_key_prefix("myapp:session:");
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            !prefix.contains(['{', '}']),
            "RedisStore::with_key_prefix: the prefix {prefix:?} contains a brace; \
             Redis Cluster would hash it instead of the session id. Use a prefix without '{{' and '}}'"
        );
        self.prefix = Arc::from(prefix);
        self
    }

    /// The longest any Redis command may take before the operation fails
    /// with [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable)
    /// (the layer answers `503`). A `cycle` on Redis Cluster sends two
    /// commands, each bounded by it. The default is
    /// [`DEFAULT_COMMAND_TIMEOUT`] (2 seconds).
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: every command would fail.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_command_timeout(Duration::from_millis(500));
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "RedisStore::with_command_timeout: the timeout must be longer than zero"
        );
        self.timeout = timeout;
        self
    }

    /// The Redis key of session `id`: `{prefix}{<id>}`.
    fn key(&self, id: &SessionId) -> Vec<u8> {
        let id = id.encode();
        let mut key = Vec::with_capacity(self.prefix.len() + id.as_str().len() + 2);
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'{');
        key.extend_from_slice(id.as_str().as_bytes());
        key.push(b'}');
        key
    }

    /// Loads every script into the server's script cache (every primary, on
    /// a cluster), so the first `EVALSHA`s hit. Best effort: a failure only
    /// means the first use of a script falls back to `EVAL`.
    async fn preload_scripts(&self) {
        let s = &*SCRIPTS;
        for lua in [&s.create, &s.save, &s.touch, &s.cycle, &s.take] {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(lua.code);
            if let Err(e) = self.run(self.conn.query(&cmd)).await {
                tracing::debug!(error = %e, "could not preload a RedisStore script");
                return;
            }
        }
    }

    /// Runs one Redis operation under the command timeout.
    async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StoreError::unavailable(format!(
                "Redis did not answer within {:?} (RedisStore::with_command_timeout)",
                self.timeout
            ))),
        }
    }

    /// Runs `lua` with `EVALSHA`, falling back to `EVAL` when the server
    /// does not have it cached.
    async fn eval(
        &self,
        lua: &Lua,
        keys: &[&[u8]],
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&lua.sha).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        args(&mut cmd);
        self.run(async {
            match self.conn.query(&cmd).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(lua.code);
                    for arg in cmd.args_iter().skip(2) {
                        if let redis::Arg::Simple(a) = arg {
                            eval.arg(a);
                        }
                    }
                    self.conn.query(&eval).await
                }
                r => r,
            }
        })
        .await
    }

    /// Deletes a corrupted session's key and logs it. Never fails: the
    /// caller reports the session as absent either way.
    async fn drop_corrupted(&self, id: &SessionId, key: &[u8], reason: &str) {
        tracing::warn!(
            session = ?id,
            reason,
            "corrupted session data in Redis: treated as absent and deleted"
        );
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        if let Err(e) = self.run(self.conn.query(&cmd)).await {
            tracing::warn!(session = ?id, error = %e, "could not delete corrupted session data");
        }
    }

    /// Creates `record` under `key` if the key is free.
    async fn create_key(&self, key: &[u8], record: &Record) -> Result<bool, StoreError> {
        let v = self
            .eval(&SCRIPTS.create, &[key], |cmd| {
                cmd.arg(clamp(record.created_at))
                    .arg(clamp(record.expires_at));
                for (k, v) in record.items.iter() {
                    cmd.arg(k).arg(v);
                }
            })
            .await?;
        Ok(int(&v)? == 1)
    }

    async fn cycle_cluster(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> Result<CycleOutcome, StoreError> {
        let old_key = self.key(old);
        let taken = self
            .eval(&SCRIPTS.take, &[&old_key], |cmd| {
                cmd.arg(clamp(now_millis()));
            })
            .await?;
        let original = match taken {
            Value::Int(0) => return Ok(CycleOutcome::Gone),
            Value::Int(-1) => {
                warn_corrupted(old, "not a session hash");
                return Ok(CycleOutcome::Gone);
            }
            v => match parse_hash(v) {
                Parsed::Found(r) => r,
                Parsed::Absent => return Ok(CycleOutcome::Gone),
                Parsed::Corrupt(reason) => {
                    warn_corrupted(old, reason);
                    return Ok(CycleOutcome::Gone);
                }
            },
        };
        let mut items = original.items.clone();
        items.apply(changes);
        if items.is_empty() {
            return Ok(CycleOutcome::Deleted);
        }
        let moved = Record {
            items,
            created_at: original.created_at,
            expires_at: original.expires_at.max(expires_at),
            public_id: original.public_id,
        };
        if self.create_key(&self.key(new), &moved).await? {
            return Ok(CycleOutcome::Moved);
        }
        // The new id is taken: put the session back, unchanged, and let the
        // layer retry with another id. Nobody creates under `old` meanwhile
        // (ids are made fresh for every creation).
        if !self.create_key(&old_key, &original).await? {
            tracing::warn!(
                session = ?old,
                "RedisStore: could not restore a session after an id collision in cycle"
            );
        }
        Ok(CycleOutcome::Collision)
    }
}

impl Conn {
    /// Sends one command. On a standalone connection, a command refused
    /// because the connection could not be (re)established is sent once
    /// more: that first error also started a fresh reconnection, which
    /// succeeds at once when Redis is back. Nothing was sent the first time,
    /// so the retry cannot apply anything twice.
    async fn query(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Standalone(m) => {
                let mut m = m.clone();
                match cmd.query_async(&mut m).await {
                    Err(e) if e.is_connection_refusal() => cmd.query_async(&mut m).await,
                    r => r,
                }
            }
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// A Redis error as a store error: connection and cluster-availability
/// problems are `Unavailable` (503), the rest `Other` (500).
fn map_err(e: RedisError) -> StoreError {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::other(e)
    }
}

fn clamp(ms: u64) -> u64 {
    ms.min(MAX_MILLIS)
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(StoreError::other(format!(
            "unexpected reply from a RedisStore script: {other:?}"
        ))),
    }
}

fn warn_corrupted(id: &SessionId, reason: &str) {
    tracing::warn!(
        session = ?id,
        reason,
        "corrupted session data in Redis: treated as absent and deleted"
    );
}

/// A stored hash, read.
enum Parsed {
    /// No such key (an empty hash).
    Absent,
    Found(Record),
    Corrupt(&'static str),
}

/// Reads a session from an `HGETALL` reply (RESP2 array or RESP3 map).
fn parse_hash(v: Value) -> Parsed {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Parsed::Corrupt("odd number of hash fields");
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Nil => return Parsed::Absent,
        _ => return Parsed::Corrupt("not a hash"),
    };
    if pairs.is_empty() {
        return Parsed::Absent;
    }
    let (mut created, mut expires) = (None, None);
    let mut items: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            return Parsed::Corrupt("a hash field is not a string");
        };
        if k == CREATED_FIELD {
            created = parse_millis(&v);
        } else if k == EXPIRES_FIELD {
            expires = parse_millis(&v);
        } else {
            match (String::from_utf8(k), String::from_utf8(v)) {
                (Ok(k), Ok(v)) => items.push((k, v)),
                _ => return Parsed::Corrupt("an item is not UTF-8"),
            }
        }
    }
    let (Some(created_at), Some(expires_at)) = (created, expires) else {
        return Parsed::Corrupt("missing or unreadable metadata");
    };
    // Sorted first, so building `Items` appends instead of shifting.
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Parsed::Found(Record {
        items: items.into_iter().collect(),
        created_at,
        expires_at,
        // TODO(reliability): persist the public id in the hash.
        public_id: crate::PublicId::generate(),
    })
}

/// Strict decimal milliseconds: 1 to 16 ASCII digits.
fn parse_millis(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Appends a change set to a script's `ARGV`: cleared, the number of sets,
/// the set pairs, then the removed names (the layout `apply` reads).
fn push_changes(cmd: &mut Cmd, changes: &ChangeSet) {
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

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
        let key = self.key(id);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&key);
        let reply = match self.run(self.conn.query(&cmd)).await {
            Ok(v) => v,
            Err(e) if is_wrong_type(&e) => {
                self.drop_corrupted(id, &key, "the key is not a hash").await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match parse_hash(reply) {
            Parsed::Absent => Ok(None),
            // Expired by the app's clock: Redis's TTL removes the key.
            Parsed::Found(r) if r.expires_at <= now_millis() => Ok(None),
            Parsed::Found(r) => Ok(Some(r)),
            Parsed::Corrupt(reason) => {
                self.drop_corrupted(id, &key, reason).await;
                Ok(None)
            }
        }
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        self.create_key(&self.key(id), record).await
    }

    async fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let v = self
            .eval(&SCRIPTS.save, &[&self.key(id)], |cmd| {
                cmd.arg(clamp(now_millis())).arg(clamp(expires_at));
                push_changes(cmd, changes);
            })
            .await?;
        Ok(match int(&v)? {
            1 => SaveOutcome::Saved,
            2 => SaveOutcome::Deleted,
            -1 => {
                warn_corrupted(id, "not a session hash");
                SaveOutcome::Gone
            }
            _ => SaveOutcome::Gone,
        })
    }

    async fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> Result<CycleOutcome, StoreError> {
        if matches!(self.conn, Conn::Cluster(_)) {
            return self.cycle_cluster(old, new, changes, expires_at).await;
        }
        let v = self
            .eval(&SCRIPTS.cycle, &[&self.key(old), &self.key(new)], |cmd| {
                cmd.arg(clamp(now_millis())).arg(clamp(expires_at));
                push_changes(cmd, changes);
            })
            .await?;
        Ok(match int(&v)? {
            1 => CycleOutcome::Moved,
            2 => CycleOutcome::Deleted,
            3 => CycleOutcome::Collision,
            -1 => {
                warn_corrupted(old, "not a session hash");
                CycleOutcome::Gone
            }
            _ => CycleOutcome::Gone,
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        self.run(self.conn.query(&cmd)).await.map(drop)
    }

    async fn end(&self, id: &SessionId, _public_id: &crate::PublicId) -> Result<(), StoreError> {
        // TODO(reliability): follow a move made by a racing cycle.
        self.delete(id).await
    }

    async fn touch(&self, id: &SessionId, expires_at: u64) -> Result<bool, StoreError> {
        let v = self
            .eval(&SCRIPTS.touch, &[&self.key(id)], |cmd| {
                cmd.arg(clamp(now_millis())).arg(clamp(expires_at));
            })
            .await?;
        Ok(match int(&v)? {
            1 => true,
            -1 => {
                warn_corrupted(id, "not a session hash");
                false
            }
            _ => false,
        })
    }
}

fn is_wrong_type(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .is_some_and(|e| e.code() == Some("WRONGTYPE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields_cannot_be_item_names() {
        for f in [CREATED_FIELD, EXPIRES_FIELD] {
            assert!(std::str::from_utf8(f).is_err());
        }
    }

    #[test]
    fn parse_reads_items_and_metadata_and_rejects_junk() {
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let reply = Value::Array(vec![
            bulk(b"b"),
            bulk(b"2"),
            bulk(CREATED_FIELD),
            bulk(b"1000"),
            bulk(b"a"),
            bulk(b"1"),
            bulk(EXPIRES_FIELD),
            bulk(b"61000"),
        ]);
        let Parsed::Found(r) = parse_hash(reply) else {
            panic!("a good hash")
        };
        assert_eq!(r.items.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!((r.created_at, r.expires_at), (1000, 61000));

        assert!(matches!(parse_hash(Value::Array(vec![])), Parsed::Absent));
        let no_meta = Value::Array(vec![bulk(b"a"), bulk(b"1")]);
        assert!(matches!(parse_hash(no_meta), Parsed::Corrupt(_)));
        let bad_meta = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1e3"),
            bulk(EXPIRES_FIELD),
            bulk(b"5"),
        ]);
        assert!(matches!(parse_hash(bad_meta), Parsed::Corrupt(_)));
        let not_utf8 = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1"),
            bulk(EXPIRES_FIELD),
            bulk(b"5"),
            bulk(b"k"),
            bulk(b"\xff"),
        ]);
        assert!(matches!(parse_hash(not_utf8), Parsed::Corrupt(_)));
    }

    #[test]
    fn millis_are_strict_decimal() {
        assert_eq!(parse_millis(b"0"), Some(0));
        assert_eq!(parse_millis(b"1700000000000"), Some(1_700_000_000_000));
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1.0", b"12345678901234567"] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }

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
}
