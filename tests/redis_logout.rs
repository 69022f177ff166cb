//! `RedisStore` and logouts, against real `redis-server` processes on
//! loopback ports, standalone and Cluster: the public id kept in the
//! session hash, a logout racing `cycle_id` (orchestrated and under
//! stress), and no keys left behind by sign-in/sign-out churn.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;
mod redis_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call, cookie, dev_layer, script_routes};
use redis_support::fixtures::{at, new_id, now, record, sets, Admin, Env};
use redis_support::{unique_prefix, Cluster, Redis};
use tower_session_storage::store::{ChangeSet, CycleOutcome, Record, Renewal, SaveOutcome};
use tower_session_storage::{PublicId, RedisStore, SessionId, SessionStore};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

impl Env {
    /// Every key under this env's prefix, on every node.
    fn keys(&self) -> Vec<String> {
        let nodes: Vec<&Redis> = match self.admin {
            Admin::Standalone(r) => vec![r],
            Admin::Cluster(c) => c.nodes().iter().collect(),
        };
        let mut all = Vec::new();
        for n in nodes {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut n.admin())
                .unwrap();
            all.extend(keys);
        }
        all
    }

    async fn session(&self, items: &[(&str, &str)]) -> (SessionId, Record) {
        let id = new_id();
        let r = record(items, 60_000);
        assert!(self.store.create(&id, &r).await.unwrap());
        (id, r)
    }
}

/// One `#[tokio::test]` per check, on a standalone server and on a cluster.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(env) = crate::Env::standalone().await else { return };
                    crate::checks::$name(env).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(env) = crate::Env::cluster().await else { return };
                    crate::checks::$name(env).await;
                }
            )*
        }
    };
}

on_both!(
    public_id_is_stored_and_kept_by_save_touch_and_cycle,
    a_hash_without_a_public_id_is_corrupt,
    end_after_a_racing_cycle_ends_the_session_under_its_new_id,
    racing_cycles_and_ends_leave_no_session_alive,
    sign_in_sign_out_churn_leaves_no_keys,
);

mod checks {
    use super::*;

