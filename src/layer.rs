//! [`SessionLayer`]: the configuration, shared behind one `Arc`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use crate::cookie::{CookieConfig, SameSite};
use crate::service::SessionService;
use crate::store::SessionStore;

/// The default idle timeout: 24 hours.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The default cap on the items of one session.
pub const DEFAULT_MAX_ITEMS: usize = 256;
/// The default cap on the size of one session (keys plus values): 64 KiB.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 64 * 1024;

/// Adds server-side sessions to a tower service.
///
/// For each request it finds the session id in the cookie, loads the session
/// from the store, and puts a [`SessionStorage`](crate::SessionStorage) into
/// the request's extensions; after the inner service answers it writes what
/// changed back to the store and sets the cookie when the id is new, changed
/// or gone. See the [crate docs](crate) for the whole story.
///
/// The layer is a small `Clone` config: its [`layer`](Layer::layer) only
/// clones an `Arc` and starts no task. Settings that cannot work (see
/// [`with_same_site`](Self::with_same_site), [`with_cookie_name`](Self::with_cookie_name))
/// are refused when `layer()` is called, with a panic message that names the
/// fix, as tower-http's `CorsLayer` does; so a bad config fails at start-up.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_session_storage::{MemoryStore, SameSite, SessionLayer};
///
/// let layer = SessionLayer::new(MemoryStore::new())
///     .with_cookie_name("__Host-session")
///     .with_same_site(SameSite::Lax)
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .with_absolute_timeout(Duration::from_secs(8 * 3600));
/// # let _ = layer;
/// ```
pub struct SessionLayer<Store> {
    shared: Arc<Shared<Store>>,
}

pub(crate) struct Shared<Store> {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Config,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) cookie: CookieConfig,
    /// `Some`: the id travels in this header instead of the cookie.
    pub(crate) header: Option<HeaderName>,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Option<Duration>,
    pub(crate) persistent: bool,
    pub(crate) max_items: usize,
    pub(crate) max_bytes: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Config {
    /// When a session created at `created_at` expires if used at `now`.
    pub(crate) fn expires_at(&self, now: u64, created_at: u64) -> u64 {
        let idle = now.saturating_add(ms(self.idle_timeout));
        match self.absolute_timeout {
            Some(a) => idle.min(created_at.saturating_add(ms(a))),
            None => idle,
        }
    }

    /// Whether a stored session is no longer valid at `now`.
    /// A record whose expiry precedes its creation cannot come from a
    /// correct store (expiry only moves forward from creation): it is treated
    /// as expired too.
    pub(crate) fn is_expired(&self, created_at: u64, expires_at: u64, now: u64) -> bool {
        expires_at <= now
            || created_at > expires_at
            || self
                .absolute_timeout
                .is_some_and(|a| created_at.saturating_add(ms(a)) <= now)
    }

    /// Whether moving the expiry from `stored` to `fresh` is worth a write.
    ///
    /// Activity is recorded with a resolution of a sixteenth of the idle
    /// timeout, at most a minute: a session is touched at most once per that
    /// span, and expires between the idle timeout minus that span and the
    /// idle timeout after its last use.
    pub(crate) fn refresh_due(&self, stored: u64, fresh: u64) -> bool {
        let step = ms(self.idle_timeout / 16).min(60_000);
        fresh > stored.saturating_add(step)
    }

    /// The cookie's Max-Age for a session expiring at `expires_at`, when the
    /// cookie is persistent.
    pub(crate) fn max_age(&self, expires_at: u64, now: u64) -> Option<Duration> {
        self.persistent
            .then(|| Duration::from_millis(expires_at.saturating_sub(now)))
    }

    fn problem(&self) -> Option<String> {
        if let Some(p) = self.cookie.problem() {
            return Some(p);
        }
        if self.idle_timeout.is_zero() {
            return Some("the idle timeout must be longer than zero (with_idle_timeout)".into());
        }
        if self.absolute_timeout.is_some_and(|a| a.is_zero()) {
            return Some(
                "the absolute timeout must be longer than zero (with_absolute_timeout)".into(),
            );
        }
        if self.max_items == 0 || self.max_bytes == 0 {
            return Some(
                "session caps must be at least 1 (with_max_items, with_max_session_bytes)".into(),
            );
        }
        None
    }
}

