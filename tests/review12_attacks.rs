//! Review of issue 12 as an attacker: hostile and lying sentinels, a
//! failover across a logout, readiness while the primary is down, TLS
//! servers that never finish the handshake, malformed PEM, a Cluster with
//! one node's certificate bad.
//!
//! Real `redis-server` processes (tests/redis_support); without them each
//! test that needs one prints a loud SKIP and passes, unless `CI=true`.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;
mod redis_support;

use std::time::{Duration, Instant};

use common::{call, cookie, dev_layer, made_up_id, script_routes};
use redis_support::sentinel::{SentinelSet, MASTER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_session_storage::{RedisStore, SessionStore, StoreError};

/// Longer than any connect or ping may take with the crate's bounds: still
/// running then is a hang, and fails the test.
const NO_HANG: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

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

/// The first two words of one RESP command array at the start of `buf`
/// (the second empty when there is none), and the bytes it took; `None`
/// until it is complete.
fn parse_command(buf: &[u8]) -> Option<((String, String), usize)> {
    fn line(buf: &[u8], pos: &mut usize) -> Option<String> {
        let rest = &buf[*pos..];
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        *pos += end + 2;
        Some(s)
    }
    let mut pos = 0;
    let n: usize = line(buf, &mut pos)?.strip_prefix('*')?.parse().ok()?;
    let mut words = Vec::new();
    for _ in 0..n {
        let len: usize = line(buf, &mut pos)?.strip_prefix('$')?.parse().ok()?;
        if buf.len() < pos + len + 2 {
            return None;
        }
        let arg = String::from_utf8_lossy(&buf[pos..pos + len]).into_owned();
        pos += len + 2;
        if words.len() < 2 {
            words.push(arg);
        }
    }
    let mut words = words.into_iter();
    let first = words.next().unwrap_or_default();
    Some(((first, words.next().unwrap_or_default()), pos))
}

/// A fake sentinel on a free loopback port: answers `SENTINEL …` with
/// `reply` (raw RESP, possibly garbage) and every other command (the
/// client's `CLIENT SETINFO`, `AUTH`, …) with `+OK`. With `reply` `None`
/// it accepts connections and never answers anything. Returns its URL.
async fn fake_sentinel(reply: Option<Vec<u8>>) -> String {
    fake_sentinel_by(reply.map(|r| move |_: &str| r.clone())).await
}

/// A fake sentinel that answers `SENTINEL <sub> …` with `reply(sub)`, and
/// every other command with `+OK`; with `None`, never answers.
async fn fake_sentinel_by<F>(reply: Option<F>) -> String
where
    F: Fn(&str) -> Vec<u8> + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(reply) = &reply else { continue };
                    while let Some(((cmd, sub), used)) = parse_command(&buf) {
                        buf.drain(..used);
                        let out = if cmd.eq_ignore_ascii_case("SENTINEL") {
                            reply(&sub.to_ascii_uppercase())
                        } else {
                            b"+OK\r\n".to_vec()
                        };
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}")
}

/// A `SENTINEL MASTER` reply (RESP2: field, value, …).
fn master_reply(fields: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", fields.len()).into_bytes();
    for f in fields {
        out.extend_from_slice(format!("${}\r\n{f}\r\n", f.len()).as_bytes());
    }
    out
}

/// Garbage, truncated, mistyped and out-of-range answers to `SENTINEL
/// MASTER`: each is an error at connect, never a panic or a hang.
#[tokio::test]
async fn hostile_sentinel_replies_are_errors_not_panics() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let replies: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(b"+OK\r\n".to_vec()),
        Some(b":42\r\n".to_vec()),
        Some(b"*-1\r\n".to_vec()),
        Some(b"$-1\r\n".to_vec()),
        Some(b"-ERR go away\r\n".to_vec()),
        Some(b"hello there\r\n".to_vec()),
        Some(b"*2\r\n*1\r\n:1\r\n%1\r\n+a\r\n+b\r\n".to_vec()),
        Some(b"$100000000\r\nshort".to_vec()),
        Some(master_reply(&["ip", "127.0.0.1", "port"])),
        Some(master_reply(&[
            "ip",
            "127.0.0.1",
            "port",
            "-1",
            "config-epoch",
            "1",
        ])),
        Some(master_reply(&[
            "ip",
            "127.0.0.1",
            "port",
            "70000",
            "config-epoch",
            "1",
        ])),
        Some(master_reply(&[
            "ip",
            "127.0.0.1",
            "port",
            "0",
            "config-epoch",
            "1",
        ])),
        Some(master_reply(&[
            "ip",
            "127.0.0.1",
            "port",
            &dead,
            "config-epoch",
            "99999999999999999999999",
        ])),
        Some(master_reply(&[
            "ip",
            "not a host\r\n",
            "port",
            &dead,
            "config-epoch",
            "1",
        ])),
        Some(master_reply(&[
            "ip",
            "256.256.256.256",
            "port",
            &dead,
            "config-epoch",
            "1",
        ])),
        Some(master_reply(&[
            "ip",
            "127.0.0.1",
            "port",
            &dead,
            "config-epoch",
            "1",
        ])),
    ];
    for reply in replies {
        let shown = reply
            .as_ref()
            .map(|r| String::from_utf8_lossy(r).into_owned());
        let url = fake_sentinel(reply).await;
        let e = bounded(
            "connect_sentinel",
            RedisStore::connect_sentinel(&[&url], MASTER),
        )
        .await
        .map(drop)
        .unwrap_err();
        let text = chain(&e);
        assert!(text.contains("Sentinel"), "{shown:?}: {text}");
    }
}

