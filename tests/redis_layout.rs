//! `RedisStore`'s compact session layout, against real `redis-server`
//! processes, standalone and Cluster: sessions stored by earlier versions
//! (the old layout) still load and are converted by their next write, a
//! key without a TTL is corrupt, unknown metadata fields are ignored, and
//! the fast write (item sets only) keeps every guarantee of the full one
//! under adversarial interleavings.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::collections::HashMap;
use std::time::Duration;

use redis_support::fixtures::{at, new_id, now, record, sets, Env};
use tower_session_storage::store::{ChangeSet, CycleOutcome, Renewal, SaveOutcome, Timestamp};
use tower_session_storage::{PublicId, SessionId, SessionStore};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

impl Env {
    /// The session's hash as Redis holds it, field by field (raw bytes).
    fn raw(&self, id: &SessionId) -> HashMap<Vec<u8>, Vec<u8>> {
        self.query(redis::cmd("HGETALL").arg(self.key(id)))
    }

    fn expiry(&self, id: &SessionId) -> i64 {
        self.query(redis::cmd("PEXPIRETIME").arg(self.key(id)))
    }

    /// Writes a session the way versions before the compact layout did:
    /// `\xffcreated_at`, `\xffexpires_at` and `\xffpublic_id` beside the
    /// items, an idle timeout of its own, and the TTL at the expiry.
    fn plant_old(&self, id: &SessionId, created: u64, expires: u64, pid: &PublicId) {
        let key = self.key(id);
        let _: i64 = self.query(
            redis::cmd("HSET")
                .arg(&key)
                .arg(&b"\xffcreated_at"[..])
                .arg(created.to_string())
                .arg(&b"\xffexpires_at"[..])
                .arg(expires.to_string())
                .arg(&b"\xffpublic_id"[..])
                .arg(pid.to_string())
                .arg(&b"\xffi"[..])
                .arg("90000")
                .arg("user_id")
                .arg("12345")
                .arg("csrf")
                .arg("0123456789abcdef0123456789abcdef"),
        );
        let _: i64 = self.query(redis::cmd("PEXPIREAT").arg(&key).arg(expires));
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
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
    the_layout_is_compact_and_the_ttl_carries_the_expiry,
    an_old_layout_session_loads_and_every_write_converts_it,
    an_old_layout_session_can_be_ended,
    a_key_without_a_ttl_is_corrupt,
    unknown_metadata_fields_are_ignored,
    fast_writes_never_revive_adopt_or_lose,
    fast_writes_racing_logout_and_cycle_never_undo_them,
    a_fast_write_past_a_linked_sessions_horizon_indexes_first,
);

mod checks {
    use super::*;

    /// Two metadata fields of two-byte names, no expiry field, the TTL at
    /// the session's expiry; a fast write moves the TTL forward only.
    pub(crate) async fn the_layout_is_compact_and_the_ttl_carries_the_expiry(env: Env) {
        let id = new_id();
        let r = record(&[("user_id", "12345")], 60_000);
        assert!(env.store.create(&id, &r).await.unwrap());
        let raw = env.raw(&id);
        let mut names: Vec<&[u8]> = raw.keys().map(Vec::as_slice).collect();
        names.sort();
        assert_eq!(names, [&b"user_id"[..], b"\xffc", b"\xffu"]);
        assert_eq!(raw[&b"\xffu"[..]], b(&r.public_id.to_string()));
        assert_eq!(env.expiry(&id), r.expires_at.as_millis() as i64);
        let encoding: String = env.query(redis::cmd("OBJECT").arg("ENCODING").arg(env.key(&id)));
        assert_eq!(encoding, "listpack");

        let later = r.expires_at.as_millis() + 30_000;
        let out = env
            .store
            .save(&id, &sets(&[("a", "1")]), Renewal::until(at(later)))
            .await
            .unwrap();
        assert_eq!(out, SaveOutcome::Saved);
        assert_eq!(env.expiry(&id), later as i64);
        // An earlier expiry (a request that started before) leaves it.
        let out = env
            .store
            .save(
                &id,
                &sets(&[("b", "2")]),
                Renewal::until(at(later - 10_000)),
            )
            .await
            .unwrap();
        assert_eq!(out, SaveOutcome::Saved);
        assert_eq!(env.expiry(&id), later as i64);
        let back = env.record(&id).await;
        assert_eq!(back.expires_at.as_millis(), later);
        assert_eq!(back.items.len(), 3);
    }

