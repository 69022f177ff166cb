//! The request lifecycle end to end through `SessionService`, on the memory
//! store: create, load, refresh, cycle, destroy, both transports, failures.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use http::header::{HeaderValue, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};

use crate::future::ResponseFuture;
use crate::{MemoryStore, SessionId, SessionLayer, SessionService, SessionStorage};

type Body = String;

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

#[allow(dead_code)]
fn compile_time_checks() {
    type Inner = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
    assert_send::<SessionService<Inner, MemoryStore>>();
    assert_sync::<SessionService<Inner, MemoryStore>>();
    assert_send::<ResponseFuture<Inner, Body, MemoryStore>>();
    assert_send_sync_clone::<SessionStorage>();
    assert_send_sync_clone::<SessionLayer<MemoryStore>>();
}

/// A handler that runs `f` on the session and answers with `status`.
async fn call(
    layer: &SessionLayer<MemoryStore>,
    cookie: Option<&str>,
    status: u16,
    f: impl Fn(&SessionStorage) + Send + Sync + Clone + 'static,
) -> Response<Body> {
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn(move |req: Request<Body>| {
            let f = f.clone();
            async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                f(s);
                let body = s.get_item("n").unwrap_or_default();
                let mut res = Response::new(body);
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }
        }));
    let mut req = Request::new(String::new());
    if let Some(c) = cookie {
        req.headers_mut()
            .insert(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
    }
    svc.oneshot(req).await.unwrap()
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    let all: Vec<_> = res.headers().get_all(SET_COOKIE).iter().collect();
    assert!(all.len() <= 1, "at most one Set-Cookie: {all:?}");
    all.first().map(|v| v.to_str().unwrap().to_owned())
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_cookie_header_is_marked_sensitive_for_inner_layers() {
    let svc = ServiceBuilder::new()
        .layer(SessionLayer::new(MemoryStore::new()))
        .service(tower::service_fn(|req: Request<Body>| async move {
            let all: Vec<bool> = req
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .map(HeaderValue::is_sensitive)
                .collect();
            Ok::<_, Infallible>(Response::new(format!("{all:?}")))
        }));
    let mut req = Request::new(String::new());
    req.headers_mut()
        .append(http::header::COOKIE, HeaderValue::from_static("a=1"));
    req.headers_mut()
        .append(http::header::COOKIE, HeaderValue::from_static("id=x"));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.body(), "[true, true]");
}

#[tokio::test]
async fn untouched_request_touches_nothing() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone());
    let res = call(&layer, None, 200, |_| {}).await;
    assert_eq!(set_cookie(&res), None);
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_write_creates_the_session_and_the_cookie_brings_it_back() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone());
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let c = cookie_pair(&set_cookie(&res).unwrap());
    assert_eq!(store.len(), 1);
    let res = call(&layer, Some(&c), 200, |_| {}).await;
    assert_eq!(res.body(), "1");
    assert_eq!(set_cookie(&res), None, "no Set-Cookie when nothing changed");
}

#[tokio::test]
async fn server_errors_and_inner_errors_persist_nothing() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone());
    let res = call(&layer, None, 500, |s| s.set_item("n", "1").unwrap()).await;
    assert_eq!(set_cookie(&res), None);
    assert!(store.is_empty());

    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn(|req: Request<Body>| async move {
            let s = req.extensions().get::<SessionStorage>().unwrap();
            s.set_item("n", "1").unwrap();
            Err::<Response<Body>, _>("inner failed")
        }));
    assert!(svc.oneshot(Request::new(String::new())).await.is_err());
    assert!(store.is_empty());
}