/// A sentinel that lies with the newest epoch, listed first, naming the
/// replica or a port nobody listens on: the store checks `ROLE` and ends up
/// on the real primary; sessions are written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_sentinel_cannot_send_the_store_to_a_replica_or_a_dead_port() {
    if !redis_support::available() {
        return;
    }
    let set = SentinelSet::start();
    let replica = set.nodes()[1].port().to_string();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let mut urls = Vec::new();
    for port in [&replica, &dead] {
        let reply = master_reply(&[
            "name",
            MASTER,
            "ip",
            "127.0.0.1",
            "port",
            port,
            "config-epoch",
            "1000000",
        ]);
        urls.push(fake_sentinel(Some(reply)).await);
    }
    urls.extend(set.sentinel_urls());
    let store = bounded(
        "connect_sentinel",
        RedisStore::connect_sentinel(&urls, MASTER),
    )
    .await
    .unwrap();
    let app = script_routes().layer(dev_layer(store.clone()));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    assert_eq!(
        call(&app, "get=user", Some(&cookie(&id))).await.ok(),
        "alice"
    );
    let mut primary = set.node_conn(0).unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("session:{{{id}}}"))
        .query(&mut primary)
        .unwrap();
    assert_eq!(exists, 1, "the session is on the real primary");
    bounded("ping", store.ping()).await.unwrap();
}

/// One sentinel (listed first, with the newest epoch) names a Redis that is
/// not part of the set at all but answers `ROLE master` (an unrelated,
/// empty server: a sentinel of another deployment monitoring the same
/// name, or a lying one). The other three sentinels agree on the real
/// primary. Following the lone newest epoch would make every existing
/// session read as absent (a silent logout for every user): the store
/// ignores a sentinel no other sentinel knows, naming an address no other
/// sentinel names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_sentinel_naming_an_unrelated_master_does_not_log_everyone_out() {
    if !redis_support::available() {
        return;
    }
    let set = SentinelSet::start();
    let store = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();

    let stranger = redis_support::Redis::start();
    let reply = master_reply(&[
        "name",
        MASTER,
        "ip",
        "127.0.0.1",
        "port",
        &stranger.port().to_string(),
        "config-epoch",
        "1000000",
    ]);
    let mut urls = vec![fake_sentinel(Some(reply)).await];
    urls.extend(set.sentinel_urls());
    let store = bounded(
        "connect_sentinel",
        RedisStore::connect_sentinel(&urls, MASTER),
    )
    .await
    .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let r = call(&app, "get=user", Some(&cookie(&id))).await;
    assert!(
        r.status == 503 || r.body == "alice",
        "silent logout: the store went to a master only one sentinel names: {r:?}"
    );
}

