//! Errors: [`SessionError`] for handlers, [`StoreError`] for stores.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why a write through [`SessionStorage`](crate::SessionStorage) was refused.
///
/// Nothing is ever truncated or dropped silently: a write that does not fit
/// changes nothing and returns one of these.
///
/// # Example
///
/// ```
/// use tower_session_storage::{SessionError, SessionStorage, Storage};
///
/// fn remember(session: &SessionStorage, token: &str) -> Result<(), SessionError> {
///     session.set_item("access_token", token)
/// }
/// # let _ = remember;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The write would make the session hold more items than the layer allows
    /// (`SessionLayer::with_max_items`).
    TooManyItems {
        /// The configured cap.
        limit: usize,
    },
    /// The write would make the session larger (keys plus values, in bytes)
    /// than the layer allows (`SessionLayer::with_max_session_bytes`).
    TooLarge {
        /// The configured cap in bytes.
        limit: usize,
        /// The size the session would have had.
        size: usize,
    },
    /// The response was already on its way: the change set was taken, so this
    /// late write is ignored.
    Finished,
    /// A typed value could not be turned into JSON or back.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    Json(serde_json::Error),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyItems { limit } => {
                write!(f, "session item limit reached ({limit} items)")
            }
            Self::TooLarge { limit, size } => write!(
                f,
                "session would hold {size} bytes, over the limit of {limit} bytes"
            ),
            Self::Finished => f.write_str(
                "session already saved: writes after the response was produced are ignored",
            ),
            #[cfg(feature = "serde")]
            Self::Json(e) => write!(f, "session value is not valid JSON for this type: {e}"),
        }
    }
}

impl Error for SessionError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            #[cfg(feature = "serde")]
            Self::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// What kind of failure a [`StoreError`] is; it decides the response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached or did not answer in time: `503 Service
    /// Unavailable` (gRPC `UNAVAILABLE`).
    Unavailable,
    /// The store is full (a `MemoryStore` at its `with_max_sessions` cap):
    /// `503 Service Unavailable` for requests that would create a session.
    Full,
    /// Anything else: `500 Internal Server Error` (gRPC `INTERNAL`).
    Other,
}

/// A failure of a [`SessionStore`](crate::SessionStore).
///
/// The layer turns it into a response (see [`StoreErrorKind`]), logs it with
/// `tracing`, and puts a clone into the response's extensions so outer layers
/// can inspect it. It is cheap to clone (an `Arc` inside).
///
/// # Example
///
/// ```
/// use tower_session_storage::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = StoreError::unavailable(io);
/// assert_eq!(err.kind(), StoreErrorKind::Unavailable);
/// assert_eq!(err.to_string(), "session store unavailable: refused");
/// ```
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Arc<dyn Error + Send + Sync + 'static>,
}

impl StoreError {
    /// An error of the given kind, caused by `source` (any error, or a message).
    pub fn new(kind: StoreErrorKind, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Arc::from(source.into()),
        }
    }

    /// The store cannot be reached or timed out.
    pub fn unavailable(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(StoreErrorKind::Unavailable, source)
    }

    /// Any other store failure.
    pub fn other(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(StoreErrorKind::Other, source)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The HTTP status the layer answers with for this error.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            StoreErrorKind::Unavailable | StoreErrorKind::Full => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            StoreErrorKind::Other => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Unavailable => "session store unavailable",
            StoreErrorKind::Full => "session store full",
            StoreErrorKind::Other => "session store failed",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_error<E: Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_error::<SessionError>();
        assert_error::<StoreError>();
    }

    #[test]
    fn status_follows_kind() {
        assert_eq!(StoreError::unavailable("x").status(), 503);
        assert_eq!(StoreError::new(StoreErrorKind::Full, "x").status(), 503);
        assert_eq!(StoreError::other("x").status(), 500);
    }
}
