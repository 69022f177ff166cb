//! [`SqliteStore`]: sessions in a SQLite database, durable across restarts
//! (feature `sqlite`, on [sqlx]).
//!
//! # Setup
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_session_storage::{SessionLayer, SqliteStore};
//!
//! # async fn run() -> Result<(), tower_session_storage::StoreError> {
//! let store = SqliteStore::connect("sqlite://sessions.db?mode=rwc").await?;
//! store.migrate().await?; // creates the tables if they are missing
//! tokio::spawn(store.clone().deletion_task(Duration::from_secs(60)));
//! let layer = SessionLayer::new(store);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! [`SqliteStore::connect`] opens a pool set up for a session store (below);
//! [`SqliteStore::new`] takes the app's own [`SqlitePool`] instead.
//! [`migrate`](SqliteStore::migrate) is idempotent and safe to run from
//! several processes at once (one `BEGIN IMMEDIATE` transaction of
//! `CREATE … IF NOT EXISTS` statements: they take turns).
//!
//! # Connection settings ([`connect`](SqliteStore::connect))
//!
//! - **WAL journal** (`journal_mode=WAL`, `synchronous=NORMAL`): readers do
//!   not block the writer nor the writer the readers, so every request's
//!   load runs while another request saves; a commit is an append to the
//!   log, not a rewrite of the pages. `NORMAL` is durable across a crash of
//!   the app; a power loss may lose the last commits (sessions written in
//!   the last moments), never corrupt the file.
//! - **A busy timeout of 5 s**: SQLite has one writer at a time; a write
//!   that finds the lock taken waits for it (a session write holds it for
//!   well under a millisecond) instead of failing at once, and a database
//!   locked for longer (a long transaction of another process, a stuck
//!   backup) fails the request with 503 rather than hanging it.
//! - **A pool acquire timeout of 5 s** for the same reason: a pool with no
//!   free connection is a 503, not a request that waits for ever.
//! - An in-memory database (`mode=memory`, shared cache) keeps one
//!   connection open for the pool's whole life, or the database would
//!   vanish with its last connection.
//!
//! A pool passed to [`new`](SqliteStore::new) keeps its own settings; use
//! WAL and a busy timeout there too.
//!
//! # Schema
//!
//! One row per session, in a table named `sessions` by default
//! ([`with_table_name`](SqliteStore::with_table_name)):
//!
//! | column | type | |
//! |---|---|---|
//! | `id` | `TEXT PRIMARY KEY` | the [`SessionId`] (36 characters) |
//! | `public_id` | `TEXT UNIQUE` | the [`PublicId`] (32 hex digits), kept across `cycle_id` |
//! | `created_at`, `expires_at` | `INTEGER` | milliseconds since the Unix epoch; `expires_at` indexed |
//! | `items` | `TEXT` | a JSON object, key to value (both strings) |
//! | `idle_timeout_ms` | `INTEGER NULL` | the session's own idle timeout |
//! | `persistent` | `INTEGER NULL` | the session's own cookie persistence |
//!
//! and its links in `<table>_links` (`public_id`, `name`, `value`; primary
//! key (`public_id`, `name`), indexed by (`name`, `value`)). Two triggers
//! keep them consistent inside every statement: deleting a session deletes
//! its links, and a write that leaves a session with no items deletes it.
//!
//! # What is atomic
//!
//! | Operation | Statements | How |
//! |---|---|---|
//! | load | 1 | `SELECT … WHERE id = ? AND expires_at > now` (links in a subquery) |
//! | create | 1 (+1 per link, in one transaction) | `INSERT … ON CONFLICT (id) DO NOTHING`: a taken id is a collision, not an error |
//! | save | 1 (a transaction when links change) | `UPDATE … SET items = json_patch(items, ?) … WHERE id = ? AND expires_at > now` |
//! | cycle | 2 or more, one transaction | check the new id is free, then `UPDATE … SET id = new, …` |
//! | touch | 1 | `UPDATE … SET expires_at = MAX(expires_at, ?)` |
//! | delete, end | 1 | `DELETE … WHERE id = ? OR public_id = ?` |
//! | list | 1 | join of the links index and the sessions, newest `limit` |
//! | end_linked, end_public | 1 | `DELETE … WHERE public_id IN (…)` |
//!
//! A save applies the request's **per-key change set** inside SQLite with
//! `json_patch` (a JSON merge patch: the keys set, the keys removed as
//! `null`), so two requests writing different keys keep each other's
//! writes; nothing reads the whole record into the app and writes it back.
//! It changes nothing when the session was deleted or has expired (a logout
//! is never undone by a request that was in flight). The expiry moves only
//! forward, unless the change set gives the session a new idle timeout.
//! `cycle` moves the row by changing its `id` and keeps its `public_id`, so
//! `end` (by id **or** public id) ends the session wherever a concurrent
//! cycle moved it; SQLite runs one write at a time, so whichever of the two
//! comes second sees the other's work. Transactions start with `BEGIN
//! IMMEDIATE`, taking the writer lock before they read, so two of them never
//! deadlock on upgrading a read lock. A store call dropped halfway (the
//! client went away) rolls its transaction back.
//!
//! # Expiry and cleanup
//!
//! SQLite has no TTL. Loads, saves and touches refuse expired rows, so an
//! expired session is gone for the app at once; the rows themselves are
//! deleted by [`deletion_task`](SqliteStore::deletion_task), a future the app
//! spawns, which every `interval` deletes expired rows in batches of 1 000
//! (by the `expires_at` index, yielding between batches so requests' writes
//! get the lock), never in one long statement.
//!
//! # Failures
//!
//! A database that cannot be opened or read (file missing, a directory in
//! its place, I/O errors, disk full), locked past the busy timeout, or a pool
//! that timed out or was closed: [`StoreError::unavailable`] (503), never an
//! empty session. SQL, constraint or decode errors: [`StoreError::other`]
//! (500). sqlx's pool opens new connections as needed, so the store recovers
//! by itself once the database is back. A row whose data cannot be read
//! (`items` that is not a JSON object of strings, a bad public id) is
//! logged, deleted, and treated as unknown: the client starts a new session.
//!
//! [sqlx]: https://docs.rs/sqlx
//! [`SessionId`]: crate::SessionId
//! [`PublicId`]: crate::PublicId

