//! The store's operations: one statement each, or one `BEGIN IMMEDIATE`
//! transaction where links change.

use crate::store::sql_text::{escape, unescape};
use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};

use super::sql::Sql;
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{
    is_valid_link, ChangeSet, CycleOutcome, Items, Keep, Listed, Meta, Record, Renewal,
    SaveOutcome, Timestamp,
};

/// What every operation needs: the pool and the statements.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) pool: SqlitePool,
    pub(super) sql: Sql,
}

/// A time as SQLite's INTEGER (milliseconds since the epoch), clamped.
pub(super) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// SQLite's primary result codes that mean "the database cannot be used
/// right now" rather than "this statement is wrong".
const SQLITE_PERM: i64 = 3;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;
const SQLITE_AUTH: i64 = 23;

/// A sqlx error as a store error: the database unreachable, locked past the
/// busy timeout, or the pool out of connections or closed is 503; anything
/// else (constraint, decode, SQL) is 500.
/// Whether `e` is SQLite's "busy" or "locked": another connection holds the
/// lock.
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db
        .code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)))
}

pub(super) fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|code| {
                    matches!(
                        code & 0xff,
                        SQLITE_PERM
                            | SQLITE_BUSY
                            | SQLITE_LOCKED
                            | SQLITE_NOMEM
                            | SQLITE_READONLY
                            | SQLITE_IOERR
                            | SQLITE_FULL
                            | SQLITE_CANTOPEN
                            | SQLITE_PROTOCOL
                            | SQLITE_AUTH
                    )
                })
        }
        _ => false,
    };
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::other(e)
    }
}

