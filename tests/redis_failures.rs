//! `RedisStore` when Redis refuses or fails, against real `redis-server`
//! processes on loopback ports: Redis's `OOM` and `BUSY` answers, the
//! eviction-policy check, a Cluster failover (3 primaries + 3 replicas),
//! and replica acknowledgement (`with_replica_ack`), standalone and
//! Cluster.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;
mod redis_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{call, cookie, dev_layer, script_routes};
use redis_support::fixtures::{at, new_id, now, record};
use redis_support::{Cluster, Redis};
use tower_session_storage::store::{Renewal, Timestamp};
use tower_session_storage::{RedisStore, SessionStore, StoreErrorKind};

// ---------------------------------------------------------------------------
// Redis's own refusals: OOM, BUSY
// ---------------------------------------------------------------------------

/// SECURITY.md #37: with `maxmemory` reached and `noeviction`, Redis answers `OOM`
/// to writes: creating a session is 503 (`StoreErrorKind::Full`), never
/// 500; reads of existing sessions answer 200, and so does a read whose
/// idle refresh is due (the refresh only moves the TTL, which Redis allows
/// under OOM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_is_503_for_writes_while_reads_and_due_refreshes_answer_200() {
    if !redis_support::available() {
        return;
    }
    let server = Redis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // Refresh step: 16 s / 16 = 1 s.
    let app =
        script_routes().layer(dev_layer(store.clone()).with_idle_timeout(Duration::from_secs(16)));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    let c = cookie(&id);
    let key = format!("session:{{{id}}}");
    server.config_set("maxmemory-policy", "noeviction");
    server.config_set("maxmemory", "1");

    let r = call(&app, "set=user:bob", None).await;
    assert_eq!(r.status, 503, "a new session while Redis is full: {r:?}");
    let e = store
        .create(&new_id(), &record(&[("a", "1")], 60_000))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Full, "{e}");
    let r = call(&app, "set=more:1", Some(&c)).await;
    assert_eq!(r.status, 503, "a write to an existing session: {r:?}");

    assert_eq!(call(&app, "get=user", Some(&c)).await.ok(), "alice");
    let expires_before: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query(&mut server.admin())
        .unwrap();
    // Past the refresh step: this read's refresh is due. It only moves
    // the key's TTL (the expiry is not in the hash), which takes no memory
    // and which Redis allows under OOM: the refresh succeeds, so a full
    // Redis does not log idle users out either.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = call(&app, "get=user", Some(&c)).await;
    assert_eq!(r.ok(), "alice", "a due refresh under OOM: the read answers");
    let expires_after: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query(&mut server.admin())
        .unwrap();
    assert!(expires_after > expires_before, "the refresh moved the TTL");
    assert!(store
        .touch(&common::parse_id(&id), Renewal::until(at(now() + 16_000)))
        .await
        .unwrap());

    server.config_set("maxmemory", "0");
    assert_eq!(call(&app, "set=more:1&get=more", Some(&c)).await.ok(), "1");
}

/// A sign-in (`cycle_id`) on a Cluster whose memory is full: the move takes
/// the session from its old slot and cannot write it into the new one. The
/// first step probes for room with a write Redis refuses under `OOM` before
/// it deletes anything, so the request answers 503 and the session is still
/// there under its id: a full Redis never logs a user out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_cycle_under_oom_is_503_and_keeps_the_session() {
    if !redis_support::available() {
        return;
    }
    let cluster = Cluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls()).await.unwrap();
    let old = new_id();
    assert!(store
        .create(&old, &record(&[("csrf", "x")], 600_000))
        .await
        .unwrap());
    let set_maxmemory = |bytes: &str| {
        for n in cluster.nodes() {
            n.config_set("maxmemory-policy", "noeviction");
            n.config_set("maxmemory", bytes);
        }
    };
    set_maxmemory("1");
    let mut changes = tower_session_storage::store::ChangeSet::new();
    changes.set("user", "alice");
    let cycled = store
        .cycle(
            &old,
            &new_id(),
            &changes,
            Renewal::until(at(now() + 600_000)),
        )
        .await;
    set_maxmemory("0");
    let err = cycled.expect_err("no room to move the session");
    assert_eq!(err.kind(), StoreErrorKind::Full, "{err}");
    let kept = store.load(&old, Timestamp::now()).await.unwrap();
    assert_eq!(
        kept.as_ref().and_then(|r| r.items.get("csrf")),
        Some("x"),
        "a failed sign-in on a full Cluster logged the user out"
    );
}

