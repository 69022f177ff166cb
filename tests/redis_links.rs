//! Links, per-session lifetimes and the registry on `RedisStore`, against
//! real `redis-server` processes: a standalone server and a 3-node Redis
//! Cluster. The key layout (index keys, move pointers) and their TTLs, the
//! pruning of stale index entries, `end_public` and `end_linked` across a
//! `cycle`, the round trips of `list` and `end_linked` for 50 sessions of
//! one user, and the order of the steps when a connection is cut between
//! them.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::time::Duration;

use redis_support::fixtures::{at, new_id, now, record, sets, Env};
use redis_support::CountingProxy;
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Keep, Meta, Record, Renewal, SaveOutcome, Timestamp,
};
use tower_session_storage::{PublicId, RedisStore, SessionId, SessionStore};

/// A record holding one item, linked as `links`, alive for `ttl_ms`,
/// created `age_ms` ago.
fn linked(links: &[(&str, &str)], ttl_ms: u64, age_ms: u64) -> Record {
    let mut r = record(&[("k", "v")], ttl_ms);
    r.created_at = at(now() - age_ms);
    let mut meta = Meta::new();
    for (n, v) in links {
        meta.set_link(n, v);
    }
    r.meta = meta;
    r
}

fn renewal(ttl_ms: u64) -> Renewal {
    Renewal {
        now: Timestamp::now(),
        expires_at: at(now() + ttl_ms),
    }
}

fn user(value: &str) -> ChangeSet {
    let mut c = sets(&[("signed_in", "1")]);
    c.link("user", value);
    c
}

impl Env {
    fn index_key(&self, name: &str, value: &str) -> String {
        format!("{}link:{name}:{{{value}}}", self.prefix)
    }

    fn pointer_key(&self, p: &PublicId) -> String {
        format!("{}moved:{{{p}}}", self.prefix)
    }

    fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key))
    }

    fn members(&self, name: &str, value: &str) -> Vec<String> {
        let mut m: Vec<String> = self.query(
            redis::cmd("ZRANGE")
                .arg(self.index_key(name, value))
                .arg(0)
                .arg(-1),
        );
        m.sort();
        m
    }

    /// Creates a session linked as `links`; its id and public id.
    async fn linked(
        &self,
        links: &[(&str, &str)],
        ttl_ms: u64,
        age_ms: u64,
    ) -> (SessionId, PublicId) {
        let id = new_id();
        let r = linked(links, ttl_ms, age_ms);
        assert!(self.store.create(&id, &r).await.unwrap());
        (id, r.public_id)
    }

    async fn listed(&self, name: &str, value: &str) -> Vec<PublicId> {
        self.store
            .list(name, value, Timestamp::now(), 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.public_id)
            .collect()
    }
}

/// A store whose grace before pruning is short: 2 × 100 ms + 2 s.
fn quick(store: RedisStore) -> RedisStore {
    store.with_command_timeout(Duration::from_millis(100))
}

/// Longer than the grace of [`quick`] stores.
const PAST_GRACE: Duration = Duration::from_millis(2_400);

