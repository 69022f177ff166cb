//! What a SQLite store adds per request over the memory store, side by side
//! with tower-sessions' own SQLite store (tower-sessions-sqlx-store 0.15 on
//! tower-sessions 0.14), in the same groups.
//!
//! Functions in each group:
//!
//! - `memory`: `SessionLayer::new(MemoryStore::new())`, the baseline;
//! - `sqlite_file`: `SessionLayer::new(SqliteStore::connect(..))` on a file
//!   in a temp dir (WAL, `synchronous=NORMAL`, as `connect` sets it);
//! - `sqlite_in_memory`: the same on a shared-cache in-memory database (no
//!   file I/O: the cost of SQLite and sqlx alone);
//! - `tower_sessions_sqlx_file`: tower-sessions' `SessionManagerLayer` with
//!   `tower_sessions_sqlx_store::SqliteStore` on a file, with the same pool
//!   settings (WAL, `synchronous=NORMAL`, 5 s busy timeout).
//!
//! Scenarios: `sqlite_read` (an existing session, read one item),
//! `sqlite_read_write` (read one item, write one item, a new value each time:
//! tower-sessions skips saving an unchanged value) and `sqlite_create` (no
//! cookie, write one item: every request creates a session). `read` and
//! `read_write` go round 512 sessions. Requests are driven in process
//! (`oneshot` on a clone of the router) on a current-thread runtime; sqlx
//! runs each SQLite connection on its own worker thread, so each store call
//! is a hand-over to that thread and back, as in an app.
//!
//! Round trips (statements) per request, ours: read 1 (load), read_write 2
//! (load, save: one `UPDATE … json_patch`), create 1 (`INSERT`). Theirs:
//! read 1 (load), read_write 2 (load, an upsert of the whole record, as
//! MessagePack), create 3 (`BEGIN`, `INSERT OR ABORT`, `COMMIT`).
//!
//! ```text
//! cargo bench --features sqlite --bench sqlite
//! cargo bench --features sqlite --bench sqlite -- --warm-up-time 1 --measurement-time 3
//! ```
// `criterion_main!` makes an undocumented `main`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use axum::{Extension, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage, SqliteStore};

/// Sessions that `read` and `read_write` go round.
const SESSIONS: usize = 512;
const KEY: &str = "user_id";
const VALUE: &str = "12345";
const SEEN: &str = "seen";

fn next_value() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A fresh temp dir for one database file (removed when the bench ends).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("tss-bench-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join("sessions.db").display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod ours {
    use super::*;

    async fn read(Extension(session): Extension<SessionStorage>) -> String {
        session.get_item(KEY).unwrap_or_default()
    }

    async fn read_write(Extension(session): Extension<SessionStorage>) -> String {
        session.set_item(SEEN, &next_value()).unwrap();
        session.get_item(KEY).unwrap_or_default()
    }

    async fn create(Extension(session): Extension<SessionStorage>) -> &'static str {
        session.set_item(KEY, VALUE).unwrap();
        "ok"
    }

    pub(crate) fn app<S: tower_session_storage::SessionStore>(store: S) -> Router {
        Router::new()
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionLayer::new(store))
            .with_state(())
    }
}

mod theirs {
    use super::*;
    use tower_sessions_014::{Session, SessionManagerLayer};

    async fn read(session: Session) -> String {
        session
            .get::<String>(KEY)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn read_write(session: Session) -> String {
        session.insert(SEEN, next_value()).await.unwrap();
        session
            .get::<String>(KEY)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn create(session: Session) -> &'static str {
        session.insert(KEY, VALUE).await.unwrap();
        "ok"
    }

    pub(crate) fn app(pool: SqlitePool, rt: &Runtime) -> Router {
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
        rt.block_on(store.migrate()).unwrap();
        Router::new()
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionManagerLayer::new(store).with_secure(false))
            .with_state(())
    }
}

fn request(path: &'static str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::builder().uri(path);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c.clone());
    }
    req.body(Body::empty()).unwrap()
}

/// Creates a session through `app`; the `Cookie` value that sends it back.
fn session_cookie(rt: &Runtime, app: &Router) -> HeaderValue {
    let res = rt
        .block_on(app.clone().oneshot(request("/create", None)))
        .unwrap();
    assert_eq!(res.status(), 200);
    let set = res
        .headers()
        .get(SET_COOKIE)
        .expect("a session was created");
    let pair = set.to_str().unwrap().split(';').next().unwrap();
    HeaderValue::from_str(pair).unwrap()
}

/// Checks that the scenario does what it claims: 200, the item read back.
fn check(rt: &Runtime, app: &Router, path: &'static str, cookie: &HeaderValue) {
    let res = rt
        .block_on(app.clone().oneshot(request(path, Some(cookie))))
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let bytes = rt
        .block_on(http_body_util::BodyExt::collect(res.into_body()))
        .unwrap()
        .to_bytes();
    assert_eq!(bytes, VALUE.as_bytes(), "{path}");
}

struct App {
    name: &'static str,
    router: Router,
    cookies: Vec<HeaderValue>,
}

/// The same pool settings for both SQLite stores on a file.
fn file_options(dir: &Dir) -> SqliteConnectOptions {
    SqliteConnectOptions::from_str(&dir.url())
        .unwrap()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
}

fn make_apps(rt: &Runtime, dirs: &[Dir; 2]) -> Vec<App> {
    let ours_file = rt.block_on(async {
        let s = SqliteStore::connect(&dirs[0].url()).await.unwrap();
        s.migrate().await.unwrap();
        s
    });
    let ours_mem = rt.block_on(async {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let s = SqliteStore::connect(&format!("sqlite:file:{name}?mode=memory&cache=shared"))
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    });
    let their_pool = rt
        .block_on(SqlitePool::connect_with(file_options(&dirs[1])))
        .unwrap();
    let routers = [
        ("memory", ours::app(MemoryStore::new())),
        ("sqlite_file", ours::app(ours_file)),
        ("sqlite_in_memory", ours::app(ours_mem)),
        ("tower_sessions_sqlx_file", theirs::app(their_pool, rt)),
    ];
    routers
        .into_iter()
        .map(|(name, router)| {
            let cookies: Vec<_> = (0..SESSIONS).map(|_| session_cookie(rt, &router)).collect();
            check(rt, &router, "/read", &cookies[0]);
            check(rt, &router, "/read_write", &cookies[1]);
            App {
                name,
                router,
                cookies,
            }
        })
        .collect()
}

fn group(c: &mut Criterion, rt: &Runtime, apps: &[App], scenario: &str, path: &'static str) {
    let mut g = c.benchmark_group(scenario);
    for app in apps {
        let mut i = 0;
        let with_cookie = path != "/create";
        g.bench_function(app.name, |b| {
            b.to_async(rt).iter(|| {
                let cookie = with_cookie.then(|| {
                    i = (i + 1) % SESSIONS;
                    &app.cookies[i]
                });
                let req = request(path, cookie);
                let svc = app.router.clone();
                async move { black_box(svc.oneshot(req).await.unwrap()) }
            })
        });
    }
    g.finish();
}

fn scenarios(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dirs = [Dir::new("ours"), Dir::new("theirs")];
    let apps = make_apps(&rt, &dirs);
    group(c, &rt, &apps, "sqlite_read", "/read");
    group(c, &rt, &apps, "sqlite_read_write", "/read_write");
    group(c, &rt, &apps, "sqlite_create", "/create");
    drop(apps);
}

criterion_group!(benches, scenarios);
criterion_main!(benches);
