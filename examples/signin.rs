//! OpenID Connect sign-in with the tokens kept server-side, through the
//! `Storage` contract only (the use case this crate exists for), and
//! OpenID Connect Back-Channel Logout: the provider signs a user out, and
//! the app ends that user's sessions through the [`SessionRegistry`].
//!
//! ```text
//! cargo run --example signin
//! ```
//!
//! Two servers start, both listening on `127.0.0.1` only: the web app (the
//! port in `PORT`, default 3000; if that port is busy, the OS picks one),
//! addressed as `http://127.0.0.1:PORT`, and a stand-in OpenID provider (an
//! OS-picked port) addressed as `http://localhost:PORT2`. `localhost` and
//! `127.0.0.1` are different sites to a browser, as a real provider and the
//! app are: the way back from the provider's consent page to the app's
//! `/callback` is a cross-site navigation. That is what the default
//! `SameSite=Lax` cookie is for: it is sent on a cross-site top-level GET,
//! so the callback finds the sign-in state in the session. Start the demo
//! with `SAME_SITE=strict` to see the alternative fail: the browser leaves
//! the cookie out of the callback, and the app answers "no sign-in in
//! progress".
//!
//! Open `http://127.0.0.1:3000/` in a browser and click through (every page,
//! errors included, links to the next step), or follow the flow with curl
//! (the jar file plays the browser's cookie store):
//!
//! ```text
//! curl -s -o /dev/null -w '%{redirect_url}\n' -b jar.txt -c jar.txt http://127.0.0.1:3000/sign-in
//! curl -L -b jar.txt -c jar.txt -d account=alice 'AUTHORIZE_URL'   # the consent button; lands on /me
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/me
//! curl http://localhost:PORT2/                                     # the provider's logins, with their sid
//! curl -d sid=SID http://localhost:PORT2/logout                    # provider sign-out: back-channel logout
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/me              # 401: the session was ended
//! ```
//!
//! # The flow
//!
//! 1. `GET /sign-in` stores a PKCE code verifier, a random `state` and the
//!    redirect URI in the session, and redirects to the provider's
//!    `/authorize` with the S256 code challenge.
//! 2. The stand-in provider shows a consent page (pick Alice or Bob, click
//!    "Continue"), as a real provider shows its login page. The click starts
//!    a provider login with its own `sid` (or reuses the browser's login at
//!    the provider for the same account) and redirects back to
//!    `/callback?code=…&state=…`.
//! 3. `GET /callback` takes the sign-in state out of the session (one use
//!    only: a forged, missing or replayed `state` gets `400`), exchanges the
//!    code and the verifier at the provider's `/token`, verifies the ID
//!    token (EdDSA signature with the provider's key, `iss`, `aud`, `exp`),
//!    fetches an access token for each API resource with the refresh token,
//!    stores the ID token, the refresh token and the access-token map (over
//!    6 KB together: no cookie could hold them), links the session to the
//!    user (`user = sub`) and to the provider login (`sid = sid`), and calls
//!    `cycle_id()`: the session moves to a new id and the pre-sign-in id
//!    stops working.
//! 4. `GET /me` shows the user from the stored ID token.
//! 5. `POST /sign-out` (the "Sign out" button on every page) blanks every
//!    token with `set_item(key, "")` (the way Logto's Go SDK signs out
//!    through its `Storage`), destroys the session and sends the browser
//!    home. `GET /sign-out` (a typed URL) only shows the button: a link
//!    elsewhere cannot sign the user out.
//! 6. Signing out at the provider (its page `GET /` lists its logins, each
//!    with a "Sign out at the provider" button; or `POST /logout` with `sid`
//!    or `sub`) makes the provider post a logout token (OpenID Connect
//!    Back-Channel Logout 1.0: a signed JWT with `sub` and/or `sid` and the
//!    back-channel `events` claim) to the app's `POST /backchannel-logout`.
//!    The app verifies it with `jsonwebtoken` (signature, `iss`, `aud`,
//!    `iat`, `exp` when present, `events`, no `nonce`, `sub` and/or `sid`)
//!    and ends the matching sessions with
//!    [`SessionRegistry::end_all`]: those linked to the `sid`, or with only
//!    a `sub`, every session of that user. `200` when it is done; anything
//!    invalid gets `400` and ends nothing.
//!
//! The app also answers on `localhost:PORT` (the provider knows a callback
//! URL for each host, and `/sign-in` picks the one whose host the browser
//! used: cookies belong to a host name, so a callback on the other host
//! would arrive without the session). Opened that way it is on the
//! provider's site, and the SameSite demonstration does not apply. Any other
//! `Host` is sent to `http://127.0.0.1:PORT/sign-in` first.
//!
//! The sign-in logic (module `sdk`) sees the session only as
//! `&dyn Storage`: `get_item`, `set_item`, `remove_item`, the contract auth
//! SDKs are written against. Only the app's handlers use `SessionStorage`
//! itself, for `link()`, `cycle_id()` and `destroy()`.
//!
//! The cookie keeps the default `Secure` flag, even though the demo speaks
//! plain HTTP: Chromium-based browsers and curl keep a `Secure` cookie set
//! over `http://` and send it back when the host is `localhost` or
//! `127.0.0.1` (loopback counts as a secure context). On any other host name
//! or address they refuse it, and every request starts a new session: serve
//! such hosts over HTTPS.
//!
//! Demo shortcuts, each marked where it is made: plain HTTP, a provider
//! with two made-up accounts and no password, a consent form without a CSRF
//! token, and a provider key made at start-up and handed to the app in
//! process (a real app fetches the provider's JWKS, which the stand-in also
//! serves at `/jwks`).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower_session_storage::{
    SameSite, SessionLayer, SessionRegistry, SessionStorage, SessionStore, Storage,
};

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
    let same_site = same_site_from_env()?;
    let app = bind().await?;
    let provider = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let demo = start(
        app,
        provider,
        tower_session_storage::MemoryStore::new(),
        same_site,
    )
    .await?;
    let url = &demo.app;
    let op = &demo.provider;
    println!(
        "sign-in demo: app on {url}/ (session cookie SameSite={}), \
         stand-in OpenID provider on {op}/ (another site)",
        if same_site == SameSite::Strict {
            "Strict"
        } else {
            "Lax"
        }
    );
    if let Some(kid) = &demo.signer.jwk().common.key_id {
        println!("provider key: Ed25519 (EdDSA), kid {kid}, published at {op}/jwks");
    }
    println!("open {url}/ in a browser, or try:");
    println!(
        "  curl -s -o /dev/null -w '%{{redirect_url}}\\n' -b jar.txt -c jar.txt {url}/sign-in"
    );
    println!("  curl -L -b jar.txt -c jar.txt -d account=alice 'AUTHORIZE_URL_FROM_ABOVE'");
    println!("  curl -b jar.txt -c jar.txt {url}/me");
    println!("  curl {op}/                 # the provider's logins and their sid");
    println!("  curl -d sid=SID {op}/logout  # sign out at the provider: back-channel logout");
    println!("  curl -L -b jar.txt -c jar.txt -d '' {url}/sign-out");
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `SAME_SITE=lax` (the default) or `SAME_SITE=strict`: the app's cookie
/// attribute, to show that `Strict` loses the cookie on the way back from
/// the provider.
fn same_site_from_env() -> std::io::Result<SameSite> {
    parse_same_site(&std::env::var("SAME_SITE").unwrap_or_default())
}

