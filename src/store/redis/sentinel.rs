//! Redis Sentinel: finding the primary through the sentinels, and finding it
//! again after a failover.
//!
//! The public side and why this is not redis-rs's `sentinel` feature: the
//! docs of [`RedisStore::connect_sentinel`].
//!
//! How it works:
//!
//! - **Resolve** ([`SentinelConn::resolve`]): ask every sentinel
//!   `SENTINEL MASTER <name>`, and who it is and which peers it knows
//!   (`SENTINEL MYID`, `SENTINEL SENTINELS <name>`). With more than one
//!   answer, keep those of the group ([`in_group`]): a sentinel another
//!   answering sentinel lists as a peer (run id, or the address it was
//!   reached at), or naming the same address as another; a lone answer is
//!   kept. Try the addresses kept, newest `config-epoch` first (a sentinel
//!   can lag behind a failover): connect, check that `ROLE` says `master`,
//!   load the scripts there. Any failure moves on to the next address.
//!   Why both rules: the epoch keeps a lagging member from naming an old
//!   primary restarted empty; the group keeps a stranger (another
//!   deployment's sentinel, or a lying one) with a made-up epoch from
//!   naming an unrelated, empty Redis. Counting votes instead would let a
//!   lagging majority win in the window before it learns of a failover.
//! - **Serve**: every command goes to the current primary's multiplexed
//!   connection.
//! - **Notice**: a command that fails on a connection error, on `READONLY`
//!   (the primary was demoted) or `MASTERDOWN` drops that primary and
//!   starts a resolution in a spawned task. A command dropped before it
//!   answered (the store's command timeout, or a request that went away)
//!   starts a probe instead: `PING` on the same connection, and the primary
//!   is dropped if it does not answer within [`PROBE_TIMEOUT`] (a hung
//!   primary), so a client hanging up never costs a re-resolution.
//!   One resolution runs at a time;
//!   it retries (50 ms to 500 ms apart) until a primary is verified, for up
//!   to a minute, and the next request starts another if it gave up.
//! - **Fail fast**: a request that finds no primary waits up to
//!   [`FAIL_FAST`] for the resolution in progress, then fails
//!   `Unavailable` (`503`). No request waits out the failover; the first
//!   request after the new primary is verified succeeds.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, RedisConnectionInfo, RedisError, Value,
};
use tokio::sync::Notify;

use super::conn::{Conn, CONNECT_TIMEOUT};
use super::scripts::SCRIPTS;
use super::RedisStore;
use crate::error::StoreError;

/// How long one sentinel, or one candidate primary's `ROLE`, may take to
/// answer during a resolution.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a request waits for a resolution in progress before it fails.
const FAIL_FAST: Duration = Duration::from_millis(100);
/// The pause between two rounds of a resolution that found no primary.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);
/// A resolution gives up after this long; the next request starts another.
const RESOLVE_FOR: Duration = Duration::from_secs(60);

/// Settings of [`RedisStore::connect_sentinel_with`]: how to log in to the
/// primary the sentinels name (and to the sentinels themselves, when their
/// URLs do not say).
///
/// Its `Debug` never shows a password.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::redis::SentinelOptions;
///
/// let options = SentinelOptions::new()
///     .with_master_username("sessions")
///     .with_master_password("s3cret")
///     .with_master_db(2)
///     .with_sentinel_password("sentinel-s3cret");
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SentinelOptions {
    master_username: Option<String>,
    master_password: Option<String>,
    master_db: i64,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
    #[cfg(feature = "redis-tls")]
    tls: Option<super::RedisTls>,
}

impl fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |p: &Option<String>| p.as_ref().map(|_| "<redacted>");
        let mut f = f.debug_struct("SentinelOptions");
        f.field("master_username", &self.master_username)
            .field("master_password", &redacted(&self.master_password))
            .field("master_db", &self.master_db)
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &redacted(&self.sentinel_password));
        #[cfg(feature = "redis-tls")]
        f.field("tls", &self.tls);
        f.finish()
    }
}

impl SentinelOptions {
    /// No credentials, database 0.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The ACL user to log in to the primary as (`AUTH user password`).
    /// Needs [`with_master_password`](Self::with_master_password). The
    /// default is none (`AUTH password`, the `default` user).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new()
    ///     .with_master_username("sessions")
    ///     .with_master_password("s3cret");
    /// # let _ = options;
    /// ```
    pub fn with_master_username(mut self, username: impl Into<String>) -> Self {
        self.master_username = Some(username.into());
        self
    }

    /// The password of the primary (and of every replica that may be
    /// promoted: they share it in a Sentinel setup). The default is none.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new().with_master_password("s3cret");
    /// # let _ = options;
    /// ```
    pub fn with_master_password(mut self, password: impl Into<String>) -> Self {
        self.master_password = Some(password.into());
        self
    }

    /// The database number on the primary (`SELECT db`). The default is 0.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new().with_master_db(3);
    /// # let _ = options;
    /// ```
    pub fn with_master_db(mut self, db: i64) -> Self {
        self.master_db = db;
        self
    }