impl<Store: SessionStore> SessionLayer<Store> {
    /// A layer keeping sessions in `store`, with the secure defaults: cookie
    /// `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, no `Domain`, a
    /// browser-session cookie, a 24-hour idle timeout and no absolute timeout.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::{MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::new());
    /// # let _ = layer;
    /// ```
    pub fn new(store: Store) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                config: Config {
                    cookie: CookieConfig::default(),
                    header: None,
                    idle_timeout: DEFAULT_IDLE_TIMEOUT,
                    absolute_timeout: None,
                    persistent: false,
                    max_items: DEFAULT_MAX_ITEMS,
                    max_bytes: DEFAULT_MAX_SESSION_BYTES,
                },
            }),
        }
    }
}

impl<Store> SessionLayer<Store> {
    fn config_mut(&mut self) -> &mut Config {
        if Arc::get_mut(&mut self.shared).is_none() {
            self.shared = Arc::new(Shared {
                store: self.shared.store.clone(),
                config: self.shared.config.clone(),
            });
        }
        match Arc::get_mut(&mut self.shared) {
            Some(s) => {
                // A setting is about to change: drop what was rendered from it.
                s.config.cookie.suffix = std::sync::OnceLock::new();
                &mut s.config
            }
            None => unreachable!("a freshly made Arc is unique"),
        }
    }

