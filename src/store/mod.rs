//! The backend side: the [`SessionStore`] trait that backends implement, and
//! the data it moves ([`Record`], [`Items`], [`ChangeSet`], [`Timestamp`]).
//!
//! Not to be confused with [`SessionStorage`](crate::SessionStorage), the
//! per-request handle handlers use, or [`Storage`](crate::Storage), the
//! get/set/remove contract that handle offers to auth SDKs. Handlers never
//! call a store; the layer does, before and after the handler.
//!
//! A store is asked for exactly the operations the layer's semantics need:
//! load a session, create one only if its id is free, apply a change set only
//! if the session still exists, move a session to a new id, delete one, end
//! one wherever it moved, and push its expiry forward. Each is one call, so a
//! network store can make each one round trip.

mod future;
mod items;
mod meta;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod sql_text;

pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

pub use self::future::StoreFuture;
pub use self::items::{ChangeSet, Items, ItemsIter};
pub(crate) use self::meta::link_problem;
pub use self::meta::{is_valid_link, LinksIter, Meta, MAX_LINKS, MAX_LINK_NAME, MAX_LINK_VALUE};
pub use crate::time::Timestamp;

use crate::id::{PublicId, SessionId};

/// A storage backend for sessions.
///
/// Every method answers with a [`StoreFuture`]: an in-process store answers
/// at once ([`StoreFuture::ready`]), and the layer then runs the whole
/// request in place with no allocation for the store; a networked store
/// answers with an owned future ([`StoreFuture::new`]) that the layer awaits.
///
/// Times are [`Timestamp`]s. The layer reads the clock once per request and
/// passes that `now` to the store (in [`load`](Self::load), in a
/// [`Renewal`], as a new [`Record`]'s `created_at`), so the store and the
/// layer agree on what has expired. `expires_at` is the moment the session
/// stops being valid; a store should forget the session then (a TTL), but it need
/// not be exact: the layer checks the times of every record it loads and
/// deletes one that has expired.
///
/// Every method must be atomic with respect to the others on the same id.
/// That is what keeps concurrent requests from losing each other's writes
/// ([`save`](Self::save) applies a per-key [`ChangeSet`], never a whole
/// snapshot) and keeps a logout from being undone (`save` and
/// [`cycle`](Self::cycle) do nothing to a session that no longer exists, and
/// [`end`](Self::end) finds a session even after `cycle` moved it).
///
/// # Example: a complete custom store
///
/// A store on a `Mutex<HashMap>` (the built-in [`MemoryStore`] is the fast
/// version of this). It answers at once, so every method returns
/// [`StoreFuture::ready`]. A store that talks to a server would return
/// `StoreFuture::new(async move { … })` with a clone of its client moved in.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Mutex, MutexGuard};
/// use tower_session_storage::store::{
///     ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, StoreFuture, Timestamp,
/// };
/// use tower_session_storage::{PublicId, SessionId, SessionLayer, SessionStore, StoreError};
///
/// #[derive(Default)]
/// struct MyStore(Mutex<HashMap<SessionId, Record>>);
///
/// impl MyStore {
///     fn map(&self) -> Result<MutexGuard<'_, HashMap<SessionId, Record>>, StoreError> {
///         self.0.lock().map_err(|_| StoreError::other("lock poisoned"))
///     }
///
///     fn do_save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> Result<SaveOutcome, StoreError> {
///         let mut map = self.map()?;
///         let Some(record) = map.get_mut(id) else {
///             return Ok(SaveOutcome::Gone); // destroyed meanwhile: drop the changes
///         };
///         record.items.apply(changes);
///         if record.items.is_empty() {
///             map.remove(id);
///             return Ok(SaveOutcome::Deleted);
///         }
///         apply(record, changes, at);
///         Ok(SaveOutcome::Saved)
///     }
///
///     fn do_cycle(&self, old: &SessionId, new: &SessionId, changes: &ChangeSet, at: Renewal) -> Result<CycleOutcome, StoreError> {
///         let mut map = self.map()?;
///         if map.contains_key(new) {
///             return Ok(CycleOutcome::Collision); // the layer retries with another id
///         }
///         let Some(mut record) = map.remove(old) else {
///             return Ok(CycleOutcome::Gone);
///         };
///         record.items.apply(changes);
///         if record.items.is_empty() {
///             return Ok(CycleOutcome::Deleted);
///         }
///         apply(&mut record, changes, at);
///         map.insert(*new, record);
///         Ok(CycleOutcome::Moved)
///     }
///
///     /// The live sessions linked as `name = value`. A scan is fine for a
///     /// toy; a real store keeps an index.
///     fn linked(&self, name: &str, value: &str, now: Timestamp) -> Result<Vec<Listed>, StoreError> {
///         let map = self.map()?;
///         Ok(map.values().filter(|r| r.expires_at > now && r.meta.link(name) == Some(value)).map(Listed::of).collect())
///     }
/// }
///
/// /// A save's or cycle's changes besides the items: links and lifetime
/// /// settings, and the expiry (set outright by a new idle timeout).
/// fn apply(record: &mut Record, changes: &ChangeSet, at: Renewal) {
///     record.meta.apply(changes);
///     record.expires_at = if changes.sets_idle_timeout() {
///         at.expires_at
///     } else {
///         record.expires_at.max(at.expires_at)
///     };
/// }
///
/// impl SessionStore for MyStore {
///     fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
///         StoreFuture::ready(self.map().map(|map| {
///             map.get(id).filter(|r| r.expires_at > now).cloned()
///         }))
///     }
///
///     fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
///         StoreFuture::ready(self.map().map(|mut map| {
///             if map.contains_key(id) {
///                 return false; // taken: the layer retries with a fresh id
///             }
///             map.insert(*id, record.clone());
///             true
///         }))
///     }
///
///     fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
///         StoreFuture::ready(self.do_save(id, changes, at))
///     }
///
///     fn cycle(&self, old: &SessionId, new: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<CycleOutcome> {
///         StoreFuture::ready(self.do_cycle(old, new, changes, at))
///     }
///
///     fn delete(&self, id: &SessionId) -> StoreFuture<()> {
///         StoreFuture::ready(self.map().map(|mut map| drop(map.remove(id))))
///     }
///
///     fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
///         // The session under `id`, and under whatever id `cycle` moved it to.
///         StoreFuture::ready(self.map().map(|mut map| map.retain(|k, r| k != id && r.public_id != *public_id)))
///     }
///
///     fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
///         StoreFuture::ready(self.map().map(|mut map| match map.get_mut(id) {
///             Some(r) => {
///                 r.expires_at = r.expires_at.max(at.expires_at);
///                 true
///             }
///             None => false,
///         }))
///     }
///
///     fn list(&self, name: &str, value: &str, now: Timestamp, limit: usize) -> StoreFuture<Vec<Listed>> {
///         StoreFuture::ready(self.linked(name, value, now).map(|listed| Listed::newest(listed, limit)))
///     }
///
///     fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
///         let result = self.linked(name, value, Timestamp::UNIX_EPOCH).and_then(|listed| {
///             let mut found = listed.iter().map(|l| (l.created_at, l.public_id)).collect();
///             let victims = keep.victims(&mut found);
///             let mut map = self.map()?;
///             map.retain(|_, r| !victims.contains(&r.public_id));
///             Ok(victims.len())
///         });
///         StoreFuture::ready(result)
///     }
///
///     fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
///         StoreFuture::ready(self.map().map(|mut map| {
///             let before = map.len();
///             map.retain(|_, r| r.public_id != *public_id || !r.meta.has_links());
///             map.len() < before
///         }))
///     }
/// }
///
/// let layer = SessionLayer::new(MyStore::default());
/// # let _ = layer;
/// ```
///
/// # A store over a network client
///
/// The arguments are borrowed for the call only, and the future must own
/// everything it uses (`'static`): copy the ids (`*id`), clone the change
/// set or record and a handle to your client into an `async move` block.
///
/// ```
/// # use tower_session_storage::store::{ChangeSet, Renewal, SaveOutcome, StoreFuture};
/// # use tower_session_storage::{SessionId, StoreError};
/// # #[derive(Clone)]
/// # struct Client;
/// # impl Client {
/// #     async fn save(&self, _: SessionId, _: ChangeSet, _: Renewal) -> Result<SaveOutcome, StoreError> {
/// #         Ok(SaveOutcome::Saved)
/// #     }
/// # }
/// # struct NetStore { client: Client }
/// # impl NetStore {
/// // in `impl SessionStore for NetStore`:
/// fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
///     let (client, id, changes) = (self.client.clone(), *id, changes.clone());
///     StoreFuture::new(async move { client.save(id, changes, at).await })
/// }
/// # }
/// ```
///
/// The layer may drop a store's future before it finishes: when the client
/// disconnects, the server drops the request's response future, and the
/// store call with it. Make each write one atomic command (one script, one
/// transaction) sent on the future's first poll, so that a dropped call
/// either happened or did not; a write in several steps must leave the
/// session valid if it stops after any of them. A dropped logout whose
/// `end` was never sent leaves the session alive.
///
/// [`MemoryStore`]: crate::MemoryStore
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a session. `Ok(None)` when the id is unknown (never seen, deleted
    /// or evicted) or the session has expired by `now`. A record whose data cannot be read should be deleted,
    /// logged, and reported as `Ok(None)`.
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>>;

    /// Stores a new session only if `id` is free. `Ok(false)` when the id is
    /// taken; the layer then retries with a fresh id. Never overwrites. The
    /// record's `created_at` is the request's time.
    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool>;

    /// Applies `changes` to the session if it still exists (and has not
    /// expired by `at.now`): the items ([`Items::apply`]) and the links and
    /// lifetime settings ([`Meta::apply`], keeping the link index current).
    /// Moves its expiry forward to `at.expires_at` (never backward), or sets
    /// it to `at.expires_at` when the changes give the session a new idle
    /// timeout ([`ChangeSet::sets_idle_timeout`]). A session left with no
    /// items is deleted ([`SaveOutcome::Deleted`]), links and all. A session
    /// that no longer exists stays gone ([`SaveOutcome::Gone`]).
    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome>;

    /// Moves the session from `old` to `new`, applying `changes` on the way
    /// (as [`save`](Self::save) does, expiry included); afterwards `old` is
    /// unknown. Its public id, links and lifetime settings move with it. If `new` is taken, changes nothing and
    /// returns [`CycleOutcome::Collision`] (the layer retries with another id).
    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome>;

    /// Deletes the session. Deleting an unknown id is not an error.
    ///
    /// The layer uses it for a session found expired on load; a logout uses
    /// [`end`](Self::end).
    fn delete(&self, id: &SessionId) -> StoreFuture<()>;

    /// Ends the session a request loaded as `id`, wherever it lives now: a
    /// logout ([`SessionStorage::destroy`](crate::SessionStorage::destroy)).
    ///
    /// `public_id` is the loaded [`Record::public_id`]. If the session is no
    /// longer under `id` because a concurrent request moved it with
    /// [`cycle`](Self::cycle), the session under its new id is deleted too:
    /// a logout racing a `cycle_id` must not leave the signed-in data alive
    /// under an id the other response handed out. `end` and `cycle` on the
    /// same session must be atomic with respect to each other (whichever runs
    /// second sees what the first did). Ending an unknown session is not an
    /// error.
    ///
    /// To find a moved session, a store remembers where each live session's
    /// `public_id` lives now (or the latest move of it); that memory must be
    /// released with the session, so it stays bounded by the live sessions.
    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()>;

    /// Moves the session's expiry forward to `at.expires_at` (never
    /// backward). `Ok(false)` when the session no longer exists.
    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool>;

    /// The live sessions linked as `name = value`
    /// ([`Meta::link`]), oldest first: at most `limit`, the most recently
    /// created ones when there are more. Sessions that have expired by `now`
    /// are left out.
    ///
    /// The index behind it is the store's: every write that changes a
    /// session's links ([`create`](Self::create), [`save`](Self::save),
    /// [`cycle`](Self::cycle) with [`ChangeSet::links`]) keeps it current,
    /// and it must cost memory only for live sessions (an entry removed, or
    /// expiring, with its session). A session linked by a write that
    /// finished before this call began is in the answer.
    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>>;

    /// Ends every session linked as `name = value`, except those `keep`
    /// spares, wherever they live now (as [`end`](Self::end) does, a cycle
    /// meanwhile does not save one). Returns how many were ended.
    ///
    /// Every session whose link was stored by a write that finished before
    /// this call began must be ended (unless spared).
    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize>;

    /// Ends the linked session named `public_id`, wherever it lives now.
    /// `Ok(false)` when there is no such live session. Only sessions with at
    /// least one link need to be found this way (the registry names no
    /// other).
    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool>;

    /// Checks that the store can answer now: for a load balancer's
    /// readiness endpoint. `Ok(())` when a round trip to the backing server
    /// succeeded (every primary, on a cluster); the store's error otherwise.
    /// It reads and writes no session.
    ///
    /// The default answers `Ok(())` at once: right for an in-process store.
    fn ping(&self) -> StoreFuture<()> {
        StoreFuture::ready(Ok(()))
    }

    /// A short, stable name for the store's kind (`"memory"`, `"redis"`,
    /// `"postgres"`, `"sqlite"`): the `store` label of the metrics and the
    /// `store` field of the tracing spans. The default is `"custom"`.
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// A session as [`SessionStore::list`] reports it: no items, only what a
/// list of sessions shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The session's public name.
    pub public_id: PublicId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires unless used again.
    pub expires_at: Timestamp,
    /// Its links and lifetime settings.
    pub meta: Meta,
}

