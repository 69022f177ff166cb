//! Concurrent requests on one session, over real sockets (SECURITY.md
//! #17-19 and #35, and `cycle_id` racing a writer). The bodies live in
//! `tests/common` (`common::concurrency`), generic over the store; here they
//! run against `MemoryStore`, with checks on what the store holds.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{concurrency, dev_layer, guard, serve_script};
use tower_session_storage::MemoryStore;

/// SECURITY.md #17: 50 requests on one session, all sent at once and all holding the
/// same loaded snapshot, each writing its own key: all 50 keys survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_of_different_keys_all_survive() {
    let mem = MemoryStore::new();
    concurrency::writes_to_different_keys_all_survive(mem.clone(), 50).await;
    assert_eq!(mem.len(), 1, "one session, not one per request");
}

/// SECURITY.md #18: 20 requests write the same key at once: the last writer wins
/// (one of the values), the session and its other items are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_one_value_wins() {
    let mem = MemoryStore::new();
    concurrency::writes_to_the_same_key_one_wins(mem.clone(), 20).await;
    assert_eq!(mem.len(), 1);
}

/// SECURITY.md #19: a logout while another request on the session is in flight (it
/// loaded the session before the destroy, writes after it): the writes are
/// dropped, nothing is re-created, no `Set-Cookie` with the old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_racing_an_in_flight_writer_is_not_undone() {
    let mem = MemoryStore::new();
    concurrency::destroy_racing_a_writer_wins(mem.clone()).await;
    assert_eq!(mem.len(), 0, "no session remains");
}

/// SECURITY.md #35: a logout racing a `cycle_id` on the same session ends the
/// session under every id, and nothing is left in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_racing_a_cycle_ends_the_session_under_every_id() {
    let mem = MemoryStore::new();
    concurrency::destroy_racing_a_cycle_ends_the_session(mem.clone()).await;
    assert_eq!(mem.len(), 0, "no session remains");
}

/// SECURITY.md #29 under concurrency: `cycle_id` while a writer on the old id is in
/// flight: the writer's changes are dropped, the new id works, the old is
/// dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_id_racing_an_in_flight_writer_drops_the_writers_changes() {
    let mem = MemoryStore::new();
    concurrency::cycle_racing_a_writer_wins(mem.clone()).await;
    assert_eq!(mem.len(), 1, "only the new id");
}

/// 50 clients without a cookie write at once: 50 sessions, 50 distinct ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_sessions_get_distinct_ids() {
    let mem = MemoryStore::new();
    let srv = Arc::new(serve_script(dev_layer(mem.clone())).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let srv = srv.clone();
            tokio::spawn(async move { srv.raw(&format!("set=n:{i}"), None).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = guard(t).await.unwrap();
        let id = r.new_id().unwrap();
        assert_eq!(
            srv.raw("get=n", Some(&common::cookie(&id))).await.ok(),
            i.to_string()
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(mem.len(), 50);
}
