//! Per-request cost of the session layer, side by side with a bare service
//! and with tower-sessions (0.15, its `MemoryStore`), in the same groups.
//!
//! Each scenario is one criterion group with three functions:
//!
//! - `bare`: the axum router with no session layer;
//! - `tower_session_storage`: the same router behind
//!   `SessionLayer::new(MemoryStore::new())`;
//! - `tower_sessions`: the same router behind tower-sessions'
//!   `SessionManagerLayer::new(MemoryStore::default())`.
//!
//! Scenarios: `untouched` (no cookie, the handler never touches the session),
//! `read` (an existing session, read one item), `read_write` (an existing
//! session, read one item and write one item, a new value each time, since
//! tower-sessions skips saving an unchanged value) and `create` (no cookie,
//! the handler writes one item, so every request creates a session).
//!
//! Every request is built inside the measured iteration and driven in
//! process with `oneshot` on a clone of the router, on a current-thread tokio
//! runtime; the three functions do the same work apart from the layer. The
//! cost a layer adds is its time minus `bare`'s in the same group.
//!
//! ```text
//! cargo bench --bench session
//! cargo bench --bench session -- --warm-up-time 1 --measurement-time 3   # quicker
//! cargo bench --bench session -- read                                     # one scenario
//! ```
// `criterion_main!` makes an undocumented `main`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request};
use axum::routing::get;
use axum::{Extension, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

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

    pub(crate) fn app() -> Router {
        // `create` adds a session per iteration: lift the default cap of 1M.
        let store = MemoryStore::new().with_max_sessions(usize::MAX);
        Router::new()
            .route("/untouched", get(untouched))
            .route("/read", get(read))
            .route("/read_write", get(read_write))
            .route("/create", get(create))
            .layer(SessionLayer::new(store))
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

fn request(path: &'static str, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::builder().uri(path);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c.clone());
    }
    req.body(Body::empty()).unwrap()
}

/// Creates a session through `app` and returns its `Cookie` header value
/// (`id=...`, taken from the `Set-Cookie` of the response).
fn session_cookie(rt: &Runtime, app: &Router) -> HeaderValue {
    let res = rt
        .block_on(app.clone().oneshot(request("/create", None)))
        .unwrap();
    let set_cookie = res.headers()[SET_COOKIE].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    assert!(
        pair.starts_with("id="),
        "unexpected Set-Cookie {set_cookie}"
    );
    HeaderValue::from_str(pair).unwrap()
}

/// Checks that `path` answers 200 with `body`, and with a `Set-Cookie` when
/// `sets_cookie` says so (`None`: either), so the groups measure what they
/// claim.
fn check(
    rt: &Runtime,
    app: &Router,
    path: &'static str,
    cookie: Option<&HeaderValue>,
    body: &str,
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
    assert_eq!(bytes, body.as_bytes(), "{path}");
}

fn scenarios(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `with_state(())` turns the handlers into ready routes once, as
    // `axum::serve` does; without it a `Router` called directly rebuilds
    // (and reallocates) every layered route on every request.
    let apps: [(&str, Router); 3] = [
        ("bare", bare::app().with_state(())),
        ("tower_session_storage", ours::app().with_state(())),
        ("tower_sessions", theirs::app().with_state(())),
    ];
    // Each layer's own session for `read` and `read_write`; the bare router
    // gets a cookie of the same shape (ours), which it ignores.
    let ours_cookie = session_cookie(&rt, &apps[1].1);
    let theirs_cookie = session_cookie(&rt, &apps[2].1);
    let cookies = [ours_cookie.clone(), ours_cookie, theirs_cookie];
    for (i, ((_, app), cookie)) in apps.iter().zip(&cookies).enumerate() {
        let layered = i > 0;
        check(&rt, app, "/untouched", None, "ok", Some(false));
        check(&rt, app, "/read", Some(cookie), VALUE, Some(false));
        // tower-sessions sends its cookie again on every save.
        check(&rt, app, "/read_write", Some(cookie), VALUE, None);
        check(&rt, app, "/create", None, "ok", Some(layered));
    }

    for (scenario, path, with_cookie) in [
        ("untouched", "/untouched", false),
        ("read", "/read", true),
        ("read_write", "/read_write", true),
        ("create", "/create", false),
    ] {
        let mut g = c.benchmark_group(scenario);
        for ((name, app), cookie) in apps.iter().zip(&cookies) {
            let cookie = with_cookie.then_some(cookie);
            g.bench_function(*name, |b| {
                b.to_async(&rt).iter(|| {
                    let req = request(path, cookie);
                    let svc = app.clone();
                    async move { black_box(svc.oneshot(req).await.unwrap()) }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, scenarios);
criterion_main!(benches);
