//! `PostgresStore` against a real PostgreSQL (Debian's `postgresql`
//! package: a cluster made with `initdb` in a temp dir, `postgres` on a free
//! loopback port): the store-agnostic suite (tests/common) with the registry
//! tests, the concurrency races, store-level checks (migrations, table
//! names, corrupt rows, collisions, cleanup), and the failures: PostgreSQL
//! killed mid-test and restarted, a pool timeout, an SQL error.
//!
//! Without the server binaries each test prints a loud SKIP and passes,
//! unless `CI=true`, where it fails. One server is shared by the test
//! binary (each test uses its own table); the crash test starts its own.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
mod postgres_support;

#[allow(dead_code)]
#[path = "../examples/postgres.rs"]
mod postgres_example;

use std::time::{Duration, Instant};

use common::{call, cookie, dev_layer, script_routes, serve_script};
use postgres_support::{unique_table, Postgres};
use sqlx::postgres::PgPoolOptions;
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Items, Meta, Record, Renewal, SaveOutcome, Timestamp,
};
use tower_session_storage::{PostgresStore, PublicId, SessionId, SessionStore, StoreErrorKind};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A migrated store on a fresh table of the shared server.
async fn store() -> Option<PostgresStore> {
    let server = postgres_support::shared()?;
    Some(store_on(&server.url()).await)
}

async fn store_on(url: &str) -> PostgresStore {
    let store = PostgresStore::connect(url)
        .await
        .unwrap()
        .with_table_name(&unique_table())
        .unwrap();
    store.migrate().await.unwrap();
    store
}

fn now() -> u64 {
    Timestamp::now().as_millis()
}

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn record(items: &[(&str, &str)], expires_in_ms: u64) -> Record {
    let t = now();
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: Timestamp::from_millis(t),
        expires_at: Timestamp::from_millis(t + expires_in_ms),
        public_id: PublicId::generate(),
        meta: Meta::new(),
    }
}

fn renewal(expires_in_ms: u64) -> Renewal {
    Renewal::until(Timestamp::from_millis(now() + expires_in_ms))
}

