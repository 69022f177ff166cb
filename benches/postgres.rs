//! What a PostgreSQL store adds to a request, side by side with
//! tower-sessions' sqlx PostgreSQL store (`tower-sessions-sqlx-store` 0.15,
//! on tower-sessions 0.14), in the same run, on the same server.
//!
//! The bench starts its own PostgreSQL like the tests do (`initdb` in a temp
//! dir, `postgres` on a free 127.0.0.1 port, as the `postgres` user when run
//! as root; see `tests/postgres_support`), or prints a SKIP and exits when
//! the server binaries are missing.
//!
//! Each scenario is one criterion group with four functions, the same axum
//! routes behind:
//!
//! - `tss_memory`: this crate's `SessionLayer::new(MemoryStore::new())`;
//! - `tss_postgres`: this crate's `SessionLayer::new(PostgresStore::new(pool))`;
//! - `ts_memory`: tower-sessions' `SessionManagerLayer::new(MemoryStore::default())`;
//! - `ts_postgres`: tower-sessions' layer over its sqlx `PostgresStore::new(pool)`.
//!
//! The latency a database store adds is `*_postgres` minus `*_memory` in
//! the same group. Scenarios: `read` (an existing session, read one item),
//! `read_write` (read one item, write one: a new value each time) and
//! `create` (no cookie, write one item: a new session per request). `read`
//! and `read_write` go round 64 sessions. Requests are driven in process
//! (`oneshot` on the router) on a current-thread runtime; each pool holds
//! up to 4 connections to the loopback server.
//!
//! Before the timings, the bench counts the **round trips per request**
//! of each database store: every connection goes through a TCP proxy that
//! reads the PostgreSQL protocol and counts the client's `Sync` and `Query`
//! messages (one per round trip: sqlx sends each statement as
//! Parse/Bind/Execute/Sync in one write), over 200 requests after warm-up.
//!
//! ```text
//! cargo bench --features postgres --bench postgres
//! cargo bench --features postgres --bench postgres -- --warm-up-time 1 --measurement-time 3
//! ```
// `criterion_main!` makes an undocumented `main`.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/postgres_support/mod.rs"]
mod postgres_support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use axum::{Extension, Router};
use criterion::Criterion;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_session_storage::{MemoryStore, PostgresStore, SessionLayer, SessionStorage};

const SESSIONS: usize = 64;
const KEY: &str = "user_id";
const VALUE: &str = "12345";
const SEEN: &str = "seen";

fn next_value() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

mod ours {
    use super::*;

    async fn read(Extension(s): Extension<SessionStorage>) -> String {
        s.get_item(KEY).unwrap_or_default()
    }

    async fn read_write(Extension(s): Extension<SessionStorage>) -> String {
        s.set_item(SEEN, &next_value()).unwrap();
        s.get_item(KEY).unwrap_or_default()
    }

    async fn create(Extension(s): Extension<SessionStorage>) -> &'static str {
        s.set_item(KEY, VALUE).unwrap();
        "ok"
    }

    pub(crate) fn app<S: tower_session_storage::SessionStore>(store: S) -> Router {
        Router::new()
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionLayer::new(store).with_secure(false))
    }
}

mod theirs {
    use super::*;
    use tower_sessions_014::{Session, SessionManagerLayer, SessionStore};

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

    pub(crate) fn app<S: SessionStore + Clone>(store: S) -> Router {
        Router::new()
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionManagerLayer::new(store).with_secure(false))
    }
}

async fn call(app: &Router, path: &str, cookie: Option<&HeaderValue>) -> Option<HeaderValue> {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    let set = res.headers().get(SET_COOKIE).map(|v| {
        let pair = v.to_str().unwrap().split(';').next().unwrap().to_owned();
        HeaderValue::from_str(&pair).unwrap()
    });
    axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    set
}

/// `SESSIONS` sessions made through `app`; their cookies.
async fn sessions(app: &Router) -> Vec<HeaderValue> {
    let mut cookies = Vec::new();
    for _ in 0..SESSIONS {
        cookies.push(call(app, "/create", None).await.expect("a new session"));
    }
    cookies
}

/// What the proxy counted.
#[derive(Default)]
struct Counts {
    /// `Sync` and simple `Query` messages: one per round trip.
    syncs: AtomicUsize,
    /// `Execute` and simple `Query` messages: statements run.
    statements: AtomicUsize,
}

