//! Connecting, sending commands under the timeout (and `WAIT` for replica
//! acknowledgement), and what Redis errors mean for a request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};

use super::scripts::{Lua, SCRIPTS};
use super::{RedisStore, DEFAULT_COMMAND_TIMEOUT, DEFAULT_KEY_PREFIX};
use crate::error::{StoreError, StoreErrorKind};

/// Reconnection of the standalone `ConnectionManager`: while Redis is down a
/// reconnection attempt gives up after a few hundred milliseconds (so
/// requests fail fast), and the next command starts a new one (so the first
/// requests after Redis is back succeed).
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_RETRIES: usize = 2;
/// How long one attempt to open a connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<super::sentinel::SentinelConn>),
}

/// `WAIT` after every write: see [`RedisStore::with_replica_ack`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Ack {
    pub(super) replicas: usize,
    pub(super) timeout: Duration,
}

impl Conn {
    /// Sends one command. On a standalone connection, a command refused
    /// because the connection could not be (re)established is sent once
    /// more: that first error also started a fresh reconnection, which
    /// succeeds at once when Redis is back. Nothing was sent the first time,
    /// so the retry cannot apply anything twice.
    pub(super) async fn query(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Standalone(m) => {
                let mut m = m.clone();
                match cmd.query_async(&mut m).await {
                    Err(e) if e.is_connection_refusal() => cmd.query_async(&mut m).await,
                    r => r,
                }
            }
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Sentinel(s) => s.query(cmd).await,
        }
    }

    /// Sends a pipeline on one connection. On a cluster it goes to the node
    /// of its first command that has a key (redis-rs routes a pipeline by
    /// its first keyed command; `WAIT` has none).
    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> Result<Vec<Value>, RedisError> {
        match self {
            Conn::Standalone(m) => {
                let mut m = m.clone();
                match pipe.query_async(&mut m).await {
                    Err(e) if e.is_connection_refusal() => pipe.query_async(&mut m).await,
                    r => r,
                }
            }
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Sentinel(s) => s.query_pipe(pipe).await,
        }
    }
}