#[tokio::test]
async fn handler_set_cookie_for_our_name_is_replaced_by_ours() {
    let layer = SessionLayer::new(MemoryStore::new());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|req: Request<Body>| async move {
            let s = req.extensions().get::<SessionStorage>().unwrap();
            s.set_item("n", "1").unwrap();
            let mut res = Response::new(String::new());
            res.headers_mut()
                .append(SET_COOKIE, HeaderValue::from_static("id=forged"));
            res.headers_mut()
                .append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
            Ok::<_, Infallible>(res)
        }));
    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    let all: Vec<_> = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0], "theme=dark");
    assert!(all[1].starts_with("id=") && !all[1].contains("forged"));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_the_session_and_use_extends_it() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone()).with_idle_timeout(Duration::from_secs(60));
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let c = cookie_pair(&set_cookie(&res).unwrap());
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(40)).await;
        let res = call(&layer, Some(&c), 200, |_| {}).await;
        assert_eq!(
            res.body(),
            "1",
            "used every 40 s, a 60 s idle session lives on"
        );
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    let res = call(&layer, Some(&c), 200, |_| {}).await;
    assert_eq!(res.body(), "", "idle for 61 s: gone");
}

#[tokio::test(start_paused = true)]
async fn absolute_timeout_ends_even_a_busy_session() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_idle_timeout(Duration::from_secs(60))
        .with_absolute_timeout(Duration::from_secs(100));
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let c = cookie_pair(&set_cookie(&res).unwrap());
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "1");
    tokio::time::advance(Duration::from_secs(51)).await;
    assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "");
}

#[tokio::test(start_paused = true)]
async fn persistent_cookie_is_refreshed_only_once_per_step() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_idle_timeout(Duration::from_secs(1600))
        .with_persistent_cookie(true);
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let first = set_cookie(&res).unwrap();
    assert!(first.contains("Max-Age=1600"), "{first}");
    let c = cookie_pair(&first);
    // The step is 1600/16 = 100 s: no refresh before it ...
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(set_cookie(&call(&layer, Some(&c), 200, |_| {}).await), None);
    // ... and one after it, with the same id and a fresh Max-Age.
    tokio::time::advance(Duration::from_secs(60)).await;
    let refreshed = set_cookie(&call(&layer, Some(&c), 200, |_| {}).await).unwrap();
    assert_eq!(cookie_pair(&refreshed), c);
    assert!(refreshed.contains("Max-Age=1600"), "{refreshed}");
}

#[tokio::test]
async fn cycle_moves_the_data_to_a_new_cookie() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone());
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let old = cookie_pair(&set_cookie(&res).unwrap());
    let res = call(&layer, Some(&old), 200, |s| s.cycle_id()).await;
    let new = cookie_pair(&set_cookie(&res).unwrap());
    assert_ne!(old, new);
    assert_eq!(call(&layer, Some(&new), 200, |_| {}).await.body(), "1");
    assert_eq!(call(&layer, Some(&old), 200, |_| {}).await.body(), "");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn destroy_deletes_and_expires_the_cookie() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone());
    let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
    let c = cookie_pair(&set_cookie(&res).unwrap());
    let res = call(&layer, Some(&c), 200, |s| s.destroy()).await;
    let expired = set_cookie(&res).unwrap();
    assert!(
        expired.starts_with("id=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    assert!(store.is_empty());
    assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "");
}

const X_SESSION: http::HeaderName = http::HeaderName::from_static("x-session-id");

async fn call_h(
    layer: &SessionLayer<MemoryStore>,
    id: Option<&str>,
    f: impl Fn(&SessionStorage) + Send + Sync + Clone + 'static,
) -> Response<Body> {
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn(move |req: Request<Body>| {
            let f = f.clone();
            async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                f(s);
                Ok::<_, Infallible>(Response::new(s.get_item("n").unwrap_or_default()))
            }
        }));
    let mut req = Request::new(String::new());
    if let Some(id) = id {
        req.headers_mut()
            .insert(X_SESSION, HeaderValue::from_str(id).unwrap());
    }
    svc.oneshot(req).await.unwrap()
}

