//! [`PostgresStore`]: sessions in PostgreSQL, shared by every app instance
//! that uses the same database (feature `postgres`, on sqlx 0.8).
//!
//! # Setup
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_session_storage::StoreError> {
//! use std::time::Duration;
//! use tower_session_storage::{PostgresStore, SessionLayer};
//!
//! let store = PostgresStore::connect("postgres://app@localhost/app").await?;
//! store.migrate().await?; // creates the tables if missing; safe from many instances
//! tokio::spawn(store.clone().deletion_task(Duration::from_secs(60)));
//! let layer = SessionLayer::new(store);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! Or with the app's own pool: `PostgresStore::new(pool)`. The table name is
//! `sessions` unless [`with_table_name`](PostgresStore::with_table_name)
//! says otherwise (`"table"` or `"schema.table"`, letters, digits and `_`
//! only: the name is checked, never escaped).
//!
//! # Schema
//!
//! [`migrate`](PostgresStore::migrate) creates, if missing (under a
//! transaction-level advisory lock, so many instances starting at once do
//! not race each other):
//!
//! ```sql
//! CREATE TABLE sessions (
//!     id              TEXT PRIMARY KEY,        -- the session id (36 characters)
//!     public_id       TEXT NOT NULL UNIQUE,    -- its public id (32 hex digits), kept across cycle_id
//!     created_at      BIGINT NOT NULL,         -- ms since the Unix epoch
//!     expires_at      BIGINT NOT NULL,         -- ms since the Unix epoch
//!     items           JSONB NOT NULL,          -- {"key": "value", ...}, strings only
//!     idle_timeout_ms BIGINT NULL,             -- the session's own idle timeout
//!     persistent      BOOLEAN NULL             -- the session's own cookie persistence
//! );
//! CREATE INDEX sessions_expires ON sessions (expires_at);
//! CREATE TABLE sessions_links (
//!     public_id TEXT NOT NULL REFERENCES sessions (public_id) ON DELETE CASCADE,
//!     name      TEXT NOT NULL,
//!     value     TEXT NOT NULL,
//!     PRIMARY KEY (public_id, name)
//! );
//! CREATE INDEX sessions_links_nv ON sessions_links (name, value);
//! ```
//!
//! Links (the [`SessionRegistry`](crate::SessionRegistry)'s index) are keyed
//! by the public id, which a cycle does not change, and go with their
//! session on every delete (`ON DELETE CASCADE`).
//!
//! # What is atomic, and what each operation costs
//!
//! Every operation is **one statement**, so one round trip, and atomic
//! (PostgreSQL runs a statement in its own transaction):
//!
//! | Operation | Statement |
//! |---|---|
//! | load | `SELECT` of the row (its links by sub-select), live rows only |
//! | create | `INSERT … ON CONFLICT (id) DO NOTHING`, links in the same statement: a taken id is a collision, not an error |
//! | save that only sets items (the common write) | one `UPDATE … SET items = items \|\| $set` of the row if it exists and has not expired; the expiry moves forward only, unless a new idle timeout sets it |
//! | any other save | one statement: lock the row if it exists and has not expired (`SELECT … FOR UPDATE`), apply the per-key change set in the database (`(items - removed) \|\| set`), delete the row if that left no items, move the expiry (forward only, unless a new idle timeout sets it), and apply link changes |
//! | cycle | the same statement, also moving the row to the new id (`UPDATE … SET id`); a taken new id fails the whole statement with a unique violation, which is [`CycleOutcome::Collision`](crate::store::CycleOutcome::Collision): nothing changed |
//! | touch | `UPDATE` of the expiry, only forward and only when it moves |
//! | delete / end | `DELETE … WHERE id = $1` / `… OR public_id = $2` |
//! | list | a `SELECT` joining the links index (newest first, `LIMIT`) |
//! | end_linked / end_public | one `DELETE` by public id |
//!
//! A round trip per statement, plus sqlx's pool's own: with its defaults
//! it pings a connection before handing it out and again when it comes
//! back (after the response). `PgPoolOptions::test_before_acquire(false)`
//! on your pool saves the first; a connection that died while idle then
//! fails one request with `503` before the pool replaces it.
//!
//! So concurrent requests writing different keys of one session keep each
//! other's writes (the app never writes a whole record back), and a logout
//! is never undone: a save or cycle after it finds no row and writes
//! nothing. `end` deletes by the public id too, which a cycle keeps: when a
//! cycle and a logout race, the second one to lock the row sees what the
//! first did (PostgreSQL re-checks the `WHERE` against the row's newest
//! version), so the session ends under whichever id it has.
//!
//! # Expiry and cleanup
//!
//! PostgreSQL has no TTL. Loads and writes ignore rows whose `expires_at`
//! has passed, so an expired session is gone at once for the app; the rows
//! themselves are deleted by [`deletion_task`](PostgresStore::deletion_task),
//! a future the app spawns: each tick it deletes expired rows in batches of
//! 1,000 (by the `expires_at` index, `FOR UPDATE SKIP LOCKED`, so several
//! instances running it do not wait on each other), never one huge
//! `DELETE`. [`delete_expired`](PostgresStore::delete_expired) runs one pass
//! on demand.
//!
//! # Failures
//!
//! - A database that is down or unreachable, a connection lost mid-query, a
//!   pool timeout, a server shutting down or refusing connections: the
//!   error is [`StoreErrorKind::Unavailable`](crate::StoreErrorKind): the
//!   request answers `503 Service Unavailable`, never an empty session. sqlx's
//!   pool reconnects by itself: requests succeed again once the server is
//!   back, without restarting the app.
//! - Any other database error (SQL, constraint, decoding) is
//!   [`StoreErrorKind::Other`](crate::StoreErrorKind): `500`, with the
//!   database's message in the error.
//! - A row that cannot be read (`items` not a JSON object of strings, a
//!   malformed public id) is deleted, logged (`tracing::warn!`) and loaded as
//!   no session, as [`SessionStore::load`](crate::SessionStore::load) asks.

mod ops;
mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use self::sql::{Queries, TableName};
use crate::error::StoreError;
use crate::time::Timestamp;

/// How many expired rows [`PostgresStore::deletion_task`] deletes per
/// statement.
const CLEANUP_BATCH: i64 = 1000;

/// Sessions in PostgreSQL: see the [module docs](self) for the schema, what
/// is atomic and cleanup.
///
/// Cloning is cheap (the pool and the prepared SQL are shared).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    name: Arc<TableName>,
    sql: Arc<Queries>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table_name())
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