impl RedisStore {
    /// Connects to a standalone Redis server (or a primary behind a proxy
    /// such as Sentinel-aware DNS).
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:password@]host:port[/db]`,
    /// `rediss://host:port` for TLS (feature `redis-tls`; the server's
    /// certificate is checked against the public web PKI roots, see
    /// [`connect_tls`](Self::connect_tls) for a private CA), or
    /// `redis+unix:///path`. Fails with
    /// [`StoreErrorKind::Unavailable`] when
    /// the server cannot be reached, and with `Other` for a malformed URL.
    ///
    /// The connection is a `redis::aio::ConnectionManager` that reconnects by
    /// itself; its reconnection is tuned to fail fast while Redis is down
    /// (2 retries, 50 to 500 ms apart, 1 s per connection attempt).
    ///
    /// It also reads the server's `maxmemory-policy`
    /// ([`eviction_policy`](Self::eviction_policy)) and logs a warning when
    /// it can evict sessions (see the [module docs](crate::store::redis#memory-and-eviction)).
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
        Self::connect_client(client).await
    }

    /// [`connect`](Self::connect) with a client already made (plain or TLS).
    pub(super) async fn connect_client(client: redis::Client) -> Result<Self, StoreError> {
        #[cfg(feature = "redis-tls")]
        super::tls::install_crypto_provider();
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
        let mut store = Self::from_connection_manager(manager);
        store.preload_scripts().await;
        store.read_eviction_policy().await;
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes.
    ///
    /// The client discovers the other nodes and the slot map by itself, and
    /// follows resharding and failover. Each session's key carries a hash
    /// tag, so every script touches one slot; see the
    /// [module docs](crate::store::redis#cycle_id-and-logout-on-redis-cluster) for what
    /// `cycle` and `end` do on a cluster. Like [`connect`](Self::connect), it
    /// reads `maxmemory-policy` (from one node) and warns when it can evict.
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
        Self::connect_cluster_with(urls, |b| b).await
    }

    /// [`connect_cluster`](Self::connect_cluster), with `configure` adding
    /// to the client's settings (TLS).
    pub(super) async fn connect_cluster_with<S: AsRef<str>>(
        urls: &[S],
        configure: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
    ) -> Result<Self, StoreError> {
        #[cfg(feature = "redis-tls")]
        super::tls::install_crypto_provider();
        let builder = ClusterClientBuilder::new(urls.iter().map(AsRef::as_ref));
        let client = configure(builder)
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
        let mut store = Self::from_cluster_connection(conn);
        store.preload_scripts().await;
        store.read_eviction_policy().await;
        Ok(store)
    }

    /// A store on an existing standalone connection, for apps that already
    /// hold a `redis::aio::ConnectionManager` (from `redis` 1.x).
    ///
    /// The manager's own reconnection and timeout settings apply; the
    /// store's command timeout bounds every command in addition. Scripts
    /// are loaded on first use; the eviction policy is not read
    /// ([`eviction_policy`](Self::eviction_policy) is `None`).
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
        Self::with_conn(Conn::Standalone(manager))
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
        Self::with_conn(Conn::Cluster(conn))
    }

    pub(super) fn with_conn(conn: Conn) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            ack: None,
            eviction_policy: None,
        }
    }

    /// Loads every script into the server's script cache (every primary, on
    /// a cluster), so the first `EVALSHA`s hit. Best effort: a failure only
    /// means the first use of a script falls back to `EVAL`.
    pub(super) async fn preload_scripts(&self) {
        for lua in SCRIPTS.all() {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(lua.code);
            if let Err(e) = self.run(self.conn.query(&cmd)).await {
                tracing::debug!(error = %crate::error::Chain(&e), "could not preload a RedisStore script");
                return;
            }
        }
    }

    /// Reads `maxmemory-policy` and warns when it can evict sessions.
    /// Servers that refuse `CONFIG` (renamed or disabled, as on many
    /// managed services) leave the policy unknown, with a debug event.
    pub(super) async fn read_eviction_policy(&mut self) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let policy = match self.run(self.conn.query(&cmd)).await {
            Ok(v) => config_value(v),
            Err(e) => {
                tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not read maxmemory-policy");
                None
            }
        };
        if let Some(p) = policy.as_deref().filter(|p| can_evict(p)) {
            tracing::warn!(
                maxmemory_policy = p,
                "RedisStore: Redis may evict session keys when it reaches maxmemory, and an \
                 evicted session is a silent logout; set `maxmemory-policy noeviction` (a full \
                 Redis then answers 503 for new sessions instead)"
            );
        }
        self.eviction_policy = policy.map(Arc::from);
    }

    /// How long one command (with its `WAIT`, when acks are on) may take.
    pub(super) fn step_bound(&self) -> Duration {
        self.timeout + self.ack.map_or(Duration::ZERO, |a| a.timeout)
    }

    /// Runs one Redis operation under the command timeout.
    pub(super) async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        self.run_for(self.timeout, op).await
    }

    pub(super) async fn run_for<T>(
        &self,
        limit: Duration,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, op).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StoreError::unavailable(format!(
                "Redis did not answer within {limit:?} (RedisStore::with_command_timeout)"
            ))),
        }
    }

    /// Sends a command that writes. With replica acknowledgement on, it is
    /// followed by `WAIT` on the same connection (so on the node that owns
    /// the key), in one pipeline; fewer acknowledgements than asked is an
    /// `Unavailable` error, though the write itself was applied.
    ///
    /// Why a pipeline: redis-rs routes a lone `WAIT` on a cluster to *every*
    /// primary and answers the minimum (its routing table lists `WAIT` as
    /// all-primaries, aggregate min), which would wait on nodes that saw no
    /// write and on a fresh connection's offset. A pipeline goes as one unit
    /// to the node of its first keyed command, on the connection the write
    /// used, which is what `WAIT` counts from.
    pub(super) async fn write(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        let Some(ack) = self.ack else {
            return self.run(self.conn.query(cmd)).await;
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone())
            .cmd("WAIT")
            .arg(ack.replicas)
            .arg(ack.timeout.as_millis().max(1) as u64);
        let mut replies = self
            .run_for(self.step_bound(), self.conn.query_pipe(&pipe))
            .await?
            .into_iter();
        let (Some(reply), Some(acked)) = (replies.next(), replies.next()) else {
            return Err(StoreError::other(
                "Redis answered a pipeline of two with fewer replies",
            ));
        };
        match acked {
            Value::Int(n) if n >= 0 && n as u64 >= ack.replicas as u64 => Ok(reply),
            Value::Int(n) => Err(StoreError::unavailable(format!(
                "only {n} of {} replicas acknowledged a session write within {:?} \
                 (RedisStore::with_replica_ack); the write may still have been applied",
                ack.replicas, ack.timeout
            ))),
            other => Err(StoreError::other(format!(
                "unexpected reply to WAIT: {}",
                super::ops::reply_type(&other)
            ))),
        }
    }

    /// Runs `lua` with `EVALSHA` (a write, see [`write`](Self::write)),
    /// falling back to `EVAL` when the server does not have it cached.
    pub(super) async fn eval(
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
        match self.write(&cmd).await {
            Err(e) if redis_kind(&e) == Some(ErrorKind::Server(ServerErrorKind::NoScript)) => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(lua.code);
                for arg in cmd.args_iter().skip(2) {
                    if let redis::Arg::Simple(a) = arg {
                        eval.arg(a);
                    }
                }
                self.write(&eval).await
            }
            r => r,
        }
    }
}