    /// The ACL user to log in to the sentinels as, for sentinel URLs that
    /// do not carry one (a user in a URL wins). The default is none.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new()
    ///     .with_sentinel_username("watcher")
    ///     .with_sentinel_password("s3cret");
    /// # let _ = options;
    /// ```
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.sentinel_username = Some(username.into());
        self
    }

    /// The password of the sentinels (their `requirepass`), for sentinel
    /// URLs that do not carry one (a password in a URL wins). The default
    /// is none.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::store::redis::SentinelOptions;
    ///
    /// let options = SentinelOptions::new().with_sentinel_password("s3cret");
    /// # let _ = options;
    /// ```
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// TLS to the primary (and to every sentinel given as a `rediss://`
    /// URL), checked with these settings: [`RedisTls::new()`] for the public
    /// web PKI roots, or a private CA and a client certificate (mutual TLS).
    /// The primary is reached at the address the sentinels announce, and its
    /// certificate must name that address (an IP address, unless the
    /// sentinels announce hostnames: `resolve-hostnames yes`,
    /// `announce-hostnames yes`). A sentinel given as `redis://` stays
    /// plain TCP.
    ///
    /// [`RedisTls::new()`]: super::RedisTls::new
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::store::redis::SentinelOptions;
    /// use tower_session_storage::{RedisStore, RedisTls};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = RedisTls::new().with_root_certificates(std::fs::read("ca.pem")?);
    /// let store = RedisStore::connect_sentinel_with(
    ///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "sessions",
    ///     SentinelOptions::new().with_tls(tls),
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn with_tls(mut self, tls: super::RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl RedisStore {
    /// Connects to the primary that Redis Sentinel names for `master_name`,
    /// and follows it through failovers.
    ///
    /// `sentinels` are the sentinels' URLs (`redis://[user:password@]host:port`;
    /// a password there is the sentinel's own). All of them are asked; one
    /// that is down is skipped, and the address from the newest view (the
    /// highest `config-epoch`: a sentinel can lag behind a failover) is
    /// tried first, and used once it answers `ROLE master`. When more than
    /// one sentinel answers, only answers from the group count: a sentinel
    /// that another answering sentinel lists as a peer (`SENTINEL
    /// SENTINELS`, by its `SENTINEL MYID` run id or its address), or that
    /// names the same address as another. A sentinel outside the group (of
    /// another deployment, misconfigured, or lying) cannot send the store
    /// to a Redis the others do not know, whatever epoch it claims: that
    /// Redis could answer `ROLE master` with none of the sessions, a
    /// logout for every user. When no answer counts (say two sentinels that
    /// do not know each other name different primaries) no primary is
    /// used: connect fails, or requests answer `503`. The primary
    /// must not need a password:
    /// see [`connect_sentinel_with`](Self::connect_sentinel_with) for one
    /// that does.
    ///
    /// Fails with [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable)
    /// when no sentinel answers or no primary they name can be reached, and
    /// with `Other` when no sentinel knows `master_name`, a URL is
    /// malformed, or the list is empty. Each error names what was tried.
    ///
    /// Like [`connect`](Self::connect), it reads `maxmemory-policy` (from
    /// the primary) and warns when it can evict.
    ///
    /// # Failover
    ///
    /// Every command goes to the primary found at connect. When a command
    /// on it fails with a connection error, `READONLY` (it was demoted) or
    /// `MASTERDOWN`, or gets no answer within the
    /// [command timeout](Self::with_command_timeout) and then no answer to
    /// a `PING` within 500 ms (it hangs), the store
    /// forgets it and asks the sentinels again in a background task, one at
    /// a time, every 50 to 500 ms until a primary they name answers
    /// `ROLE master`, by the same rules as at connect: answers of the
    /// group only, newest epoch first (a sentinel of the group that lags
    /// behind a failover still names the old one, which may have restarted
    /// empty and answer `ROLE master`; the newer epoch wins over it even
    /// when most sentinels still lag, and a dead old primary is skipped by
    /// the `ROLE` check). Meanwhile each
    /// request waits at most 100 ms for it and then answers `503`, never an
    /// empty session; no request waits out the failover. The first request
    /// after the promoted replica is verified succeeds, through the same
    /// store: no app restart. The scripts are loaded on the new primary
    /// before it is used.
    ///
    /// A failover takes as long as the sentinels need to agree
    /// (`down-after-milliseconds`, then the election and the promotion):
    /// with `down-after-milliseconds 1000` on loopback, 1.8 to 2.8 s from
    /// a killed primary to the first `200` again in our tests (about 10 s
    /// when the sentinels' first election fails and they retry).
    ///
    /// [`with_replica_ack`](Self::with_replica_ack) works as on a
    /// standalone server: with it, a write answered `200` reached a replica
    /// and survives the failover; after a failover the promoted primary
    /// needs a replica of its own (the old primary rejoining, or another
    /// replica) before writes are acknowledged again (reads work at once).
    /// Without it, Redis replicates asynchronously, and a write answered
    /// just before the primary died can be lost.
    ///
    /// Why not redis-rs's `sentinel` feature: its `SentinelClient` finds
    /// the primary once and hands out a plain connection; noticing a
    /// failover, re-resolving in the background while requests fail fast,
    /// and loading the scripts would still be this crate's, around a client
    /// that needs `&mut` to resolve (and two more dependencies, `log` and
    /// `rand`). The resolution itself is a few commands, so it is written
    /// here, with its own timeouts (each sentinel: 1 s for `SENTINEL
    /// MASTER`, then 500 ms for `MYID` and `SENTINELS` together): a
    /// sentinel or a candidate primary that hangs cannot hang it.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect_sentinel(
    ///     &[
    ///         "redis://10.0.0.1:26379",
    ///         "redis://10.0.0.2:26379",
    ///         "redis://10.0.0.3:26379",
    ///     ],
    ///     "sessions",
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_sentinel<S: AsRef<str>>(
        sentinels: &[S],
        master_name: &str,
    ) -> Result<Self, StoreError> {
        Self::connect_sentinel_with(sentinels, master_name, SentinelOptions::new()).await
    }

    /// [`connect_sentinel`](Self::connect_sentinel) with credentials and a
    /// database for the primary, and credentials for the sentinels.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::store::redis::SentinelOptions;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let password = std::env::var("REDIS_PASSWORD").unwrap_or_default();
    /// let store = RedisStore::connect_sentinel_with(
    ///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "sessions",
    ///     SentinelOptions::new()
    ///         .with_master_password(password.clone())
    ///         .with_sentinel_password(password),
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_sentinel_with<S: AsRef<str>>(
        sentinels: &[S],
        master_name: &str,
        options: SentinelOptions,
    ) -> Result<Self, StoreError> {
        let conn = SentinelConn::new(sentinels, master_name, &options)?;
        let primary = conn
            .resolve()
            .await
            .map_err(ResolveError::into_store_error)?;
        conn.install(primary);
        let mut store = Self::with_conn(Conn::Sentinel(Arc::new(conn)));
        store.read_eviction_policy().await;
        Ok(store)
    }
}

/// The sentinels, and the primary they named last.
pub(super) struct SentinelConn {
    name: String,
    sentinels: Vec<ConnectionInfo>,
    /// Login and database for the primary.
    master: RedisConnectionInfo,
    state: Mutex<State>,
    /// TLS settings for the primary and `rediss://` sentinels.
    #[cfg(feature = "redis-tls")]
    tls: Option<redis::TlsCertificates>,
    /// Woken when a resolution installs a primary.
    installed: Notify,
}

#[derive(Default)]
struct State {
    primary: Option<Primary>,
    resolving: bool,
    probing: bool,
    generation: u64,
}

#[derive(Clone)]
struct Primary {
    conn: MultiplexedConnection,
    addr: Arc<str>,
    generation: u64,
}

impl SentinelConn {
    fn new<S: AsRef<str>>(
        sentinels: &[S],
        name: &str,
        options: &SentinelOptions,
    ) -> Result<Self, StoreError> {
        if sentinels.is_empty() {
            return Err(StoreError::other(
                "RedisStore::connect_sentinel: give at least one sentinel URL",
            ));
        }
        if name.is_empty() {
            return Err(StoreError::other(
                "RedisStore::connect_sentinel: the master name is empty; give the name of the \
                 sentinels' `sentinel monitor <name> …` line",
            ));
        }
        let mut infos = Vec::with_capacity(sentinels.len());
        for url in sentinels {
            let info = url.as_ref().into_connection_info().map_err(|e| {
                StoreError::other(format!(
                    "invalid sentinel URL for RedisStore::connect_sentinel: {e}"
                ))
            })?;
            let mut login = info.redis_settings().clone();
            if login.username().is_none() {
                if let Some(u) = &options.sentinel_username {
                    login = login.set_username(u);
                }
            }
            if login.password().is_none() {
                if let Some(p) = &options.sentinel_password {
                    login = login.set_password(p);
                }
            }
            infos.push(info.set_redis_settings(login));
        }
        let mut master = RedisConnectionInfo::default().set_db(options.master_db);
        if let Some(u) = &options.master_username {
            master = master.set_username(u);
        }
        if let Some(p) = &options.master_password {
            master = master.set_password(p);
        }
        #[cfg(feature = "redis-tls")]
        let tls = match &options.tls {
            Some(tls) => {
                super::tls::install_crypto_provider();
                Some(tls.certificates()?)
            }
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            sentinels: infos,
            master,
            state: Mutex::new(State::default()),
            #[cfg(feature = "redis-tls")]
            tls,
            installed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after every write.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one command to the primary.
    pub(super) async fn query(self: &Arc<Self>, cmd: &Cmd) -> Result<Value, RedisError> {
        let Primary {
            mut conn,
            generation,
            ..
        } = self.primary().await?;
        let watch = Watch::new(self, generation);
        let r = cmd.query_async(&mut conn).await;
        watch.done(r)
    }

    /// Sends a pipeline to the primary.
    pub(super) async fn query_pipe(
        self: &Arc<Self>,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>, RedisError> {
        let Primary {
            mut conn,
            generation,
            ..
        } = self.primary().await?;
        let watch = Watch::new(self, generation);
        let r = pipe.query_async(&mut conn).await;
        watch.done(r)
    }

    /// The current primary; without one, waits up to [`FAIL_FAST`] for the
    /// resolution in progress (starting one if none is).
    async fn primary(self: &Arc<Self>) -> Result<Primary, RedisError> {
        if let Some(p) = self.state().primary.clone() {
            return Ok(p);
        }
        let installed = self.installed.notified();
        tokio::pin!(installed);
        // Registered before looking again, so an install in between wakes it.
        installed.as_mut().enable();
        if let Some(p) = self.state().primary.clone() {
            return Ok(p);
        }
        self.start_resolving();
        let _ = tokio::time::timeout(FAIL_FAST, installed).await;
        self.state().primary.clone().ok_or_else(|| {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "Redis Sentinel: no primary for {:?} is known right now (a failover is \
                     being followed); try again shortly",
                    self.name
                ),
            ))
        })
    }

    /// Forgets the primary of `generation` (if it is still the current
    /// one) and starts a resolution.
    fn drop_primary(self: &Arc<Self>, generation: u64) {
        {
            let mut state = self.state();
            match &state.primary {
                Some(p) if p.generation == generation => {
                    tracing::warn!(
                        master = %self.name,
                        primary = %p.addr,
                        "RedisStore: the Redis primary failed; asking the sentinels for the current one"
                    );
                    state.primary = None;
                }
                _ => return,
            }
        }
        self.start_resolving();
    }

    /// A command on the primary of `generation` was dropped unanswered:
    /// most likely the store's command timeout, possibly a request that
    /// went away. Checks in a task of its own (one at a time) whether the
    /// primary answers `PING` within [`PROBE_TIMEOUT`] on the same
    /// connection, and drops it if not.
    fn probe(self: &Arc<Self>, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut conn = {
            let mut state = self.state();
            if state.probing {
                return;
            }
            let conn = match &state.primary {
                Some(p) if p.generation == generation => p.conn.clone(),
                _ => return,
            };
            state.probing = true;
            conn
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let _running = Running(weak.clone(), |s| &mut s.probing);
            let ping = redis::cmd("PING");
            let answer = tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<Value>(&mut conn));
            let alive = matches!(answer.await, Ok(Ok(_)));
            if let (false, Some(this)) = (alive, weak.upgrade()) {
                this.drop_primary(generation);
            }
        });
    }

    /// Starts a resolution in a task of its own, unless one runs.
    fn start_resolving(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut state = self.state();
            if state.resolving {
                return;
            }
            state.resolving = true;
        }
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let _running = Running(weak.clone(), |s| &mut s.resolving);
            let started = Instant::now();
            let mut pause = RETRY_MIN;
            loop {
                let Some(this) = weak.upgrade() else { return };
                match this.resolve().await {
                    Ok(primary) => {
                        this.install(primary);
                        return;
                    }
                    // Warned once per resolution; its further rounds at debug.
                    Err(e) if pause == RETRY_MIN => {
                        tracing::warn!(master = %this.name, error = %e, "RedisStore: no Redis primary yet; asking the sentinels again");
                    }
                    Err(e) => {
                        tracing::debug!(master = %this.name, error = %e, "RedisStore: no Redis primary yet");
                    }
                }
                drop(this);
                if started.elapsed() > RESOLVE_FOR {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        });
    }

    fn install(&self, mut primary: Primary) {
        {
            let mut state = self.state();
            state.generation += 1;
            primary.generation = state.generation;
            tracing::info!(master = %self.name, primary = %primary.addr, "RedisStore: using this Redis primary");
            state.primary = Some(primary);
        }
        self.installed.notify_waiters();
    }

    /// Asks every sentinel for the primary, keeps the answers of the group
    /// ([`in_group`]), and returns the first primary that is verified,
    /// trying the addresses from the newest view (highest `config-epoch`)
    /// to the oldest.
    ///
    /// Why every sentinel and not the first that answers: one that has not
    /// heard of a failover yet still names the old primary, and an old
    /// primary restarted without persistence answers `ROLE master` (with
    /// no data) until the sentinels reconfigure it. Using it would look
    /// like a logout for every user; the newest epoch rules it out as soon
    /// as any sentinel reachable knows of the failover.
    async fn resolve(&self) -> Result<Primary, ResolveError> {
        let mut err = ResolveError {
            name: self.name.clone(),
            tried: Vec::new(),
            answered: 0,
            unknown: 0,
        };
        let mut named = Vec::new();
        for sentinel in &self.sentinels {
            let at = sentinel.addr().to_string();
            match self.ask(sentinel).await {
                Ok(Some(answer)) => {
                    err.answered += 1;
                    named.push(answer);
                }
                Ok(None) => {
                    err.answered += 1;
                    err.unknown += 1;
                    err.tried
                        .push(format!("sentinel {at} knows no master {:?}", self.name));
                }
                Err(e) => err.tried.push(format!("sentinel {at}: {e}")),
            }
        }
        let counts = in_group(&named);
        let mut named: Vec<Answer> = named
            .into_iter()
            .zip(counts)
            .filter_map(|(a, counts)| {
                if !counts {
                    err.tried.push(format!(
                        "{}:{} (named by sentinel {}, epoch {}): ignored, no other sentinel \
                         that answered knows that sentinel or names that address",
                        a.host, a.port, a.at, a.epoch
                    ));
                }
                counts.then_some(a)
            })
            .collect();
        // Newest first; among equals, in the order the sentinels were given.
        named.sort_by_key(|a| std::cmp::Reverse(a.epoch));
        let mut tried: Vec<(String, u16)> = Vec::new();
        for Answer {
            epoch,
            host,
            port,
            at,
            ..
        } in named
        {
            if tried.iter().any(|(h, p)| *h == host && *p == port) {
                continue;
            }
            match self.open_primary(&host, port).await {
                Ok(p) => return Ok(p),
                Err(e) => err.tried.push(format!(
                    "{host}:{port} (named by sentinel {at}, epoch {epoch}): {e}"
                )),
            }
            tried.push((host, port));
        }
        Err(err)
    }

    /// `SENTINEL MASTER <name>`: the config epoch and the address of the
    /// primary; `None` when the sentinel does not monitor that name. Then,
    /// on the same connection, who the sentinel is (`SENTINEL MYID`) and
    /// which peers it knows for that name (`SENTINEL SENTINELS <name>`):
    /// each bounded by [`PROBE_TIMEOUT`], and an error or junk there only
    /// leaves that part empty (`MYID` needs Redis 6.2).
    async fn ask(&self, sentinel: &ConnectionInfo) -> Result<Option<Answer>, String> {
        let at = sentinel.addr().to_string();
        let ask = async {
            let mut c = self
                .client(sentinel.clone())?
                .get_multiplexed_async_connection_with_config(&probe_config())
                .await?;
            let reply = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(&self.name)
                .query_async::<Value>(&mut c)
                .await?;
            Ok::<_, RedisError>((c, reply))
        };
        let (mut c, reply) = match tokio::time::timeout(PROBE_TIMEOUT * 2, ask).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.to_string().contains("No such master") => return Ok(None),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", PROBE_TIMEOUT * 2)),
        };
        let (epoch, host, port) = master_info(reply)?;
        let mut answer = Answer {
            epoch,
            host,
            port,
            at,
            myid: None,
            peers: Vec::new(),
        };
        let who = async {
            let myid = redis::cmd("SENTINEL")
                .arg("MYID")
                .query_async::<Value>(&mut c)
                .await;
            let peers = redis::cmd("SENTINEL")
                .arg("SENTINELS")
                .arg(&self.name)
                .query_async::<Value>(&mut c)
                .await;
            (myid, peers)
        };
        if let Ok((myid, peers)) = tokio::time::timeout(PROBE_TIMEOUT, who).await {
            answer.myid = myid.ok().as_ref().and_then(text).filter(|s| !s.is_empty());
            answer.peers = peers.map(peer_list).unwrap_or_default();
        }
        Ok(Some(answer))
    }

    /// The primary's address: over TLS when [`SentinelOptions::with_tls`]
    /// was given.
    fn primary_addr(&self, host: &str, port: u16) -> ConnectionAddr {
        #[cfg(feature = "redis-tls")]
        if self.tls.is_some() {
            return ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            };
        }
        ConnectionAddr::Tcp(host.to_owned(), port)
    }

    /// A client for a sentinel or the primary: with the TLS settings when
    /// there are some and the address is a TLS one.
    fn client(&self, info: ConnectionInfo) -> Result<Client, RedisError> {
        #[cfg(feature = "redis-tls")]
        if let (Some(certs), ConnectionAddr::TcpTls { .. }) = (&self.tls, info.addr()) {
            return Client::build_with_tls(info, certs.clone());
        }
        Client::open(info)
    }

    /// Connects to the primary a sentinel named, checks `ROLE` says
    /// `master`, and loads the scripts there.
    async fn open_primary(&self, host: &str, port: u16) -> Result<Primary, String> {
        let info = self
            .primary_addr(host, port)
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(self.master.clone());
        let open = async {
            let mut conn = self
                .client(info)?
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        // Every command is bounded by the store's timeout.
                        .set_response_timeout(None),
                )
                .await?;
            let role = redis::cmd("ROLE").query_async::<Value>(&mut conn).await?;
            Ok::<_, RedisError>((conn, role))
        };
        let (mut conn, role) =
            match tokio::time::timeout(CONNECT_TIMEOUT + PROBE_TIMEOUT, open).await {
                Ok(r) => r.map_err(|e| self.explain(&e))?,
                Err(_) => return Err("no answer in time".into()),
            };
        let role = match &role {
            Value::Array(a) => a.first().and_then(text),
            _ => None,
        };
        if role.as_deref() != Some("master") {
            return Err(format!(
                "its ROLE is {}, not master (the sentinels may be mid-failover)",
                role.as_deref().unwrap_or("unreadable")
            ));
        }
        // The new primary may not have the scripts cached: load them now so
        // the first EVALSHAs hit (a miss would still fall back to EVAL).
        let load = async {
            for lua in SCRIPTS.all() {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(lua.code)
                    .query_async::<Value>(&mut conn)
                    .await?;
            }
            Ok::<_, RedisError>(())
        };
        match tokio::time::timeout(PROBE_TIMEOUT, load).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "RedisStore: could not preload the scripts on the new primary");
            }
            Err(_) => return Err("loading the scripts took too long".into()),
        }
        Ok(Primary {
            conn,
            addr: Arc::from(format!("{host}:{port}")),
            generation: 0,
        })
    }
}

