//! The axum extractors for [`SessionStorage`] (feature `axum`).
//!
//! - `SessionStorage`: the request's session; without a
//!   [`SessionLayer`](crate::SessionLayer) in front of the route, the request
//!   is rejected with a `500` ([`SessionStorageMissing`]): a route that needs a
//!   session must not run without one.
//! - `Option<SessionStorage>`: `None` without the layer, for code that works
//!   with or without sessions (a handler shared by routers that differ).
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::Request;
//! use tower::ServiceExt;
//! use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};
//!
//! async fn greet(session: Option<SessionStorage>) -> String {
//!     match session {
//!         Some(s) => format!("hello, {}", s.get_item("name").as_deref().unwrap_or("stranger")),
//!         None => "hello (no sessions here)".to_owned(),
//!     }
//! }
//!
//! async fn body(app: Router) -> String {
//!     let res = app.oneshot(Request::new(Body::empty())).await.unwrap();
//!     let bytes = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
//!     String::from_utf8(bytes.to_vec()).unwrap()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Without the layer: `None`, not a rejection.
//! let app = Router::new().route("/", get(greet));
//! assert_eq!(body(app).await, "hello (no sessions here)");
//!
//! // With it: the request's session.
//! let app = Router::new()
//!     .route("/", get(greet))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! assert_eq!(body(app).await, "hello, stranger");
//! # }
//! ```

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::storage::SessionStorage;

/// The rejection when a handler asks for [`SessionStorage`] but no
/// [`SessionLayer`](crate::SessionLayer) runs in front of it: a `500` that
/// says how to fix it.
///
/// # Example
///
/// ```
/// use tower_session_storage::extract::SessionStorageMissing;
///
/// let r = SessionStorageMissing::default();
/// assert_eq!(r.status(), 500);
/// assert!(r.body_text().contains("is SessionLayer installed?"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct SessionStorageMissing;

impl SessionStorageMissing {
    /// The status of the rejection: `500 Internal Server Error` (a server
    /// misconfiguration, not the client's fault).
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The text of the rejection.
    pub fn body_text(&self) -> String {
        "SessionStorage missing: is SessionLayer installed? Add `.layer(SessionLayer::new(store))` \
         to the router, outside every route that extracts SessionStorage or SessionRegistry"
            .to_owned()
    }
}

impl std::fmt::Display for SessionStorageMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body_text())
    }
}

impl std::error::Error for SessionStorageMissing {}

impl IntoResponse for SessionStorageMissing {
    fn into_response(self) -> Response {
        (self.status(), self.body_text()).into_response()
    }
}

/// `SessionStorage`: the request's session; a `500`
/// ([`SessionStorageMissing`]) when no [`SessionLayer`](crate::SessionLayer)
/// runs in front of the route.
impl<S: Send + Sync> FromRequestParts<S> for SessionStorage {
    type Rejection = SessionStorageMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionStorage>()
            .cloned()
            .ok_or(SessionStorageMissing)
    }
}

/// `Option<SessionStorage>`: `None` when no [`SessionLayer`](crate::SessionLayer)
/// runs in front of the route. Never rejects.
impl<S: Send + Sync> OptionalFromRequestParts<S> for SessionStorage {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<SessionStorage>().cloned())
    }
}

/// `SessionRegistry`: the layer's [`SessionRegistry`](crate::SessionRegistry)
/// (a devices page, "sign out everywhere"); a `500`
/// ([`SessionStorageMissing`]) when no [`SessionLayer`](crate::SessionLayer)
/// runs in front of the route. For a route outside the layer (a
/// back-channel endpoint on another router), hand it
/// [`SessionLayer::registry`](crate::SessionLayer::registry) as state.
impl<S: Send + Sync> FromRequestParts<S> for crate::SessionRegistry {
    type Rejection = SessionStorageMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<crate::SessionRegistry>()
            .cloned()
            .ok_or(SessionStorageMissing)
    }
}
