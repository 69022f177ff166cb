//! Review of issue 11: attacks on `PostgresStore` and `SqliteStore`.
//!
//! Hostile item keys and values, hostile links, table names trying
//! injection, concurrent writers on one session, destroy/cycle/end_linked
//! races, expiry edges, the cleanup against live sessions, SQLite locked by
//! a second pool, PostgreSQL killed mid-request, corrupt rows, concurrent
//! migrations. The same generic attack runs on both stores.
//!
//! PostgreSQL tests skip loudly without the server binaries (fail under
//! `CI=true`), as in tests/postgres_store.rs.
#![cfg(any(feature = "postgres", feature = "sqlite"))]
#![allow(clippy::unwrap_used)]

#[cfg(feature = "postgres")]
mod postgres_support;

use std::collections::BTreeMap;
use std::time::Duration;

use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Items, Keep, Meta, Record, Renewal, SaveOutcome, Timestamp,
};
use tower_session_storage::{PublicId, SessionId, SessionStore, StoreErrorKind};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn now() -> u64 {
    Timestamp::now().as_millis()
}

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn record(items: &[(&str, &str)], expires_in_ms: u64) -> Record {
    let t = now();
    Record {
        items: items.iter().copied().collect::<Items>(),
        created_at: Timestamp::from_millis(t),
        expires_at: Timestamp::from_millis(t + expires_in_ms),
        public_id: PublicId::generate(),
        meta: Meta::new(),
    }
}

fn renewal(expires_in_ms: u64) -> Renewal {
    Renewal::until(Timestamp::from_millis(now() + expires_in_ms))
}

fn map(items: &Items) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Keys and values a client may well send (they come from forms, headers).
fn hostile() -> Vec<(String, String)> {
    let big: String = "x'\"\\{}".repeat(64 * 1024 / 6);
    vec![
        ("'".into(), "'".into()),
        ("\"".into(), "\"".into()),
        ("\\".into(), "\\\\".into()),
        (
            "'); DROP TABLE sessions; --".into(),
            "'); DROP TABLE sessions; --".into(),
        ),
        ("\"); DELETE FROM x; --".into(), "\\'\\\"".into()),
        ("{\"a\":1}".into(), "{\"a\":1}".into()),
        ("null".into(), "null".into()),
        ("[]".into(), "[1,2]".into()),
        ("__proto__".into(), "{}".into()),
        ("constructor".into(), "prototype".into()),
        ("$.a[0]".into(), "$".into()),
        ("a.b".into(), "\u{2028}\u{2029}".into()),
        ("ключ 🔑".into(), "значение 🦀 e\u{301}".into()),
        ("\t\r\n".into(), "\u{1}\u{1f}\u{7f}".into()),
        ("\u{fffd}".into(), "\u{feff}".into()),
        ("big".into(), big),
    ]
}

fn changes_of(kv: &[(String, String)]) -> ChangeSet {
    let mut c = ChangeSet::new();
    for (k, v) in kv {
        c.set(k, v);
    }
    c
}

// ---------------------------------------------------------------------------
// The attacks, generic over the store
// ---------------------------------------------------------------------------

mod attack {
    use super::*;
    use std::sync::Arc;

