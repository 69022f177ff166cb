//! The store-agnostic suite (tests/common) run against `MemoryStore`, plus
//! checks on paused tokio time that need an in-process service.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{call, cookie, dev_layer, max_age, script_routes, CountingStore, NoTtlStore};
use tower_session_storage::MemoryStore;

session_store_suite!(tower_session_storage::MemoryStore::new());

/// The same suite against a store that never expires anything by itself:
/// every timeout above must then be enforced by the layer's own checks.
mod no_ttl_store {
    session_store_suite!(crate::common::NoTtlStore::default());
}

/// Activity is recorded once per step (a sixteenth of the idle timeout, at
/// most a minute), not on every request: on paused time, exactly one touch
/// once the step has passed, however many reads.
#[tokio::test(start_paused = true)]
async fn idle_refresh_costs_one_touch_per_step() {
    let store = CountingStore::new(MemoryStore::new());
    // 1600 s idle: the step is 100 s.
    let app = script_routes()
        .layer(dev_layer(store.clone()).with_idle_timeout(Duration::from_secs(1600)));
    let c = cookie(&call(&app, "set=a:1", None).await.new_id().unwrap());
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(call(&app, "get=a", Some(&c)).await.ok(), "1");
    }
    assert_eq!(store.counts().touch, 0, "50 s < one step: no write");
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..10 {
        assert_eq!(call(&app, "get=a", Some(&c)).await.ok(), "1");
    }
    let counts = store.counts();
    assert_eq!(counts.touch, 1, "{counts:?}");
    assert_eq!(counts.save, 0, "{counts:?}");

    // The refresh moved the expiry: 1600 s after the touch it is still alive
    // at 1500 s, where the first expiry (1600 s after creation) has passed.
    tokio::time::advance(Duration::from_secs(1500)).await;
    assert_eq!(call(&app, "get=a", Some(&c)).await.ok(), "1");
    tokio::time::advance(Duration::from_secs(1601)).await;
    assert_eq!(call(&app, "get=a", Some(&c)).await.ok(), "-");
}

/// On paused time the persistent cookie's Max-Age is exactly the idle
/// timeout, and a refresh sends it again, with the same id.
#[tokio::test(start_paused = true)]
async fn persistent_cookie_max_age_is_the_idle_timeout_and_is_refreshed() {
    let app = script_routes().layer(
        dev_layer(MemoryStore::new())
            .with_persistent_cookie(true)
            .with_idle_timeout(Duration::from_secs(1600)),
    );
    let r = call(&app, "set=a:1", None).await;
    let set = r.set_cookie().unwrap();
    assert_eq!(max_age(&set), Some(1600), "{set}");
    let id = r.new_id().unwrap();

    tokio::time::advance(Duration::from_secs(50)).await;
    let r = call(&app, "get=a", Some(&cookie(&id))).await;
    assert_eq!(r.set_cookie(), None, "within one step: no refresh");

    tokio::time::advance(Duration::from_secs(60)).await;
    let r = call(&app, "get=a", Some(&cookie(&id))).await;
    let set = r.set_cookie().expect("the refreshed cookie");
    assert_eq!(r.new_id().as_deref(), Some(id.as_str()));
    assert_eq!(max_age(&set), Some(1600), "{set}");
}

/// Idle and absolute timeouts on paused time, against a store that never
/// evicts: the layer checks the times on load, deletes what expired, and
/// never resurrects it.
#[tokio::test(start_paused = true)]
async fn timeouts_are_checked_on_load_even_if_the_store_never_evicts() {
    let store = NoTtlStore::default();
    let app = script_routes().layer(
        dev_layer(store.clone())
            .with_idle_timeout(Duration::from_secs(60))
            .with_absolute_timeout(Duration::from_secs(100)),
    );
    let idle = call(&app, "set=a:1", None).await.new_id().unwrap();
    let busy = call(&app, "set=a:1", None).await.new_id().unwrap();
    assert_eq!(store.len(), 2);

    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(call(&app, "get=a", Some(&cookie(&busy))).await.ok(), "1");
    }
    // 90 s: the idle one is over, still in the store until someone loads it.
    assert_eq!(store.len(), 2);
    let r = call(&app, "get=a", Some(&cookie(&idle))).await;
    assert_eq!(r.ok(), "-");
    assert_eq!(store.len(), 1, "the expired session is deleted on load");

    // 101 s: the busy one hits the absolute timeout.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(call(&app, "get=a", Some(&cookie(&busy))).await.ok(), "-");
    assert_eq!(store.len(), 0);

    let r = call(&app, "set=a:2", Some(&cookie(&busy))).await;
    assert_ne!(r.new_id().unwrap(), busy);
}
