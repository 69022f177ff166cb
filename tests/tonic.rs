//! Drives `examples/tonic.rs` with a real tonic server and a real tonic client
//! on loopback: the session id travels in the `x-session-id` metadata entry
//! (`SessionLayer::with_header_transport`), and store failures reach the
//! client as gRPC statuses.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;
#[allow(dead_code)]
#[path = "../examples/tonic.rs"]
mod tonic_example;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};
use tower_service::Service;
use tower_session_storage::{MemoryStore, SessionId, SessionStorage, SessionStore, StoreError};

use common::TestStore;
use tonic_example::{
    CounterClient, CounterReply, Empty, IncrementRequest, SessionMetadata, SignInRequest,
    SESSION_HEADER,
};

/// A well-formed UUID v4 the server never issued.
const MADE_UP: &str = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";

/// The example's server over `store` on `127.0.0.1:0`, and a client of it.
async fn start<S: SessionStore>(store: S) -> CounterClient {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tonic_example::serve(listener, store));
    CounterClient::connect(&url).await.unwrap()
}

/// A request carrying `id` (any text) in the session metadata entry.
fn with_id<T>(message: T, id: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(id) = id {
        req.metadata_mut()
            .insert(SESSION_HEADER, id.parse().unwrap());
    }
    req
}

/// The session id the response carries, if any.
fn returned_id(metadata: &MetadataMap) -> Option<String> {
    assert!(
        metadata.get_all(SESSION_HEADER).iter().count() <= 1,
        "at most one id in the response"
    );
    metadata
        .get(SESSION_HEADER)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn increment(client: &mut CounterClient, id: Option<&str>) -> Response<CounterReply> {
    client
        .increment(with_id(IncrementRequest { by: 1 }, id))
        .await
        .unwrap()
}

#[tokio::test]
async fn counter_advances_across_calls_with_the_metadata_id() {
    let store = MemoryStore::new();
    let mut client = start(store.clone()).await;

    let res = increment(&mut client, None).await;
    assert_eq!(res.get_ref().value, 1);
    let id = returned_id(res.metadata()).expect("the first write returns an id");
    assert!(id.parse::<SessionId>().is_ok(), "{id}");

    for n in 2..=4 {
        let res = increment(&mut client, Some(&id)).await;
        assert_eq!(res.get_ref().value, n);
        assert_eq!(
            returned_id(res.metadata()),
            None,
            "no id in the response when it did not change"
        );
    }

    // Without the id, another session starts from 1.
    let res = increment(&mut client, None).await;
    assert_eq!(res.get_ref().value, 1);
    assert_ne!(returned_id(res.metadata()).unwrap(), id);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn the_example_client_helper_keeps_and_forgets_the_id() {
    let mut client = start(MemoryStore::new()).await;
    let mut session = SessionMetadata::default();
    for n in 1..=3 {
        let res = client
            .increment(session.request(IncrementRequest { by: 1 }))
            .await
            .unwrap();
        session.update(res.metadata());
        assert_eq!(res.get_ref().value, n);
    }
    let first = session.id().unwrap().to_owned();
    let res = client.sign_out(session.request(Empty {})).await.unwrap();
    session.update(res.metadata());
    assert_eq!(session.id(), None, "an empty id in the response: forget it");
    let res = client
        .increment(session.request(IncrementRequest { by: 1 }))
        .await
        .unwrap();
    session.update(res.metadata());
    assert_eq!(res.get_ref().value, 1);
    assert_ne!(session.id().unwrap(), first);
}

#[tokio::test]
async fn the_example_walk_through_runs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tonic_example::serve(listener, MemoryStore::new()));
    let lines = tonic_example::walk_through(&url).await.unwrap();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(
        lines[3].starts_with("Increment -> 3 as \"alice\""),
        "{lines:#?}"
    );
    assert!(lines[4].ends_with("session none"), "{lines:#?}");
    assert!(lines[5].starts_with("Increment -> 1 "), "{lines:#?}");
}

#[tokio::test]
async fn made_up_and_malformed_ids_are_not_adopted() {
    let store = MemoryStore::new();
    let mut client = start(store.clone()).await;

    let res = increment(&mut client, Some(MADE_UP)).await;
    assert_eq!(res.get_ref().value, 1, "a fresh counter");
    let issued = returned_id(res.metadata()).unwrap();
    assert_ne!(issued, MADE_UP, "the server makes its own id");
    assert!(issued.parse::<SessionId>().is_ok());

    // The issued id works; the made-up one still does not.
    assert_eq!(
        increment(&mut client, Some(&issued)).await.get_ref().value,
        2
    );
    let res = increment(&mut client, Some(MADE_UP)).await;
    assert_eq!(res.get_ref().value, 1);
    assert_ne!(returned_id(res.metadata()).unwrap(), MADE_UP);

    // Malformed ids (upper case, wrong length, junk) are ignored before any
    // store look-up: a fresh session each time.
    let upper = issued.to_uppercase();
    for bad in [upper.as_str(), &issued[..35], "not-an-id", ""] {
        let res = increment(&mut client, Some(bad)).await;
        assert_eq!(res.get_ref().value, 1, "{bad:?}");
        let id = returned_id(res.metadata()).unwrap();
        assert_ne!(id, issued);
    }
    // The real session was not touched by any of that.
    assert_eq!(
        increment(&mut client, Some(&issued)).await.get_ref().value,
        3
    );
}