mod ops;
mod sql;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use self::ops::Inner;
use self::sql::{check_table_name, Sql};
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{
    ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, SessionStore, StoreFuture,
    Timestamp,
};

/// The default table name.
const DEFAULT_TABLE: &str = "sessions";
/// How many expired rows one cleanup statement deletes at most.
const CLEANUP_BATCH: usize = 1000;
/// How long a write waits for SQLite's writer lock, and a request for a
/// pooled connection, before it fails with 503 ([`SqliteStore::connect`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions in a SQLite database (feature `sqlite`). See the
/// [module docs](self) for the schema, what is atomic and cleanup.
///
/// Cheap to clone (an `Arc` inside); every clone uses the same pool.
///
/// # Example
///
/// ```
/// use tower_session_storage::{SessionLayer, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_session_storage::StoreError> {
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let layer = SessionLayer::new(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.inner.sql.table)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A store on the app's own pool, using the table `sessions`. Run
    /// [`migrate`](Self::migrate) once before use.
    ///
    /// The pool keeps its own settings: use the WAL journal and a busy
    /// timeout (see the [module docs](self#connection-settings-connect)).
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_sql(pool, Sql::new(DEFAULT_TABLE))
    }

    fn with_sql(pool: SqlitePool, sql: Sql) -> Self {
        Self {
            inner: Arc::new(Inner { pool, sql }),
        }
    }

    /// Opens a pool on `url` (`sqlite://sessions.db?mode=rwc` creates the
    /// file if it is missing; `sqlite::memory:` or
    /// `sqlite:file:NAME?mode=memory&cache=shared` is an in-memory database)
    /// with the WAL journal, `synchronous=NORMAL`, a 5 s busy timeout and a
    /// 5 s acquire timeout (why: see the [module docs](self)).
    ///
    /// Fails with 503 ([`StoreError::unavailable`]) when the database cannot
    /// be opened, and with [`StoreError::other`] for a malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::other)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new().acquire_timeout(BUSY_TIMEOUT);
        if in_memory {
            // The database lives as long as one connection to it.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        // Switching a new file to WAL takes the write lock and cannot wait on
        // the busy timeout (SQLite runs that pragma before it applies): when
        // several processes open a new file at once, all but one find it
        // locked. Try again, for up to the busy timeout.
        let started = std::time::Instant::now();
        let pool = loop {
            match pool.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(e) if ops::is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(ops::store_error(e)),
            }
        };
        Ok(Self::new(pool))
    }

    /// Uses the table `name` (and `<name>_links`) instead of `sessions`.
    ///
    /// The name is checked, since it is written into every statement: 1 to
    /// 63 ASCII letters, digits and `_`, not starting with a digit or with
    /// `sqlite_`. Anything else is refused with [`StoreError::other`]
    /// naming the rule. The default is `sessions`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_session_storage::StoreError> {
    /// use tower_session_storage::SqliteStore;
    ///
    /// let store = SqliteStore::connect("sqlite::memory:").await?;
    /// let store = store.with_table_name("app_sessions")?;
    /// store.migrate().await?;
    /// assert!(SqliteStore::connect("sqlite::memory:").await?.with_table_name("x; DROP TABLE y").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_table_name(self, name: &str) -> Result<Self, StoreError> {
        if let Some(why) = check_table_name(name) {
            return Err(StoreError::other(format!(
                "invalid SQLite table name {name:?}: {why}"
            )));
        }
        Ok(Self::with_sql(self.inner.pool.clone(), Sql::new(name)))
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The table the sessions are in.
    pub fn table_name(&self) -> &str {
        &self.inner.sql.table
    }

    /// Creates the tables, indexes and triggers if they are missing.
    /// Idempotent, and safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        ops::migrate(&self.inner).await
    }

    /// Deletes every session that has expired by now, in batches of 1 000,
    /// and returns how many. [`deletion_task`](Self::deletion_task) calls it
    /// on every tick.
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = ops::delete_expired_batch(&self.inner, Timestamp::now(), CLEANUP_BATCH).await?;
            total += n;
            if n < CLEANUP_BATCH as u64 {
                return Ok(total);
            }
            // Let the requests' writes take the lock between batches.
            tokio::task::yield_now().await;
        }
    }

    /// A future that deletes expired sessions every `interval`, for ever:
    /// spawn it (`tokio::spawn(store.clone().deletion_task(interval))`).
    /// A failed pass is logged and retried at the next tick. Without it,
    /// expired rows are never served but stay in the file.
    pub async fn deletion_task(self, interval: Duration) {
        // `interval` panics on zero: at least a millisecond, as PostgreSQL's.
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.delete_expired().await {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired sessions deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    error = %crate::error::Chain(&e),
                    "sqlite session store: deleting expired sessions failed"
                ),
            }
        }
    }
}

