//! Server-side sessions in an axum app: a visit counter, sign-in and
//! sign-out, "remember me", and a "your devices" page that signs other
//! devices out, as small HTML pages with a link or a button for every step.
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
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/devices           # alice's sessions, this one marked
//! curl -b jar.txt -c jar.txt -d user=alice -d remember=1 http://127.0.0.1:3000/sign-in  # the form: remember me
//! curl -b jar.txt -c jar.txt -X POST http://127.0.0.1:3000/devices/end-others  # sign out everywhere else
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/sign-out          # session deleted, cookie expired
//! ```
//!
//! What to watch for:
//!
//! - The first visit sets the `id` cookie; later visits send it back and the
//!   counter goes up, with no further `Set-Cookie`.
//! - Signing in calls [`SessionStorage::cycle_id`]: the response sets a new
//!   id, the counter survives, and the old id no longer works (session
//!   fixation defence). It also links the session to the user with
//!   [`SessionStorage::link`], which is what the devices page finds it by.
//! - "Remember me" gives this session its own 30-day idle timeout
//!   ([`SessionStorage::set_idle_timeout`]) and a cookie with `Max-Age`
//!   ([`SessionStorage::set_persistent_cookie`]); without it the cookie dies
//!   with the browser and the session after 30 idle minutes.
//! - `/devices` lists the user's sessions ([`SessionRegistry::list`]), this
//!   one marked; "Sign out that device" ends one ([`SessionRegistry::end`]),
//!   "Sign out everywhere else" ends all but this one
//!   ([`SessionRegistry::end_all`] with a `keep`). The other browser's next
//!   request finds no session: it is signed out.
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
//! (the crate feature `axum`, on by default), and the registry from the
//! request's extensions, where the layer puts it.
//!
//! Demo shortcuts: sign-in takes a name without a password, and `GET
//! /sign-in?user=` and `GET /sign-out` exist so that curl can do each step
//! in one line. The forms that change state are POST forms; with the
//! default `SameSite=Lax` cookie another site's form cannot post them with
//! the user's session. A real app adds CSRF tokens as well and checks a
//! password.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_session_storage::{
    MemoryStore, PublicId, SessionError, SessionLayer, SessionRegistry, SessionStorage, StoreError,
};

/// Session key of the visit counter.
const VISITS: &str = "visits";
/// Session key of the signed-in user.
const USER_ID: &str = "user_id";
/// The link name the devices page finds a user's sessions by.
const USER_LINK: &str = "user";
/// The idle timeout of a session signed in without "remember me".
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The idle timeout of a "remember me" session.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(30 * 86_400);

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
    println!("  curl -b jar.txt -c jar.txt {url}/devices");
    println!("  curl -b jar.txt -c jar.txt -d user=alice -d remember=1 {url}/sign-in");
    println!(
        "  curl -b jar.txt -c jar.txt -X POST {url}/devices/PUBLIC_ID/end   # PUBLIC_ID: a data-public-id in /devices"
    );
    println!("  curl -b jar.txt -c jar.txt -X POST {url}/devices/end-others");
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
    let sessions = SessionLayer::new(MemoryStore::new()).with_idle_timeout(IDLE_TIMEOUT);
    // The layer puts a `SessionRegistry` into every request's extensions;
    // `sessions.registry()` gives one for use outside requests.
    Router::new()
        .route("/", get(counter))
        .route("/sign-in", get(sign_in_link).post(sign_in_form))
        .route("/sign-out", get(sign_out))
        .route("/me", get(me))
        .route("/devices", get(devices))
        .route("/devices/end-others", post(end_others))
        .route("/devices/{public_id}/end", post(end_device))
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
    let signed_in = match session.get_item(USER_ID) {
        Some(user) => format!(
            "<p>Signed in as <span id=\"user\">{}</span>: \
             <a id=\"devices\" href=\"/devices\">your devices</a></p>\n",
            html_escape(&user)
        ),
        None => String::new(),
    };
    page(
        StatusCode::OK,
        "Session demo",
        &format!(
            "<p id=\"visits\">visits: {visits}</p>\n\
             {}{signed_in}\
             <p>Reload to count up: each visit writes the counter into the session.</p>\n",
            who(&session)
        ),
    )
}