macro_rules! link_tests {
    ($env:path) => {
        use super::*;

        #[tokio::test]
        async fn links_and_lifetime_are_stored_loaded_and_carried_across_cycle() {
            let Some(env) = $env().await else { return };
            let id = new_id();
            assert!(env
                .store
                .create(&id, &record(&[("a", "1")], 60_000))
                .await
                .unwrap());
            assert!(env.record(&id).await.meta.is_empty());

            let mut c = user("alice");
            c.link("sid", "p{1}:x");
            c.set_idle_timeout(Duration::from_secs(30 * 86_400));
            c.set_persistent_cookie(true);
            let out = env
                .store
                .save(&id, &c, renewal(30 * 86_400_000))
                .await
                .unwrap();
            assert_eq!(out, SaveOutcome::Saved);
            let r = env.record(&id).await;
            assert_eq!(
                r.meta.links().collect::<Vec<_>>(),
                [("sid", "p{1}:x"), ("user", "alice")]
            );
            assert_eq!(
                r.meta.idle_timeout(),
                Some(Duration::from_secs(30 * 86_400))
            );
            assert_eq!(r.meta.persistent_cookie(), Some(true));
            assert_eq!(r.items.get("signed_in"), Some("1"));

            // A shorter idle timeout sets the expiry exactly (backwards).
            let mut c = ChangeSet::new();
            c.set_idle_timeout(Duration::from_secs(60));
            env.store.save(&id, &c, renewal(60_000)).await.unwrap();
            let r = env.record(&id).await;
            assert!(r.expires_at.as_millis() <= now() + 60_000);
            assert!(env.pttl(&env.key(&id)) <= 60_000);
            // Without one, it only moves forward.
            env.store
                .save(&id, &sets(&[("b", "2")]), renewal(1_000))
                .await
                .unwrap();
            assert!(env.record(&id).await.expires_at.as_millis() > now() + 50_000);

            let new = new_id();
            let mut c = ChangeSet::new();
            c.unlink("sid");
            c.set_persistent_cookie(false);
            let out = env
                .store
                .cycle(&id, &new, &c, renewal(60_000))
                .await
                .unwrap();
            assert_eq!(out, CycleOutcome::Moved);
            assert!(env.find(&id).await.is_none());
            let moved = env.record(&new).await;
            assert_eq!(moved.public_id, r.public_id);
            assert_eq!(moved.meta.links().collect::<Vec<_>>(), [("user", "alice")]);
            assert_eq!(moved.meta.idle_timeout(), Some(Duration::from_secs(60)));
            assert_eq!(moved.meta.persistent_cookie(), Some(false));
            assert_eq!(env.listed("user", "alice").await, [r.public_id]);
            assert!(env.listed("sid", "p{1}:x").await.is_empty());

            // A clear keeps links and settings (they are not items).
            let mut c = sets(&[("c", "3")]);
            c.clear();
            c.set("c", "3");
            env.store.save(&new, &c, renewal(60_000)).await.unwrap();
            let r = env.record(&new).await;
            assert_eq!(r.items.len(), 1);
            assert_eq!(r.meta.link("user"), Some("alice"));
            assert_eq!(r.meta.idle_timeout(), Some(Duration::from_secs(60)));
        }

        #[tokio::test]
        async fn list_is_oldest_first_and_limit_keeps_the_newest() {
            let Some(env) = $env().await else { return };
            let (_, p3) = env.linked(&[("user", "bob")], 60_000, 1_000).await;
            let (_, p1) = env.linked(&[("user", "bob")], 60_000, 3_000).await;
            let (_, p2) = env.linked(&[("user", "bob")], 60_000, 2_000).await;
            env.linked(&[("user", "carol")], 60_000, 0).await;
            assert_eq!(env.listed("user", "bob").await, [p1, p2, p3]);
            let two = env
                .store
                .list("user", "bob", Timestamp::now(), 2)
                .await
                .unwrap();
            assert_eq!(
                two.iter().map(|l| l.public_id).collect::<Vec<_>>(),
                [p2, p3]
            );
            assert_eq!(two[0].meta.link("user"), Some("bob"));
            assert!(env.listed("user", "nobody").await.is_empty());
            assert!(env.listed("no:such", "bob").await.is_empty());
        }

        #[tokio::test]
        async fn index_keys_and_pointers_live_at_least_as_long_as_their_sessions() {
            let Some(env) = $env().await else { return };
            let (id, p) = env
                .linked(&[("user", "dave"), ("sid", "s1")], 2_000, 0)
                .await;
            for key in [
                env.index_key("user", "dave"),
                env.index_key("sid", "s1"),
                env.pointer_key(&p),
            ] {
                let ttl = env.pttl(&key);
                assert!(ttl > 0 && ttl >= env.pttl(&env.key(&id)), "{key}: {ttl}");
            }
            // Refreshes move the session's expiry far past the horizon the
            // link gave its keys: theirs follow.
            assert!(env.store.touch(&id, renewal(600_000)).await.unwrap());
            let session = env.pttl(&env.key(&id));
            assert!(session > 500_000);
            env.store
                .save(&id, &sets(&[("x", "1")]), renewal(900_000))
                .await
                .unwrap();
            let session = env.pttl(&env.key(&id)).max(session);
            for key in [
                env.index_key("user", "dave"),
                env.index_key("sid", "s1"),
                env.pointer_key(&p),
            ] {
                let ttl = env.pttl(&key);
                assert!(ttl >= session, "{key}: {ttl} < {session}");
            }
            let new = new_id();
            env.store
                .cycle(&id, &new, &ChangeSet::new(), renewal(1_200_000))
                .await
                .unwrap();
            let session = env.pttl(&env.key(&new));
            for key in [env.index_key("user", "dave"), env.pointer_key(&p)] {
                assert!(env.pttl(&key) >= session, "{key}");
            }
        }

        #[tokio::test]
        async fn end_linked_with_and_without_keep() {
            let Some(env) = $env().await else { return };
            let mut ps = Vec::new();
            let mut ids = Vec::new();
            for age in [5_000, 4_000, 3_000, 2_000, 1_000] {
                let (id, p) = env.linked(&[("user", "erin")], 60_000, age).await;
                ids.push(id);
                ps.push(p);
            }
            let (other, _) = env.linked(&[("user", "frank")], 60_000, 0).await;
            // Keep the oldest, and the 2 newest others.
            let keep = Keep {
                session: Some(ps[0]),
                newest: 2,
            };
            assert_eq!(env.store.end_linked("user", "erin", keep).await.unwrap(), 2);
            assert_eq!(env.listed("user", "erin").await, [ps[0], ps[3], ps[4]]);
            assert!(env.find(&ids[1]).await.is_none() && env.find(&ids[2]).await.is_none());
            assert_eq!(
                env.members("user", "erin").len(),
                3,
                "ended entries removed"
            );
            // All but one.
            let keep = Keep {
                session: Some(ps[4]),
                newest: 0,
            };
            assert_eq!(env.store.end_linked("user", "erin", keep).await.unwrap(), 2);
            assert_eq!(env.listed("user", "erin").await, [ps[4]]);
            // All.
            assert_eq!(
                env.store
                    .end_linked("user", "erin", Keep::NONE)
                    .await
                    .unwrap(),
                1
            );
            assert!(env.listed("user", "erin").await.is_empty());
            assert!(env.find(&ids[4]).await.is_none());
            assert!(env.members("user", "erin").is_empty());
            assert_eq!(
                env.store
                    .end_linked("user", "erin", Keep::NONE)
                    .await
                    .unwrap(),
                0
            );
            assert!(
                env.find(&other).await.is_some(),
                "another user's session is untouched"
            );
        }

        #[tokio::test]
        async fn end_public_ends_a_linked_session_and_its_entries() {
            let Some(env) = $env().await else { return };
            let (id, p) = env
                .linked(&[("user", "gina"), ("sid", "g1")], 60_000, 0)
                .await;
            assert!(env.store.end_public(&p).await.unwrap());
            assert!(env.find(&id).await.is_none());
            assert!(!env.store.end_public(&p).await.unwrap());
            assert!(!env.store.end_public(&PublicId::generate()).await.unwrap());
            assert!(env.members("user", "gina").is_empty());
            assert!(env.members("sid", "g1").is_empty());
            // A save on it now finds nothing and re-creates nothing.
            let out = env
                .store
                .save(&id, &user("gina"), renewal(60_000))
                .await
                .unwrap();
            assert_eq!(out, SaveOutcome::Gone);
            assert!(env.find(&id).await.is_none());
        }

        #[tokio::test]
        async fn a_cycled_linked_session_is_ended_by_public_id_and_by_link() {
            let Some(env) = $env().await else { return };
            for by_link in [false, true] {
                let id = new_id();
                assert!(env
                    .store
                    .create(&id, &record(&[("a", "1")], 60_000))
                    .await
                    .unwrap());
                // Signed in: linked and moved in the same write.
                let signed_in = new_id();
                let out = env
                    .store
                    .cycle(&id, &signed_in, &user("hank"), renewal(60_000))
                    .await
                    .unwrap();
                assert_eq!(out, CycleOutcome::Moved);
                let again = new_id();
                env.store
                    .cycle(&signed_in, &again, &ChangeSet::new(), renewal(60_000))
                    .await
                    .unwrap();
                let p = env.record(&again).await.public_id;
                assert_eq!(env.listed("user", "hank").await, [p]);
                if by_link {
                    assert_eq!(
                        env.store
                            .end_linked("user", "hank", Keep::NONE)
                            .await
                            .unwrap(),
                        1
                    );
                } else {
                    assert!(env.store.end_public(&p).await.unwrap());
                }
                assert!(env.find(&again).await.is_none(), "by_link: {by_link}");
                // A request still holding an older id cannot bring it back.
                let out = env
                    .store
                    .cycle(&signed_in, &new_id(), &sets(&[("b", "2")]), renewal(60_000))
                    .await
                    .unwrap();
                assert_eq!(out, CycleOutcome::Gone);
                assert!(env.listed("user", "hank").await.is_empty());
            }
        }

        #[tokio::test]
        async fn stale_entries_are_pruned_after_end_unlink_and_expiry() {
            let Some(mut env) = $env().await else { return };
            env.store = quick(env.store);
            let (ended, _) = env.linked(&[("user", "ida")], 60_000, 0).await;
            let (unlinked, _) = env.linked(&[("user", "ida")], 60_000, 0).await;
            let (_, expiring) = env.linked(&[("user", "ida")], 300, 0).await;
            let (deleted, _) = env.linked(&[("user", "ida")], 60_000, 0).await;
            let (kept, pk) = env.linked(&[("user", "ida")], 60_000, 0).await;
            env.store
                .end(&ended, &env.record(&ended).await.public_id)
                .await
                .unwrap();
            let mut c = ChangeSet::new();
            c.unlink("user");
            env.store
                .save(&unlinked, &c, renewal(60_000))
                .await
                .unwrap();
            let mut c = ChangeSet::new();
            c.remove("k");
            assert_eq!(
                env.store.save(&deleted, &c, renewal(60_000)).await.unwrap(),
                SaveOutcome::Deleted
            );
            let listed = env.listed("user", "ida").await;
            assert!(listed == [pk] || listed == [expiring, pk], "{listed:?}");
            tokio::time::sleep(PAST_GRACE).await;
            assert_eq!(env.listed("user", "ida").await, [pk]);
            assert_eq!(
                env.members("user", "ida"),
                [pk.to_string()],
                "stale entries pruned"
            );
            assert!(env.find(&kept).await.is_some());
            assert!(env.find(&unlinked).await.is_some(), "unlinked, not ended");
        }

        #[tokio::test]
        async fn relinking_to_another_value_moves_the_session() {
            let Some(env) = $env().await else { return };
            let (id, p) = env.linked(&[("user", "jo")], 60_000, 0).await;
            env.store
                .save(&id, &user("kim"), renewal(60_000))
                .await
                .unwrap();
            assert!(env.listed("user", "jo").await.is_empty());
            assert_eq!(env.listed("user", "kim").await, [p]);
            assert_eq!(
                env.store
                    .end_linked("user", "jo", Keep::NONE)
                    .await
                    .unwrap(),
                0
            );
            assert!(env.find(&id).await.is_some());
        }
    };
}