/// A TCP proxy to the server that counts the client's messages.
async fn counting_proxy(upstream: u16) -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Counts::default());
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let (mut cr, cw) = client.into_split();
            let (sr, mut sw) = server.into_split();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut sr, mut cw) = (sr, cw);
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            tokio::spawn(async move {
                // Untyped messages first (SSLRequest, then the startup
                // message), then `type byte + length` messages.
                let mut typed = false;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let n = match cr.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sw.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        let (head, len_at) = if typed { (1, 1) } else { (0, 0) };
                        if buf.len() < head + 4 {
                            break;
                        }
                        let len = u32::from_be_bytes(buf[len_at..len_at + 4].try_into().unwrap())
                            as usize;
                        if buf.len() < head + len {
                            break;
                        }
                        if typed {
                            match buf[0] {
                                b'S' => counter.syncs.fetch_add(1, Ordering::Relaxed),
                                b'Q' => {
                                    counter.syncs.fetch_add(1, Ordering::Relaxed);
                                    counter.statements.fetch_add(1, Ordering::Relaxed)
                                }
                                b'E' => counter.statements.fetch_add(1, Ordering::Relaxed),
                                _ => 0,
                            };
                        } else {
                            let code = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                            // Not an SSL or GSSAPI encryption request: the
                            // startup message; typed messages follow.
                            typed = !matches!(code, 80_877_103 | 80_877_104);
                        }
                        buf.drain(..head + len);
                    }
                }
            });
        }
    });
    (port, count)
}

async fn pool(port: u16) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .await
        .unwrap()
}

/// The two database apps on pools to `port`, their tables created.
async fn db_apps(port: u16, table: &str) -> (Router, Router) {
    let ours = PostgresStore::new(pool(port).await)
        .with_table_name(table)
        .unwrap();
    ours.migrate().await.unwrap();
    let theirs =
        tower_sessions_sqlx_store::PostgresStore::new(pool(port).await).with_table_name(table);
    let theirs = theirs.unwrap();
    theirs.migrate().await.unwrap();
    (ours::app(ours), theirs::app(theirs))
}

/// Round trips per request of each database store, per scenario.
fn round_trips(rt: &Runtime, server_port: u16) {
    rt.block_on(async {
        let (port, count) = counting_proxy(server_port).await;
        let (ours, theirs) = db_apps(port, "rt_sessions").await;
        println!(
            "per request, over 200 requests: round trips (client Sync/Query messages) / \
             statements (Execute/Query messages)"
        );
        for (name, app) in [("tss_postgres", &ours), ("ts_postgres", &theirs)] {
            let cookies = sessions(app).await;
            for scenario in ["read", "read_write", "create"] {
                let path = format!("/{scenario}");
                // Warm-up: every connection has its statements prepared.
                for i in 0..50 {
                    let c = (scenario != "create").then(|| &cookies[i % SESSIONS]);
                    call(app, &path, c).await;
                }
                // Let the pool's release pings of the warm-up finish.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let before = (
                    count.syncs.load(Ordering::Relaxed),
                    count.statements.load(Ordering::Relaxed),
                );
                for i in 0..200 {
                    let c = (scenario != "create").then(|| &cookies[i % SESSIONS]);
                    call(app, &path, c).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let syncs = count.syncs.load(Ordering::Relaxed) - before.0;
                let statements = count.statements.load(Ordering::Relaxed) - before.1;
                println!(
                    "  {name:>13} {scenario:<10} {:.2} / {:.2}",
                    syncs as f64 / 200.0,
                    statements as f64 / 200.0
                );
            }
        }
    });
}

fn bench(c: &mut Criterion, rt: &Runtime, server_port: u16) {
    let (ours_pg, theirs_pg) = rt.block_on(db_apps(server_port, "bench_sessions"));
    let apps = [
        // No cap: `create` makes a session per iteration.
        (
            "tss_memory",
            ours::app(MemoryStore::new().with_max_sessions(usize::MAX)),
        ),
        ("tss_postgres", ours_pg),
        (
            "ts_memory",
            theirs::app(tower_sessions_014::MemoryStore::default()),
        ),
        ("ts_postgres", theirs_pg),
    ];
    let cookies: Vec<Vec<HeaderValue>> = apps
        .iter()
        .map(|(_, app)| rt.block_on(sessions(app)))
        .collect();
    for scenario in ["read", "read_write", "create"] {
        let mut group = c.benchmark_group(scenario);
        let path = format!("/{scenario}");
        for ((name, app), cookies) in apps.iter().zip(&cookies) {
            let next = AtomicUsize::new(0);
            group.bench_function(*name, |b| {
                b.to_async(rt).iter(|| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let c = (scenario != "create").then(|| &cookies[i % SESSIONS]);
                    call(app, &path, c)
                })
            });
        }
        group.finish();
    }
}

fn main() {
    if !postgres_support::available() {
        return;
    }
    let Some(server) = postgres_support::Postgres::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    round_trips(&rt, server.port());
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut c, &rt, server.port());
    c.final_summary();
    drop(server);
}