/// The query of `GET /sign-in` and the form of `POST /sign-in`.
#[derive(Deserialize)]
struct SignIn {
    user: Option<String>,
    /// "remember me": `1` (the checkbox's value) when ticked.
    remember: Option<String>,
}

/// `GET /sign-in?user=NAME[&remember=1]`: signs in and shows the result
/// (the one-line curl way).
async fn sign_in_link(session: SessionStorage, Query(query): Query<SignIn>) -> Response {
    match sign_in(&session, query) {
        Ok(user) => page(
            StatusCode::OK,
            "Signed in",
            &format!(
                "<p id=\"who\">signed in as: {}</p>\n\
                 <p>The session got a new id; the counter moved with it. \
                 <a href=\"/devices\">Your devices</a></p>\n",
                html_escape(&user)
            ),
        ),
        Err(e) => e.into_response(),
    }
}

/// `POST /sign-in` (the form, `user` and `remember`): signs in and sends
/// the browser to the devices page.
async fn sign_in_form(session: SessionStorage, Form(form): Form<SignIn>) -> Response {
    match sign_in(&session, form) {
        Ok(_) => Redirect::to("/devices").into_response(),
        Err(e) => e.into_response(),
    }
}

/// Signs `form.user` in: remembers the user, links the session to them (the
/// devices page lists the sessions linked so), gives it a new id, and with
/// "remember me" a 30-day idle timeout and a persistent cookie.
fn sign_in(session: &SessionStorage, form: SignIn) -> Result<String, SignInError> {
    let Some(user) = form.user.filter(|u| is_user_name(u)) else {
        return Err(SignInError::BadUser);
    };
    session.set_item(USER_ID, &user)?;
    session.link(USER_LINK, &user)?;
    // Either way, so a sign-in without the box undoes an earlier one with it.
    let remember = form.remember.as_deref() == Some("1");
    session.set_idle_timeout(if remember { REMEMBER_FOR } else { IDLE_TIMEOUT });
    session.set_persistent_cookie(remember);
    // A privilege change: move the session to a fresh id (the old one dies).
    session.cycle_id();
    Ok(user)
}

/// Why a sign-in was refused.
enum SignInError {
    /// Not a user name [`is_user_name`] accepts: `400`.
    BadUser,
    /// The session refused a write: `500`.
    Session(SessionError),
}

impl From<SessionError> for SignInError {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}

impl IntoResponse for SignInError {
    fn into_response(self) -> Response {
        match self {
            Self::BadUser => page(StatusCode::BAD_REQUEST, "Cannot sign in", BAD_USER),
            Self::Session(e) => session_failed(e),
        }
    }
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
            "{}<p>This page only reads the session: it never sets a cookie.</p>\n",
            who(&session)
        ),
    )
}

/// `GET /devices`: the signed-in user's sessions, this one marked, each
/// other one with a button that signs it out.
async fn devices(session: SessionStorage, registry: SessionRegistry) -> Response {
    let Some(user) = session.get_item(USER_ID) else {
        return page(StatusCode::OK, "Your devices", &who(&session));
    };
    let sessions = match registry.list(USER_LINK, &user).await {
        Ok(sessions) => sessions,
        Err(e) => return store_failed(&e),
    };
    let current = session.public_id();
    let mut list = String::from("<ul id=\"devices\">\n");
    for s in &sessions {
        let public_id = s.public_id();
        let this = Some(public_id) == current;
        list.push_str(&format!(
            "<li class=\"device{}\" data-public-id=\"{public_id}\">\
             since <span class=\"created\">{}</span>, \
             last seen <span class=\"last-seen\">{}</span>{}",
            if this { " current" } else { "" },
            utc(s.created_at()),
            utc(s.last_seen()),
            if s.persistent_cookie() == Some(true) {
                ", remembered"
            } else {
                ""
            },
        ));
        if this {
            list.push_str(" (this device)");
        } else {
            list.push_str(&format!(
                " <form method=\"post\" action=\"/devices/{public_id}/end\">\
                 <button class=\"end\" type=\"submit\">Sign out that device</button></form>"
            ));
        }
        list.push_str("</li>\n");
    }
    list.push_str("</ul>\n");
    page(
        StatusCode::OK,
        "Your devices",
        &format!(
            "<p id=\"who\">signed in as: {}</p>\n\
             <p>Where <span id=\"user\">{0}</span> is signed in ({} sessions):</p>\n\
             {list}\
             <form method=\"post\" action=\"/devices/end-others\">\
             <button id=\"end-others\" type=\"submit\">Sign out everywhere else</button></form>\n",
            html_escape(&user),
            sessions.len(),
        ),
    )
}