/// `lax` (or empty) or `strict`, in any case.
pub(crate) fn parse_same_site(value: &str) -> std::io::Result<SameSite> {
    match value.to_ascii_lowercase().as_str() {
        "" | "lax" => Ok(SameSite::Lax),
        "strict" => Ok(SameSite::Strict),
        _ => Err(std::io::Error::other(format!(
            "SAME_SITE={value:?}: expected lax or strict"
        ))),
    }
}

/// Binds `127.0.0.1:$PORT` (default 3000), or an OS-picked port if that fails.
async fn bind() -> std::io::Result<TcpListener> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(3000);
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            eprintln!("cannot listen on port {port} ({e}); letting the OS pick a port");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
    }
}

/// The two running servers: base URLs (no trailing slash), the app on
/// `127.0.0.1` (it also answers as `localhost` on the same port), the
/// provider on `localhost`; and the provider's signing key (tests sign
/// their own logout tokens with it).
#[derive(Debug, Clone)]
pub(crate) struct Demo {
    pub(crate) app: String,
    pub(crate) provider: String,
    pub(crate) signer: provider::Signer,
}

/// The client id the app is registered under at the provider.
pub(crate) const CLIENT_ID: &str = "demo-app";
/// The API resources the app gets an access token for.
pub(crate) const RESOURCES: [&str; 3] = [
    "https://api.example.com/orders",
    "https://api.example.com/billing",
    "https://api.example.com/analytics",
];
/// The app's back-channel logout endpoint.
pub(crate) const BACKCHANNEL_PATH: &str = "/backchannel-logout";

/// Starts the provider and the app (sessions kept in `store`, its cookie
/// with `same_site`) on the two listeners, each in its own task.
pub(crate) async fn start<S: SessionStore>(
    app: TcpListener,
    provider: TcpListener,
    store: S,
    same_site: SameSite,
) -> std::io::Result<Demo> {
    let app_port = app.local_addr()?.port();
    let app_url = format!("http://127.0.0.1:{app_port}");
    let issuer = format!("http://localhost:{}", provider.local_addr()?.port());
    let signer = provider::Signer::generate().map_err(std::io::Error::other)?;
    let config = sdk::Config {
        provider: issuer.clone(),
        // Demo shortcut: handed over in process; a real app reads the
        // provider's JWKS (`/jwks`).
        provider_key: signer.decoding_key().map_err(std::io::Error::other)?,
        client_id: CLIENT_ID.to_owned(),
        // One callback per host name the app answers on; the first is the
        // default.
        redirect_uris: vec![
            format!("{app_url}/callback"),
            format!("http://localhost:{app_port}/callback"),
        ],
        resources: RESOURCES.iter().map(|r| (*r).to_owned()).collect(),
    };
    let provider_router = provider::router(provider::Client {
        issuer: issuer.clone(),
        client_id: CLIENT_ID.to_owned(),
        redirect_uris: config.redirect_uris.clone(),
        backchannel_logout_uri: format!("{app_url}{BACKCHANNEL_PATH}"),
        signer: signer.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(provider, provider_router).await {
            eprintln!("provider stopped: {e}");
        }
    });
    let app_router = app_router(store, config, same_site);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(app, app_router).await {
            eprintln!("app stopped: {e}");
        }
    });
    Ok(Demo {
        app: app_url,
        provider: issuer,
        signer,
    })
}

// ------------------------------------------------------------------ the app

/// What the handlers share.
struct App {
    config: sdk::Config,
    http: reqwest::Client,
    /// Finds and ends sessions outside their own requests: the back-channel
    /// logout.
    registry: SessionRegistry,
    /// The `jti` of every logout token accepted in the last
    /// [`backchannel::MAX_AGE`] seconds (and when it was issued): a token
    /// is accepted once. Older ones are refused by their `iat` anyway.
    seen: Mutex<HashMap<String, u64>>,
}

/// The link names the app gives a signed-in session.
const USER_LINK: &str = "user";
const SID_LINK: &str = "sid";

/// The web app: its routes behind a [`SessionLayer`] over `store`.
pub(crate) fn app_router<S: SessionStore>(
    store: S,
    config: sdk::Config,
    same_site: SameSite,
) -> Router {
    // The defaults, `Secure` included: browsers and curl (and reqwest's
    // cookie jar) send a `Secure` cookie over plain http:// to `localhost`
    // and `127.0.0.1` only. Anywhere else, serve over HTTPS.
    let sessions = SessionLayer::new(store)
        .with_idle_timeout(Duration::from_secs(8 * 3600))
        .with_same_site(same_site);
    let registry = sessions.registry();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in))
        .route("/callback", get(callback))
        .route("/me", get(me))
        .route("/sign-out", get(sign_out_page).post(sign_out))
        .route(BACKCHANNEL_PATH, post(backchannel_logout))
        .fallback(not_found)
        .with_state(Arc::new(App {
            config,
            http,
            registry,
            seen: Mutex::new(HashMap::new()),
        }))
        .layer(sessions)
}

/// `GET /`: who is signed in, and the buttons.
async fn home(session: SessionStorage) -> Response {
    let body = match sdk::user(&session) {
        Some(user) => format!(
            "<p id=\"who\">Signed in as {} &lt;{}&gt;.</p>\n",
            html_escape(&user.name),
            html_escape(&user.email)
        ),
        None => NOT_SIGNED_IN.to_owned(),
    };
    page(StatusCode::OK, "Sign-in demo", &body)
}

const NOT_SIGNED_IN: &str = "<p id=\"who\">Not signed in.</p>\n\
    <p><a id=\"start\" href=\"/sign-in\">Sign in</a> with the stand-in provider \
    (on another site; it asks which account, without a password).</p>\n";

