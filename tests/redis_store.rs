//! `RedisStore` against real `redis-server` processes on loopback ports: the
//! store-agnostic suite (tests/common) against a standalone server and
//! against a 3-node Redis Cluster, store-level checks of every trait method
//! on both, and app-level checks with two axum instances sharing one Redis,
//! Redis crashing and coming back, a hung Redis, and the round trips a
//! request costs.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
mod redis_support;

#[allow(dead_code)]
#[path = "../examples/redis.rs"]
mod redis_example;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cookie, dev_layer, guard, raw_client, send, serve_script, TestServer};
use redis_support::fixtures::{at, new_id, now, sets, Admin, Env};
use redis_support::{unique_prefix, Cluster, CountingProxy, Redis};
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Items, Record, Renewal, SaveOutcome, Timestamp,
};
use tower_session_storage::{
    MemoryStore, RedisStore, SessionId, SessionLayer, SessionStore, StoreErrorKind,
};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A store on the shared standalone server, under a fresh key prefix.
async fn standalone_store() -> Option<RedisStore> {
    let server = redis_support::shared()?;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    Some(store.with_key_prefix(unique_prefix()))
}

/// A store on the shared cluster, under a fresh key prefix.
async fn cluster_store() -> Option<RedisStore> {
    let cluster = redis_support::shared_cluster()?;
    let store = RedisStore::connect_cluster(&cluster.urls()).await.unwrap();
    Some(store.with_key_prefix(unique_prefix()))
}

fn record(items: &[(&str, &str)], created_at: u64, expires_at: u64) -> Record {
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: at(created_at),
        expires_at: at(expires_at),
        public_id: tower_session_storage::PublicId::generate(),
        meta: tower_session_storage::store::Meta::new(),
    }
}

