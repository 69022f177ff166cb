//! The [`SessionStore`] operations: one statement each.

use crate::store::sql_text::{escape, unescape};
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::PostgresStore;
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{
    is_valid_link, ChangeSet, CycleOutcome, Items, Keep, Listed, Meta, Record, Renewal,
    SaveOutcome, SessionStore, StoreFuture,
};
use crate::time::Timestamp;

/// A time as the BIGINT milliseconds the table holds.
pub(super) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// sqlx's error as the layer's: unreachable, lost or overloaded is
/// `Unavailable` (503); anything else is `Other` (500).
pub(super) fn store_error(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // Class 08: connection exception; 57P01..57P03: the server is
            // shutting down or starting; 53300: too many connections;
            // 40001 / 40P01: serialization failure / deadlock (retry).
            c.starts_with("08")
                || matches!(
                    &*c,
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }),
        _ => false,
    };
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::other(e)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// A row that cannot be read.
#[derive(Debug)]
struct Corrupt(&'static str);

/// Items from the `items` column's JSON text: an object of strings.
fn decode_items(text: &str) -> Result<Items, Corrupt> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|_| Corrupt("items is not a JSON object"))?;
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in &map {
        match v {
            Value::String(s) => pairs.push((unescape(k), unescape(s))),
            _ => return Err(Corrupt("an item's value is not a string")),
        }
    }
    Ok(pairs.iter().map(|(k, v)| (&**k, &**v)).collect())
}

/// The session's meta from its row's meta columns.
fn decode_meta(row: &PgRow) -> Result<Meta, sqlx::Error> {
    let idle: Option<i64> = row.try_get("idle_timeout_ms")?;
    let persistent: Option<bool> = row.try_get("persistent")?;
    let links: Option<String> = row.try_get("links")?;
    let mut changes = ChangeSet::new();
    for link in links.as_deref().unwrap_or("").split('\x1e') {
        if let Some((n, v)) = link.split_once('\x1f') {
            changes.link(n, v);
        }
    }
    if let Some(ms) = idle {
        changes.set_idle_timeout(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    }
    if let Some(p) = persistent {
        changes.set_persistent_cookie(p);
    }
    Ok(Meta::new().applied(&changes))
}

fn decode_public_id(row: &PgRow) -> Result<Result<PublicId, Corrupt>, sqlx::Error> {
    let text: String = row.try_get("public_id")?;
    Ok(text.parse().map_err(|_| Corrupt("malformed public_id")))
}

/// The item part of a change set as statement parameters: whether it
/// clears, the removed keys, the set items as a JSON object.
fn item_params(changes: &ChangeSet) -> (bool, Vec<String>, String) {
    let mut removed = Vec::new();
    let mut set = Map::new();
    for (k, v) in changes.iter() {
        match v {
            Some(v) => {
                set.insert(
                    escape(k).into_owned(),
                    Value::String(escape(v).into_owned()),
                );
            }
            None => removed.push(escape(k).into_owned()),
        }
    }
    (changes.cleared(), removed, Value::Object(set).to_string())
}

/// The items of a record as a JSON object.
fn items_json(items: &Items) -> String {
    let map: Map<String, Value> = items
        .iter()
        .map(|(k, v)| {
            (
                escape(k).into_owned(),
                Value::String(escape(v).into_owned()),
            )
        })
        .collect();
    Value::Object(map).to_string()
}

/// The link part of a change set: names to unlink, names and values to
/// link (a link the rules refuse is skipped, as [`Meta::apply`] does).
fn link_params(changes: &ChangeSet) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut unlink, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (name, value) in changes.links() {
        match value {
            Some(v) if is_valid_link(name, v) => {
                names.push(name.to_owned());
                values.push(v.to_owned());
            }
            Some(_) => {}
            None => unlink.push(name.to_owned()),
        }
    }
    (unlink, names, values)
}

/// Binds the common parameters of save and cycle (`$1`..`$13`).
fn apply_query<'q>(
    sql: &'q str,
    id: &SessionId,
    changes: &ChangeSet,
    at: Renewal,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (cleared, removed, set) = item_params(changes);
    let (unlink, names, values) = link_params(changes);
    sqlx::query(sql)
        .bind(id.to_string())
        .bind(cleared)
        .bind(removed)
        .bind(set)
        .bind(ms(at.now))
        .bind(ms(at.expires_at))
        .bind(changes.sets_idle_timeout())
        .bind(changes.idle_timeout().map(duration_ms))
        .bind(changes.persistent_cookie().is_some())
        .bind(changes.persistent_cookie())
        .bind(unlink)
        .bind(names)
        .bind(values)
}

