//! Errors: [`SessionError`] for handlers, [`StoreError`] for stores.
//!
//! Each error's `Display` says what failed at its own level only; the cause
//! is returned by [`Error::source`], not repeated in the text, so that
//! error-chain printers (`anyhow`'s `{:#}`, `tracing`'s error values,
//! `eyre` reports) show every cause once.

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
    /// A link name or value breaks the rules of
    /// [`SessionStorage::link`](crate::SessionStorage::link).
    InvalidLink {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The session already holds the most links it may
    /// ([`MAX_LINKS`](crate::store::MAX_LINKS) names).
    TooManyLinks {
        /// The cap.
        limit: usize,
    },
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
            Self::InvalidLink { reason } => write!(f, "invalid session link: {reason}"),
            Self::TooManyLinks { limit } => {
                write!(f, "session link limit reached ({limit} names)")
            }
            #[cfg(feature = "serde")]
            // The serde_json error is the source: not repeated here.
            Self::Json(_) => f.write_str("session value is not valid JSON for this type"),
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
/// `Display` names the kind of failure only; the cause is its
/// [`source`](Error::source). Print the whole chain (as below, or with
/// `anyhow`'s `{:#}`) to see both.
///
/// # Example
///
/// ```
/// use std::error::Error;
/// use tower_session_storage::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = StoreError::unavailable(io);
/// assert_eq!(err.kind(), StoreErrorKind::Unavailable);
/// assert_eq!(err.to_string(), "session store unavailable");
/// assert_eq!(err.source().unwrap().to_string(), "refused");
///
/// // Each cause once, outermost first.
/// let mut chain = vec![err.to_string()];
/// let mut cause = err.source();
/// while let Some(e) = cause {
///     chain.push(e.to_string());
///     cause = e.source();
/// }
/// assert_eq!(chain.join(": "), "session store unavailable: refused");
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

    /// The HTTP status the layer answers with for this error: `503` when
    /// the store cannot be reached or is full (the client may retry), `500`
    /// otherwise. (gRPC calls get the gRPC code for that status.)
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
        // The cause is the source: not repeated here.
        f.write_str(what)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Prints an error and each of its causes once, outermost first, joined by
/// `": "`: for log lines (`tracing::error!(error = %Chain(&e), ..)`), now that
/// `Display` no longer repeats the cause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The text of each error in the chain, outermost first.
    fn chain(e: &(dyn Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push(c.to_string());
            cause = c.source();
        }
        out
    }

    /// No level of the chain repeats the text of a cause below it.
    fn assert_each_cause_once(e: &(dyn Error + 'static)) {
        let texts = chain(e);
        assert!(texts.len() >= 2, "a cause to check: {texts:?}");
        for (i, outer) in texts.iter().enumerate() {
            for inner in &texts[i + 1..] {
                assert!(
                    !outer.contains(inner.as_str()),
                    "{outer:?} repeats its cause {inner:?}: {texts:?}"
                );
            }
        }
        // And a chain printer shows each text exactly once.
        let printed = Chain(e).to_string();
        for t in &texts {
            assert_eq!(printed.matches(t.as_str()).count(), 1, "{printed:?}");
        }
    }

    /// An error with a cause of its own, for a three-level chain.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("redis connection lost")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn store_error_chains_print_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            StoreError::unavailable(io()),
            StoreError::new(StoreErrorKind::Full, "at the cap of 10 sessions"),
            StoreError::other(Wrapped(io())),
        ] {
            assert_each_cause_once(&err);
        }
        let err = StoreError::other(Wrapped(io()));
        assert_eq!(
            chain(&err),
            ["session store failed", "redis connection lost", "refused"]
        );
        assert_eq!(
            Chain(&err).to_string(),
            "session store failed: redis connection lost: refused"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn json_error_chain_prints_each_cause_once() {
        let json = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        let json_text = json.to_string();
        let err = SessionError::Json(json);
        assert_each_cause_once(&err);
        assert_eq!(
            chain(&err),
            ["session value is not valid JSON for this type", &json_text]
        );
    }

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
