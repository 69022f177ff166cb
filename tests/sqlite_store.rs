//! `SqliteStore` on real SQLite databases: the store-agnostic suite
//! (tests/common) on a file in a temp dir and on a shared-cache in-memory
//! database, the concurrency races on both, and the failure cases: the
//! database file removed or replaced, the writer lock held past the busy
//! timeout, the pool closed, a corrupt row; and two stores (two pools, as
//! two processes would have) on one file sharing sessions.
//!
//! SQLite is compiled into the test binary (sqlx's bundled libsqlite3): no
//! server to start, nothing to skip.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{call, cookie, dev_layer, script_routes};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Items, Keep, Listed, Meta, Record, Renewal, SaveOutcome, StoreFuture,
    Timestamp,
};
use tower_session_storage::{PublicId, SessionId, SessionStore, SqliteStore, StoreErrorKind};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tss-sqlite-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("sessions.db")
    }

    fn url(&self, mode: &str) -> String {
        format!("sqlite://{}?mode={mode}", self.db().display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `SqliteStore` that owns the temp dir its file is in (so the suite,
/// which takes the store by value, removes the file when it is done).
#[derive(Clone, Debug)]
struct FileStore {
    store: SqliteStore,
    _dir: Arc<TempDir>,
}

impl SessionStore for FileStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        self.store.load(id, now)
    }
    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        self.store.create(id, record)
    }
    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        self.store.save(id, changes, at)
    }
    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        self.store.cycle(old, new, changes, at)
    }
    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        self.store.delete(id)
    }
    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        self.store.end(id, public_id)
    }
    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        self.store.touch(id, at)
    }
    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        self.store.list(name, value, now, limit)
    }
    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        self.store.end_linked(name, value, keep)
    }
    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        self.store.end_public(public_id)
    }
}

/// A migrated store on a new file in a new temp dir.
async fn file_store() -> FileStore {
    let dir = TempDir::new();
    let store = SqliteStore::connect(&dir.url("rwc")).await.unwrap();
    store.migrate().await.unwrap();
    FileStore {
        store,
        _dir: Arc::new(dir),
    }
}