impl SentinelConn {
    /// Why the primary could not be used, with a hint when it looks like a
    /// TLS-only primary reached in plain TCP: Redis resets such a
    /// connection, which alone says nothing about TLS.
    fn explain(&self, e: &RedisError) -> String {
        #[cfg(feature = "redis-tls")]
        let plain = self.tls.is_none();
        #[cfg(not(feature = "redis-tls"))]
        let plain = true;
        if plain && reset_by_peer(e) {
            format!(
                "{e} (a primary that serves TLS only resets plain TCP connections: if it does, \
                 connect with SentinelOptions::with_tls, feature `redis-tls`)"
            )
        } else {
            e.to_string()
        }
    }
}

/// Whether the server closed or reset the connection (as opposed to
/// refusing it, or answering).
fn reset_by_peer(e: &RedisError) -> bool {
    // `is_connection_dropped` also covers a refused connection (nothing
    // listens there: no TLS hint then).
    e.is_connection_dropped() && !e.is_connection_refusal()
}

/// What one sentinel said during a resolution.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    /// Its `config-epoch` for the master.
    epoch: u64,
    /// The primary's address it named.
    host: String,
    port: u16,
    /// The sentinel's address, as given in its URL (`host:port`).
    at: String,
    /// Its own run id (`SENTINEL MYID`), when it said.
    myid: Option<String>,
    /// The peers it knows for the master (`SENTINEL SENTINELS <name>`).
    peers: Vec<Peer>,
}

