//! An end-to-end load target: one axum server, with or without a session
//! layer, to drive with `wrk` and compare server CPU time per request.
//!
//! ```text
//! cargo run --release --example load -- bare             # no session layer
//! cargo run --release --example load -- session          # tower-session-storage
//! cargo run --release --example load -- tower-sessions   # tower-sessions 0.15
//! cargo run --release --example load -- axum-session     # axum_session 0.22, memory only
//! cargo run --release --example load -- minimal          # benches/support/minimal.rs: the floor
//! cargo run --release --example load -- session 3001     # another port (default 3000)
//! ```
//!
//! `minimal` is a deliberately minimal layer (cookie scan, UUID parse, one
//! map look-up cloning an `Arc<str>`, one `Arc` handle; no expiry, caps or
//! change sets): what any cookie-and-map session layer costs at least. Its
//! session's data is one string, so its `/create` writes one value.
//!
//! Routes (the same handlers' work in every mode; `bare` skips the session):
//!
//! - `GET /create`: writes `user_id` and a 32-character `csrf` item, so each
//!   request without a cookie creates a session;
//! - `GET /read`: reads `user_id`;
//! - `GET /write`: reads `user_id` and writes `seen` (a new value each time).
//!
//! Drive it with `wrk` (Debian package `wrk`) on loopback. Get a session
//! cookie first, then send it on every request:
//!
//! ```text
//! curl -si http://127.0.0.1:3000/create | grep -i set-cookie   # Set-Cookie: id=...; ...
//! wrk -t1 -c32 -d20s -H "Cookie: id=<the id>" http://127.0.0.1:3000/read
//! wrk -t1 -c32 -d20s -H "Cookie: id=<the id>" http://127.0.0.1:3000/write
//! wrk -t1 -c32 -d20s http://127.0.0.1:3000/create
//! ```
//!
//! Then stop the server with Ctrl-C (or `kill -INT <pid>`): it prints the CPU
//! time it used (user + system, all threads, from `/proc/self/stat`), the
//! requests it served, and the CPU microseconds per request. Compare those
//! across modes, one wrk run per server start; wrk's own requests/second
//! depends on wrk sharing the machine's cores and is a weaker figure. From
//! outside, `ps -o time= -p <pid>` or fields 14 and 15 of `/proc/<pid>/stat`
//! give the same CPU time.
#![allow(clippy::unwrap_used)]

#[path = "../benches/support/minimal.rs"]
mod minimal;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::get;
use axum::{Extension, Router};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

const USER_ID: &str = "12345";
const CSRF: &str = "0123456789abcdef0123456789abcdef";

/// Requests served by the handlers.
static SERVED: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);

fn served() {
    SERVED.fetch_add(1, Ordering::Relaxed);
}

fn next_seen() -> String {
    SEEN.fetch_add(1, Ordering::Relaxed).to_string()
}

mod bare {
    use super::*;

    pub(crate) async fn create() -> &'static str {
        served();
        std::hint::black_box((USER_ID, CSRF));
        "ok"
    }

    pub(crate) async fn read() -> String {
        served();
        std::hint::black_box(USER_ID).to_owned()
    }

    pub(crate) async fn write() -> String {
        served();
        std::hint::black_box(next_seen());
        std::hint::black_box(USER_ID).to_owned()
    }
}

mod ours {
    use super::*;

    pub(crate) async fn create(Extension(session): Extension<SessionStorage>) -> &'static str {
        served();
        session.set_item("user_id", USER_ID).unwrap();
        session.set_item("csrf", CSRF).unwrap();
        "ok"
    }

    pub(crate) async fn read(Extension(session): Extension<SessionStorage>) -> String {
        served();
        session.get_item("user_id").unwrap_or_default()
    }

    pub(crate) async fn write(Extension(session): Extension<SessionStorage>) -> String {
        served();
        session.set_item("seen", &next_seen()).unwrap();
        session.get_item("user_id").unwrap_or_default()
    }
}

mod theirs {
    use super::*;
    use tower_sessions::Session;

    pub(crate) async fn create(session: Session) -> &'static str {
        served();
        session.insert("user_id", USER_ID).await.unwrap();
        session.insert("csrf", CSRF).await.unwrap();
        "ok"
    }

    pub(crate) async fn read(session: Session) -> String {
        served();
        session
            .get::<String>("user_id")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub(crate) async fn write(session: Session) -> String {
        served();
        session.insert("seen", next_seen()).await.unwrap();
        session
            .get::<String>("user_id")
            .await
            .unwrap()
            .unwrap_or_default()
    }
}

