//! The axum extractors (feature `axum`) in a real axum `Router` on a real
//! socket: `SessionStorage` and `Option<SessionStorage>`, with and without a
//! `SessionLayer`; and what `id()` reports around `cycle_id()` and
//! `destroy()` in a real request.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use common::*;
use tower_session_storage::extract::SessionStorageMissing;
use tower_session_storage::{MemoryStore, SessionStorage};

/// Counts visits through the plain extractor.
async fn count(session: SessionStorage) -> String {
    let n: u64 = session
        .get_item("n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + 1;
    session.set_item("n", &n.to_string()).unwrap();
    n.to_string()
}

/// Counts visits when there is a session; says so when there is none.
async fn maybe_count(session: Option<SessionStorage>) -> String {
    match session {
        Some(session) => count(session).await,
        None => "no session".to_owned(),
    }
}

fn routes() -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/maybe", get(maybe_count))
}

/// A client with a cookie jar.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

async fn get_text(client: &reqwest::Client, url: String) -> Reply {
    send(client.get(url)).await
}

#[tokio::test]
async fn the_extractor_gives_the_session_and_its_writes_come_back() {
    let store = MemoryStore::new();
    let srv = TestServer::start(routes().layer(dev_layer(store.clone()))).await;
    let client = browser();
    let first = get_text(&client, srv.url("/count")).await;
    assert_eq!(first.ok(), "1");
    assert!(first.new_id().is_some(), "a write creates the session");
    assert_eq!(get_text(&client, srv.url("/count")).await.ok(), "2");
    assert_eq!(get_text(&client, srv.url("/count")).await.ok(), "3");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn without_the_layer_the_extractor_is_a_500_that_names_the_fix() {
    let srv = TestServer::start(routes()).await;
    let r = get_text(&raw_client(), srv.url("/count")).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.body, SessionStorageMissing::default().body_text());
    assert!(
        r.body.contains("is SessionLayer installed?"),
        "{:?}",
        r.body
    );
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn the_optional_extractor_is_none_without_the_layer() {
    let srv = TestServer::start(routes()).await;
    let r = get_text(&raw_client(), srv.url("/maybe")).await;
    assert_eq!(r.ok(), "no session", "the handler ran, with None");
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn the_optional_extractor_is_the_session_with_the_layer() {
    let store = MemoryStore::new();
    let srv = TestServer::start(routes().layer(dev_layer(store.clone()))).await;
    let client = browser();
    assert_eq!(get_text(&client, srv.url("/maybe")).await.ok(), "1");
    // Both extractors see the same session.
    assert_eq!(get_text(&client, srv.url("/count")).await.ok(), "2");
    assert_eq!(get_text(&client, srv.url("/maybe")).await.ok(), "3");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn a_layer_on_some_routes_only_leaves_the_others_without_a_session() {
    let srv = TestServer::start(
        Router::new()
            .route("/maybe", get(maybe_count))
            .route("/count", get(count))
            .merge(
                Router::new()
                    .route("/inside", get(maybe_count))
                    .layer(dev_layer(MemoryStore::new())),
            ),
    )
    .await;
    let client = browser();
    assert_eq!(get_text(&client, srv.url("/inside")).await.ok(), "1");
    assert_eq!(
        get_text(&client, srv.url("/maybe")).await.ok(),
        "no session"
    );
    assert_eq!(get_text(&client, srv.url("/count")).await.status, 500);
    assert_eq!(get_text(&client, srv.url("/inside")).await.ok(), "2");
}

/// The handles of the last request, kept past its response.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Option<SessionStorage>>>);

/// Signs in: writes, cycles the id, and answers with what `id()` said
/// before and after the cycle ("-" for `None`).
async fn sign_in(State(kept): State<Kept>, session: SessionStorage) -> String {
    let before = session.id().map_or("-".to_owned(), |id| id.to_string());
    session.set_item("user", "alice").unwrap();
    session.cycle_id();
    let after = session.id().map_or("-".to_owned(), |id| id.to_string());
    *kept.0.lock().unwrap() = Some(session);
    format!("{before} {after}")
}

/// Signs out, answering with what `id()` said after `destroy()`.
async fn sign_out(State(kept): State<Kept>, session: SessionStorage) -> String {
    session.destroy();
    let after = session.id().map_or("-".to_owned(), |id| id.to_string());
    *kept.0.lock().unwrap() = Some(session);
    after
}

#[tokio::test]
async fn id_is_none_after_cycle_id_and_destroy_and_the_kept_handle_tells_the_new_id() {
    let kept = Kept::default();
    let app = Router::new()
        .route("/count", get(count))
        .route("/sign-in", get(sign_in))
        .route("/sign-out", get(sign_out))
        .with_state(kept.clone())
        .layer(dev_layer(MemoryStore::new()));
    let srv = TestServer::start(app).await;
    let client = raw_client();
    let old = get_text(&client, srv.url("/count")).await.new_id().unwrap();

    let r = send(
        client
            .get(srv.url("/sign-in"))
            .header(reqwest::header::COOKIE, cookie(&old)),
    )
    .await;
    let (before, after) = r.ok().split_once(' ').unwrap();
    assert_eq!(before, old, "before the cycle: the loaded id");
    assert_eq!(
        after, "-",
        "after the cycle: not the id that is about to die"
    );
    let new = r.new_id().expect("the cycle hands out a new id");
    assert_ne!(new, old);
    let handle = kept.0.lock().unwrap().take().unwrap();
    assert_eq!(
        handle.id().map(|id| id.to_string()),
        Some(new.clone()),
        "a handle kept past the response reports the id the client now holds"
    );

    let r = send(
        client
            .get(srv.url("/sign-out"))
            .header(reqwest::header::COOKIE, cookie(&new)),
    )
    .await;
    assert_eq!(r.ok(), "-", "after destroy(): no id");
    assert!(r.expires_cookie());
    let handle = kept.0.lock().unwrap().take().unwrap();
    assert_eq!(handle.id(), None);
}