/// One entry of `SENTINEL SENTINELS <name>`: what is known of a peer.
#[derive(Debug, Clone, Default, PartialEq)]
struct Peer {
    runid: Option<String>,
    /// `ip:port` as the peer announces itself.
    addr: Option<String>,
}

/// Which answers count: a sentinel's answer counts when it is the only
/// answer, or when another sentinel that answered vouches for it (lists it
/// as a peer, by its run id or by the address it was reached at), or names
/// the same address. A sentinel outside the group (of another deployment,
/// misconfigured, or lying) then cannot send the store to a master the
/// others do not know, whatever epoch it claims; a member lagging behind a
/// failover still counts, and the newest epoch among those that count
/// wins. A run id claimed by two answering sentinels vouches for neither.
fn in_group(answers: &[Answer]) -> Vec<bool> {
    if answers.len() <= 1 {
        return vec![true; answers.len()];
    }
    let unique_id = |i: usize| {
        answers[i].myid.as_ref().filter(|id| {
            answers
                .iter()
                .filter(|a| a.myid.as_ref() == Some(*id))
                .count()
                == 1
        })
    };
    (0..answers.len())
        .map(|i| {
            let me = &answers[i];
            let id = unique_id(i);
            answers.iter().enumerate().any(|(j, other)| {
                j != i
                    && ((other.host == me.host && other.port == me.port)
                        || other.peers.iter().any(|p| {
                            (id.is_some() && p.runid.as_ref() == id)
                                || p.addr.as_deref() == Some(me.at.as_str())
                        }))
            })
        })
        .collect()
}

