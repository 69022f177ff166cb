//! With an in-process store, a request allocates only its session handle
//! and the registry's place in the extensions: nothing is boxed for the
//! store calls or the response future. Counted by
//! a counting global allocator (the `stats_alloc` crate), in a test binary
//! of its own so no other test's allocations are counted.

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::convert::Infallible;

use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::{Request, Response};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Service, ServiceExt};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocations a request makes for the handle and nothing else: the
/// handle's shared state (one `Arc`), and putting it into the request's
/// extensions (`http` allocates the map's box and table on the first
/// insert, and boxes the value); then the box of the `SessionRegistry` the
/// layer puts beside it (an `Arc` clone, boxed by `http`).
const HANDLE: usize = 5;

fn request(cookie: Option<&str>, write: bool) -> Request<String> {
    let mut req = Request::new(String::new());
    if let Some(c) = cookie {
        req.headers_mut()
            .insert(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    if write {
        *req.uri_mut() = "/write".parse().unwrap();
    }
    req
}

#[test]
fn an_in_process_request_allocates_only_its_handle() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::new());
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|req: Request<String>| async move {
            let s = req.extensions().get::<SessionStorage>().unwrap();
            // A read would allocate the `String` it returns: the handler's
            // allocation, not the layer's. The session is loaded either way.
            if req.uri().path() == "/write" {
                s.set_item("n", "1").unwrap();
            }
            Ok::<_, Infallible>(Response::new(String::new()))
        }));

    let mut send = |req: Request<String>| {
        rt.block_on(async { svc.ready().await.unwrap().call(req).await.unwrap() })
    };
    // A session to read, and a few requests to warm everything up.
    let res = send(request(None, true));
    let set = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    for _ in 0..3 {
        send(request(Some(&cookie), false));
        send(request(None, false));
    }

    for (what, cookie) in [
        ("untouched, no cookie", None),
        ("a read", Some(cookie.as_str())),
    ] {
        let req = request(cookie, false);
        let region = Region::new(GLOBAL);
        let res = send(req);
        let allocs = region.change().allocations;
        drop(res);
        assert_eq!(
            allocs, HANDLE,
            "{what}: {allocs} allocations, {HANDLE} expected (the handle and the registry only)"
        );
    }
}