/// `POST /devices/{public_id}/end`: signs out one of the signed-in user's
/// sessions. `400` for a malformed id, `404` for one that is not theirs.
async fn end_device(
    session: SessionStorage,
    registry: SessionRegistry,
    Path(public_id): Path<String>,
) -> Response {
    let Ok(public_id) = public_id.parse::<PublicId>() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not a device",
            "<p>not a device id: expected 32 lowercase hex digits</p>\n",
        );
    };
    let not_theirs = || {
        page(
            StatusCode::NOT_FOUND,
            "No such device",
            "<p>none of your devices has that id</p>\n",
        )
    };
    let Some(user) = session.get_item(USER_ID) else {
        return not_theirs();
    };
    // A public id names a session, not whose it is: end it only if it is
    // one of this user's.
    let theirs = match registry.list(USER_LINK, &user).await {
        Ok(sessions) => sessions.iter().any(|s| s.public_id() == public_id),
        Err(e) => return store_failed(&e),
    };
    if !theirs {
        return not_theirs();
    }
    if session.public_id() == Some(public_id) {
        // This device: a plain sign-out, which also expires the cookie.
        session.destroy();
    } else if let Err(e) = registry.end(&public_id).await {
        return store_failed(&e);
    }
    Redirect::to("/devices").into_response()
}

/// `POST /devices/end-others`: signs out every session of the signed-in
/// user but this one.
async fn end_others(session: SessionStorage, registry: SessionRegistry) -> Response {
    if let (Some(user), Some(current)) = (session.get_item(USER_ID), session.public_id()) {
        if let Err(e) = registry.end_all(USER_LINK, &user, Some(&current)).await {
            return store_failed(&e);
        }
    }
    Redirect::to("/devices").into_response()
}

/// Any other path: a `404` page with the way back.
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "<p>not found</p>\n")
}

/// Who is signed in, as HTML: `signed in as: NAME`, or `not signed in` with
/// a `<p id="signed-out">` that a page reload can look for.
fn who(session: &SessionStorage) -> String {
    match session.get_item(USER_ID) {
        Some(user) => format!("<p id=\"who\">signed in as: {}</p>\n", html_escape(&user)),
        None => "<p id=\"who\">not signed in</p>\n\
                 <p id=\"signed-out\">Signed out. <a href=\"/\">Sign in</a></p>\n"
            .to_owned(),
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

/// The registry could not reach the store.
fn store_failed(e: &StoreError) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store error",
        &format!("<p>session store: {}</p>\n", html_escape(&e.to_string())),
    )
}

/// An HTML page: `body`, then the way on to every step of the demo.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}\
         <hr>\n\
         <p><a id=\"visit\" href=\"/\">Count a visit</a></p>\n\
         <form id=\"sign-in-form\" method=\"post\" action=\"/sign-in\"><label>User \
         <input name=\"user\" placeholder=\"alice\" maxlength=\"32\"></label> \
         <label><input type=\"checkbox\" name=\"remember\" value=\"1\"> remember me</label> \
         <button id=\"sign-in\" type=\"submit\">Sign in</button></form>\n\
         <p><a id=\"me\" href=\"/me\">Who am I?</a> · \
         <a href=\"/devices\">Your devices</a></p>\n\
         <form id=\"sign-out\" action=\"/sign-out\"><button>Sign out</button></form>\n\
         </body>\n</html>\n"
    );
    (status, Html(html)).into_response()
}

/// `t` as `2025-01-31 23:59:59 UTC`.
pub(crate) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