/// The fields of a reply entry (field, value, …; a map in RESP3).
fn fields(reply: Value) -> Option<Vec<(Value, Value)>> {
    match reply {
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Some(pairs)
        }
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// The value of field `name`, as text.
fn field(pairs: &[(Value, Value)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| text(k).as_deref() == Some(name))
        .and_then(|(_, v)| text(v))
}

/// A reply to `SENTINEL SENTINELS <name>`: the peers' run ids and
/// addresses. Entries that are not field lists are skipped; junk is an
/// empty list.
fn peer_list(reply: Value) -> Vec<Peer> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(fields)
        .map(|pairs| {
            let runid = field(&pairs, "runid").filter(|s| !s.is_empty());
            let addr = match (field(&pairs, "ip"), field(&pairs, "port")) {
                (Some(ip), Some(port)) if !ip.is_empty() => Some(format!("{ip}:{port}")),
                _ => None,
            };
            Peer { runid, addr }
        })
        .filter(|p| p.runid.is_some() || p.addr.is_some())
        .collect()
}

/// A reply to `SENTINEL MASTER <name>` (field, value, field, value, …;
/// a map in RESP3): the `config-epoch`, `ip` and `port`.
fn master_info(reply: Value) -> Result<(u64, String, u16), String> {
    let kind = super::ops::reply_type(&reply);
    // Its type only: a hostile or broken sentinel could send megabytes, and
    // this message is logged on every round of a resolution.
    let Some(pairs) = fields(reply) else {
        return Err(format!("unexpected reply: {kind}"));
    };
    let host = field(&pairs, "ip").filter(|h| !h.is_empty());
    let port = field(&pairs, "port").and_then(|p| p.parse::<u16>().ok());
    let epoch = field(&pairs, "config-epoch").and_then(|e| e.parse::<u64>().ok());
    match (epoch, host, port) {
        (Some(e), Some(h), Some(p)) => Ok((e, h, p)),
        _ => Err("a reply without a readable address and config-epoch".into()),
    }
}