fn items(r: &Record) -> Vec<(String, String)> {
    r.items
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn rows(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\"", store.table_name()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// The store-agnostic suite and the concurrency races
// ---------------------------------------------------------------------------

mod suite {
    session_store_suite!(match crate::store().await {
        Some(store) => store,
        None => return,
    });
}

mod races {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_to_different_keys_all_survive() {
        let Some(store) = crate::store().await else {
            return;
        };
        crate::common::concurrency::writes_to_different_keys_all_survive(store, 20).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_to_one_key_one_wins() {
        let Some(store) = crate::store().await else {
            return;
        };
        crate::common::concurrency::writes_to_the_same_key_one_wins(store, 20).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destroy_racing_a_writer_wins() {
        let Some(store) = crate::store().await else {
            return;
        };
        crate::common::concurrency::destroy_racing_a_writer_wins(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cycle_racing_a_writer_wins() {
        let Some(store) = crate::store().await else {
            return;
        };
        crate::common::concurrency::cycle_racing_a_writer_wins(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destroy_racing_a_cycle_ends_the_session() {
        let Some(store) = crate::store().await else {
            return;
        };
        crate::common::concurrency::destroy_racing_a_cycle_ends_the_session(store).await;
    }
}

// ---------------------------------------------------------------------------
// Store-level checks
// ---------------------------------------------------------------------------

/// `migrate` run by many instances at once, and again: no error, one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_from_many_instances_at_once() {
    let Some(server) = postgres_support::shared() else {
        return;
    };
    let table = unique_table();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = server.url();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let store = PostgresStore::connect(&url)
                .await
                .unwrap()
                .with_table_name(&table)
                .unwrap();
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = PostgresStore::connect(&server.url())
        .await
        .unwrap()
        .with_table_name(&table)
        .unwrap();
    let id = new_id();
    assert!(store
        .create(&id, &record(&[("a", "1")], 60_000))
        .await
        .unwrap());
    assert_eq!(rows(&store).await, 1);
}

/// Table names are checked, never escaped: anything but `[A-Za-z_][A-Za-z0-9_]*`
/// (optionally `schema.table`) is refused; a schema is created by `migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_names_are_validated_and_a_schema_works() {
    let Some(server) = postgres_support::shared() else {
        return;
    };
    let base = PostgresStore::connect(&server.url()).await.unwrap();
    for bad in [
        "",
        "sessions; DROP TABLE x",
        "s\"x",
        "a.b.c",
        "1abc",
        "s-x",
        "s x",
        "sé",
        &"a".repeat(55),
    ] {
        let e = base.clone().with_table_name(bad).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Other, "{bad:?}");
    }
    let name = format!("s_{}.{}", unique_table(), "Sessions");
    let store = base.with_table_name(&name).unwrap();
    assert_eq!(store.table_name(), name);
    store.migrate().await.unwrap();
    let id = new_id();
    assert!(store
        .create(&id, &record(&[("a", "1")], 60_000))
        .await
        .unwrap());
    let r = store
        .load(&id, Timestamp::now())
        .await
        .unwrap()
        .expect("stored in the schema");
    assert_eq!(items(&r), pairs(&[("a", "1")]));
}

/// create is insert-if-absent (a taken id is `false`, the row untouched);
/// a cycle onto a taken id is `Collision` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_ids_are_collisions_not_errors() {
    let Some(store) = store().await else { return };
    let (a, b) = (new_id(), new_id());
    assert!(store
        .create(&a, &record(&[("who", "a")], 60_000))
        .await
        .unwrap());
    assert!(store
        .create(&b, &record(&[("who", "b")], 60_000))
        .await
        .unwrap());
    assert!(!store
        .create(&a, &record(&[("who", "x")], 60_000))
        .await
        .unwrap());

    let mut c = ChangeSet::new();
    c.set("more", "1");
    let out = store.cycle(&a, &b, &c, renewal(60_000)).await.unwrap();
    assert_eq!(out, CycleOutcome::Collision);
    let ra = store.load(&a, Timestamp::now()).await.unwrap().unwrap();
    let rb = store.load(&b, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(
        items(&ra),
        pairs(&[("who", "a")]),
        "the cycle changed nothing"
    );
    assert_eq!(items(&rb), pairs(&[("who", "b")]));
}

/// Save applies the per-key change set in the database: other keys,
/// written by someone else meanwhile, survive; expiry moves forward only,
/// unless the changes set an idle timeout; a save that empties the session
/// deletes it (links too); a save after that is `Gone` and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_applies_per_key_changes_and_never_recreates() {
    let Some(store) = store().await else { return };
    let id = new_id();
    let rec = record(&[("a", "1"), ("b", "2")], 60_000);
    assert!(store.create(&id, &rec).await.unwrap());

    let mut c1 = ChangeSet::new();
    c1.set("c", "3");
    c1.remove("a");
    c1.link("user", "alice");
    let at = renewal(10_000); // earlier than the stored expiry
    assert_eq!(store.save(&id, &c1, at).await.unwrap(), SaveOutcome::Saved);
    let r = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(items(&r), pairs(&[("b", "2"), ("c", "3")]));
    assert_eq!(r.expires_at, rec.expires_at, "never moved backward");
    assert_eq!(r.meta.link("user"), Some("alice"));
    assert_eq!(r.public_id, rec.public_id);

    let mut c2 = ChangeSet::new();
    c2.set_idle_timeout(Duration::from_secs(5));
    c2.set_persistent_cookie(true);
    let at = renewal(5_000);
    assert_eq!(store.save(&id, &c2, at).await.unwrap(), SaveOutcome::Saved);
    let r = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(r.expires_at, at.expires_at, "a new idle timeout sets it");
    assert_eq!(r.meta.idle_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(r.meta.persistent_cookie(), Some(true));
    assert_eq!(r.meta.link("user"), Some("alice"), "kept");

    let mut clear = ChangeSet::new();
    clear.clear();
    assert_eq!(
        store.save(&id, &clear, renewal(60_000)).await.unwrap(),
        SaveOutcome::Deleted
    );
    assert_eq!(rows(&store).await, 0);
    let links: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{}_links\"",
        store.table_name()
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(links, 0, "the links went with the session");
    assert_eq!(
        store.save(&id, &c1, renewal(60_000)).await.unwrap(),
        SaveOutcome::Gone
    );
    assert_eq!(rows(&store).await, 0, "not re-created");
    assert!(!store.touch(&id, renewal(60_000)).await.unwrap());
}

/// A row whose `items` is not a JSON object of strings, or whose public id
/// is malformed, loads as no session, and is deleted (as the trait asks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_loads_as_no_session_and_is_deleted() {
    let Some(store) = store().await else { return };
    let srv = serve_script(dev_layer(store.clone())).await;
    for (column, value) in [
        ("items", "'[1,2]'::jsonb"),
        ("items", "'{\"a\": 1}'::jsonb"),
        ("items", "'\"text\"'::jsonb"),
        ("public_id", "'not-a-public-id'"),
    ] {
        let id = srv.raw("set=user:alice", None).await.new_id().unwrap();
        sqlx::query(&format!(
            "UPDATE \"{}\" SET {column} = {value} WHERE id = $1",
            store.table_name()
        ))
        .bind(&id)
        .execute(store.pool())
        .await
        .unwrap();
        let r = srv.raw("get=user", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200, "{column} = {value}: {r:?}");
        assert_eq!(r.body, "-", "{column} = {value}: a fresh session");
        assert_eq!(rows(&store).await, 0, "{column} = {value}: deleted");
    }
}

/// Expired rows are never loaded, and the cleanup deletes them in batches
/// (more than one batch here), leaving live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_ignored_and_cleaned_up_in_batches() {
    let Some(store) = store().await else { return };
    let live = new_id();
    assert!(store
        .create(&live, &record(&[("a", "1")], 60_000))
        .await
        .unwrap());
    let t = now() as i64;
    sqlx::query(&format!(
        "INSERT INTO \"{}\" (id, public_id, created_at, expires_at, items) \
         SELECT 'x' || g, md5(g::text), $1, $1 + 1, '{{\"a\":\"1\"}}' \
         FROM generate_series(1, 2500) g",
        store.table_name()
    ))
    .bind(t - 10_000)
    .execute(store.pool())
    .await
    .unwrap();
    let expired = new_id();
    let mut rec = record(&[("a", "1")], 1);
    rec.expires_at = Timestamp::from_millis(now() - 1);
    assert!(store.create(&expired, &rec).await.unwrap());
    assert!(store
        .load(&expired, Timestamp::now())
        .await
        .unwrap()
        .is_none());

    assert_eq!(store.delete_expired().await.unwrap(), 2501);
    assert_eq!(rows(&store).await, 1);
    assert!(store.load(&live, Timestamp::now()).await.unwrap().is_some());

    // The task does the same on its own.
    sqlx::query(&format!(
        "UPDATE \"{}\" SET expires_at = 1",
        store.table_name()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let task = tokio::spawn(store.clone().deletion_task(Duration::from_millis(50)));
    let started = Instant::now();
    while rows(&store).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

/// A table that was never migrated: an SQL error, so 500 with the
/// database's message, not 503 and not an empty session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_error_is_500_with_a_clear_message() {
    let Some(server) = postgres_support::shared() else {
        return;
    };
    let store = PostgresStore::connect(&server.url())
        .await
        .unwrap()
        .with_table_name(&unique_table())
        .unwrap();
    let e = store.load(&new_id(), Timestamp::now()).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Other);
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(source.contains("does not exist"), "{source}");
    let app = script_routes().layer(dev_layer(store));
    let r = call(&app, "get=user", Some(&cookie(&new_id().to_string()))).await;
    assert_eq!(r.status, 500, "{r:?}");
}

// ---------------------------------------------------------------------------
// Failures: the server killed and restarted, a pool timeout
// ---------------------------------------------------------------------------

/// PostgreSQL killed (SIGKILL to the postmaster) mid-run: requests carrying
/// a valid cookie get 503, never an empty session, and change no cookie.
/// Restarted on the same data dir and port: the same store (no app
/// restart) serves the same sessions again, and writes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_is_503_and_the_sessions_are_back_after_restart() {
    let Some(mut server) = Postgres::start() else {
        return;
    };
    // The app's own pool, waiting at most 1 s for a connection.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect(&server.url())
        .await
        .unwrap();
    let store = PostgresStore::new(pool)
        .with_table_name(&unique_table())
        .unwrap();
    store.migrate().await.unwrap();
    let srv = serve_script(dev_layer(store)).await;
    let id = srv.raw("set=user:alice", None).await.new_id().unwrap();
    let c = cookie(&id);
    let other = srv
        .raw("set=user:bob&link=user:bob", None)
        .await
        .new_id()
        .unwrap();
    assert_eq!(srv.raw("get=user", Some(&c)).await.ok(), "alice");

    server.crash();
    for script in ["get=user", "set=more:1", "cycle", "destroy", "set=new:1"] {
        let started = Instant::now();
        let r = srv.raw(script, Some(&c)).await;
        assert_eq!(r.status, 503, "{script}: {r:?}");
        assert!(
            r.set_cookies().is_empty(),
            "{script}: no cookie change: {r:?}"
        );
        let took = started.elapsed();
        eprintln!("{script} with PostgreSQL down: 503 after {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{script}: failing took {took:?}"
        );
    }
    // A new session's first write needs the store too.
    let r = srv.raw("set=new:1", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    // A request without a cookie that writes nothing does not touch it.
    assert_eq!(srv.raw("get=user", None).await.ok(), "-");

    server.restart();
    let started = Instant::now();
    let mut failures = 0;
    loop {
        let r = srv.raw("get=user&id", Some(&c)).await;
        if r.status == 200 {
            assert_eq!(r.body, format!("alice,{id}"), "the same session");
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        failures += 1;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still failing after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "recovered {:?} after the restart, after {failures} failed request(s)",
        started.elapsed()
    );
    assert_eq!(srv.raw("get=user", Some(&cookie(&other))).await.ok(), "bob");
    assert_eq!(srv.raw("set=more:1&get=more", Some(&c)).await.ok(), "1");
    assert_eq!(srv.raw("list=user:bob", None).await.status, 200);
}

/// A pool with every connection busy: the request waits for the pool's
/// acquire timeout, then answers 503 (never an empty session); once a
/// connection is free again it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_timeout_is_503() {
    let Some(server) = postgres_support::shared() else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect(&server.url())
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone())
        .with_table_name(&unique_table())
        .unwrap();
    store.migrate().await.unwrap();
    let srv = serve_script(dev_layer(store)).await;
    let id = srv.raw("set=user:alice", None).await.new_id().unwrap();

    let held = pool.acquire().await.unwrap();
    let r = srv.raw("get=user", Some(&cookie(&id))).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    drop(held);
    assert_eq!(srv.raw("get=user", Some(&cookie(&id))).await.ok(), "alice");
}

// ---------------------------------------------------------------------------
// The example: two instances, one database
// ---------------------------------------------------------------------------

/// examples/postgres.rs's app, two instances with a pool each on one
/// database: a session made on A is read on B, a sign-in on A (new id) is
/// seen on B, a sign-out on B ends it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_through_one_database() {
    let Some(server) = postgres_support::shared() else {
        return;
    };
    let table = unique_table();
    let mut instances = Vec::new();
    for name in ["A", "B"] {
        let store = PostgresStore::connect(&server.url())
            .await
            .unwrap()
            .with_table_name(&table)
            .unwrap();
        store.migrate().await.unwrap();
        instances.push(common::TestServer::start(postgres_example::app(name, store)).await);
    }
    let (a, b) = (&instances[0], &instances[1]);
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(
        get(a.url("/")).await,
        "instance A: visits: 1\nnot signed in\n"
    );
    assert_eq!(
        get(b.url("/")).await,
        "instance B: visits: 2\nnot signed in\n"
    );
    assert!(get(a.url("/sign-in?user=alice"))
        .await
        .contains("signed in as: alice"));
    assert_eq!(get(b.url("/me")).await, "instance B: signed in as: alice\n");
    assert!(get(b.url("/sign-out")).await.contains("signed out"));
    assert_eq!(get(a.url("/me")).await, "instance A: not signed in\n");
}
