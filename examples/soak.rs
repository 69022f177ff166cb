//! A churn soak: sign-in, `cycle_id` and sign-out traffic over HTTP for
//! minutes, reporting requests, errors and memory at the start and the end.
//!
//! ```text
//! cargo run --release --example soak                                  # memory store, 60 s
//! SOAK_SECONDS=300 SOAK_CLIENTS=32 cargo run --release --example soak
//! SOAK_STORE=redis SOAK_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --release --features redis --example soak             # Redis
//! ```
//!
//! One process runs an axum server on `127.0.0.1:<free port>` and `SOAK_CLIENTS`
//! clients (default 16) that loop, each round on a fresh session:
//!
//! 1. `GET /start` without a cookie: an anonymous session is created
//!    (a login `state` item);
//! 2. `GET /signin`: writes `user` and calls `cycle_id()`, as a sign-in must;
//! 3. `GET /me`, then two more `GET /cycle` (privilege changes);
//! 4. `GET /signout` (destroy) **at the same time as** another `GET /cycle`
//!    on the same cookie: the race a logout must win;
//! 5. `GET /me` with every id the round saw. When the logout loaded the
//!    session (its response expires the cookie), each must be signed out:
//!    a session still readable under any of them is a violation. When the
//!    cycle finished before the logout was even read, the logout carried an
//!    id that was already dead: it found no session and cannot end the one
//!    under the new id (a retired id never acts on a session, whoever sends
//!    it). Those rounds are counted as "late logouts" and the client signs
//!    out again with the new id, as an app would after seeing no session.
//!
//! So no session outlives its round: whatever the store keeps must go back
//! to where it started. Every 10 s and at the end it prints the requests,
//! the responses that were not 2xx, the violations, the process RSS (from
//! `/proc/self/statm`; the clients run in the same process and hold nothing
//! between rounds) and how many sessions the store holds. The memory store
//! is capped at 1,000 sessions, far below the sessions the run creates.
//! It exits non-zero if any violation was seen.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage, SessionStore};

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    violations: AtomicU64,
    late_logouts: AtomicU64,
    rounds: AtomicU64,
}

fn app<S: SessionStore>(layer: SessionLayer<S>) -> Router {
    Router::new()
        .route(
            "/start",
            get(|Extension(s): Extension<SessionStorage>| async move {
                s.set_item("state", "0123456789abcdef").unwrap();
                "started"
            }),
        )
        .route(
            "/signin",
            get(|Extension(s): Extension<SessionStorage>| async move {
                s.remove_item("state");
                s.set_item("user", "alice").unwrap();
                s.cycle_id();
                "signed in"
            }),
        )
        .route(
            "/cycle",
            get(|Extension(s): Extension<SessionStorage>| async move {
                s.cycle_id();
                "cycled"
            }),
        )
        .route(
            "/me",
            get(|Extension(s): Extension<SessionStorage>| async move {
                s.get_item("user").unwrap_or_else(|| "-".into())
            }),
        )
        .route(
            "/signout",
            get(|Extension(s): Extension<SessionStorage>| async move {
                s.destroy();
                "signed out"
            }),
        )
        // The soak's own HTTP client keeps cookies without the browser's
        // `Secure` rules; off, so the cookie is sent whatever the host.
        .layer(layer.with_secure(false))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one request got back.
#[derive(Default)]
struct Reply {
    /// The new session id from `Set-Cookie`, if any.
    id: Option<String>,
    /// Whether `Set-Cookie` expired the cookie (a logout that found the session).
    expired: bool,
    body: String,
}

/// One request. Counts the request and a non-2xx answer.
async fn request(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    id: Option<&str>,
    c: &Counters,
) -> Reply {
    c.requests.fetch_add(1, Ordering::Relaxed);
    let mut req = client.get(format!("{base}{path}"));
    if let Some(id) = id {
        req = req.header("cookie", format!("id={id}"));
    }
    let Ok(res) = req.send().await else {
        c.errors.fetch_add(1, Ordering::Relaxed);
        return Reply::default();
    };
    if !res.status().is_success() {
        c.errors.fetch_add(1, Ordering::Relaxed);
    }
    let ours = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.strip_prefix("id="))
        .next()
        .map(str::to_owned);
    Reply {
        expired: ours.as_deref() == Some(""),
        id: ours.filter(|v| !v.is_empty()),
        body: res.text().await.unwrap_or_default(),
    }
}