fn items_of(r: &Record) -> Vec<(String, String)> {
    r.items
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Env {
    fn pttl(&self, id: &SessionId) -> i64 {
        self.query(redis::cmd("PTTL").arg(self.key(id)))
    }

    /// Creates a session with `items`, alive for `ttl_ms`; returns its id
    /// and its expiry.
    async fn session(&self, items: &[(&str, &str)], ttl_ms: u64) -> (SessionId, u64) {
        let id = new_id();
        let t = now();
        assert!(self
            .store
            .create(&id, &record(items, t, t + ttl_ms))
            .await
            .unwrap());
        (id, t + ttl_ms)
    }
}

// ---------------------------------------------------------------------------
// The store-agnostic suite and the concurrency checks, on both deployments
// ---------------------------------------------------------------------------

/// tests/common's suite against a standalone server.
mod standalone_suite {
    session_store_suite!(match crate::standalone_store().await {
        Some(store) => store,
        None => return,
    });
}

/// tests/common's suite against a 3-node Redis Cluster.
mod cluster_suite {
    session_store_suite!(match crate::cluster_store().await {
        Some(store) => store,
        None => return,
    });
}

/// tests/common's concurrency checks (SECURITY.md #17, #18, #19, #29) on both.
macro_rules! concurrency_checks {
    ($make:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_writes_to_different_keys_all_survive() {
            let Some(store) = $make().await else { return };
            crate::common::concurrency::writes_to_different_keys_all_survive(store, 20).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_writes_to_one_key_one_wins() {
            let Some(store) = $make().await else { return };
            crate::common::concurrency::writes_to_the_same_key_one_wins(store, 20).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn destroy_racing_a_writer_wins() {
            let Some(store) = $make().await else { return };
            crate::common::concurrency::destroy_racing_a_writer_wins(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cycle_racing_a_writer_wins() {
            let Some(store) = $make().await else { return };
            crate::common::concurrency::cycle_racing_a_writer_wins(store).await;
        }

        /// SECURITY.md #35 over HTTP: a logout racing a `cycle_id` ends the session
        /// under every id.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn destroy_racing_a_cycle_ends_the_session() {
            let Some(store) = $make().await else { return };
            crate::common::concurrency::destroy_racing_a_cycle_ends_the_session(store).await;
        }
    };
}

mod standalone_concurrency {
    concurrency_checks!(crate::standalone_store);
}

mod cluster_concurrency {
    concurrency_checks!(crate::cluster_store);
}

// ---------------------------------------------------------------------------
// Store-level checks, on both deployments
// ---------------------------------------------------------------------------

/// One `#[tokio::test]` per check and deployment.
macro_rules! store_checks {
    ($env:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(env) = $env().await else { return };
                crate::checks::$name(env).await;
            }
        )*
    };
}

macro_rules! all_store_checks {
    ($env:path) => {
        store_checks!($env;
            layout_is_one_hash_per_session_with_a_hash_tag,
            create_is_insert_if_absent,
            load_returns_items_and_times,
            save_applies_sets_removals_and_clear,
            save_to_a_missing_session_is_gone_and_creates_nothing,
            save_that_empties_the_session_deletes_it,
            cycle_moves_the_data_and_kills_the_old_id,
            cycle_onto_a_taken_id_is_a_collision_and_changes_nothing,
            cycle_of_a_missing_session_is_gone,
            cycle_that_empties_the_session_deletes_it,
            delete_removes_and_is_idempotent,
            ttl_follows_expires_at_and_only_moves_forward,
            touch_moves_the_expiry_forward_only,
            big_values_round_trip_byte_for_byte,
            items_named_like_the_metadata_do_not_collide,
            key_of_the_wrong_type_is_absent_and_deleted,
            unreadable_metadata_is_absent_and_deleted,
            expired_by_the_app_clock_is_absent_even_before_redis_evicts_it,
            many_items_fit_in_one_script_call,
        );
    };
}

mod standalone_store {
    all_store_checks!(crate::Env::standalone);
}

mod cluster_store {
    all_store_checks!(crate::Env::cluster);
}

mod checks {
    use super::*;

    /// The key is `{prefix}{<id>}`, a hash; items are fields stored
    /// verbatim; on a cluster the key hashes like its `{<id>}` tag.
    pub(crate) async fn layout_is_one_hash_per_session_with_a_hash_tag(env: Env) {
        let (id, _) = env.session(&[("user_id", "12345")], 60_000).await;
        let key = env.key(&id);
        assert_eq!(env.query::<String>(redis::cmd("TYPE").arg(&key)), "hash");
        let v: String = env.query(redis::cmd("HGET").arg(&key).arg("user_id"));
        assert_eq!(v, "12345");
        // Two metadata fields (created, public id) plus one item; the
        // expiry is the key's TTL.
        assert_eq!(env.query::<i64>(redis::cmd("HLEN").arg(&key)), 3);
        let public: String = env.query(redis::cmd("HGET").arg(&key).arg(&b"\xffu"[..]));
        let record = env.record(&id).await;
        assert_eq!(public, record.public_id.to_string());
        let created: u64 = env.query(redis::cmd("HGET").arg(&key).arg(&b"\xffc"[..]));
        assert_eq!(created, record.created_at.as_millis());
        let expiry: u64 = env.query(redis::cmd("PEXPIRETIME").arg(&key));
        assert_eq!(expiry, record.expires_at.as_millis());
        if let Admin::Cluster(_) = env.admin {
            let slot = |k: &str| -> i64 { env.query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(k)) };
            assert_eq!(slot(&key), slot(&format!("{{{id}}}")));
        }
    }

    pub(crate) async fn create_is_insert_if_absent(env: Env) {
        let id = new_id();
        let t = now();
        assert!(env
            .store
            .create(&id, &record(&[("a", "1")], t, t + 60_000))
            .await
            .unwrap());
        assert!(
            !env.store
                .create(&id, &record(&[("a", "2")], t, t + 60_000))
                .await
                .unwrap(),
            "a taken id is reported, never overwritten"
        );
        let r = env.record(&id).await;
        assert_eq!(r.items.get("a"), Some("1"));
    }

    pub(crate) async fn load_returns_items_and_times(env: Env) {
        let id = new_id();
        let (created, expires) = (now() - 5_000, now() + 60_000);
        let rec = record(&[("b", "2"), ("a", "1")], created, expires);
        assert!(env.store.create(&id, &rec).await.unwrap());
        let r = env.record(&id).await;
        assert_eq!(
            items_of(&r),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!((r.created_at, r.expires_at), (at(created), at(expires)));
        assert!(env
            .store
            .load(&new_id(), Timestamp::now())
            .await
            .unwrap()
            .is_none());
    }

    pub(crate) async fn save_applies_sets_removals_and_clear(env: Env) {
        let (id, exp) = env.session(&[("a", "1"), ("b", "2")], 60_000).await;
        let mut c = sets(&[("c", "3"), ("a", "one")]);
        c.remove("b");
        assert_eq!(
            env.store
                .save(&id, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let r = env.record(&id).await;
        assert_eq!(
            items_of(&r),
            [("a".into(), "one".into()), ("c".into(), "3".into())]
        );

        let mut c = ChangeSet::new();
        c.clear();
        c.set("z", "26");
        assert_eq!(
            env.store
                .save(&id, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let r2 = env.record(&id).await;
        assert_eq!(items_of(&r2), [("z".into(), "26".into())]);
        assert_eq!(r2.created_at, r.created_at, "a clear keeps the session");
        assert!(env.pttl(&id) > 0, "a clear keeps the TTL");
    }

    pub(crate) async fn save_to_a_missing_session_is_gone_and_creates_nothing(env: Env) {
        let (id, exp) = env.session(&[("a", "1")], 60_000).await;
        env.store.delete(&id).await.unwrap();
        let out = env
            .store
            .save(&id, &sets(&[("b", "2")]), Renewal::until(at(exp)))
            .await
            .unwrap();
        assert_eq!(out, SaveOutcome::Gone);
        assert!(!env.exists(&id), "a logout was undone");
        let never = new_id();
        assert_eq!(
            env.store
                .save(&never, &sets(&[("b", "2")]), Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Gone
        );
        assert!(!env.exists(&never));
    }

    pub(crate) async fn save_that_empties_the_session_deletes_it(env: Env) {
        let (id, exp) = env.session(&[("a", "1")], 60_000).await;
        let mut c = ChangeSet::new();
        c.remove("a");
        assert_eq!(
            env.store
                .save(&id, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Deleted
        );
        assert!(!env.exists(&id));

        let (id, exp) = env.session(&[("a", "1"), ("b", "2")], 60_000).await;
        let mut c = ChangeSet::new();
        c.clear();
        assert_eq!(
            env.store
                .save(&id, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Deleted
        );
        assert!(!env.exists(&id));
    }

    pub(crate) async fn cycle_moves_the_data_and_kills_the_old_id(env: Env) {
        let (old, exp) = env.session(&[("a", "1"), ("gone", "x")], 60_000).await;
        let created = env.record(&old).await.created_at;
        let new = new_id();
        let mut c = sets(&[("b", "2")]);
        c.remove("gone");
        let out = env
            .store
            .cycle(&old, &new, &c, Renewal::until(at(exp + 10_000)))
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Moved);
        assert!(env.find(&old).await.is_none());
        assert!(!env.exists(&old));
        let r = env.record(&new).await;
        assert_eq!(
            items_of(&r),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            r.created_at, created,
            "the absolute timeout still counts from creation"
        );
        assert_eq!(r.expires_at, at(exp + 10_000));
        assert!(env.pttl(&new) > 60_000);
        // A change set for the old id is dropped.
        assert_eq!(
            env.store
                .save(&old, &sets(&[("late", "1")]), Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Gone
        );
        assert!(!env.exists(&old));
    }

    pub(crate) async fn cycle_onto_a_taken_id_is_a_collision_and_changes_nothing(env: Env) {
        let (old, exp) = env.session(&[("a", "1")], 60_000).await;
        let (taken, _) = env.session(&[("z", "9")], 60_000).await;
        let before = env.record(&old).await;
        let out = env
            .store
            .cycle(
                &old,
                &taken,
                &sets(&[("b", "2")]),
                Renewal::until(at(exp + 5_000)),
            )
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Collision);
        let after = env.record(&old).await;
        assert_eq!(
            items_of(&after),
            items_of(&before),
            "the old session is unchanged"
        );
        assert_eq!(
            (after.created_at, after.expires_at),
            (before.created_at, before.expires_at)
        );
        assert!(env.pttl(&old) > 0, "the old session keeps its TTL");
        let other = env.record(&taken).await;
        assert_eq!(items_of(&other), [("z".into(), "9".into())]);
        // And a retry with a free id works.
        let new = new_id();
        let out = env
            .store
            .cycle(&old, &new, &sets(&[("b", "2")]), Renewal::until(at(exp)))
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Moved);
    }

    pub(crate) async fn cycle_of_a_missing_session_is_gone(env: Env) {
        let (old, new) = (new_id(), new_id());
        let out = env
            .store
            .cycle(
                &old,
                &new,
                &sets(&[("b", "2")]),
                Renewal::until(at(now() + 60_000)),
            )
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Gone);
        assert!(!env.exists(&old) && !env.exists(&new));
    }

    pub(crate) async fn cycle_that_empties_the_session_deletes_it(env: Env) {
        let (old, exp) = env.session(&[("a", "1")], 60_000).await;
        let new = new_id();
        let mut c = ChangeSet::new();
        c.clear();
        assert_eq!(
            env.store
                .cycle(&old, &new, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            CycleOutcome::Deleted
        );
        assert!(!env.exists(&old) && !env.exists(&new));
    }

    pub(crate) async fn delete_removes_and_is_idempotent(env: Env) {
        let (id, _) = env.session(&[("a", "1")], 60_000).await;
        env.store.delete(&id).await.unwrap();
        assert!(!env.exists(&id));
        env.store.delete(&id).await.unwrap();
        env.store.delete(&new_id()).await.unwrap();
        assert!(!env
            .store
            .touch(&id, Renewal::until(at(now() + 60_000)))
            .await
            .unwrap());
    }

    /// The key's TTL is `expires_at` (PEXPIREAT), and saves move it forward
    /// only.
    pub(crate) async fn ttl_follows_expires_at_and_only_moves_forward(env: Env) {
        let (id, exp) = env.session(&[("a", "1")], 60_000).await;
        let ttl = env.pttl(&id);
        assert!((55_000..=60_000).contains(&ttl), "PTTL {ttl}");

        let later = exp + 120_000;
        env.store
            .save(&id, &sets(&[("b", "2")]), Renewal::until(at(later)))
            .await
            .unwrap();
        let ttl = env.pttl(&id);
        assert!(
            (175_000..=180_000).contains(&ttl),
            "moved forward: PTTL {ttl}"
        );
        assert_eq!(env.record(&id).await.expires_at, at(later));

        env.store
            .save(&id, &sets(&[("c", "3")]), Renewal::until(at(exp)))
            .await
            .unwrap();
        let ttl = env.pttl(&id);
        assert!(
            (175_000..=180_000).contains(&ttl),
            "never backward: PTTL {ttl}"
        );
        assert_eq!(env.record(&id).await.expires_at, at(later));
    }

    pub(crate) async fn touch_moves_the_expiry_forward_only(env: Env) {
        let (id, exp) = env.session(&[("a", "1")], 60_000).await;
        assert!(env
            .store
            .touch(&id, Renewal::until(at(exp + 100_000)))
            .await
            .unwrap());
        assert_eq!(env.record(&id).await.expires_at, at(exp + 100_000));
        assert!(env.pttl(&id) > 150_000);
        assert!(
            env.store.touch(&id, Renewal::until(at(exp))).await.unwrap(),
            "alive, not moved back"
        );
        assert_eq!(env.record(&id).await.expires_at, at(exp + 100_000));
        assert!(env.pttl(&id) > 150_000);
        assert!(!env
            .store
            .touch(&new_id(), Renewal::until(at(exp)))
            .await
            .unwrap());
    }

    /// A 6 KB token (a JWT's alphabet), non-ASCII text, and names with
    /// Redis-significant characters come back byte for byte.
    pub(crate) async fn big_values_round_trip_byte_for_byte(env: Env) {
        let seg = |n: usize, salt: u8| -> String {
            const B64URL: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            (0..n)
                .map(|i| B64URL[(i * 7 + salt as usize) % 64] as char)
                .collect()
        };
        let jwt = format!("{}.{}.{}", seg(36, 1), seg(5_900, 2), seg(342, 3));
        assert!(jwt.len() > 6_000);
        let text = "naïve café ✓ 日本語 \u{1F600} \"quoted\" \\ \r\n\t end";
        let items = [
            ("id_token", jwt.as_str()),
            ("text", text),
            ("{braces}", "x"),
            ("with space:and:colons", "y"),
            ("", "empty name"),
        ];
        let (id, exp) = env.session(&items, 60_000).await;
        let r = env.record(&id).await;
        assert_eq!(r.items.get("id_token"), Some(jwt.as_str()));
        assert_eq!(r.items.get("text"), Some(text));
        assert_eq!(r.items.get("{braces}"), Some("x"));
        assert_eq!(r.items.get("with space:and:colons"), Some("y"));
        assert_eq!(r.items.get(""), Some("empty name"));
        // Verbatim in Redis too.
        let raw: Vec<u8> = env.query(redis::cmd("HGET").arg(env.key(&id)).arg("id_token"));
        assert_eq!(raw, jwt.as_bytes());
        // And through a save.
        let jwt2 = jwt.replace('A', "B");
        env.store
            .save(
                &id,
                &sets(&[("access_token", &jwt2)]),
                Renewal::until(at(exp)),
            )
            .await
            .unwrap();
        let r = env.record(&id).await;
        assert_eq!(r.items.get("access_token"), Some(jwt2.as_str()));
    }

    /// Items may be named like the metadata fields (in any spelling that is
    /// a Rust string); they neither clobber nor shadow the metadata.
    pub(crate) async fn items_named_like_the_metadata_do_not_collide(env: Env) {
        let names = [
            "created_at",
            "expires_at",
            "\u{ff}created_at",
            "\u{ff}expires_at",
            "\u{fffd}created_at",
        ];
        let items: Vec<(&str, &str)> = names.iter().map(|n| (*n, "0")).collect();
        let t = now();
        let id = new_id();
        assert!(env
            .store
            .create(&id, &record(&items, t - 1_000, t + 60_000))
            .await
            .unwrap());
        let r = env.record(&id).await;
        assert_eq!(r.items.len(), names.len());
        assert_eq!(
            (r.created_at, r.expires_at),
            (at(t - 1_000), at(t + 60_000))
        );
        let c = sets(&items.iter().map(|(k, _)| (*k, "junk")).collect::<Vec<_>>());
        env.store
            .save(&id, &c, Renewal::until(at(t + 60_000)))
            .await
            .unwrap();
        let r = env.record(&id).await;
        assert!(r.items.iter().all(|(_, v)| v == "junk"));
        assert_eq!(
            (r.created_at, r.expires_at),
            (at(t - 1_000), at(t + 60_000))
        );
    }

    /// SECURITY.md #22: a key of another type under a session's name reads as no
    /// session, and is removed; no operation on it fails or panics.
    pub(crate) async fn key_of_the_wrong_type_is_absent_and_deleted(env: Env) {
        let id = new_id();
        let key = env.key(&id);
        let _: () = env.query(redis::cmd("SET").arg(&key).arg("not a hash"));
        assert!(env.find(&id).await.is_none());
        assert!(!env.exists(&id), "the corrupted key is deleted");

        let exp = now() + 60_000;
        for op in 0..3 {
            let _: i64 = env.query(redis::cmd("RPUSH").arg(&key).arg("x").arg("y"));
            match op {
                0 => assert_eq!(
                    env.store
                        .save(&id, &sets(&[("a", "1")]), Renewal::until(at(exp)))
                        .await
                        .unwrap(),
                    SaveOutcome::Gone
                ),
                1 => assert!(!env.store.touch(&id, Renewal::until(at(exp))).await.unwrap()),
                _ => assert_eq!(
                    env.store
                        .cycle(
                            &id,
                            &new_id(),
                            &sets(&[("a", "1")]),
                            Renewal::until(at(exp))
                        )
                        .await
                        .unwrap(),
                    CycleOutcome::Gone
                ),
            }
            assert!(!env.exists(&id), "op {op}: the corrupted key is deleted");
        }
    }

    /// SECURITY.md #22: a hash with garbage or missing metadata, or an item that is
    /// not UTF-8, reads as no session and is removed (each has a TTL, so the
    /// metadata is what makes it corrupt), in either layout.
    pub(crate) async fn unreadable_metadata_is_absent_and_deleted(env: Env) {
        let bad: [&[(&[u8], &[u8])]; 5] = [
            &[
                (b"\xffc", b"garbage"),
                (b"\xffu", b"0123456789abcdef0123456789abcdef"),
                (b"a", b"1"),
            ],
            &[
                (b"\xffcreated_at", b"garbage"),
                (b"\xffexpires_at", b"99999999999999"),
                (b"a", b"1"),
            ],
            &[(b"\xffexpires_at", b"99999999999999"), (b"a", b"1")],
            &[(b"a", b"1")],
            &[
                (b"\xffcreated_at", b"1"),
                (b"\xffexpires_at", b"99999999999999"),
                (b"a", b"\xff\xfe"),
            ],
        ];
        for (i, fields) in bad.iter().enumerate() {
            let id = new_id();
            let mut hset = redis::cmd("HSET");
            hset.arg(env.key(&id));
            for (k, v) in *fields {
                hset.arg(*k).arg(*v);
            }
            let _: i64 = env.query(&hset);
            let _: i64 = env.query(redis::cmd("PEXPIRE").arg(env.key(&id)).arg(60_000));
            assert!(env.find(&id).await.is_none(), "case {i}");
            assert!(!env.exists(&id), "case {i}: deleted");
        }
        // Scripts treat bad metadata the same way.
        let id = new_id();
        let _: i64 = env.query(
            redis::cmd("HSET")
                .arg(env.key(&id))
                .arg(&b"\xffexpires_at"[..])
                .arg("soon")
                .arg("a")
                .arg("1"),
        );
        let _: i64 = env.query(redis::cmd("PEXPIRE").arg(env.key(&id)).arg(60_000));
        assert_eq!(
            env.store
                .save(
                    &id,
                    &sets(&[("b", "2")]),
                    Renewal::until(at(now() + 60_000))
                )
                .await
                .unwrap(),
            SaveOutcome::Gone
        );
        assert!(!env.exists(&id));
    }

    /// A session whose `expires_at` has passed by the app's clock is gone
    /// even while Redis still holds the key (clock skew, a key without TTL).
    pub(crate) async fn expired_by_the_app_clock_is_absent_even_before_redis_evicts_it(env: Env) {
        let past = (now() - 1_000).to_string();
        let plant = |id: &SessionId| {
            let _: i64 = env.query(
                redis::cmd("HSET")
                    .arg(env.key(id))
                    .arg(&b"\xffcreated_at"[..])
                    .arg("1")
                    .arg(&b"\xffexpires_at"[..])
                    .arg(&past)
                    .arg(&b"\xffpublic_id"[..])
                    .arg(tower_session_storage::PublicId::generate().to_string())
                    .arg("a")
                    .arg("1"),
            );
        };
        let id = new_id();
        plant(&id);
        assert!(env.find(&id).await.is_none());
        let exp = now() + 60_000;
        assert_eq!(
            env.store
                .save(&id, &sets(&[("b", "2")]), Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Gone,
            "an expired session is not revived by a save"
        );
        assert!(!env.exists(&id));
        plant(&id);
        assert!(!env.store.touch(&id, Renewal::until(at(exp))).await.unwrap());
        plant(&id);
        assert_eq!(
            env.store
                .cycle(&id, &new_id(), &ChangeSet::new(), Renewal::until(at(exp)))
                .await
                .unwrap(),
            CycleOutcome::Gone
        );
    }

    /// More items than one Lua `unpack` chunk, through create, save, cycle.
    pub(crate) async fn many_items_fit_in_one_script_call(env: Env) {
        let names: Vec<String> = (0..1000).map(|i| format!("k{i:04}")).collect();
        let items: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let (id, exp) = env.session(&items, 60_000).await;
        let mut c = ChangeSet::new();
        for n in &names[..500] {
            c.remove(n);
        }
        for i in 1000..1700 {
            c.set(&format!("k{i:04}"), "w");
        }
        assert_eq!(
            env.store
                .save(&id, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        let new = new_id();
        assert_eq!(
            env.store
                .cycle(&id, &new, &c, Renewal::until(at(exp)))
                .await
                .unwrap(),
            CycleOutcome::Moved
        );
        let r = env.record(&new).await;
        assert_eq!(r.items.len(), 1200);
        assert_eq!(r.items.get("k0499"), None);
        assert_eq!(r.items.get("k0500"), Some("v"));
        assert_eq!(r.items.get("k1699"), Some("w"));
    }
}

// ---------------------------------------------------------------------------
// Apps sharing one Redis; failures; round trips; latency
// ---------------------------------------------------------------------------

/// The script app (tests/common) behind a `RedisStore` of its own
/// connection, as a separate app instance would have.
async fn instance(url: &str, prefix: &str) -> TestServer {
    let store = RedisStore::connect(url)
        .await
        .unwrap()
        .with_key_prefix(prefix);
    serve_script(dev_layer(store)).await
}

/// Two app instances on two ports sharing one Redis: a session made through
/// one is read, changed, cycled and destroyed through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let prefix = unique_prefix();
    let a = instance(&server.url(), &prefix).await;
    let b = instance(&server.url(), &prefix).await;

    let id = a.raw("set=user:alice", None).await.new_id().unwrap();
    assert_eq!(
        b.raw("get=user&id", Some(&cookie(&id))).await.ok(),
        format!("alice,{id}")
    );
    assert_eq!(b.raw("set=theme:dark", Some(&cookie(&id))).await.ok(), "");
    assert_eq!(
        a.raw("get=user&get=theme", Some(&cookie(&id))).await.ok(),
        "alice,dark"
    );

    let new = b.raw("cycle", Some(&cookie(&id))).await.new_id().unwrap();
    assert_ne!(new, id);
    assert_eq!(
        a.raw("get=user", Some(&cookie(&id))).await.ok(),
        "-",
        "old id dead on A"
    );
    assert_eq!(a.raw("get=user", Some(&cookie(&new))).await.ok(), "alice");

    assert!(a.raw("destroy", Some(&cookie(&new))).await.expires_cookie());
    assert_eq!(
        b.raw("get=user", Some(&cookie(&new))).await.ok(),
        "-",
        "logout seen by B"
    );
}

/// 50 concurrent requests writing distinct keys into one session, spread
/// over two instances: all 50 writes are there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writes_over_two_instances_all_survive() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let prefix = unique_prefix();
    let a = Arc::new(instance(&server.url(), &prefix).await);
    let b = Arc::new(instance(&server.url(), &prefix).await);
    let id = a.raw("set=base:1", None).await.new_id().unwrap();

    let mut tasks = Vec::new();
    for i in 0..50 {
        let srv = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = cookie(&id);
        tasks.push(tokio::spawn(async move {
            srv.raw(&format!("set=k{i}:v{i}"), Some(&c)).await
        }));
    }
    for t in tasks {
        let r = guard(t).await.unwrap();
        assert_eq!(r.ok(), "");
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }
    let script: Vec<String> = (0..50).map(|i| format!("get=k{i}")).collect();
    let want: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    for srv in [&a, &b] {
        let r = srv.raw(&script.join("&"), Some(&cookie(&id))).await;
        assert_eq!(r.ok(), want.join(","), "a concurrent write was lost");
    }
}

/// SECURITY.md #21 and recovery: with Redis killed mid-run, requests carrying a valid
/// cookie get 503 (never 200 with an empty session); after Redis restarts
/// (AOF on, same port and directory), the same session is readable again
/// through the same `RedisStore`, with no app restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_and_the_session_is_back_after_restart() {
    if !redis_support::available() {
        return;
    }
    let mut server = Redis::start_durable();
    let srv = instance(&server.url(), "session:").await;
    let id = srv.raw("set=user:alice", None).await.new_id().unwrap();
    let c = cookie(&id);
    assert_eq!(srv.raw("get=user", Some(&c)).await.ok(), "alice");

    server.crash();
    for script in ["get=user", "set=more:1", "cycle", "destroy"] {
        let started = Instant::now();
        let r = srv.raw(script, Some(&c)).await;
        assert_eq!(r.status, 503, "{script}: {r:?}");
        assert!(
            r.set_cookies().is_empty(),
            "{script}: no cookie change: {r:?}"
        );
        let took = started.elapsed();
        eprintln!("{script} with Redis down: 503 after {took:?}");
        assert!(
            took < Duration::from_secs(10),
            "{script}: failing took {took:?} (fail fast, never hang)"
        );
    }
    // A request without a cookie does not touch the store: still served.
    assert_eq!(srv.raw("get=user", None).await.ok(), "-");

    server.restart();
    let started = Instant::now();
    let mut failures = 0;
    loop {
        let r = srv.raw("get=user&id", Some(&c)).await;
        if r.status == 200 {
            assert_eq!(
                r.body,
                format!("alice,{id}"),
                "the same session, from the AOF"
            );
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        failures += 1;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still failing after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "recovered {:?} after the restart, after {failures} failed request(s)",
        started.elapsed()
    );
    assert!(
        failures <= 1,
        "{failures} requests failed after Redis was back"
    );
    // Writes work again too.
    assert_eq!(srv.raw("set=more:1&get=more", Some(&c)).await.ok(), "1");
}

/// SECURITY.md #21 on Redis Cluster: with the cluster gone, a request carrying a
/// valid cookie gets 503 within the command timeout, never an empty session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_down_is_503() {
    if !redis_support::available() {
        return;
    }
    let mut cluster = Cluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls())
        .await
        .unwrap()
        .with_command_timeout(Duration::from_millis(500));
    let srv = serve_script(dev_layer(store)).await;
    let c = cookie(&srv.raw("set=user:alice", None).await.new_id().unwrap());
    assert_eq!(srv.raw("get=user", Some(&c)).await.ok(), "alice");

    cluster.crash();
    for script in ["get=user", "set=more:1"] {
        let started = Instant::now();
        let r = srv.raw(script, Some(&c)).await;
        assert_eq!(r.status, 503, "{script}: {r:?}");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fail fast, never hang: {:?}",
            started.elapsed()
        );
    }
}

/// A Redis that hangs (SIGSTOP) cannot hang requests: each gets a 503 after
/// the command timeout; once it runs again, requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_is_503_after_the_command_timeout() {
    if !redis_support::available() {
        return;
    }
    let server = Redis::start();
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_command_timeout(Duration::from_millis(300));
    let srv = serve_script(dev_layer(store)).await;
    let c = cookie(&srv.raw("set=user:alice", None).await.new_id().unwrap());

    server.freeze();
    let started = Instant::now();
    let r = srv.raw("get=user", Some(&c)).await;
    let took = started.elapsed();
    server.thaw();
    assert_eq!(r.status, 503, "{r:?}");
    // Bounded by the command timeout, not by Redis: a frozen server would
    // otherwise hold the request for ever. The upper bound is loose so a
    // loaded CI machine cannot trip it.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );
    let mut ok = false;
    for _ in 0..20 {
        let r = srv.raw("get=user", Some(&c)).await;
        if r.status == 200 {
            assert_eq!(r.body, "alice");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "requests kept failing after Redis ran again");
}

/// Store-level failures are `Unavailable` errors, never a panic or an empty
/// session: a server that is gone, and `connect` to a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_an_unavailable_error() {
    if !redis_support::available() {
        return;
    }
    let mut server = Redis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let id = new_id();
    let t = now();
    assert!(store
        .create(&id, &record(&[("a", "1")], t, t + 60_000))
        .await
        .unwrap());
    server.crash();
    let e = store.load(&id, Timestamp::now()).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
    let e = store
        .save(&id, &sets(&[("b", "2")]), Renewal::until(at(t + 60_000)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");

    let port = server.port();
    drop(server);
    let e = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
    let e = RedisStore::connect("not a url").await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Other, "{e}");
}

/// Round trips per request, counted by a proxy between the store and Redis:
/// a request that only reads costs 1 (`HGETALL` and `PEXPIRETIME` in one
/// pipeline); one that writes costs at most 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_request() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let proxy = CountingProxy::start(server.port()).await;
    let srv = instance(&proxy.url(), &unique_prefix()).await;
    let cost = |script: &'static str, cookie: Option<String>| {
        let (srv, proxy) = (&srv, &proxy);
        async move {
            let before = proxy.round_trips();
            let r = srv.raw(script, cookie.as_deref()).await;
            assert_eq!(r.status, 200, "{script}: {r:?}");
            (proxy.round_trips() - before, r)
        }
    };

    let (n, _) = cost("get=a", None).await;
    assert_eq!(n, 0, "no cookie: no store access");
    let (n, r) = cost("set=a:1", None).await;
    assert_eq!(n, 1, "a new session: create only");
    let c = cookie(&r.new_id().unwrap());
    let (n, _) = cost("get=a", Some(c.clone())).await;
    assert_eq!(n, 1, "a read: load only");
    let (n, _) = cost("get=a&set=b:2&set=c:3&remove=a", Some(c.clone())).await;
    assert_eq!(n, 2, "a write: load + save");
    let (n, r) = cost("set=d:4&cycle", Some(c.clone())).await;
    assert_eq!(n, 2, "a cycle: load + cycle");
    let c = cookie(&r.new_id().unwrap());
    let (n, _) = cost("get=b", Some(cookie(&new_id().to_string()))).await;
    assert_eq!(n, 1, "an unknown id: one load");
    let (n, _) = cost("destroy", Some(c)).await;
    assert_eq!(n, 2, "a destroy: load + delete");
}

/// The same on Redis Cluster, from `INFO commandstats` summed over the
/// nodes of a cluster of its own: a read costs one `HGETALL`; a write one
/// `HGETALL` and one `EVALSHA` (never a fallback `EVAL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_request_on_a_cluster() {
    if !redis_support::available() {
        return;
    }
    let cluster = Cluster::start();
    let calls = |cmd: &str| -> u64 {
        let needle = format!("cmdstat_{cmd}:calls=");
        cluster
            .nodes()
            .iter()
            .map(|n| {
                n.info("commandstats")
                    .lines()
                    .find_map(|l| l.strip_prefix(&needle))
                    .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
            })
            .sum()
    };
    let snapshot = || (calls("hgetall"), calls("evalsha"), calls("eval"));
    let store = RedisStore::connect_cluster(&cluster.urls()).await.unwrap();
    let srv = serve_script(dev_layer(store)).await;
    let c = cookie(&srv.raw("set=a:1", None).await.new_id().unwrap());

    let before = snapshot();
    assert_eq!(srv.raw("get=a", Some(&c)).await.ok(), "1");
    let after = snapshot();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (1, 0, 0),
        "a read"
    );
    let before = after;
    assert_eq!(srv.raw("set=b:2&set=a:", Some(&c)).await.ok(), "");
    let after = snapshot();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (1, 1, 0),
        "a write"
    );
}

