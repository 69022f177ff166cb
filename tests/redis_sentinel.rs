//! `RedisStore::connect_sentinel` against real processes on loopback
//! ports: a primary, a replica and three sentinels (`redis-server
//! --sentinel`). Sessions through the store and the layer; a sentinel
//! down; connect errors; passwords; a primary killed (SIGKILL) or hung
//! (SIGSTOP) while clients make requests: 503s during the failover, never
//! an empty session or a logout, then 200s on the promoted replica with no
//! app restart; the old primary back as a replica gets no writes. With the
//! feature `redis-tls`: the same over TLS (`SentinelOptions::with_tls`;
//! data nodes serving TLS only, sentinels reached plain or over TLS), a
//! kill failover over TLS, and the TLS mistakes as clear connect errors.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`. Without them each test
//! prints a loud SKIP and passes, unless `CI=true`, where it fails.
//!
//! The default run does one failover per kind (well under a minute in
//! all). `TSS_SENTINEL_SOAK=<runs>` adds a soak: that many kill failovers
//! with and without replica acknowledgement, printing the failover time,
//! the 503s and the acknowledged writes lost.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;
mod redis_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, cookie, dev_layer, script_routes};
use redis_support::sentinel::{Auth, SentinelSet, MASTER};
use tower_session_storage::store::redis::SentinelOptions;
use tower_session_storage::{RedisStore, StoreError, StoreErrorKind};

/// The error and its causes, as a log line shows them.
fn chain(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

async fn connect(set: &SentinelSet) -> RedisStore {
    RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap()
}

/// Through a `SessionLayer` on `store`: a session is created, loaded and
/// saved, cycled (the old id no longer loads), and destroyed.
async fn sessions_round_trip(store: RedisStore) {
    let app = script_routes().layer(dev_layer(store));
    let r = call(&app, "set=user:alice", None).await;
    let id = r.new_id().expect("a new session");
    assert_eq!(
        call(&app, "get=user&set=n:1", Some(&cookie(&id)))
            .await
            .ok(),
        "alice"
    );
    let r = call(&app, "cycle&get=n", Some(&cookie(&id))).await;
    assert_eq!(r.ok(), "1");
    let new = r.new_id().expect("cycled");
    assert_ne!(new, id);
    assert_eq!(call(&app, "get=user", Some(&cookie(&id))).await.ok(), "-");
    let r = call(&app, "destroy", Some(&cookie(&new))).await;
    assert!(r.expires_cookie(), "{r:?}");
    assert_eq!(call(&app, "get=user", Some(&cookie(&new))).await.ok(), "-");
}

/// Sessions through the store and a `SessionLayer`: create, load, save,
/// cycle, destroy; a sentinel down changes nothing; the database option is
/// honoured; an unknown master name is a clear error at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_through_sentinel_and_a_sentinel_down_does_not_matter() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = connect(&set).await;
    assert!(format!("{store:?}").contains("sentinel"), "{store:?}");
    sessions_round_trip(store).await;

    // The first sentinel in the list is down: connect asks the next.
    set.sentinels_mut()[0].crash();
    let store = connect(&set).await;
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:bob", None).await.new_id().unwrap();
    assert_eq!(call(&app, "get=user", Some(&cookie(&id))).await.ok(), "bob");

    // with_master_db: the session lives in that database.
    let store = RedisStore::connect_sentinel_with(
        &set.sentinel_urls(),
        MASTER,
        SentinelOptions::new().with_master_db(3),
    )
    .await
    .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:carol", None).await.new_id().unwrap();
    let mut c = set.node_conn(0).unwrap();
    let key = format!("session:{{{id}}}");
    let in_db0: i64 = redis::cmd("EXISTS").arg(&key).query(&mut c).unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let in_db3: i64 = redis::cmd("EXISTS").arg(&key).query(&mut c).unwrap();
    assert_eq!((in_db0, in_db3), (0, 1));

    let e = RedisStore::connect_sentinel(&set.sentinel_urls(), "no-such-master")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Other, "{}", chain(&e));
    let msg = chain(&e);
    assert!(
        msg.contains("no-such-master") && msg.contains("sentinel monitor"),
        "{msg}"
    );
}

