//! [`SessionStorage`], the per-request handle, and the [`Storage`] contract.
//!
//! Three names, three jobs:
//!
//! - [`SessionStorage`] (this module): the **handle** a handler gets, one per
//!   request, to read and write that request's session.
//! - [`Storage`] (this module): the **contract** auth SDKs are written
//!   against (`get_item` / `set_item` / `remove_item`); `SessionStorage`
//!   implements it.
//! - [`SessionStore`](crate::SessionStore) (module [`store`](crate::store)):
//!   the **backend** that keeps every session ([`MemoryStore`](crate::MemoryStore),
//!   `RedisStore`, your own). Handlers never call it; the layer does.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::{DEFAULT_MAX_ITEMS, DEFAULT_MAX_SESSION_BYTES};
use crate::error::SessionError;
use crate::id::{PublicId, SessionId};
use crate::store::{link_problem, ChangeSet, Items, Meta, MAX_LINKS};

/// The small key/value contract auth SDKs use to keep tokens on the server
/// (Logto's `Storage`: `GetItem`/`SetItem`, plus a remove).
///
/// Object safe: an SDK can take `&dyn Storage`. [`SessionStorage`]
/// implements it.
///
/// # Example
///
/// ```
/// use tower_session_storage::{SessionError, Storage};
///
/// // Code written against the contract, not against this crate's handle.
/// fn save_sign_in_state(storage: &dyn Storage, verifier: &str) -> Result<(), SessionError> {
///     storage.set_item("code_verifier", verifier)
/// }
/// # let _ = save_sign_in_state;
/// ```
pub trait Storage {
    /// The value of `key`, if set.
    fn get_item(&self, key: &str) -> Option<String>;
    /// Sets `key` to `value`; an empty `value` removes the item.
    fn set_item(&self, key: &str, value: &str) -> Result<(), SessionError>;
    /// Removes `key`, returning the value it had.
    fn remove_item(&self, key: &str) -> Option<String>;
}

/// The session of one request: read and write its items.
///
/// The layer puts one into the request's extensions
/// (`req.extensions().get::<SessionStorage>()`; with the `axum` feature it is
/// also an extractor). It does no I/O: reads and writes are synchronous and
/// never fail for store reasons. Writes are buffered here (a read sees the
/// request's own writes) and applied by the layer after the inner service
/// answers, as one per-key [`ChangeSet`].
///
/// A cheap `Clone` (an `Arc`); `Send + Sync`. `Debug` prints neither the id
/// nor any item.
///
/// Once the inner service has answered, the handle is finished (this happens
/// to a handle moved into a task that outlives the request): it lets go of
/// the loaded items, so a handle kept alive does not pin an outdated copy of
/// the session in memory; reads return `None`, writes are ignored and return
/// [`SessionError::Finished`], and [`id`](Self::id) reports the id the
/// session ended up with.
///
/// # Dead ids cost a look-up until the next write
///
/// A well-formed id the store does not know (expired, destroyed, retired by a
/// [`cycle_id`](Self::cycle_id), or never issued) gives the request an empty
/// session, but the layer sends **no** cookie removal for it: the browser
/// keeps sending that id, and each of its requests costs one store look-up,
/// until a handler writes (the new session's cookie replaces it) or the
/// cookie ends with the browser session. That is on purpose: a removal
/// cookie sent in answer to a stale id could delete a newer cookie that a
/// concurrent response has just set (a sign-in in another tab), signing the
/// user out.
///
/// # In axum
///
/// With the `axum` feature, `SessionStorage` is an extractor (a `500`
/// rejection, `extract::SessionStorageMissing`, when no layer runs in front
/// of the route) and `Option<SessionStorage>` is
/// one that is `None` without the layer. Without the feature, axum reports
/// such a handler as "not a valid axum extractor" (or that `Handler<_, _>`
/// is not implemented); enable the feature, or take
/// `axum::Extension<SessionStorage>`.
///
/// # Testing handlers
///
/// [`SessionStorage::detached`] and [`SessionStorage::detached_with`] make a
/// handle without a layer or a store, so code that takes a `SessionStorage`
/// or a `&dyn Storage` can be unit-tested directly.
///
/// # Example
///
/// ```
/// use tower_session_storage::{SessionStorage, Storage};
///
/// fn visit(session: &SessionStorage) -> u64 {
///     let n = session.get_item("visits").and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
///     session.set_item("visits", &n.to_string()).ok();
///     n
/// }
///
/// let session = SessionStorage::detached_with([("visits", "41")]);
/// assert_eq!(visit(&session), 42);
/// assert_eq!(session.get_item("visits").as_deref(), Some("42"));
/// ```
#[derive(Clone)]
pub struct SessionStorage {
    inner: Arc<Handle>,
}

