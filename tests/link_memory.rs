//! The memory a `MemoryStore` holds for links and
//! moves is O(live sessions), seen from outside through a counting global
//! allocator (a test binary of its own, so no other test's allocations are
//! counted). Link/unlink/relink churn on live sessions, cycles, and every
//! way a linked session can end, over many thousand sessions: the bytes
//! held afterwards are back where they were, within a constant.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower_session_storage::store::{ChangeSet, Keep, Meta, Record, Renewal, Timestamp};
use tower_session_storage::{MemoryStore, PublicId, SessionId, SessionStore};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes held now minus bytes held when `region` began (`stats_alloc`
/// counts a reallocation's growth or shrinkage in these two already).
fn held(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn record(ttl: Duration, link: Option<(&str, &str)>) -> Record {
    let now = Timestamp::now();
    let mut meta = Meta::new();
    if let Some((n, v)) = link {
        meta.set_link(n, v);
    }
    Record {
        items: [("k", "v")].into_iter().collect(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        public_id: PublicId::generate(),
        meta,
    }
}

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn renewal() -> Renewal {
    Renewal::until(Timestamp::now().saturating_add(Duration::from_secs(3600)))
}

/// A renewal that keeps the expiry where `r` has it.
fn keeping(r: &Record) -> Renewal {
    Renewal {
        now: Timestamp::now(),
        expires_at: r.expires_at,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One round of churn: sessions created linked or not, relinked to fresh
/// values (long ones, with `{`, `}`, `:` and unicode), unlinked, cycled,
/// and ended in every way: `delete`, `end`, `end_public`, `end_linked`,
/// an emptying save, an emptying cycle, and found expired on load.
async fn churn(store: &MemoryStore, round: u32) {
    let long = "é".repeat(120);
    for i in 0..2_000u32 {
        let user = format!("{{u{}}}:{long}", (round * 2_000 + i) % 7);
        let linked_at_create = i % 3 == 0;
        let ttl = if i % 9 == 8 {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(3600)
        };
        let r = record(ttl, linked_at_create.then_some(("user", user.as_str())));
        let p = r.public_id;
        let at = keeping(&r);
        let renewal = || at;
        let mut id = new_id();
        assert!(store.create(&id, &r).await.unwrap());
        // Relink a few times to distinct values, and add a second link.
        for k in 0..3 {
            let mut c = ChangeSet::new();
            c.link("sid", &format!("s{round}-{i}-{k}:{{}}ü"));
            if k == 1 {
                c.link("user", &user);
            }
            let _ = store.save(&id, &c, renewal()).await.unwrap();
        }
        let mut c = ChangeSet::new();
        c.unlink("sid");
        if i % 2 == 0 {
            let n = new_id();
            let _ = store.cycle(&id, &n, &c, renewal()).await.unwrap();
            id = n;
        } else {
            let _ = store.save(&id, &c, renewal()).await.unwrap();
        }
        let mut empty = ChangeSet::new();
        empty.clear();
        match i % 9 {
            0 => store.delete(&id).await.unwrap(),
            1 => store.end(&id, &p).await.unwrap(),
            2 => {
                let _ = store.end_public(&p).await.unwrap();
                store.end(&id, &p).await.unwrap();
            }
            3 => {
                let _ = store.end_linked("user", &user, Keep::NONE).await.unwrap();
                store.end(&id, &p).await.unwrap();
            }
            4 => {
                let _ = store.save(&id, &empty, renewal()).await.unwrap();
            }
            5 => {
                let n = new_id();
                let _ = store.cycle(&id, &n, &empty, renewal()).await.unwrap();
            }
            6 => {
                // Unlinked entirely, then ended.
                let mut c = ChangeSet::new();
                c.unlink("user");
                let _ = store.save(&id, &c, renewal()).await.unwrap();
                store.end(&id, &p).await.unwrap();
            }
            7 => {
                // Relinked to another user, then that user ended.
                let mut c = ChangeSet::new();
                c.link("user", "other");
                let _ = store.save(&id, &c, renewal()).await.unwrap();
                let _ = store.end_linked("user", "other", Keep::NONE).await.unwrap();
            }
            _ => {
                // Expired (a 1 ms lifetime): found so on load.
                std::thread::sleep(Duration::from_millis(2));
                assert!(store.load(&id, Timestamp::now()).await.unwrap().is_none());
            }
        }
    }
}

/// With no session left alive, the bytes the store holds come back to
/// where they were after a first round (maps grown to their working size),
/// however many rounds run: nothing accumulates per gone session.
fn link_churn_leaves_nothing_behind_in_the_memory_store() {
    block_on(async {
        let store = MemoryStore::new();
        churn(&store, 0).await;
        assert_eq!(store.len(), 0);
        let region = Region::new(GLOBAL);
        for round in 1..6 {
            churn(&store, round).await;
            assert_eq!(store.len(), 0);
        }
        let grown = held(&region);
        eprintln!("churn: {grown} bytes held after 10,000 more gone linked sessions");
        // 10,000 gone sessions, each with several links and a move: a leak
        // of one 16-byte entry each would be 160 KB.
        assert!(
            grown < 64 * 1024,
            "the store holds {grown} bytes more after 10,000 gone linked sessions"
        );
    });
}

/// One live session relinked to 20,000 distinct values: only its current
/// link costs memory.
fn relinking_one_live_session_does_not_grow_the_index() {
    block_on(async {
        let store = MemoryStore::new();
        let r = record(Duration::from_secs(3600), Some(("user", "v0")));
        let id = new_id();
        assert!(store.create(&id, &r).await.unwrap());
        let relink = |i: u32| {
            let mut c = ChangeSet::new();
            c.link("user", &format!("{{value}}:{i}:{}", "ü".repeat(100)));
            c
        };
        for i in 0..1_000 {
            let _ = store.save(&id, &relink(i), renewal()).await.unwrap();
        }
        let region = Region::new(GLOBAL);
        for i in 1_000..21_000 {
            let _ = store.save(&id, &relink(i), renewal()).await.unwrap();
        }
        let grown = held(&region);
        eprintln!("relink: {grown} bytes held after 20,000 relinks");
        assert!(grown < 64 * 1024, "{grown} bytes more after 20,000 relinks");
        assert_eq!(
            store
                .list("user", "v0", Timestamp::now(), 10)
                .await
                .unwrap()
                .len(),
            0
        );
    });
}

/// Both checks in one test: the test harness runs the tests of a binary on
/// several threads, and the counting allocator counts them all.
#[test]
fn memory_store_links_cost_memory_only_for_live_sessions() {
    link_churn_leaves_nothing_behind_in_the_memory_store();
    relinking_one_live_session_does_not_grow_the_index();
}
