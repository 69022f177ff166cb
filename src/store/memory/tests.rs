//! The memory store's own tests: sharing, expiry, the index, cycles and
//! ends racing on threads, the cap.

#![allow(clippy::unwrap_used)]
use super::*;
use crate::store::Renewal;
use crate::store::Timestamp;

fn now_millis() -> u64 {
    Timestamp::now().as_millis()
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// The value of `key` in the live session `id`.
async fn item(store: &MemoryStore, id: &SessionId, key: &str) -> Option<String> {
    let record = store.load(id, Timestamp::now()).await.unwrap().unwrap();
    record.items.get(key).map(str::to_owned)
}
use crate::store::Items;
use std::time::Duration;

fn record(now: u64, ttl_ms: u64, items: &[(&str, &str)]) -> Record {
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: ts(now),
        expires_at: ts(now + ttl_ms),
        public_id: crate::PublicId::generate(),
        meta: crate::store::Meta::new(),
    }
}

fn set(k: &str, v: &str) -> ChangeSet {
    let mut c = ChangeSet::new();
    c.set(k, v);
    c
}

#[tokio::test]
async fn loads_share_the_snapshot_instead_of_copying() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    assert!(store
        .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
        .await
        .unwrap());
    let a = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    let b = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert!(Items::ptr_eq(&a.items, &b.items));
}

#[tokio::test]
async fn create_never_overwrites() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    let now = now_millis();
    assert!(store
        .create(&id, &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap());
    assert!(!store
        .create(&id, &record(now, 60_000, &[("a", "2")]))
        .await
        .unwrap());
    let r = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(r.items.get("a"), Some("1"));
}

#[tokio::test]
async fn save_to_a_deleted_session_does_not_recreate_it() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    let now = now_millis();
    store
        .create(&id, &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap();
    store.delete(&id).await.unwrap();
    let out = store
        .save(&id, &set("b", "2"), Renewal::until(ts(now + 60_000)))
        .await
        .unwrap();
    assert_eq!(out, SaveOutcome::Gone);
    assert!(store.load(&id, Timestamp::now()).await.unwrap().is_none());
    assert!(store.is_empty());
}

#[tokio::test]
async fn save_that_empties_the_session_deletes_it() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    let now = now_millis();
    store
        .create(&id, &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap();
    let mut c = ChangeSet::new();
    c.remove("a");
    assert_eq!(
        store.save(&id, &c, Renewal::until(ts(now))).await.unwrap(),
        SaveOutcome::Deleted
    );
    assert!(store.is_empty());
}