/// The settings for talking to a sentinel during a resolution.
fn probe_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PROBE_TIMEOUT))
        .set_response_timeout(Some(PROBE_TIMEOUT))
}

/// A string reply as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Whether an error on the primary's connection means it may no longer be
/// the primary (or no longer reachable).
fn means_failover(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

/// One command in flight on the primary of `generation`: an answer that
/// means failover drops that primary; being dropped unanswered (the store's
/// command timeout ran out, or the request went away) probes it.
struct Watch<'a> {
    conn: &'a Arc<SentinelConn>,
    generation: u64,
    armed: bool,
}

impl<'a> Watch<'a> {
    fn new(conn: &'a Arc<SentinelConn>, generation: u64) -> Self {
        Self {
            conn,
            generation,
            armed: true,
        }
    }

    fn done<T>(mut self, r: Result<T, RedisError>) -> Result<T, RedisError> {
        self.armed = false;
        if let Err(e) = &r {
            if means_failover(e) {
                self.conn.drop_primary(self.generation);
            }
        }
        r
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.probe(self.generation);
        }
    }
}

/// Clears a flag of the state (`resolving`, `probing`) when a task ends,
/// however it ends.
struct Running(Weak<SentinelConn>, fn(&mut State) -> &mut bool);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(conn) = self.0.upgrade() {
            *(self.1)(&mut conn.state()) = false;
        }
    }
}