/// `found` and `deleted` of a save or cycle statement.
fn applied(row: &PgRow) -> Result<(bool, bool), sqlx::Error> {
    let found: i64 = row.try_get("found")?;
    let deleted: i64 = row.try_get("deleted")?;
    Ok((found > 0, deleted > 0))
}

impl PostgresStore {
    async fn do_load(&self, id: SessionId, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(&self.sql.load)
            .bind(id.to_string())
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else { return Ok(None) };
        let decoded = (|| -> Result<Result<Record, Corrupt>, sqlx::Error> {
            let public_id = match decode_public_id(&row)? {
                Ok(p) => p,
                Err(c) => return Ok(Err(c)),
            };
            let items_text: String = row.try_get("items")?;
            let items = match decode_items(&items_text) {
                Ok(items) => items,
                Err(c) => return Ok(Err(c)),
            };
            Ok(Ok(Record {
                items,
                created_at: ts(row.try_get("created_at")?),
                expires_at: ts(row.try_get("expires_at")?),
                public_id,
                meta: decode_meta(&row)?,
            }))
        })()
        .map_err(store_error)?;
        match decoded {
            Ok(record) => Ok(Some(record)),
            Err(Corrupt(why)) => {
                tracing::warn!(
                    table = %self.table_name(),
                    reason = why,
                    "unreadable session row deleted"
                );
                sqlx::query(&self.sql.delete)
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(None)
            }
        }
    }

    async fn do_create(&self, id: SessionId, record: Record) -> Result<bool, StoreError> {
        let (names, values): (Vec<String>, Vec<String>) = record
            .meta
            .links()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .unzip();
        let n: i64 = sqlx::query_scalar(&self.sql.create)
            .bind(id.to_string())
            .bind(record.public_id.to_string())
            .bind(ms(record.created_at))
            .bind(ms(record.expires_at))
            .bind(items_json(&record.items))
            .bind(record.meta.idle_timeout().map(duration_ms))
            .bind(record.meta.persistent_cookie())
            .bind(names)
            .bind(values)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(n > 0)
    }

    async fn do_save(
        &self,
        id: SessionId,
        changes: ChangeSet,
        at: Renewal,
    ) -> Result<SaveOutcome, StoreError> {
        let only_sets = !changes.cleared()
            && changes.iter().all(|(_, v)| v.is_some())
            && changes.links().next().is_none();
        if only_sets {
            // The most common write: cannot empty the session, so a plain
            // UPDATE (no lock, delete or link statements needed).
            let (_, _, set) = item_params(&changes);
            let done = sqlx::query(&self.sql.save_sets)
                .bind(id.to_string())
                .bind(set)
                .bind(ms(at.now))
                .bind(ms(at.expires_at))
                .bind(changes.sets_idle_timeout())
                .bind(changes.idle_timeout().map(duration_ms))
                .bind(changes.persistent_cookie().is_some())
                .bind(changes.persistent_cookie())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            return Ok(if done.rows_affected() > 0 {
                SaveOutcome::Saved
            } else {
                SaveOutcome::Gone
            });
        }
        let row = apply_query(&self.sql.save, &id, &changes, at)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(match applied(&row).map_err(store_error)? {
            (false, _) => SaveOutcome::Gone,
            (true, true) => SaveOutcome::Deleted,
            (true, false) => SaveOutcome::Saved,
        })
    }

    async fn do_cycle(
        &self,
        old: SessionId,
        new: SessionId,
        changes: ChangeSet,
        at: Renewal,
    ) -> Result<CycleOutcome, StoreError> {
        let result = apply_query(&self.sql.cycle, &old, &changes, at)
            .bind(new.to_string())
            .fetch_one(&self.pool)
            .await;
        let row = match result {
            Ok(row) => row,
            // The new id is taken: the statement failed as a whole, so
            // nothing changed.
            Err(e) if is_unique_violation(&e) => return Ok(CycleOutcome::Collision),
            Err(e) => return Err(store_error(e)),
        };
        Ok(match applied(&row).map_err(store_error)? {
            (false, _) => CycleOutcome::Gone,
            (true, true) => CycleOutcome::Deleted,
            (true, false) => CycleOutcome::Moved,
        })
    }