mod standalone {
    link_tests!(Env::standalone);
}

mod cluster {
    link_tests!(Env::cluster);
}

/// `list` and `end_linked` for 50 sessions of one user cost a fixed number
/// of round trips (read the index, then batches), counted through a proxy.
#[tokio::test]
async fn list_and_end_linked_cost_a_fixed_number_of_round_trips() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let proxy = CountingProxy::start(server.port()).await;
    let store = RedisStore::connect(&proxy.url())
        .await
        .unwrap()
        .with_key_prefix(redis_support::unique_prefix());
    for i in 0..50 {
        let r = linked(&[("user", "many")], 60_000, 50 - i);
        assert!(store.create(&new_id(), &r).await.unwrap());
    }
    let (c0, r0) = (proxy.commands(), proxy.round_trips());
    let listed = store
        .list("user", "many", Timestamp::now(), 1000)
        .await
        .unwrap();
    let (c1, r1) = (proxy.commands(), proxy.round_trips());
    assert_eq!(listed.len(), 50);
    let ended = store.end_linked("user", "many", Keep::NONE).await.unwrap();
    let (c2, r2) = (proxy.commands(), proxy.round_trips());
    assert_eq!(ended, 50);
    eprintln!(
        "50 sessions: list {} round trips ({} commands); end_linked {} round trips ({} commands)",
        r1 - r0,
        c1 - c0,
        r2 - r1,
        c2 - c1
    );
    assert!(r1 - r0 <= 3, "list: {} round trips", r1 - r0);
    assert!(r2 - r1 <= 5, "end_linked: {} round trips", r2 - r1);
    assert!(store
        .list("user", "many", Timestamp::now(), 1000)
        .await
        .unwrap()
        .is_empty());
}