fn header_id(res: &Response<Body>) -> Option<String> {
    assert!(res.headers().get_all(&X_SESSION).iter().count() <= 1);
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "no cookie in header mode"
    );
    res.headers()
        .get(&X_SESSION)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn header_transport_carries_the_id_both_ways() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone()).with_header_transport(X_SESSION);
    let res = call_h(&layer, None, |s| s.set_item("n", "1").unwrap()).await;
    let id = header_id(&res).unwrap();
    assert!(id.parse::<SessionId>().is_ok(), "{id}");
    let res = call_h(&layer, Some(&format!("  {id} ")), |_| {}).await;
    assert_eq!(res.body(), "1");
    assert_eq!(
        header_id(&res),
        None,
        "no header when the id did not change"
    );

    // A made-up id is not adopted.
    let made_up = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";
    let res = call_h(&layer, Some(made_up), |s| s.set_item("n", "2").unwrap()).await;
    let other = header_id(&res).unwrap();
    assert_ne!(other, made_up);
    assert_ne!(other, id);

    // Cycle: a new id, the old one dead.
    let res = call_h(&layer, Some(&id), |s| s.cycle_id()).await;
    let cycled = header_id(&res).unwrap();
    assert_ne!(cycled, id);
    assert_eq!(call_h(&layer, Some(&id), |_| {}).await.body(), "");
    assert_eq!(call_h(&layer, Some(&cycled), |_| {}).await.body(), "1");

    // Destroy: the header comes back empty.
    let res = call_h(&layer, Some(&cycled), |s| s.destroy()).await;
    assert_eq!(header_id(&res).as_deref(), Some(""));
    assert_eq!(call_h(&layer, Some(&cycled), |_| {}).await.body(), "");
    assert_eq!(
        store.len(),
        1,
        "only the made-up request's new session is left"
    );
}

#[tokio::test]
async fn a_malformed_session_cookie_is_cleared_and_a_dead_well_formed_one_is_left_alone() {
    let store = MemoryStore::new();
    let layer = SessionLayer::new(store.clone()).with_path("/app");
    // Not an id at all: cleared, with the configured path.
    let res = call(&layer, Some("id=not-an-id; theme=dark"), 200, |_| {}).await;
    let removal = set_cookie(&res).expect("a malformed cookie is cleared");
    assert!(
        removal.starts_with("id=;")
            && removal.contains("Max-Age=0")
            && removal.contains("Path=/app"),
        "{removal}"
    );
    // Malformed, but the request writes: the new session's cookie replaces
    // it (one Set-Cookie, not a removal as well).
    let res = call(&layer, Some("id=junk"), 200, |s| {
        s.set_item("n", "1").unwrap()
    })
    .await;
    let set = set_cookie(&res).unwrap();
    assert!(!set.starts_with("id=;"), "{set}");
    assert_eq!(store.len(), 1);
    // Well-formed but unknown: no removal (it could delete a newer cookie a
    // concurrent response is setting).
    let res = call(
        &layer,
        Some("id=0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1"),
        200,
        |_| {},
    )
    .await;
    assert_eq!(set_cookie(&res), None);
    // No cookie of ours: nothing.
    let res = call(&layer, Some("theme=dark; idx=1"), 200, |_| {}).await;
    assert_eq!(set_cookie(&res), None);
    // A failed handler: nothing is saved, and nothing is cleared either.
    let res = call(&layer, Some("id=junk"), 500, |_| {}).await;
    assert_eq!(set_cookie(&res), None);
}

/// On a cross-site request the browser may withhold our real `SameSite`
/// cookie and send only a junk one a sibling subdomain planted for the
/// parent domain: clearing would then delete the real one (a forced
/// sign-out), so nothing is cleared.
#[tokio::test]
async fn a_malformed_cookie_is_not_cleared_on_a_cross_site_request() {
    let layer = SessionLayer::new(MemoryStore::new());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_req: Request<Body>| async move {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    for (site, cleared) in [
        ("cross-site", false),
        ("same-site", true),
        ("same-origin", true),
    ] {
        let mut req = Request::new(String::new());
        req.headers_mut()
            .insert(http::header::COOKIE, HeaderValue::from_static("id=junk"));
        req.headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static(site));
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers().contains_key(SET_COOKIE), cleared, "{site}");
    }
}

/// What waits only for a network store (the loading request, a pending
/// save) is boxed, so the future every request carries stays small: it is
/// moved and boxed by the server on every request.
#[test]
fn the_response_future_stays_small() {
    type Inner = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
    let size = std::mem::size_of::<ResponseFuture<Inner, Body, MemoryStore>>();
    assert!(
        size <= 256,
        "ResponseFuture is {size} bytes; the request alone is {}",
        std::mem::size_of::<Request<Body>>()
    );
}