/// Connect errors name what is wrong: no sentinel answering, an empty
/// list, a malformed URL, an empty name.
#[tokio::test]
async fn connect_errors_are_clear() {
    let dead: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("redis://127.0.0.1:{}", l.local_addr().unwrap().port())
        })
        .collect();
    let e = RedisStore::connect_sentinel(&dead, MASTER)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{}", chain(&e));
    assert!(
        chain(&e).contains("none of the 2 sentinels answered"),
        "{}",
        chain(&e)
    );
    let none: [&str; 0] = [];
    let e = RedisStore::connect_sentinel(&none, MASTER)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Other, "{}", chain(&e));
    assert!(chain(&e).contains("at least one sentinel"), "{}", chain(&e));
    let e = RedisStore::connect_sentinel(&["not a url"], MASTER)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Other, "{}", chain(&e));
    assert!(chain(&e).contains("invalid sentinel URL"), "{}", chain(&e));
    let e = RedisStore::connect_sentinel(&dead, "").await.unwrap_err();
    assert!(chain(&e).contains("master name is empty"), "{}", chain(&e));
}

/// A password-protected primary (and replica), and sentinels with a
/// password of their own: given through the options or in the URLs. A
/// missing primary password is a clear error at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_primary_and_sentinels() {
    if !redis_support::available() {
        return;
    }
    let set = SentinelSet::start_with(Auth {
        data: Some("data-pw".into()),
        sentinel: Some("sentinel-pw".into()),
    });
    let options = SentinelOptions::new()
        .with_master_password("data-pw")
        .with_sentinel_password("sentinel-pw");
    assert!(!format!("{options:?}").contains("-pw"), "{options:?}");
    let store = RedisStore::connect_sentinel_with(&set.sentinel_urls(), MASTER, options)
        .await
        .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    assert_eq!(
        call(&app, "get=user", Some(&cookie(&id))).await.ok(),
        "alice"
    );

    // The sentinels' password in their URLs.
    let urls: Vec<String> = set
        .sentinel_urls()
        .iter()
        .map(|u| u.replacen("redis://", "redis://:sentinel-pw@", 1))
        .collect();
    let store = RedisStore::connect_sentinel_with(
        &urls,
        MASTER,
        SentinelOptions::new().with_master_password("data-pw"),
    )
    .await
    .unwrap();
    let app = script_routes().layer(dev_layer(store));
    assert_eq!(
        call(&app, "get=user", Some(&cookie(&id))).await.ok(),
        "alice"
    );

    // No primary password: the sentinels answer, the primary refuses.
    let e = RedisStore::connect_sentinel(&urls, MASTER)
        .await
        .unwrap_err();
    assert!(chain(&e).contains("NOAUTH"), "{}", chain(&e));
    // No sentinel password: no sentinel answers.
    let e = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{}", chain(&e));
    assert!(chain(&e).contains("NOAUTH"), "{}", chain(&e));
}

/// What the clients saw during one failover.
#[derive(Debug, Default)]
struct Seen {
    /// Responses with status 503.
    unavailable: usize,
    /// How far a 200's counter fell back below the last acknowledged one:
    /// acknowledged writes lost.
    lost: u64,
    /// From the fault to each client's first 200 after it.
    back_after: Vec<Duration>,
}

/// `clients` sessions made through `app`, each with an item `user` and a
/// counter `n`; returns their cookies.
async fn make_sessions(app: &axum::Router, clients: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..clients {
        let r = call(app, &format!("set=user:u{i}&incr=n"), None).await;
        out.push(cookie(&r.new_id().unwrap_or_else(|| panic!("{r:?}"))));
    }
    out
}

/// Shared between the clients and the test driving them.
#[derive(Default)]
struct Progress {
    /// When the primary was hurt.
    fault: std::sync::Mutex<Option<Instant>>,
    /// Clients that had a 200 after the fault.
    back: AtomicUsize,
    stop: AtomicBool,
}

