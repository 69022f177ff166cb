//! OpenID Connect sign-in with the tokens kept server-side, through the
//! `Storage` contract only: the use case this crate exists for.
//!
//! ```text
//! cargo run --example signin
//! ```
//!
//! Two servers start on `127.0.0.1`: a stand-in OpenID provider (an OS-picked
//! port) and the web app (the port in `PORT`, default 3000; if that port is
//! busy, the OS picks one). Open `http://localhost:3000/` or
//! `http://127.0.0.1:3000/` in a browser and click through (every page,
//! errors included, links to the next step), or follow the flow with curl
//! (the jar file plays the browser's cookie store; `-L` follows the
//! redirects through the provider and back):
//!
//! ```text
//! curl -L -b jar.txt -c jar.txt http://127.0.0.1:3000/sign-in   # signed in as Alice Example
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/me
//! curl -L -b jar.txt -c jar.txt -d '' http://127.0.0.1:3000/sign-out   # POST: the Sign out button
//! ```
//!
//! # The flow
//!
//! 1. `GET /sign-in` stores a PKCE code verifier, a random `state` and the
//!    redirect URI in the session, and redirects to the provider's
//!    `/authorize` with the S256 code challenge.
//! 2. The stand-in provider signs "Alice" in without asking (a real one shows
//!    a login page) and redirects back to `/callback?code=…&state=…`.
//! 3. `GET /callback` takes the sign-in state out of the session (one use
//!    only: a forged, missing or replayed `state` gets `400`), exchanges the
//!    code and the verifier at the provider's `/token`, fetches an access
//!    token for each API resource with the refresh token, stores the ID
//!    token, the refresh token and the access-token map (over 6 KB together:
//!    no cookie could hold them), and calls `cycle_id()`: the session moves
//!    to a new id and the pre-sign-in id stops working.
//! 4. `GET /me` shows the user from the stored ID token.
//! 5. `POST /sign-out` (the "Sign out" button on every page) blanks every
//!    token with `set_item(key, "")` (the way Logto's Go SDK signs out
//!    through its `Storage`), destroys the session and sends the browser
//!    home. `GET /sign-out` (a typed URL) only shows the button: a link
//!    elsewhere cannot sign the user out.
//!
//! The app answers on `localhost` and on `127.0.0.1`, and a sign-in stays on
//! the host it started on: the provider knows a callback URL for each
//! (`http://localhost:PORT/callback` and `http://127.0.0.1:PORT/callback`),
//! and `/sign-in` picks the one whose host the browser used. Cookies belong
//! to a host name, so a callback on the other host would arrive without the
//! session that holds the sign-in state. Any other `Host` is sent to
//! `http://127.0.0.1:PORT/sign-in` first.
//!
//! The sign-in logic (module `sdk`) sees the session only as
//! `&dyn Storage`: `get_item`, `set_item`, `remove_item`, the contract auth
//! SDKs are written against. Only the app's handlers use `SessionStorage`
//! itself, for `cycle_id()` and `destroy()`.
//!
//! The cookie keeps the default `Secure` flag, even though the demo speaks
//! plain HTTP: Chromium-based browsers and curl keep a `Secure` cookie set
//! over `http://` and send it back when the host is `localhost` or
//! `127.0.0.1` (loopback counts as a secure context). On any other host name
//! or address they refuse it, and every request starts a new session: serve
//! such hosts over HTTPS.
//!
//! Demo shortcuts, each marked where it is made: plain HTTP, a provider that
//! signs anyone in as Alice, and ID tokens whose signature is not checked (a
//! real app verifies it against the provider's keys; an SDK does that for
//! you). Cookies do not care about ports, so a browser on `127.0.0.1` also
//! sends the app's cookie to the provider, which ignores it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{header::HOST, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower_session_storage::{SessionLayer, SessionStorage, SessionStore, Storage};

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
    let app = bind().await?;
    let provider = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let demo = start(app, provider, tower_session_storage::MemoryStore::new()).await?;
    let url = &demo.app;
    println!(
        "sign-in demo: app on {url}/, stand-in OpenID provider on {}/",
        demo.provider
    );
    println!(
        "open {}/ or {url}/ in a browser, or try:",
        demo.app.replace("127.0.0.1", "localhost")
    );
    println!("  curl -L -b jar.txt -c jar.txt {url}/sign-in");
    println!("  curl -b jar.txt -c jar.txt {url}/me");
    println!("  curl -L -b jar.txt -c jar.txt -d '' {url}/sign-out");
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
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