struct Handle {
    state: Mutex<State>,
    max_items: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    /// The id of the loaded session; `None` for a fresh or destroyed one.
    id: Option<SessionId>,
    /// The items as loaded (shared with the store, never copied here).
    base: Option<Items>,
    /// The loaded session's public id; `None` for a fresh or destroyed one.
    public_id: Option<PublicId>,
    /// The loaded session's links and settings (shared, never copied).
    meta: Meta,
    changes: ChangeSet,
    /// Item count and byte size of the view (base + changes), measured on
    /// the first write only: reads never pay for it.
    size: Option<(usize, usize)>,
    cycle: bool,
    /// The loaded session's id, once `destroy()` was called.
    destroyed: Option<SessionId>,
    finished: bool,
}

/// What the layer takes from the handle when the inner service has answered.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) changes: ChangeSet,
    pub(crate) cycle: bool,
    pub(crate) destroyed: Option<SessionId>,
}

impl State {
    /// Item count and byte size of the view, measured once.
    fn size(&mut self) -> (usize, usize) {
        match self.size {
            Some(size) => size,
            None => {
                let size = self.measure();
                self.size = Some(size);
                size
            }
        }
    }

    fn measure(&self) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        if let (false, Some(base)) = (self.changes.cleared() || self.finished, &self.base) {
            for (k, v) in base.iter() {
                if self.changes.get(k).is_none() {
                    count += 1;
                    bytes += k.len() + v.len();
                }
            }
        }
        for (k, v) in self.changes.iter() {
            if let Some(v) = v {
                count += 1;
                bytes += k.len() + v.len();
            }
        }
        (count, bytes)
    }

    /// The link `name` as this request sees it.
    fn linked(&self, name: &str) -> Option<&str> {
        if self.finished {
            return None;
        }
        match self.changes.links().find(|(n, _)| *n == name) {
            Some((_, change)) => change,
            None => self.meta.link(name),
        }
    }

    /// How many links the session has as this request sees it.
    fn link_count(&self) -> usize {
        let stored = self
            .meta
            .links()
            .filter(|(n, _)| !self.changes.links().any(|(c, _)| c == *n))
            .count();
        stored + self.changes.links().filter(|(_, v)| v.is_some()).count()
    }

    fn view(&self, key: &str) -> Option<&str> {
        if self.finished {
            return None;
        }
        match self.changes.get(key) {
            Some(change) => change,
            None if self.changes.cleared() => None,
            None => self.base.as_ref().and_then(|b| b.get(key)),
        }
    }
}

impl SessionStorage {
    pub(crate) fn new(
        id: Option<(SessionId, PublicId)>,
        base: Option<(Items, Meta)>,
        max_items: usize,
        max_bytes: usize,
    ) -> Self {
        let (base, meta) = match base {
            Some((items, meta)) => (Some(items), meta),
            None => (None, Meta::new()),
        };
        Self {
            inner: Arc::new(Handle {
                state: Mutex::new(State {
                    id: id.map(|(id, _)| id),
                    public_id: id.map(|(_, p)| p),
                    base,
                    meta,
                    ..State::default()
                }),
                max_items,
                max_bytes,
            }),
        }
    }