/// One client: increments its session's counter in a loop until told to
/// stop, asserting that every answer is its session (its `user`, a
/// counter) or a 503, never an empty session and never a `Set-Cookie`.
async fn client(app: axum::Router, cookie: String, i: usize, progress: Arc<Progress>) -> Seen {
    let mut seen = Seen::default();
    let mut last = 0u64;
    let mut back = None;
    while !progress.stop.load(Ordering::Relaxed) {
        let r = call(&app, "get=user&incr=n", Some(&cookie)).await;
        assert!(
            r.set_cookie_named(common::NAME).is_none(),
            "a Set-Cookie during the failover: {r:?}"
        );
        let hurt = *progress.fault.lock().unwrap();
        match r.status {
            200 => {
                let (user, n) = r.body.split_once(',').unwrap();
                assert_eq!(user, format!("u{i}"), "a 200 without the session: {r:?}");
                let n: u64 = n.parse().unwrap();
                seen.lost += (last + 1).saturating_sub(n);
                last = n;
                if let (Some(t), None) = (hurt, back) {
                    back = Some(t.elapsed());
                    progress.back.fetch_add(1, Ordering::Relaxed);
                }
            }
            503 => seen.unavailable += 1,
            _ => panic!("neither the session nor 503: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen.back_after.extend(back);
    seen
}

/// One failover under load: clients run on `cookies` through `app`; `hurt`
/// harms the primary (node `old`); once the sentinels have promoted the
/// replica, `promoted` runs; the clients stop once each has had a 200
/// after the fault and a moment has passed.
async fn failover_under_load(
    set: &mut SentinelSet,
    app: &axum::Router,
    cookies: &[String],
    hurt: impl FnOnce(&mut SentinelSet, usize),
    promoted: impl FnOnce(&mut SentinelSet, usize),
) -> Seen {
    let progress = Arc::new(Progress::default());
    let clients: Vec<_> = cookies
        .iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(client(app.clone(), c.clone(), i, progress.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = tokio::task::block_in_place(|| set.named_primary()).unwrap();
    eprintln!(
        "failover: node {old} (port {}) is the primary; node {} (port {}) the replica",
        set.nodes()[old].port(),
        1 - old,
        set.nodes()[1 - old].port()
    );
    hurt(set, old);
    *progress.fault.lock().unwrap() = Some(Instant::now());
    tokio::task::block_in_place(|| {
        set.wait_primary(1 - old, 60);
        promoted(set, old);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.back.load(Ordering::Relaxed) < cookies.len() {
        assert!(
            Instant::now() < deadline,
            "requests still fail 30 s after the replica was promoted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    progress.stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for c in clients {
        let s = c.await.unwrap();
        all.unavailable += s.unavailable;
        all.lost += s.lost;
        all.back_after.extend(s.back_after);
    }
    all.back_after.sort();
    all
}

fn report(what: &str, seen: &Seen) {
    eprintln!(
        "sentinel {what}: fault to first 200 {:?} (first client) to {:?} (last); {} answers were \
         503; {} acknowledged writes lost",
        seen.back_after.first().unwrap(),
        seen.back_after.last().unwrap(),
        seen.unavailable,
        seen.lost
    );
}

/// Client writes (`EVALSHA`/`EVAL`) node `i` has run since it started.
fn writes_on(set: &SentinelSet, i: usize) -> u64 {
    set.calls(i, "evalsha") + set.calls(i, "eval")
}

/// The primary is killed (SIGKILL) while clients make requests, with one
/// sentinel down too: 503s during the failover, never an empty session or
/// a `Set-Cookie`; then 200s on the promoted replica through the same store
/// (no app restart). Sessions written with replica acknowledgement are all
/// there. The old primary, started again, comes back as a replica and gets
/// no writes from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_primary_is_503_then_200_on_the_promoted_replica() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = connect(&set).await;
    let acked = store.clone().with_replica_ack(1, Duration::from_secs(1));
    let ack_app = script_routes().layer(dev_layer(acked));
    let app = script_routes().layer(dev_layer(store));
    let cookies = make_sessions(&ack_app, 4).await;
    let kept = make_sessions(&ack_app, 8).await;
    set.sentinels_mut()[0].crash();

    let seen = failover_under_load(
        &mut set,
        &app,
        &cookies,
        |s, old| s.nodes_mut()[old].crash(),
        |_, _| {},
    )
    .await;
    report("kill (no replica ack)", &seen);
    for (i, c) in kept.iter().enumerate() {
        let r = call(&app, "get=user&get=n", Some(c)).await;
        assert_eq!(
            r.ok(),
            format!("u{i},1"),
            "written with replica ack before the kill"
        );
    }

    // The old primary comes back: the sentinels make it a replica, and
    // the store keeps writing to the new primary only. With a replica
    // again, acknowledged writes work again too.
    tokio::task::block_in_place(|| {
        set.nodes_mut()[0].restart();
        set.wait_replica(0, 40);
    });
    let before = writes_on(&set, 0);
    for (i, c) in cookies.iter().enumerate() {
        let r = call(&ack_app, "get=user&set=more:1", Some(c)).await;
        assert_eq!(r.ok(), format!("u{i}"));
    }
    assert_eq!(writes_on(&set, 0), before, "the old primary got writes");
    assert!(writes_on(&set, 1) > 0);
}

/// The primary hangs (SIGSTOP: connections open, nothing answers) while
/// clients make requests: timeouts, then fast 503s while the store asks
/// the sentinels, then 200s once the replica is promoted. Thawed, the old
/// primary becomes a replica and gets no writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_primary_is_503_then_200_after_the_failover() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = connect(&set)
        .await
        .with_command_timeout(Duration::from_millis(500));
    let acked = store.clone().with_replica_ack(1, Duration::from_secs(1));
    let cookies = make_sessions(&script_routes().layer(dev_layer(acked)), 4).await;
    let app = script_routes().layer(dev_layer(store));

    let seen = failover_under_load(
        &mut set,
        &app,
        &cookies,
        |s, old| s.nodes()[old].freeze(),
        |_, _| {},
    )
    .await;
    report("SIGSTOP", &seen);
    assert!(seen.unavailable > 0, "the hang was noticed: {seen:?}");

    tokio::task::block_in_place(|| {
        set.nodes()[0].thaw();
        set.wait_replica(0, 40);
    });
    let before = writes_on(&set, 0);
    for (i, c) in cookies.iter().enumerate() {
        let r = call(&app, "get=user&set=more:1", Some(c)).await;
        assert_eq!(r.ok(), format!("u{i}"));
    }
    assert_eq!(
        writes_on(&set, 0),
        before,
        "the thawed old primary got writes"
    );
}

/// Replica acknowledgement across a failover: the replica is cut off while
/// sessions are written, then the primary is killed and the replica is
/// promoted. Writes answered 200 without `with_replica_ack` were only on
/// the dead primary and are lost (the count is printed); with it, those
/// writes were answered 503 instead, and every write answered 200 is there
/// after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_replica_ack_no_write_answered_200_is_lost_in_a_failover() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = connect(&set).await;
    let acked = store
        .clone()
        .with_replica_ack(1, Duration::from_millis(200));
    let app = script_routes().layer(dev_layer(store));
    let ack_app = script_routes().layer(dev_layer(acked));
    // Made with ack: the sessions themselves are on the replica.
    let cookies = make_sessions(&ack_app, 4).await;
    let mut acked_n = Vec::new();
    for c in &cookies {
        acked_n.push(call(&ack_app, "incr=a", Some(c)).await.ok().to_owned());
    }
    // Replication stops: the replica is cut off and cannot log in again
    // (the connections already open, the store's and the sentinels', stay
    // logged in).
    let mut admin = set.node_conn(0).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("cut-off")
        .query(&mut admin)
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut admin)
        .unwrap();
    let (mut answered_plain, mut refused_acked) = (Vec::new(), 0);
    for c in &cookies {
        let mut last = String::new();
        for _ in 0..3 {
            last = call(&app, "incr=n", Some(c)).await.ok().to_owned();
        }
        answered_plain.push(last.parse::<u64>().unwrap());
        let r = call(&ack_app, "incr=a", Some(c)).await;
        assert_eq!(r.status, 503, "no replica acknowledged: {r:?}");
        refused_acked += 1;
    }
    tokio::task::block_in_place(|| {
        set.nodes_mut()[0].crash();
        set.wait_primary(1, 60);
    });
    let mut lost_plain = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, c) in cookies.iter().enumerate() {
        let r = loop {
            let r = call(&app, "get=user&get=a&get=n", Some(c)).await;
            if r.status != 503 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let parts: Vec<&str> = r.ok().split(',').collect();
        assert_eq!(parts[0], format!("u{i}"), "the session is there: {r:?}");
        assert_eq!(
            parts[1], acked_n[i],
            "a write answered 200 with replica ack survives: {r:?}"
        );
        let n: u64 = parts[2].parse().unwrap();
        lost_plain += answered_plain[i].saturating_sub(n);
    }
    eprintln!(
        "sentinel, replica cut off then primary killed: {lost_plain} writes answered 200 without \
         replica ack were lost; with replica ack, {refused_acked} writes were answered 503 and \
         none answered 200 was lost"
    );
}

/// Measurements, off by default: `TSS_SENTINEL_SOAK=<runs>` kills the
/// primary `runs` times without and `runs` times with replica
/// acknowledgement (the old primary is started again at once as a replica,
/// so the promoted one has a replica to acknowledge), printing each
/// failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_failovers() {
    let Some(runs) = std::env::var("TSS_SENTINEL_SOAK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        eprintln!("soak_failovers: set TSS_SENTINEL_SOAK=<runs> to run it");
        return;
    };
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = connect(&set).await;
    let acked = store.clone().with_replica_ack(1, Duration::from_secs(1));
    for ack in [false, true] {
        let app = script_routes().layer(dev_layer(if ack { acked.clone() } else { store.clone() }));
        let cookies = make_sessions(&app, 8).await;
        for run in 0..runs {
            let failovers = set.failovers();
            let seen = failover_under_load(
                &mut set,
                &app,
                &cookies,
                |s, old| {
                    // Where replication stood at the kill.
                    let pick = |i: usize, keys: &[&str]| {
                        let info = s.info(i, "replication").unwrap_or_default();
                        info.lines()
                            .filter(|l| keys.iter().any(|k| l.starts_with(k)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    eprintln!(
                        "soak: at the kill, primary {} / replica {}",
                        pick(
                            old,
                            &["role", "slave0", "master_repl_offset", "master_replid:"]
                        ),
                        pick(
                            1 - old,
                            &[
                                "role",
                                "master_port",
                                "master_link_status",
                                "master_last_io",
                                "master_sync_in_progress",
                                "slave_read_repl_offset",
                                "slave_repl_offset",
                                "master_replid:"
                            ]
                        )
                    );
                    s.nodes_mut()[old].crash();
                },
                |s, old| s.restart_as_replica(old),
            )
            .await;
            report(&format!("soak run {run}, replica ack {ack}"), &seen);
            let old = 1 - set.named_primary().unwrap();
            tokio::task::block_in_place(|| set.wait_replica(old, 40));
            eprintln!(
                "soak: client writes on the restarted old primary: {}; failovers in this run: {}",
                writes_on(&set, old),
                set.failovers() - failovers
            );
        }
    }
}

/// Sentinel with TLS (`SentinelOptions::with_tls`): data nodes that serve
/// TLS only, sentinels that talk TLS to them and listen both plain and
/// TLS (see `redis_support::sentinel`).
#[cfg(feature = "redis-tls")]
mod tls {
    use super::*;
    use redis_support::TlsFiles;
    use tower_session_storage::RedisTls;

    /// Longer than any connect may take: a connect still running then is a
    /// hang, and fails the test.
    const NO_HANG: Duration = Duration::from_secs(30);

    /// The test CA and the client certificate (mutual TLS).
    fn mutual(files: &TlsFiles) -> SentinelOptions {
        SentinelOptions::new().with_tls(
            RedisTls::new()
                .with_root_certificates(TlsFiles::read(&files.ca))
                .with_client_certificate(
                    TlsFiles::read(&files.client_cert),
                    TlsFiles::read(&files.client_key),
                ),
        )
    }

    /// A connect that must fail: its error. Panics when it succeeds or
    /// does not finish within [`NO_HANG`].
    async fn refused(urls: &[String], options: SentinelOptions) -> StoreError {
        let connect = RedisStore::connect_sentinel_with(urls, MASTER, options);
        match tokio::time::timeout(NO_HANG, connect).await {
            Err(_) => panic!("connect hung for {NO_HANG:?}"),
            Ok(Ok(store)) => panic!("connect succeeded: {store:?}"),
            Ok(Err(e)) => {
                eprintln!("connect refused: {}", chain(&e));
                e
            }
        }
    }

    /// Sessions over TLS: plain sentinels naming a TLS-only primary, and
    /// the same sentinels through their TLS port (`rediss://`). Without
    /// `with_tls`, or with a CA that did not sign the certificates, connect
    /// fails at once with an error that says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_work_over_tls_and_tls_mistakes_are_clear_errors() {
        if !redis_support::available() {
            return;
        }
        let files = TlsFiles::generate();
        let set = SentinelSet::start_tls(&files);
        let primary = format!("127.0.0.1:{}", set.nodes()[0].port());

        // Plain sentinels, TLS primary.
        let store = RedisStore::connect_sentinel_with(&set.sentinel_urls(), MASTER, mutual(&files))
            .await
            .unwrap();
        // The store reaches the primary: a session it saves is there.
        let app = script_routes().layer(dev_layer(store.clone()));
        let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
        let key = format!("session:{{{id}}}");
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut set.node_conn(0).unwrap())
            .unwrap();
        assert_eq!(exists, 1, "the session is on the TLS primary");
        sessions_round_trip(store).await;

        // The sentinels over TLS too.
        let store =
            RedisStore::connect_sentinel_with(&set.sentinel_tls_urls(), MASTER, mutual(&files))
                .await
                .unwrap();
        sessions_round_trip(store).await;

        // No `with_tls`: the sentinels answer, the primary does not speak
        // plain TCP.
        let e = refused(&set.sentinel_urls(), SentinelOptions::new()).await;
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{}", chain(&e));
        let msg = chain(&e);
        assert!(
            msg.contains(&primary) && msg.contains("with_tls"),
            "names the primary and the fix: {msg}"
        );
        // `rediss://` sentinels without `with_tls`: the public roots do
        // not trust the test CA.
        let e = refused(&set.sentinel_tls_urls(), SentinelOptions::new()).await;
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{}", chain(&e));
        assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));

        // A CA that did not sign the servers' certificates.
        let other = TlsFiles::generate();
        let wrong_ca = || {
            SentinelOptions::new().with_tls(
                RedisTls::new()
                    .with_root_certificates(TlsFiles::read(&other.ca))
                    .with_client_certificate(
                        TlsFiles::read(&files.client_cert),
                        TlsFiles::read(&files.client_key),
                    ),
            )
        };
        let e = refused(&set.sentinel_urls(), wrong_ca()).await;
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{}", chain(&e));
        let msg = chain(&e);
        // (`BadSignature` here rather than `UnknownIssuer`: both test CAs
        // have the same name.)
        assert!(
            msg.contains(&primary) && msg.contains("invalid peer certificate"),
            "{msg}"
        );
        let e = refused(&set.sentinel_tls_urls(), wrong_ca()).await;
        let msg = chain(&e);
        assert!(
            msg.contains("none of the 3 sentinels answered")
                && msg.contains("invalid peer certificate"),
            "{msg}"
        );
    }

    /// The TLS primary is killed (SIGKILL) while clients make requests:
    /// 503s during the failover, never an empty session or a
    /// `Set-Cookie`, then 200s on the promoted replica over TLS, through
    /// the same store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn killed_tls_primary_is_503_then_200_on_the_promoted_replica() {
        if !redis_support::available() {
            return;
        }
        let files = TlsFiles::generate();
        let mut set = SentinelSet::start_tls(&files);
        let store = RedisStore::connect_sentinel_with(&set.sentinel_urls(), MASTER, mutual(&files))
            .await
            .unwrap();
        let acked = store.clone().with_replica_ack(1, Duration::from_secs(1));
        let cookies = make_sessions(&script_routes().layer(dev_layer(acked)), 4).await;
        let app = script_routes().layer(dev_layer(store));

        let seen = failover_under_load(
            &mut set,
            &app,
            &cookies,
            |s, old| s.nodes_mut()[old].crash(),
            |_, _| {},
        )
        .await;
        report("kill over TLS", &seen);
        assert!(seen.unavailable > 0, "the kill was noticed: {seen:?}");
        // The promoted replica has the sessions and takes new ones.
        let id = call(&app, "set=user:new", None).await.new_id().unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(format!("session:{{{id}}}"))
            .query(&mut set.node_conn(1).unwrap())
            .unwrap();
        assert_eq!(exists, 1, "the session is on the promoted replica");
    }
}
