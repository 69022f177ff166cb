//! Server-side sessions with plain hyper 1 and tower, no framework: a visit
//! counter, sign-in and sign-out.
//!
//! ```text
//! cargo run --example hyper
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
//! How it fits together: the handler is a `tower::service_fn` that finds the
//! session in the request's extensions
//! (`req.extensions().get::<SessionStorage>()`); `ServiceBuilder` wraps it in
//! the [`SessionLayer`]; each accepted connection is served by hyper's HTTP/1
//! server, which calls the tower service through `hyper::service::service_fn`.
//!
//! Sign-in and sign-out are GET routes to keep the demo clickable; a real app
//! uses POST forms with CSRF protection, and checks a password.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

/// Session key of the visit counter.
const VISITS: &str = "visits";
/// Session key of the signed-in user.
const USER_ID: &str = "user_id";

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error as text (`{e}`), not its `Debug` form.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let listener = bind().await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("session demo (hyper) listening on {url}/");
    println!("open it in a browser, or try (add -i to see Set-Cookie):");
    println!("  curl -b jar.txt -c jar.txt {url}/");
    println!("  curl -b jar.txt -c jar.txt '{url}/sign-in?user=alice'");
    println!("  curl -b jar.txt -c jar.txt {url}/me");
    println!("  curl -b jar.txt -c jar.txt {url}/sign-out");
    serve(listener).await;
    Ok(())
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

/// Serves the demo on `listener`, one task per connection, until the process
/// ends.
pub(crate) async fn serve(listener: TcpListener) {
    // `Secure` stays on: browsers and curl send a `Secure` cookie over plain
    // http:// to `localhost` and `127.0.0.1` only; elsewhere, use HTTPS.
    let sessions =
        SessionLayer::new(MemoryStore::new()).with_idle_timeout(Duration::from_secs(30 * 60));
    let app = ServiceBuilder::new().layer(sessions).service_fn(handle);

    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Per-connection trouble (e.g. out of file descriptors):
                // keep serving after a short pause.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            // hyper calls this per request; `oneshot` drives the tower
            // service (poll_ready, then call) on a clone.
            let service = hyper::service::service_fn(move |req| app.clone().oneshot(req));
            let conn = http1::Builder::new()
                // Makes hyper's default 30 s header-read timeout take effect.
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}

/// The whole app: routes on method and path.
async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(session) = req.extensions().get::<SessionStorage>() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SessionStorage missing: is SessionLayer installed?\n".to_owned(),
        ));
    };
    let path = req.uri().path();
    if !matches!(path, "/" | "/sign-in" | "/sign-out" | "/me") {
        return Ok(text(StatusCode::NOT_FOUND, "not found\n".to_owned()));
    }
    if req.method() != Method::GET {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        );
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(res);
    }
    Ok(match path {
        "/sign-in" => sign_in(session, req.uri().query()),
        "/sign-out" => sign_out(session),
        "/me" => text(StatusCode::OK, format!("{}\n", who(session))),
        _ => counter(session),
    })
}

/// `GET /`: counts this session's visits.
fn counter(session: &SessionStorage) -> Response<Body> {
    let visits = session
        .get_item(VISITS)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    if let Err(e) = session.set_item(VISITS, &visits.to_string()) {
        // Over the session's caps: a 500, so nothing is saved.
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session error: {e}\n"),
        );
    }
    text(
        StatusCode::OK,
        format!(
            "visits: {visits}\n{}\n\ntry /sign-in?user=alice, /me, /sign-out\n",
            who(session)
        ),
    )
}

/// `GET /sign-in?user=NAME`: remembers the user and gives the session a new id.
fn sign_in(session: &SessionStorage, query: Option<&str>) -> Response<Body> {
    let user = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("user="))
        .filter(|u| is_user_name(u));
    let Some(user) = user else {
        return text(StatusCode::BAD_REQUEST, BAD_USER.to_owned());
    };
    if let Err(e) = session.set_item(USER_ID, user) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session error: {e}\n"),
        );
    }
    // A privilege change: move the session to a fresh id (the old one dies).
    session.cycle_id();
    text(
        StatusCode::OK,
        format!("signed in as: {user}\n(the session got a new id)\n"),
    )
}

/// `GET /sign-out`: deletes the session and expires its cookie.
fn sign_out(session: &SessionStorage) -> Response<Body> {
    session.destroy();
    text(
        StatusCode::OK,
        "signed out: session deleted, cookie expired\n".to_owned(),
    )
}

fn who(session: &SessionStorage) -> String {
    match session.get_item(USER_ID) {
        Some(user) => format!("signed in as: {user}"),
        None => "not signed in".to_owned(),
    }
}

const BAD_USER: &str =
    "user must be 1 to 32 letters, digits, '-', '_' or '.': /sign-in?user=alice\n";

/// Accepts short names of safe characters, so they can be echoed as they
/// are and need no percent-decoding.
fn is_user_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