async fn client_loop(base: String, c: Arc<Counters>, until: Instant) {
    let client = reqwest::Client::new();
    while Instant::now() < until {
        let mut seen = Vec::with_capacity(6);
        let Some(id) = request(&client, &base, "/start", None, &c).await.id else {
            continue;
        };
        seen.push(id.clone());
        let Some(mut id) = request(&client, &base, "/signin", Some(&id), &c).await.id else {
            continue;
        };
        seen.push(id.clone());
        request(&client, &base, "/me", Some(&id), &c).await;
        for _ in 0..2 {
            if let Some(new) = request(&client, &base, "/cycle", Some(&id), &c).await.id {
                id = new;
                seen.push(id.clone());
            }
        }
        // The logout races a cycle of the same session.
        let (signout, cycle) = tokio::join!(
            request(&client, &base, "/signout", Some(&id), &c),
            request(&client, &base, "/cycle", Some(&id), &c),
        );
        if !signout.expired {
            // The cycle won before the logout was read: the logout's id was
            // already dead. Sign out again with the id the cycle handed out.
            c.late_logouts.fetch_add(1, Ordering::Relaxed);
            if let Some(new) = &cycle.id {
                request(&client, &base, "/signout", Some(new), &c).await;
            }
        }
        seen.extend(cycle.id);
        for id in &seen {
            if request(&client, &base, "/me", Some(id), &c).await.body == "alice" {
                c.violations.fetch_add(1, Ordering::Relaxed);
                eprintln!("VIOLATION: a signed-out session is still readable");
            }
        }
        c.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn report(label: &str, c: &Counters, start_rss: u64, sessions: Option<usize>) {
    let rss = rss_bytes();
    println!(
        "{label}: rounds {} (late logouts {}) requests {} non-2xx {} violations {} | RSS {:.1} MiB (start {:.1} MiB, {:+.1} MiB) | sessions held {}",
        c.rounds.load(Ordering::Relaxed),
        c.late_logouts.load(Ordering::Relaxed),
        c.requests.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.violations.load(Ordering::Relaxed),
        rss as f64 / 1048576.0,
        start_rss as f64 / 1048576.0,
        (rss as f64 - start_rss as f64) / 1048576.0,
        sessions.map_or("?".into(), |n| n.to_string()),
    );
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_or("SOAK_SECONDS", 60);
    let clients: usize = env_or("SOAK_CLIENTS", 16);
    let store_kind = std::env::var("SOAK_STORE").unwrap_or_else(|_| "memory".into());

    let memory = MemoryStore::new().with_max_sessions(1_000);
    let router = match store_kind.as_str() {
        "memory" => app(SessionLayer::new(memory.clone())),
        #[cfg(feature = "redis")]
        "redis" => {
            let url =
                std::env::var("SOAK_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let store = match tower_session_storage::RedisStore::connect(&url).await {
                Ok(store) => store,
                Err(e) => {
                    eprintln!("error: cannot connect to Redis at {url} (SOAK_REDIS_URL): {e}");
                    std::process::exit(1);
                }
            };
            app(SessionLayer::new(store))
        }
        other => {
            eprintln!("error: SOAK_STORE={other}: use memory, or redis with --features redis");
            std::process::exit(2);
        }
    };
    let sessions = || (store_kind == "memory").then(|| memory.len());

    let port = env_or("SOAK_PORT", 0u16);
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{port} (SOAK_PORT): {e}");
                std::process::exit(1);
            }
        };
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    println!("soak: {store_kind} store, {clients} clients, {seconds} s, server at {base}");
    let counters = Arc::new(Counters::default());
    let start_rss = rss_bytes();
    report("start", &counters, start_rss, sessions());
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client_loop(base.clone(), counters.clone(), until)))
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    ticker.tick().await;
    while Instant::now() < until {
        ticker.tick().await;
        report("  ...", &counters, start_rss, sessions());
    }
    for t in tasks {
        t.await.unwrap();
    }
    report("end", &counters, start_rss, sessions());
    if counters.violations.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