/// Latency Redis adds per request on loopback: 2000 sequential reads of a
/// session through the same axum app, MemoryStore vs RedisStore. Prints the
/// medians; asserts only that every request succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_added_by_redis_on_loopback() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    const N: usize = 2000;
    async fn measure<S: SessionStore>(layer: SessionLayer<S>) -> Vec<Duration> {
        let srv = serve_script(layer).await;
        let client = raw_client();
        let c = cookie(&srv.raw("set=a:1", None).await.new_id().unwrap());
        let url = srv.url("/s?get=a");
        let mut times = Vec::with_capacity(N);
        for i in 0..N + 100 {
            let started = Instant::now();
            let r = send(client.get(&url).header("cookie", &c)).await;
            let took = started.elapsed();
            assert_eq!(r.ok(), "1");
            if i >= 100 {
                times.push(took); // the first 100 warm up
            }
        }
        times.sort();
        times
    }
    let pct = |t: &[Duration], p: usize| t[(t.len() * p / 100).min(t.len() - 1)];
    let memory = measure(dev_layer(MemoryStore::new())).await;
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_key_prefix(unique_prefix());
    let redis = measure(dev_layer(store)).await;
    eprintln!(
        "latency per read request over {N} sequential requests:\n  \
         MemoryStore p50 {:?} p90 {:?} p99 {:?}\n  \
         RedisStore  p50 {:?} p90 {:?} p99 {:?}\n  \
         added by Redis at p50: {:?}",
        pct(&memory, 50),
        pct(&memory, 90),
        pct(&memory, 99),
        pct(&redis, 50),
        pct(&redis, 90),
        pct(&redis, 99),
        pct(&redis, 50).saturating_sub(pct(&memory, 50)),
    );
}