    /// The public id (what `end` follows) is a field of the hash (32 hex digits) and
    /// comes back from load, after save, touch and cycle.
    pub(crate) async fn public_id_is_stored_and_kept_by_save_touch_and_cycle(env: Env) {
        let (id, rec) = env.session(&[("a", "1")]).await;
        let p = rec.public_id;
        let stored: Vec<u8> = env.query(redis::cmd("HGET").arg(env.key(&id)).arg(&b"\xffu"[..]));
        assert_eq!(stored, p.to_string().as_bytes(), "the field holds Display");
        assert_eq!(env.record(&id).await.public_id, p);
        let exp = rec.expires_at.saturating_add(Duration::from_secs(5));
        assert_eq!(
            env.store
                .save(&id, &sets(&[("b", "2")]), Renewal::until(exp))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let mut clear = ChangeSet::new();
        clear.clear();
        clear.set("c", "3");
        assert_eq!(
            env.store
                .save(&id, &clear, Renewal::until(exp))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        assert!(env
            .store
            .touch(
                &id,
                Renewal::until(exp.saturating_add(Duration::from_secs(5)))
            )
            .await
            .unwrap());
        let r = env.record(&id).await;
        assert_eq!(r.public_id, p, "kept by save, a clear and touch");
        assert_eq!(r.items.len(), 1, "the public id is not an item");
        let new = new_id();
        assert_eq!(
            env.store
                .cycle(&id, &new, &sets(&[("d", "4")]), Renewal::until(exp))
                .await
                .unwrap(),
            CycleOutcome::Moved
        );
        let r = env.record(&new).await;
        assert_eq!(r.public_id, p, "kept across cycle");
        assert_eq!(r.items.len(), 2);
    }

    /// A hash with readable times but no public id (written by an
    /// earlier version, in the layout before the compact one) is corrupt:
    /// absent and deleted, for load and for the scripts.
    pub(crate) async fn a_hash_without_a_public_id_is_corrupt(env: Env) {
        let plant = |id: &SessionId, pid: Option<&[u8]>| {
            let expires = now() + 60_000;
            let mut c = redis::cmd("HSET");
            c.arg(env.key(id))
                .arg(&b"\xffcreated_at"[..])
                .arg(now().to_string())
                .arg(&b"\xffexpires_at"[..])
                .arg(expires.to_string())
                .arg("a")
                .arg("1");
            if let Some(p) = pid {
                c.arg(&b"\xffpublic_id"[..]).arg(p);
            }
            let _: i64 = env.query(&c);
            let _: i64 = env.query(redis::cmd("PEXPIREAT").arg(env.key(id)).arg(expires));
        };
        let bad: [Option<&[u8]>; 3] = [
            None,
            Some(b"xyz"),
            Some(b"0123456789ABCDEF0123456789abcdef"),
        ];
        for (i, pid) in bad.into_iter().enumerate() {
            let id = new_id();
            plant(&id, pid);
            assert!(env.find(&id).await.is_none(), "case {i}");
            assert!(!env.exists(&id), "case {i}: deleted");
            plant(&id, pid);
            assert_eq!(
                env.store
                    .save(
                        &id,
                        &sets(&[("b", "2")]),
                        Renewal::until(at(now() + 60_000))
                    )
                    .await
                    .unwrap(),
                SaveOutcome::Gone,
                "case {i}"
            );
            assert!(!env.exists(&id), "case {i}: deleted by the script");
            plant(&id, pid);
            assert_eq!(
                env.store
                    .cycle(
                        &id,
                        &new_id(),
                        &ChangeSet::new(),
                        Renewal::until(at(now() + 60_000))
                    )
                    .await
                    .unwrap(),
                CycleOutcome::Gone,
                "case {i}"
            );
            assert!(!env.exists(&id), "case {i}: deleted by cycle");
        }
        // The good spelling is read.
        let id = new_id();
        let p = PublicId::generate();
        plant(&id, Some(p.to_string().as_bytes()));
        assert_eq!(env.record(&id).await.public_id, p);
    }

    /// SECURITY.md #35, the orchestrated interleaving: request L loads A and
    /// destroys; request C cycles A -> N and finishes first; L's
    /// `end(A, P)` must end N too. Also along a chain A -> N -> M, and for
    /// a session that was never moved.
    pub(crate) async fn end_after_a_racing_cycle_ends_the_session_under_its_new_id(env: Env) {
        let (a, _) = env.session(&[("user", "alice")]).await;
        let loaded_by_l = env.record(&a).await;
        let exp = loaded_by_l.expires_at;
        // C loaded A too, and cycles it.
        let n = new_id();
        assert_eq!(
            env.store
                .cycle(&a, &n, &sets(&[("signed_in", "1")]), Renewal::until(exp))
                .await
                .unwrap(),
            CycleOutcome::Moved
        );
        assert!(env.exists(&n));
        // L's logout arrives after C's move.
        env.store.end(&a, &loaded_by_l.public_id).await.unwrap();
        assert!(
            env.find(&n).await.is_none(),
            "the logout was undone: the session lives on under the id C handed out"
        );
        assert!(!env.exists(&a) && !env.exists(&n));
        // A save or a cycle for N afterwards finds nothing.
        assert_eq!(
            env.store
                .save(&n, &sets(&[("x", "1")]), Renewal::until(exp))
                .await
                .unwrap(),
            SaveOutcome::Gone
        );

        // A chain: A -> N -> M, then L (which loaded A) ends.
        let (a, rec) = env.session(&[("user", "bob")]).await;
        let (n, m) = (new_id(), new_id());
        for (from, to) in [(&a, &n), (&n, &m)] {
            assert_eq!(
                env.store
                    .cycle(from, to, &ChangeSet::new(), Renewal::until(rec.expires_at))
                    .await
                    .unwrap(),
                CycleOutcome::Moved
            );
        }
        env.store.end(&a, &rec.public_id).await.unwrap();
        assert!(env.find(&m).await.is_none(), "the chain's end");
        // Then a late cycle of N (loaded before) is gone, and creates nothing.
        let late = new_id();
        assert_eq!(
            env.store
                .cycle(&n, &late, &ChangeSet::new(), Renewal::until(rec.expires_at))
                .await
                .unwrap(),
            CycleOutcome::Gone
        );
        assert!(!env.exists(&late));

        // Never moved: end deletes it and ends nothing else.
        let (a, rec) = env.session(&[("user", "carol")]).await;
        let (other, _) = env.session(&[("user", "dave")]).await;
        env.store.end(&a, &rec.public_id).await.unwrap();
        assert!(!env.exists(&a));
        assert!(env.exists(&other), "another session is untouched");
        // Ending an unknown session is not an error.
        env.store
            .end(&new_id(), &PublicId::generate())
            .await
            .unwrap();
        // Left: the other session, and on a cluster the "ended" marks of
        // the logouts that followed a move, each living a few seconds.
        for key in env.keys() {
            if key == env.key(&other) {
                continue;
            }
            assert!(
                matches!(env.admin, Admin::Cluster(_)) && key.contains("moved:"),
                "left behind: {key}"
            );
            assert_eq!(env.query::<String>(redis::cmd("GET").arg(&key)), "ended");
            let ttl: i64 = env.query(redis::cmd("PTTL").arg(&key));
            assert!((1..=8_000).contains(&ttl), "{key}: the mark lives {ttl} ms");
        }
    }

    /// SECURITY.md #35 under stress: per session, several tasks keep cycling it to
    /// fresh ids while another ends it through an id it loaded earlier.
    /// Afterwards no id the session ever had (or was offered) holds it.
    pub(crate) async fn racing_cycles_and_ends_leave_no_session_alive(env: Env) {
        const SESSIONS: usize = 12;
        const CYCLERS: usize = 3;
        const CYCLES: usize = 8;
        let store = Arc::new(env.store.clone());
        let mut tasks = Vec::new();
        let mut all_ids = Vec::new();
        for s in 0..SESSIONS {
            let (a, rec) = env.session(&[("user", "u")]).await;
            let current = Arc::new(Mutex::new(vec![a]));
            let offered = Arc::new(Mutex::new(vec![a]));
            all_ids.push(offered.clone());
            for c in 0..CYCLERS {
                let (store, current, offered) = (store.clone(), current.clone(), offered.clone());
                let exp = rec.expires_at;
                tasks.push(tokio::spawn(async move {
                    for _ in 0..CYCLES {
                        let from = *current.lock().unwrap().last().unwrap();
                        let to = new_id();
                        offered.lock().unwrap().push(to);
                        match store
                            .cycle(&from, &to, &ChangeSet::new(), Renewal::until(exp))
                            .await
                            .unwrap()
                        {
                            CycleOutcome::Moved => current.lock().unwrap().push(to),
                            CycleOutcome::Gone => {}
                            o => panic!("cycle: {o:?}"),
                        }
                        if c == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                }));
            }
            let (store, current) = (store.clone(), current.clone());
            tasks.push(tokio::spawn(async move {
                // End through an id loaded a little while ago (a request
                // that was slower than some cycles).
                for _ in 0..(s % 4) {
                    tokio::task::yield_now().await;
                }
                let ids = current.lock().unwrap().clone();
                let loaded = ids[ids.len() / 2];
                store.end(&loaded, &rec.public_id).await.unwrap();
            }));
        }
        for t in tasks {
            common::guard(t).await.unwrap();
        }
        for (s, ids) in all_ids.iter().enumerate() {
            let ids = ids.lock().unwrap().clone();
            for id in &ids {
                assert!(
                    env.find(id).await.is_none(),
                    "session {s}: still alive under one of its {} ids after the logout",
                    ids.len()
                );
            }
        }
    }

    /// SECURITY.md #34: memory stays bounded by live sessions: a sign-in/sign-out
    /// loop through the layer (create, cycle_id, destroy) leaves no key
    /// under the prefix, pointer keys included.
    pub(crate) async fn sign_in_sign_out_churn_leaves_no_keys(env: Env) {
        let app = script_routes().layer(dev_layer(env.store.clone()));
        for i in 0..40 {
            let id = call(&app, "set=visits:1", None).await.new_id().unwrap();
            let r = call(&app, &format!("set=user:u{i}&cycle"), Some(&cookie(&id))).await;
            let id = r.new_id().unwrap();
            assert_eq!(
                call(&app, "get=user", Some(&cookie(&id))).await.ok(),
                format!("u{i}")
            );
            assert!(call(&app, "destroy", Some(&cookie(&id)))
                .await
                .expires_cookie());
        }
        let keys = env.keys();
        assert!(keys.is_empty(), "{} keys left behind: {keys:?}", keys.len());
        // And a few with two cycles before the logout.
        for _ in 0..5 {
            let mut id = call(&app, "set=a:1", None).await.new_id().unwrap();
            for _ in 0..2 {
                id = call(&app, "cycle", Some(&cookie(&id)))
                    .await
                    .new_id()
                    .unwrap();
            }
            assert!(call(&app, "destroy", Some(&cookie(&id)))
                .await
                .expires_cookie());
        }
        let keys = env.keys();
        assert!(keys.is_empty(), "{} keys left behind: {keys:?}", keys.len());
    }
}

// ---------------------------------------------------------------------------
// Cluster: a logout between the steps of a move
// ---------------------------------------------------------------------------

/// SECURITY.md #35 on a Cluster, between the steps of a move: C has taken A (step 1)
/// and is creating N (step 2) on a node that hangs (SIGSTOP); meanwhile L's
/// `end(A, P)` finds A gone and marks the move pointer ended. When the node
/// runs again, C's step 3 sees the mark: C reports `Gone` and deletes N, so
/// the id it would have handed out never holds the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_logout_between_the_steps_of_a_move_ends_the_session() {
    if !redis_support::available() {
        return;
    }
    // A cluster of its own: a node of it hangs for a moment.
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let connect = || async {
        RedisStore::connect_cluster(&cluster.urls())
            .await
            .unwrap()
            .with_key_prefix(prefix.clone())
    };
    let (c_store, l_store) = (connect().await, connect().await);
    let node = |key: &str| cluster.primary_of(key).unwrap();
    let key = |id: &SessionId| format!("{prefix}{{{id}}}");
    // A on node a; N on another node n; the pointer (named after P) off n.
    let a = new_id();
    let on_a = node(&key(&a));
    let n = std::iter::repeat_with(new_id)
        .find(|n| node(&key(n)) != on_a)
        .unwrap();
    let on_n = node(&key(&n));
    let p = std::iter::repeat_with(PublicId::generate)
        .find(|p| node(&format!("{prefix}moved:{{{p}}}")) != on_n)
        .unwrap();
    let mut rec = record(&[("user", "alice")], 60_000);
    rec.public_id = p;
    assert!(c_store.create(&a, &rec).await.unwrap());

    cluster.nodes()[on_n].freeze();
    let exp = rec.expires_at;
    let c = tokio::spawn(async move {
        c_store
            .cycle(&a, &n, &ChangeSet::new(), Renewal::until(exp))
            .await
    });
    // Wait (bounded) until C's step 1 took A: C now waits on node n.
    let started = std::time::Instant::now();
    let mut admin_a = cluster.nodes()[on_a].admin();
    while redis::cmd("EXISTS")
        .arg(key(&a))
        .query::<i64>(&mut admin_a)
        .unwrap()
        == 1
    {
        assert!(started.elapsed().as_secs() < 30, "C never took A");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ended = l_store.end(&a, &p).await;
    cluster.nodes()[on_n].thaw();
    ended.unwrap();
    let moved = common::guard(c).await.unwrap().unwrap();
    assert_eq!(moved, CycleOutcome::Gone, "a move that lost to a logout");
    let mut admin = cluster.admin();
    let exists: i64 = redis::cmd("EXISTS").arg(key(&n)).query(&mut admin).unwrap();
    assert_eq!(
        exists, 0,
        "the logout was undone: the session lives under N"
    );
    let mark: String = redis::cmd("GET")
        .arg(format!("{prefix}moved:{{{p}}}"))
        .query(&mut admin)
        .unwrap();
    assert_eq!(mark, "ended");
}
