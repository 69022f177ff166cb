//! `RedisStore` over TLS (feature `redis-tls`) against real `redis-server`
//! processes serving TLS only (`--port 0 --tls-port …`), with a CA, server
//! and client certificates the test makes (rcgen): the store-agnostic suite
//! over mutual TLS, a 3-node Cluster over TLS (`--tls-cluster yes`), and
//! every way a handshake can fail, each a clear error at connect, never a
//! hang.
//!
//! Needs `redis-server` built with TLS and `redis-cli` on `PATH`. Without
//! them each test prints a loud SKIP and passes, unless `CI=true`, where it
//! fails.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use redis_support::fixtures::{at, new_id, now, record, sets};
use redis_support::{unique_prefix, Cluster, Redis, TlsFiles};
use tower_session_storage::store::{CycleOutcome, Renewal, SaveOutcome, Timestamp};
use tower_session_storage::{RedisStore, RedisTls, SessionStore, StoreError};

/// Longer than any connect may take (three attempts of at most 1 s, with
/// backoff): a connect still running then is a hang, and fails the test.
const NO_HANG: Duration = Duration::from_secs(30);

/// The test CA, trusted instead of the public roots.
fn trusting(files: &TlsFiles) -> RedisTls {
    RedisTls::new().with_root_certificates(TlsFiles::read(&files.ca))
}

/// The test CA and the client certificate (mutual TLS).
fn mutual(files: &TlsFiles) -> RedisTls {
    trusting(files).with_client_certificate(
        TlsFiles::read(&files.client_cert),
        TlsFiles::read(&files.client_key),
    )
}

/// A connect that must fail: its error, with the whole `source()` chain as
/// text. Panics when it succeeds or does not finish within [`NO_HANG`].
async fn refused(
    connect: impl std::future::Future<Output = Result<RedisStore, StoreError>>,
) -> String {
    match tokio::time::timeout(NO_HANG, connect).await {
        Err(_) => panic!("connect hung for {NO_HANG:?}"),
        Ok(Ok(store)) => panic!("connect succeeded: {store:?}"),
        Ok(Err(e)) => {
            let text = chain(&e);
            eprintln!("connect refused: {text}");
            text
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A store on the shared mutual-TLS server (Redis's default: client
/// certificates required), under a fresh prefix; `None` (after a SKIP)
/// without Redis.
async fn mutual_tls_store() -> Option<RedisStore> {
    let (files, server) = redis_support::shared_tls()?;
    let store = RedisStore::connect_tls(&server.url(), mutual(files))
        .await
        .unwrap()
        .with_key_prefix(unique_prefix());
    Some(store)
}

/// tests/common's suite over mutual TLS.
mod mutual_tls_suite {
    session_store_suite!(match crate::mutual_tls_store().await {
        Some(store) => store,
        None => return,
    });
}

/// The store's operations one by one over TLS: create, load, save, cycle,
/// end, ping.
async fn round_trip(store: &RedisStore) {
    let id = new_id();
    let t = now();
    let rec = record(&[("token", "eyJ.x.y")], 60_000);
    assert!(store.create(&id, &rec).await.unwrap());
    let loaded = store.load(&id, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(loaded.items.get("token"), Some("eyJ.x.y"));
    let out = store
        .save(
            &id,
            &sets(&[("user", "alice")]),
            Renewal::until(at(t + 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(out, SaveOutcome::Saved);
    let new = new_id();
    let out = store
        .cycle(&id, &new, &sets(&[]), Renewal::until(at(t + 60_000)))
        .await
        .unwrap();
    assert_eq!(out, CycleOutcome::Moved);
    assert!(store.load(&id, Timestamp::now()).await.unwrap().is_none());
    let moved = store.load(&new, Timestamp::now()).await.unwrap().unwrap();
    assert_eq!(moved.items.get("user"), Some("alice"));
    store.end(&new, &moved.public_id).await.unwrap();
    assert!(store.load(&new, Timestamp::now()).await.unwrap().is_none());
    store.ping().await.unwrap();
}

/// A server that does not ask for client certificates, trusted through
/// `with_root_certificates`.
#[tokio::test]
async fn a_private_ca_is_trusted_with_root_certificates() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "no"]);
    let store = RedisStore::connect_tls(&server.url(), trusting(&files))
        .await
        .unwrap()
        .with_key_prefix(unique_prefix());
    round_trip(&store).await;
}

/// Mutual TLS: the store presents its client certificate and the server,
/// which demands one, accepts it.
#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "yes"]);
    let store = RedisStore::connect_tls(&server.url(), mutual(&files))
        .await
        .unwrap()
        .with_key_prefix(unique_prefix());
    round_trip(&store).await;
}

/// A 3-node Cluster over TLS (`--tls-cluster yes`, client certificates
/// required): the client follows the cluster to every node over TLS, and a
/// cycle moves a session between slots (usually nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_serves_sessions() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let cluster = Cluster::start_tls(&files);
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let store = RedisStore::connect_cluster_tls(&cluster.urls(), mutual(&files))
        .await
        .unwrap()
        .with_key_prefix(unique_prefix());
    // Enough sessions that every node holds some.
    for _ in 0..12 {
        round_trip(&store).await;
    }
    // Without the client certificate, the cluster refuses.
    let e = refused(RedisStore::connect_cluster_tls(
        &cluster.urls(),
        trusting(&files),
    ))
    .await;
    assert!(!e.is_empty());
}

/// `connect` with a `rediss://` URL trusts the public web PKI only: a
/// server whose certificate a private CA signed is refused, by name.
#[tokio::test]
async fn a_plain_rediss_url_trusts_only_the_public_roots() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "no"]);
    let e = refused(RedisStore::connect(&server.url())).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
}