/// A connection cut between the index step and the session step of a
/// linking write leaves only a stale index entry, never a linked session
/// missing from the index; one cut after an unlinking write's session step
/// leaves a stale entry too. Both are pruned later.
#[tokio::test]
async fn a_cut_between_the_steps_leaves_at_most_a_stale_entry() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let proxy = CountingProxy::start(server.port()).await;
    let prefix = redis_support::unique_prefix();
    let store =
        quick(RedisStore::connect(&proxy.url()).await.unwrap()).with_key_prefix(prefix.clone());
    let env = Env {
        store: store.clone(),
        prefix,
        admin: redis_support::fixtures::Admin::Standalone(server),
    };

    // A sign-in's create: the index step goes through, the session's key
    // never reaches Redis.
    let id = new_id();
    let r = linked(&[("user", "lee")], 60_000, 0);
    proxy.cut_on(Some(env.key(&id).as_bytes()));
    assert!(store.create(&id, &r).await.is_err());
    proxy.cut_on(None);
    assert_eq!(
        env.members("user", "lee"),
        [r.public_id.to_string()],
        "the index step ran first"
    );
    assert!(!env.exists(&id));
    assert!(env.listed("user", "lee").await.is_empty());

    // Linking an existing session: same.
    // (Its first session step only asks for the index step; the second
    // one is cut.)
    let (id2, p2) = env.linked(&[("sid", "x")], 60_000, 0).await;
    proxy.cut_on_after(env.key(&id2).as_bytes(), 1);
    assert!(store
        .save(&id2, &user("lee"), renewal(60_000))
        .await
        .is_err());
    proxy.cut_on(None);
    assert!(env.members("user", "lee").contains(&p2.to_string()));
    assert_eq!(
        env.record(&id2).await.meta.link("user"),
        None,
        "the session step never ran"
    );

    // Now linked for real; then unlinked with the index step cut.
    store
        .save(&id2, &user("lee"), renewal(60_000))
        .await
        .unwrap();
    assert_eq!(env.listed("user", "lee").await, [p2]);
    let mut c = ChangeSet::new();
    c.unlink("user");
    proxy.cut_on(Some(env.index_key("user", "lee").as_bytes()));
    assert_eq!(
        store.save(&id2, &c, renewal(60_000)).await.unwrap(),
        SaveOutcome::Saved
    );
    proxy.cut_on(None);
    assert_eq!(env.record(&id2).await.meta.link("user"), None);
    assert!(
        env.listed("user", "lee").await.is_empty(),
        "a stale entry is not listed"
    );

    tokio::time::sleep(PAST_GRACE).await;
    assert!(env.listed("user", "lee").await.is_empty());
    assert!(
        env.members("user", "lee").is_empty(),
        "stale entries pruned"
    );
}

