//! [`SessionLayer`]: the builders, and [`Layer::layer`], which checks the
//! settings once and shares them with every request of the service it makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use crate::config::{
    Config, Shared, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ITEMS, DEFAULT_MAX_SESSION_BYTES,
};
use crate::cookie::SameSite;
use crate::registry::SessionRegistry;
use crate::service::SessionService;
use crate::store::SessionStore;

/// Adds server-side sessions to a tower service.
///
/// For each request it finds the session id in the cookie, loads the session
/// from the store, and puts a [`SessionStorage`](crate::SessionStorage) into
/// the request's extensions; after the inner service answers it writes what
/// changed back to the store and sets the cookie when the id is new, changed
/// or gone. See the [crate docs](crate) for the whole story.
///
/// The layer is a small `Clone` config: its [`layer`](Layer::layer) checks
/// the settings once, shares them with every request of the service it
/// makes, and starts no task. Settings that cannot work (see
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
#[must_use = "a SessionLayer does nothing until it wraps a service"]
pub struct SessionLayer<Store> {
    store: Arc<Store>,
    config: Config,
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
            store: Arc::new(store),
            config: Config::new(
                DEFAULT_IDLE_TIMEOUT,
                DEFAULT_MAX_ITEMS,
                DEFAULT_MAX_SESSION_BYTES,
            ),
        }
    }

    /// A [`SessionRegistry`] over this layer's store: list and end sessions
    /// by their links, outside requests (an admin task, a back-channel
    /// logout endpoint) as well as inside them (where the layer also puts
    /// one into each request's extensions).
    ///
    /// It reads the layer's timeouts to report a session's last use; call it
    /// once the layer is configured.
    ///
    /// ```
    /// use tower_session_storage::{MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::new());
    /// let registry = layer.registry();
    /// # let _ = registry;
    /// ```
    pub fn registry(&self) -> SessionRegistry {
        SessionRegistry::new(self.store.clone(), self.config.clone())
    }
}

impl<Store> SessionLayer<Store> {
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
        self.config.cookie.name = name.into().into_boxed_str();
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
        self.config.cookie.secure = secure;
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
        self.config.cookie.http_only = http_only;
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
        self.config.cookie.same_site = same_site;
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
        self.config.cookie.path = path.into().into_boxed_str();
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
        self.config.cookie.domain = Some(domain.into().into_boxed_str());
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
        self.config.expiry.idle = timeout;
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
        self.config.expiry.absolute = Some(timeout);
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
        self.config.persistent = persistent;
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
        self.config.header = Some(name);
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
        self.config.max_items = max;
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
        self.config.max_bytes = max;
        self
    }

    /// Keeps at most `max` sessions linked under `name` to any one value
    /// ("at most 5 devices per user"): when a request links a session as
    /// `name = value` ([`SessionStorage::link`](crate::SessionStorage::link))
    /// and more than `max` sessions would then be linked so, the oldest
    /// (by creation) are ended, never the one just linked.
    ///
    /// The check runs after the linking write is stored, in the same
    /// response, as one more store call; a store failure there is a `5xx`
    /// like any other. Each request spares only the session it linked: two
    /// sign-ins at the same moment may each end the oldest, or (with a cap
    /// of 1) each other, leaving fewer than `max`; once both have answered,
    /// never more. `max` must be at least
    /// 1 and `name` a valid link name (checked when the layer is applied).
    /// Calling it again for the same name replaces the cap.
    ///
    /// ```
    /// use tower_session_storage::{MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::new())
    ///     .with_max_sessions_per_link("user", 5);
    /// # let _ = layer;
    /// ```
    pub fn with_max_sessions_per_link(mut self, name: &str, max: usize) -> Self {
        self.config.link_caps.retain(|(n, _)| &**n != name);
        self.config.link_caps.push((name.into(), max));
        self
    }
}

impl<Store> Clone for SessionLayer<Store> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<Store> fmt::Debug for SessionLayer<Store> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, Store: SessionStore> Layer<S> for SessionLayer<Store> {
    type Service = SessionService<S, Store>;

    /// Checks the settings (panicking with a message that names the fix if
    /// they cannot work) and wraps `inner`.
    fn layer(&self, inner: S) -> Self::Service {
        let config = match self.config.clone().build() {
            Ok(config) => config,
            Err(problem) => panic!("SessionLayer: {problem}"),
        };
        let shared = Shared {
            store: self.store.clone(),
            registry: SessionRegistry::new(self.store.clone(), config.clone()),
            config,
        };
        SessionService::new(inner, Arc::new(shared))
    }
}