    /// Hostile keys/values written by create and by save, read back byte
    /// for byte; removing some leaves the others.
    pub(crate) async fn hostile_items<S: SessionStore>(store: S) {
        let kv = hostile();
        // Through create.
        let id = new_id();
        let mut rec = record(&[], 60_000);
        rec.items = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(store.create(&id, &rec).await.unwrap());
        let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(map(&got.items), map(&rec.items));

        // Through save, on a session that had other keys.
        let id2 = new_id();
        assert!(store
            .create(&id2, &record(&[("keep", "me")], 60_000))
            .await
            .unwrap());
        let out = store
            .save(&id2, &changes_of(&kv), renewal(60_000))
            .await
            .unwrap();
        assert_eq!(out, SaveOutcome::Saved);
        let got = store.load(&id2, Timestamp::now()).await.unwrap().unwrap();
        let mut want: BTreeMap<String, String> = kv.iter().cloned().collect();
        want.insert("keep".into(), "me".into());
        assert_eq!(map(&got.items), want);

        // Remove the injection-looking keys only.
        let mut c = ChangeSet::new();
        for (k, _) in &kv[..5] {
            c.remove(k);
        }
        assert_eq!(
            store.save(&id2, &c, renewal(60_000)).await.unwrap(),
            SaveOutcome::Saved
        );
        for (k, _) in &kv[..5] {
            want.remove(k);
        }
        let got = store.load(&id2, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(map(&got.items), want);
        // The other session is untouched (no statement escaped its row).
        let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(map(&got.items), map(&rec.items));
    }

    /// An item value holding NUL (`"a\0b"`): a client can send one in any
    /// form field. It must round-trip as it does in the memory store.
    pub(crate) async fn nul_in_values<S: SessionStore>(store: S) {
        let id = new_id();
        assert!(store
            .create(&id, &record(&[("k", "v")], 60_000))
            .await
            .unwrap());
        let mut c = ChangeSet::new();
        c.set("note", "a\0b");
        c.set("other", "kept");
        let out = store.save(&id, &c, renewal(60_000)).await;
        assert!(matches!(out, Ok(SaveOutcome::Saved)), "save: {out:?}");
        let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(got.items.get("note"), Some("a\0b"));
        assert_eq!(got.items.get("other"), Some("kept"));
        let id2 = new_id();
        let out = store.create(&id2, &record(&[("n", "\0")], 60_000)).await;
        assert!(matches!(out, Ok(true)), "create: {out:?}");
        let got = store.load(&id2, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(got.items.get("n"), Some("\0"));
    }

    /// An item key holding NUL, set by a save: if the save says Saved, the
    /// key is there.
    pub(crate) async fn nul_in_keys<S: SessionStore>(store: S) {
        let id = new_id();
        assert!(store
            .create(&id, &record(&[("k", "v")], 60_000))
            .await
            .unwrap());
        let mut c = ChangeSet::new();
        c.set("k\0ey", "v");
        let out = store.save(&id, &c, renewal(60_000)).await;
        assert!(matches!(out, Ok(SaveOutcome::Saved)), "save: {out:?}");
        let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(
            got.items.get("k\0ey"),
            Some("v"),
            "an acknowledged write was lost"
        );
    }

    /// Hostile link values (valid per `is_valid_link`): stored, listed and
    /// ended by exactly that value, never by a look-alike.
    pub(crate) async fn hostile_links<S: SessionStore>(store: S) {
        let values = [
            "'); DROP TABLE sessions_links; --".to_string(),
            "alice\"".to_string(),
            "alice\\".to_string(),
            "alice%".to_string(),
            "alice_".to_string(),
            "{\"user\":\"alice\"}".to_string(),
            "ユーザー🦀".to_string(),
            "a".repeat(256),
            "alice".to_string(),
        ];
        let mut ids = Vec::new();
        for v in &values {
            assert!(tower_session_storage::store::is_valid_link("user", v));
            let id = new_id();
            let mut rec = record(&[("k", "v")], 60_000);
            rec.meta.set_link("user", v);
            rec.meta.set_link("x.y-z_", v);
            assert!(store.create(&id, &rec).await.unwrap());
            ids.push((id, rec.public_id));
        }
        for (v, (id, public)) in values.iter().zip(&ids) {
            let got = store.load(id, Timestamp::now()).await.unwrap().unwrap();
            assert_eq!(got.meta.link("user"), Some(v.as_str()));
            assert_eq!(got.meta.link("x.y-z_"), Some(v.as_str()));
            let listed = store.list("user", v, Timestamp::now(), 10).await.unwrap();
            assert_eq!(listed.len(), 1, "{v}");
            assert_eq!(listed[0].public_id, *public);
        }
        // LIKE-looking values do not match others.
        assert!(store
            .list("user", "alice_%", Timestamp::now(), 10)
            .await
            .unwrap()
            .is_empty());
        // Ending one value ends only its session.
        assert_eq!(
            store
                .end_linked("user", &values[0], Keep::NONE)
                .await
                .unwrap(),
            1
        );
        assert!(store
            .load(&ids[0].0, Timestamp::now())
            .await
            .unwrap()
            .is_none());
        for (id, _) in &ids[1..] {
            assert!(store.load(id, Timestamp::now()).await.unwrap().is_some());
        }
        // Links set by a save, hostile too.
        let id = &ids[8].0;
        let mut c = ChangeSet::new();
        c.link("user", "bob'--");
        c.unlink("x.y-z_");
        assert_eq!(
            store.save(id, &c, renewal(60_000)).await.unwrap(),
            SaveOutcome::Saved
        );
        let got = store.load(id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(got.meta.link("user"), Some("bob'--"));
        assert_eq!(got.meta.link("x.y-z_"), None);
        assert_eq!(
            store
                .list("user", "bob'--", Timestamp::now(), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .list("user", "alice", Timestamp::now(), 10)
            .await
            .unwrap()
            .is_empty());
    }

    /// `writers` tasks, each writing its own key `rounds` times on one
    /// session; half the writes also remove a key (the change-set path that
    /// is not a plain merge). Every acknowledged write must be there.
    pub(crate) async fn distinct_key_writers<S: SessionStore + Clone + 'static>(
        store: S,
        writers: usize,
        rounds: usize,
    ) {
        let id = new_id();
        assert!(store
            .create(&id, &record(&[("base", "1")], 600_000))
            .await
            .unwrap());
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..rounds {
                    let mut c = ChangeSet::new();
                    c.set(&format!("w{w}"), &format!("{r}"));
                    c.set(&format!("w{w}-r{r}"), "'\"\\");
                    if r % 2 == 1 {
                        c.remove(&format!("w{w}-r{}", r - 1));
                    }
                    let out = store.save(&id, &c, renewal(600_000)).await.unwrap();
                    assert_eq!(out, SaveOutcome::Saved);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let got = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
        let items = map(&got.items);
        assert_eq!(items.get("base").map(String::as_str), Some("1"));
        for w in 0..writers {
            assert_eq!(
                items.get(&format!("w{w}")),
                Some(&format!("{}", rounds - 1)),
                "writer {w}'s last write lost"
            );
            for r in 0..rounds {
                let present = items.contains_key(&format!("w{w}-r{r}"));
                let expected = r % 2 == 1 || r == rounds - 1;
                assert_eq!(present, expected, "w{w}-r{r}");
            }
        }
    }

    /// A logout (`end`) racing writers and a cycle: after all of them,
    /// neither the old nor the new id loads, whatever the order.
    pub(crate) async fn end_races_writers_and_cycle<S: SessionStore + Clone + 'static>(
        store: S,
        iterations: usize,
    ) {
        for i in 0..iterations {
            let id = new_id();
            let moved = new_id();
            let rec = record(&[("user", "alice")], 600_000);
            let public = rec.public_id;
            assert!(store.create(&id, &rec).await.unwrap());
            let mut tasks = Vec::new();
            for w in 0..4 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = ChangeSet::new();
                    c.set(&format!("w{w}"), "x");
                    let _ = store.save(&id, &c, renewal(600_000)).await.unwrap();
                }));
            }
            {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = ChangeSet::new();
                    c.set("cycled", "1");
                    let _ = store
                        .cycle(&id, &moved, &c, renewal(600_000))
                        .await
                        .unwrap();
                }));
            }
            let ender = {
                let store = store.clone();
                tokio::spawn(async move { store.end(&id, &public).await.unwrap() })
            };
            ender.await.unwrap();
            for t in tasks {
                t.await.unwrap();
            }
            // Writers that were in flight when end ran must not revive it.
            let a = store.load(&id, Timestamp::now()).await.unwrap();
            let b = store.load(&moved, Timestamp::now()).await.unwrap();
            // The end ran, but the cycle may have completed before it: the
            // end must then have ended the moved session too.
            assert!(a.is_none(), "iteration {i}: old id survived end");
            assert!(b.is_none(), "iteration {i}: moved id survived end");
        }
    }

    /// `end_linked` (sign out everywhere) racing sign-ins: every session
    /// linked before it started is gone after; the registry index and the
    /// sessions agree (a session that loads with the link is listed).
    pub(crate) async fn end_all_races_sign_ins<S: SessionStore + Clone + 'static>(
        store: S,
        iterations: usize,
    ) {
        let user = format!("u-{}", uuid::Uuid::new_v4().simple());
        for _ in 0..iterations {
            let mut before = Vec::new();
            for _ in 0..5 {
                let id = new_id();
                let mut rec = record(&[("k", "v")], 600_000);
                rec.meta.set_link("user", &user);
                assert!(store.create(&id, &rec).await.unwrap());
                before.push(id);
            }
            let mut racers = Vec::new();
            for n in 0..6 {
                let store = store.clone();
                let user = user.clone();
                racers.push(tokio::spawn(async move {
                    let id = new_id();
                    if n % 2 == 0 {
                        let mut rec = record(&[("k", "v")], 600_000);
                        rec.meta.set_link("user", &user);
                        assert!(store.create(&id, &rec).await.unwrap());
                    } else {
                        // A sign-in on an existing anonymous session.
                        assert!(store
                            .create(&id, &record(&[("cart", "1")], 600_000))
                            .await
                            .unwrap());
                        let mut c = ChangeSet::new();
                        c.link("user", &user);
                        c.set("signed_in", "1");
                        store.save(&id, &c, renewal(600_000)).await.unwrap();
                    }
                    id
                }));
            }
            let ender = {
                let store = store.clone();
                let user = user.clone();
                tokio::spawn(async move { store.end_linked("user", &user, Keep::NONE).await })
            };
            let ended = ender.await.unwrap().unwrap();
            assert!(ended >= before.len(), "ended {ended}");
            let mut ids = Vec::new();
            for r in racers {
                ids.push(r.await.unwrap());
            }
            for id in &before {
                assert!(store.load(id, Timestamp::now()).await.unwrap().is_none());
            }
            let listed = store
                .list("user", &user, Timestamp::now(), 1000)
                .await
                .unwrap();
            for id in &ids {
                if let Some(r) = store.load(id, Timestamp::now()).await.unwrap() {
                    if r.meta.link("user").is_some() {
                        assert!(
                            listed.iter().any(|l| l.public_id == r.public_id),
                            "a linked session is missing from the index"
                        );
                    }
                }
            }
            // Clean for the next iteration.
            store.end_linked("user", &user, Keep::NONE).await.unwrap();
            assert!(store
                .list("user", &user, Timestamp::now(), 1000)
                .await
                .unwrap()
                .is_empty());
        }
    }

    /// Expiry edges: a write at the exact expiry (or after) changes
    /// nothing; touch and save never move expiry back.
    pub(crate) async fn expiry_edges<S: SessionStore>(store: S) {
        let t = now();
        let exp = Timestamp::from_millis(t + 10_000);
        let id = new_id();
        let mut rec = record(&[("k", "v")], 0);
        rec.expires_at = exp;
        assert!(store.create(&id, &rec).await.unwrap());

        // At `now == expires_at` the session is expired: save, touch and
        // cycle must not revive it.
        let late = Renewal {
            now: exp,
            expires_at: Timestamp::from_millis(t + 3_600_000),
        };
        let mut c = ChangeSet::new();
        c.set("k", "revived");
        assert_eq!(store.save(&id, &c, late).await.unwrap(), SaveOutcome::Gone);
        let mut c2 = ChangeSet::new();
        c2.set("k", "revived");
        c2.set_idle_timeout(Duration::from_secs(3600));
        assert_eq!(store.save(&id, &c2, late).await.unwrap(), SaveOutcome::Gone);
        assert!(!store.touch(&id, late).await.unwrap());
        let moved = new_id();
        assert_eq!(
            store.cycle(&id, &moved, &c, late).await.unwrap(),
            CycleOutcome::Gone
        );
        assert!(store
            .load(&moved, Timestamp::from_millis(t))
            .await
            .unwrap()
            .is_none());
        // Seen from before its expiry it is unchanged: same items, same expiry.
        let got = store
            .load(&id, Timestamp::from_millis(t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.items.get("k"), Some("v"));
        assert_eq!(got.expires_at, exp);
        // Loading at the exact expiry refuses it.
        assert!(store.load(&id, exp).await.unwrap().is_none());

        // Touch and save to an earlier expiry leave it where it is.
        let earlier = Renewal {
            now: Timestamp::from_millis(t),
            expires_at: Timestamp::from_millis(t + 1_000),
        };
        assert!(store.touch(&id, earlier).await.unwrap());
        let mut c3 = ChangeSet::new();
        c3.set("k2", "v2");
        assert_eq!(
            store.save(&id, &c3, earlier).await.unwrap(),
            SaveOutcome::Saved
        );
        let got = store
            .load(&id, Timestamp::from_millis(t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expires_at, exp, "expiry moved back");
        // Touch forward moves it.
        let later = Renewal {
            now: Timestamp::from_millis(t),
            expires_at: Timestamp::from_millis(t + 20_000),
        };
        assert!(store.touch(&id, later).await.unwrap());
        let got = store
            .load(&id, Timestamp::from_millis(t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expires_at.as_millis(), t + 20_000);
        // Concurrent touches to many expiries: the max wins.
        let mut futs = Vec::new();
        for k in 0..20u64 {
            let r = Renewal {
                now: Timestamp::from_millis(t),
                expires_at: Timestamp::from_millis(t + 20_000 + (k * 7919) % 20 * 1000),
            };
            futs.push(store.touch(&id, r));
        }
        for f in futs {
            assert!(f.await.unwrap());
        }
        let got = store
            .load(&id, Timestamp::from_millis(t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expires_at.as_millis(), t + 20_000 + 19 * 1000);
    }

    /// Make `expired` expired rows and `live` live ones, then run cleanup
    /// passes while the live ones are written: every live one survives.
    pub(crate) async fn cleanup_spares_live<S, F, Fut>(
        store: S,
        expired: usize,
        live: usize,
        cleanup: F,
    ) where
        S: SessionStore + Clone + 'static,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = u64>,
    {
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for chunk in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut live_ids = Vec::new();
                for i in 0..(expired / 4) {
                    let id = new_id();
                    let mut rec = record(&[("e", "1")], 0);
                    rec.expires_at = Timestamp::from_millis(now() - 1 - (i as u64 % 50));
                    assert!(store.create(&id, &rec).await.unwrap());
                }
                for _ in 0..(live / 4) {
                    let id = new_id();
                    // Some expire soon but not before the test ends.
                    assert!(store
                        .create(&id, &record(&[("l", "1")], 300_000 + chunk))
                        .await
                        .unwrap());
                    live_ids.push(id);
                }
                live_ids
            }));
        }
        let mut live_ids = Vec::new();
        for t in tasks {
            live_ids.extend(t.await.unwrap());
        }
        let writers = {
            let store = store.clone();
            let ids = live_ids.clone();
            tokio::spawn(async move {
                for id in &ids {
                    let mut c = ChangeSet::new();
                    c.set("w", "1");
                    assert_eq!(
                        store.save(id, &c, renewal(300_000)).await.unwrap(),
                        SaveOutcome::Saved
                    );
                }
            })
        };
        let deleted = cleanup().await;
        writers.await.unwrap();
        assert_eq!(deleted, (expired / 4 * 4) as u64, "expired rows deleted");
        for id in &live_ids {
            let got = store.load(id, Timestamp::now()).await.unwrap();
            assert!(got.is_some(), "cleanup deleted a live session");
            assert_eq!(got.unwrap().items.get("w"), Some("1"));
        }
        assert_eq!(cleanup().await, 0);
    }
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use std::path::PathBuf;
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use tower_session_storage::SqliteStore;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "tss-attack-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn url(&self) -> String {
            format!("sqlite://{}?mode=rwc", self.0.join("s.db").display())
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn store(dir: &TempDir) -> SqliteStore {
        let s = SqliteStore::connect(&dir.url()).await.unwrap();
        s.migrate().await.unwrap();
        s
    }

    #[tokio::test]
    async fn hostile_items() {
        let d = TempDir::new();
        attack::hostile_items(store(&d).await).await;
    }

    #[tokio::test]
    async fn nul_in_values() {
        let d = TempDir::new();
        attack::nul_in_values(store(&d).await).await;
    }

    #[tokio::test]
    async fn nul_in_keys() {
        let d = TempDir::new();
        attack::nul_in_keys(store(&d).await).await;
    }

    #[tokio::test]
    async fn hostile_links() {
        let d = TempDir::new();
        attack::hostile_links(store(&d).await).await;
    }

    #[tokio::test]
    async fn hostile_items_in_shared_memory_db() {
        let url = format!(
            "sqlite:file:attack{}?mode=memory&cache=shared",
            uuid::Uuid::new_v4().simple()
        );
        let s = SqliteStore::connect(&url).await.unwrap();
        s.migrate().await.unwrap();
        attack::hostile_items(s).await;
    }

    #[tokio::test]
    async fn table_names_trying_injection_are_refused() {
        let d = TempDir::new();
        let s = store(&d).await;
        for bad in [
            "s\"; DROP TABLE sessions; --",
            "sessions\" (x); --",
            "s`x",
            "s'x",
            "s]x",
            "sessions--",
            "s\0",
            "main.sessions",
            "sqlite_schema",
            "s\u{0131}",
            "",
            " sessions",
        ] {
            let e = s.clone().with_table_name(bad).unwrap_err();
            assert_eq!(e.kind(), StoreErrorKind::Other, "{bad:?}");
        }
        // A legal odd name works, and is a different table.
        let odd = s.clone().with_table_name("_").unwrap();
        odd.migrate().await.unwrap();
        let id = new_id();
        assert!(odd
            .create(&id, &record(&[("k", "v")], 60_000))
            .await
            .unwrap());
        assert!(s.load(&id, Timestamp::now()).await.unwrap().is_none());
        // Names that differ in case only: SQLite identifiers are case
        // insensitive, so they are one table; both stores still work.
        let upper = s.clone().with_table_name("SESSIONS").unwrap();
        upper.migrate().await.unwrap();
        assert!(upper.load(&id, Timestamp::now()).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distinct_key_writers() {
        let d = TempDir::new();
        attack::distinct_key_writers(store(&d).await, 16, 10).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_races_writers_and_cycle() {
        let d = TempDir::new();
        attack::end_races_writers_and_cycle(store(&d).await, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_all_races_sign_ins() {
        let d = TempDir::new();
        attack::end_all_races_sign_ins(store(&d).await, 30).await;
    }

    #[tokio::test]
    async fn expiry_edges() {
        let d = TempDir::new();
        attack::expiry_edges(store(&d).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cleanup_spares_live_sessions() {
        let d = TempDir::new();
        let s = store(&d).await;
        let c = s.clone();
        attack::cleanup_spares_live(s, 2400, 200, move || {
            let c = c.clone();
            async move { c.delete_expired().await.unwrap() }
        })
        .await;
    }

    /// `deletion_task(Duration::ZERO)` (an interval read from config as 0):
    /// the task must run, not panic (PostgresStore clamps it to 1 ms).
    #[tokio::test]
    async fn deletion_task_with_zero_interval() {
        let d = TempDir::new();
        let s = store(&d).await;
        let id = new_id();
        let mut rec = record(&[("k", "v")], 0);
        rec.expires_at = Timestamp::from_millis(now() - 1);
        assert!(s.create(&id, &rec).await.unwrap());
        let task = tokio::spawn(s.clone().deletion_task(Duration::ZERO));
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if task.is_finished() {
                break;
            }
        }
        assert!(
            !task.is_finished(),
            "the deletion task ended: {:?}",
            task.await
        );
        task.abort();
    }

    /// Two pools (two app instances) on one file writing the same sessions
    /// at once: every acknowledged write is there; no error but 503.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_pools_writing_at_once() {
        let d = TempDir::new();
        let a = store(&d).await;
        let b = store(&d).await;
        let ids: Vec<SessionId> = (0..8).map(|_| new_id()).collect();
        for id in &ids {
            assert!(a.create(id, &record(&[("k", "v")], 600_000)).await.unwrap());
        }
        let mut tasks = Vec::new();
        for w in 0..16 {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for r in 0..25 {
                    let id = ids[(w + r) % ids.len()];
                    let mut c = ChangeSet::new();
                    c.set(&format!("w{w}r{r}"), "1");
                    match s.save(&id, &c, renewal(600_000)).await {
                        Ok(SaveOutcome::Saved) => acked.push((id, format!("w{w}r{r}"))),
                        Ok(o) => panic!("{o:?}"),
                        Err(e) => assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}"),
                    }
                    // Loads never see an empty session.
                    let got = s.load(&id, Timestamp::now()).await;
                    match got {
                        Ok(Some(r)) => assert_eq!(r.items.get("k"), Some("v")),
                        Ok(None) => panic!("session vanished under load"),
                        Err(e) => assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}"),
                    }
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        for (id, key) in &acked {
            let r = b.load(id, Timestamp::now()).await.unwrap().unwrap();
            assert_eq!(r.items.get(key), Some("1"), "acknowledged write lost");
        }
        assert_eq!(acked.len(), 16 * 25, "with a 5 s busy timeout none fails");
    }

    /// A second connection holds the writer lock past the busy timeout:
    /// writes are 503 (not 500, not an empty session); reads still work
    /// (WAL); after the lock goes, writes work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_database_is_503_then_recovers() {
        let d = TempDir::new();
        let opts = SqliteConnectOptions::from_str(&d.url())
            .unwrap()
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_millis(200));
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(opts.clone())
            .await
            .unwrap();
        let s = SqliteStore::new(pool);
        s.migrate().await.unwrap();
        let id = new_id();
        assert!(s
            .create(&id, &record(&[("k", "v")], 600_000))
            .await
            .unwrap());

        let locker = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let mut conn = locker.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .unwrap();

        let mut c = ChangeSet::new();
        c.set("k2", "v2");
        let e = s.save(&id, &c, renewal(600_000)).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "save: {e}");
        let e = s
            .create(&new_id(), &record(&[("k", "v")], 600_000))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "create: {e}");
        let e = s
            .cycle(&id, &new_id(), &c, renewal(600_000))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "cycle: {e}");
        let r = s.load(&id, Timestamp::now()).await.unwrap().unwrap();
        assert_eq!(r.items.get("k"), Some("v"));

        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        drop(conn);
        assert_eq!(
            s.save(&id, &c, renewal(600_000)).await.unwrap(),
            SaveOutcome::Saved
        );
    }

    /// Corrupt rows: not JSON, JSON that is not an object of strings, a bad
    /// public id. Load is never a panic; it is unknown (and the row is
    /// dropped) or a 500, never a 503; a save on it is not a panic.
    #[tokio::test]
    async fn corrupt_rows() {
        let d = TempDir::new();
        let s = store(&d).await;
        for (items, public) in [
            ("not json", None),
            ("[1,2]", None),
            ("{\"a\":1}", None),
            ("{\"a\":{\"b\":\"c\"}}", None),
            ("{\"a\":null}", None),
            ("\"str\"", None),
            ("{\"a\":\"b\"}", Some("not-a-public-id'")),
        ] {
            let id = new_id();
            assert!(s
                .create(&id, &record(&[("k", "v")], 600_000))
                .await
                .unwrap());
            sqlx::query(
                "UPDATE sessions SET items = ?1, public_id = COALESCE(?2, public_id) WHERE id = ?3",
            )
            .bind(items)
            .bind(public)
            .bind(id.to_string())
            .execute(s.pool())
            .await
            .unwrap();
            // Documented: logged, deleted, and loads as no session.
            match s.load(&id, Timestamp::now()).await {
                Ok(None) => {}
                Ok(Some(r)) => panic!("{items}: a corrupt row loaded as {r:?}"),
                Err(e) => panic!("{items}: {e:?}"),
            }
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id = ?1")
                .bind(id.to_string())
                .fetch_one(s.pool())
                .await
                .unwrap();
            assert_eq!(left, 0, "{items}: the corrupt row was not deleted");
            // A request that still holds the id (the load said unknown, or
            // a 500) writes: the row is not brought back as a session.
            let mut c = ChangeSet::new();
            c.set("x", "y");
            match s.save(&id, &c, renewal(600_000)).await {
                Ok(SaveOutcome::Gone) => {}
                Ok(o) => panic!("{items}: save on a corrupt row: {o:?}"),
                Err(e) => assert_eq!(e.kind(), StoreErrorKind::Other, "{items}: {e}"),
            }
        }
    }

    /// Six instances connect and migrate at once, on a file already in WAL
    /// mode (an app that ran before).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_concurrently() {
        for _ in 0..10 {
            let d = TempDir::new();
            drop(SqliteStore::connect(&d.url()).await.unwrap());
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let url = d.url();
                tasks.push(tokio::spawn(async move {
                    let s = SqliteStore::connect(&url).await?;
                    s.migrate().await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let s = store(&d).await;
            attack::expiry_edges(s).await;
        }
    }

    /// Six instances start at once on a new file (the first deploy, or
    /// tests that each make one): each `connect` switches the file to WAL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_concurrently_on_a_new_file() {
        let mut failures = Vec::new();
        for round in 0..30 {
            let d = TempDir::new();
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let url = d.url();
                tasks.push(tokio::spawn(async move {
                    let s = SqliteStore::connect(&url)
                        .await
                        .map_err(|e| format!("connect: {e:?}"))?;
                    s.migrate().await.map_err(|e| format!("migrate: {e:?}"))
                }));
            }
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    failures.push(format!("round {round}: {e}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    use postgres_support::{unique_table, Postgres};
    use tower_session_storage::PostgresStore;

    async fn store() -> Option<PostgresStore> {
        let server = postgres_support::shared()?;
        Some(store_on(&server.url()).await)
    }

    async fn store_on(url: &str) -> PostgresStore {
        let s = PostgresStore::connect(url)
            .await
            .unwrap()
            .with_table_name(&unique_table())
            .unwrap();
        s.migrate().await.unwrap();
        s
    }

    #[tokio::test]
    async fn hostile_items() {
        let Some(s) = store().await else { return };
        attack::hostile_items(s).await;
    }

    #[tokio::test]
    async fn nul_in_values() {
        let Some(s) = store().await else { return };
        attack::nul_in_values(s).await;
    }

    #[tokio::test]
    async fn nul_in_keys() {
        let Some(s) = store().await else { return };
        attack::nul_in_keys(s).await;
    }

    #[tokio::test]
    async fn hostile_links() {
        let Some(s) = store().await else { return };
        attack::hostile_links(s).await;
    }

    #[tokio::test]
    async fn table_names_trying_injection_are_refused() {
        let Some(s) = store().await else { return };
        for bad in [
            "s\"; DROP TABLE sessions; --",
            "sessions\" (x); --",
            "a.b.c",
            "s'x",
            "\"public\".s",
            "public.\"s\"",
            "s\0",
            "public .s",
            "s\u{0131}",
            "",
            ".",
        ] {
            let e = s.clone().with_table_name(bad).unwrap_err();
            assert_eq!(e.kind(), StoreErrorKind::Other, "{bad:?}");
        }
        // The longest legal name and a schema: migrate, and use.
        let long = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        let long = format!("{long}{}", "x".repeat(54 - long.len()));
        let schema = format!("sch_{}", uuid::Uuid::new_v4().simple());
        for name in [long.clone(), format!("{schema}.{long}")] {
            let t = s.clone().with_table_name(&name).unwrap();
            t.migrate().await.unwrap();
            let id = new_id();
            let mut rec = record(&[("k", "v")], 60_000);
            rec.meta.set_link("user", "long");
            assert!(t.create(&id, &rec).await.unwrap());
            assert_eq!(
                t.list("user", "long", Timestamp::now(), 10)
                    .await
                    .unwrap()
                    .len(),
                1,
                "{name}"
            );
        }
    }

    /// Two stores whose tables live in one new schema migrate at once (two
    /// apps, or one app with two layers): the advisory lock is per table,
    /// so both run `CREATE SCHEMA IF NOT EXISTS` together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_two_tables_in_one_new_schema_concurrently() {
        let Some(server) = postgres_support::shared() else {
            return;
        };
        let base = PostgresStore::connect(&server.url()).await.unwrap();
        let mut failures = Vec::new();
        for round in 0..20 {
            let schema = format!("sch_{}", uuid::Uuid::new_v4().simple());
            let mut tasks = Vec::new();
            for i in 0..4 {
                let s = base
                    .clone()
                    .with_table_name(&format!("{schema}.t{i}"))
                    .unwrap();
                tasks.push(tokio::spawn(async move { s.migrate().await }));
            }
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    failures.push(format!("round {round}: {e:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// `t` and `public.t` are the same table under two names (two lock keys).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_same_table_two_spellings_concurrently() {
        let Some(server) = postgres_support::shared() else {
            return;
        };
        let base = PostgresStore::connect(&server.url()).await.unwrap();
        let mut failures = Vec::new();
        for round in 0..20 {
            let t = unique_table();
            let mut tasks = Vec::new();
            for name in [
                t.clone(),
                format!("public.{t}"),
                t.clone(),
                format!("public.{t}"),
            ] {
                let s = base.clone().with_table_name(&name).unwrap();
                tasks.push(tokio::spawn(async move { s.migrate().await }));
            }
            for task in tasks {
                if let Err(e) = task.await.unwrap() {
                    failures.push(format!("round {round}: {e:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_concurrently_from_many_pools() {
        let Some(server) = postgres_support::shared() else {
            return;
        };
        for _ in 0..10 {
            let t = unique_table();
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let url = server.url();
                let t = t.clone();
                tasks.push(tokio::spawn(async move {
                    let s = PostgresStore::connect(&url)
                        .await
                        .unwrap()
                        .with_table_name(&t)
                        .unwrap();
                    s.migrate().await
                }));
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distinct_key_writers() {
        let Some(s) = store().await else { return };
        attack::distinct_key_writers(s, 16, 10).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_races_writers_and_cycle() {
        let Some(s) = store().await else { return };
        attack::end_races_writers_and_cycle(s, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_all_races_sign_ins() {
        let Some(s) = store().await else { return };
        attack::end_all_races_sign_ins(s, 30).await;
    }

    #[tokio::test]
    async fn expiry_edges() {
        let Some(s) = store().await else { return };
        attack::expiry_edges(s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cleanup_spares_live_sessions() {
        let Some(s) = store().await else { return };
        let c = s.clone();
        attack::cleanup_spares_live(s, 2400, 200, move || {
            let c = c.clone();
            async move { c.delete_expired().await.unwrap() }
        })
        .await;
    }

    #[tokio::test]
    async fn deletion_task_with_zero_interval() {
        let Some(s) = store().await else { return };
        let id = new_id();
        let mut rec = record(&[("k", "v")], 0);
        rec.expires_at = Timestamp::from_millis(now() - 1);
        assert!(s.create(&id, &rec).await.unwrap());
        let task = tokio::spawn(s.clone().deletion_task(Duration::ZERO));
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if task.is_finished() {
                break;
            }
        }
        assert!(
            !task.is_finished(),
            "the deletion task ended: {:?}",
            task.await
        );
        task.abort();
    }

    #[tokio::test]
    async fn corrupt_rows() {
        let Some(s) = store().await else { return };
        for (items, public) in [
            ("[1,2]", None),
            ("{\"a\":1}", None),
            ("{\"a\":{\"b\":\"c\"}}", None),
            ("{\"a\":null}", None),
            ("\"str\"", None),
            ("{\"a\":\"b\"}", Some("not-a-public-id'")),
        ] {
            let id = new_id();
            assert!(s
                .create(&id, &record(&[("k", "v")], 600_000))
                .await
                .unwrap());
            sqlx::query(&format!(
                "UPDATE \"{}\" SET items = $1::jsonb, public_id = COALESCE($2, public_id) WHERE id = $3",
                s.table_name()
            ))
            .bind(items)
            .bind(public)
            .bind(id.to_string())
            .execute(s.pool())
            .await
            .unwrap();
            // Documented: deleted, logged, and loads as no session.
            match s.load(&id, Timestamp::now()).await {
                Ok(None) => {}
                Ok(Some(r)) => panic!("{items}: a corrupt row loaded as {r:?}"),
                Err(e) => panic!("{items}: {e:?}"),
            }
            let left: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{}\" WHERE id = $1",
                s.table_name()
            ))
            .bind(id.to_string())
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(left, 0, "{items}: the corrupt row was not deleted");
            for remove in [false, true] {
                let mut c = ChangeSet::new();
                c.set("x", "y");
                if remove {
                    c.remove("zz");
                }
                match s.save(&id, &c, renewal(600_000)).await {
                    Ok(SaveOutcome::Gone) => {}
                    Ok(o) => panic!("{items}: save on a corrupt row: {o:?}"),
                    Err(e) => assert_eq!(e.kind(), StoreErrorKind::Other, "{items}: {e}"),
                }
            }
        }
    }

    /// PostgreSQL SIGKILLed while 16 writers are in flight: each write is
    /// Saved or 503 (never another error, never a load of nothing); after
    /// restart every acknowledged write is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_mid_request() {
        let Some(mut server) = Postgres::start() else {
            return;
        };
        let s = store_on(&server.url()).await;
        let id = new_id();
        assert!(s
            .create(&id, &record(&[("k", "v")], 600_000))
            .await
            .unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..16 {
            let s = s.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0usize);
                let mut r = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w{w}r{r}");
                    let mut c = ChangeSet::new();
                    c.set(&key, "1");
                    if r % 3 == 0 {
                        c.remove("nothing");
                    }
                    match s.save(&id, &c, renewal(600_000)).await {
                        Ok(SaveOutcome::Saved) => acked.push(key),
                        Ok(o) => panic!("{o:?}"),
                        Err(e) => {
                            assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
                            unavailable += 1;
                        }
                    }
                    match s.load(&id, Timestamp::now()).await {
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("empty session during the crash"),
                        Err(e) => {
                            assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
                            unavailable += 1;
                        }
                    }
                    r += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (acked, unavailable)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = tokio::task::spawn_blocking(move || {
            server.crash();
            std::thread::sleep(Duration::from_millis(500));
            server.restart();
            server
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut acked, mut unavailable) = (Vec::new(), 0);
        for t in tasks {
            let (a, u) = t.await.unwrap();
            acked.extend(a);
            unavailable += u;
        }
        let r = s.load(&id, Timestamp::now()).await.unwrap().unwrap();
        for key in &acked {
            assert_eq!(r.items.get(key), Some("1"), "acknowledged {key} lost");
        }
        eprintln!(
            "killed_mid_request: {} acknowledged writes kept, {unavailable} 503s",
            acked.len()
        );
        assert!(unavailable > 0, "the crash was not seen");
        drop(server);
    }
}