    /// A session in the old layout loads with everything it held (the
    /// expiry from its TTL), and each kind of write converts it: the old
    /// fields are gone, the new ones hold the same values, items and
    /// lifetime settings kept.
    pub(crate) async fn an_old_layout_session_loads_and_every_write_converts_it(env: Env) {
        for write in ["fast save", "full save", "touch", "cycle"] {
            let (id, pid) = (new_id(), PublicId::generate());
            let created = now() - 5_000;
            let expires = now() + 60_000;
            env.plant_old(&id, created, expires, &pid);

            let r = env.record(&id).await;
            assert_eq!(r.public_id, pid, "{write}");
            assert_eq!(r.created_at.as_millis(), created, "{write}");
            assert_eq!(r.expires_at.as_millis(), expires, "{write}");
            assert_eq!(r.meta.idle_timeout(), Some(Duration::from_secs(90)));
            assert_eq!(r.items.get("user_id"), Some("12345"), "{write}");
            assert_eq!(r.items.len(), 2, "{write}: metadata is not items");

            let later = at(expires + 10_000);
            let mut now_at = id;
            match write {
                "fast save" => {
                    let out = env
                        .store
                        .save(&id, &sets(&[("csrf", "new")]), Renewal::until(later));
                    assert_eq!(out.await.unwrap(), SaveOutcome::Saved);
                }
                "full save" => {
                    let mut c = sets(&[("csrf", "new")]);
                    c.remove("nothing");
                    let out = env.store.save(&id, &c, Renewal::until(later));
                    assert_eq!(out.await.unwrap(), SaveOutcome::Saved);
                }
                "touch" => assert!(env.store.touch(&id, Renewal::until(later)).await.unwrap()),
                _ => {
                    now_at = new_id();
                    let out = env.store.cycle(
                        &id,
                        &now_at,
                        &sets(&[("csrf", "new")]),
                        Renewal::until(later),
                    );
                    assert_eq!(out.await.unwrap(), CycleOutcome::Moved);
                    assert!(!env.exists(&id));
                }
            }
            let raw = env.raw(&now_at);
            for old in [&b"\xffcreated_at"[..], b"\xffexpires_at", b"\xffpublic_id"] {
                assert!(!raw.contains_key(old), "{write}: {old:?} left");
            }
            assert_eq!(raw[&b"\xffc"[..]], b(&created.to_string()), "{write}");
            assert_eq!(raw[&b"\xffu"[..]], b(&pid.to_string()), "{write}");
            assert_eq!(raw[&b"\xffi"[..]], b("90000"), "{write}");
            assert_eq!(raw[&b"user_id"[..]], b("12345"), "{write}");
            assert_eq!(env.expiry(&now_at), later.as_millis() as i64, "{write}");
            let r = env.record(&now_at).await;
            assert_eq!((r.public_id, r.created_at.as_millis()), (pid, created));
            assert_eq!(r.meta.idle_timeout(), Some(Duration::from_secs(90)));
            let csrf = if write == "touch" {
                "0123456789abcdef0123456789abcdef"
            } else {
                "new"
            };
            assert_eq!(r.items.get("csrf"), Some(csrf), "{write}");
        }
    }