/// A migrated store on a new shared-cache in-memory database.
async fn memory_store() -> SqliteStore {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let store = SqliteStore::connect(&format!("sqlite:file:{name}?mode=memory&cache=shared"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn record(items: &[(&str, &str)], ttl_ms: u64) -> Record {
    let now = Timestamp::now();
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: now,
        expires_at: Timestamp::from_millis(now.as_millis() + ttl_ms),
        public_id: PublicId::generate(),
        meta: Meta::new(),
    }
}

fn renewal(ttl_ms: u64) -> Renewal {
    Renewal::until(Timestamp::from_millis(
        Timestamp::now().as_millis() + ttl_ms,
    ))
}

/// Rows in the store's table (and in its links table).
async fn rows(store: &SqliteStore) -> (i64, i64) {
    let t = store.table_name();
    let count = |sql: String| async move {
        sqlx::query_scalar::<_, i64>(&sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    (
        count(format!("SELECT COUNT(*) FROM \"{t}\"")).await,
        count(format!("SELECT COUNT(*) FROM \"{t}_links\"")).await,
    )
}

// ---------------------------------------------------------------------------
// The suite and the races, on a file and in memory
// ---------------------------------------------------------------------------

/// tests/common's suite on a SQLite file in a temp dir.
mod file_suite {
    session_store_suite!(crate::file_store().await);
}

/// tests/common's suite on a shared-cache in-memory database.
mod memory_suite {
    session_store_suite!(crate::memory_store().await);
}

/// tests/common's concurrency checks (SECURITY.md #17, #18, #19, #29, #35).
macro_rules! concurrency_checks {
    ($make:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_writes_to_different_keys_all_survive() {
            crate::common::concurrency::writes_to_different_keys_all_survive($make().await, 20)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_writes_to_one_key_one_wins() {
            crate::common::concurrency::writes_to_the_same_key_one_wins($make().await, 20).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn destroy_racing_a_writer_wins() {
            crate::common::concurrency::destroy_racing_a_writer_wins($make().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cycle_racing_a_writer_wins() {
            crate::common::concurrency::cycle_racing_a_writer_wins($make().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn destroy_racing_a_cycle_ends_the_session() {
            crate::common::concurrency::destroy_racing_a_cycle_ends_the_session($make().await)
                .await;
        }
    };
}

mod file_concurrency {
    concurrency_checks!(crate::file_store);
}

mod memory_concurrency {
    concurrency_checks!(crate::memory_store);
}

// ---------------------------------------------------------------------------
// Store-level checks
// ---------------------------------------------------------------------------

/// A per-key change set is applied inside SQLite: two saves built from the
/// same snapshot, each setting one key and one removing another, keep both
/// writes; a save that empties the session deletes it (and its links) in
/// the same statement.
#[tokio::test]
async fn saves_apply_per_key_changes_and_an_emptied_session_is_deleted() {
    let store = memory_store().await;
    let id = new_id();
    let mut r = record(
        &[("a", "1"), ("b", "2"), ("odd \"key\" $.[0]", "x")],
        60_000,
    );
    r.meta.set_link("user", "alice");
    assert!(store.create(&id, &r).await.unwrap());
    assert!(
        !store
            .create(&id, &record(&[("z", "9")], 60_000))
            .await
            .unwrap(),
        "a taken id is a collision"
    );

    let mut one = ChangeSet::new();
    one.set("c", "3");
    one.remove("odd \"key\" $.[0]");
    let mut two = ChangeSet::new();
    two.set("d", "4");
    two.remove("a");
    assert_eq!(
        store.save(&id, &one, renewal(60_000)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.save(&id, &two, renewal(60_000)).await.unwrap(),
        SaveOutcome::Saved
    );
    let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(
        got.items.iter().collect::<Vec<_>>(),
        [("b", "2"), ("c", "3"), ("d", "4")]
    );
    assert_eq!(got.meta.link("user"), Some("alice"));
    assert_eq!(got.public_id, r.public_id);

    let mut clear = ChangeSet::new();
    clear.clear();
    assert_eq!(
        store.save(&id, &clear, renewal(60_000)).await.unwrap(),
        SaveOutcome::Deleted
    );
    assert_eq!(rows(&store).await, (0, 0), "the row and its links are gone");
    assert_eq!(
        store.save(&id, &one, renewal(60_000)).await.unwrap(),
        SaveOutcome::Gone
    );
    assert_eq!(rows(&store).await, (0, 0), "a save never revives a session");
}

/// Expiry moves only forward, unless the change set sets an idle timeout;
/// touch and save refuse an expired row; cycle keeps the public id and the
/// links, and a taken new id changes nothing.
#[tokio::test]
async fn expiry_touch_and_cycle_keep_their_promises() {
    let store = memory_store().await;
    let id = new_id();
    let r = record(&[("a", "1")], 60_000);
    store.create(&id, &r).await.unwrap();
    let mut set = ChangeSet::new();
    set.set("b", "2");
    store.save(&id, &set, renewal(1_000)).await.unwrap();
    let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(got.expires_at, r.expires_at, "never moved backward");

    let mut shorter = ChangeSet::new();
    shorter.set_idle_timeout(Duration::from_secs(1));
    let at = renewal(1_000);
    store.save(&id, &shorter, at).await.unwrap();
    let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(
        got.expires_at, at.expires_at,
        "a new idle timeout sets it exactly"
    );
    assert_eq!(got.meta.idle_timeout(), Some(Duration::from_secs(1)));

    assert!(store.touch(&id, renewal(120_000)).await.unwrap());
    let later = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert!(later.expires_at > at.expires_at);

    // Cycle: a taken id is a collision and changes nothing.
    let other = new_id();
    store
        .create(&other, &record(&[("x", "1")], 60_000))
        .await
        .unwrap();
    let mut link = ChangeSet::new();
    link.link("user", "bob");
    assert_eq!(
        store
            .cycle(&id, &other, &link, renewal(60_000))
            .await
            .unwrap(),
        CycleOutcome::Collision
    );
    assert!(store
        .load(&id, Timestamp::now())
        .await
        .unwrap()
        .unwrap()
        .meta
        .link("user")
        .is_none());
    let new = new_id();
    assert_eq!(
        store
            .cycle(&id, &new, &link, renewal(60_000))
            .await
            .unwrap(),
        CycleOutcome::Moved
    );
    assert!(
        store.load(&id, Timestamp::now()).await.unwrap().is_none(),
        "old id dead"
    );
    let moved = store.load(&new, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(moved.public_id, r.public_id);
    assert_eq!(moved.meta.link("user"), Some("bob"));
    assert_eq!(
        moved.meta.idle_timeout(),
        Some(Duration::from_secs(1)),
        "kept across cycle"
    );

    // An end by the old id and the public id finds it under the new id.
    store.end(&id, &r.public_id).await.unwrap();
    assert!(store.load(&new, Timestamp::now()).await.unwrap().is_none());
    assert_eq!(rows(&store).await, (1, 0), "only the other session is left");

    // Expired rows are refused by every write, and cleaned up by the task.
    let old = new_id();
    let mut expired = record(&[("a", "1")], 0);
    expired.meta.set_link("user", "carol");
    expired.expires_at = Timestamp::from_millis(Timestamp::now().as_millis() - 1);
    store.create(&old, &expired).await.unwrap();
    assert!(store.load(&old, Timestamp::now()).await.unwrap().is_none());
    assert!(!store.touch(&old, renewal(60_000)).await.unwrap());
    assert_eq!(
        store.save(&old, &set, renewal(60_000)).await.unwrap(),
        SaveOutcome::Gone
    );
    assert_eq!(
        store
            .cycle(&old, &new_id(), &set, renewal(60_000))
            .await
            .unwrap(),
        CycleOutcome::Gone
    );
    assert!(store
        .list("user", "carol", Timestamp::now(), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(rows(&store).await, (2, 1));
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert_eq!(rows(&store).await, (1, 0), "the expired row and its link");
}

/// The cleanup deletes in batches until nothing expired is left, and
/// leaves live sessions alone.
#[tokio::test]
async fn delete_expired_runs_in_batches() {
    let store = memory_store().await;
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 10);
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..2_500 {
        sqlx::query(
            "INSERT INTO sessions (id, public_id, created_at, expires_at, items) VALUES (?1, ?2, 0, ?3, '{\"a\":\"1\"}')",
        )
        .bind(format!("expired-{i}"))
        .bind(format!("p{i}"))
        .bind(past.as_millis() as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let live = new_id();
    store
        .create(&live, &record(&[("a", "1")], 60_000))
        .await
        .unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 2_500);
    assert_eq!(rows(&store).await, (1, 0));
    assert!(store.load(&live, Timestamp::now()).await.unwrap().is_some());
}

/// `list` answers the newest `limit` oldest first; `end_linked` spares
/// what `keep` says; `end_public` ends only linked sessions.
#[tokio::test]
async fn list_end_linked_and_end_public() {
    let store = memory_store().await;
    let mut made = Vec::new();
    for i in 0..5u64 {
        let id = new_id();
        let mut r = record(&[("n", "1")], 60_000);
        r.created_at = Timestamp::from_millis(1_000 + i);
        r.meta.set_link("user", "alice");
        store.create(&id, &r).await.unwrap();
        made.push(r.public_id);
    }
    let unlinked = record(&[("n", "1")], 60_000);
    let unlinked_id = new_id();
    store.create(&unlinked_id, &unlinked).await.unwrap();

    let listed = store
        .list("user", "alice", Timestamp::now(), 3)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|l| l.public_id).collect::<Vec<_>>(),
        made[2..].to_vec()
    );
    assert!(store
        .list("user", "bob", Timestamp::now(), 3)
        .await
        .unwrap()
        .is_empty());

    assert!(
        !store.end_public(&unlinked.public_id).await.unwrap(),
        "not the registry's"
    );
    assert!(store.end_public(&made[0]).await.unwrap());
    assert!(!store.end_public(&made[0]).await.unwrap());

    let keep = Keep {
        session: Some(made[1]),
        newest: 1,
    };
    assert_eq!(
        store.end_linked("user", "alice", keep).await.unwrap(),
        2,
        "made[2], made[3]"
    );
    let left = store
        .list("user", "alice", Timestamp::now(), 10)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|l| l.public_id).collect::<Vec<_>>(),
        [made[1], made[4]]
    );
    assert_eq!(
        store.end_linked("user", "alice", Keep::NONE).await.unwrap(),
        2
    );
    assert_eq!(rows(&store).await, (1, 0));
}

/// `migrate` is idempotent and safe from several stores (pools) at once;
/// a custom table name is used, and a hostile one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_concurrent_and_table_names_are_checked() {
    let dir = TempDir::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = dir.url("rwc");
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::connect(&url).await.unwrap();
            let store = store.with_table_name("app_sessions").unwrap();
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
            store
        }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap());
    }
    let id = new_id();
    assert!(stores[0]
        .create(&id, &record(&[("a", "1")], 60_000))
        .await
        .unwrap());
    assert!(stores[3]
        .load(&id, Timestamp::now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(rows(&stores[1]).await, (1, 0));

    for bad in [
        "",
        "x; DROP TABLE sessions",
        "a\"b",
        "sqlite_master",
        "1st",
        "a.b",
    ] {
        let e = stores[0].clone().with_table_name(bad).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Other, "{bad}");
    }
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

/// A store on `dir`'s file (which must exist) whose pool opens a fresh
/// connection for every use, so every request meets the file as it is now.
async fn fresh_connection_store(dir: &TempDir) -> SqliteStore {
    let options: SqliteConnectOptions = dir.url("rw").parse().unwrap();
    let pool = SqlitePoolOptions::new()
        .min_connections(0)
        .max_lifetime(Duration::from_millis(1))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.busy_timeout(Duration::from_millis(200)));
    SqliteStore::new(pool)
}

/// The database file removed, then a directory in its place: every
/// request answers 503, never an empty session; once the file is back, the
/// same store serves the same sessions (no restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unreadable_database_is_503_and_recovers() {
    let dir = TempDir::new();
    SqliteStore::connect(&dir.url("rwc"))
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let store = fresh_connection_store(&dir).await;
    let app = script_routes().layer(dev_layer(store.clone()));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    let c = cookie(&id);
    assert_eq!(call(&app, "get=user", Some(&c)).await.ok(), "alice");

    // Wait until the pool has closed its connections (each lives 1 ms),
    // then take the file away (the whole directory, so its -wal and -shm
    // go too).
    common::guard(async {
        while store.pool().size() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let aside = dir.0.with_extension("aside");
    std::fs::rename(&dir.0, &aside).unwrap();
    std::fs::create_dir(&dir.0).unwrap();
    for script in ["get=user", "set=x:1"] {
        let r = call(&app, script, Some(&c)).await;
        assert_eq!(r.status, 503, "file missing, {script}: {r:?}");
        assert!(r.set_cookies().is_empty(), "no logout: {r:?}");
    }
    assert_eq!(call(&app, "set=new:1", None).await.status, 503);

    // A directory where the file should be: unreadable even for root.
    std::fs::create_dir(dir.db()).unwrap();
    let r = call(&app, "get=user", Some(&c)).await;
    assert_eq!(r.status, 503, "a directory in place of the file: {r:?}");

    // Back: the same store, the same session.
    std::fs::remove_dir_all(&dir.0).unwrap();
    std::fs::rename(&aside, &dir.0).unwrap();
    assert_eq!(call(&app, "get=user", Some(&c)).await.ok(), "alice");
    assert_eq!(call(&app, "set=x:2&get=x", Some(&c)).await.ok(), "2");
}

/// Another process holding SQLite's writer lock past the busy timeout:
/// writes answer 503 (reads go on: WAL), and work again once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_lock_held_past_the_busy_timeout_is_503() {
    let dir = TempDir::new();
    SqliteStore::connect(&dir.url("rwc"))
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let store = fresh_connection_store(&dir).await;
    let app = script_routes().layer(dev_layer(store.clone()));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    let c = cookie(&id);

    let other = SqliteStore::connect(&dir.url("rw")).await.unwrap();
    let mut holder = other.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE sessions SET items = items WHERE 0")
        .execute(&mut *holder)
        .await
        .unwrap();

    let r = call(&app, "set=b:2", Some(&c)).await;
    assert_eq!(r.status, 503, "locked past the busy timeout: {r:?}");
    let r = call(&app, "set=new:1", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        call(&app, "get=a&get=b", Some(&c)).await.ok(),
        "1,-",
        "reads go on"
    );

    holder.rollback().await.unwrap();
    assert_eq!(call(&app, "set=b:2&get=b", Some(&c)).await.ok(), "2");
    assert_eq!(call(&app, "get=a&get=b", Some(&c)).await.ok(), "1,2");
}

/// A closed pool: 503 for every store call, never an empty session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_is_503() {
    let store = file_store().await;
    let app = script_routes().layer(dev_layer(store.clone()));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    store.store.pool().close().await;
    for (script, c) in [
        ("get=a", Some(cookie(&id))),
        ("set=a:2", Some(cookie(&id))),
        ("set=n:1", None),
    ] {
        let r = call(&app, script, c.as_deref()).await;
        assert_eq!(r.status, 503, "{script}: {r:?}");
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }
    let e = store
        .load(&common::parse_id(&id), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable);
}

/// A row whose `items` is not JSON (or not a JSON object of strings) is
/// logged, deleted and treated as unknown: the request starts afresh (no
/// 5xx), and a write gets a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_deleted_and_treated_as_unknown() {
    let store = memory_store().await;
    let app = script_routes().layer(dev_layer(store.clone()));
    for bad in ["not json", "[1,2]", "{\"a\":1}", "{}"] {
        let id = call(&app, "set=a:1", None).await.new_id().unwrap();
        sqlx::query("UPDATE sessions SET items = ?1 WHERE id = ?2")
            .bind(bad)
            .bind(&id)
            .execute(store.pool())
            .await
            .unwrap();
        let r = call(&app, "get=a", Some(&cookie(&id))).await;
        assert_eq!(r.ok(), "-", "{bad}");
        assert_eq!(rows(&store).await, (0, 0), "{bad}: the row is deleted");
        let r = call(&app, "set=a:2", Some(&cookie(&id))).await;
        assert_ne!(r.new_id().unwrap(), id, "{bad}: never adopted");
        store.end_linked("x", "y", Keep::NONE).await.unwrap();
        sqlx::query("DELETE FROM sessions")
            .execute(store.pool())
            .await
            .unwrap();
    }
    // A bad public id too.
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    sqlx::query("UPDATE sessions SET public_id = 'nope' WHERE id = ?1")
        .bind(&id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(call(&app, "get=a", Some(&cookie(&id))).await.ok(), "-");
    assert_eq!(rows(&store).await, (0, 0));
}

/// Two stores with their own pools on one file (two app processes): a
/// session made by one is read, cycled and ended through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_share_sessions() {
    let dir = TempDir::new();
    let a = SqliteStore::connect(&dir.url("rwc")).await.unwrap();
    a.migrate().await.unwrap();
    let b = SqliteStore::connect(&dir.url("rwc")).await.unwrap();
    b.migrate().await.unwrap();
    let app_a = script_routes().layer(dev_layer(a.clone()));
    let app_b = script_routes().layer(dev_layer(b.clone()));

    let id = call(&app_a, "set=user:alice&link=user:alice", None)
        .await
        .new_id()
        .unwrap();
    assert_eq!(
        call(&app_b, "get=user&set=cart:3", Some(&cookie(&id)))
            .await
            .ok(),
        "alice"
    );
    assert_eq!(call(&app_a, "get=cart", Some(&cookie(&id))).await.ok(), "3");

    let r = call(&app_b, "cycle", Some(&cookie(&id))).await;
    r.ok();
    let new = r.new_id().unwrap();
    assert_eq!(
        call(&app_a, "get=user", Some(&cookie(&id))).await.ok(),
        "-",
        "old id dead on A"
    );
    assert_eq!(
        call(&app_a, "get=user&get=cart", Some(&cookie(&new)))
            .await
            .ok(),
        "alice,3"
    );
    assert_eq!(
        b.list("user", "alice", Timestamp::now(), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // A logout on A through the old id's public id ends it on B too.
    let registry = dev_layer(a.clone()).registry();
    assert_eq!(registry.end_all("user", "alice", None).await.unwrap(), 1);
    assert_eq!(
        call(&app_b, "get=user", Some(&cookie(&new))).await.ok(),
        "-"
    );
    assert_eq!(rows(&b).await, (0, 0));
}

/// The spawned `deletion_task` deletes an expired row (and its links) by
/// itself and leaves a live one alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deletion_task_deletes_expired_rows_by_itself() {
    let store = memory_store().await;
    let live = new_id();
    store
        .create(&live, &record(&[("a", "1")], 60_000))
        .await
        .unwrap();
    let mut expired = record(&[("a", "1")], 0);
    expired.meta.set_link("user", "alice");
    expired.expires_at = Timestamp::from_millis(Timestamp::now().as_millis() - 1);
    store.create(&new_id(), &expired).await.unwrap();
    assert_eq!(rows(&store).await, (2, 1));

    let task = tokio::spawn(store.clone().deletion_task(Duration::from_millis(20)));
    common::guard(async {
        while rows(&store).await != (1, 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    task.abort();
    assert!(store.load(&live, Timestamp::now()).await.unwrap().is_some());
}