/// A RESP3 connection (`?protocol=resp3`: replies as maps) reads and
/// writes the same sessions as a RESP2 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_connections_work_the_same() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let prefix = unique_prefix();
    let resp2 = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_key_prefix(prefix.clone());
    let resp3 = RedisStore::connect(&format!("{}/?protocol=resp3", server.url()))
        .await
        .unwrap()
        .with_key_prefix(prefix);
    let (id, t) = (new_id(), now());
    assert!(resp3
        .create(&id, &record(&[("a", "1")], t, t + 60_000))
        .await
        .unwrap());
    let r = resp2.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(items_of(&r), [("a".into(), "1".into())]);
    resp2
        .save(&id, &sets(&[("b", "2")]), Renewal::until(at(t + 60_000)))
        .await
        .unwrap();
    let r = resp3.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(
        items_of(&r),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!((r.created_at, r.expires_at), (at(t), at(t + 60_000)));
    assert!(resp3
        .touch(&id, Renewal::until(at(t + 90_000)))
        .await
        .unwrap());
    let new = new_id();
    assert_eq!(
        resp3
            .cycle(&id, &new, &ChangeSet::new(), Renewal::until(at(t + 90_000)))
            .await
            .unwrap(),
        CycleOutcome::Moved
    );
    assert!(resp3.load(&id, Timestamp::now()).await.unwrap().is_none());
    assert_eq!(
        resp2
            .load(&new, Timestamp::now())
            .await
            .unwrap()
            .unwrap()
            .items
            .len(),
        2
    );
}