/// The base URLs of the two running servers (no trailing slash), on
/// `127.0.0.1`. The app also answers as `localhost` on the same port.
#[derive(Debug, Clone)]
pub(crate) struct Demo {
    pub(crate) app: String,
    pub(crate) provider: String,
}

/// The client id the app is registered under at the provider.
pub(crate) const CLIENT_ID: &str = "demo-app";
/// The API resources the app gets an access token for.
pub(crate) const RESOURCES: [&str; 3] = [
    "https://api.example.com/orders",
    "https://api.example.com/billing",
    "https://api.example.com/analytics",
];

/// Starts the provider and the app (sessions kept in `store`) on the two
/// listeners, each in its own task.
pub(crate) async fn start<S: SessionStore>(
    app: TcpListener,
    provider: TcpListener,
    store: S,
) -> std::io::Result<Demo> {
    let app_port = app.local_addr()?.port();
    let demo = Demo {
        app: format!("http://127.0.0.1:{app_port}"),
        provider: format!("http://{}", provider.local_addr()?),
    };
    let config = sdk::Config {
        provider: demo.provider.clone(),
        client_id: CLIENT_ID.to_owned(),
        // One callback per host name the app answers on; the first is the
        // default.
        redirect_uris: vec![
            format!("http://127.0.0.1:{app_port}/callback"),
            format!("http://localhost:{app_port}/callback"),
        ],
        resources: RESOURCES.iter().map(|r| (*r).to_owned()).collect(),
    };
    let provider_router = provider::router(&demo.provider, CLIENT_ID, &config.redirect_uris);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(provider, provider_router).await {
            eprintln!("provider stopped: {e}");
        }
    });
    let app_router = app_router(store, config);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(app, app_router).await {
            eprintln!("app stopped: {e}");
        }
    });
    Ok(demo)
}

// ------------------------------------------------------------------ the app

/// What the handlers share.
struct App {
    config: sdk::Config,
    http: reqwest::Client,
}

/// The web app: its routes behind a [`SessionLayer`] over `store`.
pub(crate) fn app_router<S: SessionStore>(store: S, config: sdk::Config) -> Router {
    // The defaults, `Secure` included: browsers and curl (and reqwest's
    // cookie jar) send a `Secure` cookie over plain http:// to `localhost`
    // and `127.0.0.1` only. Anywhere else, serve over HTTPS.
    let sessions = SessionLayer::new(store).with_idle_timeout(Duration::from_secs(8 * 3600));
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
        .fallback(not_found)
        .with_state(Arc::new(App { config, http }))
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
    (it signs anyone in as Alice, without asking).</p>\n";

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
/// stores the tokens, and moves the session to a new id.
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
             <p>tokens kept server-side: {} bytes; the cookie holds only the session id.</p>\n",
            html_escape(&user.name),
            html_escape(&user.email),
            html_escape(&user.sub),
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

/// Any other path: a `404` page with the way back.
async fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "<p>not found</p>\n")
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

fn now_secs() -> u64 {
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
        pub(crate) provider: String,
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
        let claims = decode_claims(&id_token)
            .ok_or_else(|| AuthError::Rejected("unreadable ID token".into()))?;
        // A real app verifies the ID token's signature against the provider's
        // keys first (an SDK does). The demo checks who it is from and for.
        if claims.iss != config.provider || claims.aud != config.client_id {
            return Err(AuthError::Rejected("ID token not for this app".into()));
        }
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
        })
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
    }

    /// The claims of a JWT, read without checking its signature.
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

/// A stand-in OpenID provider: just enough of `/authorize` and `/token`
/// (authorization code with PKCE S256, refresh token with `resource`) for the
/// demo. It signs anyone in as Alice without asking.
pub(crate) mod provider {
    use super::*;

    /// How long an authorization code can be exchanged.
    const CODE_LIFETIME: Duration = Duration::from_secs(60);
    /// How long the access tokens it issues live.
    const TOKEN_LIFETIME: u64 = 3600;

    struct Provider {
        issuer: String,
        client_id: String,
        redirect_uris: Vec<String>,
        codes: Mutex<HashMap<String, Grant>>,
        refresh_tokens: Mutex<HashMap<String, String>>,
    }

    /// What a code stands for until it is exchanged.
    struct Grant {
        challenge: String,
        redirect_uri: String,
        issued: Instant,
    }

    /// The user everybody signs in as.
    const SUB: &str = "user_7f3c9a2e41d8";