impl Listed {
    /// What a list shows of `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            public_id: record.public_id,
            created_at: record.created_at,
            expires_at: record.expires_at,
            meta: record.meta.clone(),
        }
    }
    /// The newest `limit` of `listed` (by creation), oldest first: what
    /// [`SessionStore::list`] answers, for a store that gathers the
    /// candidates in any order.
    pub fn newest(mut listed: Vec<Listed>, limit: usize) -> Vec<Listed> {
        listed.sort_unstable_by_key(|l| (l.created_at, l.public_id));
        listed.split_off(listed.len().saturating_sub(limit))
    }
}

/// Which sessions [`SessionStore::end_linked`] spares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// This session (a "sign out everywhere else", or the session that just
    /// signed in).
    pub session: Option<PublicId>,
    /// This many others: the most recently created ones (a cap of `n`
    /// sessions per user keeps the `n - 1` newest besides the new one).
    pub newest: usize,
}

impl Keep {
    /// Spares nothing.
    pub const NONE: Keep = Keep {
        session: None,
        newest: 0,
    };

    /// Picks, from `listed` (any order), the public ids to end: all but
    /// `session` and the `newest` most recently created others. Stores that
    /// gather the candidates first and end them after can use it.
    pub fn victims(&self, listed: &mut Vec<(Timestamp, PublicId)>) -> Vec<PublicId> {
        listed.retain(|(_, p)| Some(*p) != self.session);
        // Newest first; ties broken by id, so every store picks the same.
        listed.sort_unstable_by(|a, b| b.cmp(a));
        listed.iter().skip(self.newest).map(|(_, p)| *p).collect()
    }
}

