//! Server-side sessions in an axum app: a visit counter, sign-in and sign-out.
//!
//! ```text
//! cargo run --example axum
//! ```
//!
//! The server listens on `127.0.0.1`, on the port in `PORT` (default 3000;
//! if that port is busy, the OS picks one) and prints its URL. Then try, in a
//! browser or with curl (the jar file plays the browser's cookie store; add
//! `-i` to see the `Set-Cookie` headers):
//!
//! ```text
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/                  # visits: 1, 2, 3 ...
//! curl -b jar.txt -c jar.txt 'http://127.0.0.1:3000/sign-in?user=alice'  # new session id, data kept
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/me                # signed in as: alice
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/sign-out          # session deleted, cookie expired
//! ```
//!
//! What to watch for:
//!
//! - The first visit sets the `id` cookie; later visits send it back and the
//!   counter goes up, with no further `Set-Cookie`.
//! - `/sign-in` calls [`SessionStorage::cycle_id`]: the response sets a new id,
//!   the counter survives, and the old id no longer works (session fixation
//!   defence).
//! - `/sign-out` calls [`SessionStorage::destroy`]: the session is deleted
//!   and the cookie expired; replaying the old id gets an empty session.
//! - A made-up id (`curl -b 'id=0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1' ...`) is
//!   never adopted: the response sets a server-made id instead.
//!
//! Handlers take the session with axum's `Extension<SessionStorage>`, which
//! works with this crate's default features. With the crate feature `axum`,
//! `session: SessionStorage` works as an extractor on its own.
//!
//! Sign-in and sign-out are GET routes to keep the demo clickable; a real app
//! uses POST forms with CSRF protection, and checks a password.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_session_storage::{MemoryStore, SessionError, SessionLayer, SessionStorage};

/// Session key of the visit counter.
const VISITS: &str = "visits";
/// Session key of the signed-in user.
const USER_ID: &str = "user_id";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = bind().await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("session demo (axum) listening on {url}/");
    println!("open it in a browser, or try (add -i to see Set-Cookie):");
    println!("  curl -b jar.txt -c jar.txt {url}/");
    println!("  curl -b jar.txt -c jar.txt '{url}/sign-in?user=alice'");
    println!("  curl -b jar.txt -c jar.txt {url}/me");
    println!("  curl -b jar.txt -c jar.txt {url}/sign-out");
    serve(listener).await
}

/// Binds `127.0.0.1:$PORT` (default 3000), or an OS-picked port if that fails.
pub(crate) async fn bind() -> std::io::Result<TcpListener> {
    let port = match std::env::var("PORT").ok().filter(|p| !p.is_empty()) {
        Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
            eprintln!("PORT={p:?} is not a port number; using 3000");
            3000
        }),
        None => 3000,
    };
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            eprintln!("cannot listen on port {port} ({e}); letting the OS pick a port");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
    }
}

/// Serves [`app`] on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app()).await
}

/// The demo app: its routes behind a [`SessionLayer`] over a fresh
/// [`MemoryStore`].
pub(crate) fn app() -> Router {
    let sessions = SessionLayer::new(MemoryStore::new())
        // Plain-HTTP demo only: clients do not send `Secure` cookies over
        // http://. Keep the default (`true`) in production, behind HTTPS.
        .with_secure(false)
        .with_idle_timeout(Duration::from_secs(30 * 60));
    Router::new()
        .route("/", get(counter))
        .route("/sign-in", get(sign_in))
        .route("/sign-out", get(sign_out))
        .route("/me", get(me))
        .layer(sessions)
}

/// `GET /`: counts this session's visits.
async fn counter(Extension(session): Extension<SessionStorage>) -> Response {
    let visits = session
        .get_item(VISITS)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    if let Err(e) = session.set_item(VISITS, &visits.to_string()) {
        return session_failed(e);
    }
    format!(
        "visits: {visits}\n{}\n\ntry /sign-in?user=alice, /me, /sign-out\n",
        who(&session)
    )
    .into_response()
}

/// The query of `/sign-in`.
#[derive(Deserialize)]
struct SignIn {
    user: Option<String>,
}

/// `GET /sign-in?user=NAME`: remembers the user and gives the session a new id.
async fn sign_in(
    Extension(session): Extension<SessionStorage>,
    Query(query): Query<SignIn>,
) -> Response {
    let Some(user) = query.user.filter(|u| is_user_name(u)) else {
        return (StatusCode::BAD_REQUEST, BAD_USER).into_response();
    };
    if let Err(e) = session.set_item(USER_ID, &user) {
        return session_failed(e);
    }
    // A privilege change: move the session to a fresh id (the old one dies).
    session.cycle_id();
    format!("signed in as: {user}\n(the session got a new id)\n").into_response()
}

/// `GET /sign-out`: deletes the session and expires its cookie.
async fn sign_out(Extension(session): Extension<SessionStorage>) -> &'static str {
    session.destroy();
    "signed out: session deleted, cookie expired\n"
}

/// `GET /me`: who is signed in. Reads only, so it never sets a cookie.
async fn me(Extension(session): Extension<SessionStorage>) -> String {
    format!("{}\n", who(&session))
}

fn who(session: &SessionStorage) -> String {
    match session.get_item(USER_ID) {
        Some(user) => format!("signed in as: {user}"),
        None => "not signed in".to_owned(),
    }
}

const BAD_USER: &str =
    "user must be 1 to 32 letters, digits, '-', '_' or '.': /sign-in?user=alice\n";

/// Accepts short names of safe characters, so they can be echoed as they are.
fn is_user_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A write the session refused (over its caps): a 500, so nothing is saved.
fn session_failed(e: SessionError) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("session error: {e}\n"),
    )
        .into_response()
}