    /// A handle that belongs to no request and no store, for unit tests of
    /// code that takes a `SessionStorage` (or a `&dyn Storage`): call the
    /// code with it, then read back what it wrote.
    ///
    /// It starts empty and behaves as a request's handle for a session that
    /// does not exist yet:
    ///
    /// - writes are readable back at once (`get_item`, `get`), and the caps
    ///   are the layer's defaults ([`DEFAULT_MAX_ITEMS`](crate::DEFAULT_MAX_ITEMS),
    ///   [`DEFAULT_MAX_SESSION_BYTES`](crate::DEFAULT_MAX_SESSION_BYTES));
    /// - [`id`](Self::id) is always `None`: no store ever gives it an id;
    /// - nothing is ever saved anywhere: the writes live in the handle only,
    ///   and since no response ever finishes it, they never stop working.
    ///
    /// [`detached_with`](Self::detached_with) seeds it with items, as if they
    /// had been loaded.
    ///
    /// # Example
    ///
    /// A handler written as a plain async fn, tested without a server:
    ///
    /// ```
    /// use tower_session_storage::{SessionError, SessionStorage, Storage};
    ///
    /// async fn remember_theme(session: SessionStorage, theme: String) -> Result<String, SessionError> {
    ///     session.set_item("theme", &theme)?;
    ///     Ok(format!("theme set to {theme}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let session = SessionStorage::detached();
    /// let reply = remember_theme(session.clone(), "dark".into()).await.unwrap();
    /// assert_eq!(reply, "theme set to dark");
    /// assert_eq!(session.get_item("theme").as_deref(), Some("dark"));
    /// assert_eq!(session.id(), None, "a detached handle never has an id");
    /// # }
    /// ```
    #[must_use]
    pub fn detached() -> Self {
        Self::new(None, None, DEFAULT_MAX_ITEMS, DEFAULT_MAX_SESSION_BYTES)
    }

