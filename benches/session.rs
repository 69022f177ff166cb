//! Per-request cost of the session layer, side by side with a bare service,
//! a deliberately minimal layer, tower-sessions (0.15, its `MemoryStore`) and
//! axum_session (0.22, memory only: no database pool), in the same groups.
//!
//! Each scenario is one criterion group with five functions:
//!
//! - `bare`: the axum router with no session layer;
//! - `minimal`: the same router behind `benches/support/minimal.rs`, the least
//!   work a cookie-and-map layer does (cookie scan, UUID parse, one `DashMap`
//!   look-up cloning an `Arc<str>`, one `Arc` handle; no expiry, caps or
//!   change sets): the floor;
//! - `tower_session_storage`: the same router behind
//!   `SessionLayer::new(MemoryStore::new())`;
//! - `tower_sessions`: behind tower-sessions'
//!   `SessionManagerLayer::new(MemoryStore::default())`;
//! - `axum_session`: behind axum_session's `SessionLayer` with its default
//!   `SessionConfig` and no database (`SessionStore::<SessionNullPool>::new(None, ..)`).
//!   Its default mode creates a session for every request without a cookie,
//!   so its `untouched` sets a cookie and stores a session each time; and it
//!   sends its cookies again on every response.
//!
//! Scenarios: `untouched` (no cookie, the handler never touches the session),
//! `read` (an existing session, read one item), `read_write` (an existing
//! session, read one item and write one item, a new value each time, since
//! tower-sessions skips saving an unchanged value) and `create` (no cookie,
//! the handler writes one item, so every request creates a session). `read`
//! and `read_write` go round 512 sessions, one after the other, as real
//! traffic spreads over many sessions; `read_hot` reads one session over and
//! over, to compare with `read` (costs of shared state show in both, costs
//! of cold per-session data only in `read`).
//!
//! Every request is built inside the measured iteration and driven in
//! process with `oneshot` on a clone of the router, on a current-thread tokio
//! runtime; the functions do the same work apart from the layer. The cost a
//! layer adds is its time minus `bare`'s in the same group.
//!
//! `scaling_read` and `scaling_read_write`: the same requests on one thread,
//! then on two threads at once (each its own current-thread runtime, its own
//! router called as a server calls its connection's, and its own half of
//! the 512 sessions), reported as time per request: the
//! two-thread time is half the one-thread time when nothing is shared. Only
//! meaningful on a machine with two idle cores.
//!
//! ```text
//! cargo bench --bench session
//! cargo bench --bench session -- --warm-up-time 1 --measurement-time 3   # quicker
//! cargo bench --bench session -- '^read/'                                 # one scenario
//! ```
// `criterion_main!` makes an undocumented `main`.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "support/minimal.rs"]
#[allow(dead_code)]
mod minimal;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use axum::{Extension, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

/// Sessions that `read` and `read_write` go round.
const SESSIONS: usize = 512;

/// The item every `read` reads and `create` writes.
const KEY: &str = "user_id";
const VALUE: &str = "12345";
/// The item `read_write` writes.
const SEEN: &str = "seen";

/// A new value for every write (tower-sessions does not save an unchanged
/// value, so a constant would spare it the save).
fn next_value() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The handler of `untouched`, shared by all three routers.
async fn untouched() -> &'static str {
    "ok"
}

mod bare {
    use super::*;

    pub(crate) async fn read() -> String {
        black_box(VALUE).to_owned()
    }

    pub(crate) async fn read_write() -> String {
        black_box(next_value());
        black_box(VALUE).to_owned()
    }

    pub(crate) async fn create() -> &'static str {
        black_box((KEY, VALUE));
        "ok"
    }

    pub(crate) fn app() -> Router {
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
    }
}

mod ours {
    use super::*;

    pub(crate) async fn read(Extension(session): Extension<SessionStorage>) -> String {
        session.get_item(KEY).unwrap_or_default()
    }

    pub(crate) async fn read_write(Extension(session): Extension<SessionStorage>) -> String {
        session.set_item(SEEN, &next_value()).unwrap();
        session.get_item(KEY).unwrap_or_default()
    }

    pub(crate) async fn create(Extension(session): Extension<SessionStorage>) -> &'static str {
        session.set_item(KEY, VALUE).unwrap();
        "ok"
    }

    /// `lifted`: no cap on sessions, for `create`, which adds one per
    /// iteration (millions). The cap sizes the map (about 2048 sessions a
    /// shard at the cap), so the other groups keep the default cap of 1M,
    /// as an app does: lifted, 512 sessions would sit in 32768 shards.
    pub(crate) fn app(lifted: bool) -> Router {
        let store = if lifted {
            MemoryStore::new().with_max_sessions(usize::MAX)
        } else {
            MemoryStore::new()
        };
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionLayer::new(store))
            .with_state(())
    }
}