/// SECURITY.md #37: a script running too long makes Redis answer `BUSY` to
/// everyone: the request gets 503; after `SCRIPT KILL` the next succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_script_is_503_and_the_next_request_succeeds() {
    if !redis_support::available() {
        return;
    }
    let server = Redis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let app = script_routes().layer(dev_layer(store));
    let c = cookie(&call(&app, "set=user:alice", None).await.new_id().unwrap());
    server.config_set("busy-reply-threshold", "100");
    let url = server.url();
    let busy = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        // Ends with an error once killed.
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<redis::Value>(&mut conn)
            .is_err()
    });
    // Wait (bounded) until Redis answers BUSY.
    let started = Instant::now();
    let mut busy_seen = false;
    while started.elapsed() < Duration::from_secs(30) {
        match redis::cmd("PING").query::<String>(&mut server.admin()) {
            Err(e) if e.code() == Some("BUSY") => {
                busy_seen = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut answers = Vec::new();
    if busy_seen {
        for script in ["get=user", "set=more:1"] {
            answers.push((script, call(&app, script, Some(&c)).await));
        }
    }
    // Kill the script before any assertion: a busy Redis ignores SIGTERM,
    // so a failed assertion must not leave it spinning.
    let killed = (0..100).any(|_| {
        let ok = redis::cmd("SCRIPT")
            .arg("KILL")
            .query::<()>(&mut server.admin())
            .is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(
        busy_seen && killed,
        "Redis never answered BUSY, or the script could not be killed"
    );
    for (script, r) in answers {
        assert_eq!(r.status, 503, "{script} while Redis is BUSY: {r:?}");
    }
    assert!(busy.join().unwrap(), "the busy script was killed");
    assert_eq!(call(&app, "get=user", Some(&c)).await.ok(), "alice");
}

// ---------------------------------------------------------------------------
// Eviction policy
// ---------------------------------------------------------------------------

/// Captures the messages of `WARN` events.
#[derive(Default, Clone)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", f.name(), v));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut t = Text(String::new());
            event.record(&mut t);
            self.0.lock().unwrap().push(t.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Connects with `warnings` capturing this thread's events.
async fn connect_capturing(url: &str, warnings: &Warnings) -> RedisStore {
    let _guard = tracing::subscriber::set_default(warnings.clone());
    RedisStore::connect(url).await.unwrap()
}

/// SECURITY.md #38: `connect` reads `maxmemory-policy`; a policy that can evict
/// (every session key has a TTL, so volatile-* evicts sessions too) gets
/// a warning naming the fix; `noeviction` none; a server that refuses
/// `CONFIG` is tolerated.
#[tokio::test(flavor = "current_thread")]
async fn eviction_policy_is_read_and_evicting_policies_are_warned() {
    if !redis_support::available() {
        return;
    }
    for (policy, warned) in [
        (None, false),
        (Some("allkeys-lru"), true),
        (Some("volatile-ttl"), true),
    ] {
        let server = match policy {
            Some(p) => Redis::start_args(&["--maxmemory-policy", p]),
            None => Redis::start(),
        };
        let warnings = Warnings::default();
        let store = connect_capturing(&server.url(), &warnings).await;
        assert_eq!(
            store.eviction_policy(),
            Some(policy.unwrap_or("noeviction")),
            "{policy:?}"
        );
        let w = warnings.0.lock().unwrap().clone();
        let named = w.iter().any(|m| m.contains("maxmemory-policy noeviction"));
        assert_eq!(named, warned, "{policy:?}: {w:?}");
    }
    // CONFIG disabled (as on managed Redis): connects, policy unknown.
    let server = Redis::start_args(&["--rename-command", "CONFIG", ""]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(store.eviction_policy(), None);
    let id = new_id();
    assert!(store
        .create(&id, &record(&[("a", "1")], 60_000))
        .await
        .unwrap());
}

/// SECURITY.md #38 on a cluster: the policy is read through the cluster connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_policy_is_read_on_a_cluster() {
    let Some(cluster) = redis_support::shared_cluster() else {
        return;
    };
    let store = RedisStore::connect_cluster(&cluster.urls()).await.unwrap();
    assert_eq!(store.eviction_policy(), Some("noeviction"));
}

// ---------------------------------------------------------------------------
// Replication: failover, replica acknowledgement
// ---------------------------------------------------------------------------

/// Waits (bounded) until every replica of `cluster` has every write of its
/// primary.
fn wait_replicated(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in cluster.nodes().iter().filter(|n| n.is_running()) {
        loop {
            let info = n.info("replication");
            if !info.contains("role:master") {
                break;
            }
            let field = |name: &str| -> Option<i64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            };
            let master = field("master_repl_offset:");
            let replica = info.lines().find_map(|l| {
                let rest = l.strip_prefix("slave0:")?;
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix("offset="))?
                    .parse::<i64>()
                    .ok()
            });
            if master.is_some() && master == replica {
                break;
            }
            assert!(Instant::now() < deadline, "replication never caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The index of the replica of the primary at `primary`.
fn replica_of(cluster: &Cluster, primary: usize) -> usize {
    let port = cluster.nodes()[primary].port();
    cluster
        .nodes()
        .iter()
        .position(|n| {
            n.info("replication")
                .contains(&format!("master_port:{port}\r"))
        })
        .expect("the primary has a replica")
}

/// Sessions spread over slots: `(cookie, user)` pairs made through `app`.
async fn sessions(app: &axum::Router, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let user = format!("user{i}");
        let r = call(app, &format!("set=user:{user}"), None).await;
        let id = r.new_id().unwrap_or_else(|| panic!("session {i}: {r:?}"));
        out.push((id, user));
    }
    out
}

/// Polls every session until all answer 200 again, asserting that every
/// answer on the way is either the right data or a 503 (never an empty
/// session). Returns how many 503s were seen.
async fn until_all_back(app: &axum::Router, sessions: &[(String, String)]) -> usize {
    let started = Instant::now();
    let mut unavailable = 0;
    loop {
        let mut all_ok = true;
        for (id, user) in sessions {
            let r = call(app, "get=user", Some(&cookie(id))).await;
            match r.status {
                200 => assert_eq!(&r.body, user, "a 200 with the wrong data: {r:?}"),
                503 => {
                    unavailable += 1;
                    all_ok = false;
                }
                _ => panic!("neither the session nor 503: {r:?}"),
            }
        }
        if all_ok {
            return unavailable;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "requests still failing 60 s after the primary died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Failover: a primary of a cluster with replicas is killed (SIGKILL).
/// Requests on its slots get 503, never an empty session; once its replica
/// is promoted they succeed again through the same store, sessions intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_is_503_then_the_sessions_are_back() {
    if !redis_support::available() {
        return;
    }
    let mut cluster = Cluster::start_with_replicas();
    let store = RedisStore::connect_cluster(&cluster.urls())
        .await
        .unwrap()
        .with_command_timeout(Duration::from_secs(1));
    let app = script_routes().layer(dev_layer(store));
    let all = sessions(&app, 24).await;
    wait_replicated(&cluster);
    let victim = cluster
        .primary_of(&format!("session:{{{}}}", all[0].0))
        .unwrap();
    let on_victim: Vec<(String, String)> = all
        .iter()
        .filter(|(id, _)| cluster.primary_of(&format!("session:{{{id}}}")) == Some(victim))
        .cloned()
        .collect();
    assert!(!on_victim.is_empty());
    // Its replica hangs first, so no failover can happen until it runs
    // again: meanwhile every request on the dead primary's slots must be a
    // 503 (never an empty session), whatever the timing.
    let replica = replica_of(&cluster, victim);
    cluster.nodes()[replica].freeze();
    let started = Instant::now();
    cluster.nodes_mut()[victim].crash();
    for round in 0..2 {
        for (id, user) in &all {
            let r = call(&app, "get=user", Some(&cookie(id))).await;
            if on_victim.iter().any(|(v, _)| v == id) {
                assert_eq!(r.status, 503, "round {round}, primary dead: {r:?}");
            } else if r.status == 200 {
                assert_eq!(&r.body, user, "{r:?}");
            } else {
                assert_eq!(r.status, 503, "{r:?}");
            }
        }
    }
    cluster.nodes()[replica].thaw();
    let unavailable = until_all_back(&app, &all).await;
    eprintln!(
        "failover: every session back {:?} after the kill; {unavailable} answers were 503; \
         {} of {} sessions lived on the killed primary",
        started.elapsed(),
        on_victim.len(),
        all.len()
    );
    // Writes work again on the moved slots.
    let (id, _) = &on_victim[0];
    assert_eq!(
        call(&app, "set=more:1&get=more", Some(&cookie(id)))
            .await
            .ok(),
        "1"
    );
}

/// Replica acknowledgement: with `with_replica_ack(1, …)`, a write whose replica is frozen
/// (SIGSTOP) answers 503 within the ack timeout; reads still work; once
/// the replica runs again, writes answer 200. A server with no replica at
/// all cannot acknowledge either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_ack_with_a_frozen_replica_is_503() {
    if !redis_support::available() {
        return;
    }
    let primary = Redis::start_primary();
    let replica = Redis::start_replica_of(&primary);
    let store = RedisStore::connect(&primary.url())
        .await
        .unwrap()
        .with_replica_ack(1, Duration::from_secs(1));
    let app = script_routes().layer(dev_layer(store.clone()));
    // One session per write to try (a 503 write may still have applied,
    // so a cycled session is not there for the next one).
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
        let c = cookie(&id);
        assert_eq!(call(&app, "set=more:1&get=more", Some(&c)).await.ok(), "1");
        cookies.push(c);
    }

    replica.freeze();
    for (script, c) in ["set=more:2", "cycle", "destroy"].into_iter().zip(&cookies) {
        let started = Instant::now();
        let r = call(&app, script, Some(c)).await;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{script} unacknowledged: {r:?}");
        assert!(took < Duration::from_secs(10), "{script}: took {took:?}");
        if script == "set=more:2" {
            // The write was applied on the primary (a 503 may have been),
            // and reads do not wait for replicas.
            assert_eq!(call(&app, "get=more", Some(c)).await.ok(), "2");
        }
    }
    let r = call(&app, "set=user:bob", None).await;
    assert_eq!(r.status, 503, "a new session unacknowledged: {r:?}");
    let e = store
        .create(&new_id(), &record(&[("a", "1")], 60_000))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
    replica.thaw();
    let id = call(&app, "set=user:carol", None).await.new_id().unwrap();
    assert_eq!(
        call(&app, "get=user", Some(&cookie(&id))).await.ok(),
        "carol"
    );

    let lone = Redis::start();
    let store = RedisStore::connect(&lone.url())
        .await
        .unwrap()
        .with_replica_ack(1, Duration::from_millis(100));
    let e = store
        .create(&new_id(), &record(&[("a", "1")], 60_000))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
}

/// Replica acknowledgement on a cluster: `WAIT` goes to the node that owns the key (a
/// frozen replica of one shard fails writes on that shard only), and
/// writes acknowledged before a primary is killed survive the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_ack_on_a_cluster_waits_on_the_key_owner_and_survives_failover() {
    if !redis_support::available() {
        return;
    }
    let mut cluster = Cluster::start_with_replicas();
    let store = RedisStore::connect_cluster(&cluster.urls())
        .await
        .unwrap()
        .with_command_timeout(Duration::from_secs(1))
        .with_replica_ack(1, Duration::from_secs(1));
    let app = script_routes().layer(dev_layer(store));
    let all = sessions(&app, 24).await;
    let key = |id: &str| format!("session:{{{id}}}");
    let shard = |id: &str| cluster.primary_of(&key(id)).unwrap();

    // Freeze the replica of the first session's shard.
    let frozen_shard = shard(&all[0].0);
    let replica = replica_of(&cluster, frozen_shard);
    cluster.nodes()[replica].freeze();
    let other = all
        .iter()
        .find(|(id, _)| shard(id) != frozen_shard)
        .unwrap();
    let r = call(&app, "set=x:1", Some(&cookie(&all[0].0))).await;
    assert_eq!(r.status, 503, "unacknowledged write: {r:?}");
    let r = call(&app, "set=x:1", Some(&cookie(&other.0))).await;
    assert_eq!(
        r.status, 200,
        "a write on another shard waits on its own replica: {r:?}"
    );
    cluster.nodes()[replica].thaw();
    let mut ok = false;
    for _ in 0..100 {
        if call(&app, "set=x:1", Some(&cookie(&all[0].0))).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes kept failing after the replica ran again");

    // Acknowledged writes, then the primary dies at once: all survive.
    let acked = sessions(&app, 24).await;
    let victim = shard(&acked[0].0);
    cluster.nodes_mut()[victim].crash();
    let unavailable = until_all_back(&app, &acked).await;
    eprintln!("ack failover: {unavailable} answers were 503");
}