#[tokio::test]
async fn sign_in_cycles_the_id_and_the_old_one_stops_working() {
    let store = MemoryStore::new();
    let mut client = start(store.clone()).await;
    let res = increment(&mut client, None).await;
    let old = returned_id(res.metadata()).unwrap();

    let res = client
        .sign_in(with_id(
            SignInRequest {
                user: "alice".into(),
            },
            Some(&old),
        ))
        .await
        .unwrap();
    let new = returned_id(res.metadata()).expect("cycle_id returns a new id");
    assert_ne!(new, old);
    assert!(new.parse::<SessionId>().is_ok());

    // The data moved to the new id ...
    let res = increment(&mut client, Some(&new)).await;
    assert_eq!(res.get_ref().value, 2);
    assert_eq!(res.get_ref().user, "alice");
    // ... and the old id is dead: a fresh, anonymous session under yet
    // another id.
    let res = increment(&mut client, Some(&old)).await;
    assert_eq!(res.get_ref().value, 1);
    assert_eq!(res.get_ref().user, "");
    let third = returned_id(res.metadata()).unwrap();
    assert!(third != old && third != new);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn sign_out_returns_an_empty_id_and_ends_the_session() {
    let store = MemoryStore::new();
    let mut client = start(store.clone()).await;
    let res = increment(&mut client, None).await;
    let id = returned_id(res.metadata()).unwrap();

    let res = client.sign_out(with_id(Empty {}, Some(&id))).await.unwrap();
    assert_eq!(
        returned_id(res.metadata()).as_deref(),
        Some(""),
        "destroy: the header comes back empty"
    );
    assert!(store.is_empty());
    let res = increment(&mut client, Some(&id)).await;
    assert_eq!(res.get_ref().value, 1, "the old id is dead");
    assert_ne!(returned_id(res.metadata()).unwrap(), id);
}

#[tokio::test]
async fn invalid_argument_from_a_method_reaches_the_client() {
    let mut client = start(MemoryStore::new()).await;
    let err = client
        .sign_in(with_id(SignInRequest { user: " ".into() }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

// ------------------------------------------------------------ store failures

/// The switches of a flaky store: every load fails with `Unavailable`, or
/// every write with `Other`.
#[derive(Clone, Default)]
struct Switches {
    fail_load: Arc<AtomicBool>,
    fail_writes: Arc<AtomicBool>,
}

/// A `MemoryStore` that fails on demand, and its switches.
fn flaky() -> (TestStore<MemoryStore>, Switches) {
    let switches = Switches::default();
    let on = switches.clone();
    let store = TestStore::new(MemoryStore::new()).fail_when(move |op| {
        if op.is_write() {
            on.fail_writes
                .load(Ordering::SeqCst)
                .then(|| StoreError::other("disk on fire"))
        } else {
            on.fail_load
                .load(Ordering::SeqCst)
                .then(|| StoreError::unavailable("down"))
        }
    });
    (store, switches)
}

#[tokio::test]
async fn unreachable_store_gives_the_client_unavailable() {
    let (store, switches) = flaky();
    let mut client = start(store.clone()).await;
    let res = increment(&mut client, None).await;
    let id = returned_id(res.metadata()).unwrap();

    switches.fail_load.store(true, Ordering::SeqCst);
    // A well-formed id makes the layer load, and the load fails.
    for id in [id.as_str(), MADE_UP] {
        let err = client
            .increment(with_id(IncrementRequest { by: 1 }, Some(id)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.message(), "session store unavailable");
        assert_eq!(returned_id(err.metadata()), None);
    }
    // Without an id nothing is loaded, so nothing fails.
    assert_eq!(increment(&mut client, None).await.get_ref().value, 1);

    // Not a logout: once the store is back, the session is intact.
    switches.fail_load.store(false, Ordering::SeqCst);
    assert_eq!(increment(&mut client, Some(&id)).await.get_ref().value, 2);
}

#[tokio::test]
async fn failed_save_gives_the_client_internal_and_keeps_nothing() {
    let (store, switches) = flaky();
    let mut client = start(store.clone()).await;
    let res = increment(&mut client, None).await;
    let id = returned_id(res.metadata()).unwrap();

    switches.fail_writes.store(true, Ordering::SeqCst);
    let err = client
        .increment(with_id(IncrementRequest { by: 1 }, Some(&id)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(err.message(), "session store failed");
    // A new session that cannot be created fails the same way.
    let err = client
        .increment(with_id(IncrementRequest { by: 1 }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);

    switches.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(
        increment(&mut client, Some(&id)).await.get_ref().value,
        2,
        "the failed call's write was not kept"
    );
    assert_eq!(store.inner().len(), 1);
}

// ------------------------------------------------- a method that fails

/// `counter.Counter` whose `Increment` writes to the session and then fails
/// with `INTERNAL`, as a handler failing half-way does.
#[derive(Debug, Clone, Copy)]
struct FailingCounter;

impl NamedService for FailingCounter {
    const NAME: &'static str = "counter.Counter";
}

impl Service<http::Request<Body>> for FailingCounter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        tonic_example::unary(req, |req: Request<IncrementRequest>| async move {
            let session = req.extensions().get::<SessionStorage>().unwrap();
            session.set_item("n", "1000").unwrap();
            Err::<Response<CounterReply>, _>(Status::internal("failed half-way"))
        })
    }
}

/// A gRPC method that fails is the gRPC form of a 5xx response (tonic sends
/// it as HTTP 200 with `grpc-status` in the headers): what it wrote must not
/// be persisted, as for a 5xx.
#[tokio::test]
async fn a_failing_grpc_method_persists_nothing() {
    let store = MemoryStore::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .layer(tonic_example::session_layer(store.clone()))
            .add_service(FailingCounter)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut client = CounterClient::connect(&url).await.unwrap();
    let err = client
        .increment(with_id(IncrementRequest { by: 1 }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(returned_id(err.metadata()), None, "no session id issued");
    assert!(store.is_empty(), "nothing persisted");
}