/// Why no primary was found: what each sentinel said.
#[derive(Debug)]
struct ResolveError {
    name: String,
    tried: Vec<String>,
    answered: usize,
    unknown: usize,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Redis Sentinel: no primary for master {:?}: {}",
            self.name,
            self.tried.join("; ")
        )
    }
}

impl ResolveError {
    fn into_store_error(self) -> StoreError {
        if self.answered == 0 {
            StoreError::unavailable(format!(
                "Redis Sentinel: none of the {} sentinels answered ({})",
                self.tried.len(),
                self.tried.join("; ")
            ))
        } else if self.unknown == self.answered {
            StoreError::other(format!(
                "Redis Sentinel: no sentinel monitors a master named {:?} (check the name given \
                 to RedisStore::connect_sentinel against the sentinels' `sentinel monitor` \
                 lines): {}",
                self.name,
                self.tried.join("; ")
            ))
        } else {
            StoreError::unavailable(self.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreErrorKind;

    fn failed(answered: usize, unknown: usize) -> StoreError {
        ResolveError {
            name: "sessions".into(),
            tried: vec!["sentinel 127.0.0.1:1: refused".into()],
            answered,
            unknown,
        }
        .into_store_error()
    }

    #[test]
    fn resolve_errors_say_what_went_wrong() {
        let none = failed(0, 0);
        assert_eq!(none.kind(), StoreErrorKind::Unavailable);
        let unknown = failed(2, 2);
        assert_eq!(unknown.kind(), StoreErrorKind::Other);
        let source = std::error::Error::source(&unknown).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("\"sessions\"") && s.contains("sentinel monitor"))
        );
        // Some sentinel named a primary that could not be used: a failover
        // may be under way.
        assert_eq!(failed(2, 1).kind(), StoreErrorKind::Unavailable);
    }

    #[test]
    fn errors_that_mean_a_failover() {
        let reply = |r: &str| {
            redis::parse_redis_value(format!("-{r}\r\n").as_bytes())
                .ok()
                .and_then(|v| v.extract_error().err())
        };
        for r in [
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert!(reply(r).is_some_and(|e| means_failover(&e)), "{r}");
        }
        for r in [
            "ERR unknown command",
            "NOSCRIPT No matching script",
            "OOM over maxmemory",
        ] {
            assert!(reply(r).is_some_and(|e| !means_failover(&e)), "{r}");
        }
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(means_failover(&dropped));
    }

    #[test]
    fn only_a_reset_connection_hints_at_tls() {
        let io = |k| RedisError::from(std::io::Error::from(k));
        use std::io::ErrorKind::*;
        for k in [ConnectionReset, UnexpectedEof, BrokenPipe] {
            assert!(reset_by_peer(&io(k)), "{k:?}");
        }
        for k in [ConnectionRefused, NotFound, TimedOut, InvalidData] {
            assert!(!reset_by_peer(&io(k)), "{k:?}");
        }
    }

    fn answer(at: &str, epoch: u64, named: &str, myid: Option<&str>, peers: &[&str]) -> Answer {
        let (host, port) = named.split_once(':').unwrap_or_default();
        Answer {
            epoch,
            host: host.into(),
            port: port.parse().unwrap_or_default(),
            at: at.into(),
            myid: myid.map(Into::into),
            peers: peers
                .iter()
                .map(|p| Peer {
                    runid: Some((*p).into()),
                    addr: None,
                })
                .collect(),
        }
    }

    #[test]
    fn only_answers_from_the_group_count() {
        // A lone answer counts, whatever it says.
        assert_eq!(in_group(&[answer("s:1", 9, "x:1", None, &[])]), [true]);
        assert!(in_group(&[]).is_empty());
        // Three members, one lagging behind a failover (older epoch, old
        // primary): all count, so the newest epoch still wins.
        let group = [
            answer("s:1", 1, "old:1", Some("a"), &["b", "c"]),
            answer("s:2", 2, "new:1", Some("b"), &["a", "c"]),
            answer("s:3", 1, "old:1", Some("c"), &["a", "b"]),
        ];
        assert_eq!(in_group(&group), [true, true, true]);
        // A stranger with the highest epoch, naming an address nobody else
        // names and known to nobody: it alone is left out, even when it
        // claims to know the others.
        let mut with_stranger = group.to_vec();
        with_stranger.insert(0, answer("z:1", 1_000_000, "evil:1", Some("z"), &["a"]));
        assert_eq!(in_group(&with_stranger), [false, true, true, true]);
        // …and when it claims a member's run id: that id vouches for
        // neither of the two, the member still counts by its address.
        with_stranger[0].myid = Some("a".into());
        assert_eq!(in_group(&with_stranger), [false, true, true, true]);
        // One stranger and one member: neither vouches for the other, and
        // they disagree: neither counts (503 rather than a guess).
        let pair = [
            answer("z:1", 7, "evil:1", Some("z"), &[]),
            answer("s:1", 1, "new:1", Some("a"), &["b"]),
        ];
        assert_eq!(in_group(&pair), [false, false]);
        // Without MYID (Redis < 6.2): a peer listed by the address the
        // sentinel was reached at, or the same address named, counts.
        let mut old = [
            answer("s:1", 2, "new:1", None, &[]),
            answer("s:2", 1, "old:1", None, &[]),
            answer("s:3", 1, "old:1", None, &[]),
        ];
        old[1].peers.push(Peer {
            runid: None,
            addr: Some("s:1".into()),
        });
        assert_eq!(in_group(&old), [true, true, true]);
    }

    #[test]
    fn junk_peer_lists_are_empty_not_panics() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |f: &[&str]| Value::Array(f.iter().map(|s| bulk(s)).collect());
        assert_eq!(
            peer_list(Value::Array(vec![
                entry(&["name", "x", "ip", "10.0.0.2", "port", "26379", "runid", "abc"]),
                entry(&["runid"]),
                entry(&["ip", "", "port", "1"]),
                Value::Int(1),
                bulk("runid"),
                Value::Map(vec![(bulk("runid"), bulk("def"))]),
            ])),
            [
                Peer {
                    runid: Some("abc".into()),
                    addr: Some("10.0.0.2:26379".into())
                },
                Peer {
                    runid: Some("def".into()),
                    addr: None
                }
            ]
        );
        for junk in [
            Value::Nil,
            Value::Int(3),
            bulk("x"),
            entry(&["runid", "abc"]),
        ] {
            assert!(peer_list(junk).is_empty());
        }
    }