    /// A logout of a session still in the old layout ends it.
    pub(crate) async fn an_old_layout_session_can_be_ended(env: Env) {
        let (id, pid) = (new_id(), PublicId::generate());
        env.plant_old(&id, now(), now() + 60_000, &pid);
        env.store.end(&id, &pid).await.unwrap();
        assert!(!env.exists(&id));
        assert!(env.find(&id).await.is_none());
    }

    /// A hash holding a session's fields but no TTL was not written by
    /// the store: corrupt, so absent and deleted, for load and for writes.
    pub(crate) async fn a_key_without_a_ttl_is_corrupt(env: Env) {
        let plant = |id: &SessionId| {
            let _: i64 = env.query(
                redis::cmd("HSET")
                    .arg(env.key(id))
                    .arg(&b"\xffc"[..])
                    .arg(now().to_string())
                    .arg(&b"\xffu"[..])
                    .arg(PublicId::generate().to_string())
                    .arg("a")
                    .arg("1"),
            );
        };
        let id = new_id();
        plant(&id);
        assert!(env.find(&id).await.is_none());
        assert!(!env.exists(&id), "deleted by load");
        let exp = at(now() + 60_000);
        let mut removal = sets(&[("b", "2")]);
        removal.remove("a");
        for c in [sets(&[("b", "2")]), removal] {
            plant(&id);
            let out = env.store.save(&id, &c, Renewal::until(exp)).await.unwrap();
            assert_eq!(out, SaveOutcome::Gone);
            assert!(!env.exists(&id), "deleted by the write");
        }
        plant(&id);
        assert!(!env.store.touch(&id, Renewal::until(exp)).await.unwrap());
        assert!(!env.exists(&id), "deleted by touch");
    }

    /// A metadata field this version does not know (a later version's) is
    /// neither an item nor corruption.
    pub(crate) async fn unknown_metadata_fields_are_ignored(env: Env) {
        let id = new_id();
        assert!(env
            .store
            .create(&id, &record(&[("a", "1")], 60_000))
            .await
            .unwrap());
        let _: i64 = env.query(
            redis::cmd("HSET")
                .arg(env.key(&id))
                .arg(&b"\xffzz"[..])
                .arg(&b"\x00\xfe"[..]),
        );
        let r = env.record(&id).await;
        assert_eq!(r.items.len(), 1);
        let exp = at(now() + 60_000);
        let out = env
            .store
            .save(&id, &sets(&[("b", "2")]), Renewal::until(exp));
        assert_eq!(out.await.unwrap(), SaveOutcome::Saved);
        let r = env.record(&id).await;
        assert_eq!(r.items.len(), 2);
    }

    /// The fast write on an unknown id, an ended session and an expired
    /// one writes nothing; concurrent fast writes to one session all land.
    pub(crate) async fn fast_writes_never_revive_adopt_or_lose(env: Env) {
        let exp = at(now() + 60_000);
        let unknown = new_id();
        let out = env
            .store
            .save(&unknown, &sets(&[("a", "1")]), Renewal::until(exp));
        assert_eq!(out.await.unwrap(), SaveOutcome::Gone);
        assert!(!env.exists(&unknown), "an unknown id is never adopted");

        let id = new_id();
        let r = record(&[("a", "1")], 60_000);
        assert!(env.store.create(&id, &r).await.unwrap());
        env.store.end(&id, &r.public_id).await.unwrap();
        let out = env
            .store
            .save(&id, &sets(&[("a", "2")]), Renewal::until(exp));
        assert_eq!(out.await.unwrap(), SaveOutcome::Gone);
        assert!(!env.exists(&id), "an ended session is never revived");

        // Expired by the app's clock while Redis still holds the key.
        let id = new_id();
        assert!(env
            .store
            .create(&id, &record(&[("a", "1")], 60_000))
            .await
            .unwrap());
        let late = Renewal {
            now: at(now() + 120_000),
            expires_at: at(now() + 180_000),
        };
        let out = env.store.save(&id, &sets(&[("a", "2")]), late);
        assert_eq!(out.await.unwrap(), SaveOutcome::Gone);
        assert!(!env.exists(&id), "an expired session is never revived");

        let id = new_id();
        assert!(env
            .store
            .create(&id, &record(&[("a", "1")], 60_000))
            .await
            .unwrap());
        let writes = (0..32).map(|i| {
            let store = env.store.clone();
            tokio::spawn(async move {
                let c = sets(&[(&format!("k{i}"), "v"), ("shared", &i.to_string())]);
                store.save(&id, &c, Renewal::until(exp)).await.unwrap()
            })
        });
        for w in writes.collect::<Vec<_>>() {
            assert_eq!(w.await.unwrap(), SaveOutcome::Saved);
        }
        let r = env.record(&id).await;
        for i in 0..32 {
            assert_eq!(r.items.get(&format!("k{i}")), Some("v"), "write {i} lost");
        }
    }