    /// The cookie's name. Matched exactly and case-sensitively.
    ///
    /// A `__Host-` name (recommended when the app owns its host) requires
    /// `Secure`, `Path=/` and no `Domain`; a `__Secure-` name requires
    /// `Secure`; the layer refuses any other combination. The default is `id`,
    /// a generic name that tells nothing about the stack.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_cookie_name("__Host-id");
    /// # let _ = layer;
    /// ```
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config_mut().cookie.name = name.into().into_boxed_str();
        self
    }

    /// Whether the cookie carries `Secure` (sent over HTTPS only).
    ///
    /// Taken from this setting only, never guessed from the request, so an app
    /// behind a TLS-terminating proxy keeps it. Turn it off only for local
    /// development over plain HTTP. The default is `true`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let dev = SessionLayer::new(MemoryStore::new()).with_secure(false);
    /// # let _ = dev;
    /// ```
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.config_mut().cookie.secure = secure;
        self
    }

    /// Whether the cookie carries `HttpOnly` (hidden from scripts). The
    /// default is `true`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_http_only(true);
    /// # let _ = layer;
    /// ```
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.config_mut().cookie.http_only = http_only;
        self
    }

    /// The cookie's `SameSite`. `SameSite::None` requires `Secure`.
    ///
    /// The default is [`SameSite::Lax`], not `Strict`: an OpenID Connect
    /// callback is a cross-site top-level GET and must carry the cookie.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SameSite, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_same_site(SameSite::Strict);
    /// # let _ = layer;
    /// ```
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.config_mut().cookie.same_site = same_site;
        self
    }

    /// The cookie's `Path`. The default is `/`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_path("/app");
    /// # let _ = layer;
    /// ```
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.config_mut().cookie.path = path.into().into_boxed_str();
        self
    }

    /// The cookie's `Domain`, which also sends it to subdomains. The default
    /// is none: the cookie goes to the exact host only (safer).
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_domain("example.com");
    /// # let _ = layer;
    /// ```
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.config_mut().cookie.domain = Some(domain.into().into_boxed_str());
        self
    }

    /// How long a session lives without being used (sliding).
    ///
    /// Checked on load, server-side. Use is recorded with a resolution of a
    /// sixteenth of this timeout (at most one minute), so a session that is
    /// only read costs a store write at most once per that span, and expires
    /// between this timeout minus that span and this timeout after its last
    /// use. The default is [`DEFAULT_IDLE_TIMEOUT`] (24 hours).
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new())
    ///     .with_idle_timeout(Duration::from_secs(30 * 60));
    /// # let _ = layer;
    /// ```
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().idle_timeout = timeout;
        self
    }

    /// How long a session lives since it was created, however busy. A
    /// `cycle_id` keeps the creation time. The default is none.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new())
    ///     .with_absolute_timeout(Duration::from_secs(8 * 3600));
    /// # let _ = layer;
    /// ```
    pub fn with_absolute_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().absolute_timeout = Some(timeout);
        self
    }

    /// Whether the cookie outlives the browser: with `true` it carries a
    /// `Max-Age` equal to the session's remaining lifetime (at most 400 days,
    /// the browsers' cap), refreshed when the session's expiry is. The default
    /// is `false`: a browser-session cookie.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_persistent_cookie(true);
    /// # let _ = layer;
    /// ```
    pub fn with_persistent_cookie(mut self, persistent: bool) -> Self {
        self.config_mut().persistent = persistent;
        self
    }

    /// Carries the session id in a request and response header instead of a
    /// cookie: for API, mobile and gRPC clients (gRPC metadata are headers).
    ///
    /// The id is read from the request header `name` under the same strict
    /// rules as the cookie (format checked first, the first well-formed value
    /// wins, unknown ids never adopted). When a session is created or its id
    /// cycled, the response carries the new id in the same header; when the
    /// session is destroyed (or emptied and so deleted), the response carries
    /// the header with an **empty value**: the client should forget its id.
    /// Otherwise the header is absent from the response. The layer owns the
    /// header: a value the inner service set under that name is removed.
    /// Cookie settings are then unused. The default is the cookie.
    ///
    /// # Example
    ///
    /// ```
    /// # use http::HeaderName;
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new())
    ///     .with_header_transport(HeaderName::from_static("x-session-id"));
    /// # let _ = layer;
    /// ```
    pub fn with_header_transport(mut self, name: HeaderName) -> Self {
        self.config_mut().header = Some(name);
        self
    }

    /// The most items one session may hold; `set_item` past it returns
    /// [`SessionError::TooManyItems`](crate::SessionError::TooManyItems). The
    /// default is [`DEFAULT_MAX_ITEMS`] (256).
    ///
    /// The cap is checked against the session as this request sees it;
    /// concurrent requests writing different new keys can together pass it by
    /// the number of such requests.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_max_items(32);
    /// # let _ = layer;
    /// ```
    pub fn with_max_items(mut self, max: usize) -> Self {
        self.config_mut().max_items = max;
        self
    }

    /// The largest one session may be, counting the bytes of every key and
    /// value; `set_item` past it returns
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge). The default
    /// is [`DEFAULT_MAX_SESSION_BYTES`] (64 KiB: room for many 6 KB token sets).
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{MemoryStore, SessionLayer};
    /// let layer = SessionLayer::new(MemoryStore::new()).with_max_session_bytes(16 * 1024);
    /// # let _ = layer;
    /// ```
    pub fn with_max_session_bytes(mut self, max: usize) -> Self {
        self.config_mut().max_bytes = max;
        self
    }
}

impl<Store> Clone for SessionLayer<Store> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Store> fmt::Debug for SessionLayer<Store> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, Store> Layer<S> for SessionLayer<Store> {
    type Service = SessionService<S, Store>;

    /// Wraps `inner`.
    ///
    /// # Panics
    ///
    /// When the configuration cannot work; the message names the fix.
    fn layer(&self, inner: S) -> Self::Service {
        if let Some(problem) = self.shared.config.problem() {
            panic!("SessionLayer: {problem}");
        }
        SessionService::new(inner, self.shared.clone())
    }
}