    #[test]
    fn bad_sentinel_input_is_an_error_not_a_panic() {
        let options = SentinelOptions::new();
        assert!(SentinelConn::new(&["redis://127.0.0.1:26379"], "", &options).is_err());
        assert!(SentinelConn::new(&["::::"], "m", &options).is_err());
        let none: [&str; 0] = [];
        assert!(SentinelConn::new(&none, "m", &options).is_err());
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = |fields: &[&str]| Value::Array(fields.iter().map(|f| bulk(f)).collect());
        assert_eq!(
            master_info(reply(&[
                "name",
                "m",
                "ip",
                "10.0.0.1",
                "port",
                "6379",
                "config-epoch",
                "7"
            ])),
            Ok((7, "10.0.0.1".to_owned(), 6379))
        );
        for junk in [
            reply(&["ip", "10.0.0.1", "port", "99999", "config-epoch", "1"]),
            reply(&["ip", "", "port", "6379", "config-epoch", "1"]),
            reply(&["ip", "10.0.0.1", "port", "6379"]),
            reply(&["ip", "10.0.0.1", "port"]),
            Value::Int(1),
            Value::Array(vec![Value::Nil, Value::Nil]),
        ] {
            assert!(master_info(junk).is_err());
        }
        let huge = Value::BulkString(vec![b'x'; 1 << 20]);
        assert!(master_info(huge).is_err_and(|e| e.len() < 100));
        assert_eq!(text(&Value::Int(3)), None);
        assert_eq!(text(&Value::BulkString(vec![0xff])), None);
    }
}