    async fn execute(&self, sql: &str, binds: Vec<String>) -> Result<u64, StoreError> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        let done = q.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn do_touch(&self, id: SessionId, at: Renewal) -> Result<bool, StoreError> {
        sqlx::query_scalar(&self.sql.touch)
            .bind(id.to_string())
            .bind(ms(at.expires_at))
            .bind(ms(at.now))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn do_list(
        &self,
        name: String,
        value: String,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let rows = sqlx::query(&self.sql.list)
            .bind(name)
            .bind(value)
            .bind(ms(now))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in &rows {
            let Ok(public_id) = decode_public_id(row).map_err(store_error)? else {
                // Not loadable either: the next load of it deletes it.
                continue;
            };
            listed.push(Listed {
                public_id,
                created_at: ts(row.try_get("created_at").map_err(store_error)?),
                expires_at: ts(row.try_get("expires_at").map_err(store_error)?),
                meta: decode_meta(row).map_err(store_error)?,
            });
        }
        Ok(Listed::newest(listed, limit))
    }

    async fn do_end_linked(
        &self,
        name: String,
        value: String,
        keep: Keep,
    ) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(&self.sql.end_linked)
            .bind(name)
            .bind(value)
            .bind(keep.session.map(|p| p.to_string()))
            .bind(i64::try_from(keep.newest).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl SessionStore for PostgresStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        let (store, id) = (self.clone(), *id);
        StoreFuture::new(async move { store.do_load(id, now).await })
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        let (store, id, record) = (self.clone(), *id, record.clone());
        StoreFuture::new(async move { store.do_create(id, record).await })
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        let (store, id, changes) = (self.clone(), *id, changes.clone());
        StoreFuture::new(async move { store.do_save(id, changes, at).await })
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        let (store, old, new, changes) = (self.clone(), *old, *new, changes.clone());
        StoreFuture::new(async move { store.do_cycle(old, new, changes, at).await })
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        let (store, id) = (self.clone(), *id);
        StoreFuture::new(async move {
            store
                .execute(&store.sql.delete, vec![id.to_string()])
                .await
                .map(drop)
        })
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        let (store, binds) = (self.clone(), vec![id.to_string(), public_id.to_string()]);
        StoreFuture::new(async move { store.execute(&store.sql.end, binds).await.map(drop) })
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        let (store, id) = (self.clone(), *id);
        StoreFuture::new(async move { store.do_touch(id, at).await })
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        if !is_valid_link(name, value) || limit == 0 {
            return StoreFuture::ready(Ok(Vec::new()));
        }
        let (store, name, value) = (self.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { store.do_list(name, value, now, limit).await })
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        if !is_valid_link(name, value) {
            return StoreFuture::ready(Ok(0));
        }
        let (store, name, value) = (self.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { store.do_end_linked(name, value, keep).await })
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let (store, binds) = (self.clone(), vec![public_id.to_string()]);
        StoreFuture::new(async move { Ok(store.execute(&store.sql.end_public, binds).await? > 0) })
    }

    /// `SELECT 1` through the pool, bounded by the pool's acquire timeout
    /// (5 s with [`PostgresStore::connect`]): a database that accepts
    /// connections but does not answer fails the check in time.
    fn ping(&self) -> StoreFuture<()> {
        let pool = self.pool.clone();
        StoreFuture::new(async move {
            let limit = pool.options().get_acquire_timeout();
            match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&pool)).await {
                Ok(r) => r.map(drop).map_err(store_error),
                Err(_) => Err(StoreError::unavailable(format!(
                    "PostgreSQL did not answer SELECT 1 within {limit:?} (the pool's acquire timeout)"
                ))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_decode_only_from_an_object_of_strings() {
        let items = decode_items(r#"{"a":"1","b":""}"#).unwrap_or_else(|_| unreachable!());
        assert_eq!(items.get("a"), Some("1"));
        for bad in ["", "[]", "{", r#"{"a":1}"#, r#"{"a":null}"#, "\"x\""] {
            assert!(decode_items(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn change_sets_become_parameters() {
        let mut c = ChangeSet::new();
        c.set("k", "v\"");
        c.remove("gone");
        c.link("user", "alice");
        c.unlink("sid");
        c.link("bad name", "x");
        let (cleared, removed, set) = item_params(&c);
        assert!(!cleared);
        assert_eq!(removed, ["gone"]);
        assert_eq!(set, r#"{"k":"v\""}"#);
        let (unlink, names, values) = link_params(&c);
        assert_eq!(
            (unlink, names, values),
            (
                vec!["sid".to_owned()],
                vec!["user".to_owned()],
                vec!["alice".to_owned()]
            )
        );
    }
}
