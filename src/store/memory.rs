//! [`MemoryStore`]: the default store, a sharded in-process map.

use std::collections::BTreeMap;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{now_millis, ChangeSet, CycleOutcome, Record, SaveOutcome, SessionStore};
use crate::error::{StoreError, StoreErrorKind};
use crate::id::SessionId;

/// The default cap on the number of sessions in a [`MemoryStore`].
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;

/// The most due sessions one sweep step examines.
const MAX_BATCH: usize = 256;
/// How many due sessions one operation examines for reclamation.
const SWEEP_BUDGET: usize = 64;
/// How many due sessions a create into a full store may examine before it
/// gives up and reports the store full (bounds that request's pause).
const FULL_SWEEP_BUDGET: usize = 1024;

/// An in-memory store on a [`DashMap`] keyed by [`SessionId`]: the default.
///
/// - **Shared snapshots.** A load hands out the session's [`Items`](super::Items) (one
///   shared buffer), not a deep copy; a save applies the request's
///   [`ChangeSet`] to the entry under that entry's shard lock, swapping in
///   the new buffer (requests still holding the old one keep it). No lock is ever held across an `.await`
///   (every operation is synchronous inside).
/// - **Bounded.** At most [`with_max_sessions`](Self::with_max_sessions)
///   sessions ([`DEFAULT_MAX_SESSIONS`] by default). When full, expired
///   sessions are reclaimed first; if it is still full, creating a session
///   fails with [`StoreErrorKind::Full`], which the layer answers with `503`.
///   Live sessions are never evicted to make room.
/// - **Reclamation without a task or a pause.** Each session is filed in an
///   expiry index by the second it expires. Operations that find the oldest
///   second due reclaim up to 64 sessions from it (a session refreshed
///   meanwhile is filed again under its new expiry). There is no background
///   task and no pass over the whole map, so no request waits on a
///   stop-the-world cleanup, and nothing needs to be started or stopped.
///
/// Clones share the same sessions.
///
/// # Example
///
/// ```
/// use tower_session_storage::{MemoryStore, SessionLayer};
///
/// let store = MemoryStore::new().with_max_sessions(100_000);
/// let layer = SessionLayer::new(store.clone());
/// assert_eq!(store.len(), 0);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Hashes a [`SessionId`] by folding its 128 bits to 64.
///
/// Ids are made by the server from 122 random bits, so every bit of the fold
/// is random already: SipHash would only cost time. A client can present any
/// well-formed id, but only for look-ups; it cannot insert chosen keys, so it
/// cannot build long probe chains (no hash flooding).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `SessionId` (it hashes as one `u128`); kept total.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

type IdMap = DashMap<SessionId, Record, std::hash::BuildHasherDefault<IdHasher>>;

struct Inner {
    map: IdMap,
    max_sessions: AtomicUsize,
    /// Sessions filed by the second they expire (`ceil(expires_at / 1000)`),
    /// in chunks of at most [`CHUNK`] ids, so no push ever moves a large
    /// vector: the key is (second, chunk number).
    wheel: Mutex<Wheel>,
    /// The ms at which the first filed second is due; `u64::MAX` when empty.
    next_due: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .field(
                "max_sessions",
                &self.inner.max_sessions.load(Ordering::Relaxed),
            )
            .finish()
    }
}

type Wheel = BTreeMap<(u64, u32), Vec<SessionId>>;

/// The most ids one chunk of the expiry index holds.
const CHUNK: usize = 1024;

fn bucket_of(expires_at: u64) -> u64 {
    expires_at.div_ceil(1000)
}

impl MemoryStore {
    /// An empty store holding at most [`DEFAULT_MAX_SESSIONS`] sessions.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                map: IdMap::default(),
                max_sessions: AtomicUsize::new(DEFAULT_MAX_SESSIONS),
                wheel: Mutex::new(BTreeMap::new()),
                next_due: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Caps the number of sessions held at once.
    ///
    /// When the cap is reached, expired sessions are reclaimed first; if none
    /// can be, creating a new session fails with `503 Service Unavailable`
    /// while existing sessions keep working. The default is
    /// [`DEFAULT_MAX_SESSIONS`] (1,000,000). The setting is shared by clones.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::MemoryStore;
    ///
    /// let store = MemoryStore::new().with_max_sessions(10_000);
    /// # let _ = store;
    /// ```
    pub fn with_max_sessions(self, max: usize) -> Self {
        self.inner.max_sessions.store(max, Ordering::Relaxed);
        self
    }