/// The value of a `CONFIG GET` reply for one parameter (RESP2 array or
/// RESP3 map).
fn config_value(v: Value) -> Option<String> {
    let value = match v {
        Value::Array(mut a) if a.len() == 2 => a.pop()?,
        Value::Map(mut m) if m.len() == 1 => m.pop()?.1,
        _ => return None,
    };
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Whether a `maxmemory-policy` can evict session keys. Every session key
/// has a TTL, so the `volatile-*` policies evict sessions as readily as the
/// `allkeys-*` ones.
pub(super) fn can_evict(policy: &str) -> bool {
    policy.starts_with("allkeys-") || policy.starts_with("volatile-")
}

/// The Redis error kind behind a store error, if it came from Redis.
pub(super) fn redis_kind(e: &StoreError) -> Option<ErrorKind> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .map(RedisError::kind)
}

/// The Redis error code behind a store error (`WRONGTYPE`, `OOM`, …).
pub(super) fn redis_code(e: &StoreError) -> Option<&str> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .and_then(RedisError::code)
}

/// A Redis error as a store error, by the class of the answer:
///
/// - `OOM` (`maxmemory` reached under `noeviction`): `Full`, `503`, like a
///   full `MemoryStore`: reads still work, new sessions are refused.
/// - connection and cluster-availability problems, and a server that is
///   busy (`BUSY`: a script running too long), loading its data
///   (`LOADING`), cut off from its primary (`MASTERDOWN`), or mid-failover
///   or resharding (`TRYAGAIN`, `CLUSTERDOWN`, `READONLY`): `Unavailable`,
///   `503`;
/// - the rest: `Other`, `500`.
pub(super) fn map_err(e: RedisError) -> StoreError {
    match e.code() {
        Some("OOM") => return StoreError::new(StoreErrorKind::Full, e),
        Some("BUSY" | "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY") => {
            return StoreError::unavailable(e)
        }
        _ => {}
    }
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
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                )
        );
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store error from a Redis error reply, as the server sends it.
    fn from_reply(reply: &str) -> StoreError {
        let v = redis::parse_redis_value(format!("-{reply}\r\n").as_bytes())
            .expect("an error reply parses as a value");
        map_err(v.extract_error().expect_err("an error reply"))
    }

    #[test]
    fn error_replies_map_to_their_class() {
        use StoreErrorKind::{Full, Other, Unavailable};
        for (reply, kind) in [
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                Full,
            ),
            ("BUSY Redis is busy running a script.", Unavailable),
            (
                "LOADING Redis is loading the dataset in memory",
                Unavailable,
            ),
            ("MASTERDOWN Link with MASTER is down", Unavailable),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                Unavailable,
            ),
            ("CLUSTERDOWN The cluster is down", Unavailable),
            (
                "READONLY You can't write against a read only replica.",
                Unavailable,
            ),
            ("ERR unknown command", Other),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                Other,
            ),
        ] {
            let e = from_reply(reply);
            assert_eq!(e.kind(), kind, "{reply}: {e}");
        }
    }

    #[test]
    fn evicting_policies_are_recognised() {
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-ttl",
        ] {
            assert!(can_evict(p), "{p}");
        }
        assert!(!can_evict("noeviction"));
    }

    #[test]
    fn config_replies_are_read_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![bulk("maxmemory-policy"), bulk("allkeys-lru")]);
        assert_eq!(config_value(resp2).as_deref(), Some("allkeys-lru"));
        let resp3 = Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]);
        assert_eq!(config_value(resp3).as_deref(), Some("noeviction"));
        assert_eq!(config_value(Value::Array(vec![])), None);
    }
}