/// The times of a write ([`save`](SessionStore::save),
/// [`cycle`](SessionStore::cycle), [`touch`](SessionStore::touch)): the
/// request's time, and the expiry to move the session to. Named fields, so
/// the two cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The time of the request: a session that has expired by then is gone.
    pub now: Timestamp,
    /// When the session expires unless it is used again; moved forward only.
    pub expires_at: Timestamp,
}

impl Renewal {
    /// A renewal to `expires_at`, happening now ([`Timestamp::now`]).
    pub fn until(expires_at: Timestamp) -> Self {
        Self {
            now: Timestamp::now(),
            expires_at,
        }
    }
}

/// What [`SessionStore::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveOutcome {
    /// The changes were applied.
    Saved,
    /// The changes left no items, so the session was deleted.
    Deleted,
    /// The session no longer existed; nothing was written.
    Gone,
}

/// What [`SessionStore::cycle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CycleOutcome {
    /// The session now lives under the new id only.
    Moved,
    /// The changes left no items: the old session was deleted, nothing created.
    Deleted,
    /// The old session no longer existed; nothing was written.
    Gone,
    /// The new id was taken; nothing was changed.
    Collision,
}

/// One stored session: its items and its times.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::{Items, Meta, Record, Timestamp};
/// use tower_session_storage::PublicId;
///
/// let items: Items = [("user_id", "12345")].into_iter().collect();
/// let created_at = Timestamp::from_millis(1_000);
/// let expires_at = Timestamp::from_millis(61_000);
/// let record = Record { items, created_at, expires_at, public_id: PublicId::generate(), meta: Meta::new() };
/// assert_eq!(record.items.get("user_id"), Some("12345"));
/// ```
#[derive(Clone, Debug)]
pub struct Record {
    /// The items, shared: cloning a record does not copy them.
    pub items: Items,
    /// When the session was created; the absolute timeout counts from here.
    pub created_at: Timestamp,
    /// When the session expires unless it is used again.
    pub expires_at: Timestamp,
    /// The session's public name, made when it is created and kept for its
    /// whole life, across [`SessionStore::cycle`]. Stores keep it with the
    /// session and use it in [`SessionStore::end`].
    pub public_id: PublicId,
    /// Its links and its own lifetime settings, changed by a
    /// [`ChangeSet`]'s link and lifetime changes ([`Meta::apply`]) and kept
    /// across [`SessionStore::cycle`].
    pub meta: Meta,
}