    pub(crate) fn router(issuer: &str, client_id: &str, redirect_uris: &[String]) -> Router {
        let provider = Arc::new(Provider {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            redirect_uris: redirect_uris.to_vec(),
            codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        });
        Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
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

    fn bad(msg: &'static str) -> Response {
        (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
    }

    /// `GET /authorize`: checks the client and its redirect URI, then "signs
    /// the user in" and redirects back with a code and the same `state`.
    async fn authorize(
        State(p): State<Arc<Provider>>,
        Query(q): Query<AuthorizeQuery>,
    ) -> Response {
        // Never redirect to a URI the client did not register.
        let registered = q
            .redirect_uri
            .as_ref()
            .filter(|uri| p.redirect_uris.contains(uri));
        let (true, Some(redirect_uri)) = (
            q.client_id.as_deref() == Some(p.client_id.as_str()),
            registered,
        ) else {
            return bad("unknown client_id or redirect_uri");
        };
        if q.response_type.as_deref() != Some("code") {
            return bad("response_type must be code");
        }
        if q.code_challenge_method.as_deref() != Some("S256") {
            return bad("code_challenge_method must be S256");
        }
        let Some(challenge) = q.code_challenge.filter(|c| c.len() == 43) else {
            return bad("code_challenge missing or malformed");
        };
        let code = random_token();
        {
            let mut codes = p.codes.lock().unwrap_or_else(PoisonError::into_inner);
            codes.retain(|_, g| g.issued.elapsed() < CODE_LIFETIME);
            codes.insert(
                code.clone(),
                Grant {
                    challenge,
                    redirect_uri: redirect_uri.clone(),
                    issued: Instant::now(),
                },
            );
        }
        let mut back = form_urlencoded::Serializer::new(String::new());
        back.append_pair("code", &code);
        if let Some(state) = &q.state {
            back.append_pair("state", state);
        }
        Redirect::to(&format!("{redirect_uri}?{}", back.finish())).into_response()
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

    /// `POST /token`: `authorization_code` (PKCE S256 checked, code used
    /// once) or `refresh_token` (an access token for `resource`).
    async fn token(State(p): State<Arc<Provider>>, Form(f): Form<TokenForm>) -> Response {
        if f.client_id.as_deref() != Some(p.client_id.as_str()) {
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
                let refresh = random_token();
                p.refresh_tokens
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(refresh.clone(), SUB.to_owned());
                Json(json!({
                    "token_type": "Bearer",
                    "expires_in": TOKEN_LIFETIME,
                    "scope": "openid profile email offline_access",
                    "id_token": p.id_token(),
                    "access_token": p.access_token(&format!("{}/userinfo", p.issuer)),
                    "refresh_token": refresh,
                }))
                .into_response()
            }
            Some("refresh_token") => {
                let known = f.refresh_token.as_deref().is_some_and(|t| {
                    p.refresh_tokens
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains_key(t)
                });
                if !known {
                    return invalid_grant("unknown refresh token");
                }
                let Some(resource) = f.resource.filter(|r| RESOURCES.contains(&r.as_str())) else {
                    return invalid_grant("unknown resource");
                };
                Json(json!({
                    "token_type": "Bearer",
                    "expires_in": TOKEN_LIFETIME,
                    "scope": scopes(&resource).join(" "),
                    "access_token": p.access_token(&resource),
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
        /// A JWT-shaped token. The "signature" is a stand-in of the right
        /// size: this demo provider has no keys, and the demo app does not
        /// verify it (a real app must).
        fn jwt(&self, claims: serde_json::Value) -> String {
            let header =
                URL_SAFE_NO_PAD.encode(br#"{"alg":"ES384","typ":"JWT","kid":"demo-key-1"}"#);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            let mut sig = Sha256::digest(format!("{header}.{payload}").as_bytes()).to_vec();
            sig.extend_from_slice(&Sha256::digest(&sig));
            sig.extend_from_slice(&Sha256::digest(&sig));
            format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        fn id_token(&self) -> String {
            let now = now_secs();
            self.jwt(json!({
                "iss": self.issuer,
                "aud": self.client_id,
                "sub": SUB,
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
                "auth_time": now,
                "at_hash": random_token(),
                "name": "Alice Example",
                "given_name": "Alice",
                "family_name": "Example",
                "email": "alice@example.com",
                "email_verified": true,
                "picture": "https://avatars.example.com/u/7f3c9a2e41d8?size=256&format=webp",
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
            }))
        }

        fn access_token(&self, resource: &str) -> String {
            let now = now_secs();
            self.jwt(json!({
                "iss": self.issuer,
                "aud": resource,
                "sub": SUB,
                "client_id": self.client_id,
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
                "jti": random_token(),
                "scope": scopes(resource).join(" "),
            }))
        }
    }
}
