//! The lifecycle with a store that answers with pending futures (a network
//! store): the inner service the layer calls after an awaited load, requests
//! dropped part-way (a client that disconnects), and the malformed-cookie
//! clearing on every path.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use common::*;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};
use tower_session_storage::MemoryStore;

/// An inner service that keeps tower's readiness contract strictly: `call`
/// panics unless `poll_ready` was called on this very instance first, a
/// clone is not ready, and `outstanding` counts the instances that were
/// made ready and neither called nor dropped (a capacity held, as a
/// `ConcurrencyLimit` permit or a `Buffer` slot is).
struct Strict<S> {
    inner: S,
    ready: bool,
    outstanding: Arc<AtomicIsize>,
}

impl<S: Clone> Clone for Strict<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            ready: false,
            outstanding: self.outstanding.clone(),
        }
    }
}

impl<S> Drop for Strict<S> {
    fn drop(&mut self) {
        if self.ready {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl<S: Service<Request<Body>>> Service<Request<Body>> for Strict<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.ready {
            self.ready = true;
            self.outstanding.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> S::Future {
        assert!(
            self.ready,
            "called an inner service that was not made ready (tower's contract)"
        );
        self.ready = false;
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

type Svc = tower_session_storage::SessionService<Strict<Router>, TestStore<MemoryStore>>;

/// The script app inside a `Strict` wrapper, behind a session layer over a
/// store whose every answer is pending (it yields once, then answers).
fn strict_app() -> (Svc, Arc<AtomicIsize>, TestStore<MemoryStore>) {
    let store = TestStore::new(MemoryStore::new()).delay(Duration::ZERO);
    let outstanding = Arc::new(AtomicIsize::new(0));
    let inner = Strict {
        inner: script_routes(),
        ready: false,
        outstanding: outstanding.clone(),
    };
    let svc = dev_layer(store.clone()).layer(inner);
    (svc, outstanding, store)
}

fn get(script: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(format!("/s?{script}"));
    if let Some(c) = cookie {
        req = req.header(http::header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

async fn body(res: Response<Body>) -> String {
    let b = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

/// One request through `svc` the way a server drives it: ready, call, await.
async fn send(svc: &mut Svc, script: &str, cookie: Option<&str>) -> Response<Body> {
    guard(async {
        let ready = svc.ready().await.unwrap();
        ready.call(get(script, cookie)).await.unwrap()
    })
    .await
}

/// A request made ready and called, not yet polled.
async fn start(
    svc: &mut Svc,
    script: &str,
    cookie: Option<&str>,
) -> <Svc as Service<Request<Body>>>::Future {
    let ready = guard(svc.ready()).await.unwrap();
    ready.call(get(script, cookie))
}

/// Polls `fut` until its `Debug` form names `state` (or it finishes, which
/// fails the test): the future is then parked in that state.
async fn poll_until<F: Future + Unpin + std::fmt::Debug>(fut: &mut F, state: &str) {
    guard(poll_fn(|cx| {
        if Pin::new(&mut *fut).poll(cx).is_ready() {
            panic!("the request finished before reaching {state:?}");
        }
        if format!("{fut:?}").contains(state) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }))
    .await;
}

/// After a load the store answered later, the layer calls the inner service
/// it made ready, not a fresh clone (tower's "be careful when cloning inner
/// services"): with an inner service that holds a permit per readiness, every
/// request works and no permit is left held.
#[tokio::test]
async fn an_awaited_load_calls_the_inner_service_that_was_made_ready() {
    let (mut svc, outstanding, store) = strict_app();
    let first = send(&mut svc, "set=a:1", None).await;
    let id = first
        .headers()
        .get(http::header::SET_COOKIE)
        .map(|v| cookie_value(v.to_str().unwrap()).to_owned())
        .expect("a session was created");
    let c = cookie(&id);
    for n in 2..=4 {
        let res = send(&mut svc, "incr=a&id", Some(&c)).await;
        assert_eq!(body(res).await, format!("{n},{id}"));
    }
    assert_eq!(store.counts().load, 3, "every load went to the store");
    assert_eq!(
        outstanding.load(Ordering::SeqCst),
        0,
        "no readiness left held"
    );
}

/// A client that disconnects while the store is still loading drops the
/// response future: the inner service it held (made ready, with whatever
/// capacity that reserved) is released, and later requests are served.
#[tokio::test]
async fn requests_dropped_mid_load_release_what_they_reserved() {
    let (mut svc, outstanding, _store) = strict_app();
    let created = send(&mut svc, "set=a:1", None).await;
    let id = cookie_value(
        created
            .headers()
            .get(http::header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .to_owned();
    let c = cookie(&id);
    for _ in 0..5 {
        let mut fut = start(&mut svc, "incr=a", Some(&c)).await;
        poll_until(&mut fut, "loading").await;
        drop(fut);
    }
    assert_eq!(
        outstanding.load(Ordering::SeqCst),
        0,
        "a dropped request still holds an inner service made ready"
    );
    let res = send(&mut svc, "get=a", Some(&c)).await;
    assert_eq!(body(res).await, "1", "dropped requests changed nothing");
}

/// A client that disconnects while the store is saving: the service goes on
/// working, and the session is either as before the request or as after it,
/// never damaged.
#[tokio::test]
async fn requests_dropped_mid_save_leave_the_session_whole() {
    let (mut svc, _outstanding, _store) = strict_app();
    let created = send(&mut svc, "set=a:1", None).await;
    let id = cookie_value(
        created
            .headers()
            .get(http::header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .to_owned();
    let c = cookie(&id);
    for script in ["set=b:2", "cycle&set=user:alice", "destroy"] {
        let mut fut = start(&mut svc, script, Some(&c)).await;
        poll_until(&mut fut, "saving").await;
        drop(fut);
    }
    // Each write was dropped before the store ran it (this store starts
    // nothing before its first await): the session is as it was.
    let res = send(&mut svc, "get=a&get=b&get=user", Some(&c)).await;
    assert_eq!(body(res).await, "1,-,-", "the session after dropped writes");
}

/// A cookie of ours that is not a well-formed id is cleared by the response
/// on the paths of a store that answers later too, and the response never
/// carries two `Set-Cookie` for our name.
#[tokio::test]
async fn a_malformed_cookie_is_cleared_once_with_a_pending_store() {
    let (mut svc, _outstanding, store) = strict_app();
    for (script, expect_new_id) in [
        ("", false),
        ("get=a", false),
        ("set=a:1", true),
        ("set=a:1&cycle", true),
        ("destroy", false),
        ("set=a:1&destroy", false),
        ("destroy&set=a:1", true),
    ] {
        let res = send(&mut svc, script, Some("id=not-an-id; theme=dark")).await;
        assert_eq!(res.status(), 200, "{script}");
        let ours: Vec<String> = res
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .filter(|v| cookie_name(v) == "id")
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{script}: exactly one Set-Cookie for id: {ours:?}"
        );
        let value = cookie_value(&ours[0]);
        if expect_new_id {
            assert!(
                !value.is_empty(),
                "{script}: a new session's cookie: {ours:?}"
            );
        } else {
            assert!(
                value.is_empty() && ours[0].contains("Max-Age=0"),
                "{script}: the malformed cookie is removed: {ours:?}"
            );
        }
    }
    assert_eq!(
        store.counts().load,
        0,
        "a malformed id never reaches the store"
    );
}