    /// A [`detached`](Self::detached) handle whose session already holds
    /// `items`, as if a request had loaded them; an empty value sets nothing
    /// (as with [`set_item`](Self::set_item)), and of two pairs with one key
    /// the later wins. [`id`](Self::id) is still `None`.
    ///
    /// The seeded items count towards the caps, but are not refused when they
    /// pass them (a loaded session is not either).
    ///
    /// # Example
    ///
    /// Code written against the SDK contract, tested with a signed-in
    /// session:
    ///
    /// ```
    /// use tower_session_storage::{SessionStorage, Storage};
    ///
    /// fn sign_out(storage: &dyn Storage) -> Option<String> {
    ///     storage.set_item("flash", "bye").ok()?;
    ///     storage.remove_item("access_token")
    /// }
    ///
    /// let session = SessionStorage::detached_with([("access_token", "t0k"), ("user", "alice")]);
    /// assert_eq!(sign_out(&session).as_deref(), Some("t0k"));
    /// assert_eq!(session.get_item("access_token"), None);
    /// assert_eq!(session.get_item("user").as_deref(), Some("alice"));
    /// assert_eq!(session.get_item("flash").as_deref(), Some("bye"));
    /// ```
    #[must_use]
    pub fn detached_with<I, K, V>(items: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let items: Items = items
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .collect();
        Self::new(
            None,
            Some((items, Meta::new())),
            DEFAULT_MAX_ITEMS,
            DEFAULT_MAX_SESSION_BYTES,
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`, including this request's own writes.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::SessionStorage;
    /// fn user(session: &SessionStorage) -> Option<String> {
    ///     session.get_item("user_id")
    /// }
    /// # let _ = user;
    /// ```
    pub fn get_item(&self, key: &str) -> Option<String> {
        self.state().view(key).map(str::to_owned)
    }

    /// Sets `key` to `value`. An empty `value` removes the item (the Logto Go
    /// SDK deletes that way).
    ///
    /// Fails, changing nothing, when the session would pass the layer's caps
    /// on items or bytes, or when the response is already on its way.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{SessionError, SessionStorage};
    /// fn sign_in(session: &SessionStorage, user: &str) -> Result<(), SessionError> {
    ///     session.set_item("user_id", user)?;
    ///     session.cycle_id();
    ///     Ok(())
    /// }
    /// # let _ = sign_in;
    /// ```
    pub fn set_item(&self, key: &str, value: &str) -> Result<(), SessionError> {
        if value.is_empty() {
            return self.remove(key).map(drop);
        }
        let mut s = self.state();
        if s.finished {
            return Err(SessionError::Finished);
        }
        let old = s.view(key).map(str::len);
        let (count, bytes) = s.size();
        let count = count + usize::from(old.is_none());
        let bytes = bytes - old.map_or(0, |v| v + key.len()) + key.len() + value.len();
        if count > self.inner.max_items {
            return Err(SessionError::TooManyItems {
                limit: self.inner.max_items,
            });
        }
        if bytes > self.inner.max_bytes {
            return Err(SessionError::TooLarge {
                limit: self.inner.max_bytes,
                size: bytes,
            });
        }
        s.changes.set(key, value);
        s.size = Some((count, bytes));
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<Option<String>, SessionError> {
        let mut s = self.state();
        if s.finished {
            return Err(SessionError::Finished);
        }
        let old = s.view(key).map(str::to_owned);
        if let (Some(v), Some((count, bytes))) = (&old, s.size) {
            s.size = Some((count - 1, bytes - key.len() - v.len()));
        }
        // Recorded even when this request does not see the key: a removal is
        // a write to that key, and a concurrent request may have set it.
        s.changes.remove(key);
        Ok(old)
    }

    /// Removes `key`, returning the value it had. After the response, it
    /// removes nothing and returns `None`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::SessionStorage;
    /// fn take_flash(session: &SessionStorage) -> Option<String> {
    ///     session.remove_item("flash")
    /// }
    /// # let _ = take_flash;
    /// ```
    pub fn remove_item(&self, key: &str) -> Option<String> {
        self.remove(key).ok().flatten()
    }

    /// Removes every item but keeps the session (and its id) alive for
    /// further writes in this request. A session left empty is deleted.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::SessionStorage;
    /// fn reset(session: &SessionStorage) {
    ///     session.clear();
    /// }
    /// # let _ = reset;
    /// ```
    pub fn clear(&self) {
        let mut s = self.state();
        if s.finished {
            return;
        }
        s.changes.clear();
        s.size = Some((0, 0));
    }

    /// Gives the session a new id at the end of this request; the data is
    /// kept and the old id stops working at once. Call it on sign-in and on
    /// any privilege change (it defeats session fixation).
    ///
    /// From this call on, [`id`](Self::id) returns `None` for the rest of the
    /// request: the old id is about to die, and the new one is only made when
    /// the response is produced. Do not bind anything that must outlive the
    /// request (a CSRF token, a log line that follows the session) to an id
    /// read before the call: keep such a value as an item (items move to the
    /// new id), or read `id()` from a handle kept past the response, which
    /// then reports the new id.
    ///
    /// On a session that does not exist yet it does nothing: a new session
    /// gets a new id anyway.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{SessionError, SessionStorage};
    /// fn promote(session: &SessionStorage) -> Result<(), SessionError> {
    ///     session.set_item("role", "admin")?;
    ///     session.cycle_id();
    ///     Ok(())
    /// }
    /// # let _ = promote;
    /// ```
    pub fn cycle_id(&self) {
        let mut s = self.state();
        if !s.finished {
            s.cycle = true;
        }
    }

    /// Deletes the session and expires its cookie at the end of this request.
    ///
    /// Changes made by other requests still in flight on this session are
    /// dropped: a logout is never undone. Writes made after `destroy()` in
    /// this same request start a brand-new session under a new id.
    /// [`id`](Self::id) returns `None` from this call on.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::SessionStorage;
    /// fn sign_out(session: &SessionStorage) {
    ///     session.destroy();
    /// }
    /// # let _ = sign_out;
    /// ```
    pub fn destroy(&self) {
        let mut s = self.state();
        if s.finished {
            return;
        }
        if let Some(id) = s.id.take() {
            s.destroyed = Some(id);
        }
        s.public_id = None;
        s.meta = Meta::new();
        s.base = None;
        s.changes = ChangeSet::new();
        s.size = Some((0, 0));
        s.cycle = false;
    }

    /// The id the client holds for this session and will keep holding after
    /// this response, or `None` when that is not known yet.
    ///
    /// During the request it is:
    ///
    /// - the loaded session's id, when the request carried a live one;
    /// - `None` for a session that does not exist in the store yet (a fresh
    ///   session gets its id when the response is produced);
    /// - `None` after [`cycle_id`](Self::cycle_id) (the loaded id dies at
    ///   the end of the request; the new one is made with the response);
    /// - `None` after [`destroy`](Self::destroy);
    /// - `None` on a [`detached`](Self::detached) handle, always.
    ///
    /// So a CSRF token or a log line bound to `id()` is never bound to an id
    /// that stops working when the response goes out. After the response (a
    /// handle kept past it), `id()` reports the id the session ended up
    /// with: the new one after a cycle or a creation, `None` after a destroy.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::SessionStorage;
    /// fn signed_in(session: &SessionStorage) -> bool {
    ///     session.id().is_some() && session.get_item("user_id").is_some()
    /// }
    /// # let _ = signed_in;
    /// ```
    pub fn id(&self) -> Option<SessionId> {
        let s = self.state();
        if s.cycle && !s.finished {
            // The loaded id dies with this response; the new one is not made yet.
            return None;
        }
        s.id
    }

    /// Links this session as `name = value`, so that the
    /// [`SessionRegistry`](crate::SessionRegistry) finds it: list a user's
    /// sessions, end them all ("sign out everywhere"), end the ones an
    /// OpenID provider's back-channel logout names.
    ///
    /// A session holds one value per name (a later link replaces it) and at
    /// most [`MAX_LINKS`](crate::store::MAX_LINKS) names. A name is 1 to 32
    /// bytes of ASCII letters, digits, `_`, `-` and `.`; a value 1 to 256
    /// bytes without control characters. Anything else is an error, and
    /// nothing is recorded.
    ///
    /// Buffered like every write and stored with the request's changes,
    /// atomically with them. Links belong to the session: they move with
    /// [`cycle_id`](Self::cycle_id) and go with the session when it ends or
    /// expires. A session needs at least one item to exist: links alone do
    /// not keep (or create) one.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{SessionError, SessionStorage};
    /// fn signed_in(session: &SessionStorage, sub: &str, sid: &str) -> Result<(), SessionError> {
    ///     session.set_item("user", sub)?;
    ///     session.link("user", sub)?; // sign out everywhere, the devices page
    ///     session.link("sid", sid)?;  // the provider's back-channel logout
    ///     session.cycle_id();
    ///     Ok(())
    /// }
    /// # let s = SessionStorage::detached();
    /// # signed_in(&s, "alice", "sid-1").unwrap();
    /// # assert!(s.link("not a name", "x").is_err());
    /// ```
    pub fn link(&self, name: &str, value: &str) -> Result<(), SessionError> {
        if let Some(reason) = link_problem(name, Some(value)) {
            return Err(SessionError::InvalidLink { reason });
        }
        let mut s = self.state();
        if s.finished {
            return Err(SessionError::Finished);
        }
        if s.linked(name).is_none() && s.link_count() >= MAX_LINKS {
            return Err(SessionError::TooManyLinks { limit: MAX_LINKS });
        }
        s.changes.link(name, value);
        Ok(())
    }

    /// Removes the link named `name`, if the session has one.
    pub fn unlink(&self, name: &str) {
        if link_problem(name, None).is_some() {
            return; // no session holds such a link
        }
        let mut s = self.state();
        if !s.finished {
            // Recorded even when this request does not see the link: a
            // concurrent request may have set it.
            s.changes.unlink(name);
        }
    }

    /// The value this session is linked to under `name`, including this
    /// request's own [`link`](Self::link)s.
    pub fn linked(&self, name: &str) -> Option<String> {
        self.state().linked(name).map(str::to_owned)
    }

    /// The session's public id: the name to show it under in a list of
    /// sessions or a URL (a devices page), and to end it with
    /// [`SessionRegistry::end`](crate::SessionRegistry::end). It cannot act
    /// as the session (it is not the id the cookie carries, nor derived from
    /// it), and it stays the same across [`cycle_id`](Self::cycle_id).
    ///
    /// `None` until the session exists in the store (a session created by
    /// this request gets one when it is stored), and after
    /// [`destroy`](Self::destroy).
    pub fn public_id(&self) -> Option<PublicId> {
        self.state().public_id
    }

    /// Gives this session its own idle timeout, in place of the layer's
    /// ([`SessionLayer::with_idle_timeout`](crate::SessionLayer::with_idle_timeout)):
    /// "remember me" for 30 days, or a short one for an admin session.
    ///
    /// Stored with the session (with this request's other changes), applied
    /// from this request on (the expiry is set to now plus the new timeout,
    /// earlier or later than before), kept across
    /// [`cycle_id`](Self::cycle_id), and still bounded by the layer's
    /// absolute timeout. A timeout under one second counts as one second.
    pub fn set_idle_timeout(&self, timeout: Duration) {
        let mut s = self.state();
        if !s.finished {
            s.changes
                .set_idle_timeout(timeout.max(Duration::from_secs(1)));
        }
    }

    /// Makes this session's cookie persistent (`true`: it carries `Max-Age`
    /// and survives a browser restart, "remember me") or a browser-session
    /// cookie (`false`), in place of the layer's
    /// [`with_persistent_cookie`](crate::SessionLayer::with_persistent_cookie).
    /// Stored with the session, kept across [`cycle_id`](Self::cycle_id);
    /// the cookie is sent again with this response. No effect with the
    /// header transport.
    pub fn set_persistent_cookie(&self, persistent: bool) {
        let mut s = self.state();
        if !s.finished {
            s.changes.set_persistent_cookie(persistent);
        }
    }

    /// Takes what the request changed and finishes the handle: later writes
    /// are refused.
    pub(crate) fn finish(&self) -> Outcome {
        let mut s = self.state();
        s.finished = true;
        // Release the snapshot: a handle that outlives the request must not
        // keep an outdated copy of the session alive.
        s.base = None;
        s.meta = Meta::new();
        s.size = Some((0, 0));
        Outcome {
            changes: std::mem::take(&mut s.changes),
            cycle: s.cycle,
            destroyed: s.destroyed,
        }
    }

    /// Records the id the session ended up with, for `id()` after the response.
    pub(crate) fn set_final_id(&self, id: Option<SessionId>) {
        self.state().id = id;
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl SessionStorage {
    /// Reads a typed value stored as JSON text by [`insert`](Self::insert).
    ///
    /// `Ok(None)` when the item is absent; an error when it is not valid JSON
    /// for `T`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{SessionError, SessionStorage};
    /// fn cart(session: &SessionStorage) -> Result<Vec<u32>, SessionError> {
    ///     Ok(session.get::<Vec<u32>>("cart")?.unwrap_or_default())
    /// }
    /// # let _ = cart;
    /// ```
    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, SessionError> {
        let s = self.state();
        s.view(key)
            .map(serde_json::from_str)
            .transpose()
            .map_err(SessionError::Json)
    }

    /// Stores a typed value as JSON text under `key`.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_session_storage::{SessionError, SessionStorage};
    /// fn add(session: &SessionStorage, item: u32) -> Result<(), SessionError> {
    ///     let mut cart = session.get::<Vec<u32>>("cart")?.unwrap_or_default();
    ///     cart.push(item);
    ///     session.insert("cart", &cart)
    /// }
    /// # let _ = add;
    /// ```
    pub fn insert<T: serde::Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let json = serde_json::to_string(value).map_err(SessionError::Json)?;
        self.set_item(key, &json)
    }
}

impl Storage for SessionStorage {
    fn get_item(&self, key: &str) -> Option<String> {
        SessionStorage::get_item(self, key)
    }

    fn set_item(&self, key: &str, value: &str) -> Result<(), SessionError> {
        SessionStorage::set_item(self, key, value)
    }

    fn remove_item(&self, key: &str) -> Option<String> {
        SessionStorage::remove_item(self, key)
    }
}

impl fmt::Debug for SessionStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("SessionStorage")
            .field("exists", &s.id.is_some())
            .field("items", &s.measure().0)
            .field("changed", &!s.changes.is_empty())
            .field("finished", &s.finished)
            .finish()
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
