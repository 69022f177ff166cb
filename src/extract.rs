//! The axum extractor for [`SessionStorage`] (feature `axum`).

use axum_core::extract::FromRequestParts;
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
         to the router, outside every route that extracts SessionStorage"
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
