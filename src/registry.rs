//! [`SessionRegistry`]: finding and ending sessions by their links, above
//! the single request (sign out everywhere, a devices page, OpenID Connect
//! back-channel logout).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, Lifetime};
use crate::error::StoreError;
use crate::id::PublicId;
use crate::store::{is_valid_link, Keep, Listed, Meta, SessionStore, StoreFuture, Timestamp};
use crate::telemetry::{self, Answer, EndedBy, Op};

/// The most sessions [`SessionRegistry::list`] returns for one link.
pub const MAX_LISTED: usize = 1000;

/// Finds and ends sessions by what they were linked to with
/// [`SessionStorage::link`](crate::SessionStorage::link): every session of a
/// user ("sign out everywhere", after a password change), one device of a
/// devices page, or the sessions an OpenID provider's back-channel logout
/// names (`sid` or `sub`).
///
/// Get one from [`SessionLayer::registry`](crate::SessionLayer::registry)
/// (for a task outside requests: an admin job, a back-channel endpoint on
/// another router), or from a request's extensions, where the layer puts
/// one (`req.extensions().get::<SessionRegistry>()`; with the `axum`
/// feature it is also an extractor). A cheap `Clone` (an `Arc`), `Send +
/// Sync`; it works across every app instance that shares the store.
///
/// # What it finds
///
/// Sessions that hold at least one link: a session is in the store's index
/// under each of its links from the moment the write that linked it is
/// stored until it ends, expires, or is unlinked. A session with no link is
/// never listed, and [`end`](Self::end) does not find it.
///
/// # Ending is a logout
///
/// [`end`](Self::end) and [`end_all`](Self::end_all) end a session as
/// [`destroy`](crate::SessionStorage::destroy) does, at once for every app
/// instance sharing the store: its next request gets a fresh, empty session,
/// a request in flight on it cannot bring it back (its changes are dropped,
/// and a [`cycle_id`](crate::SessionStorage::cycle_id) racing the end does
/// not save it), and its cookie is left to the browser (it now names
/// nothing).
///
/// `end_all` ends every session whose link was stored before `end_all`
/// began. A session being linked while `end_all` runs (a sign-in whose save
/// has not finished when `end_all` reads the index) may survive: the window
/// is from the moment `end_all` reads the index to the moment that save is
/// stored. A session signed in after `end_all` returned is never touched.
///
/// # Example
///
/// ```
/// use tower_session_storage::{MemoryStore, SessionLayer, SessionRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_session_storage::StoreError> {
/// let layer = SessionLayer::new(MemoryStore::new());
/// let registry: SessionRegistry = layer.registry();
///
/// // After a password change: sign the user out everywhere.
/// let ended = registry.end_all("user", "alice", None).await?;
/// assert_eq!(ended, 0, "alice has no sessions yet");
/// assert!(registry.list("user", "alice").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SessionStore>,
    config: Config,
}

