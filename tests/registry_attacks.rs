//! Links, the registry and per-session lifetimes, tried as an
//! attacker: concurrent capped sign-ins, hostile link values, relink and
//! unlink churn racing `end_all`, extreme per-session lifetimes, and an
//! audit of the Redis keys such traffic leaves behind (every key must have
//! a TTL). Each attack runs on `MemoryStore`, a standalone Redis and a
//! 3-node Redis Cluster.
//!
//! Needs `redis-server` and `redis-cli` on `PATH` for the Redis variants.
//! Without them each Redis test prints a loud SKIP and passes, unless
//! `CI=true`, where it fails.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
#[macro_use]
mod common;
mod redis_support;

use std::time::Duration;

use common::{dev_layer, guard, serve_script, TestServer};
use redis_support::fixtures::{new_id, now, record, Admin, Env};
use tower_session_storage::store::{Keep, Meta, Timestamp, MAX_LINKS};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStore};

// ---------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------

/// The Redis keys under `env`'s prefix, with their `PTTL`.
fn keys_and_ttls(env: &Env) -> Vec<(String, i64)> {
    let pattern = format!("{}*", env.prefix);
    let mut out = Vec::new();
    let mut on = |conn: &mut redis::Connection| {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(conn).unwrap();
        for k in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(conn).unwrap();
            out.push((k, ttl));
        }
    };
    match env.admin {
        Admin::Standalone(r) => on(&mut r.admin()),
        Admin::Cluster(c) => {
            for node in c.nodes() {
                // Replicas answer KEYS too; primaries are enough, but a
                // duplicate is harmless for the audit.
                on(&mut node.admin());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every key under the prefix expires: none is left without a TTL.
fn assert_every_key_expires(env: &Env, when: &str) {
    let keys = keys_and_ttls(env);
    let immortal: Vec<_> = keys.iter().filter(|(_, t)| *t < 0).collect();
    assert!(
        immortal.is_empty(),
        "{when}: keys without a TTL: {immortal:?} (all keys: {keys:?})"
    );
}

/// Runs `$body` (an async fn taking a store and an optional Env) on the
/// three stores.
macro_rules! on_every_store {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(tower_session_storage::MemoryStore::new(), None).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let Some(env) = crate::redis_support::fixtures::Env::standalone().await else {
                    return;
                };
                super::$name(env.store.clone(), Some(&env)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let Some(env) = crate::redis_support::fixtures::Env::cluster().await else {
                    return;
                };
                super::$name(env.store.clone(), Some(&env)).await;
            }
        }
    };
}

/// Runs every script of `scripts` (with its cookie) at once, each on a
/// task of its own; the replies in order.
async fn all_at_once(
    srv: &TestServer,
    scripts: Vec<(String, Option<String>)>,
) -> Vec<common::Reply> {
    let tasks: Vec<_> = scripts
        .into_iter()
        .map(|(script, cookie)| {
            let url = srv.url(&format!("/s?{script}"));
            tokio::spawn(async move {
                let mut req = common::raw_client().get(url);
                if let Some(c) = cookie {
                    req = req.header(reqwest::header::COOKIE, c);
                }
                common::send(req).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(guard(t).await.unwrap());
    }
    out
}

/// A sign-in: a new session, linked, cycled. (Its public id is known from
/// the next request on: a session not yet stored has none.)
const SIGN_IN: &str = "set=a:1&link=user:{}&cycle";

/// The public id of the session `cookie` names (`-` for none).
async fn pid_of(srv: &TestServer, cookie: &str) -> String {
    srv.raw("pid", Some(cookie)).await.ok().to_owned()
}

fn cookie_of(reply: &common::Reply) -> String {
    common::cookie(&reply.new_id().expect("a sign-in hands out an id"))
}

async fn sign_in(srv: &TestServer, user: &str) -> (String, String) {
    let r = srv.raw(&SIGN_IN.replace("{}", user), None).await;
    r.ok();
    let c = cookie_of(&r);
    let pid = pid_of(srv, &c).await;
    (c, pid)
}

async fn alive(srv: &TestServer, cookie: &str) -> bool {
    srv.raw("get=a", Some(cookie)).await.ok() == "1"
}

async fn listed(srv: &TestServer, user: &str) -> Vec<String> {
    let r = srv.raw(&format!("list=user:{user}"), None).await;
    r.ok()
        .split('+')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// The per-link cap under concurrent sign-ins
// ---------------------------------------------------------------------------

/// Sixteen sign-ins of one user at once under a cap of 2: afterwards at
/// most 2 sessions are linked, every listed one is live and every live one
/// is listed; then one more sign-in (alone) survives, and the cap holds.
async fn concurrent_capped_sign_ins_never_exceed_the_cap<S: SessionStore>(
    store: S,
    env: Option<&Env>,
) {
    let layer = dev_layer(store).with_max_sessions_per_link("user", 2);
    let srv = serve_script(layer).await;
    let mut cookies = Vec::new();
    for round in 0..3 {
        let ins = (0..16)
            .map(|_| (SIGN_IN.replace("{}", "carol"), None))
            .collect();
        for r in all_at_once(&srv, ins).await {
            r.ok();
            let c = cookie_of(&r);
            let pid = pid_of(&srv, &c).await;
            cookies.push((c, pid));
        }
        let list = listed(&srv, "carol").await;
        assert!(
            list.len() <= 2,
            "round {round}: {} sessions listed under a cap of 2",
            list.len()
        );
        let mut live = Vec::new();
        for (c, pid) in &cookies {
            if alive(&srv, c).await {
                live.push(pid.clone());
            }
        }
        live.sort();
        let mut list = list;
        list.sort();
        assert_eq!(live, list, "round {round}: live and listed differ");
    }
    // A sign-in alone is never ended by the cap.
    let (c, pid) = sign_in(&srv, "carol").await;
    assert!(
        alive(&srv, &c).await,
        "the sign-in that ran alone was ended"
    );
    let list = listed(&srv, "carol").await;
    assert!(list.contains(&pid) && list.len() <= 2, "{list:?}");
    if let Some(env) = env {
        assert_every_key_expires(env, "after capped sign-ins");
    }
}
on_every_store!(concurrent_capped_sign_ins_never_exceed_the_cap);

// ---------------------------------------------------------------------------
// Hostile link values, at the store
// ---------------------------------------------------------------------------

/// Values Redis key building or a hash tag could trip over, the longest
/// value allowed (256 bytes, also made of multi-byte characters), the
/// longest name, and a session holding the most links: each lists only its
/// own sessions, `end_linked` of one value ends only those, `end_public`
/// finds the session with `MAX_LINKS` links, and no Redis key is left
/// without a TTL.
async fn hostile_link_values_never_cross<S: SessionStore>(store: S, env: Option<&Env>) {
    let long_ascii = "v".repeat(256);
    let long_utf8 = format!("{}ab", "日".repeat(84)); // 252 + 2 = 254 bytes
    let long_utf8_edge = format!("{}x", "€".repeat(85)); // 255 + 1 = 256 bytes
    let values: Vec<String> = [
        "{",
        "}",
        "{}",
        "}{",
        "a}b{c",
        "{user}",
        "x:y:z",
        ":",
        "link:user:{x}",
        "moved:{x}",
        "ü日本",
        "*",
        "a b",
        "?[]\\",
        "%00",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([long_ascii, long_utf8, long_utf8_edge])
    .collect();
    let ttl = 3_600_000;
    let mut ids = Vec::new();
    for (i, v) in values.iter().enumerate() {
        assert!(
            tower_session_storage::store::is_valid_link("user", v),
            "{v:?} is a valid value"
        );
        for _ in 0..2 {
            let mut r = record(&[("k", "v")], ttl);
            r.created_at = Timestamp::from_millis(now() - 1000 + i as u64);
            let mut meta = Meta::new();
            meta.set_link("user", v);
            r.meta = meta;
            let id = new_id();
            assert!(store.create(&id, &r).await.unwrap());
            ids.push((id, r.public_id, v.clone()));
        }
    }
    // A session with the most links, the longest name.
    let long_name = "n".repeat(32);
    let mut r = record(&[("k", "v")], ttl);
    let mut meta = Meta::new();
    meta.set_link(&long_name, &values[0]);
    for i in 1..MAX_LINKS {
        meta.set_link(&format!("l{i}"), &values[i % values.len()]);
    }
    assert_eq!(meta.links().len(), MAX_LINKS);
    r.meta = meta;
    let full_pid = r.public_id;
    let full_id = new_id();
    assert!(store.create(&full_id, &r).await.unwrap());

    for v in &values {
        let got = store.list("user", v, Timestamp::now(), 100).await.unwrap();
        let mut got: Vec<_> = got.iter().map(|l| l.public_id).collect();
        got.sort();
        let mut want: Vec<_> = ids
            .iter()
            .filter(|(_, _, w)| w == v)
            .map(|(_, p, _)| *p)
            .collect();
        want.sort();
        assert_eq!(got, want, "list of user = {v:?}");
    }
    let got = store
        .list(&long_name, &values[0], Timestamp::now(), 100)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta.links().len(), MAX_LINKS);

    // Ending "{" ends only the two "{" sessions, not "{}" or "{user}".
    let n = store.end_linked("user", "{", Keep::NONE).await.unwrap();
    assert_eq!(n, 2);
    for (id, _, v) in &ids {
        let there = store.load(id, Timestamp::now()).await.unwrap().is_some();
        assert_eq!(
            there,
            v != "{",
            "session linked to {v:?} after ending \"{{\""
        );
    }
    if let Some(env) = env {
        assert_every_key_expires(env, "hostile values");
    }
    assert!(store.end_public(&full_pid).await.unwrap());
    assert!(store
        .load(&full_id, Timestamp::now())
        .await
        .unwrap()
        .is_none());
    for (i, _) in (1..MAX_LINKS).enumerate() {
        let name = format!("l{}", i + 1);
        let v = &values[(i + 1) % values.len()];
        let got = store.list(&name, v, Timestamp::now(), 100).await.unwrap();
        assert!(got.is_empty(), "{name} = {v:?} still lists {got:?}");
    }
    for v in values.iter().skip(1) {
        assert_eq!(store.end_linked("user", v, Keep::NONE).await.unwrap(), 2);
    }
    if let Some(env) = env {
        assert_every_key_expires(env, "after ending everything");
    }
}
on_every_store!(hostile_link_values_never_cross);

// ---------------------------------------------------------------------------
// Relink / unlink churn racing end_all
// ---------------------------------------------------------------------------

/// A user's sessions are being moved to another user (`link=user:bob`,
/// some with a `cycle`), unlinked, emptied or destroyed while
/// `end_all("user", "alice")` runs. Afterwards nothing is linked to alice,
/// no live session still holds an alice link, every session still linked
/// to bob is live, and every Redis key has a TTL.
async fn relink_churn_racing_end_all<S: SessionStore>(store: S, env: Option<&Env>) {
    let srv = serve_script(dev_layer(store)).await;
    for round in 0..4 {
        let mut sessions = Vec::new();
        for _ in 0..12 {
            sessions.push(sign_in(&srv, "alice").await);
        }
        let mut scripts: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(i, (c, _))| {
                let script = match i % 6 {
                    0 => "link=user:bob",
                    1 => "link=user:bob&cycle",
                    2 => "unlink=user",
                    3 => "unlink=user&link=user:bob&cycle",
                    4 => "clear",
                    _ => "destroy",
                };
                (script.to_owned(), Some(c.clone()))
            })
            .collect();
        // end_all in the middle of the writers.
        scripts.insert(6, ("endall=user:alice".to_owned(), None));
        let mut replies = all_at_once(&srv, scripts).await;
        let ended = replies.remove(6);
        let ended: usize = ended.ok().parse().unwrap();
        assert!(ended <= 12);
        assert!(
            listed(&srv, "alice").await.is_empty(),
            "round {round}: alice still lists sessions after end_all"
        );
        for (i, (reply, (c, pid))) in replies.iter().zip(&sessions).enumerate() {
            assert_eq!(reply.status, 200, "{reply:?}");
            let cookie = reply.new_id().map(|id| common::cookie(&id));
            let cookie = cookie.as_deref().unwrap_or(c);
            let r = srv.raw("get=a&pid", Some(cookie)).await;
            let body = r.ok();
            if body.starts_with('1') {
                // Alive: only a session that was moved or unlinked may be.
                assert!(
                    i % 6 < 4,
                    "round {round}: session {i} ({pid}) lives after clear/destroy"
                );
                let bob = listed(&srv, "bob").await;
                let linked_to_bob = bob.contains(pid);
                assert_eq!(
                    linked_to_bob,
                    i % 6 != 2,
                    "round {round}: live session {i} ({pid}) bob's list {bob:?}"
                );
            }
        }
        // Bob's list holds only live sessions.
        for pid in listed(&srv, "bob").await {
            let gone = srv.raw(&format!("end={pid}"), None).await;
            assert_eq!(gone.ok(), "true", "listed but not endable: {pid}");
        }
        if let Some(env) = env {
            assert_every_key_expires(env, &format!("round {round}"));
        }
    }
}
on_every_store!(relink_churn_racing_end_all);

// ---------------------------------------------------------------------------
// Extreme per-session lifetimes
// ---------------------------------------------------------------------------

/// `set_idle_timeout` with the largest `Duration` the script can make
/// (`u64::MAX` seconds), with zero, and toggling `set_persistent_cookie`:
/// no error, a persistent cookie's `Max-Age` is at most 400 days, a zero
/// timeout counts as one second, and the session is listed with its
/// settings; every Redis key still has a TTL.
async fn extreme_idle_timeouts<S: SessionStore>(store: S, env: Option<&Env>) {
    let srv = serve_script(dev_layer(store)).await;
    let r = srv
        .raw(
            &format!("set=a:1&link=user:dora&idle={}&persist=1", u64::MAX),
            None,
        )
        .await;
    r.ok();
    let pid = pid_of(&srv, &cookie_of(&r)).await;
    let set_cookie = r.set_cookie().unwrap();
    let age = common::max_age(&set_cookie).expect("a persistent cookie");
    assert!(age <= 400 * 86_400, "{set_cookie}");
    let c = cookie_of(&r);
    assert!(alive(&srv, &c).await);
    let l = listed(&srv, "dora").await;
    assert_eq!(l, vec![pid.clone()]);
    if let Some(env) = env {
        assert_every_key_expires(env, "after a u64::MAX-second idle timeout");
    }
    // Back to a browser-session cookie: the next cookie has no Max-Age.
    let r = srv.raw("persist=0&set=b:1", Some(&c)).await;
    r.ok();
    if let Some(sc) = r.set_cookie() {
        assert!(common::max_age(&sc).is_none(), "{sc}");
    }
    // A cycle keeps the settings.
    let r = srv.raw("cycle&set=c:1", Some(&c)).await;
    r.ok();
    let c2 = cookie_of(&r);
    assert!(common::max_age(&r.set_cookie().unwrap()).is_none());
    let r = srv.raw("persist=1&set=d:1", Some(&c2)).await;
    let sc = r
        .set_cookie()
        .expect("persistence changed: the cookie again");
    assert!(
        common::max_age(&sc).is_some_and(|a| a <= 400 * 86_400),
        "{sc}"
    );
    assert!(alive(&srv, &c2).await);

    // Zero counts as one second: the session ends about a second later.
    let r = srv
        .raw("set=a:1&link=user:dora&idle=0&persist=1", None)
        .await;
    r.ok();
    let sc = r.set_cookie().unwrap();
    assert!(common::max_age(&sc).is_some_and(|a| a <= 1), "{sc}");
    let short = cookie_of(&r);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!alive(&srv, &short).await, "a zero idle timeout kept it");
    assert_eq!(listed(&srv, "dora").await, vec![pid]);
    if let Some(env) = env {
        assert_every_key_expires(env, "after the settings churn");
    }
}
on_every_store!(extreme_idle_timeouts);

// ---------------------------------------------------------------------------
// A public id never acts as a session, in any form
// ---------------------------------------------------------------------------

/// The public id sent as the cookie, in upper case, with a UUID's dashes,
/// and the session id passed to `end` as if it were a public id: none
/// loads or ends the session.
async fn public_id_in_every_disguise<S: SessionStore>(store: S, _env: Option<&Env>) {
    let srv = serve_script(dev_layer(store)).await;
    let (c, pid) = sign_in(&srv, "erin").await;
    let id = c.split_once('=').unwrap().1.to_owned();
    let upper = pid.to_uppercase();
    let dashed = format!(
        "{}-{}-{}-{}-{}",
        &pid[0..8],
        &pid[8..12],
        &pid[12..16],
        &pid[16..20],
        &pid[20..32]
    );
    for disguise in [&pid, &upper, &dashed] {
        let r = srv
            .raw("get=a&id&pid", Some(&common::cookie(disguise)))
            .await;
        assert_eq!(r.ok(), "-,-,-", "cookie {disguise}");
    }
    // The session id as a public id: not a public id, or none that names
    // the session.
    let undashed = id.replace('-', "");
    for fake in [&id, &undashed] {
        let r = srv.raw(&format!("end={fake}"), None).await;
        assert!(matches!(r.ok(), "bad" | "false"), "end={fake}: {r:?}");
    }
    for bad in [
        "",
        "0",
        "zz",
        "../x",
        &pid[..31],
        &format!("{pid}0"),
        &upper,
    ] {
        let r = srv.raw(&format!("end={bad}"), None).await;
        let out = r.ok().to_owned();
        assert!(out == "bad" || out == "false", "end={bad:?}: {out}");
    }
    assert!(alive(&srv, &c).await, "a disguise ended the session");
}
on_every_store!(public_id_in_every_disguise);

/// `MemoryStore` only, via `SessionLayer`: the registry of one layer works
/// for the clone that serves (the same store).
#[tokio::test]
async fn registry_of_a_clone_sees_the_same_sessions() {
    let layer = dev_layer(MemoryStore::new());
    let registry = layer.registry();
    let srv = serve_script(SessionLayer::clone(&layer)).await;
    let (_, pid) = sign_in(&srv, "fay").await;
    let l = registry.list("user", "fay").await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].public_id().to_string(), pid);
}