/// On a Cluster, `end_linked` while a `cycle_id` of the linked session is
/// between its steps (it took the session from A and is creating it under N
/// on a node that hangs): the session counts as ended, and when the node
/// runs again the move finds the mark and reports `Gone`, so N never holds
/// the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_end_linked_between_the_steps_of_a_move_ends_the_session() {
    if !redis_support::available() {
        return;
    }
    let cluster = redis_support::Cluster::start();
    let prefix = redis_support::unique_prefix();
    let connect = || async {
        RedisStore::connect_cluster(&cluster.urls())
            .await
            .unwrap()
            .with_key_prefix(prefix.clone())
    };
    let (c_store, l_store) = (connect().await, connect().await);
    let node = |key: &str| cluster.primary_of(key).unwrap();
    let key = |id: &SessionId| format!("{prefix}{{{id}}}");
    let a = new_id();
    let on_a = node(&key(&a));
    let n = std::iter::repeat_with(new_id)
        .find(|n| node(&key(n)) != on_a)
        .unwrap();
    let on_n = node(&key(&n));
    let p = std::iter::repeat_with(PublicId::generate)
        .find(|p| node(&format!("{prefix}moved:{{{p}}}")) != on_n)
        .unwrap();
    let value = std::iter::successors(Some(0u32), |i| Some(i + 1))
        .map(|i| format!("zed{i}"))
        .find(|v| node(&format!("{prefix}link:user:{{{v}}}")) != on_n)
        .unwrap();
    let mut rec = linked(&[("user", &value)], 60_000, 0);
    rec.public_id = p;
    assert!(c_store.create(&a, &rec).await.unwrap());

    cluster.nodes()[on_n].freeze();
    let c = tokio::spawn(async move {
        c_store
            .cycle(&a, &n, &ChangeSet::new(), renewal(60_000))
            .await
    });
    let started = std::time::Instant::now();
    let mut admin_a = cluster.nodes()[on_a].admin();
    while redis::cmd("EXISTS")
        .arg(key(&a))
        .query::<i64>(&mut admin_a)
        .unwrap()
        == 1
    {
        assert!(started.elapsed().as_secs() < 30, "the move never took A");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = l_store.end_linked("user", &value, Keep::NONE).await;
    cluster.nodes()[on_n].thaw();
    assert_eq!(ended.unwrap(), 1, "the session being moved counts as ended");
    let moved = c.await.unwrap().unwrap();
    assert_eq!(moved, CycleOutcome::Gone, "a move that lost to end_linked");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key(&n))
        .query(&mut cluster.admin())
        .unwrap();
    assert_eq!(exists, 0, "the end was undone: the session lives under N");
    assert!(l_store
        .list("user", &value, Timestamp::now(), 10)
        .await
        .unwrap()
        .is_empty());
}