/// The case the epoch rule is for, with the group check on: two of three
/// sentinels lag behind a failover (an older epoch) and name the old
/// primary, restarted empty (it answers `ROLE master`); one knows the new
/// primary. All three know each other (`SENTINEL MYID`, `SENTINEL
/// SENTINELS`), so all count, and the newest epoch still wins over the
/// majority: sessions go to the new primary, never to the empty old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_lagging_behind_a_failover_do_not_outvote_the_newest_epoch() {
    if !redis_support::available() {
        return;
    }
    let old = redis_support::Redis::start();
    let new = redis_support::Redis::start();
    let ids = ["aaaa", "bbbb", "cccc"];
    let mut urls = Vec::new();
    for (i, (primary, epoch)) in [(&old, "1"), (&new, "2"), (&old, "1")]
        .into_iter()
        .enumerate()
    {
        let master = master_reply(&[
            "name",
            MASTER,
            "ip",
            "127.0.0.1",
            "port",
            &primary.port().to_string(),
            "config-epoch",
            epoch,
        ]);
        let me = ids[i];
        let mut peers = format!("*{}\r\n", ids.len() - 1).into_bytes();
        for peer in ids.iter().filter(|p| **p != me) {
            peers.extend(master_reply(&[
                "ip",
                "127.0.0.1",
                "port",
                "1",
                "runid",
                peer,
            ]));
        }
        let myid = format!("${}\r\n{me}\r\n", me.len()).into_bytes();
        urls.push(
            fake_sentinel_by(Some(move |sub: &str| match sub {
                "MASTER" => master.clone(),
                "MYID" => myid.clone(),
                "SENTINELS" => peers.clone(),
                _ => b"-ERR unknown subcommand\r\n".to_vec(),
            }))
            .await,
        );
    }
    let store = bounded(
        "connect_sentinel",
        RedisStore::connect_sentinel(&urls, MASTER),
    )
    .await
    .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    let key = format!("session:{{{id}}}");
    let on = |r: &redis_support::Redis| -> i64 {
        redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut r.admin())
            .unwrap()
    };
    assert_eq!(
        (on(&new), on(&old)),
        (1, 0),
        "the session is on the new primary"
    );
}

/// The primary is killed right after a logout (acknowledged by the
/// replica): through the whole failover the logged-out session never comes
/// back, the live one is never answered empty (503 or its data), an unknown
/// id is never adopted, and `ping` is never `Ok` before the replica is
/// promoted. Afterwards everything answers from the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_after_a_logout_never_undoes_it_and_ping_waits_for_the_promotion() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap()
        .with_replica_ack(1, Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500));
    let app = script_routes().layer(dev_layer(store.clone()));
    let gone = call(&app, "set=user:mallory", None).await.new_id().unwrap();
    let live = call(&app, "set=user:alice", None).await.new_id().unwrap();
    let r = call(&app, "destroy", Some(&cookie(&gone))).await;
    assert!(r.expires_cookie(), "{r:?}");
    bounded("ping", store.ping()).await.unwrap();

    set.nodes_mut()[0].crash();
    let unknown = made_up_id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut down, mut promoted) = (0, false);
    while Instant::now() < deadline {
        let pinged = bounded("ping", store.ping()).await;
        if pinged.is_ok() {
            // Only the replica is left: Ok means it is the primary now.
            assert_eq!(set.role(1).as_deref(), Some("master"));
            promoted = true;
        } else {
            down += 1;
        }
        let r = call(&app, "get=user", Some(&cookie(&gone))).await;
        assert!(r.status == 503 || r.body == "-", "logout undone: {r:?}");
        let read = call(&app, "get=user", Some(&cookie(&live))).await;
        assert!(read.status == 503 || read.body == "alice", "{read:?}");
        // (A write needs the promoted primary to have a replica again, with
        // replica acknowledgement: this one stays 503.)
        let r = call(&app, "set=x:1", Some(&cookie(&unknown))).await;
        assert_ne!(r.new_id().as_deref(), Some(unknown.as_str()), "adopted");
        if promoted && read.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(promoted, "no promotion within a minute");
    assert!(down > 0, "ping never failed while the primary was down");
    assert_eq!(call(&app, "get=user", Some(&cookie(&gone))).await.ok(), "-");
    assert_eq!(
        call(&app, "get=user", Some(&cookie(&live))).await.ok(),
        "alice"
    );
}

/// Repeated kills: the primary is killed, the replica promoted, the old
/// primary comes back as its replica, then the new primary is killed in
/// turn. The same store follows both failovers; a session written before,
/// between and after is never answered empty, a logout between the two
/// failovers stays a logout, and `ping` is `Ok` at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failovers_in_a_row_are_followed_by_the_same_store() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap()
        .with_replica_ack(1, Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500));
    let app = script_routes().layer(dev_layer(store.clone()));
    let first = call(&app, "set=user:alice", None).await.new_id().unwrap();

    /// Until a request on `id` answers 200; never an empty session.
    async fn until_back(app: &axum::Router, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = call(app, "get=user", Some(&cookie(id))).await;
            assert!(r.status == 503 || r.body == want, "{r:?}");
            if r.status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "no failover within a minute");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    set.nodes_mut()[0].crash();
    until_back(&app, &first, "alice").await;
    set.wait_primary(1, 60);
    set.restart_as_replica(0);
    set.wait_replica(0, 60);
    // Writes are acknowledged again: one more session, and a logout.
    let second = call(&app, "set=user:bob", None).await.new_id().unwrap();
    let gone = call(&app, "set=user:eve", None).await.new_id().unwrap();
    assert!(call(&app, "destroy", Some(&cookie(&gone)))
        .await
        .expires_cookie());

    set.nodes_mut()[1].crash();
    until_back(&app, &first, "alice").await;
    until_back(&app, &second, "bob").await;
    assert_eq!(call(&app, "get=user", Some(&cookie(&gone))).await.ok(), "-");
    assert_eq!(set.role(0).as_deref(), Some("master"));
    bounded("ping", store.ping()).await.unwrap();
}