/// `examples/redis.rs`: two instances, one cookie jar (cookies are not
/// port-specific, as with the curl commands the example prints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_shares_sessions_between_its_two_instances() {
    let Some(server) = redis_support::shared() else {
        return;
    };
    let prefix = unique_prefix();
    let store = || async {
        RedisStore::connect(&server.url())
            .await
            .unwrap()
            .with_key_prefix(prefix.clone())
    };
    let a = TestServer::start(redis_example::app("A", store().await)).await;
    let b = TestServer::start(redis_example::app("B", store().await)).await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let get = |url: String| {
        let browser = browser.clone();
        async move { send(browser.get(url)).await.ok().to_owned() }
    };
    assert!(get(a.url("/")).await.starts_with("instance A: visits: 1\n"));
    assert!(get(b.url("/")).await.starts_with("instance B: visits: 2\n"));
    assert!(get(a.url("/sign-in?user=alice"))
        .await
        .contains("signed in as: alice"));
    assert_eq!(get(b.url("/me")).await, "instance B: signed in as: alice\n");
    assert!(get(b.url("/")).await.starts_with("instance B: visits: 3\n"));
    assert!(get(b.url("/sign-out")).await.contains("signed out"));
    assert_eq!(get(a.url("/me")).await, "instance A: not signed in\n");
}

/// `with_key_prefix` refuses braces, which would defeat the hash tag.
#[test]
#[should_panic(expected = "brace")]
fn key_prefix_with_braces_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Building the store needs no server: a lazy connection manager.
    let store = rt.block_on(async {
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let manager = redis::aio::ConnectionManager::new_lazy_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new(),
        )
        .unwrap();
        RedisStore::from_connection_manager(manager)
    });
    let _ = store.with_key_prefix("app:{x}:");
}