mod theirs {
    use super::*;
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

    pub(crate) async fn read(session: Session) -> String {
        session
            .get::<String>(KEY)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub(crate) async fn read_write(session: Session) -> String {
        session.insert(SEEN, next_value()).await.unwrap();
        session
            .get::<String>(KEY)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub(crate) async fn create(session: Session) -> &'static str {
        session.insert(KEY, VALUE).await.unwrap();
        "ok"
    }

    pub(crate) fn app() -> Router {
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionManagerLayer::new(MemoryStore::default()))
    }
}

mod min {
    use super::*;
    use crate::minimal::{MinimalLayer, MinimalSession};

    pub(crate) async fn read(Extension(session): Extension<MinimalSession>) -> String {
        session.get().map(|d| d.to_string()).unwrap_or_default()
    }

    /// Answers the value it read (its one string is the session's data).
    pub(crate) async fn read_write(Extension(session): Extension<MinimalSession>) -> String {
        let read = session.get().map(|d| d.to_string()).unwrap_or_default();
        session.set(&next_value());
        read
    }

    pub(crate) async fn create(Extension(session): Extension<MinimalSession>) -> &'static str {
        session.set(VALUE);
        "ok"
    }

    pub(crate) fn app() -> Router {
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(MinimalLayer::new())
    }
}

mod axs {
    use super::*;
    use axum_session::{Session, SessionConfig, SessionLayer, SessionNullPool, SessionStore};

    pub(crate) async fn read(session: Session<SessionNullPool>) -> String {
        session.get::<String>(KEY).unwrap_or_default()
    }

    pub(crate) async fn read_write(session: Session<SessionNullPool>) -> String {
        session.set(SEEN, next_value());
        session.get::<String>(KEY).unwrap_or_default()
    }

    pub(crate) async fn create(session: Session<SessionNullPool>) -> &'static str {
        session.set(KEY, VALUE);
        "ok"
    }

    /// Built in the runtime: its layer starts a task for every route it
    /// wraps (when `with_state` makes the routes).
    pub(crate) fn app(rt: &Runtime) -> Router {
        let _in_rt = rt.enter();
        let store = rt
            .block_on(SessionStore::<SessionNullPool>::new(
                None,
                SessionConfig::default(),
            ))
            .unwrap();
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionLayer::new(store))
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

/// Creates a session through `app` and returns the `Cookie` header value
/// that sends it back (every `name=value` of the response's `Set-Cookie`s).
fn session_cookie(rt: &Runtime, app: &Router) -> HeaderValue {
    let res = rt
        .block_on(app.clone().oneshot(request("/create", None)))
        .unwrap();
    let pairs: Vec<&str> = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap())
        .collect();
    assert!(!pairs.is_empty(), "no Set-Cookie: {:?}", res.headers());
    HeaderValue::from_str(&pairs.join("; ")).unwrap()
}

/// Checks that `path` answers 200 with `body` (`None`: any), and with a
/// `Set-Cookie` when `sets_cookie` says so (`None`: either), so the groups
/// measure what they claim.
fn check(
    rt: &Runtime,
    app: &Router,
    path: &'static str,
    cookie: Option<&HeaderValue>,
    body: Option<&str>,
    sets_cookie: Option<bool>,
) {
    let res = rt
        .block_on(app.clone().oneshot(request(path, cookie)))
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    assert!(
        sets_cookie.is_none_or(|s| s == res.headers().contains_key(SET_COOKIE)),
        "{path}: {:?}",
        res.headers()
    );
    let bytes = rt
        .block_on(http_body_util::BodyExt::collect(res.into_body()))
        .unwrap()
        .to_bytes();
    if let Some(body) = body {
        assert_eq!(bytes, body.as_bytes(), "{path}");
    }
}

/// One layer under test: its name, its router, and the cookies of its
/// [`SESSIONS`] sessions.
struct App {
    name: &'static str,
    router: Router,
    cookies: Vec<HeaderValue>,
}

