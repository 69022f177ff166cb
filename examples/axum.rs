//! Server-side sessions in an axum app: a visit counter, sign-in and sign-out,
//! as small HTML pages with a link or a button for every step.
//!
//! ```text
//! cargo run --example axum
//! ```
//!
//! The server listens on `127.0.0.1`, on the port in `PORT` (default 3000;
//! if that port is busy, the OS picks one) and prints its URL. Open
//! `http://localhost:3000/` or `http://127.0.0.1:3000/` in a browser and
//! click through, or use curl (the jar file plays the browser's cookie
//! store; add `-i` to see the `Set-Cookie` headers):
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
//! The cookie keeps the default `Secure` flag, even though this demo speaks
//! plain HTTP: Chromium-based browsers and curl keep a `Secure` cookie set
//! over `http://` and send it back when the host is `localhost` or
//! `127.0.0.1` (loopback counts as a secure context). On any other host name
//! or address (a LAN IP, a `*.test` name, a container's name) they refuse it,
//! and every request starts a new session: serve such hosts over HTTPS.
//!
//! Handlers take the session as an extractor, `session: SessionStorage`
//! (the crate feature `axum`, on by default).
//!
//! Sign-in and sign-out are GET routes to keep the demo small; a real app
//! uses POST forms with CSRF protection, and checks a password.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_session_storage::{MemoryStore, SessionError, SessionLayer, SessionStorage};

/// Session key of the visit counter.
const VISITS: &str = "visits";
/// Session key of the signed-in user.
const USER_ID: &str = "user_id";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let listener = bind().await?;
    let port = listener.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    println!("session demo (axum) listening on {url}/");
    println!(
        "open http://localhost:{port}/ or {url}/ in a browser, or try (add -i to see Set-Cookie):"
    );
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
    // The defaults, `Secure` included: browsers and curl send a `Secure`
    // cookie over plain http:// to `localhost` and `127.0.0.1` only (see the
    // module docs). Anywhere else, serve over HTTPS.
    let sessions =
        SessionLayer::new(MemoryStore::new()).with_idle_timeout(Duration::from_secs(30 * 60));
    Router::new()
        .route("/", get(counter))
        .route("/sign-in", get(sign_in))
        .route("/sign-out", get(sign_out))
        .route("/me", get(me))
        .fallback(not_found)
        .layer(sessions)
}

/// `GET /`: counts this session's visits.
async fn counter(session: SessionStorage) -> Response {
    let visits = session
        .get_item(VISITS)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    if let Err(e) = session.set_item(VISITS, &visits.to_string()) {
        return session_failed(e);
    }
    page(
        StatusCode::OK,
        "Session demo",
        &format!(
            "<p id=\"visits\">visits: {visits}</p>\n\
             <p id=\"who\">{}</p>\n\
             <p>Reload to count up: each visit writes the counter into the session.</p>\n",
            html_escape(&who(&session))
        ),
    )
}

/// The query of `/sign-in`.
#[derive(Deserialize)]
struct SignIn {
    user: Option<String>,
}

/// `GET /sign-in?user=NAME`: remembers the user and gives the session a new id.
async fn sign_in(session: SessionStorage, Query(query): Query<SignIn>) -> Response {
    let Some(user) = query.user.filter(|u| is_user_name(u)) else {
        return page(StatusCode::BAD_REQUEST, "Cannot sign in", BAD_USER);
    };
    if let Err(e) = session.set_item(USER_ID, &user) {
        return session_failed(e);
    }
    // A privilege change: move the session to a fresh id (the old one dies).
    session.cycle_id();
    page(
        StatusCode::OK,
        "Signed in",
        &format!(
            "<p id=\"who\">signed in as: {}</p>\n\
             <p>The session got a new id; the counter moved with it.</p>\n",
            html_escape(&user)
        ),
    )
}

/// `GET /sign-out`: deletes the session, if there is one, and expires its
/// cookie.
async fn sign_out(session: SessionStorage) -> Response {
    // `id()` is `None` when the request brought no live session: nothing to
    // delete, and nothing to claim.
    let said = if session.id().is_some() {
        session.destroy();
        "signed out: session deleted, cookie expired"
    } else {
        "no session to sign out of: nothing was deleted"
    };
    page(
        StatusCode::OK,
        "Signed out",
        &format!("<p id=\"who\">{said}</p>\n"),
    )
}

/// `GET /me`: who is signed in. Reads only, so it never sets a cookie.
async fn me(session: SessionStorage) -> Response {
    page(
        StatusCode::OK,
        "Who am I",
        &format!(
            "<p id=\"who\">{}</p>\n\
             <p>This page only reads the session: it never sets a cookie.</p>\n",
            html_escape(&who(&session))
        ),
    )
}

/// Any other path: a `404` page with the way back.
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "<p>not found</p>\n")
}

fn who(session: &SessionStorage) -> String {
    match session.get_item(USER_ID) {
        Some(user) => format!("signed in as: {user}"),
        None => "not signed in".to_owned(),
    }
}

const BAD_USER: &str =
    "<p>user must be 1 to 32 letters, digits, '-', '_' or '.': /sign-in?user=alice</p>\n";

/// Accepts short names of safe characters, so they can be echoed as they are.
fn is_user_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A write the session refused (over its caps): a 500, so nothing is saved.
fn session_failed(e: SessionError) -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Session error",
        &format!("<p>session error: {}</p>\n", html_escape(&e.to_string())),
    )
}

/// An HTML page: `body`, then the way on to every step of the demo.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}\
         <hr>\n\
         <p><a id=\"visit\" href=\"/\">Count a visit</a></p>\n\
         <form id=\"sign-in\" action=\"/sign-in\"><label>User \
         <input name=\"user\" value=\"alice\" maxlength=\"32\"></label> \
         <button>Sign in</button></form>\n\
         <p><a id=\"me\" href=\"/me\">Who am I?</a></p>\n\
         <form id=\"sign-out\" action=\"/sign-out\"><button>Sign out</button></form>\n\
         </body>\n</html>\n"
    );
    (status, Html(html)).into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