/// With replica acknowledgement, a `cycle_id` whose `WAIT` times out (the
/// replica hangs) answers 503, but the move was applied on the primary:
/// the browser keeps the old id (no `Set-Cookie` on the 503), and that id
/// no longer exists. Once the replica is back, the user's next request
/// finds no session: a silent logout after a 503 (the same holds when the
/// primary then fails over to a replica that did get the move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: an unacknowledged cycle_id (with_replica_ack) is applied on the primary but \
            answered 503 without the new cookie; the old id is gone, so the user is logged out \
            (the move would need undoing, or the new id handed out with the 503)"]
async fn an_unacknowledged_cycle_does_not_log_the_user_out() {
    if !redis_support::available() {
        return;
    }
    let primary = redis_support::Redis::start_primary();
    let replica = redis_support::Redis::start_replica_of(&primary);
    let store = RedisStore::connect(&primary.url())
        .await
        .unwrap()
        .with_replica_ack(1, Duration::from_millis(300));
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=user:alice", None).await.new_id().unwrap();
    replica.freeze();
    let r = call(&app, "cycle", Some(&cookie(&id))).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.new_id(), None, "no new cookie on a 503");
    replica.thaw();
    let r = call(&app, "get=user", Some(&cookie(&id))).await;
    assert!(
        r.status == 503 || r.body == "alice",
        "silent logout after an unacknowledged cycle: {r:?}"
    );
}

/// A hung primary (SIGSTOP): `ping` fails within the command timeout and
/// a bit (never hangs), is never `Ok` before the replica is promoted, and
/// is `Ok` again afterwards with the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_on_a_hung_sentinel_primary_fails_then_follows_the_failover() {
    if !redis_support::available() {
        return;
    }
    let set = SentinelSet::start();
    let store = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap()
        .with_command_timeout(Duration::from_millis(500));
    bounded("ping", store.ping()).await.unwrap();
    set.nodes()[0].freeze();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        match bounded("ping", store.ping()).await {
            Ok(()) => {
                // Node 0 cannot answer: only the promoted replica can.
                assert_eq!(set.role(1).as_deref(), Some("master"));
                break;
            }
            Err(_) => failed += 1,
        }
        assert!(Instant::now() < deadline, "no failover within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed > 0, "ping never failed while the primary hung");
    set.nodes()[0].thaw();
}

/// Both data nodes dead, so a resolution never ends by itself (it retries
/// for a minute): while the store lives it keeps asking the sentinels;
/// once the store is dropped the task stops within a round (it holds the
/// store only weakly between rounds): no task leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_mid_failover_ends_the_resolution() {
    if !redis_support::available() {
        return;
    }
    let mut set = SentinelSet::start();
    let store = RedisStore::connect_sentinel(&set.sentinel_urls(), MASTER)
        .await
        .unwrap();
    set.nodes_mut()[1].crash();
    set.nodes_mut()[0].crash();
    // The primary's connection fails: a resolution starts.
    assert!(bounded("ping", store.ping()).await.is_err());
    let window = Duration::from_secs(2);
    let before = connections_received(&set);
    tokio::time::sleep(window).await;
    let alive = connections_received(&set) - before;
    drop(store);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = connections_received(&set);
    tokio::time::sleep(window).await;
    let dropped = connections_received(&set) - before;
    // Each measurement opens one connection per sentinel itself.
    let own = set.sentinel_urls().len() as u64;
    assert!(
        alive > own,
        "no resolution seen while the store lived: {alive}"
    );
    assert_eq!(dropped, own, "the resolution outlived the store");
}

/// `total_connections_received`, summed over the sentinels.
fn connections_received(set: &SentinelSet) -> u64 {
    let mut n = 0;
    for url in set.sentinel_urls() {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
        n += info
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap();
    }
    n
}