impl PostgresStore {
    /// A store on the app's own pool, using the table `sessions`. Run
    /// [`migrate`](Self::migrate) once before use (at start-up).
    pub fn new(pool: PgPool) -> Self {
        let name = TableName {
            schema: None,
            table: "sessions".into(),
        };
        Self {
            pool,
            sql: Arc::new(Queries::new(&name)),
            name: Arc::new(name),
        }
    }

    /// Connects a pool to `url` (`postgres://user:password@host/database`)
    /// and makes a store on it. The pool waits at most 5 seconds for a
    /// connection (a request then answers `503`); build your own pool and
    /// use [`new`](Self::new) for other settings.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(ops::store_error)?;
        Ok(Self::new(pool))
    }

    /// Uses the table `name` (`"table"` or `"schema.table"`) instead of
    /// `sessions`; the links table is `<table>_links`. Each part starts with
    /// an ASCII letter or `_` and holds only ASCII letters, digits and `_`
    /// (the table part at most 54 bytes, leaving room for the suffixes
    /// within PostgreSQL's 63-byte names); anything else is refused with an
    /// error, so a name from configuration can never inject SQL. Names are
    /// quoted, so they are case-sensitive.
    pub fn with_table_name(mut self, name: &str) -> Result<Self, StoreError> {
        let parsed = TableName::parse(name).ok_or_else(|| {
            StoreError::other(format!(
                "invalid session table name {name:?}: expected \"table\" or \"schema.table\", \
                 each [A-Za-z_][A-Za-z0-9_]*, the table at most {} bytes",
                sql::MAX_TABLE
            ))
        })?;
        self.sql = Arc::new(Queries::new(&parsed));
        self.name = Arc::new(parsed);
        Ok(self)
    }

    /// The table's name, as given (`table` or `schema.table`).
    pub fn table_name(&self) -> String {
        match &self.name.schema {
            Some(s) => format!("{s}.{}", self.name.table),
            None => self.name.table.clone(),
        }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the tables and indexes if they do not exist. Idempotent, and
    /// safe to run from many instances at once: it runs in one transaction
    /// under one advisory lock for every table of this crate (a lock per
    /// table would let two tables in one new schema, or one table spelled
    /// `t` and `public.t`, race on the catalog).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(ops::store_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key("migrate"))
            .execute(&mut *tx)
            .await
            .map_err(ops::store_error)?;
        for statement in &self.sql.migrate {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(ops::store_error)?;
        }
        tx.commit().await.map_err(ops::store_error)
    }

    /// Deletes expired rows (those whose expiry is before now), in batches
    /// of 1,000 until none is left. Returns how many it deleted.
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n: i64 = sqlx::query_scalar(&self.sql.delete_expired)
                .bind(ops::ms(Timestamp::now()))
                .bind(CLEANUP_BATCH)
                .fetch_one(&self.pool)
                .await
                .map_err(ops::store_error)?;
            total += u64::try_from(n).unwrap_or(0);
            if n < CLEANUP_BATCH {
                return Ok(total);
            }
            // Let other work in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// A future that deletes expired rows every `interval`
    /// ([`delete_expired`](Self::delete_expired)), forever. Spawn it once
    /// per instance (several instances may run it: they skip each other's
    /// locked rows):
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_storage::PostgresStore) {
    /// tokio::spawn(store.clone().deletion_task(std::time::Duration::from_secs(60)));
    /// # }
    /// ```
    ///
    /// A failed pass (the database down) is logged and retried at the next
    /// tick. Sessions that have expired are never loaded meanwhile.
    pub async fn deletion_task(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.delete_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired sessions deleted"),
                Err(e) => tracing::warn!(error = %e, "expired session cleanup failed"),
            }
        }
    }
}

/// An advisory lock's key: FNV-1a of the crate's name and `name`.
fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"tower-session-storage:".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}