    /// How many sessions are held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }
}

impl Inner {
    fn wheel(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_next_due(&self, wheel: &Wheel) {
        let due = wheel
            .first_key_value()
            .map_or(u64::MAX, |((b, _), _)| b.saturating_mul(1000));
        self.next_due.store(due, Ordering::Relaxed);
    }

    fn file(&self, entries: impl IntoIterator<Item = (u64, SessionId)>) {
        let mut wheel = self.wheel();
        for (expires_at, id) in entries {
            let b = bucket_of(expires_at);
            let last = wheel.range_mut((b, 0)..=(b, u32::MAX)).next_back();
            let seq = match last {
                Some((_, ids)) if ids.len() < CHUNK => {
                    ids.push(id);
                    continue;
                }
                Some(((_, seq), _)) => seq.wrapping_add(1),
                None => 0,
            };
            wheel.insert((b, seq), vec![id]);
        }
        self.set_next_due(&wheel);
    }

    /// Reclaims some due sessions if any are due and nobody else is at it.
    /// One atomic load when nothing is due.
    fn maybe_sweep(&self, now: u64) {
        if now >= self.next_due.load(Ordering::Relaxed) {
            self.sweep(now, SWEEP_BUDGET, false);
        }
    }

    /// Examines up to `budget` sessions filed under due seconds: removes the
    /// expired ones, files the refreshed ones again. Returns how many it
    /// examined. With `wait == false` it gives way to a sweep already running.
    fn sweep(&self, now: u64, budget: usize, wait: bool) -> usize {
        // On the stack: a heap buffer of this size is a "large" request to
        // glibc's malloc, which first consolidates every small chunk freed
        // so far; after a mass expiry that alone can take milliseconds.
        let mut batch = [SessionId::NIL; MAX_BATCH];
        let mut n = 0;
        let budget = budget.min(MAX_BATCH);
        {
            let mut wheel = if wait {
                self.wheel()
            } else {
                match self.wheel.try_lock() {
                    Ok(w) => w,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return 0,
                }
            };
            while n < budget {
                let Some(mut first) = wheel.first_entry() else {
                    break;
                };
                if first.key().0.saturating_mul(1000) > now {
                    break;
                }
                let ids = first.get_mut();
                let take = (budget - n).min(ids.len());
                for id in ids.drain(ids.len() - take..) {
                    batch[n] = id;
                    n += 1;
                }
                if ids.is_empty() {
                    first.remove();
                }
            }
            self.set_next_due(&wheel);
        }
        let mut refile = [(0u64, SessionId::NIL); MAX_BATCH];
        let mut r = 0;
        for &id in &batch[..n] {
            if let Entry::Occupied(e) = self.map.entry(id) {
                if e.get().expires_at <= now {
                    e.remove();
                } else {
                    refile[r] = (e.get().expires_at, id);
                    r += 1;
                }
            }
        }
        if r > 0 {
            self.file(refile[..r].iter().copied());
        }
        n
    }

    fn load(&self, id: &SessionId) -> Option<Record> {
        let now = now_millis();
        self.maybe_sweep(now);
        let record = self.map.get(id)?;
        if record.expires_at <= now {
            drop(record);
            self.map.remove_if(id, |_, r| r.expires_at <= now);
            return None;
        }
        Some(record.clone())
    }

    fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let now = now_millis();
        self.maybe_sweep(now);
        let max = self.max_sessions.load(Ordering::Relaxed);
        if self.map.len() >= max {
            let mut examined = 0;
            while examined < FULL_SWEEP_BUDGET && self.map.len() >= max {
                let n = self.sweep(now, 256, true);
                if n == 0 {
                    break;
                }
                examined += n;
            }
            if self.map.len() >= max {
                return Err(StoreError::new(
                    StoreErrorKind::Full,
                    format!(
                        "memory store holds its maximum of {max} live sessions; \
                         raise MemoryStore::with_max_sessions or shorten the idle timeout"
                    ),
                ));
            }
        }
        match self.map.entry(*id) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(v) => {
                v.insert(record.clone());
                self.file([(record.expires_at, *id)]);
                Ok(true)
            }
        }
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, expires_at: u64) -> SaveOutcome {
        let now = now_millis();
        self.maybe_sweep(now);
        match self.map.entry(*id) {
            Entry::Vacant(_) => SaveOutcome::Gone,
            Entry::Occupied(e) if e.get().expires_at <= now => {
                e.remove();
                SaveOutcome::Gone
            }
            Entry::Occupied(mut e) => {
                let record = e.get_mut();
                record.items.apply(changes);
                if record.items.is_empty() {
                    e.remove();
                    return SaveOutcome::Deleted;
                }
                record.expires_at = record.expires_at.max(expires_at);
                SaveOutcome::Saved
            }
        }
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> CycleOutcome {
        let now = now_millis();
        if self.map.contains_key(new) {
            return CycleOutcome::Collision;
        }
        let Some((_, mut record)) = self.map.remove(old) else {
            return CycleOutcome::Gone;
        };
        if record.expires_at <= now {
            return CycleOutcome::Gone;
        }
        record.items.apply(changes);
        if record.items.is_empty() {
            return CycleOutcome::Deleted;
        }
        record.expires_at = record.expires_at.max(expires_at);
        let filed_at = record.expires_at;
        match self.map.entry(*new) {
            Entry::Vacant(v) => {
                v.insert(record);
            }
            Entry::Occupied(_) => {
                // Taken between the check and now: put the session back where
                // it was (nobody else can create under `old`) and let the
                // layer retry with another id.
                self.map.insert(*old, record);
                return CycleOutcome::Collision;
            }
        }
        self.file([(filed_at, *new)]);
        CycleOutcome::Moved
    }

    fn touch(&self, id: &SessionId, expires_at: u64) -> bool {
        let now = now_millis();
        self.maybe_sweep(now);
        match self.map.get_mut(id) {
            Some(mut r) if r.expires_at > now => {
                r.expires_at = r.expires_at.max(expires_at);
                true
            }
            _ => false,
        }
    }
}