#[cfg(feature = "redis-tls")]
mod tls {
    use super::*;
    use redis_support::{Cluster, TlsFiles};
    use tower_session_storage::RedisTls;

    /// A server that accepts TCP and never says a word: `connect_tls`,
    /// `connect` with `rediss://`, `connect_cluster_tls` and a Sentinel
    /// over TLS all fail within their bound.
    #[tokio::test]
    async fn a_server_that_never_completes_the_handshake_fails_connect() {
        let silent = fake_sentinel(None).await;
        let port = silent.rsplit(':').next().unwrap().to_owned();
        let url = format!("rediss://127.0.0.1:{port}");
        let files = TlsFiles::generate();
        let tls = RedisTls::new().with_root_certificates(std::fs::read(&files.ca).unwrap());
        let e = bounded("connect_tls", RedisStore::connect_tls(&url, tls.clone()))
            .await
            .map(drop)
            .unwrap_err();
        assert!(!chain(&e).is_empty());
        bounded("connect", RedisStore::connect(&url))
            .await
            .map(drop)
            .unwrap_err();
        bounded(
            "connect_cluster_tls",
            RedisStore::connect_cluster_tls(&[&url], tls.clone()),
        )
        .await
        .map(drop)
        .unwrap_err();
        bounded(
            "connect_sentinel_with tls",
            RedisStore::connect_sentinel_with(
                &[&url],
                MASTER,
                tower_session_storage::store::redis::SentinelOptions::new().with_tls(tls),
            ),
        )
        .await
        .map(drop)
        .unwrap_err();
    }

    /// Malformed PEM of every shape is refused at once, with no panic.
    #[tokio::test]
    async fn malformed_pem_is_refused_not_a_panic() {
        let url = "rediss://127.0.0.1:1";
        let files = TlsFiles::generate();
        let ca = std::fs::read(&files.ca).unwrap();
        let cert = std::fs::read(&files.client_cert).unwrap();
        let key = std::fs::read(&files.client_key).unwrap();
        let mut truncated = ca.clone();
        truncated.truncate(ca.len() / 2);
        let mut flipped = ca.clone();
        let mid = flipped.len() / 2;
        flipped[mid] = b'!';
        let hostile: Vec<Vec<u8>> = vec![
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            vec![0xff; 4096],
            vec![0; 10],
            truncated,
            flipped,
            key.clone(),
        ];
        for pem in hostile {
            let tls = RedisTls::new().with_root_certificates(pem.clone());
            let r = bounded("connect_tls", RedisStore::connect_tls(url, tls)).await;
            assert!(r.is_err());
            let tls = RedisTls::new().with_client_certificate(pem.clone(), key.clone());
            let r = bounded("connect_tls", RedisStore::connect_tls(url, tls)).await;
            assert!(r.is_err());
            let tls = RedisTls::new().with_client_certificate(cert.clone(), pem);
            let r = bounded("connect_tls", RedisStore::connect_tls(url, tls)).await;
            assert!(r.is_err());
        }
        // A key that does not match the certificate.
        let other = TlsFiles::generate();
        let tls = RedisTls::new()
            .with_root_certificates(ca)
            .with_client_certificate(cert, std::fs::read(&other.client_key).unwrap());
        let r = bounded("connect_tls", RedisStore::connect_tls(url, tls)).await;
        assert!(r.is_err());
    }

    /// A TLS Cluster where one node serves a certificate the client cannot
    /// accept (expired): connecting fails, or the store connects and then
    /// `ping` fails; never a hang, never a ready store that cannot reach
    /// that node's slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_with_one_bad_certificate_is_not_ready() {
        if !redis_support::available() {
            return;
        }
        let files = TlsFiles::generate();
        let cluster = Cluster::start_tls(&files);
        cluster.nodes()[1].serve_expired_certificate();
        let tls = RedisTls::new()
            .with_root_certificates(std::fs::read(&files.ca).unwrap())
            .with_client_certificate(
                std::fs::read(&files.client_cert).unwrap(),
                std::fs::read(&files.client_key).unwrap(),
            );
        match bounded(
            "connect_cluster_tls",
            RedisStore::connect_cluster_tls(&cluster.urls(), tls),
        )
        .await
        {
            Err(e) => assert!(!chain(&e).is_empty()),
            Ok(store) => {
                let e = bounded("ping", store.ping()).await.unwrap_err();
                assert!(!chain(&e).is_empty());
            }
        }
    }
}
