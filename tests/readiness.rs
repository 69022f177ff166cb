//! `SessionStore::ping`, the readiness check, against real servers: it
//! answers while the server does, fails when the server is killed or hangs
//! (within the store's timeout), and answers again when the server is back,
//! with no new store. On a Cluster every primary must answer. And
//! `examples/redis.rs`'s `/ready` endpoint over HTTP.
//!
//! Needs `redis-server`/`redis-cli` and PostgreSQL's binaries; without them
//! each test prints a loud SKIP and passes, unless `CI=true`.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "postgres")]
mod postgres_support;
#[cfg(feature = "redis")]
#[allow(dead_code)]
#[path = "../examples/redis.rs"]
mod redis_example;
#[cfg(feature = "redis")]
mod redis_support;

use std::time::Duration;

/// Longer than any ping may take with the timeouts the tests set: a ping
/// still running then is a hang, and fails the test.
const NO_HANG: Duration = Duration::from_secs(30);

/// The store's ping, which must finish within [`NO_HANG`].
async fn ping<S: tower_session_storage::SessionStore>(
    store: &S,
) -> Result<(), tower_session_storage::StoreError> {
    tokio::time::timeout(NO_HANG, store.ping())
        .await
        .expect("ping hung")
}

/// SIGSTOP (or SIGCONT) to `pid` and its child processes (PostgreSQL's
/// backends are children of the postmaster).
#[cfg(feature = "postgres")]
fn signal_tree(pid: u32, sig: &str) {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .args(children.split_whitespace())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} {children}");
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::redis_support::{Cluster, Redis};
    use tower_session_storage::{RedisStore, StoreErrorKind};

    #[tokio::test]
    async fn ping_follows_the_server_killed_back_and_hung() {
        if !crate::redis_support::available() {
            return;
        }
        let mut server = Redis::start();
        let store = RedisStore::connect(&server.url())
            .await
            .unwrap()
            .with_command_timeout(Duration::from_millis(300));
        ping(&store).await.unwrap();

        server.crash();
        let e = ping(&store).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e:?}");

        server.restart();
        ping(&store).await.unwrap();

        server.freeze();
        let e = ping(&store).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e:?}");
        server.thaw();
        ping(&store).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_cluster_every_primary_must_answer() {
        if !crate::redis_support::available() {
            return;
        }
        let mut cluster = Cluster::start();
        let store = RedisStore::connect_cluster(&cluster.urls())
            .await
            .unwrap()
            .with_command_timeout(Duration::from_millis(500));
        ping(&store).await.unwrap();
        // Each primary in turn: whichever is down, the ping fails.
        for i in 0..cluster.nodes().len() {
            cluster.nodes_mut()[i].crash();
            let e = ping(&store).await.unwrap_err();
            assert_eq!(e.kind(), StoreErrorKind::Unavailable, "node {i}: {e:?}");
            cluster.nodes_mut()[i].restart();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while ping(&store).await.is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {i} back, but the ping still fails"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    use crate::redis_example;

    /// `GET /ready` on the example: `200 ready` while Redis answers, `503`
    /// naming the failure while it is down, `200` again once it is back.
    #[tokio::test]
    async fn the_examples_ready_endpoint_follows_redis() {
        if !crate::redis_support::available() {
            return;
        }
        let mut server = Redis::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ready", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, redis_example::app("A", store))
                .await
                .unwrap()
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = || async {
            let res = client.get(&url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        };

        assert_eq!(get().await, (200, "ready\n".to_owned()));
        server.crash();
        let (status, body) = get().await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.starts_with("not ready: session store unavailable"),
            "{body}"
        );
        server.restart();
        assert_eq!(get().await, (200, "ready\n".to_owned()));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::postgres_support::Postgres;
    use sqlx::postgres::PgPoolOptions;
    use tower_session_storage::{PostgresStore, StoreErrorKind};

    #[tokio::test]
    async fn ping_follows_the_server_killed_back_and_hung() {
        let Some(mut server) = Postgres::start() else {
            return;
        };
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect(&server.url())
            .await
            .unwrap();
        let store = PostgresStore::new(pool);
        ping(&store).await.unwrap();

        server.crash();
        let e = ping(&store).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e:?}");

        server.restart();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ping(&store).await.is_err() {
            // The pool drops the connections the crash broke as it meets them.
            assert!(std::time::Instant::now() < deadline, "still failing");
        }

        signal_tree(server.pid(), "STOP");
        let e = ping(&store).await.unwrap_err();
        signal_tree(server.pid(), "CONT");
        assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e:?}");
        ping(&store).await.unwrap();
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use tower_session_storage::SqliteStore;

    #[tokio::test]
    async fn ping_answers_and_a_closed_pool_fails() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        ping(&store).await.unwrap();
        store.pool().close().await;
        assert!(ping(&store).await.is_err());
    }
}

#[test]
fn the_memory_store_is_always_ready() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = tower_session_storage::MemoryStore::new();
    rt.block_on(async { ping(&store).await.unwrap() });
}
