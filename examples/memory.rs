//! Bytes per session: this crate's `MemoryStore` next to tower-sessions'.
//!
//! ```text
//! cargo run --release --example memory            # 1,000,000 sessions each
//! cargo run --release --example memory -- 200000  # another count
//! ```
//!
//! For each layer, in a process of its own (so one layer's freed memory does
//! not serve the other), N sessions are created through the real layer with
//! in-process requests whose handler writes `user_id = "12345"` and a
//! 32-character `csrf` item, the way an app signs a user in. The figures are
//! what the process holds after minus before, divided by N, so they count
//! everything the store keeps (map, ids, items, timestamps, expiry index) and
//! nothing of the requests, which are gone by then:
//!
//! - **heap bytes**: bytes live on the heap as requested from the allocator,
//!   counted by a counting global allocator (the `stats_alloc` crate: this
//!   package forbids unsafe code, so it cannot implement `GlobalAlloc`
//!   itself). The headline figure.
//! - **blocks**: live heap allocations; glibc's malloc adds about 8 bytes to
//!   each and rounds it up to 16 (32 at least), on top of the heap bytes.
//! - **RSS**: growth of the resident set (`/proc/self/statm`), which includes
//!   that overhead and the map's spare capacity at this N.
//!
//! A second table gives the heap allocations (and bytes allocated) per
//! request for the scenarios of `benches/session.rs` (`untouched`, `read`,
//! `read_write`, `create` with one item), with no layer, this crate and
//! tower-sessions: allocations are a large part of a session layer's cost.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::hint::black_box;
use std::process::Command;

use axum::body::Body;
use axum::http::header::SET_COOKIE;
use axum::http::Request;
use axum::routing::get;
use axum::{Extension, Router};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const USER_ID: &str = "12345";
/// 32 characters, the size of a typical CSRF token in hex.
const CSRF: &str = "0123456789abcdef0123456789abcdef";

const LAYERS: [(&str, &str); 3] = [
    ("ours", "tower-session-storage (MemoryStore)"),
    ("linked", "  the same, linked (user, sid)"),
    ("theirs", "tower-sessions 0.15 (MemoryStore)"),
];

async fn ours(Extension(session): Extension<SessionStorage>) -> &'static str {
    session.set_item("user_id", USER_ID).unwrap();
    session.set_item("csrf", CSRF).unwrap();
    "ok"
}

/// As `ours`, and linked for the registry as a sign-in does: `user` (the
/// same for every session, as for one busy user) and a per-session `sid`.
async fn linked(Extension(session): Extension<SessionStorage>) -> &'static str {
    session.set_item("user_id", USER_ID).unwrap();
    session.set_item("csrf", CSRF).unwrap();
    session.link("user", USER_ID).unwrap();
    session
        .link("sid", &uuid::Uuid::new_v4().simple().to_string())
        .unwrap();
    "ok"
}

async fn theirs(session: tower_sessions::Session) -> &'static str {
    session.insert("user_id", USER_ID).await.unwrap();
    session.insert("csrf", CSRF).await.unwrap();
    "ok"
}

/// What the process holds now: live heap bytes, live blocks, resident bytes.
fn held() -> [i64; 3] {
    let s = GLOBAL.stats();
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    // Pages of 4 KiB (x86-64 and aarch64 Linux defaults).
    let rss_pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    [
        s.bytes_allocated as i64 - s.bytes_deallocated as i64,
        s.allocations as i64 - s.deallocations as i64,
        rss_pages * 4096,
    ]
}

/// Creates `n` sessions through `app`; returns what the process holds more.
///
/// The app, and whatever its first request initialises lazily, exist before
/// the first reading; the store lives until after the second.
fn grow(rt: &Runtime, app: Router, n: usize) -> [i64; 3] {
    // Ready routes, as `axum::serve` makes them (see `benches/session.rs`).
    let app: Router = app.with_state(());
    let one = || {
        let req = Request::builder().uri("/").body(Body::empty()).unwrap();
        let res = rt.block_on(app.clone().oneshot(req)).unwrap();
        assert!(res.headers().contains_key(SET_COOKIE), "no session made");
        black_box(res);
    };
    one();
    let before = held();
    for _ in 0..n {
        one();
    }
    let after = held();
    [0, 1, 2].map(|i| after[i] - before[i])
}

/// Measures one layer in this process and prints one line of numbers.
fn child(which: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grown = match which {
        "ours" | "linked" => {
            // Capped just above what is created, as an app would size it
            // (the cap also sets how finely the map is sharded).
            let store = MemoryStore::new().with_max_sessions(n + 1);
            let handler = if which == "ours" {
                get(ours)
            } else {
                get(linked)
            };
            let app = Router::new()
                .route("/", handler)
                .layer(SessionLayer::new(store.clone()));
            let grown = grow(&rt, app, n);
            assert_eq!(store.len(), n + 1);
            grown
        }
        "theirs" => {
            let store = tower_sessions::MemoryStore::default();
            let app = Router::new()
                .route("/", get(theirs))
                .layer(tower_sessions::SessionManagerLayer::new(store));
            grow(&rt, app, n)
        }
        other => panic!("unknown layer {other:?}"),
    };
    println!("{} {} {}", grown[0], grown[1], grown[2]);
}

