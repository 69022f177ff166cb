//! The store-agnostic suite (tests/common) run against `MemoryStore` (its
//! timeout tests on paused tokio time), plus checks on paused tokio time
//! that need an in-process service.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{call, cookie, dev_layer, max_age, script_routes, NoTtlStore, TestStore};
use tower_session_storage::store::{ChangeSet, CycleOutcome, Items, Record, Renewal, Timestamp};
use tower_session_storage::{MemoryStore, PublicId, SessionId, SessionStore, StoreErrorKind};

session_store_suite!(tower_session_storage::MemoryStore::new(), paused_time);

/// The same suite against a store that never expires anything by itself:
/// every timeout above must then be enforced by the layer's own checks.
mod no_ttl_store {
    session_store_suite!(crate::common::NoTtlStore::default(), paused_time);
}

/// The same suite against a store that answers every call with a pending
/// future (as a networked store does): the layer's other path, where it
/// awaits the store instead of taking a ready answer in place.
mod pending_store {
    session_store_suite!(
        crate::common::TestStore::new(tower_session_storage::MemoryStore::new())
            .delay(std::time::Duration::ZERO),
        paused_time
    );
}

/// A store whose every answer is a pending future (`StoreFuture::new` that
/// yields to the runtime first) loads, creates, saves, cycles and destroys
/// through the layer; each call reached the store.
#[tokio::test]
async fn a_store_answering_with_pending_futures_works_end_to_end() {
    let store = TestStore::new(MemoryStore::new()).delay(Duration::ZERO);
    let app = script_routes().layer(dev_layer(store.clone()));

    let first = call(&app, "set=a:1", None).await;
    let id = first.new_id().expect("created");
    let c = cookie(&id);
    assert_eq!(call(&app, "get=a&set=b:2", Some(&c)).await.ok(), "1");
    assert_eq!(call(&app, "get=a&get=b", Some(&c)).await.ok(), "1,2");

    let r = call(&app, "cycle&set=user:alice", Some(&c)).await;
    assert_eq!(r.ok(), "");
    let new = r.new_id().expect("cycled to a new id");
    assert_ne!(new, id);
    assert_eq!(
        call(&app, "get=a", Some(&c)).await.ok(),
        "-",
        "the old id is gone"
    );
    let n = cookie(&new);
    assert_eq!(
        call(&app, "get=a&get=b&get=user", Some(&n)).await.ok(),
        "1,2,alice"
    );

    let r = call(&app, "destroy", Some(&n)).await;
    assert_eq!(r.ok(), "");
    assert!(r.expires_cookie(), "{r:?}");
    assert_eq!(call(&app, "get=user", Some(&n)).await.ok(), "-");
    assert_eq!(store.inner().len(), 0);

    let counts = store.counts();
    assert_eq!(counts.create, 1, "{counts:?}");
    assert_eq!(counts.save, 1, "{counts:?}");
    assert_eq!(counts.cycle, 1, "{counts:?}");
    assert_eq!(counts.delete, 1, "the destroy: {counts:?}");
    assert_eq!(counts.load, 7, "every request with a cookie: {counts:?}");
}

/// Activity is recorded once per step (a sixteenth of the idle timeout, at
/// most a minute), not on every request: on paused time, exactly one touch
/// once the step has passed, however many reads.
#[tokio::test(start_paused = true)]
async fn idle_refresh_costs_one_touch_per_step() {
    let store = TestStore::new(MemoryStore::new());
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

// ---------------------------------------------------------------------------
// Store-level checks: logouts racing cycles, and the cap under concurrency
// ---------------------------------------------------------------------------

/// Runs a `MemoryStore` future: it answers with a ready `StoreFuture`, so
/// plain threads need no runtime.
fn now<T>(
    f: tower_session_storage::store::StoreFuture<T>,
) -> Result<T, tower_session_storage::StoreError> {
    match f.into_ready() {
        Ok(v) => v,
        Err(_) => panic!("MemoryStore answers at once"),
    }
}

fn fresh_id() -> SessionId {
    common::parse_id(&common::made_up_id())
}

/// An hour from now.
fn in_an_hour() -> Timestamp {
    Timestamp::now().saturating_add(std::time::Duration::from_secs(3600))
}

fn signed_out(items: &[(&str, &str)]) -> Record {
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: Timestamp::now(),
        expires_at: in_an_hour(),
        public_id: PublicId::generate(),
        meta: tower_session_storage::store::Meta::new(),
    }
}

fn set(k: &str, v: &str) -> ChangeSet {
    let mut c = ChangeSet::new();
    c.set(k, v);
    c
}