impl SessionStore for MemoryStore {
    /// Always `true`: every operation is a synchronous map operation.
    fn answers_immediately(&self) -> bool {
        true
    }

    fn load(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        ready(Ok(self.inner.load(id)))
    }

    fn create(
        &self,
        id: &SessionId,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(self.inner.create(id, record))
    }

    fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send {
        ready(Ok(self.inner.save(id, changes, expires_at)))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> impl Future<Output = Result<CycleOutcome, StoreError>> + Send {
        ready(Ok(self.inner.cycle(old, new, changes, expires_at)))
    }

    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner.map.remove(id);
        ready(Ok(()))
    }

    fn end(
        &self,
        id: &SessionId,
        _public_id: &crate::PublicId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        // TODO(reliability): follow a move made by a racing cycle.
        self.inner.map.remove(id);
        ready(Ok(()))
    }

    fn touch(
        &self,
        id: &SessionId,
        expires_at: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.inner.touch(id, expires_at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Items;
    use std::time::Duration;

    fn record(now: u64, ttl_ms: u64, items: &[(&str, &str)]) -> Record {
        Record {
            items: items.iter().copied().collect::<Items>(),
            created_at: now,
            expires_at: now + ttl_ms,
            public_id: crate::PublicId::generate(),
        }
    }

    fn set(k: &str, v: &str) -> ChangeSet {
        let mut c = ChangeSet::new();
        c.set(k, v);
        c
    }

    #[tokio::test]
    async fn loads_share_the_snapshot_instead_of_copying() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        assert!(store
            .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
            .await
            .unwrap());
        let a = store.load(&id).await.unwrap().unwrap();
        let b = store.load(&id).await.unwrap().unwrap();
        assert!(Items::ptr_eq(&a.items, &b.items));
    }

    #[tokio::test]
    async fn create_never_overwrites() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let now = now_millis();
        assert!(store
            .create(&id, &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap());
        assert!(!store
            .create(&id, &record(now, 60_000, &[("a", "2")]))
            .await
            .unwrap());
        let r = store.load(&id).await.unwrap().unwrap();
        assert_eq!(r.items.get("a"), Some("1"));
    }

    #[tokio::test]
    async fn save_to_a_deleted_session_does_not_recreate_it() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let now = now_millis();
        store
            .create(&id, &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap();
        store.delete(&id).await.unwrap();
        let out = store.save(&id, &set("b", "2"), now + 60_000).await.unwrap();
        assert_eq!(out, SaveOutcome::Gone);
        assert!(store.load(&id).await.unwrap().is_none());
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn save_that_empties_the_session_deletes_it() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let now = now_millis();
        store
            .create(&id, &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap();
        let mut c = ChangeSet::new();
        c.remove("a");
        assert_eq!(
            store.save(&id, &c, now).await.unwrap(),
            SaveOutcome::Deleted
        );
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn cycle_moves_data_and_kills_the_old_id() {
        let store = MemoryStore::new();
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let now = now_millis();
        store
            .create(&old, &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap();
        let out = store
            .cycle(&old, &new, &set("b", "2"), now + 1)
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Moved);
        assert!(store.load(&old).await.unwrap().is_none());
        let r = store.load(&new).await.unwrap().unwrap();
        assert_eq!(r.items.get("a"), Some("1"));
        assert_eq!(r.items.get("b"), Some("2"));
    }

    #[tokio::test]
    async fn cycle_onto_a_taken_id_changes_nothing() {
        let store = MemoryStore::new();
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let now = now_millis();
        store
            .create(&old, &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap();
        store
            .create(&new, &record(now, 60_000, &[("z", "9")]))
            .await
            .unwrap();
        let out = store.cycle(&old, &new, &set("b", "2"), now).await.unwrap();
        assert_eq!(out, CycleOutcome::Collision);
        assert_eq!(
            store.load(&old).await.unwrap().unwrap().items.get("b"),
            None
        );
        assert_eq!(
            store.load(&new).await.unwrap().unwrap().items.get("a"),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_are_not_loaded() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        store
            .create(&id, &record(now_millis(), 1_000, &[("a", "1")]))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(store.load(&id).await.unwrap().is_none());
        assert!(
            store.is_empty(),
            "an expired session found on load is removed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_are_reclaimed_by_later_operations() {
        let store = MemoryStore::new();
        let now = now_millis();
        // More than two chunks of the expiry index, all due in one second.
        for _ in 0..2500 {
            store
                .create(&SessionId::generate(), &record(now, 2_000, &[("a", "1")]))
                .await
                .unwrap();
        }
        let keep = SessionId::generate();
        store
            .create(&keep, &record(now, 60_000, &[("k", "v")]))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        // Unrelated reads of the live session drive reclamation, 64 at a time.
        for _ in 0..40 {
            assert!(store.load(&keep).await.unwrap().is_some());
        }
        assert!(store.inner.wheel().len() <= 1, "drained chunks are dropped");
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshed_sessions_survive_reclamation() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let now = now_millis();
        store
            .create(&id, &record(now, 2_000, &[("a", "1")]))
            .await
            .unwrap();
        assert!(store.touch(&id, now + 10_000).await.unwrap());
        tokio::time::advance(Duration::from_secs(3)).await;
        store.inner.sweep(now_millis(), 1000, true);
        assert!(store.load(&id).await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(8)).await;
        store.inner.sweep(now_millis(), 1000, true);
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_reclaims_expired_then_refuses() {
        let store = MemoryStore::new().with_max_sessions(3);
        let now = now_millis();
        let short = SessionId::generate();
        store
            .create(&short, &record(now, 1_000, &[("a", "1")]))
            .await
            .unwrap();
        for _ in 0..2 {
            store
                .create(&SessionId::generate(), &record(now, 60_000, &[("a", "1")]))
                .await
                .unwrap();
        }
        let err = store
            .create(&SessionId::generate(), &record(now, 60_000, &[("a", "1")]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Full);
        tokio::time::advance(Duration::from_secs(2)).await;
        // The expired one makes room; the live ones are untouched.
        let id = SessionId::generate();
        assert!(store
            .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
            .await
            .unwrap());
        assert_eq!(store.len(), 3);
        assert!(store.load(&short).await.unwrap().is_none());
    }

    /// Everything the store keeps beside the sessions themselves: the ids
    /// filed in the expiry index, and the remembered moves.
    fn index_entries(store: &MemoryStore) -> usize {
        store.inner.wheel().values().map(Vec::len).sum::<usize>()
    }

    /// Sign-in/sign-out churn through every way a session can go (delete,
    /// end, an emptying save, a cycle that empties it, found expired on
    /// load, reclaimed when due), half of them after a cycle: with no session
    /// left alive, the index is back where it started within a constant, at
    /// every moment in between too.
    #[tokio::test(start_paused = true)]
    async fn churn_that_leaves_no_session_alive_leaves_the_index_as_it_started() {
        // The most the index may hold beyond twice the live sessions.
        const BOUND: usize = 2 * 1024 + 64;
        let store = MemoryStore::new();
        let start = index_entries(&store);
        let mut empty = ChangeSet::new();
        empty.clear();
        for i in 0..12_000u32 {
            let now = now_millis();
            let short = i % 8 >= 6;
            let ttl = if short { 1_000 } else { 3_600_000 };
            let r = record(now, ttl, &[("csrf", "x")]);
            let p = r.public_id;
            let mut id = SessionId::generate();
            assert!(store.create(&id, &r).await.unwrap());
            if i % 2 == 0 {
                let n = SessionId::generate();
                let out = store.cycle(&id, &n, &set("user", "u"), now + ttl).await;
                assert_eq!(out.unwrap(), CycleOutcome::Moved);
                id = n;
            }
            match i % 8 {
                0 | 1 => store.delete(&id).await.unwrap(),
                2 | 3 => store.end(&id, &p).await.unwrap(),
                4 => {
                    let out = store.save(&id, &empty, now + ttl).await.unwrap();
                    assert_eq!(out, SaveOutcome::Deleted);
                }
                5 => {
                    let n = SessionId::generate();
                    let out = store.cycle(&id, &n, &empty, now + ttl).await.unwrap();
                    assert_eq!(out, CycleOutcome::Deleted);
                }
                6 => {
                    tokio::time::advance(Duration::from_millis(1_001)).await;
                    assert!(store.load(&id).await.unwrap().is_none());
                }
                _ => {
                    // Reclaimed by the sweep once due.
                    tokio::time::advance(Duration::from_millis(2_001)).await;
                    let _ = store.load(&SessionId::generate()).await.unwrap();
                }
            }
            let held = index_entries(&store);
            assert!(
                held <= start + 2 * store.len() + BOUND,
                "after {i} rounds: {held} index entries for {} sessions",
                store.len()
            );
        }
        // Whatever is still due is reclaimed by later operations.
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..100 {
            let _ = store.load(&SessionId::generate()).await.unwrap();
        }
        assert_eq!(store.len(), 0);
        let held = index_entries(&store);
        assert!(held <= start + BOUND, "{held} index entries, no session");
    }

    /// Live sessions cycled again and again (every sign-in cycles): the
    /// index stays within a constant of twice the live sessions.
    #[tokio::test]
    async fn cycling_live_sessions_keeps_the_index_bounded() {
        const BOUND: usize = 2 * 1024 + 64;
        let store = MemoryStore::new();
        let now = now_millis();
        let mut ids: Vec<SessionId> = (0..500).map(|_| SessionId::generate()).collect();
        for id in &ids {
            assert!(store
                .create(id, &record(now, 3_600_000, &[("a", "1")]))
                .await
                .unwrap());
        }
        for round in 0..40 {
            for id in &mut ids {
                let n = SessionId::generate();
                let out = store.cycle(id, &n, &set("r", "1"), now + 3_600_000).await;
                assert_eq!(out.unwrap(), CycleOutcome::Moved);
                *id = n;
            }
            let held = index_entries(&store);
            assert!(
                held <= 2 * store.len() + BOUND,
                "round {round}: {held} index entries for {} sessions",
                store.len()
            );
        }
        assert_eq!(store.len(), 500);
    }

    /// Two fresh ids that fall in the same shard of the map.
    fn same_shard_ids(store: &MemoryStore) -> (SessionId, SessionId) {
        let a = SessionId::generate();
        let shard = store.inner.map.determine_map(&a);
        loop {
            let b = SessionId::generate();
            if store.inner.map.determine_map(&b) == shard {
                return (a, b);
            }
        }
    }

    /// A cycle onto an id that is taken, in the same shard as the old id:
    /// `Collision`, nothing changed, and no deadlock.
    #[tokio::test]
    async fn cycle_onto_a_taken_id_in_the_same_shard_returns() {
        let store = MemoryStore::new();
        let (old, new) = same_shard_ids(&store);
        let now = now_millis();
        let r = record(now, 60_000, &[("a", "1")]);
        assert!(store.create(&old, &r).await.unwrap());
        assert!(store
            .create(&new, &record(now, 60_000, &[("z", "9")]))
            .await
            .unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let s = store.clone();
        std::thread::spawn(move || {
            let out = s.inner.cycle(&old, &new, &set("b", "2"), now + 60_000);
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("cycle onto a taken id in the same shard did not return");
        assert_eq!(out, CycleOutcome::Collision);
        assert_eq!(
            store.load(&old).await.unwrap().unwrap().items.get("b"),
            None
        );
        assert_eq!(
            store.load(&new).await.unwrap().unwrap().items.get("z"),
            Some("9")
        );
        assert_eq!(store.len(), 2);
    }

    /// The same, with the new id taken *while* the cycle runs (another
    /// request creating a session under it, in the same shard): the cycle
    /// must return, whatever the interleaving.
    #[test]
    fn cycle_racing_a_create_of_its_new_id_in_the_same_shard_returns() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let store = MemoryStore::new();
        let (a, b) = same_shard_ids(&store);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let cycler = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                // As long as it takes the interleaving to happen (or not).
                let until = std::time::Instant::now() + Duration::from_secs(3);
                while std::time::Instant::now() < until {
                    let now = now_millis();
                    if store.inner.load(&a).is_none() {
                        let _ = store.inner.create(&a, &record(now, 60_000, &[("a", "1")]));
                    }
                    let _ = store.inner.cycle(&a, &b, &set("b", "2"), now + 60_000);
                }
                stop.store(true, Ordering::Relaxed);
                let _ = tx.send(());
            })
        };
        for _ in 0..2 {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = now_millis();
                    let _ = store.inner.create(&b, &record(now, 60_000, &[("z", "9")]));
                    futures_now(store.delete(&b)).unwrap();
                }
            });
        }
        let finished = rx.recv_timeout(Duration::from_secs(15));
        stop.store(true, Ordering::Relaxed);
        assert!(
            finished.is_ok(),
            "cycle deadlocked on an id taken meanwhile in the same shard"
        );
        cycler.join().unwrap();
    }

    fn futures_now<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("MemoryStore answers at once"),
        }
    }

    /// The map is split finely enough that growing one shard never moves
    /// more than a few thousand entries, at any size up to the cap.
    #[test]
    fn shards_follow_the_cap() {
        for cap in [10_000_000, 1_000_000, 100_000] {
            let store = MemoryStore::new().with_max_sessions(cap);
            let shards = store.inner.map.shards().len();
            assert!(
                cap / shards <= 4096,
                "cap {cap}: {shards} shards, {} entries each at the cap",
                cap / shards
            );
        }
    }

    /// After a mass expiry, operations give the map's capacity back, a few
    /// shards at a time.
    #[tokio::test(start_paused = true)]
    async fn capacity_is_given_back_after_a_mass_expiry() {
        let store = MemoryStore::new().with_max_sessions(200_000);
        let now = now_millis();
        for _ in 0..100_000 {
            store
                .create(&SessionId::generate(), &record(now, 1_000, &[("a", "1")]))
                .await
                .unwrap();
        }
        let keep = SessionId::generate();
        store
            .create(&keep, &record(now, 3_600_000, &[("k", "v")]))
            .await
            .unwrap();
        let peak = store.inner.map.capacity();
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..20_000 {
            assert!(store.load(&keep).await.unwrap().is_some());
        }
        assert_eq!(store.len(), 1);
        let after = store.inner.map.capacity();
        assert!(
            after * 16 < peak,
            "capacity {peak} at 100k sessions, still {after} with 1 left"
        );
    }
}