/// The handlers of the per-request table: the scenarios of
/// `benches/session.rs`.
mod scenario {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn next_value() -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed).to_string()
    }

    async fn untouched() -> &'static str {
        "ok"
    }

    fn routes(app: Router) -> Router {
        app.route("/untouched", get(untouched))
    }

    pub(crate) fn bare() -> Router {
        routes(Router::new())
            .route("/read", get(|| async { black_box(USER_ID).to_owned() }))
            .route(
                "/read_write",
                get(|| async {
                    black_box(next_value());
                    black_box(USER_ID).to_owned()
                }),
            )
            .route("/create", get(|| async { "ok" }))
    }

    pub(crate) fn ours() -> Router {
        type S = Extension<SessionStorage>;
        routes(Router::new())
            .route(
                "/read",
                get(|Extension(s): S| async move { s.get_item("user_id").unwrap_or_default() }),
            )
            .route(
                "/read_write",
                get(|Extension(s): S| async move {
                    s.set_item("seen", &next_value()).unwrap();
                    s.get_item("user_id").unwrap_or_default()
                }),
            )
            .route(
                "/create",
                get(|Extension(s): S| async move {
                    s.set_item("user_id", USER_ID).unwrap();
                    "ok"
                }),
            )
            .layer(SessionLayer::new(
                MemoryStore::new().with_max_sessions(usize::MAX),
            ))
    }

    pub(crate) fn theirs() -> Router {
        use tower_sessions::Session;
        async fn read(s: &Session) -> String {
            s.get::<String>("user_id")
                .await
                .unwrap()
                .unwrap_or_default()
        }
        routes(Router::new())
            .route("/read", get(|s: Session| async move { read(&s).await }))
            .route(
                "/read_write",
                get(|s: Session| async move {
                    s.insert("seen", next_value()).await.unwrap();
                    read(&s).await
                }),
            )
            .route(
                "/create",
                get(|s: Session| async move {
                    s.insert("user_id", USER_ID).await.unwrap();
                    "ok"
                }),
            )
            .layer(tower_sessions::SessionManagerLayer::new(
                tower_sessions::MemoryStore::default(),
            ))
    }
}

/// Allocations and bytes allocated per request, averaged over `n` requests.
fn allocs_per_request(rt: &Runtime, app: &Router, path: &str, cookie: Option<&str>) -> (f64, f64) {
    let one = || {
        let mut req = Request::builder().uri(path);
        if let Some(c) = cookie {
            req = req.header(axum::http::header::COOKIE, c);
        }
        let res = rt
            .block_on(app.clone().oneshot(req.body(Body::empty()).unwrap()))
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        black_box(res);
    };
    for _ in 0..100 {
        one();
    }
    const N: usize = 10_000;
    let before = GLOBAL.stats();
    for _ in 0..N {
        one();
    }
    let after = GLOBAL.stats();
    (
        (after.allocations + after.reallocations - before.allocations - before.reallocations)
            as f64
            / N as f64,
        (after.bytes_allocated - before.bytes_allocated) as f64 / N as f64,
    )
}

fn per_request_table() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Ready routes, as `axum::serve` makes them (see `benches/session.rs`).
    let apps: [(&str, Router); 3] = [
        ("bare", scenario::bare().with_state(())),
        ("tower-session-storage", scenario::ours().with_state(())),
        ("tower-sessions", scenario::theirs().with_state(())),
    ];
    let cookie = |app: &Router| {
        let req = Request::builder()
            .uri("/create")
            .body(Body::empty())
            .unwrap();
        let res = rt.block_on(app.clone().oneshot(req)).unwrap();
        let set = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        set.split(';').next().unwrap().to_owned()
    };
    let cookies = [cookie(&apps[1].1), cookie(&apps[1].1), cookie(&apps[2].1)];
    println!("\nper request, in process (allocations incl. reallocations / bytes allocated):\n");
    println!(
        "| {:<10} | {:>17} | {:>22} | {:>17} |",
        "scenario", "bare", "tower-session-storage", "tower-sessions"
    );
    println!("|{:-<12}|{:->19}|{:->24}|{:->19}|", "", "", "", "");
    for (scenario, with_cookie) in [
        ("untouched", false),
        ("read", true),
        ("read_write", true),
        ("create", false),
    ] {
        let path = format!("/{scenario}");
        let cells: Vec<String> = apps
            .iter()
            .zip(&cookies)
            .map(|((_, app), c)| {
                let (n, bytes) =
                    allocs_per_request(&rt, app, &path, with_cookie.then_some(c.as_str()));
                format!("{n:.1} / {bytes:.0} B")
            })
            .collect();
        println!(
            "| {:<10} | {:>17} | {:>22} | {:>17} |",
            scenario, cells[0], cells[1], cells[2]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, which, n] = &args[..] {
        if flag == "--child" {
            return child(which, n.parse().unwrap());
        }
    }
    let n: usize = match args.get(1).map(|a| a.parse::<usize>()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("the argument is a session count: {e}");
            std::process::exit(2);
        }
    };
    let payload = "user_id".len() + USER_ID.len() + "csrf".len() + CSRF.len();
    println!(
        "{n} sessions, each holding user_id = \"{USER_ID}\" and a {}-character csrf \
         ({payload} bytes of keys and values)\n",
        CSRF.len()
    );
    println!(
        "| {:<36} | {:>18} | {:>16} | {:>17} |",
        "layer", "heap bytes/session", "blocks/session", "RSS bytes/session"
    );
    println!("|{:-<38}|{:->20}|{:->18}|{:->19}|", "", "", "", "");
    let exe = std::env::current_exe().unwrap();
    for (which, name) in LAYERS {
        let out = Command::new(&exe)
            .args(["--child", which, &n.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nums: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap() / n as f64)
            .collect();
        println!(
            "| {:<36} | {:>18.0} | {:>16.1} | {:>17.0} |",
            name, nums[0], nums[1], nums[2]
        );
    }
    per_request_table();
}