#[tokio::test]
async fn cycle_moves_data_and_kills_the_old_id() {
    let store = MemoryStore::new();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let now = now_millis();
    store
        .create(&old, &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap();
    let out = store
        .cycle(&old, &new, &set("b", "2"), Renewal::until(ts(now + 1)))
        .await
        .unwrap();
    assert_eq!(out, CycleOutcome::Moved);
    assert!(store.load(&old, Timestamp::now()).await.unwrap().is_none());
    let r = store.load(&new, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(r.items.get("a"), Some("1"));
    assert_eq!(r.items.get("b"), Some("2"));
}

/// The store's own mark on a cycled session never reaches a load: the
/// absolute timeout counts from the `created_at` the session was made
/// with, across any number of cycles.
#[tokio::test]
async fn cycled_sessions_load_with_the_created_at_they_were_made_with() {
    let store = MemoryStore::new();
    let now = now_millis();
    let r = record(now - 5_000, 60_000, &[("a", "1")]);
    let mut id = SessionId::generate();
    store.create(&id, &r).await.unwrap();
    for _ in 0..3 {
        let n = SessionId::generate();
        let out = store
            .cycle(&id, &n, &set("b", "2"), Renewal::until(ts(now + 60_000)))
            .await;
        assert_eq!(out.unwrap(), CycleOutcome::Moved);
        id = n;
        let loaded = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(loaded.created_at, ts(now - 5_000));
        assert_eq!(loaded.public_id, r.public_id);
    }
}

#[tokio::test]
async fn cycle_onto_a_taken_id_changes_nothing() {
    let store = MemoryStore::new();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let now = now_millis();
    store
        .create(&old, &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap();
    store
        .create(&new, &record(now, 60_000, &[("z", "9")]))
        .await
        .unwrap();
    let out = store
        .cycle(&old, &new, &set("b", "2"), Renewal::until(ts(now)))
        .await
        .unwrap();
    assert_eq!(out, CycleOutcome::Collision);
    assert_eq!(item(&store, &old, "b").await.as_deref(), None);
    assert_eq!(item(&store, &new, "a").await.as_deref(), None);
}

#[tokio::test(start_paused = true)]
async fn expired_sessions_are_not_loaded() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    store
        .create(&id, &record(now_millis(), 1_000, &[("a", "1")]))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert!(store.load(&id, Timestamp::now()).await.unwrap().is_none());
    assert!(
        store.is_empty(),
        "an expired session found on load is removed"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_sessions_are_reclaimed_by_later_operations() {
    let store = MemoryStore::new();
    let now = now_millis();
    // More than two chunks of the expiry index, all due in one second.
    for _ in 0..2500 {
        store
            .create(&SessionId::generate(), &record(now, 2_000, &[("a", "1")]))
            .await
            .unwrap();
    }
    let keep = SessionId::generate();
    store
        .create(&keep, &record(now, 60_000, &[("k", "v")]))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    // Unrelated reads of the live session drive reclamation, 64 at a time.
    for _ in 0..40 {
        assert!(store.load(&keep, Timestamp::now()).await.unwrap().is_some());
    }
    assert!(store.inner.wheel().len() <= 1, "drained chunks are dropped");
    assert_eq!(store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshed_sessions_survive_reclamation() {
    let store = MemoryStore::new();
    let id = SessionId::generate();
    let now = now_millis();
    store
        .create(&id, &record(now, 2_000, &[("a", "1")]))
        .await
        .unwrap();
    assert!(store
        .touch(&id, Renewal::until(ts(now + 10_000)))
        .await
        .unwrap());
    tokio::time::advance(Duration::from_secs(3)).await;
    store.inner.sweep(Timestamp::now(), 1000, true);
    assert!(store.load(&id, Timestamp::now()).await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(8)).await;
    store.inner.sweep(Timestamp::now(), 1000, true);
    assert!(store.is_empty());
}

/// A record handed to `create` cannot pose as the store's own markers:
/// a `created_at` with the top bit set (the `MOVED` flag) or equal to
/// `u64::MAX` (a cycle's reservation, with `expires_at` 0) is stored
/// without that bit, counted, and reclaimed like any expired session.
#[tokio::test]
async fn records_cannot_forge_the_stores_markers() {
    let store = MemoryStore::new().with_max_sessions(2);
    let forged = SessionId::generate();
    let reservation_like = Record {
        items: [("a", "1")].into_iter().collect(),
        created_at: Timestamp::MAX,
        expires_at: Timestamp::UNIX_EPOCH,
        public_id: crate::PublicId::generate(),
        meta: crate::store::Meta::new(),
    };
    assert!(store.create(&forged, &reservation_like).await.unwrap());
    assert!(
        store
            .load(&forged, Timestamp::now())
            .await
            .unwrap()
            .is_none(),
        "expired at 0"
    );
    assert_eq!(store.len(), 0, "reclaimed, not stuck as a reservation");
    let flagged = SessionId::generate();
    let mut r = record(now_millis(), 60_000, &[("a", "1")]);
    r.created_at = flag_moved(r.created_at, true);
    assert!(store.create(&flagged, &r).await.unwrap());
    store.delete(&flagged).await.unwrap();
    assert_eq!(store.len(), 0);
    // The store is not left full by either.
    for _ in 0..2 {
        assert!(store
            .create(
                &SessionId::generate(),
                &record(now_millis(), 60_000, &[("a", "1")])
            )
            .await
            .unwrap());
    }
}

/// Row 31: a full store makes room from a session that expired a few
/// milliseconds ago, within the current second (the index files it
/// under the second's end).
#[tokio::test(start_paused = true)]
async fn full_store_reclaims_a_session_expired_within_the_current_second() {
    let store = MemoryStore::new().with_max_sessions(1);
    // 100 ms into a second, so the whole test stays within it.
    let at = now_millis() % 1000;
    tokio::time::advance(Duration::from_millis((1100 - at) % 1000)).await;
    let now = now_millis();
    let short = SessionId::generate();
    assert!(store
        .create(&short, &record(now, 5, &[("a", "1")]))
        .await
        .unwrap());
    tokio::time::advance(Duration::from_millis(20)).await;
    let id = SessionId::generate();
    let created = store
        .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
        .await;
    assert!(
        matches!(created, Ok(true)),
        "an expired session must make room: {created:?}"
    );
    assert_eq!(store.len(), 1);
    // A live one is never evicted to make room.
    let err = store
        .create(
            &SessionId::generate(),
            &record(now_millis(), 60_000, &[("a", "1")]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Full);
    assert!(store.load(&id, Timestamp::now()).await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn full_store_reclaims_expired_then_refuses() {
    let store = MemoryStore::new().with_max_sessions(3);
    let now = now_millis();
    let short = SessionId::generate();
    store
        .create(&short, &record(now, 1_000, &[("a", "1")]))
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .create(&SessionId::generate(), &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap();
    }
    let err = store
        .create(&SessionId::generate(), &record(now, 60_000, &[("a", "1")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Full);
    tokio::time::advance(Duration::from_secs(2)).await;
    // The expired one makes room; the live ones are untouched.
    let id = SessionId::generate();
    assert!(store
        .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
        .await
        .unwrap());
    assert_eq!(store.len(), 3);
    assert!(store
        .load(&short, Timestamp::now())
        .await
        .unwrap()
        .is_none());
}

/// Everything the store keeps beside the sessions themselves: the ids
/// filed in the expiry index, the remembered moves, and the link index.
fn index_entries(store: &MemoryStore) -> usize {
    store
        .inner
        .links
        .iter()
        .map(|e| e.value().len())
        .sum::<usize>()
        + expiry_and_moves(store)
}

fn expiry_and_moves(store: &MemoryStore) -> usize {
    store
        .inner
        .wheel()
        .chunks
        .values()
        .map(Vec::len)
        .sum::<usize>()
        + store.inner.moves.len()
}

/// Sign-in/sign-out churn through every way a session can go (delete,
/// end, an emptying save, a cycle that empties it, found expired on
/// load, reclaimed when due), each with and without a cycle first: with no session
/// left alive, the index is back where it started within a constant, at
/// every moment in between too.
#[tokio::test(start_paused = true)]
async fn churn_that_leaves_no_session_alive_leaves_the_index_as_it_started() {
    // The most the index may hold beyond twice the live sessions.
    const BOUND: usize = 2 * 1024 + 64;
    let store = MemoryStore::new();
    let start = index_entries(&store);
    let mut empty = ChangeSet::new();
    empty.clear();
    for i in 0..12_000u32 {
        let now = now_millis();
        let short = i % 8 >= 6;
        let ttl = if short { 1_000 } else { 3_600_000 };
        let mut r = record(now, ttl, &[("csrf", "x")]);
        // A third linked when created, a third linked by a save or a
        // cycle, a third never.
        let user = format!("u{}", i % 5);
        if i % 3 == 0 {
            r.meta.set_link("user", &user);
        }
        let p = r.public_id;
        let mut id = SessionId::generate();
        assert!(store.create(&id, &r).await.unwrap());
        let mut changes = set("user", "u");
        if i % 3 == 1 {
            changes.link("user", &user);
            changes.link("sid", &format!("s{i}"));
            if i % 16 >= 8 {
                let out = store
                    .save(&id, &changes, Renewal::until(ts(now + ttl)))
                    .await;
                assert_eq!(out.unwrap(), SaveOutcome::Saved);
            }
        }
        // Every way out, for sessions cycled before (8 rounds out of
        // 16) and sessions never cycled.
        if i % 16 < 8 {
            let n = SessionId::generate();
            let out = store
                .cycle(&id, &n, &changes, Renewal::until(ts(now + ttl)))
                .await;
            assert_eq!(out.unwrap(), CycleOutcome::Moved);
            id = n;
        }
        match i % 8 {
            0 | 1 => store.delete(&id).await.unwrap(),
            2 => store.end(&id, &p).await.unwrap(),
            // Through the registry when it can find it (linked or cycled).
            3 => {
                if !store.end_public(&p).await.unwrap() {
                    store.end(&id, &p).await.unwrap();
                }
            }
            4 => {
                let out = store
                    .save(&id, &empty, Renewal::until(ts(now + ttl)))
                    .await
                    .unwrap();
                assert_eq!(out, SaveOutcome::Deleted);
            }
            5 => {
                let n = SessionId::generate();
                let out = store
                    .cycle(&id, &n, &empty, Renewal::until(ts(now + ttl)))
                    .await
                    .unwrap();
                assert_eq!(out, CycleOutcome::Deleted);
            }
            6 => {
                tokio::time::advance(Duration::from_millis(1_001)).await;
                assert!(store.load(&id, Timestamp::now()).await.unwrap().is_none());
            }
            _ => {
                // Reclaimed by the sweep once due.
                tokio::time::advance(Duration::from_millis(2_001)).await;
                let _ = store
                    .load(&SessionId::generate(), Timestamp::now())
                    .await
                    .unwrap();
            }
        }
        let held = index_entries(&store);
        assert!(
            held <= start + 2 * store.len() + BOUND,
            "after {i} rounds: {held} index entries for {} sessions",
            store.len()
        );
    }
    // Whatever is still due is reclaimed by later operations.
    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..100 {
        let _ = store
            .load(&SessionId::generate(), Timestamp::now())
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 0);
    assert_eq!(store.inner.moves.len(), 0, "a move outlived its session");
    assert_eq!(store.inner.links.len(), 0, "a link outlived its session");
    let held = index_entries(&store);
    assert!(held <= start + BOUND, "{held} index entries, no session");
}

/// Live sessions cycled again and again (every sign-in cycles): the
/// index stays within a constant of twice the live sessions.
#[tokio::test]
async fn cycling_live_sessions_keeps_the_index_bounded() {
    const BOUND: usize = 2 * 1024 + 64;
    let store = MemoryStore::new();
    let now = now_millis();
    let mut ids: Vec<SessionId> = (0..500).map(|_| SessionId::generate()).collect();
    for id in &ids {
        assert!(store
            .create(id, &record(now, 3_600_000, &[("a", "1")]))
            .await
            .unwrap());
    }
    for round in 0..40 {
        for id in &mut ids {
            let n = SessionId::generate();
            let out = store
                .cycle(id, &n, &set("r", "1"), Renewal::until(ts(now + 3_600_000)))
                .await;
            assert_eq!(out.unwrap(), CycleOutcome::Moved);
            *id = n;
        }
        let held = index_entries(&store);
        assert!(
            held <= 2 * store.len() + BOUND,
            "round {round}: {held} index entries for {} sessions",
            store.len()
        );
    }
    assert_eq!(store.len(), 500);
}

/// Two fresh ids that fall in the same shard of the map.
fn same_shard_ids(store: &MemoryStore) -> (SessionId, SessionId) {
    let a = SessionId::generate();
    let shard = store.inner.map.determine_map(&a);
    loop {
        let b = SessionId::generate();
        if store.inner.map.determine_map(&b) == shard {
            return (a, b);
        }
    }
}

/// A cycle onto an id that is taken, in the same shard as the old id:
/// `Collision`, nothing changed, and no deadlock.
#[tokio::test]
async fn cycle_onto_a_taken_id_in_the_same_shard_returns() {
    let store = MemoryStore::new();
    let (old, new) = same_shard_ids(&store);
    let now = now_millis();
    let r = record(now, 60_000, &[("a", "1")]);
    assert!(store.create(&old, &r).await.unwrap());
    assert!(store
        .create(&new, &record(now, 60_000, &[("z", "9")]))
        .await
        .unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    std::thread::spawn(move || {
        let out = s
            .inner
            .cycle(&old, &new, &set("b", "2"), Renewal::until(ts(now + 60_000)));
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("cycle onto a taken id in the same shard did not return");
    assert_eq!(out, CycleOutcome::Collision);
    assert_eq!(item(&store, &old, "b").await.as_deref(), None);
    assert_eq!(item(&store, &new, "z").await.as_deref(), Some("9"));
    assert_eq!(store.len(), 2);
}

/// The same, with the new id taken *while* the cycle runs (another
/// request creating a session under it, in the same shard): the cycle
/// must return, whatever the interleaving.
#[test]
fn cycle_racing_a_create_of_its_new_id_in_the_same_shard_returns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let store = MemoryStore::new();
    let (a, b) = same_shard_ids(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let cycler = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            // As long as it takes the interleaving to happen (or not).
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                let now = now_millis();
                if store.inner.load(&a, Timestamp::now()).is_none() {
                    let _ = store.inner.create(&a, &record(now, 60_000, &[("a", "1")]));
                }
                let _ = store
                    .inner
                    .cycle(&a, &b, &set("b", "2"), Renewal::until(ts(now + 60_000)));
            }
            stop.store(true, Ordering::Relaxed);
            let _ = tx.send(());
        })
    };
    for _ in 0..2 {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = now_millis();
                let _ = store.inner.create(&b, &record(now, 60_000, &[("z", "9")]));
                futures_now(store.delete(&b)).unwrap();
            }
        });
    }
    let finished = rx.recv_timeout(Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    assert!(
        finished.is_ok(),
        "cycle deadlocked on an id taken meanwhile in the same shard"
    );
    cycler.join().unwrap();
}

fn futures_now<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
    match f.answer(None) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("MemoryStore answers at once"),
    }
}

/// The map is split finely enough that growing one shard never moves
/// more than a few thousand entries, at any size up to the cap.
#[test]
fn shards_follow_the_cap() {
    for cap in [8_000_000, 1_000_000, 100_000] {
        let store = MemoryStore::new().with_max_sessions(cap);
        let shards = store.inner.map.shards().len();
        assert!(
            cap / shards <= 4096,
            "cap {cap}: {shards} shards, {} entries each at the cap",
            cap / shards
        );
    }
    // A huge cap does not buy a huge shard table that every look-up would
    // miss the cache on.
    let unbounded = MemoryStore::new().with_max_sessions(usize::MAX);
    assert!(unbounded.inner.map.shards().len() <= 4096);
}

/// After a mass expiry, operations give the map's capacity back, a few
/// shards at a time.
#[tokio::test(start_paused = true)]
async fn capacity_is_given_back_after_a_mass_expiry() {
    let store = MemoryStore::new().with_max_sessions(200_000);
    let now = now_millis();
    for _ in 0..100_000 {
        store
            .create(&SessionId::generate(), &record(now, 1_000, &[("a", "1")]))
            .await
            .unwrap();
    }
    let keep = SessionId::generate();
    store
        .create(&keep, &record(now, 3_600_000, &[("k", "v")]))
        .await
        .unwrap();
    let peak = store.inner.map.capacity();
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..20_000 {
        assert!(store.load(&keep, Timestamp::now()).await.unwrap().is_some());
    }
    assert_eq!(store.len(), 1);
    let after = store.inner.map.capacity();
    assert!(
        after * 16 < peak,
        "capacity {peak} at 100k sessions, still {after} with 1 left"
    );
}

/// A map entry (id and record) is 80 bytes: the id (16), the items'
/// buffer (16), two times (16), the public id (16), the links and own
/// settings (`Meta`, one pointer), padded to the ids' 16-byte alignment.
/// Planning figures in the `MemoryStore` docs depend on it.
#[test]
fn an_entry_is_80_bytes() {
    assert_eq!(std::mem::size_of::<(SessionId, Record)>(), 80);
}

/// The index holds one session inline, several in a vector, and drops the
/// entry with its last session.
#[test]
fn a_link_entry_goes_from_one_to_many_and_back() {
    let (a, b) = (PublicId::generate(), PublicId::generate());
    let mut l = Linked::One(a);
    l.push(a);
    assert_eq!(l.len(), 1, "no duplicate");
    l.push(b);
    assert_eq!(l.len(), 2);
    assert!(!l.remove(&a));
    assert!(matches!(l, Linked::One(p) if p == b), "back inline");
    assert!(l.remove(&b), "empty: the entry goes");
}