/// A CA that did not sign the server's certificate.
#[tokio::test]
async fn a_wrong_ca_is_an_error_at_connect() {
    if !redis_support::available() {
        return;
    }
    let (files, other) = (TlsFiles::generate(), TlsFiles::generate());
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "no"]);
    let e = refused(RedisStore::connect_tls(&server.url(), trusting(&other))).await;
    assert!(e.contains("invalid peer certificate"), "{e}");
}

/// A server certificate that expired.
#[tokio::test]
async fn an_expired_server_certificate_is_an_error_at_connect() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "no"]);
    server.serve_expired_certificate();
    let e = refused(RedisStore::connect_tls(&server.url(), trusting(&files))).await;
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");
}

/// A server that demands a client certificate, and the store has none.
#[tokio::test]
async fn a_missing_client_certificate_is_an_error_at_connect() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let server = Redis::start_tls(&files, &["--tls-auth-clients", "yes"]);
    let e = refused(RedisStore::connect_tls(&server.url(), trusting(&files))).await;
    assert!(e.contains("CertificateRequired"), "{e}");
}

/// `rediss://` to a port that speaks plain TCP (a plain Redis): an error,
/// not a hang.
#[tokio::test]
async fn rediss_to_a_plain_port_is_an_error_at_connect() {
    if !redis_support::available() {
        return;
    }
    let files = TlsFiles::generate();
    let plain = Redis::start();
    let url = plain.url().replace("redis://", "rediss://");
    let e = refused(RedisStore::connect_tls(&url, trusting(&files))).await;
    assert!(!e.is_empty());
    // And a `redis://` URL to a TLS-only port.
    let tls = Redis::start_tls(&files, &["--tls-auth-clients", "no"]);
    let url = tls.url().replace("rediss://", "redis://");
    let e = refused(RedisStore::connect(&url)).await;
    assert!(!e.is_empty());
}

/// Settings that cannot work are refused before any connection: PEM text
/// without a certificate or key, and a `redis://` URL for `connect_tls`.
#[tokio::test]
async fn unreadable_settings_are_refused_at_once() {
    let url = "rediss://127.0.0.1:1";
    let e = refused(RedisStore::connect_tls(
        url,
        RedisTls::new().with_root_certificates(b"not a certificate".to_vec()),
    ))
    .await;
    assert!(e.contains("with_root_certificates"), "{e}");
    let e = refused(RedisStore::connect_tls(
        url,
        RedisTls::new().with_client_certificate(b"junk".to_vec(), b"junk".to_vec()),
    ))
    .await;
    assert!(e.contains("with_client_certificate"), "{e}");
    let e = refused(RedisStore::connect_tls(
        "redis://127.0.0.1:1",
        RedisTls::new(),
    ))
    .await;
    assert!(e.contains("rediss://"), "{e}");
    let e = refused(RedisStore::connect_cluster_tls(
        &[url],
        RedisTls::new().with_root_certificates(Vec::new()),
    ))
    .await;
    assert!(e.contains("with_root_certificates"), "{e}");
    let e = refused(RedisStore::connect_cluster_tls(
        &[url, "redis://127.0.0.1:2"],
        RedisTls::new(),
    ))
    .await;
    assert!(e.contains("rediss://"), "{e}");
}

/// `Debug` shows which settings are present, never a certificate or key.
#[test]
fn debug_never_prints_key_material() {
    let tls = RedisTls::new()
        .with_root_certificates(b"-----BEGIN CERTIFICATE-----\nCAFE\n".to_vec())
        .with_client_certificate(
            b"-----BEGIN CERTIFICATE-----\nBEEF\n".to_vec(),
            b"-----BEGIN PRIVATE KEY-----\nSECRET\n".to_vec(),
        );
    let text = format!("{tls:?}");
    for secret in ["CAFE", "BEEF", "SECRET", "BEGIN"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(text.contains("client_certificate: true"), "{text}");
    let _ = Arc::new(tls);
}