/// Every layer's app, checked; `for_create`: fresh stores for `create`
/// (ours with its cap lifted).
fn make_apps(rt: &Runtime, for_create: bool) -> Vec<App> {
    // `with_state(())` turns the handlers into ready routes once, as
    // `axum::serve` does; without it a `Router` called directly rebuilds
    // (and reallocates) every layered route on every request.
    let routers = [
        ("bare", bare::app().with_state(())),
        ("minimal", min::app().with_state(())),
        (
            "tower_session_storage",
            ours::app(for_create).with_state(()),
        ),
        ("tower_sessions", theirs::app().with_state(())),
        ("axum_session", axs::app(rt)),
    ];
    let mut apps: Vec<App> = routers
        .into_iter()
        .map(|(name, router)| {
            // The bare router gets cookies of ours later, which it ignores.
            let cookies = if name == "bare" {
                Vec::new()
            } else {
                (0..SESSIONS).map(|_| session_cookie(rt, &router)).collect()
            };
            App {
                name,
                router,
                cookies,
            }
        })
        .collect();
    apps[0].cookies = apps[2].cookies.clone();
    for app in &apps {
        let (name, router, cookie) = (app.name, &app.router, Some(&app.cookies[0]));
        let layered = name != "bare";
        // axum_session (default mode) creates a session for every request
        // without a cookie, and sends its cookies on every response.
        let sets = (name != "axum_session").then_some(false);
        check(rt, router, "/untouched", None, Some("ok"), sets);
        check(rt, router, "/read", cookie, Some(VALUE), sets);
        // tower-sessions sends its cookie again on every save; the minimal
        // layer's one string is the session's whole data.
        let rw_body = (name != "minimal").then_some(VALUE);
        check(rt, router, "/read_write", cookie, rw_body, None);
        check(rt, router, "/create", None, Some("ok"), Some(layered));
    }
    apps
}

fn scenarios(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let apps = make_apps(&rt, false);
    for (scenario, path, sessions) in [
        ("untouched", "/untouched", 0),
        ("read_hot", "/read", 1),
        ("read", "/read", SESSIONS),
        ("read_write", "/read_write", SESSIONS),
    ] {
        in_process(c, &rt, &apps, scenario, path, sessions);
    }
    // On one thread, then two: distinct sessions, nothing shared but the
    // layer's own state.
    for (scenario, path) in [
        ("scaling_read", "/read"),
        ("scaling_read_write", "/read_write"),
    ] {
        let mut g = c.benchmark_group(scenario);
        for app in apps
            .iter()
            .filter(|a| matches!(a.name, "bare" | "minimal" | "tower_session_storage"))
        {
            for threads in [1, 2] {
                let id = format!("{}/{threads}_threads", app.name);
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| on_threads(app, path, threads, iters))
                });
            }
        }
        g.finish();
    }
    drop(apps);
    // Last, on fresh stores: it leaves millions of sessions in each.
    in_process(c, &rt, &make_apps(&rt, true), "create", "/create", 0);
}

/// One group: `path` through every app, going round the first `sessions`
/// of each app's sessions (`0`: no cookie).
fn in_process(
    c: &mut Criterion,
    rt: &Runtime,
    apps: &[App],
    scenario: &str,
    path: &'static str,
    sessions: usize,
) {
    let mut g = c.benchmark_group(scenario);
    for app in apps {
        let mut i = 0;
        g.bench_function(app.name, |b| {
            b.to_async(rt).iter(|| {
                let cookie = (sessions > 0).then(|| {
                    i = (i + 1) % sessions;
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

/// Time for `iters` requests to `path` spread over `threads` threads, each
/// with its own current-thread runtime and its own share of the sessions:
/// the wall time from a common start to the last thread's end.
fn on_threads(app: &App, path: &'static str, threads: usize, iters: u64) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let share = app.cookies.len() / threads;
    let start = Barrier::new(threads);
    let longest = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (start, router) = (&start, &app.router);
                let cookies = &app.cookies[t * share..(t + 1) * share];
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    // The thread's own router, called for every request as
                    // a server calls its connection's: no `Router` clone
                    // per request shared between the threads.
                    let mut router = router.clone();
                    start.wait();
                    let began = Instant::now();
                    rt.block_on(async {
                        for k in 0..per as usize {
                            let req = request(path, Some(&cookies[k % share]));
                            let svc = ServiceExt::<Request<Body>>::ready(&mut router)
                                .await
                                .unwrap();
                            black_box(svc.call(req).await.unwrap());
                        }
                    });
                    began.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap_or_default()
    });
    // `per * threads` requests ran; report the time for `iters` of them.
    longest.mul_f64(iters as f64 / (per * threads as u64) as f64)
}

criterion_group!(benches, scenarios);
criterion_main!(benches);