impl SessionRegistry {
    pub(crate) fn new(store: Arc<dyn SessionStore>, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner { store, config }),
        }
    }

    /// The live sessions linked as `name = value`, oldest first (at most
    /// [`MAX_LISTED`], the most recent when there are more): a devices page.
    ///
    /// A name or value no session can hold (see
    /// [`SessionStorage::link`](crate::SessionStorage::link)) lists nothing.
    pub async fn list(&self, name: &str, value: &str) -> Result<Vec<SessionInfo>, StoreError> {
        if !is_valid_link(name, value) {
            return Ok(Vec::new());
        }
        let listed = self
            .call(Op::List, |s| {
                s.list(name, value, Timestamp::now(), MAX_LISTED)
            })
            .await?;
        let config = &self.inner.config;
        Ok(listed
            .into_iter()
            .map(|l| SessionInfo::new(l, config))
            .collect())
    }

    /// Ends every session linked as `name = value`, except `keep` ("sign
    /// out everywhere else" keeps the current session's
    /// [`public_id`](crate::SessionStorage::public_id)). Returns how many
    /// were ended. See the [type docs](Self) for what a session linked
    /// meanwhile can expect.
    pub async fn end_all(
        &self,
        name: &str,
        value: &str,
        keep: Option<&PublicId>,
    ) -> Result<usize, StoreError> {
        if !is_valid_link(name, value) {
            return Ok(0);
        }
        let keep = Keep {
            session: keep.copied(),
            newest: 0,
        };
        let ended = self
            .call(Op::EndLinked, |s| s.end_linked(name, value, keep))
            .await?;
        telemetry::ended(EndedBy::Registry, ended);
        Ok(ended)
    }

    /// Ends the session named `public_id` (one device on a devices page).
    /// `false` when no live linked session has that public id.
    pub async fn end(&self, public_id: &PublicId) -> Result<bool, StoreError> {
        let ended = self
            .call(Op::EndPublic, |s| s.end_public(public_id))
            .await?;
        telemetry::ended(EndedBy::Registry, usize::from(ended));
        Ok(ended)
    }

    /// One store call, watched (span, histogram) and its failure logged.
    async fn call<T: Answer + Send + 'static>(
        &self,
        op: Op,
        call: impl FnOnce(&dyn SessionStore) -> StoreFuture<T>,
    ) -> Result<T, StoreError> {
        let store = &*self.inner.store;
        let result = telemetry::watch(op, store, || call(store)).await;
        if let Err(e) = &result {
            telemetry::failed(op, store.name(), e);
        }
        result
    }
}

impl fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry").finish_non_exhaustive()
    }
}

/// One session as [`SessionRegistry::list`] shows it: never its id or its
/// items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    public_id: PublicId,
    created_at: Timestamp,
    last_seen: Timestamp,
    expires_at: Timestamp,
    meta: Meta,
}

impl SessionInfo {
    fn new(l: Listed, config: &Config) -> Self {
        let expiry = Lifetime::of(&l.meta).expiry(config);
        // The expiry is the last refresh plus the idle timeout, so the last
        // refresh is the expiry minus the timeout (when the absolute timeout
        // capped the expiry, this reads earlier than the truth).
        let last_seen = l
            .expires_at
            .saturating_sub(expiry.idle)
            .max(l.created_at)
            .min(Timestamp::now().max(l.created_at));
        Self {
            public_id: l.public_id,
            created_at: l.created_at,
            last_seen,
            expires_at: l.expires_at,
            meta: l.meta,
        }
    }

    /// The session's public id: show it, put it in a URL, pass it to
    /// [`SessionRegistry::end`]. Compare it with the current request's
    /// [`SessionStorage::public_id`](crate::SessionStorage::public_id) to
    /// mark "this device".
    pub fn public_id(&self) -> PublicId {
        self.public_id
    }

    /// When the session was created. `cycle_id` keeps it: for a session
    /// made before the sign-in (to hold the sign-in's state), it is that
    /// moment, not the sign-in's.
    pub fn created_at(&self) -> SystemTime {
        self.created_at.to_system_time()
    }

    /// When the session was last used, at the resolution the layer records
    /// activity with: a sixteenth of the session's idle timeout, at most a
    /// minute (see [`SessionLayer::with_idle_timeout`](crate::SessionLayer::with_idle_timeout)).
    /// Derived from its expiry; for a session whose expiry the absolute
    /// timeout capped, it may read earlier than the truth.
    pub fn last_seen(&self) -> SystemTime {
        self.last_seen.to_system_time()
    }

    /// When the session expires unless it is used again.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at.to_system_time()
    }

    /// The session's links, sorted by name.
    pub fn links(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.meta.links()
    }

    /// The session's own idle timeout, if it has one
    /// ([`SessionStorage::set_idle_timeout`](crate::SessionStorage::set_idle_timeout)).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.meta.idle_timeout()
    }

    /// Whether the session's cookie is persistent by its own setting
    /// ([`SessionStorage::set_persistent_cookie`](crate::SessionStorage::set_persistent_cookie)),
    /// if it has one.
    pub fn persistent_cookie(&self) -> Option<bool> {
        self.meta.persistent_cookie()
    }
}