    /// Fast writes racing a logout and a `cycle_id`, many times: whatever
    /// the order, once the logout returned nothing is left alive, under
    /// the old id or the new, and no key is left without a TTL.
    pub(crate) async fn fast_writes_racing_logout_and_cycle_never_undo_them(env: Env) {
        for round in 0..40 {
            let (id, new) = (new_id(), new_id());
            let r = record(&[("a", "1")], 60_000);
            assert!(env.store.create(&id, &r).await.unwrap());
            let exp = at(now() + 90_000);
            let saves: Vec<_> = (0..4)
                .map(|i| {
                    let store = env.store.clone();
                    tokio::spawn(async move {
                        let c = sets(&[("n", &i.to_string())]);
                        store.save(&id, &c, Renewal::until(exp)).await.unwrap()
                    })
                })
                .collect();
            let cycle = {
                let store = env.store.clone();
                tokio::spawn(async move {
                    store
                        .cycle(&id, &new, &ChangeSet::new(), Renewal::until(exp))
                        .await
                        .unwrap()
                })
            };
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
            env.store.end(&id, &r.public_id).await.unwrap();
            for s in saves {
                s.await.unwrap();
            }
            let cycled = cycle.await.unwrap();
            for (what, k) in [("old", id), ("new", new)] {
                assert!(
                    env.find(&k).await.is_none(),
                    "round {round}: {what} id alive after the logout (cycle {cycled:?})"
                );
                // Saves that lost the race wrote nothing, not even a key
                // without a TTL.
                assert!(!env.exists(&k), "round {round}: {what} key left");
            }
        }
    }

    /// A linked session's index keys must outlive it: a fast write whose
    /// new expiry passes the session's horizon goes through the full
    /// script, which indexes first.
    pub(crate) async fn a_fast_write_past_a_linked_sessions_horizon_indexes_first(env: Env) {
        let id = new_id();
        assert!(env
            .store
            .create(&id, &record(&[("a", "1")], 60_000))
            .await
            .unwrap());
        let mut link = ChangeSet::new();
        link.link("user", "alice");
        let exp = at(now() + 60_000);
        let out = env.store.save(&id, &link, Renewal::until(exp));
        assert_eq!(out.await.unwrap(), SaveOutcome::Saved);
        let index = format!("{}link:user:{{alice}}", env.prefix);
        let index_expiry = || -> i64 { env.query(redis::cmd("PEXPIRETIME").arg(&index)) };
        let before = index_expiry();
        // Far past the horizon (about twice the first expiry ahead).
        let far = at(now() + 10 * 60_000);
        let out = env
            .store
            .save(&id, &sets(&[("b", "2")]), Renewal::until(far));
        assert_eq!(out.await.unwrap(), SaveOutcome::Saved);
        assert_eq!(env.expiry(&id), far.as_millis() as i64);
        assert!(index_expiry() > before, "indexed again");
        assert!(
            index_expiry() >= env.expiry(&id),
            "the index outlives the session"
        );
        let listed = env
            .store
            .list("user", "alice", Timestamp::now(), 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
    }
}