/// `GET /sign-in`: stores the sign-in state and sends the browser to the
/// provider, with the callback on the host the browser used.
async fn sign_in(
    State(app): State<Arc<App>>,
    session: SessionStorage,
    headers: HeaderMap,
) -> Response {
    // The callback must come back to the host this request came to: the
    // session cookie belongs to that host name. Only a registered callback
    // is ever used; an unknown `Host` is sent to the default one first.
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let Some(redirect_uri) = host.and_then(|host| app.config.redirect_uri_for(host)) else {
        let default = app.config.redirect_uris.first().map_or("", String::as_str);
        return Redirect::to(&default.replace("/callback", "/sign-in")).into_response();
    };
    match sdk::sign_in_url(&session, &app.config, redirect_uri) {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /callback?code=…&state=…`: checks the state, exchanges the code,
/// stores the tokens, links the session to the user and the provider login,
/// and moves the session to a new id.
async fn callback(
    State(app): State<Arc<App>>,
    session: SessionStorage,
    Query(query): Query<sdk::CallbackQuery>,
) -> Response {
    // `&session` is handed to the SDK as `&dyn Storage`, in calls that do
    // not await (a `&dyn Storage` is not `Send`); the handle itself is.
    let pending = match sdk::take_sign_in_state(&session, &query) {
        Ok(pending) => pending,
        Err(e) => return e.into_response(),
    };
    let tokens = match sdk::exchange_code(&app.http, &app.config, pending).await {
        Ok(tokens) => tokens,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = sdk::save_tokens(&session, &tokens) {
        return e.into_response();
    }
    // The links the registry finds the session by: every session of the
    // user (`user`), and the provider login it came from (`sid`), which a
    // back-channel logout names.
    let claims = tokens.claims();
    let linked = session
        .link(USER_LINK, &claims.sub)
        .and_then(|()| match &claims.sid {
            Some(sid) => session.link(SID_LINK, sid),
            None => {
                session.unlink(SID_LINK);
                Ok(())
            }
        });
    if let Err(e) = linked {
        return sdk::AuthError::Session(e).into_response();
    }
    // Signed in: a privilege change. The session moves to a fresh id, so an
    // id planted or seen before sign-in (session fixation) is worth nothing.
    session.cycle_id();
    Redirect::to("/me").into_response()
}

/// `GET /me`: the user from the stored ID token, or `401`.
async fn me(session: SessionStorage) -> Response {
    let Some(user) = sdk::user(&session) else {
        return page(StatusCode::UNAUTHORIZED, "Not signed in", NOT_SIGNED_IN);
    };
    page(
        StatusCode::OK,
        "Who am I",
        &format!(
            "<p id=\"who\">Signed in as {} &lt;{}&gt; (sub {}).</p>\n\
             <p>ID token from {} for {}; provider login: <span id=\"sid\">{}</span></p>\n\
             <p>tokens kept server-side: {} bytes; the cookie holds only the session id.</p>\n",
            html_escape(&user.name),
            html_escape(&user.email),
            html_escape(&user.sub),
            html_escape(&user.iss),
            html_escape(&user.aud),
            html_escape(user.sid.as_deref().unwrap_or("")),
            sdk::token_bytes(&session)
        ),
    )
}

/// `GET /sign-out`: a typed URL or a link only shows the button.
async fn sign_out_page() -> Response {
    page(
        StatusCode::OK,
        "Sign out",
        "<p>Signing out takes the button below (a POST): a link on another \
         site cannot sign you out.</p>\n",
    )
}

/// `POST /sign-out`: blanks the tokens (the SDK's sign-out), deletes the
/// session and sends the browser home. POST, not GET: with `SameSite=Lax` a
/// cross-site form cannot carry the cookie, so another site cannot sign the
/// user out.
async fn sign_out(session: SessionStorage) -> Response {
    if let Err(e) = sdk::sign_out(&session) {
        return e.into_response();
    }
    session.destroy();
    Redirect::to("/").into_response()
}

/// `POST /backchannel-logout` (OpenID Connect Back-Channel Logout 1.0):
/// the provider posts `logout_token=JWT`; a valid token ends the sessions
/// it names, anything else gets `400` and ends nothing. Both answers carry
/// `Cache-Control: no-store`.
async fn backchannel_logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = now_secs();
    let verified = match backchannel::logout_token(&headers, body).await {
        Ok(token) => backchannel::verify(&token, &app.config, now),
        Err(e) => Err(e),
    };
    let token = match verified {
        Ok(token) => token,
        Err(why) => return backchannel::refused(why),
    };
    // Each token once (its `jti`), as long as its `iat` would let it in.
    {
        let mut seen = app.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, iat| iat.saturating_add(backchannel::MAX_AGE + backchannel::LEEWAY) >= now);
        if seen.insert(token.jti.clone(), token.iat).is_some() {
            return backchannel::refused("this logout token was already used".into());
        }
    }
    // `sid` names one provider login: end the sessions linked to it (with a
    // `sub` too, only those that are that user's). Only a `sub`: the user
    // signed out of everything at the provider.
    let ended = match (&token.sid, &token.sub) {
        (Some(sid), None) => app.registry.end_all(SID_LINK, sid, None).await,
        (None, Some(sub)) => app.registry.end_all(USER_LINK, sub, None).await,
        (Some(sid), Some(sub)) => end_login_of(&app.registry, sid, sub).await,
        (None, None) => Ok(0), // `verify` refuses such a token
    };
    match ended {
        Ok(n) => (
            StatusCode::OK,
            [(CACHE_CONTROL, "no-store")],
            format!("ended {n} sessions\n"),
        )
            .into_response(),
        // The spec's answer to a logout that failed is a 400 too.
        Err(e) => backchannel::refused(format!("the session store failed: {e}")),
    }
}

/// Ends the sessions linked to the provider login `sid` that belong to
/// `sub`: a token naming another user's login ends nothing.
async fn end_login_of(
    registry: &SessionRegistry,
    sid: &str,
    sub: &str,
) -> Result<usize, tower_session_storage::StoreError> {
    let mut ended = 0;
    for s in registry.list(SID_LINK, sid).await? {
        let users = s.links().any(|(n, v)| n == USER_LINK && v == sub);
        if users && registry.end(&s.public_id()).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

/// Any other path: a `404` page with the way back.
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "<p>not found</p>\n")
}

/// Checking a back-channel logout token.
pub(crate) mod backchannel {
    use super::*;

    /// The `events` member that makes a JWT a logout token.
    pub(crate) const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
    /// The largest request body read: a logout token is well under 2 KB.
    pub(crate) const MAX_BODY: usize = 16 * 1024;
    /// Clock skew allowed on `iat` (in the future) and `exp`, in seconds.
    pub(crate) const LEEWAY: u64 = 30;
    /// The oldest `iat` accepted, in seconds: a logout token is sent at
    /// once, so an old one is a replay.
    pub(crate) const MAX_AGE: u64 = 300;

    /// What a valid logout token says: whom to sign out (a `sid`, a
    /// `sub`, or both), and its id and time, to accept it once.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Verified {
        /// The provider login to end.
        pub(crate) sid: Option<String>,
        /// The user to end (with a `sid`: whose login it must be).
        pub(crate) sub: Option<String>,
        /// The token's unique id (required by the spec).
        pub(crate) jti: String,
        /// When it was issued (seconds since the epoch).
        pub(crate) iat: u64,
    }

    /// The `400` answer, with an OAuth-style error body.
    pub(crate) fn refused(why: String) -> Response {
        (
            StatusCode::BAD_REQUEST,
            [(CACHE_CONTROL, "no-store")],
            Json(json!({ "error": "invalid_request", "error_description": why })),
        )
            .into_response()
    }

    /// The one `logout_token` of an `application/x-www-form-urlencoded`
    /// body of at most [`MAX_BODY`] bytes.
    pub(crate) async fn logout_token(headers: &HeaderMap, body: Body) -> Result<String, String> {
        let form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err("content type must be application/x-www-form-urlencoded".into());
        }
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| format!("body unreadable or over {MAX_BODY} bytes"))?;
        let mut tokens = form_urlencoded::parse(&bytes)
            .filter(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        match (tokens.next(), tokens.next()) {
            (Some(token), None) if !token.is_empty() => Ok(token),
            (Some(_), Some(_)) => Err("more than one logout_token".into()),
            _ => Err("no logout_token".into()),
        }
    }

    /// Verifies a logout token (OpenID Connect Back-Channel Logout 1.0,
    /// section 2.6) at `now` (seconds since the epoch): the provider's
    /// signature, `iss`, `aud`, `iat`, `jti`, `exp` when present, the
    /// `events` claim, no `nonce`, and a `sub` and/or a `sid`. (That the
    /// token was not used before is the caller's check, by `jti`.)
    pub(crate) fn verify(token: &str, config: &sdk::Config, now: u64) -> Result<Verified, String> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.provider]);
        validation.set_audience(&[&config.client_id]);
        // `iss` and `aud` must be there; `exp` is checked when it is.
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.validate_exp = true;
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &config.provider_key,
            &validation,
        )
        .map_err(|e| format!("not a valid token from the provider: {e}"))?
        .claims;

        let iat = claims
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no iat")?;
        if iat > now.saturating_add(LEEWAY) {
            return Err("iat is in the future".into());
        }
        if iat.saturating_add(MAX_AGE) < now {
            return Err("iat is too old".into());
        }
        let event = claims
            .get("events")
            .and_then(serde_json::Value::as_object)
            .and_then(|events| events.get(EVENT));
        if !event.is_some_and(serde_json::Value::is_object) {
            return Err(format!("events claim lacks {EVENT} with an object value"));
        }
        if claims.contains_key("nonce") {
            return Err("a logout token must not have a nonce".into());
        }
        let text = |name: &str| -> Result<Option<String>, String> {
            match claims.get(name) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(format!("{name} is not a non-empty string")),
            }
        };
        let jti = text("jti")?.ok_or("no jti")?;
        let (sid, sub) = (text("sid")?, text("sub")?);
        if sid.is_none() && sub.is_none() {
            return Err("neither sub nor sid".into());
        }
        Ok(Verified { sid, sub, jti, iat })
    }
}

/// An HTML page: `body`, then the way on to every step.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}<hr>\n\
         <p><a id=\"home\" href=\"/\">Home</a> · \
         <a id=\"sign-in\" href=\"/sign-in\">Sign in</a> · \
         <a id=\"me\" href=\"/me\">Who am I?</a></p>\n\
         <form method=\"post\" action=\"/sign-out\">\
         <button id=\"sign-out\">Sign out</button></form>\n</body>\n</html>\n"
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

/// A random URL-safe token with 244 bits from the OS-seeded CSPRNG.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The PKCE S256 code challenge of `verifier`: base64url(SHA-256(verifier)).
fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------- the SDK side

/// What an auth SDK does, written against `&dyn Storage` only.
pub(crate) mod sdk {
    use super::*;
    use tower_session_storage::SessionError;

    /// Session key of the PKCE code verifier, between sign-in and callback.
    pub(crate) const CODE_VERIFIER: &str = "sign_in.code_verifier";
    /// Session key of the `state` sent to the provider.
    pub(crate) const STATE: &str = "sign_in.state";
    /// Session key of the redirect URI the authorization request used.
    pub(crate) const REDIRECT_URI: &str = "sign_in.redirect_uri";
    /// Session key of the ID token.
    pub(crate) const ID_TOKEN: &str = "id_token";
    /// Session key of the refresh token.
    pub(crate) const REFRESH_TOKEN: &str = "refresh_token";
    /// Session key of the access tokens, a JSON map keyed by resource.
    pub(crate) const ACCESS_TOKENS: &str = "access_token_map";
    /// Every key the SDK writes.
    pub(crate) const ALL_KEYS: [&str; 6] = [
        CODE_VERIFIER,
        STATE,
        REDIRECT_URI,
        ID_TOKEN,
        REFRESH_TOKEN,
        ACCESS_TOKENS,
    ];
    /// The access-token map's key for the token from the code exchange.
    pub(crate) const DEFAULT_RESOURCE: &str = "default";

    /// The app's registration at the provider.
    #[derive(Debug, Clone)]
    pub(crate) struct Config {
        /// The provider's issuer URL, also the base of its endpoints.
        pub(crate) provider: String,
        /// The provider's public key, which its tokens are signed with.
        pub(crate) provider_key: DecodingKey,
        pub(crate) client_id: String,
        /// The callback URLs registered at the provider, one per host name
        /// the app answers on; the first is the default.
        pub(crate) redirect_uris: Vec<String>,
        pub(crate) resources: Vec<String>,
    }

    impl Config {
        /// The registered callback on `host` (`Host` header: name and port).
        pub(crate) fn redirect_uri_for(&self, host: &str) -> Option<&str> {
            self.redirect_uris
                .iter()
                .find(|uri| {
                    uri.strip_prefix("http://")
                        .and_then(|rest| rest.strip_suffix("/callback"))
                        == Some(host)
                })
                .map(String::as_str)
        }
    }

    /// Why a sign-in step failed.
    #[derive(Debug)]
    pub(crate) enum AuthError {
        /// No sign-in in progress in this session: never started, already
        /// finished (a replayed callback), or ended by a bad `state`.
        NoSignIn,
        /// The callback's `state` is missing or not the one we sent (forged).
        StateMismatch,
        /// The provider sent an error instead of a code.
        Refused,
        /// The provider did not accept the code, or answered nonsense.
        Rejected(String),
        /// The provider could not be reached.
        Unreachable(reqwest::Error),
        /// The session refused a write (over its caps).
        Session(SessionError),
        /// The access-token map could not be written as JSON.
        Encode(serde_json::Error),
    }

    impl AuthError {
        fn status(&self) -> StatusCode {
            match self {
                Self::NoSignIn | Self::StateMismatch | Self::Refused | Self::Rejected(_) => {
                    StatusCode::BAD_REQUEST
                }
                Self::Unreachable(_) => StatusCode::BAD_GATEWAY,
                Self::Session(_) | Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
    }

    impl std::fmt::Display for AuthError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Self::NoSignIn => {
                    f.write_str("no sign-in in progress (or this callback was already used)")
                }
                Self::StateMismatch => f.write_str("state does not match the sign-in request"),
                Self::Refused => f.write_str("the provider refused the sign-in"),
                Self::Rejected(why) => write!(f, "the provider rejected the sign-in: {why}"),
                Self::Unreachable(e) => write!(f, "the provider cannot be reached: {e}"),
                Self::Session(e) => write!(f, "session: {e}"),
                Self::Encode(e) => write!(f, "access-token map: {e}"),
            }
        }
    }

    impl From<SessionError> for AuthError {
        fn from(e: SessionError) -> Self {
            Self::Session(e)
        }
    }

    impl IntoResponse for AuthError {
        fn into_response(self) -> Response {
            super::page(
                self.status(),
                "Sign-in failed",
                &format!(
                    "<p id=\"error\">sign-in failed: {}</p>\n\
                     <p><a id=\"retry\" href=\"/sign-in\">Start again</a></p>\n",
                    super::html_escape(&self.to_string())
                ),
            )
        }
    }

    /// Starts a sign-in: stores the verifier, the state and the redirect URI
    /// (one of `config.redirect_uris`), and returns the provider URL to send
    /// the browser to.
    pub(crate) fn sign_in_url(
        storage: &dyn Storage,
        config: &Config,
        redirect_uri: &str,
    ) -> Result<String, AuthError> {
        let verifier = random_token();
        let state = random_token();
        storage.set_item(CODE_VERIFIER, &verifier)?;
        storage.set_item(STATE, &state)?;
        storage.set_item(REDIRECT_URI, redirect_uri)?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid profile email offline_access")
            .append_pair("resource", &config.resources.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", &code_challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        Ok(format!("{}/authorize?{query}", config.provider))
    }

    /// The query the provider sends the browser back with.
    #[derive(Debug, Deserialize)]
    pub(crate) struct CallbackQuery {
        code: Option<String>,
        state: Option<String>,
        error: Option<String>,
    }

    /// What the callback needs from the sign-in request.
    #[derive(Debug)]
    pub(crate) struct Pending {
        code: String,
        verifier: String,
        redirect_uri: String,
    }

    /// Checks the callback against the stored sign-in state, and takes that
    /// state out of the session whatever the outcome: one callback per
    /// sign-in, so a replayed or forged one finds nothing to match.
    pub(crate) fn take_sign_in_state(
        storage: &dyn Storage,
        query: &CallbackQuery,
    ) -> Result<Pending, AuthError> {
        let expected = storage.remove_item(STATE);
        let verifier = storage.remove_item(CODE_VERIFIER);
        let redirect_uri = storage.remove_item(REDIRECT_URI);
        let (Some(expected), Some(verifier), Some(redirect_uri)) =
            (expected, verifier, redirect_uri)
        else {
            return Err(AuthError::NoSignIn);
        };
        let state_ok = query
            .state
            .as_deref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()));
        if !state_ok {
            return Err(AuthError::StateMismatch);
        }
        if query.error.is_some() {
            return Err(AuthError::Refused);
        }
        let code = query
            .code
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AuthError::Rejected("no code in the callback".into()))?;
        Ok(Pending {
            code,
            verifier,
            redirect_uri,
        })
    }

    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The provider's token response.
    #[derive(Debug, Deserialize)]
    struct TokenResponse {
        access_token: String,
        expires_in: u64,
        #[serde(default)]
        scope: String,
        id_token: Option<String>,
        refresh_token: Option<String>,
    }

    /// One access token in the map.
    #[derive(Debug, serde::Serialize, Deserialize)]
    pub(crate) struct AccessToken {
        pub(crate) token: String,
        pub(crate) scope: String,
        pub(crate) expires_at: u64,
    }

    /// Everything a sign-in yields.
    #[derive(Debug)]
    pub(crate) struct Tokens {
        id_token: String,
        refresh_token: String,
        access_tokens: BTreeMap<String, AccessToken>,
        claims: Claims,
    }

    impl Tokens {
        /// The verified ID token's claims.
        pub(crate) fn claims(&self) -> &Claims {
            &self.claims
        }
    }

    async fn token_request(
        http: &reqwest::Client,
        config: &Config,
        form: String,
    ) -> Result<TokenResponse, AuthError> {
        let res = http
            .post(format!("{}/token", config.provider))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(AuthError::Unreachable)?;
        let status = res.status();
        let body = res.bytes().await.map_err(AuthError::Unreachable)?;
        if !status.is_success() {
            return Err(AuthError::Rejected(format!("token endpoint said {status}")));
        }
        serde_json::from_slice(&body)
            .map_err(|e| AuthError::Rejected(format!("bad token response: {e}")))
    }

    /// Exchanges the code (with the PKCE verifier) for tokens, then gets an
    /// access token for each resource with the refresh token.
    pub(crate) async fn exchange_code(
        http: &reqwest::Client,
        config: &Config,
        pending: Pending,
    ) -> Result<Tokens, AuthError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("client_id", &config.client_id)
            .append_pair("code", &pending.code)
            .append_pair("redirect_uri", &pending.redirect_uri)
            .append_pair("code_verifier", &pending.verifier)
            .finish();
        let first = token_request(http, config, form).await?;
        let (Some(id_token), Some(refresh_token)) = (first.id_token, first.refresh_token) else {
            return Err(AuthError::Rejected("no ID token or refresh token".into()));
        };
        let claims = verify_id_token(&id_token, config)?;
        let now = now_secs();
        let mut access_tokens = BTreeMap::new();
        access_tokens.insert(
            DEFAULT_RESOURCE.to_owned(),
            AccessToken {
                token: first.access_token,
                scope: first.scope,
                expires_at: now + first.expires_in,
            },
        );
        for resource in &config.resources {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", &config.client_id)
                .append_pair("refresh_token", &refresh_token)
                .append_pair("resource", resource)
                .finish();
            let t = token_request(http, config, form).await?;
            access_tokens.insert(
                resource.clone(),
                AccessToken {
                    token: t.access_token,
                    scope: t.scope,
                    expires_at: now + t.expires_in,
                },
            );
        }
        Ok(Tokens {
            id_token,
            refresh_token,
            access_tokens,
            claims,
        })
    }

    /// The ID token's claims, once its signature (the provider's key),
    /// issuer, audience and expiry check out.
    pub(crate) fn verify_id_token(id_token: &str, config: &Config) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.provider]);
        validation.set_audience(&[&config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<Claims>(id_token, &config.provider_key, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Rejected(format!("ID token refused: {e}")))
    }

    /// Stores the tokens.
    pub(crate) fn save_tokens(storage: &dyn Storage, tokens: &Tokens) -> Result<(), AuthError> {
        let map = serde_json::to_string(&tokens.access_tokens).map_err(AuthError::Encode)?;
        storage.set_item(ID_TOKEN, &tokens.id_token)?;
        storage.set_item(REFRESH_TOKEN, &tokens.refresh_token)?;
        storage.set_item(ACCESS_TOKENS, &map)?;
        Ok(())
    }

    /// The ID token's claims the app uses.
    #[derive(Debug, Deserialize)]
    pub(crate) struct Claims {
        pub(crate) iss: String,
        pub(crate) aud: String,
        pub(crate) sub: String,
        pub(crate) name: String,
        pub(crate) email: String,
        /// The provider login this sign-in belongs to (the back-channel
        /// logout names it).
        #[serde(default)]
        pub(crate) sid: Option<String>,
    }

    /// The claims of a JWT, read without checking its signature (for the
    /// stored ID token, checked when it was received).
    pub(crate) fn decode_claims(jwt: &str) -> Option<Claims> {
        let payload = jwt.split('.').nth(1)?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The signed-in user, from the stored ID token.
    pub(crate) fn user(storage: &dyn Storage) -> Option<Claims> {
        decode_claims(&storage.get_item(ID_TOKEN)?)
    }

    /// How many bytes of tokens the session holds.
    pub(crate) fn token_bytes(storage: &dyn Storage) -> usize {
        [ID_TOKEN, REFRESH_TOKEN, ACCESS_TOKENS]
            .iter()
            .filter_map(|k| storage.get_item(k))
            .map(|v| v.len())
            .sum()
    }

    /// Signs out the SDK's way: every key blanked with `set_item(key, "")`
    /// (an empty value removes the item).
    pub(crate) fn sign_out(storage: &dyn Storage) -> Result<(), AuthError> {
        for key in ALL_KEYS {
            storage.set_item(key, "")?;
        }
        Ok(())
    }
}

// ------------------------------------------------- the stand-in provider

/// A stand-in OpenID provider: just enough of `/authorize` (with a consent
/// page), `/token` (authorization code with PKCE S256, refresh token with
/// `resource`), `/jwks`, and back-channel logout (its page `/` lists its
/// logins; `POST /logout` signs one out and tells the app) for the demo.
/// Two accounts, Alice and Bob, and no password.
pub(crate) mod provider {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{EncodingKey, Header};

    /// How long an authorization code can be exchanged.
    const CODE_LIFETIME: Duration = Duration::from_secs(60);
    /// How long the tokens it issues live.
    const TOKEN_LIFETIME: u64 = 3600;
    /// How long a logout token is valid.
    const LOGOUT_TOKEN_LIFETIME: u64 = 120;
    /// The provider's own cookie: which login this browser has at the
    /// provider.
    const LOGIN_COOKIE: &str = "op_login";

    /// A user at the provider.
    #[derive(Debug)]
    pub(crate) struct Account {
        pub(crate) key: &'static str,
        pub(crate) sub: &'static str,
        pub(crate) given_name: &'static str,
        pub(crate) email: &'static str,
    }

    /// Everybody who can sign in; the first is the consent page's default.
    pub(crate) const ACCOUNTS: [Account; 2] = [
        Account {
            key: "alice",
            sub: "user_7f3c9a2e41d8",
            given_name: "Alice",
            email: "alice@example.com",
        },
        Account {
            key: "bob",
            sub: "user_2d4b8e61a0c7",
            given_name: "Bob",
            email: "bob@example.com",
        },
    ];

    /// The provider's signing key (Ed25519, `EdDSA`), made at start-up.
    #[derive(Clone)]
    pub(crate) struct Signer {
        key: EncodingKey,
        jwk: Jwk,
    }

    impl std::fmt::Debug for Signer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Signer")
                .field("jwk", &self.jwk)
                .finish_non_exhaustive()
        }
    }

    impl Signer {
        /// A fresh Ed25519 key: a random 32-byte seed (from two UUID v4s,
        /// 244 bits from the OS-seeded CSPRNG) in its PKCS#8 wrapping.
        pub(crate) fn generate() -> jsonwebtoken::errors::Result<Self> {
            // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed header, then the seed.
            const PKCS8_ED25519: [u8; 16] = [
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            let mut der = PKCS8_ED25519.to_vec();
            der.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            der.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            let key = EncodingKey::from_ed_der(&der);
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA)?;
            jwk.common.key_id = Some(uuid::Uuid::new_v4().simple().to_string());
            Ok(Self { key, jwk })
        }

        /// The public half, as a JWK (what `/jwks` serves).
        pub(crate) fn jwk(&self) -> &Jwk {
            &self.jwk
        }

        /// The public key to verify this signer's tokens with.
        pub(crate) fn decoding_key(&self) -> jsonwebtoken::errors::Result<DecodingKey> {
            DecodingKey::from_jwk(&self.jwk)
        }

        /// `claims` as a JWT of type `typ` signed with this key.
        pub(crate) fn sign(
            &self,
            typ: &str,
            claims: &serde_json::Value,
        ) -> jsonwebtoken::errors::Result<String> {
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some(typ.to_owned());
            header.kid = self.jwk.common.key_id.clone();
            jsonwebtoken::encode(&header, claims, &self.key)
        }
    }

    /// A logout token (OpenID Connect Back-Channel Logout 1.0, section 2.4)
    /// for `sub` and/or `sid`, issued now.
    pub(crate) fn logout_claims(
        issuer: &str,
        client_id: &str,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> serde_json::Value {
        let now = now_secs();
        let mut claims = json!({
            "iss": issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_LIFETIME,
            "jti": random_token(),
            "events": { backchannel::EVENT: {} },
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        claims
    }

    /// The app as the provider knows it.
    pub(crate) struct Client {
        pub(crate) issuer: String,
        pub(crate) client_id: String,
        pub(crate) redirect_uris: Vec<String>,
        pub(crate) backchannel_logout_uri: String,
        pub(crate) signer: Signer,
    }

    struct Provider {
        client: Client,
        http: reqwest::Client,
        codes: Mutex<HashMap<String, Grant>>,
        /// Refresh token -> the account it was issued to.
        refresh_tokens: Mutex<HashMap<String, &'static Account>>,
        logins: Mutex<Vec<Login>>,
    }

    /// A sign-in at the provider: one `sid`, shared by every app sign-in
    /// the same browser makes with the same account.
    struct Login {
        /// The browser's `op_login` cookie value (never shown to apps).
        secret: String,
        sid: String,
        account: &'static Account,
        since: SystemTime,
    }

    /// What a code stands for until it is exchanged.
    struct Grant {
        challenge: String,
        redirect_uri: String,
        account: &'static Account,
        sid: String,
        issued: Instant,
    }

    pub(crate) fn router(client: Client) -> Router {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let provider = Arc::new(Provider {
            client,
            http,
            codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            logins: Mutex::new(Vec::new()),
        });
        Router::new()
            .route("/", get(logins_page))
            .route("/authorize", get(authorize).post(consent))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .route("/logout", post(logout))
            .with_state(provider)
    }

    #[derive(Debug, Deserialize)]
    struct AuthorizeQuery {
        response_type: Option<String>,
        client_id: Option<String>,
        redirect_uri: Option<String>,
        state: Option<String>,
        code_challenge: Option<String>,
        code_challenge_method: Option<String>,
    }

    /// An authorization request that checked out.
    struct Request {
        redirect_uri: String,
        challenge: String,
        state: Option<String>,
    }

    fn bad(msg: &'static str) -> Response {
        (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
    }

    /// Checks the client, its redirect URI and the PKCE challenge.
    fn check(p: &Provider, q: AuthorizeQuery) -> Result<Request, &'static str> {
        // Never redirect to a URI the client did not register.
        let registered = q
            .redirect_uri
            .filter(|uri| p.client.redirect_uris.contains(uri));
        let (true, Some(redirect_uri)) = (
            q.client_id.as_deref() == Some(p.client.client_id.as_str()),
            registered,
        ) else {
            return Err("unknown client_id or redirect_uri");
        };
        if q.response_type.as_deref() != Some("code") {
            return Err("response_type must be code");
        }
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err("code_challenge_method must be S256");
        }
        let Some(challenge) = q.code_challenge.filter(|c| c.len() == 43) else {
            return Err("code_challenge missing or malformed");
        };
        Ok(Request {
            redirect_uri,
            challenge,
            state: q.state,
        })
    }

    /// `GET /authorize`: checks the request, then shows the consent page,
    /// whose form posts back to the same URL.
    async fn authorize(
        State(p): State<Arc<Provider>>,
        uri: axum::http::Uri,
        Query(q): Query<AuthorizeQuery>,
    ) -> Response {
        if let Err(why) = check(&p, q) {
            return bad(why);
        }
        let action = html_escape(&uri.to_string());
        let accounts: String = ACCOUNTS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "<label><input type=\"radio\" name=\"account\" value=\"{}\"{}> \
                     {} Example &lt;{}&gt;</label><br>\n",
                    a.key,
                    if i == 0 { " checked" } else { "" },
                    a.given_name,
                    a.email
                )
            })
            .collect();
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
             <title>Stand-in provider: sign in</title></head>\n<body>\n\
             <h1>Sign in to {}</h1>\n\
             <p>The stand-in OpenID provider, on another site than the app. \
             Pick an account (no password in this demo):</p>\n\
             <form id=\"consent-form\" method=\"post\" action=\"{action}\">\n{accounts}\
             <button id=\"consent\" type=\"submit\">Continue</button> \
             <button id=\"deny\" type=\"submit\" name=\"deny\" value=\"1\">Cancel</button>\n\
             </form>\n</body>\n</html>\n",
            html_escape(&p.client.client_id)
        );
        Html(html).into_response()
    }

    #[derive(Debug, Deserialize)]
    struct ConsentForm {
        account: Option<String>,
        deny: Option<String>,
    }

    /// `POST /authorize` (the consent button): signs the browser in at the
    /// provider (a new login with a new `sid`, or its current one for the
    /// same account) and redirects back to the app with a code.
    async fn consent(
        State(p): State<Arc<Provider>>,
        headers: HeaderMap,
        Query(q): Query<AuthorizeQuery>,
        Form(f): Form<ConsentForm>,
    ) -> Response {
        let request = match check(&p, q) {
            Ok(request) => request,
            Err(why) => return bad(why),
        };
        let mut back = form_urlencoded::Serializer::new(String::new());
        if f.deny.is_some() {
            back.append_pair("error", "access_denied");
            if let Some(state) = &request.state {
                back.append_pair("state", state);
            }
            let to = format!("{}?{}", request.redirect_uri, back.finish());
            return Redirect::to(&to).into_response();
        }
        let account_key = f.account.as_deref().unwrap_or(ACCOUNTS[0].key);
        let Some(account) = ACCOUNTS.iter().find(|a| a.key == account_key) else {
            return bad("unknown account");
        };
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(LOGIN_COOKIE)?.strip_prefix('='))
            .map(str::to_owned);
        let (secret, sid) = {
            let mut logins = p.logins.lock().unwrap_or_else(PoisonError::into_inner);
            let current = logins
                .iter()
                .find(|l| Some(&l.secret) == cookie.as_ref() && l.account.sub == account.sub);
            match current {
                Some(login) => (login.secret.clone(), login.sid.clone()),
                None => {
                    let login = Login {
                        secret: random_token(),
                        sid: random_token(),
                        account,
                        since: SystemTime::now(),
                    };
                    let out = (login.secret.clone(), login.sid.clone());
                    logins.push(login);
                    out
                }
            }
        };
        let code = random_token();
        {
            let mut codes = p.codes.lock().unwrap_or_else(PoisonError::into_inner);
            codes.retain(|_, g| g.issued.elapsed() < CODE_LIFETIME);
            codes.insert(
                code.clone(),
                Grant {
                    challenge: request.challenge,
                    redirect_uri: request.redirect_uri.clone(),
                    account,
                    sid,
                    issued: Instant::now(),
                },
            );
        }
        back.append_pair("code", &code);
        if let Some(state) = &request.state {
            back.append_pair("state", state);
        }
        let to = format!("{}?{}", request.redirect_uri, back.finish());
        (
            [(
                SET_COOKIE,
                format!("{LOGIN_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax"),
            )],
            Redirect::to(&to),
        )
            .into_response()
    }

    /// `GET /`: the provider's logins, each with a button that signs it out
    /// (and tells the app through the back channel).
    async fn logins_page(State(p): State<Arc<Provider>>) -> Response {
        let items: String = {
            let logins = p.logins.lock().unwrap_or_else(PoisonError::into_inner);
            logins
                .iter()
                .map(|l| {
                    format!(
                        "<li class=\"login\" data-sid=\"{sid}\" data-sub=\"{sub}\">\
                         {name} (sub <span class=\"sub\">{sub}</span>, \
                         sid <span class=\"sid\">{sid}</span>, since {since:?})\
                         <form method=\"post\" action=\"/logout\">\
                         <input type=\"hidden\" name=\"sid\" value=\"{sid}\">\
                         <button class=\"provider-sign-out\" type=\"submit\">\
                         Sign out at the provider</button></form></li>\n",
                        sid = html_escape(&l.sid),
                        sub = l.account.sub,
                        name = l.account.given_name,
                        since = l
                            .since
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    )
                })
                .collect()
        };
        let everywhere: String = ACCOUNTS
            .iter()
            .map(|a| {
                format!(
                    "<form method=\"post\" action=\"/logout\">\
                     <input type=\"hidden\" name=\"sub\" value=\"{}\">\
                     <button class=\"provider-sign-out-user\" type=\"submit\">\
                     Sign {} out everywhere</button></form>\n",
                    a.sub, a.given_name
                )
            })
            .collect();
        provider_page(
            StatusCode::OK,
            &format!("<ul id=\"logins\">\n{items}</ul>\n{everywhere}"),
        )
    }

    fn provider_page(status: StatusCode, body: &str) -> Response {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
             <title>Stand-in provider</title></head>\n<body>\n\
             <h1>Stand-in provider: logins</h1>\n{body}\
             <p><a id=\"logins-link\" href=\"/\">Logins</a></p>\n</body>\n</html>\n"
        );
        (status, Html(html)).into_response()
    }

    #[derive(Debug, Default, Deserialize)]
    struct LogoutTarget {
        sid: Option<String>,
        sub: Option<String>,
    }

    /// `POST /logout` with `sid` (one login) or `sub` (every login of that
    /// user), in the query or the form: ends the logins and posts a logout
    /// token to the app's back-channel endpoint.
    async fn logout(
        State(p): State<Arc<Provider>>,
        Query(query): Query<LogoutTarget>,
        body: axum::body::Bytes,
    ) -> Response {
        let form = form_fields(&body);
        let sid = query.sid.or(form.sid).filter(|s| !s.is_empty());
        let sub = query.sub.or(form.sub).filter(|s| !s.is_empty());
        // The token names the sid and its user, or only the user.
        let (sub, sid) = {
            let mut logins = p.logins.lock().unwrap_or_else(PoisonError::into_inner);
            let named = match (&sid, &sub) {
                (Some(sid), _) => logins
                    .iter()
                    .find(|l| &l.sid == sid)
                    .map(|l| (l.account.sub.to_owned(), Some(sid.clone()))),
                (None, Some(sub)) => ACCOUNTS
                    .iter()
                    .find(|a| a.sub == sub)
                    .map(|a| (a.sub.to_owned(), None)),
                (None, None) => None,
            };
            let Some((sub, sid)) = named else {
                return provider_page(
                    StatusCode::NOT_FOUND,
                    "<p id=\"backchannel-result\">no such login or user</p>\n",
                );
            };
            logins.retain(|l| match &sid {
                Some(sid) => &l.sid != sid,
                None => l.account.sub != sub,
            });
            (sub, sid)
        };
        let claims = logout_claims(
            &p.client.issuer,
            &p.client.client_id,
            Some(&sub),
            sid.as_deref(),
        );
        let token = match p.client.signer.sign("logout+jwt", &claims) {
            Ok(token) => token,
            Err(e) => {
                return provider_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("<p id=\"backchannel-result\">cannot sign: {e}</p>\n"),
                )
            }
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", &token)
            .finish();
        let sent = p
            .http
            .post(&p.client.backchannel_logout_uri)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        let (status, said) = match sent {
            Ok(res) => {
                let code = res.status();
                let text = res.text().await.unwrap_or_default();
                let status = if code == reqwest::StatusCode::OK {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                };
                (status, format!("the app answered {code}: {}", text.trim()))
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                format!("the app is unreachable: {e}"),
            ),
        };
        provider_page(
            status,
            &format!(
                "<p id=\"backchannel-result\" data-status=\"{}\">signed out at the provider; \
                 {}</p>\n",
                status.as_u16(),
                html_escape(&said)
            ),
        )
    }

    /// `sid` and `sub` out of a form body (any content type; unknown names
    /// ignored).
    fn form_fields(body: &[u8]) -> LogoutTarget {
        let mut out = LogoutTarget::default();
        for (k, v) in form_urlencoded::parse(body) {
            match &*k {
                "sid" => out.sid = Some(v.into_owned()),
                "sub" => out.sub = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }

    /// `GET /jwks`: the provider's public key, as a real provider publishes
    /// it for apps to verify its tokens with.
    async fn jwks(State(p): State<Arc<Provider>>) -> Response {
        Json(JwkSet {
            keys: vec![p.client.signer.jwk().clone()],
        })
        .into_response()
    }

    #[derive(Debug, Deserialize)]
    struct TokenForm {
        grant_type: Option<String>,
        client_id: Option<String>,
        code: Option<String>,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
        refresh_token: Option<String>,
        resource: Option<String>,
    }

    fn invalid_grant(why: &str) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response()
    }

    fn server_error(e: &jsonwebtoken::errors::Error) -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "server_error", "error_description": e.to_string() })),
        )
            .into_response()
    }

    /// `POST /token`: `authorization_code` (PKCE S256 checked, code used
    /// once) or `refresh_token` (an access token for `resource`).
    async fn token(State(p): State<Arc<Provider>>, Form(f): Form<TokenForm>) -> Response {
        if f.client_id.as_deref() != Some(p.client.client_id.as_str()) {
            return invalid_grant("unknown client");
        }
        match f.grant_type.as_deref() {
            Some("authorization_code") => {
                let grant = f.code.as_deref().and_then(|c| {
                    p.codes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(c)
                });
                let Some(grant) = grant.filter(|g| g.issued.elapsed() < CODE_LIFETIME) else {
                    return invalid_grant("unknown, used or expired code");
                };
                if f.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
                    return invalid_grant("redirect_uri differs from the authorization request");
                }
                let verified = f
                    .code_verifier
                    .as_deref()
                    .is_some_and(|v| code_challenge(v) == grant.challenge);
                if !verified {
                    return invalid_grant("code_verifier does not match code_challenge");
                }
                let signed = p.id_token(grant.account, &grant.sid).and_then(|id| {
                    let userinfo = format!("{}/userinfo", p.client.issuer);
                    Ok((id, p.access_token(grant.account, &userinfo)?))
                });
                let (id_token, access_token) = match signed {
                    Ok(tokens) => tokens,
                    Err(e) => return server_error(&e),
                };
                let refresh = random_token();
                p.refresh_tokens
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(refresh.clone(), grant.account);
                Json(json!({
                    "token_type": "Bearer",
                    "expires_in": TOKEN_LIFETIME,
                    "scope": "openid profile email offline_access",
                    "id_token": id_token,
                    "access_token": access_token,
                    "refresh_token": refresh,
                }))
                .into_response()
            }
            Some("refresh_token") => {
                let account = f.refresh_token.as_deref().and_then(|t| {
                    p.refresh_tokens
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(t)
                        .copied()
                });
                let Some(account) = account else {
                    return invalid_grant("unknown refresh token");
                };
                let Some(resource) = f.resource.filter(|r| RESOURCES.contains(&r.as_str())) else {
                    return invalid_grant("unknown resource");
                };
                let access_token = match p.access_token(account, &resource) {
                    Ok(token) => token,
                    Err(e) => return server_error(&e),
                };
                Json(json!({
                    "token_type": "Bearer",
                    "expires_in": TOKEN_LIFETIME,
                    "scope": scopes(&resource).join(" "),
                    "access_token": access_token,
                }))
                .into_response()
            }
            _ => invalid_grant("unsupported grant_type"),
        }
    }

    /// The permissions of an API, as a real provider lists them.
    fn scopes(resource: &str) -> Vec<String> {
        let api = resource.rsplit('/').next().unwrap_or("api");
        [
            "read", "write", "delete", "export", "import", "admin", "audit", "share",
        ]
        .iter()
        .flat_map(|verb| {
            ["own", "team", "org"]
                .iter()
                .map(move |scope| format!("{verb}:{api}:{scope}"))
        })
        .collect()
    }

    impl Provider {
        fn id_token(&self, account: &Account, sid: &str) -> jsonwebtoken::errors::Result<String> {
            let now = now_secs();
            let id = account.sub.trim_start_matches("user_");
            self.client.signer.sign(
                "JWT",
                &json!({
                    "iss": self.client.issuer,
                    "aud": self.client.client_id,
                    "sub": account.sub,
                    "sid": sid,
                    "iat": now,
                    "exp": now + TOKEN_LIFETIME,
                    "auth_time": now,
                    "at_hash": random_token(),
                    "name": format!("{} Example", account.given_name),
                    "given_name": account.given_name,
                    "family_name": "Example",
                    "email": account.email,
                    "email_verified": true,
                    "picture": format!("https://avatars.example.com/u/{id}?size=256&format=webp"),
                    "locale": "en-GB",
                    "zoneinfo": "Europe/London",
                    "roles": ["admin", "billing:viewer", "support:agent", "analytics:analyst"],
                    "organizations": ["org_2b7d61f0", "org_9ac4e5d2", "org_11f0b7a3"],
                    "organization_roles": ["org_2b7d61f0:owner", "org_9ac4e5d2:member", "org_11f0b7a3:guest"],
                    "custom_data": {
                        "plan": "enterprise",
                        "onboarded": true,
                        "preferences": { "theme": "dark", "density": "compact", "newsletter": false },
                    },
                }),
            )
        }

        fn access_token(
            &self,
            account: &Account,
            resource: &str,
        ) -> jsonwebtoken::errors::Result<String> {
            let now = now_secs();
            self.client.signer.sign(
                "at+jwt",
                &json!({
                    "iss": self.client.issuer,
                    "aud": resource,
                    "sub": account.sub,
                    "client_id": self.client.client_id,
                    "iat": now,
                    "exp": now + TOKEN_LIFETIME,
                    "jti": random_token(),
                    "scope": scopes(resource).join(" "),
                }),
            )
        }
    }
}
