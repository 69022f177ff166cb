//! Server-side sessions for any tower stack: axum, hyper, tonic.
//!
//! Four names to tell apart:
//!
//! | Name | What it is | Who uses it |
//! |---|---|---|
//! | [`SessionLayer`] | the tower middleware | you, once, when building the app |
//! | [`SessionStorage`] (module `storage`) | the **per-request handle**: read and write this request's session | handlers |
//! | [`Storage`] (module `storage`) | the **get/set/remove contract** auth SDKs are written against; `SessionStorage` implements it | SDKs, your helpers |
//! | [`SessionStore`] (module [`store`]) | the **backend** that keeps every session: [`MemoryStore`], `RedisStore`, your own | the layer, never handlers |
//!
//! A [`SessionLayer`] finds the session id in a cookie, loads the session
//! from a [`SessionStore`], and puts a [`SessionStorage`] handle into the
//! request's extensions. Handlers read and write string items through it
//! (`get_item` / `set_item` / `remove_item`, the [`Storage`] contract auth
//! SDKs use to keep tokens on the server). After the inner service answers,
//! the layer writes what changed back to the store and sets the cookie when
//! the id is new, changed or gone.
//!
//! # Quick start (axum)
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # mod demo {
//! use axum::{routing::get, Router};
//! use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};
//!
//! async fn counter(session: SessionStorage) -> String {
//!     let n: u64 = session.get_item("n").and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
//!     session.set_item("n", &n.to_string()).expect("a small item fits");
//!     format!("visit {n}")
//! }
//!
//! pub async fn main() {
//!     let app = Router::new()
//!         .route("/", get(counter))
//!         .layer(SessionLayer::new(MemoryStore::new()));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! With the `axum` feature (on by default), `SessionStorage` is an extractor
//! (a `500` when no layer runs in front of the route) and
//! `Option<SessionStorage>` one that is `None` without the layer (see the
//! `extract` module); without the feature, use
//! `axum::Extension<SessionStorage>`. Any other tower stack
//! reads the handle from the request's extensions:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(SessionLayer::new(MemoryStore::new()))
//!     .service_fn(|req: Request<String>| async move {
//!         let session = req.extensions().get::<SessionStorage>().expect("layer installed");
//!         session.set_item("user_id", "12345").expect("fits");
//!         Ok::<_, Infallible>(Response::new(String::new()))
//!     });
//! let res = svc.oneshot(Request::new(String::new())).await.unwrap();
//! let cookie = res.headers()["set-cookie"].to_str().unwrap();
//! assert!(cookie.starts_with("id="));
//! assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax"));
//! # }
//! ```
//!
//! # Testing handlers
//!
//! [`SessionStorage::detached`] (empty) and [`SessionStorage::detached_with`]
//! (seeded with items) make a handle outside any request, so a handler
//! written as a plain function of a `SessionStorage` or a `&dyn Storage` is
//! tested by calling it and reading back what it wrote. A detached handle's
//! [`id`](SessionStorage::id) is always `None`, and nothing it holds is ever
//! saved.
//!
//! ```
//! use tower_session_storage::{SessionError, SessionStorage, Storage};
//!
//! async fn sign_in(session: SessionStorage, user: String) -> Result<String, SessionError> {
//!     session.set_item("user", &user)?;
//!     session.remove_item("code_verifier");
//!     session.cycle_id();
//!     Ok(format!("welcome, {user}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let session = SessionStorage::detached_with([("code_verifier", "abc")]);
//! assert_eq!(sign_in(session.clone(), "alice".into()).await.unwrap(), "welcome, alice");
//! assert_eq!(session.get_item("user").as_deref(), Some("alice"));
//! assert_eq!(session.get_item("code_verifier"), None);
//! # }
//! ```
//!
//! # How it works
//!
//! - **Load.** When the request carries a well-formed id, the layer loads
//!   that session before calling the inner service. With no id, nothing
//!   touches the store.
//! - **Lazy creation.** A session reaches the store only when an item is
//!   written. A flood of requests without a cookie, or with made-up ids,
//!   writes nothing.
//! - **Strict ids.** The server makes every id (UUID v4, 122 random bits). An
//!   id the store does not know, or one that has expired or been destroyed,
//!   is never adopted: the request starts with an empty session, and a write
//!   gets a new id. No removal cookie is sent for such an id (it could
//!   delete a newer cookie a concurrent response has just set), so the
//!   browser keeps sending it, at one store look-up per request, until a
//!   handler writes or the browser session ends. A cookie of ours whose
//!   value is not even a well-formed id never reaches the store and is
//!   cleared by the response (unless the response sets a new session, the
//!   handler failed, or the browser says the request is cross-site, where
//!   it may have withheld the real `SameSite` cookie and clearing could
//!   delete it). A junk cookie planted for a parent domain cannot be
//!   deleted from here at all; a `__Host-` cookie name keeps such cookies
//!   from being taken for ours.
//! - **Change sets.** Writes are buffered in the handle (a read sees the
//!   request's own writes) and applied at the end as one change set: the keys
//!   set and the keys removed. One store round trip and at most one
//!   `Set-Cookie` per request, however many `set_item` calls.
//! - **Failures persist nothing.** A response with a 5xx status, a gRPC
//!   trailers-only response whose `grpc-status` maps to a 5xx (`UNKNOWN`,
//!   `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
//!   `DATA_LOSS`), or an error from the inner service persists nothing, a
//!   `destroy()` included. Changes are saved when the response head is
//!   produced: a gRPC status sent in trailers after a streamed body, and
//!   writes made while a body streams, come too late and are not seen.
//!
//! # Concurrency
//!
//! Requests on one session may run at the same time (a page firing several
//! API calls). Each applies only what it changed:
//!
//! - requests writing **different keys** all keep their writes;
//! - for **one key**, the last request to finish wins;
//! - a change set for a session that was **destroyed or expired meanwhile is
//!   dropped**: a logout is never undone by a request already in flight, and
//!   that request sends no cookie;
//! - [`SessionStorage::cycle_id`] moves the data to a fresh id atomically; the
//!   old id stops working at once, so changes from requests still in flight
//!   on the old id are dropped as well (a request that loaded the session
//!   before a sign-in cannot write into the signed-in session);
//! - a **logout racing a `cycle_id`** still ends the session: a request that
//!   loaded the session under its old id and calls
//!   [`SessionStorage::destroy`] ends it under the new id too
//!   ([`SessionStore::end`] follows the move through the session's
//!   [`PublicId`], which stays the same across `cycle_id`). The id the
//!   cycling request handed out then loads an empty session.
//!
//! These rules are checked by a model-based test (`tests/model.rs`) that
//! runs seeded random histories of concurrent requests, with store calls
//! delayed and failed at random, against every store.
//!
//! # Expiry
//!
//! An idle timeout (sliding, [`SessionLayer::with_idle_timeout`], 24 hours by
//! default) and an optional absolute timeout since creation
//! ([`SessionLayer::with_absolute_timeout`]) are both checked on load,
//! server-side, even if the store has not evicted the session yet. Use is
//! recorded with a resolution of 1/16 of the idle timeout (at most a minute),
//! so a session that is only read costs a store write at most once per that
//! span, not on every request. A refresh is best effort: if that write
//! fails, the failure is logged (`ERROR`, as every store failure) and the handler's answer is sent
//! as it is; the session then expires up to one such span sooner.
//!
//! A request that is still running when its session's idle deadline passes
//! keeps what it loaded; whether its writes land depends on the store: the
//! memory store judges the save by the time the request started, while
//! Redis has already dropped the key at its TTL, so the writes are dropped
//! (the response is still sent, with no cookie). Either way the session
//! does not come back to life: only a request that loaded it in time can
//! write to it.
//!
//! Times are read from the system's wall clock once per request, so a clock
//! corrected after start-up (an NTP step at boot, an operator fixing it) is
//! followed at once: a process that started with a wrong clock does not
//! create sessions that are already expired, or that live too long, once it
//! has been corrected. Keep app servers and Redis in sync with NTP. (Under
//! tokio's paused test clock, time stands still and moves with
//! `tokio::time::advance`.)
//!
//! The cookie is a browser-session cookie by default;
//! [`SessionLayer::with_persistent_cookie`] gives it a `Max-Age` equal to the
//! session's remaining lifetime (capped at 400 days), refreshed along with it.
//!
//! A session can have its own idle timeout and cookie persistence ("remember
//! me"): [`SessionStorage::set_idle_timeout`] and
//! [`SessionStorage::set_persistent_cookie`]. They are stored with it, kept
//! across `cycle_id`, and still bounded by the layer's absolute timeout.
//!
//! # Finding and ending sessions
//!
//! Link a session to what should find it later ([`SessionStorage::link`]:
//! the user, the OpenID provider's `sid`), then list and end sessions by
//! those links with a [`SessionRegistry`]: sign out everywhere after a
//! password change, a devices page with "sign out that device" and "sign
//! out everywhere else", an OpenID Connect back-channel logout. Ending is a
//! logout at once on every instance sharing the store, and a request in
//! flight cannot undo it. A session's [`PublicId`] names it in a list or a
//! URL and can never act as it. `with_max_sessions_per_link` caps the
//! sessions per user.
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # mod demo {
//! use axum::extract::Path;
//! use axum::http::StatusCode;
//! use axum::routing::{get, post};
//! use axum::Router;
//! use tower_session_storage::{MemoryStore, PublicId, SessionError, SessionLayer, SessionRegistry, SessionStorage};
//!
//! // At sign-in: link the session to the user (and the provider's sid).
//! fn signed_in(session: &SessionStorage, sub: &str, sid: &str) -> Result<(), SessionError> {
//!     session.set_item("user", sub)?;
//!     session.link("user", sub)?;
//!     session.link("sid", sid)?;
//!     session.cycle_id();
//!     Ok(())
//! }
//!
//! // A devices page: this user's sessions, this one marked.
//! async fn devices(session: SessionStorage, registry: SessionRegistry) -> Result<String, StatusCode> {
//!     let Some(user) = session.get_item("user") else { return Ok("signed out".into()) };
//!     let mut page = String::new();
//!     for s in registry.list("user", &user).await.map_err(|e| e.status())? {
//!         let this = if Some(s.public_id()) == session.public_id() { " (this device)" } else { "" };
//!         page += &format!("{}: since {:?}{this}\n", s.public_id(), s.created_at());
//!     }
//!     Ok(page)
//! }
//!
//! // "Sign out that device": only one of this user's own.
//! async fn end_device(session: SessionStorage, registry: SessionRegistry, Path(id): Path<String>) -> StatusCode {
//!     let (Some(user), Ok(target)) = (session.get_item("user"), id.parse::<PublicId>()) else {
//!         return StatusCode::BAD_REQUEST;
//!     };
//!     match registry.list("user", &user).await {
//!         Ok(list) if list.iter().any(|s| s.public_id() == target) => match registry.end(&target).await {
//!             Ok(_) => StatusCode::SEE_OTHER,
//!             Err(e) => e.status(),
//!         },
//!         Ok(_) => StatusCode::NOT_FOUND,
//!         Err(e) => e.status(),
//!     }
//! }
//!
//! // "Sign out everywhere else".
//! async fn end_others(session: SessionStorage, registry: SessionRegistry) -> Result<String, StatusCode> {
//!     let Some(user) = session.get_item("user") else { return Ok("signed out".into()) };
//!     let keep = session.public_id();
//!     let n = registry.end_all("user", &user, keep.as_ref()).await.map_err(|e| e.status())?;
//!     Ok(format!("signed out {n} other devices"))
//! }
//!
//! pub fn app() -> Router {
//!     let layer = SessionLayer::new(MemoryStore::new()).with_max_sessions_per_link("user", 5);
//!     Router::new()
//!         .route("/devices", get(devices))
//!         .route("/devices/{id}/end", post(end_device))
//!         .route("/devices/end-others", post(end_others))
//!         .layer(layer)
//! }
//! # }
//! ```
//!
//! The registry finds sessions that hold at least one link. Each store keeps
//! an index of links that costs memory only for live sessions; see
//! [`SessionRegistry`] for what a session linked while `end_all` runs can
//! expect. `examples/axum.rs` has a devices page and `examples/signin.rs` a
//! back-channel logout endpoint.
//!
//! # Layer order
//!
//! Put `SessionLayer` outside every route that uses the session (in axum,
//! `Router::layer` after the routes). Layers that must see the final
//! response, `Set-Cookie` included (compression, tracing), go outside it.
//! Layers that answer on their own (authentication checks that read the
//! session) go inside it. A handle moved into a task that outlives the
//! request is finished: its writes are ignored and return
//! [`SessionError::Finished`].
//!
//! # Store failures
//!
//! A store failure never panics and never looks like a logout. A failed load
//! answers `503 Service Unavailable` ([`StoreErrorKind::Unavailable`],
//! [`StoreErrorKind::Full`]) or `500` without calling the inner service; a
//! failed save replaces the response with one of those (a failed expiry
//! refresh does not: see [Expiry](#expiry)). A gRPC request
//! (`content-type: application/grpc…`) gets a trailers-only gRPC status
//! instead (`UNAVAILABLE` or `INTERNAL`). The [`StoreError`] goes into the
//! response's extensions and into one `tracing` event at `ERROR` level (see
//! [Metrics and tracing](#metrics-and-tracing)).
//!
//! # Metrics and tracing
//!
//! **Spans and events** (always on, through `tracing`): every store
//! operation runs in a `DEBUG` span `session_store` (target
//! `tower_session_storage::telemetry`) with the fields `op`, `store`,
//! `outcome` and `duration_us`; every store failure is one `ERROR` event
//! on that target with `op`, `store`, `kind` (`unavailable`, `full`,
//! `other`) and `error` (the error and its causes), logged once. Nothing
//! logged carries a session id beyond the four characters
//! [`SessionId`]'s `Debug` shows, nor an item's value.
//!
//! **Metrics** (feature `metrics`, through the [`metrics`](https://docs.rs/metrics)
//! facade: install any exporter's recorder, then call
//! `describe_metrics()` once for help texts and units):
//!
//! | Metric | Type | Labels | Counts |
//! |---|---|---|---|
//! | `session_loads_total` | counter | `outcome`: `found`, `not_found`, `expired` | loads for requests carrying a well-formed id |
//! | `session_created_total` | counter | | sessions created |
//! | `session_saved_total` | counter | | change sets saved to an existing session |
//! | `session_cycled_total` | counter | | sessions moved to a new id (`cycle_id`) |
//! | `session_destroyed_total` | counter | | sessions ended by their own request (`destroy()`, or their last item removed) |
//! | `session_ended_total` | counter | `by`: `registry`, `link_cap` | sessions ended through [`SessionRegistry`], or past a link's cap |
//! | `session_refreshed_total` | counter | | expiry refreshes written on their own |
//! | `session_store_errors_total` | counter | `op`, `store`, `kind` | failed store operations |
//! | `session_store_operation_duration_seconds` | histogram | `op`, `store` | store operation latency |
//! | `session_memory_reclaimed_total` | counter | | expired sessions a [`MemoryStore`] removed by itself |
//! | `session_memory_refused_total` | counter | | new sessions a full [`MemoryStore`] refused (503) |
//! | `session_memory_sessions` | gauge | | sessions held by the process's [`MemoryStore`]s |
//!
//! `op` is `load`, `create`, `save`, `cycle`, `delete`, `end`, `touch`,
//! `list`, `end_linked` or `end_public`; `store` is
//! [`SessionStore::name`] (`memory`, `redis`, `postgres`, `sqlite`,
//! `custom`). The README's "Operating it" section says what each value
//! means and what to alert on. Without the feature no metrics code is
//! compiled in.
//!
//! # Security notes
//!
//! - Cookie defaults: name `id`, `HttpOnly`, `Secure`, `SameSite=Lax` (not
//!   `Strict`: an OpenID Connect callback is a cross-site top-level GET and
//!   must carry the cookie), `Path=/`, no `Domain`. A `__Host-` name is
//!   supported and checked; like browsers, the layer matches the `__Host-`
//!   and `__Secure-` prefixes in any case (`__HOST-id` gets the same rules).
//! - `Secure` comes from the config only, never from the request, so an app
//!   behind a TLS-terminating proxy keeps it.
//! - Settings that cannot work are refused when the layer wraps a service,
//!   with a message naming the fix.
//! - The cookie parser reads every `Cookie` header field, matches the name
//!   exactly and case-sensitively (no percent-decoding), skips nameless and
//!   malformed pairs, checks the id's format before any store look-up, and
//!   takes the **first well-formed** id under our name when there are several.
//!   It never panics on any input and allocates nothing.
//! - The layer owns its cookie: a `Set-Cookie` for the same name from the
//!   inner service is dropped (and logged), so there is never more than one.
//! - Call [`SessionStorage::cycle_id`] on sign-in and on any privilege change.
//!   From that call on, [`SessionStorage::id`] is `None` for the rest of the
//!   request (as after `destroy()`), so nothing gets bound to an id that
//!   dies with the response.
//! - `Debug` never prints an id in full, nor any item.
//!
//! # Limits
//!
//! One session holds at most [`DEFAULT_MAX_ITEMS`] items and
//! [`DEFAULT_MAX_SESSION_BYTES`] bytes unless configured otherwise
//! ([`SessionLayer::with_max_items`], [`SessionLayer::with_max_session_bytes`]);
//! `set_item` past a cap returns an error and changes nothing. The
//! [`MemoryStore`] holds at most a configurable number of sessions.
//!
//! # Stores
//!
//! - [`MemoryStore`] (default): a sharded `DashMap`, bounded (a hard cap on
//!   sessions, and memory that follows the live sessions, whatever the mix
//!   of creates, cycles and logouts), reclaiming expired sessions a few at a
//!   time without a background task or a pause as it grows or shrinks.
//! - `RedisStore` (feature `redis`): Redis or Redis Cluster, shared by many
//!   app instances; change sets applied by server-side scripts that never
//!   revive a deleted session. See the `store::redis` module.
//! - Your own: implement [`SessionStore`]; its docs carry a complete example.
//!
//! # Feature flags
//!
//! | Name | Description | Default? |
//! |---|---|---|
//! | `serde` | Typed values as JSON text: [`SessionStorage::get`], [`SessionStorage::insert`] | Yes |
//! | `axum` | [`SessionStorage`] as an axum extractor (on `axum-core`, with a named rejection) | Yes |
//! | `redis` | `RedisStore`: sessions in Redis, Redis Cluster or behind Redis Sentinel (on redis-rs) | No |
//! | `metrics` | Counters, a latency histogram and a gauge through the `metrics` facade: see [Metrics and tracing](#metrics-and-tracing) | No |
//! | `redis-tls` | `rediss://` URLs, a private CA and client certificates (`RedisTls`) for `RedisStore`, on rustls (no system OpenSSL); implies `redis` | No |
//!
//! With `default-features = false` and no `axum` feature, a handler that
//! takes `SessionStorage` fails to
//! compile with axum's own words: "the trait bound `fn(SessionStorage) ->
//! impl Future<…> {handler}: Handler<_, _>` is not satisfied", or, with
//! `#[axum::debug_handler]`, "Function argument is not a valid axum
//! extractor" on the `SessionStorage` argument. The fix is to enable the
//! feature (`features = ["axum"]`). This crate cannot add its own hint to that message:
//! `#[diagnostic::on_unimplemented]` applies only to a trait's own
//! definition, and `FromRequestParts` is axum's.
//!
//! # Dependencies
//!
//! Small and chosen: the middleware contract (`tower-layer`,
//! `tower-service`, `http`), `tokio` (its clock only), `dashmap`, `uuid`,
//! `cookie`, `tracing`, `pin-project-lite`; `serde_json`, `axum-core`,
//! `redis` and `metrics` only behind their features. Why each one is in ARCHITECTURE.md in
//! the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod cookie;
mod error;
mod future;
mod grpc;
mod id;
mod layer;
#[cfg(test)]
mod lifecycle_tests;
mod load;
mod persist;
mod registry;
mod respond;
mod service;
mod storage;
pub mod store;
mod telemetry;
mod time;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;

pub use crate::config::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ITEMS, DEFAULT_MAX_SESSION_BYTES};
pub use crate::cookie::SameSite;
pub use crate::error::{SessionError, StoreError, StoreErrorKind};
pub use crate::future::ResponseFuture;
pub use crate::id::{ParsePublicIdError, ParseSessionIdError, PublicId, SessionId};
pub use crate::layer::SessionLayer;
pub use crate::registry::{SessionInfo, SessionRegistry, MAX_LISTED};
pub use crate::service::SessionService;
pub use crate::storage::{SessionStorage, Storage};
pub use crate::store::memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::store::postgres::PostgresStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::store::redis::RedisStore;
#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use crate::store::redis::RedisTls;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::store::sqlite::SqliteStore;
pub use crate::store::SessionStore;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use crate::telemetry::describe_metrics;