/// The items as the JSON object stored in `items`.
pub(super) fn items_json(items: &Items) -> String {
    let map: serde_json::Map<String, serde_json::Value> = items
        .iter()
        .map(|(k, v)| {
            let v = serde_json::Value::String(escape(v).into_owned());
            (escape(k).into_owned(), v)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A change set's item changes as a JSON merge patch (RFC 7396, SQLite's
/// `json_patch`): a key to a string sets it, a key to `null` removes it.
fn patch_json(changes: &ChangeSet) -> String {
    let map: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|(k, v)| {
            let v = v.map_or(serde_json::Value::Null, |v| {
                serde_json::Value::String(escape(v).into_owned())
            });
            (escape(k).into_owned(), v)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The columns of [`Sql::load`] and [`Sql::list`] as what a list shows.
fn decode_listed(row: &SqliteRow) -> Result<Listed, String> {
    let text = |i: usize| row.try_get::<String, _>(i).map_err(|e| e.to_string());
    let int = |i: usize| row.try_get::<i64, _>(i).map_err(|e| e.to_string());
    let public_id: PublicId = text(0)?
        .parse()
        .map_err(|_| "public_id is not a public id".to_owned())?;
    let time = |i: usize| {
        int(i).and_then(|v| {
            u64::try_from(v)
                .map(Timestamp::from_millis)
                .map_err(|_| "a negative time".to_owned())
        })
    };
    let created_at = time(1)?;
    let expires_at = time(2)?;
    let idle = row
        .try_get::<Option<i64>, _>(3)
        .map_err(|e| e.to_string())?;
    let persistent = row
        .try_get::<Option<bool>, _>(4)
        .map_err(|e| e.to_string())?;
    let links: BTreeMap<String, String> =
        serde_json::from_str(&text(5)?).map_err(|e| format!("links: {e}"))?;
    let mut meta = Meta::new();
    for (name, value) in &links {
        meta.set_link(name, value);
    }
    if let Some(idle) = idle {
        let idle = u64::try_from(idle).map_err(|_| "a negative idle timeout".to_owned())?;
        meta.set_idle_timeout(Some(Duration::from_millis(idle)));
    }
    meta.set_persistent_cookie(persistent);
    Ok(Listed {
        public_id,
        created_at,
        expires_at,
        meta,
    })
}

fn decode_record(row: &SqliteRow) -> Result<Record, String> {
    let listed = decode_listed(row)?;
    let items = row.try_get::<String, _>(6).map_err(|e| e.to_string())?;
    let items: BTreeMap<String, String> =
        serde_json::from_str(&items).map_err(|e| format!("items: {e}"))?;
    if items.is_empty() {
        return Err("no items".to_owned());
    }
    Ok(Record {
        items: items
            .iter()
            .map(|(k, v)| (unescape(k), unescape(v)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (&**k, &**v))
            .collect(),
        created_at: listed.created_at,
        expires_at: listed.expires_at,
        public_id: listed.public_id,
        meta: listed.meta,
    })
}

pub(super) async fn load(
    inner: &Inner,
    id: SessionId,
    now: Timestamp,
) -> Result<Option<Record>, StoreError> {
    let id = id.to_string();
    let row = sqlx::query(&inner.sql.load)
        .bind(&id)
        .bind(ms(now))
        .fetch_optional(&inner.pool)
        .await
        .map_err(store_error)?;
    let Some(row) = row else { return Ok(None) };
    match decode_record(&row) {
        Ok(record) => Ok(Some(record)),
        Err(why) => {
            // Unreadable: deleted, logged, and treated as unknown (the
            // trait's rule), so that the client starts afresh.
            tracing::warn!(
                table = %inner.sql.table,
                reason = %why,
                "sqlite session store: deleting a session row that cannot be read"
            );
            sqlx::query(&inner.sql.delete)
                .bind(&id)
                .execute(&inner.pool)
                .await
                .map_err(store_error)?;
            Ok(None)
        }
    }
}

pub(super) async fn create(
    inner: &Inner,
    id: SessionId,
    record: Record,
) -> Result<bool, StoreError> {
    let insert = sqlx::query(&inner.sql.create)
        .bind(id.to_string())
        .bind(record.public_id.to_string())
        .bind(ms(record.created_at))
        .bind(ms(record.expires_at))
        .bind(items_json(&record.items))
        .bind(record.meta.idle_timeout().map(duration_ms))
        .bind(record.meta.persistent_cookie());
    if !record.meta.has_links() {
        // One statement.
        let done = insert.execute(&inner.pool).await.map_err(store_error)?;
        return Ok(done.rows_affected() == 1);
    }
    let mut tx = begin(inner).await?;
    let done = insert.execute(&mut *tx).await.map_err(store_error)?;
    if done.rows_affected() != 1 {
        return Ok(false); // dropped: rolled back, nothing was written
    }
    let public_id = record.public_id.to_string();
    for (name, value) in record.meta.links() {
        sqlx::query(&inner.sql.link)
            .bind(&public_id)
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(true)
}

/// A write transaction that takes SQLite's writer lock at once (`BEGIN
/// IMMEDIATE`): a deferred one that reads first and then writes cannot
/// wait for the lock (SQLite answers `SQLITE_BUSY` at once to avoid a
/// deadlock), an immediate one waits up to the busy timeout.
async fn begin(inner: &Inner) -> Result<Transaction<'static, Sqlite>, StoreError> {
    inner
        .pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)
}

/// What a save's or a cycle's `UPDATE … RETURNING` answered.
enum Applied {
    Gone,
    Emptied,
    Kept(String),
}

fn applied(row: Option<SqliteRow>) -> Result<Applied, StoreError> {
    let Some(row) = row else {
        return Ok(Applied::Gone);
    };
    let emptied: bool = row.try_get(1).map_err(store_error)?;
    if emptied {
        return Ok(Applied::Emptied);
    }
    let public_id: String = row.try_get(0).map_err(store_error)?;
    Ok(Applied::Kept(public_id))
}

/// Binds the change set to [`Sql::save`] or [`Sql::cycle`] (`?1` to `?8`).
fn bind_changes<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    id: String,
    changes: &ChangeSet,
    at: Renewal,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(id)
        .bind(changes.cleared())
        .bind(patch_json(changes))
        .bind(changes.sets_idle_timeout())
        .bind(ms(at.expires_at))
        .bind(changes.idle_timeout().map(duration_ms))
        .bind(changes.persistent_cookie())
        .bind(ms(at.now))
}

/// Applies a change set's link changes to the session named `public_id`.
async fn relink(
    inner: &Inner,
    tx: &mut Transaction<'static, Sqlite>,
    public_id: &str,
    changes: &ChangeSet,
) -> Result<(), StoreError> {
    for (name, value) in changes.links() {
        let q = match value {
            Some(v) if is_valid_link(name, v) => sqlx::query(&inner.sql.link)
                .bind(public_id)
                .bind(name)
                .bind(v),
            Some(_) => continue, // as `Meta::apply` does
            None => sqlx::query(&inner.sql.unlink).bind(public_id).bind(name),
        };
        q.execute(&mut **tx).await.map_err(store_error)?;
    }
    Ok(())
}

pub(super) async fn save(
    inner: &Inner,
    id: SessionId,
    changes: ChangeSet,
    at: Renewal,
) -> Result<SaveOutcome, StoreError> {
    let q = bind_changes(sqlx::query(&inner.sql.save), id.to_string(), &changes, at);
    if changes.links().next().is_none() {
        // One statement: the items patched in place, the expiry, the
        // lifetime settings; a session left empty is deleted by the
        // trigger within it.
        let row = q.fetch_optional(&inner.pool).await.map_err(store_error)?;
        return Ok(match applied(row)? {
            Applied::Gone => SaveOutcome::Gone,
            Applied::Emptied => SaveOutcome::Deleted,
            Applied::Kept(_) => SaveOutcome::Saved,
        });
    }
    let mut tx = begin(inner).await?;
    let row = q.fetch_optional(&mut *tx).await.map_err(store_error)?;
    let outcome = match applied(row)? {
        Applied::Gone => SaveOutcome::Gone,
        Applied::Emptied => SaveOutcome::Deleted,
        Applied::Kept(public_id) => {
            relink(inner, &mut tx, &public_id, &changes).await?;
            SaveOutcome::Saved
        }
    };
    tx.commit().await.map_err(store_error)?;
    Ok(outcome)
}

pub(super) async fn cycle(
    inner: &Inner,
    old: SessionId,
    new: SessionId,
    changes: ChangeSet,
    at: Renewal,
) -> Result<CycleOutcome, StoreError> {
    let new = new.to_string();
    let mut tx = begin(inner).await?;
    let taken = sqlx::query(&inner.sql.taken)
        .bind(&new)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
    if taken.is_some() {
        return Ok(CycleOutcome::Collision); // rolled back: nothing changed
    }
    let row = bind_changes(sqlx::query(&inner.sql.cycle), old.to_string(), &changes, at)
        .bind(&new)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
    let outcome = match applied(row)? {
        Applied::Gone => CycleOutcome::Gone,
        Applied::Emptied => CycleOutcome::Deleted,
        Applied::Kept(public_id) => {
            relink(inner, &mut tx, &public_id, &changes).await?;
            CycleOutcome::Moved
        }
    };
    tx.commit().await.map_err(store_error)?;
    Ok(outcome)
}

pub(super) async fn delete(inner: &Inner, id: SessionId) -> Result<(), StoreError> {
    sqlx::query(&inner.sql.delete)
        .bind(id.to_string())
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(())
}

pub(super) async fn end(
    inner: &Inner,
    id: SessionId,
    public_id: PublicId,
) -> Result<(), StoreError> {
    sqlx::query(&inner.sql.end)
        .bind(id.to_string())
        .bind(public_id.to_string())
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(())
}

pub(super) async fn touch(inner: &Inner, id: SessionId, at: Renewal) -> Result<bool, StoreError> {
    let done = sqlx::query(&inner.sql.touch)
        .bind(id.to_string())
        .bind(ms(at.expires_at))
        .bind(ms(at.now))
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn list(
    inner: &Inner,
    name: String,
    value: String,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Listed>, StoreError> {
    let rows = sqlx::query(&inner.sql.list)
        .bind(name)
        .bind(value)
        .bind(ms(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&inner.pool)
        .await
        .map_err(store_error)?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in &rows {
        match decode_listed(row) {
            Ok(l) => listed.push(l),
            // Left out here; a load of it deletes it.
            Err(why) => tracing::warn!(
                table = %inner.sql.table,
                reason = %why,
                "sqlite session store: a linked session row cannot be read"
            ),
        }
    }
    Ok(Listed::newest(listed, limit))
}

pub(super) async fn end_linked(
    inner: &Inner,
    name: String,
    value: String,
    keep: Keep,
) -> Result<usize, StoreError> {
    let done = sqlx::query(&inner.sql.end_linked)
        .bind(name)
        .bind(value)
        .bind(keep.session.map(|p| p.to_string()))
        .bind(i64::try_from(keep.newest).unwrap_or(i64::MAX))
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

pub(super) async fn end_public(inner: &Inner, public_id: PublicId) -> Result<bool, StoreError> {
    let done = sqlx::query(&inner.sql.end_public)
        .bind(public_id.to_string())
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(done.rows_affected() > 0)
}

/// Deletes up to `batch` expired sessions (by the `expires_at` index).
pub(super) async fn delete_expired_batch(
    inner: &Inner,
    now: Timestamp,
    batch: usize,
) -> Result<u64, StoreError> {
    let done = sqlx::query(&inner.sql.delete_expired)
        .bind(ms(now))
        .bind(i64::try_from(batch).unwrap_or(i64::MAX))
        .execute(&inner.pool)
        .await
        .map_err(store_error)?;
    Ok(done.rows_affected())
}

pub(super) async fn migrate(inner: &Inner) -> Result<(), StoreError> {
    // One immediate transaction: several processes migrating at once take
    // turns (each waits for the writer lock up to the busy timeout), and
    // every statement is `IF NOT EXISTS`.
    let mut tx = begin(inner).await?;
    for statement in &inner.sql.migrate {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)
}