impl SessionStore for SqliteStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        let (inner, id) = (self.inner.clone(), *id);
        StoreFuture::new(async move { ops::load(&inner, id, now).await })
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        let (inner, id, record) = (self.inner.clone(), *id, record.clone());
        StoreFuture::new(async move { ops::create(&inner, id, record).await })
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        let (inner, id, changes) = (self.inner.clone(), *id, changes.clone());
        StoreFuture::new(async move { ops::save(&inner, id, changes, at).await })
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        let (inner, old, new, changes) = (self.inner.clone(), *old, *new, changes.clone());
        StoreFuture::new(async move { ops::cycle(&inner, old, new, changes, at).await })
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        let (inner, id) = (self.inner.clone(), *id);
        StoreFuture::new(async move { ops::delete(&inner, id).await })
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        let (inner, id, public_id) = (self.inner.clone(), *id, *public_id);
        StoreFuture::new(async move { ops::end(&inner, id, public_id).await })
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        let (inner, id) = (self.inner.clone(), *id);
        StoreFuture::new(async move { ops::touch(&inner, id, at).await })
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let (inner, name, value) = (self.inner.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { ops::list(&inner, name, value, now, limit).await })
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let (inner, name, value) = (self.inner.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { ops::end_linked(&inner, name, value, keep).await })
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let (inner, public_id) = (self.inner.clone(), *public_id);
        StoreFuture::new(async move { ops::end_public(&inner, public_id).await })
    }

    /// `SELECT 1` through the pool, bounded by the pool's acquire timeout
    /// (5 s with [`SqliteStore::connect`]).
    fn ping(&self) -> StoreFuture<()> {
        let pool = self.inner.pool.clone();
        StoreFuture::new(async move {
            let limit = pool.options().get_acquire_timeout();
            match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&pool)).await {
                Ok(r) => r.map(drop).map_err(ops::store_error),
                Err(_) => Err(StoreError::unavailable(format!(
                    "SQLite did not answer SELECT 1 within {limit:?} (the pool's acquire timeout)"
                ))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}