mod min {
    use super::*;
    use crate::minimal::MinimalSession;

    pub(crate) async fn create(Extension(session): Extension<MinimalSession>) -> &'static str {
        served();
        session.set(USER_ID);
        "ok"
    }

    pub(crate) async fn read(Extension(session): Extension<MinimalSession>) -> String {
        served();
        session.get().map(|d| d.to_string()).unwrap_or_default()
    }

    pub(crate) async fn write(Extension(session): Extension<MinimalSession>) -> String {
        served();
        let read = session.get().map(|d| d.to_string()).unwrap_or_default();
        session.set(&next_seen());
        read
    }
}

mod axs {
    use super::*;
    use axum_session::{Session, SessionNullPool};

    pub(crate) async fn create(session: Session<SessionNullPool>) -> &'static str {
        served();
        session.set("user_id", USER_ID);
        session.set("csrf", CSRF);
        "ok"
    }

    pub(crate) async fn read(session: Session<SessionNullPool>) -> String {
        served();
        session.get::<String>("user_id").unwrap_or_default()
    }

    pub(crate) async fn write(session: Session<SessionNullPool>) -> String {
        served();
        session.set("seen", next_seen());
        session.get::<String>("user_id").unwrap_or_default()
    }
}

async fn app(mode: &str) -> Option<Router> {
    Some(match mode {
        "bare" => Router::new()
            .route("/create", get(bare::create))
            .route("/read", get(bare::read))
            .route("/write", get(bare::write)),
        "session" => Router::new()
            .route("/create", get(ours::create))
            .route("/read", get(ours::read))
            .route("/write", get(ours::write))
            // The default cap (1M sessions) is what an app gets, and it
            // sizes the store's map: lifting it to `usize::MAX` gives the
            // map 32768 shards, and 512 sessions then sit in 512 shards, a
            // cold shard and a cold table per look-up. A 5 s wrk run on
            // /create makes a few 100k sessions: under the cap.
            .layer(SessionLayer::new(MemoryStore::new())),
        "tower-sessions" => Router::new()
            .route("/create", get(theirs::create))
            .route("/read", get(theirs::read))
            .route("/write", get(theirs::write))
            .layer(tower_sessions::SessionManagerLayer::new(
                tower_sessions::MemoryStore::default(),
            )),
        "minimal" => Router::new()
            .route("/create", get(min::create))
            .route("/read", get(min::read))
            .route("/write", get(min::write))
            .layer(minimal::MinimalLayer::new()),
        "axum-session" => {
            use axum_session::{SessionConfig, SessionLayer, SessionNullPool, SessionStore};
            let store = SessionStore::<SessionNullPool>::new(None, SessionConfig::default())
                .await
                .unwrap();
            Router::new()
                .route("/create", get(axs::create))
                .route("/read", get(axs::read))
                .route("/write", get(axs::write))
                .layer(SessionLayer::new(store))
        }
        _ => return None,
    })
}

/// CPU seconds this process used so far (user + system, all threads), from
/// fields 14 and 15 of `/proc/self/stat`, in clock ticks of 1/100 s (Linux's
/// `USER_HZ`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is rest's first
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error as text (`{e}`), not its `Debug` form.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "session".to_owned());
    const USAGE: &str = "usage: load [bare|session|tower-sessions|axum-session|minimal] [port]";
    let port: u16 = match args.next().map(|p| p.parse::<u16>()) {
        None => 3000,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("the port: {e}; {USAGE}");
            std::process::exit(2);
        }
    };
    let Some(app) = app(&mode).await else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let pid = std::process::id();
    println!("mode {mode}, pid {pid}, listening on {url}");
    println!("  cookie: curl -si {url}/create | grep -i set-cookie");
    println!("  read:   wrk -t1 -c32 -d20s -H \"Cookie: id=<the id>\" {url}/read");
    println!("  write:  wrk -t1 -c32 -d20s -H \"Cookie: id=<the id>\" {url}/write");
    println!("  create: wrk -t1 -c32 -d20s {url}/create");
    println!("  stop with Ctrl-C or `kill -INT {pid}` to print CPU time per request");

    let cpu_at_start = cpu_seconds().unwrap_or(0.0);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;

    let cpu = cpu_seconds().unwrap_or(0.0) - cpu_at_start;
    let n = SERVED.load(Ordering::Relaxed);
    println!("mode {mode}: {n} requests, {cpu:.2} s CPU (user + system, all threads)");
    if n > 0 {
        println!(
            "mode {mode}: {:.2} µs CPU per request",
            cpu * 1e6 / n as f64
        );
    }
    Ok(())
}