/// Request L loads A and signs out (`destroy`); meanwhile request C signs in
/// on the same session (cycles A -> N) and finishes first. L's `end(A, P)`
/// must end the session under N too: a logout is never undone by a racing
/// sign-in.
#[test]
fn end_follows_a_session_moved_by_a_racing_cycle() {
    let store = MemoryStore::new();
    let a = fresh_id();
    assert!(now(store.create(&a, &signed_out(&[("csrf", "x")]))).unwrap());
    // L loads A.
    let loaded = now(store.load(&a, Timestamp::now())).unwrap().unwrap();
    // C loads A too, signs in and moves the session to N.
    let n = fresh_id();
    let exp = in_an_hour();
    assert_eq!(
        now(store.cycle(&a, &n, &set("user", "alice"), Renewal::until(exp))).unwrap(),
        CycleOutcome::Moved
    );
    // L's response ends what it loaded.
    now(store.end(&a, &loaded.public_id)).unwrap();
    assert!(now(store.load(&a, Timestamp::now())).unwrap().is_none());
    assert!(
        now(store.load(&n, Timestamp::now())).unwrap().is_none(),
        "the session moved to N by the racing sign-in must be ended too"
    );
    assert_eq!(store.len(), 0);

    // Several moves: end with the first id reaches the latest one.
    let a = fresh_id();
    assert!(now(store.create(&a, &signed_out(&[("csrf", "x")]))).unwrap());
    let loaded = now(store.load(&a, Timestamp::now())).unwrap().unwrap();
    let mut cur = a;
    for _ in 0..3 {
        let next = fresh_id();
        assert_eq!(
            now(store.cycle(&cur, &next, &set("k", "v"), Renewal::until(exp))).unwrap(),
            CycleOutcome::Moved
        );
        cur = next;
    }
    now(store.end(&a, &loaded.public_id)).unwrap();
    assert!(now(store.load(&cur, Timestamp::now())).unwrap().is_none());
    assert_eq!(store.len(), 0);

    // An end that ran first is seen by a later cycle: nothing is revived.
    let a = fresh_id();
    assert!(now(store.create(&a, &signed_out(&[("csrf", "x")]))).unwrap());
    let loaded = now(store.load(&a, Timestamp::now())).unwrap().unwrap();
    now(store.end(&a, &loaded.public_id)).unwrap();
    assert_eq!(
        now(store.cycle(&a, &fresh_id(), &set("user", "alice"), Renewal::until(exp))).unwrap(),
        CycleOutcome::Gone
    );
    assert_eq!(store.len(), 0);
}

/// Threads cycle sessions and end them (by the id they were created under,
/// or by one seen later) at the same time. Afterwards no id, old or new,
/// holds any of them, and the store is empty.
#[test]
fn end_and_cycle_racing_on_threads_leave_no_id_holding_the_session() {
    use std::sync::{Barrier, Mutex};
    const SESSIONS: usize = 300;
    const CYCLERS: usize = 3;
    const ENDERS: usize = 2;
    for _round in 0..5 {
        let store = MemoryStore::new();
        let sessions: Vec<(SessionId, PublicId)> = (0..SESSIONS)
            .map(|_| {
                let id = fresh_id();
                let r = signed_out(&[("csrf", "x")]);
                assert!(now(store.create(&id, &r)).unwrap());
                (id, r.public_id)
            })
            .collect();
        let current: Vec<Mutex<SessionId>> = sessions.iter().map(|s| Mutex::new(s.0)).collect();
        let every_id = Mutex::new(sessions.iter().map(|s| s.0).collect::<Vec<_>>());
        let barrier = Barrier::new(CYCLERS + ENDERS);
        std::thread::scope(|scope| {
            for t in 0..CYCLERS {
                let (store, current, every_id, barrier) = (&store, &current, &every_id, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let exp = in_an_hour();
                    for round in 0..4 {
                        for i in (0..SESSIONS).map(|i| (i * 7 + t * 13 + round) % SESSIONS) {
                            let cur = *current[i].lock().unwrap();
                            let new = fresh_id();
                            every_id.lock().unwrap().push(new);
                            let out = now(store.cycle(
                                &cur,
                                &new,
                                &set("user", "u"),
                                Renewal::until(exp),
                            ))
                            .unwrap();
                            if out == CycleOutcome::Moved {
                                let mut c = current[i].lock().unwrap();
                                if *c == cur {
                                    *c = new;
                                }
                            }
                        }
                    }
                });
            }
            for t in 0..ENDERS {
                let (store, current, sessions, barrier) = (&store, &current, &sessions, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for i in (0..SESSIONS).filter(|i| i % ENDERS == t) {
                        // Give the cyclers time to move some sessions first.
                        std::thread::yield_now();
                        let (first, public_id) = sessions[i];
                        let id = if i % 3 == 0 {
                            *current[i].lock().unwrap()
                        } else {
                            first
                        };
                        now(store.end(&id, &public_id)).unwrap();
                    }
                });
            }
        });
        for id in every_id.lock().unwrap().iter() {
            assert!(
                now(store.load(id, Timestamp::now())).unwrap().is_none(),
                "an ended session is still held under one of its ids"
            );
        }
        assert_eq!(store.len(), 0);
    }
}

/// `with_max_sessions(n)` is a hard bound: threads creating at once never
/// get more than `n` sessions in, at any moment or at the end.
#[test]
fn the_cap_holds_under_concurrent_creates() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Barrier;
    const CAP: usize = 64;
    const THREADS: usize = 8;
    for _round in 0..100 {
        let store = MemoryStore::new().with_max_sessions(CAP);
        let made = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let barrier = Barrier::new(THREADS + 1);
        let worst = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                barrier.wait();
                let mut worst = 0;
                while !done.load(Ordering::Relaxed) {
                    worst = worst.max(store.len());
                }
                worst.max(store.len())
            });
            let creators: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        for _ in 0..CAP / 4 {
                            match now(store.create(&fresh_id(), &signed_out(&[("a", "1")]))) {
                                Ok(true) => {
                                    made.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(false) => panic!("a fresh id was taken"),
                                Err(e) => assert_eq!(e.kind(), StoreErrorKind::Full, "{e}"),
                            }
                        }
                    })
                })
                .collect();
            for c in creators {
                c.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            watcher.join().unwrap()
        });
        let made = made.load(Ordering::Relaxed);
        assert!(made <= CAP, "{made} sessions created past a cap of {CAP}");
        assert!(worst <= CAP, "len() was {worst} with a cap of {CAP}");
        assert_eq!(store.len(), made);
    }
}
